"""Signatures the relay checks and makes.

The relay *checks* XEdDSA signatures by devices' X25519 identity keys (on signed prekeys and
on authentication challenges) and *makes* Ed25519 signatures on sender certificates with its
server key, which is itself certified by an offline trust root; the certificate formats live
in ``relay.certificates``.

XEdDSA verification (XEdDSA and VXEdDSA spec, revision 1, §2.5 and §2.3) is Ed25519
verification under the Edwards point whose y corresponds to the Montgomery u, with sign bit 0:
``y = (u - 1) / (u + 1) mod p``. The Ed25519 part is ``cryptography``'s (OpenSSL).
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.certificates import SenderCertificate, ServerCertificate, ServerSigningKey, TrustRoot

__all__ = [
    "ServerIdentity",
    "XEdDSAPublicKey",
    "xeddsa_verify",
]

_P = 2**255 - 19


class XEdDSAPublicKey:
    """An X25519 public key, converted once, that verifies XEdDSA signatures.

    ``from_x25519`` returns None for a u that has no Edwards counterpart (u ≥ p, u = p − 1,
    or a y that is not on the curve): no signature can verify under such a key.
    """

    __slots__ = ("_ed",)

    def __init__(self, ed: Ed25519PublicKey) -> None:
        self._ed = ed

    @classmethod
    def from_x25519(cls, u_bytes: bytes) -> XEdDSAPublicKey | None:
        if len(u_bytes) != 32:
            return None
        u = int.from_bytes(u_bytes, "little")
        # XEdDSA §2.5 xeddsa_verify: "if u >= p ... return false". u = p − 1 makes u + 1 = 0.
        if u >= _P or u == _P - 1:
            return None
        y = (u - 1) * pow(u + 1, _P - 2, _P) % _P  # Fermat inverse; p is prime
        try:
            ed = Ed25519PublicKey.from_public_bytes(y.to_bytes(32, "little"))  # top (sign) bit stays 0
        except ValueError:
            return None
        return cls(ed)

    def verify(self, message: bytes, signature: bytes) -> bool:
        # §2.5 also asks for s < 2^|q|; OpenSSL's Ed25519 already demands the stricter s < q.
        if len(signature) != 64:
            return False
        try:
            self._ed.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def xeddsa_verify(x25519_public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid XEdDSA signature of ``message`` by ``x25519_public``."""
    key = XEdDSAPublicKey.from_x25519(x25519_public)
    return key is not None and key.verify(message, signature)


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
