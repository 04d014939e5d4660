"""A scenario's free text (its messages, its description) and its names (people, legal process,
groups), written by teachers and journalists, reach the Markdown files a run writes, the HTML
report and the terminal views: each must show them as written, never read them as structure.

The Markdown is rendered by the CommonMark parser rich brings (markdown-it-py, with GitHub's tables
and strikethrough; commonmark.py under rich 13.0) and the result read back with html.parser; the
cells of a table's rows are counted here."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from relaysim.relay.mdtext import md_block, md_code_line, md_text
from relaysim.sims.cli import main
from relaysim.sims.report import run_to_dir
from relaysim.sims.reports.html import render_report
from relaysim.sims.scenario import load_scenario

# What a message may hold that Markdown (or HTML, or rich's markup) would read as structure: a
# table's cell rule, line breaks (both kinds) starting a heading and a list item, a code span, HTML,
# emphasis, a link, an entity, strikethrough, a backslash, and rich's markup.
HOSTILE = (
    "a | b\n# heading?\r\n- list? `tick` <b>x</b> *y* _z_ [l](http://e.example) &amp; ~~s~~ \\ [bold]r[/] [/]"
)
# A message that is itself a Markdown table.
TABLE = "| | |\n|---|---|"
DESCRIPTION = (
    "Line one | a pipe\n# Not a heading\n- not a list\n1. not a numbered list\n"
    "<script>alert(1)</script> `code` *em* _em_ [link](http://e.example) &lt; ~~gone~~ \\ end\n    not code"
)
# Names are [A-Za-z0-9_.-]: an underscore at a word's edge is all they can hold that Markdown reads.
PERSON, ORDER = "_ann_", "_order_"

_PEOPLE = f"""
[[people]]
name = "{PERSON}"
devices = [{{ region = "ca", address = "198.51.100.71" }}]

[[people]]
name = "ben"
devices = [{{ region = "ca", address = "198.51.100.72" }}]
"""


def _messages(first: str) -> str:
    return f"""
[[conversations]]
between = ["{PERSON}", "ben"]
messages = [
  {{ at = "{first}", from = "{PERSON}", text = {json.dumps(HOSTILE)} }},
  {{ at = "1h40m", from = "ben", text = {json.dumps(TABLE)} }},
]
"""


# name: (the scenario, the files (relative to the run) that must show HOSTILE as written)
SCENARIOS: dict[str, tuple[str, list[str]]] = {
    # two operators side by side, one global key (the words open), an order naming the person, and
    # the relay swapping the person's identity with a forged message
    "compare": (
        f"""
[scenario]
name = "_hostile_"
description = {json.dumps(DESCRIPTION)}
duration = "2h"
seed = 11
compare_profiles = ["bbm-consumer", "keep-everything"]

[relay]
region = "ca"
{_PEOPLE}
{_messages("1h20m")}
[[events]]
at = "1m"
kind = "exceptional_access"
demand = "global_key"

[[events]]
at = "1h"
kind = "legal_process"
process = "ca_part_vi_authorization"
target = "{PERSON}"
name = "{ORDER}"

[[events]]
at = "1h10m"
kind = "relay_swaps_identity"
victim = "{PERSON}"
contact = "ben"
text = {json.dumps(HOSTILE)}
""",
        [
            "comparison.md",
            f"bbm-consumer/disclosures/{ORDER}.md",
            f"keep-everything/disclosures/{ORDER}.md",
            "bbm-consumer/exceptional/relay-swaps-identity.md",
        ],
    ),
    # key escrow, the key stolen: what the thief reads, in a table's cell
    "escrow": (
        f"""
[scenario]
name = "hostile-escrow"
description = {json.dumps(DESCRIPTION)}
duration = "2h"
seed = 12

[relay]
region = "ca"
profile = "keep-everything"
{_PEOPLE}
{_messages("1h")}
[[events]]
at = "1m"
kind = "legal_process"
process = "blanket_demand"
jurisdiction = "pk"
name = "{ORDER}"

[[events]]
at = "30m"
kind = "exceptional_access"
demand = "key_escrow"

[[events]]
at = "1h50m"
kind = "escrow_key_stolen"
""",
        ["exceptional/key-escrow.md"],
    ),
    # a demand refused, and the separate counterfactual run in which it is complied with
    "counterfactual": (
        f"""
[scenario]
name = "hostile-counterfactual"
description = {json.dumps(DESCRIPTION)}
duration = "2h"
seed = 13

