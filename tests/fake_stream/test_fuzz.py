"""Hostile HTTP at one real server while a consumer reads its stream (issue 14).

Hypothesis builds requests in seven families: auth headers, methods and paths, query
strings, rules bodies, rate bodies, fault bodies and raw bytes on a socket. Whatever comes,
every answer is below 500, every error is a JSON problem, and the server stays up. A
consumer reads the sample stream throughout, reconnecting whenever a fuzzed fault ends its
connection; at the end its count must equal the ledger's for each of its connections, and
its token must not be left stuck.

Each test draws ``tests.fuzz.examples(30)`` examples of at least one request each (what a
request changed, faults or the rate, is put back by requests that are not counted):
``nox -s fuzz`` (2,000 each) sends over 14,000. The total is printed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import string
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fake_stream.faults import registered
from harness.run.services import StreamServerProcess
from harness.run.soak import Consumer, LedgerCheck
from tests.fake_stream._clients import assert_problem, describe
from tests.fuzz import examples

pytestmark = pytest.mark.fuzz

SEARCH = "/2/tweets/search/stream"
SAMPLE = "/2/tweets/sample/stream"
RULES = "/2/tweets/search/stream/rules"
RATE = 300  # tweets/s: enough for every fuzzed fault to meet a write
SECRET = "4242"  # in a file a rate profile names: its rows must never come back


@dataclass
class Fuzzed:
    """The server under fire, its consumer, and how many requests were sent."""

    server: StreamServerProcess
    consumer: Consumer
    secret: Path
    sent: int = 0


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Fuzzed]:
    folder = tmp_path_factory.mktemp("fuzz")
    secret = folder / "secret.csv"
    secret.write_text(f"0,{SECRET}\n")
    args = ["--rate", str(RATE), "--seed", "5", "--connect-limit", "0", "--rules-limit", "0"]
    server = StreamServerProcess(folder / "ledger.sqlite", args)
    consumer = Consumer(server.url + SAMPLE, server.token)
    consumer.start()
    state = Fuzzed(server, consumer, secret)
    try:
        yield state
    finally:
        consumer.finishing.set()
        server.stop()
        consumer.finish(timeout=30)
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\ntest_fuzz: {state.sent:,} fuzzed requests sent")


def fuzz_settings(default: int = 30) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: ``send``'s default Authorization, replaced by the server's own bearer token (text no
#: strategy here generates: fuzzed header values have no spaces; one was once "valid").
VALID = "Bearer (the server's token)"


def send(
    f: Fuzzed,
    method: str,
    path: str,
    query: str = "",
    body: bytes | None = None,
    auth: str | None = VALID,
) -> requests.Response | None:
    """One fuzzed request; the answer must be below 500 and, if an error, a JSON problem.
    None: the client library refused to send it (e.g. a header value it deems invalid)."""
    headers = {} if auth is None else {"Authorization": auth}
    if auth == VALID:
        headers["Authorization"] = f"Bearer {f.server.token}"
    url = f.server.url + path + (f"?{query}" if query else "")
    try:
        prepared = requests.Request(method, url, headers=headers, data=body).prepare()
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
        return None  # the client refused to build it: nothing reaches the server
    f.sent += 1
    with (
        requests.Session() as session,
        session.send(prepared, stream=True, timeout=15, allow_redirects=False) as response,
    ):
        streaming = response.status_code == 200 and "chunked" in response.headers.get(
            "Transfer-Encoding", ""
        )
        if not streaming:  # a stream is endless: its headers are the answer
            response.content  # noqa: B018
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, describe(response)
    if response.status_code >= 400 and method != "HEAD":
        assert_problem(response)
    elif not streaming and method != "HEAD" and response.status_code != 204:
        response.json()  # a success is JSON too
    assert f.server.process.alive(), "the server died"
    return response


def put_back(f: Fuzzed) -> None:
    """Undo what a fuzzed request may have changed: no faults, the starting rate."""
    f.server.control("POST", "reset")
    f.server.control("PUT", "rate", RATE)


def undo(f: Fuzzed, method: str, response: requests.Response | None) -> None:
    """:func:`put_back` after a request that was accepted and could change something."""
    if response is not None and response.ok and method.upper() not in ("GET", "HEAD", "OPTIONS"):
        put_back(f)


# --- Strategies -----------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", SEARCH), ("GET", SAMPLE), ("GET", RULES), ("POST", RULES),
    ("GET", "/_control/stats"), ("GET", "/_control/rate"), ("PUT", "/_control/rate"),
    ("GET", "/_control/faults"), ("POST", "/_control/faults"), ("GET", "/_control/faults/x"),
    ("DELETE", "/_control/faults/x"), ("POST", "/_control/reset"),
    ("POST", "/_control/keepalive"), ("POST", "/_control/ledger/flush"),
]  # fmt: skip
endpoints = st.sampled_from(ENDPOINTS)
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
any_text = st.text(max_size=30)
odd_numbers = st.sampled_from(
    [0, -1, 1, 0.5, -0.0, 1e308, -1e308, 5e-324, 2**31, 2**53 + 1, 2**63, 2**64, 10**30]
)
numbers = odd_numbers | st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, any_text, st.sampled_from(["", "1", "true", "NaN"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ascii_text, inner, max_size=4),
    max_leaves=15,
)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# Bodies no JSON library would write: nesting past any limit, non-finite numbers, bad UTF-8.
weird_bodies = st.one_of(
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b'{"rate": NaN}', b"1e400", b"\xff\xfe"]),
    st.binary(max_size=200),
    st.integers(60_000, 70_000).map(lambda n: b'{"add": [' + b" " * n + b"]}"),
)
# Valid rates stay low whatever else is drawn: a fuzzed valid rate runs until put back.
rates = st.floats(0, 2000) | st.sampled_from([-1, 1e7 + 1, 1e308, "100", None, True, []])
times = st.floats(0, 30) | odd_numbers | st.sampled_from(["1", None, [], -5])


rule_specs = st.fixed_dictionaries(
    {"value": st.text(max_size=1100) | scalars},
    optional={"tag": any_text | scalars, "extra": scalars},
)


@st.composite
def rules_bodies(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["add", "delete", "both", "json", "weird"]))
    if shape == "json":
        return _json(draw(json_values))
    if shape == "weird":
        return draw(weird_bodies)
    body: dict[str, Any] = {}
    if shape in ("add", "both"):
        body["add"] = draw(st.lists(rule_specs | json_values, max_size=4))
    if shape in ("delete", "both"):
        ids = st.lists(st.text(string.digits, max_size=20) | scalars, max_size=4)
        body["delete"] = draw(st.fixed_dictionaries({"ids": ids}) | json_values)
    return _json(body)


@st.composite
def rate_specs(draw: st.DrawFn, secret: str) -> Any:
    kind = draw(st.sampled_from(["constant", "poisson", "burst", "piecewise", "file", "other"]))
    if kind in ("constant", "poisson"):
        spec: Any = {"kind": kind, "rate": draw(rates)}
    elif kind == "burst":
        spec = {"kind": "burst", "rate": draw(rates), "factor": draw(st.floats(0, 5) | numbers)}
        spec |= {"at": draw(times), "duration": draw(times), "every": draw(times | st.none())}
        spec |= draw(st.fixed_dictionaries({}, optional={"horizon": times}))
    elif kind == "piecewise":
        points = st.lists(st.tuples(times, rates).map(list) | json_values, max_size=5)
        spec = {"kind": "piecewise", "points": draw(points)}
    elif kind == "file":  # must never be read, however it is wrapped
        path = draw(st.sampled_from([secret, "/etc/passwd", "/nonexistent", "../x.csv"]))
        spec = {"kind": "piecewise", "file": path}
    else:
        spec = draw(json_values | rates | st.sampled_from(["record-2013", "5", "{}"]))
    if isinstance(spec, dict) and draw(st.booleans()):
        spec[draw(st.sampled_from(["arrivals", "extra", "kind"]))] = draw(scalars)
    return json.dumps(spec) if draw(st.integers(0, 3)) == 0 else spec  # a JSON string body


# Every fault type but ``down``: it closes the listener, so the next request could not
# connect (by design). Attributes come from each fault's own dataclass fields and hints.
FAULT_HINTS = {
    name: {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
    for name, cls in registered().items()
    if name != "down"
}


def _attribute(hint: Any) -> st.SearchStrategy[Any]:
    """Values a field of type ``hint`` accepts, edges included (0, tiny, huge)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return st.sampled_from(args)
    if type(None) in args:
        return st.none() | _attribute(next(a for a in args if a is not type(None)))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(1, 300_000) | st.sampled_from([2**31, 2**62])
    return st.floats(0, 3) | st.sampled_from([0.0, 1e-9, 1e6, 1e308])


