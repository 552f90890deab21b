"""exactly_once: what a careful engineer ships instead.

- Bounded micro-batches: each commit writes the batch's rows *and* the checkpoint (the
  newest committed id) in one SQLite transaction, in the shared sink every worker can
  reach: never a batch without its checkpoint or the reverse. Whatever ends a connection
  (a timeout raised inside the loop included), the partial batch is committed first.
- Idempotent however tries overlap: the commit checks which tweets the sink holds inside
  its own write transaction and advances the checkpoint to ``max(stored, new)``
  (``Sink.commit_new``). A repeat on the wire (a backfill, a recovery, a replay), or an
  orphaned try still streaming beside its retry, commits nothing twice and never moves the
  checkpoint back.
- A start point before the first read: a first try records where it connects, so one
  killed before its first commit leaves its retry a place to resume from.
- Resumes the way its access level allows (``resume``, :mod:`harness.task.resume`):
  ``backfill_minutes`` from the checkpoint's age, a recovery connection beyond five
  minutes, or ``since_id`` on this fake stream; on a try, a new run, or a dropped
  connection within a try. Backs off on refusals (``x-rate-limit-reset``) and errors.
- Cooperates with Airflow: each try runs ``try_seconds`` (well under its
  ``execution_timeout``) and returns; ``on_kill`` (Airflow's SIGTERM and timeout hook) stops
  it after the current batch. The DAG is ``@continuous`` with ``max_active_runs=1``, so the
  next run picks up where the last commit left off.

It is exactly-once while every gap fits in what its level can reach back to; beyond that
it loses the tweets outside the reach, and says so in a ``connect`` mark.

The protocol is two named steps, which :func:`run` calls and the crash-schedule tests
(``tests/repro/test_crash_schedules.py``) call one by one, crashing between any two:
:func:`resume_point` when a try starts and :func:`commit_batch` per micro-batch.
"""

from __future__ import annotations

import time
import zlib

import requests

from harness.task.probe import Sink
from harness.task.resume import Backoff, Connect, now_ms, plan, position_at
from harness.task.variants.common import TaskContext, cpu_work, read_stream

__all__ = ["CHECKPOINT", "MAX_BATCH_AGE", "commit_batch", "resume_point", "run"]

CHECKPOINT = "exactly_once.last_committed_id"
MAX_BATCH_AGE = 0.5  # seconds: commit at least this often when tweets trickle in


def resume_point(sink: Sink, start: int) -> int:
    """Where a try resumes: the checkpoint in the shared sink (any worker finds it). The
    first try finds none and records ``start``, the position it is about to read from."""
    return int(sink.checkpoint_or_start(CHECKPOINT, start))


def commit_batch(sink: Sink, rows: list[tuple[int, float]], checkpoint: int) -> int:
    """Commit a micro-batch, idempotently, with its checkpoint in the same transaction:
    tweets the sink already holds are dropped from it, and the checkpoint becomes the
    newest of the stored one, ``checkpoint`` and the batch's ids. Returns it."""
    newest = max([checkpoint, *(tweet_id for tweet_id, _ in rows)])
    stored = sink.commit_new(rows, (CHECKPOINT, newest))[1]
    assert stored is not None  # newest is not None
    return stored


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    sink = probe.open_sink()
    start = position_at(now_ms())
    checkpoint = resume_point(sink, start)
    # The first try of all reads live from its start point; every later connect resumes.
    first = checkpoint == start
    probe.started(logical_date=ctx.logical_date, resumed_from=checkpoint)
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    resume, scale = str(ctx.param("resume")), float(ctx.param("backfill_scale"))
    deadline = time.monotonic() + float(ctx.param("try_seconds"))
    backoff = Backoff(seed=zlib.crc32(f"{ctx.run_id}:{ctx.try_number}".encode()))

    def running() -> bool:
        return ctx.keep_running() and not ctx.stop.is_set() and time.monotonic() < deadline

    while running():
        connect = Connect("live") if first else plan(resume, checkpoint, now_ms(), scale)
        first = False
        probe.mark("connect", **connect.detail())
        pending: list[tuple[int, float]] = []
        oldest = time.monotonic()
        errors: list[dict] = []
        wait = 0.0
        try:
            for message in read_stream(ctx, params=connect.params, messages=errors):
                backoff.reset()
                tweet = message["data"]
                pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
                if len(pending) >= batch or time.monotonic() - oldest >= MAX_BATCH_AGE:
                    checkpoint = commit_batch(sink, pending, checkpoint)
                    pending, oldest = [], time.monotonic()
                if not running():
                    break
            else:
                if connect.until is not None and not errors and running():
                    # A recovery connection that ran to its end delivered the whole
                    # period: the checkpoint moves to its end, even if it held no tweet.
                    checkpoint = commit_batch(sink, pending, max(checkpoint, connect.until))
                    pending = []
        except requests.HTTPError as e:
            headers = e.response.headers if e.response is not None else {}
            wait = backoff.after_refusal(headers, time.time())
            status = e.response.status_code if e.response is not None else None
            probe.mark("stream_error", error="HTTPError", status=status, wait_s=round(wait, 3))
        except requests.RequestException as e:
            wait = backoff.after_network_error()
            probe.mark("stream_error", error=type(e).__name__, wait_s=round(wait, 3))
        finally:
            # Whatever ends the connection, a timeout raised inside the loop included, what
            # was processed is committed: a partial batch waits for the next tweet, which a
            # quiet stream may not send before the timeout (then, with the retries used up,
            # it was lost). Idempotent, so a commit the exception cut short is safe to redo.
            checkpoint = commit_batch(sink, pending, checkpoint)
            pending = []
        if wait:
            ctx.stop.wait(min(wait, max(0.0, deadline - time.monotonic())))
    sink.close()
