"""The DAG variants under test: name -> how it runs and how Airflow should schedule it.

Each variant is a function of a :class:`~harness.task.variants.common.TaskContext` in its own
module; ``dags/<name>.py`` turns it into a DAG through ``harness/airflow/dag_factory.py``. To add a
variant: write its module, add a :class:`Variant` here, add a three-line file to ``dags/``
and a row to ``dags/README.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.task.variants import (
    checkpoint,
    event_driven,
    exactly_once,
    leaky_loop,
    multiprocess,
    naive_loop,
    queue_decoupled,
    scheduled_poll,
    timeout_handling,
)
from harness.task.variants.common import PARAMS, TaskContext

__all__ = ["PARAMS", "POLL_INTERVAL", "VARIANTS", "TaskContext", "Variant", "execute_try"]


@dataclass(frozen=True)
class Variant:
    """A variant: what one try of its task executes, and the Airflow settings of its one
    task and DAG. ``queue``: it reads a Redis Stream that an ingester fills (the runner
    starts both). ``scheduled``: Airflow's scheduler starts its runs (a timetable or an
    asset), never the harness; each run reads its conf from an Airflow Variable.
    ``watched``: its DAG is scheduled on an asset whose watcher (in Airflow's triggerer)
    listens to the ingester's pub/sub channel (Airflow 3 only)."""

    name: str
    execute: Callable[[TaskContext], None]
    task: dict[str, Any] = field(default_factory=dict)
    dag: dict[str, Any] = field(default_factory=dict)
    queue: bool = False
    scheduled: bool = False
    watched: bool = False


_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=2)}
POLL_INTERVAL = 5.0  # seconds: scheduled_poll's schedule

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("naive_loop", naive_loop.run, dict(_RETRIES)),
        Variant("checkpoint", checkpoint.run, dict(_RETRIES)),
        Variant("leaky_loop", leaky_loop.run, dict(_RETRIES)),
        # The article writes execution_timeout=60*30; Airflow wants a timedelta.
        Variant(
            "timeout_handling",
            timeout_handling.run,
            {**_RETRIES, "execution_timeout": dt.timedelta(minutes=30)},
        ),
        Variant("multiprocess", multiprocess.run_processes, dict(_RETRIES)),
        Variant("threaded", multiprocess.run_threads, dict(_RETRIES)),
        Variant(
            "exactly_once",
            exactly_once.run,
            {
                "retries": 10,
                "retry_delay": dt.timedelta(seconds=1),
                "execution_timeout": dt.timedelta(minutes=5),
            },
            {"schedule": "@continuous", "max_active_runs": 1},
        ),
        Variant(
            "queue_decoupled",
            queue_decoupled.run,
            {"retries": 10, "retry_delay": dt.timedelta(seconds=1)},
            {"schedule": "@continuous", "max_active_runs": 1},
            queue=True,
        ),
        # Every POLL_INTERVAL a short run (X's recent search, from the since_id in the sink).
        # In production the interval is minutes (X's limit: 450 requests per 15 min).
        Variant(
            "scheduled_poll",
            scheduled_poll.run,
            {"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
            {"schedule": dt.timedelta(seconds=POLL_INTERVAL), "max_active_runs": 1},
            scheduled=True,
        ),
        # A run per batch of asset events (max_active_runs: Airflow's default, 16).
        Variant(
            "event_driven",
            event_driven.run,
            {"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
            queue=True,
            scheduled=True,
            watched=True,
        ),
    ]
}


def execute_try(name: str, ctx: TaskContext) -> None:
    """Execute one try of variant ``name``, recording in the probe how the try ended."""
    try:
        VARIANTS[name].execute(ctx)
    except BaseException as error:
        if not ctx.probe.in_try:  # it failed before it could even say where it starts
            ctx.probe.started(logical_date=ctx.logical_date, resumed_from=None)
        ctx.probe.exited("raised", error)
        raise
    if not ctx.probe.in_try:
        ctx.probe.started(logical_date=ctx.logical_date, resumed_from=None)
    ctx.probe.exited("returned")
