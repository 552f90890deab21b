"""The ``external`` mode: the experiment against an Airflow someone else runs, through its
REST API only, with the tries' records in a PostgreSQL store.

"Someone else's Airflow" is a real Airflow 3 (API server, scheduler, dag-processor,
LocalExecutor) that this test deploys the variants to, with a password on its API (the
simple auth manager, not its all-admins mode). The harness is then run as a user runs it,
with only the environment to find that Airflow and the database; it starts no Airflow of
its own. ``long``: ~3 min (``nox -s "repro(3.3.2)"``). Airflow 3 only.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from harness.airflow.base import ModeError
from harness.airflow.home import AirflowHome
from harness.airflow.modes.standalone_airflow import StandaloneAirflow
from harness.airflow.postgres import PostgresServer, bin_dir
from harness.airflow.rest import AirflowRest
from tests.scenario_runs import ScenarioRun, airflow_time, run_scenarios

pytestmark = [
    pytest.mark.repro,
    pytest.mark.long,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        not version("apache-airflow").startswith("3."), reason="the external mode is Airflow 3's"
    ),
    pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server (apt install postgresql)"),
]

USER = "streamstall"
COMMON = 'mode = "external"\nseed = 5\nrate = 400\nparams = {cpu_us = 20}\n'
SCENARIOS = {
    "naive_loop-none": 'variant = "naive_loop"\nduration = 12',
    # The Clear's try streams on until its supervisor's heartbeat and SIGKILL (5-10 s), the
    # retry follows 2 s later: it must start well inside the run to be judged.
    "naive_loop-clear_task": (
        'variant = "naive_loop"\nduration = 20\nairflow_faults = [{type = "clear_task", at = 3}]'
    ),
    "exactly_once-mark_failed": (
        'variant = "exactly_once"\nduration = 12\nairflow_faults = [{type = "mark_failed", at = 3}]'
    ),
}


class PasswordedAirflow(StandaloneAirflow):
    """An Airflow whose API wants a user and password (the variants deployed under their
    own names, triggered-only, as a team would deploy ``dags/``)."""

    def __init__(self, root: Path, template: Path, password: str) -> None:
        self.password = password
        root.mkdir(parents=True)
        (root / "passwords.json").write_text(json.dumps({USER: password}))
        variants = ("naive_loop", "exactly_once")
        super().__init__(root, {v: {"variant": v, "task": {}} for v in variants}, template)

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{USER}:admin"
        passwords = str(self.home.root / "passwords.json")
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = passwords
        return env

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        if "Authorization" not in self._http.headers:  # the API may not be up yet
            token = AirflowRest.token(self.api_url, USER, self.password)
            self._http.headers["Authorization"] = f"Bearer {token}"
        return super().rest(method, path, **kwargs)


@pytest.fixture(scope="module")
def deployment() -> Iterator[dict[str, Any]]:
    """Someone else's Airflow and a database both it and the harness reach."""
    folder = Path(tempfile.mkdtemp(prefix="streamstall-external-"))
    folder.chmod(0o755)  # the postgres user enters it
    database = PostgresServer(folder / "pg")
    airflow = None
    try:
        template = AirflowHome(folder / "template").database
        password = secrets.token_urlsafe(12)
        airflow = PasswordedAirflow(folder / "their-airflow", template, password)
        yield {"airflow": airflow, "database": database, "folder": folder, "env": {
            "STREAMSTALL_AIRFLOW_URL": airflow.api_url,
            "STREAMSTALL_AIRFLOW_USERNAME": USER, "STREAMSTALL_AIRFLOW_PASSWORD": password,
            "STREAMSTALL_SINK_URL": database.url("postgres"),
        }}  # fmt: skip
    finally:
        if airflow is not None:
            airflow.stop()
        database.stop()
        shutil.rmtree(folder)


def lost_and_repeated(run: ScenarioRun) -> tuple[int, int]:
    queue = run.metrics["queue"]
    return queue["lost"], queue["duplicates"]


