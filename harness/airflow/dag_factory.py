"""Variants as Airflow DAGs: the only module that imports Airflow.

One DAG per variant, one task (``stream``) running :class:`StreamOperator`, configured by
``dag_run.conf`` over the params in :data:`harness.task.variants.PARAMS`. It works with Airflow 3
(``airflow.sdk``) and 2.x (``airflow.models``), so the same variant logic runs on both.

Task settings can be overridden when the DAG file is parsed, for experiments that need a
short ``execution_timeout`` or few retries: ``STREAMSTALL_TASK_OVERRIDES='{"execution_timeout":
5, "retries": 0, "retry_delay": 1}'`` (seconds). That suits ``airflow dags test``, where one
process parses and runs. A long-lived Airflow (the ``standalone`` mode) parses in its
dag-processor, scheduler and workers, so there each scenario gets a DAG of its own instead:
:func:`scenario_dags` builds them from a JSON file written before Airflow starts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, BaseHook, BaseOperator, Variable
except ImportError:  # Airflow 2.x
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.models import DAG, BaseOperator, Variable  # type: ignore[no-redef]

from harness.airflow.base import conf_variable
from harness.task.postgres_store import database_url, store_url
from harness.task.variants import PARAMS, VARIANTS, TaskContext, execute_try
from harness.task.variants.event_driven import CHANNEL, WATCH_POLL, redis_conn_id

__all__ = ["StreamOperator", "build_dag", "scenario_dags", "task_context"]

_SECONDS = ("execution_timeout", "retry_delay")


#: Where X's filtered stream is under an API's base URL (a connection's host).
STREAM_PATH = "/2/tweets/search/stream"


def task_context(context: Any, variant: str) -> TaskContext:
    """The variant's view of Airflow's task context, with the stream's URL and token from
    the ``stream_conn_id`` connection when there is one, and the run's PostgreSQL store
    from ``sink_conn_id`` (held in memory only). A run Airflow started by itself (a
    ``scheduled`` variant's) has no conf: it reads it from the Variable the harness set."""
    ti = context["ti"]
    logical_date = context.get("logical_date") or context.get("execution_date")
    params = {**PARAMS, **dict(context["params"])}
    dag_run = context.get("dag_run")
    if VARIANTS[variant].scheduled and not (dag_run is not None and dag_run.conf):
        params.update(Variable.get(conf_variable(ti.dag_id), default={}, deserialize_json=True))
    if params.get("stream_conn_id") and not (params.get("token") or params.get("token_file")):
        connection = BaseHook.get_connection(params["stream_conn_id"])
        params["stream_url"] = str(connection.host).rstrip("/") + STREAM_PATH
        params["token"] = connection.password
    if params.get("sink_conn_id"):
        sink = BaseHook.get_connection(params["sink_conn_id"])
        url = database_url(sink.host, sink.port, sink.login, sink.password, sink.schema)
        params["run_store"] = store_url(url, params["sink_schema"])
    return TaskContext(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=ti.try_number,
        logical_date=logical_date,
        params=params,
        events=_event_messages(context) if VARIANTS[variant].watched else [],
    )


def _event_messages(context: Any) -> list[str]:
    """The pub/sub messages of the asset events that started the run, oldest first (each
    event's ``extra["payload"]`` is the message the watcher's trigger received)."""
    found = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            payload = (event.extra or {}).get("payload") or {}
            if payload.get("data") is not None:
                found.append((event.timestamp, str(payload["data"])))
    return [data for _, data in sorted(found, key=lambda f: f[0])]


def _watched_asset(dag_id: str) -> Any:
    """The asset a ``watched`` variant's DAG is scheduled on: its watcher's trigger listens
    to the DAG's Redis (a connection the harness puts) in Airflow 3's triggerer."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = MessageQueueTrigger(
        scheme="redis+pubsub",
        channels=[CHANNEL],
        redis_conn_id=redis_conn_id(dag_id),
        poll_interval=WATCH_POLL,
    )
    return Asset(f"streamstall.{dag_id}", watchers=[AssetWatcher(f"{dag_id}.watcher", trigger)])


class StreamOperator(BaseOperator):
    """Runs one variant for one try. ``on_kill`` (Airflow's SIGTERM and timeout hook) asks
    the variant to stop; only variants that cooperate listen."""

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant
        self._ctx: TaskContext | None = None

    def execute(self, context: Any) -> None:
        self._ctx = task_context(context, self.variant)
        execute_try(self.variant, self._ctx)

    def on_kill(self) -> None:
        if self._ctx is not None:
            self._ctx.probe.mark("on_kill")
            self._ctx.stop.set()


def _task_settings(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        k: dt.timedelta(seconds=v) if k in _SECONDS and v is not None else v for k, v in raw.items()
    }


def build_dag(
    name: str,
    doc_md: str | None = None,
    *,
    dag_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    triggered_only: bool = False,
) -> DAG:
    """The DAG of variant ``name``.

    :param dag_id: its id (default: the variant's name).
    :param overrides: task settings in seconds (default: ``$STREAMSTALL_TASK_OVERRIDES``).
    :param triggered_only: no schedule, even for ``@continuous`` variants (a scheduler
        would otherwise start runs without the scenario's conf); also when
        ``$STREAMSTALL_TRIGGERED_ONLY`` is ``1`` (``dags/`` deployed for the ``external`` mode).
        A ``scheduled`` variant keeps its schedule: its runs read their conf from a Variable.
    """
    variant = VARIANTS[name]
    if overrides is None:
        overrides = json.loads(os.environ.get("STREAMSTALL_TASK_OVERRIDES", "{}"))
    dag_settings = {"schedule": None, **variant.dag}
    only = triggered_only or os.environ.get("STREAMSTALL_TRIGGERED_ONLY") == "1"
    if only and not variant.scheduled:
        dag_settings["schedule"] = None
    if variant.watched:
        dag_settings["schedule"] = [_watched_asset(dag_id or name)]
    with DAG(
        dag_id=dag_id or name,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        params=dict(PARAMS),
        doc_md=doc_md,
        tags=["streamstall"],
        **dag_settings,
    ) as dag:
        StreamOperator(
            task_id="stream", variant=name, **{**variant.task, **_task_settings(overrides)}
        )
    return dag


def scenario_dags(spec: Path, only: str | None = None) -> dict[str, DAG]:
    """One DAG per entry of ``spec`` (or only ``only``'s), triggered only unless its
    variant is ``scheduled``:
    ``{dag_id: {"variant": name, "task": {setting: seconds or count}, "description": text}}``."""
    entries = json.loads(spec.read_text())
    if only is not None:
        entries = {only: entries[only]}
    return {
        dag_id: build_dag(
            entry["variant"],
            entry.get("description"),
            dag_id=dag_id,
            overrides=entry.get("task", {}),
            triggered_only=True,
        )
        for dag_id, entry in entries.items()
    }
