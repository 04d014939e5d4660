"""The simulated network between devices and the relay: latency, jitter, loss, duplication, partitions.

The link's behaviour lives here, not in the devices or the relay (as SimPy's latency example keeps
the delay in its own object). ``transit`` answers, for one packet sent now from one region to
another, when its copies arrive: no copies if it is lost or a partition cuts the path, two if it
is duplicated. ``reliable`` answers the same for a frame on a connection that retransmits (never
lost). All randomness comes from the seeded ``random.Random`` it is given.

A partition separates the regions it lists from all others between ``start`` and ``end``; its
``mode`` says what happens to a packet that would cross it (sims.scenario documents the format):

- ``"drop"``: ``transit`` loses it (counted in ``partitioned``). ``reliable`` frames cross
  anyway, as they always have here (only sends and delivery pushes can be lost).
- ``"hold"``: the packet, whether ``transit`` or ``reliable``, leaves when the partition heals
  (``end``) and then takes the usual latency (counted in ``held``). If another partition cuts the
  path at that moment, the same rules apply again from there.
"""

from __future__ import annotations

import random

from relaysim.sims.scenario import NetworkSpec

__all__ = ["Network"]


class Network:
    def __init__(self, spec: NetworkSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._latency: dict[tuple[str, str], float] = {}
        for rule in spec.latency:
            a, b = rule.between
            self._latency[(a, b)] = self._latency[(b, a)] = rule.ms / 1000.0
        self._default = spec.latency_ms / 1000.0
        self._base: dict[tuple[str, str], float] = {}  # base_latency, per path asked for
        self.jitter = spec.jitter_ms / 1000.0
        # what every packet asks of the spec, read once (NetworkSpec is frozen)
        self._partitions = bool(spec.partitions)
        self._loss = spec.loss
        self._duplication = spec.duplication
        self.lost = 0
        self.duplicated = 0
        self.partitioned = 0
        self.held = 0

    def base_latency(self, src: str, dst: str) -> float:
        path = (src, dst)
        base = self._base.get(path)
        if base is None:
            base = self._latency.get(path, self._default / 2 if src == dst else self._default)
            self._base[path] = base
        return base

    def cut(self, src: str, dst: str, now: float) -> bool:
        """True when a partition separates the two regions at ``now``."""
        for p in self.spec.partitions:
            if p.start <= now < p.end and ((src in p.regions) != (dst in p.regions)):
                return True
        return False

    def departure(self, src: str, dst: str, now: float, *, reliable: bool = False) -> float | None:
        """When a packet sent at ``now`` can leave: ``now``, or when the "hold" partitions cutting
        the path have healed; None if a "drop" partition cuts it (never, for a ``reliable`` frame)."""
        t = now
        while True:
            cutting = [
                p
                for p in self.spec.partitions
                if p.start <= t < p.end and ((src in p.regions) != (dst in p.regions))
            ]
            held = [p.end for p in cutting if p.mode == "hold"]
            if not reliable and len(held) < len(cutting):
                return None
            if not held:
                return t
            t = max(held)

    def transit(self, src: str, dst: str, now: float) -> list[float]:
        """Delays (seconds) after which the copies of one packet arrive; [] if it never does."""
        departs = self.departure(src, dst, now) if self._partitions else now
        if departs is None:
            self.partitioned += 1
            return []
        wait = departs - now
        if wait:
            self.held += 1
        rng = self.rng
        if self._loss and rng.random() < self._loss:
            self.lost += 1
            return []
        base = self._base.get((src, dst))
        if base is None:
            base = self.base_latency(src, dst)
        delay = wait + base + (rng.random() * self.jitter if self.jitter else 0.0)
        if self._duplication and rng.random() < self._duplication:
            self.duplicated += 1
            return [delay, delay + base + rng.random() * max(self.jitter, 0.001)]
        return [delay]

    def reliable(self, src: str, dst: str, now: float) -> float:
        """The delay (seconds) of a frame on a connection that retransmits: never lost, only delayed,
        and held while a "hold" partition cuts the path."""
        wait = 0.0
        if self._partitions:
            departs = self.departure(src, dst, now, reliable=True)
            assert departs is not None
            wait = departs - now
            if wait:
                self.held += 1
        base = self._base.get((src, dst))
        if base is None:
            base = self.base_latency(src, dst)
        return wait + base + self.rng.random() * self.jitter
