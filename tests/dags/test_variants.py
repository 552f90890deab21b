"""Every DAG variant on a real Airflow 3.3 (``airflow dags test``, SQLite), against the fake
stream, checked by the checker and by Airflow's own task-instance records."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time

import pytest
import redis

from fake_stream.ledger import LedgerReader
from harness.airflow.home import DAGS_FOLDER
from harness.check.history import load_history
from harness.procs import OwnedProcess
from harness.redis_server import RedisServer
from harness.task.variants import VARIANTS


def test_every_dag_imports_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == sorted(VARIANTS)
    for dag_id, dag in bag.dags.items():
        assert dag.doc_md  # each file's docstring is its DAG's documentation
        assert [t.task_id for t in dag.tasks] == ["stream"]
        assert (DAGS_FOLDER / f"{dag_id}.py").exists()  # file and DAG named alike
    assert bag.dags["exactly_once"].max_active_runs == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    # Not the queue variants (Redis: below) nor those whose runs Airflow starts itself
    # (scheduled_poll below; event_driven in tests/repro/test_airflow_native.py).
    "variant",
    sorted(n for n, v in VARIANTS.items() if not (v.queue or v.scheduled)),
)
def test_short_run_is_processed_and_checked(variant_run, variant):
    """No faults: once tweets are being committed, the stream runs 3 s more and ends (the
    server stops: the end of the run); each variant then finishes what it read. The
    checker finds every tweet of the window processed once; Airflow recorded one
    successful try."""
    run = variant_run("--rate", "1000", "--seed", "41")
    task = run.dags_test(variant, run_seconds=10, cpu_us=50)
    run.wait_for_commits(100)
    time.sleep(3)
    assert run.server.stop() == 0
    assert task.popen.wait(timeout=120) == 0
    task.stop()
    metrics = run.finish(variant)
    queue = metrics["queue"]
    assert queue["processed_unique"] > 1000  # ~1 s before the first commit + 3 s - 2 s grace
    assert metrics["verdict"] == "exactly-once"
    assert [t["state"] for t in run.home.task_instances(variant)] == ["success"]
    assert run.layout.metrics.exists()


@pytest.mark.slow
def test_exactly_once_survives_sigkill_mid_batch(variant_run):
    """SIGKILL the task process while it holds an uncommitted batch (``dags test`` runs the
    task in its own process, so the command dies with it), then relaunch, as a restart in
    this mode is: the new run resumes at the committed checkpoint and the checker finds
    every tweet of the window committed exactly once."""
    run = variant_run("--rate", "2000", "--seed", "42")
    # A batch far too big to fill: the task commits by age, every 0.5 s (MAX_BATCH_AGE).
    first = run.dags_test("exactly_once", run_seconds=30, batch=100_000, cpu_us=50)
    run.wait_for_commits(1000)
    committed = run.committed()
    run.wait_for_commits(committed + 1)  # a commit just happened...
    time.sleep(0.25)  # ...and the next one is 0.25 s away: ~500 tweets read, not committed
    first.signal(signal.SIGKILL)
    assert first.popen.wait(timeout=10) == -signal.SIGKILL
    first.stop()
    killed_with = run.committed()
    second = run.dags_test("exactly_once", run_seconds=20, batch=100_000, cpu_us=50)
    # The stream ends (the window with it) once the relaunch has committed and caught up
    # with it, so every tweet of the window had a reader; then the task runs out its time.
    run.wait_for_commits(killed_with + 1, timeout=120)
    run.wait_for_caught_up(timeout=120)
    assert run.server.stop() == 0
    assert second.popen.wait(timeout=120) == 0
    second.stop()
    metrics = run.finish("exactly_once")

    queue = metrics["queue"]
    assert metrics["verdict"] == "exactly-once"
    assert queue["duplicates"] == 0
    assert queue["processed_unique"] > killed_with
    outcomes = [(t["try"], t["outcome"]) for t in metrics["timing"]["tries"]["list"]]
    assert outcomes == [(1, "info"), (1, "ok")]  # killed (no end recorded), then returned
    # Mid-batch: the first connection delivered tweets the killed try never committed
    # (read, scored, lost with the process), and the second run committed them.
    books = LedgerReader(run.layout.ledger)
    first_conn = books.connections()[0]["conn_id"]
    delivered_to_first = set(books.ids_of(books.delivered_indexes(first_conn)).tolist())
    db = sqlite3.connect(run.layout.sink)
    by_pid = {}
    for tweet_id, pid in db.execute("SELECT tweet_id, pid FROM tweets"):
        by_pid.setdefault(pid, set()).add(tweet_id)
    (killed_pid,) = [t["pid"] for t in metrics["timing"]["tries"]["list"] if t["outcome"] == "info"]
    in_flight = delivered_to_first - by_pid[killed_pid]
    assert in_flight
    assert in_flight <= set().union(*[ids for pid, ids in by_pid.items() if pid != killed_pid])
    # Airflow's record: the killed run's try never finished; the relaunch succeeded.
    states = [t["state"] for t in run.home.task_instances("exactly_once")]
    assert states.count("success") == 1


@pytest.mark.slow
def test_queue_decoupled_keeps_every_tweet_across_a_sigkill(variant_run, tmp_path):
    """Ingester -> Redis Stream -> consumer group. A consumer that died holding a batch (the
    test reads 50 entries as "ghost" and never acknowledges them) is claimed by the first
    try (XAUTOCLAIM); that try is SIGKILLed mid-run; the stream keeps filling Redis; the
    relaunched task reads on. Every tweet of the window is committed exactly once."""
    run = variant_run("--rate", "1000", "--seed", "44")
    broker = RedisServer(tmp_path / "redis")
    ingester = OwnedProcess([
        sys.executable, "-m", "harness.task.ingester", "--stream-url", run.server.stream_url,
        "--token-file", str(run.server.token_file), "--redis-url", broker.url,
    ])  # fmt: skip
    try:
        client = redis.Redis.from_url(broker.url)
        while client.xlen("tweets") < 200:
            time.sleep(0.05)
        client.xgroup_create("tweets", "airflow", id="0")
        ((_, ghost_batch),) = client.xreadgroup("airflow", "ghost", {"tweets": ">"}, count=50)
        time.sleep(1.2)  # idle longer than the task's claim threshold (1 s)
        first = run.dags_test("queue_decoupled", run_seconds=30, redis_url=broker.url, cpu_us=200)
        run.wait_for_commits(1000)
        first.signal(signal.SIGKILL)
        first.popen.wait(timeout=10)
        first.stop()
        # The second try drains the backlog for run_seconds, then returns: its `dags test`
        # takes ~15 s to start on a 2-vCPU machine (2026-12-01) and the drain a good part
        # of 12 s, so it gets 25.
        second = run.dags_test(
            "queue_decoupled", run_seconds=25, redis_url=broker.url, cpu_us=200, batch=200
        )
        time.sleep(6)  # start-up, then the backlog
        assert run.server.stop() == 0  # the end of the stream: the task drains Redis
        assert second.popen.wait(timeout=120) == 0
        second.stop()
    finally:
        ingester.stop()
        broker.stop()
    metrics = run.finish("queue_decoupled")
    assert metrics["verdict"] == "exactly-once"
    assert metrics["queue"]["processed_unique"] > 2000
    first_try, second_try = sorted(load_history(run.layout.root).tries, key=lambda t: t.started_at)
    assert (first_try.outcome, second_try.outcome) == ("info", "ok")  # killed, then returned
    assert first_try.start["resumed_from"] == len(ghost_batch) == 50  # claimed from the ghost


@pytest.mark.slow
def test_scheduled_poll_reads_every_tweet_once_over_its_runs(variant_run):
    """Three short runs of the poller, as its schedule would start them (each a ``dags
    test``): the first records its start point, each later one reads X's recent search from
    the ``since_id`` the last stored, paging through (1,000 tweets/s: ~20 pages of 100);
    the third runs after the stream stopped creating. The checker finds every tweet of the
    window committed once; the ledger recorded each run's requests on the search endpoint;
    the checkpoint is the newest tweet committed."""
    run = variant_run("--rate", "1000", "--seed", "43")
    for i in range(3):
        if i == 2:
            run.server.control("PUT", "rate", {"kind": "constant", "rate": 0})
        task = run.dags_test("scheduled_poll", cpu_us=50)
        assert task.popen.wait(timeout=120) == 0
        task.stop()
        if i < 2:
            time.sleep(2)
    metrics = run.finish("scheduled_poll")
    assert metrics["verdict"] == "exactly-once"
    assert metrics["queue"]["processed_unique"] > 3000  # two gaps of > 2 s at 1,000/s
    assert [t["state"] for t in run.home.task_instances("scheduled_poll")] == ["success"] * 3
    connections = LedgerReader(run.layout.ledger).connections()
    assert {c["endpoint"] for c in connections} == {"/2/tweets/search/recent"}
    assert len(connections) > 30  # pages of 100
    db = sqlite3.connect(run.layout.sink)
    try:
        newest = db.execute("SELECT max(tweet_id) FROM tweets").fetchone()[0]
        stored = db.execute(
            "SELECT value FROM checkpoints WHERE name = 'scheduled_poll.since_id'"
        ).fetchone()[0]
    finally:
        db.close()
    assert int(stored) == newest
