"""The signals Airflow 2's ``LocalTaskJob`` sent a try, read from the try's task log.

On a 2.x worker each try is a process forked by a ``LocalTaskJob``, which leads a process
group of its own; the job stops it with ``reap_process_group``: SIGTERM to the group, then
SIGKILL to what is left after ``[core] killed_task_cleanup_time`` (60 s). The job writes
into the try's task log (2.11.2, ``jobs/local_task_job_runner.py`` and
``utils/process_utils.py``):

- why it stops the try: ``State of this instance has been externally set to <state>.
  Terminating instance.`` (a clear or a mark, seen at its heartbeat) or ``Received
  SIGTERM. Terminating subprocesses`` (the job itself got a SIGTERM: it forwards it);
- ``Sending the signal 15 to group <pid>`` (INFO: the SIGTERM, as a number), then, if
  the group outlived the cleanup time, ``... did not respond to SIGTERM. Trying SIGKILL``
  and ``Sending the signal Signals.SIGKILL to group <pid>``;
- ``Process psutil.Process(pid=<pid>, ...) (<pid>) terminated with exit code <code>``.
"""

from __future__ import annotations

import re
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["local_task_job_signals"]

#: ``[2026-12-02T07:21:58.294+0000] {local_task_job_runner.py:127} ERROR - <message>``
_LINE = re.compile(r"^\[(\S+)\] \{([\w.]+):\d+\} \w+ - (.*)$")
_EXTERNALLY = re.compile(r"externally set to (\w+)\. Terminating instance")
_SENDING = re.compile(r"Sending the signal (?:Signals\.)?(\w+) to group (\d+)")
_EXITED = re.compile(r"\((\d+)\) terminated with exit code (-?\d+)")


def local_task_job_signals(task_logs: Path, pid: int) -> list[dict[str, Any]]:
    """What the ``LocalTaskJob`` did to try ``pid`` (the leader of its group), oldest
    first: ``{"time", "signal", "why"}`` per signal, ``{"time", "exit_code"}`` for its
    exit; searched in every attempt's log under ``task_logs`` (one run's folder)."""
    for log in sorted(task_logs.glob("**/attempt=*.log")):
        text = log.read_text(errors="replace")
        if f"to group {pid}" in text:
            return _signals(text.splitlines(), pid)
    return []


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _name(sig: str) -> str:
    """``15`` or ``SIGTERM`` -> ``SIGTERM`` (2.x logs the SIGTERM as a number)."""
    return signal.Signals(int(sig)).name if sig.isdigit() else sig


def _signals(lines: list[str], pid: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    why = "unknown"
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue
        stamp, source, message = match.groups()
        if source == "local_task_job_runner.py":
            if externally := _EXTERNALLY.search(message):
                why = f"externally set to {externally.group(1)}"
            elif message.startswith("Received SIGTERM"):
                why = "forwarded"
        elif "did not respond to SIGTERM" in message:
            why = "SIGTERM not obeyed"
        elif (sending := _SENDING.search(message)) and int(sending.group(2)) == pid:
            found.append({"time": _epoch(stamp), "signal": _name(sending.group(1)), "why": why})
        elif (exited := _EXITED.search(message)) and int(exited.group(1)) == pid:
            found.append({"time": _epoch(stamp), "exit_code": int(exited.group(2))})
    return found
