"""Run one scenario: stream + Airflow + nemesis -> its run folder -> metrics.

The steps (harness/README.md, "A run", has the why of each): the fake stream and an empty
sink first, with the variant's services; then the task on the scenario's Airflow mode and
the nemesis; ``duration`` seconds of stream after the first commit; then the stream stops
creating tweets and the run ends on the ledger, not a clock (:mod:`harness.run.ending`);
then Airflow's records, ``run.json``, and the check with the hypothesis judged. Everything
started is an :class:`~harness.procs.OwnedProcess`; a run interrupted by SIGINT/SIGTERM
stops it all.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.airflow.base import DagSpec, StreamConnection, TaskHandle, TaskSpec
from harness.airflow.modes import Airflows
from harness.airflow.user_dag import UserDagError, inspect
from harness.check.history import RunError
from harness.check.metrics import check_run
from harness.layout import RunLayout
from harness.nemesis import Nemesis
from harness.run.cost import CostMeter, run_processes
from harness.run.ending import Ending, await_end, cap_seconds, request_stop, stop_creating
from harness.run.jobs import Slot
from harness.run.progress import SinkWatch, TryWatch
from harness.run.services import StreamServerProcess, queue_for
from harness.run.sink_query import SinkQuery
from harness.scenario import Scenario, ScenarioError
from harness.task.probe import create_sink
from harness.task.variants import PARAMS, VARIANTS

__all__ = ["Status", "check_dags", "dag_spec", "run_scenario"]

FIRST_COMMIT_TIMEOUT = 90.0  # seconds: Airflow start-up on a loaded 2-core machine
#: Seconds a DAG you brought may read the stream without reporting a commit before the run
#: goes on without one (it may never call the probe: "no commits observed").
SILENT_READER = 10.0


@dataclass
class Status:
    """What a live display shows about the scenario running now."""

    scenario: str = ""
    phase: str = ""
    started: float = 0.0
    committed: int = 0
    faults_fired: int = 0


def dag_spec(scenario: Scenario) -> DagSpec:
    """What Airflow must know of the scenario's DAG, the variant's (or the DAG file's)
    defaults filled in."""
    task = scenario.task.model_dump(exclude_none=True)  # the settings the scenario gives
    if scenario.dag_file is not None:
        facts = inspect(Path(scenario.dag_file), str(scenario.dag_id), str(scenario.task_id))
        return DagSpec(
            name=scenario.name,
            mode=scenario.mode,
            variant="",
            task=task,
            retries=int(task.get("retries", facts.retries)),
            retry_delay=float(task.get("retry_delay", facts.retry_delay)),
            continuous=facts.continuous,
            description=scenario.description,
            dag_file=scenario.dag_file,
            dag_id=scenario.dag_id,
            task_id=str(scenario.task_id),
        )
    variant = VARIANTS[str(scenario.variant)]
    defaults = variant.task
    retries = int(task.get("retries", defaults.get("retries", 0)) or 0)
    delay = task.get("retry_delay")
    if delay is None:
        delay = defaults["retry_delay"].total_seconds() if "retry_delay" in defaults else 1.0
    return DagSpec(
        name=scenario.name,
        mode=scenario.mode,
        variant=variant.name,
        task=task,
        retries=retries,
        retry_delay=float(delay),
        continuous=variant.dag.get("schedule") == "@continuous",
        scheduled=variant.scheduled,
        description=scenario.description,
    )


def check_dags(scenarios: list[Scenario]) -> None:
    """Before anything starts: every DAG file parses with the DAG and task it is run for,
    and one DAG run in several scenarios gets the same file and retries;
    :class:`ScenarioError` otherwise."""
    settings: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for scenario in scenarios:
        if scenario.dag_file is None:
            continue
        try:
            spec = dag_spec(scenario)
        except UserDagError as e:
            raise ScenarioError(f"{scenario.name}: dag_file: {e}") from None
        scheduled = {k: v for k, v in spec.task.items() if k in ("retries", "retry_delay")}
        first = settings.setdefault(str(spec.dag_id), (str(spec.dag_file), scheduled))
        if first != (spec.dag_file, scheduled):
            raise ScenarioError(
                f"{scenario.name}: dag_id {spec.dag_id!r} is run by another scenario with "
                f"another file or other [task] retries ({first}): the scheduler keeps what it "
                "parsed first; run them in separate `harness run` calls"
            )


def _server_args(scenario: Scenario) -> list[str]:
    args = ["--seed", str(scenario.seed), "--profile", json.dumps(scenario.rate)]
    for key, value in scenario.server.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    for fault in scenario.stream_faults:
        args += ["--fault", json.dumps(fault)]
    return args


def resume_conf(server: dict[str, Any]) -> dict[str, Any]:
    """How the careful variants resume on this scenario's stream (a scenario's ``params``
    can still say otherwise): as X's access level allows on a strict-X stream, at its
    ``backfill_scale``; with ``since_id`` on one with our extensions."""
    scale = float(server.get("backfill_scale", 1.0))
    if not server.get("strict_x"):
        return {"resume": "since_id", "backfill_scale": scale}
    level = server.get("access_level", "enterprise")
    return {"resume": "recovery" if level == "enterprise" else "live", "backfill_scale": scale}


def _settled(
    dag: DagSpec, task: TaskHandle, tries: TryWatch, ending: Ending
) -> Callable[[], bool] | None:
    """When a variant whose runs Airflow starts has settled: a poller once a run that
    began after the stream stopped creating has finished; an event-driven DAG once no run
    is queued or running (its queue, drained, says every tweet was published)."""
    if not dag.scheduled:
        return None
    if VARIANTS[dag.variant].watched:
        return lambda: not tries.running() and task.idle()
    return lambda: tries.finished_since(ending.created_until)


def _sink_query(scenario: Scenario, home: Path | None, layout: RunLayout) -> SinkQuery | None:
    """The reader of the user's own sink, if the scenario has one."""
    if scenario.sink_query is None:
        return None
    database = scenario.sink_query.database.replace("{airflow_home}", str(home or ""))
    return SinkQuery(Path(database), scenario.sink_query.query, layout.sink)


