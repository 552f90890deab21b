"""Checkers that turn a run's history into verdicts and metrics (see base.py)."""

from harness.check.checker.base import Checker, Composed, Result, check_safe, compose
from harness.check.checker.queue import TotalQueueChecker, verdict_of
from harness.check.checker.sequence import SequenceChecker
from harness.check.checker.timing import TimingChecker

__all__ = [
    "Checker",
    "Composed",
    "Result",
    "SequenceChecker",
    "TimingChecker",
    "TotalQueueChecker",
    "check_safe",
    "compose",
    "default_checker",
    "verdict_of",
]


def default_checker() -> Composed:
    """The checks every run gets: ``queue``, ``sequence``, ``timing``."""
    return compose(
        {"queue": TotalQueueChecker(), "sequence": SequenceChecker(), "timing": TimingChecker()}
    )
