"""Strict X: the stream held to X's v2 rules (``--strict-x``), X's access levels
(``--access-level``), redundant connections (``--stream-connections``), recovery
connections (``start_time``/``end_time``) and X's windows scaled (``--backfill-scale``).

Real servers on loopback, real clients; every check reads the bytes on the wire and the
ledger. Times and windows are computed here from the ids (X's Snowflake layout), not asked
of the server.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests

from fake_stream.access import parse_time
from fake_stream.config import server_config, validate_server_options
from tests.fake_stream._clients import Received, assert_problem, dechunk, read_with_requests

TWEPOCH = 1288834974657  # X's Snowflake epoch (the reference), not the server's constant
SEARCH = "/2/tweets/search/stream"
SAMPLE = "/2/tweets/sample/stream"
INVALID = "https://api.twitter.com/2/problems/invalid-request"
FORBIDDEN = "https://api.twitter.com/2/problems/client-forbidden"
#: X's filtered-stream parameters, as its "not one of" message lists them.
X_FILTERED = (
    "backfill_minutes,end_time,expansions,media.fields,place.fields,poll.fields,"
    "start_time,tweet.fields,user.fields"
)
T0_MS = 1_700_000_000_000  # a whole second: 2023-11-14T22:13:20Z


def ms_of(tweet_id: int) -> int:
    return (tweet_id >> 22) + TWEPOCH


def iso(ms: int, fraction: bool = True) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms % 1000:03d}Z" if fraction else "Z")


def get(server, path: str = SEARCH, token: str | None = None, **params: str):
    """Open a stream (headers read, body not yet)."""
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return requests.get(server.url + path, headers=headers, params=params, stream=True, timeout=10)


def lines_of(response: requests.Response, n: int) -> list[int]:
    """The ids of the next ``n`` tweets of an open stream (one iterator per response)."""
    if not hasattr(response, "_ids"):
        response._ids = response.iter_lines(chunk_size=4096, delimiter=b"\r\n")  # type: ignore[attr-defined]
    ids: list[int] = []
    for line in response._ids:  # type: ignore[attr-defined]
        if line.strip():
            ids.append(int(re.search(rb'"id":"(\d+)"', line).group(1)))  # type: ignore[union-attr]
            if len(ids) == n:
                break
    return ids


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def open_raw(server, query: str, small_buffer: bool = False) -> socket.socket:
    """A raw socket that has sent ``GET <stream>?<query>`` (``small_buffer``: a 4 KiB
    receive buffer, so a client that does not read holds the connection open)."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {SEARCH}?{query} HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {server.token}\r\n\r\n".encode()
    )
    return sock


def read_to_the_end(server, query: str, pause: float = 0.0) -> tuple[bytes, bytes, bool]:
    """GET a stream on a raw socket and read until the server closes it: (head, body,
    ended with the final chunk). ``pause``: seconds before reading, with a small receive
    buffer (the connection stays open meanwhile if the server's send buffer is small)."""
    with open_raw(server, query, small_buffer=bool(pause)) as sock:
        sock.settimeout(20)
        time.sleep(pause)
        raw = b""
        while data := sock.recv(1 << 16):
            raw += data
    return dechunk(raw)


