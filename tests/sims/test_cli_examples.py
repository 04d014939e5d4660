"""Every example a ``relaysim ... --help`` text gives works as written: help texts teach, and an
example that fails teaches nothing. Each help's examples run in order in a fresh folder, as a reader
would type them one after the other; one that needs something no earlier example there makes (a
run another command wrote, the user's own scenario file, certificate or token) says so in its comment
("after ...", "your own ..."). The benchmarks, ``defences``, ``reproduce``, a Dask sweep and ``relay
serve`` take minutes, a cluster or a port, so their examples are only parsed, by the parser that would
read them; a file one of them reads must be marked the same way."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from relaysim.sims.cli import build_parser, main

# what a comment must say for an example that needs an earlier step or a file of the user's own
MARKED = re.compile(r"#.*\b(after|your own)\b")
# a file an example reads (an output of --out, --json or a redirection is no input)
INPUT_FILE = re.compile(r"\.(toml|pem|txt)$")
OUTPUT_OPTIONS = {"--out", "--json"}


def _bench_parser(what: str) -> Callable[[], argparse.ArgumentParser]:
    def parser() -> argparse.ArgumentParser:
        import importlib

        module = importlib.import_module(f"relaysim.sims.bench.{what}")
        return module._parser()  # type: ignore[no-any-return]

    return parser


def _serve_parser() -> argparse.ArgumentParser:
    from relaysim.relay.server import build_parser as serve_parser

    return serve_parser()


# the commands whose examples are parsed, not run: (leading words, the parser of what follows them)
PARSED_ONLY: dict[tuple[str, ...], Callable[[], argparse.ArgumentParser]] = {
    **{("bench", what): _bench_parser(what) for what in ("crypto", "relay", "sim", "analysis", "sweep")},
    ("relay", "serve"): _serve_parser,
    ("defences",): build_parser,
    ("reproduce",): build_parser,
}


def _helps() -> list[tuple[str, ...]]:
    """Every command that has a --help of its own: the top level, each subcommand, and the commands
    bench and relay hand their arguments to."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    nested = [("bench", what) for what in ("crypto", "relay", "sim", "analysis", "sweep")] + [
        ("relay", "serve")
    ]
    return [(), *((name,) for name in subs.choices), *nested]


def _help_text(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        status = main([*command, "--help"])
    except SystemExit as exc:  # argparse's --help exits; relay serve's main returns its status
        status = exc.code or 0
    assert status == 0
    return capsys.readouterr().out


def examples(help_text: str) -> list[str]:
    """The example lines of a help text: the indented lines after "examples:" (or "example:") up to
    the first blank line, a line ending in a backslash joined with the next."""
    lines: list[str] = []
    inside = False
    for line in help_text.splitlines():
        if line.strip() in ("examples:", "example:"):
            inside = True
            continue
        if inside:
            if not line.strip() or not line.startswith(" "):
                break
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
            else:
                lines.append(line.strip())
    return lines


def test_examples_are_found() -> None:
    """The reader of help texts this test relies on finds examples, joins continued lines and stops
    at the text after them."""
    text = "usage: x\n\nexamples:\n  relaysim a \\\n      --b c\n  relaysim d   # e\n\nRun again.\n"
    assert examples(text) == ["relaysim a --b c", "relaysim d   # e"]


def _words(example: str) -> list[str]:
    """The words of an example, without its comment and without a redirection of its output."""
    words = shlex.split(example, comments=True)
    if ">" in words:
        at = words.index(">")
        del words[at : at + 2]
    return words


def _parsed_only(argv: list[str]) -> Callable[[], argparse.ArgumentParser] | None:
    if "--dask" in argv:
        return build_parser
    for lead, parser in PARSED_ONLY.items():
        if tuple(argv[: len(lead)]) == lead:
            return parser
    return None


def _parse(argv: list[str], parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Parse ``argv`` as the command would; --help parses to an exit with status 0."""
    words = argv if parser is build_parser else argv[len(_lead(argv)) :]
    try:
        parser().parse_args(words)
    except SystemExit as exc:
        assert exc.code in (0, None), f"{shlex.join(argv)}: the parser refused it (exit {exc.code})"


def _lead(argv: list[str]) -> tuple[str, ...]:
    return next(lead for lead in PARSED_ONLY if tuple(argv[: len(lead)]) == lead)


def _input_files(argv: list[str]) -> list[str]:
    return [
        w
        for i, w in enumerate(argv)
        if INPUT_FILE.search(w) and (i == 0 or argv[i - 1] not in OUTPUT_OPTIONS)
    ]


def _run_part(words: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run one command of an example in this process: relaysim (through ``main``), optionally piped
    into ``jq .KEY``, or ``less FILE`` (the file must be there). The exit status and stdout."""
    if words[0] == "less":
        assert len(words) == 2, words
        return (0 if Path(words[1]).is_file() else 1), ""
    if "|" in words:
        at = words.index("|")
        status, out = _run_part(words[:at], capsys)
        tool = words[at + 1 :]
        assert tool[0] == "jq" and len(tool) == 2 and re.fullmatch(r"\.\w+", tool[1]), f"unknown tool: {tool}"
        return (status if status or tool[1][1:] in json.loads(out) else 1), ""
    assert words[0] == "relaysim", f"an example of no command this test knows: {words}"
    status = main(words[1:])
    return status, capsys.readouterr().out


def _run_example(example: str, capsys: pytest.CaptureFixture[str]) -> int:
    tokens = shlex.shlex(example, posix=True, punctuation_chars="|&")
    tokens.whitespace_split = True
    tokens.commenters = "#"
    words = list(tokens)
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            parts.append([])
        else:
            parts[-1].append(word)
    for part in parts:
        status, _ = _run_part(part, capsys)
        if status:
            return status
    return 0


@pytest.mark.parametrize("command", _helps(), ids=lambda c: " ".join(c) or "relaysim")
def test_every_example_in_a_help_text_works_or_says_what_it_needs(
    command: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    found = examples(_help_text(command, capsys))
    assert found, f"relaysim {' '.join(command)} --help gives no example"
    failed: list[str] = []
    for example in found:
        argv = _words(example)
        if argv[:3] == ["python", "-m", "relaysim.sims.reproduce"]:
            argv = ["relaysim", "reproduce", *argv[3:]]
        assert argv[0] == "relaysim", example
        marked = bool(MARKED.search(example))
        parser = _parsed_only(argv[1:])
        if parser is not None:
            _parse(argv[1:], parser)
            if _input_files(argv[1:]) and not marked:
                failed.append(f"{example!r} reads {_input_files(argv[1:])}, which no example makes")
            continue
        status = _run_example(example, capsys)
        capsys.readouterr()
        if status and not marked:
            failed.append(f"{example!r} exits {status}")
    assert not failed, f"relaysim {' '.join(command)} --help: " + "; ".join(failed)
