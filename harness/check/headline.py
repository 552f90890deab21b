"""The headline metrics: one definition of each (its name, where ``metrics.json`` holds it,
its heading and how it is written), used by hypotheses, ``summary.json`` /
``summary.md``, the line printed after each scenario, the report and the comparison.

A scenario's headline :func:`row` is a plain dict (it is what ``summary.json`` lists), so
whoever reads a results folder reads the same thing the run wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BY_NAME",
    "COLUMNS",
    "METRICS",
    "MISSING",
    "Metric",
    "causes_text",
    "fault_label",
    "fmt",
    "lost_by_cause",
    "row",
    "subject",
]

#: A value not measured (no metrics, no fault to recover from).
MISSING = "-"


def _at(path: str) -> Callable[[dict[str, Any]], Any]:
    def read(metrics: dict[str, Any]) -> Any:
        value: Any = metrics
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return read


def _slowest(metrics: dict[str, Any]) -> float | None:
    seconds = [
        r["recovery_seconds"]
        for r in _at("timing.recovery")(metrics) or []
        if r.get("recovery_seconds") is not None
    ]
    return max(seconds) if seconds else None


@dataclass(frozen=True)
class Metric:
    """One headline metric.

    :param name: its name in hypotheses, ``summary.json`` and tables.
    :param path: where ``metrics.json`` holds it (dotted), or how it is derived.
    :param kind: how it is written: ``count``, ``rate``, ``seconds``, ``flag`` or ``text``.
    :param column: whether it is a column of the summary tables (else: hypotheses only).
    """

    name: str
    path: str
    heading: str
    kind: str
    column: bool = True
    read: Callable[[dict[str, Any]], Any] | None = None

    def value(self, metrics: dict[str, Any]) -> Any:
        if self.name in _NOT_COUNTED and metrics.get("verdict") == "unobserved":
            return None  # nothing was observed to count: "not measured", never a 0 that holds
        return (self.read or _at(self.path))(metrics)


#: What an ``unobserved`` run (queue checker: no try read the stream, or a DAG you brought
#: reported no commit) has no value for.
_NOT_COUNTED = frozenset({"lost", "lost_seconds", "duplicates", "processed"})

#: In column order. ``recovery_s`` is the slowest recovery after any fault.
METRICS: list[Metric] = [
    Metric("verdict", "verdict", "verdict", "text"),
    Metric("hypothesis_held", "hypothesis.held", "hypothesis", "flag"),
    Metric("created", "queue.created", "created", "count"),
    Metric("lost", "queue.lost", "lost", "count"),
    Metric("lost_seconds", "queue.lost_seconds", "lost (s of stream)", "seconds", column=False),
    Metric("duplicates", "queue.duplicates", "duplicates", "count"),
    Metric("unexpected", "queue.unexpected", "unexpected", "count", column=False),
    Metric("processed", "queue.processed_unique", "processed", "count", column=False),
    Metric("throughput", "timing.throughput.mean", "throughput (tweets/s)", "rate"),
    Metric("p50_latency_s", "timing.latency.p50", "p50 latency (s)", "seconds", column=False),
    Metric("p99_latency_s", "timing.latency.p99", "p99 latency (s)", "seconds"),
    Metric("max_latency_s", "timing.latency.max", "max latency (s)", "seconds", column=False),
    Metric("downtime_s", "timing.downtime.seconds", "downtime (s)", "seconds", column=False),
    Metric("recovery_s", "timing.recovery (slowest)", "recovery (s)", "seconds", True, _slowest),
    Metric("silent_failure", "silent_failure", "silent failure", "flag"),
    Metric("pending_at_cut", "queue.pending_at_cut", "pending at cut", "count", column=False),
    Metric("verdict_so_far", "queue.verdict_so_far", "verdict so far", "text", column=False),
    Metric("ended_by", "queue.ended_by", "task ended by", "text", column=False),
]
BY_NAME = {m.name: m for m in METRICS}
#: Not columns, but in every row: how the run ended (the report's verdict grid shows them)
#: and the loss as seconds of stream.
_IN_EVERY_ROW = ("pending_at_cut", "verdict_so_far", "ended_by", "lost_seconds")

#: ``(key, heading, right-aligned)`` of every summary table, identity columns first; the
#: loss by cause follows the loss.
COLUMNS: list[tuple[str, str, bool]] = [
    ("scenario", "scenario", False),
    ("variant", "variant", False),
    ("fault", "fault", False),
    *[
        column
        for m in METRICS
        if m.column
        for column in [(m.name, m.heading, m.kind in ("count", "rate", "seconds"))]
        + ([("lost_by_cause", "lost by cause", False)] if m.name == "lost" else [])
    ],
]

#: What each cause of loss in ``queue.lost_by_cause`` is called in tables; the server's
#: drop reasons (``never_delivered_by_reason``) not listed here keep their own name.
CAUSES = {
    "delivered_not_processed": "delivered, not committed",
    "in_flight_unknown": "in flight at a disconnect",
    "no_consumer": "no connection open",
    "client_closed": "connection closing",
    "queue_overflow": "server queue overflow",
    "unrecorded": "unrecorded (a ledger gap)",
}


def causes_text(causes: dict[str, int]) -> str:
    """``no connection open 5,223; delivered, not committed 21``."""
    return "; ".join(f"{cause} {count:,}" for cause, count in causes.items())


def lost_by_cause(metrics: dict[str, Any]) -> dict[str, int]:
    """The lost tweets by cause, largest first: each tweet counted once (those never
    delivered under the server's drop reason), so the counts add up to ``lost``."""
    causes = (metrics.get("queue") or {}).get("lost_by_cause") or {}
    counts = {
        "delivered_not_processed": causes.get("delivered_not_processed", 0),
        "in_flight_unknown": causes.get("in_flight_unknown", 0),
        **(causes.get("never_delivered_by_reason") or {}),
    }
    named = {CAUSES.get(k, k.replace("_", " ")): int(v) for k, v in counts.items() if v}
    return dict(sorted(named.items(), key=lambda kv: -kv[1]))


def subject(scenario: dict[str, Any]) -> str:
    """What a scenario puts under test: its variant, or the id of the DAG it brought."""
    return str(scenario.get("variant") or scenario.get("dag_id") or "?")


def fault_label(name: str, scenario: dict[str, Any]) -> str:
    """The fault set of a scenario: its name's part after ``<variant>-`` (matrix naming),
    or the faults it injects."""
    prefix = f"{subject(scenario)}-"
    if name.startswith(prefix) and len(name) > len(prefix):
        return name[len(prefix) :]
    types = [f["type"] for f in scenario.get("airflow_faults", [])]
    types += [f"stream:{f['type']}" for f in scenario.get("stream_faults", [])]
    if scenario.get("task", {}).get("execution_timeout"):
        types.append("timeout")
    return "+".join(types) or "none"


def row(
    name: str, scenario: dict[str, Any], metrics: dict[str, Any] | None, error: str | None = None
) -> dict[str, Any]:
    """One scenario's headline, from its ``scenario.json`` and ``metrics.json``.
    ``never_recovered``: some fault had no commit after it."""
    metrics = metrics or {}
    error = error or metrics.get("error")
    values = {m.name: m.value(metrics) for m in METRICS if m.column or m.name in _IN_EVERY_ROW}
    values["verdict"] = values["verdict"] or ("error" if error else "unknown")
    recoveries = _at("timing.recovery")(metrics) or []
    return {
        "scenario": name,
        "variant": subject(scenario),
        "fault": fault_label(name, scenario),
        **values,
        "lost_by_cause": lost_by_cause(metrics),
        "never_recovered": any(r.get("recovery_seconds") is None for r in recoveries),
        "error": error,
    }


def fmt(headline: dict[str, Any], key: str) -> str:
    """A cell as every table writes it: counts with thousands separators, seconds and
    rates with fixed decimals, missing values as :data:`MISSING`."""
    value = headline.get(key)
    if key == "hypothesis_held":
        return {True: "held", False: "FAILED"}.get(value, MISSING)
    if key == "lost_by_cause":
        return causes_text(headline.get(key) or {}) or MISSING
    if key == "recovery_s" and headline.get("never_recovered"):
        return "never"
    if value is None:
        return MISSING
    kind = BY_NAME[key].kind if key in BY_NAME else "text"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "rate":
        return f"{float(value):,.1f}"
    if kind == "seconds":
        return f"{float(value):.3f}" if key.endswith("latency_s") else f"{float(value):.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
