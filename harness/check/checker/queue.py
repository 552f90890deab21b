"""Did every tweet get processed exactly once? Multiset counts and a verdict.

Jepsen's total-queue checker and Kafka's exactly-once system test, over the window's
tweets (created between the first stream connect and the end of the run minus the grace):

- ``lost``: created, never committed. Split by cause: ``delivered_not_processed`` (a
  client's TCP acknowledged it: the task read it, or could have, and died or exited before
  committing), ``in_flight_unknown`` (written when its connection ended, fate unknown),
  ``never_delivered`` (by the server's drop reason: no consumer connected, queue overflow,
  the connection ending, a fault, ...); of those, ``skipped_by_resume``: a later connection
  started past them without asking for them, and of those, ``beyond_backfill``: the
  connection asked for all the backfill X allows (five minutes, at the stream's
  ``backfill_scale``) and they were older: beyond the access level's reach.
- ``duplicates``: extra commits of tweets committed more than once, with which try and
  process made each extra copy: the window's tweets and those created before it (a retry
  that re-reads from an earlier point), the latter also as ``duplicates_before_window``.
- ``unexpected``: committed ids the stream never created (0 unless something is broken).

Verdict: ``exactly-once`` (nothing lost or repeated), ``at-least-once`` (repeats, no
loss), ``at-most-once`` (loss, no repeats), ``broken`` (both, or unexpected ids);
``unobserved`` when no try ever connected to the stream (every one failed before reading,
or none started: there is no window to count in), or when a DAG the user brought
never reported a commit (``unobserved`` says which: the counts are not the task's);
``incomplete`` when the run was cut at its cap (harness/run/ending.py) before it was
quiet: ``verdict_so_far`` is the verdict of what happened until then, and the tweets the
cut caught queued or in flight are ``pending_at_cut``, not ``lost``.

``silent_failure``: a try ended on its own (before the harness's stop request) with the
state *success* (Airflow's record when the run has one, the probe's otherwise), and tweets
created after its end, before the next try started, were lost: ``silent_failure_tries``
lists them. The end of the run never makes a try "succeed".
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Any

import numpy as np

from fake_stream.ledger import Drop
from harness.check.checker._tweets import window_tweets
from harness.check.checker.base import Result
from harness.check.history import History

__all__ = ["TotalQueueChecker", "cause_rank", "verdict_of"]

MAX_BACKFILL_MINUTES = 5  # X's most (fake_stream/README.md, "Strict X")

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
        uncommitted = tweets.processed == 0
        pending_mask = uncommitted & _caught_by_cut(history, tweets)
        lost_mask = uncommitted & ~pending_mask
        # Counted from ``processed`` itself (copies beyond the first: sum(p) - #(p > 0)):
        # per-tweet arrays of extra copies would be as big as the window.
        processed_total = int(tweets.processed.sum())
        processed_unique = int(np.count_nonzero(tweets.processed))
        repeated = tweets.processed > 1
        before = int(tweets.before_extra.sum())
        lost = int(lost_mask.sum())
        duplicates = processed_total - processed_unique + before
        unexpected = len(tweets.unexpected_ids)
        verdict = so_far = verdict_of(lost, duplicates, unexpected)
        cut = (history.ending or {}).get("how") == "cap"
        if cut:
            verdict = "incomplete"
        unobserved = _unobserved(history)
        if unobserved:
            verdict = "unobserved"
        silent_tries, silent_source = _silent_tries(history, lost_mask)
        return {
            "valid": (
                "unknown" if window.size == 0 or cut or unobserved else verdict == "exactly-once"
            ),
            "verdict": verdict,
            "unobserved": unobserved,
            "verdict_so_far": so_far,
            "silent_failure": bool(silent_tries) if silent_source else "unknown",
            "silent_failure_source": silent_source,
            "silent_failure_tries": silent_tries,
            "ended_by": (history.ending or {}).get("task_ended_by"),
            "pending_at_cut": int(pending_mask.sum()),
            "created": window.size,
            "delivered": int((tweets.acked > 0).sum()),
            "processed_unique": processed_unique,
            "processed_total": processed_total,
            "lost": lost,
            "lost_seconds": _seconds_of_stream(history, lost),
            "lost_by_cause": _lost_by_cause(history, tweets, lost_mask),
            "duplicates": duplicates,
            "duplicated_tweets": int(repeated.sum()) + len(tweets.before_extra),
            "duplicates_before_window": before,
            "duplicates_by_try": _extra_copies_by_try(tweets),
            "unexpected": unexpected,
            "samples": {
                "lost": _ids(history, np.flatnonzero(lost_mask)[:SAMPLE]),
                "duplicated": _duplicate_samples(
                    history, tweets, np.flatnonzero(repeated)[:SAMPLE]
                ),
                "unexpected": tweets.unexpected_ids[:SAMPLE].tolist(),
            },
        }


def _seconds_of_stream(history: History, tweets: int) -> float:
    """``tweets`` as seconds of the window's stream (at its mean rate): a loss that
    follows a downtime grows with it, and this says how long a stretch it was."""
    window = history.window
    if window.size == 0:
        return 0.0
    return round(tweets / window.size * (window.stop - window.start), 3)


def _ids(history: History, offsets: np.ndarray) -> list[str]:
    return [str(i) for i in history.created_ids[offsets + history.window.first_index].tolist()]


def _lost_by_cause(history: History, tweets: Any, lost_mask: np.ndarray) -> dict[str, Any]:
    not_acked = tweets.acked == 0
    delivered = lost_mask & (tweets.acked > 0)
    unknown = lost_mask & not_acked & (tweets.unknown > 0)
    never = lost_mask & not_acked & (tweets.unknown == 0)
    full = {
        op.value.get("conn_id")
        for op in history.ops
        if op.f == "backfill" and op.value.get("minutes") == MAX_BACKFILL_MINUTES
    }
    return {
        "delivered_not_processed": int(delivered.sum()),
        "in_flight_unknown": int(unknown.sum()),
        "never_delivered": int(never.sum()),
        "never_delivered_by_reason": _never_by_reason(history, never),
        "skipped_by_resume": int(never[: _skipped_by_resume(history, len(never))].sum()),
        "beyond_backfill": int(never[: _skipped_by_resume(history, len(never), full)].sum()),
    }


def _never_by_reason(history: History, never: np.ndarray) -> dict[str, int]:
    """The never delivered tweets by the drop reason that names their loss (``unrecorded``:
    the server logged no drop, a ledger gap); reasons that name none are left out."""
    count = int(never.sum())
    if not count or not history.drops:  # no label to look up
        return {"unrecorded": count} if count else {}
    label, reasons = _drop_labels(history, len(never))
    never_labels = label[never]
    by_reason = {reason: int((never_labels == code).sum()) for code, reason in enumerate(reasons)}
    unrecorded = int((never_labels == -1).sum())
    if unrecorded:
        by_reason["unrecorded"] = unrecorded
    return {k: v for k, v in by_reason.items() if v}


def _skipped_by_resume(history: History, n: int, among: set[int] | None = None) -> int:
    """How many of the window's first tweets some connection (of ``among``, by id: all if
    None) opened after their creation did not ask for (it started past them: live, a
    backfill or a ``since_id`` beyond them). Creation times and indexes both grow along the
    window, so what each connection skips is a prefix: the longest is the union."""
    lo = history.window.first_index
    created = history.created_at[lo : lo + n]
    longest = 0
    for c in history.connections:
        if among is not None and c.get("conn_id") not in among:
            continue
        opened, start = c.get("opened_at"), c.get("start_index")
        if start is not None and opened is not None:
            # Each count is what ``<`` over the whole window would give (NaN: none).
            before_open = 0 if math.isnan(opened) else int(np.searchsorted(created, opened))
            below_start = bisect.bisect_left(range(lo, lo + n), start)
            longest = max(longest, min(before_open, below_start))
    return longest


def cause_rank(reason: str) -> tuple[bool, str]:
    """Which drop reason names a tweet's loss when several connections dropped it: a
    connection's own reason before ``no_consumer``, then alphabetical (deterministic,
    and independent of how the ledger split its runs)."""
    return (reason == "no_consumer", reason)


def _drop_labels(history: History, n: int) -> tuple[np.ndarray, list[str]]:
    """Per window tweet, the code of its loss reason (-1: no drop recorded)."""
    lo, hi = history.window.first_index, history.window.stop_index
    reasons = sorted({d.reason for d in history.drops}, key=cause_rank)
    code_of = {reason: code for code, reason in enumerate(reasons)}
    by_code: list[list[Drop]] = [[] for _ in reasons]
    for drop in history.drops:
        by_code[code_of[drop.reason]].append(drop)
    label = np.full(n, -1, dtype=np.int32)
    for code in reversed(range(len(reasons))):  # best-ranked last, so it wins
        for drop in by_code[code]:
            a, b = max(drop.first, lo) - lo, min(drop.stop, hi) - lo
            if a < b:
                label[a:b] = code
    return label, reasons


def _extra_copies_by_try(tweets: Any) -> list[dict[str, int]]:
    """Who committed the copies after a tweet's first commit."""
    extra = ~tweets.is_first_copy
    pairs = Counter(
        zip(tweets.commit_try[extra].tolist(), tweets.commit_pid[extra].tolist(), strict=True)
    )
    pairs.update(tweets.before_extra_by)
    return [{"try": t, "pid": p, "copies": n} for (t, p), n in sorted(pairs.items())]


