"""queue_decoupled: the article's "external queue" advice, done carefully.

A standalone ingester outside Airflow (``harness/task/ingester.py``) reads the stream into a
Redis Stream. The task reads it as a member of the consumer group ``airflow``
(``XREADGROUP``), commits each batch to the sink idempotently, then acknowledges it
(``XACK``). On start it first claims what a dead consumer left pending (``XAUTOCLAIM``):
a crash between commit and acknowledgement re-delivers the batch. An entry idle for
``CLAIM_IDLE_MS`` may also belong to a consumer that is slow, not dead (an orphaned try
still running), so two consumers can process one entry: the commit is idempotent inside
its own transaction (``Sink.commit_new``), so the second writes nothing. The same
absorbs the repeats the ingester's backfill and recovery put into the stream. The stream
keeps flowing into Redis while no task runs, so restarts cost latency, not tweets.
"""

from __future__ import annotations

import json
import os

import redis

from harness.task.variants.common import TaskContext, cpu_work

GROUP = "airflow"
CLAIM_IDLE_MS = 1000  # entries pending this long belong to a consumer that is gone


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    client = redis.Redis.from_url(ctx.param("redis_url"))
    key = ctx.param("redis_stream")
    try:
        client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    consumer = f"{ctx.run_id}:{ctx.try_number}:{os.getpid()}"
    # [next id, claimed entries] (Redis 7 appends the deleted ids)
    claimed = client.xautoclaim(key, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=10_000)[1]
    probe.started(logical_date=ctx.logical_date, resumed_from=len(claimed), consumer=consumer)
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    sink = probe.open_sink()
    pending = claimed  # first what the last consumer left, then new entries
    while ctx.keep_running() and not ctx.stop.is_set():
        if not pending:
            answer = client.xreadgroup(GROUP, consumer, {key: ">"}, count=batch, block=500)
            pending = answer[0][1] if answer else []
        if not pending:
            continue
        rows = []
        for _, fields in pending:
            tweet = json.loads(fields[b"line"])["data"]
            rows.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
        sink.commit_new(rows)
        client.xack(key, GROUP, *[entry_id for entry_id, _ in pending])
        pending = []
    sink.close()
