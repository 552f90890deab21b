"""harness/nemesis/try_state.py on a fake task with real processes: each fault asks the task
handle for its change of state once, then records the try's death."""

from __future__ import annotations

import pytest

from harness.airflow.base import Capability
from harness.nemesis.try_state import ClearTask, MarkFailed, MarkSuccess
from tests.harness.nemesis._fake_task import FakeTask, fire

ABLE = frozenset({Capability.TASK_PROCESS, Capability.TRY_STATE, Capability.SUPERVISOR})


@pytest.mark.parametrize(
    ("fault", "call"),
    [
        (ClearTask(at=0), ("clear_try", None)),
        (MarkFailed(at=0), ("mark_try", "failed")),
        (MarkSuccess(at=0), ("mark_try", "success")),
    ],
)
def test_a_state_change_is_asked_once_and_the_try_s_death_recorded(fault, call, tmp_path):
    task = FakeTask(ABLE, tries="ignore_sigterm")  # only the SIGKILL that follows ends it
    try:
        start, stop = fire(fault, task, tmp_path / "log")
        code = task.exit_code(1)
    finally:
        task.stop()
    assert [c for c in task.calls if c[0] in ("clear_try", "mark_try")] == [call]
    assert start["pid"] == stop["pid"] == task.tries[0]
    assert stop["died"] is True
    assert code == -9
    # The stop is the try's death (the fake's SIGKILL comes 0.5 s after its SIGTERM), not
    # the moment the state was asked for.
    assert 0.4 < stop["time"] - start["time"] < 5
    assert ("supervisor_signals", task.tries[0]) in task.calls


def test_where_no_process_is_ours_the_try_s_end_is_airflow_s_record(tmp_path):
    """With only ``try_state`` (the external mode), the fault reads Airflow's record: the
    running try's number, then when Airflow recorded its end, and touches no process."""
    task = FakeTask(frozenset({Capability.TRY_STATE}), tries="ignore_sigterm")
    try:
        start, stop = fire(ClearTask(at=0), task, tmp_path / "log")
        code = task.exit_code(1)
    finally:
        task.stop()
    assert code == -9  # the fake Airflow's SIGKILL ended it
    assert (start["try_number"], start["action"]) == (1, "clear")
    assert (stop["try_number"], stop["seen_by"], stop["ended"]) == (1, "airflow", True)
    assert stop["time"] == task.ended_at[1]
    assert 0.4 < stop["time"] - start["time"] < 5
    assert {c[0] for c in task.calls} == {"running_try", "clear_try", "try_ended"}
