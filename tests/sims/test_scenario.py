"""Scenario files: good ones load; broken ones say the file, the key path, the value and what was expected."""

from __future__ import annotations

import pickle
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.sims.scenario import (
    DeviceOffline,
    DeviceOnline,
    LegalProcessEvent,
    NetworkSpec,
    Partition,
    ScenarioError,
    SeizePhone,
    builtin_scenarios,
    load_scenario,
    parse_duration,
    parse_scenario,
)
from relaysim.sims.world.engine import Scheduler
from relaysim.sims.world.network import Network

GOOD = """
[scenario]
name = "t"
duration = "4h"
seed = 3

[network]
latency_ms = 60
latency = [{ between = ["pk", "us"], ms = 180 }]

[[people]]
name = "alice"
devices = [{ region = "pk", offline = [["1h", "2h"]] }]

[[people]]
name = "bob"

[[conversations]]
between = ["alice", "bob"]
messages = [{ at = "10m", from = "alice", text = "hi" }, { at = "1h30m", from = "bob", text = "yo" }]

[[events]]
at = "3h"
kind = "device_offline"
device = "bob/1"
"""


def test_a_good_file_loads() -> None:
    s = parse_scenario(GOOD, "good.toml")
    assert s.duration == 4 * 3600 and s.seed == 3
    assert [d.name for d in s.devices()] == ["alice/1", "bob/1"]
    assert s.devices()[0].offline == ((3600.0, 7200.0),)
    msgs = s.conversations[0].messages
    assert [(m.at, m.sender, m.recipient) for m in msgs] == [
        (600.0, "alice", "bob"),
        (5400.0, "bob", "alice"),
    ]
    assert s.events[0] == DeviceOffline(at=s.events[0].at, device="bob/1")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'duration = "4h"',
            'duration = "4 hours"',
            'bad.toml: scenario.duration: expected a duration like 90, "15m" or "1h30m", got \'4 hours\'',
        ),
        (
            "seed = 3",
            'seed = "three"',
            "bad.toml: scenario.seed: expected an integer from 0 to 9223372036854775807 (2**63 - 1, the largest a TOML file holds), got string 'three'",
        ),
        (
            'region = "pk", offline',
            "region = 7, offline",
            "bad.toml: people[0].devices[0].region: expected a string, got integer 7",
        ),
        (
            'from = "alice", text = "hi"',
            'from = "carol", text = "hi"',
            "bad.toml: conversations[0].messages[0].from: expected one of 'alice' or 'bob', got 'carol'",
        ),
        ('kind = "device_offline"', 'kind = "explode"', "bad.toml: events[0].kind: expected one of"),
        (
            'device = "bob/1"',
            'device = "bob/9"',
            "bad.toml: events[0].device: expected a device like 'alice/1'",
        ),
        (
            "latency_ms = 60",
            "latency_ms = 60\nloss = 1.5",
            "bad.toml: network.loss: expected a probability from 0 to 1, got 1.5",
        ),
        (
            '[["1h", "2h"]]',
            '[["2h", "1h"]]',
            "bad.toml: people[0].devices[0].offline[0]: expected 'to' after 'from'",
        ),
        (
            'name = "bob"',
            'name = "alice"',
            "bad.toml: people[1].name: 'alice' is already the name of another person",
        ),
        ("seed = 3", "seed = 3\ncolour = 1", "bad.toml: scenario.colour: unknown key"),
        (
            'at = "10m"',
            'at = "5h"',
            "bad.toml: conversations[0].messages[0].at: expected a time before the end",
        ),
    ],
)
def test_broken_files_name_the_key_value_and_expectation(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "bad.toml")
    assert str(info.value).startswith(expected), str(info.value)


def test_a_scenario_without_people_is_refused() -> None:
    text = "people = []\n" + GOOD[: GOOD.index("[[people]]")]
    with pytest.raises(ScenarioError, match=r"^bad\.toml: people: no people"):
        parse_scenario(text, "bad.toml")


def test_a_file_larger_than_any_scenario_is_refused_before_it_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relaysim run /dev/zero`` (or a video named .toml) read until memory ran out: MemoryError."""
    import relaysim.sims.scenario as scenario_module

    monkeypatch.setattr(scenario_module, "MAX_SCENARIO_BYTES", len(GOOD.encode()))
    exact = tmp_path / "exact.toml"
    exact.write_text(GOOD, encoding="utf-8")
    assert load_scenario(exact) == parse_scenario(GOOD, "exact.toml")
    big = tmp_path / "big.toml"
    big.write_text(GOOD + "#", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"^big\.toml: larger than \d+ MiB: not a scenario file"):
        load_scenario(big)


def test_a_file_not_in_utf_8_is_refused_and_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"#\xff\n" + GOOD.encode())
    with pytest.raises(
        ScenarioError, match=r"^bad\.toml: not UTF-8 text \(byte 0xff at line 1, column 2; offset 1\)$"
    ):
        load_scenario(bad)
    # the line and column an editor shows (it said only the offset); the column counts characters
    bad.write_bytes(b"# caf\xc3\xa9\n# \xe2\x80\x9cok\xe2\x80\x9d \xe9\n" + GOOD.encode())
    with pytest.raises(
        ScenarioError, match=r"^bad\.toml: not UTF-8 text \(byte 0xe9 at line 2, column 8; offset 19\)$"
    ):
        load_scenario(bad)
    bad.write_bytes(GOOD.replace("alice", "al\u00e9").encode("latin-1"))
    line = GOOD[: GOOD.index("alice")].count("\n") + 1
    with pytest.raises(
        ScenarioError, match=rf"^bad\.toml: not UTF-8 text \(byte 0xe9 at line {line}, column \d+"
    ):
        load_scenario(bad)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_scenario(bom) == parse_scenario(GOOD, "bom.toml")


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="no /dev/fd to name a pipe by")
def test_a_pipe_with_a_writer_is_read_whole(tmp_path: Path) -> None:
    """``relaysim run <(cat x.toml)``: /dev/fd/N, a pipe its writer holds open. A pipe opened without
    waiting (so that a named pipe no one writes to is refused, not waited on for ever) is still read
    to its end, what is written after it is opened included."""
    import os
    import threading

    text = GOOD.encode()
    read, write = os.pipe()
    try:
        os.write(write, text[:100])

        def rest() -> None:
            os.write(write, text[100:])
            os.close(write)

        writer = threading.Thread(target=rest)
        writer.start()
        try:
            assert load_scenario(f"/dev/fd/{read}") == parse_scenario(GOOD, str(read))
        finally:
            writer.join()
    finally:
        os.close(read)


def test_a_file_without_a_scenario_table_says_so() -> None:
    for text in ("", GOOD[GOOD.index("[network]") :]):
        with pytest.raises(ScenarioError) as info:
            parse_scenario(text, "bad.toml")
        assert str(info.value) == "bad.toml: missing the [scenario] table (its name and duration)"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("escrow_key_stolen", "expected one of 'at', 'kind'"),
        ('device_offline"\ndevice = "bob/1', "expected one of 'at', 'kind', 'device'"),
        ('verify_safety_number"\nwho = "alice"\nwhom = "bob', "expected one of 'at', 'kind', 'who', 'whom'"),
    ],
)
def test_an_unknown_key_of_an_event_lists_every_key_it_may_have(kind: str, expected: str) -> None:
    text = GOOD.replace(_EVENT_END, f'{_EVENT_END}\n[[events]]\nat = "1h"\nkind = "{kind}"\ncolour = 1\n')
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    line = text.splitlines().index("colour = 1") + 1  # the line the key is written on
    assert str(info.value) == f"bad.toml: events[1].colour: unknown key; {expected} (line {line})"


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.toml: not valid TOML"):
        parse_scenario("[scenario\n", "bad.toml")


_HEAD = '[scenario]\nname = "x"\nduration = "3h"\n\n'
_ONE_PER_PERSON = (
    "a scenario's people are an array of tables: begin each person with [[people]] (double brackets)"
)


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        (
            '[people]\nname = "amira"\n\n[people]\nname = "ben"\n',
            f"people: not valid TOML: the table [people] is declared twice (first at line 5); {_ONE_PER_PERSON} (line 8)",
        ),
        (
            '[[people]]\nname = "amira"\n\n[people]\nname = "ben"\n',
            f"people: not valid TOML: [people] after [[people]] at line 5; {_ONE_PER_PERSON} (line 8)",
        ),
        (
            '[people]\nname = "amira"\n\n[[people]]\nname = "ben"\n',
            f"people: not valid TOML: [[people]] after [people] at line 5; {_ONE_PER_PERSON} (line 8)",
        ),
        (
            '[events]\nat = "1h"\n[events]\nat = "2h"\n',
            "events: not valid TOML: the table [events] is declared twice (first at line 5); a scenario's events "
            "are an array of tables: begin each event with [[events]] (double brackets) (line 7)",
        ),
        (
            '[relay]\nprofile = "signal"\n\n[relay]\nregion = "pk"\n',
            "relay: not valid TOML: the table [relay] is declared twice (first at line 5): give all its keys "
            "under one [relay] (line 8)",
        ),
    ],
)
def test_a_table_declared_twice_is_said_with_its_lines_and_what_to_write(tables: str, expected: str) -> None:
    """``[people]`` written once per person was tomllib's "Cannot declare ('people',) twice (at line 8,
    column 8)": right about the line, silent on what to write. The error names both headers' lines and,
    for a table the scenario takes as an array of tables, [[people]]."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_HEAD + tables, "bad.toml")
    assert str(info.value) == f"bad.toml: {expected}"


def test_another_toml_error_is_tomllibs_own() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_HEAD + "a = 1\na = 2\n", "bad.toml")
    assert str(info.value) == "bad.toml: not valid TOML: Cannot overwrite a value (at line 6, column 6)"


