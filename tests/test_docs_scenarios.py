"""docs/scenarios.md, the page a newcomer writes a scenario file from, says what the loader
(sims/scenario.py) does: its example runs and writes the disclosure it names, the keys it lists under
each table are the ones the loader takes (found from the loader's own "unknown key" error), the
defaults it gives are the loader's, and the errors it shows are the ones ``relaysim run`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relaysim.sims.cli import main
from relaysim.sims.scenario import EVENT_TYPES, ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
(EXAMPLE,) = re.findall(r"^```toml\n(.*?)^```", PAGE, flags=re.S | re.M)
(ERRORS,) = re.findall(r"^```text\n(.*?)^```", PAGE, flags=re.S | re.M)


def _section(heading: str) -> str:
    """The text under a ``### heading`` line, up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}.*?\n(.*?)(?=^#)", PAGE, flags=re.S | re.M)
    assert match, f"docs/scenarios.md has no section {heading!r}: update this test"
    return match.group(1)


def _rows(heading: str) -> dict[str, tuple[str, str]]:
    """Each key of a section's table (``| `key` | what | default |``), with its text and default; a
    row naming several keys (```from`, `to```) gives each."""
    rows = {}
    for line in _section(heading).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for key in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[key] = (cells[1], cells[2])
    return rows


def _loader_keys(extra: str, table: str = "") -> list[str]:
    """The keys the loader takes where ``extra`` puts an unknown key ``zzz``: its error names them."""
    base = '[scenario]\nname = "x"\nduration = "3h"\n[[people]]\nname = "a"\n[[people]]\nname = "b"\n'
    text = extra + base if not table else base + extra
    with pytest.raises(ScenarioError, match=r"zzz: unknown key") as info:
        parse_scenario(text, "t.toml")
    return re.findall(r"'([a-z_]+)'", str(info.value).split("expected one of", 1)[1])


@pytest.mark.parametrize("heading", ["`[relay]`", "`[network]`", "`[[people]]`", "`[[conversations]]`"])
def test_each_table_lists_the_keys_the_loader_takes(heading: str) -> None:
    extra = {
        "`[relay]`": "[relay]\nzzz = 1\n",
        "`[network]`": "[network]\nzzz = 1\n",
        "`[[people]]`": '[[people]]\nname = "c"\nzzz = 1\n',
        "`[[conversations]]`": '[[conversations]]\nbetween = ["a", "b"]\nmessages = []\nzzz = 1\n',
    }[heading]
    assert sorted(_rows(heading)) == sorted(_loader_keys(extra, table="after"))


def test_the_scenario_table_lists_the_keys_the_loader_takes() -> None:
    with pytest.raises(ScenarioError, match=r"scenario\.zzz: unknown key") as info:
        parse_scenario('[scenario]\nzzz = 1\nname = "x"\nduration = "3h"\n[[people]]\nname = "a"\n', "t.toml")
    taken = re.findall(r"'([a-z_]+)'", str(info.value).split("expected one of", 1)[1])
    assert sorted(_rows("`[scenario]`")) == sorted(taken)


def test_the_legal_process_table_and_the_event_kinds_are_the_loaders() -> None:
    section = _section("`[[events]]`")
    taken = _loader_keys(
        '[[events]]\nat = "1h"\nkind = "legal_process"\nprocess = "subpoena"\ntarget = "a"\nzzz = 1\n',
        "after",
    )
    assert sorted({"at", "kind", *_rows("`[[events]]`")}) == sorted(taken)
    kinds = re.search(r"`kind`, one of (.*?)\. ", section, flags=re.S)
    assert kinds, "docs/scenarios.md's list of event kinds moved: update this test"
    assert sorted(re.findall(r"`([a-z_]+)`", kinds.group(1))) == sorted(EVENT_TYPES)


@pytest.mark.parametrize(
    ("table", "probe"),
    [
        ("`[generate]`", "[generate]\nzzz = 1\n"),
        ("`[traffic]`", "[traffic]\nzzz = 1\n"),
        ("`[defences]`", "[defences]\nzzz = 1\n"),
        ("`[[groups]]`", '[[groups]]\nname = "g"\nmembers = ["a", "b"]\nzzz = 1\n'),
    ],
)
def test_the_other_tables_list_the_keys_the_loader_takes(table: str, probe: str) -> None:
    row = re.search(rf"^\| {re.escape(table)} \| (.*?) \|$", _section("The other tables"), flags=re.M)
    assert row, f"docs/scenarios.md lists no keys of {table}"
    assert sorted(re.findall(r"`([a-z_]+)`", row.group(1))) == sorted(_loader_keys(probe, "after"))


