"""The only module in ``relay`` that imports ``cryptography``.

The relay needs three primitives of its own (it never imports ``clients``): Ed25519 signing
for the service's certificate chain (``relay.certificates``), Ed25519 verification (that chain,
and the Ed25519 half of XEdDSA in ``relay.identity``), and AES-256-GCM for message bodies under
a key someone other than the two phones holds (``relay.custody``). Each is a thin wrapper;
callers never see a ``cryptography`` type or exception.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "Ed25519Signer",
    "Ed25519Verifier",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "ed25519_verify",
]


class Ed25519Verifier:
    """An Ed25519 public key parsed once, for many verifications (RFC 8032 §5.1.7, OpenSSL).

    OpenSSL's verification is cofactorless and demands s < q; it does not refuse small-order keys.
    """

    __slots__ = ("_key", "public")

    def __init__(self, public: bytes) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(public)  # ValueError if not 32 bytes
        self.public = public

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        verifier = Ed25519Verifier(public)
    except ValueError:
        return False
    return verifier.verify(message, signature)


class Ed25519Signer:
    """An Ed25519 private key from its 32-byte seed, and its public key."""

    __slots__ = ("_key", "public")

    def __init__(self, private: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private)
        self.public = self._key.public_key().public_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def aes_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aes_gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not check under this key."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        return None
