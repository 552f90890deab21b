"""harness/nemesis/supervisor.py on a fake task with real processes: a killed supervisor
leaves its try running, orphaned."""

from __future__ import annotations

from harness.airflow.base import Capability
from harness.nemesis.supervisor import KillWorker
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
