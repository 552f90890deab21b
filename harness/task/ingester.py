"""The queue variant's ingester: reads the stream outside Airflow, appends to a Redis Stream.

``python -m harness.task.ingester --stream-url URL --token T --redis-url URL [--key tweets]``

Each tweet line goes to the stream ``key`` as one entry (``XADD``, field ``line``), in
pipelined batches. It resumes after the newest tweet already in the stream (``since_id``
from its last entry), so restarting it neither skips nor repeats, and reconnects after a
dropped connection. It never stops on its own: the harness stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

import redis
import requests

BATCH = 200


def newest_id(client: redis.Redis, key: str) -> int | None:
    entries = client.xrevrange(key, count=1)
    return int(json.loads(entries[0][1][b"line"])["data"]["id"]) if entries else None


def ingest(stream_url: str, token: str, redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        since = newest_id(client, key)
        params = {"since_id": str(since)} if since is not None else None
        try:
            with requests.get(
                stream_url, headers=headers, params=params, stream=True, timeout=30
            ) as response:
                response.raise_for_status()
                pipe = client.pipeline(transaction=False)
                queued = 0
                for line in response.iter_lines(chunk_size=4096):
                    if not line.startswith(b'{"data"'):
                        continue
                    pipe.xadd(key, {"line": line})
                    queued += 1
                    if queued >= BATCH:
                        pipe.execute()
                        queued = 0
                if queued:
                    pipe.execute()
        except requests.RequestException as e:
            print(f"stream error: {e}; reconnecting", file=sys.stderr)
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.task.ingester")
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", default="tweets")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    ingest(args.stream_url, args.token, args.redis_url, args.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
