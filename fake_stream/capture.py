"""Captures: a stream as one connection received it, line by line, with arrival times.

A capture is NDJSON, one record per line. The first is the header; each later record has
``t``, milliseconds since the header's ``started_at`` (when the request was sent), and one
of ``tweet``, ``keepalive``, ``message`` or ``raw``; the last is the ``end`` record::

    {"capture": 1, "source": "<stream url>", "params": {...}, "rules": [...] | null,
     "started_at": <UNIX s>, "recorder": "python -m fake_stream record"}
    {"t": 312.406, "tweet": {"data": {"id": "...", ...}, "includes": ..., "matching_rules": ...}}
    {"t": 20311.0, "keepalive": true}
    {"t": 20544.1, "message": {"errors": [...]}}       any other JSON line: errors, warnings
    {"t": 20600.2, "raw": "..."}                        a line that was not JSON, as text
    {"t": 30000.0, "end": "seconds", "records": 2901, "tweets": 2898}

``end`` says why the recording stopped (``seconds``, ``max_tweets``, ``interrupted``,
``stream_ended``, ``error: ...``). A capture without it was killed before it finished: its
last records may be missing, so :func:`read_capture` refuses it unless told to be lenient.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = ["FORMAT", "Capture", "CaptureError", "CaptureWriter", "read_capture"]

#: The capture format's version, the header's ``capture`` field.
FORMAT = 1
_KINDS = ("tweet", "keepalive", "message", "raw", "end")
_MAX_ID = 2**63 - 1


class CaptureError(ValueError):
    """A capture that cannot be replayed; the message names the file and the line."""


@dataclass
class Capture:
    """The tweets of a capture, in arrival order, and what reading it found.

    :param offsets_us: each tweet's arrival, microseconds since the request was sent.
    :param ids: each tweet's recorded id.
    :param lines: the capture line each tweet came from (1-based).
    :param skipped: ``(line, why)`` of every record a lenient read left out.
    :param complete: whether the capture has its ``end`` record.
    :param duration_us: how long the recording ran (its ``end`` record's ``t``; without
        one, the last record's).
    """

    path: Path
    sha256: str
    header: dict[str, Any]
    tweets: list[dict[str, Any]]
    offsets_us: np.ndarray
    ids: np.ndarray
    lines: list[int]
    duration_us: int
    complete: bool
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What a ledger records about the capture it replays."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "source": self.header.get("source"),
            "started_at": self.header.get("started_at"),
            "tweets": len(self.tweets),
            "duration_s": self.duration_us / 1e6,
            "complete": self.complete,
            "skipped": [{"line": line, "why": why} for line, why in self.skipped],
        }


class _Bad(Exception):
    """One bad record: skipped when lenient, fatal otherwise."""


def read_capture(path: str | Path, *, lenient: bool = False, kept_ids: bool = True) -> Capture:
    """Read and check a capture.

    :param lenient: skip bad records (recorded in :attr:`Capture.skipped`) and accept a
        capture without its ``end`` record, instead of refusing it.
    :param kept_ids: the recorded ids will be served as they are, so they must increase
        from each tweet to the next (the ledger and checker order tweets by id).

    Raises :class:`CaptureError` naming the file and line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CaptureError(f"{path}: cannot read ({e.strerror or e})") from None
    reader = _Reader(path, lenient, kept_ids)
    text_lines = data.split(b"\n")
    cut = text_lines[-1] != b""  # the last line has no newline: cut short by a kill
    if not cut:
        text_lines.pop()
    for number, raw in enumerate(text_lines, start=1):
        last_cut = cut and number == len(text_lines)
        reader.line(number, raw, last_cut)
    return reader.finish(hashlib.sha256(data).hexdigest(), len(text_lines))


class _Reader:
    def __init__(self, path: Path, lenient: bool, kept_ids: bool) -> None:
        self.path, self.lenient, self.kept_ids = path, lenient, kept_ids
        self.header: dict[str, Any] | None = None
        self.end: dict[str, Any] | None = None
        self.end_line = 0
        self.tweets: list[dict[str, Any]] = []
        self.offsets: list[int] = []
        self.ids: list[int] = []
        self.lines: list[int] = []
        self.seen: dict[int, int] = {}  # id -> its line
        self.last_t = (0, 0)  # (offset us, line)
        self.skipped: list[tuple[int, str]] = []

    def fail(self, line: int, why: str) -> CaptureError:
        return CaptureError(f"{self.path}: line {line}: {why}")

    def line(self, number: int, raw: bytes, cut: bool) -> None:
        try:
            self._line(number, raw, cut)
        except _Bad as e:
            if not self.lenient or number == 1:
                hint = "" if number == 1 else " (replay with lenient to skip it)"
                raise self.fail(number, f"{e}{hint}") from None
            self.skipped.append((number, str(e)))

    def _line(self, number: int, raw: bytes, cut: bool) -> None:
        if self.end is not None:
            raise _Bad(f"a record after the end record of line {self.end_line}")
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            if cut:
                raise _Bad(
                    "the last line is cut short (the recording was killed mid-write)"
                ) from None
            raise _Bad(f"not JSON ({e})") from None
        if not isinstance(record, dict):
            raise _Bad(f"expected a JSON object, got {type(record).__name__}")
        if number == 1:
            self._header(record)
            return
        kinds = [k for k in _KINDS if k in record]
        if len(kinds) != 1:
            raise _Bad(f"expected one of {', '.join(_KINDS)}, got keys {sorted(record)}")
        t = record.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise _Bad(f"t: expected milliseconds >= 0, got {t!r}")
        offset = round(t * 1000)
        if offset < self.last_t[0]:
            raise _Bad(
                f"t: {t} ms is before the previous record's {self.last_t[0] / 1000} ms "
                f"(line {self.last_t[1]}): offsets must not decrease"
            )
        if kinds[0] == "tweet":
            self._tweet(number, record["tweet"], offset)
        elif kinds[0] == "end":
            self._end(number, record)
        self.last_t = (offset, number)

    def _end(self, number: int, record: dict[str, Any]) -> None:
        """The end record, which counts the records before it: a capture that lost lines
        in the middle says so."""
        self.end, self.end_line = record, number
        if not isinstance(record["end"], str):
            raise _Bad(f"end: expected the reason, a string, got {record['end']!r}")
        if record.get("records") != number - 2:
            raise _Bad(
                f"end: counts {record.get('records')!r} records, the capture holds "
                f"{number - 2} between its header and this line"
            )

    def _header(self, record: dict[str, Any]) -> None:
        if record.get("capture") != FORMAT:
            raise _Bad(
                f'not a capture header: expected {{"capture": {FORMAT}, ...}}, got keys '
                f"{sorted(record)[:6]}"
            )
        self.header = record

    def _tweet(self, number: int, message: Any, offset: int) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        tweet_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(tweet_id, str) or not tweet_id.isascii() or not tweet_id.isdigit():
            raise _Bad(f"tweet: expected data.id, a string of digits, got {tweet_id!r}")
        value = int(tweet_id)
        if value > _MAX_ID:
            raise _Bad(f"tweet: data.id {tweet_id} does not fit 63 bits")
        if value in self.seen:
            raise _Bad(f"tweet: id {tweet_id} already came at line {self.seen[value]}")
        if self.kept_ids and self.ids and value <= self.ids[-1]:
            raise _Bad(
                f"tweet: id {tweet_id} is not above the previous tweet's (line "
                f"{self.lines[-1]}); kept ids must increase: replay with shift_ids to "
                "re-mint them in arrival order"
            )
        self.seen[value] = number
        self.tweets.append(message)
        self.offsets.append(offset)
        self.ids.append(value)
        self.lines.append(number)

    def finish(self, sha256: str, lines: int) -> Capture:
        if self.header is None:
            raise CaptureError(f"{self.path}: empty: no capture header")
        if self.end is None and not self.lenient:
            raise CaptureError(
                f"{self.path}: no end record after line {lines}: "
                "the recording was stopped before it finished (killed?), so records may be "
                "missing; replay with lenient to use what it holds"
            )
        if not self.tweets:
            raise CaptureError(f"{self.path}: holds no tweet")
        duration = self.last_t[0]
        return Capture(
            path=self.path,
            sha256=sha256,
            header=self.header,
            tweets=self.tweets,
            offsets_us=np.array(self.offsets, dtype=np.int64),
            ids=np.array(self.ids, dtype=np.int64),
            lines=self.lines,
            duration_us=duration,
            complete=self.end is not None,
            skipped=self.skipped,
        )


class CaptureWriter:
    """Writes a capture record by record, each in one ``write``: a kill can cut the file
    only between records (or, on a full disk, inside the last one: the reader says so).

    Refuses to overwrite an existing file.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.records = 0
        self.tweets = 0
        self._write({"capture": FORMAT, **header})

    def _write(self, record: dict[str, Any]) -> None:
        data = memoryview(orjson.dumps(record) + b"\n")
        while data:
            data = data[os.write(self._fd, data) :]

    def add(self, t_ms: float, kind: str, value: Any) -> None:
        """One received line: ``kind`` is tweet, keepalive, message or raw."""
        self._write({"t": round(t_ms, 3), kind: value})
        self.records += 1
        self.tweets += kind == "tweet"

    def end(self, t_ms: float, reason: str) -> None:
        """The end record, then the file is synced and closed."""
        self._write(
            {"t": round(t_ms, 3), "end": reason, "records": self.records, "tweets": self.tweets}
        )
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
