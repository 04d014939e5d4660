"""Every constant the protocol code uses, pinned to the value the specification (or libsignal, where the
specification leaves it to the application) gives it. docs/conformance.md, "Constants", names each
one's source; a change to any of them here is a change of protocol, not a refactoring.

Each value is checked twice where it can be: the constant itself, and the behaviour computed from first
principles (hashlib, hmac, ``cryptography``) rather than through the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from relaysim.clients import _mlkem, agent, fingerprint, groups, ratchet, spec, x3dh
from relaysim.clients import _primitives as p
from relaysim.relay import wire

DOCS = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def _hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def test_x3dh_kdf_is_f_then_km_under_a_zero_salt_cut_at_32_bytes() -> None:
    # X3DH §2.2: F = 32 0xFF bytes (X25519), salt = HashLen zero bytes, output 32 bytes
    assert spec._X3DH_F == b"\xff" * 32
    km = bytes(range(96))
    assert spec.x3dh_kdf(km, b"info") == _hkdf(b"\xff" * 32 + km, bytes(32), b"info", 32)


def test_encode_public_key_is_0x05_and_the_u_coordinate() -> None:
    # X3DH §2.1 Encode(PK), libsignal's DJB type byte 0x05
    assert wire.EC_KEY_TYPE == b"\x05"
    assert spec.encode_public_key(bytes(range(32))) == b"\x05" + bytes(range(32))


def test_the_x3dh_and_pqxdh_info_strings() -> None:
    # X3DH §2.1: an ASCII string identifying the application. PQXDH §2.1: at least 8 bytes, then the
    # curve, the hash and the KEM, "<info>_CURVE25519_SHA-256_CRYSTALS-KYBER-1024" with the KEM named
    # honestly: ours is FIPS 203 ML-KEM-1024, which Signal's Kyber-1024 round 3 is not wire-compatible with
    assert x3dh.X3DH_INFO == b"relaysim_X3DH_CURVE25519_SHA-256"
    assert x3dh.PQXDH_INFO == b"relaysim_CURVE25519_SHA-256_ML-KEM-1024"
    app = x3dh.PQXDH_INFO.removesuffix(b"_CURVE25519_SHA-256_ML-KEM-1024")
    assert app != x3dh.PQXDH_INFO and len(app) >= 8 and app.isascii()
    assert b"KYBER" not in x3dh.PQXDH_INFO.upper()


def test_the_kem_is_ml_kem_1024_with_its_sizes() -> None:
    # FIPS 203 ML-KEM-1024 (PQXDH's KEM here): encapsulation key and ciphertext 1568 bytes each, shared
    # secret 32, seed d ‖ z 64; EncodeKEM's type byte is libsignal's for ML-KEM-1024, 0x0A
    assert (p.MLKEM1024_PUBLIC_KEY_SIZE, p.MLKEM1024_CIPHERTEXT_SIZE, p.MLKEM1024_SEED_SIZE) == (
        1568,
        1568,
        64,
    )
    assert (_mlkem.K, _mlkem.EK_SIZE, _mlkem.CT_SIZE, _mlkem.SS_SIZE) == (4, 1568, 1568, 32)
    assert wire.KEM_KEY_TYPE == b"\x0a"
    key = MLKEM1024PrivateKey.generate()
    public = p.mlkem_public_bytes(key)
    ss, ct = p.mlkem_encapsulate(public)
    assert (len(public), len(ct), len(ss)) == (1568, 1568, 32)
    assert key.decapsulate(ct) == ss


def test_kdf_rk_is_hkdf_64_bytes_under_libsignals_info() -> None:
    # DR §5.2 KDF_RK: HKDF-SHA256, salt = rk, ikm = dh_out, 64 bytes; info libsignal's "WhisperRatchet"
    assert ratchet.DEFAULT_CONFIG.root_info == b"WhisperRatchet"
    rk, dh_out = bytes(range(32)), bytes(range(32, 64))
    out = _hkdf(dh_out, rk, b"WhisperRatchet", 64)
    assert spec.kdf_rk(rk, dh_out, b"WhisperRatchet") == (out[:32], out[32:])


def test_kdf_ck_is_hmac_with_0x01_for_the_message_key_and_0x02_for_the_chain_key() -> None:
    # DR §5.2 KDF_CK
    assert (spec._MK_CONSTANT, spec._CK_CONSTANT) == (b"\x01", b"\x02")
    ck = bytes(range(32))
    assert spec.kdf_ck(ck) == (
        hmac.new(ck, b"\x02", hashlib.sha256).digest(),
        hmac.new(ck, b"\x01", hashlib.sha256).digest(),
    )


def test_encrypt_is_80_bytes_of_hkdf_cbc_with_pkcs7_and_the_full_tag() -> None:
    # DR §5.2 ENCRYPT: HKDF-SHA256 (zero salt, info libsignal's "WhisperMessageKeys") → 80 bytes: enc key,
    # auth key, IV; AES-256-CBC with PKCS#7; HMAC-SHA256 tag over AD ‖ ciphertext, here all 32 bytes
    # (§5.2 allows no fewer than 8; libsignal sends 8)
    assert ratchet.DEFAULT_CONFIG.aead_info == b"WhisperMessageKeys"
    assert spec._TAG_LEN == spec.HASH_LEN == 32
    mk = bytes(range(32))
    assert b"".join(spec._message_keys(mk, b"WhisperMessageKeys")) == _hkdf(
        mk, bytes(32), b"WhisperMessageKeys", 80
    )
    for n in (0, 1, 15, 16, 17, 100):
        sealed = spec.encrypt(mk, bytes(n), b"ad", b"WhisperMessageKeys")
        assert len(sealed) == (n // 16 + 1) * 16 + 32  # PKCS#7 always pads, a whole block at a multiple of 16


def test_max_skip_and_the_stored_skipped_keys_are_libsignals() -> None:
    # DR §3.5 leaves MAX_SKIP to the application; libsignal: 25,000 forward jumps, 2,000 stored skipped keys
    # (MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS), the same for sender keys, and 5 receiver chains / sender key
    # states
    assert ratchet.DEFAULT_MAX_SKIP == ratchet.DEFAULT_CONFIG.max_skip == 25_000
    assert ratchet.DEFAULT_MAX_STORED_SKIPPED == ratchet.DEFAULT_CONFIG.max_stored_skipped == 2_000
    assert (groups.MAX_FORWARD_JUMPS, groups.MAX_MESSAGE_KEYS) == (25_000, 2_000)
    assert ratchet.MAX_RECEIVING_CHAINS == groups.MAX_SENDER_KEY_STATES == 5


def test_key_and_signature_sizes() -> None:
    # X25519 (RFC 7748) keys 32 bytes; XEdDSA §3 signatures R ‖ s, 64 bytes
    pair = p.x25519_pair_from_private(bytes(range(32)))
    assert len(pair.public) == 32
    assert wire.SIGNATURE_SIZE == groups.SIGNATURE_LEN == 64
    assert len(spec.xeddsa_sign(bytes(range(32)), b"m", rng=lambda n: bytes(n))) == 64
    with pytest.raises(ValueError, match="32 bytes"):
        spec.encode_public_key(bytes(33))


def test_sender_keys_are_libsignals() -> None:
    # libsignal SenderChainKey and SenderMessageKey (docs/conformance.md, "Constants"): seed = HMAC(ck, 1),
    # ck' = HMAC(ck, 2), HKDF(seed, "WhisperGroup", 48) → IV [0:16], key [16:48]; the version byte is
    # libsignal's SENDERKEY_MESSAGE_CURRENT_VERSION (3) in both nibbles (protocol.rs)
    ck = bytes(range(32))
    seed = hmac.new(ck, b"\x01", hashlib.sha256).digest()
    assert groups.sender_chain_step(ck) == (seed, hmac.new(ck, b"\x02", hashlib.sha256).digest())
    derived = _hkdf(seed, None, b"WhisperGroup", 48)
    assert groups.GROUP_INFO == b"WhisperGroup"
    assert groups.sender_message_key(seed) == (derived[:16], derived[16:])
    assert groups.VERSION == 3 << 4 | 3 == 0x33


@pytest.mark.parametrize("n", [0, 1, 157, 158, 159, 300])
def test_signal_padding_is_push_transport_details(n: int) -> None:
    # libsignal-service's PushTransportDetails (as Signal-Desktop's getPaddedMessageLength): the body,
    # 0x80, zeros, to getPaddedMessageLength(n + 1) - 1 bytes, blocks of 160
    assert agent.SIGNAL_PAD_BLOCK == 160
    with_terminator = n + 2
    size = -(-with_terminator // 160) * 160 - 1
    padded = agent.pad(bytes([0x41]) * n, "signal")
    assert padded == bytes([0x41]) * n + b"\x80" + bytes(size - n - 1)
    assert agent.unpad(padded, "signal") == bytes([0x41]) * n


def test_safety_numbers_are_libsignals_numeric_fingerprint() -> None:
    # libsignal NumericFingerprintGenerator: 5200 iterations on clients; version 0 as 2 bytes hashed into
    # each side, SHA-512, each round over the previous digest ‖ the encoded key
    assert fingerprint.FINGERPRINT_ITERATIONS == 5200
    assert fingerprint._FINGERPRINT_VERSION == b"\x00\x00"
    key = b"\x05" + bytes(range(32))
    digest = hashlib.sha512(b"\x00\x00" + key + b"+14152222222" + key).digest()
    for _ in range(1, 3):
        digest = hashlib.sha512(digest + key).digest()
    assert fingerprint.fingerprint_hash(b"+14152222222", key, iterations=3) == digest


def test_docs_name_each_constant_and_its_source() -> None:
    """docs/conformance.md's "Constants" table names each constant pinned here, its value and its source."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Constants", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "`relaysim_X3DH_CURVE25519_SHA-256`",
        "`relaysim_CURVE25519_SHA-256_ML-KEM-1024`",
        "`WhisperRatchet`",
        "`WhisperMessageKeys`",
        "`WhisperGroup`",
        "25,000",
        "2,000",
        "1568",
        "0x0A",
        "0x05",
        "0x33",
        "160",
        "5200",
        "X3DH §2.2",
        "PQXDH §2.1",
        "§5.2",
        "FIPS 203",
        "XEdDSA §3",
        "PushTransportDetails",
        "NumericFingerprintGenerator",
    ):
        assert needle in section, f"docs/conformance.md's Constants table does not name {needle}"


