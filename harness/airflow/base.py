"""What every Airflow mode provides, and what it declares it can do.

A :class:`Mode` is one Airflow installation, shared by the scenarios of a matrix; it starts
a :class:`TaskHandle` per scenario: that scenario's task on it, across its tries. The
runner and the nemesis talk to a :class:`TaskHandle` only, so an Airflow fault is written
once and works in every mode that has the :class:`Capability` it needs. A mode declares
its capabilities; a scenario asking for a fault its mode lacks is refused when it is
loaded, from those declarations (``harness/scenario.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from harness.layout import RunLayout

__all__ = [
    "CAPABILITY_METHODS",
    "MODES",
    "Capability",
    "DagSpec",
    "Mode",
    "ModeError",
    "StreamConnection",
    "TaskHandle",
    "TaskSpec",
    "conf_variable",
    "register_mode",
    "running_try",
    "try_ended",
    "write_airflow_record",
]


class ModeError(RuntimeError):
    """Airflow could not be started or driven (the message says which part and why)."""


class Capability(StrEnum):
    """What a mode can do to the task beyond starting, waiting for and stopping it."""

    #: Find the running try's process (:meth:`TaskHandle.task_pid`), signal it, and see
    #: the next try follow a kill (:meth:`TaskHandle.after_kill`).
    TASK_PROCESS = "task_process"
    #: Signal the process supervising the try (:meth:`TaskHandle.signal_supervisor`), with
    #: a scheduler that notices a try whose supervisor died, and read what that supervisor
    #: did to the try (:meth:`TaskHandle.supervisor_signals`).
    SUPERVISOR = "supervisor"
    #: Change the running try's state through Airflow's REST API, as a user does in the
    #: UI (:meth:`TaskHandle.clear_try`, :meth:`TaskHandle.mark_try`), and read from
    #: Airflow's record which try runs and when one ended (:meth:`TaskHandle.running_try`,
    #: :meth:`TaskHandle.try_ended`): all an operator has when the tries run elsewhere.
    TRY_STATE = "try_state"
    #: Kill the scheduler and start a new one (:meth:`TaskHandle.restart_scheduler`).
    SCHEDULER = "scheduler"
    #: Kill the triggerer, which runs the asset watchers, and start a new one
    #: (:meth:`TaskHandle.restart_triggerer`).
    TRIGGERER = "triggerer"
    #: The try runs on one of several workers, each its own process tree: find the try's
    #: worker, signal, restart or cut it off the API server, hold it off the queue.
    WORKERS = "workers"
    #: Stop and start the metadata database and the broker (:meth:`TaskHandle.stop_service`).
    SERVICES = "services"


@dataclass(frozen=True)
class DagSpec:
    """What Airflow must know of a scenario's DAG when it parses it.

    :param name: the scenario's name (the DAG id in modes that give each scenario a DAG).
    :param mode: the mode it runs in.
    :param variant: the variant (a DAG in ``dags/``).
    :param task: parse-time task settings, seconds or counts (``execution_timeout``,
        ``retries``, ``retry_delay``).
    :param retries: the retries the task ends up with (scenario or variant default).
    :param retry_delay: seconds between tries (likewise).
    :param continuous: the variant's DAG is ``@continuous``: a new DAG run follows each.
    :param scheduled: Airflow's scheduler starts its runs (a timetable or an asset): the
        harness puts the conf in the Variable :func:`conf_variable` names, unpauses the
        DAG, and pauses it when the run ends; it never triggers a run.
    :param dag_file: a DAG you bring, instead of a variant (``variant`` is then ``""``),
        with ``dag_id`` and ``task_id``, the task under test.
    """

    name: str
    mode: str
    variant: str
    task: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    retry_delay: float = 1.0
    continuous: bool = False
    scheduled: bool = False
    description: str = ""
    dag_file: str | None = None
    dag_id: str | None = None
    task_id: str = "stream"


def conf_variable(dag_id: str) -> str:
    """The Airflow Variable holding the conf of the runs Airflow starts for ``dag_id``."""
    return f"streamstall_conf.{dag_id}"


@dataclass(frozen=True)
class StreamConnection:
    """The fake stream as an Airflow Connection (``host``: its base URL, ``password``: its
    bearer token), as a task reads X's: kept out of ``dag_run.conf`` and Airflow's
    database (:meth:`harness.airflow.home.AirflowHome.put_connection`)."""

    conn_id: str
    host: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class TaskSpec:
    """One scenario's task when it starts: its DAG, its run folder, the DAG run's conf, the
    stream's connection, and whether ``streamstall_probe`` records the commits a DAG you
    brought reports (not when the harness reads its sink instead)."""

    dag: DagSpec
    layout: RunLayout
    conf: dict[str, Any]
    connection: StreamConnection | None = None
    probe_commits: bool = True


class TaskHandle(ABC):
    """One scenario's task on Airflow, across its tries, as the runner and the nemesis see
    it. The methods of a :class:`Capability` raise :class:`ModeError` unless the mode
    overrides them (and declares it). Every pid it reports or signals is checked to be one
    the harness started (never found by name)."""

    #: Its tries end on reading the run's stop request (the harness's variants do; a DAG
    #: the user brought does not, and :meth:`request_stop` asks Airflow to stop it).
    reads_stop_request: bool = True

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the task to end on its own; whether it did."""

    @abstractmethod
    def ended(self) -> bool:
        """Whether the task is over: no try runs and Airflow will start none (no retry
        due, no run to re-trigger)."""

    def idle(self) -> bool:
        """No try runs and none is about to (also between the runs Airflow starts for a
        ``scheduled`` variant); by default, :meth:`ended`."""
        return self.ended()

    def request_stop(self) -> None:  # noqa: B027 (modes with nothing of their own to stop)
        """The operator's stop (the runner writes the run's stop request first): start no
        new run; the running try ends when it reads the request."""

    @abstractmethod
    def stop(self) -> None:
        """End the task now, whatever it is doing; leave no process of it behind."""

    @abstractmethod
    def record(self) -> None:
        """Write Airflow's record of the run into the run folder (tries, logs, launches)."""

    # Capability.TASK_PROCESS

    def task_pid(self) -> int | None:
        """The process running the current try (None between tries)."""
        raise self._cannot(Capability.TASK_PROCESS)

    def signal(self, sig: int) -> int | None:
        """Send ``sig`` to the current try's process; its pid (None if no try runs)."""
        raise self._cannot(Capability.TASK_PROCESS)

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        """What follows a signal meant to end try ``pid``: wait for it to die and let the
        next try come (finding an empty local disk, as on another worker, if
        ``empty_disk``). False: no try will come."""
        raise self._cannot(Capability.TASK_PROCESS)

    # Capability.SUPERVISOR

    def signal_supervisor(self, sig: int) -> int | None:
        """Send ``sig`` to the process supervising the current try (a SIGKILL orphans the
        try); that process's pid (None if no try runs)."""
        raise self._cannot(Capability.SUPERVISOR)

    def supervisor_signals(self, pid: int) -> list[dict[str, Any]]:
        """The signals Airflow's supervisor sent try ``pid``, oldest first, from its log:
        ``{"time", "signal", "why"}``, and ``{"time", "exit_code"}`` once it saw it exit."""
        raise self._cannot(Capability.SUPERVISOR)

    # Capability.TRY_STATE

    def clear_try(self) -> float:
        """Clear the running task instance (a new try follows, as after the UI's Clear);
        when Airflow had it (UNIX time)."""
        raise self._cannot(Capability.TRY_STATE)

    def mark_try(self, state: str) -> float:
        """Set the running task instance's state (``failed`` or ``success``); when Airflow
        had it (UNIX time)."""
        raise self._cannot(Capability.TRY_STATE)

    def running_try(self) -> int | None:
        """Airflow's try number of the task instance while it is ``running`` (else None)."""
        raise self._cannot(Capability.TRY_STATE)

    def try_ended(self, number: int) -> float | None:
        """When Airflow recorded the end of try ``number`` (UNIX time; None: not yet)."""
        raise self._cannot(Capability.TRY_STATE)

    # Capability.SCHEDULER

    def restart_scheduler(self) -> list[int]:
        """Kill the scheduler (and dag-processor) and start new ones; the killed pids."""
        raise self._cannot(Capability.SCHEDULER)

    # Capability.TRIGGERER

    def restart_triggerer(self) -> int:
        """Kill the triggerer and start a new one; the killed pid."""
        raise self._cannot(Capability.TRIGGERER)

    # Capability.WORKERS

    def try_worker(self) -> str | None:
        """The name of the worker running the current try (None if no try runs)."""
        raise self._cannot(Capability.WORKERS)

    def signal_worker(self, name: str, sig: int, whole: bool = False) -> list[int]:
        """Send ``sig`` to worker ``name``'s main process, or with ``whole`` to every process
        of it (its pool, the supervisors, the tries: a machine or container going away);
        the pids signalled."""
        raise self._cannot(Capability.WORKERS)

    def worker_alive(self, name: str) -> bool:
        """Whether worker ``name``'s main process still runs."""
        raise self._cannot(Capability.WORKERS)

    def restart_worker(self, name: str) -> int:
        """Start worker ``name`` again (same name, same disk) once it is down, and wait until
        it is ready; the new pid."""
        raise self._cannot(Capability.WORKERS)

    def partition_worker(self, name: str, cut: bool) -> float:
        """Cut worker ``name`` off the API server (``cut``) or heal it; when (UNIX time)."""
        raise self._cannot(Capability.WORKERS)

    def hold_worker(self, name: str, held: bool) -> None:
        """Stop worker ``name`` taking work from the queue (``held``) or let it again."""
        raise self._cannot(Capability.WORKERS)

    # Capability.SERVICES

    def stop_service(self, service: str) -> list[int]:
        """Stop ``service`` (``database`` or ``broker``) as its operator does; the pids."""
        raise self._cannot(Capability.SERVICES)

    def start_service(self, service: str) -> list[int]:
        """Start ``service`` again, on the same port with the same data; the new pids."""
        raise self._cannot(Capability.SERVICES)

    def _cannot(self, capability: Capability) -> ModeError:
        return ModeError(f"{type(self).__name__} has no {capability.value} capability")


