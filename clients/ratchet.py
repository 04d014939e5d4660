"""The Double Ratchet (Signal, revision 1, §3; header encryption §4), as a pure state machine.

``DoubleRatchet`` holds the state variables of §3.2 under their spec names (``dhs``, ``dhr``,
``rk``, ``cks``, ``ckr``, ``ns``, ``nr``, ``pn``, ``mkskipped``; with header encryption also
``hks``, ``hkr``, ``nhks``, ``nhkr``). It reads no clock and opens no socket; new ratchet key
pairs come from the RNG it is given.

Failure leaves the state untouched *by construction*: ``decrypt`` computes every new value
into locals (new chain keys, the skipped keys it would store, a DH ratchet step) and assigns
them to the state only after the message has authenticated. Nothing is copied up front.

Wire form of a message (the spec fixes no layout; ours is fixed-width so CONCAT is parseable):

    header     = DHs public (32) ‖ PN (uint32, big-endian) ‖ N (uint32, big-endian)   — 40 bytes
    message    = header ‖ ENCRYPT(mk, plaintext, AD ‖ header)
    message_he = HENCRYPT(HKs, header) (56 bytes) ‖ ENCRYPT(mk, plaintext, AD ‖ enc_header)

PN is the specification's, Ns of the previous sending chain (§3.5 DHRatchet); libsignal's sender puts
Ns − 1 there and no libsignal receiver reads it (docs/conformance.md says why ours is Ns).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError, UsageError

__all__ = [
    "DEFAULT_MAX_SKIP",
    "DEFAULT_MAX_STORED_SKIPPED",
    "ENC_HEADER_LEN",
    "HEADER",
    "HEADER_LEN",
    "MAX_RECEIVING_CHAINS",
    "DoubleRatchet",
    "MessageHeader",
    "RatchetConfig",
    "SendingChain",
    "UsedKey",
    "parse_header",
]

# libsignal's limits (rust/protocol/src/consts.rs): MAX_FORWARD_JUMPS = 25_000, MAX_MESSAGE_KEYS = 2_000
# and MAX_RECEIVER_CHAINS = 5. libsignal keeps up to MAX_MESSAGE_KEYS skipped keys per receiving chain
# (state/session.rs ``set_message_keys``: the newest put first, the oldest popped past the bound) and
# at most MAX_RECEIVER_CHAINS receiving chains, the current one among them (``add_receiver_chain``
# drops the oldest, its skipped keys with it). So here: ``max_stored_skipped`` keys per chain, the
# oldest of that chain dropped past it, and keys only of the current receiving chain and of the
# MAX_RECEIVING_CHAINS - 1 chains before it (``old_chains``): a DH ratchet step that leaves a chain
# out of those drops its keys. A session holds at most 5 x 2,000 skipped keys.
# Without header encryption the chains before the current one are libsignal's, not §3.5's: libsignal
# keeps each one's CHAIN KEY and derives a message key of it when a message of that chain comes
# (session_cipher.rs ``get_or_create_chain_key`` finds the chain by the header's ratchet key, whichever
# of the five it is; ``get_or_create_message_key`` runs it forward, at most MAX_FORWARD_JUMPS), and it
# never reads PN. So here: no SkipMessageKeys(PN) at a DH ratchet step, the old chain's key kept in
# ``old_chains``; a chain's early messages are not lost when more than 2,000 were skipped on it, a peer
# may turn back to a ratchet key of one of those chains, and a PN of 25,000 costs nothing.
# With header encryption (§4, which libsignal does not implement) the spec's way is kept: the old chain's
# keys are derived up to PN at the DH ratchet step (SkipMessageKeysHE) and its chain key deleted.
# ``max_skip`` is §3.5 MAX_SKIP: how far one message may skip ahead on a chain, in every session (libsignal
# lets a session with oneself, its two identity keys one, jump any distance: docs/conformance.md).
DEFAULT_MAX_SKIP = 25_000
DEFAULT_MAX_STORED_SKIPPED = 2_000
# The window of receiving chains (libsignal's MAX_RECEIVER_CHAINS), the current one included. A
# session also remembers how far each of the four chains before the current one was read
# (``old_chains``), so that a second copy of a message read on one of them is still known as one
# (``already_used``) after the sender's ratchet has turned. With header encryption this bounds the work too:
# TrySkippedMessageKeysHE (§4.5) trial-decrypts every header with each header key skipped keys are
# held under, before every message, so at most this many header keys are tried.
MAX_RECEIVING_CHAINS = 5

# The header layout (see the module docstring), defined here only: whatever else reads or builds
# a header (the simulator's analyses, the benchmarks) uses HEADER.
HEADER = struct.Struct(">32sII")  # DHs public (32) ‖ PN (uint32 BE) ‖ N (uint32 BE)
HEADER_LEN = HEADER.size  # 40
ENC_HEADER_LEN = HEADER_LEN + 16  # AES-SIV adds a 16-byte synthetic IV
_MIN_BODY = 16 + 32  # one AES block and the full HMAC-SHA256 tag
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack
_STATE_VERSION = 2
# Version 1 (before old receiving chains kept their chain keys) saved ``ended``: [chain id, number]
# pairs. It loads as old chains without a chain key, which read only the skipped keys they hold.
_READABLE_STATE_VERSIONS = (1, 2)

RNG = Callable[[int], bytes]
# MKSKIPPED while it holds nothing, as most sessions' does: one shared read-only mapping (an empty
# dict per session is 64 B, for hundreds of thousands of sessions in a simulation).
_NO_SKIPPED: Final[Mapping[tuple[bytes, int], bytes]] = MappingProxyType({})
_NO_CHAINS: Final[Mapping[bytes, int]] = MappingProxyType({})  # the same for ``skipped_chains``


class RatchetConfig:
    """The application constants of §5.2 and the limits the spec leaves to the application:
    ``max_skip`` (§3.5 MAX_SKIP, keys one message may skip on a chain) and ``max_stored_skipped``
    (skipped keys kept per receiving chain, libsignal's MAX_MESSAGE_KEYS; see DEFAULT_MAX_SKIP)."""

    __slots__ = ("aead_info", "header_encryption", "max_skip", "max_stored_skipped", "root_info")

    def __init__(
        self,
        *,
        root_info: bytes = b"WhisperRatchet",  # libsignal's KDF_RK info (docs/conformance.md)
        aead_info: bytes = b"WhisperMessageKeys",  # libsignal's ENCRYPT info
        max_skip: int = DEFAULT_MAX_SKIP,
        max_stored_skipped: int = DEFAULT_MAX_STORED_SKIPPED,
        header_encryption: bool = False,
    ) -> None:
        if max_skip < 0 or max_stored_skipped < 0:
            raise UsageError("max_skip and max_stored_skipped must not be negative")
        self.root_info = root_info
        self.aead_info = aead_info
        self.max_skip = max_skip
        self.max_stored_skipped = max_stored_skipped
        self.header_encryption = header_encryption

    def as_tuple(self) -> tuple[bytes, bytes, int, int, bool]:
        return (
            self.root_info,
            self.aead_info,
            self.max_skip,
            self.max_stored_skipped,
            self.header_encryption,
        )

    @classmethod
    def from_list(cls, values: list[Any] | tuple[Any, ...]) -> RatchetConfig:
        """The inverse of ``list(as_tuple())``, the form saved state uses."""
        root_info, aead_info, max_skip, max_stored, he = values
        return cls(
            root_info=root_info,
            aead_info=aead_info,
            max_skip=max_skip,
            max_stored_skipped=max_stored,
            header_encryption=he,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RatchetConfig) and other.as_tuple() == self.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())


