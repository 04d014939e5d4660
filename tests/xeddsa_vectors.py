"""Shared XEdDSA verification vectors, and a spec-literal reference verifier that derives them.

Both XEdDSA verifiers in the project (``clients._xeddsa.xeddsa_verify`` and the relay's own copy,
``relay.identity.xeddsa_verify``) must give the answer of the XEdDSA spec (Signal, "The XEdDSA and
VXEdDSA Signature Schemes", revision 1, 2016-10-20) on every vector here. The spec's steps:

    §2.1  inv(x) = x^(p−2) mod p, so inv(0) = 0
    §2.3  convert_mont(u): umasked = u mod 2^|p|; P.y = u_to_y(umasked); P.s = 0
    §5    u_to_y(u) = (u − 1) · inv(u + 1) mod p
    §3    xeddsa_verify(u, M, (R ‖ s)):
              if u ≥ p or R.y ≥ 2^|p| or s ≥ 2^|q|: return false
              A = convert_mont(u)
              if not on_curve(A): return false
              h = hash(R ‖ A ‖ M) (mod q)
              Rcheck = sB − hA
              return bytes_equal(R, Rcheck)

Consequences the vectors pin down, all read off those lines:

* u = 1 and u = p − 1 both give y = 0 (the latter through inv(0) = 0): a point of order 4, on the
  curve, so verification goes on. u = 0 gives y = −1, the point of order 2. XEdDSA verification
  has no small-order check (only VXEdDSA's has, "cA == I"), so a signature that satisfies the
  equation under such a key verifies — and anyone can make one (``_forge``).
* s is checked against 2^|q| only: "rejecting s if it has excess bits but not requiring it to be
  fully reduced" (§5). Since qB = I, s + q verifies wherever s does.
* Rcheck is compared as bytes with its canonical encoding, so an R whose y is ≥ p, or an
  identity encoded with sign bit 1, never verifies; nor does a key u ≥ p (the top bit of u is
  not masked in verification: convert_mont's masking is unreachable after "u ≥ p").
* The check is cofactorless: a key with a torsion component verifies a signature only when
  h times that component is the identity.

``reference_verify`` does those steps in plain affine Edwards arithmetic (slow, but a third
implementation that shares no code with the two under test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int]
IDENTITY: Point = (0, 1)


def inv(x: int) -> int:
    return pow(x, P - 2, P)  # §2.1: inv(0) = 0


def add(p1: Point, p2: Point) -> Point:
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * inv(1 + t) % P, (y1 * y2 + x1 * x2) * inv(1 - t) % P)


def neg(pt: Point) -> Point:
    return ((-pt[0]) % P, pt[1])


def mul(n: int, pt: Point) -> Point:
    acc = IDENTITY
    while n:
        if n & 1:
            acc = add(acc, pt)
        pt = add(pt, pt)
        n >>= 1
    return acc


def x_from_y(y: int, sign: int) -> int | None:
    """The x with low bit ``sign`` such that (x, y) is on −x² + y² = 1 + dx²y², or None."""
    x2 = (y * y - 1) * inv(D * y * y + 1) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    return x if x & 1 == sign else P - x


def encode(pt: Point) -> bytes:
    return (pt[1] | (pt[0] & 1) << 255).to_bytes(32, "little")


def decode(data: bytes) -> Point | None:
    n = int.from_bytes(data, "little")
    y, sign = n & (2**255 - 1), n >> 255
    if y >= P:
        return None
    x = x_from_y(y, sign)
    return None if x is None else (x, y)


B: Point = (x_from_y(4 * inv(5) % P, 0) or 0, 4 * inv(5) % P)


def u_to_y(u: int) -> int:
    return (u - 1) * inv(u + 1) % P


def y_to_u(y: int) -> int:
    return (1 + y) * inv(1 - y) % P


def convert_mont(u: int) -> bytes:
    return u_to_y(u % 2**255).to_bytes(32, "little")  # sign bit 0


def h_of(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % Q


def reference_verify(u_bytes: bytes, message: bytes, signature: bytes) -> bool:
    """XEdDSA §3 xeddsa_verify, step by step (lengths first: the spec's inputs are fixed-size)."""
    if len(u_bytes) != 32 or len(signature) != 64:
        return False
    u = int.from_bytes(u_bytes, "little")
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    r_y = int.from_bytes(r, "little") & (2**255 - 1)  # R's y field: 255 bits, so never ≥ 2^|p| here
    if u >= P or r_y >= 2**255 or s >= 2**253:
        return False
    a_bytes = convert_mont(u)
    a = decode(a_bytes)
    if a is None:  # not on_curve(A)
        return False
    h = h_of(r, a_bytes, message)
    r_check = add(mul(s, B), neg(mul(h, a)))
    return encode(r_check) == r


# --- signatures made here, from a raw Edwards scalar (not through either implementation) -----


def sign_with_scalar(a: int, a_point: Point, message: bytes, r: int) -> bytes:
    """An Ed25519-style signature R ‖ s for the public point ``a_point`` by a scalar ``a``."""
    big_r = encode(mul(r, B))
    h = h_of(big_r, encode(a_point), message)
    return big_r + ((r + h * a) % Q).to_bytes(32, "little")


def _forge(u: int, tag: bytes) -> tuple[bytes, bytes]:
    """A message and a signature (R = a small-order point, s = 0) that verify under a small-order u.

    With A of order c, hA takes c values; pick R = −T for a torsion point T and try messages until
    h·A = T. No private key is involved: such keys verify signatures anyone can make.
    """
    a_bytes = convert_mont(u)
    a = decode(a_bytes)
    assert a is not None
    torsion = [mul(k, a) for k in range(8)]
    for i in range(1000):
        message = tag + b" %d" % i
        for t in torsion:
            r = encode(neg(t))
            if encode(mul(h_of(r, a_bytes, message), a)) == encode(t):
                return message, r + bytes(32)
    raise AssertionError("no forgery found")


@dataclass(frozen=True)
class Vector:
    name: str
    u: bytes
    message: bytes
    signature: bytes
    valid: bool  # the spec's answer
    why: str


def _le(n: int, size: int = 32) -> bytes:
    return n.to_bytes(size, "little")


def _first_u_off_curve() -> int:
    u = 2
    while decode(convert_mont(u)) is not None:
        u += 1
    return u


def build() -> list[Vector]:
    vectors: list[Vector] = []

    def add_vector(name: str, u: bytes, message: bytes, signature: bytes, valid: bool, why: str) -> None:
        vectors.append(Vector(name, u, message, signature, valid, why))

    # An honest key: a = 0x1234…, forced to sign bit 0 as calculate_key_pair does.
    a = int.from_bytes(hashlib.sha512(b"xeddsa vectors: key").digest(), "little") % Q
    a_point = mul(a, B)
    if a_point[0] & 1:
        a, a_point = (Q - a) % Q, neg(a_point)
    u = _le(y_to_u(a_point[1]))
    m = b"XEdDSA edge cases"
    r = int.from_bytes(hashlib.sha512(b"xeddsa vectors: r").digest(), "little") % Q
    good = sign_with_scalar(a, a_point, m, r)
    s = int.from_bytes(good[32:], "little")
    assert s + Q < 2**253
    add_vector("valid", u, m, good, True, "an honest signature")
    add_vector("other message", u, m + b"!", good, False, "h changes")
    add_vector("s + q", u, m, good[:32] + _le(s + Q), True, "§5: s need not be fully reduced; qB = I")
    add_vector("s + 2^253", u, m, good[:32] + _le(s + 2**253), False, "s ≥ 2^|q|")
    add_vector(
        "s top bit",
        u,
        m,
        good[:32] + _le(s | 2**255),
        False,
        "s ≥ 2^|q|; read as libsignal's sign bit, bit 255 names −A, for which this is no signature",
    )
    add_vector(
        "R sign bit flipped",
        u,
        m,
        _le(int.from_bytes(good[:32], "little") ^ 2**255) + good[32:],
        False,
        "R ≠ Rcheck",
    )
    add_vector(
        "u top bit", _le(int.from_bytes(u, "little") | 2**255), m, good, False, "u ≥ p: bit 255 is not masked"
    )
    # The same scalar signing for the other sign of A: valid for −A only, which XEdDSA never uses.
    add_vector(
        "signed for the sign-1 point",
        u,
        m,
        sign_with_scalar((Q - a) % Q, neg(a_point), m, r),
        False,
        "A has sign bit 0 by definition; a signature for −A does not verify",
    )

    # Small-order keys: u = 0 (order 2), u = 1 and u = p − 1 (both y = 0, order 4).
    m0, sig0 = _forge(0, b"u=0")
    add_vector("u = 0, forged", _le(0), m0, sig0, True, "y = −1, order 2: XEdDSA has no small-order check")
    add_vector("u = p, forged", _le(P), m0, sig0, False, "u ≥ p (non-canonical 0)")
    add_vector("u = 0, s = q", _le(0), m0, sig0[:32] + _le(Q), True, "s = q ≡ 0")
    r0 = int.from_bytes(sig0[:32], "little")
    if r0 + P < 2**255:
        add_vector("u = 0, R.y + p", _le(0), m0, _le(r0 + P) + sig0[32:], False, "non-canonical R ≠ Rcheck")
    m1, sig1 = _forge(1, b"u=1")
    add_vector("u = 1, forged", _le(1), m1, sig1, True, "y = 0, order 4: XEdDSA has no small-order check")
    add_vector("u = p - 1, forged", _le(P - 1), m1, sig1, True, "inv(0) = 0 gives y = 0, the same A as u = 1")
    add_vector("u = p + 1, forged", _le(P + 1), m1, sig1, False, "u ≥ p (non-canonical 1)")
    add_vector("u = 2^256 - 1", b"\xff" * 32, m1, sig1, False, "u ≥ p")
    # The identity with sign bit 1 ("negative zero") is not the canonical encoding of anything.
    m_id = next(
        b"id %d" % i for i in range(1000) if h_of(encode(IDENTITY), convert_mont(0), b"id %d" % i) % 2 == 0
    )
    add_vector("u = 0, R = I", _le(0), m_id, encode(IDENTITY) + bytes(32), True, "hA = I for even h")
    add_vector(
        "u = 0, R = I with sign bit",
        _le(0),
        m_id,
        _le(1 | 2**255) + bytes(32),
        False,
        "non-canonical encoding of I ≠ Rcheck",
    )

    # A key with no point: convert_mont gives a y with no x.
    off = _first_u_off_curve()
    add_vector("u off the curve", _le(off), m, good, False, "not on_curve(A)")

    # A mixed-order key A' = aB + T2 (T2 = (0, −1)): sB − hA' = R − hT2, so it verifies iff h is even.
    t2: Point = (0, P - 1)
    mixed = add(a_point, t2)
    if mixed[0] & 1:
        mixed = neg(mixed)
        a_mixed = (Q - a) % Q
    else:
        a_mixed = a
    u_mixed = _le(y_to_u(mixed[1]))
    found = {True: False, False: False}
    for i in range(64):
        mm = b"mixed %d" % i
        sig = sign_with_scalar(a_mixed, mixed, mm, r + i)
        even = h_of(sig[:32], encode(mixed), mm) % 2 == 0
        if not found[even]:
            found[even] = True
            add_vector(
                f"mixed-order key, h {'even' if even else 'odd'}",
                u_mixed,
                mm,
                sig,
                even,
                "cofactorless: Rcheck = R − h·T2",
            )
        if all(found.values()):
            break

    # Wrong lengths are refused before anything else.
    add_vector("u 31 bytes", u[:31], m, good, False, "wrong length")
    add_vector("u 33 bytes", u + b"\x00", m, good, False, "wrong length")
    add_vector("signature 63 bytes", u, m, good[:63], False, "wrong length")
    add_vector("signature 65 bytes", u, m, good + b"\x00", False, "wrong length")
    add_vector("empty signature", u, m, b"", False, "wrong length")
    return vectors


VECTORS = build()
