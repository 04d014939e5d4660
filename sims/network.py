"""The simulated network between devices and the relay: latency, jitter, loss, duplication, partitions.

The link's behaviour lives here, not in the devices or the relay (as SimPy's latency example keeps
the delay in its own object). ``transit`` answers, for one packet sent now from one region to
another, when its copies arrive: no copies if it is lost or a partition cuts the path, two if it
is duplicated. All randomness comes from the seeded ``random.Random`` it is given.
"""

from __future__ import annotations

import random

from sims.scenario import NetworkSpec

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
        self.jitter = spec.jitter_ms / 1000.0
        self.lost = 0
        self.duplicated = 0
        self.partitioned = 0

    def base_latency(self, src: str, dst: str) -> float:
        if src == dst:
            return self._latency.get((src, dst), self._default / 2)
        return self._latency.get((src, dst), self._default)

    def cut(self, src: str, dst: str, now: float) -> bool:
        """True when a partition separates the two regions at ``now``."""
        for p in self.spec.partitions:
            if p.start <= now < p.end and ((src in p.regions) != (dst in p.regions)):
                return True
        return False

    def transit(self, src: str, dst: str, now: float) -> list[float]:
        """Delays (seconds) after which the copies of one packet arrive; [] if it never does."""
        if self.cut(src, dst, now):
            self.partitioned += 1
            return []
        rng = self.rng
        spec = self.spec
        if spec.loss and rng.random() < spec.loss:
            self.lost += 1
            return []
        base = self.base_latency(src, dst)
        delay = base + (rng.random() * self.jitter if self.jitter else 0.0)
        if spec.duplication and rng.random() < spec.duplication:
            self.duplicated += 1
            return [delay, delay + base + rng.random() * max(self.jitter, 0.001)]
        return [delay]