# ---------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strict_x": "yes"}, "strict_x: expected true or false"),
        ({"access_level": "free"}, "access_level: expected one of pro, enterprise"),
        ({"stream_connections": 0}, "stream_connections: must be >= 1"),
        ({"stream_connections": 3}, "stream_connections: must be <= 2"),
        (
            {"access_level": "pro", "stream_connections": 2},
            "stream_connections: Pro access allows 1",
        ),
        ({"backfill_scale": 0}, "backfill_scale: must be >= 0.0001"),
        ({"backfill_scale": 2}, "backfill_scale: must be <= 1"),
        ({"backfill_scale": "nan"}, "backfill_scale: expected a finite number"),
        ({"strict_x": True, "retention": 10}, "retention: must be >= 300 s under strict_x"),
        (
            {"strict_x": True, "backfill_scale": 0.01, "retention": 2.5},
            "retention: must be >= 3 s under strict_x",
        ),
    ],
)
def test_bad_strict_x_options_raise_naming_the_option(options, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        validate_server_options(options)


def test_strict_x_options_reach_the_config():
    ok = validate_server_options(
        {"strict_x": True, "access_level": "enterprise", "stream_connections": "2"}
        | {"backfill_scale": "0.01", "retention": "3"}
    )
    config = server_config(ok)
    assert (config.strict_x, config.access_level, config.stream_connections) == (
        True,
        "enterprise",
        2,
    )
    assert config.backfill_scale == 0.01
    # Without strict_x a short retention stays allowed: replays are clamped and recorded.
    assert validate_server_options({"retention": 1})["retention"] == 1
    # Pro has no backfill: its retention need not cover one.
    assert validate_server_options({"strict_x": True, "access_level": "pro", "retention": 1})
    defaults = server_config({})
    assert (defaults.strict_x, defaults.access_level, defaults.stream_connections) == (
        False,
        "enterprise",
        1,
    )
    assert defaults.backfill_scale == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--access-level", "free"], "--access-level: expected one of pro, enterprise"),
        (["--access-level", "pro", "--stream-connections", "2"], "--stream-connections: Pro"),
        (["--backfill-scale", "0"], "--backfill-scale: must be >= 0.0001"),
        (["--strict-x", "--retention", "10"], "--retention: must be >= 300 s under strict_x"),
        (["--strict-x", "yes"], "--strict-x: expected true or false, got 'yes'"),
    ],
)
def test_bad_strict_x_options_exit_2_from_the_command_line(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "fake_stream", "serve", "--ledger", str(tmp_path / "l"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l").exists()


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2022-07-12T15:10:00Z", 1657638600000),  # X's example
        ("2022-07-12T15:10:00.250Z", 1657638600250),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T23:59:59.999Z", 1709251199999),
    ],
)
def test_recovery_times_are_iso_8601_utc(text, ms):
    assert parse_time(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2022-07-12T15:10:00",  # no Z
        "2022-07-12T15:10:00+00:00",
        "2022-07-12 15:10:00Z",
        "2022-07-12T15:10Z",
        "2022-07-12T15:10:00.5Z",
        "2022-02-30T00:00:00Z",
        "2022-13-01T00:00:00Z",
        "\uff12\uff1022-07-12T15:10:00Z",  # full-width digits
        "1657638600000",
        "",
    ],
)
def test_other_time_forms_are_refused(text):
    assert parse_time(text) is None


# ---------------------------------------------------------------------------------------
# strict_x: only X's parameters


def test_strict_x_refuses_our_parameters_with_xs_invalid_request(start_server):
    """since_id and stall_warnings are ours: under strict_x a 400 invalid-request naming
    them, in X's words; no connection is opened. X's own parameters still work, and so
    does the control API."""
    # "--strict-x True": how the harness passes a scenario's ``strict_x = true``.
    server = start_server("--rate", "200", "--strict-x", "True")
    for name, value in (("since_id", "1"), ("stall_warnings", "true")):
        with get(server, **{name: value}) as response:
            problem = assert_problem(response, 400)
        assert problem["title"] == "Invalid Request"
        assert problem["type"] == INVALID
        assert problem["detail"] == "One or more parameters to your request was invalid."
        assert problem["errors"] == [
            {
                "parameters": {name: [value]},
                "message": f"The query parameter [{name}] is not one of [{X_FILTERED}]",
            }
        ]
    # The sample stream has no recovery on X.
    with get(server, SAMPLE, start_time=iso(T0_MS)) as response:
        (error,) = assert_problem(response, 400)["errors"]
    assert error["parameters"] == {"start_time": [iso(T0_MS)]}
    assert server.control("GET", "stats")["connections"] == []
    with get(server, **{"tweet.fields": "created_at", "expansions": "author_id"}) as response:
        assert response.status_code == 200
        assert len(lines_of(response, 3)) == 3
    server.stop()
    books = server.ledger_reader()
    assert len(books.connections()) == 1
    assert books.meta["strict_x"] is True


def test_without_strict_x_since_id_and_stall_warnings_still_work(start_server):
    server = start_server("--rate", "500", "--seed", "2")
    with get(server) as first:
        ids = lines_of(first, 20)
    wait_for(lambda: not server.control("GET", "stats")["connections"])
    with get(server, since_id=str(ids[-1]), stall_warnings="true") as again:
        assert again.status_code == 200
        assert lines_of(again, 5)[0] > ids[-1]
    server.stop()
    meta = server.ledger_reader().meta
    assert (meta["strict_x"], meta["access_level"], meta["stream_connections"]) == (
        False,
        "enterprise",
        1,
    )
    assert (meta["backfill_scale"], meta["recovery_window"]) == (1.0, 86_400)