DEFAULT_CONFIG = RatchetConfig()


@dataclass(frozen=True, slots=True)
class UsedKey:
    """A copy of the message key one message was just encrypted under, and what using it takes.

    Only ``DoubleRatchet.encrypt_keeping_key`` makes one, for key escrow (``clients.escrow``):
    the ratchet still derives every key and the IV itself; the caller is handed a copy of the
    key it used, never a say in it. ``ad ‖ header`` is the associated data ENCRYPT bound in;
    ``message`` is the whole ratchet message (``header ‖ ciphertext``).
    """

    message_key: bytes
    ad: bytes
    header: bytes
    info: bytes
    message: bytes


class MessageHeader(NamedTuple):
    """A ratchet message's header (§3.1 HEADER): the sender's ratchet public key, PN and N."""

    dh: bytes
    pn: int
    n: int


def parse_header(message: bytes) -> MessageHeader | None:
    """The header of a ratchet message sent without header encryption; None if too short for one."""
    if len(message) < HEADER_LEN:
        return None
    return MessageHeader(*_unpack_header(message[:HEADER_LEN]))


class SendingChain:
    """A copy of one side's sending chain, run forward (``DoubleRatchet.sending_chain``).

    This is what a forensic copy of a phone holds of its own sending chain: it opens the messages
    that side sends later on the same chain, and none sent before the copy, since the chain key
    only runs forward (§3.2 KDF_CK). ``ratchet_key`` is the chain's ratchet public key, as the
    headers of its messages carry it.
    """

    __slots__ = ("_ad", "_ck", "_info", "_n", "ratchet_key")

    def __init__(self, ratchet_key: bytes, ck: bytes, n: int, ad: bytes, info: bytes) -> None:
        self.ratchet_key = ratchet_key
        self._ck, self._n, self._ad, self._info = ck, n, ad, info

    def open(self, message: bytes) -> bytes | None:
        """The plaintext of a message on this chain at or after the copy, or None (the chain moves on)."""
        header = parse_header(message)
        if header is None or header.dh != self.ratchet_key or header.n < self._n:
            return None
        ck = self._ck
        for _ in range(header.n - self._n):
            ck, _mk = spec.kdf_ck(ck)
        ck, mk = spec.kdf_ck(ck)
        try:
            plaintext = spec.decrypt(mk, message[HEADER_LEN:], self._ad + message[:HEADER_LEN], self._info)
        except DecryptionError:
            return None
        self._ck, self._n = ck, header.n + 1
        return plaintext


