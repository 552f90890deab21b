"""The article's failure modes, reproduced: the real variant on a real Airflow against the
fake stream, the fault injected, what the checker and Airflow recorded asserted.

Claims are numbered as in issue 8 (``tests/README.md`` has the table). Where the article's
claim does not hold as stated on today's Airflow, the test asserts what really happens and
its docstring says how that differs.

Two groups, each one harness run (one results folder) shared by its tests:

- ``dagtest``: ``airflow dags test``, which runs on Airflow 3 and 2 alike (claims 3, 4, 5,
  8; claims 2 and 6 take longer runs, a second folder). On 2.x the scenarios whose claim
  is about a retry run in ``localtask`` mode instead: 2.11's ``dags test`` does not retry.
- ``worker``: tries run as a worker runs them: a real scheduler + LocalExecutor on Airflow
  3 (``standalone``), ``airflow tasks run --local`` on 2.x (``localtask``: 2.x refuses
  LocalExecutor on SQLite). A killed worker needs a scheduler to notice it: those scenarios
  are skipped on 2.x.

Every claim test is ``long``: ``nox -s repro`` runs them (5-6 min of the dagtest group alone
would take CI's ``nox -s tests`` past its budget). The same mechanisms are tested briefly
in ``tests/harness/airflow/test_standalone.py`` and ``test_crash_schedules.py``, which
``nox -s tests`` runs.

Bounds on times are tolerant (a two-core machine; Airflow polls); counts are exact where
the logic is.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.scenario_runs import ScenarioRun, airflow_time, run_scenarios

# One harness run per module, set up by the first test: more than pytest's default 120 s.
pytestmark = pytest.mark.timeout(2700)

AIRFLOW_3 = version("apache-airflow").startswith("3.")
WORKER_MODE = "standalone" if AIRFLOW_3 else "localtask"
RATE = 800  # tweets per second, unless a scenario says otherwise


def gil_scenario(variant: str, busy: bool) -> str:
    """Claim 5's run: 3,000 tweets/s at 400 µs is 1.2 cores of Python, more than one GIL
    gives, less than two processes get on two cores; the server's queue holds 1 s of
    stream. ``busy``: a neighbour spins one core from the stream's start."""
    body = (
        f'variant = "{variant}"\nduration = 12\nrate = 3000\n'
        "params = { cpu_us = 400, workers = 2, batch = 100 }\nserver = { queue_size = 3000 }\n"
    )
    neighbour = '{ type = "busy_neighbour", from = "stream_start", at = 0, cores = 1 }'
    return body + (f"airflow_faults = [{neighbour}]\n" if busy else "")


# Airflow 2.11's `dags test` leaves a failed try up_for_retry and exits: it runs no
# retries (3.x's runs them in the same process). Scenarios whose claim is about the retry
# run there as a 2.x worker runs each try (`localtask`, the harness in the scheduler's part).
RETRIED = {"logical_date_retry", "handler_vs_timeout", "exhaust"}
RETRY_MODE = "dagtest" if AIRFLOW_3 else "localtask"
# A 2.x retry starts in a new process after the harness's scheduler pass: ~8 s, not ~1 s.
RETRY_START = 0 if AIRFLOW_3 else 8


def scenario_text(name: str, body: str, mode: str) -> str:
    """A scenario body with the group's defaults (seed, rate, mode)."""
    text = "seed = 21\n" + ("" if "rate =" in body else f"rate = {RATE}\n")
    return text + f'mode = "{RETRY_MODE if name in RETRIED else mode}"\n' + body


DAGTEST = {
    # 3: a retry of the same run starts again from the run's logical date.
    "logical_date_retry": f"""variant = "naive_loop"
duration = {14 + RETRY_START}
task = {{ execution_timeout = 5, retries = 1, retry_delay = 1 }}""",
    # 4: the leak under an address-space limit (reached 4 s after it is set on 3.3.2 under
    # dags test, 8 s on 2.11: freed heap inside the limit is used first).
    "memory": """variant = "leaky_loop"
duration = 18
rate = 1000
[[airflow_faults]]
type = "memory_limit"
at = 1
limit_mb = 64""",
    # 5 and 12: the same CPU cost per tweet, threads vs processes (gil_*); 5 again beside
    # a neighbour task that keeps one of the worker's two cores busy (gil_*_busy).
    **{
        f"gil_{variant}{suffix}": gil_scenario(variant, busy=bool(suffix))
        for variant in ("threaded", "multiprocess")
        for suffix in ("", "_busy")
    },
    # 8: the article's SIGTERM handler against Airflow's own timeout.
    "handler_vs_timeout": f"""variant = "timeout_handling"
duration = {12 + RETRY_START}
task = {{ execution_timeout = 4, retries = 1, retry_delay = 1 }}""",
}


