"""``GET`` and ``POST /2/tweets/search/stream/rules``, with X's shapes and rate limit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from fake_stream.problems import Problem, invalid_request, too_many_requests
from fake_stream.routes import STATE, check_params, json_body
from fake_stream.rules import RuleError
from fake_stream.state import StreamState

__all__ = ["routes"]

routes = web.RouteTableDef()
_PATH = "/2/tweets/search/stream/rules"


def _sent() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _limited(request: web.Request) -> tuple[StreamState, dict[str, str]]:
    state: StreamState = request.app[STATE]
    allowed, headers = state.rules_limiter.hit(request["token"])
    if not allowed:
        raise too_many_requests(headers)
    return state, headers


@routes.get(_PATH)
async def list_rules(request: web.Request) -> web.Response:
    query = check_params(request, {"ids", "max_results", "pagination_token"})
    limit = query.get("max_results", "1000")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 1000):
        raise invalid_request(
            [
                {
                    "parameters": {"max_results": [limit]},
                    "message": f"The `max_results` query parameter value [{limit}] is not "
                    "an integer between 1 and 1000",
                }
            ]
        )
    state, headers = _limited(request)
    wanted = set(query["ids"].split(",")) if "ids" in query else None
    data = [r.to_json() for r in state.rules if wanted is None or r.id in wanted]
    body: dict[str, Any] = {"meta": {"sent": _sent(), "result_count": len(data)}}
    if data:
        body["data"] = data
    return web.json_response(body, headers=headers)


@routes.post(_PATH)
async def change_rules(request: web.Request) -> web.Response:
    query = check_params(request, {"dry_run", "delete_all"})
    for flag in ("dry_run", "delete_all"):
        if query.get(flag, "false") not in ("true", "false"):
            raise invalid_request(
                [
                    {
                        "parameters": {flag: [query[flag]]},
                        "message": f"[{flag}] must be true or false",
                    }
                ]
            )
    dry_run = query.get("dry_run") == "true"
    state, headers = _limited(request)
    if query.get("delete_all") == "true":
        return web.json_response(
            _delete(state, [r.id for r in state.rules], dry_run), headers=headers
        )
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1 or not {"add", "delete"} & set(body):
        raise Problem(
            400, "Invalid Request", 'The body must be {"add": [...]} or {"delete": {"ids": [...]}}.'
        )
    if "add" in body:
        if not isinstance(body["add"], list) or not body["add"]:
            raise Problem(400, "Invalid Request", "'add' must be a non-empty list of rules.")
        return web.json_response(_add(state, body["add"], dry_run), headers=headers)
    ids = body["delete"].get("ids") if isinstance(body["delete"], dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise Problem(400, "Invalid Request", '\'delete\' must be {"ids": ["<rule id>", ...]}.')
    return web.json_response(_delete(state, ids, dry_run), headers=headers)


def _add(state: StreamState, specs: list[Any], dry_run: bool) -> dict[str, Any]:
    created, errors = [], []
    planned: set[str] = set()  # values a dry run would have added by now
    for spec in specs:
        try:
            value, tag = state.rules.check(spec)
            if value in planned:  # a dry run must predict the real request's duplicates
                raise RuleError("DuplicateRule", spec, "Duplicate rule value.")
        except RuleError as e:
            errors.append(
                {
                    "value": e.value,
                    "title": e.title,
                    "detail": str(e),
                    "type": "https://api.twitter.com/2/problems/invalid-rules",
                }
            )
            continue
        if dry_run:
            planned.add(value)
            created.append({"value": value, "tag": tag})
        else:
            created.append(state.rules.add(value, tag).to_json())
            state.ledger.event("rule_added", tag, **created[-1])
    body: dict[str, Any] = {
        "meta": {
            "sent": _sent(),
            "summary": {
                "created": len(created),
                "not_created": len(errors),
                "valid": len(created),
                "invalid": len(errors),
            },
        }
    }
    if created:
        body["data"] = created
    if errors:
        body["errors"] = errors
    return body


def _delete(state: StreamState, ids: list[str], dry_run: bool) -> dict[str, Any]:
    deleted, errors = 0, []
    for rule_id in ids:
        if state.rules.get(rule_id) is None:
            errors.append(
                {
                    "id": rule_id,
                    "title": "Not Found Error",
                    "detail": f"Rule {rule_id} does not exist.",
                    "type": "https://api.twitter.com/2/problems/resource-not-found",
                }
            )
            continue
        if not dry_run:
            state.rules.delete(rule_id)
            state.ledger.event("rule_deleted", None, id=rule_id)
        deleted += 1
    body: dict[str, Any] = {
        "meta": {"sent": _sent(), "summary": {"deleted": deleted, "not_deleted": len(errors)}}
    }
    if errors:
        body["errors"] = errors
    return body
