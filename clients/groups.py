"""Sender keys for group messages, as libsignal's ``group_cipher`` and Signal's and WhatsApp's clients use them.

Each member device owns a *sender key* per group: a chain id, a chain key that is ratcheted
forward once per message, and a signing key pair. It hands the chain key and the public signing
key to every other member device (the sender's own linked devices included) in a
``SenderKeyDistributionMessage`` sent over the pairwise Double Ratchet sessions; from then on a
group message costs the sender one encryption, whatever the size of the group, and the relay
(or the sender, with client-side fan-out) copies the same ciphertext to every member device.

Key schedule (libsignal ``rust/protocol/src/sender_keys.rs``: ``SenderChainKey``,
``SenderMessageKey``; also the "sender keys" part of Signal's Sesame-era group design):

    message key seed = HMAC-SHA256(chain key, 0x01)
    next chain key   = HMAC-SHA256(chain key, 0x02)
    HKDF-SHA256(ikm = seed, salt = none, info = "WhisperGroup", 48 bytes) → IV [0:16], key [16:48]
    ciphertext       = AES-256-CBC with PKCS#7 (no MAC: the signature authenticates the message)

Deviations from libsignal, on purpose and documented:

- the signing key is an Ed25519 key pair (RFC 8032), where libsignal uses a Curve25519 key and
  XEdDSA signatures; both give 64-byte signatures over the serialized message;
- the byte layouts are ours (libsignal serializes protobufs behind a version byte):

      SenderKeyMessage             = 0x33 ‖ distribution id (16) ‖ chain id (4) ‖ iteration (4)
                                     ‖ ciphertext ‖ Ed25519 signature (64) over all before it
      SenderKeyDistributionMessage = 0x33 ‖ distribution id (16) ‖ chain id (4) ‖ iteration (4)
                                     ‖ chain key (32) ‖ signing public key (32)

Limits are libsignal's (``consts.rs``): a receiver skips at most 25,000 iterations ahead
(``MAX_FORWARD_JUMPS``), keeps at most 2,000 skipped message keys per sender key
(``MAX_MESSAGE_KEYS``) and at most 5 sender key states per sender (``MAX_SENDER_KEY_STATES``).

Membership. A sender's key is shared with a set of member devices. When a device that holds it is
no longer among the recipients (its account left the group, or the device was unlinked), the
sender starts a new sender key before its next message and distributes that one instead, as
Signal's clients do ("rotation when a member leaves"), so a departed device cannot read what is
sent after it left; a device that joins gets the sender's key as it is now, at its current
iteration, so it reads what is sent after it joined and nothing from before.

A failed decryption (a bad signature, an unknown chain, a replay, a jump over the limit, a bad
padding) raises ``DecryptionError`` and leaves the state exactly as it was. Sans-IO: randomness
comes from the ``rng`` the caller passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relaysim.clients import _primitives as _p
from relaysim.clients.errors import DecryptionError, UsageError
from relaysim.clients.session import PeerAddress
from relaysim.relay.wire import group_state_message

__all__ = [
    "GROUP_INFO",
    "MAX_FORWARD_JUMPS",
    "MAX_MESSAGE_KEYS",
    "MAX_SENDER_KEY_STATES",
    "GroupKeys",
    "GroupStateContents",
    "GroupWriteKey",
    "SenderKeyDistribution",
    "SenderKeyState",
    "group_write_key",
    "open_group_state",
    "parse_sender_key_message",
    "read_group_state",
    "seal_group_state",
    "sender_chain_step",
    "sender_message_key",
    "sign_group_state",
    "write_key_set",
]

RNG = Callable[[int], bytes]

GROUP_INFO = b"WhisperGroup"  # libsignal SenderMessageKey's HKDF info
VERSION = 0x33  # libsignal's SENDERKEY_MESSAGE_CURRENT_VERSION (3) in both nibbles
DISTRIBUTION_ID_LEN = 16
SIGNATURE_LEN = 64
MAX_FORWARD_JUMPS = 25_000
MAX_MESSAGE_KEYS = 2_000
MAX_SENDER_KEY_STATES = 5
_HEADER_LEN = 1 + DISTRIBUTION_ID_LEN + 4 + 4
_SKDM_LEN = _HEADER_LEN + 32 + 32


def sender_chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """libsignal ``SenderChainKey``: (message key seed, next chain key) = HMAC(ck, 0x01), HMAC(ck, 0x02)."""
    return _p.hmac_sha256_pair(chain_key, b"\x01", b"\x02")


def sender_message_key(seed: bytes) -> tuple[bytes, bytes]:
    """libsignal ``SenderMessageKey``: HKDF-SHA256(seed, no salt, "WhisperGroup", 48) → (IV, cipher key)."""
    derived = _p.hkdf_sha256(seed, b"", GROUP_INFO, 48)
    return derived[:16], derived[16:]


@dataclass
class SenderKeyState:
    """One sender key: the chain as far as its holder has got, and the signing key.

    ``signing_private`` is set only on the device that owns (sends with) the key. ``skipped`` maps
    iterations the holder has stepped over to their message key seeds, oldest first.
    """

    chain_id: int
    iteration: int
    chain_key: bytes
    signing_public: bytes
    signing_private: bytes | None = None
    skipped: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def generate(cls, rng: RNG) -> SenderKeyState:
        private = rng(32)
        chain_id = int.from_bytes(rng(4), "big") & 0x7FFFFFFF
        return cls(chain_id, 0, rng(32), _p.ed25519_public(private), private)

    def copy(self) -> SenderKeyState:
        return SenderKeyState(
            self.chain_id,
            self.iteration,
            self.chain_key,
            self.signing_public,
            self.signing_private,
            dict(self.skipped),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "iteration": self.iteration,
            "chain_key": self.chain_key,
            "signing_public": self.signing_public,
            "signing_private": self.signing_private,
            "skipped": [[i, s] for i, s in self.skipped.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SenderKeyState:
        return cls(
            d["chain_id"],
            d["iteration"],
            d["chain_key"],
            d["signing_public"],
            d["signing_private"],
            {i: s for i, s in d["skipped"]},
        )


@dataclass(frozen=True)
class SenderKeyDistribution:
    """A ``SenderKeyDistributionMessage``: what a member needs to read one sender's messages."""

    distribution_id: bytes
    chain_id: int
    iteration: int
    chain_key: bytes
    signing_public: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((VERSION,))
            + self.distribution_id
            + self.chain_id.to_bytes(4, "big")
            + self.iteration.to_bytes(4, "big")
            + self.chain_key
            + self.signing_public
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyDistribution:
        if len(data) != _SKDM_LEN or data[0] != VERSION:
            raise DecryptionError()
        i = 1 + DISTRIBUTION_ID_LEN
        return cls(
            data[1:i],
            int.from_bytes(data[i : i + 4], "big"),
            int.from_bytes(data[i + 4 : i + 8], "big"),
            data[_HEADER_LEN : _HEADER_LEN + 32],
            data[_HEADER_LEN + 32 :],
        )


