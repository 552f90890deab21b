"""Run scenarios through ``python -m harness run`` and read what each left, for tests that
assert on real runs (Airflow's task-instance records, the probe, the sink, metrics)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fake_stream.ledger import LedgerReader
from harness.procs import OwnedProcess
from harness.run.progress import committed_count

__all__ = ["ScenarioRun", "airflow_time", "has_commits", "run_scenarios", "selected_scenarios"]


def run_scenarios(
    folder: Path,
    scenarios: dict[str, str],
    timeout: float = 1200,
    env: dict[str, str] | None = None,
    jobs: int = 1,
) -> Path:
    """Write each ``{name: toml body}`` as a scenario file, run them all in one harness
    run (one Airflow per mode, ``jobs`` scenarios at once; ``env`` added to its
    environment), assert it succeeded; the results folder."""
    files = []
    for name, body in scenarios.items():
        path = folder / f"{name}.toml"
        path.write_text(f"name = {name!r}\n{body}\n")
        files.append(str(path))
    log = folder / "harness.log"
    with log.open("wb") as out:
        harness = OwnedProcess(
            [
                sys.executable, "-m", "harness", "run", *files,
                "--out", str(folder / "out"), "--jobs", str(jobs),
            ],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        code = harness.popen.wait(timeout=timeout)
    finally:
        harness.stop()  # on a timeout: SIGTERM, and the harness stops all it started
    assert code == 0, log.read_text()[-3000:]
    return folder / "out"


def selected_scenarios(request: pytest.FixtureRequest, scenarios: dict[str, str]) -> dict[str, str]:
    """The ``scenarios`` the selected tests of the requesting module read (their ``uses``
    marker), so a run narrowed by ``-m`` or ``-k`` runs only what it checks; all of them
    if a selected test names none."""
    wanted: set[str] = set()
    for item in request.session.items:
        if item.module is not request.module:
            continue
        uses = item.get_closest_marker("uses")
        if uses is None:
            return scenarios
        wanted.update(uses.args)
    return {name: body for name, body in scenarios.items() if name in wanted}


def has_commits(sink: Path) -> bool:
    """Whether a run's sink has a commit yet (False while it is not made)."""
    try:
        return committed_count(sink) > 0
    except sqlite3.Error:  # not there yet, or its tables not yet made
        return False


def airflow_time(text: str) -> float:
    """A timestamp as Airflow's SQLite database stores it (UTC, no zone), in UNIX s."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass
class ScenarioRun:
    """What one scenario left in its run folder."""

    root: Path

    def json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    @property
    def metrics(self) -> dict[str, Any]:
        return self.json("metrics.json")

    @property
    def airflow_faults(self) -> list[dict[str, Any]]:
        """What the nemesis recorded, in order."""
        path = self.root / "airflow_faults.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def tries(self) -> list[dict[str, Any]]:
        """Airflow's task-instance records, in the order they started (by try number where
        Airflow recorded no start date, as 2.11's ``dags test`` does)."""
        return sorted(
            self.json("airflow/task_instances.json"),
            key=lambda t: (t["start_date"] or "", t["try_number"]),
        )

    def probe(self, pid: int) -> list[dict[str, Any]]:
        path = next(self.root.glob(f"probe/*-{pid}.jsonl"))
        return [json.loads(line) for line in path.read_text().splitlines()]

    def task_starts(self) -> list[dict[str, Any]]:
        """The probe's task start records, oldest first."""
        starts = [
            json.loads(line)
            for path in self.root.glob("probe/*.jsonl")
            for line in path.read_text().splitlines()
            if '"invoke"' in line
        ]
        return sorted((s for s in starts if s["f"] == "task"), key=lambda s: s["time"])

    def commit_times(self, pid: int | None = None) -> list[float]:
        """When each batch was committed (by ``pid``, or by anyone), in order."""
        db = sqlite3.connect(self.root / "sink.sqlite")
        try:
            if pid is None:
                rows = db.execute("SELECT committed_at FROM commits ORDER BY committed_at")
            else:
                rows = db.execute(
                    "SELECT committed_at FROM commits WHERE pid = ? ORDER BY committed_at", (pid,)
                )
            return [r[0] for r in rows]
        finally:
            db.close()

    def commit_tries(self) -> list[tuple[float, int]]:
        """Each batch's commit time and the try number that committed it, in order."""
        db = sqlite3.connect(self.root / "sink.sqlite")
        try:
            query = "SELECT committed_at, try_number FROM commits ORDER BY committed_at"
            return [(r[0], r[1]) for r in db.execute(query)]
        finally:
            db.close()

    def committed_tweets(self, pid: int) -> int:
        """How many tweets process ``pid`` committed (repeats included)."""
        db = sqlite3.connect(self.root / "sink.sqlite")
        try:
            query = "SELECT coalesce(sum(count), 0) FROM commits WHERE pid = ?"
            return db.execute(query, (pid,)).fetchone()[0]
        finally:
            db.close()

    def committed_ids(self, try_number: int | None = None) -> set[int]:
        """The tweet ids try ``try_number`` (or any try) committed, whatever the window."""
        db = sqlite3.connect(self.root / "sink.sqlite")
        try:
            if try_number is None:
                rows = db.execute("SELECT DISTINCT tweet_id FROM tweets")
            else:
                query = "SELECT DISTINCT tweet_id FROM tweets WHERE try_number = ?"
                rows = db.execute(query, (try_number,))
            return {r[0] for r in rows}
        finally:
            db.close()

    def created_between(self, start: float, stop: float = float("inf")) -> list[int]:
        """Ids of the tweets the server created in [start, stop), within the checker's
        window."""
        from harness.check.history import load_history

        history = load_history(self.root)
        window = slice(history.window.first_index, history.window.stop_index)
        created_at = history.created_at[window]
        return history.created_ids[window][(created_at >= start) & (created_at < stop)].tolist()

    def published(self) -> list[dict[str, Any]]:
        """The ingester's record of each pub/sub message (``event_driven``): its tweets'
        first and last ids, how many, and how many subscribers received it."""
        lines = (self.root / "published.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def server_events(self, kind: str) -> list[dict[str, Any]]:
        """The fake stream's ledger events of ``kind`` (e.g. ``refused``), oldest first."""
        return LedgerReader(self.root / "ledger.sqlite").events(kind)

    def task_log(self, try_number: int) -> str:
        """Airflow's log of try ``try_number`` (every run of the scenario's DAG), as copied
        into the run folder (``localtask``: in its Airflow home there)."""
        logs = sorted(
            path
            for folder in ("airflow/logs", "airflow-home/logs")
            for path in (self.root / folder).rglob(f"attempt={try_number}.log")
        )
        return "\n".join(path.read_text(errors="replace") for path in logs)
