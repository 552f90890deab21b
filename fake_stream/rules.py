"""Filtered-stream rules, kept the way X keeps them (per server: one "app").

The fake does not evaluate rule values against tweet text: each tweet on the filtered
stream matches exactly one of the current rules, chosen by a hash of its index, so every
message carries ``matching_rules`` with ``id`` and ``tag`` (tweepy stops for good on a rule
without ``tag``). With no rules at all the filtered stream carries nothing, as X's does.

Caps are X's Pro access level (the one whose limits the fake already had: values of up to
1,024 characters, 1,000 rules per page): at most :data:`MAX_RULES` rules at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from fake_stream import snowflake
from fake_stream.tweets import TweetFactory

__all__ = ["MAX_RULES", "MAX_TAG", "MAX_VALUE", "Rule", "RuleError", "RuleSet"]

MAX_VALUE = 1024  # characters of a rule value (Pro; 512 on Basic, 2,048 on Enterprise)
MAX_TAG = 256
MAX_RULES = 1000  # rules per project (Pro; 25,000 on Enterprise)


@dataclass(frozen=True)
class Rule:
    id: str
    value: str
    tag: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "value": self.value, "tag": self.tag}


class RuleError(ValueError):
    """One rule that cannot be added; ``title`` is X's error title for it."""

    def __init__(self, title: str, value: Any, detail: str) -> None:
        super().__init__(detail)
        self.title = title
        self.value = value


class RuleSet:
    """The current rules, and the pre-rendered ``matching_rules`` endings for them.

    :param t0_ms: stream start; rule ids are Snowflake ids from then on, so they are
        deterministic for a pinned start time.
    """

    def __init__(self, t0_ms: int) -> None:
        self._rules: dict[str, Rule] = {}
        self._values: set[str] = set()  # duplicates are found in O(1), not by a scan
        self._ids = (snowflake.encode(t0_ms, n) for n in itertools.count(1))
        self._suffixes: list[bytes] | None = None

    def __iter__(self):  # noqa: ANN204
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def check(self, spec: Any) -> tuple[str, str]:
        """Validate one ``{"value": ..., "tag": ...}``; raise :class:`RuleError`."""
        if not isinstance(spec, dict) or not isinstance(spec.get("value"), str):
            raise RuleError("Invalid Rule", spec, "Each rule needs a string 'value'.")
        value, tag = spec["value"].strip(), spec.get("tag", "")
        extra = set(spec) - {"value", "tag"}
        if extra:
            raise RuleError("Invalid Rule", spec, f"Unknown rule field {sorted(extra)[0]!r}.")
        if not isinstance(tag, str) or len(tag) > MAX_TAG:
            raise RuleError(
                "Invalid Rule", spec, f"'tag' must be a string of <= {MAX_TAG} characters."
            )
        if not value or len(value) > MAX_VALUE:
            raise RuleError(
                "RuleLengthExceeded" if value else "Invalid Rule",
                spec,
                f"Rule values must be 1..{MAX_VALUE} characters.",
            )
        if value in self._values:
            raise RuleError("DuplicateRule", spec, "Duplicate rule value.")
        return value, tag

    def add(self, value: str, tag: str) -> Rule:
        if len(self._rules) >= MAX_RULES:  # routes check first, with X's error shape
            raise RuleError("RulesCapExceeded", value, f"More than {MAX_RULES} rules.")
        rule = Rule(str(next(self._ids)), value, tag)
        self._rules[rule.id] = rule
        self._values.add(value)
        self._suffixes = None
        return rule

    def delete(self, rule_id: str) -> bool:
        self._suffixes = None
        rule = self._rules.pop(rule_id, None)
        if rule is not None:
            self._values.discard(rule.value)
        return rule is not None

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def suffixes(self) -> list[bytes]:
        """One ``matching_rules`` message ending per rule, in rule id order."""
        if self._suffixes is None:
            self._suffixes = [TweetFactory.rule_suffix(r.id, r.tag) for r in self._rules.values()]
        return self._suffixes
