"""Keys stay where they belong: device code needs a real clock and real randomness unless the
simulator hands it its own, and a forged message costs a bounded number of trial decryptions."""

from __future__ import annotations

import pytest

from relaysim.clients.agent import DeviceAgent
from relaysim.clients.session import Device


def test_a_device_agent_requires_a_clock() -> None:
    # A default clock read time 0, and a sender certificate that expired in 1970 was then accepted.
    with pytest.raises(TypeError, match="clock"):
        DeviceAgent(Device("alice", 1), registration_id=1, delivery_token=bytes(32))  # type: ignore[call-arg]
    agent = DeviceAgent(Device("alice", 1), registration_id=1, delivery_token=bytes(32), clock=lambda: 5.0)
    assert agent.clock() == 5.0


def test_a_forged_message_costs_a_bounded_number_of_trial_decryptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from relaysim.clients import session as session_module
    from relaysim.clients.errors import DecryptionError
    from relaysim.clients.ratchet import DoubleRatchet
    from relaysim.sims.world.util import seeded

    alice = Device("alice", 1, rng=seeded(1, "alice").randbytes)
    bob = Device("bob", 1, rng=seeded(1, "bob").randbytes)
    alice.start_session(bob.address, bob.generate_prekeys(2, 2))
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi")) == b"hi"
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"hello")) == b"hello"
    # bob holds the most sessions with alice a device keeps: the active one and 8 inactive ones
    # (8 more sessions on the same ratchet state: each a trial of its own)
    active = bob.sessions[alice.address]
    bob.inactive[alice.address] = [
        session_module.Session(active.ratchet, active.peer_identity, active.initial)
        for _ in range(session_module.MAX_INACTIVE_SESSIONS)
    ]
    genuine = alice.encrypt(bob.address, b"again")
    forged = genuine[:-1] + bytes([genuine[-1] ^ 1])  # a bad tag: every trial fails
    tried = 0
    real = DoubleRatchet.decrypt

    def counting(self: DoubleRatchet, body: bytes) -> bytes:
        nonlocal tried
        tried += 1
        return real(self, body)

    monkeypatch.setattr(DoubleRatchet, "decrypt", counting)
    with pytest.raises(DecryptionError):
        bob.decrypt(alice.address, forged)
    assert tried == session_module.MAX_TRIAL_DECRYPTIONS == 3  # not 1 + MAX_INACTIVE_SESSIONS = 9
    assert bob.decrypt(alice.address, genuine) == b"again"


def test_device_code_refuses_a_seeded_generator_that_is_not_the_simulators() -> None:
    import os
    import random
    import secrets

    from relaysim.clients.errors import UsageError
    from relaysim.sims.world.util import SimulationRandom, seeded

    for bad in (random.Random(7).randbytes, random.randbytes):
        with pytest.raises(UsageError, match="recomputed from the seed"):
            Device("alice", 1, rng=bad)
    device = Device("alice", 1, rng=seeded(7, "alice").randbytes)
    agent = DeviceAgent(device, registration_id=1, delivery_token=bytes(32), clock=lambda: 1.0)
    with pytest.raises(UsageError, match="DeviceAgent"):
        DeviceAgent(
            device,
            registration_id=1,
            delivery_token=bytes(32),
            rng=random.Random(1).randbytes,
            clock=lambda: 1.0,
        )
    assert agent.rng is os.urandom  # device code defaults to the OS's randomness
    for good in (os.urandom, secrets.token_bytes, random.SystemRandom().randbytes):
        Device("alice", 1, rng=good)
    assert isinstance(seeded(1, "x"), SimulationRandom)


def test_only_the_simulator_constructs_its_generator() -> None:
    # SimulationRandom is defined in sims/world/util.py and named nowhere in clients/ or relay/.
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = sorted(
        str(p.relative_to(root))
        for package in ("clients", "relay")
        for p in (root / package).rglob("*.py")
        if any(
            isinstance(n, ast.Name | ast.alias | ast.Attribute)
            and "SimulationRandom"
            in (getattr(n, "id", None) or getattr(n, "name", None) or getattr(n, "attr", ""))
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert users == []


def test_the_profile_switches_padding_and_the_scenario_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from relaysim.sims.scenario import parse_scenario
    from relaysim.sims.world import simulation as runner

    text = """
[scenario]
name = "pad"
duration = "1h"
seed = 1

[relay]
profile = "keep-everything"

[[people]]
name = "alice"

[[people]]
name = "bob"
"""
    assert runner.Simulation(parse_scenario(text, "pad.toml")).padding == "signal"
    assert (
        runner.Simulation(parse_scenario(text + '\n[defences]\npadding = "pow2"\n', "p.toml")).padding
        == "pow2"
    )
    from relaysim.sims.world import timeline

    real = timeline.profile_as_of
    monkeypatch.setattr(
        timeline, "profile_as_of", lambda *a, **k: dataclasses.replace(real(*a, **k), padding=False)
    )
    assert runner.Simulation(parse_scenario(text, "pad.toml")).padding == "none"
