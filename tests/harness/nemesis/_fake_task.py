"""A fake of our own :class:`~harness.airflow.base.TaskHandle` with real processes, so every
Airflow fault can be exercised without starting Airflow.

Each try is a real process (``sleep``) under a real supervisor process that waits for it,
so a killed supervisor really orphans it; the "scheduler" is a real process too. The fake
has exactly the capabilities it is given: a method outside them raises, as a mode's would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from harness.airflow.base import Capability, ModeError, TaskHandle
from harness.nemesis import Nemesis
from harness.procs import OwnedProcess, pid_alive

__all__ = ["FakeProgress", "FakeTask", "fire", "proc_state"]

#: A supervisor as Airflow's behaves to signals: it forwards a SIGTERM to its try. It
#: reports the try's pid once the try says it is set up (its signal handling in place).
_SUPERVISOR = """
import signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE)
signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
child.stdout.readline()
print(child.pid, flush=True)
print(child.wait(), flush=True)  # how the try ended: -9 after a SIGKILL
"""

#: What a try does: sleep (the default), ignore SIGTERM, or leak a MiB every 10 ms.
TRIES = {
    "sleep": "import time; print(flush=True); time.sleep(300)",
    "ignore_sigterm": "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(flush=True); time.sleep(300)",
    "leak": "import time\nprint(flush=True)\nheap = []\nwhile True:\n"
    "    heap.append(bytearray(2**20))\n    time.sleep(0.01)",
}


_SLEEP = "import time; time.sleep(300)"
SERVICES = ("broker", "database")


def proc_state(pid: int) -> str | None:
    """The kernel's state letter of ``pid`` (``T``: stopped; None: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


