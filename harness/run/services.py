"""What a run starts beside Airflow: the fake stream server, and for the queue variants a
Redis broker with the ingester that fills it from the stream (and, for the event-driven
variant, publishes each batch to the channel Airflow's asset watcher listens to).

Each is an :class:`~harness.procs.OwnedProcess` on 127.0.0.1; their logs and data go to
the run folder (``redis/``, ``ingester.log``).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import requests

from fake_stream.ledger import LedgerReader
from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.redis_server import RedisServer
from harness.task.variants.common import PARAMS
from harness.task.variants.event_driven import CHANNEL
from harness.task.variants.queue_decoupled import GROUP

__all__ = ["StreamServerProcess", "queue_for"]


class StreamServerProcess:
    """``python -m fake_stream serve`` in a process group we own.

    The bearer token is random unless given, and reaches the server in a file only we can
    read (``token_file``, next to the ledger), never on a command line (``ps`` shows those
    to every local user).

    :param ledger: the ledger file to create.
    :param args: more ``serve`` options, e.g. ``["--rate", "1000", "--seed", "7"]``.
    :param token: the bearer token (default: a new random one).
    """

    def __init__(
        self,
        ledger: Path,
        args: Sequence[str] = (),
        token: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.token = token or secrets.token_urlsafe(24)
        self.token_file = ledger.with_name(ledger.stem + ".token")
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(self.token + "\n")
        argv = [
            sys.executable, "-m", "fake_stream", "serve",
            "--token-file", str(self.token_file), "--ledger", str(ledger), *args,
        ]  # fmt: skip
        self.process = OwnedProcess(argv)
        self.info = self._read_announcement(startup_timeout)
        self.url: str = self.info["url"]
        self.stream_url: str = self.info["stream_url"]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self._control = requests.Session()
        self._control.headers.update(self.headers)

    def _read_announcement(self, timeout: float) -> dict[str, Any]:
        stdout = self.process.popen.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            code = self.process.stop()
            raise RuntimeError(f"fake stream did not start (exit code {code}): {self.process.argv}")
        return json.loads(line)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_control/<path>``; raise on an error status; return the JSON answer."""
        response = self._control.request(
            method, f"{self.url}/_control/{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def stop(self) -> int | None:
        """SIGTERM: the server ends its streams, flushes the ledger and exits 0."""
        self._control.close()
        return self.process.stop()

    def ledger_reader(self) -> LedgerReader:
        return LedgerReader(self.ledger)

    def __enter__(self) -> StreamServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_drained(
    url: str, newest_id: str | None, key: str = PARAMS["redis_stream"], group: str = GROUP
) -> bool:
    """Whether the Redis Stream holds every tweet up to ``newest_id`` (the stream's newest:
    the ingester caught up) and the consumer group has read and acknowledged every entry
    (an entry read by a consumer that died stays pending: not drained)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        if not client.exists(key):
            return newest_id is None
        entries = client.xrevrange(key, count=1)
        newest_queued = json.loads(entries[0][1][b"line"])["data"]["id"] if entries else None
        if newest_id is not None and (newest_queued is None or int(newest_queued) < int(newest_id)):
            return False
        last = client.xinfo_stream(key)["last-generated-id"]
        groups = {g["name"]: g for g in client.xinfo_groups(key)}
        mine = groups.get(group.encode())
        return mine is not None and mine["pending"] == 0 and mine["last-delivered-id"] == last
    finally:
        client.close()


def published_through(log: Path, newest_id: str | None) -> bool:
    """Whether the ingester has published every tweet up to ``newest_id`` (the stream's
    newest), from its ``--published-log``."""
    if newest_id is None:
        return True
    lines = log.read_bytes().splitlines() if log.exists() else []
    complete = [line for line in lines if line.endswith(b"}")]  # the last may be half written
    return bool(complete) and int(json.loads(complete[-1])["last_id"]) >= int(newest_id)


#: Seconds the event-driven ingester waits for the watcher to subscribe: Airflow registers
#: a watcher when it parses the unpaused DAG (every 30 s), the triggerer starts it.
SUBSCRIBER_TIMEOUT = 120.0


@contextmanager
def queue_for(
    layout: RunLayout,
    server: StreamServerProcess,
    resume: str = "since_id",
    scale: float = 1.0,
    publish_batch: int | None = None,
) -> Iterator[tuple[dict[str, Any], Callable[[str | None], bool]]]:
    """A Redis broker fed by the ingester from ``server`` (resuming with ``resume`` at
    ``scale``: harness/task/resume.py); yields the conf the task needs and whether the
    queue is drained up to a newest tweet id (:func:`redis_drained`).

    With ``publish_batch``, the ingester also publishes batches of that many tweets to
    :data:`CHANNEL`, and starts once a subscriber listens there (Airflow's watcher: before
    it, every message would reach nobody, which is the harness's doing, not the
    variant's); drained then means published (:func:`published_through`)."""
    broker = RedisServer(layout.root / "redis")
    published = layout.root / "published.jsonl"
    argv = [
        sys.executable, "-m", "harness.task.ingester", "--stream-url", server.stream_url,
        "--token-file", str(server.token_file), "--redis-url", broker.url,
        "--resume", resume, "--backfill-scale", str(scale),
    ]  # fmt: skip
    if publish_batch is not None:
        argv += ["--batch", str(publish_batch), "--publish", CHANNEL]
        argv += ["--published-log", str(published)]
    started: list[OwnedProcess] = []
    cancelled = threading.Event()

    def start() -> None:
        if publish_batch is not None:
            client = redis.Redis.from_url(broker.url, socket_timeout=5)
            deadline = time.monotonic() + SUBSCRIBER_TIMEOUT
            while not dict(client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode()):
                if cancelled.wait(0.05) or time.monotonic() > deadline:
                    client.close()
                    return  # never listened: the run sees no tweet (verdict unobserved)
            client.close()
        with open(layout.root / "ingester.log", "ab") as log:
            started.append(OwnedProcess(argv, stdout=log, stderr=subprocess.STDOUT))

    # The event-driven ingester waits for its subscriber in the background: the watcher
    # appears only after the task has started (the DAG unpaused, then parsed).
    starter = threading.Thread(target=start, daemon=True)
    try:
        if publish_batch is not None:
            starter.start()
            yield {"redis_url": broker.url}, lambda newest: published_through(published, newest)
        else:
            start()
            yield (
                {"redis_url": broker.url},
                lambda newest_id: redis_drained(broker.url, newest_id),
            )
    finally:
        cancelled.set()
        if starter.is_alive():
            starter.join()
        for ingester in started:
            ingester.stop()
        broker.stop()
