"""The only module in ``clients`` that touches ``cryptography``'s hazmat layer (PyNaCl here only
speeds up operations with the same answers: Ed25519 verification, and X25519, RFC 7748, whose
key generation costs libsodium about half what OpenSSL's does, with no parsed key object to keep).

Everything here is a thin, fast wrapper around one primitive. Nothing here picks a protocol
constant or a key: callers above (``clients.spec``, the ratchet, X3DH) do, and callers above
*them* never see a nonce, an IV or a raw key at all.

HMAC and HKDF are built on the standard library's ``hashlib`` SHA-256 (OpenSSL underneath);
that is several times cheaper per call than building a ``cryptography`` HMAC object, and the
ratchet calls it on every message. Tests check both against ``cryptography``'s HKDF and HMAC.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import random as _random
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey, MLKEM1024PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_scalarmult as _sodium_scalarmult
from nacl.bindings import crypto_scalarmult_base as _sodium_scalarmult_base
from nacl.bindings import crypto_sign_open as _sodium_sign_open
from nacl.exceptions import BadSignatureError as _SodiumBadSignature

from relaysim.clients.errors import UsageError

__all__ = [
    "AHEAD_BASE",
    "AHEAD_DH",
    "AHEAD_ENCAPS",
    "AHEAD_KEM",
    "AHEAD_VERIFY",
    "Ahead",
    "AuthenticationFailed",
    "X25519Pair",
    "aes_cbc_decrypt",
    "aes_cbc_encrypt",
    "constant_time_equal",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_sha256",
    "hmac_sha256_pair",
    "mlkem_decapsulate",
    "mlkem_encapsulate",
    "mlkem_keypair_from_seed",
    "mlkem_private_key",
    "require_key_source",
    "siv_decrypt",
    "siv_encrypt",
    "use_ahead",
    "x25519_pair_from_private",
    "x25519_public",
]

# An RNG is any callable that returns n bytes. Production code passes ``os.urandom`` (the default
# everywhere); the simulator passes the ``randbytes`` of a ``sims.world.util.SimulationRandom`` so that
# runs are reproducible. A seeded generator made any other way is refused by require_key_source.
RNG = Callable[[int], bytes]


def require_key_source(rng: RNG, where: str) -> RNG:
    """``rng``, unless it is a seeded ``random.Random`` that is not the simulator's.

    Keys drawn from ``random.Random(seed).randbytes`` (or the module-level ``random.randbytes``,
    a Mersenne Twister) are recomputable by anyone who knows or recovers the seed. Device code
    accepts a deterministic generator only when it says it belongs to a simulation: an instance of
    ``sims.world.util.SimulationRandom``, marked ``SIMULATION_KEYS = True`` (clients never import sims;
    the mark is the contract, checked by tests/sims/test_key_fences.py). ``os.urandom``,
    ``secrets.token_bytes`` and ``random.SystemRandom().randbytes`` are accepted.
    """
    owner = getattr(rng, "__self__", None)
    if (
        isinstance(owner, _random.Random)
        and not isinstance(owner, _random.SystemRandom)
        and getattr(type(owner), "SIMULATION_KEYS", False) is not True
    ):
        raise UsageError(
            f"{where}: rng is the randbytes of a seeded {type(owner).__module__}.{type(owner).__name__}: "
            "every key drawn from it can be recomputed from the seed. Leave rng out (os.urandom), "
            "or, in a simulation, pass sims.world.util.seeded(seed, label).randbytes"
        )
    return rng


_ZERO32 = bytes(32)


class AuthenticationFailed(Exception):
    """A MAC, a padding, a tag or a signature did not check. Says nothing more, on purpose."""


# --- hashes and KDFs -----------------------------------------------------------------------


# HMAC-SHA256 (RFC 2104) from hashlib over precomputed key pads: two SHA-256 calls, about a
# third cheaper than hmac.digest per call, and the ratchet makes five or six per message. The
# pads come from ``bytes.translate`` (as the standard library's pure-Python HMAC does).
_sha256 = hashlib.sha256
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > 64:
        key = _sha256(key).digest()
    key = key.ljust(64, b"\0")
    return key.translate(_IPAD), key.translate(_OPAD)


_ZERO_SALT_PADS = _pads(_ZERO32)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    if len(key) > 64:  # (_pads, written out: a call less per HMAC)
        key = _sha256(key).digest()
    key = key.ljust(64, b"\0")
    return _sha256(key.translate(_OPAD) + _sha256(key.translate(_IPAD) + data).digest()).digest()


def hmac_sha256_pair(key: bytes, d1: bytes, d2: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256 of two messages under one key, padding the key once."""
    if len(key) > 64:  # (_pads, written out)
        key = _sha256(key).digest()
    key = key.ljust(64, b"\0")
    ipad, opad = key.translate(_IPAD), key.translate(_OPAD)
    return (
        _sha256(opad + _sha256(ipad + d1).digest()).digest(),
        _sha256(opad + _sha256(ipad + d2).digest()).digest(),
    )


