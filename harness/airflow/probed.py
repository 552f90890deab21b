"""Tasks whose try processes Airflow starts, not the harness: each try's pid is found from
the probe's start record in the run folder, and signalled only if it is in a session the
harness started (never found by name)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

from harness.airflow.base import TaskHandle, TaskSpec
from harness.layout import RunLayout
from harness.procs import pid_alive

__all__ = ["ProbedTask", "TaskStarts", "kill"]


class ProbedTask(TaskHandle):
    """A :class:`TaskHandle` finding its tries through :class:`TaskStarts`."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.moves = 0
        self.starts = TaskStarts(spec.layout)

    @abstractmethod
    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is in a session the harness started (it may be signalled)."""

    def task_pid(self) -> int | None:
        alive = [pid for pid in self.starts.pids() if pid_alive(pid) and self.owns(pid)]
        return alive[-1] if alive else None

    def signal(self, sig: int) -> int | None:
        pid = self.task_pid()
        if pid is not None:
            kill(pid, sig)
        return pid

    def empty_disk(self) -> None:
        """Move the worker's scratch folder aside, so the next try finds its local disk
        empty, as on another worker (this machine is the only one)."""
        self.moves += 1
        if "scratch_dir" not in self.spec.conf:
            return  # a DAG you brought: where its local disk is, only it knows
        scratch = Path(self.spec.conf["scratch_dir"])
        if scratch.exists():
            scratch.rename(scratch.with_name(f"{scratch.name}.left-behind-{self.moves}"))


def kill(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` unless it has died meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class TaskStarts:
    """The task processes of a run folder, from the probe's start records: modes that do
    not start the task process themselves find its pid here (never by name)."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        # probe file -> its task's start record (None: not yet written, or a worker's file)
        self._starts: dict[Path, dict[str, Any] | None] = {}

    def pids(self) -> list[int]:
        """Pids of the tries that started, oldest first."""
        return [pid for pid, _ in sorted(self._records().items(), key=lambda r: r[1]["time"])]

    def worker(self, pid: int) -> str | None:
        """The worker try ``pid`` ran on, as its probe recorded it (None: not recorded)."""
        record = self._records().get(pid)
        return record["value"].get("worker") if record else None

    def started(self, pid: int) -> tuple[float, int] | None:
        """When try ``pid`` started and its try number (None: no such start recorded)."""
        record = self._records().get(pid)
        return (float(record["time"]), int(record["try"])) if record else None

    def _records(self) -> dict[int, dict[str, Any]]:
        probe_dir = self.layout.probe_dir
        for path in probe_dir.glob("*.jsonl") if probe_dir.exists() else []:
            if self._starts.get(path) is None:
                self._starts[path] = _start_record(path)
        return {int(p.stem.rsplit("-", 1)[1]): r for p, r in self._starts.items() if r}


def _start_record(path: Path) -> dict[str, Any] | None:
    """The task start recorded in a probe file (None: none yet, e.g. a worker's file)."""
    with path.open() as f:
        for line in itertools.islice(f, 20):  # a start is among a process's first records
            if '"invoke"' in line:
                try:
                    record: dict[str, Any] = json.loads(line)
                except ValueError:
                    return None  # a line being written; read again next time
                if record.get("type") == "invoke" and record.get("f") == "task":
                    return record
    return None
