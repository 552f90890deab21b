"""Bad input never crashes the fake stream or hangs a connection: unknown and repeated
parameters, wrong types, bad JSON, oversized bodies, unparseable HTTP on a raw socket all
get a 4xx with an X-style JSON problem body. Then Hypothesis throws random requests at one
live server and checks it answers 2xx/4xx only and stays up."""

from __future__ import annotations

import json
import re
import socket
import string
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.run.services import StreamServerProcess
from tests.fake_stream._clients import assert_problem, describe
from tests.fuzz import examples

SEARCH = "/2/tweets/search/stream"
SAMPLE = "/2/tweets/sample/stream"
RULES = "/2/tweets/search/stream/rules"
MAX_BODY = 64 * 1024  # documented in fake_stream/README.md
TWEPOCH = 1288834974657


@pytest.fixture(scope="module")
def bad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """One server for the hand-written bad requests (limits off: we want to reach the
    validation, not the rate limiter)."""
    ledger = tmp_path_factory.mktemp("bad") / "ledger.sqlite"
    args = ["--rate", "50", "--seed", "3", "--connect-limit", "0", "--rules-limit", "0"]
    server = StreamServerProcess(ledger, args, token="bad-token")
    yield server
    assert server.process.popen.poll() is None, "the server died"
    server.stop()


def get(server: StreamServerProcess, path: str, query: str = "", **kw: Any) -> requests.Response:
    url = f"{server.url}{path}" + (f"?{query}" if query else "")
    return requests.get(url, headers=server.headers, timeout=10, **kw)


# ---------------------------------------------------------------------------------------
# Query parameters

QUERY_PATHS = [SEARCH, SAMPLE, RULES, "/_control/stats", "/_control/rate", "/_control/faults"]


@pytest.mark.parametrize("path", QUERY_PATHS)
def test_unknown_query_parameter_is_400_naming_it(bad_server, path):
    """X refuses parameters it does not know, naming them under errors[].parameters."""
    with get(bad_server, path, "colour=red&tweet.fields=lang", stream=True) as response:
        problem = assert_problem(response, 400)
    names = [name for e in problem["errors"] for name in e["parameters"]]
    assert "colour" in names
    (error,) = [e for e in problem["errors"] if "colour" in e["parameters"]]
    assert error["parameters"] == {"colour": ["red"]}
    assert "colour" in error["message"]


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        (SEARCH, "backfill_minutes=1&backfill_minutes=2", "backfill_minutes"),
        (SAMPLE, "expansions=a&expansions=b", "expansions"),
        (RULES, "ids=1&ids=2", "ids"),
    ],
)
def test_repeated_parameter_is_400(bad_server, path, query, name):
    with get(bad_server, path, query, stream=True) as response:
        problem = assert_problem(response, 400)
    (error,) = problem["errors"]
    assert error["parameters"] == {name: [v.split("=")[1] for v in query.split("&")]}


@pytest.mark.parametrize(
    "query",
    [
        "backfill_minutes=9",
        "backfill_minutes=0",
        "backfill_minutes=-1",
        "backfill_minutes=1.5",
        "backfill_minutes=abc",
        "backfill_minutes=",
        "backfill_minutes=%EF%BC%91",  # a full-width digit one: isdigit() but not ASCII
        "since_id=abc",
        "since_id=-1",
        "since_id=",
        "since_id=99999999999999999999",
        "since_id=9223372036854775808",
        "stall_warnings=maybe",
        "backfill_minutes=1&since_id=1",
    ],
)
@pytest.mark.parametrize("path", [SEARCH, SAMPLE])
def test_wrong_parameter_types_are_400_naming_the_parameter(bad_server, path, query):
    """Values of the wrong type or range: 400 whose errors name the parameter; no stream is
    opened (the server lists no connection)."""
    with get(bad_server, path, query, stream=True) as response:
        problem = assert_problem(response, 400)
    named = {name for e in problem["errors"] for name in e["parameters"]}
    assert named & {q.split("=")[0] for q in query.split("&")}
    assert bad_server.control("GET", "stats")["connections"] == []


@pytest.mark.parametrize("value", ["abc", "0", "1001", "-5", "2.5", ""])
def test_rules_max_results_of_the_wrong_type_is_400(bad_server, value):
    """GET rules' max_results is X's 1..1000 integer; anything else is named in a 400."""
    problem = assert_problem(get(bad_server, RULES, f"max_results={value}"), 400)
    assert problem["errors"][0]["parameters"] == {"max_results": [value]}


# ---------------------------------------------------------------------------------------
# Bodies

BODY_ENDPOINTS = [("POST", RULES), ("POST", "/_control/faults"), ("PUT", "/_control/rate")]


