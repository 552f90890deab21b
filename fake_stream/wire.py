"""What reached the client: byte accounting from the kernel's own TCP counters.

"Delivered" in the ledger means *acknowledged by the client's TCP stack*, read from
``TCP_INFO.tcpi_bytes_acked`` on the server's socket: the bytes sit in the client's receive
buffer and the client application can read them, even after a reset (Linux hands queued
data to ``recv`` before reporting ``ECONNRESET``). Bytes handed to ``write`` but still in
asyncio's buffer or the kernel's send queue when a connection dies are not delivered.

:class:`Wire` maps acknowledged *wire* bytes (status line, headers, chunk framing) back to
*payload* bytes (our NDJSON lines); :class:`Outbox` maps payload bytes to tweets and
settles them into the ledger as they are acknowledged.

The one indeterminate case is a reset the *server* sends (a fault): between reading the
counter and the RST leaving, the client may still take a few more bytes. Tweets written but
unacknowledged at that moment are recorded with status ``unknown`` (Jepsen's ``info``),
never guessed either way. Resets and closes by the client leave nothing indeterminate: a
peer that is gone acknowledges nothing more.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from fake_stream.ledger import LedgerWriter, runs_of

__all__ = ["TCP_CLOSE", "TCP_ESTABLISHED", "Outbox", "TcpState", "Wire", "tcp_info"]

_TCP_INFO_LEN = 128
_BYTES_ACKED_OFFSET = 120  # struct tcp_info.tcpi_bytes_acked (Linux >= 4.1)
TCP_ESTABLISHED = 1
TCP_CLOSE = 7
_HIGH_WATER = 1 << 16


@dataclass(frozen=True)
class TcpState:
    """``bytes_acked``: wire bytes the peer acknowledged; ``state``: Linux TCP state."""

    bytes_acked: int
    state: int


def tcp_info(sock: socket.socket) -> TcpState:
    """The kernel's counters of a TCP socket: every byte the peer acknowledged since the
    connection opened (all its responses, on a kept-alive one), and its state."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    (acked,) = struct.unpack_from("Q", info, _BYTES_ACKED_OFFSET)
    return TcpState(acked, info[0])


class Wire:
    """One streaming response's bytes, and how many of them the client acknowledged.

    Holds a duplicate of the socket's descriptor so the kernel's counters stay readable
    after asyncio has closed its own; :meth:`release` must be called exactly once.
    """

    def __init__(
        self,
        response: web.StreamResponse,
        writer: AbstractStreamWriter,
        transport: asyncio.Transport,
    ) -> None:
        self._response = response
        self._writer = writer
        self._transport = transport
        raw = transport.get_extra_info("socket")
        self._sock = socket.socket(fileno=os.dup(raw.fileno()))
        self.payload_bytes = 0
        self._frames: deque[tuple[int, int, int]] = deque()  # (wire start, payload start, len)
        self._acked_payload_floor = 0

    @property
    def wire_bytes(self) -> int:
        return self._writer.output_size

    async def write(self, data: bytes, drain: bool = True) -> None:
        """Send ``data`` as one HTTP chunk, then wait while the transport is backed up.

        The bytes are accounted for before the wait, so a task cancelled while waiting
        leaves the accounting right.
        """
        await self._writer.write(data, drain=False)
        # aiohttp wrote [headers?][chunk size line][data][CRLF]: our data ends 2 bytes early.
        self._frames.append(
            (self._writer.output_size - 2 - len(data), self.payload_bytes, len(data))
        )
        self.payload_bytes += len(data)
        if drain and self._transport.get_write_buffer_size() > _HIGH_WATER:
            await self._writer.drain()

    def tcp_state(self) -> TcpState:
        info = tcp_info(self._sock)
        return TcpState(min(info.bytes_acked, self._writer.output_size), info.state)

    def acked_payload(self) -> int:
        """How many payload bytes the client has acknowledged so far."""
        acked_wire = self.tcp_state().bytes_acked
        frames = self._frames
        while frames and frames[0][0] + frames[0][2] <= acked_wire:
            _, start, length = frames.popleft()
            self._acked_payload_floor = start + length
        return self._payload_at(acked_wire)

    def kernel_payload(self) -> int:
        """Payload bytes handed to the kernel (not still waiting in asyncio's buffer)."""
        return self._payload_at(self._writer.output_size - self._transport.get_write_buffer_size())

    def _payload_at(self, wire_offset: int) -> int:
        payload = self._acked_payload_floor
        for wire_start, start, length in self._frames:
            if wire_offset <= wire_start:
                break
            payload = start + min(length, wire_offset - wire_start)
        return payload

    def peer_gone(self) -> bool:
        """The client closed or reset the connection (it will acknowledge nothing more)."""
        return self.tcp_state().state != TCP_ESTABLISHED

    async def finish(self, settle_timeout: float, final_chunk: bool = True) -> None:
        """End the response: final chunk (unless not ``final_chunk``: the client then sees a
        truncated body), FIN, then wait up to ``settle_timeout`` for the acknowledgement."""
        try:
            if final_chunk:
                await self._response.write_eof()
            deadline = time.monotonic() + settle_timeout
            while self._transport.get_write_buffer_size() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            self._sock.shutdown(socket.SHUT_WR)
            while time.monotonic() < deadline:
                state = self.tcp_state()
                if state.bytes_acked >= self._writer.output_size or state.state == TCP_CLOSE:
                    break
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            pass  # the peer went away meanwhile; the counters still say what it got

    def reset(self) -> None:
        """Send a TCP RST now, discarding whatever is still queued."""
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def release(self) -> None:
        """Close our descriptor and the transport (unless :meth:`reset` already did).

        aiohttp then finds the response finished or the transport closed, and writes
        nothing more.
        """
        self._sock.close()
        if not self._transport.is_closing():
            self._transport.close()


