"""A real, long-lived Airflow 3 on this machine: API server, scheduler, dag-processor and
LocalExecutor on SQLite, in an AIRFLOW_HOME of its own, on a free loopback port.

This is what ``airflow standalone`` starts, but as three processes we start ourselves (four
when a DAG is scheduled on an asset watcher: the triggerer runs the watchers), so each has
a PID we know: the nemesis can kill and restart the scheduler, or the triggerer, alone.
None serves logs over HTTP (``--skip-serve-logs``: that server binds every interface);
the harness reads the log files. Each
process leads its own process group (:class:`~harness.procs.OwnedProcess`); the
LocalExecutor's workers and the task processes they supervise are in the scheduler's
session, so stopping it (or the sessions of a killed scheduler) leaves nothing behind.

Every scenario of a matrix gets its own triggered-only DAG (its id is the scenario's
name), in a file of its own, built by :func:`harness.airflow.dag_factory.scenario_dags`
from ``dags/scenarios.json``, so scenario task settings (a short ``execution_timeout``,
retries) reach every Airflow process that parses the DAG. Runs are triggered and watched
through the REST API (the simple auth manager with every user an admin: loopback only;
harness/airflow/rest.py).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import requests

from harness.airflow.base import ModeError, TaskSpec
from harness.airflow.home import AIRFLOW_BIN, AirflowHome
from harness.airflow.rest import AirflowRest
from harness.airflow.user_dag import write_policy
from harness.procs import OwnedProcess, in_sessions
from harness.task.variants import VARIANTS

__all__ = ["HEARTBEAT_TIMEOUT", "StandaloneAirflow"]

#: ``[scheduler] task_instance_heartbeat_timeout``: short, so an orphaned task (its
#: supervisor killed) is noticed within a scenario; the default is 300 s.
HEARTBEAT_TIMEOUT = 20
STARTUP_TIMEOUT = 180.0

#: One file per scenario's DAG, so that what Airflow does to a file touches one scenario:
#: 3.0's dag-processor drops every DAG of a file whose stuck try it gets callbacks for.
_DAG_FILE = '''"""Airflow DAG file written by streamstall: scenario {dag_id!r} (scenarios.json)."""

from pathlib import Path

from harness.airflow.dag_factory import scenario_dags

globals().update(scenario_dags(Path(__file__).with_name("scenarios.json"), only={dag_id!r}))
'''


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneAirflow(AirflowRest):
    """Start Airflow with one DAG per entry of ``dags``; stop it with :meth:`stop`.

    :param root: its AIRFLOW_HOME (created).
    :param dags: ``{dag_id: {"variant", "task", "description"}}``.
    :param template: a migrated ``airflow.db`` to copy instead of migrating.
    :param user_dags: DAGs you bring, ``{dag_id: {"file", "task_id", "task"}}``: each
        file copied in unchanged, under the cluster policy of :mod:`harness.airflow.user_dag`.
    :param jobs: scenarios that run at once: the LocalExecutor gets room for their tries.
    """

    def __init__(
        self,
        root: Path,
        dags: dict[str, dict[str, Any]],
        template: Path | None = None,
        user_dags: dict[str, dict[str, Any]] | None = None,
        jobs: int = 1,
    ) -> None:
        self.jobs = jobs
        dags_folder = root / "dags"
        dags_folder.mkdir(parents=True, exist_ok=True)
        (dags_folder / "scenarios.json").write_text(json.dumps(dags, indent=2))
        for number, dag_id in enumerate(sorted(dags)):
            safe = re.sub(r"[^A-Za-z0-9_]", "_", dag_id)  # a module name Airflow can import
            (dags_folder / f"streamstall_{number:03d}_{safe}.py").write_text(
                _DAG_FILE.format(dag_id=dag_id)
            )
        self.user_dags = dict(user_dags or {})
        for dag_id, entry in self.user_dags.items():
            shutil.copyfile(entry["file"], dags_folder / f"user_{dag_id}.py")
        write_policy(root / "config", self._policy())
        self.dag_ids = sorted([*dags, *self.user_dags])
        #: A triggerer runs beside the scheduler when a DAG is scheduled on an asset watcher.
        self.watched = any(VARIANTS[e["variant"]].watched for e in dags.values())
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.logs = root / "process-logs"
        self.logs.mkdir(exist_ok=True)
        self._retired: list[OwnedProcess] = []  # killed schedulers: their groups hold orphans
        try:
            self.home = self._home(root, template, dags_folder)
            self.env = self._env()
            self._start_all()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _home(self, root: Path, template: Path | None, dags_folder: Path) -> AirflowHome:
        """Its AIRFLOW_HOME and database (here SQLite, a copy of ``template``)."""
        return AirflowHome(root, template, dags_folder=dags_folder)

    def _env(self) -> dict[str, str]:
        """The environment of every Airflow process it starts."""
        secret = secrets.token_hex(16)
        # One Fernet key for every process: left unset, each process that starts before
        # airflow.cfg exists makes up its own, and the triggerer cannot read the trigger
        # kwargs the dag-processor encrypted (it dies on the first asset watcher).
        fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        return self.home.env(extra={
            "AIRFLOW__CORE__FERNET_KEY": fernet,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # INFO, not the harness's WARNING: a task log then holds what the task printed.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # A try per scenario, plus an orphan and its retry (kill_worker's: it runs
            # alone). Not more: the LocalExecutor starts every worker at once, each an
            # Airflow import (~1 s of CPU) while the first scenarios start.
            "AIRFLOW__CORE__PARALLELISM": str(self.jobs + 3),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # unpaused when run
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": secret,
            # Unset, 3.0's tokens carry a non-string `iss` that today's PyJWT refuses to
            # sign: every token (the API's and the tasks') is a 500.
            "AIRFLOW__API_AUTH__JWT_ISSUER": "streamstall",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        })  # fmt: skip

    def _start_all(self) -> None:
        self.api = self._start("api-server")
        self.scheduler = self._start("scheduler", "--skip-serve-logs")
        self.dag_processor = self._start("dag-processor")
        if self.watched:
            self.triggerer = self._start("triggerer", "--skip-serve-logs")

    def _components(self) -> list[OwnedProcess]:
        """The Airflow processes that must stay up (a dead one fails the start)."""
        return [self.api, self.scheduler, self.dag_processor, *self._triggerers()]

    def _triggerers(self) -> list[OwnedProcess]:
        return [self.triggerer] if self.watched and hasattr(self, "triggerer") else []

    def _start(
        self, component: str, *args: str, name: str = "", env: dict[str, str] | None = None
    ) -> OwnedProcess:
        """Start ``airflow <component> <args>``, its output in ``<name or component>.log``."""
        name = name or component
        with open(self.logs / f"{name}.log", "ab") as log:
            process = OwnedProcess(
                [str(AIRFLOW_BIN / "airflow"), component, *args],
                env=env or self.env, stdout=log, stderr=log,
            )  # fmt: skip
        # Every process we start, for whoever checks afterwards that none is left.
        with open(self.logs / "started.jsonl", "a") as started:
            started.write(json.dumps({"component": name, "pid": process.pid}) + "\n")
        return process

    def _policy(self) -> dict[str, dict[str, Any]]:
        return {d: {"task_id": e["task_id"], "task": e["task"]} for d, e in self.user_dags.items()}

    def admit(self, spec: TaskSpec, dag_id: str) -> None:
        """Before ``dag_id`` runs for ``spec``: its stream connection and its run folder."""
        self.home.admit(spec, dag_id)

    def set_task_settings(self, dag_id: str, task: dict[str, Any]) -> None:
        """The task settings of a DAG you brought, for its tries from now on."""
        self.user_dags[dag_id] = {**self.user_dags[dag_id], "task": task}
        write_policy(self.home.root / "config", self._policy())

    def _wait_ready(self) -> None:
        """Until the API answers and the dag-processor has stored every scenario's DAG;
        a DAG file Airflow could not import fails at once, with Airflow's message."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        missing = set(self.dag_ids)
        last_error = ""  # the API's last refusal, for the message if it never answers
        while missing:
            for process in self._components():
                if not process.alive():
                    raise ModeError(
                        f"airflow {process.argv[1]} exited ({process.popen.returncode}); "
                        f"see {self.logs}"
                    )
            if time.monotonic() > deadline:
                raise ModeError(
                    f"Airflow not ready after {STARTUP_TIMEOUT:.0f} s; DAGs missing: "
                    f"{', '.join(sorted(missing))}; {last_error}logs in {self.logs}"
                )
            try:
                if "Authorization" not in self._http.headers:
                    self.sign_in_as_admin()
                found = self.rest("GET", "/dags", params={"limit": 1000})
                missing -= {d["dag_id"] for d in found["dags"]}
                errors = self.rest("GET", "/importErrors", params={"limit": 100})
            except requests.ConnectionError:
                continue
            except ModeError as e:
                last_error = f"last answer: {e}; "
                continue
            finally:
                time.sleep(1.0)
            if errors["import_errors"]:
                first = errors["import_errors"][0]
                raise ModeError(
                    f"Airflow cannot import {first['filename']}:\n{first['stack_trace']}"
                )

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is one of ours: in the session of a scheduler we started (a
        task leads a process group of its own, inside its scheduler's session)."""
        return in_sessions(pid, {p.pid for p in (self.scheduler, *self._retired)})

    def sessions(self) -> list[int]:
        """The pids leading the sessions of every Airflow process it started."""
        return [p.pid for p in (*self._components(), *self._retired)]

    def restart_scheduler(self) -> list[int]:
        """SIGKILL the scheduler and the dag-processor (their children live on, as after a
        crash), then start new ones; the killed pids."""
        killed = []
        for old in (self.scheduler, self.dag_processor):
            killed.append(old.pid)
            old.signal(9)
            old.popen.wait()
            self._retired.append(old)
        self.scheduler = self._start("scheduler", "--skip-serve-logs")
        self.dag_processor = self._start("dag-processor")
        return killed

    def restart_triggerer(self) -> int:
        """SIGKILL the triggerer (its watchers die with it), then start a new one; the
        killed pid. The new one takes over the watchers once Airflow sees the dead one's
        heartbeat go stale (``[triggerer] triggerer_health_check_threshold``, 30 s)."""
        if not self.watched:
            raise ModeError("no triggerer runs: no scenario's DAG is scheduled on a watcher")
        old = self.triggerer
        old.signal(9)
        old.popen.wait()
        self._retired.append(old)
        self.triggerer = self._start("triggerer", "--skip-serve-logs")
        return old.pid

    def stop(self) -> None:
        """Stop every process it started (safe after a failed start)."""
        for name in ("triggerer", "dag_processor", "scheduler"):
            if hasattr(self, name):
                getattr(self, name).stop(grace=10.0)
        for process in self._retired:
            process.stop(grace=10.0)
        if hasattr(self, "api"):
            self.api.stop(grace=10.0)
        self.close()

    @property
    def worker_logs(self) -> list[Path]:
        """Where the supervisors of tries log: the LocalExecutor workers are the
        scheduler's children."""
        return sorted(self.logs.glob("scheduler*.log"))

    def tries(self, dag_id: str, run_ids: set[str]) -> list[dict[str, Any]]:
        """Airflow's record of every try of ``dag_id`` in ``run_ids``."""
        return [t for t in self.home.task_instances(dag_id) if t["run_id"] in run_ids]

    def task_logs(self, dag_id: str) -> Path:
        return self.home.root / "logs" / f"dag_id={dag_id}"
