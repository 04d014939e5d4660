"""Signatures the relay checks and makes.

The relay *checks* XEdDSA signatures by devices' X25519 identity keys (on signed prekeys and
on authentication challenges) and *makes* Ed25519 signatures on sender certificates with its
server key, which is itself certified by an offline trust root; the certificate formats live
in ``relay.certificates``.

XEdDSA verification follows the spec (XEdDSA and VXEdDSA, revision 1, §3 xeddsa_verify with
§2.3 convert_mont) exactly as ``clients._xeddsa`` does; the relay keeps its own copy because it
never imports ``clients``, and ``tests/clients/test_xeddsa_vectors.py`` runs one set of edge-case vectors
against both. The Ed25519 part is OpenSSL's, through ``relay._primitives``.

Like libsignal's ``verify_signature`` (``rust/core/src/curve/curve25519.rs``), bit 255 of ``s`` is
read as the sign bit of A and cleared: libsignal signs with its natural Edwards key and carries
that key's sign there, where the spec's ``s`` (< 2^253) never has a bit. So signed prekeys and
challenges signed by Signal's own library verify; see ``clients._xeddsa`` for why this accepts
nothing the key's holder did not sign.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from relaysim.relay._primitives import Ed25519Verifier
from relaysim.relay.certificates import SenderCertificate, ServerCertificate, ServerSigningKey, TrustRoot

__all__ = [
    "ServerIdentity",
    "XEdDSAPublicKey",
    "use_verified_ahead",
    "verified_ahead",
    "xeddsa_verify",
]

_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493  # order of the base point B
_D = -121665 * pow(121666, _P - 2, _P) % _P
_S_BOUND = 2**253  # 2^|q|


def _is_square(a: int) -> bool:
    """Whether ``a`` (0 < a < p) is a square mod p: the Jacobi symbol (a/p) = 1, which for the prime p
    is Euler's criterion a^((p−1)/2) = 1, computed by quadratic reciprocity (the binary algorithm;
    Cohen, A Course in Computational Algebraic Number Theory, Algorithm 1.4.10) — a few times faster
    in Python than the 255-bit exponentiation, and the same answer."""
    n, t = _P, 1
    while a:
        z = (a & -a).bit_length() - 1  # a = 2^z · odd
        a >>= z
        if z & 1 and n & 7 in (3, 5):  # (2/n) = −1 for n ≡ ±3 mod 8
            t = -t
        if a & n & 3 == 3:  # reciprocity: both ≡ 3 mod 4
            t = -t
        a, n = n % a, a
    return n == 1 and t == 1


def _on_curve(y: int) -> bool:
    """Whether some x puts (x, y) on −x² + y² = 1 + d·x²·y²: (y² − 1)/(d·y² + 1) is a square.

    d is not a square mod p, so d·y² + 1 is never 0; Euler's criterion (here by the Jacobi symbol,
    ``_is_square``) decides the rest.
    """
    num = (y * y - 1) % _P
    return num == 0 or _is_square(num * (_D * y * y + 1) % _P)


class XEdDSAPublicKey:
    """An X25519 public key, converted once (§2.3 convert_mont), that verifies XEdDSA signatures.

    ``from_x25519`` returns None exactly where §3 returns false before looking at a signature:
    a key that is not 32 bytes, u ≥ p (bit 255 is not masked: "if u ≥ p ... return false" comes
    first), or a y with no point ("if not on_curve(A)"). u = p − 1 is a key: inv(0) = 0 (§2.1)
    gives y = 0, as u = 1 does, a point of order 4; XEdDSA verification has no small-order check.
    """

    __slots__ = ("_ed", "_ed_sign1", "edwards")

    def __init__(self, edwards: bytes) -> None:
        self._ed = Ed25519Verifier(edwards)
        self._ed_sign1: Ed25519Verifier | None = None  # −A, for libsignal's sign bit; made when first needed
        self.edwards = edwards  # the Edwards encoding of A: y, sign bit 0

    @classmethod
    def from_x25519(cls, u_bytes: bytes) -> XEdDSAPublicKey | None:
        if len(u_bytes) != 32:
            return None
        u = int.from_bytes(u_bytes, "little")
        if u >= _P:
            return None
        edwards = _edwards(u)
        return None if edwards is None else cls(edwards)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """§3 from the signature checks on: s < 2^|q|, then Rcheck = sB − hA equals R as bytes."""
        if len(signature) != 64:
            return False
        s = int.from_bytes(signature[32:], "little")
        verifier = self._ed
        if s >> 255:  # libsignal's sign bit (module docstring): verify against the sign-1 point
            s ^= 1 << 255
            signature = signature[:32] + s.to_bytes(32, "little")
            if self._ed_sign1 is None:
                try:
                    self._ed_sign1 = Ed25519Verifier(self.edwards[:31] + bytes([self.edwards[31] | 0x80]))
                except ValueError:
                    return False
            verifier = self._ed_sign1
        if s >= _S_BOUND:
            return False
        if s >= _Q:
            # §5: XEdDSA rejects "s if it has excess bits but not requiring it to be fully reduced".
            # sB = (s mod q)B, and OpenSSL's Ed25519 demands s < q, so hand it s mod q.
            signature = signature[:32] + (s - _Q).to_bytes(32, "little")
        # R.y ≥ 2^|p| cannot happen in 32 bytes; a non-canonical R never equals Rcheck's encoding.
        return verifier.verify(message, signature)


@functools.lru_cache(maxsize=1024)
def _edwards(u: int) -> bytes | None:
    """convert_mont(u) (u < p), or None if that y has no point. A device's identity key is converted
    when it registers and again when it logs in, moments later: the last few are kept (a pure
    function of a public key)."""
    den = (u + 1) % _P
    # u_to_y with the spec's inv(x) = x^(p−2), which is x⁻¹ for x ≠ 0 and 0 for x = 0 (u = p − 1);
    # pow(x, −1, p) (extended Euclid) is many times faster than the exponentiation.
    y = (u - 1) * pow(den, -1, _P) % _P if den else 0
    if not _on_curve(y):
        return None
    return y.to_bytes(32, "little")  # top (sign) bit stays 0


def xeddsa_verify(x25519_public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid XEdDSA signature of ``message`` by ``x25519_public``."""
    key = XEdDSAPublicKey.from_x25519(x25519_public)
    return key is not None and key.verify(message, signature)


