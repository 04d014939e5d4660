"""RelayCore without I/O: authorization, routing, prekeys, certificates, metadata and retention."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay import wire
from relaysim.relay.certificates import SenderCertificate
from relaysim.relay.core import ConnectionContext, DeviceAddress, Push, RelayCore, Reply
from relaysim.relay.limits import UNLIMITED, Rate
from relaysim.relay.metadata import (
    KEEP_EVERYTHING,
    METADATA_SCHEMA,
    KindRule,
    MetadataRecord,
    RecordKind,
    RetentionPolicy,
)
from relaysim.relay.store import Store
from tests.helpers import Clock, DeviceKeys, assert_error, core_authenticate, core_device, new_core, reply

E = wire.ErrorCode


def _send(to: str, *devices: int, body: bytes = b"ct", rid: int = 1) -> wire.Send:
    return wire.Send(id=rid, to=to, envelopes=tuple(wire.OutgoingEnvelope(d, body) for d in devices))


def _conforms(outputs: list[object]) -> list[MetadataRecord]:
    records = [o for o in outputs if isinstance(o, MetadataRecord)]
    for r in records:
        present = {
            f.name for f in dataclasses.fields(r) if f.name != "kind" and getattr(r, f.name) is not None
        }
        assert present <= METADATA_SCHEMA[r.kind], (r.kind, present - METADATA_SCHEMA[r.kind])
    return records


ALICE, BOB, CAROL = DeviceKeys.make("alice"), DeviceKeys.make("bob"), DeviceKeys.make("carol")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def core(clock: Clock) -> RelayCore:
    return new_core(clock)


def test_a_message_end_to_end(core: RelayCore) -> None:
    alice = core_device(core, ALICE, 1)
    bob = core_device(core, BOB, 2)
    outputs = core.handle(alice, _send("bob", 1, body=b"opaque"))
    sent = reply(outputs)
    assert isinstance(sent, wire.Sent) and len(sent.envelope_ids) == 1
    (push,) = [o for o in outputs if isinstance(o, Push)]
    assert (push.device, push.connection) == (DeviceAddress("bob", 1), bob.id)
    assert push.frame.envelope.body == b"opaque" and push.frame.envelope.source_account == "alice"
    records = _conforms(outputs)
    assert [r.kind for r in records] == [RecordKind.SEND, RecordKind.DELIVERY]
    assert (records[0].account, records[0].recipient_account, records[0].size) == ("alice", "bob", 6)
    assert (records[1].account, records[1].host, records[1].port) == ("bob", "192.0.2.1", 40002)
    # Not acknowledged yet, so it is still queued: at-least-once.
    got = reply(core.handle(bob, wire.Receive(id=5)))
    assert isinstance(got, wire.Envelopes) and [e.id for e in got.envelopes] == list(sent.envelope_ids)
    acked = reply(core.handle(bob, wire.Ack(id=6, envelope_ids=sent.envelope_ids)))
    assert acked == wire.Acked(id=6, count=1)
    assert reply(core.handle(bob, wire.Receive(id=7))) == wire.Envelopes(id=7, envelopes=(), more=False)


# --- who may do what ------------------------------------------------------------------------------


def test_a_stranger_cannot_re_register_an_existing_device(core: RelayCore) -> None:
    core_device(core, ALICE, 1)
    thief = dataclasses.replace(DeviceKeys.make("alice", seed=99), account="alice")
    anonymous = ConnectionContext(10)
    assert_error(reply(core.handle(anonymous, thief.register())), E.NOT_AUTHENTICATED, "account")
    as_bob = core_device(core, BOB, 11)
    assert_error(reply(core.handle(as_bob, thief.register())), E.FORBIDDEN, "account")
    alice2 = DeviceKeys.make("alice", 2)
    linked = core_device(core, ALICE, 12, register=False)
    assert isinstance(reply(core.handle(linked, alice2.register())), wire.Registered)
    as_alice2 = core_device(core, alice2, 13, register=False)
    assert_error(reply(core.handle(as_alice2, thief.register())), E.FORBIDDEN, "device")
    # The original key still authenticates: nothing was replaced.
    assert isinstance(core_authenticate(core, ConnectionContext(14), ALICE), wire.Authenticated)


def test_a_device_re_registers_itself_and_its_old_key_stops_working(core: RelayCore) -> None:
    conn = core_device(core, ALICE, 1)
    renewed = DeviceKeys.make("alice", seed=2)
    assert isinstance(reply(core.handle(conn, renewed.register())), wire.Registered)
    assert_error(core_authenticate(core, ConnectionContext(2), ALICE), E.AUTHENTICATION_FAILED, "signature")
    assert isinstance(core_authenticate(core, ConnectionContext(3), renewed), wire.Authenticated)


def test_challenges_are_single_use_even_when_answered_wrongly(core: RelayCore) -> None:
    core_device(core, ALICE, 1)
    conn = ConnectionContext(2)
    challenge = reply(core.handle(conn, wire.AuthChallenge(id=1, account="alice", device=1)))
    assert isinstance(challenge, wire.Challenge)
    wrong = wire.Authenticate(id=2, nonce=challenge.nonce, signature=bytes(64))
    assert_error(reply(core.handle(conn, wrong)), E.AUTHENTICATION_FAILED, "signature")
    assert_error(reply(core.handle(conn, ALICE.answer(challenge.nonce))), E.NO_CHALLENGE, "nonce")
    assert conn.authenticated is None


def test_a_challenge_is_bound_to_its_connection(core: RelayCore) -> None:
    core_device(core, ALICE, 1)
    asked, other = ConnectionContext(2), ConnectionContext(3)
    challenge = reply(core.handle(asked, wire.AuthChallenge(id=1, account="alice", device=1)))
    assert isinstance(challenge, wire.Challenge)
    assert_error(reply(core.handle(other, ALICE.answer(challenge.nonce))), E.NO_CHALLENGE)
    assert isinstance(reply(core.handle(asked, ALICE.answer(challenge.nonce))), wire.Authenticated)


def test_a_challenge_expires(core: RelayCore, clock: Clock) -> None:
    core_device(core, ALICE, 1)
    for delay, ok in [(core.challenge_ttl, True), (core.challenge_ttl + 0.001, False)]:
        conn = ConnectionContext(int(delay * 1000))
        challenge = reply(core.handle(conn, wire.AuthChallenge(id=1, account="alice", device=1)))
        assert isinstance(challenge, wire.Challenge)
        assert challenge.expires_in_ms == int(core.challenge_ttl * 1000)
        clock.now += delay
        answer = reply(core.handle(conn, ALICE.answer(challenge.nonce)))
        if ok:
            assert isinstance(answer, wire.Authenticated)
        else:
            assert_error(answer, E.CHALLENGE_EXPIRED, "nonce")


def test_an_unknown_device_fails_like_a_bad_signature(core: RelayCore) -> None:
    conn = ConnectionContext(1)
    challenge = reply(core.handle(conn, wire.AuthChallenge(id=1, account="nobody", device=1)))
    assert isinstance(challenge, wire.Challenge)
    assert_error(
        reply(core.handle(conn, ALICE.answer(challenge.nonce))), E.AUTHENTICATION_FAILED, "signature"
    )


def test_authenticated_only_requests(core: RelayCore) -> None:
    core_device(core, BOB, 1)
    anonymous = ConnectionContext(2)
    for request in [
        _send("bob", 1),
        wire.Receive(id=1),
        wire.Ack(id=1, envelope_ids=(bytes(16),)),
        wire.GetSenderCertificate(id=1),
        wire.UploadPrekeys(id=1),
        wire.FetchBundle(id=1, account="bob"),
    ]:
        answer = assert_error(reply(core.handle(anonymous, request)), E.NOT_AUTHENTICATED)
        assert "authenticat" in answer.message


def test_a_device_reads_and_acknowledges_only_its_own_queue(core: RelayCore) -> None:
    alice = core_device(core, ALICE, 1)
    bob = core_device(core, BOB, 2)
    carol = core_device(core, CAROL, 3)
    sent = reply(core.handle(alice, _send("bob", 1)))
    assert isinstance(sent, wire.Sent)
    assert reply(core.handle(carol, wire.Receive(id=1))) == wire.Envelopes(id=1, envelopes=(), more=False)
    assert reply(core.handle(carol, wire.Ack(id=2, envelope_ids=sent.envelope_ids))) == wire.Acked(
        id=2, count=0
    )
    got = reply(core.handle(bob, wire.Receive(id=3)))
    assert isinstance(got, wire.Envelopes) and [e.id for e in got.envelopes] == list(sent.envelope_ids)


def test_sealed_send_needs_the_recipients_token(core: RelayCore) -> None:
    core_device(core, BOB, 1)
    anonymous = ConnectionContext(2, ("203.0.113.5", 5555))
    envelopes = (wire.OutgoingEnvelope(1, b"sealed"),)
    wrong = assert_error(
        reply(
            core.handle(
                anonymous, wire.SealedSend(id=1, to="bob", delivery_token=bytes(32), envelopes=envelopes)
            )
        ),
        E.INVALID_DELIVERY_TOKEN,
        "delivery_token",
    )
    nobody = assert_error(
        reply(
            core.handle(
                anonymous, wire.SealedSend(id=1, to="zed", delivery_token=bytes(32), envelopes=envelopes)
            )
        ),
        E.INVALID_DELIVERY_TOKEN,
        "delivery_token",
    )
    assert wrong.message.replace("'bob'", "X") == nobody.message.replace("'zed'", "X")  # no account oracle
    good = wire.SealedSend(id=3, to="bob", delivery_token=BOB.delivery_token, envelopes=envelopes)
    outputs = core.handle(anonymous, good)
    assert isinstance(reply(outputs), wire.Sent)
    (record,) = [r for r in _conforms(outputs) if r.kind == RecordKind.SEALED_SEND]
    # The relay does not know the sender, but it does see where the envelope came from.
    assert (record.account, record.device) == (None, None)
    assert (record.host, record.recipient_account) == ("203.0.113.5", "bob")
    # Over an authenticated connection, the sender is known after all, and recorded.
    alice = core_device(core, ALICE, 4)
    (record,) = [r for r in _conforms(core.handle(alice, good)) if r.kind == RecordKind.SEALED_SEND]
    assert record.account == "alice"
    queued = core.store.all_envelopes()
    assert [e.sealed for e in queued] == [True, True] and {e.source_account for e in queued} == {None}


def test_sends_must_name_exactly_the_current_devices(core: RelayCore) -> None:
    alice = core_device(core, ALICE, 1)
    bob = core_device(core, BOB, 2)
    bob2 = DeviceKeys.make("bob", 2)
    assert isinstance(reply(core.handle(bob, bob2.register())), wire.Registered)
    error = assert_error(reply(core.handle(alice, _send("bob", 1, 3))), E.STALE_DEVICES, "envelopes")
    assert (error.missing, error.extra, error.stale) == ((2,), (3,), None)
    stale = wire.Send(id=2, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"x", BOB.registration_id),
                                                 wire.OutgoingEnvelope(2, b"x", bob2.registration_id + 1)))  # fmt: skip
    error = assert_error(reply(core.handle(alice, stale)), E.STALE_DEVICES)
    assert (error.missing, error.extra, error.stale) == (None, None, (2,))
    assert_error(reply(core.handle(alice, _send("bob", 1, 1))), E.DUPLICATE_DEVICE, "envelopes[1].device")
    assert_error(reply(core.handle(alice, _send("nobody", 1))), E.UNKNOWN_ACCOUNT, "to")
    assert core.store.all_envelopes() == []  # refusals change nothing
    assert isinstance(reply(core.handle(alice, _send("bob", 1, 2))), wire.Sent)
    # To one's own account: the other devices, not oneself.
    assert_error(reply(core.handle(bob, _send("bob", 1, 2))), E.STALE_DEVICES)
    assert isinstance(reply(core.handle(bob, _send("bob", 2))), wire.Sent)


def test_envelope_size_limit(clock: Clock) -> None:
    core = new_core(clock, max_frame_size=4096)
    alice = core_device(core, ALICE, 1)
    core_device(core, BOB, 2)
    assert isinstance(reply(core.handle(alice, _send("bob", 1, body=bytes(core.max_body_size)))), wire.Sent)
    assert_error(
        reply(core.handle(alice, _send("bob", 1, body=bytes(core.max_body_size + 1)))),
        E.ENVELOPE_TOO_LARGE,
        "envelopes[0].body",
    )


def test_receive_batches_fit_in_a_frame(clock: Clock) -> None:
    core = new_core(clock, max_frame_size=8192)
    alice = core_device(core, ALICE, 1)
    bob = core_device(core, BOB, 2)
    bodies = [bytes([i]) * (core.max_body_size if i % 3 == 0 else 700) for i in range(12)]
    for body in bodies:
        assert isinstance(reply(core.handle(alice, _send("bob", 1, body=body))), wire.Sent)
    seen: list[bytes] = []
    while True:
        got = reply(core.handle(bob, wire.Receive(id=1, limit=5)))
        assert isinstance(got, wire.Envelopes)
        assert 1 <= len(got.envelopes) <= 5
        assert len(wire.encode(got)) - 4 <= core.max_frame_size
        seen += [e.body for e in got.envelopes]
        ids = tuple(e.id for e in got.envelopes)
        assert reply(core.handle(bob, wire.Ack(id=2, envelope_ids=ids))) == wire.Acked(id=2, count=len(ids))
        if not got.more:
            break
    assert seen == bodies  # in order, none lost


# --- prekeys -------------------------------------------------------------------------------------


def test_bundles_hand_out_each_one_time_prekey_once_then_fall_back(core: RelayCore) -> None:
    alice = core_device(core, ALICE, 1)
    bob_keys = DeviceKeys.make("bob")
    register = bob_keys.register(one_time=2, kem=1)
    bob = ConnectionContext(2)
    assert isinstance(reply(core.handle(bob, register)), wire.Registered)
    handed: list[tuple[int | None, int, bool]] = []
    for _ in range(4):
        bundle = reply(core.handle(alice, wire.FetchBundle(id=1, account="bob")))
        assert isinstance(bundle, wire.Bundle)
        (device,) = bundle.devices
        assert device.identity_key == bob_keys.identity_key and device.signed_prekey == register.signed_prekey
        opk = device.one_time_prekey.id if device.one_time_prekey else None
        handed.append((opk, device.kem_prekey.id, device.kem_prekey_last_resort))
    first, second = (k.id for k in register.one_time_prekeys)
    kem = register.kem_prekeys[0].id
    last = register.last_resort_kem_prekey.id
    assert handed == [(first, kem, False), (second, last, True), (None, last, True), (None, last, True)]


def test_fetch_bundle_without_authentication_needs_the_token(core: RelayCore) -> None:
    core_device(core, BOB, 1)
    anonymous = ConnectionContext(2)
    assert_error(reply(core.handle(anonymous, wire.FetchBundle(id=1, account="bob"))), E.NOT_AUTHENTICATED)
    bad = wire.FetchBundle(id=1, account="bob", delivery_token=bytes(32))
    assert_error(reply(core.handle(anonymous, bad)), E.INVALID_DELIVERY_TOKEN, "delivery_token")
    good = wire.FetchBundle(id=1, account="bob", delivery_token=BOB.delivery_token)
    assert isinstance(reply(core.handle(anonymous, good)), wire.Bundle)


def test_prekey_signatures_are_checked(clock: Clock) -> None:
    core = new_core(clock)
    keys = DeviceKeys.make("alice")
    register = keys.register(kem=3)
    forged = dataclasses.replace(register.kem_prekeys[2], signature=bytes(64))
    bad = dataclasses.replace(register, kem_prekeys=(*register.kem_prekeys[:2], forged))
    assert_error(reply(core.handle(ConnectionContext(1), bad)), E.BAD_SIGNATURE, "kem_prekeys[2].signature")
    spk = dataclasses.replace(register.signed_prekey, public=bytes(32))
    bad = dataclasses.replace(register, signed_prekey=spk)
    assert_error(reply(core.handle(ConnectionContext(1), bad)), E.BAD_SIGNATURE, "signed_prekey.signature")
    assert not core.store.account_exists("alice")
    trusting = new_core(clock, verify_prekey_signatures=False)
    assert isinstance(reply(trusting.handle(ConnectionContext(1), bad)), wire.Registered)


def test_upload_prekeys_replaces_and_counts(core: RelayCore) -> None:
    conn = core_device(core, ALICE, 1)
    assert reply(core.handle(conn, wire.UploadPrekeys(id=1))) == wire.PrekeysUploaded(
        id=1, one_time_prekeys=2, kem_prekeys=2
    )
    upload = wire.UploadPrekeys(id=2, one_time_prekeys=ALICE.prekeys(5), signed_prekey=ALICE.signed_prekey())
    assert reply(core.handle(conn, upload)) == wire.PrekeysUploaded(id=2, one_time_prekeys=5, kem_prekeys=2)
    device = core.store.device("alice", 1)
    assert device is not None and device.signed_prekey == upload.signed_prekey
    forged = wire.UploadPrekeys(
        id=3, kem_prekeys=(dataclasses.replace(ALICE.kem_prekeys(1)[0], signature=bytes(64)),)
    )
    assert_error(reply(core.handle(conn, forged)), E.BAD_SIGNATURE, "kem_prekeys[0].signature")


# --- sender certificates ---------------------------------------------------------------------------


def test_sender_certificates_verify_against_the_trust_root(core: RelayCore, clock: Clock) -> None:
    conn = core_device(core, ALICE, 1)
    answer = reply(core.handle(conn, wire.GetSenderCertificate(id=1)))
    assert isinstance(answer, wire.SenderCertificateResponse)
    certificate = SenderCertificate.decode(answer.certificate)
    certificate.verify(core.trust_root_public, now=int(clock.now))
    assert (certificate.sender, certificate.device, certificate.identity_key) == (
        "alice",
        1,
        ALICE.identity_key,
    )
    assert certificate.expires == int(clock.now) + core.certificate_ttl


def _past_the_wire(frame: wire.Frame, **changes: object) -> wire.Frame:
    """``frame`` with ``changes`` made without the wire's checks: what a relay from before a check read."""
    cls = type(frame)
    return wire.prechecked(cls)(*(changes.get(name, getattr(frame, name)) for name, _, _ in cls._specs()))