def _duplicate_samples(history: History, tweets: Any, offsets: np.ndarray) -> list[dict[str, Any]]:
    if not len(offsets):
        return []
    # One pass over every commit finds the sampled tweets' copies, not one pass per sample.
    sampled = np.zeros(len(tweets.processed), dtype=bool)
    sampled[offsets] = True
    hits = np.flatnonzero(sampled[tweets.commit_offset])
    hit_offsets = tweets.commit_offset[hits]
    out = []
    ids = _ids(history, offsets)
    for offset, tweet_id in zip(offsets.tolist(), ids, strict=True):
        where = hits[hit_offsets == offset]  # in commit order
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


def _unobserved(history: History) -> str | None:
    """Why nothing can be judged: no try connected to the stream, or a DAG the user brought
    never reported a commit (``streamstall_probe.committed``)."""
    if not history.connections:
        errors = sorted({t.error for t in history.tries if t.error})
        tries = len(history.tries)
        return (
            "the stream was never read: "
            + (
                f"{tries} {'try' if tries == 1 else 'tries'} started, none connected to it"
                if tries
                else "no try started"
            )
            + (f" (they raised {', '.join(errors)})" if errors else "")
        )
    brought = any(t.start.get("probe") == "streamstall_probe" for t in history.tries)
    if not brought or len(history.commits):
        return None
    return (
        "no commits observed: the task never called streamstall_probe.committed(tweet_ids) "
        "after its commits (docs/your-own-dag.md), so loss cannot be told from silence"
    )


