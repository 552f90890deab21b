"""Airflow task-instance timeline, one panel per variant x fault: a row per task process,
Airflow's record of its try as a bar coloured by state, the probe's view of the task code
inside it, faults as markers. "SIGTERM -> success", a killed try Airflow still calls
``running``, or an orphan overlapping its retry show up as shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report.charts.base import Chart, Drawn, Skipped, conditions, first, grid
from harness.report.palette import FAULT, state_colour
from harness.report.runs import Results, ScenarioRun

__all__ = ["CHART"]

_STARTING = "#D9D9D9"


@dataclass
class _Process:
    """Everything known about one task process, in UNIX s."""

    pid: int
    launched: float | None = None
    airflow: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None

    @property
    def begins(self) -> float:
        times = [self.launched, (self.probe or {}).get("started_at")]
        return min((t for t in times if t is not None), default=0.0)


def _processes(run: ScenarioRun) -> list[_Process]:
    by_pid: dict[int, _Process] = {}

    def get(pid: Any) -> _Process | None:
        return by_pid.setdefault(int(pid), _Process(int(pid))) if pid is not None else None

    for launch in run.launches:
        process = get(launch.get("pid"))
        if process:
            process.launched = launch.get("at")
    for record in run.task_instances:
        process = get(record.get("pid"))
        if process:
            process.airflow = record
    for record in run.timing.get("tries", {}).get("list", []):
        process = get(record.get("pid"))
        if process:
            process.probe = record
    return sorted(by_pid.values(), key=lambda p: p.begins)


def _killed_at(run: ScenarioRun, pid: int) -> float | None:
    for record in run.airflow_faults:
        if record.get("pid") == pid and record.get("f") == "start":
            return float(record["time"])
    return None


def _panel(ax: Axes, run: ScenarioRun, states: set[str], rows: int, right: float) -> None:
    """Draw one scenario; ``rows`` is the most processes of any panel (they share a scale),
    ``right`` the shared right edge in s (a bar going past it is labelled with its end)."""
    zero = run.window_start
    end = float(run.run.get("stopped_at") or zero)
    processes = _processes(run)
    dag_runs = list(dict.fromkeys(
        (p.airflow or {}).get("run_id") for p in processes if (p.airflow or {}).get("run_id")
    ))  # fmt: skip
    for row, process in enumerate(processes):
        y = rows - row
        airflow = process.airflow or {}
        a_start = run.airflow_time(airflow.get("start_date"))
        a_end = run.airflow_time(airflow.get("end_date"))
        if process.launched is not None and a_start is not None:
            ax.barh(y, a_start - process.launched, left=process.launched - zero, height=0.5,
                    color=_STARTING)  # fmt: skip
        if a_start is not None:
            state = str(airflow.get("state") or "none")
            states.add(state)
            open_ended = a_end is None
            ax.barh(y, (a_end or end) - a_start, left=a_start - zero, height=0.5,
                    color=state_colour(state), alpha=0.45 if open_ended else 0.85,
                    hatch="///" if open_ended else None, lw=0)  # fmt: skip
            label = f"{state}{' (no end)' if open_ended else ''}"
            bar_end = (a_end or end) - zero
            if bar_end > right - 6:  # no room after the bar: above its right end
                if bar_end > right:
                    label += f", ends +{bar_end:.0f} s →"
                ax.annotate(label, xy=(min(bar_end, right), y + 0.28), xytext=(-2, 0),
                            textcoords="offset points", va="bottom", ha="right",
                            fontsize=6.5)  # fmt: skip
            else:
                ax.annotate(label, xy=(bar_end, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=6.5)  # fmt: skip
        probe = process.probe or {}
        if probe.get("started_at") is not None:
            p_end = probe.get("ended_at") or _killed_at(run, process.pid) or end
            ax.plot([probe["started_at"] - zero, p_end - zero], [y, y], color="black", lw=2,
                    solid_capstyle="butt")  # fmt: skip
            if probe.get("ended_at") is None:
                ax.plot(p_end - zero, y, "x", color="black", ms=5)
        try_number = airflow.get("try_number", probe.get("try", "?"))
        dag_run = airflow.get("run_id")
        which = f"dag run {dag_runs.index(dag_run) + 1}, " if dag_run in dag_runs else ""
        ax.annotate(f"{which}try {try_number}, pid {process.pid}", xy=(0, y + 0.28),
                    xycoords=("axes fraction", "data"), xytext=(2, 0),
                    textcoords="offset points", va="bottom", fontsize=6,
                    color="#555555")  # fmt: skip
    for _name, a, _b in run.fault_windows():
        ax.axvline(a - zero, color=FAULT, lw=1, ls="--")
        ax.plot(a - zero, 0.97, "v", color=FAULT, ms=6, transform=ax.get_xaxis_transform())
    window_stop = (run.metrics or {}).get("window", {}).get("stop")
    for t in (0.0, (window_stop - zero) if window_stop else None):
        if t is not None:
            ax.axvline(t, color="#555555", lw=0.8, ls=":")
    ax.set_ylim(0.4, rows + 1.0)
    ax.set_yticks([])


def draw(results: Results) -> Drawn | Skipped:
    if not any(s.task_instances or s.timing.get("tries") for s in results.scenarios):
        return Skipped("no scenario has task-instance records or probe tries")
    runs = [
        first(results.cell(*cell)) for cell in [(s.variant, s.fault) for s in results.scenarios]
    ]
    rows = max((len(_processes(r)) for r in runs), default=1) or 1
    right = max((r.run.get("stopped_at", r.window_start) - r.window_start for r in runs),
                default=0.0) + 4.0  # fmt: skip
    figure, cells = grid(
        results,
        "s since the first stream connect",
        "task processes",
        panel_size=(3.6, 0.5 + 0.55 * rows),
        sharey=False,
    )
    states: set[str] = set()
    for cell, ax in cells.items():
        _panel(ax, first(results.cell(*cell)), states, rows, right)
        ax.set_xlim(right=right)
    for ax in figure.axes:
        ax.set_yticks([])
    handles = [Patch(color=state_colour(s), alpha=0.85, label=f"Airflow: {s}")
               for s in sorted(states)]  # fmt: skip
    handles += [
        Patch(color=_STARTING, label="launched, Airflow starting"),
        Line2D([], [], color="black", lw=2, label="task code running (probe)"),
        Line2D([], [], color="black", ls="", marker="x", label="no end recorded (killed)"),
        Line2D([], [], color=FAULT, ls="--", marker="v", label="fault injected"),
        Line2D([], [], color="#555555", ls=":", label="judged window"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    figure.suptitle(
        f"Task tries as Airflow recorded them (bars, by state) and as they ran (black)\n"
        f"{conditions(results)}"
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    caption = (
        "One row per task process: grey while Airflow starts it, then Airflow's task-instance "
        "record coloured by its final state (hatched: Airflow never recorded an end), the black "
        "line is the task code as the probe saw it, red triangles are injected faults."
    )
    return Drawn(figure, caption)


CHART = Chart("tries", "Airflow task tries", draw)
