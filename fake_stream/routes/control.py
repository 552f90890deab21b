"""The control API under ``/_control/``, Toxiproxy-style: stats, rate, faults, ledger.

See fake_stream/README.md for every endpoint with examples.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from aiohttp import web

from fake_stream.faults import FaultError, build
from fake_stream.ledger import LedgerReader
from fake_stream.problems import Problem
from fake_stream.rates import parse_profile
from fake_stream.routes import STATE, check_params, json_body
from fake_stream.state import StreamState

__all__ = ["routes"]

routes = web.RouteTableDef()


def _state(request: web.Request) -> StreamState:
    check_params(request, set())
    return request.app[STATE]


@routes.get("/_control/stats")
async def stats(request: web.Request) -> web.Response:
    return web.json_response(_state(request).stats())


@routes.get("/_control/rate")
async def get_rate(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(
        {
            "profile": state.timeline.profile.to_json(),
            "rate_now": state.timeline.profile.rate_at(state.clock.stream_time()),
        }
    )


@routes.put("/_control/rate")
async def set_rate(request: web.Request) -> web.Response:
    """Body: a rate profile spec; it starts now (its time 0 is the current instant).

    Never with a ``file`` (``parse_profile`` refuses one unless told otherwise, however the
    spec is quoted): over HTTP it would read any file the server can read. Files are for
    ``--profile`` at start-up; send ``points`` instead. The profile with its history must
    stay within ``MAX_SEGMENTS`` too.
    """
    state = _state(request)
    spec = await json_body(request)
    try:
        state.set_profile(parse_profile(spec))
    except ValueError as e:
        raise Problem(400, "Invalid Request", str(e)) from None
    return web.json_response({"profile": state.timeline.profile.to_json()})


@routes.get("/_control/faults")
async def list_faults(request: web.Request) -> web.Response:
    return web.json_response([spec.to_json() for spec in _state(request).faults.values()])


@routes.post("/_control/faults")
async def add_fault(request: web.Request) -> web.Response:
    """Body: a fault definition. Without ``schedule.at`` it is active from now on."""
    state = _state(request)
    definition = await json_body(request)
    if isinstance(definition, dict) and isinstance(definition.get("schedule", {}), dict):
        schedule = dict(definition.get("schedule", {}))
        schedule.setdefault("at", round(state.clock.stream_time(), 3))
        definition = {**definition, "schedule": schedule}
    try:
        spec = build(definition)
    except FaultError as e:
        raise Problem(400, "Invalid Fault", str(e)) from None
    if spec.name in state.faults:
        raise Problem(409, "Conflict", f"a fault named {spec.name!r} exists; delete it first")
    state.add_fault(spec)
    return web.json_response(spec.to_json(), status=201)


@routes.get("/_control/faults/{name}")
async def get_fault(request: web.Request) -> web.Response:
    spec = _state(request).faults.get(request.match_info["name"])
    if spec is None:
        raise Problem(404, "Not Found Error", f"no fault named {request.match_info['name']!r}")
    return web.json_response(spec.to_json())


@routes.delete("/_control/faults/{name}")
async def remove_fault(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.match_info["name"]
    if name not in state.faults:
        raise Problem(404, "Not Found Error", f"no fault named {name!r}")
    return web.json_response(state.remove_fault(name).to_json())


@routes.post("/_control/reset")
async def reset(request: web.Request) -> web.Response:
    """Remove every fault (Toxiproxy's reset); tweets and the ledger go on."""
    state = _state(request)
    removed = [state.remove_fault(name).to_json() for name in list(state.faults)]
    return web.json_response({"removed": removed})


@routes.post("/_control/keepalive")
async def keepalive(request: web.Request) -> web.Response:
    """A keep-alive on every open stream now, not after ``keepalive`` s of silence: a
    reader blocked on a quiet stream wakes (the harness asks before it ends a run)."""
    state = _state(request)
    for session in list(state.sessions.values()):
        session.keepalive_now()
    return web.json_response({"connections": len(state.sessions)})


@routes.post("/_control/ledger/flush")
async def flush_ledger(request: web.Request) -> web.Response:
    state = _state(request)
    state.ledger.flush()
    return web.json_response({"path": str(state.ledger.path), "created": state.timeline.total})


@routes.get("/_control/ledger")
async def read_ledger(request: web.Request) -> web.Response:
    """Flush, then return the whole ledger as runs (compact: never one row per tweet).

    Read and serialised in a worker thread: a long run's ledger is tens of megabytes, and
    the event loop must go on creating and streaming tweets meanwhile.
    """
    state = _state(request)
    state.ledger.flush()
    body = await asyncio.get_running_loop().run_in_executor(None, _ledger_json, state.ledger.path)
    return web.Response(body=body, content_type="application/json")


def _ledger_json(path: Path) -> bytes:
    reader = LedgerReader(path)
    return orjson.dumps(
        {
            "meta": reader.meta,
            "created": reader.created_total,
            "connections": reader.connections(),
            # The ledger's rows as they are: deliveries (conn_id, seq, first, stop,
            # status), drops (conn_id, first, stop, reason, stage).
            "deliveries": reader.deliveries(),  # orjson writes dataclasses as objects
            "drops": reader.drops(),
            "events": reader.events(),
        }
    )
