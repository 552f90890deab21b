"""One scenario's page, ``<scenario>/index.html``, linked from the report's verdict grid:
a few sentences saying what happened and why, its settings, its throughput over time with
the faults shaded above its tries, the loss by cause, the tries and the stream connections.

Every figure comes from the scenario folder (``metrics.json``, ``airflow_faults.jsonl``,
the ledger's connections); times are seconds from the judged window's start.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from harness.check.headline import fmt, lost_by_cause
from harness.report.charts.base import style
from harness.report.document import Block, Heading, Image, Items, Paragraph, Table, to_html
from harness.report.runs import ScenarioRun

__all__ = ["PAGE", "explain", "write_scenario_page"]

#: The page's file name inside the scenario's folder.
PAGE = "index.html"
_CHART = "timeline"
_OUTCOME_COLOURS = {"ok": "#4C9F50", "fail": "#D55E00", None: "#999999"}
_OUTCOMES = {"ok": "returned", "fail": "failed"}


def write_scenario_page(run: ScenarioRun, back: str = "../index.html") -> Path:
    """Write the page (and its chart) into the scenario's folder; its path."""
    blocks: list[Block] = [
        Heading(1, f"{run.name}: {run.headline['verdict']}"),
        Paragraph(f"[Back to the report]({back}). Times are seconds from the window's start."),
        Items(explain(run)),
        Heading(2, "Settings"),
        Table(["setting", "value"], _settings(run)),
    ]
    chart = _draw(run)
    if chart is not None:
        blocks += [
            Heading(2, "Throughput and tries"),
            Image(f"{chart}.png", "timeline", f"{chart}.svg"),
        ]
    causes = lost_by_cause(run.metrics or {})
    blocks += [Heading(2, "Loss by cause")]
    blocks.append(
        Table(["cause", "tweets"], [[c, f"{n:,}"] for c, n in causes.items()], {1})
        if causes
        else Paragraph("Nothing lost.")
    )
    blocks += [
        Heading(2, "Tries"),
        _tries(run),
        Heading(2, "Stream connections"),
        _connections(run),
    ]
    page = run.root / PAGE
    page.write_text(to_html(blocks, f"streamstall: {run.name}"))
    return page


def explain(run: ScenarioRun) -> list[str]:
    """Sentences generated from the metrics: the faults, the tries, what was lost and why,
    what was repeated, the hypothesis."""
    if run.metrics is None:
        return [f"Not checked: {run.error or 'no metrics.json'}."]
    t0, queue = run.window_start, run.queue
    lines = []
    for name, start, stop in run.fault_windows():
        ended = f", until {_s(stop - t0)} s" if stop is not None and stop > start + 0.5 else ""
        lines.append(f"The nemesis injected `{name}` at {_s(start - t0)} s{ended}.")
    tries = run.timing.get("tries", {}).get("list", [])
    for before, after in itertools.pairwise(tries):
        if before.get("ended_at"):
            how = before.get("error") or before.get("how") or before.get("outcome")
            what = f"ended at {_s(before['ended_at'] - t0)} s ({how})"
        elif (hit := _fault_on(run, before["pid"], before["started_at"])) is not None:
            what = f"left no end record: a fault acted on it at {_s(hit - t0)} s"
        else:
            what = "left no end record"
        lines.append(
            f"Try {before['try']} {what}; try {after['try']} started at "
            f"{_s(after['started_at'] - t0)} s."
        )
    created, lost = queue.get("created", 0), queue.get("lost", 0)
    causes = lost_by_cause(run.metrics)
    if lost:
        why = "; ".join(f"{n:,} {c}" for c, n in causes.items())
        lines.append(f"Of the {created:,} tweets created, {lost:,} were never committed: {why}.")
    else:
        lines.append(f"All {created:,} tweets created were committed.")
    if queue.get("duplicates"):
        lines.append(f"{queue['duplicates']:,} commits repeated a tweet committed before.")
    verdict = f"Verdict: {run.headline['verdict']}"
    failed = [
        f"`{r['hypothesis']}` (measured {r.get('measured')})"
        for r in (run.metrics.get("hypothesis") or {}).get("results", [])
        if not r.get("held")
    ]
    if failed:
        verdict += "; the hypothesis failed: " + ", ".join(failed)
    elif run.headline["hypothesis_held"]:
        verdict += "; the hypothesis held"
    return [*lines, verdict + "."]


def _settings(run: ScenarioRun) -> list[list[str]]:
    keys = ("variant", "dag_file", "dag_id", "task_id", "sink_query", "mode", "seed",
            "duration", "rate", "params", "task", "server")  # fmt: skip
    rows = [[k, _short(run.scenario[k])] for k in keys if run.scenario.get(k) not in (None, {})]
    for fault in run.scenario.get("airflow_faults", []):
        rows.append(["Airflow fault", _short(fault)])
    for fault in run.scenario.get("stream_faults", []):
        rows.append(["stream fault", _short(fault)])
    rows += [[heading, fmt(run.headline, key)] for key, heading in _FIGURES]
    return rows


