"""Sealed sender: the relay cannot see the sender; the recipient checks the whole certificate chain."""

from __future__ import annotations

import dataclasses

import pytest

from relaysim.clients import sealed
from relaysim.clients.agent import DeviceAgent, Received, Undecryptable
from relaysim.clients.errors import DecryptionError, SealedSenderSelfSend
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay._primitives import Ed25519Signer
from relaysim.relay.certificates import (
    REVOKED_SERVER_KEY_IDS,
    CertificateError,
    SenderCertificate,
    ServerSigningKey,
    TrustRoot,
)
from relaysim.relay.identity import ServerIdentity
from tests.clients.test_agent_duplicates import World
from tests.conftest import seeded_rng

NOW = 1_000_000


@pytest.fixture
def world() -> tuple[Device, Device, TrustRoot, ServerSigningKey]:
    rng = seeded_rng(42)
    root = TrustRoot(rng(32))
    server = ServerSigningKey.create(root, 1, rng(32))
    alice = Device("alice", 1, rng=seeded_rng(1))
    bob = Device("bob", 1, rng=seeded_rng(2))
    alice.start_session(bob.address, bob.generate_prekeys(2, 2))
    return alice, bob, root, server


def cert_for(server: ServerSigningKey, device: Device, expires: int = NOW + 3600) -> bytes:
    return server.issue(device.address.account, device.address.device, device.identity_key, expires).encode()


