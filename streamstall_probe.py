"""Two calls that tell streamstall what your own streaming task did; nothing otherwise.

Add them to your task and leave them in production code::

    from streamstall_probe import committed, started

    started()                 # optional: the try began (a fault can then find it at once)
    ...
    db.commit()               # your own commit of a batch of tweets
    committed(tweet_ids)      # right after it succeeded

Under the harness (``python -m harness run``) they record, in the run folder the harness
made for this DAG, the try's start and each batch's tweet ids, which the checker compares
with what the fake stream created. Anywhere else (no ``STREAMSTALL_RUNS`` in the
environment, not inside an Airflow task, or a DAG the harness is not running) they return
at once and do nothing.

This file needs the standard library only (plus Airflow, already there in a task), so it
can be copied into a deployment that does not install streamstall. ``redirect_x_api``
(for clients that hard-code X's host, like tweepy) needs ``requests``, which they bring.

How it finds the run: the harness sets ``STREAMSTALL_RUNS`` (a folder) in Airflow's
environment and writes ``<that folder>/<dag_id>.json`` (``{"run_dir": ..., "commits":
true}``) before it triggers the DAG; the DAG id comes from Airflow's context of the running
task. Nothing travels in ``dag_run.conf``. A batch is recorded in one SQLite transaction
after yours: a SIGKILL in the microseconds between the two counts that batch as lost.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RUNS_ENV", "SINK_SCHEMA", "WORKER_ENV", "committed", "redirect_x_api", "started"]

#: The environment variable naming the folder of the harness's run files.
RUNS_ENV = "STREAMSTALL_RUNS"

#: The environment variable naming the worker a try runs on (the ``celery`` mode sets it
#: on each Celery worker; recorded with the try's start as ``worker``).
WORKER_ENV = "STREAMSTALL_WORKER"

#: The run's sink: the checker reads ``commits`` (one row per batch, the ids packed as
#: int64) and checks ``tweets`` holds as many rows. ``harness/task/probe.py`` writes it too.
SINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS tweets(
    tweet_id INTEGER NOT NULL, result REAL, processed_at REAL NOT NULL,
    pid INTEGER NOT NULL, try_number INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tweets_by_id ON tweets(tweet_id);
CREATE TABLE IF NOT EXISTS commits(
    commit_id INTEGER PRIMARY KEY, committed_at REAL NOT NULL, pid INTEGER NOT NULL,
    try_number INTEGER NOT NULL, count INTEGER NOT NULL, tweet_ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(
    name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""

#: X's API hosts, which tweepy hard-codes.
X_HOSTS = ("https://api.twitter.com", "https://api.x.com")


def started() -> None:
    """Record that this try began (once per process; :func:`committed` does it too)."""
    run = _run()
    if run is not None:
        run.start()


def committed(tweet_ids: Iterable[int | str]) -> None:
    """Record a batch of tweets your task has just committed to its own store."""
    run = _run()
    if run is not None:
        run.start()
        if run.commits:  # not when the harness reads your own sink instead (sink_query)
            run.commit([int(i) for i in tweet_ids])


def redirect_x_api(session: Any, base_url: str | None) -> Any:
    """Send a ``requests.Session``'s calls to X's hosts to ``base_url`` instead (e.g. your
    ``x_stream`` connection's host); nothing changes when ``base_url`` is empty or one of
    X's own hosts. Returns the session. For tweepy: ``redirect_x_api(client.session,
    conn.host)``."""
    if not base_url or base_url.rstrip("/") in X_HOSTS:
        return session
    from requests.adapters import HTTPAdapter

    target = base_url.rstrip("/")

    class _ToBaseUrl(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            url = request.url or ""
            host = next(h for h in X_HOSTS if url.startswith(h + "/"))
            request.url = target + url[len(host) :]
            kwargs["proxies"] = {}  # proxies chosen for X's host do not apply here
            return super().send(request, **kwargs)

    adapter = _ToBaseUrl()
    for host in X_HOSTS:
        session.mount(host + "/", adapter)
    return session


# Internals ------------------------------------------------------------------------------


class _Run:
    """This process's view of the harness's run: its probe file and sink connection."""

    def __init__(self, run_dir: Path, ti: Any, commits: bool = True) -> None:
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.try_number = int(ti.try_number)
        self.context = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}
        self.run_dir = run_dir
        self.commits = commits
        self._lock = threading.Lock()
        self._started = False
        self._db: sqlite3.Connection | None = None

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            value = {**self.context, "host": self.host, "worker": os.environ.get(WORKER_ENV),
                     "logical_date": None, "resumed_from": None,
                     "probe": "streamstall_probe"}  # fmt: skip
            record = {"time": time.time(), "pid": self.pid, "try": self.try_number,
                      "type": "invoke", "f": "task", "value": value}  # fmt: skip
            folder = self.run_dir / "probe"
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                folder / f"{self.host}-{self.pid}.jsonl",
                os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                0o644,
            )
            try:
                os.write(fd, (json.dumps(record) + "\n").encode())  # one write: all or nothing
            finally:
                os.close(fd)

    def commit(self, ids: list[int]) -> None:
        now = time.time()
        with self._lock:
            db = self._sink()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO tweets VALUES (?, NULL, ?, ?, ?)",
                    [(i, now, self.pid, self.try_number) for i in ids],
                )
                db.execute(
                    "INSERT INTO commits(committed_at, pid, try_number, count, tweet_ids) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (now, self.pid, self.try_number, len(ids), array("q", ids).tobytes()),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _sink(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(
                self.run_dir / "sink.sqlite", timeout=60, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process
            db.executescript(SINK_SCHEMA)
            self._db = db
        return self._db


_runs: dict[int, _Run | None] = {}  # pid -> this process's run (None: not under the harness)
_runs_lock = threading.Lock()


def _run() -> _Run | None:
    pid = os.getpid()  # a forked child is a process of its own
    with _runs_lock:
        if pid not in _runs:
            _runs[pid] = _find_run()
        return _runs[pid]


def _find_run() -> _Run | None:
    folder = os.environ.get(RUNS_ENV)
    if not folder:
        return None
    ti = _task_instance()
    if ti is None:
        return None
    try:
        entry = json.loads((Path(folder) / f"{ti.dag_id}.json").read_text())
    except FileNotFoundError:
        return None  # a DAG of this Airflow that the harness is not running
    return _Run(Path(entry["run_dir"]), ti, bool(entry.get("commits", True)))


def _task_instance() -> Any:
    """The running task instance from Airflow's context (None outside a task)."""
    try:
        from airflow.sdk import get_current_context  # Airflow 3
    except ImportError:
        try:
            from airflow.operators.python import get_current_context  # Airflow 2
        except ImportError:
            return None
    try:
        return get_current_context()["ti"]
    except Exception:  # no context: not inside a task
        return None
