"""The queue variant's ingester: reads the stream outside Airflow, appends to a Redis Stream.

``python -m harness.task.ingester --stream-url URL --token-file F --redis-url URL [--key K]
[--resume recovery|backfill|live|since_id] [--backfill-scale S] [--batch N]
[--publish CHANNEL --published-log FILE]``

Each tweet line goes to the stream ``key`` as one entry (``XADD``, field ``line``), in
pipelined batches of up to ``--batch`` (``BATCH``), and at least every ``FLUSH_INTERVAL``
s: a batch flushed only when full would hold the last tweets of a quiet stream for as long
as it stays quiet. With ``--publish``, each batch is also published to a Redis pub/sub
channel as one message (a JSON array of the tweet lines) for the event-driven variants'
watcher; how many subscribers received each message (``PUBLISH``'s answer: 0 when none
listened, and the message is gone) goes to ``--published-log``, one JSON line each.

Its position is the newest tweet already in the Redis stream, or the start
point it recorded (``<key>:position``) before its first connect; it reconnects from there
after a dropped connection or a restart, the way ``--resume`` allows
(:mod:`harness.task.resume`). Backfill and recovery repeat tweets: the consumer's
idempotent commit absorbs them. It backs off on refusals and errors. It never stops on its
own: the harness stops it with SIGTERM, and what it holds then is flushed first.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import redis
import requests

from harness.task.resume import RESUMES, Backoff, Connect, now_ms, plan, position_at

BATCH = 200
FLUSH_INTERVAL = 0.2  # seconds: the most a tweet waits in a batch that is not full


def newest_id(client: redis.Redis, key: str) -> int | None:
    entries = client.xrevrange(key, count=1)
    return int(json.loads(entries[0][1][b"line"])["data"]["id"]) if entries else None


def position(client: redis.Redis, key: str) -> int | None:
    """Where the ingester resumes: the newest tweet in the stream or its recorded
    position (a start point, or where a complete recovery ended), whichever is newer."""
    stored = client.get(f"{key}:position")
    known = [p for p in (newest_id(client, key), stored and int(stored)) if p is not None]
    return max(known) if known else None


def advance(client: redis.Redis, key: str, to: int) -> None:
    """Record position ``to`` unless a newer one is known (one ingester: no race)."""
    current = position(client, key)
    if current is None or to > current:
        client.set(f"{key}:position", to)


class Batches:
    """``XADD``s pipelined, sent when ``size`` are queued or by :meth:`flush` (a timer's);
    with a ``channel``, each batch also ``PUBLISH``ed as one message, its receivers logged
    to ``published``."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        size: int = BATCH,
        channel: str | None = None,
        published: Path | None = None,
    ) -> None:
        self.key, self.size, self.channel, self.published = key, size, channel, published
        self._pipe = client.pipeline(transaction=False)
        self._lines: list[bytes] = []
        self._lock = threading.RLock()  # SIGTERM may land inside add(): then flush()

    def add(self, line: bytes) -> None:
        with self._lock:
            self._pipe.xadd(self.key, {"line": line})
            self._lines.append(line)
            if len(self._lines) >= self.size:
                self._send()

    def flush(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        if not self._lines:
            return
        if self.channel is not None:
            self._pipe.publish(self.channel, b"[" + b",".join(self._lines) + b"]")
        answers = self._pipe.execute()
        if self.channel is not None and self.published is not None:
            first, last = (json.loads(self._lines[i])["data"]["id"] for i in (0, -1))
            record = {"time": time.time(), "tweets": len(self._lines), "first_id": first,
                      "last_id": last, "receivers": answers[-1]}  # fmt: skip
            with self.published.open("a") as log:
                log.write(json.dumps(record) + "\n")
        self._lines = []


def ingest(
    stream_url: str,
    token: str,
    redis_url: str,
    key: str,
    stop: threading.Event,
    resume: str = "recovery",
    scale: float = 1.0,
    batches: Batches | None = None,
) -> None:
    client = redis.Redis.from_url(redis_url)
    headers = {"Authorization": f"Bearer {token}"}
    batches = batches or Batches(client, key)
    backoff = Backoff()
    # The first ingester of all reads live from its start point; every later connect
    # resumes.
    first = position(client, key) is None
    if first:
        advance(client, key, position_at(now_ms()))  # the start point, before any read

    def flush_on_time() -> None:
        while not stop.wait(FLUSH_INTERVAL):
            batches.flush()

    threading.Thread(target=flush_on_time, daemon=True).start()
    try:
        while not stop.is_set():
            connect = (
                Connect("live") if first else plan(resume, position(client, key), now_ms(), scale)
            )
            first = False
            print(f"connect {json.dumps(connect.detail())}", file=sys.stderr)
            wait = 0.0
            try:
                with requests.get(
                    stream_url, headers=headers, params=connect.params, stream=True, timeout=30
                ) as response:
                    response.raise_for_status()
                    complete = True
                    for line in response.iter_lines(chunk_size=4096):
                        if line.startswith(b'{"data"'):
                            backoff.reset()
                            batches.add(line)
                        elif line.startswith(b'{"errors"'):
                            complete = False
                    batches.flush()
                    if connect.until is not None and complete:
                        advance(client, key, connect.until)  # the whole period is in
            except requests.HTTPError as e:
                wait = backoff.after_refusal(e.response.headers, time.time())
                print(f"stream refused: {e}; retry in {wait:.2f} s", file=sys.stderr)
            except requests.RequestException as e:
                wait = backoff.after_network_error()
                print(f"stream error: {e}; retry in {wait:.2f} s", file=sys.stderr)
            batches.flush()  # before the position is read from the stream again
            stop.wait(wait)
    finally:
        batches.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m harness.task.ingester")
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="holds the bearer token")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", default="tweets")
    parser.add_argument("--resume", choices=RESUMES, default="recovery")
    parser.add_argument("--backfill-scale", type=_scale, default=1.0)
    parser.add_argument("--batch", type=int, default=BATCH, help="tweets per batch (message)")
    parser.add_argument("--publish", metavar="CHANNEL", help="also PUBLISH each batch there")
    parser.add_argument("--published-log", type=Path, help="each PUBLISH's receivers")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch: must be at least 1, got {args.batch}")

    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise SystemExit(0)  # out of a blocking read; ingest() flushes on the way out

    signal.signal(signal.SIGTERM, on_sigterm)
    token = args.token_file.read_text().strip()
    client = redis.Redis.from_url(args.redis_url)
    batches = Batches(client, args.key, args.batch, args.publish, args.published_log)
    ingest(
        args.stream_url, token, args.redis_url, args.key, stop, args.resume,
        args.backfill_scale, batches,
    )  # fmt: skip
    return 0


def _scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text}: must be in (0, 1]")
    return value


if __name__ == "__main__":
    sys.exit(main())
