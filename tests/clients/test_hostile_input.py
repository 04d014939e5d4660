"""The device against hostile input: a malicious relay (it hands out bundles, labels unsealed
envelopes with their sender and answers every request) and a malicious peer (it holds the session's
keys, so it can write messages that authenticate with any header it likes).

What must hold: a bad bundle is refused at session set-up with a ``BundleError`` naming the key;
every message that does not decrypt raises the one ``DecryptionError`` and leaves the device's state
exactly as it was (the Double Ratchet spec, §3.5: state changes are committed only once a message
has authenticated), so the next honest message still reads; and nothing the relay sends makes the
agent's ``handle`` raise.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import _primitives as _p
from relaysim.clients import sealed, spec
from relaysim.clients.agent import (
    CERTIFICATE_LAST_USE,
    CERTIFICATE_RENEWAL,
    Accepted,
    DeviceAgent,
    Duplicate,
    Failed,
    IdentityChanged,
    LoggedIn,
    ReceiptReceived,
    Received,
    SentTranscript,
    Undecryptable,
)
from relaysim.clients.errors import DecryptionError
from relaysim.clients.framing import MESSAGE_PREFIX, TYPE_PREKEY
from relaysim.clients.groups import GroupKeys
from relaysim.clients.identity import UntrustedIdentity
from relaysim.clients.keys import BundleError, OneTimePreKey, PreKeyBundle, SignedPreKey
from relaysim.clients.ratchet import DEFAULT_MAX_SKIP, HEADER, HEADER_LEN, RatchetConfig, parse_header
from relaysim.clients.session import Device, PeerAddress, parse_ciphertext
from relaysim.relay import wire
from relaysim.relay.certificates import ServerSigningKey, TrustRoot
from relaysim.relay.content import CONTROL
from relaysim.relay.core import DEFAULT_CERTIFICATE_TTL, Push, Reply
from tests.clients.test_agent_duplicates import World
from tests.conftest import seeded_rng

P = 2**255 - 19
# X25519 public keys whose shared secret with any private key is all zeros: u-coordinates of points of
# small order (2, 4, 8) on curve25519 or its twist, and encodings of the same values plus p (RFC 7748
# takes u mod p); libsodium's list of them.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (P - 1).to_bytes(32, "little"),
    P.to_bytes(32, "little"),
    (P + 1).to_bytes(32, "little"),
]


# --- bundles the relay hands out ------------------------------------------------------------------


@pytest.mark.parametrize("low", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_a_low_order_one_time_prekey_is_refused_at_set_up(low: bytes) -> None:
    """The one-time prekey is not signed: the relay can put any key there in a genuine bundle."""
    bob = Device("bob", 1, rng=seeded_rng(2))
    good = bob.generate_prekeys(2, 2)
    assert good.one_time_prekey is not None
    forged = dataclasses.replace(good, one_time_prekey=OneTimePreKey(good.one_time_prekey.id, low))
    forged.verify()  # every signature in it checks
    alice = Device("alice", 1, rng=seeded_rng(1))
    with pytest.raises(BundleError, match=r"one_time_prekey\.public is a low-order X25519 point"):
        alice.start_session(bob.address, forged)
    assert not alice.has_session(bob.address)
    assert alice.identities.pinned(bob.address) is None
    alice.start_session(bob.address, good)  # the genuine bundle still makes a session
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi")) == b"hi"


def test_a_low_order_signed_prekey_signed_by_the_relays_own_identity_key_is_refused() -> None:
    """A relay that serves its own identity key (a first contact: nothing pinned yet) signs what it likes."""
    mallory = Device("mallory", 1, pq=False, rng=seeded_rng(7)).secrets.identity
    low = LOW_ORDER[2]
    spk = SignedPreKey(1, low, mallory.sign(spec.encode_public_key(low), seeded_rng(3)))
    forged = PreKeyBundle(mallory.public, spk)
    forged.verify()
    alice = Device("alice", 1, pq=False, rng=seeded_rng(1))
    with pytest.raises(BundleError, match=r"signed_prekey\.public is a low-order X25519 point"):
        alice.start_session(Device("bob", 1, rng=seeded_rng(2)).address, forged)
    assert not alice.sessions


def test_a_low_order_identity_key_with_a_forged_signature_is_refused() -> None:
    """XEdDSA does not refuse the identity key u = 0 (a point of order 2), so its signature can be
    forged: R the identity point and s = 0 verify for every message whose hash h is even, one in two
    (sB − hA = −hA = the identity). The signature check passes; the set-up must still refuse it."""
    forged_signature = b"\x01" + bytes(31) + bytes(32)
    rng = seeded_rng(3)
    for _ in range(64):
        spk = spec.generate_dh(rng).public
        if spec.xeddsa_verify(bytes(32), spec.encode_public_key(spk), forged_signature):
            break
    else:
        raise AssertionError("no message with an even hash in 64 tries")
    forged = PreKeyBundle(bytes(32), SignedPreKey(1, spk, forged_signature))
    forged.verify()
    alice = Device("alice", 1, pq=False, rng=seeded_rng(1))
    with pytest.raises(BundleError, match=r"identity_key is a low-order X25519 point"):
        alice.start_session(Device("bob", 1, rng=seeded_rng(2)).address, forged)
    assert not alice.sessions


def _answer_forged(w: World, a: DeviceAgent, forge: Callable[[wire.Response], wire.Response]) -> list[object]:
    """Carry ``a``'s requests to the relay and the answers back, passing each answer through
    ``forge`` first (the relay turned hostile on the way back). Pushes to other devices are kept in
    ``w.pushes``, unforged."""
    cid = next(c for c, x in w.agents.items() if x is a)
    events: list[object] = []
    for _ in range(20):
        frames = a.take_outbox()
        if not frames:
            break
        for frame in frames:
            for out in w.core.handle(w.conns[cid], frame):
                if isinstance(out, Reply):
                    events.extend(a.handle(forge(out.frame)))
                elif isinstance(out, Push) and isinstance(out.frame, wire.Deliver):
                    w.pushes.append((w.agents[out.connection], out.frame.envelope))
    return events


def test_the_agent_fails_the_send_when_the_relay_serves_a_low_order_one_time_prekey() -> None:
    w = World()
    alice, _bob = w.join("alice"), w.join("bob")

    def zero_the_one_time_prekey(frame: wire.Response) -> wire.Response:
        if not isinstance(frame, wire.Bundle):
            return frame
        devices = tuple(
            dataclasses.replace(d, one_time_prekey=wire.Prekey(id=d.one_time_prekey.id, public=bytes(32)))
            if d.one_time_prekey is not None
            else d
            for d in frame.devices
        )
        return dataclasses.replace(frame, devices=devices)

    alice.send_text("bob", b"hello", ref="m1")
    events = _answer_forged(w, alice, zero_the_one_time_prekey)
    failed = [e for e in events if isinstance(e, Failed)]
    assert [(e.ref, e.code) for e in failed] == [("m1", "bad_bundle")]
    assert "one_time_prekey.public is a low-order X25519 point" in failed[0].message
    assert not alice.device.sessions


# --- frames a hostile relay pushes to the agent ---------------------------------------------------


def _envelope(body: bytes, *, sealed: bool = False, source: tuple[str, int] | None = None) -> wire.Envelope:
    account, device = source if source is not None else (None, None)
    return wire.Envelope(
        id=seeded_rng(len(body))(16),
        body=body,
        timestamp=1,
        sealed=sealed,
        source_account=account,
        source_device=device,
    )


@pytest.mark.parametrize("first_byte", [0x01, 0x02, 0x33, 0xE5, 0x00])
def test_an_unsealed_envelope_that_names_no_sender_is_undecryptable(first_byte: int) -> None:
    """The relay names the sender of every unsealed envelope; one that names none (a 1:1 message,
    a prekey message, a group message, an escrowed one) is reported, not asserted on."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    state = alice.device.to_dict()
    env = _envelope(bytes((first_byte,)) + seeded_rng(first_byte)(150))
    events = alice.handle(wire.Deliver(id=0, envelope=env))
    assert [type(e).__name__ for e in events] == ["Undecryptable"]
    assert [type(f) for f in alice.take_outbox()] == [wire.Ack]
    assert alice.device.to_dict() == state
    # and the next honest message still reads
    bob.send_text("alice", b"still here")
    w.pump()
    read, _ = w.deliver(*w.take())
    assert [e.plaintext for e in read if isinstance(e, Received)] == [b"still here"]


