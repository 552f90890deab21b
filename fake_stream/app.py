"""The aiohttp application: routes, bearer auth, and errors as X-style JSON problems; and
the protocol handler in front of it, which also caps open connections per client."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from fake_stream.problems import Problem, problem_response
from fake_stream.routes import MAX_BODY, STATE, control, rules, search, stream
from fake_stream.state import StreamState

__all__ = ["MAX_BODY", "ConnectionGate", "ProblemRequestHandler", "create_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status_problem(status: int, detail: str | None = None) -> web.Response:
    phrase = HTTPStatus(status).phrase
    return problem_response(
        status,
        {"title": phrase, "detail": detail or phrase, "type": "about:blank", "status": status},
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON problem; nothing reaches the client as HTML or text."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = _status_problem(e.status, e.reason)
        if e.status == 405:
            response.headers["Allow"] = e.headers.get("Allow", "")
        return response
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _status_problem(500)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Authorization: Bearer <token>`` on every endpoint, control API included."""
    tokens = request.app[STATE].config.tokens
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token.strip() not in tokens:
        raise Problem(401, "Unauthorized", "Unauthorized")
    request["token"] = token.strip()
    return await handler(request)


def create_app(state: StreamState) -> web.Application:
    """The application for one server state."""
    app = web.Application(middlewares=[problems, bearer_auth], client_max_size=MAX_BODY)
    app[STATE] = state
    app.add_routes(stream.routes)
    app.add_routes(rules.routes)
    app.add_routes(search.routes)
    app.add_routes(control.routes)
    return app


class ConnectionGate:
    """Counts open connections by client address and admits at most ``per_address`` of one
    address and ``total`` in all: each holds file descriptors, and a full descriptor table
    stops the server from accepting anyone (1,100 idle sockets did)."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.per_address or self.open.total() >= self.total:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


def _refusal(gate: ConnectionGate, address: str) -> bytes:
    """A whole HTTP response (written before any request is read): 429 and a problem."""
    detail = (
        f"Too many open connections from {address} (at most {gate.per_address}, "
        f"{gate.total} in all); close some and retry."
    )
    body = orjson.dumps(
        {"title": "Too Many Connections", "detail": detail, "type": "about:blank", "status": 429}
    )
    head = (
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering HTTP-level errors (a request line or header
    it cannot parse, too long, ...) with a JSON problem instead of plain text.

    With a ``gate``, a connection beyond its caps gets a 429 problem and is closed before
    aiohttp sees it. aiohttp's ``keepalive_timeout`` also bounds how long a connection may
    take to send a request's head: a client that never finishes one is closed then.
    """

    def __init__(self, *args: Any, gate: ConnectionGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._address: str | None = None  # set once admitted through the gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._gate is not None:
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if peer else "?"
            if not self._gate.admit(address):
                assert isinstance(transport, asyncio.Transport)
                transport.write(_refusal(self._gate, address))
                transport.close()  # never handed to aiohttp: it has nothing to clean up
                return
            self._address = address
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._gate is not None and self._address is None:
            return  # refused: closing
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._gate is not None:
            if self._address is None:
                return
            self._gate.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if output started
        detail = message.splitlines()[0] if message and status != 500 else None
        response = _status_problem(status, detail)
        response.force_close()
        return response
