"""How far a run has got: tweets committed and the first commit (from its sink), and
whether a try is running now (from the probe's records).

One :class:`SinkWatch` per run serves both the runner (when the stream ends) and the
nemesis (when a fault fires), so both count from the same first commit: the sink's own
timestamp of it, not the moment someone polled.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from harness.procs import pid_alive

__all__ = ["SinkWatch", "TryWatch", "committed_count"]


def committed_count(sink: Path) -> int:
    """Tweets committed to ``sink`` so far (repeats included)."""
    db = sqlite3.connect(f"file:{sink}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT coalesce(sum(count), 0) FROM commits").fetchone()[0]
    finally:
        db.close()


class SinkWatch:
    """Reads a run's sink incrementally (only commits it has not seen), from any thread.

    :param sink: the run's sink (it must exist: the runner creates it before the task).
    :param started_at: UNIX time the task was started.
    """

    def __init__(self, sink: Path, started_at: float | None = None) -> None:
        self.sink = sink
        self.started_at = time.time() if started_at is None else started_at
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            f"file:{sink}?mode=ro", uri=True, timeout=10, check_same_thread=False
        )
        self._last_commit_id = 0
        self._committed = 0
        self._first: float | None = None

    def _read(self) -> None:
        with self._lock:
            count, last, first = self._db.execute(
                "SELECT coalesce(sum(count), 0), max(commit_id), min(committed_at) "
                "FROM commits WHERE commit_id > ?",
                (self._last_commit_id,),
            ).fetchone()
            if last is not None:
                self._committed += count
                self._last_commit_id = last
                self._first = first if self._first is None else self._first

    def committed(self) -> int:
        """Tweets committed so far (repeats included)."""
        self._read()
        return self._committed

    def first_commit_at(self) -> float | None:
        """When the first commit was made (the sink's time; None: not yet)."""
        if self._first is None:
            self._read()
        return self._first

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TryWatch:
    """Which tries are running, from the probe's task records (read incrementally): a try
    runs from its start record until its end record or its process's death."""

    def __init__(self, probe_dir: Path) -> None:
        self.probe_dir = probe_dir
        self._offsets: dict[Path, int] = {}
        self._open: dict[Path, tuple[int, float] | None] = {}  # file -> (pid, start) of its try
        self._finished_start = 0.0  # when the latest try that ended on its own began

    def running(self) -> list[int]:
        """Pids of the tries started, not ended, and alive."""
        self._read_all()
        return [t[0] for t in self._open.values() if t is not None and pid_alive(t[0])]

    def finished_since(self, at: float) -> bool:
        """Whether a try that started at or after ``at`` (UNIX s) has ended on its own."""
        self._read_all()
        return self._finished_start >= at

    def _read_all(self) -> None:
        for path in sorted(self.probe_dir.glob("*.jsonl")) if self.probe_dir.is_dir() else []:
            self._read(path)

    def _read(self, path: Path) -> None:
        offset = self._offsets.get(path, 0)
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1  # a line being written is read next time
        self._offsets[path] = offset + complete
        for line in chunk[:complete].splitlines():
            if b'"task"' not in line:
                continue
            record = json.loads(line)
            if record.get("f") != "task":
                continue
            if record["type"] == "invoke":
                self._open[path] = (record["pid"], record["time"])
                continue
            opened = self._open.get(path)
            if opened is not None:
                self._finished_start = max(self._finished_start, opened[1])
            self._open[path] = None
