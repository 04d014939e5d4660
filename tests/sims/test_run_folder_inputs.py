"""A finished run's folder read back when it is not as relaysim left it (cut short, edited, or made
by someone else): show, analyze, report and disclose answer with one line naming the file and the
line, row or field, and exit 2; and analyze and report never write through a symbolic link into a
file or folder that is not relaysim's own."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.cli import main

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError, not a JSONDecodeError


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    """``relaysim argv`` exits 2 with one line on stderr holding every needle."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, (status, err)
    assert err.count("\n") == 1 and "internal error" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def edit_event(run: Path, kind: str, change: Callable[[dict], object]) -> int:
    """Change the first ``kind`` event of the transcript in place; its line number."""
    path = run / "transcript.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        event = json.loads(line)
        if event["kind"] == kind:
            new = change(event)
            lines[i] = new if isinstance(new, str) else json.dumps(event)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return i + 1
    raise AssertionError(kind)


# --- writing: never through a link ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["show", ""], ["analyze", ""], ["analyze", " ", "--as-seen"], ["report", ""]]
)
def test_an_empty_run_folder_is_refused_not_read_as_the_current_one(
    argv: list[str],
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``relaysim report "$DIR"`` with DIR unset read the current folder, and analyze and report
    wrote into it: refused as ``--out ""`` is (runfiles.out_folder)."""
    run = copy_of(tf_run, tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    monkeypatch.chdir(run)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"expected a folder, got {argv[1]!r} (an empty shell variable?)" in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.parametrize("command", ["show", "analyze", "report"])
def test_a_file_or_a_dangling_link_given_for_a_run_folder_is_said_to_be_one(
    command: str, tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``relaysim show run/relay.db`` said "run/relay.db has no transcript.jsonl; make one with:
    relaysim run NAME --out run/relay.db", and analyze "has no relay.db", of a file given for the
    folder; a symbolic link to nothing was "no such folder" or had "no transcript.jsonl"."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nothing-here")
    for given, said in (
        (
            tf_run / "relay.db",
            f"{tf_run / 'relay.db'} is a file, not a folder; give the --out folder of a run",
        ),
        (link, f"{link} is a symbolic link to {tmp_path / 'nothing-here'}, which does not exist; give the"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([command, str(given)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument DIR: {said}" in err, err
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.parametrize("command", [["run", "two-friends"], ["demo"], ["chart"]])
def test_an_out_folder_that_is_a_dangling_link_is_said_to_be_one(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out link`` with the link pointing at nothing said "cannot write to link: File exists"."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nothing-here")
    argv = [*command, str(link)] if command == ["chart"] else [*command, "--out", str(link)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{link} is a symbolic link to {tmp_path / 'nothing-here'}, which does not exist" in err, err
    assert "File exists" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone"]


@pytest.mark.parametrize("link", ["report.html", "analysis", "analysis/relay.json"])
def test_analyze_and_report_never_write_through_a_symbolic_link(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    """A run folder handed over with report.html -> ~/.bashrc, or analysis/ -> ~/Documents: the
    write landed in the user's file or folder."""
    run = copy_of(tf_run, tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "relay.json").write_text("mine\n", encoding="utf-8")
    target = theirs if link == "analysis" else theirs / "relay.json"
    if link != "analysis":
        (run / "analysis").mkdir(exist_ok=True)
    (run / link).symlink_to(target)
    command = ["report", str(run)] if link == "report.html" else ["analyze", str(run)]
    refused(capsys, command, str(run / link), "symbolic link")
    assert sorted(p.name for p in theirs.iterdir()) == ["relay.json"]
    assert (theirs / "relay.json").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("what", ["a link", "a folder"])
@pytest.mark.parametrize("at", ["relay.md", "search-warrant-amira.md"])
def test_analyze_refuses_a_link_or_a_folder_among_its_files_before_writing_any(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], what: str, at: str
) -> None:
    """analyze wrote analysis/NAME.json and NAME.md one name after another, checking each as it
    wrote it: a symbolic link (or a folder) at analysis/relay.md was refused after relay.json (and,
    at a later name's, after the files of the names before it) had been written anew: analysis/
    left half of one analysis and half of the one before, saying only that one file was refused.
    Every file is checked before any is written."""
    run = copy_of(tf_run, tmp_path)
    (run / "analysis").mkdir()
    if what == "a link":
        (run / "analysis" / at).symlink_to(tmp_path / "elsewhere")
    else:
        (run / "analysis" / at).mkdir()
    refused(capsys, ["analyze", str(run)], str(run / "analysis" / at))
    assert [p.name for p in (run / "analysis").iterdir()] == [at]
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("link", ["transcript.jsonl", "disclosures", "signal"])
def test_run_never_writes_through_or_clears_a_symbolic_link_in_its_folder(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    """An --out folder with transcript.jsonl -> a file of the user's not yet there (the run wrote
    it), or a profile's subfolder signal/ -> another run's folder (--force removed that run's files
    and wrote the new ones there): the folder holds a run by that name, and --force removes the
    link, never what it points at."""
    out = tmp_path / "out"
    out.mkdir()
    theirs = tmp_path / "theirs"
    if link == "transcript.jsonl":
        target = theirs / "notes.txt"  # dangling: the run would create it
        theirs.mkdir()
    else:
        shutil.copytree(tf_run, theirs)
        target = theirs
    before = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*"))
    (out / link).symlink_to(target)
    refused(capsys, ["run", "two-friends", "--out", str(out), "--quiet"], link, "--force")
    assert main(["run", "two-friends", "--out", str(out), "--quiet", "--force"]) == 0
    assert not (out / link).is_symlink()
    assert sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*")) == before


# --- JSON that json.loads cannot read without an exception of another kind ------------------------


@pytest.mark.parametrize(
    ("name", "commands"),
    [
        ("transcript.jsonl", ["show", "analyze", "report"]),
        ("summary.json", ["show", "report"]),
        ("provider.json", ["disclose", "analyze"]),
        ("relay-view.jsonl", ["analyze --as-seen"]),
        ("disclosures/search-warrant-amira.json", ["analyze"]),
    ],
)
@pytest.mark.parametrize("content", [DEEP, '{"t": ' + "9" * 5000 + "}"], ids=["nested", "long-int"])
def test_json_nested_too_deep_or_with_a_huge_integer_is_named(
    tmp_path: Path,
    tf_run: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    commands: list[str],
    content: str,
) -> None:
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    (run / name).write_text(content + "\n", encoding="utf-8")
    for command in commands:
        word, *rest = command.split()
        argv = (
            ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"]
            if word == "disclose"
            else [word, str(run), *rest]
        )
        refused(capsys, argv, name.rsplit("/", 1)[-1])


# --- the transcript ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "-Infinity", "1" + "0" * 400, '"ten"'])
def test_show_and_report_name_an_event_time_that_is_no_number(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """json.loads reads NaN and Infinity; the clocks then failed with ValueError or OverflowError."""
    run = copy_of(tf_run, tmp_path)
    n = edit_event(
        run, "message_accepted", lambda e: json.dumps({**e, "t": 0}).replace('"t": 0', f'"t": {value}')
    )
    for command in ("show", "report"):
        refused(capsys, [command, str(run)], "transcript.jsonl", f"line {n}: t: expected simulated seconds")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "-Infinity", "1" + "0" * 400, '"ten"'])