_COUNTERS = tuple(bytes((i,)) for i in range(256))  # HKDF-Expand's one-octet block counter


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256. An empty salt means HashLen zero bytes (RFC 5869 §2.2)."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 output is limited to 8160 bytes")
    ipad, opad = _pads(salt) if salt and salt != _ZERO32 else _ZERO_SALT_PADS
    prk = _sha256(opad + _sha256(ipad + ikm).digest()).digest().ljust(64, b"\0")  # (as _pads(prk))
    ipad, opad = prk.translate(_IPAD), prk.translate(_OPAD)
    # T(1) = HMAC(PRK, info ‖ 0x01), T(i) = HMAC(PRK, T(i−1) ‖ info ‖ i): the first block written out,
    # the counters made once (~0.3 µs less for 32 bytes, ~0.9 for the 80 of a message key)
    block = out = _sha256(opad + _sha256(ipad + info + b"\x01").digest()).digest()
    counter = 2
    while len(out) < length:
        block = _sha256(opad + _sha256(ipad + block + info + _COUNTERS[counter]).digest()).digest()
        out += block
        counter += 1
    return out[:length]


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return _hmac.compare_digest(a, b)


# --- X25519 ---------------------------------------------------------------------------------


class X25519Pair:
    """An X25519 key pair, as its two 32-byte halves.

    X25519 (RFC 7748) runs on libsodium (PyNaCl): the public key is X25519(k, 9) by its fixed-base
    multiplication, about half the time of OpenSSL's key import (which computes the public key as it
    parses the private one), and a DH is one call on the bytes, within a few per cent of OpenSSL's
    exchange on parsed keys (41.7 against 39.4 µs, quiet, docs/performance.md) — so a pair keeps no
    parsed key object (OpenSSL's is ~0.4 KiB, and a phone keeps a pair per session and a batch of
    one-time prekeys). The outputs are RFC 7748's, byte for byte the
    same as OpenSSL's, clamping and the masked top bit of u included; an all-zero shared secret (a
    small-order peer key) is refused, as OpenSSL refuses it (tests/clients/test_spec_vectors.py).
    """

    __slots__ = ("private", "public")

    def __init__(self, private: bytes, public: bytes) -> None:
        self.private = private
        self.public = public

    def dh(self, their_public: bytes) -> bytes:
        """X25519(our private, their public): 32 bytes. A peer key that is not 32 bytes, or that
        gives the all-zero shared secret, raises AuthenticationFailed."""
        # PyNaCl's binding checks no lengths (libsodium would read 32 bytes from whatever it is
        # given): the check is here. libsodium refuses an all-zero output with -1 (RuntimeError).
        if not isinstance(their_public, bytes) or len(their_public) != 32:
            raise AuthenticationFailed()
        if _ahead is not None:
            out = _ahead.take(_ahead.dh, (self.private, their_public))
            if out is not None:
                return out
        try:
            return _sodium_scalarmult(self.private, their_public)
        except RuntimeError as exc:
            raise AuthenticationFailed() from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Pair) and other.private == self.private

    def __hash__(self) -> int:
        return hash(self.public)

    def __repr__(self) -> str:
        return f"X25519Pair(public={self.public.hex()[:16]}…)"


