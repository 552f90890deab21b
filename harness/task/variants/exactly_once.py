"""exactly_once: what a careful engineer ships instead.

- Bounded micro-batches: each commit writes the batch's rows *and* the checkpoint (the
  newest committed id) in one SQLite transaction, in the shared sink every worker can
  reach: never a batch without its checkpoint or the reverse.
- Idempotent: tweets the sink already holds are skipped (``already_committed``), so a
  repeat on the wire (a backfill, a duplicate) is not committed twice.
- Resumes with ``since_id`` = the checkpoint, on a retry, on a new run, or after a dropped
  connection within a try.
- Cooperates with Airflow: each try runs ``try_seconds`` (well under its
  ``execution_timeout``) and returns; ``on_kill`` (Airflow's SIGTERM and timeout hook) stops
  it after the current batch. The DAG is ``@continuous`` with ``max_active_runs=1``, so the
  next run picks up where the last commit left off.

It is exactly-once under every fault that keeps the stream's order and retention window.

The protocol is two named steps, which :func:`run` calls and the crash-schedule tests
(``tests/repro/test_crash_schedules.py``) call one by one, crashing between any two:
:func:`resume_point` when a try starts and :func:`commit_batch` per micro-batch.
"""

from __future__ import annotations

import time

import requests

from harness.task.probe import Sink
from harness.task.variants.common import TaskContext, cpu_work, read_stream

__all__ = ["CHECKPOINT", "MAX_BATCH_AGE", "commit_batch", "resume_point", "run"]

CHECKPOINT = "exactly_once.last_committed_id"
MAX_BATCH_AGE = 0.5  # seconds: commit at least this often when tweets trickle in
RECONNECT_DELAY = 0.2  # seconds between connection attempts after a stream error


def resume_point(sink: Sink) -> int | None:
    """Where a try resumes: the checkpoint of the last committed batch, in the shared sink
    (any worker finds it); ``None`` before the first commit (the caller then reads the live
    stream)."""
    return sink.checkpoint(CHECKPOINT)


def commit_batch(sink: Sink, rows: list[tuple[int, float]], checkpoint: int | None) -> int | None:
    """Commit a micro-batch, idempotently, with its checkpoint in the same transaction:
    tweets the sink already holds are dropped from it, and the checkpoint becomes the newest
    id seen (never lower than ``checkpoint``). Returns the new checkpoint (``checkpoint``
    itself, with nothing written, when ``rows`` is empty)."""
    if not rows:
        return checkpoint
    seen = sink.already_committed(tweet_id for tweet_id, _ in rows)
    fresh = list({tweet_id: score for tweet_id, score in rows if tweet_id not in seen}.items())
    newest = max(tweet_id for tweet_id, _ in rows)
    checkpoint = max(newest, checkpoint or 0)
    sink.commit(fresh, (CHECKPOINT, checkpoint))
    return checkpoint


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    sink = probe.open_sink()
    checkpoint = resume_point(sink)
    probe.started(logical_date=ctx.logical_date, resumed_from=checkpoint)
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    deadline = time.monotonic() + float(ctx.param("try_seconds"))

    def running() -> bool:
        return ctx.keep_running() and not ctx.stop.is_set() and time.monotonic() < deadline

    while running():
        pending: list[tuple[int, float]] = []
        oldest = time.monotonic()
        try:
            for message in read_stream(ctx, since_id=checkpoint):
                tweet = message["data"]
                pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
                if len(pending) >= batch or time.monotonic() - oldest >= MAX_BATCH_AGE:
                    checkpoint = commit_batch(sink, pending, checkpoint)
                    pending, oldest = [], time.monotonic()
                if not running():
                    break
        except requests.RequestException as e:
            probe.mark("stream_error", error=type(e).__name__, resume_from=checkpoint)
            ctx.stop.wait(RECONNECT_DELAY)  # do not hammer a stream that is down
        checkpoint = commit_batch(sink, pending, checkpoint)
    sink.close()
