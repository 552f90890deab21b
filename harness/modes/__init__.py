"""How a scenario's task runs on Airflow: one module per mode, behind one interface.

========== ============================================================================
mode       what runs the task
========== ============================================================================
dagtest    ``airflow dags test`` in a subprocess per scenario: fast; restarts are
           relaunches (:mod:`harness.modes.dagtest`)
standalone a long-lived scheduler + API server + dag-processor + LocalExecutor, shared
           by the matrix: Airflow's own retries, heartbeats and SIGTERM handling
           (:mod:`harness.modes.standalone`)
localtask  Airflow 2.x only: ``airflow tasks run --local`` per try, as a 2.x worker runs
           it (a ``LocalTaskJob`` forking the task process): 2.x's own SIGTERM
           handling; the harness plays the scheduler for the one DAG run
           (:mod:`harness.modes.localtask`)
========== ============================================================================

A mode is a :class:`~harness.modes.base.Mode` (started once, when a scenario first needs
it) that starts :class:`~harness.modes.base.TaskRun` objects. A ``celery`` mode
(CeleryExecutor, a harness-started Redis broker, two workers with their own scratch
folders) fits the same interface: its ``after_kill`` would need no folder moving, since
the retry really lands on the other worker. To add a mode: write its module, add it to
:class:`Airflows` and to the ``mode`` field of :class:`harness.scenario.Scenario`.
"""

from __future__ import annotations

from pathlib import Path

from harness.airflow_runner import AirflowHome
from harness.modes.base import Mode, ModeError, TaskRun, TaskSpec
from harness.modes.dagtest import DagTestMode
from harness.modes.localtask import LocalTaskMode
from harness.modes.standalone import StandaloneMode
from harness.scenario import Scenario

__all__ = ["Airflows", "Mode", "ModeError", "TaskRun", "TaskSpec"]


class Airflows:
    """The Airflow of each mode a matrix uses, started on first use, stopped by :meth:`close`.

    :param root: where their homes go (the results folder).
    :param scenarios: every scenario to run, so a shared Airflow knows its DAGs up front.
    """

    def __init__(self, root: Path, scenarios: list[Scenario]) -> None:
        self.root = root
        self.scenarios = scenarios
        self._template: Path | None = None
        self._modes: dict[str, Mode] = {}

    def template(self) -> Path:
        """A migrated Airflow database (migrating takes seconds; every home copies it)."""
        if self._template is None:
            self._template = AirflowHome(self.root / "airflow-template").database
        return self._template

    def get(self, mode: str) -> Mode:
        if mode not in self._modes:
            if mode == "dagtest":
                self._modes[mode] = DagTestMode(self.template())
            elif mode == "standalone":
                scenarios = [s for s in self.scenarios if s.mode == "standalone"]
                self._modes[mode] = StandaloneMode(self.root, scenarios, self.template())
            elif mode == "localtask":
                self._modes[mode] = LocalTaskMode(self.template())
            else:
                raise ModeError(f"unknown Airflow mode {mode!r}")
        return self._modes[mode]

    def close(self) -> None:
        for mode in self._modes.values():
            mode.close()
        self._modes.clear()