def _responses(request_id: int) -> list[wire.Response]:
    """One well-formed frame of each response kind (but ``deliver``, which answers nothing)."""
    eid = bytes(range(16))
    group = bytes(16)
    head = wire.KeyLogHead(tree_size=1, timestamp=1, root_hash=bytes(32), signature=bytes(64))
    return [
        wire.Registered(id=request_id, account="mallory", device=1),
        wire.PrekeysUploaded(id=request_id, one_time_prekeys=1, kem_prekeys=1),
        wire.Bundle(id=request_id, account="mallory", devices=()),
        wire.Challenge(id=request_id, nonce=bytes(32), expires_in_ms=1000),
        wire.Authenticated(id=request_id, account="mallory", device=1),
        wire.Sent(id=request_id, envelope_ids=(eid,)),
        wire.SenderCertificateResponse(id=request_id, certificate=b"not a certificate"),
        wire.Envelopes(id=request_id, envelopes=(), more=True),
        wire.Acked(id=request_id, count=1),
        wire.Pong(id=request_id),
        wire.ContactsFound(id=request_id, registered=("mallory",)),
        wire.Blocked(id=request_id),
        wire.Unblocked(id=request_id),
        wire.GroupUpdated(id=request_id, group=group, epoch=1),
        wire.GroupInfo(
            id=request_id, group=group, epoch=1, members=(wire.GroupMember(account="m", admin=True),)
        ),
        wire.GroupSent(id=request_id, envelope_ids=(eid,)),
        wire.GroupStateStored(id=request_id, group=group, version=1),
        wire.GroupState(id=request_id, group=group, version=1, state=b""),
        wire.KeyLogHeadResponse(id=request_id, head=head, server_certificate=b""),
        wire.KeyLogConsistency(id=request_id, first=1, second=1, proof=()),
        wire.KeyLogEntries(id=request_id, start=0, entries=()),
    ]


def test_every_response_kind_is_covered() -> None:
    kinds = {type(r).kind for r in _responses(1)}
    assert kinds == set(wire.RESPONSE_KINDS) - {wire.Deliver.kind, wire.ErrorFrame.kind}


# Requests the agent makes, each with the one kind of answer the relay gives it.
REQUESTS = {
    "ping": (lambda a: a.ping(), "pong"),
    "send": (lambda a: a.send_text("bob", b"x", ref="m"), "sent"),  # (a session with bob: sent at once)
    "fetch_bundle": (lambda a: a.send_text("carol", b"x", ref="m"), "bundle"),  # (no session: a fetch)
    "receive": (lambda a: a.receive(), "envelopes"),
    "get_sender_certificate": (lambda a: a.request_certificate(), "sender_certificate"),
    "get_group": (lambda a: a.refresh_group(bytes(16)), "group_info"),
    "discover_contacts": (lambda a: a.discover_contacts(["bob"]), "contacts_found"),
}


