"""Benchmarks behind ``relaysim bench ...``: each reports ratios to peers measured in the same run.

The three (crypto.py, relay.py, sim.py) share one harness (harness.py): the command line, the
targets table and its verdicts, ``--json FILE|-`` and ``--check``. Targets: docs/performance.md.
"""

from __future__ import annotations

from relaysim.sims.bench.harness import load_average, load_text

__all__ = ["load_average", "load_text"]
