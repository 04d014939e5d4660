"""XEdDSA (clients._xeddsa) against two independent implementations.

* libxeddsa, through the PyPI ``xeddsa`` bindings (libsodium/ref10 underneath);
* OpenSSL, through ``cryptography`` (X25519 public keys, Ed25519 verification).

The ``xeddsa`` package has no one-call XEdDSA: its signing primitive is
``ed25519_priv_sign(scalar, msg, nonce)`` (Ed25519 with a raw scalar and XEdDSA's hash1 nonce
derivation), ``priv_force_sign(k, False)`` performs calculate_key_pair's negation, and
verification is ``ed25519_verify(sig, curve25519_pub_to_ed25519_pub(u, False), msg)``.
"""

from __future__ import annotations

import pytest
import xeddsa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relaysim.clients import _xeddsa
from relaysim.clients._xeddsa import calculate_key_pair, convert_mont, xeddsa_sign, xeddsa_verify

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493

keys = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=300)
nonces = st.binary(min_size=64, max_size=64)

EXAMPLES = settings(max_examples=50, deadline=None)


def clamp(k: bytes) -> bytes:
    b = bytearray(k)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def x25519_public(k: bytes) -> bytes:
    """The Montgomery public key u, computed by OpenSSL."""
    return X25519PrivateKey.from_private_bytes(k).public_key().public_bytes_raw()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- curve arithmetic ----------------------------------------------------------------------


def _n(n: int) -> bytes:
    return n.to_bytes(32, "little")


def test_base_point_and_group_order() -> None:
    # RFC 8032 §5.1: B encodes as 0x58 followed by 31 bytes of 0x66.
    assert _xeddsa._base_mult(_n(1)) == bytes.fromhex("58" + "66" * 31)
    # (q − 1)B = −B, whose encoding differs from B's only in the sign; (q + 1)B = B.
    assert _xeddsa._base_mult(_n(Q - 1)) == bytes.fromhex("58" + "66" * 30 + "e6")
    assert _xeddsa._base_mult(_n(Q + 1)) == _xeddsa._base_mult(_n(1))
    # qB is the identity, which libsodium refuses to return: never a silent identity R.
    with pytest.raises(ValueError, match="0 mod q"):
        _xeddsa._base_mult(_n(Q))


@EXAMPLES
@given(st.integers(min_value=1, max_value=Q - 1), st.integers(min_value=1, max_value=Q - 1))
def test_base_mult_is_a_homomorphism(m: int, n: int) -> None:
    # (m + n)B = mB + nB: the fixed-base multiplication against libsodium's point addition.
    assume((m + n) % Q)
    assert _xeddsa._base_mult(_n((m + n) % Q)) == _xeddsa._point_add(
        _xeddsa._base_mult(_n(m)), _xeddsa._base_mult(_n(n))
    )


# --- key conversion ------------------------------------------------------------------------


@EXAMPLES
@given(keys)
def test_calculate_key_pair_matches_libxeddsa(k: bytes) -> None:
    public, a_bytes = calculate_key_pair(k)
    a = int.from_bytes(a_bytes, "little")
    u = x25519_public(k)
    assert u == xeddsa.priv_to_curve25519_pub(k)
    assert 0 <= a < Q
    assert public[31] & 0x80 == 0
    assert public == xeddsa.curve25519_pub_to_ed25519_pub(u, False) == convert_mont(u)
    # libxeddsa's priv → Ed25519 public keeps the natural sign bit; ours forces it to 0.
    natural = xeddsa.priv_to_ed25519_pub(k)
    assert public == natural[:31] + bytes((natural[31] & 0x7F,))
    # ... and a is negated exactly when that sign bit was 1.
    k_mod_q = int.from_bytes(clamp(k), "little") % Q
    assert a == ((Q - k_mod_q) % Q if natural[31] & 0x80 else k_mod_q)
    assert a == int.from_bytes(xeddsa.priv_force_sign(k, False), "little") % Q


@EXAMPLES
@given(st.binary(min_size=32, max_size=32))
def test_convert_mont_matches_libxeddsa(u: bytes) -> None:
    # Any 32 bytes, on the curve or not, top bit set or not: both mask the top bit.
    assert convert_mont(u) == xeddsa.curve25519_pub_to_ed25519_pub(u, False)


def test_convert_mont_edge_cases() -> None:
    zero = bytes(32)
    assert convert_mont((1).to_bytes(32, "little")) == zero  # (1 − 1)/2
    assert convert_mont((P - 1).to_bytes(32, "little")) == zero  # inv(0) = 0, per the spec
    assert convert_mont(zero) == (P - 1).to_bytes(32, "little")  # −1/1
    u = (9).to_bytes(32, "little")
    assert convert_mont(flip(u, 255)) == convert_mont(u)
    with pytest.raises(ValueError):
        convert_mont(bytes(31))


# --- signing -------------------------------------------------------------------------------


