"""The GIL sampler through the probe, in real processes; its summary in metrics.json; the
GIL sweep scenario file."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fake_stream import snowflake
from harness.check.history import _probe
from harness.check.metrics import check_run
from harness.procs import OwnedProcess
from harness.scenario import load
from harness.task.gil import ReaderLag
from tests.harness.check._histories import T0_WALL, Spec, write_run

ROOT = Path(__file__).resolve().parents[3]

# A task that samples its GIL every 0.5 s through the probe while one thread spins and one
# "reads" tweets created 0.5 s before it sees them, then exits normally.
TASK = textwrap.dedent("""
    import sys, threading, time
    from fake_stream import snowflake
    from harness.task.gil import READER
    from harness.task.probe import Probe
    probe = Probe(sys.argv[1], dag_id="d", run_id="r", task_id="t", try_number=3)
    probe.sample_gil(0.5)
    probe.sample_gil(0.5)  # a second probe call in the same process adds no sampler
    stop = threading.Event()
    def spin():
        while not stop.is_set():
            sum(range(1000))
    def read():
        while not stop.is_set():
            READER.saw(snowflake.encode(int((time.time() - 0.5) * 1000), 0))
            time.sleep(0.002)
    threads = [threading.Thread(target=spin), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(float(sys.argv[2]))
    stop.set()
    for t in threads:
        t.join()
""")


def _run_task(tmp_path: Path, run_dir: Path, seconds: float) -> int:
    script = tmp_path / "task.py"
    script.write_text(TASK)
    task = OwnedProcess([sys.executable, str(script), str(run_dir), str(seconds)], cwd=ROOT)
    try:
        return task.popen.wait(timeout=60)
    finally:
        task.stop()


def test_the_probe_records_gil_samples_of_a_contended_process(tmp_path):
    run_dir = tmp_path / "run"
    assert _run_task(tmp_path, run_dir, 3.0) == 0
    _, ops = _probe(run_dir / "probe")
    gil = [op.value for op in ops if op.f == "gil"]
    # One sampler, every 0.5 s for 3 s; fewer when other jobs starve the process of CPU.
    assert 3 <= len(gil) <= 12
    assert {(g["role"], g["try"], g["interval_s"]) for g in gil} == {("task", 3, 0.5)}
    later = gil[1:-1]  # not the start-up's or the exit's
    # A spinning thread next to a reader: the reader's requests wait ~a switch interval.
    # Bounds are wide: two shared cores (gil-calibrate reads ~0.8 here). A sample whose
    # knocker closed no window in time is None (unknown; it closes one every ~0.2 s).
    known = [g["contention"] for g in later if g["contention"] is not None]
    assert len(known) >= len(later) / 2, later
    assert sum(known) / len(known) > 0.3, later
    active = [(g["active_threads"], g["threads"]) for g in later]
    assert all(a >= 2 and t >= 3 for a, t in active), active
    # One GIL: at most ~1 core of Python (less when other jobs take the cores).
    ratios = [g["cpu_s"] / g["wall_s"] for g in later]
    assert all(0.02 < r < 1.5 for r in ratios), ratios
    lags = [g["reader_lag_s"] for g in later]
    assert all(0.45 < lag < 1.0 for lag in lags), lags  # created 0.5 s before being read
    assert all(g["reads"] > 0 for g in later), [g["reads"] for g in later]


def test_exit_with_the_sampler_running_is_clean(tmp_path):
    """A knocker still asking for the GIL during interpreter shutdown aborts the process
    (exit 134, seen without the atexit stop): exits at different moments stay clean."""
    for i, seconds in enumerate([0.01, 0.05, 0.13, 0.21, 0.3]):
        assert _run_task(tmp_path, tmp_path / f"run{i}", seconds) == 0


def test_metrics_summarise_gil_per_process(tmp_path):
    """Two processes' samples, written as the probe writes them, through check_run."""
    spec = Spec([1] * 10, [(1, 0, 10, "acked")], [], [], [T0_WALL], T0_WALL + 0.01, 0.0)
    write_run(spec, tmp_path)
    task = [0.1, 0.2, 0.3, 0.4, 0.9]
    worker = [0.0, 0.0, 0.0]
    lines = []
    for pid, role, values in [(100, "task", task), (101, "worker", worker)]:
        for i, c in enumerate(values):
            value = {
                "role": role,
                "try": 1,
                "interval_s": 1.0,
                "contention": c,
                "knock": 0.8 if role == "worker" else c,
                "cpu_s": 0.5,
                "wall_s": 1.0,
                "threads": 3,
                "active_threads": 3 if role == "task" else 1,
                "reader_lag_s": 0.01 * (i + 1) if role == "task" else None,
                "reads": 100,
                "reader_behind_s": 0.02,
            }
            record = {"time": T0_WALL + i, "pid": pid, "try": 1, "type": "info", "f": "gil"}
            lines.append((pid, {**record, "value": value}))
    for pid, line in lines:
        with (tmp_path / "probe" / f"host-{pid}.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    gil = check_run(tmp_path)["timing"]["gil"]
    assert gil["interval_s"] == 1.0
    by_role = {p["role"]: p for p in gil["per_process"]}
    assert [p["role"] for p in gil["per_process"]] == ["task", "worker"]
    assert by_role["task"]["pid"] == 100
    assert by_role["task"]["samples"] == 5
    assert by_role["task"]["mean"] == pytest.approx(0.38)
    assert by_role["task"]["p95"] == pytest.approx(0.8)  # numpy's linear interpolation
    assert by_role["worker"]["mean"] == 0.0
    assert by_role["worker"]["knock_mean"] == 0.8
    assert by_role["task"]["cpu_ratio"] == 0.5
    assert by_role["task"]["series"]["contention"] == task
    assert by_role["task"]["series"]["time"][0] == pytest.approx(T0_WALL)
    assert gil["mean"] == pytest.approx(0.38)
    assert gil["p95"] == pytest.approx(0.8)
    assert gil["reader_lag_max_s"] == pytest.approx(0.05)


def test_no_samples_give_nulls(tmp_path):
    spec = Spec([1] * 4, [(1, 0, 4, "acked")], [], [], [T0_WALL], T0_WALL + 0.004, 0.0)
    write_run(spec, tmp_path)
    gil = check_run(tmp_path)["timing"]["gil"]
    assert gil == {
        "interval_s": None,
        "per_process": [],
        "mean": None,
        "p95": None,
        "reader_lag_max_s": None,
    }


def test_the_gil_sweep_crosses_variants_and_cpu_cost():
    scenarios = load(ROOT / "scenarios" / "gil-sweep.toml")
    assert len(scenarios) == 15
    cells = {(s.variant, s.params["cpu_us"]) for s in scenarios}
    assert cells == {
        (v, c) for v in ("threaded", "multiprocess", "naive_loop") for c in (0, 50, 100, 200, 400)
    }
    assert len({s.rate for s in scenarios}) == 1  # a fixed rate
    first = next(s for s in scenarios if s.name == "threaded-gil-cpu_us400")
    assert first.params == {"batch": 50, "workers": 2, "gil_interval": 1.0, "cpu_us": 400}


def test_reader_lag_reads_the_snowflake_clock():
    reader = ReaderLag()
    assert reader.take() == {"reader_lag_s": None, "reads": 0, "reader_behind_s": None}
    now_ms = int(time.time() * 1000)
    reader.saw(snowflake.encode(now_ms - 2000, 5))
    reader.saw(snowflake.encode(now_ms - 1000, 0))
    taken = reader.take()
    assert taken["reads"] == 2
    assert 1.99 < taken["reader_lag_s"] < 2.5  # the worst of the two
    assert 0.99 < taken["reader_behind_s"] < 1.5  # the newest read, now
    assert reader.take()["reader_lag_s"] is None  # reset