@given(st.integers(0, 10**6), st.integers(0, 59), st.integers(0, 23))
def test_durations(seconds: int, minutes: int, hours: int) -> None:
    assert parse_duration(seconds) == seconds
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == hours * 3600 + minutes * 60 + seconds


@pytest.mark.parametrize(
    "bad",
    [
        "1h1h",  # a unit twice
        "30m1h",  # units out of order (d, h, m, s)
        "1s1m",
        "\u0661\u0662m",  # Arabic-Indic digits: \\d would take them
        "\uff11\uff12m",  # full-width digits
        "",
        "m",
        "1.h",
    ],
)
def test_a_duration_is_days_hours_minutes_seconds_in_order_in_ascii_digits(bad: str) -> None:
    with pytest.raises(ValueError, match=r'^expected a duration like 90, "15m" or "1h30m", got'):
        parse_duration(bad)


def test_a_duration_too_large_for_a_number_is_refused() -> None:
    assert parse_duration("1d2h3m4.5s") == 93784.5
    with pytest.raises(ValueError, match=r"^expected a finite duration, got '9999"):
        parse_duration("9" * 400 + "s")
    with pytest.raises(ScenarioError, match=r"^bad\.toml: events\[0\]\.at: expected a finite duration"):
        parse_scenario(GOOD.replace('at = "3h"', f'at = "{"9" * 400}m"'), "bad.toml")


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('duration = "4h"', "duration = HUGE", "scenario.duration"),
        ("latency_ms = 60", "latency_ms = HUGE", "network.latency_ms"),
        ("ms = 180", "ms = -HUGE", "network.latency[0].ms"),
        ('{ at = "10m"', "{ at = HUGE", "conversations[0].messages[0].at"),
        ('offline = [["1h", "2h"]]', 'offline = [["1h", HUGE]]', "people[0].devices[0].offline[0][1]"),
        ("[[people]]", "[traffic]\nreply_probability = HUGE\n\n[[people]]", "traffic.reply_probability"),
    ],
)
def test_an_integer_too_large_for_a_number_is_named_not_an_internal_error(
    old: str, new: str, path: str
) -> None:
    """TOML reads an integer of up to 4,300 digits; past about 1.8e308 it is too large for a float,
    and each key that read one as a number (a duration, a latency, a probability, a rate, a weight)
    ended in float()'s OverflowError: `relaysim run` said "internal error". Now it is named by its
    key path and line, wherever it is, as NaN is, its digits counted rather than shown."""
    text = GOOD.replace(old, new.replace("HUGE", "9" * 400), 1)
    line = next(n for n, t in enumerate(text.split("\n"), 1) if "9" * 400 in t)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    sign = "a negative" if "-HUGE" in new else "an"
    assert str(info.value) == (
        f"bad.toml: {path}: expected a finite number, got {sign} integer of 400 digits (too large for a "
        f"number) (line {line})"
    )
    with pytest.raises(ValueError, match=r"^expected a finite duration, got an integer of 400 digits"):
        parse_duration(int("9" * 400))


LONG = "x" * 5000


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('name = "t"', f'name = "{LONG}"', "scenario.name: expected 1-80 letters"),
        ("latency_ms = 60", f'latency_ms = "{LONG}"', "network.latency_ms: expected a number, got string"),
        ('offline = [["1h", "2h"]]', f'offline = [["1h", "{LONG}"]]', "offline[0][1]: expected a duration"),
        (
            'offline = [["1h", "2h"]]',
            f'offline = [["1h", "2h", "{LONG}"]]',
            "offline[0]: expected a [from, to] pair",
        ),
        (
            'offline = [["1h", "2h"]]',
            f'offline = [["5h", "6h{" " * 5000}"]]',  # (blanks a duration may hold)
            "offline[0]: expected a window starting",
        ),
        (
            '{ region = "pk",',
            f'{{ region = "{LONG}",',
            "devices[0].region: expected one of 'pk', 'us', got 'xxx",
        ),
        (
            'between = ["pk", "us"]',
            f'between = ["pk", "{LONG}"]',
            "network.latency[0].between: expected regions",
        ),
        ('kind = "device_offline"', f'kind = "{LONG}"', "events[0].kind: expected one of"),
        (
            'kind = "device_offline"\ndevice = "bob/1"',
            f'kind = "legal_process"\nprocess = "{LONG}"',
            "events[0].process: expected one of",
        ),
        (
            '[[people]]\nname = "alice"',
            f'[generate]\npeople = {"9" * 300}\n\n[[people]]\nname = "alice"',
            "generate.people",
        ),
    ],
)
def test_a_long_value_is_shown_cut_short_in_an_error(old: str, new: str, said: str) -> None:
    """An error shows the value it refuses, and a value of any length was shown whole: a name, a
    region or a window of 5,000 characters made a message of 5,000 characters, a region's name
    repeated in the list of regions there are, an integer of 300 digits all of them. A value is now
    shown up to 80 characters of its repr, then how long it is."""
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: ") and said in message, message[:300]
    assert len(message) < 600, message
    assert "characters)" in message or "an integer of 300 digits" in message, message


def test_scheduler_breaks_ties_in_scheduling_order() -> None:
    s = Scheduler()
    seen: list[str] = []
    s.at(2.0, seen.append, "c")
    s.at(1.0, seen.append, "a")
    s.at(2.0, seen.append, "d")
    s.at(1.0, seen.append, "b")
    s.run(until=1.5)
    assert seen == ["a", "b"] and s.now == 1.5
    s.run(until=10)
    assert seen == ["a", "b", "c", "d"]


@given(
    st.lists(st.integers(0, 6), max_size=12),
    st.lists(st.integers(0, 6), max_size=12),
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=12),
    st.integers(0, 7),
)
def test_a_stream_runs_in_the_order_at_would_have_ties_included(
    before: list[int], streamed: list[int], during: list[tuple[int, int]], until: int
) -> None:
    """Scheduler.stream(items) is ``for i in items: at(when(i), fn, i)``: the same order of events, ties
    with events scheduled before, after and while it runs included, and across run(until=…) calls."""

    def trace(use_stream: bool) -> list[object]:
        s = Scheduler()
        seen: list[object] = []

        def spawn(label: str, delay: int) -> None:
            seen.append(label)
            s.after(delay, seen.append, f"{label}+{delay}")

        for i, t in enumerate(before):
            s.at(float(t), seen.append, f"before{i}")
        items = sorted(float(t) for t in streamed)
        if use_stream:
            s.stream(items, float, seen.append)
        else:
            for at in items:
                s.at(at, seen.append, at)
        for i, (t, delay) in enumerate(during):
            s.at(float(t), spawn, f"during{i}", delay)
        s.run(until=float(until))
        seen.append(("len", len(s)))
        s.run(until=20.0)
        return seen

    assert trace(use_stream=True) == trace(use_stream=False)


def test_network_partitions_and_loss_are_counted() -> None:
    import random

    net = Network(
        NetworkSpec(latency_ms=100, jitter_ms=0, partitions=(Partition(("pk",), 10, 20),)), random.Random(1)
    )
    assert net.transit("pk", "us", 5) == [0.1]
    assert net.transit("pk", "us", 15) == [] and net.partitioned == 1
    assert net.transit("us", "us", 15) == [0.05]
    lossy = Network(NetworkSpec(loss=1.0), random.Random(1))
    assert lossy.transit("a", "b", 0) == [] and lossy.lost == 1


# --- every wrong scenario is refused ------------------------------------------------------------

_RELAY = '[[people]]\nname = "alice"'  # a place to put a [relay] table in GOOD
_EVENT_END = 'device = "bob/1"\n'  # a place to add events after GOOD's one


def _order(extra: str, name: str = "order", process: str = "subpoena") -> str:
    return (
        f'{_EVENT_END}\n[[events]]\nat = "1h"\nkind = "legal_process"\nprocess = "{process}"\n'
        f'target = "alice"\nname = "{name}"\n{extra}\n'
    )


