"""Airflow 3's own answers instead of a task that streams for ever, on a real standalone
Airflow 3.3.2: short scheduled runs polling X's recent search from a stored ``since_id``
(``scheduled_poll``), and event-driven scheduling on a Redis pub/sub asset watcher
(``event_driven``). Each test asserts the checker's counts, Airflow's recorded runs and
tries, and the ingester's record of who received each pub/sub message. One harness run
serves every test (``long``: ~6 min).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from tests.scenario_runs import ScenarioRun, run_scenarios

pytestmark = [
    pytest.mark.repro,
    pytest.mark.long,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not version("apache-airflow").startswith("3."), reason="asset watchers: Airflow 3 only"
    ),
]

COMMON = (
    'seed = 32\nmode = "standalone"\nrate = 1000\n'
    "params = { cpu_us = 20, batch = 200 }\ntask = { retries = 2, retry_delay = 1 }\n"
    "server = { strict_x = true, backfill_scale = 0.01, search_window = 15 }\n"
)
SCENARIOS = {
    "scheduled_poll-kill_task": 'variant = "scheduled_poll"\nduration = 20\n'
    'airflow_faults = [{ type = "kill_task", at = 2 }]',
    "scheduled_poll-restart_scheduler": 'variant = "scheduled_poll"\nduration = 30\n'
    'airflow_faults = [{ type = "restart_scheduler", at = 2 }]',
    "event_driven-none": 'variant = "event_driven"\nduration = 20',
    "event_driven-restart_triggerer": 'variant = "event_driven"\nduration = 45\n'
    'airflow_faults = [{ type = "restart_triggerer", at = 2 }]',
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bodies = {name: COMMON + body for name, body in SCENARIOS.items()}
    return run_scenarios(tmp_path_factory.mktemp("airflow-native"), bodies)


@pytest.mark.parametrize("fault", ["kill_task", "restart_scheduler"])
def test_polling_from_a_stored_since_id_is_exactly_once_across_restarts(results, fault):
    """Claim: "polling from a stored since_id is exactly-once across every restart fault,
    at the cost of latency = interval". The fault hit (a try killed, or the scheduler
    restarted), Airflow started several runs, and still nothing is lost or repeated."""
    run = ScenarioRun(results / f"scheduled_poll-{fault}")
    start, stop = run.airflow_faults
    assert start["fault"] == fault
    metrics = run.metrics
    assert metrics["verdict"] == "exactly-once"
    assert (metrics["queue"]["lost"], metrics["queue"]["duplicates"]) == (0, 0)
    assert metrics["queue"]["processed_unique"] > 10_000  # > 10 s at 1,000/s
    runs = {t["run_id"] for t in run.tries}
    assert len(runs) >= 3  # a run every 5 s, each its own short try
    if fault == "kill_task":
        assert any(
            t["state"] in ("failed", "up_for_retry") or t["try_number"] > 1 for t in run.tries
        )
    else:
        assert stop["killed"]  # the scheduler and dag-processor pids it killed


def test_event_driven_commits_only_what_a_watcher_received(results):
    """With no fault: a message the watcher's trigger never received (published between
    two of its lives: it ends after each message) is lost; every committed tweet came in a
    message someone received; most messages reached nobody at 5 messages/s."""
    run = ScenarioRun(results / "event_driven-none")
    messages = run.published()
    received = [m for m in messages if m["receivers"] > 0]
    committed = run.committed_ids()
    assert received
    assert len(received) < len(messages) / 2
    for message in messages:
        if message["receivers"] == 0:
            assert int(message["first_id"]) not in committed
    assert committed  # some runs did commit
    assert run.metrics["queue"]["lost"] > 0
    assert run.metrics["queue"]["duplicates"] == 0  # a run commits its events once


def test_event_driven_loses_what_is_published_while_the_triggerer_is_down(results):
    """Claim: "event-driven scheduling loses what is published while the triggerer is
    down". After the SIGKILL no message reaches a subscriber until the new triggerer takes
    the watcher over (Airflow waits for the dead one's heartbeat to go stale: 30 s), and
    none of their tweets is committed."""
    run = ScenarioRun(results / "event_driven-restart_triggerer")
    _start, stop = run.airflow_faults
    messages = run.published()
    after = [m for m in messages if m["time"] > stop["time"]]
    first_heard = next(m for m in after if m["receivers"] > 0)
    deaf = [m for m in after if m["time"] < first_heard["time"]]
    assert first_heard["time"] - stop["time"] > 10  # the watcher was gone for a while
    assert len(deaf) > 20  # 5 messages/s
    committed = run.committed_ids()
    assert not [m for m in deaf if int(m["first_id"]) in committed]
    assert run.metrics["queue"]["lost"] >= sum(m["tweets"] for m in deaf)