class DoubleRatchet:
    """One side of a Double Ratchet session. Build it with ``init_alice`` or ``init_bob``."""

    __slots__ = (
        "ad",
        "ckr",
        "cks",
        "config",
        "dhr",
        "dhs",
        "hkr",
        "hks",
        "mkskipped",
        "nhkr",
        "nhks",
        "nr",
        "ns",
        "old_chains",
        "pn",
        "rk",
        "rng",
        "skipped_chains",
    )

    def __init__(self, config: RatchetConfig, ad: bytes, rng: RNG) -> None:
        self.config = config
        self.ad = ad  # X3DH §3.3 AD = Encode(IK_A) ‖ Encode(IK_B), bound into every message
        self.rng = rng
        self.dhs: _p.X25519Pair | None = None
        self.dhr: bytes | None = None
        self.rk = b""
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = 0
        self.nr = 0
        self.pn = 0
        # (chain id, N) → message key. The chain id is the ratchet public key, or with header
        # encryption the header key (§4.3). Insertion order is age order: the oldest go first.
        self.mkskipped: Mapping[tuple[bytes, int], bytes] = _NO_SKIPPED
        # The chain ids MKSKIPPED holds keys of, oldest first, each with how many: with header
        # encryption TrySkippedMessageKeysHE tries each header key once, before every message, and
        # finds them here rather than walking every stored key (up to max_stored_skipped, 2,000, for
        # each of MAX_RECEIVING_CHAINS chains). Kept by ``_store_skipped``/``_drop_skipped``/
        # ``_forget_chain`` (and ``from_dict``); not part of the state.
        self.skipped_chains: Mapping[bytes, int] = _NO_CHAINS
        # The receiving chains before the current one, oldest first, at most MAX_RECEIVING_CHAINS - 1:
        # (chain id, its Nr, its chain key or None). Every number below Nr was read or its key is among
        # the skipped ones (or was dropped from them). Without header encryption the chain key is kept,
        # as libsignal keeps it, and runs forward to a later message of that chain (its Nr and key then
        # move on); with header encryption (§4.5 DHRatchetHE: its keys were derived up to PN and CKr
        # overwritten) and in a state saved before chain keys were kept, it is None, and Nr is where the
        # chain ended (PN, or the number read on it if that is higher). Skipped keys are kept only for
        # these chains and the current one.
        self.old_chains: tuple[tuple[bytes, int, bytes | None], ...] = ()
        self.hks: bytes | None = None
        self.hkr: bytes | None = None
        self.nhks: bytes | None = None
        self.nhkr: bytes | None = None

    # --- initialisation (§3.3, §4.3) ------------------------------------------------------

    @classmethod
    def init_alice(
        cls,
        sk: bytes,
        bob_dh_public: bytes,
        ad: bytes,
        *,
        config: RatchetConfig = DEFAULT_CONFIG,
        rng: RNG = os.urandom,
        shared_hka: bytes | None = None,
        shared_nhkb: bytes | None = None,
    ) -> DoubleRatchet:
        """RatchetInitAlice (§3.3) / RatchetInitAliceHE (§4.3)."""
        s = cls(config, ad, rng)
        s.dhs = spec.generate_dh(rng)
        s.dhr = bob_dh_public
        dh_out = s.dhs.dh(bob_dh_public)
        if config.header_encryption:
            if shared_hka is None or shared_nhkb is None:
                raise UsageError("header encryption needs shared_hka and shared_nhkb")
            s.rk, s.cks, s.nhks = spec.kdf_rk_he(sk, dh_out, config.root_info)
            s.hks = shared_hka
            s.nhkr = shared_nhkb
        else:
            s.rk, s.cks = spec.kdf_rk(sk, dh_out, config.root_info)
        return s

    @classmethod
    def init_bob(
        cls,
        sk: bytes,
        bob_dh_pair: _p.X25519Pair,
        ad: bytes,
        *,
        config: RatchetConfig = DEFAULT_CONFIG,
        rng: RNG = os.urandom,
        shared_hka: bytes | None = None,
        shared_nhkb: bytes | None = None,
    ) -> DoubleRatchet:
        """RatchetInitBob (§3.3) / RatchetInitBobHE (§4.3). Bob's first ratchet key is his SPK."""
        s = cls(config, ad, rng)
        s.dhs = bob_dh_pair
        s.rk = sk
        if config.header_encryption:
            if shared_hka is None or shared_nhkb is None:
                raise UsageError("header encryption needs shared_hka and shared_nhkb")
            s.nhks = shared_nhkb
            s.nhkr = shared_hka
        return s

    # --- RatchetEncrypt -------------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        """RatchetEncrypt (§3.4) / RatchetEncryptHE (§4.4)."""
        config = self.config
        if config.header_encryption:
            return self._encrypt(plaintext)[0]
        # ``_encrypt`` without header encryption, written out: no tuple to make and take apart
        cks, dhs = self.cks, self.dhs
        if cks is None or dhs is None:
            raise UsageError("this side has no sending chain yet: it must receive a message first")
        self.cks, mk = spec.kdf_ck(cks)
        header = _pack_header(dhs.public, self.pn, self.ns)
        self.ns += 1
        return header + spec.encrypt(mk, plaintext, self.ad + header, config.aead_info)

    def encrypt_keeping_key(self, plaintext: bytes) -> tuple[bytes, UsedKey]:
        """``encrypt``, also returning a copy of the message key it used (for key escrow)."""
        message, mk, header = self._encrypt(plaintext)
        return message, UsedKey(mk, self.ad, header, self.config.aead_info, message)

    def _encrypt(self, plaintext: bytes) -> tuple[bytes, bytes, bytes]:
        cks = self.cks
        if cks is None or self.dhs is None:
            raise UsageError("this side has no sending chain yet: it must receive a message first")
        self.cks, mk = spec.kdf_ck(cks)
        header = _pack_header(self.dhs.public, self.pn, self.ns)
        self.ns += 1
        if self.config.header_encryption:
            assert self.hks is not None
            header = spec.hencrypt(self.hks, header)
        return header + spec.encrypt(mk, plaintext, self.ad + header, self.config.aead_info), mk, header

    # --- RatchetDecrypt -------------------------------------------------------------------

    def exchanges_ahead(self, message: bytes, peek: Callable[[int], bytes] | None) -> list[tuple[Any, ...]]:
        """What ``decrypt(message)`` would hand to ``clients.ahead.compute_ahead`` if it ran now: the
        two DH outputs of a DH ratchet step (§3.5 DHRatchet) when the header names a new ratchet
        key — DH(DHs, key) and, if ``peek(32)`` gives the 32 bytes GENERATE_DH() will draw, the
        new pair's public key and DH(new, key) — else nothing. A guess, for a worker to compute ahead:
        it decrypts nothing, changes nothing, and a wrong one only costs the worker's time."""
        if self.old_chains and any(message[:32] == chain for chain, _nr, _ck in self.old_chains):
            return []  # a message of an earlier receiving chain: no DH ratchet step
        return ratchet_step_ahead(message, self.dhs, self.dhr, peek, self.config.header_encryption)

    def decrypt(self, message: bytes) -> bytes:
        """RatchetDecrypt (§3.5) / RatchetDecryptHE (§4.5). Raises only ``DecryptionError``."""
        if self.config.header_encryption:
            return self._decrypt_he(message)
        if len(message) < HEADER_LEN + _MIN_BODY:
            raise DecryptionError()
        header = message[:HEADER_LEN]
        body = message[HEADER_LEN:]
        dh_pub, _pn, n = _unpack_header(header)
        aead_ad = self.ad + header
        info = self.config.aead_info

        # TrySkippedMessageKeys (most sessions hold none: then no key to make and look up)
        if self.mkskipped:
            mk = self.mkskipped.get((dh_pub, n))
            if mk is not None:
                plaintext = spec.decrypt(mk, body, aead_ad, info)
                self._drop_skipped((dh_pub, n))
                return plaintext

        if dh_pub == self.dhr:
            # Same receiving chain: skip ahead in it, then decrypt.
            # (SkipMessageKeys only when the message is not the next one: a number below NR, not
            # among the skipped keys, is a duplicate or a replay, which _skip refuses)
            ckr = self.ckr
            if ckr is None:
                # Alice before Bob's first reply: DHr is Bob's signed prekey and there is no CKr
                # (§3.3 RatchetInitAlice). §3.5 takes header.dh == DHr as no DH ratchet step, and
                # KDF_CK(CKr = None) fails: refused, as doubleratchet 1.3.0 refuses it (its
                # next_decryption_key finds no receiving chain). An honest Bob never sends on his
                # signed prekey: he turns his ratchet before his first message.
                raise DecryptionError()
            skipped: list[tuple[tuple[bytes, int], bytes]] = []
            if n != self.nr:
                ckr = self._skip(ckr, self.nr, n, dh_pub, skipped)
            ckr, mk = spec.kdf_ck(ckr)
            plaintext = spec.decrypt(mk, body, aead_ad, info)
            self.ckr = ckr
            self.nr = n + 1
            if skipped:
                self._store_skipped(skipped)
            return plaintext

        # One of the receiving chains before the current one (libsignal's receiver chains: its
        # ``get_or_create_chain_key`` finds any of them by the header's ratchet key, no DH ratchet step)
        old_chains = self.old_chains
        for i, (chain, nr, ck) in enumerate(old_chains):
            if chain == dh_pub:
                if ck is None:  # (a state saved before chain keys were kept: its skipped keys only)
                    raise DecryptionError()
                skipped = []
                if n != nr:  # (a number below Nr, not among the skipped keys: a duplicate, refused)
                    ck = self._skip(ck, nr, n, dh_pub, skipped)
                ck, mk = spec.kdf_ck(ck)
                plaintext = spec.decrypt(mk, body, aead_ad, info)
                self.old_chains = (*old_chains[:i], (chain, n + 1, ck), *old_chains[i + 1 :])
                if skipped:
                    self._store_skipped(skipped)
                return plaintext

        # A new ratchet public key: DHRatchet. libsignal reads no PN (its old chain keeps its chain key,
        # in ``old_chains``), so no SkipMessageKeys(PN) on the old chain (§3.5 has one): see
        # DEFAULT_MAX_SKIP.
        dhs, old_ckr = self.dhs, self.ckr
        if dhs is None:
            raise DecryptionError()
        root_info = self.config.root_info
        try:
            their = _p.x25519_public(dh_pub)  # checked once for both DHs of the step
            rk, ckr = spec.kdf_rk(self.rk, dhs.dh(their), root_info)
        except _p.AuthenticationFailed:
            raise DecryptionError() from None
        skipped = []
        if n:
            ckr = self._skip(ckr, 0, n, dh_pub, skipped)
        ckr, mk = spec.kdf_ck(ckr)
        plaintext = spec.decrypt(mk, body, aead_ad, info)
        # Authenticated: commit the DH ratchet step (§3.5 DHRatchet).
        new_dhs = spec.generate_dh(self.rng)
        rk, cks = spec.kdf_rk(rk, new_dhs.dh(their), root_info)
        old_dhr = self.dhr
        left = None
        if old_ckr is not None and old_dhr is not None:
            left = self._end_chain(old_dhr, self.nr, old_ckr)
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        self.dhr = dh_pub
        self.dhs = new_dhs
        self.rk = rk
        self.ckr = ckr
        self.cks = cks
        if skipped:
            self._store_skipped(skipped)
        if left is not None:
            self._forget_chain(left, dh_pub)
        return plaintext

    def _decrypt_he(self, message: bytes) -> bytes:
        if len(message) < ENC_HEADER_LEN + _MIN_BODY:
            raise DecryptionError()
        enc_header = message[:ENC_HEADER_LEN]
        body = message[ENC_HEADER_LEN:]
        aead_ad = self.ad + enc_header
        info = self.config.aead_info

        # TrySkippedMessageKeysHE: try each distinct header key once (at most MAX_RECEIVING_CHAINS
        # of them are held, oldest first: see ``_store_skipped``).
        for hk in self.skipped_chains:
            header = spec.hdecrypt(hk, enc_header)
            if header is not None:
                _dh, _pn, n = _unpack_header(header)
                mk = self.mkskipped.get((hk, n))
                if mk is None:  # this header key's chain, but not a skipped message: go on
                    break
                plaintext = spec.decrypt(mk, body, aead_ad, info)
                self._drop_skipped((hk, n))
                return plaintext

        header = spec.hdecrypt(self.hkr, enc_header)
        if header is not None:
            assert self.ckr is not None and self.hkr is not None
            _dh, _pn, n = _unpack_header(header)
            skipped: list[tuple[tuple[bytes, int], bytes]] = []
            ckr = self._skip(self.ckr, self.nr, n, self.hkr, skipped)
            ckr, mk = spec.kdf_ck(ckr)
            plaintext = spec.decrypt(mk, body, aead_ad, info)
            self.ckr = ckr
            self.nr = n + 1
            self._store_skipped(skipped)
            return plaintext

        header = spec.hdecrypt(self.nhkr, enc_header)
        if header is None or self.dhs is None:
            raise DecryptionError()
        dh_pub, pn, n = _unpack_header(header)
        skipped = []
        if self.ckr is not None:
            if pn > self.nr:  # (SkipMessageKeysHE loops while Nr < PN, as in ``decrypt``)
                assert self.hkr is not None
                self._skip(self.ckr, self.nr, pn, self.hkr, skipped)
        elif pn > self.config.max_skip:  # SkipMessageKeysHE (§4), as in ``decrypt``
            raise DecryptionError()
        root_info = self.config.root_info
        try:
            their = _p.x25519_public(dh_pub)
            rk, ckr, nhkr = spec.kdf_rk_he(self.rk, self.dhs.dh(their), root_info)
        except _p.AuthenticationFailed:
            raise DecryptionError() from None
        hkr = self.nhkr
        assert hkr is not None
        ckr = self._skip(ckr, 0, n, hkr, skipped)
        ckr, mk = spec.kdf_ck(ckr)
        plaintext = spec.decrypt(mk, body, aead_ad, info)
        # Authenticated: commit DHRatchetHE (§4.5).
        new_dhs = spec.generate_dh(self.rng)
        rk, cks, nhks = spec.kdf_rk_he(rk, new_dhs.dh(their), root_info)
        left = None
        if self.hkr is not None and self.ckr is not None:  # (its keys derived up to PN: no chain key kept)
            left = self._end_chain(self.hkr, max(pn, self.nr), None)
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        self.hks = self.nhks
        self.hkr = hkr
        self.nhkr = nhkr
        self.nhks = nhks
        self.dhr = dh_pub
        self.dhs = new_dhs
        self.rk = rk
        self.ckr = ckr
        self.cks = cks
        self._store_skipped(skipped)
        if left is not None:
            self._forget_chain(left, hkr)
        return plaintext

    # --- skipped message keys -------------------------------------------------------------

    def _skip(
        self,
        ck: bytes,
        nr: int,
        until: int,
        chain_id: bytes,
        out: list[tuple[tuple[bytes, int], bytes]],
    ) -> bytes:
        """SkipMessageKeys (§3.5) into ``out`` without touching the state; returns the chain key.

        A message number below ``nr`` on the current chain, not found among the skipped keys, is
        a duplicate or a replay: it is rejected here.
        """
        if until < nr or until - nr > self.config.max_skip:
            raise DecryptionError()
        kdf_ck = spec.kdf_ck
        while nr < until:
            ck, mk = kdf_ck(ck)
            out.append(((chain_id, nr), mk))
            nr += 1
        return ck

    def _store_skipped(self, skipped: list[tuple[tuple[bytes, int], bytes]]) -> None:
        """Store ``skipped`` (oldest first) in MKSKIPPED, keeping at most ``max_stored_skipped`` keys
        per chain (libsignal's MAX_MESSAGE_KEYS per receiving chain: the oldest of the chain go first)
        and keys of at most ``MAX_RECEIVING_CHAINS`` chains (the oldest chain's go first)."""
        if not skipped:
            return
        cap = self.config.max_stored_skipped
        held, held_chains = self.mkskipped, self.skipped_chains
        store = held if isinstance(held, dict) else {}
        chains = held_chains if isinstance(held_chains, dict) else {}
        # ``skipped`` holds one chain's keys, or two chains' one after the other (the old chain's up to
        # PN, then the new one's): of each, only the newest ``cap`` can be kept, so the rest are not stored
        start = 0
        while start < len(skipped):
            chain = skipped[start][0][0]
            end = start + 1
            while end < len(skipped) and skipped[end][0][0] == chain:
                end += 1
            for key, mk in skipped[max(start, end - cap) : end]:
                if key not in store:
                    chains[chain] = chains.get(chain, 0) + 1
                store[key] = mk
            start = end
            excess = chains.get(chain, 0) - cap
            if excess > 0:  # drop the chain's oldest; they can no longer be decrypted
                oldest = list(itertools.islice((key for key in store if key[0] == chain), excess))
                for key in oldest:
                    del store[key]
                _uncount_many(chains, chain, len(oldest))
        # (a state made here holds keys of the chains in its window only, at most MAX_RECEIVING_CHAINS:
        # ``_forget_chain``. One saved before the window was kept may hold more: bounded here.)
        _drop_oldest_chains(store, chains)
        self.mkskipped = store or _NO_SKIPPED
        self.skipped_chains = chains or _NO_CHAINS

    def _end_chain(self, chain: bytes, nr: int, ck: bytes | None) -> bytes | None:
        """The receiving chain ``chain`` is no longer the current one (a DH ratchet step, committed):
        keep it in ``old_chains`` with its Nr and chain key (None: not kept), and return the chain that
        so leaves the window of MAX_RECEIVING_CHAINS receiving chains (libsignal's
        ``add_receiver_chain`` drops its oldest receiver chain), if one does."""
        old = (*self.old_chains, (chain, nr, ck))
        gone = old[0][0] if len(old) > MAX_RECEIVING_CHAINS - 1 else None
        self.old_chains = old[1 - MAX_RECEIVING_CHAINS :]
        return gone

    def _forget_chain(self, chain: bytes, current: bytes) -> None:
        """Drop the skipped keys of ``chain``, which has left the window of receiving chains, unless
        the window still holds a chain of that id (a peer can turn back to a ratchet key it used)."""
        if (
            chain not in self.skipped_chains
            or chain == current
            or any(c == chain for c, _, _ in self.old_chains)
        ):
            return
        store, chains = self.mkskipped, self.skipped_chains
        assert isinstance(store, dict) and isinstance(chains, dict)  # it holds the chain's keys
        for key in [key for key in store if key[0] == chain]:
            del store[key]
        del chains[chain]
        if not store:
            self.mkskipped = _NO_SKIPPED
            self.skipped_chains = _NO_CHAINS

    def _drop_skipped(self, key: tuple[bytes, int]) -> None:
        store, chains = self.mkskipped, self.skipped_chains
        assert isinstance(store, dict) and isinstance(chains, dict)  # it held the key
        del store[key]
        _uncount(chains, key[0])
        if not store:
            self.mkskipped = _NO_SKIPPED
            self.skipped_chains = _NO_CHAINS

    # --- what the state holds for a message (read only) -----------------------------------------

    @property
    def ratchet_key(self) -> bytes | None:
        """The public half of this side's current ratchet key pair (DHs), or None."""
        return None if self.dhs is None else self.dhs.public

    def has_skipped_key(self, header: MessageHeader) -> bool:
        """Whether a skipped message key for ``header``'s message is stored (§3.5 MKSKIPPED)."""
        return (header.dh, header.n) in self.mkskipped

    def receiving_position(self, header: MessageHeader) -> str | None:
        """Where ``header``'s message sits on the receiving chains this side holds, without trying it.

        ``"behind"``: the chain has moved past it (its key was used and deleted, unless it is
        among the skipped keys: ask ``has_skipped_key`` first); ``"ahead"``: the current receiving
        chain's key runs forward to it; ``"earlier"``: the chain key of one of the receiving chains
        before the current one (``old_chains``, kept as libsignal keeps them) runs forward to it;
        None: it is on no chain held (or on an earlier one whose chain key is not kept).
        """
        if self.ckr is None:
            return None
        if header.dh == self.dhr:
            return "behind" if header.n < self.nr else "ahead"
        for chain, nr, ck in self.old_chains:
            if chain == header.dh:
                if header.n < nr:
                    return "behind"
                return None if ck is None else "earlier"
        return None

    def receiving_chains(self) -> list[bytes]:
        """The ids (ratchet public keys; header keys with header encryption) of the receiving chains
        whose chain key this side holds, the current one first: a copy of the state reads every later
        message of each (up to MAX_SKIP past its Nr)."""
        if self.ckr is None:
            return []
        current = self.hkr if self.config.header_encryption else self.dhr
        held = [] if current is None else [current]
        return held + [chain for chain, _nr, ck in reversed(self.old_chains) if ck is not None]

    def already_used(self, message: bytes) -> bool:
        """Whether ``message``'s header names a message number this side has already gone past on its
        current receiving chain, or on one of the chains before it that it remembers
        (``MAX_RECEIVING_CHAINS``), with no skipped key stored for it: the number's key was used (the
        message, or a copy of it, was read) or dropped, so no message with that number can be read
        any more. libsignal calls this a DuplicatedMessage (rust/protocol/src/session_cipher.rs,
        ``get_or_create_message_key``), found from the header before any decryption: nothing here
        authenticates ``message`` (with header encryption only its header), so a forgery bearing an
        old number answers True too, and ``decrypt`` would refuse it all the same. Read only."""
        if self.ckr is None:
            return False
        current = self.hkr if self.config.header_encryption else self.dhr
        chains = ((current, self.nr), *((c, nr) for c, nr, _ck in reversed(self.old_chains)))
        if self.config.header_encryption:
            if len(message) < ENC_HEADER_LEN:
                return False
            for chain_id, end in chains:
                header = spec.hdecrypt(chain_id, message[:ENC_HEADER_LEN])
                if header is not None:
                    n = _unpack_header(header)[2]
                    return n < end and (chain_id, n) not in self.mkskipped
            return False
        if len(message) < HEADER_LEN:
            return False
        dh, _pn, n = _unpack_header(message[:HEADER_LEN])
        for chain_id, end in chains:
            if chain_id == dh:
                return n < end and (chain_id, n) not in self.mkskipped
        return False

    def sending_chain(self) -> SendingChain | None:
        """A copy of the current sending chain, or None (none yet, or header encryption is on)."""
        if self.cks is None or self.dhs is None or self.config.header_encryption:
            return None
        return SendingChain(self.dhs.public, self.cks, self.ns, self.ad, self.config.aead_info)

    # --- state as data --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "v": _STATE_VERSION,
            "config": list(c.as_tuple()),
            "ad": self.ad,
            "dhs": None if self.dhs is None else self.dhs.private,
            "dhr": self.dhr,
            "rk": self.rk,
            "cks": self.cks,
            "ckr": self.ckr,
            "ns": self.ns,
            "nr": self.nr,
            "pn": self.pn,
            "mkskipped": [[cid, n, mk] for (cid, n), mk in self.mkskipped.items()],
            "old_chains": [[cid, nr, ck] for cid, nr, ck in self.old_chains],
            "hks": self.hks,
            "hkr": self.hkr,
            "nhks": self.nhks,
            "nhkr": self.nhkr,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, rng: RNG = os.urandom) -> DoubleRatchet:
        version = d.get("v")
        if version not in _READABLE_STATE_VERSIONS:
            raise UsageError(f"unknown ratchet state version {version!r}")
        s = cls(RatchetConfig.from_list(d["config"]), d["ad"], rng)
        s.dhs = None if d["dhs"] is None else _p.x25519_pair_from_private(d["dhs"])
        s.dhr = d["dhr"]
        s.rk = d["rk"]
        s.cks = d["cks"]
        s.ckr = d["ckr"]
        s.ns = d["ns"]
        s.nr = d["nr"]
        s.pn = d["pn"]
        s.mkskipped = {(cid, n): mk for cid, n, mk in d["mkskipped"]} or _NO_SKIPPED
        chains: dict[bytes, int] = {}
        for cid, _n in s.mkskipped:
            chains[cid] = chains.get(cid, 0) + 1
        s.skipped_chains = chains or _NO_CHAINS
        if version == 1:  # where each old chain ended, no chain key (absent from the oldest states)
            s.old_chains = tuple((cid, end, None) for cid, end in d.get("ended", ()))
        else:
            s.old_chains = tuple((cid, nr, ck) for cid, nr, ck in d["old_chains"])
        s.hks = d["hks"]
        s.hkr = d["hkr"]
        s.nhks = d["nhks"]
        s.nhkr = d["nhkr"]
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DoubleRatchet):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _drop_oldest_chains(store: dict[tuple[bytes, int], bytes], chains: dict[bytes, int]) -> None:
    """Drop from ``store`` (MKSKIPPED, oldest first) every key of the chains before its newest
    ``MAX_RECEIVING_CHAINS``, and from ``chains`` (its chain ids, oldest
    first, with their counts) those chains; they can no longer be decrypted."""
    if len(chains) > MAX_RECEIVING_CHAINS:
        gone = set(list(chains)[: len(chains) - MAX_RECEIVING_CHAINS])
        for key in [key for key in store if key[0] in gone]:
            del store[key]
        for chain in gone:
            del chains[chain]


