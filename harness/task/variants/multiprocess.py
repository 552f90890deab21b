"""multiprocess and threaded: the article's advice against the GIL, and its control.

One reader (the task's main thread) reads the stream and hands raw lines to ``workers``
workers through a bounded queue; each worker parses, does the CPU work and commits its
own batches through the probe. ``multiprocess`` uses processes (each with its own GIL);
``threaded`` uses threads in the task process, so the reader competes with the workers
for one GIL: the pair measures what the article blames stalls on.

No checkpoint (every try starts from the live stream); whatever sits in the queue or a
worker's uncommitted batch when the task dies is lost.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.task.gil import READER
from harness.task.probe import Probe
from harness.task.variants.common import TaskContext, cpu_work

_DONE = b""  # sentinel: the reader is finished
_QUEUE_SIZE = 10_000


def work(lines: Any, ctx_fields: dict[str, Any], worker: int, parent: int | None) -> None:
    """A worker: parse, score, commit in batches until the sentinel (or, for a worker
    process, until its parent task process is gone)."""
    probe = Probe(ctx_fields["run_dir"], **ctx_fields["ids"])
    probe.mark("worker_started", worker=worker)
    if parent is not None and ctx_fields["gil_interval"] > 0:  # a process: its own GIL
        probe.sample_gil(ctx_fields["gil_interval"], role="worker")
    sink = probe.open_sink()
    cpu_us, batch = ctx_fields["cpu_us"], ctx_fields["batch"]
    pending: list[tuple[int, float]] = []
    try:
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if parent is not None and os.getppid() != parent:  # the task was killed
                    return
                continue
            if line == _DONE:
                break
            tweet = json.loads(line)["data"]
            pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
            if len(pending) >= batch:
                sink.commit(pending)
                pending = []
        if pending:
            sink.commit(pending)
    finally:
        sink.close()


def _tweet_id(line: bytes) -> int | None:
    """The id of a raw tweet line without parsing it (the reader hands lines on raw);
    None if the line is damaged (a stream fault): the worker that parses it decides."""
    start = line.find(b'"id":"') + 6
    end = line.find(b'"', start) if start >= 6 else -1
    return int(line[start:end]) if end > start and line[start:end].isdigit() else None


def _read(ctx: TaskContext, lines: Any) -> None:
    """The reader: raw tweet lines into the queue until the stream or the run ends."""
    import requests

    try:
        with requests.get(
            ctx.param("stream_url"), headers=ctx.headers(), stream=True, timeout=30
        ) as response:
            response.raise_for_status()
            for line in response.iter_lines(chunk_size=4096):
                if not ctx.keep_running():
                    return
                if line.startswith(b'{"data"'):
                    tweet_id = _tweet_id(line)
                    if tweet_id is not None:
                        READER.saw(tweet_id)
                    lines.put(line)
    except Exception as e:  # as the article's loops: print and end the task normally
        print(f"Error: {e}")


def _fields(ctx: TaskContext) -> dict[str, Any]:
    ids = {
        "dag_id": ctx.dag_id,
        "run_id": ctx.run_id,
        "task_id": ctx.task_id,
        "try_number": ctx.try_number,
    }
    return {
        "run_dir": str(ctx.run_dir),
        "ids": ids,
        "cpu_us": float(ctx.param("cpu_us")),
        "batch": int(ctx.param("batch")),
        "gil_interval": float(ctx.param("gil_interval") or 0),
    }


@contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Spawned workers must not re-run this process's main script: under a LocalExecutor
    it is the ``airflow`` command, whose import fails in a task process (Airflow 3 gives
    tasks no database URL). A worker needs only :func:`work`, imported from this module
    by name; without ``__main__.__file__``, spawn does not prepare the main module."""
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def run_with(ctx: TaskContext, use_processes: bool) -> None:
    ctx.probe.started(
        logical_date=ctx.logical_date, resumed_from=None, workers=int(ctx.param("workers"))
    )
    n = int(ctx.param("workers"))
    if use_processes:
        spawn = mp.get_context("spawn")
        lines: Any = spawn.Queue(_QUEUE_SIZE)
        workers: list[Any] = [
            spawn.Process(target=work, args=(lines, _fields(ctx), i, os.getpid()), daemon=True)
            for i in range(n)
        ]
    else:
        lines = queue.Queue(_QUEUE_SIZE)
        workers = [
            threading.Thread(target=work, args=(lines, _fields(ctx), i, None), daemon=True)
            for i in range(n)
        ]
    with _workers_skip_main():
        for w in workers:
            w.start()
    _read(ctx, lines)
    for _ in workers:
        lines.put(_DONE)
    for w in workers:
        w.join()


def run_processes(ctx: TaskContext) -> None:
    run_with(ctx, use_processes=True)


def run_threads(ctx: TaskContext) -> None:
    run_with(ctx, use_processes=False)