def _register_past_the_wire(keys: DeviceKeys) -> wire.Frame:
    frame = dataclasses.replace(keys, device=1).register()
    return _past_the_wire(frame, device=keys.device)


def test_a_device_id_past_127_cannot_register(core: RelayCore, clock: Clock) -> None:
    """Signal's server holds device ids 1 to 127 (Signal-Server's DeviceIdUtil.isValid: 1 to
    Byte.MAX_VALUE), libsignal's DeviceId no other: a registration as 128 (a new account, or a device
    linked to one) is refused (``invalid_value``, about ``device``), nothing stored; 127 registers.
    It registered, and then got no sender certificate. The wire refuses it (no such Register is made,
    none is read); the relay core still does, for a frame made past the wire's checks."""
    with pytest.raises(wire.LocalProtocolError) as refused:
        DeviceKeys.make("dev128", 128).register()
    assert (refused.value.code, refused.value.field) == (wire.ErrorCode.INVALID_VALUE, "device")
    assert refused.value.message.startswith(
        "device must be from 1 to 127"
    ) and refused.value.message.endswith(", got 128")
    keys = DeviceKeys.make("dev128", 128)
    conn = core_device(core, DeviceKeys.make("dev127", 127), 1)
    other = ConnectionContext(2, ("192.0.2.1", 40002))
    core.connect(other)
    register = _register_past_the_wire(keys)
    frame = assert_error(reply(core.handle(other, register)), wire.ErrorCode.INVALID_VALUE, "device")
    assert "device 128" in frame.message and "1 to 127" in frame.message
    assert not core.store.account_exists("dev128")
    linked = _past_the_wire(register, account="dev127")
    assert isinstance(linked, wire.Register)
    assert_error(reply(core.handle(conn, linked)), wire.ErrorCode.INVALID_VALUE, "device")
    assert core.store.device_ids("dev127") == [127]
    with pytest.raises(ValueError, match="device 128 cannot be added: a device id is 1 to 127"):
        core.provision_device(linked)


