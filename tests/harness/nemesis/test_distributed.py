"""harness/nemesis/distributed.py on a fake task with real processes: what each fault does
to the try's worker or a service, and what it records."""

from __future__ import annotations

import pytest

from harness.airflow.base import Capability
from harness.nemesis.distributed import (
    KillCeleryWorker,
    NetworkPartitionWorker,
    RestartBroker,
    RestartDatabase,
    WorkerWarmShutdown,
)
from harness.procs import pid_alive
from tests.harness.nemesis._fake_task import FakeTask, fire

WORKERS = frozenset({Capability.TASK_PROCESS, Capability.WORKERS})


def test_kill_celery_worker_takes_the_try_with_it_and_restarts_the_worker(tmp_path):
    task = FakeTask(WORKERS)
    try:
        worker, try_ = task.supervisors[0].pid, task.tries[0]
        start, stop = fire(KillCeleryWorker(at=0, restart_after=0.2), task, tmp_path / "log")
        assert not pid_alive(worker)
        assert not pid_alive(try_)
        (restarted,) = task.restarted_workers
    finally:
        task.stop()
    assert (start["worker"], start["pid"], start["killed"]) == ("w1", try_, [worker, try_])
    assert stop["restarted"] == restarted.pid
    assert stop["time"] - start["time"] >= 0.2


def test_kill_celery_worker_main_process_only_orphans_the_try(tmp_path):
    task = FakeTask(WORKERS)
    try:
        worker, try_ = task.supervisors[0].pid, task.tries[0]
        start, _stop = fire(
            KillCeleryWorker(at=0, whole=False, restart_after=0), task, tmp_path / "log"
        )
        assert not pid_alive(worker)
        assert pid_alive(try_)  # an orphan, streaming on
    finally:
        task.stop()
    assert start["killed"] == [worker]


def test_a_warm_shutdown_that_hangs_is_ended_by_sigkill_after_the_grace(tmp_path):
    task = FakeTask(WORKERS, tries="ignore_sigterm")  # the worker waits for it forever
    try:
        try_ = task.tries[0]
        fault = WorkerWarmShutdown(at=0, grace=1.0, restart_after=0)
        start, stop = fire(fault, task, tmp_path / "log")
        assert not pid_alive(try_)
    finally:
        task.stop()
    assert start["signal"] == "SIGTERM"
    assert stop["exited_by_itself"] is False
    assert 1.0 <= stop["hung_seconds"] < 2.0
    assert try_ in stop["killed_after_grace"]


def test_a_warm_shutdown_whose_try_ends_lets_the_worker_exit(tmp_path):
    task = FakeTask(WORKERS)  # the fake worker passes the SIGTERM on; the try obeys
    try:
        _start, stop = fire(
            WorkerWarmShutdown(at=0, grace=10, restart_after=0), task, tmp_path / "log"
        )
    finally:
        task.stop()
    assert stop["exited_by_itself"] is True
    assert stop["hung_seconds"] < 5
    assert stop["killed_after_grace"] == []


@pytest.mark.parametrize(("fault", "service", "other"), [
    (RestartBroker, "broker", "database"), (RestartDatabase, "database", "broker"),
])  # fmt: skip
def test_a_service_is_down_for_its_duration_then_back(tmp_path, fault, service, other):
    task = FakeTask(frozenset({Capability.SERVICES}))
    try:
        old = task.services[service].pid
        start, stop = fire(fault(at=0, duration=0.5), task, tmp_path / "log")
        new = task.services[service].pid
        assert not pid_alive(old)
        assert pid_alive(new)
        assert task.service_pids[other] == [task.services[other].pid]  # untouched
    finally:
        task.stop()
    assert (start["pids"], stop["pids"], start["service"]) == ([old], [new], service)
    assert 0.5 <= stop["time"] - start["time"] < 2.0


def test_a_partition_cuts_the_try_s_worker_off_and_heals_it(tmp_path):
    task = FakeTask(WORKERS)
    try:
        start, stop = fire(NetworkPartitionWorker(at=0, duration=0.5), task, tmp_path / "log")
    finally:
        task.stop()
    cuts = [arg for call, arg in task.calls if call == "partition_worker"]
    assert cuts == [("w1", True), ("w1", False)]
    assert 0.5 <= stop["time"] - start["time"] < 2.0
