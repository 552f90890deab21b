"""The fault framework: schedules, the four places a fault can act, and the registry.

A fault is a small frozen dataclass whose fields are its JSON ``attributes``; a
:class:`FaultSpec` wraps it with a ``name``, a ``probability`` (Toxiproxy's *toxicity*) and a
:class:`Schedule`. Each fault class subclasses the hook base for where it acts:

- :class:`ConnectFault`: answers a stream connect instead of the server (HTTP 429/5xx);
- :class:`MessageFault`: rewrites the messages of one write (duplicate, reorder, malformed,
  operational disconnect);
- :class:`ByteFault`: sits in the byte pipe between messages and the socket (latency,
  bandwidth, slicer, limit_data, timeout, reset_peer) or delays the close (slow_close);
- :class:`ListenerFault`: acts on the listening socket (down).

The contract every fault keeps (docs/creating-faults.md): it never loses or repeats a tweet
silently. Whatever it does to a tweet is either visible in the wire accounting (bytes that
were not acknowledged) or recorded in the ledger through :meth:`FaultContext.record`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from aiohttp import web

__all__ = [
    "MAX_COUNT",
    "MAX_REAL",
    "Batch",
    "ByteFault",
    "ConnectFault",
    "EndConnection",
    "EndHow",
    "Fault",
    "FaultContext",
    "FaultError",
    "FaultSpec",
    "ListenerFault",
    "MessageFault",
    "Schedule",
    "Send",
    "build",
    "get",
    "register",
    "registered",
]


class FaultError(ValueError):
    """A fault definition that cannot be used; the message names the field."""


#: Largest magnitude of a real number in a fault definition (seconds, KB/s, ...): ~32
#: years of seconds. Beyond it arithmetic overflows to infinity (a ``bandwidth`` of 1e308
#: KB/s did, and raised out of a stream's writer).
MAX_REAL = 1e9
#: Largest integer in a fault definition (bytes, message counts): exact in a double.
MAX_COUNT = 2**53


@dataclass(frozen=True)
class Schedule:
    """When a fault is active, in seconds of stream time (since the server started).

    Active from ``at`` for ``duration`` seconds (``None``: until removed), again every
    ``every`` seconds if set. One-shot faults (:class:`MessageFault`) fire once per
    activation on each connection, or every ``every_messages`` tweets while active.
    """

    at: float = 0.0
    duration: float | None = None
    every: float | None = None
    every_messages: int | None = None

    def __post_init__(self) -> None:
        if not self.at >= 0:  # NaN fails every comparison: test for what is wanted
            raise FaultError(f"at: expected seconds >= 0, got {self.at!r}")
        if self.duration is not None and not self.duration > 0:
            raise FaultError(f"duration: expected seconds > 0, got {self.duration!r}")
        if self.every is not None and (self.duration is None or not self.every > self.duration):
            raise FaultError("every: needs a duration shorter than the period")
        if self.every_messages is not None and not self.every_messages >= 1:
            raise FaultError(f"every_messages: expected >= 1, got {self.every_messages!r}")

    def activation(self, t: float) -> int | None:
        """The number of the activation window ``t`` falls in, or ``None`` if inactive."""
        if t < self.at:
            return None
        since = t - self.at
        window = int(since // self.every) if self.every else 0
        into = since - window * self.every if self.every else since
        if self.duration is not None and into >= self.duration:
            return None
        return window

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: How a connection ends: ``clean`` (final HTTP chunk, then FIN), ``fin`` (FIN in the
#: middle of the body: the client sees a truncated response), ``reset`` (TCP RST), ``gone``
#: (the client already closed it; nothing is sent).
EndHow = Literal["clean", "fin", "reset", "gone"]


class EndConnection(Exception):
    """Raised (or passed to ``StreamSession.end``) to end a stream connection.

    :param reason: recorded as the connection's end reason and as the drop reason of
        tweets it had not delivered.
    :param how: see :data:`EndHow`.
    :param message: a last line to send first (an operational-disconnect error).
    """

    def __init__(self, reason: str, how: EndHow = "clean", message: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.how: EndHow = how
        self.message = message


class Connection(Protocol):
    """What a fault may see of the connection it acts on."""

    conn_id: int

    def stream_time(self) -> float: ...
    def record(self, kind: str, name: str, **detail: Any) -> None: ...
    def in_force(self, spec: FaultSpec) -> bool:
        """Whether ``spec`` is still registered (not removed or replaced)."""
        ...


#: The next stage of the byte pipe.
Send = Callable[[bytes], Awaitable[None]]


class Fault:
    """Base of every fault type. Subclasses are frozen dataclasses registered by name."""

    type: ClassVar[str]


class ConnectFault(Fault):
    def on_connect(self, ctx: FaultContext) -> web.StreamResponse | None:
        raise NotImplementedError


@dataclass
class Batch:
    """The messages of one write, as message faults see and rewrite them.

    ``indexes[i]`` is the tweet index of ``lines[i]``, or -1 for a line that is not a tweet.
    A fault that destroys or withholds a tweet lists it in ``withheld`` as
    ``(index, reason, ledger stage)`` (stage ``fault``: destroyed on the wire; ``queued``:
    never sent); one that delays lines to the next write uses :meth:`hold`; one that ends
    the connection sets ``end``.
    """

    lines: list[bytes]
    indexes: list[int]
    withheld: list[tuple[int, str, str]] = field(default_factory=list)
    end: EndConnection | None = None
    #: Lines held back to go out with the next write, after its first line.
    held: list[tuple[bytes, int]] = field(default_factory=list)

    def hold(self, position: int) -> list[int]:
        """Take the lines from ``position`` on out of this write, to go out later."""
        self.held += zip(self.lines[position:], self.indexes[position:], strict=True)
        taken = self.indexes[position:]
        del self.lines[position:], self.indexes[position:]
        return taken


class MessageFault(Fault):
    """A one-shot fault on the messages of a write, at a position chosen by the schedule."""

    def apply(self, ctx: FaultContext, batch: Batch, position: int) -> None:
        raise NotImplementedError


class ByteFault(Fault):
    async def write(self, ctx: FaultContext, data: bytes, send: Send) -> None:
        await send(data)

    def on_tick(self, ctx: FaultContext, now: float) -> None:
        """Called about every 50 ms while active (also when no data flows)."""
        return None

    async def before_close(self, ctx: FaultContext) -> None:
        return None


class ListenerFault(Fault):
    """Acts on the listening socket while active (the server polls it)."""


@dataclass(frozen=True)
class FaultSpec:
    """A named, scheduled, probabilistic instance of a fault type."""

    name: str
    type: str
    fault: Fault
    probability: float = 1.0
    schedule: Schedule = field(default_factory=Schedule)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "probability": self.probability,
            "schedule": self.schedule.to_json(),
            "attributes": dataclasses.asdict(self.fault),  # type: ignore[call-overload]
        }


class FaultContext:
    """One fault's state on one connection: its seeded coin, counters, and what fired.

    The coin is seeded by ``(seed, fault name, connection id)``, so with the same seed and
    the same order of connections the same faults fire at the same messages.
    """

    def __init__(self, spec: FaultSpec, conn: Connection, seed: int) -> None:
        self.spec = spec
        self.conn = conn
        self.rng = random.Random(f"{seed}:{spec.name}:{conn.conn_id}")
        self.applies = self.rng.random() < spec.probability  # for continuous faults
        self.fired_windows: set[int] = set()
        self.next_message_mark: int | None = None
        self.state: dict[str, Any] = {}  # scratch space for the fault

    @property
    def active(self) -> bool:
        """In force and inside its schedule now (a removed fault is never active)."""
        return (
            self.conn.in_force(self.spec)
            and self.spec.schedule.activation(self.conn.stream_time()) is not None
        )

    def record(self, effect: str, **detail: Any) -> None:
        """Log what the fault did to the connection in the ledger."""
        self.conn.record("fault", self.spec.name, type=self.spec.type, effect=effect, **detail)

    def firings(self, first: int, count: int) -> Iterator[int]:
        """Where a one-shot fault fires among a write's fresh tweets.

        The write carries the connection's tweets number ``first`` to ``first + count - 1``
        (counted as taken off its queue, so the count never depends on how tweets were
        batched or what other faults did to them). Yields offsets ``0..count-1``.
        """
        window = self.spec.schedule.activation(self.conn.stream_time())
        if window is None or count == 0 or not self.conn.in_force(self.spec):
            return
        every = self.spec.schedule.every_messages
        if every is None:
            if window not in self.fired_windows:
                self.fired_windows.add(window)
                if self.rng.random() < self.spec.probability:
                    yield 0
            return
        if self.next_message_mark is None:  # the first mark after the fault took effect
            self.next_message_mark = (first // every + 1) * every
        while self.next_message_mark < first + count:
            offset = self.next_message_mark - first
            self.next_message_mark += every
            if self.rng.random() < self.spec.probability:
                yield offset


# Registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Fault]] = {}


def register(name: str) -> Callable[[type[Fault]], type[Fault]]:
    """Class decorator: make a fault type available under ``name`` (unique)."""

    def add(cls: type[Fault]) -> type[Fault]:
        if name in _REGISTRY:
            raise RuntimeError(f"fault type {name!r} is registered twice")
        cls.type = name
        _REGISTRY[name] = cls
        return cls

    return add


def get(name: str) -> type[Fault]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FaultError(f"type: unknown fault type {name!r}; known: {sorted(_REGISTRY)}") from None


def registered() -> dict[str, type[Fault]]:
    """A copy of the registry: fault type name -> class."""
    return dict(_REGISTRY)


_SPEC_KEYS = {"name", "type", "probability", "schedule", "attributes"}


def build(definition: Any) -> FaultSpec:
    """Validate a JSON fault definition and build its :class:`FaultSpec`.

    ``{"type": "latency", "name": "lag", "probability": 1.0,
       "schedule": {"at": 5, "duration": 10}, "attributes": {"latency": 0.2}}``;
    only ``type`` is required (``name`` defaults to the type).
    """
    if not isinstance(definition, dict):
        raise FaultError(f"fault: expected an object, got {type(definition).__name__}")
    unknown = set(definition) - _SPEC_KEYS
    if unknown:
        raise FaultError(f"{sorted(unknown)[0]}: unknown field; expected {sorted(_SPEC_KEYS)}")
    if "type" not in definition:
        raise FaultError("type: missing")
    cls = get(definition["type"])
    name = definition.get("name", cls.type)
    if not isinstance(name, str) or not name or len(name) > 100:
        raise FaultError(f"name: expected a non-empty string, got {name!r}")
    probability = definition.get("probability", 1.0)
    if not _is_number(probability) or not 0 <= probability <= 1:
        raise FaultError(f"probability: expected a number in 0..1, got {probability!r}")
    schedule = _typed(Schedule, definition.get("schedule", {}), "schedule")
    fault = _typed(cls, definition.get("attributes", {}), "attributes")
    return FaultSpec(name, cls.type, fault, float(probability), schedule)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _typed(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from JSON ``values``, checking names and types."""
    if not isinstance(values, dict):
        raise FaultError(f"{where}: expected an object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise FaultError(f"{where}.{key}: unknown attribute; expected one of {sorted(fields)}")
        if not _matches(value, hints[key]):
            raise FaultError(f"{where}.{key}: expected {_describe(hints[key])}, got {value!r}")
        _check_magnitude(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values)
    except FaultError as e:  # raised by the dataclass's own checks, naming the field
        raise FaultError(f"{where}.{e}") from None
    except (TypeError, ValueError) as e:
        raise FaultError(f"{where}: {e}") from None


def _check_magnitude(value: Any, hint: Any, where: str) -> None:
    """Numbers must be finite and of a sane size, so a fault's arithmetic never overflows:
    :data:`MAX_COUNT` for an integer field, :data:`MAX_REAL` for a real one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, int) and _matches(value, hint) and int in _options(hint):
        if abs(value) > MAX_COUNT:
            raise FaultError(f"{where}: expected at most {MAX_COUNT} in size, got {value!r}")
        return
    try:
        real = float(value)
    except OverflowError:  # an int beyond any float
        real = math.inf
    if not (math.isfinite(real) and abs(real) <= MAX_REAL):
        raise FaultError(f"{where}: expected a finite number within {MAX_REAL:g}, got {value!r}")


def _options(hint: Any) -> tuple[Any, ...]:
    union = typing.get_origin(hint) in (typing.Union, _UnionType)
    return typing.get_args(hint) if union else (hint,)


def _matches(value: Any, hint: Any) -> bool:
    for option in _options(hint):
        if option is type(None) and value is None:
            return True
        if option is float and _is_number(value):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
        if option is bool and isinstance(value, bool):
            return True
        if typing.get_origin(option) is typing.Literal and value in typing.get_args(option):
            return True
    return False


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


_UnionType = type(int | None)