def test_the_views_read_an_event_time_that_is_no_number_as_read_run_does(tf_run: Path, value: str) -> None:
    """read_run refuses such a time first; a direct caller of the teaching view's rows (show_rows) or the
    HTML report's timeline (_timeline_rows) handing it Infinity or 1e400 got an OverflowError from the
    clock, caught by neither view's error for an event it cannot read (_UNREAD_ERRORS, _TIMELINE_ERRORS).
    Now both raise read_run's words, a ValueError each view's error catches."""
    from relaysim.sims.report import _UNREAD_ERRORS, first_unread, read_run, show_rows
    from relaysim.sims.reports.html import _TIMELINE_ERRORS, _timeline_rows

    events, _summary = read_run(tf_run)
    n = next(i for i, e in enumerate(events) if e["kind"] == "message_accepted")
    events[n] = {**events[n], "t": json.loads(value)}
    said = f"t: expected simulated seconds (a number), got {str(events[n]['t'])[:60]!r}"
    for view, errors in (
        (show_rows, _UNREAD_ERRORS),
        (lambda es: _timeline_rows(es, False), _TIMELINE_ERRORS),
    ):
        with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
            view(events)
        assert first_unread(events, view, errors) == n + 1  # the line read_run would have named


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("message_sent", lambda e: e.__delitem__("from"), "from: expected text, got nothing"),
        ("message_sent", lambda e: e.__setitem__("message", [1]), "message: expected an id"),
        ("message_sent", lambda e: e.__setitem__("plaintext", [["a"]]), "plaintext: expected text"),
        ("message_accepted", lambda e: e.__delitem__("message"), "message: expected an id"),
        ("message_accepted", lambda e: e.__setitem__("t", None), "t: expected a number"),
        ("message_accepted", lambda e: e.__setitem__("relay", "x"), "relay: expected a list of records"),
        ("message_accepted", lambda e: e.__setitem__("relay", [1, 2]), "relay: expected a list of records"),
        (
            "message_accepted",
            lambda e: e["relay"][0].__setitem__("time", "noon"),
            "relay[0]: time: expected a number",
        ),
        ("message_received", lambda e: e.__setitem__("device", 7), "device: expected text"),
        ("message_received", lambda e: "[1, 2]", "expected an event (a JSON object)"),
    ],
)
def test_analyze_and_report_name_a_transcript_field_of_the_wrong_type(
    tmp_path: Path,
    tf_run: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    change: Callable[[dict], object],
    field: str,
) -> None:
    """The scoring's reader of the transcript (analysis_scoring.read_truth) took every field on
    trust: KeyError, TypeError, AttributeError ... ended analyze and report as internal errors."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    n = edit_event(run, kind, change)
    refused(capsys, ["analyze", str(run)], f"transcript.jsonl: line {n}", field)
    refused(capsys, ["report", str(run)], "transcript.jsonl")


def test_analyze_names_the_line_of_a_transcript_that_is_not_utf8(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(tf_run, tmp_path)
    path = run / "transcript.jsonl"
    path.write_bytes(path.read_bytes().replace(b"Ben", b"B\xffn", 1))
    refused(capsys, ["analyze", str(run)], "transcript.jsonl: line 3: not UTF-8")


# --- provider.json, read by disclose ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("profile", ["signal"], "profile: expected a relay profile's name"),
        ("clock_epoch", float("nan"), "clock_epoch: expected Unix seconds"),
        ("clock_epoch", float("inf"), "clock_epoch: expected Unix seconds"),
        ("run_ended", None, "run_ended: expected Unix seconds"),
        ("run_ended", "late", "run_ended: expected Unix seconds"),
        ("run_ended", float("inf"), "run_ended: expected Unix seconds"),
        # a live run's relay clock: relay seconds per simulated second, and the run's own clock at t = 0
        ("time_scale", 0, "time_scale: expected real seconds per simulated second (a positive number)"),
        ("time_scale", -0.001, "time_scale: expected real seconds per simulated second"),
        ("time_scale", "fast", "time_scale: expected real seconds per simulated second"),
        ("time_scale", float("nan"), "time_scale: expected real seconds per simulated second"),
        ("time_scale", True, "time_scale: expected real seconds per simulated second"),
        ("scenario_epoch", "2026", "scenario_epoch: expected Unix seconds"),
        ("scenario_epoch", float("inf"), "scenario_epoch: expected Unix seconds"),
        ("geoip", [1, 2], "geoip: expected an object of address → region"),
        ("geoip", {"203.0.113.24": 5}, "geoip: expected an object of address → region"),
        ("content_keys", "k", "content_keys: expected a list of keys"),
        ("content_keys", None, "content_keys: expected a list of keys"),
        ("content_keys", [1], "content_keys: expected keys as relaysim writes them"),
        ("content_keys", [{"key_id": "k", "key": "zz", "holder": "provider"}], "content_keys: expected keys"),
        ("content_keys", [{"key_id": "k"}], "content_keys: expected keys"),
    ],
)
def test_disclose_names_a_provider_field_of_the_wrong_type(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], field: str, value: object, needle: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "relay.db").write_bytes((tf_run / "relay.db").read_bytes())
    provider = json.loads((tf_run / "provider.json").read_text(encoding="utf-8"))
    (run / "provider.json").write_text(json.dumps(provider | {field: value}), encoding="utf-8")
    refused(
        capsys,
        ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"],
        "provider.json",
        needle,
    )


# --- relay.db: what the readers take on trust -------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("UPDATE metadata SET time = 'noon' WHERE kind = 'send'", "time: expected a time"),
        ("UPDATE metadata SET time = x'00ff' WHERE kind = 'send'", "time: expected a time"),
        ("UPDATE metadata SET time = 1e308 * 10 WHERE kind = 'send'", "time: expected a time"),
        ("UPDATE metadata SET kind = 'zebra' WHERE seq = 3", "metadata row 3: kind: expected one of"),
        ("UPDATE metadata SET envelope_id = 7 WHERE envelope_id IS NOT NULL", "envelope_id: expected bytes"),
        ("UPDATE metadata SET account = x'ff00' WHERE account = 'ben'", "account: expected text"),
        ("ALTER TABLE metadata DROP COLUMN size", "no such column: size"),
        ("DROP TABLE contacts", "without its contacts table: damaged or changed by hand"),
    ],
)
def test_a_relay_store_with_rows_no_relay_writes_is_named_by_row_and_column(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], sql: str, needle: str
) -> None:
    run = copy_of(tf_run, tmp_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{run / 'relay.db'}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(run / "relay.db")
    con.execute(sql)
    con.commit()
    con.close()
    refused(capsys, ["analyze", str(run)], "relay.db", needle)
    if (
        "contacts" not in sql or "without" in needle
    ):  # disclose reads the contacts of its target only where asked for
        refused(
            capsys,
            ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"],
            "relay.db",
            needle,
        )


def test_a_relay_store_whose_schema_holds_text_that_is_not_utf8_is_named(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's sqlite3 decodes the names in SQLite's own schema (sqlite_master) as UTF-8, and a
    damaged relay.db's may be no UTF-8: a UnicodeDecodeError (a row's text that is not UTF-8 is
    SQLite's OperationalError, said already). analyze said its codec's words alone, naming no
    file; disclose said "internal error". Both now say the file cannot be read as a relay store."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    con = sqlite3.connect(run / "relay.db")
    con.execute('CREATE TABLE "x" (a)')
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET name = CAST(x'78ff' AS TEXT) WHERE name = 'x'")
    con.commit()
    con.close()
    said = "'utf-8' codec can't decode byte 0xff"
    refused(capsys, ["analyze", str(run)], f"{run / 'relay.db'}: cannot read it as a relay store ({said}")
    refused(
        capsys,
        ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"],
        f"--db {run / 'relay.db'}: cannot open it as a relay store: {said}",
    )


# --- relay-view.jsonl and disclosures ---------------------------------------------------------------


@pytest.mark.parametrize("time", ["Infinity", "NaN", "1e400"])
def test_analyze_as_seen_names_a_time_that_is_no_number(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], time: str
) -> None:
    run = copy_of(tf_run, tmp_path)
    path = run / "relay-view.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = '{"kind":"sealed_send","time":TIME,"recipient_account":"ben","host":"203.0.113.24"}'
    lines[1] = lines[1].replace("TIME", time)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refused(capsys, ["analyze", str(run), "--as-seen"], "relay-view.jsonl: line 2.time: expected a number")


@pytest.mark.parametrize("window", ["x", [1], ["a", "b"]])
def test_analyze_names_a_disclosure_window_that_is_not_two_times(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], window: object
) -> None:
    run = copy_of(tf_run, tmp_path)
    path = run / "disclosures" / "search-warrant-amira.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(data | {"window": window}), encoding="utf-8")
    refused(capsys, ["analyze", str(run)], "search-warrant-amira.json: window: expected [from, to]")


# --- report: the pages it reads from disclosures/ and analysis/ --------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("disclosures/search-warrant-amira.json", "[]", "search-warrant-amira.json: expected a disclosure"),
        # (sims.report.disclosure_problem: the first field it cannot read, named; it was a repr of a KeyError)
        (
            "disclosures/search-warrant-amira.json",
            '{"provided": "x"}',
            "search-warrant-amira.json: name: expected a",
        ),
        ("analysis/relay.json", "[]", "relay.json: expected an analysis page (a JSON object), got list"),
        # (it was "analysis holds a page this version of relaysim does not read", naming no field)
        (
            "analysis/relay.json",
            '{"analysis": "x", "score": "x"}',
            "relay.json: analysis: expected the analysis (an object), got 'x'; write it again with: relaysim analyze",
        ),
    ],
)
def test_report_names_a_page_of_another_shape(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, needle: str
) -> None:
    run = copy_of(tf_run, tmp_path)
    assert main(["analyze", str(run)]) == 0  # the report reads its pages, not the disclosures again
    capsys.readouterr()
    (run / name).write_text(content, encoding="utf-8")
    refused(capsys, ["report", str(run)], needle)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A finished run of a built-in scenario, made once for the module (a comparison, the chart, …)."""
    runs: dict[str, Path] = {}

    def run_of(scenario: str) -> Path:
        if scenario not in runs:
            out = tmp_path_factory.mktemp("made") / scenario
            assert main(["run", scenario, "--out", str(out), "--quiet"]) == 0
            runs[scenario] = out
        return runs[scenario]

    return run_of


@pytest.mark.parametrize(
    ("scenario", "name", "content", "needle"),
    [
        (
            "pakistan-2015",
            "comparison.json",
            "{}",
            "comparison.json: expected a JSON list of orders, got dict",
        ),
        ("pakistan-2015", "comparison.json", "[5]", "comparison.json: [0]: expected an object, got int"),
        ("pakistan-2015", "comparison.json", '[{"profiles": ["bes"]}]', "[0].profiles: expected an object"),
        (
            "pakistan-2015",
            "comparison.json",
            '[{"profiles": {"bes": 5}}]',
            "[0].profiles.bes: expected an object",
        ),
        (
            "pakistan-2015",
            "comparison.json",
            '[{"profiles": {"bes": {"provided": ["ip_addresses", 5]}}}]',
            "[0].profiles.bes.provided: expected a list of categories' names, got a list holding int",
        ),
        (
            "pakistan-2015",
            "comparison.json",
            '[{"profiles": {"bes": {"response": 7}}}]',
            "[0].profiles.bes.response: expected a string, got int",
        ),
        ("fbi-chart", "matrix.json", "[]", "matrix.json: expected a JSON object of profiles, got list"),
        ("fbi-chart", "matrix.json", '{"signal": 5}', "matrix.json: signal: expected an object of outcomes"),
        (
            "fbi-chart",
            "matrix.json",
            '{"signal": {"subpoena": {"provided": 5}}}',
            "signal.subpoena.provided:",
        ),
        (
            "key-escrow",
            "exceptional/key-escrow.json",
            '{"rows": 5}',
            "key-escrow.json: rows: expected a list",
        ),
    ],
)
def test_report_names_a_comparison_chart_or_exceptional_page_of_another_shape(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    name: str,
    content: str,
    needle: str,
) -> None:
    """comparison.json, matrix.json or exceptional/*.json edited into JSON of another shape: the
    report failed with AttributeError or TypeError (an internal error, exit 1), or (a comparison
    that is an object) showed no orders at all."""
    run = copy_of(made(scenario), tmp_path)
    (run / name).write_text(content, encoding="utf-8")
    refused(capsys, ["report", str(run)], needle)


@pytest.mark.parametrize(("value", "got"), [(5, "int"), ("bes", "str"), ([None], "a list holding NoneType")])
def test_report_names_a_comparisons_profiles_that_are_no_list_of_names(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str], value: object, got: str
) -> None:
    """A comparison's summary.json with compare_profiles edited: a number failed the report
    (TypeError, internal error), a string was read letter by letter (no profile's section shown)."""
    run = copy_of(made("pakistan-2015"), tmp_path)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    (run / "summary.json").write_text(json.dumps(summary | {"compare_profiles": value}), encoding="utf-8")
    refused(
        capsys,
        ["report", str(run)],
        f"summary.json: compare_profiles: expected a list of profiles' names, got {got}",
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [('"3h"', '"3h"'), ("[1]", "[1]"), ("true", "true"), ("1e400", "Infinity"), ("1" + "0" * 400, "1000")],
)
def test_report_names_a_run_length_that_is_no_number(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], value: str, got: str
) -> None:
    """summary.json's duration_s edited: a string or a list failed the report (ValueError or
    TypeError from float(), an internal error), and an integer past a float's range too (its hours)."""
    run = copy_of(tf_run, tmp_path)
    text = (run / "summary.json").read_text(encoding="utf-8")
    summary = json.loads(text)
    written = f'"duration_s": {json.dumps(summary["duration_s"])}'
    assert written in text
    (run / "summary.json").write_text(text.replace(written, f'"duration_s": {value}'), encoding="utf-8")
    refused(
        capsys,
        ["report", str(run)],
        f"summary.json: duration_s: expected the run's length in seconds, got {got}",
    )


@pytest.mark.parametrize(("value", "got"), [("Infinity", "Infinity"), ("NaN", "NaN"), ('"1h"', '"1h"')])
def test_report_names_an_order_served_at_a_time_that_is_no_number(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], value: str, got: str
) -> None:
    """A disclosure's served edited to Infinity: OverflowError (an internal error, exit 1); a
    string was left out of the page without a word."""
    run = copy_of(tf_run, tmp_path)
    path = run / "disclosures" / "search-warrant-amira.json"
    text = path.read_text(encoding="utf-8")
    written = f'"served": {json.dumps(json.loads(text)["served"])}'
    assert written in text
    path.write_text(text.replace(written, f'"served": {value}'), encoding="utf-8")
    refused(
        capsys,
        ["report", str(run)],
        "search-warrant-amira.json",
        f"served: expected a time in seconds, got {got}",
    )


