"""What relaysim prints on a terminal: tables that wrap at word boundaries and fit the width.

Every terminal table goes through :func:`table` and :func:`render` (rich): a cell wraps between
words, never inside one, and the table takes the width it is given, by default the terminal's
(``COLUMNS`` when set; 100 columns when stdout is not a terminal). Colour only when stdout is a
terminal and ``NO_COLOR`` is unset (https://no-color.org); output to a file or a pipe is plain text.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from relaysim.sims.numbers import MAX_COLUMNS, MIN_COLUMNS

__all__ = [
    "OUTCOME_COLOURS",
    "SEP",
    "outcome_style",
    "render",
    "table",
    "terminal_width",
    "truecolor",
    "use_color",
]

# The column rule the tables draw between cells (box.MINIMAL: no outer frame, "│" between columns).
SEP = "│"

# One colour per outcome of a category asked for by legal process: handed over, or one of the four
# reasons of relay/legal.py it was not. Okabe–Ito colours, distinguishable with the common
# colour-vision deficiencies; the HTML report's legend (sims/reports/html.py) uses the same ones.
OUTCOME_COLOURS: dict[str, str] = {
    "provided": "#C2410C",
    "withheld_by_policy": "#B07800",
    "not_retained": "#0066A2",
    "no_capability": "#A4427A",
    "cryptographically_impossible": "#00785A",
}
# The same hues among a terminal's 16 standard colours, for one that cannot show 24-bit colour
# (the nearest standard colour would give two reasons the same grey).
OUTCOME_STANDARD: dict[str, str] = {
    "provided": "red",
    "withheld_by_policy": "yellow",
    "not_retained": "blue",
    "no_capability": "magenta",
    "cryptographically_impossible": "green",
}


def truecolor() -> bool:
    """Whether the terminal says it shows 24-bit colour (``COLORTERM``, as rich and most tools read it)."""
    return os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit")


def outcome_style(outcome: str) -> str:
    """The colour of an outcome of legal process (``provided`` or a reason of relay/legal.py): the
    HTML report's own where the terminal shows 24-bit colour, else the same hue among the 16."""
    return OUTCOME_COLOURS[outcome] if truecolor() else OUTCOME_STANDARD[outcome]


MIN_WIDTH = MIN_COLUMNS  # the narrowest the views lay out (``--width`` refuses less)
_COLUMNS = re.compile(r"[0-9]{1,30}")


def terminal_width(default: int = 100) -> int:
    """The terminal's width in columns: ``COLUMNS`` if set, the terminal's own, else ``default``;
    never below MIN_WIDTH (a narrower one gets MIN_WIDTH's layout, wrapped by the terminal, rather
    than columns of one character each) nor above MAX_COLUMNS, ``--width``'s largest (COLUMNS=10**9
    was laid out, a line of a billion blanks per row, until the machine gave out).

    COLUMNS is read as ``--width`` is, in ASCII digits: one that is no such number (``abc``, ``-5``,
    ``0``, or what int() alone would take: ``١٢٠``, `` 120``, ``1_20``) is left aside, as Python's
    shutil leaves a word that is no number, for the terminal's own width."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if _COLUMNS.fullmatch(columns) else 0
    if width <= 0:  # (as shutil.get_terminal_size does, without its reading of COLUMNS)
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            width = 0
    return min(MAX_COLUMNS, max(MIN_WIDTH, width or default))


def use_color(stream: object = None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (to anything but the empty string)."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# What a scenario's free text (a message, a description) may hold that a terminal would obey
# rather than show: C0 and C1 control characters but the line break and the tab (ESC starts a
# colour, a cursor move or a window title; CR overwrites the line), and the bidirectional
# overrides and isolates that reorder what follows them (CVE-2021-42574, "Trojan Source").
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would obey instead of showing written as an escape
    (``\\x1b``, ``\\u202e``), so a scenario's words are shown, never run, by the views."""
    return _UNSHOWABLE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


def _cell(cell: str | Text) -> str | Text:
    if isinstance(cell, Text):
        plain = cell.plain
        return Text(printable(plain), style=cell.style) if _UNSHOWABLE.search(plain) else cell
    return printable(cell)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str | Text]], *, ratios: Sequence[int] = ()
) -> Table:
    """A table whose cells wrap between words (a word longer than its column is folded, never dropped).
    Each cell is shown :func:`printable`."""
    t = Table(box=box.MINIMAL, show_edge=False, pad_edge=False, expand=True, header_style="bold")
    for i, h in enumerate(headers):
        ratio = ratios[i] if i < len(ratios) and ratios[i] else None
        t.add_column(h, overflow="fold", ratio=ratio, no_wrap=False)
    for row in rows:
        t.add_row(*map(_cell, row))
    return t


def render(*items: RenderableType | str, width: int | None = None, color: bool = False) -> str:
    """The items as text, one after another, at ``width`` columns (default: the terminal's); ANSI
    colour codes only with ``color``."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width or terminal_width(),
        force_terminal=color,
        no_color=not color,
        color_system=("truecolor" if truecolor() else "standard") if color else None,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )
    for item in items:
        console.print(printable(item) if isinstance(item, str) else item)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
