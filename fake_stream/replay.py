"""Replaying a capture: its tweets at their recorded times, in place of generated ones.

A replay is a rate profile (``{"replay": "capture.ndjson", "speed": 1.0, "loop": false,
"shift_ids": false, "lenient": false}``), so it goes everywhere a profile goes: the
server's ``--replay`` or ``--profile``, a scenario's ``rate``. The tweet a replay creates at
index ``i`` is the capture's tweet ``i mod n`` (``n`` tweets; past the end only with
``loop``), created in the millisecond of its recorded arrival divided by ``speed``. From
there it goes through the same sessions, queues, faults, rules and ledger as a generated
tweet: the server adds its own ``matching_rules`` and keep-alives; the capture's own rules,
keep-alives and error lines are not replayed.

Ids: by default each tweet keeps its recorded id (and ``created_at``, ``edit_history``);
the ledger stores them, and its ``created`` slots say when the replay created each one.
The ids' times are then the recording's, so ``since_id`` resumes after a recorded id, but
recovery's ``start_time``/``end_time`` and recent search's times are read on the replay's
clock. ``shift_ids`` mints ids of the replay's clock instead, as for generated tweets
(``created_at`` and ``edit_history_tweet_ids`` follow): every time semantics stays true.
``loop`` needs it (a second pass would repeat the recorded ids).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fake_stream.capture import Capture, CaptureError, read_capture
from fake_stream.rates import MAX_RATE, RateProfile, Segment
from fake_stream.tweets import (
    CREATED_AT,
    EDIT_HISTORY,
    PREFIX,
    SAMPLE_END,
    created_at,
    rule_choice,
)

__all__ = ["MIN_PASS_US", "REPLAY_FIELDS", "ReplayProfile", "ReplayTweets", "replay_profile"]

#: The fields of a replay spec, and their defaults.
REPLAY_FIELDS: dict[str, Any] = {
    "replay": None,
    "speed": 1.0,
    "loop": False,
    "shift_ids": False,
    "lenient": False,
    "start": "connect",
}
_STARTS = ("connect", "server")
_SPEEDS = (0.001, 1000.0)
#: The shortest looped pass, in microseconds of replay: a tick (5 ms) then sees at most two.
MIN_PASS_US = 10_000
_DATA_OWN = ("id", "edit_history_tweet_ids", "created_at")  # re-minted with shift_ids


class ReplayProfile(RateProfile):
    """A profile whose arrivals are a capture's (see the module docstring)."""

    capture: Capture
    speed: float
    loop: bool
    shift_ids: bool
    lenient: bool
    start: str

    def __init__(
        self,
        capture: Capture,
        speed: float = 1.0,
        loop: bool = False,
        shift_ids: bool = False,
        lenient: bool = False,
        start: str = "connect",
    ) -> None:
        peak = _peak_rate(capture.offsets_us, speed)
        super().__init__((Segment(0.0, peak),))  # its peak: what a reader of segments sees
        for name, value in (
            ("capture", capture),
            ("speed", speed),
            ("loop", loop),
            ("shift_ids", shift_ids),
            ("lenient", lenient),
            ("start", start),
        ):
            object.__setattr__(self, name, value)
        # A loop's length: the recording's, at least the last tweet's arrival + 1 ms.
        period = max(capture.duration_us, int(capture.offsets_us[-1]) + 1000)
        if loop and period / speed < MIN_PASS_US:
            raise ValueError(
                f"rate profile loop: a pass of {period / speed / 1000:g} ms at speed {speed:g} "
                f"is shorter than {MIN_PASS_US // 1000} ms (each tick would count many passes)"
            )
        object.__setattr__(self, "_period_us", period)
        # The stream millisecond the capture's time 0 plays at: unknown (None) until the
        # first live connection when start is "connect"; nothing is created before it.
        object.__setattr__(self, "_start_ms", 0 if start == "server" else None)
        object.__setattr__(self, "_stop_ms", None)  # the stream ms it was stopped at

    def begin(self, slot: int) -> None:
        """Play the capture's time 0 at stream millisecond ``slot`` (the first not yet
        created: counts before it stay 0, as they were). Once; later calls do nothing."""
        if self._start_ms is None:
            object.__setattr__(self, "_start_ms", slot)

    @property
    def kept_ids(self) -> np.ndarray | None:
        """The recorded ids, served as they are (None: ids are minted, ``shift_ids``)."""
        return None if self.shift_ids else self.capture.ids

    def _slots(self, loop: int, first_ms: int, stop_ms: int) -> np.ndarray:
        """The replay milliseconds in ``[first_ms, stop_ms)`` of capture tweets in pass
        ``loop`` (0-based). A pure function of its arguments: the timeline rebuilds old
        slots from it. Only the tweets near the range are looked at (a search, then one
        millisecond of margin each side), so a tick costs the same for any capture size."""
        us_per_ms, shift = 1000.0 * self.speed, loop * self._period_us
        offsets = self.capture.offsets_us
        lo, hi = np.searchsorted(
            offsets, [(first_ms - 1) * us_per_ms - shift, (stop_ms + 1) * us_per_ms - shift]
        )
        slots = np.floor((offsets[lo:hi] + shift) / us_per_ms).astype(np.int64)
        return slots[(slots >= first_ms) & (slots < stop_ms)]

    def counts(self, first_ms: int, stop_ms: int, seed: int) -> np.ndarray:
        out = np.zeros(stop_ms - first_ms, dtype=np.int64)
        if self._start_ms is None:
            return out
        if self._stop_ms is not None:
            stop_ms = max(first_ms, min(stop_ms, self._stop_ms))
        first_ms, stop_ms = first_ms - self._start_ms, stop_ms - self._start_ms
        # Pass j's tweets fall in [j * period, (j + 1) * period] (offsets < period): only
        # the passes that reach the range are looked at (a hair of margin for rounding).
        period_ms = self._period_us / (1000.0 * self.speed)
        passes = range(
            max(0, math.ceil(first_ms / period_ms - 1 - 1e-9)),
            math.ceil(stop_ms / period_ms + 1e-9) if self.loop else 1,
        )
        for loop in passes:
            slots = self._slots(loop, first_ms, stop_ms)
            if len(slots):
                out[: stop_ms - first_ms] += np.bincount(
                    slots - first_ms, minlength=stop_ms - first_ms
                )
        return out

    def next_due(self, slot: int) -> int | None:
        """The first stream millisecond from ``slot`` on that creates a tweet (None: not
        begun, or nothing more to come): what :meth:`counts` would find first, with one
        search per pass instead of a count of every millisecond."""
        if self._start_ms is None:
            return None
        rel = max(0, slot - self._start_ms)
        us_per_ms = 1000.0 * self.speed
        offsets = self.capture.offsets_us
        first = max(0, math.floor(rel * us_per_ms / self._period_us) - 1) if self.loop else 0
        for loop in range(first, first + 3 if self.loop else 1):
            shift = loop * self._period_us
            # the first tweet at or after `rel` is at most one past the margin's end
            lo, hi = np.searchsorted(
                offsets, [(rel - 1) * us_per_ms - shift, (rel + 1) * us_per_ms - shift]
            )
            slots = np.floor((offsets[lo : hi + 1] + shift) / us_per_ms).astype(np.int64)
            later = slots[slots >= rel]
            if len(later):
                due = int(later[0]) + self._start_ms
                return None if self._stop_ms is not None and due >= self._stop_ms else due
        return None

    def rate_at(self, t_s: float) -> float:
        """Tweets the replay creates in the second around ``t_s``."""
        second = math.floor(t_s) * 1000
        return float(self.counts(second, second + 1000, 0).sum())

    def spliced(self, at_s: float, other: RateProfile) -> RateProfile:
        """This replay until ``at_s``, then nothing: a replay's rate is the capture's, so
        the only change it takes is rate 0 (how a run stops creating tweets)."""
        if any(segment.rate for segment in other.segments):
            raise ValueError(
                "the stream replays a capture: its rate is the capture's (only rate 0, "
                "which ends the replay, is taken)"
            )
        stopped = copy.copy(self)
        object.__setattr__(stopped, "_stop_ms", round(at_s * 1000))
        return stopped

    def to_json(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "replay": self.capture.describe(),
            "speed": self.speed,
            "loop": self.loop,
            "shift_ids": self.shift_ids,
            "lenient": self.lenient,
            "start": self.start,
            "stopped_at_ms": self._stop_ms,
        }


