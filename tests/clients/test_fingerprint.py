"""Safety numbers against libsignal's published test vectors.

Vectors from libsignal, rust/protocol/src/fingerprint.rs (tests ``fingerprint_test_v1``,
``fingerprint_test_v2``, ``fingerprint_encodings``), github.com/signalapp/libsignal at commit
03a739a95caeea91dbdef44b67b24735f401953c (also Java's ``testVectorsVersion1/2``), and from
libsignal-protocol-c, tests/test_fingerprint.c (``test_vectors_v0`` / ``test_vectors_v1``),
github.com/signalapp/libsignal-protocol-c at commit 3a989b625b21b47bda163ab4b350fe1b581bd51e.
Every one of those vectors was made with 5200 iterations (``fingerprint_generator_create(&generator,
5200, version, ...)`` in the C test; ``let iterations = 5200`` in the Rust ones); the 1024 iterations
of those sources' other tests (matching and mismatching fingerprints) go with random keys and no
known answer. What ``scannable_matches`` raises and returns follows libsignal's
``ScannableFingerprint::compare`` in the same fingerprint.rs.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients.fingerprint import (
    FINGERPRINT_ITERATIONS,
    FingerprintError,
    FingerprintVersionMismatch,
    displayable,
    fingerprint_hash,
    safety_number,
    scannable,
    scannable_matches,
)

ALICE_IDENTITY = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
BOB_IDENTITY = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
ALICE_STABLE_ID = "+14152222222"
BOB_STABLE_ID = "+14153333333"
DISPLAYABLE_FINGERPRINT = "300354477692869396892869876765458257569162576843440918079131"
ALICE_SCANNABLE_V1 = (
    "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    "1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)
BOB_SCANNABLE_V1 = (
    "080112220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
    "1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
)
ALICE_SCANNABLE_V2 = "0802" + ALICE_SCANNABLE_V1[4:]
BOB_SCANNABLE_V2 = "0802" + BOB_SCANNABLE_V1[4:]
# libsignal-protocol-c's ALICE_SCANNABLE_FINGERPRINT_V0: version 0, whose LogicalFingerprint held the
# whole encoded identity key as content and the stable identifier as field 2 (no longer written)
ALICE_SCANNABLE_V0_LIBSIGNAL_C = (
    "080012310a210506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d8"
    "68120c2b31343135323232323232321a310a2105f781b6fb32fed9ba1cf2de978d4d5da28dc3"
    "4046ae814402b5c0dbd96fda907b120c2b3134313533333333333333"
)
ALICE_SCANNABLE_V2_AS_PUBLISHED = (
    "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    "1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)


def test_the_v2_constants_are_libsignals() -> None:
    assert ALICE_SCANNABLE_V2 == ALICE_SCANNABLE_V2_AS_PUBLISHED


@pytest.mark.parametrize(
    ("version", "alice", "bob"),
    [(1, ALICE_SCANNABLE_V1, BOB_SCANNABLE_V1), (2, ALICE_SCANNABLE_V2, BOB_SCANNABLE_V2)],
)
def test_libsignal_vectors(version: int, alice: str, bob: str) -> None:
    a = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY, version=version)
    b = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY, version=version)
    assert a.digits == b.digits == DISPLAYABLE_FINGERPRINT
    assert a.code.hex() == alice
    assert b.code.hex() == bob
    assert a.matches(b.code) and b.matches(a.code)
    assert not a.matches(a.code)  # one's own code is not the other's


def test_raw_32_byte_keys_are_encoded_with_the_type_byte() -> None:
    a = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY[1:], BOB_STABLE_ID, BOB_IDENTITY[1:])
    assert a.digits == DISPLAYABLE_FINGERPRINT
    assert len(a.grouped().split()) == 12


def test_libsignal_encoding_vector() -> None:
    code = scannable(2, b"\x12" * 32, b"\xba" * 32)
    assert code.hex() == "080212220a20" + "12" * 32 + "1a220a20" + "ba" * 32


@pytest.mark.parametrize(
    ("version", "field"),
    [(0, "0800"), (127, "087f"), (128, "088001"), (300, "08ac02"), (2**32 - 1, "08ffffffff0f")],
)
def test_any_uint32_version_is_written_as_libsignal_writes_it(version: int, field: str) -> None:
    """libsignal's ``ScannableFingerprint`` takes a u32 version and always writes it (proto2 ``optional
    uint32 version = 1``, set; prost's varint), in the one layout of ``fingerprint_encodings``: version 0
    too, and versions past 127 as longer varints; each reads back as its own version."""
    code = scannable(version, b"\x12" * 32, b"\xba" * 32)
    assert code.hex() == field + "12220a20" + "12" * 32 + "1a220a20" + "ba" * 32
    other = scannable(version, b"\xba" * 32, b"\x12" * 32)
    assert scannable_matches(code, other) and scannable_matches(other, code)
    with pytest.raises(FingerprintVersionMismatch) as raised:
        scannable_matches(code, scannable(version ^ 1, b"\xba" * 32, b"\x12" * 32))
    assert (raised.value.theirs, raised.value.ours) == (version ^ 1, version)


@pytest.mark.parametrize("version", [-1, 2**32, True])
def test_a_version_no_uint32_is_refused(version: int) -> None:
    with pytest.raises(ValueError, match="version must be an integer from 0 to 2\\*\\*32 - 1"):
        scannable(version, b"\x12" * 32, b"\xba" * 32)


def test_iteration_bounds_and_version_mismatch() -> None:
    with pytest.raises(ValueError, match="iterations"):
        fingerprint_hash(b"x", ALICE_IDENTITY, 1)
    v1 = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY, version=1)
    v2 = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY, version=2)
    with pytest.raises(FingerprintVersionMismatch, match="fingerprint version 2, ours is 1") as raised:
        v1.matches(v2.code)
    assert (raised.value.theirs, raised.value.ours) == (2, 1)  # libsignal's (their_version, self.version)
    with pytest.raises(FingerprintError, match="runs past the end"):
        v1.matches(v2.code[:-3])


def test_the_libsignal_c_vectors_were_made_with_5200_iterations() -> None:
    """libsignal-protocol-c's ``test_vectors_v0``/``_v1`` create their generator with 5200 iterations:
    the same 60 digits as libsignal's, and not what 1024 iterations give for these keys."""
    assert FINGERPRINT_ITERATIONS == 5200
    for version in (0, 1):
        a = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY, version=version)
        b = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY, version=version)
        assert a.digits == b.digits == DISPLAYABLE_FINGERPRINT
    at_1024 = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY, iterations=1024)
    assert at_1024.digits != DISPLAYABLE_FINGERPRINT


