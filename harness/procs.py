"""Child processes we own: each in its own process group, stopped by PID, never by name.

Every process the harness starts goes through :class:`OwnedProcess`. It starts the child
as the leader of a new session (so the child and everything it spawns share one process
group that we own), and :meth:`OwnedProcess.stop` signals that group: SIGTERM, a grace
period, then SIGKILL. Children that made process groups of their own (Airflow's task
supervisor puts each task in one) are still in our session: whatever of the session is
left after the group is SIGKILLed by PID, found with ``psutil``. :func:`stop_all` stops every
live one; it is called at interpreter exit, and :func:`install_signal_handlers` makes
Ctrl-C / SIGTERM / SIGHUP of the harness call it too.

For the deaths no handler sees (SIGKILL, a crash), each harness process has a watchdog
(:mod:`harness.watchdog`) that holds a pipe from it and stops every session still
registered when the pipe closes without a goodbye; and :func:`record_into` keeps a file of
the sessions started, which :func:`stop_leftovers` reads to stop what a run that died with
its watchdog left behind. Both check a pid's start time before any signal.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

__all__ = [
    "OwnedProcess",
    "ProcessesClosed",
    "cpu_seconds",
    "free_port",
    "in_sessions",
    "install_signal_handlers",
    "parent_pid",
    "pid_alive",
    "record_into",
    "session_members",
    "start_time",
    "stop_all",
    "stop_leftovers",
    "stop_sessions",
    "stopping",
]

#: Process states that no longer run: a zombie (dead, not yet reaped) or dead.
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)

_LIVE: weakref.WeakSet[OwnedProcess] = weakref.WeakSet()
#: Held while a process starts and while :func:`stop_all` runs: scenarios run side by side
#: in threads, and none may start a process after the harness began stopping them all.
_STARTING = threading.RLock()  # reentrant: the signal handler may run inside a start
_CLOSED = False


class ProcessesClosed(RuntimeError):
    """The harness is stopping every process it owns: no new one starts."""


class _Watchdog:
    """This process's :mod:`harness.watchdog`, told of every session we start and stop."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "harness.watchdog"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # out of reach of the terminal's signals to the harness
        )
        self.lock = threading.Lock()

    def tell(self, line: str) -> None:
        stdin = self.popen.stdin
        assert stdin is not None
        with self.lock, contextlib.suppress(BrokenPipeError, ValueError):
            stdin.write(line + "\n")
            stdin.flush()

    def bye(self) -> None:
        self.tell("bye")
        with contextlib.suppress(BrokenPipeError):
            if self.popen.stdin is not None:
                self.popen.stdin.close()
        self.popen.wait()


_WATCHDOG: _Watchdog | None = None
_RECORD: Path | None = None


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    # A forked child inherits the parent's pipe, not its watchdog: it starts its own.
    if _WATCHDOG is None or _WATCHDOG.owner != os.getpid():
        _WATCHDOG = _Watchdog()
    return _WATCHDOG


def _register(pid: int, argv: Sequence[str]) -> None:
    started = start_time(pid)
    if started is None:
        return  # gone already: nothing to stop later
    _watchdog().tell(f"+ {pid} {started}")
    if _RECORD is not None:
        line = json.dumps({"pid": pid, "start": started, "argv": list(argv)[:4]}) + "\n"
        with _RECORD.open("a") as f:
            f.write(line)


class OwnedProcess:
    """A child process leading its own process group.

    :param argv: the command.
    :param stdout: where its stdout goes (default: a pipe we read).
    :param stderr: where its stderr goes (default: inherited).
    :param user: run it as this user and its group (a server that refuses root).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = None,
        stdin: int | IO[Any] | None = None,
        user: str | None = None,
    ) -> None:
        self.argv = list(argv)
        as_user: dict[str, Any] = {"user": user, "group": user, "extra_groups": []} if user else {}
        with _STARTING:
            if _CLOSED:
                raise ProcessesClosed(f"not starting {self.argv[:3]}: the harness is stopping")
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                text=True,
                start_new_session=True,  # leader of a new session and process group: ours
                **as_user,
            )
            try:
                self.pid = self.pgid = self.popen.pid
                _LIVE.add(self)
            except BaseException:  # Ctrl-C's handler ran just now: this one is not in _LIVE
                os.killpg(self.popen.pid, signal.SIGKILL)
                raise
        _register(self.pid, self.argv)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child alone (not its group)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, grace: float = 10.0, first: int | None = None) -> int | None:
        """Signal the group with ``first`` (default SIGTERM), wait ``grace`` seconds for
        the leader, then SIGKILL the group.

        Returns the leader's exit code. Safe to call more than once.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM if first is None else first)
        try:
            code = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            code = None
        # Anything left in the group or the session (the leader's children) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        for pid in session_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if code is None:
            self.popen.wait()
        _LIVE.discard(self)
        if _WATCHDOG is not None and _WATCHDOG.owner == os.getpid():
            _WATCHDOG.tell(f"- {self.pid}")
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return code

    def alive(self) -> bool:
        return self.popen.poll() is None


