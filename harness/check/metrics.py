"""metrics.json: the checker's results for one run folder, with its window, its schema and
the scenario's steady-state hypothesis judged.

``python -m harness check <run dir>`` calls :func:`check_run`. The fields and their units
are listed in harness/README.md; ``schema_version`` changes when they do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.check.checker import default_checker
from harness.check.history import History, load_history, write_history
from harness.check.hypothesis import Hypothesis, judge_all
from harness.check.records import RunError, read_json
from harness.layout import RunLayout

__all__ = ["SCHEMA_VERSION", "check_run", "metrics_of"]

SCHEMA_VERSION = 2  # 2: ending, pending_at_cut, incomplete, per-try silent failure


def metrics_of(history: History) -> dict[str, Any]:
    results = default_checker().check(history)
    window = history.window
    queue = results["queue"]
    return {
        "schema_version": SCHEMA_VERSION,
        "checked_at": time.time(),
        "valid": results["valid"],
        "verdict": queue.get("verdict"),
        "silent_failure": queue.get("silent_failure"),
        "ending": history.ending,
        "window": {
            "start": window.start,
            "stop": window.stop,
            "grace_seconds": window.grace,
            "first_index": window.first_index,
            "stop_index": window.stop_index,
            "definition": "tweets created from the first stream connect until the stream "
            "stopped creating (older runs: until the server stopped, minus grace_seconds)",
        },
        **{name: result for name, result in results.items() if name != "valid"},
    }


def check_run(run_dir: Path) -> dict[str, Any]:
    """Recompute ``metrics.json`` (and ``history.jsonl``) from the raw files, with the
    hypothesis of ``scenario.json`` (if any) judged."""
    layout = RunLayout(run_dir)
    history = load_history(run_dir)
    metrics = metrics_of(history)
    texts = _hypotheses(layout.scenario)
    if texts is not None:
        metrics["hypothesis"] = judge_all(texts, metrics)
    layout.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    write_history(history, layout.history)
    return metrics


def _hypotheses(path: Path) -> list[str] | None:
    """The hypothesis statements of a run's scenario (None: the run has no scenario), each
    one the language accepts."""
    if not path.exists():
        return None
    scenario = read_json(path)
    texts = scenario.get("hypothesis", []) if isinstance(scenario, dict) else None
    if not isinstance(texts, list):
        raise RunError(f"{path}: no readable hypothesis list (hypothesis: {texts!r:.60})")
    out = []
    for i, h in enumerate(texts):
        text = h.get("text") if isinstance(h, dict) else h
        try:
            out.append(Hypothesis(text=text).text)
        except ValidationError as e:
            problem = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise RunError(f"{path}: hypothesis[{i}]: {problem}: {text!r:.80}") from None
    return out
