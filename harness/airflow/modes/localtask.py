"""``localtask``: each try runs the way an Airflow 2.x worker runs it (2.x only).

``airflow tasks run <dag> stream <run_id> --local`` starts a ``LocalTaskJob``, which forks
the task process and watches it: what a 2.x executor's worker runs for every try, so
signals reach the task as they do in a deployment and 2.x's own SIGTERM handling shows.
``dagtest`` would run the task inside ``airflow dags test`` instead, and ``standalone``
needs Airflow 3 (2.x refuses LocalExecutor on SQLite); Airflow 3 has no ``tasks run``.

With no scheduler, the harness does the scheduler's part for the one DAG run, with
Airflow's own code in a helper process (:mod:`harness.airflow.localtask_scheduler`):
trigger, zombie, retry delay, try number; and, with no webserver, what the 2.x UI's
Clear and Mark as do. Nothing here imports Airflow. How a try is launched
and retried is in harness/README.md ("Modes and what they can do").
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.airflow.base import (
    Capability,
    DagSpec,
    Mode,
    ModeError,
    TaskSpec,
    register_mode,
    running_try,
    try_ended,
    write_airflow_record,
)
from harness.airflow.home import AirflowHome, airflow_major, airflow_version
from harness.airflow.local_task_job_log import local_task_job_signals
from harness.airflow.probed import ProbedTask, kill
from harness.procs import OwnedProcess, in_sessions, pid_alive, session_members

__all__ = ["LocalTaskMode", "LocalTaskTask"]

HELPER_TIMEOUT = 180.0  # seconds for the scheduler's part (an Airflow import on a busy machine)
DEATH_TIMEOUT = 90.0  # seconds a signalled try gets to end (2.x escalates after 60 s)
_HELPER = "harness.airflow.localtask_scheduler"
#: Task-instance states after which the scheduler has more to do for the run.
_UNFINISHED = ("running", "up_for_retry", "restarting", "queued", "scheduled")
#: ``[scheduler] scheduler_zombie_task_threshold``: a try whose ``LocalTaskJob`` has not
#: heartbeat for this long is a zombie (short, as standalone's; the default is 300 s).
ZOMBIE_THRESHOLD = 20
_SETTINGS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD": str(ZOMBIE_THRESHOLD),
    # Airflow's default level: the LocalTaskJob logs the signals it sends at INFO.
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}


@register_mode
class LocalTaskMode(Mode):
    """Each scenario gets an AIRFLOW_HOME of its own, with a copy of the template."""

    name = "localtask"
    capabilities = frozenset({Capability.TASK_PROCESS, Capability.SUPERVISOR, Capability.TRY_STATE})
    heartbeat_timeout = ZOMBIE_THRESHOLD + 5.0  # and the LocalTaskJob's heartbeat

    def __init__(self, root: Path, dags: list[DagSpec], template: Path | None) -> None:
        if airflow_major() >= 3:
            raise ModeError(
                f"mode 'localtask' runs `airflow tasks run --local`, which Airflow "
                f"{airflow_version()} does not have (3.x runs tasks under an executor's "
                f"supervisor): use mode 'standalone'"
            )
        super().__init__(root, dags, template)

    def start(self, spec: TaskSpec) -> LocalTaskTask:
        home = AirflowHome(spec.layout.root / "airflow-home", self.template)
        home.admit(spec, spec.dag.variant)
        return LocalTaskTask(home, spec)


class LocalTaskTask(ProbedTask):
    """One DAG run of the scenario's variant; each try a ``LocalTaskJob`` we start."""

    def __init__(self, home: AirflowHome, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.home = home
        self.dag_id = spec.dag.variant
        self.run_id = f"streamstall__{int(time.time() * 1000)}"
        self.log = spec.layout.root / "airflow.log"
        self.launches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process: OwnedProcess | None = None  # the current try's LocalTaskJob
        self._ended: list[OwnedProcess] = []  # earlier LocalTaskJobs (an orphan may live on)
        self._helpers: set[OwnedProcess] = set()
        self._stopping = threading.Event()
        self._hold = threading.Event()  # after_kill is moving the scratch folder
        self._over = threading.Event()  # no try runs and none will come
        self._decided = threading.Condition()
        self._decisions: dict[int, bool] = {}  # launch index -> whether a next try came
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
        """Run the helper (``trigger``, ``schedule``, ``clear``, ``mark``); its JSON answer."""
        argv = [sys.executable, "-m", _HELPER, *args, self.dag_id, self.run_id]
        with self.log.open("ab") as log:
            env = self.home.env(self.spec.dag.task, _SETTINGS)
            helper = OwnedProcess(argv, env=env, stderr=log)
        with self._lock:
            self._helpers.add(helper)
        try:
            out, _ = helper.popen.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            out = ""
        finally:
            code = helper.stop(grace=1.0)
            with self._lock:
                self._helpers.discard(helper)
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
                self.dag_id, self.run_id, self.spec.dag.task, log=self.log, extra=_SETTINGS
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
            # What the LocalTaskJob leaves behind is not stopped: a try it did not reap
            # (its LocalTaskJob SIGKILLed) lives on as an orphan, as on a 2.x worker.
            with self._lock:
                self.launches[-1]["exit"] = process.popen.wait()
                self.launches[-1]["ended"] = time.time()
                self._ended.append(process)
                self._process = None
        if self._hold.is_set():
            self._stopping.wait(0.1)
            return True
        launched = len(self.launches) - 1
        queued = False
        if self.home.task_state(self.dag_id, self.run_id) in _UNFINISHED:
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

    # TaskHandle ------------------------------------------------------------------------

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is in the session of a ``LocalTaskJob`` we started."""
        with self._lock:
            jobs = [*self._ended, *([self._process] if self._process else [])]
        return in_sessions(pid, {job.pid for job in jobs})

    def signal_supervisor(self, sig: int) -> int | None:
        """Signal the current try's ``LocalTaskJob`` (what supervises a try on a 2.x
        worker); a SIGKILL leaves the try running as an orphan."""
        with self._lock:
            process = self._process
        if process is None or not process.alive():
            return None
        kill(process.pid, sig)
        return process.pid

    def supervisor_signals(self, pid: int) -> list[dict[str, Any]]:
        return local_task_job_signals(self._task_logs(), pid)

    def clear_try(self) -> float:
        return float(self._scheduler_pass("clear")["at"])

    def mark_try(self, state: str) -> float:
        return float(self._scheduler_pass("mark", "--state", state)["at"])

    def running_try(self) -> int | None:
        return running_try(self._tries())

    def try_ended(self, number: int) -> float | None:
        return try_ended(self._tries(), number)

    def _tries(self) -> list[dict[str, Any]]:
        return [t for t in self.home.task_instances(self.dag_id) if t["run_id"] == self.run_id]

    def _task_logs(self) -> Path:
        return self.home.root / "logs" / f"dag_id={self.dag_id}" / f"run_id={self.run_id}"

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        """Wait for try ``pid`` and its ``LocalTaskJob`` to end; then, with ``empty_disk``,
        move the scratch folder aside; then wait for the scheduler's part to decide. True
        if Airflow's state led to a next try."""
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
            if empty_disk:
                self.empty_disk()
        finally:
            self._hold.clear()
        with self._decided:
            self._decided.wait_for(
                lambda: launch in self._decisions or self._stopping.is_set(),
                timeout=HELPER_TIMEOUT + self.spec.dag.retry_delay,
            )
            return self._decisions.get(launch, False) and not self._stopping.is_set()

    def ended(self) -> bool:
        return self._over.is_set()

    def wait(self, timeout: float) -> bool:
        return self._over.wait(timeout)

    def stop(self) -> None:
        """SIGKILL what still runs (the try, its ``LocalTaskJob``, an orphan, a helper): the
        run is over, and a SIGTERM now would make 2.x rewrite the try's record. A try still
        running keeps Airflow's state ``running``."""
        self._stopping.set()
        with self._lock:
            owned_now = [self._process, *self._ended, *self._helpers]
        for owned in owned_now:
            if owned is None:
                continue
            for pid in session_members(owned.pid):
                kill(pid, signal.SIGKILL)
            owned.stop(grace=1.0)
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)

    def record(self) -> None:
        tries = self.home.task_instances(self.dag_id)
        write_airflow_record(self.spec.layout, tries, self.launches)
