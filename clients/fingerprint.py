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
    """A scanned code is not a CombinedFingerprints message, or is of another version."""


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
    a, b = _digits(local_hash), _digits(remote_hash)
    return a + b if a < b else b + a


def _field_bytes(number: int, payload: bytes) -> bytes:
    # protobuf: key (field number, wire type 2), varint length (< 128 here), payload
    return bytes([number << 3 | 2, len(payload)]) + payload


def scannable(version: int, local_hash: bytes, remote_hash: bytes) -> bytes:
    """The protobuf ``CombinedFingerprints`` a phone shows as its QR code (libsignal's field order)."""
    if not 0 <= version < 128:
        raise ValueError(f"scannable fingerprint version must be from 0 to 127, got {version}")
    return (
        bytes([0x08, version])
        + _field_bytes(2, _field_bytes(1, local_hash[:32]))
        + _field_bytes(3, _field_bytes(1, remote_hash[:32]))
    )


def _parse_scannable(code: bytes) -> tuple[int, bytes, bytes]:
    """(version, local content, remote content) of a CombinedFingerprints message."""
    fields: dict[int, object] = {}
    i = 0
    try:
        while i < len(code):
            key = code[i]
            i += 1
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value = 0
                shift = 0
                while True:
                    b = code[i]
                    i += 1
                    value |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                fields[number] = value
            elif wire_type == 2:
                length = code[i]
                i += 1
                if length & 0x80 or i + length > len(code):
                    raise FingerprintError("a length-delimited field runs past the end")
                fields[number] = code[i : i + length]
                i += length
            else:
                raise FingerprintError(f"unexpected protobuf wire type {wire_type}")
    except IndexError:
        raise FingerprintError("the scanned code is truncated") from None

    def content(n: int) -> bytes:
        inner = fields.get(n)
        if not isinstance(inner, bytes) or len(inner) < 2 or inner[0] != 0x0A or inner[1] != len(inner) - 2:
            raise FingerprintError(f"field {n} is not a LogicalFingerprint with content")
        return inner[2:]

    version = fields.get(1, 0)
    assert isinstance(version, int)
    return version, content(2), content(3)


def scannable_matches(mine: bytes, scanned: bytes) -> bool:
    """Does the code ``scanned`` off the other phone match ours (its local = our remote and back)?

    Raises ``FingerprintError`` for a code that is not a CombinedFingerprints message or is of
    another version (libsignal's ``FingerprintVersionMismatch``)."""
    my_version, my_local, my_remote = _parse_scannable(mine)
    version, local, remote = _parse_scannable(scanned)
    if version != my_version:
        raise FingerprintError(f"the scanned code is fingerprint version {version}, ours is {my_version}")
    return hmac.compare_digest(local, my_remote) and hmac.compare_digest(remote, my_local)


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
