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
}


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
