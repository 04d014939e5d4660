"""``relaysim report``: one self-contained HTML file, checked as text and as a viewer sees it in
headless Chromium (tests.browser: the browser's DevTools protocol, no new dependency)."""

from __future__ import annotations

import collections
import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay.mdtext import md_text
from relaysim.sims.cli import main
from relaysim.sims.report import run_to_dir
from relaysim.sims.reports.html import OUTCOMES, ReportError, relay_stores_read, render_report, write_report
from relaysim.sims.scenario import load_scenario, resolve_scenario
from tests.browser import Browser, find_chromium

HOSTILE = "<script>window.__pwned=1</script> & <b>bold</b>"
SCENARIO = f'''
[scenario]
name = "report-check"
description = "A <i>check</i> of the report & its escaping: {HOSTILE}"
duration = "2h"
seed = 7

[relay]
region = "us"
profile = "keep-everything"
sealed_sender = true

[[people]]
name = "amira"
devices = [{{ region = "pk", address = "203.0.113.24" }}]

[[people]]
name = "ben"
devices = [{{ region = "ca", address = "198.51.100.77" }}]

[[people]]
name = "chen"
devices = [{{ region = "us", address = "192.0.2.9" }}]

[[conversations]]
between = ["amira", "ben"]
messages = [
  {{ at = "10m", from = "amira", text = "Meet me by the north gate at noon." }},
  {{ at = "12m", from = "ben", text = "{HOSTILE}" }},
  {{ at = "50m", from = "amira", text = "Bring the second folder as well." }},
]

[[conversations]]
between = ["ben", "chen"]
messages = [
  {{ at = "20m", from = "chen", text = "Dinner on Thursday with the cousins?" }},
  {{ at = "25m", from = "ben", text = "Thursday works, seven o'clock." }},
]

[[events]]
at = "1h"
kind = "legal_process"
process = "search_warrant"
target = "ben"
name = "warrant-ben"
'''
PLAINTEXTS = [
    "Meet me by the north gate at noon.",
    HOSTILE,
    "Bring the second folder as well.",
    "Dinner on Thursday with the cousins?",
    "Thursday works, seven o'clock.",
]


def _run(folder: Path) -> Path:
    toml = folder.parent / f"{folder.name}.toml"
    toml.write_text(SCENARIO, encoding="utf-8")
    run_to_dir(load_scenario(toml), folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("report") / "run")


# --- the file -----------------------------------------------------------------------------------


def test_same_run_gives_the_same_bytes(run: Path, tmp_path: Path) -> None:
    again = _run(tmp_path / "again")  # another folder, another run of the same scenario and seed
    first = write_report(run).read_bytes()
    assert write_report(again).read_bytes() == first
    assert str(tmp_path).encode() not in first and b"/tmp" not in first  # no machine paths


def test_everything_from_the_run_is_escaped(run: Path) -> None:
    page = render_report(run)
    assert HOSTILE not in page and "<i>check</i>" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<script") == 1  # the report's own filter script, nothing else


def test_nothing_to_fetch(run: Path) -> None:
    page = render_report(run)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)=["'](?!#)""", page), "every link is to a section of the page itself"
    assert "@import" not in page and "url(" not in page


def test_each_outcome_has_one_colour_and_its_words(run: Path) -> None:
    page = render_report(run)
    seen: dict[str, set[str]] = {}
    for outcome, colour in re.findall(r'data-outcome="(\w+)" style="border-color:(#\w+)', page):
        seen.setdefault(outcome, set()).add(colour)
    assert seen.keys() >= {"provided", "not_retained", "cryptographically_impossible"}
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({OUTCOMES[o][2] for o in OUTCOMES}) == len(OUTCOMES)  # the legend's colours differ
    legend = page[page.index('id="legend"') :]
    for code, words, _colour, _tint in OUTCOMES.values():
        assert f"<b>{code}</b>{words}" in legend.replace("&#x27;", "'")
    order = page[page.index('id="orders"') :]
    assert "warrant-ben" in order and "complied" in order
    assert "cryptographically impossible" in order and "end-to-end encrypted" in order


