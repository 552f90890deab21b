"""The headline numbers of a scenario, as the report's table and the comparison show them.

One place decides what each column means and how it is written, so the report, the
comparison and the tests read the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.report.runs import ScenarioRun

__all__ = ["COLUMNS", "MISSING", "Headline", "fmt", "headline"]

#: A value not measured (no metrics, no fault to recover from).
MISSING = "-"


@dataclass(frozen=True)
class Headline:
    """One scenario's row. ``recovery_s``: the slowest recovery after a fault; ``never`` is
    True when some fault had no commit after it (the value is then None)."""

    scenario: str
    variant: str
    fault: str
    verdict: str
    hypothesis_held: bool | None
    lost: int | None
    duplicates: int | None
    throughput: float | None
    p99_latency_s: float | None
    recovery_s: float | None
    never_recovered: bool
    silent_failure: Any
    error: str | None


#: (attribute, column heading, right-aligned)
COLUMNS: list[tuple[str, str, bool]] = [
    ("scenario", "scenario", False),
    ("variant", "variant", False),
    ("fault", "fault", False),
    ("verdict", "verdict", False),
    ("hypothesis_held", "hypothesis", False),
    ("lost", "lost", True),
    ("duplicates", "duplicates", True),
    ("throughput", "throughput (tweets/s)", True),
    ("p99_latency_s", "p99 latency (s)", True),
    ("recovery_s", "recovery (s)", True),
    ("silent_failure", "silent failure", False),
]


def headline(run: ScenarioRun) -> Headline:
    metrics = run.metrics or {}
    recoveries = run.timing.get("recovery", [])
    seconds = [r["recovery_seconds"] for r in recoveries if r.get("recovery_seconds") is not None]
    return Headline(
        scenario=run.name,
        variant=run.variant,
        fault=run.fault,
        verdict=str(metrics.get("verdict") or ("error" if run.error else "unknown")),
        hypothesis_held=metrics.get("hypothesis", {}).get("held"),
        lost=run.queue.get("lost"),
        duplicates=run.queue.get("duplicates"),
        throughput=run.timing.get("throughput", {}).get("mean"),
        p99_latency_s=run.timing.get("latency", {}).get("p99"),
        recovery_s=max(seconds) if seconds else None,
        never_recovered=any(r.get("recovery_seconds") is None for r in recoveries),
        silent_failure=metrics.get("silent_failure"),
        error=run.error,
    )


def fmt(row: Headline, attribute: str) -> str:
    """A cell as the report writes it: counts with thousands separators, seconds and rates
    with a fixed number of decimals, missing values as ``MISSING``."""
    value = getattr(row, attribute)
    if attribute == "hypothesis_held":
        return {True: "held", False: "FAILED"}.get(value, MISSING)
    if attribute == "recovery_s":
        if row.never_recovered:
            return "never"
        return MISSING if value is None else f"{value:.2f}"
    if value is None:
        return MISSING
    if attribute in ("lost", "duplicates"):
        return f"{int(value):,}"
    if attribute == "throughput":
        return f"{float(value):,.1f}"
    if attribute == "p99_latency_s":
        return f"{float(value):.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
