"""``celery``: the scenario's DAG is triggered on a distributed Airflow (CeleryExecutor,
PostgreSQL, Redis, N Celery workers; :mod:`~harness.airflow.modes.celery_airflow`),
started once per matrix.

Everything ``standalone`` does, plus what only a deployment of several workers has: the
try's worker is known (from the probe's ``worker`` record, else from its session), and
can be killed whole, shut down warm, restarted, cut off the API server, or held off the
queue; the broker and the database can be stopped and started.

``move_worker`` is real here: the try is killed and its worker is held off the queue
(Celery's ``cancel_consumer``, what an operator draining a worker uses) until the retry has
started elsewhere, on a worker whose scratch folder never had the checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.airflow.base import Capability, ModeError, TaskSpec, register_mode
from harness.airflow.modes.celery_airflow import CeleryAirflow
from harness.airflow.modes.standalone import StandaloneMode, StandaloneTask
from harness.airflow.probed import kill
from harness.procs import session_members

__all__ = ["CeleryMode", "CeleryTask"]

#: Seconds ``move_worker`` waits for the retry to start on another worker.
MOVE_TIMEOUT = 90.0


@register_mode
class CeleryMode(StandaloneMode):
    """One distributed Airflow for the matrix: two Celery workers of two task slots each."""

    name = "celery"
    capabilities = StandaloneMode.capabilities | {Capability.WORKERS, Capability.SERVICES}
    sqlite = False
    #: One scenario at a time: each starts by making the deployment whole again (workers
    #: up and on the queue), which a scenario beside it would feel as a fault.
    side_by_side = False

    def _airflow(
        self, definitions: dict[str, dict[str, Any]], user_dags: dict[str, dict[str, Any]]
    ) -> CeleryAirflow:
        return CeleryAirflow(self.root / "airflow-celery", definitions, user_dags)

    def start(self, spec: TaskSpec) -> CeleryTask:
        """The scenario's task, on a deployment made whole again first (an earlier
        scenario's fault may have left a worker down or off the queue)."""
        assert isinstance(self.airflow, CeleryAirflow)
        self.airflow.make_whole()
        return CeleryTask(self.airflow, spec)


class CeleryTask(StandaloneTask):
    """One scenario's DAG on :class:`CeleryAirflow`; each worker has its own scratch folder
    (``<run>/scratch/<worker>``)."""

    airflow: CeleryAirflow

    def __init__(self, airflow: CeleryAirflow, spec: TaskSpec) -> None:
        if "scratch_dir" in spec.conf:  # each worker its own local disk
            spec.conf["scratch_dir"] = str(Path(spec.conf["scratch_dir"]).with_name("{worker}"))
        super().__init__(airflow, spec)

    def _worker_of(self, pid: int) -> str | None:
        return self.starts.worker(pid) or self.airflow.worker_of(pid)

    # Capability.TASK_PROCESS: move_worker moves for real

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        """As ``standalone``; with ``empty_disk`` the killed try's worker is held off the
        queue until the next try has started on another worker."""
        worker = self._worker_of(pid) if pid is not None and empty_disk else None
        if worker is None:
            return super().after_kill(pid)
        self.hold_worker(worker, True)
        try:
            retry = super().after_kill(pid)
            deadline = time.monotonic() + MOVE_TIMEOUT
            while retry and time.monotonic() < deadline and not self.ended():
                started = self.starts.pids()
                if started and started[-1] != pid:
                    break  # the next try started (on another worker: this one is held)
                time.sleep(0.1)
        finally:
            self.hold_worker(worker, False)
        return retry

    # Capability.WORKERS

    def try_worker(self) -> str | None:
        pid = self.task_pid()
        return None if pid is None else self._worker_of(pid)

    def signal_worker(self, name: str, sig: int, whole: bool = False) -> list[int]:
        process = self._process(name)
        if not process.alive():
            return []
        pids = [process.pid]
        if whole:
            pids += [p for p in session_members(process.pid) if p != process.pid]
        for pid in pids:
            kill(pid, sig)
        return pids

    def worker_alive(self, name: str) -> bool:
        return self._process(name).alive()

    def restart_worker(self, name: str) -> int:
        old = self._process(name)
        if old.alive():
            raise ModeError(f"worker {name} still runs (pid {old.pid}); stop it first")
        old.popen.wait()
        # Anything of the old worker still alive (its pool, orphaned tries) lives on, as on
        # a machine whose worker service was restarted; its session stays ours to stop.
        process = self.airflow.start_worker(name)
        self.airflow.wait_workers()
        return process.pid

    def partition_worker(self, name: str, cut: bool) -> float:
        proxy = self.airflow.workers[name].proxy
        return proxy.partition() if cut else proxy.heal()

    def hold_worker(self, name: str, held: bool) -> None:
        self.airflow.consume(name, not held)

    # Capability.SERVICES

    def stop_service(self, service: str) -> list[int]:
        server = self._service(service)
        if service == "broker":
            self.airflow.broker_down()
        pid = server.process.pid if server.process is not None else None
        if service == "database":
            server.halt()  # its folder stays the server's, for the start
        else:
            server.stop()
        return [pid] if pid is not None else []

    def start_service(self, service: str) -> list[int]:
        server = self._service(service)
        server.start()
        return [server.process.pid] if server.process is not None else []

    def _service(self, service: str) -> Any:
        if service == "database":
            return self.airflow.postgres
        if service == "broker":
            return self.airflow.broker
        raise ModeError(f"unknown service {service!r}; known: broker, database")

    def _process(self, name: str) -> Any:
        worker = self.airflow.workers.get(name)
        if worker is None or worker.process is None:
            raise ModeError(f"no worker {name!r}; workers: {', '.join(self.airflow.workers)}")
        return worker.process

    def record(self) -> None:
        super().record()
        (self.spec.layout.root / "airflow" / "deployment.json").write_text(
            json.dumps(self.airflow.describe(), indent=2, default=str)
        )