def x25519_public(public: bytes) -> bytes:
    """A peer's X25519 public key, checked for length once for several DHs with it."""
    if not isinstance(public, bytes) or len(public) != 32:
        raise AuthenticationFailed()
    return public


def x25519_pair_from_private(private: bytes) -> X25519Pair:
    """The pair of a 32-byte X25519 private key (clamped as RFC 7748 §5 says, inside the scalar
    multiplication; the bytes are kept as given)."""
    private = bytes(private)
    if len(private) != 32:  # (libsodium reads 32 bytes whatever it is given)
        raise ValueError(f"an X25519 private key is 32 bytes, not {len(private)}")
    if _ahead is not None:
        public = _ahead.take(_ahead.base, private)
        if public is not None:
            return X25519Pair(private, public)
    return X25519Pair(private, _sodium_scalarmult_base(private))


# --- results computed ahead, elsewhere (a simulation's second core) ----------------------------

# Job kinds for ``clients.ahead.compute_ahead``: X25519(k, u); the public key of k; ML-KEM-1024
# decapsulation; an XEdDSA signature's check (``_xeddsa.xeddsa_verify``); ML-KEM-1024 encapsulation.
AHEAD_DH = 0
AHEAD_BASE = 1
AHEAD_KEM = 2
AHEAD_VERIFY = 3
AHEAD_ENCAPS = 4


class Ahead:
    """Answers of this module's costliest pure functions, computed before they are asked for by
    another process (a simulation's worker on the other core, ``sims.world.ahead``) from the same
    inputs, each kept under the function's whole input: ``X25519Pair.dh`` under (private key, peer
    key), ``x25519_pair_from_private``'s public key under the private key, ``mlkem_decapsulate``
    under (seed, ciphertext), ``_xeddsa.xeddsa_verify_each``'s answer for a good signature under
    (public key, message, signature), and ``mlkem_encapsulate``'s under (public key, m) — with m
    None, an encapsulation with fresh randomness from the other process's OpenSSL, as random as one
    made here. A call whose input is held returns the held answer and forgets it (each is taken
    once); any other computes as always. So every answer is the same with or without it: only where
    it is computed changes. A refusal (an all-zero X25519 output, a bad ciphertext, a forged
    signature) is never held: the caller computes it and refuses it itself.

    ``refill`` (its owner's) is called once on a miss whose input is ``pending`` (asked for, its
    answer still to come), to take in what has come since. Installed for a run with ``use_ahead``;
    None (the default) costs each of those calls one test. A simulation's hook: nothing else
    installs one.
    """

    __slots__ = ("base", "dh", "encaps", "hits", "kem", "misses", "pending", "refill", "verified")

    def __init__(self, refill: Callable[[], None] | None = None) -> None:
        self.dh: dict[tuple[bytes, bytes], bytes] = {}
        self.base: dict[bytes, bytes] = {}
        self.kem: dict[tuple[bytes, bytes], bytes] = {}
        self.verified: dict[tuple[bytes, bytes, bytes], bytes] = {}
        self.encaps: dict[tuple[bytes, bytes | None], bytes] = {}  # shared secret ‖ ciphertext
        self.pending: dict[Any, int] = {}  # inputs asked for whose answers have not come, and how often
        self.refill = refill
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(job: tuple[Any, ...]) -> Any:
        """The input a job's answer is held under: the job without its kind (a key pair's public
        key: the private key alone)."""
        return job[1] if job[0] == AHEAD_BASE else job[1:]

    def table(self, kind: str) -> dict[Any, bytes]:
        """Where the answers of a job of ``kind`` are held."""
        return (
            self.dh
            if kind == AHEAD_DH
            else self.base
            if kind == AHEAD_BASE
            else self.kem
            if kind == AHEAD_KEM
            else self.verified
            if kind == AHEAD_VERIFY
            else self.encaps
        )

    def hold(self, job: tuple[Any, ...], answer: bytes) -> tuple[dict[Any, bytes], Any]:
        """Hold ``answer`` to ``job`` (``clients.ahead.compute_ahead``'s) under its input; where it is held."""
        table = self.table(job[0])
        key = self.key(job)
        table[key] = answer
        return table, key

    def known(self, job: tuple[Any, ...]) -> bool:
        """Whether ``job``'s answer is held, or asked for and still to come."""
        key = self.key(job)
        return key in self.pending or key in self.table(job[0])

    def take(self, table: dict[Any, bytes], key: Any) -> bytes | None:
        out = table.pop(key, None)
        if out is None and key in self.pending and self.refill is not None:
            self.refill()
            out = table.pop(key, None)
        if out is None:
            self.misses += 1
        else:
            self.hits += 1
        return out


