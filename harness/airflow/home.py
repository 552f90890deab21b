"""Run DAG variants on a real Airflow: an AIRFLOW_HOME of our own, ``airflow dags test`` and
``airflow tasks run --local``.

``airflow dags test`` (the ``dagtest`` mode) runs one DAG run in one process: no scheduler,
no API server; retries and ``retry_delay`` are honoured in-process. Restarting a task there
means relaunching the command, which is what the harness does after killing it.
``airflow tasks run --local`` (the ``localtask`` mode, Airflow 2.x) runs one try the way a
2.x worker does: a ``LocalTaskJob`` that forks the task process and watches it.

The same code drives Airflow 3.3 and 2.11 (``nox -s repro`` runs both): ``airflow db
migrate`` exists on both (2.7+), and both keep earlier tries in ``task_instance_history``
(2.10+) with the columns read here. :func:`airflow_version` is the installed release.

Every Airflow command runs as an :class:`~harness.procs.OwnedProcess`. Task-instance
history is read from Airflow's own database afterwards, so tests assert what Airflow
recorded, not what we hoped.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.airflow.base import StreamConnection, TaskSpec
from harness.procs import OwnedProcess
from streamstall_probe import RUNS_ENV

__all__ = [
    "AIRFLOW_BIN",
    "DAGS_FOLDER",
    "AirflowHome",
    "airflow_major",
    "airflow_version",
    "migrated_template",
]

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
AIRFLOW_BIN = Path(sys.executable).parent


@functools.cache
def airflow_version() -> str:
    """The installed apache-airflow release, e.g. ``"3.3.2"`` or ``"2.11.2"``."""
    return importlib.metadata.version("apache-airflow")


def airflow_major() -> int:
    """The installed Airflow's major version (3 or 2)."""
    return int(airflow_version().split(".", 1)[0])


