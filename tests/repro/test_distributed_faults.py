"""The faults only a distributed Airflow has, on the ``celery`` mode (PostgreSQL, Redis, the
CeleryExecutor, two Celery workers): each test asserts Airflow's recorded try states, which
worker ran each try (the probe's ``worker`` record), and what the ledger lost or repeated.

The subject is the article's naive loop (for ``move_worker``, its checkpoint variant): it
reads the live stream on every try, so what a fault costs is the time until a try reads
again. One harness run (one distributed Airflow) serves every test (``long``: ~7 min;
``nox -s "repro(3.3.2)"``). Airflow 3 with the celery extra only.
"""

from __future__ import annotations

import importlib.util
import json
import os
from importlib.metadata import version
from pathlib import Path

import pytest

from harness.airflow.modes.standalone_airflow import HEARTBEAT_TIMEOUT
from harness.airflow.postgres import bin_dir
from harness.procs import session_members
from tests.scenario_runs import ScenarioRun, airflow_time, run_scenarios

pytestmark = [
    pytest.mark.repro,
    pytest.mark.long,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not version("apache-airflow").startswith("3.")
        or importlib.util.find_spec("airflow.providers.celery") is None,
        reason="the celery mode needs Airflow 3 with its celery extra",
    ),
    pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server (apt install postgresql)"),
]

RATE = 500
#: How often a supervisor heartbeats ([workers] min_heartbeat_interval): the timeout runs
#: from the last heartbeat Airflow had, up to this long before the fault.
HEARTBEAT = 5.0
GRACE = 10.0  # worker_warm_shutdown's: docker stop's default
DOWN = 10.0  # restart_broker / restart_database
CUT = 30.0  # network_partition_worker: longer than the heartbeat timeout
WORKERS = {"w1", "w2"}

