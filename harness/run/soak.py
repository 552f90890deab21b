"""``python -m harness.run.soak``: a long run of the fake stream, watched for leaks and loss.

Starts a real server on loopback (``--rate``, default 5,000 tweets/s) with a cycle of stream
faults (a reset, an operational disconnect, a duplicate, a stall that ends in a FIN, a
truncated line, a byte limit), and one consumer that reads every byte and reconnects with
``since_id`` after each fault. Every ``--interval`` seconds it prints, and appends to a
JSONL file, the server's RSS and CPU, the ledger's size and growth, and the consumer's count
against the ledger's for each finished connection. The last line is the summary: RSS after
``--warmup`` (flat: max - min within 10 MB, i.e. +-5 MB), CPU, ledger growth per hour,
mismatches.

Exit 0 when the consumer and the ledger agree and RSS is flat, 1 otherwise, 2 for bad
options; on Ctrl-C/SIGTERM it stops what it started, prints the summary so far and exits
128 + the signal (1 if it found a mismatch first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np
import orjson
import requests

from fake_stream import snowflake
from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess

__all__ = ["Connection", "Consumer", "LedgerCheck", "fault_cycle", "main"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_FLAT_MB = 10.0  # +-5 MB


def fault_cycle(period: float) -> list[dict[str, Any]]:
    """Stream faults that each fire once per ``period`` seconds, spread over it; every one
    ends or corrupts the consumer's connection, or repeats a tweet."""

    def at(fraction: float, length: float) -> dict[str, float]:
        return {"at": fraction * period, "duration": length * period, "every": period}

    return [
        {"type": "reset_peer", "name": "reset", "schedule": at(0.10, 0.01)},
        {"type": "disconnect", "name": "disconnect", "schedule": at(0.25, 0.02)},
        {"type": "duplicate", "name": "duplicate", "schedule": at(0.40, 0.02)},
        {
            "type": "timeout",
            "name": "stall",
            "schedule": at(0.55, 0.06),
            "attributes": {"close_after": 0.04 * period},
        },
        {"type": "malformed", "name": "truncate", "schedule": at(0.70, 0.02)},
        {
            "type": "limit_data",
            "name": "limit",
            "schedule": at(0.85, 0.01),
            "attributes": {"bytes": 262_144},
        },
    ]


# The consumer and its check against the ledger ---------------------------------------------


@dataclass
class Connection:
    """One connect of the consumer: the query it sent, when, and what it parsed."""

    number: int
    params: str
    connecting_at: float
    answered_at: float = math.inf
    status: int | None = None
    ids: array = field(default_factory=lambda: array("q"))
    parsed: int = 0  # tweets parsed (ids is emptied once compared)
    newest: int = 0  # the newest id parsed: the next connect's since_id
    malformed: int = 0  # lines that were not JSON (a truncated or garbage line)
    ended: str = ""  # how it ended; set last: a connection with it is finished


