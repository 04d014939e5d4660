"""Scenario files: good ones load; broken ones say the file, the key path, the value and what was expected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sims.engine import Scheduler
from sims.network import Network
from sims.scenario import NetworkSpec, Partition, ScenarioError, parse_duration, parse_scenario

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
    assert s.events[0].params == {"device": "bob/1"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'duration = "4h"',
            'duration = "4 hours"',
            'bad.toml: scenario.duration: expected a duration like 90, "15m" or "1h30m", got \'4 hours\'',
        ),
        ("seed = 3", 'seed = "three"', "bad.toml: scenario.seed: expected an integer, got string 'three'"),
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


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.toml: not valid TOML"):
        parse_scenario("[scenario\n", "bad.toml")


@given(st.integers(0, 10**6), st.integers(0, 59), st.integers(0, 23))
def test_durations(seconds: int, minutes: int, hours: int) -> None:
    assert parse_duration(seconds) == seconds
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == hours * 3600 + minutes * 60 + seconds


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