# Longer dagtest runs: only nox -s repro runs them.
DAGTEST_LONG = {
    # 2: a try that always times out, its one retry too, then nothing.
    "exhaust": f"""variant = "naive_loop"
duration = {20 + 2 * RETRY_START}
task = {{ execution_timeout = 3, retries = 1, retry_delay = 1 }}""",
    # 6: the /tmp checkpoint, retried on the same worker and on another. A relaunched
    # `dags test` takes ~5 s to start on a quiet machine, 15 s on a loaded one.
    "checkpoint_same_worker": """variant = "checkpoint"
duration = 25
[[airflow_faults]]
type = "kill_task"
at = 2""",
    "checkpoint_other_worker": """variant = "checkpoint"
duration = 25
[[airflow_faults]]
type = "move_worker"
at = 2""",
}


@pytest.fixture(scope="module")
def dagtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bodies = {name: scenario_text(name, body, "dagtest") for name, body in DAGTEST.items()}
    return run_scenarios(tmp_path_factory.mktemp("repro-dagtest"), bodies)


@pytest.fixture(scope="module")
def dagtest_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bodies = {name: scenario_text(name, body, "dagtest") for name, body in DAGTEST_LONG.items()}
    return run_scenarios(tmp_path_factory.mktemp("repro-dagtest-long"), bodies)


def lost_after(run: ScenarioRun, moment: float) -> int:
    """Tweets lost among those created after ``moment`` (in the window, never committed)."""
    committed = run.committed_ids()
    return sum(1 for tweet_id in run.created_between(moment) if tweet_id not in committed)


@pytest.mark.repro
@pytest.mark.long
def test_2_when_retries_are_used_up_the_stream_stops_for_good(dagtest_long):
    """Every try hits ``execution_timeout``; after the last retry nothing reads the stream:
    every tweet created after the last try ended is lost, and Airflow records the task as
    failed."""
    run = ScenarioRun(dagtest_long / "exhaust")
    tries = run.tries
    assert [t["state"] for t in tries][-1] == "failed"
    assert len(tries) == 2  # the try and its one retry
    ends = [s for s in run.metrics["timing"]["tries"]["list"]]
    assert all(t["outcome"] == "fail" and t["error"] == "AirflowTaskTimeout" for t in ends)
    last_end = max(t["ended_at"] for t in ends)
    window_stop = run.metrics["window"]["stop"]
    assert window_stop - last_end > 5  # the run went on long after the task gave up
    assert not [t for t in run.commit_times() if t > last_end]
    assert lost_after(run, last_end) > 0.9 * RATE * (window_stop - last_end)


@pytest.mark.repro
@pytest.mark.long
def test_3_a_retry_restarts_from_the_logical_date_and_reads_again(dagtest):
    """naive_loop derives its start from the run's logical date: the retry after a timeout
    reads again from there (a ``since_id`` is a lower bound, as on X, within the stream's
    retention), so it commits again what the first try had committed, and spends its time
    re-reading while the live stream runs ahead. The article expects a gap only; what
    really happens under ``dags test`` (whose logical date is the run's start) is
    re-reading: duplicates in the sink (many of them of tweets created before the first
    connect, outside the checker's window) and, on a busy machine, loss at the end. The
    same on 2.11 (run by ``localtask`` there: its ``dags test`` runs no retries)."""
    run = ScenarioRun(dagtest / "logical_date_retry")
    starts = run.task_starts()
    assert len(starts) == 2
    assert starts[0]["value"]["resumed_from"] == starts[1]["value"]["resumed_from"] is not None
    # dags test runs both tries in one process: tell them apart by try number.
    tries = run.metrics["timing"]["tries"]["list"]
    assert [t["try"] for t in tries] == [1, 2]
    assert tries[0]["error"] == "AirflowTaskTimeout"
    read_again = run.committed_ids(1) & run.committed_ids(2)
    assert len(read_again) > 0.5 * RATE * 3  # most of what a 5 s try commits


