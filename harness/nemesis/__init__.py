"""The nemesis: Airflow faults, injected into a scenario's running task on their triggers.

One module per family (``signals``: kill, a bare SIGTERM, pause, move, exhaust;
``try_state``: clear or mark the try through Airflow's API; ``supervisor``: a killed or
shut-down worker; ``scheduler``: a restarted scheduler; ``memory``: an address-space cap,
the kernel's OOM kill, a leaking neighbour), each fault registered by its ``type``. Every
module of this folder is imported here, so a new family is one file; a new fault is one
class (docs/creating-faults.md).
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
