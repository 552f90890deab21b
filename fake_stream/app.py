"""The aiohttp application: routes, bearer auth, and errors as X-style JSON problems."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from fake_stream.problems import Problem, problem_response
from fake_stream.routes import MAX_BODY, STATE, control, rules, stream
from fake_stream.state import StreamState

__all__ = ["MAX_BODY", "ProblemRequestHandler", "create_app"]

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
    app.add_routes(control.routes)
    return app


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering HTTP-level errors (a request line or header
    it cannot parse, too long, ...) with a JSON problem instead of plain text."""

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
