"""The demo (``python -m harness demo``) runs, agrees with its ledger, leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.procs import OwnedProcess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; only a running process counts as left behind.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_demo_agrees_with_the_ledger_and_stops_its_server(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness", "demo", "--seconds", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["agree"] is True
    assert summary["received"] == summary["delivered"] > 1000
    assert summary["server_exit"] == 0
    assert not _alive(summary["server_pid"])
    assert "ids match the ledger exactly: yes" in result.stdout


def test_sigint_to_the_demo_stops_the_server_too(tmp_path):
    demo = OwnedProcess(
        [sys.executable, "-m", "harness", "demo", "--seconds", "30", "--out", str(tmp_path)]
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ledger.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(demo.pid)], capture_output=True, text=True
        )
        server_pids = [int(p) for p in children.stdout.split()]
        assert server_pids, "the demo should have started its server"
        demo.signal(signal.SIGINT)
        code = demo.popen.wait(timeout=30)
    finally:
        demo.stop()
    assert code == 128 + signal.SIGINT
    assert not any(_alive(pid) for pid in server_pids)
