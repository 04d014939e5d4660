"""Derandomized ML-KEM-1024 encapsulation (clients._mlkem) against OpenSSL, and its pieces.

The proof of correctness is the cross-check: a key pair made by OpenSSL (through
``cryptography``) from a seed d‖z, our ``encapsulate_derand(ek, m)``, and OpenSSL's decapsulation
of our ciphertext returning our shared secret. FIPS 203 decapsulation (Alg 18) re-encrypts the
message it decrypts and compares the result with the ciphertext byte for byte, returning the
implicit-rejection key J(z‖c) on any difference, so getting K back means our ciphertext is
exactly the one FIPS 203 specifies for (ek, m).

The piece-by-piece tests compare the fast internals with literal, slow transcriptions of the
FIPS 203 algorithms written here, so a failure points at the piece that broke.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import mlkem_frozen
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey, MLKEM1024PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from relaysim.clients import _mlkem
from relaysim.clients._mlkem import CT_SIZE, EK_SIZE, encapsulate_derand

Q = 3329
N = 256

seeds = st.binary(min_size=64, max_size=64)
messages = st.binary(min_size=32, max_size=32)

CROSS_CHECK = settings(max_examples=25, deadline=None)
PIECES = settings(max_examples=50, deadline=None)


def keypair(seed: bytes) -> tuple[MLKEM1024PrivateKey, bytes]:
    sk = MLKEM1024PrivateKey.from_seed_bytes(seed)
    return sk, sk.public_key().public_bytes_raw()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- literal FIPS 203 transcriptions (slow, for the piece tests) ----------------------------


def bitrev7(i: int) -> int:
    return sum(((i >> b) & 1) << (6 - b) for b in range(7))


def ref_byte_encode(f: list[int], d: int) -> bytes:
    """Alg 5 (with BitsToBytes, Alg 3)."""
    bits = [(a >> j) & 1 for a in f for j in range(d)]
    return bytes(sum(bits[8 * i + j] << j for j in range(8)) for i in range(len(bits) // 8))


def ref_byte_decode(b: bytes, d: int, reduce: bool = True) -> list[int]:
    """Alg 6 (with BytesToBits, Alg 4); ``reduce=False`` skips the mod q of d = 12."""
    bits = [(byte >> j) & 1 for byte in b for j in range(8)]
    m = Q if d == 12 and reduce else 1 << d
    return [sum(bits[i * d + j] << j for j in range(d)) % m for i in range(len(bits) // d)]


def ref_compress(x: int, d: int) -> int:
    """⌈(2^d/q)·x⌋ mod 2^d, rounding half up, with exact rationals."""
    v = Fraction(x << d, Q)
    return int(v + Fraction(1, 2)) % (1 << d)  # int() floors positive values


def ref_sample_ntt(seed: bytes) -> tuple[list[int], int]:
    """Alg 7, three bytes at a time; also returns how many XOF bytes it read."""
    stream = hashlib.shake_128(seed).digest(168 * 40)
    a: list[int] = []
    pos = 0
    while len(a) < N:
        c0, c1, c2 = stream[pos : pos + 3]
        pos += 3
        d1 = c0 + 256 * (c1 % 16)
        d2 = c1 // 16 + 16 * c2
        if d1 < Q:
            a.append(d1)
        if d2 < Q and len(a) < N:
            a.append(d2)
    return a, pos


def ref_ntt(f: list[int]) -> list[int]:
    """Alg 9."""
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = pow(17, bitrev7(i), Q)
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def ref_ntt_inv(f: list[int]) -> list[int]:
    """Alg 10."""
    f = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = pow(17, bitrev7(i), Q)
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % Q
                f[j + length] = zeta * (f[j + length] - t) % Q
        length *= 2
    return [x * 3303 % Q for x in f]


def ref_multiply_ntts(f: list[int], g: list[int]) -> list[int]:
    """Alg 11/12."""
    h = [0] * N
    for i in range(128):
        gamma = pow(17, 2 * bitrev7(i) + 1, Q)
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * gamma) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def negacyclic_product(f: list[int], g: list[int]) -> list[int]:
    """f·g in Z_q[X]/(X^256 + 1), schoolbook."""
    h = [0] * N
    for i, a in enumerate(f):
        for j, b in enumerate(g):
            if i + j < N:
                h[i + j] += a * b
            else:
                h[i + j - N] -= a * b
    return [x % Q for x in h]


polys = st.lists(st.integers(0, Q - 1), min_size=N, max_size=N)
IDENTITY = tuple(range(Q))  # a "Compress" table that leaves values alone


def fast_ntt(f: list[int]) -> list[int]:
    """NTT through the module's matrix: even and odd coefficients each times V, reduced."""
    halves = np.array([f[0::2], f[1::2]], dtype=np.float64) @ _mlkem._NTT_V
    out = [0] * N
    out[0::2] = [int(x) % Q for x in halves[0]]
    out[1::2] = [int(x) % Q for x in halves[1]]
    return out


