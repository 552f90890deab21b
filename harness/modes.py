"""How a scenario's task runs on Airflow: the modes, behind one small interface.

``dagtest``: ``airflow dags test`` runs one DAG run in one process, the task included.
Airflow retries exceptions (an ``execution_timeout`` too) in that process. A killed task
kills the command; the harness then does what a scheduler would do with the lost try: after
``retry_delay`` it relaunches, while the task has retries left (each relaunch is a new DAG
run, so the logical date changes: a difference from a real retry, recorded in the run).

``standalone`` (scheduler, API server, LocalExecutor) and ``celery`` implement the same
interface: :meth:`TaskRun.task_pid`, :meth:`TaskRun.signal`, :meth:`TaskRun.restart`,
:meth:`TaskRun.wait`, :meth:`TaskRun.stop`. Not written yet.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from harness.airflow_runner import AirflowHome
from harness.procs import OwnedProcess

__all__ = ["DagTestRun"]


class DagTestRun:
    """One task under ``airflow dags test``, relaunched after a kill while retries remain.

    :param retries: the task's retries (a relaunch uses one).
    :param retry_delay: seconds before a relaunch.
    """

    def __init__(
        self,
        home: AirflowHome,
        variant: str,
        conf: dict[str, Any],
        overrides: dict[str, Any],
        log: Path,
        retries: int,
        retry_delay: float,
    ) -> None:
        self.home = home
        self.variant = variant
        self.conf = dict(conf)
        self.overrides = overrides
        self.log = log
        self.retries_left = retries
        self.retry_delay = retry_delay
        self.launches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process: OwnedProcess | None = None
        self._stopping = False
        self._launch()

    def _launch(self) -> None:
        self._process = self.home.dags_test(self.variant, self.conf, self.overrides, log=self.log)
        self.launches.append({"pid": self._process.pid, "at": time.time(), "conf": dict(self.conf)})

    def task_pid(self) -> int | None:
        """The process running the task now (None between a kill and its relaunch)."""
        with self._lock:
            process = self._process
            return process.pid if process is not None and process.alive() else None

    def signal(self, sig: int) -> int | None:
        """Send ``sig`` to the task process; return its pid (None if none runs)."""
        with self._lock:
            if self._process is None or not self._process.alive():
                return None
            self._process.signal(sig)
            return self._process.pid

    def restart(self, scratch_dir: str | None = None) -> bool:
        """After the task process died: relaunch it as a retry would (on another worker's
        disk if ``scratch_dir`` is given). False when no retries are left."""
        with self._lock:
            if self._process is not None:
                self._process.popen.wait()
                self._process.stop()
                self._process = None
            if self._stopping or self.retries_left <= 0:
                return False
            self.retries_left -= 1
        time.sleep(self.retry_delay)
        with self._lock:
            if self._stopping:
                return False
            if scratch_dir is not None:
                self.conf["scratch_dir"] = scratch_dir
            self._launch()
        return True

    def wait(self, timeout: float) -> int | None:
        """Wait for the current process to end on its own; its exit code (None: timed out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                process = self._process
            if process is not None and not process.alive():
                return process.popen.returncode
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._process is not None:
                self._process.stop(grace=5.0)

    def record(self, path: Path) -> None:
        path.write_text(json.dumps(self.launches, indent=2, default=str))