def _caught_by_cut(history: History, tweets: Any) -> np.ndarray:
    """Window tweets a cut run still held somewhere: queued for, in flight to, or read by
    a connection still open when the harness asked the task to stop (a live try's
    memory, a queue's ingester), or queued when the server stopped."""
    caught = np.zeros(len(tweets.processed), dtype=bool)
    ending = history.ending or {}
    if ending.get("how") != "cap":
        return caught
    cut = ending.get("stop_requested_at")
    open_at_cut = {
        c["conn_id"]
        for c in history.connections
        if c.get("closed_at") is None or cut is None or c["closed_at"] >= cut
    }
    lo, hi = history.window.first_index, history.window.stop_index
    runs = [(d.conn_id, d.first, d.stop, "") for d in history.deliveries]
    runs += [(d.conn_id, d.first, d.stop, d.reason) for d in history.drops]
    for conn_id, first, stop, reason in runs:
        a, b = max(first, lo) - lo, min(stop, hi) - lo
        if a < b and (conn_id in open_at_cut or reason == "server_shutdown"):
            caught[a:b] = True
    return caught


def _silent_tries(
    history: History, lost_mask: np.ndarray
) -> tuple[list[dict[str, Any]], str | None]:
    """Tries that succeeded on their own while tweets after them were lost."""
    if not history.tries:
        return [], None
    source = "airflow" if history.airflow_tries else "probe"
    states = {
        (t.get("run_id"), t.get("try_number")): t.get("state") for t in history.airflow_tries or []
    }
    stopped = {
        op.process
        for op in history.ops
        if op.f == "mark" and op.value.get("name") == "stop_request"
    }
    requested = (history.ending or {}).get("stop_requested_at")
    lo = history.window.first_index
    created = history.created_at[lo : lo + len(lost_mask)]
    lost_before: np.ndarray | None = None  # lost_before[i]: lost among the first i tweets
    starts = sorted(t.started_at for t in history.tries)
    out = []
    for t in history.tries:
        state = states.get((t.start.get("run_id"), t.try_number))
        succeeded = state == "success" if state is not None else t.outcome == "ok"
        if not succeeded or t.ended_at is None or str(t.pid) in stopped:
            continue
        if requested is not None and t.ended_at >= requested:
            continue
        following = [s for s in starts if s > t.ended_at]
        until = following[0] if following else math.inf
        if lost_before is None:
            lost_before = np.concatenate(([0], np.cumsum(lost_mask)))
        # Created in [ended_at, until): an index range, creation times being sorted.
        a = int(np.searchsorted(created, t.ended_at, side="left"))
        b = int(np.searchsorted(created, until, side="left"))
        lost_after = int(lost_before[b] - lost_before[a]) if a < b else 0
        if lost_after:
            out.append(
                {
                    "try": t.try_number,
                    "pid": t.pid,
                    "ended_at": t.ended_at,
                    "lost_after": lost_after,
                }
            )
    return out, source