@pytest.mark.parametrize("iterations", [1024, 5200])
def test_both_iteration_counts_against_the_generator_written_out(iterations: int) -> None:
    """1024 (the sources' matching tests) and 5200 (the vectors and Signal's clients), each checked
    against libsignal's ``Fingerprint::get_fingerprint`` written out with hashlib, and the matching
    and mismatching tests of fingerprint.rs (``fingerprint_matching_identifiers``,
    ``fingerprint_mismatching_fingerprints``) at that count."""
    import hashlib

    def get_fingerprint(stable_id: bytes, key: bytes) -> bytes:
        buf = hashlib.sha512(b"\x00\x00" + key + stable_id + key).digest()
        for _ in range(1, iterations):
            buf = hashlib.sha512(buf + key).digest()
        return buf

    alice, bob = ALICE_STABLE_ID.encode(), BOB_STABLE_ID.encode()
    assert fingerprint_hash(alice, ALICE_IDENTITY, iterations) == get_fingerprint(alice, ALICE_IDENTITY)
    a = safety_number(alice, ALICE_IDENTITY, bob, BOB_IDENTITY, iterations=iterations)
    b = safety_number(bob, BOB_IDENTITY, alice, ALICE_IDENTITY, iterations=iterations)
    assert a.digits == b.digits and a.matches(b.code) and b.matches(a.code)
    assert not a.matches(a.code)
    mitm = safety_number(alice, ALICE_IDENTITY, bob, bytes(range(32)), iterations=iterations)
    assert mitm.digits != b.digits and not mitm.matches(b.code) and not b.matches(mitm.code)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field, any length
    n, length = len(payload), b""
    while n >= 0x80:
        length += bytes([n & 0x7F | 0x80])
        n >>= 7
    return bytes([number << 3 | 2]) + length + bytes([n]) + payload