def test_sealed_round_trip_hides_the_sender(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    alice, bob, root, server = world
    envelope = alice.seal(bob.address, b"meet at noon", cert_for(server, alice))
    assert b"alice" not in envelope
    assert alice.identity_key not in envelope
    sender, plaintext = bob.open_sealed(envelope, root.public, NOW)
    assert (sender, plaintext) == (alice.address, b"meet at noon")
    # and the reply works on the session the sealed message started
    reply = bob.seal(alice.address, b"ok", cert_for(server, bob))
    assert alice.open_sealed(reply, root.public, NOW) == (bob.address, b"ok")


def test_expired_certificate_is_refused(world: tuple[Device, Device, TrustRoot, ServerSigningKey]) -> None:
    alice, bob, root, server = world
    envelope = alice.seal(bob.address, b"x", cert_for(server, alice, expires=NOW - 1))
    with pytest.raises(DecryptionError):
        bob.open_sealed(envelope, root.public, NOW)
    assert not bob.has_session(alice.address)


def test_certificate_from_an_untrusted_root_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    alice, bob, root, _server = world
    rogue = ServerSigningKey.create(TrustRoot(bytes(range(32))), 1, bytes(range(1, 33)))
    with pytest.raises(DecryptionError):
        bob.open_sealed(alice.seal(bob.address, b"x", cert_for(rogue, alice)), root.public, NOW)


def test_forged_certificate_signature_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    alice, bob, root, server = world
    cert = server.issue("alice", 1, alice.identity_key, NOW + 10)
    from relaysim.relay.certificates import SenderCertificate

    forged = SenderCertificate(
        "carol", 1, cert.identity_key, cert.expires, cert.server_certificate, cert.signature
    )
    with pytest.raises(DecryptionError):
        bob.open_sealed(alice.seal(bob.address, b"x", forged.encode()), root.public, NOW)


def test_identity_swapped_certificate_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    """Mallory seals with her own key but Alice's certificate: the certificate's key is not the sealer's."""
    alice, bob, root, server = world
    mallory = Device("mallory", 1, rng=seeded_rng(3))
    mallory.start_session(bob.address, bob.generate_prekeys(1, 1))
    envelope = mallory.seal(bob.address, b"i am alice", cert_for(server, alice))
    with pytest.raises(DecryptionError):
        bob.open_sealed(envelope, root.public, NOW)


def test_the_envelope_refuses_a_certificate_of_another_key_than_the_one_that_sealed_it(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    """``sealed.open_envelope`` itself, not only the session behind it (which the test above reaches
    first): the static layer proves who sealed the envelope, and the certificate inside must name
    that key, as libsignal's sealed_sender_decrypt_to_usmc refuses "sender certificate key does not
    match message key". Here the inner message is no session message at all."""
    alice, bob, root, server = world
    mallory = Device("mallory", 1, rng=seeded_rng(3))
    envelope = sealed.seal(mallory.secrets.identity, bob.identity_key, cert_for(server, alice), b"anything")
    with pytest.raises(DecryptionError):
        sealed.open_envelope(bob.secrets.identity, envelope, root.public, NOW)
    own = sealed.seal(mallory.secrets.identity, bob.identity_key, cert_for(server, mallory), b"anything")
    certificate, inner = sealed.open_envelope(bob.secrets.identity, own, root.public, NOW)
    assert (certificate.sender, certificate.identity_key, inner) == (
        "mallory",
        mallory.identity_key,
        b"anything",
    )


def test_a_server_certificate_under_a_revoked_key_id_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    """libsignal's ``ServerCertificate::validate`` refuses a key id in REVOKED_SERVER_CERTIFICATE_KEY_IDS
    (sealed_sender.rs: 0xDEADC357, its test id) before it checks the trust root's signature: a
    certificate the trust root did sign, under that id, opens nothing."""
    alice, bob, root, _server = world
    # a ServerSigningKey refuses the id (the next test), so the certificate is signed by hand
    private = bytes(range(1, 33))
    server_cert = root.certify(0xDEADC357, Ed25519Signer(private).public)
    unsigned = SenderCertificate("alice", 1, alice.identity_key, NOW + 10, server_cert, b"")
    cert = dataclasses.replace(unsigned, signature=Ed25519Signer(private).sign(unsigned.body()))
    assert server_cert.key_id in REVOKED_SERVER_KEY_IDS
    with pytest.raises(CertificateError, match="server certificate: key id 0xdeadc357 is revoked"):
        cert.verify(root.public, NOW)
    with pytest.raises(DecryptionError):
        bob.open_sealed(alice.seal(bob.address, b"x", cert.encode()), root.public, NOW)
    assert not bob.has_session(alice.address)
    # the same key under another id is taken
    good = ServerSigningKey.create(root, 0xDEADC356, bytes(range(1, 33)))
    envelope = alice.seal(bob.address, b"y", good.issue("alice", 1, alice.identity_key, NOW + 10).encode())
    assert bob.open_sealed(envelope, root.public, NOW) == (alice.address, b"y")


def test_a_server_signing_key_under_a_revoked_key_id_is_refused_when_it_is_made() -> None:
    """Every device refuses a server certificate under a revoked key id, so a relay whose key had one
    would issue sender certificates that open nothing: ServerSigningKey refuses the id when it is made
    (create, before the trust root signs, and from a certificate already signed), naming it."""
    rng = seeded_rng(5)
    root = TrustRoot(rng(32))
    private = rng(32)
    for key_id in sorted(REVOKED_SERVER_KEY_IDS):
        with pytest.raises(CertificateError, match=f"server signing key: key id {key_id:#x} is revoked"):
            ServerSigningKey.create(root, key_id, private)
        signed = root.certify(key_id, Ed25519Signer(private).public)
        with pytest.raises(CertificateError, match=f"server signing key: key id {key_id:#x} is revoked"):
            ServerSigningKey(private, signed)
    with pytest.raises(CertificateError, match="key id 0xdeadc357 is revoked"):
        ServerIdentity.generate(rng, key_id=0xDEADC357)
    # the ids next to it are taken
    for key_id in (0xDEADC356, 0xDEADC358):
        assert ServerSigningKey.create(root, key_id, private).certificate.key_id == key_id


def test_a_sealed_message_from_this_very_device_is_refused_as_a_self_send(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    """libsignal's ``sealed_sender_decrypt`` refuses a certificate naming the recipient's own account
    and device id (``SealedSenderSelfSend``, "the message came from this exact client"). Here: the
    phone alice.1 had before she registered again under the same address seals to the new one, which
    read it as a message from itself. Another device of the same account is no self-send. The refusal
    is libsignal's own error, not a decryption failure (the envelope opened and its certificate
    checked), and it changes nothing."""
    _alice, _bob, root, server = world
    old, new = Device("alice", 1, rng=seeded_rng(5)), Device("alice", 1, rng=seeded_rng(6))
    old.start_session(new.address, new.generate_prekeys(1, 1))
    state = new.to_dict()
    envelope = old.seal(new.address, b"from myself?", cert_for(server, old))
    try:
        new.open_sealed(envelope, root.public, NOW)
    except DecryptionError:
        pytest.fail("a self-send was refused as a decryption failure")
    except SealedSenderSelfSend as refused:
        assert (refused.account, refused.device) == ("alice", 1) and "self-send" in str(refused)
    else:
        pytest.fail("a sealed message from this very device was read")
    assert not new.has_session(old.address) and new.to_dict() == state
    assert new.sealed_replayed(envelope, root.public, NOW) is False
    with pytest.raises(DecryptionError) as forged:  # a forgery of it: the one DecryptionError
        new.open_sealed(envelope[:-1] + bytes((envelope[-1] ^ 1,)), root.public, NOW)
    assert type(forged.value) is DecryptionError

    from relaysim.clients import sealed

    envelope = sealed.seal(old.secrets.identity, new.identity_key, cert_for(server, old), b"inner")
    opened = sealed.open_envelope(new.secrets.identity, envelope, root.public, NOW, local=("alice", 2))
    assert (opened[0].sender, opened[0].device, opened[1]) == ("alice", 1, b"inner")
    with pytest.raises(SealedSenderSelfSend):
        sealed.open_envelope(new.secrets.identity, envelope, root.public, NOW, local=("alice", 1))
    linked = Device("alice", 2, rng=seeded_rng(7))
    linked.start_session(new.address, new.generate_prekeys(1, 1))
    sent = linked.seal(new.address, b"from my other phone", cert_for(server, linked))
    assert new.open_sealed(sent, root.public, NOW) == (linked.address, b"from my other phone")


@pytest.mark.parametrize("device", [0, 128, 2**32 - 1])
def test_a_device_id_outside_libsignals_1_to_127_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey], device: int
) -> None:
    """libsignal's DeviceId holds 1 to 127 (``DeviceId::new``, rust/core/src/address.rs) and its
    ``SenderCertificate::deserialize`` refuses a sender device that is not one: refused here too, when
    a certificate is issued and when one is read (a certificate signed by the server key all the same);
    127 is taken."""
    alice, _bob, root, server = world
    with pytest.raises(CertificateError, match=f"device must be an integer from 1 to 127, got {device}"):
        server.issue("alice", device, alice.identity_key, NOW + 60)
    unsigned = SenderCertificate("alice", device, alice.identity_key, NOW + 60, server.certificate, b"")
    signed = dataclasses.replace(unsigned, signature=server._key.sign(unsigned.body()))
    with pytest.raises(CertificateError, match=f"device must be an integer from 1 to 127, got {device}"):
        SenderCertificate.decode(signed.encode())
    last = server.issue("alice", 127, alice.identity_key, NOW + 60)
    SenderCertificate.decode(last.encode()).verify(root.public, NOW)


@pytest.mark.parametrize("sender", ["", "x" * 129, "ali\nce", "\x00"])
def test_a_sender_that_is_no_account_name_is_refused(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey], sender: str
) -> None:
    """The certificate's sender is an account (docs/protocol.md: 1-128 printable characters, what the
    relay takes as one). libsignal's SenderCertificate checks no form of its service id or E.164
    number; an account here is neither, so its own form is what is checked, at decode and at issue."""
    alice, bob, root, server = world
    cert = server.issue("alice", 1, alice.identity_key, NOW + 10)
    forged = dataclasses.replace(cert, sender=sender)
    with pytest.raises(CertificateError, match="sender must be an account name of 1 to 128 printable"):
        SenderCertificate.decode(forged.encode())
    with pytest.raises(CertificateError, match="sender must be an account name of 1 to 128 printable"):
        server.issue(sender, 1, alice.identity_key, NOW + 10)
    with pytest.raises(DecryptionError):
        bob.open_sealed(alice.seal(bob.address, b"x", forged.encode()), root.public, NOW)
    SenderCertificate.decode(dataclasses.replace(cert, sender="x" * 128).encode())  # the longest taken


