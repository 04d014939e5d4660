"""XEdDSA signatures over Curve25519 (Signal's "XEdDSA and VXEdDSA" spec, revision 1, 2016).

XEdDSA lets one X25519 key pair also sign: the Montgomery private scalar ``k`` is used as an
Edwards25519 scalar, its public point is forced to have sign bit 0 (negating ``a`` if needed),
and the signature is an ordinary Ed25519 signature over that point. So verification is just
"convert the Montgomery ``u`` to the Edwards ``y`` with sign 0, then run Ed25519 verify", and
that second step goes through ``clients._primitives.ed25519_verify`` (OpenSSL).

Signing has no library to lean on (no X25519-key-signs API exists in ``cryptography``), so the
Edwards25519 arithmetic it needs lives here, in plain Python integers:

* only fixed-base multiplication ``n·B`` is needed (``A = kB`` and ``R = rB``);
* it uses a table, built once on first use, of ``j · 256^i · B`` for ``i < 32`` and
  ``1 <= j <= 128``, stored in affine "(y+x, y−x, 2d·x·y)" form, and a signed radix-256
  recoding of the scalar, so one multiplication is at most 32 mixed additions in extended
  twisted-Edwards coordinates (Hisil–Wong–Carter–Dawson 2008, a = −1) plus one inversion.

Python big-integer arithmetic is not constant-time; this is a simulator's implementation,
checked for interoperability against libxeddsa and OpenSSL in ``tests/test_xeddsa.py``.
"""

from __future__ import annotations

import hashlib

from clients._primitives import ed25519_verify

__all__ = [
    "calculate_key_pair",
    "convert_mont",
    "xeddsa_sign",
    "xeddsa_verify",
]

# --- curve constants ----------------------------------------------------------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493  # order of the base point B
D = -121665 * pow(121666, -1, P) % P
D2 = 2 * D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of −1 mod p

_BITS_P = 255  # |p|
_BITS_Q = 253  # |q|
_MASK_P = (1 << _BITS_P) - 1

# hash_i(X) = SHA-512((2^b − 1 − i) as b/8 little-endian bytes ‖ X), b = 256. XEdDSA uses i = 1.
_HASH1_PREFIX = (2**256 - 1 - 1).to_bytes(32, "little")

# Extended coordinates (X : Y : Z : T) with x = X/Z, y = Y/Z, x·y = T/Z.
_Point = tuple[int, int, int, int]
# A precomputed affine point (y + x, y − x, 2d·x·y), all reduced mod p.
_Niels = tuple[int, int, int]


def _recover_x(y: int, sign: int) -> int:
    """The x with the given low bit such that (x, y) is on the curve (y must be valid)."""
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x2 = u * pow(v, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        raise ValueError("not a point on Edwards25519")
    if x & 1 != sign:
        x = P - x
    return x


_BY = 4 * pow(5, -1, P) % P
_BX = _recover_x(_BY, 0)
_B: _Point = (_BX, _BY, 1, _BX * _BY % P)
_IDENTITY: _Point = (0, 1, 1, 0)


# --- extended-coordinate arithmetic (used to build the table) ---------------------------


def _add(p1: _Point, p2: _Point) -> _Point:
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = b - a, dd - c, dd + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1: _Point) -> _Point:
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


# --- the fixed-base table -----------------------------------------------------------------

_W = 8  # window width in bits
_RADIX = 1 << _W
_HALF = _RADIX >> 1
_WMASK = _RADIX - 1
_POSITIONS = (_BITS_Q + _W - 1) // _W  # 32 windows cover every scalar < 2^253 (carry included)

# _TABLE[i][j + 128] is (j · 256^i)·B for −128 <= j <= 128, j != 0 (entry for j = 0 unused).
_TABLE: list[list[_Niels]] = []


def _build_table() -> list[list[_Niels]]:
    projective: list[_Point] = []
    base = _B
    for _ in range(_POSITIONS):
        acc = base
        projective.append(acc)
        for _ in range(_HALF - 1):
            acc = _add(acc, base)
            projective.append(acc)
        base = _double(acc)  # 2 · 128 · base = 256 · base
    # Montgomery's trick: one inversion for all the Z's.
    prefix = [1] * len(projective)
    running = 1
    for idx, pt in enumerate(projective):
        prefix[idx] = running
        running = running * pt[2] % P
    inv = pow(running, -1, P)
    affine: list[_Niels] = [(0, 0, 0)] * len(projective)
    for idx in range(len(projective) - 1, -1, -1):
        x, y, z, _ = projective[idx]
        zi = inv * prefix[idx] % P
        inv = inv * z % P
        ax, ay = x * zi % P, y * zi % P
        affine[idx] = ((ay + ax) % P, (ay - ax) % P, D2 * ax % P * ay % P)
    table: list[list[_Niels]] = []
    for i in range(_POSITIONS):
        row = affine[i * _HALF : (i + 1) * _HALF]  # multiples 1..128
        negs = [(ym, yp, (P - t) % P) for (yp, ym, t) in reversed(row)]  # −128..−1
        table.append([*negs, (1, 1, 0), *row])
    return table


