"""``report`` and ``compare`` on damaged results folders: exit 2 naming the file and what
is wrong, never a traceback and never a guess; a scenario that errored or did not finish
is shown as such (issue 14)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.__main__ import main
from tests.report._results import PLANS, write_results

NONE, KILLED = "naive_loop-none", "naive_loop-kill_task"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenarios written by the real writers and checked by the real checker."""
    out = tmp_path_factory.mktemp("results")
    write_results(out, [p for p in PLANS if p.name in (NONE, KILLED)])
    return out


def _edit(path: Path, change: Callable[[dict], object]) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def _set(path: str, value: object) -> Callable[[dict], None]:
    """Set the dotted ``path`` of a JSON object to ``value``."""

    def change(obj: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj[part]
        obj[last] = value

    return change


M = f"{KILLED}/metrics.json"
S = f"{KILLED}/scenario.json"
DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "metrics truncated": (
        lambda d: (d / M).write_text((d / M).read_text()[:200]),
        f"{M}: not readable JSON",
    ),
    "metrics a list": (lambda d: (d / M).write_text("[]"), f"{M}: expected a JSON object"),
    "metrics not UTF-8": (lambda d: (d / M).write_bytes(b'{"\xff": 1}'), f"{M}: not UTF-8"),
    "metrics without queue": (
        lambda d: _edit(d / M, lambda m: m.pop("queue")),
        f"{M}: queue: missing (not a complete metrics.json)",
    ),
    "lost as text": (
        lambda d: _edit(d / M, _set("queue.lost", "3718")),
        f"{M}: queue.lost: expected a count value, got '3718'",
    ),
    "lost as true": (
        lambda d: _edit(d / M, _set("queue.lost", True)),
        f"{M}: queue.lost: expected a count value, got True",
    ),
    "throughput as text": (
        lambda d: _edit(d / M, _set("timing.throughput.mean", "fast")),
        f"{M}: timing.throughput.mean: expected a rate value",
    ),
    "recovery an object": (
        lambda d: _edit(d / M, _set("timing.recovery", {"at": 1})),
        f"{M}: timing.recovery: expected a list",
    ),
    "recovery seconds as text": (
        lambda d: _edit(d / M, _set("timing.recovery", [{"recovery_seconds": "1"}])),
        f"{M}: timing.recovery[0].recovery_seconds: Input should be a valid number",
    ),
    "hypothesis results an object": (
        lambda d: _edit(d / M, _set("hypothesis.results", {})),
        f"{M}: hypothesis.results: Input should be a valid list",
    ),
    "scenario a list": (lambda d: (d / S).write_text("[1]"), f"{S}: expected a JSON object"),
    "scenario seed as text": (
        lambda d: _edit(d / S, _set("seed", "1")),
        f"{S}: seed: Input should be a valid integer",
    ),
    "scenario fault not an object": (
        lambda d: _edit(d / S, _set("airflow_faults", [5])),
        f"{S}: airflow_faults[0]: Input should be a valid dictionary",
    ),
    "run.json a string": (
        lambda d: (d / KILLED / "run.json").write_text('"done"'),
        f"{KILLED}/run.json: expected a JSON object, got str",
    ),
    "task instances an object": (
        lambda d: (d / KILLED / "airflow" / "task_instances.json").write_text("{}"),
        "task_instances.json: expected a JSON list, got dict",
    ),
    "launches an object": (
        lambda d: (d / KILLED / "launches.json").write_text("{}"),
        "launches.json: expected a JSON list of objects",
    ),
    "error.json a list": (
        lambda d: (d / KILLED / "error.json").write_text("[]"),
        "error.json: expected a JSON object",
    ),
    "summary a list": (
        lambda d: (d / "summary.json").write_text("[]"),
        "summary.json: (file): Input should be a valid dictionary",
    ),
    "summary row without a name": (
        lambda d: (d / "summary.json").write_text('{"scenarios": [{"error": null}]}'),
        "summary.json: scenarios[0].scenario: Field required",
    ),
    "environment recorded in year 3e292": (
        lambda d: _edit(d / "environment.json", _set("recorded_at", 1e300)),
        "environment.json: recorded_at: Input should be less than or equal to",
    ),
    "environment not UTF-8": (
        lambda d: (d / "environment.json").write_bytes(b"\xfe"),
        "environment.json: not UTF-8",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_file_is_named_and_nothing_is_written(results, tmp_path, capsys, damage):
    folder = tmp_path / "damaged"
    shutil.copytree(results, folder)
    if not (folder / "environment.json").exists():
        (folder / "environment.json").write_text('{"airflow": "3.3.2", "recorded_at": 1}')
    harm, message = DAMAGE[damage]
    harm(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}/"), err
    assert message in err, err
    assert not (folder / "report.md").exists()
    assert main(["compare", str(results), str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_a_folder_that_is_no_results_folder_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv in (["report", str(tmp_path / "file")], ["compare", str(tmp_path), str(tmp_path)]):
        assert main(argv) == 2
        assert "not a results folder" in capsys.readouterr().err


@pytest.mark.slow
def test_an_errored_and_an_interrupted_scenario_are_shown_as_such(results, tmp_path, capsys):
    """A scenario with error.json (it raised) and one with no run.json (the harness was
    killed in it) are in the summary, the verdict grid and the list of what failed."""
    folder = tmp_path / "mixed"
    shutil.copytree(results, folder)
    scenario = json.loads((folder / NONE / "scenario.json").read_text())
    for name in ("checkpoint-none", "threaded-none"):
        (folder / name).mkdir()
        (folder / name / "scenario.json").write_text(
            json.dumps({**scenario, "name": name, "variant": name.split("-")[0]})
        )
    (folder / "checkpoint-none" / "error.json").write_text(
        json.dumps({"error": "ModeError: mode 'localtask' runs `airflow tasks run --local`"})
    )
    assert main(["report", str(folder)]) == 0
    report = (folder / "report.md").read_text()
    assert "`checkpoint-none`: not checked: ModeError: mode 'localtask' runs" in report
    assert "`threaded-none`: not checked: did not finish (no run.json with its ending)" in report
    assert "| [checkpoint-none](checkpoint-none/metrics.json) | checkpoint | none | error |" in (
        report
    )
    assert main(["compare", str(results), str(folder)]) == 0
    assert "only in B: checkpoint-none, threaded-none" in capsys.readouterr().out
