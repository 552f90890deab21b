"""The nemesis: injects a scenario's Airflow faults into the running task, on schedule.

Each fault waits for its trigger (``at`` seconds after the first commit or the stream
start, or ``after_commits`` committed tweets), acts on the task process the mode reports
(never found by name), and records a Jepsen-style operation in ``faults.jsonl``:
``{"time", "f": "start"|"stop", "fault": <type>, ...}``. The checker shades and times
recovery from these.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from harness.modes import TaskRun
from harness.procs import pid_alive
from harness.scenario import AirflowFault

__all__ = ["Injector", "committed_count"]


def committed_count(sink: Path) -> int:
    db = sqlite3.connect(f"file:{sink}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT coalesce(sum(count), 0) FROM commits").fetchone()[0]
    finally:
        db.close()


class Injector:
    """Runs every fault of a scenario in its own thread against ``run``."""

    def __init__(
        self, faults: list[AirflowFault], run: TaskRun, sink: Path, log: Path, scratch_root: Path
    ) -> None:
        self.faults = faults
        self.run = run
        self.sink = sink
        self.log = log
        self.scratch_root = scratch_root
        self.stream_start = time.time()
        self.first_commit: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._one, args=(f, i), daemon=True)
            for i, f in enumerate(faults)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _record(self, f: str, fault: AirflowFault, at: float | None = None, **detail: Any) -> None:
        """Log an operation, at ``at`` (default: now)."""
        record = {"time": time.time() if at is None else at, "f": f, "fault": fault.type, **detail}
        line = json.dumps(record, default=str)
        with self._lock, self.log.open("a") as out:
            out.write(line + "\n")

    def _wait_for(self, fault: AirflowFault) -> bool:
        """Block until the fault's trigger holds; False if the run ended first."""
        while not self._stop.is_set():
            if fault.after_commits is not None:
                if committed_count(self.sink) >= fault.after_commits:
                    return True
            else:
                if fault.from_ == "first_commit" and self.first_commit is None:
                    if committed_count(self.sink) > 0:
                        self.first_commit = time.time()
                    else:
                        self._stop.wait(0.05)
                        continue
                base = self.stream_start if fault.from_ == "stream_start" else self.first_commit
                assert base is not None
                if time.time() >= base + (fault.at or 0):
                    return True
            self._stop.wait(0.05)
        return False

    def _one(self, fault: AirflowFault, number: int) -> None:
        if not self._wait_for(fault):
            return
        if fault.type == "pause_task":
            pid = self.run.signal(signal.SIGSTOP)
            self._record("start", fault, pid=pid, signal="SIGSTOP")
            self._stop.wait(fault.duration)
            resumed_at = time.time()  # the task may commit before this thread records it
            self.run.signal(signal.SIGCONT)
            self._record("stop", fault, at=resumed_at, pid=pid, signal="SIGCONT")
        elif fault.type == "kill_worker":
            self._wait_for_task()
            orphan = self.run.task_pid()
            supervisor = self.run.kill_worker()
            self._record("start", fault, pid=supervisor, signal="SIGKILL", orphan=orphan)
            self._record("stop", fault, pid=supervisor)
        elif fault.type == "memory_limit":
            self._limit_memory(fault)
        elif fault.type == "restart_scheduler":
            self._record("start", fault)
            killed = self.run.restart_scheduler()
            self._record("stop", fault, killed=killed)
        else:
            self._kill(fault, number)

    def _limit_memory(self, fault: AirflowFault) -> None:
        """Cap the try's address space at its current size plus ``limit_mb``, for the rest
        of its life (RLIMIT_AS: an allocation beyond it fails with ``MemoryError``; Linux
        does not enforce RLIMIT_RSS). The fault ends when that process does."""
        self._wait_for_task()
        pid = self.run.task_pid()
        if pid is None:
            return
        size = int(Path(f"/proc/{pid}/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = size + int(fault.limit_mb * 2**20)
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        self._record("start", fault, pid=pid, address_space=size, limit=limit)
        while pid_alive(pid) and not self._stop.wait(0.1):
            pass
        self._record("stop", fault, pid=pid, died=not pid_alive(pid))

    def _wait_for_task(self) -> None:
        while self.run.task_pid() is None and not self._stop.is_set():
            self._stop.wait(0.05)  # wait for the (next) try to start

    def _kill(self, fault: AirflowFault, number: int) -> None:
        """kill_task, term_task, move_worker, exhaust_retries: signal the try, let the next
        come (on another worker's scratch folder for move_worker)."""
        kills = fault.times if fault.type == "exhaust_retries" else 1
        sig = signal.SIGTERM if fault.type == "term_task" else signal.SIGKILL
        for _ in range(kills):
            self._wait_for_task()
            if self._stop.is_set():
                return
            pid = self.run.signal(sig)
            self._record("start", fault, pid=pid, signal=signal.Signals(sig).name)
            move_to = (
                self.scratch_root / f"worker-{number + 2}" if fault.type == "move_worker" else None
            )
            retry = self.run.after_kill(pid, move_to)
            self._record("stop", fault, pid=pid, retry=retry, scratch_dir=move_to)
            if not retry:
                return
