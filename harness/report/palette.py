"""One colour per variant, per fault and per task state, the same in every chart and run.

Known variants have fixed colours (the Okabe-Ito colour-blind-safe set, the naive loop in
the warning vermillion and the careful pattern in green); a variant added later takes the
next free colour of the spare list by its name's order among the unknown ones.
"""

from __future__ import annotations

__all__ = [
    "DOWNTIME",
    "FAULT",
    "TARGET",
    "order_variants",
    "state_colour",
    "variant_colour",
]

_VARIANTS = {
    "naive_loop": "#D55E00",
    "checkpoint": "#E69F00",
    "timeout_handling": "#CC79A7",
    "multiprocess": "#0072B2",
    "threaded": "#56B4E9",
    "exactly_once": "#009E73",
    "queue_decoupled": "#6A3D9A",
}
_SPARE = ["#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD"]

#: Shading of an injected fault's window (start -> stop) and of stream-disconnected time.
FAULT = "#C0392B"
DOWNTIME = "#7F7F7F"
#: The scenario's target rate line.
TARGET = "#444444"

_STATES = {
    "success": "#2E8B57",
    "ok": "#2E8B57",
    "failed": "#C0392B",
    "fail": "#C0392B",
    "up_for_retry": "#E69F00",
    "up_for_reschedule": "#E69F00",
    "running": "#1F77B4",
    "killed": "#6A3D9A",
    "info": "#6A3D9A",
    "upstream_failed": "#8C564B",
    "skipped": "#BBBBBB",
}


def order_variants(names: set[str] | list[str]) -> list[str]:
    """Known variants in the project's order (naive first, careful last), then the rest."""
    known = [v for v in _VARIANTS if v in names]
    return known + sorted(set(names) - set(_VARIANTS))


def variant_colour(name: str, all_names: list[str] | None = None) -> str:
    """The colour of ``name``: fixed for known variants, a spare one otherwise."""
    if name in _VARIANTS:
        return _VARIANTS[name]
    unknown = sorted({n for n in (all_names or [name]) if n not in _VARIANTS} | {name})
    return _SPARE[unknown.index(name) % len(_SPARE)]


def state_colour(state: str | None) -> str:
    """Colour of a task try's state (Airflow's, or the probe's outcome); grey if unknown."""
    return _STATES.get(state or "", "#999999")
