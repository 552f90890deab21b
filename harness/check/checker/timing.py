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

from harness.check.checker._tweets import window_tweets
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
        latency = tweets.first_commit_at[committed] - created_at[committed]
        duration = max(window.stop - window.start, 1e-9)
        return {
            "valid": True,
            "window_seconds": round(window.stop - window.start, 3),
            "throughput": {
                "mean": round(int(committed.sum()) / duration, 3),
                "per_second": _per_second(
                    tweets.first_commit_at[committed] - window.start, seconds
                ),
            },
            "latency": _latency(latency),
            "lag": _lag(history, seconds),
            "downtime": _downtime(history),
            "recovery": _recovery(history),
            "tries": _tries(history),
            "rss": _rss(history),
            "gil": gil_metrics(history),
        }


def _per_second(offsets: np.ndarray, seconds: int) -> list[int]:
    inside = offsets[(offsets >= 0) & (offsets < seconds)]
    return np.bincount(inside.astype(np.int64), minlength=seconds)[:seconds].tolist()


def _latency(latency: np.ndarray) -> dict[str, float | None]:
    if not len(latency):
        return {name: None for name in [*PERCENTILES, "max", "mean"]}
    values = np.percentile(latency, list(PERCENTILES.values()))
    out = {name: _num(v) for name, v in zip(PERCENTILES, values, strict=True)}
    return {**out, "max": _num(latency.max()), "mean": _num(latency.mean())}


def _lag(history: History, seconds: int) -> dict[str, Any]:
    """Age of the newest committed tweet at the end of each second (None: nothing yet)."""
    commits, window = history.commits, history.window
    if not len(commits):
        return {"per_second": [None] * seconds, "max": None}
    position = np.searchsorted(history.created_ids, commits.tweet_ids)
    known = position < len(history.created_ids)
    newest = np.maximum.accumulate(np.where(known, position, -1))
    times = commits.committed_at
    series = []
    for s in range(seconds):
        at = window.start + s + 1
        k = int(np.searchsorted(times, at, side="right")) - 1
        series.append(None if k < 0 or newest[k] < 0 else _num(at - history.created_at[newest[k]]))
    return {"per_second": series, "max": max((v for v in series if v is not None), default=None)}


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
    times = np.sort(history.commits.committed_at)
    out = []
    for op in history.faults():
        if op.value.get("f") == "stop":
            continue  # a nemesis stop ends a fault; recovery runs from its start
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
