"""The fake stream's HTTP surface as a client sees it: auth on every endpoint, the one
connection per token and the connect rate limit, and the bytes of the stream itself.

Every test talks to a real ``python -m fake_stream serve`` child over loopback with
``requests`` or a raw socket; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import re
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from harness.run.services import StreamServerProcess
from tests.fake_stream._clients import assert_problem

TWEPOCH = 1288834974657  # X's Snowflake epoch, from the reference (not from the server)
SEARCH = "/2/tweets/search/stream"
SAMPLE = "/2/tweets/sample/stream"
RULES = "/2/tweets/search/stream/rules"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# ---------------------------------------------------------------------------------------
# Helpers


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until true; the server notices closed streams on a ~50 ms tick, but
    the machine is shared, so allow seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def open_connections(server: StreamServerProcess) -> list[dict[str, Any]]:
    return server.control("GET", "stats")["connections"]


def wait_no_connections(server: StreamServerProcess) -> None:
    wait_until(lambda: not open_connections(server), what="the server to see the close")


def stream(
    server: StreamServerProcess, path: str = SEARCH, token: str | None = None, **params: str
) -> requests.Response:
    """Open a stream (headers read, body not yet)."""
    return requests.get(
        server.url + path,
        headers={"Authorization": f"Bearer {token or server.token}"},
        params=params,
        stream=True,
        timeout=10,
    )


def read_messages(response: requests.Response, n: int) -> list[dict[str, Any]]:
    """Parse the next ``n`` non-empty lines of a stream. One line iterator per response
    (a second ``iter_lines`` would lose what the first had buffered)."""
    if not hasattr(response, "_test_lines"):
        response._test_lines = response.iter_lines(chunk_size=4096, delimiter=b"\r\n")  # type: ignore[attr-defined]
    out = []
    for line in response._test_lines:  # type: ignore[attr-defined]
        if line:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def host_port(server: StreamServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def raw_get(server: StreamServerProcess, path: str) -> socket.socket:
    sock = socket.create_connection(host_port(server), timeout=10)
    auth = f"Authorization: Bearer {server.token}\r\n"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n".encode())
    return sock


def parse_chunks(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Split a chunked HTTP/1.1 response strictly: (head, complete chunks, leftover).

    Raises AssertionError on any framing error (a size line that is not hex, a chunk not
    followed by CRLF)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, "no end of headers"
    chunks = []
    while True:
        size_line, sep, after = rest.partition(b"\r\n")
        if not sep:
            return head, chunks, rest
        assert re.fullmatch(rb"[0-9a-f]+", size_line), size_line[:40]
        size = int(size_line, 16)
        if len(after) < size + 2:
            return head, chunks, rest
        assert after[size : size + 2] == b"\r\n", "chunk data not followed by CRLF"
        chunks.append(after[:size])
        rest = after[size + 2 :]
        if size == 0:
            return head, chunks, rest


def headers_of(head: bytes) -> tuple[str, dict[str, str]]:
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}


def created_at_of(tweet_id: str) -> str:
    """``created_at`` computed from the id, independently of the server."""
    ms = (int(tweet_id) >> 22) + TWEPOCH
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# ---------------------------------------------------------------------------------------
# Auth on every endpoint


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """One server for all the auth checks (they change nothing it would carry over)."""
    ledger = tmp_path_factory.mktemp("auth") / "ledger.sqlite"
    with StreamServerProcess(
        ledger, ["--rate", "100", "--seed", "5"], token="right-token"
    ) as server:
        yield server


#: (method, path, JSON body) of every endpoint. Fault-by-name paths use a fault the right-
#: token test creates first.
ENDPOINTS = [
    ("GET", SEARCH, None),
    ("GET", SAMPLE, None),
    ("GET", RULES, None),
    ("POST", RULES, {"add": [{"value": "auth probe", "tag": "probe"}]}),
    ("GET", "/_control/stats", None),
    ("GET", "/_control/rate", None),
    ("PUT", "/_control/rate", {"kind": "constant", "rate": 100}),
    ("GET", "/_control/faults", None),
    ("POST", "/_control/faults", {"type": "duplicate", "name": "probe", "schedule": {"at": 9e5}}),
    ("GET", "/_control/faults/probe", None),
    ("DELETE", "/_control/faults/probe", None),
    ("POST", "/_control/reset", None),
    ("POST", "/_control/ledger/flush", None),
    ("GET", "/_control/ledger", None),
]
BAD_AUTH = {
    "missing": None,
    "wrong-token": "Bearer wrong-token",
    "wrong-scheme": "Basic right-token",
    "empty-bearer": "Bearer ",
    "token-prefix": "Bearer right-toke",
}


def _call(server: StreamServerProcess, method: str, path: str, body: Any, auth: str | None):
    headers = {} if auth is None else {"Authorization": auth}
    return requests.request(
        method, server.url + path, json=body, headers=headers, stream=True, timeout=10
    )


@pytest.mark.parametrize("auth", list(BAD_AUTH.values()), ids=list(BAD_AUTH))
@pytest.mark.parametrize(
    ("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
def test_bad_or_missing_token_is_401_problem(auth_server, method, path, body, auth):
    """No endpoint, the control API included, answers without the bearer token: 401 with
    a JSON problem body (checked before anything else, e.g. before a 404 for the fault)."""
    with _call(auth_server, method, path, body, auth) as response:
        problem = assert_problem(response, 401)
    assert problem["title"] == "Unauthorized"


def test_unauthorized_requests_change_nothing(auth_server):
    """A 401 is not a 'done anyway': rules, faults and rate are as before."""
    rules_before = requests.get(auth_server.url + RULES, headers=auth_server.headers, timeout=10)
    rate_before = auth_server.control("GET", "rate")["profile"]
    for method, path, body in ENDPOINTS:
        if method != "GET":
            _call(auth_server, method, path, body, "Bearer nope").close()
    rules_after = requests.get(auth_server.url + RULES, headers=auth_server.headers, timeout=10)
    assert rules_after.json()["data"] == rules_before.json()["data"]
    assert auth_server.control("GET", "faults") == []
    assert auth_server.control("GET", "rate")["profile"] == rate_before


@pytest.mark.parametrize(
    ("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
def test_right_token_is_2xx(auth_server, method, path, body):
    """With the right token every endpoint answers 2xx (streams: 200 and a first line)."""
    if path.startswith("/_control/faults"):
        auth_server.control("POST", "reset")
    if path.startswith("/_control/faults/"):
        auth_server.control("POST", "faults", ENDPOINTS[8][2])
    if path in (SEARCH, SAMPLE):
        wait_no_connections(auth_server)  # the previous stream test's connection
    with _call(auth_server, method, path, body, "Bearer right-token") as response:
        assert 200 <= response.status_code < 300, (
            response.text if not path.endswith("stream") else ""
        )
        if path in (SEARCH, SAMPLE):
            assert read_messages(response, 1)[0]["data"]["id"].isdigit()
        else:
            assert response.headers["Content-Type"].startswith("application/json")
            response.json()


# ---------------------------------------------------------------------------------------
# One stream connection per token; the connect rate limit


def _assert_limit_headers(response: requests.Response, limit: int) -> tuple[int, int]:
    """x-rate-limit-* present and sane; return (remaining, reset)."""
    h = response.headers
    assert int(h["x-rate-limit-limit"]) == limit
    remaining, reset = int(h["x-rate-limit-remaining"]), int(h["x-rate-limit-reset"])
    assert 0 <= remaining <= limit
    # A UNIX timestamp in the future, within the 15-minute window (+ clock rounding).
    now = time.time()
    assert now < reset <= now + 15 * 60 + 2
    return remaining, reset


def test_second_connection_with_the_same_token_is_429_too_many_connections(start_server):
    """X allows one stream connection per app: the second gets 429 TooManyConnections with
    the rate-limit headers, and once the first has closed a reconnect works."""
    server = start_server("--rate", "200", "--seed", "2")
    first = stream(server)
    assert first.status_code == 200
    first_ids = [m["data"]["id"] for m in read_messages(first, 5)]
    with stream(server) as second:
        problem = assert_problem(second, 429)
        remaining, _ = _assert_limit_headers(second, 50)
    assert problem["title"] == "ConnectionException"
    assert problem["connection_issue"] == "TooManyConnections"
    assert problem["detail"] == "This stream is currently at the maximum allowed connection limit."
    assert problem["type"] == "https://api.twitter.com/2/problems/streaming-connection"
    assert remaining < 50
    # The first connection is unharmed by the rejected one.
    more = [m["data"]["id"] for m in read_messages(first, 5)]
    assert int(more[0]) > int(first_ids[-1])
    first.close()

    wait_no_connections(server)
    with stream(server) as again:
        assert again.status_code == 200
        assert len(read_messages(again, 3)) == 3
    # The refusal is on the ledger, naming the connection that held the token.
    server.stop()
    ledger = server.ledger_reader()
    (refused,) = ledger.events("refused")
    assert (refused["name"], refused["status"]) == ("TooManyConnections", 429)
    assert refused["holder_conn"] == ledger.connections()[0]["conn_id"]


def test_connect_rate_limit_counts_down_then_429(start_server):
    """``--connect-limit 3``: three connects in the window succeed with remaining 2, 1, 0;
    the fourth is 429 with remaining 0 and a reset time in the future."""
    server = start_server("--rate", "100", "--connect-limit", "3")
    remaining = []
    for _ in range(3):
        with stream(server) as response:
            assert response.status_code == 200
            remaining.append(_assert_limit_headers(response, 3)[0])
            read_messages(response, 1)
        wait_no_connections(server)
    assert remaining == [2, 1, 0]
    with stream(server) as fourth:
        problem = assert_problem(fourth, 429)
        assert _assert_limit_headers(fourth, 3)[0] == 0
    assert problem.get("connection_issue") != "TooManyConnections"  # a rate limit, not a dup
    # Rejected connects open nothing: the ledger has exactly the three connections, and
    # the refusal.
    server.stop()
    assert len(server.ledger_reader().connections()) == 3
    assert [e["name"] for e in server.ledger_reader().events("refused")] == ["TooManyRequests"]


def test_each_token_gets_its_own_stream_connection(start_server):
    """Tokens are apps: three tokens hold three concurrent streams; a second connection
    for one of them is still refused while the others flow."""
    server = start_server("--rate", "300", "--token", "other", "--token", "third")
    tokens = [server.token, "other", "third"]
    responses = [stream(server, token=t) for t in tokens]
    try:
        assert [r.status_code for r in responses] == [200, 200, 200]
        for r in responses:
            assert len(read_messages(r, 5)) == 5
        assert len(open_connections(server)) == 3
        with stream(server, token="other") as dup:
            assert assert_problem(dup, 429)["connection_issue"] == "TooManyConnections"
        for r in responses:  # still flowing after the refusal
            assert len(read_messages(r, 5)) == 5
    finally:
        for r in responses:
            r.close()
    server.stop()
    assert sorted(c["token"] for c in server.ledger_reader().connections()) == sorted(tokens)


# ---------------------------------------------------------------------------------------
# The stream's bytes and messages


@pytest.fixture(scope="module")
def tweet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """A server with two tagged rules, shared by the read-only stream-format tests (each
    waits for the previous test's connection to be gone before it connects)."""
    ledger = tmp_path_factory.mktemp("tweets") / "ledger.sqlite"
    args = ["--rate", "400", "--seed", "4"]
    args += ["--rule", '{"value": "cats", "tag": "felines"}']
    args += ["--rule", '{"value": "dogs", "tag": "canines"}']
    with StreamServerProcess(ledger, args, token="tweets-token") as server:
        yield server


def _read_raw(sock: socket.socket, until: Callable[[bytes], bool], timeout: float) -> bytes:
    raw = b""
    deadline = time.monotonic() + timeout
    while not until(raw) and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        raw += data
    return raw


def test_stream_is_chunked_ndjson_with_crlf_lines(tweet_server):
    """On the wire: HTTP/1.1 200, chunked transfer encoding with valid chunk framing, the
    JSON content type, and a body of JSON messages each ending in CRLF (no bare LF)."""
    server = tweet_server
    wait_no_connections(server)
    sock = raw_get(server, SEARCH)
    try:
        raw = _read_raw(sock, lambda b: b.count(b"\r\n{") >= 200, timeout=10)
    finally:
        sock.close()
    head, chunks, _ = parse_chunks(raw)
    status, headers = headers_of(head)
    assert status == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert headers["content-type"] == "application/json; charset=utf-8"
    body = b"".join(chunks)
    assert len(chunks) >= 2
    # The server writes whole messages per chunk (no fault is slicing them).
    assert all(c.endswith(b"\r\n") for c in chunks)
    assert body.count(b"\n") == body.count(b"\r\n")  # every line ends in CRLF
    lines = body.split(b"\r\n")[:-1]
    assert len(lines) >= 150
    for line in lines:  # no keep-alives at this rate (default keep-alive is 20 s)
        assert json.loads(line)["data"]["id"]


def _check_tweet(message: dict[str, Any]) -> dict[str, Any]:
    data = message["data"]
    assert set(data) == {"id", "text", "created_at", "author_id", "edit_history_tweet_ids", "lang"}
    assert isinstance(data["id"], str)
    assert data["id"].isdigit()
    assert int(data["id"]) < 2**63
    assert data["edit_history_tweet_ids"] == [data["id"]]
    assert ISO_MS.match(data["created_at"])
    assert data["created_at"] == created_at_of(data["id"])  # the id's timestamp bits
    assert data["lang"] in {"en", "es", "fr", "ja"}
    assert isinstance(data["text"], str)
    assert 0 < len(data["text"]) <= 280
    assert isinstance(data["author_id"], str)
    assert data["author_id"].isdigit()
    (user,) = message["includes"]["users"]
    assert user["id"] == data["author_id"]
    assert isinstance(user["name"], str)
    assert user["name"]
    assert isinstance(user["username"], str)
    assert user["username"]
    return data


def test_filtered_stream_tweets_have_x_fields_and_matching_rules(tweet_server):
    """Each filtered-stream message: string Snowflake id decoding to created_at,
    edit_history == [id], includes.users[0] is the author, and matching_rules entries
    carry id AND tag of a current rule. Ids increase; created_at is about now."""
    server = tweet_server
    wait_no_connections(server)
    rules = requests.get(server.url + RULES, headers=server.headers, timeout=10).json()["data"]
    tag_of = {r["id"]: r["tag"] for r in rules}
    assert set(tag_of.values()) == {"felines", "canines"}
    started = time.time()
    with stream(server) as response:
        messages = read_messages(response, 200)
    ids = []
    seen_rules = set()
    for message in messages:
        data = _check_tweet(message)
        ids.append(int(data["id"]))
        assert message["matching_rules"], "filtered tweets always match a rule"
        for rule in message["matching_rules"]:
            assert set(rule) == {"id", "tag"}
            assert tag_of[rule["id"]] == rule["tag"]
            seen_rules.add(rule["id"])
        created = dt.datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
        # Same machine's clock; generous because the machine is shared.
        assert abs(created.timestamp() - started) < 60
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert seen_rules == set(tag_of)  # 200 tweets over 2 rules: both are used


def test_sample_stream_has_no_matching_rules_and_is_recorded(tweet_server):
    """The sample stream carries the same tweet shape without matching_rules; the ledger
    records the connection with its token, endpoint, query and why it ended."""
    server = tweet_server
    wait_no_connections(server)
    with stream(server, SAMPLE, **{"tweet.fields": "lang"}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        messages = read_messages(response, 50)
    for message in messages:
        _check_tweet(message)
        assert set(message) == {"data", "includes"}
    wait_no_connections(server)  # so the close is in the ledger
    conns = server.control("GET", "ledger")["connections"]
    conn = next(c for c in conns if c["endpoint"] == SAMPLE)
    assert conn["token"] == server.token
    assert conn["params"] == "tweet.fields=lang"
    assert conn["end_reason"] == "client_closed"


def test_keepalive_is_a_bare_crlf_about_every_interval(start_server):
    """With nothing to send (rate 0) the server writes a bare CRLF after ``--keepalive``
    seconds of silence, and nothing else."""
    server = start_server("--rate", "0", "--keepalive", "0.5")
    sock = raw_get(server, SEARCH)
    arrivals = []
    body = b""
    try:
        raw = _read_raw(sock, lambda b: b"\r\n\r\n" in b, timeout=5)
        start = time.monotonic()
        _, _, rest = raw.partition(b"\r\n\r\n")
        pending = rest
        while time.monotonic() - start < 2.1:
            sock.settimeout(max(0.05, 2.1 - (time.monotonic() - start)))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            assert data, "server closed the stream"
            arrivals.append(time.monotonic() - start)
            pending += data
    finally:
        sock.close()
    _, chunks, _ = parse_chunks(b"HTTP/1.1 200 OK\r\n\r\n" + pending)
    body = b"".join(chunks)
    assert body == b"\r\n" * len(chunks)  # nothing but bare CRLFs, one per chunk
    # 2.1 s at one every 0.5 s: 4 expected. Bounds are loose (shared 2-core machine) but
    # exclude both "never" and "on every 50 ms tick".
    assert 2 <= len(chunks) <= 6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps
    # The median, not every gap: a descheduled test process can read two keep-alives
    # close together, but the server's spacing shows in the typical gap.
    assert 0.35 <= statistics.median(gaps) <= 1.0


def test_stream_paths_do_not_answer_head_with_a_body(auth_server):
    """A HEAD response must not carry a body (RFC 9110 9.3.2). HEAD on a stream path is
    refused (405, GET allowed) instead of streaming tweets after the headers."""
    server = auth_server
    wait_no_connections(server)
    sock = socket.create_connection(host_port(server), timeout=5)
    try:
        auth = f"Authorization: Bearer {server.token}\r\n"
        sock.sendall(f"HEAD {SEARCH} HTTP/1.1\r\nHost: t\r\n{auth}\r\n".encode())
        raw = _read_raw(sock, lambda b: b"\r\n\r\n" in b, timeout=5)
        head, _, after = raw.partition(b"\r\n\r\n")
        time.sleep(0.3)
        sock.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            after += sock.recv(65536)
    finally:
        sock.close()
    status, headers = headers_of(head)
    assert status.startswith("HTTP/1.1 405")
    assert "GET" in headers["allow"]
    assert after == b""  # no body after a HEAD response
    assert not open_connections(server)
