"""Per-tweet arrays over the window, computed once per history and shared by checkers.

All arrays are indexed by ``tweet index - window.first_index``. The one search of every
commit's id among the created ids happens here (:func:`commit_positions`, shared with the
timing checker); the only sort is of the commits of tweets committed more than once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fake_stream import snowflake
from harness.check.history import History

__all__ = ["CHUNK", "WindowTweets", "commit_positions", "window_tweets"]

#: Elements per slice where a whole-array temporary would be as big as the run: freed
#: slices of this size are reused by the allocator, fresh big arrays are paged in anew.
CHUNK = 1 << 20


@dataclass
class WindowTweets:
    """What happened to each tweet of the window."""

    processed: np.ndarray  # times committed (0 = lost)
    acked: np.ndarray  # deliveries acknowledged by a client's TCP
    unknown: np.ndarray  # deliveries of unknown fate
    first_commit_at: np.ndarray  # float64, NaN where never committed
    # Commits of window tweets, in commit order: which tweet, who committed it, when.
    commit_offset: np.ndarray  # index - first_index
    commit_pid: np.ndarray
    commit_try: np.ndarray
    commit_at: np.ndarray
    is_first_copy: np.ndarray  # bool: the first commit of its tweet
    unexpected_ids: np.ndarray  # committed ids the stream never created
    # Tweets created before the window (a retry re-reading from an earlier point commits
    # them again): extra copies, per tweet and by (try, pid) of the copy.
    before_extra: np.ndarray  # copies after the first, per repeated tweet
    before_extra_by: list[tuple[int, int]]  # (try, pid) of each extra copy


def window_tweets(history: History) -> WindowTweets:
    cached = history.cache.get("window_tweets")
    if cached is None:
        cached = history.cache["window_tweets"] = _compute(history)
    return cached


def commit_positions(history: History) -> np.ndarray:
    """Per commit (in commit order), where its id is, or would be, among the created ids
    (``np.searchsorted``, left): computed once per history."""
    cached = history.cache.get("commit_positions")
    if cached is None:
        cached = _positions(history.created_ids, history.commits.tweet_ids)
        history.cache["commit_positions"] = cached
    return cached


def _positions(ids: np.ndarray, tweet_ids: np.ndarray) -> np.ndarray:
    """``np.searchsorted(ids, tweet_ids)`` for sorted ``ids``, mostly without searching.

    Snowflake ids count up within their millisecond (the high bits), so a created id's
    index is where its millisecond starts plus its low bits: a table lookup. A guess is
    kept only where ``ids`` holds that very id (strictly increasing ids: the search's
    answer too); the rest, foreign ids, are searched. Ids too sparse for a table (a long,
    slow run) are all searched."""
    if len(ids) == 0 or ids.dtype != np.int64 or tweet_ids.dtype != np.int64:
        return np.searchsorted(ids, tweet_ids)
    low = int(ids[0]) >> _MS_SHIFT
    size = (int(ids[-1]) >> _MS_SHIFT) - low + 1
    if size > 4 * len(ids) or not np.all(ids[1:] > ids[:-1]):
        return np.searchsorted(ids, tweet_ids)
    starts = np.searchsorted(ids, np.arange(low, low + size, dtype=np.int64) << _MS_SHIFT)
    out = np.empty(len(tweet_ids), dtype=np.intp)
    for at in range(0, len(tweet_ids), CHUNK):
        wanted, found = tweet_ids[at : at + CHUNK], out[at : at + CHUNK]
        ms = (wanted >> _MS_SHIFT) - low
        np.clip(ms, 0, size - 1, out=ms)  # out of range: a wrong guess, checked below
        np.add(starts[ms], wanted & (snowflake.MAX_PER_MS - 1), out=found)
        hit = np.take(ids, found, mode="clip") == wanted
        hit &= found < len(ids)
        missed = np.flatnonzero(~hit)
        found[missed] = np.searchsorted(ids, wanted[missed])
    return out


_MS_SHIFT = snowflake.MAX_PER_MS.bit_length() - 1  # an id's millisecond: the bits above


def _coverage(runs: list[tuple[int, int]], lo: int, hi: int) -> np.ndarray:
    """How many of ``runs`` (half-open index ranges) cover each index of ``[lo, hi)``."""
    diff = np.zeros(hi - lo + 1, dtype=np.int64)
    if runs:
        bounds = np.clip(np.array(runs, dtype=np.int64), lo, hi) - lo
        np.add.at(diff, bounds[:, 0], 1)
        np.add.at(diff, bounds[:, 1], -1)
    # In place: a window of tens of millions of tweets needs no second array.
    return np.cumsum(diff[:-1], out=diff[:-1])


def _compute(history: History) -> WindowTweets:
    # Arrays here are per commit or per tweet (tens of millions in a big run): fresh ones
    # cost more than the arithmetic, so masks are combined in place and copies avoided.
    window, commits, ids = history.window, history.commits, history.created_ids
    lo, hi = window.first_index, window.stop_index
    n = max(hi - lo, 0)
    position = commit_positions(history)
    known = _known(ids, commits.tweet_ids, position)
    in_window = position >= lo
    in_window &= position < hi
    in_window &= known
    if in_window.all():  # the usual case: every commit is of a window tweet
        offset = position if lo == 0 else position - lo
        commit_at, commit_pid, commit_try = commits.committed_at, commits.pid, commits.try_number
    else:
        offset = position[in_window]
        offset -= lo
        commit_at = commits.committed_at[in_window]
        commit_pid, commit_try = commits.pid[in_window], commits.try_number[in_window]
    processed = np.bincount(offset, minlength=n)[:n]
    is_first, first_commit_at = _first_copies(offset, processed, commit_at)
    before = position < lo
    before &= known
    before_extra, before_by = _extra_copies(
        position[before], commits.try_number[before], commits.pid[before]
    )
    acked = [(d.first, d.stop) for d in history.deliveries if d.status == "acked"]
    unknown = [(d.first, d.stop) for d in history.deliveries if d.status == "unknown"]
    return WindowTweets(
        processed=processed,
        acked=_coverage(acked, lo, hi),
        unknown=_coverage(unknown, lo, hi),
        first_commit_at=first_commit_at,
        commit_offset=offset,
        commit_pid=commit_pid,
        commit_try=commit_try,
        commit_at=commit_at,
        is_first_copy=is_first,
        unexpected_ids=commits.tweet_ids[~known],
        before_extra=before_extra,
        before_extra_by=before_by,
    )


def _known(ids: np.ndarray, tweet_ids: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Whether each committed id is a created one (``ids[position]`` is it), a slice at a
    time: the ids read back are a few MB at once, never a copy of every commit's."""
    known = position < len(ids)
    if not len(ids):
        return known
    for at in range(0, len(position), CHUNK):
        part = slice(at, at + CHUNK)
        # take(mode="clip") reads ids[min(position, len - 1)]: no clipped copy either.
        known[part] &= np.take(ids, position[part], mode="clip") == tweet_ids[part]
    return known


