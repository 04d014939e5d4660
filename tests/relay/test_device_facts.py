"""What a registration says about its device beyond its keys, and what providers keep of it.

The FBI "Lawful Access" chart (2021) lists Threema's push token and Wickr's device types and app
version among what they hand over; Threema's transparency report names the push token. A register
may carry a push token, a device type and an app version (all optional: docs/protocol.md); the
relay keeps what its profile keeps (relay.profiles Profile.device_facts) and device info hands it
over.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext
from relaysim.relay.store import DeviceFacts, Store
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation, registered_facts
from tests.helpers import DeviceKeys, new_core, reply

TOKEN = bytes(range(32))


def _register(keys: DeviceKeys, **facts: Any) -> wire.Register:
    return replace(keys.register(), **facts)


def test_the_facts_are_optional_on_the_wire() -> None:
    keys = DeviceKeys.make("ann")
    plain = keys.register()
    assert not {"push_token", "device_type", "app_version"} & set(plain.to_wire())  # as before
    full = _register(keys, push_token=TOKEN, device_type="ios", app_version="6.1")
    back = wire.decode_body(wire.encode_body(full), wire.REQUEST_KINDS)
    assert isinstance(back, wire.Register)
    assert (back.push_token, back.device_type, back.app_version) == (TOKEN, "ios", "6.1")


def test_a_fact_that_breaks_the_rules_is_refused_by_name() -> None:
    keys = DeviceKeys.make("ann")
    body = msgpack.unpackb(wire.encode_body(_register(keys)))
    body["push_token"] = b"x" * 257
    with pytest.raises(wire.RemoteProtocolError, match="push_token must be at most 256 bytes"):
        wire.decode_body(msgpack.packb(body), wire.REQUEST_KINDS)
    with pytest.raises(wire.LocalProtocolError, match="device_type must be 1 to 64 characters, got 65"):
        _register(keys, device_type="x" * 65)


@pytest.mark.parametrize(
    ("kept", "expect"),
    [
        (frozenset(), None),
        (frozenset({"push_token"}), DeviceFacts(push_token=TOKEN)),
        (frozenset({"device_type", "app_version"}), DeviceFacts(device_type="ios", app_version="6.1")),
    ],
)
def test_the_relay_keeps_what_its_profile_keeps(kept: frozenset[str], expect: DeviceFacts | None) -> None:
    core = new_core(keep_device_facts=kept)
    conn = ConnectionContext(1, ("192.0.2.1", 40001))
    core.connect(conn)
    keys = DeviceKeys.make("ann")
    done = reply(core.handle(conn, _register(keys, push_token=TOKEN, device_type="ios", app_version="6.1")))
    assert isinstance(done, wire.Registered)
    assert core.store.device_facts("ann") == ({} if expect is None else {1: expect})


def test_an_unknown_fact_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"keep_device_facts: unknown fact.*imei.*known: app_version"):
        new_core(keep_device_facts={"imei"})


_RUN = """
[scenario]
name = "facts"
duration = "30m"
seed = 3

[relay]
profile = "{profile}"

[[people]]
name = "ann"
devices = [{{ region = "us" }}, {{ region = "us" }}]

[[people]]
name = "ben"

[[conversations]]
between = ["ann", "ben"]
messages = [{{ at = "5m", from = "ann", text = "hello" }}]

[[events]]
at = "20m"
kind = "legal_process"
process = "search_warrant"
target = "ann"
name = "warrant"
"""


def _device_info(profile: str) -> list[dict[str, Any]]:
    scenario = parse_scenario(_RUN.format(profile=profile), "facts.toml")
    (d,) = Simulation(scenario, db_path=":memory:").run().disclosures
    rows: list[dict[str, Any]] = d.provided["device_info"]
    return rows


def test_threema_hands_over_the_push_token() -> None:
    scenario = parse_scenario(_RUN.format(profile="threema"), "facts.toml")
    tokens = [
        registered_facts(scenario.seed, spec)["push_token"].hex() for spec in scenario.person("ann").devices
    ]
    rows = _device_info("threema")
    assert [r["push_token"] for r in rows] == tokens
    assert all("public_key" in r and "device_type" not in r and "app_version" not in r for r in rows)


def test_wickr_hands_over_device_types_and_the_app_version() -> None:
    rows = _device_info("wickr")
    assert [r["device_type"] for r in rows][1:] == ["desktop"]  # the linked device
    assert rows[0]["device_type"] in ("android", "ios")
    assert {r["app_version"] for r in rows} == {"1.0"}
    assert all("push_token" not in r for r in rows)


def test_signal_keeps_none_of_it(tmp_path: Path) -> None:
    """Signal's phones send the same facts; its relay writes none of them down."""
    scenario = parse_scenario(_RUN.format(profile="signal"), "facts.toml")
    Simulation(scenario, db_path=tmp_path / "relay.db").run()
    with Store(tmp_path / "relay.db") as store:
        assert [d.device for d in store.devices("ann")] == [1, 2]
        assert store.device_facts("ann") == {}
