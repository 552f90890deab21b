"""Shared fixtures: real fake-stream servers in process groups we own, on free ports."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.run.services import StreamServerProcess

StartServer = Callable[..., StreamServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start fake stream servers (``start_server("--rate", "500", ...)``); all are stopped
    (SIGTERM, ledger flushed) at the end of the test. Each gets its own ledger file."""
    servers: list[StreamServerProcess] = []
    names = itertools.count()  # not len(servers): tests may start servers from threads

    def start(*args: str, token: str = "test-token") -> StreamServerProcess:
        ledger = tmp_path / f"ledger-{next(names)}.sqlite"
        server = StreamServerProcess(ledger, args, token=token)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> StreamServerProcess:
    """One server at 1,000 tweets/s, seed 1."""
    return start_server("--rate", "1000", "--seed", "1")