def test_certificate_must_match_the_inner_session(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    """A valid certificate of Mallory's own wrapping a message on a session Alice started is refused."""
    alice, bob, root, server = world
    mallory = Device("mallory", 1, rng=seeded_rng(3))
    inner = alice.encrypt(bob.address, b"x")
    from relaysim.clients import sealed

    # sealed by Mallory's key with Mallory's certificate, but the inner message claims Alice's identity
    envelope = sealed.seal(mallory.secrets.identity, bob.identity_key, cert_for(server, mallory), inner)
    with pytest.raises(DecryptionError):
        bob.open_sealed(envelope, root.public, NOW)


def test_tampered_envelope_is_refused_everywhere(
    world: tuple[Device, Device, TrustRoot, ServerSigningKey],
) -> None:
    alice, bob, root, server = world
    envelope = alice.seal(bob.address, b"x", cert_for(server, alice))
    for pos in range(0, len(envelope), 7):
        forged = bytearray(envelope)
        forged[pos] ^= 0x01
        with pytest.raises(DecryptionError):
            bob.open_sealed(bytes(forged), root.public, NOW)
    assert bob.open_sealed(envelope, root.public, NOW)[1] == b"x"


def test_the_envelope_is_the_documented_layout_byte_for_byte() -> None:
    """clients/sealed.py's docstring, re-derived from ``cryptography``'s X25519, HKDF, AES-CBC and the
    standard library's HMAC: the two layers of libsignal's sealed sender v1 (sealed_sender.rs,
    ``EphemeralKeys`` and ``StaticKeys``: salt "UnidentifiedDelivery" ‖ recipient ‖ ephemeral, then
    chain key ‖ first ciphertext), each sealed with the Double Ratchet's ENCRYPT (§5.2)."""
    import hashlib
    import hmac

    import msgpack
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from relaysim.clients import sealed
    from relaysim.clients.keys import IdentityKeyPair

    rng = seeded_rng(7)
    sender, recipient, e_private = IdentityKeyPair(rng(32)), IdentityKeyPair(rng(32)), rng(32)
    certificate, inner = b"certificate bytes", b"\x01 a session ciphertext"

    def encrypt(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:  # §5.2 ENCRYPT, full tag
        okm = HKDF(hashes.SHA256(), 80, salt=bytes(32), info=b"relaysim_SealedSender_Message").derive(mk)
        pad = 16 - len(plaintext) % 16
        enc = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:])).encryptor()
        ct = enc.update(plaintext + bytes([pad]) * pad) + enc.finalize()
        return ct + hmac.new(okm[32:64], ad + ct, hashlib.sha256).digest()

    def dh(private: bytes, public: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )

    ik_a, ik_b = sender.public, recipient.public
    e_public = X25519PrivateKey.from_private_bytes(e_private).public_key().public_bytes_raw()
    okm = HKDF(
        hashes.SHA256(),
        64,
        salt=b"UnidentifiedDelivery" + ik_b + e_public,
        info=b"relaysim_SealedSender_Ephemeral",
    ).derive(dh(e_private, ik_b))
    chain_key, k1 = okm[:32], okm[32:]
    c1 = encrypt(k1, ik_a, e_public + ik_b)
    k2 = HKDF(hashes.SHA256(), 32, salt=chain_key + c1, info=b"relaysim_SealedSender_Static").derive(
        dh(sender.private, ik_b)
    )
    c2 = encrypt(k2, msgpack.packb([certificate, inner], use_bin_type=True), e_public + c1)
    expected = b"\x01" + e_public + c1 + c2

    draws = iter([e_private])
    assert sealed.seal(sender, ik_b, certificate, inner, rng=lambda n: next(draws)) == expected
    assert len(c1) == 80


