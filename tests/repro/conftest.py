"""The repro tests' shared fixture: a measured behaviour written as a cell of the
behaviour x release table (``nox -s versions``; tests/versions_table.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

#: Where ``nox -s versions(<release>)`` wants this release's cells (unset: not recorded).
CELLS_ENV = "STREAMSTALL_VERSION_CELLS"


@pytest.fixture
def version_cell() -> Callable[[str, str], None]:
    """``version_cell(behaviour, outcome)``: record what this release did; call it after
    the assertions that back it (a failed test records nothing)."""

    def record(behaviour: str, outcome: str) -> None:
        path = os.environ.get(CELLS_ENV)
        if not path:
            return
        out = Path(path)
        cells = json.loads(out.read_text()) if out.exists() else {}
        cells["release"] = version("apache-airflow")
        cells.setdefault("cells", {})[behaviour] = outcome
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")

    return record
