"""What every DAG variant shares: its run context, stream reading, and the CPU work.

Variants are plain Python functions of a :class:`TaskContext`; they never import Airflow.
``harness/airflow/dag_factory.py`` turns them into DAGs for Airflow 3 (``airflow.sdk``) or 2.x
(``airflow.decorators``), so the same logic runs on both.

"Processing" a tweet is :func:`cpu_work` (a tokenising sentiment score costing about
``cpu_us`` microseconds of pure-Python CPU on this machine, calibrated once per process)
followed by a commit to the sink through the probe.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import requests

from harness.task.gil import READER
from harness.task.probe import Probe
from harness.task.resume import now_ms, plan
from streamstall_probe import WORKER_ENV

__all__ = ["PARAMS", "TaskContext", "cpu_work", "read_stream"]

#: The DAG params every variant accepts (``dag_run.conf`` overrides them), with defaults.
PARAMS: dict[str, Any] = {
    # The stream, as an Airflow Connection (host: the API's base URL, password: the bearer
    # token), read by the operator when the try starts: the harness's way, nothing secret
    # in dag_run.conf. Without Airflow, the three below say it directly.
    "stream_conn_id": "x_stream",
    "stream_url": "http://127.0.0.1:8080/2/tweets/search/stream",
    "token": "",  # the stream's bearer token; or
    "token_file": "",  # a file holding it
    "run_dir": "/tmp/streamstall-run",
    # Or, for workers that do not share the harness's disk, the run's PostgreSQL store: a
    # connection (its URL held in memory only, as ``run_store``) and the run's schema.
    "sink_conn_id": "",
    "sink_schema": "",
    "cpu_us": 50.0,  # CPU work per tweet, microseconds
    "batch": 50,  # tweets per sink commit (or per checkpoint write)
    "run_seconds": None,  # bound the task's run (the harness's stop); None = run forever
    # This worker's local disk (checkpoint variant); ``{worker}``: the worker's name.
    "scratch_dir": "/tmp/streamstall-worker",
    "workers": 2,  # processes or threads of the multiprocess / threaded variants
    "try_seconds": 60.0,  # exactly_once: how long one try runs before it exits cleanly
    # The careful variants' way back after a gap (harness/task/resume.py): recovery,
    # backfill, live (X's, by access level) or since_id (this fake stream's extension).
    "resume": "recovery",
    "backfill_scale": 1.0,  # the fake stream's time scale for X's windows (X itself: 1)
    "redis_url": "redis://127.0.0.1:6379/0",  # queue_decoupled: the ingester's Redis
    "redis_stream": "tweets",  # queue_decoupled: the Redis Stream key
    # scheduled_poll's recent-search query: every language the fake stream writes, so every
    # tweet created is one the poller must read (X itself needs more than lang: operators).
    "search_query": "lang:en OR lang:es OR lang:ja OR lang:fr",
    "gil_interval": 1.0,  # seconds between GIL samples of each process (0: no sampling)
}

STOP_CHECK_INTERVAL = 0.2  # seconds: a stat per line would cost the reader at 10,000/s


@dataclass
class TaskContext:
    """One task try, as a variant sees it."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    logical_date: dt.datetime | None
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    #: The messages of the asset events that started this run (a ``watched`` variant's).
    events: list[str] = field(default_factory=list)
    #: Set by the operator's ``on_kill`` (Airflow's SIGTERM / timeout hook); only variants
    #: that cooperate look at it.
    stop: threading.Event = field(default_factory=threading.Event)
    _probe: Probe | None = None
    _stop_checked: float = 0.0
    _stop_requested: bool = False

    @property
    def run_dir(self) -> str:
        """The run folder, or the URL of the run's PostgreSQL store (``run_store``)."""
        return str(self.params.get("run_store") or self.params["run_dir"])

    @property
    def scratch_dir(self) -> Path:
        """This worker's local disk: ``scratch_dir`` with ``{worker}`` replaced by the name
        of the worker the try runs on (``$STREAMSTALL_WORKER``; ``worker-1`` if unset)."""
        worker = os.environ.get(WORKER_ENV) or "worker-1"
        return Path(str(self.param("scratch_dir")).replace("{worker}", worker))

    @property
    def probe(self) -> Probe:
        if self._probe is None:
            self._probe = Probe(
                self.run_dir,
                dag_id=self.dag_id,
                run_id=self.run_id,
                task_id=self.task_id,
                try_number=self.try_number,
            )
            interval = float(self.param("gil_interval") or 0)
            if interval > 0:
                self._probe.sample_gil(interval, role="task")
        return self._probe

    def param(self, name: str) -> Any:
        return self.params.get(name, PARAMS[name])

    def headers(self) -> dict[str, str]:
        """The stream's ``Authorization`` header, from ``token_file`` if set, else ``token``."""
        path = self.param("token_file")
        token = Path(path).read_text().strip() if path else self.param("token")
        return {"Authorization": f"Bearer {token}"}

    def keep_running(self) -> bool:
        """True until the run's stop request (the operator ending the run: the harness
        writes it when the run is over) or the ``run_seconds`` bound (none by default)."""
        limit = self.param("run_seconds")
        if limit is not None and time.monotonic() - self.started >= float(limit):
            return False
        return not self.stop_requested()

    def stop_requested(self) -> bool:
        """Whether the run folder holds the stop request (looked at most every 0.2 s)."""
        now = time.monotonic()
        if not self._stop_requested and now - self._stop_checked >= STOP_CHECK_INTERVAL:
            self._stop_checked = now
            if self.probe.stop_requested():
                self._stop_requested = True
                self.probe.mark("stop_request")
        return self._stop_requested


