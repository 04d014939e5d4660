"""Every public decrypt path fails with the one ``DecryptionError``, never another type or message.

``clients.errors``: whatever a peer or the relay sends, decrypting it raises ``DecryptionError``,
whose message is always "message could not be decrypted" and which says nothing of the check that
failed (a tag, a padding, a header key, a limit, a certificate), and leaves the state as it was.
``tests/clients/test_hostile_input.py`` mutates messages for ``Device.decrypt``, ``open_sealed`` and
``GroupKeys.decrypt``; this file adds the paths and inputs it leaves out — a bare ``DoubleRatchet``,
an escrow frame around a message, a sealed envelope that opens around a mutated message, the read-
only questions asked of a refused message (``replayed``, ``sealed_replayed``, ``holds``, ``signed``),
a sender key distribution and a sealed group state of any bytes — and checks the exact type: a
subclass would tell a caller which check failed (``UntrustedIdentity``, raised only for a message that
did decrypt, under the identity policy, is no subclass: ``tests/clients/test_identity.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients.errors import DecryptionError
from relaysim.clients.escrow import ESCROW_TAG
from relaysim.clients.framing import MESSAGE_PREFIX
from relaysim.clients.groups import open_group_state
from relaysim.clients.session import Device, PeerAddress
from tests.clients.test_hostile_input import (
    ALICE_ADDRESS,
    GID,
    NOW,
    _conversation,
    _group_pair,
    _pk,
    _seal_content,
    _sealed_world,
    mutated,
)
from tests.conftest import seeded_rng

MESSAGE = "message could not be decrypted"
STAGES = ["prekey", "new-key", "same-chain", "skipped"]
CONFIGS = [(True, False), (False, True), (False, False)]


def _attempt(call: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, None) if ``call`` raised exactly ``DecryptionError`` with its one message; (False, what
    it returned) otherwise. Any other exception (a subclass too) propagates or fails the assertion."""
    try:
        value = call()
    except DecryptionError as exc:
        assert type(exc) is DecryptionError, f"{type(exc).__name__}: {exc}"
        assert str(exc) == MESSAGE and exc.args == (MESSAGE,)
        return True, None
    return False, value


def _refused(call: Callable[[], Any]) -> bool:
    return _attempt(call)[0]


@pytest.mark.parametrize(("pq", "he"), CONFIGS, ids=["pqxdh", "x3dh-he", "x3dh"])
@given(data=st.data())
def test_a_bare_double_ratchet_refuses_anything_with_the_one_error(
    pq: bool, he: bool, data: st.DataObject
) -> None:
    stage = data.draw(st.sampled_from(STAGES[1:]))
    state, message, plaintext = _conversation(pq, he)[stage]
    assert message[:1] == MESSAGE_PREFIX
    body = message[1:]
    forged = data.draw(st.one_of(mutated(body, framed=False), st.binary(max_size=200)))
    bob = Device.from_dict(state, rng=seeded_rng(99))
    ratchet = bob.sessions[ALICE_ADDRESS].ratchet
    before = ratchet.to_dict()
    assert bob.replayed(ALICE_ADDRESS, MESSAGE_PREFIX + forged) in (True, False)  # read only, no error
    assert ratchet.already_used(forged) in (True, False)
    refused, got = _attempt(lambda: ratchet.decrypt(forged))
    if refused:
        assert ratchet.to_dict() == before
        assert ratchet.decrypt(body) == plaintext
    else:
        assert got == plaintext  # (a change the message does not depend on)