def test_the_defaults_the_page_gives_are_the_loaders() -> None:
    scenario = parse_scenario('[scenario]\nname = "x"\nduration = "3h"\n[[people]]\nname = "a"\n', "t.toml")
    stated = {
        ("`[scenario]`", "seed"): str(scenario.seed),
        ("`[relay]`", "profile"): f'"{scenario.relay.profile}"',
        ("`[relay]`", "region"): f'"{scenario.relay.region}"',
        ("`[relay]`", "address"): f'"{scenario.relay.address}"',
        ("`[network]`", "latency_ms"): f"{scenario.network.latency_ms:g}",
        ("`[network]`", "jitter_ms"): f"{scenario.network.jitter_ms:g}",
        ("`[network]`", "loss"): f"{scenario.network.loss:g}",
        ("`[network]`", "duplication"): f"{scenario.network.duplication:g}",
        ("`[[people]]`", "region"): f'"{scenario.people[0].devices[0].region}"',
    }
    for (heading, key), value in stated.items():
        assert _rows(heading)[key][1] == f"`{value}`", (heading, key)
    assert len(scenario.people[0].devices) == 1  # "one device"
    assert scenario.people[0].devices[0].address.startswith("192.0.2.")


def test_the_example_runs_and_writes_the_disclosure_the_page_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-case.toml").write_text(EXAMPLE, encoding="utf-8")
    command = re.search(r"`relaysim run (my-case\.toml --out (\S+))`", PAGE)
    assert command, "docs/scenarios.md's run command moved: update this test"
    assert main(["run", *command.group(1).split(), "--quiet"]) == 0
    out = command.group(2)
    named = re.search(rf"`({re.escape(out)}/disclosures/[\w.-]+\.md)`", PAGE)
    assert named, "docs/scenarios.md names no disclosure file: update this test"
    disclosure = Path(named.group(1))
    assert disclosure.is_file() and disclosure.with_suffix(".json").is_file()
    assert "Did the file arrive?" in (tmp_path / out / "transcript.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("relay", "said"), [('profile = "signal"', "signal"), ("", "keep-everything (the default)")]
)
def test_the_run_names_the_relay_profile_it_ran_under(
    relay: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file without [relay] profile ran as keep-everything, every record kept, and nothing the run
    printed or wrote said so: the summary line and summary.md name the profile, "(the default)" when
    the file gives none (as the page's [relay] section says)."""
    monkeypatch.chdir(tmp_path)
    assert EXAMPLE.count('profile = "signal"') == 1
    (tmp_path / "my-case.toml").write_text(EXAMPLE.replace('profile = "signal"', relay), encoding="utf-8")
    assert main(["run", "my-case.toml", "--out", "out/case", "--quiet"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("my-case ")]
    assert line.startswith(f"my-case (seed 7) under relay profile {said}: 2 people, "), line
    summary = (tmp_path / "out" / "case" / "summary.md").read_text(encoding="utf-8")
    assert f"; relay profile {said}.\n" in summary
    assert ("(the default)" in summary) == (not relay)
    assert f"`{said}`" in _section("`[relay]`")


@pytest.mark.parametrize(("kept", "said"), [(2, "2 messages;"), (1, "1 message;")])
def test_the_run_line_counts_the_messages_in_words_that_agree(
    kept: int, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of one message printed "1 messages"."""
    monkeypatch.chdir(tmp_path)
    reply = '  { at = "20m", from = "ben", text = "Yes, reading it now." },\n'
    assert EXAMPLE.count(reply) == 1
    (tmp_path / "my-case.toml").write_text(EXAMPLE if kept == 2 else EXAMPLE.replace(reply, ""), "utf-8")
    assert main(["run", "my-case.toml", "--out", "out/case", "--quiet"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("my-case ")]
    assert f" 2 people, 2 devices, {said} " in line, line


def test_a_legal_process_without_a_name_is_named_as_the_page_says() -> None:
    text = EXAMPLE.replace('name = "subpoena-amira"\n', "")
    (event,) = [e for e in parse_scenario(text, "t.toml").events if e.kind == "legal_process"]
    assert "`subpoena-amira-0`" in _rows("`[[events]]`")["name"][1]
    assert event.name == "subpoena-amira-0"


@pytest.mark.parametrize(
    ("line", "old", "new"),
    list(
        zip(
            ERRORS.splitlines(),
            ["seed = 7", "seed = 7", 'at = "2h"'],
            ["sed = 7", 'seed = "seven"', 'at = "5h"'],
            strict=True,
        )
    ),
)
def test_the_errors_the_page_shows_are_the_ones_relaysim_prints(
    line: str,
    old: str,
    new: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert f"`{new}`" in PAGE  # the page says which mistake each line is
    monkeypatch.chdir(tmp_path)
    assert EXAMPLE.count(old) == 1
    (tmp_path / "my-case.toml").write_text(EXAMPLE.replace(old, new), encoding="utf-8")
    assert main(["run", "my-case.toml", "--out", "out/case"]) == 2
    assert capsys.readouterr().err.strip() == line


def test_a_newcomer_is_pointed_to_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's scenarios section and ``relaysim run --help``'s example of one's own file name
    the page (they named sims/scenario.py, a Python module, as where the format is)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scenarios", 1)[1].split("\n## ", 1)[0]
    assert "docs/scenarios.md" in section
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    (own,) = [line for line in capsys.readouterr().out.splitlines() if "your own file" in line]
    assert "docs/scenarios.md" in own, own
