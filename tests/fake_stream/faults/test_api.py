"""API faults (what X itself does wrong) against a live fake stream, seen by real clients.

http_error answers connects; disconnect, malformed, duplicate and reorder rewrite the
messages of the stream. Each test adds its fault at run time to one shared server, reads
with ``requests`` (stream=True + iter_lines, as tweepy) or ``httpx`` (async), and compares
what the client saw with the ledger: fault events, drops with reason ``fault:<name>``, and
the acknowledged deliveries as an ordered multiset. Schedules and probabilities are
checked here too (every_messages, probability 0, same seed => same firings).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests

from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess
from tests.fake_stream.faults.test_network import (
    RATE,
    Live,
    Read,
    acked_ids,
    drops_of,
    live_on,
    read_requests,
    shared_server_for,
    tweet_id,
    wait_idle,
)

TOKEN = "api-faults"

#: X's in-stream operational disconnect, byte for byte as the reference document
#: (shared/reference/x-api-filtered-stream.md) quotes it.
OPERATIONAL_DISCONNECT = (
    b'{"errors":[{"title":"operational-disconnect",'
    b'"disconnect_type":"UpstreamOperationalDisconnect",'
    b'"detail":"This stream has been disconnected upstream for operational reasons.",'
    b'"type":"https://api.twitter.com/2/problems/operational-disconnect"}]}'
)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    yield from shared_server_for(tmp_path_factory.mktemp("api"), TOKEN, seed=9)


@pytest.fixture
def live(shared_server: StreamServerProcess) -> Iterator[Live]:
    yield from live_on(shared_server)


def end_after(live: Live, lines: int) -> Callable[[Read], bool]:
    """A ``stop`` callback for read_requests: once ``lines`` lines were read, have the
    server end the stream with a one-shot disconnect fault named ``end``; the client then
    reads on until the stream ends (so it reads every byte the server sent)."""
    added: list[bool] = []

    def stop(read: Read) -> bool:
        if not added and len(read.ids) + len(read.other) >= lines:
            live.add({"type": "disconnect", "name": "end"})
            added.append(True)
        return False

    return stop


def index_of(reader: LedgerReader, ids: list[int]) -> list[int]:
    """Tweet indexes of ids, via the ledger's created table (independent of deliveries)."""
    created = reader.created_ids()
    positions = np.searchsorted(created, ids)
    assert (created[positions] == ids).all()
    return positions.tolist()


# http_error -----------------------------------------------------------------------------


async def _connect_httpx(server: StreamServerProcess, lines: int) -> tuple[httpx.Response, list]:
    """Connect with httpx (async); read ``lines`` lines if the answer is a 200."""
    got: list[bytes] = []
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", server.stream_url, headers=server.headers) as response,
    ):
        if response.status_code == 200:
            async for line in response.aiter_lines():
                if line:
                    got.append(line.encode())
                if len(got) >= lines:
                    break
        else:
            await response.aread()
    return response, got


@pytest.mark.parametrize(
    ("status", "title"),
    [(429, "Too Many Requests"), (500, "Internal Server Error"), (503, "Service Unavailable")],
)
def test_http_error_answers_connects_with_a_problem(live: Live, status: int, title: str) -> None:
    """While http_error is set, a stream connect gets that status, a JSON problem body and
    X's x-rate-limit headers; once it is deleted the next connect streams tweets. The
    ledger logs the rejection under the connect's id, which never opens a connection."""
    live.add({"type": "http_error", "name": "err", "attributes": {"status": status}})
    rejected, _ = asyncio.run(_connect_httpx(live.server, 0))
    live.server.control("DELETE", "faults/err")
    accepted, lines = asyncio.run(_connect_httpx(live.server, 20))

    assert rejected.status_code == status
    assert rejected.headers["content-type"].startswith("application/problem+json")
    assert rejected.json() == {
        "title": title,
        "detail": title,
        "type": "about:blank",
        "status": status,
    }
    limit = int(rejected.headers["x-rate-limit-limit"])
    remaining = int(rejected.headers["x-rate-limit-remaining"])
    assert 0 <= remaining < limit
    assert int(rejected.headers["x-rate-limit-reset"]) > time.time()
    # The rejected connect counted against the window: the next one has one less left.
    assert int(accepted.headers["x-rate-limit-remaining"]) == remaining - 1
    assert accepted.status_code == 200
    assert all(tweet_id(line) for line in lines)

    reader = live.ledger()
    (event,) = live.faults(reader, "err")
    assert (event["effect"], event["status"]) == ("rejected", status)
    (conn,) = live.connections(reader)
    assert conn["conn_id"] == event["conn_id"] + 1  # the rejected id has no connection row


