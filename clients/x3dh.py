"""X3DH (rev 1) and PQXDH (rev 3) key agreement, sans-IO.

Alice (the initiator) calls ``initiate`` with Bob's prekey bundle; it verifies every signature in
the bundle, computes

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
    SK  = KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4] [‖ SS])            (X3DH §3.3, PQXDH §3.3)

where SS is the ML-KEM-1024 shared secret encapsulated to Bob's KEM prekey (PQXDH only), and
returns SK, AD = Encode(IK_A) ‖ Encode(IK_B), and the ``InitialMessage`` Bob needs. Bob calls
``respond`` with his secrets; a bad message raises ``DecryptionError``, the same error as any
failed decryption, and consumes nothing.

A PQXDH responder (``respond(..., pq=True)``) refuses an initial message without the KEM prekey id
and ciphertext: PQXDH §3.2 has Bob always publish a KEM prekey and §3.3 Alice always send CT, so a
message without them is X3DH, which an active attacker able to strip PQ would otherwise downgrade
every session to (libsignal refuses such PreKeySignalMessages too).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError
from relaysim.clients.keys import BundleError, PreKeyBundle, PreKeySecrets

__all__ = ["PQXDH_INFO", "X3DH_INFO", "InitialMessage", "KeyAgreement", "initiate", "respond"]

RNG = Callable[[int], bytes]

# X3DH §2.1 "info": an ASCII string identifying the application.
X3DH_INFO = b"relaysim_X3DH_CURVE25519_SHA-256"
# PQXDH §2.1 asks the info string to name the curve, the hash and the KEM. We name FIPS 203
# ML-KEM-1024 honestly, not CRYSTALS-Kyber-1024 (they are not wire-compatible).
PQXDH_INFO = b"relaysim_CURVE25519_SHA-256_ML-KEM-1024"
# Header-encryption keys (Double Ratchet §4.3 shared_hka, shared_nhkb) derived from SK; our choice.
_HEADER_KEYS_INFO = b"relaysim_DoubleRatchet_HeaderKeys"


def _is_prekey_id(value: object) -> bool:
    """A prekey id as bundles carry them (``clients.keys``: 0 to 2**32 - 1). ``type() is int``, not
    ``isinstance``: msgpack's true is a Python bool, an int equal to 1, and would name prekey 1."""
    return type(value) is int and 0 <= value < 2**32


@dataclass(frozen=True, slots=True)
class InitialMessage:
    """What Alice sends with her first messages so that Bob can compute SK (X3DH §3.3)."""

    identity_key: bytes  # IK_A
    ephemeral_key: bytes  # EK_A
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int | None = None
    kem_ciphertext: bytes | None = None  # PQXDH CT

    def to_wire(self) -> list[Any]:
        return [
            self.identity_key,
            self.ephemeral_key,
            self.signed_prekey_id,
            self.one_time_prekey_id,
            self.kem_prekey_id,
            self.kem_ciphertext,
        ]

    @classmethod
    def from_wire(cls, data: object) -> InitialMessage:
        if not isinstance(data, list | tuple) or len(data) != 6:
            raise DecryptionError()
        ik, ek, spk_id, opk_id, kem_id, kem_ct = data
        ok = (
            type(ik) is bytes
            and len(ik) == 32
            and type(ek) is bytes
            and len(ek) == 32
            and _is_prekey_id(spk_id)
            and (opk_id is None or _is_prekey_id(opk_id))
            and (kem_id is None) == (kem_ct is None)
            and (kem_ct is None or (type(kem_ct) is bytes and _is_prekey_id(kem_id)))
        )
        if not ok:
            raise DecryptionError()
        return cls(ik, ek, spk_id, opk_id, kem_id, kem_ct)


class KeyAgreement(NamedTuple):
    """SK and AD (X3DH §3.3). A named tuple, made twice per set-up: ~0.15 µs, against ~0.3 for a
    frozen dataclass, which sets each field through ``object.__setattr__``."""

    sk: bytes
    ad: bytes

    def header_keys(self) -> tuple[bytes, bytes]:
        """(shared_hka, shared_nhkb) for the header-encryption variant (Double Ratchet §4.3)."""
        hk = _p.hkdf_sha256(self.sk, b"", _HEADER_KEYS_INFO, 128)
        return hk[:64], hk[64:]


def _agreement(sk: bytes, ik_a: bytes, ik_b: bytes) -> KeyAgreement:
    return KeyAgreement(sk, spec.encode_public_key(ik_a) + spec.encode_public_key(ik_b))


