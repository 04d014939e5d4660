"""Every number option of every relaysim command reads plain ASCII numbers within its bounds.

``int()`` and ``float()`` take more than anyone types as a count or a duration (other scripts'
digits, underscores, blanks, ``nan``, ``inf``, ``1e400``), and most options had no upper bound:
``bench analysis --messages 10**12``, ``sweep --workers 10**6`` or ``run --live --time-scale 1e300``
ran until the machine gave out. The walk below finds every option of every parser, so an option
added later with a bare ``type=int`` or ``type=float`` fails here.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaysim.relay import server
from relaysim.sims import cli
from relaysim.sims.numbers import MAX_WORKERS, decimal_number, whole_number, workers
from relaysim.sims.scenario import seed_arg

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ("crypto", "relay", "attack", "sim", "analysis", "sweep")
NOT_PLAIN = [
    "\u0661\u0662",  # Arabic-Indic digits: int() reads 12
    "\uff11\uff12",  # full-width digits: int() reads 12
    "1_2",  # int() reads 12
    " 12",
    "12 ",
    "0x12",
    "",
]


def _options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif action.option_strings and action.type is not None:
            yield f"{path} {action.option_strings[-1]}", action


def _every_option() -> list[tuple[str, argparse.Action]]:
    found = list(_options(cli.build_parser(), "relaysim"))
    found += _options(server.build_parser(), "relaysim relay serve")
    for name in BENCHES:
        module = importlib.import_module(f"relaysim.sims.bench.{name}")
        found += _options(module._parser(), f"relaysim bench {name}")
        if hasattr(module, "_child_parser"):  # the server process it starts (its words from the bench)
            found += _options(module._child_parser(), f"sims.bench.{name} --child")
    return found


OPTIONS = _every_option()


def test_the_walk_finds_the_commands_number_options() -> None:
    """(So that the tests below cannot pass on an empty list.)"""
    names = {name for name, _ in OPTIONS}
    for expected in (
        "relaysim run --time-scale",
        "relaysim sweep --seeds",
        "relaysim sweep --workers",
        "relaysim defences --workers",
        "relaysim reproduce --targets",
        "relaysim show --width",
        "relaysim relay serve --prekeys-low",
        "relaysim bench relay --duration",
        "relaysim bench sim --budget",
        "relaysim bench analysis --messages",
        "relaysim bench attack --rate",
        "relaysim bench sweep --runs",
        "relaysim bench sweep --workers",
        "sims.bench.relay --child --connections",
        "sims.bench.attack --child --good",
    ):
        assert expected in names


# What each option's type reads, by its qualified name: a number, in bounds (the tests below give
# each of them what is past its bounds and what is no plain number), or no number at all.
NUMBER_TYPES = {
    "whole_number",
    "decimal_number",
    "seed_arg",
    "_seed",
    "_whole",
    "_seconds",
    "_cap",
    "_rate",
}
NOT_NUMBER_TYPES = {
    "out_folder",
    "run_folder",
    "in_file",
    "scenario_arg",
    "text_arg",
    "writable_file",
    "_metric",
    "_scheduler",
    "_path.<locals>.parse",
    "_order_name",  # disclose --name: text, not empty
    "_host",  # relay serve --host: an IP address or a host name
}


def test_every_option_with_a_type_reads_a_bounded_number_or_no_number() -> None:
    """An option added with a type of its own (a helper like the ones sims.numbers replaced, int()
    inside and no upper bound) is not skipped as "no number": it has to be named here as one or the
    other, and a number's type is tested below."""
    unknown = [
        f"{name}: {getattr(action.type, '__qualname__', action.type)!r}"
        for name, action in OPTIONS
        if action.type is not None
        and getattr(action.type, "__qualname__", None) not in NUMBER_TYPES | NOT_NUMBER_TYPES
    ]
    assert unknown == [], "say whether these read a number (and bound it with sims.numbers): " + ", ".join(
        unknown
    )