def test_http_error_window_rejects_only_while_active(live: Live) -> None:
    """An http_error with a 0.6 s window: connects inside it get 503, the first connect
    after it streams (what a client's retry loop sees during a short outage)."""
    live.add({"type": "http_error", "name": "blip", "schedule": {"duration": 0.6}})
    added = time.monotonic()
    statuses = []
    while True:
        response = requests.get(
            live.server.stream_url, headers=live.server.headers, stream=True, timeout=5
        )
        with response:
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
        assert time.monotonic() - added < 5, "still rejected long after the window"
        time.sleep(0.1)
    accepted_after = time.monotonic() - added
    assert set(statuses[:-1]) == {503}
    assert len(statuses) >= 4  # ~6 tries at 0.1 s inside the window
    assert accepted_after >= 0.6 - 0.05  # 50 ms: our clock started after the server's
    reader = live.ledger()
    rejected = [e for e in live.faults(reader, "blip") if e["effect"] == "rejected"]
    assert len(rejected) == len(statuses) - 1


# disconnect -----------------------------------------------------------------------------


def test_disconnect_sends_the_operational_disconnect_line_then_ends(live: Live) -> None:
    """disconnect with every_messages=40: the client gets exactly 40 tweets, X's
    operational-disconnect line byte for byte, then a clean end of stream. The ledger
    delivered those 40, and records every later tweet dropped for the fault, never sent."""
    live.add({"type": "disconnect", "name": "cut", "schedule": {"every_messages": 40}})
    read = read_requests(live.server)
    assert read.error is None  # the chunked body ended properly (final chunk)
    assert len(read.ids) == 40
    assert read.other == [OPERATIONAL_DISCONNECT]

    reader = live.ledger()
    (conn,) = live.connections(reader)
    cid = conn["conn_id"]
    assert conn["end_reason"] == "fault:cut"
    assert acked_ids(reader, cid) == read.ids
    (event,) = live.faults(reader, "cut")
    first_withheld = int(reader.delivered_indexes(cid)[-1]) + 1
    assert (event["effect"], event["before_tweet"], event["conn_id"]) == (
        "disconnect",
        first_withheld,
        cid,
    )
    last = index_of(reader, read.ids)[-1]
    drops = drops_of(reader, cid)
    assert drops  # tweets were queued behind the disconnect
    assert {(d.reason, d.stage) for d in drops} == {("fault:cut", "queued")}
    assert min(d.first for d in drops) == last + 1
    assert int(reader.delivered_indexes(cid).max()) == last


# malformed ------------------------------------------------------------------------------

_ID_PREFIX = re.compile(rb'^\{"data":\{"id":"(\d+)"')


