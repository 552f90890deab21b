"""``python -m harness run``: a matrix of scenarios into one results folder, with a live line
of progress, ``summary.json`` and ``summary.md`` (rewritten after every scenario, so an
interrupted run leaves what it finished, and lists the rest as incomplete), then the
report (``report.md``, ``index.html``, charts: :mod:`harness.report`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.modes import Airflows
from harness.report import write_report
from harness.runner import Progress, run_scenario, summary_row
from harness.scenario import Scenario

__all__ = ["run_matrix", "write_summary"]

_COLUMNS = ["scenario", "verdict", "hypothesis_held", "created", "lost", "duplicates",
            "throughput", "p99_latency_s", "recovery_s", "silent_failure"]  # fmt: skip


def write_summary(out: Path, rows: list[dict[str, Any]], pending: list[str]) -> None:
    (out / "summary.json").write_text(
        json.dumps({"scenarios": rows, "incomplete": pending}, indent=2)
    )
    lines = [
        "# Summary",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in _COLUMNS) + " |"
        )
    if pending:
        lines += ["", f"Incomplete (not run): {', '.join(pending)}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def run_matrix(scenarios: list[Scenario], out: Path) -> int:
    """Run every scenario; 0 if all ran, 1 if any errored (hypotheses are results, not errors)."""
    console = Console(stderr=True)
    out = out.resolve()  # task processes get absolute paths, whatever their working folder
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]{len(scenarios)} scenarios[/] -> {out}")
    airflows = Airflows(out, scenarios)
    rows: list[dict[str, Any]] = []
    pending = [s.name for s in scenarios]
    write_summary(out, rows, pending)
    progress = Progress()
    done = threading.Event()

    def show() -> None:
        with console.status("") as status:
            while not done.wait(0.5):
                elapsed = time.time() - progress.started if progress.started else 0
                status.update(
                    f"[{len(rows) + 1}/{len(scenarios)}] {progress.scenario}: {progress.phase}, "
                    f"{elapsed:.0f} s, {progress.committed:,} committed, "
                    f"{progress.faults_fired} fault records"
                )

    display = threading.Thread(target=show, daemon=True)
    display.start()
    errors = 0
    try:
        for scenario in scenarios:
            metrics = run_scenario(scenario, out, airflows, progress)
            row = summary_row(scenario, metrics)
            errors += row["error"] is not None
            rows.append(row)
            pending.remove(scenario.name)
            write_summary(out, rows, pending)
            console.print(
                f"{scenario.name}: {row['verdict']}, lost {row['lost']}, "
                f"duplicates {row['duplicates']}, "
                f"hypothesis {'held' if row['hypothesis_held'] else 'FAILED'}"
            )
    finally:
        done.set()
        display.join(timeout=2)
        write_summary(out, rows, pending)
        progress.phase = "stopping Airflow"
        airflows.close()
    console.print(f"summary: {out / 'summary.md'}")
    try:
        console.print(f"report: {write_report(out)}")
    except Exception as error:  # the run's results stand without their charts
        console.print(f"[red]report failed[/]: {type(error).__name__}: {error}")
        console.print(f"rebuild it with: python -m harness report {out}")
    return 1 if errors else 0