@pytest.mark.parametrize("request_kind", sorted(REQUESTS))
def test_an_answer_of_another_kind_fails_the_request_and_changes_nothing(request_kind: str) -> None:
    """Every response kind but the one asked for, answered to the same request: the request fails
    (``unexpected_answer``), and no session, certificate, login or group list comes of it."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    make, expected = REQUESTS[request_kind]
    for frame_kind in [r.kind for r in _responses(0) if r.kind != expected]:
        make(alice)
        (request,) = alice.take_outbox()
        assert request.kind == request_kind
        state = alice.device.to_dict()  # (after the request: a send has encrypted already)
        certificate, groups = alice.certificate, dict(alice.group_lists)
        (frame,) = [r for r in _responses(request.id) if r.kind == frame_kind]
        events = alice.handle(frame)
        failed = [e for e in events if isinstance(e, Failed)]
        assert len(failed) == 1 and failed[0].code == "unexpected_answer", (frame_kind, events)
        assert failed[0].message == f"the relay answered {frame_kind!r} to a {request_kind!r} request"
        assert failed[0].ref == ("m" if request_kind in ("send", "fetch_bundle") else request_kind)
        assert alice.take_outbox() == []  # nothing asked for in answer to it
        assert alice.device.to_dict() == state
        assert (alice.certificate, alice.group_lists, alice.authenticated) == (certificate, groups, True)


def test_an_answer_to_a_request_never_made_is_dropped() -> None:
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    state = alice.device.to_dict()
    for frame in _responses(999_999):
        assert alice.handle(frame) == []
        assert alice.take_outbox() == []
    assert alice.device.to_dict() == state


# --- answers of the kind asked for that do not answer the request ---------------------------------------


def _log_in_answered(a: DeviceAgent, authenticated: Callable[[int], wire.Authenticated]) -> list[object]:
    """``a`` logs in afresh (its connection lost); the relay's answers are written here: a challenge,
    then ``authenticated(its request id)``. Returns the events of that last answer."""
    a.connection_lost()
    a.login()
    (challenge,) = a.take_outbox()
    assert a.handle(wire.Challenge(id=challenge.id, nonce=bytes(32), expires_in_ms=60_000)) == []
    (authenticate,) = a.take_outbox()
    assert isinstance(authenticate, wire.Authenticate)
    return a.handle(authenticated(authenticate.id))


@pytest.mark.parametrize(("account", "device"), [("bob", 1), ("alice", 2)])
def test_an_authenticated_answer_naming_another_device_is_refused(account: str, device: int) -> None:
    """The relay's ``authenticated`` names the device its signature check logged in: one naming another
    (another account's, or another device of this account) is not this device's login. It is refused
    (``unexpected_answer``, naming the field), the device stays logged out and asks for nothing on
    the strength of it (no receive, no prekeys though the answer says they run out), and its next
    login goes through."""
    w = World()
    alice = w.join("alice")
    state = alice.device.to_dict()
    events = _log_in_answered(
        alice, lambda i: wire.Authenticated(id=i, account=account, device=device, prekeys_left=0)
    )
    field = "account" if account != "alice" else "device"
    got = account if field == "account" else device
    want = "'alice'" if field == "account" else "1"
    message = f"the relay's 'authenticated' names {field} {got!r}, not this device's {want}"
    assert events == [Failed("authenticate", "unexpected_answer", message)]
    assert not alice.authenticated
    assert alice.take_outbox() == []
    assert alice.device.to_dict() == state
    events = _log_in_answered(alice, lambda i: wire.Authenticated(id=i, account="alice", device=1))
    assert events == [LoggedIn()] and alice.authenticated


def _second_device(w: World, primary: DeviceAgent) -> DeviceAgent:
    """A second device of ``primary``'s account, registered over ``primary``'s logged-in connection."""
    rng = seeded_rng(77)
    d2 = DeviceAgent(
        Device(primary.account, 2, rng=rng),
        registration_id=8,
        delivery_token=primary.delivery_token,
        rng=rng,
        trust_root=w.core.trust_root_public,
        clock=w.clock,
    )
    d2.register()
    cid = next(c for c, x in w.agents.items() if x is primary)
    for frame in d2.take_outbox():
        (reply,) = [o for o in w.core.handle(w.conns[cid], frame) if isinstance(o, Reply)]
        assert isinstance(reply.frame, wire.Registered)
    return d2


@pytest.mark.parametrize("case", ["one more", "one fewer"])
def test_a_sent_answer_with_another_number_of_envelope_ids_is_refused(case: str) -> None:
    """``sent`` carries one envelope id per envelope of the send, in order (wire.Sent): the agent keeps
    a 1:1 text by them to answer a retry receipt, and reports them in ``Accepted`` (receipts are
    matched to them). A relay that answers more ids than envelopes would have the text resent for an
    envelope it never was; fewer, a device's copy left unaccounted. Refused (``unexpected_answer``):
    the message fails, nothing is logged by those ids, and the next send is accepted."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    _second_device(w, bob)  # two envelopes to each message to bob

    def forge(frame: wire.Response) -> wire.Response:
        if not isinstance(frame, wire.Sent):
            return frame
        ids = frame.envelope_ids
        return dataclasses.replace(frame, envelope_ids=(*ids, bytes(16)) if case == "one more" else ids[:1])

    alice.send_text("bob", b"hello", ref="m")
    events = _answer_forged(w, alice, forge)
    n = 3 if case == "one more" else 1
    message = f"the relay's 'sent' carries {n} envelope_ids for the 2 envelopes sent"
    assert [e for e in events if isinstance(e, Failed | Accepted)] == [
        Failed("m", "unexpected_answer", message)
    ]
    assert alice._pairwise_log == {}
    alice.send_text("bob", b"again", ref="m2")
    events = _answer_forged(w, alice, lambda frame: frame)
    accepted = [e for e in events if isinstance(e, Failed | Accepted)]
    assert [(type(e), e.ref) for e in accepted] == [(Accepted, "m2")]
    assert isinstance(accepted[0], Accepted) and len(accepted[0].envelope_ids) == 2
    assert set(alice._pairwise_log) == set(accepted[0].envelope_ids)


def _bad_certificates(w: World, alice: DeviceAgent, bob: DeviceAgent) -> dict[str, tuple[bytes, str]]:
    """Sender certificates a hostile relay could answer with, for ``alice``, each with why it is refused."""
    rng = seeded_rng(78)
    rogue = ServerSigningKey.create(TrustRoot(rng(32)), 1, rng(32))
    issue = w.core.identity.issue
    ik = alice.device.identity_key
    later = int(w.clock()) + 86400
    soon = int(w.clock()) + 60
    return {
        "garbage": (
            b"not a certificate",
            "sender certificate: not one msgpack value: 16 bytes follow its first value",
        ),
        "another server key": (
            rogue.issue("alice", 1, ik, later).encode(),
            "server certificate: signature does not verify",
        ),
        "a forged signature": (
            dataclasses.replace(issue("alice", 1, ik, later), signature=bytes(64)).encode(),
            "sender certificate: signature does not verify",
        ),
        "another account": (issue("bob", 1, ik, later).encode(), "it names sender 'bob', not 'alice'"),
        "another device": (issue("alice", 2, ik, later).encode(), "it names device 2, not 1"),
        "another identity key": (
            issue("alice", 1, bob.device.identity_key, later).encode(),
            "it names another identity_key than this device's",
        ),
        "about to expire": (
            issue("alice", 1, ik, soon).encode(),
            f"it expires at {soon}, in 60 s (fewer than {int(CERTIFICATE_RENEWAL)})",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "another server key",
        "a forged signature",
        "another account",
        "another device",
        "another identity key",
        "about to expire",
    ],
)
def test_a_bad_sender_certificate_is_refused_and_the_good_one_kept(case: str) -> None:
    """The certificate a sealed send waits for is checked as its recipients will check it (the chain to
    the trust root, the signature, the expiry) and must name this device and its identity key, before
    it replaces the one the agent holds: a bad one is refused (``bad_certificate``, saying why) and
    the good one is kept; the sealed send waiting for it goes with the good one, which has half an
    hour left, and the next sealed send asks again."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    alice.request_certificate()
    w.pump()
    good = alice.certificate
    assert good is not None
    w.clock.now += DEFAULT_CERTIFICATE_TTL - CERTIFICATE_RENEWAL / 2  # due for renewal, still valid
    bad, why = _bad_certificates(w, alice, bob)[case]

    def forge(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.SenderCertificateResponse):
            return dataclasses.replace(frame, certificate=bad)
        return frame

    alice.send_text("bob", b"sealed", ref="s", sealed=True)
    events = _answer_forged(w, alice, forge)
    message = (
        f"the relay's sender certificate (certificate in a 'sender_certificate' frame) is refused: {why}"
    )
    assert [(type(e), getattr(e, "ref", None)) for e in events] == [
        (Failed, "get_sender_certificate"),
        (Accepted, "s"),
    ]
    assert events[0] == Failed("get_sender_certificate", "bad_certificate", message)
    assert alice.certificate == good
    alice.send_text("bob", b"sealed again", ref="s2", sealed=True)  # asks again, and the relay is honest
    events = _answer_forged(w, alice, lambda frame: frame)
    assert [(type(e), getattr(e, "ref", None)) for e in events] == [(Accepted, "s2")]
    assert alice.certificate not in (good, bad)


_BUSY = wire.ErrorFrame(id=0, code="rate_limited", message="slow down", retry_after_ms=2000)


def _certificate_held_with(left: float) -> tuple[World, DeviceAgent, bytes]:
    """alice and bob greeted, alice holding a sender certificate with ``left`` seconds of it left."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    alice.request_certificate()
    w.pump()
    good = alice.certificate
    assert good is not None
    w.clock.now += DEFAULT_CERTIFICATE_TTL - left
    return w, alice, good


@pytest.mark.parametrize("refusal", ["bad_certificate", "rate_limited"])
def test_a_sealed_send_fails_when_renewing_fails_and_the_certificate_held_is_nearly_spent(
    refusal: str,
) -> None:
    """With less than CERTIFICATE_LAST_USE seconds left of the certificate held, a sealed send waiting
    for its renewal does not go with it (it could expire before the relay stamps the envelope, and its
    recipients would refuse the message unseen): it fails with the renewal's reason, and the
    certificate held is kept."""
    w, alice, good = _certificate_held_with(CERTIFICATE_LAST_USE / 2)

    def forge(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.SenderCertificateResponse):
            if refusal == "rate_limited":
                return dataclasses.replace(_BUSY, id=frame.id)
            return dataclasses.replace(frame, certificate=good)  # the old one again: about to expire
        return frame

    alice.send_text("bob", b"sealed", ref="s", sealed=True)
    events = _answer_forged(w, alice, forge)
    assert [(type(e), getattr(e, "ref", None)) for e in events] == [
        (Failed, "get_sender_certificate"),
        (Failed, "s"),
    ]
    assert events[1].code == refusal  # type: ignore[attr-defined]
    assert alice.certificate == good


def test_a_sender_certificate_refused_with_a_good_one_held_lets_the_sealed_sends_waiting_go() -> None:
    """The relay refuses to renew the certificate (its rate limit) while the one held has half an hour
    left: the refusal is reported, and the sealed sends waiting go with the one held, read by their
    recipient as from alice."""
    w, alice, good = _certificate_held_with(CERTIFICATE_RENEWAL / 2)

    def refuse(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.SenderCertificateResponse):
            return dataclasses.replace(_BUSY, id=frame.id)
        return frame

    alice.send_text("bob", b"sealed", ref="s1", sealed=True)
    alice.send_text("bob", b"sealed too", ref="s2", sealed=True)
    events = _answer_forged(w, alice, refuse)
    assert events[0] == Failed("get_sender_certificate", "rate_limited", "slow down", 2000)
    assert [(type(e), getattr(e, "ref", None)) for e in events[1:]] == [(Accepted, "s1"), (Accepted, "s2")]
    assert alice.certificate == good
    pushes = list(w.pushes)
    w.pushes.clear()
    received = [e for agent, env in pushes for e in w.deliver(agent, env)[0] if isinstance(e, Received)]
    assert [(e.sender.account, e.plaintext, e.sealed) for e in received] == [
        ("alice", b"sealed", True),
        ("alice", b"sealed too", True),
    ]


def test_a_sender_certificate_refused_fails_the_sealed_sends_waiting_and_the_next_asks_again() -> None:
    """The relay refuses get_sender_certificate (its rate limit, or any error): the sealed sends waiting
    for it fail with the relay's code and retry time, instead of waiting, with every sealed send queued
    behind them, for the next login; the next sealed send asks again."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)

    def refuse(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.SenderCertificateResponse):
            return dataclasses.replace(_BUSY, id=frame.id)
        return frame

    alice.send_text("bob", b"sealed", ref="s1", sealed=True)
    alice.send_text("bob", b"sealed too", ref="s2", sealed=True)
    events = _answer_forged(w, alice, refuse)
    assert events == [
        Failed("get_sender_certificate", "rate_limited", "slow down", 2000),
        Failed("s1", "rate_limited", "slow down", 2000),
        Failed("s2", "rate_limited", "slow down", 2000),
    ]
    assert alice.certificate is None
    alice.send_text("bob", b"sealed again", ref="s3", sealed=True)  # asks again; the relay is honest now
    events = _answer_forged(w, alice, lambda frame: frame)
    assert [(type(e), getattr(e, "ref", None)) for e in events] == [(Accepted, "s3")]
    assert alice.certificate is not None


def test_a_bad_first_sender_certificate_leaves_the_agent_without_one() -> None:
    w = World()
    alice = w.join("alice")
    alice.request_certificate()
    (request,) = alice.take_outbox()
    events = alice.handle(wire.SenderCertificateResponse(id=request.id, certificate=b"\x92\xc0\xc0"))
    message = (
        "the relay's sender certificate (certificate in a 'sender_certificate' frame) is refused: sender "
        "certificate: body must be bin, got nil"
    )
    assert events == [Failed("get_sender_certificate", "bad_certificate", message)]
    assert alice.certificate is None


# --- group state a hostile member seals --------------------------------------------------------------

GID = bytes(range(16))
MASTER = bytes(range(32, 64))


def _sealed_by_a_member(body: bytes, version: int = 3) -> bytes:
    """``body`` sealed as ``seal_group_state`` seals, by a member who wrote it byte by byte: any
    member holds the master key, so the relay's copy of the state authenticates whatever it says."""
    from relaysim.clients import _primitives
    from relaysim.clients.groups import _state_key

    return _primitives.siv_encrypt(_state_key(MASTER), body, GID + version.to_bytes(8, "big"))


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no version
        (3).to_bytes(7, "big"),  # a version cut short
        (4).to_bytes(8, "big"),  # another version than the one bound in
        (3).to_bytes(8, "big") + b"\x05ana",  # a member's length past the end
        (3).to_bytes(8, "big") + b"\x00",  # an empty account
        (3).to_bytes(8, "big") + b"\x03ana\x02\xff\xfe",  # not UTF-8
    ],
    ids=["empty", "short-version", "other-version", "overlong", "empty-account", "not-utf8"],
)
def test_a_malformed_group_state_a_member_sealed_is_refused(body: bytes) -> None:
    from relaysim.clients.groups import open_group_state, seal_group_state

    with pytest.raises(DecryptionError) as info:
        open_group_state(MASTER, GID, 3, _sealed_by_a_member(body))
    assert str(info.value) == "message could not be decrypted"
    # what seal_group_state writes, written byte by byte, opens
    good = (3).to_bytes(8, "big") + b"\x03ana\x02bo"
    assert _sealed_by_a_member(good) == seal_group_state(MASTER, GID, 3, ["bo", "ana"])
    assert open_group_state(MASTER, GID, 3, _sealed_by_a_member(good)) == ("ana", "bo")