def parse_sender_key_message(data: bytes) -> tuple[bytes, int, int]:
    """(distribution id, chain id, iteration) of a ``SenderKeyMessage``, unverified. Bad input → DecryptionError."""
    if len(data) < _HEADER_LEN + 16 + SIGNATURE_LEN or data[0] != VERSION:
        raise DecryptionError()
    i = 1 + DISTRIBUTION_ID_LEN
    return data[1:i], int.from_bytes(data[i : i + 4], "big"), int.from_bytes(data[i + 4 : i + 8], "big")


class GroupKeys:
    """One device's sender keys: its own per group, and the ones other member devices gave it."""

    def __init__(self, owner: PeerAddress, rng: RNG = os.urandom) -> None:
        self.owner = owner
        self.rng = rng
        self.own: dict[bytes, SenderKeyState] = {}
        # The member devices our current sender key has been given to, per group.
        self.shared_with: dict[bytes, set[PeerAddress]] = {}
        # Sender keys received, per (group, sender device): newest first, at most MAX_SENDER_KEY_STATES.
        self.received: dict[tuple[bytes, PeerAddress], list[SenderKeyState]] = {}

    # --- the sending side -----------------------------------------------------------------

    def distribution(self, group_id: bytes) -> SenderKeyDistribution:
        """Our current sender key for ``group_id`` as a distribution message (made if there is none)."""
        _check_group_id(group_id)
        state = self.own.get(group_id)
        if state is None:
            state = self.own[group_id] = SenderKeyState.generate(self.rng)
            self.shared_with[group_id] = set()
        return SenderKeyDistribution(
            group_id, state.chain_id, state.iteration, state.chain_key, state.signing_public
        )

    def rotate(self, group_id: bytes) -> SenderKeyDistribution:
        """Start a new sender key for ``group_id``: nobody holds it yet."""
        self.own.pop(group_id, None)
        return self.distribution(group_id)

    def prepare_send(
        self, group_id: bytes, recipients: Iterable[PeerAddress]
    ) -> list[tuple[PeerAddress, SenderKeyDistribution]]:
        """Before a group message to ``recipients`` (every other current member device, our own linked
        devices included): rotate if a device that holds our key is no longer a recipient, and return the
        distribution messages to send, over the pairwise sessions, to the recipients that lack our key.
        They are marked as holding it from now on."""
        wanted = set(recipients) - {self.owner}
        holders = self.shared_with.get(group_id, set())
        if holders - wanted:
            self.rotate(group_id)
        skdm = self.distribution(group_id)
        holders = self.shared_with[group_id]
        missing = sorted(wanted - holders)
        holders.update(missing)
        return [(peer, skdm) for peer in missing]

    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes:
        """One ``SenderKeyMessage`` for every member device. Call ``prepare_send`` first."""
        state = self.own.get(group_id)
        if state is None or state.signing_private is None:
            raise UsageError("no sender key for this group: call prepare_send() or distribution() first")
        seed, next_ck = sender_chain_step(state.chain_key)
        iv, key = sender_message_key(seed)
        body = (
            bytes((VERSION,))
            + group_id
            + state.chain_id.to_bytes(4, "big")
            + state.iteration.to_bytes(4, "big")
            + _p.aes_cbc_encrypt(key, iv, plaintext)
        )
        state.iteration += 1
        state.chain_key = next_ck
        return body + _p.ed25519_sign(state.signing_private, body)

    def leave(self, group_id: bytes) -> None:
        """Forget everything about ``group_id`` (we left it)."""
        self.own.pop(group_id, None)
        self.shared_with.pop(group_id, None)
        for key in [k for k in self.received if k[0] == group_id]:
            del self.received[key]

    def forget_sender(self, group_id: bytes, sender: PeerAddress) -> None:
        """Stop accepting ``sender``'s messages in ``group_id`` (it left, or was unlinked)."""
        self.received.pop((group_id, sender), None)

    # --- the receiving side ---------------------------------------------------------------

    def process(self, sender: PeerAddress, data: bytes) -> None:
        """Take a distribution message that arrived from ``sender`` over our pairwise session with it."""
        skdm = SenderKeyDistribution.from_bytes(data)
        states = self.received.setdefault((skdm.distribution_id, sender), [])
        if any(s.chain_id == skdm.chain_id for s in states):
            return  # a repeat of a key we hold: keep how far we have got along it
        states.insert(0, SenderKeyState(skdm.chain_id, skdm.iteration, skdm.chain_key, skdm.signing_public))
        del states[MAX_SENDER_KEY_STATES:]

    def holds(self, sender: PeerAddress, data: bytes) -> bool:
        """Whether we hold the sender key ``data`` (a ``SenderKeyMessage`` from ``sender``) was made with.
        False for a message whose distribution message has not arrived yet (libsignal's "no sender key
        state"); True for one we can then only reject (a replay, a forgery). Bad input → DecryptionError."""
        group_id, chain_id, _iteration = parse_sender_key_message(data)
        return any(s.chain_id == chain_id for s in self.received.get((group_id, sender), ()))

    def signed(self, sender: PeerAddress, data: bytes) -> bool:
        """Whether ``data`` carries a valid signature by a sender key we hold from ``sender`` (with the
        chain id it names): a message ``sender`` did write, even if we cannot read it (one sent before
        the iteration our copy of the key starts at). Bad input → DecryptionError."""
        group_id, chain_id, _iteration = parse_sender_key_message(data)
        signed, signature = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
        return any(
            s.chain_id == chain_id and _p.ed25519_verify(s.signing_public, signed, signature)
            for s in self.received.get((group_id, sender), ())
        )

    def decrypt(self, sender: PeerAddress, data: bytes) -> tuple[bytes, bytes]:
        """(group id, plaintext) of ``sender``'s ``SenderKeyMessage``. Any failure: ``DecryptionError``,
        with nothing changed."""
        group_id, chain_id, iteration = parse_sender_key_message(data)
        states = self.received.get((group_id, sender), [])
        index = next((i for i, s in enumerate(states) if s.chain_id == chain_id), None)
        if index is None:
            raise DecryptionError()
        original = states[index]
        signed, signature = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
        if not _p.ed25519_verify(original.signing_public, signed, signature):
            raise DecryptionError()
        state = original.copy()
        seed = _message_seed(state, iteration)
        iv, key = sender_message_key(seed)
        try:
            plaintext = _p.aes_cbc_decrypt(key, iv, signed[_HEADER_LEN:])
        except _p.AuthenticationFailed:
            raise DecryptionError() from None
        states[index] = state
        return group_id, plaintext

    # --- state as data --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "own": [
                [g, s.to_dict(), sorted([p.account, p.device] for p in self.shared_with.get(g, ()))]
                for g, s in sorted(self.own.items())
            ],
            "received": [
                [g, p.account, p.device, [s.to_dict() for s in xs]]
                for (g, p), xs in sorted(self.received.items())
            ],
        }


