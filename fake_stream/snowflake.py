"""Snowflake ids: the time-ordered 64-bit ids X gives every tweet.

Layout (X's, since 2010): 41 bits of milliseconds since :data:`TWEPOCH`, then 5 bits of
datacenter, 5 bits of worker and 12 bits of sequence. The fake stream uses the low 22 bits
as one counter, the tweet's position within its millisecond; read as datacenter / worker /
sequence they are still valid fields, and ids stay strictly increasing with creation time
for up to 2**22 tweets per millisecond.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_PER_MS",
    "TWEPOCH",
    "decode_ms",
    "decode_position",
    "encode",
    "encode_array",
]

#: X's epoch: 2010-11-04T01:42:54.657Z, in milliseconds since the UNIX epoch.
TWEPOCH = 1288834974657
_SHIFT = 22
#: How many ids one millisecond can hold.
MAX_PER_MS = 1 << _SHIFT


def encode(ms: int, position: int) -> int:
    """The id of the ``position``-th tweet created in UNIX millisecond ``ms``."""
    if not 0 <= position < MAX_PER_MS:
        raise ValueError(f"position {position} is outside 0..{MAX_PER_MS - 1}")
    if ms < TWEPOCH:
        raise ValueError(f"{ms} ms is before the Snowflake epoch {TWEPOCH}")
    if ms - TWEPOCH >= 1 << 41:
        raise ValueError(f"{ms} ms does not fit the id's 41 bits of time (year 2080 or later)")
    return ((ms - TWEPOCH) << _SHIFT) | position


def encode_array(ms: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Vectorised :func:`encode` (no range checks: callers build valid inputs)."""
    return ((ms.astype(np.uint64) - np.uint64(TWEPOCH)) << np.uint64(_SHIFT)) | position.astype(
        np.uint64
    )


def decode_ms(tweet_id: int) -> int:
    """The UNIX millisecond a tweet id was created in."""
    return (tweet_id >> _SHIFT) + TWEPOCH


def decode_position(tweet_id: int) -> int:
    """The tweet's position within its millisecond (the low 22 bits)."""
    return tweet_id & (MAX_PER_MS - 1)
