"""The scheduler crashes and comes back."""

from __future__ import annotations

from typing import ClassVar, Literal

from harness.airflow.base import Capability
from harness.nemesis.base import AirflowFault, FaultContext, register

__all__ = ["RestartScheduler"]


@register
class RestartScheduler(AirflowFault):
    """SIGKILL the scheduler and the dag-processor (their children live on), start new ones."""

    type: Literal["restart_scheduler"] = "restart_scheduler"
    needs: ClassVar = frozenset({Capability.SCHEDULER})
    alone: ClassVar = True  # every scenario's runs are the scheduler's

    def inject(self, ctx: FaultContext) -> None:
        ctx.record("start")
        killed = ctx.task.restart_scheduler()
        ctx.record("stop", killed=killed)
