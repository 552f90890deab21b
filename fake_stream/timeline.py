"""The live stream's clock: which tweets exist, and when each was created.

Every tweet has an *index*: its position in the one global sequence the server creates
(0, 1, 2, ...). Time is cut into millisecond *slots* counted from stream start; slot ``k``
holds the tweets created in UNIX millisecond ``t0_ms + k``. The timeline stores only the
index of each slot's first tweet, so any tweet's id, creation time and content can be
recomputed from its index: nothing about a tweet is kept in memory, and replaying the
retention window (``backfill_minutes``, ``since_id``) costs no storage.
"""

from __future__ import annotations

import numpy as np

from fake_stream import snowflake
from fake_stream.rates import RateProfile

__all__ = ["Created", "Timeline"]


class Created:
    """Tweets created by one :meth:`Timeline.advance`: slots and index range."""

    __slots__ = ("counts", "first_index", "first_slot", "stop_index")

    def __init__(self, first_slot: int, counts: np.ndarray, first_index: int) -> None:
        self.first_slot = first_slot
        self.counts = counts
        self.first_index = first_index
        self.stop_index = first_index + int(counts.sum())


class Timeline:
    """Creates tweets on the clock and maps between indexes, slots, ids and times.

    :param profile: the rate profile; replace it at run time with :meth:`set_profile`.
    :param seed: seeds the profile's random arrivals.
    :param t0_ms: UNIX millisecond of stream start (slot 0).
    """

    def __init__(self, profile: RateProfile, seed: int, t0_ms: int) -> None:
        self.profile = profile
        self.seed = seed
        self.t0_ms = t0_ms
        self._first = np.zeros(1 << 16, dtype=np.int64)  # first index of each slot
        self.slots = 0  # slots [0, slots) have been created
        self.total = 0  # tweets created so far (the next index)

    def advance(self, stop_slot: int) -> Created:
        """Create every slot before ``stop_slot`` that does not exist yet."""
        first_slot = self.slots
        if stop_slot <= first_slot:
            return Created(first_slot, np.zeros(0, dtype=np.int64), self.total)
        counts = self.profile.counts(first_slot, stop_slot, self.seed)
        if stop_slot > len(self._first):
            grown = np.zeros(max(stop_slot, 2 * len(self._first)), dtype=np.int64)
            grown[: self.slots] = self._first[: self.slots]
            self._first = grown
        starts = self.total + np.concatenate(([0], np.cumsum(counts[:-1])))
        self._first[first_slot:stop_slot] = starts
        created = Created(first_slot, counts, self.total)
        self.slots = stop_slot
        self.total = created.stop_index
        return created

    def set_profile(self, profile: RateProfile) -> None:
        """Follow ``profile`` from the next slot on (created slots never change)."""
        self.profile = self.profile.spliced(self.slots / 1000, profile)

    def locate(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snowflake ids and UNIX creation milliseconds of created tweets."""
        slot = np.searchsorted(self._first[: self.slots], indexes, side="right") - 1
        position = indexes - self._first[slot]
        unix_ms = slot + self.t0_ms
        return snowflake.encode_array(unix_ms, position), unix_ms

    def first_index_at(self, slot: int) -> int:
        """Index of the first tweet created in ``slot`` or later (clamped to what exists)."""
        if slot <= 0:
            return 0
        if slot >= self.slots:
            return self.total
        return int(self._first[slot])

    def index_after(self, tweet_id: int) -> int:
        """Index of the first tweet whose id is greater than ``tweet_id`` (X's ``since_id``
        is a lower bound: any id works, created or not). Ids before stream start give 0;
        ids after the last created tweet give :attr:`total`."""
        slot = snowflake.decode_ms(tweet_id) - self.t0_ms
        position = snowflake.decode_position(tweet_id)
        if slot < 0:
            return 0
        if slot >= self.slots:
            return self.total
        first = int(self._first[slot])
        return min(first + position + 1, self.first_index_at(slot + 1))
