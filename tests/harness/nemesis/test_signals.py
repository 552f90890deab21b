"""harness/nemesis/signals.py on a fake task with real processes: the signal each fault
delivers is the one the try's supervisor sees it die of."""

from __future__ import annotations

import threading
import time

from harness.airflow.base import Capability
from harness.nemesis.signals import ExhaustRetries, KillTask, MoveWorker, PauseTask, SigtermTaskOnly
from tests.harness.nemesis._fake_task import FakeTask, fire, proc_state

TRY = frozenset({Capability.TASK_PROCESS})


def test_kill_task_sigkills_the_try_and_the_next_one_comes(tmp_path):
    task = FakeTask(TRY)
    try:
        start, stop = fire(KillTask(at=0), task, tmp_path / "log")
        assert task.exit_code(1) == -9
        assert len(task.tries) == 2
    finally:
        task.stop()
    assert (start["pid"], start["signal"]) == (task.tries[0], "SIGKILL")
    assert (stop["retry"], stop["empty_disk"]) == (True, False)


def test_sigterm_task_only_sends_a_bare_sigterm(tmp_path):
    task = FakeTask(TRY)
    try:
        start, _stop = fire(SigtermTaskOnly(at=0), task, tmp_path / "log")
        assert task.exit_code(1) == -15
    finally:
        task.stop()
    assert start["signal"] == "SIGTERM"


def test_move_worker_kills_and_asks_for_an_empty_disk(tmp_path):
    task = FakeTask(TRY)
    try:
        _start, stop = fire(MoveWorker(at=0), task, tmp_path / "log")
        assert task.exit_code(1) == -9
    finally:
        task.stop()
    assert task.empty_disks == 1
    assert stop["empty_disk"] is True


def test_exhaust_retries_kills_until_no_try_follows(tmp_path):
    """Five kills asked, two retries left: three tries die, and the fault stops there."""
    task = FakeTask(TRY, retries=2)
    try:
        records = fire(ExhaustRetries(at=0, times=5), task, tmp_path / "log", stops=3)
        assert [task.exit_code(n) for n in (1, 2, 3)] == [-9, -9, -9]
    finally:
        task.stop()
    assert [r["f"] for r in records] == ["start", "stop"] * 3
    assert [r["retry"] for r in records if r["f"] == "stop"] == [True, True, False]
    assert [r["pid"] for r in records if r["f"] == "start"] == task.tries


def test_pause_task_freezes_the_try_for_its_duration(tmp_path):
    task = FakeTask(TRY)
    seen: list[str | None] = []

    def watch() -> None:  # the try's state while the fault acts
        while not (tmp_path / "log").exists():
            time.sleep(0.01)
        seen.append(proc_state(task.tries[0]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        start, stop = fire(PauseTask(at=0, duration=1.0), task, tmp_path / "log")
        watcher.join()
        assert proc_state(task.tries[0]) in ("S", "R")  # running again
    finally:
        task.stop()
    assert seen == ["T"]
    assert (start["signal"], stop["signal"]) == ("SIGSTOP", "SIGCONT")
    assert stop["time"] - start["time"] >= 1.0