@pytest.mark.repro
@pytest.mark.long
def test_4_a_leaking_task_dies_under_a_memory_limit_and_stops_the_stream(dagtest):
    """The article: a task holding memory ends in worker failures. Under an address-space
    limit the allocation that crosses it raises ``MemoryError``, an ``Exception``: when the
    naive loop catches it the try ends early and *successfully* (a silent failure; always
    so on a real worker, see tests/harness/airflow/test_standalone.py); either way the stream stops
    and everything after is lost."""
    run = ScenarioRun(dagtest / "memory")
    limit, ended = run.airflow_faults
    (only,) = run.metrics["timing"]["tries"]["list"]
    # Under dags test the limit covers Airflow's own code in the same process, so three
    # endings have been seen here: the loop catches the MemoryError (the try returns: "ok",
    # Airflow records success, a silent failure); it hits Airflow's code first and the
    # process dies with no end recorded ("info", died); or Airflow's logging fails on it
    # ("--- Logging error ---") and the process stays alive reading nothing ("info", not
    # died): a stalled task. Every one of them stops the stream.
    assert only["outcome"] in ("ok", "info")
    stopped_at = max(run.commit_times())
    window_stop = run.metrics["window"]["stop"]
    assert limit["time"] < stopped_at < window_stop - 3
    if only["outcome"] == "ok":
        assert ended["died"] is True  # the try returned, dags test exited
        assert run.tries[-1]["state"] == "success"
        assert run.metrics["silent_failure"] is True
    assert lost_after(run, stopped_at + 0.5) > 0.9 * 1000 * (window_stop - stopped_at - 0.5)


@pytest.mark.repro
@pytest.mark.long
def test_5_gil_contention_makes_the_threaded_reader_fall_behind(dagtest):
    """At 400 µs of CPU per tweet and 3,000 tweets/s, two worker threads share one GIL
    with the reader: it waits for the GIL, falls behind, the server's queue overflows, the
    slow consumer is disconnected and tweets are lost. Two worker processes leave the
    reader's GIL free and use more than one core.

    Judged against the CPU each run had (the probe's per-process CPU samples): the GIL caps
    the threads at one core on any machine; whether the processes then also *beat* them
    depends on the machine giving two busy processes two cores' worth of work. On this 2
    vCPU VM it often does not (2026-12-01: the processes spent 700-960 µs of CPU per tweet
    where the threads spent 410-460, and a 1 s spin in two processes did 1.6-2.3x the work
    of one), so that comparison is asserted only for a run whose processes got their CPU
    at most 1.5x dearer per tweet than the threads."""
    threaded = ScenarioRun(dagtest / "gil_threaded").metrics
    processes = ScenarioRun(dagtest / "gil_multiprocess").metrics
    runs = {"threads": threaded, "processes": processes}
    gil = {n: r["timing"]["gil"]["per_process"] for n, r in runs.items()}
    cores = {n: sum(p["cpu_ratio"] for p in gil[n]) for n in runs}
    throughput = {n: r["timing"]["throughput"]["mean"] for n, r in runs.items()}
    rate = 3000
    # The threads: the reader waits for the GIL; one core at most (C code that releases it
    # adds a little) though the machine had two; not enough for the stream.
    (task,) = gil["threads"]
    assert task["mean"] > 0.5
    assert cores["threads"] < 1.15
    assert throughput["threads"] < 0.95 * rate
    assert threaded["queue"]["lost"] > 0.05 * threaded["queue"]["created"]
    # The processes: the reader's GIL is free, and the work is not capped at one core.
    reader = next(p for p in gil["processes"] if p["role"] == "task")
    assert reader["mean"] < 0.2
    assert cores["processes"] > 1.15 or throughput["processes"] > 0.95 * rate
    # 12 (first half), where the processes' CPU was worth what the threads' was.
    cost = {n: cores[n] / throughput[n] for n in runs}  # CPU seconds per tweet
    if cost["processes"] < 1.5 * cost["threads"]:
        assert throughput["processes"] > 1.15 * throughput["threads"]
        assert processes["queue"]["lost"] < threaded["queue"]["lost"]
    else:
        warnings.warn(
            f"claim 5's precondition did not hold: the processes paid {cost['processes'] * 1e6:.0f}"
            f" µs of CPU per tweet against the threads' {cost['threads'] * 1e6:.0f} (cores worth"
            " less when both are busy); whether they beat the threads was not judged",
            stacklevel=1,
        )


