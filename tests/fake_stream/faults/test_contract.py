"""The fault contract, checked for every registered fault type on a live server.

For each type in ``fake_stream.faults.registered()`` (a new type fails here until it gets an
attribute set in :data:`CASES`) a fresh server starts with the fault set at start-up; a
``requests`` client reads the stream, reconnecting whenever the fault ends a connection,
until the server is stopped with SIGTERM and the stream ends. Then, from the ledger:

- every tweet ever created is either dropped with no consumer or falls in exactly one
  connection's range (``start_index`` up to where the connection stopped taking tweets);
- on each connection every index of that range is accounted for exactly once per time it
  was written: acked, unknown, or dropped (a duplicated tweet twice, no other repeats);
- the ids the client parsed on each connection are exactly its acked deliveries, in wire
  order; only after a TCP reset may it have parsed some more, all recorded ``unknown``;
- the fault logged at least one effect under its name.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from fake_stream.faults import registered
from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess


@dataclass(frozen=True)
class Case:
    """How to run one fault type: its attributes and schedule, the stream rate, and how
    long to read before the SIGTERM (seconds after the server announced itself).

    With ``window`` the fault is added at run time instead of at start-up, active from
    ``window[0]`` seconds after start-up for ``window[1]`` seconds: start-up schedules
    count from before the server can accept connections (see test_api.py).
    """

    attributes: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    window: tuple[float, float] | None = None
    rate: int = 300
    stop_after: float = 1.0


#: One "interesting" definition per registered fault type: each acts several times, or
#: ends connections so the client has to reconnect, within the run.
CASES: dict[str, Case] = {
    "latency": Case({"latency": 0.05, "jitter": 0.04}),
    # 64 KB/s against ~190 KB/s of tweets: the connection falls behind, and at SIGTERM its
    # writer is cut off mid-write (a reset) after the settle timeout.
    "bandwidth": Case({"rate": 64}),
    "slicer": Case({"average_size": 200, "size_variation": 150, "delay": 0.0005}),
    "limit_data": Case({"bytes": 30_000}),  # ~45 tweets per connection, then FIN
    "timeout": Case({"close_after": 0.3}, window=(0.3, 0.6), stop_after=1.4),
    "reset_peer": Case({"after": 0.25}),
    "slow_close": Case({"delay": 0.3}),
    "down": Case({"close_connections": True}, window=(0.3, 0.4), stop_after=1.2),
    "http_error": Case({"status": 503}, window=(0.0, 0.4), stop_after=1.0),
    "disconnect": Case({}, {"every_messages": 60}),
    "malformed": Case({"mode": "truncate"}, {"every_messages": 20}),
    "duplicate": Case({}, {"every_messages": 15}),
    # Reorder only acts inside one write (see test_api.py): 2,000/s gives writes of ~10.
    "reorder": Case({"window": 3}, {"every_messages": 10}, rate=2000),
}


@dataclass
class ClientConnection:
    """One stream connection as the client saw it."""

    ids: list[int] = field(default_factory=list)
    invalid: list[bytes] = field(default_factory=list)  # lines that are not tweets
    error: BaseException | None = None  # None: the chunked body ended properly


def consume(server: StreamServerProcess, stopping: threading.Event) -> list[ClientConnection]:
    """Read the stream, reconnecting after every end, until an end after ``stopping``."""
    connections: list[ClientConnection] = []
    while not stopping.is_set():
        try:
            response = requests.get(
                server.stream_url, headers=server.headers, stream=True, timeout=5
            )
        except requests.ConnectionError:
            time.sleep(0.05)  # refused: the listener is down
            continue
        with response:
            if response.status_code != 200:  # the fault's 503, or 429 while we settle
                time.sleep(0.05)
                continue
            conn = ClientConnection()
            connections.append(conn)
            try:
                for line in response.iter_lines():
                    if not line:
                        continue
                    try:
                        conn.ids.append(int(json.loads(line)["data"]["id"]))
                    except (ValueError, KeyError, TypeError):
                        conn.invalid.append(line)
            except requests.RequestException as e:
                conn.error = e
    return connections


def index_multiset(reader: LedgerReader, conn_id: int) -> Counter[int]:
    """Every tweet index the ledger accounts for on one connection, with multiplicity."""
    counts: Counter[int] = Counter()
    for status in ("acked", "unknown"):
        counts.update(reader.delivered_indexes(conn_id, status).tolist())
    for drop in reader.drops():
        if drop.conn_id == conn_id:
            counts.update(range(drop.first, drop.stop))
    return counts


def test_every_case_is_a_registered_type() -> None:
    """No stale entries: every case names a fault type the server knows."""
    assert set(CASES) <= set(registered())


@pytest.mark.parametrize("kind", sorted(registered()))
def test_fault_keeps_the_contract(kind: str, tmp_path: Path) -> None:
    """See the module docstring: the ledger accounts for every tweet exactly, and agrees
    with what the client parsed on every connection, with this fault active."""
    if kind not in CASES:
        pytest.fail(f"fault type {kind!r} has no attribute set in test_contract.CASES")
    case = CASES[kind]
    fault: dict[str, Any] = {"type": kind, "name": f"{kind}-1", "attributes": case.attributes}
    if case.schedule:
        fault["schedule"] = case.schedule
    at_start = [] if case.window else ["--fault", json.dumps(fault)]
    server = StreamServerProcess(
        tmp_path / "ledger.sqlite",
        [
            *("--rate", str(case.rate), "--seed", "3", "--connect-limit", "0"),
            *("--settle-timeout", "0.5", *at_start),
        ],
        token="contract",
    )
    if case.window:
        now = server.control("GET", "stats")["stream_time"]
        at, duration = case.window
        server.control(
            "POST", "faults", {**fault, "schedule": {"at": now + at, "duration": duration}}
        )
    stopping = threading.Event()

    def sigterm() -> None:
        stopping.set()
        server.process.signal(signal.SIGTERM)

    timer = threading.Timer(case.stop_after, sigterm)
    timer.start()
    try:
        connections = consume(server, stopping)
        # Our SIGTERM stops it; server.stop() would signal again, and a second SIGTERM
        # after its event loop is gone kills it by default (exit -15) while it exits.
        code = server.process.popen.wait(timeout=15)
    finally:
        timer.cancel()
        server.stop()
    assert code == 0
    reader = server.ledger_reader()
    assert reader.stopped_cleanly
    rows = reader.connections()
    assert len(rows) == len(connections) >= 1

    # Every created tweet: no consumer, or in exactly one connection's range.
    total = reader.created_total
    covered = np.zeros(total, dtype=np.int64)
    for drop in reader.drops():
        if drop.conn_id is None:
            assert drop.reason == "no_consumer"
            covered[drop.first : drop.stop] += 1

    duplicated = Counter(
        (e["conn_id"], e["tweet_index"])
        for e in reader.events("fault")
        if e.get("effect") == "duplicated"
    )
    for row, client in zip(rows, connections, strict=True):
        cid = row["conn_id"]
        counts = index_multiset(reader, cid)
        start = row["start_index"]
        stop = max(counts, default=start - 1) + 1
        expected = Counter(range(start, stop))
        expected.update({i: n for (c, i), n in duplicated.items() if c == cid})
        assert counts == expected, f"connection {cid}: ledger accounting is off"
        covered[start:stop] += 1

        acked = reader.ids_of(reader.delivered_indexes(cid, "acked")).tolist()
        unknown = reader.ids_of(reader.delivered_indexes(cid, "unknown")).tolist()
        assert client.ids[: len(acked)] == acked, f"connection {cid}: acked but not read"
        assert client.ids == (acked + unknown)[: len(client.ids)], (
            f"connection {cid}: read but not recorded"
        )
        if not _was_reset(client.error):
            assert unknown == [], f"connection {cid}: unknown deliveries without a reset"
    assert (covered == 1).all(), f"indexes covered {np.unique(covered)} times, not once"

    effects = [e for e in reader.events("fault") if e["name"] == fault["name"]]
    assert effects, f"{kind}: the fault never logged an effect"


def _was_reset(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, ConnectionResetError):
            return True
        nested = [a for a in getattr(error, "args", ()) if isinstance(a, BaseException)]
        error = error.__cause__ or error.__context__ or (nested[-1] if nested else None)
    return False
