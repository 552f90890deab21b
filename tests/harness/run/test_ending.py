"""harness/run/ending.py on a real fake stream and a real reader: the stream stops creating
and serves on; the run waits for quiescence or its cap; the stop request ends a reader
blocked on a quiet stream, and the record says who ended what."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_stream.ledger import LedgerReader
from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.run.ending import Ending, await_end, request_stop, stop_creating, stream_idle
from harness.run.progress import SinkWatch, TryWatch
from harness.run.services import StreamServerProcess
from harness.task.probe import create_sink

# A try as a variant runs one: read the stream until keep_running() says stop, then return.
READER = """
import sys
from harness.task.variants.common import TaskContext, read_stream
params = {"stream_url": sys.argv[1], "token": sys.argv[2], "run_dir": sys.argv[3],
          "gil_interval": 0}
ctx = TaskContext("dag", "run", "stream", 1, None, params)
ctx.probe.started()
read = sum(1 for _ in read_stream(ctx))
ctx.probe.exited("returned")
print(read, flush=True)
"""


class Task:
    """A stand-in for a mode's TaskHandle: one try process (or none), over when it exits."""

    reads_stop_request = True  # a variant's try: it ends on reading the run's stop request

    def __init__(self, process: OwnedProcess | None = None, over: bool = False) -> None:
        self.process, self.over, self.stop_requested = process, over, False

    def ended(self) -> bool:
        return self.over or (self.process is not None and not self.process.alive())

    def request_stop(self) -> None:
        self.stop_requested = True

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ended() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ended()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[RunLayout, StreamServerProcess, SinkWatch]]:
    """A run folder with its sink, and a fake stream at 1,000 tweets/s; stopped after."""
    layout = RunLayout(tmp_path)
    create_sink(layout.sink)
    server = StreamServerProcess(layout.ledger, ["--rate", "1000", "--seed", "5"])
    sink = SinkWatch(layout.sink)
    yield layout, server, sink
    server.stop()
    sink.close()


def test_the_stream_stops_creating_and_serves_on(run):
    _, server, _ = run
    time.sleep(0.3)
    stop_creating(server)
    created = server.control("GET", "stats")["created"]
    time.sleep(0.5)
    stats = server.control("GET", "stats")
    assert stats["created"] == created > 0
    assert stream_idle(stats)  # no connection: nobody is owed anything


def test_a_pending_retry_holds_the_run_open_until_the_cap(run):
    """No try runs and the task is not over (a retry is due): never quiescent."""
    layout, server, sink = run
    ending = Ending(created_until=stop_creating(server), cap_seconds=3.0)
    started = time.monotonic()
    await_end(ending, server, Task(), sink, TryWatch(layout.probe_dir))
    assert ending.how == "cap"
    assert time.monotonic() - started >= 3.0
    ending = Ending(created_until=time.time(), cap_seconds=30.0)
    await_end(ending, server, Task(over=True), sink, TryWatch(layout.probe_dir))
    assert ending.how == "quiescent"


def test_the_stop_request_wakes_a_reader_on_a_quiet_stream_and_it_returns(run):
    layout, server, sink = run
    argv = [sys.executable, "-c", READER, server.stream_url, server.token, str(layout.root)]
    reader = OwnedProcess(argv)
    try:
        task = Task(reader)
        tries = TryWatch(layout.probe_dir)
        deadline = time.monotonic() + 30
        while not tries.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # a second of tweets read
        ending = Ending(created_until=stop_creating(server), cap_seconds=60.0)
        await_end(ending, server, task, sink, tries)
        assert ending.how == "quiescent"  # the reader runs, owed nothing, committing nothing
        (connection,) = server.control("GET", "stats")["connections"]
        assert connection["backlog"] == 0
        requested = time.monotonic()
        request_stop(ending, layout.stop_request, server, task)
        # The server's keep-alive interval is 20 s (X's): it was the stop's keep-alive that
        # woke the reader, which then read the request and returned.
        assert time.monotonic() - requested < 10
        assert (ending.task_ended_by, task.stop_requested) == ("stop_request", True)
        assert reader.popen.wait(timeout=10) == 0
        assert reader.popen.stdout is not None
        assert int(reader.popen.stdout.read()) == connection["tweets_sent"] > 500
        marks = (layout.probe_dir / f"{_host()}-{reader.pid}.jsonl").read_text()
        assert '"stop_request"' in marks
    finally:
        reader.stop()


# A retry as the careful variants run one: reconnect on an error (here: 429 while another
# connection holds the token's one slot) until the stop request.
RETRY = """
import sys, time
import requests
from harness.task.variants.common import TaskContext, read_stream
params = {"stream_url": sys.argv[1], "token": sys.argv[2], "run_dir": sys.argv[3],
          "gil_interval": 0}
ctx = TaskContext("dag", "run", "stream", 2, None, params)
ctx.probe.started()
while ctx.keep_running():
    try:
        for _ in read_stream(ctx):
            pass
    except requests.HTTPError:
        time.sleep(0.2)
ctx.probe.exited("returned")
"""


# Holds the token's one connection, reading, until it is stopped (a try that outlives its
# timeout, as exactly_once's second try did under Airflow 3.3.2 in the main job).
HOLDER = """
import sys, requests
with requests.get(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]},
                  stream=True, timeout=60) as response:
    print(response.status_code, flush=True)
    for _ in response.iter_lines():
        pass
"""


def test_a_refused_retry_holds_the_run_open_until_it_gets_in(run):
    """While another process holds the token's one connection the retry's connects are
    refused (429): the run is not quiescent, however quiet the stream and the sink. Once
    the holder is gone the retry gets in, and only then does the run end."""
    layout, server, sink = run
    created_until = stop_creating(server)
    token = server.token
    holder = OwnedProcess([sys.executable, "-c", HOLDER, server.stream_url, token])
    retry = None
    try:
        assert holder.popen.stdout is not None
        assert holder.popen.stdout.readline().strip() == "200"
        argv = [sys.executable, "-c", RETRY, server.stream_url, token, str(layout.root)]
        retry = OwnedProcess(argv)
        tries = TryWatch(layout.probe_dir)
        deadline = time.monotonic() + 30
        while not tries.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        release = threading.Timer(6.0, holder.stop)  # longer than QUIET, shorter than the cap
        release.start()
        ending = Ending(created_until=created_until, cap_seconds=60.0)
        await_end(ending, server, Task(retry), sink, tries)
        ended = time.time()
        release.join()
        assert ending.how == "quiescent"
        books = LedgerReader(layout.ledger)
        held, got_in = books.connections()
        assert books.events("refused")
        assert held["closed_at"] <= got_in["opened_at"] < ended
    finally:
        holder.stop()
        if retry is not None:
            retry.stop()


def test_a_task_over_before_the_request_ended_itself(run):
    layout, server, _ = run
    ending = Ending(created_until=stop_creating(server), cap_seconds=10.0)
    request_stop(ending, layout.stop_request, server, Task(over=True))
    assert ending.task_ended_by == "itself"
    assert layout.stop_request.exists()


def _host() -> str:
    import socket

    return socket.gethostname()
