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
     "every": null, "arrivals": "uniform"}       a spike of factor x rate
    {"kind": "piecewise", "points": [[0, 100], [5, 2000]]}   steps (seconds, rate)
    {"kind": "piecewise", "file": "curve.csv"}   the same points from a CSV file
    "record-2013"                                5,700/s with a 1 s spike to 143,199/s at 10 s
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRESETS", "RateProfile", "Segment", "parse_profile"]

_UNITS = 1_000_000  # rate_milli per millisecond is in millionths of a tweet
_BLOCK_MS = 1024  # Poisson counts are drawn per block of this many milliseconds


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
        if not self.segments or self.segments[0].start_s != 0:
            raise ValueError("a rate profile's first segment must start at 0 s")
        starts = [round(s.start_s * 1000) for s in self.segments]
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError("rate profile segments must start at increasing times")
        if any(s.rate < 0 for s in self.segments):
            raise ValueError("rates must be >= 0 tweets/s")
        start_ms = np.array(starts, dtype=np.int64)
        rate_milli = np.array([round(s.rate * 1000) for s in self.segments], dtype=np.int64)
        lengths = np.diff(start_ms)
        units = np.zeros(len(starts), dtype=np.int64)
        units[1:] = np.cumsum(rate_milli[:-1] * lengths)
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
            counts[poisson] = self._poisson_counts(ms, seg, seed)[poisson]
        return counts

    def _uniform_units(self, ms: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return self._units_at_start[seg] + self._rate_milli[seg] * (ms - self._start_ms[seg])

    def _poisson_counts(self, ms: np.ndarray, seg: np.ndarray, seed: int) -> np.ndarray:
        # One generator per block of milliseconds, seeded by (seed, block): the draws for a
        # millisecond never depend on which other milliseconds were asked for with it.
        out = np.empty(len(ms), dtype=np.int64)
        lam = self._rate_milli[seg] / _UNITS
        blocks = ms // _BLOCK_MS
        for block in np.unique(blocks):
            rng = np.random.Generator(np.random.PCG64([seed, int(block), 0x5EED]))
            block_lam = np.zeros(_BLOCK_MS)
            here = blocks == block
            block_lam[ms[here] - block * _BLOCK_MS] = lam[here]
            out[here] = rng.poisson(block_lam)[ms[here] - block * _BLOCK_MS]
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
    if duration <= 0 or at < 0 or factor < 0:
        raise ValueError("burst needs at >= 0, duration > 0 and factor >= 0")
    if every is not None and every <= duration:
        raise ValueError("burst 'every' must be longer than its 'duration'")
    segments = [Segment(0.0, rate, poisson)] if at > 0 else []
    start = at
    while start < horizon:
        segments += [
            Segment(start, rate * factor, poisson),
            Segment(start + duration, rate, poisson),
        ]
        if every is None:
            break
        start += every
    return RateProfile(tuple(segments))


def _piecewise(points: list[list[float]], poisson: bool = False) -> RateProfile:
    segments = tuple(Segment(float(t), float(r), poisson) for t, r in points)
    return RateProfile(segments)


def _read_points(path: Path) -> list[list[float]]:
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # a header line
    return [[float(r[0]), float(r[1])] for r in rows]


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

_KINDS = {"constant", "poisson", "burst", "piecewise"}


def parse_profile(spec: Any, base_dir: Path | None = None) -> RateProfile:
    """Build a :class:`RateProfile` from a number, a preset name, JSON text or a dict.

    Raises :class:`ValueError` naming the offending field.
    """
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return _constant(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text in PRESETS:
            return parse_profile(PRESETS[text])
        if _is_number(text):
            return _constant(float(text))
        try:
            spec = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                f"rate profile {text!r}: expected a number, a preset ({', '.join(PRESETS)}) "
                "or a JSON object"
            ) from None
        return parse_profile(spec, base_dir)
    if not isinstance(spec, dict):
        raise ValueError(f"rate profile: expected an object, got {type(spec).__name__}")
    return _from_dict(dict(spec), base_dir)


def _from_dict(spec: dict[str, Any], base_dir: Path | None) -> RateProfile:
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"rate profile kind: expected one of {sorted(_KINDS)}, got {kind!r}")
    arrivals = spec.pop("arrivals", "poisson" if kind == "poisson" else "uniform")
    if arrivals not in ("uniform", "poisson"):
        raise ValueError(
            f"rate profile arrivals: expected 'uniform' or 'poisson', got {arrivals!r}"
        )
    poisson = arrivals == "poisson"
    try:
        if kind in ("constant", "poisson"):
            return _constant(_number(spec.pop("rate"), "rate"), poisson)
        if kind == "burst":
            return _burst(poisson=poisson, **{k: _number(v, k) for k, v in spec.items()})
        if "file" in spec:
            path = Path(spec.pop("file"))
            return _piecewise(_read_points(path if base_dir is None else base_dir / path), poisson)
        return _piecewise(spec.pop("points"), poisson)
    except KeyError as missing:
        raise ValueError(f"rate profile ({kind}): missing field {missing}") from None
    except TypeError as wrong:
        raise ValueError(f"rate profile ({kind}): {wrong}") from None


def _number(value: Any, name: str) -> float:
    if value is None:
        return value  # an optional field left empty
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"rate profile {name}: expected a number, got {value!r}")
    return float(value)