def _partition(text: str) -> str:
    return f"latency_ms = 60\npartitions = [{text}]"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # non-finite numbers, anywhere (TOML has nan and inf)
        ("latency_ms = 60", "latency_ms = nan", "network.latency_ms: expected a finite number, got nan"),
        ("ms = 180", "ms = inf", "network.latency[0].ms: expected a finite number, got inf"),
        ("latency_ms = 60", "latency_ms = 60\nloss = nan", "network.loss: expected a finite number, got nan"),
        (
            "latency_ms = 60",
            "latency_ms = 60\njitter_ms = -inf",
            "network.jitter_ms: expected a finite number",
        ),
        # negative latency rules; two rules for one pair of regions
        (
            "ms = 180",
            "ms = -180",
            "network.latency[0].ms: expected from 0 to 60,000 milliseconds (a minute; a link that is down is a "
            "partition), got -180",
        ),
        # latencies of years: a link that slow is down (a partition)
        ("ms = 180", "ms = 3.2e10", "network.latency[0].ms: expected from 0 to 60,000 milliseconds"),
        (
            "latency_ms = 60",
            "latency_ms = 31536000000",
            "network.latency_ms: expected from 0 to 60,000 milliseconds (a minute; a link that is down is a "
            "partition), got 3.1536e+10",
        ),
        (
            "latency_ms = 60",
            "latency_ms = 60\njitter_ms = 60001",
            "network.jitter_ms: expected from 0 to 60,000",
        ),
        (
            "latency_ms = 60",
            "latency_ms = 60\njitter_ms = -1",
            "network.jitter_ms: expected from 0 to 60,000",
        ),
        (
            _RELAY,
            f"[defences]\nexit_latency_ms = 1e9\n\n{_RELAY}",
            "defences.exit_latency_ms: expected from 0 to 60,000 milliseconds",
        ),
        (
            "ms = 180 }]",
            'ms = 180 }, { between = ["us", "pk"], ms = 20 }]',
            "network.latency[1].between: network.latency[0] already gives the latency between 'us' and 'pk'",
        ),
        # regions that nothing names
        (
            "latency_ms = 60",
            _partition('{ regions = ["pakistan"], from = "1h", to = "2h" }'),
            "network.partitions[0].regions[0]: expected a region where the relay or a device is ('pk', 'us'), "
            "got 'pakistan'",
        ),
        (
            'region = "pk", offline',
            'region = "mars", offline',
            "people[0].devices[0].region: expected one of 'pk', 'us', got 'mars'",
        ),
        (
            'between = ["pk", "us"]',
            'between = ["pk", "uk"]',
            "network.latency[0].between: expected regions where the relay or a device is ('pk', 'us'), got 'uk'",
        ),
        # a partition of every region cuts nothing
        (
            "latency_ms = 60",
            _partition('{ regions = ["us", "pk"], from = "1h", to = "2h" }'),
            "network.partitions[0].regions: names every region of the scenario ('pk', 'us'), so it cuts no path: "
            "a partition cuts the regions it lists off from the others",
        ),
        # a partition naming a region twice; a region with no name, wherever a region is named
        (
            "latency_ms = 60",
            _partition('{ regions = ["pk", "us", "pk"], from = "1h", to = "2h" }'),
            "network.partitions[0].regions[2]: 'pk' is named twice",
        ),
        (
            "latency_ms = 60",
            _partition('{ regions = [""], from = "1h", to = "2h" }'),
            "network.partitions[0].regions[0]: expected a region's name (not empty or blank), got ''",
        ),
        (
            'between = ["pk", "us"]',
            'between = ["pk", ""]',
            "network.latency[0].between[1]: expected a region's name",
        ),
        (
            'region = "pk", offline',
            'region = "", offline',
            "people[0].devices[0].region: expected a region's name",
        ),
        (
            'name = "bob"',
            'name = "bob"\nregion = " "',
            "people[1].region: expected a region's name (not empty or blank), got ' '",
        ),
        (_RELAY, f'[relay]\nregion = ""\n\n{_RELAY}', "relay.region: expected a region's name"),
        (
            _RELAY,
            f'[generate]\npeople = 4\nregions = {{ "" = 1, us = 1 }}\n\n{_RELAY}',
            "generate.regions.\"\": expected a region's name (not empty or blank), got ''",
        ),
        (
            'name = "bob"',
            'name = "bob"\nregion = "us\\u202e"',
            "people[1].region: expected a region's name without control or format characters, got 'us\\u202e'",
        ),
        # a preservation request covers no period
        (
            _EVENT_END,
            _order('to = "2h"', process="preservation"),
            "events[1].to: a preservation request freezes what is held at service (for 90 days, 18 U.S.C. "
            "2703(f)(2)) and covers no period: remove 'to'",
        ),
        (
            _EVENT_END,
            _order('from = "10m"', process="preservation"),
            "events[1].from: a preservation request",
        ),
        # more devices than the relay registers to one account
        (
            'region = "pk", offline = [["1h", "2h"]] }]',
            'region = "pk", offline = [["1h", "2h"]] }' + ", {}" * 64 + "]",
            "people[0].devices: expected at most 64 devices (the most one account may have on the relay), got 65",
        ),
        # a ghost device that would be the 65th of its account (the relay would refuse it)
        (
            'region = "pk", offline = [["1h", "2h"]] }]',
            'region = "pk", offline = [["1h", "2h"]] }'
            + ", {}" * 63
            + ']\n[[events]]\nat = "1h"\nkind = "exceptional_access"\ndemand = "ghost_device"\ntarget = "alice"',
            "events[0].target: 'alice' would have 65 devices with this ghost; an account has at most 64",
        ),
        # addresses that are not IP addresses
        (
            'region = "pk", offline',
            'region = "pk", address = "203.0.113.300", offline',
            "people[0].devices[0].address: expected an IPv4 or IPv6 address, got '203.0.113.300'",
        ),
        (
            _RELAY,
            f'[relay]\naddress = "relay.example"\n\n{_RELAY}',
            "relay.address: expected an IPv4 or IPv6 address, got 'relay.example'",
        ),
        (
            'name = "bob"',
            'name = "bob"\naddress = "bob.example"',
            "people[1].address: expected an IPv4 or IPv6 address, got 'bob.example'",
        ),
        # two legal processes with one name: one disclosure would overwrite the other
        (
            _EVENT_END,
            _order("") + _order("").replace(_EVENT_END, "").replace('"subpoena"', '"search_warrant"'),
            "events[2].name: expected a name of its own (its disclosure is filed under it), got 'order', "
            "already the name of events[1]",
        ),
        # ... or names that differ only in case: on a file system that ignores case, the same files
        (
            _EVENT_END,
            _order("", name="Order-A")
            + _order("", name="order-a").replace(_EVENT_END, "").replace('"subpoena"', '"search_warrant"'),
            "events[2].name: expected a name of its own (its disclosure is filed under it), got 'order-a', "
            "already the name of events[1] but for case ('Order-A')",
        ),
        # durations too long (or nothing) to simulate
        (
            'duration = "4h"',
            'duration = "366d"',
            'scenario.duration: expected a positive duration of at most "365d"',
        ),
        (
            'duration = "4h"',
            "duration = 1e300",
            'scenario.duration: expected a positive duration of at most "365d"',
        ),
        ('duration = "4h"', "duration = 0", "scenario.duration: expected a positive duration"),
        # windows wholly after the end of the run; offline windows that overlap
        (
            '[["1h", "2h"]]',
            '[["1h", "2h"], ["5h", "6h"]]',
            "people[0].devices[0].offline[1]: expected a window starting before the end of the run, got ['5h', '6h'] (from 18,000 s), after the scenario's end, duration \"4h\" (14,400 s)",
        ),
        (
            '[["1h", "2h"]]',
            '[["1h", "2h"], ["1h30m", "3h"]]',
            "people[0].devices[0].offline: expected windows that do not overlap",
        ),
        (
            "latency_ms = 60",
            _partition('{ regions = ["pk"], from = "4h", to = "6h" }'),
            'network.partitions[0].from: expected a time before the end of the run, got "4h" (14,400 s), at the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order('to = "5h"'),
            'events[1].to: expected a time by the end of the run, got "5h" (18,000 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order('from = "4h"\nto = "4h"'),
            'events[1].from: expected a time before the end of the run, got "4h" (14,400 s), at the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            "latency_ms = 60",
            _partition('{ regions = ["pk"], from = "1h", to = "2h", mode = "queue" }'),
            "network.partitions[0].mode: expected one of 'drop', 'hold', got 'queue'",
        ),
        # wrong types: a bool is not an integer, a list is not a profile name
        (
            "seed = 3",
            "seed = true",
            "scenario.seed: expected an integer from 0 to 9223372036854775807 (2**63 - 1, the largest a TOML file holds), got boolean True",
        ),
        # a seed from 0 to 2**63 - 1: a negative one made [generate]'s graph of its absolute value, and
        # TOML's integers end at 2**63 - 1 (tomllib reads larger ones: they were run)
        (
            "seed = 3",
            "seed = -3",
            "scenario.seed: expected an integer from 0 to 9223372036854775807 (2**63 - 1, the largest a TOML "
            "file holds), got -3",
        ),
        ("seed = 3", "seed = 9223372036854775808", "scenario.seed: expected an integer from 0 to"),
        ("seed = 3", f"seed = {10**300}", "scenario.seed: expected an integer from 0 to"),
        (
            "seed = 3",
            "seed = 3\ncompare_profiles = [[1], 2]",
            "scenario.compare_profiles[0]: expected one of",
        ),
        ("ms = 180", 'ms = "180"', "network.latency[0].ms: expected a number, got string '180'"),
        (
            "latency_ms = 60",
            "latency_ms = 60\nduplication = 2",
            "network.duplication: expected a probability",
        ),
        # the scenario's name names its output folder
        ('name = "t"', 'name = "../../etc"', "scenario.name: expected 1-80 letters, digits, '_', '.' or '-'"),
        ('name = "t"', 'name = ".."', "scenario.name: expected 1-80 letters, digits, '_', '.' or '-'"),
        (_EVENT_END, _order("", name=".."), "events[1].name: expected 1-80 letters, digits, '_', '.' or '-'"),
        (_EVENT_END, _order("", name="."), "events[1].name: expected 1-80 letters, digits, '_', '.' or '-'"),
        (
            _EVENT_END,
            _order("", name="../x"),
            "events[1].name: expected 1-80 letters, digits, '_', '.' or '-'",
        ),
        # ... and never a Windows device (its files would be written to the device: nowhere)
        (
            'name = "t"',
            'name = "Con.run"',
            "scenario.name: expected a name Windows can give a folder (CON is the name of one of its devices), "
            "got 'Con.run'",
        ),
        (
            _EVENT_END,
            _order("", name="nul"),
            "events[1].name: expected a name Windows can give a file (NUL is the name of one of its devices: "
            "nul.json would be written to it), got 'nul'",
        ),
        (
            _EVENT_END,
            _order("", name="lpt1.x"),
            "events[1].name: expected a name Windows can give a file (LPT1",
        ),
        # ... nor the relay's: analysis/relay.json is the analysis of the relay's own records
        (
            _EVENT_END,
            _order("", name="Relay"),
            "events[1].name: expected a name other than 'relay' (analysis/relay.json is the analysis of the "
            "relay's own records; a disclosure's is analysis/NAME.json), got 'Relay'",
        ),
        # an exceptional-access demand that covers everyone names no target
        (
            _EVENT_END,
            f'{_EVENT_END}\n[[events]]\nat = "1h"\nkind = "exceptional_access"\ndemand = "key_escrow"\n'
            'target = "carol"\n',
            "events[1].target: a key_escrow demand covers everyone; only a ghost_device names a target",
        ),
        # the theft of an escrow key that no key_escrow demand made
        (
            _EVENT_END,
            f'{_EVENT_END}\n[[events]]\nat = "1h"\nkind = "escrow_key_stolen"\n',
            "events[1].kind: an escrow_key_stolen needs an escrow key to steal: add an exceptional_access event "
            'with demand = "key_escrow"',
        ),
        ('events]]\nat = "3h"', 'events]]\nat = "5h"', "events[0].at: expected a time within the scenario"),
        # a hair past the end is shown in full: ":g" wrote both "14400 s", as if the time were allowed
        (
            'events]]\nat = "3h"',
            'events]]\nat = "4h0.0000001s"',
            'events[0].at: expected a time within the scenario, got "4h0.0000001s" (14400.0000001 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order('to = "4h0.0000001s"'),
            'events[1].to: expected a time by the end of the run, got "4h0.0000001s" (14400.0000001 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            'duration = "4h"',
            'duration = "365d0.000001s"',
            'scenario.duration: expected a positive duration of at most "365d" (3.1536e+07 s), got '
            '"365d0.000001s" (31536000.000001 s)',
        ),
        # an order served past the longest run, as `relaysim disclose --at 1e308` or "366d" is refused:
        # a scenario's events happen by its end, and its duration is at most "365d"
        (
            _EVENT_END,
            _order("").replace('at = "1h"', "at = 1e308"),
            'events[1].at: expected a time within the scenario, got 1e+308 s, after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order("").replace('at = "1h"', 'at = "366d"'),
            'events[1].at: expected a time within the scenario, got "366d" (31,622,400 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        # a legal process's window, read as its instrument reads it (served at 1h = 3600 s)
        (
            _EVENT_END,
            _order('to = "30m"', process="pen_register"),
            "events[1].to: expected a time after the order is served (3600 s; a pen register collects from "
            "service on), got 1800 s",
        ),
        (
            _EVENT_END,
            _order('from = "10m"\nto = "1h"', process="wiretap"),
            "events[1].to: expected a time after the order is served (3600 s; a wiretap order collects",
        ),
        (
            _EVENT_END,
            _order('from = "2h"\nto = "3h"', process="search_warrant"),
            "events[1].from: expected a time before the order is served (3600 s; a search warrant covers what "
            "is held then), got 7200 s",
        ),
        (
            _EVENT_END,
            _order('from = "1h"', process="subpoena"),
            "events[1].from: expected a time before the order is served (3600 s;",
        ),
        # a forward-looking order's 'from' before service: collection starts at service anyway
        (
            _EVENT_END,
            _order('from = "30m"', process="pen_register"),
            "events[1].from: expected a time at or after the order is served (3600 s; a pen register collects "
            "from service on, never what came before), got 1800 s: remove 'from', or give a later time",
        ),
        (
            _EVENT_END,
            _order('from = "59m"\nto = "2h"', process="wiretap"),
            "events[1].from: expected a time at or after the order is served (3600 s; a wiretap order collects",
        ),
        # ... its name after the article it is said with (it read "a interception order")
        (
            _EVENT_END,
            _order('from = "30m"', process="telegraph_act_5_2"),
            "events[1].from: expected a time at or after the order is served (3600 s; an interception order "
            "under s.5(2) collects from service on",
        ),
        (
            _EVENT_END,
            _order('from = "2h"\nwithdrawn = "1h30m"', process="pen_register"),
            "events[1].withdrawn: expected a time after 'from' (7200 s), got 5400 s",
        ),
        (
            _EVENT_END,
            _order('withdrawn = "5h"', process="pen_register"),
            'events[1].withdrawn: expected a time by the end of the run, got "5h" (18,000 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order('to = "2h"\nwithdrawn = "3h"', process="pen_register"),
            "events[1].withdrawn: expected a time before 'to' (7200 s; the order lapses then, and a lapsed order "
            "cannot be withdrawn), got 10800 s",
        ),
        (
            _EVENT_END,
            _order('to = "2h"\nwithdrawn = "2h"', process="wiretap"),
            "events[1].withdrawn: expected a time before 'to' (7200 s;",
        ),
        # when a provider that did not comply answered (BlackBerry's refusal of the PTA's demand, dated
        # 2015-11-30, months after service): between service and the withdrawal, by the end and by 'to'
        (
            _EVENT_END,
            _order('answered = "2h"', process="search_warrant"),
            "events[1].answered: a search warrant is answered at service; only a demand in force from service "
            "on (a forward-looking instrument) can be answered later",
        ),
        (
            _EVENT_END,
            _order('answered = "30m"', process="pen_register"),
            "events[1].answered: expected a time at or after the demand is served (3600 s), got 1800 s",
        ),
        (
            _EVENT_END,
            _order('withdrawn = "2h"\nanswered = "3h"', process="pen_register"),
            "events[1].answered: expected a time by the withdrawal (7200 s): a withdrawn demand is answered no "
            "more, got 10800 s",
        ),
        (
            _EVENT_END,
            _order('answered = "5h"', process="pen_register"),
            'events[1].answered: expected a time by the end of the run, got "5h" (18,000 s), after the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _EVENT_END,
            _order('to = "2h"\nanswered = "3h"', process="wiretap"),
            "events[1].answered: expected a time by 'to' (7200 s; the order lapses then), got 10800 s",
        ),
        # a text too large for the frame that carries it; a frame size the simulation does not take
        (
            'text = "hi"',
            f'text = "{"x" * 258145}"',
            "conversations[0].messages[0].text: expected at most 258144 bytes (UTF-8), so that its envelopes to "
            "bob's 1 device fit in one frame of the relay's (at most 262144 bytes), got 258145 bytes",
        ),
        (
            _RELAY,
            f'[defences]\npadding = "pow2"\n\n[[groups]]\nname = "g"\nmembers = ["alice", "bob"]\n'
            f'timeline = [{{ at = "1m", from = "bob", text = "{"é" * 65536}" }}]\n\n{_RELAY}',
            "groups[0].timeline[0].text: expected at most 131071 bytes (UTF-8), so that it fits in one frame of "
            "the relay's (at most 262144 bytes), got 131072 bytes",
        ),
        (
            _RELAY,
            f"[relay]\nmax_frame_bytes = 4096\n\n{_RELAY}",
            "relay.max_frame_bytes: not a setting of the simulated relay: its frames are at most 262144 bytes",
        ),
        # a run that would end after the calendar's last day
        (
            "seed = 3",
            "seed = 3\nstart = 9999-12-31T22:00:00Z",
            "scenario.start: expected a start from which the run (14400 s) ends by 9999-12-31 (the last day the "
            "calendar has), got 9999-12-31 22:00:00+00:00",
        ),
        (
            "seed = 3",
            "seed = 3\nstart = 9999-12-31T21:00:00",
            "scenario.start: expected a start from which the run",
        ),
        # a move of a device nobody has, after the end, or to what is not an address
        (
            _RELAY,
            f'[traffic]\nmoves = [{{ device = "zed/1", at = "1h", address = "100.64.0.9" }}]\n\n{_RELAY}',
            "traffic.moves[0].device: expected a device like 'alice/1' (alice/1, bob/1), got 'zed/1'",
        ),
        (
            _RELAY,
            f'[traffic]\nmoves = [{{ device = "bob/1", at = "4h", address = "100.64.0.9" }}]\n\n{_RELAY}',
            'traffic.moves[0].at: expected a time before the end of the run, got "4h" (14,400 s), at the scenario\'s end, duration "4h" (14,400 s)',
        ),
        (
            _RELAY,
            f'[traffic]\nmoves = [{{ device = "bob/1", at = "1h", address = "not-an-ip" }}]\n\n{_RELAY}',
            "traffic.moves[0].address: expected an IPv4 or IPv6 address, got 'not-an-ip'",
        ),
        # [traffic] keys that shape generated traffic, in a scenario without [generate]
        (
            _RELAY,
            f"[traffic]\npopular = 1\n\n{_RELAY}",
            "traffic.popular: shapes generated traffic, and the scenario has no [generate] table: it would do "
            "nothing (only read_receipts, read_delay and moves apply to [[conversations]])",
        ),
        (
            _RELAY,
            f"[traffic]\nreply_probability = 0.5\n\n{_RELAY}",
            "traffic.reply_probability: shapes generated",
        ),
        (_RELAY, f"[traffic]\nhouseholds = 0.5\n\n{_RELAY}", "traffic.households: shapes generated"),
        # a median delay beyond any run: the log-normal draw overflowed (OverflowError, internal error)
        (
            _RELAY,
            f"[traffic]\nread_receipts = true\nread_delay = 1e308\n\n{_RELAY}",
            'traffic.read_delay: expected a duration of at most "365d" (3.1536e+07 s, the longest run), got 1e+308 s',
        ),
        (
            _RELAY,
            f'[traffic]\nread_delay = "366d"\n\n{_RELAY}',
            'traffic.read_delay: expected a duration of at most "365d" (3.1536e+07 s, the longest run), got "366d" '
            "(31,622,400 s)",
        ),
        # a scenario's name that is only too long was said to hold something other than letters
        (
            'name = "t"',
            f'name = "{"a" * 81}"',
            "scenario.name: expected 1-80 letters, digits, '_', '.' or '-'",
        ),
        # receipts batched every 0 s have no next batch
        (
            _RELAY,
            f'[defences]\nreceipts = "batched"\nreceipt_batch = 0\n\n{_RELAY}',
            "defences.receipt_batch: expected a positive duration (at least 0.001 s), got 0 s",
        ),
        (
            _RELAY,
            f'[defences]\nreceipt_batch = "0s"\n\n{_RELAY}',
            'defences.receipt_batch: expected a positive duration (at least 0.001 s), got "0s" (0 s)',
        ),
    ],
)
def test_every_wrong_scenario_is_refused(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "bad.toml")
    assert str(info.value).startswith(f"bad.toml: {expected}"), str(info.value)
    assert "\n" not in str(info.value)


