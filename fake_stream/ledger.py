"""The ground-truth ledger: every tweet created, and what became of it on each connection.

One SQLite file in WAL mode, written in batches by the server and readable after it stops
(or while it runs). Tweets are stored as index *runs*, never one row per tweet: hundreds of
thousands are created per second. Tables (``first``/``stop`` are a half-open index range)::

    meta(key, value)                    seed, t0_ms, t0_wall, profile, started_at, stopped_at,
                                        queue_size, retention, and X's rules in force:
                                        strict_x, access_level, stream_connections,
                                        backfill_scale, recovery_window and
                                        recent_window (s)
    created(slot, first, count)         slot k = UNIX ms t0_ms + k; only slots with tweets
    connections(conn_id, token, endpoint, params, peer, opened_at, start_index,
                closed_at, end_reason, bytes_written, bytes_acked)
        a stream connection, or one answered recent search request (endpoint
        '/2/tweets/search/recent'; start_index: the lowest index it could return; end_reason
        'search_complete', 'client_closed' or 'server_shutdown').
    deliveries(conn_id, seq, first, stop, status)
        status 'acked': the client's TCP acknowledged every byte of these messages;
        'unknown': written, the connection closed gracefully before the ack came
        (Jepsen's "info": the client may or may not have them). ``seq`` orders the runs of
        one connection as they went out (faults can repeat or reorder tweets). A search
        page is one message, usable only whole: its tweets are ascending runs of one status.
    drops(conn_id, first, stop, reason, stage)
        conn_id NULL + reason 'no_consumer': created while no stream was connected.
        stage 'queued': never written (the connection ended first, or its queue overflowed);
        'in_flight': written but lost with the connection (reset before acknowledgement);
        'fault': a fault destroyed the message (e.g. a truncated line).
    replay_ids(first, ids)              a replay that keeps its capture's ids: the id of
                                        every tweet index from ``first`` on (int64 array,
                                        little-endian); empty when ids are minted from slots
    events(at, conn_id, kind, name, detail)  faults fired, warnings sent, rate changes, ...
        a connect's replay: 'backfill' (from_ms, to_ms: the scaled window; first, live_from:
        its index range) or 'recovery' (start_ms, end_ms; first, stop: it streams
        [first, stop), then ends with end_reason 'recovery_complete').

Times (``*_at``) are UNIX seconds. Slot ``k`` was created at wall time ``t0_wall + k/1000``
(``t0_ms`` is the same instant unless the server was started with a pinned ``--t0-ms``).

``meta.stopped_at`` is written only by a clean stop: a ledger without it belongs to a server
that was killed, and everything after its last flush (at most ``flush_interval`` seconds)
is missing. :class:`LedgerReader` says so.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fake_stream import snowflake

__all__ = [
    "SCHEMA_VERSION",
    "Delivery",
    "Drop",
    "LedgerError",
    "LedgerReader",
    "LedgerWriter",
    "Run",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE created(slot INTEGER PRIMARY KEY, first INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE connections(
    conn_id INTEGER PRIMARY KEY, token TEXT, endpoint TEXT, params TEXT, peer TEXT,
    opened_at REAL, start_index INTEGER,
    closed_at REAL, end_reason TEXT, bytes_written INTEGER, bytes_acked INTEGER);
CREATE TABLE deliveries(
    conn_id INTEGER NOT NULL, seq INTEGER NOT NULL, first INTEGER NOT NULL,
    stop INTEGER NOT NULL, status TEXT NOT NULL, PRIMARY KEY (conn_id, seq));
CREATE TABLE drops(
    conn_id INTEGER, first INTEGER NOT NULL, stop INTEGER NOT NULL,
    reason TEXT NOT NULL, stage TEXT NOT NULL);
CREATE TABLE events(at REAL NOT NULL, conn_id INTEGER, kind TEXT NOT NULL, name TEXT,
    detail TEXT);
CREATE TABLE replay_ids(first INTEGER PRIMARY KEY, ids BLOB NOT NULL);
"""
_IDS_PER_ROW = 1 << 16


class LedgerError(Exception):
    """A ledger file that is missing, unreadable or inconsistent."""