def read_stream(
    ctx: TaskContext,
    since_id: int | None = None,
    backfill_minutes: int | None = None,
    *,
    params: dict[str, str] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Tweet messages from one connection, as tweepy and most Airflow hooks read them
    (``requests``, ``stream=True``, ``iter_lines``). Ends when the server ends the stream
    or the run's time is up; other messages (warnings, errors) go to the probe, and to
    ``messages`` if given. ``params`` is the connection's query (or ``since_id`` /
    ``backfill_minutes``). Each tweet's lag behind the server's clock goes to the GIL
    sampler (:mod:`harness.task.gil`).

    ``since_id`` is the article's ``read_stream(last_processed_id)``: a client that reads
    from a point. Unless the ``resume`` param is ``since_id`` (our extension), it is read
    the only way X allows, through its backfill or recovery (:func:`resume.plan`), and
    what those repeat is repeated."""
    params = dict(params or {})
    if since_id is not None and ctx.param("resume") != "since_id":
        connect = plan(ctx.param("resume"), since_id, now_ms(), float(ctx.param("backfill_scale")))
        params.update(connect.params)
        ctx.probe.mark("connect", since_id=since_id, **connect.detail())
    elif since_id is not None:
        params["since_id"] = str(since_id)
    if backfill_minutes is not None:
        params["backfill_minutes"] = str(backfill_minutes)
    with requests.get(
        ctx.param("stream_url"), headers=ctx.headers(), params=params, stream=True, timeout=30
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines(chunk_size=4096):
            if not ctx.keep_running():
                return
            if not line:
                continue
            message = json.loads(line)
            if "data" in message:
                READER.saw(int(message["data"]["id"]))
                yield message
            else:
                ctx.probe.mark("stream_message", message=message)
                if messages is not None:
                    messages.append(message)


_POSITIVE = frozenset(["good", "great", "love", "happy", "best", "win", "like", "nice", "fun"])
_NEGATIVE = frozenset(["bad", "hate", "worst", "sad", "lose", "angry", "poor", "ugly", "fear"])


def _score_once(text: str) -> int:
    score = 0
    for token in text.lower().split():
        word = token.strip(".,!?;:'\"()")
        if word in _POSITIVE:
            score += 1
        elif word in _NEGATIVE:
            score -= 1
        score ^= hash(word) & 1
    return score


@cache
def _us_per_pass() -> float:
    """Microseconds of CPU one scoring pass over a typical tweet takes in this process.

    Measured in this thread's CPU time, not wall time: the first call often comes from a
    worker thread while others hold the GIL, and wall time would count that waiting as
    work, calibrate too few passes, and hide the very contention being measured."""
    sample = "Team likely player simple whether form look. Shake role option western only road."
    rounds = 2000
    start = time.thread_time()
    for _ in range(rounds):
        _score_once(sample)
    return (time.thread_time() - start) / rounds * 1e6


def cpu_work(text: str, cpu_us: float) -> float:
    """A sentiment score costing about ``cpu_us`` microseconds of pure-Python CPU (a fixed
    amount of work, not a fixed time: under GIL contention it takes longer, as real
    processing would)."""
    if cpu_us <= 0:
        return 0.0
    passes = max(1, round(cpu_us / _us_per_pass()))
    total = 0
    for _ in range(passes):
        total += _score_once(text)
    return total / passes