def test_scanned_codes_compare_as_libsignals_compare_does() -> None:
    """libsignal's ``ScannableFingerprint::compare`` decodes the protobuf (unknown fields skipped),
    checks the version first (``FingerprintVersionMismatch``), then needs both contents
    (``FingerprintParsingError``) and compares them: any other content, of any length, is False."""
    a = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY)
    b = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY)
    local, remote = bytes.fromhex(BOB_SCANNABLE_V2[12:76]), bytes.fromhex(BOB_SCANNABLE_V2[84:])
    assert b.code == b"\x08\x02" + _field(2, _field(1, local)) + _field(3, _field(1, remote))

    def code(local: bytes, remote: bytes, extra: bytes = b"") -> bytes:
        return b"\x08\x02" + _field(2, _field(1, local)) + _field(3, _field(1, remote)) + extra

    # a mismatch is False, whatever the length of the content, 128 bytes and more too
    for other in (local[:31], local + b"\x00", bytes(128), bytes(300)):
        assert a.matches(code(other, remote)) is False
        assert a.matches(code(local, other)) is False
    # fields it does not know are skipped: a fixed32 and a fixed64 field, a string in the fingerprint
    unknown = b"\x4d" + bytes(4) + b"\x51" + bytes(8) + b"\x5b\x08\x01\x5c"  # ... and a group (11)
    assert a.matches(code(local, remote, unknown)) is True
    with_id = (
        b"\x08\x02" + _field(2, _field(1, local) + _field(2, b"+14153333333")) + _field(3, _field(1, remote))
    )
    assert a.matches(with_id) is True
    # libsignal-protocol-c's version 0 code: another version, not a parse failure
    with pytest.raises(FingerprintVersionMismatch, match="version 0, ours is 2"):
        a.matches(bytes.fromhex(ALICE_SCANNABLE_V0_LIBSIGNAL_C))
    # a code with no version field is version 0 (libsignal: ``combined.version.unwrap_or(0)``)
    with pytest.raises(FingerprintVersionMismatch, match="version 0, ours is 2"):
        a.matches(b.code[2:])
    # not CombinedFingerprints: each a FingerprintError that says what is wrong, never another error
    for bad, why in (
        (b"\x0a\x01\x02" + b.code[2:], "field 1 \\(version\\) is not a varint"),
        (b"\x08\x02" + _field(2, _field(1, local)), "no remote fingerprint content"),
        (b"\x08\x02" + _field(2, b"\x12\x00") + _field(3, _field(1, remote)), "no local fingerprint content"),
        (b"\x08\x02\x10\x02" + b.code[2:], "field 2 is not a length-delimited message"),
        (b"\x02\x00" + b.code, "field number 0"),
        (b.code + b"\x0b", "group 1 has no end"),
        (b.code + b"\x0b\x14", "group 1 ended as group 2"),
        (b.code + b"\x0c", "the end of group 1, which was not begun"),
        (b.code + b"\x0e", "unexpected protobuf wire type 6"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "a varint longer than 10 bytes"),
        (b.code[:-1], "runs past the end"),
        (b.code[:2] + b"\x12\xa2", "the length of field 2 is truncated"),
    ):
        with pytest.raises(FingerprintError, match=why):
            a.matches(bad)