@dataclass
class Run:
    """A half-open range of tweet indexes ``[first, stop)`` with one label."""

    first: int
    stop: int
    label: str

    def __len__(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Delivery:
    """Tweets ``[first, stop)`` written on connection ``conn_id`` as its ``seq``-th run."""

    conn_id: int
    seq: int
    first: int
    stop: int
    status: str  # "acked" or "unknown"

    def __len__(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Drop:
    """Tweets ``[first, stop)`` that did not reach connection ``conn_id`` (None: no
    connection at all), with why and at which stage."""

    conn_id: int | None
    first: int
    stop: int
    reason: str
    stage: str

    def __len__(self) -> int:
        return self.stop - self.first


class _RunBuffer:
    """Merges index ranges into runs as they arrive: one open run per key.

    A range that continues the key's open run (same label, starts where it stops) extends
    it; anything else closes it and opens run number ``seq + 1`` of that key.
    """

    def __init__(self) -> None:
        self.open: dict[Any, tuple[int, Run]] = {}
        self.closed: list[tuple[Any, int, Run]] = []

    def add(self, key: Any, first: int, stop: int, label: str = "") -> None:
        if stop <= first:
            return
        seq, run = self.open.get(key, (-1, None))
        if run is not None and run.stop == first and run.label == label:
            run.stop = stop
            return
        if run is not None:
            self.closed.append((key, seq, run))
        self.open[key] = (seq + 1, Run(first, stop, label))

    def take(self, everything: bool) -> list[tuple[Any, int, Run]]:
        """Closed runs (and the open ones too when ``everything``), forgetting them."""
        taken, self.closed = self.closed, []
        if everything:
            taken += [(key, seq, run) for key, (seq, run) in self.open.items()]
            self.open.clear()
        return taken

    def finish(self, key: Any) -> None:
        """Close ``key``'s open run: nothing will extend it any more."""
        if key in self.open:
            seq, run = self.open.pop(key)
            self.closed.append((key, seq, run))

    def peek_open(self) -> list[tuple[Any, int, Run]]:
        return [(key, seq, run) for key, (seq, run) in self.open.items()]


def runs_of(indexes: np.ndarray) -> Iterable[tuple[int, int]]:
    """Split a sequence of indexes into maximal ascending runs ``(first, stop)``."""
    if len(indexes) == 0:
        return
    breaks = np.flatnonzero(np.diff(indexes) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(indexes)]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(indexes[s]), int(indexes[e - 1]) + 1


class LedgerWriter:
    """Buffers ledger records in memory and writes them in one transaction per flush."""

    def __init__(
        self, path: Path, meta: dict[str, Any], kept_ids: np.ndarray | None = None
    ) -> None:
        self.path = path
        if path.exists():
            raise LedgerError(f"{path}: ledger already exists; give every run a new file")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        meta = {"schema_version": SCHEMA_VERSION, "started_at": time.time(), **meta}
        self._db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
        )
        if kept_ids is not None:  # known before the first tweet: written once, now
            ids = np.ascontiguousarray(kept_ids, dtype="<i8")
            self._db.executemany(
                "INSERT INTO replay_ids VALUES (?, ?)",
                [
                    (a, ids[a : a + _IDS_PER_ROW].tobytes())
                    for a in range(0, len(ids), _IDS_PER_ROW)
                ],
            )
        self._created: list[tuple[int, int, int]] = []
        self._connections: dict[int, dict[str, Any]] = {}
        self._closed_connections: list[int] = []
        self._deliveries = _RunBuffer()
        self._drops = _RunBuffer()
        self._events: list[tuple[float, int | None, str, str | None, str]] = []

    # Recording -------------------------------------------------------------------------

    def created(self, first_slot: int, counts: np.ndarray, first_index: int) -> None:
        nonzero = np.flatnonzero(counts)
        firsts = first_index + np.concatenate(([0], np.cumsum(counts)))[nonzero]
        self._created.extend(
            zip(
                (nonzero + first_slot).tolist(),
                firsts.tolist(),
                counts[nonzero].tolist(),
                strict=True,
            )
        )

    def connection_opened(self, conn_id: int, **fields: Any) -> None:
        self._connections[conn_id] = {"conn_id": conn_id, **fields}

    def connection_closed(self, conn_id: int, **fields: Any) -> None:
        self._connections[conn_id].update(fields)
        self._closed_connections.append(conn_id)
        self._deliveries.finish(conn_id)

    def delivered(self, conn_id: int, first: int, stop: int, status: str) -> None:
        self._deliveries.add(conn_id, first, stop, status)

    def dropped(self, conn_id: int | None, first: int, stop: int, reason: str, stage: str) -> None:
        self._drops.add((conn_id, reason, stage), first, stop)

    def event(
        self, kind: str, name: str | None = None, conn_id: int | None = None, **detail: Any
    ) -> None:
        self._events.append((time.time(), conn_id, kind, name, json.dumps(detail)))

    # Writing ---------------------------------------------------------------------------

    def flush(self, final: bool = False) -> None:
        """Write everything buffered; open runs are written too and rewritten later."""
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO created VALUES (?, ?, ?)", self._created)
        self._created = []
        for conn in self._connections.values():
            db.execute(
                "INSERT OR REPLACE INTO connections VALUES "
                "(:conn_id, :token, :endpoint, :params, :peer, :opened_at, :start_index, "
                ":closed_at, :end_reason, :bytes_written, :bytes_acked)",
                {**dict.fromkeys(_CONNECTION_FIELDS), **conn},
            )
        for conn_id in self._closed_connections:
            self._connections.pop(conn_id, None)
        self._closed_connections = []
        # Open delivery runs are written now and overwritten (same conn_id, seq) as they grow.
        deliveries = self._deliveries.take(everything=False) + self._deliveries.peek_open()
        db.executemany(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?)",
            [(c, seq, r.first, r.stop, r.label) for c, seq, r in deliveries],
        )
        drops = self._drops.take(everything=True)
        db.executemany(
            "INSERT INTO drops VALUES (?, ?, ?, ?, ?)",
            [(c, r.first, r.stop, reason, stage) for (c, reason, stage), _, r in drops],
        )
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", self._events)
        self._events = []
        if final:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('stopped_at', ?)", (json.dumps(time.time()),)
            )
        db.execute("COMMIT")

    def close(self) -> None:
        """Flush everything and mark the ledger as cleanly stopped."""
        self.flush(final=True)
        self._db.close()


