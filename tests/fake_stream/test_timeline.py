"""The timeline: which tweets exist, and the id and time of each (property-based).

The oracle throughout is built independently from ``RateProfile.counts`` (itself pinned
by test_rates.py): tweet ``i`` lives in the slot whose running count passes ``i``, at
position ``i - (tweets in earlier slots)``.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import socket
import time
import tracemalloc
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_stream import snowflake
from fake_stream.rates import RateProfile, Segment, parse_profile
from fake_stream.timeline import Timeline

T0_MS = 1_700_000_000_000


@st.composite
def profiles(draw: st.DrawFn) -> RateProfile:
    """Step functions of up to 4 segments, uniform or Poisson, including zero rates (empty
    slots are where off-by-ones hide) and rates of several tweets per ms."""
    n = draw(st.integers(1, 4))
    starts = sorted(draw(st.sets(st.integers(1, 1500), min_size=n - 1, max_size=n - 1)))
    segments = [
        Segment(s / 1000, draw(st.sampled_from([0, 1, 7.5, 333, 1000, 4000])), draw(st.booleans()))
        for s in [0, *starts]
    ]
    return RateProfile(tuple(segments))


@st.composite
def steps(draw: st.DrawFn) -> list[int]:
    """Increasing stop slots, as the server's ticks produce them (repeats and zero-length
    ticks included)."""
    sizes = draw(st.lists(st.integers(0, 400), min_size=1, max_size=12))
    return np.cumsum(sizes).tolist()


def oracle(profile: RateProfile, seed: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot, position) of every tweet created in ``slots`` milliseconds."""
    counts = profile.counts(0, slots, seed) if slots else np.zeros(0, dtype=np.int64)
    slot = np.repeat(np.arange(slots, dtype=np.int64), counts)
    before = np.cumsum(counts) - counts  # tweets in earlier slots
    starts = np.repeat(before, counts)
    return slot, np.arange(len(slot), dtype=np.int64) - starts


def advanced(profile: RateProfile, seed: int, stops: list[int]) -> Timeline:
    timeline = Timeline(profile, seed, T0_MS)
    for stop in stops:
        timeline.advance(stop)
    return timeline


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(profiles(), st.integers(0, 2**32), steps())
def test_step_sizes_do_not_change_the_first_index_table(profile, seed, stops) -> None:
    """Advancing tick by tick (any tick lengths) builds the same slot table and total as
    advancing once, and each advance reports exactly the tweets it created."""
    stepwise = Timeline(profile, seed, T0_MS)
    reported: list[np.ndarray] = []
    for stop in stops:
        before = stepwise.total
        created = stepwise.advance(stop)
        assert created.first_index == before
        assert created.stop_index == stepwise.total == before + int(created.counts.sum())
        reported.append(created.counts)
    once = advanced(profile, seed, [stops[-1]])
    assert stepwise.slots == once.slots == stops[-1]
    assert stepwise.total == once.total
    table = [stepwise.first_index_at(s) for s in range(stops[-1] + 1)]
    assert table == [once.first_index_at(s) for s in range(stops[-1] + 1)]
    expected = profile.counts(0, stops[-1], seed) if stops[-1] else np.zeros(0, np.int64)
    assert np.array_equal(np.concatenate(reported), expected)
    assert stepwise.total == int(expected.sum())


def test_advance_backwards_creates_nothing() -> None:
    """Asking for a slot already created (a tick in the same ms) creates nothing."""
    timeline = Timeline(parse_profile(1000), 0, T0_MS)
    timeline.advance(10)
    created = timeline.advance(5)
    assert (created.first_index, created.stop_index, len(created.counts)) == (10, 10, 0)
    assert timeline.total == 10


@settings(max_examples=60, deadline=None)
@given(profiles(), st.integers(0, 2**32), steps())
def test_locate_gives_each_tweet_its_slot_and_position(profile, seed, stops) -> None:
    """locate() of every created index: id decodes to t0_ms + its slot, the position is
    within that slot's count, and both match the independent oracle."""
    timeline = advanced(profile, seed, stops)
    slot, position = oracle(profile, seed, timeline.slots)
    indexes = np.arange(timeline.total, dtype=np.int64)
    ids, unix_ms = timeline.locate(indexes)
    assert unix_ms.tolist() == (T0_MS + slot).tolist()
    for tweet_id, s, p in zip(ids.tolist(), slot.tolist(), position.tolist(), strict=True):
        assert snowflake.decode_ms(tweet_id) == T0_MS + s
        assert snowflake.decode_position(tweet_id) == p
        count = timeline.first_index_at(s + 1) - timeline.first_index_at(s)
        assert 0 <= p < count
    # Ids over all created indexes strictly increase: id order is creation order.
    id_list = ids.tolist()
    assert all(a < b for a, b in itertools.pairwise(id_list))


