"""A partition either drops what is sent into it or holds it until it heals, as each partition says."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from relaysim.sims.scenario import NetworkSpec, Partition, parse_scenario
from relaysim.sims.world.network import Network
from relaysim.sims.world.simulation import MessageState, Simulation

SCENARIO = """
[scenario]
name = "partitioned"
duration = "{duration}"
seed = 5

[network]
latency_ms = 80
jitter_ms = 10
partitions = [{{ regions = ["pk"], from = "1h", to = "{heal}"{mode} }}]

[relay]
region = "us"

[[people]]
name = "amira"
region = "pk"

[[people]]
name = "ben"
region = "us"

[[conversations]]
between = ["amira", "ben"]
messages = [
  {{ at = "30m", from = "amira", text = "before the partition" }},
  {{ at = "1h30m", from = "amira", text = "into the partition" }},
  {{ at = "1h40m", from = "ben", text = "toward the partitioned region" }},
  {{ at = "2h30m", from = "amira", text = "after it healed" }},
]
"""


def _run(
    mode: str | None, heal: str = "2h", duration: str = "3h"
) -> tuple[dict[str, MessageState], Simulation]:
    text = SCENARIO.format(duration=duration, heal=heal, mode="" if mode is None else f', mode = "{mode}"')
    sim = Simulation(parse_scenario(text, "partitioned.toml"))
    result = sim.run()
    return {m.planned.text: m for m in result.messages}, sim


def test_a_drop_partition_loses_a_message_sent_into_it() -> None:
    messages, sim = _run("drop")
    into = messages["into the partition"]
    assert into.accepted_at is None and into.delivered == {}
    assert into.lost == "the network lost the send"
    assert sim.net.partitioned >= 1 and sim.net.held == 0
    assert list(messages["before the partition"].delivered) == ["ben/1"]
    assert list(messages["after it healed"].delivered) == ["ben/1"]


def test_drop_is_the_default_and_what_the_code_did_before() -> None:
    default, _ = _run(None)
    drop, _ = _run("drop")
    assert {k: (m.accepted_at, m.lost, m.delivered) for k, m in default.items()} == {
        k: (m.accepted_at, m.lost, m.delivered) for k, m in drop.items()
    }


def test_a_hold_partition_delivers_a_message_sent_into_it_after_it_heals() -> None:
    messages, sim = _run("hold")
    into = messages["into the partition"]
    assert into.lost is None
    assert into.accepted_at is not None and 7200 < into.accepted_at < 7200 + 1
    assert list(into.delivered) == ["ben/1"] and into.delivered["ben/1"] > into.accepted_at
    toward = messages["toward the partitioned region"]
    # the relay accepts it at once (ben is not cut off); amira's phone gets it only after 2 h
    assert toward.accepted_at is not None and toward.accepted_at < 6100
    assert 7200 < toward.delivered["amira/1"] < 7200 + 1
    assert sim.net.held >= 2 and sim.net.partitioned == 0
    assert all(m.lost is None and len(m.delivered) == 1 for m in messages.values())


def test_a_hold_partition_that_outlasts_the_run_holds_its_messages_past_the_end() -> None:
    messages, _ = _run("hold", heal="5h")
    into = messages["into the partition"]
    assert into.accepted_at is None and into.lost is None and into.delivered == {}
    assert list(messages["before the partition"].delivered) == ["ben/1"]


@pytest.mark.parametrize("mode", ["drop", "hold"])
def test_partitioned_runs_are_deterministic(mode: str) -> None:
    first, _ = _run(mode)
    second, _ = _run(mode)
    assert {k: (m.accepted_at, m.delivered) for k, m in first.items()} == {
        k: (m.accepted_at, m.delivered) for k, m in second.items()
    }


def test_the_network_model_holds_and_drops_per_partition() -> None:
    spec = NetworkSpec(
        latency_ms=100,
        jitter_ms=0,
        partitions=(
            Partition(("pk",), 10, 20, "hold"),
            Partition(("pk",), 20, 30, "hold"),  # back to back: held until the second heals too
            Partition(("ca",), 10, 20, "drop"),
        ),
    )
    net = Network(spec, random.Random(1))
    assert net.transit("pk", "us", 15) == [pytest.approx(30 - 15 + 0.1)] and net.held == 1
    assert net.transit("us", "pk", 25) == [pytest.approx(5 + 0.1)]
    assert net.reliable("pk", "us", 12) == pytest.approx(18 + 0.1)
    assert net.transit("pk", "pk", 15) == [pytest.approx(0.05)]  # inside the partitioned region
    assert net.transit("ca", "us", 15) == [] and net.partitioned == 1
    assert net.reliable("ca", "us", 15) == pytest.approx(0.1)  # control frames cross a drop partition
    assert net.transit("pk", "ca", 15) == []  # a drop partition cuts it as well: dropped


GENERATED_HOLD = """
[scenario]
name = "generated-hold"
duration = "3h"
seed = 9

[network]
latency = [{ between = ["pk", "us"], ms = 180 }]
partitions = [{ regions = ["pk"], from = "1h", to = "1h30m", mode = "hold" }, { regions = ["us"], from = "2h", to = "2h10m" }]

[generate]
people = 24
devices_per_person = { one = 0.7, two = 0.3 }
messages_per_day = { mean = 60, sigma = 1.0 }
regions = { pk = 0.5, us = 0.5 }
"""


def test_generated_traffic_and_held_partitions_give_byte_identical_outputs(tmp_path: Path) -> None:
    """Two processes with different hash seeds (set and dict orders differ) write the same bytes."""
    scenario = tmp_path / "generated-hold.toml"
    scenario.write_text(GENERATED_HOLD, encoding="utf-8")
    for out, hash_seed in (("a", "1"), ("b", "2")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "relaysim.sims.cli",
                "run",
                str(scenario),
                "--out",
                str(tmp_path / out),
                "--quiet",
            ],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
        )
    names = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"relay.db", "summary.json", "transcript.jsonl"} <= set(names)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert summary["messages"]["planned"] > 0 and summary["network"]["held"] > 0
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