def fast_ntt_inv(f_hat: list[int]) -> list[int]:
    halves = np.array([f_hat[0::2], f_hat[1::2]], dtype=np.float64) @ _mlkem._NTT_V_INV
    out = [0] * N
    out[0::2] = [int(x) % Q for x in halves[0]]
    out[1::2] = [int(x) % Q for x in halves[1]]
    return out


# --- the cross-check against OpenSSL --------------------------------------------------------


@CROSS_CHECK
@given(seeds, messages)
def test_openssl_decapsulates_our_ciphertext_to_our_key(seed: bytes, m: bytes) -> None:
    sk, ek = keypair(seed)
    shared, ct = encapsulate_derand(ek, m)
    assert len(shared) == 32
    assert len(ct) == CT_SIZE
    assert sk.decapsulate(ct) == shared


@CROSS_CHECK
@given(seeds, messages)
def test_shared_secret_is_the_first_half_of_g(seed: bytes, m: bytes) -> None:
    _, ek = keypair(seed)
    shared, _ = encapsulate_derand(ek, m)
    assert shared == hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()[:32]


@CROSS_CHECK
@given(seeds, messages, st.integers(0, 8 * CT_SIZE - 1))
def test_a_flipped_ciphertext_bit_gets_the_implicit_rejection_key(seed: bytes, m: bytes, bit: int) -> None:
    sk, ek = keypair(seed)
    shared, ct = encapsulate_derand(ek, m)
    bad = flip(ct, bit)
    got = sk.decapsulate(bad)
    assert got != shared
    # FIPS 203 Alg 18, line 8: K̄ = J(z‖c) = SHAKE256(z‖c) truncated to 32 bytes; the seed is d‖z.
    assert got == hashlib.shake_256(seed[32:] + bad).digest(32)


def test_matches_openssl_over_many_messages_for_one_key() -> None:
    sk, ek = keypair(bytes(range(64)))
    for i in range(40):
        shared, ct = encapsulate_derand(ek, hashlib.sha256(i.to_bytes(4, "big")).digest())
        assert sk.decapsulate(ct) == shared


# --- determinism ----------------------------------------------------------------------------


@PIECES
@given(seeds, messages, messages)
def test_deterministic_in_ek_and_m(seed: bytes, m: bytes, m2: bytes) -> None:
    _, ek = keypair(seed)
    first = encapsulate_derand(ek, m)
    assert encapsulate_derand(ek, m) == first
    if m2 != m:
        other = encapsulate_derand(ek, m2)
        assert other[1] != first[1]
        assert other[0] != first[0]


def test_different_keys_give_different_ciphertexts_for_one_m() -> None:
    m = bytes(32)
    cts = {encapsulate_derand(keypair(bytes([i]) * 64)[1], m)[1] for i in range(5)}
    assert len(cts) == 5


# --- byte for byte the earlier pure-Python implementation -----------------------------------
# tests/mlkem_frozen.py is clients/_mlkem.py as it was before numpy: the simulations' session
# set-ups must keep producing the same (K, c) for the same (ek, m), or runs recorded before would
# no longer replay.


def random_ek(coefficients: list[int], rho: bytes) -> bytes:
    """An encapsulation key that passes §7.2 (not from a key pair: any t̂ below q and any ρ)."""
    return ref_byte_encode(coefficients, 12) + rho


t_hats = st.lists(st.integers(0, Q - 1), min_size=4 * N, max_size=4 * N)


@settings(max_examples=60, deadline=None)
@given(t_hats, st.binary(min_size=32, max_size=32), messages)
def test_same_bytes_as_the_frozen_implementation_on_any_valid_ek(
    t_hat: list[int], rho: bytes, m: bytes
) -> None:
    ek = random_ek(t_hat, rho)
    assert encapsulate_derand(ek, m) == mlkem_frozen.encapsulate_derand(ek, m)


@settings(max_examples=40, deadline=None)
@given(seeds, messages)
def test_same_bytes_as_the_frozen_implementation_on_key_pairs(seed: bytes, m: bytes) -> None:
    _, ek = keypair(seed)
    assert encapsulate_derand(ek, m) == mlkem_frozen.encapsulate_derand(ek, m)


