"""Adapters between relaysim's clients and two independent implementations from PyPI.

The peers are ``x3dh`` 1.3.0 and ``doubleratchet`` 1.3.0 (Tim Henkes, pure Python over
``cryptography``/libxeddsa). ``tests/clients/test_interop.py`` runs them against ``clients.x3dh`` and
``clients.ratchet``. Everything here translates between the two; nothing here does protocol
work of its own that the test then trusts.

Where the facts come from (read before changing any constant):

* the PyPI packages' own documentation (x3dh 1.3.0, doubleratchet 1.3.0) and Signal's X3DH and Double
  Ratchet specifications: the settings below make the packages match the spec's recommended algorithms
  (and avoid the chain-KDF trap: the packages' default chain KDF is not the spec's HMAC construction);
* the installed sources, ``site-packages/x3dh/base_state.py`` (key agreement, signatures,
  header fields) and ``site-packages/doubleratchet/{double_ratchet,diffie_hellman_ratchet,
  kdf_chain,symmetric_key_ratchet}.py`` (state machine), ``recommended/*.py`` (primitives);
* ``clients/ratchet.py`` (module docstring): our wire format, 40-byte header
  ``DH pub (32) ‖ PN (uint32 BE) ‖ N (uint32 BE)`` then ``ENCRYPT(mk, pt, AD ‖ header)``;
* ``clients/session.py`` (module docstring): our device framing, ``0x01 ‖ message`` and
  ``0x02 ‖ msgpack([InitialMessage, message])``.

Their API is ``async`` but never suspends (docs/conformance.md), so ``run`` drives a coroutine to
completion with one ``send(None)``.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import doubleratchet
import msgpack
import x3dh
from doubleratchet.recommended import HashFunction as DRHash
from doubleratchet.recommended import aead_aes_hmac, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import (
    DiffieHellmanRatchet as Curve25519DHRatchet,
)

from relaysim.clients import _primitives
from relaysim.clients.errors import DecryptionError
from relaysim.clients.keys import OneTimePreKey, PreKeyBundle, PreKeySecrets, SignedPreKey
from relaysim.clients.ratchet import DEFAULT_CONFIG, RatchetConfig
from relaysim.clients.ratchet import DoubleRatchet as OurDoubleRatchet
from relaysim.clients.session import TYPE_MESSAGE, TYPE_PREKEY
from relaysim.clients.x3dh import X3DH_INFO, InitialMessage

# --- driving their coroutines ----------------------------------------------------------------


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (x3dh/doubleratchet 1.3.0: no awaits on I/O)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a coroutine of the peer package suspended; it is not supposed to")


class SeededRNG:
    """A reproducible byte source that can be rewound (``state``/``restore``). Tests only."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)

    def state(self) -> object:
        return self._r.getstate()

    def restore(self, state: object) -> None:
        self._r.setstate(state)  # type: ignore[arg-type]


# --- X3DH ------------------------------------------------------------------------------------

# X3DH §2.1 Encode(PK), libsignal's form: the curve-type byte 0x05, then the 32-byte u-coordinate.
# clients.spec.encode_public_key produces the same bytes; we do not import it here so that the
# peer's encoding is stated independently.
CURVE25519_TYPE_BYTE = b"\x05"


class TheirX3DH(x3dh.BaseState):
    """The ``x3dh`` package, configured as docs/conformance.md says, with our application's info string.

    Signature convention, checked in base_state.py: the package signs a signed prekey with
    ``xeddsa.ed25519_priv_sign(priv_force_sign(IK, False), _encode_public_key(CURVE_25519, SPK))``
    and verifies with ``ed25519_verify(sig, curve25519_pub_to_ed25519_pub(IK, False), same bytes)``.
    That is XEdDSA (spec rev 1: sign bit 0, then Ed25519) over *whatever this method returns*.
    Returning ``0x05 ‖ SPK`` makes its signed bytes exactly ours (clients.keys signs
    ``spec.encode_public_key(SPK)``, X3DH §3.2 "Sig(IK_B, Encode(SPK_B))"). Had we returned the raw
    32 bytes, the conventions would differ and neither side would verify the other's bundle; the test
    ``test_signed_prekey_signature_covers_the_0x05_encoding`` shows that.

    The same method builds AD = Encode(IK_A) ‖ Encode(IK_B), so AD matches ours byte for byte too.
    """

    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        if key_format is not x3dh.IdentityKeyFormat.CURVE_25519 or len(pub) != 32:
            raise ValueError("relaysim identity keys are Curve25519 u-coordinates (32 bytes)")
        return CURVE25519_TYPE_BYTE + pub


