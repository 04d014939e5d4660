"""Number options of the relaysim commands: argparse types that take plain ASCII numbers within bounds.

Python's ``int()`` and ``float()`` take more than a person types as a count or a duration: digits of
other scripts (``"١٢"``, full-width ``"１２"``), underscores (``"1_000"``), surrounding spaces, and
for ``float()`` ``"nan"``, ``"inf"`` and ``"1e400"`` (an infinity). Each option's type here takes
only ``[+-]digits`` (a whole number) or ``[+-]digits[.digits][e[+-]digits]`` (a decimal), finite,
and refuses a value outside the option's bounds when the options are read (argparse's usage error,
exit status 2, naming the option), before a benchmark asks for 10**12 runs, a sweep for a million
worker processes or a live run for a time scale of 1e300. A value in an error is shown as
``runfiles.brief`` shows it: a few thousand digits are not the message.

The bounds are each option's; the reasons for each are in the option's help or beside it.
"""

from __future__ import annotations

import argparse
import decimal
import math
import re
from collections.abc import Callable

from relaysim.sims.analysis.runfiles import MAX_SDA_TOP, SDA_TOP, brief

__all__ = [
    "MAX_COLUMNS",
    "MAX_SEED",
    "MAX_WORKERS",
    "MIN_COLUMNS",
    "SEED_BOUNDS",
    "add_sda_top",
    "decimal_number",
    "state_bounds",
    "whole_number",
    "workers",
]

# Widths (--width, and COLUMNS in sims.term): at least the narrowest the views lay out, at most what
# a screen or a file of a few megabytes can hold, so that a width of 10**9 is refused, not laid out.
MIN_COLUMNS = 40
MAX_COLUMNS = 100_000

# --workers everywhere: each worker is a Python interpreter of its own (tens of MB, a fork): past a few
# hundred, a machine has more processes than cores to run them, and 10**20 asked the pool for more
# than a C int holds.
MAX_WORKERS = 256

# A seed is an integer from 0 to 2**63 - 1. The largest is TOML's (its integers are 64-bit signed,
# toml.io/en/v1.0.0#integer): a seed beyond it could be given with --seed but written in no scenario
# file, so its run could not be reproduced from one. And none is negative: Python's random.Random(n)
# seeds with abs(n), so networkx made the same social graph of [generate] under -7 as under 7 while
# every other stream ("SEED:label", sims.world.util.seeded) differed: a negative seed was half a seed.
MAX_SEED = 2**63 - 1
# What every --seed's --help says (sims.scenario.seed_arg and sims.cli._seed, which imports it only
# when a seed is given, carry it): the error for a seed past it said the bounds, --help did not.
SEED_BOUNDS = f"from 0 to {MAX_SEED:,}"

_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Past 30 digits a whole number is past every bound here (all far below 10**30): it is refused as too
# large (or too small) without int(), which is slow on a 100,000-digit word and refuses 4,300 digits
# or more (a ValueError). It was refused as "not a whole number (digits 0-9)", which it is.
_MAX_DIGITS = 30