def test_same_bytes_at_the_extremes() -> None:
    # t̂ all 0 or all q − 1, ρ of zeros or ones, m of zeros or ones.
    for coefficient in (0, 1, Q - 1):
        for rho in (bytes(32), b"\xff" * 32):
            ek = random_ek([coefficient] * (4 * N), rho)
            for m in (bytes(32), b"\xff" * 32):
                assert encapsulate_derand(ek, m) == mlkem_frozen.encapsulate_derand(ek, m)


# SHA-256 over K ‖ c of the 64 encapsulations below, as the pure-Python implementation (commit
# c7ecd0f, tests/mlkem_frozen.py) computed them; key 0 (seed of zeros) has an entry of Â whose
# SampleNTT needs more than 504 XOF bytes.
KNOWN_ANSWER_DIGEST = "c9ba5bdf8ea849d19fc8ae70775f3a39841b72555e084448fc7dccba10aedd98"


def test_known_answers() -> None:
    digest = hashlib.sha256()
    for i in range(64):
        seed = bytes(64) if i == 0 else hashlib.sha512(i.to_bytes(4, "big")).digest()
        _, ek = keypair(seed)
        shared, ct = encapsulate_derand(ek, hashlib.sha256(b"m" + i.to_bytes(4, "big")).digest())
        digest.update(shared + ct)
    assert digest.hexdigest() == KNOWN_ANSWER_DIGEST


# --- the encapsulation key check (FIPS 203 §7.2) and argument checks ------------------------


@pytest.mark.parametrize("length", [0, 32, 1184, EK_SIZE - 1, EK_SIZE + 1, 2 * EK_SIZE])
def test_wrong_length_ek_is_rejected(length: int) -> None:
    _, ek = keypair(bytes(64))
    bad = (ek * 2)[:length]
    with pytest.raises(ValueError, match="1568 bytes"):
        encapsulate_derand(bad, bytes(32))


def set_coefficient(ek: bytes, index: int, value: int) -> bytes:
    """ek with the index-th packed 12-bit value (of the 1024 in t̂) replaced by value."""
    vals = ref_byte_decode(ek[:1536], 12, reduce=False)
    vals[index] = value
    return ref_byte_encode(vals, 12) + ek[1536:]


@PIECES
@given(seeds, st.integers(0, 4 * N - 1), st.integers(Q, 4095))
def test_non_canonical_ek_is_rejected(seed: bytes, index: int, value: int) -> None:
    _, ek = keypair(seed)
    bad = set_coefficient(ek, index, value)
    # The literal §7.2 modulus check fails on it...
    assert ref_byte_encode(ref_byte_decode(bad[:1536], 12), 12) != bad[:1536]
    # ...and so do we, and OpenSSL refuses it too.
    with pytest.raises(ValueError, match="modulus check"):
        encapsulate_derand(bad, bytes(32))
    with pytest.raises(ValueError):
        MLKEM1024PublicKey.from_public_bytes(bad)


@pytest.mark.parametrize("index", [0, 1, 511, 512, 1023])
def test_modulus_check_boundary(index: int) -> None:
    _, ek = keypair(bytes(range(64, 128)))
    with pytest.raises(ValueError, match=r"t̂\[\d\].*3329"):
        encapsulate_derand(set_coefficient(ek, index, Q), bytes(32))
    # q − 1 is canonical: accepted (the decapsulation key no longer matches ek, so no cross-check).
    ok = set_coefficient(ek, index, Q - 1)
    assert len(encapsulate_derand(ok, bytes(32))[1]) == CT_SIZE


def test_ek_rho_is_not_range_checked() -> None:
    # §7.2 checks only the 1536 bytes of t̂; ρ is any 32 bytes.
    _, ek = keypair(bytes(64))
    assert len(encapsulate_derand(ek[:1536] + b"\xff" * 32, bytes(32))[1]) == CT_SIZE


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_m_is_rejected(length: int) -> None:
    _, ek = keypair(bytes(64))
    with pytest.raises(ValueError, match="32 bytes"):
        encapsulate_derand(ek, bytes(length))


def test_non_bytes_arguments_are_rejected() -> None:
    _, ek = keypair(bytes(64))
    with pytest.raises(TypeError):
        encapsulate_derand(ek.hex(), bytes(32))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encapsulate_derand(ek, list(bytes(32)))  # type: ignore[arg-type]


# --- the pieces against literal transcriptions ----------------------------------------------


def test_sizes() -> None:
    assert EK_SIZE == 1568
    assert CT_SIZE == 1568


@pytest.mark.parametrize("d", [1, 4, 5, 10, 11, 12])
@PIECES
@given(data=st.data())
def test_pack_is_byte_encode(d: int, data: st.DataObject) -> None:
    count = data.draw(st.sampled_from([8, 256, 1024]))
    vals = data.draw(st.lists(st.integers(0, (1 << d) - 1), min_size=count, max_size=count))
    assert _mlkem._pack(np.array(vals, dtype=np.uint16), d) == ref_byte_encode(vals, d)


