"""The SDA reproduction: receipts link sealed-sender users; turning them off (or a fresh connection per
sealed send, for the address join) defeats the attack."""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.analysis.view import from_db
from relaysim.sims.reproduce import (
    DEFAULT_TARGETS,
    MAX_MESSAGES,
    PAPER_CLAIM,
    VARIANTS,
    VariantResult,
    _median,
    render,
    reproduce,
    run_variant,
    score_variant,
)
from relaysim.sims.scenario import resolve_scenario
from relaysim.sims.world.traffic import expand_population


@pytest.fixture(scope="module")
def built_in(request: pytest.FixtureRequest) -> Any:
    """The built-in ``sda-martiny-2021`` as written, run with one variant's switches (a key of VARIANTS)
    for DEFAULT_TARGETS targets, as ``relaysim reproduce`` runs it: each run once for the module (some
    20 s of CPU each), however many tests read it; "as written" is the session's run of it
    (``sda_martiny_2021`` in tests/sims/conftest.py), which test_analysis reads too."""
    sc = expand_population(resolve_scenario("sda-martiny-2021"))
    runs: dict[str, VariantResult] = {}

    def run(name: str) -> VariantResult:
        if name not in runs:
            if name == "as written":
                shared = request.getfixturevalue("sda_martiny_2021")
                assert shared.scenario == sc
                view = from_db(shared.db)
                runs[name] = score_variant(
                    sc, name, VARIANTS[name], DEFAULT_TARGETS, view, shared.truth, shared.opened
                )
            else:
                runs[name] = run_variant((sc, name, VARIANTS[name], DEFAULT_TARGETS))
        return runs[name]

    return run


def _small() -> object:
    sc = resolve_scenario("sda-martiny-2021")
    assert sc.generate is not None
    return expand_population(replace(sc, duration=1800.0, generate=replace(sc.generate, people=20)))


def test_receipts_link_sealed_sender_users_and_turning_them_off_defeats_it() -> None:
    sc = _small()
    base = run_variant((sc, "as written", {}, 8))  # type: ignore[arg-type]
    off = run_variant((sc, "receipts off", {"receipts": "off"}, 8))  # type: ignore[arg-type]
    assert base.targets == off.targets >= 3
    # 20 people: the random epochs hit a contact often, so it takes more messages than at scale
    assert base.linked_within(30) >= base.targets // 2
    # Without receipts only the scenario's replies (30 %, minutes later) correlate with a delivery,
    # so a target is linked now and then by chance, but far less often than with receipts.
    assert off.linked_within(30) * 3 <= base.linked_within(30)
    assert base.address_join_correct > 0.9


def test_a_fresh_connection_per_sealed_send_defeats_the_address_join() -> None:
    sc = _small()
    fresh = run_variant(
        (sc, "fresh", {"sealed_connection": "fresh", "bundle_fetch": "unauthenticated"}, 8)  # type: ignore[arg-type]
    )
    assert fresh.address_join_correct < 0.1


def test_ephemeral_mailboxes_defeat_the_sda_on_the_responder() -> None:
    """Martiny et al.'s sealed conversations: whoever writes first opens a mailbox; the target's
    receipts and replies go there, so its true correspondent no longer rises to the top."""
    sc = _small()
    base = run_variant((sc, "as written", {}, 8))  # type: ignore[arg-type]
    boxes = run_variant((sc, "mailboxes", {"mailboxes": "ephemeral"}, 8))  # type: ignore[arg-type]
    assert base.targets == boxes.targets >= 3
    assert base.linked_within(30) >= base.targets // 2
    assert boxes.linked_within(30) * 3 <= base.linked_within(30)


def test_delaying_or_batching_receipts_defeats_the_sda_and_padding_does_not() -> None:
    """The attack needs the receipt inside the 1-second epoch after a delivery: receipts sent 0-5 min
    later, or in 10-minute batches (the variants `relaysim reproduce` runs), link at most a third as
    many targets as receipts sent at once; padding changes sizes, not times, and links the same."""
    sc = _small()
    base = run_variant((sc, "as written", {}, 8))  # type: ignore[arg-type]
    assert base.linked_within(30) >= base.targets // 2
    for name in ("receipts delayed (0-5 min)", "receipts batched (10 min)", "padding (signal, 160 B)"):
        variant = run_variant((sc, name, VARIANTS[name], 8))  # type: ignore[arg-type]
        assert variant.targets == base.targets, name
        if name.startswith("padding"):
            assert variant.linked_by == base.linked_by
        else:
            assert variant.linked_within(30) * 3 <= base.linked_within(30), (name, variant.linked_by)


