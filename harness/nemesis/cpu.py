"""CPU the task no longer has to itself: another task on its worker keeps cores busy."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import ClassVar, Literal

from pydantic import Field

from harness.nemesis.base import AirflowFault, FaultContext, register
from harness.procs import OwnedProcess, cpu_seconds

__all__ = ["BusyNeighbour"]

_SPIN = "while True:\n    pass"


@register
class BusyNeighbour(AirflowFault):
    """Another task on the try's worker spins ``cores`` CPUs (pure Python loops) from when
    a try runs until ``duration`` s pass or the run ends: a worker's other task slots at
    work. Simplified: the neighbours are processes of ours, not Airflow tasks. The ``stop``
    records the CPU they got, in cores."""

    type: Literal["busy_neighbour"] = "busy_neighbour"
    alone: ClassVar = True  # its busy cores are every running scenario's
    cores: int = Field(default=1, ge=1, le=64, description="busy processes")
    duration: float = Field(default=3600, gt=0, le=86400, description="seconds busy at most")

    def inject(self, ctx: FaultContext) -> None:
        pid = ctx.wait_for_try()
        if pid is None:
            return
        neighbours = [
            OwnedProcess([sys.executable, "-c", _SPIN], stdout=subprocess.DEVNULL)
            for _ in range(self.cores)
        ]
        try:
            began = time.time()
            ctx.record("start", at=began, pid=pid, neighbours=[n.pid for n in neighbours])
            ctx.wait(self.duration)  # or until the run ends
            cpu = sum((cpu_seconds(n.pid) or (0, 0.0))[1] for n in neighbours)
            ended = time.time()
            ctx.record("stop", at=ended, pid=pid, neighbour_cores=round(cpu / (ended - began), 3))
        finally:
            for neighbour in neighbours:
                neighbour.stop(grace=1.0)
