"""The agent drops a second copy of an envelope unread, and forgets the ids the relay confirmed acked
once SEEN_AFTER_ACK has passed (the relay never delivers an acked envelope again), so a phone's memory
of envelopes stays bounded; a copy that came later still would be refused by the ratchet, and reported
as the duplicate it is (``Duplicate``: its header names a message number whose key was used)."""

from __future__ import annotations

from relaysim.clients.agent import SEEN_AFTER_ACK, DeviceAgent, Duplicate, Received
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply
from tests.conftest import seeded_rng
from tests.helpers import Clock, new_core


def _agent(name: str, core: RelayCore, clock: Clock) -> DeviceAgent:
    rng = seeded_rng(len(name))
    return DeviceAgent(
        Device(name, 1, rng=rng),
        registration_id=7,
        delivery_token=bytes(32),
        rng=rng,
        trust_root=core.trust_root_public,
        clock=clock,
    )


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.core = new_core(self.clock)
        self.agents: dict[int, DeviceAgent] = {}
        self.conns: dict[int, ConnectionContext] = {}
        self.pushes: list[tuple[DeviceAgent, wire.Response]] = []

    def join(self, name: str) -> DeviceAgent:
        a = _agent(name, self.core, self.clock)
        cid = len(self.agents) + 1
        self.agents[cid] = a
        self.conns[cid] = ConnectionContext(cid, ("192.0.2.1", 4000 + cid))
        self.core.connect(self.conns[cid])
        a.register()
        self.pump()
        a.login()
        self.pump()
        assert a.authenticated
        a.receive()  # drain the queue; from now on the relay pushes
        self.pump()
        return a

    def pump(self) -> list[object]:
        """Carry every request to the relay and every reply back; pushes are held in ``self.pushes``."""
        events: list[object] = []
        busy = True
        while busy:
            busy = False
            for cid, a in self.agents.items():
                for frame in a.take_outbox():
                    busy = True
                    for out in self.core.handle(self.conns[cid], frame):
                        if isinstance(out, Reply):
                            events += a.handle(out.frame)
                        elif isinstance(out, Push):
                            self.pushes.append((self.agents[out.connection], out.frame))
        return events

    def deliver(self, push: tuple[DeviceAgent, wire.Response]) -> list[object]:
        events: list[object] = list(push[0].handle(push[1]))
        return events + self.pump()


def test_a_second_copy_is_dropped_unread_and_acked_ids_are_forgotten_after_a_while() -> None:
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    alice.send_text("bob", b"first")
    w.pump()
    (first,) = w.pushes
    w.pushes.clear()
    events = w.deliver(first)  # bob decrypts and acks; the relay confirms the ack
    assert [type(e) for e in events] == [Received]
    assert w.deliver(first) == []  # a copy that crossed the ack: dropped unread
    # an hour later (and a little), another message and its ack: the first id is forgotten
    w.clock.now += SEEN_AFTER_ACK + 1
    alice.send_text("bob", b"second")
    w.pump()
    (second,) = w.pushes
    assert [type(e) for e in w.deliver(second)] == [Received]
    assert len(bob._seen) == 1  # only the recent one
    # the relay never sends an acked envelope again; if a copy came anyway, the ratchet refuses it, and
    # the device reports it as the duplicate it is
    assert [type(e) for e in w.deliver(first)] == [Duplicate]
