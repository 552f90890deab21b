"""The scenario runner end to end: a real stream, a real Airflow (dagtest), a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import OwnedProcess, pid_alive
from tests.scenario_runs import has_commits

# The relaunch after the kill is a new `airflow dags test`: ~17 s to its first read on a
# 2-vCPU machine (2026-12-01), longer than the 10 s of stream: the run ends on the ledger,
# so it waits for the relaunch to catch up however long that takes.
SCENARIO = """
name = "eo-kill"
description = "exactly_once, its task SIGKILLed 2 s after the first commit"
seed = 3
variant = "exactly_once"
duration = 10
rate = 800
params = {cpu_us = 20, batch = 100}
task = {retries = 2, retry_delay = 1}
hypothesis = ["lost == 0", "duplicates == 0", "verdict == exactly-once", "p99_latency_s < 0.001"]

[[airflow_faults]]
type = "kill_task"
at = 2
"""


@pytest.mark.slow
@pytest.mark.timeout(400)  # a harness run: Airflow start-up, a kill, a relaunch
def test_a_scenario_runs_and_is_judged(tmp_path):
    path = tmp_path / "eo-kill.toml"
    path.write_text(SCENARIO)
    out = tmp_path / "results"
    result = subprocess.run(  # a relative --out, as a user would type it
        [sys.executable, "-m", "harness", "run", str(path), "--out", "results"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    # A hypothesis failed: exit 1, so a CI job can gate on the run (README "Gating CI").
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 scenario(s) failed their hypothesis" in result.stderr
    run = out / "eo-kill"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["verdict"] == "exactly-once"
    # The hypothesis is judged against what was measured: three hold, the absurd latency
    # bound does not, and the run as a whole is marked as not holding.
    held = {r["hypothesis"]: r["held"] for r in metrics["hypothesis"]["results"]}
    assert held == {
        "lost == 0": True, "duplicates == 0": True, "verdict == exactly-once": True,
        "p99_latency_s < 0.001": False,
    }  # fmt: skip
    assert metrics["hypothesis"]["held"] is False
    # The nemesis fired once, at about 2 s after the first commit, and a relaunch followed.
    faults = [json.loads(line) for line in (run / "airflow_faults.jsonl").read_text().splitlines()]
    assert [(f["f"], f["fault"]) for f in faults] == [("start", "kill_task"), ("stop", "kill_task")]
    record = json.loads((run / "run.json").read_text())
    first_commit = record["first_commit_at"]
    # The run ended once everything was quiet, and the relaunched try ended on the stop
    # request: no state of it was written by the harness.
    assert (record["ending"]["how"], record["ending"]["task_ended_by"]) == (
        "quiescent",
        "stop_request",
    )
    assert 1.5 <= faults[0]["time"] - first_commit <= 4  # polling, and a loaded machine
    assert faults[1]["retry"] is True
    # Airflow's own record: the killed run never finished its try; the relaunch succeeded.
    states = [t["state"] for t in json.loads((run / "airflow" / "task_instances.json").read_text())]
    assert sorted(states) == ["running", "success"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["scenario"] for r in summary["scenarios"]] == ["eo-kill"]
    assert summary["incomplete"] == []
    assert (
        "| eo-kill | exactly_once | kill_task | exactly-once | FAILED |"
        in (out / "summary.md").read_text()
    )
    # Nothing we started is left: every task process the runner launched is gone.
    launches = json.loads((run / "launches.json").read_text())
    assert len(launches) == 2
    assert not any(pid_alive(launch["pid"]) for launch in launches)
    assert os.path.exists(run / "ledger.sqlite")
    # `check` says the same; `--exit-zero` is for exploratory runs (the finished scenario
    # is kept: nothing runs again).
    check = [sys.executable, "-m", "harness", "check", str(run)]
    checked = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1, checked.stderr
    assert "hypothesis failed: p99_latency_s < 0.001" in checked.stdout
    assert subprocess.run([*check, "--exit-zero"], capture_output=True, timeout=120).returncode == 0
    again = [sys.executable, "-m", "harness", "run", str(path), "--out", "results", "--resume"]
    kept = subprocess.run([*again, "--exit-zero"], capture_output=True, timeout=120, cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr[-2000:]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (through /proc: children first found by parent)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.split(") ", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigint_mid_run_stops_everything_and_keeps_the_summary(tmp_path):
    """Ctrl-C while a scenario streams: the harness exits 130, every process it started
    (stream server, airflow, the task) is gone, and summary.json lists the scenario as
    incomplete."""
    path = tmp_path / "long.toml"
    path.write_text(
        SCENARIO.replace("duration = 30", "duration = 120").replace('"eo-kill"', '"long"')
    )
    harness = OwnedProcess(
        [sys.executable, "-m", "harness", "run", str(path), "--out", str(tmp_path / "out")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        sink = tmp_path / "out" / "long" / "sink.sqlite"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not has_commits(sink):
            time.sleep(0.2)
        started = _descendants(harness.pid)
        assert len(started) >= 2  # the stream server and `airflow dags test` (the task runs in it)
        harness.signal(signal.SIGINT)
        code = harness.popen.wait(timeout=60)
    finally:
        harness.stop()
    assert code == 128 + signal.SIGINT
    assert not [pid for pid in started if pid_alive(pid)]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["incomplete"] == ["long"]


NEVER_READS = """
name = "never-reads"
description = "checkpoint pointed at a closed port: its try ends before reading"
seed = 3
variant = "checkpoint"
duration = 60
rate = 500
params = {stream_url = "http://127.0.0.1:1/2/tweets/search/stream", token = "x"}
task = {retries = 1, retry_delay = 1}
hypothesis = ["lost == 0"]
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_task_that_never_reads_the_stream_is_unobserved_not_exactly_once(tmp_path):
    """The article's checkpoint catches the refused connection and returns: the run ends
    when Airflow has no try left (not after the scenario's 60 s of stream), nothing can be
    counted, and the hypothesis that nothing was lost fails as "not measured" instead of
    holding on an empty window."""
    path = tmp_path / "never-reads.toml"
    path.write_text(NEVER_READS)
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    run = tmp_path / "out" / "never-reads"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["verdict"] == "unobserved"
    assert metrics["queue"]["unobserved"] == (
        "the stream was never read: 1 try started, none connected to it"
    )
    assert metrics["hypothesis"]["results"] == [
        {"hypothesis": "lost == 0", "held": False, "measured": "lost was not measured"}
    ]
    record = json.loads((run / "run.json").read_text())
    assert record["first_commit_at"] is None
    assert record["ending"]["created_until"] - record["started_at"] < 60  # no stream waited
