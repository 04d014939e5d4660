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
