"""The JSON records of a run folder, read and type-checked: ``scenario.json``, ``run.json``,
``airflow/task_instances.json``, ``metrics.json``, ``error.json`` (:mod:`harness.layout`).

Everything downstream reads them through here, so a damaged or foreign file is one
:class:`RunError` naming the file and the field, never a crash
further on or a number guessed from it. Each shape names only the fields the readers use,
with their types; other fields pass. A run folder is *finished* when its ``run.json`` has
the runner's ``ending`` (written last, after the run ended on the ledger): a folder
without it was interrupted, and is never judged as if it had finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.check.headline import METRICS
from harness.layout import RunLayout

__all__ = [
    "REQUIRED",
    "RunError",
    "read_error",
    "read_json",
    "read_metrics",
    "read_run",
    "read_scenario",
    "read_task_instances",
    "require_finished",
]

#: The fields every metrics.json of the current schema has (harness/README.md).
REQUIRED = (
    "schema_version",
    "verdict",
    "valid",
    "silent_failure",
    "ending",
    "window",
    "queue",
    "sequence",
    "timing",
)


class RunError(Exception):
    """A run folder that cannot be checked; the message names the file and the problem."""


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


Seconds = Annotated[float, Field(ge=0)]


class _Ending(_Shape):
    how: str
    task_ended_by: str | None = None
    created_until: float | None = None
    stop_requested_at: float | None = None
    ended_at: float | None = None


class _Run(_Shape):
    started_at: float | None = None
    first_commit_at: float | None = None
    created_until: float | None = None
    stopped_at: float | None = None
    window_start: float | None = None
    grace: Seconds = 0.0
    ending: _Ending | None = None
    mode: str | None = None


class _Typed(_Shape):
    type: str


class _TaskSettings(_Shape):
    execution_timeout: float | None = None


class _Scenario(_Shape):
    variant: str | None = None
    dag_id: str | None = None  # a DAG the user brought, instead of a variant
    mode: str | None = None
    seed: int | None = None
    duration: float | None = None
    airflow_faults: list[_Typed] = Field(default_factory=list)
    stream_faults: list[_Typed] = Field(default_factory=list)
    task: _TaskSettings | None = None
    hypothesis: list[Any] = Field(default_factory=list)


class _Error(_Shape):
    error: str


class _TaskInstance(_Shape):
    run_id: str | None = None
    try_number: int | None = None
    state: str | None = None
    pid: int | None = None


class _Recovery(_Shape):
    recovery_seconds: float | None = None


class _Result(_Shape):
    hypothesis: str
    held: bool
    measured: str


class _Hypothesis(_Shape):
    held: bool
    results: list[_Result]


class _Metrics(_Shape):
    schema_version: int
    ending: _Ending | None
    window: dict[str, Any]
    queue: dict[str, Any]
    sequence: dict[str, Any]
    timing: dict[str, Any]
    hypothesis: _Hypothesis | None = None


def read_json(path: Path) -> Any:
    """A JSON file's value; :class:`RunError` if it is missing, not UTF-8 or not JSON."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise RunError(f"{path}: not UTF-8 text (byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not readable JSON ({e})") from None
    except RecursionError:
        raise RunError(f"{path}: JSON nested too deeply to read") from None


def _checked(path: Path, shape: type[_Shape], value: Any, at: str = "") -> None:
    try:
        shape.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = at + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise RunError(f"{path}: {where.lstrip('.') or '(file)'}: {first['msg']}") from None


def _object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_run(path: Path) -> dict[str, Any]:
    """``run.json``: when the run started, stopped creating and stopped, how it ended."""
    run = _object(path)
    _checked(path, _Run, run)
    return run


def read_scenario(path: Path) -> dict[str, Any]:
    """``scenario.json``: the scenario as run (the fields readers use, typed)."""
    scenario = _object(path)
    _checked(path, _Scenario, scenario)
    return scenario


def read_error(path: Path) -> str:
    """``error.json``'s message: why the scenario could not run or be checked."""
    record = _object(path)
    _checked(path, _Error, record)
    return str(record["error"])


def require_finished(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run that finished; :class:`RunError` saying it did not (no
    ``run.json``, or none with the runner's ``ending``: the run was interrupted)."""
    layout = RunLayout(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder")
    if not layout.run.exists():
        raise RunError(
            f"{layout.run}: missing: the run did not finish (interrupted before its end-of-run "
            "record), so it is not judged"
        )
    run = read_run(layout.run)
    if run.get("ending") is None:
        raise RunError(
            f"{layout.run}: ending: missing: the run did not finish on the ledger (or is "
            "from before runs recorded how they ended), so it is not judged"
        )
    return run


def read_task_instances(path: Path) -> list[dict[str, Any]]:
    """``airflow/task_instances.json``: Airflow's record of every try, a list of objects."""
    records = read_json(path)
    if not isinstance(records, list):
        raise RunError(f"{path}: expected a JSON list, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RunError(f"{path}: [{i}]: expected an object, got {type(record).__name__}")
        _checked(path, _TaskInstance, record, f"[{i}]")
    return records


_KINDS: dict[str, tuple[type, ...]] = {
    "count": (int,),
    "rate": (int, float),
    "seconds": (int, float),
    "flag": (bool, str),
    "text": (str,),
}


def read_metrics(path: Path) -> dict[str, Any]:
    """``metrics.json`` with the current schema's fields, each headline value of its
    kind (what every table writes): :class:`RunError` naming the first that is not."""
    metrics = _object(path)
    missing = [key for key in REQUIRED if key not in metrics]
    if missing:
        raise RunError(f"{path}: {missing[0]}: missing (not a complete metrics.json)")
    _checked(path, _Metrics, metrics)
    for metric in METRICS:
        if metric.read is not None:
            continue  # derived: its parts are checked below
        value = metric.value(metrics)
        kinds = _KINDS[metric.kind]
        wrong = isinstance(value, bool) and bool not in kinds
        if value is not None and (wrong or not isinstance(value, kinds)):
            raise RunError(
                f"{path}: {metric.path}: expected a {metric.kind} value, got {value!r:.60}"
            )
    recovery = metrics["timing"].get("recovery", [])
    if not isinstance(recovery, list):
        raise RunError(f"{path}: timing.recovery: expected a list")
    for i, entry in enumerate(recovery):
        if not isinstance(entry, dict):
            raise RunError(f"{path}: timing.recovery[{i}]: expected an object")
        _checked(path, _Recovery, entry, f"timing.recovery[{i}]")
    return metrics
