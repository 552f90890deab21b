"""Fault fields that would break the nemesis mid-run are refused when the scenario loads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.nemesis.memory import MemoryLimit
from harness.nemesis.signals import PauseTask


@pytest.mark.parametrize(
    ("fault", "field"),
    [(PauseTask, {"duration": 1e300}), (MemoryLimit, {"limit_mb": 1e300})],
)
def test_huge_values_are_refused(fault, field):
    with pytest.raises(ValidationError) as refused:
        fault(at=1, **field)
    assert refused.value.errors()[0]["loc"] == (next(iter(field)),)