@pytest.mark.parametrize(
    "data",
    [b"{", b"", b"\xff\xfe\x00", b"[1,", b"NaN", b"{'add': 1}", b'{"a":1}{"b":2}', b"1e400"],
    ids=["open", "empty", "binary", "unclosed", "nan", "single-quotes", "two-docs", "inf"],
)
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_bad_json_body_is_400(bad_server, method, path, data):
    before = bad_server.control("GET", "stats")
    response = requests.request(
        method, bad_server.url + path, data=data, headers=bad_server.headers, timeout=10
    )
    assert_problem(response, 400)
    after = bad_server.control("GET", "stats")
    assert after["faults"] == before["faults"]
    assert after["rate"] == before["rate"]


@pytest.mark.parametrize("body", [True, [], "x", {}, 3, None, [{"add": []}]])
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS[:2])
def test_wrong_json_shapes_are_400(bad_server, method, path, body):
    response = requests.request(
        method,
        bad_server.url + path,
        data=json.dumps(body),
        headers=bad_server.headers,
        timeout=10,
    )
    assert_problem(response, 400)


@pytest.mark.parametrize("depth", [33, 1000, 1020])
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_deeply_nested_body_is_400(bad_server, method, path, depth):
    """Nesting beyond 32 levels is refused: a 1,000-deep rule value once answered 500 (a
    RecursionError while echoing it back in the error list)."""
    nested = "[" * depth + "]" * depth
    data = {
        RULES: '{"add": [{"value": %s}]}',
        "/_control/faults": '{"type": "latency", "attributes": {"latency": %s}}',
        "/_control/rate": '{"kind": "piecewise", "points": %s}',
    }[path] % nested
    response = requests.request(
        method, bad_server.url + path, data=data, headers=bad_server.headers, timeout=10
    )
    assert "deeper than 32" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_nesting_up_to_the_limit_is_read(bad_server, method, path):
    """32 levels are parsed, and whatever is wrong with the value is named instead."""
    nested = "[" * 29 + "]" * 29  # inside 3 levels of the body's own
    data = {
        RULES: '{"add": [{"value": %s}]}',
        "/_control/faults": '{"type": "latency", "attributes": {"latency": %s}}',
        "/_control/rate": '{"kind": "piecewise", "points": [%s]}',
    }[path] % nested
    response = requests.request(
        method, bad_server.url + path, data=data, headers=bad_server.headers, timeout=10
    )
    if path == RULES:  # X's shape: a 200 listing the invalid rule
        assert response.json()["errors"][0]["title"] == "Invalid Rule"
    else:
        assert "deeper" not in assert_problem(response, 400)["detail"]


def _padded_rules_body(size: int) -> bytes:
    """A well-formed rules body of exactly ``size`` bytes (a too-long rule value)."""
    head, tail = b'{"add": [{"value": "', b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_of_exactly_64_kib_is_read(bad_server):
    """The limit is inclusive: a 65,536-byte body is parsed (the rule is then refused for
    its length, which proves it was read)."""
    response = requests.post(
        bad_server.url + RULES,
        data=_padded_rules_body(MAX_BODY),
        headers=bad_server.headers,
        timeout=10,
    )
    assert response.status_code in (200, 201)
    assert response.json()["errors"][0]["title"] == "RuleLengthExceeded"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_oversized_body_is_413(bad_server, method, path, chunked):
    """One byte over 64 KiB: 413 problem, whether the size is announced or chunked."""
    body = _padded_rules_body(MAX_BODY + 1)
    data: Any = iter([body[:40_000], body[40_000:]]) if chunked else body
    response = requests.request(
        method, bad_server.url + path, data=data, headers=bad_server.headers, timeout=10
    )
    assert ("Transfer-Encoding" in response.request.headers) == chunked
    assert_problem(response, 413)


# ---------------------------------------------------------------------------------------
# Raw sockets: what a library client would refuse to send


