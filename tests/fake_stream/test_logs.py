"""``Throttle``: the first few log records of a kind pass, the rest are counted."""

from __future__ import annotations

import io
import logging

from fake_stream.logs import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _logger(throttle: Throttle) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(throttle)
    logger = logging.getLogger(f"test_logs.{id(throttle)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, out


def test_first_records_of_a_kind_pass_then_a_count_rides_on_the_next_window():
    clock = Clock()
    logger, out = _logger(Throttle(first=3, interval=60, clock=clock))

    def fail(i: int) -> None:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception("accept failed on %s", f"socket {i}")

    for i in range(1000):
        fail(i)
    lines = out.getvalue()
    assert lines.count("Traceback") == 3
    assert "accept failed on socket 2 [more like this in the next 60 s are counted]" in lines
    clock.now = 61
    fail(1000)
    assert out.getvalue()[len(lines) :].startswith(
        "accept failed on socket 1000 [997 more like this were not logged before it]\n"
    )


def test_kinds_are_counted_apart():
    """Another message, level or exception type is another kind, with its own allowance."""
    logger, out = _logger(Throttle(first=1, interval=60, clock=Clock()))
    for _ in range(5):
        logger.error("first kind %d", 1)
        logger.error("second kind %d", 2)
        logger.warning("first kind %d", 1)
    assert out.getvalue().splitlines() == [
        "first kind 1 [more like this in the next 60 s are counted]",
        "second kind 2 [more like this in the next 60 s are counted]",
        "first kind 1 [more like this in the next 60 s are counted]",
    ]


def test_a_percent_sign_in_the_note_or_message_is_safe():
    logger, out = _logger(Throttle(first=1, interval=60, clock=Clock()))
    logger.error("100%% full: %s", "queue")
    assert out.getvalue() == "100% full: queue [more like this in the next 60 s are counted]\n"