@settings(max_examples=60, deadline=None)
@given(profiles(), st.integers(0, 2**32), steps())
def test_index_after(profile, seed, stops) -> None:
    """index_after(id) is the next index for every created id; for a position past its
    millisecond's count (an id never created) the first tweet of the next millisecond;
    0 for ids before stream start; ``total`` for future ids."""
    timeline = advanced(profile, seed, stops)
    ids, _ = timeline.locate(np.arange(timeline.total, dtype=np.int64))
    for index, tweet_id in enumerate(ids.tolist()):
        assert timeline.index_after(tweet_id) == index + 1
    for s in range(timeline.slots):
        count = timeline.first_index_at(s + 1) - timeline.first_index_at(s)
        next_slot = timeline.first_index_at(s + 1)  # since_id is a lower bound, not a tweet
        assert timeline.index_after(snowflake.encode(T0_MS + s, count)) == next_slot
        assert timeline.index_after(snowflake.encode(T0_MS + s, count + 17)) == next_slot
    assert timeline.index_after(snowflake.encode(T0_MS - 1, 5)) == 0
    assert timeline.index_after(snowflake.encode(T0_MS - 60_000, 0)) == 0
    assert timeline.index_after(snowflake.encode(T0_MS + timeline.slots, 0)) == timeline.total
    assert timeline.index_after(snowflake.encode(T0_MS + timeline.slots + 10**6, 3)) == (
        timeline.total
    )


def test_table_survives_growth() -> None:
    """The slot table starts at 65,536 slots and grows: advancing across the growth in
    uneven ticks keeps every earlier entry (one tweet per 3 ms: easy to check by hand)."""
    timeline = Timeline(parse_profile(333.334), 0, T0_MS)
    stop = 0
    for size in [40_000, 25_535, 1, 0, 3, 70_000, 1]:
        stop += size
        timeline.advance(stop)
    counts = parse_profile(333.334).counts(0, stop, 0)
    assert timeline.total == int(counts.sum())
    indexes = np.arange(timeline.total, dtype=np.int64)
    _, unix_ms = timeline.locate(indexes)
    assert np.array_equal(unix_ms - T0_MS, np.repeat(np.arange(stop), counts))
    assert timeline.first_index_at(stop) == timeline.total


def test_set_profile_keeps_created_slots_and_follows_the_new_rate() -> None:
    """A rate change at run time affects only slots not yet created."""
    timeline = Timeline(parse_profile(1000), 0, T0_MS)
    timeline.advance(2000)
    ids_before, _ = timeline.locate(np.arange(2000, dtype=np.int64))
    timeline.set_profile(parse_profile(5000))
    timeline.advance(3000)
    assert timeline.total == 2000 + 5000
    ids_after, _ = timeline.locate(np.arange(2000, dtype=np.int64))
    assert np.array_equal(ids_before, ids_after)
    assert timeline.first_index_at(2000) == 2000
    assert timeline.first_index_at(2001) == 2005  # five per ms from the change on


@pytest.mark.parametrize("seed", [0, 9])
def test_poisson_timeline_is_reproducible_across_tick_patterns(seed: int) -> None:
    """Two servers with the same seed and a Poisson profile tick at different moments;
    their timelines must still hold the same tweets at the same ids."""
    profile = parse_profile({"kind": "poisson", "rate": 3000})
    a = advanced(profile, seed, list(range(5, 4001, 5)))
    b = advanced(profile, seed, [*range(7, 4000, 7), 4000])
    assert a.total == b.total
    ids_a, _ = a.locate(np.arange(a.total, dtype=np.int64))
    ids_b, _ = b.locate(np.arange(b.total, dtype=np.int64))
    assert np.array_equal(ids_a, ids_b)


