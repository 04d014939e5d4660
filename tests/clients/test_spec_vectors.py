"""Known answers from libsignal's public tests, and the §5.2 algorithms checked against their definitions.

No official Signal test vectors exist (docs/conformance.md); these are the closest independent answers.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import _primitives as p
from relaysim.clients import spec
from relaysim.clients.keys import IdentityKeyPair, PreKeySecrets
from relaysim.clients.x3dh import KeyAgreement, initiate, respond

H = bytes.fromhex


def test_chain_key_derivation_libsignal() -> None:
    # Source: libsignal rust/protocol/src/ratchet/keys.rs, test `test_chain_key_derivation`.
    seed = H("8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f")
    cipher_key = H("bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217")
    mac_key = H("c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b")
    next_chain_key = H("28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d")

    ck, mk = spec.kdf_ck(seed)
    assert ck == next_chain_key
    enc_key, auth_key, _iv = spec._message_keys(mk, b"WhisperMessageKeys")
    assert enc_key == cipher_key
    assert auth_key == mac_key


# Source: libsignal rust/protocol/tests/ratchet.rs, `test_ratcheting_session_as_bob` and
# `test_ratcheting_session_as_alice` (pre-Kyber, fixed keys). libsignal derives 64 bytes from the
# X3DH key material with info "WhisperText": a root key, then the first chain key, whose expected
# value these tests pin. The DH order is X3DH §3.3's.
BOB_IDENTITY_PRIVATE = H("4875cc69ddf8ea0719ec947d61081135868d5fd801f02c0225e516df2156605e")
BOB_SIGNED_PREKEY_PRIVATE = H("583900131fb727998b7803fe6ac22cc591f342e4e42a8c8d5d78194209b8d253")
ALICE_IDENTITY_PRIVATE = H("9040f0d4e09cf38f6dc7c13779c908c015a1da4fa78737a080eb0a6f4f5f8f58")
ALICE_BASE_PRIVATE = H("11ae7c64d1e61cd596b76a0db5012673391cae66edbfcf073b4da80516a47449")
ALICE_IDENTITY_PUBLIC = H("b4a8455660ada65b401007f615e654041746432e3339c6875149bceefcb42b4a")
ALICE_BASE_PUBLIC = H("472d1fb1a9862c3af6beaca8920277e2b26f4a79213ec7c906aeb35e03cf8950")
BOB_IDENTITY_PUBLIC = H("f1f43874f6966956c2dd473f8fa15adeb71d1cb991b2341692324cefb1c5e626")
BOB_SIGNED_PREKEY_PUBLIC = H("ac248a8f263be6863576eb0362e28c828f0107a3379d34bab1586bf8c770cd67")


def _libsignal_chain(km: bytes) -> tuple[bytes, bytes]:
    out = p.hkdf_sha256(b"\xff" * 32 + km, b"", b"WhisperText", 64)
    return out[:32], out[32:]


def test_ratcheting_session_as_bob_libsignal() -> None:
    bob_id = p.x25519_pair_from_private(BOB_IDENTITY_PRIVATE)
    bob_spk = p.x25519_pair_from_private(BOB_SIGNED_PREKEY_PRIVATE)
    assert bob_id.public == BOB_IDENTITY_PUBLIC
    assert bob_spk.public == BOB_SIGNED_PREKEY_PUBLIC
    # Bob's side: DH1 = DH(SPK_B, IK_A), DH2 = DH(IK_B, EK_A), DH3 = DH(SPK_B, EK_A)
    km = bob_spk.dh(ALICE_IDENTITY_PUBLIC) + bob_id.dh(ALICE_BASE_PUBLIC) + bob_spk.dh(ALICE_BASE_PUBLIC)
    root, chain = _libsignal_chain(km)
    assert chain == H("9797caca53c989bbe229a40ca7727010eb2604fc14945d77958a0aeda088b44d")
    # Our X3DH KDF is the same HKDF cut at 32 bytes: the root key.
    assert spec.x3dh_kdf(km, b"WhisperText") == root


def test_ratcheting_session_as_alice_libsignal() -> None:
    alice_id = p.x25519_pair_from_private(ALICE_IDENTITY_PRIVATE)
    alice_base = p.x25519_pair_from_private(ALICE_BASE_PRIVATE)
    km = (
        alice_id.dh(BOB_SIGNED_PREKEY_PUBLIC)
        + alice_base.dh(BOB_IDENTITY_PUBLIC)
        + alice_base.dh(BOB_SIGNED_PREKEY_PUBLIC)
    )
    _root, chain = _libsignal_chain(km)
    assert chain == H("ab9be50e5cb22a925446ab90ee5670545f4fd32902459ec274b6ad0ae5d6031a")


# --- PQXDH (rev 3), computed here from cryptography's X25519, ML-KEM-1024 and HKDF --------------
#
# No other implementation of PQXDH with ML-KEM-1024 is at hand (the PyPI x3dh package has no KEM, and
# Signal deploys Kyber-1024 round 3), so SK is derived here step by step from the spec's text and the
# primitives of another library: PQXDH §2.2 KDF(KM) = HKDF-SHA256(F ‖ KM, salt of 32 zero bytes, info),
# F = 32 0xFF bytes; §3.3 KM = DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS; AD = EncodeEC(IK_A) ‖ EncodeEC(IK_B);
# the signatures are XEdDSA over EncodeEC(SPK_B) and EncodeKEM(PQPK_B), checked with the PyPI xeddsa
# package. EncodeKEM is 0x0A ‖ key, libsignal's key type byte for ML-KEM-1024 (docs/protocol.md).

PQXDH_INFO = b"relaysim_CURVE25519_SHA-256_ML-KEM-1024"  # names the KEM it uses (clients/x3dh.py)


def _x25519(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


@pytest.mark.parametrize("one_time", [True, False], ids=["with-OPK", "without-OPK"])
def test_pqxdh_sk_ad_and_signatures_from_the_spec_text(one_time: bool) -> None:
    import xeddsa  # the independent XEdDSA (PyPI), as tests/clients/test_interop.py uses it

    bob = PreKeySecrets(IdentityKeyPair.generate())
    bob.new_signed_prekey()
    bob.new_one_time_prekeys(1)
    bob.new_kem_prekeys(1)
    bundle = bob.bundle(one_time=one_time)
    assert bundle.kem_prekey is not None
    alice = IdentityKeyPair.generate()
    ours, initial = initiate(alice.pair, bundle, pq=True)
    assert (initial.one_time_prekey_id is not None) == one_time
    assert initial.kem_prekey_id == bundle.kem_prekey.id and initial.kem_ciphertext is not None

    spk_b = bob.signed[initial.signed_prekey_id][0].private
    km = (
        _x25519(spk_b, alice.public)  # DH1 = DH(IK_A, SPK_B)
        + _x25519(bob.identity.private, initial.ephemeral_key)  # DH2 = DH(EK_A, IK_B)
        + _x25519(spk_b, initial.ephemeral_key)  # DH3 = DH(EK_A, SPK_B)
    )
    if one_time:
        assert initial.one_time_prekey_id is not None
        opk_b = bob.one_time[initial.one_time_prekey_id].private
        km += _x25519(opk_b, initial.ephemeral_key)  # DH4 = DH(EK_A, OPK_B)
    seed = bob.kem.seed(initial.kem_prekey_id)
    assert seed is not None
    km += MLKEM1024PrivateKey.from_seed_bytes(seed).decapsulate(initial.kem_ciphertext)  # SS
    sk = HKDF(hashes.SHA256(), 32, salt=bytes(32), info=PQXDH_INFO).derive(b"\xff" * 32 + km)

    assert ours.sk == sk
    assert ours.ad == b"\x05" + alice.public + b"\x05" + bob.identity.public
    assert tuple(respond(bob, initial)[0]) == (sk, ours.ad)

    ed_public = xeddsa.curve25519_pub_to_ed25519_pub(bundle.identity_key, False)
    spk, kem = bundle.signed_prekey, bundle.kem_prekey
    assert xeddsa.ed25519_verify(spk.signature, ed_public, b"\x05" + spk.public)
    assert xeddsa.ed25519_verify(kem.signature, ed_public, b"\x0a" + kem.public)
    assert not xeddsa.ed25519_verify(kem.signature, ed_public, kem.public)


X3DH_INFO = b"relaysim_X3DH_CURVE25519_SHA-256"  # X3DH §2.1: the application's name (clients/x3dh.py)


@pytest.mark.parametrize("one_time", [True, False], ids=["with-OPK", "without-OPK"])
def test_x3dh_sk_and_ad_from_the_spec_text(one_time: bool) -> None:
    """X3DH (rev 1) §3.3, as the PQXDH test above without the KEM: SK = HKDF-SHA256(F ‖ DH1 ‖ DH2 ‖
    DH3 [‖ DH4], salt of 32 zero bytes, info), from cryptography's X25519 and HKDF, under our info
    string (the PyPI x3dh package of test_interop is configured with the same constant, so it cannot
    tell a change of it)."""
    bob = PreKeySecrets(IdentityKeyPair.generate())
    bob.new_signed_prekey()
    bob.new_one_time_prekeys(1)
    bundle = bob.bundle(one_time=one_time, kem=False)
    alice = IdentityKeyPair.generate()
    ours, initial = initiate(alice.pair, bundle, pq=False)
    assert initial.kem_prekey_id is None and initial.kem_ciphertext is None
    spk_b = bob.signed[initial.signed_prekey_id][0].private
    km = (
        _x25519(spk_b, alice.public)
        + _x25519(bob.identity.private, initial.ephemeral_key)
        + _x25519(spk_b, initial.ephemeral_key)
    )
    if one_time:
        assert initial.one_time_prekey_id is not None
        km += _x25519(bob.one_time[initial.one_time_prekey_id].private, initial.ephemeral_key)
    sk = HKDF(hashes.SHA256(), 32, salt=bytes(32), info=X3DH_INFO).derive(b"\xff" * 32 + km)
    assert ours.sk == sk
    assert ours.ad == b"\x05" + alice.public + b"\x05" + bob.identity.public
    assert tuple(respond(bob, initial, pq=False)[0]) == (sk, ours.ad)


# --- §5.2 definitions, checked against cryptography's own HKDF / HMAC / AES ----------------------

keys = st.binary(min_size=32, max_size=32)


@given(rk=keys, dh_out=keys, info=st.binary(max_size=20))
def test_kdf_rk_is_hkdf_with_root_key_as_salt(rk: bytes, dh_out: bytes, info: bytes) -> None:
    out = HKDF(hashes.SHA256(), 64, salt=rk, info=info).derive(dh_out)
    assert spec.kdf_rk(rk, dh_out, info) == (out[:32], out[32:])


@given(rk=keys, dh_out=keys, info=st.binary(max_size=20))
def test_kdf_rk_he_is_hkdf_cut_into_root_chain_and_next_header_key(
    rk: bytes, dh_out: bytes, info: bytes
) -> None:
    """§4.2 KDF_RK_HE(rk, dh_out) → (rk, ck, nhk): the same HKDF as KDF_RK (salt = rk, ikm = dh_out),
    128 bytes cut in that order, the next header key the last 64 (an AES-256-SIV key). HKDF's
    output is a prefix of any longer one, so rk and ck are KDF_RK's."""
    out = HKDF(hashes.SHA256(), 128, salt=rk, info=info).derive(dh_out)
    assert spec.kdf_rk_he(rk, dh_out, info) == (out[:32], out[32:64], out[64:])
    assert spec.kdf_rk_he(rk, dh_out, info)[:2] == spec.kdf_rk(rk, dh_out, info)