# ---------------------------------------------------------------------------------------
# Access levels


def test_pro_has_no_backfill_no_recovery_and_one_connection(start_server):
    server = start_server("--rate", "200", "--access-level", "pro", "--strict-x")
    for params in (
        {"backfill_minutes": "1"},
        {"start_time": iso(T0_MS)},
        {"end_time": iso(T0_MS)},
    ):
        with get(server, **params) as response:
            problem = assert_problem(response, 403)
        assert problem["title"] == "Forbidden"
        assert problem["type"] == FORBIDDEN
        assert "requires Enterprise access" in problem["detail"]
        assert "Pro access" in problem["detail"]
    first = get(server)
    try:
        assert first.status_code == 200
        lines_of(first, 3)
        with get(server) as second:
            assert assert_problem(second, 429)["connection_issue"] == "TooManyConnections"
    finally:
        first.close()
    server.stop()
    books = server.ledger_reader()
    (conn,) = books.connections()
    (refused,) = books.events("refused")
    assert refused["holder_conn"] == conn["conn_id"]
    assert books.meta["access_level"] == "pro"
    assert books.meta["strict_x"] is True  # the bare flag


# ---------------------------------------------------------------------------------------
# Redundant connections


def test_two_redundant_connections_get_the_same_tweets_and_a_third_is_429(start_server):
    """Enterprise, stream_connections 2: both connections carry every tweet from the
    second's connect on, in the same order; a third is refused naming the oldest holder;
    once one closes, a connect succeeds again."""
    server = start_server("--rate", "1000", "--seed", "8", "--stream-connections", "2")
    a, b = Received(), Received()
    readers = [
        threading.Thread(target=read_with_requests, args=(server.stream_url, server.token, r))
        for r in (a, b)
    ]
    readers[0].start()
    wait_for(lambda: len(server.control("GET", "stats")["connections"]) == 1)
    readers[1].start()
    wait_for(lambda: len(server.control("GET", "stats")["connections"]) == 2)
    with get(server) as third:
        assert assert_problem(third, 429)["connection_issue"] == "TooManyConnections"
    time.sleep(1.0)
    assert server.stop() == 0
    for reader in readers:
        reader.join(timeout=20)

    books = server.ledger_reader()
    first, second = books.connections()
    (refused,) = books.events("refused")
    assert refused["holder_conn"] == first["conn_id"]  # the oldest holder
    assert len(b.ids) > 500
    # Data through both: from b's first tweet on, a got exactly what b got.
    start = a.ids.index(b.ids[0])
    overlap = min(len(a.ids) - start, len(b.ids))
    assert a.ids[start : start + overlap] == b.ids[:overlap]
    assert overlap > 500
    # Each connection's ledger is exactly what its client parsed.
    for conn, got in ((first, a), (second, b)):
        acked = books.ids_of(books.delivered_indexes(conn["conn_id"])).tolist()
        assert Counter(acked) == Counter(got.ids)
        assert len(books.delivered_indexes(conn["conn_id"], status="unknown")) == 0


def test_a_freed_redundant_place_can_be_taken_again(start_server):
    server = start_server("--rate", "300", "--stream-connections", "2")
    one, two = get(server), get(server)
    try:
        assert (one.status_code, two.status_code) == (200, 200)
        lines_of(one, 2)
        lines_of(two, 2)
        one.close()
        wait_for(lambda: len(server.control("GET", "stats")["connections"]) == 1)
        with get(server) as three:
            assert three.status_code == 200
            assert len(lines_of(three, 2)) == 2
    finally:
        two.close()


# ---------------------------------------------------------------------------------------
# Backfill at a scale