def test_no_number_option_is_read_by_bare_int_or_float() -> None:
    bare = [name for name, action in OPTIONS if action.type in (int, float)]
    assert bare == [], f"read with int()/float(), no bounds, any digits: {bare}"


@pytest.mark.parametrize(
    ("name", "action"),
    [o for o in OPTIONS if getattr(o[1].type, "__qualname__", None) in NUMBER_TYPES],
    ids=lambda o: str(o),
)
def test_a_number_option_refuses_what_is_not_plain_ascii(name: str, action: argparse.Action) -> None:
    for text in NOT_PLAIN:
        assert action.type is not None
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(text)


@pytest.mark.parametrize(
    ("name", "action"),
    [o for o in OPTIONS if getattr(o[1].type, "__name__", "") in ("whole_number", "decimal_number")],
    ids=lambda o: str(o),
)
def test_a_number_option_has_an_upper_bound(name: str, action: argparse.Action) -> None:
    assert action.type is not None
    with pytest.raises(argparse.ArgumentTypeError, match="expected at most"):
        action.type("9" * 25)
    if action.default is not None:  # the default is within the bounds
        assert action.type(str(action.default)) == action.default


@pytest.mark.parametrize(
    "text",
    ["\u0661\u0660/\u0661\u0660\u0660", "\uff11/\uff12", "1_0/20", "10/2_0", " 5/10", "5/10 ", "5 /10"],
)
def test_a_relay_serve_rate_is_read_in_ascii_digits(text: str) -> None:
    """relay serve's RATE/BURST options read each part with float(): "١٠/١٠٠" was 10/s, burst 100."""
    rate_options = [a for _name, a in OPTIONS if a.metavar == "RATE/BURST"]
    assert len(rate_options) == 14 and all(a.type is server._rate for a in rate_options)
    with pytest.raises(argparse.ArgumentTypeError, match="is not a rate: expected RATE/BURST in digits 0-9"):
        server._rate(text)
    assert (
        server._rate("20/200") is not None
        and server._rate("0.5/1e1") is not None
        and server._rate("off") is None
    )


def test_whole_number() -> None:
    parse = whole_number("runs", 1, 100, why="a reason")
    assert [parse(t) for t in ("1", "+7", "100", "007")] == [1, 7, 100, 7]
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected at least 1 runs, got 0$"):
        parse("0")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^expected at most 100 runs \(a reason\), got 101$"
    ):
        parse("101")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^expected a whole number of runs \(digits 0-9\), got '1\.5'$"
    ):
        parse("1.5")
    long = "9" * 100_000  # int() of it raised ValueError past 4,300 digits; it is named, shortly
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        parse(long)
    assert len(str(exc.value)) < 200 and "100,000 characters" in str(exc.value)
    with pytest.raises(ValueError):
        whole_number("runs", 2, 1)


def test_a_whole_number_of_many_digits_is_past_the_bounds_not_no_number() -> None:
    """Past 30 digits a number was refused as "a whole number of bytes (digits 0-9)", which it is:
    ``bench relay --body-size 10**60`` said so, not that it is past the largest frame."""
    parse = whole_number("runs", 1, 100, why="a reason")
    for text in ("1" + "0" * 40, "+" + "9" * 5000):
        with pytest.raises(
            argparse.ArgumentTypeError, match=r"^expected at most 100 runs \(a reason\), got '"
        ) as exc:
            parse(text)
        assert "digits 0-9" not in str(exc.value) and len(str(exc.value)) < 200
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected at least 1 runs, got '-1000"):
        parse("-" + "1" + "0" * 40)
    assert parse("0" * 40 + "7") == 7  # (leading zeros are no size)
    assert decimal_number("seconds", 0.0, 60.0)("0." + "0" * 40 + "1") > 0  # (nor a long fraction)


