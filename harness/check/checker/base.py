"""Checkers: functions of a :class:`~harness.check.history.History` to a result dict.

Like Jepsen's, every result has ``valid``: ``True``, ``False`` or ``"unknown"`` (the
history cannot settle it). :func:`compose` runs several under names and is valid only if
all are; :func:`check_safe` turns a checker's crash into ``unknown`` with the error, so
one broken checker never hides the others' results.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any, Protocol

from harness.check.history import History

__all__ = ["Checker", "Composed", "Result", "check_safe", "compose", "merge_valid"]

Result = dict[str, Any]


class Checker(Protocol):
    def check(self, history: History) -> Result:
        """Judge ``history``; the result holds ``valid`` and the checker's own fields."""
        ...


def merge_valid(values: list[Any]) -> bool | str:
    """False if any is False, else unknown if any is unknown, else True."""
    if any(v is False for v in values):
        return False
    if any(v == "unknown" for v in values):
        return "unknown"
    return True


def check_safe(checker: Checker, history: History) -> Result:
    try:
        return checker.check(history)
    except Exception as e:
        return {
            "valid": "unknown",
            "error": f"{type(e).__name__}: {e}",
            "trace": traceback.format_exc(),
        }


class Composed:
    """Named checkers run together; see :func:`compose`."""

    def __init__(self, checkers: Mapping[str, Checker]) -> None:
        self.checkers = dict(checkers)

    def check(self, history: History) -> Result:
        results: Result = {name: check_safe(c, history) for name, c in self.checkers.items()}
        results["valid"] = merge_valid([r.get("valid", "unknown") for r in results.values()])
        return results


def compose(checkers: Mapping[str, Checker]) -> Composed:
    """A checker whose result maps each name to that checker's result, plus ``valid``."""
    return Composed(checkers)
