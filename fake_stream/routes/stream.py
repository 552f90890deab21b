"""``GET /2/tweets/search/stream`` and ``GET /2/tweets/sample/stream``."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fake_stream import snowflake
from fake_stream.faults import ConnectFault, FaultContext, FaultSpec
from fake_stream.problems import invalid_request, too_many_connections, too_many_requests
from fake_stream.routes import STATE, check_params
from fake_stream.session import StreamSession
from fake_stream.state import StreamState
from fake_stream.wire import Wire

__all__ = ["routes"]

routes = web.RouteTableDef()

# X's field/expansion parameters are accepted (and ignored: every message already carries
# the author expansion); ours are backfill_minutes (X's), since_id and stall_warnings.
_FIELDS = {
    "tweet.fields",
    "expansions",
    "user.fields",
    "media.fields",
    "place.fields",
    "poll.fields",
}
_PARAMS = _FIELDS | {"backfill_minutes", "since_id", "stall_warnings"}


@dataclass
class _Connecting:
    """The Connection that connect faults see, before the stream exists."""

    state: StreamState
    conn_id: int

    def stream_time(self) -> float:
        return self.state.clock.stream_time()

    def in_force(self, spec: FaultSpec) -> bool:
        return self.state.faults.get(spec.name) is spec

    def record(self, kind: str, name: str, **detail: Any) -> None:
        self.state.ledger.event(kind, name, self.conn_id, **detail)


# No HEAD: aiohttp would run the handler for it, and a stream "HEAD" would then send an
# endless body after its headers (a HEAD response must have none). HEAD gets 405.
@routes.get("/2/tweets/search/stream", allow_head=False)
async def filtered_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, filtered=True)


@routes.get("/2/tweets/sample/stream", allow_head=False)
async def sample_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, filtered=False)


async def _stream(request: web.Request, filtered: bool) -> web.StreamResponse:
    state: StreamState = request.app[STATE]
    token: str = request["token"]
    query = check_params(request, _PARAMS)
    backfill, since_id, stall_warnings = _parse(query)
    allowed, limit_headers = state.connect_limiter.hit(token)
    # A refused connect is on the record: two consumers on one token show up here.
    if not allowed:
        state.ledger.event("refused", "TooManyRequests", status=429)
        raise too_many_requests(limit_headers)
    if token in state.stream_owner:
        holder = state.stream_owner[token]
        state.ledger.event("refused", "TooManyConnections", status=429, holder_conn=holder)
        raise too_many_connections(limit_headers)
    conn_id = state.new_conn_id()
    rejected = _connect_faults(state, conn_id)
    if rejected is not None:
        rejected.headers.update(limit_headers)
        return rejected

    start, live_from = _start_index(state, conn_id, backfill, since_id)
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json; charset=utf-8", **limit_headers}
    )
    response.enable_chunked_encoding()
    response.force_close()
    transport = request.transport
    assert transport is not None  # a request being handled has its connection
    if state.config.send_buffer:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, state.config.send_buffer)
    writer = await response.prepare(request)
    assert writer is not None
    wire = Wire(response, writer, transport)
    session = StreamSession(state, conn_id, wire, start, live_from, filtered, stall_warnings)
    state.session_started(
        session,
        token,
        endpoint=request.path,
        params=request.query_string,
        peer=request.remote,
        opened_at=time.time(),
        start_index=start,
    )
    await session.run()
    return response


def _parse(query: dict[str, str]) -> tuple[int | None, int | None, bool]:
    errors = []
    backfill = since_id = None
    if "backfill_minutes" in query:
        text = query["backfill_minutes"]
        if not _is_digits(text) or not 1 <= int(text) <= 5:
            errors.append(_param_error("backfill_minutes", text, "must be an integer 1..5"))
        else:
            backfill = int(text)
    if "since_id" in query:
        text = query["since_id"]
        if not _is_digits(text) or len(text) > 19 or int(text) >= 2**63:
            errors.append(_param_error("since_id", text, "must be a tweet id (digits)"))
        else:
            since_id = int(text)
    stall = query.get("stall_warnings", "false")
    if stall not in ("true", "false"):
        errors.append(_param_error("stall_warnings", stall, "must be true or false"))
    if backfill is not None and since_id is not None:
        errors.append(
            _param_error("since_id", query["since_id"], "cannot be combined with backfill_minutes")
        )
    if errors:
        raise invalid_request(errors)
    return backfill, since_id, stall == "true"


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` and ``int`` also take other scripts' digits
    (a full-width one, U+FF11, is 1 to Python), which X would not."""
    return text.isascii() and text.isdigit()


def _param_error(name: str, value: str, message: str) -> dict[str, Any]:
    return {
        "parameters": {name: [value]},
        "message": f"The `{name}` query parameter value [{value}] {message}",
    }


def _connect_faults(state: StreamState, conn_id: int) -> web.StreamResponse | None:
    connecting = _Connecting(state, conn_id)
    for spec in state.faults.values():
        if isinstance(spec.fault, ConnectFault):
            ctx = FaultContext(spec, connecting, state.config.seed)
            if ctx.active and ctx.applies:
                return spec.fault.on_connect(ctx)
    return None


def _start_index(
    state: StreamState, conn_id: int, backfill: int | None, since_id: int | None
) -> tuple[int, int]:
    """Where the new connection starts reading, and where live tweets begin for it."""
    timeline = state.timeline
    state.generate()  # everything due by now exists before we decide
    live_from = timeline.total
    oldest = timeline.first_index_at(timeline.slots - int(state.config.retention * 1000))
    if backfill is not None:
        start = timeline.first_index_at(timeline.slots - backfill * 60_000)
    elif since_id is not None:
        start = timeline.index_after(since_id)
    else:
        return live_from, live_from
    if start < oldest:
        state.ledger.event(
            "replay_clamped",
            None,
            conn_id,
            asked_from=start,
            oldest_retained=oldest,
            since_ms=snowflake.decode_ms(since_id) if since_id is not None else None,
        )
        start = oldest
    return start, live_from
