"""``relaysim analyze DIR --as-seen``: what a provider that watches its relay learns, whatever it keeps.

The run writes ``relay-view.jsonl``: every observation the relay made, whole, before any retention
policy. On a Signal-profile run (sealed sender on, almost nothing kept) the database holds no sealed
send, but the view holds each one with the address and connection it came from: the address join
names every sender. With fresh connections from exits, it names none correctly.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay.metadata import METADATA_FIELDS
from relaysim.sims.analysis.run import analyze, as_seen_view, run_views
from relaysim.sims.analysis.view import RELAY_VIEW_FILE, AnalysisInputError, from_relay_view
from relaysim.sims.analysis_scoring import read_truth, score_analysis
from relaysim.sims.cli import main
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import parse_scenario
from tests.helpers import count_attack_calls

M = 60


def _scenario(defences: str = "") -> str:
    rows = {("alice", "bob"): [], ("carol", "dave"): []}  # type: dict[tuple[str, str], list[str]]
    for i in range(12):
        t = 5 * M + i * 4 * M
        rows[("alice", "bob")] += [
            f'{{ at = "{t}s", from = "alice", text = "alice writes {i:02d}" }}',
            f'{{ at = "{t + 30}s", from = "bob", text = "bob answers {i:02d}" }}',
        ]
        rows[("carol", "dave")].append(
            f'{{ at = "{t + 90}s", from = "carol", text = "carol writes {i:02d}" }}'
        )
    convs = "".join(
        f'[[conversations]]\nbetween = ["{a}", "{b}"]\nmessages = [\n  ' + ",\n  ".join(r) + ",\n]\n\n"
        for (a, b), r in rows.items()
    )
    people = "".join(
        f'[[people]]\nname = "{name}"\ndevices = [{{ region = "us", address = "203.0.113.{i + 1}" }}]\n\n'
        for i, name in enumerate(("alice", "bob", "carol", "dave"))
    )
    return f"""
[scenario]
name = "as-seen-test"
duration = "1h"
seed = 7

[relay]
region = "us"
profile = "signal"

[defences]
{defences}

