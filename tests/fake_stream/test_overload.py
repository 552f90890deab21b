"""Cheap ways to wedge the server, refused: requests that never complete (slowloris),
more open connections than a client may hold, bodies that never arrive."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.fake_stream._clients import assert_problem


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Read until the server closes the connection; what it sent. Fails after ``seconds``."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {seconds} s")
    except ConnectionResetError:
        pass
    return data


def test_a_request_head_that_never_completes_is_closed(start_server):
    """Slowloris: headers trickle in and never end. With --request-timeout 0.5 the server
    closes such connections (250 of them once stayed open for good); meanwhile it serves."""
    server = start_server("--rate", "50", "--request-timeout", "0.5")
    slow = []
    for _ in range(20):
        sock = _connect(server)
        sock.sendall(b"GET /_control/stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    assert server.control("GET", "stats")["created"] >= 0  # still answering
    for sock in slow:
        sock.sendall(b"a")  # a byte now and then does not buy more time
    for sock in slow:
        assert _closed_within(sock, 5) == b""
        sock.close()
    idle = _connect(server)  # one that sends nothing at all is closed too
    assert _closed_within(idle, 5) == b""
    idle.close()


def test_a_body_that_never_arrives_is_408(start_server):
    server = start_server("--rate", "50", "--request-timeout", "0.5")
    sock = _connect(server)
    sock.sendall(
        b"POST /_control/faults HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {server.token}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"type":'
    )
    raw = _closed_within(sock, 5)
    sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["status"] == 408
    assert server.control("GET", "faults") == []  # half a definition added nothing


def test_connections_beyond_the_cap_get_a_429_problem(start_server):
    """--max-connections 4 per client address: a fifth connection is answered with a JSON
    429 problem and closed; once one of the four closes, a new one is served."""
    server = start_server("--rate", "50", "--max-connections", "4", "--request-timeout", "30")
    held = [_connect(server) for _ in range(4)]
    time.sleep(0.2)  # the server has accepted all four
    refused = requests.get(f"{server.url}/_control/stats", headers=server.headers, timeout=5)
    problem = assert_problem(refused, 429)
    assert "Too many open connections" in problem["detail"]
    assert refused.headers["Connection"] == "close"
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the server sees the close within a moment
        answer = requests.get(f"{server.url}/_control/stats", headers=server.headers, timeout=5)
        if answer.status_code == 200:
            break
        assert_problem(answer, 429)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for sock in held:
        sock.close()