def free_port() -> int:
    """A loopback port nobody listens on now (the server we start binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.NoSuchProcess:
        return False


def parent_pid(pid: int) -> int | None:
    """``pid``'s parent (None if it is gone)."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def start_time(pid: int) -> float | None:
    """When ``pid`` started (UNIX time, as the kernel records it); None if it is gone.

    A pid and its start time name one process: a pid reused later has a later start."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """``pid``'s (start time in clock ticks since boot, user + system CPU seconds so far),
    from ``/proc``; None once it is gone. The start names the process: a reused pid's is
    later."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return float(fields[19]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The live children of ``pid``, their children, and so on."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def in_sessions(pid: int, sessions: set[int]) -> bool:
    """Whether ``pid`` runs in one of ``sessions`` (session ids: the pids of leaders we
    started); a pid, not a scan of every process."""
    try:
        return pid_alive(pid) and os.getsid(pid) in sessions
    except ProcessLookupError:
        return False


def session_members(sid: int) -> list[int]:
    """The pids of the live processes in session ``sid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.pid > 0 and os.getsid(proc.pid) == sid and proc.info["status"] not in _GONE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError):  # gone meanwhile
            continue
    return members


def stopping() -> bool:
    """Whether :func:`stop_all` has run: the harness is ending (Ctrl-C, SIGTERM, exit)."""
    return _CLOSED


def stop_all() -> None:
    """Stop every :class:`OwnedProcess` still running, and start none from now on: all
    groups get SIGTERM at once (side by side scenarios each have several), then each is
    waited for and SIGKILLed as :meth:`OwnedProcess.stop` does."""
    global _CLOSED
    with _STARTING:
        _CLOSED = True
        live = list(_LIVE)
    for proc in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pgid, signal.SIGTERM)
    for proc in live:
        proc.stop(grace=5.0)


#: Seconds from SIGTERM to SIGKILL for a dead harness's sessions (Airflow exits in ~1-3 s).
GRACE = 5.0


def _members(sessions: dict[int, float]) -> list[int]:
    """Live pids of the registered sessions. A session whose id is now a live process of
    another start time is someone else's (the pid was reused); while any member of ours
    lives, the kernel keeps its session id from being reused."""
    pids = []
    for sid, started in sessions.items():
        leader = start_time(sid)
        if leader is not None and leader != started:
            continue
        pids += session_members(sid)
    return pids


def stop_sessions(sessions: dict[int, float], grace: float = GRACE) -> list[int]:
    """SIGTERM every member of ``sessions`` (sid -> leader's start time), SIGKILL what is
    left after ``grace`` seconds; the pids signalled."""
    signalled = _members(sessions)
    for pid in signalled:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _members(sessions) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _members(sessions):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return signalled


def record_into(path: Path | None) -> None:
    """From now on, append each session started to ``path`` (JSON lines: pid, start, argv),
    for :func:`stop_leftovers` after a death no watchdog saw; None stops recording."""
    global _RECORD
    _RECORD = path


def stop_leftovers(path: Path) -> list[int]:
    """Stop the sessions recorded in ``path`` that are still the processes recorded (pid
    and start time); the pids signalled. A missing file means nothing was left."""
    if not path.exists():
        return []
    sessions = {}
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            sessions[int(entry["pid"])] = float(entry["start"])
    return stop_sessions(sessions)


def install_signal_handlers() -> None:
    """On SIGTERM, SIGINT or SIGHUP, stop our children, then exit with the usual code."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handler)


def _at_exit() -> None:
    stop_all()
    if _WATCHDOG is not None and _WATCHDOG.owner == os.getpid():
        _WATCHDOG.bye()


atexit.register(_at_exit)
