"""The queue variant's ingester: reads the stream outside Airflow, appends to a Redis Stream.

``python -m harness.task.ingester --stream-url URL --token-file F --redis-url URL [--key K]``

Each tweet line goes to the stream ``key`` as one entry (``XADD``, field ``line``), in
pipelined batches of up to ``BATCH``, and at least every ``FLUSH_INTERVAL`` s: a batch
flushed only when full would hold the last tweets of a quiet stream for as long as it
stays quiet. It resumes after the newest tweet already in the stream (``since_id`` from
its last entry), so restarting it neither skips nor repeats, and reconnects after a
dropped connection. It never stops on its own: the harness stops it with SIGTERM, and what
it holds then is flushed first.
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

BATCH = 200
FLUSH_INTERVAL = 0.2  # seconds: the most a tweet waits in a batch that is not full


def newest_id(client: redis.Redis, key: str) -> int | None:
    entries = client.xrevrange(key, count=1)
    return int(json.loads(entries[0][1][b"line"])["data"]["id"]) if entries else None


class Batches:
    """``XADD``s pipelined, sent when ``BATCH`` are queued or by :meth:`flush` (a timer's)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.key = key
        self._pipe = client.pipeline(transaction=False)
        self._queued = 0
        self._lock = threading.RLock()  # SIGTERM may land inside add(): then flush()

    def add(self, line: bytes) -> None:
        with self._lock:
            self._pipe.xadd(self.key, {"line": line})
            self._queued += 1
            if self._queued >= BATCH:
                self._send()

    def flush(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        if self._queued:
            self._pipe.execute()
            self._queued = 0


def ingest(stream_url: str, token: str, redis_url: str, key: str, stop: threading.Event) -> None:
    client = redis.Redis.from_url(redis_url)
    headers = {"Authorization": f"Bearer {token}"}
    batches = Batches(client, key)

    def flush_on_time() -> None:
        while not stop.wait(FLUSH_INTERVAL):
            batches.flush()

    threading.Thread(target=flush_on_time, daemon=True).start()
    try:
        while not stop.is_set():
            since = newest_id(client, key)
            params = {"since_id": str(since)} if since is not None else None
            try:
                with requests.get(
                    stream_url, headers=headers, params=params, stream=True, timeout=30
                ) as response:
                    response.raise_for_status()
                    for line in response.iter_lines(chunk_size=4096):
                        if line.startswith(b'{"data"'):
                            batches.add(line)
            except requests.RequestException as e:
                print(f"stream error: {e}; reconnecting", file=sys.stderr)
            batches.flush()  # before since_id is read from the stream again
            time.sleep(0.2)
    finally:
        batches.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.task.ingester")
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="holds the bearer token")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", default="tweets")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise SystemExit(0)  # out of a blocking read; ingest() flushes on the way out

    signal.signal(signal.SIGTERM, on_sigterm)
    token = args.token_file.read_text().strip()
    ingest(args.stream_url, token, args.redis_url, args.key, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