def test_a_sender_certificate_is_refused_to_a_device_past_127(core: RelayCore, clock: Clock) -> None:
    """libsignal's DeviceId is 1 to 127 and its SenderCertificate reads no other sender device, so the
    relay issues no certificate naming another: a device stored as 128 (registered before device ids
    past 127 were refused; the wire now refuses its auth_challenge, so its connection is logged in here
    by hand) is refused (``forbidden``), before a rate-limit token or a signature is spent; 127 gets one.
    The refusal is about no field: get_sender_certificate has none (it named ``device``, which the
    request does not have); its message names the connection's device."""
    for device, ok in ((127, True), (128, False)):
        conn = core_device(core, DeviceKeys.make(f"dev{device}", 1), device)
        stored = core.store.device(f"dev{device}", 1)
        assert stored is not None
        core.store.put_device(dataclasses.replace(stored, device=device))
        conn.authenticated = DeviceAddress(f"dev{device}", device)
        answer = reply(core.handle(conn, wire.GetSenderCertificate(id=1)))
        if ok:
            assert isinstance(answer, wire.SenderCertificateResponse)
            assert SenderCertificate.decode(answer.certificate).device == device
        else:
            frame = assert_error(answer, wire.ErrorCode.FORBIDDEN, None)
            assert "1 to 127" in frame.message and "this connection is device 128" in frame.message


