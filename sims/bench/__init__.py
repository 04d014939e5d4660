"""Benchmarks behind ``relaysim bench ...``: each reports ratios to peers measured in the same run."""

from __future__ import annotations

import os

__all__ = ["load_average", "load_text"]


def load_average() -> float | None:
    """The 1-minute load average: other processes on the machine show up in every timing."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_text(load: dict[str, float | None] | None) -> str:
    if not load or load.get("before") is None or load.get("after") is None:
        return ""
    return f"; 1-min load average {load['before']:.2f} before, {load['after']:.2f} after"
