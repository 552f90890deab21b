"""harness/run/jobs.py: which scenarios share an Airflow, how many at once, and the order
they run in (a fake ``run`` stands for a scenario's run: this is the scheduling alone; the
real side by side runs are in tests/harness/airflow/test_standalone.py)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from harness.__main__ import main
from harness.airflow.base import Capability
from harness.nemesis import registered
from harness.run import jobs
from harness.run.jobs import AIRFLOW_CORES, SCENARIO_CORES, Slot, alone, default_jobs, side_by_side
from harness.scenario import Scenario

#: The capabilities that reach past the scenario's own task (base.py's Capability).
SHARED = {Capability.SCHEDULER, Capability.TRIGGERER, Capability.WORKERS, Capability.SERVICES}


def scenario(name: str, mode: str = "standalone", fault: str | None = None, **more) -> Scenario:
    faults = [{"type": fault, "at": 1}] if fault else []
    return Scenario.model_validate(
        {"name": name, "variant": "naive_loop", "mode": mode, "airflow_faults": faults, **more}
    )


def test_a_fault_on_a_shared_part_of_airflow_declares_it_runs_alone():
    for name, fault in registered().items():
        if fault.needs & SHARED:
            assert fault.alone, f"{name} acts on {fault.needs & SHARED} but may share"


def test_alone_names_the_fault_or_the_mode_and_leaves_the_rest_shared():
    assert alone(scenario("a")) is None
    assert alone(scenario("b", fault="kill_task")) is None
    assert "restart_scheduler" in str(alone(scenario("c", fault="restart_scheduler")))
    assert "dagtest" in str(alone(scenario("d", mode="dagtest")))


def test_default_jobs_from_the_cores_and_the_rate():
    shared = [scenario(f"s{n}") for n in range(10)]
    two = default_jobs(shared, available=2.0)
    assert two == int((2.0 - AIRFLOW_CORES) / SCENARIO_CORES)
    assert default_jobs(shared, available=4.0) > two
    faster = [scenario(f"f{n}", rate=4000) for n in range(10)]
    assert default_jobs(faster, available=2.0) < two
    assert default_jobs([scenario("x", fault="restart_scheduler")], available=8.0) == 1
    assert default_jobs(shared[:2], available=8.0) == 2  # never more than there are


def test_side_by_side_holds_n_at_once_and_runs_the_alone_ones_last_by_themselves(monkeypatch):
    monkeypatch.setattr(jobs, "STAGGER", 0.05)
    scenarios = [
        scenario("r1", fault="restart_scheduler"),
        *(scenario(f"s{n}") for n in range(5)),
        scenario("r2", fault="restart_scheduler"),
    ]
    lock = threading.Lock()
    running: set[str] = set()
    seen: list[tuple[str, set[str]]] = []
    starts: list[float] = []

    def run(s: Scenario, slot: Slot) -> Slot:
        with lock:
            running.add(s.name)
            seen.append((s.name, set(running)))
            starts.append(time.monotonic())
        time.sleep(1.0)  # long beside the stagger: the first three overlap on a busy machine
        with lock:
            running.discard(s.name)
        return slot

    done = list(side_by_side(scenarios, 3, run))
    assert sorted(s.name for s, _ in done) == sorted(s.name for s in scenarios)
    assert max(len(at_start) for _, at_start in seen) == 3
    # staggered (less a thread start's jitter: the times are taken inside each run)
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.04
    solo = [(name, at_start) for name, at_start in seen if name.startswith("r")]
    assert [name for name, _ in seen[-2:]] == ["r1", "r2"]
    assert all(at_start == {name} for name, at_start in solo)
    slots = {s.name: slot for s, slot in done}
    assert slots["r1"].jobs == 1
    assert "restart_scheduler" in str(slots["r1"].alone)
    assert slots["s4"].jobs == 3
    assert slots["s4"].alone is None
    assert slots["s4"].beside


def test_a_scenario_that_raises_ends_the_iteration_with_its_error():
    def run(s: Scenario, slot: Slot) -> None:
        if s.name == "bad":
            raise KeyboardInterrupt  # what a run's own failure is not: see matrix._run_one

    with pytest.raises(KeyboardInterrupt):
        list(side_by_side([scenario("ok"), scenario("bad")], 2, run))


def test_dry_run_says_how_many_at_once_and_which_run_alone(tmp_path, capsys):
    path = tmp_path / "m.toml"
    path.write_text(
        '[matrix]\nvariants = ["naive_loop", "checkpoint"]\nfault_sets = ["none", "restart"]\n'
        '[base]\nmode = "standalone"\n[fault_sets.none]\n'
        '[fault_sets.restart]\nairflow_faults = [{ type = "restart_scheduler", at = 2 }]\n'
    )
    assert main(["run", str(path), "--dry-run", "--jobs", "3", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    alone_ones = sorted(line.split()[0] for line in lines if "alone: restart_scheduler" in line)
    assert alone_ones == ["checkpoint-restart", "naive_loop-restart"]
    assert lines[-1] == "4 scenarios valid, up to 3 at once; nothing started (--dry-run)"