[relay]
region = "pk"
profile = "bbm-consumer"
{_PEOPLE}
{_messages("1h")}
[[events]]
at = "30m"
kind = "legal_process"
process = "pta_demand"
name = "{ORDER}"
answered = "1h50m"
counterfactual = "complied"
""",
        [f"counterfactual/disclosures/{ORDER}.md"],
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, (text, _files) in SCENARIOS.items():
        toml = base / f"{name}.toml"
        toml.write_text(text, encoding="utf-8")
        run_to_dir(load_scenario(toml), base / name)
        out[name] = base / name
    return out


def _to_html(markdown: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # rich 13.0 parses Markdown with commonmark.py
        return str(importlib.import_module("commonmark").commonmark(markdown))
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


class _Read(HTMLParser):
    """The text of rendered HTML (a ``<br>`` as a line break), and every element with its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.handle_data("\n")
            return
        self.elements.append((tag, dict(attrs), []))
        self._open.append(self.elements[-1][2])

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for words in self._open:
            words.append(data)


def _rendered(markdown: str) -> _Read:
    r = _Read()
    r.feed(_to_html(markdown))
    return r


def _cells(line: str) -> int:
    """The cells of one table row: split at each ``|`` not escaped."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def _check_markdown(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # every row of each table has its header's number of cells
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = _cells(line)
        else:
            assert _cells(line) == header, f"{path}: {line!r} has {_cells(line)} cells, its header {header}"
    r = _rendered(text)
    for tag, attrs, words in r.elements:
        said = "".join(words)
        where = f"{path}: <{tag} {attrs}>{said}</{tag}>"
        assert tag not in ("script", "b", "i", "del", "img"), where  # none of relaysim's own Markdown
        assert not (tag == "a" and "e.example" in str(attrs.get("href"))), where
        assert not (tag in ("em", "strong") and said in ("y", "z", "em", "ann", "order", "hostile")), where
        assert not (tag == "code" and said in ("tick", "code")), where
        assert not (
            tag in ("h1", "h2", "h3", "h4", "li") and said.startswith(("heading?", "Not a heading"))
        ), where
        assert not (tag == "li" and said.startswith(("list?", "not a list", "not a numbered"))), where
        assert not (tag == "h2" and said == ""), where  # "|---|---|" under a line: a setext heading


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_markdown_file_keeps_its_structure(runs: dict[str, Path], name: str) -> None:
    files = sorted(runs[name].rglob("*.md"))
    assert len(files) >= 3
    for path in files:
        _check_markdown(path)


@pytest.mark.parametrize(("name", "file"), [(n, f) for n, (_t, files) in SCENARIOS.items() for f in files])
def test_a_message_is_shown_as_written(runs: dict[str, Path], name: str, file: str) -> None:
    shown = "".join(_rendered((runs[name] / file).read_text(encoding="utf-8")).text)
    assert HOSTILE.replace("\r\n", "\n") in shown, shown


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_description_and_the_names_are_shown_as_written(runs: dict[str, Path], name: str) -> None:
    summaries = sorted(runs[name].rglob("summary.md"))
    assert summaries
    for path in summaries:
        shown = "".join(_rendered(path.read_text(encoding="utf-8")).text)
        # each line of the description as written (a line's leading spaces are dropped)
        assert all(line.strip() in shown for line in DESCRIPTION.splitlines()), shown
        assert f"disclosures/{ORDER}.md" in shown
    for path in runs[name].rglob(f"{ORDER}.md"):
        shown = "".join(_rendered(path.read_text(encoding="utf-8")).text)
        assert f"Disclosure: {ORDER}" in shown, shown


def test_a_counterfactual_quotes_a_message_on_one_line_of_its_code_block(runs: dict[str, Path]) -> None:
    text = (runs["counterfactual"] / "counterfactual.md").read_text(encoding="utf-8")
    _check_markdown(runs["counterfactual"] / "counterfactual.md")
    quoted = HOSTILE.replace("\r", "\\r").replace("\n", "\\n")
    assert f"      {PERSON} → ben: “{quoted}”\n" in text, text
    r = _rendered(text)
    assert any(tag == "code" and quoted in "".join(words) for tag, _a, words in r.elements)


@pytest.mark.parametrize(
    ("text", "inline", "block"),
    [
        ("plain words, pk_court_order & more [defences] x", None, None),  # unchanged: nothing to read
        ("a|b", "a\\|b", "a\\|b"),
        ("x\ny\r\nz\rw", "x<br>y<br>z<br>w", "x\ny\nz\nw"),
        ("# h", "# h", "\\# h"),
        ("  - l", "  - l", "\\- l"),
        ("12. n", "12. n", "12\\. n"),
        ("=====", "=====", "\\====="),
        ("_a_ b_c *d*", "\\_a\\_ b_c \\*d\\*", None),
        ("[x](y) [x][y] [x]: y", "[x\\](y) [x\\][y] [x\\]: y", None),
        ("<b>&amp;&#124; & x`~", "\\<b\\>\\&amp;\\&#124; & x\\`\\~", None),
        ("back\\slash", "back\\\\slash", None),
    ],
)
def test_md_text_and_md_block(text: str, inline: str | None, block: str | None) -> None:
    assert md_text(text) == (text if inline is None else inline)
    assert md_block(text) == (md_text(text) if block is None else block)


def test_md_code_line() -> None:
    assert md_code_line("a\r\nb\nc `*|") == "a\\r\\nb\\nc `*|"


@pytest.mark.parametrize("metric", ["plain.path", "a`b", "`edge`", "two``ticks", " pad ", "a\nb"])
def test_sweep_markdown_shows_a_metric_path_as_written_in_its_code_span(metric: str) -> None:
    """sweep.md listed each --metric in single backticks: a backtick in it ended the span early."""
    from relaysim.sims.sweep import render_markdown as sweep_markdown

    data = {"scenario": "s", "source": "s.toml", "seeds": [1], "params": [], "metrics": [metric], "cells": []}
    codes = [
        "".join(words) for tag, _attrs, words in _rendered(sweep_markdown(data)).elements if tag == "code"
    ]
    assert codes == [md_code_line(metric)]


def test_sweep_and_matrix_markdown_keep_a_hostile_value_in_its_cell(tmp_path: Path) -> None:
    from relaysim.sims.matrix import render_markdown as matrix_markdown
    from relaysim.sims.sweep import render_markdown as sweep_markdown

    data = {
        "scenario": "s",
        "source": "s.toml",
        "seeds": [1],
        "params": [{"key": "a|b"}],
        "metrics": ["m"],
        "cells": [{"params": {"a|b": "x|y\nz"}, "metrics": {"m": {"mean": None}}}],
    }
    text = sweep_markdown(data)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert {_cells(line) for line in rows} == {2}, rows

    toml = tmp_path / "m.toml"
    toml.write_text(
        f'[scenario]\nname = "m"\nduration = "1h"\ndescription = {json.dumps(DESCRIPTION)}\n{_PEOPLE}',
        encoding="utf-8",
    )
    scenario = load_scenario(toml)
    shown = "".join(_rendered(matrix_markdown({}, scenario, PERSON)).text)
    assert all(line.strip() in shown for line in DESCRIPTION.splitlines()), shown


# --- the HTML report --------------------------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))


_REPORT_TAGS = {  # every element the report writes itself
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "nav", "ul", "li", "a",
    "main", "section", "script", "span", "b", "i", "div", "table", "thead", "tbody", "tr", "th", "td", "label",
    "select", "option", "details", "summary", "figure", "figcaption", "svg", "line", "circle", "text",
    "dl", "dt", "dd", "article", "code", "small", "em", "strong", "abbr", "br", "caption", "col", "colgroup",
}  # fmt: skip
_REPORT_ATTRS = {
    "class", "id", "href", "lang", "charset", "http-equiv", "content", "name", "title", "style", "for",
    "value", "colspan", "rowspan", "role", "aria-label", "viewbox", "xmlns", "x1", "y1", "x2", "y2", "cx",
    "cy", "r", "fill", "stroke", "stroke-width", "stroke-dasharray", "x", "y", "text-anchor", "font-size",
    "font-weight", "open", "scope", "data-for", "data-shown", "data-people", "data-kind", "data-outcome",
    "data-sealed", "aria-hidden", "tabindex", "selected", "width", "height",
}  # fmt: skip


def _report_elements(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    p = _Elements()
    p.feed(page)
    return p.seen


def test_the_html_report_shows_every_name_and_word_as_text(runs: dict[str, Path]) -> None:
    page = render_report(runs["compare"])
    seen = _report_elements(page)
    assert [t for t, _a in seen if t == "script"] == ["script"]
    assert not [(t, a) for t, a in seen if t == "a" and any("e.example" in str(v) for _k, v in a)]
    odd = {k for _t, attrs in seen for k, _v in attrs} - _REPORT_ATTRS
    assert not odd, odd
    assert not {t for t, _a in seen} - _REPORT_TAGS, {t for t, _a in seen} - _REPORT_TAGS
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_the_html_report_keeps_a_profiles_name_out_of_its_attributes(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A run folder's summary.json names the profiles compared; the report made each an element's
    id, an href and a data- attribute as it was: a hand-edited one added an attribute."""
    run = tmp_path / "run"
    shutil.copytree(runs["compare"], run)
    hostile = 'x" onmouseover="alert(1)'
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["compare_profiles"] = [hostile, "keep-everything"]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    shutil.copytree(run / "bbm-consumer", run / hostile)
    seen = _report_elements(render_report(run))
    assert not [(t, a) for t, a in seen if any(k == "onmouseover" for k, _v in a)]
    ids = [v for _t, a in seen for k, v in a if k == "id"]
    assert all(v and re.fullmatch(r"[A-Za-z0-9_.-]+", v) for v in ids), ids


