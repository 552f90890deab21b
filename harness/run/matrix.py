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

from harness.airflow.modes import Airflows
from harness.check import headline
from harness.report import write_report
from harness.run.runner import Status, dag_spec, run_scenario
from harness.scenario import Scenario

__all__ = ["run_matrix", "write_summary"]


def write_summary(out: Path, rows: list[dict[str, Any]], pending: list[str]) -> None:
    """``summary.json`` (the headline rows) and ``summary.md`` (the same as a table)."""
    (out / "summary.json").write_text(
        json.dumps({"scenarios": rows, "incomplete": pending}, indent=2)
    )
    lines = [
        "# Summary",
        "",
        "| " + " | ".join(heading for _, heading, _ in headline.COLUMNS) + " |",
        "|" + "".join("---:|" if right else "---|" for _, _, right in headline.COLUMNS),
    ]
    for row in rows:
        cells = [headline.fmt(row, key) for key, _, _ in headline.COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if pending:
        lines += ["", f"Incomplete (not run): {', '.join(pending)}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def run_matrix(scenarios: list[Scenario], out: Path) -> int:
    """Run every scenario; 0 if all ran, 1 if any errored (hypotheses are results, not errors)."""
    console = Console(stderr=True)
    out = out.resolve()  # task processes get absolute paths, whatever their working folder
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]{len(scenarios)} scenarios[/] -> {out}")
    airflows = Airflows(out, [dag_spec(s) for s in scenarios])
    rows: list[dict[str, Any]] = []
    pending = [s.name for s in scenarios]
    write_summary(out, rows, pending)
    status = Status()
    done = threading.Event()

    def show() -> None:
        with console.status("") as line:
            while not done.wait(0.5):
                elapsed = time.time() - status.started if status.started else 0
                line.update(
                    f"[{len(rows) + 1}/{len(scenarios)}] {status.scenario}: {status.phase}, "
                    f"{elapsed:.0f} s, {status.committed:,} committed, "
                    f"{status.faults_fired} Airflow fault records"
                )

    display = threading.Thread(target=show, daemon=True)
    display.start()
    errors = 0
    try:
        for scenario in scenarios:
            metrics = run_scenario(scenario, out, airflows, status)
            row = headline.row(scenario.name, scenario.model_dump(by_alias=True), metrics)
            errors += row["error"] is not None
            rows.append(row)
            pending.remove(scenario.name)
            write_summary(out, rows, pending)
            shown = ("verdict", "lost", "duplicates", "hypothesis_held")
            console.print(
                f"{scenario.name}: "
                + ", ".join(f"{k.removesuffix('_held')} {headline.fmt(row, k)}" for k in shown)
            )
    finally:
        done.set()
        display.join(timeout=2)
        write_summary(out, rows, pending)
        status.phase = "stopping Airflow"
        airflows.close()
    console.print(f"summary: {out / 'summary.md'}")
    try:
        console.print(f"report: {write_report(out)}")
    except Exception as error:  # the run's results stand without their charts
        console.print(f"[red]report failed[/]: {type(error).__name__}: {error}")
        console.print(f"rebuild it with: python -m harness report {out}")
    return 1 if errors else 0
