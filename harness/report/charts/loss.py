"""Loss and duplicates per variant x fault: grouped bars, one glance showing which variant
survives which fault (a symmetric-log axis when the counts span orders of magnitude). The
loss bars are stacked by cause (hatched: no connection open, delivered but not committed,
...); the duplicates panel is left out when nothing was repeated."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from harness.check.headline import lost_by_cause
from harness.report.charts.base import Chart, Drawn, Skipped, conditions, nice_log_needed
from harness.report.palette import variant_colour
from harness.report.runs import Results

__all__ = ["CHART"]

_MEASURES = [
    ("lost", "tweets lost\n(never committed)"),
    ("duplicates", "duplicate commits\n(copies after the first)"),
]
#: Hatches of the causes of loss, most common first (more causes cycle through them).
_HATCHES = ["", "////", "....", "xxxx", "\\\\", "++++"]
#: The widest the figure gets (inches; ~1,300 px at the report's 110 dpi).
_MAX_WIDTH = 12.0


def _causes(results: Results) -> list[str]:
    """Every cause of loss in the run, the most tweets first."""
    totals: dict[str, int] = {}
    for run in results.scenarios:
        for cause, count in lost_by_cause(run.metrics or {}).items():
            totals[cause] = totals.get(cause, 0) + count
    return sorted(totals, key=lambda c: -totals[c])


def _bars(ax: Axes, results: Results, key: str, causes: list[str]) -> None:
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
            parts = lost_by_cause(runs[0].metrics or {}) if key == "lost" else {}
            if not parts or sum(parts.values()) != value:
                parts = {"": value}  # duplicates, or causes that do not add up: one bar
            bottom = 0
            for cause, count in sorted(parts.items(), key=lambda kv: _order(causes, kv[0])):
                hatch = _hatch(causes, cause) if cause else ""
                ax.bar(x[j], count, width * 0.92, bottom=bottom, color=colour, hatch=hatch,
                       edgecolor="white", linewidth=0.4)  # fmt: skip
                bottom += count
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
    ax.set_xticks(np.arange(len(faults)), [f"fault:\n{f}" for f in faults])
    ax.grid(axis="x", visible=False)


def _hatch(causes: list[str], cause: str) -> str:
    return _HATCHES[_order(causes, cause) % len(_HATCHES)]


def _order(causes: list[str], cause: str) -> int:
    return causes.index(cause) if cause in causes else len(causes)


def draw(results: Results) -> Drawn | Skipped:
    if not any(s.metrics for s in results.scenarios):
        return Skipped("no scenario has metrics.json")
    faults, variants = results.fault_sets, results.variants
    repeated = any(s.queue.get("duplicates") for s in results.scenarios)
    measures = _MEASURES if repeated else _MEASURES[:1]
    causes = _causes(results)
    width = min(_MAX_WIDTH, max(6.5, 1.1 * len(faults) * max(len(variants), 2) * 0.55 + 2))
    figure = Figure(figsize=(width, 3 * len(measures) + 0.5))
    axes = figure.subplots(len(measures), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, label) in zip(axes, measures, strict=True):
        _bars(ax, results, key, causes)
        ax.set_ylabel(f"{label}, tweets")
    handles = [Patch(color=variant_colour(v, variants), label=v) for v in variants]
    legend = figure.legend(handles=handles, title="variant", loc="upper left",
                           bbox_to_anchor=(1.0, 0.95), frameon=False)  # fmt: skip
    if causes:
        hatched = [
            Patch(facecolor="#BBBBBB", edgecolor="white", hatch=_hatch(causes, c), label=c)
            for c in causes
        ]
        figure.add_artist(legend)
        figure.legend(handles=hatched, title="lost: cause", loc="lower left",
                      bbox_to_anchor=(1.0, 0.05), frameon=False)  # fmt: skip
    figure.suptitle(
        f"Tweets lost and duplicated per variant under each fault\n{conditions(results)}"
    )
    figure.tight_layout()
    caption = (
        "Bars count the judged window's tweets never committed"
        + (" (top) and the extra copies committed (bottom)" if repeated else "")
        + ", with the share of tweets created; the loss is stacked by cause (hatches: "
        "no connection open, delivered but never committed, ...); a bold 0 in a variant's "
        "colour means it survived that fault with nothing lost"
        + (" (or repeated)." if repeated else "; nothing was repeated in any scenario.")
    )
    return Drawn(figure, caption)


CHART = Chart("loss", "Loss and duplicates per variant and fault", draw)