def _message_seed(state: SenderKeyState, iteration: int) -> bytes:
    """The message key seed for ``iteration``, stepping ``state`` (a copy) forward as needed."""
    if iteration < state.iteration:
        seed = state.skipped.pop(iteration, None)
        if seed is None:
            raise DecryptionError()  # a replay, or a key dropped past the limit
        return seed
    if iteration - state.iteration > MAX_FORWARD_JUMPS:
        raise DecryptionError()
    ck = state.chain_key
    while state.iteration < iteration:
        seed, ck = sender_chain_step(ck)
        state.skipped[state.iteration] = seed
        state.iteration += 1
        if len(state.skipped) > MAX_MESSAGE_KEYS:
            del state.skipped[next(iter(state.skipped))]
    seed, state.chain_key = sender_chain_step(ck)
    state.iteration += 1
    return seed


# --- encrypted group state (Signal's groups v2) ------------------------------------------------
#
# Signal's clients keep a group's state (title, members, access rules) on the server encrypted
# under keys derived from a group master key that only members hold (Chase, Perrin and Zaverucha,
# "The Signal Private Group System", CCS 2020; zkgroup's GroupSecretParams, which derives the
# blob key from the master key and encrypts with AES-256-GCM-SIV). Here: the blob key is
# HKDF-SHA256(master key, info "relaysim group state"), 64 bytes, and the state is AES-SIV (RFC
# 5297, also misuse-resistant) over the member list, with the group id and version as associated
# data: the server stores the blob and cannot say who is in the group. The layouts are ours:
#
#     format 2 = version (8) ‖ 0x00 ‖ 0x02
#                ‖ for each member: length (1) ‖ account (UTF-8) ‖ its public write key (32), by account
#     format 1 = version (8) ‖ for each member: length (1) ‖ account (UTF-8), in sorted order
#
# Format 2 holds each member's write key beside its account, as Signal's state holds each member's
# encrypted entry: a member makes the next version, and its key set, from the state alone (the
# newcomer's key is the one thing that comes from outside, from the newcomer). The 0x00 stands where
# format 1's first member's length would be, which is 1 to 255: a client that knows only format 1
# refuses a format-2 state as any malformed one, and format-1 states (sealed before) still open.
#
# Who may overwrite the state. Signal's server accepts a change only from a *current* member: the
# state's member entries are encrypted (the server sees how many there are, and which entry made a
# change, not whose they are), and the uploader presents a zero-knowledge proof that it is the
# member behind one of them (the paper's auth credentials). Here each member has an Ed25519
# **write key** of its own for the group, derived from a secret only it holds and the group's
# master key (``GroupWriteKey.for_member``: the RFC 8032 seed is HKDF-SHA256(ikm = the member's
# secret, salt = master key, info "relaysim group member write key" ‖ group id, 32 bytes), so a
# member's keys for two groups cannot be linked). Every version carries the write keys of its
# members (sorted) and is signed by the uploader's key over ``relay.wire.group_state_message``
# (group id, version, SHA-256 of the blob and of the keys); the relay stores it only when that key
# is among the keys of the version before. A removal (or a leave) leaves the removed member's key
# out, so the master key it still holds lets it read what it could read before, and write nothing.
# The relay learns, as Signal's server does, how many keys a group has and which key made each
# change; not who holds it. The member who adds another puts in the newcomer's public key, which
# the newcomer gives it (the simulation hands it over, as it hands over the master key); every
# other key of the next version comes from the state it opened (``GroupStateContents``), and is
# checked against the set the relay holds (``get_group_state`` returns it), so a key the relay
# added of its own is found before the member signs a version that keeps it.
#
# The first design (still accepted, for states created with it) had one key for the whole group,
# derived from the master key alone (``GroupWriteKey.for_group``: info "relaysim group write
# key"): anyone who once held the master key held it. A member of such a group signs its next
# version with that key and the members' own keys, and from then on the group key is refused.

