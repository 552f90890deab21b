"""What changed between two results folders (``python -m harness compare A B``): the
environment (e.g. two Airflow versions), and per scenario present in both its verdict,
hypothesis and headline numbers, A -> B; scenarios only one of them ran are listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.check.headline import COLUMNS, fmt
from harness.report.document import Block, Heading, Items, Paragraph, Table, to_markdown
from harness.report.runs import load_results

__all__ = ["compare_results"]

_ENV_KEYS = ["airflow", "python", "implementation", "cpu_count", "processor", "platform"]
_COMPARED = [c for c in COLUMNS if c[0] not in ("scenario", "variant", "fault")]


def _cell(a: dict[str, Any], b: dict[str, Any], key: str) -> tuple[str, bool]:
    left, right = fmt(a, key), fmt(b, key)
    if left == right:
        return left, False
    delta = ""
    va, vb = a.get(key), b.get(key)
    numeric = (int, float)
    if isinstance(va, numeric) and isinstance(vb, numeric) and not isinstance(va, bool):
        delta = f" ({vb - va:+,.4g})"
    return f"{left} → {right}{delta}", True


def compare_results(a: Path, b: Path) -> str:
    """A Markdown account of what differs between results folders ``a`` and ``b``."""
    ra, rb = load_results(a, record_environment=False), load_results(b, record_environment=False)
    blocks: list[Block] = [
        Heading(1, f"Comparison: {a.name} → {b.name}"),
        Paragraph(f"A = `{a}`, B = `{b}`. Cells show A → B where they differ."),
        Heading(2, "Environment"),
    ]
    env_rows = [
        [key, str(ra.environment.get(key, "?")), str(rb.environment.get(key, "?"))]
        for key in _ENV_KEYS
        if key == "airflow" or ra.environment.get(key) != rb.environment.get(key)
    ]
    blocks.append(Table(["", "A", "B"], env_rows))
    runs_a = {s.name: s.headline for s in ra.scenarios}
    runs_b = {s.name: s.headline for s in rb.scenarios}
    common = [n for n in runs_a if n in runs_b]
    changed_rows, same = [], []
    for name in common:
        cells = [_cell(runs_a[name], runs_b[name], attr) for attr, _, _ in _COMPARED]
        if any(changed for _, changed in cells):
            changed_rows.append([name, *[text for text, _ in cells]])
        else:
            same.append(name)
    blocks.append(Heading(2, f"Scenarios in both ({len(common)})"))
    if changed_rows:
        blocks.append(Table(["scenario", *[h for _, h, _ in _COMPARED]], changed_rows))
    blocks.append(
        Paragraph(f"Unchanged: {', '.join(same)}." if same else "Every common scenario changed.")
    )
    only = [
        f"only in {side}: {', '.join(names)}"
        for side, names in [
            ("A", [n for n in runs_a if n not in runs_b]),
            ("B", [n for n in runs_b if n not in runs_a]),
        ]
        if names
    ]
    if only:
        blocks += [Heading(2, "Scenarios in one only"), Items(only)]
    return to_markdown(blocks)
