"""``python -m harness run --resume`` and one scenario's failure (issue 14): what a resumed
run keeps, what it redoes from scratch, and a scenario that raises recorded as its error
while the matrix goes on; SIGTERM still ends the whole run at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_stream import snowflake
from harness.__main__ import main
from harness.check.metrics import check_run
from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.run.matrix import earlier_run
from harness.scenario import Scenario, load
from tests.harness.check._histories import T0_MS, T0_WALL, Spec, write_run

GOOD = 'name = "good"\nvariant = "naive_loop"\nhypothesis = ["lost == 0"]\n'


def _finished(out: Path, path: Path) -> Scenario:
    """The scenario of ``path`` as a finished, checked run in ``out`` (real writers and the
    real checker; its run.json with the runner's ending)."""
    (scenario,) = load(path)
    layout = RunLayout(out / scenario.name)
    ids = [snowflake.encode(T0_MS + slot, 0) for slot in range(10)]
    ending = {"how": "quiescent", "task_ended_by": "itself", "stop_requested_at": T0_WALL + 1}
    spec = Spec(
        [1] * 10, [(1, 0, 10, "acked")], [], [(T0_WALL + 0.02, 7, 1, ids)], [T0_WALL],
        T0_WALL + 0.01, 0.0, [(7, 1, "ok")], ending,
    )  # fmt: skip
    write_run(spec, layout.root)
    layout.scenario.write_text(scenario.model_dump_json(indent=2, by_alias=True))
    check_run(layout.root)
    return scenario


@pytest.fixture
def good(tmp_path: Path) -> tuple[Scenario, Path]:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    out = tmp_path / "out"
    return _finished(out, path), out


def test_a_finished_run_of_the_same_scenario_is_kept(good):
    scenario, out = good
    metrics, why = earlier_run(scenario, out)
    assert metrics is not None
    assert metrics["verdict"] == "exactly-once"
    assert why == "finished before: exactly-once"


def _edit(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


REDO = {
    "no run.json (interrupted)": (lambda r: r.run.unlink(), "the run did not finish"),
    "run.json without ending": (
        lambda r: _edit(r.run, lambda v: v.pop("ending")),
        "ending: missing: the run did not finish",
    ),
    "no metrics.json": (lambda r: r.metrics.unlink(), "metrics.json: missing"),
    "metrics.json truncated": (
        lambda r: r.metrics.write_text(r.metrics.read_text()[:100]),
        "metrics.json: not readable JSON",
    ),
    "metrics.json without its verdict": (
        lambda r: _edit(r.metrics, lambda m: m.pop("verdict")),
        "metrics.json: verdict: missing",
    ),
    "an older metrics schema": (
        lambda r: _edit(r.metrics, lambda m: m.update(schema_version=1)),
        "checked under metrics schema 1",
    ),
    "an error recorded": (
        lambda r: r.error.write_text('{"error": "RuntimeError: x"}'),
        "it recorded an error",
    ),
    "the scenario changed": (
        lambda r: _edit(r.scenario, lambda s: s.update(seed=8)),
        "its scenario changed since",
    ),
}


@pytest.mark.parametrize("case", sorted(REDO))
def test_anything_short_of_that_is_redone(good, case):
    scenario, out = good
    harm, why = REDO[case]
    harm(RunLayout(out / scenario.name))
    metrics, reason = earlier_run(scenario, out)
    assert metrics is None
    assert why in reason


def test_dry_run_says_what_resume_keeps_and_redoes(good, tmp_path, capsys):
    _, out = good
    other = tmp_path / "other.toml"
    other.write_text(GOOD.replace('"good"', '"other"'))
    argv = ["run", str(tmp_path / "good.toml"), str(other), "--out", str(out)]
    assert main([*argv, "--resume", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["good", "keep"]
    assert lines[1].split() == ["other", "run", "not", "run", "yet"]
    assert main(["run", str(other), "--resume"]) == 2
    assert "--resume: give the results folder to finish with --out" in capsys.readouterr().err


# The cheapest real runs: `dags test` (~15 s to a first commit here), and a scenario whose
# Airflow cannot start (mode localtask on Airflow 3: its start-up raises ModeError).
QUICK = """name = "quick"
variant = "naive_loop"
seed = 4
duration = 3
rate = 200
params = {cpu_us = 10, batch = 20}
hypothesis = ["lost == 0"]
"""
BROKEN = QUICK.replace('"quick"', '"broken"') + 'mode = "localtask"\n'


def _harness(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", *argv],
        capture_output=True, text=True, timeout=400, cwd=cwd,
    )  # fmt: skip


@pytest.mark.long  # two real harness runs (~90 s): nox -s crash runs it
@pytest.mark.timeout(600)
def test_an_error_is_recorded_the_matrix_goes_on_and_resume_keeps_what_finished(tmp_path):
    for name, body in (("broken", BROKEN), ("quick", QUICK)):
        (tmp_path / f"{name}.toml").write_text(body)
    files = ["broken.toml", "quick.toml"]  # the broken one first: the matrix must go on
    first = _harness(*files, "--out", "out", cwd=tmp_path)
    assert first.returncode == 3, first.stderr[-3000:]  # 3: some scenario errored
    assert "Traceback" not in first.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["scenario"]: r for r in summary["scenarios"]}
    assert summary["incomplete"] == []
    assert rows["broken"]["verdict"] == "error"
    assert rows["broken"]["error"].startswith("ModeError: mode 'localtask' runs")
    assert rows["quick"]["error"] is None
    assert rows["quick"]["verdict"] == "exactly-once"
    error = json.loads((out / "broken" / "error.json").read_text())
    assert error["error"] == rows["broken"]["error"]
    assert "Traceback" in error["traceback"]  # the whole story is in the folder
    assert f"`broken`: not checked: {rows['broken']['error']}" in (out / "report.md").read_text()
    summary_md = (out / "summary.md").read_text()
    assert "| broken | naive_loop | none | error |" in summary_md
    assert f"- broken: {rows['broken']['error']}" in summary_md

    kept = (out / "quick" / "metrics.json").stat().st_mtime_ns
    launches = (out / "quick" / "launches.json").read_bytes()
    (out / "broken" / "stale").write_text("from the first run")
    again = _harness(*files, "--out", "out", "--resume", cwd=tmp_path)
    assert again.returncode == 3, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert (out / "quick" / "metrics.json").stat().st_mtime_ns == kept  # not run again
    assert (out / "quick" / "launches.json").read_bytes() == launches
    assert not (out / "broken" / "stale").exists()  # redone from scratch
    resumed = {
        r["scenario"]: r for r in json.loads((out / "summary.json").read_text())["scenarios"]
    }
    assert resumed["quick"] == rows["quick"]
    assert resumed["broken"]["error"] == rows["broken"]["error"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_still_ends_the_whole_run_and_is_no_scenario_error(tmp_path):
    for name, body in (("quick", QUICK), ("broken", BROKEN)):
        (tmp_path / f"{name}.toml").write_text(body)
    out = tmp_path / "out"
    harness = OwnedProcess(
        [sys.executable, "-m", "harness", "run", "quick.toml", "broken.toml", "--out", "out"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "quick" / "scenario.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # inside the first scenario: its Airflow starting
        harness.signal(signal.SIGTERM)
        code = harness.popen.wait(timeout=60)
    finally:
        harness.stop()
    assert code == 128 + signal.SIGTERM
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"scenarios": [], "incomplete": ["quick", "broken"]}
    assert not (out / "quick" / "error.json").exists()
    assert not (out / "broken").exists()  # the matrix did not go on
