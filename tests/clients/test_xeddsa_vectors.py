"""One XEdDSA verification semantics: the spec's, checked on the same vectors in both packages.

``clients._xeddsa`` and ``relay.identity`` each verify XEdDSA (relay/ never imports clients/, so
the relay keeps its own copy); ``tests/xeddsa_vectors.py`` holds the edge cases and a spec-literal
reference verifier that derives every expected answer. The PyPI ``xeddsa`` package (libxeddsa over
libsodium) is compared too, with its known departures from the spec named one by one. Both of ours
also read libsignal's signatures (its sign bit in bit 255 of s), checked on libsignal's own known
answer at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import xeddsa as libxeddsa
from xeddsa_vectors import (
    VECTORS,
    B,
    P,
    Q,
    Vector,
    convert_mont,
    decode,
    encode,
    mul,
    reference_verify,
    sign_with_scalar,
    y_to_u,
)

from relaysim.clients import _xeddsa
from relaysim.relay import identity

Verify = Callable[[bytes, bytes, bytes], bool]


def _relay_key_path(u: bytes, message: bytes, signature: bytes) -> bool:
    # What relay.core does: convert the key once, then verify with it.
    key = identity.XEdDSAPublicKey.from_x25519(u)
    return key is not None and key.verify(message, signature)


IMPLEMENTATIONS: dict[str, Verify] = {
    "clients": _xeddsa.xeddsa_verify,
    "relay": identity.xeddsa_verify,
    "relay (converted key)": _relay_key_path,
}


def test_the_vectors_cover_the_edge_cases() -> None:
    names = {v.name for v in VECTORS}
    for needed in (
        "u = 0, forged",
        "u = 1, forged",
        "u = p - 1, forged",
        "u = p, forged",
        "u top bit",
        "u off the curve",
        "s + q",
        "s + 2^253",
        "u = 0, R.y + p",
        "u = 0, R = I with sign bit",
        "signed for the sign-1 point",
        "mixed-order key, h even",
        "mixed-order key, h odd",
        "signature 63 bytes",
        "u 31 bytes",
    ):
        assert needed in names
    assert {v.valid for v in VECTORS} == {True, False}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_reference_verifier_gives_the_spec_answer(vector: Vector) -> None:
    assert reference_verify(vector.u, vector.message, vector.signature) is vector.valid, vector.why


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=str)
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_both_packages_give_the_spec_answer(vector: Vector, impl: str) -> None:
    assert IMPLEMENTATIONS[impl](vector.u, vector.message, vector.signature) is vector.valid, vector.why


def test_relay_converts_exactly_the_keys_the_spec_converts() -> None:
    # from_x25519 is None when "u ≥ p" or "not on_curve(A)" (or the wrong length): nothing verifies.
    for v in VECTORS:
        n = int.from_bytes(v.u, "little")
        refused = len(v.u) != 32 or n >= P or decode(convert_mont(n)) is None
        assert (identity.XEdDSAPublicKey.from_x25519(v.u) is None) is refused, v.name


# libxeddsa's departures from the spec, each for a stated reason:
# - its Ed25519 verification is libsodium's, which refuses a small-order A and an s that is not
#   fully reduced (s ≥ q); the spec accepts both when the equation holds;
# - its curve25519_pub_to_ed25519_pub is convert_mont alone (which masks bit 255); the spec's
#   "u ≥ p" check belongs to xeddsa_verify, which the Python binding does not expose.
LIBXEDDSA_STRICTER = {
    "s + q",
    "u = 0, forged",
    "u = 0, s = q",
    "u = 0, R = I",
    "u = 1, forged",
    "u = p - 1, forged",
}
LIBXEDDSA_LOOSER = {"u top bit"}


def _libxeddsa_verify(u: bytes, message: bytes, signature: bytes) -> bool:
    if len(u) != 32 or len(signature) != 64:
        return False
    return libxeddsa.ed25519_verify(signature, libxeddsa.curve25519_pub_to_ed25519_pub(u, False), message)


def test_libxeddsa_agrees_except_where_named() -> None:
    differs = {
        v.name: _libxeddsa_verify(v.u, v.message, v.signature)
        for v in VECTORS
        if _libxeddsa_verify(v.u, v.message, v.signature) is not v.valid
    }
    assert differs == {**dict.fromkeys(LIBXEDDSA_STRICTER, False), **dict.fromkeys(LIBXEDDSA_LOOSER, True)}


# libsignal's known answer: rust/core/src/curve/curve25519.rs, test_signature (signalapp/libsignal at
# commit 06ef1fadd27a32c50ac398f440967af71d0ea6b7): Alice's identity key, her ephemeral key with its
# 0x05 type byte as the message, and the signature libsignal made. Its last byte, 0x88, has bit 7
# set: the sign bit of libsignal's natural Edwards key, which the spec would have negated away.
LIBSIGNAL_PUBLIC = bytes.fromhex("ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64")
LIBSIGNAL_MESSAGE = bytes.fromhex("05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a")
LIBSIGNAL_SIGNATURE = bytes.fromhex(
    "5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfb"
    "ede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88"
)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=str)
def test_libsignal_known_answer_verifies(impl: str) -> None:
    verify = IMPLEMENTATIONS[impl]
    assert verify(LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, LIBSIGNAL_SIGNATURE)
    # libsignal's own test flips the low bit of each byte in turn: every one must fail.
    for i in range(64):
        forged = bytearray(LIBSIGNAL_SIGNATURE)
        forged[i] ^= 1
        assert not verify(LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, bytes(forged)), i
    assert not verify(LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE + b"!", LIBSIGNAL_SIGNATURE)


def test_the_spec_alone_would_refuse_libsignals_signature() -> None:
    # The departure is real (bit 255 of s makes s ≥ 2^|q| for the spec), so it is named, not hidden.
    assert not reference_verify(LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, LIBSIGNAL_SIGNATURE)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=str)
def test_the_sign_bit_of_s_selects_the_sign_1_point_and_nothing_else(impl: str) -> None:
    verify = IMPLEMENTATIONS[impl]
    # A key whose natural Edwards point has sign bit 1, signed as libsignal signs: with that point.
    for i in range(100):
        a = int.from_bytes(b"libsignal-style key %d" % i, "little") % Q
        a_point = mul(a, B)
        if a_point[0] & 1:
            break
    u = y_to_u(a_point[1]).to_bytes(32, "little")
    m = b"signed prekey"
    plain = sign_with_scalar(a, a_point, m, r=12345)
    flagged = plain[:32] + (int.from_bytes(plain[32:], "little") | 1 << 255).to_bytes(32, "little")
    assert encode(a_point)[31] & 0x80  # the natural point really has sign bit 1
    assert verify(u, m, flagged)
    assert not verify(u, m, plain)  # the same signature without the flag is for −A: refused, as the spec does
    assert not verify(u, m + b"!", flagged)
    assert not reference_verify(u, m, flagged)
