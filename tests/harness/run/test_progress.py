"""harness/run/progress.py: the committed count and the first commit, read from a sink the
probe writes, as the runner and the nemesis both see them."""

from __future__ import annotations

import sqlite3

from harness.run.progress import SinkWatch, committed_count
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
