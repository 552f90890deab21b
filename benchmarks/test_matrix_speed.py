"""How long the main job's quick matrix takes end to end (``python -m harness run
scenarios/default.toml --quick``: 7 scenarios on one standalone Airflow, its start, the
report), side by side at the machine's default ``--jobs`` and one at a time, and whether
the verdicts agree. The full matrix is ``nox -s run`` itself; its figures are in
scenarios/README.md, "Side by side".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import OwnedProcess

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[1]


def _quick(out: Path, *jobs: str) -> tuple[float, dict[str, str]]:
    """Seconds the quick matrix took, and each scenario's verdict."""
    argv = [sys.executable, "-m", "harness", "run", str(ROOT / "scenarios" / "default.toml")]
    started = time.monotonic()
    harness = OwnedProcess(
        [*argv, "--quick", "--exit-zero", "--out", str(out), *jobs],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert harness.popen.wait(timeout=1500) == 0
    finally:
        harness.stop()
    seconds = time.monotonic() - started
    rows = json.loads((out / "summary.json").read_text())["scenarios"]
    return seconds, {r["scenario"]: r["verdict"] for r in rows}


def test_quick_matrix(benchmark, tmp_path_factory, capsys) -> None:
    results: dict[str, tuple[float, dict[str, str]]] = {}

    def both() -> None:
        results["default"] = _quick(tmp_path_factory.mktemp("default"))
        results["one"] = _quick(tmp_path_factory.mktemp("one"), "--jobs", "1")

    benchmark.pedantic(both, rounds=1)
    (side, verdicts), (alone, verdicts_alone) = results["default"], results["one"]
    benchmark.extra_info.update({"side_by_side_s": side, "one_at_a_time_s": alone})
    with capsys.disabled():
        print(f"\n--quick: {side:.0f} s side by side (default --jobs), {alone:.0f} s with --jobs 1")
    assert verdicts == verdicts_alone
