"""The nemesis's framework: what an Airflow fault is, its trigger, the registry, and the
threads that fire a scenario's faults.

An Airflow fault is a small pydantic model registered by its ``type``: its fields are the
scenario file's keys, its :meth:`AirflowFault.inject` acts through the
:class:`~harness.airflow.base.TaskHandle` and its ``needs`` are the
:class:`~harness.airflow.base.Capability` values a mode must have for it. Each fault waits
in its own thread for its trigger (``at`` seconds after the first commit or the stream
start, or ``after_commits`` tweets committed), then acts and records Jepsen-style
operations in ``airflow_faults.jsonl``: ``{"time", "f": "start"|"stop", "fault": <type>,
...}``. The checker shades and times recovery from these. The contract every fault keeps
is in docs/creating-faults.md.
"""

from __future__ import annotations

import json
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.airflow.base import Capability, TaskHandle

__all__ = [
    "AirflowFault",
    "FaultContext",
    "Nemesis",
    "Progress",
    "register",
    "registered",
]


class Progress(Protocol):
    """How far a run has got, as triggers read it (``harness.run.progress.SinkWatch``)."""

    #: UNIX time the task was started (the stream server was already up).
    started_at: float

    def committed(self) -> int:
        """Tweets committed so far (repeats included)."""

    def first_commit_at(self) -> float | None:
        """UNIX time of the first commit (None: none yet)."""


class FaultContext:
    """What a fault sees while it acts: the task, a clock that ends with the run, its log."""

    def __init__(
        self,
        fault: str,
        task: TaskHandle,
        over: threading.Event,
        log: Callable[[str], None],
        capabilities: frozenset[Capability] = frozenset(Capability),
    ) -> None:
        self.fault = fault
        self.task = task
        #: What the task's mode can do (a fault may act more closely with more).
        self.capabilities = capabilities
        self._over = over
        self._log = log

    @property
    def over(self) -> bool:
        """The run is ending: act no more."""
        return self._over.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the run ends first; True if it did."""
        return self._over.wait(seconds)

    def wait_for_try(self) -> int | None:
        """Block until a try runs; its pid (None: the run ended first)."""
        while not self.over:
            pid = self.task.task_pid()
            if pid is not None:
                return pid
            self.wait(0.05)
        return None

    def record(self, f: Literal["start", "stop"], at: float | None = None, **detail: Any) -> None:
        """Log an operation of this fault, at ``at`` (default: now)."""
        record = {"time": time.time() if at is None else at, "f": f, "fault": self.fault}
        self._log(json.dumps({**record, **detail}, default=str))


class AirflowFault(BaseModel):
    """One fault the nemesis injects into Airflow, once its trigger holds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: The capabilities a mode must have for this fault (checked when a scenario loads).
    needs: ClassVar[frozenset[Capability]] = frozenset({Capability.TASK_PROCESS})
    #: It acts on something every scenario running at the time would feel (the scheduler,
    #: the triggerer, a worker, a service, the machine's CPU or memory): its scenario runs
    #: with no other beside it (``--jobs``: harness/run/jobs.py).
    alone: ClassVar[bool] = False

    type: str
    at: float | None = Field(default=None, ge=0, description="seconds after `from`")
    from_: Literal["first_commit", "stream_start"] = Field(default="first_commit", alias="from")
    after_commits: int | None = Field(default=None, ge=1, description="or: tweets committed")

    @model_validator(mode="after")
    def _one_trigger(self) -> AirflowFault:
        if (self.at is None) == (self.after_commits is None):
            raise ValueError("give exactly one of 'at' (seconds) or 'after_commits'")
        return self

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this machine cannot deliver the fault (None: it can); checked when a
        scenario loads, beside ``needs``."""
        return None

    def due(self, progress: Progress) -> bool:
        """Whether the trigger holds now."""
        if self.after_commits is not None:
            return progress.committed() >= self.after_commits
        since = progress.started_at if self.from_ == "stream_start" else progress.first_commit_at()
        return since is not None and time.time() >= since + (self.at or 0.0)

    @abstractmethod
    def inject(self, ctx: FaultContext) -> None:
        """Act on ``ctx.task`` and record a ``start`` and a ``stop``; return when done or
        as soon as ``ctx.over`` (waits go through ``ctx.wait``)."""


_REGISTRY: dict[str, type[AirflowFault]] = {}

F = TypeVar("F", bound=type[AirflowFault])


def register(cls: F) -> F:
    """Class decorator: make an Airflow fault usable in scenarios by its ``type``."""
    name = cls.model_fields["type"].default
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__}: declare type: Literal['<name>'] = '<name>'")
    if name in _REGISTRY:
        raise ValueError(f"Airflow fault {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def registered() -> dict[str, type[AirflowFault]]:
    """Every registered Airflow fault by type (a copy)."""
    return dict(_REGISTRY)


class Nemesis:
    """Fires each of ``faults`` in its own thread against ``task`` (of a mode with
    ``capabilities``), logging to ``log``."""

    def __init__(
        self,
        faults: list[AirflowFault],
        task: TaskHandle,
        progress: Progress,
        log: Path,
        capabilities: frozenset[Capability] = frozenset(Capability),
    ) -> None:
        self.faults = faults
        self.task = task
        self.capabilities = capabilities
        self.progress = progress
        self.log = log
        self._over = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._one, args=(f,), name=f"nemesis-{f.type}", daemon=True)
            for f in faults
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """The run is ending: no fault starts now; wait for those acting to finish."""
        self._over.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def fired(self) -> int:
        """Operations logged so far."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def _write(self, line: str) -> None:
        with self._lock, self.log.open("a") as out:
            out.write(line + "\n")

    def _one(self, fault: AirflowFault) -> None:
        while not fault.due(self.progress):
            if self._over.wait(0.05):
                return
        context = FaultContext(fault.type, self.task, self._over, self._write, self.capabilities)
        fault.inject(context)
