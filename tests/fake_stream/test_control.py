"""The control API under ``/_control/`` (Toxiproxy-style) against a live server: stats,
the rate profile (and the rate a client then really receives), faults, reset, ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from harness.run.services import StreamServerProcess
from tests.fake_stream._clients import assert_problem

TWEPOCH = 1288834974657  # from the reference, not from the server


def call(server: StreamServerProcess, method: str, path: str, body: Any = None, **kw: Any):
    """A raw control request (``server.control`` raises on errors; here we check them)."""
    return requests.request(
        method, f"{server.url}/_control/{path}", json=body, headers=server.headers, timeout=10, **kw
    )


def wait_no_connections(server: StreamServerProcess) -> None:
    deadline = time.monotonic() + 5  # the server notices a close within a ~50 ms tick
    while server.control("GET", "stats")["connections"]:
        assert time.monotonic() < deadline, "the server did not see the client close"
        time.sleep(0.05)


def tweet_lines(response: requests.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines(chunk_size=4096, delimiter=b"\r\n"):
        if line:
            yield json.loads(line)


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """One server for the fault-definition tests (no stream is opened on it)."""
    ledger = tmp_path_factory.mktemp("control") / "ledger.sqlite"
    with StreamServerProcess(
        ledger, ["--rate", "50", "--seed", "6"], token="control-token"
    ) as server:
        yield server


@pytest.fixture
def clean(control_server: StreamServerProcess) -> StreamServerProcess:
    control_server.control("POST", "reset")
    return control_server


# ---------------------------------------------------------------------------------------
# stats


def test_stats_follow_the_clock_and_the_open_connection(start_server):
    """stats: created grows with stream time at the configured rate; an open stream is
    listed with its progress (tweets_sent at least what the client parsed), and is gone
    once the client closes."""
    server = start_server("--rate", "1000", "--seed", "1")
    first = server.control("GET", "stats")
    time.sleep(0.3)
    second = server.control("GET", "stats")
    assert second["rate"] == 1000
    assert second["stream_time"] > first["stream_time"]
    # Uniform 1,000/s is one tweet per millisecond: counts follow stream time. "created"
    # is as of the generator's last 5 ms tick, which lags more on a loaded machine: allow
    # 150 ms either way (0.3 s of growth is 300 tweets).
    grown = second["created"] - first["created"]
    elapsed_ms = (second["stream_time"] - first["stream_time"]) * 1000
    assert abs(grown - elapsed_ms) <= 150
    assert first["connections"] == []
    with requests.get(server.stream_url, headers=server.headers, stream=True, timeout=10) as r:
        # Keep the line iterator alive: dropping it mid-stream makes urllib3 close the
        # connection (and the server would rightly list none).
        lines = tweet_lines(r)
        parsed = sum(1 for _ in zip(range(500), lines, strict=False))
        (conn,) = server.control("GET", "stats")["connections"]
    assert conn["tweets_sent"] >= parsed
    assert conn["bytes_written"] > 500 * 300  # realistic tweets are hundreds of bytes
    assert conn["backlog"] >= 0
    wait_no_connections(server)


# ---------------------------------------------------------------------------------------
# rate


def test_put_rate_changes_the_rate_the_client_receives(start_server):
    """PUT /_control/rate takes effect now: a client reading the stream sees 200 tweets/s
    before and 2,000/s after, counted from its tweets' own id timestamps."""
    server = start_server("--rate", "200", "--seed", "2")
    got = server.control("GET", "rate")
    assert got["rate_now"] == 200
    assert got["profile"] == [{"start": 0.0, "rate": 200.0, "poisson": False}]
    ms: list[int] = []
    change_ms = None
    with requests.get(server.stream_url, headers=server.headers, stream=True, timeout=10) as r:
        started = time.monotonic()
        for message in tweet_lines(r):
            ms.append((int(message["data"]["id"]) >> 22) + TWEPOCH)
            if change_ms is None and time.monotonic() - started > 0.8:
                answer = server.control("PUT", "rate", {"kind": "constant", "rate": 2000})
                old, new = answer["profile"]
                assert (old["rate"], new["rate"]) == (200, 2000)
                # Where the new segment starts, as a UNIX ms (the server's own record).
                change_ms = server.info["t0_ms"] + round(new["start"] * 1000)
            if change_ms is not None and ms[-1] >= change_ms + 800:
                break
    assert change_ms is not None
    assert server.control("GET", "rate")["rate_now"] == 2000
    times = np.array(ms)
    assert change_ms - ms[0] >= 500  # half a second of the old rate was read
    before = np.count_nonzero((times >= ms[0]) & (times < ms[0] + 500))
    after = np.count_nonzero((times >= change_ms + 300) & (times < change_ms + 800))
    # Uniform arrivals are exact per millisecond: 100 and 1,000 per 500 ms (+/- an edge).
    assert 98 <= before <= 102
    assert 990 <= after <= 1010


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("fast", "rate profile 'fast'"),
        ({"kind": "warp"}, "rate profile kind"),
        (-5, "rate profile rate"),
        ({"kind": "constant"}, "rate profile (constant) rate"),
        ({"kind": "constant", "rate": "x"}, "rate profile rate"),
        ({"kind": "constant", "rate": 10, "speed": 1}, "rate profile (constant) speed"),
        ([1, 2], "rate profile"),
    ],
)
def test_bad_rate_profiles_are_400_naming_the_field(clean, body, field):
    """A bad profile is a 400 problem whose detail names what is wrong; the rate stays."""
    before = clean.control("GET", "rate")
    problem = assert_problem(call(clean, "PUT", "rate", body), 400)
    assert problem["detail"].startswith(field)
    assert clean.control("GET", "rate")["profile"] == before["profile"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "piecewise", "points": [[0, 1], [1e300, 2]]},
        {"kind": "burst", "rate": 1, "factor": 2, "at": 0, "duration": 1e300},
    ],
)
def test_huge_profile_times_are_400_not_500(clean, body):
    """Times beyond any stream are a bad request, not an internal error (they overflowed
    int64 in RateProfile and answered 500 until rates.py bounded segment starts)."""
    assert_problem(call(clean, "PUT", "rate", body), 400)


