"""The README's word that no test asserts a speed, checked on every test module.

Speed is judged by the benchmarks (``relaysim bench``), each as a ratio against a baseline measured
in the same run; a test that bounds an elapsed time from above fails on a slow or busy machine and
proves nothing on a fast one. What counts as asserting a speed here: an ``assert`` that compares an
elapsed time — a clock reading subtracted from another value (``time.perf_counter() - start < 40``),
or a name bound in the same function to such a difference (``took = time.monotonic() - t0``) — as
less than a bound. A lower bound (a timeout did not fire early), timestamps compared for their order
(``start_a < start_b < end_a``), an exact equality on trio's virtual clock, and a time limit that
turns a hang into a failure (``trio.fail_after``) are not speeds.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CLOCKS = frozenset(
    {
        "perf_counter",
        "perf_counter_ns",
        "monotonic",
        "monotonic_ns",
        "time",
        "time_ns",
        "process_time",
        "current_time",
    }
)


def _reads_a_clock(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in CLOCKS
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id in {"time", "trio"}
        for n in ast.walk(node)
    )


def _elapsed(node: ast.AST) -> bool:
    """Whether ``node`` holds a subtraction with a clock reading on either side."""
    return any(
        isinstance(n, ast.BinOp)
        and isinstance(n.op, ast.Sub)
        and (_reads_a_clock(n.left) or _reads_a_clock(n.right))
        for n in ast.walk(node)
    )


def speed_asserts(source: str, filename: str = "<test>") -> list[int]:
    """Line numbers of the asserts in ``source`` that bound an elapsed time from above."""
    found: list[int] = []
    tree = ast.parse(source, filename)
    for scope in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
        elapsed_names = {
            target.id
            for n in ast.walk(scope)
            if isinstance(n, ast.Assign | ast.AugAssign | ast.AnnAssign)
            and n.value is not None
            and _elapsed(n.value)
            for target in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(target, ast.Name)
        }

        def elapsed(node: ast.AST, names: set[str] = elapsed_names) -> bool:
            return _elapsed(node) or any(isinstance(x, ast.Name) and x.id in names for x in ast.walk(node))

        for n in ast.walk(scope):
            if not isinstance(n, ast.Assert):
                continue
            for c in (c for c in ast.walk(n.test) if isinstance(c, ast.Compare)):
                sides = [c.left, *c.comparators]
                for left, op, right in zip(sides, c.ops, sides[1:], strict=False):
                    # the side that must stay small: ``left < right`` bounds left, ``left > right`` right
                    small = left if isinstance(op, ast.Lt | ast.LtE) else right
                    if isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) and elapsed(small):
                        found.append(n.lineno)
    return sorted(set(found))


def test_no_test_asserts_a_speed() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for line in speed_asserts(path.read_text(), str(path))
    ]
    assert offenders == [], "asserts on an elapsed time (speed is the benchmarks' to judge): " + ", ".join(
        offenders
    )


def test_the_speed_assert_finder_finds_them() -> None:
    source = """
import time, trio

def test_direct():
    start = time.perf_counter()
    work()
    assert time.perf_counter() - start < 40

def test_through_a_name():
    t0 = time.monotonic()
    work()
    took = time.monotonic() - t0
    assert ok and took < 10, took

async def test_trio_clock():
    t0 = trio.current_time()
    await work()
    assert 0.15 <= trio.current_time() - t0 < 3
    assert 1 > time.time() - t0

def test_what_is_not_a_speed():
    a = time.monotonic()
    b = time.monotonic()
    assert a <= b  # an order
    assert time.monotonic() - a >= 0.15  # a lower bound
    assert trio.current_time() - a == 95  # trio's virtual clock
    with trio.fail_after(5):  # a hang guard
        pass
"""
    assert speed_asserts(source) == [7, 13, 18, 19]
