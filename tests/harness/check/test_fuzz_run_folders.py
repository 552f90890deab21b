"""Fuzz: hypothesis-damaged results folders (files deleted, truncated, replaced by garbage
or by JSON of any shape, fields set to any value, lines appended, bytes that are not
UTF-8) given to ``check``, ``compare`` and ``report``: exit 0, or 2 with a message naming
the file; never a traceback (issue 14)."""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.__main__ import main
from tests.fuzz import examples
from tests.report._results import PLANS, write_results

pytestmark = pytest.mark.fuzz

NAME = "naive_loop-kill_task"
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([math.nan, math.inf, 1e300, -1])
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
#: The files of the folder, as the report and the checker read them.
REPORTED = [
    f"{NAME}/scenario.json", f"{NAME}/run.json", f"{NAME}/metrics.json",
    f"{NAME}/airflow/task_instances.json", f"{NAME}/airflow_faults.jsonl",
    f"{NAME}/launches.json", f"{NAME}/error.json", "summary.json", "environment.json",
]  # fmt: skip
CHECKED = [*REPORTED[:5], f"{NAME}/probe", f"{NAME}/ledger.sqlite", f"{NAME}/sink.sqlite"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished, checked scenario (killed and relaunched: faults, tries, task records)
    written by the real writers and checker, with the summary and environment a run has."""
    out = tmp_path_factory.mktemp("results")
    write_results(out, [p for p in PLANS if p.name == NAME])
    (out / "environment.json").write_text(json.dumps({"airflow": "3.3.2", "recorded_at": 1.0}))
    (out / NAME / "launches.json").write_text(json.dumps([{"pid": 1, "at": 1.0}]))
    return out


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (keys and indexes), up to four deep."""
    found = [at]
    if len(at) < 4 and isinstance(value, dict):
        found += [p for k, v in value.items() for p in _paths(v, (*at, k))]
    elif len(at) < 4 and isinstance(value, list):
        found += [p for i, v in enumerate(value[:5]) for p in _paths(v, (*at, i))]
    return found


def _damage(data: st.DataObject, folder: Path, targets: list[str]) -> None:
    """Harm one to three of ``targets`` in ``folder``, each in a way hypothesis picks."""
    for target in data.draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3)):
        path = folder / target
        if path.is_dir():  # the probe folder: one of its files, if one is left
            path = next(iter(sorted(path.glob("*.jsonl"))), path / "host-1.jsonl")
        how = data.draw(
            st.sampled_from(["delete", "truncate", "garbage", "json", "edit", "line", "byte"])
        )
        event(f"{target.split('/')[-1]}: {how}")
        raw = path.read_bytes() if path.is_file() else b""
        if how == "delete":
            path.unlink(missing_ok=True)
        elif how == "truncate":
            path.write_bytes(raw[: data.draw(st.integers(0, len(raw)))])
        elif how == "garbage":
            path.write_bytes(data.draw(st.binary(max_size=64)))
        elif how == "json":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data.draw(JSON)))
        elif how == "edit" and path.suffix == ".json" and raw:
            _edit(data, path)
        elif how in ("line", "edit"):
            line = json.dumps(data.draw(JSON)) if data.draw(st.booleans()) else "{\xff"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as f:
                f.write(line.encode("utf-8", "surrogateescape") + b"\n")
        else:
            at = data.draw(st.integers(0, len(raw)))
            path.write_bytes(raw[:at] + bytes([data.draw(st.integers(0x80, 0xFF))]) + raw[at:])


def _edit(data: st.DataObject, path: Path) -> None:
    """Set (or delete) one field of a JSON file, anywhere in it, to any JSON value."""
    try:
        value = json.loads(path.read_text())
    except ValueError:
        return
    where = data.draw(st.sampled_from(_paths(value)))
    if not where:
        value = data.draw(JSON)
    else:
        parent = value
        for part in where[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(JSON)
    path.write_text(json.dumps(value))


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def _refused_clearly(code: int, err: str, folder: Path) -> None:
    """0 or 1 (checked; 1: a hypothesis failed on what the damage left), or 2 naming what
    is wrong."""
    assert code in (0, 1, 2), err
    if code == 2:
        assert err.startswith("error: "), err
        assert str(folder) in err, err  # names the file (or the folder) that is wrong


SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@settings(SETTINGS, max_examples=examples(50))
@given(data=st.data())
def test_check_and_compare_of_a_damaged_folder_exit_0_or_2_naming_the_file(results, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "damaged"
        shutil.copytree(results, folder)
        _damage(data, folder, CHECKED + REPORTED[5:])
        code, err = _cli("compare", str(results), str(folder))
        _refused_clearly(code, err, folder)
        code, err = _cli("check", str(folder / NAME))
        event(f"check: exit {code}")
        _refused_clearly(code, err, folder)


# A folder the report accepts costs its charts (~3 s): nox -s fuzz's count / 10.
@settings(SETTINGS, max_examples=max(8, examples(8) // 10))
@given(data=st.data())
def test_report_of_a_damaged_folder_exits_0_or_2_naming_the_file(results, data):
    """The report reads only what the run wrote (not the ledger or sink, but for one
    chart); the damage goes there."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "damaged"
        shutil.copytree(results, folder)
        _damage(data, folder, REPORTED)
        code, err = _cli("report", str(folder))
        event(f"report: exit {code}")
        _refused_clearly(code, err, folder)
        assert (folder / "report.md").exists() == (code == 0)