_GROUP = '[[groups]]\nname = "g"\nmembers = ["alice", "bob"]\ntimeline = [{ at = "5h", from = "alice", text = "hi" }]\n'


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('at = "3h"', 'at = "5h"', "events[0].at"),
        ('{ at = "10m", from = "alice"', '{ at = "5h", from = "alice"', "conversations[0].messages[0].at"),
        (
            "latency_ms = 60",
            _partition('{ regions = ["pk"], from = "5h", to = "6h" }'),
            "network.partitions[0].from",
        ),
        ('offline = [["1h", "2h"]]', 'offline = [["5h", "6h"]]', "people[0].devices[0].offline[0]"),
        (_EVENT_END, _order('to = "5h"'), "events[1].to"),
        (_EVENT_END, _order('from = "5h"\nto = "6h"'), "events[1].from"),
        (_EVENT_END, _order('to = "3h30m"\nwithdrawn = "5h"', process="pen_register"), "events[1].withdrawn"),
        (_EVENT_END, _order('answered = "5h"', process="pen_register"), "events[1].answered"),
        (
            _RELAY,
            f'[traffic]\nmoves = [{{ device = "alice/1", at = "5h", address = "192.0.2.9" }}]\n\n{_RELAY}',
            "traffic.moves[0].at",
        ),
        (_EVENT_END, f"{_EVENT_END}\n{_GROUP}", "groups[0].timeline[0].at"),
    ],
)
def test_a_time_past_the_end_is_said_as_the_file_writes_it(old: str, new: str, path: str) -> None:
    """A time after the end of the run was said in seconds only: "events[0].at: expected a time within
    the scenario (10800 s), got 18000 s" where the file says at = "5h" and duration = "3h". Every key
    that takes a time says it, and the duration, as written, each with its seconds."""
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "bad.toml")
    message = str(info.value)
    assert message.startswith(f"bad.toml: {path}: expected "), message
    written = (
        "['5h', '6h'] (from 18,000 s)" if "offline" in path else '"5h" (18,000 s)'
    )  # (a window: its pair)
    assert f"got {written}, " in message, message
    assert 'after the scenario\'s end, duration "4h" (14,400 s)' in message, message


