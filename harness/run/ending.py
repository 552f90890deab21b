"""How a run ends: on what the ledger, the sink and Airflow show, not on a clock.

At ``duration`` the stream stops *creating* tweets (its rate becomes 0) but keeps serving:
open connections get their backlog, a reconnect its ``since_id`` or backfill. The judged
tweets are those created until then. The run then ends at the first of:

- **quiescent**: every open connection has been sent everything it asked for, nobody's
  connect was refused, the variant's queue (if it has one) is drained, a try is running
  or the task is over (none queued, up for retry or about to be re-triggered), and the
  sink did not grow; all of it for ``QUIET`` s on end. A variant whose runs Airflow
  starts has no try running between runs: for it the runner says what settled means (a
  poller: a run that started after the stream stopped creating has finished; an
  event-driven DAG: no run queued or running);
- **cap**: :func:`cap_seconds` (computed from the scenario) without a commit, counted
  from the stream's end of creation or the last commit, whichever is later: a consumer
  still working through its backlog is never cut, one that stalls is; and at most
  ``CEILING`` x that since the end of creation. Tweets not committed then were cut off,
  not lost (the checker says ``incomplete``).

While it waits, the streams get a keep-alive every ``KEEPALIVE`` s. A live stream never
goes silent (X creates tweets and sends keep-alives): a server notices a client that has
gone on its next write. With nothing created, a connection whose try died unnoticed would
hold the token's one connection and refuse the retry (429) until the server's own 20-s
keep-alive: the harness's end of creation, not the variant, would decide the verdict.

Then the operator's stop: the stop request is written into the run folder, the streams get
a keep-alive so a blocked reader wakes, and a running try ends on its own when it reads
it. Only a try that ignores it for ``STOP_WAIT`` s is ended by force; :class:`Ending` says
who ended what (``run.json``'s ``ending``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fake_stream.ledger import LedgerReader
from harness.airflow.base import DagSpec, TaskHandle
from harness.run.progress import SinkWatch, TryWatch
from harness.run.services import StreamServerProcess

__all__ = [
    "KEEPALIVE",
    "QUIET",
    "STOP_WAIT",
    "Ending",
    "await_end",
    "cap_seconds",
    "request_stop",
    "stop_creating",
]

QUIET = 2.0  # seconds every quiescence condition must hold on end
STOP_WAIT = 30.0  # seconds a try has to honour the stop request
MARGIN = 15.0  # seconds the cap allows beyond what the scenario accounts for
POLL = 0.25
KEEPALIVE = 1.0  # seconds between the keep-alives a quiet stream gets while the run waits
CEILING = 10  # a run still committing after 10 caps (a variant re-reading for ever) is cut


@dataclass
class Ending:
    """How a run ended (``run.json``'s ``ending``). Times are UNIX s.

    ``how``: ``quiescent`` or ``cap``. ``task_ended_by``: ``itself`` (the task was over
    before the stop request), ``stop_request`` (its try ended on reading it), ``airflow``
    (a DAG the user brought, which does not read it: its run was marked failed through
    Airflow's API and Airflow stopped the try; or a variant whose runs Airflow starts: no
    run of it was queued or running) or ``harness`` (it ignored either and was
    ended by force)."""

    created_until: float
    cap_seconds: float
    how: str = ""
    stop_requested_at: float | None = None
    task_ended_by: str = ""
    ended_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cap_seconds(dag: DagSpec, duration: float, startup: float, heartbeat: float) -> float:
    """The longest a run may take after the stream stops creating: a consumer at half the
    rate catches up in ``duration``; each retry costs its delay and a start-up (measured:
    the task's start to its first commit); an orphan is noticed after ``heartbeat``."""
    return duration + (dag.retries + 1) * (dag.retry_delay + startup) + heartbeat + MARGIN


def stop_creating(server: StreamServerProcess) -> float:
    """Rate 0 from now on; the UNIX time after which no tweet is created."""
    server.control("PUT", "rate", {"kind": "constant", "rate": 0})
    return time.time()


def refused_connects(ledger: Path) -> int:
    """How many connects the server has refused so far (the ledger's ``refused`` events;
    it flushes every 0.2 s)."""
    return len(LedgerReader(ledger).events("refused"))


def stream_idle(stats: dict[str, Any]) -> bool:
    """Every open connection has been sent everything it asked for (``GET /_control/stats``)."""
    return all(c["backlog"] <= 0 for c in stats["connections"])


def _quiet(
    server: StreamServerProcess,
    task: TaskHandle,
    tries: TryWatch,
    queue_drained: Callable[[str | None], bool] | None,
    settled: Callable[[], bool] | None,
) -> bool:
    stats = server.control("GET", "stats")  # once per poll: the backlogs and the newest id
    return (
        stream_idle(stats)
        and (queue_drained is None or queue_drained(stats["newest_id"]))
        and (settled() if settled is not None else bool(tries.running()) or task.ended())
    )


def await_end(
    ending: Ending,
    server: StreamServerProcess,
    task: TaskHandle,
    sink: SinkWatch,
    tries: TryWatch,
    queue_drained: Callable[[str | None], bool] | None = None,
    settled: Callable[[], bool] | None = None,
) -> None:
    """Wait for quiescence or the cap (``ending.how``). ``queue_drained(newest_id)``: the
    variant's queue holds the stream's newest tweet and has been read and acknowledged.
    ``settled``: for a variant whose runs Airflow starts, in place of "a try is running
    or the task is over"."""
    started = time.monotonic()
    deadline, ceiling = started + ending.cap_seconds, started + CEILING * ending.cap_seconds
    quiet_since: float | None = None
    last, refused = sink.committed(), refused_connects(server.ledger)
    keepalive = started
    while time.monotonic() < min(deadline, ceiling):
        time.sleep(POLL)
        if time.monotonic() - keepalive >= KEEPALIVE:
            server.control("POST", "keepalive")
            keepalive = time.monotonic()
        count, refusals = sink.committed(), refused_connects(server.ledger)
        if count != last:
            deadline = time.monotonic() + ending.cap_seconds
        idle = (
            count == last
            and refusals == refused
            and _quiet(server, task, tries, queue_drained, settled)
        )
        last, refused = count, refusals
        now = time.monotonic()
        if not idle:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET:
            ending.how = "quiescent"
            return
    ending.how = "cap"


def request_stop(
    ending: Ending, stop_file: Path, server: StreamServerProcess, task: TaskHandle
) -> None:
    """The operator's stop; ``ending.task_ended_by`` says who ended the task."""
    if task.ended():
        ending.task_ended_by = "itself"
    ending.stop_requested_at = time.time()
    stop_file.write_text(json.dumps({"at": ending.stop_requested_at, "why": ending.how}) + "\n")
    task.request_stop()
    server.control("POST", "keepalive")
    if not ending.task_ended_by:
        how = "stop_request" if task.reads_stop_request else "airflow"
        ending.task_ended_by = how if task.wait(STOP_WAIT) else "harness"