def test_the_docstring_s_mailbox_figures_are_those_of_the_built_in_scenario(built_in: Any) -> None:
    """The module's docstring says for how many of the built-in scenario's targets the attack ranks first
    the mailbox the true correspondent opened (Martiny et al.'s sealed conversations), and why the
    others miss: here it is computed, so a change in the figure fails until the text says it."""
    from relaysim.sims import reproduce as module

    assert module.__doc__ is not None
    text = " ".join(module.__doc__.split())
    claim = re.search(
        r"On ``sda-martiny-2021`` the attack ranks first, and keeps first, within the same (\d+) messages, the "
        r"mailbox the true correspondent opened for the target, for (\d+) of (\d+) targets\. For (\d+) of the "
        r"others that mailbox ranked first and dropped back, and the run's end cut (\d+) of them short \(not "
        r"linked when it ended, before \1 messages were written to them: the line printed says how many\)\. "
        r"The other (\d+) wrote to their correspondent first",
        text,
    )
    assert claim is not None, "the docstring no longer states the mailbox figure"
    within, ranked, of, dropped, cut_short, other = map(int, claim.groups())
    boxes = built_in("sealed conversations (ephemeral mailboxes)")
    assert boxes.mailbox_linked_by is not None and within == MAX_MESSAGES
    assert (boxes.targets, sum(x is not None for x in boxes.mailbox_linked_by)) == (of, ranked)
    # every target missed is one whose correspondent opened no mailbox for it, or whose mailbox did not
    # stay first (linked_by counts a target only when it does: messages_until_linked), as the text says
    assert boxes.no_mailbox == other and of - ranked == other + dropped
    # ... and how many of those the run's end cut short, as the printed line says (linking's censored)
    assert boxes.mailbox_cut_short == cut_short
    # ... and the true correspondent itself is linked for none of them
    assert boxes.linked_within(MAX_MESSAGES) == 0
    # docs/papers.md: how many of them the run's end cut short (not linked, fewer than 60 messages seen)
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())
    cut = re.search(r"with ephemeral mailboxes (\d+) of (\d+), and as many with receipts off", papers)
    assert cut is not None, "docs/papers.md no longer says how many targets the mailboxes' run cut short"
    assert (boxes.censored(), boxes.targets) == (int(cut[1]), int(cut[2]))
    # ... and the mailbox figure itself, as the docstring has it
    line = re.search(
        r"the mailbox the correspondent opened for the target ranks first, and stays first, for (\d+) of the "
        r"(\d+)\) says how many of the others the run's end cut short the same way: on the built-in scenario "
        r"(none|\d+)",
        papers,
    )
    assert line is not None, "docs/papers.md no longer states the mailbox figure"
    assert (int(line[1]), int(line[2])) == (ranked, of)
    assert (0 if line[3] == "none" else int(line[3])) == cut_short