_KA, _KB = bytes([1]) * 32, bytes([2]) * 32  # two members' public write keys, as format 2 holds them


@pytest.mark.parametrize(
    "body",
    [
        (3).to_bytes(8, "big") + b"\x00",  # the format's marker, and no format
        (3).to_bytes(8, "big") + b"\x00\x03\x03ana" + _KA,  # a format this client does not know
        (3).to_bytes(8, "big") + b"\x00\x02\x03ana" + _KA[:31],  # a write key cut short
        (3).to_bytes(8, "big") + b"\x00\x02\x03ana" + _KA + b"\x02bo" + _KA,  # two members, one key
        (3).to_bytes(8, "big") + b"\x00\x02\x03ana" + _KA + b"\x03ana" + _KB,  # one member twice
        (3).to_bytes(8, "big") + b"\x00\x02\x00" + _KA,  # an empty account
    ],
    ids=["no-format", "unknown-format", "short-key", "shared-key", "member-twice", "empty-account"],
)
def test_a_malformed_format_2_group_state_a_member_sealed_is_refused(body: bytes) -> None:
    """Format 2 (each member's write key beside its account): the same checks, and a key cut short,
    or one key for two entries (the relay's set holds each key once), refused as a state that does
    not open; what seal_group_state writes, written byte by byte, opens with its keys."""
    from relaysim.clients.groups import read_group_state, seal_group_state

    with pytest.raises(DecryptionError):
        read_group_state(MASTER, GID, 3, _sealed_by_a_member(body))
    good = (3).to_bytes(8, "big") + b"\x00\x02\x03ana" + _KA + b"\x02bo" + _KB
    assert _sealed_by_a_member(good) == seal_group_state(MASTER, GID, 3, {"bo": _KB, "ana": _KA})
    opened = read_group_state(MASTER, GID, 3, _sealed_by_a_member(good))
    assert (opened.members, opened.write_keys) == (("ana", "bo"), {"ana": _KA, "bo": _KB})