def test_contact_graph_uses_the_analysts_files_when_present(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    page = render_report(copy)  # no analysis/: computed in memory, nothing written
    assert not (copy / "analysis").exists()
    assert page.count('class="edge true"') == 2  # amira–ben, ben–chen
    # an analyst's file that got one pair wrong and missed one
    (copy / "analysis").mkdir()
    wrong = {"between": ["amira", "chen"]}
    (copy / "analysis" / "relay.json").write_text(
        json.dumps({"analysis": {"contact_graph": {"edge_list": [{"between": ["amira", "ben"]}, wrong]}}}),
        encoding="utf-8",
    )
    page = render_report(copy)
    graph = page[page.index('id="graph"') :]
    assert graph.count('class="edge right"') == 1 and graph.count('class="edge wrong"') == 1
    assert graph.count('class="edge missed"') == 1
    assert "<b>Wrong (1):</b> amira–chen" in graph and "<b>Missed (1):</b> ben–chen" in graph


class _Ids(HTMLParser):
    """Every element's id and every in-page link's target, however the attribute is quoted."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k == "id" and v is not None:
                self.ids.append(v)
            elif k == "href" and v and v.startswith("#"):
                self.links.append(v[1:])


def _ids(page: str) -> _Ids:
    p = _Ids()
    p.feed(page)
    return p


def _repeated_ids(page: str) -> list[str]:
    counts = collections.Counter(_ids(page).ids)
    return sorted(i for i, n in counts.items() if n > 1)


def test_every_element_id_is_used_once(run: Path, tmp_path: Path) -> None:
    """A single run had "timeline" on its section and its table; pakistan-2015's comparison had each
    profile's timeline, the legend (three times) and the graphs twice."""
    page = write_report(run).read_text(encoding="utf-8")
    assert 'id="timeline"' in page and _repeated_ids(page) == []
    out = tmp_path / "pk"
    run_to_dir(resolve_scenario("pakistan-2015"), out)
    page = write_report(out).read_text(encoding="utf-8")
    assert 'id="bes-legend"' in page and _repeated_ids(page) == []


GHOSTS_SIDE_BY_SIDE = """
[scenario]
name = "ghosts-side-by-side"
compare_profiles = ["signal", "whatsapp"]
duration = "1h"
seed = 5

[[people]]
name = "omar"
devices = [{ region = "us", address = "198.51.100.40" }]

[[people]]
name = "lena"
devices = [{ region = "us", address = "198.51.100.41" }]

[[conversations]]
between = ["lena", "omar"]
messages = [{ at = "40m", from = "lena", text = "Friday." }]

[[events]]
at = "20m"
kind = "exceptional_access"
demand = "ghost_device"
target = "omar"
"""


def test_a_comparisons_profiles_with_the_same_exceptional_report_have_ids_of_their_own(
    tmp_path: Path,
) -> None:
    """Each profile's exceptional/ghost-device.json became <article id='exceptional-ghost-device'>:
    the id was repeated once per profile compared (the built-in ghost-identity-models, three times)."""
    toml = tmp_path / "g.toml"
    toml.write_text(GHOSTS_SIDE_BY_SIDE, encoding="utf-8")
    run_to_dir(load_scenario(toml), tmp_path / "g")
    page = render_report(tmp_path / "g")
    ids = _ids(page)
    assert {"signal-exceptional-ghost-device", "whatsapp-exceptional-ghost-device"} <= set(ids.ids), ids.ids
    assert _repeated_ids(page) == []
    assert set(ids.links) <= set(ids.ids), set(ids.links) - set(ids.ids)  # every link finds its target
    # each article sits in its own profile's section
    for profile in ("signal", "whatsapp"):
        section = page[page.index(f'id="{profile}-exceptional"') :]
        assert section.index(f"id='{profile}-exceptional-ghost-device'") < section.index("</section>")


@pytest.mark.parametrize("name", ["../outside", "/etc", "signal/..", "..", ""])
def test_a_comparisons_profile_name_never_leads_outside_its_folder(tmp_path: Path, name: str) -> None:
    """summary.json's compare_profiles were joined onto the run's folder unchecked: a hand-edited
    ``../outside`` (or ``/etc``) was read as a profile's run, outside the folder the report was given
    (its relay.db checked by report, its summary and disclosures shown as the comparison's)."""
    toml = tmp_path / "g.toml"
    toml.write_text(GHOSTS_SIDE_BY_SIDE, encoding="utf-8")
    run = tmp_path / "g"
    run_to_dir(load_scenario(toml), run)
    shutil.copytree(run / "signal", tmp_path / "outside")  # a run there, to be read if it is followed
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["compare_profiles"] = ["signal", name]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    inside = run.resolve()
    assert all(inside in p.resolve().parents for p in relay_stores_read(run)), relay_stores_read(run)
    with pytest.raises(ReportError) as exc:
        render_report(run)
    assert str(exc.value).startswith(
        f"{run / 'summary.json'}: compare_profiles[1]: expected a profile's name"
    )
    assert "a plain name" in str(exc.value) and repr(name) in str(exc.value)


def test_a_comparisons_profile_summary_that_is_no_object_is_a_report_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A profile's summary.json in a comparison that is JSON but no object (a list) reached the
    last-resort handler as AttributeError ("internal error ... a bug in relaysim"); it is refused as
    the comparison's own summary.json is, naming the file, with the command that makes the run again."""
    toml = tmp_path / "g.toml"
    toml.write_text(GHOSTS_SIDE_BY_SIDE, encoding="utf-8")
    run = tmp_path / "g"
    run_to_dir(load_scenario(toml), run)
    (run / "whatsapp" / "summary.json").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        render_report(run)
    said = str(exc.value)
    assert said.startswith(f"{run / 'whatsapp' / 'summary.json'}: expected a JSON object, got list; "), said
    assert said.endswith(f"run it again with: relaysim run NAME --seed 5 --out {run} --force"), said
    assert main(["report", str(run)]) == 2
    assert capsys.readouterr().err == f"relaysim report: {said}\n"


def test_a_comparisons_order_name_never_leads_outside_its_folder(tmp_path: Path) -> None:
    """comparison.json's order names named the disclosure each outcome is checked against,
    ``PROFILE/disclosures/NAME.json``: a hand-edited ``../../../x`` read ``x.json`` outside the run."""
    toml = tmp_path / "c.toml"
    toml.write_text(
        GHOSTS_SIDE_BY_SIDE.replace("ghosts-side-by-side", "order-side-by-side")
        + '\n[[events]]\nat = "50m"\nkind = "legal_process"\nprocess = "search_warrant"\ntarget = "omar"\n'
        'name = "w"\n',
        encoding="utf-8",
    )
    run = tmp_path / "c"
    run_to_dir(load_scenario(toml), run)
    shutil.copy(run / "signal" / "disclosures" / "w.json", tmp_path / "x.json")
    rows = json.loads((run / "comparison.json").read_text(encoding="utf-8"))
    rows[0]["name"] = "../../../x"
    (run / "comparison.json").write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        render_report(run)
    assert str(exc.value).startswith(f"{run / 'comparison.json'}: [0].name: expected the order's name")
    assert "'../../../x'" in str(exc.value)


def test_cli_report(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere: no such folder" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("file", "change"),
    [
        ("disclosures/warrant-ben.json", "{"),  # a file of the run that is no JSON (_load)
        ("disclosures/warrant-ben.json", '{"provided": [1]}'),  # no disclosure as relaysim writes it
        ("summary.json", "duration"),  # a field of summary.json of the wrong type
        ("provider.json", "{"),  # the run's calendar (sims.report.run_calendar)
    ],
)
def test_a_file_of_the_run_report_cannot_read_names_the_command_that_makes_it_again(
    run: Path, tmp_path: Path, file: str, change: str
) -> None:
    """Report's errors about a run's file ended "run the scenario again with --force", naming neither
    the scenario nor the folder: they give the command that makes the run (sims.report.run_again),
    as the rest of the report's errors do: its own file (NAME), under the seed it ran with."""
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    assert main(["analyze", str(folder)]) == 0  # (the contact graph's pages: not read off the orders)
    if change == "duration":
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        summary["duration_s"] = "two hours"
        change = json.dumps(summary)
    (folder / file).write_text(change, encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        render_report(folder)
    assert str(exc.value).startswith(f"{folder / file}"), exc.value
    assert str(exc.value).endswith(
        f"; run it again with: relaysim run NAME --seed 7 --out {folder} --force"
    ), exc.value
    assert "--force;" not in str(exc.value) and "again with --force" not in str(exc.value)


@pytest.mark.parametrize("analysed", [False, True])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provided": 5}, "provided: expected an object of categories, as relaysim writes, got 5"),
        ({"not_provided": {"bogus": {}}}, "not_provided: 'bogus' is no reason relaysim gives"),
        ({"response": None}, "response: expected one of complied, refused, challenged, withdrawn, got None"),
    ],
)
def test_a_malformed_disclosure_is_one_report_error_with_or_without_analyze_pages(
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    field: str,
    analysed: bool,
) -> None:
    """A run's folder without analysis/ has its analyses computed as report reads it
    (sims.analysis.view.from_disclosure): a malformed disclosure raised AnalysisInputError from
    write_report, without the command that makes the run again, where the same file in a folder
    relaysim analyze had written pages in was a ReportError. Both are one ReportError naming the file
    and the field (sims.report.disclosure_problem's words), and relaysim report says it in one line."""
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    if analysed:
        assert main(["analyze", str(folder)]) == 0
        capsys.readouterr()
    else:
        shutil.rmtree(folder / "analysis", ignore_errors=True)
    f = folder / "disclosures" / "warrant-ben.json"
    f.write_text(json.dumps({**json.loads(f.read_text(encoding="utf-8")), **change}), encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        write_report(folder)
    said = str(exc.value)
    assert said.startswith(f"{f}: {field}"), said
    assert said.endswith(f"; run it again with: relaysim run NAME --seed 7 --out {folder} --force"), said
    assert main(["report", str(folder)]) == 2
    assert capsys.readouterr().err == f"relaysim report: {said}\n"


def test_an_analysis_page_that_is_no_object_is_named(run: Path, tmp_path: Path) -> None:
    """An analysis/NAME.json that is JSON but no object was said as "analysis holds a page this
    version of relaysim does not read (AttributeError(...))", naming neither the file nor what it is."""
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    assert main(["analyze", str(folder)]) == 0
    (folder / "analysis" / "relay.json").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        render_report(folder)
    assert str(exc.value) == (
        f"{folder / 'analysis' / 'relay.json'}: expected an analysis page (a JSON object), got list; "
        f"write it again with: relaysim analyze {folder}"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda p: {"x": 1},
            "analysis: expected the analysis (an object), got nothing (the field is missing)",
        ),
        (
            lambda p: {**p, "analysis": {**p["analysis"], "contact_graph": [1]}},
            "analysis.contact_graph: expected the contact graph (an object), got [1]",
        ),
        (
            lambda p: {**p, "analysis": {**p["analysis"], "contact_graph": {}}},
            "analysis.contact_graph.edge_list: expected a list of edges, got nothing (the field is missing)",
        ),
        (
            lambda p: {
                **p,
                "analysis": {**p["analysis"], "contact_graph": {"edge_list": [{"between": ["a"]}]}},
            },
            "analysis.contact_graph.edge_list[0]: expected an edge (an object whose 'between' is its two "
            "accounts' names), got between: ['a']",
        ),
        (lambda p: {**p, "score": 5}, "score: expected the scores (an object) or null, got 5"),
        (
            lambda p: {
                **p,
                "score": {**p["score"], "contact_graph": {**p["score"]["contact_graph"], "correct": "3"}},
            },
            "score.contact_graph.correct: expected a count, got '3'",
        ),
        (
            lambda p: {
                **p,
                "score": {**p["score"], "contact_graph": {**p["score"]["contact_graph"], "recall": 7}},
            },
            "score.contact_graph.recall: expected a fraction from 0 to 1 or null, got 7",
        ),
    ],
)
def test_an_analysis_page_without_the_fields_report_reads_is_named(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, field: str
) -> None:
    """An analysis/NAME.json of another shape ({"x": 1}) was read as a contact graph of no edges and
    no scores, and the report written (exit 0): it is refused, naming the file and the field, with the
    command that writes the page again."""
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    assert main(["analyze", str(folder)]) == 0
    page = folder / "analysis" / "relay.json"
    page.write_text(json.dumps(change(json.loads(page.read_text(encoding="utf-8")))), encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"relaysim report: {page}: {field}; write it again with: relaysim analyze {folder}\n"
    )
    page.write_text(
        json.dumps({**json.loads(page.read_text(encoding="utf-8")), "score": None}), encoding="utf-8"
    )
    if field.startswith("score"):  # (a page without scores, of a run without its transcript: read)
        assert main(["report", str(folder)]) == 0