def gil_cores(run: ScenarioRun) -> float:
    """The cores the variant's processes got (the probe's per-process CPU samples)."""
    return sum(p["cpu_ratio"] for p in run.metrics["timing"]["gil"]["per_process"])


@pytest.mark.repro
@pytest.mark.long
def test_5_beside_a_busy_neighbour_the_processes_lose_their_spare_core(dagtest):
    """Worker processes beat the GIL only with idle cores, and a real worker shares its
    cores with its other task slots: here a neighbour keeps one of the two cores busy. The
    threaded reader still waits for the GIL; the processes get less CPU than they had
    alone, and, without a spare core, they do not keep up with the stream either: the
    claim's precondition, not the GIL, decides. Each is judged by the CPU it really had."""
    rate = 3000
    alone = gil_cores(ScenarioRun(dagtest / "gil_multiprocess"))
    for name in ("gil_threaded_busy", "gil_multiprocess_busy"):
        (_start, stop) = ScenarioRun(dagtest / name).airflow_faults
        assert stop["neighbour_cores"] > 0.5  # the neighbour really was busy
    threads = ScenarioRun(dagtest / "gil_threaded_busy")
    (task,) = threads.metrics["timing"]["gil"]["per_process"]
    assert task["mean"] > 0.5  # the reader waits for the GIL still
    processes = ScenarioRun(dagtest / "gil_multiprocess_busy")
    busy = gil_cores(processes)
    assert busy < alone
    throughput = processes.metrics["timing"]["throughput"]["mean"]
    if busy < 1.15:  # no spare core: the processes are capped like the threads
        assert throughput < 0.95 * rate
        assert processes.metrics["queue"]["lost"] > 0
    else:
        warnings.warn(
            f"the neighbour left the processes {busy:.2f} cores: not the starved case",
            stacklevel=1,
        )


@pytest.mark.repro
@pytest.mark.long
def test_6_a_tmp_checkpoint_survives_a_retry_on_the_same_worker_only(dagtest_long):
    """Same worker: the retry resumes from the state file: nothing lost. Another worker:
    no file, it starts from the live stream: everything created while no try ran is
    lost (the article's point about local state)."""
    same = ScenarioRun(dagtest_long / "checkpoint_same_worker")
    other = ScenarioRun(dagtest_long / "checkpoint_other_worker")
    same_starts, other_starts = same.task_starts(), other.task_starts()
    assert same_starts[1]["value"]["resumed_from"] is not None
    assert other_starts[1]["value"]["resumed_from"] is None
    assert same.metrics["queue"]["lost"] == 0
    assert other.metrics["queue"]["lost"] > 0
    gap_seconds = other_starts[1]["time"] - other.airflow_faults[0]["time"]
    assert other.metrics["queue"]["lost"] > 0.5 * RATE * gap_seconds


@pytest.mark.repro
@pytest.mark.long
def test_8_the_sigterm_handler_never_sees_execution_timeout(dagtest):
    """Example 3 installs a SIGTERM handler to catch a timeout, but Airflow's
    ``execution_timeout`` is SIGALRM raising ``AirflowTaskTimeout``: the handler does not
    run, the try fails with that exception, and Airflow retries it."""
    run = ScenarioRun(dagtest / "handler_vs_timeout")
    tries = run.metrics["timing"]["tries"]["list"]
    assert tries[0]["outcome"] == "fail"
    assert tries[0]["error"] == "AirflowTaskTimeout"
    signals = [r for r in run.probe(tries[0]["pid"]) if r["f"] == "signal"]
    assert signals == []  # the handler never ran
    assert len(tries) == 2


