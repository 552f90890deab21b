"""harness/run/display.py: a progress bar on a terminal, plain unwrapped lines elsewhere."""

from __future__ import annotations

import io
import re
import time

from harness.run.display import MatrixDisplay

LONG = "naive_loop-clear_task_with_a_name_longer_than_a_terminal: " + "verdict at-most-once, " * 5


def test_off_a_terminal_one_line_per_scenario_and_no_bar():
    out = io.StringIO()
    with MatrixDisplay(2, file=out, refresh=0.01) as display, display.running("x") as status:
        status.phase = "streaming"
        display.done(LONG)
        display.done("second: verdict exactly-once")
    assert out.getvalue() == f"{LONG}\nsecond: verdict exactly-once\n"  # not wrapped at 80


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_counts_the_scenarios_and_shows_the_running_one():
    out = _Terminal()
    display = MatrixDisplay(3, file=out, refresh=0.01)
    display.console.size = (80, 30)  # a narrow terminal: the description is what is cut
    with display, display.running("naive_loop-kill_task") as status:
        status.phase = "ending: until the ledger is quiet"
        status.committed = 12_345
        display.done("first: verdict exactly-once")
        time.sleep(0.3)  # the description's refresh (every 0.01 s) and the bar's own
        described = display.describe()
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # colours, cursor moves
    assert "first: verdict exactly-once" in shown
    assert "1/3 scenarios 0:00:00 left" in shown
    assert "naive_loop-kill_task:" in shown  # cut to the width left
    assert "12,345 committed" in described


def test_side_by_side_the_bar_names_every_running_scenario_and_its_phase():
    display = MatrixDisplay(3, file=io.StringIO())
    with display.running("a") as a, display.running("b") as b:
        a.phase, b.phase = "streaming", "ending: until the ledger is quiet"
        assert display.describe() == "a: streaming | b: ending"
    display.phase("stopping Airflow")
    assert display.describe() == "stopping Airflow"