def test_run_report_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet", "--report"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["run", "two-friends", "--out", str(out), "--quiet", "--force"]) == 0
    assert not (out / "report.html").exists()  # a stale report never sits beside a new run
    assert f"relaysim report {out}" in capsys.readouterr().out


# --- in a real browser ----------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (apt-get install chromium, or set RELAYSIM_CHROMIUM); "
    ".ci/install-browser installs it where it can",
)


@pytest.fixture(scope="module")
def browser() -> Browser:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM)
    yield b  # type: ignore[misc]
    b.close()


def _runs(text: str) -> set[bytes]:
    data = text.encode()
    return {data[i : i + 8] for i in range(len(data) - 7)}


@needs_browser
def test_what_a_viewer_sees(run: Path, browser: Browser) -> None:
    url = write_report(run).resolve().as_uri()
    browser.open(url)
    sections = browser.js("[...document.querySelectorAll('main > section h2')].map(h => h.textContent)")
    assert sections == [
        "Timeline: the phones and the relay",
        "Legal orders: asked, given, and why not",
        "The contact graph: true and rebuilt",
    ]
    # sealed sender: every send's sender cell is there, visible, and empty
    senders = browser.js(
        "[...document.querySelectorAll('#timeline .sender-value')].map(s => "
        "[s.dataset.sealed, s.textContent, s.getBoundingClientRect().width > 0])"
    )
    assert len(senders) == len(PLAINTEXTS) and all(s == ["1", "", True] for s in senders)
    # the relay column: no 8-byte run of any plaintext (the same check as the text view)
    relay = browser.js("[...document.querySelectorAll('#timeline td.relay')].map(td => td.innerText)")
    phone = browser.js("document.querySelector('#timeline').innerText")
    assert len(relay) >= 2 * len(PLAINTEXTS)
    secret = set().union(*(_runs(p) for p in PLAINTEXTS))
    assert not secret & set().union(*(_runs(r) for r in relay))
    assert all(p in phone for p in PLAINTEXTS)  # …while the phones' column shows every word, as text
    assert browser.js("window.__pwned === undefined && document.scripts.length === 1")
    # the two graphs are drawn
    assert browser.js("document.querySelectorAll('#graph svg line.edge').length") >= 4
    # filtering by person: chen's rows only
    shown = browser.js(
        "(() => {const s = document.getElementById('filter'); s.value = 'chen';"
        "s.dispatchEvent(new Event('change'));"
        "return [...document.querySelectorAll('#timeline tbody tr')].filter(r => r.offsetParent !== null)"
        ".map(r => [r.dataset.people, r.innerText])})()"
    )
    assert len(shown) == 5 and all("chen" in people.split() for people, _text in shown)
    assert any("Dinner" in text for _p, text in shown) and not any("north gate" in text for _p, text in shown)
    assert browser.js("document.getElementById('timeline-shown').textContent") == str(len(shown))
    assert browser.errors() == []
    assert browser.requests() and all(u.startswith("file://") for u in browser.requests())