def test_docs_say_how_many_targets_the_run_cut_short_without_receipts_at_once_as_the_runs_give(
    built_in: Any,
) -> None:
    """docs/papers.md: "with ephemeral mailboxes 12 of 15, and as many with receipts off, delayed or
    batched" were cut short (not linked when the run ended, before 60 messages were written to them);
    only the mailboxes' figure was read against a run. Each of the four is, here, against the built-in
    scenario's run of that variant as `relaysim reproduce` runs it; and the README's "for most of the
    targets these leave unlinked the run ends before 60 messages" of the delayed, batched and mailbox
    variants."""
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())
    said = re.search(
        r"with ephemeral mailboxes (\d+) of (\d+), and as many with receipts off, delayed or batched \(`relaysim "
        r"reproduce`\)",
        papers,
    )
    assert said is not None, "docs/papers.md no longer says how many targets these variants' runs cut short"
    cut, of = int(said[1]), int(said[2])
    names = (
        "sealed conversations (ephemeral mailboxes)",
        "receipts off",
        "receipts delayed (0-5 min)",
        "receipts batched (10 min)",
    )
    for name in names:
        r = built_in(name)
        assert (r.censored(), r.targets) == (cut, of), name
        assert r.linked_within(MAX_MESSAGES) == 0, name  # not linked within 60: the rest were not cut short
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").split())
    assert (
        "Within the run: for most of the targets these leave unlinked the run ends before 60 messages are "
        "written to them" in readme
    )
    for name in (names[0], *names[2:]):
        r = built_in(name)
        assert r.censored() * 2 > r.targets - r.linked_within(MAX_MESSAGES), name
    # ... and why: "the hour's run writes fewer than 60 messages to most targets" (to each one's last
    # target epoch, as far as the attack saw), as written too
    assert "the hour's run writes fewer than 60 messages to most targets" in papers
    base = built_in("as written")
    assert base.seen_by is not None and base.targets == of
    assert sum(1 for n in base.seen_by if n < MAX_MESSAGES) * 2 > base.targets, base.seen_by


def test_the_built_in_scenario_s_description_says_how_often_popular_accounts_receive() -> None:
    """Martiny et al.'s popular users receive something in every 1-second epoch; the built-in scenario's
    receive a message every 30 s on average, at Poisson times, so in 1 - e^(-1/30) of the epochs: 1 in
    30.5, where the description said "about 1 in 30" (the rate, 1/30 a second, not the share of epochs
    it gives). The description gives both, exactly, from the scenario's own rate."""
    sc = resolve_scenario("sda-martiny-2021")
    text = " ".join(sc.description.split())
    claim = re.search(
        r"popular accounts, each sent a message every (\d+) s on average, at random \(Poisson\) times "
        r"\(Martiny et al\.'s popular users receive something in every 1-second epoch, these in 1 in "
        r"([\d.]+), the share 1 − e\^\(−1/(\d+)\)\)",
        text,
    )
    assert claim is not None, text
    gap, one_in, rate_in = int(claim[1]), claim[2], int(claim[3])
    per_second = sc.traffic.popular_messages_per_hour / 3600
    assert sc.traffic.popular >= 1 and gap == rate_in and math.isclose(gap * per_second, 1.0)
    # a Poisson stream: the share of 1-second epochs in which one account receives at least once
    assert one_in == f"{1 / -math.expm1(-per_second):.1f}"


