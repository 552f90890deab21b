"""HTTP routes, one module per API surface: the stream, its rules, the control API."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from fake_stream.problems import Problem, invalid_request
from fake_stream.state import StreamState

__all__ = ["STATE", "check_params", "json_body"]

STATE = web.AppKey("state", StreamState)


def check_params(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query as a dict; unknown or repeated parameters are a 400, as on X."""
    errors = []
    for name in sorted(set(request.query)):
        values = request.query.getall(name)
        if name not in allowed:
            errors.append(
                {
                    "parameters": {name: values},
                    "message": f"The query parameter [{name}] is not one of [{','.join(sorted(allowed))}]",
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
    """The request body parsed as JSON, or a 400 problem saying why it is not."""
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Problem(400, "Invalid Request", f"Request body is not valid JSON: {e}") from None
