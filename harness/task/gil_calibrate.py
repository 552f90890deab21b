"""Calibrate the GIL metric: known workloads in real processes, and what it reads for each.

``python -m harness gil-calibrate`` runs each workload in its own process (``split4``: in
four) with the probe's sampler, checks the readings against :data:`EXPECTED` and, when
gil_load is installed (the dev extra), measures ``cpu1_io`` and ``cpu4`` again with it: the
second instrument. Bounds are wide on purpose: two shared cores, other jobs running.

Workloads (``python -m harness.task.gil_calibrate WORKLOAD`` runs one and prints JSON):

- ``idle``: the main thread sleeps.
- ``io``: two threads reading sockets that a third thread writes to every millisecond.
- ``cpu1_io``: one CPU-bound thread next to one such I/O reader (the article's stall).
- ``cpu4``: four CPU-bound threads.
- ``split4``: the same four CPU-bound loops, one per process (the multiprocess advice).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EXPECTED",
    "WORKLOADS",
    "Reading",
    "calibrate",
    "calibrate_command",
    "problems",
    "run_workload",
]

#: Workload -> (CPU-bound threads, I/O reader threads, processes).
WORKLOADS = {
    "idle": (0, 0, 1),
    "io": (0, 2, 1),
    "cpu1_io": (1, 1, 1),
    "cpu4": (4, 0, 1),
    "split4": (1, 0, 4),
}

#: Sane ranges of the mean contention of every process of a workload (inclusive).
EXPECTED = {
    "idle": (0.0, 0.1),
    "io": (0.0, 0.1),
    "cpu1_io": (0.4, 1.0),
    "cpu4": (0.6, 1.0),
    "split4": (0.0, 0.1),
}

SAMPLE_INTERVAL = 0.5  # seconds; the first and the last samples are dropped


def _spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(1000):
            x += 1


def _io(stop: threading.Event, readers: int) -> list[threading.Thread]:
    """``readers`` threads each blocked on a socket that one writer feeds every ms."""
    pairs = [socket.socketpair() for _ in range(readers)]

    def write() -> None:
        while not stop.is_set():
            for a, _ in pairs:
                a.send(b"x" * 200)
            time.sleep(0.001)
        for a, _ in pairs:
            a.close()  # the readers see EOF

    def read(sock: socket.socket) -> None:
        while sock.recv(4096):
            pass

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(b,)) for _, b in pairs]
    return threads


def run_workload(name: str, seconds: float, instrument: str = "gilknocker") -> dict[str, Any]:
    """Run workload ``name``'s threads in this process for ``seconds``, measured by
    ``instrument``: ``gilknocker`` (the probe's sampler) or ``gil_load`` (this process
    must then run under ``python -m gil_load``)."""
    cpu, readers, _ = WORKLOADS[name]
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    if instrument == "gil_load":
        import gil_load  # type: ignore[import-not-found]

        gil_load.init()
        gil_load.start()
    else:
        from harness.task.gil import GilSampler

        sampler = GilSampler(samples.append, SAMPLE_INTERVAL)
        sampler.start()
    threads = [threading.Thread(target=_spin, args=(stop,)) for _ in range(cpu)]
    threads += _io(stop, readers) if readers else []
    for t in threads:
        t.start()
    time.sleep(seconds)
    if instrument == "gil_load":
        # Read while running, never stop(): its stop() deadlocks now and then (its thread
        # holds its mutex and wants the GIL while stop() holds the GIL and wants the
        # mutex; seen with py-spy), and hangs for good while a thread still spins. The
        # child then leaves with os._exit (see main).
        total, per_thread = gil_load.get()
        waits = [t["wait"] for t in per_thread.values() if t["held"] > 0.01 or t["wait"] > 0.01]
        return {
            "workload": name,
            "instrument": "gil_load",
            "held": round(total["held"], 4),
            "wait": round(total["wait"], 4),
            "thread_wait_mean": round(statistics.fmean(waits), 4) if waits else 0.0,
        }
    sampler.stop()  # first: every sample then covers the workload running
    stop.set()
    for t in threads:
        t.join()
    # Not the first sample (start-up) nor the last: the main thread's waking from its
    # sleep to stop the sampler can fall in it, a second "contender" no workload has.
    return {"workload": name, "instrument": "gilknocker", "samples": samples[1:-1]}


@dataclass
class Reading:
    """What the metric read for one workload (every process of it)."""

    workload: str
    contention: list[float]  # mean contention of each process
    knock: list[float]  # mean raw knock of each process
    wait_ms: list[float]  # mean wait of one GIL request, from knock
    active_threads: list[float]
    cpu_ratio: list[float]
    expected: tuple[float, float]
    cross_check: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        low, high = self.expected
        return bool(self.contention) and all(low <= c <= high for c in self.contention)


def _child(name: str, seconds: float, instrument: str) -> subprocess.Popen[str]:
    prefix = ["-W", "ignore", "-m", "gil_load"] if instrument == "gil_load" else []
    argv = [sys.executable, *prefix, "-m", "harness.task.gil_calibrate", name, str(seconds)]
    return subprocess.Popen([*argv, instrument], stdout=subprocess.PIPE, text=True)


def _collect(children: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    out = []
    for child in children:
        try:
            stdout, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()  # our own child, by its PID
            child.communicate()
            raise RuntimeError(f"calibration child {child.args} did not finish") from None
        if child.returncode != 0:
            raise RuntimeError(f"calibration child {child.args} exited {child.returncode}")
        out.append(json.loads(stdout))
    return out


def calibrate(seconds: float = 3.0, cross_check: bool = True) -> list[Reading]:
    """Every workload, one after the other (each in fresh processes)."""
    readings = []
    for name, (_, _, processes) in WORKLOADS.items():
        results = _collect(
            [_child(name, seconds, "gilknocker") for _ in range(processes)], seconds + 60
        )

        def mean(field_: str, runs: list[dict[str, Any]] = results) -> list[float]:
            known = [[s[field_] for s in r["samples"] if s[field_] is not None] for r in runs]
            return [round(statistics.fmean(k), 4) if k else float("nan") for k in known]

        ratios = [
            round(sum(s["cpu_s"] for s in r["samples"]) / sum(s["wall_s"] for s in r["samples"]), 3)
            for r in results
        ]
        reading = Reading(
            name,
            mean("contention"),
            mean("knock"),
            mean("wait_ms"),
            mean("active_threads"),
            ratios,
            EXPECTED[name],
        )
        if cross_check and name in ("cpu1_io", "cpu4") and _has_gil_load():
            (reading.cross_check,) = _collect([_child(name, seconds, "gil_load")], seconds + 60)
        readings.append(reading)
    return readings


def problems(readings: list[Reading]) -> list[str]:
    """What is wrong with the readings: out of range, or out of order."""
    out = [
        f"{r.workload}: contention {r.contention} outside {list(r.expected)}"
        for r in readings
        if not r.ok
    ]
    by = {r.workload: max(r.contention, default=float("nan")) for r in readings}
    if not by["cpu1_io"] > max(by["idle"], by["io"]) + 0.3:
        out.append(f"cpu1_io ({by['cpu1_io']}) is not clearly above idle and io")
    # Both are high and knock saturates near 1: only a clear inversion is a failure.
    if not by["cpu4"] >= by["cpu1_io"] - 0.1:
        out.append(f"cpu4 ({by['cpu4']}) reads below cpu1_io ({by['cpu1_io']})")
    return out


def _has_gil_load() -> bool:
    import importlib.util

    return importlib.util.find_spec("gil_load") is not None


def report(readings: list[Reading]) -> str:
    lines = [
        f"{'workload':10} {'contention':>18} {'knock':>18} {'wait ms':>18} {'active thr':>10} "
        f"{'cpu/wall':>10} {'range':>10}  ok  cross-check",
    ]
    for r in readings:
        cross = ""
        if r.cross_check:
            c = r.cross_check
            cross = f"gil_load: held {c['held']} wait {c['wait']} (thread {c['thread_wait_mean']})"
        lines.append(
            f"{r.workload:10} {_list(r.contention):>18} {_list(r.knock):>18} "
            f"{_list(r.wait_ms):>18} "
            f"{_list(r.active_threads):>10} {_list(r.cpu_ratio):>10} "
            f"{'-'.join(str(x) for x in r.expected):>10}  {'yes' if r.ok else 'NO ':3} {cross}"
        )
    return "\n".join(lines)


def _list(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def calibrate_command(seconds: float) -> int:
    """``python -m harness gil-calibrate``: the table, then exit 1 if a reading is off."""
    readings = calibrate(seconds)
    print(report(readings))
    wrong = problems(readings)
    for line in wrong:
        print(f"calibration: {line}", file=sys.stderr)
    if not _has_gil_load():
        print("(gil_load is not installed: no cross-check; it comes with the dev extra)")
    return 1 if wrong else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m harness.task.gil_calibrate"
    )
    parser.add_argument("workload", choices=list(WORKLOADS))
    parser.add_argument("seconds", type=float)
    parser.add_argument("instrument", choices=["gilknocker", "gil_load"])
    args = parser.parse_args(argv)
    print(json.dumps(run_workload(args.workload, args.seconds, args.instrument)), flush=True)
    if args.instrument == "gil_load":
        os._exit(0)  # its threads still run and gil_load is never stopped: no clean exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
