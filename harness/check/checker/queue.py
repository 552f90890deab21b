"""Did every tweet get processed exactly once? Multiset counts and a verdict.

Jepsen's total-queue checker and Kafka's exactly-once system test, over the window's
tweets (created between the first stream connect and the end of the run minus the grace):

- ``lost``: created, never committed. Split by cause: ``delivered_not_processed`` (a
  client's TCP acknowledged it: the task read it, or could have, and died or exited before
  committing), ``in_flight_unknown`` (written when its connection ended, fate unknown),
  ``never_delivered`` (by the server's drop reason: no consumer connected, queue overflow,
  the connection ending, a fault, ...).
- ``duplicates``: extra commits of tweets committed more than once, with which try and
  process made each extra copy.
- ``unexpected``: committed ids the stream never created (0 unless something is broken).

Verdict: ``exactly-once`` (nothing lost or repeated), ``at-least-once`` (repeats, no
loss), ``at-most-once`` (loss, no repeats), ``broken`` (both, or unexpected ids).
``silent_failure``: the task was reported successful although tweets were lost (Airflow's
recorded states when the run has them, the probe's exit records otherwise).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from harness.check.checker._tweets import window_tweets
from harness.check.checker.base import Result
from harness.check.history import History

__all__ = ["TotalQueueChecker", "cause_rank", "verdict_of"]

SAMPLE = 20  # ids listed per category (totals are always complete)


def verdict_of(lost: int, duplicates: int, unexpected: int) -> str:
    if unexpected or (lost and duplicates):
        return "broken"
    if lost:
        return "at-most-once"
    if duplicates:
        return "at-least-once"
    return "exactly-once"


class TotalQueueChecker:
    """Counts, causes and verdict; ``valid`` means exactly-once."""

    def check(self, history: History) -> Result:
        tweets = window_tweets(history)
        window = history.window
        lost_mask = tweets.processed == 0
        extra = np.maximum(tweets.processed - 1, 0)
        lost, duplicates = int(lost_mask.sum()), int(extra.sum())
        unexpected = len(tweets.unexpected_ids)
        verdict = verdict_of(lost, duplicates, unexpected)
        silent, silent_source = _silent_failure(history, lost)
        return {
            "valid": "unknown" if window.size == 0 else verdict == "exactly-once",
            "verdict": verdict,
            "silent_failure": silent,
            "silent_failure_source": silent_source,
            "created": window.size,
            "delivered": int((tweets.acked > 0).sum()),
            "processed_unique": int((tweets.processed > 0).sum()),
            "processed_total": int(tweets.processed.sum()),
            "lost": lost,
            "lost_by_cause": _lost_by_cause(history, tweets, lost_mask),
            "duplicates": duplicates,
            "duplicated_tweets": int((extra > 0).sum()),
            "duplicates_by_try": _extra_copies_by_try(tweets),
            "unexpected": unexpected,
            "samples": {
                "lost": _ids(history, np.flatnonzero(lost_mask)[:SAMPLE]),
                "duplicated": _duplicate_samples(history, tweets, np.flatnonzero(extra)[:SAMPLE]),
                "unexpected": tweets.unexpected_ids[:SAMPLE].tolist(),
            },
        }


def _ids(history: History, offsets: np.ndarray) -> list[str]:
    return [str(i) for i in history.created_ids[offsets + history.window.first_index].tolist()]


def _lost_by_cause(history: History, tweets: Any, lost_mask: np.ndarray) -> dict[str, Any]:
    delivered = lost_mask & (tweets.acked > 0)
    unknown = lost_mask & (tweets.acked == 0) & (tweets.unknown > 0)
    never = lost_mask & (tweets.acked == 0) & (tweets.unknown == 0)
    label, reasons = _drop_labels(history, len(lost_mask))
    never_labels = label[never]
    by_reason = {reason: int((never_labels == code).sum()) for code, reason in enumerate(reasons)}
    unrecorded = int((never_labels == -1).sum())
    if unrecorded:
        by_reason["unrecorded"] = unrecorded  # the server logged no drop: a ledger gap
    return {
        "delivered_not_processed": int(delivered.sum()),
        "in_flight_unknown": int(unknown.sum()),
        "never_delivered": int(never.sum()),
        "never_delivered_by_reason": {k: v for k, v in by_reason.items() if v},
    }


def cause_rank(reason: str) -> tuple[bool, str]:
    """Which drop reason names a tweet's loss when several connections dropped it: a
    connection's own reason before ``no_consumer``, then alphabetical (deterministic,
    and independent of how the ledger split its runs)."""
    return (reason == "no_consumer", reason)


def _drop_labels(history: History, n: int) -> tuple[np.ndarray, list[str]]:
    """Per window tweet, the code of its loss reason (-1: no drop recorded)."""
    lo, hi = history.window.first_index, history.window.stop_index
    reasons = sorted({d.reason for d in history.drops}, key=cause_rank)
    label = np.full(n, -1, dtype=np.int32)
    for code in reversed(range(len(reasons))):  # best-ranked last, so it wins
        for drop in history.drops:
            a, b = max(drop.first, lo) - lo, min(drop.stop, hi) - lo
            if drop.reason == reasons[code] and a < b:
                label[a:b] = code
    return label, reasons


def _extra_copies_by_try(tweets: Any) -> list[dict[str, int]]:
    """Who committed the copies after a tweet's first commit."""
    extra = ~tweets.is_first_copy
    pairs = Counter(
        zip(tweets.commit_try[extra].tolist(), tweets.commit_pid[extra].tolist(), strict=True)
    )
    return [{"try": t, "pid": p, "copies": n} for (t, p), n in sorted(pairs.items())]


def _duplicate_samples(history: History, tweets: Any, offsets: np.ndarray) -> list[dict[str, Any]]:
    out = []
    ids = _ids(history, offsets)
    for offset, tweet_id in zip(offsets.tolist(), ids, strict=True):
        where = np.flatnonzero(tweets.commit_offset == offset)
        copies = [
            {
                "try": int(tweets.commit_try[i]),
                "pid": int(tweets.commit_pid[i]),
                "at": float(tweets.commit_at[i]),
            }
            for i in where
        ]
        out.append({"id": tweet_id, "copies": copies})
    return out


def _silent_failure(history: History, lost: int) -> tuple[bool | str, str | None]:
    if history.airflow_tries:
        succeeded = any(t.get("state") == "success" for t in history.airflow_tries)
        return bool(lost and succeeded), "airflow"
    if history.tries:
        return bool(lost and any(t.outcome == "ok" for t in history.tries)), "probe"
    return "unknown", None
