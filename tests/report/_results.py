"""A small synthetic results folder, written the way ``python -m harness run`` writes one:
the real ledger and sink writers, the probe's record format, Airflow-style task-instance
records, airflow_faults.jsonl, and metrics.json from the real checker with the hypothesis judged.

Six seconds of 1,000 tweets/s per scenario; what happens to the tweets is planned per
scenario (:class:`Plan`), and the checker, not this module, counts the result.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fake_stream.ledger import LedgerWriter
from harness.check.metrics import check_run
from harness.layout import RunLayout
from harness.scenario import Scenario
from harness.task.probe import Sink, create_sink

SECONDS = 6
RATE = 1000  # one tweet per ms
BATCH = 100
HYPOTHESIS = ["lost == 0", "duplicates == 0", "p99_latency_s < 2"]


@dataclass(frozen=True)
class Plan:
    """One scenario. Index ranges are tweet positions ``[first, stop)`` in the stream.

    ``kill_at``: the task is SIGKILLed then (s after the start) and a new try reconnects at
    ``resume_at``, receiving from ``resume_from`` (a checkpoint; None: from where the stream
    is then). ``gap``: tweets the stream dropped (queue overflow) and no one committed.
    """

    variant: str
    fault: str
    kill_at: float | None = None
    resume_at: float = 3.0
    resume_from: int | None = None
    gap: tuple[int, int] | None = None
    cpu_us: int = 50
    gil: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.fault}"


def _utc(t: float) -> str:
    """As Airflow's records hold dates: UTC, no zone."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _commits(plan: Plan, t0: float) -> list[tuple[float, int, int, list[int]]]:
    """(committed_at, pid, try, positions) per commit, in time order."""
    total = SECONDS * RATE
    positions = np.arange(total)
    if plan.gap:
        positions = positions[(positions < plan.gap[0]) | (positions >= plan.gap[1])]
    commits = []
    kill = int(plan.kill_at * RATE) if plan.kill_at is not None else None
    first_try = positions if kill is None else positions[positions < kill - BATCH]
    for k, start in enumerate(range(0, len(first_try), BATCH)):
        batch = first_try[start : start + BATCH].tolist()
        at = t0 + (batch[-1] + 1) / RATE + 0.02 + 0.01 * (k % 7)
        commits.append((at, 1001, 1, batch))
    if kill is not None:
        resume = int(plan.resume_at * RATE)
        replay_from = plan.resume_from if plan.resume_from is not None else resume
        second = positions[positions >= replay_from]
        backlog = second[second < resume]
        for start in range(0, len(backlog), BATCH):  # caught up within a second
            at = t0 + plan.resume_at + 0.3 + 0.7 * start / max(len(backlog), 1)
            commits.append((at, 1002, 2, backlog[start : start + BATCH].tolist()))
        live = second[second >= resume]
        for k, start in enumerate(range(0, len(live), BATCH)):
            batch = live[start : start + BATCH].tolist()
            at = max(t0 + (batch[-1] + 1) / RATE, t0 + plan.resume_at + 1.0) + 0.02 + 0.01 * (k % 5)
            commits.append((at, 1002, 2, batch))
    return sorted(commits, key=lambda c: c[0])


def _ledger(layout: RunLayout, plan: Plan, t0: float) -> np.ndarray:
    """Write the ledger; return the stream's ids by position."""
    t0_ms = round(t0 * 1000)
    ledger = LedgerWriter(layout.ledger, {"seed": 1, "t0_ms": t0_ms, "t0_wall": t0_ms / 1000})
    ledger.created(0, np.ones(SECONDS * 1000, dtype=np.int64), 0)
    total = SECONDS * RATE
    ledger.connection_opened(1, token="t", opened_at=t0)
    if plan.kill_at is None:
        ledger.delivered(1, 0, total, "acked")
    else:
        kill, resume = int(plan.kill_at * RATE), int(plan.resume_at * RATE)
        ledger.delivered(1, 0, kill, "acked")
        ledger.connection_closed(1, closed_at=t0 + plan.kill_at, end_reason="client_closed")
        replay_from = plan.resume_from if plan.resume_from is not None else resume
        if replay_from > kill:
            ledger.dropped(None, kill, replay_from, "no_consumer", "queued")
        ledger.connection_opened(2, token="t", opened_at=t0 + plan.resume_at)
        ledger.delivered(2, replay_from, total, "acked")
    if plan.gap:
        ledger.dropped(1, plan.gap[0], plan.gap[1], "queue_overflow", "queued")
    ledger.close()
    from fake_stream.ledger import LedgerReader

    return LedgerReader(layout.ledger).created_ids()


def _sink(layout: RunLayout, plan: Plan, t0: float, ids: np.ndarray) -> None:
    create_sink(layout.sink)
    commits = _commits(plan, t0)
    for _, pid, try_number, positions in commits:
        sink = Sink(layout.sink, pid, try_number)
        sink.commit([(int(ids[p]), None) for p in positions])
        sink.close()
    db = sqlite3.connect(layout.sink)  # the probe stamps the wall clock; plant the plan's
    for commit_id, (at, *_rest) in enumerate(commits, start=1):
        db.execute("UPDATE commits SET committed_at = ? WHERE commit_id = ?", (at, commit_id))
    db.commit()
    db.close()


