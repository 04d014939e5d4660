"""MetaPhone-style inference of sensitive traits (Mayer, Mutchler and Mitchell, PNAS 2016): labelled
organisations in a generated population, a public directory of them, and the scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from relaysim.sims.analysis.traits import PAPER_SHARES, sensitive_traits
from relaysim.sims.analysis_scoring import write_analysis
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import (
    UNPUBLISHED_KINDS,
    ScenarioError,
    organisation_kinds,
    parse_scenario,
    resolve_scenario,
)
from relaysim.sims.world.traffic import (
    expand_population,
    organisation_accounts,
    organisation_traits,
    trait_holders,
)

BASE = """
[scenario]
name = "traits"
duration = "30m"
seed = 4

[relay]
profile = "{profile}"
sealed_sender = true

[generate]
people = 8
graph = {{ model = "barabasi-albert", m = 1 }}
messages_per_day = {{ mean = 4, sigma = 0.1 }}
daily_rhythm = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
organisations = {{ clinic = 1, gunshop = 1, worship = 2 }}
trait_probability = {{ clinic = 1.0, gunshop = 0.0, worship = 0.5 }}
"""


def test_organisations_are_accounts_and_traits_are_drawn_per_person() -> None:
    sc = expand_population(parse_scenario(BASE.format(profile="keep-everything")))
    assert organisation_accounts(sc) == {
        "clinic-1": "clinic",
        "gunshop-1": "gunshop",
        "worship-1": "worship",
        "worship-2": "worship",
    }
    names = [p.name for p in sc.people]
    assert set(organisation_accounts(sc)) <= set(names) and names[-8:] == [f"p{i}" for i in range(8)]
    traits = organisation_traits(sc)
    assert set(traits) == {f"p{i}" for i in range(8)}  # clinic = 1.0: everyone
    assert all(t["clinic"] == "clinic-1" and "gunshop" not in t for t in traits.values())
    assert sum("worship" in t for t in traits.values()) == 4  # 0.5 of 8: exactly that share


@pytest.mark.parametrize(
    ("share", "people", "holders"), [(0.57, 40, 23), (0.07, 40, 3), (0.01, 40, 1), (0.0, 40, 0), (1.0, 3, 3)]
)
def test_a_trait_s_share_gives_that_many_holders(share: float, people: int, holders: int) -> None:
    assert trait_holders(share, people) == holders


def test_the_builtin_metaphone_population_holds_the_paper_s_shares() -> None:
    """Each kind's holders among metaphone's generated people are the paper's share of them, to the
    nearest person (Mayer, Mutchler and Mitchell, PNAS 2016), not a draw around it."""
    sc = expand_population(resolve_scenario("metaphone"))
    g = sc.generate
    assert g is not None
    traits = organisation_traits(sc)
    for kind, (_label, share) in PAPER_SHARES.items():
        held = sum(kind in t for t in traits.values())
        assert abs(held / g.people - share) <= 0.5 / g.people, (kind, held, share)


def test_a_scenario_s_default_shares_are_the_paper_s_shares_the_scoring_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MetaPhone's shares are held once (sims.analysis.traits.PAPER_SHARES): a scenario naming a kind
    without a trait_probability draws its holders at the share the scoring sets beside its findings,
    whatever that table says; a kind the paper has no share for keeps its illustrative one."""
    text = '[scenario]\nname = "x"\nduration = "1h"\n[generate]\npeople = 4\n'
    text += "organisations = { clinic = 1, gunshop = 1, worship = 1 }\n"
    monkeypatch.setitem(PAPER_SHARES, "clinic", ("health services", 0.5))
    g = parse_scenario(text, "x.toml").generate
    assert g is not None
    assert dict(g.trait_probability) == {
        "clinic": 0.5,
        "gunshop": PAPER_SHARES["gunshop"][1],
        "worship": UNPUBLISHED_KINDS["worship"],
    }
    monkeypatch.undo()
    assert organisation_kinds() == {
        **{kind: share for kind, (_label, share) in PAPER_SHARES.items()},
        **UNPUBLISHED_KINDS,
    }
    assert not set(UNPUBLISHED_KINDS) & set(PAPER_SHARES)


