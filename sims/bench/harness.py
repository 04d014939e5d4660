"""What the three benchmarks share: their command line, their targets table and its verdicts, their output.

Every ``relaysim bench ...`` command measures, builds a report (a JSON-able dict), prints it as a
table and then, through :func:`finish`, writes the JSON (``--json FILE``, or ``--json -`` for
stdout, in which case the table goes to stderr so that stdout is JSON alone) and, with
``--check``, exits 1 unless every target it judges is met, naming those it missed. The targets and
where they come from are in docs/performance.md.

A target row (:func:`target_row`) is the dict every benchmark's ``ratios`` holds: ``label``,
``value``, ``paired_median`` (the median of the per-slice ratios, or None), ``comparison`` ("<="
or ">="), ``target`` (None: for information) and ``met`` (None: not judged).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from relaysim.sims.analysis.runfiles import PIPE_HELP, writable_file, write_whole
from relaysim.sims.progress import ProgressBar, progress_bar

__all__ = [
    "DOC",
    "BenchError",
    "Progress",
    "Target",
    "add_common_options",
    "finish",
    "format_targets",
    "judge",
    "load_average",
    "load_text",
    "machine_config",
    "make_parser",
    "module_command",
    "not_met",
    "run_bench",
    "sample_summary",
    "target_row",
]

DOC: Final = "docs/performance.md"  # where the targets and their sources are written down
ROOT: Final = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """A contender misbehaved (a wrong plaintext, an error frame, a lost message, a server that died):
    its timing would mean nothing."""


# --- targets and verdicts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A bound on a measured value: ``value <= bound`` or ``value >= bound``; no bound: information."""

    key: str
    label: str
    comparison: str  # "<=" (a slowdown or size bound) or ">=" (a speed-up or share bound)
    bound: float | None

    def __post_init__(self) -> None:
        if self.comparison not in ("<=", ">="):
            raise ValueError(f"target {self.key}: comparison must be '<=' or '>=', not {self.comparison!r}")


def judge(value: float | None, comparison: str, bound: float | None) -> bool | None:
    """Whether ``value`` meets the bound; None when there is no bound or no value to judge."""
    if value is None or bound is None:
        return None
    return value <= bound if comparison == "<=" else value >= bound


def target_row(target: Target, value: float | None, paired: float | None = None) -> dict[str, Any]:
    """One row of a report's ``ratios``: the target, the measured value, and the verdict."""
    return {
        "label": target.label,
        "value": value,
        "paired_median": paired,
        "comparison": target.comparison,
        "target": target.bound,
        "met": judge(value, target.comparison, target.bound),
    }


