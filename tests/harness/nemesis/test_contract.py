"""The contract every registered Airflow fault keeps (docs/creating-faults.md), checked on a
fake task of our own with real processes: a new fault is covered without an edit here.

1. It acts only once its trigger holds.
2. It records a ``start`` and a ``stop`` under its own type.
3. It uses only what it declares in ``needs`` (the fake refuses anything else).
4. It signals only processes the task handle reported (ours).
5. It stops acting when the run ends, and leaves no try frozen.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from harness.airflow.base import Capability
from harness.nemesis import Nemesis, registered
from tests.harness.nemesis._fake_task import FakeProgress, FakeTask, proc_state

#: Fields beyond a fault's defaults: a long pause shows that the end of the run cuts it short.
ATTRIBUTES = {"pause_task": {"duration": 60}}


def _wait_for(log, text: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions raised in the nemesis's threads (they would only be printed)."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


@pytest.mark.parametrize("fault_type", sorted(registered()))
def test_every_fault_keeps_the_contract(fault_type, tmp_path, thread_errors):
    cls = registered()[fault_type]
    assert cls.needs
    assert cls.needs <= set(Capability)
    fault = cls.model_validate(
        {"type": fault_type, "after_commits": 100, **ATTRIBUTES.get(fault_type, {})}
    )
    task = FakeTask(cls.needs)
    progress = FakeProgress()
    log = tmp_path / "airflow_faults.jsonl"
    nemesis = Nemesis([fault], task, progress, log, task.capabilities)
    try:
        nemesis.start()
        progress.count = 99
        time.sleep(0.5)
        assert not log.exists()  # 1: 99 commits are not 100
        assert task.calls == []
        progress.count, triggered_at = 100, time.time()
        _wait_for(log, '"start"', 30)
        _wait_for(log, '"stop"', 2)  # a pause or a memory cap lasts until the run ends (5)
        nemesis.stop()
        assert not any(t.is_alive() for t in nemesis._threads)  # 5: it returned
        records = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        task.stop()
    assert thread_errors == []  # 3: nothing outside its capabilities was called
    assert [r["f"] for r in records][:1] == ["start"]
    assert "stop" in [r["f"] for r in records]  # 2
    assert {r["fault"] for r in records} == {fault_type}
    assert all(triggered_at - 0.1 <= r["time"] <= time.time() for r in records)
    pids = {r["pid"] for r in records if r.get("pid") is not None}
    assert pids <= task.owned()  # 4
    assert all(proc_state(pid) != "T" for pid in task.tries)  # 5: no try left frozen
