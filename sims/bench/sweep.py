"""``relaysim bench sweep`` (or ``python -m relaysim.sims.bench.sweep``): does a sweep of small runs use every core?

The same sweep (``sims.sweep.run_sweep``: a tiny two-phone scenario, five values of
``network.loss`` × --runs / 5 seeds, 100 runs by default) twice, each into a fresh directory so
nothing is reused: once on a pool of one worker process, once on a pool of --workers (default 2).
Both times are wall time from the call to the written table, the pools' start-up included. Prints
both, the cores each kept busy on average (CPU seconds of the process and its workers / wall
seconds; the load average before the bench says whether other work shared them), and the ratio;
beside it, measured in the same run, the machine's ceiling: a pure CPU burn on --workers processes
against one (on a shared machine it can be far below 2×, and the sweep's ratio is bounded by it);
the target (issue #11, docs/performance.md) is ≥ 1.7× on two cores. The two tables must also be
byte for byte the same (a sweep is deterministic whatever runs it); the exit status is 1 if not.
--json FILE (or - for stdout) keeps every number; --check exits 1 unless the speed-up meets the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaysim.sims.bench import harness
from relaysim.sims.numbers import state_bounds, whole_number, workers
from relaysim.sims.progress import progress_bar
from relaysim.sims.sweep import run_sweep

TARGET = 1.7
SPEEDUP = harness.Target(
    "sweep_speedup", "sweep of small runs: speed-up on the workers against one", ">=", TARGET
)
LOSSES = [0.0, 0.05, 0.1, 0.15, 0.2]

SCENARIO = """\
[scenario]
name = "bench-sweep"
duration = "2h"
seed = 1

[network]
latency_ms = 40
jitter_ms = 10

[[people]]
name = "a"
devices = [{ region = "us", address = "192.0.2.1" }]

[[people]]
name = "b"
devices = [{ region = "us", address = "192.0.2.2" }]

[[conversations]]
between = ["a", "b"]
messages = [
%s
]
"""


def _scenario(messages: int) -> str:
    rows = [
        f'  {{ at = "{1 + i // 2}m", from = "{"ab"[i % 2]}", text = "message {i} of the bench" }},'
        for i in range(messages)
    ]
    return SCENARIO % "\n".join(rows)


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _ceiling(workers: int, seconds: float = 1.0) -> float:
    """What the machine gives ``workers`` processes over one right now: the same pure-Python CPU burn
    (no I/O, nothing shared) on a spawn pool of one and of ``workers``, the pools' start-up excluded."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    _burn(1_000_000)
    n = max(100_000, int(1_000_000 * seconds / 4 / (time.perf_counter() - started)))
    times = []
    for w in (1, workers):
        with ProcessPoolExecutor(w, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_burn, [1000] * w))  # the workers are up
            started = time.perf_counter()
            list(pool.map(_burn, [n] * 4 * workers))
            times.append(time.perf_counter() - started)
    return times[0] / times[1]


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's workers, once it is shut down)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(
    scenario: Path, seeds: int, workers: int, out: Path, step: Callable[[int, int], None] | None = None
) -> tuple[float, float]:
    """Wall seconds, and the cores kept busy on average (CPU seconds / wall seconds); ``step`` gets
    (runs finished, runs in all) as ``run_sweep`` gives them."""
    started, cpu = time.perf_counter(), _cpu()
    run_sweep(str(scenario), [("network.loss", LOSSES)], seeds, out, workers=workers, step=step)
    wall = time.perf_counter() - started
    return wall, (_cpu() - cpu) / wall


def _parser() -> argparse.ArgumentParser:
    parser = harness.make_parser(
        "relaysim bench sweep",
        __doc__,
        ["relaysim bench sweep --runs 100 --workers 2", "relaysim bench sweep --json sweep.json --check"],
    )
    parser.add_argument(
        "--runs",
        type=whole_number("runs", 5, 100_000),
        default=100,
        help="runs per sweep, a multiple of 5 (default: 100)",
    )
    parser.add_argument(
        "--workers", type=workers(2), default=2, help="worker processes of the parallel pool (default: 2)"
    )
    parser.add_argument(
        "--messages",
        type=whole_number("messages", 1, 100_000),
        default=100,
        help="messages per run (default: 100)",
    )
    harness.add_common_options(parser)
    return state_bounds(parser)


def main(argv: list[str]) -> int:
    """``relaysim bench sweep [options]``; the exit status (0; 1 if the two tables differ or, with
    --check, the speed-up missed its target; 2 on bad options)."""
    parser = _parser()
    args = parser.parse_args(argv)  # (--runs from 5, --workers from 2, --messages from 1: their types)
    if args.runs % 5:
        parser.error(
            f"--runs {args.runs}: expected a positive multiple of 5 (one seed for each of the 5 losses)"
        )
    seeds = args.runs // len(LOSSES)
    load_before = harness.load_average()
    runs = seeds * len(LOSSES)
    # one bar over both sweeps (on stderr, only on a terminal and without --quiet), then the ceiling
    bar_on = False if args.quiet else None
    with (
        tempfile.TemporaryDirectory(prefix="relaysim-bench-sweep-") as tmp,
        progress_bar("bench sweep", 2 * runs, enabled=bar_on, unit="runs") as bar,
    ):
        root = Path(tmp)
        scenario = root / "bench-sweep.toml"
        scenario.write_text(_scenario(args.messages), encoding="utf-8")
        bar.describe("bench sweep: on 1 worker")
        one, one_busy = _timed(scenario, seeds, 1, root / "one", lambda done, _: bar.update(done))
        bar.describe(f"bench sweep: on {args.workers} workers")
        many, many_busy = _timed(
            scenario, seeds, args.workers, root / "many", lambda done, _: bar.update(runs + done)
        )
        same = (root / "one" / "sweep.json").read_bytes() == (root / "many" / "sweep.json").read_bytes()
        bar.describe("bench sweep: the machine's ceiling")
        ceiling = _ceiling(args.workers)
    ratio = one / many
    what = f"sweep of {args.runs} runs ({args.messages} messages each)"
    verdict = "met" if ratio >= TARGET else "NOT met"
    lines = [
        f"{what}, 1 worker:  {one:7.2f} s, {one_busy:.2f} cores busy",
        f"{what}, {args.workers} workers: {many:7.2f} s, {many_busy:.2f} cores busy",
        f"speed-up {ratio:.2f}× (target ≥ {TARGET}× on two cores: {verdict}); tables identical: {same}",
        f"the machine's ceiling now: {ceiling:.2f}× (a pure CPU burn on {args.workers} processes against one); "
        f"the sweep reaches {ratio / ceiling:.0%} of it",
    ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load_before is not None and load_before > 0.5:
        lines.append(
            f"(the load average before the bench was {load_before:.1f} on {cores} cores: other work may have "
            "shared them)"
        )
    report: dict[str, Any] = {
        "config": {
            "runs": args.runs,
            "workers": args.workers,
            "messages": args.messages,
            **harness.machine_config(),
            "load_average": {"before": load_before, "after": harness.load_average()},
        },
        "results": {
            "one_worker_seconds": one,
            "one_worker_cores_busy": one_busy,
            "workers_seconds": many,
            "workers_cores_busy": many_busy,
            "machine_ceiling": ceiling,
            "tables_identical": same,
        },
        "ratios": {SPEEDUP.key: harness.target_row(SPEEDUP, ratio)},
    }
    status = harness.finish("sweep", report, "\n".join(lines), args, list(report["ratios"].values()))
    return status if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