def not_met(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The rows with a target that were missed, and those with a target that could not be judged."""
    judged = [r for r in rows if r["target"] is not None]
    return [r for r in judged if r["met"] is False], [r for r in judged if r["met"] is None]


def _number(v: float | None, width: int = 6) -> str:
    return f"{'n/a':>{width}s}" if v is None else f"{v:{width}.2f}"


def format_targets(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    paired: str,
    width: int = 56,
    unjudged: str = "n/a",
    note: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> list[str]:
    """The targets table: each row's value, the median of the paired ratios (``paired`` says of what),
    the bound and the verdict; ``unjudged`` is the verdict of a target that has no value."""
    lines = [
        "",
        f"targets ({DOC}): ratio of the medians above (judged), and the median of {paired}",
        f"  {'ratio':{width}s} {'value':>6s} {'paired':>6s}  {'target':8s} verdict",
    ]
    for r in rows.values():
        if r["target"] is None:
            target, verdict = "", "(information)"
        else:
            target = f"{r['comparison']} {r['target']:.2f}"
            verdict = unjudged if r["met"] is None else "met" if r["met"] else "MISSED"
        lines.append(
            f"  {r['label']:{width}s} {_number(r['value'])} {_number(r['paired_median'])}  {target:8s} {verdict}"
        )
        if note is not None:
            lines += note(r)
    return lines


def sample_summary(samples: list[float], median_key: str) -> dict[str, Any]:
    """A contender's figure: the median of its samples (under ``median_key``), their range, and the samples."""
    return {
        median_key: statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


# --- the machine --------------------------------------------------------------------------------


def load_average() -> float | None:
    """The 1-minute load average: other processes on the machine show up in every timing."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_text(load: Mapping[str, float | None] | None) -> str:
    if not load or load.get("before") is None or load.get("after") is None:
        return ""
    return f"; 1-min load average {load['before']:.2f} before, {load['after']:.2f} after"


def machine_config() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }


def module_command(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``python -m module args`` from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return [sys.executable, "-m", module, *args], env


# --- the command line -------------------------------------------------------------------------

# --body-size's bound (bench relay's and relay --attack's): 10**60 was an OverflowError making the padding
FRAME_WHY: Final = "the largest frame the relay takes, relay.wire.DEFAULT_MAX_FRAME_SIZE"


def make_parser(prog: str, doc: str | None, examples: Iterable[str] = ()) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring (after the first paragraph) as the description."""
    examples = list(examples)
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n", 1)[1] if doc else None,
        epilog="examples:\n" + "".join(f"  {e}\n" for e in examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_common_options(p: argparse.ArgumentParser) -> None:
    """--json FILE|-, --check and --quiet, the same for every benchmark."""
    p.add_argument(
        "--json",
        metavar="FILE",
        type=writable_file,
        help="also write every number (samples, medians, ratios) to FILE (default: none: the table alone, "
        "to stdout); '-' writes the JSON to stdout "
        f"and the table to stderr; {PIPE_HELP}",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 unless every target ({DOC}) is met, and name those missed; a target this run could "
        "not judge (a peer missing, a run stopped) counts as not met",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


class Progress:
    """What a benchmark says while it measures: ``progress("repeat", 2, 15)`` moves the bar (on
    stderr, with an ETA, only when stderr is a terminal and not ``--quiet``) to 2 of 15 and labels
    it; ``progress("timing the steps")`` relabels it for a phase that has no count."""

    def __init__(self, name: str, bar: ProgressBar) -> None:
        self.name = name
        self.bar = bar

    def __call__(self, text: str, done: float | None = None, total: float | None = None) -> None:
        self.bar.describe(f"bench {self.name}: {text}")
        if done is not None:
            self.bar.update(done, total)


def finish(
    name: str,
    report: Mapping[str, Any],
    table: str,
    args: argparse.Namespace,
    targets: Iterable[Mapping[str, Any]],
) -> int:
    """Print the table, write the JSON, and with --check judge ``targets``; the exit status."""
    to_stdout = args.json == "-"
    table_out: TextIO = sys.stderr if to_stdout else sys.stdout
    print(table, file=table_out, flush=True)
    if to_stdout:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    elif args.json:
        write_whole(args.json, json.dumps(report, indent=2) + "\n")  # (a run's numbers: whole or none)
    if not args.check:
        return 0
    rows = list(targets)
    missed, unjudged = not_met(rows)
    prog = f"relaysim bench {name}"
    if not any(r["target"] is not None for r in rows):
        print(f"{prog}: no target is judged by this run (see {DOC})", file=sys.stderr)
        return 0
    if not missed and not unjudged:
        print(f"{prog}: every target met", file=sys.stderr)
        return 0
    for r in missed:
        print(
            f"{prog}: target MISSED: {r['label']}: {r['value']:.2f}, target {r['comparison']} {r['target']:.2f}",
            file=sys.stderr,
        )
    for r in unjudged:
        print(
            f"{prog}: target not judged (not measured in this run): {r['label']}, target {r['comparison']} "
            f"{r['target']:.2f}",
            file=sys.stderr,
        )
    print(f"{prog}: {len(missed)} target(s) missed, {len(unjudged)} not judged (see {DOC})", file=sys.stderr)
    return 1


def run_bench(
    name: str,
    args: argparse.Namespace,
    measure: Callable[[Progress], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    targets: Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]],
) -> int:
    """The common main: measure (with a progress bar and the load average around it), then :func:`finish`.

    A :class:`BenchError` becomes one line on stderr and exit status 1."""
    before = load_average()
    try:
        with progress_bar(f"bench {name}", None, enabled=False if args.quiet else None) as bar:
            report = measure(Progress(name, bar))
    except BenchError as e:
        print(f"relaysim bench {name}: {e}", file=sys.stderr)
        return 1
    report["config"]["load_average"] = {"before": before, "after": load_average()}
    return finish(name, report, table(report), args, targets(report))


def raise_fd_limit(needed: int) -> None:
    """Lift the soft limit on open files towards the hard one: N connections need N descriptors (the relay
    bench and the attack bench open hundreds)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """End a benchmark's child process: close its stdin (its cue to stop), wait, kill if it lingers."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
