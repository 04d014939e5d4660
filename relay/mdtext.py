"""Free text (a scenario's messages and description, written by its users) made safe to put in
the Markdown files relaysim writes: shown as written, never read as Markdown or HTML.

Every Markdown writer (``relay.compliance``'s disclosures, ``sims.report``, ``sims.matrix``,
``sims.sweep``, ``sims.access.reports``, ``sims.counterfactual``) passes user text through
:func:`md_text` (inline, and in a table's cells) or :func:`md_block` (a paragraph of its own).
A character is escaped only where Markdown could read it (CommonMark 0.31 with the GitHub
extensions: tables, strikethrough), so ordinary text comes out unchanged:

- ``\\``, the backtick, ``*``, ``<``, ``>``, ``|`` (a table's cell rule, escaped so even in a cell) and ``~``
  (strikethrough): always;
- ``_``: unless between two letters or digits (``pk_court_order``: intraword, never emphasis);
- ``]`` before ``(``, ``[`` or ``:``, which would close a link's text or a reference (``[x](y)``);
  a ``[`` alone links to nothing;
- ``&`` before what reads as an entity (``&lt;``, ``&#124;``);
- a line break (``\\n``, ``\\r\\n``, ``\\r``): ``<br>`` inline, a line of its own in a block, whose
  leading marker (``#``, ``-``, ``+``, ``=``, ``1.``) is escaped and leading spaces dropped.

In an indented code block (``counterfactual.md``) only a line break could end the block:
:func:`md_code_line` writes it as its escape.
"""

from __future__ import annotations

import re

__all__ = ["md_block", "md_code", "md_code_line", "md_text"]

_BREAK = re.compile(r"\r\n|\r|\n")
_SPECIAL = re.compile(r"[\\`*<>|~_]|\](?=[(\[:])|&(?=#?[0-9A-Za-z]+;)")
# a line's start that Markdown reads as a block: a heading, a list item, a setext underline
_LEAD = re.compile(r"[#\-+=]|\d{1,9}(?=[.)])")


def _escape(m: re.Match[str]) -> str:
    c, s, i = m[0], m.string, m.start()
    if c == "_" and 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum():
        return c
    return "\\" + c


def _line(text: str) -> str:
    return _SPECIAL.sub(_escape, text)


def md_text(text: object) -> str:
    """``text`` to show as written inline or in a table's cell: a line break becomes ``<br>``."""
    return "<br>".join(_line(part) for part in _BREAK.split(str(text)))


def md_code_line(text: object) -> str:
    """``text`` to show on one line of an indented code block, where Markdown reads nothing but a
    line break (which would end the block): each shown as its escape, ``\\n`` (``\\r``)."""
    return _BREAK.sub(lambda m: m[0].replace("\r", "\\r").replace("\n", "\\n"), str(text))


def md_code(text: object) -> str:
    """``text`` as an inline code span, shown as written: fenced by one more backtick than its longest
    run of them, padded with a space where it starts or ends with one (CommonMark §6.1 strips one space
    each side then), its line breaks as escapes (``md_code_line``), which would end a list's item."""
    s = md_code_line(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", s)), default=0) + 1)
    pad = " " if s[:1] in ("`", " ") or s[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_block(text: object) -> str:
    """``text`` as a block of its own (a description): its lines kept, none of them read as Markdown."""
    out = []
    for part in _BREAK.split(str(text)):
        line = _line(part.lstrip(" \t"))
        m = _LEAD.match(line)
        if m:
            line = f"{m[0]}\\{line[m.end() :]}" if m[0][0].isdigit() else f"\\{line}"
        out.append(line)
    return "\n".join(out)
