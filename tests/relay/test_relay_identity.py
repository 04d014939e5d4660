"""relay.identity: XEdDSA verification against two signers, and the server's certificate chain."""

from __future__ import annotations

import dataclasses
import random

import pytest
import xeddsa as libxeddsa  # PyPI bindings to libxeddsa: an independent Montgomery→Edwards conversion
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients._xeddsa import xeddsa_sign
from relaysim.relay import wire
from relaysim.relay.certificates import CertificateError, SenderCertificate, ServerSigningKey, TrustRoot
from relaysim.relay.identity import ServerIdentity, XEdDSAPublicKey, xeddsa_verify

P = 2**255 - 19


def _keypair(seed: int) -> tuple[bytes, bytes]:
    private = X25519PrivateKey.from_private_bytes(random.Random(seed).randbytes(32))
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


@given(st.integers(0, 2**32), st.binary(max_size=200), st.binary(min_size=64, max_size=64))
def test_signatures_from_clients_xeddsa_verify(seed: int, message: bytes, z: bytes) -> None:
    private, public = _keypair(seed)
    signature = xeddsa_sign(private, message, z)
    assert xeddsa_verify(public, message, signature)
    assert not xeddsa_verify(public, message + b"\x00", signature)
    flipped = bytearray(signature)
    flipped[seed % 64] ^= 1 << (seed % 8)
    assert not xeddsa_verify(public, message, bytes(flipped))
    other = _keypair(seed + 1)[1]
    assert not xeddsa_verify(other, message, signature)


@given(st.integers(0, 2**32))
def test_edwards_form_matches_libxeddsa(seed: int) -> None:
    _, public = _keypair(seed)
    key = XEdDSAPublicKey.from_x25519(public)
    assert key is not None
    ours = key.edwards
    assert ours == libxeddsa.curve25519_pub_to_ed25519_pub(public, False)
    assert ours[31] & 0x80 == 0  # sign bit 0


@pytest.mark.parametrize(
    "u",
    [P, P + 1, 2**255, 2**256 - 1, 2],  # u >= p is refused by the spec; u = 2 gives a y with no point
)
def test_keys_without_an_edwards_form_verify_nothing(u: int) -> None:
    public = u.to_bytes(32, "little")
    assert XEdDSAPublicKey.from_x25519(public) is None
    assert not xeddsa_verify(public, b"m", bytes(64))


def test_u_minus_one_converts_like_u_one() -> None:
    # XEdDSA §2.1 defines inv(0) = 0, so convert_mont(p − 1) is y = 0, the same point as u = 1.
    minus_one = XEdDSAPublicKey.from_x25519((P - 1).to_bytes(32, "little"))
    one = XEdDSAPublicKey.from_x25519((1).to_bytes(32, "little"))
    assert minus_one is not None and one is not None
    assert minus_one.edwards == one.edwards == bytes(32)
    assert minus_one.edwards == libxeddsa.curve25519_pub_to_ed25519_pub((P - 1).to_bytes(32, "little"), False)


def test_wrong_lengths_are_false_not_errors() -> None:
    private, public = _keypair(1)
    signature = xeddsa_sign(private, b"m", bytes(64))
    assert not xeddsa_verify(public[:31], b"m", signature)
    assert not xeddsa_verify(public, b"m", signature[:63])


def test_sender_certificate_chain_verifies_with_the_trust_root() -> None:
    rng = random.Random(5).randbytes
    identity = ServerIdentity.generate(rng)
    _, device_key = _keypair(9)
    certificate = SenderCertificate.decode(identity.issue("alice", 2, device_key, 1_000).encode())
    certificate.verify(identity.trust_root_public, now=999)
    assert (certificate.sender, certificate.device, certificate.identity_key) == ("alice", 2, device_key)
    certificate.verify(identity.trust_root_public, now=1_000)  # its last second (libsignal: not after it)
    with pytest.raises(CertificateError, match="expired"):
        certificate.verify(identity.trust_root_public, now=1_001)
    stranger = ServerIdentity.generate(random.Random(6).randbytes)
    with pytest.raises(CertificateError, match="signature"):
        certificate.verify(stranger.trust_root_public, now=0)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("device", True, "device must be an integer from 1"),
        ("device", 0, "device must be an integer from 1"),
        ("expires", True, "expires must be an integer from 0"),
        ("expires", False, "expires must be an integer from 0"),
        ("expires", -1, "expires must be an integer from 0"),
        ("key_id", True, "key_id must be an integer from 0"),
    ],
)
def test_a_certificate_field_of_the_wrong_type_is_refused_though_signed(
    field: str, value: object, error: str
) -> None:
    """msgpack's true and false unpack as Python bools, ints equal to 1 and 0: a sender certificate
    whose device was true was taken for device 1 (and checked against device 1), one whose expiry was
    true for an expiry at second 1. The signature covers the bytes as sent, so it verifies: the
    decoder must refuse the field, naming it."""
    rng = random.Random(7).randbytes
    key_id = value if field == "key_id" else 1
    server = ServerSigningKey.create(TrustRoot(rng(32)), key_id, rng(32))  # type: ignore[arg-type]
    device = value if field == "device" else 2
    expires = value if field == "expires" else 1_000
    _, device_key = _keypair(9)
    # signed by the server key as ``issue`` signs, which itself refuses such a device
    unsigned = SenderCertificate("alice", device, device_key, expires, server.certificate, b"")  # type: ignore[arg-type]
    encoded = dataclasses.replace(unsigned, signature=server._key.sign(unsigned.body())).encode()
    with pytest.raises(CertificateError, match=error):
        SenderCertificate.decode(encoded)
    if field == "device":
        with pytest.raises(CertificateError, match=error):
            server.issue("alice", device, device_key, expires)  # type: ignore[arg-type]