@pytest.mark.parametrize(("pq", "he"), CONFIGS, ids=["pqxdh", "x3dh-he", "x3dh"])
@given(data=st.data())
def test_an_escrow_frame_of_any_length_around_any_message_is_the_one_error(
    pq: bool, he: bool, data: st.DataObject
) -> None:
    """A body that starts with the escrow tag: a length past the end, a blob too short, the message
    inside mutated. Recipients strip the frame and read the message; nothing else may escape."""
    state, message, plaintext = _conversation(pq, he)[data.draw(st.sampled_from(STAGES))]
    blob = data.draw(st.binary(max_size=120))
    length = data.draw(st.one_of(st.just(len(blob)), st.integers(0, 2**32 - 1)))
    inner = data.draw(st.one_of(st.just(message), mutated(message, he)))
    forged = bytes((ESCROW_TAG,)) + length.to_bytes(4, "big") + blob + inner
    bob = Device.from_dict(state, rng=seeded_rng(99))
    assert bob.replayed(ALICE_ADDRESS, forged) in (True, False)
    refused, got = _attempt(lambda: bob.decrypt(ALICE_ADDRESS, forged))
    if refused:
        assert bob.to_dict() == state
    else:
        assert got == plaintext


@given(data=st.data())
def test_a_sealed_envelope_around_a_mutated_message_is_the_one_error(data: st.DataObject) -> None:
    """The envelope opens and its certificate checks; the message inside is a mutated ciphertext."""
    alice_state, bob_state, root, certificate, _rogue = _sealed_world()
    alice = Device.from_dict(alice_state, rng=seeded_rng(34))
    bob = Device.from_dict(bob_state, rng=seeded_rng(35))
    inner = alice.encrypt(bob.address, b"inner")
    forged_inner = data.draw(mutated(inner))
    forged = _seal_content(alice, bob, _pk([certificate, forged_inner]))
    state = bob.to_dict()
    assert bob.sealed_replayed(forged, root, NOW) in (True, False)
    refused, got = _attempt(lambda: bob.open_sealed(forged, root, NOW))
    if refused:
        assert bob.to_dict() == state
        honest = _seal_content(alice, bob, _pk([certificate, inner]))
        assert bob.open_sealed(honest, root, NOW) == (alice.address, b"inner")
    else:
        assert got == (alice.address, b"inner")


@given(envelope=st.binary(max_size=400))
def test_any_bytes_as_a_sealed_envelope_are_the_one_error(envelope: bytes) -> None:
    _alice_state, bob_state, root, _certificate, _rogue = _sealed_world()
    bob = Device.from_dict(bob_state, rng=seeded_rng(35))
    assert bob.sealed_replayed(envelope, root, NOW) is False
    assert _refused(lambda: bob.open_sealed(envelope, root, NOW))
    assert bob.to_dict() == bob_state


@pytest.mark.parametrize("which", [0, 3], ids=["skipped", "next"])
@given(data=st.data())
def test_any_group_message_or_distribution_bytes_are_the_one_error(which: int, data: st.DataObject) -> None:
    """``GroupKeys.decrypt``, the read-only ``holds`` and ``signed``, and ``process`` (a sender key
    distribution) on a mutated message or any bytes: refused with the one error, nothing changed."""
    _alice, bob, messages = _group_pair()
    forged = data.draw(st.one_of(mutated(messages[which], framed=False), st.binary(max_size=200)))
    state = bob.to_dict()
    expected = (GID, b"group message %d" % which)
    for refused, answer in (
        _attempt(lambda: bob.holds(ALICE_ADDRESS, forged)),
        _attempt(lambda: bob.signed(ALICE_ADDRESS, forged)),
    ):
        assert refused or answer in (True, False)
    assert bob.to_dict() == state
    refused, got = _attempt(lambda: bob.decrypt(ALICE_ADDRESS, forged))
    if refused:
        assert bob.to_dict() == state
        assert bob.decrypt(ALICE_ADDRESS, messages[which]) == expected
    else:
        assert got == expected
    state = bob.to_dict()
    if _refused(lambda: bob.process(PeerAddress("carol", 1), forged)):
        assert bob.to_dict() == state


@given(blob=st.binary(max_size=300), version=st.integers(0, 2**32))
def test_any_bytes_as_a_sealed_group_state_are_the_one_error(blob: bytes, version: int) -> None:
    assert _refused(lambda: open_group_state(bytes(32), GID, version, blob))
