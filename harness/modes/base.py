"""What every Airflow mode provides: a :class:`Mode` (one Airflow installation, shared by
the scenarios of a matrix) starts a :class:`TaskRun` (one scenario's task on it).

The nemesis (:mod:`harness.inject`) and the runner talk to a :class:`TaskRun` only, so a
fault is written once and works in every mode that can express it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.layout import RunLayout

__all__ = ["Mode", "ModeError", "TaskRun", "TaskSpec", "TaskStarts"]


class ModeError(RuntimeError):
    """Airflow could not be started or driven (the message says which part and why)."""


@dataclass(frozen=True)
class TaskSpec:
    """What one scenario asks of Airflow.

    :param name: the scenario's name (the DAG id in modes that give each scenario a DAG).
    :param mode: the Airflow mode it runs in.
    :param variant: the variant (a DAG in ``dags/``).
    :param layout: its run folder.
    :param conf: the DAG run's conf (the variant's params).
    :param task: parse-time task settings, seconds or counts (``execution_timeout``,
        ``retries``, ``retry_delay``).
    :param retries: the retries the task ends up with (scenario or variant default).
    :param retry_delay: seconds between tries.
    """

    name: str
    mode: str
    variant: str
    layout: RunLayout
    conf: dict[str, Any]
    task: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    retry_delay: float = 1.0
    description: str = ""


class TaskRun(Protocol):
    """One scenario's task on Airflow, as the nemesis and the runner see it."""

    def task_pid(self) -> int | None:
        """The process running the current try (None between tries)."""

    def signal(self, sig: int) -> int | None:
        """Send ``sig`` to the task process; its pid (None if no try runs)."""

    def kill_worker(self) -> int | None:
        """SIGKILL the process supervising the task, orphaning it; the victim's pid."""

    def restart_scheduler(self) -> list[int]:
        """Kill the scheduler (and dag-processor) and start new ones; the killed pids."""

    def after_kill(self, pid: int | None, move_to: Path | None = None) -> bool:
        """What follows a signal meant to end try ``pid``: wait for it to die and let the
        next try come (on another worker's disk if ``move_to``). False: no try will come."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the task to end on its own; whether it did."""

    def stop(self) -> None:
        """End the task now, whatever it is doing; leave no process of it behind."""

    def record(self) -> None:
        """Write Airflow's record of the run into the run folder (tries, logs, launches)."""


class Mode(Protocol):
    """One Airflow installation, started when a scenario first needs it."""

    def start(self, spec: TaskSpec) -> TaskRun:
        """Start the scenario's task."""

    def close(self) -> None:
        """Stop everything this mode started."""


class TaskStarts:
    """The task processes of a run folder, from the probe's start records: modes that do
    not start the task process themselves find its pid here (never by name)."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self._starts: dict[Path, float | None] = {}  # probe file -> its task's start time

    def pids(self) -> list[int]:
        """Pids of the tries that started, oldest first."""
        probe_dir = self.layout.probe_dir
        for path in probe_dir.glob("*.jsonl") if probe_dir.exists() else []:
            if self._starts.get(path) is None:
                self._starts[path] = _started_at(path)
        started = sorted((t, int(p.stem.rsplit("-", 1)[1])) for p, t in self._starts.items() if t)
        return [pid for _, pid in started]


def _started_at(path: Path) -> float | None:
    """When the task start recorded in a probe file happened (None: none, e.g. a worker's)."""
    with path.open() as f:
        for line in itertools.islice(f, 20):  # a start is among a process's first records
            if '"invoke"' in line:
                try:
                    record: dict[str, Any] = json.loads(line)
                except ValueError:
                    return None  # a line being written; read again next time
                if record.get("type") == "invoke" and record.get("f") == "task":
                    return float(record["time"])
    return None