def _task_records(layout: RunLayout, plan: Plan, t0: float) -> None:
    """Probe lifecycle files, launches.json, Airflow's task instances, airflow_faults.jsonl."""
    end = t0 + SECONDS + 1
    layout.probe_dir.mkdir()
    tries = [(1001, 1, t0 - 0.2, None if plan.kill_at is not None else end)]
    if plan.kill_at is not None:
        tries.append((1002, 2, t0 + plan.resume_at - 0.1, end))
    launches, instances = [], []
    for pid, try_number, started, ended in tries:
        base = {"pid": pid, "try": try_number, "f": "task"}
        lines = [{**base, "time": started, "type": "invoke", "value": {"task_id": "stream"}}]
        if ended is not None:
            lines.append({**base, "time": ended, "type": "ok", "value": {"how": "returned"}})
        (layout.probe_dir / f"host-{pid}.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines)
        )
        launches.append({"pid": pid, "at": started - 2.0, "conf": {}})
        instances.append(
            {
                "dag_id": plan.variant,
                "run_id": "manual__synthetic",
                "task_id": "stream",
                "try_number": try_number,
                "state": "success" if ended is not None else "running",
                "start_date": _utc(started - 0.5),
                "end_date": _utc(ended) if ended is not None else None,
                "hostname": "host",
                "pid": pid,
            }
        )
    layout.launches.write_text(json.dumps(launches, indent=2))
    layout.task_instances.parent.mkdir()
    layout.task_instances.write_text(json.dumps(instances, indent=2))
    if plan.kill_at is not None:
        at = t0 + plan.kill_at
        records = [
            {"time": at, "f": "start", "fault": "kill_task", "pid": 1001, "signal": "SIGKILL"},
            {"time": at + 0.5, "f": "stop", "fault": "kill_task", "pid": 1001, "relaunched": True},
        ]
        layout.airflow_faults.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_scenario(out: Path, plan: Plan, t0: float) -> dict[str, Any]:
    """One scenario folder; returns its metrics (as written to metrics.json)."""
    layout = RunLayout(out / plan.name)
    layout.root.mkdir(parents=True)
    faults = [{"type": "kill_task", "at": plan.kill_at}] if plan.kill_at is not None else []
    scenario = Scenario.model_validate(
        {
            "name": plan.name,
            "variant": plan.variant,
            "seed": 1,
            "duration": SECONDS,
            "rate": RATE,
            "params": {"cpu_us": plan.cpu_us, "batch": BATCH},
            "airflow_faults": faults,
            "hypothesis": HYPOTHESIS,
        }
    )
    layout.scenario.write_text(scenario.model_dump_json(indent=2, by_alias=True))
    ids = _ledger(layout, plan, t0)
    _sink(layout, plan, t0, ids)
    _task_records(layout, plan, t0)
    layout.run.write_text(
        json.dumps(
            {
                "started_at": t0 - 3,
                "stopped_at": t0 + SECONDS + 1,
                "grace": 1.0,
                # As the runner writes it (harness/run/ending.py); the window still ends
                # at stopped_at - grace: no created_until.
                "ending": {"how": "quiescent", "task_ended_by": "stop_request"},
                "mode": "dagtest",
                "seed": 1,
            }
        )
    )
    metrics = check_run(layout.root)  # the hypothesis judged from scenario.json
    if plan.gil is not None:
        metrics["timing"]["gil"] = plan.gil
    layout.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _gil(mean: float, p95: float) -> dict[str, Any]:
    return {
        "interval_s": 0.005,
        "per_process": [
            {"pid": 1001, "try": 1, "role": "task", "mean": mean, "p95": p95, "samples": 1200}
        ],
        "mean": mean,
        "p95": p95,
    }


PLANS = [
    Plan("naive_loop", "none"),
    # Killed at 2 s, relaunched at 3 s from wherever the stream is: 2,000..3,000 never sent.
    Plan("naive_loop", "kill_task", kill_at=2.0),
    Plan("checkpoint", "none"),
    # Resumes from a checkpoint 300 tweets behind its last commit: repeats, no loss.
    Plan("checkpoint", "kill_task", kill_at=2.0, resume_from=1600),
    Plan("threaded", "none", gil=_gil(0.12, 0.3)),
    Plan("threaded", "slow_consumer", gap=(2500, 4000), cpu_us=1500, gil=_gil(0.71, 0.93)),
    Plan("multiprocess", "none", gil=_gil(0.02, 0.05)),
    Plan("multiprocess", "slow_consumer", cpu_us=1500, gil=_gil(0.04, 0.09)),
]


def write_results(out: Path, plans: list[Plan] = PLANS) -> dict[str, dict[str, Any]]:
    """A results folder with one scenario per plan and a summary.json; returns the metrics
    by scenario name."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = round(time.time() - 120, 3)
    metrics = {plan.name: write_scenario(out, plan, t0) for plan in plans}
    rows = [{"scenario": name, "variant": name.split("-")[0], "error": None} for name in metrics]
    (out / "summary.json").write_text(json.dumps({"scenarios": rows, "incomplete": []}))
    return metrics