@st.composite
def valid_faults(draw: st.DrawFn) -> dict[str, Any]:
    """Definitions meant to be accepted: they act on the consumer's stream at once."""
    kind = draw(st.sampled_from(sorted(FAULT_HINTS)))
    hints = FAULT_HINTS[kind]
    attributes = st.fixed_dictionaries({}, optional={k: _attribute(h) for k, h in hints.items()})
    schedule = st.fixed_dictionaries(
        {}, optional={"duration": st.floats(0.05, 1), "every_messages": st.integers(1, 20)}
    )
    optional = {"attributes": attributes, "schedule": schedule, "probability": st.floats(0, 1)}
    return draw(st.fixed_dictionaries({"type": st.just(kind)}, optional=optional))


def mostly(likely: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``likely`` three times in four: enough definitions must be valid to reach a stream."""
    return st.sampled_from([likely, likely, likely, odd]).flatmap(lambda chosen: chosen)


plausible = st.one_of(
    st.floats(0, 2), st.integers(1, 100_000), st.sampled_from(["truncate", "garbage", 429, 503])
)


@st.composite
def fault_bodies(draw: st.DrawFn) -> Any:
    """Half meant to be valid, half hostile: wrong types, odd numbers, unknown fields."""
    if draw(st.booleans()):
        return draw(valid_faults())
    kind = draw(mostly(st.sampled_from(sorted(FAULT_HINTS)), ascii_text))
    fields = list(FAULT_HINTS.get(kind, {}))
    values = mostly(plausible, json_values)
    attributes = st.fixed_dictionaries({}, optional={name: values for name in fields})
    schedule = st.fixed_dictionaries(
        {},
        optional={
            "at": times,
            "duration": mostly(st.floats(0.01, 1), times | st.none()),
            "every": times | st.none(),
            "every_messages": mostly(st.integers(1, 50), numbers | scalars),
        },
    )
    body = draw(
        st.fixed_dictionaries(
            {"type": st.just(kind)},
            optional={
                "name": mostly(ascii_text, scalars),
                "probability": mostly(st.floats(0, 1), scalars),
                "attributes": mostly(attributes, json_values),
                "schedule": mostly(schedule, json_values),
            },
        )
    )
    if draw(st.integers(0, 9)) == 0:
        body[draw(ascii_text)] = draw(scalars)  # a field no fault has
    return draw(json_values) if draw(st.integers(0, 9)) == 0 else body


# --- Families -------------------------------------------------------------------------------

token_variants = st.sampled_from(["token", "token ", "TOKEN", "tokenx", "xtoken", "", "tok"])


@fuzz_settings()
@given(
    endpoints,
    mostly(st.just("Bearer"), st.sampled_from(["bearer", "BEARER", "Basic", "Bearer:", "x"])),
    mostly(st.just(" "), st.sampled_from(["  ", "\t", ""])),
    mostly(st.just("token"), token_variants),
    mostly(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=255), max_size=60)),
)
def test_auth_headers(fuzzed: Fuzzed, endpoint, scheme, gap, variant, raw) -> None:
    """A missing header, a wrong scheme or a wrong token is a 401 problem on every endpoint
    (a value with bytes HTTP forbids, the parser's 400);
    ``Bearer <token>`` (the scheme in any case, RFC 9110) is never refused as unauthorised."""
    token = fuzzed.server.token
    tokens = {"token": token, "token ": token + " ", "TOKEN": token.swapcase()}
    tokens |= {"tokenx": token + "x", "xtoken": "x" + token, "": "", "tok": token[:-1]}
    header = raw if raw is not None else f"{scheme}{gap}{tokens[variant]}"
    method, path = endpoint
    response = send(fuzzed, method, path, auth=header or None)
    if response is None:
        return
    if raw is not None:
        if token not in raw:  # an unparseable header value is the parser's 400
            assert_problem(response, 401 if raw.isascii() and raw.isprintable() else None)
            assert response.status_code in (400, 401)
    elif scheme.lower() == "bearer" and gap == " " and variant in ("token", "token "):
        assert response.status_code != 401, describe(response)
    elif scheme.lower() != "bearer" or gap == "" or variant not in ("token", "token "):
        assert_problem(response, 401)
    undo(fuzzed, method, response)


methods = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get"]
) | st.text(string.ascii_uppercase + "-_!#", min_size=1, max_size=12)
segments = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF), max_size=15)
paths = st.one_of(
    endpoints.map(lambda e: e[1]),
    st.builds(lambda e, s: e[1] + "/" + s, endpoints, segments),
    st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/", "//", "/..", "/../_control/stats", "/%2e%2e/", "/_control/faults/%00"]),
    st.integers(100, 9000).map(lambda n: "/" + "a" * n),
)


@fuzz_settings()
@given(methods, paths, st.none() | st.binary(max_size=100))
def test_methods_and_paths(fuzzed: Fuzzed, method: str, path: str, body: bytes | None) -> None:
    """Any method on any path, with the right token: 2xx, or a 4xx problem (404, 405, ...)."""
    undo(fuzzed, method, send(fuzzed, method, path, body=body))


PARAMS = [
    "backfill_minutes", "since_id", "stall_warnings", "tweet.fields", "expansions", "ids",
    "max_results", "pagination_token", "dry_run", "delete_all",
]  # fmt: skip
param_values = st.one_of(
    st.sampled_from(["true", "false", "0", "1", "5", "6", "-1", "abc", "", "1,2", "%zz", "\uff11"]),
    st.integers(-(10**25), 10**25).map(str),
    segments,
)
queries = st.lists(st.tuples(st.sampled_from(PARAMS) | segments, param_values), max_size=5).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
) | st.text(max_size=60)


@fuzz_settings()
@given(endpoints, queries)
def test_query_strings(fuzzed: Fuzzed, endpoint, query: str) -> None:
    """Unknown, repeated, out-of-range and undecodable parameters: a 400 naming them, never
    a 5xx (a stream with valid ones may open: the client closes it)."""
    method, path = endpoint
    undo(fuzzed, method, send(fuzzed, method, path, query=query))


@fuzz_settings()
@given(st.sampled_from(["", "dry_run=true", "dry_run=false", "delete_all=true", "dry_run=1"]),
       rules_bodies())  # fmt: skip
def test_rules_bodies(fuzzed: Fuzzed, query: str, body: bytes) -> None:
    """Rule changes of every shape: X's answers or 4xx problems; rules added are deleted."""
    response = send(fuzzed, "POST", RULES, query=query, body=body)
    if response is not None and response.ok:  # keep the rules under X's cap
        requests.post(
            f"{fuzzed.server.url}{RULES}?delete_all=true", headers=fuzzed.server.headers, timeout=10
        )


@fuzz_settings()
@given(st.data())
def test_rate_bodies(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Rate profiles of every kind and none, as objects or JSON strings: a valid one is
    applied (then put back), anything else is a 400 problem; a ``file`` is never read."""
    spec = data.draw(rate_specs(str(fuzzed.secret)))
    body = _json(spec) if data.draw(st.integers(0, 7)) else data.draw(weird_bodies)
    response = send(fuzzed, "PUT", "/_control/rate", body=body)
    assert response is not None
    if b'"file' in body or b'\\"file' in body:
        assert response.status_code == 400, describe(response)
        assert SECRET not in response.text
        assert "root:" not in response.text  # /etc/passwd's first row
    if response.ok:
        put_back(fuzzed)


@fuzz_settings()
@given(fault_bodies(), st.booleans())
def test_fault_bodies(fuzzed: Fuzzed, definition: Any, raw_json: bool) -> None:
    """Fault definitions of every type with odd attributes and schedules: 201, or a 400/409
    problem. An accepted fault acts on the consumer's stream for a moment, then all go."""
    response = send(fuzzed, "POST", "/_control/faults", body=_json(definition))
    assert response is not None
    if response.ok:
        name = response.json()["name"]
        time.sleep(0.05)  # the consumer's connection meets it
        send(fuzzed, "GET", f"/_control/faults/{requests.utils.quote(name, safe='')}")
        put_back(fuzzed)


# --- Raw bytes ------------------------------------------------------------------------------

TEMPLATES = [
    b"GET /_control/stats HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n",
    b"GET " + SAMPLE.encode() + b" HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n",
    b"POST " + RULES.encode() + b"?dry_run=true HTTP/1.1\r\nHost: h\r\n"
    b"Authorization: Bearer {token}\r\nContent-Length: 30\r\n\r\n"
    b'{"add": [{"value": "cat"}]}   ',
    b"GET /_control/rate HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n",
]
edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace", "cut"]),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=8) | st.sampled_from([b"\r\n", b"\n", b"\x00", b":", b" "]),
    ),
    min_size=1,
    max_size=4,
)


def _edit(data: bytes, edit: tuple[str, float, bytes]) -> bytes:
    op, where, piece = edit
    at = int(where * len(data))
    if op == "insert":
        return data[:at] + piece + data[at:]
    if op == "delete":
        return data[:at] + data[at + len(piece) :]
    if op == "replace":
        return data[:at] + piece + data[at + len(piece) :]
    return data[:at]


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The complete responses at the start of ``raw``; a stream (chunked) is complete once
    its head is in: the rest is endless."""
    out = []
    while raw.startswith(b"HTTP/"):
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        if "chunked" in headers.get("transfer-encoding", ""):
            out.append((status, headers, b""))
            break
        size = int(headers.get("content-length", 0))
        if len(rest) < size:
            break
        out.append((status, headers, rest[:size]))
        raw = rest[size:]
    return out


def _exchange(address: tuple[str, int], data: bytes) -> tuple[bytes, bool]:
    """Send ``data``; read until an answer is complete or the server closes. After 0.3 s of
    silence (an incomplete request: the server waits for the rest) half-close, which ends
    the request. Returns what came and whether the server closed."""
    raw = b""
    with socket.create_connection(address, timeout=0.3) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _answers(raw):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2)
                continue
            except ConnectionResetError:
                return raw, True
            if not chunk:
                return raw, True
            raw += chunk
    return raw, False


@fuzz_settings()
@given(st.sampled_from(TEMPLATES), edits | st.just([]), st.binary(max_size=300))
def test_raw_bytes(fuzzed: Fuzzed, template: bytes, changes: list, noise: bytes) -> None:
    """Mangled requests on a socket (bytes inserted, deleted, cut; or noise alone): the
    server answers or closes within 10 s, every answer is below 500 and an error is a JSON
    problem."""
    data = template.replace(b"{token}", fuzzed.server.token.encode())
    for change in changes:
        data = _edit(data, change)
    data = data if changes or not noise else noise
    host, port = fuzzed.server.url.removeprefix("http://").split(":")
    fuzzed.sent += 1
    raw, closed = _exchange((host, int(port)), data)
    answers = _answers(raw)
    assert answers or closed, f"no answer, no close within 10 s after {data[:200]!r}: {raw!r}"
    event(f"status {answers[0][0]}" if answers else "closed without an answer")
    for status, headers, body in answers:
        assert status < 500, raw[:500]
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/problem+json"), raw
            assert json.loads(body)["status"] == status
    assert fuzzed.server.process.alive(), "the server died"
    put_back(fuzzed)


# --- After the fuzz ---------------------------------------------------------------------------


def test_after_the_fuzz_the_consumer_streams_and_matches_the_ledger(fuzzed: Fuzzed) -> None:
    """Run last (file order). The token is not stuck: the consumer is streaming again
    within 10 s; then the server stops cleanly and each consumer connection parsed exactly
    what the ledger says it delivered."""
    put_back(fuzzed)
    deadline = time.monotonic() + 10
    while True:
        last = fuzzed.consumer.connections[-1]
        if last.status == 200 and not last.ended and last.parsed:
            break
        assert time.monotonic() < deadline, [c.ended for c in fuzzed.consumer.connections[-5:]]
        time.sleep(0.2)
    fuzzed.consumer.finishing.set()
    assert fuzzed.server.stop() == 0
    fuzzed.consumer.finish(timeout=30)
    check = LedgerCheck(fuzzed.server.ledger, sole_client=False)  # fuzzed streams share it
    check.update(fuzzed.consumer.finished(), final=True)
    totals = check.totals()
    assert totals["compared"] >= 1
    assert totals["consumer_tweets"] > 0
    assert totals["mismatches"] == 0, check.mismatches[:5]