@needs_browser
def test_screenshots_projector_and_phone(
    run: Path, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = Path(os.environ.get("RELAYSIM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    browser.open(write_report(run).resolve().as_uri())
    for width, height, name in ((1280, 800, "projector"), (390, 844, "phone")):
        path = browser.screenshot(folder / f"report-{name}-{width}x{height}.png", width, height)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # nothing wider than the screen: the page scrolls down, not sideways
        assert browser.js("document.documentElement.scrollWidth") <= width
        print(f"screenshot: {path}")
    assert browser.js("parseFloat(getComputedStyle(document.querySelector('.words')).fontSize)") >= 16
    assert browser.errors() == []


@pytest.fixture(scope="module")
def fbi_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fbi-chart")
    run_to_dir(resolve_scenario("fbi-chart"), out)
    return out


@needs_browser
def test_a_projected_chart_opens_on_one_sentence_and_keeps_its_headers_in_view(
    fbi_chart: Path, browser: Browser
) -> None:
    browser.open(write_report(fbi_chart).resolve().as_uri())
    browser.screenshot(Path(os.devnull), 1280, 800)  # the projector's size
    description = resolve_scenario("fbi-chart").description
    lead = browser.js("document.querySelector('p.lead').textContent")
    assert lead == description[: description.index(". ") + 1]  # one sentence, not a screenful of prose
    story = browser.js(
        "[document.querySelector('details.story').open, document.querySelector('details.story').textContent]"
    )
    assert story[0] is False and description[len(lead) + 1 :] in story[1]  # the rest is one click away
    rows = browser.js("[...document.querySelectorAll('#matrix-table tbody th')].map(th => th.textContent)")
    assert "WhatsApp" in rows and "Signal" in rows  # providers by the names people know
    # scrolled to its last provider, the matrix still shows which column is which process
    box, head = browser.js(
        "(() => {const box = document.getElementById('matrix-table').parentElement; box.scrollTop = box.scrollHeight;"
        "return [box.getBoundingClientRect().top, document.querySelector('#matrix-table thead th').getBoundingClientRect().top]})()"
    )
    assert browser.js("document.getElementById('matrix-table').parentElement.scrollTop") > 0
    assert abs(head - box) < 4
    # on a phone, scrolled sideways, it still shows which row is which provider
    browser.screenshot(Path(os.devnull), 390, 844)
    box_left, row_left = browser.js(
        "(() => {const box = document.getElementById('matrix-table').parentElement; box.scrollLeft = box.scrollWidth;"
        "return [box.getBoundingClientRect().left, document.querySelector('#matrix-table tbody th').getBoundingClientRect().left]})()"
    )
    assert browser.js("document.getElementById('matrix-table').parentElement.scrollLeft") > 0
    assert abs(row_left - box_left) < 4
    assert browser.errors() == []


@needs_browser
def test_a_comparison_fits_a_phone_without_sideways_scrolling(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    out = tmp_path_factory.mktemp("pakistan-2015")
    run_to_dir(resolve_scenario("pakistan-2015"), out)
    browser.open(write_report(out).resolve().as_uri())
    browser.screenshot(Path(os.devnull), 390, 844)
    boxes = browser.js(
        "[...document.querySelectorAll('div.scroll')].map(d => "
        "[d.querySelector('table').className, d.scrollWidth, d.clientWidth])"
    )
    assert {"compare", "sources"} <= {cls for cls, _s, _c in boxes}
    # every table in view: both providers' columns, each source's precision and recall
    assert [b for b in boxes if b[1] > b[2] + 1] == []
    assert browser.errors() == []


def test_the_timeline_shows_what_a_phone_could_not_read_as_show_does(tmp_path: Path) -> None:
    """The timeline (``_timeline_rows``) left out the ``undecryptable`` and ``duplicate_dropped`` records
    that ``relaysim show`` shows: the relay's forged first message Ilya's phone could not decrypt was not
    in the report. Now each is a row, in show's words."""
    import html as html_text

    from relaysim.sims.report import read_run, show_rows

    run_to_dir(resolve_scenario("relay-swaps-identity"), tmp_path)
    events, _ = read_run(tmp_path)
    unread = [e for e in events if e["kind"] in ("undecryptable", "duplicate_dropped", "mailbox_opened")]
    words = [row[1] for row in show_rows(unread) if row[1]]
    assert words
    page = render_report(tmp_path)
    for said in words:
        assert html_text.escape(said, quote=True) in page, said


def test_the_timeline_names_a_mailbox_s_copies_by_its_holder() -> None:
    """A second copy a mailbox dropped is a row of its holder's, with the mailbox's device as the record
    names it, and the filter finds it under the holder's and the sender's names."""
    from relaysim.sims.reports.html import _timeline_rows

    events = [
        {"t": 1.0, "kind": "message_sent", "message": 2, "from": "ben/1", "to": "amira"},
        {"t": 2.0, "kind": "mailbox_opened", "device": "amira/1", "peer": "ben", "mailbox": "mbx-7f3a"},
        {"t": 3.0, "kind": "duplicate_dropped", "device": "mbx-7f3a/2", "message": 2},
    ]
    rows, _people, total = _timeline_rows(events, False)
    assert total == 1
    (row,) = rows
    assert 'data-kind="duplicate_dropped"' in row and 'data-people="amira ben"' in row, row
    assert "amira/1&#x27;s mailbox for ben (mbx-7f3a/2) dropped a second copy of message 2" in row, row


def test_every_c0_control_but_nul_and_cr_and_del_reach_each_output_as_sent(tmp_path: Path) -> None:
    """The rule of sims/scenario.py's docstring, checked: the C0 control characters a message's text
    may hold (all but NUL, refused; and CR, a line break, shown as one: test_markdown_safety) and DEL
    are in the transcript, the Markdown files and the HTML report as they were sent, none dropped
    or changed (HTML's parser keeps them, with a parse error: WHATWG HTML, "Preprocessing the input
    stream"). No test fails without a fix here: it holds the rule to what the outputs do."""
    others = "".join(chr(c) for c in (*range(1, 32), 127) if c != 13)
    escaped = "".join(f"\\u{ord(c):04x}" for c in others)
    toml = tmp_path / "c0.toml"
    toml.write_text(SCENARIO.replace("Bring the second folder as well.", f"a{escaped}b", 1), encoding="utf-8")
    run = tmp_path / "c0"
    run_to_dir(load_scenario(toml), run)
    sent = [json.loads(line) for line in (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(e.get("plaintext") == f"a{others}b" for e in sent)
    # the Markdown files write a message's text with md_text (relay/mdtext.py): a line feed as a break
    assert md_text(f"a{others}b") == f"a{others}b".replace("\n", "<br>")
    page = render_report(run)
    assert f"a{others}b" in page


@pytest.mark.parametrize("name", ["ghost-device", "ghost-participant"])
def test_the_ghost_reports_unread_counts_in_the_html_are_the_json_s(name: str, tmp_path: Path) -> None:
    """What reached the agency's phone and it did not read (``undecryptable``, ``refused`` by reason;
    summary.md's words since conf21): the HTML report's article for the ghost report gives the counts its
    JSON holds. The built-in runs count none, so the JSON is given some first: each count is read from
    the file, not the run."""
    folder = tmp_path / "run"
    run_to_dir(resolve_scenario(name), folder)
    path = folder / "exceptional" / f"{name}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data["refused"]) == {"untrusted_identity", "sealed_sender_self_send"}
    data["undecryptable"] = 3
    data["refused"] = {"untrusted_identity": 2, "sealed_sender_self_send": 5}
    path.write_text(json.dumps(data), encoding="utf-8")
    page = render_report(folder)
    start = page.index(f"id='exceptional-{name}'")
    article = page[start : page.index("</article>", start)]
    shown = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", article))
    assert shown["undecryptable"] == "3"
    assert shown["refused"] == (
        "from a changed identity key the user has not approved: 2; sealed under its own address, a self-send: 5"
    )


@pytest.mark.parametrize("name", ["ghost-device", "ghost-participant"])
def test_the_html_says_each_refusal_reason_of_a_ghost_report_as_its_markdown_does(
    name: str, tmp_path: Path
) -> None:
    """The HTML report showed a ghost report's refusal reasons by their keys ("sealed sender self send")
    where its Markdown says them in sentences (sims.access.reports.REFUSED_TEXT): both say them from that
    one table now. For each reason an agent gives (clients.agent.REFUSAL_REASONS), a count of it in the
    JSON is said in the same words by the HTML and by the Markdown written from that JSON."""
    from relaysim.clients.agent import REFUSAL_REASONS
    from relaysim.sims.access.ghost_participant import _markdown as participant_markdown
    from relaysim.sims.access.reports import REFUSED_TEXT, ghost_markdown

    folder = tmp_path / "run"
    run_to_dir(resolve_scenario(name), folder)
    path = folder / "exceptional" / f"{name}.json"
    original = json.loads(path.read_text(encoding="utf-8"))
    assert set(REFUSAL_REASONS) == set(original["refused"]) == set(REFUSED_TEXT)
    for reason in REFUSAL_REASONS:
        data = {**original, "refused": {r: 7 if r == reason else 0 for r in REFUSAL_REASONS}}
        path.write_text(json.dumps(data), encoding="utf-8")
        markdown = (
            ghost_markdown(data, data.get("scenario", name))
            if name == "ghost-device"
            else participant_markdown(data)
        )
        (line,) = [x for x in markdown.splitlines() if x.startswith("- Envelopes that reached")]
        said = re.fullmatch(r".*refused, unread: 7 \((.*)\)\.", line)
        assert said is not None, line
        assert f"{REFUSED_TEXT[reason]}: 7" in said.group(1), line
        page = render_report(folder)
        start = page.index(f"id='exceptional-{name}'")
        article = page[start : page.index("</article>", start)]
        shown = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", article))
        assert html.unescape(shown["refused"]) == said.group(1), (reason, shown["refused"], line)
