"""Keys stay where they belong: device code needs a real clock and real randomness unless the
simulator hands it its own, and a forged message costs a bounded number of trial decryptions."""

from __future__ import annotations

import pytest

from clients.agent import DeviceAgent
from clients.session import Device


def test_a_device_agent_requires_a_clock() -> None:
    # A default clock read time 0, and a sender certificate that expired in 1970 was then accepted.
    with pytest.raises(TypeError, match="clock"):
        DeviceAgent(Device("alice", 1), registration_id=1, delivery_token=bytes(32))  # type: ignore[call-arg]
    agent = DeviceAgent(Device("alice", 1), registration_id=1, delivery_token=bytes(32), clock=lambda: 5.0)
    assert agent.clock() == 5.0


def test_a_forged_message_costs_a_bounded_number_of_trial_decryptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clients import session as session_module
    from clients.errors import DecryptionError
    from clients.ratchet import DoubleRatchet
    from sims.util import seeded

    alice = Device("alice", 1, rng=seeded(1, "alice").randbytes)
    bob = Device("bob", 1, rng=seeded(1, "bob").randbytes)
    alice.start_session(bob.address, bob.generate_prekeys(2, 2))
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi")) == b"hi"
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"hello")) == b"hello"
    # bob holds the most sessions with alice a device keeps: the active one and 8 inactive ones.
    active = bob.sessions[alice.address]
    bob.inactive[alice.address] = [active] * session_module.MAX_INACTIVE_SESSIONS
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