def test_docs_name_the_known_answers_and_peers_the_tests_run_and_no_others() -> None:
    """The "Test vectors" section names each known-answer source a test cites and each independent peer a
    test runs against, and no source no test checks (libsignal-protocol-java's RatchetingSessionTest and
    RootKeyTest were named, never run)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Test vectors", 1)[1].split("\n## ", 1)[0]
    tests = Path(__file__).resolve().parents[1]
    sources = "\n".join(
        f.read_text(encoding="utf-8") for f in sorted(tests.rglob("*.py")) if f.name != Path(__file__).name
    )
    named = {
        "test_chain_key_derivation": "tests/clients/test_spec_vectors.py",
        "rust/protocol/tests/ratchet.rs": "tests/clients/test_spec_vectors.py",
        "RFC 7748": "tests/clients/test_spec_vectors.py",
        "fingerprint.rs": "tests/clients/test_fingerprint.py",
        "test_fingerprint.c": "tests/clients/test_fingerprint.py",
        "tests/xeddsa_vectors.py": "tests/clients/test_xeddsa_vectors.py",
        "`xeddsa`": "tests/clients/test_xeddsa.py",
        "`x3dh` 1.3.0": "tests/clients/test_interop.py",
        "`doubleratchet` 1.3.0": "tests/clients/test_interop.py",
        "OpenSSL": "tests/clients/test_mlkem.py",
    }
    for needle, where in named.items():
        assert needle in section, f"docs/conformance.md's Test vectors section does not name {needle}"
        assert (tests.parent / where).is_file()
        assert where in section, f"docs/conformance.md's Test vectors section does not name {where}"
    for unrun in ("RatchetingSessionTest", "RootKeyTest"):
        if unrun not in sources:
            assert unrun not in section.split("Not run:", 1)[0], (
                f"{unrun} is named as run, and no test runs it"
            )