_ahead: Ahead | None = None


def use_ahead(ahead: Ahead | None) -> Ahead | None:
    """Install ``ahead`` (None: none) for this process's calls; returns the one it replaces."""
    global _ahead
    previous, _ahead = _ahead, ahead
    return previous


# --- Ed25519 (XEdDSA signing of X25519 identity keys lives in _xeddsa on top of this) ---------


def ed25519_public(private: bytes) -> bytes:
    """The public key of a 32-byte Ed25519 private key (RFC 8032 seed)."""
    key = Ed25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(private: bytes, message: bytes) -> bytes:
    """RFC 8032 Ed25519 (deterministic: no randomness beyond the private key)."""
    return Ed25519PrivateKey.from_private_bytes(private).sign(message)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 §5.1.7 verification, with OpenSSL's answer on every input.

    libsodium checks first: it verifies in about half OpenSSL's time, and every signature it
    accepts OpenSSL accepts too (the same cofactorless equation, R compared as bytes, s < q; on top
    of that libsodium refuses a small-order or non-canonical A and a small-order R). Only what it
    refuses goes on to OpenSSL, so an edge-case key XEdDSA does not refuse (u = 0, 1, p − 1;
    ``tests/clients/test_xeddsa_vectors.py``) gets OpenSSL's answer, as before.
    """
    if len(public) == 32 and len(signature) == 64:
        try:
            _sodium_sign_open(bytes(signature) + bytes(message), bytes(public))
            return True
        except _SodiumBadSignature:
            pass
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- ML-KEM-1024 (FIPS 203) -----------------------------------------------------------------

MLKEM1024_PUBLIC_KEY_SIZE = 1568
MLKEM1024_CIPHERTEXT_SIZE = 1568
MLKEM1024_SEED_SIZE = 64


def mlkem_keypair_from_seed(seed: bytes) -> tuple[MLKEM1024PrivateKey, bytes]:
    """The 64-byte (d ‖ z) seed form of FIPS 203 key generation."""
    key = MLKEM1024PrivateKey.from_seed_bytes(seed)
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def mlkem_public_bytes(key: MLKEM1024PrivateKey) -> bytes:
    """The encapsulation (public) key of a decapsulation key made already, as 1568 raw bytes."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def mlkem_private_key(seed: bytes) -> MLKEM1024PrivateKey:
    """The decapsulation key of a 64-byte (d ‖ z) seed, without its public key (``mlkem_keypair_from_seed``)."""
    return MLKEM1024PrivateKey.from_seed_bytes(seed)


