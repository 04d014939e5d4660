"""What the README shows is what relaysim reads: every ``relaysim`` command in its shell blocks is one
the command line takes (each option there, each value of the right kind), its TOML block is a
timeline event a scenario accepts, the profiles it lists are the relay's, and the built-in cases it
names are built in. (What each command then does is held by the tests the README's tables name;
tests/sims/test_cli_examples.py runs the examples of the help texts.)"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from relaysim.relay.profiles import PROFILES
from relaysim.sims.cli import build_parser
from relaysim.sims.scenario import builtin_scenarios, parse_scenario

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def _commands(block: str) -> list[list[str]]:
    """Each command of a shell block (lines joined at a trailing backslash, split at ``&&``), as
    words, without comments."""
    commands: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        part: list[str] = []
        for word in shlex.split(line, comments=True):
            if word == "&&":
                commands.append(part)
                part = []
            else:
                part.append(word)
        if part:
            commands.append(part)
    return commands


def _sub_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser that reads ``argv`` (relaysim's words after ``relaysim``), and the words it reads:
    bench and relay hand what follows their first word to a parser of their own."""
    if argv[:1] == ["bench"]:
        import importlib

        module = importlib.import_module(f"relaysim.sims.bench.{argv[1]}")
        return module._parser(), argv[2:]
    if argv[:2] == ["relay", "serve"]:
        from relaysim.relay.server import build_parser as serve_parser

        return serve_parser(), argv[2:]
    return build_parser(), argv


def readme_relaysim_commands() -> list[list[str]]:
    found = []
    for block in _blocks("sh"):
        for words in _commands(block):
            if words[:3] == ["python3", "-m", "relaysim"]:
                words = ["relaysim", *words[3:]]
            if words[:1] == ["relaysim"]:
                found.append(words[1:])
    return found


def test_the_readme_shows_commands() -> None:
    commands = readme_relaysim_commands()
    assert ["demo"] in commands
    assert any(c[:1] == ["report"] for c in commands)  # the HTML page, for a browser or a projector
    assert any(c[:1] == ["sweep"] for c in commands)
    assert any(c[:2] == ["relay", "serve"] for c in commands)


@pytest.mark.parametrize("argv", readme_relaysim_commands(), ids=shlex.join)
def test_every_relaysim_command_in_the_readme_is_one_the_command_line_takes(argv: list[str]) -> None:
    parser, words = _sub_parser(argv)
    try:
        parser.parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"relaysim {shlex.join(argv)}: refused by its parser (exit {exc.code})")


def test_the_legal_process_block_is_an_event_a_scenario_takes() -> None:
    """The README's [[events]] block, added to a scenario whose people it names (amira), loads, as a
    pen register order served at 2 h and collecting until 5 h."""
    (block,) = _blocks("toml")
    text = (ROOT / "sims" / "scenarios" / "two-friends.toml").read_text(encoding="utf-8") + "\n" + block
    scenario = parse_scenario(text, "README.md")
    (event,) = [
        e for e in scenario.events if e.at == 2 * 3600 and getattr(e, "process", None) == "pen_register"
    ]
    assert event.target == "amira"
    assert event.end == 5 * 3600


def test_the_profiles_the_readme_lists_are_the_relays() -> None:
    match = re.search(
        r"The relay runs under a \*\*profile\*\* \(`relay/profiles.py`\): (.*?)\. A profile is", README, re.S
    )
    assert match, "the README's list of profiles moved: update this test"
    listed = re.findall(r"`([a-z0-9-]+)`", match.group(1))
    assert sorted(listed) == sorted(PROFILES)


def test_the_built_in_cases_the_readme_names_are_built_in() -> None:
    match = re.search(r"^Built-in cases: (.*?)\n\n", README, re.S | re.M)
    assert match, "the README's built-in cases moved: update this test"
    named = [n for n in re.findall(r"`([^`]+)`", match.group(1)) if "." not in n]
    assert len(named) >= 9
    assert set(named) <= set(builtin_scenarios()), set(named) - set(builtin_scenarios())


def test_the_registration_proof_the_readme_states_is_the_relays_default() -> None:
    """The README's hashcash difficulty and its count of tries are `relay serve`'s default."""
    from relaysim.relay.server import build_parser as serve_parser

    match = re.search(r"at the default (\d+) bits, 2\^(\d+) = ([\d,]+) SHA-256 hashes on average", README)
    assert match, "the README's registration proof moved: update this test"
    bits = serve_parser().parse_args([]).registration_pow
    assert int(match.group(1)) == int(match.group(2)) == bits
    assert int(match.group(3).replace(",", "")) == 2**bits


def test_the_registration_proofs_solver_says_its_cost_as_the_readme_does() -> None:
    """relay/wire.py's solve_registration_pow said "~0.3 s ... a few tens of milliseconds in a phone's
    native code", which nothing measures: it gives the tries on average as the README does, and no time."""
    from relaysim.relay.server import build_parser as serve_parser
    from relaysim.relay.wire import solve_registration_pow

    doc = " ".join((solve_registration_pow.__doc__ or "").split())
    bits = serve_parser().parse_args([]).registration_pow
    assert f"at the default {bits} bits, 2^{bits} = {2**bits:,} SHA-256 hashes on average" in doc, doc
    assert "measured by no test or benchmark" in doc, doc
    assert not re.search(r"\d\s*(s|ms|µs)\b|second", doc), doc
