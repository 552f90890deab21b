"""The run's records in PostgreSQL, for tries on workers that do not share the harness's
disk (the ``external`` mode): the same sink, events and stop request as the run folder,
as tables in one schema per run.

A store is named by a ``postgresql://`` URL whose ``options`` set the ``search_path`` to
the run's schema (:func:`store_url`). :class:`PostgresSink` keeps :class:`~harness.task.
probe.Sink`'s contract: a batch of tweets, their packed ids and an optional checkpoint
commit in one transaction. Every write (events too) first takes one transaction-level
advisory lock, as SQLite's ``BEGIN IMMEDIATE`` makes writers take turns: so ids are
handed out in commit order, and a reader copying "everything after the last id it saw"
(``harness/airflow/store_mirror.py``) never skips a row committed late.
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from harness.task.probe import Sink

if TYPE_CHECKING:  # imported when a store is opened: a folder run needs no driver
    import psycopg

__all__ = [
    "STORE_SCHEMA",
    "PostgresEvents",
    "PostgresSink",
    "database_url",
    "store_url",
]

#: The sink's tables as in ``streamstall_probe.SINK_SCHEMA``, with a ``seq`` on tweets, plus
#: the probe's events and the operator's stop request.
STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS tweets(
    seq BIGSERIAL PRIMARY KEY, tweet_id BIGINT NOT NULL, result DOUBLE PRECISION,
    processed_at DOUBLE PRECISION NOT NULL, pid INTEGER NOT NULL, try_number INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tweets_by_id ON tweets(tweet_id);
CREATE TABLE IF NOT EXISTS commits(
    commit_id BIGSERIAL PRIMARY KEY, committed_at DOUBLE PRECISION NOT NULL,
    pid INTEGER NOT NULL, try_number INTEGER NOT NULL, count INTEGER NOT NULL,
    tweet_ids BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(
    name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS events(
    event_id BIGSERIAL PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stop_request(requested_at DOUBLE PRECISION NOT NULL);
"""

#: The advisory lock every writer takes (any constant: the schema is the run's own).
WRITE_LOCK = 0x57AE57A1


def database_url(
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    database: str | None,
) -> str:
    """A ``postgresql://`` URL from a connection's fields (Airflow's, or a user's)."""
    user = quote(login or "", safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{user}@{host}:{port or 5432}/{quote(database or '', safe='')}"


def store_url(url: str, schema: str) -> str:
    """Database ``url`` with its ``search_path`` set to ``schema``: the run's store."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=30)


@contextmanager
def write_transaction(db: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction holding the writers' lock (see the module's docstring)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        yield


class PostgresSink(Sink):
    """:class:`~harness.task.probe.Sink` on a PostgreSQL store: the same commits (inherited),
    on this database's statements and transaction."""

    def __init__(self, url: str, pid: int, try_number: int) -> None:
        self._db = connect(url)  # type: ignore[assignment]
        self._pid = pid
        self._try = try_number

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with write_transaction(self._db):  # type: ignore[arg-type]
            yield

    def checkpoint_or_start(self, name: str, start: Any) -> Any:
        with self._transaction():
            self._db.execute(
                "INSERT INTO checkpoints VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (name, json.dumps(start), time.time()),
            )
            return self.checkpoint(name)

    def _write(self, rows: list[tuple[int, float | None]]) -> None:
        now = time.time()
        ids = array("q", [row[0] for row in rows])
        with self._db.cursor() as cursor:
            if rows:
                cursor.executemany(
                    "INSERT INTO tweets(tweet_id, result, processed_at, pid, try_number) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(tweet_id, result, now, self._pid, self._try) for tweet_id, result in rows],
                )
            cursor.execute(
                "INSERT INTO commits(committed_at, pid, try_number, count, tweet_ids) "
                "VALUES (%s, %s, %s, %s, %s)",
                (now, self._pid, self._try, len(ids), ids.tobytes()),
            )

    def _set_checkpoint(self, name: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO checkpoints VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            (name, json.dumps(value), time.time()),
        )

    def checkpoint(self, name: str) -> Any:
        query = "SELECT value FROM checkpoints WHERE name = %s"
        row = self._db.execute(query, (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def already_committed(self, tweet_ids: Iterable[int]) -> set[int]:
        query = "SELECT DISTINCT tweet_id FROM tweets WHERE tweet_id = ANY(%s)"
        return {row[0] for row in self._db.execute(query, (list(tweet_ids),))}


class PostgresEvents:
    """The probe's event lines of one process, and the run's stop request, in a store."""

    def __init__(self, url: str, host: str, pid: int) -> None:
        self._db = connect(url)
        self._host = host
        self._pid = pid
        self._lock = threading.Lock()  # the samplers write from their own threads

    def write(self, line: str) -> None:
        """Append one event line (committed whole, or not at all if the process dies)."""
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "INSERT INTO events(host, pid, line) VALUES (%s, %s, %s)",
                (self._host, self._pid, line),
            )

    def stop_requested(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM stop_request LIMIT 1").fetchone() is not None
