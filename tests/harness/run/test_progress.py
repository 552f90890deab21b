"""harness/run/progress.py: the committed count and the first commit, read from a sink the
probe writes, as the runner and the nemesis both see them; the tries running, from the
probe's records."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys

from harness.procs import OwnedProcess
from harness.run.progress import SinkWatch, TryWatch, committed_count
from harness.task.probe import Sink, create_sink


def test_the_watch_counts_what_the_probe_committed(tmp_path):
    path = tmp_path / "sink.sqlite"
    create_sink(path)
    watch = SinkWatch(path, started_at=123.0)
    assert (watch.committed(), watch.first_commit_at()) == (0, None)
    first, second = Sink(path, pid=1, try_number=1), Sink(path, pid=2, try_number=2)
    first.commit([(10, None), (11, None)])
    second.commit([(11, None)])  # a repeat counts: the task committed it again
    assert watch.committed() == 3
    first.commit([(12, None)] * 4)
    assert watch.committed() == 7 == committed_count(path)
    db = sqlite3.connect(path)
    (earliest,) = db.execute("SELECT committed_at FROM commits ORDER BY commit_id").fetchone()
    db.close()
    assert watch.first_commit_at() == earliest  # the sink's time, not when it was read
    assert watch.started_at == 123.0
    for sink in (first, second):
        sink.close()
    watch.close()


def test_a_try_runs_from_its_start_record_to_its_end_record_or_its_death(tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    watch = TryWatch(probe_dir)
    assert watch.running() == []
    alive = OwnedProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = probe_dir / f"host-{alive.pid}.jsonl"
        record = {"time": 1.0, "pid": alive.pid, "try": 1, "f": "task", "value": {}}
        line = json.dumps({**record, "type": "invoke"}) + "\n"
        path.write_text(line[:20])  # a record being written is not read yet
        assert watch.running() == []
        path.write_text(line)
        assert watch.running() == [alive.pid]
        with path.open("a") as f:
            f.write(json.dumps({**record, "type": "ok"}) + "\n")
        assert watch.running() == []  # ended, though its process lives on
        with path.open("a") as f:
            f.write(line)  # the next try in the same process
        assert watch.running() == [alive.pid]
        alive.signal(signal.SIGKILL)
        alive.popen.wait()
        assert watch.running() == []  # killed: no end record, but gone
    finally:
        alive.stop()