@PIECES
@given(st.integers(1, 600).flatmap(lambda n: st.binary(min_size=3 * n, max_size=3 * n)))
def test_unpack12_is_byte_decode_12_unreduced(buf: bytes) -> None:
    assert _mlkem._unpack12(buf).tolist() == ref_byte_decode(buf, 12, reduce=False)


@pytest.mark.parametrize("d", [5, 11])
def test_compress_tables(d: int) -> None:
    table = _mlkem._COMPRESS_DU if d == 11 else _mlkem._COMPRESS_DV
    assert table.tolist() == [ref_compress(x, d) for x in range(Q)]


def expected_a_transpose(rho: bytes) -> tuple[list[list[int]], int]:
    """Âᵀ row by row (row 4i + j = SampleNTT(ρ‖i‖j)) and the most XOF bytes a row read."""
    rows = [ref_sample_ntt(rho + bytes((i, j))) for i in range(4) for j in range(4)]
    return [r for r, _ in rows], max(used for _, used in rows)


@PIECES
@given(st.binary(min_size=32, max_size=32))
def test_sample_ntt(rho: bytes) -> None:
    assert _mlkem._sample_ntt(rho).tolist() == expected_a_transpose(rho)[0]


def test_sample_ntt_when_three_blocks_are_not_enough() -> None:
    # About 1 seed in 120 needs more than 504 XOF bytes, so about 1 ρ in 8 has such a row among its
    # 16; find some (one with two such rows among them) and check the extension path.
    found = 0
    two = False
    for i in range(2000):
        rho = hashlib.sha256(i.to_bytes(4, "big")).digest()
        rows = [ref_sample_ntt(rho + bytes((a, b))) for a in range(4) for b in range(4)]
        long_rows = sum(used > 504 for _, used in rows)
        if long_rows and (found < 3 or (long_rows > 1 and not two)):
            assert _mlkem._sample_ntt(rho).tolist() == [r for r, _ in rows]
            found += 1
            two = two or long_rows > 1
        if found >= 3 and two:
            break
    assert found >= 3 and two


@PIECES
@given(st.binary(min_size=32, max_size=32))
def test_sample_cbd2(r: bytes) -> None:
    got = _mlkem._sample_cbd2(r)
    assert got.shape == (9, 2, 128)
    for b in range(9):
        prf = hashlib.shake_256(r + bytes([b])).digest(128)
        bits = [(byte >> j) & 1 for byte in prf for j in range(8)]
        expected = [bits[4 * i] + bits[4 * i + 1] - bits[4 * i + 2] - bits[4 * i + 3] for i in range(N)]
        assert got[b, 0].tolist() == expected[0::2]
        assert got[b, 1].tolist() == expected[1::2]


@PIECES
@given(polys)
def test_ntt_matches_algorithm_9(f: list[int]) -> None:
    assert fast_ntt(f) == ref_ntt(f)


@PIECES
@given(st.lists(st.integers(-2, 2), min_size=N, max_size=N))
def test_ntt_of_small_signed_inputs(f: list[int]) -> None:
    assert fast_ntt(f) == ref_ntt([x % Q for x in f])


@PIECES
@given(polys)
def test_ntt_inverse_matches_algorithm_10(f: list[int]) -> None:
    assert fast_ntt_inv(f) == ref_ntt_inv(f)
    assert fast_ntt_inv(fast_ntt(f)) == f


def test_ntt_matrices_are_algorithms_9_and_10_on_the_unit_vectors() -> None:
    # Row j of V is NTT(X^(2j)) read at the even positions (the odd ones are 0), so V is exactly
    # Alg 9 on the unit vectors; likewise V⁻¹ and Alg 10.
    for j in range(0, 128, 9):
        unit = [0] * N
        unit[2 * j] = 1
        assert ref_ntt(unit)[0::2] == _mlkem._NTT_V[j].astype(int).tolist()
        assert ref_ntt(unit)[1::2] == [0] * 128
        assert ref_ntt_inv(unit)[0::2] == _mlkem._NTT_V_INV[j].astype(int).tolist()


@settings(max_examples=10, deadline=None)
@given(polys, polys)
def test_ntt_domain_product_is_the_negacyclic_product(f: list[int], g: list[int]) -> None:
    assert ref_ntt_inv(ref_multiply_ntts(ref_ntt(f), ref_ntt(g))) == negacyclic_product(f, g)
    assert fast_ntt_inv(ref_multiply_ntts(fast_ntt(f), fast_ntt(g))) == negacyclic_product(f, g)
