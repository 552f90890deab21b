"""X's recent search over the stream's own tweets: its parameters, the searchable range,
newest-first pages and the opaque ``next_token``.

The same seeded timeline as the stream: the tweet created at index ``i`` has the same id,
time, text and author in both, so a poller and a stream consumer share one ground truth.
What is searchable at a request: every tweet created so far (no indexing lag) and at most
``RECENT_WINDOW_S * backfill_scale`` seconds old (X: seven days).

Bounds, as X documents them: ``since_id`` and ``until_id`` are exclusive; ``start_time`` is
inclusive and ``end_time`` exclusive (UTC, ``YYYY-MM-DDTHH:mm:ssZ``, milliseconds allowed);
with both ``since_id`` and ``start_time``, only ``since_id`` is used. A ``since_id`` or
``until_id`` older than the window, or a ``start_time`` before it, is a 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from fake_stream import access, snowflake
from fake_stream.problems import invalid_request, param_error
from fake_stream.query import Compiled, Matcher, Pools, QueryError

if TYPE_CHECKING:
    from fake_stream.state import StreamState
    from fake_stream.tweets import TweetSource

__all__ = [
    "MAX_RESULTS",
    "MIN_RESULTS",
    "PARAMS",
    "Ask",
    "Page",
    "decode_token",
    "encode_token",
    "find",
    "matcher_for",
    "parse_params",
    "render",
]

MIN_RESULTS, MAX_RESULTS, DEFAULT_RESULTS = 10, 100, 10
#: The query parameters X's recent search takes (``pagination_token``: the newer name of
#: ``next_token``; either works).
PARAMS = frozenset(
    {
        "query", "since_id", "until_id", "start_time", "end_time", "max_results",
        "next_token", "pagination_token", "sort_order",
    }
) | access.FIELD_PARAMS  # fmt: skip
_SORT_ORDERS = ("recency", "relevancy")  # relevancy: the fake ranks by recency too
_TOKEN = struct.Struct(">BQQI")  # version, cursor, lower bound, fingerprint of the ask
_TOKEN_VERSION = 1
_TOKEN_LEN = 40  # base32 characters of the token and its CRC (25 bytes)
_CHUNK = 65_536  # tweets matched per step of a scan; the event loop runs between steps


@dataclass(frozen=True)
class Ask:
    """One search request, checked: scan ``[lo, cursor)`` newest first for ``query``."""

    query: Compiled
    lo: int
    cursor: int
    max_results: int
    fingerprint: int  # of the query and its bounds: a next_token only fits its own ask


@dataclass(frozen=True)
class Page:
    """What one request answers: tweet indexes, newest first, and the next page's token."""

    indexes: np.ndarray
    next_token: str | None


def matcher_for(tweets: TweetSource) -> Matcher:
    """A query matcher over the tweet factory's pools."""
    langs, texts = zip(*tweets.text_pool, strict=True)
    users = tweets.user_pool
    return Matcher(Pools(texts, langs, [u["username"] for u in users], [u["id"] for u in users]))


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63


def parse_params(query: dict[str, str], state: StreamState, matcher: Matcher) -> Ask:
    """Check a request's parameters (names already checked) against the stream now; a 400
    listing every bad one, each named."""
    errors: list[dict[str, Any]] = []
    timeline, t0_ms = state.timeline, state.clock.t0_ms
    now_ms = t0_ms + timeline.slots
    oldest_ms = now_ms - round(state.recent_window * 1000)
    oldest = access.format_time(oldest_ms)
    lo = timeline.first_index_at(oldest_ms - t0_ms)
    hi = timeline.total

    compiled = None
    text = query.get("query")
    if not text or not text.strip():
        errors.append(
            {
                "parameters": {"query": [text] if text else []},
                "message": "The `query` query parameter can not be empty",
            }
        )
    else:
        try:
            compiled = matcher.compile(text)
        except QueryError as e:
            errors.append(
                {
                    "parameters": {"query": [text]},
                    "message": f"There were errors processing your request: {e}",
                }
            )

    ids: dict[str, int] = {}
    for name in ("since_id", "until_id"):
        if name in query:
            value = query[name]
            if not _is_id(value):
                errors.append(param_error(name, value, "is not a valid tweet id"))
            elif snowflake.decode_ms(int(value)) < oldest_ms:
                why = f"must be a tweet id created after {oldest} (the recent window)"
                errors.append(param_error(name, value, why))
            else:
                ids[name] = int(value)
    times: dict[str, int] = {}
    for name in ("start_time", "end_time"):
        if name in query:
            ms = access.parse_time(query[name])
            if ms is None:
                errors.append(
                    param_error(name, query[name], "is not a time as YYYY-MM-DDTHH:mm:ssZ")
                )
            else:
                times[name] = ms
    if "since_id" in ids:
        times.pop("start_time", None)  # X: "only since_id will be used"
        lo = max(lo, timeline.index_after(ids["since_id"]))
    if "until_id" in ids:
        hi = min(hi, timeline.index_after(ids["until_id"] - 1))  # ids below until_id
    if "start_time" in times:
        if times["start_time"] < oldest_ms:
            why = f"must be on or after {oldest} (the recent window)"
            errors.append(param_error("start_time", query["start_time"], why))
        lo = max(lo, timeline.first_index_at(times["start_time"] - t0_ms))
    if "end_time" in times:
        end_ms = times["end_time"]
        if end_ms > now_ms:
            errors.append(param_error("end_time", query["end_time"], "must not be in the future"))
        elif "start_time" in times and end_ms <= times["start_time"]:
            errors.append(param_error("end_time", query["end_time"], "must be after start_time"))
        hi = min(hi, timeline.first_index_at(end_ms - t0_ms))

    size = query.get("max_results", str(DEFAULT_RESULTS))
    if not (size.isascii() and size.isdigit() and MIN_RESULTS <= int(size) <= MAX_RESULTS):
        errors.append(
            param_error("max_results", size, f"is not between {MIN_RESULTS} and {MAX_RESULTS}")
        )
    order = query.get("sort_order", "recency")
    if order not in _SORT_ORDERS:
        errors.append(param_error("sort_order", order, f"is not one of {list(_SORT_ORDERS)}"))

    fingerprint = _fingerprint(query)
    token_name = next((n for n in ("next_token", "pagination_token") if n in query), None)
    cursor = hi
    if token_name is not None:
        if "next_token" in query and "pagination_token" in query:
            why = "cannot be combined with pagination_token"
            errors.append(param_error("next_token", query["next_token"], why))
        decoded = decode_token(query[token_name])
        if decoded is None:
            errors.append(param_error(token_name, query[token_name], "is not a valid token"))
        elif decoded[2] != fingerprint:
            why = "was issued for another query or other bounds"
            errors.append(param_error(token_name, query[token_name], why))
        else:
            # The token's bound, unless tweets aged out of the window since: X's is moving.
            cursor, lo = min(decoded[0], hi), max(decoded[1], lo)
    if errors:
        raise invalid_request(errors)
    assert compiled is not None
    return Ask(compiled, lo, max(cursor, lo), int(size), fingerprint)


