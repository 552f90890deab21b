"""Throughput over time, one panel per variant x fault, injected faults shaded (Jepsen's
style) and the seconds with no stream connection hatched."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report.charts.base import Chart, Drawn, Skipped, conditions, first, grid
from harness.report.palette import DOWNTIME, FAULT, TARGET, variant_colour
from harness.report.runs import Results, ScenarioRun

__all__ = ["CHART"]


def _subtitle(run: ScenarioRun) -> str:
    if run.metrics is None:
        return f"error: {run.error}"[:60]
    return f"{run.metrics.get('verdict')}, lost {run.queue.get('lost', 0):,}"


def _top(runs: list[ScenarioRun]) -> float:
    """The shared y limit: the highest second, but at most 2.5x the highest target rate
    (a catch-up burst would flatten every other panel; clipped peaks are labelled)."""
    peak = max((max(s.timing.get("throughput", {}).get("per_second") or [0]) for s in runs),
               default=0)  # fmt: skip
    rate = max((s.rate or 0 for s in runs), default=0)
    top = min(peak, 2.5 * rate) if rate else peak
    return max(top * 1.08, rate * 1.25, 1.0)


def _panel(ax: Axes, run: ScenarioRun, colour: str, top: float) -> None:
    if run.metrics is None:
        return
    start = run.window_start
    per_second = run.timing.get("throughput", {}).get("per_second") or []
    for name, a, b in run.fault_windows():
        if b is not None and b > a:
            ax.axvspan(a - start, b - start, color=FAULT, alpha=0.22, lw=0)
        else:
            ax.axvline(a - start, color=FAULT, lw=1.5)
        ax.annotate(name, xy=(a - start, 1), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", va="top", fontsize=7,
                    color=FAULT, annotation_clip=True)  # fmt: skip
    for period in run.timing.get("downtime", {}).get("periods", []):
        a = (period.get("start") or start) - start
        ax.axvspan(a, a + (period.get("seconds") or 0), facecolor="none", edgecolor=DOWNTIME,
                   hatch="///", lw=0, alpha=0.6)  # fmt: skip
    if run.rate:
        ax.axhline(run.rate, color=TARGET, ls="--", lw=0.8)
    if per_second:
        ax.stairs(per_second, range(len(per_second) + 1), color=colour, lw=1.6)
        peak = max(per_second)
        if peak > top:
            at = per_second.index(peak)
            ax.annotate(f"{peak:,} ↑", xy=(at + 0.5, top), xytext=(-3, -3),
                        textcoords="offset points", ha="right", va="top", fontsize=7,
                        color=colour, bbox={"fc": "white", "ec": "none", "pad": 0.5})  # fmt: skip


def draw(results: Results) -> Drawn | Skipped:
    if not any(s.timing.get("throughput") for s in results.scenarios):
        return Skipped("no scenario has a throughput series (no metrics.json)")
    figure, cells = grid(
        results, "s since the first stream connect", "tweets/s", _subtitle, panel_size=(3.6, 2.0)
    )
    runs = {cell: first(results.cell(*cell)) for cell in cells}
    top = _top(list(runs.values()))
    for (variant, fault), ax in cells.items():
        _panel(ax, runs[(variant, fault)], variant_colour(variant, results.variants), top)
    for ax in cells.values():
        ax.set_ylim(0, top)
        ax.set_xlim(left=0)
    figure.suptitle(
        f"Tweets committed per second (first commits only) under each fault\n{conditions(results)}"
    )
    handles = [
        Line2D([], [], color="#333333", lw=1.6, label="committed tweets/s (colour: variant)"),
        Line2D([], [], color=TARGET, ls="--", lw=0.8, label="target rate"),
        Patch(color=FAULT, alpha=0.22, label="injected fault, start to stop"),
        Patch(facecolor="none", edgecolor=DOWNTIME, hatch="///", label="no stream connection"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=4, frameon=False,
                  bbox_to_anchor=(0.5, 0))  # fmt: skip
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    caption = (
        "Each panel is one scenario: the line is tweets committed for the first time per "
        "second, red bands are injected faults (from the kill or signal to the relaunch), "
        "hatching is time with no stream connection; a dip followed by a spike above the target "
        "is a backlog caught up, a dip without one is tweets never committed."
    )
    return Drawn(figure, caption)


CHART = Chart("throughput", "Throughput over time", draw)
