"""Worker processes vs worker threads at the same CPU cost per tweet: the article's advice
against the GIL, measured on a real Airflow (``airflow dags test``) through the harness.

Both variants read the fake stream in one thread and hand tweets to 2 workers that spend
200 µs of pure-Python CPU on each (``cpu_work``, calibrated in thread CPU time). The
stream (6,000 tweets/s, no slow-consumer limit) is faster than either can keep up with,
so what each commits per second is its capacity. The figure is the median second of
steady state (a run's first seconds are process start-up: spawning the workers).

The claim-level test of the same effect (loss at a rate the processes keep up with) is
``tests/repro/test_article_claims.py::test_5_...``; this benchmark keeps the throughput
figure out of the test suite.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.scenario_runs import ScenarioRun, run_scenarios

pytestmark = pytest.mark.timeout(900)  # three harness runs of ~70 s each

VARIANTS = ("threaded", "multiprocess")
ROUNDS = 3  # harness runs of both; the figure is their median
SCENARIO = """seed = 43
variant = "{variant}"
mode = "dagtest"
duration = 10
rate = 6000
params = {{ cpu_us = 200, workers = 2, batch = 100 }}
server = {{ queue_size = 0 }}
"""


def _run(folder: Path) -> dict[str, float]:
    """Run both variants in one harness run; each one's median committed tweets/s."""
    scenarios = {variant: SCENARIO.format(variant=variant) for variant in VARIANTS}
    out = run_scenarios(folder, scenarios, timeout=600)
    medians = {}
    for variant in VARIANTS:
        per_second = ScenarioRun(out / variant).metrics["timing"]["throughput"]["per_second"]
        medians[variant] = statistics.median(v for v in per_second if v > 0)
    return medians


def test_threads_vs_processes(benchmark, tmp_path_factory, capsys) -> None:
    rounds = iter(range(ROUNDS))
    results: list[dict[str, float]] = []

    def one_round() -> None:
        results.append(_run(tmp_path_factory.mktemp(f"round-{next(rounds)}")))

    benchmark.pedantic(one_round, rounds=ROUNDS)
    threaded = statistics.median(r["threaded"] for r in results)
    processes = statistics.median(r["multiprocess"] for r in results)
    benchmark.extra_info.update(
        {
            "threaded_tweets_per_s": threaded,
            "multiprocess_tweets_per_s": processes,
            "ratio": processes / threaded,
        }
    )
    with capsys.disabled():
        print(
            f"\n200 us/tweet, 2 workers: threaded {threaded:,.0f} tweets/s, multiprocess "
            f"{processes:,.0f} tweets/s: x{processes / threaded:.2f} (median of {ROUNDS} runs; "
            f"each run's median steady second: {[round(r['threaded']) for r in results]} "
            f"vs {[round(r['multiprocess']) for r in results]})"
        )
