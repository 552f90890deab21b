"""A DAG you cannot edit: the harness reads its own sink with a query, read-only.

The query (``select tweet_id from tweets``) runs before the DAG is triggered and then every
``POLL`` seconds until the task has stopped; the tweet ids it returns beyond the last time
(as a multiset: an id stored twice more is two extra copies) are written into the run's
sink as a commit at the time of that query. The probe's own commits are then not recorded
(the query is the run's account). What this loses: *when* a tweet was committed, to within
``POLL`` s, and *which try* committed it (pid and try are 0), so per-try counts and a
latency below ``POLL`` say nothing; a row the DAG deletes or updates is not seen.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

from harness.task.probe import Sink

__all__ = ["POLL", "SinkQuery", "SinkQueryError"]

POLL = 0.5  # seconds between two reads of the user's sink


class SinkQueryError(RuntimeError):
    """The user's sink could not be read (the message says which file and why)."""


class SinkQuery:
    """``query`` against the SQLite file ``database`` (opened read-only), copied into the
    run's ``sink`` while it runs: :meth:`start`, then :meth:`stop` once the task stopped."""

    def __init__(self, database: Path, query: str, sink: Path) -> None:
        self.database = database
        self.query = query
        self._sink = Sink(sink, pid=0, try_number=0)
        self._seen: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="sink-query", daemon=True)
        self.error: str | None = None

    def ids(self) -> Counter[int]:
        """The tweet ids the query returns now (none while the file does not exist)."""
        if not self.database.exists():
            return Counter()
        try:
            db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=60)
            try:
                return Counter(int(row[0]) for row in db.execute(self.query))
            finally:
                db.close()
        except (sqlite3.Error, TypeError, ValueError, IndexError) as e:
            raise SinkQueryError(f"sink_query on {self.database}: {e}") from None

    def start(self) -> None:
        """Before the DAG is triggered: what the sink holds already is not this run's."""
        self._seen = self.ids()
        self._thread.start()

    def copy(self) -> int:
        """Commit what the query returns beyond the last read; how many tweets."""
        now = self.ids()
        gained = sorted((now - self._seen).elements())
        self._seen = now
        if gained:
            self._sink.commit([(tweet_id, None) for tweet_id in gained])
        return len(gained)

    def _poll(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self.copy()
            except SinkQueryError as e:
                self.error = str(e)
                return

    def stop(self) -> None:
        """After the task stopped: the last read; raises the error a read met."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if self.error is None:
                self.copy()
        finally:
            self._sink.close()
        if self.error is not None:
            raise SinkQueryError(self.error)