class Consumer(threading.Thread):
    """Reads the stream to the end of every connection, parsing every line, and reconnects
    with ``since_id`` (the newest id seen) until :attr:`finishing` is set. The first
    connect also carries a ``since_id`` (the time it started), so that each of its
    connections has a query no other client sends."""

    def __init__(self, stream_url: str, token: str, read_timeout: float = 30.0) -> None:
        super().__init__(name="soak-consumer", daemon=True)
        self.url = stream_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.read_timeout = read_timeout
        self.connections: list[Connection] = []
        self.finishing = threading.Event()
        self._since = snowflake.encode(int(time.time() * 1000), 0)

    def run(self) -> None:
        while not self.finishing.is_set():
            conn = Connection(len(self.connections), f"since_id={self._since}", time.time())
            self.connections.append(conn)
            self._read(conn)
            self._since = max(self._since, conn.newest)
            if not conn.parsed:  # refused, or nothing came: do not hammer the server
                self.finishing.wait(0.2)

    def _read(self, conn: Connection) -> None:
        try:
            with requests.get(
                f"{self.url}?{conn.params}",
                headers=self.headers,
                stream=True,
                timeout=(5, self.read_timeout),
            ) as response:
                conn.answered_at, conn.status = time.time(), response.status_code
                if response.status_code != 200:
                    conn.ended = f"http {response.status_code}"
                    return
                for line in response.iter_lines(chunk_size=65536, delimiter=b"\r\n"):
                    if line:
                        self._parse(conn, line)
            conn.ended = "clean"  # the final chunk came
        except requests.RequestException as e:  # reset, FIN mid-body, silence, refused
            conn.ended = type(e).__name__

    @staticmethod
    def _parse(conn: Connection, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            conn.malformed += 1
            return
        data = message.get("data") if isinstance(message, dict) else None
        try:
            tweet_id = int(data["id"]) if isinstance(data, dict) else None
        except (KeyError, TypeError, ValueError):
            tweet_id = None
        if tweet_id is None or not 0 <= tweet_id < 2**63:
            if not isinstance(message, dict) or "data" in message:
                conn.malformed += 1  # JSON, but not a tweet nor an error or warning
            return
        conn.ids.append(tweet_id)
        conn.parsed += 1
        conn.newest = max(conn.newest, tweet_id)

    def finished(self) -> list[Connection]:
        return [c for c in list(self.connections) if c.ended]

    def finish(self, timeout: float) -> None:
        """No more connects; wait up to ``timeout`` s for the current one to end."""
        self.finishing.set()
        self.join(timeout)


class LedgerCheck:
    """Compares each finished connection of a consumer with the ledger, once.

    A connection is matched to the ledger's by its query string and opening time. Every
    tweet the ledger says reached it (``acked``: the client's TCP acknowledged it) must
    have been parsed, and every tweet parsed must be in the ledger's deliveries to it
    (``acked`` or ``unknown``), as many times. With ``sole_client``, a ledger connection
    that no consumer connection claims is a mismatch too if anything was acked on it.
    """

    def __init__(self, ledger: Path, sole_client: bool = True) -> None:
        self.ledger = ledger
        self.sole_client = sole_client
        self.compared = self.tweets = self.acked = self.unknown = 0
        self.mismatches: list[dict[str, Any]] = []
        self._checked: set[int] = set()  # consumer connection numbers
        self._claimed: set[int] = set()  # ledger conn_ids

    def totals(self) -> dict[str, int]:
        return {
            "compared": self.compared,
            "consumer_tweets": self.tweets,
            "ledger_acked": self.acked,
            "ledger_unknown": self.unknown,
            "mismatches": len(self.mismatches),
        }

    def update(self, finished: list[Connection], final: bool = False) -> None:
        """Compare what can be compared now; ``final``: the server has stopped, so every
        connection is closed in the ledger and whatever is unmatched is a mismatch."""
        reader = LedgerReader(self.ledger)
        rows = reader.connections()
        with sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True) as db:
            for conn in finished:
                if conn.number in self._checked or conn.status != 200:
                    continue
                row = self._match(rows, conn)
                if row is None or row["closed_at"] is None:
                    if final:
                        self._checked.add(conn.number)
                        self._mismatch(conn, None, "no closed connection in the ledger")
                    continue
                self._checked.add(conn.number)
                self._claimed.add(row["conn_id"])
                self._compare(reader, db, row["conn_id"], conn)
        if final and self.sole_client:
            for row in rows:
                acked = len(reader.delivered_indexes(row["conn_id"]))
                if row["conn_id"] not in self._claimed and acked:
                    self.mismatches.append(
                        {"conn_id": row["conn_id"], "why": f"{acked} acked, no consumer"}
                    )

    def _match(self, rows: list[dict[str, Any]], conn: Connection) -> dict[str, Any] | None:
        for row in rows:
            opened = row["opened_at"] or 0.0
            if (
                row["conn_id"] not in self._claimed
                and row["params"] == conn.params
                # the server's clock is ours; a second of slack for a loaded machine
                and conn.connecting_at - 1 <= opened <= conn.answered_at + 1
            ):
                return row
        return None

    def _compare(
        self, reader: LedgerReader, db: sqlite3.Connection, conn_id: int, conn: Connection
    ) -> None:
        got = Counter(_indexes(db, reader.t0_ms, conn.ids).tolist())
        acked = Counter(reader.delivered_indexes(conn_id, "acked").tolist())
        unknown = Counter(reader.delivered_indexes(conn_id, "unknown").tolist())
        self.compared += 1
        self.tweets += conn.parsed
        self.acked += acked.total()
        self.unknown += unknown.total()
        missing, extra = acked - got, got - acked - unknown
        if missing or extra:
            self._mismatch(
                conn,
                conn_id,
                f"{missing.total()} acked but not parsed, {extra.total()} parsed but not sent",
            )
        conn.ids = array("q")  # compared: the memory goes back

    def _mismatch(self, conn: Connection, conn_id: int | None, why: str) -> None:
        self.mismatches.append(
            {
                "conn_id": conn_id,
                "params": conn.params,
                "ended": conn.ended,
                "parsed": conn.parsed,
                "why": why,
            }
        )


