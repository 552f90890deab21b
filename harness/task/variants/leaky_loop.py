"""leaky_loop: ``naive_loop`` plus the leak of a long-running task that never frees.

The article warns that a long-running task holding memory "impacts other tasks executing
on the same worker" and ends in worker failures. Here every processed tweet stays in an
in-process cache that nothing trims (a dedupe set grown into a full history), with
:data:`RETAINED_BYTES` per tweet standing for what such caches drag along (parsed
objects, buffers), so a minute-long scenario reaches a limit a real task reaches in days.

Under the ``memory_limit`` fault (an address-space limit on the task process) an
allocation fails with ``MemoryError``, which *is* an ``Exception``: the naive loop's
``except Exception`` catches it. What then happens to the try is what the run measures.
"""

from __future__ import annotations

from harness.task.variants import naive_loop
from harness.task.variants.common import TaskContext

__all__ = ["RETAINED_BYTES", "run"]

#: Bytes kept per processed tweet: ~16 MB/s at 1,000 tweets/s.
RETAINED_BYTES = 16 * 1024


def run(ctx: TaskContext) -> None:
    cache: list[bytearray] = []  # never trimmed: the leak
    naive_loop.run(ctx, on_tweet=lambda tweet: cache.append(bytearray(RETAINED_BYTES)))