def test_the_server_identity_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as store:
        first = RelayCore(store).trust_root_public
    with Store(path) as store:
        assert RelayCore(store).trust_root_public == first


# --- metadata and retention ------------------------------------------------------------------------


def _scenario(core: RelayCore, clock: Clock) -> list[object]:
    """Registration, authentication, bundle fetch, sends both ways, sealed send, receipt, ack,
    contact discovery, a block."""
    outputs: list[object] = []
    alice = ConnectionContext(1, ("198.51.100.7", 50001))
    bob = ConnectionContext(2, ("203.0.113.9", 50002))
    for conn, keys in [(alice, ALICE), (bob, BOB)]:
        outputs += core.connect(conn)
        outputs += core.handle(conn, keys.register())
        challenge = reply(
            core.handle(conn, wire.AuthChallenge(id=2, account=keys.account, device=keys.device))
        )
        assert isinstance(challenge, wire.Challenge)
        outputs += core.handle(conn, keys.answer(challenge.nonce))
    clock.now += 3600
    outputs += core.handle(alice, wire.FetchBundle(id=4, account="bob"))
    outputs += core.handle(alice, _send("bob", 1, body=b"hello bob"))
    outputs += core.handle(bob, _send("alice", 1, body=b"hello alice"))
    anonymous = ConnectionContext(3, ("192.0.2.99", 50003))
    outputs += core.connect(anonymous)
    sealed = wire.SealedSend(
        id=5, to="bob", delivery_token=BOB.delivery_token, envelopes=(wire.OutgoingEnvelope(1, b"guess who"),)
    )
    outputs += core.handle(anonymous, sealed)
    outputs += core.disconnect(anonymous)
    clock.now += 86400 * 3
    received = core.handle(bob, wire.Receive(id=6))
    outputs += received
    got = reply(received)
    assert isinstance(got, wire.Envelopes) and len(got.envelopes) == 2
    outputs += core.handle(bob, wire.Ack(id=7, envelope_ids=tuple(e.id for e in got.envelopes)))
    outputs += core.handle(alice, wire.GetSenderCertificate(id=8))
    outputs += core.handle(alice, wire.UploadPrekeys(id=9, one_time_prekeys=ALICE.prekeys(1)))
    outputs += core.handle(alice, wire.DiscoverContacts(id=10, contacts=("bob", "dave")))
    outputs += core.handle(bob, wire.Block(id=11, account="alice"))
    outputs += core.disconnect(alice)
    outputs += core.disconnect(bob)
    return outputs


