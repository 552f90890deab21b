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
400}]``; names get ``-cpu_us400``, and ``prefix`` before them) over a ``[base]`` scenario,
and/or lists scenario files.
Errors name the file, the field path and what is wrong, e.g. ``scenarios/x.toml:
airflow_faults[2].at: Input should be a valid number, ..., got 'soon'``; an Airflow fault
its mode lacks the capabilities for is refused the same way, as are numbers that are not
finite, nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_SCENARIOS` scenarios
and a matrix including itself (the rules: scenarios/README.md, "Validation").
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fake_stream.config import validate_server_options
from fake_stream.faults import FaultError, build
from fake_stream.rates import parse_profile
from harness.airflow.modes import MODES
from harness.check.hypothesis import Hypothesis
from harness.nemesis import registered
from harness.task.resume import RESUMES
from harness.task.variants import PARAMS, VARIANTS

__all__ = [
    "MAX_DEPTH",
    "MAX_SCENARIOS",
    "AirflowFaultSpec",
    "Scenario",
    "ScenarioError",
    "TaskSettings",
    "dag_scenarios",
    "load",
    "load_many",
    "quick_pattern",
]

#: The most scenarios one run may have. Each costs at least ~10 s of Airflow beside its
#: ``duration`` (the default matrix's 42 take 15 min), so 500 is a day's run on 2 cores:
#: beyond that an axis typed wrong (a 10,000-scenario cross product) is likelier than
#: intent, and ``summary.md``, rewritten after every scenario, grows quadratically.
MAX_SCENARIOS = 500
#: The deepest nesting of tables and arrays a scenario file may use (ours use 5): deeper
#: is a mistake, and parsers and validators recurse on it.
MAX_DEPTH = 16


class ScenarioError(Exception):
    """A scenario or matrix file that cannot be run; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: ``[server]`` options the harness sets itself: from the scenario's own fields (seed,
#: rate, stream faults) or per run (its ledger and token, a free loopback port).
_SERVER_OWN = frozenset(
    {"seed", "rate", "profile", "fault", "faults", "ledger", "token", "token_file", "host",
     "port", "allow_remote"}
)  # fmt: skip

_FAULTS = registered()
#: An Airflow fault of any registered type, chosen by its ``type`` (harness/nemesis/).
AirflowFaultSpec = Annotated[Union[tuple(_FAULTS.values())], Discriminator("type")]  # noqa: UP007


class SinkQuery(_Strict):
    """A DAG you cannot edit: a read-only query over its own SQLite sink, run before and
    after the run (harness/run/sink_query.py). ``{airflow_home}`` in ``database``: the
    harness's Airflow home."""

    database: str = Field(min_length=1)
    query: str = Field(pattern=r"(?is)^\s*(select|with)\b", max_length=10_000)


class TaskSettings(_Strict):
    """Airflow's parse-time task settings (seconds and counts); unset: the variant's."""

    model_config = ConfigDict(strict=True)

    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: float | None = Field(default=None, ge=0, le=3600)
    execution_timeout: float | None = Field(default=None, gt=0, le=86400)


#: Bounds of the DAG params that have them (every param is typed by its default).
_PARAM_BOUNDS: dict[str, dict[str, float]] = {
    "cpu_us": {"ge": 0, "le": 1e6},
    "batch": {"ge": 1, "le": 1_000_000},
    "workers": {"ge": 1, "le": 64},
    "try_seconds": {"gt": 0},
    "gil_interval": {"ge": 0},
    "run_seconds": {"gt": 0},
    "backfill_scale": {"gt": 0, "le": 1},
}
#: The DAG params that take one of a few words.
_PARAM_CHOICES: dict[str, tuple[str, ...]] = {"resume": RESUMES}


def _param_type(name: str, default: Any) -> Any:
    if name in _PARAM_CHOICES:
        return Literal[_PARAM_CHOICES[name]]
    if default is None:
        return float | None
    return type(default)  # str, int or float (strict: an int is not a str, a bool no int)


_Params = create_model(  # type: ignore[call-overload]
    "Params",
    __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
    **{
        name: (_param_type(name, default), Field(default=default, **_PARAM_BOUNDS.get(name, {})))
        for name, default in PARAMS.items()
    },
)


class Scenario(_Strict):
    """One run: a variant under a rate, stream faults and Airflow faults, for ``duration``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]+$", max_length=200)
    description: str = ""
    seed: int = Field(default=0, ge=0, lt=2**63)
    variant: str | None = None
    #: Or a DAG you bring (docs/your-own-dag.md): its file (relative to the scenario
    #: file), the DAG and task to run, and the connection id its task reads the stream from.
    dag_file: str | None = None
    dag_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)
    task_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)
    connection: str = Field(default="x_stream", pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)
    sink_query: SinkQuery | None = None
    mode: str = "dagtest"
    duration: float = Field(default=15.0, gt=0, le=3600)
    rate: Any = 1000
    params: dict[str, Any] = Field(default_factory=dict)
    task: TaskSettings = Field(default_factory=TaskSettings)
    server: dict[str, bool | float | int | str] = Field(default_factory=dict)
    stream_faults: list[dict[str, Any]] = Field(default_factory=list)
    airflow_faults: list[AirflowFaultSpec] = Field(default_factory=list)
    hypothesis: list[Hypothesis] = Field(default_factory=list)

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, variant: str | None) -> str | None:
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant; known: {', '.join(sorted(VARIANTS))}")
        return variant

    @model_validator(mode="after")
    def _variant_or_dag(self) -> Scenario:
        """A built-in variant, or a DAG file with its DAG and task ids (modes with a real
        scheduler only)."""
        if (self.variant is None) == (self.dag_file is None):
            raise PydanticCustomError(
                "variant_or_dag", "give either variant or dag_file (with dag_id and task_id)"
            )
        if self.dag_file is not None:
            missing = [f for f in ("dag_id", "task_id") if getattr(self, f) is None]
            if missing:
                raise PydanticCustomError("dag", f"dag_file needs {' and '.join(missing)}")
            if self.mode in MODES and not MODES[self.mode].runs_dag_files:
                able = sorted(n for n, m in MODES.items() if m.runs_dag_files)
                raise PydanticCustomError(
                    "dag",
                    f"dag_file runs in mode {' or '.join(repr(n) for n in able)} "
                    "(a real scheduler and API)",
                )
            if self.params:
                raise PydanticCustomError(
                    "dag", "params are the built-in variants'; a DAG you bring has its own"
                )
        elif self.sink_query is not None:
            raise PydanticCustomError("dag", "sink_query is for a DAG you bring (dag_file)")
        elif (
            self.variant in VARIANTS
            and VARIANTS[self.variant].scheduled
            and self.mode in MODES
            and not MODES[self.mode].schedules_runs
        ):
            able = sorted(n for n, m in MODES.items() if m.schedules_runs)
            raise PydanticCustomError(
                "variant",
                f"{self.variant}'s runs are started by Airflow's scheduler: mode "
                f"{' or '.join(repr(n) for n in able)}",
            )
        return self

    @property
    def subject(self) -> str:
        """What is under test: the variant, or the DAG you brought."""
        return self.variant or str(self.dag_id)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode; known: {', '.join(sorted(MODES))}")
        return mode

    @field_validator("rate")
    @classmethod
    def _profile(cls, rate: Any) -> Any:
        parse_profile(rate, allow_files=True)  # raises ValueError naming the field
        return rate

    @field_validator("server")
    @classmethod
    def _server(cls, server: dict[str, Any]) -> dict[str, Any]:
        own = sorted(set(server) & _SERVER_OWN)
        if own:
            raise ValueError(f"{own[0]}: set by the harness (a scenario field, or per run)")
        validate_server_options(server)  # fake_stream's own check: ValueError naming it
        return server

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(PARAMS)
        if unknown:
            raise ValueError(
                f"unknown param {sorted(unknown)[0]!r}; known: {', '.join(sorted(PARAMS))}"
            )
        try:
            _Params.model_validate(params)  # each param typed (and bounded) as its default
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}, got {first['input']!r}") from None
        return params

    @field_serializer("task")
    def _task_as_given(self, task: TaskSettings) -> dict[str, Any]:
        return task.model_dump(exclude_none=True)  # scenario.json: what the file set

    @field_validator("stream_faults")
    @classmethod
    def _stream_faults(cls, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, definition in enumerate(faults):
            try:
                build(definition)
            except FaultError as e:
                raise ValueError(f"[{i}].{e}") from None
        return faults

    @field_validator("task")
    @classmethod
    def _settings_reach_the_dag(cls, task: TaskSettings, info: ValidationInfo) -> TaskSettings:
        """``[task]`` settings are parsed with the DAG: only modes that write it take them."""
        mode = info.data.get("mode")
        if mode in MODES and not MODES[mode].parses_task_settings and task.model_fields_set:
            raise ValueError(
                f"mode {mode!r} runs the DAG as it is deployed: set "
                f"{', '.join(sorted(task.model_fields_set))} in the DAG there, not here"
            )
        return task

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
            why = type(fault).unavailable()
            if why:
                raise ValueError(f"[{i}]: {fault.type} cannot run on this machine: {why}")
        return faults

    @field_validator("hypothesis", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return (
            [{"text": v} if isinstance(v, str) else v for v in value]
            if isinstance(value, list)
            else value
        )


class MatrixTable(_Strict):
    """A matrix file's ``[matrix]`` table: the axes crossed over its ``[base]``."""

    variants: list[str] = Field(default_factory=list)
    fault_sets: list[str] | None = None  # default: every [fault_sets.*] table
    rates: list[Any] | None = Field(default=None, min_length=1)  # default: the base's
    params: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1)
    files: list[str] = Field(default_factory=list)
    quick: str | None = None  # the --quick subset, a regex over names
    #: Put before each name (``celery-`` + ``naive_loop-none``): matrices of other modes
    #: over the same variants and fault sets keep distinct names.
    prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", max_length=40)

    @field_validator("quick")
    @classmethod
    def _regex(cls, quick: str | None) -> str | None:
        if quick is not None:
            _compile(quick)
        return quick


class _MatrixFile(_Strict):
    matrix: MatrixTable
    base: dict[str, Any] = Field(default_factory=dict)
    fault_sets: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"none": {}})


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise ValueError(f"not a valid regular expression ({e})") from None


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
            f", got {_short(e['input'])}"
            if e["type"] not in ("missing", "union_tag_invalid", "union_tag_not_found")
            and not isinstance(e["input"], dict)
            else ""
        )
        lines.append(f"{path}: {where or '(file)'}: {message}{got}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(
            f"{path}: (file): not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ScenarioError(f"{path}: (file): nested deeper than {MAX_DEPTH} levels") from None
    _check_values(path, data)
    return data


def _check_values(path: Path, data: Any) -> None:
    """Refuse nan and inf (TOML has both; no field of ours means either: they wedged the
    server and killed nemesis threads) and nesting deeper than :data:`MAX_DEPTH`, naming
    the field. Iterative, so any depth is safe to walk."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ScenarioError(f"{path}: {where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise ScenarioError(f"{path}: {where}: {value} is not a finite number")
        if isinstance(value, dict):
            stack += [(v, f"{where}.{k}".lstrip("."), depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]


def _rate_file_here(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A piecewise rate's relative ``file``, or a replay's capture, is relative to the
    scenario file's folder (made absolute: the server runs elsewhere)."""
    rate = data.get("rate")
    if isinstance(rate, str) and rate.lstrip().startswith("{"):
        try:
            rate = json.loads(rate)
        except ValueError:
            return data  # refused by the rate's own validation, with its message
    if not isinstance(rate, dict):
        return data
    for key in ("file", "replay"):
        file = rate.get(key)
        if isinstance(file, str) and file and not Path(file).is_absolute():
            return {**data, "rate": {**rate, key: str((path.parent / file).resolve())}}
    return data


def _dag_file_here(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A relative ``dag_file`` is relative to the scenario file's folder (made absolute)."""
    file = data.get("dag_file")
    if not isinstance(file, str) or not file or Path(file).is_absolute():
        return data
    return {**data, "dag_file": str((path.parent / file).resolve())}


def _scenario(path: Path, data: dict[str, Any]) -> Scenario:
    if "faults" in data:
        raise ScenarioError(
            f"{path}: faults: now called airflow_faults (stream faults stay stream_faults)"
        )
    try:
        scenario = Scenario.model_validate(_dag_file_here(path, _rate_file_here(path, data)))
    except ValidationError as e:
        raise ScenarioError(_message(path, e)) from None
    # A number given as text ("inf") becomes one only here: check the result too.
    _check_values(path, scenario.model_dump(by_alias=True))
    return scenario


def load(path: Path, _including: tuple[Path, ...] = ()) -> list[Scenario]:
    """The scenarios of one file: a scenario, or a matrix expanded into scenarios."""
    data = _read(path)
    if "matrix" not in data:
        return [_scenario(path, data)]
    return _expand(path, data, (*_including, path.resolve()))


def load_many(paths: list[Path], only: str | None = None) -> list[Scenario]:
    """Every scenario of every file (all validated first), optionally filtered by a regex."""
    scenarios = [s for p in paths for s in load(p)]
    if len(scenarios) > MAX_SCENARIOS:
        raise ScenarioError(
            f"{', '.join(map(str, paths))}: {len(scenarios):,} scenarios, more than the "
            f"{MAX_SCENARIOS} one run may have (harness/scenario.py, MAX_SCENARIOS)"
        )
    names = [s.name for s in scenarios]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ScenarioError(f"scenario names must be unique; repeated: {', '.join(duplicated)}")
    if only:
        try:
            pattern = _compile(only)
        except ValueError as e:
            raise ScenarioError(f"--only: {e}") from None
        scenarios = [s for s in scenarios if pattern.search(s.name)]
    return scenarios


def quick_pattern(paths: list[Path]) -> str | None:
    """The ``matrix.quick`` regex of the first matrix file that has one (``--quick``)."""
    for path in paths:
        matrix = _read(path).get("matrix")
        if isinstance(matrix, dict) and isinstance(matrix.get("quick"), str):
            return str(matrix["quick"])
    return None


def _expand(path: Path, data: dict[str, Any], including: tuple[Path, ...]) -> list[Scenario]:
    try:
        spec = _MatrixFile.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(_message(path, e)) from None
    matrix, base, sets = spec.matrix, spec.base, spec.fault_sets
    out = []
    for i, name in enumerate(matrix.files):
        included = path.parent / name
        if included.resolve() in including:
            raise ScenarioError(f"{path}: matrix.files[{i}]: {name} includes this file: a cycle")
        out += load(included, including)
        if len(out) > MAX_SCENARIOS:
            break  # load_many says so
    set_names = list(sets) if matrix.fault_sets is None else matrix.fault_sets
    for i, set_name in enumerate(set_names):
        if set_name not in sets:
            raise ScenarioError(f"{path}: matrix.fault_sets[{i}]: no [fault_sets.{set_name}] table")
    rates = matrix.rates or [base.get("rate", 1000)]
    count = len(matrix.variants) * len(set_names) * len(rates) * len(matrix.params)
    if len(out) + count > MAX_SCENARIOS:
        raise ScenarioError(
            f"{path}: matrix: {len(out) + count:,} scenarios, more than the {MAX_SCENARIOS} "
            "one run may have (harness/scenario.py, MAX_SCENARIOS)"
        )
    for variant in matrix.variants:
        for set_name in set_names:
            for rate in rates:
                rate_tag = f"@{rate}" if len(rates) > 1 else ""
                for params in matrix.params:
                    scenario = {**base, **sets[set_name], "variant": variant, "rate": rate}
                    given = scenario.get("params", {})
                    scenario["params"] = {**given, **params} if isinstance(given, dict) else given
                    tag = "".join(f"-{k}{v}" for k, v in params.items())
                    scenario["name"] = f"{matrix.prefix}{variant}-{set_name}{rate_tag}{tag}"
                    out.append(_scenario(path, scenario))
    if not out:
        raise ScenarioError(f"{path}: matrix: expands to no scenario (no variants or files)")
    return out


def dag_scenarios(
    dag_file: Path,
    task_id: str,
    dag_id: str = "",
    faults: list[str] | None = None,
    *,
    duration: float = 15.0,
    rate: float = 200.0,
    connection: str = "x_stream",
) -> list[Scenario]:
    """``harness run --dag``: one standalone scenario per fault (``none``, an Airflow fault
    type at 5 s, or ``timeout``: an ``execution_timeout`` of half the duration) for a DAG
    you bring. ``dag_id`` ``""``: the file's only DAG (Airflow parses it to tell)."""
    from harness.airflow.user_dag import UserDagError, inspect

    try:
        dag_id = dag_id or inspect(dag_file, "", task_id).dag_id
    except UserDagError as e:
        raise ScenarioError(f"--dag: {e}") from None
    out = []
    for fault in faults or ["none", "kill_task"]:
        data: dict[str, Any] = {
            "name": f"{dag_id}-{fault}", "dag_file": str(dag_file.resolve()), "dag_id": dag_id,
            "task_id": task_id, "connection": connection, "mode": "standalone",
            "duration": duration, "rate": rate,
            "description": f"{dag_file.name}: {fault} (python -m harness run --dag)",
        }  # fmt: skip
        if fault == "timeout":
            data["task"] = {"execution_timeout": duration / 2}
        elif fault != "none":
            if fault not in _FAULTS:
                known = ", ".join(["none", "timeout", *sorted(_FAULTS)])
                raise ScenarioError(f"--faults: unknown fault {fault!r}; known: {known}")
            data["airflow_faults"] = [{"type": fault, "at": 5}]
        try:
            out.append(Scenario.model_validate(data))
        except ValidationError as e:
            raise ScenarioError(_message(Path("--dag"), e)) from None
    return out
