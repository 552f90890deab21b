"""The running server's state, and the two loops that move it: generation and flushing."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from fake_stream.access import RECENT_WINDOW_S, RECOVERY_WINDOW_S
from fake_stream.config import ServerConfig
from fake_stream.faults import FaultSpec, build
from fake_stream.ledger import LedgerWriter
from fake_stream.rates import RateProfile
from fake_stream.replay import ReplayProfile, ReplayTweets
from fake_stream.rules import RuleSet
from fake_stream.search import matcher_for
from fake_stream.timeline import Timeline
from fake_stream.tweets import TweetFactory, TweetSource

if TYPE_CHECKING:
    from fake_stream.session import StreamSession

__all__ = ["Clock", "RateLimiter", "StreamState"]


class Clock:
    """Stream time: seconds since start on the monotonic clock, and the UNIX start ms."""

    def __init__(self, t0_ms: int | None) -> None:
        self._start = time.monotonic()
        #: Wall-clock time of slot 0. Equal to ``t0_ms`` unless a start time was pinned: then
        #: ids carry the pinned times while this says when the stream really started.
        self.t0_wall = time.time()
        self.t0_ms = t0_ms if t0_ms is not None else int(self.t0_wall * 1000)

    def stream_time(self) -> float:
        return time.monotonic() - self._start

    def slot_now(self) -> int:
        """The millisecond slot being created right now (earlier slots are complete)."""
        return int(self.stream_time() * 1000)


class RateLimiter:
    """X's per-token request windows, with its ``x-rate-limit-*`` headers.

    :param limit: requests per ``window`` seconds; 0 means unlimited (headers still sent).
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, token: str) -> tuple[bool, dict[str, str]]:
        """Count one request; return whether it is allowed and the headers to send."""
        now = time.time()
        hits = self._hits.setdefault(token, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        allowed = not self.limit or len(hits) < self.limit
        if allowed:
            hits.append(now)
        reset = (hits[0] if hits else now) + self.window
        limit = self.limit or 1_000_000
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(max(limit - len(hits), 0)),
            "x-rate-limit-reset": str(int(reset)),
        }
        return allowed, headers