@pytest.mark.parametrize("sender", ["s" * 300, "s" * 129, "", "a\nb"])
def test_a_sender_that_is_no_account_is_quoted_by_the_relays_one_rule(sender: str) -> None:
    """A sender certificate's sender that is no account name is quoted as the relay quotes anything it
    was given (wire.quoted: whole up to 60 characters, else a closed quote of its beginning, "…" and its
    length); it was cut at 40 characters, then "..." and the length said again."""
    rng = random.Random(7).randbytes
    server = ServerSigningKey.create(TrustRoot(rng(32)), 1, rng(32))
    _, device_key = _keypair(9)
    with pytest.raises(CertificateError) as refused:
        server.issue(sender, 2, device_key, 1_000)
    message = str(refused.value)
    assert message.endswith(f"printable characters, got {wire.quoted(sender)}"), message
    unsigned = SenderCertificate(sender, 2, device_key, 1_000, server.certificate, b"")
    with pytest.raises(CertificateError) as refused:
        SenderCertificate.decode(dataclasses.replace(unsigned, signature=b"s" * 64).encode())
    assert str(refused.value) == message


def test_a_certificate_field_a_peer_made_long_is_quoted_by_the_relays_one_rule() -> None:
    """A field of a certificate that is not the integer it must be was shown whole (a device of 5,000
    characters, in a certificate from an envelope anyone may send): now quoted as wire.quoted does."""
    rng = random.Random(7).randbytes
    server = ServerSigningKey.create(TrustRoot(rng(32)), 1, rng(32))
    _, device_key = _keypair(9)
    device = "d" * 5000
    unsigned = SenderCertificate("alice", device, device_key, 1_000, server.certificate, b"")  # type: ignore[arg-type]
    with pytest.raises(CertificateError) as refused:
        SenderCertificate.decode(dataclasses.replace(unsigned, signature=b"s" * 64).encode())
    message = str(refused.value)
    assert message.endswith(f"device must be an integer from 1 to 127, got {wire.quoted(device)}"), message[
        :300
    ]
    assert len(message) < 200


def test_server_identity_is_deterministic_under_a_seeded_rng() -> None:
    a = ServerIdentity.generate(random.Random(1).randbytes)
    b = ServerIdentity.generate(random.Random(1).randbytes)
    assert a.trust_root_public == b.trust_root_public
    assert a.server_certificate == b.server_certificate


@given(st.integers(1, P - 1))
def test_the_square_test_is_eulers_criterion(a: int) -> None:
    """relay.identity decides on_curve by the Jacobi symbol; for the prime p that is Euler's criterion."""
    from relaysim.relay.identity import _is_square

    assert _is_square(a) is (pow(a, (P - 1) // 2, P) == 1)
    assert _is_square(a * a % P)  # every square is one


def test_a_valid_signature_is_settled_by_libsodium_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay checks three XEdDSA signatures per registration: libsodium's half-price check
    settles every valid one; OpenSSL is only asked about what libsodium refuses."""
    from relaysim.relay import _primitives

    class NoOpenSSL:
        @staticmethod
        def from_public_bytes(_public: bytes) -> None:
            raise AssertionError("OpenSSL was asked about a signature libsodium accepts")

    k = bytes(range(32))
    u = X25519PrivateKey.from_private_bytes(k).public_key().public_bytes_raw()
    signature = xeddsa_sign(k, b"challenge", bytes(64))
    monkeypatch.setattr(_primitives, "Ed25519PublicKey", NoOpenSSL)
    assert xeddsa_verify(u, b"challenge", signature)


def test_signatures_checked_ahead_are_taken_once_and_only_whole() -> None:
    from relaysim.relay.identity import use_verified_ahead, verified_ahead

    a, b = (bytes([1]) * 32, b"m", bytes(64)), (bytes([2]) * 32, b"n", bytes(64))
    assert verified_ahead([a]) is False  # none installed
    table = {a: True}
    assert use_verified_ahead(table) is None
    try:
        assert verified_ahead([]) is False  # nothing to check is not "checked"
        assert verified_ahead([a, b]) is False  # not every one held: the relay checks them all itself
        assert table == {}  # (and what was held is gone: each answer is taken once)
        table[a] = True
        assert verified_ahead([a]) is True and verified_ahead([a]) is False
        assert verified_ahead([(bytearray(32), b"m", bytes(64))]) is False  # type: ignore[list-item]
    finally:
        assert use_verified_ahead(None) is table