@EXAMPLES
@given(keys, messages, nonces)
def test_signature_is_byte_identical_to_libxeddsa(k: bytes, message: bytes, z: bytes) -> None:
    # libxeddsa's ed25519_priv_sign given the scalar a computes exactly r = hash1(a ‖ M ‖ Z),
    # R = rB, h = SHA-512(R ‖ A ‖ M), s = r + ha: the whole of xeddsa_sign after calculate_key_pair.
    _, a = calculate_key_pair(k)
    assert xeddsa_sign(k, message, z) == xeddsa.ed25519_priv_sign(a, message, z)


@EXAMPLES
@given(keys, messages, nonces)
def test_our_signatures_verify_with_libxeddsa(k: bytes, message: bytes, z: bytes) -> None:
    signature = xeddsa_sign(k, message, z)
    ed_public = xeddsa.curve25519_pub_to_ed25519_pub(x25519_public(k), False)
    assert xeddsa.ed25519_verify(signature, ed_public, message)
    assert not xeddsa.ed25519_verify(signature, ed_public, message + b"\x00")


@EXAMPLES
@given(keys, messages, nonces)
def test_our_signatures_verify_with_openssl_ed25519(k: bytes, message: bytes, z: bytes) -> None:
    u = x25519_public(k)
    signature = xeddsa_sign(k, message, z)
    Ed25519PublicKey.from_public_bytes(convert_mont(u)).verify(signature, message)  # raises if bad
    assert xeddsa_verify(u, message, signature)


@EXAMPLES
@given(keys, messages, nonces)
def test_libxeddsa_signatures_verify_with_ours(k: bytes, message: bytes, z: bytes) -> None:
    u = x25519_public(k)
    theirs = xeddsa.ed25519_priv_sign(xeddsa.priv_force_sign(k, False), message, z)
    assert xeddsa_verify(u, message, theirs)
    # A plain signature by the un-negated clamped key is valid for the natural Edwards key only,
    # so XEdDSA must reject it whenever that key's sign bit is 1.
    plain = xeddsa.ed25519_priv_sign(clamp(k), message, z)
    natural_sign = xeddsa.priv_to_ed25519_pub(k)[31] >> 7
    assert xeddsa_verify(u, message, plain) == (natural_sign == 0)


@EXAMPLES
@given(keys, messages, nonces, nonces)
def test_signing_is_deterministic_in_the_nonce(k: bytes, message: bytes, z1: bytes, z2: bytes) -> None:
    assume(z1 != z2)
    first = xeddsa_sign(k, message, z1)
    assert xeddsa_sign(k, message, z1) == first
    assert xeddsa_sign(clamp(k), message, z1) == first  # k is clamped before use
    second = xeddsa_sign(k, message, z2)
    assert second != first
    assert second[:32] != first[:32]  # a fresh R, not just a different s
    assert xeddsa_verify(x25519_public(k), message, second)


def test_sign_validates_lengths() -> None:
    with pytest.raises(ValueError, match="x25519_private"):
        xeddsa_sign(bytes(31), b"m", bytes(64))
    with pytest.raises(ValueError, match="x25519_private"):
        xeddsa_sign(bytes(33), b"m", bytes(64))
    with pytest.raises(ValueError, match="random64"):
        xeddsa_sign(bytes(32), b"m", bytes(63))
    with pytest.raises(ValueError, match="random64"):
        xeddsa_sign(bytes(32), b"m", bytes(65))


# --- verification rejects ------------------------------------------------------------------


@EXAMPLES
@given(keys, st.binary(min_size=1, max_size=300), nonces, st.data())
def test_any_flipped_bit_fails(k: bytes, message: bytes, z: bytes, data: st.DataObject) -> None:
    u = x25519_public(k)
    signature = xeddsa_sign(k, message, z)
    assert xeddsa_verify(u, message, signature)
    which = data.draw(st.sampled_from(["message", "signature", "key"]))
    if which == "message":
        bit = data.draw(st.integers(0, 8 * len(message) - 1))
        assert not xeddsa_verify(u, flip(message, bit), signature)
    elif which == "signature":
        bit = data.draw(st.integers(0, 511))
        assert not xeddsa_verify(u, message, flip(signature, bit))
    else:
        bit = data.draw(st.integers(0, 255))
        assert not xeddsa_verify(flip(u, bit), message, signature)


def test_top_bit_of_u_is_rejected_not_masked() -> None:
    # convert_mont masks bit 255, so without the spec's "u >= p" check this would verify.
    k, message = bytes(range(32)), b"hello"
    u = x25519_public(k)
    signature = xeddsa_sign(k, message, bytes(64))
    assert xeddsa_verify(u, message, signature)
    assert not xeddsa_verify(flip(u, 255), message, signature)