def test_a_dated_runs_time_past_the_calendar_is_shown_as_seconds_not_a_crash(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dated run (pakistan-2015 starts on 2015-07-01) reads its times as dates: a disclosure's
    served edited to 1e300 failed the report (OverflowError from datetime: an internal error)."""
    run = copy_of(made("pakistan-2015"), tmp_path)
    path = next((run / "bes" / "disclosures").glob("*.json"))
    record = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(record | {"served": 1e300}), encoding="utf-8")
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert "Served at 1e+300 s (Unix time, past the calendar)" in (run / "report.html").read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize("content", ["{}", "[]"])
def test_chart_names_a_matrix_that_holds_no_provider(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """An emptied matrix.json printed a chart with no row and exited 0 (relaysim chart DIR prints
    the chart DIR holds without running it again)."""
    run = copy_of(made("fbi-chart"), tmp_path)
    (run / "matrix.json").write_text(content, encoding="utf-8")
    refused(capsys, ["chart", str(run), "--width", "100"], "matrix.json", "holds no provider", "--rerun")


def _drop(cell: dict[str, Any], key: str, category: str) -> None:
    cell[key].remove(category)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m["signal"].pop("wiretap"), "signal: expected an outcome for each of subpoena, "),
        (
            lambda m: m.pop("wire"),
            "expected a row for each provider (profile) it was run under; wire missing",
        ),
        (
            lambda m: m.update(nope=m["wire"]),
            "'nope': expected only the providers (profiles) it was run under",
        ),
        (lambda m: m["signal"].update(warrant={}), "signal: expected only subpoena, "),
        (
            lambda m: m["signal"].update(subpoena=None),
            "signal.subpoena: expected an object (the response and",
        ),
        (
            lambda m: m["signal"]["subpoena"].pop("response"),
            "signal.subpoena.response: expected one of complied, ",
        ),
        (lambda m: m["signal"]["subpoena"].update(response={}), "signal.subpoena.response: expected one of"),
        (
            lambda m: m["whatsapp"]["wiretap"].update(no_capability=0),
            "whatsapp.wiretap.no_capability: expected a list",
        ),
        (lambda m: m["whatsapp"]["wiretap"].update(no_capability=""), "got a string ('')"),
        (
            lambda m: m["whatsapp"]["wiretap"].pop("not_retained"),
            "whatsapp.wiretap.not_retained: expected a list of",
        ),
        (
            lambda m: m["line"]["subpoena"]["provided"].append("telepathy"),
            "line.subpoena.provided: expected categories a ",
        ),
        (lambda m: m["line"]["subpoena"]["provided"].append(float("nan")), "got a number (nan)"),
        (
            lambda m: m["line"]["subpoena"]["provided"].append(10**30),
            "got a number (1000000000000000000000000000000)",
        ),
        (
            lambda m: m["line"]["subpoena"]["provided"].append("content"),
            "'content'",
        ),  # a subpoena does not ask
        (
            lambda m: m["signal"]["subpoena"]["provided"].append("device_info"),
            "signal.subpoena.withheld_by_policy: device_info is there under provided too",
        ),
        (
            lambda m: _drop(m["signal"]["subpoena"], "withheld_by_policy", "device_info"),
            "signal.subpoena: device_info asked for, and neither provided nor held back for a reason",
        ),
    ],
)
def test_chart_names_the_entry_of_an_edited_matrix_that_is_wrong(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], object],
    needle: str,
) -> None:
    """``relaysim chart DIR`` prints the matrix.json there: an entry edited into another shape said
    "cannot be read as the chart (KeyError('wiretap'))", naming neither the entry nor what it should
    be, and a category taken out of a cell, put under two outcomes, or a list written as ``0`` or
    ``""``, was printed as the chart, the table saying what no provider's desk answered."""
    run = copy_of(made("fbi-chart"), tmp_path)
    matrix = json.loads((run / "matrix.json").read_text(encoding="utf-8"))
    edit(matrix)
    (run / "matrix.json").write_text(json.dumps(matrix), encoding="utf-8")
    refused(capsys, ["chart", str(run), "--width", "100"], f"{run / 'matrix.json'}: ", needle, "--rerun")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "matrix.json: not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b'{"signal": {"subp', "matrix.json: not JSON (Unterminated string"),
        (b"\xff\xfe{}", "matrix.json: not UTF-8 text (invalid start byte at byte 0)"),
        (b"NaN", "matrix.json: expected a JSON object of providers (profiles), got a number (nan)"),
        (b'"signal"', "got a string ('signal')"),
        (DEEP.encode(), "matrix.json: not JSON (nested too deeply to read"),
        (None, "cannot read"),  # a folder where the file belongs
    ],
)
def test_chart_on_a_matrix_that_is_no_json_object_says_what_it_is(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    needle: str,
) -> None:
    """It said "cannot be read as the chart (AttributeError("'float' object has no attribute
    'items'"))" and the like: Python's words."""
    run = copy_of(made("fbi-chart"), tmp_path)
    if content is None:
        (run / "matrix.json").unlink()
        (run / "matrix.json").mkdir()
        needle = f"{run / 'matrix.json'}: a folder stands where the chart writes its matrix; move it away"
    else:
        (run / "matrix.json").write_bytes(content)
    refused(capsys, ["chart", str(run), "--width", "100"], needle, "--rerun")
    assert "Error(" not in capsys.readouterr().err


def test_chart_rerun_with_a_folder_where_its_matrix_belongs_is_refused_before_it_runs(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``chart DIR --rerun`` with a folder at DIR/matrix.json ran every provider's run, removed the
    chart's other files, and then said "cannot write DIR/matrix.json: Is a directory"."""
    run = copy_of(made("fbi-chart"), tmp_path)
    (run / "matrix.json").unlink()
    (run / "matrix.json").mkdir()
    (run / "matrix.json" / "mine.txt").write_text("mine\n", encoding="utf-8")
    refused(capsys, ["chart", str(run), "--rerun"], f"{run / 'matrix.json'}: a folder stands where the chart")
    assert (run / "matrix.md").exists() and (run / "summary.json").exists()
    assert (run / "matrix.json" / "mine.txt").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda m: m.pop("wire"),
            "expected a row for each provider (profile) it was run under; wire missing",
        ),
        (lambda m: m["signal"].pop("wiretap"), "signal: expected an outcome for each of subpoena, "),
        (
            lambda m: m["line"]["subpoena"]["provided"].append("telepathy"),
            "line.subpoena.provided: expected categories",
        ),
        (
            lambda m: _drop(m["signal"]["subpoena"], "withheld_by_policy", "device_info"),
            "signal.subpoena: device_info asked for, and neither provided nor held back for a reason",
        ),
    ],
)
def test_report_names_the_entry_of_an_edited_matrix_as_chart_does(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], object],
    needle: str,
) -> None:
    """report drew a matrix.json with a provider or a process left out, a category that is none, or
    one taken out of a cell, as the chart: it checked only each entry's type."""
    run = copy_of(made("fbi-chart"), tmp_path)
    matrix = json.loads((run / "matrix.json").read_text(encoding="utf-8"))
    edit(matrix)
    (run / "matrix.json").write_text(json.dumps(matrix), encoding="utf-8")
    refused(capsys, ["report", str(run)], f"{run / 'matrix.json'}: {needle}")
    assert not (run / "report.html").exists()


def test_chart_markdown_that_is_not_utf8_is_named_not_an_internal_error(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(made("fbi-chart"), tmp_path)
    (run / "matrix.md").write_bytes(b"# chart\n\xff\n")
    refused(capsys, ["chart", str(run), "--markdown"], f"{run / 'matrix.md'}: not UTF-8 text", "--rerun")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda md: md.replace("| Signal (`signal`) | ", "| Signal (`signal`) | CONTENT, ", 1),
            "its tables are not those matrix.json holds, from table row 3: '| Signal (`signal`) | CONTENT, ",
        ),
        (
            lambda md: md + "| WhatsApp (`whatsapp`) | CONTENT | | | | |\n",
            "where the chart and its legend have",
        ),
        # the words around the tables were not held to anything: printed as the chart's
        (
            lambda md: md.replace("Every order was served on `", "Every order was served on `not-", 1),
            "its tables are the chart matrix.json holds, but not its words around them: line 5 is 'Every "
            "order was served on `not-tariq`",
        ),
        (
            lambda md: md.replace("CONTENT means the words", "CONTENT means nothing, not the words", 1),
            "where this relaysim writes 'Processes: ",
        ),
        (lambda md: md + "\nAll of it was handed over.\n", "lines, where this relaysim writes"),
    ],
    ids=["a-cell", "a-row-added", "its-target", "its-legend", "a-line-added"],
)
def test_chart_markdown_is_checked_against_the_matrix(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[str], str],
    needle: str,
) -> None:
    """chart --markdown printed matrix.md as it found it, unchecked (chart checks matrix.json): a
    hand-edited matrix.md was printed as the chart."""
    run = copy_of(made("fbi-chart"), tmp_path)
    md = run / "matrix.md"
    capsys.readouterr()
    assert main(["chart", str(run), "--markdown"]) == 0
    assert capsys.readouterr().out == md.read_text(encoding="utf-8")
    md.write_text(edit(md.read_text(encoding="utf-8")), encoding="utf-8")
    refused(capsys, ["chart", str(run), "--markdown"], f"{md}: ", needle, f"relaysim chart {run} --rerun")


