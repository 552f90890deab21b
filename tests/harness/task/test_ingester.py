"""The queue variant's ingester on a real stream and a real Redis: when the stream goes
quiet, what it read is in Redis within its flush interval, not held for a full batch; and
the runner's "drained" test of the queue."""

from __future__ import annotations

import json
import sys
import time

import pytest
import redis

from harness.procs import OwnedProcess
from harness.redis_server import RedisServer
from harness.run.services import StreamServerProcess, redis_drained
from harness.task.ingester import FLUSH_INTERVAL
from harness.task.variants.queue_decoupled import GROUP


@pytest.mark.slow
def test_a_quiet_stream_leaves_nothing_in_the_ingesters_hands(tmp_path):
    server = StreamServerProcess(tmp_path / "ledger.sqlite", ["--rate", "1000", "--seed", "9"])
    broker = RedisServer(tmp_path / "redis")
    argv = [
        sys.executable, "-m", "harness.task.ingester", "--stream-url", server.stream_url,
        "--token-file", str(server.token_file), "--redis-url", broker.url,
    ]  # fmt: skip
    ingester = OwnedProcess(argv)
    client = redis.Redis.from_url(broker.url)
    try:
        deadline = time.monotonic() + 30
        while not client.exists("tweets") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        # 1,000 tweets/s stop at some point inside a batch of 200: the tail must still come.
        server.control("PUT", "rate", {"kind": "constant", "rate": 0})
        time.sleep(FLUSH_INTERVAL + 1.0)
        stats = server.control("GET", "stats")
        (connection,) = stats["connections"]
        assert connection["backlog"] == 0
        newest = json.loads(client.xrevrange("tweets", count=1)[0][1][b"line"])["data"]["id"]
        assert newest == stats["newest_id"]
        assert client.xlen("tweets") == connection["tweets_sent"] > 500
        # Nobody has read the queue yet: not drained. A consumer that reads and
        # acknowledges every entry drains it.
        assert not redis_drained(broker.url, stats["newest_id"])
        client.xgroup_create("tweets", GROUP, id="0")
        entries = client.xreadgroup(GROUP, "c", {"tweets": ">"}, count=100_000)[0][1]
        assert not redis_drained(broker.url, stats["newest_id"])  # read, not acknowledged
        client.xack("tweets", GROUP, *[entry_id for entry_id, _ in entries])
        assert redis_drained(broker.url, stats["newest_id"])
    finally:
        client.close()
        ingester.stop()
        broker.stop()
        server.stop()