def test_malformed_truncate_loses_the_cut_tweet_and_records_it(live: Live) -> None:
    """malformed/truncate every 30 tweets: those lines are cut in half and do not parse.
    The id still readable at the start of each cut line is recorded dropped (stage
    'fault', reason 'fault:<name>'), never delivered; with the parsed tweets they form one
    gap-free run of the stream, so nothing else went missing."""
    live.add(
        {
            "type": "malformed",
            "name": "cut",
            "schedule": {"every_messages": 30},
            "attributes": {"mode": "truncate"},
        }
    )
    read = read_requests(live.server, stop=end_after(live, 100))
    assert read.error is None
    *broken, final = read.other
    assert final == OPERATIONAL_DISCONNECT
    assert len(broken) >= 3
    cut_ids = []
    for line in broken:
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            json.loads(line)
        match = _ID_PREFIX.match(line)
        assert match, line[:80]
        cut_ids.append(int(match[1]))

    reader = live.ledger()
    (conn,) = live.connections(reader)
    cid = conn["conn_id"]
    assert acked_ids(reader, cid) == read.ids
    cut_indexes = index_of(reader, cut_ids)
    # Only up to the last tweet the client got: in the write the 'end' disconnect cut off,
    # a line truncated first never went out, though its drop and event stay.
    last = max(index_of(reader, read.ids))
    fault_drops = [d for d in drops_of(reader, cid) if d.stage == "fault" and d.first < last]
    assert [(d.first, d.stop, d.reason) for d in fault_drops] == [
        (i, i + 1, "fault:cut") for i in cut_indexes
    ]
    events = [e for e in live.faults(reader, "cut") if e["tweet_index"] < last]
    assert [(e["effect"], e["tweet_index"]) for e in events] == [
        ("truncated", i) for i in cut_indexes
    ]
    everything = sorted(index_of(reader, read.ids) + cut_indexes)
    assert everything == list(range(everything[0], everything[0] + len(everything)))


def test_malformed_garbage_inserts_invalid_lines_and_loses_nothing(live: Live) -> None:
    """malformed/garbage every 25 tweets: an invalid JSON line appears before those
    tweets; every tweet still arrives (a gap-free run), exactly as the ledger delivered
    it, and nothing is dropped for the fault."""
    live.add(
        {
            "type": "malformed",
            "name": "junk",
            "schedule": {"every_messages": 25},
            "attributes": {"mode": "garbage"},
        }
    )
    read = read_requests(live.server, stop=end_after(live, 90))
    assert read.error is None
    *garbage, final = read.other
    assert final == OPERATIONAL_DISCONNECT
    assert len(garbage) >= 3
    for line in garbage:
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            json.loads(line)

    reader = live.ledger()
    (conn,) = live.connections(reader)
    cid = conn["conn_id"]
    assert acked_ids(reader, cid) == read.ids
    indexes = index_of(reader, read.ids)
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    assert not [d for d in drops_of(reader, cid) if d.reason == "fault:junk"]
    last = indexes[-1]  # see the truncate test: the write 'end' cut off never went out
    events = [e for e in live.faults(reader, "junk") if e["before_tweet"] <= last]
    assert len(events) == len(garbage)
    assert {e["effect"] for e in events} == {"garbage_line"}
    assert [e["before_tweet"] for e in events] == sorted(e["before_tweet"] for e in events)


# duplicate ------------------------------------------------------------------------------


async def _read_httpx_until_end(live: Live, end_at: int) -> list[bytes]:
    """Read a whole stream with httpx (async), ending it after ``end_at`` lines."""
    lines: list[bytes] = []
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", live.server.stream_url, headers=live.server.headers) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(line.encode())
            if len(lines) == end_at:
                live.add({"type": "disconnect", "name": "end"})
    return lines


