"""Server settings: everything ``python -m fake_stream serve`` can be told at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_stream.rates import RateProfile, parse_profile

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """Settings of one fake stream server. Defaults follow X where X documents a value.

    :param seed: every random choice (tweets, arrivals, fault coins) derives from it.
    :param profile: the rate profile (see :mod:`fake_stream.rates`).
    :param tokens: accepted bearer tokens; one stream connection each ("one app").
    :param ledger: path of the ground-truth ledger (a new file).
    :param t0_ms: UNIX millisecond of stream start; pin it to get bit-identical ids.
    :param queue_size: per-connection backlog (tweets created but not yet written) beyond
        which the server disconnects a slow consumer. 0 disables the limit.
    :param warn_at: backlog fill fractions at which ``stall_warnings=true`` connections get
        a FALLING_BEHIND warning.
    :param keepalive: seconds of silence after which a bare ``\\r\\n`` is sent (X: 20).
    :param retention: seconds of history that ``backfill_minutes`` and ``since_id`` can
        replay (X: 5 minutes).
    :param connect_limit: stream connects allowed per token per ``limit_window`` (X: 50
        per 15 min); 0 disables.
    :param rules_limit: rule requests allowed per token per window (X: 450); 0 disables.
    :param send_buffer: SO_SNDBUF for stream sockets in bytes (0: the kernel's default);
        small values make slow consumers overflow sooner.
    :param max_batch: most tweets written in one HTTP chunk.
    :param settle_timeout: seconds a closing connection waits for the client to acknowledge
        what was sent before the rest is recorded as of unknown fate.
    :param flush_interval: seconds between ledger flushes.
    :param faults: fault definitions active from start-up (see :mod:`fake_stream.faults`).
    :param rules: initial filtered-stream rules, ``{"value": ..., "tag": ...}``.
    """

    seed: int = 0
    profile: RateProfile = field(default_factory=lambda: parse_profile(100))
    tokens: tuple[str, ...] = ()
    ledger: Path = Path("ledger.sqlite")
    t0_ms: int | None = None
    queue_size: int = 100_000
    warn_at: tuple[float, ...] = (0.6, 0.8)
    keepalive: float = 20.0
    retention: float = 300.0
    connect_limit: int = 50
    rules_limit: int = 450
    limit_window: float = 900.0
    send_buffer: int = 0
    max_batch: int = 256
    settle_timeout: float = 2.0
    flush_interval: float = 0.2
    tick: float = 0.005
    faults: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, str]] = field(
        default_factory=lambda: [
            {"value": "lang:en OR lang:es OR lang:fr OR lang:ja", "tag": "all"}
        ]
    )
