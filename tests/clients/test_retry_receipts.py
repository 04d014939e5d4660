"""Retry receipts between phones, against a real ``RelayCore`` (frames handed across by hand).

A 1:1 message that finds no session on the receiving phone (it lost its sessions, as after a restore
from an old backup) is asked for again: the phone sends the sender a retry receipt, which begins a
new session from the sender's bundle; the sender answers from its log of recent messages over that
session, and the phone reads the message. Signal's clients do the same with a DecryptionErrorMessage.
"""

from __future__ import annotations

from relaysim.clients.agent import DeviceAgent, Received, Undecryptable
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply
from tests.conftest import seeded_rng
from tests.helpers import new_core

NOW = 1_700_000_000.0


class Phones:
    """alice and bob, each on a connection of its own; the relay's replies and pushes are carried back."""

    def __init__(self) -> None:
        self.core: RelayCore = new_core()
        self.agents: dict[int, DeviceAgent] = {}
        self.conns: dict[str, ConnectionContext] = {}
        self.events: dict[str, list[object]] = {}
        self.sends: list[tuple[str, wire.Send]] = []
        for i, name in enumerate(("alice", "bob")):
            rng = seeded_rng(10 + i)
            agent = DeviceAgent(
                Device(name, 1, rng=rng),
                registration_id=10 + i,
                delivery_token=rng(32),
                rng=rng,
                clock=lambda: NOW,
            )
            conn = self.conns[name] = ConnectionContext(i + 1, ("192.0.2.1", 40000 + i))
            self.agents[conn.id] = agent
            self.events[name] = []
            self.core.connect(conn)
            agent.register()
            self.pump()
            agent.login()
            self.pump()

    def agent(self, name: str) -> DeviceAgent:
        return self.agents[self.conns[name].id]

    def pump(self) -> None:
        """Carry every queued request and every answer until everyone is quiet."""
        busy = True
        while busy:
            busy = False
            for agent in list(self.agents.values()):
                name = agent.account
                for frame in agent.take_outbox():
                    busy = True
                    if isinstance(frame, wire.Send):
                        self.sends.append((name, frame))
                    for out in self.core.handle(self.conns[name], frame):
                        if isinstance(out, Reply | Push):
                            target = self.agents[out.connection]
                            self.events[target.account] += target.handle(out.frame)


def _bob_loses_his_session(p: Phones) -> tuple[DeviceAgent, DeviceAgent]:
    """alice writes, bob answers (so alice's session no longer carries the prekey header: plain
    Double Ratchet messages from then on), then bob's phone loses its session with alice (restored
    from an old backup) and alice does not know."""
    alice, bob = p.agent("alice"), p.agent("bob")
    alice.send_text("bob", b"FIRST", ref=1)
    p.pump()
    bob.send_text("alice", b"ACK", ref=2)
    p.pump()
    a = PeerAddress("alice", 1)
    bob.device.sessions.pop(a)
    bob.device.inactive.pop(a, None)
    return alice, bob


def test_a_message_that_finds_no_session_is_asked_for_again_and_read() -> None:
    p = Phones()
    alice, bob = p.agent("alice"), p.agent("bob")
    alice.send_text("bob", b"FIRST", ref=1)
    p.pump()
    assert [e.plaintext for e in p.events["bob"] if isinstance(e, Received)] == [b"FIRST"]
    # bob answers, so alice's session no longer carries the prekey header: a plain Double Ratchet message
    bob.send_text("alice", b"ACK", ref=2)
    p.pump()
    # bob's phone loses its sessions (restored from an old backup); alice does not know
    a = PeerAddress("alice", 1)
    bob.device.sessions.pop(a)
    bob.device.inactive.pop(a, None)
    p.events["bob"].clear()
    alice.send_text("bob", b"SECOND, AFTER THE LOSS", ref=3)
    p.pump()
    got = p.events["bob"]
    assert [type(e).__name__ for e in got if isinstance(e, Undecryptable | Received)] == [
        "Undecryptable",
        "Received",
    ]
    (read,) = [e for e in got if isinstance(e, Received)]
    assert read.plaintext == b"SECOND, AFTER THE LOSS" and read.sender == a
    # on the wire: alice's text, bob's retry receipt, alice's resend — three envelopes like any others
    assert [(who, f.to) for who, f in p.sends][-3:] == [("alice", "bob"), ("bob", "alice"), ("alice", "bob")]
    # and the conversation goes on, on the new session
    p.events["bob"].clear()
    alice.send_text("bob", b"THIRD", ref=4)
    p.pump()
    assert [e.plaintext for e in p.events["bob"] if isinstance(e, Received)] == [b"THIRD"]
    assert not [e for e in p.events["bob"] if isinstance(e, Undecryptable)]


def test_a_pairwise_retry_receipt_is_answered_once() -> None:
    """A second receipt for the same message (repeated, or forged by someone holding a session with
    alice) gets no second resend; nor does one naming an envelope alice never sent."""
    p = Phones()
    alice, bob = _bob_loses_his_session(p)
    alice.send_text("bob", b"SECOND", ref=3)
    p.pump()
    (asked,) = bob._asked_again  # the envelope bob asked for again, and read from alice's resend
    for eid in (asked, bytes(16)):
        before = len(p.sends)
        bob.send_text("alice", b"\x00\xfeE" + (1).to_bytes(4, "big") + b"P" + eid, ref=9)
        p.pump()
        assert [w for w, _f in p.sends[before:]] == ["bob"]  # the receipt went out; alice sent nothing


def test_the_pairwise_send_log_keeps_each_text_small_until_a_retry() -> None:
    """A day's 1:1 send log holds every text sent that day (a million at the scale target): its one
    recipient account as a 1-tuple (a frozenset is 216 B), no answered dict until a retry receipt."""
    p = Phones()
    alice, bob = _bob_loses_his_session(p)
    entries = list(alice._pairwise_log.values())
    assert entries and all(e.accounts == ("bob",) and e.answered is None for e in entries)
    alice.send_text("bob", b"SECOND", ref=3)
    p.pump()
    (asked,) = bob._asked_again
    assert alice._pairwise_log[asked].answered == {PeerAddress("bob", 1): (1, NOW)}  # answered once
