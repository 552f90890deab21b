"""The harness SIGKILLed mid-matrix on a real standalone Airflow (API server, scheduler,
dag-processor, LocalExecutor workers, the task) and the fake stream: nothing it started
survives, and ``--resume`` finishes the matrix with the verdicts an uninterrupted run gives.

``long``: two Airflow start-ups (~1 min each here); ``nox -s crash`` runs it (with the
error-and-resume test of ``test_resume.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import pid_alive, session_members, start_time, stop_leftovers
from tests.scenario_runs import has_commits

pytestmark = [pytest.mark.long, pytest.mark.timeout(1200)]

COMMON = 'seed = 5\nmode = "standalone"\nvariant = "naive_loop"\nrate = 500\n'
COMMON += "params = {cpu_us = 20, batch = 50}\n"
SCENARIOS = {"first": "duration = 4", "second": "duration = 30"}


def harness_run(files: list[str], out: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = (out.parent / f"harness{'-resume' if extra else ''}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", *files, "--out", str(out), *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_for(condition, within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def run_processes(record: Path) -> list[int]:
    """Every live process in the sessions the run recorded, still the ones it started."""
    pids = []
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if start_time(entry["pid"]) in (None, entry["start"]):
            pids += session_members(entry["pid"])
    return pids


def test_sigkill_mid_matrix_leaves_nothing_and_resume_finishes(tmp_path):
    files = []
    for name, body in SCENARIOS.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(f"name = {name!r}\n{COMMON}{body}\n")
        files.append(str(path))
    out = tmp_path / "out"
    record = out / "processes.jsonl"
    harness = harness_run(files, out)
    try:
        assert wait_for(lambda: has_commits(out / "second" / "sink.sqlite"), within=600)
        first = (out / "first" / "metrics.json").read_bytes()
        running = run_processes(record)
        tasks = [int(p.stem.rsplit("-", 1)[1]) for p in (out / "second" / "probe").glob("*")]
        # the stream, the Airflow components, their workers, the task
        assert len(running) >= 6
        assert set(tasks) <= set(running)
        harness.send_signal(signal.SIGKILL)
        assert harness.wait(timeout=30) == -signal.SIGKILL
        assert wait_for(lambda: not [p for p in running if pid_alive(p)], within=60)
    finally:
        if harness.poll() is None:
            harness.kill()
        stop_leftovers(record)  # only if the test failed: the watchdog stopped them
    resumed = harness_run(files, out, "--resume")
    assert resumed.wait(timeout=900) == 0, (tmp_path / "harness-resume.log").read_text()[-3000:]
    assert (out / "first" / "metrics.json").read_bytes() == first  # finished: skipped
    verdicts = {
        name: json.loads((out / name / "metrics.json").read_text())["verdict"] for name in SCENARIOS
    }
    # No fault in either: an uninterrupted run of each is exactly-once (the main job's
    # naive_loop-none), and so must the redone one be.
    assert verdicts == {"first": "exactly-once", "second": "exactly-once"}
    assert not [p for p in run_processes(record) if p != os.getpid()]
