"""The same scenario and seed, run twice: the same tweets and the same fault times.

A tweet's Snowflake id carries its creation time, and two runs cannot start at the same
instant, so "the same ids" means the same ids *relative to the stream's start* (``t0``):
every tweet is created at the same millisecond offset, in the same position within it.
Fault times are compared relative to the first commit, the origin the scenario gives
them; there the bound is tolerant because the nemesis polls (50 ms) for the first commit
and for the fault's time on a busy two-core machine.

``long``: ``nox -s load`` runs it beside the loaded/unloaded comparison (the fake stream's
own determinism, ``tests/fake_stream/test_determinism.py``, runs in ``nox -s tests``).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fake_stream import snowflake
from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess

SCENARIO = """
name = "twice"
seed = 42
variant = "naive_loop"
duration = 6
rate = {kind = "poisson", rate = 400}
params = {cpu_us = 10, batch = 20}
task = {retries = 1, retry_delay = 1}

[[airflow_faults]]
type = "kill_task"
at = 2
"""

POISSON = {"kind": "poisson", "rate": 400}

# Polling of the first commit and of the fault time (50 ms each), signal delivery, a
# loaded machine: the same planned time lands within this much.
FAULT_TIME_TOLERANCE = 0.5


def run_once(tmp_path: Path, out: str) -> Path:
    path = tmp_path / "twice.toml"
    path.write_text(SCENARIO)
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path), "--out", str(tmp_path / out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / out / "twice"


def relative_ids(run: Path) -> np.ndarray:
    """Every created tweet's id minus the id of position 0 at the stream's ``t0``."""
    return ledger_relative_ids(run / "ledger.sqlite")


def ledger_relative_ids(ledger: Path) -> np.ndarray:
    books = LedgerReader(ledger)
    _, first, count = books.created_slots()
    total = int(first[-1] + count[-1])
    ids = books.ids_of(np.arange(total, dtype=np.int64)).astype(np.int64)
    return ids - snowflake.encode(books.t0_ms, 0)


def fault_offsets(run: Path) -> list[tuple[str, str, float]]:
    """Each fault record's time after the sink's first commit."""
    db = sqlite3.connect(run / "sink.sqlite")
    try:
        first_commit = db.execute("SELECT min(committed_at) FROM commits").fetchone()[0]
    finally:
        db.close()
    faults = [json.loads(line) for line in (run / "airflow_faults.jsonl").read_text().splitlines()]
    return [(f["f"], f["fault"], f["time"] - first_commit) for f in faults]


@pytest.mark.long  # two harness runs with a retry (~2.5 min): nox -s load runs it
@pytest.mark.timeout(900)  # two harness runs
def test_same_scenario_same_tweets_and_fault_times(tmp_path):
    a, b = run_once(tmp_path, "a"), run_once(tmp_path, "b")
    ids_a, ids_b = relative_ids(a), relative_ids(b)
    common = min(len(ids_a), len(ids_b))
    assert common > 2000  # several seconds of a 400/s Poisson stream
    assert np.array_equal(ids_a[:common], ids_b[:common])
    faults_a, faults_b = fault_offsets(a), fault_offsets(b)
    assert [f[:2] for f in faults_a] == [f[:2] for f in faults_b]
    start_a, start_b = faults_a[0][2], faults_b[0][2]
    assert abs(start_a - 2) < FAULT_TIME_TOLERANCE
    assert abs(start_a - start_b) < FAULT_TIME_TOLERANCE
    # The comparison can fail: another seed draws other Poisson arrivals.
    other = tmp_path / "seed-7.sqlite"
    with StreamServerProcess(other, ["--seed", "7", "--profile", json.dumps(POISSON)]):
        time.sleep(2)
    ids_c = ledger_relative_ids(other)
    common = min(len(ids_a), len(ids_c))
    assert common > 500
    assert not np.array_equal(ids_a[:common], ids_c[:common])
