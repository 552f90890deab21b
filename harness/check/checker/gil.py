"""GIL metrics: each sampled process's contention, CPU, threads and reader lag over time.

Reads the probe's ``info gil`` operations (:mod:`harness.task.gil`) and summarises them per
process for ``metrics.json`` under ``timing.gil``; the top-level ``mean`` and ``p95`` are
the worst process's, so one contended process is enough to show. The series are
column-wise (one list per field, aligned on ``time``), ready to chart against throughput,
the server's queue and losses.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from harness.check.history import History, Op

__all__ = ["SERIES_FIELDS", "gil_metrics"]

#: The per-sample fields kept in each process's series (see harness.task.gil.GilSampler.sample).
SERIES_FIELDS = (
    "contention",
    "knock",
    "cpu_s",
    "wall_s",
    "threads",
    "active_threads",
    "reader_lag_s",
    "reads",
    "reader_behind_s",
)


def _num(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def gil_metrics(history: History) -> dict[str, Any]:
    samples: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.f == "gil":
            samples[op.process].append(op)
    per_process = [_process(pid, ops) for pid, ops in samples.items()]
    per_process.sort(key=lambda p: (p["try"], p["role"] != "task", p["pid"]))
    with_values = [p for p in per_process if p["samples"]]  # None: no knock ever closed
    lags = [p["reader_lag_max_s"] for p in per_process if p["reader_lag_max_s"] is not None]
    intervals = {op.value.get("interval_s") for ops in samples.values() for op in ops}
    return {
        "interval_s": _num(max(i for i in intervals if i is not None)) if intervals else None,
        "per_process": per_process,
        "mean": max((p["mean"] for p in with_values), default=None),
        "p95": max((p["p95"] for p in with_values), default=None),
        "reader_lag_max_s": max(lags, default=None),
    }


def _process(pid: str, ops: list[Op]) -> dict[str, Any]:
    first = ops[0].value
    series: dict[str, list[Any]] = {"time": [_num(op.time) for op in ops]}
    for name in SERIES_FIELDS:
        series[name] = [op.value.get(name) for op in ops]
    values = np.array([v for v in series["contention"] if v is not None], dtype=np.float64)
    knocks = [v for v in series["knock"] if v is not None]
    lags = [v for v in series["reader_lag_s"] if v is not None]
    return {
        "pid": int(pid),
        "try": first.get("try"),
        "role": first.get("role", "task"),
        "mean": _num(values.mean()) if len(values) else None,
        "p95": _num(np.percentile(values, 95)) if len(values) else None,
        "samples": len(values),
        "knock_mean": _num(np.mean(knocks)) if knocks else None,
        "cpu_ratio": _num(sum(series["cpu_s"]) / max(sum(series["wall_s"]), 1e-9)),
        "reader_lag_max_s": max(lags, default=None),
        "series": series,
    }