class StreamState:
    """Everything the routes and sessions share. One per server."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        replay = config.profile if isinstance(config.profile, ReplayProfile) else None
        # Slow (Faker pools, a capture's parse): before the clock starts.
        self.tweets: TweetSource = (
            ReplayTweets(replay, config.seed) if replay else TweetFactory(config.seed)
        )
        self.matcher = matcher_for(self.tweets)  # recent search's queries, over those pools
        self.clock = Clock(config.t0_ms)
        self.timeline = Timeline(config.profile, config.seed, self.clock.t0_ms)
        self.rules = RuleSet(self.clock.t0_ms)
        for rule in config.rules:
            self.rules.add(*self.rules.check(rule))
        self.faults: dict[str, FaultSpec] = {}
        initial_faults = [build(definition) for definition in config.faults]
        self.sessions: dict[int, StreamSession] = {}
        # token -> its open connections, oldest first: live streams and recovery jobs have
        # limits of their own (stream_connections; access.RECOVERY_JOBS).
        self.stream_holders: dict[str, list[int]] = {}
        self.recovery_holders: dict[str, list[int]] = {}
        self.connect_limiter = RateLimiter(config.connect_limit, config.limit_window)
        self.rules_limiter = RateLimiter(config.rules_limit, config.limit_window)
        self.search_limiter = RateLimiter(config.search_limit, config.search_window)
        #: Recent search requests answered (200), refused (429), and tweets they carried.
        self.search_stats = {"answered": 0, "refused": 0, "tweets": 0}
        self._next_conn_id = 1
        self.ledger = LedgerWriter(
            config.ledger,
            {
                "seed": config.seed,
                "t0_ms": self.clock.t0_ms,
                "t0_wall": self.clock.t0_wall,
                "profile": config.profile.to_json(),
                "queue_size": config.queue_size,
                "retention": config.retention,
                "strict_x": config.strict_x,
                "access_level": config.access_level,
                "stream_connections": config.stream_connections,
                "backfill_scale": config.backfill_scale,
                "recovery_window": self.recovery_window,
                "recent_window": self.recent_window,
            },
            kept_ids=replay.kept_ids if replay else None,
        )
        for spec in initial_faults:
            self.add_fault(spec)

    # Connections -----------------------------------------------------------------------

    def new_conn_id(self) -> int:
        conn_id, self._next_conn_id = self._next_conn_id, self._next_conn_id + 1
        return conn_id

    @property
    def recovery_window(self) -> float:
        """Seconds a recovery's ``start_time`` may reach back: X's 24 hours, scaled."""
        return RECOVERY_WINDOW_S * self.config.backfill_scale

    @property
    def recent_window(self) -> float:
        """Seconds recent search reaches back: X's seven days, scaled."""
        return RECENT_WINDOW_S * self.config.backfill_scale

    def holders(self, token: str, recovery: bool) -> list[int]:
        """The token's open connections of one kind (live or recovery), oldest first."""
        table = self.recovery_holders if recovery else self.stream_holders
        return table.get(token, [])

    def hold(self, token: str, conn_id: int, recovery: bool) -> None:
        """Count ``conn_id`` against its token's limit from now until :meth:`release`."""
        table = self.recovery_holders if recovery else self.stream_holders
        table.setdefault(token, []).append(conn_id)

    def release(self, conn_id: int) -> None:
        """Free the connection's place (idempotent)."""
        for table in (self.stream_holders, self.recovery_holders):
            for token, conns in list(table.items()):
                if conn_id in conns:
                    conns.remove(conn_id)
                    if not conns:
                        del table[token]

    def session_started(self, session: StreamSession, token: str, **fields: Any) -> None:
        profile = self.timeline.profile
        if session.stop_index is None and isinstance(profile, ReplayProfile):
            profile.begin(self.timeline.slots)  # a replay from the first live connection
        self.sessions[session.conn_id] = session
        self.ledger.connection_opened(session.conn_id, token=token, **fields)

    def session_ended(self, session: StreamSession) -> None:
        self.sessions.pop(session.conn_id, None)
        self.release(session.conn_id)

    # Faults and rate -------------------------------------------------------------------

    def add_fault(self, spec: FaultSpec) -> None:
        if spec.name in self.faults:
            raise KeyError(spec.name)
        self.faults[spec.name] = spec
        self.ledger.event("fault_added", spec.name, fault=spec.to_json())

    def remove_fault(self, name: str) -> FaultSpec:
        spec = self.faults.pop(name)
        self.ledger.event("fault_removed", name)
        return spec

    def set_profile(self, profile: RateProfile) -> None:
        self.timeline.set_profile(profile)
        self.ledger.event(
            "rate_changed", None, at_slot=self.timeline.slots, profile=profile.to_json()
        )

    # Loops -----------------------------------------------------------------------------

    def generate(self) -> None:
        """Create every tweet due by now, record it, and hand it to the sessions."""
        created = self.timeline.advance(self.clock.slot_now())
        if not len(created.counts):
            return
        self.ledger.created(created.first_slot, created.counts, created.first_index)
        # A recovery connection streams a past range: new tweets are nobody's without a
        # live one.
        if not any(s.stop_index is None for s in self.sessions.values()):
            self.ledger.dropped(
                None, created.first_index, created.stop_index, "no_consumer", "queued"
            )
        for session in list(self.sessions.values()):
            session.on_created(self.timeline.total)

    async def run_generator(self) -> None:
        while True:
            self.generate()
            await asyncio.sleep(self._pause())

    def _pause(self) -> float:
        """A tick, or for a replay the time until its next tweet is due if that is sooner:
        replayed tweets keep their recorded arrival to the millisecond, not the tick."""
        tick = self.config.tick
        profile = self.timeline.profile
        if not isinstance(profile, ReplayProfile):
            return tick
        due = profile.next_due(self.timeline.slots)
        if due is None:
            return tick
        # slot k is created once slot_now() > k: at stream time (k + 1) ms
        return min(tick, max(0.0, (due + 1) / 1000 - self.clock.stream_time()))

    async def run_flusher(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            self.ledger.flush()

    def _newest_id(self) -> str | None:
        """The id of the last tweet created (a string, as X writes ids); None: none yet."""
        if not self.timeline.total:
            return None
        ids, _ = self.timeline.locate(np.array([self.timeline.total - 1], dtype=np.int64))
        return str(int(ids[0]))

    def stats(self) -> dict[str, Any]:
        timeline = self.timeline
        return {
            "stream_time": self.clock.stream_time(),
            "t0_ms": self.clock.t0_ms,
            "created": timeline.total,
            "newest_id": self._newest_id(),
            "rate": timeline.profile.rate_at(self.clock.stream_time()),
            "connections": [
                {
                    "conn_id": s.conn_id,
                    "cursor": s.cursor,
                    "backlog": s.end_index() - s.cursor,
                    "stop_index": s.stop_index,  # a recovery's end; None: live
                    "tweets_sent": s.tweets_sent,
                    "bytes_written": s.wire.wire_bytes,
                }
                for s in self.sessions.values()
            ],
            "faults": [spec.to_json() for spec in self.faults.values()],
            "search": dict(self.search_stats),
        }
