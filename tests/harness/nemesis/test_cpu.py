"""harness/nemesis/cpu.py on a fake task with real processes: the neighbours are busy while
the fault lasts, and gone after it."""

from __future__ import annotations

from harness.airflow.base import Capability
from harness.nemesis.cpu import BusyNeighbour
from harness.procs import pid_alive
from tests.harness.nemesis._fake_task import FakeTask, fire


def test_busy_neighbour_keeps_a_core_busy_for_its_duration(tmp_path):
    task = FakeTask(frozenset({Capability.TASK_PROCESS}))
    try:
        start, stop = fire(BusyNeighbour(at=0, cores=1, duration=2), task, tmp_path / "log")
    finally:
        task.stop()
    assert start["pid"] == task.tries[0]
    assert 1.9 <= stop["time"] - start["time"] < 4
    assert stop["neighbour_cores"] > 0.5  # measured from the kernel's CPU accounting
    assert not [pid for pid in start["neighbours"] if pid_alive(pid)]
