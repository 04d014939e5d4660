"""Identity keys, prekeys and the prekey bundle a device publishes (X3DH §3.2, PQXDH §3.2).

Private halves stay in ``PreKeySecrets`` on the device. What leaves the device is a
``PreKeyBundle``: a plain frozen value with a stable msgpack encoding (a fixed-order array, so
the same bundle always encodes to the same bytes).

Signatures are XEdDSA signatures by the identity key over Encode(PK): for X25519 keys the
0x05-prefixed encoding of X3DH §2.1; for ML-KEM-1024 keys a one-byte tag, 0x0A (PQXDH §2.1
leaves EncodeKEM to the application; 0x0A is libsignal's key type byte for ML-KEM-1024), then
the 1568 key bytes. Both tags are defined once, in ``relay.wire`` (``EC_KEY_TYPE``, ``KEM_KEY_TYPE``),
where the relay checks the same signatures.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from relaysim.clients import _primitives as _p
from relaysim.clients import _xeddsa, spec
from relaysim.clients.errors import UsageError
from relaysim.relay.wire import KEM_KEY_TYPE, MsgpackError, type_name, unpack_value, value_text

__all__ = [
    "BundleError",
    "IdentityKeyPair",
    "KemPreKey",
    "KemPreKeys",
    "OneTimePreKey",
    "OneTimePreKeys",
    "PreKeyBundle",
    "PreKeySecrets",
    "PremadeKeys",
    "SignedPreKey",
    "encode_kem_public_key",
]

RNG = Callable[[int], bytes]


class BundleError(Exception):
    """A prekey bundle is malformed or one of its signatures does not verify."""


def encode_kem_public_key(public: bytes) -> bytes:
    if len(public) != _p.MLKEM1024_PUBLIC_KEY_SIZE:
        raise BundleError(
            f"an ML-KEM-1024 public key is {_p.MLKEM1024_PUBLIC_KEY_SIZE} bytes, got {len(public)}"
        )
    return KEM_KEY_TYPE + public


class IdentityKeyPair:
    """A long-term X25519 identity key that also signs, with XEdDSA."""

    __slots__ = ("_edwards", "pair")

    def __init__(self, private: bytes) -> None:
        if len(private) != 32:
            raise UsageError("an identity private key is 32 bytes")
        self.pair = _p.x25519_pair_from_private(private)
        self._edwards: tuple[bytes, bytes] | None = None  # XEdDSA calculate_key_pair(k), computed once

    @classmethod
    def generate(cls, rng: RNG = os.urandom) -> IdentityKeyPair:
        return cls(rng(32))

    @property
    def public(self) -> bytes:
        return self.pair.public

    @property
    def private(self) -> bytes:
        return self.pair.private

    def sign(self, message: bytes, rng: RNG = os.urandom) -> bytes:
        """XEdDSA (spec.xeddsa_sign), keeping the Edwards key pair between signatures."""
        return self.sign_with(message, rng(64))

    def sign_with(self, message: bytes, random64: bytes) -> bytes:
        """XEdDSA with the signature's 64 random bytes (Z) given."""
        if self._edwards is None:
            self._edwards = _xeddsa.calculate_key_pair(self.pair.private)
        return _xeddsa.xeddsa_sign(self.pair.private, message, random64, key_pair=self._edwards)


