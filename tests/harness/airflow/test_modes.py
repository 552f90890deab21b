"""What each mode declares it can do matches what its task handle really implements, and
the registry refuses what it does not know (no Airflow is started here)."""

from __future__ import annotations

import typing

import pytest

from harness.airflow.base import CAPABILITY_METHODS, Capability, ModeError, TaskHandle
from harness.airflow.modes import MODES, Airflows


@pytest.mark.parametrize("name", sorted(MODES))
def test_a_mode_implements_exactly_the_capabilities_it_declares(name):
    mode = MODES[name]
    assert mode.name == name
    handle = typing.get_type_hints(mode.start)["return"]
    assert issubclass(handle, TaskHandle)
    for capability in Capability:
        implemented = {
            method: getattr(handle, method) is not getattr(TaskHandle, method)
            for method in CAPABILITY_METHODS[capability]
        }
        declared = capability in mode.capabilities
        assert implemented == dict.fromkeys(implemented, declared), (name, capability)


def test_every_capability_names_its_methods():
    assert set(CAPABILITY_METHODS) == set(Capability)


def test_an_unknown_mode_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ModeError, match="unknown Airflow mode 'kubernetes'; known: "):
        Airflows(tmp_path, []).get("kubernetes")
    assert list(tmp_path.iterdir()) == []  # not even the template database
