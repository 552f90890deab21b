"""A replay's arrivals are a pure function of the millisecond: the timeline asks for any
range, in any pieces, and rebuilds old ones (fake_stream/replay.py, ReplayProfile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_stream.capture import Capture
from fake_stream.replay import MIN_PASS_US, ReplayProfile


def _profile(offsets_us: list[int], speed: float, loop: bool, duration_us: int) -> ReplayProfile:
    offsets = np.array(sorted(offsets_us), dtype=np.int64)
    capture = Capture(
        path=Path("hand-made.ndjson"),
        sha256="",
        header={"capture": 1},
        tweets=[{"data": {"id": str(i + 1)}} for i in range(len(offsets))],
        offsets_us=offsets,
        ids=np.arange(1, len(offsets) + 1, dtype=np.int64),
        lines=list(range(2, len(offsets) + 2)),
        # a looped pass lasts at least MIN_PASS_US of replay (shorter ones are refused)
        duration_us=max(duration_us, int(offsets[-1]), round(speed * MIN_PASS_US)),
        complete=True,
    )
    return ReplayProfile(capture, speed, loop, shift_ids=loop, start="server")


#: A hand-made capture: arrival offsets (µs), replay speed, looped or not, its length.
CAPTURES = {
    "offsets": st.lists(st.integers(0, 3_000_000), min_size=1, max_size=60),
    "speed": st.sampled_from([0.25, 1.0, 1.7, 20.0, 1000.0]),
    "loop": st.booleans(),
    "duration": st.integers(0, 4_000_000),
}


@settings(max_examples=150, deadline=None)
@given(
    **CAPTURES,
    cuts=st.lists(st.integers(1, 400), min_size=1, max_size=30),
)
def test_counts_in_any_pieces_are_the_counts_of_the_whole(offsets, speed, loop, duration, cuts):
    profile = _profile(offsets, speed, loop, duration)
    whole = profile.counts(0, 12_000, seed=0)
    at, pieces = 0, []
    for cut in cuts:
        pieces.append(profile.counts(at, at + cut, seed=0))
        at += cut
    assert np.concatenate(pieces).tolist() == whole[:at].tolist()
    # Every tweet of the capture once per pass, in the millisecond its offset / speed says.
    first_pass = np.floor(np.array(sorted(offsets)) / (1000 * speed)).astype(np.int64)
    if not loop:
        assert whole.sum() == np.count_nonzero(first_pass < 12_000)
    expected = np.bincount(first_pass[first_pass < 12_000], minlength=12_000)
    # A pass lasts the recording, at least its last tweet's arrival + 1 ms (the contract).
    period_ms = max(profile.capture.duration_us, max(offsets) + 1000) / (1000 * speed)
    before_second_pass = int(min(period_ms, 12_000)) if loop else 12_000
    assert whole[:before_second_pass].tolist() == expected[:before_second_pass].tolist()


def test_nothing_is_created_before_the_first_connection_or_after_rate_0():
    profile = _profile([0, 1_000, 2_500], 1.0, loop=False, duration_us=3_000)
    waiting = ReplayProfile(profile.capture, start="connect")
    assert waiting.counts(0, 100, seed=0).sum() == 0
    waiting.begin(40)  # the capture's time 0 is stream millisecond 40
    assert np.flatnonzero(waiting.counts(0, 100, seed=0)).tolist() == [40, 41, 42]
    stopped = waiting.spliced(0.0415, _zero())
    assert np.flatnonzero(stopped.counts(0, 100, seed=0)).tolist() == [40, 41]


def _zero():
    from fake_stream.rates import parse_profile

    return parse_profile(0)


def test_a_looped_pass_shorter_than_the_minimum_is_refused():
    capture = _profile([0, 500], 1.0, loop=False, duration_us=1_000).capture  # 10 ms long
    with pytest.raises(ValueError, match=r"a pass of 1 ms at speed 10 is shorter than 10 ms"):
        ReplayProfile(capture, 10.0, loop=True, shift_ids=True)
    assert ReplayProfile(capture, 10.0).counts(0, 10, seed=0).sum() == 0  # not started


@settings(max_examples=150, deadline=None)
@given(
    **CAPTURES,
    slot=st.integers(0, 11_000),
    stop_ms=st.none() | st.integers(0, 12_000),
)
def test_the_next_tweet_due_is_the_first_the_counts_have(
    offsets, speed, loop, duration, slot, stop_ms
):
    """What the generator sleeps until (``next_due``) is the first millisecond the counts
    create a tweet in, from any slot, stopped or not."""
    profile = _profile(offsets, speed, loop, duration)
    if stop_ms is not None:
        profile = profile.spliced(stop_ms / 1000, _zero())
    created = np.flatnonzero(profile.counts(slot, 12_000, seed=0))
    due = profile.next_due(slot)
    if len(created):
        assert due == slot + int(created[0])
    else:
        assert due is None or due >= 12_000
