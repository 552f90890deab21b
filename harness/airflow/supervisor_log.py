"""The signals Airflow 3's supervisor sent a try, read from Airflow's own logs.

The supervisor (task-sdk ``execution_time/supervisor.py``) logs each step of stopping a
try, in the worker's log (a LocalExecutor worker's is the scheduler's output):

- ``Server indicated the task shouldn't be running anymore`` (its heartbeat was refused:
  the task instance was cleared or marked), then ``kill(SIGTERM, force=True)``;
- ``Received signal, forwarding to task subprocess`` (the worker itself got a SIGTERM);
- ``Process did not terminate in time; escalating`` (``signal`` = the one not obeyed
  within ``escalation_delay``, 5 s: the next in SIGINT -> SIGTERM -> SIGKILL follows);
- ``Process exited`` (``exit_code``, e.g. ``<Negsignal.SIGKILL: -9>``).

Every line but the first names the try's ``pid``; the first names its task-instance id, so
it is read from the try's own task log instead, where the supervisor writes it too.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["supervisor_signals"]

#: ``2026-12-02T04:19:10.940305Z [warning  ] <event> [supervisor] k=v k=v ...``; 3.0's
#: worker stamps local time to the second (structlog's default): ``2026-12-02 04:19:10``.
_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?) \[\s*\w+\s*\] (.*?)\s+\[supervisor\] (.*)$"
)
_PAIR = re.compile(r"(\w+)=(<[^>]*>|\S+)")
_ESCALATION = ["SIGINT", "SIGTERM", "SIGKILL"]
_REFUSED = "Server indicated the task shouldn't be running anymore"


def supervisor_signals(
    worker_logs: list[Path], task_log: Path, pid: int, since: float
) -> list[dict[str, Any]]:
    """What the supervisor did to try ``pid`` after ``since`` (UNIX time), oldest first:
    ``{"time", "signal", "why"}`` per signal, and ``{"time", "exit_code"}`` when it saw the
    try exit."""
    found = _refusals(task_log, since)
    for worker_log in worker_logs:  # a pid is one try's while it lives: no other matches
        found += _worker_lines(worker_log, pid, since)
    return sorted(found, key=lambda r: r["time"])


def _epoch(stamp: str) -> float:
    """UNIX time of a log stamp: UTC with ``Z``, else local time (naive)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _refusals(task_log: Path, since: float) -> list[dict[str, Any]]:
    """The refused heartbeats in the try's task log: each is followed by a SIGTERM."""
    found = []
    lines = task_log.read_text(errors="replace").splitlines() if task_log.exists() else []
    for line in lines:
        if _REFUSED not in line:
            continue
        try:
            record = json.loads(line)
            at = _epoch(record["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue  # a line being written, or not the supervisor's
        if at >= since:
            detail = record.get("detail") or {}
            detail = detail.get("detail", detail)  # 3.0 nests the API's answer once more
            reason = detail.get("reason", "refused")
            found.append({"time": at, "signal": "SIGTERM", "why": f"heartbeat refused: {reason}"})
    return found


def _worker_lines(worker_log: Path, pid: int, since: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if not worker_log.exists():
        return found
    needle = f"pid={pid}"
    with worker_log.open(errors="replace") as lines:
        for line in lines:
            if needle not in line or "[supervisor]" not in line:
                continue
            match = _LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            stamp, event, rest = match.groups()
            fields = dict(_PAIR.findall(rest))
            if fields.get("pid") != str(pid) or _epoch(stamp) < since:
                continue
            at = _epoch(stamp)
            if event.startswith("Received signal, forwarding"):
                found.append({"time": at, "signal": fields.get("signal"), "why": "forwarded"})
            elif event.startswith("Process did not terminate in time"):
                ignored = fields.get("signal", "")
                if ignored in _ESCALATION[:-1]:
                    after = _ESCALATION[_ESCALATION.index(ignored) + 1]
                    found.append({"time": at, "signal": after, "why": f"{ignored} not obeyed"})
            elif event.startswith("Process exited"):
                found.append({"time": at, "exit_code": _exit_code(fields.get("exit_code", ""))})
    return found


def _exit_code(text: str) -> int | None:
    """``<Negsignal.SIGKILL: -9>`` or ``0`` -> the number."""
    match = re.search(r"-?\d+", text)
    return int(match.group()) if match else None
