"""Loss and duplicates per variant x fault: grouped bars, one glance showing which variant
survives which fault (a symmetric-log axis when the counts span orders of magnitude)."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from harness.report.charts.base import Chart, Drawn, Skipped, conditions, nice_log_needed
from harness.report.palette import variant_colour
from harness.report.runs import Results

__all__ = ["CHART"]

_MEASURES = [
    ("lost", "tweets lost\n(never committed)"),
    ("duplicates", "duplicate commits\n(copies after the first)"),
]


def _bars(ax: Axes, results: Results, key: str) -> None:
    variants, faults = results.variants, results.fault_sets
    width = 0.8 / len(variants)
    values = []
    for i, variant in enumerate(variants):
        x = np.arange(len(faults)) + (i - (len(variants) - 1) / 2) * width
        for j, fault in enumerate(faults):
            runs = [r for r in results.cell(variant, fault) if r.metrics is not None]
            colour = variant_colour(variant, variants)
            if not runs:
                ax.annotate("not run", xy=(x[j], 0), xytext=(0, 3), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize=6.5,
                            color="#999999")  # fmt: skip
                continue
            value = runs[0].queue.get(key) or 0
            created = runs[0].queue.get("created") or 0
            values.append(value)
            ax.bar(x[j], value, width * 0.92, color=colour)
            share = f"\n{value / created:.0%}" if value and created else ""
            ax.annotate(f"{value:,}{share}", xy=(x[j], value), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=6.5,
                        color="#333333" if value else colour,
                        fontweight="normal" if value else "bold")  # fmt: skip
    if nice_log_needed(values):
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, max(values) * 8)
    else:
        ax.set_ylim(0, max([*values, 1]) * 1.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if not any(values):
        ax.text(0.5, 0.6, f"no {key} in any scenario", transform=ax.transAxes, ha="center",
                color="#555555")  # fmt: skip
    ax.set_xticks(np.arange(len(faults)), [f"fault: {f}" for f in faults])
    ax.grid(axis="x", visible=False)


def draw(results: Results) -> Drawn | Skipped:
    if not any(s.metrics for s in results.scenarios):
        return Skipped("no scenario has metrics.json")
    faults, variants = results.fault_sets, results.variants
    figure = Figure(figsize=(max(6.5, 1.1 * len(faults) * max(len(variants), 2) * 0.55 + 2), 6))
    axes = figure.subplots(len(_MEASURES), 1, sharex=True)
    for ax, (key, label) in zip(axes, _MEASURES, strict=True):
        _bars(ax, results, key)
        ax.set_ylabel(f"{label}, tweets")
    handles = [Patch(color=variant_colour(v, variants), label=v) for v in variants]
    figure.legend(handles=handles, title="variant", loc="center left",
                  bbox_to_anchor=(1.0, 0.5), frameon=False)  # fmt: skip
    figure.suptitle(
        f"Tweets lost and duplicated per variant under each fault\n{conditions(results)}"
    )
    figure.tight_layout()
    caption = (
        "Bars count the judged window's tweets never committed (top) and the extra copies "
        "committed (bottom), with the share of tweets created; a bold 0 in a variant's colour "
        "means it survived that fault with nothing lost (or repeated)."
    )
    return Drawn(figure, caption)


CHART = Chart("loss", "Loss and duplicates per variant and fault", draw)
