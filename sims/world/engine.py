"""A deterministic discrete-event scheduler: a heap keyed by (time, sequence).

trio's scheduler is randomised on purpose and costs ~30 µs per wake-up (docs/performance.md), so the
simulated network runs on this instead: callbacks at virtual times, ties broken by the order
they were scheduled, the same every run (as SimPy's core does with (time, priority, id)).
Nothing here reads a clock; ``now`` is the virtual time of the event being run.

A long run's planned messages are known at the start, already in time order: ``stream`` takes them
as one sorted sequence and hands them out one at a time, each with the sequence number it would
have had if scheduled with ``at`` then, so the order of events (ties included) is the same while
the heap holds only what is in flight (at 1,000,000 messages, a quarter of a GB less).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Scheduler"]

_heappush = heapq.heappush


class Scheduler:
    __slots__ = ("_heap", "_seq", "_streams", "events_run", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._seq = 0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.events_run = 0
        # the streams' next items, in the heap's own order: (when, seq, fn, item, stream, index)
        self._streams: list[tuple[float, int, Callable[[Any], None], Any, _Stream, int]] = []

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (never earlier than now)."""
        if when < self.now:
            when = self.now
        seq = self._seq = self._seq + 1
        _heappush(self._heap, (when, seq, fn, args))

    def stream(self, items: Sequence[Any], when: Callable[[Any], float], fn: Callable[[Any], None]) -> None:
        """Run ``fn(item)`` at ``when(item)`` for every item, as ``for i in items: at(when(i), fn, i)``
        would, ties included; ``items`` must be in order of ``when`` (they are read one at a time)."""
        if not items:
            return
        first = self._seq + 1
        self._seq += len(items)
        s = _Stream(items, when, fn, first)
        self._push_stream(s, 0)

    def _push_stream(self, s: _Stream, i: int) -> None:
        item = s.items[i]
        t = s.when(item)
        if t < self.now:
            raise ValueError(f"Scheduler.stream: items out of time order at index {i} ({t} < {self.now})")
        heapq.heappush(self._streams, (t, s.first + i, s.fn, item, s, i))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def clock(self) -> float:
        return self.now

    def __len__(self) -> int:
        return len(self._heap) + sum(len(s.items) - i for *_x, s, i in self._streams)

    def run(self, until: float, progress: Callable[[float], None] | None = None, every: int = 10_000) -> None:
        """Run every event up to and including ``until``; leave later ones queued."""
        heap = self._heap
        streams = self._streams
        pop = heapq.heappop
        n = 0
        # ``every`` events between progress calls; without a progress callback, never
        countdown = every if progress is not None else -1
        while True:
            # the earlier of the heap's and the streams' next events, by (time, sequence): one tuple
            # comparison, as sequence numbers are never shared (the entries' third items, functions,
            # are never compared)
            if streams and (not heap or streams[0] < heap[0]):
                if streams[0][0] > until:
                    break
                when, _seq, one, item, s, i = pop(streams)
                self.now = when
                if i + 1 < len(s.items):
                    self._push_stream(s, i + 1)
                one(item)
            elif heap and heap[0][0] <= until:
                when, _seq, fn, args = pop(heap)
                self.now = when
                fn(*args)
            else:
                break
            n += 1
            countdown -= 1
            if not countdown:
                countdown = every
                assert progress is not None
                progress(when)
        self.events_run += n
        self.now = max(self.now, until)


class _Stream:
    __slots__ = ("first", "fn", "items", "when")

    def __init__(
        self, items: Sequence[Any], when: Callable[[Any], float], fn: Callable[[Any], None], first: int
    ) -> None:
        self.items = items
        self.when = when
        self.fn = fn
        self.first = first  # the sequence number of items[0]
