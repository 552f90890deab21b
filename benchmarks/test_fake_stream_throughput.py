"""Throughput of the fake stream: tweets/s delivered to ONE consumer over loopback.

Run: ``pytest benchmarks --benchmark-only`` (or ``nox -s bench``). Three measurements, each
``DURATION`` seconds of streaming, the ledger on and realistic tweets (with ``includes``
and ``matching_rules``, ~600 bytes each):

sustain
    ``--rate 150000`` with the default queue limit: the all-time record (143,199/s) must
    stream for 10 s without the server dropping anything for queue overflow, and the
    consumer must count exactly what the ledger says its TCP acknowledged.
max
    ``--rate 2000000 --queue-size 0``: tweets are always waiting, so the server writes as
    fast as it can; what reaches the consumer is the server's top speed.
ceiling
    a bare asyncio server writing the same pre-serialised, chunk-framed bytes in a loop to
    the same consumer: what loopback, one Python consumer and this machine allow. The
    ratio max/ceiling says how much of that the real server achieves.

The consumer is a separate process reading a raw socket and counting ``{"data":`` (a
tail is carried across ``recv`` boundaries, so a marker split between two reads counts
once). It measures its own rate over the first ``DURATION`` seconds after the first
byte, then keeps reading to EOF so its total can be checked against the ledger.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from fake_stream import snowflake
from fake_stream.capture import CaptureWriter
from fake_stream.config import ServerConfig
from fake_stream.ledger import LedgerReader
from fake_stream.tweets import TweetFactory
from harness.run.services import StreamServerProcess

DURATION = 10.0
MARKER = b'{"data":'
TOKEN = "bench-token"
MAX_BATCH = ServerConfig.max_batch  # tweets per HTTP chunk, as the server writes them
PATH = "/2/tweets/search/stream"
_CTX = mp.get_context("fork")  # the children only run the functions below

_results: dict[str, dict[str, Any]] = {}


# --- the consumer ---------------------------------------------------------------------------


def consume(host: str, port: int, token: str, duration: float, report: Connection) -> None:
    """Read one stream connection to EOF, counting tweets; report via ``report``."""
    sock = socket.create_connection((host, port))
    sock.sendall(
        f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n".encode()
    )
    report.send({"connected": time.time()})
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    keep = len(MARKER) - 1
    tail = b""
    head = b""
    count = nbytes = 0
    first = window_end = None
    window_count = 0
    window_time = 0.0
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        now = time.monotonic()
        if first is None:
            first = now
            window_end = first + duration
            head = bytes(view[: min(n, 200)])
        data = tail + view[:n].tobytes()
        count += data.count(MARKER)
        tail = data[-keep:]
        nbytes += n
        if now <= window_end:
            window_count, window_time = count, now - first
    sock.close()
    report.send(
        {
            "status_line": head.split(b"\r\n", 1)[0].decode("latin-1"),
            "tweets": count,
            "bytes": nbytes,
            "window_tweets": window_count,
            "window_seconds": window_time,
        }
    )


class Consumer:
    """The consumer process and its reports."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self._reports, child = _CTX.Pipe(duplex=False)
        self.process = _CTX.Process(
            target=consume, args=(host, port, token, DURATION, child), daemon=True
        )
        self.process.start()
        child.close()
        if not self._reports.poll(30):
            raise RuntimeError("consumer did not connect")
        self._reports.recv()

    def result(self, timeout: float = 30.0) -> dict[str, Any]:
        if not self._reports.poll(timeout):
            raise RuntimeError("consumer did not finish")
        result = self._reports.recv()
        self.process.join(10)
        result["tweets_per_s"] = result["window_tweets"] / max(result["window_seconds"], 1e-9)
        return result

    def stop(self) -> None:
        """Only if something went wrong: end our own child by its handle."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# --- the fake stream server ---------------------------------------------------------------------


def run_server(ledger: Path, args: list[str]) -> dict[str, Any]:
    """Stream to one consumer for DURATION s, stop the server while it reads, read the
    ledger. Returns the consumer's figures and the ledger's."""
    server = StreamServerProcess(ledger, ["--seed", "1", *args], token=TOKEN)
    consumer = None
    try:
        address = urlsplit(server.url)
        consumer = Consumer(address.hostname, address.port, TOKEN)
        time.sleep(DURATION + 0.5)  # the consumer's window is DURATION s after first byte
        exit_code = server.stop()  # SIGTERM while the consumer reads
        result = consumer.result()
    finally:
        server.stop()
        if consumer is not None:
            consumer.stop()
    ledger_reader = LedgerReader(ledger)
    connections = ledger_reader.connections()  # empty if the server died before a flush
    conn_id = connections[0]["conn_id"] if connections else -1
    result.update(
        exit_code=exit_code,
        stopped_cleanly=ledger_reader.stopped_cleanly,
        connections=len(connections),
        end_reason=connections[0]["end_reason"] if connections else None,
        created=ledger_reader.created_total,
        acked=len(ledger_reader.delivered_indexes(conn_id, "acked")),
        unknown=len(ledger_reader.delivered_indexes(conn_id, "unknown")),
        overflow_drops=sum(len(d) for d in ledger_reader.drops() if d.reason == "queue_overflow"),
    )
    return result


# --- the ceiling: a bare asyncio writer of the same bytes -----------------------------------------


def framed_chunks(seed: int = 1, tweets: int = 4 * MAX_BATCH) -> list[bytes]:
    """Realistic tweets rendered by the server's own factory, framed as the server's HTTP
    chunks are (aiohttp: ``<hex length>\\r\\n<lines>\\r\\n``), MAX_BATCH lines each."""
    factory = TweetFactory(seed)
    t0 = int(time.time() * 1000)
    indexes = np.arange(tweets, dtype=np.int64)
    ms = t0 + indexes // 150
    ids = snowflake.encode_array(ms, indexes % 150)
    rule = TweetFactory.rule_suffix(str(snowflake.encode(t0, 1)), "all")
    lines = factory.lines(indexes, ids, ms, [rule])
    chunks = []
    for start in range(0, tweets, MAX_BATCH):
        body = b"".join(lines[start : start + MAX_BATCH])
        chunks.append(b"%x\r\n" % len(body) + body + b"\r\n")
    return chunks


def ceiling_server(duration: float, report: Connection) -> None:
    """Serve one connection: write the framed chunks in a loop for ``duration`` s after
    the request, then the final chunk, and exit."""
    chunks = framed_chunks()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )

    async def main() -> None:
        done = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            deadline = time.monotonic() + duration + 0.5
            while time.monotonic() < deadline:
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()  # waits only above the 64 KiB high-water mark
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        report.send(server.sockets[0].getsockname()[1])
        await done.wait()
        server.close()

    asyncio.run(main())


def run_ceiling() -> dict[str, Any]:
    ports, child = _CTX.Pipe(duplex=False)
    process = _CTX.Process(target=ceiling_server, args=(DURATION, child), daemon=True)
    process.start()
    child.close()
    consumer = None
    try:
        if not ports.poll(60):
            raise RuntimeError("ceiling server did not start")
        consumer = Consumer("127.0.0.1", ports.recv(), TOKEN)
        return consumer.result(timeout=DURATION + 30)
    finally:
        if consumer is not None:
            consumer.stop()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)


# --- the benchmarks -------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{os.cpu_count()} cpus, {model}, {python}"


def measured(name: str, tmp_path: Path) -> dict[str, Any]:
    """Each measurement at most once per session (the ceiling test reuses max's)."""
    if name not in _results:
        if name == "sustain":
            _results[name] = run_server(tmp_path / "sustain.sqlite", ["--rate", "150000"])
        elif name == "max":
            _results[name] = run_server(
                tmp_path / "max.sqlite", ["--rate", "2000000", "--queue-size", "0"]
            )
        elif name == "replay_sustain":  # 15,000 tweets in 0.1 s, looped: 150,000/s
            capture = replay_capture(tmp_path / "sustain.ndjson", 15_000, 150_000)
            _results[name] = run_server(
                tmp_path / "replay_sustain.sqlite",
                ["--replay", str(capture), "--loop", "--shift-ids"],
            )
        elif name == "replay_max":  # the same capture 10x faster: 1,500,000/s offered
            capture = replay_capture(tmp_path / "max.ndjson", 15_000, 150_000)
            _results[name] = run_server(
                tmp_path / "replay_max.sqlite",
                [
                    "--replay",
                    str(capture),
                    "--loop",
                    "--shift-ids",
                    "--speed",
                    "10",  # a 10 ms pass: the shortest loop a replay takes (MIN_PASS_US)
                    "--queue-size",
                    "0",
                ],
            )
        else:
            _results[name] = run_ceiling()
    return _results[name]


def replay_capture(path: Path, tweets: int, per_second: int) -> Path:
    """A capture of ``tweets`` of the server's own tweets (the same sizes as generated
    ones) arriving ``per_second``, written as ``python -m fake_stream record`` writes."""
    factory = TweetFactory(7)
    t0 = snowflake.TWEPOCH + 10**12
    indexes = np.arange(tweets, dtype=np.int64)
    ms = t0 + indexes * 1000 // per_second
    ids = snowflake.encode_array(ms, indexes)
    rule = TweetFactory.rule_suffix("1", "all")
    writer = CaptureWriter(path, {"source": "benchmark", "rules": None, "started_at": 0})
    for i, line in enumerate(factory.lines(indexes, ids, ms, [rule])):
        writer.add(i * 1000 / per_second, "tweet", json.loads(line))
    writer.end(tweets * 1000 / per_second, "seconds")
    return path


def record(benchmark, result: dict[str, Any]) -> None:
    benchmark.extra_info.update(
        {
            "tweets_per_s": round(result["tweets_per_s"]),
            "window_tweets": result["window_tweets"],
            "window_seconds": round(result["window_seconds"], 3),
            "bytes_per_tweet": round(result["bytes"] / max(result["tweets"], 1), 1),
            "machine": machine(),
        }
    )


def check_ledger(result: dict[str, Any]) -> None:
    """The server stopped cleanly and its ledger agrees with the independent count."""
    assert result["status_line"] == "HTTP/1.1 200 OK"
    assert result["exit_code"] == 0
    assert result["stopped_cleanly"]
    assert result["connections"] == 1
    assert result["end_reason"] == "server_shutdown"
    assert result["overflow_drops"] == 0
    # The consumer read to EOF after a clean end: it has everything written, and the
    # server saw every byte acknowledged before it closed (nothing left "unknown").
    assert result["tweets"] == result["acked"]
    assert result["unknown"] == 0


def test_sustain_150k(benchmark, tmp_path: Path, capsys) -> None:
    """--rate 150000, default queue: no overflow for 10 s; consumer count == ledger acks."""
    result = benchmark.pedantic(lambda: measured("sustain", tmp_path), rounds=1, iterations=1)
    record(benchmark, result)
    benchmark.extra_info.update(
        created=result["created"], acked=result["acked"], overflow_drops=result["overflow_drops"]
    )
    with capsys.disabled():
        print(
            f"\nsustain: {result['tweets_per_s']:,.0f} tweets/s delivered at --rate 150000; "
            f"{result['overflow_drops']} dropped for overflow; "
            f"consumer {result['tweets']:,} == ledger acked {result['acked']:,}"
        )
    check_ledger(result)
    # The generator must have kept up with the clock: ~150k/s over the run, and the
    # consumer with the generator (10% slack: the window ends at a recv boundary).
    assert result["tweets_per_s"] >= 0.9 * 150_000


def test_max_rate(benchmark, tmp_path: Path, capsys) -> None:
    """--rate 2000000 --queue-size 0: the server's top delivery speed to one consumer.

    Only the delivery figure is asserted here. The server's shutdown and ledger are
    recorded in extra_info, not asserted: while it writes a backlog to a consumer that
    keeps up, its event loop never runs anything else (SIGTERM included), so it is killed
    after the grace period (a known bug of fake_stream/session.py, pinned by
    tests/fake_stream/test_timeline.py::test_live_server_keeps_its_clock_while_draining_a_backlog).
    """
    result = benchmark.pedantic(lambda: measured("max", tmp_path), rounds=1, iterations=1)
    record(benchmark, result)
    benchmark.extra_info.update(
        created=result["created"],
        acked=result["acked"],
        consumer_total=result["tweets"],
        exit_code=result["exit_code"],
        stopped_cleanly=result["stopped_cleanly"],
    )
    shutdown = (
        "clean stop"
        if result["exit_code"] == 0
        else "server ignored SIGTERM and was killed: ledger not final"
    )
    with capsys.disabled():
        print(
            f"\nmax: {result['tweets_per_s']:,.0f} tweets/s delivered (rate 2,000,000/s; "
            f"{shutdown})"
        )
    assert result["status_line"] == "HTTP/1.1 200 OK"
    assert result["window_tweets"] > 0


def test_replay_sustain_150k(benchmark, tmp_path: Path, capsys) -> None:
    """A capture replayed at 150,000 tweets/s (looped, ids minted): as the generated
    stream's sustain, no overflow for 10 s and the consumer's count == the ledger's."""
    result = benchmark.pedantic(
        lambda: measured("replay_sustain", tmp_path), rounds=1, iterations=1
    )
    record(benchmark, result)
    benchmark.extra_info.update(created=result["created"], acked=result["acked"])
    with capsys.disabled():
        print(
            f"\nreplay sustain: {result['tweets_per_s']:,.0f} tweets/s delivered at 150,000/s "
            f"replayed; {result['overflow_drops']} dropped for overflow"
        )
    check_ledger(result)
    assert result["tweets_per_s"] >= 0.9 * 150_000


def test_replay_max(benchmark, tmp_path: Path, capsys) -> None:
    """A capture replayed at 1,500,000/s offered, no queue limit: the replay path's top
    delivery speed, beside the generated stream's (``max``)."""
    result = benchmark.pedantic(lambda: measured("replay_max", tmp_path), rounds=1, iterations=1)
    record(benchmark, result)
    generated = measured("max", tmp_path)
    ratio = result["tweets_per_s"] / generated["tweets_per_s"]
    benchmark.extra_info.update(
        generated_max_tweets_per_s=round(generated["tweets_per_s"]), ratio=round(ratio, 3)
    )
    with capsys.disabled():
        print(
            f"\nreplay max: {result['tweets_per_s']:,.0f} tweets/s delivered; generated max "
            f"{generated['tweets_per_s']:,.0f}/s; replay/generated {ratio:.2f} [{machine()}]"
        )
    assert result["status_line"] == "HTTP/1.1 200 OK"
    assert result["window_tweets"] > 0


def test_ceiling(benchmark, tmp_path: Path, capsys) -> None:
    """A bare asyncio writer of the same framed bytes; ratio max/ceiling."""
    result = benchmark.pedantic(lambda: measured("ceiling", tmp_path), rounds=1, iterations=1)
    record(benchmark, result)
    top = measured("max", tmp_path)  # measured by test_max_rate in the same run
    ratio = top["tweets_per_s"] / result["tweets_per_s"]
    benchmark.extra_info.update(max_tweets_per_s=round(top["tweets_per_s"]), ratio=round(ratio, 3))
    sustain = _results.get("sustain")
    with capsys.disabled():
        print(
            "\nfake_stream throughput: "
            + (
                f"sustain {sustain['tweets_per_s']:,.0f}/s at --rate 150000 "
                f"({sustain['overflow_drops']} overflow drops), "
                if sustain
                else ""
            )
            + f"max {top['tweets_per_s']:,.0f}/s, ceiling {result['tweets_per_s']:,.0f}/s, "
            f"max/ceiling {ratio:.2f} [{machine()}]"
        )
    assert result["status_line"] == "HTTP/1.1 200 OK"
    assert result["tweets"] > 0


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "--benchmark-only", "-s"])
