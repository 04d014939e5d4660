"""Safety numbers: Signal's numeric fingerprint of two identity keys, as libsignal computes it.

libsignal's ``NumericFingerprintGenerator`` (rust/protocol/src/fingerprint.rs): for each side,
SHA-512 over fingerprint version 0 (two bytes, 0x0000) ‖ the encoded identity key ‖ the stable
identifier ‖ the encoded identity key, then ``iterations - 1`` more rounds of SHA-512 over the
previous hash ‖ the encoded identity key (clients use 5200 rounds). The displayable form takes
the first 30 bytes of each side's hash as six 5-byte big-endian numbers, each mod 100000 and
printed as five digits (30 digits per side); the two halves are sorted and joined, so both
phones show the same 60 digits. The scannable form (the QR code) is the protobuf
``CombinedFingerprints`` {version, local {content: first 32 bytes}, remote {content: ...}};
a phone that scans the other's code checks that its remote is the other's local and vice versa.

The identity key is encoded as libsignal encodes a Curve25519 public key: 0x05 ‖ 32 bytes.
The stable identifier is the account name here (Signal used the phone number in scannable
version 1 and the ACI service id in version 2). SHA-512 is the standard library's.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from relaysim.relay.wire import EC_KEY_TYPE

__all__ = [
    "FINGERPRINT_ITERATIONS",
    "SCANNABLE_VERSION",
    "FingerprintError",
    "FingerprintVersionMismatch",
    "SafetyNumber",
    "displayable",
    "fingerprint_hash",
    "safety_number",
    "scannable",
    "scannable_matches",
]

FINGERPRINT_ITERATIONS = 5200  # what Signal's clients use
SCANNABLE_VERSION = 2  # the CombinedFingerprints version current Signal clients encode
_FINGERPRINT_VERSION = b"\x00\x00"  # hashed into every side, whatever the scannable version


class FingerprintError(ValueError):
    """A scanned code is not a CombinedFingerprints message (libsignal's ``FingerprintParsingError``)."""


class FingerprintVersionMismatch(FingerprintError):
    """A scanned code of another CombinedFingerprints version than ours (libsignal's
    ``FingerprintVersionMismatch(theirs, ours)``): the phones cannot be compared, which is not a mismatch."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(f"the scanned code is fingerprint version {theirs}, ours is {ours}")
        self.theirs, self.ours = theirs, ours


def _encode_key(identity_key: bytes) -> bytes:
    if len(identity_key) == 33 and identity_key[:1] == EC_KEY_TYPE:
        return identity_key
    if len(identity_key) != 32:
        raise ValueError(
            f"an identity key is 32 bytes (or 33 with the 0x05 type byte), got {len(identity_key)}"
        )
    return EC_KEY_TYPE + identity_key


def fingerprint_hash(
    stable_id: bytes, identity_key: bytes, iterations: int = FINGERPRINT_ITERATIONS
) -> bytes:
    """One side's 64-byte iterated SHA-512 (libsignal ``Fingerprint::get_fingerprint``)."""
    if not 1 < iterations <= 1_000_000:
        raise ValueError(f"fingerprint iterations must be from 2 to 1000000, got {iterations}")
    key = _encode_key(identity_key)
    digest = hashlib.sha512(_FINGERPRINT_VERSION + key + stable_id + key).digest()
    for _ in range(1, iterations):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def displayable(local_hash: bytes, remote_hash: bytes) -> str:
    """The 60 digits both phones show: the two 30-digit halves, the smaller first."""
    for name, digest in (("local", local_hash), ("remote", remote_hash)):
        if len(digest) < 30:  # libsignal: "DisplayableFingerprint created with short encoding"
            raise ValueError(f"the {name} fingerprint hash must be at least 30 bytes, got {len(digest)}")
    a, b = _digits(local_hash), _digits(remote_hash)
    return a + b if a < b else b + a


def _field_bytes(number: int, payload: bytes) -> bytes:
    # protobuf: key (field number, wire type 2), length as a one-byte varint, payload
    if len(payload) >= 128:
        raise ValueError(
            f"a scannable fingerprint field of {len(payload)} bytes: only lengths below 128 are written "
            "(a one-byte protobuf length; libsignal's fields are 32 bytes of content)"
        )
    return bytes([number << 3 | 2, len(payload)]) + payload


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def scannable(version: int, local_hash: bytes, remote_hash: bytes) -> bytes:
    """The protobuf ``CombinedFingerprints`` a phone shows as its QR code (libsignal's field order).

    ``version`` is any uint32, as libsignal's ``ScannableFingerprint`` takes one, and is always
    written, 0 too (a proto2 optional field, set): libsignal has one layout for every version, the
    first 32 bytes of each side's hash as content. (libsignal-protocol-c's version 0 codes held the
    whole encoded key and the stable identifier instead; current libsignal neither writes nor reads
    that layout, and nor does this.)"""
    if type(version) is not int or not 0 <= version <= 0xFFFF_FFFF:
        raise ValueError(
            f"scannable fingerprint version must be an integer from 0 to 2**32 - 1, got {version!r}"
        )
    for name, digest in (("local", local_hash), ("remote", remote_hash)):
        if len(digest) < 32:  # libsignal's ScannableFingerprint::new takes [..32] of each
            raise ValueError(f"the {name} fingerprint hash must be at least 32 bytes, got {len(digest)}")
    return (
        b"\x08"
        + _write_varint(version)
        + _field_bytes(2, _field_bytes(1, local_hash[:32]))
        + _field_bytes(3, _field_bytes(1, remote_hash[:32]))
    )


def _varint(code: bytes, i: int, what: str) -> tuple[int, int]:
    """(value, next offset) of the protobuf varint at ``code[i]``: at most 10 bytes and 64 bits.

    As prost's ``decode_varint`` (libsignal's decoder): a 10th byte above 0x01 carries bits past the
    64th and is refused (``InvalidVarint``), not cut to 64 bits as some parsers do."""
    value = 0
    for shift in range(0, 70, 7):  # at most 10 bytes (a 64-bit value)
        if i >= len(code):
            raise FingerprintError(f"{what} is truncated")
        b = code[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if shift == 63 and b > 0x01:
                raise FingerprintError(f"{what}: a varint past 64 bits (its 10th byte is {b:#04x})")
            return value, i
    raise FingerprintError(f"{what}: a varint longer than 10 bytes")


_MAX_GROUP_DEPTH = 100  # prost's recursion limit, for the (deprecated) groups it skips


def _field(code: bytes, i: int, what: str, depth: int = 0) -> tuple[int, int, int | bytes, int]:
    """(field number, wire type, value, next offset) of the protobuf field at ``code[i]``. A group
    (wire types 3 ... 4, deprecated) is skipped whole, as prost skips one, and read as b""."""
    key, i = _varint(code, i, f"{what}: a field key")
    number, wire_type = key >> 3, key & 7
    if number == 0 or key > 0xFFFF_FFFF:
        raise FingerprintError(f"{what}: field number {number} (protobuf's are 1 to 2**29 - 1)")
    value: int | bytes
    if wire_type == 0:
        value, i = _varint(code, i, f"{what}: field {number}")
    elif wire_type in (1, 2, 5):
        if wire_type == 2:
            size, i = _varint(code, i, f"{what}: the length of field {number}")
        else:
            size = 8 if wire_type == 1 else 4
        if i + size > len(code):
            raise FingerprintError(f"{what}: field {number} runs past the end")
        value = code[i : i + size]
        i += size
    elif wire_type == 3:
        if depth >= _MAX_GROUP_DEPTH:
            raise FingerprintError(f"{what}: groups nested more than {_MAX_GROUP_DEPTH} deep")
        while True:
            if i >= len(code):
                raise FingerprintError(f"{what}: group {number} has no end")
            inner, inner_type, _, i = _field(code, i, what, depth + 1)
            if inner_type == 4:
                if inner != number:
                    raise FingerprintError(f"{what}: group {number} ended as group {inner}")
                break
        value = b""
    elif wire_type == 4:
        if depth == 0:
            raise FingerprintError(f"{what}: the end of group {number}, which was not begun")
        value = b""
    else:
        raise FingerprintError(f"{what}: unexpected protobuf wire type {wire_type} (field {number})")
    return number, wire_type, value, i


def _fields(code: bytes, what: str) -> dict[int, list[tuple[int, int | bytes]]]:
    """Every field of a protobuf message, by number: [(wire type, value), ...] in the order read
    (the caller skips those it does not know, as protobuf parsers do)."""
    fields: dict[int, list[tuple[int, int | bytes]]] = {}
    i = 0
    while i < len(code):
        number, wire_type, value, i = _field(code, i, what)
        fields.setdefault(number, []).append((wire_type, value))
    return fields


def _message(fields: dict[int, list[tuple[int, int | bytes]]], number: int, what: str) -> bytes | None:
    """An embedded message field: None if absent; several occurrences merge as their concatenation
    (protobuf's rule for a message field seen more than once)."""
    parts = fields.get(number, [])
    if any(wire_type != 2 for wire_type, _ in parts):
        raise FingerprintError(f"{what}: field {number} is not a length-delimited message")
    return b"".join(v for _, v in parts if isinstance(v, bytes)) if parts else None


def _parse_scannable(code: bytes) -> tuple[int, bytes | None, bytes | None]:
    """(version, local content, remote content) of a CombinedFingerprints message, as libsignal's
    protobuf decoder reads it: unknown fields skipped, a missing version 0, a missing fingerprint or
    content None. ``FingerprintError`` if it is not protobuf or a known field has the wrong type."""
    outer = _fields(code, "the scanned code")
    versions = outer.get(1, [])
    if any(wire_type != 0 for wire_type, _ in versions):
        raise FingerprintError("the scanned code: field 1 (version) is not a varint")
    # uint32: the last value read (a 64-bit varint, _varint), cut to 32 bits as prost's uint32 merge does
    # (``value as u32``); absent, 0 (libsignal's unwrap_or(0))
    version = int(versions[-1][1]) & 0xFFFF_FFFF if versions else 0

    def content(number: int, name: str) -> bytes | None:
        inner = _message(outer, number, "the scanned code")
        if inner is None:
            return None
        what = f"the scanned code's {name} fingerprint"
        return _message(_fields(inner, what), 1, what)  # LogicalFingerprint.content

    return version, content(2, "local"), content(3, "remote")


def scannable_matches(mine: bytes, scanned: bytes) -> bool:
    """Does the code ``scanned`` off the other phone match ours (its local = our remote and back)?

    As libsignal's ``ScannableFingerprint::compare``: ``FingerprintError`` for a code that is not a
    CombinedFingerprints message or lacks a fingerprint's content (``FingerprintParsingError``);
    ``FingerprintVersionMismatch`` for one of another version, checked before the fingerprints are;
    otherwise True or False — a content of any other length than ours is simply not a match."""
    my_version, my_local, my_remote = _parse_scannable(mine)
    version, local, remote = _parse_scannable(scanned)
    if version != my_version:
        raise FingerprintVersionMismatch(version, my_version)
    if my_local is None or my_remote is None:
        raise FingerprintError("our own code lacks a fingerprint's content")
    if local is None or remote is None:
        raise FingerprintError(
            f"the scanned code has no {'local' if local is None else 'remote'} fingerprint content"
        )
    same_local = hmac.compare_digest(local, my_remote)
    same_remote = hmac.compare_digest(remote, my_local)
    return same_local and same_remote


@dataclass(frozen=True)
class SafetyNumber:
    """What one phone shows for one contact: the 60 digits and the QR code's bytes."""

    digits: str
    code: bytes

    def grouped(self) -> str:
        """The digits as Signal shows them: twelve groups of five."""
        return " ".join(self.digits[i : i + 5] for i in range(0, 60, 5))

    def matches(self, scanned: bytes) -> bool:
        return scannable_matches(self.code, scanned)


def safety_number(
    local_id: str | bytes,
    local_key: bytes,
    remote_id: str | bytes,
    remote_key: bytes,
    *,
    version: int = SCANNABLE_VERSION,
    iterations: int = FINGERPRINT_ITERATIONS,
) -> SafetyNumber:
    """The safety number ``local`` shows for ``remote`` (libsignal ``Fingerprint::new``)."""
    lid = local_id.encode() if isinstance(local_id, str) else local_id
    rid = remote_id.encode() if isinstance(remote_id, str) else remote_id
    local = fingerprint_hash(lid, local_key, iterations)
    remote = fingerprint_hash(rid, remote_key, iterations)
    return SafetyNumber(displayable(local, remote), scannable(version, local, remote))