# --- the terminal --------------------------------------------------------------------------------


def test_show_prints_rich_markup_in_a_message_as_written(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """rich reads "[bold]" as a style and "[/]" as closing one (MarkupError when nothing is open):
    every table and line of the views prints with markup off (sims.term.render)."""
    assert main(["show", str(runs["escrow"]), "--width", "400"]) == 0
    out = capsys.readouterr().out
    assert "[bold]r[/] [/]" in out, out
    assert "[l](http://e.example)" in out


# What a terminal would obey rather than show (sims.term.printable): C0 and C1 controls but the
# line break and the tab, and the bidirectional overrides and isolates.
_OBEYED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
TERMINAL = "Hi \x1b[2J\x1b]0;title\x07 back over \u202eevil"
TERMINAL_SHOWN = "Hi \\x1b[2J\\x1b]0;title\\x07 back over \\u202eevil"

# A message held on the relay (ben is offline from the start) under a profile whose desk holds the
# content key: a backup warrant opens it, and the disclosure quotes its words.
_HELD = f"""
[scenario]
name = "held"
duration = "2h"
seed = 11

[relay]
region = "ca"
profile = "bbm-consumer"

[[people]]
name = "ann"
devices = [{{ region = "ca", address = "198.51.100.71" }}]

[[people]]
name = "ben"
devices = [{{ region = "ca", address = "198.51.100.72" }}]

[[conversations]]
between = ["ann", "ben"]
messages = [{{ at = "1h", from = "ann", text = {json.dumps(TERMINAL)} }}]

[[events]]
at = "1m"
kind = "device_offline"
device = "ben/1"
"""


def test_disclose_prints_a_messages_control_characters_as_escapes_and_keeps_them_in_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """disclose printed the disclosure's Markdown as it was: a message's ESC (a colour, a cursor
    move, a window title), BEL and bidirectional override reached the terminal, which obeyed them."""
    toml = tmp_path / "held.toml"
    # (a search warrant on the relay of LINE with Letter Sealing off hands over the words it holds; the warrant on the
    # backup's custodian served here before is not the relay's to answer: disclose refuses it)
    toml.write_text(_HELD.replace('"bbm-consumer"', '"line-letter-sealing-off"'), encoding="utf-8")
    run_to_dir(load_scenario(toml), tmp_path / "run")
    db, data = str(tmp_path / "run" / "relay.db"), tmp_path / "d.json"
    argv = ["disclose", "--db", db, "--process", "search_warrant", "--target", "ann"]
    assert main([*argv, "--name", "order\x1b[31m", "--json", str(data)]) == 0
    out = capsys.readouterr().out
    assert not _OBEYED.search(out), repr(out)
    assert TERMINAL_SHOWN in out and "# Disclosure: order\\x1b[31m" in out, out
    kept = json.loads(data.read_text(encoding="utf-8"))  # the file keeps the words as written
    assert kept["name"] == "order\x1b[31m" and json.dumps(TERMINAL) in json.dumps(kept), kept


def test_chart_markdown_prints_the_folders_matrix_md_with_control_characters_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """chart --markdown prints DIR/matrix.md, the scenario's description in it around the chart's
    tables: as it was, its ESC and bidirectional overrides reached the terminal. (A description
    holding them, given to the run and to chart's check of the file, which refuses a hand-edited one.)"""
    from dataclasses import replace

    from relaysim.sims import cli

    built_in = cli._scenario
    monkeypatch.setattr(cli, "_scenario", lambda name: replace(built_in(name), description=TERMINAL))
    assert main(["chart", str(tmp_path)]) == 0
    md = tmp_path / "matrix.md"
    written = md.read_text(encoding="utf-8")
    assert TERMINAL in written
    capsys.readouterr()
    assert main(["chart", str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == written.replace(TERMINAL, TERMINAL_SHOWN), repr(out[:300])
    assert TERMINAL in md.read_text(encoding="utf-8")


def test_sweep_prints_a_values_control_characters_as_escapes_and_keeps_them_in_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sweep printed sweep.md, and a line per run on stderr, with a --param value as given."""
    toml = tmp_path / "held.toml"
    toml.write_text(_HELD, encoding="utf-8")
    out = tmp_path / "sw"
    argv = ["sweep", str(toml), "--param", f"scenario.description={TERMINAL},plain"]
    assert main([*argv, "--seeds", "1", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    for stream in (printed.out, printed.err):
        assert not _OBEYED.search(stream), repr(stream)
    assert TERMINAL_SHOWN in printed.out and TERMINAL_SHOWN in printed.err, printed
    assert TERMINAL in (out / "sweep.md").read_text(encoding="utf-8")
