"""Derandomized ML-KEM-1024 encapsulation (FIPS 203, August 2024), with numpy.

OpenSSL's ML-KEM encapsulation draws its 32-byte message ``m`` internally, so a simulator
that must replay byte-identical runs from a seed cannot use it to *encapsulate*. This module
implements ``ML-KEM.Encaps_internal(ek, m)`` (FIPS 203 Algorithm 17) for ML-KEM-1024, so ``m``
can come from the simulator's seeded RNG. Decapsulation stays with OpenSSL
(``clients._primitives``): nothing here touches a decapsulation key.

Parameters (FIPS 203 §8, ML-KEM-1024): n = 256, q = 3329, k = 4, η1 = η2 = 2, du = 11, dv = 5;
ek is 384k + 32 = 1568 bytes and so is the ciphertext, 32(du·k + dv).

The pieces, by FIPS 203 algorithm number:

* ByteEncode_d / ByteDecode_d (Alg 5/6): little-endian bit packing, so coefficient i sits at
  bit d·i of the little-endian integer of the encoding. ByteDecode_12 works on 3-byte chunks:
  b0 b1 b2 hold b0 | (b1 & 15) << 8 and b1 >> 4 | b2 << 4. ByteEncode_d spreads each value into
  its 16 bits (``numpy.unpackbits``), keeps the low d, and packs the bits back.
* Compress_d (§4.2.1): a table over all q inputs, built once.
* SampleNTT (Alg 7): SHAKE128 over ρ‖j‖i, so Â[i][j] = SampleNTT(ρ‖j‖i). Each 3-byte chunk
  gives d1 = its low 12 bits and d2 = its high 12 bits (little-endian), so the candidates are
  the stream's 12-bit fields, unreduced, and the result is the first 256 of them below q.
  hashlib cannot squeeze a SHAKE incrementally, but a longer output extends a shorter one, so
  the 16 entries of Â are sampled from 504 bytes each at once, and the rare one (about 1 in
  120) that needs more is sampled again from a longer output.
* SamplePolyCBD_η (Alg 8), η = 2: each nibble of PRF output gives one coefficient, bits 0+1
  minus bits 2+3; PRF_η(s, b) = SHAKE256(s‖b) truncated to 64·η bytes. Byte i of it gives
  coefficients 2i (low nibble) and 2i+1 (high nibble).
* NTT / NTT⁻¹ (Alg 9/10) as matrices (below); MultiplyNTTs / BaseCaseMultiply (Alg 11/12) with
  γ_i = ζ^(2·BitRev7(i)+1), ζ = 17.
* K-PKE.Encrypt (Alg 14) and ML-KEM.Encaps_internal (Alg 17), G = SHA3-512, H = SHA3-256.
* The encapsulation-key check of §7.2: length 1568 (type check), and
  ByteEncode_12(ByteDecode_12(ek[0:1536])) == ek[0:1536] (modulus check), which holds exactly
  when every packed 12-bit value is below q: ByteDecode_12 reduces mod q, and a value in
  [q, 4096) reduces to a different one.

How it is made fast (one encapsulation runs per simulated PQXDH session set-up): numpy does
the arithmetic on whole vectors, and the transforms are matrix products.

* The NTT as a matrix (FIPS 203 §4.3): NTT(f) is f reduced modulo the 128 quadratics X² − γ_i,
  and f mod (X² − γ_i) = f_even(γ_i) + X·f_odd(γ_i), where f_even and f_odd are the polynomials
  of f's even and odd coefficients. So the even coefficients of NTT(f) are f_even evaluated at
  the γ_i and the odd ones f_odd: one 128 × 128 Vandermonde matrix V[j][i] = γ_i^j serves both,
  and the γ_i are the 128 roots of X^128 + 1, so V⁻¹[i][j] = 128⁻¹·γ_i^(−j). Both matrices are
  checked against Alg 9 and Alg 10 in tests/clients/test_mlkem.py.
* Exact floating point: the products run through BLAS in float64, which is exact while every
  value and partial sum is an integer below 2^53 ≈ 9.0e15, in any summation order. The bounds:
  y's coefficients are in [−2, 2], so ŷ = y·V is below 128·2·q ≈ 8.5e5 in magnitude and γ·ŷ_odd
  below 2.9e9; the k = 4 BaseCaseMultiply terms of each output coefficient (entries of Â and t̂
  are below q) sum to below 4·q·2.9e9 + 4·q·8.5e5 ≈ 3.8e13. That sum is reduced mod q (as an
  int64), and the inverse transform of reduced values stays below 128·q·q ≈ 1.4e9.
* Â and t̂ are one (5, 4, 256) block, so Âᵀ∘ŷ and t̂ᵀ∘ŷ are one ``einsum`` and u and v go
  through NTT⁻¹ together.

Python and numpy arithmetic are not constant-time; this is a simulator's implementation,
checked in ``tests/clients/test_mlkem.py`` by decapsulating its ciphertexts with OpenSSL and
against a frozen copy of the earlier pure-Python implementation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

__all__ = ["CT_SIZE", "EK_SIZE", "M_SIZE", "SS_SIZE", "encapsulate_derand"]

# --- parameters (FIPS 203 §8, ML-KEM-1024) --------------------------------------------------

N = 256
Q = 3329
K = 4
ETA1 = 2
ETA2 = 2
DU = 11
DV = 5

EK_SIZE = 384 * K + 32  # 1568
CT_SIZE = 32 * (DU * K + DV)  # 1568
M_SIZE = 32
SS_SIZE = 32

_T_BYTES = 384 * K  # the ByteEncode_12(t̂) part of ek; ρ follows it
_N_INV = pow(128, -1, Q)  # 3303, the final scaling of NTT⁻¹ (Alg 10, line 14)
_XOF_BYTES = 3 * 168  # SampleNTT's first squeeze: three SHAKE128 blocks, 336 candidates
_HALF = N // 2

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# --- tables ---------------------------------------------------------------------------------


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


# γ_i = ζ^(2·BitRev7(i)+1) (Alg 11), i < 128.
_GAMMAS: tuple[int, ...] = tuple(pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(_HALF))

# NTT: ŷ_even = y_even @ _NTT_V, ŷ_odd = y_odd @ _NTT_V; NTT⁻¹: f_even = f̂_even @ _NTT_V_INV.
_NTT_V: Floats = np.array([[pow(g, j, Q) for g in _GAMMAS] for j in range(_HALF)], dtype=np.float64)
_NTT_V_INV: Floats = np.array(
    [[_N_INV * pow(g, -j, Q) % Q for j in range(_HALF)] for g in _GAMMAS], dtype=np.float64
)
_GAMMA_ROW: Floats = np.array(_GAMMAS, dtype=np.float64)


def _compress_table(d: int) -> npt.NDArray[np.uint16]:
    """Compress_d(x) = ⌈(2^d/q)·x⌋ mod 2^d for every x < q.

    q is odd, so 2^d·x/q is never a half-integer and rounding is floor((2^d·x + (q−1)/2) / q).
    """
    return np.array([(((x << d) + (Q >> 1)) // Q) & ((1 << d) - 1) for x in range(Q)], dtype=np.uint16)


_COMPRESS_DU = _compress_table(DU)
_COMPRESS_DV = _compress_table(DV)
_DECOMPRESS_1 = float((Q + 1) >> 1)  # Decompress_1(1) = ⌈q/2⌋


def _cbd2(nibble: int) -> int:
    """SamplePolyCBD_2 on four bits b0..b3 (Alg 8): (b0 + b1) − (b2 + b3)."""
    return (nibble & 1) + ((nibble >> 1) & 1) - ((nibble >> 2) & 1) - ((nibble >> 3) & 1)


# PRF byte → [coefficient 2i (low nibble), coefficient 2i+1 (high nibble)].
_CBD2_BY_BYTE: Floats = np.array([[_cbd2(b & 15), _cbd2(b >> 4)] for b in range(256)], dtype=np.float64)

# Âᵀ[i][j] = Â[j][i] = SampleNTT(ρ‖i‖j) (Alg 14, lines 4–8), in the order i, j.
_A_T_SUFFIXES = tuple(bytes((i, j)) for i in range(K) for j in range(K))
_ROW_BOUNDS = np.arange(K * K + 1, dtype=np.int64) * (
    2 * _XOF_BYTES // 3
)  # each row's first candidate, and the end
_FIRST_N = np.arange(N, dtype=np.int64)

# --- byte packing (Alg 5/6) -----------------------------------------------------------------


def _unpack12(buf: bytes) -> npt.NDArray[np.uint32]:
    """The 12-bit little-endian fields of buf (len divisible by 3), in order, not reduced mod q.

    Chunk i is read as the little-endian 32-bit word at byte 3i (a view with a stride of 3 bytes,
    over buf and one byte of padding): its low 12 bits are field 2i, the next 12 field 2i + 1.
    """
    chunks = len(buf) // 3
    words = np.ndarray((chunks,), dtype="<u4", buffer=buf + b"\0", strides=(3,))
    out = np.empty((chunks, 2), dtype=np.uint32)
    out[:, 0] = words
    out[:, 1] = words >> 12
    out &= 0xFFF
    return out.reshape(-1)


def _pack(vals: npt.NDArray[np.integer], d: int) -> bytes:
    """ByteEncode_d (Alg 5) of values below 2^d ≤ 2^16, in order; len(vals)·d divisible by 8."""
    bits = np.unpackbits(vals.astype("<u2").view(np.uint8), bitorder="little").reshape(-1, 16)
    return np.packbits(bits[:, :d], bitorder="little").tobytes()


# --- sampling (Alg 7/8) ---------------------------------------------------------------------


def _sample_ntt_long(seed: bytes) -> npt.NDArray[np.uint32]:
    """SampleNTT (Alg 7) on one seed, squeezing one more block at a time until 256 are accepted."""
    nbytes = _XOF_BYTES
    while True:
        nbytes += 168
        c = _unpack12(hashlib.shake_128(seed).digest(nbytes))
        c = c[c < Q]
        if c.size >= N:
            return c[:N]


def _sample_ntt(rho: bytes) -> npt.NDArray[np.uint32]:
    """Âᵀ as a (16, 256) array: row 4i + j is SampleNTT(ρ‖i‖j) (Alg 7), the first 256 candidates below q.

    All 16 rows are squeezed 504 bytes and unpacked at once; ``accepted`` lists the candidates
    below q in stream order, and a row's first accepted candidate is found by binary search on
    the row's start.
    """
    c = _unpack12(b"".join([hashlib.shake_128(rho + s).digest(_XOF_BYTES) for s in _A_T_SUFFIXES]))
    accepted = np.flatnonzero(c < Q)
    bounds = np.searchsorted(accepted, _ROW_BOUNDS)
    starts = bounds[:-1]
    counts = bounds[1:] - starts
    if counts.min() >= N:
        return c[accepted[starts[:, None] + _FIRST_N]]
    short = np.flatnonzero(counts < N)
    starts[short] = 0  # placeholders, replaced below
    rows = c[accepted[starts[:, None] + _FIRST_N]]
    for r in short.tolist():
        rows[r] = _sample_ntt_long(rho + _A_T_SUFFIXES[r])
    return rows


def _sample_cbd2(r: bytes) -> Floats:
    """SamplePolyCBD_2(PRF_2(r, b)) (Alg 8) for b = 0 … 2k, as [even coefficients, odd ones].

    Shape (9, 2, 128) (a strided view): [b][p][i] is coefficient 2i + p of polynomial b (y: b < k;
    e1: k ≤ b < 2k; e2: b = 2k), a small signed value in [−2, 2].
    """
    buf = b"".join([hashlib.shake_256(r + bytes((b,))).digest(64 * ETA1) for b in range(2 * K + 1)])
    prf = np.frombuffer(buf, dtype=np.uint8).reshape(2 * K + 1, 64 * ETA1)
    return np.take(_CBD2_BY_BYTE, prf, axis=0).transpose(0, 2, 1)


# --- the encapsulation key (§7.2) -----------------------------------------------------------


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _parse_ek(ek: bytes) -> tuple[npt.NDArray[np.uint32], bytes]:
    """Check ek (§7.2) and return (t̂ as 1024 coefficients, ρ). Raises ValueError if it fails."""
    if len(ek) != EK_SIZE:
        raise ValueError(
            f"an ML-KEM-1024 encapsulation key is {EK_SIZE} bytes, got {len(ek)} (FIPS 203 §7.2 type check)"
        )
    vals = _unpack12(ek[:_T_BYTES])
    if vals.max() >= Q:
        bad = int(np.flatnonzero(vals >= Q)[0])
        raise ValueError(
            "the ML-KEM-1024 encapsulation key fails the FIPS 203 §7.2 modulus check: "
            f"coefficient {bad % N} of t̂[{bad // N}] encodes {int(vals[bad])}, not below q = {Q}"
        )
    return vals, ek[_T_BYTES:]


# --- K-PKE.Encrypt (Alg 14) and ML-KEM.Encaps_internal (Alg 17) -----------------------------


def _k_pke_encrypt(t_hat: npt.NDArray[np.uint32], rho: bytes, m: bytes, r: bytes) -> bytes:
    """K-PKE.Encrypt(ek, m, r) (Alg 14), with ek already parsed into t̂ and ρ."""
    # Lines 4–8 and the t̂ of line 2: rows 0–3 of the block are Âᵀ, row 4 is t̂; [i][t][j][k] is
    # coefficient 2k + t of polynomial j of row i.
    rows = np.concatenate([_sample_ntt(rho).reshape(-1), t_hat])
    mat = np.array(rows.reshape(K + 1, K, _HALF, 2).transpose(0, 3, 1, 2), dtype=np.float64, order="C")
    # Lines 9–17: y, e1 from PRF_η(r, N) for N = 0 … 2k−1, e2 from PRF_η2(r, 2k).
    s = _sample_cbd2(r)
    # Line 18: ŷ = NTT(y), as ŷ_even = y_even·V and ŷ_odd = y_odd·V (unreduced, exact).
    # (Contiguous 2-D operands: numpy 1.26 multiplies a strided 3-D one without BLAS, 20 × slower.)
    y_hat = (np.ascontiguousarray(s[:K]).reshape(2 * K, _HALF) @ _NTT_V).reshape(K, 2, _HALF)
    # BaseCaseMultiply (Alg 12) summed over j: even = Σ a0·b0 + a1·(b1·γ), odd = Σ a0·b1 + a1·b0.
    # terms[j][s][t][k] is the factor of row coefficient t in output coefficient s.
    terms = np.empty((K, 2, 2, _HALF), dtype=np.float64)
    terms[:, 0, 0] = y_hat[:, 0]
    terms[:, 0, 1] = y_hat[:, 1] * _GAMMA_ROW
    terms[:, 1, 0] = y_hat[:, 1]
    terms[:, 1, 1] = y_hat[:, 0]
    prod = np.einsum("itjk,jstk->isk", mat, terms).astype(np.int64)  # below 3.8e13: exact
    prod %= Q
    # Lines 19–21: u = NTT⁻¹(Âᵀ∘ŷ) + e1, v = NTT⁻¹(t̂ᵀ∘ŷ) + e2 + μ, μ = Decompress_1(ByteDecode_1(m)).
    w = (prod.astype(np.float64).reshape(2 * (K + 1), _HALF) @ _NTT_V_INV).reshape(K + 1, 2, _HALF)
    w += s[K:]
    mu = np.unpackbits(np.frombuffer(m, dtype=np.uint8), bitorder="little").reshape(_HALF, 2).T
    w[K] += mu * _DECOMPRESS_1
    out = w.astype(np.int64)
    out %= Q
    # Lines 22–24: c = ByteEncode_du(Compress_du(u)) ‖ ByteEncode_dv(Compress_dv(v)), in natural order.
    natural = out.transpose(0, 2, 1)
    return _pack(_COMPRESS_DU[natural[:K]].reshape(-1), DU) + _pack(_COMPRESS_DV[natural[K]].reshape(-1), DV)


def encapsulate_derand(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """ML-KEM-1024 ``Encaps_internal(ek, m)`` (FIPS 203 Alg 17): returns (K, c), 32 and 1568 bytes.

    ``m`` is the 32 bytes ML-KEM.Encaps would draw at random: pass it from the simulator's seeded
    RNG for reproducible runs (outside a simulation, m must be fresh randomness). ``ek`` is
    checked as FIPS 203 §7.2 requires: ValueError if it is not 1568 bytes or encodes a
    coefficient ≥ q. ValueError also if m is not 32 bytes; TypeError if either is not bytes.
    """
    ek = _as_bytes(ek, "an ML-KEM-1024 encapsulation key")
    m = _as_bytes(m, "the encapsulation randomness m")
    t_hat, rho = _parse_ek(ek)
    if len(m) != M_SIZE:
        raise ValueError(f"the ML-KEM encapsulation randomness m is {M_SIZE} bytes, got {len(m)}")
    g = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()  # (K, r) = G(m ‖ H(ek))
    shared, r = g[:32], g[32:]
    return shared, _k_pke_encrypt(t_hat, rho, m, r)
