"""Signals to the try's process, straight to its pid: a crash, a stop, a freeze.

These bypass Airflow: no supervisor forwards them and nothing escalates. A SIGKILL is what
a crashed worker does to its task. ``sigterm_task_only`` is a bare SIGTERM and nothing
after it: *not* what a cleared or marked task (``try_state``) or a worker shutdown
(``supervisor``) delivers, which Airflow's supervisor escalates to SIGKILL.
"""

from __future__ import annotations

import signal
import time
from typing import Literal

from pydantic import Field

from harness.nemesis.base import AirflowFault, FaultContext, register

__all__ = ["ExhaustRetries", "KillTask", "MoveWorker", "PauseTask", "SigtermTaskOnly", "kill_tries"]


def kill_tries(
    ctx: FaultContext, sig: signal.Signals, times: int = 1, empty_disk: bool = False
) -> None:
    """Signal the running try ``times`` tries in a row, letting the next one come after
    each (on an empty local disk if ``empty_disk``)."""
    for _ in range(times):
        if ctx.wait_for_try() is None:
            return
        pid = ctx.task.signal(sig)
        ctx.record("start", pid=pid, signal=sig.name)
        retry = ctx.task.after_kill(pid, empty_disk)
        ctx.record("stop", pid=pid, retry=retry, empty_disk=empty_disk)
        if not retry:
            return


@register
class KillTask(AirflowFault):
    """SIGKILL the try's process (a worker crash mid-stream); the next try follows."""

    type: Literal["kill_task"] = "kill_task"

    def inject(self, ctx: FaultContext) -> None:
        kill_tries(ctx, signal.SIGKILL)


@register
class SigtermTaskOnly(AirflowFault):
    """SIGTERM the try's process, bypassing its supervisor (no escalation to SIGKILL)."""

    type: Literal["sigterm_task_only"] = "sigterm_task_only"

    def inject(self, ctx: FaultContext) -> None:
        kill_tries(ctx, signal.SIGTERM)


@register
class MoveWorker(AirflowFault):
    """SIGKILL, and the next try finds an empty local disk (another worker's ``/tmp``)."""

    type: Literal["move_worker"] = "move_worker"

    def inject(self, ctx: FaultContext) -> None:
        kill_tries(ctx, signal.SIGKILL, empty_disk=True)


@register
class ExhaustRetries(AirflowFault):
    """SIGKILL ``times`` tries in a row, until the retries are used up."""

    type: Literal["exhaust_retries"] = "exhaust_retries"
    times: int = Field(default=1, ge=1, description="kills in a row")

    def inject(self, ctx: FaultContext) -> None:
        kill_tries(ctx, signal.SIGKILL, times=self.times)


@register
class PauseTask(AirflowFault):
    """SIGSTOP the try for ``duration`` seconds, then SIGCONT (a frozen worker, swapping)."""

    type: Literal["pause_task"] = "pause_task"
    # Bounded: Event.wait overflows on 1e300 after the SIGSTOP, leaving the try stopped.
    duration: float = Field(default=2.0, gt=0, le=3600, description="seconds stopped")

    def inject(self, ctx: FaultContext) -> None:
        if ctx.wait_for_try() is None:
            return
        pid = ctx.task.signal(signal.SIGSTOP)
        ctx.record("start", pid=pid, signal="SIGSTOP")
        ctx.wait(self.duration)
        resumed_at = time.time()  # the task may commit before this thread records it
        ctx.task.signal(signal.SIGCONT)
        ctx.record("stop", at=resumed_at, pid=pid, signal="SIGCONT")
