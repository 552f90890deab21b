"""``external``: the experiment against an Airflow 3 you already run, through its public
REST API and nothing else.

You deploy ``dags/`` (and install this project on the workers) the way you deploy DAGs;
the harness checks each variant's DAG is there, triggers runs with the scenario's conf,
reads the tries, and injects only what an operator can: clear and mark the task instance
(capability ``try_state``). A fault that needs a process, a worker or a service is refused
when the scenario loads; so are ``[task]`` settings, which are parsed with the DAG.

The workers do not share the harness's disk, so the tries write their sink and events to
a PostgreSQL database both reach, in a schema per run (:mod:`harness.airflow.store_mirror`
copies it into the run folder as it goes); the fake stream binds the address they reach
it at. Where things are comes from the environment, never from a file in the repository:

- ``STREAMSTALL_AIRFLOW_URL``: the API server (``https://airflow.example:8080``);
- ``STREAMSTALL_AIRFLOW_TOKEN``, or ``STREAMSTALL_AIRFLOW_USERNAME`` and
  ``STREAMSTALL_AIRFLOW_PASSWORD`` (exchanged at ``/auth/token``);
- ``STREAMSTALL_SINK_URL``: ``postgresql://user:password@host:port/database``;
- ``STREAMSTALL_STREAM_HOST``: where the fake stream listens (default ``127.0.0.1``; any
  other address makes it warn and require its token, which it always does).

The harness puts two connections into your Airflow through the API: ``streamstall_sink``
(that database) and one per scenario for the stream (deleted when the run is recorded).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.airflow.base import (
    Capability,
    DagSpec,
    Mode,
    ModeError,
    TaskSpec,
    register_mode,
    write_airflow_record,
)
from harness.airflow.rest import AirflowRest
from harness.airflow.rest_task import RestTask
from harness.airflow.store_mirror import RunStore, schema_name

__all__ = ["ExternalMode", "ExternalSettings", "ExternalTask"]

#: The connection the tries read the sink database from.
SINK_CONN_ID = "streamstall_sink"


@dataclass(frozen=True)
class ExternalSettings:
    """Where your Airflow, the sink database and the stream are (from the environment)."""

    airflow_url: str
    sink_url: str
    stream_host: str = "127.0.0.1"
    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ExternalSettings:
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("STREAMSTALL_AIRFLOW_URL", "STREAMSTALL_SINK_URL") if not env.get(k)]
        if missing:
            raise ModeError(
                f"mode 'external' needs {' and '.join(missing)} in the environment "
                "(see harness/airflow/modes/external.py)"
            )
        return cls(
            airflow_url=env["STREAMSTALL_AIRFLOW_URL"],
            sink_url=env["STREAMSTALL_SINK_URL"],
            stream_host=env.get("STREAMSTALL_STREAM_HOST") or "127.0.0.1",
            token=env.get("STREAMSTALL_AIRFLOW_TOKEN") or None,
            username=env.get("STREAMSTALL_AIRFLOW_USERNAME") or None,
            password=env.get("STREAMSTALL_AIRFLOW_PASSWORD") or None,
        )

    def bearer(self) -> str | None:
        """The API's bearer token: given, or exchanged for the username and password."""
        if self.token is None and self.username is not None:
            return AirflowRest.token(self.airflow_url, self.username, self.password or "")
        return self.token


class ExternalAirflow(AirflowRest):
    """Your Airflow, as :class:`~harness.airflow.rest_task.RestTask` drives one."""

    def __init__(self, api_url: str, token: str | None = None) -> None:
        super().__init__(api_url, token)
        #: The DAGs checked to be deployed.
        self.dag_ids: list[str] = []

    def admit(self, spec: TaskSpec, dag_id: str) -> None:
        """The scenario's stream connection, put through the API."""
        if spec.connection is not None:
            self.put_connection(
                spec.connection.conn_id,
                {"conn_type": "http", "host": spec.connection.host,
                 "password": spec.connection.password},
            )  # fmt: skip


