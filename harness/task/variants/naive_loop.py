"""naive_loop: the article's example 1, flaws kept.

- Where to start comes from the run's context: it resumes after the last tweet created
  before the run's logical date (``since_id`` derived from it). A retry of the same run
  re-reads from there; a new run starts at its own logical date.
- ``while True`` with no checkpoint: after a dropped connection it reconnects to the live
  stream, "from now".
- ``except Exception`` around the whole loop prints the error and returns: a broken stream
  ends the task *successfully*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fake_stream import snowflake
from harness.task.variants.common import TaskContext, cpu_work, read_stream


def start_from_logical_date(ctx: TaskContext) -> int | None:
    """The last id that could exist before the logical date: read from there on."""
    if ctx.logical_date is None:
        return None
    ms = int(ctx.logical_date.timestamp() * 1000)
    return snowflake.encode(ms, 0) - 1


def run(ctx: TaskContext, on_tweet: Callable[[dict[str, Any]], None] | None = None) -> None:
    """The loop; ``on_tweet`` (for variants built on it) sees each tweet it processes."""
    probe = ctx.probe
    since_id = start_from_logical_date(ctx)
    probe.started(logical_date=ctx.logical_date, resumed_from=since_id)
    if ctx.logical_date:
        print(f"Starting stream from {ctx.logical_date}")
    else:
        print("No execution date. Starting stream.")
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    sink = probe.open_sink()
    try:
        while ctx.keep_running():  # the article's `while True` (bounded only by the harness)
            pending = []
            for message in read_stream(ctx, since_id=since_id):
                tweet = message["data"]
                pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
                if on_tweet is not None:
                    on_tweet(tweet)
                if len(pending) >= batch:
                    sink.commit(pending)
                    pending = []
            if pending:
                sink.commit(pending)
            since_id = None  # reconnect "from now"
            probe.mark("reconnect", since_id=None)
    except Exception as e:
        print(f"Error: {e}")
