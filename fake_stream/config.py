"""Server settings: everything ``python -m fake_stream serve`` can be told at start-up, and
the one validator every way of telling it goes through.

:func:`validate_server_options` takes the options as a scenario's ``[server]`` table spells
them (``queue_size``, the command line's ``--queue-size``) and raises :class:`ValueError`
whose message starts with the option's name (``"max_batch: must be >= 1"``); the command
line turns that into exit 2 naming ``--max-batch``. :func:`server_config` builds the
:class:`ServerConfig` from validated options.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_stream import snowflake
from fake_stream.access import ACCESS_LEVELS, BACKFILL_MAX_S, LEVELS
from fake_stream.faults import FaultError, build
from fake_stream.rates import MAX_RATE, RateProfile, parse_profile
from fake_stream.rules import MAX_RULES, RuleError, RuleSet

__all__ = [
    "OPTIONS",
    "ServerConfig",
    "read_tokens",
    "remote_addresses",
    "server_config",
    "validate_server_options",
]


@dataclass
class ServerConfig:
    """Settings of one fake stream server. Defaults follow X where X documents a value.

    :param seed: every random choice (tweets, arrivals, fault coins) derives from it.
    :param profile: the rate profile (see :mod:`fake_stream.rates`).
    :param tokens: accepted bearer tokens, one per "app": each may hold
        ``stream_connections`` stream connections.
    :param ledger: path of the ground-truth ledger (a new file).
    :param t0_ms: UNIX millisecond of stream start; pin it to get bit-identical ids.
    :param queue_size: per-connection backlog (tweets created but not yet written) beyond
        which the server disconnects a slow consumer. 0 disables the limit.
    :param warn_at: backlog fill fractions at which ``stall_warnings=true`` connections get
        a FALLING_BEHIND warning.
    :param keepalive: seconds of silence after which a bare ``\\r\\n`` is sent (X: 20).
    :param retention: seconds of history that ``backfill_minutes`` and ``since_id`` can
        replay (X: 5 minutes). Recovery connections are bounded by their own window.
    :param connect_limit: stream connects allowed per token per ``limit_window`` (X: 50
        per 15 min); 0 disables.
    :param rules_limit: rule requests allowed per token per window (X: 450); 0 disables.
    :param search_limit: recent search requests allowed per token per ``search_window``
        (X: 450 per 15 minutes with an app's bearer token); 0 disables (headers still sent).
    :param search_window: seconds of recent search's sliding rate-limit window (X: 900).
    :param send_buffer: SO_SNDBUF for stream sockets in bytes (0: the kernel's default);
        small values make slow consumers overflow sooner.
    :param max_batch: most tweets written in one HTTP chunk.
    :param settle_timeout: seconds a closing connection waits for the client to acknowledge
        what was sent before the rest is recorded as of unknown fate.
    :param max_connections: open connections allowed per client address; more are answered
        with a 429 problem and closed (each holds file descriptors).
    :param request_timeout: seconds a client has to send a request's head (from connecting,
        or from the end of its previous request) and, separately, its body; then it is
        closed. Streams are not affected once their request is in.
    :param flush_interval: seconds between ledger flushes.
    :param faults: fault definitions active from start-up (see :mod:`fake_stream.faults`).
    :param rules: initial filtered-stream rules, ``{"value": ..., "tag": ...}``.
    :param strict_x: the stream endpoints accept only X's v2 query parameters (no
        ``since_id``, no ``stall_warnings``); the control API is unchanged.
    :param access_level: X's access level of every token, ``pro`` or ``enterprise``: Pro
        has no backfill, no recovery and one stream connection (see :mod:`fake_stream.access`).
    :param stream_connections: simultaneous stream connections per token (X: 1; Enterprise
        may have 2, "redundant connections"). Recovery connections are counted apart.
    :param backfill_scale: X's recovery windows in stream time: ``backfill_minutes=N``
        reaches back ``N * 60 * backfill_scale`` s, recovery ``86400 * backfill_scale`` s.
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
    search_limit: int = 450
    search_window: float = 900.0
    send_buffer: int = 0
    max_batch: int = 256
    settle_timeout: float = 2.0
    max_connections: int = 256
    request_timeout: float = 10.0
    flush_interval: float = 0.2
    tick: float = 0.005
    strict_x: bool = False
    access_level: str = "enterprise"
    stream_connections: int = 1
    backfill_scale: float = 1.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, str]] = field(
        default_factory=lambda: [
            {"value": "lang:en OR lang:es OR lang:fr OR lang:ja", "tag": "all"}
        ]
    )


