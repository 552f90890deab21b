"""How long the checker takes on a big run: 10 million created tweets, 1% of them lost and
1% committed twice. Target: <= 2 s for ``check_run`` (load every file, run every checker,
write metrics.json and history.jsonl).

The run folder is built once per session (that takes longer than checking it): the real
ledger writer, then the sink in batches of 10,000 tweets as the probe writes it.
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from pathlib import Path

import numpy as np
import pytest

from fake_stream.ledger import LedgerReader, LedgerWriter
from harness.check.metrics import check_run
from harness.layout import RunLayout
from harness.task.probe import create_sink

CREATED = 10_000_000
SLOTS = 100_000  # 100 s at 100,000 tweets/s
T0_MS = 1_790_000_000_000
LOSS = DUPLICATION = 0.01


@pytest.fixture(scope="session")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    layout = RunLayout(tmp_path_factory.mktemp("big-run"))
    ledger = LedgerWriter(layout.ledger, {"seed": 0, "t0_ms": T0_MS, "t0_wall": T0_MS / 1000})
    ledger.created(0, np.full(SLOTS, CREATED // SLOTS, dtype=np.int64), 0)
    ledger.connection_opened(1, token="t", opened_at=T0_MS / 1000)
    ledger.delivered(1, 0, CREATED, "acked")
    ledger.connection_closed(1, closed_at=T0_MS / 1000 + 100, end_reason="server_shutdown")
    ledger.close()
    layout.run.write_text(json.dumps({"stopped_at": T0_MS / 1000 + SLOTS / 1000, "grace": 0}))
    ids = LedgerReader(layout.ledger).created_ids().astype(np.int64)
    rng = np.random.default_rng(7)
    kept = ids[rng.random(CREATED) >= LOSS]
    repeated = rng.choice(kept, size=int(CREATED * DUPLICATION), replace=False)
    committed = np.concatenate((kept, np.sort(repeated)))
    create_sink(layout.sink)
    db = sqlite3.connect(layout.sink)
    db.execute("DROP INDEX tweets_by_id")  # rebuilt below: much faster than growing it
    for n, start in enumerate(range(0, len(committed), 10_000)):
        batch = committed[start : start + 10_000]
        at = T0_MS / 1000 + 1 + start / 100_000
        db.executemany(
            "INSERT INTO tweets VALUES (?, NULL, ?, 1, 1)", ((int(i), at) for i in batch.tolist())
        )
        db.execute(
            "INSERT INTO commits VALUES (?, ?, 1, 1, ?, ?)",
            (n + 1, at, len(batch), array("q", batch.tolist()).tobytes()),
        )
    db.execute("CREATE INDEX tweets_by_id ON tweets(tweet_id)")
    db.commit()
    db.close()
    return layout.root, CREATED - len(kept), len(repeated)


def test_check_ten_million(benchmark, big_run, capsys) -> None:
    run_dir, lost, duplicates = big_run
    metrics = benchmark.pedantic(check_run, args=(run_dir,), rounds=3, iterations=1)
    queue = metrics["queue"]
    assert (queue["created"], queue["lost"], queue["duplicates"]) == (CREATED, lost, duplicates)
    assert metrics["verdict"] == "broken"  # both loss and repeats
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(created=CREATED, lost=lost, duplicates=duplicates, seconds=seconds)
    with capsys.disabled():
        print(
            f"\nchecker: {CREATED:,} created, {lost:,} lost, {duplicates:,} repeated: "
            f"{seconds:.2f} s"
        )
