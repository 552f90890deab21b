"""``GET /2/tweets/search/stream`` and ``GET /2/tweets/sample/stream``: live, backfilled,
resumed (``since_id``, ours) or recovery (``start_time``/``end_time``) connections."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fake_stream import access, snowflake
from fake_stream.faults import ConnectFault, FaultContext, FaultSpec
from fake_stream.problems import (
    invalid_request,
    param_error,
    too_many_connections,
    too_many_requests,
)
from fake_stream.routes import STATE, check_params
from fake_stream.session import StreamSession
from fake_stream.state import StreamState
from fake_stream.wire import Wire

__all__ = ["routes"]

routes = web.RouteTableDef()


@dataclass(frozen=True)
class _Ask:
    """What a connect request asks for, checked."""

    backfill: int | None = None
    since_id: int | None = None
    stall_warnings: bool = False
    start_ms: int | None = None  # a recovery: [start_ms, end_ms) of the ids' clock
    end_ms: int | None = None

    @property
    def recovery(self) -> bool:
        return self.start_ms is not None


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
    config = state.config
    token: str = request["token"]
    query = check_params(request, access.stream_params(filtered, config.strict_x))
    access.check_features(config.access_level, query)
    ask = _parse(query, state)
    allowed, limit_headers = state.connect_limiter.hit(token)
    # A refused connect is on the record: two consumers on one token show up here.
    if not allowed:
        state.ledger.event("refused", "TooManyRequests", status=429)
        raise too_many_requests(limit_headers)
    holders = state.holders(token, ask.recovery)
    if len(holders) >= (access.RECOVERY_JOBS if ask.recovery else config.stream_connections):
        extra = {"recovery": True} if ask.recovery else {}
        state.ledger.event(
            "refused", "TooManyConnections", status=429, holder_conn=holders[0], **extra
        )
        raise too_many_connections(limit_headers)
    conn_id = state.new_conn_id()
    # Held from now, not from when the stream starts: a connect arriving meanwhile counts it.
    state.hold(token, conn_id, ask.recovery)
    try:
        rejected = _connect_faults(state, conn_id)
        if rejected is not None:
            rejected.headers.update(limit_headers)
            return rejected
        return await _serve(request, state, conn_id, ask, filtered, limit_headers)
    finally:
        state.release(conn_id)


async def _serve(
    request: web.Request,
    state: StreamState,
    conn_id: int,
    ask: _Ask,
    filtered: bool,
    limit_headers: dict[str, str],
) -> web.StreamResponse:
    token: str = request["token"]
    start, live_from, stop = _plan(state, conn_id, ask)
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
    session = StreamSession(
        state, conn_id, wire, start, live_from, filtered, ask.stall_warnings, stop
    )
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


def _parse(query: dict[str, str], state: StreamState) -> _Ask:
    errors = []
    backfill = since_id = None
    if "backfill_minutes" in query:
        text = query["backfill_minutes"]
        if not _is_digits(text) or not 1 <= int(text) <= 5:
            errors.append(param_error("backfill_minutes", text, "must be an integer 1..5"))
        else:
            backfill = int(text)
    if "since_id" in query:
        text = query["since_id"]
        if not _is_digits(text) or len(text) > 19 or int(text) >= 2**63:
            errors.append(param_error("since_id", text, "must be a tweet id (digits)"))
        else:
            since_id = int(text)
    stall = query.get("stall_warnings", "false")
    if stall not in ("true", "false"):
        errors.append(param_error("stall_warnings", stall, "must be true or false"))
    if backfill is not None and since_id is not None:
        errors.append(
            param_error("since_id", query["since_id"], "cannot be combined with backfill_minutes")
        )
    now_ms = state.clock.t0_ms + state.clock.slot_now()  # the ids' clock, pinned t0 or not
    start_ms, end_ms, recovery = access.recovery_errors(query, now_ms, state.recovery_window)
    errors += recovery
    for name in ("backfill_minutes", "since_id"):
        if name in query and "start_time" in query:
            errors.append(param_error(name, query[name], "cannot be combined with start_time"))
    if errors:
        raise invalid_request(errors)
    return _Ask(backfill, since_id, stall == "true", start_ms, end_ms)


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` and ``int`` also take other scripts' digits
    (a full-width one, U+FF11, is 1 to Python), which X would not."""
    return text.isascii() and text.isdigit()


def _connect_faults(state: StreamState, conn_id: int) -> web.StreamResponse | None:
    connecting = _Connecting(state, conn_id)
    for spec in state.faults.values():
        if isinstance(spec.fault, ConnectFault):
            ctx = FaultContext(spec, connecting, state.config.seed)
            if ctx.active and ctx.applies:
                return spec.fault.on_connect(ctx)
    return None


def _plan(state: StreamState, conn_id: int, ask: _Ask) -> tuple[int, int, int | None]:
    """Where the new connection starts reading, where live tweets begin for it, and where
    it stops (a recovery; None: live)."""
    timeline = state.timeline
    state.generate()  # everything due by now exists before we decide
    live_from = timeline.total
    if ask.recovery:
        assert ask.start_ms is not None
        assert ask.end_ms is not None
        t0_ms = state.clock.t0_ms
        start = timeline.first_index_at(ask.start_ms - t0_ms)
        stop = timeline.first_index_at(ask.end_ms - t0_ms)
        state.ledger.event(
            "recovery",
            None,
            conn_id,
            start_ms=ask.start_ms,
            end_ms=ask.end_ms,
            first=start,
            stop=stop,
        )
        return start, stop, stop
    oldest = timeline.first_index_at(timeline.slots - int(state.config.retention * 1000))
    backfill, since_id = ask.backfill, ask.since_id
    if backfill is not None:
        # X's minutes in stream time, scaled (backfill_scale) so a short run can cross them.
        reach = round(backfill * 60_000 * state.config.backfill_scale)
        start = timeline.first_index_at(timeline.slots - reach)
    elif since_id is not None:
        start = timeline.index_after(since_id)
    else:
        return live_from, live_from, None
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
    if backfill is not None:  # what the replay covers, for the checker: X's window, scaled
        to_ms = state.clock.t0_ms + timeline.slots
        state.ledger.event(
            "backfill",
            None,
            conn_id,
            minutes=backfill,
            from_ms=to_ms - reach,
            to_ms=to_ms,
            first=start,
            live_from=live_from,
        )
    return start, live_from, None