#: Which methods each capability stands for (the modes' contract test checks them).
CAPABILITY_METHODS: dict[Capability, tuple[str, ...]] = {
    Capability.TASK_PROCESS: ("task_pid", "signal", "after_kill"),
    Capability.SUPERVISOR: ("signal_supervisor", "supervisor_signals"),
    Capability.TRY_STATE: ("clear_try", "mark_try", "running_try", "try_ended"),
    Capability.SCHEDULER: ("restart_scheduler",),
    Capability.TRIGGERER: ("restart_triggerer",),
    Capability.WORKERS: (
        "try_worker",
        "signal_worker",
        "worker_alive",
        "restart_worker",
        "partition_worker",
        "hold_worker",
    ),
    Capability.SERVICES: ("stop_service", "start_service"),
}


class Mode(ABC):
    """One Airflow installation, started when a scenario first needs it.

    :param root: where its files go (the results folder).
    :param dags: the DAGs of every scenario that will run in it, known up front.
    :param template: a migrated Airflow database to copy instead of migrating (None for a
        mode that is not on SQLite).
    """

    #: The ``mode`` of a scenario file.
    name: ClassVar[str]
    #: What its :class:`TaskHandle` can do (see :class:`Capability`).
    capabilities: ClassVar[frozenset[Capability]]
    #: Seconds Airflow takes to notice a try whose supervisor died (0: no such check).
    heartbeat_timeout: ClassVar[float] = 0.0
    #: It runs a DAG file you bring (``dag_file``): a real scheduler parses it.
    runs_dag_files: ClassVar[bool] = False
    #: Its Airflow keeps its database in SQLite (copied from the migrated ``template``).
    sqlite: ClassVar[bool] = True
    #: A scenario's ``[task]`` settings reach its DAG (the harness writes what Airflow
    #: parses; not so in an Airflow someone else deploys).
    parses_task_settings: ClassVar[bool] = True
    #: A scheduler starts the runs of a ``scheduled`` variant (its timetable or asset).
    schedules_runs: ClassVar[bool] = False
    #: Several scenarios may run in it at once (``--jobs``, harness/run/jobs.py): each has
    #: its own DAG, and the mode is started with room for all their tries.
    side_by_side: ClassVar[bool] = False

    def __init__(
        self, root: Path, dags: list[DagSpec], template: Path | None, jobs: int = 1
    ) -> None:
        self.root = root
        self.dags = dags
        self.template = template
        #: Scenarios that may run in it at once.
        self.jobs = jobs

    @property
    def home(self) -> Path | None:
        """The AIRFLOW_HOME its tasks share (None: one per scenario, or none)."""
        return None

    @property
    def stream_host(self) -> str:
        """The address the fake stream binds, where the tries reach it."""
        return "127.0.0.1"

    @abstractmethod
    def start(self, spec: TaskSpec) -> TaskHandle:
        """Start the scenario's task."""

    def processes(self) -> list[int]:
        """The pids leading the sessions of the Airflow processes its scenarios share (for
        what Airflow costs: harness/run/cost.py); empty when it has none."""
        return []

    def close(self) -> None:  # noqa: B027 (most modes have nothing shared to stop)
        """Stop everything this mode started."""


