"""The process that supervises a try dies: the task is orphaned and keeps running."""

from __future__ import annotations

from typing import ClassVar, Literal

from harness.airflow.base import Capability
from harness.nemesis.base import AirflowFault, FaultContext, register

__all__ = ["KillWorker"]


@register
class KillWorker(AirflowFault):
    """SIGKILL the try's supervisor: the scheduler fails the try after the heartbeat
    timeout and retries it while the orphan still runs."""

    type: Literal["kill_worker"] = "kill_worker"
    needs: ClassVar = frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR})

    def inject(self, ctx: FaultContext) -> None:
        orphan = ctx.wait_for_try()
        if orphan is None:
            return
        supervisor = ctx.task.kill_supervisor()
        ctx.record("start", pid=supervisor, signal="SIGKILL", orphan=orphan)
        ctx.record("stop", pid=supervisor)