_STATE_INFO = b"relaysim group state"
_WRITE_INFO = b"relaysim group write key"
_MEMBER_WRITE_INFO = b"relaysim group member write key"


def _state_key(master_key: bytes) -> bytes:
    if len(master_key) != 32:
        raise UsageError(f"a group master key is 32 bytes, not {len(master_key)}")
    return _p.hkdf_sha256(master_key, b"", _STATE_INFO, 64)


_FORMAT_2 = b"\x00\x02"  # after the version: format 2 (each member's write key beside its account)


def seal_group_state(
    master_key: bytes, group_id: bytes, version: int, members: Iterable[str] | Mapping[str, bytes]
) -> bytes:
    """The group's member list, encrypted for the server to hold (it cannot open it). ``members``
    maps each member's account to its public write key (format 2, what a member seals now); a plain
    list of accounts seals format 1, which holds no keys (states sealed before format 2)."""
    _check_group_id(group_id)
    keys = members if isinstance(members, Mapping) else None
    body = version.to_bytes(8, "big") + (b"" if keys is None else _FORMAT_2)
    seen: dict[bytes, str] = {}
    for m, k in (keys or {}).items():
        if type(k) is not bytes or len(k) != 32:
            raise UsageError(f"member {m!r}'s write key must be 32 bytes")
        if k in seen:
            raise UsageError(f"members {seen[k]!r} and {m!r} have the same write key")
        seen[k] = m
    for m in sorted(set(members)):
        raw = m.encode()
        if not 0 < len(raw) < 256:
            raise UsageError(f"a member's account is 1 to 255 bytes, not {len(raw)}: {m!r}")
        body += bytes((len(raw),)) + raw + (b"" if keys is None else keys[m])
    return _p.siv_encrypt(_state_key(master_key), body, group_id + version.to_bytes(8, "big"))


