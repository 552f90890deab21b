"""How a careful client gets back what it missed: X's recovery features, or our extension.

A client keeps a *checkpoint*: a position in the stream, as a tweet id. It is the newest
tweet it committed, or, before its first commit, the start point it recorded when it first
connected (:func:`position_at`: the id just below every tweet created from then on). Tweet
ids are Snowflakes, so a position is also a time, and the time is all X's recovery features
take. Which way back a client has depends on its access level (fake_stream/README.md,
"Strict X"):

- ``recovery`` (X Enterprise): ``backfill_minutes`` (1-5) when the checkpoint is at most
  five minutes old; older, a recovery connection from the checkpoint's time, which
  re-streams the period up to its ``end_time`` and then disconnects.
- ``backfill`` (Enterprise without recovery jobs): ``backfill_minutes``; older than five
  minutes, the five there are, and what lies before them is lost.
- ``live`` (X Pro and below): no way back; what was created while nobody read is lost.
- ``since_id`` (this fake stream's extension, not X's): every tweet after the checkpoint.

Backfill and recovery re-send tweets the client may already hold: the sink must absorb
them (``Sink.commit_new``). ``backfill_scale`` is the fake stream's time scale for X's
windows (0.01: five minutes are 3 s); on X it is 1.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RESUMES",
    "Backoff",
    "Connect",
    "created_ms",
    "now_ms",
    "plan",
    "position_at",
]

#: The ways back, as the ``resume`` param of the careful variants names them.
RESUMES = ("recovery", "backfill", "live", "since_id")

TWEPOCH = 1288834974657  # X's Snowflake epoch (ms): ids are (ms - TWEPOCH) << 22 | ...
MAX_BACKFILL_MINUTES = 5
RECOVERY_WINDOW_S = 24 * 3600  # how far back a recovery connection reaches
#: Added to a checkpoint's age: the server measures the window from when it takes the
#: connect, a little after the client's clock read (and the clocks tick apart).
MARGIN_S = 0.5


def now_ms() -> int:
    """UNIX ms now: the clock tweet ids carry."""
    return int(time.time() * 1000)


def created_ms(tweet_id: int) -> int:
    """When the tweet ``tweet_id`` (or a position) was created, in UNIX ms."""
    return (tweet_id >> 22) + TWEPOCH


def position_at(ms: int) -> int:
    """The position just before every tweet created at UNIX ms ``ms`` or later."""
    return ((ms - TWEPOCH) << 22) - 1


@dataclass(frozen=True)
class Connect:
    """One connection to open: its query, and what it cannot give back.

    :param kind: ``live``, ``backfill``, ``recovery`` or ``since_id``.
    :param unreachable_ms: the span (ms) between the checkpoint and the oldest tweet this
        connection reaches: tweets created there are lost, by the level's limits.
    :param until: for a recovery connection, the position its ``end_time`` stands for
        (the checkpoint moves there once it completes).
    """

    kind: str
    params: dict[str, str] = field(default_factory=dict)
    unreachable_ms: int = 0
    until: int | None = None

    def detail(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params, "unreachable_ms": self.unreachable_ms}


def plan(resume: str, checkpoint: int | None, at_ms: int, scale: float = 1.0) -> Connect:
    """The connection a client at ``checkpoint`` opens at UNIX ms ``at_ms``."""
    if resume not in RESUMES:
        raise ValueError(f"resume: {resume!r} is not one of {', '.join(RESUMES)}")
    if checkpoint is None or resume == "live":
        return Connect("live")
    if resume == "since_id":
        return Connect("since_id", {"since_id": str(checkpoint)})
    since_ms = created_ms(checkpoint)
    age_s = max(0.0, (at_ms - since_ms) / 1000) + MARGIN_S
    minute_s = 60 * scale
    minutes = max(1, math.ceil(age_s / minute_s))
    if minutes <= MAX_BACKFILL_MINUTES:
        return Connect("backfill", {"backfill_minutes": str(minutes)})
    if resume == "recovery":
        oldest_ms = at_ms - int(RECOVERY_WINDOW_S * scale * 1000) + int(MARGIN_S * 1000)
        start_ms = max(since_ms, oldest_ms)
        end_ms = at_ms - at_ms % 1000  # X's times are whole seconds; end_time <= now
        if end_ms > start_ms:
            start_s = start_ms - start_ms % 1000  # earlier, never later: repeats, no gap
            return Connect(
                "recovery",
                {"start_time": _iso(start_s), "end_time": _iso(end_ms)},
                unreachable_ms=max(0, start_s - since_ms),
                until=position_at(end_ms),
            )
    reach_ms = int(MAX_BACKFILL_MINUTES * minute_s * 1000)
    return Connect(
        "backfill",
        {"backfill_minutes": str(MAX_BACKFILL_MINUTES)},
        unreachable_ms=max(0, at_ms - reach_ms - since_ms),
    )


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Backoff:
    """How long to wait before the next connect, after a failed one (X's guidance, scaled
    down to a run of seconds): a refused connect (429) waits for ``x-rate-limit-reset``
    when the connect budget is spent, else doubles from ``first_s`` up to ``most_s``; a
    network error grows linearly by ``first_s``. Each wait gets up to 25 % jitter, so two
    clients refused together do not come back together. A delivered tweet resets it."""

    def __init__(self, seed: int = 0, first_s: float = 0.25, most_s: float = 16.0) -> None:
        self.first_s, self.most_s = first_s, most_s
        self._random = random.Random(seed)
        self._http = 0.0
        self._network = 0.0

    def reset(self) -> None:
        self._http = self._network = 0.0

    def after_refusal(self, headers: Mapping[str, str], now_s: float) -> float:
        """Seconds to wait after an HTTP error response with ``headers`` (lower-case
        names, or a response's case-insensitive ones)."""
        self._http = min(self.most_s, self._http * 2 if self._http else self.first_s)
        wait = self._http
        if headers.get("x-rate-limit-remaining") == "0" and "x-rate-limit-reset" in headers:
            wait = max(wait, float(headers["x-rate-limit-reset"]) - now_s)
        return self._jitter(wait)

    def after_network_error(self) -> float:
        """Seconds to wait after a connection that failed or dropped without a response."""
        self._network = min(self.most_s, self._network + self.first_s)
        return self._jitter(self._network)

    def _jitter(self, wait: float) -> float:
        return wait * (1 + 0.25 * self._random.random())