def _cache() -> Path:
    """Where migrated databases are kept between runs: ``$STREAMSTALL_CACHE``, else
    ``$XDG_CACHE_HOME/streamstall`` (``~/.cache/streamstall``)."""
    if folder := os.environ.get("STREAMSTALL_CACHE"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamstall"


def migrated_template(scratch: Path) -> Path:
    """A migrated, empty Airflow SQLite database to copy (``airflow db migrate`` takes
    10-30 s). Kept in :func:`_cache` under the installed Airflow's release and providers,
    so a run after the first, or a test session, starts from a copy; made in ``scratch``
    when there is none."""
    packages = sorted(
        f"{d.metadata['Name']}=={d.version}"
        for d in importlib.metadata.distributions()
        if str(d.metadata["Name"]).startswith("apache-airflow")
    )
    key = hashlib.sha256("\n".join(packages).encode()).hexdigest()[:12]
    cached = _cache() / f"airflow-{airflow_version()}-{key}.db"
    if cached.exists():
        return cached
    made = AirflowHome(scratch).database
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        shutil.copyfile(made, partial)
        os.replace(partial, cached)  # whole or not at all, whoever else is making one
    except OSError:
        return made  # a read-only home: this run's own, uncached
    return cached


class AirflowHome:
    """A private AIRFLOW_HOME with a migrated database: SQLite in the folder, or the one
    at ``database_url`` (e.g. PostgreSQL, migrated here).

    :param root: the folder to use (created).
    :param template: an already migrated ``airflow.db`` to copy instead of migrating
        (``airflow db migrate`` takes seconds; tests share one template).
    :param database_url: a SQLAlchemy URL of an empty database to use instead of SQLite.
    """

    def __init__(
        self,
        root: Path,
        template: Path | None = None,
        dags_folder: Path = DAGS_FOLDER,
        database_url: str | None = None,
    ) -> None:
        self.root = root.resolve()  # Airflow refuses a relative SQLite path
        self.dags_folder = dags_folder
        self.database_url = database_url or f"sqlite:///{self.database}"
        self.root.mkdir(parents=True, exist_ok=True)
        if template is not None and database_url is None:
            shutil.copy(template, self.database)
        else:
            self.migrate()
        if database_url is None:
            # Write-ahead logging: readers (the API's, the harness's) never wait for the
            # writer, nor it for them; kept in the file, so every process uses it.
            db = sqlite3.connect(self.database)
            db.execute("PRAGMA journal_mode=WAL")
            db.close()

    @property
    def database(self) -> Path:
        return self.root / "airflow.db"

    @property
    def connections(self) -> Path:
        """Airflow's secrets backend here: a file (``LocalFilesystemBackend``), so the
        stream's token is in no DAG run's conf and not in Airflow's database."""
        return self.root / "connections.json"

    @property
    def runs(self) -> Path:
        """``<dag_id>.json`` per DAG the harness runs: where its run folder is
        (``$STREAMSTALL_RUNS``, read by ``streamstall_probe``)."""
        return self.root / "streamstall-runs"

    def admit(self, spec: TaskSpec, dag_id: str) -> None:
        """Before ``dag_id`` runs for ``spec``: its stream connection and its run folder."""
        if spec.connection is not None:
            self.put_connection(spec.connection)
        self.put_run(dag_id, spec.layout.root, spec.probe_commits)

    def put_connection(self, connection: StreamConnection) -> None:
        """Add or replace a connection in the secrets file (0600, replaced whole)."""
        entries = json.loads(self.connections.read_text()) if self.connections.exists() else {}
        entries[connection.conn_id] = {
            "conn_type": "http", "host": connection.host, "password": connection.password,
        }  # fmt: skip
        _write_private(self.connections, json.dumps(entries, indent=2))

    def put_run(self, dag_id: str, run_dir: Path, commits: bool = True) -> None:
        """Tell ``streamstall_probe`` in ``dag_id``'s tasks where the run folder is, and
        whether to record the commits they report."""
        self.runs.mkdir(exist_ok=True)
        entry = {"run_dir": str(run_dir), "commits": commits}
        _write_private(self.runs / f"{dag_id}.json", json.dumps(entry))

    def env(
        self, overrides: dict[str, Any] | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of every Airflow command we run (plus ``extra`` settings)."""
        env = {
            **os.environ,
            # airflow spawns airflow
            "PATH": f"{AIRFLOW_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
                {"connections_file_path": str(self.connections)}
            ),
            RUNS_ENV: str(self.runs),
            "PYTHONWARNINGS": "ignore",
            **(extra or {}),
        }
        if overrides:
            env["STREAMSTALL_TASK_OVERRIDES"] = json.dumps(overrides)
        return env

    def migrate(self) -> None:
        subprocess.run(
            [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=300,
        )

    def dags_test(
        self,
        dag_id: str,
        conf: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        log: Path | None = None,
    ) -> OwnedProcess:
        """Start ``airflow dags test <dag_id> -c <conf>``; its output goes to ``log``."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            return OwnedProcess(
                [str(AIRFLOW_BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)],
                env=self.env(overrides),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if log is not None:
                out.close()  # the child has its own descriptor

    def tasks_run(
        self,
        dag_id: str,
        run_id: str,
        overrides: dict[str, Any] | None = None,
        log: Path | None = None,
        task_id: str = "stream",
        extra: dict[str, str] | None = None,
    ) -> OwnedProcess:
        """Start ``airflow tasks run <dag_id> <task_id> <run_id> --local`` (Airflow 2.x): a
        ``LocalTaskJob`` forks the task process, as a 2.x worker does; output to ``log``,
        ``extra`` settings in its environment."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        dag_file = self.dags_folder / f"{dag_id}.py"
        argv = [str(AIRFLOW_BIN / "airflow"), "tasks", "run", dag_id, task_id, run_id, "--local"]
        if dag_file.exists():  # parse that file only, not the whole folder
            argv += ["-S", str(dag_file)]
        try:
            return OwnedProcess(
                argv, env=self.env(overrides, extra), stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            if log is not None:
                out.close()

    def task_state(self, dag_id: str, run_id: str, task_id: str = "stream") -> str | None:
        """The state Airflow holds now for the task of one run (None: no such record)."""
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute(
                "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                (dag_id, run_id, task_id),
            ).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def task_instances(self, dag_id: str) -> list[dict[str, Any]]:
        """Every try Airflow recorded for ``dag_id``: earlier tries from
        ``task_instance_history``, the latest from ``task_instance``."""
        columns = "dag_id, run_id, task_id, try_number, state, start_date, end_date, hostname, pid"
        rows = []
        if self.database_url.startswith("sqlite:"):
            db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
            db.row_factory = sqlite3.Row
            for table in ("task_instance_history", "task_instance"):
                query = f"SELECT {columns} FROM {table} WHERE dag_id = ?"
                rows += [dict(r) for r in db.execute(query, (dag_id,))]
            db.close()
        else:
            import sqlalchemy  # Airflow's own; only a server database needs it here

            engine = sqlalchemy.create_engine(self.database_url)
            with engine.connect() as db:
                for table in ("task_instance_history", "task_instance"):
                    query = sqlalchemy.text(f"SELECT {columns} FROM {table} WHERE dag_id = :d")
                    rows += [
                        {k: _plain(v) for k, v in r._mapping.items()}
                        for r in db.execute(query, {"d": dag_id})
                    ]
            engine.dispose()
        return sorted(rows, key=lambda r: (r["run_id"], r["try_number"]))


def _plain(value: Any) -> Any:
    """A column value as SQLite gives it: dates as ISO text (UTC)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only, replacing ``path`` whole (a reader sees
    the old file or the new one)."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(text)
    os.replace(partial, path)