@pytest.mark.parametrize(
    ("duration", "at", "said"),
    [
        # a number under 60: as the first unit that holds the time refused
        ("3", '"10m"', 'duration 3 (3 s: a bare number is seconds; for 3 hours, write duration = "3h")'),
        ("3", "100", 'duration 3 (3 s: a bare number is seconds; for 3 minutes, write duration = "3m")'),
        (
            "1.5",
            '"1d"',
            'duration 1.5 (1.5 s: a bare number is seconds; for 1.5 days, write duration = "1.5d")',
        ),
        # a larger one is more likely seconds meant: the same duration with units
        ("5400", '"2h"', 'duration 5400 (5400 s: a bare number is seconds, duration = "1h30m" with a unit)'),
        ("50", '"400d"', 'duration 50 (50 s: a bare number is seconds, duration = "50s" with a unit)'),
    ],
)
def test_a_time_past_a_bare_number_duration_says_the_number_is_seconds(
    duration: str, at: str, said: str
) -> None:
    """``duration = 3`` is 3 seconds (taken, as it always was), and the first error was then a message's
    or an event's time, with no word that the 3 was read as seconds. Now that error says so, and how to
    write the duration with a unit."""
    text = GOOD.replace('duration = "4h"', f"duration = {duration}").replace('at = "10m"', "at = 0")
    text = text.replace('at = "1h30m"', "at = 0").replace('at = "3h"', f"at = {at}")
    text = text.replace('offline = [["1h", "2h"]]', "offline = []")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: events[0].at: expected a time within the scenario, got "), message
    assert message.endswith(f"after the scenario's end, {said} (line 23)"), message


def test_a_bare_number_duration_is_taken_as_seconds() -> None:
    text = GOOD.replace('duration = "4h"', "duration = 3").replace('at = "10m"', "at = 0")
    text = text.replace('at = "1h30m"', "at = 1").replace('at = "3h"', "at = 2")
    text = text.replace('offline = [["1h", "2h"]]', "offline = []")
    assert parse_scenario(text, "ok.toml").duration == 3.0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'between = ["alice", "bob"]',
            'between = "alice, bob"',
            "conversations[0].between: expected an array of two people's names, e.g. "
            'between = ["alice", "bob"], got string \'alice, bob\' (line 19)',
        ),
        (
            'between = ["alice", "bob"]',
            'between = "alice"',
            "conversations[0].between: expected an array of two people's names, e.g. "
            'between = ["alice", "bob"], got string \'alice\' (line 19)',
        ),
        (
            'between = ["pk", "us"]',
            'between = "pk us"',
            "network.latency[0].between: expected an array of two regions' names, e.g. "
            'between = ["pk", "us"], got string \'pk us\' (line 9)',
        ),
    ],
)
def test_between_given_a_string_says_what_array_it_takes(old: str, new: str, expected: str) -> None:
    """``between = "alice, bob"`` was "expected an array", saying neither of what nor how to write one."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "bad.toml")
    assert str(info.value) == f"bad.toml: {expected}"


@pytest.mark.parametrize("process", ["pen_register", "wiretap"])
def test_a_forward_looking_orders_from_at_service_is_what_it_does_and_is_taken(process: str) -> None:
    scenario = parse_scenario(
        GOOD.replace(_EVENT_END, _order('from = "1h"\nto = "2h"', process=process), 1), "ok.toml"
    )
    assert any(getattr(e, "name", None) == "order" for e in scenario.events)


GENERATED = """
[scenario]
name = "g"
duration = "2h"

[generate]
people = 10
devices_per_person = { one = 0.5, two = 0.5 }
graph = { model = "barabasi-albert", m = 2 }
messages_per_day = { mean = 20, sigma = 1.0 }
regions = { us = 1 }

[[events]]
at = "1h"
kind = "legal_process"
process = "wiretap"
target = "p03"
to = "2h"

