"""The triggerer crashes and comes back: the asset watchers it ran are gone meanwhile."""

from __future__ import annotations

from typing import ClassVar, Literal

from harness.airflow.base import Capability
from harness.nemesis.base import AirflowFault, FaultContext, register

__all__ = ["RestartTriggerer"]


@register
class RestartTriggerer(AirflowFault):
    """SIGKILL the triggerer and start a new one (a crash and a supervisor's restart).

    The watchers come back only once Airflow sees the dead triggerer's heartbeat go
    stale (``triggerer_health_check_threshold``, 30 s by default): what a pub/sub source
    publishes meanwhile reaches nobody."""

    type: Literal["restart_triggerer"] = "restart_triggerer"
    needs: ClassVar = frozenset({Capability.TRIGGERER})
    alone: ClassVar = True  # every watcher runs in the one triggerer

    def inject(self, ctx: FaultContext) -> None:
        ctx.record("start")
        killed = ctx.task.restart_triggerer()
        ctx.record("stop", killed=killed)
