"""Run scenarios: stream + Airflow + nemesis -> a run folder per scenario -> metrics.

For each scenario, in ``<out>/<scenario name>/``:

1. the fake stream starts (seed, rate profile, stream faults) and an empty sink is made,
   with the variant's sidecars (a Redis broker and its ingester, for ``queue_decoupled``);
2. the variant's task starts on Airflow (the scenario's mode) and the injector waits for
   its faults' triggers;
3. the stream runs ``duration`` seconds after the first commit, then ends (the server
   stops: the run's end); the task may drain what it holds while it still commits (up to
   :data:`DRAIN_MAX` s), then is stopped;
4. Airflow's task-instance records are exported, ``run.json`` written, the checker run,
   the steady-state hypothesis judged into ``metrics.json``.

Everything started is an :class:`~harness.procs.OwnedProcess`; a run interrupted by
SIGINT/SIGTERM stops it all and leaves the scenarios it finished intact.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.history import DEFAULT_GRACE, RunError
from harness.inject import Injector, committed_count
from harness.layout import RunLayout
from harness.metrics import check_run
from harness.modes import Airflows, TaskRun, TaskSpec
from harness.probe import create_sink
from harness.scenario import Scenario
from harness.sidecars import queue_for
from harness.stream_server import StreamServerProcess
from harness.variants import VARIANTS

__all__ = ["Progress", "run_scenario", "summary_row"]

FIRST_COMMIT_TIMEOUT = 90.0  # seconds: Airflow start-up on a loaded 2-core machine
# After the stream ends, the task may finish what it holds (a queue, a backlog): the run
# waits while it still commits, up to DRAIN_MAX seconds, and until DRAIN_QUIET seconds pass
# without a commit (or the task ends on its own).
DRAIN_QUIET = 2.0
DRAIN_MAX = 20.0


@dataclass
class Progress:
    """What a live display shows about the scenario running now."""

    scenario: str = ""
    phase: str = ""
    started: float = 0.0
    committed: int = 0
    faults_fired: int = 0


def _server_args(scenario: Scenario) -> list[str]:
    args = ["--seed", str(scenario.seed), "--profile", json.dumps(scenario.rate)]
    for key, value in scenario.server.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    for fault in scenario.stream_faults:
        args += ["--fault", json.dumps(fault)]
    return args


def task_spec(scenario: Scenario, layout: RunLayout, conf: dict[str, Any]) -> TaskSpec:
    """What the scenario asks of Airflow, with the variant's defaults filled in."""
    defaults = VARIANTS[scenario.variant].task
    retries = int(scenario.task.get("retries", defaults.get("retries", 0)) or 0)
    delay = scenario.task.get("retry_delay")
    if delay is None:
        delay = defaults["retry_delay"].total_seconds() if "retry_delay" in defaults else 1.0
    return TaskSpec(
        name=scenario.name,
        mode=scenario.mode,
        variant=scenario.variant,
        layout=layout,
        conf=conf,
        task=dict(scenario.task),
        retries=retries,
        retry_delay=float(delay),
        description=scenario.description,
    )