# --- bounded memory -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    profiles(),
    st.integers(0, 2**32),
    steps(),
    st.lists(st.tuples(st.integers(0, 11), profiles()), max_size=3),
    st.sampled_from([1, 7, 64, 1000]),
    st.randoms(use_true_random=False),
)
def test_evicted_chunks_are_rebuilt_exactly(profile, seed, stops, changes, chunk, rnd) -> None:
    """A timeline that keeps no history (``keep_s=0``, tiny chunks) answers exactly as one
    that keeps all of it, rate changes (splices, Poisson included) and all: each evicted
    chunk is rebuilt from the profile. Reads go to random old tweets between ticks, so
    rebuilt chunks are cached, evicted from the cache and rebuilt again."""
    kept = Timeline(profile, seed, T0_MS)  # one chunk of 32,768 slots: nothing is evicted
    bounded = Timeline(profile, seed, T0_MS, keep_s=0, chunk_slots=chunk)
    for step, stop in enumerate(stops):
        for at, new in changes:
            if at == step:
                kept.set_profile(new)
                bounded.set_profile(new)
        assert kept.advance(stop).counts.tolist() == bounded.advance(stop).counts.tolist()
        if kept.total:
            sample = np.array([rnd.randrange(kept.total) for _ in range(5)], dtype=np.int64)
            assert np.array_equal(np.stack(kept.locate(sample)), np.stack(bounded.locate(sample)))
    assert bounded.total == kept.total
    indexes = np.arange(kept.total, dtype=np.int64)
    assert np.array_equal(np.stack(kept.locate(indexes)), np.stack(bounded.locate(indexes)))
    rnd.shuffle(shuffled := indexes.copy())  # a batch spanning chunks in any order
    assert np.array_equal(np.stack(kept.locate(shuffled)), np.stack(bounded.locate(shuffled)))
    for s in range(kept.slots + 1):
        assert bounded.first_index_at(s) == kept.first_index_at(s)
    ids, _ = kept.locate(indexes)
    for tweet_id in ids.tolist()[:: max(1, len(ids) // 200)]:
        assert bounded.index_after(tweet_id) == kept.index_after(tweet_id)
        assert bounded.index_after(tweet_id + 5) == kept.index_after(tweet_id + 5)


def test_two_hours_of_stream_hold_a_few_megabytes() -> None:
    """Two hours at 5,000 tweets/s, ticked a minute at a time: the timeline holds its last
    five minutes of slot table (the unbounded table held 8 bytes per ms: 58 MB), and a tweet
    from the first second, long evicted, still has its id (five per ms: index i is in slot
    i // 5 at position i % 5)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        timeline = Timeline(parse_profile(5000), 0, T0_MS)
        for stop in range(60_000, 2 * 3_600_000 + 1, 60_000):
            timeline.advance(stop)
        held = tracemalloc.get_traced_memory()[0] - before
        early = np.array([0, 7, 4_999], dtype=np.int64)
        ids, unix_ms = timeline.locate(early)
    finally:
        tracemalloc.stop()
    assert timeline.total == 5000 * 2 * 3600
    assert held < 4 * 2**20, f"{held / 2**20:.1f} MiB held"
    assert unix_ms.tolist() == [T0_MS, T0_MS + 1, T0_MS + 999]
    assert [snowflake.decode_position(i) for i in ids.tolist()] == [0, 2, 4]
    assert timeline.index_after(int(ids[1])) == 8
    assert timeline.first_index_at(3_600_000) == 5 * 3_600_000


# --- the live clock -------------------------------------------------------------------------------


def _drain(host: str, port: int, token: str) -> None:
    """A consumer that reads as fast as it can until the connection ends."""
    sock = socket.create_connection((host, port))
    sock.sendall(
        f"GET /2/tweets/search/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    buf = bytearray(1 << 20)
    while sock.recv_into(buf):
        pass


@pytest.mark.slow
def test_live_server_keeps_its_clock_while_draining_a_backlog(start_server) -> None:
    """Tweets are created on the clock whatever a connection is doing. With more tweets
    due than one connection can write (2,000,000/s, no queue limit) and a consumer that
    reads as fast as it can, the server must still answer its control API promptly
    (3 s is far beyond any scheduling delay on a loaded 2-core machine) and report
    about rate x stream_time tweets created, every time we ask."""
    server = start_server("--rate", "2000000", "--queue-size", "0")
    address = urlsplit(server.url)
    consumer = mp.get_context("fork").Process(
        target=_drain, args=(address.hostname, address.port, server.token), daemon=True
    )
    consumer.start()
    try:
        for _ in range(3):
            time.sleep(0.5)
            stats = requests.get(f"{server.url}/_control/stats", headers=server.headers, timeout=3)
            assert stats.status_code == 200
            body = stats.json()
            assert body["connections"], "the consumer is connected"
            # The generator runs every few ms: created trails the clock by well under 0.5 s.
            assert body["created"] >= 2_000_000 * (body["stream_time"] - 0.5)
    finally:
        consumer.terminate()
        consumer.join(5)