def _first_copies(
    offset: np.ndarray, processed: np.ndarray, commit_at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each commit (of tweet ``offset``, at ``commit_at``) is its tweet's first, and
    per tweet when that was (NaN: never). Commit order is time order: the first copy is
    the first occurrence. Only the commits of tweets committed more than once are sorted."""
    is_first = (processed == 1)[offset]
    first_commit_at = np.full(len(processed), np.nan)
    first_commit_at[offset] = commit_at  # a repeated tweet gets one of its copies' times...
    repeated = np.flatnonzero(~is_first)
    if len(repeated):
        _, first = np.unique(offset[repeated], return_index=True)
        firsts = repeated[first]
        is_first[firsts] = True
        first_commit_at[offset[firsts]] = commit_at[firsts]  # ... and then its first's
    return is_first, first_commit_at


def _extra_copies(
    position: np.ndarray, try_number: np.ndarray, pid: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per tweet committed more than once, its extra copies; and who made each."""
    if not len(position):
        return np.zeros(0, dtype=np.int64), []
    _, first, counts = np.unique(position, return_index=True, return_counts=True)
    later = np.ones(len(position), dtype=bool)
    later[first] = False  # commit order is time order: the first occurrence came first
    by = list(zip(try_number[later].tolist(), pid[later].tolist(), strict=True))
    return counts[counts > 1] - 1, by
