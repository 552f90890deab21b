"""Network faults: Toxiproxy's toxics, acting on the bytes of one stream connection.

Continuous faults: each connection tosses its seeded coin once (``probability``) and, if it
applies, the fault acts on every write made while its schedule is active. Byte counts are
stream *body* bytes (NDJSON, before HTTP chunk framing).

Faults that only shape the bytes (latency, bandwidth, slicer) record an ``applied`` event
the first time they act on a connection in each activation window, so the ledger says
which connections they touched. Bandwidth and slicer work on one write piece by piece and
stop shaping as soon as their window ends: the rest of that write goes out at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fake_stream.faults.base import (
    ByteFault,
    EndConnection,
    FaultContext,
    FaultError,
    ListenerFault,
    Send,
    register,
)

__all__ = [
    "BandwidthFault",
    "DownFault",
    "LatencyFault",
    "LimitDataFault",
    "ResetPeerFault",
    "SlicerFault",
    "SlowCloseFault",
    "TimeoutFault",
]


def _applied(ctx: FaultContext) -> None:
    """Record, once per activation window and connection, that the fault acts on it."""
    window = ctx.spec.schedule.activation(ctx.conn.stream_time())
    if window is not None and ctx.state.get("applied_window") != window:
        ctx.state["applied_window"] = window
        ctx.record("applied", window=window)


def _positive(name: str, value: float, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise FaultError(
            f"{name}: expected a number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )


@register("latency")
@dataclass(frozen=True)
class LatencyFault(ByteFault):
    """Delays every write by ``latency`` seconds, give or take up to ``jitter``."""

    latency: float = 0.1
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _positive("latency", self.latency)
        _positive("jitter", self.jitter)

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        _applied(ctx)
        delay = self.latency + ctx.rng.uniform(-self.jitter, self.jitter)
        await asyncio.sleep(max(delay, 0.0))
        await send(data)


@register("bandwidth")
@dataclass(frozen=True)
class BandwidthFault(ByteFault):
    """Limits the connection to ``rate`` kilobytes (1024 B) per second."""

    rate: float = 100.0

    def __post_init__(self) -> None:
        _positive("rate", self.rate, allow_zero=False)

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        _applied(ctx)
        per_tick = max(1, int(self.rate * 1024 / 20))  # 50 ms worth of bytes
        for start in range(0, len(data), per_tick):
            if not ctx.active:  # the window ended in the middle of this write
                await send(data[start:])
                return
            piece = data[start : start + per_tick]
            await send(piece)
            await asyncio.sleep(len(piece) / (self.rate * 1024))


@register("slicer")
@dataclass(frozen=True)
class SlicerFault(ByteFault):
    """Splits writes into pieces of ``average_size`` +- ``size_variation`` bytes, each sent
    ``delay`` seconds after the last (messages arrive cut across many small reads)."""

    average_size: int = 64
    size_variation: int = 32
    delay: float = 0.001

    def __post_init__(self) -> None:
        if self.average_size < 1 or not 0 <= self.size_variation < self.average_size:
            raise FaultError("size_variation: expected 0 <= size_variation < average_size >= 1")
        _positive("delay", self.delay)

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        _applied(ctx)
        start = 0
        while start < len(data):
            if not ctx.active:  # the window ended in the middle of this write
                await send(data[start:])
                return
            size = self.average_size + ctx.rng.randint(-self.size_variation, self.size_variation)
            await send(data[start : start + size])
            start += size
            if start < len(data):
                await asyncio.sleep(self.delay)


@register("limit_data")
@dataclass(frozen=True)
class LimitDataFault(ByteFault):
    """Closes the connection (FIN, no final chunk) once ``bytes`` body bytes have been sent
    on it; the last message is usually cut in the middle."""

    bytes: int = 65536

    def __post_init__(self) -> None:
        if self.bytes < 1:
            raise FaultError(f"bytes: expected >= 1, got {self.bytes!r}")

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        sent = ctx.state.get("sent", 0)
        room = self.bytes - sent
        if len(data) < room:
            ctx.state["sent"] = sent + len(data)
            await send(data)
            return
        await send(data[:room])
        ctx.record("closed", after_bytes=self.bytes)
        raise EndConnection(f"fault:{ctx.spec.name}", how="fin")


@register("timeout")
@dataclass(frozen=True)
class TimeoutFault(ByteFault):
    """Stops all data, keep-alives included, while active; closes the connection (FIN)
    after ``close_after`` seconds of silence, or never when it is ``None``."""

    close_after: float | None = None

    def __post_init__(self) -> None:
        if self.close_after is not None:
            _positive("close_after", self.close_after, allow_zero=False)

    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        loop = asyncio.get_running_loop()
        since = ctx.state.setdefault("silent_since", loop.time())
        if "recorded" not in ctx.state:
            ctx.state["recorded"] = True
            ctx.record("stalled")
        while ctx.active:
            if self.close_after is not None and loop.time() - since >= self.close_after:
                ctx.record("closed", after_seconds=self.close_after)
                raise EndConnection(f"fault:{ctx.spec.name}", how="fin")
            await asyncio.sleep(0.02)
        ctx.state.clear()
        await send(data)


@register("reset_peer")
@dataclass(frozen=True)
class ResetPeerFault(ByteFault):
    """Resets the connection (TCP RST) ``after`` seconds of being active on it."""

    after: float = 0.0

    def __post_init__(self) -> None:
        _positive("after", self.after)

    def on_tick(self, ctx: FaultContext, now: float) -> None:
        since = ctx.state.setdefault("active_since", now)
        if now - since >= self.after:
            ctx.record("reset")
            raise EndConnection(f"fault:{ctx.spec.name}", how="reset")


@register("slow_close")
@dataclass(frozen=True)
class SlowCloseFault(ByteFault):
    """Delays closing the connection by ``delay`` seconds, whoever ends it."""

    delay: float = 1.0

    def __post_init__(self) -> None:
        _positive("delay", self.delay)

    async def before_close(self, ctx: FaultContext) -> None:
        ctx.record("delayed_close", delay=self.delay)
        await asyncio.sleep(self.delay)


@register("down")
@dataclass(frozen=True)
class DownFault(ListenerFault):
    """Takes the server off the network while active: the listening socket is closed (new
    connects are refused) and, if ``close_connections``, open streams are reset."""

    close_connections: bool = True