def test_every_kind_of_record_is_produced_and_conforms_to_the_schema(core: RelayCore, clock: Clock) -> None:
    records = _conforms(_scenario(core, clock))
    assert {r.kind for r in records} == set(RecordKind)
    # Keep-everything writes exactly what was observed, in order.
    assert core.store.metadata() == records


def test_records_never_contain_envelope_bodies(core: RelayCore, clock: Clock) -> None:
    records = _conforms(_scenario(core, clock))
    text = repr(records).encode() + b"".join(r.envelope_id or b"" for r in records)
    for body in [b"hello bob", b"hello alice", b"guess who"]:
        assert body not in text


SIGNAL_LIKE = RetentionPolicy.from_dict(
    "signal-like",
    {
        # signal.org/bigbrother: account creation time and the day of the last connection, nothing else.
        "registration": {"fields": ["time", "account"], "keep": "first", "key": ["account"]},
        "authentication": {
            "fields": ["time", "account"],
            "granularity": {"time": 86400},
            "keep": "latest",
            "key": ["account"],
        },
    },
)


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_a_field_the_policy_does_not_keep_is_never_written(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "relay.db"
    start = clock.now
    with Store(path) as store:
        core = RelayCore(store, clock=clock, policy=SIGNAL_LIKE)
        _scenario(core, clock)
        # A second connection on a later day moves "last connection" forward.
        clock.now += 86400
        core_authenticate(core, ConnectionContext(9, ("198.51.100.7", 1)), ALICE)
        rows = store.metadata()
    day = 86400
    assert sorted((r.kind, r.account, r.time) for r in rows) == [
        (RecordKind.AUTHENTICATION, "alice", (clock.now // day) * day),
        (RecordKind.AUTHENTICATION, "bob", (start // day) * day),
        (RecordKind.REGISTRATION, "alice", start),
        (RecordKind.REGISTRATION, "bob", start),
    ]
    assert all(r.host is None and r.device is None and r.recipient_account is None for r in rows)
    # Read the file itself (with its WAL): the addresses the relay saw were never written.
    data = _db_bytes(path)
    assert b"alice" in data  # the check can see text that is there
    for host in [b"198.51.100.7", b"203.0.113.9", b"192.0.2.99"]:
        assert host not in data


def test_keep_everything_does_write_addresses(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as store:
        _scenario(RelayCore(store, clock=clock, policy=KEEP_EVERYTHING), clock)
    assert b"198.51.100.7" in _db_bytes(path)


def test_acknowledged_envelopes_leave_no_trace_in_the_file(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "relay.db"
    marker = b"UNIQUE-CIPHERTEXT-MARKER" * 4
    with Store(path) as store:
        core = RelayCore(store, clock=clock)
        alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
        sent = reply(core.handle(alice, _send("bob", 1, body=marker)))
        assert isinstance(sent, wire.Sent)
        store.checkpoint()
        assert marker in _db_bytes(path)
        core.handle(bob, wire.Ack(id=1, envelope_ids=sent.envelope_ids))
        store.checkpoint()
    assert marker not in _db_bytes(path)


def test_retention_deletes_old_records(core: RelayCore, clock: Clock) -> None:
    policy = RetentionPolicy(
        "week", {RecordKind.SEND: KindRule(fields=frozenset({"time", "account"}), keep_for=7 * 86400)}
    )
    core.policy = policy
    alice = core_device(core, ALICE, 1)
    core_device(core, BOB, 2)
    core.handle(alice, _send("bob", 1))
    clock.now += 7 * 86400
    assert core.expire() == 0
    core.handle(alice, _send("bob", 1))
    clock.now += 1
    assert core.expire() == 1
    assert len(core.store.metadata(RecordKind.SEND)) == 1


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"sends": {}}, "unknown record kind 'sends'"),
        ({"send": {"fields": ["body"]}}, "not in the schema"),
        ({"send": {"fields": ["account"], "granularity": {"time": 60}}}, "does not keep"),
        ({"send": {"fields": ["account"], "granularity": {"account": 60}}}, "only applies"),
        ({"send": {"fields": ["account"], "keep": "latest"}}, "needs a key"),
        ({"send": {"fields": ["account"], "keep_for": 60}}, "needs 'time'"),
        ({"send": {"fields": ["time"], "kept": 1}}, "unknown settings"),
    ],
)
def test_policies_are_checked_when_built(data: dict[str, dict[str, object]], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RetentionPolicy.from_dict("bad", data)


def test_policy_round_trips_as_data() -> None:
    assert RetentionPolicy.from_dict("signal-like", SIGNAL_LIKE.to_dict()) == SIGNAL_LIKE
    assert RetentionPolicy.from_dict("all", KEEP_EVERYTHING.to_dict()) == dataclasses.replace(
        KEEP_EVERYTHING, name="all"
    )


# --- any valid request, from anyone, gets exactly one answer ----------------------------------------

_ids = st.integers(0, 2**64 - 1)
_accounts = st.sampled_from(["alice", "bob", "carol", "zed"])
_devices = st.integers(1, 3)


def _b(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


_envelopes = st.lists(
    st.builds(wire.OutgoingEnvelope, device=_devices, body=st.binary(max_size=30),
              registration_id=st.none() | st.integers(0, 20000)),
    min_size=1, max_size=3,
).map(tuple)  # fmt: skip
_requests = st.one_of(
    st.builds(wire.Ping, id=_ids),
    st.builds(wire.Receive, id=_ids, limit=st.none() | st.integers(1, 10)),
    st.builds(wire.Ack, id=_ids, envelope_ids=st.lists(_b(16), min_size=1, max_size=3).map(tuple)),
    st.builds(wire.AuthChallenge, id=_ids, account=_accounts, device=_devices),
    st.builds(wire.Authenticate, id=_ids, nonce=_b(32), signature=_b(64)),
    st.builds(wire.FetchBundle, id=_ids, account=_accounts, delivery_token=st.none() | _b(32)),
    st.builds(wire.Send, id=_ids, to=_accounts, envelopes=_envelopes),
    st.builds(wire.SealedSend, id=_ids, to=_accounts, delivery_token=_b(32), envelopes=_envelopes),
    st.builds(wire.GetSenderCertificate, id=_ids),
    st.builds(wire.UploadPrekeys, id=_ids, one_time_prekeys=st.lists(st.builds(wire.Prekey, id=st.integers(0, 9),
              public=_b(32)), max_size=2).map(tuple)),
    st.builds(lambda i, a, d: dataclasses.replace(DeviceKeys.make(a, d).register(i)), _ids, _accounts, _devices),
)  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), _requests), min_size=1, max_size=12))
def test_any_request_from_anyone_gets_exactly_one_reply(steps: list[tuple[int, wire.Request]]) -> None:
    core = new_core(Clock())
    connections = [ConnectionContext(1), core_device(core, ALICE, 2), core_device(core, BOB, 3)]
    for which, request in steps:
        conn = connections[which]
        outputs = core.handle(conn, request)
        replies = [o for o in outputs if isinstance(o, Reply)]
        assert len(replies) == 1 and replies[0].connection == conn.id
        frame = replies[0].frame
        assert frame.id == request.id
        assert wire.encode(frame)
        if isinstance(frame, wire.ErrorFrame):
            assert frame.code in {c.value for c in E} and frame.message
        for push in (o for o in outputs if isinstance(o, Push)):
            assert push.connection in {c.id for c in connections if c.authenticated == push.device}
        _conforms(outputs)


# --- send and sealed send refuse before they write (they run without a savepoint each) -------------


def test_send_and_sealed_send_refusals_leave_the_group_they_are_in_whole(tmp_path: Path) -> None:
    limits = dataclasses.replace(UNLIMITED, queue_envelopes=1, send_per_account=Rate(1.0, 4.0))
    now = Clock()
    core = RelayCore(Store(tmp_path / "relay.db"), clock=now, rng=random.Random(3).randbytes, limits=limits)
    alice, bob = core_device(core, DeviceKeys.make("alice"), 1), core_device(core, DeviceKeys.make("bob"), 2)
    core_device(core, DeviceKeys.make("carol"), 4)
    stranger = ConnectionContext(3, ("192.0.2.9", 1))
    core.store.begin_group()
    sent = reply(core.handle(alice, _send("bob", 1)))  # queued and recorded, waiting for the commit
    assert isinstance(sent, wire.Sent)
    refusals = [
        (stranger, _send("bob", 1), E.NOT_AUTHENTICATED),
        (alice, _send("nobody", 1), E.UNKNOWN_ACCOUNT),
        (alice, _send("bob", 1, 2), E.STALE_DEVICES),
        (alice, _send("bob", 1), E.RECIPIENT_QUEUE_FULL),
        (alice, _send("bob", 1), E.RATE_LIMITED),  # alice's 5th send, the bucket holds 4
        (stranger, _sealed("bob", bytes(32)), E.INVALID_DELIVERY_TOKEN),
    ]
    for conn, request, code in refusals:
        assert_error(reply(core.handle(conn, request)), code)
    acked = reply(core.handle(bob, wire.Ack(id=7, envelope_ids=sent.envelope_ids)))
    assert isinstance(acked, wire.Acked) and acked.count == 1
    core.store.commit_group()  # would raise StoreError had a refusal come after a write to the file
    kinds = [r.kind for r in core.store.metadata()]
    assert kinds[-3:] == [RecordKind.SEND, RecordKind.DELIVERY, RecordKind.ACKNOWLEDGEMENT]
    # a send that fails before it writes to the file (here: making its records) leaves nothing
    # behind, and the rest of its group whole
    now.now += 60  # the bucket full again
    core.store.begin_group()
    assert isinstance(reply(core.handle(alice, _send("carol", 1, body=b"kept"))), wire.Sent)
    core.store.append_records = _fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        core.handle(alice, _send("bob", 1))  # bob's queue counted already: nothing read back
    del core.store.append_records
    core.store.commit_group()
    assert [e.body for e in core.store.all_envelopes()] == [b"kept"]


def test_an_ack_runs_without_a_savepoint_and_its_refusal_leaves_the_group_whole(tmp_path: Path) -> None:
    core = RelayCore(Store(tmp_path / "relay.db"), clock=Clock(), rng=random.Random(4).randbytes)
    alice, bob = core_device(core, DeviceKeys.make("alice"), 1), core_device(core, DeviceKeys.make("bob"), 2)
    stranger = ConnectionContext(3, ("192.0.2.9", 1))
    statements: list[str] = []
    core.store._db.set_trace_callback(statements.append)
    core.store.begin_group()
    first, second = (reply(core.handle(alice, _send("bob", 1, body=b))) for b in (b"one", b"two"))
    assert isinstance(first, wire.Sent) and isinstance(second, wire.Sent)
    ids = first.envelope_ids + second.envelope_ids
    assert_error(reply(core.handle(stranger, wire.Ack(id=6, envelope_ids=ids))), E.NOT_AUTHENTICATED)
    acked = reply(core.handle(bob, wire.Ack(id=7, envelope_ids=first.envelope_ids)))
    assert isinstance(acked, wire.Acked) and acked.count == 1
    core.store.commit_group()
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
    assert [e.body for e in core.store.all_envelopes()] == [b"two"]  # the acked one never written
    assert [r.kind for r in core.store.metadata()][-1] == RecordKind.ACKNOWLEDGEMENT
    # acked from the file, in a group of its own
    core.store.begin_group()
    acked = reply(core.handle(bob, wire.Ack(id=8, envelope_ids=second.envelope_ids)))
    core.store.commit_group()
    assert isinstance(acked, wire.Acked) and acked.count == 1 and core.store.all_envelopes() == []


def _sealed(to: str, token: bytes) -> wire.SealedSend:
    return wire.SealedSend(id=5, to=to, delivery_token=token, envelopes=(wire.OutgoingEnvelope(1, b"x"),))


def _fail(records: object) -> None:
    raise RuntimeError("the disk is full")


def test_a_full_queue_counted_afresh_mid_group_refuses_that_send_alone(tmp_path: Path) -> None:
    # After a restart the relay counts a device's queue when first asked. Counting it must not
    # write the group's waiting envelopes to the file: a send refused after such a write would
    # take the whole group down with it (every request of the batch answered internal_error).
    limits = dataclasses.replace(UNLIMITED, queue_envelopes=1)
    path = tmp_path / "relay.db"
    core = RelayCore(Store(path), clock=Clock(), rng=random.Random(5).randbytes, limits=limits)
    alice, _ = core_device(core, DeviceKeys.make("alice"), 1), core_device(core, DeviceKeys.make("bob"), 2)
    core_device(core, DeviceKeys.make("carol"), 3)
    assert isinstance(reply(core.handle(alice, _send("bob", 1, body=b"fills bob's queue"))), wire.Sent)
    core.store.close()
    core = RelayCore(Store(path), clock=Clock(), rng=random.Random(6).randbytes, limits=limits)
    alice = core_device(core, DeviceKeys.make("alice"), 1, register=False)
    core.store.begin_group()
    assert isinstance(reply(core.handle(alice, _send("carol", 1, body=b"kept"))), wire.Sent)
    assert_error(reply(core.handle(alice, _send("bob", 1))), E.RECIPIENT_QUEUE_FULL)
    core.store.commit_group()  # raised StoreError when counting bob's queue wrote carol's envelope
    assert sorted(e.body for e in core.store.all_envelopes()) == [b"fills bob's queue", b"kept"]
    assert core.store.queue_size("carol", 1) == (1, 4)


def test_envelope_ids_come_from_the_system_csprng_a_block_at_a_time(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default rng (os.urandom) the core reads envelope ids 256 at a time, one system call
    instead of one per envelope; a given rng (a seeded simulation's) is asked for each, in order."""
    import os

    core = RelayCore(Store(":memory:"), clock=clock, limits=UNLIMITED)  # rng: os.urandom
    alice, _bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    calls: list[int] = []
    urandom = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return urandom(n)

    monkeypatch.setattr(os, "urandom", counting)
    ids = []
    for i in range(300):
        sent = reply(core.handle(alice, _send("bob", 1, rid=i)))
        assert isinstance(sent, wire.Sent)
        ids.append(sent.envelope_ids[0])
    monkeypatch.undo()
    assert len(set(ids)) == 300 and {len(i) for i in ids} == {wire.ENVELOPE_ID_SIZE}
    assert 1 <= len(calls) <= 2  # (before: 300 calls, of the os.urandom bound when the core was made)
    asked: list[bytes] = []
    seeded = random.Random(3)

    def rng(n: int) -> bytes:
        asked.append(seeded.randbytes(n))
        return asked[-1]

    core = RelayCore(Store(":memory:"), clock=clock, rng=rng, limits=UNLIMITED)
    alice, _bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    for i in range(3):
        before = len(asked)
        sent = reply(core.handle(alice, _send("bob", 1, rid=i)))
        assert isinstance(sent, wire.Sent) and [*sent.envelope_ids] == asked[before:]  # one call, its bytes