def mlkem_encapsulate(public: bytes, m: bytes | None = None) -> tuple[bytes, bytes]:
    """Returns (shared_secret, ciphertext).

    Without ``m`` the encapsulation randomness comes from OpenSSL (fast). With a 32-byte ``m``
    it is FIPS 203's derandomized ML-KEM.Encaps_internal with numpy (``clients._mlkem``,
    ~0.2 ms), so that a seeded simulation produces the same bytes every run.
    """
    if _ahead is not None and type(public) is bytes:
        held = _ahead.take(_ahead.encaps, (public, m))
        if held is not None:
            return held[:32], held[32:]
    if m is not None:
        from relaysim.clients._mlkem import encapsulate_derand

        try:
            return encapsulate_derand(public, m)
        except ValueError as exc:
            raise AuthenticationFailed() from exc
    try:
        pk = MLKEM1024PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise AuthenticationFailed() from exc
    return pk.encapsulate()


def mlkem_decapsulate(seed: bytes | MLKEM1024PrivateKey, ciphertext: bytes) -> bytes:
    """The shared secret of ``ciphertext`` under the key of ``seed`` (or that key, made already)."""
    if _ahead is not None and type(seed) is bytes and type(ciphertext) is bytes:
        secret = _ahead.take(_ahead.kem, (seed, ciphertext))
        if secret is not None:
            return secret
    try:
        key = seed if isinstance(seed, MLKEM1024PrivateKey) else MLKEM1024PrivateKey.from_seed_bytes(seed)
        return key.decapsulate(ciphertext)
    except ValueError as exc:
        raise AuthenticationFailed() from exc


# --- AES-256-CBC with PKCS#7, as Double Ratchet §5.2 recommends ----------------------------

# A cipher context comes straight from the two functions of ``cryptography``'s Rust binding that
# ``Cipher.encryptor()`` and ``.decryptor()`` call (``create_encryption_ctx`` and
# ``create_decryption_ctx``, the same in 48 and 50), without the ``Cipher`` object in between:
# ~1.5 µs less per message key, two of them per message (``bench crypto``'s AES-256-CBC parts). ``Cipher``'s own check — the IV as long
# as the block — holds by construction here (every key is 32 bytes and every IV 16, cut from one
# HKDF output), and ``algorithms.AES`` and ``modes.CBC`` still check the key and the IV. The binding
# is not a public API, so it is taken only when it imports and gives the public path's bytes on a
# known input; otherwise the public path is used (``AES_CONTEXTS`` says which).


def _public_encryptor(algorithm: algorithms.AES, mode: modes.CBC) -> Any:
    return Cipher(algorithm, mode).encryptor()


def _public_decryptor(algorithm: algorithms.AES, mode: modes.CBC) -> Any:
    return Cipher(algorithm, mode).decryptor()


def _binding_contexts() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        new_enc = rust_openssl.ciphers.create_encryption_ctx
        new_dec = rust_openssl.ciphers.create_decryption_ctx
        key, iv, block = bytes(range(32)), bytes(range(16)), bytes(range(48))
        enc = new_enc(algorithms.AES(key), modes.CBC(iv))
        ciphertext = enc.update(block) + enc.finalize()
        public = _public_encryptor(algorithms.AES(key), modes.CBC(iv))
        if ciphertext != public.update(block) + public.finalize():
            return None
        dec = new_dec(algorithms.AES(key), modes.CBC(iv))
        if dec.update(ciphertext) + dec.finalize() != block:
            return None
    except Exception:  # an import, an attribute or a signature that changed: the public path
        return None
    return new_enc, new_dec


_BINDING = _binding_contexts()
_new_encryptor, _new_decryptor = _BINDING or (_public_encryptor, _public_decryptor)
AES_CONTEXTS = "binding" if _BINDING else "public"
"""Where AES-256-CBC contexts come from: ``"binding"`` (cryptography's Rust binding, checked at
import) or ``"public"`` (``Cipher(...).encryptor()``)."""


