"""The run's PostgreSQL store and its mirror into the run folder (harness/task/
postgres_store.py, harness/airflow/store_mirror.py), on a real server: tries in other
processes commit and record events there, are killed mid-way, and the run folder ends up
holding exactly what the store holds."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.airflow.postgres import PostgresServer, bin_dir
from harness.airflow.store_mirror import RunStore, schema_name
from harness.layout import RunLayout
from harness.task.probe import Probe, create_sink, is_store_url


def read_commits(sink: Path) -> list[list[int]]:
    """The folder sink's commits, each its list of tweet ids."""
    with sqlite3.connect(sink) as db:
        rows = db.execute("SELECT tweet_ids FROM commits ORDER BY commit_id").fetchall()
    return [list(array("q", blob)) for (blob,) in rows]


pytestmark = pytest.mark.skipif(
    bin_dir() is None, reason="no PostgreSQL server (apt-get install postgresql; .ci/run does)"
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="streamstall-pg-"))
    folder.chmod(0o755)  # the postgres user enters it
    server = PostgresServer(folder / "pg")
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(folder)


@pytest.fixture
def store(database: str, tmp_path: Path) -> Iterator[RunStore]:
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    create_sink(layout.sink)
    store = RunStore(database, schema_name("store test@1"), layout)
    yield store
    store.close()


def _commit_forever(url: str, writer: int, batches: int) -> None:
    """A try: starts, commits ``batches`` batches of 50 (forever if 0), never ends."""
    probe = Probe(url, dag_id="d", run_id="r", task_id="stream", try_number=writer)
    probe.started()
    sink = probe.open_sink()
    n = 0
    while batches == 0 or n < batches:
        first = writer * 10_000_000 + n * 50
        sink.commit([(first + i, 1.0) for i in range(50)])
        n += 1


def test_concurrent_writers_killed_mid_way_are_mirrored_to_the_row(store):
    """Four tries commit at full speed while the mirror copies every few ms; two are
    SIGKILLed. The folder's sink and events end up equal to the store's: no row skipped
    by a copy that ran while another writer's transaction was still open."""
    assert is_store_url(store.url)
    context = multiprocessing.get_context("spawn")
    tries = [context.Process(target=_commit_forever, args=(store.url, w, 0)) for w in (1, 2)]
    tries += [context.Process(target=_commit_forever, args=(store.url, w, 40)) for w in (3, 4)]
    for process in tries:
        process.start()
    copying, copies = True, []

    def copy() -> None:
        while copying:
            copies.append(store.mirror())
            time.sleep(0.003)

    mirror = threading.Thread(target=copy)
    mirror.start()
    # Until every try has started and the mirror has copied commits (slow on a busy machine).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        len(list(store.layout.probe_dir.glob("*.jsonl"))) < 4 or sum(map(bool, copies)) < 10
    ):
        time.sleep(0.1)
    time.sleep(0.5)
    for process in tries[:2]:
        os.kill(process.pid, signal.SIGKILL)  # mid-commit, at some instant
    for process in tries:
        process.join(30)
    copying = False
    mirror.join()
    assert sum(1 for n in copies if n) > 10  # it copied while they wrote
    store.mirror()

    with psycopg.connect(store.url) as db:
        in_store = db.execute("SELECT count(*), sum(count) FROM commits").fetchone()
        tweets = db.execute("SELECT count(*) FROM tweets").fetchone()[0]
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    commits = read_commits(store.layout.sink)
    assert (len(commits), sum(len(c) for c in commits)) == in_store
    with sqlite3.connect(store.layout.sink) as db:
        assert db.execute("SELECT count(*) FROM tweets").fetchone()[0] == tweets == in_store[1]
    assert in_store[1] >= 2 * 40 * 50  # the two that finished, at least
    lines = [line for path in store.layout.probe_dir.glob("*.jsonl") for line in path.open()]
    assert len(lines) == events == 4  # each try's start, in a file named by host and pid
    assert {p.name.rsplit("-", 1)[1] for p in store.layout.probe_dir.glob("*.jsonl")} == {
        f"{process.pid}.jsonl" for process in tries
    }


def test_the_stop_request_reaches_the_tries_and_checkpoints_come_back(store):
    probe = Probe(store.url, dag_id="d", run_id="r", task_id="stream", try_number=1)
    with probe.sink() as sink:
        assert sink.checkpoint_or_start("since_id", 5) == 5
        assert sink.commit_new([(7, 1.0), (8, 1.0)], ("since_id", 8)) == (2, 8)
        assert sink.commit_new([(8, 1.0), (9, 1.0)], ("since_id", 6)) == (1, 8)  # kept: 8
        assert sink.already_committed([7, 9, 10]) == {7, 9}
    assert not probe.stop_requested()
    store.mirror()
    assert not probe.stop_requested()  # the folder has none yet
    store.layout.stop_request.write_text("")
    store.mirror()
    assert probe.stop_requested()
    assert read_commits(store.layout.sink) == [[7, 8], [9]]
    with sqlite3.connect(store.layout.sink) as db:
        assert db.execute("SELECT name, value FROM checkpoints").fetchall() == [("since_id", "8")]


def test_closing_drops_the_schema(database, tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    create_sink(layout.sink)
    store = RunStore(database, schema_name("dropped"), layout)
    with Probe(store.url, dag_id="d", run_id="r", task_id="s", try_number=1).sink() as sink:
        sink.commit([(1, None)])
    store.mirror()
    store.close()
    assert len(read_commits(layout.sink)) == 1
    with psycopg.connect(database) as db:
        found = db.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (store.schema,)
        ).fetchone()
    assert found is None