@dataclass(frozen=True)
class GroupStateContents:
    """What a sealed state says: its members, in order, and (format 2) each one's public write key;
    ``write_keys`` is None for a format-1 state, which holds none."""

    members: tuple[str, ...]
    write_keys: Mapping[str, bytes] | None

    def key_set(self) -> tuple[bytes, ...] | None:
        """The state's write keys as the relay holds them (``write_key_set``), or None (format 1)."""
        return None if self.write_keys is None else write_key_set(self.write_keys.values())


def _write_seed(master_key: bytes) -> bytes:
    if len(master_key) != 32:
        raise UsageError(f"a group master key is 32 bytes, not {len(master_key)}")
    return _p.hkdf_sha256(master_key, b"", _WRITE_INFO, 32)


@dataclass(frozen=True)
class GroupWriteKey:
    """An Ed25519 key that signs a group's state versions: a member's own (``for_member``), or the
    first design's one key for the whole group (``for_group``)."""

    seed: bytes = field(repr=False)  # the RFC 8032 private key (seed)

    @classmethod
    def for_member(cls, master_key: bytes, group_id: bytes, member_secret: bytes) -> GroupWriteKey:
        """The write key of the member who holds ``member_secret`` (32 bytes only it has) in the
        group of ``master_key`` and ``group_id``."""
        _check_group_id(group_id)
        if len(master_key) != 32:
            raise UsageError(f"a group master key is 32 bytes, not {len(master_key)}")
        if len(member_secret) != 32:
            raise UsageError(f"a member's write secret is 32 bytes, not {len(member_secret)}")
        return cls(_p.hkdf_sha256(member_secret, master_key, _MEMBER_WRITE_INFO + group_id, 32))

    @classmethod
    def for_group(cls, master_key: bytes) -> GroupWriteKey:
        """The group-wide key of the first design, derived from the master key alone."""
        return cls(_write_seed(master_key))

    @property
    def public(self) -> bytes:
        return _p.ed25519_public(self.seed)

    def sign(
        self, group_id: bytes, version: int, state: bytes, write_keys: Iterable[bytes] | None = None
    ) -> bytes:
        """The signature that lets the relay store ``state`` as ``version`` of ``group_id``'s state
        (and, given, replace its write keys with ``write_keys``, in ``write_key_set`` order), and
        nothing else."""
        _check_group_id(group_id)
        keys = None if write_keys is None else write_key_set(write_keys)
        return _p.ed25519_sign(self.seed, group_state_message(group_id, version, state, keys))


