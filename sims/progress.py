"""One progress bar with an ETA, for every long command (``run``, ``run --live``, ``sweep``, benches).

    from relaysim.sims.progress import progress_bar

    with progress_bar("simulating", total=end, enabled=not quiet) as bar:
        ...
        bar.update(done)               # absolute: how far along, in the unit of ``total``
        bar.advance(1)                 # or relative
        bar.describe("seed 3 of 5")    # a new label, same bar

The bar goes to stderr, and only when stderr is a terminal (``enabled=None`` means exactly that);
otherwise every call is a no-op, so piped and captured output stays byte-identical. ``unit`` is
shown beside the count (e.g. ``"runs"``); with ``unit=None`` only the percentage is shown.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """A handle on one bar; all methods do nothing when the bar is disabled."""

    def __init__(self, progress: object | None, task: object | None) -> None:
        self._progress = progress
        self._task = task

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def update(self, completed: float, total: float | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)  # type: ignore[attr-defined]

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)  # type: ignore[attr-defined]

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)  # type: ignore[attr-defined]

    def sim_time(self, t: float, end: float) -> None:
        """The signature of ``Simulation(progress=…)``: simulated seconds done of ``end``."""
        self.update(t, total=end)


@contextmanager
def progress_bar(
    description: str, total: float | None, *, enabled: bool | None = None, unit: str | None = None
) -> Iterator[ProgressBar]:
    """A bar on stderr with elapsed time and an ETA; a disabled no-op bar when stderr is no terminal
    (``enabled=None``) or ``enabled`` is false."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield ProgressBar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    if unit:
        columns += [MofNCompleteColumn(), TextColumn(unit)]
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as p:
        task = p.add_task(description, total=total)
        yield ProgressBar(p, task)
