"""End to end: a real fake stream, a real consumer committing through the probe, SIGKILLed
and restarted; the checker's counts must equal what this test counts itself from the raw
files with plain sets and Counters."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.run.services import StreamServerProcess
from harness.task.probe import create_sink


def _consumer(
    server: StreamServerProcess, run_dir: Path, try_number: int, resume: str
) -> OwnedProcess:
    return OwnedProcess([
        sys.executable, "-m", "harness.task.plain_consumer", "--stream-url", server.stream_url,
        "--token-file", str(server.token_file), "--run-dir", str(run_dir),
        "--try", str(try_number),
        "--batch", "25", "--resume", resume,
    ])  # fmt: skip


def _run(tmp_path: Path, resume: str) -> tuple[Path, float]:
    """Consume, SIGKILL the consumer mid-stream, restart it, stop the server."""
    layout = RunLayout(tmp_path)
    server = StreamServerProcess(layout.ledger, ["--rate", "2000", "--seed", "31"])
    create_sink(layout.sink)
    first = _consumer(server, tmp_path, 1, resume)
    time.sleep(1.5)
    killed_at = time.time()
    first.signal(signal.SIGKILL)
    first.popen.wait(timeout=10)
    with layout.airflow_faults.open("a") as f:
        f.write(json.dumps({"time": killed_at, "f": "start", "fault": "kill_consumer"}) + "\n")
    time.sleep(0.5)  # tweets are created while nobody consumes
    second = _consumer(server, tmp_path, 2, resume)
    time.sleep(3.0)  # longer than the checker's 2 s grace: the restart is inside the window
    assert server.stop() == 0
    assert second.popen.wait(timeout=20) == 0  # the stream ended; the consumer returned
    first.stop()
    second.stop()
    # The end-of-run record `check` needs (it never judges a run that did not finish): the
    # window ends at the server's stop minus the grace, as the oracle below counts.
    ending = {"how": "quiescent", "task_ended_by": "itself"}
    layout.run.write_text(json.dumps({"grace": 2.0, "ending": ending}))
    return tmp_path, killed_at


def _own_count(run_dir: Path, grace: float) -> dict[str, int]:
    """The oracle: plain Python over the raw files, sharing no code with the checker."""
    layout = RunLayout(run_dir)
    ledger = sqlite3.connect(layout.ledger)
    meta = {k: json.loads(v) for k, v in ledger.execute("SELECT key, value FROM meta")}
    first_connect = min(r[0] for r in ledger.execute("SELECT opened_at FROM connections"))
    stop = meta["stopped_at"] - grace
    in_window = set()
    for slot, _first, count in ledger.execute("SELECT slot, first, count FROM created"):
        created_at = meta["t0_wall"] + slot / 1000
        if first_connect <= created_at < stop:
            ms = meta["t0_ms"] + slot
            in_window.update(((ms - 1288834974657) << 22) | j for j in range(count))
    sink = sqlite3.connect(layout.sink)
    processed = Counter(row[0] for row in sink.execute("SELECT tweet_id FROM tweets"))
    in_window_processed = Counter({i: n for i, n in processed.items() if i in in_window})
    return {
        "created": len(in_window),
        "processed_unique": len(in_window_processed),
        "processed_total": sum(in_window_processed.values()),
        "lost": len(in_window - set(processed)),
        "duplicates": sum(n - 1 for n in in_window_processed.values()),
    }


def _check(run_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "check", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_checkpointing_consumer_killed_and_resumed_is_exactly_once(tmp_path):
    run_dir, killed_at = _run(tmp_path, "checkpoint")
    metrics = _check(run_dir)
    queue = metrics["queue"]
    own = _own_count(run_dir, metrics["window"]["grace_seconds"])
    assert {k: queue[k] for k in own} == own
    assert own["created"] > 4000  # ~3 s of the window at 2,000 tweets/s
    assert metrics["verdict"] == "exactly-once"
    assert metrics["silent_failure"] is False
    tries = metrics["timing"]["tries"]["list"]
    assert [(t["try"], t["outcome"]) for t in tries] == [(1, "info"), (2, "ok")]  # killed, returned
    (recovery,) = [r for r in metrics["timing"]["recovery"] if r["fault"] == "kill_consumer"]
    assert recovery["at"] == pytest.approx(killed_at)
    assert 0.5 <= recovery["recovery_seconds"] < 10  # restart waited 0.5 s, then start-up


@pytest.mark.slow
def test_forgetful_consumer_loses_what_was_created_while_it_was_down(tmp_path):
    run_dir, _ = _run(tmp_path, "none")
    metrics = _check(run_dir)
    queue = metrics["queue"]
    own = _own_count(run_dir, metrics["window"]["grace_seconds"])
    assert {k: queue[k] for k in own} == own
    # ~0.5 s down + restart at 2,000 tweets/s: roughly a thousand or more lost.
    assert own["lost"] > 500
    assert metrics["verdict"] == "at-most-once"
    # The second try returned only because the test stopped the server, and what was lost
    # was created while no try ran: no try succeeded on its own with tweets lost after it.
    assert metrics["silent_failure"] is False
    assert metrics["queue"]["silent_failure_tries"] == []
    causes = queue["lost_by_cause"]
    assert (
        causes["delivered_not_processed"] + causes["never_delivered"] + causes["in_flight_unknown"]
        == own["lost"]
    )
    assert causes["never_delivered_by_reason"].get("no_consumer", 0) > 0
    gaps = metrics["sequence"]["gaps"]
    assert gaps["tweets"] == own["lost"]
    assert gaps["count"] >= 1
