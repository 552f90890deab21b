"""A DAG you bring (docs/your-own-dag.md): the probe, the checks before a run, and the
examples under faults on standalone Airflow, counted against their own sink tables.

The independent count reads the example's own table (``$AIRFLOW_HOME/examples/
tweets.sqlite``, rows of this scenario's DAG runs) and the server's ledger, and must give
the checker's lost and duplicate counts exactly; the probe's ``commits`` must hold as many
tweets as that table.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import streamstall_probe
from fake_stream.ledger import LedgerReader
from harness.run.services import StreamServerProcess
from tests.scenario_runs import ScenarioRun, run_scenarios

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: A DAG whose task streams but never calls ``committed``.
SILENT_DAG = """
import datetime as dt

import requests
from airflow.sdk import BaseHook, dag, task


@dag(schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False)
def silent():
    @task(retries=0)
    def stream():
        connection = BaseHook.get_connection("x_stream")
        url = connection.host + "/2/tweets/search/stream"
        headers = {"Authorization": f"Bearer {connection.password}"}
        with requests.get(url, headers=headers, stream=True, timeout=30) as response:
            for _ in response.iter_lines():
                pass

    stream()


silent()
"""


def _harness(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd, check=False,
    )  # fmt: skip


# The probe ----------------------------------------------------------------------------------


def test_the_probe_does_nothing_outside_a_harness_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(streamstall_probe.RUNS_ENV, raising=False)
    streamstall_probe.started()
    streamstall_probe.committed([1, 2, 3])
    monkeypatch.setenv(streamstall_probe.RUNS_ENV, str(tmp_path))  # but no Airflow task
    streamstall_probe.committed([4])
    assert list(tmp_path.iterdir()) == []


def test_the_variants_sink_is_the_probes():
    """One schema for both writers of a run's sink (the checker reads either)."""
    from harness.task import probe

    assert probe.SINK_SCHEMA is streamstall_probe.SINK_SCHEMA


def test_redirect_sends_calls_for_x_to_the_fake(server: StreamServerProcess):
    """A session's requests to api.twitter.com and api.x.com reach the fake (bytes on the
    wire: the fake's rules answer), other hosts are untouched."""
    session = streamstall_probe.redirect_x_api(requests.Session(), server.url)
    for host in streamstall_probe.X_HOSTS:
        response = session.get(f"{host}/2/tweets/search/stream/rules", headers=server.headers)
        assert response.status_code == 200, response.text
        assert "meta" in response.json()
    assert not session.adapters["https://"].__class__.__name__.startswith("_To")
    same = requests.Session()
    assert streamstall_probe.redirect_x_api(same, "https://api.x.com/") is same
    assert set(same.adapters) == {"https://", "http://"}


def test_a_proxy_variable_cannot_send_x_calls_to_the_fake(server, monkeypatch):
    """Why the docs ask for one line instead of no change: with ``HTTPS_PROXY`` set to the
    fake, clients open a CONNECT tunnel to api.twitter.com:443 for TLS, which the fake
    cannot answer on X's behalf (docs/your-own-dag.md)."""
    import httpx

    monkeypatch.setenv("HTTPS_PROXY", server.url)
    url = "https://api.twitter.com/2/tweets/search/stream/rules"
    with pytest.raises(requests.exceptions.ProxyError, match="Tunnel connection failed"):
        requests.get(url, headers=server.headers, timeout=5)
    with pytest.raises(httpx.ProxyError):
        httpx.get(url, headers=server.headers, timeout=5)


# Checks before anything starts ----------------------------------------------------------------


