"""``python -m fake_stream serve ...``: run a fake X stream until SIGINT/SIGTERM.

Prints one JSON line on stdout once the server accepts connections (``url``,
``bearer_token``, ``ledger``, ...); on SIGINT/SIGTERM it ends every stream, flushes the
ledger and exits 0. Bad options exit 2 naming the option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from fake_stream.config import ServerConfig
from fake_stream.faults import FaultError, build
from fake_stream.rates import PRESETS, parse_profile
from fake_stream.server import FakeStreamServer


def _json_arg(text: str) -> Any:
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    return json.loads(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fake_stream", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a fake X API v2 stream server")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    s.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--rate", type=float, help="constant tweets/s (default 100)")
    s.add_argument(
        "--profile", help=f"rate profile: JSON, @file.json or a preset ({', '.join(PRESETS)})"
    )
    s.add_argument(
        "--token", action="append", help="accepted bearer token (repeatable; default: a random one)"
    )
    s.add_argument(
        "--ledger",
        type=Path,
        help="ledger file to create (default results/fake_stream/<time>.sqlite)",
    )
    s.add_argument("--t0-ms", type=int, help="UNIX ms of stream start (pin for identical ids)")
    s.add_argument(
        "--queue-size",
        type=int,
        default=ServerConfig.queue_size,
        help="slow-consumer backlog limit, tweets (0: none)",
    )
    s.add_argument(
        "--keepalive",
        type=float,
        default=ServerConfig.keepalive,
        help="seconds of silence before a keep-alive",
    )
    s.add_argument(
        "--retention",
        type=float,
        default=ServerConfig.retention,
        help="seconds of replayable history",
    )
    s.add_argument(
        "--connect-limit",
        type=int,
        default=ServerConfig.connect_limit,
        help="connects per token per 15 min (0: none)",
    )
    s.add_argument(
        "--rules-limit",
        type=int,
        default=ServerConfig.rules_limit,
        help="rule requests per token per 15 min (0: none)",
    )
    s.add_argument("--send-buffer", type=int, default=0, help="SO_SNDBUF of stream sockets, bytes")
    s.add_argument(
        "--max-batch",
        type=int,
        default=ServerConfig.max_batch,
        help="tweets per HTTP chunk at most",
    )
    s.add_argument("--settle-timeout", type=float, default=ServerConfig.settle_timeout)
    s.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_json_arg,
        help="fault definition, JSON or @file (repeatable)",
    )
    s.add_argument("--faults", type=_json_arg, help="a JSON list of fault definitions, or @file")
    s.add_argument(
        "--rule",
        action="append",
        type=_json_arg,
        help='initial rule, JSON {"value":..,"tag":..} (repeatable)',
    )
    s.add_argument("--log-level", default="WARNING")
    return p


def config_from(args: argparse.Namespace, p: argparse.ArgumentParser) -> ServerConfig:
    if args.rate is not None and args.profile is not None:
        p.error("--rate and --profile are exclusive")
    try:
        spec = (
            args.profile
            if args.profile is not None
            else (args.rate if args.rate is not None else 100)
        )
        if isinstance(spec, str) and spec.startswith("@"):
            spec = Path(spec[1:]).read_text()
        profile = parse_profile(spec)
    except (ValueError, OSError) as e:
        p.error(f"{'--profile' if args.profile is not None else '--rate'}: {e}")
    faults = list(args.fault) + list(args.faults or [])
    for i, definition in enumerate(faults):
        try:
            build(definition)
        except FaultError as e:
            p.error(f"--fault #{i + 1}: {e}")
    ledger = (
        args.ledger
        or Path("results/fake_stream")
        / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}.sqlite"
    )
    if ledger.exists():
        p.error(f"--ledger: {ledger} exists; give every run a new ledger file")
    config = ServerConfig(
        seed=args.seed,
        profile=profile,
        tokens=tuple(args.token or [secrets.token_urlsafe(24)]),
        ledger=ledger,
        t0_ms=args.t0_ms,
        queue_size=args.queue_size,
        keepalive=args.keepalive,
        retention=args.retention,
        connect_limit=args.connect_limit,
        rules_limit=args.rules_limit,
        send_buffer=args.send_buffer,
        max_batch=args.max_batch,
        settle_timeout=args.settle_timeout,
        faults=faults,
    )
    if args.rule:
        config.rules = args.rule
    return config


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    config = config_from(args, p)

    def announce(info: dict[str, Any]) -> None:
        print(json.dumps(info), flush=True)

    asyncio.run(FakeStreamServer(config, args.host, args.port).run_until_signal(announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