def test_malformed_inputs_return_false() -> None:
    k, message = bytes(range(1, 33)), b"malformed"
    u = x25519_public(k)
    signature = xeddsa_sign(k, message, bytes(range(64)))
    assert xeddsa_verify(u, message, signature)
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    bad_signatures = [
        b"",
        signature[:63],
        signature + b"\x00",
        r + (s + 2**253).to_bytes(32, "little"),  # s >= 2^|q|: the spec's own check
        (P).to_bytes(32, "little") + signature[32:],  # R.y = p
        (2**255 - 1).to_bytes(32, "little") + signature[32:],  # R.y > p
        bytes(64),
        b"\xff" * 64,
    ]
    for bad in bad_signatures:
        assert not xeddsa_verify(u, message, bad), bad.hex()
    # An unreduced s (s + q) passes the spec's 2^|q| test and sB is unchanged: it verifies (§5:
    # "not requiring it to be fully reduced"), though OpenSSL's Ed25519 alone would refuse it.
    assert s + Q < 2**253
    assert xeddsa_verify(u, message, r + (s + Q).to_bytes(32, "little"))
    bad_keys = [
        b"",
        u[:31],
        u + b"\x00",
        (P).to_bytes(32, "little"),
        (P + 1).to_bytes(32, "little"),
        (2**255 - 1).to_bytes(32, "little"),
        b"\xff" * 32,
        bytes(32),  # u = 0, a point of order 2
        (P - 1).to_bytes(32, "little"),  # u = −1: y = 0, not a valid key for this signature
    ]
    for bad in bad_keys:
        assert not xeddsa_verify(bad, message, signature), bad.hex()


def test_verify_with_wrong_key_fails() -> None:
    message = b"who signed this?"
    signature = xeddsa_sign(bytes(range(32)), message, bytes(64))
    assert not xeddsa_verify(x25519_public(bytes(range(1, 33))), message, signature)


def test_cryptography_rejects_what_we_reject() -> None:
    # A sanity check of the test helpers themselves: OpenSSL refuses a tampered signature too.
    k, message = bytes(range(32)), b"x"
    signature = xeddsa_sign(k, message, bytes(64))
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(convert_mont(x25519_public(k))).verify(flip(signature, 3), message)


@pytest.mark.parametrize(
    ("k", "message", "z", "expected"),
    [
        (
            bytes(range(32)),
            b"relaysim known answer",
            bytes(range(64, 128)),
            "b144fe8abd3606afcd371e955fac09fc5336e128301f52c0b828eee9b9381ab2"
            "35d342b3f85a64748a6adceaee030a4e1abf6c70e11379e24878c70c3ac3f30b",
        ),
        (
            bytes(range(100, 132)),
            b"",
            b"\xaa" * 64,
            "99ae099b2309843946fb51c46726bda6899958d9538a38346c5df8b45e1fd3f7"
            "27fcb82c386bd842a0e270c2abd7331752180f0696599f0d6c403738ad85a903",
        ),
    ],
)
def test_signatures_are_byte_identical_to_the_pure_python_signer(
    k: bytes, message: bytes, z: bytes, expected: str
) -> None:
    # Known answers recorded from the earlier pure-Python Edwards arithmetic (same k, M, Z): the
    # move to libsodium changes no signature, so seeded simulations keep their bytes.
    assert xeddsa_sign(k, message, z).hex() == expected


class _NoOpenSSL:
    """Stands in for OpenSSL's Ed25519PublicKey: any use of it fails the test."""

    @staticmethod
    def from_public_bytes(_public: bytes) -> None:
        raise AssertionError("OpenSSL was asked about a signature libsodium accepts")


def test_a_valid_signature_is_settled_by_libsodium_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # the speed of session set-up and registration: libsodium verifies in half OpenSSL's time
    from relaysim.clients import _primitives

    k = bytes(range(32))
    u = X25519PrivateKey.from_private_bytes(k).public_key().public_bytes_raw()
    signature = xeddsa_sign(k, b"signed prekey", bytes(64))
    monkeypatch.setattr(_primitives, "Ed25519PublicKey", _NoOpenSSL)
    assert xeddsa_verify(u, b"signed prekey", signature)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=64), st.data())
def test_ed25519_verify_gives_openssls_answer(seed: bytes, message: bytes, data: st.DataObject) -> None:
    """libsodium first, OpenSSL for what it refuses: the answer is OpenSSL's, for valid signatures,
    tampered ones, and keys libsodium refuses outright (small order, non-canonical)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from relaysim.clients._primitives import ed25519_verify

    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes_raw()
    signature = key.sign(message)
    small_order = [bytes(32), (1).to_bytes(32, "little"), bytes(31) + b"\x80", b"\xff" * 31 + b"\x7f"]
    public = data.draw(st.sampled_from([public, *small_order]))
    flip = data.draw(st.none() | st.integers(0, 8 * 64 - 1))
    if flip is not None:
        signature = bytearray(signature)
        signature[flip // 8] ^= 1 << (flip % 8)
        signature = bytes(signature)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        openssl = True
    except (InvalidSignature, ValueError):
        openssl = False
    assert ed25519_verify(public, message, signature) is openssl
