"""``python -m harness run``: a matrix of scenarios into one results folder, with a live line
of progress, ``summary.json`` and ``summary.md`` (rewritten after every scenario, so an
interrupted run leaves what it finished, and lists the rest as incomplete), then the
report (``report.md``, ``index.html``, charts: :mod:`harness.report`).

A scenario that raises (its server exits on an option, its Airflow does not start) is
that scenario's ``error``, in the summary, the report and its folder's ``error.json``, and
the matrix goes on; SIGINT and SIGTERM still end the whole run at once. With ``resume``,
a scenario whose folder holds a finished, checked run of the same definition is kept,
not run again (:func:`earlier_run`); every other one is redone from scratch.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness.airflow.base import ModeError
from harness.airflow.modes import MODES, Airflows
from harness.check import headline
from harness.check.metrics import SCHEMA_VERSION
from harness.check.records import RunError, read_json, read_metrics, require_finished
from harness.layout import RunLayout
from harness.procs import ProcessesClosed, record_into, stop_leftovers, stopping
from harness.report import write_report
from harness.run.display import MatrixDisplay
from harness.run.jobs import Slot, alone, default_jobs, side_by_side
from harness.run.runner import Status, dag_spec, run_scenario
from harness.scenario import Scenario

__all__ = ["PROCESSES", "Outcome", "earlier_run", "run_matrix", "write_summary"]

#: In the results folder: every session the run started (pid, start time), for the next
#: run into it to stop what this one left if it died unseen (:func:`harness.procs.stop_leftovers`).
PROCESSES = "processes.jsonl"


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
    errors = [f"- {row['scenario']}: {row['error']}" for row in rows if row["error"]]
    if errors:
        lines += ["", "Errors (in each one's error.json, with the traceback):", "", *errors]
    if pending:
        lines += ["", f"Incomplete (not run): {', '.join(pending)}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def earlier_run(scenario: Scenario, out: Path) -> tuple[dict[str, Any] | None, str]:
    """The metrics of ``scenario``'s earlier run in ``out`` if ``--resume`` may keep it, and
    why (or why not). Kept: it finished (``run.json`` with its ``ending``), was checked
    (a ``metrics.json`` of the current schema with every required field), recorded no
    error, and ran the same definition (``scenario.json`` equal to the scenario now)."""
    layout = RunLayout(out / scenario.name)
    if not layout.root.is_dir():
        return None, "not run yet"
    try:
        require_finished(layout.root)
        metrics = read_metrics(layout.metrics)
        if metrics["schema_version"] != SCHEMA_VERSION:
            return None, f"checked under metrics schema {metrics['schema_version']!r}"
        if layout.error.exists():
            return None, "it recorded an error"
        if read_json(layout.scenario) != json.loads(scenario.model_dump_json(by_alias=True)):
            return None, "its scenario changed since"
    except RunError as e:
        return None, str(e)
    return metrics, f"finished before: {metrics.get('verdict')}"


def _record_error(out: Path, scenario: Scenario, error: str, trace: str) -> None:
    """``error.json`` in the scenario's folder (and ``scenario.json``, so the report lists
    it, if it failed before writing one)."""
    layout = RunLayout(out / scenario.name)
    layout.root.mkdir(parents=True, exist_ok=True)
    if not layout.scenario.exists():
        layout.scenario.write_text(scenario.model_dump_json(indent=2, by_alias=True))
    record = {"error": error, "at": time.time(), "traceback": trace}
    layout.error.write_text(json.dumps(record, indent=2) + "\n")


def _run_one(
    scenario: Scenario, out: Path, airflows: Airflows, status: Status, slot: Slot
) -> tuple[dict[str, Any] | None, str | None]:
    """Run one scenario: its metrics, or its error (recorded in its folder)."""
    try:
        metrics = run_scenario(scenario, out, airflows, status, slot)
    except Exception as e:  # its own failure: recorded; SIGINT/SIGTERM are not Exceptions
        if stopping():  # its processes were stopped under it: the harness's doing
            raise
        error = f"{type(e).__name__}: {e}"
        _record_error(out, scenario, error, traceback.format_exc())
        return None, error
    if metrics.get("error"):  # ran, but its folder could not be checked
        if stopping():
            raise ProcessesClosed(f"{scenario.name}: interrupted")
        _record_error(out, scenario, str(metrics["error"]), "")
        return None, str(metrics["error"])
    return metrics, None


@dataclass(frozen=True)
class Outcome:
    """How many scenarios errored (not run or not checked), and how many ran with a
    hypothesis that failed."""

    errored: int
    failed: int


def run_matrix(
    scenarios: list[Scenario], out: Path, resume: bool = False, jobs: int | None = None
) -> Outcome:
    """Run every scenario (with ``resume``, keep those :func:`earlier_run` keeps), up to
    ``jobs`` side by side (default: :func:`~harness.run.jobs.default_jobs`)."""
    display = MatrixDisplay(len(scenarios))
    out = out.resolve()  # task processes get absolute paths, whatever their working folder
    out.mkdir(parents=True, exist_ok=True)
    # What an earlier run into this folder left when it died with its watchdog (e.g. the
    # whole process tree SIGKILLed): stopped by pid and start time before anything starts.
    record = out / PROCESSES
    if left := stop_leftovers(record):
        display.print(f"[yellow]stopped {len(left)} process(es) an earlier run left[/]: {left}")
    record.unlink(missing_ok=True)
    record_into(record)
    kept = {s.name: earlier_run(s, out)[0] for s in scenarios} if resume else {}
    to_run = [s for s in scenarios if kept.get(s.name) is None]
    jobs = jobs or default_jobs(to_run)
    solo = sum(alone(s) is not None for s in to_run)
    display.print(
        f"[bold]{len(scenarios)} scenarios[/] -> {out}"
        + (f" ({len(scenarios) - len(to_run)} finished before, kept)" if resume else "")
        + (f", {jobs} at once" if jobs > 1 else "")
        + (f", {solo} of them alone, last" if jobs > 1 and solo else "")
    )
    airflows = Airflows(out, [dag_spec(s) for s in to_run], jobs)
    order = {s.name: n for n, s in enumerate(scenarios)}
    rows: dict[str, dict[str, Any]] = {}
    pending = [s.name for s in scenarios]

    def summary() -> None:
        write_summary(out, sorted(rows.values(), key=lambda r: order[r["scenario"]]), pending)

    def finished(scenario: Scenario, metrics: dict[str, Any] | None, error: str | None) -> None:
        nonlocal errors
        row = headline.row(scenario.name, scenario.model_dump(by_alias=True), metrics, error)
        errors += row["error"] is not None
        rows[scenario.name] = row
        pending.remove(scenario.name)
        summary()
        shown = ("verdict", "lost", "duplicates", "hypothesis_held")
        display.done(
            f"{scenario.name}: "
            + ", ".join(f"{k.removesuffix('_held')} {headline.fmt(row, k)}" for k in shown)
            + (" (finished before, kept)" if scenario.name in kept else "")
            + (f"; [red]error[/]: {escape(error)}" if error else "")
        )

    def run(scenario: Scenario, slot: Slot) -> tuple[dict[str, Any] | None, str | None]:
        with display.running(scenario.name) as status:
            return _run_one(scenario, out, airflows, status, slot)

    summary()
    errors = 0
    kept = {name: metrics for name, metrics in kept.items() if metrics is not None}
    try:
        with display:
            # A shared Airflow starts before the first scenario, so the first ones' starts
            # are spread out (jobs.STAGGER) instead of all waiting for it and going at
            # once; one that does not start is each scenario's error, as before.
            shared = {s.mode for s in to_run if jobs > 1 and MODES[s.mode].side_by_side}
            for mode in sorted(shared):
                display.phase(f"starting Airflow ({mode})")
                with contextlib.suppress(ModeError):
                    airflows.get(mode)
            for scenario in scenarios:
                if scenario.name in kept:
                    finished(scenario, kept[scenario.name], None)
            for scenario, (metrics, error) in side_by_side(to_run, jobs, run):
                finished(scenario, metrics, error)
            display.phase("stopping Airflow")
    finally:
        summary()
        airflows.close()
        record_into(None)
    display.print(f"summary: {out / 'summary.md'}")
    try:
        display.print(f"report: {write_report(out)}")
    except Exception as error:  # the run's results stand without their charts
        display.print(f"[red]report failed[/]: {type(error).__name__}: {escape(str(error))}")
        display.print(f"rebuild it with: python -m harness report {out}")
    failed = sum(row.get("hypothesis_held") is False for row in rows.values())
    if failed:
        display.print(f"[red]{failed} scenario(s) failed their hypothesis[/]: see summary.md")
    if errors:
        display.print(f"[red]{errors} scenario(s) errored[/]: see summary.md and error.json")
    return Outcome(errored=errors, failed=failed)
