"""harness/nemesis/triggerer.py on a fake task with real processes."""

from __future__ import annotations

from harness.airflow.base import Capability
from harness.nemesis.triggerer import RestartTriggerer
from harness.procs import pid_alive
from tests.harness.nemesis._fake_task import FakeTask, fire


def test_restart_triggerer_kills_the_triggerer_and_starts_another(tmp_path):
    task = FakeTask(frozenset({Capability.TRIGGERER}))
    try:
        _start, stop = fire(RestartTriggerer(at=0), task, tmp_path / "log")
        old, new = task.triggerers
        assert not pid_alive(old)
        assert pid_alive(new)
    finally:
        task.stop()
    assert stop["killed"] == old
