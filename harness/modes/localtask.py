"""``localtask``: each try runs the way an Airflow 2.x worker runs it (2.x only).

``airflow tasks run <dag> stream <run_id> --local`` starts a ``LocalTaskJob``, which forks
the task process (``StandardTaskRunner``; the child installs Airflow's SIGTERM handler and
enforces ``execution_timeout``) and watches it, recording how the try ended. This is what
a 2.x executor's worker runs for every try, so signals reach the task process as they do in
a deployment: the way to see Airflow 2.x's own SIGTERM handling. (``dagtest`` runs the task
inside ``airflow dags test``; ``standalone`` needs Airflow 3: 2.x refuses LocalExecutor on
SQLite. Airflow 3 has no ``airflow tasks run``: this mode refuses to start there.)

There is no scheduler: the harness does the scheduler's part for the scenario's one DAG
run, through Airflow's own code in a short helper process (``python -m
harness.modes.localtask``, the only place outside :mod:`harness.dag_factory` that imports
Airflow): it syncs the DAG file to the database and triggers the run with the scenario's
conf (what ``airflow dags reserialize`` and ``airflow dags trigger`` do), and before each
try makes the scheduler's decisions for that run (``DagRun.update_state`` and
``schedule_tis``: queued -> running, the try number raised, the retry delay honoured; then
the task instance queued). When a ``LocalTaskJob`` ends and Airflow left the task
``up_for_retry``, the next try follows that way. Each launch is in ``launches.json``.

The DAG is the variant's (``dags/<variant>.py``), with the scenario's task settings at
parse time (``STREAMSTALL_TASK_OVERRIDES``). The task process's pid comes from the probe's
start records; it is signalled only if it is in the session of the ``LocalTaskJob`` we
started. No worker to kill (a 2.x scheduler's zombie detection is not here), no scheduler
to restart: those faults need ``standalone``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.airflow_runner import AIRFLOW_VERSION, AirflowHome, airflow_major
from harness.modes.base import ModeError, TaskSpec, TaskStarts
from harness.procs import OwnedProcess, pid_alive, session_members

__all__ = ["LocalTaskMode", "LocalTaskRun"]

HELPER_TIMEOUT = 180.0  # seconds for the scheduler's part (an Airflow import on a busy machine)
DEATH_TIMEOUT = 90.0  # seconds a signalled try gets to end (2.x escalates after 60 s)
_FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")


class LocalTaskMode:
    """Each scenario gets an AIRFLOW_HOME of its own, with a copy of ``template``."""

    def __init__(self, template: Path) -> None:
        if airflow_major() >= 3:
            raise ModeError(
                f"mode 'localtask' runs `airflow tasks run --local`, which Airflow "
                f"{AIRFLOW_VERSION} does not have (3.x runs tasks under an executor's "
                f"supervisor): use mode 'standalone'"
            )
        self.template = template

    def start(self, spec: TaskSpec) -> LocalTaskRun:
        home = AirflowHome(spec.layout.root / "airflow-home", self.template)
        return LocalTaskRun(home, spec)

    def close(self) -> None:
        pass


class LocalTaskRun:
    """One DAG run of the scenario's variant; each try a ``LocalTaskJob`` we start."""

    def __init__(self, home: AirflowHome, spec: TaskSpec) -> None:
        self.home = home
        self.spec = spec
        self.dag_id = spec.variant
        self.run_id = f"streamstall__{int(time.time() * 1000)}"
        self.log = spec.layout.root / "airflow.log"
        self.launches: list[dict[str, Any]] = []
        self.moves = 0
        self._lock = threading.Lock()
        self._process: OwnedProcess | None = None  # the current try's LocalTaskJob
        self._helper: OwnedProcess | None = None
        self._stopping = threading.Event()
        self._hold = threading.Event()  # after_kill is moving the scratch folder
        self._over = threading.Event()  # no try runs and none will come
        self._decided = threading.Condition()
        self._decisions: dict[int, bool] = {}  # launch index -> whether a next try came
        self._starts = TaskStarts(spec.layout)
        self._scheduler_pass(
            "trigger", "--conf", json.dumps(spec.conf), "--dag-file", str(self._dag_file())
        )
        self._launch()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _dag_file(self) -> Path:
        return self.home.dags_folder / f"{self.dag_id}.py"

    # The scheduler's part -----------------------------------------------------------------

    def _scheduler_pass(self, *args: str) -> dict[str, Any]:
        """Run the helper (``trigger`` or ``schedule``); its JSON answer."""
        argv = [sys.executable, "-m", "harness.modes.localtask", *args, self.dag_id, self.run_id]
        with self.log.open("ab") as log:
            helper = OwnedProcess(argv, env=self.home.env(self.spec.task), stderr=log)
        with self._lock:
            self._helper = helper
        try:
            out, _ = helper.popen.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            out = ""
        finally:
            code = helper.stop(grace=1.0)
            with self._lock:
                self._helper = None
        if code != 0 or not out.strip():
            raise ModeError(
                f"localtask: `{' '.join(argv[2:])}` failed (exit {code}); see {self.log}"
            )
        answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return answer

    def _launch(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = self.home.tasks_run(
                self.dag_id, self.run_id, self.spec.task, log=self.log
            )
            self.launches.append(
                {"run_id": self.run_id, "pid": self._process.pid, "at": time.time()}
            )

    def _supervise(self) -> None:
        """When a ``LocalTaskJob`` ends (and ``after_kill`` is done with the scratch folder),
        do the scheduler's part: a try left ``running`` is a zombie (its job is over) and is
        failed, one ``up_for_retry`` is queued once its retry delay has passed, and the next
        try is launched. The decision for each launch is in ``self._decisions``; a helper
        that fails ends the run (its error goes to ``launches.json``)."""
        try:
            while not self._stopping.is_set() and self._next_try():
                pass
        except ModeError as e:
            if not self._stopping.is_set():
                with self._lock:
                    self.launches.append(
                        {"run_id": self.run_id, "error": str(e), "at": time.time()}
                    )
        finally:
            self._over.set()
            self._decide(len(self.launches) - 1, False)

    def _next_try(self) -> bool:
        """Wait for the current try to end; launch the next if Airflow's state calls for
        one. False once none will come."""
        with self._lock:
            process = self._process
        if process is not None and process.alive():
            self._stopping.wait(0.1)
            return True
        if process is not None:
            with self._lock:
                self.launches[-1]["exit"] = process.stop(grace=1.0)
                self.launches[-1]["ended"] = time.time()
                self._process = None
        if self._hold.is_set():
            self._stopping.wait(0.1)
            return True
        launched = len(self.launches) - 1
        queued = False
        if self.home.task_state(self.dag_id, self.run_id) in ("running", "up_for_retry"):
            answer = self._scheduler_pass("schedule", "--wait", str(HELPER_TIMEOUT - 30))
            queued = bool(answer.get("queued"))
        if queued:
            self._launch()
        self._decide(launched, queued)
        return queued

    def _decide(self, launch: int, next_try: bool) -> None:
        with self._decided:
            self._decisions.setdefault(launch, next_try)
            self._decided.notify_all()

    # TaskRun ---------------------------------------------------------------------------

    def _task_pids(self) -> list[int]:
        return self._starts.pids()

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` is in the session of a ``LocalTaskJob`` we started."""
        with self._lock:
            process = self._process
        return process is not None and pid in session_members(process.pid)

    def task_pid(self) -> int | None:
        alive = [pid for pid in self._task_pids() if pid_alive(pid) and self._ours(pid)]
        return alive[-1] if alive else None

    def signal(self, sig: int) -> int | None:
        pid = self.task_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pid

    def kill_worker(self) -> int | None:
        raise ModeError("localtask has no scheduler to notice an orphan: use mode 'standalone'")

    def restart_scheduler(self) -> list[int]:
        raise ModeError("localtask has no scheduler to restart: use mode 'standalone'")

    def after_kill(self, pid: int | None, move_to: Path | None = None) -> bool:
        """Wait for try ``pid`` and its ``LocalTaskJob`` to end; then, if ``move_to``, move
        the scratch folder aside (the next try's "local disk" is empty); then wait for the
        scheduler's part to decide. True if Airflow's state led to a next try."""
        self._hold.set()
        try:
            with self._lock:
                process = self._process
                launch = len(self.launches) - 1
            deadline = time.monotonic() + DEATH_TIMEOUT
            while time.monotonic() < deadline and (
                (pid is not None and pid_alive(pid)) or (process is not None and process.alive())
            ):
                time.sleep(0.05)
            if move_to is not None:
                scratch = Path(self.spec.conf["scratch_dir"])
                self.moves += 1
                if scratch.exists():
                    scratch.rename(scratch.with_name(f"{scratch.name}.left-behind-{self.moves}"))
        finally:
            self._hold.clear()
        with self._decided:
            self._decided.wait_for(
                lambda: launch in self._decisions or self._stopping.is_set(),
                timeout=HELPER_TIMEOUT + self.spec.retry_delay,
            )
            return self._decisions.get(launch, False) and not self._stopping.is_set()

    def wait(self, timeout: float) -> bool:
        return self._over.wait(timeout)

    def stop(self) -> None:
        """SIGKILL what still runs (the try, its ``LocalTaskJob``, a helper): the run is over,
        and a SIGTERM now would make 2.x rewrite the try's record. A try still running keeps
        Airflow's state ``running``."""
        self._stopping.set()
        with self._lock:
            process, helper = self._process, self._helper
        for owned in (process, helper):
            if owned is None:
                continue
            for pid in session_members(owned.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            owned.stop(grace=1.0)
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)

    def record(self) -> None:
        root = self.spec.layout.root
        (root / "launches.json").write_text(json.dumps(self.launches, indent=2))
        tries = self.home.task_instances(self.dag_id)
        self.spec.layout.task_instances.parent.mkdir(exist_ok=True)
        self.spec.layout.task_instances.write_text(json.dumps(tries, default=str, indent=2))


# The helper: the scheduler's part, in its own process (imports Airflow 2.x) ---------------


def _trigger(dag_id: str, run_id: str, conf: dict[str, Any], dag_file: str) -> None:
    """What ``airflow dags reserialize -S <file>`` and ``airflow dags trigger`` do."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=dag_file, include_examples=False)
    if bag.import_errors:
        raise SystemExit(f"{dag_file}: {bag.import_errors}")
    bag.sync_to_db()
    trigger_dag(dag_id, run_id=run_id, conf=conf)


def _schedule(dag_id: str, run_id: str, wait: float) -> dict[str, Any]:
    """One DAG run's share of the 2.x scheduler loop, until it queues a try or the run is
    over: a try still ``running`` whose ``LocalTaskJob`` is over is a zombie, failed with
    ``handle_failure`` (what the scheduler's zombie check has the DAG processor do: up for
    retry or failed); a queued run starts running; ``update_state`` + ``schedule_tis``
    pick the ready task (retry delay passed) and raise its try number; the task instance
    is queued (as the scheduler does before handing it to an executor)."""
    from airflow.jobs.job import Job
    from airflow.models.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, JobState, TaskInstanceState
    from sqlalchemy import select, update

    bag = DagBag(read_dags_from_db=True)
    deadline = time.monotonic() + wait
    while True:
        with create_session() as session:
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            ).one()
            run.dag = bag.get_dag(dag_id, session=session)
            for ti in run.get_task_instances(state=[TaskInstanceState.RUNNING], session=session):
                job = session.get(Job, ti.job_id) if ti.job_id is not None else None
                if job is None or job.state != JobState.RUNNING:
                    ti.refresh_from_task(run.dag.get_task(ti.task_id))
                    ti.handle_failure(
                        error=f"zombie: LocalTaskJob {ti.job_id} is over", session=session
                    )
            if run.state == DagRunState.QUEUED:
                run.state = DagRunState.RUNNING
                run.start_date = timezone.utcnow()
            schedulable, _ = run.update_state(session=session, execute_callbacks=False)
            run.schedule_tis(schedulable, session)
            queued = session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.state == TaskInstanceState.SCHEDULED,
                )
                .values(state=TaskInstanceState.QUEUED, queued_dttm=timezone.utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
            run_state = str(run.state)
        if queued or run_state in _FINISHED or time.monotonic() >= deadline:
            return {"run_state": run_state, "queued": queued}
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.modes.localtask trigger|schedule [...] DAG_ID RUN_ID``: prints
    the DAG run's state and how many task instances were queued, as JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.modes.localtask")
    parser.add_argument("action", choices=["trigger", "schedule"])
    parser.add_argument("dag_id")
    parser.add_argument("run_id")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--dag-file")
    parser.add_argument("--wait", type=float, default=0.0)
    args = parser.parse_args(argv)
    # task_instance_note.user_id refers to FAB's ab_user: Airflow's own components have
    # that model loaded (by the auth manager); without it, SQLAlchemy cannot flush a TI.
    import airflow.providers.fab.auth_manager.models  # noqa: F401

    if args.action == "trigger":
        _trigger(args.dag_id, args.run_id, json.loads(args.conf), args.dag_file)
    print(json.dumps(_schedule(args.dag_id, args.run_id, args.wait)), flush=True)


if __name__ == "__main__":
    main()
