"""A distributed Airflow 3 on this machine: PostgreSQL as the metadata database, Redis as the
Celery broker, the API server, scheduler and dag-processor, and N Celery workers.

Every part is a process we start and stop by pid (:class:`~harness.procs.OwnedProcess`).
Each worker is what a worker machine would be: its own name (``w1@<host>``, also in
``$STREAMSTALL_WORKER``, which the probe records with each try), its own scratch folder
(a scenario's ``scratch_dir`` holds ``{worker}``: the checkpoint variant's local disk is
``scratch/w1`` on w1), its own concurrency, and its own way to the API server
(:class:`PartitionProxy`, so one worker can be cut off). A try runs in its worker's
session: a worker's task processes are found, and stopped, through that session.

Settings are Airflow's defaults unless said here: ``acks_late`` and the Redis transport's
24 h ``visibility_timeout`` (a message a killed worker took is not redelivered within a
scenario; the scheduler's heartbeat check is what retries the try), prefork pool.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from harness.airflow.base import ModeError
from harness.airflow.home import AirflowHome
from harness.airflow.modes.standalone_airflow import StandaloneAirflow
from harness.airflow.partition_proxy import PartitionProxy
from harness.airflow.postgres import PostgresServer
from harness.procs import OwnedProcess, in_sessions
from harness.redis_server import RedisServer
from streamstall_probe import WORKER_ENV

__all__ = ["CeleryAirflow", "Worker"]

#: Airflow's queue (``[operators] default_queue``).
QUEUE = "default"
#: Seconds before the service manager starts an Airflow process that exited again
#: (systemd's ``RestartSec``).
RESTART_SEC = 2.0
#: Seconds a (re)started worker has to say it is ready.
WORKER_READY_TIMEOUT = 120.0


class Worker:
    """One Celery worker: its name, its forwarder to the API server, and the processes it
    ran as (a restarted worker is a new process under the same name)."""

    def __init__(self, name: str, proxy: PartitionProxy) -> None:
        self.name = name
        self.proxy = proxy
        self.process: OwnedProcess | None = None
        self.retired: list[OwnedProcess] = []  # its earlier processes: sessions may hold tries

    def sessions(self) -> set[int]:
        return {p.pid for p in (*self.retired, *([self.process] if self.process else []))}


class CeleryAirflow(StandaloneAirflow):
    """:class:`StandaloneAirflow` with the CeleryExecutor, on PostgreSQL and Redis.

    :param workers: how many Celery workers (``w1``, ``w2``, ...).
    :param concurrency: task slots of each worker.
    """

    def __init__(
        self,
        root: Path,
        dags: dict[str, dict[str, Any]],
        user_dags: dict[str, dict[str, Any]] | None = None,
        workers: int = 2,
        concurrency: int = 2,
    ) -> None:
        self.root = root
        self.concurrency = concurrency
        self.worker_count = workers
        self.workers: dict[str, Worker] = {}
        self.held: set[str] = set()  # workers taken off the queue (consume)
        #: Workers that were running when the broker went down. Seen here (Celery 5.6.3,
        #: Redis): such a worker reconnects, then never takes another task (its prefetch
        #: window stays full of the message it held), so the next scenario gets a new one.
        self.deaf: set[str] = set()
        #: Airflow processes the service manager started again (``{"time", "component",
        #: "exited", "exit_code", "pid"}``), and what :meth:`make_whole` undid before a
        #: scenario (``{"time", "component": "deployment", "before_scenario"}``).
        self.restarts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(root, dags, None, user_dags)
        threading.Thread(target=self._keep_up, name="service-manager", daemon=True).start()

    # Start and stop ----------------------------------------------------------------------

    def _home(self, root: Path, template: Path | None, dags_folder: Path) -> AirflowHome:
        self.postgres = PostgresServer(root / "postgres")
        self.postgres.create_database("airflow")
        self.broker = RedisServer(root / "broker")
        return AirflowHome(root, dags_folder=dags_folder, database_url=self.postgres.url("airflow"))

    def _env(self) -> dict[str, str]:
        return {
            **super()._env(),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(2 * self.worker_count * self.concurrency),
            "AIRFLOW__CELERY__BROKER_URL": self.broker.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url("airflow"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
        }

    def _start_all(self) -> None:
        super()._start_all()
        for number in range(1, self.worker_count + 1):
            name = f"w{number}"
            self.workers[name] = Worker(name, PartitionProxy(self.port))
            self.start_worker(name)

    def sessions(self) -> list[int]:
        services = [s.process for s in (self.postgres, self.broker) if s.process is not None]
        workers = [pid for worker in self.workers.values() for pid in worker.sessions()]
        return [*super().sessions(), *workers, *(p.pid for p in services)]

    def start_worker(self, name: str) -> OwnedProcess:
        """Start (or restart) worker ``name``: a new process, the same name and disk."""
        worker = self.workers[name]
        if worker.process is not None:
            worker.retired.append(worker.process)
        self.held.discard(name)  # a new worker process consumes from the start
        env = {
            **self.env,
            WORKER_ENV: name,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                f"http://127.0.0.1:{worker.proxy.port}/execution/"
            ),
        }
        worker.process = self._start(
            "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
            "--concurrency", str(self.concurrency), "--pid", str(self.logs / f"{name}.pid"),
            name=f"worker-{name}", env=env,
        )  # fmt: skip
        return worker.process

    def consume(self, name: str, on: bool) -> None:
        """Let worker ``name`` take tasks from Airflow's queue, or stop it (Celery's remote
        control ``add_consumer`` / ``cancel_consumer``, as an operator draining a worker)."""
        from celery import Celery  # the airflow extra's; only this mode needs it

        if not on:  # held from now on, even if the reply is lost: make_whole undoes it
            self.held.add(name)
        app = Celery(broker=self.broker.url, set_as_current=False)
        # No pooled connection: one pooled before a broker restart fails after it
        # ("Connection closed by server"), and restart_broker is one of our faults.
        app.conf.broker_pool_limit = 0
        try:
            control = app.control.add_consumer if on else app.control.cancel_consumer
            replies = control(
                QUEUE, destination=[f"{name}@{socket.gethostname()}"], reply=True, timeout=5
            )
        finally:
            app.close()
        if not replies:
            raise ModeError(f"worker {name} did not answer {'add' if on else 'cancel'}_consumer")
        if on:
            self.held.discard(name)

    def broker_down(self) -> None:
        """The broker is going down: every worker running now will come back deaf."""
        self.deaf |= {n for n, w in self.workers.items() if w.process and w.process.alive()}

    def make_whole(self) -> list[str]:
        """Undo what faults left behind (a service or worker down, a partition, a worker
        off the queue or deaf after a broker restart); what it had to undo (also in
        ``restarts``)."""
        undone = []
        for name, server in (("database", self.postgres), ("broker", self.broker)):
            if server.process is None or not server.process.alive():
                server.start()
                undone.append(f"started {name}")
        for name, worker in self.workers.items():
            if worker.proxy.partitioned:
                worker.proxy.heal()
                undone.append(f"healed {name}")
            if name in self.deaf and worker.process is not None and worker.process.alive():
                worker.process.stop(grace=10.0)
                undone.append(f"stopped {name}: it lived through a broker restart")
            if worker.process is None or not worker.process.alive():
                self.start_worker(name)
                undone.append(f"restarted {name}")
        self.deaf.clear()
        self.wait_workers()
        for name in sorted(self.held):
            self.consume(name, True)
            undone.append(f"put {name} back on the queue")
        if undone:
            self.restarts.append({"time": time.time(), "component": "deployment",
                                  "before_scenario": undone})  # fmt: skip
        return undone

    def _components(self) -> list[OwnedProcess]:
        return [*super()._components(), *(w.process for w in self.workers.values() if w.process)]

    def _wait_ready(self) -> None:
        super()._wait_ready()
        self.wait_workers()

    def wait_workers(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        """Until every worker has said it is ready (Celery's ``ready.`` in its log)."""
        deadline = time.monotonic() + timeout
        for name, worker in self.workers.items():
            log = self.logs / f"worker-{name}.log"
            while not _ready_count(log) > len(worker.retired):
                if worker.process is None or not worker.process.alive():
                    raise ModeError(f"Celery worker {name} exited; see {log}")
                if time.monotonic() > deadline:
                    raise ModeError(f"Celery worker {name} not ready after {timeout:.0f} s")
                time.sleep(0.2)

    def _keep_up(self) -> None:
        """What systemd's ``Restart=always`` (or a Kubernetes restart policy) does for the
        API server, scheduler and dag-processor: one that exits is started again
        ``RESTART_SEC`` later. (A scheduler exits when the database is gone for long.)
        Workers are left to the faults that stop them, and to :meth:`make_whole`."""
        while not self._closing.wait(RESTART_SEC):
            with self._lock:
                for attribute in ("api", "scheduler", "dag_processor"):
                    process: OwnedProcess = getattr(self, attribute)
                    if process.alive() or self._closing.is_set():
                        continue
                    code = process.popen.wait()
                    self._retired.append(process)
                    component = process.argv[1]
                    setattr(self, attribute, self._start(component))
                    self.restarts.append({
                        "time": time.time(), "component": component, "exited": process.pid,
                        "exit_code": code, "pid": getattr(self, attribute).pid,
                    })  # fmt: skip

    def restart_scheduler(self) -> list[int]:
        with self._lock:  # not at the same time as the service manager
            return super().restart_scheduler()

    def stop(self) -> None:
        self._closing.set()
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
        for worker in getattr(self, "workers", {}).values():
            for process in (*worker.retired, *([worker.process] if worker.process else [])):
                process.stop(grace=10.0)
            worker.proxy.close()
        super().stop()
        for server in ("broker", "postgres"):
            if hasattr(self, server):
                getattr(self, server).stop()

    # What the harness reads ------------------------------------------------------------

    def owns(self, pid: int) -> bool:
        sessions = {s for w in self.workers.values() for s in w.sessions()}
        return in_sessions(pid, sessions)

    def worker_of(self, pid: int) -> str | None:
        """The name of the worker whose session ``pid`` is in (None: none of ours)."""
        for name, worker in self.workers.items():
            if in_sessions(pid, worker.sessions()):
                return name
        return None

    @property
    def worker_logs(self) -> list[Path]:
        return sorted(self.logs.glob("worker-*.log"))

    def describe(self) -> dict[str, Any]:
        """What ran where: written into each scenario's run folder."""
        return {
            "executor": "CeleryExecutor",
            "database": f"PostgreSQL on 127.0.0.1:{self.postgres.port}",
            "broker": self.broker.url,
            "restarts": self.restarts,
            "workers": {
                name: {
                    "pids": sorted(w.sessions()),
                    "concurrency": self.concurrency,
                    "api_via": w.proxy.port,
                    "partitions": w.proxy.partitions,
                }
                for name, w in self.workers.items()
            },
        }


def _ready_count(log: Path) -> int:
    """How many times a worker logging to ``log`` said it is ready."""
    if not log.exists():
        return 0
    return log.read_text(errors="replace").count(" ready.")
