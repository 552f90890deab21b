"""``GET /2/tweets/search/recent``: X's recent search, rate-limited per token, every
answered request on the ledger as a connection with its page's tweets as deliveries.

A page is one JSON body, usable only whole: its tweets are ``acked`` once the client's TCP
has acknowledged the whole response (read from ``TCP_INFO``, as :mod:`fake_stream.wire`
does for the stream); ``unknown`` if the client is still connected but has not
acknowledged within ``settle_timeout``; dropped (``queued`` if nothing of it was written,
else ``in_flight``) if the client went away or the server stopped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from fake_stream import search
from fake_stream.ledger import runs_of
from fake_stream.problems import Problem, too_many_requests
from fake_stream.routes import STATE, check_params
from fake_stream.state import StreamState
from fake_stream.wire import TCP_CLOSE, tcp_info

__all__ = ["CLIENT_CLOSED", "PATH", "SEARCH_COMPLETE", "SERVER_SHUTDOWN", "routes"]

routes = web.RouteTableDef()

PATH = "/2/tweets/search/recent"
#: End reasons of a search request's ledger row.
SEARCH_COMPLETE = "search_complete"
CLIENT_CLOSED = "client_closed"
SERVER_SHUTDOWN = "server_shutdown"
_POLL = 0.005  # seconds between reads of the acknowledgement counter


# No HEAD: it would run the search and put a page on the ledger that nobody was sent.
@routes.get(PATH, allow_head=False)
async def recent_search(request: web.Request) -> web.StreamResponse:
    state: StreamState = request.app[STATE]
    # Every request counts, bad ones too, and every answer carries the headers: X's way.
    allowed, headers = state.search_limiter.hit(request["token"])
    if not allowed:
        state.search_stats["refused"] += 1
        state.ledger.event("refused", "TooManyRequests", status=429, endpoint=PATH)
        raise too_many_requests(headers)
    try:
        query = check_params(request, set(search.PARAMS))
        state.generate()  # everything due by now exists, and is searchable
        ask = search.parse_params(query, state, state.matcher)
    except Problem as problem:
        problem.headers.update(headers)
        raise
    page = await search.find(ask, state.tweets)
    body = search.render(page, state)
    state.search_stats["answered"] += 1
    state.search_stats["tweets"] += len(page.indexes)
    return await _answer(request, state, ask.lo, page.indexes, body, headers)


@dataclass
class _Sent:
    """How far one answer got: the bytes handed to the transport and acknowledged."""

    writer: AbstractStreamWriter | None = None
    complete: bool = False  # the whole response was handed to the transport
    base: int = 0  # bytes the connection had acknowledged before this response
    sock: socket.socket | None = None

    def counters(self) -> tuple[int, int, bool]:
        """``(written, acked, gone)`` of this response; gone: the peer takes nothing more."""
        written = self.writer.output_size if self.writer is not None else 0
        if self.sock is None:
            return written, 0, True
        try:
            info = tcp_info(self.sock)
        except OSError:
            return written, 0, True
        return written, min(info.bytes_acked - self.base, written), info.state == TCP_CLOSE


async def _answer(
    request: web.Request,
    state: StreamState,
    start_index: int,
    indexes: np.ndarray,
    body: bytes,
    headers: dict[str, str],
) -> web.StreamResponse:
    conn_id = state.new_conn_id()
    state.ledger.connection_opened(
        conn_id,
        token=request["token"],
        endpoint=PATH,
        params=request.query_string,
        peer=request.remote,
        opened_at=time.time(),
        start_index=start_index,
    )
    sent = _Sent()
    raw = request.transport.get_extra_info("socket") if request.transport else None
    if raw is not None:
        # Our own descriptor: the counters stay readable after aiohttp closes its own.
        sent.sock = socket.socket(fileno=os.dup(raw.fileno()))
        # On a kept-alive connection the earlier responses are acknowledged by now: the
        # client sent this request after reading them.
        sent.base = tcp_info(sent.sock).bytes_acked
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json; charset=utf-8", **headers}
    )
    response.content_length = len(body)
    reason = SEARCH_COMPLETE
    try:
        sent.writer = await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        sent.complete = True
        await _acknowledged(sent, state.config.settle_timeout)
    except asyncio.CancelledError:
        reason = SERVER_SHUTDOWN
        raise
    except (ConnectionError, OSError):
        reason = CLIENT_CLOSED
    finally:
        _settle(state, conn_id, indexes, sent, reason)
    return response


async def _acknowledged(sent: _Sent, timeout: float) -> None:
    """Wait until the client acknowledged the whole response, went away, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written, acked, gone = sent.counters()
        if acked >= written or gone:
            return
        await asyncio.sleep(_POLL)


def _settle(
    state: StreamState, conn_id: int, indexes: np.ndarray, sent: _Sent, reason: str
) -> None:
    """Record the page's tweets as acked, unknown or dropped, and close the ledger row."""
    written, acked, gone = sent.counters()
    if sent.complete and acked >= written:
        status, stage = "acked", None
    elif not written:
        status, stage = None, "queued"
    elif gone:
        status, stage = None, "in_flight"
        reason = CLIENT_CLOSED if reason == SEARCH_COMPLETE else reason
    else:  # written, the client still connected, no acknowledgement yet
        status, stage = "unknown", None
    # One body: its order inside does not matter to what the client has, so ascending runs.
    for first, stop in runs_of(np.sort(indexes)):
        if status is not None:
            state.ledger.delivered(conn_id, first, stop, status)
        else:
            assert stage is not None
            state.ledger.dropped(conn_id, first, stop, reason, stage)
    state.ledger.connection_closed(
        conn_id,
        closed_at=time.time(),
        end_reason=reason,
        bytes_written=written,
        bytes_acked=acked,
    )
    if sent.sock is not None:
        with contextlib.suppress(OSError):
            sent.sock.close()
