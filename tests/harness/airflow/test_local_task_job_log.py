"""harness/airflow/local_task_job_log.py on task logs Airflow 2.11.2 wrote (a real
``localtask`` run): a cleared try, a try whose LocalTaskJob got a SIGTERM, and one that
outlived the cleanup time (those two lines as ``process_utils.py`` formats them, lines
150 and 87: the naive loop on 2.x always obeys the SIGTERM)."""

from __future__ import annotations

from datetime import datetime

from harness.airflow.local_task_job_log import local_task_job_signals

CLEARED = """\
[2026-12-02T07:27:29.862+0000] {logging_mixin.py:190} INFO - Starting stream from 2026-12-02 07:27:25+00:00
[2026-12-02T07:27:39.771+0000] {local_task_job_runner.py:346} WARNING - State of this instance has been externally set to restarting. Terminating instance.
[2026-12-02T07:27:44.783+0000] {local_task_job_runner.py:245} INFO - ::endgroup::
[2026-12-02T07:27:44.785+0000] {process_utils.py:132} INFO - Sending 15 to group 10735. PIDs of all processes in the group: [10735]
[2026-12-02T07:27:44.785+0000] {process_utils.py:87} INFO - Sending the signal 15 to group 10735
[2026-12-02T07:27:44.786+0000] {taskinstance.py:3118} ERROR - Received SIGTERM. Terminating subprocesses.
[2026-12-02T07:27:44.816+0000] {process_utils.py:80} INFO - Process psutil.Process(pid=10735, status='terminated', exitcode=2) (10735) terminated with exit code 2
"""  # noqa: E501

WORKER_SIGTERM = """\
[2026-12-02T07:25:35.472+0000] {local_task_job_runner.py:127} ERROR - Received SIGTERM. Terminating subprocesses
[2026-12-02T07:25:35.475+0000] {process_utils.py:132} INFO - Sending 15 to group 10029. PIDs of all processes in the group: [10029]
[2026-12-02T07:25:35.477+0000] {process_utils.py:87} INFO - Sending the signal 15 to group 10029
[2026-12-02T07:25:35.477+0000] {taskinstance.py:3118} ERROR - Received SIGTERM. Terminating subprocesses.
[2026-12-02T07:25:35.522+0000] {process_utils.py:80} INFO - Process psutil.Process(pid=10029, status='terminated', exitcode=2) (10029) terminated with exit code 2
[2026-12-02T07:25:35.522+0000] {local_task_job_runner.py:266} INFO - Task exited with return code 143
"""  # noqa: E501

ESCALATED = """\
[2026-12-02T08:00:00.000+0000] {local_task_job_runner.py:346} WARNING - State of this instance has been externally set to failed. Terminating instance.
[2026-12-02T08:00:00.002+0000] {process_utils.py:87} INFO - Sending the signal 15 to group 4242
[2026-12-02T08:01:00.010+0000] {process_utils.py:150} WARNING - process psutil.Process(pid=4242, name='airflow task runner: naive_loop stream', status='running') did not respond to SIGTERM. Trying SIGKILL
[2026-12-02T08:01:00.011+0000] {process_utils.py:87} INFO - Sending the signal Signals.SIGKILL to group 4242
[2026-12-02T08:01:00.020+0000] {process_utils.py:80} INFO - Process psutil.Process(pid=4242, status='terminated') (4242) terminated with exit code -9
"""  # noqa: E501


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp + "+00:00").timestamp()


def _logs(tmp_path, text: str, attempt: int = 1):
    folder = tmp_path / "run_id=r" / "task_id=stream"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"attempt={attempt}.log").write_text(text)
    return tmp_path / "run_id=r"


def test_a_cleared_try_its_sigterm_and_exit(tmp_path):
    found = local_task_job_signals(_logs(tmp_path, CLEARED), 10735)
    assert found == [
        {"time": _at("2026-12-02T07:27:44.785"), "signal": "SIGTERM",
         "why": "externally set to restarting"},
        {"time": _at("2026-12-02T07:27:44.816"), "exit_code": 2},
    ]  # fmt: skip


def test_a_sigterm_to_the_local_task_job_is_forwarded(tmp_path):
    found = local_task_job_signals(_logs(tmp_path, WORKER_SIGTERM), 10029)
    assert [(s.get("signal"), s.get("why"), s.get("exit_code")) for s in found] == [
        ("SIGTERM", "forwarded", None), (None, None, 2),
    ]  # fmt: skip


def test_the_escalation_to_sigkill(tmp_path):
    found = local_task_job_signals(_logs(tmp_path, ESCALATED), 4242)
    assert [(s.get("signal"), s.get("why"), s.get("exit_code")) for s in found] == [
        ("SIGTERM", "externally set to failed", None),
        ("SIGKILL", "SIGTERM not obeyed", None),
        (None, None, -9),
    ]  # fmt: skip
    assert found[1]["time"] - found[0]["time"] > 60  # killed_task_cleanup_time


def test_only_the_try_asked_for_in_the_attempt_that_names_it(tmp_path):
    logs = _logs(tmp_path, CLEARED, attempt=1)
    _logs(tmp_path, WORKER_SIGTERM, attempt=2)
    assert [s.get("exit_code") for s in local_task_job_signals(logs, 10029)] == [None, 2]
    assert local_task_job_signals(logs, 999) == []
