"""The run's PostgreSQL store (:mod:`harness.task.postgres_store`), kept in step with its
run folder, for tries on workers that do not share the harness's disk.

The tries write their sink rows and events into the store; :meth:`RunStore.mirror` copies
every row committed since its last call into the run folder (``sink.sqlite``,
``probe/<host>-<pid>.jsonl``) and carries the folder's stop request the other way. So
whatever reads a run folder (the runner's watches, the nemesis, the checker) reads it
unchanged. A copy is one snapshot of the store written in one SQLite transaction, so the
folder never holds half a commit.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from harness.layout import RunLayout
from harness.task.postgres_store import STORE_SCHEMA, connect, store_url
from streamstall_probe import SINK_SCHEMA

__all__ = ["RunStore", "schema_name"]


def schema_name(scenario: str) -> str:
    """A PostgreSQL schema for one run of ``scenario`` (lower case, at most 63 bytes)."""
    stem = re.sub(r"[^a-z0-9_]", "_", scenario.lower())[:32]
    tag = hashlib.sha1(f"{scenario}{time.time_ns()}".encode()).hexdigest()[:10]
    return f"streamstall_{stem}_{tag}"


class RunStore:
    """One run's schema in the database at ``database_url`` (which the harness reaches)."""

    def __init__(self, database_url: str, schema: str, layout: RunLayout) -> None:
        self.schema = schema
        self.layout = layout
        self.url = store_url(database_url, schema)
        self._database_url = database_url
        self._last = {"tweets": 0, "commits": 0, "events": 0}
        self._stop_sent = False
        self._lock = threading.Lock()
        with connect(database_url) as db:
            db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        self._db = connect(self.url)
        self._db.execute(STORE_SCHEMA)
        self._db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        # Used under the lock, from the mirroring thread and the one that closes it.
        sink = sqlite3.connect(
            layout.sink, timeout=60, isolation_level=None, check_same_thread=False
        )
        sink.executescript(SINK_SCHEMA)
        self._sink = sink

    def mirror(self) -> int:
        """Copy what was committed since the last call; send the stop request once the
        folder has it. How many rows were copied."""
        with self._lock:
            if not self._stop_sent and self.layout.stop_request.exists():
                with self._db.transaction():
                    self._db.execute("INSERT INTO stop_request VALUES (%s)", (time.time(),))
                self._stop_sent = True
            with self._db.transaction():  # one snapshot of the three tables
                rows = {
                    table: self._db.execute(query, (self._last[table],)).fetchall()
                    for table, query in _NEW_ROWS.items()
                }
                checkpoints = self._db.execute("SELECT * FROM checkpoints").fetchall()
            self._write(rows, checkpoints)
            return sum(len(r) for r in rows.values())

    def _write(self, rows: dict[str, list[Any]], checkpoints: list[Any]) -> None:
        events: dict[str, list[str]] = {}
        for _, host, pid, line in rows["events"]:
            events.setdefault(f"{host}-{pid}.jsonl", []).append(line)
        if events:
            self.layout.probe_dir.mkdir(exist_ok=True)
        for name, lines in events.items():
            with (self.layout.probe_dir / name).open("a") as f:
                f.write("".join(lines))
        db = self._sink
        db.execute("BEGIN IMMEDIATE")
        try:
            tweets = [r[1:] for r in rows["tweets"]]
            db.executemany("INSERT INTO tweets VALUES (?, ?, ?, ?, ?)", tweets)
            commits = [(*r[:5], bytes(r[5])) for r in rows["commits"]]
            db.executemany("INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?)", commits)
            db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)", checkpoints)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for table, new in rows.items():
            if new:
                self._last[table] = new[-1][0]

    def close(self, drop: bool = True) -> None:
        """Close, and drop the schema (after a last :meth:`mirror`, the folder has it all)."""
        with self._lock:
            self._sink.close()
            self._db.close()
            if drop:
                with connect(self._database_url) as db:
                    query = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                    db.execute(query.format(sql.Identifier(self.schema)))


#: Rows after the last one copied, oldest first (ids are handed out in commit order).
_NEW_ROWS = {
    "tweets": "SELECT seq, tweet_id, result, processed_at, pid, try_number FROM tweets "
    "WHERE seq > %s ORDER BY seq",
    "commits": "SELECT * FROM commits WHERE commit_id > %s ORDER BY commit_id",
    "events": "SELECT * FROM events WHERE event_id > %s ORDER BY event_id",
}
