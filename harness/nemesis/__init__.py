"""The nemesis: Airflow faults, injected into a scenario's running task on their triggers.

One module per family (``signals``: kill, term, pause, move, exhaust; ``supervisor``: a
killed worker; ``scheduler``: a restarted scheduler; ``memory``: a memory cap), each fault
registered by its ``type``. Every module of this folder is imported here, so a new family
is one file; a new fault is one class (docs/creating-faults.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.nemesis.base import (
    AirflowFault,
    FaultContext,
    Nemesis,
    Progress,
    register,
    registered,
)

__all__ = ["AirflowFault", "FaultContext", "Nemesis", "Progress", "register", "registered"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
