"""The demo and the CLI, as a user meets them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.cli import main
from relaysim.sims.demo import SCRIPT, render, run_demo
from tests.sims.test_term_view import columns


def distinctive_words(text: str) -> list[str]:
    """The words of a message no relay line could hold by chance (longer than six letters)."""
    return [w.strip(".,?!") for w in text.split() if len(w.strip(".,?!")) > 6]


def joined_rows(text: str) -> list[str]:
    """Lines with their wrapped continuations (indented well past the row's first line) joined on."""
    rows: list[str] = []
    for line in text.splitlines():
        depth = len(line) - len(line.lstrip())
        if rows and line.strip() and depth > len(rows[-1]) - len(rows[-1].lstrip()) + 4:
            rows[-1] += " " + line.strip()
        else:
            rows.append(line)
    return rows


def test_demo_delivers_every_message_and_no_plaintext_travels() -> None:
    steps = run_demo(seed=1)
    assert sorted(s.sent for s in steps) == sorted(text for _who, text in SCRIPT)
    for s in steps:
        assert s.received == s.sent
        for i in range(len(s.sent) - 7):  # no run of 8 plaintext bytes on the wire
            assert s.sent.encode()[i : i + 8] not in s.wire
    assert steps[-1].late and steps[-1].prekey_message
    assert steps[0].prekey_message and not steps[2].prekey_message


def test_wire_demo_renders_both_views(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--wire", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "on the wire" in out and "arrived late" in out
    assert render(run_demo(3), width=120).count("prekey msg") == 2


def test_main_demo_shows_the_phones_the_relay_and_the_disclosures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["demo", "--scenario", "two-friends", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "WHAT THE PHONES SAW" in out and "WHAT THE RELAY SAW" in out
    impossible = [
        line for line in out.splitlines() if line.strip().startswith("cryptographically impossible:")
    ]
    assert any("content" in line for line in impossible), impossible
    # the phones' column has the words; the relay's column never does
    from relaysim.sims.scenario import resolve_scenario

    texts = [m.text for c in resolve_scenario("two-friends").conversations for m in c.messages]
    _time, phones, sender, relay = columns(out.split("LEGAL PROCESS")[0])
    assert all(t in phones for t in texts)  # every message, whole (its lines joined again)
    assert not any(w in relay + sender for t in texts for w in distinctive_words(t))
    assert (tmp_path / "demo" / "disclosures" / "search-warrant-amira.md").exists()


def test_help_teaches_with_examples() -> None:
    for argv in (["--help"], ["demo", "--help"], ["bench", "--help"], ["relay", "--help"]):
        res = subprocess.run(
            [sys.executable, "-m", "relaysim.sims.cli", *argv], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        assert "example" in res.stdout, argv


def test_unknown_command_is_a_clear_error() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", "frobnicate"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "invalid choice: 'frobnicate'" in res.stderr


def test_default_demo_contrasts_enterprise_and_provider_held_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The README's demo: Pakistan 2015 as it happened (the PTA's demand refused, then withdrawn; BES
    content cryptographically impossible; consumer BBM's words withheld by policy), then, separately
    labelled, what compliance would have meant."""
    from relaysim.sims.scenario import resolve_scenario

    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    section, what_if = out.split("WHAT EACH OPERATOR COULD PRODUCE (THE RECORD)", 1)[1].split(
        "COUNTERFACTUAL", 1
    )
    rows = joined_rows(section)
    bes = [line for line in rows if line.strip().startswith("bes ")]
    bbm = [line for line in rows if line.strip().startswith("bbm-consumer ")]
    assert any("cryptographically impossible" in line for line in bes)
    assert any("withheld by policy" in line for line in bbm)
    assert any("refused then demand withdrawn" in line for line in bes)
    assert any("not served on this operator" in line for line in bbm)  # the demand named BES only
    texts = [m.text for c in resolve_scenario("pakistan-2015").conversations for m in c.messages]
    _time, phones, sender, relay = columns(out.split("WHAT EACH")[0])
    assert any(t in phones for t in texts)
    assert not any(w in relay + sender for t in texts for w in distinctive_words(t))
    assert not any(t[:20] in section for t in texts)  # in the record nobody handed the words over
    assert "not what happened" in what_if and "had the provider complied" in what_if
    # had BlackBerry complied on BES: ciphertext nobody at BlackBerry can open, and no words; had the same
    # demand been made of consumer BBM (it was not: the record's is BES only) and complied with, the words
    bes_if, bbm_if = what_if.split("### bbm-consumer")
    assert "ciphertext:" in bes_if and not any(t[:20] in bes_if for t in texts)
    assert "had the same demand been made of this operator" in bbm_if
    assert any(t[:20] in bbm_if for t in texts)


def test_show_on_a_multi_profile_run_names_its_runs(tmp_path: Path) -> None:
    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    res = subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", "show", str(out)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert f"relaysim show {out / 'bbm-consumer'}" in res.stderr and "bes" in res.stderr


def test_demo_ends_with_an_inference_from_the_metadata_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue #11 item 6: the demo's last word is what BlackBerry's BES records give away without one
    word: the whole contact graph (pairs no order named too), the target's circle, message lengths."""
    from relaysim.sims.scenario import resolve_scenario

    assert main(["demo", "--out", str(tmp_path / "demo"), "--width", "100"]) == 0
    out = capsys.readouterr().out
    tail = " ".join(joined_rows(out.split("WHAT THE METADATA ALONE GIVES AWAY")[1]))
    tail = " ".join(tail.split())
    sc = resolve_scenario("pakistan-2015")
    pairs = {frozenset(c.between) for c in sc.conversations}
    targets = {getattr(e, "target", None) for e in sc.events} - {None}
    assert targets == {"saima"}
    unnamed = [" and ".join(sorted(p)) for p in pairs if not p & targets]
    assert unnamed == ["ayesha and hina"]
    circle = sorted(x for p in pairs if "saima" in p for x in p if x != "saima")
    assert f"{len(pairs)} of {len(pairs)} true pairs (precision 1.00, recall 1.00)" in tail
    assert f"including {unnamed[0]}, whom no order named" in tail
    assert f"saima's whole circle: {len(circle)} of {len(circle)} contacts ({', '.join(circle)})" in tail
    # Envelopes are padded (Signal's scheme, on by default for every profile): their sizes no longer
    # follow message lengths, so the demo makes no claim about them.
    assert "correlation" not in tail
    assert "BlackBerry Enterprise Server" in out.split("WHAT THE METADATA ALONE GIVES AWAY")[1]


def test_run_says_every_file_it_wrote(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """run's line said "wrote … transcript.jsonl, relay.db, summary.json, summary.md" whatever it
    wrote: relay-view.jsonl, provider.json and the disclosures went unsaid. It lists the folder."""
    out = tmp_path / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wrote "))
    said = line.removeprefix(f"wrote {out}/").split(" — ")[0].split(", ")
    there = [p.name + ("/" if p.is_dir() else "") for p in out.iterdir()]
    assert len(said) == len(set(said)) and sorted(said) == sorted(there), (line, there)
    assert {"relay-view.jsonl", "provider.json", "disclosures/"} <= set(said)
    # and run --help names each of them (it named four)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    assert [name for name in said if name not in helped] == [], helped


@pytest.mark.parametrize("name", ["../../outside", "/etc/passwd", "a/b", "..", ""])
def test_demo_comparison_reads_no_order_name_that_is_no_plain_name(tmp_path: Path, name: str) -> None:
    """render_demo_comparison joined each order's name from summary.json onto the run's folder as
    ``disclosures/{name}.json``, unchecked: ``../../outside`` read a file outside the run (and a
    traceback where none was there). It is refused naming the field, as plain_name_problem words it."""
    from relaysim.sims.report import RunFolderError, render_demo_comparison

    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    summary_file = out / "bes" / "summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert summary["disclosures"]
    summary["disclosures"][0]["name"] = name
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    (tmp_path / "outside.json").write_text("{}", encoding="utf-8")  # (what ../../outside was read as)
    with pytest.raises(RunFolderError) as exc:
        render_demo_comparison(out, ["bes", "bbm-consumer"])
    said = str(exc.value)
    assert said.startswith(f"{summary_file}: disclosures[0].name: expected the order's name"), said
    assert "a plain name" in said and "run it again with: relaysim run pakistan-2015" in said, said


def test_demo_comparison_refuses_a_summary_or_an_order_entry_it_cannot_read_naming_the_field(
    tmp_path: Path,
) -> None:
    """render_demo_comparison read each profile's summary.json unchecked: a summary.json that is no
    object, a ``disclosures`` that is no list, an entry that is no object or has no ``name`` raised
    TypeError or KeyError to the last-resort handler. Each is a RunFolderError naming the file and
    the field, with the command that makes the run again."""
    from relaysim.sims.report import RunFolderError, render_demo_comparison

    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    summary_file = out / "bbm-consumer" / "summary.json"
    whole = json.loads(summary_file.read_text(encoding="utf-8"))
    assert whole["disclosures"]
    cases: list[tuple[Any, str]] = [
        (["a", "list"], "expected a JSON object, got list"),
        ({**whole, "disclosures": 5}, "disclosures: expected a list of the orders served, got int"),
        (
            {**whole, "disclosures": ["x"]},
            "disclosures[0]: expected an order served, an object with its name, got 'x'",
        ),
        (
            {**whole, "disclosures": [{"process": "subpoena"}]},
            "disclosures[0]: expected an order served, an object with its name, got an object without one",
        ),
    ]
    for summary, field in cases:
        summary_file.write_text(json.dumps(summary), encoding="utf-8")
        with pytest.raises(RunFolderError) as exc:
            render_demo_comparison(out, ["bes", "bbm-consumer"])
        said = str(exc.value)
        assert said.startswith(f"{summary_file}: {field}; "), said
        assert said.endswith(f"run it again with: relaysim run pakistan-2015 --out {out} --force"), said


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("{", "is not valid JSON (Expecting property name"),
        ("", "is not valid JSON (Expecting value"),
        ("[1]", ": expected a disclosure (a JSON object), got list"),
        ({"provided": 5}, ": provided: expected an object of categories, as relaysim writes, got 5"),
        ({"provided": {"content": "x"}}, ": provided.content: expected a list of rows, got 'x'"),
        (
            {"not_provided": {"bogus": {"content": "why"}}},
            ": not_provided: 'bogus' is no reason relaysim gives",
        ),
        (
            {"not_provided": {"not_retained": {"contacts": 5}}},
            ": not_provided.not_retained.contacts: expected a string, got 5",
        ),
        ({"response": 5}, ": response: expected one of complied, refused, challenged, withdrawn, got 5"),
        ({"served": "noon"}, ': served: expected a time in seconds, got "noon"'),
    ],
)
def test_demo_comparison_refuses_a_disclosure_it_cannot_read_naming_the_file_and_field(
    tmp_path: Path, change: str | dict[str, Any], field: str
) -> None:
    """render_demo_comparison read each disclosure unchecked: a file that is no JSON, a field of
    another type, a reason relaysim never gives (REASON_LABELS[reason]) raised JSONDecodeError,
    TypeError or KeyError to the last-resort handler. Each is a RunFolderError naming the file and
    the field, in the words the HTML report gives (sims.report.disclosure_problem), with the command
    that makes the run again."""
    from relaysim.sims.report import RunFolderError, render_demo_comparison

    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    f = out / "bes" / "disclosures" / "court-order-saima.json"
    if isinstance(change, dict):
        change = json.dumps({**json.loads(f.read_text(encoding="utf-8")), **change})
    f.write_text(change, encoding="utf-8")
    with pytest.raises(RunFolderError) as exc:
        render_demo_comparison(out, ["bes", "bbm-consumer"])
    said = str(exc.value)
    assert said.startswith(f"{f}{' ' if field[0] != ':' else ''}{field}"), said
    assert said.endswith(f"run it again with: relaysim run pakistan-2015 --out {out} --force"), said


def test_demo_comparison_refuses_an_order_whose_disclosure_no_profile_holds(tmp_path: Path) -> None:
    """An order summary.json names whose disclosures/NAME.json no profile's folder holds raised
    StopIteration to the last-resort handler; it is a RunFolderError naming the summary's field."""
    from relaysim.sims.report import RunFolderError, render_demo_comparison

    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "bes" / "summary.json").read_text(encoding="utf-8"))
    i = [o["name"] for o in summary["disclosures"]].index("pta-blanket-demand")
    assert not (out / "bbm-consumer" / "disclosures" / "pta-blanket-demand.json").exists()
    (out / "bes" / "disclosures" / "pta-blanket-demand.json").unlink()
    with pytest.raises(RunFolderError) as exc:
        render_demo_comparison(out, ["bes", "bbm-consumer"])
    assert str(exc.value) == (
        f"{out / 'bes' / 'summary.json'}: disclosures[{i}].name: 'pta-blanket-demand' names no disclosure: no "
        f"profile's disclosures/ holds pta-blanket-demand.json; run it again with: relaysim run pakistan-2015 "
        f"--out {out} --force"
    )


def test_demo_says_a_comparison_it_cannot_read_back_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A RunFolderError from the comparison's demo (its files changed as it ran) is one line on
    stderr, exit status 2: it was the last resort's "a bug in relaysim"."""
    from relaysim.sims import report
    from relaysim.sims.report import RunFolderError

    def refuse(out: Path, *args: object, **kw: object) -> str:
        raise RunFolderError(f"{out}/bes/summary.json: disclosures[0].name: expected the order's name")

    monkeypatch.setattr(report, "render_demo_comparison", refuse)
    assert main(["demo", "--out", str(tmp_path / "pk")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"relaysim demo: {tmp_path / 'pk'}/bes/summary.json: disclosures[0].name: expected the order's name\n"
    )
