"""The results a person reads first: charts, ``report.md`` and ``index.html`` of a results
folder, and what changed between two of them.

Downstream only: it reads run folders (``harness.layout``, ``harness.check.history`` and the
checker for the latency distribution) and never starts anything.
"""

from __future__ import annotations

from harness.report.compare import compare_results
from harness.report.report import write_report

__all__ = ["compare_results", "write_report"]
