"""What relaysim prints on a terminal: tables that wrap at word boundaries and fit the width.

Every terminal table goes through :func:`table` and :func:`render` (rich): a cell wraps between
words, never inside one, and the table takes the width it is given, by default the terminal's
(``COLUMNS`` when set; 100 columns when stdout is not a terminal). Colour only when stdout is a
terminal and ``NO_COLOR`` is unset (https://no-color.org); output to a file or a pipe is plain text.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = ["SEP", "render", "table", "terminal_width", "use_color"]

# The column rule the tables draw between cells (box.MINIMAL: no outer frame, "│" between columns).
SEP = "│"


def terminal_width(default: int = 100) -> int:
    """The terminal's width in columns: ``COLUMNS`` if set, the terminal's own, else ``default``."""
    return shutil.get_terminal_size((default, 24)).columns


def use_color(stream: object = None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (to anything but the empty string)."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str | Text]], *, ratios: Sequence[int] = ()
) -> Table:
    """A table whose cells wrap between words (a word longer than its column is folded, never dropped)."""
    t = Table(box=box.MINIMAL, show_edge=False, pad_edge=False, expand=True, header_style="bold")
    for i, h in enumerate(headers):
        ratio = ratios[i] if i < len(ratios) and ratios[i] else None
        t.add_column(h, overflow="fold", ratio=ratio, no_wrap=False)
    for row in rows:
        t.add_row(*row)
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
        color_system="standard" if color else None,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )
    for item in items:
        console.print(item)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