# --- any mutation of a valid message: DecryptionError and nothing changed, or the same plaintext ------

# A stage of a conversation: Bob's device state as data, a message from Alice for him, its plaintext.
Stage = tuple[dict[str, Any], bytes, bytes]
ALICE_ADDRESS = PeerAddress("alice", 1)


@functools.cache
def _conversation(pq: bool, he: bool) -> dict[str, Stage]:
    """Alice and Bob talk; what Bob holds before each kind of message, and the message:
    ``prekey`` her first (with its X3DH header), ``new-key`` one that turns his DH ratchet,
    ``same-chain`` the next one on a chain he is reading, ``skipped`` one whose key he holds skipped."""
    cfg = RatchetConfig(header_encryption=he)
    alice = Device("alice", 1, pq=pq, config=cfg, rng=seeded_rng(11))
    bob = Device("bob", 1, pq=pq, config=cfg, rng=seeded_rng(12))
    alice.start_session(bob.address, bob.generate_prekeys(3, 3))
    stages: dict[str, Stage] = {}

    def stage(name: str, plaintext: bytes) -> bytes:
        message = alice.encrypt(bob.address, plaintext)
        stages[name] = (bob.to_dict(), message, plaintext)
        return message

    assert (
        bob.decrypt(alice.address, stage("prekey", b"first, with the X3DH header"))
        == b"first, with the X3DH header"
    )
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"reply")) == b"reply"
    assert bob.decrypt(alice.address, stage("new-key", b"a new ratchet key")) == b"a new ratchet key"
    skipped = stage("same-chain", b"skipped, then read late")
    later = alice.encrypt(bob.address, b"read first")
    assert bob.decrypt(alice.address, later) == b"read first"
    stages["skipped"] = (bob.to_dict(), skipped, b"skipped, then read late")
    return stages


HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]),
    st.sampled_from(LOW_ORDER),
    st.integers(0, 1600).map(bytes),  # zeros of any length: 31, 32, 33, ML-KEM's 1568 …
    st.binary(max_size=40),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
)


def _reframed(message: bytes, initial: list[Any] | None, body: bytes) -> bytes:
    if initial is None:
        return MESSAGE_PREFIX + body
    return bytes((TYPE_PREKEY,)) + msgpack.packb([initial, body], use_bin_type=True)


@st.composite
def mutated(draw: st.DrawFn, message: bytes, he: bool = False, *, framed: bool = True) -> bytes:
    """``message`` changed by a hostile relay (or peer): bits flipped, cut, lengthened, a slice
    replaced; and for a device ciphertext (``framed``) a ratchet header field set to an edge value
    (without header encryption, ``he``) or an X3DH header field replaced by anything."""
    n = len(message)
    kinds = ["flip", "cut", "extend", "splice"] + (["header", "x3dh"] if framed else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "flip":
        i, bit = draw(st.integers(0, n - 1)), draw(st.integers(0, 7))
        return message[:i] + bytes((message[i] ^ (1 << bit),)) + message[i + 1 :]
    if kind == "cut":
        return message[: draw(st.integers(0, n - 1))]
    if kind == "extend":
        return message + draw(st.binary(min_size=1, max_size=64))
    if kind == "splice":
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 64)))
        return message[:i] + draw(st.binary(max_size=64)) + message[j:]
    initial, body = parse_ciphertext(message)
    wire_initial = None if initial is None else initial.to_wire()
    if kind == "header" and not he:  # (with header encryption the header is ciphertext: flips reach it)
        dh, pn, number = parse_header(body)  # type: ignore[misc]
        field = draw(st.sampled_from(["dh", "pn", "n"]))
        if field == "dh":
            dh = draw(st.one_of(st.sampled_from(LOW_ORDER), st.binary(min_size=32, max_size=32)))
        else:
            value = draw(
                st.one_of(
                    st.sampled_from([0, 1, 2**32 - 1, 2**31, DEFAULT_MAX_SKIP, DEFAULT_MAX_SKIP + 1]),
                    st.integers(0, 2**32 - 1),
                    st.integers(-3, 3).map(lambda d: max(0, number + d)),
                )
            )
            pn, number = (value, number) if field == "pn" else (pn, value)
        return _reframed(message, wire_initial, HEADER.pack(dh, pn, number) + body[HEADER_LEN:])
    if kind == "x3dh" and wire_initial is not None:
        wire_initial[draw(st.integers(0, 5))] = draw(HOSTILE_VALUES)
        outer = draw(st.sampled_from(["as is", "extra item", "body as text"]))
        if outer == "extra item":
            return bytes((TYPE_PREKEY,)) + msgpack.packb([wire_initial, body, 0], use_bin_type=True)
        if outer == "body as text":
            return bytes((TYPE_PREKEY,)) + msgpack.packb([wire_initial, body.hex()], use_bin_type=True)
        return _reframed(message, wire_initial, body)
    return message[:-1]  # (a field the message does not have: cut instead)


def _check_mutation(stage: Stage, forged: bytes) -> None:
    state, message, plaintext = stage
    bob = Device.from_dict(state, rng=seeded_rng(99))
    try:
        got = bob.decrypt(ALICE_ADDRESS, forged)
    except DecryptionError as exc:
        assert str(exc) == "message could not be decrypted"
        assert bob.to_dict() == state  # nothing of the failed attempt stays behind
        assert bob.decrypt(ALICE_ADDRESS, message) == plaintext  # the honest one still reads
    else:
        assert got == plaintext  # (a change the message does not depend on, such as none at all)
        with pytest.raises(DecryptionError):
            bob.decrypt(ALICE_ADDRESS, message)  # read once only


@pytest.mark.parametrize("stage", ["prekey", "new-key", "same-chain", "skipped"])
@pytest.mark.parametrize(("pq", "he"), [(True, False), (False, True)], ids=["pqxdh", "x3dh-he"])
@given(data=st.data())
def test_any_mutation_of_a_message_fails_cleanly_or_reads_the_same(
    stage: str, pq: bool, he: bool, data: st.DataObject
) -> None:
    state, message, plaintext = _conversation(pq, he)[stage]
    _check_mutation((state, message, plaintext), data.draw(mutated(message, he)))


FIXED_HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**32,
    2**64 - 1,
    "1",
    [1],
    {"a": 1},
    1.5,
    b"",
    bytes(31),
    bytes(33),
    bytes(1567),
    bytes(1569),
    *LOW_ORDER[:3],
]