def write_key_set(keys: Iterable[bytes]) -> tuple[bytes, ...]:
    """Write keys as a state upload carries them: sorted, each once."""
    return tuple(sorted(set(keys)))


def group_write_key(master_key: bytes) -> bytes:
    """The first design's group-wide write key (``GroupWriteKey.for_group``), public half."""
    return GroupWriteKey.for_group(master_key).public


def sign_group_state(master_key: bytes, group_id: bytes, version: int, state: bytes) -> bytes:
    """The group-wide key's signature (the first design) over ``state`` as ``version`` of ``group_id``."""
    return GroupWriteKey.for_group(master_key).sign(group_id, version, state)


def open_group_state(master_key: bytes, group_id: bytes, version: int, blob: bytes) -> tuple[str, ...]:
    """The members a sealed state lists; ``DecryptionError`` for a wrong key, group or version."""
    return read_group_state(master_key, group_id, version, blob).members


def read_group_state(master_key: bytes, group_id: bytes, version: int, blob: bytes) -> GroupStateContents:
    """The members a sealed state lists and, format 2, their write keys; ``DecryptionError`` for a
    wrong key, group or version, or a body not laid out as ``seal_group_state`` lays it out."""
    try:
        body = _p.siv_decrypt(_state_key(master_key), blob, group_id + version.to_bytes(8, "big"))
    except Exception:
        raise DecryptionError() from None
    # The blob authenticates, but any member holds the master key and can seal what it likes: the
    # layout is checked as closely as ``seal_group_state`` writes it, and anything else is refused
    # like a blob that does not open (a member's length running past the end, an empty or non-UTF-8
    # account, a version in the body that is not the one bound in as associated data; in format 2 a
    # member whose key is cut short, and two members with one key, which the relay's set, each key
    # once, could not hold).
    if len(body) < 8 or int.from_bytes(body[:8], "big") != version:
        raise DecryptionError()
    keyed = body[8:10] == _FORMAT_2
    members: list[str] = []
    keys: dict[str, bytes] = {}
    i = 10 if keyed else 8
    while i < len(body):
        n = body[i]
        end = i + 1 + n + (32 if keyed else 0)
        if n == 0 or end > len(body):
            raise DecryptionError()
        try:
            account = body[i + 1 : i + 1 + n].decode()
        except UnicodeDecodeError:
            raise DecryptionError() from None
        members.append(account)
        if keyed:
            keys[account] = body[i + 1 + n : end]
        i = end
    if keyed and (len(set(keys.values())) != len(keys) or len(keys) != len(members)):
        raise DecryptionError()
    return GroupStateContents(tuple(members), keys if keyed else None)


def _check_group_id(group_id: bytes) -> None:
    if len(group_id) != DISTRIBUTION_ID_LEN:
        raise UsageError(f"a group's distribution id is {DISTRIBUTION_ID_LEN} bytes, not {len(group_id)}")