def test_the_built_in_scenario_links_targets_within_the_papers_5_messages_as_the_readme_says(
    built_in: Any,
) -> None:
    """Martiny et al. (NDSS 2021): sealed sender users linked "in as few as 5 messages". On the
    built-in scenario as written (receipts on), counting the messages people wrote to each target
    (not the target's epochs, which its own messages' receipts also open) until its true
    correspondent ranks first and stays first at every later epoch: the figures the README and
    docs/papers.md state, and the larger ones of counting at the first epoch it ranked first, which
    flatter; what the run's end leaves open (targets cut short, how long the links held); and the
    rate set beside the paper's."""
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").split())
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())
    claim = re.search(
        r"on `sda-martiny-2021` \(.*?\) the true correspondent ranks first, and stays first, within 5 messages "
        r"written to the target for (\d+) of (\d+) targets \(the fewest (\d+), the median (\d+)\); counted at "
        r"the first epoch it ranks first, even where it drops back later, (\d+) of them",
        readme,
    )
    assert claim is not None, "the README no longer states the reproduction's figures"
    within, of, fewest, median, first_within = map(int, claim.groups())
    base = built_in("as written")
    assert (base.targets, base.linked_within(5), base.fewest()) == (of, within, fewest)
    assert _median(base.linked_by) == str(median)
    assert base.first_ranked_by is not None
    assert sum(1 for k in base.first_ranked_by if k is not None and k <= 5) == first_within
    # staying first never takes fewer messages than first ranking first
    for stays, first in zip(base.linked_by, base.first_ranked_by, strict=True):
        assert stays is None or (first is not None and first <= stays)
    assert all(k is None or k <= MAX_MESSAGES for k in base.linked_by)
    # docs/papers.md states the same, and the median of the flattering count
    here = re.search(
        r"within 5 messages written to the target for (\d+) of (\d+) targets \(the fewest (\d+), the median "
        r"(\d+)\)\. .*? counting at the first epoch it ranks first — (\d+) of (\d+) within 5 messages, the median (\d+)",
        papers,
    )
    assert here is not None, "docs/papers.md no longer states the reproduction's figures"
    assert tuple(map(int, here.groups())) == (
        within,
        of,
        fewest,
        median,
        first_within,
        of,
        int(_median(base.first_ranked_by)),
    )
    # what the run's end leaves open, as both say it
    assert base.seen_by is not None
    held = sorted(h for h in base.held_by() if h is not None)
    cut = [n for x, n in zip(base.linked_by, base.seen_by, strict=True) if x is None and n <= MAX_MESSAGES]
    said = re.search(
        r"(\d+) of the (\d+) was not linked when the run ended, (\d+) messages in \(cut short: counted as not "
        r"linked within 60, though a longer run might link it\), and the links held first over (\d+) to (\d+) more",
        readme,
    )
    assert said is not None, "the README no longer says what the run's end leaves open"
    assert tuple(map(int, said.groups())) == (len(cut), of, *cut, held[0], held[-1])
    said = re.search(
        r"on the built-in scenario as written, (\d+) of the (\d+), (\d+) messages in; .*? the links on the built-in "
        r"scenario held first over (\d+) to (\d+) more messages to the run's end \(the median (\d+)\), two of them "
        r"over (\d+) or fewer",
        papers,
    )
    assert said is not None, "docs/papers.md no longer says what the run's end leaves open"
    assert tuple(map(int, said.groups())) == (
        len(cut),
        of,
        *cut,
        held[0],
        held[-1],
        held[len(held) // 2],
        held[1],
    )
    assert base.censored() == len(cut)
    # the rate beside the paper's: the README and docs/papers.md as the command prints it
    rate = f"{base.sealed_per_epoch():.2f} sealed envelopes a second among {base.accounts} accounts"
    assert f"at {rate}, not the paper's 580–800 among a million" in readme
    assert (
        f"The scenario carries {rate} — {base.sealed_per_epoch() / base.accounts:.4f} envelopes per account"
        in papers
    )


def test_the_report_sets_the_papers_figure_beside_ours() -> None:
    sc = resolve_scenario("sda-martiny-2021")
    r = VariantResult("as written", {}, 6, [1, 3, None, 4, 9, 70], 1800, 1.0, accounts=40, duration=3600.0)
    off = VariantResult(
        "receipts off", {"receipts": "off"}, 6, [None] * 6, 900, 1.0, accounts=40, duration=3600.0
    )
    text = render(sc, [r, off])
    assert PAPER_CLAIM in text and "1,000,000 users" in text
    # ours, computed from the result: 3 within 5 messages (1, 3, 4), the fewest 1, the (upper) median 9
    assert "here (as written): 3 of 6 targets linked within 5 messages, the fewest 1, the median 9;" in text
    assert "40 accounts, 0.50 sealed envelopes per 1-second epoch" in text
    # the rate the attack's noise depends on, set beside the paper's (580-800 a second among a million)
    assert (
        "not the paper's rate: 0.0125 sealed envelopes per account per epoch here, 0.00058-0.0008 in the paper"
        in text
    )
    row = next(line for line in text.splitlines() if line.startswith("receipts off"))
    assert row.split()[3:6] == [">60", "-", "0"]
    # a count beyond MAX_MESSAGES is never printed as a number of messages it took
    assert text.splitlines()[-1].endswith("1 3 - 4 9 -")
    # the count is said: first and staying first; and beside it, when given, the count at the first epoch
    assert "ranks first (ties against the attacker) from then on, at every later target epoch" in " ".join(
        text.split()
    )
    boxes = VariantResult(
        "sealed conversations (ephemeral mailboxes)",
        {"mailboxes": "ephemeral"},
        6,
        [None] * 6,
        900,
        1.0,
        accounts=40,
        duration=3600.0,
        mailbox_linked_by=[1, None, 3, None, None, 2],
        no_mailbox=2,
    )
    assert "ranks first, and stays first, within 60 messages for 3 of 6 targets; 2 wrote" in render(
        sc, [r, boxes]
    )
    # the run's end censors the mailbox's count as it does the table's: the one of the other 3 with a
    # mailbox, not linked to it when the run ended before 60 messages, is said to be cut short
    cut = " ".join(render(sc, [r, replace(boxes, mailbox_cut_short=1)]).split())
    assert (
        "ranks first, and stays first, within 60 messages for 3 of 6 targets (1 of the others cut short: not "
        "linked when the run ended, before 60 messages were written to them; a longer run might link them); "
        "2 wrote to their correspondent first" in cut
    )
    first = replace(r, first_ranked_by=[1, 2, None, 3, 5, 8])
    last = render(sc, [first, off]).splitlines()[-1]
    assert last.startswith(
        "counted instead at the first epoch the correspondent ranked first, even where it dropped"
    )
    assert "4 of 6 within 5 messages, the fewest 1, the median 5; per target: 1 2 - 3 5 8" in last


def test_the_report_says_what_the_run_s_end_leaves_open() -> None:
    """ "Stays first" is as far as the run saw: a target not linked when its run ended, before 60
    messages were written to it, is cut short (a longer run might link it), told apart from one not
    linked within 60; and each link is given with the messages it held over to the run's end."""
    sc = resolve_scenario("sda-martiny-2021")
    r = VariantResult(
        "as written",
        {},
        6,
        [1, 3, None, 4, 9, None],
        1800,
        1.0,
        accounts=40,
        duration=3600.0,
        seen_by=[10, 3, 40, 30, 9, 70],
    )
    assert r.censored() == 1 and r.held_by() == [9, 0, None, 26, 0, None]
    text = render(sc, [r])
    flat = " ".join(text.split())
    assert (
        "The run's end censors that count: a target not linked when the run ended, before 60 messages" in flat
    )
    header = next(line for line in text.splitlines() if line.startswith("variant"))
    row = next(line for line in text.splitlines() if line.startswith("as written"))
    assert header.split()[-4:] == ["cut", "short", "address", "join"]
    assert row.split()[-2:] == ["1", "100%"]  # the third target, not the sixth (70 messages seen)
    last = text.splitlines()[-1]
    assert last.startswith("linked after k messages, per target (as written; k+h: linked after k")
    assert last.endswith(": 1+9 3+0 ?40 4+26 9+0 -; the fewest messages a link held over, 0, the median 9")
    # without what the run saw (seen_by), nothing is said of it rather than a 0
    bare = render(sc, [replace(r, seen_by=None)])
    assert next(x for x in bare.splitlines() if x.startswith("as written")).split()[-2:] == ["-", "100%"]
    assert bare.splitlines()[-1].endswith("1 3 - 4 9 -")


def test_the_function_and_its_command_line_score_the_same_number_of_targets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """reproduce() scored 20 targets by default, its command line 15: one default for both."""
    from relaysim.sims import reproduce as module

    asked: dict[str, Any] = {}

    def recording(scenario: object, **kwargs: Any) -> list[VariantResult]:
        asked.update(kwargs)
        return []

    monkeypatch.setattr(module, "reproduce", recording)
    monkeypatch.setattr(module, "render", lambda scenario, results: "")
    assert module.main([]) == 0
    function_default = inspect.signature(reproduce).parameters["targets"].default
    assert asked["targets"] == function_default == module.DEFAULT_TARGETS


def test_relaysim_reproduce_prints_what_the_module_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reproduction ran only as ``python -m relaysim.sims.reproduce``: ``relaysim reproduce`` is the
    same command (the same arguments, the same output), and the module still works. (A scenario
    whose phones send sealed: one that does not is refused before it runs.)"""
    from relaysim.sims import reproduce as module
    from relaysim.sims.cli import main as cli_main

    asked: list[tuple[str, dict[str, Any]]] = []

    def recording(scenario: Any, **kwargs: Any) -> list[VariantResult]:
        asked.append((scenario.name, kwargs))
        return [VariantResult("as written", {}, 2, [3, None], 10, 1.0, accounts=5, duration=60.0)]

    monkeypatch.setattr(module, "reproduce", recording)
    outputs = []
    for run in (cli_main, module.main):
        assert (
            run([*(["reproduce"] if run is cli_main else []), "sealed-sender-leaks", "--targets", "3"]) == 0
        )
        outputs.append(capsys.readouterr())
    assert outputs[0] == outputs[1]
    assert outputs[0].out.startswith("statistical disclosure attack on sealed sender: sealed-sender-leaks\n")
    assert asked == [("sealed-sender-leaks", {"targets": 3, "workers": 2})] * 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--targets", "0"], "argument --targets: expected at least 1 targets, got 0"),
        (
            ["--targets", "five"],
            "argument --targets: expected a whole number of targets (digits 0-9), got 'five'",
        ),
        (
            ["--targets", "10001"],
            "argument --targets: expected at most 10,000 targets (each is an attack of its",
        ),
        (["--workers", "0"], "argument --workers: expected at least 1 worker processes, got 0"),
        (["--workers", "257"], "argument --workers: expected at most 256 worker processes"),
        (["two-freinds"], "reproduce: two-freinds: no such built-in scenario or file"),
        (
            ["two-friends", "--targets", "1", "--workers", "1"],
            "reproduce: two-friends: its phones do not send sealed (it sets no relay.sealed_sender = true",
        ),
    ],
)
def test_relaysim_reproduce_refuses_bad_arguments_in_one_line_with_status_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--targets 0 scored no target and printed a table of zeros; --targets -1 scored all but the last."""
    from relaysim.sims import reproduce as module
    from relaysim.sims.cli import main as cli_main

    for run, prog in ((cli_main, "relaysim reproduce"), (module.main, "python -m relaysim.sims.reproduce")):
        try:
            status = run([*(["reproduce"] if run is cli_main else []), *argv])
        except SystemExit as exc:
            status = exc.code
        assert status == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert needle in captured.err and f"{prog}:" in captured.err, captured.err
        assert "Traceback" not in captured.err


def test_a_run_whose_relay_recorded_no_sealed_envelope_is_refused_not_an_internal_error() -> None:
    """reproduce on a scenario whose phones do not send sealed (two-friends) ran every variant, then
    ended in an internal error, "zip() argument 2 is shorter than argument 1": the attack ranks no
    target where the relay recorded no sealed envelope. The command refuses such a scenario before
    it runs (above); a caller of reproduce() is told the same after the run, naming the variant."""
    from relaysim.sims.reproduce import NothingToAttack

    scenario = resolve_scenario("two-friends")
    with pytest.raises(
        NothingToAttack,
        match=r"^two-friends: the relay recorded no sealed envelope in the run \(as written\)",
    ):
        reproduce(scenario, targets=1, workers=1)


def test_relaysim_reproduce_help_says_what_it_runs_prints_and_how_long() -> None:
    """The help names the paper, each variant and its switches, what is printed, and how long it takes;
    the default scenario it describes is the built-in one as it is."""
    import argparse

    from relaysim.sims.cli import build_parser
    from relaysim.sims.reproduce import VARIANTS

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = subparsers.choices["reproduce"].format_help()
    sc = resolve_scenario("sda-martiny-2021")
    assert sc.generate is not None
    flat = " ".join(text.split())
    assert "Martiny" in flat and "NDSS 2021" in flat and "as few as 5 messages" in flat
    assert f"{sc.generate.people} people for an hour" in flat and sc.duration == 3600.0
    for name, switches in VARIANTS.items():
        assert name in text and all(key in text for key in switches)
    assert "printed:" in text and "time: the built-in scenario's 8 runs" in flat and len(VARIANTS) == 8
    assert "relaysim reproduce" in text and "python -m relaysim.sims.reproduce" in text


def test_no_doc_claims_a_run_time_for_reproduce_or_defences_that_nothing_measures() -> None:
    """The README, docs/papers.md and `relaysim reproduce --help` said "about a minute on two cores" for
    reproduce and defences (and "some 2.5 minutes" for the city's run): no test or benchmark measures
    either (the benchmarks print ratios, and no test asserts a speed), so none of them claims one."""
    import argparse

    from relaysim.sims.cli import build_parser

    root = Path(__file__).parents[2]
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    texts = {
        "README.md": (root / "README.md").read_text(encoding="utf-8"),
        "docs/papers.md": (root / "docs" / "papers.md").read_text(encoding="utf-8"),
        "reproduce --help": subparsers.choices["reproduce"].format_help(),
        "defences --help": subparsers.choices["defences"].format_help(),
    }
    timed = re.compile(
        r"(?:about|some|under|in) (?:a|[\d.]+) (?:minutes?|seconds?|s\b)|minutes? on two cores"
    )
    for where, text in texts.items():
        flat = " ".join(text.split())
        for said in re.finditer(r"`relaysim (?:reproduce|defences)[^`]*`[^.]*|relaysim run city[^.]*", flat):
            assert not timed.search(said.group()), (where, said.group())
        assert "minute on two cores" not in flat, where


def test_every_variant_s_name_fits_its_column_and_the_numbers_line_up() -> None:
    """ "sealed conversations (ephemeral mailboxes)" (42 characters) overran the 36-character variant
    column, pushing its row's numbers 6 columns right of the heading's; and the address join's share
    ended a column short of its heading's on every row."""
    sc = resolve_scenario("sda-martiny-2021")
    results = [
        VariantResult(name, {}, 15, [3, None], 100, 1.0, accounts=40, duration=3600.0) for name in VARIANTS
    ]
    lines = render(sc, results).splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    rows = lines[heading + 1 : heading + 1 + len(VARIANTS)]
    assert [row[: len(name)] for row, name in zip(rows, VARIANTS, strict=True)] == list(VARIANTS)
    for row in rows:
        assert len(row) == len(lines[heading])  # every column ends where its heading does
        # (the cut-short column: '-', what the run saw not given)
        assert row.split()[-9:] == ["15", ">60", "3", "1", "1", "1", "1", "-", "100%"]
    assert lines[heading].index("targets") == max(map(len, VARIANTS)) + 1


def test_docs_state_the_scenarios_parameters_beside_the_papers() -> None:
    """docs/papers.md set the paper's world beside the scenario's: the population, its messages, the
    popular accounts (the paper's receive in every epoch, these in 1 of 30.5) and the background, as the
    built-in scenarios have them, and the attack's variant where it is not the paper's."""
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())
    # the paper's headline carries where in the paper it is: its text, the sources naming no section
    assert (
        '"could link sealed sender users in as few as 5 messages" (the paper\'s text: its headline)' in papers
    )
    sc = resolve_scenario("sda-martiny-2021")
    assert sc.generate is not None
    rate = sc.traffic.popular_messages_per_hour / 3600  # per 1-second epoch
    stated = (
        f"The world is not: {sc.generate.people} people (not a million) on a Barabási–Albert graph "
        f"(m = {sc.generate.graph_m}), "
        f"each writing some {sc.generate.messages_per_day_mean:g} messages a day (`messages_per_day`, "
        f"log-normal with a mean of {sc.generate.messages_per_day_mean:g}, not about 50) and the whole day's in "
        f"the run's one hour; {sc.traffic.popular} popular accounts, each sent a message every "
        f"{3600 / sc.traffic.popular_messages_per_hour:g} s on average, so they receive something in 1 of "
        f"{1 / (1 - math.exp(-rate)):.1f} one-second epochs, not in every epoch as the paper's popular users "
        f"do; a background of replies (`reply_probability = {sc.traffic.reply_probability:g}`, a median delay "
        f"of {sc.traffic.reply_delay / 60:g} minutes) and of {sc.traffic.background_per_hour:g} messages an "
        "hour between random pairs; and Bob's receipt is always sent at once — the paper's noise, Bob's "
        "receipt replaced by unrelated traffic, is not modelled"
    )
    assert sc.duration == 3600 and stated in papers, stated
    assert f"The {DEFAULT_TARGETS} targets are the accounts" in papers
    mp = resolve_scenario("metaphone")
    assert mp.generate is not None and mp.duration == 3600
    assert (
        f"{mp.generate.people} generated people for one hour of messages (not 823 volunteers' 251,788 calls "
        "and 1,234,231 texts)" in papers
    )
    # the disclosure attack in general: relaysim's variant, said to be not the papers'
    assert "The attack is not the papers' variant but relaysim's, Martiny et al.'s" in papers


