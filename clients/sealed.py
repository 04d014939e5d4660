"""Sealed sender: an envelope that hides who sent it from the relay that carries it.

Modelled on Signal's sealed sender (blog post 2018-10-29; libsignal ``sealed_sender.rs``, v1):
the sender first encrypts the message on its ordinary session, then wraps {sender certificate,
that ciphertext} in two layers of encryption to the recipient's identity key:

1. an **ephemeral** layer: a fresh key pair ``e``; from DH(e, IK_B), salted with the recipient's
   identity key and ``e``'s public key, come a chain key and a key that encrypts the sender's
   identity key;
2. a **static** layer: from DH(IK_A, IK_B), salted with that chain key and the first ciphertext,
   comes the key that encrypts the certificate and the message.

Only the recipient can open either layer; the static layer also proves that whoever sealed it
holds the identity key it claims. The relay sees the recipient (it must route) and the time, and
the network address the envelope came from — not the sender.

Both layers use the Double Ratchet's ENCRYPT (§5.2: AES-256-CBC + HMAC-SHA256, IV from HKDF),
under keys that are each used once, so nothing here chooses a nonce.

    envelope = 0x01 ‖ e.public (32) ‖ c1 (80) ‖ c2
    (chain key, k1) = HKDF-SHA256(DH(e, IK_B), salt "UnidentifiedDelivery" ‖ IK_B ‖ e.public,
                                  info "relaysim_SealedSender_Ephemeral", 64 bytes)
    c1 = ENCRYPT(k1, IK_A, e.public ‖ IK_B)
    k2 = HKDF-SHA256(DH(IK_A, IK_B), salt chain key ‖ c1, info "relaysim_SealedSender_Static", 32 bytes)
    c2 = ENCRYPT(k2, msgpack([certificate, inner]), e.public ‖ c1)

(ENCRYPT's info is "relaysim_SealedSender_Message"; keys are the raw 32-byte u-coordinates.) The design
is libsignal's v1; the bytes are not: libsignal salts with the 0x05-prefixed keys, expands 96 bytes
with an empty info (chain key, AES-256-CTR key, HMAC key), encrypts with AES-CTR under a 10-byte
HMAC tag and frames with protobufs, so an envelope here does not open with libsignal, nor one of its
here (``tests/clients/test_sealed.py`` re-derives this layout from ``cryptography``'s primitives).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgpack

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError, SealedSenderSelfSend
from relaysim.clients.keys import IdentityKeyPair
from relaysim.relay import wire
from relaysim.relay.certificates import CertificateError, SenderCertificate

__all__ = ["open_envelope", "seal"]

RNG = Callable[[int], bytes]
VERSION = 1
_SALT_PREFIX = b"UnidentifiedDelivery"  # libsignal's sealed-sender salt prefix
_EPHEMERAL_INFO = b"relaysim_SealedSender_Ephemeral"
_STATIC_INFO = b"relaysim_SealedSender_Static"
_AEAD_INFO = b"relaysim_SealedSender_Message"
_C1_LEN = 48 + 32  # a 32-byte key pads to 48 bytes of CBC, plus the full tag
_HEAD = 1 + 32 + _C1_LEN


def _ephemeral_keys(dh_out: bytes, recipient_ik: bytes, e_public: bytes) -> tuple[bytes, bytes]:
    okm = _p.hkdf_sha256(dh_out, _SALT_PREFIX + recipient_ik + e_public, _EPHEMERAL_INFO, 64)
    return okm[:32], okm[32:]


def _static_key(dh_out: bytes, chain_key: bytes, c1: bytes) -> bytes:
    return _p.hkdf_sha256(dh_out, chain_key + c1, _STATIC_INFO, 32)


def seal(
    sender: IdentityKeyPair,
    recipient_identity_key: bytes,
    certificate: bytes,
    inner: bytes,
    *,
    rng: RNG = os.urandom,
) -> bytes:
    """Wrap ``inner`` (a session ciphertext) and the encoded sender certificate for the recipient."""
    e = spec.generate_dh(rng)
    chain_key, k1 = _ephemeral_keys(e.dh(recipient_identity_key), recipient_identity_key, e.public)
    c1 = spec.encrypt(k1, sender.public, e.public + recipient_identity_key, _AEAD_INFO)
    k2 = _static_key(sender.pair.dh(recipient_identity_key), chain_key, c1)
    content = msgpack.packb([certificate, inner], use_bin_type=True)
    c2 = spec.encrypt(k2, content, e.public + c1, _AEAD_INFO)
    return bytes((VERSION,)) + e.public + c1 + c2


def open_envelope(
    recipient: IdentityKeyPair,
    envelope: bytes,
    trust_root: bytes,
    now: int,
    *,
    local: tuple[str, int] | None = None,
) -> tuple[SenderCertificate, bytes]:
    """Open both layers and check the certificate chain (a revoked server key id refused), its expiry
    and that it names the key that sealed the envelope. Returns (certificate, inner ciphertext).

    ``local``, the recipient's own (account, device): a certificate naming that very device is
    refused, as libsignal's ``sealed_sender_decrypt`` refuses a message "from this exact client"
    (the same account and the same device id; the account's other devices are not the recipient):
    ``SealedSenderSelfSend``, checked after everything else, as libsignal checks it once the
    certificate is validated. Any other failure: DecryptionError.
    """
    if len(envelope) < _HEAD + 48 or envelope[0] != VERSION:
        raise DecryptionError()
    e_public = envelope[1:33]
    c1 = envelope[33:_HEAD]
    c2 = envelope[_HEAD:]
    ik_b = recipient.public
    try:
        chain_key, k1 = _ephemeral_keys(recipient.pair.dh(e_public), ik_b, e_public)
        sender_ik = spec.decrypt(k1, c1, e_public + ik_b, _AEAD_INFO)
        if len(sender_ik) != 32:
            raise DecryptionError()
        k2 = _static_key(recipient.pair.dh(sender_ik), chain_key, c1)
        content = spec.decrypt(k2, c2, e_public + c1, _AEAD_INFO)
    except _p.AuthenticationFailed:
        raise DecryptionError() from None
    try:  # (read as the wire reads a frame, an ext msgpack reserves a value: refused as any wrong value)
        opened = wire.unpack_value(content, "sealed sender content")
    except wire.MsgpackError:
        raise DecryptionError() from None
    if type(opened) is not list or len(opened) != 2:
        raise DecryptionError()
    cert_bytes, inner = opened
    if type(cert_bytes) is not bytes or type(inner) is not bytes:
        raise DecryptionError()
    try:
        certificate = SenderCertificate.decode(cert_bytes)
        certificate.verify(trust_root, now)
    except CertificateError:
        raise DecryptionError() from None
    if not _p.constant_time_equal(certificate.identity_key, sender_ik):
        raise DecryptionError()
    if local is not None and (certificate.sender, certificate.device) == tuple(local):
        raise SealedSenderSelfSend(certificate.sender, certificate.device)
    return certificate, inner
