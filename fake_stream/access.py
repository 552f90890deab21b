"""X's access levels and its stream's recovery rules: which query parameters the v2 stream
accepts, what Pro and Enterprise may use, and the times of a recovery connection.

Sources: X's "Recovery and redundancy" pages
(https://docs.x.com/x-api/fundamentals/recovery-and-redundancy and
https://docs.x.com/x-api/posts/filtered-stream/integrate/recovery-and-redundancy-features):
redundant connections (two on the filtered stream), ``backfill_minutes`` (1..5) and
recovery (``start_time``/``end_time`` within the past 24 hours, two concurrent jobs) are
Enterprise features. ``backfill_scale`` shrinks X's windows so a short run can cross them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from fake_stream.problems import client_forbidden, param_error

__all__ = [
    "ACCESS_LEVELS",
    "BACKFILL_MAX_S",
    "FIELD_PARAMS",
    "LEVELS",
    "RECENT_WINDOW_S",
    "RECOVERY_JOBS",
    "RECOVERY_WINDOW_S",
    "Level",
    "check_features",
    "format_time",
    "parse_time",
    "recovery_errors",
    "stream_params",
]


@dataclass(frozen=True)
class Level:
    """What one access level may do on the stream."""

    name: str
    title: str  # as X writes it in prose
    stream_connections: int  # simultaneous stream connections per token, at most
    backfill: bool
    recovery: bool


LEVELS = {
    "pro": Level("pro", "Pro", 1, backfill=False, recovery=False),
    "enterprise": Level("enterprise", "Enterprise", 2, backfill=True, recovery=True),
}
ACCESS_LEVELS = tuple(LEVELS)

#: Concurrent recovery connections per token (X: "two recovery jobs"). They are counted
#: apart from ``stream_connections``: X states the two limits separately.
RECOVERY_JOBS = 2
#: X's recovery window (24 hours) and longest backfill (5 minutes), before backfill_scale.
RECOVERY_WINDOW_S = 86_400
BACKFILL_MAX_S = 300
#: How far back recent search reaches (X: "the last seven days"), before backfill_scale.
RECENT_WINDOW_S = 7 * 86_400

# X's field/expansion parameters: accepted and ignored (every message carries the author).
_FIELDS = frozenset(
    {"tweet.fields", "expansions", "user.fields", "media.fields", "place.fields", "poll.fields"}
)
#: The same set, for the other endpoints that take X's fields (recent search).
FIELD_PARAMS = _FIELDS
_RECOVERY = frozenset({"start_time", "end_time"})
#: What X's v2 endpoints accept: recovery is the filtered stream's only.
_X_FILTERED = _FIELDS | {"backfill_minutes"} | _RECOVERY
_X_SAMPLE = _FIELDS | {"backfill_minutes"}
#: Ours: resume after an id, and v1.1's FALLING_BEHIND warnings.
_OURS = frozenset({"since_id", "stall_warnings"})


def stream_params(filtered: bool, strict_x: bool) -> set[str]:
    """The query parameters a stream endpoint accepts. Without ``strict_x`` both endpoints
    take ours and X's recovery too."""
    if strict_x:
        return set(_X_FILTERED if filtered else _X_SAMPLE)
    return set(_X_FILTERED | _OURS)


def check_features(level: str, query: dict[str, str]) -> None:
    """403 for a backfill or recovery asked of a level without it."""
    rules = LEVELS[level]
    asked = None
    if "backfill_minutes" in query and not rules.backfill:
        asked = "Backfill (backfill_minutes)"
    elif _RECOVERY & set(query) and not rules.recovery:
        asked = "Recovery (start_time, end_time)"
    if asked is not None:
        raise client_forbidden(
            f"{asked} requires Enterprise access; this app has {rules.title} access."
        )


_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{3})?Z"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FORMAT = "is not a time as YYYY-MM-DDTHH:mm:ssZ (UTC)"


def parse_time(text: str) -> int | None:
    """UNIX ms of ``YYYY-MM-DDTHH:mm:ssZ`` or ``...ss.sssZ`` (UTC); None if not one."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    *fields, fraction = match.groups()
    try:
        moment = dt.datetime(*map(int, fields), tzinfo=dt.UTC)  # type: ignore[misc]
    except ValueError:  # month 13, 30 February...
        return None
    ms = (moment - _EPOCH) // dt.timedelta(milliseconds=1)
    return ms + (int(fraction[1:]) if fraction else 0)


def format_time(ms: int) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` of UNIX ms (how :func:`parse_time` reads it back)."""
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def recovery_errors(
    query: dict[str, str], now_ms: int, window_s: float
) -> tuple[int | None, int | None, list[dict[str, Any]]]:
    """``(start_ms, end_ms, errors)`` of a recovery request; ``(None, None, [])`` if it
    asks none. ``end_ms`` defaults to ``now_ms``; the times are the ids' clock (UNIX ms of
    stream time), ``window_s`` the recovery window at the server's scale."""
    if not _RECOVERY & set(query):
        return None, None, []
    start_text = query.get("start_time")
    end_text = query.get("end_time", "")
    if start_text is None:
        why = "needs start_time: a recovery streams from start_time to end_time"
        return None, None, [param_error("end_time", end_text, why)]
    start = parse_time(start_text)
    end = parse_time(end_text) if "end_time" in query else now_ms
    errors = []
    if start is None:
        errors.append(param_error("start_time", start_text, _FORMAT))
    if end is None:
        errors.append(param_error("end_time", end_text, _FORMAT))
    if start is None or end is None:
        return None, None, errors
    oldest = now_ms - round(window_s * 1000)
    if start < oldest:
        why = f"must be on or after {format_time(oldest)} (the recovery window: {window_s:g} s)"
        errors.append(param_error("start_time", start_text, why))
    if end > now_ms:
        errors.append(param_error("end_time", end_text, "must not be in the future"))
    elif end <= start:
        if "end_time" in query:
            errors.append(param_error("end_time", end_text, "must be after start_time"))
        else:
            errors.append(param_error("start_time", start_text, "must be in the past"))
    return start, end, errors
