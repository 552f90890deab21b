"""A bug in a stream's own code ends that connection, never the server's books.

The ``crash`` fault (``_crashing_server.py``, a real server process with one test-only
fault type) writes half of a write and raises, as a bug in a fault or in the writer would
(a ``bandwidth`` of 1e308 KB/s once did, with an ``OverflowError``). The connection must
be reset and recorded ``internal_error``, its token free for the next connect, and every
tweet it took settled in the ledger: acked, unknown or dropped, exactly once.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import requests

from fake_stream.ledger import LedgerReader
from harness.procs import OwnedProcess
from tests.fake_stream._clients import Received, read_with_requests

CRASHING = Path(__file__).with_name("_crashing_server.py")


def _start(tmp_path: Path, *args: str) -> tuple[OwnedProcess, dict, dict[str, str]]:
    token_file = tmp_path / "token"
    token_file.write_text("crash-token\n")
    token_file.chmod(0o600)
    stderr = (tmp_path / "stderr.log").open("w")
    argv = [sys.executable, str(CRASHING), "serve", "--ledger", str(tmp_path / "l.sqlite")]
    proc = OwnedProcess([*argv, "--token-file", str(token_file), *args], stderr=stderr)
    info = json.loads(proc.popen.stdout.readline())
    return proc, info, {"Authorization": "Bearer crash-token"}


def test_an_exception_in_a_stream_resets_it_frees_the_token_and_settles_the_ledger(tmp_path):
    proc, info, headers = _start(tmp_path, "--rate", "2000", "--seed", "8")
    try:
        url, stream_url = info["url"], info["stream_url"]
        first = Received()
        with requests.get(stream_url, headers=headers, stream=True, timeout=10) as response:
            lines = response.iter_lines(chunk_size=4096, delimiter=b"\r\n")
            while len(first.ids) < 500:  # the stream is flowing; now break it
                first.add_line(next(lines))
            crash = {"type": "crash", "name": "bug"}
            added = requests.post(f"{url}/_control/faults", json=crash, headers=headers, timeout=5)
            assert added.status_code == 201
            try:
                for line in lines:
                    first.add_line(line)
            except requests.RequestException as e:
                first.errors.append(type(e).__name__)
        assert first.errors, "the crashed stream must end abnormally, not cleanly"

        removed = requests.delete(f"{url}/_control/faults/bug", headers=headers, timeout=5)
        assert removed.status_code == 200
        second = Received()  # the token's one connection is free again
        read_with_requests(stream_url, "crash-token", second, stop_after=300)
        assert len(second.ids) == 300
        proc.signal(15)
        assert proc.popen.wait(timeout=20) == 0
    finally:
        proc.stop()

    books = LedgerReader(tmp_path / "l.sqlite")
    assert books.stopped_cleanly
    crashed, resumed = books.connections()
    assert crashed["end_reason"] == "internal_error"
    # The second client left after 300 tweets, just before the SIGTERM: either may be seen.
    assert resumed["end_reason"] in ("client_closed", "server_shutdown")
    # Every tweet the crashed connection took is accounted for exactly once ...
    taken: Counter[int] = Counter()
    for status in ("acked", "unknown"):
        taken.update(books.delivered_indexes(crashed["conn_id"], status).tolist())
    for drop in books.drops():
        if drop.conn_id == crashed["conn_id"]:
            taken.update(range(drop.first, drop.stop))
    span = range(crashed["start_index"], max(taken) + 1)
    assert taken == Counter(span), "a tweet of the crashed connection is missing or doubled"
    # ... and the client parsed exactly the acknowledged ones (it read until the reset).
    acked = books.ids_of(books.delivered_indexes(crashed["conn_id"], "acked")).tolist()
    unknown = books.ids_of(books.delivered_indexes(crashed["conn_id"], "unknown")).tolist()
    assert set(acked) <= set(first.ids) <= set(acked) | set(unknown)
    assert len(first.ids) > 500  # the crash's half write went out too
    drops = {d.reason for d in books.drops() if d.conn_id == crashed["conn_id"]}
    assert drops <= {"internal_error"}


def test_repeated_crashes_are_logged_a_few_times_then_counted(tmp_path):
    """Twenty connections crash the same way: a handful of tracebacks reach stderr, the
    rest are counted (a storm of identical errors once wrote 45 MB in 27 s)."""
    crash = json.dumps({"type": "crash", "name": "bug"})
    proc, info, headers = _start(
        tmp_path, "--rate", "500", "--fault", crash, "--connect-limit", "0"
    )
    try:
        ended = 0
        for _ in range(20):
            deadline = time.monotonic() + 5
            while True:  # the previous connection may still be closing
                response = requests.get(info["stream_url"], headers=headers, stream=True, timeout=5)
                if response.status_code == 200:
                    break
                response.close()
                assert response.status_code == 429
                assert time.monotonic() < deadline
                time.sleep(0.05)
            try:
                with response:
                    response.content  # noqa: B018  (read until the server resets it)
            except requests.RequestException:
                ended += 1
        assert ended == 20
        proc.signal(15)
        assert proc.popen.wait(timeout=20) == 0
    finally:
        proc.stop()
    log = (tmp_path / "stderr.log").read_text()
    assert log.count("RuntimeError: crash fault") == 5  # Throttle's first five of a kind
    assert "more like this in the next 60 s are counted" in log
    books = LedgerReader(tmp_path / "l.sqlite")
    assert [c["end_reason"] for c in books.connections()] == ["internal_error"] * 20
