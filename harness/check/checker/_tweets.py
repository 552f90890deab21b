"""Per-tweet arrays over the window, computed once per history and shared by checkers.

All arrays are indexed by ``tweet index - window.first_index``. The one sort of the whole
run (``np.unique`` over committed indexes) happens here; everything else is linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.check.history import History

__all__ = ["WindowTweets", "window_tweets"]


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


def _coverage(runs: list[tuple[int, int]], lo: int, hi: int) -> np.ndarray:
    """How many of ``runs`` (half-open index ranges) cover each index of ``[lo, hi)``."""
    diff = np.zeros(hi - lo + 1, dtype=np.int64)
    if runs:
        bounds = np.clip(np.array(runs, dtype=np.int64), lo, hi) - lo
        np.add.at(diff, bounds[:, 0], 1)
        np.add.at(diff, bounds[:, 1], -1)
    return np.cumsum(diff[:-1])


def _compute(history: History) -> WindowTweets:
    window, commits, ids = history.window, history.commits, history.created_ids
    lo, hi = window.first_index, window.stop_index
    n = max(hi - lo, 0)
    position = np.searchsorted(ids, commits.tweet_ids)
    clipped = np.minimum(position, max(len(ids) - 1, 0))
    known = (
        (position < len(ids)) & (ids[clipped] == commits.tweet_ids) if len(ids) else position < 0
    )
    in_window = known & (position >= lo) & (position < hi)
    offset = position[in_window] - lo
    processed = np.bincount(offset, minlength=n)[:n]
    commit_at = commits.committed_at[in_window]
    first_commit_at = np.full(n, np.nan)
    is_first = np.zeros(len(offset), dtype=bool)
    if len(offset):
        # Commit order is time order: the first occurrence of a tweet is its first commit.
        _, first_positions = np.unique(offset, return_index=True)
        is_first[first_positions] = True
        first_commit_at[offset[first_positions]] = commit_at[first_positions]
    before = known & (position < lo)
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
        commit_pid=commits.pid[in_window],
        commit_try=commits.try_number[in_window],
        commit_at=commit_at,
        is_first_copy=is_first,
        unexpected_ids=commits.tweet_ids[~known],
        before_extra=before_extra,
        before_extra_by=before_by,
    )


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
