"""``python -m harness check`` on damaged run folders: a clear error naming the file and
the problem, exit code 2, and no metrics.json (never a wrong number)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fake_stream import snowflake
from harness.__main__ import main
from harness.layout import RunLayout
from tests.harness.check._histories import T0_MS, T0_WALL, Spec, write_run

#: run.json's ending, as the runner writes it once a run has ended on the ledger.
FINISHED = {"how": "quiescent", "task_ended_by": "itself", "stop_requested_at": T0_WALL + 0.03}


def _good_run(run_dir: Path) -> RunLayout:
    ids = [snowflake.encode(T0_MS + slot, 0) for slot in range(10)]
    spec = Spec(
        slot_counts=[1] * 10,
        deliveries=[(1, 0, 10, "acked")],
        drops=[(None, 0, 0, "no_consumer")],
        commits=[(T0_WALL + 0.02, 7, 1, ids)],
        opened_at=[T0_WALL],
        stopped_at=T0_WALL + 0.01,
        grace=0.0,
        tries=[(7, 1, "ok")],
        ending=FINISHED,
    )
    write_run(spec, run_dir)
    return RunLayout(run_dir)


def _sql(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


_END_ONLY = b'{"time": 1, "pid": 7, "try": 1, "type": "ok", "f": "task", "value": {}}\n'
DAMAGE = {
    "missing ledger": (lambda r: r.ledger.unlink(), "ledger.sqlite: no ledger file"),
    "truncated ledger": (lambda r: _truncate(r.ledger), "ledger.sqlite"),
    "garbage ledger": (
        lambda r: r.ledger.write_bytes(b"not a database" * 100),
        "ledger.sqlite: not a readable ledger",
    ),
    "unclean stop": (
        lambda r: _sql(r.ledger, "DELETE FROM meta WHERE key = 'stopped_at'"),
        "did not stop cleanly",
    ),
    "gap in created": (lambda r: _sql(r.ledger, "DELETE FROM created WHERE slot = 4"), "gap-free"),
    "wrong schema": (
        lambda r: _sql(r.ledger, "UPDATE meta SET value = '99' WHERE key = 'schema_version'"),
        "schema_version 99",
    ),
    "missing sink": (lambda r: r.sink.unlink(), "sink.sqlite: no sink database"),
    "row without probe": (
        lambda r: _sql(r.sink, "INSERT INTO tweets VALUES (1, 0, 0, 0, 0)"),
        "without the probe",
    ),
    "short blob": (
        lambda r: _sql(r.sink, "UPDATE commits SET tweet_ids = x'00'"),
        "does not hold its count",
    ),
    "torn probe record": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), b'{"time": 1'),
        "truncated",
    ),
    "probe not json": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), b"hello\n"),
        ":3: not a JSON record",
    ),
    "probe missing keys": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), b'{"time": 1}\n'),
        ":3: not a probe record",
    ),
    "end before start": (
        lambda r: _write(next(r.probe_dir.glob("*.jsonl")), _END_ONLY),
        "no start",
    ),
    "bad fault record": (
        lambda r: r.airflow_faults.write_text('{"f": "start"}\n'),
        "airflow_faults.jsonl:1: not a fault record",
    ),
    "bad run.json": (lambda r: r.run.write_text("{"), "run.json: not readable JSON"),
    # A folder from before the nemesis's file was renamed: its faults must not go unseen.
    "old fault file name": (
        lambda r: (r.root / "faults.jsonl").write_text('{"time": 1, "f": "start"}\n'),
        "faults.jsonl: an older name of airflow_faults.jsonl",
    ),
    "bad scenario.json": (
        lambda r: r.scenario.write_text('{"hypothesis": 3}'),
        "scenario.json: no readable hypothesis list",
    ),
    # JSON of the wrong type or not UTF-8, in every file check reads (issue 14).
    "run.json a list": (lambda r: r.run.write_text("[]"), "run.json: expected a JSON object"),
    "run.json grace as text": (
        lambda r: _json(r.run, {"grace": "2", "ending": FINISHED}),
        "run.json: grace: Input should be a valid number",
    ),
    "run.json created_until NaN": (
        lambda r: r.run.write_text('{"created_until": NaN, "ending": {"how": "quiescent"}}'),
        "run.json: created_until: Input should be a finite number",
    ),
    "run.json ending a string": (
        lambda r: _json(r.run, {"ending": "quiescent"}),
        "run.json: ending: Input should be a valid dictionary",
    ),
    "run.json not UTF-8": (lambda r: r.run.write_bytes(b"\xff\xfe{}"), "run.json: not UTF-8"),
    "task instances an object": (
        lambda r: _json(r.task_instances, {"try_number": 1}),
        "task_instances.json: expected a JSON list, got dict",
    ),
    "task instance run_id a list": (
        lambda r: _json(r.task_instances, [{"run_id": [1], "try_number": 1}]),
        "task_instances.json: [0].run_id: Input should be a valid string",
    ),
    "probe time as text": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), _PROBE_LINE.replace(b"1.0", b'"1"')),
        ":3: not a probe record",
    ),
    "probe value not an object": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), _PROBE_LINE.replace(b"{}", b"5")),
        ":3: not a probe record",
    ),
    "probe type unknown": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), _PROBE_LINE.replace(b"info", b"x")),
        ":3: not a probe record",
    ),
    "probe not UTF-8": (
        lambda r: _append(next(r.probe_dir.glob("*.jsonl")), b'{"\xff": 1}\n'),
        ":3: not a JSON record",
    ),
    "probe file a folder": (lambda r: (r.probe_dir / "x.jsonl").mkdir(), "x.jsonl: cannot read"),
    "fault record a list": (
        lambda r: r.airflow_faults.write_text("[1]\n"),
        "airflow_faults.jsonl:1: not a fault record",
    ),
    "fault time NaN": (
        lambda r: r.airflow_faults.write_text('{"time": NaN, "f": "start"}\n'),
        "airflow_faults.jsonl:1: not a fault record (needs a finite time)",
    ),
    "fault file not UTF-8": (
        lambda r: r.airflow_faults.write_bytes(b"\xff\n"),
        "airflow_faults.jsonl:1: not a JSON record",
    ),
    "scenario.json a list": (
        lambda r: r.scenario.write_text("[]"),
        "scenario.json: no readable hypothesis list",
    ),
    "scenario.json truncated": (
        lambda r: r.scenario.write_text('{"hypothesis": ["lo'),
        "scenario.json: not readable JSON",
    ),
    "scenario.json not UTF-8": (
        lambda r: r.scenario.write_bytes(b'{"hypothesis": ["\xe9"]}'),
        "scenario.json: not UTF-8 text",
    ),
    "scenario.json unknown metric": (
        lambda r: _json(r.scenario, {"hypothesis": [{"text": "lsot == 0"}]}),
        "scenario.json: hypothesis[0]: unknown metric 'lsot'",
    ),
    "scenario.json deeply nested": (
        lambda r: r.scenario.write_text("[" * 100_000 + "]" * 100_000),
        "scenario.json: JSON nested too deeply to read",
    ),
    "ledger a folder": (lambda r: (r.ledger.unlink(), r.ledger.mkdir()), "ledger.sqlite"),
}

_PROBE_LINE = b'{"time": 1.0, "pid": 7, "try": 1, "type": "info", "f": "mark", "value": {}}\n'


def _json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_the_undamaged_run_checks(tmp_path, capsys):
    _good_run(tmp_path)
    assert main(["check", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["verdict"] == "exactly-once"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_run_is_an_error_naming_the_file(tmp_path, capsys, damage):
    layout = _good_run(tmp_path)
    harm, message = DAMAGE[damage]
    harm(layout)
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not layout.metrics.exists()


@pytest.mark.parametrize(
    "unfinished",
    ["no run.json", "no ending", "ending null", "killed: no run.json, ledger not closed"],
)
def test_a_run_that_did_not_finish_is_not_judged(tmp_path, capsys, unfinished):
    """A folder without its end-of-run record (a killed harness) gets no verdict: exit 2
    saying so, and no metrics.json (it once got "at-most-once, lost 3,718")."""
    layout = _good_run(tmp_path)
    if unfinished == "no ending":
        _json(layout.run, {"stopped_at": T0_WALL + 0.01, "grace": 0.0})
    elif unfinished == "ending null":
        _json(layout.run, {"stopped_at": T0_WALL + 0.01, "grace": 0.0, "ending": None})
    else:
        layout.run.unlink()
    if unfinished.startswith("killed"):
        _sql(layout.ledger, "DELETE FROM meta WHERE key = 'stopped_at'")
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {layout.run}: ")
    assert "the run did not finish" in err
    assert not layout.metrics.exists()


def test_check_of_a_missing_folder_says_so(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such folder\n"