def test_the_analysis_infers_who_contacts_which_kind_and_the_scoring_checks_it(tmp_path: Path) -> None:
    sc = parse_scenario(BASE.format(profile="keep-everything"))
    out = tmp_path / "run"
    run_to_dir(sc, out)
    assert json.loads((out / "directory.json").read_text())["gunshop-1"] == "gunshop"
    truth = organisation_traits(expand_population(sc))
    lines = write_analysis(out)
    assert "traits (precision/recall)" in lines[0]
    data = json.loads((out / "analysis" / "relay.json").read_text())
    inferred = data["analysis"]["sensitive_traits"]["traits"]
    assert {p: sorted(k) for p, k in inferred.items()} == {p: sorted(t) for p, t in truth.items()}
    rows = data["score"]["sensitive_traits"]["by_trait"]
    assert rows["clinic"]["precision"] == rows["clinic"]["recall"] == 1.0
    assert rows["clinic"]["true_holders"] == 8 and rows["gunshop"]["true_holders"] == 0
    assert rows["worship"]["recall"] == 1.0 and rows["clinic"]["paper_share"] == 0.57
    md = (out / "analysis" / "relay.md").read_text()
    assert "| clinic | 8 (1.00) | 8 (1.00) | 1.00 | 1.00 | health services 57% |" in md
    # the paper's shares are what the scenario drew people at: the report says the finding is recall
    assert "the run's input, not a finding" in md and "(precision, recall)" in md


def test_a_provider_that_keeps_no_logs_reveals_no_traits(tmp_path: Path) -> None:
    sc = parse_scenario(BASE.format(profile="signal").replace("sealed_sender = true\n", ""))
    out = tmp_path / "run"
    run_to_dir(sc, out)
    write_analysis(out)
    data = json.loads((out / "analysis" / "relay.json").read_text())
    assert data["analysis"]["sensitive_traits"]["traits"] == {}
    assert data["score"]["sensitive_traits"]["by_trait"]["clinic"]["recall"] == 0.0


def test_the_directory_alone_says_nothing_about_people() -> None:
    directory = {"clinic-1": "clinic", "gunshop-1": "gunshop"}
    pairs = [frozenset(("ann", "clinic-1")), frozenset(("ann", "bob")), frozenset(("clinic-1", "gunshop-1"))]
    report = sensitive_traits(pairs, ["ann", "bob", "clinic-1", "gunshop-1"], directory)
    assert report.traits == {"ann": ("clinic",)} and report.people == 2
    assert sensitive_traits([], ["ann"], directory).traits == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("organisations = { spa = 1 }", r"generate\.organisations\.spa: no default share for 'spa'"),
        (
            "organisations = { clinic = 0 }",
            r"generate\.organisations\.clinic: expected an integer from 1 to 1000",
        ),
        (
            "organisations = { clinic = 1 }\ntrait_probability = { bank = 0.5 }",
            r"generate\.trait_probability\.bank: names no kind",
        ),
        (
            "organisations = { clinic = 1 }\ntrait_probability = { clinic = 2 }",
            r"generate\.trait_probability\.clinic: expected a probability",
        ),
    ],
)
def test_bad_organisations_are_refused_by_name(table: str, message: str) -> None:
    text = '[scenario]\nname = "x"\nduration = "1h"\n[generate]\npeople = 4\n' + table + "\n"
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text, "x.toml")


def test_the_builtin_metaphone_scenario_has_every_kind_with_a_paper_share() -> None:
    sc = expand_population(resolve_scenario("metaphone"))
    kinds = set(organisation_accounts(sc).values())
    assert {"clinic", "pharmacy", "lawyer", "gunshop", "bank"} <= kinds
    held = {k for t in organisation_traits(sc).values() for k in t}
    assert kinds == held  # small as it is, someone holds each trait


@pytest.mark.parametrize(("fetch", "recall"), [("authenticated", 1.0), ("unauthenticated", 0.0)])
def test_a_fresh_connection_per_sealed_send_hides_traits_only_if_look_ups_are_unauthenticated(
    tmp_path: Path, fetch: str, recall: float
) -> None:
    """Sealed sends from an exit cannot be attributed by address; but a phone that looks up the clinic's
    keys on its logged-in connection has told the provider whom it is about to write to."""
    text = (
        BASE.format(profile="keep-everything")
        + f'\n[defences]\nsealed_connection = "fresh"\nbundle_fetch = "{fetch}"\n'
    )
    out = tmp_path / "run"
    run_to_dir(parse_scenario(text), out)
    write_analysis(out)
    rows = json.loads((out / "analysis" / "relay.json").read_text())["score"]["sensitive_traits"]["by_trait"]
    assert rows["clinic"]["true_holders"] == 8 and rows["clinic"]["recall"] == recall