[[events]]
at = "1h"
kind = "device_offline"
device = "p03/2"
"""


def test_the_scale_target_stays_within_the_budget() -> None:
    # docs/performance.md: 100,000 phones and 1,000,000 messages a day
    text = GENERATED[: GENERATED.index("[[events]]")].replace("people = 10", "people = 100000")
    text = text.replace('duration = "2h"', 'duration = "1d"')
    s = parse_scenario(text.replace("mean = 20", "mean = 10"), "scale.toml")
    assert s.generate is not None and s.generate.people == 100_000


def test_a_legal_process_may_name_a_phone_number_first_among_its_targets() -> None:
    order = _order("").replace('target = "alice"\n', 'targets = ["+12025550143", "alice"]\n')
    s = parse_scenario(GOOD.replace(_EVENT_END, order), "good.toml")
    ev = next(e for e in s.events if isinstance(e, LegalProcessEvent))
    assert ev.targets == ("+12025550143", "alice") and ev.target == "+12025550143"
    unnamed = parse_scenario(GOOD.replace(_EVENT_END, order.replace('name = "order"\n', "")), "good.toml")
    assert [e.name for e in unnamed.events if isinstance(e, LegalProcessEvent)] == ["subpoena-12025550143-1"]


def test_a_generated_scenario_names_its_generated_people() -> None:
    s = parse_scenario(GENERATED, "gen.toml")
    first, second = s.events[0], s.events[1]
    assert isinstance(first, LegalProcessEvent) and first.target == "p03"
    assert isinstance(second, DeviceOffline | DeviceOnline | SeizePhone) and second.device == "p03/2"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'target = "p03"',
            'target = "bob"',
            "events[0].target: expected one of the people (generated p00 to p09)",
        ),
        ('target = "p03"', 'target = "p10"', "events[0].target: expected one of the people"),
        ('target = "p03"', 'target = "p3"', "events[0].target: expected one of the people"),
        (
            'device = "p03/2"',
            'device = "bob/1"',
            "events[1].device: expected a device like 'alice/1' (generated",
        ),
        ('device = "p03/2"', 'device = "p03/3"', "events[1].device: expected a device like 'alice/1'"),
        (
            'process = "wiretap"\ntarget = "p03"\nto = "2h"',
            'process = "subpoena"\ntarget = "p03"\nto = "2h"\n\n[[events]]\nat = "1h"\nkind = "exceptional_access"\n'
            'demand = "ghost_device"\ntarget = "mallory"',
            "events[1].target: expected one of the people (generated p00 to p09), got 'mallory'",
        ),
        # rates that would plan more than a run can hold (10 people for 2 h)
        (
            "mean = 20",
            "mean = 1e300",
            "generate.messages_per_day.mean: expected at most 1.2e+07, so that the run plans at most 10,000,000 "
            "messages (about 8.33e+299 at 1e+300), got 1e+300",
        ),
        ("sigma = 1.0", "sigma = 1000", "generate.messages_per_day.sigma: expected at most 3"),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[traffic]\nreply_delay = 1e308',
            'traffic.reply_delay: expected a duration of at most "365d"',
        ),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[traffic]\nbackground_per_hour = 1e15',
            "traffic.background_per_hour: expected at most 5e+06, so that the run plans at most 10,000,000",
        ),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[traffic]\npopular = 2\npopular_messages_per_hour = 1e12',
            "traffic.popular_messages_per_hour: expected at most 2.5e+06, so that",
        ),
        # more popular accounts than people (it blamed popular_messages_per_hour's budget)
        (
            'duration = "2h"',
            'duration = "2h"\n\n[traffic]\npopular = 100000000000000000',
            "traffic.popular: expected from 0 to 10 accounts (the people), got 100,000,000,000,000,000",
        ),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[traffic]\npopular = 11',
            "traffic.popular: expected from 0 to 10",
        ),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[defences]\ncover_per_hour = 1e12',
            "defences.cover_per_hour: expected at most 500000, so that the run plans at most 10,000,000 cover "
            "messages",
        ),
        # a person of [[people]] named as a generated person or organisation would be merged with it
        (
            'duration = "2h"',
            'duration = "2h"\n\n[[people]]\nname = "p03"',
            "people[0].name: 'p03' is already the name of a generated person ([generate] names p00 to p09)",
        ),
        (
            "regions = { us = 1 }",
            'regions = { us = 1 }\norganisations = { clinic = 2 }\n\n[[people]]\nname = "clinic-2"',
            "people[0].name: 'clinic-2' is already the name of a generated organisation (generate.organisations)",
        ),
        (
            "people = 10",
            "people = true",
            "generate.people: expected an integer from 2 to 1,000,000 people, got boolean True",
        ),
        ("people = 10", "people = 0", "generate.people: expected from 2 to 1,000,000 people"),
        ("mean = 20", "mean = nan", "generate.messages_per_day.mean: expected a finite number, got nan"),
        ("sigma = 1.0", "sigma = inf", "generate.messages_per_day.sigma: expected a finite number, got inf"),
        (
            "regions = { us = 1 }",
            "regions = { us = -1 }",
            "generate.regions.us: expected a non-negative weight",
        ),
        (
            "regions = { us = 1 }",
            f"regions = {{ us = 1 }}\ndaily_rhythm = [{', '.join(['0'] * 24)}]",
            "generate.daily_rhythm: expected 24 non-negative weights, one per hour of the day, not all 0",
        ),
        (
            "regions = { us = 1 }",
            f"regions = {{ us = 1 }}\ndaily_rhythm = [true, {', '.join(['1'] * 23)}]",
            "generate.daily_rhythm: expected 24 non-negative weights",
        ),
        (
            "regions = { us = 1 }",
            f"regions = {{ us = 1 }}\ndaily_rhythm = [inf, {', '.join(['1'] * 23)}]",
            "generate.daily_rhythm[0]: expected a finite number, got inf",
        ),
        # weights each finite whose total is not: random.choices cannot draw by them
        (
            "regions = { us = 1 }",
            "regions = { us = 1e308, eu = 1e308 }",
            "generate.regions: expected weights whose total is a finite number, got table {'us': 1e+308, 'eu': "
            "1e+308}",
        ),
        (
            "{ one = 0.5, two = 0.5 }",
            "{ one = 1.7e308, two = 1.7e308 }",
            "generate.devices_per_person: expected weights whose total is a finite number",
        ),
        (
            "regions = { us = 1 }",
            f"regions = {{ us = 1 }}\ndaily_rhythm = [{', '.join(['1e308'] * 24)}]",
            "generate.daily_rhythm: expected 24 non-negative weights, one per hour of the day, not all 0, with a "
            "finite total",
        ),
        (
            'duration = "2h"',
            'duration = "2h"\n\n[network]\nlatency = [{ between = ["us", "eu"], ms = 90 }]',
            "network.latency[0].between: expected regions where the relay or a device is ('us'), got 'eu'",
        ),
    ],
)
def test_generated_scenarios_refuse_names_of_nobody(old: str, new: str, expected: str) -> None:
    assert old in GENERATED
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GENERATED.replace(old, new, 1), "gen.toml")
    assert str(info.value).startswith(f"gen.toml: {expected}"), str(info.value)


def test_a_seed_is_taken_from_0_to_the_largest_toml_integer() -> None:
    from relaysim.sims.scenario import MAX_SEED

    assert MAX_SEED == 2**63 - 1
    for seed in (0, MAX_SEED):
        assert parse_scenario(GOOD.replace("seed = 3", f"seed = {seed}"), "ok.toml").seed == seed
    ok = parse_scenario(GOOD, "ok.toml")
    assert ok.with_seed(MAX_SEED).seed == MAX_SEED
    for seed in (-1, MAX_SEED + 1):  # (sweep's seeds after the scenario's went past it)
        with pytest.raises(ValueError, match=r"^seed: expected an integer from 0 to 9223372036854775807"):
            ok.with_seed(seed)


INTEGER_KEYS = {
    "scenario.seed": "3",
    "generate.people": "10",
    "generate.graph.m": "2",
    "generate.organisations.clinic": "2",
    "traffic.max_turns": "5",
    "traffic.popular": "2",
}


@pytest.mark.parametrize("value", ["1e400", "-inf", "nan", "1.5", "7.0", "HUGE"])
@pytest.mark.parametrize(
    ("key", "bounds"),
    [
        ("scenario.seed", "from 0 to 9223372036854775807 (2**63 - 1, the largest a TOML file holds)"),
        ("generate.people", "from 2 to 1,000,000 people"),
        ("generate.graph.m", "from 1 to people-1 (9)"),
        ("generate.organisations.clinic", "from 1 to 1000 accounts"),
        ("traffic.max_turns", "from 1 to 100"),
        ("traffic.popular", "from 0 to 10 accounts (the people)"),
    ],
)
def test_a_key_that_takes_an_integer_says_so_for_any_number_it_is_given(
    key: str, bounds: str, value: str
) -> None:
    """``seed = 1e400`` (TOML's inf) was "scenario.seed: expected a finite number, got inf", as if
    any finite number would do, and so was ``1e400`` or an integer too large for a float at every
    key that takes an integer; ``seed = 1.5`` was "expected an integer", without its bounds. Each
    says it takes an integer, from what to what, and what it got."""
    given = "9" * 400 if value == "HUGE" else value
    values = {k: given if k == key else ok for k, ok in INTEGER_KEYS.items()}
    text = GENERATED.replace(
        "[generate]", "[traffic]\nmax_turns = {traffic.max_turns}\npopular = {traffic.popular}\n\n[generate]"
    )
    text = text.replace("[scenario]", "[scenario]\nseed = {scenario.seed}")
    text = text.replace("people = 10", "people = {generate.people}").replace(
        "m = 2 }", "m = {generate.graph.m} }"
    )
    text = text.replace(
        "regions = { us = 1 }",
        "regions = { us = 1 }\norganisations = { clinic = {generate.organisations.clinic} }",
    )
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    shown = {"1e400": "number inf", "-inf": "number -inf", "nan": "number nan", "1.5": "number 1.5"}
    shown |= {"7.0": "number 7.0", "HUGE": "an integer of 400 digits"}
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    said = str(info.value)
    assert said.startswith(f"bad.toml: {key}: expected "), said
    assert f"{bounds}, got {shown[value]}" in said, said
    assert value == "HUGE" or f"expected an integer {bounds}" in said, said
    assert "finite" not in said, said


def test_a_negative_seed_would_make_the_graph_of_its_absolute_value() -> None:
    """Why seeds are not negative (sims.scenario.MAX_SEED): the generated social graph is networkx's,
    seeded with random.Random(seed), which takes the absolute value of an integer seed."""
    import networkx as nx

    def edges(seed: int) -> list[tuple[int, int]]:
        return sorted(nx.barabasi_albert_graph(40, 2, seed=seed).edges())

    assert edges(-7) == edges(7) != edges(8)


def test_an_event_on_a_generated_device_the_seed_did_not_make_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaysim.sims.cli import main
    from relaysim.sims.world.traffic import check_population, expand_population

    # p04 has two devices with seed 0 (the file's), one with seed 1: p04/2 is a device it may have
    for kind in ("device_offline", "seize_phone"):
        text = GENERATED.replace(
            'kind = "device_offline"\ndevice = "p03/2"', f'kind = "{kind}"\ndevice = "p04/2"'
        )
        ok = parse_scenario(text, "gen.toml")
        check_population(ok)
        assert "p04/2" in {d.name for d in expand_population(ok).devices()}
        bad = ok.with_seed(1)
        expected = (
            "gen.toml: events[1].device: expected a device the seed generated (with seed 1, p04 has 1 device; "
            "how many devices a generated person has depends on the seed), got 'p04/2'"
        )
        with pytest.raises(ScenarioError) as info:
            check_population(bad)
        assert str(info.value) == expected
        with pytest.raises(ScenarioError):
            expand_population(bad)
        path = tmp_path / "gen.toml"
        path.write_text(text, encoding="utf-8")
        assert main(["run", str(path), "--seed", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"relaysim run: {expected}"]
        assert not (tmp_path / "out").exists()


def test_a_text_at_the_limit_fits_its_frames(tmp_path: Path) -> None:
    from relaysim.sims.scenario import max_text_bytes
    from relaysim.sims.world.simulation import Simulation

    # bob has two devices, alice three: her text goes to his two in one send and to her other two
    # as sync copies (a header naming bob before it) in another, all sealed, the first a prekey message
    limit = max_text_bytes(2, "signal") - len(b"\x00\xfeS\x03bob")
    text = (
        GOOD.replace(_RELAY, f'[relay]\nprofile = "signal"\nsealed_sender = true\n\n{_RELAY}', 1)
        .replace(
            'region = "pk", offline = [["1h", "2h"]] }',
            'region = "pk" }, { region = "pk" }, { region = "pk" }',
        )
        .replace('name = "bob"', 'name = "bob"\ndevices = [{ region = "pk" }, { region = "pk" }]')
        .replace('text = "hi"', f'text = "{"x" * limit}"')
    )
    with pytest.raises(ScenarioError, match=rf"expected at most {limit} bytes .* alice's 2 other devices"):
        parse_scenario(text.replace("x" * limit, "x" * (limit + 1)), "big.toml")
    result = Simulation(parse_scenario(text, "big.toml"), db_path=tmp_path / "relay.db").run()
    big = next(m for m in result.messages if len(m.planned.text) == limit)
    assert sorted(big.delivered) == ["bob/1", "bob/2"]
    assert sorted(result.synced[big.planned.id]) == ["alice/2", "alice/3"]


def test_jitter_larger_than_the_latency_adds_to_it_and_never_makes_a_delay_negative() -> None:
    import random

    spec = parse_scenario(
        GOOD.replace("latency_ms = 60", "latency_ms = 1\njitter_ms = 500"), "j.toml"
    ).network
    assert (spec.latency_ms, spec.jitter_ms) == (1.0, 500.0)
    net = Network(spec, random.Random(4))
    delays = [d for _ in range(200) for d in net.transit("us", "us", 0.0)]
    assert delays and min(delays) >= net.base_latency("us", "us") >= 0


def test_an_escrow_key_may_be_stolen_before_the_escrow_demand() -> None:
    """The stolen key opens what is escrowed after the theft too: only a theft with no demand is refused."""
    events = (
        f'{_EVENT_END}\n[[events]]\nat = "1h"\nkind = "escrow_key_stolen"\n'
        '\n[[events]]\nat = "2h"\nkind = "exceptional_access"\ndemand = "key_escrow"\n'
    )
    s = parse_scenario(GOOD.replace(_EVENT_END, events), "ok.toml")
    assert [e.kind for e in s.events] == ["escrow_key_stolen", "exceptional_access", "device_offline"]


def test_a_persons_region_and_address_are_their_devices_defaults() -> None:
    text = GOOD.replace('name = "bob"', 'name = "bob"\nregion = "pk"\naddress = "2001:db8::7"')
    bob = parse_scenario(text, "good.toml").person("bob")
    assert [(d.region, d.address) for d in bob.devices] == [("pk", "2001:db8::7")]


def test_partition_mode_defaults_to_drop_and_may_hold() -> None:
    text = GOOD.replace("latency_ms = 60", _partition('{ regions = ["pk"], from = "1h", to = "2h" }'))
    assert parse_scenario(text, "p.toml").network.partitions[0].mode == "drop"
    held = text.replace('to = "2h" }', 'to = "2h", mode = "hold" }')
    assert parse_scenario(held, "p.toml").network.partitions[0] == Partition(("pk",), 3600, 7200, "hold")


def test_relaysim_run_refuses_a_wrong_file_with_status_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaysim.sims.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("latency_ms = 60", "latency_ms = nan"), encoding="utf-8")
    assert main(["run", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    line = bad.read_text(encoding="utf-8").splitlines().index("latency_ms = nan") + 1
    assert err.strip().splitlines() == [
        f"relaysim run: bad.toml: network.latency_ms: expected a finite number, got nan (line {line})"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_every_built_in_scenario_loads(name: str) -> None:
    assert load_scenario(builtin_scenarios()[name]).name == name


def test_a_generated_region_must_be_one_a_latency_rule_names() -> None:
    text = GENERATED.replace(
        "regions = { us = 1 }",
        'regions = { us = 1, eu = 1 }\n\n[network]\nlatency = [{ between = ["us", "pk"], ms = 90 }]',
    )
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("regions = { us = 1, eu = 1 }"))
    with pytest.raises(
        ScenarioError,
        match=rf"^gen\.toml: generate\.regions\.eu: expected one of 'pk', 'us', got 'eu' \(line {line}\)$",
    ):
        parse_scenario(text, "gen.toml")


# --- the line an error's key path is written on ---------------------------------------------------

LINES = '''[scenario]
name = "lines"
description = """A story whose text looks like TOML:
[relay]
profile = "not-this-one"
"""
duration = "2h"

[relay]
profile = "PROFILE"

[[people]]
name = "ann"
devices = [{ region = "us", address = "198.51.100.1" }]

[[people]]
name = "ben"
devices = [{ region = "us", address = "198.51.100.2" }]

[[conversations]]
between = ["ann", "ben"]
messages = [
  { at = "1m", from = "ann", text = "a [ bracket, a # and a, comma" },
  { at = "2m", from = "FROM", text = "b" },
]
'''


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # the key's own line, not the one a multi-line description holds
        ('"PROFILE"', '"nope"', "relay.profile: expected one of"),
        # an element of a multi-line array of inline tables: its own line
        ('"FROM"', '"zed"', "conversations[0].messages[1].from: expected one of 'ann' or 'ben', got 'zed'"),
        # a key the file does not write: its table's header
        ('duration = "2h"\n', "", "scenario.duration: missing"),
        # a value inside an inline table on one line: that line
        ('"198.51.100.2"', '"198.51.100.300"', "people[1].devices[0].address: expected an IPv4"),
        # a dotted key writes the tables it passes through on its own line, not its table's header
        ('profile = "PROFILE"', 'profile.name = "signal"', "relay.profile: expected a string, got table"),
    ],
)
def test_a_field_error_ends_with_the_line_its_key_is_written_on(old: str, new: str, expected: str) -> None:
    """tomllib keeps no positions: an error named the key path alone, and in a scenario of many
    [[events]] or messages the reader counted tables to find events[7] or messages[12]."""
    good = LINES.replace('"PROFILE"', '"signal"').replace('"FROM"', '"ben"')
    assert parse_scenario(good, "lines.toml").name == "lines"
    text = LINES.replace(old, new, 1).replace('"PROFILE"', '"signal"').replace('"FROM"', '"ben"')
    where = {
        '"PROFILE"': 'profile = "nope"',
        '"FROM"': '"zed"',
        'duration = "2h"\n': "[scenario]",
        '"198.51.100.2"': "198.51.100.300",
        'profile = "PROFILE"': "profile.name",
    }[old]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if where in t and "not-this-one" not in t)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "lines.toml")
    message = str(info.value)
    assert message.startswith(f"lines.toml: {expected}") and message.endswith(f" (line {line})"), message
    assert info.value.line == line


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_unicode_line_separator_in_a_string_does_not_shift_the_line_an_error_names(
    separator: str, newline: str
) -> None:
    """TOML lines end at line feeds; a string (or a comment) may hold U+2028, U+2029 or NEL raw. The
    line numbers were counted with str.splitlines, which also breaks there: an error after such a
    string named a line one too far on for each."""
    text = (
        LINES.replace('"PROFILE"', '"nope"')
        .replace('"FROM"', '"ben"')
        .replace("A story whose", f"A{separator}story whose")
        .replace('duration = "2h"', f'duration = "2h"  # a comment{separator}may hold one too')
    )
    text = text.replace("\n", newline)
    line = next(n for n, t in enumerate(text.split("\n"), 1) if 'profile = "nope"' in t)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "lines.toml")
    assert info.value.line == line, str(info.value)
    assert str(info.value).endswith(f" (line {line})")


def test_an_error_in_a_value_on_lines_of_its_own_gives_no_line_it_cannot_be_sure_of() -> None:
    """An element of an array written over several lines with a multi-line string in it: the text
    cannot say which line holds it, and the error names the key path alone."""
    text = LINES.replace('"PROFILE"', '"signal"').replace(
        '{ at = "2m", from = "FROM", text = "b" }', '{ at = "2m", from = "zed", text = """b""" }'
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "lines.toml")
    assert info.value.line is None and "(line" not in str(info.value), str(info.value)


def _leaves(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, data


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_every_value_of_a_built_in_scenario_is_found_on_its_own_line(name: str) -> None:
    """Each key path of the built-in scenarios (their tables, arrays of tables, multi-line arrays
    of inline tables, multi-line strings) is given the line that writes it: that line holds the
    key, and a one-line string value itself."""
    from relaysim.sims.scenario import _line_of

    text = builtin_scenarios()[name].read_text(encoding="utf-8")
    lines = text.splitlines()
    for path, value in _leaves(tomllib.loads(text)):
        line = _line_of(text, path)
        assert line is not None, path
        written = lines[line - 1]
        key = re.findall(r"[A-Za-z0-9_-]+", path)[-1]
        if not path.endswith("]"):
            assert re.search(rf"\b{re.escape(key)}\s*=", written), (path, line, written)
        one_line = '"""' not in written and "'''" not in written  # a multi-line string starts there
        if isinstance(value, str) and one_line and '"' not in value and "\\" not in value:
            assert value in written, (path, line, written)


def test_a_sweeps_param_error_names_no_line_of_the_file(tmp_path: Path) -> None:
    """A --param value is not in the file: its error names the key path and the value, no line."""
    from relaysim.sims.sweep import build_scenario

    with pytest.raises(ScenarioError) as info:
        good = LINES.replace('"PROFILE"', '"signal"').replace('"FROM"', '"ben"')
        build_scenario(good, "lines.toml", [("relay.profile", "nope")])
    assert info.value.line is None and "(line" not in str(info.value), str(info.value)


@pytest.mark.parametrize("line", [None, 24])
def test_a_scenario_error_survives_pickling_as_a_sweep_worker_hands_it_back(line: int | None) -> None:
    """A sweep's runs are in worker processes, whose exceptions come back pickled: pickle's default
    made a ScenarioError again from its message alone, which its constructor does not take (TypeError)."""
    error = ScenarioError(
        "two-friends.toml", "people[1].devices[0].region", "expected one of 'pk', 'us'", line
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ScenarioError and str(again) == str(error)
    assert (again.source, again.path, again.message, again.line) == (
        error.source,
        error.path,
        error.message,
        line,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[" * 5000 + "]" * 5000, "not valid TOML: arrays or tables nested too deeply to read"),
        ("{ a = " * 5000 + "1" + " }" * 5000, "not valid TOML: arrays or tables nested too deeply to read"),
        (
            "1" * 5000,
            "scenario.seed: not valid TOML: Exceeds the limit (4300 digits) for integer string conversion: "
            "value has 5000 digits (at line 5, column 8)",
        ),
    ],
)
def test_toml_that_tomllib_cannot_read_is_named_not_an_internal_error(value: str, expected: str) -> None:
    """tomllib raises RecursionError for arrays or inline tables nested past the interpreter's
    recursion limit and a bare ValueError for an integer of more than 4,300 digits, beside its
    TOMLDecodeError: `relaysim run` said "internal error" for either."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace("seed = 3", f"seed = {value}"), "bad.toml")
    assert str(info.value).startswith(f"bad.toml: {expected}"), str(info.value)[:200]


def test_an_integer_too_long_to_read_is_named_by_its_line_and_field() -> None:
    """tomllib's ValueError for an integer of more than 4,300 digits names no line (its TOMLDecodeError
    does): the integer is found, past a string and a comment of as many digits, in an array of an
    inline table of an array of tables."""
    digits = "9" * 4301
    text = GOOD.replace(
        'name = "bob"\n',
        f'name = "bob"\n# {digits}\nnote = "{digits}"\ndevices = [{{ region = "us" }}, {{ offline = [1, -{digits}] }}]\n',
        1,
    )
    line = next(n for n, t in enumerate(text.split("\n"), 1) if t.startswith('devices = [{ region = "us"'))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    assert str(info.value) == (
        "bad.toml: people[1].devices[1].offline[1]: not valid TOML: Exceeds the limit (4300 digits) for "
        f"integer string conversion: value has 4301 digits (at line {line}, column 47)"
    )


def test_a_dotted_key_nested_past_any_scenarios_depth_is_named_by_its_path() -> None:
    """TOML's dotted keys nest without limit and tomllib reads them without recursing: the walk
    that refuses NaN everywhere, and the repr of a value in an error, ran past the recursion limit."""
    text = GOOD.replace("seed = 3", "seed = 3\n" + "a." * 3000 + "b = 1")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    assert str(info.value).startswith(
        "bad.toml: scenario" + ".a" * 31 + ": nested more than 32 arrays or tables deep"
    ), str(info.value)[:200]
    deep = "[" * 40 + "1" + "]" * 40  # deep enough for the limit, not for tomllib's recursion
    with pytest.raises(ScenarioError, match=r"^bad\.toml: scenario\.seed(\[0\]){30}: nested more than 32"):
        parse_scenario(GOOD.replace("seed = 3", f"seed = {deep}"), "bad.toml")


@pytest.mark.parametrize(
    "value",
    ["k" * 100, "é\n" * 50, b"\x00" * 100, ["x" * 30] * 5, 10**400, -(10**70), 1.5, "short"],
    ids=["str", "escapes", "bin", "list", "huge-int", "negative-int", "float", "short"],
)
def test_a_seed_and_any_value_a_scenario_error_shows_are_shown_by_the_relay_s_one_rule(value: object) -> None:
    """seed_problem cut a seed's repr at 40 characters (``'kkkk…``, its quote left open) and runfiles.brief
    had its own bound (80), while the relay quotes by relay.wire.quoted: one rule now, the quote closed."""
    from relaysim.relay import wire
    from relaysim.sims.analysis.runfiles import brief
    from relaysim.sims.scenario import seed_problem

    problem = seed_problem(value)
    assert problem is not None and problem.endswith(f", got {wire.quoted(value)}")
    assert brief(value) == wire.quoted(value)
    shown = wire.quoted(value)
    assert len(shown) <= wire.MAX_QUOTED + 30, shown
    if isinstance(value, str | bytes) and len(repr(value)) > wire.MAX_QUOTED:
        head = shown.split("… (")[0]
        assert head[-1] == "'" and head == repr(value[: len(eval(head))]), shown  # the quote closes


@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),  # (an argv word)
        st.integers(min_value=-(10**200), max_value=10**200),
        st.floats(),
        st.lists(st.text(max_size=20), max_size=10),
        st.none(),
        st.booleans(),
    )
)
def test_brief_is_the_twin_of_the_relay_s_quoting_rule(value: object) -> None:
    """sims.analysis may not import relay.wire (tests/sims/test_analysis.py): runfiles.brief keeps its rule's twin."""
    from relaysim.relay import wire
    from relaysim.sims.analysis.runfiles import MAX_SHOWN, brief

    assert MAX_SHOWN == wire.MAX_QUOTED
    assert brief(value) == wire.quoted(value)
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # (a word not UTF-8: by its bytes, quoted, in any format)
        assert brief(text, "s") == wire.quoted(text)
    else:
        assert brief(text, "s") == wire.cut(text)