def _uncount_many(chains: dict[bytes, int], chain: bytes, n: int) -> None:
    """``n`` keys of ``chain`` fewer in MKSKIPPED (``DoubleRatchet.skipped_chains``)."""
    left = chains[chain] - n
    if left:
        chains[chain] = left
    else:
        del chains[chain]


def _uncount(chains: dict[bytes, int], chain: bytes) -> None:
    """One key of ``chain`` fewer in MKSKIPPED (``DoubleRatchet.skipped_chains``)."""
    left = chains[chain] - 1
    if left:
        chains[chain] = left
    else:
        del chains[chain]


def ratchet_step_ahead(
    message: bytes,
    dhs: _p.X25519Pair | None,
    dhr: bytes | None,
    peek: Callable[[int], bytes] | None,
    header_encryption: bool,
) -> list[tuple[Any, ...]]:
    """``DoubleRatchet.exchanges_ahead`` for a ratchet whose sending pair is ``dhs`` and whose
    last received ratchet key is ``dhr`` (a responder's new ratchet: its signed prekey and None).
    An encrypted header (§4) hides the key: nothing then."""
    if header_encryption or dhs is None or len(message) < HEADER_LEN:
        return []
    their = bytes(message[:32])  # the header's first field: the sender's ratchet public key
    if their == dhr:
        return []
    jobs: list[tuple[Any, ...]] = [(_p.AHEAD_DH, dhs.private, their)]
    if peek is not None:
        draw = peek(32)
        jobs.append((_p.AHEAD_BASE, draw))
        jobs.append((_p.AHEAD_DH, draw, their))
    return jobs
