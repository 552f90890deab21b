"""The soak program, run for real: a server, its faults, a consumer, the ledger compared."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from harness.procs import pid_alive
from harness.run.soak import Consumer, LedgerCheck, main

pytestmark = pytest.mark.slow  # real servers for several seconds


def _soak(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run.soak", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # ours to stop by pid if the test fails midway
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_soak_samples_and_finds_consumer_equal_to_ledger(tmp_path: Path) -> None:
    """12 s at 3,000/s, a sample every 3 s, a fault cycle of 4 s (three of them): rows of
    real figures, connections ended by faults and compared, no mismatch, exit 0, and the
    server it started is gone."""
    soak = _soak(
        tmp_path, "--minutes", "0.2", "--rate", "3000", "--interval", "3", "--warmup", "3",
        "--cycle", "4",
    )  # fmt: skip
    try:
        stdout, stderr = soak.communicate(timeout=90)
    finally:
        soak.kill()
    assert soak.returncode == 0, stdout[-2000:] + stderr[-2000:]
    started = json.loads(stdout.splitlines()[0])
    assert not pid_alive(started["server_pid"])
    rows = _lines(Path(started["jsonl"]))
    samples, summary = rows[:-1], rows[-1]["summary"]
    assert len(samples) == 4  # at 3, 6, 9 and 12 s
    assert all(r["rss_mb"] > 10 and r["cpu_percent"] > 0 for r in samples)
    assert samples[-1]["ledger_mb"] > samples[0]["ledger_mb"] > 0
    assert samples[-1]["created"] >= 3000 * 11
    # Six faults per cycle end or corrupt a connection: several connections were compared.
    assert summary["compared"] >= 4
    assert summary["mismatches"] == 0, summary["mismatch_samples"]
    assert summary["consumer_tweets"] >= summary["ledger_acked"] > 3000 * 10
    assert summary["consumer_tweets"] <= summary["ledger_acked"] + summary["ledger_unknown"]
    assert summary["rss_flat"] is True
    assert summary["server_failed"] is None


def test_sigterm_stops_the_server_and_still_summarises(tmp_path: Path) -> None:
    """SIGTERM after the first sample: the server is stopped by its pid, the summary is
    written, and the exit code says which signal (128 + 15)."""
    soak = _soak(tmp_path, "--minutes", "5", "--interval", "1", "--rate", "1000")
    try:
        assert soak.stdout is not None
        started = json.loads(soak.stdout.readline())
        first_sample = json.loads(soak.stdout.readline())
        assert first_sample["rss_mb"] > 0
        soak.send_signal(signal.SIGTERM)
        soak.communicate(timeout=60)
    finally:
        soak.kill()
    assert soak.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while pid_alive(started["server_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(started["server_pid"])
    summary = _lines(Path(started["jsonl"]))[-1]["summary"]
    assert summary["interrupted_by"] == signal.SIGTERM
    assert summary["mismatches"] == 0


def test_the_check_finds_a_tweet_the_consumer_lost(start_server) -> None:
    """The comparison can fail: drop one parsed id from a connection and it is reported;
    the same connection untouched is not."""
    server = start_server("--rate", "2000")
    consumer = Consumer(server.stream_url, server.token)
    consumer.start()
    time.sleep(1.5)
    consumer.finishing.set()
    server.stop()
    consumer.finish(timeout=20)
    [conn] = consumer.finished()
    assert conn.ended == "clean"
    assert conn.parsed > 1000
    parsed = array("q", conn.ids)
    honest = LedgerCheck(server.ledger)
    honest.update([conn], final=True)
    assert honest.totals()["compared"] == 1
    assert honest.totals()["mismatches"] == 0
    assert honest.totals()["ledger_acked"] == conn.parsed

    conn.ids = parsed  # the check released them; one goes missing this time
    del conn.ids[len(parsed) // 2]
    lossy = LedgerCheck(server.ledger)
    lossy.update([conn], final=True)
    assert lossy.totals()["mismatches"] == 1
    assert "1 acked but not parsed, 0 parsed but not sent" in lossy.mismatches[0]["why"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--minutes", "0"], "--minutes"),
        (["--rate", "nan"], "--rate"),
        (["--cycle", "x"], "--cycle"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args, option, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err