def run_scenario(
    scenario: Scenario,
    out: Path,
    airflows: Airflows,
    status: Status | None = None,
    slot: Slot | None = None,
) -> dict[str, Any]:
    """Run one scenario into ``out/<name>`` on ``airflows.get(scenario.mode)`` (in
    ``slot``, beside other scenarios); return its metrics (with the hypothesis judged)."""
    status = status or Status()
    status.scenario, status.started, status.phase = scenario.name, time.time(), "starting"
    layout = RunLayout(out / scenario.name)
    if layout.root.exists():
        shutil.rmtree(layout.root)
    layout.root.mkdir(parents=True)
    layout.scenario.write_text(scenario.model_dump_json(indent=2, by_alias=True))
    mode = airflows.get(scenario.mode)  # a shared Airflow starts before our clock does
    meter = CostMeter(layout.probe_dir, lambda: run_processes(layout.root), mode.processes)
    meter.start()
    began = time.time()
    with contextlib.ExitStack() as running:  # stopped in reverse: nemesis, task, services
        running.callback(meter.stop)  # already stopped, unless the run raised
        host = mode.stream_host  # another: the user chose it (external mode), it warns
        where = [] if host == "127.0.0.1" else ["--host", host, "--allow-remote"]
        server = StreamServerProcess(layout.ledger, [*_server_args(scenario), *where])
        running.callback(server.stop)
        create_sink(layout.sink)
        if scenario.variant is None:  # a DAG you bring: it reads its own connection
            connection = StreamConnection(scenario.connection, server.url, server.token)
            conf: dict[str, Any] = {}
        else:
            connection = StreamConnection(f"x_stream.{scenario.name}", server.url, server.token)
            conf = {
                "stream_conn_id": connection.conn_id,  # the token is in the connection only
                "run_dir": str(layout.root),
                "scratch_dir": str(layout.root / "scratch" / "worker-1"),
                "run_seconds": None,
                **resume_conf(scenario.server),
                **scenario.params,
            }
        queue_drained: Callable[[str | None], bool] | None = None
        if scenario.variant is not None and VARIANTS[scenario.variant].queue:
            how = (conf["resume"], conf["backfill_scale"])
            publish = (
                int(conf.get("batch", PARAMS["batch"]))
                if VARIANTS[scenario.variant].watched
                else None
            )
            queue = queue_for(layout, server, *how, publish_batch=publish)
            queue_conf, queue_drained = running.enter_context(queue)
            conf.update(queue_conf)
        progress = SinkWatch(layout.sink)
        running.callback(progress.close)
        dag = dag_spec(scenario)
        reader = _sink_query(scenario, mode.home, layout)
        if reader is not None:
            reader.start()
            running.callback(reader.stop)  # after the task stopped: the last read
        task = mode.start(TaskSpec(dag, layout, conf, connection, reader is None))
        running.callback(task.stop)
        task_started = time.time()
        nemesis = Nemesis(
            scenario.airflow_faults, task, progress, layout.airflow_faults, mode.capabilities
        )
        running.callback(nemesis.stop)
        nemesis.start()
        status.phase = "waiting for the first commit"
        deadline = time.monotonic() + FIRST_COMMIT_TIMEOUT
        reading_since: float | None = None
        # Every try ended before a first commit and none will follow (seen for a second:
        # a try killed a moment ago is not yet replaced): no stream time to wait for.
        over, ended_since = False, None
        while progress.first_commit_at() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            ended_since = (ended_since or time.monotonic()) if task.ended() else None
            if over := ended_since is not None and time.monotonic() - ended_since >= 1.0:
                break
            if scenario.dag_file is not None:  # it may never report one: see it read
                reading = bool(server.control("GET", "stats")["connections"])
                reading_since = (reading_since or time.monotonic()) if reading else None
                if reading_since and time.monotonic() - reading_since > SILENT_READER:
                    break
        status.phase = "streaming"
        first_commit = progress.first_commit_at()
        end = (first_commit or time.time()) + (0 if over else scenario.duration)
        while time.time() < end:
            status.committed = progress.committed()
            status.faults_fired = nemesis.fired()
            time.sleep(0.25)
        status.phase = "ending: until the ledger is quiet"
        startup = (first_commit or time.time()) - progress.started_at
        cap = cap_seconds(dag, scenario.duration, startup, mode.heartbeat_timeout)
        ending = Ending(created_until=stop_creating(server), cap_seconds=round(cap, 1))
        tries = TryWatch(layout.probe_dir)
        await_end(
            ending, server, task, progress, tries, queue_drained, _settled(dag, task, tries, ending)
        )
        status.phase = "ending: the stop request"
        request_stop(ending, layout.stop_request, server, task)
        if ending.task_ended_by == "harness":
            task.stop()  # it ignored the request
        ending.ended_at = time.time()
        stopped_at = time.time()
        cost = meter.stop()
        server.stop()
    status.phase = "checking"
    task.record()
    # Where the scenario's time went, in seconds (scenarios/README.md, "Side by side").
    cost["phases_s"] = {
        "start": round(task_started - began, 2),
        "first_commit": round((first_commit or task_started) - task_started, 2),
        "stream": round(ending.created_until - (first_commit or task_started), 2),
        "end": round(stopped_at - ending.created_until, 2),
    }
    record = {
        "started_at": progress.started_at, "first_commit_at": first_commit,
        "created_until": ending.created_until, "stopped_at": stopped_at, "grace": 0.0,
        "ending": ending.to_json(), "mode": scenario.mode, "seed": scenario.seed,
        "jobs": (slot or Slot(1, None, ())).to_json(), "cost": cost,
    }  # fmt: skip
    layout.run.write_text(json.dumps(record, indent=2))
    checking = time.time()
    try:
        metrics = check_run(layout.root)
    except RunError as e:
        return {"error": str(e), "hypothesis": {"held": False, "results": []}}
    cost["phases_s"]["check"] = round(time.time() - checking, 2)
    cost["wall_s"] = round(time.time() - began, 2)
    layout.run.write_text(json.dumps(record, indent=2))  # the check's time too
    return metrics
