"""Recovery time per fault per variant: seconds from each fault's start to the first
commit after it (metrics.json ``timing.recovery``); a fault never recovered from within the
window is a hatched bar as long as the window had left (a lower bound)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.report.charts.base import Chart, Drawn, Skipped, conditions
from harness.report.palette import variant_colour
from harness.report.runs import Results, ScenarioRun

__all__ = ["CHART"]


def _worst(run: ScenarioRun) -> tuple[float, bool] | None:
    """The slowest recovery of a scenario: (seconds, recovered); a fault with no commit after
    it counts as the rest of the window, not recovered."""
    stop = (run.metrics or {}).get("window", {}).get("stop")
    worst: tuple[float, bool] | None = None
    for entry in run.timing.get("recovery", []):
        seconds, recovered = entry.get("recovery_seconds"), True
        if seconds is None:
            if stop is None or entry.get("at") is None:
                continue
            seconds, recovered = max(stop - entry["at"], 0.0), False
        if worst is None or (not recovered, seconds) > (not worst[1], worst[0]):
            worst = (float(seconds), recovered)
    return worst


def draw(results: Results) -> Drawn | Skipped:
    variants = results.variants
    cells = {(s.variant, s.fault): _worst(s) for s in results.scenarios}
    faults = [f for f in results.fault_sets if any(cells.get((v, f)) for v in variants)]
    if not faults:
        return Skipped("no scenario recorded a fault with a recovery time (no injected faults)")
    figure = Figure(figsize=(max(6.5, 1.1 * len(faults) * max(len(variants), 2) * 0.55 + 2), 3.8))
    ax = figure.subplots()
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        colour = variant_colour(variant, variants)
        for j, fault in enumerate(faults):
            x = j + (i - (len(variants) - 1) / 2) * width
            worst = cells.get((variant, fault))
            if worst is None:
                ax.annotate("not run" if not results.cell(variant, fault) else "no fault",
                            xy=(x, 0), xytext=(0, 3), textcoords="offset points", rotation=90,
                            ha="center", va="bottom", fontsize=6.5, color="#999999")  # fmt: skip
                continue
            seconds, recovered = worst
            ax.bar(x, seconds, width * 0.92, color=colour if recovered else "none",
                   edgecolor=colour, hatch=None if recovered else "///", lw=1.2)  # fmt: skip
            label = f"{seconds:.1f} s" if recovered else f"≥ {seconds:.1f} s\nnever"
            ax.annotate(label, xy=(x, seconds), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=6.5)  # fmt: skip
    ax.set_xticks(np.arange(len(faults)), [f"fault: {f}" for f in faults])
    ax.grid(axis="x", visible=False)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
    ax.set_ylabel("recovery: fault start to\nfirst commit after it (s)")
    handles = [Patch(color=variant_colour(v, variants), label=v) for v in variants]
    handles.append(Patch(facecolor="none", edgecolor="#555555", hatch="///",
                         label="no commit after the fault\n(rest of the window)"))  # fmt: skip
    figure.legend(handles=handles, title="variant", loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False)  # fmt: skip
    figure.suptitle(f"Recovery time per variant after each injected fault\n{conditions(results)}")
    figure.tight_layout()
    caption = (
        "Seconds from the fault (the kill, signal or moved worker) to the first tweet committed "
        "after it, the slowest if a scenario had several faults; includes Airflow's retry delay "
        "and the new try's start-up. Hatched: no commit until the window ended."
    )
    return Drawn(figure, caption)


CHART = Chart("recovery", "Recovery time after a fault", draw)
