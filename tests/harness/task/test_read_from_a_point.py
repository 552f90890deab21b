"""The article's ``read_stream(last_processed_id)`` on a strict-X stream: a client that
reads from a point can only be built on X's backfill (common.read_stream), and gets its
repeats; with our ``since_id`` extension named, X's rules refuse it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess
from harness.task.resume import created_ms, position_at
from harness.task.variants.common import TaskContext, read_stream


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamServerProcess]:
    """A strict-X stream at 1,000 tweets/s, X's windows at 1/100 (a minute is 0.6 s)."""
    args = ["--rate", "1000", "--seed", "5", "--strict-x", "--backfill-scale", "0.01"]
    server = StreamServerProcess(tmp_path / "ledger.sqlite", args)
    yield server
    server.stop()


def _ctx(tmp_path: Path, server: StreamServerProcess, resume: str) -> TaskContext:
    params = {
        "stream_url": server.stream_url,
        "token_file": str(server.token_file),
        "run_dir": str(tmp_path),
        "gil_interval": 0,
        "resume": resume,
        "backfill_scale": 0.01,
    }
    return TaskContext("dag", "run", "stream", 1, None, params)


def test_reading_from_a_point_is_a_backfill_that_covers_it(tmp_path, server):
    time.sleep(2)  # history to read back into
    point = position_at(int(time.time() * 1000) - 1000)  # a second ago
    ctx = _ctx(tmp_path, server, "backfill")
    ids = []
    for message in read_stream(ctx, since_id=point):
        ids.append(int(message["data"]["id"]))
        if len(ids) == 1500:
            break
    # 1 s + the margin at 0.6 s a minute: three minutes, 1.8 s back: before the point.
    assert created_ms(ids[0]) < created_ms(point)
    assert ids == sorted(ids)  # oldest first, then live: no gap
    # Read the ledger once the server has stopped (its last flush): a server writing a
    # backlog to a reader that keeps up may not have flushed the connect's event yet.
    server.stop()
    backfill = LedgerReader(server.ledger).events("backfill")
    assert [b["minutes"] for b in backfill] == [3]


def test_since_id_itself_is_refused_by_x_rules(tmp_path, server):
    ctx = _ctx(tmp_path, server, "since_id")
    with pytest.raises(requests.HTTPError) as refused:
        next(read_stream(ctx, since_id=position_at(int(time.time() * 1000))))
    assert refused.value.response.status_code == 400
    assert server.stop() == 0  # the ledger is complete
    assert LedgerReader(server.ledger).connections() == []  # no stream was opened
