"""A PostgreSQL server of our own, for an Airflow that needs one (the ``celery`` mode of
issue 19 is its first user): ``initdb`` into a folder, TCP on 127.0.0.1 only (no unix
socket), one process we own and stop by pid.

PostgreSQL refuses to run as root. As root the server runs as Debian's ``postgres`` user,
still our child (``Popen(user=...)``; ``runuser`` would stand between us and the server and
SIGKILL it 2 s after a SIGTERM). It is stopped with SIGINT, its fast shutdown: a SIGTERM
waits for every client to leave. Its folder is given back to us when it stops, so a results
folder stays ours to copy and delete. Measured here: ``initdb``, start and a first
connection in 0.6-1.0 s; ``CREATE DATABASE ... TEMPLATE`` copies a migrated Airflow database
in 0.15 s (``airflow db migrate``: 8-10 s).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

from harness.procs import OwnedProcess, free_port

__all__ = ["PostgresError", "PostgresServer", "bin_dir"]

STARTUP_TIMEOUT = 30.0  # seconds
#: Where Debian's packages put the server (``postgresql-<major>``).
BIN_GLOB = "/usr/lib/postgresql/*/bin"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The server could not be set up or started (the message says why)."""


def bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (None: not installed)."""
    found = [Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "postgres").exists()]
    return max(found, key=lambda p: int(p.parent.name), default=None) if found else None


class PostgresServer:
    """A server with its data in ``root/pgdata`` and superuser ``airflow`` (no password:
    ``trust``, on loopback only), listening on a free port."""

    def __init__(self, root: Path) -> None:
        binaries = bin_dir()
        if binaries is None:
            raise PostgresError(
                f"no PostgreSQL server in {BIN_GLOB} (apt-get install postgresql; .ci/run does)"
            )
        self.bin = binaries
        self.root = root.resolve()
        self.data = self.root / "pgdata"
        self.user = "airflow"
        self.port = free_port()
        self._as = "postgres" if os.geteuid() == 0 else None  # it refuses root
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        self.data.mkdir(mode=0o700)
        self._give(self.data, self._as)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")  # fmt: skip
        self.process: OwnedProcess | None = None
        self.start()

    def start(self) -> None:
        """Start the server (again, after :meth:`halt`: same port, same data)."""
        with open(self.root / "postgres.log", "ab") as log:
            self.process = OwnedProcess(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 # A test database: durability is not what is measured here.
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdout=log, stderr=log, user=self._as,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with ``psql``; its output (unaligned, no headers)."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", statement],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"psql: {statement!r:.80}: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> None:
        """``CREATE DATABASE name`` (a copy of ``template``, e.g. a migrated one)."""
        for given in (name, template):
            if given is not None and not _NAME.match(given):
                raise PostgresError(f"not a database name we make: {given!r}")
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))

    def halt(self) -> int | None:
        """Fast shutdown (SIGINT: clients are disconnected), SIGKILL after 10 s."""
        if self.process is None:
            return None
        return self.process.stop(grace=10.0, first=signal.SIGINT)

    def stop(self) -> int | None:
        """:meth:`halt`, and the folder is ours again."""
        code = self.halt() if hasattr(self, "process") else None
        if self._as is not None and self.data.exists():
            self._give(self.data, None)
        return code

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / tool), *args], capture_output=True, text=True, timeout=120,
            check=False, **({"user": self._as, "group": self._as, "extra_groups": []}
                            if self._as else {}),
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"{tool} failed (exit {done.returncode}): {done.stderr.strip()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process is None or not self.process.alive():
                raise PostgresError(f"postgres exited; see {self.root / 'postgres.log'}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False, timeout=10,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres not ready after {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _check_reachable(self) -> None:
        """The server's user can walk down to its folder (a 0700 parent, e.g. pytest's
        temporary folders, stops it with a bare "permission denied")."""
        if self._as is None:
            return
        for folder in [self.root, *self.root.parents]:
            if not folder.stat().st_mode & 0o001:
                raise PostgresError(
                    f"{folder}: user {self._as} cannot enter it (mode "
                    f"{folder.stat().st_mode & 0o777:o}); put the server's folder elsewhere"
                )

    @staticmethod
    def _give(path: Path, user: str | None) -> None:
        """Make ``path`` (and all in it) ``user``'s (None: ours)."""
        if user is None:
            uid, gid = os.getuid(), os.getgid()
        else:
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
        os.chown(path, uid, gid)
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
