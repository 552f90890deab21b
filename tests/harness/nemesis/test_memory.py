"""harness/nemesis/memory.py on a fake task with real processes: the address-space cap is
the kernel's, on the try's process, and ends with it; the OOM kill is the kernel's too."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness import cgroups
from harness.airflow.base import Capability
from harness.nemesis.memory import LeakingNeighbour, MemoryLimit, OomKill
from harness.procs import pid_alive
from harness.scenario import ScenarioError, load
from tests.harness.nemesis._fake_task import FakeTask, fire


def _address_space_limit(pid: int) -> int:
    """The soft RLIMIT_AS of ``pid``, as the kernel reports it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3])
    raise AssertionError("no address-space line")


def test_memory_limit_caps_the_try_and_ends_with_it(tmp_path):
    task = FakeTask(frozenset({Capability.TASK_PROCESS}))
    log = tmp_path / "log"
    limits: list[int] = []

    def kill_the_try_once_capped() -> None:
        while '"start"' not in (log.read_text() if log.exists() else ""):
            time.sleep(0.01)
        limits.append(_address_space_limit(task.tries[0]))
        os.kill(task.tries[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_try_once_capped)
    killer.start()
    try:
        start, stop = fire(MemoryLimit(at=0, limit_mb=64), task, log)
        killer.join()
    finally:
        task.stop()
    assert limits == [start["limit"]]
    assert start["limit"] == start["address_space"] + 64 * 2**20
    assert stop["died"] is True


@pytest.mark.skipif(cgroups.unavailable() is not None, reason=str(cgroups.unavailable()))
def test_oom_kill_lets_the_kernel_kill_a_leaking_try_at_its_limit(tmp_path):
    task = FakeTask(frozenset({Capability.TASK_PROCESS}), tries="leak")
    try:
        start, stop = fire(OomKill(at=0, limit_mb=32), task, tmp_path / "log")
        code = task.exit_code(1)
    finally:
        task.stop()
    assert start["limit"] == start["used"] + 32 * 2**20
    assert stop["died"] is True
    assert stop["oom_kills"] == 1  # the kernel's count, read from the cgroup
    assert code == -signal.SIGKILL
    assert stop["peak"] is None or stop["peak"] >= start["limit"] - 2**20
    assert not Path(start["cgroup"]).exists()  # removed


def test_oom_kill_is_refused_where_no_memory_cgroup_can_be_made(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups, "unavailable", lambda: "no memory controller here")
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\nvariant = "leaky_loop"\nmode = "standalone"\n'
        'airflow_faults = [{type = "oom_kill", at = 1}]\n'
    )
    with pytest.raises(ScenarioError, match=r"oom_kill cannot run on this machine: no memory"):
        load(path)


@pytest.mark.skipif(cgroups.unavailable() is not None, reason=str(cgroups.unavailable()))
def test_leaking_neighbour_the_kernel_kills_the_larger_of_the_two(tmp_path):
    """A sleeping try (small) beside a neighbour leaking 200 MiB/s in one cgroup: the OOM
    killer picks the neighbour; the try lives on."""
    task = FakeTask(frozenset({Capability.TASK_PROCESS}))
    try:
        fault = LeakingNeighbour(at=0, limit_mb=96, leak_mb_per_s=200)
        start, stop = fire(fault, task, tmp_path / "log")
        try_alive = pid_alive(task.tries[0])
    finally:
        task.stop()
    assert stop["victims"] == ["neighbour"]
    assert stop["oom_kills"] == 1
    assert stop["neighbour_exit"] == -signal.SIGKILL
    assert stop["peak_rss"]["neighbour"] > stop["peak_rss"]["try"]
    assert try_alive
    assert not pid_alive(start["neighbour"])
    assert not Path(start["cgroup"]).exists()
