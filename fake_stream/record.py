"""``python -m fake_stream record``: write what one stream connection receives to a capture.

Any X API v2 stream endpoint works: X's own (with a token that has access) or this fake.
Every line is written as it arrives, with its arrival time (see :mod:`fake_stream.capture`).
The recording stops after ``--seconds``, after ``--max-tweets``, when the server ends the
stream, or on SIGINT/SIGTERM; each writes the ``end`` record, so the capture is complete.
A kill (SIGKILL) leaves a capture without it, which replay refuses unless told otherwise.
Exit 0, or 1 when the end record is an error (refused, the connection failed).

A capture ends where the recorder stopped reading: tweets its kernel had already
acknowledged but it had not read are in the server's ledger as delivered, not in the
capture.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fake_stream.capture import CaptureWriter

__all__ = ["add_command", "main", "record"]

RECORDER = "python -m fake_stream record"


class _Stop(Exception):
    """Raised in the reading thread by a signal or the ``--seconds`` alarm."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def add_command(sub: Any) -> None:
    """The ``record`` subcommand of ``python -m fake_stream``."""
    r = sub.add_parser("record", allow_abbrev=False, help="record a stream to a capture file")
    r.add_argument("--url", required=True, help="stream URL (with its query, e.g. ?backfill...)")
    r.add_argument(
        "--token-env", required=True, help="environment variable holding the bearer token"
    )
    r.add_argument("--out", required=True, help="capture file to create (never overwritten)")
    r.add_argument("--seconds", help="stop after this many seconds")
    r.add_argument("--max-tweets", help="stop after this many tweets")


def main(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Check the options (exit 2 naming one), then record."""
    token = os.environ.get(args.token_env, "").strip()
    if not token:
        p.error(f"--token-env: ${args.token_env} is not set or empty")
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.error(f"--url: expected http(s)://host[:port]/path, got {args.url!r}")
    seconds = _positive(p, "--seconds", args.seconds, float)
    max_tweets = _positive(p, "--max-tweets", args.max_tweets, int)
    if os.path.exists(args.out):
        p.error(f"--out: {args.out} exists; a capture is never overwritten")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        p.error(f"--out: the folder of {args.out} does not exist")
    reason = record(args.url, token, args.out, seconds=seconds, max_tweets=max_tweets)
    print(json.dumps({"out": args.out, "end": reason}), flush=True)
    return 1 if reason.startswith("error") else 0


def _positive(p: argparse.ArgumentParser, name: str, text: str | None, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        p.error(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if not (isinstance(value, int) or math.isfinite(value)) or value <= 0:
        p.error(f"{name}: must be > 0, got {text!r}")
    return value


def record(
    url: str,
    token: str,
    out: str,
    *,
    seconds: float | None = None,
    max_tweets: int | None = None,
) -> str:
    """Record ``url`` into ``out``; return why the recording ended (the ``end`` record)."""
    parts = urlsplit(url)
    stops = _Stops(seconds)  # first: a signal at any point below ends the capture whole
    writer: CaptureWriter | None = None
    start = time.monotonic()
    reason = "stream_ended"
    try:
        rules = _rules(parts, token)
        with stops.held():
            header = {
                "source": f"{parts.scheme}://{parts.netloc}{parts.path}",
                "params": dict(parse_qsl(parts.query, keep_blank_values=True)),
                "rules": rules,
                "started_at": time.time(),
                "recorder": RECORDER,
            }
            start = time.monotonic()
            writer = CaptureWriter(out, header)
            stops.arm()
        reason = _read(parts, token, writer, start, max_tweets, stops)
    except _Stop as stop:
        reason = stop.reason
    except (OSError, http.client.HTTPException) as e:
        reason = f"error: {type(e).__name__}: {e}"
    finally:
        stops.mute()  # a second Ctrl-C must not cut the end record
        try:
            if writer is not None:
                writer.end((time.monotonic() - start) * 1000, reason)
        finally:
            stops.restore()
    return reason


def _read(
    parts: Any,
    token: str,
    writer: CaptureWriter,
    start: float,
    max_tweets: int | None,
    stops: _Stops,
) -> str:
    """Write every line of the stream as it arrives; why it stopped (or raise _Stop)."""
    response = _open(parts, token)
    if response.status != 200:
        body = response.read(4096).decode("utf-8", "replace")
        return f"error: HTTP {response.status}: {body.strip()[:300]}"
    while True:
        line = response.readline()
        t_ms = (time.monotonic() - start) * 1000
        if not line:
            return "stream_ended"
        with stops.held():  # a record is written whole, or not at all
            _add(writer, t_ms, line)
        if max_tweets is not None and writer.tweets >= max_tweets:
            return "max_tweets"


def _add(writer: CaptureWriter, t_ms: float, line: bytes) -> None:
    text = line.rstrip(b"\r\n")
    if not text.strip():
        writer.add(t_ms, "keepalive", True)
        return
    try:
        message = json.loads(text)
    except ValueError:
        writer.add(t_ms, "raw", text.decode("utf-8", "replace"))
        return
    is_tweet = isinstance(message, dict) and isinstance(message.get("data"), dict)
    writer.add(t_ms, "tweet" if is_tweet else "message", message)


def _connection(parts: Any) -> http.client.HTTPConnection:
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=30)


def _open(parts: Any, token: str) -> http.client.HTTPResponse:
    conn = _connection(parts)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", target, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    if conn.sock is not None:
        conn.sock.settimeout(None)  # a stream may be silent for long (keep-alives: 20 s)
    return response


def _rules(parts: Any, token: str) -> list[dict[str, Any]] | None:
    """The filtered stream's rules at the start (None for other endpoints, or unreadable)."""
    if not parts.path.rstrip("/").endswith("/search/stream"):
        return None
    conn = _connection(parts)
    try:
        conn.request(
            "GET",
            parts.path.rstrip("/") + "/rules",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        body = json.loads(response.read()) if response.status == 200 else {}
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else []


class _Stops:
    """SIGINT/SIGTERM, and the ``seconds`` alarm (:meth:`arm`), raise :class:`_Stop` in this
    thread; while a record is being written (:meth:`held`), once it is written."""

    def __init__(self, seconds: float | None) -> None:
        self._holding = False
        self._pending: str | None = None
        self._seconds = seconds
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
        self._previous = {s: signal.signal(s, self._stop) for s in signals}

    def arm(self) -> None:
        """Start the ``seconds`` alarm (from the capture's time 0)."""
        if self._seconds is not None:
            signal.setitimer(signal.ITIMER_REAL, self._seconds)

    def _stop(self, signum: int, _frame: Any) -> None:
        reason = "seconds" if signum == signal.SIGALRM else "interrupted"
        if self._holding:
            self._pending = self._pending or reason
            return
        raise _Stop(reason)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            raise _Stop(self._pending)

    def mute(self) -> None:
        """From now on, signals are only noted (the end record is being written)."""
        self._holding = True

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m fake_stream record ...")
