"""X-style JSON problem responses and in-stream error/warning lines.

X answers errors with RFC 7807-like problem objects (``title``, ``detail``, ``type``,
``status``); invalid requests also list what was wrong under ``errors``. Every error this
server sends, from a route or from the HTTP parser itself, is one of these.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "FALLING_BEHIND",
    "OPERATIONAL_DISCONNECT",
    "Problem",
    "client_forbidden",
    "falling_behind",
    "invalid_request",
    "param_error",
    "problem_response",
    "rules_cap_exceeded",
]

_PROBLEMS = "https://api.twitter.com/2/problems/"


class Problem(Exception):
    """An error a handler raises; the middleware turns it into a JSON response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"title": title, "detail": detail, "type": type_, "status": status, **extra}
        self.headers = headers or {}
        self.close = close  # end the connection after the answer (e.g. unread body left)

    def response(self) -> web.Response:
        response = problem_response(self.status, self.body, self.headers)
        if self.close:
            response.force_close()
        return response


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def invalid_request(errors: list[dict[str, Any]]) -> Problem:
    """400 as X sends it for bad parameters: each error names ``parameters`` and a ``message``."""
    return Problem(
        400,
        "Invalid Request",
        "One or more parameters to your request was invalid.",
        _PROBLEMS + "invalid-request",
        errors=errors,
    )


def param_error(name: str, value: str, message: str) -> dict[str, Any]:
    """One entry of :func:`invalid_request`'s ``errors``: a parameter's value and why not."""
    return {
        "parameters": {name: [value]},
        "message": f"The `{name}` query parameter value [{value}] {message}",
    }


def client_forbidden(detail: str) -> Problem:
    """403 for a feature the app's access level does not include (backfill, recovery).
    X documents that these need Enterprise access, not the body it answers with: this
    shape (its ``client-forbidden`` problem type) is assumed."""
    return Problem(403, "Forbidden", detail, _PROBLEMS + "client-forbidden")


def rules_cap_exceeded(cap: int) -> Problem:
    """400 for a rules request that would take the project past its cap (nothing added)."""
    return Problem(
        400,
        "RulesCapExceeded",
        f"Rules cap reached: this project may hold at most {cap} rules; delete some first.",
        _PROBLEMS + "rule-cap",
    )


def unauthorized() -> Problem:
    return Problem(401, "Unauthorized", "Unauthorized")


def too_many_connections(headers: dict[str, str]) -> Problem:
    return Problem(
        429,
        "ConnectionException",
        "This stream is currently at the maximum allowed connection limit.",
        _PROBLEMS + "streaming-connection",
        headers=headers,
        connection_issue="TooManyConnections",
    )


def too_many_requests(headers: dict[str, str]) -> Problem:
    return Problem(429, "Too Many Requests", "Too Many Requests", headers=headers)


#: The in-stream error X sends before it closes a stream for its own reasons.
OPERATIONAL_DISCONNECT = (
    orjson.dumps(
        {
            "errors": [
                {
                    "title": "operational-disconnect",
                    "disconnect_type": "UpstreamOperationalDisconnect",
                    "detail": "This stream has been disconnected upstream for operational reasons.",
                    "type": _PROBLEMS + "operational-disconnect",
                }
            ]
        }
    )
    + b"\r\n"
)

FALLING_BEHIND = "FALLING_BEHIND"


def falling_behind(percent_full: int) -> bytes:
    """The stall warning line (v1.1's shape, sent when ``stall_warnings=true``)."""
    message = (
        "Your connection is falling behind and messages are being queued for delivery to you. "
        f"Your queue is now over {percent_full}% full. You will be disconnected when the queue "
        "is full."
    )
    return (
        orjson.dumps(
            {"warning": {"code": FALLING_BEHIND, "message": message, "percent_full": percent_full}}
        )
        + b"\r\n"
    )
