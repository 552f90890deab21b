"""GIL metrics: each sampled process's contention, CPU, threads and reader lag over time.

Reads the probe's ``info gil`` operations (:mod:`harness.gil`) and summarises them per
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

from harness.history import History, Op

__all__ = ["SERIES_FIELDS", "gil_metrics"]

#: The per-sample fields kept in each process's series (see harness.gil.GilSampler.sample).
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
    with_values = [p for p in per_process if p["samples"]]
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
    values = np.array([op.value["contention"] for op in ops], dtype=np.float64)
    lags = [op.value.get("reader_lag_s") for op in ops]
    series: dict[str, list[Any]] = {"time": [_num(op.time) for op in ops]}
    for name in SERIES_FIELDS:
        series[name] = [op.value.get(name) for op in ops]
    return {
        "pid": int(pid),
        "try": first.get("try"),
        "role": first.get("role", "task"),
        "mean": _num(values.mean()),
        "p95": _num(np.percentile(values, 95)),
        "samples": len(ops),
        "knock_mean": _num(np.mean([op.value["knock"] for op in ops])),
        "cpu_ratio": _num(sum(series["cpu_s"]) / max(sum(series["wall_s"]), 1e-9)),
        "reader_lag_max_s": max((v for v in lags if v is not None), default=None),
        "series": series,
    }
