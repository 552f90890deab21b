"""GIL contention inside one process, sampled cheaply from within it.

The instrument is ``gilknocker``: a native thread (it needs no GIL to sleep) asks for the
GIL every millisecond for 10 ms, then rests 100 ms, and accumulates how long each request
waited. Its ``knock`` value is the waited fraction of those windows: what a thread that
becomes ready (the stream reader, woken by bytes on its socket) pays before it runs. A
pure-Python holder gives the GIL up only at the 5 ms switch interval, so one busy thread
already reads ~0.8 and several read ~0.9.

The knocker is itself a contender, so it reports a busy GIL even when no thread of the
process ever waits (one CPU-bound thread alone: the multiprocess variant's workers). The
``contention`` we report therefore counts the knock only while at least two of the
process's own Python threads ran in the interval; with one, nobody contends and it is 0
(the raw ``knock`` stays in the record). ``python -m harness gil-calibrate`` shows the
numbers against known workloads and gil_load.

Every ``interval`` seconds a daemon thread records one sample (see :meth:`GilSampler.sample`)
through a callback, the probe's JSON lines in the harness. One sampler per process.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from fake_stream.snowflake import TWEPOCH

__all__ = ["KNOCK", "READER", "GilSampler", "ReaderLag", "start_sampler", "thread_cpu_ns"]

#: gilknocker's settings: microseconds between GIL requests, of one sampling window, and of
#: rest between windows (its defaults): ~9% of the time knocking.
KNOCK = {"polling_us": 1000, "sampling_us": 10_000, "sleeping_us": 100_000}


class ReaderLag:
    """The stream reader's lag: server clock minus the creation time of the tweet it just
    read (from the Snowflake id: the fake server's ids carry its wall-clock millisecond).
    :meth:`saw` is a few arithmetic operations: the reader calls it for every tweet."""

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.worst: float | None = None
        self.reads = 0

    def saw(self, tweet_id: int) -> None:
        lag = time.time() - ((tweet_id >> 22) + TWEPOCH) / 1000
        self.last_id = tweet_id
        self.reads += 1
        if self.worst is None or lag > self.worst:
            self.worst = lag

    def take(self) -> dict[str, Any]:
        """Since the last call: the worst lag of a tweet read (None: none read), how many
        were read, and how far the newest one read is behind the clock now."""
        worst, reads, last = self.worst, self.reads, self.last_id
        self.worst, self.reads = None, 0
        behind = None if last is None else time.time() - ((last >> 22) + TWEPOCH) / 1000
        return {
            "reader_lag_s": _round(worst),
            "reads": reads,
            "reader_behind_s": _round(behind),
        }


#: This process's stream reader (one per process: the variants read one stream each).
READER = ReaderLag()


def thread_cpu_ns(native_id: int) -> int | None:
    """Nanoseconds thread ``native_id`` of this process has run on a CPU (None: gone)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class GilSampler:
    """Samples this process's GIL every ``interval`` seconds on a daemon thread and hands
    each sample to ``record``. ``detail`` is added to every sample (e.g. the role)."""

    def __init__(
        self,
        record: Callable[[dict[str, Any]], None],
        interval: float = 1.0,
        reader: ReaderLag = READER,
        **detail: Any,
    ) -> None:
        from gilknocker import KnockKnock

        self.interval = interval
        self.detail = detail
        self._record = record
        self._reader = reader
        self._knocker = KnockKnock(KNOCK["polling_us"], KNOCK["sampling_us"], KNOCK["sleeping_us"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-gil", daemon=True)
        self._cpu_ns: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._last = (time.monotonic(), time.process_time())

    def start(self) -> None:
        self._cpu_ns = self._thread_cpu()  # a thread counts as active from now on
        self._knocker.start()
        # A knocker thread still asking for the GIL while the interpreter finalises aborts
        # the process (seen: exit status 134), so stop it first whichever way we exit.
        atexit.register(self.stop)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent). Waits out the knocker's current window."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._knocker.is_running:
            self._knocker.stop()
            # its sampling window may still be open: give it the GIL until it closes
            time.sleep(KNOCK["sampling_us"] / 1e6 + 2 * KNOCK["polling_us"] / 1e6)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record(self.sample())

    def _thread_cpu(self) -> dict[int, int]:
        """CPU ns of each Python thread of the process but the probe's own samplers."""
        out = {}
        for t in threading.enumerate():
            if t.native_id is None or t.name.startswith("probe-"):
                continue
            ns = thread_cpu_ns(t.native_id)
            if ns is not None:
                out[t.native_id] = ns
                self._names[t.native_id] = t.name
        return out

    def sample(self) -> dict[str, Any]:
        """One sample covering the time since the previous one:

        - ``knock``: gilknocker's waited fraction (None: no knocking window closed in the
          interval); ``contention``: the same, or 0 when fewer than two of the process's
          own threads ran (nobody to contend with); ``wait_ms``: the mean wait of one GIL
          request derived from ``knock``;
        - ``cpu_s`` / ``wall_s``: process CPU time (all threads) over wall time;
        - ``threads``: the process's Python threads (not the probe's samplers),
          ``active_threads``: those that ran at all (a thread waiting for the GIL is asleep
          to the OS, so "ran or wants to" is the useful count, not the OS's runnable state),
          ``active_names``: their names (who the contenders are);
        - ``reader_lag_s``, ``reads``, ``reader_behind_s``: see :meth:`ReaderLag.take`.
        """
        # 0 exactly: no knocking window closed since the reset (its thread got no CPU in
        # time: a starved machine); unknown, not "no contention" (idle reads ~0.005).
        raw = float(self._knocker.contention_metric)
        knock = raw if raw > 0 else None
        if knock is not None:
            self._knocker.reset_contention_metric()
        wall, cpu = time.monotonic(), time.process_time()
        (wall0, cpu0), self._last = self._last, (wall, cpu)
        seen = self._thread_cpu()
        ran = [tid for tid, ns in seen.items() if ns > self._cpu_ns.get(tid, 0)]
        active = len(ran)
        self._cpu_ns = seen
        return {
            **self.detail,
            "contention": 0.0 if active < 2 else _round(knock),
            "knock": _round(knock),
            "wait_ms": None if knock is None else round(_wait_ms(knock), 3),
            "cpu_s": round(cpu - cpu0, 4),
            "wall_s": round(wall - wall0, 4),
            "threads": len(seen),
            "active_threads": active,
            "active_names": sorted(self._names.get(tid, "?") for tid in ran),
            **self._reader.take(),
        }


_sampler: tuple[int, GilSampler] | None = None


def start_sampler(
    record: Callable[[dict[str, Any]], None], interval: float = 1.0, **detail: Any
) -> GilSampler | None:
    """Start this process's sampler; None if one already runs here (several probes in one
    process share it: a second knocker would double what it measures)."""
    global _sampler
    if _sampler is not None and _sampler[0] == os.getpid():
        return None
    sampler = GilSampler(record, interval, **detail)
    sampler.start()
    _sampler = (os.getpid(), sampler)
    return sampler


def _wait_ms(knock: float) -> float:
    """The mean wait of one GIL request, from the waited fraction of the knocker's
    windows (each request waits ``w``, then the knocker sleeps one polling interval):
    ``knock = w / (w + polling)``. It spreads out what ``knock`` squeezes near 1."""
    polling_ms = KNOCK["polling_us"] / 1000
    return polling_ms * knock / (1 - knock) if knock < 0.999 else polling_ms * 999


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
