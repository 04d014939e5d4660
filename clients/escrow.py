"""Key escrow: every message key also sealed to a key a third party holds.

This is the design that exceptional-access proposals keep returning to (the Clipper chip's
Law Enforcement Access Field, 1993; "a copy of every key for the state"): the phones keep
running the Double Ratchet, but each message also carries its message key encrypted to an
**escrow public key**. Whoever holds the escrow private key — the escrow agent, or whoever
steals it — opens every message it can capture, past and future, of every user.

What a device attaches (``EscrowPublicKey.wrap``), around the body it would otherwise send:

    escrowed body = 0xE5 ‖ len(blob) (uint32, big-endian) ‖ blob ‖ body
    blob          = 0x01 ‖ e.public (32) ‖ ENCRYPT(k, record, e.public ‖ escrow public)
    k             = HKDF-SHA256(DH(e, escrow public), salt = e.public ‖ escrow public, info)
    record        = msgpack([1, message key, AD, header, ENCRYPT's info, ratchet message or nil])

``e`` is a fresh X25519 key per message and ``k`` is used once, so as in ``clients.sealed``
nothing chooses a nonce: ENCRYPT is the Double Ratchet's (AES-256-CBC + HMAC-SHA256, IV from
HKDF). The record holds the key and what is needed to use it: the associated data it
authenticates (the session's AD and the message header). When the body is a sealed-sender
envelope, sealing hides the ratchet message from everyone but the recipient, so the record also
carries the ratchet message itself (still encrypted under the message key).

The receiving device strips the frame without reading it: it cannot check the blob, which is
encrypted to someone else. (That is the old weakness of escrow by attachment — Blaze, "Protocol
Failure in the Escrowed Encryption Standard", 1994, forged Clipper's field — and the reason
the relay and the recipient see only opaque, larger bytes.)

The escrow key here is X25519 only; a deployed scheme would want a post-quantum KEM as well,
as PQXDH adds to X3DH.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError, UsageError
from relaysim.clients.framing import parse_ciphertext
from relaysim.clients.ratchet import UsedKey

__all__ = ["ESCROW_TAG", "EscrowKeyPair", "EscrowPublicKey", "EscrowRecord", "strip", "unframe"]

RNG = Callable[[int], bytes]
ESCROW_TAG = 0xE5  # first byte of an escrowed body; ciphertexts start 0x01/0x02, custody 0xC5
VERSION = 1
_LEN = struct.Struct(">I")
_KEY_INFO = b"relaysim_KeyEscrow_Key"
_RECORD_INFO = b"relaysim_KeyEscrow_Record"
_MIN_BLOB = 1 + 32 + 16 + 32  # version, ephemeral key, one AES block, the tag


def _frame(blob: bytes, body: bytes) -> bytes:
    return bytes((ESCROW_TAG,)) + _LEN.pack(len(blob)) + blob + body


def unframe(data: bytes) -> tuple[bytes | None, bytes]:
    """(escrow blob, the body inside) — or (None, data) when ``data`` carries no escrow frame.

    A frame that claims more bytes than there are is a ``DecryptionError``.
    """
    if not data or data[0] != ESCROW_TAG:
        return None, data
    if len(data) < 1 + _LEN.size:
        raise DecryptionError()
    (n,) = _LEN.unpack_from(data, 1)
    start = 1 + _LEN.size
    if n < _MIN_BLOB or start + n > len(data):
        raise DecryptionError()
    return data[start : start + n], data[start + n :]


def strip(data: bytes) -> bytes:
    """The body without its escrow frame (unchanged when it has none). What recipients do."""
    return unframe(data)[1]


def _record_key(dh_out: bytes, e_public: bytes, escrow_public: bytes) -> bytes:
    return _p.hkdf_sha256(dh_out, e_public + escrow_public, _KEY_INFO, 32)


@dataclass(frozen=True)
class EscrowRecord:
    """One escrowed message key, opened: what the escrow agent learns about one message."""

    message_key: bytes
    ad: bytes
    header: bytes
    info: bytes
    message: bytes | None  # the ratchet message, when the wire copy is sealed away

    def decrypt(self, message: bytes) -> bytes:
        """The plaintext of ``message`` (``header ‖ ciphertext``), which must be the escrowed one."""
        header = self.header
        if not message.startswith(header):
            raise DecryptionError()
        return spec.decrypt(self.message_key, message[len(header) :], self.ad + header, self.info)


@dataclass(frozen=True)
class EscrowPublicKey:
    """What every device is given under a key-escrow mandate."""

    public: bytes

    def __post_init__(self) -> None:
        if len(self.public) != 32:
            raise UsageError("an escrow public key is an X25519 key, 32 bytes")

    def wrap(
        self, body: bytes, used: UsedKey, *, rng: RNG = os.urandom, include_message: bool = False
    ) -> bytes:
        """``body`` with an escrow frame holding ``used`` (and the ratchet message if asked)."""
        record = msgpack.packb(
            [
                VERSION,
                used.message_key,
                used.ad,
                used.header,
                used.info,
                used.message if include_message else None,
            ],
            use_bin_type=True,
        )
        e = spec.generate_dh(rng)
        key = _record_key(e.dh(self.public), e.public, self.public)
        blob = bytes((VERSION,)) + e.public + spec.encrypt(key, record, e.public + self.public, _RECORD_INFO)
        return _frame(blob, body)


class EscrowKeyPair:
    """The escrow agent's key pair. Its private half opens every escrowed message key."""

    __slots__ = ("_pair",)

    def __init__(self, private: bytes) -> None:
        if len(private) != 32:
            raise UsageError("an escrow private key is 32 bytes")
        self._pair = _p.x25519_pair_from_private(private)

    @classmethod
    def generate(cls, rng: RNG = os.urandom) -> EscrowKeyPair:
        return cls(rng(32))

    @property
    def public_key(self) -> EscrowPublicKey:
        return EscrowPublicKey(self._pair.public)

    def open_record(self, blob: bytes) -> EscrowRecord:
        """Decrypt one escrow blob. Any failure is ``DecryptionError``."""
        if len(blob) < _MIN_BLOB or blob[0] != VERSION:
            raise DecryptionError()
        e_public = blob[1:33]
        public = self._pair.public
        try:
            key = _record_key(self._pair.dh(e_public), e_public, public)
        except _p.AuthenticationFailed:
            raise DecryptionError() from None
        packed = spec.decrypt(key, blob[33:], e_public + public, _RECORD_INFO)
        try:
            version, mk, ad, header, info, message = msgpack.unpackb(packed, raw=False)
        except Exception:  # msgpack raises several unrelated types on garbage
            raise DecryptionError() from None
        # (type() is int: msgpack's true unpacks as a bool, an int equal to 1)
        if (
            type(version) is not int
            or version != VERSION
            or not all(type(x) is bytes for x in (mk, ad, header, info))
        ):
            raise DecryptionError()
        if message is not None and not isinstance(message, bytes):
            raise DecryptionError()
        return EscrowRecord(mk, ad, header, info, message)

    def read(self, body: bytes) -> bytes:
        """The plaintext of a captured envelope body, through its escrow record.

        ``DecryptionError`` when the body carries no escrow frame (sent before escrow began), or
        the record is not for this key, or it does not open the message.
        """
        blob, inner = unframe(body)
        if blob is None:
            raise DecryptionError()
        record = self.open_record(blob)
        message = record.message
        if message is None:
            message = parse_ciphertext(inner)[1]
        return record.decrypt(message)
