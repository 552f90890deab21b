"""Scenario and matrix files: load, validate, expand. Nothing starts before this passes.

A scenario (``scenarios/<family>-<case>.toml``) says what to run and what to expect::

    name = "naive_loop-kill_task"
    description = "SIGKILL the task 5 s into the stream"
    seed = 7
    variant = "naive_loop"            # a DAG in dags/
    mode = "dagtest"                  # dagtest | standalone | localtask (harness/airflow/)
    duration = 20                     # seconds of stream after the first commit
    rate = 1000                       # or a table: any fake_stream rate profile
    hypothesis = ["lost == 0", "p99_latency_s < 2"]   # steady state (harness/check/)
    [params]                          # the DAG's params (dag_run.conf)
    cpu_us = 50
    [task]                            # parse-time task settings
    retries = 2
    [server]                          # more fake_stream serve options
    queue_size = 100000
    [[stream_faults]]                 # fake_stream faults, as its control API takes them
    type = "reset_peer"
    schedule = { at = 5, duration = 0.2 }
    [[airflow_faults]]                # what the nemesis injects (harness/nemesis/)
    type = "kill_task"
    at = 5                            # seconds after `from`...
    from = "first_commit"             # ...or "stream_start"
    # after_commits = 500             # ...or when this many tweets are committed

A matrix (``[matrix]`` table) crosses ``variants`` x ``fault_sets`` x ``rates`` x
``params`` (a list of param tables merged over the base's, e.g. ``[{cpu_us = 0}, {cpu_us =
400}]``; names get ``-cpu_us400``) over a ``[base]`` scenario, and/or lists scenario files.
Errors name the file, the field path and what is wrong, e.g. ``scenarios/x.toml:
airflow_faults[2].at: Input should be a valid number, ..., got 'soon'``; an Airflow fault
its mode lacks the capabilities for is refused the same way.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from fake_stream.faults import FaultError, build
from fake_stream.rates import parse_profile
from harness.airflow.modes import MODES
from harness.check.hypothesis import Hypothesis
from harness.nemesis import registered
from harness.task.variants import PARAMS, VARIANTS

__all__ = ["AirflowFaultSpec", "Scenario", "ScenarioError", "load", "load_many", "quick_pattern"]


class ScenarioError(Exception):
    """A scenario or matrix file that cannot be run; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_FAULTS = registered()
#: An Airflow fault of any registered type, chosen by its ``type`` (harness/nemesis/).
AirflowFaultSpec = Annotated[Union[tuple(_FAULTS.values())], Discriminator("type")]  # noqa: UP007