@pytest.mark.slow
def test_a_dag_that_does_not_parse_is_refused_with_airflows_message(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from airflow.sdk import dag\n\ndef stream(:\n    pass\n")
    out = tmp_path / "out"
    done = _harness("--dag", str(broken), "--task", "stream", "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert "SyntaxError" in done.stderr
    assert "broken.py" in done.stderr
    assert not out.exists()  # nothing started, nothing written


@pytest.mark.slow
def test_a_missing_task_or_dag_is_refused_naming_what_is_there(tmp_path):
    example = str(EXAMPLES / "requests_loop.py")
    done = _harness("--dag", example, "--task", "nope", "--out", str(tmp_path / "a"))
    assert done.returncode == 2
    assert "has no task 'nope' (its tasks: stream)" in done.stderr
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        f'name = "x"\ndag_file = "{example}"\ndag_id = "other"\ntask_id = "stream"\n'
        'mode = "standalone"\n'
    )
    done = _harness(str(scenario), "--out", str(tmp_path / "b"))
    assert done.returncode == 2
    assert "defines no DAG 'other' (DAGs it defines: requests_loop)" in done.stderr
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('dag_file = "d.py"\ntask_id = "t"\nmode = "standalone"', "dag_file needs dag_id"),
        ('dag_file = "d.py"\ndag_id = "d"\ntask_id = "t"', "runs in mode 'celery' or 'standalone'"),
        ('variant = "naive_loop"\ndag_file = "d.py"', "give either variant or dag_file"),
        ('mode = "standalone"', "give either variant or dag_file"),
        (
            'variant = "naive_loop"\n[sink_query]\ndatabase = "x"\nquery = "select 1"',
            "sink_query is for a DAG you bring",
        ),
        (
            'dag_file = "d.py"\ndag_id = "d"\ntask_id = "t"\nmode = "standalone"\n'
            '[sink_query]\ndatabase = "x"\nquery = "delete from tweets"',
            "sink_query.query: String should match pattern",
        ),
    ],
)
def test_a_scenario_names_a_variant_or_a_dag_file_with_its_ids(tmp_path, body, message):
    scenario = tmp_path / "s.toml"
    scenario.write_text(f'name = "x"\n{body}\n')
    done = _harness("--dry-run", str(scenario))
    assert done.returncode == 2
    assert message in done.stderr
    assert str(scenario) in done.stderr


