"""Charts, report.md, index.html and the comparison, built from a synthetic results folder
written by the real writers and checked by the real checker (tests/report/_results.py)."""

from __future__ import annotations

import json
import platform
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.__main__ import main
from harness.report import compare_results, write_report
from harness.report.charts import CHARTS
from harness.report.runs import load_results
from tests.report._results import write_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A results folder with its report written once for the module's tests."""
    out = tmp_path_factory.mktemp("results")
    metrics = write_results(out)
    write_report(out)
    return out, metrics


def _table(report: str, first_heading: str) -> list[dict[str, str]]:
    """The Markdown table whose header starts with ``first_heading``, as dicts."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_heading} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True)))
    return rows


def test_every_chart_is_written_as_png_and_svg(built):
    out, _ = built
    report = (out / "report.md").read_text()
    assert "drawing failed" not in report
    for chart in CHARTS:
        png, svg = out / "charts" / f"{chart.name}.png", out / "charts" / f"{chart.name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart.name
        assert png.stat().st_size > 5_000, chart.name
        assert "<svg" in svg.read_text()[:2_000], chart.name
        assert f"](charts/{chart.name}.png)" in report
        assert f'src="charts/{chart.name}.png"' in (out / "index.html").read_text()


def test_the_summary_table_matches_metrics_json(built):
    out, written = built
    rows = _table((out / "report.md").read_text(), "scenario")
    assert len(rows) == len(written)
    for row in rows:
        name = re.match(r"\[([^\]]+)\]", row["scenario"]).group(1)
        metrics = json.loads((out / name / "metrics.json").read_text())
        queue, timing = metrics["queue"], metrics["timing"]
        assert row["verdict"] == metrics["verdict"]
        assert int(row["lost"].replace(",", "")) == queue["lost"]
        assert int(row["duplicates"].replace(",", "")) == queue["duplicates"]
        throughput = float(row["throughput (tweets/s)"].replace(",", ""))
        assert throughput == pytest.approx(timing["throughput"]["mean"], abs=0.05)
        assert float(row["p99 latency (s)"]) == pytest.approx(timing["latency"]["p99"], abs=5e-4)
        assert row["hypothesis"] == ("held" if metrics["hypothesis"]["held"] else "FAILED")
        assert row["silent failure"] == {True: "yes", False: "no"}.get(
            metrics["silent_failure"], str(metrics["silent_failure"])
        )
        recoveries = [r["recovery_seconds"] for r in timing["recovery"]]
        if not recoveries:
            assert row["recovery (s)"] == "-"
        elif None in recoveries:
            assert row["recovery (s)"] == "never"
        else:
            assert float(row["recovery (s)"]) == pytest.approx(max(recoveries), abs=0.005)


def test_the_verdict_grid_has_every_scenario_in_its_cell(built):
    out, written = built
    grid = {r["variant"]: r for r in _table((out / "report.md").read_text(), "variant")}
    for name, metrics in written.items():
        variant, fault = name.split("-", 1)
        cell = grid[variant][f"fault: {fault}"]
        assert cell.startswith(f"[{metrics['verdict']}")
        assert cell.endswith(f"]({name}/index.html)")  # the scenario's own page
        # What made the verdict is in the cell: the counts lost and repeated.
        assert ("lost " in cell) == (metrics["queue"]["lost"] > 0), cell
        assert (" dup" in cell) == (metrics["queue"]["duplicates"] > 0), cell
    html = (out / "index.html").read_text()
    for name, metrics in written.items():  # coloured by verdict in the page
        verdict = metrics["verdict"]
        assert f'<td class="{verdict}"><a href="{name}/index.html">{verdict}' in html
    cells = sum(len(r) - 1 for r in grid.values())
    assert sum(v == "not run" for r in grid.values() for v in r.values()) == cells - len(written)


def test_each_failed_hypothesis_is_listed_with_what_was_measured(built):
    out, written = built
    report = (out / "report.md").read_text()
    failed = [
        (name, r)
        for name, m in written.items()
        for r in m["hypothesis"]["results"]
        if not r["held"]
    ]
    assert failed  # the synthetic folder has losses and repeats
    for name, result in failed:
        assert f"`{name}`: `{result['hypothesis']}` failed: measured {result['measured']}" in report


def test_the_environment_is_recorded_and_shown(built):
    out, _ = built
    environment = json.loads((out / "environment.json").read_text())
    assert environment["python"] == platform.python_version()
    report = (out / "report.md").read_text()
    assert f"| Python | {platform.python_version()} " in report
    assert f"| CPUs | {environment['cpu_count']} |" in report


def test_the_latency_curve_is_the_checkers_distribution(built):
    out, written = built
    for run in load_results(out, record_environment=False).scenarios:
        latency = written[run.name]["timing"]["latency"]
        assert run.latencies is not None
        assert np.percentile(run.latencies, 50) == pytest.approx(latency["p50"], abs=1e-6)
        assert run.latencies.max() == pytest.approx(latency["max"], abs=1e-6)


def test_without_gil_data_the_gil_chart_is_skipped_with_a_reason(built, tmp_path):
    out, _ = built
    copy = tmp_path / "no-gil"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("charts", "report.md"))
    for path in copy.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["timing"].pop("gil", None)
        path.write_text(json.dumps(metrics))
    report = write_report(copy).read_text()
    assert "No chart: no scenario has GIL measurements" in report
    assert not (copy / "charts" / "gil.png").exists()
    assert (copy / "charts" / "throughput.png").exists()


def test_chart_names_are_unique():
    names = [chart.name for chart in CHARTS]
    assert len(names) == len(set(names))


def test_cli_report_rebuilds_and_refuses_a_folder_without_scenarios(built, tmp_path, capsys):
    out, _ = built
    (out / "charts" / "loss.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "charts" / "loss.png").stat().st_size > 0
    assert main(["report", str(tmp_path)]) == 2
    assert "not a results folder" in capsys.readouterr().err


def test_compare_shows_what_changed(built, tmp_path, capsys):
    out, written = built
    other = tmp_path / "other"
    shutil.copytree(out, other)
    environment = json.loads((other / "environment.json").read_text())
    environment["airflow"] = "2.11.0"
    (other / "environment.json").write_text(json.dumps(environment))
    path = other / "naive_loop-none" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["queue"]["lost"] = metrics["queue"]["lost"] + 7
    metrics["verdict"] = "at-most-once"
    path.write_text(json.dumps(metrics))
    shutil.rmtree(other / "threaded-none")
    text = compare_results(out, other)
    before = written["naive_loop-none"]["queue"]["lost"]
    assert "| naive_loop-none | exactly-once → at-most-once |" in text
    assert f"{before} → {before + 7} (+7)" in text
    assert re.search(r"\| airflow \| [^|]+ \| 2\.11\.0 \|", text)
    assert "only in A: threaded-none" in text
    assert "checkpoint-kill_task" in text.split("Unchanged:")[1]
    assert main(["compare", str(out), str(other), "--out", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text() == capsys.readouterr().out


def test_the_loss_chart_stacks_each_loss_by_cause_and_fits_the_page(built):
    """Each scenario's lost bar is one segment per cause (the checker's counts), the
    duplicates panel is there only when something was repeated, and the figure is no wider
    than the page shows."""
    from harness.check.headline import lost_by_cause
    from harness.report.charts.loss import CHART

    out, written = built
    drawn = CHART.draw(load_results(out))
    lost = drawn.figure.axes[0]
    segments = sorted(round(p.get_height()) for p in lost.patches if p.get_height() > 0)
    assert segments == sorted(n for m in written.values() for n in lost_by_cause(m).values())
    assert len(segments) > len([m for m in written.values() if m["queue"]["lost"]])  # stacked
    repeated = any(m["queue"]["duplicates"] for m in written.values())
    assert len(drawn.figure.axes) == (2 if repeated else 1)
    assert drawn.figure.get_size_inches()[0] <= 12


def test_a_scenario_page_explains_the_loss_from_the_metrics(built):
    """The killed naive loop's page: the fault, the killed try and its successor, what was
    lost by cause (the checker's counts, adding up to the loss), the failed hypothesis."""
    from harness.check.headline import lost_by_cause
    from harness.report.scenario_page import explain

    out, written = built
    metrics = written["naive_loop-kill_task"]
    run = next(r for r in load_results(out).scenarios if r.name == "naive_loop-kill_task")
    lines = explain(run)
    t0 = run.window_start
    assert lines[0].startswith("The nemesis injected `kill_task` at ")
    second = metrics["timing"]["tries"]["list"][1]
    assert f"try 2 started at {second['started_at'] - t0:.1f} s." in lines[1]
    causes = lost_by_cause(metrics)
    lost = metrics["queue"]["lost"]
    assert sum(causes.values()) == lost > 0
    why = "; ".join(f"{n:,} {c}" for c, n in causes.items())
    assert f"{lost:,} were never committed: {why}." in lines[2]
    assert lines[-1].startswith("Verdict: at-most-once; the hypothesis failed: `lost == 0`")
    page = (out / "naive_loop-kill_task" / "index.html").read_text()
    assert all(f"<td>{cause}</td>" in page for cause in causes)  # the loss-by-cause table
    assert (out / "naive_loop-kill_task" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_scenario_page_names_the_worker_of_each_try_when_there_are_several():
    from types import SimpleNamespace

    from harness.report.scenario_page import _tries

    def run(workers):
        tries = [
            {"try": n, "pid": 100 + n, "started_at": 10.0 * n, "ended_at": None,
             "outcome": "info", "worker": worker}
            for n, worker in enumerate(workers, 1)
        ]  # fmt: skip
        return SimpleNamespace(window_start=0.0, timing={"tries": {"list": tries}})

    table = _tries(run(["w1", "w2"]))
    assert table.header[2] == "worker"
    assert [row[2] for row in table.rows] == ["w1", "w2"]
    assert "worker" not in _tries(run([None, None])).header  # one machine: no column
