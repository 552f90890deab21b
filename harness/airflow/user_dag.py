"""A DAG you bring: checked before anything starts, run under Airflow's own cluster policy.

:func:`inspect` parses the file with Airflow (a subprocess: the harness does not import
Airflow) and answers with the task's settings, or Airflow's own message for a file that does
not import, a DAG id it does not define or a task id the DAG lacks.

:func:`write_policy` puts ``airflow_local_settings.py`` into an Airflow home's ``config/``
(on Airflow's ``sys.path``): a cluster policy, as platform teams use to enforce timeouts,
that applies each scenario's task settings (``[task]``: ``execution_timeout``, ``retries``,
``retry_delay``; the scheduler keeps the retries of its first parse, so those must agree
across a run's scenarios) to the DAG's task, makes the DAG triggered-only (the harness plays
a ``@continuous`` schedule, as for its own variants) and records the probe's start when a
try begins (``on_execute_callback``), so a fault can find the try before its first commit.
The DAG file itself is copied unchanged.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DagFacts", "UserDagError", "inspect", "write_policy"]

INSPECT_TIMEOUT = 120.0  # seconds: importing Airflow and the file on a loaded 2-core machine


class UserDagError(ValueError):
    """The DAG file cannot be run as the scenario says (the message is Airflow's or ours)."""


@dataclass(frozen=True)
class DagFacts:
    """What Airflow parsed: the DAG's id, the task's retries and retry delay (s), its
    execution timeout (s, None: none), and the DAG's schedule (``None``, ``"@continuous"``)."""

    dag_id: str
    retries: int
    retry_delay: float
    execution_timeout: float | None
    schedule: str | None

    @property
    def continuous(self) -> bool:
        return self.schedule == "@continuous"


@functools.cache
def _inspect(file: str, mtime: float, dag_id: str, task_id: str) -> DagFacts:
    with tempfile.TemporaryDirectory(prefix="streamstall-inspect-") as home:
        env = {"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"}  # fmt: skip
        argv = [sys.executable, "-m", __name__, file, dag_id, task_id]
        try:
            done = subprocess.run(
                argv, env={**_base_env(), **env}, capture_output=True, text=True,
                timeout=INSPECT_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise UserDagError(
                f"{file}: Airflow did not parse it in {INSPECT_TIMEOUT:.0f} s"
            ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise UserDagError(
            f"{file}: could not be parsed (exit {done.returncode}): {done.stderr[-800:]}"
        )
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise UserDagError(f"{file}: {answer['error']}")
    return DagFacts(**answer)


def inspect(file: Path, dag_id: str, task_id: str) -> DagFacts:
    """Parse ``file`` with Airflow; its task's settings, or :class:`UserDagError`.
    ``dag_id`` ``""``: the file's only DAG."""
    if not file.is_file():
        raise UserDagError(f"{file}: no such file")
    return _inspect(str(file.resolve()), file.stat().st_mtime, dag_id, task_id)


def _base_env() -> dict[str, str]:
    """This environment without Airflow's settings (the parse gets a home of its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}


_POLICY = '''"""Written by streamstall (harness/airflow/user_dag.py): the cluster policy for
the DAGs you brought: their task settings, triggered-only, the probe's start record."""

import datetime as dt
import json
from pathlib import Path

_SECONDS = ("execution_timeout", "retry_delay")


def _dags():
    # Read at each parse: a worker parses the file when a try starts, so a scenario's
    # execution_timeout, written just before it is triggered, applies to its tries.
    return json.loads(Path(__file__).with_name("streamstall_dags.json").read_text())


def _record_start(context):
    import streamstall_probe

    streamstall_probe.started()


def dag_policy(dag):
    if dag.dag_id in _dags():
        from airflow.timetables.simple import NullTimetable

        dag.timetable = NullTimetable()  # the harness triggers every run, with its own timing


def task_policy(task):
    entry = _dags().get(task.dag_id)
    if entry is None or task.task_id != entry["task_id"]:
        return
    for key, value in entry["task"].items():
        setattr(task, key, dt.timedelta(seconds=value) if key in _SECONDS else value)
    callbacks = task.on_execute_callback
    if callbacks is None:
        callbacks = []
    elif not isinstance(callbacks, list):
        callbacks = [callbacks]
    task.on_execute_callback = [_record_start, *callbacks]
'''


def write_policy(config: Path, dags: dict[str, dict[str, Any]]) -> None:
    """The cluster policy for ``dags`` (``{dag_id: {"task_id", "task": {setting: value}}}``)
    into ``config`` (an Airflow home's ``config/``); call again to change the settings
    (the scheduler's copy keeps the retries it parsed first)."""
    config.mkdir(parents=True, exist_ok=True)
    partial = config / "streamstall_dags.json.partial"
    partial.write_text(json.dumps(dags, indent=2))
    partial.replace(config / "streamstall_dags.json")  # a parse reads the old or the new
    (config / "airflow_local_settings.py").write_text(_POLICY)


def _main(file: str, dag_id: str, task_id: str) -> dict[str, Any]:
    """Parse ``file`` as Airflow does; its task's facts or ``{"error": message}``."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=file, safe_mode=False)  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES
    if bag.import_errors:
        return {"error": "Airflow cannot import it:\n" + "\n".join(bag.import_errors.values())}
    found = ", ".join(sorted(bag.dags)) or "none"
    if not dag_id and len(bag.dags) != 1:
        return {"error": f"defines {len(bag.dags)} DAGs ({found}): say which (dag_id)"}
    dag = bag.dags.get(dag_id) if dag_id else next(iter(bag.dags.values()))
    if dag is None:
        return {"error": f"defines no DAG {dag_id!r} (DAGs it defines: {found})"}
    task = dag.task_dict.get(task_id)
    if task is None:
        return {"error": f"DAG {dag_id!r} has no task {task_id!r} (its tasks: "
                f"{', '.join(sorted(dag.task_dict))})"}  # fmt: skip
    timeout = task.execution_timeout
    schedule = getattr(dag, "schedule", None)
    return {
        "dag_id": dag.dag_id,
        "retries": int(task.retries or 0),
        "retry_delay": float(task.retry_delay.total_seconds()),
        "execution_timeout": None if timeout is None else float(timeout.total_seconds()),
        "schedule": None if schedule is None else str(schedule),
    }


if __name__ == "__main__":
    print(json.dumps(_main(*sys.argv[1:4])))
