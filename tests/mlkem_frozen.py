"""A frozen copy of clients/_mlkem.py as it was before numpy (commit c7ecd0f): the reference the
faster implementation must match byte for byte (tests/clients/test_mlkem.py). Do not edit it:
it is pure Python, about 1.6 ms per encapsulation, and its ciphertexts decapsulate under OpenSSL.

Derandomized ML-KEM-1024 encapsulation (FIPS 203, August 2024), in pure Python.

OpenSSL's ML-KEM encapsulation draws its 32-byte message ``m`` internally, so a simulator
that must replay byte-identical runs from a seed cannot use it to *encapsulate*. This module
implements ``ML-KEM.Encaps_internal(ek, m)`` (FIPS 203 Algorithm 17) for ML-KEM-1024, so ``m``
can come from the simulator's seeded RNG. Decapsulation stays with OpenSSL
(``clients._primitives``): nothing here touches a decapsulation key.

Parameters (FIPS 203 §8, ML-KEM-1024): n = 256, q = 3329, k = 4, η1 = η2 = 2, du = 11, dv = 5;
ek is 384k + 32 = 1568 bytes and so is the ciphertext, 32(du·k + dv).

The pieces, by FIPS 203 algorithm number:

* ByteEncode_d / ByteDecode_d (Alg 5/6): little-endian bit packing, so coefficient i sits at
  bit d·i of the little-endian integer of the encoding.
* Compress_d / Decompress_d (§4.2.1): Compress is a table over all q inputs, built once.
* SampleNTT (Alg 7): SHAKE128 over ρ‖j‖i, so Â[i][j] = SampleNTT(ρ‖j‖i). Each 3-byte chunk
  gives d1 = its low 12 bits and d2 = its high 12 bits (little-endian), so the candidates are
  the stream's 12-bit fields, unreduced, and the result is the first 256 of them below q.
  hashlib cannot squeeze a SHAKE incrementally, but a longer output extends a shorter one, so
  we ask for more bytes in the rare case that 504 are not enough.
* SamplePolyCBD_η (Alg 8), η = 2: each nibble of PRF output gives one coefficient, bits 0+1
  minus bits 2+3; PRF_η(s, b) = SHAKE256(s‖b) truncated to 64·η bytes.
* NTT / NTT⁻¹ (Alg 9/10), ζ = 17, BitRev7; MultiplyNTTs / BaseCaseMultiply (Alg 11/12) with
  γ_i = ζ^(2·BitRev7(i)+1).
* K-PKE.Encrypt (Alg 14) and ML-KEM.Encaps_internal (Alg 17), G = SHA3-512, H = SHA3-256.
* The encapsulation-key check of §7.2: length 1568 (type check), and
  ByteEncode_12(ByteDecode_12(ek[0:1536])) == ek[0:1536] (modulus check), which holds exactly
  when every packed 12-bit value is below q: ByteDecode_12 reduces mod q, and a value in
  [q, 4096) reduces to a different one.

How it is made fast in pure Python (one encapsulation runs per session set-up):

* Bit packing and unpacking run on big integers and ``array`` (C loops, no per-coefficient
  bytecode): 12-bit fields are spread into 16-bit slots with two masks and a shift, d-bit
  fields are gathered from 16-bit slots in three mask-and-shift halvings, CBD sampling is two
  ``bytes.translate`` calls read back as signed chars.
* The NTTs use a constant-geometry ordering (the same shape every layer, so each layer is one
  list comprehension over 128 butterflies rather than up to 64 small slices): the forward
  transform reads the halves f[:128], f[128:] and writes the pairs interleaved; the inverse
  reads f[0::2], f[1::2] and writes the halves. Each layer's ζ list is derived at import by
  tracking which coefficient sits in which slot (and checked there). The forward transform then
  ends with the even coefficients in f[:128] and the odd ones in f[128:], the split
  BaseCaseMultiply wants, and the inverse starts from that split and ends in natural order.
* Lazy reduction: only the ζ products are reduced mod q; the additive growth is at most 8q in
  the forward transform and 128q in the inverse, harmless for Python ints. The matrix–vector
  products stay in the NTT domain, γ·ŷ_odd is computed once per ŷ, and the k = 4 terms of each
  product are summed in a single comprehension per output polynomial half.

Python integer arithmetic is not constant-time; this is a simulator's implementation, checked
in ``tests/clients/test_mlkem.py`` by decapsulating its ciphertexts with OpenSSL.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from itertools import chain

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
_BIG_ENDIAN = sys.byteorder == "big"

# --- tables ---------------------------------------------------------------------------------


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


# ζ^BitRev7(i) mod q for i < 128 (FIPS 203 Appendix A), and γ_i = ζ^(2·BitRev7(i)+1) (Alg 11).
_ZETAS: tuple[int, ...] = tuple(pow(17, _bitrev7(i), Q) for i in range(128))
_GAMMAS: tuple[int, ...] = tuple(pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128))


def _compress_table(d: int) -> tuple[int, ...]:
    """Compress_d(x) = ⌈(2^d/q)·x⌋ mod 2^d for every x < q.

    q is odd, so 2^d·x/q is never a half-integer and rounding is floor((2^d·x + (q−1)/2) / q).
    """
    return tuple((((x << d) + (Q >> 1)) // Q) & ((1 << d) - 1) for x in range(Q))


_COMPRESS_DU = _compress_table(DU)
_COMPRESS_DV = _compress_table(DV)

# Decompress_1(ByteDecode_1(m)): bit s of byte i is coefficient 8i + s, and Decompress_1(1) = ⌈q/2⌋.
_MU_BYTE: tuple[tuple[int, ...], ...] = tuple(
    tuple(((b >> s) & 1) * ((Q + 1) >> 1) for s in range(8)) for b in range(256)
)


def _cbd2(nibble: int) -> int:
    """SamplePolyCBD_2 on four bits b0..b3 (Alg 8): (b0 + b1) − (b2 + b3)."""
    return (nibble & 1) + ((nibble >> 1) & 1) - ((nibble >> 2) & 1) - ((nibble >> 3) & 1)


# bytes.translate tables: PRF byte i → coefficient 2i (low nibble) and 2i+1 (high nibble), as a
# two's-complement byte to be read back through array("b").
_CBD2_LO = bytes(_cbd2(b & 15) & 0xFF for b in range(256))
_CBD2_HI = bytes(_cbd2(b >> 4) & 0xFF for b in range(256))


def _ntt_zeta_tables() -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """ζ per butterfly, per layer, for the constant-geometry forward and inverse NTTs.

    ``slot[x]`` is the (natural-order) index of the coefficient held in list position x. A
    forward layer of length 2^s pairs positions x and x+128, which must hold coefficients p and
    p + 2^s; Alg 9 multiplies by _ZETAS[2^(7−s) + (p >> (s+1))] (its i, counting blocks from 1).
    An inverse layer pairs positions 2x and 2x+1; Alg 10 uses _ZETAS[2^(8−s) − 1 − (p >> (s+1))]
    (its i, counting down from 127). The layouts at both ends are checked here.
    """
    fwd: list[tuple[int, ...]] = []
    slot = list(range(N))
    for s in range(7, 0, -1):
        length = 1 << s
        zs = []
        for x in range(128):
            p = slot[x]
            if p & length or slot[x + 128] != p + length:
                raise AssertionError("forward NTT layout")
            zs.append(_ZETAS[(128 >> s) + (p >> (s + 1))])
        fwd.append(tuple(zs))
        nxt = [0] * N
        nxt[0::2] = slot[:128]
        nxt[1::2] = slot[128:]
        slot = nxt
    if slot != list(range(0, N, 2)) + list(range(1, N, 2)):
        raise AssertionError("forward NTT output layout")
    inv: list[tuple[int, ...]] = []
    for s in range(1, 8):
        length = 1 << s
        zs = []
        for x in range(128):
            p = slot[2 * x]
            if p & length or slot[2 * x + 1] != p + length:
                raise AssertionError("inverse NTT layout")
            zs.append(_ZETAS[(256 >> s) - 1 - (p >> (s + 1))])
        inv.append(tuple(zs))
        slot = slot[0::2] + slot[1::2]
    if slot != list(range(N)) or len(set(inv[-1])) != 1:
        raise AssertionError("inverse NTT output layout")
    return tuple(fwd), tuple(inv)


_NTT_ZETAS, _NTT_INV_ZETAS = _ntt_zeta_tables()

# --- NTT (Alg 9/10) -------------------------------------------------------------------------


def _ntt(f: list[int]) -> tuple[list[int], list[int]]:
    """NTT(f) (Alg 9) of 256 ints in natural order, as (even, odd) coefficients, unreduced.

    Lazy reduction: t = ζ·f[j+len] is reduced, the sums are not, so a layer adds at most q to
    the magnitude: outputs are within 7q + max|f| of 0 (and congruent to the right values).
    """
    q = Q
    for zs in _NTT_ZETAS:
        lo = f[:128]
        s = [a + z * h % q for a, z, h in zip(lo, zs, f[128:], strict=True)]
        f = [0] * N
        f[0::2] = s
        f[1::2] = [a + a - x for a, x in zip(lo, s, strict=True)]  # a − t = 2a − (a + t)
    return f[:128], f[128:]


def _ntt_inv_compress(even: list[int], odd: list[int], e: list[int], table: tuple[int, ...]) -> list[int]:
    """table[(NTT⁻¹(f) + e) mod q] for f given as (even, odd) NTT coefficients below q (Alg 10).

    Sums are not reduced (they double each layer, to at most 128q). The last layer, whose ζ is
    the same for every butterfly, is fused with the scaling by 128⁻¹, the addition of e (natural
    order) and the Compress table lookup.
    """
    q = Q
    f = even + odd
    for zs in _NTT_INV_ZETAS[:-1]:
        lo = f[0::2]
        hi = f[1::2]
        f = [a + b for a, b in zip(lo, hi, strict=True)] + [
            z * (b - a) % q for z, a, b in zip(zs, lo, hi, strict=True)
        ]
    lo = f[0::2]
    hi = f[1::2]
    n_inv = _N_INV
    z_last = _NTT_INV_ZETAS[-1][0] * n_inv % q
    return [table[((a + b) * n_inv + x) % q] for a, b, x in zip(lo, hi, e[:128], strict=True)] + [
        table[(z_last * (b - a) + x) % q] for a, b, x in zip(lo, hi, e[128:], strict=True)
    ]


# --- byte packing (Alg 5/6) -----------------------------------------------------------------

_MASKS: dict[tuple[int, bytes, bytes], tuple[int, int]] = {}


def _masks(nbytes: int, pattern_lo: bytes, pattern_hi: bytes) -> tuple[int, int]:
    """Big-integer masks repeating a byte pattern over nbytes (cached; a handful of sizes occur)."""
    key = (nbytes, pattern_lo, pattern_hi)
    m = _MASKS.get(key)
    if m is None:
        reps = nbytes // len(pattern_lo)
        m = (int.from_bytes(pattern_lo * reps, "little"), int.from_bytes(pattern_hi * reps, "little"))
        _MASKS[key] = m
    return m


def _u16_from_bytes(data: bytes) -> list[int]:
    words = array("H", data)
    if _BIG_ENDIAN:
        words.byteswap()
    return words.tolist()


def _unpack12(buf: bytes) -> list[int]:
    """The 12-bit little-endian fields of buf (len divisible by 3), in order, not reduced mod q.

    Each 3-byte chunk b0 b1 b2 is widened to a 4-byte slot W = b0 | b1<<8 | b2<<16; the first
    field is W & 0xFFF and the second (W >> 12) & 0xFFF, which (W << 4) & 0x0FFF0000 puts in the
    slot's upper 16 bits. Across the whole buffer at once, that is two masks and one shift.
    """
    chunks = len(buf) // 3
    wide = bytearray(4 * chunks)
    wide[0::4] = buf[0::3]
    wide[1::4] = buf[1::3]
    wide[2::4] = buf[2::3]
    m_lo, m_hi = _masks(4 * chunks, b"\xff\x0f\x00\x00", b"\x00\x00\xff\x0f")
    w = int.from_bytes(wide, "little")
    return _u16_from_bytes(((w & m_lo) | ((w << 4) & m_hi)).to_bytes(4 * chunks, "little"))


def _pack(vals: list[int], d: int) -> bytes:
    """ByteEncode_d (Alg 5) of values below 2^d; len(vals) divisible by 8, 8 values → d bytes.

    The values go into 16-bit slots of one big integer; three halvings then pull each odd slot
    down against its even neighbour (16 → 2d bits per 32, 2d → 4d per 64, 4d → 8d per 128), so
    each 16-byte slot holds 8 values in its low d bytes, which strided slices pick out.
    """
    words = array("H", vals)
    if _BIG_ENDIAN:
        words.byteswap()
    nbytes = 2 * len(vals)
    z = int.from_bytes(words.tobytes(), "little")
    for half, width in ((2, d), (4, 2 * d), (8, 4 * d)):  # half a slot, in bytes; field width, in bits
        m_lo, m_hi = _masks(nbytes, b"\xff" * half + b"\x00" * half, b"\x00" * half + b"\xff" * half)
        z = (z & m_lo) | ((z & m_hi) >> (8 * half - width))
    raw = z.to_bytes(nbytes, "little")
    out = bytearray(len(vals) // 8 * d)
    for i in range(d):
        out[i::d] = raw[i::16]
    return bytes(out)


# --- sampling (Alg 7/8) ---------------------------------------------------------------------


def _sample_ntt(seed: bytes) -> list[int]:
    """SampleNTT (Alg 7) on the 34-byte seed ρ‖j‖i: the first 256 12-bit candidates below q."""
    nbytes = 3 * 168  # three SHAKE128 blocks: 336 candidates, about 273 accepted on average
    while True:
        coeffs = [x for x in _unpack12(hashlib.shake_128(seed).digest(nbytes)) if x < Q]
        if len(coeffs) >= N:
            return coeffs[:N]
        nbytes += 168


def _sample_cbd2(s: bytes, b: int) -> list[int]:
    """SamplePolyCBD_2(PRF_2(s, b)) (Alg 8), as small signed ints in [−2, 2]."""
    buf = hashlib.shake_256(s + bytes((b,))).digest(64 * 2)
    out = bytearray(N)
    out[0::2] = buf.translate(_CBD2_LO)
    out[1::2] = buf.translate(_CBD2_HI)
    return array("b", out).tolist()


# --- the encapsulation key (§7.2) -----------------------------------------------------------


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _parse_ek(ek: bytes) -> tuple[list[list[int]], bytes]:
    """Check ek (§7.2) and return (t̂ as k polynomials, ρ). Raises ValueError if it fails."""
    if len(ek) != EK_SIZE:
        raise ValueError(
            f"an ML-KEM-1024 encapsulation key is {EK_SIZE} bytes, got {len(ek)} (FIPS 203 §7.2 type check)"
        )
    vals = _unpack12(ek[:_T_BYTES])
    if max(vals) >= Q:
        bad = next(i for i, x in enumerate(vals) if x >= Q)
        raise ValueError(
            "the ML-KEM-1024 encapsulation key fails the FIPS 203 §7.2 modulus check: "
            f"coefficient {bad % N} of t̂[{bad // N}] encodes {vals[bad]}, not below q = {Q}"
        )
    return [vals[i * N : (i + 1) * N] for i in range(K)], ek[_T_BYTES:]


# --- K-PKE.Encrypt (Alg 14) and ML-KEM.Encaps_internal (Alg 17) -----------------------------


def _k_pke_encrypt(t_hat: list[list[int]], rho: bytes, m: bytes, r: bytes) -> bytes:
    """K-PKE.Encrypt(ek, m, r) (Alg 14), with ek already parsed into t̂ and ρ."""
    q = Q
    # Lines 9–17: y, e1 from PRF_η(r, N) for N = 0 … 2k−1, e2 from PRF_η2(r, 2k).
    y = [_sample_cbd2(r, i) for i in range(K)]
    e1 = [_sample_cbd2(r, K + i) for i in range(K)]
    e2 = _sample_cbd2(r, 2 * K)
    # Line 18: ŷ = NTT(y), kept as even and odd coefficients plus γ·odd (reduced).
    ye0, yo0, yg0, ye1, yo1, yg1, ye2, yo2, yg2, ye3, yo3, yg3 = chain.from_iterable(
        (ev, od, [b * g % q for b, g in zip(od, _GAMMAS, strict=True)]) for ev, od in map(_ntt, y)
    )

    def dot(rows: list[list[int]]) -> tuple[list[int], list[int]]:
        """Σ_j rows[j] ∘ ŷ[j] (MultiplyNTTs, Alg 11/12) as (even, odd) coefficients, reduced.

        BaseCaseMultiply: c0 = a0·b0 + a1·(b1·γ), c1 = a0·b1 + a1·b0, summed over the k = 4
        terms (this is ML-KEM-1024 only). The rows are below q, ŷ is within 7q + 2 of 0 (lazy
        NTT) and b1·γ is reduced, so a sum is below 56q² < 2^30 before its one reduction.
        """
        a00, a01, a10, a11, a20, a21, a30, a31 = [row[p::2] for row in rows for p in (0, 1)]
        even = [
            (x0 * b0 + x1 * g0 + w0 * b1 + w1 * g1 + v0 * b2 + v1 * g2 + u0 * b3 + u1 * g3) % q
            for x0, x1, w0, w1, v0, v1, u0, u1, b0, g0, b1, g1, b2, g2, b3, g3 in zip(
                a00, a01, a10, a11, a20, a21, a30, a31, ye0, yg0, ye1, yg1, ye2, yg2, ye3, yg3, strict=True
            )
        ]
        odd = [
            (x0 * o0 + x1 * b0 + w0 * o1 + w1 * b1 + v0 * o2 + v1 * b2 + u0 * o3 + u1 * b3) % q
            for x0, x1, w0, w1, v0, v1, u0, u1, b0, o0, b1, o1, b2, o2, b3, o3 in zip(
                a00, a01, a10, a11, a20, a21, a30, a31, ye0, yo0, ye1, yo1, ye2, yo2, ye3, yo3, strict=True
            )
        ]
        return even, odd

    # Line 19: u = NTT⁻¹(Âᵀ ∘ ŷ) + e1, where Âᵀ[i][j] = Â[j][i] = SampleNTT(ρ‖i‖j) (lines 4–8);
    # compressed on the way out (line 22).
    u_compressed: list[int] = []
    for i in range(K):
        u_hat = dot([_sample_ntt(rho + bytes((i, j))) for j in range(K)])
        u_compressed += _ntt_inv_compress(*u_hat, e1[i], _COMPRESS_DU)
    # Lines 20–21: μ = Decompress_1(ByteDecode_1(m)); v = NTT⁻¹(t̂ᵀ ∘ ŷ) + e2 + μ (compressed, line 23).
    e2_mu = [a + b for a, b in zip(e2, chain.from_iterable(map(_MU_BYTE.__getitem__, m)), strict=True)]
    v_compressed = _ntt_inv_compress(*dot(t_hat), e2_mu, _COMPRESS_DV)
    # Lines 22–24: c = ByteEncode_du(Compress_du(u)) ‖ ByteEncode_dv(Compress_dv(v)).
    return _pack(u_compressed, DU) + _pack(v_compressed, DV)


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
