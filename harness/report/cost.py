"""The report's "What it cost" table: each scenario's wall time by phase, the CPU seconds
of the harness, of Airflow and of the task, and how many ran beside it (``run.json``'s
``cost`` and ``jobs``: harness/run/cost.py)."""

from __future__ import annotations

from typing import Any

from harness.report.document import Block, Heading, Paragraph, Table
from harness.report.runs import Results

__all__ = ["cost_section"]

PHASES = ("start", "first_commit", "stream", "end", "check")
CPU = ("cpu_harness_s", "cpu_airflow_s", "cpu_task_s")


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def cost_section(results: Results) -> list[Block]:
    """The table, or nothing when no scenario recorded its cost (folders from before it)."""
    rows = []
    totals = dict.fromkeys(("wall_s", *CPU), 0.0)
    for run in results.scenarios:
        cost = run.run.get("cost")
        if not isinstance(cost, dict):
            continue
        jobs = run.run.get("jobs") or {}
        phases = cost.get("phases_s") or {}
        beside = "alone" if jobs.get("alone") else str(len(jobs.get("beside") or []))
        rows.append([
            run.name, _seconds(cost.get("wall_s")),
            *(_seconds(phases.get(p)) for p in PHASES),
            *(_seconds(cost.get(c)) for c in CPU), beside,
        ])  # fmt: skip
        for key in totals:
            totals[key] += float(cost.get(key) or 0.0)
    if not rows:
        return []
    heads = ["scenario", "wall s", *(f"{p.replace('_', ' ')} s" for p in PHASES)]
    heads += ["CPU harness s", "CPU Airflow s", "CPU task s", "beside"]
    note = (
        "Wall time by phase, and CPU seconds sampled from /proc each second. Airflow's and "
        "the harness process's CPU are shared by the scenarios that ran at the same time "
        "(`beside`: how many had started when it did; `alone`: a fault that acts on the "
        f"whole Airflow). In all: {totals['wall_s']:.0f} s of scenarios, CPU "
        f"{totals['cpu_task_s']:.0f} s in tasks, {totals['cpu_harness_s']:.0f} s in the "
        "harness (shared parts counted once per scenario)."
    )
    return [Heading(2, "What it cost"), Paragraph(note), Table(heads, rows)]
