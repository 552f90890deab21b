"""The steady-state hypothesis language: ``<metric> <op> <value>``, judged on metrics.json.

The metric is a headline name (:data:`harness.check.headline.METRICS`: ``lost``,
``p99_latency_s``, ...) or a dotted ``metrics.json`` path (``queue.lost_by_cause.
never_delivered``) under one of :data:`FIELDS`; the value a finite number, ``true``/``false``
or a word (``exactly-once``), of the headline metric's kind. An unknown metric is refused
when the scenario loads, not found missing after the run.
"""

from __future__ import annotations

import math
import operator
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from harness.check.headline import BY_NAME

__all__ = ["FIELDS", "Hypothesis", "judge_all"]

_HYPOTHESIS = re.compile(r"^\s*([a-z_][\w.]*)\s*(==|!=|<=|>=|<|>)\s*(\S+)\s*$")
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


#: The fields of metrics.json a dotted path may name: top level, and for each section the
#: fields it always has (None: a value, or a section whose fields vary). Deeper parts are
#: not checked. ``tests/harness/check/test_hypothesis.py`` holds this to what the checker
#: writes.
# fmt: off
FIELDS: dict[str, frozenset[str] | None] = {
    "schema_version": None, "checked_at": None, "valid": None, "verdict": None,
    "silent_failure": None,
    "hypothesis": frozenset({"held", "results"}),
    "ending": frozenset({
        "created_until", "cap_seconds", "how", "stop_requested_at", "task_ended_by", "ended_at",
    }),
    "window": frozenset({
        "definition", "first_index", "grace_seconds", "start", "stop", "stop_index",
    }),
    "queue": frozenset({
        "created", "delivered", "duplicated_tweets", "duplicates", "duplicates_before_window",
        "duplicates_by_try", "ended_by", "lost", "lost_by_cause", "lost_seconds",
        "pending_at_cut", "processed_total", "processed_unique", "samples", "silent_failure",
        "silent_failure_source", "silent_failure_tries", "unexpected", "unobserved", "valid",
        "verdict", "verdict_so_far",
    }),
    "sequence": frozenset({"gaps", "repeats", "valid"}),
    "timing": frozenset({
        "downtime", "gil", "lag", "latency", "recovery", "rss", "throughput", "tries", "valid",
        "window_seconds",
    }),
}
# fmt: on


def _unknown(name: str) -> str | None:
    """Why ``name`` is no metric (None: it is one)."""
    if name in BY_NAME:
        return None
    top, _, rest = name.partition(".")
    if top not in FIELDS:
        return (
            f"unknown metric {name!r}: not a headline metric ({', '.join(BY_NAME)}) "
            f"nor a metrics.json path (top-level fields: {', '.join(FIELDS)})"
        )
    section = FIELDS[top]
    field = rest.partition(".")[0]
    if rest and section is not None and field not in section:
        known = ", ".join(sorted(section))
        return f"unknown metric {name!r}: {top} has no {field!r} (it has {known})"
    return None


def _value_problem(name: str, text: str) -> str | None:
    """Why ``text`` cannot be a value of ``name`` (None: it can)."""
    value = _literal(text)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{text!r} is not a finite number"
    kind = BY_NAME[name].kind if name in BY_NAME else None
    if kind in ("count", "rate", "seconds") and not isinstance(value, float):
        return f"{name} is a number; {text!r} is not one"
    if kind == "flag" and not isinstance(value, bool) and value != "unknown":
        return f"{name} is true, false or unknown; got {text!r}"
    return None


class Hypothesis(BaseModel):
    """One statement about a run's metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str

    @field_validator("text")
    @classmethod
    def _parse(cls, text: str) -> str:
        match = _HYPOTHESIS.match(text)
        if not match:
            raise ValueError(f"expected '<metric> <op> <value>' (op one of {' '.join(_OPS)})")
        name, _, value = match.groups()
        problem = _unknown(name) or _value_problem(name, value)
        if problem:
            raise ValueError(problem)
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