#: Every mode by name, filled by :func:`register_mode` (``harness/airflow/modes/``).
MODES: dict[str, type[Mode]] = {}

M = TypeVar("M", bound=type[Mode])


def register_mode(cls: M) -> M:
    """Class decorator: make a mode available to scenario files under ``cls.name``."""
    if cls.name in MODES:
        raise ValueError(f"mode {cls.name!r} registered twice")
    MODES[cls.name] = cls
    return cls


def write_airflow_record(
    layout: RunLayout, tries: list[dict[str, Any]], launches: list[dict[str, Any]]
) -> None:
    """Airflow's task-instance records and the harness's launches, into the run folder."""
    layout.task_instances.parent.mkdir(exist_ok=True)
    layout.task_instances.write_text(json.dumps(tries, default=str, indent=2))
    layout.launches.write_text(json.dumps(launches, indent=2, default=str))


def running_try(tries: list[dict[str, Any]]) -> int | None:
    """The try number of the ``running`` one among Airflow's ``tries`` (None: none runs)."""
    running = [int(t["try_number"]) for t in tries if t.get("state") == "running"]
    return max(running, default=None)


def try_ended(tries: list[dict[str, Any]], number: int) -> float | None:
    """When try ``number`` ended, from its ``end_date`` among Airflow's ``tries``."""
    for t in tries:
        if t.get("try_number") == number and t.get("end_date"):
            end = dt.datetime.fromisoformat(str(t["end_date"]).replace("Z", "+00:00"))
            return end.replace(tzinfo=end.tzinfo or dt.UTC).timestamp()  # Airflow's are UTC
    return None
