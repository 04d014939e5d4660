"""A second copy of a message the device read already is a ``Duplicate``, not ``Undecryptable``.

A phone whose connection drops writes its unanswered requests again on the next one with the same id
(clients/link.py); when the relay had carried out a send, it carries it out again, and the recipient
gets the same body a second time, under a new envelope id. The ratchet refuses it (the message key was
used once), and the device tells it apart by its header alone (the number's key is used and not among
the skipped keys: libsignal's DuplicatedMessage), before and without any decryption. It is acked and
dropped, with no retry receipt and no change of state; a forgery bearing a used number gains nothing
from being reported so."""

from __future__ import annotations

import dataclasses

import pytest

from relaysim.clients.agent import (
    DECRYPTION_FAILED,
    SEALED_SENDER_SELF_SEND,
    UNTRUSTED_IDENTITY,
    DeviceAgent,
    Duplicate,
    Received,
    Undecryptable,
    pad,
)
from relaysim.clients.errors import DecryptionError
from relaysim.clients.ratchet import MAX_RECEIVING_CHAINS, DoubleRatchet, RatchetConfig
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply
from tests.clients.test_ratchet import make_pair
from tests.conftest import seeded_rng
from tests.helpers import Clock, new_core


class World:
    """Phones on one relay core, each on a connection of its own; replies are handed back at once,
    pushes held in ``pushes``, and the requests written kept in ``written`` (to write one again)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.core: RelayCore = new_core(self.clock)
        self.agents: dict[int, DeviceAgent] = {}
        self.conns: dict[int, ConnectionContext] = {}
        self.pushes: list[tuple[DeviceAgent, wire.Envelope]] = []
        self.written: list[tuple[int, wire.Request]] = []

    def join(self, name: str) -> DeviceAgent:
        rng = seeded_rng(len(self.agents) + 40)
        a = DeviceAgent(
            Device(name, 1, rng=rng),
            registration_id=7,
            delivery_token=name.encode().ljust(32, b"."),
            rng=rng,
            trust_root=self.core.trust_root_public,
            clock=self.clock,
        )
        cid = len(self.agents) + 1
        self.agents[cid] = a
        for other in self.agents.values():  # contacts know each other's delivery tokens (sealed sender)
            other.tokens[name], a.tokens[other.account] = a.delivery_token, other.delivery_token
        self.conns[cid] = ConnectionContext(cid, ("192.0.2.1", 4000 + cid))
        self.core.connect(self.conns[cid])
        a.register()
        self.pump()
        a.login()
        self.pump()
        a.receive()
        self.pump()
        assert a.authenticated
        return a

    def carry(self, cid: int, frame: wire.Request) -> list[object]:
        events: list[object] = []
        for out in self.core.handle(self.conns[cid], frame):
            if isinstance(out, Reply):
                events += self.agents[cid].handle(out.frame)
            elif isinstance(out, Push):
                assert isinstance(out.frame, wire.Deliver)
                self.pushes.append((self.agents[out.connection], out.frame.envelope))
        return events

    def pump(self) -> list[object]:
        events: list[object] = []
        busy = True
        while busy:
            busy = False
            for cid, a in self.agents.items():
                for frame in a.take_outbox():
                    busy = True
                    self.written.append((cid, frame))
                    events += self.carry(cid, frame)
        return events

    def replay_last_send(self) -> None:
        """Write the last send again, same request id: the relay carries it out a second time."""
        cid, frame = next(
            (c, f) for c, f in reversed(self.written) if isinstance(f, wire.Send | wire.SealedSend)
        )
        self.carry(cid, frame)

    def greet(self, a: DeviceAgent, b: DeviceAgent) -> None:
        """``a`` writes to ``b`` and ``b`` answers, each read: both hold the session, and the next
        message is a normal ratchet message, not a prekey message."""
        a.send_text(b.account, b"hi")
        self.pump()
        self.deliver(*self.take())
        b.send_text(a.account, b"hello")
        self.pump()
        self.deliver(*self.take())

    def take(self) -> tuple[DeviceAgent, wire.Envelope]:
        (push,) = self.pushes
        self.pushes.clear()
        return push

    def deliver(self, agent: DeviceAgent, env: wire.Envelope) -> tuple[list[object], list[wire.Request]]:
        """Hand ``env`` to ``agent``: its events, and the requests it wrote in answer."""
        events = list(agent.handle(wire.Deliver(id=0, envelope=env)))
        answered = agent.take_outbox()
        cid = next(c for c, a in self.agents.items() if a is agent)
        for frame in answered:
            self.carry(cid, frame)
        return events, answered


def _kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events if isinstance(e, Received | Duplicate | Undecryptable)]


def _replayed_send(sealed: bool, *, reply_first: bool) -> None:
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    if reply_first:  # not alice's first message: a normal ratchet message, not a prekey message
        alice.send_text("bob", b"hi", sealed=sealed)
        w.pump()
        assert _kinds(w.deliver(*w.take())[0]) == ["Received"]
        w.pump()
        bob.send_text("alice", b"hello", sealed=sealed)
        w.pump()
        assert _kinds(w.deliver(*w.take())[0]) == ["Received"]
        w.pump()
    alice.send_text("bob", b"once only", sealed=sealed)
    w.pump()
    first = w.take()
    w.replay_last_send()
    second = w.take()
    assert first[1].id != second[1].id and first[1].body == second[1].body  # the same body, a new id
    events, answered = w.deliver(*first)
    assert _kinds(events) == ["Received"]
    state = bob.device.to_dict()
    events, answered = w.deliver(*second)
    assert _kinds(events) == ["Duplicate"]
    assert events[0] == Duplicate(second[1].id, sealed)
    # acknowledged, and nothing else asked for: no retry receipt, no bundle fetch (a new session)
    assert [type(f) for f in answered] == [wire.Ack]
    assert bob.device.to_dict() == state


def test_a_replayed_send_is_a_duplicate_not_undecryptable() -> None:
    _replayed_send(False, reply_first=False)  # a prekey message
    _replayed_send(False, reply_first=True)


def test_a_replayed_sealed_send_is_a_duplicate_too() -> None:
    _replayed_send(True, reply_first=False)
    _replayed_send(True, reply_first=True)


def test_a_forgery_bearing_a_used_number_gains_nothing() -> None:
    """The relay (which sees a plain send's header) forges a body under a number bob's chain has used:
    reported as a duplicate, it is acked and dropped like any unreadable envelope — no state change, no
    retry receipt — and a forgery under a number not used yet is still ``Undecryptable`` and burns
    nothing: the genuine message with that number is read after it."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    alice.send_text("bob", b"read")
    w.pump()
    _, read = w.take()
    assert read.body[0] == 1  # a normal message: 0x01 ‖ header (40 bytes) ‖ ciphertext
    w.deliver(bob, read)
    alice.send_text("bob", b"not read yet")
    w.pump()
    _, unread = w.take()

    def forged(env: wire.Envelope, n: int) -> wire.Envelope:
        body = bytearray(env.body)
        body[-1] ^= 1  # the tag no longer checks
        return dataclasses.replace(env, id=bytes([n]) * 16, body=bytes(body))

    state = bob.device.to_dict()
    for env, n, kind in ((read, 1, "Duplicate"), (unread, 2, "Undecryptable")):
        events, answered = w.deliver(bob, forged(env, n))
        assert _kinds(events) == [kind]
        assert [type(f) for f in answered] == [wire.Ack]
        assert bob.device.to_dict() == state
    events, _ = w.deliver(bob, unread)
    assert [(type(e), e.plaintext) for e in events if isinstance(e, Received)] == [
        (Received, b"not read yet")
    ]


def test_a_replayed_group_message_is_a_duplicate_and_asks_for_no_resend() -> None:
    """A sender-key message sent twice (client-side fan-out: one ``send`` per member account): the
    second copy names a sender key and iteration bob has read, so it is a duplicate, not a message to
    ask its sender to resend (no retry receipt, now or later)."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    group = bytes(range(16))
    alice.send_group(group, ["bob"], b"to the group")
    w.pump()
    handout, first = w.pushes  # the sender key (over the pairwise session), then the group message
    w.pushes.clear()
    w.replay_last_send()  # the group message's send, written again
    second = w.take()
    assert _kinds(w.deliver(*handout)[0]) == []
    assert first[1].body == second[1].body and first[1].id != second[1].id
    assert _kinds(w.deliver(*first)[0]) == ["Received"]
    events, answered = w.deliver(*second)
    assert _kinds(events) == ["Duplicate"]
    assert [type(f) for f in answered] == [wire.Ack]
    assert bob.retry_due() is None


@pytest.mark.parametrize("header_encryption", [False, True])
def test_already_used_names_the_numbers_whose_keys_were_used_and_no_other(header_encryption: bool) -> None:
    """``DoubleRatchet.already_used``: a number behind the receiving chain whose key is not among the
    skipped ones; not a skipped message still to come, not one ahead, not one on a chain it does not hold
    (with header encryption: only under a header key it holds)."""
    alice, bob = make_pair(RatchetConfig(header_encryption=header_encryption), 5)
    m0, m1, m2 = (alice.encrypt(b"message %d" % i) for i in range(3))
    assert not bob.already_used(m0)  # no receiving chain yet
    bob.decrypt(m0)
    bob.decrypt(m2)  # m1 is skipped: its key is kept
    assert [bob.already_used(m) for m in (m0, m1, m2)] == [True, False, True]
    m3 = alice.encrypt(b"message 3")
    assert not bob.already_used(m3)
    bob.decrypt(m1)
    assert bob.already_used(m1)
    with pytest.raises(DecryptionError):
        bob.decrypt(m1)  # and decrypt refuses what already_used names
    assert not bob.already_used(b"\x00" * 200)  # another chain (or no header key of its)
    alice.decrypt(bob.encrypt(b"a reply"))  # alice turns her ratchet: a new chain, unknown to bob yet
    assert not bob.already_used(alice.encrypt(b"on a new chain"))


@pytest.mark.parametrize("header_encryption", [False, True])
def test_a_copy_read_on_a_chain_the_sender_has_turned_from_is_still_known(header_encryption: bool) -> None:
    """``already_used`` after the DH ratchet has turned: the session remembers where each of the
    chains before the current one ended (four of them: five receiving chains in all, as libsignal's
    MAX_RECEIVER_CHAINS), so a copy of a message read on one of them is still a used number; a message
    of such a chain whose key is skipped is not; beyond the chain's end (its PN) nothing was sent; and a
    chain five turns back is forgotten, its skipped keys with it (libsignal drops its oldest receiver
    chain so, double_ratchet.rs ``dh_ratchet_step``). The memory survives to_dict / from_dict."""
    alice, bob = make_pair(RatchetConfig(header_encryption=header_encryption), 6)
    old_read, old_skipped = alice.encrypt(b"read"), alice.encrypt(b"skipped, to come")
    bob.decrypt(old_read)
    turns = []
    for i in range(MAX_RECEIVING_CHAINS):
        alice.decrypt(bob.encrypt(b"reply %d" % i))  # alice turns her ratchet
        m = alice.encrypt(b"on chain %d" % i)
        bob.decrypt(m)  # bob's receiving chain turns too
        turns.append(m)
        if i == 0:
            assert bob.already_used(old_read)  # a copy from before the turn
            assert not bob.already_used(old_skipped)  # its key is kept: it can still be read
            restored = DoubleRatchet.from_dict(bob.to_dict())
            assert restored.already_used(old_read) and not restored.already_used(old_skipped)
            assert restored == bob
    assert [bob.already_used(m) for m in turns] == [True] * MAX_RECEIVING_CHAINS
    # the first chain is now five turns back: forgotten (what a decrypt refuses, as before: Undecryptable)
    assert not bob.already_used(old_read)
    before = bob.to_dict()
    with pytest.raises(DecryptionError):  # its skipped key went with it
        bob.decrypt(old_skipped)
    assert bob.to_dict() == before and not bob.already_used(old_skipped)


def test_a_copy_arriving_after_the_turn_is_a_duplicate_at_the_agent() -> None:
    """The agent's view of it: alice's message is written twice (a send replayed), bob reads the first,
    the two then trade messages (both ratchets turn), and the second copy arrives: a Duplicate, acked,
    with no retry receipt — before, bob's session knew only its current chain and called it
    Undecryptable, and asked alice to resend a message he had read."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    alice.send_text("bob", b"once only")
    w.pump()
    first = w.take()
    w.replay_last_send()
    second = w.take()
    assert _kinds(w.deliver(*first)[0]) == ["Received"]
    bob.send_text("alice", b"got it")
    w.pump()
    w.deliver(*w.take())
    alice.send_text("bob", b"good")  # on alice's next chain: bob's ratchet turns as he reads it
    w.pump()
    assert _kinds(w.deliver(*w.take())[0]) == ["Received"]
    state = bob.device.to_dict()
    events, answered = w.deliver(*second)
    assert _kinds(events) == ["Duplicate"]
    assert [type(f) for f in answered] == [wire.Ack]
    assert bob.device.to_dict() == state
    assert bob.retry_due() is None


def test_a_refusal_of_a_message_that_opened_says_why_apart_from_a_decryption_failure() -> None:
    """libsignal keeps UntrustedIdentity and SealedSenderSelfSend apart from a decryption failure
    (InvalidMessage), and Signal's clients act on them apart: a changed identity key waits for the user,
    a self-send is dropped, only a failure may be worth a resend. The agent reports each as an
    ``Undecryptable`` with its ``reason``; they were reported alike."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    bob.device.identities.policy = "block"
    # a prekey message under alice/1's address from another identity key (a reinstall, or an impostor)
    impostor = Device("alice", 1, rng=seeded_rng(90))
    impostor.start_session(bob.device.address, bob.device.generate_prekeys(1, 1))
    body = impostor.encrypt(bob.device.address, pad(b"it is me, new phone", bob.padding))
    stamp = int(w.clock.now * 1000)
    env = wire.Envelope(
        id=b"\x01" * 16, body=body, timestamp=stamp, sealed=False, source_account="alice", source_device=1
    )
    events, answered = w.deliver(bob, env)
    refused = [e for e in events if isinstance(e, Undecryptable)]
    assert refused == [Undecryptable(env.id, False, UNTRUSTED_IDENTITY)]
    assert [type(f) for f in answered] == [wire.Ack]
    # a sealed message under this very device's address (its own session with itself)
    bob.send_text("alice", b"sealed, for a sender certificate", sealed=True)
    w.pump()
    w.take()
    assert bob.certificate is not None
    bob.device.start_session(bob.device.address, bob.device.generate_prekeys(1, 1))
    body = bob.device.seal(bob.device.address, pad(b"to myself", bob.padding), bob.certificate)
    env = wire.Envelope(id=b"\x02" * 16, body=body, timestamp=stamp, sealed=True)
    events, _ = w.deliver(bob, env)
    assert [e for e in events if isinstance(e, Undecryptable)] == [
        Undecryptable(env.id, True, SEALED_SENDER_SELF_SEND)
    ]
    # and a forgery is a decryption failure, as ever
    env = wire.Envelope(id=b"\x03" * 16, body=body[:-1] + bytes([body[-1] ^ 1]), timestamp=stamp, sealed=True)
    events, _ = w.deliver(bob, env)
    assert [e for e in events if isinstance(e, Undecryptable)] == [
        Undecryptable(env.id, True, DECRYPTION_FAILED)
    ]
