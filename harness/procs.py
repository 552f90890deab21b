"""Child processes we own: each in its own process group, stopped by PID, never by name.

Every process the harness starts goes through :class:`OwnedProcess`. It starts the child
as the leader of a new session (so the child and everything it spawns share one process
group that we own), and :meth:`OwnedProcess.stop` signals that group: SIGTERM, a grace
period, then SIGKILL. Children that made process groups of their own (Airflow's task
supervisor puts each task in one) are still in our session: whatever of the session is
left after the group is SIGKILLed by PID, found in ``/proc``. :func:`stop_all` stops every
live one; it is called at interpreter exit, and :func:`install_signal_handlers` makes
Ctrl-C / SIGTERM of the harness call it too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

__all__ = [
    "OwnedProcess",
    "free_port",
    "install_signal_handlers",
    "parent_pid",
    "pid_alive",
    "session_members",
    "stop_all",
]

_LIVE: weakref.WeakSet[OwnedProcess] = weakref.WeakSet()


class OwnedProcess:
    """A child process leading its own process group.

    :param argv: the command.
    :param stdout: where its stdout goes (default: a pipe we read).
    :param stderr: where its stderr goes (default: inherited).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,  # leader of a new session and process group: ours
        )
        self.pid = self.popen.pid
        self.pgid = self.pid
        _LIVE.add(self)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child alone (not its group)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait ``grace`` seconds for the leader, then SIGKILL the group.

        Returns the leader's exit code. Safe to call more than once.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
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
        for stream in (self.popen.stdout, self.popen.stderr):
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
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(") ", 1)[1].split()[0] not in ("Z", "X")


def parent_pid(pid: int) -> int | None:
    """``pid``'s parent, from ``/proc`` (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(") ", 1)[1].split()[1])


def session_members(sid: int) -> list[int]:
    """The pids of the live processes in session ``sid``, read from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(") ", 1)[1].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_all() -> None:
    """Stop every :class:`OwnedProcess` still running."""
    for proc in list(_LIVE):
        proc.stop(grace=5.0)


def install_signal_handlers() -> None:
    """On SIGTERM or SIGINT, stop our children, then exit with the usual code."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


atexit.register(stop_all)