def test_the_builtin_metaphone_run_reproduces_the_paper_s_component_and_shares(tmp_path: Path) -> None:
    """Mayer, Mutchler and Mitchell (PNAS 2016): over 90 % of participants fell in one connected
    component, and calls revealed health services (57 %), financial services (40 %), pharmacies (30 %),
    legal services (10 %) and firearms sellers (7 %). The people of the built-in metaphone run are
    generated on a Barabási–Albert graph, connected by construction: the component over the whole run's
    records holds everyone and proves nothing. What is measured is the component of the graph the
    provider observes (its records; sealed sends joined to a sender by address) in a window from the
    run's start: between people alone, and through the organisations they contacted too — the figures
    the README states. Each trait inferred is held by the paper's share of people, to the nearest person
    (the shares are the scenario's input: that the analysis finds every holder, and no one else, is the
    finding)."""
    import re
    from dataclasses import replace

    import networkx as nx

    from relaysim.sims.analysis.run import analyze, run_directory, run_views

    out = tmp_path / "run"
    run_to_dir(resolve_scenario("metaphone"), out)
    write_analysis(out)
    data = json.loads((out / "analysis" / "relay.json").read_text())
    directory = run_directory(out)
    assert directory is not None
    people = data["analysis"]["sensitive_traits"]["people"]
    assert people == 40
    view = run_views(out)["relay"]
    start = min(o.time for o in view.observations if o.time is not None)
    names = sorted(a for a in view.accounts() if a not in directory)

    def component(minutes: float, through_organisations: bool) -> int:
        """People in the largest component of the graph observed in the first ``minutes``."""
        seen = replace(
            view,
            observations=tuple(
                o for o in view.observations if o.time is None or o.time < start + 60 * minutes
            ),
        )
        graph = nx.Graph()
        graph.add_nodes_from(names)
        graph.add_edges_from(
            tuple(p)
            for p in analyze(seen, directory=directory).graph.strong()
            if through_organisations or not p & set(directory)
        )
        return max(len(set(c) & set(names)) for c in nx.connected_components(graph))

    # the whole run: everyone, as the generated graph is connected (which is why it proves nothing)
    assert component(60, False) == people
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").split())
    claim = re.search(
        r"the component between people alone holds (\d+) of (\d+) people after (\d+) minutes and (\d+) after "
        r"(\d+) \(over 90 %\), and through the organisations they contacted too (\d+) and (\d+)\.",
        readme,
    )
    assert claim is not None, "the README no longer states the observed component"
    alone_a, of, early, alone_b, late, through_a, through_b = map(int, claim.groups())
    assert of == people and alone_b > 0.9 * people >= alone_a
    assert (component(early, False), component(late, False)) == (alone_a, alone_b)
    assert (component(early, True), component(late, True)) == (through_a, through_b)
    # docs/papers.md states the same figures, each with its share of the people
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())

    def share(n: int) -> str:
        return f"{100 * n / people:g} %"

    stated = (
        f"between people alone, {alone_a} of {people} people ({share(alone_a)}) after {early} minutes, {alone_b} "
        f"({share(alone_b)}) after {late}; through the organisations they contacted too, {through_a} "
        f"({share(through_a)}) and {through_b} ({share(through_b)})."
    )
    assert stated in papers, "docs/papers.md no longer states the observed component as the README does"
    shares = data["analysis"]["sensitive_traits"]["share_by_kind"]
    rows = data["score"]["sensitive_traits"]["by_trait"]
    for kind, (_label, share) in PAPER_SHARES.items():
        assert abs(shares[kind] - share) <= 0.5 / people, (kind, shares[kind], share)
        assert rows[kind]["precision"] == rows[kind]["recall"] == 1.0, kind


def test_report_analyses_a_run_as_analyze_does_its_directory_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``relaysim report`` on a run without analysis/ computed its analyses without the run's
    directory.json (``analyze(view)``), unlike ``relaysim analyze``: no organisation's kind known, so
    no trait inferred, and a directory.json it cannot read passed over, saying nothing. Both go one
    way (analysis_scoring.compute_analyses): what report computes is what analyze writes."""
    from relaysim.sims.cli import main
    from relaysim.sims.reports.html import _analyses

    out = tmp_path / "run"
    run_to_dir(parse_scenario(BASE.format(profile="keep-everything")), out)
    computed = _analyses(out)  # (no analysis/: computed in memory)
    assert computed["relay"]["analysis"]["sensitive_traits"]["traits"]
    assert main(["analyze", str(out)]) == 0
    assert (out / "analysis" / "relay.json").is_file()
    assert _analyses(out) == computed  # (read from analysis/, as analyze wrote it)
    shutil.rmtree(out / "analysis")
    (out / "directory.json").write_text('{"gunshop-1": ', encoding="utf-8")
    capsys.readouterr()
    for command in ("analyze", "report"):
        assert main([command, str(out)]) == 2, command
        err = capsys.readouterr().err
        assert f"{out / 'directory.json'}" in err and "Traceback" not in err, (command, err)
    assert not (out / "report.html").exists()