def test_scaled_backfill_replays_exactly_the_last_0_6_s_before_the_connect(start_server):
    """--backfill-scale 0.01: backfill_minutes=1 reaches back 60 * 0.01 = 0.6 s of stream
    time. At a uniform 1,000/s that is exactly 600 tweets, every one created in the 600 ms
    before the connect, then the live ones."""
    server = start_server("--rate", "1000", "--seed", "9", "--backfill-scale", "0.01")
    time.sleep(1.5)
    asked_at = time.time() * 1000
    received = Received()
    read_with_requests(
        server.stream_url, server.token, received, {"backfill_minutes": "1"}, stop_after=900
    )
    server.stop()

    books = server.ledger_reader()
    (event,) = books.events("backfill")
    assert event["to_ms"] - event["from_ms"] == 600
    assert abs(event["to_ms"] - asked_at) < 2000  # the window ends at the connect
    created = books.created_ids().tolist()
    window = [i for i in created if event["from_ms"] <= ms_of(i) < event["to_ms"]]
    assert len(window) == 600
    assert received.ids[:600] == window  # oldest first, nothing before the window
    assert ms_of(created[created.index(window[0]) - 1]) < event["from_ms"]
    assert ms_of(received.ids[600]) >= event["to_ms"]  # then live
    assert received.ids == created[created.index(window[0]) :][:900]
    assert books.meta["backfill_scale"] == 0.01
    assert books.meta["recovery_window"] == pytest.approx(864)


def test_a_restart_longer_than_the_scaled_backfill_loses_tweets_a_shorter_one_does_not(
    start_server,
):
    """The experiment the scale is for: disconnected ~1 s, backfill_minutes=1 (0.6 s at
    0.01) leaves a gap; backfill_minutes=5 (3 s) covers it, with duplicates."""
    server = start_server("--rate", "1000", "--seed", "10", "--backfill-scale", "0.01")
    got = Received()
    read_with_requests(server.stream_url, server.token, got, stop_after=200)
    time.sleep(1.0)
    short = Received()
    read_with_requests(
        server.stream_url, server.token, short, {"backfill_minutes": "1"}, stop_after=200
    )
    time.sleep(1.0)
    long = Received()
    read_with_requests(
        server.stream_url, server.token, long, {"backfill_minutes": "5"}, stop_after=4000
    )
    server.stop()
    created = server.ledger_reader().created_ids().tolist()
    after_first = created.index(got.ids[-1]) + 1
    assert created.index(short.ids[0]) > after_first + 300  # a gap: more than 0.3 s lost
    assert created.index(long.ids[0]) <= created.index(short.ids[-1])  # overlap: no gap
    assert set(short.ids) & set(long.ids)  # the duplicates X warns of


# ---------------------------------------------------------------------------------------
# Recovery


def test_recovery_streams_exactly_start_to_end_then_ends_cleanly(start_server):
    """start_time/end_time: every tweet created in [start, end), oldest first, then the
    final chunk; the ledger records it as recovery_complete, and its deliveries are what
    the client parsed. Times are the ids' clock (a pinned t0 here)."""
    server = start_server(
        "--rate", "1000", "--seed", "11", "--t0-ms", str(T0_MS), "--backfill-scale", "0.01",
        "--send-buffer", "4096",
    )  # fmt: skip
    time.sleep(1.6)
    start, end = T0_MS + 1000, T0_MS + 1450
    query = f"start_time={iso(start, fraction=False)}&end_time={iso(end)}"
    # Read slowly: tweets are created while only the recovery is open.
    head, body, complete = read_to_the_end(server, query, pause=0.5)
    assert head.startswith(b"HTTP/1.1 200")
    assert complete  # ended with the final chunk: a clean end, not a cut
    ids = [int(m) for m in re.findall(rb'"data":\{"id":"(\d+)"', body)]
    assert body.count(b"\r\n") == len(ids)  # nothing but the tweets
    # A recovery ends on its own: no connection stays open.
    wait_for(lambda: not server.control("GET", "stats")["connections"])
    server.stop()

    books = server.ledger_reader()
    created = books.created_ids().tolist()
    expected = [i for i in created if start <= ms_of(i) < end]
    assert len(expected) == 450  # uniform 1,000/s
    assert ids == expected
    (conn,) = books.connections()
    assert conn["end_reason"] == "recovery_complete"
    assert books.ids_of(books.delivered_indexes(conn["conn_id"])).tolist() == ids
    assert len(books.delivered_indexes(status="unknown")) == 0
    (event,) = books.events("recovery")
    assert (event["start_ms"], event["end_ms"]) == (start, end)
    # Only a recovery was connected: every tweet created is recorded nobody's live.
    no_consumer = sum(len(d) for d in books.drops() if d.reason == "no_consumer")
    assert no_consumer == books.created_total