def test_duplicate_delivers_one_tweet_twice(live: Live) -> None:
    """A one-shot duplicate fires once on a connection: an httpx client sees exactly one
    id twice, back to back, and the ledger's delivered multiset holds that tweet twice,
    in the same order as the client read it."""
    live.add({"type": "duplicate", "name": "twice"})
    lines = asyncio.run(_read_httpx_until_end(live, 60))
    assert lines[-1] == OPERATIONAL_DISCONNECT
    ids = [tweet_id(line) for line in lines[:-1]]
    counts = Counter(ids)
    (repeated,) = [i for i, n in counts.items() if n > 1]
    assert counts[repeated] == 2
    first = ids.index(repeated)
    assert ids[first + 1] == repeated
    without = ids[: first + 1] + ids[first + 2 :]
    assert without == sorted(without)
    assert len(set(without)) == len(without)

    reader = live.ledger()
    (conn,) = live.connections(reader)
    cid = conn["conn_id"]
    assert acked_ids(reader, cid) == ids
    delivered = Counter(reader.delivered_indexes(cid).tolist())
    (index,) = index_of(reader, [repeated])
    assert delivered[index] == 2
    assert [(e["effect"], e["tweet_index"]) for e in live.faults(reader, "twice")] == [
        ("duplicated", index)
    ]


def test_duplicate_every_messages_fires_at_multiples(live: Live) -> None:
    """every_messages=10: the connection's tweets number 10, 20, 30, ... (0-based, counted
    as taken off its queue, so the repeats themselves do not count) are each followed by a
    repeat, and no other tweet is; the ledger has one event per repeat."""
    live.add({"type": "duplicate", "name": "echo", "schedule": {"every_messages": 10}})
    read = read_requests(live.server, stop=end_after(live, 120))
    ids = read.ids
    repeats = repeated_originals(ids)
    assert len(ids) - len(repeats) == len(set(ids))  # every repeat is right after its original
    originals = len(set(ids))
    assert repeats == list(range(10, originals, 10))
    reader = live.ledger()
    (conn,) = live.connections(reader)
    assert acked_ids(reader, conn["conn_id"]) == ids
    # A repeat made in the write that the 'end' disconnect then cut off never went out:
    # its event stays, and the ledger drops the tweet twice (once per copy).
    delivered = set(reader.delivered_indexes(conn["conn_id"]).tolist())
    events = [e["tweet_index"] for e in live.faults(reader, "echo")]
    repeated_ids = [ids[p] for p in range(1, len(ids)) if ids[p] == ids[p - 1]]
    assert [i for i in events if i in delivered] == index_of(reader, repeated_ids)
    for index in (i for i in events if i not in delivered):
        copies = [d for d in drops_of(reader, conn["conn_id"]) if d.first <= index < d.stop]
        assert [(d.reason, d.stage) for d in copies] == [("fault:end", "queued")] * 2


# reorder --------------------------------------------------------------------------------


def test_reorder_shuffles_tweets_and_ledger_keeps_the_wire_order(live: Live) -> None:
    """reorder window=3 every 20 tweets, on a backfill (large writes): ids arrive out of
    order at those places, no tweet is lost or repeated, and the ledger's delivery runs
    list the tweets in exactly the order the client read them."""
    live.add(
        {
            "type": "reorder",
            "name": "shuffle",
            "schedule": {"every_messages": 20},
            "attributes": {"window": 3},
        }
    )
    read = read_requests(live.server, stop=end_after(live, 300), query="?backfill_minutes=1")
    ids = read.ids
    inversions = [p for p in range(1, len(ids)) if ids[p] < ids[p - 1]]
    assert len(inversions) >= 10

    reader = live.ledger()
    (conn,) = live.connections(reader)
    cid = conn["conn_id"]
    assert acked_ids(reader, cid) == ids  # same order, not just the same set
    indexes = index_of(reader, ids)
    # No tweet lost or repeated: what was read plus what the closing disconnect ("end")
    # withheld covers one gap-free range, with no overlap. (When "end" hits a tweet the
    # reorder moved, the tweets behind it in the shuffled order are withheld too.)
    cut = {
        i for d in drops_of(reader, cid) if d.reason == "fault:end" for i in range(d.first, d.stop)
    }
    assert len(set(indexes)) == len(indexes)
    assert not cut & set(indexes)
    covered = sorted(cut | set(indexes))
    assert covered == list(range(min(indexes), min(indexes) + len(covered)))
    events = live.faults(reader, "shuffle")
    assert len(events) >= 10
    shuffled = set()
    for event in events:
        window = event["tweet_indexes"]
        if set(window) & cut:
            # Shuffled, then partly withheld by the closing disconnect in the same write:
            # whatever of it the client read may be out of order, nothing more is known.
            read = [indexes.index(i) for i in window if i in indexes]
            shuffled |= set(read) | {p + 1 for p in read}
            continue
        if event["effect"] == "held_back":  # fired on a write's last tweet: it goes out
            (held,) = window  # after the next write's first one
            at = indexes.index(held)
            assert indexes[at - 1] > held
            shuffled.add(at)
            continue
        assert 2 <= len(window) <= 3  # cut short at the end of a write
        assert window != sorted(window)
        at = indexes.index(window[0])
        assert indexes[at : at + len(window)] == window  # the client saw exactly this order
        shuffled |= set(range(at + 1, at + len(window)))
    assert set(inversions) <= shuffled  # out of order only where the fault says it acted


