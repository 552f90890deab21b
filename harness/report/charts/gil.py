"""GIL contention against the CPU cost per tweet, threaded vs multiprocess (every variant
with GIL samples), with throughput and loss on the same x axis: the causal chain the
article blames stalls on, cost -> contention -> throughput -> loss.

Reads ``metrics["timing"]["gil"]`` (``mean``, ``p95`` over the task's processes) and the
scenario's ``params.cpu_us``. Scenarios with injected faults or a task timeout are left
out when fault-free ones exist, so a kill's dip is not read as contention.
"""

from __future__ import annotations

from collections import defaultdict

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.report.charts.base import Chart, Drawn, Skipped, conditions
from harness.report.palette import TARGET, variant_colour
from harness.report.runs import Results, ScenarioRun

__all__ = ["CHART"]


def _has_gil(run: ScenarioRun) -> bool:
    gil = run.timing.get("gil") or {}
    return gil.get("mean") is not None and run.scenario.get("params", {}).get("cpu_us") is not None


def _fault_free(run: ScenarioRun) -> bool:
    s = run.scenario
    return (
        not s.get("airflow_faults")
        and not s.get("stream_faults")
        and not (s.get("task", {}).get("execution_timeout"))
    )


def draw(results: Results) -> Drawn | Skipped:
    measured = [s for s in results.scenarios if _has_gil(s)]
    if not measured:
        return Skipped(
            "no scenario has GIL measurements (metrics.json timing.gil with a mean, and "
            "params.cpu_us), so there is no GIL chart"
        )
    chosen = [s for s in measured if _fault_free(s)] or measured
    by_variant: dict[str, list[ScenarioRun]] = defaultdict(list)
    for run in chosen:
        by_variant[run.variant].append(run)
    variants = [v for v in results.variants if v in by_variant]
    figure = Figure(figsize=(7.5, 8))
    gil_ax, rate_ax, loss_ax = figure.subplots(3, 1, sharex=True)
    rates = set()
    for variant in variants:
        runs = sorted(by_variant[variant], key=lambda r: r.scenario["params"]["cpu_us"])
        colour = variant_colour(variant, results.variants)
        cpu = [r.scenario["params"]["cpu_us"] for r in runs]
        gil = [r.timing["gil"] for r in runs]
        gil_ax.plot(cpu, [g["mean"] for g in gil], "o-", color=colour, label=variant)
        p95 = [(c, g["p95"]) for c, g in zip(cpu, gil, strict=True) if g.get("p95") is not None]
        if p95:
            gil_ax.plot(*zip(*p95, strict=True), "^--", color=colour, lw=1, ms=4)
        rate_ax.plot(cpu, [r.timing.get("throughput", {}).get("mean") for r in runs], "o-",
                     color=colour)  # fmt: skip
        lost = [
            100 * (r.queue.get("lost") or 0) / r.queue["created"] if r.queue.get("created") else 0
            for r in runs
        ]
        loss_ax.plot(cpu, lost, "o-", color=colour)
        rates |= {r.rate for r in runs if r.rate}
    for rate in rates:
        rate_ax.axhline(rate, color=TARGET, ls="--", lw=0.8)
    all_cpu = [r.scenario["params"]["cpu_us"] for r in chosen]
    if min(all_cpu) > 0 and max(all_cpu) / min(all_cpu) >= 10:
        loss_ax.set_xscale("log")
    gil_ax.set_ylabel("GIL contention\n(timing.gil: mean o, p95 ^)")
    gil_ax.set_ylim(bottom=0)
    rate_ax.set_ylabel("throughput\n(tweets/s, mean)")
    rate_ax.set_ylim(bottom=0)
    loss_ax.set_ylabel("tweets lost\n(% of created)")
    loss_ax.set_ylim(bottom=0, top=max(loss_ax.get_ylim()[1], 1))
    loss_ax.set_xlabel("CPU cost per tweet (µs, params.cpu_us)")
    handles = [Line2D([], [], color=variant_colour(v, results.variants), marker="o", label=v)
               for v in variants]  # fmt: skip
    handles.append(Line2D([], [], color=TARGET, ls="--", lw=0.8, label="target rate"))
    figure.legend(handles=handles, title="variant", loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False)  # fmt: skip
    which = "fault-free scenarios" if chosen is not measured else "all scenarios with GIL data"
    figure.suptitle(
        f"GIL contention, throughput and loss against CPU cost per tweet ({which})\n"
        f"{conditions(results)}"
    )
    figure.tight_layout()
    caption = (
        "As each tweet costs more CPU, threads sharing one GIL wait for it (top), commit fewer "
        "tweets per second (middle) and, once the stream outruns them, lose tweets (bottom); "
        "processes, each with its own GIL, should stay flat longer."
    )
    return Drawn(figure, caption)


CHART = Chart("gil", "GIL contention vs CPU cost per tweet", draw)
