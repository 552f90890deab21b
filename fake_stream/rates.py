"""Rate profiles: how many tweets the stream creates in each millisecond.

A profile is a step function of time (``segments``: from ``start`` seconds on, ``rate``
tweets per second), and each segment's arrivals are either *uniform* (the count in each
millisecond is the integer part of the exact running total, so a constant 1,000/s gives
exactly one tweet per millisecond) or *poisson* (each millisecond draws a Poisson count
with mean rate/1000).

Counts are a pure function of ``(profile, seed, millisecond)``: they do not depend on when
the server happens to ask for them, which is what makes a stream reproducible from its seed
even though it is generated live.

Spec forms accepted by :func:`parse_profile` (JSON objects, or these strings)::

    1000                                         constant 1,000 tweets/s
    {"kind": "constant", "rate": 1000}
    {"kind": "poisson", "rate": 1000}            constant mean, Poisson arrivals
    {"kind": "burst", "rate": 5700, "factor": 25, "at": 10, "duration": 1,
     "every": null, "arrivals": "uniform"}       a spike of factor x rate, repeated
                                                 every s until horizon (default 86,400 s;
                                                 at most MAX_SEGMENTS / 2 repeats)
    {"kind": "piecewise", "points": [[0, 100], [5, 2000]]}   steps (seconds, rate)
    {"kind": "piecewise", "file": "curve.csv"}   the same points from a CSV file
    "record-2013"                                5,700/s with a 1 s spike to 143,199/s at 10 s
    {"replay": "capture.ndjson", "speed": 1.0}   a capture's arrivals and tweets:
                                                 fake_stream.replay (loop, shift_ids, lenient)

Rates are finite, between 0 and :data:`MAX_RATE` tweets/s; a profile has at most
:data:`MAX_SEGMENTS` segments. Fields a kind does not know are rejected (a typo must not
silently change an experiment's profile). ``file`` is read only when the caller allows it
(``allow_files=True``: the command line at start-up); a spec that arrived over HTTP can
never name a server-side path, however it is nested.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_RATE", "MAX_SEGMENTS", "PRESETS", "RateProfile", "Segment", "parse_profile"]

_UNITS = 1_000_000  # rate_milli per millisecond is in millionths of a tweet
_BLOCK_MS = 1024  # Poisson counts are drawn per block of this many milliseconds
#: The fastest rate a profile may ask for, tweets/s: ~70x the 2013 record, far above what
#: one server can generate, and low enough that a millisecond's count stays well inside a
#: Snowflake id's 2**22 positions and the int64 running totals do not overflow for days.
MAX_RATE = 10_000_000
#: The most segments a profile may have, rate changes at run time included: building one
#: costs ~3 us per segment on the event loop (10,000: ~35 ms), and every answer about the
#: rate, and the ledger's ``rate_changed`` event, carries them all.
MAX_SEGMENTS = 10_000
_MAX_UNITS = 2**62  # running totals (millionths of a tweet) must stay below int64's limit
_MAX_BURSTS = MAX_SEGMENTS // 2 - 1  # repeats of a periodic burst within its horizon
_MAX_START_S = 10**9  # ~32 years: later segment starts would not fit the ids' time bits
_MAX_NUMBER = 1e15  # any number in a spec: x 1000 (to ms) and rate x factor stay finite
_MASK64 = 2**64 - 1  # negative seeds are taken modulo 2**64 (numpy seeds are unsigned)


@dataclass(frozen=True)
class Segment:
    """From ``start_s`` seconds after stream start on, ``rate`` tweets/s."""

    start_s: float
    rate: float
    poisson: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start_s, "rate": self.rate, "poisson": self.poisson}


@dataclass(frozen=True)
class RateProfile:
    """A step function of tweets per second over stream time. See the module docstring."""

    segments: tuple[Segment, ...]
    _start_ms: np.ndarray = field(init=False, repr=False, compare=False)
    _rate_milli: np.ndarray = field(init=False, repr=False, compare=False)
    _poisson: np.ndarray = field(init=False, repr=False, compare=False)
    _units_at_start: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.segments) > MAX_SEGMENTS:
            raise ValueError(
                f"rate profile: {len(self.segments)} segments, more than {MAX_SEGMENTS}"
            )
        if not self.segments or self.segments[0].start_s != 0:
            raise ValueError("a rate profile's first segment must start at 0 s")
        for s in self.segments:
            if not (math.isfinite(s.start_s) and s.start_s <= _MAX_START_S):
                raise ValueError(
                    f"rate profile: a segment starts at {s.start_s!r} s, beyond {_MAX_START_S} s"
                )
        starts = [round(s.start_s * 1000) for s in self.segments]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError("rate profile segments must start at increasing times")
        for s in self.segments:
            if not (math.isfinite(s.rate) and 0 <= s.rate <= MAX_RATE):
                raise ValueError(f"rate profile rate: {s.rate!r} tweets/s is outside 0..{MAX_RATE}")
        start_ms = np.array(starts, dtype=np.int64)
        rate_milli = np.array([round(s.rate * 1000) for s in self.segments], dtype=np.int64)
        # Running totals in Python ints first: numpy's int64 would wrap silently.
        totals = [0]
        for (a, b), r in zip(itertools.pairwise(starts), rate_milli.tolist(), strict=False):
            totals.append(totals[-1] + r * (b - a))
        if totals[-1] >= _MAX_UNITS:
            raise ValueError("rate profile: too many tweets before its last segment starts")
        units = np.array(totals, dtype=np.int64)
        object.__setattr__(self, "_start_ms", start_ms)
        object.__setattr__(self, "_rate_milli", rate_milli)
        object.__setattr__(self, "_poisson", np.array([s.poisson for s in self.segments]))
        object.__setattr__(self, "_units_at_start", units)

    def rate_at(self, t_s: float) -> float:
        """Tweets per second at ``t_s`` seconds after stream start."""
        i = int(np.searchsorted(self._start_ms, round(t_s * 1000), side="right")) - 1
        return self.segments[max(i, 0)].rate

    def counts(self, first_ms: int, stop_ms: int, seed: int) -> np.ndarray:
        """How many tweets each millisecond in ``[first_ms, stop_ms)`` creates."""
        ms = np.arange(first_ms, stop_ms, dtype=np.int64)
        seg = np.searchsorted(self._start_ms, ms, side="right") - 1
        uniform = self._uniform_units(np.append(ms, stop_ms), np.append(seg, seg[-1:]))
        counts = np.diff(uniform // _UNITS)
        poisson = self._poisson[seg]
        if poisson.any():
            counts[poisson] = self._poisson_counts(ms, seed)[poisson]
        return counts

    def _uniform_units(self, ms: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return self._units_at_start[seg] + self._rate_milli[seg] * (ms - self._start_ms[seg])

    def _poisson_counts(self, ms: np.ndarray, seed: int) -> np.ndarray:
        # One generator per block of milliseconds, seeded by (seed, block), drawing the
        # whole block from the profile's own rates. A generator's draws are sequential and
        # how many random numbers one draw consumes depends on its mean, so drawing only
        # the milliseconds asked for (zeros elsewhere) would make every count depend on
        # where the caller's ticks cut the block. Later rate changes (splices) leave the
        # draws before them untouched for the same reason.
        out = np.empty(len(ms), dtype=np.int64)
        blocks = ms // _BLOCK_MS
        for block in np.unique(blocks).tolist():
            block_ms = np.arange(block * _BLOCK_MS, (block + 1) * _BLOCK_MS, dtype=np.int64)
            seg = np.searchsorted(self._start_ms, block_ms, side="right") - 1
            lam = np.where(self._poisson[seg], self._rate_milli[seg] / _UNITS, 0.0)
            rng = np.random.Generator(np.random.PCG64([seed & _MASK64, block, 0x5EED]))
            here = blocks == block
            out[here] = rng.poisson(lam)[ms[here] - block * _BLOCK_MS]
        return out

    def spliced(self, at_s: float, other: RateProfile) -> RateProfile:
        """This profile until ``at_s``, then ``other`` (its time 0 moved to ``at_s``)."""
        at_ms = round(at_s * 1000)
        kept = [s for s in self.segments if round(s.start_s * 1000) < at_ms]
        moved = [Segment(s.start_s + at_ms / 1000, s.rate, s.poisson) for s in other.segments]
        return RateProfile(tuple(kept + moved))

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.segments]


def _constant(rate: float, poisson: bool = False) -> RateProfile:
    return RateProfile((Segment(0.0, float(rate), poisson),))


def _burst(
    rate: float,
    factor: float,
    at: float,
    duration: float,
    every: float | None = None,
    horizon: float = 86_400.0,
    poisson: bool = False,
) -> RateProfile:
    if at < 0:
        raise ValueError(f"rate profile at: expected >= 0 s, got {at!r}")
    if round(duration * 1000) < 1:
        raise ValueError(f"rate profile duration: expected >= 0.001 s, got {duration!r}")
    if factor < 0:
        raise ValueError(f"rate profile factor: expected >= 0, got {factor!r}")
    if every is not None:
        if round(every * 1000) <= round(duration * 1000):
            raise ValueError("rate profile every: must be longer than the burst's duration")
        if (horizon - at) / every > _MAX_BURSTS:
            raise ValueError(
                f"rate profile every: more than {_MAX_BURSTS} bursts before the horizon "
                f"({horizon} s); burst less often or set a shorter horizon"
            )
    segments = [Segment(0.0, rate, poisson)] if at > 0 else []
    start = at
    while True:  # the first burst always happens, even past the horizon
        segments += [
            Segment(start, rate * factor, poisson),
            Segment(start + duration, rate, poisson),
        ]
        start += every or math.inf
        if start >= horizon:
            break
    return RateProfile(tuple(segments))


def _piecewise(points: Any, poisson: bool = False) -> RateProfile:
    if not isinstance(points, list | tuple) or not points:
        raise ValueError(f"rate profile points: expected a list of [seconds, rate], got {points!r}")
    segments = []
    for i, point in enumerate(points):
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise ValueError(f"rate profile points[{i}]: expected [seconds, rate], got {point!r}")
        t, r = (_number(v, f"points[{i}]") for v in point)
        segments.append(Segment(t, r, poisson))
    return RateProfile(tuple(segments))


def _read_points(path: Path) -> list[list[float]]:
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"rate profile file: cannot read {str(path)!r}: {e}") from None
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # a header line
    points = []
    for row in rows:
        if len(row) < 2 or not (_is_number(row[0]) and _is_number(row[1])):
            raise ValueError(f"rate profile file {str(path)!r}: expected 'seconds,rate', got {row}")
        points.append([float(row[0]), float(row[1])])
    return points


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: Named profiles. ``record-2013`` replays the ~25x spike of 3 Aug 2013 (143,199 tweets/s
#: against a steady ~5,700/s) for one second, ten seconds in.
PRESETS: dict[str, dict[str, Any]] = {
    "record-2013": {
        "kind": "burst",
        "rate": 5700,
        "factor": 143199 / 5700,
        "at": 10,
        "duration": 1,
    },
}

#: The fields each kind takes besides ``kind`` and ``arrivals``.
_FIELDS: dict[str, frozenset[str]] = {
    "constant": frozenset({"rate"}),
    "poisson": frozenset({"rate"}),
    "burst": frozenset({"rate", "factor", "at", "duration", "every", "horizon"}),
    "piecewise": frozenset({"points", "file"}),
}
_KINDS = set(_FIELDS)
_REQUIRED = {
    "constant": ("rate",),
    "poisson": ("rate",),
    "burst": ("rate", "factor", "at", "duration"),
}


def parse_profile(
    spec: Any, base_dir: Path | None = None, *, allow_files: bool = False
) -> RateProfile:
    """Build a :class:`RateProfile` from a number, a preset name, JSON text or a dict.

    :param base_dir: where a relative ``file`` is found (default: the working directory).
    :param allow_files: whether a piecewise ``file`` may be read at all. Only a caller whose
        spec comes from the machine's own operator (the command line) sets it; without it a
        ``file`` field is refused before any path is looked at.

    Raises :class:`ValueError` naming the offending field.
    """
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return _constant(_number(spec, "rate"))
    if isinstance(spec, str):
        text = spec.strip()
        if text in PRESETS:
            return parse_profile(PRESETS[text])
        if _is_number(text):
            return _constant(_number(float(text), "rate"))
        try:
            spec = json.loads(text, parse_constant=_no_constant)
        except (json.JSONDecodeError, RecursionError) as e:
            why = f" ({e.msg})" if isinstance(e, json.JSONDecodeError) else ""
            raise ValueError(
                f"rate profile {text[:80]!r}: expected a number, a preset "
                f"({', '.join(PRESETS)}) or a JSON object{why}"
            ) from None
        return parse_profile(spec, base_dir, allow_files=allow_files)
    if not isinstance(spec, dict):
        raise ValueError(f"rate profile: expected an object, got {type(spec).__name__}")
    if "replay" in spec:  # a capture's arrivals (and tweets): fake_stream.replay
        from fake_stream.replay import replay_profile

        return replay_profile(dict(spec), base_dir, allow_files)
    return _from_dict(dict(spec), base_dir, allow_files)


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number JSON allows", name, 0)


def _from_dict(spec: dict[str, Any], base_dir: Path | None, allow_files: bool) -> RateProfile:
    kind = spec.pop("kind", None)
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"rate profile kind: expected one of {sorted(_KINDS)}, got {kind!r}")
    arrivals = spec.pop("arrivals", "poisson" if kind == "poisson" else "uniform")
    if arrivals not in ("uniform", "poisson"):
        raise ValueError(
            f"rate profile arrivals: expected 'uniform' or 'poisson', got {arrivals!r}"
        )
    poisson = arrivals == "poisson"
    unknown = sorted(map(str, set(spec) - _FIELDS[kind]))
    if unknown:
        raise ValueError(
            f"rate profile ({kind}) {unknown[0]}: unknown field; "
            f"expected {sorted(_FIELDS[kind] | {'kind', 'arrivals'})}"
        )
    missing = [name for name in _REQUIRED.get(kind, ()) if name not in spec]
    if kind == "piecewise" and len(set(spec) & {"points", "file"}) != 1:
        raise ValueError("rate profile (piecewise): give exactly one of 'points' or 'file'")
    if missing:
        raise ValueError(f"rate profile ({kind}) {missing[0]}: missing field")
    if kind in ("constant", "poisson"):
        return _constant(_number(spec["rate"], "rate"), poisson)
    if kind == "burst":
        numbers = {k: _number(v, k, optional=k == "every") for k, v in spec.items()}
        return _burst(poisson=poisson, **numbers)
    if "file" in spec:
        if not allow_files:  # before any look at the path: not even its existence leaks
            raise ValueError("rate profile file: not accepted here; send 'points' instead")
        if not isinstance(spec["file"], str) or not spec["file"]:
            raise ValueError(f"rate profile file: expected a path, got {spec['file']!r}")
        path = Path(spec["file"])
        return _piecewise(_read_points(path if base_dir is None else base_dir / path), poisson)
    return _piecewise(spec["points"], poisson)


def _number(value: Any, name: str, optional: bool = False) -> float:
    if value is None and optional:
        return value  # an optional field left empty
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"rate profile {name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not (math.isfinite(number) and abs(number) <= _MAX_NUMBER):
        raise ValueError(
            f"rate profile {name}: expected a finite number within {_MAX_NUMBER:g}, got {value!r}"
        )
    return number
