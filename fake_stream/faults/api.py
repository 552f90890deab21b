"""API faults: what X's stream itself does wrong, at the HTTP and message level.

:class:`HttpErrorFault` is continuous (a connect made while it is active gets the error);
the others are one-shot :class:`MessageFault` s: they fire once per activation on each
connection, or every ``schedule.every_messages`` tweets, each firing subject to
``probability``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from fake_stream.faults.base import (
    Batch,
    ConnectFault,
    EndConnection,
    FaultContext,
    FaultError,
    MessageFault,
    register,
)
from fake_stream.problems import OPERATIONAL_DISCONNECT, Problem

__all__ = ["DisconnectFault", "DuplicateFault", "HttpErrorFault", "MalformedFault", "ReorderFault"]

_STATUS_TITLES = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@register("http_error")
@dataclass(frozen=True)
class HttpErrorFault(ConnectFault):
    """Answers stream connects with HTTP ``status`` (429, 500 or 503) and a problem body."""

    status: Literal[429, 500, 503] = 503

    def on_connect(self, ctx: FaultContext) -> web.StreamResponse | None:
        ctx.record("rejected", status=self.status)
        title = _STATUS_TITLES[self.status]
        return Problem(self.status, title, title).response()


@register("disconnect")
@dataclass(frozen=True)
class DisconnectFault(MessageFault):
    """Sends X's operational-disconnect error line and closes the stream cleanly; the
    tweets of the write from that point on are not sent."""

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        for index in batch.indexes[position:]:
            if index >= 0:
                batch.withheld.append((index, f"fault:{ctx.spec.name}", "queued"))
        del batch.lines[position:], batch.indexes[position:]
        ctx.record("disconnect", at_tweet=ctx.conn.tweets_sent + position)
        batch.end = EndConnection(f"fault:{ctx.spec.name}", "clean", OPERATIONAL_DISCONNECT)


@register("malformed")
@dataclass(frozen=True)
class MalformedFault(MessageFault):
    """Corrupts the stream: ``truncate`` cuts a tweet's line in half (that tweet is lost,
    and recorded so); ``garbage`` inserts a line of invalid JSON before it."""

    mode: Literal["truncate", "garbage"] = "truncate"

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        if position >= len(batch.lines):
            return
        if self.mode == "garbage":
            batch.lines.insert(position, b'{"data":{"id":"14603237370356\r\n')
            batch.indexes.insert(position, -1)
            ctx.record("garbage_line", before_tweet=batch.indexes[position + 1])
            return
        line, index = batch.lines[position], batch.indexes[position]
        batch.lines[position] = line[: len(line) // 2] + b"\r\n"
        batch.indexes[position] = -1
        if index >= 0:
            batch.withheld.append((index, f"fault:{ctx.spec.name}", "fault"))
        ctx.record("truncated", tweet_index=index)


@register("duplicate")
@dataclass(frozen=True)
class DuplicateFault(MessageFault):
    """Delivers a tweet twice in a row (X's backfill makes clients see repeats too)."""

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        if position >= len(batch.lines) or batch.indexes[position] < 0:
            return
        batch.lines.insert(position + 1, batch.lines[position])
        batch.indexes.insert(position + 1, batch.indexes[position])
        ctx.record("duplicated", tweet_index=batch.indexes[position])


@register("reorder")
@dataclass(frozen=True)
class ReorderFault(MessageFault):
    """Delivers the next ``window`` tweets in a shuffled order (never the original one)."""

    window: int = 2

    def __post_init__(self) -> None:
        if self.window < 2:
            raise FaultError(f"window: expected >= 2, got {self.window!r}")

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        stop = min(position + self.window, len(batch.lines))
        if stop - position < 2:
            return
        order = list(range(position, stop))
        while order == sorted(order):
            ctx.rng.shuffle(order)
        batch.lines[position:stop] = [batch.lines[i] for i in order]
        batch.indexes[position:stop] = [batch.indexes[i] for i in order]
        ctx.record("reordered", tweet_indexes=batch.indexes[position:stop])