def test_recovery_without_end_time_runs_to_the_connect(start_server):
    server = start_server("--rate", "1000", "--seed", "12", "--t0-ms", str(T0_MS))
    time.sleep(1.2)
    _, body, complete = read_to_the_end(server, f"start_time={iso(T0_MS + 500)}")
    server.stop()
    assert complete
    ids = [int(m) for m in re.findall(rb'"data":\{"id":"(\d+)"', body)]
    books = server.ledger_reader()
    (event,) = books.events("recovery")
    created = books.created_ids().tolist()
    assert ids == [i for i in created if T0_MS + 500 <= ms_of(i) < event["end_ms"]]
    assert event["end_ms"] - T0_MS >= 1100  # "now": at least the time slept
    assert books.connections()[0]["end_reason"] == "recovery_complete"


def test_bad_recovery_requests_are_400_naming_the_parameter(start_server):
    """Window at --backfill-scale 0.0001: 8.64 s. A start older than that, an end in the
    future or not after the start, an end without a start, a time not in X's format, and
    backfill_minutes or since_id with a start: 400 invalid-request naming the parameter."""
    server = start_server("--rate", "100", "--t0-ms", str(T0_MS), "--backfill-scale", "0.0001")
    time.sleep(0.5)
    now = T0_MS + int(server.control("GET", "stats")["stream_time"] * 1000)
    cases = [
        ({"start_time": iso(now - 20_000)}, "start_time", "must be on or after"),
        ({"start_time": iso(T0_MS), "end_time": iso(now + 60_000)}, "end_time", "future"),
        ({"start_time": iso(T0_MS + 200), "end_time": iso(T0_MS + 200)}, "end_time", "after"),
        ({"start_time": iso(now + 60_000)}, "start_time", "must be in the past"),
        ({"end_time": iso(T0_MS)}, "end_time", "needs start_time"),
        ({"start_time": "yesterday"}, "start_time", "YYYY-MM-DDTHH:mm:ssZ"),
        ({"start_time": iso(T0_MS), "end_time": "2023-11-14"}, "end_time", "YYYY-MM-DD"),
        ({"start_time": iso(T0_MS), "backfill_minutes": "1"}, "backfill_minutes", "start_time"),
        ({"start_time": iso(T0_MS), "since_id": "1"}, "since_id", "start_time"),
    ]
    for params, name, words in cases:
        with get(server, **params) as response:
            problem = assert_problem(response, 400)
        assert problem["type"] == INVALID, params
        (error,) = [e for e in problem["errors"] if name in e["parameters"]]
        assert error["parameters"] == {name: [params[name]]}
        assert words in error["message"], (params, error)
    assert server.control("GET", "stats")["connections"] == []
    server.stop()
    assert server.ledger_reader().connections() == []


def test_two_recovery_jobs_apart_from_the_live_connection(start_server):
    """X's two concurrent recovery jobs: with one live stream open (stream_connections 1)
    two recoveries still connect; a third is 429, recorded with recovery true and the
    oldest job as holder. Clients that do not read keep their recovery open."""
    server = start_server(
        "--rate", "20000", "--seed", "13", "--send-buffer", "4096", "--queue-size", "0"
    )
    time.sleep(1.5)
    t0 = server.control("GET", "stats")["t0_ms"]
    live = get(server)
    jobs = []
    try:
        lines_of(live, 3)
        for _ in range(2):
            jobs.append(open_raw(server, f"start_time={iso(t0)}", small_buffer=True))
        wait_for(lambda: len(server.control("GET", "stats")["connections"]) == 3)
        with get(server, start_time=iso(t0)) as third:
            assert assert_problem(third, 429)["connection_issue"] == "TooManyConnections"
        stats = server.control("GET", "stats")["connections"]
        assert sorted(c["stop_index"] is None for c in stats) == [False, False, True]
    finally:
        live.close()
        for sock in jobs:
            sock.close()
    server.stop()
    books = server.ledger_reader()
    (refused,) = books.events("refused")
    recoveries = [e["conn_id"] for e in books.events("recovery")]
    assert refused["recovery"] is True
    assert refused["holder_conn"] == min(recoveries)