class FakeProgress:
    """A run's progress the test sets by hand."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.count = 0
        self.first: float | None = None

    def committed(self) -> int:
        return self.count

    def first_commit_at(self) -> float | None:
        return self.first


class FakeTask(TaskHandle):
    """Tries as real processes; ``retries`` tries follow a kill; every call is logged."""

    def __init__(
        self, capabilities: frozenset[Capability], retries: int = 5, tries: str = "sleep"
    ) -> None:
        self.capabilities = capabilities
        self.try_code = TRIES[tries]
        self.retries_left = retries
        self.calls: list[tuple[str, object]] = []
        self.supervisors: list[OwnedProcess] = []
        self.tries: list[int] = []  # pids of every try, oldest first
        self.empty_disks = 0
        self.ended_at: dict[int, float] = {}  # try number -> when seen dead
        self.scheduler = OwnedProcess([sys.executable, "-c", _SLEEP])
        self.schedulers = [self.scheduler.pid]
        self.triggerer = OwnedProcess([sys.executable, "-c", _SLEEP])
        self.triggerers = [self.triggerer.pid]
        #: The one worker, "w1", is the current try's supervisor; a restarted one is a
        #: process of its own. Services (broker, database) are processes too.
        self.restarted_workers: list[OwnedProcess] = []
        self.services = {name: OwnedProcess([sys.executable, "-c", _SLEEP]) for name in SERVICES}
        self.service_pids = {name: [p.pid] for name, p in self.services.items()}
        self._lock = threading.Lock()
        self._start_try()

    def _start_try(self) -> None:
        supervisor = OwnedProcess([sys.executable, "-c", _SUPERVISOR, self.try_code])
        assert supervisor.popen.stdout is not None
        self.supervisors.append(supervisor)
        self.tries.append(int(supervisor.popen.stdout.readline()))

    def exit_code(self, number: int) -> int:
        """How try ``number`` (1 for the first) ended, as its supervisor saw it."""
        supervisor = self.supervisors[number - 1]
        assert supervisor.popen.stdout is not None
        return int(supervisor.popen.stdout.readline())

    def owned(self) -> set[int]:
        """Every pid the fake started."""
        return {
            *self.tries, *(s.pid for s in self.supervisors), *self.schedulers, *self.triggerers,
            *(w.pid for w in self.restarted_workers),
            *(pid for pids in self.service_pids.values() for pid in pids),
        }  # fmt: skip

    def _allowed(self, capability: Capability, call: str, arg: object = None) -> None:
        with self._lock:
            self.calls.append((call, arg))
        if capability not in self.capabilities:
            raise ModeError(f"the fault called {call} without declaring {capability.value}")

    def task_pid(self) -> int | None:
        self._allowed(Capability.TASK_PROCESS, "task_pid")
        pid = self.tries[-1]
        return pid if pid_alive(pid) else None

    def signal(self, sig: int) -> int | None:
        self._allowed(Capability.TASK_PROCESS, "signal", signal.Signals(sig).name)
        pid = self.tries[-1]
        if not pid_alive(pid):
            return None
        os.kill(pid, sig)
        return pid

    def after_kill(self, pid: int | None, empty_disk: bool = False) -> bool:
        self._allowed(Capability.TASK_PROCESS, "after_kill", empty_disk)
        deadline = time.monotonic() + 10
        while pid is not None and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        self.empty_disks += empty_disk
        self._start_try()
        return True

    def signal_supervisor(self, sig: int) -> int | None:
        self._allowed(Capability.SUPERVISOR, "signal_supervisor", signal.Signals(sig).name)
        supervisor = self.supervisors[-1]
        if not supervisor.alive():
            return None
        supervisor.signal(sig)
        if sig == signal.SIGKILL:
            supervisor.popen.wait()
        return supervisor.pid

    def supervisor_signals(self, pid: int) -> list[dict[str, object]]:
        self._allowed(Capability.SUPERVISOR, "supervisor_signals", pid)
        # The fake supervisor keeps no log of its signals; it sees its try exit (and then
        # exits 0) unless it was killed first.
        supervisor = self.supervisors[self.tries.index(pid)]
        seen = not pid_alive(pid) and supervisor.popen.poll() in (None, 0)
        return [{"time": time.time(), "exit_code": None}] if seen else []

    def clear_try(self) -> float:
        self._allowed(Capability.TRY_STATE, "clear_try")
        self._stop_as_airflow_does()
        return time.time()

    def mark_try(self, state: str) -> float:
        self._allowed(Capability.TRY_STATE, "mark_try", state)
        self._stop_as_airflow_does()
        return time.time()

    def running_try(self) -> int | None:
        self._allowed(Capability.TRY_STATE, "running_try")
        return len(self.tries) if pid_alive(self.tries[-1]) else None

    def try_ended(self, number: int) -> float | None:
        """When the fake first saw try ``number`` dead (its "Airflow" records it then)."""
        self._allowed(Capability.TRY_STATE, "try_ended", number)
        if pid_alive(self.tries[number - 1]):
            return None
        return self.ended_at.setdefault(number, time.time())

    def _stop_as_airflow_does(self) -> None:
        """What Airflow's supervisor does next: SIGTERM, then SIGKILL (here 0.5 s later)."""
        pid = self.tries[-1]

        def escalate() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)

        threading.Thread(target=escalate, daemon=True).start()

    def restart_scheduler(self) -> list[int]:
        self._allowed(Capability.SCHEDULER, "restart_scheduler")
        old = self.scheduler
        old.signal(signal.SIGKILL)
        old.popen.wait()
        self.scheduler = OwnedProcess([sys.executable, "-c", _SLEEP])
        self.schedulers.append(self.scheduler.pid)
        return [old.pid]

    def restart_triggerer(self) -> int:
        self._allowed(Capability.TRIGGERER, "restart_triggerer")
        old = self.triggerer
        old.signal(signal.SIGKILL)
        old.popen.wait()
        self.triggerer = OwnedProcess([sys.executable, "-c", _SLEEP])
        self.triggerers.append(self.triggerer.pid)
        return old.pid

    def _worker(self) -> OwnedProcess:
        return self.restarted_workers[-1] if self.restarted_workers else self.supervisors[-1]

    def try_worker(self) -> str | None:
        self._allowed(Capability.WORKERS, "try_worker")
        return "w1" if pid_alive(self.tries[-1]) else None

    def signal_worker(self, name: str, sig: int, whole: bool = False) -> list[int]:
        self._allowed(Capability.WORKERS, "signal_worker", (name, signal.Signals(sig).name, whole))
        worker = self._worker()
        if not worker.alive():
            return []
        pids = [worker.pid] + ([self.tries[-1]] if whole and pid_alive(self.tries[-1]) else [])
        for pid in pids:
            os.kill(pid, sig)
        if sig == signal.SIGKILL:
            worker.popen.wait()
        return pids

    def worker_alive(self, name: str) -> bool:
        self._allowed(Capability.WORKERS, "worker_alive", name)
        return self._worker().alive()

    def restart_worker(self, name: str) -> int:
        self._allowed(Capability.WORKERS, "restart_worker", name)
        self.restarted_workers.append(OwnedProcess([sys.executable, "-c", _SLEEP]))
        return self.restarted_workers[-1].pid

    def partition_worker(self, name: str, cut: bool) -> float:
        self._allowed(Capability.WORKERS, "partition_worker", (name, cut))
        return time.time()

    def hold_worker(self, name: str, held: bool) -> None:
        self._allowed(Capability.WORKERS, "hold_worker", (name, held))

    def stop_service(self, service: str) -> list[int]:
        self._allowed(Capability.SERVICES, "stop_service", service)
        process = self.services[service]
        process.stop(grace=1.0)
        return [process.pid]

    def start_service(self, service: str) -> list[int]:
        self._allowed(Capability.SERVICES, "start_service", service)
        self.services[service] = OwnedProcess([sys.executable, "-c", _SLEEP])
        self.service_pids[service].append(self.services[service].pid)
        return [self.services[service].pid]

    def ended(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        return False

    def stop(self) -> None:
        for pid in self.tries:  # orphans are not in a supervisor's group any more
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for process in [
            *self.supervisors,
            self.scheduler,
            self.triggerer,
            *self.restarted_workers,
            *self.services.values(),
        ]:
            process.stop(grace=1.0)

    def record(self) -> None:
        pass


def fire(fault: object, task: FakeTask, log: Path, stops: int = 1) -> list[dict]:
    """Run ``fault`` (its trigger already due) against ``task`` until it records ``stops``
    stops (or 30 s pass), then end the run; the records it wrote."""
    progress = FakeProgress()
    progress.count, progress.first = 10**9, time.time() - 3600
    nemesis = Nemesis([fault], task, progress, log, task.capabilities)  # type: ignore[list-item]
    nemesis.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count('"stop"') >= stops:
            break
        time.sleep(0.05)
    nemesis.stop()
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
