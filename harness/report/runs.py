"""A results folder as the report reads it: one :class:`ScenarioRun` per scenario folder.

Only reads what the harness wrote (``summary.json``, and per scenario ``scenario.json``,
``run.json``, ``metrics.json``, ``error.json``, ``airflow_faults.jsonl``, ``launches.json``,
``airflow/task_instances.json``); the raw
ledger and sink are read only for the latency distribution, through the checker's own
loader, so the curve and ``metrics.json``'s percentiles agree by construction.

A file that is there but damaged or of the wrong shape is a :class:`ResultsError` naming
it (the report never guesses); a scenario with no ``metrics.json`` is shown with why (its
error, or that it did not finish). Only ``airflow_faults.jsonl`` is read leniently: its
last line may be cut by a kill, and the records before it still show.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.check.headline import fault_label, row, subject
from harness.check.records import (
    RunError,
    read_error,
    read_json,
    read_metrics,
    read_run,
    read_scenario,
    read_task_instances,
)
from harness.layout import RunLayout
from harness.report.palette import order_variants

__all__ = ["ENVIRONMENT_FILE", "Results", "ResultsError", "ScenarioRun", "load_results"]

#: Written next to summary.json the first time a report is made (at the end of the run, on
#: the machine that ran it); later rebuilds keep it.
ENVIRONMENT_FILE = "environment.json"


class ResultsError(Exception):
    """A results folder the report cannot read; the message names the file and the problem."""


@dataclass
class ScenarioRun:
    """One scenario folder: its definition, metrics and event records."""

    name: str
    root: Path
    scenario: dict[str, Any]
    metrics: dict[str, Any] | None
    run: dict[str, Any]
    airflow_faults: list[dict[str, Any]]
    task_instances: list[dict[str, Any]]
    launches: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def variant(self) -> str:
        return subject(self.scenario)

    @property
    def fault(self) -> str:
        """The fault set (:func:`harness.check.headline.fault_label`)."""
        return fault_label(self.name, self.scenario)

    @cached_property
    def headline(self) -> dict[str, Any]:
        """Its row of every summary table (:func:`harness.check.headline.row`)."""
        return row(self.name, self.scenario, self.metrics, self.error)

    @property
    def timing(self) -> dict[str, Any]:
        return (self.metrics or {}).get("timing", {})

    @property
    def queue(self) -> dict[str, Any]:
        return (self.metrics or {}).get("queue", {})

    @property
    def window_start(self) -> float:
        """UNIX time of the window's start: every chart's time zero for this scenario."""
        window = (self.metrics or {}).get("window", {})
        return float(window.get("start") or self.run.get("first_commit_at") or 0.0)

    @property
    def rate(self) -> float | None:
        """The target rate, if the scenario has a constant one."""
        rate = self.scenario.get("rate")
        return float(rate) if isinstance(rate, int | float) else None

    def fault_windows(self) -> list[tuple[str, float, float | None]]:
        """Airflow faults as ``(name, start, stop)`` in UNIX s; ``stop`` None: no stop
        recorded. A stop closes the earliest open start of the same fault."""
        windows: list[list[Any]] = []
        for record in sorted(self.airflow_faults, key=lambda r: r.get("time", 0.0)):
            name = str(record.get("fault", "?"))
            if record.get("f") == "stop":
                open_ = [w for w in windows if w[0] == name and w[2] is None]
                if open_:
                    open_[0][2] = float(record["time"])
            else:
                windows.append([name, float(record["time"]), None])
        return [(n, a, b) for n, a, b in windows]

    @cached_property
    def connections(self) -> list[dict[str, Any]]:
        """The stream connections the ledger recorded ([] if it cannot be read)."""
        from harness.check.history import RunError, load_history

        try:
            return list(load_history(self.root).connections)
        except (RunError, OSError, KeyError, ValueError):
            return []

    @cached_property
    def latencies(self) -> np.ndarray | None:
        """Creation -> first commit (s) of every committed tweet of the window, sorted; None
        if the raw files cannot be read."""
        from harness.check.checker._tweets import window_tweets
        from harness.check.history import RunError, load_history

        try:
            history = load_history(self.root)
        except (RunError, OSError, KeyError, ValueError):
            return None
        tweets = window_tweets(history)
        window = history.window
        committed = ~np.isnan(tweets.first_commit_at)
        created = history.created_at[window.first_index : window.stop_index]
        return np.sort(tweets.first_commit_at[committed] - created[committed])

    def airflow_time(self, text: str | None) -> float | None:
        """An Airflow date string (UTC, as task_instances.json holds it) as UNIX s."""
        if not text:
            return None
        try:
            parsed = dt.datetime.fromisoformat(str(text))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()


@dataclass
class Results:
    """A results folder: its scenarios in run order, the incomplete ones, the environment."""

    root: Path
    scenarios: list[ScenarioRun]
    incomplete: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return order_variants({s.variant for s in self.scenarios})

    @property
    def fault_sets(self) -> list[str]:
        """Fault sets in run order, ``none`` first."""
        seen = list(dict.fromkeys(s.fault for s in self.scenarios))
        return sorted(seen, key=lambda f: f != "none")

    def cell(self, variant: str, fault: str) -> list[ScenarioRun]:
        """The scenarios of one variant under one fault set (more than one with rates)."""
        return [s for s in self.scenarios if s.variant == variant and s.fault == fault]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _Row(_Shape):
    scenario: str
    error: str | None = None


class _Summary(_Shape):
    scenarios: list[_Row] = Field(default_factory=list)
    incomplete: list[str] = Field(default_factory=list)


class _Environment(_Shape):
    airflow: str | None = None
    cpu_count: int | None = None
    recorded_at: float | None = Field(default=None, ge=0, le=1e11)  # a date localtime takes


def _read(path: Path, reader: Any) -> Any:
    """``reader(path)``, its :class:`RunError` as a :class:`ResultsError`."""
    try:
        return reader(path)
    except RunError as e:
        raise ResultsError(str(e)) from None


def _object(path: Path, shape: type[_Shape]) -> dict[str, Any]:
    value = _read(path, read_json)
    try:
        shape.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise ResultsError(f"{path}: {where.lstrip('.') or '(file)'}: {first['msg']}") from None
    return value


def _list(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects (``launches.json``); empty if the file is not there."""
    if not path.exists():
        return []
    value = _read(path, read_json)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ResultsError(f"{path}: expected a JSON list of objects")
    return value


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut by a kill: the rest still shows
        time_ = record.get("time") if isinstance(record, dict) else None
        if isinstance(time_, int | float) and not isinstance(time_, bool) and abs(time_) < 1e11:
            records.append(record)
    return records


