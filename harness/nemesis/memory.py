"""Memory the task may no longer have."""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Literal

from pydantic import Field

from harness.nemesis.base import AirflowFault, FaultContext, register
from harness.procs import pid_alive

__all__ = ["MemoryLimit"]


@register
class MemoryLimit(AirflowFault):
    """Cap the try's address space at its current size plus ``limit_mb`` for the rest of
    its life (RLIMIT_AS: an allocation beyond it raises ``MemoryError`` inside the task;
    Linux does not enforce RLIMIT_RSS). Not the kernel's OOM killer. The fault ends when
    that process does."""

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
