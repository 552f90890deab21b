"""Run DAG variants on a real Airflow: an AIRFLOW_HOME of our own, and ``airflow dags test``.

``airflow dags test`` (the ``dagtest`` mode) runs one DAG run in one process: no scheduler,
no API server; retries and ``retry_delay`` are honoured in-process. Restarting a task there
means relaunching the command, which is what the harness does after killing it.

Every Airflow command runs as an :class:`~harness.procs.OwnedProcess`. Task-instance
history is read from Airflow's own database afterwards, so tests assert what Airflow
recorded, not what we hoped.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.procs import OwnedProcess

__all__ = ["AIRFLOW_BIN", "DAGS_FOLDER", "AirflowHome"]

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"
AIRFLOW_BIN = Path(sys.executable).parent


class AirflowHome:
    """A private AIRFLOW_HOME with a migrated SQLite database.

    :param root: the folder to use (created).
    :param template: an already migrated ``airflow.db`` to copy instead of migrating
        (``airflow db migrate`` takes seconds; tests share one template).
    """

    def __init__(
        self, root: Path, template: Path | None = None, dags_folder: Path = DAGS_FOLDER
    ) -> None:
        self.root = root.resolve()  # Airflow refuses a relative SQLite path
        self.dags_folder = dags_folder
        self.root.mkdir(parents=True, exist_ok=True)
        if template is not None:
            shutil.copy(template, self.database)
        else:
            self.migrate()

    @property
    def database(self) -> Path:
        return self.root / "airflow.db"

    def env(
        self, overrides: dict[str, Any] | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of every Airflow command we run (plus ``extra`` settings)."""
        env = {
            **os.environ,
            # airflow spawns airflow
            "PATH": f"{AIRFLOW_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.database}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore",
            **(extra or {}),
        }
        if overrides:
            env["STREAMSTALL_TASK_OVERRIDES"] = json.dumps(overrides)
        return env

    def migrate(self) -> None:
        subprocess.run(
            [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=300,
        )

    def dags_test(
        self,
        dag_id: str,
        conf: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        log: Path | None = None,
    ) -> OwnedProcess:
        """Start ``airflow dags test <dag_id> -c <conf>``; its output goes to ``log``."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            return OwnedProcess(
                [str(AIRFLOW_BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)],
                env=self.env(overrides),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if log is not None:
                out.close()  # the child has its own descriptor

    def task_instances(self, dag_id: str) -> list[dict[str, Any]]:
        """Every try Airflow recorded for ``dag_id``: earlier tries from
        ``task_instance_history``, the latest from ``task_instance``."""
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        columns = "dag_id, run_id, task_id, try_number, state, start_date, end_date, hostname, pid"
        rows = []
        for table in ("task_instance_history", "task_instance"):
            rows += [
                dict(r)
                for r in db.execute(f"SELECT {columns} FROM {table} WHERE dag_id = ?", (dag_id,))
            ]
        db.close()
        return sorted(rows, key=lambda r: (r["run_id"], r["try_number"]))
