"""Sealed sender: the relay cannot see the sender; the recipient checks the whole certificate chain."""

from __future__ import annotations

import pytest

from relaysim.clients.errors import DecryptionError
from relaysim.clients.session import Device
from relaysim.relay.certificates import ServerSigningKey, TrustRoot
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
    envelope = alice.seal(bob.address, b"x", cert_for(server, alice, expires=NOW))
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
