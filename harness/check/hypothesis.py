"""The steady-state hypothesis language: ``<metric> <op> <value>``, judged on metrics.json.

The metric is a headline name (:data:`harness.check.headline.METRICS`: ``lost``,
``p99_latency_s``, ...) or a dotted ``metrics.json`` path (``queue.lost_by_cause.
never_delivered``); the value a number, ``true``/``false`` or a word (``exactly-once``).
"""

from __future__ import annotations

import operator
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from harness.check.headline import BY_NAME

__all__ = ["Hypothesis", "judge_all"]

_HYPOTHESIS = re.compile(r"^\s*([a-z_][\w.]*)\s*(==|!=|<=|>=|<|>)\s*(\S+)\s*$")
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


class Hypothesis(BaseModel):
    """One statement about a run's metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str

    @field_validator("text")
    @classmethod
    def _parse(cls, text: str) -> str:
        if not _HYPOTHESIS.match(text):
            raise ValueError(f"expected '<metric> <op> <value>' (op one of {' '.join(_OPS)})")
        return text

    def judge(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """Whether ``metrics`` satisfy it, and what was measured."""
        name, op, expected_text = _HYPOTHESIS.match(self.text).groups()  # type: ignore[union-attr]
        if name in BY_NAME:
            value = BY_NAME[name].value(metrics)
        else:
            value = metrics
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        expected: Any = _literal(expected_text)
        if value is None:
            return False, f"{name} was not measured"
        try:
            held = _OPS[op](value, expected)
        except TypeError:
            return False, f"{name} = {value!r} cannot be compared with {expected!r}"
        return bool(held), f"{name} = {value!r}"


def judge_all(texts: list[str], metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``hypothesis`` block of metrics.json: each statement judged, and whether all held."""
    results = []
    for text in texts:
        held, measured = Hypothesis(text=text).judge(metrics)
        results.append({"hypothesis": text, "held": held, "measured": measured})
    return {"held": all(r["held"] for r in results), "results": results}


def _literal(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        return text.strip("\"'")
