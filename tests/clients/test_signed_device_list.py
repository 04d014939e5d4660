"""The "signed-devices" identity model on the wire (WhatsApp multi-device, 2021: companions'
identity keys signed by the primary; contacts check the signed device list).

A companion registers with its primary's signature over its identity key
(wire.Register.device_signature); the relay keeps it and serves it with the device's bundle
(wire.DeviceBundle.device_signature); a contact checks it against the primary's key before any
session with the companion. Nothing travels out of band.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from relaysim.clients import agent as A
from relaysim.clients import spec
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.relay.store import Store
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation
from relaysim.sims.world.util import SimulationRandom
from tests.helpers import DeviceKeys, core_device, new_core, reply


def _linked(account: str = "omar") -> tuple[DeviceKeys, DeviceKeys, bytes]:
    primary, companion = DeviceKeys.make(account, 1), DeviceKeys.make(account, 2)
    return primary, companion, primary.sign(A.DEVICE_LIST_PREFIX + companion.identity_key)


def _fetch(signature: bytes | None) -> wire.Bundle:
    """omar's bundle as a contact fetches it, his companion registered with ``signature``."""
    core = new_core()
    primary, companion, _ = _linked()
    conn = core_device(core, primary, 1)
    done = reply(core.handle(conn, replace(companion.register(), device_signature=signature)))
    assert isinstance(done, wire.Registered), done
    contact = core_device(core, DeviceKeys.make("ann"), 3)
    bundle = reply(core.handle(contact, wire.FetchBundle(id=9, account="omar")))
    assert isinstance(bundle, wire.Bundle), bundle
    return bundle


def test_the_relay_serves_the_signature_with_the_companions_bundle() -> None:
    _primary, _companion, signature = _linked()
    bundle = _fetch(signature)
    by_device = {b.device: b.device_signature for b in bundle.devices}
    assert by_device == {1: None, 2: signature}
    # on the wire: a bundle field, absent where there is none
    assert "device_signature" not in bundle.devices[0].to_wire()
    assert bundle.devices[1].to_wire()["device_signature"] == signature


def test_re_registering_without_a_signature_drops_the_old_one() -> None:
    core = new_core()
    primary, companion, signature = _linked()
    conn = core_device(core, primary, 1)
    assert isinstance(
        reply(core.handle(conn, replace(companion.register(), device_signature=signature))), wire.Registered
    )
    assert core.store.device_signatures("omar") == {2: signature}
    c_conn = core_device(core, companion, 2, register=False)
    assert isinstance(reply(core.handle(c_conn, companion.register(5))), wire.Registered)
    assert core.store.device_signatures("omar") == {}


def _contact() -> A.DeviceAgent:
    rng = SimulationRandom("ann")
    return A.DeviceAgent(
        Device("ann", 1, rng=rng.randbytes, deterministic=True),
        registration_id=7,
        delivery_token=rng.randbytes(32),
        rng=rng.randbytes,
        clock=lambda: 1.0,
        identity_model="signed-devices",
    )


def test_a_contact_checks_the_served_signature() -> None:
    primary, companion, signature = _linked()
    peer = PeerAddress("omar", 2)
    assert _contact()._device_trusted(_fetch(signature), peer, companion.identity_key)
    assert not _contact()._device_trusted(_fetch(None), peer, companion.identity_key)
    # a signature by anyone but omar's primary (here, by the companion itself) is refused
    forged = companion.sign(A.DEVICE_LIST_PREFIX + companion.identity_key)
    assert not spec.xeddsa_verify(primary.identity_key, A.DEVICE_LIST_PREFIX + companion.identity_key, forged)
    assert not _contact()._device_trusted(_fetch(forged), peer, companion.identity_key)


_RUN = """
[scenario]
name = "wa"
duration = "30m"
seed = 5

[relay]
profile = "whatsapp"

[[people]]
name = "omar"
devices = [{ region = "us" }, { region = "us" }]

[[people]]
name = "ann"

[[conversations]]
between = ["ann", "omar"]
messages = [{ at = "10m", from = "ann", text = "hello" }]
"""


def test_in_a_run_the_companion_is_reached_by_its_signature_on_the_relay(tmp_path: Path) -> None:
    result = Simulation(parse_scenario(_RUN, "wa.toml"), db_path=tmp_path / "relay.db").run()
    (m,) = result.messages
    assert set(m.delivered) == {"omar/1", "omar/2"}  # ann trusted the companion
    with Store(tmp_path / "relay.db") as store:
        (primary, companion) = store.devices("omar")
        (signature,) = store.device_signatures("omar").values()
        assert store.device_signatures("omar") == {2: signature}
        message = A.DEVICE_LIST_PREFIX + companion.identity_key
        assert spec.xeddsa_verify(primary.identity_key, message, signature)