@pytest.fixture(scope="module")
def results(deployment: dict[str, Any]) -> Path:
    bodies = {name: f"{COMMON}{body}" for name, body in SCENARIOS.items()}
    folder = deployment["folder"] / "harness"
    folder.mkdir()
    return run_scenarios(folder, bodies, env=deployment["env"])


def test_the_api_refuses_a_caller_without_the_password(deployment):
    """The deployment really is passworded: what the harness did, it did with the token
    it exchanged for the user and password from the environment."""
    answer = requests.get(f"{deployment['airflow'].api_url}/api/v2/dags", timeout=30)
    assert answer.status_code == 401
    with pytest.raises(ModeError, match="401"):
        AirflowRest.token(deployment["airflow"].api_url, USER, "not-the-password")


def test_the_harness_started_no_airflow_and_left_nothing_in_theirs(deployment, results):
    assert not (results / "airflow-standalone").exists()  # nothing of ours ran Airflow
    airflow = deployment["airflow"]
    connections = airflow.rest("GET", "/connections")["connections"]
    assert [c["connection_id"] for c in connections] == ["streamstall_sink"]  # streams deleted
    with psycopg.connect(deployment["database"].url("postgres")) as db:
        schemas = db.execute(
            "SELECT schema_name FROM information_schema.schemata "
            "WHERE schema_name LIKE 'streamstall_%'"
        ).fetchall()
    assert schemas == []  # each run's store dropped once copied


def test_no_fault_every_tweet_reached_the_store_and_the_folder(results):
    run = ScenarioRun(results / "naive_loop-none")
    starts = run.task_starts()
    assert [s["value"]["store"] for s in starts] == ["postgresql"]
    assert [t["state"] for t in run.tries] == ["success"]  # ended by the stop request
    assert run.tries[0]["hostname"]  # as Airflow's API reports the try
    metrics = run.metrics
    assert metrics["verdict"] == "exactly-once", metrics.get("reason")
    assert lost_and_repeated(run) == (0, 0)
    assert metrics["queue"]["processed_unique"] >= 400 * 10


def test_clear_task_through_the_api_loses_the_gap_between_tries(results):
    """An operator's Clear: Airflow records the try ended at once, while its process
    streams on until the supervisor's next heartbeat and escalation (the naive loop ignores
    the SIGTERM: SIGKILL 5 s later); a new try reconnects "from now": what was created in
    between is lost (as on standalone)."""
    run = ScenarioRun(results / "naive_loop-clear_task")
    start, stop = run.airflow_faults
    assert (start["f"], start["action"], start["try_number"]) == ("start", "clear", 1)
    assert (stop["f"], stop["seen_by"], stop["ended"], stop["try_number"]) == (
        "stop", "airflow", True, 1
    )  # fmt: skip
    tries = run.tries
    assert [t["try_number"] for t in tries] == [1, 2], tries
    ended = airflow_time(tries[0]["end_date"])
    assert abs(stop["time"] - ended) < 1.0  # the stop is Airflow's recorded end
    assert abs(stop["time"] - start["time"]) < 1.0  # which it records at the Clear itself
    first_try_commits = [c for c, n in run.commit_tries() if n == 1]
    # The try committed on after it (until the supervisor's SIGKILL).
    assert max(first_try_commits) > stop["time"] + 3, (max(first_try_commits), stop)
    assert [s["try"] for s in run.task_starts()] == [1, 2]  # the retry came, and wrote too
    assert run.metrics["verdict"] == "at-most-once"
    lost, repeated = lost_and_repeated(run)
    assert lost > 0
    assert repeated == 0


def test_mark_failed_on_the_careful_variant_loses_nothing(results):
    """Marked failed, the run is over; the harness triggers the next run, as the
    ``@continuous`` schedule would, and it resumes at the last commit in the store."""
    run = ScenarioRun(results / "exactly_once-mark_failed")
    start, stop = run.airflow_faults
    assert start["state"] == "failed"
    assert stop["ended"] is True
    launches = run.json("launches.json")
    assert len(launches) >= 2
    assert run.tries[0]["state"] == "failed"
    assert run.metrics["verdict"] == "exactly-once", run.metrics.get("reason")
    assert lost_and_repeated(run) == (0, 0)
