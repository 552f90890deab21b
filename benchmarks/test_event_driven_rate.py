"""How many events per second Airflow 3's event-driven scheduling turns into DAG runs: the
``event_driven`` variant on the standalone Airflow (scheduler, triggerer, LocalExecutor),
fed messages far faster than that.

The ingester publishes 10 messages/s (100 tweets/s, 10 per message) on the Redis pub/sub
channel the asset watcher listens to, for 30 s. The figures: messages published, those a
subscriber received (``PUBLISH``'s answer, ``published.jsonl``), those whose tweets a DAG
run committed (each message's tweets are committed together or not at all), the DAG runs
Airflow started; per second of publishing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_runs import ScenarioRun, run_scenarios

pytestmark = pytest.mark.timeout(900)

SCENARIO = """seed = 44
variant = "event_driven"
mode = "standalone"
duration = 30
rate = 100
params = { cpu_us = 0, batch = 10 }
"""


def _measure(folder: Path) -> dict[str, float]:
    run = ScenarioRun(run_scenarios(folder, {"event_driven": SCENARIO}) / "event_driven")
    messages = run.published()
    seconds = messages[-1]["time"] - messages[0]["time"]
    committed = run.committed_ids()
    turned = sum(int(m["first_id"]) in committed for m in messages)
    runs = len(run.json("launches.json"))
    return {
        "seconds": seconds,
        "published": len(messages),
        "received": sum(m["receivers"] > 0 for m in messages),
        "committed": turned,
        "dag_runs": runs,
        "events_per_s": turned / seconds,
        "runs_per_s": runs / seconds,
    }


def test_event_driven_rate(benchmark, tmp_path_factory, capsys) -> None:
    results: list[dict[str, float]] = []
    benchmark.pedantic(lambda: results.append(_measure(tmp_path_factory.mktemp("run"))), rounds=1)
    r = results[0]
    benchmark.extra_info.update(r)
    with capsys.disabled():
        print(
            f"\nevent_driven, 10 messages/s offered for {r['seconds']:.0f} s: "
            f"{r['published']} published, {r['received']} received by the watcher, "
            f"{r['committed']} committed by {r['dag_runs']} DAG runs: "
            f"{r['events_per_s']:.2f} events/s, {r['runs_per_s']:.2f} runs/s"
        )
