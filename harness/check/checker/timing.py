"""Time metrics: throughput, end-to-end latency, lag, downtime, recovery, tries, memory, GIL.

All times in seconds; series are per second of the window (index 0 = its first second).
Latency is creation -> first commit of each window tweet that was committed; lag at the end
of second ``s`` is how old the newest committed tweet was then.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from harness.check.checker._tweets import CHUNK, commit_positions, window_tweets
from harness.check.checker.base import Result
from harness.check.checker.gil import gil_metrics
from harness.check.history import History

__all__ = ["PERCENTILES", "TimingChecker"]

PERCENTILES = {"p50": 50, "p95": 95, "p99": 99, "p999": 99.9}


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


class TimingChecker:
    """Always ``valid``: it measures, the scenario's hypothesis judges."""

    def check(self, history: History) -> Result:
        tweets = window_tweets(history)
        window = history.window
        seconds = max(math.ceil(window.stop - window.start), 0)
        committed = ~np.isnan(tweets.first_commit_at)
        created_at = history.created_at[window.first_index : window.stop_index]
        latency = _latencies(tweets.first_commit_at, created_at, committed)
        duration = max(window.stop - window.start, 1e-9)
        return {
            "valid": True,
            "window_seconds": round(window.stop - window.start, 3),
            "throughput": {
                "mean": round(int(committed.sum()) / duration, 3),
                "per_second": _per_second(tweets.first_commit_at, window.start, seconds),
            },
            "latency": _latency(latency),
            "lag": _lag(history, seconds),
            "downtime": _downtime(history),
            "recovery": _recovery(history),
            "tries": _tries(history),
            "rss": _rss(history),
            "gil": gil_metrics(history),
        }


# Per-tweet temporaries are made a slice (CHUNK) at a time: a fresh array of a window's
# size costs more to page in than the arithmetic on it.


def _latencies(
    first_commit_at: np.ndarray, created_at: np.ndarray, committed: np.ndarray
) -> np.ndarray:
    """Creation -> first commit of each ``committed`` tweet."""
    latency = first_commit_at[committed]
    done = 0
    for at in range(0, len(committed), CHUNK):
        created = created_at[at : at + CHUNK][committed[at : at + CHUNK]]
        latency[done : done + len(created)] -= created
        done += len(created)
    return latency


def _per_second(first_commit_at: np.ndarray, start: float, seconds: int) -> list[int]:
    """First commits per second of the window (NaN, never committed, falls in none)."""
    counts = np.zeros(seconds, dtype=np.int64)
    for at in range(0, len(first_commit_at), CHUNK):
        offsets = first_commit_at[at : at + CHUNK] - start
        inside = offsets[(offsets >= 0) & (offsets < seconds)]
        counts += np.bincount(inside.astype(np.int64), minlength=seconds)[:seconds]
    return counts.tolist()


def _latency(latency: np.ndarray) -> dict[str, float | None]:
    """Percentiles, max and mean of ``latency``, which it reorders."""
    if not len(latency):
        return {name: None for name in [*PERCENTILES, "max", "mean"]}
    # Max and mean first: the percentiles then partition the array in place, not a copy.
    most, mean = _num(latency.max()), _num(latency.mean())
    values = np.percentile(latency, list(PERCENTILES.values()), overwrite_input=True)
    out = {name: _num(v) for name, v in zip(PERCENTILES, values, strict=True)}
    return {**out, "max": most, "mean": mean}


def _lag(history: History, seconds: int) -> dict[str, Any]:
    """Age of the newest committed tweet at the end of each second (None: nothing yet)."""
    commits, window = history.commits, history.window
    if not len(commits):
        return {"per_second": [None] * seconds, "max": None}
    ends = [window.start + s + 1 for s in range(seconds)]
    # The last commit by the end of each second: one search for all of them.
    last = np.searchsorted(commits.committed_at, ends, side="right") - 1
    newest = _newest_known(commit_positions(history), len(history.created_ids), last)
    series = []
    for at, k, p in zip(ends, last.tolist(), newest.tolist(), strict=True):
        series.append(None if k < 0 or p < 0 else _num(at - history.created_at[p]))
    return {"per_second": series, "max": max((v for v in series if v is not None), default=None)}


def _newest_known(position: np.ndarray, created: int, last: np.ndarray) -> np.ndarray:
    """For each commit index of ``last`` (-1: none yet), the highest tweet index committed
    up to it (``position``, ignoring those ``>= created``: not a created id); -1: none.
    Maxima of the stretches between the asked indexes, then a running max of those few:
    no running max over every commit."""
    out = np.full(len(last), -1, dtype=np.int64)
    asked = last >= 0
    if not asked.any():
        return out
    ks = np.unique(last[asked])
    head = position[: ks[-1] + 1]
    if head.max() >= created:  # a foreign id: it counts as no tweet
        head = np.where(head < created, head, -1)
    stretches = np.maximum.reduceat(head, np.concatenate(([0], ks[:-1] + 1)))
    out[asked] = np.maximum.accumulate(stretches)[np.searchsorted(ks, last[asked])]
    return out


def _downtime(history: History) -> dict[str, Any]:
    """Periods of the window with no stream connection open."""
    window = history.window
    spans = sorted(
        (c["opened_at"], c["closed_at"] if c.get("closed_at") is not None else window.stop)
        for c in history.connections
    )
    periods, cursor = [], window.start
    for opened, closed in spans:
        if opened > cursor and cursor < window.stop:
            periods.append((cursor, min(opened, window.stop)))
        cursor = max(cursor, closed)
    if cursor < window.stop:
        periods.append((cursor, window.stop))
    total = sum(b - a for a, b in periods)
    listed = [{"start": _num(a), "seconds": _num(b - a)} for a, b in periods if b > a]
    return {"seconds": _num(total), "periods": listed}


def _recovery(history: History) -> list[dict[str, Any]]:
    """For each fault, seconds from it to the first commit after it (None: never)."""
    faults = [op for op in history.faults() if op.value.get("f") != "stop"]
    if not faults:
        return []  # most runs: no sort of every commit time for nothing
    times = history.commits.committed_at
    if not np.all(times[1:] >= times[:-1]):  # commit order is almost always time order
        times = np.sort(times)
    out = []
    for op in faults:  # a nemesis stop ends a fault; recovery runs from its start
        k = int(np.searchsorted(times, op.time, side="right"))
        name = op.value.get("fault") or op.value.get("name") or op.f
        effect = op.value.get("effect") or op.value.get("f")
        out.append(
            {
                "fault": name,
                "effect": effect,
                "at": _num(op.time),
                "recovery_seconds": _num(times[k] - op.time) if k < len(times) else None,
            }
        )
    return out


def _tries(history: History) -> dict[str, Any]:
    tries = [
        {
            "try": t.try_number,
            "pid": t.pid,
            "started_at": t.started_at,
            "ended_at": t.ended_at,
            "outcome": t.outcome,
            "how": t.how,
            "error": t.error,
            "worker": t.start.get("worker"),  # the celery mode's worker name (else None)
        }
        for t in sorted(history.tries, key=lambda t: t.started_at)
    ]
    return {"count": len(tries), "restarts": max(len(tries) - 1, 0), "list": tries}


def _rss(history: History) -> dict[str, Any]:
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for op in history.ops:
        if op.f == "rss":
            series[op.process].append((op.time, op.value["bytes"]))
    return {
        pid: {"max_bytes": max(b for _, b in points), "series": [[_num(t), b] for t, b in points]}
        for pid, points in series.items()
    }
