"""Independent stream clients for tests: they count what they parse, nothing else."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Received:
    """What a client parsed from one or more connections, in order."""

    ids: list[int] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)  # warnings, errors
    keepalives: int = 0
    errors: list[str] = field(default_factory=list)  # how connections ended abnormally

    def add_line(self, line: bytes) -> None:
        if not line.strip():
            self.keepalives += 1
            return
        message = json.loads(line)
        if "data" in message:
            self.ids.append(int(message["data"]["id"]))
        else:
            self.other.append(message)


def read_with_requests(
    url: str,
    token: str,
    received: Received,
    params: dict | None = None,
    stop_after: int | None = None,
) -> None:
    """Read one connection with requests/iter_lines until it ends (or ``stop_after`` tweets)."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with requests.get(url, headers=headers, params=params, stream=True, timeout=30) as response:
            response.raise_for_status()
            for line in response.iter_lines(chunk_size=4096, delimiter=b"\r\n"):
                received.add_line(line)
                if stop_after is not None and len(received.ids) >= stop_after:
                    return
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as e:
        received.errors.append(type(e).__name__)


def raw_get(
    host: str, port: int, path: str, token: str, rcvbuf: int | None = None
) -> socket.socket:
    """Open a raw socket and send a GET; the caller reads the raw response bytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return sock


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """Split a raw HTTP/1.1 chunked response into (head, body, complete)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = bytearray()
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return head, bytes(body), False
        size = int(size_line, 16)
        if size == 0:
            return head, bytes(body), True
        if len(rest) < size + 2:
            body += rest[:size]
            return head, bytes(body), False
        body += rest[:size]
        rest = rest[size + 2 :]
    return head, bytes(body), False


def describe(response: requests.Response) -> str:
    """Status, headers and the start of the body, without reading an endless stream."""
    head = f"{response.status_code} {dict(response.headers)}"
    if response.headers.get("Transfer-Encoding") == "chunked" and response.status_code == 200:
        return head + " (a stream)"
    return head + " " + response.text[:300]


def assert_problem(response: requests.Response, status: int | None = None) -> dict[str, Any]:
    """``status`` (any 4xx if not given) with an X-style JSON problem body; return it."""
    if status is None:
        assert 400 <= response.status_code < 500, describe(response)
    else:
        assert response.status_code == status, describe(response)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert isinstance(body, dict)
    for key in ("title", "detail", "type"):
        assert isinstance(body[key], str)
        assert body[key]
    assert body["status"] == response.status_code
    return body
