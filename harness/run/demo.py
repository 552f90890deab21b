"""``python -m harness demo``: stream from a fake X server for a few seconds and check the
tweets received against the server's ground-truth ledger.

The consumer is what most Airflow code does: ``requests`` with ``stream=True`` and
``iter_lines``. It keeps reading until the server ends the stream (the harness stops the
server with SIGTERM after ``seconds``), so every byte the ledger says was delivered is also
read, and the two counts must agree exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from harness.run.services import StreamServerProcess

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    ids: list[int] = field(default_factory=list)
    per_second: Counter[int] = field(default_factory=Counter)
    samples: list[dict[str, str]] = field(default_factory=list)
    keepalives: int = 0
    other_lines: list[str] = field(default_factory=list)


def consume(url: str, headers: dict[str, str], result: DemoResult) -> None:
    """Read the stream to its end, recording every tweet id."""
    start = time.monotonic()
    with requests.get(url, headers=headers, stream=True, timeout=30) as response:
        response.raise_for_status()
        for line in response.iter_lines(chunk_size=65536):
            if not line:
                result.keepalives += 1
                continue
            message = json.loads(line)
            if "data" not in message:
                result.other_lines.append(line.decode())
                continue
            result.ids.append(int(message["data"]["id"]))
            result.per_second[int(time.monotonic() - start)] += 1
            if len(result.samples) < 3:
                user = message["includes"]["users"][0]
                result.samples.append(
                    {
                        "id": message["data"]["id"],
                        "user": "@" + user["username"],
                        "text": message["data"]["text"][:90],
                    }
                )


def run_demo(out: Path, seconds: float, rate: float, seed: int) -> int:
    """Run the demo; print what happened; return 0 when client and ledger agree."""
    ledger = out / "ledger.sqlite"
    print(f"fake stream: {rate:,.0f} tweets/s, seed {seed}, ledger {ledger}")
    server = StreamServerProcess(ledger, ["--rate", str(rate), "--seed", str(seed)])
    result = DemoResult()
    reader = threading.Thread(target=consume, args=(server.stream_url, server.headers, result))
    try:
        reader.start()
        time.sleep(seconds)
    finally:
        code = server.stop()  # ends the stream cleanly; the reader then sees its end
        reader.join(timeout=30)
    print(f"server exited with {code}")
    for sample in result.samples:
        print(f"  {sample['id']} {sample['user']}: {sample['text']}")
    for second, count in sorted(result.per_second.items()):
        print(f"  second {second}: {count:,} tweets")
    if result.other_lines:
        print(f"  non-tweet lines: {result.other_lines[:3]}")

    books = server.ledger_reader()
    delivered = books.ids_of(books.delivered_indexes()).tolist()
    agree = sorted(delivered) == sorted(result.ids)
    before = books.created_total - len(delivered)
    print(
        f"ledger: {books.created_total:,} created, {len(delivered):,} delivered "
        f"({before:,} created while nobody was connected or after the stream ended)"
    )
    print(
        f"client: {len(result.ids):,} received; "
        f"ids match the ledger exactly: {'yes' if agree else 'NO'}"
    )
    (out / "demo.json").write_text(
        json.dumps(
            {
                "created": books.created_total,
                "delivered": len(delivered),
                "received": len(result.ids),
                "agree": agree,
                "server_exit": code,
                "server_pid": server.process.pid,
            },
            indent=2,
        )
    )
    return 0 if agree and code == 0 else 1
