"""Snowflake ids: X's layout, round trips and ordering (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fake_stream import snowflake
from fake_stream.snowflake import MAX_PER_MS, TWEPOCH

# The 41 bits of time run out in 2080: every ms in [TWEPOCH, TWEPOCH + 2**41) is encodable.
LAST_MS = TWEPOCH + (1 << 41) - 1
ms_values = st.integers(TWEPOCH, LAST_MS)
positions = st.integers(0, MAX_PER_MS - 1)


def test_layout_matches_x_reference() -> None:
    """A real tweet id from X's documentation decodes to its documented creation time
    (1460323737035677698, created 2021-11-15T19:08:05.xxxZ), and re-encodes to itself."""
    tweet_id = 1460323737035677698
    ms = snowflake.decode_ms(tweet_id)
    assert ms // 1000 == 1637003285  # 2021-11-15T19:08:05Z
    assert snowflake.encode(ms, snowflake.decode_position(tweet_id)) == tweet_id
    # X's formula, written out independently of the module's constants.
    assert (tweet_id >> 22) + 1288834974657 == ms


@given(ms_values, positions)
def test_round_trip(ms: int, position: int) -> None:
    """decode_ms / decode_position invert encode over the whole 41-bit time range, and
    ids are positive signed 64-bit integers (X's ids are Java longs)."""
    tweet_id = snowflake.encode(ms, position)
    assert 0 <= tweet_id < 2**63
    assert snowflake.decode_ms(tweet_id) == ms
    assert snowflake.decode_position(tweet_id) == position


@given(ms_values, positions, ms_values, positions)
def test_ids_order_like_creation(ms_a: int, pos_a: int, ms_b: int, pos_b: int) -> None:
    """Ids order exactly like (creation ms, position within the ms): strictly increasing,
    and equal only for the same tweet."""
    a, b = snowflake.encode(ms_a, pos_a), snowflake.encode(ms_b, pos_b)
    assert (a < b) == ((ms_a, pos_a) < (ms_b, pos_b))
    assert (a == b) == ((ms_a, pos_a) == (ms_b, pos_b))


@given(st.integers(TWEPOCH, LAST_MS - 10), st.integers(1, 10))
def test_last_position_of_a_ms_precedes_first_of_next(ms: int, gap: int) -> None:
    """No overlap between milliseconds: the largest id of one ms is below the smallest of
    any later ms."""
    assert snowflake.encode(ms, MAX_PER_MS - 1) < snowflake.encode(ms + gap, 0)
    assert snowflake.encode(ms + gap, 0) - snowflake.encode(ms, MAX_PER_MS - 1) == (
        (gap - 1) * MAX_PER_MS + 1
    )


@given(st.lists(st.tuples(ms_values, positions), min_size=1, max_size=200))
def test_encode_array_agrees_with_encode(pairs: list[tuple[int, int]]) -> None:
    """The vectorised encoder (used for every batch the server renders) gives the same ids
    as the scalar one, with int64 inputs as the timeline passes them."""
    ms = np.array([m for m, _ in pairs], dtype=np.int64)
    pos = np.array([p for _, p in pairs], dtype=np.int64)
    got = snowflake.encode_array(ms, pos)
    assert got.dtype == np.uint64
    assert got.tolist() == [snowflake.encode(m, p) for m, p in pairs]


@pytest.mark.parametrize(
    ("ms", "position", "words"),
    [
        (TWEPOCH - 1, 0, "before the Snowflake epoch"),
        (0, 0, "before the Snowflake epoch"),
        (TWEPOCH, -1, "position -1"),
        (TWEPOCH, MAX_PER_MS, f"position {MAX_PER_MS}"),
        (LAST_MS + 1, 0, "41 bits"),
    ],
)
def test_invalid_inputs_raise(ms: int, position: int, words: str) -> None:
    """Times before X's epoch or past the 41 time bits, and positions outside the 22 low
    bits, are refused rather than wrapped into some other tweet's id."""
    with pytest.raises(ValueError, match=words):
        snowflake.encode(ms, position)


def test_max_per_ms_is_22_bits() -> None:
    """The low field is 5+5+12 = 22 bits, as in X's layout."""
    assert MAX_PER_MS == 1 << (5 + 5 + 12)