@pytest.mark.slow
def test_run_dag_makes_one_scenario_per_fault(tmp_path):
    example = str(EXAMPLES / "requests_loop.py")
    done = _harness("--dag", example, "--task", "stream", "--faults", "none,timeout,kill_task",
                    "--dry-run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[:-1]]
    assert names == ["requests_loop-none", "requests_loop-timeout", "requests_loop-kill_task"]
    done = _harness(  # with its dag id: refused before Airflow parses the file
        "--dag", example, "--dag-id", "requests_loop", "--task", "stream", "--faults",
        "kill_tsak", "--dry-run",
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown fault 'kill_tsak'" in done.stderr
    done = _harness("--dag", example, "--dry-run")
    assert done.returncode == 2
    assert "--task" in done.stderr


# The examples under faults ---------------------------------------------------------------------


def independent_count(run: ScenarioRun, sink: Path) -> dict[str, int]:
    """Lost and duplicates from the example's own table and the ledger, by this test's
    own code (the window's bounds are the checker's definition, read from metrics.json)."""
    run_ids = [launch["run_id"] for launch in run.json("launches.json")]
    db = sqlite3.connect(sink)
    marks = ",".join("?" * len(run_ids))
    rows = [
        r[0] for r in db.execute(f"SELECT tweet_id FROM tweets WHERE run_id IN ({marks})", run_ids)
    ]
    db.close()
    books = LedgerReader(run.root / "ledger.sqlite")
    window = run.metrics["window"]
    created = books.ids_of(np.arange(window["first_index"], window["stop_index"], dtype=np.int64))
    kept = set(rows)
    return {
        "rows": len(rows),
        "lost": len(set(created.tolist()) - kept),
        "duplicates": len(rows) - len(kept),
    }


def probe_commits(run: ScenarioRun) -> int:
    db = sqlite3.connect(run.root / "sink.sqlite")
    try:
        return int(db.execute("SELECT coalesce(sum(count), 0) FROM commits").fetchone()[0])
    finally:
        db.close()


def check_example(out: Path, name: str) -> tuple[ScenarioRun, dict[str, Any]]:
    """The checker's counts for scenario ``name`` equal the independent ones."""
    run = ScenarioRun(out / name)
    queue = run.metrics["queue"]
    ending = run.json("run.json")["ending"]
    assert (ending["how"], ending["task_ended_by"]) == ("quiescent", "airflow")
    counted = independent_count(run, out / "airflow-standalone" / "examples" / "tweets.sqlite")
    assert counted["rows"] > 0
    assert probe_commits(run) == counted["rows"]
    assert (queue["lost"], queue["duplicates"]) == (counted["lost"], counted["duplicates"])
    assert queue["pending_at_cut"] == 0
    return run, queue


def no_token_in_airflow(out: Path) -> None:
    """No scenario's bearer token in any DAG run's conf or anywhere in Airflow's database."""
    tokens = [p.read_text().strip() for p in out.glob("*/ledger.token")]
    assert tokens
    db = sqlite3.connect(out / "airflow-standalone" / "airflow.db")
    try:
        dump = "\n".join(db.iterdump())
        confs = [r[0] for r in db.execute("SELECT conf FROM dag_run")]
    finally:
        db.close()
    assert confs
    for token in tokens:
        assert token not in dump
        assert all(token not in str(conf) for conf in confs)


#: A ``sink_query`` over the examples' own table: no probe commits, the harness reads it.
QUERY = (
    '[sink_query]\ndatabase = "{airflow_home}/examples/tweets.sqlite"\n'
    'query = "select tweet_id from tweets"\n'
)


def _scenario(example: str, body: str) -> str:
    return (
        f'dag_file = "{EXAMPLES / example}.py"\ndag_id = "{example}"\ntask_id = "stream"\n'
        f'mode = "standalone"\nseed = 18\nduration = 8\nrate = 200\n{body}'
    )


@pytest.mark.long
@pytest.mark.timeout(900)
def test_the_tweepy_example_counted_against_its_own_table(tmp_path):
    """kill_task, clear_task and an execution_timeout on examples/tweepy_stream.py, the
    requests loop read back by a sink query, and a DAG that never reports a commit, in one
    standalone Airflow (``long``, ~2.5 min: ``nox -s examples`` runs it)."""
    silent = tmp_path / "silent.py"
    silent.write_text(SILENT_DAG)
    kill = '[[airflow_faults]]\ntype = "kill_task"\nat = 5\n'
    clear = '[[airflow_faults]]\ntype = "clear_task"\nat = 5\n'
    out = run_scenarios(
        tmp_path,
        {
            "tweepy-kill": _scenario("tweepy_stream", kill),
            "tweepy-clear": _scenario("tweepy_stream", clear),
            "tweepy-timeout": _scenario("tweepy_stream", "[task]\nexecution_timeout = 6\n"),
            "silent": f'dag_file = "{silent}"\ndag_id = "silent"\ntask_id = "stream"\n'
            'mode = "standalone"\nduration = 3\nrate = 100\n',
            # The same table read by the harness's query, the probe's commits not recorded.
            "loop-kill-query": _scenario("requests_loop", kill + QUERY),
        },
    )
    killed, queue = check_example(out, "tweepy-kill")
    assert killed.tries[0]["state"] == "failed"  # Airflow failed the killed try
    assert len(killed.tries) == 2
    assert queue["lost"] > 0  # tweepy reconnects "from now"
    cleared, queue = check_example(out, "tweepy-clear")
    assert len(cleared.tries) == 2
    timed_out, queue = check_example(out, "tweepy-timeout")
    assert timed_out.tries[0]["state"] == "failed"
    assert len(timed_out.tries) >= 2
    first_log = next(timed_out.root.glob("airflow/logs/run_id=*/task_id=stream/attempt=1.log"))
    assert "AirflowTaskTimeout" in first_log.read_text()  # the policy's timeout, not a kill
    assert queue["lost"] > 0
    queried, queue = check_example(out, "loop-kill-query")
    assert queue["lost"] > 0
    assert queried.task_starts()  # tries were found and killed through the probe's starts
    assert queried.airflow_faults[0]["pid"] == queried.task_starts()[0]["pid"]
    silent_run = ScenarioRun(out / "silent")
    assert silent_run.metrics["verdict"] == "unobserved"
    assert "no commits observed" in silent_run.metrics["queue"]["unobserved"]
    assert silent_run.task_starts()  # the cluster policy recorded the try's start
    no_token_in_airflow(out)


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_both_examples_under_every_fault_count_as_their_own_tables(tmp_path):
    """``scenarios/byo-example.toml`` as users run it: each example under no fault,
    kill_task, clear_task and a timeout, each counted against its own table
    (``nox -s examples``)."""
    out = tmp_path / "out"
    done = _harness(str(ROOT / "scenarios" / "byo-example.toml"), "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for example in ("tweepy_stream", "requests_loop"):
        baseline, queue = check_example(out, f"{example}-none")
        assert (queue["lost"], queue["duplicates"]) == (0, 0)
        assert len(baseline.tries) == 1
        for fault in ("kill_task", "clear_task", "timeout"):
            run, queue = check_example(out, f"{example}-{fault}")
            assert run.tries[0]["state"] == "failed", (example, fault)
            assert len(run.tries) >= 2, (example, fault)  # a retry followed
            assert queue["lost"] > 0, (example, fault)  # both reconnect "from now"
    no_token_in_airflow(out)
