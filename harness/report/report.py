"""``report.md`` and ``index.html`` of a results folder, and its charts under ``charts/``.

:func:`write_report` reads only the folder (``python -m harness report <dir>`` rebuilds it
at any time); the matrix runner calls it when a run ends. Order of the report: what ran and
how it went, the verdict grid, the summary table, each failed hypothesis with its measured
value, the charts (each with one sentence), what each scenario cost, the environment.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from harness.check.headline import COLUMNS, fmt
from harness.report.cost import cost_section
from harness.report.document import (
    Block,
    Heading,
    Image,
    Items,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from harness.report.runs import Results, ScenarioRun, load_results
from harness.report.scenario_page import PAGE, write_scenario_page

__all__ = ["CHARTS_DIR", "write_report"]

CHARTS_DIR = "charts"
_MARK = {True: "✓", False: "✗", None: "?"}


def write_report(run_dir: Path) -> Path:
    """Draw the charts and write ``report.md`` and ``index.html`` into ``run_dir`` (a
    ``python -m harness run`` results folder); returns the report.md path."""
    started = time.monotonic()
    results = load_results(run_dir)
    charts = _charts(results, run_dir / CHARTS_DIR)
    for run in results.scenarios:
        _page(run)
    blocks = _overview(results) + _failures(results) + charts + cost_section(results)
    blocks += _environment(results)
    blocks.append(
        Paragraph(
            f"Built by `python -m harness report {run_dir.name}` in "
            f"{time.monotonic() - started:.1f} s, {time.strftime('%Y-%m-%d %H:%M:%S')}."
        )
    )
    report = run_dir / "report.md"
    report.write_text(to_markdown(blocks))
    (run_dir / "index.html").write_text(to_html(blocks, f"streamstall: {run_dir.name}"))
    return report


def _overview(results: Results) -> list[Block]:
    rows = [s.headline for s in results.scenarios]
    held = sum(r["hypothesis_held"] is True for r in rows)
    failed = sum(r["hypothesis_held"] is False for r in rows)
    errors = [r for r in rows if r["error"]]
    lines = [
        f"{len(rows)} scenarios ({len(results.variants)} variants x {len(results.fault_sets)} "
        f"fault sets): the steady-state hypothesis held in {held}, failed in {failed}"
        + (f", {len(errors)} could not be checked" if errors else "")
        + "."
    ]
    if results.incomplete:
        lines.append(f"Not run (interrupted): {', '.join(results.incomplete)}.")
    blocks: list[Block] = [
        Heading(1, f"streamstall report: {results.root.name}"),
        Paragraph(" ".join(lines)),
        Heading(2, "Verdicts"),
        Paragraph(
            "Variant (rows) under each fault (columns): what happened to the data (the "
            "verdict of the judged window, with what was lost or repeated; `incomplete`: the "
            "run hit its cap before it was quiet), and whether the scenario's steady-state "
            "hypothesis held (✓) or not (✗). Each cell links to the scenario's own page: "
            "what happened and why, its throughput and tries, the loss by cause."
        ),
    ]
    grid, classes = [], []
    for variant in results.variants:
        cells, colours = [], [""]
        for fault in results.fault_sets:
            runs = results.cell(variant, fault)
            cells.append(", ".join(_verdict_link(r) for r in runs) or "not run")
            colours.append(str(runs[0].headline["verdict"]) if len(runs) == 1 else "")
        grid.append([variant, *cells])
        classes.append(colours)
    header = ["variant", *[f"fault: {f}" for f in results.fault_sets]]
    blocks.append(Table(header, grid, classes=classes))
    blocks += [
        Heading(2, "Summary"),
        Paragraph(
            "Counts are tweets of the judged window (`metrics.json` `window`); throughput is "
            "first commits per second of window; recovery is the slowest fault-to-next-commit "
            "time (never: no commit after some fault)."
        ),
        Table(
            [heading for _, heading, _ in COLUMNS],
            [
                [f"[{r['scenario']}]({r['scenario']}/metrics.json)"]
                + [fmt(r, key) for key, _, _ in COLUMNS[1:]]
                for r in rows
            ],
            {i for i, (_, _, numeric) in enumerate(COLUMNS) if numeric},
        ),
    ]
    return blocks


def _verdict_link(run: ScenarioRun) -> str:
    """The cell, linking to the scenario's own page (:mod:`harness.report.scenario_page`)."""
    return f"[{_verdict_cell(run.headline)}]({run.name}/{PAGE})"


