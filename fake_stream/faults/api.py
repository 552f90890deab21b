"""API faults: what X's stream itself does wrong, at the HTTP and message level.

:class:`HttpErrorFault` is continuous (a connect made while it is active gets the error);
the others are one-shot :class:`MessageFault` s: they fire once per activation on each
connection, or every ``schedule.every_messages`` tweets, each firing subject to
``probability``. A firing whose position is outside the write (the schedule's mark was
already passed) does nothing: a negative position must never pick a line from the end.
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


def _in_batch(batch: Batch, position: int) -> bool:
    return 0 <= position < len(batch.lines)


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
        # ``position == len(lines)``: the tweet was held back by another fault; the
        # disconnect still happens (the held tweet is then never sent).
        if not 0 <= position <= len(batch.lines):
            return
        for index in batch.indexes[position:]:
            if index >= 0:
                batch.withheld.append((index, f"fault:{ctx.spec.name}", "queued"))
        before = batch.indexes[position] if position < len(batch.indexes) else None
        ctx.record("disconnect", before_tweet=before)
        del batch.lines[position:], batch.indexes[position:]
        batch.end = EndConnection(f"fault:{ctx.spec.name}", "clean", OPERATIONAL_DISCONNECT)


@register("malformed")
@dataclass(frozen=True)
class MalformedFault(MessageFault):
    """Corrupts the stream: ``truncate`` cuts a tweet's line in half (that tweet is lost,
    and recorded so); ``garbage`` inserts a line of invalid JSON before it."""

    mode: Literal["truncate", "garbage"] = "truncate"

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        if not _in_batch(batch, position):
            return
        if self.mode == "garbage":
            batch.lines.insert(position, b'{"data":{"id":"14603237370356\r\n')
            batch.indexes.insert(position, -1)
            ctx.record("garbage_line", before_tweet=batch.indexes[position + 1])
            return
        line, index = batch.lines[position], batch.indexes[position]
        cut = len(line) // 2
        while cut and line[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        batch.lines[position] = line[:cut] + b"\r\n"
        batch.indexes[position] = -1
        if index >= 0:
            batch.withheld.append((index, f"fault:{ctx.spec.name}", "fault"))
        ctx.record("truncated", tweet_index=index)


@register("duplicate")
@dataclass(frozen=True)
class DuplicateFault(MessageFault):
    """Delivers a tweet twice in a row (X's backfill makes clients see repeats too)."""

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        if not _in_batch(batch, position) or batch.indexes[position] < 0:
            return
        batch.lines.insert(position + 1, batch.lines[position])
        batch.indexes.insert(position + 1, batch.indexes[position])
        ctx.record("duplicated", tweet_index=batch.indexes[position])


@register("reorder")
@dataclass(frozen=True)
class ReorderFault(MessageFault):
    """Delivers the next ``window`` tweets in a shuffled order (never the original one); at
    the end of a write, holds the last tweet back until after the next write's first."""

    window: int = 2

    def __post_init__(self) -> None:
        if self.window < 2:
            raise FaultError(f"window: expected >= 2, got {self.window!r}")

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        if not _in_batch(batch, position):
            return
        stop = min(position + self.window, len(batch.lines))
        if stop - position < 2:
            # The write ends here (a slow stream writes one tweet at a time): hold the
            # tweet back so it goes out after the next one.
            ctx.record("held_back", tweet_indexes=batch.hold(position))
            return
        order = list(range(position, stop))
        while order == sorted(order):
            ctx.rng.shuffle(order)
        batch.lines[position:stop] = [batch.lines[i] for i in order]
        batch.indexes[position:stop] = [batch.indexes[i] for i in order]
        ctx.record("reordered", tweet_indexes=batch.indexes[position:stop])