def _indexes(db: sqlite3.Connection, t0_ms: int, ids: array) -> np.ndarray:
    """Ledger indexes of tweet ids, from the ledger's ``created`` slots (only the range the
    ids span is read); -1 for an id the ledger never created."""
    ids_np = np.array(ids, dtype=np.int64)
    if not len(ids_np):
        return ids_np
    slot = (ids_np >> 22) + snowflake.TWEPOCH - t0_ms
    position = ids_np & (snowflake.MAX_PER_MS - 1)
    rows = db.execute(
        "SELECT slot, first, count FROM created WHERE slot BETWEEN ? AND ? ORDER BY slot",
        (int(slot.min()), int(slot.max())),
    ).fetchall()
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    if not len(table):
        return np.full(len(ids_np), -1, dtype=np.int64)
    row = np.minimum(np.searchsorted(table[:, 0], slot), len(table) - 1)
    known = (table[row, 0] == slot) & (position < table[row, 2])
    return np.where(known, table[row, 1] + position, -1)


@dataclass
class _Process:
    """CPU and memory of one process, from ``/proc``."""

    pid: int
    cpu_s: float = 0.0

    def sample(self) -> tuple[float, float]:
        """(RSS in MB, CPU seconds since the last sample)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
        used, self.cpu_s = cpu_s - self.cpu_s, cpu_s
        return rss_kb / 1024, used


def _ledger_mb(ledger: Path) -> float:
    files = [ledger, ledger.with_name(ledger.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


@dataclass
class _Soak:
    """The samples so far, and the summary they make."""

    warmup: float
    out: TextIO
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        self.out.write(line + "\n")
        self.out.flush()

    def summary(self, check: LedgerCheck, interrupted: int | None) -> dict[str, Any]:
        settled = [r for r in self.rows if r["t_s"] >= self.warmup] or self.rows[-1:]
        rss = [r["rss_mb"] for r in settled]
        first, last = (settled[0], settled[-1]) if settled else ({}, {})
        hours = (last.get("t_s", 0) - first.get("t_s", 0)) / 3600
        return {
            "samples": len(self.rows),
            "seconds": self.rows[-1]["t_s"] if self.rows else 0.0,
            "rss_mb_min": min(rss, default=None),
            "rss_mb_max": max(rss, default=None),
            # One sample after warm-up says nothing about a trend: not judged.
            "rss_flat": max(rss) - min(rss) <= _FLAT_MB if len(rss) > 1 else None,
            "cpu_percent_mean": (
                round(sum(r["cpu_percent"] for r in settled) / len(settled), 1) if settled else None
            ),
            "ledger_mb": last.get("ledger_mb"),
            "ledger_mb_per_h": (
                round((last["ledger_mb"] - first["ledger_mb"]) / hours, 1) if hours > 0 else None
            ),
            **check.totals(),
            "mismatch_samples": check.mismatches[:5],
            "interrupted_by": interrupted,
        }


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not cut the cleanup that stops the server.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise _Interrupted(signum)


def run(args: argparse.Namespace) -> int:
    """The soak itself; returns the exit code."""

    stamp = time.strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    ledger, jsonl = args.out / f"soak-{stamp}.sqlite", args.out / f"soak-{stamp}.jsonl"
    faults = [arg for f in fault_cycle(args.cycle) for arg in ("--fault", json.dumps(f))]
    options = ["--rate", str(args.rate), "--seed", str(args.seed), "--connect-limit", "0"]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_on_signal)
    server = consumer = None
    interrupted = died = None
    with jsonl.open("a") as out:
        soak = _Soak(args.warmup, out)
        try:
            server = StreamServerProcess(ledger, [*options, *faults])
            check = LedgerCheck(ledger)
            consumer = Consumer(server.stream_url, server.token)
            consumer.start()
            started = {"server_pid": server.process.pid, "url": server.url, "seed": args.seed}
            print(json.dumps({**started, "ledger": str(ledger), "jsonl": str(jsonl)}), flush=True)
            died = _watch(args, server, consumer, check, soak)
        except _Interrupted as e:
            interrupted = e.signum
        finally:
            if consumer is not None:
                consumer.finishing.set()  # read to the end of the stream, then no reconnect
            if server is not None:
                code = server.stop()  # SIGTERM by PID: streams end cleanly, ledger flushed
                died = died or (None if code == 0 else f"the server exited with {code}")
            if consumer is not None:
                consumer.finish(timeout=30)
        if server is None or consumer is None:
            return 128 + interrupted if interrupted else 1
        check.update(consumer.finished(), final=True)
        ends = Counter(c.ended for c in consumer.connections)
        summary = {**soak.summary(check, interrupted), "ends": ends, "server_failed": died}
        soak.record({"t_s": soak.rows[-1]["t_s"] if soak.rows else 0.0, "summary": summary})
    if summary["mismatches"] or summary["rss_flat"] is False or died:
        return 1
    return 128 + interrupted if interrupted else 0


def _watch(
    args: argparse.Namespace, server: Any, consumer: Consumer, check: LedgerCheck, soak: _Soak
) -> str | None:
    """Sample every ``args.interval`` s until the time is up; a reason if the server died."""
    process = _Process(server.process.pid)
    process.sample()
    start = last = time.monotonic()
    end = start + args.minutes * 60
    while last < end:
        time.sleep(max(0.0, min(last + args.interval, end) - time.monotonic()))
        try:
            rss, cpu = process.sample()
            stats = server.control("GET", "stats")
        except (OSError, StopIteration, requests.RequestException) as e:
            return f"the server stopped answering: {e!r}"
        now = time.monotonic()
        check.update(consumer.finished())
        soak.record(
            {
                "t_s": round(now - start, 1),
                "rss_mb": round(rss, 1),
                "cpu_percent": round(100 * cpu / (now - last), 1),
                "ledger_mb": round(_ledger_mb(server.ledger), 2),
                "created": stats["created"],
                "connections": len(consumer.connections),
                **check.totals(),
            }
        )
        last = now
    return None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _not_negative(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _positive(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m harness.run.soak", description=__doc__
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--minutes", type=_positive, default=10.0, help="how long (default 10)")
    p.add_argument("--rate", type=_positive, default=5000.0, help="tweets/s (default 5,000)")
    p.add_argument("--interval", type=_positive, default=30.0, help="seconds between samples")
    p.add_argument(
        "--warmup", type=_not_negative, default=60.0, help="seconds before RSS is judged"
    )
    p.add_argument("--cycle", type=_positive, default=60.0, help="seconds per fault cycle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=Path("results/soak"), help="folder for the JSONL and ledger"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
