"""Faults only a distributed Airflow has: a Celery worker lost or shut down by a deploy, the
broker or the metadata database restarted, a worker cut off the API server.

Each acts on the worker the try runs on (found from the probe's ``worker`` record), or on a
shared service, and records what it did and what it saw: how long a warm shutdown hung,
which pids went, when the worker was back. A worker taken down is started again after
``restart_after`` seconds, as its deploy tool (systemd, Kubernetes) would.
"""

from __future__ import annotations

import signal
import time
from abc import abstractmethod
from typing import ClassVar, Literal

from pydantic import Field

from harness.airflow.base import Capability
from harness.nemesis.base import AirflowFault, FaultContext, register

__all__ = [
    "KillCeleryWorker",
    "NetworkPartitionWorker",
    "RestartBroker",
    "RestartDatabase",
    "WorkerWarmShutdown",
]

WORKERS = frozenset({Capability.TASK_PROCESS, Capability.WORKERS})
SERVICES = frozenset({Capability.SERVICES})


class _OnTryWorker(AirflowFault):
    """A fault on the worker the try runs on: :meth:`act` once there is one."""

    needs: ClassVar = WORKERS
    alone: ClassVar = True  # the worker's other task slots run other scenarios' tries

    def inject(self, ctx: FaultContext) -> None:
        while (pid := ctx.wait_for_try()) is not None:  # None: the run ended first
            worker = ctx.task.try_worker()
            if worker is not None:
                self.act(ctx, pid, worker)
                return
            ctx.wait(0.05)  # the try's worker is not known yet

    @abstractmethod
    def act(self, ctx: FaultContext, pid: int, worker: str) -> None:
        """Act on ``worker``, which runs try ``pid``; record a ``start`` and a ``stop``."""


class _TakesWorkerDown(_OnTryWorker):
    """A fault that takes the worker down; its deploy tool starts it again."""

    restart_after: float = Field(default=5.0, ge=0, le=3600, description="seconds down")

    def restart(self, ctx: FaultContext, worker: str) -> int | None:
        """Start ``worker`` again ``restart_after`` seconds from now (unless the run ends
        first: the next scenario's start makes the deployment whole)."""
        if ctx.wait(self.restart_after):
            return None
        return ctx.task.restart_worker(worker)


@register
class KillCeleryWorker(_TakesWorkerDown):
    """SIGKILL the Celery worker the try runs on: with ``whole`` (default) every process of
    it, the try too (its machine or container is gone); without, its main process only (the
    OOM killer's pick), orphaning its pool and the try. Started again after
    ``restart_after`` seconds. Airflow finds the lost try by its missing heartbeats."""

    type: Literal["kill_celery_worker"] = "kill_celery_worker"
    whole: bool = Field(default=True, description="kill every process of the worker")

    def act(self, ctx: FaultContext, pid: int, worker: str) -> None:
        killed = ctx.task.signal_worker(worker, signal.SIGKILL, whole=self.whole)
        ctx.record("start", pid=pid, worker=worker, killed=killed, whole=self.whole)
        restarted = self.restart(ctx, worker)
        ctx.record("stop", pid=pid, worker=worker, restarted=restarted)


@register
class WorkerWarmShutdown(_TakesWorkerDown):
    """A deploy stops the Celery worker the try runs on: SIGTERM to its main process
    (Celery's warm shutdown: take no new tasks, wait for the running ones), and if it still
    runs ``grace`` seconds later, SIGKILL to every process of it, as the deploy tool does.
    Records how long the worker hung and whether it exited by itself. Started again
    after ``restart_after`` seconds."""

    type: Literal["worker_warm_shutdown"] = "worker_warm_shutdown"
    grace: float = Field(
        default=30.0, ge=0, le=3600,
        description="seconds before the SIGKILL (Kubernetes' default: 30; docker stop's: 10)",
    )  # fmt: skip

    def act(self, ctx: FaultContext, pid: int, worker: str) -> None:
        started = time.monotonic()
        (main,) = ctx.task.signal_worker(worker, signal.SIGTERM)[:1] or (None,)
        ctx.record("start", pid=pid, worker=worker, main=main, signal="SIGTERM")
        deadline = started + self.grace
        while ctx.task.worker_alive(worker) and time.monotonic() < deadline:
            if ctx.wait(0.1):
                break
        exited = not ctx.task.worker_alive(worker)
        hung = time.monotonic() - started
        killed: list[int] = []
        if not exited:
            killed = ctx.task.signal_worker(worker, signal.SIGKILL, whole=True)
        ctx.record(
            "stop", pid=pid, worker=worker, exited_by_itself=exited, hung_seconds=round(hung, 3),
            killed_after_grace=killed,
        )  # fmt: skip
        if not ctx.over:
            self.restart(ctx, worker)


class _ServiceDown(AirflowFault):
    """Stop a shared service for ``duration`` seconds, then start it again."""

    needs: ClassVar = SERVICES
    alone: ClassVar = True  # every scenario's database and broker
    service: ClassVar[str]
    duration: float = Field(default=10.0, gt=0, le=3600, description="seconds down")

    def inject(self, ctx: FaultContext) -> None:
        stopped = ctx.task.stop_service(self.service)
        ctx.record("start", service=self.service, pids=stopped)
        ctx.wait(self.duration)  # brought back even when the run ends meanwhile
        started = ctx.task.start_service(self.service)
        ctx.record("stop", service=self.service, pids=started)


@register
class RestartBroker(_ServiceDown):
    """The Celery broker (Redis) is down for ``duration`` seconds: stopped with SIGTERM
    (it writes its append-only file), then started on the same port with the same data."""

    type: Literal["restart_broker"] = "restart_broker"
    service: ClassVar[str] = "broker"


@register
class RestartDatabase(_ServiceDown):
    """The metadata database (PostgreSQL) is down for ``duration`` seconds: a fast
    shutdown (every connection dropped), then started again with the same data."""

    type: Literal["restart_database"] = "restart_database"
    service: ClassVar[str] = "database"


@register
class NetworkPartitionWorker(_OnTryWorker):
    """The try's worker cannot reach the API server for ``duration`` seconds: its traffic
    to it is held (not refused) by the worker's forwarder, then delivered on the heal."""

    type: Literal["network_partition_worker"] = "network_partition_worker"
    duration: float = Field(default=30.0, gt=0, le=3600, description="seconds cut off")

    def act(self, ctx: FaultContext, pid: int, worker: str) -> None:
        cut = ctx.task.partition_worker(worker, True)
        ctx.record("start", at=cut, pid=pid, worker=worker)
        ctx.wait(self.duration)  # healed even when the run ends meanwhile
        healed = ctx.task.partition_worker(worker, False)
        ctx.record("stop", at=healed, pid=pid, worker=worker)