_FIGURES = [
    ("created", "created"), ("lost", "lost"), ("duplicates", "duplicates"),
    ("throughput", "throughput (tweets/s)"), ("p99_latency_s", "p99 latency (s)"),
]  # fmt: skip


def _s(seconds: float) -> str:
    """Seconds for people: one decimal, no ``-0.0``."""
    return f"{round(seconds, 1) + 0.0:.1f}"


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _tries(run: ScenarioRun) -> Table | Paragraph:
    t0 = run.window_start
    tries = run.timing.get("tries", {}).get("list", [])
    if not tries:
        return Paragraph("No try recorded a start.")
    rows = [
        [
            str(t["try"]), str(t["pid"]), _s(t["started_at"] - t0),
            _s(t["ended_at"] - t0) if t.get("ended_at") else "-",
            _OUTCOMES.get(t.get("outcome"), "no end recorded"),
            t.get("error") or t.get("how") or "",
        ]
        for t in tries
    ]  # fmt: skip
    header = ["try", "pid", "started (s)", "ended (s)", "outcome", "how"]
    if any(t.get("worker") for t in tries):  # several workers: which ran each try
        header.insert(2, "worker")
        for row, t in zip(rows, tries, strict=True):
            row.insert(2, t.get("worker") or "-")
        return Table(header, rows, {0, 1, 3, 4})
    return Table(header, rows, {0, 1, 2, 3})


def _connections(run: ScenarioRun) -> Table | Paragraph:
    t0 = run.window_start
    rows = [
        [
            str(c.get("conn_id")), _s(c["opened_at"] - t0),
            _s(c["closed_at"] - t0) if c.get("closed_at") else "-",
            str(c.get("end_reason") or ""), c.get("params") or "(live)",
            f"{c.get('bytes_written') or 0:,}",
        ]
        for c in run.connections
        if c.get("opened_at") is not None
    ]  # fmt: skip
    if not rows:
        return Paragraph("No connection recorded (or the ledger could not be read).")
    header = ["connection", "opened (s)", "closed (s)", "end", "asked for", "bytes sent"]
    return Table(header, rows, {0, 1, 2, 5})


def _fault_on(run: ScenarioRun, pid: int, since: float) -> float | None:
    """When a fault first acted on try ``pid`` (it left no end record: killed)."""
    times = [
        float(r["time"])
        for r in run.airflow_faults
        if pid in (r.get("pid"), r.get("orphan")) and float(r.get("time", 0)) >= since
    ]
    return min(times, default=None)


def _draw(run: ScenarioRun) -> str | None:
    """Throughput per second with the faults shaded, above the tries as bars (green:
    returned, red: failed, grey: no end recorded, drawn until a fault acted on it or the
    next try started); the chart's file stem, or None without metrics."""
    per_second = run.timing.get("throughput", {}).get("per_second") or []
    if not per_second:
        return None
    t0 = run.window_start
    with style():
        figure = Figure(figsize=(9, 4.2))
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.step(range(len(per_second)), per_second, where="post", color="#0072B2")
        top.set_ylabel("first commits per s")
        tries = run.timing.get("tries", {}).get("list", [])
        for i, t in enumerate(tries):
            later = [n["started_at"] for n in tries[i + 1 :]] + [t0 + len(per_second)]
            end = t.get("ended_at") or _fault_on(run, t["pid"], t["started_at"]) or later[0]
            colour = _OUTCOME_COLOURS.get(t.get("outcome"), "#999999")
            bottom.barh(i, end - t["started_at"], left=t["started_at"] - t0, color=colour)
            bottom.text(t["started_at"] - t0, i, f" try {t['try']}", va="center", fontsize=7)
        bottom.set_yticks([])
        bottom.set_xlabel("seconds from the window's start")
        faults = run.fault_windows()
        for ax in (top, bottom):
            for _, start, stop in faults:
                end = stop if stop is not None and stop > start + 0.3 else start + 0.3
                ax.axvspan(start - t0, end - t0, color="#E69F00", alpha=0.3, lw=0)
        if faults:
            top.text(faults[0][1] - t0, top.get_ylim()[1], " fault",
                     va="top", fontsize=7, color="#9A6A00")  # fmt: skip
        figure.tight_layout()
        figure.savefig(run.root / f"{_CHART}.png", dpi=110, metadata={"Software": None})
        figure.savefig(run.root / f"{_CHART}.svg", metadata={"Date": None})
    return _CHART
