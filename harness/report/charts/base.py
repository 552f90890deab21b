"""What a chart is, how it is saved, and the helpers the charts share.

A chart is a :class:`Chart`: a file name, a heading, and ``draw(results)`` returning a
:class:`Drawn` (a matplotlib figure and the one sentence the report prints under it) or a
:class:`Skipped` (the reason there is no chart, printed instead). Charts build
``matplotlib.figure.Figure`` objects directly (no pyplot state); saving uses the Agg
canvas, so nothing needs a display.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report.palette import variant_colour
from harness.report.runs import Results, ScenarioRun

__all__ = [
    "Chart",
    "Drawn",
    "Outcome",
    "Skipped",
    "conditions",
    "first",
    "grid",
    "nice_log_needed",
    "render",
    "style",
]

_RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "figure.titlesize": 12,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "streamstall",  # stable SVG ids: a rebuild diffs cleanly
}


@dataclass(frozen=True)
class Drawn:
    """A drawn chart and the sentence saying what it shows."""

    figure: Figure
    caption: str


@dataclass(frozen=True)
class Skipped:
    """No chart, and why (the report prints the reason)."""

    reason: str


@dataclass(frozen=True)
class Chart:
    """One chart of the report: ``name`` is its file stem under ``charts/``."""

    name: str
    title: str
    draw: Callable[[Results], Drawn | Skipped]


@dataclass(frozen=True)
class Outcome:
    """What became of one chart: its files and caption, or why there are none."""

    chart: Chart
    caption: str | None = None
    png: Path | None = None
    svg: Path | None = None
    skipped: str | None = None


@contextmanager
def style() -> Iterator[None]:
    """The charts' shared matplotlib settings, without touching the global ones."""
    with mpl.rc_context(_RC):
        yield


def render(chart: Chart, results: Results, out_dir: Path) -> Outcome:
    """Draw ``chart`` and save it as PNG and SVG; a chart that raises becomes a skip whose
    reason is the error (the traceback goes to stderr), so one bad chart costs one chart."""
    try:
        with style():
            drawn = chart.draw(results)
            if isinstance(drawn, Skipped):
                return Outcome(chart, skipped=drawn.reason)
            out_dir.mkdir(parents=True, exist_ok=True)
            png, svg = out_dir / f"{chart.name}.png", out_dir / f"{chart.name}.svg"
            drawn.figure.savefig(png, dpi=110, bbox_inches="tight", metadata={"Software": None})
            drawn.figure.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    except Exception as error:  # one bad chart costs one chart: reported, not raised
        traceback.print_exc()
        return Outcome(chart, skipped=f"drawing failed: {type(error).__name__}: {error}")
    return Outcome(chart, drawn.caption, png, svg)


def conditions(results: Results) -> str:
    """The run's common conditions for a title: rate, duration, mode, Airflow version."""
    rates = sorted({s.rate for s in results.scenarios if s.rate is not None})
    durations = sorted({s.scenario.get("duration") for s in results.scenarios} - {None})
    modes = sorted({str(s.run.get("mode") or s.scenario.get("mode")) for s in results.scenarios})
    parts = []
    if rates:
        parts.append("/".join(f"{r:,.0f}" for r in rates) + " tweets/s")
    if durations:
        parts.append("/".join(f"{d:g}" for d in durations) + " s after first commit")
    parts.append("/".join(modes))
    airflow = results.environment.get("airflow")
    if airflow:
        parts.append(f"Airflow {airflow}")
    return ", ".join(parts)


def grid(
    results: Results,
    xlabel: str,
    ylabel: str,
    subtitle: Callable[[ScenarioRun], str] | None = None,
    panel_size: tuple[float, float] = (3.4, 1.9),
    sharey: bool = True,
) -> tuple[Figure, dict[tuple[str, str], Axes]]:
    """A figure of one panel per variant (row) x fault set (column), sharing both axes;
    rows are labelled with the variant (in its colour) and ``ylabel``, the bottom row with
    ``xlabel``; ``subtitle`` gives each panel a line of its own (e.g. the verdict); cells
    without a scenario say so. Returns the axes of the cells that have a scenario."""
    variants, faults = results.variants, results.fault_sets
    width, height = panel_size
    figure = Figure(figsize=(width * len(faults) + 0.8, height * len(variants) + 1.4))
    axes = figure.subplots(len(variants), len(faults), sharex=True, sharey=sharey, squeeze=False)
    cells = {}
    for r, variant in enumerate(variants):
        for c, fault in enumerate(faults):
            ax, runs = axes[r][c], results.cell(variant, fault)
            if runs:
                cells[(variant, fault)] = ax
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes,
                        color="#999999")  # fmt: skip
                ax.set_facecolor("#F7F7F7")
            lines = [f"fault: {fault}"] if r == 0 else []
            if subtitle and runs:
                lines.append(subtitle(first(runs)))
            ax.set_title("\n".join(lines), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{variant}\n{ylabel}", color=variant_colour(variant, variants),
                              fontweight="bold")  # fmt: skip
            if r == len(variants) - 1:
                ax.set_xlabel(xlabel)
    return figure, cells


def first(runs: list[ScenarioRun]) -> ScenarioRun:
    """The one scenario of a cell (the first, if a matrix crossed rates too)."""
    return runs[0]


def nice_log_needed(values: list[float]) -> bool:
    """Whether positive ``values`` span two orders of magnitude (a log axis reads better)."""
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and math.log10(max(positive) / min(positive)) >= 2
