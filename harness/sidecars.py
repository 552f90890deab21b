"""What some variants need running beside Airflow for a scenario: a Redis broker and the
ingester that fills it from the stream (``queue_decoupled``). Started before the task,
stopped after it, each an :class:`~harness.procs.OwnedProcess`; their logs go to the run
folder (``redis/``, ``ingester.log``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.redis_server import RedisServer
from harness.stream_server import StreamServerProcess

__all__ = ["queue_for"]


@contextmanager
def queue_for(layout: RunLayout, server: StreamServerProcess) -> Iterator[dict[str, Any]]:
    """A Redis broker fed by the ingester from ``server``; yields the conf the task needs."""
    broker = RedisServer(layout.root / "redis")
    try:
        with open(layout.root / "ingester.log", "ab") as log:
            ingester = OwnedProcess(
                [
                    sys.executable, "-m", "harness.ingester", "--stream-url", server.stream_url,
                    "--token", server.token, "--redis-url", broker.url,
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield {"redis_url": broker.url}
        finally:
            ingester.stop()
    finally:
        broker.stop()