# --- the time a recipient checks the certificate at ---------------------------------------------------


def _sealed_to_bob_then_held(hours: float) -> tuple[DeviceAgent, DeviceAgent, wire.Envelope]:
    """Alice sends Bob a sealed message; the relay holds it for him ``hours`` (he is offline)."""
    w = World()
    alice, bob = w.join("alice"), w.join("bob")
    alice.send_text("bob", b"sent while he was away", sealed=True)
    w.pump()
    (env,) = [e for agent, e in w.pushes if agent is bob]
    assert env.sealed
    w.clock.now += hours * 3600
    return alice, bob, env


@pytest.mark.parametrize("hours", [1, 23, 25, 24 * 7])
def test_a_sealed_message_held_past_its_certificates_expiry_is_read(hours: float) -> None:
    """The relay's certificates last DEFAULT_CERTIFICATE_TTL (a day). Signal's clients check the
    sender certificate at the envelope's server timestamp (libsignal-service's SignalServiceCipher
    gives sealedSessionCipher.decrypt the envelope's server-received timestamp), not at the time they
    read it: a message the relay held while its recipient was offline longer than the certificate had
    left is read. It was refused as undecryptable once the recipient's clock passed the expiry."""
    _alice, bob, env = _sealed_to_bob_then_held(hours)
    events = list(bob.handle(wire.Deliver(id=0, envelope=env)))
    assert [(type(e).__name__, getattr(e, "plaintext", None)) for e in events] == [
        ("Received", b"sent while he was away")
    ]


def test_a_sealed_message_the_relay_took_after_its_certificates_expiry_is_refused() -> None:
    """The check still runs, at the relay's time: an envelope stamped after the certificate's last
    second is undecryptable, and one stamped at that second (libsignal: expired only after it) reads."""
    alice, bob, env = _sealed_to_bob_then_held(0)
    assert alice.certificate is not None
    expires = SenderCertificate.decode(alice.certificate).expires  # the one her envelope carries
    late = dataclasses.replace(env, timestamp=(expires + 1) * 1000)
    events = list(bob.handle(wire.Deliver(id=0, envelope=late)))
    assert [type(e) for e in events] == [Undecryptable]
    last = dataclasses.replace(env, id=bytes(len(env.id)), timestamp=expires * 1000 + 999)
    events = list(bob.handle(wire.Deliver(id=0, envelope=last)))
    assert [type(e) for e in events] == [Received]