def _varint(value: int, size: int) -> bytes:
    """``value`` as a protobuf varint of exactly ``size`` bytes (padded with continuation bytes)."""
    out = bytearray()
    for _ in range(size - 1):
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)  # the caller keeps it below 0x80 ... or not, to make an overflowing one
    return bytes(out)


def test_a_version_varint_is_read_to_64_bits_and_cut_to_32_and_one_past_64_bits_refused() -> None:
    """libsignal decodes CombinedFingerprints with prost. Its uint32 field reads the varint as a u64
    and keeps ``value as u32`` (prost encoding.rs, ``varint!(u32, uint32)``), so a 10-byte varint
    whose low 32 bits are the version reads as that version; a varint whose 10th byte is above 0x01
    holds bits past the 64th and prost's ``decode_varint`` refuses it (``InvalidVarint``, the check
    protobuf-go's ConsumeVarint makes), anywhere in the message, an unknown field's too. It was cut
    to 32 bits all the same and compared."""
    a = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY)
    b = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY)
    rest = b.code[2:]
    # within 64 bits: cut to 32, as prost's ``value as u32``
    for value in (2 + 2**32, 2 + 2**63, 2 + (2**64 - 2**32)):
        assert a.matches(b"\x08" + _varint(value, 10) + rest) is True
    with pytest.raises(FingerprintVersionMismatch, match="version 3, ours is 2"):
        a.matches(b"\x08" + _varint(3 + 2**63, 10) + rest)
    # past 64 bits: refused, whatever the low 32 bits say
    for value in (2 + 2**64, 2 + 2**69, 2**70 - 2**32 + 2):
        encoded = _varint(value, 10)
        assert encoded[-1] > 0x01 and encoded[-1] < 0x80
        with pytest.raises(FingerprintError, match="field 1: a varint past 64 bits"):
            a.matches(b"\x08" + encoded + rest)
        with pytest.raises(FingerprintError, match="field 9: a varint past 64 bits"):
            a.matches(b.code + b"\x48" + encoded)  # an unknown varint field 9
        with pytest.raises(FingerprintError, match="a varint past 64 bits"):
            scannable_matches(b"\x08" + encoded + a.code[2:], b.code)  # our own code too


def test_short_hashes_and_long_fields_get_a_clear_error() -> None:
    """libsignal refuses a displayable hash under 30 bytes ("created with short encoding") and takes
    the first 32 bytes of each hash for the scannable form; ours writes one-byte lengths only."""
    from relaysim.clients.fingerprint import _field_bytes

    full = fingerprint_hash(b"a", ALICE_IDENTITY, 2)
    with pytest.raises(ValueError, match="the remote fingerprint hash must be at least 30 bytes, got 29"):
        displayable(full, full[:29])
    with pytest.raises(ValueError, match="the local fingerprint hash must be at least 32 bytes, got 31"):
        scannable(2, full[:31], full)
    with pytest.raises(ValueError, match="field of 128 bytes: only lengths below 128 are written"):
        _field_bytes(1, bytes(128))
    assert scannable(2, full, full + b"longer") == scannable(2, full[:32], full[:32])


keys = st.binary(min_size=32, max_size=32)


@given(keys, keys, keys)
def test_a_substituted_key_changes_both_forms(a: bytes, b: bytes, m: bytes) -> None:
    if m == b:
        return
    ha, hb, hm = (fingerprint_hash(i, k, 2) for i, k in ((b"a", a), (b"b", b), (b"b", m)))
    assert displayable(ha, hb) == displayable(hb, ha)
    assert not scannable_matches(scannable(2, ha, hm), scannable(2, hb, ha))
    assert scannable_matches(scannable(2, ha, hb), scannable(2, hb, ha))
