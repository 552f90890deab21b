"""The report's "What it cost" section (harness/report/cost.py), from run.json's ``cost``
and ``jobs`` as the runner writes them."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import write_report
from tests.report._results import write_results

COST = {
    "wall_s": 30.0, "cpu_harness_s": 5.5, "cpu_airflow_s": 12.25, "cpu_task_s": 3.0,
    "phases_s": {"start": 3.0, "first_commit": 4.0, "stream": 15.0, "end": 7.9, "check": 0.1},
}  # fmt: skip


def _set(run_json: Path, **more: object) -> None:
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), **more}))


def _rows(report: str) -> dict[str, list[str]]:
    section = report.split("## What it cost", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_each_scenario_with_a_cost_gets_a_row_and_the_totals_add_up(tmp_path):
    out = tmp_path / "out"
    names = sorted(write_results(out))
    first, second, *_ = names
    _set(out / first / "run.json", cost=COST, jobs={"jobs": 4, "alone": None, "beside": ["x"]})
    alone = {"jobs": 1, "alone": "restart_scheduler acts on ...", "beside": []}
    _set(out / second / "run.json", cost={**COST, "wall_s": 12.0}, jobs=alone)
    report = write_report(out).read_text()
    rows = _rows(report)
    assert set(rows) == {first, second}  # the rest recorded no cost: folders from before
    assert rows[first] == ["30.0", "3.0", "4.0", "15.0", "7.9", "0.1", "5.5", "12.2", "3.0", "1"]
    assert rows[second][0] == "12.0"
    assert rows[second][-1] == "alone"
    assert "In all: 42 s of scenarios, CPU 6 s in tasks, 11 s in the harness" in report


def test_no_cost_recorded_no_section(tmp_path):
    out = tmp_path / "out"
    write_results(out)
    assert "What it cost" not in write_report(out).read_text()
