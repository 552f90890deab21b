"""``standalone``: the scenario's DAG is triggered on a long-lived Airflow (scheduler,
API server, dag-processor, LocalExecutor), started once per matrix.

Here Airflow does everything a deployment does: the scheduler queues the try, a
LocalExecutor worker supervises it (heartbeats, SIGTERM forwarding), a killed try is
retried after ``retry_delay``, an orphaned one is failed after the heartbeat timeout.
The harness only finds processes and signals them: the task's pid from the probe's start
records in the run folder, its supervisor as that pid's parent in ``/proc``; before any
signal it checks the pid is in a session we started (a scheduler's).

``move_worker`` has one machine to work with: after the kill, the task's scratch folder
is moved aside, so the retry finds an empty "local disk", as on another worker.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

from harness.airflow.base import (
    Capability,
    DagSpec,
    Mode,
    ModeError,
    TaskSpec,
    register_mode,
    write_airflow_record,
)
from harness.airflow.modes.standalone_airflow import HEARTBEAT_TIMEOUT, StandaloneAirflow
from harness.airflow.probed import ProbedTask, kill
from harness.airflow.rest_task import RestTask
from harness.airflow.supervisor_log import supervisor_signals
from harness.procs import parent_pid, pid_alive, start_time

__all__ = ["StandaloneMode", "StandaloneTask", "dag_id"]


def dag_id(scenario: str) -> str:
    """The DAG id of a scenario (Airflow allows letters, digits, ``-``, ``_`` and ``.``)."""
    return scenario.replace("@", "_at_")


@register_mode
class StandaloneMode(Mode):
    """One Airflow for the matrix, with a DAG for each scenario that runs in it."""

    name = "standalone"
    capabilities = frozenset(
        {
            Capability.TASK_PROCESS,
            Capability.SUPERVISOR,
            Capability.TRY_STATE,
            Capability.SCHEDULER,
            Capability.TRIGGERER,
        }
    )
    heartbeat_timeout = HEARTBEAT_TIMEOUT + 5.0  # and its detection interval
    runs_dag_files = True
    schedules_runs = True
    side_by_side = True

    def __init__(
        self, root: Path, dags: list[DagSpec], template: Path | None, jobs: int = 1
    ) -> None:
        super().__init__(root, dags, template, jobs)
        definitions = {
            dag_id(d.name): {"variant": d.variant, "task": d.task, "description": d.description}
            for d in dags
            if d.dag_file is None
        }
        user_dags = {
            d.dag_id: {"file": d.dag_file, "task_id": d.task_id, "task": d.task}
            for d in dags
            if d.dag_file is not None and d.dag_id is not None
        }
        self.airflow = self._airflow(definitions, user_dags)

    def _airflow(
        self, definitions: dict[str, dict[str, Any]], user_dags: dict[str, dict[str, Any]]
    ) -> StandaloneAirflow:
        return StandaloneAirflow(
            self.root / "airflow-standalone", definitions, self.template, user_dags, self.jobs
        )

    @property
    def home(self) -> Path:
        return self.airflow.home.root

    def start(self, spec: TaskSpec) -> StandaloneTask:
        return StandaloneTask(self.airflow, spec)

    def processes(self) -> list[int]:
        return self.airflow.sessions()

    def close(self) -> None:
        self.airflow.stop()


class StandaloneTask(RestTask, ProbedTask):
    """One scenario's DAG runs on :class:`StandaloneAirflow`: driven through its REST API
    (:class:`~harness.airflow.rest_task.RestTask`), its tries found and signalled as
    processes of ours (:class:`~harness.airflow.probed.ProbedTask`)."""

    airflow: StandaloneAirflow

    def __init__(self, airflow: StandaloneAirflow, spec: TaskSpec) -> None:
        ProbedTask.__init__(self, spec)
        self._supervisors: dict[int, tuple[int | None, int | None]] = {}  # try -> (pid, start)
        if spec.dag.dag_file is not None and spec.dag.dag_id in airflow.dag_ids:
            airflow.set_task_settings(spec.dag.dag_id, spec.dag.task)
        RestTask.__init__(self, airflow, spec, spec.dag.dag_id or dag_id(spec.dag.name))

    def owns(self, pid: int) -> bool:
        return self.airflow.owns(pid)

    def signal_supervisor(self, sig: int) -> int | None:
        task = self.task_pid()
        if task is None:
            return None
        # The supervisor as first seen: once it dies, the task's parent is someone else.
        if task not in self._supervisors:
            parent = parent_pid(task)
            self._supervisors[task] = (parent, start_time(parent) if parent else None)
        supervisor, started = self._supervisors[task]
        if supervisor is None or start_time(supervisor) != started:
            return None  # gone
        if not self.owns(supervisor):
            raise ModeError(f"pid {supervisor} is not in a session we started; not signalling")
        kill(supervisor, sig)
        return supervisor

    def supervisor_signals(self, pid: int) -> list[dict[str, Any]]:
        started = self.starts.started(pid)
        if started is None:
            return []
        since, number = started
        task_log = (
            self.airflow.task_logs(self.dag_id)
            / f"run_id={self.run_id}" / f"task_id={self.task_id}" / f"attempt={number}.log"
        )  # fmt: skip
        return supervisor_signals(self.airflow.worker_logs, task_log, pid, since)

    def restart_scheduler(self) -> list[int]:
        return self.airflow.restart_scheduler()

    def restart_triggerer(self) -> int:
        return self.airflow.restart_triggerer()

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        """Wait (up to 10 s) for try ``pid`` to die; then, with ``empty_disk``, move its
        scratch folder aside. Airflow schedules the retry itself; True unless the run has
        ended."""
        deadline = time.monotonic() + 10.0
        while pid is not None and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if empty_disk:
            self.empty_disk()
        return self.continuous or self.scheduled or self._state() not in ("success", "failed")

    def stop(self) -> None:
        """Mark the run failed (so no retry follows), then SIGKILL every try still alive
        (the run is over: how a task dies now is not measured; an orphan has no supervisor
        that would stop it)."""
        super().stop()
        for pid in self.starts.pids():
            if pid_alive(pid) and self.owns(pid):
                kill(pid, signal.SIGKILL)

    def record(self) -> None:
        layout = self.spec.layout
        self.refresh_launches()  # a scheduled variant's runs: every one Airflow started
        runs = {launch["run_id"] for launch in self.launches}  # a brought DAG's others aren't
        tries = self.airflow.tries(self.dag_id, runs)
        write_airflow_record(layout, tries, self.launches)
        for run_id in runs:
            logs = self.airflow.task_logs(self.dag_id) / f"run_id={run_id}"
            if logs.exists():
                shutil.copytree(logs, layout.root / "airflow" / "logs" / logs.name)
