"""``python tests/fake_stream/_crashing_server.py serve ...``: the fake stream's own CLI with
one more fault type, ``crash``, that fails like a bug in our code would: it writes the first
half of a write, then raises. Test-only: run as its own process, never imported by pytest
(the fault contract test checks every registered type, and this one breaks it on purpose).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from fake_stream.__main__ import main
from fake_stream.faults.base import ByteFault, FaultContext, Send, register


@register("crash")
@dataclass(frozen=True)
class CrashFault(ByteFault):
    """Half of the write goes out, then a ``RuntimeError``: a fault with a bug."""

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        await send(data[: len(data) // 2])
        raise RuntimeError("crash fault: a bug in the server's own code")


if __name__ == "__main__":
    sys.exit(main())