def test_docs_say_where_in_each_paper_its_figures_are() -> None:
    """Each paper's figures in docs/papers.md say which paper (the section's heading) and where in it: the
    sources the page was written from name no section, table or figure for any of them, so each says
    "the paper's text". The headline's "(the paper's abstract)" was a place those sources do not give."""
    text = (Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8")
    sections = [part for part in re.split(r"\n## ", text)[1:] if "**The paper" in part or "for scale" in part]
    assert len(sections) == 4  # Martiny et al., statistical disclosure, MetaPhone, metadata-private systems
    for section in sections:
        flat = " ".join(section.split())
        start = flat.index("**The paper") if "**The paper" in flat else flat.index("for scale")
        given = flat[start : flat.index("**Here**") if "**Here**" in flat else len(flat)]
        assert re.search(r"(?:the paper's|the papers'|its paper's) text", given), section.splitlines()[0]
        assert "abstract" not in given and "Table" not in given, section.splitlines()[0]


def test_the_mailbox_line_gives_each_target_s_link_and_what_it_held_over() -> None:
    """The mailbox's count, like the correspondent's, per target: k+h (linked after k messages, first over
    the h written after it, to the run's end), ?n (cut short n messages in), - (not within 60), and x for a
    target whose correspondent opened no mailbox for it; the held figures are those of the counts given."""
    sc = resolve_scenario("sda-martiny-2021")
    r = VariantResult("as written", {}, 5, [1, 2, 3, 4, 5], 1800, 1.0, accounts=40, duration=3600.0)
    boxes = VariantResult(
        "sealed conversations (ephemeral mailboxes)",
        {"mailboxes": "ephemeral"},
        5,
        [None] * 5,
        900,
        1.0,
        accounts=40,
        duration=3600.0,
        mailbox_linked_by=[2, None, None, 7, None],
        no_mailbox=1,
        mailbox_cut_short=1,
        mailbox_seen_by=[12, None, 30, 7, 80],
    )
    line = next(
        x for x in render(sc, [r, boxes]).splitlines() if x.startswith("the mailbox linked after k messages")
    )
    assert "(sealed conversations (ephemeral mailboxes); k+h: linked after k" in line
    assert line.endswith(": 2+10 x ?30 7+0 -; the fewest messages a link held over, 0, the median 10")
    # without what the run saw, no per-target line (rather than a 0 held over)
    assert "the mailbox linked after k" not in render(sc, [r, replace(boxes, mailbox_seen_by=None)])


def test_a_run_gives_the_mailbox_s_seen_counts_beside_its_links() -> None:
    sc = _small()
    boxes = run_variant((sc, "mailboxes", {"mailboxes": "ephemeral"}, 4))  # type: ignore[arg-type]
    assert boxes.mailbox_linked_by is not None and boxes.mailbox_seen_by is not None
    assert len(boxes.mailbox_seen_by) == boxes.targets
    # a target has a seen count exactly when its correspondent opened a mailbox for it
    assert sum(n is None for n in boxes.mailbox_seen_by) == boxes.no_mailbox
    for k, n in zip(boxes.mailbox_linked_by, boxes.mailbox_seen_by, strict=True):
        assert k is None or (n is not None and k <= n)
    # the cut-short count is the per-target line's ?n entries
    assert boxes.mailbox_cut_short == sum(
        1
        for k, n in zip(boxes.mailbox_linked_by, boxes.mailbox_seen_by, strict=True)
        if k is None and n is not None and n <= MAX_MESSAGES
    )


def test_a_variant_keeps_nothing_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README: ``relaysim reproduce`` "writes nothing". A variant's run goes into a temporary
    folder, removed once its relay database is read: neither the folder it was run from nor the
    temporary folder holds anything after it."""
    import tempfile

    here, scratch = tmp_path / "here", tmp_path / "tmp"
    here.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    scenario = expand_population(resolve_scenario("sealed-sender-leaks"))
    scenario = replace(scenario, duration=scenario.duration / 12)
    result = run_variant((scenario, "as written", {}, 3))
    assert result.name == "as written"
    assert list(here.iterdir()) == [] and list(scratch.iterdir()) == []
