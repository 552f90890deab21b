"""checkpoint: the article's example 2, flaws kept.

- State is a JSON file on the worker's local disk (``scratch_dir``, a ``/tmp`` of its own):
  a retry on another worker does not find it and starts from the beginning (the live
  stream).
- It resumes with ``since_id`` from the file, and writes the file *after* committing the
  tweets it covers, non-atomically (``open(..., "w")`` + ``json.dump``), every ``batch``
  tweets: a crash between the commit and the write repeats tweets; a crash during the
  write leaves a truncated file, and ``json.load`` then raises on every try.
- ``except Exception`` around the loop prints and returns (success).

The protocol is a handful of named steps, each a function, that :func:`run` calls in the
article's order and the crash-schedule tests (``tests/repro/test_crash_schedules.py``) call
one by one, crashing between any two: :func:`load_state` when a try starts; per batch,
:func:`commit_batch`, then :func:`save_state` as its two halves, :func:`open_state` (which
truncates the file) and :func:`dump_state` (the bytes land at its close).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from harness.task.probe import Sink
from harness.task.variants.common import TaskContext, cpu_work, read_stream

__all__ = [
    "STATE_FILE",
    "commit_batch",
    "dump_state",
    "load_state",
    "open_state",
    "run",
    "save_state",
    "state_file",
]

STATE_FILE = "twitter_stream_state.json"


def state_file(ctx: TaskContext) -> Path:
    return ctx.scratch_dir / STATE_FILE


def load_state(path: Path) -> int | None:
    """The last processed id the state file holds, ``None`` if there is no file (a first
    try, or a retry on another worker: the caller then reads the live stream). A torn file
    raises (``json.JSONDecodeError``): the article has no handler around it, so every
    later try on this worker raises the same way."""
    try:
        with open(path) as f:
            state = json.load(f)
            last_processed_id = state.get("last_processed_id", None)
            print(f"Resuming from ID {last_processed_id}")
    except FileNotFoundError:
        last_processed_id = None
        print("Starting from beginning of stream.")
    return last_processed_id


def commit_batch(sink: Sink, pending: list[tuple[int, float]]) -> int:
    """Commit a batch's tweets (and only them: the state file is written afterwards, by
    :func:`save_state`). Returns the id of its last tweet, the new resume point."""
    sink.commit(pending)
    return pending[-1][0]


def open_state(path: Path) -> TextIO:
    """The first half of the article's write: ``open(path, "w")``, which truncates the file
    there and then. Until :func:`dump_state` closes it, the file on disk is empty."""
    return open(path, "w")


def dump_state(f: TextIO, last_processed_id: int) -> None:
    """The second half: ``json.dump`` into the file :func:`open_state` opened, then close
    it. The few dozen bytes sit in the file object's buffer until the close, so a process
    killed in between leaves the file empty."""
    with f:
        json.dump({"last_processed_id": last_processed_id}, f)


def save_state(path: Path, last_processed_id: int) -> None:
    """The article's ``with open(path, "w") as f: json.dump(...)``: not atomic."""
    dump_state(open_state(path), last_processed_id)


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    path = state_file(ctx)
    last_processed_id = load_state(path)  # a corrupt file raises here, outside any handler
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
                    last_processed_id = commit_batch(sink, pending)
                    pending = []
                    save_state(path, last_processed_id)
                    probe.checkpoint(last_processed_id, path=str(path))
            if pending:
                last_processed_id = commit_batch(sink, pending)
    except Exception as e:
        print(f"Error: {e}")
