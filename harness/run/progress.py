"""How far a run has got, read from its sink: tweets committed and the first commit.

One :class:`SinkWatch` per run serves both the runner (when the stream ends) and the
nemesis (when a fault fires), so both count from the same first commit: the sink's own
timestamp of it, not the moment someone polled.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["SinkWatch", "committed_count"]


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
