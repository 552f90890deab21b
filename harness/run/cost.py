"""What a scenario costs the machine: wall time and CPU seconds of the harness, of Airflow
and of the task, for ``run.json``'s ``cost`` and the report.

CPU is sampled from ``/proc`` every :data:`INTERVAL` seconds per process (user + system),
so a process that dies between samples loses at most its last interval. The task is
every try the probe saw start (``probe/<host>-<pid>.jsonl``) and its children; Airflow is
every other member of the sessions the mode names (:meth:`Mode.processes`); the harness
is this scenario's own processes (stream server, Redis, ingester) plus this harness
process over the scenario's time. Airflow and the harness process are shared by the
scenarios that ran beside it (``run.json``'s ``jobs.beside``): their figures are then the
whole, not a share.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from harness.procs import cpu_seconds, descendants, session_members

__all__ = ["INTERVAL", "CostMeter", "run_processes"]

INTERVAL = 1.0


def run_processes(root: Path) -> list[int]:
    """The children of this harness process started for the run in ``root``: each names
    a file in it on its command line (the stream server its ledger, Redis its folder, the
    ingester its token file), and none of another run's does."""
    folder = f"{root}/"
    pids = []
    for child in psutil.Process().children():
        try:
            if any(arg.startswith(folder) for arg in child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # gone meanwhile
            continue
    return pids


def _try_pids(probe_dir: Path) -> list[int]:
    """Pids of the tries the probe saw start (its files are ``<host>-<pid>.jsonl``)."""
    pids = []
    for path in probe_dir.glob("*.jsonl") if probe_dir.is_dir() else []:
        tail = path.stem.rsplit("-", 1)[-1]
        if tail.isdigit():
            pids.append(int(tail))
    return pids


class CostMeter:
    """Samples the CPU of a scenario's processes from :meth:`start` to :meth:`stop`.

    :param probe_dir: the run's probe folder (the tries).
    :param own: the pids of this scenario's own processes (a callable: Redis and the
        ingester may start after the meter).
    :param airflow: the pids leading Airflow's sessions (a callable: a restarted scheduler
        leads a new one).
    """

    def __init__(
        self,
        probe_dir: Path,
        own: Callable[[], Iterable[int]],
        airflow: Callable[[], Iterable[int]],
    ) -> None:
        self.probe_dir = probe_dir
        self._own = own
        self._airflow = airflow
        # (pid, start ticks) -> [CPU s when first seen, CPU s when last seen], per group
        self._seen: dict[str, dict[tuple[int, float], list[float]]] = {
            "harness": {}, "airflow": {}, "task": {},
        }  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cost-meter", daemon=True)
        self._wall = 0.0
        self._self_cpu = 0.0

    def start(self) -> None:
        self._wall = time.time()
        times = os.times()
        self._self_cpu = times.user + times.system
        self._sample(first=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        tries: set[int] = set()
        for pid in _try_pids(self.probe_dir):
            tries |= {pid, *descendants(pid)}
        members: set[int] = set()
        for leader in self._airflow():
            members |= set(session_members(leader))
        groups = {"task": tries, "airflow": members - tries, "harness": set(self._own())}
        for group, pids in groups.items():
            seen = self._seen[group]
            for pid in pids:
                sample = cpu_seconds(pid)
                if sample is None:
                    continue
                born, used = sample
                # A process already running at the start counts from then; one born
                # later from its birth.
                entry = seen.setdefault((pid, born), [used if first else 0.0, used])
                entry[1] = used

    def stop(self) -> dict[str, float]:
        """The last sample, then the cost: ``wall_s`` and ``cpu_<group>_s``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        times = os.times()
        cost = {"wall_s": round(time.time() - self._wall, 2)}
        for group, seen in self._seen.items():
            used = sum(last - first for first, last in seen.values())
            if group == "harness":
                used += times.user + times.system - self._self_cpu
            cost[f"cpu_{group}_s"] = round(used, 2)
        return cost
