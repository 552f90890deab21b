"""A user changes the running try's state in Airflow (the UI's Clear, Mark as): Airflow's
own machinery then stops the try.

Airflow 3.3.2's supervisor learns it at its next heartbeat (410 or 409: the task instance
is no longer running) and calls ``kill(SIGTERM, force=True)``: SIGTERM, then SIGKILL if the
try is still alive 5 s later (task-sdk ``execution_time/supervisor.py``: ``kill``, lines
1076-1130, and ``_send_heartbeat_if_needed``, 1699-1737). On 2.x (``localtask``) the try's
``LocalTaskJob`` acts at the second heartbeat that sees the change (a try marked
successful first runs ``task_success_overtime``) and SIGTERMs the try's process group,
SIGKILL after ``killed_task_cleanup_time``. Each fault records when Airflow had the change
and, when the try's process died, the signals its supervisor logged. Where the harness
sees no process of the try (the ``external`` mode: it runs on your workers), it records
what an operator sees instead: the try number, and when Airflow recorded the try's end
(3.3.2 records it at the change itself; the process lives on until its supervisor acts).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from harness.airflow.base import Capability, ModeError, TaskHandle
from harness.nemesis.base import AirflowFault, FaultContext, register
from harness.procs import pid_alive

__all__ = ["ClearTask", "MarkFailed", "MarkSuccess", "TryStateFault", "record_death"]

T = TypeVar("T")

#: Seconds after a try's death its supervisor may take to log it (its escalation delay, 5 s).
EXIT_LOGGED_WITHIN = 6.0


def record_death(ctx: FaultContext, pid: int, **detail: Any) -> None:
    """Wait for try ``pid`` to die, then record the ``stop``: when, and the signals its
    supervisor logged (unless the run ends first: then the harness stops it)."""
    while pid_alive(pid):
        if ctx.wait(0.02):
            ctx.record("stop", pid=pid, died=False, **detail)
            return
    died = time.time()
    # The supervisor logs the exit when it next looks, up to its escalation delay (5 s)
    # later; a supervisor that died with its try logs none.
    signals = ctx.task.supervisor_signals(pid)
    deadline = time.monotonic() + EXIT_LOGGED_WITHIN
    while not any("exit_code" in s for s in signals) and time.monotonic() < deadline:
        if ctx.wait(0.2):
            break
        signals = ctx.task.supervisor_signals(pid)
    ctx.record("stop", at=died, pid=pid, died=True, signals=signals, **detail)


class TryStateFault(AirflowFault):
    """Act on the running task instance through Airflow's API; record how the try ends."""

    needs: ClassVar = frozenset({Capability.TRY_STATE})

    #: What the fault does, as recorded in its ``start``.
    action: ClassVar[dict[str, str]]

    @abstractmethod
    def act(self, task: TaskHandle) -> float:
        """Change the task instance's state; when Airflow had it."""

    def inject(self, ctx: FaultContext) -> None:
        if {Capability.TASK_PROCESS, Capability.SUPERVISOR} <= ctx.capabilities:
            pid = ctx.wait_for_try()
            if pid is None:
                return
            at = self.act(ctx.task)
            ctx.record("start", at=at, pid=pid, **self.action)
            record_death(ctx, pid)
            return
        number = _wait(ctx, ctx.task.running_try)
        if number is None:
            return
        at = self.act(ctx.task)
        ctx.record("start", at=at, try_number=number, **self.action)
        ended = _wait(ctx, lambda: ctx.task.try_ended(number))
        ctx.record("stop", at=ended, try_number=number, seen_by="airflow", ended=ended is not None)


def _wait(ctx: FaultContext, read: Callable[[], T | None]) -> T | None:
    """Poll Airflow's record with ``read`` until it gives a value (None: the run ended
    first). An API that cannot answer now (its database restarting) is asked again."""
    while not ctx.over:
        try:
            value = read()
        except ModeError:
            value = None
        if value is not None:
            return value
        ctx.wait(0.2)
    return None


@register
class ClearTask(TryStateFault):
    """Clear the running task instance, as a user does in the UI: a new try follows."""

    type: Literal["clear_task"] = "clear_task"
    action: ClassVar = {"action": "clear"}

    def act(self, task: TaskHandle) -> float:
        return task.clear_try()


@register
class MarkFailed(TryStateFault):
    """Mark the running task instance failed, as a user does in the UI."""

    type: Literal["mark_failed"] = "mark_failed"
    action: ClassVar = {"action": "mark", "state": "failed"}

    def act(self, task: TaskHandle) -> float:
        return task.mark_try("failed")


@register
class MarkSuccess(TryStateFault):
    """Mark the running task instance successful, as a user does in the UI."""

    type: Literal["mark_success"] = "mark_success"
    action: ClassVar = {"action": "mark", "state": "success"}

    def act(self, task: TaskHandle) -> float:
        return task.mark_try("success")
