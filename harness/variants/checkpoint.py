"""checkpoint: the article's example 2, flaws kept.

- State is a JSON file on the worker's local disk (``scratch_dir``, a ``/tmp`` of its own):
  a retry on another worker does not find it and starts from the beginning (the live
  stream).
- It resumes with ``since_id`` from the file, and writes the file *after* committing the
  tweets it covers, non-atomically (``open(..., "w")`` + ``json.dump``), every ``batch``
  tweets: a crash between the commit and the write repeats tweets; a crash during the
  write leaves a truncated file, and ``json.load`` then raises on every try.
- ``except Exception`` around the loop prints and returns (success).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.variants.common import TaskContext, cpu_work, read_stream

STATE_FILE = "twitter_stream_state.json"


def state_file(ctx: TaskContext) -> Path:
    return Path(ctx.param("scratch_dir")) / STATE_FILE


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    path = state_file(ctx)
    try:
        with open(path) as f:  # a corrupt file raises here, outside any handler
            state = json.load(f)
            last_processed_id = state.get("last_processed_id", None)
            print(f"Resuming from ID {last_processed_id}")
    except FileNotFoundError:
        last_processed_id = None
        print("Starting from beginning of stream.")
    probe.started(
        logical_date=ctx.logical_date, resumed_from=last_processed_id, state_file=str(path)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    sink = probe.open_sink()
    try:
        while ctx.keep_running():
            pending = []
            for message in read_stream(ctx, since_id=last_processed_id):
                tweet = message["data"]
                pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
                if len(pending) >= batch:
                    sink.commit(pending)
                    last_processed_id = pending[-1][0]
                    pending = []
                    with open(path, "w") as f:
                        json.dump({"last_processed_id": last_processed_id}, f)
                    probe.checkpoint(last_processed_id, path=str(path))
            if pending:
                sink.commit(pending)
                last_processed_id = pending[-1][0]
    except Exception as e:
        print(f"Error: {e}")