class Outbox:
    """Tweets written on one connection, waiting for their bytes to be acknowledged.

    :param conn_id: the connection, for the ledger.
    """

    def __init__(self, conn_id: int, ledger: LedgerWriter) -> None:
        self._conn_id = conn_id
        self._ledger = ledger
        # (payload end offset of each line, tweet index of each line or -1), per write
        self._pending: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def sent(self, payload_start: int, line_lengths: np.ndarray, indexes: np.ndarray) -> None:
        """Record one write: its lines' lengths and tweet indexes (-1: not a tweet)."""
        ends = payload_start + np.cumsum(line_lengths)
        self._pending.append((ends, indexes))

    def settle(self, acked_payload: int) -> None:
        """Deliver, in the ledger, every tweet whose whole line is acknowledged."""
        pending = self._pending
        while pending:
            ends, indexes = pending[0]
            if ends[-1] <= acked_payload:
                self._deliver(indexes, "acked")
                pending.popleft()
                continue
            cut = int(np.searchsorted(ends, acked_payload, side="right"))
            if cut:
                self._deliver(indexes[:cut], "acked")
                pending[0] = (ends[cut:], indexes[cut:])
            break

    def close(self, acked_payload: int, maybe_payload: int, reason: str) -> None:
        """Settle for the last time when the connection ends.

        Lines within ``acked_payload`` are delivered; lines within ``maybe_payload`` (in the
        kernel, unacknowledged, and the peer might still take them) are ``unknown``; the
        rest are dropped in flight with ``reason``.
        """
        self.settle(acked_payload)
        for ends, indexes in self._pending:
            cut = int(np.searchsorted(ends, maybe_payload, side="right"))
            self._deliver(indexes[:cut], "unknown")
            for first, stop in runs_of(indexes[cut:][indexes[cut:] >= 0]):
                self._ledger.dropped(self._conn_id, first, stop, reason, "in_flight")
        self._pending.clear()

    def _deliver(self, indexes: np.ndarray, status: str) -> None:
        tweets = indexes[indexes >= 0] if (indexes < 0).any() else indexes
        for first, stop in runs_of(tweets):
            self._ledger.delivered(self._conn_id, first, stop, status)