@pytest.mark.parametrize(("pq", "he"), [(True, False), (False, False)], ids=["pqxdh", "x3dh"])
def test_every_x3dh_header_field_replaced_by_anything_fails_cleanly(pq: bool, he: bool) -> None:
    """Each field of the prekey message's X3DH header (IK_A, EK_A, the signed, one-time and KEM
    prekey ids, the ML-KEM ciphertext) replaced by a value of every wrong type and length: unknown
    prekey ids, a missing one-time prekey, a KEM ciphertext one byte short or long, low-order keys."""
    stage = _conversation(pq, he)["prekey"]
    _state, message, _plaintext = stage
    initial, body = parse_ciphertext(message)
    assert initial is not None
    for field in range(6):
        unknown_ids = [initial.signed_prekey_id + 1000, 0]
        for value in [*FIXED_HOSTILE_VALUES, *unknown_ids]:
            wire_initial = initial.to_wire()
            wire_initial[field] = value
            _check_mutation(stage, _reframed(message, wire_initial, body))


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("field", [2, 3, 4], ids=["signed-prekey-id", "one-time-prekey-id", "kem-prekey-id"])
def test_a_prekey_id_sent_as_a_msgpack_boolean_is_refused(field: int, value: bool) -> None:
    """msgpack's true and false unpack as Python bools, which are ints equal to 1 and 0: taken as a
    prekey id, true named prekey 1, and a prekey message whose signed prekey id (1 here) a relay had
    re-encoded as true read as the original. Each id field must be an integer: the same one
    DecryptionError, nothing changed, and the message as sent still reads."""
    state, message, plaintext = _conversation(True, False)["prekey"]
    initial, body = parse_ciphertext(message)
    assert initial is not None and initial.signed_prekey_id == 1
    wire_initial = initial.to_wire()
    wire_initial[field] = value
    forged = _reframed(message, wire_initial, body)
    with pytest.raises(DecryptionError):
        parse_ciphertext(forged)
    bob = Device.from_dict(state, rng=seeded_rng(99))
    with pytest.raises(DecryptionError, match=r"^message could not be decrypted$"):
        bob.decrypt(ALICE_ADDRESS, forged)
    assert bob.to_dict() == state
    assert bob.decrypt(ALICE_ADDRESS, message) == plaintext


# --- a hostile peer: it holds the session's keys, so its messages authenticate with any header ------


def _talking(he: bool) -> tuple[Device, Device]:
    """Alice and Bob after a prekey message, a reply and three messages more from Alice (Bob's
    receiving chain is at 3): her next message turns his ratchet unless she sends again first."""
    cfg = RatchetConfig(header_encryption=he)
    alice = Device("alice", 1, pq=False, config=cfg, rng=seeded_rng(21))
    bob = Device("bob", 1, pq=False, config=cfg, rng=seeded_rng(22))
    alice.start_session(bob.address, bob.generate_prekeys(1, 0))
    bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi"))
    alice.decrypt(bob.address, bob.encrypt(alice.address, b"hello"))
    for i in range(3):
        bob.decrypt(alice.address, alice.encrypt(bob.address, b"%d" % i))
    alice.decrypt(bob.address, bob.encrypt(alice.address, b"your turn"))  # her ratchet turns: pn = 3
    return alice, bob


def _forge(alice: Device, bob: Device, **ratchet_fields: Any) -> bytes:
    """A message from Alice with her ratchet's fields set first (she is hostile: it authenticates)."""
    ratchet = alice.sessions[bob.address].ratchet
    for name, value in ratchet_fields.items():
        setattr(ratchet, name, value)
    return alice.encrypt(bob.address, b"forged")


HOSTILE_HEADERS: dict[str, dict[str, Any]] = {
    "n past MAX_SKIP": {"ns": DEFAULT_MAX_SKIP + 1},
    "n at 2**32 - 1": {"ns": 2**32 - 1},
    "n past MAX_SKIP on his current chain": {"same_chain": True, "ns": 1 + DEFAULT_MAX_SKIP + 1},
    "n at 2**32 - 1 on his current chain": {"same_chain": True, "ns": 2**32 - 1},
    **{f"low-order ratchet key {i}": {"dhs": "low", "low": low} for i, low in enumerate(LOW_ORDER)},
}


@pytest.mark.parametrize("he", [False, True], ids=["plain", "header-encryption"])
@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_a_peers_authentic_message_with_a_hostile_header_is_refused_and_changes_nothing(
    case: str, he: bool
) -> None:
    alice, bob = _talking(he)
    fields = dict(HOSTILE_HEADERS[case])
    if fields.pop("same_chain", False):  # Bob reads one message on her new chain first
        assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"again")) == b"again"
    honest = Device.from_dict(alice.to_dict(), rng=seeded_rng(23))
    if fields.get("dhs") == "low":
        # A ratchet key whose public half is a low-order point, and the sending chain that an all-zero
        # DH output would give: KDF_RK(rk, 0…0), from the root key she held before her ratchet turned
        # (Bob's now). Only Bob's refusal of the DH keeps it from reading.
        ratchet = alice.sessions[bob.address].ratchet
        assert ratchet.dhs is not None
        theirs = bob.sessions[alice.address].ratchet
        kdf = spec.kdf_rk_he if he else spec.kdf_rk
        fields = {
            "dhs": _p.X25519Pair(ratchet.dhs.private, fields["low"]),
            "cks": kdf(theirs.rk, bytes(32), theirs.config.root_info)[1],
        }
    forged = _forge(alice, bob, **fields)
    state = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(alice.address, forged)
    assert bob.to_dict() == state
    assert not bob.replayed(alice.address, forged)  # (nothing read: not a second copy of anything)
    assert bob.decrypt(alice.address, honest.encrypt(bob.address, b"honest")) == b"honest"


HOSTILE_PNS = {"pn past MAX_SKIP": 3 + DEFAULT_MAX_SKIP + 1, "pn at 2**32 - 1": 2**32 - 1}


@pytest.mark.parametrize("he", [False, True], ids=["plain", "header-encryption"])
@pytest.mark.parametrize("case", sorted(HOSTILE_PNS))
def test_a_peers_hostile_pn_is_refused_only_with_header_encryption(case: str, he: bool) -> None:
    """A PN that asks for more than MAX_SKIP keys of her old chain: with header encryption
    SkipMessageKeysHE(PN) (§4.5) refuses it, changing nothing. Without it PN is not read, as libsignal
    reads none (rust/protocol/src/session_cipher.rs: the old chain keeps its chain key), so the
    message is read, deriving nothing of the old chain."""
    alice, bob = _talking(he)
    forged = _forge(alice, bob, pn=HOSTILE_PNS[case])
    state = bob.to_dict()
    if he:
        with pytest.raises(DecryptionError):
            bob.decrypt(alice.address, forged)
        assert bob.to_dict() == state
        assert not bob.replayed(alice.address, forged)
        return
    assert bob.decrypt(alice.address, forged) == b"forged"
    assert len(bob.sessions[alice.address].ratchet.mkskipped) == 0
    assert bob.replayed(alice.address, forged)  # a second copy is one


@pytest.mark.parametrize("he", [False, True], ids=["plain", "header-encryption"])
def test_a_peers_authentic_message_with_a_pn_below_what_was_read_is_read(he: bool) -> None:
    """Her new chain's message says PN = 2 where Bob read 3 on her old one. §3.5 SkipMessageKeys (§4.5
    SkipMessageKeysHE) skips only while Nr < PN, so the spec reads it, skipping nothing, and so does
    doubleratchet 1.3.0 (tests/clients/test_interop.py); it was refused here as a hostile header.
    Nothing is lost either way that a holder of the session's keys could not take anyway."""
    alice, bob = _talking(he)
    forged = _forge(alice, bob, pn=2)
    assert bob.decrypt(alice.address, forged) == b"forged"
    assert len(bob.sessions[alice.address].ratchet.mkskipped) == 0
    assert bob.replayed(alice.address, forged)  # a second copy is one