def their_x3dh_state(*, pre_keys: int = 1) -> TheirX3DH:
    """A fresh peer-side X3DH state: identity key, signed prekey, ``pre_keys`` one-time prekeys."""
    state = TheirX3DH.create(x3dh.IdentityKeyFormat.CURVE_25519, x3dh.HashFunction.SHA_256, X3DH_INFO)
    state.generate_pre_keys(pre_keys)
    return state


# Their bundle and header name prekeys by public key; ours by id (clients.keys, clients.x3dh).
# When we consume one of their bundles we give its keys these ids, and remember the mapping.
THEIR_SPK_ID = 1
THEIR_OPK_ID = 2


@dataclass(frozen=True)
class PrekeyIds:
    """id → public key for a bundle converted from their format to ours."""

    signed: dict[int, bytes]
    one_time: dict[int, bytes] = field(default_factory=dict)


def their_bundle_to_ours(
    bundle: x3dh.Bundle, one_time: bytes | None = None
) -> tuple[PreKeyBundle, PrekeyIds]:
    """Their ``Bundle`` (all one-time prekeys) → our ``PreKeyBundle`` (at most one, as a relay hands out).

    ``one_time``: which of their one-time prekeys to put in; by default the smallest, or none if
    the bundle has none. Pass ``b""`` to leave it out on purpose.
    """
    if one_time is None:
        one_time = min(bundle.pre_keys) if bundle.pre_keys else b""
    if one_time and one_time not in bundle.pre_keys:
        raise ValueError("that one-time prekey is not in the bundle")
    spk = SignedPreKey(THEIR_SPK_ID, bundle.signed_pre_key, bundle.signed_pre_key_sig)
    opk = OneTimePreKey(THEIR_OPK_ID, one_time) if one_time else None
    ids = PrekeyIds({THEIR_SPK_ID: spk.public}, {THEIR_OPK_ID: one_time} if one_time else {})
    return PreKeyBundle(bundle.identity_key, spk, opk), ids


def our_initial_to_their_header(message: InitialMessage, ids: PrekeyIds) -> x3dh.Header:
    """Our ``InitialMessage`` (prekey ids) → their ``Header`` (prekey public keys)."""
    if message.kem_prekey_id is not None:
        raise ValueError("the x3dh package has no PQXDH; initiate with pq=False")
    opk = None if message.one_time_prekey_id is None else ids.one_time[message.one_time_prekey_id]
    return x3dh.Header(
        identity_key=message.identity_key,
        ephemeral_key=message.ephemeral_key,
        signed_pre_key=ids.signed[message.signed_prekey_id],
        pre_key=opk,
    )


def our_bundle_to_theirs(bundle: PreKeyBundle, extra_one_time: tuple[bytes, ...] = ()) -> x3dh.Bundle:
    """Our ``PreKeyBundle`` → their ``Bundle``. Their initiator picks a one-time prekey at random
    (``secrets.choice`` in base_state.py); ``extra_one_time`` lets a test offer it several."""
    pre_keys = set(extra_one_time)
    if bundle.one_time_prekey is not None:
        pre_keys.add(bundle.one_time_prekey.public)
    spk = bundle.signed_prekey
    return x3dh.Bundle(
        identity_key=bundle.identity_key,
        signed_pre_key=spk.public,
        signed_pre_key_sig=spk.signature,
        pre_keys=frozenset(pre_keys),
    )


def their_header_to_our_initial(header: x3dh.Header, secrets: PreKeySecrets) -> InitialMessage:
    """Their ``Header`` → our ``InitialMessage``: Bob looks his prekeys up by public key.

    A public key he does not hold maps to an id he does not have (0 is never issued: ids start
    at 1 in clients.keys), so ``clients.x3dh.respond`` rejects it as it would any stale id.
    """
    spk_id = next((i for i, (pair, _) in secrets.signed.items() if pair.public == header.signed_pre_key), 0)
    opk_id = None
    if header.pre_key is not None:
        opk_id = next((i for i, pair in secrets.one_time.items() if pair.public == header.pre_key), 0)
    return InitialMessage(header.identity_key, header.ephemeral_key, spk_id, opk_id)