def run_scenario(
    scenario: Scenario, out: Path, airflows: Airflows, progress: Progress | None = None
) -> dict[str, Any]:
    """Run one scenario into ``out/<name>`` on ``airflows.get(scenario.mode)``; return its
    metrics (with the hypothesis judged)."""
    progress = progress or Progress()
    progress.scenario, progress.started, progress.phase = scenario.name, time.time(), "starting"
    layout = RunLayout(out / scenario.name)
    if layout.root.exists():
        shutil.rmtree(layout.root)
    layout.root.mkdir(parents=True)
    (layout.root / "scenario.json").write_text(scenario.model_dump_json(indent=2, by_alias=True))
    mode = airflows.get(scenario.mode)  # a shared Airflow starts before our clock does
    with contextlib.ExitStack() as running:  # stopped in reverse: nemesis, task, sidecars, stream
        server = StreamServerProcess(layout.ledger, _server_args(scenario))
        running.callback(server.stop)
        create_sink(layout.sink)
        conf = {
            "stream_url": server.stream_url,
            "token": server.token,
            "run_dir": str(layout.root),
            "scratch_dir": str(layout.root / "scratch" / "worker-1"),
            "run_seconds": None,
            **scenario.params,
        }
        if VARIANTS[scenario.variant].queue:
            conf.update(running.enter_context(queue_for(layout, server)))
        started_at = time.time()
        run = mode.start(task_spec(scenario, layout, conf))
        running.callback(run.stop)
        injector = Injector(
            scenario.faults, run, layout.sink, layout.faults, layout.root / "scratch"
        )
        injector.stream_start = started_at
        running.callback(injector.stop)
        injector.start()
        progress.phase = "waiting for the first commit"
        first_commit = None
        deadline = time.monotonic() + FIRST_COMMIT_TIMEOUT
        while time.monotonic() < deadline and first_commit is None:
            if committed_count(layout.sink) > 0:
                first_commit = time.time()
            time.sleep(0.1)
        progress.phase = "streaming"
        end = (first_commit or time.time()) + scenario.duration
        while time.time() < end:
            progress.committed = committed_count(layout.sink)
            progress.faults_fired = _lines(layout.faults)
            time.sleep(0.25)
        progress.phase = "ending the stream"
        stopped_at = time.time()
        server.stop()
        progress.phase = "draining"
        _drain(run, layout.sink)
    progress.phase = "checking"
    run.record()
    layout.run.write_text(json.dumps({
        "started_at": started_at, "first_commit_at": first_commit, "stopped_at": stopped_at,
        "grace": DEFAULT_GRACE, "mode": scenario.mode, "seed": scenario.seed,
    }, indent=2))  # fmt: skip
    return judge(scenario, layout)


def judge(scenario: Scenario, layout: RunLayout) -> dict[str, Any]:
    """Check the run folder and judge the scenario's steady-state hypothesis."""
    try:
        metrics = check_run(layout.root)
    except RunError as e:
        return {"error": str(e), "hypothesis": {"held": False, "results": []}}
    results = []
    for hypothesis in scenario.hypothesis:
        held, measured = hypothesis.judge(metrics)
        results.append({"hypothesis": hypothesis.text, "held": held, "measured": measured})
    metrics["hypothesis"] = {"held": all(r["held"] for r in results), "results": results}
    layout.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def summary_row(scenario: Scenario, metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one scenario, for summary.json / summary.md."""
    queue, timing = metrics.get("queue", {}), metrics.get("timing", {})
    recoveries = [
        r["recovery_seconds"]
        for r in timing.get("recovery", [])
        if r.get("recovery_seconds") is not None
    ]
    return {
        "scenario": scenario.name,
        "variant": scenario.variant,
        "faults": ",".join(
            [f.type for f in scenario.faults]
            + [f"stream:{f['type']}" for f in scenario.stream_faults]
        )
        or "none",
        "verdict": metrics.get("verdict", "error"),
        "hypothesis_held": metrics.get("hypothesis", {}).get("held"),
        "created": queue.get("created"),
        "lost": queue.get("lost"),
        "duplicates": queue.get("duplicates"),
        "throughput": timing.get("throughput", {}).get("mean"),
        "p99_latency_s": timing.get("latency", {}).get("p99"),
        "recovery_s": max(recoveries) if recoveries else None,
        "silent_failure": metrics.get("silent_failure"),
        "error": metrics.get("error"),
    }


def _drain(run: TaskRun, sink: Path) -> None:
    """Let the task commit what it still holds: until it ends, or stops committing."""
    deadline = time.monotonic() + DRAIN_MAX
    last_count, last_change = committed_count(sink), time.monotonic()
    while time.monotonic() < deadline:
        if run.wait(0.5):
            return
        count = committed_count(sink)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change >= DRAIN_QUIET:
            return


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
