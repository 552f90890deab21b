"""``dagtest``: ``airflow dags test`` runs one DAG run in one process, the task included.

Airflow retries exceptions (an ``execution_timeout`` too) in that process. A killed task
kills the command; the harness then does what a scheduler would do with the lost try: after
``retry_delay`` it relaunches, while the task has retries left (each relaunch is a new DAG
run, so the logical date changes: a difference from a real retry, recorded in
``launches.json``). There is no worker and no scheduler to kill. A SIGTERM that arrives
while the task runs reaches Airflow's task-running code and its SIGTERM handler, as on a
worker (3.3: ``on_kill``, the loop goes on; 2.11: ``AirflowTaskTerminated``); one that
arrives before the task starts ends the command (exit -15).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from harness.airflow.base import (
    Capability,
    Mode,
    TaskHandle,
    TaskSpec,
    register_mode,
    write_airflow_record,
)
from harness.airflow.home import AirflowHome
from harness.procs import OwnedProcess

__all__ = ["DagTestMode", "DagTestTask"]


@register_mode
class DagTestMode(Mode):
    """Each scenario gets an AIRFLOW_HOME of its own, with a copy of the template."""

    name = "dagtest"
    capabilities = frozenset({Capability.TASK_PROCESS})

    def start(self, spec: TaskSpec) -> DagTestTask:
        home = AirflowHome(spec.layout.root / "airflow-home", self.template)
        home.admit(spec, spec.dag.variant)
        return DagTestTask(home, spec)


class DagTestTask(TaskHandle):
    """One task under ``airflow dags test``, relaunched after a kill while retries remain."""

    def __init__(self, home: AirflowHome, spec: TaskSpec) -> None:
        self.home = home
        self.spec = spec
        self.conf = dict(spec.conf)
        self.retries_left = spec.dag.retries
        self.moves = 0
        self.launches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process: OwnedProcess | None = None
        self._stopping = False
        self._over = False  # no retry will be launched
        self._launch()

    def _launch(self) -> None:
        dag = self.spec.dag
        log = self.spec.layout.root / "airflow.log"
        self._process = self.home.dags_test(dag.variant, self.conf, dag.task, log=log)
        self.launches.append({"pid": self._process.pid, "at": time.time(), "conf": dict(self.conf)})

    def task_pid(self) -> int | None:
        with self._lock:
            process = self._process
            return process.pid if process is not None and process.alive() else None

    def signal(self, sig: int) -> int | None:
        with self._lock:
            if self._process is None or not self._process.alive():
                return None
            self._process.signal(sig)
            return self._process.pid

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        """Relaunch as a retry would (after ``retry_delay``; with ``empty_disk``, with a
        new, empty scratch folder as the worker's). False when no retries are left."""
        with self._lock:
            if self._process is not None:
                self._process.popen.wait()
                self._process.stop()
                self._process = None
            if self._stopping or self.retries_left <= 0:
                self._over = True
                return False
            self.retries_left -= 1
        time.sleep(self.spec.dag.retry_delay)
        with self._lock:
            if self._stopping:
                self._over = True
                return False
            if empty_disk:
                self.moves += 1
                scratch = Path(self.conf["scratch_dir"])
                self.conf["scratch_dir"] = str(scratch.with_name(f"worker-{self.moves + 1}"))
            self._launch()
        return True

    def ended(self) -> bool:
        with self._lock:
            process = self._process
            return self._over or (process is not None and not process.alive())

    def request_stop(self) -> None:
        with self._lock:
            self._stopping = True  # a try killed now is not relaunched

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ended():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._process is not None:
                self._process.stop(grace=5.0)

    def record(self) -> None:
        tries = self.home.task_instances(self.spec.dag.variant)
        write_airflow_record(self.spec.layout, tries, self.launches)
