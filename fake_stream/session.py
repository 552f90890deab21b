"""One stream connection: its queue, its writer loop, its faults, and how it ends.

The queue of a connection is a cursor into the global tweet sequence: everything from
``cursor`` to the timeline's end is waiting to be written. It fills when the client reads
slower than tweets are created (the kernel's socket buffers fill first, then asyncio's,
then the writer blocks and the cursor falls behind). Past ``queue_size`` tweets of *live*
backlog (replayed history does not count) the server warns and then disconnects the client,
as X does with slow consumers.

A recovery connection (X's ``start_time``/``end_time``) has a ``stop_index``: it streams
``[start_index, stop_index)``, history only, then ends cleanly (``recovery_complete``).

Every tweet the session takes off its queue ends up in the ledger exactly once per time it
was written: delivered (acknowledged), unknown, or dropped with a reason. That holds even
when the session's own code fails: an unexpected exception resets the connection with the
end reason ``internal_error``, and the close still settles the ledger and frees the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from fake_stream.faults import (
    Batch,
    ByteFault,
    EndConnection,
    FaultContext,
    FaultSpec,
    MessageFault,
)
from fake_stream.faults.base import Send
from fake_stream.problems import OPERATIONAL_DISCONNECT, falling_behind
from fake_stream.wire import Outbox, Wire

if TYPE_CHECKING:
    from fake_stream.state import StreamState

__all__ = ["INTERNAL_ERROR", "RECOVERY_COMPLETE", "StreamSession"]

log = logging.getLogger(__name__)

#: The end reason (and drop reason) of a connection ended by a bug of ours.
INTERNAL_ERROR = "internal_error"
#: The end reason of a recovery connection that streamed its whole range.
RECOVERY_COMPLETE = "recovery_complete"
_TICK = 0.05  # seconds between checks of time-based faults and of the peer's state
_TCP_FIN_WAIT1 = 4
_TCP_ESTABLISHED = 1


class StreamSession:
    """Streams tweets ``[start_index, ...)`` to one client until something ends it.

    :param filtered: the filtered stream (tweets carry ``matching_rules``) or the sample.
    :param live_from: the first index created after the connect; the backlog before it is
        replay and does not count against the queue limit.
    :param stop_index: a recovery connection's end (exclusive); None: a live stream.
    """

    def __init__(
        self,
        state: StreamState,
        conn_id: int,
        wire: Wire,
        start_index: int,
        live_from: int,
        filtered: bool,
        stall_warnings: bool,
        stop_index: int | None = None,
    ) -> None:
        self.state = state
        self.conn_id = conn_id
        self.wire = wire
        self.cursor = start_index
        self.live_from = live_from
        self.filtered = filtered
        self.stall_warnings = stall_warnings
        self.stop_index = stop_index
        self.tweets_sent = 0  # tweet lines written (stats)
        self.tweets_taken = 0  # tweets taken off the queue: one-shot faults count these
        self._held: list[tuple[bytes, int]] = []  # lines a fault delayed to the next write
        self._peer_gone = False
        self.outbox = Outbox(conn_id, state.ledger)
        self._wake = asyncio.Event()
        self._end: EndConnection | None = None
        self._warnings_due: list[int] = []
        self._warned_level = 0.0
        self._fault_contexts: dict[str, FaultContext] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_write = time.monotonic()
        #: Set once the connection is closed and its tweets are settled in the ledger.
        self.closed = asyncio.Event()

    # The Connection protocol faults see ------------------------------------------------

    def stream_time(self) -> float:
        return self.state.clock.stream_time()

    def record(self, kind: str, name: str, **detail: Any) -> None:
        self.state.ledger.event(kind, name, self.conn_id, **detail)

    def in_force(self, spec: FaultSpec) -> bool:
        return self.state.faults.get(spec.name) is spec

    def end_index(self) -> int:
        """Where this connection's queue ends now: the newest tweet, or a recovery's end."""
        total = self.state.timeline.total
        return total if self.stop_index is None else min(self.stop_index, total)

    # Called by the generator and the server ----------------------------------------------

    def on_created(self, total: int) -> None:
        """New tweets exist up to ``total``: check the queue limit and wake the writer."""
        limit = self.state.config.queue_size
        if limit and self.stop_index is None:  # a recovery has no live backlog to fall behind
            backlog = total - max(self.cursor, self.live_from)
            fill = backlog / limit
            if fill >= 1:
                self.end(EndConnection("queue_overflow", "clean", OPERATIONAL_DISCONNECT))
                return
            for level in self.state.config.warn_at:
                if self.stall_warnings and fill >= level > self._warned_level:
                    self._warned_level = level
                    self._warnings_due.append(round(level * 100))
        self._wake.set()

    def keepalive_now(self) -> None:
        """Send a keep-alive (the bare ``\\r\\n`` of a quiet stream) at the next tick."""
        self._last_write = -math.inf
        self._wake.set()

    def end(self, why: EndConnection) -> None:
        """Ask the connection to end. The writer stops at its next safe point; if it is
        stuck behind a client that does not read, it is cut off (RST) after the settle
        timeout."""
        if self._end is not None:
            return
        self._end = why
        self._wake.set()
        if self._task is not None:
            asyncio.get_running_loop().call_later(self.state.config.settle_timeout, self._cut_off)

    def _cut_off(self) -> None:
        # Only a writer still stuck in its loop is cut off; a connection already closing
        # (slow_close, waiting for acknowledgements) has its own bounded waits.
        if self._task is not None and not self._task.done() and not self._closing:
            self._task.cancel()

    # The writer ----------------------------------------------------------------------

    async def run(self) -> None:
        """Write until ended, then close and settle the ledger. Never raises."""
        self._task = asyncio.current_task()
        watchdog = asyncio.create_task(self._watch_peer())
        why = EndConnection("server_shutdown")
        try:
            await self._write_loop()
        except EndConnection as e:
            why = e
        except asyncio.CancelledError:
            if self._peer_gone:
                why = EndConnection("client_closed", "gone")
            else:
                # Cut off while blocked (client not reading) or the server is stopping:
                # what sits in the buffers cannot be followed by a clean end, so reset.
                why = EndConnection((self._end or why).reason, "reset")
        except (ConnectionError, OSError):
            why = EndConnection("client_closed", "gone")
        except Exception:
            log.exception("stream connection %d failed; resetting it", self.conn_id)
            why = EndConnection(INTERNAL_ERROR, "reset")
        finally:
            watchdog.cancel()
        self._closing = True
        await self._close(why)

    async def _watch_peer(self) -> None:
        """Notice a client that went away even while the writer is blocked (in a drain, a
        timeout fault, a long latency): its token's one connection must be freed."""
        with contextlib.suppress(OSError):  # the socket is unreadable: treat it as gone
            while not self.wire.peer_gone():
                await asyncio.sleep(_TICK)
        self._peer_gone = True
        if self._task is not None and not self._closing:
            self._task.cancel()

    async def _write_loop(self) -> None:
        keepalive = self.state.config.keepalive
        while True:
            if self._end is not None:
                raise self._end
            byte_faults = self._active(ByteFault)
            now = time.monotonic()
            for ctx in byte_faults:
                ctx.spec.fault.on_tick(ctx, now)  # type: ignore[attr-defined]
            pipe = self._pipe(byte_faults)
            for percent in self._warnings_due:
                await pipe(falling_behind(percent))
            self._warnings_due.clear()
            if self.cursor < self.end_index():
                await self._send_batch(pipe)
                # A fast reader never makes the writes wait: yield anyway, or the clock,
                # the ledger, the control API and the other connections would starve.
                await asyncio.sleep(0)
            elif self.stop_index is not None:
                if self._held:  # a reorder's last lines: no later write would carry them
                    held, self._held = self._held, []
                    indexes = np.array([index for _, index in held], dtype=np.int64)
                    await self._write_lines(pipe, [line for line, _ in held], indexes)
                raise EndConnection(RECOVERY_COMPLETE, "clean")
            elif now - self._last_write >= keepalive:
                await pipe(b"\r\n")
            else:
                self._wake.clear()
                timeout = min(_TICK, keepalive - (now - self._last_write))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _send_batch(self, pipe: Send) -> None:
        state = self.state
        first = self.cursor
        stop = min(self.end_index(), first + state.config.max_batch)
        self.cursor = stop
        suffixes = state.rules.suffixes() if self.filtered else None
        if self.filtered and not suffixes:
            state.ledger.dropped(self.conn_id, first, stop, "no_matching_rule", "queued")
            return
        indexes = np.arange(first, stop, dtype=np.int64)
        ids, unix_ms = state.timeline.locate(indexes)
        lines = state.tweets.lines(indexes, ids, unix_ms, suffixes)
        taken_before, self.tweets_taken = self.tweets_taken, self.tweets_taken + stop - first
        message_faults = self._active(MessageFault)
        if message_faults or self._held:
            lines, indexes = self._apply_message_faults(
                message_faults, lines, indexes, taken_before
            )
        if lines:
            await self._write_lines(pipe, lines, indexes)

    async def _write_lines(self, pipe: Send, lines: list[bytes], indexes: np.ndarray) -> None:
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        self.outbox.sent(self.wire.payload_bytes, lengths, indexes)
        self.tweets_sent += int((indexes >= 0).sum())
        await pipe(b"".join(lines))
        self.outbox.settle(self.wire.acked_payload())

    def _apply_message_faults(
        self, faults: list[FaultContext], lines: list[bytes], indexes: np.ndarray, taken_before: int
    ) -> tuple[list[bytes], np.ndarray]:
        """Let one-shot faults rewrite a write. Each firing targets a fresh tweet (by its
        number on the connection), found where earlier faults left it in the write."""
        batch = Batch(lines, indexes.tolist())
        if self._held:  # what a fault held back last time goes out after this first line
            at = min(1, len(batch.lines))
            batch.lines[at:at] = [line for line, _ in self._held]
            batch.indexes[at:at] = [index for _, index in self._held]
            self._held = []
        first = int(indexes[0]) if len(indexes) else 0
        firings = sorted(
            (offset, order, ctx)
            for order, ctx in enumerate(faults)
            for offset in ctx.firings(taken_before, len(indexes))
        )
        for offset, _, ctx in firings:
            target = first + offset
            if target in batch.indexes:
                position = batch.indexes.index(target)
            elif any(index == target for _, index in batch.held):
                position = len(batch.lines)  # held back: it would have come at the end
            else:
                continue  # an earlier fault in this write destroyed or withheld it
            ctx.spec.fault.apply(ctx, batch, position)  # type: ignore[attr-defined]
        for index, reason, stage in batch.withheld:
            self.state.ledger.dropped(self.conn_id, index, index + 1, reason, stage)
        self._held = batch.held
        if batch.end is not None:
            self.end(batch.end)
        return batch.lines, np.array(batch.indexes, dtype=np.int64)

    def _pipe(self, byte_faults: list[FaultContext]) -> Send:
        """The byte pipe: each active byte fault in turn, then the socket."""

        async def to_socket(data: bytes) -> None:
            self._last_write = time.monotonic()
            await self.wire.write(data)

        send: Send = to_socket
        for ctx in reversed(byte_faults):
            send = _stage(ctx, send)
        return send

    def _active(self, kind: type) -> list[FaultContext]:
        """Contexts of the faults of ``kind`` that are active and apply to this connection."""
        out = []
        for spec in self.state.faults.values():
            if not isinstance(spec.fault, kind):
                continue
            ctx = self._context(spec)
            if ctx.active and (ctx.applies or kind is MessageFault):
                out.append(ctx)
        return out

    def _context(self, spec: FaultSpec) -> FaultContext:
        ctx = self._fault_contexts.get(spec.name)
        if ctx is None or ctx.spec is not spec:  # new, or replaced under the same name
            ctx = self._fault_contexts[spec.name] = FaultContext(spec, self, self.state.config.seed)
        return ctx

    # Ending --------------------------------------------------------------------------

    async def _close(self, why: EndConnection) -> None:
        """Say goodbye as ``why`` says, then settle: always, whatever fails on the way."""
        try:
            why = await self._goodbye(why)
            self._settle(why)
        except Exception:  # a bug of ours while closing: the token must still be freed
            log.exception("closing stream connection %d failed", self.conn_id)
            with contextlib.suppress(Exception):
                self.wire.reset()
        finally:
            with contextlib.suppress(Exception):
                self.wire.release()
            self.state.session_ended(self)
            self.closed.set()

    async def _goodbye(self, why: EndConnection) -> EndConnection:
        """The last bytes (warnings, a disconnect line, the final chunk) and the FIN, unless
        ``why`` says reset or gone; returns ``why``, made a reset if cut off meanwhile."""
        wire, state = self.wire, self.state
        try:
            if why.how in ("clean", "fin"):
                # Warnings queued while the writer was blocked go out before the goodbye.
                for percent in self._warnings_due:
                    await wire.write(falling_behind(percent), drain=False)
                if why.message is not None:
                    await wire.write(why.message, drain=False)
                for ctx in self._active(ByteFault):
                    await ctx.spec.fault.before_close(ctx)  # type: ignore[attr-defined]
                await wire.finish(state.config.settle_timeout, final_chunk=why.how == "clean")
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            why = EndConnection(why.reason, "reset")
        except Exception:  # a fault's before_close failed: end as an internal error
            log.exception("ending stream connection %d failed; resetting it", self.conn_id)
            why = EndConnection(INTERNAL_ERROR, "reset")
        return why

    def _settle(self, why: EndConnection) -> None:
        """Record every tweet the connection took as delivered, unknown or dropped."""
        wire, state = self.wire, self.state
        tcp = wire.tcp_state()
        acked = wire.acked_payload()
        if why.how == "reset":
            maybe = wire.kernel_payload()  # the client may take a few more bytes before the RST
            wire.reset()
        elif tcp.state in (_TCP_ESTABLISHED, _TCP_FIN_WAIT1) and why.how != "gone":
            maybe = wire.kernel_payload()  # alive, just has not acknowledged yet
        else:
            maybe = acked  # the peer is gone: it will take nothing more
        self.outbox.close(acked, maybe, why.reason)
        for _, index in self._held:
            state.ledger.dropped(self.conn_id, index, index + 1, why.reason, "queued")
        end = self.end_index()
        if self.cursor < end:
            state.ledger.dropped(self.conn_id, self.cursor, end, why.reason, "queued")
            self.cursor = end
        state.ledger.connection_closed(
            self.conn_id,
            closed_at=time.time(),
            end_reason=why.reason,
            bytes_written=wire.wire_bytes,
            bytes_acked=tcp.bytes_acked,
        )


def _stage(ctx: FaultContext, downstream: Send) -> Send:
    fault: ByteFault = ctx.spec.fault  # type: ignore[assignment]

    async def send(data: bytes) -> None:
        await fault.write(ctx, data, downstream)

    return send
