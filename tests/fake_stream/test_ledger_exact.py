"""The ledger agrees exactly with what independent clients counted, across resets.

"Delivered" in the ledger means the client's TCP acknowledged the bytes. A client that
reads every byte it was sent until its connection ends must therefore have parsed exactly
the ledger's acknowledged deliveries: no more (the ledger would have missed a record), no
fewer (it would have invented one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import struct
import threading
import time
from collections import Counter

import httpx

from tests.fake_stream._clients import Received, raw_get, read_with_requests


def _acked_ids(books) -> list[int]:
    return books.ids_of(books.delivered_indexes()).tolist()


def test_requests_client_reading_to_the_end_matches_the_ledger(start_server):
    """A clean server stop ends the stream with the final chunk; the client reads it all."""
    server = start_server("--rate", "2000", "--seed", "3")
    received = Received()
    reader = threading.Thread(
        target=read_with_requests, args=(server.stream_url, server.token, received)
    )
    reader.start()
    time.sleep(1.5)
    assert server.stop() == 0
    reader.join(timeout=20)

    books = server.ledger_reader()
    assert books.stopped_cleanly
    assert len(received.ids) > 1000
    assert Counter(received.ids) == Counter(_acked_ids(books))
    assert len(books.delivered_indexes(status="unknown")) == 0
    assert received.errors == []


def test_ledger_matches_client_across_server_resets(start_server):
    """reset_peer every second: the client reconnects with since_id each time. Every tweet
    it parsed is acknowledged in the ledger and every acknowledged tweet was parsed; only
    tweets the ledger marks ``unknown`` (in the kernel when the RST left) may go either way."""
    server = start_server(
        "--rate",
        "2000",
        "--seed",
        "4",
        "--fault",
        json.dumps({"type": "reset_peer", "schedule": {"at": 0.5, "duration": 0.2, "every": 1.0}}),
    )
    received = Received()
    stop = threading.Event()

    def keep_reading():
        while not stop.is_set():
            params = {"since_id": str(received.ids[-1])} if received.ids else None
            read_with_requests(server.stream_url, server.token, received, params)
            time.sleep(0.05)

    reader = threading.Thread(target=keep_reading)
    reader.start()
    time.sleep(4)
    stop.set()
    server.stop()
    reader.join(timeout=20)

    books = server.ledger_reader()
    resets = [e for e in books.events("fault") if e.get("effect") == "reset"]
    assert len(resets) >= 3
    assert len(received.errors) >= 3  # the client really saw its connections reset
    acked = Counter(_acked_ids(books))
    unknown = Counter(books.ids_of(books.delivered_indexes(status="unknown")).tolist())
    got = Counter(received.ids)
    assert not acked - got, "the ledger says delivered, the client never got them"
    assert not got - acked - unknown, "the client got tweets the ledger does not know it sent"
    # Resuming with since_id after every reset: no repeats, and no gaps except what the
    # ledger itself recorded as lost in flight or not acknowledged.
    assert max(got.values()) == 1


def test_async_client_that_resets_its_own_connections(start_server):
    """An httpx (async) client that aborts its connections with an RST: the server must not
    count what it had not yet sent, and must count what the client's TCP received even if the
    client application dropped it (delivered, not processed)."""
    server = start_server("--rate", "3000", "--seed", "5")

    async def run() -> tuple[list[int], int]:
        ids: list[int] = []
        connections = 0
        async with httpx.AsyncClient(headers=server.headers, timeout=30) as client:
            for round_ in range(3):
                async with client.stream("GET", server.stream_url) as response:
                    connections += 1
                    async for line in response.aiter_lines():
                        if line.strip():
                            ids.append(int(json.loads(line)["data"]["id"]))
                        if len(ids) >= 700 * (round_ + 1):
                            break
                await asyncio.sleep(0.3)
        return ids, connections

    ids, connections = asyncio.run(run())
    server.stop()
    books = server.ledger_reader()
    acked = Counter(_acked_ids(books))
    got = Counter(ids)
    assert connections == 3
    assert len(books.connections()) == 3
    assert not got - acked  # everything parsed was delivered
    assert all(c["end_reason"] == "client_closed" for c in books.connections())
    # What the client abandoned in its buffers is bounded by what one read-ahead holds.
    assert sum((acked - got).values()) < 3 * 2000


def test_raw_rst_from_client_leaves_nothing_indeterminate(start_server):
    """A peer that resets will acknowledge nothing more: nothing may be 'unknown'."""
    server = start_server("--rate", "2000", "--seed", "6")
    host, port = server.url.removeprefix("http://").split(":")
    sock = raw_get(host, int(port), "/2/tweets/search/stream", server.token)
    time.sleep(0.5)  # do not read: let buffers fill a little
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    time.sleep(0.5)
    server.stop()
    books = server.ledger_reader()
    (conn,) = books.connections()
    assert conn["end_reason"] == "client_closed"
    assert len(books.delivered_indexes(status="unknown")) == 0
    # Every tweet created while it was connected is delivered or dropped, never both.
    delivered = set(books.delivered_indexes().tolist())
    dropped = {
        i for d in books.drops() if d.conn_id == conn["conn_id"] for i in range(d.first, d.stop)
    }
    assert delivered
    assert not delivered & dropped
    assert min(delivered) == conn["start_index"]
    assert delivered | dropped == set(range(conn["start_index"], max(delivered | dropped) + 1))


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def test_recovery_connection_matches_the_ledger_even_when_cut(start_server):
    """A recovery (start_time/end_time) is recorded like any stream: read to its clean end,
    the client parsed exactly its acknowledged deliveries; reset mid-way by a fault, what
    the client parsed is acknowledged and the rest is unknown or dropped, never missing."""
    server = start_server("--rate", "4000", "--seed", "7")
    time.sleep(1.5)
    t0 = server.control("GET", "stats")["t0_ms"]
    whole = Received()
    read_with_requests(
        server.stream_url,
        server.token,
        whole,
        {"start_time": _iso(t0), "end_time": _iso(t0 + 1200)},
    )
    server.control(
        "POST", "faults", {"type": "limit_data", "name": "cut", "attributes": {"bytes": 200_000}}
    )
    cut = Received()
    read_with_requests(server.stream_url, server.token, cut, {"start_time": _iso(t0)})
    server.stop()

    books = server.ledger_reader()
    first, second = books.connections()
    assert first["end_reason"] == "recovery_complete"
    assert whole.errors == []
    assert Counter(whole.ids) == Counter(
        books.ids_of(books.delivered_indexes(first["conn_id"])).tolist()
    )
    assert len(whole.ids) == 4800  # 1.2 s at a uniform 4,000/s
    assert cut.errors  # the byte limit cut it: no final chunk
    assert second["end_reason"] != "recovery_complete"
    acked = Counter(books.ids_of(books.delivered_indexes(second["conn_id"])).tolist())
    unknown = books.delivered_indexes(second["conn_id"], status="unknown")
    got = Counter(cut.ids)
    assert not acked - got
    assert not got - acked - Counter(books.ids_of(unknown).tolist())
    # Every tweet of its range is delivered, unknown or dropped on it, exactly once.
    (event,) = [e for e in books.events("recovery") if e["conn_id"] == second["conn_id"]]
    taken = Counter(books.delivered_indexes(second["conn_id"]).tolist())
    taken.update(unknown.tolist())
    for d in books.drops():
        if d.conn_id == second["conn_id"]:
            taken.update(range(d.first, d.stop))
    assert taken == Counter(range(event["first"], event["stop"]))


def test_two_redundant_connections_each_match_the_ledger(start_server):
    """Enterprise's two connections per token: each client parsed exactly its own
    connection's acknowledged deliveries, and both carry every tweet of their overlap."""
    server = start_server("--rate", "2000", "--seed", "8", "--stream-connections", "2")
    clients = [Received(), Received()]
    readers = [
        threading.Thread(target=read_with_requests, args=(server.stream_url, server.token, r))
        for r in clients
    ]
    for reader in readers:
        reader.start()
        time.sleep(0.3)
    time.sleep(1.0)
    assert server.stop() == 0
    for reader in readers:
        reader.join(timeout=20)

    books = server.ledger_reader()
    connections = books.connections()
    assert len(connections) == 2
    for conn in connections:
        acked = Counter(books.ids_of(books.delivered_indexes(conn["conn_id"])).tolist())
        assert conn["end_reason"] == "server_shutdown"
        assert len(books.delivered_indexes(conn["conn_id"], status="unknown")) == 0
        matching = [c for c in clients if c.ids and Counter(c.ids) == acked]
        assert len(matching) == 1, "each connection's deliveries are one client's tweets"
    assert all(len(c.ids) > 1000 and c.errors == [] for c in clients)
    # Data through both: from the second's start to where either stopped, both carry
    # every tweet.
    first, second = (set(books.delivered_indexes(c["conn_id"]).tolist()) for c in connections)
    overlap = set(range(connections[1]["start_index"], min(max(first), max(second)) + 1))
    assert len(overlap) > 1000
    assert overlap <= first
    assert overlap <= second
