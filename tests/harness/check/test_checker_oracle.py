"""The checker against an obviously-correct oracle (sets and Counters) on random histories:
random creation, connections delivering and dropping, commits with repeats and foreign ids.
They must agree on every count, for thousands of examples."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings

from harness.check.checker import SequenceChecker, TimingChecker, TotalQueueChecker
from harness.check.history import load_history
from tests.harness.check._histories import Spec, history_of, specs, try_times, write_run


def oracle(spec: Spec) -> dict:
    """Plain Python, sharing no code with the checker."""
    ids, times = spec.created()
    index_of = {tweet_id: i for i, tweet_id in enumerate(ids)}
    opened = spec.opened_at
    start = min(opened) if opened else spec.stopped_at
    stop = max(spec.stopped_at - spec.grace, start)
    window = [i for i, t in enumerate(times) if start <= t < stop]
    in_window = set(window)
    committed = Counter()
    unexpected = 0
    for _, _, _, batch in spec.commits:
        for tweet_id in batch:
            if tweet_id not in index_of:
                unexpected += 1
            elif index_of[tweet_id] in in_window:
                committed[index_of[tweet_id]] += 1
    acked = {i for _, a, b, status in spec.deliveries if status == "acked" for i in range(a, b)}
    unknown = {i for _, a, b, status in spec.deliveries if status == "unknown" for i in range(a, b)}
    cut = (spec.ending or {}).get("how") == "cap"
    # A cut run: what a connection open at the cut was owed or had read (every connection
    # of a Spec stays open), or the server still queued when it stopped, is pending.
    held = {i for c, a, b, _ in spec.deliveries for i in range(a, b) if c is not None}
    held |= {i for c, a, b, r in spec.drops for i in range(a, b) if c or r == "server_shutdown"}
    pending = [i for i in window if cut and committed[i] == 0 and i in held]
    lost = [i for i in window if committed[i] == 0 and i not in pending]
    never = [i for i in lost if i not in acked and i not in unknown]
    by_reason = Counter()
    for i in never:
        reasons = {r for _, a, b, r in spec.drops if a <= i < b}
        by_reason[
            min(reasons, key=lambda r: (r == "no_consumer", r)) if reasons else "unrecorded"
        ] += 1
    before = Counter(  # commits of tweets created before the window
        index_of[tweet_id]
        for _, _, _, batch in spec.commits
        for tweet_id in batch
        if tweet_id in index_of and times[index_of[tweet_id]] < start
    )
    before_dups = sum(n - 1 for n in before.values())
    duplicates = sum(n - 1 for n in committed.values()) + before_dups
    if unexpected or (lost and duplicates):
        verdict = "broken"
    elif lost:
        verdict = "at-most-once"
    elif duplicates:
        verdict = "at-least-once"
    else:
        verdict = "exactly-once"
    # Extra copies by (try, pid): every commit of a window tweet after its first one.
    seen, extra = set(), Counter()
    for _, pid, try_number, batch in spec.commits:
        for tweet_id in batch:
            i = index_of.get(tweet_id)
            if i in in_window or i in before:
                if i in seen:
                    extra[(try_number, pid)] += 1
                seen.add(i)
    gaps = _runs([i for i in window if committed[i] == 0])
    repeats = _runs([i for i in window if committed[i] > 1])
    return {
        "verdict_so_far": verdict,
        "pending_at_cut": len(pending),
        "silent_failure_tries": _silent(spec, times, set(lost)),
        "created": len(window),
        "delivered": len(in_window & acked),
        "processed_unique": len(committed),
        "processed_total": sum(committed.values()),
        "lost": len(lost),
        "duplicates": duplicates,
        "duplicates_before_window": before_dups,
        "unexpected": unexpected,
        # No connection was ever opened: no window, nothing to judge.
        "verdict": "unobserved" if not opened else "incomplete" if cut else verdict,
        "lost_by_cause": {
            "delivered_not_processed": sum(1 for i in lost if i in acked),
            "in_flight_unknown": sum(1 for i in lost if i not in acked and i in unknown),
            "never_delivered": len(never),
            "never_delivered_by_reason": dict(by_reason),
            # A connection opened after the tweet was created that started past it.
            "skipped_by_resume": sum(
                1
                for i in never
                if any(
                    start is not None and times[i] < opened and i < start
                    for opened, start in zip(spec.opened_at, spec.start_index or [], strict=False)
                )
            ),
            "beyond_backfill": 0,  # these histories hold no backfill connection
        },
        "duplicates_by_try": [
            {"try": t, "pid": p, "copies": n} for (t, p), n in sorted(extra.items())
        ],
        "gaps": (len(gaps), sum(len(g) for g in gaps)),
        "repeats": (len(repeats), sum(len(r) for r in repeats)),
    }


def _silent(spec: Spec, times: list[float], lost: set[int]) -> list[dict]:
    """Tries that returned before the stop request, not having read it, with tweets
    created after their end (until the next start) lost."""
    requested = (spec.ending or {}).get("stop_requested_at")
    tries = [try_times(t) for t in spec.tries]
    out = []
    for pid, number, outcome, _, ended in tries:
        if outcome != "ok" or ended is None or pid in spec.stop_marks:
            continue
        if requested is not None and ended >= requested:
            continue
        until = min((t[3] for t in tries if t[3] > ended), default=float("inf"))
        after = sum(1 for i in lost if ended <= times[i] < until)
        if after:
            out.append({"try": number, "pid": pid, "ended_at": ended, "lost_after": after})
    return out


def _runs(indexes: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in indexes:
        if out and out[-1][-1] == i - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _checked(history) -> dict:
    queue = TotalQueueChecker().check(history)
    sequence = SequenceChecker().check(history)
    return {
        **{k: queue[k] for k in ("created", "delivered", "processed_unique", "processed_total",
                                 "lost", "duplicates", "unexpected", "verdict", "lost_by_cause",
                                 "duplicates_by_try", "duplicates_before_window",
                                 "verdict_so_far", "pending_at_cut", "silent_failure_tries")},
        "gaps": (sequence["gaps"]["count"], sequence["gaps"]["tweets"]),
        "repeats": (sequence["repeats"]["count"], sequence["repeats"]["tweets"]),
    }  # fmt: skip


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(specs())
def test_checker_agrees_with_the_oracle(spec):
    assert _checked(history_of(spec)) == oracle(spec)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(specs())
def test_timing_agrees_with_the_oracle(spec):
    """Latency percentiles and throughput from first commits, recomputed naively."""
    history = history_of(spec)
    timing = TimingChecker().check(history)
    ids, times = spec.created()
    window = history.window
    first_commit: dict[int, float] = {}
    for at, _, _, batch in spec.commits:
        for tweet_id in batch:
            if tweet_id in ids:
                i = ids.index(tweet_id)
                if window.first_index <= i < window.stop_index:
                    first_commit.setdefault(i, at)
    latencies = [first_commit[i] - times[i] for i in first_commit]
    if latencies:
        assert timing["latency"]["p50"] == round(float(np.percentile(latencies, 50)), 6)
        assert timing["latency"]["max"] == round(max(latencies), 6)
    else:
        assert timing["latency"]["p50"] is None
    duration = max(window.stop - window.start, 1e-9)
    assert timing["throughput"]["mean"] == round(len(first_commit) / duration, 3)


@settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(specs(max_slots=20))
def test_files_round_trip_to_the_same_counts(tmp_path_factory, spec):
    """Written by the real ledger writer and sink, read back by load_history: the queue and
    sequence counts are those of the in-memory history (which the oracle vouches for)."""
    run_dir = tmp_path_factory.mktemp("run")
    write_run(spec, run_dir)
    assert _checked(load_history(run_dir)) == oracle(spec)