def _verdict_cell(headline: dict) -> str:
    """``at-most-once: lost 1,988 ✗``: the verdict, what made it, the hypothesis."""
    verdict = headline["verdict"]
    counts = []
    if verdict == "incomplete":
        counts.append(f"so far {headline['verdict_so_far']}")
        counts.append(f"pending {fmt(headline, 'pending_at_cut')}")
    if headline.get("lost") and verdict != "unobserved":  # nothing reported: no count
        counts.append(f"lost {fmt(headline, 'lost')}")
    if headline.get("duplicates"):
        counts.append(f"{fmt(headline, 'duplicates')} dup")
    detail = f": {', '.join(counts)}" if counts else ""
    return f"{verdict}{detail} {_MARK[headline['hypothesis_held']]}"


def _page(run: ScenarioRun) -> None:
    """The scenario's page; one that cannot be drawn costs that page only."""
    try:
        write_scenario_page(run)
    except Exception:  # reported, not raised: the report stands without it
        traceback.print_exc()


def _failures(results: Results) -> list[Block]:
    items = []
    for run in results.scenarios:
        if run.error:
            items.append(f"`{run.name}`: not checked: {run.error}")
            continue
        for result in (run.metrics or {}).get("hypothesis", {}).get("results", []):
            if not result.get("held"):
                items.append(
                    f"`{run.name}`: `{result.get('hypothesis')}` failed: measured "
                    f"{result.get('measured')}"
                )
    if not items:
        return [Heading(2, "Failed hypotheses"), Paragraph("None: every hypothesis held.")]
    return [Heading(2, "Failed hypotheses"), Items(items)]


def _charts(results: Results, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Charts")]
    try:
        from harness.report.charts import CHARTS, render
    except ImportError as error:  # matplotlib is in the dev extra
        reason = f"no charts: {error} (install matplotlib, e.g. the project's dev extra)"
        print(reason, file=sys.stderr)
        return [*blocks, Paragraph(reason)]
    for chart in CHARTS:
        outcome = render(chart, results, out_dir)
        blocks.append(Heading(3, chart.title))
        if outcome.skipped or outcome.png is None or outcome.svg is None:
            blocks.append(Paragraph(f"No chart: {outcome.skipped}."))
            continue
        blocks.append(Paragraph(outcome.caption or ""))
        blocks.append(
            Image(
                f"{out_dir.name}/{outcome.png.name}",
                chart.title,
                f"{out_dir.name}/{outcome.svg.name}",
            )
        )
    return blocks


def _environment(results: Results) -> list[Block]:
    env = results.environment
    seeds = sorted({s.scenario.get("seed") for s in results.scenarios} - {None})
    modes = sorted({str(s.run.get("mode") or s.scenario.get("mode")) for s in results.scenarios})
    recorded = env.get("recorded_at")
    rows = [
        ["Airflow", str(env.get("airflow") or "not installed")],
        ["Python", f"{env.get('python', '?')} ({env.get('implementation', '?')})"],
        ["CPUs", str(env.get("cpu_count", "?"))],
        ["processor", str(env.get("processor", "?"))],
        ["platform", str(env.get("platform", "?"))],
        ["seed", ", ".join(str(s) for s in seeds) or "?"],
        ["mode", ", ".join(modes)],
    ]
    if recorded:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded))
        rows.append(["recorded", f"{when}, when this folder's first report was built"])
    return [Heading(2, "Environment"), Table(["", ""], rows)]