def test_an_older_relaysims_chart_words_are_said_as_such_and_rerun_writes_them_anew(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A chart folder an older relaysim wrote, whose matrix.md words (not tables) differ from this
    relaysim's, was refused as "not the chart matrix.json holds (edited?)": its tables are the chart;
    the message says only the words differ, and the --rerun it advises makes the folder good."""
    run = copy_of(made("fbi-chart"), tmp_path)
    md = run / "matrix.md"
    now = md.read_text(encoding="utf-8")
    md.write_text(
        now.replace("Every order was served on `", "Every order was, long ago, served on `", 1),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["chart", str(run), "--markdown"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"relaysim chart: {md}: its tables are the chart matrix.json holds, but not its words around them: "
        "line 5 is 'Every order was, long ago, served on `tariq`. Each cell i'… (446 characters), where this "
        "relaysim writes 'Every order was served on `tariq`. Each cell is read off '… (435 characters) (an older "
        f"relaysim's words, or edited); run it again with: relaysim chart {run} --rerun, to write them anew\n"
    ), err
    assert main(["chart", str(run), "--rerun", "--markdown"]) == 0
    assert capsys.readouterr().out == md.read_text(encoding="utf-8") == now
    assert main(["chart", str(run), "--markdown"]) == 0


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda m: m["signal"]["subpoena"].update(response="refused"),
            "signal.subpoena.response is 'refused', but signal/disclosures/subpoena.json, the disclosure it is "
            "read off, says 'complied'",
        ),
        (
            lambda m: (
                m["whatsapp"]["search_warrant"]["provided"].remove("contacts"),
                m["whatsapp"]["search_warrant"]["not_retained"].append("contacts"),
            ),
            "whatsapp.search_warrant.provided is subscriber_info, account_created, last_seen, ip_addresses, "
            "reverse_contacts, blocked_users, but whatsapp/disclosures/search_warrant.json",
        ),
    ],
    ids=["a-response", "a-category-moved"],
)
@pytest.mark.parametrize("argv", [["chart"], ["chart", "--markdown"], ["report"]], ids=" ".join)
def test_a_matrix_cell_changed_to_another_valid_value_is_refused(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], object],
    needle: str,
    argv: list[str],
) -> None:
    """A cell of matrix.json given another valid value (Signal "refused" a subpoena; WhatsApp's address
    book "not retained") passed every check of the file, and chart and report showed it as the
    provider's answer: each cell is now held against the disclosure it was read off."""
    run = copy_of(made("fbi-chart"), tmp_path)
    matrix = json.loads((run / "matrix.json").read_text(encoding="utf-8"))
    edit(matrix)
    (run / "matrix.json").write_text(json.dumps(matrix), encoding="utf-8")
    refused(capsys, [argv[0], str(run), *argv[1:]], f"{run / 'matrix.json'}: {needle}")


@pytest.mark.parametrize("argv", [["chart"], ["chart", "--markdown"], ["report"]], ids=" ".join)
def test_the_summarys_copy_of_the_matrix_is_held_to_matrix_json(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """summary.json keeps a copy of the chart, which chart and report never read back against
    matrix.json: a copy edited (Signal "refused" a subpoena) was kept as the run's."""
    run = copy_of(made("fbi-chart"), tmp_path)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary["matrix"]["signal"]["subpoena"]["response"] = "refused"
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    refused(
        capsys,
        [argv[0], str(run), *argv[1:]],
        f"{summary_file}: matrix.signal.subpoena: not as matrix.json has it (edited?)",
    )
    summary["matrix"]["signal"]["subpoena"]["response"] = "complied"
    summary["matrix"]["someone"] = {}
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    refused(capsys, [argv[0], str(run), *argv[1:]], "matrix: 'someone' is no profile of matrix.json")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize(
    ("name", "argv", "needle"),
    [
        ("matrix.md", ["--markdown"], "matrix.md: not a regular file (a pipe)"),
        ("summary.json", ["--markdown"], "summary.json: not a regular file (a pipe)"),
        (
            "signal/disclosures/subpoena.json",
            [],
            "signal.subpoena: signal/disclosures/subpoena.json, the disclosure it is read off, is not a regular "
            "file (a pipe)",
        ),
    ],
)
def test_chart_refuses_a_named_pipe_where_it_reads_a_file(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    name: str,
    argv: list[str],
    needle: str,
) -> None:
    """chart --markdown read matrix.md whatever it was: a named pipe nothing writes to held it for ever
    (as would the files the chart is now checked against)."""
    import threading

    run = copy_of(made("fbi-chart"), tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    capsys.readouterr()
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(main(["chart", str(run), *argv])), daemon=True)
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():  # (let it go: a writer opens the pipe and closes it, the reader sees its end)
        os.close(os.open(run / name, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(timeout=10)
    err = capsys.readouterr().err
    assert status == [2] and needle in err and "--rerun" in err, (status, err)


def _main_unless_it_hangs(argv: list[str], pipe: Path) -> list[int]:
    """``main(argv)``'s status, run in a thread; [] if it is still waiting after a minute (then let
    go: a writer opens ``pipe`` and closes it, and the reader waiting in open() sees its end)."""
    import threading

    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(main(argv)), daemon=True)
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(timeout=10)
        return []
    return status


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize(
    "name", ["provider.json", "disclosures/pen-register-amira.json", "relay-view.jsonl", "summary.json"]
)
@pytest.mark.parametrize("argv", [["analyze"], ["analyze", "--as-seen"], ["report"], ["show"]], ids=" ".join)
def test_a_named_pipe_in_a_run_folder_is_refused_not_waited_on(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, argv: list[str]
) -> None:
    """A run folder with a named pipe for one of its files (nothing writing to it) held analyze and
    report in open() for ever (cli13's fuzz: provider.json, a disclosure's .json, relay-view.jsonl)."""
    run = copy_of(tf_run, tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    capsys.readouterr()
    status = _main_unless_it_hangs([argv[0], str(run), *argv[1:]], run / name)
    err = capsys.readouterr().err
    assert status == [2], (status, err)
    assert f"{run / name}: not a regular file (a pipe), where a run keeps the files relaysim wrote" in err, (
        err
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_disclose_refuses_a_named_pipe_for_the_provider_file(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(tf_run, tmp_path)
    (run / "provider.json").unlink()
    os.mkfifo(run / "provider.json")
    capsys.readouterr()
    argv = ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"]
    status = _main_unless_it_hangs(argv, run / "provider.json")
    err = capsys.readouterr().err
    assert status == [2] and f"{run / 'provider.json'}: not a regular file (a pipe)" in err, (status, err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize(
    ("suffix", "what"), [("-wal", "not a regular file (a pipe)"), ("-shm", "a folder, not a file")]
)
def test_disclose_refuses_a_pipe_or_a_folder_beside_the_store(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, what: str
) -> None:
    """disclose copies relay.db and its -wal and -shm to serve the order on: a pipe at relay.db-wal was
    read (read_bytes), and waited on for ever; a folder was "Is a directory; check its permissions"."""
    run = copy_of(tf_run, tmp_path)
    beside = run / f"relay.db{suffix}"
    os.mkfifo(beside) if suffix == "-wal" else beside.mkdir()
    capsys.readouterr()
    argv = ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"]
    status = _main_unless_it_hangs(argv, beside)
    err = capsys.readouterr().err
    assert status == [2] and f"cannot read {beside}: {what}\n" in err, (status, err)


def _first_bes_outcome(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(row["profiles"]["bes"] for row in rows if "bes" in row["profiles"])


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda rows: _first_bes_outcome(rows).update(response="refused", history=["refused"]),
            ".response is 'refused', but bes/disclosures/",
        ),
        (
            lambda rows: _first_bes_outcome(rows).update(response="sold"),
            ".response: expected one of complied",
        ),
        (
            lambda rows: _first_bes_outcome(rows)["provided"].append("telepathy"),
            ".provided: expected categories",
        ),
        (
            lambda rows: _first_bes_outcome(rows)["cryptographically_impossible"].append("content"),
            "content is there twice",
        ),
        (
            lambda rows: _first_bes_outcome(rows).update(history=["complied", "refused"]),
            ".history: ends in 'refused'",
        ),
        (lambda rows: rows[0].update(process="telepathy"), "[0].process: expected a kind of legal process"),
        (
            lambda rows: rows[0]["profiles"].update(acme=rows[0]["profiles"]["bes"]),
            "expected a relay profile's name",
        ),
        (lambda rows: rows.append(rows[0]), "[2].name: 'pta-blanket-demand' is there twice"),
    ],
    ids=[
        "response-valid",
        "response-unknown",
        "category-none",
        "category-twice",
        "history",
        "process",
        "profile",
        "twice",
    ],
)
def test_report_checks_a_comparisons_values_not_only_their_types(
    tmp_path: Path,
    made: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[list[dict[str, Any]]], object],
    needle: str,
) -> None:
    """comparison.json was checked for types only (html._comparison_data): a response relaysim never
    gives, a category of no process or under two outcomes, an unknown operator or process, an order
    twice, or a response changed to another valid one were drawn as the operators' answers."""
    run = copy_of(made("pakistan-2015"), tmp_path)
    rows = json.loads((run / "comparison.json").read_text(encoding="utf-8"))
    edit(rows)
    (run / "comparison.json").write_text(json.dumps(rows), encoding="utf-8")
    refused(capsys, ["report", str(run)], f"{run / 'comparison.json'}: ", needle)
    assert not (run / "report.html").exists()


@pytest.mark.parametrize("rerun", [[], ["--rerun"]])
def test_chart_says_its_matrix_is_a_dangling_link(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str], rerun: list[str]
) -> None:
    """A chart's folder whose matrix.json is a link to nothing was said to hold "another run
    (fbi-chart)": it holds the chart's run, and a link where its matrix was."""
    run = copy_of(made("fbi-chart"), tmp_path)
    (run / "matrix.json").unlink()
    (run / "matrix.json").symlink_to(tmp_path / "gone.json")
    refused(
        capsys,
        ["chart", str(run), "--width", "100", *rerun],
        f"{run} holds matrix.json, a dangling symbolic link (to {tmp_path / 'gone.json'}, which does not exist), "
        "not the chart;",
        "--force",
    )
    assert not (tmp_path / "gone.json").exists()


def test_chart_says_its_run_has_no_matrix(
    tmp_path: Path, made: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """... and a chart's run without its matrix.json was "another run (fbi-chart)" too."""
    run = copy_of(made("fbi-chart"), tmp_path)
    (run / "matrix.json").unlink()
    refused(
        capsys,
        ["chart", str(run), "--rerun"],
        "holds a run of fbi-chart without its matrix.json, not the chart",
    )


# --- files of different runs side by side -----------------------------------------------------------


def _warnings(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"relaysim {command}: warning: ")]


@pytest.mark.parametrize("command", ["show", "report", "analyze"])
def test_a_folder_holding_files_of_two_runs_is_warned_about_naming_the_files(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """summary.json of one run beside the transcript and relay-view.jsonl of another: each command
    read them as one run, and said nothing."""
    other = tmp_path / "other"
    assert main(["run", "relay-swaps-identity", "--out", str(other), "--quiet"]) == 0
    run = copy_of(tf_run, tmp_path)
    for name in ("transcript.jsonl", "relay-view.jsonl"):
        shutil.copyfile(other / name, run / name)
    capsys.readouterr()
    assert main([command, str(run)]) == 0
    said = _warnings(capsys.readouterr().err, command)
    assert len(said) == 2, said
    transcript, view = said
    assert f"{run / 'transcript.jsonl'} holds 5 message_accepted and 4 message_received events" in transcript
    assert f"{run / 'summary.json'} counts 12 messages accepted by the relay and 12 deliveries" in transcript
    assert f"{run / 'relay-view.jsonl'} holds 42 records, but {run / 'summary.json'} counts 85" in view
    assert all("different runs" in line for line in said), said


def test_an_emptied_transcript_beside_its_summary_is_warned_about(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show printed an empty conversation, as if nothing had happened."""
    run = copy_of(tf_run, tmp_path)
    (run / "transcript.jsonl").write_bytes(b"")
    assert main(["show", str(run)]) == 0
    (said,) = _warnings(capsys.readouterr().err, "show")
    assert said.startswith(f"relaysim show: warning: {run / 'transcript.jsonl'} is empty (0 bytes), but ")
    assert f"{run / 'summary.json'} counts 12 messages accepted by the relay and 12 deliveries" in said


@pytest.mark.parametrize("as_seen", [[], ["--as-seen"]])
def test_analyze_reads_the_transcript_once(
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_seen: list[str],
) -> None:
    """analyze parsed transcript.jsonl twice: whole, to check its counts against summary.json
    (sims.report.run_disagreements), then line by line for the scoring (read_truth). Once it is
    read, both have what they need; what analyze writes and prints is the same. Every opening of
    the file, through pathlib, open() or os.open() (sims.analysis.runfiles.open_run_file), is counted."""
    import builtins

    run = copy_of(tf_run, tmp_path)
    transcript = run / "transcript.jsonl"
    opened: list[str] = []
    path_open, builtin_open, os_open = Path.open, builtins.open, os.open

    def counted_path_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == transcript.name:
            opened.append(str(self))
        return path_open(self, *args, **kwargs)

    def counted_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).name == transcript.name:
            opened.append(str(file))
        return builtin_open(file, *args, **kwargs)

    def counted_os_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).name == transcript.name:
            opened.append(str(file))
        return os_open(file, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted_path_open)
    monkeypatch.setattr(builtins, "open", counted_open)
    monkeypatch.setattr(os, "open", counted_os_open)
    assert main(["analyze", str(run), *as_seen]) == 0
    monkeypatch.undo()
    assert opened == [str(transcript)], opened
    assert "warning" not in capsys.readouterr().err
    # and a transcript of another run beside the summary is still found out, from that one reading
    lines = transcript.read_bytes().splitlines(keepends=True)
    transcript.write_bytes(b"".join(line for line in lines if b'"message_received"' not in line))
    assert main(["analyze", str(run), *as_seen]) == 0
    (said,) = _warnings(capsys.readouterr().err, "analyze")
    assert f"{transcript} holds 12 message_accepted and 0 message_received events" in said, said
    transcript.write_bytes(b"")
    assert main(["analyze", str(run), *as_seen]) == 0
    (said,) = _warnings(capsys.readouterr().err, "analyze")
    assert said.startswith(f"relaysim analyze: warning: {transcript} is empty (0 bytes), but "), said


def test_a_message_holding_a_unicode_line_separator_is_read_back_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """transcript.jsonl keeps U+2028, U+2029 and U+0085 (NEL) as they are inside its strings (JSON
    needs no escape for them), and show and report split it with str.splitlines, which breaks lines
    at them too: a run whose message held one was refused as "line 3 is not valid JSON ... cut
    short while writing it, or the file was damaged"."""
    from relaysim.sims.scenario import builtin_scenarios

    text = builtin_scenarios()["two-friends"].read_text(encoding="utf-8")
    said = "Hi Ben, did the documents arrive?"
    assert said in text
    scenario = tmp_path / "separators.toml"
    scenario.write_text(text.replace(said, "Hi Ben,\\u2028did the\\u0085documents\\u2029arrive?"), "utf-8")
    run = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(run), "--quiet"]) == 0
    assert "\u2028" in (run / "transcript.jsonl").read_text(encoding="utf-8")
    capsys.readouterr()
    for command in ("show", "report", "analyze"):
        assert main([command, str(run)]) == 0, capsys.readouterr().err
        assert capsys.readouterr().err == "", command


def test_a_relay_view_without_its_last_line_break_counts_that_line(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(tf_run, tmp_path)
    view = run / "relay-view.jsonl"
    view.write_bytes(view.read_bytes().rstrip(b"\n"))
    assert main(["show", str(run)]) == 0
    assert _warnings(capsys.readouterr().err, "show") == []


@pytest.mark.parametrize("command", ["show", "report", "analyze"])
def test_a_run_as_relaysim_wrote_it_has_no_warning(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    run = copy_of(tf_run, tmp_path)
    assert main([command, str(run)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_copy_left_by_a_killed_write_is_removed_by_the_next_write_of_its_file(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runfiles.write_whole writes a copy beside its file and renames it over the file; a process
    killed between the two (SIGKILL: nothing runs to remove it) left ``.NAME.xxxxxxxx.tmp`` in the
    run's folder for good. The next write of the same file removes the copies of its name that no
    write holds; a copy another write still holds, and names of other patterns, are left alone."""
    import os
    import signal
    import subprocess
    import sys

    fcntl = pytest.importorskip("fcntl", reason="copies are told stale by flock, which Windows lacks")
    run = copy_of(tf_run, tmp_path)
    assert main(["analyze", str(run)]) == 0
    folder = run / "analysis"
    # a writer killed between making its copy and renaming it, as a real process is
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # the copy as write_whole names it: tempfile.mkstemp's name, ".relay.json.xxxxxxxx.tmp"
            "import os, sys, tempfile\n"
            "fd, tmp = tempfile.mkstemp(prefix='.relay.json.', suffix='.tmp', dir=sys.argv[1])\n"
            "os.write(fd, b'half')\nprint(tmp, flush=True)\nsys.stdin.read()",
            str(folder),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    killed = Path(child.stdout.readline().strip())
    assert killed.parent == folder and killed.name.startswith(".relay.json."), killed
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert killed.exists()
    held_copy = folder / ".relay.json.h0ld1ng_.tmp"  # a write of the same file under way: locked
    held_copy.write_text("under way", encoding="utf-8")
    held = os.open(held_copy, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    others = [
        folder / ".relay.json.short.tmp",
        folder / ".summary.json.abcdefgh.tmp",
        folder / "relay.json.tmp",
    ]
    for other in others:
        other.write_text("not a copy of relay.json", encoding="utf-8")
    try:
        assert main(["analyze", str(run)]) == 0
    finally:
        os.close(held)
    capsys.readouterr()
    assert not killed.exists()
    assert held_copy.exists()
    assert all(other.exists() for other in others)
    assert json.loads((folder / "relay.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("command", ["analyze", "analyze --as-seen", "report", "disclose"])
def test_a_clock_epoch_too_large_for_a_number_is_named(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """provider.json's clock_epoch as an integer past a float's range (JSON holds one): analyze and
    report checked it with math.isfinite, which raised OverflowError, an internal error. It is now
    refused as NaN is, naming the file and the field, its digits not all shown."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    provider = json.loads((run / "provider.json").read_text(encoding="utf-8"))
    (run / "provider.json").write_text(json.dumps(provider | {"clock_epoch": 10**400}), encoding="utf-8")
    word, *rest = command.split()
    argv = (
        ["disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"]
        if word == "disclose"
        else [word, str(run), *rest]
    )
    refused(
        capsys,
        argv,
        "provider.json: clock_epoch: expected Unix seconds (a number), got an integer of 401 digits",
    )
    assert main(argv) == 2
    assert "0" * 20 not in capsys.readouterr().err  # (by how many digits: sims.analysis.runfiles.brief)


@pytest.mark.parametrize("command", ["analyze", "report"])
@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        (
            "time_scale",
            0,
            "time_scale: expected real seconds per simulated second (a positive number), got 0",
        ),
        ("time_scale", "fast", "time_scale: expected real seconds per simulated second"),
        (
            "scenario_epoch",
            10**400,
            "scenario_epoch: expected Unix seconds (a number), got an integer of 401 digits",
        ),
    ],
    ids=["time_scale-0", "time_scale-a-word", "scenario_epoch-past-a-float"],
)
def test_a_live_runs_relay_clock_that_cannot_be_read_is_named(
    tmp_path: Path,
    tf_run: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    field: str,
    value: object,
    said: str,
) -> None:
    """A live run's provider.json says how its relay's clock (the wall clock) reads on the run's
    (time_scale, scenario_epoch: sims.report.relay_clock); analyze and report name the field of one they
    cannot read, as disclose does, not a ZeroDivisionError or a TypeError."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    provider = json.loads((run / "provider.json").read_text(encoding="utf-8"))
    (run / "provider.json").write_text(
        json.dumps(provider | {"time_scale": 0.5, "scenario_epoch": provider["clock_epoch"], field: value}),
        encoding="utf-8",
    )
    refused(capsys, [command, str(run)], f"provider.json: {said}")


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_live_runs_time_scale_without_its_relays_clock_at_the_start_is_named(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A time_scale with no clock_epoch (no provider.json a live run writes) was read against the
    simulator's own start (SIM_EPOCH), saying nothing; it is named, as a field of the wrong type is."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    provider = json.loads((run / "provider.json").read_text(encoding="utf-8"))
    del provider["clock_epoch"]
    (run / "provider.json").write_text(json.dumps(provider | {"time_scale": 0.5}), encoding="utf-8")
    refused(
        capsys,
        [command, str(run)],
        "provider.json: clock_epoch: expected the relay's clock at the run's start (Unix seconds) beside "
        "time_scale, got nothing",
    )


# --- the readers a Python caller calls: a FIFO, socket or device in a run's folder ------------------


def _readers() -> list[tuple[str, str, Callable[[Path], object]]]:
    """(the file made a FIFO, the reader's name, a call of it on the run's folder): the functions of
    sims/ that read a file in a run's folder, which the commands check first and a Python caller
    (a notebook, a script) did not."""
    from relaysim.sims import counterfactual, defences, demo, matrix, report, sweep
    from relaysim.sims.analysis import run as analysis_run
    from relaysim.sims.analysis import traits, view
    from relaysim.sims.analysis_scoring import read_truth
    from relaysim.sims.reports import html

    return [
        ("transcript.jsonl", "analysis_scoring.read_truth", lambda r: read_truth(r / "transcript.jsonl")),
        ("transcript.jsonl", "report.read_run", report.read_run),
        ("summary.json", "report.read_run (summary)", report.read_run),
        ("provider.json", "report.run_calendar", report.run_calendar),
        (
            "relay-view.jsonl",
            "analysis.view.from_relay_view",
            lambda r: view.from_relay_view(r / "relay-view.jsonl"),
        ),
        ("d.json", "analysis.view.from_disclosure", lambda r: view.from_disclosure(r / "d.json")),
        ("d.json", "analysis.traits.read_directory", lambda r: traits.read_directory(r / "d.json")),
        ("provider.json", "analysis.run._provider", analysis_run._provider),
        ("summary.json", "defences.measure", defences.measure),
        ("provider.json", "demo.render_inference", demo.render_inference),
        ("disclosures/x.json", "counterfactual._disclosure", lambda r: counterfactual._disclosure(r, "x")),
        ("d.json", "reports.html._load", lambda r: html._load(r / "d.json")),
        ("d.json", "sweep._saved_summary", lambda r: sweep._saved_summary(r / "d.json", "k")),
        ("summary.json", "matrix._disclosure", lambda r: matrix._disclosure(r, "subpoena", None)),
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize(("made", "name", "read"), _readers(), ids=[r[1] for r in _readers()])
def test_a_reader_of_a_run_folder_refuses_a_named_pipe_not_waits_on_it(
    tf_run: Path, tmp_path: Path, made: str, name: str, read: Callable[[Path], object]
) -> None:
    """Each opened the file as it found it: a named pipe was waited on for ever (a writer never
    comes), by a caller that is not a command (the commands check the folder's files first). They
    share one check (sims.analysis.runfiles.open_run_file): a regular file, at most MAX_RUN_FILE
    bytes, else an error that says what it is. (A thread reads: a hang fails the join, and a writer
    opened once lets it go.)"""
    import threading

    run = copy_of(tf_run, tmp_path)
    fifo = run / made
    fifo.parent.mkdir(exist_ok=True)
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(read(run))
        except Exception as exc:  # (each reader's own error type: said below)
            outcome.append(exc)

    reader = threading.Thread(target=call, daemon=True)
    reader.start()
    reader.join(timeout=30)
    hung = reader.is_alive()
    if hung:  # (let it go: a writer opened and closed ends its open, then its read)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert not hung, f"{name} waited on the named pipe {made}"
    said = outcome[0]
    text = " ".join(str(x) for x in said) if isinstance(said, tuple) else str(said)
    assert "not a regular file (a pipe)" in text, (name, said)


def test_a_run_file_past_the_most_read_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relaysim.sims.analysis import runfiles

    path = tmp_path / "summary.json"
    path.write_text('{"a": 1}', encoding="utf-8")
    assert runfiles.read_run_text(path) == '{"a": 1}'
    with pytest.raises(OSError, match=r"8 bytes, more than a run's file holds \(at most 7 are read\)") as exc:
        runfiles.read_run_file(path, limit=7)
    assert exc.value.filename == str(path)
    for where, said in (
        (tmp_path, "a folder, not a file"),
        (Path("/dev/zero"), r"not a regular file \(a device\)"),
    ):
        with pytest.raises(OSError, match=said):
            runfiles.read_run_file(where)


@pytest.mark.parametrize(
    ("name", "command", "said"),
    [
        ("relay.db", "analyze", "relay.db: a folder; expected a run's relay.db"),
        ("relay.db", "report", "relay.db: a folder; expected a run's relay.db"),
        ("summary.json", "report", "summary.json cannot be read (a folder, not a file)"),
    ],
)
def test_a_folder_where_a_run_keeps_a_file_is_said_to_be_one(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, command: str, said: str
) -> None:
    """A folder at relay.db was "has no relay.db" (analyze) or "no such file" (report), and at
    summary.json "holds no finished run (no summary.json)": the file is there, and is a folder."""
    run = copy_of(tf_run, tmp_path)
    (run / name).unlink()
    (run / name).mkdir()
    refused(capsys, [command, str(run)], f"{run / said}" if said.startswith(name) else said)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [("people", "xxx", "'xxx'"), ("devices", -2, "-2"), ("seed", [7], "[7]"), ("people", True, "True")],
)
def test_report_names_a_summary_count_that_is_no_whole_number(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: object, shown: str
) -> None:
    """summary.json's seed, people and devices were put in the report's lead as they were: "Seed
    [7], xxx people on -2 devices" was shown as the run's."""
    run = copy_of(tf_run, tmp_path)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary[key] = value
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    refused(
        capsys, ["report", str(run)], f"{summary_file}: {key}: expected a whole number from 0, got {shown}"
    )


@pytest.mark.parametrize(
    ("made", "said"),
    [
        ("folder", "cannot read {summary}: a folder, not a file"),
        ("[1", "{summary} is not valid JSON"),
        ("[1]", "{summary}: expected a JSON object, got list"),
    ],
)
def test_analyze_refuses_a_summary_it_cannot_read_not_skips_its_check(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], made: str, said: str
) -> None:
    """analyze checks transcript.jsonl and relay-view.jsonl against summary.json's counts
    (sims.report.run_disagreements), which swallowed a summary.json it could not read: a folder
    there, or a file that is not JSON, and the check was skipped, analyze exiting 0 saying nothing.
    It is refused, naming the file, before anything is written. (No summary.json at all, an
    interrupted run, is analysed as it was.)"""
    run = copy_of(tf_run, tmp_path)
    summary = run / "summary.json"
    summary.unlink()
    if made == "folder":
        summary.mkdir()
    else:
        summary.write_text(made, encoding="utf-8")
    refused(capsys, ["analyze", str(run)], said.format(summary=summary))
    assert not (run / "analysis").exists()
    shutil.rmtree(summary) if summary.is_dir() else summary.unlink()
    assert main(["analyze", str(run)]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["show", "report"])
def test_show_and_report_refuse_a_transcript_past_the_most_they_read(
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """show and report read transcript.jsonl whole into memory, then split it, then held every
    event (a scale run's transcript is gigabytes): it is read line by line, and one larger than
    sims.report.MAX_TRANSCRIPT is refused naming the file and its size (here, a small bound)."""
    from relaysim.sims import report

    run = copy_of(tf_run, tmp_path)
    transcript = run / "transcript.jsonl"
    size = transcript.stat().st_size
    monkeypatch.setattr(report, "MAX_TRANSCRIPT", size - 1)
    refused(
        capsys,
        [command, str(run)],
        f"cannot read {transcript}: {size:,} bytes, more than show and report read (at most {size - 1:,}: "
        f"they hold every event in memory; at about 1,930 bytes a message, a run of some {(size - 1) // 1930:,} "
        f"messages); relaysim analyze {run} reads a transcript of any size, or make the run smaller to show or "
        "report it (fewer people under [generate], or a shorter [scenario] duration)",
    )
    monkeypatch.setattr(report, "MAX_TRANSCRIPT", size)
    assert main([command, str(run)]) == 0


def test_the_transcripts_bytes_per_message_are_as_measured_and_a_million_messages_do_not_fit(
    tf_run: Path,
) -> None:
    """MAX_TRANSCRIPT (512 MiB) was never set against a city-sized run: at the bytes per message
    measured (sims.report.TRANSCRIPT_BYTES_PER_MESSAGE, held here to a run's within a factor of 1.5),
    a run of 1,000,000 messages writes some 1.9 GB, which show and report refuse, saying what to do."""
    from relaysim.sims import report

    planned = json.loads((tf_run / "summary.json").read_text(encoding="utf-8"))["messages"]["planned"]
    per = (tf_run / "transcript.jsonl").stat().st_size / planned
    assert report.TRANSCRIPT_BYTES_PER_MESSAGE / 1.5 <= per <= report.TRANSCRIPT_BYTES_PER_MESSAGE * 1.5, per
    assert 250_000 < report.MAX_TRANSCRIPT // report.TRANSCRIPT_BYTES_PER_MESSAGE < 1_000_000


def test_a_transcript_is_read_line_by_line_as_it_was_read_whole(tf_run: Path, tmp_path: Path) -> None:
    """transcript.jsonl is read a line at a time (sims.report.transcript_lines), never whole, with
    the lines it had read whole: split at line feeds alone (not at U+2028 inside a message), its
    line ends "\\r\\n" read as line ends, its last line without one read, and nothing past it. A
    bare "\\r" is no line end, as analyze (read_truth) reads the file: the two numbered the lines
    after one differently."""
    from relaysim.sims.report import RunFolderError, read_run, transcript_lines

    run = copy_of(tf_run, tmp_path)
    transcript = run / "transcript.jsonl"
    whole, _summary = read_run(run)
    lines = transcript.read_bytes().split(b"\n")[:-1]
    transcript.write_bytes(b"\r\n".join(lines[:3]) + b"\n" + b"\n".join(lines[3:]))  # (no last line end)
    assert read_run(run)[0] == whole
    transcript.write_bytes(b"\r\n".join(lines[:3]) + b"\r" + b"\n".join(lines[3:]))
    with pytest.raises(RunFolderError, match=": line 3: not valid JSON"):
        read_run(run)
    transcript.write_bytes('{"t": 0, "kind": "x", "text": "a\u2028b"}\n\n'.encode())
    assert list(transcript_lines(transcript)) == [(1, '{"t": 0, "kind": "x", "text": "a\u2028b"}'), (2, "")]


@pytest.mark.parametrize("command", ["show", "report"])
def test_a_suggested_command_names_a_folder_whose_name_is_not_the_locales_text(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A folder named with a byte not in the locale's encoding (``$'\\xff'``) or a control character
    was shown in the command an error suggests as one_line shows it, ``--out r\\xff``: pasted, that is
    the folder "rxff" (or, quoted, the four characters), never the one given. It is a shell word
    that names it (sims.analysis.runfiles.shell_word), read back by bash and by POSIX sh (dash): ANSI-C
    quoting, ``--out r$'\\xff'``, was bash's alone (dash read it as other characters)."""
    import shlex
    import shutil as sh
    import subprocess

    from relaysim.sims.analysis.runfiles import shell_word

    run = tmp_path / os.fsdecode(b"r\xff\x1b")
    run.mkdir()
    shutil.copy(tf_run / "transcript.jsonl", run)
    status = main([command, str(run)])
    err = capsys.readouterr().err
    assert status == 2, err
    word = shell_word(run)
    assert f"--out {word}" in err, err
    assert word == shlex.quote(str(tmp_path) + "/r") + "\"$(printf '\\377\\033')\"", err
    shells = [s for s in ("bash", "dash", "sh") if sh.which(s)]
    assert shells
    for shell in shells:  # (the word, pasted, is the folder's name, byte for byte)
        said = subprocess.run([shell, "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
        assert said == os.fsencode(run), shell
    # a line break anywhere in the name, even last (a command substitution drops those it ends with)
    for name in ("a\nb", "a\n\n", "\x1b'%\\\u00e9"):
        for shell in shells:
            said = subprocess.run(
                [shell, "-c", f"printf %s {shell_word(tmp_path / name)}"], capture_output=True, check=True
            ).stdout
            assert os.path.normpath(said) == os.fsencode(tmp_path / name), (shell, name)
    assert shell_word(tmp_path / "a b") == shlex.quote(str(tmp_path / "a b"))  # (as shlex.quote had it)


@pytest.mark.parametrize("command", ["show", "analyze", "report"])
def test_a_folder_where_the_relay_records_belong_is_warned_about_not_passed_over(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """summary.json's relay_records are checked against relay-view.jsonl's lines
    (sims.report.run_disagreements); a folder there was passed over, as if the run had none (a
    --live run's), saying nothing. It is said, naming both files. (No relay-view.jsonl at all is
    as it was: no warning.)"""
    run = copy_of(tf_run, tmp_path)
    view = run / "relay-view.jsonl"
    view.unlink()
    assert main([command, str(run)]) == 0
    assert "warning" not in capsys.readouterr().err
    view.mkdir()
    assert main([command, str(run)]) == 0
    (said,) = _warnings(capsys.readouterr().err, command)
    assert f"{view} is a folder, not a file of relay records: the " in said, said
    assert f"relay records {run / 'summary.json'} counts were not checked against it" in said, said


@pytest.mark.parametrize("content", ["{", "\udcff"])
def test_report_says_analyze_writes_again_a_page_it_cannot_read(
    tmp_path: Path, tf_run: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """An analysis page (analysis/NAME.json) report cannot read said "run the scenario again with
    --force", which replaces the whole run; relaysim analyze writes the page, and is the command to
    run again (as for a page of another shape)."""
    run = copy_of(tf_run, tmp_path)
    assert main(["analyze", str(run)]) == 0
    capsys.readouterr()
    page = run / "analysis" / "relay.json"
    page.write_bytes(content.encode("utf-8", "surrogateescape"))
    refused(
        capsys,
        ["report", str(run)],
        f"{page} is not valid JSON (",
        "): relaysim analyze was cut short while writing it, or the file was damaged; write it again with: "
        f"relaysim analyze {run}",
    )


@pytest.mark.parametrize("folder", ["disclosures", "analysis"])
@pytest.mark.parametrize("command", ["analyze", "report"])
@pytest.mark.parametrize("what", ["file", "dangling link"])
def test_a_file_where_a_runs_own_folder_belongs_is_refused_naming_it(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str, command: str, what: str
) -> None:
    """A file (or a symbolic link to nothing) where a run keeps disclosures/ or analysis/ was passed
    over by ``report`` and ``analyze``, as if the run had none: a report saying "No legal order was
    served in this run" of a run that served three, an analysis of no disclosure, saying nothing
    (analyze's analysis/ alone said "File exists" as it wrote). It is refused naming the path, and
    nothing is written."""
    run = copy_of(tf_run, tmp_path)
    shutil.rmtree(run / folder, ignore_errors=True)
    if what == "file":
        (run / folder).write_text("not a folder\n", encoding="utf-8")
    else:
        (run / folder).symlink_to(tmp_path / "nowhere")
    before = sorted(p.name for p in run.iterdir())
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err
    said = "a file" if what == "file" else f"a symbolic link to {tmp_path / 'nowhere'}, which does not exist"
    assert (
        f"relaysim {command}: {run / folder}: {said} stands where a folder belongs (the run's {folder}/"
        in err
    ), err
    assert sorted(p.name for p in run.iterdir()) == before


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("log", ["no log", "a log left"])
@pytest.mark.parametrize("command", ["analyze", "report", "show"])
def test_reading_a_run_leaves_no_file_of_sqlites_beside_its_relay_db(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, log: str
) -> None:
    """relay.db was opened ``mode=ro``, which for a WAL store makes relay.db-wal and relay.db-shm
    beside it and leaves them (a read-only connection does not remove them): a failed analyze, and a
    good one, left two new files in a copied run folder. Reading a run now changes none of its files
    but those the command writes (analysis/, report.html): not one is made, removed or changed, with
    or without a write-ahead log a run killed before closing its store left."""
    import subprocess
    import sys

    run = copy_of(tf_run, tmp_path)
    if log == "a log left":  # (a writer gone before its store was closed: -wal and -shm stay)
        code = (
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint=0');"
            "c.execute('CREATE TABLE scratch (x)'); c.commit(); os._exit(0)"
        )
        subprocess.run([sys.executable, "-c", code, str(run / "relay.db")], check=True)
        assert (run / "relay.db-wal").stat().st_size > 0
    before = _files(run)
    written = {"analyze": "analysis/", "report": "report.html", "show": "-"}[command]
    assert main([command, str(run)]) == 0, capsys.readouterr().err
    after = {k: v for k, v in _files(run).items() if not k.startswith(written)}
    assert after == before, sorted(set(after) ^ set(before))
    # and a command that fails after opening the store (a provider.json that is not JSON)
    (run / "provider.json").write_text("{", encoding="utf-8")
    before = _files(run)
    assert main(["analyze", str(run)]) == 2
    assert "provider.json" in capsys.readouterr().err
    assert _files(run) == before


@pytest.mark.parametrize("dropped", ["messages", "relay_records"])
@pytest.mark.parametrize("command", ["show", "analyze", "report"])
def test_a_summary_without_the_counts_the_other_files_are_checked_against_says_so(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, dropped: str
) -> None:
    """summary.json's messages counts are checked against transcript.jsonl, its relay_records against
    relay-view.jsonl (sims.report.run_disagreements); a summary.json without them (edited, or another
    tool's) skipped the checks saying nothing, as if the files agreed. It is a warning naming the
    file, the count missing and the file left unchecked; the command goes on."""
    run = copy_of(tf_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert main([command, str(run)]) == 0
    assert "warning" not in capsys.readouterr().err  # (a run as written: no warning)
    if dropped == "messages":
        summary["messages"] = {k: v for k, v in summary["messages"].items() if k != "device_deliveries"}
        said = f"{run / 'summary.json'} has no messages.device_deliveries"
        unchecked = f"{run / 'transcript.jsonl'}'s events were not checked against it"
    else:
        del summary["relay_records"]
        said = f"{run / 'summary.json'} has no relay_records"
        unchecked = f"{run / 'relay-view.jsonl'}'s records were not checked against it"
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert main([command, str(run)]) == 0
    err = capsys.readouterr().err
    assert f"relaysim {command}: warning: {said}" in err and unchecked in err, err


def _line_counting(opened: Any, longest: list[int], only: str | None = None) -> Any:
    """``opened`` (runfiles.open_run_file), its files' lines' lengths, as a reader takes them, put in
    ``longest`` (how much of a line a reader asks for); with ``only``, that file's alone."""

    def counting(p: Any) -> Any:
        f = opened(p)
        if only is not None and Path(p).name != only:
            return f
        readline = f.readline

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(f, name)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                f.close()

            def __iter__(self) -> Any:
                for line in f:
                    longest.append(len(line))
                    yield line

            def readline(self, size: int = -1) -> bytes:
                line = readline(size)
                longest.append(len(line))
                return line

        return Counted()

    return counting


@pytest.mark.parametrize("file", ["transcript.jsonl", "relay-view.jsonl"])
def test_a_line_longer_than_any_event_is_refused_naming_the_file_and_line_not_read_whole(
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    file: str,
) -> None:
    """analyze read transcript.jsonl (and, --as-seen, relay-view.jsonl) a line at a time, each line
    whole however long: a gigabyte with no line end was all read into memory, then "not JSON". A line
    is read up to MAX_LINE bytes; past them it is refused naming the file and the line. (MAX_LINE made
    small here; the readers read at most MAX_LINE + 1 bytes of a line, which a file object that counts
    what it hands out shows.)"""
    from relaysim.sims.analysis import runfiles

    monkeypatch.setattr(runfiles, "MAX_LINE", 4096, raising=False)
    run = copy_of(tf_run, tmp_path)
    path = run / file
    kept = path.read_bytes().split(b"\n")
    assert max(len(line) for line in kept) < 4096  # (the run's own lines are read as before)
    argv = ["analyze", str(run), *(["--as-seen"] if file == "relay-view.jsonl" else [])]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    path.write_bytes(b"\n".join([kept[0], b"[" + b"1," * 50_000 + b"1]", *kept[1:]]))
    longest: list[int] = []
    counting = _line_counting(runfiles.open_run_file, longest)

    import relaysim.sims.analysis.view as view_module
    import relaysim.sims.analysis_scoring as scoring

    monkeypatch.setattr(scoring, "open_run_file", counting)
    monkeypatch.setattr(view_module, "open_run_file", counting)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"relaysim analyze: {path}: line 2: more than 4,096 bytes with no line end" in err, err
    assert longest and max(longest) <= 4097, max(longest)


@pytest.mark.parametrize("command", ["show", "report"])
def test_show_and_report_refuse_a_transcript_line_longer_than_any_event_not_read_whole(
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """show and report read transcript.jsonl a line at a time (sims.report.transcript_lines), each
    line whole, bounded only by the file's bound (MAX_TRANSCRIPT, 512 MiB): a line of hundreds of
    megabytes with no line end was read into memory, then "not JSON". A line is read up to
    runfiles.MAX_LINE bytes, as analyze's read_truth reads it; past them it is refused naming the file
    and the line. (MAX_LINE made small here; what is asked of the file, a line at a time, is counted.)"""
    from relaysim.sims import report
    from relaysim.sims.analysis import runfiles

    monkeypatch.setattr(runfiles, "MAX_LINE", 4096, raising=False)
    run = copy_of(tf_run, tmp_path)
    path = run / "transcript.jsonl"
    kept = path.read_bytes().split(b"\n")
    assert max(len(line) for line in kept) < 4096  # (the run's own lines are read as before)
    assert main([command, str(run)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    path.write_bytes(b"\n".join([kept[0], b"[" + b"1," * 50_000 + b"1]", *kept[1:]]))
    longest: list[int] = []
    counting = _line_counting(runfiles.open_run_file, longest, only="transcript.jsonl")

    monkeypatch.setattr(report, "open_run_file", counting)
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err
    assert f"relaysim {command}: {path}: line 2: more than 4,096 bytes with no line end" in err, err
    assert err.count("\n") == 1, err
    assert longest and max(longest) <= 4097, max(longest)


@pytest.mark.parametrize(
    ("file", "line"),
    [
        ("relay-view.jsonl", "[" + "1," * 20_000 + "1]"),  # (not an object)
        ("relay-view.jsonl", json.dumps({"kind": "send", "account": ["a" * 100_000]})),  # (a field's value)
        ("relay-view.jsonl", json.dumps({"kind": "k" * 100_000})),  # (a kind no relay writes)
    ],
)
def test_a_value_a_relay_view_line_holds_is_shown_cut_not_whole(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, line: str
) -> None:
    """analyze --as-seen said a relay-view.jsonl record that is not one with its value whole: a line
    of 40,000 characters was all of the error line. It is shown as every other is
    (runfiles.brief: its first characters and how long it is)."""
    run = copy_of(tf_run, tmp_path)
    path = run / file
    path.write_text(line + "\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["analyze", str(run), "--as-seen"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 1" in err and "characters)" in err, err[:300]
    assert len(err) < 600, err[:300]


@pytest.mark.parametrize("command", ["analyze", "report"])
@pytest.mark.parametrize("profile", [5, ["signal"], {"name": "signal"}, True])
def test_a_provider_files_profile_that_is_no_name_is_refused(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, profile: Any
) -> None:
    """provider.json's profile (the policy the relay's records are read under) that is no name
    (a number, a list) was taken for none: the records read as recorded, not as the run's provider
    kept them, saying nothing. It is refused naming the field, as an unknown name is."""
    run = copy_of(tf_run, tmp_path)
    provider = json.loads((run / "provider.json").read_text(encoding="utf-8"))
    provider["profile"] = profile
    (run / "provider.json").write_text(json.dumps(provider), encoding="utf-8")
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'provider.json'}: profile: expected a relay profile's name, got {profile!r}" in err, err


@pytest.mark.parametrize(
    "argv",
    [["show", "LOOP"], ["analyze", "LOOP"], ["report", "LOOP"], ["run", "two-friends", "--out", "LOOP"]],
)
def test_a_loop_of_symbolic_links_given_as_a_folder_is_said_to_be_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A folder given that is a symbolic link in a loop of links (``ln -s a b; ln -s b a``) was said
    to be "a symbolic link to b, which does not exist": b is there, a link too. It is said to be a
    loop (runfiles.broken_link)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with contextlib.suppress(SystemExit):  # (an argparse type's error: status 2, as a CliError's)
        main([str(tmp_path / "a") if a == "LOOP" else a for a in argv])
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'a'} is a symbolic link to {tmp_path / 'b'}, in a loop of links that leads to no file"
        in err
    )
    assert "does not exist" not in err, err


@pytest.mark.parametrize(
    ("file", "commands"),
    [
        ("transcript.jsonl", ["show", "analyze", "report"]),
        ("summary.json", ["show", "analyze", "report"]),
        ("provider.json", ["analyze", "report"]),
        ("relay-view.jsonl", ["show", "analyze", "report"]),
        ("relay.db", ["analyze", "report"]),
    ],
)
@pytest.mark.parametrize("to", ["a loop", "nothing"])
def test_a_runs_file_that_is_a_symbolic_link_to_no_file_is_refused_not_passed_over(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, commands: list[str], to: str
) -> None:
    """A run's file that is a symbolic link leading to no file (in a loop of links, or to nothing)
    was taken for no file: analyze scored nothing (no transcript.jsonl) or read the relay's records
    as recorded (no provider.json), saying nothing; show said the run "did not finish" (no
    summary.json). It is refused naming the file and the link. (analyze said a relay.db that is such a
    link "Too many levels of symbolic links", or that the folder "has no relay.db".)"""
    run = copy_of(tf_run, tmp_path)
    (run / file).unlink()
    (run / file).symlink_to(file if to == "a loop" else "nowhere")
    said = "in a loop of links that leads to no file" if to == "a loop" else "nowhere, which does not exist"
    for command in commands:
        assert main([command, str(run)]) == 2, command
        err = capsys.readouterr().err
        assert f"{run / file}: a symbolic link to " in err and said in err, (command, err)


def test_show_names_the_line_of_an_event_it_cannot_read(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event show cannot read (a message_sent without its message id) was said to be somewhere in
    transcript.jsonl ("holds an event this version of relaysim does not read"), in a file of
    thousands of lines. Its line is named."""
    run = copy_of(tf_run, tmp_path)
    transcript = run / "transcript.jsonl"
    lines = transcript.read_text(encoding="utf-8").splitlines()
    lines.insert(3, json.dumps({"kind": "message_sent", "t": 0, "from": "amira/1", "to": "ben"}))
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["show", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{transcript}: line 4: an event this version of relaysim does not read" in err, err


def _with_event(run: Path, event: dict[str, Any]) -> Path:
    """``run``'s transcript with ``event`` put in at line 4; the transcript's path."""
    transcript = run / "transcript.jsonl"
    lines = transcript.read_text(encoding="utf-8").splitlines()
    lines.insert(3, json.dumps(event))
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return transcript


def test_show_s_error_gives_the_whole_reason_and_the_line(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """render_show's error passed the exception through ``brief()``, which cuts a repr past 60 characters:
    a message_accepted whose relay record's size is a string was "(TypeError("unsupported operand
    type(s) for +: 'int' and 'str… (63 characters) missing or malformed)". The whole reason is shown now,
    with the line; in the HTML report's error too."""
    run = copy_of(tf_run, tmp_path)
    event = {"kind": "message_accepted", "t": 1, "message": 1, "plaintext": "hi", "relay": [{"size": "12"}]}
    transcript = _with_event(run, event)
    assert main(["show", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    reason = "TypeError: unsupported operand type(s) for +: 'int' and 'str': missing or malformed"
    assert f"{transcript}: line 4: an event this version of relaysim does not read ({reason})" in err, err


def test_show_names_the_line_of_an_event_whose_numbers_it_cannot_write(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message_accepted whose relay records' sizes add up past the 4,300 digits Python writes an int
    with (each as long as json.loads reads one) made show_rows raise ValueError, which render_show did
    not catch, unlike the HTML timeline: an internal error (exit 1). It is the error naming the line,
    with the reason, as for a size that is a string."""
    run = copy_of(tf_run, tmp_path)
    big = int("9" * 4300)
    event = {
        "kind": "message_accepted",
        "t": 1,
        "message": 1,
        "plaintext": "hi",
        "relay": [{"account": "amira", "size": big}, {"account": "amira", "size": big}],
    }
    transcript = _with_event(run, event)
    assert main(["show", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "internal error" not in err, err
    assert f"{transcript}: line 4: an event this version of relaysim does not read (ValueError: " in err, err
    assert "integer string conversion" in err and "missing or malformed" in err, err


def test_an_error_s_reason_is_bounded_and_shown_not_run() -> None:
    from relaysim.sims.report import MAX_REASON, unread_reason

    long = unread_reason(TypeError("x" * 5000))
    assert long == f"TypeError: {'x' * MAX_REASON}… (5,000 characters)"
    assert unread_reason(KeyError("plaintext")) == "KeyError: 'plaintext'"
    assert unread_reason(TypeError("a\x1b[31mb")) == "TypeError: a\\x1b[31mb"  # escaped for a terminal


def test_the_report_s_timeline_error_names_the_line_of_an_event_only_it_cannot_read(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The HTML report's timeline error named the line only when show's ``show_rows`` could not read that
    event either: a message_sent whose ``from`` is a number (show reads it; the timeline splits it as a
    device's name) was said to be somewhere in the transcript. Its line is named, with the reason."""
    run = copy_of(tf_run, tmp_path)
    transcript = _with_event(run, {"kind": "message_sent", "t": 0, "message": 99, "from": 7, "to": "ben"})
    from relaysim.sims.report import render_show

    render_show(run)  # the teaching view reads it
    assert main(["report", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"{transcript} holds an event this version of relaysim does not read (line 4: AttributeError: 'int' "
        "object has no attribute 'split': missing or malformed)"
    ) in err, err


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_directory_of_an_unknown_kind_is_refused_naming_it_and_the_kinds_known(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """directory.json listing a kind no scenario knows (``{"a": "nokind"}``) was read without a word
    by analyze and report (a typo inferred as one more trait): refused, naming the account, the kind
    and the kinds known, before anything is written."""
    run = tmp_path / "run"
    shutil.copytree(tf_run, run)
    (run / "directory.json").write_text(json.dumps({"a": "nokind"}), encoding="utf-8")
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{run / 'directory.json'}: a: unknown kind of organisation 'nokind' (known: clinic, bank, " in err
    ), err
    assert err.count("\n") == 1, err
    assert not (run / "analysis").exists() and not (run / "report.html").exists()


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_directory_listing_accounts_not_in_the_run_is_warned_of_naming_them(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """directory.json listing accounts the run has not (``{"x": "clinic"}``) was passed over without a
    word: a warning names them; an account of the run (amira) is not among them; the command goes on."""
    run = tmp_path / "run"
    shutil.copytree(tf_run, run)
    (run / "directory.json").write_text(json.dumps({"x": "clinic", "amira": "clinic"}), encoding="utf-8")
    assert main([command, str(run)]) == 0
    err = capsys.readouterr().err
    said = (
        f"relaysim {command}: warning: {run / 'directory.json'}: lists 1 account the run's records name "
        "nowhere ('x'): passed over in the trait inferences\n"
    )
    assert said in err, err
    assert "nowhere ('amira'" not in err, err  # (a person of the run: the warning of its own, below)


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_person_listed_in_the_directory_as_an_organisation_is_warned_of(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A person of the run (amira) listed in directory.json as an organisation was left out of the
    people the trait inferences judge (sims.analysis.traits: every account not in the directory),
    saying nothing: a warning names the account; the command goes on."""
    run = tmp_path / "run"
    shutil.copytree(tf_run, run)
    (run / "directory.json").write_text(json.dumps({"amira": "clinic"}), encoding="utf-8")
    assert main([command, str(run)]) == 0
    err = capsys.readouterr().err
    said = (
        f"relaysim {command}: warning: {run / 'directory.json'}: lists 1 account of the run as an organisation, "
        "not named as relaysim names one (KIND-1, KIND-2, …: a person) ('amira'): it is left out of the "
        "people judged in the trait inferences\n"
    )
    assert said in err, err


def test_show_report_and_analyze_number_a_transcript_s_lines_alike_in_one_wording(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare ``\\r`` in transcript.jsonl (two events on one line, joined by it): show and report
    (sims.report.transcript_lines) read it as a line end, analyze (read_truth) did not, so the lines
    after it had other numbers in their errors; and show and report said "FILE line N: ..." where
    analyze says "FILE: line N: ...". One numbering (line feeds alone), one wording. A ``\\r\\n`` is
    still a line end for all of them."""
    run = copy_of(tf_run, tmp_path)
    transcript = run / "transcript.jsonl"
    lines = transcript.read_text(encoding="utf-8").split("\n")
    crlf = "\r\n".join(lines)  # (every line ending in \r\n: read as it is)
    transcript.write_text(crlf, encoding="utf-8", newline="")
    for command in ("show", "analyze"):
        assert main([command, str(run)]) == 0, capsys.readouterr().err
    shutil.rmtree(run / "analysis")
    capsys.readouterr()
    joined = [*lines[:1], lines[1] + "\r" + lines[2], *lines[3:5], "{not json", *lines[5:]]
    transcript.write_text("\n".join(joined), encoding="utf-8", newline="")
    for command in ("show", "report", "analyze"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"relaysim {command}: {transcript}: line 2: not "), err
        assert err.count("\n") == 1, err
    joined[1] = lines[1]  # the line with the bare \r mended: the bad one below is line 5 for all
    transcript.write_text("\n".join(joined), encoding="utf-8", newline="")
    for command in ("show", "report", "analyze"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"relaysim {command}: {transcript}: line 5: not "), err


def test_report_says_a_directory_edited_since_analyze_wrote_its_pages(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """report reads analyze's pages (analysis/) and not directory.json, which may have been edited
    since: it went unsaid. Each page records the directory it was made with; report compares it with
    the file and warns, naming the file, an account listed otherwise and how to write the pages again.
    A directory as analyze read it, or none then and none now, is no warning."""
    run = copy_of(tf_run, tmp_path)
    assert main(["analyze", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    assert "directory.json" not in capsys.readouterr().err  # (none then, none now)
    (run / "directory.json").write_text(json.dumps({"clinic-1": "clinic"}), encoding="utf-8")
    assert main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert (
        f"relaysim report: warning: {run / 'directory.json'}: changed since relaysim analyze wrote " in err
    ), err
    assert "clinic-1: 'clinic' now, not listed then" in err and f"relaysim analyze {run}" in err, err
    assert main(["analyze", str(run)]) == 0
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert "changed since" not in capsys.readouterr().err  # (analysed again: the same directory)
    (run / "directory.json").write_text(json.dumps({"clinic-1": "bank"}), encoding="utf-8")
    assert main(["report", str(run)]) == 0
    assert "clinic-1: 'bank' now, 'clinic' then" in capsys.readouterr().err
    # a page of an older relaysim records how many accounts the directory listed, not which
    for page in (run / "analysis").glob("*.json"):
        data = json.loads(page.read_text(encoding="utf-8"))
        del data["analysis"]["sensitive_traits"]["directory"]
        page.write_text(json.dumps(data), encoding="utf-8")
    assert main(["report", str(run)]) == 0
    assert "changed since" not in capsys.readouterr().err  # (1 then, 1 now: cannot tell)
    (run / "directory.json").write_text(json.dumps({"clinic-1": "bank", "bank-1": "bank"}), encoding="utf-8")
    assert main(["report", str(run)]) == 0
    assert "(it lists 2 accounts, the page was made with 1)" in capsys.readouterr().err


def _log_left(run: Path) -> None:
    """relay.db with a write-ahead log beside it, as a run killed before its store was closed leaves."""
    import subprocess
    import sys

    code = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint=0');"
        "c.execute('CREATE TABLE scratch (x)'); c.commit(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(run / "relay.db")], check=True)
    assert (run / "relay.db-wal").stat().st_size > 0


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_large_store_copied_to_be_read_with_its_log_is_said_before_it_is_copied(
    tf_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """A relay.db with a non-empty log beside it (a run stopped uncleanly) is read from a copy of
    both: a store of hundreds of megabytes was copied saying nothing, and the command seemed to
    hang. Above COPY_NOTE_BYTES a note on stderr says what is copied, how much and why, naming the
    command as its other notes and warnings do (it said ``relaysim: note:``); below it, nothing (the
    threshold lowered here: no test writes 100 MB). Read by the library alone, it is a warning."""
    from relaysim.sims.analysis import view

    run = copy_of(tf_run, tmp_path)
    _log_left(run)
    assert main([command, str(run)]) == 0
    assert "note" not in capsys.readouterr().err  # a few kilobytes: no note
    monkeypatch.setattr(view, "COPY_NOTE_BYTES", 1000)
    assert main([command, str(run)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes and notes[0].startswith(
        f"relaysim {command}: note: {run / 'relay.db'}: relay.db-wal beside it"
    ), notes
    assert all(line.startswith(f"relaysim {command}: note: ") for line in notes), notes
    assert "the run was stopped before its store was closed; copying it and its log (" in notes[0], notes
    assert " MB) to read them together" in notes[0], notes
    with pytest.warns(view.StoreCopyNote, match="to read them together"):
        view.from_db(run / "relay.db")


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_each_copy_of_a_large_store_and_its_log_is_said_the_schema_checks_too(
    tf_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """analyze and report check the store's schema before they read it (relay.store._read_schema),
    and that check copies a store with a log beside it too: the first of the two copies was made
    saying nothing (the command seemed to hang before its note). Each copy is said, in the command's
    words, the schema's first."""
    from relaysim.relay import store
    from relaysim.sims.analysis import view

    run = copy_of(tf_run, tmp_path)
    _log_left(run)
    monkeypatch.setattr(view, "COPY_NOTE_BYTES", 1000)
    monkeypatch.setattr(store, "COPY_NOTE_BYTES", 1000)
    assert main([command, str(run)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    said = f"relaysim {command}: note: {run / 'relay.db'}: relay.db-wal beside it is not empty"
    assert len(notes) == 2 and all(n.startswith(said) for n in notes), notes
    assert "to read its schema version, in " in notes[0], notes
    assert "to read them together, in " in notes[1], notes
    with pytest.warns(store.SchemaCopyNote, match="to read its schema version"):
        store.schema_version_of(run / "relay.db")


def test_a_copy_of_a_store_and_its_log_that_cannot_be_written_is_not_blamed_on_the_store(
    tf_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy of relay.db and its log is written to a temporary folder: a copy that could not be
    written there (a full disk) was said as "relay.db: cannot read it: …", of a file that reads well."""
    from relaysim.sims.analysis import view
    from relaysim.sims.analysis.view import AnalysisInputError

    run = copy_of(tf_run, tmp_path)
    _log_left(run)
    folder = tmp_path / "tmpdir"
    (folder / "relay.db").mkdir(parents=True)  # (the copy cannot be written where it goes)
    monkeypatch.setattr(view.tempfile, "mkdtemp", lambda **kw: str(folder))
    with pytest.raises(AnalysisInputError) as exc:
        view.from_db(run / "relay.db")
    said = str(exc.value)
    assert said.startswith(f"{run / 'relay.db'}: cannot copy it to {folder} to read it (relay.db-wal"), said
    assert "cannot read it" not in said, said


def test_first_unread_names_the_line_completing_a_fault_no_event_makes_alone(tf_run: Path) -> None:
    """A ``message_sent`` whose sender is a number of more digits than Python writes (a direct caller's
    events; read_run refuses it) is read alone by show_rows, which only notes who sent the message, and
    its ``message_accepted`` alone too (no sender known: "?"); together the row writes the sender and
    fails. first_unread returned None (no event fails alone), the error named no line; now it names the
    accepted message's line, the one completing the fault, reading O(log n) prefixes."""
    from relaysim.sims.report import _UNREAD_ERRORS, first_unread, read_run, show_rows

    events, _summary = read_run(tf_run)
    sent = next(i for i, e in enumerate(events) if e["kind"] == "message_sent")
    message = events[sent]["message"]
    events[sent] = {**events[sent], "from": 10**5000}
    accepted = next(
        i for i, e in enumerate(events) if e["kind"] == "message_accepted" and e["message"] == message
    )
    assert sent < accepted
    with pytest.raises(ValueError):
        show_rows(events)
    for e in events:
        show_rows([e])  # each alone reads
    reads: list[int] = []

    def view(some: list[dict[str, Any]]) -> object:
        reads.append(len(some))
        return show_rows(some)

    assert first_unread(events, view, _UNREAD_ERRORS) == accepted + 1
    prefixes = [n for n in reads if n > 1]
    assert len(prefixes) <= 2 + len(events).bit_length()  # halving, not a prefix a line
    with pytest.raises(ValueError):
        show_rows(events[: accepted + 1])
    show_rows(events[:accepted])
    # a single event that fails alone is still the answer, before any pair
    broken = [*events[:3], {**events[3], "kind": "message_lost"}, *events[4:]]
    broken[3].pop("message", None)
    assert first_unread(broken, show_rows, _UNREAD_ERRORS) == 4
    # and a view that reads them all names no line
    assert first_unread(events, lambda some: None, _UNREAD_ERRORS) is None


@pytest.mark.parametrize("content", ["{", "\udcff{}"])
def test_a_disclosure_that_is_not_json_is_said_in_one_wording_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """A disclosure that is not JSON was said three ways: "is not valid JSON (…): the run was cut
    short…" (the demo's comparison), "cannot be read (…)" (report) and "cannot read it as a
    disclosure (JSON): …" (analyze, and report computing the analyses), and a fourth by report's check
    of comparison.json against it: each command says it in the same words (runfiles.not_json)."""
    from relaysim.sims.report import RunFolderError, render_demo_comparison

    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    bes = out / "bes"
    f = bes / "disclosures" / "court-order-saima.json"
    f.write_bytes(content.encode("utf-8", "surrogateescape"))
    why = (
        "Expecting property name enclosed in double quotes at line 1, column 2"
        if content == "{"
        else "not UTF-8 text: byte 0 is no character's"
    )
    words = f"{f} is not valid JSON ({why}): the run was cut short while writing it, or the file was damaged"
    again = f"; run it again with: relaysim run pakistan-2015 --out {out} --force"
    with pytest.raises(RunFolderError) as exc:
        render_demo_comparison(out, ["bes", "bbm-consumer"])
    assert str(exc.value) == words + again
    said = {}
    for name, argv in [
        ("analyze", ["analyze", str(bes)]),  # (its errors about a run's file carry no advice)
        ("report, its analyses computed", ["report", str(bes)]),
        ("report of the comparison", ["report", str(out)]),
    ]:
        assert main(argv) == 2
        said[name] = capsys.readouterr().err
    assert said["analyze"] == f"relaysim analyze: {words}\n"
    assert said["report, its analyses computed"] == f"relaysim report: {words}{again}\n"
    assert said["report of the comparison"] == (
        f"relaysim report: {out / 'comparison.json'}: [1].profiles.'bes', read off "
        f"bes/disclosures/court-order-saima.json: {words}{again}\n"
    )
    # the report of a run analyze wrote its pages in (sims.reports.html._load)
    (bes / "disclosures" / "court-order-saima.json").rename(tmp_path / "saima.json")
    assert main(["analyze", str(bes)]) == 0
    (tmp_path / "saima.json").rename(f)
    capsys.readouterr()
    assert main(["report", str(bes)]) == 2
    assert capsys.readouterr().err == f"relaysim report: {words}{again}\n"