# --- Double Ratchet: configuration -------------------------------------------------------------

# Double Ratchet §5.2 application constants; the values are libsignal's (docs/conformance.md), the same
# clients.ratchet.RatchetConfig defaults to. Stated here independently of clients.ratchet.
ROOT_INFO = b"WhisperRatchet"
AEAD_INFO = b"WhisperMessageKeys"
# THE TRAP (docs/conformance.md): kdf_chain.KDFChain.step keeps the *first* HMAC output as the next chain
# key and returns the second as the message key; kdf_separate_hmacs computes one HMAC per byte of
# this constant, in order. §5.2 wants next ck = HMAC(ck, 0x02) and mk = HMAC(ck, 0x01), hence
# b"\x02\x01". The package's own example, b"\x01\x02", swaps the two keys.
MESSAGE_CHAIN_CONSTANT = b"\x02\x01"
PACKAGE_EXAMPLE_CHAIN_CONSTANT = b"\x01\x02"
# Generous: the test conversations are short. Their package requires threshold ≤ max stored keys.
DOS_PROTECTION_THRESHOLD = 1000
MAX_NUM_SKIPPED_MESSAGE_KEYS = 1000


def root_kdf(info: bytes = ROOT_INFO) -> type[kdf_hkdf.KDF]:
    """§5.2 KDF_RK: HKDF-SHA256, salt = rk, ikm = dh_out (kdf_hkdf.py), 64 bytes split by KDFChain."""

    class RootKDF(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> DRHash:
            return DRHash.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return info

    return RootKDF


class ChainKDF(kdf_separate_hmacs.KDF):
    """§5.2 KDF_CK: HMAC-SHA256 with single-byte constants (see MESSAGE_CHAIN_CONSTANT)."""

    @staticmethod
    def _get_hash_function() -> DRHash:
        return DRHash.SHA_256


def aead(info: bytes = AEAD_INFO) -> type[aead_aes_hmac.AEAD]:
    """§5.2 ENCRYPT: HKDF → enc key, auth key, IV; AES-256-CBC + PKCS#7; full 32-byte HMAC tag."""

    class Aead(aead_aes_hmac.AEAD):
        @staticmethod
        def _get_hash_function() -> DRHash:
            return DRHash.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return info

    return Aead


def seeded_dh_ratchet(rng: Callable[[int], bytes]) -> type[Curve25519DHRatchet]:
    """The recommended Curve25519 DH ratchet, but with new ratchet keys drawn from ``rng``.

    ``_generate_priv`` is the package's only source of randomness in the ratchet (the IV comes from
    the message key), so with the same ``rng`` as one of our sides, both derive identical keys and
    must produce identical ciphertexts. Raw 32 random bytes are a valid X25519 private key for both
    (RFC 7748 clamps when the key is used; ``cryptography`` does so in both implementations).
    """

    class SeededDHRatchet(Curve25519DHRatchet):
        @staticmethod
        def _generate_priv() -> bytes:
            return rng(32)

    return SeededDHRatchet


@dataclass(frozen=True)
class TheirConfig:
    """Everything ``doubleratchet.DoubleRatchet``'s constructors take besides keys and messages."""

    dh_class: type[doubleratchet.DiffieHellmanRatchet] = Curve25519DHRatchet
    root_chain_kdf: type[doubleratchet.KDF] = field(default_factory=root_kdf)
    message_chain_kdf: type[doubleratchet.KDF] = ChainKDF
    message_chain_constant: bytes = MESSAGE_CHAIN_CONSTANT
    aead: type[doubleratchet.AEAD] = field(default_factory=aead)
    dos_protection_threshold: int = DOS_PROTECTION_THRESHOLD
    max_num_skipped_message_keys: int = MAX_NUM_SKIPPED_MESSAGE_KEYS

    def kwargs(self) -> dict[str, Any]:
        return {
            "diffie_hellman_ratchet_class": self.dh_class,
            "root_chain_kdf": self.root_chain_kdf,
            "message_chain_kdf": self.message_chain_kdf,
            "message_chain_constant": self.message_chain_constant,
            "dos_protection_threshold": self.dos_protection_threshold,
            "max_num_skipped_message_keys": self.max_num_skipped_message_keys,
            "aead": self.aead,
        }


# --- Double Ratchet: wire translation ----------------------------------------------------------

_HEADER = struct.Struct(">32sII")  # clients/ratchet.py: DH pub ‖ PN uint32 BE ‖ N uint32 BE
HEADER_LEN = _HEADER.size  # 40


def encode_header(header: doubleratchet.Header) -> bytes:
    """Their ``Header`` in our 40-byte layout (fields: ratchet_pub, previous_sending_chain_length = PN,
    sending_chain_length = N; types.py and diffie_hellman_ratchet.next_encryption_key)."""
    return _HEADER.pack(header.ratchet_pub, header.previous_sending_chain_length, header.sending_chain_length)


def message_to_wire(message: doubleratchet.EncryptedMessage) -> bytes:
    return encode_header(message.header) + message.ciphertext


def wire_to_message(wire: bytes) -> doubleratchet.EncryptedMessage:
    if len(wire) < HEADER_LEN:
        raise ValueError("shorter than a header")
    pub, pn, n = _HEADER.unpack(wire[:HEADER_LEN])
    return doubleratchet.EncryptedMessage(doubleratchet.Header(pub, pn, n), wire[HEADER_LEN:])


class TheirDoubleRatchet(doubleratchet.DoubleRatchet):
    """CONCAT(AD, header) = AD ‖ our 40-byte header: what clients.ratchet authenticates."""

    @staticmethod
    def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
        return associated_data + encode_header(header)


# --- parties with one interface, for the conversation harness ------------------------------------


class Rejected(Exception):
    """The receiving implementation refused a message (any of its documented decryption failures)."""


# What the package raises for a message it will not decrypt (double_ratchet.decrypt_message docs).
THEIR_REJECTIONS: tuple[type[Exception], ...] = (
    doubleratchet.AuthenticationFailedException,
    doubleratchet.DecryptionFailedException,
    doubleratchet.DuplicateMessageException,
    doubleratchet.DoSProtectionException,
)


class Party(Protocol):
    name: str

    @property
    def can_send(self) -> bool: ...

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, wire: bytes) -> bytes: ...

    def snapshot(self) -> object: ...


