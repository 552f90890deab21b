"""The probe: what an instrumented task calls to record what it did, durably and cheaply.

Two records, both surviving a SIGKILL at any instant:

- **The sink** (``sink.sqlite``): the pipeline's output. :meth:`Sink.commit` writes a
  batch of processed tweets *and* the probe's compact copy of their ids (one ``commits``
  row with a packed int64 array) in one SQLite transaction, optionally with a checkpoint.
  A tweet counts as processed once that transaction commits; a killed task loses exactly
  its uncommitted batch. How often to commit is the caller's choice (and part of what
  experiments measure).
- **Events** (``probe/<host>-<pid>.jsonl``): Jepsen-style operations, one JSON line each,
  appended with a single ``write`` (the kernel finishes a write to a regular file even if
  the process is killed right after): the task's start (``invoke``) and how it ended
  (``ok``: returned, ``fail``: raised, with the exception type), checkpoints, signals,
  marks, RSS and GIL samples. A start with no end means the process was killed (the checker
  records it as ``info``, Jepsen's unknown outcome).

On workers that do not share the harness's disk, ``run_dir`` is a ``postgresql://`` store
instead of a folder (:mod:`harness.task.postgres_store`): the same records, as tables.

Usage in a task::

    probe = Probe(run_dir, dag_id="naive_loop", run_id=run_id, task_id="stream", try_number=1)
    probe.started(logical_date=str(logical_date), resumed_from=None)
    with probe.sink() as sink:
        sink.commit([(tweet_id, score), ...])
    probe.exited("returned")
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.layout import RunLayout
from streamstall_probe import SINK_SCHEMA, WORKER_ENV

if TYPE_CHECKING:
    from harness.task.postgres_store import PostgresEvents

__all__ = ["SINK_SCHEMA", "Probe", "Sink", "create_sink", "is_store_url"]


def create_sink(path: Path) -> None:
    """Create an empty sink. Whoever starts a run does, so that a run in which nothing
    was ever committed still has a sink to say so (a missing one is an error)."""
    Sink(path, pid=0, try_number=0).close()


class Sink:
    """One connection to the run's sink database (open one per process or thread)."""

    def __init__(self, path: Path, pid: int, try_number: int) -> None:
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process, not a power cut
        self._db.executescript(SINK_SCHEMA)
        self._pid = pid
        self._try = try_number

    def commit(
        self, rows: Iterable[tuple[int, float | None]], checkpoint: tuple[str, Any] | None = None
    ) -> int:
        """Commit processed tweets ``(tweet_id, result)`` and, atomically with them, an
        optional checkpoint ``(name, json value)``. Returns how many tweets were written."""
        rows = list(rows)
        with self._transaction():
            self._write(rows)
            if checkpoint is not None:
                self._set_checkpoint(*checkpoint)
        return len(rows)

    def commit_new(
        self,
        rows: Iterable[tuple[int, float | None]],
        checkpoint: tuple[str, int] | None = None,
    ) -> tuple[int, int | None]:
        """The idempotent commit: write the tweets of ``rows`` the sink does not hold yet
        and advance checkpoint ``(name, position)`` to ``max(stored, position)``, in one
        transaction.

        The check and the write share the transaction (``BEGIN IMMEDIATE``: one writer at a
        time), so writers committing the same tweets in any interleaving write each once,
        and an older writer cannot move the checkpoint back. Returns how many tweets were
        written and the checkpoint now stored (``None`` without one)."""
        fresh: dict[int, float | None] = {}
        rows = list(rows)
        stored = None
        with self._transaction():
            seen = self.already_committed(tweet_id for tweet_id, _ in rows)
            for tweet_id, result in rows:
                if tweet_id not in seen:
                    fresh.setdefault(tweet_id, result)
            if rows:
                self._write(list(fresh.items()))
            if checkpoint is not None:
                name, position = checkpoint
                stored = self.checkpoint(name)
                if stored is None or position > stored:
                    self._set_checkpoint(name, position)
                    stored = position
        return len(fresh), stored

    def checkpoint_or_start(self, name: str, start: Any) -> Any:
        """Checkpoint ``name``, set to ``start`` first if it was never written (one
        transaction: of two first writers, one sets it and both read it)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?)",
                (name, json.dumps(start), time.time()),
            )
            return self.checkpoint(name)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _write(self, rows: list[tuple[int, float | None]]) -> None:
        now = time.time()
        pid, try_number = self._pid, self._try
        ids = array("q", [row[0] for row in rows])
        self._db.executemany(
            "INSERT INTO tweets VALUES (?, ?, ?, ?, ?)",
            [(tweet_id, result, now, pid, try_number) for tweet_id, result in rows],
        )
        self._db.execute(
            "INSERT INTO commits(committed_at, pid, try_number, count, tweet_ids) "
            "VALUES (?, ?, ?, ?, ?)",
            (now, pid, try_number, len(ids), ids.tobytes()),
        )

    def _set_checkpoint(self, name: str, value: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
            (name, json.dumps(value), time.time()),
        )

    def checkpoint(self, name: str) -> Any:
        """The last committed value of checkpoint ``name`` (``None`` if never written)."""
        row = self._db.execute("SELECT value FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def already_committed(self, tweet_ids: Iterable[int]) -> set[int]:
        """Which of ``tweet_ids`` the sink holds now. Outside a transaction another writer
        can commit them right after: idempotent writers use :meth:`commit_new`."""
        ids = list(tweet_ids)
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT DISTINCT tweet_id FROM tweets WHERE tweet_id IN ({marks})"
            found.update(r[0] for r in self._db.execute(sql, chunk))
        return found

    def close(self) -> None:
        self._db.close()


def is_store_url(run_dir: str) -> bool:
    """Whether a probe's ``run_dir`` names a PostgreSQL store rather than a folder."""
    return run_dir.startswith(("postgresql://", "postgres://"))


