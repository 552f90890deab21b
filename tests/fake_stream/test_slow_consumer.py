"""Slow consumers: warnings, the operational disconnect, and the tweets it costs."""

from __future__ import annotations

import json
import time

from tests.fake_stream._clients import dechunk, raw_get


def test_slow_reader_is_warned_then_disconnected_and_the_loss_is_recorded(start_server):
    server = start_server(
        "--rate",
        "3000",
        "--seed",
        "21",
        "--queue-size",
        "600",
        "--send-buffer",
        "16384",
        "--settle-timeout",
        "20",
        "--max-batch",
        "32",
    )
    host, port = server.url.removeprefix("http://").split(":")
    sock = raw_get(
        host, int(port), "/2/tweets/search/stream?stall_warnings=true", server.token, rcvbuf=8192
    )
    sock.settimeout(30)
    raw = bytearray()
    while True:  # read ~40 KB/s, far below the ~2 MB/s the stream produces
        piece = sock.recv(2048)
        if not piece:
            break
        raw += piece
        time.sleep(0.05)
    sock.close()
    server.stop()

    head, body, complete = dechunk(bytes(raw))
    assert head.startswith(b"HTTP/1.1 200")
    assert complete  # the server ended the response itself (final chunk)
    messages = [json.loads(line) for line in body.split(b"\r\n") if line]
    warnings = [m["warning"] for m in messages if "warning" in m]
    assert [w["percent_full"] for w in warnings] == [60, 80]
    assert all(w["code"] == "FALLING_BEHIND" for w in warnings)
    assert messages[-1]["errors"][0]["title"] == "operational-disconnect"
    tweet_ids = [int(m["data"]["id"]) for m in messages if "data" in m]

    books = server.ledger_reader()
    (conn,) = books.connections()
    assert conn["end_reason"] == "queue_overflow"
    overflow = [d for d in books.drops() if d.reason == "queue_overflow"]
    assert sum(len(d) for d in overflow) >= 600  # at least the queue's worth was lost
    assert tweet_ids == books.ids_of(books.delivered_indexes()).tolist()


def test_a_reader_that_keeps_up_is_never_disconnected(start_server):
    # A queue of 1 s of stream: a reader that keeps up, on a machine busy enough to pause
    # it for a fifth of a second (CI8: a queue of 600 overflowed once), still keeps up.
    server = start_server("--rate", "3000", "--seed", "22", "--queue-size", "3000")
    host, port = server.url.removeprefix("http://").split(":")
    sock = raw_get(host, int(port), "/2/tweets/search/stream?stall_warnings=true", server.token)
    sock.settimeout(5)
    raw = bytearray()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            raw += sock.recv(1 << 16)
        except TimeoutError:
            break
    sock.close()
    server.stop()
    _, body, _ = dechunk(bytes(raw))
    assert b"FALLING_BEHIND" not in body
    assert b"operational-disconnect" not in body
    books = server.ledger_reader()
    assert not [d for d in books.drops() if d.reason == "queue_overflow"]