@register_mode
class ExternalMode(Mode):
    """An Airflow 3 you run, each variant deployed from ``dags/`` under its own name."""

    name = "external"
    capabilities = frozenset({Capability.TRY_STATE})
    sqlite = False
    parses_task_settings = False

    def __init__(self, root: Path, dags: list[DagSpec], template: Path | None) -> None:
        super().__init__(root, dags, template)
        self.settings = ExternalSettings.from_env()
        self.airflow = ExternalAirflow(self.settings.airflow_url, self.settings.bearer())
        sink = urlsplit(self.settings.sink_url)
        self.airflow.put_connection(SINK_CONN_ID, {
            "conn_type": "postgres", "host": sink.hostname, "port": sink.port or 5432,
            "login": unquote(sink.username or ""), "password": unquote(sink.password or ""),
            "schema": sink.path.lstrip("/"),
        })  # fmt: skip

    @property
    def stream_host(self) -> str:
        return self.settings.stream_host

    def _check_deployed(self, variant: str) -> None:
        """The variant's DAG is deployed, and triggered-only where the harness plays its
        schedule (runs the scheduler made itself would lack the scenario's conf)."""
        from harness.task.variants import VARIANTS

        try:
            dag = self.airflow.rest("GET", f"/dags/{variant}")
        except ModeError as e:
            raise ModeError(
                f"{self.settings.airflow_url}: no DAG {variant!r} (deploy dags/ there): {e}"
            ) from None
        schedule = dag.get("timetable_summary")
        if VARIANTS[variant].dag.get("schedule") and schedule not in (None, "None"):
            raise ModeError(
                f"{variant}: scheduled {schedule!r} in your Airflow; deploy it triggered-only "
                "(build_dag(..., triggered_only=True)): the harness triggers each of its runs"
            )
        if variant not in self.airflow.dag_ids:
            self.airflow.dag_ids.append(variant)

    def start(self, spec: TaskSpec) -> ExternalTask:
        self._check_deployed(spec.dag.variant)
        return ExternalTask(self.airflow, spec, self.settings.sink_url)

    def close(self) -> None:
        self.airflow.close()


class ExternalTask(RestTask):
    """A scenario's run on your Airflow; its tries' records come through a
    :class:`~harness.airflow.store_mirror.RunStore`, copied every 0.2 s."""

    def __init__(self, airflow: ExternalAirflow, spec: TaskSpec, sink_url: str) -> None:
        self.store = RunStore(sink_url, schema_name(spec.dag.name), spec.layout)
        conf = {
            **spec.conf,
            "sink_conn_id": SINK_CONN_ID,
            "sink_schema": self.store.schema,
            # The harness's run folder is not on the workers: each worker's own disk.
            "scratch_dir": f"/tmp/streamstall-scratch/{self.store.schema}/{{worker}}",
        }
        connection = spec.connection
        if connection is not None:  # Airflow's API takes letters, digits, '.', '_', '-'
            connection = replace(connection, conn_id=connection.conn_id.replace("@", "_at_"))
            conf["stream_conn_id"] = connection.conn_id
        self._copying = threading.Event()
        self._copier = threading.Thread(target=self._copy, name="store-mirror", daemon=True)
        self._copier.start()
        try:
            spec = replace(spec, conf=conf, connection=connection)
            super().__init__(airflow, spec, spec.dag.variant)  # deployed under its own name
        except BaseException:
            self._stop_copying()
            self.store.close()
            raise

    def _copy(self) -> None:
        while not self._copying.wait(0.2):
            with contextlib.suppress(Exception):  # the database restarting: next time
                self.store.mirror()

    def _stop_copying(self) -> None:
        self._copying.set()
        self._copier.join()

    def stop(self) -> None:
        """End the run through the API (Airflow's supervisor stops the try: none of its
        processes is ours), then copy the store a last time. What a try commits after
        this is not recorded, as the other modes SIGKILL a try still alive at the end."""
        super().stop()
        self._stop_copying()
        self.store.mirror()

    def record(self) -> None:
        self.store.close()  # the run folder holds it all now: the schema goes
        tries: list[dict[str, Any]] = []
        for launch in self.launches:
            tries += self.airflow.task_tries(self.dag_id, launch["run_id"], self.task_id)
        write_airflow_record(self.spec.layout, tries, self.launches)
        if self.spec.connection is not None:
            with contextlib.suppress(ModeError):
                self.airflow.rest("DELETE", f"/connections/{self.spec.connection.conn_id}")
