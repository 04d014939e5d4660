"""A deterministic discrete-event scheduler: a heap keyed by (time, sequence).

trio's scheduler is randomised on purpose and costs ~30 µs per wake-up (performance.md), so the
simulated network runs on this instead: callbacks at virtual times, ties broken by the order
they were scheduled, the same every run (as SimPy's core does with (time, priority, id)).
Nothing here reads a clock; ``now`` is the virtual time of the event being run.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["Scheduler"]


class Scheduler:
    __slots__ = ("_heap", "_seq", "events_run", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._seq = 0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.events_run = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (never earlier than now)."""
        if when < self.now:
            when = self.now
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def clock(self) -> float:
        return self.now

    def __len__(self) -> int:
        return len(self._heap)

    def run(self, until: float, progress: Callable[[float], None] | None = None, every: int = 10_000) -> None:
        """Run every event up to and including ``until``; leave later ones queued."""
        heap = self._heap
        pop = heapq.heappop
        n = 0
        while heap and heap[0][0] <= until:
            when, _seq, fn, args = pop(heap)
            self.now = when
            fn(*args)
            n += 1
            if progress is not None and n % every == 0:
                progress(when)
        self.events_run += n
        self.now = max(self.now, until)
