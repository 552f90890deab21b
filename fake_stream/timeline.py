"""The live stream's clock: which tweets exist, and when each was created.

Every tweet has an *index*: its position in the one global sequence the server creates
(0, 1, 2, ...). Time is cut into millisecond *slots* counted from stream start; slot ``k``
holds the tweets created in UNIX millisecond ``t0_ms + k``. The timeline stores only the
index of each slot's first tweet, so any tweet's id, creation time and content can be
recomputed from its index: nothing about a tweet is kept in memory.

Memory is bounded: the slot table is cut into chunks of ``chunk_slots`` slots, and only
the chunks of the last ``keep_s`` seconds stay in memory (8 bytes per slot), plus each
chunk's first index (a few kilobytes per hour). That window covers the hot paths: live
writes, ``backfill_minutes`` (5 min at most) and the server's default 300 s of replay.
Anything older (a larger ``--retention``, a ``since_id`` from long ago, a consumer that fell
behind further than the window) is not lost: a slot's count is a pure function of the
profile, the seed and the slot (:meth:`RateProfile.counts`; a rate change splices the
profile, keeping every past segment, so created slots never change), so an evicted chunk is
rebuilt exactly when asked for, and the last few rebuilt are cached.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict

import numpy as np

from fake_stream import snowflake
from fake_stream.rates import RateProfile

__all__ = ["Created", "Timeline"]

_CHUNK_SLOTS = 1 << 15  # 32.8 s of slots, 256 KiB of table
_KEEP_S = 300.0  # X's 5-minute backfill, and the server's default --retention
_REBUILT = 4  # evicted chunks kept after a rebuild: a slow reader crawls through them


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
    :param keep_s: seconds of slot table kept in memory (older chunks are rebuilt on demand).
    :param chunk_slots: slots per chunk of the table.
    """

    def __init__(
        self,
        profile: RateProfile,
        seed: int,
        t0_ms: int,
        keep_s: float = _KEEP_S,
        chunk_slots: int = _CHUNK_SLOTS,
    ) -> None:
        if not (math.isfinite(keep_s) and keep_s >= 0) or chunk_slots < 1:
            raise ValueError(f"timeline: keep_s {keep_s!r}, chunk_slots {chunk_slots!r}")
        self.profile = profile
        self.seed = seed
        self.t0_ms = t0_ms
        #: A replay's recorded ids, by index (None: ids are minted from the slots).
        self.kept_ids: np.ndarray | None = getattr(profile, "kept_ids", None)
        self.slots = 0  # slots [0, slots) have been created
        self.total = 0  # tweets created so far (the next index)
        self._chunk = chunk_slots
        self._keep = math.ceil(keep_s * 1000)
        self._chunk_first: list[int] = []  # first index of every chunk begun, never dropped
        self._tables: dict[int, np.ndarray] = {}  # chunk -> first index of each of its slots
        self._oldest = 0  # the oldest chunk still in _tables
        self._rebuilt: OrderedDict[int, np.ndarray] = OrderedDict()

    def advance(self, stop_slot: int) -> Created:
        """Create every slot before ``stop_slot`` that does not exist yet."""
        first_slot = self.slots
        if stop_slot <= first_slot:
            return Created(first_slot, np.zeros(0, dtype=np.int64), self.total)
        counts = self.profile.counts(first_slot, stop_slot, self.seed)
        starts = self.total + np.cumsum(counts) - counts
        size = self._chunk
        for chunk in range(first_slot // size, (stop_slot - 1) // size + 1):
            lo, hi = max(chunk * size, first_slot), min((chunk + 1) * size, stop_slot)
            table = self._tables.get(chunk)
            if table is None:  # lo is the chunk's first slot
                table = self._tables[chunk] = np.empty(size, dtype=np.int64)
                self._chunk_first.append(int(starts[lo - first_slot]))
            table[lo - chunk * size : hi - chunk * size] = starts[lo - first_slot : hi - first_slot]
        created = Created(first_slot, counts, self.total)
        self.slots = stop_slot
        self.total = created.stop_index
        self._evict()
        return created

    def set_profile(self, profile: RateProfile) -> None:
        """Follow ``profile`` from the next slot on (created slots never change)."""
        self.profile = self.profile.spliced(self.slots / 1000, profile)

    def locate(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snowflake ids and UNIX creation milliseconds of created tweets."""
        indexes = np.asarray(indexes, dtype=np.int64)
        if self.kept_ids is not None:  # a replay's recorded ids, and their times
            ids = self.kept_ids[indexes].astype(np.uint64)
            return ids, (ids >> np.uint64(22)).astype(np.int64) + snowflake.TWEPOCH
        if not len(indexes):
            return snowflake.encode_array(indexes, indexes), indexes
        newest = len(self._chunk_first) - 1
        low = bisect.bisect_right(self._chunk_first, int(indexes.min())) - 1
        # The usual case, live writes, is all in the newest chunk: no second reduction.
        high = (
            newest
            if low == newest
            else bisect.bisect_right(self._chunk_first, int(indexes.max())) - 1
        )
        if low == high:
            unix_ms, first = self._find(low, indexes)
        else:
            chunk_first = np.array(self._chunk_first[low : high + 1], dtype=np.int64)
            chunks = low + np.searchsorted(chunk_first, indexes, side="right") - 1
            unix_ms, first = np.empty_like(indexes), np.empty_like(indexes)
            for chunk in np.unique(chunks).tolist():
                here = chunks == chunk
                unix_ms[here], first[here] = self._find(chunk, indexes[here])
        return snowflake.encode_array(unix_ms, indexes - first), unix_ms

    def first_index_at(self, slot: int) -> int:
        """Index of the first tweet created in ``slot`` or later (clamped to what exists)."""
        if slot <= 0:
            return 0
        if slot >= self.slots:
            return self.total
        chunk, row = divmod(slot, self._chunk)
        return int(self._table(chunk)[row])

    def index_after(self, tweet_id: int) -> int:
        """Index of the first tweet whose id is greater than ``tweet_id`` (X's ``since_id``
        is a lower bound: any id works, created or not). Ids before stream start give 0;
        ids after the last created tweet give :attr:`total`."""
        if self.kept_ids is not None:  # recorded ids increase with the index
            return min(int(np.searchsorted(self.kept_ids, tweet_id, side="right")), self.total)
        slot = snowflake.decode_ms(tweet_id) - self.t0_ms
        position = snowflake.decode_position(tweet_id)
        if slot < 0:
            return 0
        if slot >= self.slots:
            return self.total
        first = self.first_index_at(slot)
        return min(first + position + 1, self.first_index_at(slot + 1))

    # The chunked table ------------------------------------------------------------------

    def _find(self, chunk: int, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """UNIX ms of each index's slot (all in ``chunk``), and that slot's first index."""
        table = self._table(chunk)[: self.slots - chunk * self._chunk]
        # side="right": the last slot starting at or before the index, skipping empty ones
        row = np.searchsorted(table, indexes, side="right") - 1
        return row + (chunk * self._chunk + self.t0_ms), table[row]

    def _table(self, chunk: int) -> np.ndarray:
        """The first index of each slot of ``chunk``, rebuilt if it was evicted."""
        table = self._tables.get(chunk)
        if table is not None:
            return table
        table = self._rebuilt.get(chunk)
        if table is None:
            first_slot = chunk * self._chunk  # evicted chunks are complete
            counts = self.profile.counts(first_slot, first_slot + self._chunk, self.seed)
            table = self._chunk_first[chunk] + np.cumsum(counts) - counts
            self._rebuilt[chunk] = table
            if len(self._rebuilt) > _REBUILT:
                self._rebuilt.popitem(last=False)
        self._rebuilt.move_to_end(chunk)
        return table

    def _evict(self) -> None:
        """Drop the chunks that end before the last ``keep_s`` seconds."""
        while (self._oldest + 1) * self._chunk <= self.slots - self._keep:
            self._tables.pop(self._oldest, None)
            self._oldest += 1
