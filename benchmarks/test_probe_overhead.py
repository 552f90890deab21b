"""What the probe costs per processed tweet, beyond the sink write itself. Target <= 2 us.

Both sides commit the same 200,000 tweets in batches of 100 (one transaction each) to a
SQLite file with the same settings and the same index on tweet_id:

- the bare pipeline writes ``(tweet_id, result)`` rows;
- the probe's :meth:`Sink.commit` writes the same rows plus its bookkeeping: the processing
  time, pid and try of each row, and one ``commits`` row holding the batch's ids packed.

The overhead is the difference of the two medians, per tweet.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness.task.probe import Probe

TWEETS = 200_000
BATCH = 100
_medians: dict[str, float] = {}


def _rows() -> list[list[tuple[int, float]]]:
    base = 2_000_000_000_000_000_000
    return [[(base + i, i * 0.5) for i in range(s, s + BATCH)] for s in range(0, TWEETS, BATCH)]


def _bare(path: Path, batches: list[list[tuple[int, float]]]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE tweets(tweet_id INTEGER NOT NULL, result REAL)")
    db.execute("CREATE INDEX tweets_by_id ON tweets(tweet_id)")
    for rows in batches:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO tweets VALUES (?, ?)", rows)
        db.execute("COMMIT")
    db.close()


def _probed(run_dir: Path, batches: list[list[tuple[int, float]]]) -> None:
    probe = Probe(run_dir, dag_id="bench", run_id="r", task_id="t", try_number=1)
    with probe.sink() as sink:
        for rows in batches:
            sink.commit(rows)


@pytest.mark.parametrize("side", ["bare", "probe"])
def test_commit_cost(benchmark, tmp_path_factory, side, capsys) -> None:
    batches = _rows()
    counter = iter(range(1000))

    def fresh() -> tuple[tuple[Path, list], dict]:
        target = tmp_path_factory.mktemp(f"{side}-{next(counter)}")
        return ((target / "bare.sqlite" if side == "bare" else target, batches), {})

    benchmark.pedantic(_bare if side == "bare" else _probed, setup=fresh, rounds=5)
    _medians[side] = benchmark.stats.stats.median
    benchmark.extra_info["us_per_tweet"] = _medians[side] / TWEETS * 1e6
    if len(_medians) == 2:
        overhead = (_medians["probe"] - _medians["bare"]) / TWEETS * 1e6
        benchmark.extra_info["probe_overhead_us_per_tweet"] = overhead
        with capsys.disabled():
            print(
                f"\nprobe: bare sink {_medians['bare'] / TWEETS * 1e6:.2f} us/tweet, "
                f"with probe {_medians['probe'] / TWEETS * 1e6:.2f} us/tweet, "
                f"overhead {overhead:.2f} us/tweet (batches of {BATCH})"
            )
