"""Log records throttled by kind: the first few pass, the rest are counted, not written.

A storm of identical errors (a full file-descriptor table made the server write 45 MB of
"Too many open files" tracebacks in 27 s to a stderr the harness inherits) must not drown
the log, or the disk. A *kind* is the logger, the level, the first line of the message and
the exception's type; per kind and per ``interval`` seconds the first ``first`` records
pass, later ones are counted, and the count rides on the next record of that kind that
passes (``[1234 more like this were not logged before it]``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Throttle"]

_MAX_KINDS = 1024  # kinds remembered at once; more (never seen so far) start afresh


@dataclass
class _Window:
    since: float
    passed: int = 0
    suppressed: int = 0


class Throttle(logging.Filter):
    """A :class:`logging.Filter` (put it on a handler) letting ``first`` records of each
    kind through per ``interval`` seconds."""

    def __init__(
        self,
        first: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.first = first
        self.interval = interval
        self._clock = clock
        self._windows: dict[tuple[str, int, str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        first_line = str(record.msg).partition("\n")[0][:200]
        kind = (record.name, record.levelno, first_line, exc)
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.since >= self.interval:
            if len(self._windows) >= _MAX_KINDS:
                self._windows.clear()
            if window is not None and window.suppressed:
                _append(record, f"{window.suppressed} more like this were not logged before it")
            window = self._windows[kind] = _Window(now)
        if window.passed < self.first:
            window.passed += 1
            if window.passed == self.first:
                _append(record, f"more like this in the next {self.interval:g} s are counted")
            return True
        window.suppressed += 1
        return False


def _append(record: logging.LogRecord, note: str) -> None:
    # The note joins the message template: it must hold no %-placeholder of its own.
    record.msg = f"{record.msg} [{note.replace('%', '%%')}]"
