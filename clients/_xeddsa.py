"""XEdDSA signatures over Curve25519 (Signal's "XEdDSA and VXEdDSA" spec, revision 1, 2016).

XEdDSA lets one X25519 key pair also sign: the Montgomery private scalar ``k`` is used as an
Edwards25519 scalar, its public point is forced to have sign bit 0 (negating ``a`` if needed),
and the signature is an ordinary Ed25519 signature over that point. So verification is just
"convert the Montgomery ``u`` to the Edwards ``y`` with sign 0, then run Ed25519 verify", and
that second step goes through ``clients._primitives.ed25519_verify`` (libsodium, and OpenSSL for
what libsodium refuses: OpenSSL's answer on every input).

Signing has no one-call API anywhere (``cryptography`` cannot sign with an X25519 key), so it is
composed here from libsodium's Ed25519 group and scalar operations, through PyNaCl's bindings,
which are constant-time in the secret scalars:

* ``A = kB`` and ``R = rB``: ``crypto_scalarmult_ed25519_base_noclamp``;
* ``a = ±k mod q``, ``r = hash1(a ‖ M ‖ Z) mod q``, ``h mod q``, ``s = r + h·a mod q``:
  ``crypto_core_ed25519_scalar_reduce`` / ``_negate`` / ``_mul`` / ``_add``.

Secret values stay bytes handed to libsodium; Python integers only ever hold public values (the
public key, the signature being verified). This module and ``clients._primitives`` are the only
modules of ``clients`` that may import a crypto library (``tests/test_architecture.py``).

Verification also reads libsignal's signatures. libsignal signs without negating ``a`` and
carries the natural sign bit of its Edwards key in bit 255 of ``s``, which the spec's ``s`` never
sets (s < 2^253); its verifier reads that bit as A's sign and clears it (libsignal
``rust/core/src/curve/curve25519.rs``, ``calculate_signature`` / ``verify_signature``, "for
compatibility with the implementation found in libsignal-protocol-java"). ``xeddsa_verify`` does
the same, so a signed prekey made by Signal's own library verifies here. Every signature the spec
accepts is still accepted and every one it refuses with bit 255 clear is still refused; with bit
255 set the spec refuses outright (s ≥ 2^|q|) where libsignal checks against the sign-1 point —
which only the holder of ``k`` can sign for, so no forgery opens up. Signing stays spec-literal
(sign bit 0), which libsignal verifies.

Checked for interoperability against libxeddsa, OpenSSL and libsignal's known answer in
``tests/clients/test_xeddsa.py`` and ``tests/clients/test_xeddsa_vectors.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_negate,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
)

from relaysim.clients import _primitives
from relaysim.clients._primitives import ed25519_verify

__all__ = [
    "calculate_key_pair",
    "convert_mont",
    "xeddsa_sign",
    "xeddsa_verify",
    "xeddsa_verify_each",
]

# --- curve constants (public values only) ---------------------------------------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493  # order of the base point B

_BITS_P = 255  # |p|
_BITS_Q = 253  # |q|
_MASK_P = (1 << _BITS_P) - 1

# hash_i(X) = SHA-512((2^b − 1 − i) as b/8 little-endian bytes ‖ X), b = 256. XEdDSA uses i = 1.
_HASH1_PREFIX = (2**256 - 1 - 1).to_bytes(32, "little")
_ZERO32 = bytes(32)


def _reduce(wide: bytes) -> bytes:
    """A 64-byte little-endian integer mod q, as 32 bytes (libsodium, constant-time)."""
    return crypto_core_ed25519_scalar_reduce(wide)


def _base_mult(scalar: bytes) -> bytes:
    """The Edwards encoding of ``scalar``·B, for a 32-byte scalar < 2^255 (libsodium, constant-time).

    libsodium refuses a scalar ≡ 0 (mod q) (the identity); XEdDSA never produces one except with
    probability 2^-252 for the nonce, which is reported as a ValueError rather than signed with.
    """
    try:
        return crypto_scalarmult_ed25519_base_noclamp(scalar)
    except Exception as exc:  # nacl.exceptions.RuntimeError: the result is the identity
        raise ValueError("scalar is 0 mod q") from exc


def _point_add(p: bytes, q: bytes) -> bytes:
    """P + Q on Edwards25519, encoded points (libsodium); used by the tests of the group law."""
    return crypto_core_ed25519_add(p, q)


# --- the spec ---------------------------------------------------------------------------------


def _clamp(k: bytes) -> bytes:
    b = bytearray(k)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def calculate_key_pair(k: bytes) -> tuple[bytes, bytes]:
    """calculate_key_pair(k): the Edwards public key A (sign bit 0) and private scalar a (32 bytes).

    ``k`` is a 32-byte X25519 private key; it is clamped as X25519 clamps it. ``A = kB``; if A's
    sign bit is 1, ``a = −k mod q`` (so that aB has sign bit 0), else ``a = k mod q``.

    ``a`` is always reduced, as the spec writes it. libsignal and libxeddsa instead keep the
    clamped, unreduced ``k`` bytes when no negation is needed, and that is what they feed to
    hash1; so with the same Z their R (and s) differ from ours for those keys. Both are valid
    signatures, since both implementations verify either one.
    """
    if len(k) != 32:
        raise ValueError("k must be 32 bytes")
    scalar = _reduce(_clamp(bytes(k)) + _ZERO32)
    encoded = _base_mult(scalar)
    # The choice between a and −a depends on A's sign bit, one bit fixed per key and computed
    # once per key (keys.IdentityKeyPair caches the pair); both candidates are always computed.
    negated = crypto_core_ed25519_scalar_negate(scalar)
    if encoded[31] & 0x80:
        return encoded[:31] + bytes((encoded[31] & 0x7F,)), negated
    return encoded, scalar


def xeddsa_sign(
    x25519_private: bytes, message: bytes, random64: bytes, *, key_pair: tuple[bytes, bytes] | None = None
) -> bytes:
    """xeddsa_sign(k, M, Z): a 64-byte signature R ‖ s that Ed25519-verifies under convert_mont(u).

    ``key_pair`` is ``calculate_key_pair(k)`` when the caller already has it (an identity key that
    signs many prekeys keeps it).
    """
    if len(x25519_private) != 32:
        raise ValueError("x25519_private must be 32 bytes")
    if len(random64) != 64:
        raise ValueError("random64 must be 64 bytes")
    message = bytes(message)
    public, a = key_pair if key_pair is not None else calculate_key_pair(x25519_private)
    r = _reduce(hashlib.sha512(_HASH1_PREFIX + a + message + bytes(random64)).digest())
    big_r = _base_mult(r)
    h = _reduce(hashlib.sha512(big_r + public + message).digest())
    s = crypto_core_ed25519_scalar_add(r, crypto_core_ed25519_scalar_mul(h, a))
    return big_r + s


def convert_mont(u: bytes) -> bytes:
    """convert_mont(u): the Edwards public key (sign bit 0) of the Montgomery u-coordinate.

    Per the spec, the top bit of ``u`` is masked off, then ``y = (u − 1) / (u + 1) mod p`` (with
    the spec's inv(0) = 0, so u ≡ −1 gives y = 0).
    """
    if len(u) != 32:
        raise ValueError("u must be 32 bytes")
    n = int.from_bytes(u, "little") & _MASK_P
    den = (n + 1) % P
    y = (n - 1) * pow(den, -1, P) % P if den else 0
    return y.to_bytes(32, "little")


def xeddsa_verify(x25519_public: bytes, message: bytes, signature: bytes) -> bool:
    """xeddsa_verify(u, M, R ‖ s), spec §3. False (never an exception) for any malformed input.

    The spec's answer on every edge case (``relay.identity`` gives the same, on the same vectors in
    ``tests/clients/test_xeddsa_vectors.py``): u ≥ p is refused, bit 255 included (convert_mont's masking
    comes after); u = 0, 1 and p − 1 are small-order keys that XEdDSA does not refuse (inv(0) = 0
    maps p − 1 to y = 0, like 1); s ≥ 2^|q| is refused but q ≤ s < 2^|q| is not (§5: "not requiring
    it to be fully reduced"); R is compared as bytes with the canonical encoding of sB − hA.
    One departure, libsignal's: bit 255 of s set means "A has sign bit 1" (module docstring).
    """
    if len(x25519_public) != 32 or int.from_bytes(x25519_public, "little") >= P:
        return False
    return _verify(convert_mont(x25519_public), message, signature)


def xeddsa_verify_each(x25519_public: bytes, signed: Sequence[tuple[bytes, bytes]]) -> list[bool]:
    """``xeddsa_verify(u, M, sig)`` for each (M, sig) of ``signed``, all by one key: u converted to
    its Edwards form once (a prekey bundle's signed prekey and KEM prekey; convert_mont is ~16 µs of
    a ~75 µs verification)."""
    ahead = _primitives._ahead
    if ahead is not None:  # checked ahead on another core (_primitives.Ahead): a good one is held
        try:
            held = [ahead.take(ahead.verified, (x25519_public, m, sig)) is not None for m, sig in signed]
        except TypeError:  # (an input that is not bytes: never held)
            held = [False]
        if all(held):
            return held
    if len(x25519_public) != 32 or int.from_bytes(x25519_public, "little") >= P:
        return [False] * len(signed)
    a_edwards = convert_mont(x25519_public)
    return [_verify(a_edwards, message, signature) for message, signature in signed]


def _verify(a_edwards: bytes, message: bytes, signature: bytes) -> bool:
    """xeddsa_verify's steps after convert_mont(u)."""
    if len(signature) != 64:
        return False
    signature = bytes(signature)
    # R.y ≥ 2^|p| cannot happen in 32 bytes; a non-canonical R never equals Rcheck's encoding.
    s = int.from_bytes(signature[32:], "little")
    if s >> 255:  # libsignal's convention (module docstring): A's sign bit travels in bit 255 of s
        s ^= 1 << 255
        a_edwards = a_edwards[:31] + bytes([a_edwards[31] | 0x80])
        signature = signature[:32] + s.to_bytes(32, "little")
    if s >> _BITS_Q:  # s >= 2^|q|
        return False
    if s >= Q:  # sB = (s mod q)B; OpenSSL's Ed25519 demands s < q, so hand it s mod q
        signature = signature[:32] + (s - Q).to_bytes(32, "little")
    # on_curve(A), h and Rcheck = sB − hA are Ed25519's own (cofactorless, byte-compared) steps.
    return ed25519_verify(a_edwards, bytes(message), signature)
