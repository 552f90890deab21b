"""The worker that supervises a try goes away: killed outright, or stopped by a deploy."""

from __future__ import annotations

import signal
import time
from typing import ClassVar, Literal

from pydantic import Field

from harness.airflow.base import Capability
from harness.nemesis.base import AirflowFault, FaultContext, register
from harness.nemesis.try_state import record_death
from harness.procs import pid_alive

__all__ = ["KillWorker", "WorkerShutdown"]

NEEDS = frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR})


@register
class KillWorker(AirflowFault):
    """SIGKILL the try's supervisor: the scheduler fails the try after the heartbeat
    timeout and retries it while the orphan still runs."""

    type: Literal["kill_worker"] = "kill_worker"
    needs: ClassVar = NEEDS
    alone: ClassVar = True  # a LocalExecutor worker: the executor replaces it for everyone

    def inject(self, ctx: FaultContext) -> None:
        orphan = ctx.wait_for_try()
        if orphan is None:
            return
        supervisor = ctx.task.signal_supervisor(signal.SIGKILL)
        ctx.record("start", pid=supervisor, signal="SIGKILL", orphan=orphan)
        ctx.record("stop", pid=supervisor)


@register
class WorkerShutdown(AirflowFault):
    """A deploy stops the worker that supervises the try: SIGTERM to the worker (Airflow
    3.3's supervisor forwards it to the try and goes on supervising; 3.0-3.2's passes it
    on to nobody), then, if the try still runs ``grace`` seconds later, SIGKILL to the
    worker and the try, as the deploy tool does to what is left of a container. Airflow
    learns of the loss from the missed heartbeats and retries the try."""

    type: Literal["worker_shutdown"] = "worker_shutdown"
    needs: ClassVar = NEEDS
    alone: ClassVar = True  # likewise
    grace: float = Field(
        default=30.0, ge=0, le=3600,
        description="seconds before the SIGKILL (Kubernetes' default: 30; docker stop's: 10)",
    )  # fmt: skip

    def inject(self, ctx: FaultContext) -> None:
        pid = ctx.wait_for_try()
        if pid is None:
            return
        worker = ctx.task.signal_supervisor(signal.SIGTERM)
        ctx.record("start", pid=pid, worker=worker, signal="SIGTERM")
        deadline = time.monotonic() + self.grace
        # When the worker exited within the grace (None: still there when the try died or
        # the grace ended): releases differ in what a worker does with its SIGTERM
        # (tests/repro/test_production_faults.py).
        worker_exited = None
        while pid_alive(pid) and time.monotonic() < deadline:
            if worker_exited is None and worker is not None and not pid_alive(worker):
                worker_exited = time.time()
            if ctx.wait(0.02):
                break
        killed = not ctx.over and pid_alive(pid)
        if killed:
            # The worker first: killed after the try, it would report the try's death.
            ctx.task.signal_supervisor(signal.SIGKILL)
            ctx.task.signal(signal.SIGKILL)
        record_death(
            ctx, pid, worker=worker, worker_exited=worker_exited, killed_after_grace=killed
        )