def _fingerprint(query: dict[str, str]) -> int:
    """What a token must be reused with: the query and its bounds (not the page size)."""
    names = ("query", "since_id", "until_id", "start_time", "end_time")
    return zlib.crc32("\0".join(query.get(n, "") for n in names).encode())


def encode_token(cursor: int, lo: int, fingerprint: int) -> str:
    """An opaque token: where the next page starts (exclusive), its lower bound, the ask."""
    body = _TOKEN.pack(_TOKEN_VERSION, cursor, lo, fingerprint)
    raw = body + struct.pack(">I", zlib.crc32(body))
    return base64.b32encode(raw).decode().lower()


def decode_token(token: str) -> tuple[int, int, int] | None:
    """``(cursor, lo, fingerprint)`` of a token :func:`encode_token` made; None otherwise."""
    if len(token) != _TOKEN_LEN or not token.isascii():
        return None
    try:
        raw = base64.b32decode(token.upper())
    except (binascii.Error, ValueError):
        return None
    body, (crc,) = raw[: _TOKEN.size], struct.unpack(">I", raw[_TOKEN.size :])
    version, cursor, lo, fingerprint = _TOKEN.unpack(body)
    if version != _TOKEN_VERSION or crc != zlib.crc32(body) or lo > cursor:
        return None
    return cursor, lo, fingerprint


async def find(ask: Ask, tweets: TweetSource) -> Page:
    """The newest ``max_results`` matches below ``ask.cursor``, and a token if more follow.

    Scans newest first in steps, yielding to the event loop between them: a rare query over
    a long window reads millions of indexes, and the stream must not stall meanwhile.
    """
    wanted = ask.max_results + 1  # one more than a page: is there a next one?
    found: list[np.ndarray] = []
    count, top = 0, ask.cursor
    while ask.query.possible and top > ask.lo and count < wanted:
        bottom = max(ask.lo, top - _CHUNK)
        indexes = np.arange(bottom, top, dtype=np.int64)
        hits = indexes[ask.query(*tweets.choices(indexes))][::-1][: wanted - count]
        found.append(hits)
        count += len(hits)
        top = bottom
        if top > ask.lo and count < wanted:
            await asyncio.sleep(0)
    picked = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    page = picked[: ask.max_results]
    token = None
    if len(picked) > ask.max_results:
        token = encode_token(int(page[-1]), ask.lo, ask.fingerprint)
    return Page(page, token)


def render(page: Page, state: StreamState) -> bytes:
    """The response body as X shapes it: ``data`` newest first, the authors under
    ``includes.users``, ``meta``; only ``{"meta": {"result_count": 0}}`` when empty.

    Each tweet is rendered as the stream renders it (the sample stream's line), then split
    into its ``data`` and its author: the two endpoints cannot drift apart.
    """
    if not len(page.indexes):
        return orjson.dumps({"meta": {"result_count": 0}})
    ids, unix_ms = state.timeline.locate(page.indexes)
    data, users = [], {}
    for line in state.tweets.lines(page.indexes, ids, unix_ms, None):
        message = orjson.loads(line)
        data.append(message["data"])
        for user in message["includes"]["users"]:
            users.setdefault(user["id"], user)
    meta: dict[str, Any] = {
        "newest_id": data[0]["id"],
        "oldest_id": data[-1]["id"],
        "result_count": len(data),
    }
    if page.next_token is not None:
        meta["next_token"] = page.next_token
    return orjson.dumps({"data": data, "includes": {"users": list(users.values())}, "meta": meta})
