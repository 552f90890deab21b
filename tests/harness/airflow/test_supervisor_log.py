"""harness/airflow/supervisor_log.py on lines Airflow 3.3.2 wrote (a cleared try, then a
worker shutdown, from a real standalone run): the signals in order, with their reasons."""

from __future__ import annotations

from datetime import datetime

from harness.airflow.supervisor_log import supervisor_signals

WORKER_LOG = """\
2026-12-02T04:18:56.012826Z [info     ] Secrets backends loaded for worker [supervisor] backend_classes=['EnvironmentVariablesBackend', 'MetastoreBackend'] count=2 loc=supervisor.py:2639
2026-12-02T04:19:05.933294Z [error    ] Server indicated the task shouldn't be running anymore [supervisor] detail={'reason': 'not_found', 'message': 'Task Instance not found'} loc=supervisor.py:1720 status_code=410 ti_id=UUID('01a234fa-1708-7346-b458-8d05f284fe61')
2026-12-02T04:19:10.940305Z [warning  ] Process did not terminate in time; escalating [supervisor] loc=supervisor.py:1127 pid=4390 signal=SIGTERM
2026-12-02T04:19:10.947495Z [info     ] Process exited                 [supervisor] exit_code=<Negsignal.SIGKILL: -9> loc=supervisor.py:1119 pid=4390 signal_sent=SIGKILL
2026-12-02T04:19:10.948405Z [info     ] Workload finished              [supervisor] duration=14.9 exit_code=<Negsignal.SIGKILL: -9> final_state=SERVER_TERMINATED loc=supervisor.py:2658
2026-12-02T04:24:04.546079Z [info     ] Received signal, forwarding to task subprocess [supervisor] loc=supervisor.py:1504 pid=43901 signal=SIGTERM
"""  # noqa: E501

TASK_LOG = """\
{"timestamp":"2026-12-02T04:19:00.914098Z","level":"info","event":"No execution date. Starting stream.","logger":"task.stdout"}
{"timestamp":"2026-12-02T04:19:05.933585Z","level":"error","event":"Server indicated the task shouldn't be running anymore. Terminating process","detail":{"reason":"not_found","message":"Task Instance not found"},"logger":"task"}
{"timestamp":"2026-12-02T04:19:10.947778Z","level":"error","event":"Task killed!","logger":"task"}
{"timestamp":"2026-12-02T04:19:11.0
"""  # noqa: E501  (the last line is being written)


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp + "+00:00").timestamp()


def test_a_cleared_try_sigterm_then_sigkill_then_its_exit(tmp_path):
    worker, task = tmp_path / "scheduler.log", tmp_path / "attempt=1.log"
    worker.write_text(WORKER_LOG)
    task.write_text(TASK_LOG)
    found = supervisor_signals([worker], task, 4390, since=_at("2026-12-02T04:18:56"))
    assert found == [
        {"time": _at("2026-12-02T04:19:05.933585"), "signal": "SIGTERM",
         "why": "heartbeat refused: not_found"},
        {"time": _at("2026-12-02T04:19:10.940305"), "signal": "SIGKILL",
         "why": "SIGTERM not obeyed"},
        {"time": _at("2026-12-02T04:19:10.947495"), "exit_code": -9},
    ]  # fmt: skip


def test_only_that_pid_and_only_after_its_start(tmp_path):
    worker, task = tmp_path / "scheduler.log", tmp_path / "missing.log"
    worker.write_text(WORKER_LOG)
    # pid=439 is a prefix of 4390 and 43901: neither is it.
    assert supervisor_signals([worker], task, 439, since=0) == []
    (forwarded,) = supervisor_signals([worker], task, 43901, since=0)
    assert (forwarded["signal"], forwarded["why"]) == ("SIGTERM", "forwarded")
    assert supervisor_signals([worker], task, 4390, since=_at("2026-12-02T04:20:00")) == []


#: Airflow 3.0.6's LocalExecutor worker (a real standalone run, 2026-12-03): structlog's
#: default stamp, local time to the second.
WORKER_LOG_3_0 = """\
2026-12-03 13:53:42 [error    ] Server indicated the task shouldn't be running anymore [supervisor] detail={'detail': {'reason': 'not_found', 'message': 'Task Instance not found'}} status_code=404 ti_id=UUID('01a23c2e-89a6-7916-8aa5-3e7eed734996')
2026-12-03 13:53:47 [warning  ] Process did not terminate in time; escalating [supervisor] pid=25592 signal=SIGTERM
2026-12-03 13:53:52 [info     ] Process exited                 [supervisor] exit_code=<Negsignal.SIGKILL: -9> pid=25592 signal_sent=SIGKILL
"""  # noqa: E501


TASK_LOG_3_0 = """\
{"timestamp":"2026-12-03T13:53:42.527415Z","level":"error","event":"Server indicated the task shouldn't be running anymore. Terminating process","detail":{"detail":{"reason":"not_found","message":"Task Instance not found"}},"logger":"task"}
"""  # noqa: E501


def test_airflow_3_0_stamps_local_time_to_the_second(tmp_path):
    worker, task = tmp_path / "scheduler.log", tmp_path / "attempt=1.log"
    worker.write_text(WORKER_LOG_3_0)
    task.write_text(TASK_LOG_3_0)
    local = datetime.fromisoformat  # naive: local time, as the worker wrote it
    found = supervisor_signals(
        [worker], task, 25592, since=local("2026-12-03 13:53:40").timestamp()
    )
    assert found == [
        {"time": _at("2026-12-03T13:53:42.527415"), "signal": "SIGTERM",
         "why": "heartbeat refused: not_found"},
        {"time": local("2026-12-03 13:53:47").timestamp(), "signal": "SIGKILL",
         "why": "SIGTERM not obeyed"},
        {"time": local("2026-12-03 13:53:52").timestamp(), "exit_code": -9},
    ]  # fmt: skip