class OurParty:
    """``clients.ratchet.DoubleRatchet`` behind the harness interface. Wire bytes in, wire bytes out."""

    def __init__(self, name: str, ratchet: OurDoubleRatchet) -> None:
        self.name = name
        self.ratchet = ratchet

    @classmethod
    def alice(
        cls,
        sk: bytes,
        bob_ratchet_pub: bytes,
        ad: bytes,
        rng: Callable[[int], bytes],
        config: RatchetConfig = DEFAULT_CONFIG,
    ) -> OurParty:
        return cls("our Alice", OurDoubleRatchet.init_alice(sk, bob_ratchet_pub, ad, config=config, rng=rng))

    @classmethod
    def bob(
        cls,
        sk: bytes,
        spk_priv: bytes,
        ad: bytes,
        rng: Callable[[int], bytes],
        config: RatchetConfig = DEFAULT_CONFIG,
    ) -> OurParty:
        pair = _primitives.x25519_pair_from_private(spk_priv)
        return cls("our Bob", OurDoubleRatchet.init_bob(sk, pair, ad, config=config, rng=rng))

    @property
    def can_send(self) -> bool:
        return self.ratchet.cks is not None

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.ratchet.encrypt(plaintext)

    def decrypt(self, wire: bytes) -> bytes:
        try:
            return self.ratchet.decrypt(wire)
        except DecryptionError:
            raise Rejected(self.name) from None

    def snapshot(self) -> object:
        return self.ratchet.to_dict()


