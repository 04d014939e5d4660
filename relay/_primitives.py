"""The only module in ``relay`` that imports ``cryptography`` (and PyNaCl, for libsodium's Ed25519 check).

The relay needs three primitives of its own (it never imports ``clients``): Ed25519 signing
for the service's certificate chain (``relay.certificates``), Ed25519 verification (that chain,
the Ed25519 half of XEdDSA in ``relay.identity``, and the write keys of groups' encrypted state), and AES-256-GCM for message bodies under
a key someone other than the two phones holds (``relay.custody``). Each is a thin wrapper;
callers never see a ``cryptography`` type or exception.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_core_ed25519_is_valid_point as _sodium_valid_point
from nacl.bindings import crypto_sign_open as _sodium_sign_open
from nacl.exceptions import BadSignatureError as _SodiumBadSignature

__all__ = [
    "Ed25519Signer",
    "Ed25519Verifier",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "ed25519_key_ok",
    "ed25519_verify",
]


class Ed25519Verifier:
    """An Ed25519 public key, for verifications with OpenSSL's answer (RFC 8032 §5.1.7).

    OpenSSL's verification is cofactorless and demands s < q; it does not refuse small-order keys.
    libsodium checks first, in about half OpenSSL's time: every signature it accepts OpenSSL
    accepts too (the same equation, R compared as bytes, s < q; libsodium also refuses a
    small-order or non-canonical A and a small-order R), so only what it refuses goes on to OpenSSL
    (parsed then, once), and each input gets OpenSSL's answer, edge cases included.
    """

    __slots__ = ("_key", "public")

    def __init__(self, public: bytes) -> None:
        if len(public) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public)}")
        self._key: Ed25519PublicKey | None = None
        self.public = bytes(public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) == 64:
            try:
                _sodium_sign_open(bytes(signature) + bytes(message), self.public)
                return True
            except _SodiumBadSignature:
                pass
        try:
            if self._key is None:
                self._key = Ed25519PublicKey.from_public_bytes(self.public)
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


def ed25519_key_ok(public: bytes) -> bool:
    """Whether ``public`` is a canonical encoding of a point of Ed25519 that is not of small order and
    lies in the prime-order subgroup, as every key made from a seed does (libsodium's
    ``crypto_core_ed25519_is_valid_point``, in PyNaCl since 1.4.0). For a key someone registers for
    others to be checked against: under a small-order key OpenSSL's cofactorless verification
    accepts signatures nobody needed a private key to make. (libsodium before commit ad3004e, bundled
    in PyNaCl before 1.6.2, CVE-2025-69277, let some points with a small-order component through
    the subgroup test; the small-order test, the one that matters here, is not affected: signing
    under such a key still needs its private part.)"""
    return len(public) == 32 and bool(_sodium_valid_point(bytes(public)))


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