_CONNECTION_FIELDS = [
    "conn_id",
    "token",
    "endpoint",
    "params",
    "peer",
    "opened_at",
    "start_index",
    "closed_at",
    "end_reason",
    "bytes_written",
    "bytes_acked",
]


class LedgerReader:
    """Reads a ledger file, checking it is one and saying whether it was stopped cleanly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise LedgerError(f"{path}: no ledger file")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
            self.meta: dict[str, Any] = {k: json.loads(v) for k, v in rows}
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise LedgerError(f"{path}: not a readable ledger ({e})") from None
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LedgerError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}")
        self.t0_ms: int = self.meta["t0_ms"]
        # A cleanly stopped ledger never changes again (a writer refuses an existing file),
        # so its created table is read once; a live one is re-read on every call.
        self._created: np.ndarray | None = None

    @functools.cached_property
    def kept_ids(self) -> np.ndarray | None:
        """A replay's recorded ids by index (None: ids are the slots' Snowflakes); read
        when first asked (a reader built to count events never reads them)."""
        tables = self._rows("SELECT name FROM sqlite_master WHERE name = 'replay_ids'")
        rows = self._rows("SELECT first, ids FROM replay_ids ORDER BY first") if tables else []
        if not rows:
            return None
        ids = np.concatenate([np.frombuffer(blob, dtype="<i8") for _, blob in rows])
        if [first for first, _ in rows] != list(range(0, len(ids), _IDS_PER_ROW)):
            raise LedgerError(f"{self.path}: replay_ids rows do not tile the ids")
        return ids.astype(np.int64)

    @property
    def stopped_cleanly(self) -> bool:
        """False when the server died before writing its final flush."""
        return "stopped_at" in self.meta

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"{self.path}: {e}") from None

    def created_slots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(slot, first, count)`` arrays, by slot. Checks the runs tile 0..total."""
        table = self._created_table()
        return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy()

    def _created_table(self) -> np.ndarray:
        """The created table as (slot, first, count) rows, checked; cached once stopped."""
        if self._created is not None:
            return self._created
        rows = self._rows("SELECT slot, first, count FROM created ORDER BY slot")
        table = np.array(rows, dtype=np.int64).reshape(-1, 3)
        first, count = table[:, 1], table[:, 2]
        if len(first) and (first[0] != 0 or np.any(first[1:] != first[:-1] + count[:-1])):
            raise LedgerError(f"{self.path}: created slots do not form one gap-free sequence")
        if self.stopped_cleanly:
            self._created = table
        return table

    @staticmethod
    def _total(table: np.ndarray) -> int:
        return int(table[-1, 1] + table[-1, 2]) if len(table) else 0

    @property
    def created_total(self) -> int:
        return self._total(self._created_table())

    def ids_of(self, indexes: np.ndarray) -> np.ndarray:
        """Snowflake ids of tweet indexes (all must have been created)."""
        table = self._created_table()
        slot, first = table[:, 0], table[:, 1]
        indexes = np.asarray(indexes, dtype=np.int64)
        if len(indexes) and (indexes.min() < 0 or indexes.max() >= self._total(table)):
            raise LedgerError(f"{self.path}: index outside the created range")
        if self.kept_ids is not None:
            return self.kept_ids[indexes].astype(np.uint64)
        row = np.searchsorted(first, indexes, side="right") - 1
        return snowflake.encode_array(slot[row] + self.t0_ms, indexes - first[row])

    def created_ids(self) -> np.ndarray:
        """Every created tweet's id (uint64, by index): :meth:`ids_of` of all indexes."""
        table = self._created_table()
        if self.kept_ids is not None:
            return self.kept_ids[: self._total(table)].astype(np.uint64)
        table = table[table[:, 2] != 0]  # empty slots hold no index
        slot, first, count = table[:, 0], table[:, 1], table[:, 2]
        if len(count) and (int(count.min()) < 0 or int(count.max()) > snowflake.MAX_PER_MS):
            return self.ids_of(np.arange(self.created_total, dtype=np.int64))
        # Within a slot ids count up by one (the position is the id's low bits), so the ids
        # are a running sum of ones, with a jump to each slot's first id: one array filled
        # and summed in place (uint64 wraps exactly as encode_array does), no search.
        heads = snowflake.encode_array(slot + self.t0_ms, np.zeros(len(slot), dtype=np.int64))
        steps = np.ones(self.created_total, dtype=np.uint64)
        if len(heads):
            lasts = heads[:-1] + (count[:-1] - 1).astype(np.uint64)
            steps[first] = heads - np.concatenate(([np.uint64(0)], lasts))
        return np.cumsum(steps, out=steps)

    def connections(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM connections ORDER BY conn_id")
        return [dict(zip(_CONNECTION_FIELDS, r, strict=True)) for r in rows]

    def deliveries(self, conn_id: int | None = None) -> list[Delivery]:
        """Delivery runs, per connection in the order they were sent."""
        rows = self._rows(
            "SELECT conn_id, seq, first, stop, status FROM deliveries ORDER BY conn_id, seq"
        )
        return [Delivery(*row) for row in rows if conn_id in (None, row[0])]

    def delivered_indexes(self, conn_id: int | None = None, status: str = "acked") -> np.ndarray:
        """Every delivery of every tweet (a multiset: repeats stay), in delivery order."""
        runs = [d for d in self.deliveries(conn_id) if d.status == status]
        if not runs:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(d.first, d.stop, dtype=np.int64) for d in runs])

    def drops(self) -> list[Drop]:
        rows = self._rows("SELECT conn_id, first, stop, reason, stage FROM drops ORDER BY first")
        return [Drop(*row) for row in rows]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows("SELECT at, conn_id, kind, name, detail FROM events ORDER BY at")
        return [
            {"at": at, "conn_id": c, "kind": k, "name": n, **json.loads(d)}
            for at, c, k, n, d in rows
            if kind in (None, k)
        ]
