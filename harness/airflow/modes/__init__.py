"""How a scenario's task runs on Airflow: one module per mode, each registered under the
name scenario files use (``mode = "..."``). Every module of this folder is imported here,
so a new mode is one file (see docs/creating-faults.md, "Adding a mode").

Modes: ``dagtest`` (``airflow dags test`` per scenario), ``standalone`` (a long-lived
scheduler, API server, dag-processor and LocalExecutor shared by the matrix),
``localtask`` (Airflow 2.x: ``airflow tasks run --local`` per try). What each can do is
its ``capabilities``; harness/README.md has the table.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from pathlib import Path

from harness.airflow.base import MODES, DagSpec, Mode, ModeError
from harness.airflow.home import migrated_template

__all__ = ["MODES", "Airflows"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


class Airflows:
    """The Airflow of each mode a matrix uses, started on first use, stopped by :meth:`close`.

    :param root: where their homes go (the results folder).
    :param dags: the DAG of every scenario to run, so a shared Airflow knows them up front.
    :param jobs: scenarios that run at once in a mode that allows it (``side_by_side``).
    """

    def __init__(self, root: Path, dags: list[DagSpec], jobs: int = 1) -> None:
        self.root = root
        self.dags = dags
        self.jobs = jobs
        self._template: Path | None = None
        self._modes: dict[str, Mode] = {}
        self._lock = threading.Lock()  # scenarios side by side ask for their mode at once

    def template(self) -> Path:
        """A migrated Airflow database (migrating takes seconds; every home copies it)."""
        if self._template is None:
            self._template = migrated_template(self.root / "airflow-template")
        return self._template

    def get(self, mode: str) -> Mode:
        with self._lock:
            if mode not in self._modes:
                if mode not in MODES:
                    known = ", ".join(sorted(MODES))
                    raise ModeError(f"unknown Airflow mode {mode!r}; known: {known}")
                dags = [d for d in self.dags if d.mode == mode]
                kind = MODES[mode]
                template = self.template() if kind.sqlite else None
                if kind.side_by_side:
                    self._modes[mode] = kind(self.root, dags, template, jobs=self.jobs)
                else:
                    self._modes[mode] = kind(self.root, dags, template)
            return self._modes[mode]

    def close(self) -> None:
        for mode in self._modes.values():
            mode.close()
        self._modes.clear()
