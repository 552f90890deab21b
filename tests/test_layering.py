"""The folder tree is the data path: scenario -> run -> (fake stream + Airflow + nemesis)
-> ledgers -> check -> report. Nothing downstream imports upstream; this walks every
import of the project's code and fails on one that does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> the project packages it may import (itself always). ``task/`` runs inside
#: Airflow's task processes; ``check/`` and ``report/`` read run folders only.
ALLOWED = {
    "streamstall_probe": set(),
    "fake_stream": {"streamstall_probe"},  # clients.py: the redirect a user's DAG uses
    "harness.layout": set(),
    "harness.procs": set(),
    "harness.cgroups": set(),
    "harness.redis_server": {"harness.procs"},
    "harness.watchdog": {"harness.procs"},
    "harness.task": {"harness.layout", "fake_stream", "streamstall_probe"},
    "harness.check": {"harness.layout", "fake_stream"},
    "harness.report": {"harness.layout", "harness.check"},
    "harness.airflow": {
        "harness.layout",
        "harness.procs",
        "harness.redis_server",
        "harness.task",
        "streamstall_probe",
    },
    "harness.nemesis": {"harness.procs", "harness.cgroups", "harness.airflow"},
    "harness.scenario": {
        "fake_stream",
        "harness.airflow",
        "harness.nemesis",
        "harness.check",
        "harness.task",
    },
    "harness.run": {"fake_stream", "harness"},
    "harness.__main__": {"harness"},
}


def _package(module: str) -> str:
    """The entry of ALLOWED a module belongs to."""
    for name in sorted(ALLOWED, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module}: in no package of ALLOWED; add it there")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("harness", "fake_stream", "streamstall_probe")}


SOURCES = sorted(
    [ROOT / "streamstall_probe.py"]
    + [p for top in ("harness", "fake_stream") for p in (ROOT / top).rglob("*.py")]
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_data_path(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if module == "harness":
        return  # the package's own docstring file
    own = _package(module)
    allowed = ALLOWED[own] | {own}
    wrong = sorted(
        name
        for name in _imports(path)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    )
    assert wrong == [], f"{module} ({own}) may not import {wrong}"


def test_the_rule_catches_an_upstream_import(tmp_path):
    """The walker sees a check/ module importing run/ (the rule could otherwise pass by
    seeing nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.run.runner import run_scenario\nimport harness.nemesis\n")
    assert _imports(bad) == {"harness.run.runner", "harness.nemesis"}
    allowed = ALLOWED["harness.check"] | {"harness.check"}
    assert not any("harness.run.runner".startswith(a + ".") for a in allowed)