class TheirParty:
    """``doubleratchet.DoubleRatchet`` behind the harness interface.

    The package has no "init" step of its own: Alice's state is born in ``encrypt_initial_message``
    and Bob's in ``decrypt_initial_message`` (double_ratchet.py), so both are created lazily here.
    """

    def __init__(
        self,
        name: str,
        sk: bytes,
        ad: bytes,
        config: TheirConfig,
        *,
        bob_ratchet_pub: bytes | None = None,
        own_ratchet_priv: bytes | None = None,
        rng: SeededRNG | None = None,
    ) -> None:
        if (bob_ratchet_pub is None) == (own_ratchet_priv is None):
            raise ValueError("Alice needs bob_ratchet_pub, Bob needs own_ratchet_priv")
        self.name = name
        self.sk = sk
        self.ad = ad
        self.config = config
        self.bob_ratchet_pub = bob_ratchet_pub
        self.own_ratchet_priv = own_ratchet_priv
        self.rng = rng
        self.dr: TheirDoubleRatchet | None = None

    @classmethod
    def alice(
        cls, sk: bytes, bob_ratchet_pub: bytes, ad: bytes, config: TheirConfig, **kw: Any
    ) -> TheirParty:
        return cls("their Alice", sk, ad, config, bob_ratchet_pub=bob_ratchet_pub, **kw)

    @classmethod
    def bob(cls, sk: bytes, spk_priv: bytes, ad: bytes, config: TheirConfig, **kw: Any) -> TheirParty:
        return cls("their Bob", sk, ad, config, own_ratchet_priv=spk_priv, **kw)

    @property
    def can_send(self) -> bool:
        return self.dr is not None or self.bob_ratchet_pub is not None

    def encrypt(self, plaintext: bytes) -> bytes:
        if self.dr is not None:
            return message_to_wire(run(self.dr.encrypt_message(plaintext, self.ad)))
        if self.bob_ratchet_pub is None:
            raise RuntimeError("their Bob cannot send before he has received")
        self.dr, message = run(
            TheirDoubleRatchet.encrypt_initial_message(
                **self.config.kwargs(),
                shared_secret=self.sk,
                recipient_ratchet_pub=self.bob_ratchet_pub,
                message=plaintext,
                associated_data=self.ad,
            )
        )
        return message_to_wire(message)

    def decrypt(self, wire: bytes) -> bytes:
        # The package leaves its own state untouched on failure (it works on a deep copy), but a DH
        # step it attempted has already drawn a key from the RNG; rewind so a seeded twin stays in step.
        if len(wire) < HEADER_LEN:
            raise Rejected(self.name)
        message = wire_to_message(wire)
        rng_state = None if self.rng is None else self.rng.state()
        try:
            if self.dr is not None:
                return bytes(run(self.dr.decrypt_message(message, self.ad)))
            if self.own_ratchet_priv is None:
                raise Rejected(self.name)  # their Alice has not sent yet, so has no session
            self.dr, plaintext = run(
                TheirDoubleRatchet.decrypt_initial_message(
                    **self.config.kwargs(),
                    shared_secret=self.sk,
                    own_ratchet_priv=self.own_ratchet_priv,
                    message=message,
                    associated_data=self.ad,
                )
            )
            return bytes(plaintext)
        except THEIR_REJECTIONS as exc:
            if self.rng is not None:
                self.rng.restore(rng_state)
            raise Rejected(self.name) from exc

    def snapshot(self) -> object:
        model = None if self.dr is None else self.dr.model.model_dump()
        return model, None if self.rng is None else self.rng.state()


# --- our device framing (clients/session.py) -----------------------------------------------------


def device_prekey_frame(initial: InitialMessage, ratchet_message: bytes) -> bytes:
    """``0x02 ‖ msgpack([InitialMessage, ratchet message])``, as ``clients.session.Session.encrypt``."""
    return bytes((TYPE_PREKEY,)) + msgpack.packb([initial.to_wire(), ratchet_message], use_bin_type=True)


def device_message_frame(ratchet_message: bytes) -> bytes:
    """``0x01 ‖ ratchet message``, as ``clients.session.Session.encrypt`` once Bob has answered."""
    return bytes((TYPE_MESSAGE,)) + ratchet_message


# --- a conversation over a network the test controls ----------------------------------------------


@dataclass
class InFlight:
    """One message as sent by Alice or Bob: one wire form per pairing (each pairing's own sender)."""

    seq: int
    sender: str  # "A" or "B"
    plaintext: bytes
    wires: list[bytes]
    chain: int  # which of the sender's sending chains it is on (0, 1, …), read from its DH key


