"""What a matrix run shows while it runs: on a terminal, a progress bar (scenarios done of
all, elapsed, time left) under the finished scenarios' lines, its description the running
scenarios' phases; elsewhere (a CI log, a file), only the lines, one per scenario, never
wrapped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from harness.run.runner import Status

__all__ = ["MatrixDisplay"]


class MatrixDisplay:
    """The run's output (stderr by default): :meth:`print` a line, :meth:`done` a scenario;
    while open, the :meth:`running` scenarios' statuses are shown on the bar every
    ``refresh`` seconds."""

    def __init__(self, total: int, file: IO[str] | None = None, refresh: float = 0.5) -> None:
        # rich wraps at the terminal's width, or 80 columns off one; a scenario's line stays
        # one line (a CI log greps it), the terminal folds it if it must.
        self.console = Console(stderr=file is None, file=file, soft_wrap=True)
        self._running: dict[str, Status] = {}
        self._phase = "starting"
        self._lock = threading.Lock()
        self._refresh = refresh
        self._progress: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.console.is_terminal:
            # The counts first: on a narrow terminal the description is what gets cut.
            self._progress = Progress(
                SpinnerColumn(),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("scenarios"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn(
                    "{task.description}",
                    table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
                ),
                console=self.console,
                expand=True,
                # Scenarios take minutes each: time left from the whole run's pace, not
                # the last 30 s (rich's default), which often saw no scenario end.
                speed_estimate_period=24 * 3600,
            )
            self._task = self._progress.add_task("starting", total=total)

    def __enter__(self) -> MatrixDisplay:
        if self._progress is not None:
            self._progress.start()
            self._thread = threading.Thread(target=self._show, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def running(self, scenario: str) -> Iterator[Status]:
        """While ``scenario`` runs: the :class:`Status` it updates, shown on the bar."""
        status = Status(scenario=scenario, started=time.time())
        with self._lock:
            self._running[scenario] = status
        try:
            yield status
        finally:
            with self._lock:
                self._running.pop(scenario, None)

    def phase(self, text: str) -> None:
        """What the bar says when no scenario runs (e.g. "stopping Airflow")."""
        self._phase = text

    def print(self, text: str) -> None:
        """A line (rich markup), above the bar on a terminal."""
        with self._lock:
            self.console.print(text)

    def done(self, text: str) -> None:
        """A scenario finished: its line, and the bar one step on."""
        self.print(text)
        if self._progress is not None:
            self._progress.advance(self._task)

    def _show(self) -> None:
        while not self._stop.wait(self._refresh):
            self._progress.update(self._task, description=self.describe())  # type: ignore[union-attr]

    def describe(self) -> str:
        """The running scenarios, as the bar's description shows them: one in full, more
        as name and phase each."""
        with self._lock:
            running = list(self._running.values())
        if not running:
            return self._phase
        if len(running) == 1:
            s = running[0]
            elapsed = time.time() - s.started if s.started else 0
            return f"{s.scenario}: {s.phase}, {elapsed:.0f} s, {s.committed:,} committed"
        return " | ".join(f"{s.scenario}: {s.phase.split(':')[0]}" for s in running)