WORKER = {
    # 1: execution_timeout on a task whose run has no logical date to go back to.
    "timeout_gap": f"""variant = "naive_loop"
duration = {16 + RETRY_START}
task = {{ execution_timeout = 4, retries = 1, retry_delay = 3 }}""",
    # 8: SIGTERM (a cleared task, a worker shutting down) to the article's handler.
    "handler_vs_sigterm": """variant = "timeout_handling"
duration = 10
[[airflow_faults]]
type = "sigterm_task_only"
at = 2""",
    # 11: the worker dies, the task does not.
    "orphan": """variant = "naive_loop"
duration = 35
[[airflow_faults]]
type = "kill_worker"
at = 2""",
}
# 12: the careful patterns under the faults that break the article's. The run ends on the
# clock (issue 13): the retry after a kill must start well inside it (on 2.x, ~15 s after
# the kill on a 2-vCPU machine, 2026-12-01).
for variant in ("exactly_once", "queue_decoupled"):
    WORKER |= {
        f"{variant}-timeout": f'variant = "{variant}"\nduration = 16\n'
        "task = { execution_timeout = 4, retries = 3, retry_delay = 1 }",
        f"{variant}-move_worker": f'variant = "{variant}"\nduration = {14 + RETRY_START}\n'
        'airflow_faults = [{ type = "move_worker", at = 2 }]',
        f"{variant}-kill_task": f'variant = "{variant}"\nduration = {14 + RETRY_START}\n'
        'airflow_faults = [{ type = "kill_task", at = 2 }]',
        f"{variant}-sigterm_task_only": f'variant = "{variant}"\nduration = {12 + RETRY_START}\n'
        'airflow_faults = [{ type = "sigterm_task_only", at = 2 }]',
        f"{variant}-kill_worker": f'variant = "{variant}"\nduration = 35\n'
        'airflow_faults = [{ type = "kill_worker", at = 2 }]',
        # Overlapping tries (issue 15): the orphan streams on beside its retry, on X's
        # rules (strict, windows at 1/100) with two connections per token (Enterprise's
        # redundant connections), and outlives the retry's start (~25 s after the kill).
        f"{variant}-orphan_overlaps": f'variant = "{variant}"\nduration = 55\n'
        "params = { try_seconds = 40 }\n"
        "server = { stream_connections = 2, strict_x = true, backfill_scale = 0.01 }\n"
        'airflow_faults = [{ type = "kill_worker", at = 2 }]',
    }


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bodies = {name: scenario_text(name, body, WORKER_MODE) for name, body in WORKER.items()}
    return run_scenarios(tmp_path_factory.mktemp("repro-worker"), bodies, timeout=2400)


@pytest.mark.repro
@pytest.mark.long
def test_1_execution_timeout_leaves_a_gap_until_the_retry(worker):
    """The try times out (SIGALRM, ``AirflowTaskTimeout``); Airflow retries it after
    ``retry_delay``. On Airflow 3 the retry reads "from now" (a triggered run has no
    logical date): the stream has a gap from the timeout to the retry's first read, lost
    for good. On 2.x every run has a logical date (a triggered one: its trigger time) and
    naive_loop starts there: the retry reads the gap again, and what the first try had
    committed too: no gap, duplicates instead (claim 3's mechanism)."""
    run = ScenarioRun(worker / "timeout_gap")
    tries = run.metrics["timing"]["tries"]["list"]
    assert tries[0]["error"] == "AirflowTaskTimeout"
    timed_out, retried = tries[0]["ended_at"], tries[1]["started_at"]
    gap = retried - timed_out
    # retry_delay (3 s) plus Airflow's pick-up and the task's start-up (slower on 2.x: the
    # harness's scheduler pass and a new `airflow tasks run` process per try).
    assert 3 <= gap <= 3 * 3 + RETRY_START
    in_gap = run.created_between(timed_out, retried)
    committed = run.committed_ids(2)
    if AIRFLOW_3:
        # The gap is lost for good: nothing created in it was ever committed, by any try.
        assert len(in_gap) > 0.5 * RATE * gap
        assert not set(in_gap) & run.committed_ids()
        # And only the gap: the retry read on from its own start (it times out too, and
        # what comes after that is claim 2's loss, not this one's).
        after_start = run.created_between(retried, tries[1]["ended_at"])
        assert len(set(after_start) & committed) > 0.9 * len(after_start) > 0
    else:
        assert len([tweet_id for tweet_id in in_gap if tweet_id in committed]) > 0.9 * len(in_gap)
        first = run.committed_ids(1)
        assert len(first & committed) > 0.9 * len(first) > 0
        assert run.metrics["queue"]["duplicates"] > 0


