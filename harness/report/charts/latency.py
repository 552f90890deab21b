"""End-to-end latency (creation -> first commit) as a CDF per variant, one panel per fault,
with each curve's p50 and p99 marked (the values of metrics.json)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.report.charts.base import Chart, Drawn, Skipped, conditions
from harness.report.palette import variant_colour
from harness.report.runs import Results, ScenarioRun

__all__ = ["CHART"]

_POINTS = np.linspace(0, 1, 1001)
_FLOOR = 1e-3  # s: the log axis starts here; faster commits are drawn at the floor


def _curve(run: ScenarioRun) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(latency s, cumulative share) of the committed tweets; the flag says whether it
    comes from the raw files (True) or only metrics.json's percentiles (False)."""
    latencies = run.latencies
    if latencies is not None and len(latencies):
        return np.quantile(latencies, _POINTS), _POINTS, True
    latency = run.timing.get("latency", {})
    marks = [(latency.get(k), q) for k, q in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99),
                                               ("p999", 0.999), ("max", 1.0)]]  # fmt: skip
    marks = [(v, q) for v, q in marks if v is not None]
    if not marks:
        return None
    values, shares = zip(*marks, strict=True)
    return np.array(values), np.array(shares), False


def draw(results: Results) -> Drawn | Skipped:
    curves = {s.name: _curve(s) for s in results.scenarios if s.metrics is not None}
    if not any(curves.values()):
        return Skipped("no scenario committed a tweet of its window")
    faults, variants = results.fault_sets, results.variants
    columns = min(len(faults), 3)
    rows = -(-len(faults) // columns)
    figure = Figure(figsize=(4.0 * columns + 1.8, 3.0 * rows + 1.0))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    approximate = False
    for ax, fault in zip(axes, faults, strict=False):
        for variant in variants:
            for run in results.cell(variant, fault):
                curve = curves.get(run.name)
                if curve is None:
                    continue
                x, y, exact = curve
                approximate |= not exact
                colour = variant_colour(variant, variants)
                ax.step(np.maximum(x, _FLOOR), y, where="post", color=colour, lw=1.6,
                        ls="-" if exact else ":")  # fmt: skip
                latency = run.timing.get("latency", {})
                for key, share, marker in [("p50", 0.5, "o"), ("p99", 0.99, "^")]:
                    if latency.get(key) is not None:
                        ax.plot(max(latency[key], _FLOOR), share, marker, color=colour, ms=6,
                                mec="white", mew=0.8)  # fmt: skip
        ax.set_title(f"fault: {fault}", fontweight="bold")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.axhline(0.99, color="#999999", lw=0.6, ls="--")
    for ax in axes[len(faults) :]:
        ax.set_visible(False)
    for ax in axes[: len(faults)]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("share of committed tweets\ncommitted within x")
        if ax.get_subplotspec().is_last_row() or ax is axes[len(faults) - 1]:
            ax.set_xlabel("latency, creation to first commit (s, log)")
            ax.xaxis.set_tick_params(labelbottom=True)
    handles = [Line2D([], [], color=variant_colour(v, variants), lw=1.6, label=v) for v in variants]
    handles += [
        Line2D([], [], ls="", marker="o", color="#555555", label="p50"),
        Line2D([], [], ls="", marker="^", color="#555555", label="p99"),
    ]
    if approximate:
        handles.append(Line2D([], [], color="#555555", ls=":", label="percentiles only"))
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  title="variant")  # fmt: skip
    figure.suptitle(f"End-to-end latency CDF per variant under each fault\n{conditions(results)}")
    figure.tight_layout()
    caption = (
        "For each fault, the share of committed tweets committed within a given time of their "
        "creation (lost tweets are not in the curves; see the loss chart); a curve far to the "
        "right, or a long flat tail before 1, is a backlog left by a fault or a slow consumer."
    )
    return Drawn(figure, caption)


CHART = Chart("latency", "End-to-end latency", draw)