# The context's two arguments, ``algorithms.AES(key)`` and ``modes.CBC(iv)``, are made without their
# ``__init__`` when that gives the same objects: each ``__init__`` only checks that its argument is
# bytes-like (and AES's, that the key is 128, 192, 256 or 512 bits) and keeps it in one attribute.
# Every key and IV here is cut from one HKDF output as bytes of the right length (the binding finds
# no cipher for a key of a size AES does not have; ``Cipher`` checked the IV's length, the binding
# does not, so ``aes_cbc_*`` check both lengths themselves). ~0.4 µs less per message key (2.4 ->
# 2.0 µs a context with its 112 B), two per message. Taken only when the public constructors set
# exactly those attributes and the bare objects give the same bytes (``AES_OBJECTS`` says which).
_AES, _CBC, _object_new = algorithms.AES, modes.CBC, object.__new__


def _bare_aes(key: bytes) -> algorithms.AES:
    algorithm = _object_new(_AES)
    algorithm.key = key
    return algorithm


def _bare_cbc(iv: bytes) -> modes.CBC:
    mode = _object_new(_CBC)
    mode._initialization_vector = iv
    return mode


def _bare_objects_agree() -> bool:
    try:
        key, iv, block = bytes(range(32)), bytes(range(16)), bytes(range(48))
        if vars(_AES(key)) != vars(_bare_aes(key)) or vars(_CBC(iv)) != vars(_bare_cbc(iv)):
            return False
        public, bare = _new_encryptor(_AES(key), _CBC(iv)), _new_encryptor(_bare_aes(key), _bare_cbc(iv))
        ciphertext = bare.update(block) + bare.finalize()
        if ciphertext != public.update(block) + public.finalize():
            return False
        dec = _new_decryptor(_bare_aes(key), _bare_cbc(iv))
        return bool(dec.update(ciphertext) + dec.finalize() == block)
    except Exception:  # an attribute or a check that changed: the public constructors
        return False


AES_OBJECTS = "bare" if _bare_objects_agree() else "public"
"""How ``aes_cbc_*`` make AES and CBC objects: ``"bare"`` (without ``__init__``, checked at import) or
``"public"`` (``algorithms.AES(key)``, ``modes.CBC(iv)``)."""


def _bare_pair(key: bytes, iv: bytes) -> tuple[algorithms.AES, modes.CBC]:
    algorithm = _object_new(_AES)
    algorithm.key = key
    mode = _object_new(_CBC)
    mode._initialization_vector = iv
    return algorithm, mode


def _public_pair(key: bytes, iv: bytes) -> tuple[algorithms.AES, modes.CBC]:
    return _AES(key), _CBC(iv)


_cbc_objects = _bare_pair if AES_OBJECTS == "bare" else _public_pair


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding. The key is 32 bytes and the IV 16 (ValueError otherwise: the
    binding would take a longer IV's first 16 bytes and abort the process on a shorter one)."""
    if len(key) != 32 or len(iv) != 16:
        raise ValueError(f"AES-256-CBC takes a 32-byte key and a 16-byte IV, not {len(key)} and {len(iv)}")
    pad = 16 - (len(plaintext) & 15)
    algorithm, mode = _cbc_objects(key, iv)
    enc = _new_encryptor(algorithm, mode)
    return enc.update(plaintext + bytes((pad,)) * pad) + enc.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """The inverse of :func:`aes_cbc_encrypt`; every failure, a key or IV of the wrong length
    included, is the one ``AuthenticationFailed``."""
    if not ciphertext or len(ciphertext) & 15 or len(key) != 32 or len(iv) != 16:
        raise AuthenticationFailed()
    algorithm, mode = _cbc_objects(key, iv)
    dec = _new_decryptor(algorithm, mode)
    padded = dec.update(ciphertext) + dec.finalize()
    pad = padded[-1]
    if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
        raise AuthenticationFailed()
    return padded[:-pad]


# --- AES-SIV (RFC 5297), for header encryption --------------------------------------------------


def siv_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    return AESSIV(key).encrypt(plaintext, [associated_data])


def siv_decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    try:
        return AESSIV(key).decrypt(ciphertext, [associated_data])
    except (InvalidTag, ValueError) as exc:
        raise AuthenticationFailed() from exc