class Probe:
    """Records one task process's lifecycle; hands out :class:`Sink` connections.

    :param run_dir: the run folder (see :mod:`harness.layout`), or a PostgreSQL store's URL.
    :param try_number: Airflow's try number (1 for the first try).
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int,
    ) -> None:
        self.run_dir = str(run_dir)
        self.layout = RunLayout(Path(run_dir))
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.try_number = try_number
        self.context = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id}
        self._events: PostgresEvents | None = None
        if is_store_url(self.run_dir):
            from harness.task.postgres_store import PostgresEvents

            self._events = PostgresEvents(self.run_dir, self.host, self.pid)
        else:
            self.layout.probe_dir.mkdir(parents=True, exist_ok=True)
            path = self.layout.probe_dir / f"{self.host}-{self.pid}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sampler: threading.Thread | None = None
        #: A task start is recorded and its end is not yet.
        self.in_try = False

    # Events -----------------------------------------------------------------------------

    def _op(self, type_: str, f: str, value: dict[str, Any]) -> None:
        record = {"time": time.time(), "pid": self.pid, "try": self.try_number, "type": type_}
        line = json.dumps({**record, "f": f, "value": value}, default=str) + "\n"
        if self._events is not None:
            self._events.write(line)
        else:
            os.write(self._fd, line.encode())  # one write: whole line or nothing

    def stop_requested(self) -> bool:
        """Whether the run's stop request is there (the operator ends the run)."""
        if self._events is not None:
            return self._events.stop_requested()
        return self.layout.stop_request.exists()

    def started(self, *, logical_date: Any = None, resumed_from: Any = None, **detail: Any) -> None:
        """The task began: what it saw of its context and where it resumes from."""
        self.in_try = True
        self._op(
            "invoke",
            "task",
            {
                **self.context,
                "host": self.host,
                "worker": os.environ.get(WORKER_ENV),
                "store": "folder" if self._events is None else "postgresql",
                "logical_date": logical_date,
                "resumed_from": resumed_from,
                **detail,
            },
        )

    def exited(self, how: str, error: BaseException | None = None) -> None:
        """The task is ending: ``returned`` (ok) or ``raised`` (fail, with the type)."""
        self.in_try = False
        if error is None and how == "returned":
            self._op("ok", "task", {"how": how})
        else:
            kind = None if error is None else type(error).__name__
            self._op("fail", "task", {"how": how, "error": kind, "message": str(error or "")})

    def checkpoint(self, value: Any, **detail: Any) -> None:
        """A checkpoint was written (outside the sink: e.g. a state file)."""
        self._op("info", "checkpoint", {"value": value, **detail})

    def signal(self, signum: int) -> None:
        self._op("info", "signal", {"signal": signal.Signals(signum).name})

    def mark(self, name: str, **detail: Any) -> None:
        """Anything a variant wants in the history, e.g. ``mark("reconnect", since_id=...)``."""
        self._op("info", "mark", {"name": name, **detail})

    def sample_rss(self, interval: float = 1.0) -> None:
        """Record this process's resident memory every ``interval`` seconds (daemon thread)."""

        def sample() -> None:
            page = os.sysconf("SC_PAGE_SIZE")
            while True:
                with open(f"/proc/{self.pid}/statm") as f:
                    rss = int(f.read().split()[1]) * page
                self._op("info", "rss", {"bytes": rss})
                time.sleep(interval)

        self._sampler = threading.Thread(target=sample, name="probe-rss", daemon=True)
        self._sampler.start()

    def sample_gil(self, interval: float = 1.0, role: str = "task") -> None:
        """Record this process's GIL contention, CPU, threads and stream-reader lag every
        ``interval`` seconds (``info gil`` ops; :mod:`harness.task.gil`). One sampler per
        process: a later call in the same process (another probe) does nothing.

        :param role: ``task`` (the task process) or ``worker`` (a process it started).
        """
        from harness.task.gil import start_sampler

        detail = {"role": role, "try": self.try_number, "interval_s": interval}
        start_sampler(lambda value: self._op("info", "gil", value), interval, **detail)

    # The sink ---------------------------------------------------------------------------

    @contextmanager
    def sink(self) -> Iterator[Sink]:
        sink = self.open_sink()
        try:
            yield sink
        finally:
            sink.close()

    def open_sink(self) -> Sink:
        """A sink connection the caller closes (for long-lived loops and worker processes)."""
        if self._events is not None:
            from harness.task.postgres_store import PostgresSink

            return PostgresSink(self.run_dir, self.pid, self.try_number)
        return Sink(self.layout.sink, self.pid, self.try_number)
