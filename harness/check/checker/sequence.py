"""Gaps and repeats in id order, as ranges (Flink's per-key sequence check).

Over the window's tweets in creation (= id) order: a *gap* is a maximal run of tweets
never committed; a *repeat* is a maximal run of tweets committed more than once. Each is
listed as ``{"first_id", "last_id", "count"}`` (capped), with complete totals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.check.checker._tweets import window_tweets
from harness.check.checker.base import Result
from harness.check.history import History

__all__ = ["SequenceChecker", "runs"]

LISTED = 50


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the maximal runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([False], mask, [False])).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


class SequenceChecker:
    """``valid`` when there is neither a gap nor a repeat."""

    def check(self, history: History) -> Result:
        tweets = window_tweets(history)
        gaps = self._ranges(history, tweets.processed == 0)
        repeats = self._ranges(history, tweets.processed > 1)
        valid: bool | str = gaps["count"] == 0 and repeats["count"] == 0
        return {
            "valid": "unknown" if history.window.size == 0 else valid,
            "gaps": gaps,
            "repeats": repeats,
        }

    @staticmethod
    def _ranges(history: History, mask: np.ndarray) -> dict[str, Any]:
        starts, ends = runs(mask)
        base = history.window.first_index
        first_ids = history.created_ids[starts[:LISTED] + base].tolist()
        last_ids = history.created_ids[ends[:LISTED] - 1 + base].tolist()
        lengths = (ends - starts).tolist()
        return {
            "count": len(starts),
            "tweets": int(sum(lengths)),
            "longest": int(max(lengths, default=0)),
            "ranges": [
                {"first_id": str(a), "last_id": str(b), "count": n}
                for a, b, n in zip(first_ids, last_ids, lengths[:LISTED], strict=True)
            ],
        }