COMMON = (
    'seed = 41\nmode = "celery"\n'
    f"rate = {RATE}\n"
    'params = { cpu_us = 20, batch = 50, resume = "since_id" }\n'
    "task = { retries = 2, retry_delay = 1 }\n"
)
SCENARIOS = {
    "naive_loop-kill_celery_worker": 'variant = "naive_loop"\nduration = 40\n'
    'airflow_faults = [{ type = "kill_celery_worker", at = 2, restart_after = 5 }]',
    "naive_loop-worker_warm_shutdown": 'variant = "naive_loop"\nduration = 45\nairflow_faults = '
    f'[{{ type = "worker_warm_shutdown", at = 2, grace = {GRACE}, restart_after = 5 }}]',
    "naive_loop-restart_broker": 'variant = "naive_loop"\nduration = 20\n'
    f'airflow_faults = [{{ type = "restart_broker", at = 2, duration = {DOWN} }}]',
    "naive_loop-restart_database": 'variant = "naive_loop"\nduration = 20\n'
    f'airflow_faults = [{{ type = "restart_database", at = 2, duration = {DOWN} }}]',
    "naive_loop-network_partition_worker": 'variant = "naive_loop"\nduration = 50\n'
    f'airflow_faults = [{{ type = "network_partition_worker", at = 2, duration = {CUT} }}]',
    "checkpoint-move_worker": 'variant = "checkpoint"\nduration = 15\n'
    'airflow_faults = [{ type = "move_worker", at = 2 }]',
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # PostgreSQL runs as its own user: it must be able to enter the results folder.
    folder = tmp_path_factory.mktemp("distributed-faults")
    for parent in [folder, *folder.parents][:3]:
        parent.chmod(parent.stat().st_mode | 0o011)
    return run_scenarios(folder, {n: COMMON + body for n, body in SCENARIOS.items()})


def workers_of(run: ScenarioRun) -> dict[int, str]:
    """Try number -> the worker its probe says it ran on."""
    return {s["try"]: s["value"]["worker"] for s in run.task_starts()}


def lost_and_repeated(run: ScenarioRun) -> tuple[int, int]:
    queue = run.metrics["queue"]
    return queue["lost"], queue["duplicates"]


def test_a_killed_worker_loses_its_try_until_the_heartbeat_timeout(results):
    """The worker's container dies with the try. Airflow hears nothing: the try is failed
    only once its heartbeats are missed (the timeout, 20 s here), then retried on a worker
    the queue picks; the naive loop's retry reads live, so everything in between is lost."""
    run = ScenarioRun(results / "naive_loop-kill_celery_worker")
    start, stop = run.airflow_faults
    assert start["pid"] in start["killed"]  # the try went with its worker
    first, second = run.tries
    assert (first["state"], second["state"]) == ("failed", "success")
    noticed = airflow_time(first["end_date"]) - start["time"]
    assert HEARTBEAT_TIMEOUT - HEARTBEAT <= noticed <= HEARTBEAT_TIMEOUT + 15
    assert stop["restarted"] is not None
    ran_on = workers_of(run)
    assert ran_on[1] == start["worker"]
    assert ran_on[2] in WORKERS
    lost, repeated = lost_and_repeated(run)
    retried = airflow_time(second["start_date"])
    assert lost >= 0.8 * RATE * (retried - start["time"])
    assert repeated == 0


def test_a_warm_shutdown_hangs_until_the_deploy_tool_kills_the_worker(results):
    """SIGTERM to the Celery worker: its warm shutdown waits for the running task, and a
    stream never ends, so the worker hangs for the whole grace period while the try streams
    on (Celery does not pass the SIGTERM to it); the deploy tool's SIGKILL ends both, and
    Airflow fails the try after the heartbeat timeout."""
    run = ScenarioRun(results / "naive_loop-worker_warm_shutdown")
    start, stop = run.airflow_faults
    assert stop["exited_by_itself"] is False
    assert GRACE - 0.5 <= stop["hung_seconds"] <= GRACE + 2
    assert start["pid"] in stop["killed_after_grace"]
    during = [t for t in run.commit_times(start["pid"]) if start["time"] + 1 < t < stop["time"]]
    assert during, "the try streamed on through the warm shutdown"
    assert not [r for r in run.probe(start["pid"]) if r["f"] == "signal"]  # no SIGTERM for it
    first, second = run.tries
    assert (first["state"], second["state"]) == ("failed", "success")
    assert airflow_time(first["end_date"]) - stop["time"] >= HEARTBEAT_TIMEOUT - HEARTBEAT
    assert workers_of(run)[1] == start["worker"]
    lost, repeated = lost_and_repeated(run)
    assert lost > 0
    assert repeated == 0


@pytest.mark.parametrize("service", ["broker", "database"])
def test_a_running_try_streams_through_a_restart_of(results, service):
    """Redis or PostgreSQL down for 10 s: the running try does not depend on either (its
    supervisor talks to the API server), so nothing is lost or repeated and Airflow keeps
    one try. The database's outage ends the scheduler and the dag-processor (they exit,
    and the service manager starts them again): recorded in deployment.json."""
    run = ScenarioRun(results / f"naive_loop-restart_{service}")
    start, stop = run.airflow_faults
    assert DOWN - 0.5 <= stop["time"] - start["time"] <= DOWN + 5
    assert [t["state"] for t in run.tries] == ["success"]
    assert lost_and_repeated(run) == (0, 0)
    restarts = run.json("airflow/deployment.json")["restarts"]
    during = {r["component"] for r in restarts if start["time"] <= r["time"] <= stop["time"] + 5}
    if service == "database":
        assert {"scheduler", "dag-processor"} <= during
    else:
        assert during == set()


def test_a_partitioned_worker_is_given_up_and_its_retry_is_refused_by_x(results):
    """The try's worker cannot reach the API server for 30 s, longer than the heartbeat
    timeout: the scheduler fails the try and starts a retry on the other worker while the
    first still streams. X allows one connection: the retry gets 429, which the naive loop
    catches and returns, so Airflow records it a success. After the heal the first try's
    heartbeat is refused and its supervisor stops it (SIGTERM, SIGKILL 5 s later): from
    then on nothing reads, and Airflow shows nothing wrong (a silent failure)."""
    run = ScenarioRun(results / "naive_loop-network_partition_worker")
    start, stop = run.airflow_faults
    assert CUT - 0.5 <= stop["time"] - start["time"] <= CUT + 2
    first, second = run.tries
    assert (first["state"], second["state"]) == ("failed", "success")
    given_up = airflow_time(first["end_date"])
    assert HEARTBEAT_TIMEOUT - HEARTBEAT <= given_up - start["time"] <= CUT
    ran_on = workers_of(run)
    assert ran_on[1] == start["worker"]
    assert ran_on[2] in WORKERS
    orphan = run.commit_times(start["pid"])
    assert [t for t in orphan if given_up < t < stop["time"]], "given up, it streamed on"
    assert stop["time"] < orphan[-1] <= stop["time"] + HEARTBEAT_TIMEOUT  # stopped after heal
    assert "429 Client Error: Too Many Requests" in run.task_log(2)
    (retry,) = [s["pid"] for s in run.task_starts() if s["try"] == 2]
    assert run.committed_tweets(retry) == 0
    lost, repeated = lost_and_repeated(run)
    assert lost >= 0.8 * RATE * (run.json("run.json")["created_until"] - orphan[-1] - 1)
    assert repeated == 0
    assert run.metrics["silent_failure"] is True


def test_move_worker_runs_the_retry_on_the_other_worker_with_an_empty_disk(results):
    """The try is killed and its worker held off the queue: the retry runs on the other
    worker, whose scratch folder has no checkpoint, so it reads live: the gap is lost."""
    run = ScenarioRun(results / "checkpoint-move_worker")
    ran_on = workers_of(run)
    assert ran_on[1] != ran_on[2]
    assert {ran_on[1], ran_on[2]} == WORKERS
    assert [t["state"] for t in run.tries] == ["failed", "success"]
    scratch = run.root / "scratch"
    assert (scratch / ran_on[1] / "twitter_stream_state.json").exists()
    lost, repeated = lost_and_repeated(run)
    assert lost > 0
    assert repeated == 0


def test_nothing_is_left_behind(results):
    """Every process the run started (PostgreSQL, Redis, Airflow, the workers and what
    they started, restarts included) is gone, and the database folder is ours again."""
    started = [json.loads(line) for line in (results / "processes.jsonl").read_text().splitlines()]
    assert {Path(r["argv"][0]).name for r in started} >= {"postgres", "redis-server", "airflow"}
    assert [r for r in started if session_members(r["pid"])] == []
    assert (results / "airflow-celery" / "postgres" / "pgdata").stat().st_uid == os.getuid()
