"""event_driven: Airflow 3's event-driven scheduling: no task streams at all.

The ingester (``harness/task/ingester.py``) reads the stream outside Airflow and publishes
each batch of tweets as one message on a Redis pub/sub channel. The DAG is scheduled on
an ``Asset`` whose ``AssetWatcher`` runs a ``MessageQueueTrigger(scheme="redis+pubsub")``
in Airflow's triggerer: each message becomes an asset event, the scheduler starts a DAG
run for the events it finds queued, and the run's task commits the tweets its events
carry (idempotently: a retry of the run reads the same events and commits nothing twice).

What it cannot do: Redis pub/sub keeps nothing. A message published while no watcher is
subscribed (the triggerer down, or the watcher between two events: the provider's trigger
ends after each message and is started again) reaches nobody. The ingester logs each
``PUBLISH``'s receivers (``published.jsonl``), so the loss is seen where it happens.
"""

from __future__ import annotations

import json

from harness.task.variants.common import TaskContext, cpu_work

__all__ = ["CHANNEL", "WATCH_POLL", "redis_conn_id", "run"]

CHANNEL = "tweets"  # the pub/sub channel (each scenario has a Redis of its own)
#: Seconds the provider's trigger sleeps after a poll that found no message (its default,
#: 60 s, would hold every event for up to a minute).
WATCH_POLL = 0.1


def redis_conn_id(dag_id: str) -> str:
    """The Airflow connection of the DAG's Redis (the harness puts it before unpausing)."""
    return f"streamstall_redis.{dag_id}"


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    probe.started(logical_date=ctx.logical_date, resumed_from=None, events=len(ctx.events))
    cpu_us = float(ctx.param("cpu_us"))
    rows = []
    for message in ctx.events:  # each: a JSON array of the tweet lines of one batch
        for line in json.loads(message):
            tweet = line["data"]
            rows.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
    sink = probe.open_sink()
    sink.commit_new(rows)
    sink.close()
