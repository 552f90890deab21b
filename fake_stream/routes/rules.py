"""``GET`` and ``POST /2/tweets/search/stream/rules``, with X's shapes and rate limit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from fake_stream.problems import (
    Problem,
    invalid_request,
    rules_cap_exceeded,
    too_many_requests,
)
from fake_stream.routes import STATE, check_params, json_body
from fake_stream.rules import MAX_RULES, RuleError
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
    """One page of rules in id order: ``max_results`` (1..1000, default 1000) of them, and
    ``meta.next_token`` to pass as ``pagination_token`` for the next page, as on X."""
    query = check_params(request, {"ids", "max_results", "pagination_token"})
    limit = query.get("max_results", "1000")
    if not (_is_digits(limit) and 1 <= int(limit) <= 1000):
        raise _bad_param("max_results", limit, "is not an integer between 1 and 1000")
    after = query.get("pagination_token")
    if after is not None and not (_is_digits(after) and len(after) <= 19):
        raise _bad_param("pagination_token", after, "is not a valid token")
    state, headers = _limited(request)
    wanted = set(query["ids"].split(",")) if "ids" in query else None
    start = int(after) if after is not None else 0
    rules = [r for r in state.rules if (wanted is None or r.id in wanted) and int(r.id) >= start]
    data = [r.to_json() for r in rules[: int(limit)]]
    meta: dict[str, Any] = {"sent": _sent(), "result_count": len(data)}
    if len(rules) > len(data):
        meta["next_token"] = rules[len(data)].id
    body: dict[str, Any] = {"meta": meta}
    if data:
        body["data"] = data
    return web.json_response(body, headers=headers)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _bad_param(name: str, value: str, message: str) -> Problem:
    return invalid_request(
        [
            {
                "parameters": {name: [value]},
                "message": f"The `{name}` query parameter value [{value}] {message}",
            }
        ]
    )


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
    """Validate every rule first; past the cap nothing is added (a 400), else the valid
    ones are (errors listed for the rest), or would be on a dry run."""
    valid: list[tuple[str, str]] = []
    errors = []
    planned: set[str] = set()  # values added earlier in this request
    for spec in specs:
        try:
            value, tag = state.rules.check(spec)
            if value in planned:
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
        planned.add(value)
        valid.append((value, tag))
    if len(state.rules) + len(valid) > MAX_RULES:
        raise rules_cap_exceeded(MAX_RULES)
    created: list[dict[str, str]] = []
    for value, tag in valid:
        if dry_run:
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