def _scenario(root: Path, summary_error: str | None) -> ScenarioRun:
    layout = RunLayout(root)
    run = _read(layout.run, read_run) if layout.run.exists() else {}
    metrics = _read(layout.metrics, read_metrics) if layout.metrics.exists() else None
    error = _read(layout.error, read_error) if layout.error.exists() else summary_error
    if metrics is None and error is None:
        error = (
            f"not checked (no {layout.metrics.name})"
            if run.get("ending") is not None
            else f"did not finish (no {layout.run.name} with its ending): interrupted"
        )
    tries = layout.task_instances
    return ScenarioRun(
        name=root.name,
        root=root,
        scenario=_read(layout.scenario, read_scenario),
        metrics=metrics,
        run=run,
        airflow_faults=_jsonl(layout.airflow_faults),
        task_instances=_read(tries, read_task_instances) if tries.exists() else [],
        launches=_list(layout.launches),
        error=error,
    )


def environment_now() -> dict[str, Any]:
    """This machine and its installs, for a report made where the run ran."""
    try:
        airflow = metadata.version("apache-airflow")
    except metadata.PackageNotFoundError:
        airflow = None
    return {
        "airflow": airflow,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "recorded_at": time.time(),
    }


def load_results(root: Path, record_environment: bool = True) -> Results:
    """Read a results folder; scenario folders are those holding ``scenario.json``, in
    ``summary.json``'s order. With ``record_environment``, a missing ``environment.json``
    is written from this machine."""
    summary_path = root / "summary.json"
    summary = _object(summary_path, _Summary) if summary_path.exists() else {}
    rows = {r["scenario"]: r for r in summary.get("scenarios", [])}
    folders = {p.parent.name: p.parent for p in root.glob("*/scenario.json")}
    names = [n for n in rows if n in folders] + sorted(set(folders) - set(rows))
    scenarios = [_scenario(folders[n], (rows.get(n) or {}).get("error")) for n in names]
    env_path = root / ENVIRONMENT_FILE
    if env_path.exists():
        environment = _object(env_path, _Environment)
    else:
        environment = environment_now()
        if record_environment:
            env_path.write_text(json.dumps(environment, indent=2) + "\n")
    return Results(root, scenarios, list(summary.get("incomplete", [])), environment)
