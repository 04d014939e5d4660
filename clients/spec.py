"""Signal's protocol steps under the specifications' own names, to read beside the specs.

Each function is one named step of one document:

- X3DH, revision 1 (2016-11-04), https://signal.org/docs/specifications/x3dh/
- PQXDH, revision 3 (2024-01-23), https://signal.org/docs/specifications/pqxdh/
- The Double Ratchet Algorithm, revision 1 (2016-11-20), §3 and the recommended
  cryptographic algorithms of §5.2; §4 for header encryption,
  https://signal.org/docs/specifications/doubleratchet/
- XEdDSA and VXEdDSA, revision 1 (2016-10-20), https://signal.org/docs/specifications/xeddsa/

All keys, messages and outputs are byte strings. ``encrypt`` appends the full 32-byte
HMAC-SHA256 tag (§5.2 allows truncation to no less than 8 bytes; libsignal truncates to 8;
we keep all 32, which is what the PyPI ``doubleratchet`` package does too).

The ratchet in ``clients.ratchet`` calls these same functions, so what a student reads here
is what the simulated phones run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from relaysim.clients import _primitives as _p
from relaysim.clients.errors import DecryptionError
from relaysim.relay.wire import EC_KEY_TYPE

__all__ = [
    "HASH_LEN",
    "decrypt",
    "dh",
    "encode_public_key",
    "encrypt",
    "generate_dh",
    "hdecrypt",
    "hencrypt",
    "kdf_ck",
    "kdf_rk",
    "kdf_rk_he",
    "x3dh_kdf",
    "xeddsa_sign",
    "xeddsa_verify",
    "xeddsa_verify_each",
]

HASH_LEN = 32
_ZERO_SALT = bytes(HASH_LEN)
_MK_CONSTANT = b"\x01"  # §5.2: message key = HMAC-SHA256(ck, 0x01)
_CK_CONSTANT = b"\x02"  # §5.2: next chain key = HMAC-SHA256(ck, 0x02)
_X3DH_F = b"\xff" * 32  # X3DH §2.2: F = 32 0xFF bytes for X25519
_TAG_LEN = 32

_hmac = _p.hmac_sha256
_hkdf = _p.hkdf_sha256


# --- X3DH ---------------------------------------------------------------------------------


def encode_public_key(public: bytes) -> bytes:
    """X3DH §2.1 Encode(PK): a single-byte curve type (0x05, as libsignal) then the u-coordinate."""
    if len(public) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return EC_KEY_TYPE + public  # libsignal's DJB key type byte


def x3dh_kdf(key_material: bytes, info: bytes) -> bytes:
    """X3DH §2.2 KDF(KM): HKDF-SHA256 over F ‖ KM, salt of 32 zero bytes, 32 bytes out.

    PQXDH §2.2 uses the same KDF; its KM appends the KEM shared secret.
    """
    return _hkdf(_X3DH_F + key_material, _ZERO_SALT, info, 32)


# --- Double Ratchet §5.2 --------------------------------------------------------------------


def generate_dh(rng: Callable[[int], bytes] = os.urandom) -> _p.X25519Pair:
    """§5.2 GENERATE_DH(): a new X25519 key pair, from the injected RNG."""
    return _p.x25519_pair_from_private(rng(32))


def dh(pair: _p.X25519Pair, public: bytes) -> bytes:
    """§5.2 DH(dh_pair, dh_pub): X25519 (RFC 7748). An all-zero output is rejected."""
    return pair.dh(public)


def kdf_rk(rk: bytes, dh_out: bytes, info: bytes) -> tuple[bytes, bytes]:
    """§5.2 KDF_RK(rk, dh_out): HKDF-SHA256, salt = rk, ikm = dh_out → (root key, chain key)."""
    out = _hkdf(dh_out, rk, info, 64)
    return out[:32], out[32:]


def kdf_rk_he(rk: bytes, dh_out: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    """§4.2 KDF_RK_HE(rk, dh_out) → (root key, chain key, next header key).

    The header key is 64 bytes because our HENCRYPT is AES-256-SIV (RFC 5297), which takes
    a 512-bit key; see ``hencrypt``.
    """
    out = _hkdf(dh_out, rk, info, 128)
    return out[:32], out[32:64], out[64:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """§5.2 KDF_CK(ck) → (next chain key, message key), HMAC-SHA256 with constants 0x02 / 0x01."""
    return _p.hmac_sha256_pair(ck, _CK_CONSTANT, _MK_CONSTANT)


def _message_keys(mk: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    out = _hkdf(mk, _ZERO_SALT, info, 80)
    return out[:32], out[32:64], out[64:]


def encrypt(mk: bytes, plaintext: bytes, associated_data: bytes, info: bytes) -> bytes:
    """§5.2 ENCRYPT(mk, plaintext, associated_data).

    HKDF-SHA256(salt = 32 zero bytes, ikm = mk, info) → 80 bytes: encryption key, authentication
    key, IV. AES-256-CBC with PKCS#7 padding; HMAC-SHA256(auth key, associated_data ‖ ciphertext)
    appended in full. The IV comes from the message key, which is used once, so it never repeats.
    """
    enc_key, auth_key, iv = _message_keys(mk, info)
    ciphertext = _p.aes_cbc_encrypt(enc_key, iv, plaintext)
    return ciphertext + _hmac(auth_key, associated_data + ciphertext)


def decrypt(mk: bytes, ciphertext: bytes, associated_data: bytes, info: bytes) -> bytes:
    """§5.2 DECRYPT(mk, ciphertext, associated_data). Any failure raises ``DecryptionError``."""
    if len(ciphertext) < 16 + _TAG_LEN:
        raise DecryptionError()
    enc_key, auth_key, iv = _message_keys(mk, info)
    body, tag = ciphertext[:-_TAG_LEN], ciphertext[-_TAG_LEN:]
    if not _p.constant_time_equal(_hmac(auth_key, associated_data + body), tag):
        raise DecryptionError()
    try:
        return _p.aes_cbc_decrypt(enc_key, iv, body)
    except _p.AuthenticationFailed:
        raise DecryptionError() from None


def hencrypt(hk: bytes, header: bytes) -> bytes:
    """§4.2 HENCRYPT(hk, plaintext), as AES-256-SIV (RFC 5297) under a 64-byte header key.

    §4.2 asks for a nonce that never repeats under one header key. SIV is deterministic and
    misuse-resistant; every header under one key differs in its message number, so equal
    ciphertexts never occur and nothing about the header leaks.
    """
    return _p.siv_encrypt(hk, header, b"")


def hdecrypt(hk: bytes | None, enc_header: bytes) -> bytes | None:
    """§4.2 HDECRYPT(hk, ciphertext): the header, or None when ``hk`` does not open it."""
    if hk is None:
        return None
    try:
        return _p.siv_decrypt(hk, enc_header, b"")
    except _p.AuthenticationFailed:
        return None


# --- XEdDSA ---------------------------------------------------------------------------------


def xeddsa_sign(
    x25519_private_raw: bytes, message: bytes, *, rng: Callable[[int], bytes] = os.urandom
) -> bytes:
    """XEdDSA §3 xeddsa_sign(k, M, Z): a 64-byte signature from an X25519 private key.

    Z, the 64 random bytes, comes from ``rng`` (os.urandom unless a simulator injects its own).
    """
    from relaysim.clients._xeddsa import xeddsa_sign as _sign

    return _sign(x25519_private_raw, message, rng(64))


def xeddsa_verify(x25519_public_raw: bytes, message: bytes, signature: bytes) -> bool:
    """XEdDSA §3 xeddsa_verify(u, M, (R ‖ s)): convert u to Edwards, then Ed25519 verification."""
    from relaysim.clients._xeddsa import xeddsa_verify as _verify

    return _verify(x25519_public_raw, message, signature)


def xeddsa_verify_each(x25519_public_raw: bytes, signed: Sequence[tuple[bytes, bytes]]) -> list[bool]:
    """``xeddsa_verify`` of each (M, signature) of ``signed``, all by one key: u converted to its
    Edwards form once (a prekey bundle's signed prekey and KEM prekey)."""
    from relaysim.clients._xeddsa import xeddsa_verify_each as _verify_each

    return _verify_each(x25519_public_raw, signed)