class Scenario(_Strict):
    """One run: a variant under a rate, stream faults and Airflow faults, for ``duration``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]+$")
    description: str = ""
    seed: int = 0
    variant: str
    mode: str = "dagtest"
    duration: float = Field(default=15.0, gt=0, le=3600)
    rate: Any = 1000
    params: dict[str, Any] = Field(default_factory=dict)
    task: dict[str, float | int | None] = Field(default_factory=dict)
    server: dict[str, float | int | str] = Field(default_factory=dict)
    stream_faults: list[dict[str, Any]] = Field(default_factory=list)
    airflow_faults: list[AirflowFaultSpec] = Field(default_factory=list)
    hypothesis: list[Hypothesis] = Field(default_factory=list)

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, variant: str) -> str:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant; known: {', '.join(sorted(VARIANTS))}")
        return variant

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode; known: {', '.join(sorted(MODES))}")
        return mode

    @field_validator("rate")
    @classmethod
    def _profile(cls, rate: Any) -> Any:
        parse_profile(rate)  # raises ValueError naming the field
        return rate

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(PARAMS) - {"run_seconds"}
        if unknown:
            raise ValueError(
                f"unknown param {sorted(unknown)[0]!r}; known: {', '.join(sorted(PARAMS))}"
            )
        return params

    @field_validator("task")
    @classmethod
    def _task(cls, task: dict[str, Any]) -> dict[str, Any]:
        unknown = set(task) - {"execution_timeout", "retries", "retry_delay"}
        if unknown:
            raise ValueError(f"unknown task setting {sorted(unknown)[0]!r}")
        return task

    @field_validator("stream_faults")
    @classmethod
    def _stream_faults(cls, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, definition in enumerate(faults):
            try:
                build(definition)
            except FaultError as e:
                raise ValueError(f"[{i}].{e}") from None
        return faults

    @field_validator("airflow_faults")
    @classmethod
    def _faults_fit_the_mode(
        cls, faults: list[AirflowFaultSpec], info: ValidationInfo
    ) -> list[AirflowFaultSpec]:
        """Each Airflow fault needs capabilities its mode declares (harness/airflow/)."""
        mode = info.data.get("mode")
        if mode not in MODES:
            return faults  # refused already, under `mode`
        for i, fault in enumerate(faults):
            missing = sorted(fault.needs - MODES[mode].capabilities)
            if missing:
                able = sorted(n for n, m in MODES.items() if fault.needs <= m.capabilities)
                raise ValueError(
                    f"[{i}]: {fault.type} needs {', '.join(missing)}, which mode {mode!r} does "
                    f"not have (modes that do: {', '.join(able) or 'none'})"
                )
        return faults

    @field_validator("hypothesis", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return (
            [{"text": v} if isinstance(v, str) else v for v in value]
            if isinstance(value, list)
            else value
        )


def _message(path: Path, error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = list(e["loc"])
        if loc[:1] == ["airflow_faults"] and len(loc) > 2:
            del loc[2]  # the fault type pydantic chose by; the message names fields only
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        where = where.replace("from_", "from")
        message = e["msg"]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            where += ".type"
            given = e["input"].get("type") if isinstance(e["input"], dict) else None
            message = f"{'unknown' if given else 'missing'} Airflow fault type" + (
                f" {given!r}" if given else ""
            )
            message += f"; known: {', '.join(sorted(_FAULTS))}"
        got = (
            f", got {e['input']!r}"
            if e["type"] not in ("missing", "union_tag_invalid", "union_tag_not_found")
            and not isinstance(e["input"], dict)
            else ""
        )
        lines.append(f"{path}: {where or '(file)'}: {message}{got}")
    return "\n".join(lines)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML ({e})") from None


def _scenario(path: Path, data: dict[str, Any]) -> Scenario:
    if "faults" in data:
        raise ScenarioError(
            f"{path}: faults: now called airflow_faults (stream faults stay stream_faults)"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(_message(path, e)) from None


def load(path: Path) -> list[Scenario]:
    """The scenarios of one file: a scenario, or a matrix expanded into scenarios."""
    data = _read(path)
    if "matrix" not in data:
        return [_scenario(path, data)]
    return _expand(path, data)


def load_many(paths: list[Path], only: str | None = None) -> list[Scenario]:
    """Every scenario of every file (all validated first), optionally filtered by a regex."""
    scenarios = [s for p in paths for s in load(p)]
    names = [s.name for s in scenarios]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ScenarioError(f"scenario names must be unique; repeated: {', '.join(duplicated)}")
    if only:
        pattern = re.compile(only)
        scenarios = [s for s in scenarios if pattern.search(s.name)]
    return scenarios


def quick_pattern(paths: list[Path]) -> str | None:
    """The ``matrix.quick`` regex of the first matrix file that has one (``--quick``)."""
    for path in paths:
        quick = _read(path).get("matrix", {}).get("quick")
        if quick:
            return str(quick)
    return None


def _expand(path: Path, data: dict[str, Any]) -> list[Scenario]:
    allowed = {"matrix", "base", "fault_sets"}
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"{path}: {sorted(unknown)[0]}: unknown table in a matrix file")
    matrix, base, sets = data["matrix"], data.get("base", {}), data.get("fault_sets", {"none": {}})
    extra = set(matrix) - {"variants", "fault_sets", "rates", "params", "files", "quick"}
    if extra:
        raise ScenarioError(f"{path}: matrix.{sorted(extra)[0]}: unknown field")
    axis = matrix.get("params", [{}])
    if not isinstance(axis, list) or not all(isinstance(p, dict) for p in axis):
        raise ScenarioError(f"{path}: matrix.params: a list of param tables, e.g. [{{cpu_us = 0}}]")
    out = [s for f in matrix.get("files", []) for s in load(path.parent / f)]
    for variant in matrix.get("variants", []):
        for set_name in matrix.get("fault_sets", list(sets)):
            if set_name not in sets:
                raise ScenarioError(f"{path}: matrix.fault_sets: no [fault_sets.{set_name}] table")
            for rate in matrix.get("rates", [base.get("rate", 1000)]):
                rate_tag = f"@{rate}" if len(matrix.get("rates", [])) > 1 else ""
                for params in axis:
                    scenario = {**base, **sets[set_name], "variant": variant, "rate": rate}
                    scenario["params"] = {**scenario.get("params", {}), **params}
                    tag = "".join(f"-{k}{v}" for k, v in params.items())
                    scenario["name"] = f"{variant}-{set_name}{rate_tag}{tag}"
                    out.append(_scenario(path, scenario))
    return out
