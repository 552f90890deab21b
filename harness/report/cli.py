"""``python -m harness report <dir>`` and ``python -m harness compare A B``: exit 2, naming
the file and the problem, on a folder that is not a results folder or holds a damaged
file (:class:`~harness.report.runs.ResultsError`), or on one they cannot write to."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["compare_command", "report_command"]

T = TypeVar("T")


def _is_results(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/scenario.json"))


def _not_results(paths: list[Path]) -> bool:
    """Say so (and True) if one of ``paths`` is not a results folder."""
    for path in paths:
        if not _is_results(path):
            print(f"error: {path}: not a results folder (no <scenario>/scenario.json)",
                  file=sys.stderr)  # fmt: skip
            return True
    return False


def _attempt(action: Callable[[], T]) -> T | None:
    """``action()``; or None, having said why, if a results file is damaged or the output
    cannot be written."""
    from harness.report.runs import ResultsError

    try:
        return action()
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e.filename}: cannot write ({e.strerror})", file=sys.stderr)
    return None


def report_command(run_dir: Path) -> int:
    """Rebuild charts, report.md and index.html; exit 2 if ``run_dir`` has no scenarios."""
    from harness.report.report import write_report

    if _not_results([run_dir]):
        return 2
    report = _attempt(lambda: write_report(run_dir))
    if report is None:
        return 2
    print(f"report: {report}\nhtml:   {run_dir / 'index.html'}")
    return 0


def compare_command(a: Path, b: Path, out: Path | None) -> int:
    """Print (and with ``out``, write) what changed from results folder A to B."""
    from harness.report.compare import compare_results

    def compare() -> str:
        text = compare_results(a, b)
        if out:
            out.write_text(text)
        return text

    if _not_results([a, b]):
        return 2
    text = _attempt(compare)
    if text is None:
        return 2
    print(text, end="")
    return 0