class Conversation:
    """Alice and Bob, each played by one implementation per *pairing*, on a link the test drives.

    ``pairings`` is a list of (Alice, Bob). Every send happens on every pairing; every delivery
    delivers that pairing's own ciphertext to that pairing's receiver, which must return the
    plaintext. With ``identical_bytes``, the senders of all pairings must also have produced the
    very same bytes (true when they are seeded alike: see ``seeded_dh_ratchet``).

    ``stats`` counts what a run exercised: DH ratchet steps, deliveries after a gap (skipped
    keys computed), late deliveries (a stored skipped key used), and late deliveries across a
    DH step, so tests can show their scripts cover what they claim.
    """

    def __init__(self, pairings: list[tuple[Party, Party]], *, identical_bytes: bool) -> None:
        self.pairings = pairings
        self.identical_bytes = identical_bytes
        self.in_flight: list[InFlight] = []
        self.delivered: list[InFlight] = []
        self.dropped: list[InFlight] = []
        self.sent = 0
        self._chains: dict[str, list[bytes]] = {"A": [], "B": []}
        self.stats: dict[str, int] = {"dh_steps": 0, "gap": 0, "late": 0, "late_across_dh": 0, "rejected": 0}

    def _senders(self, side: str) -> list[Party]:
        return [a if side == "A" else b for a, b in self.pairings]

    def _receivers(self, side: str) -> list[Party]:
        return [b if side == "A" else a for a, b in self.pairings]

    def can_send(self, side: str) -> bool:
        verdicts = {p.name: p.can_send for p in self._senders(side)}
        assert len(set(verdicts.values())) == 1, (
            f"implementations disagree on whether {side} can send: {verdicts}"
        )
        return next(iter(verdicts.values()))

    def send(self, side: str, plaintext: bytes) -> InFlight | None:
        """Encrypt on every pairing; ``None`` if this side cannot send yet (Bob before any message)."""
        if not self.can_send(side):
            return None
        senders = self._senders(side)
        wires = [p.encrypt(plaintext) for p in senders]
        if self.identical_bytes:
            for p, w in zip(senders[1:], wires[1:], strict=True):
                assert w == wires[0], (
                    f"message {self.sent} from {side}: {p.name} and {senders[0].name} produced different "
                    f"bytes from identical states\n{w.hex()}\n{wires[0].hex()}"
                )
        dh_pub = wires[0][:32]
        chains = self._chains[side]
        if not chains or chains[-1] != dh_pub:
            chains.append(dh_pub)
            if len(chains) > 1:
                self.stats["dh_steps"] += 1
        msg = InFlight(self.sent, side, plaintext, wires, len(chains) - 1)
        self.sent += 1
        self.in_flight.append(msg)
        return msg

    def _take(self, msg: InFlight) -> None:
        self.in_flight.remove(msg)

    def deliver(self, msg: InFlight) -> None:
        earlier_missing = any(
            m.sender == msg.sender and m.seq < msg.seq for m in self.in_flight + self.dropped if m is not msg
        )
        later_done = [m for m in self.delivered if m.sender == msg.sender and m.seq > msg.seq]
        self._take(msg)
        for i, receiver in enumerate(self._receivers(msg.sender)):
            sender = self._senders(msg.sender)[i]
            try:
                got = receiver.decrypt(msg.wires[i])
            except Rejected:
                raise AssertionError(
                    f"{receiver.name} rejected message {msg.seq} from {sender.name} "
                    f"(chain {msg.chain}, stats so far {self.stats})"
                ) from None
            assert got == msg.plaintext, (
                f"{receiver.name} decrypted message {msg.seq} from {sender.name} into other bytes"
            )
        self.delivered.append(msg)
        self.stats["gap"] += earlier_missing
        self.stats["late"] += bool(later_done)
        self.stats["late_across_dh"] += any(m.chain > msg.chain for m in later_done)

    def drop(self, msg: InFlight) -> None:
        self._take(msg)
        self.dropped.append(msg)

    def _must_reject(self, msg: InFlight, wires: list[bytes], what: str) -> None:
        for receiver, wire in zip(self._receivers(msg.sender), wires, strict=True):
            before = receiver.snapshot()
            try:
                receiver.decrypt(wire)
            except Rejected:
                pass
            else:
                raise AssertionError(f"{receiver.name} accepted a {what} of message {msg.seq}")
            assert receiver.snapshot() == before, f"{receiver.name} changed state on a rejected {what}"
            self.stats["rejected"] += 1

    def replay(self, msg: InFlight) -> None:
        """Deliver an already delivered message again: a duplicate must be refused, state unchanged."""
        assert msg in self.delivered
        self._must_reject(msg, msg.wires, "replay")

    def tamper(self, msg: InFlight, bit: int) -> None:
        """Deliver a copy with one bit flipped (header, body or tag); the original stays in flight."""
        forged = []
        for wire in msg.wires:
            b = bit % (8 * len(wire))
            forged.append(wire[: b // 8] + bytes((wire[b // 8] ^ (1 << (b % 8)),)) + wire[b // 8 + 1 :])
        self._must_reject(msg, forged, "forgery")