# Signatures this process's relay will check, checked ahead by another process with
# ``xeddsa_verify`` (a simulation's worker on the other core: the one that makes the phones'
# registration keys, sims.world.premade, checks their signatures as the relay will): a good one is
# held under its whole input (key, message, signature), taken once. None (the default): none held.
# The relay then skips its own check of a held one — a timing a simulated relay shows no one.
_verified_ahead: dict[tuple[bytes, bytes, bytes], bool] | None = None


def use_verified_ahead(
    table: dict[tuple[bytes, bytes, bytes], bool] | None,
) -> dict[tuple[bytes, bytes, bytes], bool] | None:
    """Install ``table`` (None: none) for this process's relay; returns the one it replaces."""
    global _verified_ahead
    previous, _verified_ahead = _verified_ahead, table
    return previous


def verified_ahead(checks: list[tuple[bytes, bytes, bytes]]) -> bool:
    """Whether every (key, message, signature) of ``checks`` was verified ahead (each then forgotten)."""
    table = _verified_ahead
    if table is None or not checks:
        return False
    try:
        held = [table.pop(check, False) for check in checks]
    except TypeError:  # (an input that is not bytes: never held)
        return False
    return all(held)


class ServerIdentity:
    """The relay's Ed25519 signing key with the trust root's certificate for it.

    The trust root's private key is not kept: devices get ``trust_root_public`` out of band (in
    Signal, compiled into the app) and check the chain trust root → server certificate →
    sender certificate with ``relay.certificates.SenderCertificate.verify``.
    """

    __slots__ = ("server_certificate", "server_private", "signing_key", "trust_root_public")

    def __init__(
        self, server_private: bytes, server_certificate: ServerCertificate, trust_root_public: bytes
    ):
        self.server_private = server_private
        self.server_certificate = server_certificate
        self.trust_root_public = trust_root_public
        self.signing_key = ServerSigningKey(server_private, server_certificate)

    @classmethod
    def generate(cls, rng: Callable[[int], bytes], *, key_id: int = 1) -> ServerIdentity:
        """A fresh trust root (used once to certify, then dropped) and a server key."""
        root = TrustRoot(rng(32))
        server_private = rng(32)
        key = ServerSigningKey.create(root, key_id, server_private)
        return cls(server_private, key.certificate, root.public)

    def issue(self, account: str, device: int, identity_key: bytes, expires: int) -> SenderCertificate:
        return self.signing_key.issue(account, device, identity_key, expires)
