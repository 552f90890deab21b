"""Where a run's files live. Writers (the server, the probe, the harness) and readers (the
history loader, the checker) agree on these names and on nothing else.

::

    <run dir>/
      scenario.json       the scenario as run (its hypothesis is judged from here)
      run.json            when the run started and stopped (the checker's window)
      ledger.sqlite       the fake stream's ground truth (fake_stream/ledger.py)
      sink.sqlite         the pipeline's output: tweets, commits, checkpoints (task/probe.py)
      probe/*.jsonl       lifecycle events, one file per task process (task/probe.py)
      airflow_faults.jsonl  the Airflow faults the nemesis injected (optional)
      airflow/task_instances.json   Airflow's record of every try (optional)
      launches.json       what the harness triggered or launched on Airflow (optional)
      stop-requested      the operator's stop: written when the run ends, read by the task
      history.jsonl       the merged history, written by the checker
      metrics.json        the checker's results
      error.json          why the scenario could not run or be checked (only then)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout"]


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder."""

    root: Path

    @property
    def scenario(self) -> Path:
        return self.root / "scenario.json"

    @property
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def sink(self) -> Path:
        return self.root / "sink.sqlite"

    @property
    def probe_dir(self) -> Path:
        return self.root / "probe"

    @property
    def airflow_faults(self) -> Path:
        return self.root / "airflow_faults.jsonl"

    @property
    def launches(self) -> Path:
        return self.root / "launches.json"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop-requested"

    @property
    def task_instances(self) -> Path:
        return self.root / "airflow" / "task_instances.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def error(self) -> Path:
        return self.root / "error.json"
