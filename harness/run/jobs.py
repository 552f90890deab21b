"""Scenarios side by side (``python -m harness run --jobs N``): up to N at once on the
mode's one Airflow, each with its own DAG, fake stream server, sink and ledger, the
nemesis acting on its own scenario's task only.

Some scenarios cannot share. A fault that acts on something every running scenario would
feel (the scheduler, the triggerer, a worker, a service, the machine's CPU or memory)
declares it (``AirflowFault.alone``), and a mode that has no room for a second scenario
says so (``Mode.side_by_side``); those scenarios run after the others, one at a time.
Which scenario ran beside which is recorded in each ``run.json`` (``jobs``).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from harness.airflow.base import MODES
from harness.scenario import Scenario

__all__ = [
    "AIRFLOW_CORES",
    "SCENARIO_CORES",
    "Slot",
    "alone",
    "cores",
    "default_jobs",
    "side_by_side",
]

#: CPU one scenario of the default matrix costs, in cores, at 1,000 tweets/s: its stream
#: server, the task and the harness's watching, over its wall time (the median of a
#: --jobs 1 run's cost figures, 2 vCPUs, 2026-12-03: scenarios/README.md, "Side by
#: side"). It scales with the rate.
SCENARIO_CORES = 0.45
#: What the shared Airflow (scheduler, API server, dag-processor, executor) costs
#: meanwhile (the same run's median).
AIRFLOW_CORES = 0.15
#: Never more than this at once, however many cores: Airflow's one API server answers
#: every scenario's calls and every try's heartbeats.
MAX_JOBS = 8
#: Seconds between two scenarios' starts: a start is Airflow's busiest moment (a DAG
#: unpaused, a run created, a try queued and started: writes to its database), and
#: several at once on SQLite make writers wait past its 5 s lock timeout.
STAGGER = 3.0

T = TypeVar("T")


def cores() -> float:
    """The CPUs this process may use: its affinity, under a cgroup CPU quota if any."""
    count = float(len(os.sched_getaffinity(0)))
    try:  # cgroup v1 (this machine's); a quota of -1 is none
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return count
    return min(count, quota / period) if quota > 0 and period > 0 else count


def _rate(scenario: Scenario) -> float:
    """Tweets per second the scenario's stream offers at most (1,000 when its profile is
    not a plain number)."""
    rate = scenario.rate
    return float(rate) if isinstance(rate, int | float) else 1000.0


def default_jobs(scenarios: list[Scenario], available: float | None = None) -> int:
    """How many of ``scenarios`` this machine holds at once: the cores left beside the
    shared Airflow, over what the costliest of them needs (:data:`SCENARIO_CORES`)."""
    shared = [s for s in scenarios if alone(s) is None]
    if not shared:
        return 1
    available = cores() if available is None else available
    need = max(SCENARIO_CORES * _rate(s) / 1000.0 for s in shared)
    return max(1, min(MAX_JOBS, len(shared), int((available - AIRFLOW_CORES) / need)))


def alone(scenario: Scenario) -> str | None:
    """Why ``scenario`` must run with no other beside it (None: it may share)."""
    if not MODES[scenario.mode].side_by_side:
        return f"mode {scenario.mode} runs one scenario at a time"
    for fault in scenario.airflow_faults:
        if fault.alone:
            return f"{fault.type} acts on what every running scenario shares"
    return None


@dataclass(frozen=True)
class Slot:
    """Where a scenario ran: its place among ``jobs`` at once (``alone``: why it ran by
    itself), and the scenarios that had started beside it when it started."""

    jobs: int
    alone: str | None
    beside: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"jobs": self.jobs, "alone": self.alone, "beside": list(self.beside)}


def side_by_side(
    scenarios: list[Scenario], jobs: int, run: Callable[[Scenario, Slot], T]
) -> Iterator[tuple[Scenario, T]]:
    """Run ``run(scenario, slot)`` for every scenario, up to ``jobs`` at once, then those
    that must run :func:`alone` one by one; yield each with its result as it finishes.

    The threads are daemons: when Ctrl-C ends the harness, :func:`harness.procs.stop_all`
    has stopped every process they started and refuses new ones; nothing waits for them.
    """
    shared = [s for s in scenarios if alone(s) is None]
    solo = [s for s in scenarios if alone(s) is not None]
    finished: queue.Queue[tuple[Scenario, T | None, BaseException | None]] = queue.Queue()
    running: set[str] = set()
    lock = threading.Lock()

    def one(scenario: Scenario, slot: Slot) -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = run(scenario, slot)
        except BaseException as e:  # handed to the caller's thread, raised there
            error = e
        with lock:  # no longer running before the next one starts and looks
            running.discard(scenario.name)
        finished.put((scenario, result, error))

    def start(scenario: Scenario, width: int) -> None:
        with lock:
            slot = Slot(width, alone(scenario), tuple(sorted(running)))
            running.add(scenario.name)
        name = f"scenario-{scenario.name}"
        threading.Thread(target=one, args=(scenario, slot), name=name, daemon=True).start()

    last_start = 0.0
    for group, width in ((shared, max(1, jobs)), *(([s], 1) for s in solo)):
        waiting = list(group)
        active = 0
        while waiting or active:
            while waiting and active < width:
                if active and (pause := last_start + STAGGER - time.monotonic()) > 0:
                    time.sleep(pause)
                last_start = time.monotonic()
                start(waiting.pop(0), width)
                active += 1
            scenario, result, error = finished.get()
            active -= 1
            if error is not None:
                raise error
            yield scenario, result  # type: ignore[misc]