def test_reorder_acts_on_a_live_stream(live: Live) -> None:
    """reorder window=2 every 5 tweets on a live stream at 100 tweets/s (the sample stream
    carries a few dozen): each of the ~10 firings in 55 tweets swaps two tweets."""
    live.server.control("PUT", "rate", {"kind": "constant", "rate": 100})
    try:
        live.add(
            {
                "type": "reorder",
                "name": "shuffle",
                "schedule": {"every_messages": 5},
                "attributes": {"window": 2},
            }
        )
        read = read_requests(live.server, stop=end_after(live, 55))
    finally:
        live.server.control("PUT", "rate", {"kind": "constant", "rate": RATE})
    ids = read.ids
    inversions = [p for p in range(1, len(ids)) if ids[p] < ids[p - 1]]
    assert len(inversions) >= 9


# probability and schedule ---------------------------------------------------------------


def test_probability_zero_never_fires(live: Live) -> None:
    """With probability 0 neither a one-shot fault (malformed every 5 tweets) nor a
    continuous one (http_error) ever acts: the connect succeeds, every line is a tweet,
    in order, and the ledger logs no effect of either."""
    live.add(
        {
            "type": "malformed",
            "name": "never-cut",
            "probability": 0,
            "schedule": {"every_messages": 5},
        }
    )
    live.add({"type": "http_error", "name": "never-503", "probability": 0})
    read = read_requests(live.server, seconds=0.6)
    assert read.error is None
    assert read.other == []
    assert len(read.ids) > 100
    assert read.ids == sorted(read.ids)
    reader = live.ledger()
    assert live.faults(reader, "never-cut") == []
    assert live.faults(reader, "never-503") == []
    (conn,) = live.connections(reader)
    assert [d for d in drops_of(reader, conn["conn_id"]) if d.reason != "client_closed"] == []
    assert acked_ids(reader, conn["conn_id"])[: len(read.ids)] == read.ids


def repeated_originals(ids: list[int | None]) -> list[int]:
    """Which tweets were repeated, as positions among the tweets taken off the queue
    (0-based, repeats not counted): ``every_messages`` counts those, however the server
    batched its writes and whatever other faults inserted."""
    positions, originals = [], 0
    for p, tweet in enumerate(ids):
        if p and tweet == ids[p - 1]:
            positions.append(originals - 1)
        else:
            originals += 1
    return positions


def _duplicate_positions(directory: Path) -> list[int]:
    """Start a server with a seeded 50% duplicate fault every 5 tweets from start-up, read
    its first connection's first 150 messages, return where the repeats are.

    200 tweets/s is one or two tweets per write: see test_every_messages_survives_big_writes
    for what larger writes do to the schedule."""
    fault = {
        "type": "duplicate",
        "name": "coin",
        "probability": 0.5,
        "schedule": {"every_messages": 5},
    }
    server = StreamServerProcess(
        directory / "ledger.sqlite",
        ["--rate", "200", "--seed", "11", "--fault", json.dumps(fault)],
        token="seeded",
    )
    try:
        read = read_requests(server, stop=lambda r: len(r.ids) >= 150)
    finally:
        server.stop()
    return repeated_originals(read.ids)