# --- sealed sender envelopes ----------------------------------------------------------------------------

NOW = 1_000_000


@functools.cache
def _sealed_world() -> tuple[dict[str, Any], dict[str, Any], bytes, bytes, bytes]:
    """(Alice's and Bob's states after a first sealed message each way, the trust root, Alice's
    certificate, a certificate for Alice from a server key the trust root never certified)."""
    rng = seeded_rng(31)
    root = TrustRoot(rng(32))
    server = ServerSigningKey.create(root, 1, rng(32))
    alice = Device("alice", 1, pq=False, rng=seeded_rng(32))
    bob = Device("bob", 1, pq=False, rng=seeded_rng(33))
    alice.start_session(bob.address, bob.generate_prekeys(1, 0))

    def cert(d: Device, signer: ServerSigningKey = server) -> bytes:
        return signer.issue(d.address.account, d.address.device, d.identity_key, NOW + 3600).encode()

    assert bob.open_sealed(alice.seal(bob.address, b"hi", cert(alice)), root.public, NOW)[1] == b"hi"
    assert alice.open_sealed(bob.seal(alice.address, b"ok", cert(bob)), root.public, NOW)[1] == b"ok"
    rogue = ServerSigningKey.create(TrustRoot(rng(32)), 1, rng(32))
    return alice.to_dict(), bob.to_dict(), root.public, cert(alice), cert(alice, rogue)


def _seal_content(alice: Device, bob: Device, content: bytes) -> bytes:
    """``sealed.seal`` with the inner layer's plaintext written by a hostile sender: its own identity
    key authenticates whatever it puts there (it is meant to be msgpack [certificate, message])."""
    e = spec.generate_dh(seeded_rng(len(content)))
    ik_b = bob.identity_key
    chain_key, k1 = sealed._ephemeral_keys(e.dh(ik_b), ik_b, e.public)
    c1 = spec.encrypt(k1, alice.identity_key, e.public + ik_b, sealed._AEAD_INFO)
    k2 = sealed._static_key(alice.secrets.identity.pair.dh(ik_b), chain_key, c1)
    return (
        bytes((sealed.VERSION,)) + e.public + c1 + spec.encrypt(k2, content, e.public + c1, sealed._AEAD_INFO)
    )


def _check_sealed(forged_from: Any) -> None:
    alice_state, bob_state, root, certificate, _rogue = _sealed_world()
    alice = Device.from_dict(alice_state, rng=seeded_rng(34))
    bob = Device.from_dict(bob_state, rng=seeded_rng(35))
    honest = alice.seal(bob.address, b"honest", certificate)
    forged = forged_from(alice, bob, honest)
    if forged == honest:
        return
    state = bob.to_dict()
    with pytest.raises(DecryptionError) as info:
        bob.open_sealed(forged, root, NOW)
    assert str(info.value) == "message could not be decrypted"
    assert bob.to_dict() == state
    assert bob.open_sealed(honest, root, NOW) == (alice.address, b"honest")


