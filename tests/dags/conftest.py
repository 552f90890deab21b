"""Fixtures for running DAG variants on a real Airflow (``airflow dags test``, SQLite)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_stream import snowflake
from harness.airflow.base import StreamConnection
from harness.airflow.home import AirflowHome, migrated_template
from harness.check.metrics import check_run
from harness.layout import RunLayout
from harness.procs import OwnedProcess
from harness.run.services import StreamServerProcess
from harness.task.probe import create_sink


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated Airflow database, copied into each test's AIRFLOW_HOME."""
    return migrated_template(tmp_path_factory.mktemp("airflow-template"))


@dataclass
class VariantRun:
    """One run folder with its stream server and Airflow home."""

    layout: RunLayout
    server: StreamServerProcess
    home: AirflowHome

    def conf(self, **params: Any) -> dict[str, Any]:
        return {
            "stream_conn_id": "x_stream",  # the stream as an Airflow Connection, as in a run
            "run_dir": str(self.layout.root),
            "scratch_dir": str(self.layout.root / "scratch"),
            # This server has our extensions and X's windows unscaled: a backfill's minute
            # would replay the whole run (harness.run.runner.resume_conf decides the same).
            "resume": "since_id",
            **params,
        }

    def dags_test(
        self, variant: str, overrides: dict[str, Any] | None = None, **params: Any
    ) -> OwnedProcess:
        return self.home.dags_test(
            variant, self.conf(**params), overrides, log=self.layout.root / "airflow.log"
        )

    def finish(self, variant: str) -> dict[str, Any]:
        """Stop the stream (if the test has not), export Airflow's task instances, check
        the run (its window ends when the stream ended, minus the grace)."""
        assert self.server.stop() == 0
        tries = self.home.task_instances(variant)
        self.layout.task_instances.parent.mkdir(exist_ok=True)
        self.layout.task_instances.write_text(json.dumps(tries, default=str))
        return check_run(self.layout.root)

    def committed(self) -> int:
        db = sqlite3.connect(self.layout.sink)
        try:
            return db.execute("SELECT count(*) FROM tweets").fetchone()[0]
        finally:
            db.close()

    def wait_for_caught_up(self, within: float = 1.0, timeout: float = 60) -> None:
        """Until the newest committed tweet was created less than ``within`` s ago."""
        deadline = time.monotonic() + timeout
        while True:
            db = sqlite3.connect(self.layout.sink)
            try:
                newest = db.execute("SELECT max(tweet_id) FROM tweets").fetchone()[0]
            finally:
                db.close()
            if newest is not None and time.time() - snowflake.decode_ms(newest) / 1000 < within:
                return
            assert time.monotonic() < deadline, f"not caught up after {timeout} s"
            time.sleep(0.1)

    def wait_for_commits(self, at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.committed() < at_least:
            assert time.monotonic() < deadline, f"fewer than {at_least} commits after {timeout} s"
            time.sleep(0.1)


@pytest.fixture
def variant_run(tmp_path: Path, airflow_template: Path) -> Iterator[Callable[..., VariantRun]]:
    runs: list[VariantRun] = []

    def start(*server_args: str) -> VariantRun:
        layout = RunLayout(tmp_path / f"run-{len(runs)}")
        layout.root.mkdir()
        server = StreamServerProcess(layout.ledger, server_args)
        create_sink(layout.sink)
        home = AirflowHome(tmp_path / f"airflow-{len(runs)}", airflow_template)
        home.put_connection(StreamConnection("x_stream", server.url, server.token))
        run = VariantRun(layout, server, home)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.server.stop()