# What a bundle's check got is said in msgpack's words, as the wire says it (relay.wire.type_name,
# relay.wire.value_text): "got nil", "got ext -2 b'\\x00'", never Python's "NoneType" or "ExtType(...)".
def _check_len(name: str, value: object, n: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type_name(value)
        raise BundleError(f"{name} must be {n} bytes, got {got}")
    return value


def _check_id(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise BundleError(f"{name} must be an integer from 0 to 2**32-1, got {value_text(value)}")
    return value


def _items(name: str, value: object, shape: str) -> list[Any] | tuple[Any, ...]:
    """``value``, a prekey of a bundle read from msgpack, when it is an array of the items ``shape``
    names (``[id, public, signature, last_resort?]``: ``?`` marks one that may be left out); else a
    BundleError in msgpack's words, "signed_prekey must be the array [id, public, signature], got nil" (it
    was spread as Python's arguments: a bin's bytes read as its id and key, "signed_prekey.public must be
    32 bytes, got int", and nil or a short array said in Python's words, "argument after * must be an
    iterable, not NoneType", "missing 1 required positional argument")."""
    names = shape[1:-1].split(", ")
    most, least = len(names), len([n for n in names if not n.endswith("?")])
    if type(value) is list or type(value) is tuple:
        if least <= len(value) <= most:
            return value
        got = f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    else:
        got = type_name(value)
    raise BundleError(f"{name} must be the array {shape}, got {got}")


@dataclass(frozen=True, slots=True)
class SignedPreKey:
    id: int
    public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_id("signed_prekey.id", self.id)
        _check_len("signed_prekey.public", self.public, 32)
        _check_len("signed_prekey.signature", self.signature, 64)


@dataclass(frozen=True, slots=True)
class OneTimePreKey:
    id: int
    public: bytes

    def __post_init__(self) -> None:
        _check_id("one_time_prekey.id", self.id)
        _check_len("one_time_prekey.public", self.public, 32)


@dataclass(frozen=True, slots=True)
class KemPreKey:
    """A signed ML-KEM-1024 prekey: one-time (PQOPK) or last-resort (PQSPK), PQXDH §3.2."""

    id: int
    public: bytes
    signature: bytes
    last_resort: bool = False

    def __post_init__(self) -> None:
        _check_id("kem_prekey.id", self.id)
        _check_len("kem_prekey.public", self.public, _p.MLKEM1024_PUBLIC_KEY_SIZE)
        _check_len("kem_prekey.signature", self.signature, 64)
        if not isinstance(self.last_resort, bool):
            raise BundleError(f"kem_prekey.last_resort must be a boolean, got {value_text(self.last_resort)}")


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What a device publishes and the relay hands to whoever wants to start a session."""

    identity_key: bytes
    signed_prekey: SignedPreKey
    one_time_prekey: OneTimePreKey | None = None
    kem_prekey: KemPreKey | None = None

    def __post_init__(self) -> None:
        _check_len("identity_key", self.identity_key, 32)

    def verify(self) -> None:
        """Check every signature in the bundle against its identity key (X3DH §3.3, PQXDH §3.3)."""
        spk, kem = self.signed_prekey, self.kem_prekey
        signed = [(spec.encode_public_key(spk.public), spk.signature)]
        if kem is not None:
            signed.append((encode_kem_public_key(kem.public), kem.signature))
        # (XEdDSA verification, the identity key converted to its Edwards form once for both)
        good = spec.xeddsa_verify_each(self.identity_key, signed)
        if not good[0]:
            raise BundleError("signed_prekey.signature does not verify with identity_key")
        if kem is not None and not good[1]:
            raise BundleError("kem_prekey.signature does not verify with identity_key")

    def to_wire(self) -> list[Any]:
        spk, opk, kem = self.signed_prekey, self.one_time_prekey, self.kem_prekey
        return [
            self.identity_key,
            [spk.id, spk.public, spk.signature],
            None if opk is None else [opk.id, opk.public],
            None if kem is None else [kem.id, kem.public, kem.signature, kem.last_resort],
        ]

    @classmethod
    def from_wire(cls, data: object) -> PreKeyBundle:
        if not isinstance(data, list | tuple) or len(data) != 4:
            raise BundleError("malformed prekey bundle: expected an array of 4 items")
        ik, spk, opk, kem = data
        try:
            return cls(
                identity_key=ik,
                signed_prekey=SignedPreKey(*_items("signed_prekey", spk, "[id, public, signature]")),
                one_time_prekey=None
                if opk is None
                else OneTimePreKey(*_items("one_time_prekey", opk, "[id, public]")),
                kem_prekey=None
                if kem is None
                else KemPreKey(*_items("kem_prekey", kem, "[id, public, signature, last_resort?]")),
            )
        except (TypeError, ValueError) as exc:
            raise BundleError(f"malformed prekey bundle: {exc}") from None

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> PreKeyBundle:
        try:
            obj = unpack_value(data, "prekey bundle")  # (what is wrong said in the wire's words)
        except MsgpackError as exc:
            raise BundleError(str(exc)) from None
        return cls.from_wire(obj)


_V = TypeVar("_V")


class _HeldByKey(MutableMapping[int, _V]):
    """A mapping by key id that holds its values in a compact form of its own (``_entries``):
    the subclasses say how a value is kept and made again."""

    __slots__ = ("_entries",)
    _entries: dict[int, Any]

    def __delitem__(self, key: int) -> None:
        del self._entries[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self._entries)})"


class DecapsulationKeys:
    """ML-KEM-1024 decapsulation keys made from their seeds, the ``size`` most recently used kept
    (a simulation's, shared by its phones: ``KemPreKeys.cache``).

    Making the key from its 64-byte seed is FIPS 203 key generation (~0.11 ms, the matrix Â
    expanded from ρ included), three times a decapsulation's own cost (~0.04 ms); a phone's
    last-resort KEM prekey answers every PQXDH session begun without a one-time one, so a busy
    phone makes the same key again and again. Only last-resort keys come here (a one-time KEM
    prekey is used once, then deleted). Each kept key is ~13 KiB (OpenSSL's expanded form).
    """

    __slots__ = ("_keys", "hits", "misses", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"DecapsulationKeys(size={size}): size must be at least 1")
        # seed -> [decapsulation key, its encapsulation (public) key once asked for, else None]
        self._keys: OrderedDict[bytes, list[Any]] = OrderedDict()
        self.size = size
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, seed: bytes) -> _p.MLKEM1024PrivateKey:
        """The decapsulation key of ``seed``."""
        keys = self._keys
        entry = keys.get(seed)
        if entry is not None:
            keys.move_to_end(seed)
            self.hits += 1
            return entry[0]
        self.misses += 1
        key = _p.mlkem_private_key(seed)  # (the key alone: no public key serialised)
        self._keep(seed, [key, None])
        return key

    def public(self, seed: bytes) -> bytes:
        """The encapsulation (public) key of ``seed``, kept beside its decapsulation key: a phone's
        last-resort KEM prekey read whole again (``KemPreKeys.__getitem__``) without FIPS 203 key
        generation each time. Not counted in ``hits`` and ``misses``, which count decapsulations."""
        keys = self._keys
        entry = keys.get(seed)
        if entry is None:
            key, public = _p.mlkem_keypair_from_seed(seed)
            self._keep(seed, [key, public])
            return public
        keys.move_to_end(seed)
        if entry[1] is None:
            entry[1] = _p.mlkem_public_bytes(entry[0])
        return entry[1]

    def _keep(self, seed: bytes, entry: list[Any]) -> None:
        keys = self._keys
        keys[seed] = entry
        if len(keys) > self.size:
            keys.popitem(last=False)


class KemPreKeys(_HeldByKey[tuple[bytes, KemPreKey]]):
    """A device's ML-KEM prekeys by id: ``(seed, KemPreKey)``, as a dict of them would hold.

    The 1568-byte public key is kept only until ``forget_publics`` (the device calls it once the
    keys are uploaded: the relay has its own copy); after that an entry keeps the 64-byte seed, the
    signature and the last-resort flag, and the public key is re-derived from the seed (FIPS 203
    key generation, ~0.1 ms) if the entry is read whole again. ``seed`` and ``last_resort`` never
    re-derive anything.
    """

    __slots__ = ("cache",)

    def __init__(self, entries: dict[int, tuple[bytes, KemPreKey]] | None = None) -> None:
        # (seed, KemPreKey) while the public key is kept, else (seed, signature, last_resort)
        self._entries: dict[int, tuple[bytes, KemPreKey] | tuple[bytes, bytes, bool]] = dict(entries or {})
        # where the last-resort key's decapsulation key is kept between sessions (a simulation's)
        self.cache: DecapsulationKeys | None = None

    def __getitem__(self, key: int) -> tuple[bytes, KemPreKey]:
        entry = self._entries[key]
        if len(entry) == 2:
            return entry
        seed, signature, last_resort = entry
        cache = self.cache
        if cache is not None and last_resort:
            public = cache.public(seed)
        else:
            _key, public = _p.mlkem_keypair_from_seed(seed)
        return seed, KemPreKey(key, public, signature, last_resort)

    def __setitem__(self, key: int, value: tuple[bytes, KemPreKey]) -> None:
        self._entries[key] = value

    def seed(self, key: int) -> bytes | None:
        """The private seed of prekey ``key``, or None."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def decapsulation_key(self, key: int) -> Any:
        """What ``_p.mlkem_decapsulate`` takes for prekey ``key``: its seed, or, for the last-resort
        prekey when a ``cache`` is set, the decapsulation key made from it; None if there is none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        cache = self.cache
        if cache is None or not (entry[1].last_resort if len(entry) == 2 else entry[2]):
            return entry[0]
        return cache.get(entry[0])

    def last_resort(self, key: int) -> bool | None:
        """Whether prekey ``key`` is the last-resort one, or None if there is no such prekey."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        return entry[1].last_resort if len(entry) == 2 else entry[2]

    def any_last_resort(self) -> bool:
        return any(self.last_resort(k) for k in self._entries)

    def forget_publics(self) -> None:
        """Keep only seeds, signatures and flags (the public keys have been uploaded)."""
        entries = self._entries
        for key, entry in entries.items():
            if len(entry) == 2:
                seed, k = entry
                entries[key] = (seed, k.signature, k.last_resort)


class OneTimePreKeys(_HeldByKey[_p.X25519Pair]):
    """A device's one-time X25519 prekeys by id, as a dict of ``X25519Pair`` would hold them.

    Each is held as one 64-byte string, private key then public key (97 B instead of ~180 B for a
    pair and its two strings; a simulated phone holds a batch it mostly never uses), and made into
    a pair again when read.
    """

    __slots__ = ()

    def __init__(self, entries: dict[int, _p.X25519Pair] | None = None) -> None:
        self._entries: dict[int, bytes] = {}
        for key, pair in (entries or {}).items():
            self[key] = pair

    def __getitem__(self, key: int) -> _p.X25519Pair:
        entry = self._entries[key]
        return _p.X25519Pair(entry[:32], entry[32:])

    def __setitem__(self, key: int, value: _p.X25519Pair) -> None:
        self._entries[key] = value.private + value.public

    def publics(self) -> list[tuple[int, bytes]]:
        """(id, public key) of each, by id: what a registration uploads, without a pair made for each."""
        return [(key, entry[32:]) for key, entry in sorted(self._entries.items())]


class PremadeKeys:
    """What a device's prekey generation computes from its random bytes, computed ahead of time
    from the same bytes (a simulation's worker process does it for its phones: the device's own
    key stream replayed, ``sims.world.premade``): X25519 public keys by private key, ML-KEM-1024
    public keys by seed, XEdDSA signatures by (identity private key, Z, message), and the identity
    key's Edwards pair (``_xeddsa.calculate_key_pair``). Each is keyed by the whole input of the
    function that makes it, so whatever the device then draws, it gets the bytes it would have
    computed: a draw the table does not hold is computed as usual. An entry is used once.

    ``recording=True``: the table fills itself with what the generation computes (the worker's side).
    """

    __slots__ = ("edwards", "hits", "misses", "mlkem", "recording", "signatures", "x25519")

    def __init__(self, *, recording: bool = False) -> None:
        self.x25519: dict[bytes, bytes] = {}
        self.mlkem: dict[bytes, bytes] = {}
        self.signatures: dict[tuple[bytes, bytes, bytes], bytes] = {}
        self.edwards: tuple[bytes, bytes, bytes] | None = None  # (private, A, a)
        self.recording = recording
        self.hits = 0
        self.misses = 0

    def __getstate__(self) -> tuple[object, ...]:
        return (self.x25519, self.mlkem, self.signatures, self.edwards)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self.x25519, self.mlkem, self.signatures, self.edwards = state  # type: ignore[assignment]
        self.recording = False
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.x25519) + len(self.mlkem) + len(self.signatures)

    def generate_dh(self, rng: RNG) -> _p.X25519Pair:
        """Double Ratchet §5.2 GENERATE_DH() (``spec.generate_dh``: the same draw)."""
        private = rng(32)
        public = None if self.recording else self.x25519.pop(private, None)
        if public is not None:
            self.hits += 1
            return _p.X25519Pair(private, public)
        pair = _p.x25519_pair_from_private(private)
        self._computed(self.x25519, private, pair.public)
        return pair

    def mlkem_public(self, seed: bytes) -> bytes:
        """The ML-KEM-1024 public key of ``seed`` (``_p.mlkem_keypair_from_seed``)."""
        public = None if self.recording else self.mlkem.pop(seed, None)
        if public is not None:
            self.hits += 1
            return public
        _key, public = _p.mlkem_keypair_from_seed(seed)
        self._computed(self.mlkem, seed, public)
        return public

    def sign(self, identity: IdentityKeyPair, message: bytes, rng: RNG) -> bytes:
        """``identity.sign(message, rng)``: the same draw of Z."""
        z = rng(64)
        edwards = self.edwards
        if identity._edwards is None and edwards is not None and edwards[0] == identity.private:
            identity._edwards = edwards[1:]  # kept by the identity, for its later signatures (a login's)
        key = (identity.private, z, bytes(message))
        signature = None if self.recording else self.signatures.pop(key, None)
        if signature is not None:
            self.hits += 1
            return signature
        signature = identity.sign_with(message, z)
        self._computed(self.signatures, key, signature)
        if self.recording and identity._edwards is not None:
            self.edwards = (identity.private, *identity._edwards)
        return signature

    def _computed(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if self.recording:
            table[key] = value
        else:
            self.misses += 1


@dataclass
class PreKeySecrets:
    """The private halves of a device's prekeys, and the counters that name new ones."""

    identity: IdentityKeyPair
    signed: dict[int, tuple[_p.X25519Pair, SignedPreKey]] = field(default_factory=dict)
    one_time: OneTimePreKeys = field(default_factory=OneTimePreKeys)
    kem: KemPreKeys = field(default_factory=KemPreKeys)  # seed, public part
    current_signed_id: int = -1
    next_id: int = 1
    # Key generation made ahead from this device's own random bytes (PremadeKeys), while it lasts.
    premade: PremadeKeys | None = None

    def _take_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def _generate_dh(self, rng: RNG) -> _p.X25519Pair:
        premade = self.premade
        return spec.generate_dh(rng) if premade is None else premade.generate_dh(rng)

    def _sign(self, message: bytes, rng: RNG) -> bytes:
        premade = self.premade
        return (
            self.identity.sign(message, rng) if premade is None else premade.sign(self.identity, message, rng)
        )

    def new_signed_prekey(self, rng: RNG = os.urandom) -> SignedPreKey:
        pair = self._generate_dh(rng)
        spk = SignedPreKey(self._take_id(), pair.public, self._sign(spec.encode_public_key(pair.public), rng))
        self.signed[spk.id] = (pair, spk)
        self.current_signed_id = spk.id
        return spk

    def new_one_time_prekeys(self, count: int, rng: RNG = os.urandom) -> list[OneTimePreKey]:
        out = []
        for _ in range(count):
            pair = self._generate_dh(rng)  # §5.2 GENERATE_DH()
            opk = OneTimePreKey(self._take_id(), pair.public)
            self.one_time[opk.id] = pair
            out.append(opk)
        return out

    def new_kem_prekeys(
        self, count: int, *, last_resort: bool = False, rng: RNG = os.urandom
    ) -> list[KemPreKey]:
        out = []
        for _ in range(count):
            seed = rng(_p.MLKEM1024_SEED_SIZE)
            if self.premade is None:
                _key, public = _p.mlkem_keypair_from_seed(seed)
            else:
                public = self.premade.mlkem_public(seed)
            sig = self._sign(encode_kem_public_key(public), rng)
            kpk = KemPreKey(self._take_id(), public, sig, last_resort)
            self.kem[kpk.id] = (seed, kpk)
            out.append(kpk)
        return out

    @property
    def current_signed(self) -> SignedPreKey:
        if self.current_signed_id < 0:
            raise UsageError("no signed prekey yet: call new_signed_prekey() first")
        return self.signed[self.current_signed_id][1]

    def bundle(self, *, one_time: bool = True, kem: bool = True) -> PreKeyBundle:
        """A bundle as the relay would hand it out: the newest signed prekey, and the lowest-numbered
        one-time and one-time KEM prekeys still unused (else the last-resort KEM prekey)."""
        opk = None
        if one_time and self.one_time:
            i = min(self.one_time)
            opk = OneTimePreKey(i, self.one_time[i].public)
        kpk = None
        kem_keys = self.kem
        if kem and kem_keys:
            # the id first, from the flags alone: a prekey held without its public key makes it again
            # when read whole (``KemPreKeys``), so only the one handed out is read
            one_time_kem = [i for i in kem_keys if not kem_keys.last_resort(i)]
            kpk = kem_keys[min(one_time_kem or kem_keys)][1]
        return PreKeyBundle(self.identity.public, self.current_signed, opk, kpk)