@given(hk=st.binary(min_size=64, max_size=64), header=st.binary(min_size=40, max_size=40))
def test_hencrypt_is_aes_256_siv_with_one_empty_associated_data(hk: bytes, header: bytes) -> None:
    """§4.2 HENCRYPT / HDECRYPT: AES-256-SIV (RFC 5297, cryptography's AESSIV) under the 64-byte
    header key, with one empty associated-data string (a header needs no AD: the message's AEAD
    binds the encrypted header); HDECRYPT gives None under any other key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    sealed = spec.hencrypt(hk, header)
    assert sealed == AESSIV(hk).encrypt(header, [b""])
    assert len(sealed) == 16 + len(header)
    assert spec.hdecrypt(hk, sealed) == header
    assert spec.hdecrypt(bytes(a ^ 1 for a in hk), sealed) is None
    assert spec.hdecrypt(None, sealed) is None


@given(sk=keys)
def test_the_header_keys_are_hkdf_of_sk_under_their_own_info(sk: bytes) -> None:
    """§4.3 leaves how X3DH gives shared_hka and shared_nhkb to the application: here HKDF-SHA256 of
    SK (no salt) under the info "relaysim_DoubleRatchet_HeaderKeys", 128 bytes, two 64-byte AES-256-SIV
    keys in that order; other bytes than the root key SK starts (x3dh._HEADER_KEYS_INFO)."""
    out = HKDF(hashes.SHA256(), 128, salt=None, info=b"relaysim_DoubleRatchet_HeaderKeys").derive(sk)
    hka, nhkb = KeyAgreement(sk, b"").header_keys()
    assert (hka, nhkb) == (out[:64], out[64:])
    assert sk not in (hka[:32], nhkb[:32])


@given(ck=keys)
def test_kdf_ck_uses_0x02_for_chain_and_0x01_for_message(ck: bytes) -> None:
    nxt, mk = spec.kdf_ck(ck)
    assert nxt == hmac.new(ck, b"\x02", hashlib.sha256).digest()
    assert mk == hmac.new(ck, b"\x01", hashlib.sha256).digest()


@given(mk=keys, pt=st.binary(max_size=100), ad=st.binary(max_size=80))
def test_encrypt_is_cbc_plus_full_hmac_over_ad_and_ciphertext(mk: bytes, pt: bytes, ad: bytes) -> None:
    info = b"WhisperMessageKeys"
    okm = HKDF(hashes.SHA256(), 80, salt=bytes(32), info=info).derive(mk)
    enc = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:])).encryptor()
    pad = 16 - len(pt) % 16
    ct = enc.update(pt + bytes([pad]) * pad) + enc.finalize()
    tag = hmac.new(okm[32:64], ad + ct, hashlib.sha256).digest()
    out = spec.encrypt(mk, pt, ad, info)
    assert out == ct + tag
    assert spec.decrypt(mk, out, ad, info) == pt


@given(km=st.binary(min_size=96, max_size=160), info=st.binary(max_size=40))
def test_x3dh_kdf_prefixes_f_and_uses_zero_salt(km: bytes, info: bytes) -> None:
    expected = HKDF(hashes.SHA256(), 32, salt=bytes(32), info=info).derive(b"\xff" * 32 + km)
    assert spec.x3dh_kdf(km, info) == expected


def test_encode_public_key_is_0x05_prefixed() -> None:
    assert spec.encode_public_key(bytes(range(32))) == b"\x05" + bytes(range(32))


@given(key=st.binary(max_size=100), data=st.binary(max_size=200))
def test_hmac_over_hashlib_pads_is_hmac(key: bytes, data: bytes) -> None:
    assert p.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
    assert p.hmac_sha256_pair(key, data, data + b"x") == (
        hmac.new(key, data, hashlib.sha256).digest(),
        hmac.new(key, data + b"x", hashlib.sha256).digest(),
    )


@given(
    ikm=st.binary(max_size=80),
    salt=st.one_of(st.just(b""), st.just(bytes(32)), st.binary(max_size=100)),
    info=st.binary(max_size=40),
    length=st.integers(1, 300),
)
def test_hkdf_is_rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> None:
    expected = HKDF(hashes.SHA256(), length, salt=salt or None, info=info).derive(ikm)
    assert p.hkdf_sha256(ikm, salt, info, length) == expected


@given(
    key=st.binary(min_size=32, max_size=32),
    iv=st.binary(min_size=16, max_size=16),
    plaintext=st.binary(max_size=100),
)
def test_aes_cbc_is_aes_256_cbc_with_pkcs7(key: bytes, iv: bytes, plaintext: bytes) -> None:
    # The contexts come from cryptography's Rust binding (checked at import): the same bytes as
    # the public Cipher API with PKCS#7 padding, both ways.
    pad = 16 - len(plaintext) % 16
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    expected = enc.update(plaintext + bytes([pad]) * pad) + enc.finalize()
    assert p.aes_cbc_encrypt(key, iv, plaintext) == expected
    assert p.aes_cbc_decrypt(key, iv, expected) == plaintext


def test_aes_cbc_contexts_come_from_the_binding_and_the_public_path_agrees() -> None:
    # On the cryptography releases pyproject allows (48 and up), the import-time check takes the
    # binding; were it to fail, AES_CONTEXTS would say "public" and this test would say so.
    assert p.AES_CONTEXTS == "binding"
    key, iv = bytes(range(32)), bytes(16)
    fast = p._new_encryptor(algorithms.AES(key), modes.CBC(iv))
    public = p._public_encryptor(algorithms.AES(key), modes.CBC(iv))
    assert fast.update(bytes(64)) + fast.finalize() == public.update(bytes(64)) + public.finalize()
    with pytest.raises(p.AuthenticationFailed):
        p.aes_cbc_decrypt(key, iv, bytes(15))


@pytest.mark.parametrize(("key_len", "iv_len"), [(32, 15), (32, 17), (32, 0), (31, 16), (16, 16), (64, 16)])
def test_aes_cbc_refuses_a_key_or_iv_of_the_wrong_length(key_len: int, iv_len: int) -> None:
    # The binding takes a longer IV's first 16 bytes and aborts the process on a shorter one (a
    # Rust panic, not an exception a caller can handle); AES-256 is the spec's cipher, so a 16- or
    # 64-byte key, which AES or its binding would take, is refused too.
    key, iv = bytes(key_len), bytes(iv_len)
    with pytest.raises(ValueError, match="32-byte key and a 16-byte IV"):
        p.aes_cbc_encrypt(key, iv, b"plaintext")
    with pytest.raises(p.AuthenticationFailed):
        p.aes_cbc_decrypt(key, iv, bytes(32))


def test_aes_cbc_objects_made_without_init_are_the_public_ones() -> None:
    # aes_cbc_* make algorithms.AES and modes.CBC without __init__ (checked at import): the same
    # attributes as the public constructors set (the bytes: test_aes_cbc_is_aes_256_cbc_with_pkcs7).
    assert p.AES_OBJECTS == "bare"
    key, iv = bytes(range(32)), bytes(range(16))
    assert vars(p._bare_aes(key)) == vars(algorithms.AES(key))
    assert vars(p._bare_cbc(iv)) == vars(modes.CBC(iv))


# Curve25519 points of small order (and their encodings with u >= p, or the top bit set): X25519
# with any of them gives the all-zero shared secret, which both libraries refuse.
_SMALL_ORDER = [
    H("00" * 32),
    H("01" + "00" * 31),
    H("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    H("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    H("ec" + "ff" * 30 + "7f"),  # p - 1
    H("ed" + "ff" * 30 + "7f"),  # p
    H("ee" + "ff" * 30 + "7f"),  # p + 1
]
_SMALL_ORDER += [u[:31] + bytes((u[31] | 0x80,)) for u in _SMALL_ORDER]


def test_x25519_rfc7748_known_answers() -> None:
    # RFC 7748 §5.2 (the first scalar multiplication test vector) and §6.1 (the X25519 DH).
    k = H("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = H("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert p.x25519_pair_from_private(k).dh(u) == H(
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    )
    alice = p.x25519_pair_from_private(H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = p.x25519_pair_from_private(H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public == H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bob.public == H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert alice.dh(bob.public) == bob.dh(alice.public) == shared


@given(
    st.binary(min_size=32, max_size=32),
    st.one_of(st.binary(min_size=32, max_size=32), st.sampled_from(_SMALL_ORDER)),
)
def test_x25519_gives_openssls_answers(private: bytes, peer: bytes) -> None:
    """X25519 runs on libsodium: the same public key as OpenSSL's X25519(k, 9), clamping included,
    the same DH with any 32 bytes as the peer's key (u >= p and a set top bit included), and a
    refusal wherever OpenSSL refuses (the all-zero shared secret)."""
    ours = p.x25519_pair_from_private(private)
    openssl = X25519PrivateKey.from_private_bytes(private)
    assert ours.public == openssl.public_key().public_bytes_raw()
    try:
        expected: bytes | None = openssl.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(p.AuthenticationFailed):
            ours.dh(peer)
    else:
        assert ours.dh(peer) == expected == ours.dh(p.x25519_public(peer))


def test_x25519_refuses_a_peer_key_of_the_wrong_length() -> None:
    pair = p.x25519_pair_from_private(bytes(range(32)))
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(p.AuthenticationFailed):
            pair.dh(bad)
        with pytest.raises(p.AuthenticationFailed):
            p.x25519_public(bad)
