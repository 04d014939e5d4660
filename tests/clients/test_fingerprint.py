"""Safety numbers against libsignal's published test vectors.

Vectors from libsignal, rust/protocol/src/fingerprint.rs (tests ``fingerprint_test_v1``,
``fingerprint_test_v2``, ``fingerprint_encodings``), github.com/signalapp/libsignal at commit
03a739a95caeea91dbdef44b67b24735f401953c (also Java's ``testVectorsVersion1/2``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients.fingerprint import (
    FingerprintError,
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


def test_iteration_bounds_and_version_mismatch() -> None:
    with pytest.raises(ValueError, match="iterations"):
        fingerprint_hash(b"x", ALICE_IDENTITY, 1)
    v1 = safety_number(ALICE_STABLE_ID, ALICE_IDENTITY, BOB_STABLE_ID, BOB_IDENTITY, version=1)
    v2 = safety_number(BOB_STABLE_ID, BOB_IDENTITY, ALICE_STABLE_ID, ALICE_IDENTITY, version=2)
    with pytest.raises(FingerprintError, match="version"):
        v1.matches(v2.code)
    with pytest.raises(FingerprintError):
        v1.matches(v2.code[:-3])


keys = st.binary(min_size=32, max_size=32)


@given(keys, keys, keys)
def test_a_substituted_key_changes_both_forms(a: bytes, b: bytes, m: bytes) -> None:
    if m == b:
        return
    ha, hb, hm = (fingerprint_hash(i, k, 2) for i, k in ((b"a", a), (b"b", b), (b"b", m)))
    assert displayable(ha, hb) == displayable(hb, ha)
    assert not scannable_matches(scannable(2, ha, hm), scannable(2, hb, ha))
    assert scannable_matches(scannable(2, ha, hb), scannable(2, hb, ha))