def whole_number(what: str, minimum: int, maximum: int, why: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number of ``what`` from ``minimum`` to ``maximum``, in ASCII digits;
    ``why`` says, in the error for a value past ``maximum``, why it is the largest."""
    if minimum > maximum:
        raise ValueError(f"whole_number({what!r}): minimum {minimum} is past maximum {maximum}")

    def parse(text: str) -> int:
        if not _WHOLE.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"expected a whole number of {what} (digits 0-9), got {brief(text)}"
            )
        if len(text.lstrip("+-").lstrip("0")) > _MAX_DIGITS:
            reason = f" ({why})" if why else ""
            if text.startswith("-"):
                raise argparse.ArgumentTypeError(f"expected at least {minimum:,} {what}, got {brief(text)}")
            raise argparse.ArgumentTypeError(
                f"expected at most {maximum:,} {what}{reason}, got {brief(text)}"
            )
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum:,} {what}, got {value:,}")
        if value > maximum:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"expected at most {maximum:,} {what}{reason}, got {value:,}")
        return value

    parse.__name__ = parse.__qualname__ = "whole_number"  # argparse names the type in some errors
    parse.bounds = f"from {minimum:,} to {maximum:,}"  # type: ignore[attr-defined]  # (state_bounds)
    return parse


def decimal_number(
    what: str, minimum: float, maximum: float, *, above_minimum: bool = False, why: str = ""
) -> Callable[[str], float]:
    """An argparse type: a finite decimal number of ``what`` from ``minimum`` (excluded with
    ``above_minimum``) to ``maximum``, written with ASCII digits, a point and an exponent at most;
    ``why`` says, in the error for a value past ``maximum``, why it is the largest."""

    def parse(text: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"expected a number of {what} (digits 0-9, a point, an exponent), got {brief(text)}"
            )
        value = float(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number of {what}, got {brief(text)}")
        if value < minimum or (above_minimum and value == minimum):
            bound = "more than" if above_minimum else "at least"
            raise argparse.ArgumentTypeError(f"expected {bound} {minimum:g} {what}, got {value:g}")
        if value > maximum:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"expected at most {maximum:g} {what}{reason}, got {value:g}")
        return value

    parse.__name__ = parse.__qualname__ = "decimal_number"
    least = f"more than {_number(minimum)}, at most" if above_minimum else f"from {_number(minimum)} to"
    parse.bounds = f"{least} {_number(maximum)}"  # type: ignore[attr-defined]  # (state_bounds)
    return parse


def _number(value: float) -> str:
    """A bound as --help says it: 1,000, 0.5 and 0.000001, not 1000.0, 1e+03 and 1e-06."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return format(decimal.Decimal(repr(value)), "f") if abs(value) >= 1e-9 else f"{value:g}"


def state_bounds(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with each number option's help ending in its bounds (``; from 1 to 256``), read from
    its type (``bounds``, set by :func:`whole_number` and :func:`decimal_number`), so that --help and
    the error for a value past them cannot drift apart; its subcommands' options too. Only the error
    said most options' largest value. Said once, however often it is called. (relay.server has its
    own: relay/ does not import sims/.)"""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # (an alias is the same parser)
                state_bounds(sub)
        bounds = getattr(action.type, "bounds", None)
        if (
            isinstance(bounds, str)
            and action.help is not argparse.SUPPRESS
            and bounds not in (action.help or "")
        ):
            action.help = f"{action.help}; {bounds}" if action.help else bounds
    return parser


def workers(minimum: int = 1) -> Callable[[str], int]:
    """Every ``--workers``'s type: a whole number of worker processes from ``minimum`` to MAX_WORKERS."""
    return whole_number("worker processes", minimum, MAX_WORKERS, why="each is a process of its own")


def add_sda_top(parser: argparse.ArgumentParser, where: str = "the JSON's top_after_k") -> None:
    """``--sda-top N`` on ``parser`` (``relaysim analyze`` and ``defences``, which both write the analysis):
    the best accounts per checkpoint the statistical disclosure attack's rankings give, from 1 to
    runfiles.MAX_SDA_TOP (which says why), as ``sims.analysis.run.analyze(sda_top=...)`` takes them;
    ``where``: the file that gives them. One option, not a copy per command."""
    parser.add_argument(
        "--sda-top",
        type=_SDA_TOP,
        default=SDA_TOP,
        metavar="N",
        help=(
            "how many of the best-ranked accounts the statistical disclosure attack's rankings give for each "
            f"target at each checkpoint ({where}), and, with a transcript, the most they keep: "
            f"the likeliest correspondents, best first (default: {SDA_TOP})"
        ),
    )


# --sda-top's type: 0 is refused (rankings naming no one, as analyze(sda_top=0) is), and past
# MAX_SDA_TOP the attack's rankings could outgrow what one call of it may keep (runfiles.MAX_SDA_TOP)
_SDA_TOP = whole_number("accounts", 1, MAX_SDA_TOP, why="each is kept for every target at every checkpoint")