def test_decimal_number() -> None:
    parse = decimal_number("seconds", 0.0, 60.0, above_minimum=True)
    assert [parse(t) for t in ("1", "0.5", ".5", "5.", "1e1", "6E+1", "+2")] == [
        1.0,
        0.5,
        0.5,
        5.0,
        10.0,
        60.0,
        2.0,
    ]
    for text in ("nan", "inf", "-inf", "Infinity", "1e400", *NOT_PLAIN, "1e", "e5", "."):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number of seconds, got '1e400'"):
        parse("1e400")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected more than 0 seconds, got 0$"):
        parse("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected at most 60 seconds, got 60\.5$"):
        parse("60.5")
    assert decimal_number("seconds", 0.0, 1.0)("0") == 0.0  # the minimum itself, unless above_minimum


def test_workers_and_seeds() -> None:
    assert workers()(str(MAX_WORKERS)) == MAX_WORKERS
    with pytest.raises(argparse.ArgumentTypeError, match="expected at most 256 worker processes"):
        workers()("257")
    with pytest.raises(argparse.ArgumentTypeError, match="expected at least 2 worker processes, got 1"):
        workers(2)("1")
    assert seed_arg("12") == 12
    for text in NOT_PLAIN:
        with pytest.raises(argparse.ArgumentTypeError):
            seed_arg(text)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["run", "two-friends", "--live", "--time-scale", "1e300"],
            "argument --time-scale: expected at most 1000",
        ),
        (
            # (the help said "from 0"; sims.live then refused it, after the scenario was read)
            ["run", "two-friends", "--live", "--time-scale", "0"],
            "argument --time-scale: expected at least 1e-06 real seconds per simulated second, got 0",
        ),
        (
            ["run", "two-friends", "--live", "--time-scale", "nan"],
            "argument --time-scale: expected a number of",
        ),
        (["sweep", "two-friends", "--workers", "1000000"], "argument --workers: expected at most 256"),
        (
            ["defences", "--workers", "\u0662"],
            "argument --workers: expected a whole number of worker processes",
        ),
        (
            ["bench", "analysis", "--messages", "1000000000000"],
            "argument --messages: expected at most 10,000,000",
        ),
        (["bench", "relay", "--duration", "1e9"], "argument --duration: expected at most 3600 seconds"),
        (["bench", "relay", "--connections", "100000"], "argument --connections: expected at most 4,096"),
        (["bench", "sim", "--devices", "100000000"], "argument --devices: expected at most 1,000,000 phones"),
        (["bench", "crypto", "--repeat", "1_000"], "argument --repeat: expected a whole number of repeats"),
        (["bench", "sweep", "--runs", "10000000"], "argument --runs: expected at most 100,000 runs"),
        (
            ["bench", "relay", "--attack", "--rate", "inf"],
            "argument --rate: expected a number of messages a second",
        ),
    ],
)
def test_the_commands_refuse_an_absurd_number_at_once(argv: list[str], says: str) -> None:
    """Each as a user runs it: exit status 2, one usage error naming the option, no traceback, and
    nothing run (each would otherwise have run for hours, or at once for ever)."""
    proc = subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_the_scale_child_reads_its_arguments_as_the_options_do() -> None:
    """``--scale-child`` is written by the parent (run_scale_child); typed by hand, it was int() and
    float(): a traceback for a word, a run for ever for --budget inf."""
    from relaysim.sims.bench import sim

    for argv, says in (
        (["--scale-child", "10", "100", "1", "inf", "off"], "expected a number of seconds"),
        (["--scale-child", "ten", "100", "1", "60", "off"], "expected a whole number of phones"),
        (["--scale-child", "10", "100", "1", "60"], "expected DEVICES MESSAGES SEED BUDGET on|off"),
        (["--scale-child", "10", "100", "-1", "60", "on"], "expected an integer from 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            sim.main(argv)
        assert says in str(exc.value.code), exc.value.code


# The types whose bounds --help states (sims.numbers.state_bounds, relay.server._state_bounds); a
# rate's (RATE/BURST, two numbers) are tested on their own below.
BOUNDED_TYPES = {"whole_number", "decimal_number", "_whole", "_seconds", "_cap", "seed_arg", "_seed"}
_BOUNDS = re.compile(
    r"(?:from (?P<low>[0-9.,]+) to|more than (?P<above>[0-9.,]+), at most) (?P<high>[0-9.,]+)(, or off)?"
)


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    yield from walk(cli.build_parser(), "relaysim")
    yield "relaysim relay serve", server.build_parser()
    for name in BENCHES:
        module = importlib.import_module(f"relaysim.sims.bench.{name}")
        yield f"relaysim bench {name}", module._parser()


@pytest.mark.parametrize(
    ("name", "action"), [o for o in OPTIONS if o[1].type is not None], ids=lambda o: str(o)
)
def test_a_number_options_help_states_the_bounds_its_type_holds(name: str, action: argparse.Action) -> None:
    """Most --help texts did not say an option's largest value (the error did): each number option's
    help now ends with its bounds, read from its type, and the type takes the bounds the help states
    and refuses a step past each."""
    qualname = getattr(action.type, "__qualname__", None)
    if qualname == "_rate":
        assert action.help is not None and action.help.endswith(server._rate.bounds), (name, action.help)
        return
    if qualname not in BOUNDED_TYPES:
        assert not hasattr(action.type, "bounds"), name
        return
    bounds = getattr(action.type, "bounds", None)
    assert isinstance(bounds, str) and action.help is not None and action.help.endswith(bounds), (
        name,
        action.help,
    )
    m = _BOUNDS.fullmatch(bounds)
    assert m is not None, bounds
    parse = action.type
    assert parse is not None
    whole = qualname in ("whole_number", "_whole", "_cap", "seed_arg", "_seed")
    step = 1 if whole else 1e-6
    high = m["high"].replace(",", "")
    parse(high)
    with pytest.raises(argparse.ArgumentTypeError):
        parse(str(int(high) + 1) if whole else repr(float(high) * (1 + step)))
    if m["low"] is not None:
        low = m["low"].replace(",", "")
        parse(low)
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(int(low) - 1) if whole else repr(float(low) - step))
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(m["above"].replace(",", ""))


def test_a_relay_serve_rates_help_states_the_bounds_it_holds_to() -> None:
    """relay serve's 14 RATE/BURST options said their bounds only in the error for a value past them:
    each one's --help ends with them (test above), and they are the bounds the type holds to."""
    bounds = server._rate.bounds
    m = re.fullmatch(
        r"rate from ([0-9.]+) to ([0-9,]+) a second, burst from ([0-9]+) to ([0-9,]+), or off", bounds
    )
    assert m is not None, bounds
    least, most, least_burst, most_burst = (g.replace(",", "") for g in m.groups())
    assert server._rate(f"{least}/{least_burst}") is not None
    assert server._rate(f"{most}/{most_burst}") is not None
    for past in (
        f"{float(least) * 0.999!r}/10",
        f"{int(most) + 1}/10",
        f"10/{float(least_burst) * 0.999!r}",
        f"10/{int(most_burst) + 1}",
    ):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a rate this relay can keep"):
            server._rate(past)
    assert server._rate("off") is None
    rates = [a for path, a in OPTIONS if path.startswith("relaysim relay serve") and a.type is server._rate]
    assert len(rates) == 14


def test_every_option_says_what_it_does_and_what_leaving_it_out_gives() -> None:
    """Read as a first-time user reads --help: relay serve's --log-level had no text at all, and 53
    options taking a value did not say what they are when left out (disclose --from and --to, run
    --seed, relay serve --tls-cert; the benchmarks' "(500)" for "(default: 500)")."""
    missing = []
    for path, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            text = action.help if action.help != argparse.SUPPRESS else "-"
            if not text or not text.strip():
                missing.append((path, action.option_strings or action.dest, "no help"))
            elif (
                action.option_strings and action.nargs != 0 and not action.required and "default" not in text
            ):
                missing.append((path, action.option_strings, "no default"))
            elif (
                not action.option_strings
                and action.nargs == "?"
                and action.default is not None
                and "default" not in text
            ):
                missing.append((path, action.dest, "no default"))
    assert missing == []


def test_every_time_or_size_option_says_its_unit() -> None:
    """A time or a size is said in seconds or bytes, in its help or its METAVAR (relay serve's
    --read-timeout READ_TIMEOUT and --max-queued-bytes MAX_QUEUED_BYTES said theirs only in the text,
    --max-frame-size MAX_FRAME_SIZE ...): which unit a number is in is the first thing to know."""
    seen = 0
    for path, parser in _parsers():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
                continue
            name = action.option_strings[-1]
            units = [
                unit
                for words, unit in (
                    (("timeout", "duration", "budget", "warmup", "time-scale"), "second"),
                    (("bytes", "size"), "byte"),
                )
                if any(w in name for w in words)
            ]
            for unit in units:
                seen += 1
                said = f"{action.help} {action.metavar or ''}".lower()
                assert unit in said, (path, name, action.metavar, action.help)
            if name in ("--read-timeout", "--write-timeout"):
                assert action.metavar == "SECONDS", (path, name)
            if name in ("--max-queued-bytes", "--max-frame-size"):
                assert action.metavar == "BYTES", (path, name)
    assert seen >= 10  # (the walk found them)


def test_every_commands_help_shows_its_number_options_bounds() -> None:
    """(As --help prints them, wrapped: each option's bounds are in its command's --help.)"""
    shown = 0
    for path, parser in _parsers():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            bounds = getattr(action.type, "bounds", None)
            if bounds is not None:
                assert " ".join(bounds.split()) in text, (path, action.option_strings, bounds)
                shown += 1
    assert shown >= 50  # (the walk found them)


def test_the_live_runs_least_time_scale_is_the_one_sims_live_holds_to() -> None:
    from relaysim.sims import cli, live

    assert cli.LIVE_MIN_TIME_SCALE == live.MIN_TIME_SCALE
    time_scale = next(
        a
        for a in cli.build_parser()._subparsers._group_actions[0].choices["run"]._actions
        if "--time-scale" in a.option_strings
    )
    assert time_scale.help is not None and time_scale.help.endswith("; from 0.000001 to 1,000")


def test_a_number_options_metavar_names_what_it_counts() -> None:
    """``relay serve --queue-bytes N`` and ``--max-connections-per-address N``: their help counts
    bytes and connections, the metavar said N. An option whose help counts bytes shows BYTES; relay
    serve's other counts show COUNT (its limits read "COUNT, or off", not a bare N)."""
    wrong = [
        f"{name} {action.metavar}: {action.help}"
        for name, action in OPTIONS
        if (
            re.search(r"\bbytes\b", (action.help or "").split("(default")[0])
            and action.metavar not in ("BYTES", "B", "FILE")  # (a file of bytes: no count)
        )
        or (name.startswith("relaysim relay serve ") and action.metavar == "N")
    ]
    assert not wrong, wrong


def test_every_width_option_says_it_reads_columns() -> None:
    """``chart --width`` said "(default: the terminal's)"; it reads COLUMNS as the others do
    (sims.term.terminal_width, held in test_fbi_chart), and says so as they do."""
    widths = {name: action.help for name, action in OPTIONS if name.endswith(" --width")}
    assert {"relaysim chart --width", "relaysim show --width", "relaysim demo --width"} <= set(widths)
    assert all("(default: the terminal's, or COLUMNS)" in (h or "") for h in widths.values()), widths