def _peak_rate(offsets_us: np.ndarray, speed: float) -> float:
    seconds = np.floor(offsets_us / (1e6 * speed)).astype(np.int64)
    return min(float(np.bincount(seconds - seconds[0]).max()), MAX_RATE)  # a profile's bound


def replay_profile(spec: dict[str, Any], base_dir: Path | None, allow_files: bool) -> ReplayProfile:
    """The :class:`ReplayProfile` of a spec with a ``replay`` field; ValueError naming it."""
    unknown = sorted(map(str, set(spec) - set(REPLAY_FIELDS)))
    if unknown:
        raise ValueError(
            f"rate profile (replay) {unknown[0]}: unknown field; expected {sorted(REPLAY_FIELDS)}"
        )
    values = {**REPLAY_FIELDS, **spec}
    path = values["replay"]
    if not isinstance(path, str) or not path:
        raise ValueError(f"rate profile replay: expected a capture file's path, got {path!r}")
    if not allow_files:
        raise ValueError(
            "rate profile replay: a capture is named at start-up only (--replay, a "
            "scenario's rate), never over HTTP"
        )
    speed = values["speed"]
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed):
        raise ValueError(f"rate profile speed: expected a number, got {speed!r}")
    if not _SPEEDS[0] <= speed <= _SPEEDS[1]:
        raise ValueError(f"rate profile speed: must be {_SPEEDS[0]}..{_SPEEDS[1]:g}, got {speed}")
    if values["start"] not in _STARTS:
        raise ValueError(
            f"rate profile start: expected one of {', '.join(_STARTS)}, got {values['start']!r}"
        )
    for name in ("loop", "shift_ids", "lenient"):
        if not isinstance(values[name], bool):
            raise ValueError(f"rate profile {name}: expected true or false, got {values[name]!r}")
    if values["loop"] and not values["shift_ids"]:
        raise ValueError(
            "rate profile loop: a second pass would repeat the recorded ids; set shift_ids "
            "to mint new ones"
        )
    file = Path(path) if base_dir is None or Path(path).is_absolute() else base_dir / path
    try:
        capture = _read(str(file.resolve()), values["lenient"], not values["shift_ids"])
    except CaptureError as e:
        raise ValueError(f"rate profile replay: {e}") from None
    return ReplayProfile(
        capture,
        float(speed),
        values["loop"],
        values["shift_ids"],
        values["lenient"],
        values["start"],
    )