{people}{convs}"""


def _run(out: Path, defences: str = "") -> Path:
    run_to_dir(parse_scenario(_scenario(defences), "as-seen-test.toml"), out)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("as-seen") / "run")


@pytest.fixture(scope="module")
def truth(run_dir: Path) -> Any:
    return read_truth(run_dir / "transcript.jsonl")


def test_the_signal_profile_keeps_no_sealed_send_but_the_relay_saw_every_one(
    run_dir: Path, truth: Any
) -> None:
    kept = run_views(run_dir)["relay"]
    seen = as_seen_view(run_dir)
    assert not [o for o in kept.observations if o.kind == "sealed_send"]
    sealed = [o for o in seen.observations if o.kind == "sealed_send"]
    assert sealed and all(o.account is None and o.host and o.connection for o in sealed)
    # every envelope of every message someone wrote (36) is in the view
    assert len(truth.messages) == 36 and len(truth.envelopes) >= 36
    assert set(truth.envelopes) <= {o.envelope_id for o in sealed}


def test_as_seen_attribution_finds_every_sender_and_the_true_graph(run_dir: Path, truth: Any) -> None:
    a = analyze(as_seen_view(run_dir))
    score = score_analysis(a, truth)
    assert score["attribution"]["precision"] == 1.0 and score["attribution"]["recall"] == 1.0
    named = {x.envelope_id: x.sender for x in a.attributions if x.envelope_id in truth.envelopes}
    assert len(named) == len(truth.envelopes)
    assert all(truth.envelopes[e].sender == s for e, s in named.items())
    assert a.graph.strong() == {frozenset(("alice", "bob")), frozenset(("carol", "dave"))}
    # the timing attack alone (recipients and times) puts Alice first among Bob's correspondents
    bob = next(r for r in a.sda.rankings if r.target == "bob")
    assert bob.top(n=1)[0][0] == "alice"


def test_fresh_connections_defeat_the_address_join(tmp_path: Path) -> None:
    out = _run(tmp_path / "fresh", 'sealed_connection = "fresh"\nbundle_fetch = "unauthenticated"')
    truth = read_truth(out / "transcript.jsonl")
    a = analyze(as_seen_view(out))
    score = score_analysis(a, truth)
    assert score["attribution"]["sealed_records"] >= 36
    assert score["attribution"]["correct"] == 0
    assert all(x.evidence != "connection" for x in a.attributions)
    assert a.graph.strong() == set()


def test_the_view_holds_only_what_the_relay_saw(run_dir: Path, truth: Any) -> None:
    """The fence, for the new input: only metadata fields, no plaintext, no sender of a sealed send."""
    text = (run_dir / RELAY_VIEW_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows and {k for r in rows for k in r} <= {"kind", *METADATA_FIELDS}
    transcript = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    plaintexts = {e["plaintext"] for e in transcript if "plaintext" in e}
    assert len(plaintexts) == 36 and not [p for p in plaintexts if p in text]
    assert "writes" not in text and "answers" not in text
    for r in rows:
        if r["kind"] == "sealed_send":
            assert "account" not in r and "device" not in r  # the relay never learnt who sent it


def test_cli_analyze_as_seen_writes_the_files(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(run_dir), "--as-seen"]) == 0
    printed = capsys.readouterr().out
    assert (
        "relay as seen: sealed sender on: " in printed
        and "analysis/as-seen/relay.json and relay.md" in printed
    )
    data = json.loads((run_dir / "analysis" / "as-seen" / "relay.json").read_text())
    assert data["score"]["attribution"]["precision"] == 1.0
    assert data["kept_beside_seen"]["by_kind"]["sealed_send"]["kept"] == 0
    assert data["kept_beside_seen"]["by_kind"]["sealed_send"]["seen"] > 0
    md = (run_dir / "analysis" / "as-seen" / "relay.md").read_text()
    assert md.startswith("# What the relay saw: what a provider that watches (not keeps) learns")
    assert "## Statistical disclosure attack on sealed sender" in md and "## Envelope sizes" in md
    assert "precision 1.00, recall 1.00" in md


def test_cli_analyze_as_seen_without_a_view_says_so(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("relay.db", "provider.json", "transcript.jsonl"):
        (old / name).write_bytes((run_dir / name).read_bytes())
    assert main(["analyze", str(old), "--as-seen"]) == 2
    err = capsys.readouterr().err
    assert f"{old / RELAY_VIEW_FILE}" in err and "run the scenario again" in err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"kind":"sealed_send","time":"noon"}', "line 2.time: expected a number, got 'noon'"),
        ('{"kind":"telepathy"}', "line 2.kind: expected one of registration"),
        ('{"kind":"send","plaintext":"hi"}', "line 2.plaintext: not a metadata field"),
        ('{"kind":"send","envelope_id":"zz"}', "line 2.envelope_id: expected hex, got 'zz'"),
        ("not json", "line 2: not JSON"),
        # a Latin-1 byte: refused naming the file and line, as in the transcript (it was a bare
        # "'utf-8' codec can't decode byte 0xe9 in position 29", naming neither)
        (
            b'{"kind":"connection","host":"caf\xe9"}',
            "line 2: not UTF-8 text (invalid continuation byte at byte",
        ),
    ],
)
def test_a_bad_relay_view_names_the_file_line_and_field(
    tmp_path: Path, line: str | bytes, expected: str
) -> None:
    f = tmp_path / RELAY_VIEW_FILE
    f.write_bytes(
        b'{"kind":"connection","time":1.0,"connection":1,"host":"192.0.2.1","port":4000}\n'
        + (line if isinstance(line, bytes) else line.encode())
        + b"\n"
    )
    with pytest.raises(AnalysisInputError) as exc:
        from_relay_view(f)
    assert str(f) in str(exc.value) and expected in str(exc.value)


# --- what each defence buys: relaysim defences ------------------------------------------------------------


def test_defences_asks_for_no_more_worker_processes_than_runs(tmp_path: Path) -> None:
    """``relaysim defences --workers 99999999999999999999`` was an internal error (OverflowError: the
    process pool's queue is sized in a C int), and --workers 1000 forked 1000 processes for 9 runs."""
    from relaysim.sims.defences import VARIANTS, run_defences

    scenario = parse_scenario(_scenario(), "as-seen-test.toml")
    data = run_defences(scenario, tmp_path, workers=10**20, variants={"as written": VARIANTS["as written"]})
    assert [r["variant"] for r in data["variants"]] == ["as written"]


@pytest.mark.parametrize(
    ("relay", "said"), [('profile = "signal"', "signal"), ("", "keep-everything (the default)")]
)
def test_the_defences_heading_names_the_profile_as_the_run_summary_does(
    tmp_path: Path, relay: str, said: str
) -> None:
    """The run's summary says "keep-everything (the default)" when the file names no profile; the defences
    table's heading said "profile keep-everything", as if the file had asked for it."""
    from relaysim.sims.defences import VARIANTS, render, run_defences

    text = _scenario().replace('profile = "signal"', relay)
    data = run_defences(
        parse_scenario(text, "as-seen-test.toml"),
        tmp_path,
        workers=1,
        variants={"as written": VARIANTS["as written"]},
    )
    assert render(data).splitlines()[0].endswith(f"(seed 7, profile {said})")


def test_defences_takes_the_disclosure_attack_once_per_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """measure() analysed the run as seen (write_analysis, whose one pass of the attack has a checkpoint
    after every target epoch, keeping the ranks of each target's true contacts), then took the attack a
    second time itself, for the same targets and contacts, for its SDA cells. Now it scores that one
    pass: one call of the attack per variant, and the row what the second pass gave."""
    from relaysim.sims.analysis import sda as sda_module
    from relaysim.sims.defences import VARIANTS, run_defences, sda_row

    scenario = parse_scenario(_scenario(), "as-seen-test.toml")
    calls = count_attack_calls(monkeypatch)
    data = run_defences(scenario, tmp_path, workers=1, variants={"as written": VARIANTS["as written"]})
    assert len(calls) == 1, calls
    monkeypatch.undo()
    # the row is the one a pass of its own gave, to the cell
    run = tmp_path / "as-written"
    view, truth = as_seen_view(run), read_truth(run / "transcript.jsonl")
    targets = [r.target for r in analyze(view).sda.rankings]
    own = sda_module.statistical_disclosure(
        view,
        targets=targets,
        receipts=True,
        checkpoints=range(1, len(view.observations) + 2),
        keep_top=0,
        watch={t: truth.contacts(t) for t in targets},
    )
    row = data["variants"][0]["sda"]
    assert row == sda_row(own.rankings, truth) and row["targets"] >= 1


def test_the_defences_table_shows_what_fresh_connections_and_receipts_off_buy(tmp_path: Path) -> None:
    from relaysim.sims.defences import VARIANTS, render, run_defences

    scenario = parse_scenario(_scenario(), "as-seen-test.toml")
    chosen = {k: VARIANTS[k] for k in ("as written", "receipts off", "fresh connection per sealed send")}
    data = run_defences(scenario, tmp_path, workers=1, variants=chosen)
    rows = {r["variant"]: r for r in data["variants"]}
    written, off, fresh = (rows[k] for k in chosen)
    # as written: every sealed message attributed by address, the graph rebuilt, first contacts by size
    assert written["attribution"] == {
        "sealed_message_records": 36,
        "attributed": 36,
        "correct": 36,
        "precision": 1.0,
        "recall": 1.0,
    }
    assert written["contact_graph"]["recall"] == 1.0 and written["first_contact_by_size"]["recall"] == 1.0
    assert (
        written["sda"]["linked_within_max_k"] >= 1 and written["cost"]["sealed_envelopes_per_message"] == 2.0
    )
    # fresh connections from exits: the address join names no sender correctly, at a latency cost
    assert fresh["attribution"]["correct"] == 0 and fresh["contact_graph"]["recall"] == 0.0
    assert fresh["cost"]["latency_p50_s"] > written["cost"]["latency_p50_s"] + 0.1
    # receipts off: half the sealed envelopes
    assert off["cost"]["sealed_envelopes_per_message"] == 1.0
    table = render(data)
    assert "| as written | 1.00 / 1.00 | 1.00 / 1.00 |" in table
    assert "| fresh connection per sealed send | – / 0.00 | – / 0.00 |" in table
    # each variant's run, analysed as seen, is kept
    assert (tmp_path / "fresh-connections" / "analysis" / "as-seen" / "relay.md").exists()


def test_the_defences_sda_cells_count_messages_and_stop_at_max_k() -> None:
    """A target linked only after more than MAX_K messages is not linked within MAX_K; and the count is
    of messages written to the target, not of its epochs (its own messages' receipts open epochs too)."""
    from relaysim.sims.analysis.sda import statistical_disclosure
    from relaysim.sims.analysis.view import Obs, ProviderView
    from relaysim.sims.analysis_scoring import Truth
    from relaysim.sims.defences import MAX_K, render, sda_row

    def world(n: int, tied: int) -> tuple[ProviderView, Truth]:
        """alice writes bob n messages; carol, too, receives in the epoch after each of the first
        ``tied`` of them (a tie: counted against the attacker); a receipt for bob's own message
        comes before each."""
        obs, truth = [], Truth()
        for i in range(n):
            t = 1000.0 + 100 * i
            obs.append(Obs("sealed_send", time=t - 40, recipient_account="bob"))  # a receipt
            obs.append(Obs("sealed_send", time=t, recipient_account="bob"))
            obs.append(Obs("sealed_send", time=t + 0.2, recipient_account="alice"))
            if i < tied:
                obs.append(Obs("sealed_send", time=t + 0.3, recipient_account="carol"))
            truth.messages.append((t, "alice", "bob", i))
        return ProviderView("synthetic", tuple(obs)), truth

    def row(view: ProviderView, truth: Truth) -> dict[str, object]:
        sda = statistical_disclosure(
            view, targets=["bob"], receipts=True, checkpoints=range(1, len(view.observations) + 2)
        )
        return sda_row(sda.rankings, truth)

    late = row(*world(MAX_K + 10, MAX_K + 3))  # alice alone first at message MAX_K + 4
    assert (late["targets"], late["linked_within_max_k"], late["median_messages_to_rank_1"]) == (1, 0, None)
    early = row(*world(30, 6))  # alone first at message 7: the 14th epoch, counted as 7 messages
    assert (early["linked_within_max_k"], early["median_messages_to_rank_1"], early["linked_within_5"]) == (
        1,
        7,
        0,
    )
    # the run's end: tied to the last of 30 messages, bob is not linked, but the run ended before MAX_K
    # messages to him (cut short, a longer run might link him); past MAX_K, not linked within it
    short = row(*world(30, 30))
    assert (short["linked_within_max_k"], short["cut_short"]) == (0, 1)
    assert (late["cut_short"], early["cut_short"]) == (0, 0)
    table = render(
        {
            "scenario": "s",
            "seed": 1,
            "profile": "signal",
            "variants": [
                {
                    "variant": "as written",
                    "attribution": {"precision": 1.0, "recall": 1.0},
                    "contact_graph": {"precision": 1.0, "recall": 1.0},
                    "sda": short,
                    "first_contact_by_size": {"precision": None, "recall": None},
                    "cost": {"latency_p50_s": None, "sealed_envelopes_per_message": None},
                    "size_vs_plaintext_length_correlation": None,
                }
            ],
        }
    )
    # (alice wrote to bob: an account with a correspondent, not a target here, and said to be not)
    assert (
        f"| 0 of 1 (1 cut short; 1 of the 2 accounts with a correspondent; not the attack's targets: alice) | >{MAX_K} |"
        in table
    )
    assert f"cut short: targets not linked when the run ended, before {MAX_K} messages were written" in table


def test_cli_defences_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["defences", "no-such-scenario", "--out", str(tmp_path / "d")]) == 2
    assert "no-such-scenario" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["defences", "--workers", "0", "--out", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert "argument --workers: expected at least 1 worker processes, got 0" in capsys.readouterr().err
    # a folder holding another command's run is not written beside (it was: rc 0, two runs mixed)
    held = tmp_path / "held"
    held.mkdir()
    (held / "summary.json").write_text("{}\n", encoding="utf-8")
    assert main(["defences", "two-friends", "--out", str(held), "--workers", "1"]) == 2
    assert "already holds a run (summary.json)" in capsys.readouterr().err
    assert sorted(p.name for p in held.iterdir()) == ["summary.json"]


def test_the_demo_ending_says_what_a_watching_operator_learns(run_dir: Path) -> None:
    """``relaysim demo`` ends with an inference; on a relay that keeps no sealed send, the surprise is
    what it saw of them."""
    from relaysim.sims.demo import inference_lines

    lines = " ".join(inference_lines(run_dir))
    assert "rebuild none of the 2 pairs who talked: it keeps too little" in lines
    assert "Its database keeps no sealed send, but its relay saw all 72 while it ran" in lines
    assert "attributes 72 of them to their true sender by address (precision 1.00, recall 1.00)" in lines
    assert "rebuilds 2 of 2 pairs who talked" in lines


def test_one_length_class_is_not_a_padding_step_of_none(run_dir: Path) -> None:
    assert main(["analyze", str(run_dir), "--as-seen"]) == 0
    md = (run_dir / "analysis" / "as-seen" / "relay.md").read_text()
    assert "steps of None" not in md
    assert re.search(r"in length classes \d+ B × \d+ \(no step between classes", md), md


def test_cli_defences_prints_and_writes_one_row_per_defence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaysim.sims.defences import VARIANTS

    scenario = tmp_path / "as-seen-test.toml"
    scenario.write_text(_scenario(), encoding="utf-8")
    out = tmp_path / "d"
    assert main(["defences", str(scenario), "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    md = (out / "defences.md").read_text(encoding="utf-8")
    assert md in printed and "# What each defence buys: as-seen-test (seed 7, profile signal)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| defence")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(VARIANTS)
    data = json.loads((out / "defences.json").read_text(encoding="utf-8"))
    assert [r["variant"] for r in data["variants"]] == list(VARIANTS)
    # the same folder again is refused without --force, and replaced with it
    assert main(["defences", str(scenario), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err


def test_cli_defences_sda_top_sets_how_many_of_the_best_each_variant_s_analysis_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relaysim defences`` analysed each variant with the default 10 best per checkpoint, whatever one
    wanted (analyze had --sda-top, defences none). ``--sda-top N`` gives each variant's analysis the N
    best: the same as ``relaysim analyze DIR/<variant> --as-seen --sda-top N`` writes."""
    from relaysim.sims import defences

    real = defences.run_defences
    one = {"as written": defences.VARIANTS["as written"]}
    monkeypatch.setattr(defences, "run_defences", lambda *a, **k: real(*a, variants=one, **k))
    scenario = tmp_path / "as-seen-test.toml"
    scenario.write_text(_scenario(), encoding="utf-8")
    written = {}
    for top in (None, 1):
        out = tmp_path / f"top-{top}"
        given = ["--sda-top", str(top)] if top else []
        assert main(["defences", str(scenario), "--out", str(out), "--workers", "1", "--quiet", *given]) == 0
        capsys.readouterr()
        page = out / "as-written" / "analysis" / "as-seen" / "relay.json"
        data = json.loads(page.read_text(encoding="utf-8"))["analysis"]["statistical_disclosure"]
        written[top] = {t["target"]: t["top_after_k"] for t in data["targets"]}
        if top:  # (what analyze --as-seen --sda-top writes of the same run)
            assert main(["analyze", str(out / "as-written"), "--as-seen", "--sda-top", str(top)]) == 0
            assert json.loads(page.read_text(encoding="utf-8"))["analysis"]["statistical_disclosure"] == data
    assert written[None] and written[None].keys() == written[1].keys()
    assert max(len(v) for t in written[None].values() for v in t.values()) > 1
    for target, per_k in written[None].items():
        assert {k: best[:1] for k, best in per_k.items()} == written[1][target]


def test_defences_says_so_when_the_analysis_kept_no_pass_of_the_attack_to_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """measure() checked that the analysis kept the attack's pass with a checkpoint after every target
    epoch with an ``assert``, which ``python -O`` strips: it then failed later, on None, with no word of
    what was missing. Now it says which pass is missing, for which run, under -O too."""
    import dataclasses

    from relaysim.sims import analysis_scoring
    from relaysim.sims.defences import measure

    run = tmp_path / "run"
    run_to_dir(parse_scenario(_scenario(), "as-seen-test.toml"), run)
    real = analysis_scoring.analyse_and_write

    def without_the_pass(*args: Any, **kwargs: Any) -> Any:
        lines, analyses = real(*args, **kwargs)
        return lines, {k: dataclasses.replace(a, sda_every_epoch=None) for k, a in analyses.items()}

    monkeypatch.setattr(analysis_scoring, "analyse_and_write", without_the_pass)
    with pytest.raises(RuntimeError, match=r"sda_every_epoch") as caught:
        measure(run)
    assert str(run) in str(caught.value)


def test_the_defences_mailbox_row_says_which_accounts_its_sda_cell_does_not_score(tmp_path: Path) -> None:
    """With ephemeral mailboxes the SDA cell scored fewer targets than the other rows (35 where they
    score 40 on sda-martiny-2021), without a word: the attack's targets include mailboxes, to which the
    truth has no message written (no correspondent: not scored), and people whose messages went to
    their mailboxes have too few epochs under their own account to be targets. The row now says both,
    and its counts are the cell's."""
    from relaysim.sims.defences import VARIANTS, render, run_defences

    chosen = {k: VARIANTS[k] for k in ("as written", "sealed conversations (ephemeral mailboxes)")}
    data = run_defences(
        parse_scenario(_scenario(), "as-seen-test.toml"), tmp_path, workers=1, variants=chosen
    )
    written, boxes = (r["sda"] for r in data["variants"])
    assert written["targets"] == written["with_contacts"] == 4 and written["not_ranked"] == []
    assert written["ranked_without_contacts"] == 0
    assert boxes["targets"] < boxes["with_contacts"] and boxes["ranked_without_contacts"] >= 1
    assert boxes["targets"] + len(boxes["not_ranked"]) == boxes["with_contacts"]
    table = render(data)
    row = next(line for line in table.splitlines() if line.startswith("| sealed conversations"))
    cell = row.split(" | ")[3]
    note = re.fullmatch(
        r"(\d+) of (\d+) \((?:\d+ cut short; )?(\d+) of the (\d+) accounts with a correspondent; not the "
        r"attack's targets: ([a-z, ]+); (\d+) targets with no correspondent not scored\)",
        cell,
    )
    assert note is not None, cell
    linked, targets, noted, accounts, names, without = note.groups()
    assert int(linked) == boxes["linked_within_max_k"]
    assert int(targets) == int(noted) == boxes["targets"]  # the note's count is the row's
    assert int(accounts) == boxes["with_contacts"] and names.split(", ") == boxes["not_ranked"]
    assert int(without) == boxes["ranked_without_contacts"]
    # the as-written row has nothing to say
    assert "| as written | 1.00 / 1.00 | 1.00 / 1.00 | 3 of 4 (1 cut short) |" in table


def test_docs_state_the_defences_sda_cells_of_the_built_in_sda_scenario(tmp_path: Path) -> None:
    """docs/papers.md states what `relaysim defences sda-martiny-2021` scores in its SDA cells: the
    targets with a correspondent in the as-written row and the ephemeral mailboxes' row, the attack's
    targets there, how many of them were mailboxes, and which people were not its targets. Those
    figures were no test's: these two rows, run as the command runs them, are the docs' figures."""
    from relaysim.sims.analysis.sda import statistical_disclosure
    from relaysim.sims.defences import VARIANTS, run_defences
    from relaysim.sims.scenario import resolve_scenario

    chosen = {k: VARIANTS[k] for k in ("as written", "sealed conversations (ephemeral mailboxes)")}
    data = run_defences(resolve_scenario("sda-martiny-2021"), tmp_path, workers=2, variants=chosen)
    written, boxes = (r["sda"] for r in data["variants"])
    papers = " ".join((Path(__file__).parents[2] / "docs" / "papers.md").read_text(encoding="utf-8").split())
    said = re.search(
        r"`relaysim defences sda-martiny-2021` scores the attack's targets that had a correspondent \(`sda_row` "
        r"in `sims/defences.py`\): (\d+) in every row but the ephemeral mailboxes', (\d+) there, .*? The attack "
        r"took (\d+) targets, the accounts with the most epochs \((\d+) or more: .*?\): (\d+) of them mailboxes, "
        r".*?; and (\d+) of the (\d+) people, the other (\d+) \(([a-z0-9, ]+)\) having too few epochs",
        papers,
    )
    assert said is not None, "docs/papers.md no longer states the defences' SDA cells"
    every, there, took, least, mailboxes, people, of, others = map(int, said.groups()[:8])
    assert written["targets"] == written["with_contacts"] == every and written["not_ranked"] == []
    assert boxes["targets"] == there == people and boxes["with_contacts"] == of == every
    assert boxes["targets"] + boxes["ranked_without_contacts"] == took
    assert boxes["ranked_without_contacts"] == mailboxes
    assert boxes["not_ranked"] == said[9].split(", ") and len(boxes["not_ranked"]) == others
    assert inspect.signature(statistical_disclosure).parameters["min_epochs"].default == least


def test_defences_reports_its_progress_run_by_run(tmp_path: Path) -> None:
    """``relaysim defences city`` ran for more than a minute with no output: run_defences says how many
    variants are done of how many (for the progress bar the command shows on a terminal, as run and
    sweep do; ``--quiet`` for none), once before the first and after each, by the pool too."""
    from relaysim.sims.defences import VARIANTS, add_parser, run_defences

    scenario = parse_scenario(_scenario(), "as-seen-test.toml")
    chosen = {k: VARIANTS[k] for k in ("as written", "receipts off")}
    steps: list[tuple[int, int]] = []
    data = run_defences(
        scenario, tmp_path / "pool", workers=2, variants=chosen, step=lambda *a: steps.append(a)
    )
    assert steps == [(0, 2), (1, 2), (2, 2)]
    assert [r["variant"] for r in data["variants"]] == list(chosen)  # in the variants' order
    steps.clear()
    run_defences(
        scenario,
        tmp_path / "one",
        workers=1,
        variants={"as written": VARIANTS["as written"]},
        step=lambda *a: steps.append(a),
    )
    assert steps == [(0, 1), (1, 1)]
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["defences", "--quiet"]).quiet is True
