"""harness/nemesis/supervisor.py on a fake task with real processes: a killed supervisor
leaves its try running, orphaned; a shut-down one forwards SIGTERM, and the deploy's
SIGKILL follows after the grace."""

from __future__ import annotations

import signal

from harness.airflow.base import Capability
from harness.nemesis.supervisor import KillWorker, WorkerShutdown
from harness.procs import pid_alive
from tests.harness.nemesis._fake_task import FakeTask, fire


def test_kill_worker_kills_the_supervisor_and_orphans_the_try(tmp_path):
    task = FakeTask(frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR}))
    try:
        start, _stop = fire(KillWorker(at=0), task, tmp_path / "log")
        supervisor = task.supervisors[0]
        assert supervisor.popen.returncode == -9
        assert pid_alive(task.tries[0])  # the orphan runs on
    finally:
        task.stop()
    assert (start["pid"], start["orphan"]) == (supervisor.pid, task.tries[0])


def test_worker_shutdown_forwards_sigterm_and_a_try_that_obeys_is_not_killed(tmp_path):
    task = FakeTask(frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR}))
    try:
        start, stop = fire(WorkerShutdown(at=0, grace=30), task, tmp_path / "log")
        code = task.exit_code(1)
    finally:
        task.stop()
    assert (start["signal"], start["worker"]) == ("SIGTERM", task.supervisors[0].pid)
    assert code == -signal.SIGTERM  # the worker forwarded it
    assert stop["killed_after_grace"] is False
    assert stop["time"] - start["time"] < 5


def test_worker_shutdown_kills_worker_and_try_after_the_grace(tmp_path):
    task = FakeTask(
        frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR}), tries="ignore_sigterm"
    )
    try:
        start, stop = fire(WorkerShutdown(at=0, grace=1.5), task, tmp_path / "log")
        worker = task.supervisors[0]
        worker.popen.wait(timeout=5)
    finally:
        task.stop()
    assert stop["killed_after_grace"] is True
    assert stop["worker_exited"] is None  # it outlived its SIGTERM: the SIGKILL ended it
    assert worker.popen.returncode == -signal.SIGKILL
    assert not pid_alive(task.tries[0])
    assert 1.5 <= stop["time"] - start["time"] < 5
