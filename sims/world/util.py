"""Two small helpers every part of the simulator shares: seeded randomness and the clock on the page.

``seeded(seed, *label)`` is the one way a simulation draws randomness: each use gets its own
generator, named by a label, so adding a draw in one place never shifts the draws of another
and the same scenario and seed give byte-identical outputs. ``clock(t)`` writes simulated
seconds as people read them.
"""

from __future__ import annotations

import hashlib
import math
import random

__all__ = ["KeyStream", "SimulationRandom", "clock", "seeded"]


class SimulationRandom(random.Random):
    """The simulator's deterministic generator: the one kind of seeded ``random.Random`` whose
    ``randbytes`` device code accepts as a key source (clients._primitives.require_key_source).

    Every key drawn from it is recomputable from the seed: fine for a simulation, whose relay.db
    is marked as such (relay.store's ``simulation_keys``), never for a real device.
    """

    SIMULATION_KEYS = True


def seeded(seed: int, *label: object) -> SimulationRandom:
    """A generator of its own for ``label`` under the scenario's ``seed`` ("SEED:LABEL:…")."""
    return SimulationRandom(f"{seed}:" + ":".join(map(str, label)))


class KeyStream:
    """A deterministic key source of ~0.1 KiB: ``randbytes(n)`` is SHAKE-256 (FIPS 202) of the seed and
    a call counter, ``n`` bytes long. A ``SimulationRandom`` is a Mersenne Twister, 2.5 KiB of state:
    for a scale run's 100,000 phones each holding one, 240 MiB (``Simulation(compact_device_rng=True)``).
    The same seed gives the same bytes; they are not the bytes a ``SimulationRandom`` would give.
    Like it, every key drawn from it is recomputable from the seed: simulations only."""

    __slots__ = ("_count", "_seed")
    SIMULATION_KEYS = True

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self._count = 0

    def randbytes(self, n: int) -> bytes:
        self._count += 1
        return hashlib.shake_256(self._seed + self._count.to_bytes(8, "big")).digest(n)

    def peek(self, n: int, later: int = 0) -> bytes:
        """What ``randbytes(n)`` will return at the next draw (``later``: that many draws after it),
        without drawing anything."""
        return hashlib.shake_256(self._seed + (self._count + 1 + later).to_bytes(8, "big")).digest(n)


def clock(t: float, *, day: bool | None = None) -> str:
    """Simulated seconds as a time of day: ``"14:05:00"``, ``"day 2 14:05:00"``.

    ``day=None`` names the day from the second day on; ``True`` always names it; ``False``
    never does, and the hours then run past 24.
    """
    t = math.floor(t)
    if day is False:
        return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"
    d, t = divmod(t, 86400)
    return (f"day {d + 1} " if d or day else "") + f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"