@pytest.mark.parametrize("before", range(1, 11))
def test_brief_cuts_between_escapes_as_the_relay_s_rule_does(before: int) -> None:
    """relay.wire.cut cuts between escapes, never inside one (relay19: "\\x1" then "…"); its twin too."""
    from relaysim.relay import wire
    from relaysim.sims.analysis.runfiles import brief

    for value in (
        ["x" * (wire.MAX_QUOTED - before - 3) + "\x1b" * 3],
        "x" * (wire.MAX_QUOTED - before) + "\\U0001f600y",
    ):
        shown = brief(value, "s") if type(value) is str else brief(value)
        assert shown == (wire.cut(value) if type(value) is str else wire.quoted(value)), value
        assert "…" in shown and not re.search(r"\\(x.?|U.{0,7})…", shown), shown


@pytest.mark.parametrize("value", ["\udcff", "caf\udce9", "k" * 70 + "\udcff", "\udcff" * 40])
def test_a_str_not_utf_8_is_shown_by_its_bytes_by_the_relay_s_rule_and_its_twin(value: str) -> None:
    """relay.wire.quoted showed a str read with surrogateescape (an argv word that is not UTF-8) as
    '\\udcff', where the wire shows such a key by its bytes (relay16): both now show b'\\xff'."""
    from relaysim.relay import wire
    from relaysim.sims.analysis.runfiles import brief

    raw = value.encode("utf-8", "surrogateescape")
    shown = wire.quoted(value)
    assert shown == wire.quoted(raw) and shown.startswith("b'") and "udc" not in shown, shown
    assert brief(value) == shown and brief(value, "s") == shown
    # A surrogate no byte stands for (U+D800 to U+DC7F: no reading with surrogateescape makes one) is
    # shown as its str's repr, and does not raise.
    assert wire.quoted("\udcff\ud800") == brief("\udcff\ud800") == repr("\udcff\ud800")