def _base_mult(n: int) -> _Point:
    """n·B for 0 <= n < 2^253, in extended coordinates."""
    if not _TABLE:
        _TABLE.extend(_build_table())
    table = _TABLE
    x, y, z, t = _IDENTITY
    carry = 0
    for i in range(_POSITIONS):
        digit = (n & _WMASK) + carry
        n >>= _W
        if digit >= _HALF:
            digit -= _RADIX
            carry = 1
        else:
            carry = 0
        if digit:
            yp, ym, t2d = table[i][digit + _HALF]
            a = (y - x) * ym % P
            b = (y + x) * yp % P
            c = t * t2d % P
            dd = z + z
            e, f, g, h = b - a, dd - c, dd + c, b + a
            x, y, z, t = e * f % P, g * h % P, f * g % P, e * h % P
    if carry or n:
        raise ValueError("scalar out of range for the fixed-base table")
    return (x, y, z, t)


def _encode(pt: _Point) -> tuple[bytes, int]:
    """The 32-byte Edwards encoding of a point, and its sign bit (the low bit of x)."""
    x, y, z, _ = pt
    zi = pow(z, -1, P)
    ax = x * zi % P
    ay = y * zi % P
    sign = ax & 1
    return (ay | (sign << _BITS_P)).to_bytes(32, "little"), sign


# --- the spec ---------------------------------------------------------------------------------


def _clamp(k: bytes) -> int:
    n = int.from_bytes(k, "little")
    n &= ~7
    n &= _MASK_P
    n |= 1 << 254
    return n


def calculate_key_pair(k: bytes) -> tuple[bytes, int]:
    """calculate_key_pair(k): the Edwards public key A (sign bit 0) and private scalar a.

    ``k`` is a 32-byte X25519 private key; it is clamped as X25519 clamps it. ``A = kB``; if A's
    sign bit is 1, ``a = −k mod q`` (so that aB has sign bit 0), else ``a = k mod q``.

    ``a`` is always reduced, as the spec writes it. libsignal and libxeddsa instead keep the
    clamped, unreduced ``k`` bytes when no negation is needed, and that is what they feed to
    hash1; so with the same Z their R (and s) differ from ours for those keys. Both are valid
    signatures, since both implementations verify either one.
    """
    if len(k) != 32:
        raise ValueError("k must be 32 bytes")
    scalar = _clamp(bytes(k)) % Q
    encoded, sign = _encode(_base_mult(scalar))
    if sign:
        return encoded[:31] + bytes((encoded[31] & 0x7F,)), (-scalar) % Q
    return encoded, scalar


def xeddsa_sign(
    x25519_private: bytes, message: bytes, random64: bytes, *, key_pair: tuple[bytes, int] | None = None
) -> bytes:
    """xeddsa_sign(k, M, Z): a 64-byte signature R ‖ s that Ed25519-verifies under convert_mont(u).

    ``key_pair`` is ``calculate_key_pair(k)`` when the caller already has it (an identity key that
    signs many prekeys keeps it: it is half the cost of a signature).
    """
    if len(x25519_private) != 32:
        raise ValueError("x25519_private must be 32 bytes")
    if len(random64) != 64:
        raise ValueError("random64 must be 64 bytes")
    message = bytes(message)
    public, a = key_pair if key_pair is not None else calculate_key_pair(x25519_private)
    a_bytes = a.to_bytes(32, "little")
    r = int.from_bytes(hashlib.sha512(_HASH1_PREFIX + a_bytes + message + bytes(random64)).digest(), "little")
    r %= Q
    big_r, _ = _encode(_base_mult(r))
    h = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % Q
    s = (r + h * a) % Q
    return big_r + s.to_bytes(32, "little")


def convert_mont(u: bytes) -> bytes:
    """convert_mont(u): the Edwards public key (sign bit 0) of the Montgomery u-coordinate.

    Per the spec, the top bit of ``u`` is masked off, then ``y = (u − 1) / (u + 1) mod p`` (with
    the spec's inv(0) = 0, so u ≡ −1 gives y = 0).
    """
    if len(u) != 32:
        raise ValueError("u must be 32 bytes")
    n = int.from_bytes(u, "little") & _MASK_P
    den = (n + 1) % P
    y = (n - 1) * pow(den, -1, P) % P if den else 0
    return y.to_bytes(32, "little")


def xeddsa_verify(x25519_public: bytes, message: bytes, signature: bytes) -> bool:
    """xeddsa_verify(u, M, R ‖ s), spec §3. False (never an exception) for any malformed input.

    The spec's answer on every edge case (``relay.identity`` gives the same, on the same vectors in
    ``tests/test_xeddsa_vectors.py``): u ≥ p is refused, bit 255 included (convert_mont's masking
    comes after); u = 0, 1 and p − 1 are small-order keys that XEdDSA does not refuse (inv(0) = 0
    maps p − 1 to y = 0, like 1); s ≥ 2^|q| is refused but q ≤ s < 2^|q| is not (§5: "not requiring
    it to be fully reduced"); R is compared as bytes with the canonical encoding of sB − hA.
    """
    if len(x25519_public) != 32 or len(signature) != 64:
        return False
    signature = bytes(signature)
    if int.from_bytes(x25519_public, "little") >= P:
        return False
    # R.y ≥ 2^|p| cannot happen in 32 bytes; a non-canonical R never equals Rcheck's encoding.
    s = int.from_bytes(signature[32:], "little")
    if s >> _BITS_Q:  # s >= 2^|q|
        return False
    if s >= Q:  # sB = (s mod q)B; OpenSSL's Ed25519 demands s < q, so hand it s mod q
        signature = signature[:32] + (s - Q).to_bytes(32, "little")
    # on_curve(A), h and Rcheck = sB − hA are Ed25519's own (cofactorless, byte-compared) steps.
    return ed25519_verify(convert_mont(x25519_public), bytes(message), signature)
