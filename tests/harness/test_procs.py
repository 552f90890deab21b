"""Processes we own die with the harness however it dies: real processes, real signals.

A stand-in harness (``PARENT``: :mod:`harness.procs` and nothing else) starts two owned
children; each starts a grandchild in a process group of its own, as Airflow's task
supervisor does. The test kills the stand-in and reads ``/proc`` for what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.procs import (
    OwnedProcess,
    in_sessions,
    pid_alive,
    record_into,
    session_members,
    start_time,
    stop_leftovers,
)

# A child: a grandchild in its own process group, then both sleep.
CHILD = (
    "import os, subprocess, sys, time; "
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
    "process_group=0); print(g.pid, flush=True); time.sleep(600)"
)
PARENT = f"""
import json, subprocess, sys, time
from harness.procs import OwnedProcess, install_signal_handlers
install_signal_handlers()
children = [OwnedProcess([sys.executable, "-c", {CHILD!r}]) for _ in range(2)]
pids = [c.pid for c in children] + [int(c.popen.stdout.readline()) for c in children]
print(json.dumps(pids), flush=True)
time.sleep(600)
"""


def start_parent() -> tuple[subprocess.Popen[str], list[int]]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = json.loads(parent.stdout.readline())
    assert len(pids) == 4
    assert all(pid_alive(p) for p in pids)
    return parent, pids


def survivors(pids: list[int], within: float = 30.0) -> list[int]:
    """The pids still alive once they are all gone or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name
)
def test_nothing_survives_the_harness(sig):
    """SIGKILL: no handler runs; the watchdog sees the pipe close and stops every session.
    SIGHUP and SIGTERM: the harness's handler stops them and exits 128 + the signal."""
    parent, pids = start_parent()
    parent.send_signal(sig)
    try:
        code = parent.wait(timeout=60)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig)
        assert survivors(pids) == []
    finally:  # a failed test must not leave its processes behind
        for pid in survivors(pids, within=0):
            os.kill(pid, signal.SIGKILL)


def test_a_normal_exit_leaves_nothing_and_the_watchdog_ends():
    """The stand-in returns (no signal): its children are stopped and its watchdog, told
    goodbye, exits too (no process of the stand-in's sessions, nor the watchdog, lives)."""
    code = (
        "import sys\nfrom harness.procs import OwnedProcess, _watchdog\n"
        "c = OwnedProcess([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(c.pid, _watchdog().popen.pid, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    child, watchdog = (int(p) for p in result.stdout.split())
    assert survivors([child, watchdog]) == []


def test_leftovers_are_stopped_by_pid_and_start_time(tmp_path):
    """A run's record names the sessions it started; stop_leftovers stops those still the
    processes recorded and leaves alone a live pid whose start time differs (reused)."""
    record = tmp_path / "processes.jsonl"
    record_into(record)
    try:
        ours = OwnedProcess([sys.executable, "-c", "import time; time.sleep(600)"])
    finally:
        record_into(None)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        started = start_time(stranger.pid)
        assert started is not None
        with record.open("a") as f:  # as if a dead run had owned this pid before
            f.write(json.dumps({"pid": stranger.pid, "start": started - 1}) + "\n")
        assert json.loads(record.read_text().splitlines()[0])["pid"] == ours.pid
        assert stop_leftovers(record) == [ours.pid]
        assert survivors([ours.pid]) == []
        assert pid_alive(stranger.pid)
        assert session_members(stranger.pid) == [stranger.pid]
    finally:
        stranger.kill()
        stranger.wait()
        ours.stop()


def test_in_sessions_knows_ours_by_session_not_by_name():
    """A process we started and its child are in our session; this test's own process,
    and a process gone, are not."""
    leader = OwnedProcess(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
         "time.sleep(60)"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not session_members(leader.pid)[1:] and time.monotonic() < deadline:
            time.sleep(0.05)
        members = session_members(leader.pid)
        assert len(members) == 2
        assert all(in_sessions(pid, {leader.pid}) for pid in members)
        assert not in_sessions(os.getpid(), {leader.pid})
    finally:
        leader.stop(grace=1.0)
    deadline = time.monotonic() + 5  # the orphaned child is reaped by init, not by us
    while any(in_sessions(pid, {leader.pid}) for pid in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(in_sessions(pid, {leader.pid}) for pid in members)