def _read(path: str, lenient: bool, kept_ids: bool) -> Capture:
    """:func:`read_capture`, once per file version: options are checked, then built, from
    the same spec (the command line, the scenario, the server)."""
    try:
        stat = Path(path).stat()
        key = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # read_capture says what is wrong with it
        key = None
    return _read_cached(path, lenient, kept_ids, key)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, lenient: bool, kept_ids: bool, _version: Any) -> Capture:
    return read_capture(path, lenient=lenient, kept_ids=kept_ids)


class ReplayTweets:
    """A capture's tweets rendered as the stream's lines: a
    :class:`~fake_stream.tweets.TweetSource`, as the generated ones."""

    def __init__(self, profile: ReplayProfile, seed: int) -> None:
        self.seed = seed
        self.shift_ids = profile.shift_ids
        messages = profile.capture.tweets
        users: dict[str, int] = {}
        self.user_pool: list[dict[str, str]] = []
        self.text_pool: list[tuple[str, str]] = []
        author_of = []
        for message in messages:
            data = message["data"]
            self.text_pool.append((str(data.get("lang", "")), str(data.get("text", ""))))
            author = str(data.get("author_id", ""))
            if author not in users:
                users[author] = len(self.user_pool)
                self.user_pool.append(_user(message, author))
            author_of.append(users[author])
        self._author_of = np.array(author_of, dtype=np.int64)
        self._created_cache: dict[int, bytes] = {}
        render = _tail if self.shift_ids else _head
        self._parts = [render(message) for message in messages]

    def choices(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The text (of :attr:`text_pool`) and author (of :attr:`user_pool`) of each tweet."""
        text_of = np.asarray(indexes, dtype=np.int64) % len(self._parts)
        return text_of, self._author_of[text_of]

    def lines(
        self,
        indexes: np.ndarray,
        ids: np.ndarray,
        unix_ms: np.ndarray,
        rule_suffixes: Sequence[bytes] | None,
    ) -> list[bytes]:
        """The wire lines of the tweets at ``indexes`` (``ids``/``unix_ms``: as minted by the
        timeline, used with ``shift_ids``); rules as :meth:`TweetFactory.lines` picks them."""
        parts = self._parts
        of = (np.asarray(indexes, dtype=np.int64) % len(parts)).tolist()
        if rule_suffixes:
            ends = [rule_suffixes[r] for r in rule_choice(indexes, self.seed, len(rule_suffixes))]
        else:
            ends = [SAMPLE_END] * len(of)
        if not self.shift_ids:
            return [parts[k] + end for k, end in zip(of, ends, strict=True)]
        created = created_at(self._created_cache, unix_ms)
        out = []
        for k, tweet_id, ms, end in zip(of, ids.tolist(), unix_ms.tolist(), ends, strict=True):
            idb = b"%d" % tweet_id
            out.append(
                b"".join((PREFIX, idb, EDIT_HISTORY, idb, CREATED_AT, created[ms], parts[k], end))
            )
        return out


def _head(message: dict[str, Any]) -> bytes:
    """The message as recorded, less its ``matching_rules`` and its closing brace."""
    kept = {k: v for k, v in message.items() if k != "matching_rules"}
    return orjson.dumps(kept)[:-1]


def _tail(message: dict[str, Any]) -> bytes:
    """What follows a minted ``created_at`` value: the rest of ``data``, then the rest of
    the message (less ``matching_rules``), without the message's closing brace."""
    data = {k: v for k, v in message["data"].items() if k not in _DATA_OWN}
    rest = {k: v for k, v in message.items() if k not in ("data", "matching_rules")}
    data_end = b"," + orjson.dumps(data)[1:] if data else b"}"
    rest_part = b"," + orjson.dumps(rest)[1:-1] if rest else b""
    return b'"' + data_end + rest_part


def _user(message: dict[str, Any], author: str) -> dict[str, str]:
    """The author's ``includes.users`` entry (X sends it with the expansion), or a blank."""
    includes = message.get("includes")
    users = includes.get("users") if isinstance(includes, dict) else None
    for user in users if isinstance(users, list) else []:
        if isinstance(user, dict) and str(user.get("id")) == author:
            return {
                "id": author,
                "name": str(user.get("name", "")),
                "username": str(user.get("username", "")),
            }
    return {"id": author, "name": "", "username": ""}
