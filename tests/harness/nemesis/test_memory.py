"""harness/nemesis/memory.py on a fake task with real processes: the cap is the kernel's,
on the try's process, and the fault ends when that process does."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from harness.airflow.base import Capability
from harness.nemesis.memory import MemoryLimit
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
