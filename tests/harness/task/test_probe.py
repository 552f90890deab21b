"""The probe: what it records, and that a SIGKILL at any instant corrupts nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from harness.check.history import _jsonl, _probe
from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.task.probe import Probe, Sink, create_sink

# A task that commits batches of 20 consecutive ids forever, each batch with a checkpoint,
# and writes an event before every commit.
BUSY_TASK = textwrap.dedent("""
    import sys
    from harness.task.probe import Probe
    probe = Probe(sys.argv[1], dag_id="d", run_id="r", task_id="t", try_number=int(sys.argv[2]))
    sink = probe.open_sink()
    start = sink.checkpoint("next") or 0
    probe.started(resumed_from=start)
    print("ready", flush=True)
    n = start
    while True:
        probe.mark("batch", first=n)
        sink.commit([(i, float(i)) for i in range(n, n + 20)], ("next", n + 20))
        n += 20
""")


def test_sigkill_at_any_instant_leaves_whole_commits_and_whole_records(tmp_path):
    """Kill the busy task five times at different instants, resuming from its checkpoint
    each time: the sink holds whole batches only, each id exactly once (the checkpoint
    commits with its batch), the blobs match the rows, and every event line is whole."""
    script = tmp_path / "task.py"
    script.write_text(BUSY_TASK)
    layout = RunLayout(tmp_path / "run")
    for try_number, delay in enumerate([0.05, 0.13, 0.21, 0.08, 0.3], start=1):
        task = OwnedProcess([sys.executable, str(script), str(layout.root), str(try_number)])
        assert task.popen.stdout.readline().strip() == "ready"
        time.sleep(delay)
        task.signal(signal.SIGKILL)
        assert task.popen.wait(timeout=10) == -signal.SIGKILL
        task.stop()
    sink = sqlite3.connect(layout.sink)
    rows = [r[0] for r in sink.execute("SELECT tweet_id FROM tweets ORDER BY rowid")]
    assert rows == list(range(len(rows)))  # whole batches, in order, nothing twice
    assert len(rows) % 20 == 0
    assert len(rows) > 100
    blobs = b"".join(r[0] for r in sink.execute("SELECT tweet_ids FROM commits ORDER BY commit_id"))
    assert np.frombuffer(blobs, dtype=np.int64).tolist() == rows
    checkpoint = sink.execute("SELECT value FROM checkpoints WHERE name = 'next'").fetchone()[0]
    assert json.loads(checkpoint) == len(rows)
    tries, ops = _probe(layout.probe_dir)  # raises on a torn or invalid line
    assert [(t.try_number, t.outcome) for t in tries] == [(n, "info") for n in range(1, 6)]
    assert [t.start["resumed_from"] for t in tries][1:] == sorted(
        t.start["resumed_from"] for t in tries
    )[1:]
    assert sum(1 for op in ops if op.f == "mark") >= len(rows) // 20


def test_lifecycle_records(tmp_path):
    probe = Probe(tmp_path, dag_id="d", run_id="r1", task_id="t", try_number=3)
    probe.started(logical_date="2026-11-25T00:00:00+00:00", resumed_from=42)
    probe.checkpoint(100, path="/tmp/state.json")
    probe.signal(signal.SIGTERM)
    probe.mark("reconnect", since_id=99)
    probe.exited("raised", TimeoutError("late"))
    (path,) = (tmp_path / "probe").glob("*.jsonl")
    records = _jsonl(path)
    expected = ["invoke task", "info checkpoint", "info signal", "info mark", "fail task"]
    assert [f"{r['type']} {r['f']}" for r in records] == expected
    start = records[0]["value"]
    assert (start["dag_id"], start["run_id"], start["resumed_from"]) == ("d", "r1", 42)
    assert start["logical_date"] == "2026-11-25T00:00:00+00:00"
    assert records[2]["value"] == {"signal": "SIGTERM"}
    assert records[4]["value"]["error"] == "TimeoutError"
    assert all(r["try"] == 3 for r in records)


def test_rss_sampling_and_idempotent_reads(tmp_path):
    probe = Probe(tmp_path, dag_id="d", run_id="r", task_id="t", try_number=1)
    probe.sample_rss(interval=0.05)
    with probe.sink() as sink:
        sink.commit([(5, 1.0), (6, 2.0)], ("last", 6))
        assert sink.already_committed([4, 5, 6, 7]) == {5, 6}
        assert sink.checkpoint("last") == 6
        assert sink.checkpoint("never") is None
    time.sleep(0.3)
    _, ops = _probe(tmp_path / "probe")
    rss = [op.value["bytes"] for op in ops if op.f == "rss"]
    assert len(rss) >= 3
    assert all(b > 1_000_000 for b in rss)  # a Python process holds megabytes


def test_a_failed_commit_leaves_nothing(tmp_path):
    """A row SQLite cannot store fails the commit inside its transaction: rolled back."""
    probe = Probe(tmp_path, dag_id="d", run_id="r", task_id="t", try_number=1)
    with probe.sink() as sink:
        with pytest.raises(sqlite3.Error):
            sink.commit([(1, 0.0), (2, object())], ("last", 2))
        assert sink.checkpoint("last") is None
        assert sink.already_committed([1]) == set()
    db = sqlite3.connect(tmp_path / "sink.sqlite")
    assert db.execute("SELECT count(*) FROM commits").fetchone()[0] == 0


def test_commit_new_writes_each_tweet_once_and_never_moves_the_checkpoint_back(tmp_path):
    """Two writers (an orphaned try and its retry) committing overlapping batches in
    threads: every tweet is in the sink once, and the checkpoint is the newest of all."""
    create_sink(tmp_path / "sink.sqlite")
    batches = [[(i, 0.0) for i in range(start, start + 20)] for start in range(1, 400, 10)]

    def writer(try_number: int, order: list[list[tuple[int, float]]]) -> None:
        sink = Sink(tmp_path / "sink.sqlite", pid=try_number, try_number=try_number)
        for rows in order:
            sink.commit_new(rows, ("last", max(i for i, _ in rows)))
        sink.close()

    threads = [
        threading.Thread(target=writer, args=(1, batches)),
        threading.Thread(target=writer, args=(2, batches[::-1])),  # old ids last
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db = sqlite3.connect(tmp_path / "sink.sqlite")
    ids = [row[0] for row in db.execute("SELECT tweet_id FROM tweets")]
    assert sorted(ids) == list(range(1, 411))
    sink = Sink(tmp_path / "sink.sqlite", pid=0, try_number=0)
    assert sink.checkpoint("last") == 410
    assert sink.commit_new([(5, 0.0), (411, 0.0)], ("last", 7)) == (1, 410)
    assert sink.checkpoint_or_start("start", 3) == 3
    assert sink.checkpoint_or_start("start", 9) == 3  # the first start point stays
