"""Start a fake stream server as a child process and talk to its control API."""

from __future__ import annotations

import json
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from fake_stream.ledger import LedgerReader
from harness.procs import OwnedProcess

__all__ = ["StreamServerProcess"]


class StreamServerProcess:
    """``python -m fake_stream serve`` in a process group we own.

    :param ledger: the ledger file to create.
    :param args: more ``serve`` options, e.g. ``["--rate", "1000", "--seed", "7"]``.
    :param token: the bearer token to use.
    """

    def __init__(
        self,
        ledger: Path,
        args: Sequence[str] = (),
        token: str = "streamstall",
        startup_timeout: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.token = token
        argv = [
            sys.executable,
            "-m",
            "fake_stream",
            "serve",
            "--token",
            token,
            "--ledger",
            str(ledger),
            *args,
        ]
        self.process = OwnedProcess(argv)
        self.info = self._read_announcement(startup_timeout)
        self.url: str = self.info["url"]
        self.stream_url: str = self.info["stream_url"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self._control = requests.Session()
        self._control.headers.update(self.headers)

    def _read_announcement(self, timeout: float) -> dict[str, Any]:
        stdout = self.process.popen.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            code = self.process.stop()
            raise RuntimeError(f"fake stream did not start (exit code {code}): {self.process.argv}")
        return json.loads(line)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_control/<path>``; raise on an error status; return the JSON answer."""
        response = self._control.request(
            method, f"{self.url}/_control/{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def stop(self) -> int | None:
        """SIGTERM: the server ends its streams, flushes the ledger and exits 0."""
        self._control.close()
        return self.process.stop()

    def ledger_reader(self) -> LedgerReader:
        return LedgerReader(self.ledger)

    def __enter__(self) -> StreamServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