@pytest.mark.repro
@pytest.mark.long
def test_8_under_sigterm_the_handler_makes_the_task_return_normally(worker):
    """SIGTERM reaches the article's handler (it replaced Airflow's): it raises the custom
    ``TimeoutError``, the loop catches it, the task returns: Airflow records *success*,
    the stream stops, the rest is lost: a silent failure."""
    run = ScenarioRun(worker / "handler_vs_sigterm")
    term = run.airflow_faults[0]
    signals = [r for r in run.probe(term["pid"]) if r["f"] == "signal"]
    assert [s["value"]["signal"] for s in signals] == ["SIGTERM"]
    assert [t["state"] for t in run.tries] == ["success"]
    assert not [t for t in run.commit_times() if t > term["time"] + 0.5]
    assert run.metrics["queue"]["lost"] > 0
    assert run.metrics["silent_failure"] is True


@pytest.mark.repro
@pytest.mark.long
def test_11_a_killed_worker_orphans_the_task_and_its_retry_overlaps(worker):
    """The supervisor dies (3.x: the LocalExecutor worker; 2.x: the try's LocalTaskJob);
    the task lives on. After the heartbeat timeout (2.x: the zombie threshold) the
    scheduler fails the try and starts a retry while the orphan still holds the stream: the retry's
    connect is refused with 429 (one connection per token on X), and naive_loop's
    ``except Exception`` turns that into a *successful* retry that read nothing: what the
    orphan reads after is all that is read. The article expects duplicates; with X's
    one-connection rule, the overlap shows up as a refused connection instead."""
    run = ScenarioRun(worker / "orphan")
    kill = run.airflow_faults[0]
    first, second = run.tries[:2]
    assert (first["pid"], first["state"]) == (kill["orphan"], "failed")
    retry_start = airflow_time(second["start_date"])
    assert max(run.commit_times(kill["orphan"])) > retry_start  # two consumers at once
    # The retry's connect, refused while the orphan held the token's one connection.
    refused = run.server_events("refused")
    assert [(r["name"], r["status"]) for r in refused] == [("TooManyConnections", 429)]
    assert retry_start < refused[0]["at"] < max(run.commit_times(kill["orphan"]))
    assert second["state"] == "success"
    assert run.commit_times(second["pid"]) == []


@pytest.mark.repro
@pytest.mark.long
@pytest.mark.parametrize("variant", ["exactly_once", "queue_decoupled"])
@pytest.mark.parametrize(
    "fault", ["timeout", "move_worker", "kill_task", "sigterm_task_only", "kill_worker"]
)
def test_12_the_careful_patterns_stay_exactly_once(worker, variant, fault):
    """exactly_once (checkpoint in the sink's transaction, idempotent, resumes by
    ``since_id``) and queue_decoupled (a Redis Stream between the stream and the task,
    idempotent commits) under the faults that break the article's variants: no tweet lost,
    none committed twice."""
    metrics = ScenarioRun(worker / f"{variant}-{fault}").metrics
    assert metrics["verdict"] == "exactly-once", metrics["queue"]
    assert metrics["queue"]["processed_unique"] > 0.9 * metrics["queue"]["created"]


@pytest.mark.repro
@pytest.mark.long
@pytest.mark.parametrize("variant", ["exactly_once", "queue_decoupled"])
def test_12_the_careful_patterns_stay_exactly_once_while_an_orphan_overlaps(worker, variant):
    """Issue 15: the worker dies, its try streams on; after the heartbeat timeout the
    retry starts beside it and both commit at the same time (exactly_once: each on its own
    connection; queue_decoupled: each in the consumer group, the retry claiming what the
    orphan holds). Their commits are idempotent inside one transaction and the checkpoint
    never moves back: nothing lost, nothing committed twice. (The read-then-write commit
    before issue 15 committed tweets twice here: see tests/README.md, claim 12.)"""
    run = ScenarioRun(worker / f"{variant}-orphan_overlaps")
    kill = run.airflow_faults[0]
    first, second = run.tries[:2]
    assert (first["pid"], first["state"]) == (kill["orphan"], "failed")
    retry_start = airflow_time(second["start_date"])
    assert max(run.commit_times(kill["orphan"])) > retry_start + 2  # two consumers at once
    assert min(run.commit_times(second["pid"])) < max(run.commit_times(kill["orphan"]))
    metrics = run.metrics
    assert metrics["verdict"] == "exactly-once", metrics["queue"]
    assert metrics["queue"]["duplicates"] == 0
    if variant == "exactly_once":
        assert run.server_events("refused") == []  # the retry got its own connection
