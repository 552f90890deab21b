"""HTTP routes, one module per API surface: the stream, its rules, recent search, the control
API."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from fake_stream.problems import Problem, invalid_request
from fake_stream.state import StreamState

__all__ = ["MAX_BODY", "MAX_DEPTH", "STATE", "check_params", "json_body"]

STATE = web.AppKey("state", StreamState)

#: Largest request body accepted (rule and fault definitions are small).
MAX_BODY = 64 * 1024
#: Deepest nesting of arrays and objects accepted in a body (the deepest real one, a
#: piecewise profile, has 3 levels): echoing a 1,000-deep body overflowed the stack.
MAX_DEPTH = 32


def check_params(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query as a dict; unknown or repeated parameters are a 400, as on X."""
    errors = []
    for name in sorted(set(request.query)):
        values = request.query.getall(name)
        if name not in allowed:
            errors.append(
                {
                    "parameters": {name: values},
                    "message": f"The query parameter [{name}] is not one of "
                    f"[{','.join(sorted(allowed))}]",
                }
            )
        elif len(values) > 1:
            errors.append(
                {
                    "parameters": {name: values},
                    "message": f"Duplicate parameters are not allowed: the [{name}] parameter",
                }
            )
    if errors:
        raise invalid_request(errors)
    return dict(request.query)


async def json_body(request: web.Request) -> Any:
    """The request body parsed as JSON, or a 400 problem saying why it is not; a body over
    :data:`MAX_BODY` is a 413 (at once when its Content-Length says so: the client is not
    made to send megabytes first) and the connection is closed after the answer. A body
    that does not arrive within the server's ``request_timeout`` is a 408 (and a close).

    Strict JSON: ``NaN``, ``Infinity`` and numbers beyond a double are refused (orjson's
    parser), as is nesting deeper than :data:`MAX_DEPTH`.
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _too_large(f"Content-Length {request.content_length}")
    timeout = request.app[STATE].config.request_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
        raise _too_large("the body") from None
    except TimeoutError:
        raise Problem(
            408, "Request Timeout", f"The body did not arrive within {timeout} s.", close=True
        ) from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Problem(400, "Invalid Request", f"Request body is not valid JSON: {e}") from None
    if _deeper_than(value, MAX_DEPTH):
        raise Problem(400, "Invalid Request", f"Request body nests deeper than {MAX_DEPTH} levels.")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest more than ``limit`` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _too_large(what: str) -> Problem:
    return Problem(
        413,
        "Payload Too Large",
        f"{what} exceeds the largest request body accepted, {MAX_BODY} bytes.",
        close=True,
    )
