"""``python -m harness report <dir>`` and ``python -m harness compare A B``."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["compare_command", "report_command"]


def _is_results(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/scenario.json"))


def report_command(run_dir: Path) -> int:
    """Rebuild charts, report.md and index.html; exit 2 if ``run_dir`` has no scenarios."""
    from harness.report.report import write_report

    if not _is_results(run_dir):
        print(f"error: {run_dir}: not a results folder (no <scenario>/scenario.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    report = write_report(run_dir)
    print(f"report: {report}\nhtml:   {run_dir / 'index.html'}")
    return 0


def compare_command(a: Path, b: Path, out: Path | None) -> int:
    """Print (and with ``out``, write) what changed from results folder A to B."""
    from harness.report.compare import compare_results

    for path in (a, b):
        if not _is_results(path):
            print(f"error: {path}: not a results folder (no <scenario>/scenario.json)",
                  file=sys.stderr)  # fmt: skip
            return 2
    text = compare_results(a, b)
    if out:
        out.write_text(text)
    print(text, end="")
    return 0