def test_a_small_profile_that_expands_past_the_bound_is_400(clean):
    """108 bytes of periodic burst once expanded to 200,000 segments (1.4 s of blocked
    event loop, a 12.9 MB answer): now it is refused, naming ``every``, and the rate stays."""
    before = clean.control("GET", "rate")["profile"]
    body = {"kind": "burst", "rate": 1, "factor": 2, "at": 0, "duration": 0.1, "every": 0.432}
    problem = assert_problem(call(clean, "PUT", "rate", body), 400)
    assert problem["detail"].startswith("rate profile every")
    assert clean.control("GET", "rate")["profile"] == before


# ---------------------------------------------------------------------------------------
# faults


def test_fault_add_list_get_delete(clean):
    """POST a fault (201, defaults filled in, ``at`` = now), see it in the list and by
    name, 409 on the same name again, DELETE it, then 404 for it."""
    definition = {"type": "latency", "name": "lag", "attributes": {"latency": 0.01}}
    now = clean.control("GET", "stats")["stream_time"]
    added = call(clean, "POST", "faults", definition)
    assert added.status_code == 201
    spec = added.json()
    assert spec["name"] == "lag"
    assert spec["type"] == "latency"
    assert spec["probability"] == 1.0
    assert spec["attributes"] == {"latency": 0.01, "jitter": 0.0}
    assert now <= spec["schedule"]["at"] <= now + 5
    assert spec["schedule"]["duration"] is None
    assert clean.control("GET", "faults") == [spec]
    assert clean.control("GET", "faults/lag") == spec
    assert clean.control("GET", "stats")["faults"] == [spec]

    conflict = assert_problem(
        call(clean, "POST", "faults", {"type": "duplicate", "name": "lag"}), 409
    )
    assert "lag" in conflict["detail"]
    assert clean.control("GET", "faults/lag") == spec  # the first one is untouched

    assert clean.control("DELETE", "faults/lag") == spec
    assert clean.control("GET", "faults") == []
    assert_problem(call(clean, "GET", "faults/lag"), 404)
    assert_problem(call(clean, "DELETE", "faults/lag"), 404)
    # Both changes are in the ledger's events.
    events = clean.control("GET", "ledger")["events"]
    assert [e["kind"] for e in events if e["name"] == "lag"] == ["fault_added", "fault_removed"]


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"type": "warp-drive"}, "type"),
        ({"name": "no-type"}, "type"),
        ({"type": "latency", "attributes": {"latency": "fast"}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"latency": True}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"lag": 1}}, "attributes.lag"),
        ({"type": "latency", "attributes": {"latency": -1}}, "attributes.latency"),
        ({"type": "latency", "attributes": [1]}, "attributes"),
        ({"type": "reorder", "attributes": {"window": 1}}, "attributes.window"),
        ({"type": "http_error", "attributes": {"status": 404}}, "attributes.status"),
        ({"type": "malformed", "attributes": {"mode": "explode"}}, "attributes.mode"),
        ({"type": "latency", "schedule": {"duration": -1}}, "schedule.duration"),
        ({"type": "latency", "schedule": {"at": -1}}, "schedule.at"),
        ({"type": "latency", "schedule": {"at": "soon"}}, "schedule.at"),
        ({"type": "latency", "schedule": {"every": 5}}, "schedule.every"),
        ({"type": "latency", "schedule": {"every": 1, "duration": 2}}, "schedule.every"),
        ({"type": "latency", "schedule": {"every_messages": 0}}, "schedule.every_messages"),
        ({"type": "latency", "schedule": {"when": 1}}, "schedule.when"),
        ({"type": "latency", "schedule": "soon"}, "schedule"),
        ({"type": "latency", "probability": 2}, "probability"),
        ({"type": "latency", "probability": "1"}, "probability"),
        ({"type": "latency", "name": ""}, "name"),
        ({"type": "latency", "name": 5}, "name"),
        ({"type": "latency", "colour": "red"}, "colour"),
        ([{"type": "latency"}], "fault"),
        # Finite but huge: 1e308 KB/s overflowed to inf and raised out of a stream's writer
        # (the token stayed "connected" until restart); times and counts are bounded too.
        ({"type": "bandwidth", "attributes": {"rate": 1e308}}, "attributes.rate"),
        ({"type": "latency", "attributes": {"jitter": 1e300}}, "attributes.jitter"),
        ({"type": "latency", "schedule": {"at": 1e300}}, "schedule.at"),
        ({"type": "latency", "schedule": {"duration": 1e300}}, "schedule.duration"),
        ({"type": "limit_data", "attributes": {"bytes": 2**60}}, "attributes.bytes"),
        ({"type": "duplicate", "schedule": {"every_messages": 2**60}}, "schedule.every_messages"),
    ],
)
def test_invalid_fault_is_400_naming_the_bad_field(clean, definition, field):
    """Every invalid definition is refused with 400 whose detail starts with the field at
    fault, and nothing is added."""
    problem = assert_problem(call(clean, "POST", "faults", definition), 400)
    assert problem["detail"].startswith(f"{field}:") or problem["detail"].startswith(f"{field} "), (
        problem["detail"]
    )
    assert clean.control("GET", "faults") == []