def _raw_exchange(
    server: StreamServerProcess, data: bytes, timeout: float = 5.0, until_close: bool = True
) -> bytes:
    """Send ``data``; read until the server closes (or, with ``until_close`` false, until
    one whole response with a Content-Length is in). Fails if that does not happen within
    ``timeout`` (a hung connection)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not until_close and _complete(out):
                return out
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return out
            out += chunk
    raise AssertionError(f"no complete answer within {timeout} s; got {out[:200]!r}")


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    return bool(sep and match and len(body) >= int(match.group(1)))


def _problem_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body[: int(headers["content-length"])])
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return status, problem


AUTH = b"Authorization: Bearer bad-token\r\n"
RAW = {
    "long-header": b"GET /_control/stats HTTP/1.1\r\nHost: t\r\n"
    + AUTH
    + b"X-Big: "
    + b"a" * 10_000
    + b"\r\n\r\n",
    "long-request-line": b"GET /_control/stats?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "many-headers": b"GET /_control/stats HTTP/1.1\r\nHost: t\r\n"
    + AUTH
    + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    + b"\r\n",
    "garbage-line": b"HELLO WORLD THIS IS NOT HTTP\r\n\r\n",
    "binary-garbage": bytes(range(256)) + b"\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(200),
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad-version": b"GET /_control/stats HTTP/9.9\r\nHost: t\r\n\r\n",
    "bad-method-char": b"G@T /_control/stats HTTP/1.1\r\nHost: t\r\n\r\n",
    "nul-in-header": b"GET /_control/stats HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "header-without-colon": b"GET /_control/stats HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
    "negative-content-length": b"POST " + RULES.encode() + b" HTTP/1.1\r\nHost: t\r\n" + AUTH
    + b"Content-Length: -1\r\n\r\n",
    "two-content-lengths": b"POST " + RULES.encode() + b" HTTP/1.1\r\nHost: t\r\n" + AUTH
    + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "unknown-transfer-encoding": b"POST " + RULES.encode() + b" HTTP/1.1\r\nHost: t\r\n" + AUTH
    + b"Transfer-Encoding: gzip\r\n\r\n",
    "bad-chunk-size": b"POST /_control/faults HTTP/1.1\r\nHost: t\r\n" + AUTH
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("data", list(RAW.values()), ids=list(RAW))
def test_unparseable_http_gets_a_json_problem_and_a_close(bad_server, data):
    """Requests aiohttp's parser rejects are answered by ProblemRequestHandler with a 4xx
    JSON problem, then the connection is closed (not left hanging)."""
    status, _ = _problem_of(_raw_exchange(bad_server, data))
    assert 400 <= status < 500
    assert bad_server.control("GET", "stats")["rate"] == 50  # still serving


def test_huge_content_length_is_refused_without_waiting_for_the_body(bad_server):
    """A body announced as 100 MB is refused (413) from its Content-Length at once, with
    ``Connection: close``: the server does not wait for 100 MB that will never come.
    (aiohttp then lingers a while reading what the client still sends, as RFC 9112 9.6
    recommends, so we do not wait for the close itself.)"""
    data = (
        f"POST {RULES} HTTP/1.1\r\nHost: t\r\n".encode()
        + AUTH
        + b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
    )
    raw = _raw_exchange(bad_server, data, timeout=5, until_close=False)
    status, problem = _problem_of(raw)
    assert status == 413
    assert b"\r\nConnection: close" in raw.partition(b"\r\n\r\n")[0]
    assert "100000000" in problem["detail"]


# ---------------------------------------------------------------------------------------
# Hypothesis: random requests at one live server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """The server the property test hammers (once for all its examples)."""
    ledger = tmp_path_factory.mktemp("fuzz") / "ledger.sqlite"
    args = ["--rate", "20", "--seed", "4", "--connect-limit", "0", "--rules-limit", "0"]
    with StreamServerProcess(ledger, args, token="fuzz-token") as server:
        yield server


KNOWN_PATHS = [
    SEARCH,
    SAMPLE,
    RULES,
    "/_control/stats",
    "/_control/rate",
    "/_control/faults",
    "/_control/faults/f",
    "/_control/reset",
    "/_control/ledger",
    "/_control/ledger/flush",
    "/",
    "/2/tweets",
    "/_control/",
]
PARAM_NAMES = [
    "backfill_minutes",
    "since_id",
    "stall_warnings",
    "tweet.fields",
    "expansions",
    "ids",
    "dry_run",
    "delete_all",
    "max_results",
]
JSON_KEYS = [
    "add",
    "delete",
    "ids",
    "value",
    "tag",
    "type",
    "name",
    "attributes",
    "schedule",
    "probability",
    "kind",
    "rate",
    "points",
    "at",
    "duration",
]
# Every fault type but ``down``: it closes the listener, so the example after it could not
# connect at all (by design, not a bug). http_error answers streams with 5xx by design, so
# faults are reset after every example.
FAULT_TYPES = [
    "latency",
    "bandwidth",
    "slicer",
    "limit_data",
    "timeout",
    "reset_peer",
    "slow_close",
    "http_error",
    "disconnect",
    "malformed",
    "duplicate",
    "reorder",
]
# Headers that frame the message: lying in them makes the *client* hang or fail, which
# tests requests, not the server. The raw-socket tests above cover them.
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}
FRAMING |= {"te", "trailer", "keep-alive", "authorization", "proxy-authorization"}

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    printable,
    st.sampled_from(["true", "1", "-1", "9", "abc", "", "constant", "latency"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(JSON_KEYS) | printable, inner, max_size=4)
    ),
    max_leaves=12,
)
fault_bodies = st.fixed_dictionaries(
    {"type": st.sampled_from(FAULT_TYPES)},
    optional={
        "name": printable,
        "probability": scalars,
        "attributes": st.dictionaries(printable, scalars, max_size=2),
        "schedule": st.dictionaries(
            st.sampled_from(["at", "duration", "every", "every_messages"]), scalars, max_size=2
        ),
    },
)
rule_bodies = st.fixed_dictionaries(
    {"add": st.lists(st.dictionaries(st.sampled_from(["value", "tag"]), scalars), max_size=3)}
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    fault_bodies.map(lambda v: json.dumps(v).encode()),
    rule_bodies.map(lambda v: json.dumps(v).encode()),
)
segment = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=12)
# Branches are drawn about evenly, so repeating one weights it: most requests should get
# past the parser and the auth check to the routes' own validation.
known_paths = st.sampled_from(KNOWN_PATHS)
paths = st.one_of(
    known_paths,
    known_paths,
    known_paths,
    st.builds(lambda p, s: p.rstrip("/") + "/" + quote(s, safe=""), known_paths, segment),
)
param_values = st.sampled_from(["true", "false", "1", "5", "9", "0", "-1", "abc", "", "1,2"])
queries = st.one_of(
    st.just(""),
    st.just(""),
    st.lists(st.tuples(st.sampled_from(PARAM_NAMES), param_values), max_size=3).map(urlencode),
    st.lists(
        st.tuples(st.sampled_from(PARAM_NAMES) | segment, scalars.map(str) | segment),
        max_size=4,
    ).map(urlencode),
)
header_names = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=20)
header_values = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60)
extra_headers = st.dictionaries(
    header_names.filter(lambda n: n.lower() not in FRAMING), header_values, max_size=4
)
# aiohttp's parser (llhttp) refuses methods it does not know with a 400: a few suffice.
methods = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "FOO"]
)
ENDPOINTS = [
    ("GET", SEARCH),
    ("GET", SAMPLE),
    ("GET", RULES),
    ("POST", RULES),
    ("GET", "/_control/stats"),
    ("GET", "/_control/rate"),
    ("PUT", "/_control/rate"),
    ("GET", "/_control/faults"),
    ("POST", "/_control/faults"),
    ("GET", "/_control/faults/f"),
    ("DELETE", "/_control/faults/f"),
    ("POST", "/_control/reset"),
    ("POST", "/_control/ledger/flush"),
    ("GET", "/_control/ledger"),
]
# Two thirds of the requests aim at a real endpoint with its method (so they reach its
# own validation), the rest are any method on any path.
targets = st.one_of(
    st.sampled_from(ENDPOINTS), st.sampled_from(ENDPOINTS), st.tuples(methods, paths)
)
auths = st.sampled_from(["valid", "valid", "valid", "none", "wrong", "basic", "bearer-empty"])


@pytest.mark.fuzz
@settings(
    max_examples=examples(100),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    target=targets,
    query=queries,
    headers=extra_headers,
    auth=auths,
    body=bodies,
)
def test_random_requests_get_2xx_or_4xx_problems_and_the_server_stays_up(
    fuzz_server, target, query, headers, auth, body
):
    """Whatever the request, the answer is 2xx or a 4xx JSON problem; streams opened with a
    valid token are closed at once (they are infinite). The server survives it all."""
    server = fuzz_server
    method, path = target
    headers = dict(headers)
    headers["Authorization"] = {
        "valid": f"Bearer {server.token}",
        "none": "",
        "wrong": "Bearer nope",
        "basic": f"Basic {server.token}",
        "bearer-empty": "Bearer ",
    }[auth]
    if auth == "none":
        del headers["Authorization"]
    url = server.url + path + (f"?{query}" if query else "")
    with requests.request(
        method, url, headers=headers, data=body, stream=True, timeout=10
    ) as response:
        status = response.status_code
        is_stream = status == 200 and response.headers.get("Transfer-Encoding") == "chunked"
        if not is_stream:
            response.content  # noqa: B018  (read the whole answer)
    event(f"status {status}")  # the spread shows in --hypothesis-show-statistics
    assert 200 <= status < 300 or 400 <= status < 500, describe(response)
    if status >= 400 and method != "HEAD":
        assert_problem(response)
    if status < 300 and auth == "valid" and path.startswith(("/_control/faults", "/_control/rate")):
        server.control("POST", "reset")
        server.control("PUT", "rate", 20)


def test_fuzzed_server_still_answers(fuzz_server):
    """After the property test (same module-scoped server): alive, serving, streaming."""
    assert fuzz_server.process.popen.poll() is None
    stats = fuzz_server.control("GET", "stats")
    assert stats["faults"] == []
    deadline = time.monotonic() + 5
    while True:  # the last fuzzed stream may still be closing on the server's side
        with requests.get(
            fuzz_server.stream_url, headers=fuzz_server.headers, stream=True, timeout=10
        ) as response:
            if response.status_code == 200:
                break
            assert_problem(response, 429)
        assert time.monotonic() < deadline
        time.sleep(0.1)
