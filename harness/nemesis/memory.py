"""Memory the task may no longer have: a cap it sees as a ``MemoryError``, a worker out of
memory whose kernel kills it, or a neighbour on the worker that leaks."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

import harness.cgroups as cgroups
from harness.nemesis.base import AirflowFault, FaultContext, register
from harness.procs import OwnedProcess, descendants, pid_alive

__all__ = ["CgroupFault", "LeakingNeighbour", "MemoryLimit", "OomKill", "confine"]

#: The neighbour: waits for a line on stdin (it is in the cgroup then), then keeps
#: ``argv[1]`` MiB more every second, touching every page so the kernel charges it.
_LEAKER = """
import sys, time
sys.stdin.readline()
heap, step = [], int(float(sys.argv[1]) * 2**20 / 10)
while True:
    heap.append(bytearray(step))
    time.sleep(0.1)
"""


class CgroupFault(AirflowFault):
    """A fault acting through a memory cgroup of its own: refused where none can be made."""

    alone: ClassVar = True  # the kernel's reclaim and OOM killer act on the whole machine

    @classmethod
    def unavailable(cls) -> str | None:
        return cgroups.unavailable()


def confine(name: str, pids: list[int], room_mb: float) -> tuple[cgroups.MemoryCgroup, int, int]:
    """A new memory cgroup holding ``pids`` (children born later are born inside), limited
    to what it is charged then plus ``room_mb``: the group, its use and its limit. The
    caller closes it."""
    group = cgroups.MemoryCgroup(f"streamstall-{name}-{time.time_ns()}")
    try:
        for pid in pids:
            group.add(pid)
        used = group.usage()
        limit = used + int(room_mb * 2**20)
        group.limit(limit)
    except BaseException:
        group.close()
        raise
    return group, used, limit


def _rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` (None: gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@register
class MemoryLimit(AirflowFault):
    """Cap the try's address space at its current size plus ``limit_mb`` for the rest of
    its life (RLIMIT_AS: an allocation beyond it raises ``MemoryError`` inside the task;
    Linux does not enforce RLIMIT_RSS). Not the kernel's OOM killer (``oom_kill`` is). The
    fault ends when that process does."""

    type: Literal["memory_limit"] = "memory_limit"
    limit_mb: float = Field(
        default=256, gt=0, le=2**20, description="address space beyond the current (<= 1 TiB)"
    )  # bounded: prlimit overflows on 1e300

    def inject(self, ctx: FaultContext) -> None:
        pid = ctx.wait_for_try()
        if pid is None:
            return
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[0])
        size = pages * os.sysconf("SC_PAGE_SIZE")
        limit = size + int(self.limit_mb * 2**20)
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        ctx.record("start", pid=pid, address_space=size, limit=limit)
        while pid_alive(pid) and not ctx.wait(0.1):
            pass
        ctx.record("stop", pid=pid, died=not pid_alive(pid))


@register
class OomKill(CgroupFault):
    """The worker runs out of memory: the try's processes go into a memory cgroup of their
    own, limited to what they use now plus ``limit_mb``; when they outgrow it the kernel's
    OOM killer SIGKILLs one (a failed try; Airflow retries it). The cgroup is removed when
    the try dies or the run ends."""

    type: Literal["oom_kill"] = "oom_kill"
    limit_mb: float = Field(
        default=64, ge=0, le=2**20, description="memory beyond what the try uses (<= 1 TiB)"
    )

    def inject(self, ctx: FaultContext) -> None:
        pid = ctx.wait_for_try()
        if pid is None:
            return
        group, used, limit = confine(f"oom-{pid}", [pid, *descendants(pid)], self.limit_mb)
        try:
            ctx.record("start", pid=pid, cgroup=str(group.path), used=used, limit=limit)
            while pid_alive(pid) and not ctx.wait(0.02):
                pass
            died = None if pid_alive(pid) else time.time()
            ctx.record("stop", at=died, pid=pid, died=died is not None,
                       oom_kills=group.oom_kills(), peak=group.peak())  # fmt: skip
        finally:
            group.close()


@register
class LeakingNeighbour(CgroupFault):
    """Another task on the try's worker leaks ``leak_mb_per_s``: the two share the worker's
    memory (one cgroup, ``limit_mb`` beyond what they use) until the kernel's OOM killer
    picks a victim, by its own rule (the larger resident set, roughly): the leaker, or the
    stream. Simplified: the neighbour is a process of ours, not an Airflow task, and the
    try joins the cgroup mid-life (where the kernel moves no charges, its older pages stay
    charged outside, so killing it may free too little and the neighbour dies next). The
    fault ends at the OOM kill (or the run's end); the neighbour is stopped and the cgroup
    removed then."""

    type: Literal["leaking_neighbour"] = "leaking_neighbour"
    limit_mb: float = Field(
        default=256, ge=0, le=2**20, description="memory beyond what both use (<= 1 TiB)"
    )
    leak_mb_per_s: float = Field(default=64, gt=0, le=4096, description="the neighbour's leak")

    def inject(self, ctx: FaultContext) -> None:
        pid = ctx.wait_for_try()
        if pid is None:
            return
        neighbour = OwnedProcess(
            [sys.executable, "-c", _LEAKER, str(self.leak_mb_per_s)], stdin=subprocess.PIPE
        )
        try:
            members = [neighbour.pid, pid, *descendants(pid)]
            group, used, limit = confine(f"neighbour-{pid}", members, self.limit_mb)
        except BaseException:
            neighbour.stop(grace=1.0)
            raise
        try:
            assert neighbour.popen.stdin is not None
            neighbour.popen.stdin.write("go\n")
            neighbour.popen.stdin.flush()
            ctx.record("start", pid=pid, neighbour=neighbour.pid, cgroup=str(group.path),
                       used=used, limit=limit)  # fmt: skip
            # The most each held: a victim's RSS drops to 0 while the kernel reaps it.
            peak: dict[str, int] = {"try": 0, "neighbour": 0}
            while pid_alive(pid) and neighbour.alive() and not ctx.wait(0.02):
                for name, member in (("try", pid), ("neighbour", neighbour.pid)):
                    peak[name] = max(peak[name], _rss(member) or 0)
            ended = time.time()
            if not ctx.over:
                # A victim whose death frees too little of the cgroup's charge is followed
                # by a second kill within milliseconds.
                ctx.wait(0.5)
            victims = [
                name
                for name, alive in (("try", pid_alive(pid)), ("neighbour", neighbour.alive()))
                if not alive
            ]
            ctx.record("stop", at=ended if victims else None, pid=pid, victims=victims,
                       oom_kills=group.oom_kills(), peak_rss=peak,
                       neighbour_exit=neighbour.popen.poll())  # fmt: skip
        finally:
            neighbour.stop(grace=1.0)
            group.close()
