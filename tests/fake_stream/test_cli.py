"""``python -m fake_stream serve``: announcement, clean stop, hard kill, bad options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from fake_stream.ledger import LedgerReader
from harness.procs import OwnedProcess

SERVE = [sys.executable, "-m", "fake_stream", "serve"]


def _serve(tmp_path, *args: str) -> tuple[OwnedProcess, dict]:
    proc = OwnedProcess([*SERVE, "--ledger", str(tmp_path / "l.sqlite"), *args])
    line = proc.popen.stdout.readline()
    return proc, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_announces_one_json_line_and_stops_cleanly_on_signal(tmp_path, sig):
    proc, info = _serve(tmp_path, "--rate", "500")
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        assert int(info["url"].rsplit(":", 1)[1]) > 0  # port 0 became a real port
        stats = requests.get(
            f"{info['url']}/_control/stats",
            headers={"Authorization": f"Bearer {info['bearer_token']}"},
            timeout=5,
        )
        assert stats.status_code == 200
        time.sleep(0.5)
        proc.signal(sig)
        assert proc.popen.wait(timeout=15) == 0
        assert proc.popen.stdout.read() == ""  # nothing but the one line on stdout
    finally:
        proc.stop()
    books = LedgerReader(tmp_path / "l.sqlite")
    assert books.stopped_cleanly
    assert books.created_total >= 200  # 500/s for more than half a second


def test_sigkill_leaves_a_readable_ledger_marked_unclean(tmp_path):
    proc, _ = _serve(tmp_path, "--rate", "1000")
    time.sleep(1.0)
    proc.signal(signal.SIGKILL)
    proc.popen.wait(timeout=5)
    proc.stop()
    books = LedgerReader(tmp_path / "l.sqlite")
    assert not books.stopped_cleanly
    # Flushed every 0.2 s: at most that much is missing from the ~1 s it ran.
    assert books.created_total >= 500


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--profile", '{"kind": "sawtooth"}'], "kind"),
        (["--profile", '{"kind": "constant"}'], "rate"),
        (
            ["--fault", '{"type": "latency", "attributes": {"latency": "slow"}}'],
            "attributes.latency",
        ),
        (["--fault", '{"type": "nope"}'], "type"),
        (["--fault", '{"type": "latency", "schedule": {"at": -1}}'], "schedule.at"),
        (["--rate", "10", "--profile", "5"], "--profile"),
        # Each of these once started a broken server or crashed with a traceback (every
        # check itself is in test_config.py; these check the CLI names the option).
        (["--max-batch", "0"], "--max-batch: must be >= 1"),
        (["--keepalive", "0"], "--keepalive: must be >= 0.1"),
        (["--connect-limit", "-1"], "--connect-limit: must be >= 0"),
        (["--rate", "inf"], "--rate: expected a finite number"),
        (["--fault", '{"type": "bandwidth", "attributes": {"rate": Infinity}}'], "--fault[0]"),
        (["--fault", "@missing.json"], "--fault[0]: cannot read"),
        (["--rule", '{"value": 5}'], "--rule[0]"),
        (["--port", "70000"], "--port: must be <= 65535"),
    ],
)
def test_bad_options_exit_2_naming_the_field(tmp_path, args, names):
    result = subprocess.run(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite"), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert names in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l.sqlite").exists()  # nothing was started


def test_a_taken_port_exits_2_without_a_ledger(tmp_path):
    """Binding comes before the ledger: a port in use leaves nothing behind."""
    proc, info = _serve(tmp_path, "--rate", "10")
    try:
        port = info["url"].rsplit(":", 1)[1]
        result = subprocess.run(
            [*SERVE, "--ledger", str(tmp_path / "other.sqlite"), "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        proc.stop()
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "other.sqlite").exists()


def test_refuses_to_overwrite_a_ledger(tmp_path):
    (tmp_path / "l.sqlite").write_bytes(b"precious")
    result = subprocess.run(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "exists" in result.stderr
    assert (tmp_path / "l.sqlite").read_bytes() == b"precious"
