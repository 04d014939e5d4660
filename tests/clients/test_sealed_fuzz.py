"""Fuzzing the sealed sender and certificate parsers (and the prekey message's, and the msgpack reader they share): whatever the bytes (garbage, any msgpack value, a good
encoding with bytes changed, content a sender sealed on purpose), a parse or check fails only with its one
documented exception: ``DecryptionError`` from ``clients.sealed.open_envelope`` (``SealedSenderSelfSend``
only for a message from the recipient's own device, not asked for here), ``CertificateError`` from
``relay.certificates``' ``decode`` and ``verify``."""

from __future__ import annotations

import contextlib

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import framing, sealed, spec
from relaysim.clients.errors import DecryptionError
from relaysim.clients.keys import IdentityKeyPair
from relaysim.relay import wire
from relaysim.relay.certificates import (
    CertificateError,
    SenderCertificate,
    ServerCertificate,
    ServerSigningKey,
    TrustRoot,
)
from tests.conftest import seeded_rng

NOW = 1_000_000
_rng = seeded_rng(7)
ROOT = TrustRoot(_rng(32))
SERVER = ServerSigningKey.create(ROOT, 1, _rng(32))
ALICE = IdentityKeyPair(_rng(32))
BOB = IdentityKeyPair(_rng(32))
GOOD_CERT = SERVER.issue("alice", 1, ALICE.public, NOW + 3600).encode()
GOOD_SERVER_CERT = SERVER.certificate.encode()

# msgpack values, and bytes msgpack reads oddly or not at all: an ext of a type it reserves, a timestamp
# that is not one, the byte 0xc1, a str not UTF-8, a key that is an array, a length past the end.
ODD = [
    b"\xd4\xfe\x00",
    b"\xd5\xff\x00\x00",
    b"\xc1",
    b"\xa1\xff",
    b"\x81\x91\x01\x01",
    b"\xdb\xff\xff\xff\xff",
]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _mutated(good: bytes) -> st.SearchStrategy[bytes]:
    """``good`` with a byte changed, bytes cut off its end, or odd bytes put in at some place."""
    at = st.integers(0, len(good))
    return st.one_of(
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(
            lambda p: good[: p[0]] + bytes([p[1]]) + good[p[0] + 1 :]
        ),
        at.map(lambda n: good[:n]),
        st.tuples(at, st.sampled_from(ODD)).map(lambda p: good[: p[0]] + p[1] + good[p[0] :]),
    )


def _any_bytes(good: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
        st.lists(values, min_size=1, max_size=6).map(lambda v: msgpack.packb(v, use_bin_type=True)),
        _mutated(good),
    )


def _fields(n: int) -> st.SearchStrategy[bytes]:
    """An array of ``n`` values of any type (the shape a certificate has, the wrong contents)."""
    return st.lists(values, min_size=n, max_size=n).map(lambda v: msgpack.packb(v, use_bin_type=True))


def _check_certificate(data: bytes) -> None:
    for decode in (SenderCertificate.decode, ServerCertificate.decode):
        try:
            cert = decode(data)
        except CertificateError:
            continue
        try:
            if isinstance(cert, SenderCertificate):
                cert.verify(ROOT.public, NOW)
            else:
                cert.verify(ROOT.public)
        except CertificateError:
            pass


@given(_any_bytes(GOOD_CERT) | _any_bytes(GOOD_SERVER_CERT) | _fields(3))
def test_a_certificate_that_is_not_one_is_refused_with_certificate_error(data: bytes) -> None:
    _check_certificate(data)


@given(_fields(5), st.binary(max_size=70))
def test_a_sender_certificate_body_of_any_values_is_refused_with_certificate_error(
    body: bytes, signature: bytes
) -> None:
    _check_certificate(msgpack.packb([body, signature], use_bin_type=True))


def _seal_content(content: bytes, rng_seed: int) -> bytes:
    """An envelope ALICE seals to BOB holding ``content`` as sealed.seal makes one (its layout:
    tests/clients/test_sealed.py), whatever ``content`` is: what a sender who means harm can send."""
    e = spec.generate_dh(seeded_rng(rng_seed))
    chain_key, k1 = sealed._ephemeral_keys(e.dh(BOB.public), BOB.public, e.public)
    c1 = spec.encrypt(k1, ALICE.public, e.public + BOB.public, sealed._AEAD_INFO)
    k2 = sealed._static_key(ALICE.pair.dh(BOB.public), chain_key, c1)
    c2 = spec.encrypt(k2, content, e.public + c1, sealed._AEAD_INFO)
    return bytes((sealed.VERSION,)) + e.public + c1 + c2


def _open(envelope: bytes) -> None:
    with contextlib.suppress(DecryptionError):
        sealed.open_envelope(BOB, envelope, ROOT.public, NOW)


def test_content_sealed_as_seal_makes_it_opens() -> None:
    content = msgpack.packb([GOOD_CERT, b"inner"], use_bin_type=True)
    assert sealed.open_envelope(BOB, _seal_content(content, 1), ROOT.public, NOW)[1] == b"inner"


@given(
    st.one_of(
        _any_bytes(msgpack.packb([GOOD_CERT, b"inner"], use_bin_type=True)),
        st.tuples(_any_bytes(GOOD_CERT), values).map(lambda p: msgpack.packb(list(p), use_bin_type=True)),
        _fields(2),
    ),
    st.integers(0, 2**16),
)
def test_sealed_content_of_any_bytes_is_refused_with_decryption_error(content: bytes, seed: int) -> None:
    _open(_seal_content(content, seed))


@given(
    st.one_of(
        st.binary(max_size=400),
        _mutated(sealed.seal(ALICE, BOB.public, GOOD_CERT, b"inner", rng=seeded_rng(3))),
    )
)
def test_an_envelope_of_any_bytes_is_refused_with_decryption_error(envelope: bytes) -> None:
    _open(envelope)


@given(_any_bytes(msgpack.packb([[1] * 6, b"m"], use_bin_type=True)))
def test_a_prekey_message_of_any_bytes_is_refused_with_decryption_error(data: bytes) -> None:
    with contextlib.suppress(DecryptionError):
        framing.parse_ciphertext(bytes((framing.TYPE_PREKEY,)) + data)


@given(_any_bytes(GOOD_CERT))
def test_unpack_value_refuses_what_it_cannot_read_with_msgpack_error_only(data: bytes) -> None:
    """The readers above read through relay.wire.unpack_value: what it cannot read is MsgpackError, and
    nothing else (its search for the place of a fault included)."""
    with contextlib.suppress(wire.MsgpackError):
        wire.unpack_value(data, "x")
