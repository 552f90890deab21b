"""Airflow 3's public REST API (``/api/v2``), as the harness drives a deployment with it:
trigger a run with a conf, read its state and tries, and what an operator does in the UI
(clear, mark, pause). The ``standalone`` and ``celery`` modes use it on the Airflow they
start; the ``external`` mode on one you run, and nothing else.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import requests

from harness.airflow.base import ModeError

__all__ = ["AirflowRest"]

#: What the API answers when its database failed the request (it hides why; on SQLite it
#: is a writer that waited its 5 s for the lock), and the seconds between tries of it.
LOCKED = '"reason":"Database error"'
LOCKED_RETRIES = (1.0, 2.0, 4.0)


class AirflowRest:
    """The REST API of the Airflow at ``api_url``; with ``token``, calls carry it as a
    bearer token (one the simple auth manager's all-admins hands out:
    :meth:`sign_in_as_admin`)."""

    def __init__(self, api_url: str, token: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = requests.Session()
        # One change at a time from this harness: scenarios side by side would otherwise
        # send several at once, and on SQLite a request's own audit-log write can wait
        # on another request's transaction past the 5 s lock timeout (seen: a 10 s POST).
        self._writes = threading.Lock()
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def token(api_url: str, username: str, password: str) -> str:
        """A JWT from the auth manager's ``/auth/token`` (the simple and FAB auth managers
        both have it), for ``username`` and ``password``."""
        response = requests.post(
            f"{api_url.rstrip('/')}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        if response.status_code >= 400:
            raise ModeError(f"POST /auth/token: {response.status_code} {response.text[:300]}")
        return str(response.json()["access_token"])

    def sign_in_as_admin(self) -> None:
        """Carry, from now on, the token the simple auth manager hands anyone when every
        user is an admin (``GET /auth/token``): 3.1 refuses a call without one (401);
        3.0, 3.2 and 3.3 add it to a call that has none. Raises :class:`requests.ConnectionError`
        while the API is not up."""
        response = self._http.get(f"{self.api_url}/auth/token", timeout=30)
        if response.status_code >= 400:
            raise ModeError(f"GET /auth/token: {response.status_code} {response.text[:300]}")
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2`` + ``path``); its JSON answer. Every failure,
        unreachable included, is a :class:`ModeError`."""
        url = f"{self.api_url}/api/v2{path}"
        for wait in (*LOCKED_RETRIES, None):
            try:
                with self._writes if method != "GET" else contextlib.nullcontext():
                    response = self._http.request(method, url, timeout=30, **kwargs)
            except requests.RequestException as e:
                raise ModeError(f"{method} {path}: {e}") from e
            # SQLite let the request wait 5 s for another writer, then gave up; the
            # transaction was rolled back, so the same request is safe to send again.
            if wait is None or not (response.status_code == 500 and LOCKED in response.text):
                break
            time.sleep(wait)
        if response.status_code >= 400:
            raise ModeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
        """Unpause ``dag_id`` and start a DAG run of it with ``conf``."""
        self.rest("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        self.rest("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def end_run(self, dag_id: str, run_id: str) -> None:
        """Mark the run failed (Airflow then stops its task; no retry follows) and pause."""
        if self.run_state(dag_id, run_id) not in ("success", "failed"):
            self.rest("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
        self.rest("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Clear one task instance of a run, as the UI's Clear does (running or not)."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id],
                "only_failed": False, "reset_dag_runs": True}  # fmt: skip
        self.rest("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """Mark one task instance of a run ``state``, as the UI's Mark as does."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        self.rest("PATCH", path, json={"new_state": state})

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first, as the checker reads them
        (``run_id``, ``try_number``, ``state``, dates, ``hostname``, ``pid``)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        found = self.rest("GET", path)["task_instances"]
        keys = ("try_number", "state", "start_date", "end_date", "hostname", "pid")
        tries = [
            {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, **{k: t.get(k) for k in keys}}
            for t in found
        ]
        return sorted(tries, key=lambda t: t["try_number"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id`` (the UI's toggle): a paused DAG gets no new runs."""
        self.rest("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first (``dag_run_id``, ``state``, dates)."""
        runs: list[dict[str, Any]] = []
        while True:  # in pages: the API caps a page at [api] maximum_page_limit (100)
            page = self.rest(
                "GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "offset": len(runs)}
            )["dag_runs"]
            runs += page
            if not page:
                break
        return sorted(runs, key=lambda r: (r.get("run_after") or "", r["dag_run_id"]))

    def put_variable(self, key: str, value: str) -> None:
        """Create or replace Variable ``key`` (the operator's Admin > Variables)."""
        body = {"key": key, "value": value}
        response = self._http.post(f"{self.api_url}/api/v2/variables", json=body, timeout=30)
        if response.status_code == 409:
            self.rest("PATCH", f"/variables/{key}", json=body)
        elif response.status_code >= 400:
            raise ModeError(f"POST /variables: {response.status_code} {response.text[:300]}")

    def put_connection(self, conn_id: str, fields: dict[str, Any]) -> None:
        """Create or replace connection ``conn_id`` (the operator's Admin > Connections)."""
        body = {"connection_id": conn_id, **fields}
        response = self._http.post(f"{self.api_url}/api/v2/connections", json=body, timeout=30)
        if response.status_code == 409:
            self.rest("PATCH", f"/connections/{conn_id}", json=body)
        elif response.status_code >= 400:
            raise ModeError(f"POST /connections: {response.status_code} {response.text[:300]}")

    def close(self) -> None:
        self._http.close()
