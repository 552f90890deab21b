"""``python -m fake_stream serve ...``: run a fake X stream until SIGINT/SIGTERM;
``python -m fake_stream record ...``: record a stream to a capture (:mod:`fake_stream.record`).

Prints one JSON line on stdout once the server accepts connections (``url``,
``bearer_token``, ``ledger``, ...); on SIGINT/SIGTERM it ends every stream, flushes the
ledger and exits 0. Bad options exit 2 naming the option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from fake_stream import record
from fake_stream.config import (
    ServerConfig,
    remote_addresses,
    server_config,
    validate_server_options,
)
from fake_stream.ledger import LedgerError
from fake_stream.logs import Throttle
from fake_stream.rates import PRESETS, parse_profile
from fake_stream.server import FakeStreamServer

_D = ServerConfig  # defaults, for the help


def _flag_text(text: str) -> bool | str:
    """``true``/``false`` as a bool (a scenario's ``strict_x = true`` arrives as ``--strict-x
    True``); anything else is left for the validator to refuse, naming the option."""
    return {"true": True, "false": False}.get(text.lower(), text)


def parser() -> argparse.ArgumentParser:
    """Every option is read as text and checked by ``validate_server_options``."""
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m fake_stream", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", allow_abbrev=False, help="run a fake X API v2 stream server")
    add = s.add_argument
    add("--host", help="address to bind (default 127.0.0.1; others need --allow-remote)")
    add("--allow-remote", action="store_true", default=None, help="bind a non-loopback --host")
    add("--port", help="port (default 0: a free one)")
    add("--seed", help="seed of every random choice (default 0)")
    add("--rate", help="constant tweets/s (default 100)")
    add("--profile", help=f"rate profile: JSON, @file.json or a preset ({', '.join(PRESETS)})")
    add(
        "--token",
        action="append",
        help="accepted bearer token (repeatable; visible to every local user in ps: prefer "
        "--token-file)",
    )
    add("--token-file", help="file of accepted bearer tokens, one per line")
    add("--ledger", help="ledger file to create (default results/fake_stream/<time>.sqlite)")
    add("--t0-ms", help="UNIX ms of stream start (pin for identical ids)")
    add("--queue-size", help=f"slow-consumer backlog limit, tweets (0: none; {_D.queue_size})")
    add("--keepalive", help=f"seconds of silence before a keep-alive ({_D.keepalive})")
    add("--retention", help=f"seconds of replayable history ({_D.retention})")
    add("--connect-limit", help=f"connects per token per 15 min (0: none; {_D.connect_limit})")
    add("--rules-limit", help=f"rule requests per token per 15 min (0: none; {_D.rules_limit})")
    add(
        "--search-limit",
        help=f"recent search requests per token per --search-window (0: none; {_D.search_limit})",
    )
    add("--search-window", help=f"seconds of the search rate limit's window ({_D.search_window:g})")
    add("--send-buffer", help="SO_SNDBUF of stream sockets, bytes (0: the kernel's)")
    add("--max-batch", help=f"tweets per HTTP chunk at most ({_D.max_batch})")
    add("--settle-timeout", help=f"seconds to wait for acknowledgements ({_D.settle_timeout})")
    add("--max-connections", help=f"open connections per client address ({_D.max_connections})")
    add("--request-timeout", help=f"seconds to send a request head or body ({_D.request_timeout})")
    add(
        "--strict-x",
        nargs="?",
        const=True,
        type=_flag_text,
        help="accept only X's v2 stream parameters (no since_id, no stall_warnings); "
        "also --strict-x true|false",
    )
    add("--access-level", help="X's access level: pro or enterprise (default; backfill, recovery)")
    add("--stream-connections", help="stream connections per token: 1 (default), 2 (enterprise)")
    add("--backfill-scale", help="X's backfill/recovery windows x this, 0.0001..1 (default 1)")
    add("--fault", action="append", help="fault definition, JSON or @file (repeatable)")
    add("--faults", help="a JSON list of fault definitions, or @file")
    add("--rule", action="append", help='initial rule, JSON {"value":..,"tag":..} (repeatable)')
    add("--log-level", help="DEBUG, INFO, WARNING (default), ERROR or CRITICAL")
    add("--replay", help="serve a capture's tweets at their recorded times (not with --rate)")
    add("--speed", help="--replay: times faster than recorded (default 1)")
    add("--loop", action="store_true", default=None, help="--replay: start over at its end")
    add("--shift-ids", action="store_true", default=None, help="--replay: mint ids anew")
    add("--lenient", action="store_true", default=None, help="--replay: skip bad records")
    add("--replay-start", help="--replay: from the first connection (connect) or server start")
    record.add_command(sub)
    return p


#: The options of ``--replay`` (which become the ``profile`` option).
REPLAY_OPTIONS = ("replay", "speed", "loop", "shift_ids", "lenient", "replay_start")


def _replay_profile(given: dict[str, Any], p: argparse.ArgumentParser) -> None:
    """``--replay FILE [--speed] [--loop] [--shift-ids] [--lenient]`` as the profile
    ``{"replay": FILE, ...}`` (a scenario's ``rate = { replay = ... }``), checked here so
    an error names ``--replay``."""
    options = {name: given.pop(name) for name in REPLAY_OPTIONS[1:] if name in given}
    if "replay" not in given:
        if options:
            p.error(f"--{next(iter(options)).replace('_', '-')}: only with --replay")
        return
    spec: dict[str, Any] = {"replay": given.pop("replay"), **options}
    if "replay_start" in spec:
        spec["start"] = spec.pop("replay_start")
    if "speed" in spec:
        spec["speed"] = _number(spec["speed"])
    for other in ("rate", "profile"):
        if other in given:
            p.error(f"--replay: the capture sets the rate; not with --{other}")
    try:
        parse_profile(spec, allow_files=True)
    except ValueError as e:
        p.error(f"--replay: {e}")
    given["profile"] = spec


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # refused by the profile's check, naming speed


def options_from(args: argparse.Namespace, p: argparse.ArgumentParser) -> dict[str, Any]:
    """The validated options; a bad one exits 2 naming it as given (``--max-batch``)."""
    given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    _replay_profile(given, p)
    try:
        options = validate_server_options(given)
    except ValueError as e:
        message = str(e)
        name = re.match(r"[a-z0-9_]*", message).group()  # type: ignore[union-attr]
        p.error(f"--{name.replace('_', '-')}{message[len(name) :]}")
    if "ledger" not in options:
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        options["ledger"] = str(Path("results/fake_stream") / f"{stamp}.sqlite")
    if "token" not in options and "token_file" not in options:
        options["token"] = [secrets.token_urlsafe(24)]
    return options


def _more_descriptors() -> None:
    """Raise the soft open-file limit to the hard one: each stream holds two descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "record":
        return record.main(args, p)
    options = options_from(args, p)
    logging.basicConfig(level=options.get("log_level", "WARNING"), stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(Throttle())
    host = options.get("host", "127.0.0.1")
    if remote_addresses(host):  # allowed: validate_server_options checked allow_remote
        print(
            f"python -m fake_stream: warning: binding {host} (--allow-remote): anyone who can "
            "reach it and holds a token can read the stream and change faults and rates",
            file=sys.stderr,
        )
    _more_descriptors()
    server = FakeStreamServer(server_config(options), host, options.get("port", 0))
    announced = False

    def announce(info: dict[str, Any]) -> None:
        nonlocal announced
        announced = True
        print(json.dumps(info), flush=True)

    try:
        asyncio.run(server.run_until_signal(announce))
    except (OSError, LedgerError) as e:
        if announced:
            raise
        p.error(f"cannot start: {e}")  # the port is taken, the ledger's folder unwritable...
    return 0


if __name__ == "__main__":
    sys.exit(main())
