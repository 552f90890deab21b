"""The behaviour x release table of ``nox -s versions``: built from the cells each release's
run wrote (``results/versions/<release>.json``), into ``results/versions/table.md`` and
the copy in tests/README.md. ``python -m tests.versions_table`` rebuilds both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "versions"
README = ROOT / "tests" / "README.md"
BEGIN = "<!-- versions table: written by nox -s versions, do not edit -->"
END = "<!-- end of versions table -->"

#: The rows, in order: behaviour key (as the tests record it) -> what it is. "(worker)":
#: on the release's worker mode (3.x: `standalone`, 2.x: `localtask`).
BEHAVIOURS = {
    "3-retry-under-dags-test": "3: a try times out with a retry left (`dags test`)",
    "4-oom-kill": "4: the kernel's OOM killer ends a leaking try (worker)",
    "killed-try-retry": "a killed try (that OOM kill): when Airflow fails and retries it",
    "9-except-exception": "9: `except Exception` around the loop, `execution_timeout` fires",
    "9-except-base-exception": "9: `except BaseException` around the loop, `execution_timeout`",
    "10-sigterm": "10: a bare SIGTERM to the task (`dags test`)",
    "10-clear": "10: the running try cleared through the API (worker)",
    "10-worker-shutdown": "10: a deploy stops the try's worker: SIGTERM, SIGKILL 10 s later",
}


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split(".") if part.isdigit())


def read_cells(folder: Path = FOLDER) -> dict[str, dict[str, str]]:
    """release -> behaviour -> outcome, for every release measured."""
    releases = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        releases[data["release"]] = data["cells"]
    return dict(sorted(releases.items(), key=lambda item: _release_key(item[0])))


def render(releases: dict[str, dict[str, str]]) -> str:
    """The Markdown table: a row per behaviour, a column per release (oldest first); a
    cell that differs from the release before it is in bold: the first release where the
    behaviour changed."""
    names = list(releases)
    lines = [
        "| behaviour | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, title in BEHAVIOURS.items():
        cells, previous = [], None
        for release in names:
            outcome = releases[release].get(key)
            text = "not measured" if outcome is None else outcome
            if outcome is not None and previous is not None and outcome != previous:
                text = f"**{text}**"
            cells.append(text)
            previous = outcome if outcome is not None else previous
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def readme_copy(text: str) -> str | None:
    """The table between the markers of tests/README.md (None: no markers)."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(folder: Path = FOLDER, readme: Path = README) -> str:
    """Rebuild table.md and the README's copy from the cells; the table."""
    table = render(read_cells(folder))
    (folder / "table.md").write_text(table)
    text = readme.read_text()
    if readme_copy(text) is None:
        raise SystemExit(f"{readme}: no {BEGIN!r} ... {END!r} block to write the table into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    return table


if __name__ == "__main__":
    sys.stdout.write(write())