def test_same_seed_fires_at_the_same_messages(tmp_path: Path) -> None:
    """Two servers with the same seed and a 50% duplicate fault every 5 tweets, set at
    start-up: their first connections repeat tweets at exactly the same positions, only
    at multiples of 5, and some coins come up tails."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ThreadPoolExecutor(2) as pool:  # two start-ups in parallel: ~1 s instead of 2
        a, b = pool.map(_duplicate_positions, [tmp_path / "a", tmp_path / "b"])
    assert a == b
    assert all(p % 5 == 0 for p in a)
    # ~30 coins: the seeded sequence must have both outcomes or probability is ignored.
    assert 5 <= len(a) <= 25


def test_firing_positions_do_not_depend_on_batching(live: Live) -> None:
    """malformed/truncate every 50 tweets hits the same tweets of a connection whether the
    server writes them a few at a time (a live stream) or 2,048 at once (a backfill): the
    cut lines are at the same positions of the two streams."""
    live.add(
        {
            "type": "malformed",
            "name": "cut",
            "schedule": {"every_messages": 50},
            "attributes": {"mode": "truncate"},
        }
    )
    positions = []
    for path in ("/2/tweets/search/stream", "/2/tweets/search/stream?backfill_minutes=1"):
        response = requests.get(
            live.server.url + path, headers=live.server.headers, stream=True, timeout=5
        )
        with response:
            lines = []
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) >= 170:
                    break
        positions.append([p for p, line in enumerate(lines) if tweet_id(line) is None])
        wait_idle(live.server)  # one stream per token: let the server close this one
    live_stream, backfill = positions
    assert len(live_stream) == 3
    assert live_stream == backfill


def test_every_messages_survives_big_writes(live: Live) -> None:
    """duplicate every 10 tweets on a backfill (the first write holds hundreds of tweets):
    repeats keep coming every 10 tweets after that write too, not after a gap."""
    live.add({"type": "duplicate", "name": "echo", "schedule": {"every_messages": 10}})
    response = requests.get(
        live.server.stream_url + "?backfill_minutes=1",
        headers=live.server.headers,
        stream=True,
        timeout=5,
    )
    ids: list[int | None] = []
    with response:
        for line in response.iter_lines():
            if line:
                ids.append(tweet_id(line))
            if len(ids) >= 2600:
                break
    repeats = repeated_originals(ids)
    assert repeats[0] == 10
    gaps = {b - a for a, b in itertools.pairwise(repeats)}
    assert gaps == {10}


def test_startup_fault_window_starts_when_the_server_is_up(tmp_path: Path) -> None:
    """http_error active for the first 0.5 s of the server's life (set at start-up): the
    first connect, made right after the server announces itself, gets the 503, and a
    connect after the window streams. (Stream time 0 used to be before the ~0.5-1 s of
    building the tweet pools, so such a window was over before anyone could connect.)"""
    fault = {"type": "http_error", "name": "boot", "schedule": {"at": 0, "duration": 0.5}}
    server = StreamServerProcess(
        tmp_path / "ledger.sqlite", ["--fault", json.dumps(fault)], token="boot"
    )
    try:
        first = requests.get(server.stream_url, headers=server.headers, stream=True, timeout=5)
        first.close()
        time.sleep(max(0.0, 0.5 - server.control("GET", "stats")["stream_time"]))
        later = requests.get(server.stream_url, headers=server.headers, stream=True, timeout=5)
        later.close()
    finally:
        server.stop()
    assert first.status_code == 503
    assert later.status_code == 200
    reader = server.ledger_reader()
    assert [(e["effect"], e["conn_id"]) for e in reader.events("fault")] == [("rejected", 1)]
