"""The behaviour x release table (``nox -s versions``) is what its cells say, and the copy
in tests/README.md is that table: regenerated, never edited by hand."""

from __future__ import annotations

import json

from tests.versions_table import BEHAVIOURS, FOLDER, README, read_cells, readme_copy, render


def test_the_table_is_the_measured_cells_rendered():
    releases = read_cells()
    assert len(releases) >= 2  # at least the two releases of the claims table
    assert (FOLDER / "table.md").read_text() == render(releases)


def test_the_readme_copy_is_the_table():
    assert readme_copy(README.read_text()) == (FOLDER / "table.md").read_text()


def test_every_cell_names_a_known_behaviour_and_its_release():
    for path in FOLDER.glob("*.json"):
        data = json.loads(path.read_text())
        assert path.stem == data["release"]  # the file is the release's own run
        assert set(data["cells"]) <= set(BEHAVIOURS)


def test_a_change_is_bold_in_the_first_release_that_has_it():
    table = render(
        {
            "2.10.5": {"10-sigterm": "fails"},
            "2.11.2": {"10-sigterm": "fails"},
            "3.0.6": {"10-sigterm": "streams on"},
            "3.1.8": {},
            "3.2.2": {"10-sigterm": "streams on"},
        }
    )
    row = next(line for line in table.splitlines() if "SIGTERM" in line)
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert cells == ["fails", "fails", "**streams on**", "not measured", "streams on"]
