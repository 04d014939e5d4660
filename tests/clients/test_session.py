"""Sessions end to end: X3DH and PQXDH, prekey handling, forged bundles, state as data."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients.errors import DecryptionError, UsageError
from relaysim.clients.keys import BundleError, PreKeyBundle, SignedPreKey
from relaysim.clients.ratchet import RatchetConfig
from relaysim.clients.session import Device, Session, parse_ciphertext
from tests.conftest import seeded_rng


def pair(pq: bool = True, he: bool = False, seed: int = 1) -> tuple[Device, Device]:
    cfg = RatchetConfig(header_encryption=he)
    alice = Device("alice", 1, pq=pq, config=cfg, rng=seeded_rng(seed))
    bob = Device("bob", 1, pq=pq, config=cfg, rng=seeded_rng(seed + 1000))
    alice.start_session(bob.address, bob.generate_prekeys(2, 2))
    return alice, bob


@pytest.mark.parametrize("pq", [False, True])
@pytest.mark.parametrize("he", [False, True])
def test_conversation_with_a_late_message(pq: bool, he: bool) -> None:
    alice, bob = pair(pq, he)
    first, late = alice.encrypt(bob.address, b"hi bob"), alice.encrypt(bob.address, b"late")
    assert parse_ciphertext(first)[0] is not None  # a prekey message
    assert bob.decrypt(alice.address, first) == b"hi bob"
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"hi alice")) == b"hi alice"
    again = alice.encrypt(bob.address, b"again")
    assert parse_ciphertext(again)[0] is None  # Bob answered: no more X3DH header
    assert bob.decrypt(alice.address, again) == b"again"
    assert bob.decrypt(alice.address, late) == b"late"


def test_one_time_prekeys_are_burnt_only_after_success() -> None:
    alice, bob = pair(pq=True)
    first = alice.encrypt(bob.address, b"hello")
    initial, _ = parse_ciphertext(first)
    assert initial is not None and initial.one_time_prekey_id in bob.secrets.one_time
    forged = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(DecryptionError):
        bob.decrypt(alice.address, forged)
    assert initial.one_time_prekey_id in bob.secrets.one_time  # a forgery burns nothing
    assert initial.kem_prekey_id in bob.secrets.kem
    assert not bob.has_session(alice.address)
    assert bob.decrypt(alice.address, first) == b"hello"
    assert initial.one_time_prekey_id not in bob.secrets.one_time
    assert initial.kem_prekey_id not in bob.secrets.kem


def test_pqxdh_tampered_kem_ciphertext_fails_at_first_decryption() -> None:
    alice, bob = pair(pq=True)
    first = alice.encrypt(bob.address, b"hello")
    initial, body = parse_ciphertext(first)
    assert initial is not None and initial.kem_ciphertext is not None
    ct = bytearray(initial.kem_ciphertext)
    ct[100] ^= 0x40
    wire = initial.to_wire()
    wire[5] = bytes(ct)
    tampered = b"\x02" + msgpack.packb([wire, body], use_bin_type=True)
    with pytest.raises(DecryptionError):
        bob.decrypt(alice.address, tampered)
    assert bob.decrypt(alice.address, first) == b"hello"


def test_last_resort_kem_prekey_is_used_when_one_time_ones_run_out() -> None:
    bob = Device("bob", 1, rng=seeded_rng(5))
    bob.generate_prekeys(0, 0)
    bundle = bob.secrets.bundle()
    assert bundle.one_time_prekey is None
    assert bundle.kem_prekey is not None and bundle.kem_prekey.last_resort
    for i in range(2):  # two initiators, same last-resort key, both work; it is never deleted
        alice = Device(f"alice{i}", 1, rng=seeded_rng(10 + i))
        alice.start_session(bob.address, bundle)
        assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"x")) == b"x"
    assert bundle.kem_prekey.id in bob.secrets.kem


def test_forged_signed_prekey_is_refused() -> None:
    bob = Device("bob", 1, rng=seeded_rng(6))
    good = bob.generate_prekeys(1, 1)
    mallory = Device("mallory", 1, rng=seeded_rng(7))
    evil = mallory.generate_prekeys(1, 1)
    forged = PreKeyBundle(good.identity_key, evil.signed_prekey, good.one_time_prekey, good.kem_prekey)
    alice = Device("alice", 1, rng=seeded_rng(8))
    with pytest.raises(BundleError, match=r"signed_prekey\.signature"):
        alice.start_session(bob.address, forged)
    forged_kem = PreKeyBundle(good.identity_key, good.signed_prekey, good.one_time_prekey, evil.kem_prekey)
    with pytest.raises(BundleError, match=r"kem_prekey\.signature"):
        alice.start_session(bob.address, forged_kem)
    assert not alice.has_session(bob.address)


@pytest.mark.parametrize("bob_pq", [True, False], ids=["pq-bob", "x3dh-bob"])
def test_a_pq_false_device_starts_pqxdh_on_a_bundle_with_a_kem_prekey(bob_pq: bool) -> None:
    """A pq=False device (the transition's) runs PQXDH when the bundle carries a KEM prekey, so that a
    pq=True Bob (PQXDH only) reads its first message; X3DH on one without, which a pq=False Bob reads."""
    bob = Device("bob", 1, pq=bob_pq, rng=seeded_rng(43))
    bundle = bob.generate_prekeys(1, 1 if bob_pq else 0)
    assert (bundle.kem_prekey is not None) is bob_pq
    alice = Device("alice", 1, pq=False, rng=seeded_rng(44))
    alice.start_session(bob.address, bundle)
    first = alice.encrypt(bob.address, b"hello")
    initial, _ = parse_ciphertext(first)
    assert initial is not None
    assert (initial.kem_ciphertext is not None) is bob_pq
    assert initial.kem_prekey_id == (bundle.kem_prekey.id if bundle.kem_prekey else None)
    assert bob.decrypt(alice.address, first) == b"hello"
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"hi")) == b"hi"


def test_pqxdh_without_kem_prekey_is_refused() -> None:
    bob = Device("bob", 1, pq=False, rng=seeded_rng(6))
    alice = Device("alice", 1, pq=True, rng=seeded_rng(8))
    with pytest.raises(BundleError, match="kem_prekey"):
        alice.start_session(bob.address, bob.generate_prekeys(1, 0))


@pytest.mark.parametrize("one_time", [True, False], ids=["with-OPK", "without-OPK"])
@pytest.mark.parametrize("bob_pq", [True, False], ids=["pq-bob", "x3dh-bob"])
def test_a_pq_device_refuses_an_x3dh_prekey_message(bob_pq: bool, one_time: bool) -> None:
    """PQXDH §3.2/§3.3: Bob's bundle always carries a KEM prekey and Alice's initial message always
    the KEM ciphertext. A pq=True Bob refuses a prekey message without them (X3DH, as when an attacker
    strips PQ from the bundle or the message: a downgrade), changing nothing; a pq=False Bob runs X3DH."""
    bob = Device("bob", 1, pq=bob_pq, rng=seeded_rng(40))
    bob.generate_prekeys(2, 2)
    bundle = bob.secrets.bundle(one_time=one_time, kem=bob_pq)
    x3dh_alice = Device("alice", 1, pq=False, rng=seeded_rng(41))
    # Bob's bundle with its KEM prekey stripped (a downgrade): X3DH on it
    x3dh_alice.start_session(bob.address, replace(bundle, kem_prekey=None))
    first = x3dh_alice.encrypt(bob.address, b"hello")
    initial, _ = parse_ciphertext(first)
    assert initial is not None and initial.kem_prekey_id is None and initial.kem_ciphertext is None
    if not bob_pq:
        assert bob.decrypt(x3dh_alice.address, first) == b"hello"
        return
    before = msgpack.packb(bob.to_dict())
    with pytest.raises(DecryptionError):
        bob.decrypt(x3dh_alice.address, first)
    assert msgpack.packb(bob.to_dict()) == before  # the whole state, as a copy of the phone takes it
    assert not bob.has_session(x3dh_alice.address) and bob.identities.pinned(x3dh_alice.address) is None
    assert bob.seen_base_keys == {}  # (no base key remembered: the PQXDH message below may reuse none)
    if one_time:
        assert initial.one_time_prekey_id in bob.secrets.one_time  # not burnt
    # A genuine PQXDH message on the same bundle (the same one-time prekeys) still makes a session.
    alice = Device("alice", 1, pq=True, rng=seeded_rng(42))
    alice.start_session(bob.address, bundle)
    pq_first = alice.encrypt(bob.address, b"hello")
    assert parse_ciphertext(pq_first)[0].one_time_prekey_id == initial.one_time_prekey_id  # type: ignore[union-attr]
    assert bob.decrypt(alice.address, pq_first) == b"hello"
    assert alice.decrypt(bob.address, bob.encrypt(alice.address, b"hi")) == b"hi"
    with pytest.raises(DecryptionError):  # and X3DH stays refused, with a session held
        bob.decrypt(x3dh_alice.address, first)


def test_bundle_encoding_is_stable_and_round_trips() -> None:
    bob = Device("bob", 1, rng=seeded_rng(9))
    bundle = bob.generate_prekeys(1, 1)
    data = bundle.encode()
    assert PreKeyBundle.decode(data) == bundle
    assert PreKeyBundle.decode(data).encode() == data
    with pytest.raises(BundleError, match=r"signed_prekey\.public must be 32 bytes"):
        SignedPreKey(1, b"short", bytes(64))
    with pytest.raises(
        BundleError,
        match="prekey bundle: not one msgpack value: it holds the byte 0xc1, which begins no msgpack value",
    ):
        PreKeyBundle.decode(b"\xc1")


def test_sending_without_a_session_is_a_usage_error() -> None:
    alice = Device("alice", 1, rng=seeded_rng(1))
    with pytest.raises(UsageError, match=r"no session with bob\.1"):
        alice.encrypt(Device("bob", 1, rng=seeded_rng(2)).address, b"x")


@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_decryption_error(junk: bytes) -> None:
    _alice, bob = pair(pq=False, seed=3)
    with pytest.raises(DecryptionError):
        bob.decrypt(_alice.address, junk)


@pytest.mark.parametrize("he", [False, True])
def test_session_state_restores_to_an_identical_session(he: bool) -> None:
    alice, bob = pair(pq=True, he=he)
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"1")) == b"1"
    restored = Session.from_dict(
        msgpack.unpackb(msgpack.packb(bob.sessions[alice.address].to_dict()), raw=False)
    )
    assert restored.to_dict() == bob.sessions[alice.address].to_dict()
    m = alice.encrypt(bob.address, b"2")
    # the original and the restored session decrypt the same message the same way
    assert restored.ratchet.decrypt(parse_ciphertext(m)[1]) == b"2"
    assert bob.decrypt(alice.address, m) == b"2"
    assert restored.to_dict()["ratchet"]["ckr"] == bob.sessions[alice.address].to_dict()["ratchet"]["ckr"]


def test_simultaneous_initiation_both_sessions_keep_working() -> None:
    """Regression (found by the simulation property test): both phones start a session at once.

    Each answers the other's prekey message with a new session, so each side's active session is
    the one the *other* started. Messages on either must still open (Sesame's inactive sessions).
    """
    u0 = Device("u0", 1, rng=seeded_rng(20))
    u1 = Device("u1", 1, rng=seeded_rng(21))
    b0, b1 = u0.generate_prekeys(2, 2), u1.generate_prekeys(2, 2)
    u0.start_session(u1.address, b1)
    u1.start_session(u0.address, b0)
    m1 = u0.encrypt(u1.address, b"from u0")
    m2 = u1.encrypt(u0.address, b"from u1")
    assert u1.decrypt(u0.address, m1) == b"from u0"
    assert u0.decrypt(u1.address, m2) == b"from u1"
    m3 = u0.encrypt(u1.address, b"u0 again")
    assert u1.decrypt(u0.address, m3) == b"u0 again"
    m4 = u1.encrypt(u0.address, b"u1 again")
    assert u0.decrypt(u1.address, m4) == b"u1 again"
    assert len(u0.inactive[u1.address]) == 1


def test_one_time_prekeys_are_held_as_one_64_byte_string_each() -> None:
    """A simulated phone holds a batch of one-time prekeys it mostly never uses: one string each
    (private ‖ public, 97 B) rather than a pair and two strings; read, each is its pair again."""
    from relaysim.clients import _primitives as _p

    alice = Device("alice", 1, rng=seeded_rng(1))
    bob = Device("bob", 1, rng=seeded_rng(2))
    bundle = bob.generate_prekeys(3, 1)
    assert bundle.one_time_prekey is not None
    assert [len(e) for e in bob.secrets.one_time._entries.values()] == [64, 64, 64]
    held = bob.secrets.one_time[bundle.one_time_prekey.id]
    assert held == _p.x25519_pair_from_private(held.private) and held.public == bundle.one_time_prekey.public
    alice.start_session(bob.address, bundle)
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi")) == b"hi"
    assert len(bob.secrets.one_time) == 2 and bundle.one_time_prekey.id not in bob.secrets.one_time


def test_bob_keeps_a_digest_of_the_kem_ciphertext_and_still_knows_the_header_again() -> None:
    alice = Device("alice", 1, rng=seeded_rng(3))
    bob = Device("bob", 1, rng=seeded_rng(4))
    alice.start_session(bob.address, bob.generate_prekeys(2, 1))
    first, second = alice.encrypt(bob.address, b"one"), alice.encrypt(bob.address, b"two")
    assert parse_ciphertext(second)[0] is not None  # no answer yet: the header rides on every message
    assert bob.decrypt(alice.address, first) == b"one"
    (session,) = bob.sessions_with(alice.address)
    assert session.initial is not None and session.initial.kem_ciphertext is not None
    assert len(session.initial.kem_ciphertext) == 32  # not the 1,568-byte ciphertext
    assert bob.decrypt(alice.address, second) == b"two"  # the same header finds the same session
    assert len(bob.sessions_with(alice.address)) == 1
    # and a copy of Bob's state (a seized phone) knows it too
    copy = Device.from_dict(bob.to_dict(), rng=seeded_rng(5))
    (copied,) = copy.sessions_with(alice.address)
    initial = parse_ciphertext(first)[0]
    assert initial is not None and copied.made_by(initial)


def test_a_peer_without_inactive_sessions_holds_no_empty_list_and_the_state_still_names_it() -> None:
    """Most peers never have an inactive session: an empty list each is ~0.1 KiB per peer per phone.
    The state as data (a forensic copy) still lists every peer with a session, as it did."""
    alice, bob = pair()
    assert bob.decrypt(alice.address, alice.encrypt(bob.address, b"hi")) == b"hi"
    assert alice.inactive == {} and bob.inactive == {}
    assert alice.to_dict()["inactive"] == [["bob", 1, []]]
    assert Device.from_dict(alice.to_dict()).to_dict() == alice.to_dict()


_HEADER_FIELDS = ("identity_key", "ephemeral_key", "signed_prekey_id", "one_time_prekey_id", "kem_prekey_id")


@given(
    field=st.sampled_from((*_HEADER_FIELDS, "kem_ciphertext", None)),
    kept_whole=st.booleans(),
    pq=st.booleans(),
)
def test_made_by_is_equality_with_the_header_or_with_what_bob_remembers_of_it(
    field: str | None, kept_whole: bool, pq: bool
) -> None:
    """``Session.made_by`` compares field by field: the same answer as ``mine == initial or mine ==
    remembered(initial)``, whichever field of the header differs."""
    import dataclasses

    from relaysim.clients.session import remembered
    from relaysim.clients.x3dh import InitialMessage

    base = InitialMessage(
        b"i" * 32,
        b"e" * 32,
        7,
        3 if pq else None,
        9 if pq else None,
        bytes(range(256)) * 6 + b"c" * 32 if pq else None,
    )
    mine = base if kept_whole else remembered(base)
    other = base
    if field is not None:
        value = getattr(base, field)
        if isinstance(value, bytes):
            changed: object = bytes([value[0] ^ 1]) + value[1:]
        elif field == "kem_ciphertext":
            changed = b"c" * 32
        else:
            changed = 4 if value is None else None if field != "signed_prekey_id" else value + 1
        other = dataclasses.replace(base, **{field: changed})
    session = Session.__new__(Session)
    session.initial = mine
    assert session.made_by(other) == (mine == other or mine == remembered(other))
    assert session.made_by(base)


def test_a_session_with_oneself_keeps_max_skip() -> None:
    """libsignal lets a session whose two identity keys are one (``SessionState::session_with_self``:
    two devices of one account, which share its identity key) jump past MAX_FORWARD_JUMPS with no bound
    (session_cipher.rs, ``get_or_create_message_key``). Here MAX_SKIP holds for it too
    (docs/conformance.md): the same jump is refused, the state unchanged, as for anyone's session, and
    the message at the limit read. No byte on the wire differs."""
    config = RatchetConfig(max_skip=5)
    rng = seeded_rng(31)
    phone = Device("ana", 1, rng=rng, config=config)
    laptop = Device("ana", 2, rng=rng, config=config, identity=phone.secrets.identity)
    phone.start_session(laptop.address, laptop.generate_prekeys(1, 1))
    assert laptop.decrypt(phone.address, phone.encrypt(laptop.address, b"linked")) == b"linked"
    session = laptop.sessions[phone.address]
    assert session.peer_identity == laptop.identity_key  # a session with oneself, in libsignal's sense
    sent = [phone.encrypt(laptop.address, b"sync %d" % i) for i in range(7)]
    before = laptop.to_dict()
    with pytest.raises(DecryptionError):  # N = 7 with Nr = 1: 6 keys to skip, past max_skip
        laptop.decrypt(phone.address, sent[6])
    assert laptop.to_dict() == before
    assert laptop.decrypt(phone.address, sent[5]) == b"sync 5"  # N = 6: 5 to skip, read