# Checkers: (value, name) -> the value in its canonical type, or ValueError naming it. ----

Check = Callable[[Any, str], Any]


def _integer(low: int, high: int) -> Check:
    def check(value: Any, name: str) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,40}\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return _within(value, low, high, name)

    return check


def _real(low: float, high: float) -> Check:
    def check(value: Any, name: str) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        return _within(number, low, high, name)

    return check


def _within(value: Any, low: float, high: float, name: str) -> Any:
    if value < low:
        raise ValueError(f"{name}: must be >= {low:g}, got {value!r}")
    if value > high:
        raise ValueError(f"{name}: must be <= {high:g}, got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _log_level(value: Any, name: str) -> str:
    level = _text(value, name).upper()
    if level not in _LEVELS:
        raise ValueError(f"{name}: expected one of {', '.join(_LEVELS)}, got {value!r}")
    return level


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _choice(*choices: str) -> Check:
    def check(value: Any, name: str) -> str:
        if value not in choices:
            raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _path(value: Any, name: str) -> str:
    if isinstance(value, Path):
        value = str(value)
    return _text(value, name)


def _new_ledger(value: Any, name: str) -> str:
    path = _path(value, name)
    if Path(path).exists():
        raise ValueError(f"{name}: {path} exists; give every run a new ledger file")
    return path


def _json(value: Any, name: str) -> Any:
    """JSON text, or ``@file`` holding it, parsed strictly (no NaN or Infinity)."""
    if not isinstance(value, str):
        return value
    text = value
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{name}: cannot read {text[1:]!r}: {e}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{name}: not valid JSON ({e})") from None


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number JSON allows", name, 0)


def _many(check: Check) -> Check:
    """A repeatable option: one value or a list of them, each checked as ``name[i]``."""

    def many(value: Any, name: str) -> list[Any]:
        values = value if isinstance(value, list | tuple) else [value]
        return [check(v, f"{name}[{i}]") for i, v in enumerate(values)]

    return many


def _fault(value: Any, name: str) -> dict[str, Any]:
    definition = _json(value, name)
    try:
        build(definition)
    except FaultError as e:
        where = f"{name}." if isinstance(definition, dict) else f"{name}: "
        raise ValueError(f"{where}{e}") from None
    return definition


def _faults(value: Any, name: str) -> list[dict[str, Any]]:
    definitions = _json(value, name)
    if not isinstance(definitions, list):
        raise ValueError(f"{name}: expected a list of fault definitions")
    return [_fault(d, f"{name}[{i}]") for i, d in enumerate(definitions)]


def _rule(value: Any, name: str) -> dict[str, Any]:
    spec = _json(value, name)
    try:
        RuleSet(snowflake.TWEPOCH).check(spec)
    except RuleError as e:
        raise ValueError(f"{name}: {e}") from None
    return spec


def _token(value: Any, name: str) -> str:
    token = _text(value, name)
    if len(token) > 256 or not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError(f"{name}: expected 1..256 visible ASCII characters, no spaces")
    return token


def _token_file(value: Any, name: str) -> str:
    path = _path(value, name)
    for i, token in enumerate(read_tokens(path, name)):
        _token(token, f"{name} line {i + 1}")
    return path


def read_tokens(path: str, name: str = "token_file") -> list[str]:
    """The tokens of a token file: one per line, blank lines ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{name}: cannot read {path!r}: {e}") from None
    tokens = [line.strip() for line in text.splitlines() if line.strip()]
    if not tokens:
        raise ValueError(f"{name}: {path!r} holds no token")
    return tokens


def _profile(value: Any, name: str) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        value = _json(value, name)
    try:
        parse_profile(value, allow_files=True)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    return value


#: Every option, by the name a ``[server]`` table uses (the command line's, ``-`` as ``_``).
OPTIONS: dict[str, Check] = {
    "host": _text,  # and loopback unless allow_remote: checked with it, below
    "allow_remote": _flag,
    "port": _integer(0, 65535),
    "seed": _integer(-(2**63), 2**64 - 1),
    "rate": _real(0, MAX_RATE),
    "profile": _profile,
    "token": _many(_token),
    "token_file": _token_file,
    "ledger": _new_ledger,
    "t0_ms": _integer(snowflake.TWEPOCH, snowflake.TWEPOCH + 2**40),  # ids need 41 bits
    "queue_size": _integer(0, 10**9),
    "keepalive": _real(0.1, 3600),  # 0 sent a flood of line breaks
    "retention": _real(0, 86_400),
    "connect_limit": _integer(0, 10**9),
    "rules_limit": _integer(0, 10**9),
    "search_limit": _integer(0, 10**9),
    "search_window": _real(0.1, 86_400),
    "send_buffer": _integer(0, 2**30),
    "max_batch": _integer(1, 65_536),  # 0 spun the writer sending nothing
    "settle_timeout": _real(0, 600),
    "max_connections": _integer(1, 100_000),
    "request_timeout": _real(0.1, 3600),
    "strict_x": _flag,
    "access_level": _choice(*ACCESS_LEVELS),
    "stream_connections": _integer(1, max(level.stream_connections for level in LEVELS.values())),
    "backfill_scale": _real(0.0001, 1),
    "fault": _many(_fault),
    "faults": _faults,
    "rule": _many(_rule),
    "log_level": _log_level,
}


def validate_server_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check every option (names as a ``[server]`` table spells them); return them in their
    canonical types. ``None`` values count as not given. Raises :class:`ValueError` whose
    message starts with the option's name."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in OPTIONS:
            raise ValueError(f"{name}: unknown server option; known: {', '.join(sorted(OPTIONS))}")
        if value is not None:
            out[name] = OPTIONS[name](value, name)
    if "host" in out:
        _loopback_or_allowed(out["host"], out.get("allow_remote", False))
    if "rate" in out and "profile" in out:
        raise ValueError("profile: give rate or profile, not both")
    if len(out.get("rule", ())) > MAX_RULES:
        raise ValueError(f"rule: more than {MAX_RULES} rules")
    values = [r["value"].strip() for r in out.get("rule", ())]
    if len(set(values)) < len(values):
        raise ValueError("rule: the same value twice")
    _access_fits(out)
    return out


def _access_fits(options: Mapping[str, Any]) -> None:
    """The level allows the connections asked for; under strict_x, retention covers X's
    5-minute backfill at the scale (without it a short retention is an experiment of its
    own: replays are clamped and the ledger says so)."""
    level = LEVELS[options.get("access_level", ServerConfig.access_level)]
    connections = options.get("stream_connections", ServerConfig.stream_connections)
    if connections > level.stream_connections:
        raise ValueError(
            f"stream_connections: {level.title} access allows {level.stream_connections} "
            f"stream connection(s) per token, got {connections}"
        )
    scale = options.get("backfill_scale", ServerConfig.backfill_scale)
    retention = options.get("retention", ServerConfig.retention)
    if options.get("strict_x") and level.backfill and retention < BACKFILL_MAX_S * scale:
        raise ValueError(
            f"retention: must be >= {BACKFILL_MAX_S * scale:g} s under strict_x (X serves "
            f"backfill_minutes=5: 300 s * backfill_scale {scale:g}), got {retention:g}"
        )


def remote_addresses(host: str) -> list[str]:
    """The IPv4 addresses ``host`` stands for that are not loopback ones."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ValueError(f"host: {host!r} is not an IPv4 address or a name of one") from None
    return sorted({i[4][0] for i in infos if not ipaddress.ip_address(i[4][0]).is_loopback})


def _loopback_or_allowed(host: str, allow_remote: bool) -> None:
    remote = remote_addresses(host)
    if remote and not allow_remote:
        shown = host if remote == [host] else f"{host} ({', '.join(remote)})"
        raise ValueError(
            f"host: {shown} is not a loopback address: the server has no "
            "TLS, and its control API can change a running experiment; set allow_remote "
            "(--allow-remote) to bind it anyway"
        )


def server_config(options: Mapping[str, Any]) -> ServerConfig:
    """The :class:`ServerConfig` of validated options (host, port, log level and
    allow_remote are the caller's: they are not settings of the stream)."""
    config = ServerConfig()
    if "profile" in options:
        config.profile = parse_profile(options["profile"], allow_files=True)
    elif "rate" in options:
        config.profile = parse_profile(options["rate"])
    tokens = list(options.get("token", []))
    if "token_file" in options:
        tokens += read_tokens(options["token_file"])
    config.tokens = tuple(dict.fromkeys(tokens))
    config.faults = list(options.get("fault", [])) + list(options.get("faults", []))
    if "rule" in options:
        config.rules = list(options["rule"])
    if "ledger" in options:
        config.ledger = Path(options["ledger"])
    for name in (
        "seed",
        "t0_ms",
        "queue_size",
        "keepalive",
        "retention",
        "connect_limit",
        "rules_limit",
        "search_limit",
        "search_window",
        "send_buffer",
        "max_batch",
        "settle_timeout",
        "max_connections",
        "request_timeout",
        "strict_x",
        "access_level",
        "stream_connections",
        "backfill_scale",
    ):
        if name in options:
            setattr(config, name, options[name])
    return config