def _pk(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _hostile_content(case: str, certificate: bytes, rogue: bytes, inner: bytes) -> bytes:
    return {
        "empty": b"",
        "not msgpack": b"\xc1",
        "truncated": _pk([certificate, inner])[:-1],
        "an int": _pk(5),
        "one item": _pk([certificate]),
        "three items": _pk([certificate, inner, b""]),
        "message as text": _pk([certificate, inner.hex()]),
        "message as nil": _pk([certificate, None]),
        "certificate as text": _pk([certificate.hex(), inner]),
        "certificate not msgpack": _pk([b"\xc1" + certificate, inner]),
        "certificate of a server key the root never certified": _pk([rogue, inner]),
        "not UTF-8": b"\x92\xa2\xff\xfe\xc4\x00",
        "deeply nested": b"\x91" * 5000,
        "a map": _pk({"a": 1, "b": 2}),
        "an ext type": b"\x92\xd4\x01\x00\xc4\x00",
        "a bad timestamp": b"\x92\xd5\xff\x00\x00\xc4\x00",
        "message not a ciphertext": _pk([certificate, b"\x07" + inner[1:]]),
    }[case]


HOSTILE_CONTENTS = [
    "empty",
    "not msgpack",
    "truncated",
    "an int",
    "one item",
    "three items",
    "message as text",
    "message as nil",
    "certificate as text",
    "certificate not msgpack",
    "certificate of a server key the root never certified",
    "not UTF-8",
    "deeply nested",
    "a map",
    "an ext type",
    "a bad timestamp",
    "message not a ciphertext",
]


@pytest.mark.parametrize("case", HOSTILE_CONTENTS)
def test_a_sealed_envelope_whose_inner_layer_a_hostile_sender_wrote_is_refused(case: str) -> None:
    """The sender's identity key authenticates the inner layer, so a sender with any certificate (or
    none) can put anything there; the certificate chain, the message and their types are checked."""

    def forge(alice: Device, bob: Device, honest: bytes) -> bytes:
        _a, _b, _root, certificate, rogue = _sealed_world()
        inner = alice.encrypt(bob.address, b"inner")
        return _seal_content(alice, bob, _hostile_content(case, certificate, rogue, inner))

    _check_sealed(forge)


@given(data=st.data())
def test_any_mutation_of_a_sealed_envelope_fails_cleanly(data: st.DataObject) -> None:
    def forge(alice: Device, bob: Device, honest: bytes) -> bytes:
        return data.draw(mutated(honest, framed=False))

    _check_sealed(forge)


# --- sender-key (group) messages and distributions --------------------------------------------------


def _group_pair() -> tuple[GroupKeys, GroupKeys, list[bytes]]:
    """Alice's sender key handed to Bob, four messages written and the third read (the first two
    kept skipped): (Alice's keys, Bob's, the four messages)."""
    alice = GroupKeys(ALICE_ADDRESS, rng=seeded_rng(41))
    bob = GroupKeys(PeerAddress("bob", 1), rng=seeded_rng(42))
    [(_peer, skdm)] = alice.prepare_send(GID, [bob.owner])
    bob.process(ALICE_ADDRESS, skdm.to_bytes())
    messages = [alice.encrypt(GID, b"group message %d" % i) for i in range(4)]
    assert bob.decrypt(ALICE_ADDRESS, messages[2]) == (GID, b"group message 2")
    return alice, bob, messages


@pytest.mark.parametrize("which", [0, 3], ids=["skipped", "next"])
@given(data=st.data())
def test_any_mutation_of_a_group_message_fails_cleanly(which: int, data: st.DataObject) -> None:
    _alice, bob, messages = _group_pair()
    message = messages[which]
    forged = data.draw(mutated(message, framed=False))
    state = bob.to_dict()
    try:
        got = bob.decrypt(ALICE_ADDRESS, forged)
    except DecryptionError:
        assert bob.to_dict() == state
        assert bob.decrypt(ALICE_ADDRESS, message) == (GID, b"group message %d" % which)
    else:
        assert got == (GID, b"group message %d" % which)


@pytest.mark.parametrize(
    "ciphertext",
    [b"", bytes(15), bytes(16), bytes(17), bytes(32), b"\x10" * 16],
    ids=["empty", "15", "16 zeros", "17", "32 zeros", "all 0x10"],
)
def test_a_group_message_its_sender_signed_over_a_bad_ciphertext_is_refused(ciphertext: bytes) -> None:
    """The sender holds the signing key: its signature covers whatever it writes, padding or not."""
    alice, bob, messages = _group_pair()
    own = alice.own[GID]
    assert own.signing_private is not None
    body = messages[3][:25] + ciphertext
    forged = body + _p.ed25519_sign(own.signing_private, body)
    state = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(ALICE_ADDRESS, forged)
    assert bob.to_dict() == state
    assert bob.decrypt(ALICE_ADDRESS, messages[3]) == (GID, b"group message 3")


@pytest.mark.parametrize(
    "skdm",
    [b"", b"\x33", b"\x33" + bytes(87), b"\x33" + bytes(89), b"\x34" + bytes(88), bytes(200)],
    ids=["empty", "version only", "one short", "one long", "another version", "long zeros"],
)
def test_a_malformed_sender_key_distribution_is_refused_and_changes_nothing(skdm: bytes) -> None:
    _alice, bob, messages = _group_pair()
    state = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.process(ALICE_ADDRESS, skdm)
    assert bob.to_dict() == state
    assert bob.decrypt(ALICE_ADDRESS, messages[3]) == (GID, b"group message 3")


@pytest.mark.parametrize(
    "signing_public", [bytes(32), b"\xff" * 32, LOW_ORDER[2]], ids=["zeros", "ff", "low"]
)
def test_a_sender_key_with_a_signing_key_that_is_no_point_verifies_nothing(signing_public: bytes) -> None:
    """A distribution message whose signing key is not a valid Ed25519 point (or one of small
    order): every message under it is refused, no other exception."""
    alice, bob, messages = _group_pair()
    skdm = alice.distribution(GID)
    bogus = dataclasses.replace(skdm, chain_id=skdm.chain_id ^ 1, signing_public=signing_public)
    bob.process(ALICE_ADDRESS, bogus.to_bytes())
    body = messages[3][:17] + bogus.chain_id.to_bytes(4, "big") + messages[3][21:-64]
    for signature in (bytes(64), b"\x01" + bytes(63), messages[3][-64:]):
        with pytest.raises(DecryptionError):
            bob.decrypt(ALICE_ADDRESS, body + signature)
    assert bob.decrypt(ALICE_ADDRESS, messages[3]) == (GID, b"group message 3")


# --- whatever the relay delivers, whatever a peer writes: the agent's loop goes on --------------------

ALLOWED_EVENTS = (Received, Undecryptable, Duplicate, IdentityChanged, Failed)


@given(data=st.data())
def test_a_deliver_frame_with_any_body_and_labels_never_breaks_the_agent(data: st.DataObject) -> None:
    """A ``deliver`` pushed by the relay: the body of a real message of Bob's (sealed or not) mutated
    anyhow, or any bytes, under any sealed flag and any sender label. ``handle`` raises nothing and
    reports the envelope; Bob's honest message still reads afterwards (once)."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    sealed_send = data.draw(st.booleans())
    bob.send_text("alice", b"the honest one", sealed=sealed_send)
    w.pump()
    _to, honest = w.take()
    body = data.draw(st.one_of(mutated(honest.body, framed=not sealed_send), st.binary(max_size=300)))
    source = data.draw(st.sampled_from([("bob", 1), ("bob", 2), ("carol", 1), ("alice", 1), None]))
    account, device = source if source is not None else (None, None)
    forged = dataclasses.replace(
        honest,
        id=bytes(16),
        body=body,
        sealed=data.draw(st.booleans()),
        source_account=account,
        source_device=device,
    )
    events = alice.handle(wire.Deliver(id=0, envelope=forged))
    assert all(isinstance(e, ALLOWED_EVENTS) for e in events), events
    read = [e.plaintext for e in events if isinstance(e, Received)]
    assert read in ([], [b"the honest one"])  # (the same body, labelled well enough to read)
    alice.take_outbox()
    events = alice.handle(wire.Deliver(id=0, envelope=honest))
    expected = [] if read else [b"the honest one"]
    assert [e.plaintext for e in events if isinstance(e, Received)] == expected


@given(code=st.binary(min_size=1, max_size=1), rest=st.binary(max_size=120))
def test_any_control_content_a_peer_writes_never_breaks_the_agent(code: bytes, rest: bytes) -> None:
    """A peer's authentic message whose content is a control kind with any bytes after it (a retry
    receipt, a resend, a sync copy, a receipt, a mailbox address, a sender key, or no kind known)."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    w.greet(alice, bob)
    bob.send_text("alice", CONTROL + code + rest)
    w.pump()
    events, _answered = w.deliver(*w.take())
    assert all(isinstance(e, (*ALLOWED_EVENTS, ReceiptReceived, SentTranscript)) for e in events), events
    w.pump()
    bob.send_text("alice", b"still talking")
    w.pump()
    events, _answered = w.deliver(*w.take())
    assert [e.plaintext for e in events if isinstance(e, Received)] == [b"still talking"]


# --- a refusal by the identity policy is a failed decryption too: it changes nothing ---------------------


@pytest.mark.parametrize("on", ["inactive session", "active session"])
def test_a_message_refused_for_its_identity_key_leaves_the_session_as_it_was(on: str) -> None:
    """Under the ``block`` policy, a message that authenticates on a session whose identity key is no
    longer the trusted one (Bob reinstalled, the user approved his new key; a message his old phone
    sent is still on its way) is refused, and reported; the session it belongs to does not move, so
    the message still reads if the user then approves the old key."""
    alice = Device("alice", 1, pq=False, rng=seeded_rng(51), identity_policy="block")
    old_bob = Device("bob", 1, pq=False, rng=seeded_rng(52))
    alice.start_session(old_bob.address, old_bob.generate_prekeys(1, 0))
    old_bob.decrypt(alice.address, alice.encrypt(old_bob.address, b"hi"))
    alice.decrypt(old_bob.address, old_bob.encrypt(alice.address, b"hello"))
    in_flight = old_bob.encrypt(alice.address, b"sent before the reinstall")
    new_bob = Device("bob", 1, pq=False, rng=seeded_rng(53))
    if on == "inactive session":  # the new key approved, a session with it made: the old one inactive
        alice.identities.approve(new_bob.address, new_bob.identity_key)
        alice.start_session(new_bob.address, new_bob.generate_prekeys(1, 0))
    else:  # the new key approved (say, after a bundle fetch that was refused), no session made with it
        alice.identities.approve(new_bob.address, new_bob.identity_key)
    alice.identities.take_changes()
    state = alice.to_dict()
    with pytest.raises(UntrustedIdentity):
        alice.decrypt(old_bob.address, in_flight)
    assert alice.to_dict() == state
    (change,) = alice.identities.take_changes()
    assert (change.new, change.accepted) == (old_bob.identity_key, False)
    alice.identities.approve(old_bob.address, old_bob.identity_key)
    assert alice.decrypt(old_bob.address, in_flight) == b"sent before the reinstall"