def test_an_unknown_profile_is_refused_naming_each_profile_once() -> None:
    """The profiles a bad relay.profile was told to be one of named keep-everything twice (it is
    one of relay.profiles.PROFILES, and was put before them as well)."""
    from relaysim.relay.profiles import PROFILES

    text = '[scenario]\nname = "p"\nduration = "1h"\n[relay]\nprofile = "SIGNAL"\n[[people]]\nname = "a"\n'
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "p.toml")
    known = str(info.value).split("expected one of ")[1].split(", got")[0].split(", ")
    assert sorted(known) == sorted(repr(p) for p in set(PROFILES) | {"keep-everything"}), known
    assert known[0] == "'keep-everything'"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('text = "hi"', 'text = "h\\u0000i"', "conversations[0].messages[0].text"),
        (
            _RELAY,
            '[[groups]]\nname = "g"\nmembers = ["alice", "bob"]\n'
            f'timeline = [{{ at = "1m", from = "bob", text = "\\u0000" }}]\n\n{_RELAY}',
            "groups[0].timeline[0].text",
        ),
        (
            'kind = "device_offline"\ndevice = "bob/1"',
            'kind = "relay_swaps_identity"\nvictim = "alice"\ncontact = "bob"\ntext = "ok\\u0000"',
            "events[0].text",
        ),
    ],
)
def test_a_message_text_holding_a_nul_is_refused_naming_the_field(old: str, new: str, field: str) -> None:
    """A NUL (U+0000) in a message's text was taken, and reached the transcript and the HTML report,
    whose parser drops it (WHATWG HTML, "in body": a U+0000 character token is ignored): refused,
    naming the field and where in the text; a line break or a tab is kept."""
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "bad.toml")
    assert str(info.value).startswith(f"bad.toml: {field}: a NUL character (U+0000) at character "), str(
        info.value
    )
    kept = parse_scenario(GOOD.replace('text = "hi"', 'text = "h\\ti\\nyo"', 1), "good.toml")
    assert kept.conversations[0].messages[0].text == "h\ti\nyo"


_GENERATED = """
[scenario]
name = "generated"
duration = "20m"
seed = 3

[generate]
people = 6
messages_per_day = { mean = 200, sigma = 0.5 }
"""


def test_a_simulation_of_a_generate_scenario_as_loaded_makes_its_people_first() -> None:
    """``Simulation(scenario)`` on a [generate] scenario not passed through expand_population was an
    IndexError in traffic.contact_graph (``names[n]``): it expands it, and runs as on the expanded one;
    expanding twice adds no one; contact_graph alone names what to call."""
    from relaysim.sims.world.simulation import Simulation
    from relaysim.sims.world.traffic import contact_graph, expand_population

    loaded = parse_scenario(_GENERATED)
    expanded = expand_population(loaded)
    assert expand_population(expanded) == expanded
    as_loaded = Simulation(loaded).run()
    assert [p.name for p in as_loaded.scenario.people] == [p.name for p in expanded.people]
    given = Simulation(expanded).run()
    assert as_loaded.messages and len(as_loaded.messages) == len(given.messages)
    with pytest.raises(
        ValueError, match=r"call relaysim\.sims\.world\.traffic\.expand_population\(scenario\) first"
    ):
        contact_graph(loaded)
