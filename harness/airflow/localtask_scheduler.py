"""The scheduler's part for the ``localtask`` mode's one DAG run, in a short process of its
own that imports Airflow 2.x (the harness itself never does).

``python -m harness.airflow.localtask_scheduler trigger|schedule [...] DAG_ID RUN_ID``
syncs the DAG file to the database and triggers the run with the scenario's conf (what
``airflow dags reserialize`` and ``airflow dags trigger`` do), or makes the scheduler's
decisions for that run before a try (``DagRun.update_state`` and ``schedule_tis``), and
prints the DAG run's state and how many task instances it queued, as JSON.

``clear`` and ``mark --state S`` do what the 2.x UI's Clear and Mark as do (the
webserver's ``_clear_dag_tis`` and the REST API's ``patch_task_instance``), with no
webserver (``localtask`` has none); they print when the change was committed.
"""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["main"]

_FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")


def _trigger(dag_id: str, run_id: str, conf: dict[str, Any], dag_file: str) -> None:
    """What ``airflow dags reserialize -S <file>`` and ``airflow dags trigger`` do."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=dag_file, include_examples=False)
    if bag.import_errors:
        raise SystemExit(f"{dag_file}: {bag.import_errors}")
    bag.sync_to_db()
    trigger_dag(dag_id, run_id=run_id, conf=conf)


def _schedule(dag_id: str, run_id: str, wait: float) -> dict[str, Any]:
    """One DAG run's share of the 2.x scheduler loop, until it queues a try or the run is
    over: a try still ``running`` whose ``LocalTaskJob`` is over, or has not heartbeat
    for ``scheduler_zombie_task_threshold`` (it was killed), is a zombie (the scheduler's
    ``_find_zombies``), failed with ``handle_failure`` (what the zombie check has the DAG
    processor do: up for retry or failed); a queued run starts running; ``update_state``
    + ``schedule_tis`` pick the ready task (retry delay passed) and raise its try number;
    the task instance is queued (as the scheduler does before handing it to an
    executor)."""
    from datetime import timedelta

    from airflow.configuration import conf
    from airflow.jobs.job import Job
    from airflow.models.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, JobState, TaskInstanceState
    from sqlalchemy import select, update

    bag = DagBag(read_dags_from_db=True)
    threshold = timedelta(seconds=conf.getint("scheduler", "scheduler_zombie_task_threshold"))
    deadline = time.monotonic() + wait
    while True:
        with create_session() as session:
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            ).one()
            run.dag = bag.get_dag(dag_id, session=session)
            for ti in run.get_task_instances(state=[TaskInstanceState.RUNNING], session=session):
                job = session.get(Job, ti.job_id) if ti.job_id is not None else None
                silent = job is not None and job.latest_heartbeat < timezone.utcnow() - threshold
                if job is None or job.state != JobState.RUNNING or silent:
                    ti.refresh_from_task(run.dag.get_task(ti.task_id))
                    ti.handle_failure(
                        error=f"zombie: LocalTaskJob {ti.job_id} is over", session=session
                    )
            if run.state == DagRunState.QUEUED:
                run.state = DagRunState.RUNNING
                run.start_date = timezone.utcnow()
            schedulable, _ = run.update_state(session=session, execute_callbacks=False)
            run.schedule_tis(schedulable, session)
            queued = session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.state == TaskInstanceState.SCHEDULED,
                )
                .values(state=TaskInstanceState.QUEUED, queued_dttm=timezone.utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
            run_state = str(run.state)
        if queued or run_state in _FINISHED or time.monotonic() >= deadline:
            return {"run_state": run_state, "queued": queued}
        time.sleep(0.5)


def _clear(dag_id: str, run_id: str, task_id: str) -> None:
    """The UI's Clear of one task instance, confirmed (``www/views.py``,
    ``_clear_dag_tis``): ``DAG.clear`` in one session, the DAG run queued again. A running
    try becomes ``restarting`` and its ``LocalTaskJob`` is told to stop."""
    from airflow.models.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bag = DagBag(read_dags_from_db=True)
    with create_session() as session:
        dag = bag.get_dag(dag_id, session=session)
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one()
        dag.clear(
            task_ids=[task_id], start_date=run.logical_date, end_date=run.logical_date,
            only_failed=False, session=session,
        )  # fmt: skip


def _mark(dag_id: str, run_id: str, task_id: str, state: str) -> None:
    """``PATCH /dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}`` with
    ``new_state``: ``DAG.set_task_instance_state``."""
    from airflow.models.dagbag import DagBag
    from airflow.utils.session import create_session

    bag = DagBag(read_dags_from_db=True)
    with create_session() as session:
        dag = bag.get_dag(dag_id, session=session)
        dag.set_task_instance_state(
            task_id=task_id, run_id=run_id, state=state, upstream=False, downstream=False,
            future=False, past=False, commit=True, session=session,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Trigger or schedule; print the DAG run's state and how many tries were queued."""
    import argparse

    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m harness.airflow.localtask_scheduler"
    )
    parser.add_argument("action", choices=["trigger", "schedule", "clear", "mark"])
    parser.add_argument("dag_id")
    parser.add_argument("run_id")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--dag-file")
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--state", choices=["failed", "success"])
    parser.add_argument("--task-id", default="stream")
    args = parser.parse_args(argv)
    # task_instance_note.user_id refers to FAB's ab_user: Airflow's own components have
    # that model loaded (by the auth manager); without it, SQLAlchemy cannot flush a TI.
    import airflow.providers.fab.auth_manager.models  # noqa: F401

    if args.action in ("clear", "mark"):
        if args.action == "clear":
            _clear(args.dag_id, args.run_id, args.task_id)
        else:
            _mark(args.dag_id, args.run_id, args.task_id, args.state)
        print(json.dumps({"at": time.time()}), flush=True)
        return
    if args.action == "trigger":
        _trigger(args.dag_id, args.run_id, json.loads(args.conf), args.dag_file)
    print(json.dumps(_schedule(args.dag_id, args.run_id, args.wait)), flush=True)


if __name__ == "__main__":
    main()