def test_unknown_control_paths_and_methods(clean):
    """Unknown fault: 404; unknown control path: 404; a known path with the wrong method:
    405 with Allow. All JSON problems."""
    assert_problem(call(clean, "GET", "faults/nope"), 404)
    assert_problem(call(clean, "DELETE", "faults/nope"), 404)
    assert_problem(call(clean, "GET", "nope"), 404)
    assert_problem(call(clean, "POST", "ledger/rewind"), 404)
    not_allowed = call(clean, "DELETE", "stats")
    assert_problem(not_allowed, 405)
    assert "GET" in not_allowed.headers["Allow"]


def test_reset_removes_every_fault(start_server):
    """POST /_control/reset removes all faults (and says which); a stream then flows."""
    server = start_server("--rate", "300")
    for name in ("one", "two"):
        server.control("POST", "faults", {"type": "http_error", "name": name})
    with requests.get(server.stream_url, headers=server.headers, timeout=10) as refused:
        assert_problem(refused, 503)  # the faults are really active
    answer = server.control("POST", "reset")
    assert sorted(f["name"] for f in answer["removed"]) == ["one", "two"]
    assert server.control("GET", "faults") == []
    assert server.control("POST", "reset") == {"removed": []}
    with requests.get(server.stream_url, headers=server.headers, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert next(tweet_lines(r))["data"]["id"]


# ---------------------------------------------------------------------------------------
# ledger


def test_ledger_flush_and_get_agree_with_the_file(start_server):
    """POST ledger/flush writes the buffers (and says where); GET ledger returns what
    LedgerReader reads from that file: same created total, connections, deliveries and
    drops. What the client parsed is among the tweets delivered to it."""
    server = start_server("--rate", "500", "--seed", "7")
    parsed: list[int] = []
    with requests.get(server.stream_url, headers=server.headers, stream=True, timeout=10) as r:
        for message in tweet_lines(r):
            parsed.append(int(message["data"]["id"]))
            if len(parsed) == 300:
                break
    wait_no_connections(server)
    server.control("PUT", "rate", 0)  # freeze the ledger: nothing more is created
    time.sleep(0.1)
    flushed = server.control("POST", "ledger/flush")
    assert flushed["path"] == str(server.ledger)
    ledger = server.control("GET", "ledger")

    reader = server.ledger_reader()
    assert flushed["created"] == ledger["created"] == reader.created_total
    assert ledger["meta"]["seed"] == 7
    assert ledger["connections"] == reader.connections()
    assert ledger["deliveries"] == [
        {"conn_id": d.conn_id, "seq": d.seq, "first": d.first, "stop": d.stop, "status": d.status}
        for d in reader.deliveries()
    ]
    assert ledger["drops"] == [
        {
            "conn_id": d.conn_id,
            "first": d.first,
            "stop": d.stop,
            "reason": d.reason,
            "stage": d.stage,
        }
        for d in reader.drops()
    ]
    assert len(ledger["events"]) == len(reader.events())

    (conn,) = ledger["connections"]
    assert conn["end_reason"] == "client_closed"
    sent = np.concatenate([np.arange(d.first, d.stop) for d in reader.deliveries(conn["conn_id"])])
    assert set(parsed) <= set(reader.ids_of(sent).tolist())
    # Before the client connected nobody was there: those tweets are no_consumer drops.
    assert any(d["reason"] == "no_consumer" and d["conn_id"] is None for d in ledger["drops"])