def _bundle_dh(pair: _p.X25519Pair, public: bytes, name: str) -> bytes:
    """DH(pair, a key of the bundle), or BundleError naming the key when it is a low-order point.

    The relay hands out bundles and is not trusted with them: a signature does not rule such a key
    out (the one-time prekey is not signed at all, and XEdDSA does not refuse a low-order identity
    key: u = 0, 1, p − 1, see ``clients._xeddsa.xeddsa_verify``, so whoever chooses it can forge
    its signatures). Its DH output is all zeros, which RFC 7748 §6.1 lets a party check and abort
    on, and the X25519 pair refuses: the session is refused here, at set-up, like a forged bundle.
    """
    try:
        return pair.dh(public)
    except _p.AuthenticationFailed:
        raise BundleError(f"{name} is a low-order X25519 point (its shared secret is all zeros)") from None


def initiate(
    identity: _p.X25519Pair,
    bundle: PreKeyBundle,
    *,
    pq: bool = True,
    rng: RNG = os.urandom,
    deterministic_kem: bool = False,
) -> tuple[KeyAgreement, InitialMessage]:
    """Alice's side. ``pq=True`` runs PQXDH and requires a KEM prekey in the bundle.

    ``deterministic_kem`` draws the ML-KEM encapsulation's randomness from ``rng`` too (FIPS 203
    Encaps_internal, slower), for simulations that must repeat byte for byte.
    """
    bundle.verify()
    if pq and bundle.kem_prekey is None:
        raise BundleError("PQXDH needs a kem_prekey in the bundle; it has none")
    spk = bundle.signed_prekey.public
    ek = spec.generate_dh(rng)
    km = (
        _bundle_dh(identity, spk, "signed_prekey.public")
        + _bundle_dh(ek, bundle.identity_key, "identity_key")
        + _bundle_dh(ek, spk, "signed_prekey.public")
    )
    opk = bundle.one_time_prekey
    if opk is not None:
        km += _bundle_dh(ek, opk.public, "one_time_prekey.public")
    kem_id = kem_ct = None
    info = X3DH_INFO
    if pq:
        assert bundle.kem_prekey is not None
        try:
            ss, kem_ct = _p.mlkem_encapsulate(
                bundle.kem_prekey.public, rng(32) if deterministic_kem else None
            )
        except _p.AuthenticationFailed:
            raise BundleError("kem_prekey.public is not a valid ML-KEM-1024 encapsulation key") from None
        kem_id = bundle.kem_prekey.id
        km += ss
        info = PQXDH_INFO
    sk = spec.x3dh_kdf(km, info)
    message = InitialMessage(
        identity.public,
        ek.public,
        bundle.signed_prekey.id,
        None if opk is None else opk.id,
        kem_id,
        kem_ct,
    )
    return _agreement(sk, identity.public, bundle.identity_key), message


def respond(
    secrets: PreKeySecrets, message: InitialMessage, *, pq: bool = True
) -> tuple[KeyAgreement, _p.X25519Pair]:
    """Bob's side: SK and AD from his secrets, plus the signed prekey pair that seeds his ratchet.

    ``pq=True`` runs PQXDH only: a message without the KEM prekey id and ciphertext (plain X3DH) is
    refused, so that no one can downgrade the session by stripping them. ``pq=False`` also accepts
    X3DH (rev 1), and PQXDH if a KEM prekey is named.

    Consumes nothing: the caller deletes the one-time prekeys only after the first message
    decrypts, so a forged initial message cannot burn them.
    """
    if pq and (message.kem_prekey_id is None or message.kem_ciphertext is None):
        raise DecryptionError()
    signed = secrets.signed.get(message.signed_prekey_id)
    if signed is None:
        raise DecryptionError()
    spk_pair = signed[0]
    ik = secrets.identity.pair
    try:
        km = (
            spk_pair.dh(message.identity_key)
            + ik.dh(message.ephemeral_key)
            + spk_pair.dh(message.ephemeral_key)
        )
        if message.one_time_prekey_id is not None:
            opk = secrets.one_time.get(message.one_time_prekey_id)
            if opk is None:
                raise DecryptionError()
            km += opk.dh(message.ephemeral_key)
        info = X3DH_INFO
        if message.kem_prekey_id is not None:
            # the seed (or the key made from it, kept): no public key re-derived
            seed = secrets.kem.decapsulation_key(message.kem_prekey_id)
            if seed is None or message.kem_ciphertext is None:
                raise DecryptionError()
            km += _p.mlkem_decapsulate(seed, message.kem_ciphertext)
            info = PQXDH_INFO
    except _p.AuthenticationFailed:
        raise DecryptionError() from None
    sk = spec.x3dh_kdf(km, info)
    return _agreement(sk, message.identity_key, ik.public), spk_pair
