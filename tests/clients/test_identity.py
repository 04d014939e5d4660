"""Pinned identities and replay refusal (issue #13, item 1).

A relay that labels an attacker's first message with a known address, or hands out an attacker's
bundle for a known address, must never silently replace the identity key pinned at first
contact; a prekey message made without a one-time prekey must not be accepted twice (under any
label).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from relaysim.clients.errors import DecryptionError
from relaysim.clients.identity import IdentityChanged, UntrustedIdentity
from relaysim.clients.session import Device, PeerAddress
from relaysim.sims.world.util import seeded

ALICE = PeerAddress("alice", 1)
BOB = PeerAddress("bob", 1)


def _device(address: PeerAddress, seed: int, policy: str = "warn") -> Device:
    return Device(
        address.account,
        address.device,
        rng=seeded(seed, "identity").randbytes,
        pq=False,
        identity_policy=policy,
    )


def _first_message(sender: Device, to: Device, text: bytes, *, one_time: bool = False) -> bytes:
    bundle = to.generate_prekeys(one_time=1 if one_time else 0, kem_one_time=0)
    if not one_time:
        bundle = replace(bundle, one_time_prekey=None)
    sender.start_session(to.address, bundle)
    return sender.encrypt(to.address, text)


def _talking(policy: str) -> tuple[Device, Device]:
    alice, bob = _device(ALICE, 1), _device(BOB, 2, policy)
    assert bob.decrypt(ALICE, _first_message(alice, bob, b"hi bob")) == b"hi bob"
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"hi alice")) == b"hi alice"
    return alice, bob


def test_an_identity_swap_by_message_warns_under_the_default_policy() -> None:
    alice, bob = _talking("warn")
    mallory = _device(ALICE, 99)  # claims alice's address with a key of its own
    assert bob.decrypt(ALICE, _first_message(mallory, bob, b"it's me")) == b"it's me"
    (change,) = bob.identities.take_changes()
    assert change == IdentityChanged(ALICE, alice.identity_key, mallory.identity_key, "message", True, False)


def test_an_identity_swap_by_message_is_refused_under_blocking() -> None:
    alice, bob = _talking("block")
    mallory = _device(ALICE, 99)
    with pytest.raises(UntrustedIdentity) as refused:
        bob.decrypt(ALICE, _first_message(mallory, bob, b"it's me"))
    assert refused.value.change.accepted is False
    assert [c.new for c in bob.identities.take_changes()] == [mallory.identity_key]
    # nothing was replaced: bob's next message is still for the real alice, not for mallory
    reply = bob.encrypt(ALICE, b"still you?")
    assert alice.decrypt(BOB, reply) == b"still you?"
    with pytest.raises(DecryptionError):
        mallory.decrypt(BOB, reply)
    # until the user approves the new key
    bob.identities.approve(ALICE, mallory.identity_key)
    assert bob.decrypt(ALICE, _first_message(mallory, bob, b"approved")) == b"approved"


def test_an_untrusted_identity_is_not_a_decryption_failure() -> None:
    """A message refused for its identity key did decrypt: ``UntrustedIdentity`` is its own exception,
    not a ``DecryptionError`` (whose one message says nothing of the check that failed), as libsignal's
    ``SignalProtocolError::UntrustedIdentity`` is not an ``InvalidMessage``. A caller catching decryption
    failures does not catch it; the state is as it was. A forgery of the same message is refused with
    the one ``DecryptionError`` and reports nothing."""
    _alice, bob = _talking("block")
    mallory = _device(ALICE, 99)
    message = _first_message(mallory, bob, b"it's me")
    forged = message[:-1] + bytes((message[-1] ^ 1,))
    state = bob.to_dict()
    with pytest.raises(DecryptionError) as failed:
        bob.decrypt(ALICE, forged)
    assert type(failed.value) is DecryptionError and bob.identities.take_changes() == []
    try:
        bob.decrypt(ALICE, message)
    except DecryptionError:
        pytest.fail("an untrusted identity was raised as a decryption failure")
    except UntrustedIdentity as refused:
        assert refused.change.new == mallory.identity_key and "changed" in str(refused)
    else:
        pytest.fail("the message from an identity key the user has not approved was read")
    assert not issubclass(UntrustedIdentity, DecryptionError)
    assert bob.to_dict() == state
    assert [c.new for c in bob.identities.take_changes()] == [mallory.identity_key]


def test_a_swapped_bundle_is_reported_and_blocked_for_a_verified_peer() -> None:
    alice, bob = _talking("warn")
    mallory = _device(BOB, 99)
    alice.identities.verify(BOB, bob.identity_key)
    bundle = mallory.generate_prekeys(one_time=1, kem_one_time=0)
    with pytest.raises(UntrustedIdentity):
        alice.start_session(BOB, bundle)
    (change,) = alice.identities.take_changes()
    assert change.via == "bundle" and change.was_verified and not change.accepted
    assert alice.peer_identity(BOB) == bob.identity_key


def test_a_prekey_message_without_a_one_time_prekey_is_refused_when_replayed_under_another_label() -> None:
    alice, bob = _device(ALICE, 1), _device(BOB, 2)
    first = _first_message(alice, bob, b"once")
    assert bob.decrypt(ALICE, first) == b"once"
    with pytest.raises(DecryptionError):
        bob.decrypt(PeerAddress("carol", 1), first)
    assert not bob.has_session(PeerAddress("carol", 1))
    # the state survives a copy of the phone
    copy = Device.from_dict(bob.to_dict())
    with pytest.raises(DecryptionError):
        copy.decrypt(PeerAddress("carol", 1), first)
    assert copy.identities.pinned(ALICE) == alice.identity_key


def test_a_version_1_state_pins_what_its_sessions_hold() -> None:
    alice, bob = _talking("warn")
    state = bob.to_dict()
    state["v"] = 1
    del state["identities"], state["seen_base_keys"]
    assert Device.from_dict(state).identities.pinned(ALICE) == alice.identity_key


class SwapsAndReplays(RuleBasedStateMachine):
    """Bob receives first messages from honest peers, from impostors under their labels, and replays
    of earlier first messages under any label. Whatever the order: no pinned key ever changes
    without an IdentityChanged; under ``block`` (or once verified) it never changes at all; no
    first message is accepted twice."""

    labels = st.sampled_from([PeerAddress("alice", 1), PeerAddress("carol", 1), PeerAddress("carol", 2)])

    @initialize(policy=st.sampled_from(["warn", "block"]))
    def start(self, policy: str) -> None:
        self.bob = _device(BOB, 0, policy)
        self.policy = policy
        self.seed = 1000
        self.honest: dict[PeerAddress, Device] = {}
        self.sent: list[bytes] = []  # first messages bob accepted
        self.pins: dict[PeerAddress, bytes] = {}
        self.verified: set[PeerAddress] = set()

    def _new(self, address: PeerAddress) -> Device:
        self.seed += 1
        return _device(address, self.seed)

    def _deliver(self, label: PeerAddress, ciphertext: bytes) -> bool:
        before = self.bob.identities.pinned(label)
        try:
            self.bob.decrypt(label, ciphertext)
            accepted = True
        except (DecryptionError, UntrustedIdentity):
            accepted = False
        changes = self.bob.identities.take_changes()
        after = self.bob.identities.pinned(label)
        if before is not None and after != before:
            assert accepted and self.policy == "warn" and label not in self.verified
            assert [(c.peer, c.previous, c.new, c.accepted) for c in changes] == [
                (label, before, after, True)
            ]
            self.verified.discard(label)
        if not accepted:
            assert after == before
        if accepted:
            self.pins[label] = after  # type: ignore[assignment]
        return accepted

    @rule(label=labels, one_time=st.booleans())
    def honest_first_message(self, label: PeerAddress, one_time: bool) -> None:
        sender = self.honest.setdefault(label, self._new(label))
        ct = _first_message(sender, self.bob, b"hello", one_time=one_time)
        if self._deliver(label, ct):
            self.sent.append(ct)

    @rule(label=labels, one_time=st.booleans())
    def impostor_first_message(self, label: PeerAddress, one_time: bool) -> None:
        ct = _first_message(self._new(label), self.bob, b"it's me", one_time=one_time)
        if self._deliver(label, ct):
            self.sent.append(ct)

    @rule(data=st.data(), label=labels)
    def replay(self, data: st.DataObject, label: PeerAddress) -> None:
        if not self.sent:
            return
        ct = data.draw(st.sampled_from(self.sent))
        # a replay is never accepted and never makes a session, under its own label or another
        before = self.bob.sessions_with(label)
        assert not self._deliver(label, ct)
        assert self.bob.sessions_with(label) == before

    @rule(label=labels)
    def verify(self, label: PeerAddress) -> None:
        key = self.bob.identities.pinned(label)
        if key is not None:
            self.bob.identities.verify(label, key)
            self.verified.add(label)

    @invariant()
    def pins_only_change_through_accepted_notices(self) -> None:
        if hasattr(self, "bob"):
            for label, key in self.pins.items():
                assert self.bob.identities.pinned(label) == key


TestSwapsAndReplays = SwapsAndReplays.TestCase
