"""The report's charts. To add one: write a module here defining ``CHART`` (see base.py),
then list it in ``CHARTS`` below, in the order the report shows it."""

from __future__ import annotations

from harness.report.charts import gil, latency, loss, recovery, throughput, tries
from harness.report.charts.base import Chart, Outcome, render

__all__ = ["CHARTS", "Chart", "Outcome", "render"]

CHARTS: tuple[Chart, ...] = (
    throughput.CHART,
    loss.CHART,
    latency.CHART,
    recovery.CHART,
    gil.CHART,
    tries.CHART,
)
