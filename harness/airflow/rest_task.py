"""A scenario's task driven through Airflow's REST API alone: the runs triggered with the
scenario's conf, the schedule of ``@continuous`` variants played, the operator's stop, and
the ``try_state`` capability (clear, mark, read the tries). What every mode on an Airflow 3
with an API server shares; the modes that also own Airflow's processes add the rest.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from harness.airflow.base import (
    ModeError,
    TaskHandle,
    TaskSpec,
    conf_variable,
    running_try,
    try_ended,
)
from harness.task.variants import VARIANTS
from harness.task.variants.event_driven import redis_conn_id

__all__ = ["STATE_TTL", "RestAirflow", "RestTask"]

#: Seconds a run's state, once read, answers again: the runner asks every 0.1 s while it
#: waits for a first commit, and each answer costs the API server ~30 ms of CPU, which
#: scenarios side by side share.
STATE_TTL = 0.5


class RestAirflow(Protocol):
    """What :class:`RestTask` needs of an Airflow (:class:`~harness.airflow.rest.AirflowRest`
    plus the DAGs it knows and how a scenario is admitted)."""

    dag_ids: list[str]

    def admit(self, spec: TaskSpec, dag_id: str) -> None: ...
    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None: ...
    def set_paused(self, dag_id: str, paused: bool) -> None: ...
    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]: ...
    def put_variable(self, key: str, value: str) -> None: ...
    def put_connection(self, conn_id: str, fields: dict[str, Any]) -> None: ...
    def run_state(self, dag_id: str, run_id: str) -> str: ...
    def end_run(self, dag_id: str, run_id: str) -> None: ...
    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None: ...
    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None: ...
    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]: ...


class RestTask(TaskHandle):
    """One scenario's DAG, triggered on an Airflow it reaches through the REST API.

    Scenario DAGs are triggered only (a scheduler-made run would lack the scenario's conf),
    so for ``@continuous`` variants the harness plays the schedule: when a run ends before
    the stream does, it triggers the next with the same conf, as the scheduler would
    (``max_active_runs=1``: one at a time). A ``scheduled`` variant's runs are Airflow's
    own: the conf goes into a Variable and the DAG is unpaused; at the stop request no
    new run matters (the runs started then find nothing left to do), and the task is over
    once none is queued or running; the DAG is paused when the run ends.
    ``launches.json`` lists the runs.
    """

    def __init__(self, airflow: RestAirflow, spec: TaskSpec, dag_id: str) -> None:
        self.spec = spec
        self.airflow = airflow
        self.dag_id = dag_id
        self.task_id = spec.dag.task_id
        #: A DAG you brought: it does not read the stop request; Airflow stops it.
        self.brought = spec.dag.dag_file is not None
        self.scheduled = spec.dag.scheduled
        #: A scheduled variant's runs end by themselves; the task is over when none is
        #: queued or running.
        self.reads_stop_request = not self.brought and not self.scheduled
        if self.dag_id not in airflow.dag_ids:
            raise ModeError(f"{spec.dag.name}: Airflow was started without this scenario's DAG")
        airflow.admit(spec, self.dag_id)
        self.continuous = spec.dag.continuous
        self.launches: list[dict[str, Any]] = []
        self._ending = threading.Event()  # the stream is over: no new runs
        self._known: tuple[float, str] | None = None  # (monotonic time, state) last read
        if self.scheduled:
            airflow.put_variable(conf_variable(dag_id), json.dumps(spec.conf))
            if VARIANTS[spec.dag.variant].watched:  # its watcher's Redis, this scenario's
                redis = urlsplit(str(spec.conf["redis_url"]))
                fields = {"conn_type": "redis", "host": redis.hostname, "port": redis.port}
                airflow.put_connection(redis_conn_id(dag_id), fields)
            airflow.set_paused(dag_id, False)
        else:
            self._trigger()
        self._scheduler = threading.Thread(target=self._play_continuous, daemon=True)
        if self.continuous:
            self._scheduler.start()

    def _trigger(self) -> None:
        run_id = f"streamstall__{int(time.time() * 1000)}"
        self.airflow.trigger(self.dag_id, run_id, self.spec.conf)
        self.launches.append({"dag_id": self.dag_id, "run_id": run_id, "at": time.time()})
        self._known = None  # a new run: its state is not the last one's

    @property
    def run_id(self) -> str | None:
        """The run a fault acts on: the last triggered; of a scheduled variant's, the
        oldest still active, else the newest (None before Airflow started one)."""
        if not self.scheduled:
            return self.launches[-1]["run_id"]
        runs = self.refresh_launches()
        active = [r for r in runs if r["state"] in ("queued", "running")]
        chosen = active[0] if active else runs[-1] if runs else None
        return None if chosen is None else chosen["dag_run_id"]

    def refresh_launches(self) -> list[dict[str, Any]]:
        """A scheduled variant's runs, as Airflow lists them, into ``launches``."""
        if not self.scheduled:
            return []
        runs = self.airflow.dag_runs(self.dag_id)
        self.launches = [
            {"dag_id": self.dag_id, "run_id": r["dag_run_id"], "at": r.get("queued_at")}
            for r in runs
        ]
        return runs

    def _play_continuous(self) -> None:
        while not self._ending.wait(0.5):
            try:
                if self._state() in ("success", "failed") and not self._ending.is_set():
                    self._trigger()
            except ModeError:
                continue  # the API answered 5xx (e.g. its database is down): ask again

    def _end_continuous(self) -> None:
        self._ending.set()
        if self._scheduler.is_alive():
            self._scheduler.join()

    def _state(self) -> str:
        now = time.monotonic()
        if self._known is not None and now - self._known[0] < STATE_TTL:
            return self._known[1]
        if self.scheduled:  # its runs together: active while one of them is
            states = {r["state"] for r in self.refresh_launches()}
            state = "running" if states & {"queued", "running"} else "success"
        else:
            state = self.airflow.run_state(self.dag_id, str(self.run_id))
        self._known = (now, state)
        return state

    def clear_try(self) -> float:
        self.airflow.clear_task(self.dag_id, str(self.run_id), self.task_id)
        self._known = None
        return time.time()

    def mark_try(self, state: str) -> float:
        self.airflow.set_task_state(self.dag_id, str(self.run_id), self.task_id, state)
        self._known = None
        return time.time()

    def running_try(self) -> int | None:
        return running_try(self._tries())

    def try_ended(self, number: int) -> float | None:
        return try_ended(self._tries(), number)

    def _tries(self) -> list[dict[str, Any]]:
        run_id = self.run_id
        return [] if run_id is None else self.airflow.task_tries(self.dag_id, run_id, self.task_id)

    def idle(self) -> bool:
        if not self.scheduled:
            return self.ended()
        try:
            return self._state() != "running"
        except ModeError:
            return False

    def ended(self) -> bool:
        over = not (self.continuous or self.scheduled) or self._ending.is_set()
        try:
            return over and self._state() in ("success", "failed")
        except ModeError:
            return False  # Airflow cannot say now (its database restarting): not over

    def request_stop(self) -> None:
        """The harness's variants read the stop request; a DAG you brought does not, so
        the operator's stop is Airflow's: the run marked failed (its try gets SIGTERM)."""
        self._end_continuous()
        if self.brought:
            self._end_run()

    def _end_run(self) -> None:
        with contextlib.suppress(ModeError):  # Airflow is gone already (interrupted)
            if not self.scheduled:
                self.airflow.end_run(self.dag_id, str(self.run_id))
                return
            self.airflow.set_paused(self.dag_id, True)
            for run in self.refresh_launches():
                if run["state"] in ("queued", "running"):
                    self.airflow.end_run(self.dag_id, run["dag_run_id"])
        self._known = None

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ended():
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        """Mark the run failed, so no retry follows (Airflow stops its try)."""
        self._end_continuous()
        self._end_run()
