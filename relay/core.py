"""The relay, without I/O: requests in, responses, pushes and metadata records out.

``RelayCore.handle(conn, request)`` runs one request for one connection and returns a list of
outputs:

- :class:`Reply` — the response (or error) for the connection that asked;
- :class:`Push` — a :class:`~relay.wire.Deliver` frame for another connected device;
- :class:`~relay.metadata.MetadataRecord` — what the relay observed while doing it. The same
  observations, reduced by the :class:`~relay.metadata.RetentionPolicy`, are written to the
  store in the same transaction as the state change they describe.

The core never opens a socket, never reads the wall clock and never draws randomness on its
own: ``clock`` and ``rng`` are injected, so the simulator can drive it with a virtual clock
and a seeded generator, and the trio server (``relay.server``) is a thin loop around it.
Envelope bodies are opaque bytes; nothing here parses them.

Authorization rules, all here:

- a device reads and acknowledges only its own queue;
- an authentication challenge is bound to its connection, used once (even when the answer is
  wrong) and expires after ``challenge_ttl`` seconds;
- a new account can be registered by anyone; a device of an existing account only by a
  connection already authenticated as that same device (re-registration) or, for a new device
  id, as another device of the account (linking);
- a sealed send needs the recipient's delivery token, compared in constant time, and an
  unknown account looks exactly like a wrong token;
- an authenticated send must name exactly the recipient's current devices (Signal-Server's
  409 "mismatched devices" and 410 "stale devices", here one ``stale_devices`` error);
- contact discovery, block and unblock need an authenticated connection; an account cannot
  block itself;
- groups with server-side membership (WhatsApp): anyone authenticated creates one and is its first
  admin; only admins add, remove or promote members, and any member may leave; only members read
  the list or send to the group, and a non-member is told the group does not exist; a group send
  names the membership epoch it was encrypted for and is refused (``stale_group``) if the group
  changed since. The relay queues the same body for every device of every member but the
  sender's device, and records one send per recipient device, as for any send;
- encrypted group state (Signal's groups v2): an opaque blob per group id, versioned, stored
  without authentication and without any account: the relay cannot say who is in the group.

What legal process served on the provider can make the relay do, beyond what its retention
policy keeps (all off by default):

- :class:`Tap` (``add_tap``): forward-looking collection. A pen register (``content=False``)
  copies the target's observation records, whole, into ``intercepts`` as they happen; a wiretap
  (``content=True``) also copies the bodies of the envelopes sent — ciphertext, for end-to-end
  traffic. A record the relay made without knowing the target (a sealed send over an
  unauthenticated connection) cannot be tapped by the target's name.
- ``keep_delivered``: acknowledged envelopes move to ``archive`` instead of being deleted, as a
  cloud-chat service keeps messages; ``preserve(account, since)``, a 2703(f) request served at
  ``since``: the same for the account's envelopes held at service, and its metadata made by then
  stops expiring; nothing after service is captured.
- taps and preservation requests are written to the store and reloaded when the relay restarts.
- ``keep_contacts`` / ``keep_blocks``: uploaded address books and blocks are written to the
  store (WhatsApp keeps both); without, discovery answers and forgets and blocks live in memory
  only (Signal keeps neither).
- ``keep_device_facts``: which of a registration's optional facts about the device (its push
  token, device type, app version) are written to the store (Threema keeps the push token; Wickr
  the device type and app version); the rest are dropped as the register is answered.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import os
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, NoReturn, TypeAlias

from relaysim.relay._frozen import quick_init
from relaysim.relay._primitives import ed25519_key_ok, ed25519_verify
from relaysim.relay.certificates import MAX_CERTIFICATE_DEVICE_ID, ServerCertificate
from relaysim.relay.identity import ServerIdentity, XEdDSAPublicKey, verified_ahead
from relaysim.relay.limits import DEFAULT_LIMITS, Limits, Rate, RateLimiter, address_key
from relaysim.relay.metadata import (
    KEEP_EVERYTHING,
    METADATA_SCHEMA,
    MetadataRecord,
    RecordKind,
    RetentionPolicy,
)
from relaysim.relay.store import (
    DEVICE_FACTS,
    DeviceFacts,
    DeviceRecord,
    GroupMemberRecord,
    Store,
    StoredEnvelope,
)
from relaysim.relay.transparency import MerkleLog, SignedTreeHead, TreeHeadSigner
from relaysim.relay.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    ENVELOPE_ID_SIZE,
    KEY_LOG_HEAD_REFRESH,
    MAX_ACCOUNT_LEN,
    MAX_DEVICE_ID,
    MAX_DEVICES_PER_ACCOUNT,
    MAX_GROUP_FANOUT,
    MAX_GROUP_MEMBERS,
    MAX_KEY_LOG_ENTRIES,
    NONCE_SIZE,
    REQUEST_KINDS,
    TOKEN_SIZE,
    Ack,
    Acked,
    AuthChallenge,
    Authenticate,
    Authenticated,
    Block,
    Blocked,
    Bundle,
    Challenge,
    ChangeGroup,
    ContactsFound,
    CreateGroup,
    Deliver,
    DeviceBundle,
    DiscoverContacts,
    Envelope,
    Envelopes,
    ErrorCode,
    ErrorFrame,
    FetchBundle,
    GetGroup,
    GetGroupState,
    GetKeyLogConsistency,
    GetKeyLogEntries,
    GetKeyLogHead,
    GetSenderCertificate,
    GroupInfo,
    GroupMember,
    GroupSend,
    GroupSent,
    GroupState,
    GroupStateStored,
    GroupUpdated,
    KemPrekey,
    KeyInclusion,
    KeyLogConsistency,
    KeyLogEntries,
    KeyLogHead,
    KeyLogHeadResponse,
    KeyLogProof,
    OutgoingEnvelope,
    Ping,
    Pong,
    PrekeysUploaded,
    PutGroupState,
    Receive,
    Register,
    Registered,
    Request,
    Response,
    SealedSend,
    Send,
    SenderCertificateResponse,
    Sent,
    SignedPrekey,
    Unblock,
    Unblocked,
    UploadPrekeys,
    auth_message,
    group_state_message,
    kem_prekey_message,
    kt_leaf,
    prechecked,
    registration_pow_ok,
    signed_prekey_message,
)

__all__ = [
    "METADATA_SCHEMA",
    "TAPPED_KINDS",
    "ConnectionContext",
    "DeviceAddress",
    "MetadataRecord",
    "Output",
    "Push",
    "RelayCore",
    "Reply",
    "RetentionPolicy",
    "Tap",
]

DEFAULT_CHALLENGE_TTL: Final = 30.0  # seconds a challenge stays valid
DEFAULT_CERTIFICATE_TTL: Final = 24 * 3600  # seconds; Signal's sender certificates last about a day
DEFAULT_RECEIVE_LIMIT: Final = 100  # envelopes per receive when the device names no limit

# Room left in a frame around envelope bodies: an Envelope map costs at most ~100 bytes plus
# its source account (see wire.Envelope), a Deliver or Envelopes frame ~64 more. A body may be
# at most max_frame_size - _FRAME_HEADROOM so that it always fits in one Deliver frame.
_ENVELOPE_OVERHEAD: Final = 128
_FRAME_HEADROOM: Final = 256 + 4 * MAX_ACCOUNT_LEN


@quick_init
@dataclass(frozen=True, slots=True)
class DeviceAddress:
    account: str
    device: int

    def __str__(self) -> str:
        return f"{self.account}.{self.device}"


@dataclass(eq=False, slots=True)
class ConnectionContext:
    """One network connection as the core sees it. The core sets ``authenticated``."""

    id: int
    address: tuple[str, int] | None = None  # (host, port) the connection came from
    authenticated: DeviceAddress | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Reply:
    """A frame for the connection that made the request."""

    connection: int
    frame: Response


@quick_init
@dataclass(frozen=True, slots=True)
class Push:
    """A frame for a connected device (``connection`` is one of its live connections)."""

    device: DeviceAddress
    connection: int
    frame: Deliver


Output: TypeAlias = Reply | Push | MetadataRecord

TAPPED_KINDS: Final = frozenset(
    {
        RecordKind.SEND,
        RecordKind.SEALED_SEND,
        RecordKind.DELIVERY,
        RecordKind.CONNECTION,
        RecordKind.AUTHENTICATION,
        RecordKind.DISCONNECT,
        RecordKind.BUNDLE_FETCH,
    }
)
"""The kinds of observation a tap collects (who talked to whom, when, from where)."""
_CONTENT_KINDS: Final = frozenset({RecordKind.SEND, RecordKind.SEALED_SEND})


# Requests whose handlers refuse only before their first write to the store, and whose writes (the
# envelopes queued, the metadata records; an ack's envelopes still waiting are taken back there)
# wait in memory until the transaction commits, or are undone in memory (tests hold them to it):
# each runs without a savepoint of its own (Store.without_savepoint). Should one fail after writing
# to the file after all (an ack of envelopes already in the file), the whole group transaction is
# rolled back.
_REFUSED_BEFORE_WRITING: Final = frozenset({Send, SealedSend, Ack})
# 18 U.S.C. 2703(f)(2): records preserved "shall be retained for a period of 90 days, which shall be
# extended for an additional 90-day period upon a renewed request" (a renewal is a new request here).
PRESERVATION_PERIOD: Final = 90 * 86400.0


def _first_repeat(items: Sequence[object]) -> int | None:
    """The index of the first item that repeats an earlier one, or None."""
    if len(set(items)) == len(items):
        return None
    seen: set[object] = set()
    for i, item in enumerate(items):
        if item in seen:
            return i
        seen.add(item)
    return None  # (unreachable: the lengths differed)


def _check_device_id(device: int) -> None:
    """Refuse to register a device id past MAX_DEVICE_ID (Signal's server and libsignal's DeviceId hold
    1 to 127): such a device could get no sender certificate, and no libsignal client could address it."""
    if device > MAX_DEVICE_ID:
        raise _Refused(
            ErrorCode.INVALID_VALUE,
            f"device {device}: a device id is 1 to {MAX_DEVICE_ID} (Signal's server and libsignal's DeviceId "
            "hold no other)",
            "device",
        )


def _check_key_ids(ids: list[int], field: str) -> None:
    """Refuse an upload that gives one key id twice (the store would keep one of the two, and the
    device believe it had uploaded both)."""
    if (i := _first_repeat(ids)) is not None:
        raise _Refused(
            ErrorCode.INVALID_VALUE,
            f"key id {ids[i]} is given twice; each key its own id",
            f"{field}[{i}].id",
        )


def _check_distinct(accounts: tuple[str, ...], field: str) -> None:
    """Refuse a list of accounts that names one twice (the second is named)."""
    if (i := _first_repeat(accounts)) is not None:
        raise _Refused(ErrorCode.INVALID_VALUE, f"{accounts[i]!r} is named twice", f"{field}[{i}]")


_ABSENT_U: Final = (9).to_bytes(32, "little")  # the X25519 base point: stands in for an absent key

# The answers made on every send and ack, from values already checked (wire.prechecked).
_make_sent: Final = prechecked(Sent)
_make_envelope: Final = prechecked(Envelope)
_make_deliver: Final = prechecked(Deliver)
_make_acked: Final = prechecked(Acked)


def _buffered_ids() -> Iterator[bytes]:
    """Envelope ids from ``os.urandom``, read 256 at a time."""
    size = ENVELOPE_ID_SIZE
    while True:
        block = os.urandom(256 * size)
        for i in range(0, len(block), size):
            yield block[i : i + size]


def _host(conn: ConnectionContext) -> str | None:
    """The connection's address as the limits per address count it (an IPv6 address by its /64)."""
    return address_key(conn.address[0]) if conn.address is not None else None


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True, slots=True)
class Tap:
    """Collection an order compels: from ``start`` (inclusive) to ``end`` (exclusive), relay
    clock seconds, every record of :data:`TAPPED_KINDS` whose ``account`` or
    ``recipient_account`` is ``target`` (None: everyone's) goes to the store's intercepts,
    whatever the retention policy. ``content=True`` (a wiretap rather than a pen register) also
    keeps the body of each envelope sent. Only records made while the tap is in place are
    collected: a tap looks forward, never back."""

    id: str
    target: str | None
    start: float
    end: float
    content: bool

    def __post_init__(self) -> None:
        if type(self.id) is not str or not self.id:
            raise ValueError(f"Tap.id must be a non-empty string, got {self.id!r}")
        if self.target is not None and (type(self.target) is not str or not self.target):
            raise ValueError(f"Tap.target must be an account id or None, got {self.target!r}")
        for name in ("start", "end"):
            if not _is_time(getattr(self, name)):
                raise ValueError(f"Tap.{name} must be a time in seconds, got {getattr(self, name)!r}")
        if not self.start < self.end:
            raise ValueError(f"Tap.end must be after Tap.start, got start={self.start} end={self.end}")
        if type(self.content) is not bool:
            raise ValueError(f"Tap.content must be a bool, got {self.content!r}")

    def covers(self, record: MetadataRecord) -> bool:
        """Whether this tap collects ``record``."""
        return (
            record.kind in TAPPED_KINDS
            and record.time is not None
            and self.start <= record.time < self.end
            and (self.target is None or self.target in (record.account, record.recipient_account))
        )


class _Refused(Exception):
    """A request the relay will not carry out; becomes an error reply, the connection stays."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        *,
        missing: tuple[int, ...] | None = None,
        extra: tuple[int, ...] | None = None,
        stale: tuple[int, ...] | None = None,
        retry_after: float | None = None,
        registration_pow: int | None = None,
    ) -> None:
        super().__init__(message)
        self.registration_pow = registration_pow
        self.code, self.message, self.field = code, message, field
        self.missing, self.extra, self.stale = missing, extra, stale
        self.retry_after_ms = None if retry_after is None else max(1, math.ceil(retry_after * 1000))

    def frame(self, request_id: int) -> ErrorFrame:
        return ErrorFrame(
            id=request_id,
            code=self.code.value,
            message=self.message,
            field=self.field,
            missing=self.missing,
            extra=self.extra,
            stale=self.stale,
            retry_after_ms=self.retry_after_ms,
            registration_pow=self.registration_pow,
        )


@dataclass(slots=True)
class _Pending:
    nonce: bytes
    device: DeviceAddress
    expires: float


class _Out:
    """Outputs of one request, in the order they happened."""

    __slots__ = ("after", "bodies", "items")

    def __init__(self) -> None:  # (plain: one is made per request)
        self.items: list[Output] = []
        self.bodies: dict[bytes, bytes] = {}  # envelope id → body, for wiretaps
        self.after: list[Callable[[], None]] = []  # in-memory changes, on commit

    def record(self, record: MetadataRecord) -> None:
        self.items.append(record)


class RelayCore:
    """The relay's logic. One instance per relay; not thread-safe (one caller at a time)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = os.urandom,
        policy: RetentionPolicy = KEEP_EVERYTHING,
        identity: ServerIdentity | None = None,
        challenge_ttl: float = DEFAULT_CHALLENGE_TTL,
        certificate_ttl: int = DEFAULT_CERTIFICATE_TTL,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        verify_prekey_signatures: bool = True,
        keep_delivered: bool = False,
        keep_contacts: bool = False,
        keep_blocks: bool = False,
        keep_device_facts: Iterable[str] = (),
        limits: Limits = DEFAULT_LIMITS,
        registration_pow: int = 0,
        registration_token: bytes | None = None,
    ) -> None:
        self.store = store
        # What one client may make the relay do (relay.limits), the buckets timed by ``clock``.
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a relay.limits.Limits, got {type(limits).__name__}")
        self.limits = limits
        self._limiter = RateLimiter()
        # What a new account must show (docs/protocol.md, "Registration proof"): a hashcash stamp
        # of ``registration_pow`` leading zero bits (0: none), and/or the operator's token.
        if type(registration_pow) is not int or not 0 <= registration_pow <= 32:
            raise ValueError(
                f"registration_pow must be a number of bits from 0 to 32, got {registration_pow!r}"
            )
        self.registration_pow = registration_pow
        if registration_pow and registration_token is not None:
            raise ValueError(
                "registration_pow and registration_token: choose one (Register has one proof field)"
            )
        self.registration_token = registration_token
        # Verified against when a challenged device does not exist, so that "no such device" costs
        # what "wrong signature" costs (the X25519 base point, u = 9, converted the same way).
        self._absent_key = XEdDSAPublicKey.from_x25519((9).to_bytes(32, "little"))
        self.clock = clock
        self.rng = rng
        # Envelope ids: from the system's CSPRNG, 256 at a time (one getrandom call instead of one
        # per envelope); a given rng (a seeded simulation's) is asked for each, as for everything.
        self._envelope_id: Callable[[], bytes] = (
            _buffered_ids().__next__ if rng is os.urandom else partial(rng, ENVELOPE_ID_SIZE)
        )
        self.policy = policy
        self.challenge_ttl = challenge_ttl
        self.certificate_ttl = certificate_ttl
        self.max_frame_size = max_frame_size
        self.max_body_size = max_frame_size - _FRAME_HEADROOM
        if self.max_body_size <= 0:
            raise ValueError(f"max_frame_size {max_frame_size} leaves no room for an envelope body")
        # Checking prekey signatures is what Signal-Server does; a large simulation that trusts its
        # own devices may turn it off (it is most of the cost of a registration).
        self.verify_prekey_signatures = verify_prekey_signatures
        self.keep_delivered = keep_delivered
        self.keep_contacts = keep_contacts
        self.keep_blocks = keep_blocks
        self.keep_device_facts = frozenset(keep_device_facts)
        if not self.keep_device_facts <= DEVICE_FACTS:
            unknown = ", ".join(sorted(self.keep_device_facts - DEVICE_FACTS))
            raise ValueError(
                f"keep_device_facts: unknown fact(s) {unknown}; known: {', '.join(sorted(DEVICE_FACTS))}"
            )
        # Orders in effect are in the store too, and come back from it when the relay restarts.
        self._taps: dict[str, Tap] = {t[0]: Tap(*t) for t in store.taps()}
        self._preserved: dict[str, tuple[float, ...]] = {}  # account → when each request was served
        for account, served in store.preservations():
            self._preserved[account] = (*self._preserved.get(account, ()), served)
        # Blocks are enforced from memory; with keep_blocks they are also in the store (and
        # come back from it when the relay restarts).
        self._blocks: dict[str, dict[str, float]] = {}  # blocker → {blocked: since}
        if keep_blocks:
            for account, blocked, since in store.all_blocks():
                self._blocks.setdefault(account, {})[blocked] = since
        # group → {member → the group's size}, as counted for a member's request that reads the
        # members (_limit_members_read); dropped on every change of the group. Only so that a request
        # its bucket cannot pay for is refused without the group being counted again.
        self._member_counts: dict[bytes, dict[str, tuple[int, bool]]] = {}
        self.identity = identity if identity is not None else self._load_identity()
        # Key transparency (relay/transparency.py): every (account, device, identity key) the relay
        # has served, in an append-only Merkle log kept in the store, its heads signed by the
        # server key. One signed head per tree size, signed when first asked for and again with the
        # time now once it is older than KEY_LOG_HEAD_REFRESH (key_log_head). Heads are not stored: a
        # restarted relay signs its heads afresh, at its clock's time then, but never earlier than the
        # latest time it signed before, which is stored (Store.key_log_head_time).
        self.key_log = MerkleLog(store.key_log())
        self._key_log_index = {leaf: i for i, leaf in enumerate(self.key_log.leaves())}
        self._tree_head_signer = TreeHeadSigner(self.identity.server_private)
        self._tree_heads: dict[int, SignedTreeHead] = {}
        self._head_signed_at = store.key_log_head_time()  # the latest signed into a head (never back)
        # (size, root) of the tree signed last at _head_signed_at; None when not known (a restart): a
        # head of another tree gets a later time than every head before it (_sign_head)
        self._head_signed_tree: tuple[int, bytes] | None = None
        # How to undo each head signed in the request being handled (its cache entry, and the signing
        # time, whose note in the store the request's rollback undoes): handle runs them if it fails.
        self._heads_undo: list[Callable[[], None]] = []
        # Split views (split_key_log): per account, the leaves hidden from it, its view, and its heads.
        self._key_log_splits: dict[str, frozenset[bytes]] = {}
        self._split_logs: dict[str, tuple[MerkleLog, int]] = {}  # the view, and how much of the log it covers
        self._split_heads: dict[tuple[int, bytes], SignedTreeHead] = {}
        self._challenges: dict[int, _Pending] = {}  # by connection id: one outstanding each
        # (account, device) → its authenticated connections by id: a plain tuple key, hashed in C (a
        # lookup per envelope routed); every connection in an entry is authenticated as its key.
        self._online: dict[tuple[str, int], dict[int, ConnectionContext]] = {}
        # One handler per request kind, named after it: _register, _send, ... (checked here).
        self._handlers: dict[type[Request], Callable[[ConnectionContext, Any, _Out], None]] = {
            cls: getattr(self, f"_{kind}") for kind, cls in REQUEST_KINDS.items()
        }

    def provision_device(self, req: Register) -> Registered:
        """Write the device ``req`` describes straight into its account, as only the provider can.

        No connection, no authentication by any of the account's devices, no signature check and
        no metadata record: what a provider compelled to add a "ghost" device to an account does
        (the simulator's ``sims.access.ghost``). Returns what a registering device would be told.
        """
        if not self.store.account_exists(req.account):
            raise ValueError(f"no account {req.account!r} to add device {req.device} to")
        if req.device > MAX_DEVICE_ID:  # (as a registration: _check_device_id)
            raise ValueError(f"device {req.device} cannot be added: a device id is 1 to {MAX_DEVICE_ID}")
        existing = self.store.device_ids(req.account)
        if req.device not in existing and len(existing) >= MAX_DEVICES_PER_ACCOUNT:
            # The limit a registration meets (too_many_devices) holds for the provider too: a bundle,
            # and a send to every device of an account, hold at most this many.
            raise ValueError(
                f"account {req.account!r} has {len(existing)} devices, the most one account may have: "
                f"device {req.device} cannot be added"
            )
        with self.store.transaction():
            self._put_registered_device(req, self.clock())
            logged = self._log_key(req.account, req.device, req.identity_key)
        logged()
        return Registered(id=req.id, account=req.account, device=req.device)

    def _put_registered_device(self, req: Register, at: float) -> None:
        """Store a device as a register request gives it, with its one-time and KEM prekeys (a device
        that registers itself, or one a compelled provider adds: provision_device)."""
        self.store.put_device(
            DeviceRecord(
                account=req.account,
                device=req.device,
                registration_id=req.registration_id,
                identity_key=req.identity_key,
                signed_prekey=req.signed_prekey,
                last_resort_kem_prekey=req.last_resort_kem_prekey,
                registered_at=at,
            )
        )
        self.store.replace_prekeys(req.account, req.device, req.one_time_prekeys)
        self.store.replace_kem_prekeys(req.account, req.device, req.kem_prekeys)
        self.store.put_device_signature(req.account, req.device, req.device_signature)
        kept = DeviceFacts(
            **{
                name: getattr(req, name) if name in self.keep_device_facts else None
                for name in sorted(DEVICE_FACTS)
            }
        )
        if kept:
            self.store.put_device_facts(req.account, req.device, kept, at)

    # -- key transparency --------------------------------------------------------------------

    def _log_key(self, account: str, device: int, identity_key: bytes) -> Callable[[], None]:
        """Write (account, device, identity key) to the stored key log, unless it is there already.

        Returns what adds it to the in-memory log: call it once the store's transaction has
        committed, so that a rolled-back registration leaves neither log changed."""
        leaf = kt_leaf(account, device, identity_key)
        if leaf in self._key_log_index:
            return lambda: None
        index = len(self.key_log)
        self.store.append_key_log(index, leaf)

        def commit() -> None:
            self.key_log.append(leaf)
            self._key_log_index[leaf] = index

        return commit

    def key_log_head(self, size: int | None = None) -> SignedTreeHead:
        """The signed head of the key log at ``size`` leaves (now: all of them): the one signed for that
        size, or, once that one is older than ``KEY_LOG_HEAD_REFRESH`` by the relay's clock, the same
        root signed again with the time now (RFC 6962 §3.5), so that no head served is older than that."""
        n = len(self.key_log) if size is None else size
        head = self._tree_heads.get(n)
        if head is None or self._stale(head):
            head = self._sign_head(self.key_log, n, self._tree_heads, n)
        return head

    def _stale(self, head: SignedTreeHead) -> bool:
        return self.clock() - head.timestamp > KEY_LOG_HEAD_REFRESH

    def _sign_head(
        self, log: MerkleLog, size: int, cache: dict[Any, SignedTreeHead], key: object
    ) -> SignedTreeHead:
        """A head over ``log`` at ``size`` leaves, kept in ``cache`` under ``key``, timestamped now by the
        relay's clock, in whole seconds: never before a head signed earlier (RFC 6962 §3.5: "each
        subsequent timestamp MUST be more recent"), should the clock step back, which devices would take
        for an old head replayed; and, for a tree other than the one signed last, strictly after it —
        a second later than that one if the clock has not passed it (two trees signed in one second,
        or a restart: the tree signed last is not known then), since a device refuses a head of
        another tree with the time of one it took (clients.transparency.check_fresh). That time goes in
        the store with the request that signs the head, so that it holds across a restart too: a head
        is served only once its request has committed, and should the request fail, ``handle`` takes
        the head out of ``cache`` again and the time back (``_heads_undo``), as the store does."""
        tree = (size, log.root(size))
        at = max(self._head_signed_at, int(self.clock()))
        if at == self._head_signed_at and tree != self._head_signed_tree:
            at += 1
        before = (self._head_signed_at, self._head_signed_tree, cache.get(key))

        def undo() -> None:
            self._head_signed_at, self._head_signed_tree, cached = before
            if cached is None:
                cache.pop(key, None)
            else:
                cache[key] = cached

        self._heads_undo.append(undo)
        self._head_signed_at, self._head_signed_tree = at, tree
        with self.store.transaction():
            self.store.note_key_log_head_time(at)
        head = cache[key] = self._tree_head_signer.sign(log, at, size)
        return head

    def key_log_inclusion(
        self, account: str, device: int, identity_key: bytes, size: int | None = None
    ) -> tuple[int, list[bytes]] | None:
        """(leaf index, audit path) of this key in the log at ``size`` leaves; None if it is not there."""
        index = self._key_log_index.get(kt_leaf(account, device, identity_key))
        n = len(self.key_log) if size is None else size
        if index is None or index >= n:
            return None
        return index, self.key_log.inclusion_path(index, n)

    def _key_log_proof(
        self, account: str, devices: list[DeviceRecord], conn: ConnectionContext | None = None
    ) -> KeyLogProof:
        """The head and each device's inclusion proof, for a bundle (FetchBundle.key_log), from the log
        ``conn`` is shown (``split_key_log``)."""
        log = self.key_log if conn is None else self._key_log_shown(conn)
        head = self._shown_head(log)
        inclusions = []
        for d in devices:
            if log is self.key_log:
                found = self.key_log_inclusion(account, d.device, d.identity_key, head.tree_size)
            else:
                leaf = kt_leaf(account, d.device, d.identity_key)
                at = next((i for i in range(len(log)) if log.leaf(i) == leaf), None)
                found = None if at is None else (at, log.inclusion_path(at))
            if found is not None:  # a key the relay did not log gets no proof: the device sees that
                inclusions.append(KeyInclusion(device=d.device, leaf_index=found[0], path=tuple(found[1])))
        return KeyLogProof(
            head=_wire_head(head),
            server_certificate=self.identity.server_certificate.encode(),
            inclusions=tuple(inclusions),
        )

    def key_log_consistency(self, first: int, second: int | None = None) -> list[bytes]:
        """The consistency proof between the log's heads at ``first`` and ``second`` leaves."""
        return self.key_log.consistency_proof(first, second)

    # -- key transparency over the wire (get_key_log_head / _consistency / _entries) -------------

    def split_key_log(self, account: str, hidden: Iterable[bytes]) -> None:
        """Show ``account``'s authenticated connections the key log without the leaves ``hidden``
        (and, from then on, without them in any size): a split view, what a provider compelled to
        hide a ghost device from its target would do. Its heads are signed with the same server key.
        The bundles' proofs, heads, entries and consistency proofs that account is given all come
        from that view; everyone else keeps seeing the log. An empty ``hidden`` ends it."""
        leaves = frozenset(hidden)
        if leaves:
            self._key_log_splits[account] = leaves
        else:
            self._key_log_splits.pop(account, None)
        self._split_logs.pop(account, None)

    def _key_log_shown(self, conn: ConnectionContext) -> MerkleLog:
        """The key log as this connection is shown it (relay.core.RelayCore.split_key_log)."""
        account = conn.authenticated.account if conn.authenticated else None
        hidden = self._key_log_splits.get(account) if account is not None else None
        if hidden is None or account is None:
            return self.key_log
        view, seen = self._split_logs.get(account, (MerkleLog(), 0))
        for i in range(seen, len(self.key_log)):  # bring the view up to the log, as it grew since
            if self.key_log.leaf(i) not in hidden:
                view.append(self.key_log.leaf(i))
        self._split_logs[account] = (view, len(self.key_log))
        return view

    def _shown_head(self, log: MerkleLog, size: int | None = None) -> SignedTreeHead:
        if log is self.key_log:
            return self.key_log_head(size)
        n = len(log) if size is None else size
        root = log.root(n)
        head = self._split_heads.get((n, root))
        if head is None or self._stale(head):  # a split view's heads are kept as fresh as the log's
            head = self._sign_head(log, n, self._split_heads, (n, root))
        return head

    def _get_key_log_head(self, conn: ConnectionContext, req: GetKeyLogHead, out: _Out) -> None:
        # The key log's reads need no login: bounded by the address's own bucket (Limits.key_log_per_address).
        self._limit("get_key_log_head", conn, ("key_log_per_address", _host(conn)))
        head = self._shown_head(self._key_log_shown(conn))
        out.items.append(
            Reply(
                conn.id,
                KeyLogHeadResponse(
                    id=req.id,
                    head=_wire_head(head),
                    server_certificate=self.identity.server_certificate.encode(),
                ),
            )
        )

    def _get_key_log_consistency(self, conn: ConnectionContext, req: GetKeyLogConsistency, out: _Out) -> None:
        self._limit("get_key_log_consistency", conn, ("key_log_per_address", _host(conn)))
        log = self._key_log_shown(conn)
        if req.second > len(log):
            raise _Refused(
                ErrorCode.INVALID_VALUE,
                f"second tree size {req.second} is beyond the key log's {len(log)} entries",
                "second",
            )
        if req.second < req.first:  # RFC 9162 §5.3's secondBeforeFirst: "second" is smaller than "first"
            raise _Refused(
                ErrorCode.INVALID_VALUE,
                f"second tree size {req.second} is below first ({req.first})",
                "second",
            )
        proof = tuple(log.consistency_proof(req.first, req.second))
        out.items.append(
            Reply(conn.id, KeyLogConsistency(id=req.id, first=req.first, second=req.second, proof=proof))
        )

    def _get_key_log_entries(self, conn: ConnectionContext, req: GetKeyLogEntries, out: _Out) -> None:
        self._limit("get_key_log_entries", conn, ("key_log_per_address", _host(conn)))
        log = self._key_log_shown(conn)
        if req.start >= len(log):
            raise _Refused(
                ErrorCode.INVALID_VALUE,
                f"start {req.start} is beyond the key log's {len(log)} entries",
                "start",
            )
        if req.end < req.start:
            raise _Refused(ErrorCode.INVALID_VALUE, f"end {req.end} is below start ({req.start})", "end")
        end = min(req.end + 1, len(log), req.start + MAX_KEY_LOG_ENTRIES)
        entries: list[bytes] = []
        room = self.max_frame_size - _FRAME_HEADROOM  # the answer fits one frame; the client asks on
        for i in range(req.start, end):
            leaf = log.leaf(i)
            room -= len(leaf) + 3  # a msgpack bin header
            if room < 0 and entries:
                break
            entries.append(leaf)
        out.items.append(Reply(conn.id, KeyLogEntries(id=req.id, start=req.start, entries=tuple(entries))))

    def forge_envelope(
        self,
        account: str,
        device: int,
        body: bytes,
        *,
        sealed: bool,
        source_account: str | None = None,
        source_device: int | None = None,
    ) -> tuple[bytes, list[Output]]:
        """Queue an envelope no device sent, labelled as the relay likes, and push it to the recipient
        if it is online: what a malicious (or compelled) relay can always do (the simulator's
        ``sims.access.identity_swap``). No metadata record. Returns the envelope id and the pushes."""
        stored = StoredEnvelope(
            id=self._envelope_id(),
            account=account,
            device=device,
            body=body,
            timestamp=int(self.clock() * 1000),
            sealed=sealed,
            source_account=None if sealed else source_account,
            source_device=None if sealed else source_device,
        )
        self.store.enqueue([stored])
        address = DeviceAddress(account, device)
        pushes: list[Output] = [
            Push(address, target.id, Deliver(id=0, envelope=stored.to_wire()))
            for target in self._online.get((account, device), {}).values()
        ]
        return stored.id, pushes

    def _load_identity(self) -> ServerIdentity:
        saved = self.store.server_identity()
        if saved is not None:
            private, certificate, root = saved
            return ServerIdentity(private, ServerCertificate.decode(certificate), root)
        identity = ServerIdentity.generate(self.rng)
        with self.store.transaction():
            self.store.save_server_identity(
                identity.server_certificate.key_id,
                identity.server_private,
                identity.server_certificate.encode(),
                identity.trust_root_public,
            )
        return identity

    @property
    def trust_root_public(self) -> bytes:
        """What devices must be given out of band to check sender certificates."""
        return self.identity.trust_root_public

    def online(self, device: DeviceAddress) -> list[int]:
        """Ids of the connections authenticated as ``device``."""
        return list(self._online.get((device.account, device.device), ()))

    # -- connection lifecycle ----------------------------------------------------------------

    def connect(self, conn: ConnectionContext) -> list[Output]:
        return self._note(self._observe(RecordKind.CONNECTION, conn, None))

    def disconnect(self, conn: ConnectionContext) -> list[Output]:
        self._challenges.pop(conn.id, None)
        who = conn.authenticated
        if who is not None:
            key = (who.account, who.device)
            live = self._online.get(key)
            if live is not None:
                live.pop(conn.id, None)
                if not live:
                    del self._online[key]
        outputs = self._note(self._observe(RecordKind.DISCONNECT, conn, conn.authenticated))
        conn.authenticated = None
        return outputs

    def handle(self, conn: ConnectionContext, request: Request) -> list[Output]:
        """Carry out one request. Refusals become an error Reply; state is left unchanged."""
        handler = self._handlers.get(type(request))
        if handler is None:
            raise TypeError(f"not a request the relay handles: {type(request).__name__}")
        out = _Out()
        store = self.store
        if self._heads_undo:  # heads signed before this request (or outside one) stay as they are
            self._heads_undo.clear()
        try:
            with (
                store.without_savepoint() if type(request) in _REFUSED_BEFORE_WRITING else store.transaction()
            ):
                handler(conn, request, out)
                self._write_records(out.items, out.bodies)
        except _Refused as refused:
            if self._heads_undo:
                self._unsign_heads()
            return [Reply(conn.id, refused.frame(request.id))]
        except BaseException:
            if self._heads_undo:
                self._unsign_heads()
            raise
        for apply in out.after:
            apply()
        return out.items

    def _unsign_heads(self) -> None:
        """Undo the heads signed in a request that failed (its transaction rolled back, and with it the
        time noted in the store): none was served, and none may be served from the cache now, with a
        time the store does not hold (a restart could sign an earlier one)."""
        undo = self._heads_undo
        while undo:
            undo.pop()()

    def reload(self) -> None:
        """Read again what this core keeps in memory beside its store: the key log (and sign its heads
        afresh) and, where kept, the blocks. For after a transaction the store rolled back
        whole — a group COMMIT that failed (a full disk, say): the requests in it were handled, and
        their in-memory effects applied, before it failed, and none of them is in the store.
        Without this a registration undone so would leave its key in the in-memory log, and the
        next one would be refused its leaf (the stored log being a leaf shorter) until a restart."""
        leaves = self.store.key_log()
        self.key_log = MerkleLog(leaves)
        self._key_log_index = {leaf: i for i, leaf in enumerate(leaves)}
        # The heads signed too: the time noted with one signed in the transaction rolled back is gone
        # from the store, and one served again must be signed, and its time noted, again.
        self._tree_heads.clear()
        self._split_heads.clear()
        self._split_logs.clear()  # (each view is made again from the log when next asked for)
        if self.keep_blocks:
            self._blocks = {}
            for account, blocked, since in self.store.all_blocks():
                self._blocks.setdefault(account, {})[blocked] = since
        self._member_counts.clear()  # (counted, maybe, inside the transaction undone)

    def expire(self) -> int:
        """Apply the policy's retention periods now; returns how many records were deleted.
        Records of accounts under a preservation request in effect are kept."""
        now = self.clock()
        with self.store.transaction():
            return self.store.expire_metadata(now, self.policy, exempt=self._frozen_at(now))

    # -- lawful access -----------------------------------------------------------------------

    @property
    def taps(self) -> Mapping[str, Tap]:
        """The taps in place, by id (a read-only view)."""
        return types.MappingProxyType(self._taps)

    def add_tap(self, tap: Tap) -> None:
        """Start collecting for ``tap`` (from the next observation on; nothing earlier)."""
        if not isinstance(tap, Tap):
            raise TypeError(f"tap must be a Tap, got {type(tap).__name__}")
        if tap.id in self._taps:
            raise ValueError(f"Tap.id {tap.id!r} is already in place; remove it first")
        with self.store.transaction():
            self.store.save_tap(tap.id, tap.target, tap.start, tap.end, tap.content)
        self._taps[tap.id] = tap

    def remove_tap(self, tap_id: str) -> Tap:
        """Stop the tap; what it collected stays in the store's intercepts."""
        if tap_id not in self._taps:
            raise KeyError(f"no tap with id {tap_id!r}")
        with self.store.transaction():
            self.store.delete_tap(tap_id)
        return self._taps.pop(tap_id)

    @property
    def preservations(self) -> Mapping[str, tuple[float, ...]]:
        """Accounts under a preservation request, and when each request was served (read-only)."""
        return types.MappingProxyType(self._preserved)

    def preserve(self, account: str, since: float) -> None:
        """A preservation request (18 U.S.C. 2703(f)) served at ``since``: what is held at that
        moment is frozen — envelopes to or from ``account`` accepted by then are archived when
        acknowledged instead of deleted, and metadata records naming it (as ``account`` or
        ``recipient_account``) made by then are exempt from :meth:`expire`. Nothing accepted or
        recorded after service is captured (a request preserves records "in its possession";
        "prospective preservation" is a contested practice, not this). Sealed envelopes from the
        account are covered only when the relay knew the sender. The request is kept in the store:
        a relay that restarts still honours it — for PRESERVATION_PERIOD (90 days, 18 U.S.C.
        2703(f)(2)) from service; a renewal is a new request."""
        if type(account) is not str or not account:
            raise ValueError(f"account must be a non-empty string, got {account!r}")
        if not _is_time(since):
            raise ValueError(f"since must be a time in seconds, got {since!r}")
        if since in self._preserved.get(account, ()):
            return
        with self.store.transaction():
            self.store.add_preservation(account, since)
        self._preserved[account] = tuple(sorted((*self._preserved.get(account, ()), since)))

    def _frozen_at(self, now: float) -> dict[str, float]:
        """Account → the latest service, by ``now``, of a preservation request on it: what was held
        then is frozen (and, by the requests before it, what was held at each earlier service is
        still held)."""
        frozen = {}
        for account, served in self._preserved.items():
            in_effect = [s for s in served if s <= now < s + PRESERVATION_PERIOD]
            if in_effect:
                frozen[account] = in_effect[-1]
        return frozen

    def blocked_by(self, account: str) -> Mapping[str, float]:
        """Whom ``account`` blocks, and since when, as the relay enforces it (kept or not)."""
        return types.MappingProxyType(self._blocks.get(account, {}))

    # -- helpers -----------------------------------------------------------------------------

    def _note(self, record: MetadataRecord) -> list[Output]:
        """Store one observation made outside a request (connection opened or closed)."""
        with self.store.transaction():
            self._write_records([record])
        return [record]

    def _write_records(self, outputs: list[Output], bodies: Mapping[bytes, bytes] | None = None) -> None:
        """The observations among ``outputs``, as the policy reduces them, into the store; and,
        whole, into the intercepts of every tap that covers them (``bodies`` by envelope id)."""
        policy = self.policy
        records = [o for o in outputs if type(o) is MetadataRecord]
        if not records:
            return
        whole = policy.appended_whole
        for r in records:
            if r.kind not in whole:
                kept = []
                for record in records:
                    reduced = policy.apply(record)
                    if reduced is not None:
                        kept.append((reduced, policy.rules[record.kind]))
                if kept:
                    self.store.append_metadata(kept)
                break
        else:  # the common case: each written as it is
            self.store.append_records(records)
        if self._taps:
            intercepted = [row for record in records for row in self._intercept(record, bodies or {})]
            if intercepted:
                self.store.append_intercepts(intercepted)

    def _intercept(
        self, record: MetadataRecord, bodies: Mapping[bytes, bytes]
    ) -> Iterable[tuple[str, MetadataRecord, bytes | None]]:
        for tap in self._taps.values():
            if tap.covers(record):
                body = None
                if tap.content and record.kind in _CONTENT_KINDS and record.envelope_id is not None:
                    body = bodies.get(record.envelope_id)
                yield tap.id, record, body

    def _observe(
        self,
        kind: RecordKind,
        conn: ConnectionContext,
        who: DeviceAddress | None,
        *,
        now: float | None = None,
        recipient_account: str | None = None,
        recipient_device: int | None = None,
        envelope_id: bytes | None = None,
        size: int | None = None,
        count: int | None = None,
    ) -> MetadataRecord:
        """A record of what ``conn`` did, ``who`` being the device the relay knows it as."""
        address = conn.address
        # Positional, in MetadataRecord's field order (a record per send, delivery and ack).
        return MetadataRecord(
            kind,
            self.clock() if now is None else now,
            conn.id,
            address[0] if address is not None else None,
            address[1] if address is not None else None,
            who.account if who is not None else None,
            who.device if who is not None else None,
            recipient_account,
            recipient_device,
            envelope_id,
            size,
            count,
        )

    @staticmethod
    def _require_auth(conn: ConnectionContext, what: str) -> DeviceAddress:
        if conn.authenticated is None:
            raise _Refused(
                ErrorCode.NOT_AUTHENTICATED,
                f"{what} needs an authenticated connection: send auth_challenge, then authenticate",
            )
        return conn.authenticated

    def _my_device(self, conn: ConnectionContext, what: str) -> DeviceRecord:
        me = self._require_auth(conn, what)
        device = self.store.device(me.account, me.device)
        assert device is not None, "devices are replaced, never deleted, so an authenticated one exists"
        return device

    def _limit(
        self, what: str, conn: ConnectionContext, *buckets: tuple[str, object], cost: float = 1.0
    ) -> None:
        """Take a token (or ``cost`` tokens) from each named bucket (a Limits field, keyed), or refuse
        with rate_limited and the wait, taking none; the refusal's ``field`` is the bucket's name (the
        Limits field) that refused it. A None key (no account, no address) is not limited."""
        now = self.clock()
        limits = self.limits
        chosen = [(name, key, getattr(limits, name)) for name, key in buckets if key is not None]
        refused = self._limiter.take_all(chosen, now, cost)  # each bucket computed once (relay.limits)
        if refused is not None:
            raise _rate_limited(what, *refused)

    def _short_of(self, what: str, buckets: tuple[tuple[str, object], ...], cost: float) -> None:
        """Refuse as :meth:`_limit` would (the same bucket named, the same wait) if a bucket has fewer
        than ``cost`` tokens now; take none either way."""
        now = self.clock()
        for name, key in buckets:
            rate = getattr(self.limits, name)
            if key is not None and rate is not None:
                wait = self._limiter.wait(name, key, rate, now, cost)
                if wait > 0:
                    raise _rate_limited(what, name, rate, wait)

    def _check_queue_room(self, to: str, envelopes: tuple[OutgoingEnvelope, ...]) -> None:
        max_count, max_bytes = self.limits.queue_envelopes, self.limits.queue_bytes
        if max_count is None and max_bytes is None:
            return
        for i, e in enumerate(envelopes):
            count, size = self.store.queue_size(to, e.device)
            if (max_count is not None and count + 1 > max_count) or (
                max_bytes is not None and size + len(e.body) > max_bytes
            ):
                raise _Refused(
                    ErrorCode.RECIPIENT_QUEUE_FULL,
                    f"device {to}.{e.device} has {count} envelopes ({size} bytes) waiting, the most this relay "
                    f"holds for one device is {max_count} envelopes / {max_bytes} bytes; retry once it has "
                    "received them",
                    f"envelopes[{i}]",
                )

    def _prekeys_low(self, device: DeviceAddress) -> int | None:
        """The device's one-time prekeys left, if fewer than ``limits.prekeys_low``; else None."""
        if not self.limits.prekeys_low:
            return None
        left = self.store.prekeys_left(device.account, device.device)
        return left if left < self.limits.prekeys_low else None

    def _check_registration_proof(self, req: Register) -> None:
        if self.registration_token is not None and not (
            req.proof is not None and hmac.compare_digest(req.proof, self.registration_token)
        ):
            raise _Refused(
                ErrorCode.REGISTRATION_PROOF,
                "a new account on this relay needs the operator's registration token in proof",
                "proof",
            )
        if self.registration_pow and not (
            req.proof is not None
            and registration_pow_ok(req.account, req.identity_key, req.proof, self.registration_pow)
        ):
            raise _Refused(
                ErrorCode.REGISTRATION_PROOF,
                f"a new account on this relay needs proof: a stamp such that SHA-256(registration_pow_message"
                f"(account, identity_key) + proof) starts with {self.registration_pow} zero bits",
                "proof",
                registration_pow=self.registration_pow,
            )

    def _token_matches(self, account: str, token: bytes) -> bool:
        stored = self.store.delivery_token(account)
        # Compare against a dummy when there is no token, so that an unknown account costs the
        # same as a wrong token.
        expected = stored if stored is not None else bytes(TOKEN_SIZE)
        return hmac.compare_digest(expected, token) and stored is not None

    def _check_signed_prekeys(
        self,
        identity_key: bytes,
        signed: SignedPrekey | None,
        kem: tuple[KemPrekey, ...],
        last_resort: KemPrekey | None,
    ) -> None:
        if not self.verify_prekey_signatures:
            return
        checks: list[tuple[str, bytes, bytes]] = []
        if signed is not None:
            checks.append(("signed_prekey.signature", signed_prekey_message(signed.public), signed.signature))
        if last_resort is not None:
            checks.append(
                (
                    "last_resort_kem_prekey.signature",
                    kem_prekey_message(last_resort.public),
                    last_resort.signature,
                )
            )
        for i, k in enumerate(kem):
            checks.append((f"kem_prekeys[{i}].signature", kem_prekey_message(k.public), k.signature))
        if verified_ahead([(identity_key, message, signature) for _name, message, signature in checks]):
            return  # (a simulation's: every one checked ahead on another core, relay.identity)
        key = XEdDSAPublicKey.from_x25519(identity_key)
        if key is None:
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                "identity_key is not a usable X25519 public key (no Edwards form), so nothing it signs can verify",
                "identity_key",
            )
        for name, message, signature in checks:
            if not key.verify(message, signature):
                raise _Refused(
                    ErrorCode.BAD_SIGNATURE,
                    f"{name} is not the identity key's XEdDSA signature over the key",
                    name,
                )

    # -- handlers ----------------------------------------------------------------------------

    def _register(self, conn: ConnectionContext, req: Register, out: _Out) -> None:
        # first: a refusal for the request's own device id and lists says nothing about the account
        _check_device_id(req.device)
        _check_key_ids([k.id for k in req.one_time_prekeys], "one_time_prekeys")
        _check_key_ids([k.id for k in req.kem_prekeys], "kem_prekeys")
        target = DeviceAddress(req.account, req.device)
        me = conn.authenticated
        if me is None or me.account != req.account:
            # Creating an account, or trying to: the same checks, in the same order, whether or not
            # it exists, so that a refusal says nothing about it until the proof, the rate and the
            # signatures are good (and then only "it exists", what anyone could learn by trying).
            self._check_registration_proof(req)
            self._limit("register", conn, ("register_per_address", _host(conn)))
            self._check_signed_prekeys(
                req.identity_key, req.signed_prekey, req.kem_prekeys, req.last_resort_kem_prekey
            )
            existing = self.store.device_ids(req.account)
            if existing:
                if me is None:
                    raise _Refused(
                        ErrorCode.NOT_AUTHENTICATED,
                        f"account {req.account!r} exists; authenticate as one of its devices before registering "
                        f"device {req.device}",
                        "account",
                    )
                raise _Refused(
                    ErrorCode.FORBIDDEN,
                    f"this connection is authenticated as {me}, not as a device of account {req.account!r}",
                    "account",
                )
            previous = None
        else:
            existing = self.store.device_ids(req.account)
            if req.device in existing and me.device != req.device:
                raise _Refused(
                    ErrorCode.FORBIDDEN,
                    f"device {target} exists; only that device may re-register it (this connection is {me})",
                    "device",
                )
            if req.device in existing:  # a device registering itself again: a key upload
                self._limit("register", conn, ("keys_per_device", (req.account, req.device)))
            elif len(existing) >= MAX_DEVICES_PER_ACCOUNT:
                # A bundle, and a send to every device of an account, hold at most this many.
                raise _Refused(
                    ErrorCode.TOO_MANY_DEVICES,
                    f"account {req.account!r} has {len(existing)} devices, the most one account may have",
                    "device",
                )
            self._check_signed_prekeys(
                req.identity_key, req.signed_prekey, req.kem_prekeys, req.last_resort_kem_prekey
            )
            previous = self.store.device(req.account, req.device)
        if previous is not None and previous.identity_key != req.identity_key:
            # A new identity: every other session of the old one ends (they must log in again).
            out.after.append(lambda: self._end_sessions(target, keep=conn.id))
        now = self.clock()
        if not existing and not self.store.account_exists(req.account):
            self.store.create_account(req.account, now)
        self._put_registered_device(req, now)
        out.after.append(self._log_key(req.account, req.device, req.identity_key))
        if req.delivery_token is not None:
            self.store.set_delivery_token(req.account, req.delivery_token)
        out.items.append(Reply(conn.id, Registered(id=req.id, account=req.account, device=req.device)))
        out.record(self._observe(RecordKind.REGISTRATION, conn, target, now=now))

    def _upload_prekeys(self, conn: ConnectionContext, req: UploadPrekeys, out: _Out) -> None:
        device = self._my_device(conn, "upload_prekeys")
        # before the signatures cost their verifications
        self._limit("upload_prekeys", conn, ("keys_per_device", (device.account, device.device)))
        _check_key_ids([k.id for k in req.one_time_prekeys], "one_time_prekeys")
        _check_key_ids([k.id for k in req.kem_prekeys], "kem_prekeys")
        me = DeviceAddress(device.account, device.device)
        self._check_signed_prekeys(
            device.identity_key, req.signed_prekey, req.kem_prekeys, req.last_resort_kem_prekey
        )
        # As Signal-Server's PreKeyState: a non-empty list replaces that kind; empty keeps it.
        if req.one_time_prekeys:
            self.store.replace_prekeys(me.account, me.device, req.one_time_prekeys)
        if req.kem_prekeys:
            self.store.replace_kem_prekeys(me.account, me.device, req.kem_prekeys)
        if req.delivery_token is not None:  # rotation: the old token stops opening the account now
            self.store.set_delivery_token(me.account, req.delivery_token)
        if req.signed_prekey is not None or req.last_resort_kem_prekey is not None:
            self.store.put_device(
                dataclasses.replace(
                    device,
                    signed_prekey=req.signed_prekey or device.signed_prekey,
                    last_resort_kem_prekey=req.last_resort_kem_prekey or device.last_resort_kem_prekey,
                )
            )
        ec, kem = self.store.prekey_counts(me.account, me.device)
        out.items.append(Reply(conn.id, PrekeysUploaded(id=req.id, one_time_prekeys=ec, kem_prekeys=kem)))
        uploaded = len(req.one_time_prekeys) + len(req.kem_prekeys)
        uploaded += (req.signed_prekey is not None) + (req.last_resort_kem_prekey is not None)
        out.record(self._observe(RecordKind.PREKEY_UPLOAD, conn, me, count=uploaded))

    def _fetch_bundle(self, conn: ConnectionContext, req: FetchBundle, out: _Out) -> None:
        if conn.authenticated is None:
            if req.delivery_token is None:
                raise _Refused(
                    ErrorCode.NOT_AUTHENTICATED,
                    "fetch_bundle needs an authenticated connection or the account's delivery_token",
                    "delivery_token",
                )
            if not self._token_matches(req.account, req.delivery_token):
                raise _Refused(
                    ErrorCode.INVALID_DELIVERY_TOKEN,
                    f"delivery_token does not open account {req.account!r}",
                    "delivery_token",
                )
        requester = (
            ("account", conn.authenticated.account) if conn.authenticated else ("address", _host(conn))
        )
        self._limit("fetch_bundle", conn, ("fetch_per_requester", requester if requester[1] else None))
        devices = self.store.devices(req.account)
        if not devices:
            raise _Refused(ErrorCode.UNKNOWN_ACCOUNT, f"no account {req.account!r}", "account")
        # Past the target's own limit the bundle still comes, without one-time prekeys (the signed
        # prekey and the last-resort KEM key, as when they ran out): requesters together can slow
        # the draining of an account's prekeys, never stop others from starting sessions with it.
        now = self.clock()
        rate = self.limits.fetch_per_target
        one_time = self._limiter.wait("fetch_per_target", req.account, rate, now) == 0
        if one_time:
            self._limiter.take("fetch_per_target", req.account, rate, now)
        bundles = []
        signatures = self.store.device_signatures(req.account)
        for d in devices:
            kem = self.store.take_kem_prekey(d.account, d.device) if one_time else None
            bundles.append(
                DeviceBundle(
                    device=d.device,
                    registration_id=d.registration_id,
                    identity_key=d.identity_key,
                    signed_prekey=d.signed_prekey,
                    kem_prekey=kem if kem is not None else d.last_resort_kem_prekey,
                    kem_prekey_last_resort=kem is None,
                    one_time_prekey=self.store.take_prekey(d.account, d.device) if one_time else None,
                    device_signature=signatures.get(d.device),
                )
            )
        key_log = self._key_log_proof(req.account, devices, conn) if req.key_log else None
        out.items.append(
            Reply(conn.id, Bundle(id=req.id, account=req.account, devices=tuple(bundles), key_log=key_log))
        )
        out.record(
            self._observe(
                RecordKind.BUNDLE_FETCH,
                conn,
                conn.authenticated,
                recipient_account=req.account,
                count=len(bundles),
            )
        )

    def _auth_challenge(self, conn: ConnectionContext, req: AuthChallenge, out: _Out) -> None:
        if conn.authenticated is not None:
            raise _Refused(
                ErrorCode.ALREADY_AUTHENTICATED,
                f"this connection is already authenticated as {conn.authenticated}; open another to change",
            )
        # A challenge lets one authenticate, one signature verification: logins are bounded by the
        # address they come from (Limits.logins_per_address), whoever they are for.
        self._limit("auth_challenge", conn, ("logins_per_address", _host(conn)))
        nonce = self.rng(NONCE_SIZE)
        # A new challenge replaces any earlier one on this connection: at most one each.
        self._challenges[conn.id] = _Pending(
            nonce, DeviceAddress(req.account, req.device), self.clock() + self.challenge_ttl
        )
        expires_in_ms = int(self.challenge_ttl * 1000)
        out.items.append(Reply(conn.id, Challenge(id=req.id, nonce=nonce, expires_in_ms=expires_in_ms)))

    def _authenticate(self, conn: ConnectionContext, req: Authenticate, out: _Out) -> None:
        pending = self._challenges.pop(conn.id, None)  # single use, whatever the outcome
        if pending is None or not hmac.compare_digest(pending.nonce, req.nonce):
            raise _Refused(
                ErrorCode.NO_CHALLENGE,
                "nonce is not the outstanding challenge of this connection (each is used once); "
                "send auth_challenge first",
                "nonce",
            )
        now = self.clock()
        if now > pending.expires:
            raise _Refused(
                ErrorCode.CHALLENGE_EXPIRED,
                f"the challenge expired {now - pending.expires:.3f} s ago; ask for a new one",
                "nonce",
            )
        who = pending.device
        device = self.store.device(who.account, who.device)
        # The same work for an absent device as for a present one (a conversion, a verification).
        key = XEdDSAPublicKey.from_x25519(device.identity_key if device is not None else _ABSENT_U)
        message = auth_message(pending.nonce, who.account, who.device)
        verified = key is not None and key.verify(message, req.signature)
        if device is None or not verified:
            # One answer for "no such device" and "wrong signature", as Fernet's InvalidToken.
            raise _Refused(
                ErrorCode.AUTHENTICATION_FAILED,
                f"signature is not a valid XEdDSA signature of the challenge by the identity key of {who}",
                "signature",
            )
        conn.authenticated = who
        self._online.setdefault((who.account, who.device), {})[conn.id] = conn
        out.items.append(
            Reply(
                conn.id,
                Authenticated(
                    id=req.id, account=who.account, device=who.device, prekeys_left=self._prekeys_low(who)
                ),
            )
        )
        out.record(self._observe(RecordKind.AUTHENTICATION, conn, who, now=now))

    def _get_sender_certificate(self, conn: ConnectionContext, req: GetSenderCertificate, out: _Out) -> None:
        device = self._my_device(conn, "get_sender_certificate")
        if device.device > MAX_CERTIFICATE_DEVICE_ID:  # (libsignal's DeviceId: 1 to 127)
            # about no field: get_sender_certificate has none; what is wrong is the connection's device
            raise _Refused(
                ErrorCode.FORBIDDEN,
                f"a sender certificate names a device from 1 to {MAX_CERTIFICATE_DEVICE_ID} (libsignal's "
                f"DeviceId); this connection is device {device.device}: it cannot send sealed",
            )
        # before the certificate costs its signature
        self._limit("get_sender_certificate", conn, ("certificates_per_account", device.account))
        me = DeviceAddress(device.account, device.device)
        now = self.clock()
        # relay.certificates counts expiry in whole seconds of the relay's clock.
        certificate = self.identity.issue(
            me.account, me.device, device.identity_key, int(now) + self.certificate_ttl
        )
        out.items.append(
            Reply(conn.id, SenderCertificateResponse(id=req.id, certificate=certificate.encode()))
        )
        out.record(self._observe(RecordKind.SENDER_CERTIFICATE, conn, me, now=now))

    def _send(self, conn: ConnectionContext, req: Send, out: _Out) -> None:
        me = self._require_auth(conn, "send")
        limits = self.limits  # (a relay without send limits skips the limiter)
        if limits.send_per_account is not None or limits.send_per_address is not None:
            self._limit("send", conn, ("send_per_account", me.account), ("send_per_address", _host(conn)))
        self._route(conn, req.id, req.to, req.envelopes, out, source=me)

    def _sealed_send(self, conn: ConnectionContext, req: SealedSend, out: _Out) -> None:
        me = conn.authenticated
        limits = self.limits
        if limits.send_per_account is not None or limits.send_per_address is not None:
            self._limit(
                "sealed_send",
                conn,
                ("send_per_account", me.account if me is not None else None),
                ("send_per_address", _host(conn)),
            )
        if not self._token_matches(req.to, req.delivery_token):
            raise _Refused(
                ErrorCode.INVALID_DELIVERY_TOKEN,
                f"delivery_token is not the one account {req.to!r} registered (or there is no such account)",
                "delivery_token",
            )
        self._route(conn, req.id, req.to, req.envelopes, out, source=None)

    def _envelopes_match(self, current: Mapping[int, int], envelopes: tuple[OutgoingEnvelope, ...]) -> bool:
        """Whether ``envelopes`` name each current device once, with its registration id if they
        give one, and every body fits: the common case, checked in one pass (a send to one device
        is most sends). When not, :meth:`_refuse_envelopes` says exactly what is wrong."""
        if len(envelopes) != len(current):
            return False
        limit = self.max_body_size
        if len(envelopes) == 1:  # (most sends: no set of the devices seen)
            e = envelopes[0]
            registration_id = current.get(e.device)
            return (
                registration_id is not None
                and len(e.body) <= limit
                and (e.registration_id is None or e.registration_id == registration_id)
            )
        seen = set()
        for e in envelopes:
            registration_id = current.get(e.device)
            if (
                registration_id is None
                or e.device in seen
                or len(e.body) > limit
                or (e.registration_id is not None and e.registration_id != registration_id)
            ):
                return False
            seen.add(e.device)
        return True

    def _refuse_envelopes(
        self, to: str, current: Mapping[int, int], envelopes: tuple[OutgoingEnvelope, ...]
    ) -> NoReturn:
        """Raise the refusal that says what is wrong with ``envelopes`` for the devices ``current``."""
        named: set[int] = set()
        for i, e in enumerate(envelopes):
            if e.device in named:
                raise _Refused(
                    ErrorCode.DUPLICATE_DEVICE,
                    f"device {e.device} has two envelopes",
                    f"envelopes[{i}].device",
                )
            named.add(e.device)
            if len(e.body) > self.max_body_size:
                raise _Refused(
                    ErrorCode.ENVELOPE_TOO_LARGE,
                    f"envelopes[{i}].body is {len(e.body)} bytes; the most this relay carries is {self.max_body_size}",
                    f"envelopes[{i}].body",
                )
        missing = tuple(sorted(set(current) - named))
        extra = tuple(sorted(named - set(current)))
        stale = tuple(
            sorted(
                e.device
                for e in envelopes
                if e.registration_id is not None
                and e.device in current
                and current[e.device] != e.registration_id
            )
        )
        if missing or extra or stale:
            raise _Refused(
                ErrorCode.STALE_DEVICES,
                f"envelopes do not match the current devices of {to!r}: missing {list(missing)}, "
                f"extra {list(extra)}, stale registration ids {list(stale)}; fetch_bundle and retry",
                "envelopes",
                missing=missing or None,
                extra=extra or None,
                stale=stale or None,
            )
        raise AssertionError("_envelopes_match refused envelopes that have nothing wrong")

    def _route(
        self,
        conn: ConnectionContext,
        request_id: int,
        to: str,
        envelopes: tuple[OutgoingEnvelope, ...],
        out: _Out,
        *,
        source: DeviceAddress | None,
    ) -> None:
        current: Mapping[int, int] = self.store.routes(to)  # (read only: a copy only to change it)
        if not current:
            raise _Refused(ErrorCode.UNKNOWN_ACCOUNT, f"no account {to!r}", "to")
        if source is not None and source.account == to:
            mine = dict(current)
            mine.pop(source.device, None)  # to one's own other devices: not back to oneself
            current = mine
        if not self._envelopes_match(current, envelopes):
            self._refuse_envelopes(to, current, envelopes)
        # A send from an account the recipient has blocked is accepted and then dropped: the
        # sender is not told (as messaging services do). Sealed sends name no sender to check.
        # A full queue refuses it as it refuses everyone's, or the refusal would tell the block.
        dropped = source is not None and source.account in self._blocks.get(to, ())
        self._check_queue_room(to, envelopes)
        now = self.clock()
        timestamp = int(now * 1000)
        sealed = source is None
        source_account, source_device = (None, None) if source is None else (source.account, source.device)
        new_id = self._envelope_id
        # Positional, in StoredEnvelope's field order (one per recipient device).
        stored = [
            StoredEnvelope(new_id(), to, e.device, e.body, timestamp, sealed, source_account, source_device)
            for e in envelopes
        ]
        needs_sync = (
            source is not None and source.account != to and self.store.device_count(source.account) > 1
        )
        # The answer from checked values alone (the request's id, fresh envelope ids): made without
        # checking them again (wire.prechecked).
        out.items.append(
            Reply(
                conn.id,
                _make_sent(request_id, tuple([s.id for s in stored]), True if needs_sync else None),
            )
        )
        self._commit(conn, to, stored, out, now=now, source=source, dropped=dropped)

    def _commit(
        self,
        conn: ConnectionContext,
        to: str,
        stored: list[StoredEnvelope],
        out: _Out,
        *,
        now: float,
        source: DeviceAddress | None,
        dropped: bool,
    ) -> None:
        """Queue envelopes accepted for ``to`` (unless ``dropped``: a block), record each send, and
        push them to the recipient devices that are connected."""
        if self._taps:
            out.bodies.update((s.id, s.body) for s in stored)
        if not dropped:
            self.store.enqueue(stored)
        kind = RecordKind.SEND if source is not None else RecordKind.SEALED_SEND
        # Records made directly, positional in MetadataRecord's field order (as _observe makes them).
        address = conn.address
        host, port = (address[0], address[1]) if address is not None else (None, None)
        who = conn.authenticated  # for a sealed send too: if it is known, it is seen
        account, device = (who.account, who.device) if who is not None else (None, None)
        items = out.items
        for s in stored:
            items.append(
                MetadataRecord(
                    kind, now, conn.id, host, port, account, device, to, s.device, s.id, len(s.body)
                )
            )
        if dropped:
            return
        online = self._online
        delivery = RecordKind.DELIVERY
        for s in stored:
            targets = online.get((to, s.device))
            if targets:
                # The envelope as the device gets it, from the checked request's fields and the
                # relay's own id and time (wire.prechecked): as s.to_wire() makes it.
                envelope = _make_envelope(
                    s.id, s.body, s.timestamp, s.sealed, s.source_account, s.source_device
                )
                for target in targets.values():
                    recipient = target.authenticated  # (to, s.device), as the connection proved
                    assert recipient is not None
                    items.append(Push(recipient, target.id, _make_deliver(0, envelope)))
                    # As _observe(DELIVERY, target, recipient, ...) makes it, positional.
                    address = target.address
                    items.append(
                        MetadataRecord(
                            delivery,
                            now,
                            target.id,
                            address[0] if address is not None else None,
                            address[1] if address is not None else None,
                            to,
                            s.device,
                            None,
                            None,
                            s.id,
                            len(s.body),
                        )
                    )

    def _receive(self, conn: ConnectionContext, req: Receive, out: _Out) -> None:
        me = self._require_auth(conn, "receive")
        envelopes, more = self.store.queued(
            me.account,
            me.device,
            limit=req.limit or DEFAULT_RECEIVE_LIMIT,
            max_bytes=self.max_frame_size - _FRAME_HEADROOM,
            overhead=_ENVELOPE_OVERHEAD,
        )
        out.items.append(
            Reply(
                conn.id,
                Envelopes(
                    id=req.id,
                    envelopes=tuple(e.to_wire() for e in envelopes),
                    more=more,
                    prekeys_left=self._prekeys_low(me),
                ),
            )
        )
        now = self.clock()
        for e in envelopes:
            out.record(
                self._observe(RecordKind.DELIVERY, conn, me, now=now, envelope_id=e.id, size=len(e.body))
            )

    def _ack(self, conn: ConnectionContext, req: Ack, out: _Out) -> None:
        me = self._require_auth(conn, "ack")
        now = self.clock()
        rate = self.limits.ack_unknown_per_account
        wait = self._limiter.wait("ack_unknown_per_account", me.account, rate, now)
        if wait > 0:
            raise _Refused(
                ErrorCode.RATE_LIMITED,
                f"ack: over this relay's limit on envelope ids acknowledged that were not in the device's "
                f"queue ({rate}); retry in {wait:.3f} s",
                "ack_unknown_per_account",  # the limit, as every rate_limited names it (_limit)
                retry_after=wait,
            )
        ids = req.envelope_ids
        count = 0
        removed: list[bytes] = []  # the ids taken out of this device's queue by this ack, each once
        if self.keep_delivered:
            count += self.store.archive_envelopes(
                me.account, me.device, ids, archived_at=now, reason="kept", moved=removed
            )
        elif self._preserved and (frozen := self._frozen_at(now)):
            # held at the service of a preservation request on the recipient or the (known) sender
            origins = self.store.envelope_origins(me.account, me.device, ids)
            ids = tuple(
                i
                for i, (source, ms) in origins.items()
                if any(a in frozen and ms / 1000 <= frozen[a] for a in (me.account, source) if a is not None)
            )
            count += self.store.delete_envelopes(
                me.account, me.device, set(origins) - set(ids), removed=removed
            )
            count += self.store.archive_envelopes(
                me.account, me.device, ids, archived_at=now, reason="preserved", moved=removed
            )
        else:
            count += self.store.delete_envelopes(me.account, me.device, ids, removed=removed)
        if rate is not None and count < len(req.envelope_ids):  # (else every id was there)
            unknown = len(set(req.envelope_ids)) - count
            if unknown > 0:  # (may leave the bucket below empty: the next ack waits for it)
                self._limiter.take("ack_unknown_per_account", me.account, rate, now, cost=unknown)
        items = out.items
        items.append(Reply(conn.id, _make_acked(req.id, count)))  # (a count of ids: at most MAX_ACK_IDS)
        if not removed:
            return
        # A record for each envelope this ack took out of the device's queue, in the order asked,
        # each once: none for an id that was never queued to this device, was another's, or was
        # acknowledged before — a device cannot fill its account's records (which legal process
        # returns) with acknowledgements of envelopes that never existed.
        address = conn.address
        host, port = (address[0], address[1]) if address is not None else (None, None)
        kind, account, device = RecordKind.ACKNOWLEDGEMENT, me.account, me.device
        gone = set(removed)
        for envelope_id in req.envelope_ids:  # made as _observe makes them, positional
            if envelope_id in gone:
                gone.discard(envelope_id)
                items.append(
                    MetadataRecord(kind, now, conn.id, host, port, account, device, None, None, envelope_id)
                )

    def _ping(self, conn: ConnectionContext, req: Ping, out: _Out) -> None:
        out.items.append(Reply(conn.id, Pong(id=req.id)))

    def _discover_contacts(self, conn: ConnectionContext, req: DiscoverContacts, out: _Out) -> None:
        me = self._require_auth(conn, "discover_contacts")
        asked = tuple(dict.fromkeys(req.contacts))  # each once, in the order given
        self._lookups("discover_contacts", conn, me, len(asked))
        existing = self.store.existing_accounts(asked)
        registered = tuple(c for c in asked if c in existing)
        if self.keep_contacts:
            self.store.set_contacts(me.account, asked)
        out.items.append(Reply(conn.id, ContactsFound(id=req.id, registered=registered)))
        out.record(self._observe(RecordKind.CONTACT_DISCOVERY, conn, me, count=len(req.contacts)))

    def _block(self, conn: ConnectionContext, req: Block, out: _Out) -> None:
        me = self._require_auth(conn, "block")
        if req.account == me.account:
            raise _Refused(ErrorCode.FORBIDDEN, "an account cannot block itself", "account")
        self._lookups("block", conn, me, 1)  # its answer says whether the account exists
        if not self.store.account_exists(req.account):
            raise _Refused(ErrorCode.UNKNOWN_ACCOUNT, f"no account {req.account!r}", "account")
        now = self.clock()
        if self.keep_blocks:
            self.store.add_block(me.account, req.account, now)
        out.after.append(lambda: self._remember_block(me.account, req.account, now))
        out.items.append(Reply(conn.id, Blocked(id=req.id)))
        out.record(self._observe(RecordKind.BLOCK, conn, me, now=now, recipient_account=req.account))

    def _unblock(self, conn: ConnectionContext, req: Unblock, out: _Out) -> None:
        me = self._require_auth(conn, "unblock")
        # No bucket: an unblock writes only where there is a block to remove (the blocks in memory are
        # the stored ones), and each block spent a discovery token; one of an account not blocked is
        # answered from memory (~6 µs, a ping's cost), not with a DELETE of nothing (~14 µs with
        # keep_blocks).
        if req.account in self._blocks.get(me.account, ()):
            if self.keep_blocks:
                self.store.remove_block(me.account, req.account)
            out.after.append(lambda: self._forget_block(me.account, req.account))
        out.items.append(Reply(conn.id, Unblocked(id=req.id)))

    # -- groups ------------------------------------------------------------------------------

    def provision_group_member(self, group: bytes, account: str) -> int:
        """Add ``account`` to ``group``'s membership straight in the store, as only the provider can:
        no admin asked for it (``added_by`` stays empty) and no metadata record is made. What a
        provider compelled to add a silent participant (GCHQ's "ghost", Levy & Robinson, 2018) does
        where it holds the membership (sims.access.ghost). Returns the group's new epoch.

        ValueError when the relay holds no membership for ``group`` (a provider whose clients keep
        the group state, encrypted, has no list to add to) or there is no such account."""
        if self.store.group_epoch(group) is None:
            raise ValueError(
                f"the relay holds no membership list for group {group.hex()}: there is no list to add "
                f"{account!r} to"
            )
        if not self.store.account_exists(account):
            raise ValueError(f"no account {account!r} to add to group {group.hex()}")
        self._member_counts.pop(group, None)
        with self.store.transaction():
            self.store.put_group_member(GroupMemberRecord(group, account, False, self.clock(), None))
            return self.store.bump_group_epoch(group)

    def _members(self, group: bytes, me: DeviceAddress) -> list[GroupMemberRecord]:
        """The group's members, if ``me``'s account is one; else unknown_group (a non-member is not
        told whether the group exists)."""
        members = self.store.group_members(group)
        if not any(m.account == me.account for m in members):
            raise _not_a_member(group, me)
        return members

    def _limit_members_read(
        self,
        what: str,
        conn: ConnectionContext,
        group: bytes,
        me: DeviceAddress,
        *buckets: tuple[str, object],
        writes: int = 0,
    ) -> bool:
        """Take the tokens of a request that reads every member of ``group`` (get_group, change_group,
        group_send) before one is read: a token for every MEMBERS_PER_TOKEN members (a group of up to
        that many takes one, as any request does), and, for an admin, ``writes`` more (the rows it will
        write, priced by its caller: a member that is no admin is refused before it writes any, so it
        is not charged for them), taken with them, at most the smallest burst. Returns whether the
        caller is an admin. A caller that is not a
        member takes one, whatever the group's size (its wait tells it nothing of the group, not even
        that it exists), and is refused unknown_group without the members being read. A member's
        request its bucket cannot pay for, the group's size known from the member's last request
        (and the group unchanged since), is refused without the group being counted again (a count
        of 1,024 members is ~0.2 ms, where a refusal is a few µs)."""
        known = self._member_counts.get(group, {}).get(me.account)
        if known is not None:
            known_count, known_admin = known
            known_writes = writes if known_admin else 0
            if known_count > MEMBERS_PER_TOKEN or known_writes:
                cost = self._capped(self._members_cost(known_count, buckets) + known_writes, buckets)
                self._short_of(self._members_read(what, known_count, known_writes), buckets, cost)
        count, admin = self.store.group_standing(group, me.account)  # 0: not a member (or no such group)
        if count:
            self._member_counts.setdefault(group, {})[me.account] = (count, admin)
        if not admin:
            writes = 0
        cost = 1
        if count > MEMBERS_PER_TOKEN or (count and writes):
            cost = self._capped(self._members_cost(count, buckets) + (writes if count else 0), buckets)
            what = self._members_read(what, count, writes)
        self._limit(what, conn, *buckets, cost=float(cost))
        if not count:
            raise _not_a_member(group, me)
        return admin

    def _members_cost(
        self, count: int, buckets: tuple[tuple[str, object], ...], per: int | None = None
    ) -> int:
        """Tokens for reading ``count`` members (or another ``per`` a token): one for every ``per``,
        at most the smallest burst (more than a burst would never be met)."""
        return self._capped(-(-count // (per or MEMBERS_PER_TOKEN)), buckets)

    def _capped(self, cost: int, buckets: tuple[tuple[str, object], ...]) -> int:
        """``cost``, at most the smallest burst of ``buckets`` (more than a burst would never be met)."""
        for name, _ in buckets:
            rate = getattr(self.limits, name)
            if rate is not None:
                cost = min(cost, int(rate.burst))
        return cost

    @staticmethod
    def _members_read(what: str, count: int, writes: int = 0) -> str:
        read = f"{what} to a group of {count} members, a token for every {MEMBERS_PER_TOKEN}"
        if writes:
            read += f", and {writes} more for the members it adds, a token for every {ROWS_PER_TOKEN}"
        return read

    def _lookups(self, what: str, conn: ConnectionContext, me: DeviceAddress, names: int) -> None:
        """Spend the account's discovery tokens, a token a name, on a request whose answer says
        whether accounts exist (block, a group's members), as discover_contacts does: else each
        would be a way round its limit. A request naming more than the burst takes all of it."""
        rate = self.limits.discover_per_account
        if rate is not None and names:
            cost = min(float(names), rate.burst)
            self._limit(f"{what}, a token a name", conn, ("discover_per_account", me.account), cost=cost)

    def _check_accounts(
        self, accounts: tuple[str, ...], field: str, conn: ConnectionContext, me: DeviceAddress
    ) -> None:
        _check_distinct(accounts, field)
        self._lookups(field, conn, me, len(accounts))
        for i, account in enumerate(accounts):
            if not self.store.account_exists(account):
                raise _Refused(ErrorCode.UNKNOWN_ACCOUNT, f"no account {account!r}", f"{field}[{i}]")

    @staticmethod
    def _check_group_size(group: bytes, members: int, field: str) -> None:
        """A group's member list travels whole in one ``group_info``: at most MAX_GROUP_MEMBERS."""
        if members > MAX_GROUP_MEMBERS:
            raise _Refused(
                ErrorCode.INVALID_VALUE,
                f"group {group.hex()} would have {members} members; the most a group may have is "
                f"{MAX_GROUP_MEMBERS}",
                field,
            )

    def _create_group(self, conn: ConnectionContext, req: CreateGroup, out: _Out) -> None:
        me = self._require_auth(conn, "create_group")
        # Every group operation writes at the relay: it spends the sender's send tokens, as a send does,
        # a token for every ROWS_PER_TOKEN members it writes (taken before any is checked or written).
        senders = (("send_per_account", me.account), ("send_per_address", _host(conn)))
        rows = len({me.account, *req.members})
        cost = self._members_cost(rows, senders, ROWS_PER_TOKEN)
        what = (
            "create_group"
            if cost == 1
            else f"create_group of {rows} members, a token for every {ROWS_PER_TOKEN}"
        )
        self._limit(what, conn, *senders, cost=float(cost))
        if self.store.group_epoch(req.group) is not None:
            raise _Refused(ErrorCode.GROUP_EXISTS, f"group {req.group.hex()} already exists", "group")
        self._check_accounts(req.members, "members", conn, me)
        self._check_group_size(req.group, len({me.account, *req.members}), "members")
        now = self.clock()
        self._member_counts.pop(req.group, None)
        self.store.create_group(req.group, me.account, now)
        self.store.put_group_member(GroupMemberRecord(req.group, me.account, True, now, me.account))
        for account in req.members:
            if account != me.account:
                self.store.put_group_member(GroupMemberRecord(req.group, account, False, now, me.account))
        out.items.append(Reply(conn.id, GroupUpdated(id=req.id, group=req.group, epoch=0)))

    def _change_group(self, conn: ConnectionContext, req: ChangeGroup, out: _Out) -> None:
        me = self._require_auth(conn, "change_group")
        senders = (("send_per_account", me.account), ("send_per_address", _host(conn)))
        # The members it adds are rows written, priced as create_group's (a token for every
        # ROWS_PER_TOKEN, the first ROWS_PER_TOKEN carried by the request's token), taken with the
        # members' tokens, before any member is checked or written.
        # A member that is no admin takes only its read's tokens, and is refused (unless it leaves)
        # before the members are read: whether it is an admin comes with the group's count.
        adds = len(set(req.add))
        writes = max(0, -(-adds // ROWS_PER_TOKEN) - 1)
        admin = self._limit_members_read("change_group", conn, req.group, me, *senders, writes=writes)
        leaving = not req.add and not req.admins and req.remove == (me.account,)
        if not admin and not leaving:
            raise _Refused(
                ErrorCode.FORBIDDEN,
                f"only an admin of group {req.group.hex()} adds, removes or promotes members; "
                f"{me.account!r} may only remove itself (leave)",
                "group",
            )
        members = {m.account: m for m in self._members(req.group, me)}
        self._check_accounts(req.add, "add", conn, me)
        _check_distinct(req.remove, "remove")
        _check_distinct(req.admins, "admins")
        for i, account in enumerate(req.remove):
            if account in req.add:
                raise _Refused(
                    ErrorCode.INVALID_VALUE,
                    f"{account!r} is both added and removed; one change says one of the two",
                    f"remove[{i}]",
                )
        after = (members.keys() - set(req.remove)) | set(req.add)
        self._check_group_size(req.group, len(after), "add")
        now = self.clock()
        # Adding a member, removing a non-member or promoting an admin changes nothing: accepted, and
        # the epoch stays (moving it would refuse every member's next group_send as stale, for a
        # change sent again because its answer was lost). Anything that does change moves it once.
        # The members after the change, kept as they are written rather than read from the store again
        # (a record written is the one read back: added_at is stored as REAL).
        changed = False
        current = dict(members)
        for account in req.remove:
            changed |= self.store.remove_group_member(req.group, account)
            current.pop(account, None)
        for account in req.add:
            if account not in members:
                added = GroupMemberRecord(req.group, account, False, now, me.account)
                self.store.put_group_member(added)
                current[account] = added
                changed = True
        for i, account in enumerate(req.admins):
            if account not in current:
                raise _Refused(
                    ErrorCode.INVALID_VALUE,
                    f"{account!r} is not a member of group {req.group.hex()}, so cannot be made an admin",
                    f"admins[{i}]",
                )
            if not current[account].admin:
                current[account] = dataclasses.replace(current[account], admin=True)
                self.store.put_group_member(current[account])
                changed = True
        remaining = list(current.values())
        if remaining and not any(m.admin for m in remaining):
            # The last admin left (or removed itself with others): a group is never left with members
            # and no admin. The longest-standing member is promoted (this relay's rule; the ties go to
            # the account that sorts first), so someone can still add and remove members.
            heir = min(remaining, key=lambda m: (m.added_at, m.account))
            self.store.put_group_member(dataclasses.replace(heir, admin=True))
        if changed:  # a size counted before the change may be wrong after it
            self._member_counts.pop(req.group, None)
        epoch = self.store.bump_group_epoch(req.group) if changed else self.store.group_epoch(req.group)
        assert epoch is not None
        out.items.append(Reply(conn.id, GroupUpdated(id=req.id, group=req.group, epoch=epoch)))

    def _get_group(self, conn: ConnectionContext, req: GetGroup, out: _Out) -> None:
        me = self._require_auth(conn, "get_group")
        # Before the members are read: a token for every MEMBERS_PER_TOKEN of them.
        self._limit_members_read("get_group", conn, req.group, me, ("group_reads_per_account", me.account))
        members = self._members(req.group, me)
        epoch = self.store.group_epoch(req.group)
        assert epoch is not None
        listed = tuple(GroupMember(account=m.account, admin=m.admin) for m in members)
        out.items.append(Reply(conn.id, GroupInfo(id=req.id, group=req.group, epoch=epoch, members=listed)))

    def _group_send(self, conn: ConnectionContext, req: GroupSend, out: _Out) -> None:
        me = self._require_auth(conn, "group_send")
        senders = (("send_per_account", me.account), ("send_per_address", _host(conn)))
        self._limit_members_read("group_send", conn, req.group, me, *senders)
        members = self._members(req.group, me)
        epoch = self.store.group_epoch(req.group)
        if epoch != req.epoch:
            raise _Refused(
                ErrorCode.STALE_GROUP,
                f"group {req.group.hex()} is at epoch {epoch}, not {req.epoch}: its members changed; "
                "get_group, hand the sender key to any new member, and send again",
                "epoch",
            )
        if len(req.body) > self.max_body_size:
            raise _Refused(
                ErrorCode.ENVELOPE_TOO_LARGE,
                f"body is {len(req.body)} bytes; the most this relay carries is {self.max_body_size}",
                "body",
            )
        now = self.clock()
        timestamp = int(now * 1000)
        # Each member's devices to copy to, and whether its copies are dropped (a block); the copies,
        # and their ids, are made once the send is accepted (a refused one draws none, as a send).
        targets: list[tuple[str, list[int], bool]] = []
        copies = 0
        for m in members:
            devices = [d for d in self.store.device_ids(m.account) if DeviceAddress(m.account, d) != me]
            if not devices:
                continue
            copies += len(devices)
            if copies > MAX_GROUP_FANOUT:  # the ids of every copy travel back in one group_sent
                raise _Refused(
                    ErrorCode.INVALID_VALUE,
                    f"group {req.group.hex()} has more than {MAX_GROUP_FANOUT} member devices, the most one "
                    "group_send reaches; send to the members pairwise instead",
                    "group",
                )
            dropped = m.account != me.account and me.account in self._blocks.get(m.account, {})
            if not dropped:
                self._check_queue_room(
                    m.account, tuple(OutgoingEnvelope(device=d, body=req.body) for d in devices)
                )
            targets.append((m.account, devices, dropped))
        # The tokens taken for the members read carried the request, its first frame's worth of
        # copies and its first COPIES_PER_TOKEN copies; what it stores past that spends more: a token
        # a frame, as the pairwise sends that would store it would (each carries at most a frame), or a
        # token for every COPIES_PER_TOKEN copies (each a row, an id and a record, ~40-120 µs), which
        # ever is more. The copies' tokens stop at what a burst leaves (a group within the limits may
        # always send, when its sender's bucket is full); a body whose frames would not fit is refused.
        frames_extra = -(-len(req.body) * copies // self.max_frame_size) - 1
        copies_extra = -(-copies // COPIES_PER_TOKEN) - 1
        bursts = [r.burst for name, _ in senders if (r := getattr(self.limits, name)) is not None]
        # (the members' tokens are already out of the bucket: the extra must fit in what is left)
        left = int(min(bursts)) - max(1, -(-len(members) // MEMBERS_PER_TOKEN)) if bursts else 0
        if bursts and frames_extra > left:
            frames = left + 1
            raise _Refused(
                ErrorCode.ENVELOPE_TOO_LARGE,
                f"group_send would store {len(req.body)} bytes for each of {copies} devices, "
                f"{len(req.body) * copies} in all; the most one request to this group may make this relay "
                f"store is {max(frames, 1)} frames' worth ({max(frames, 1) * self.max_frame_size} bytes): "
                "send a smaller body",
                "body",
            )
        extra = max(frames_extra, min(copies_extra, left) if bursts else copies_extra)
        if extra > 0:
            what = "group_send"
            if extra > frames_extra:
                what = f"group_send storing {copies} copies, a token for every {COPIES_PER_TOKEN}"
            self._limit(what, conn, *senders, cost=extra)
        fanout = [
            (
                account,
                [
                    StoredEnvelope(
                        id=self._envelope_id(),
                        account=account,
                        device=d,
                        body=req.body,
                        timestamp=timestamp,
                        sealed=False,
                        source_account=me.account,
                        source_device=me.device,
                    )
                    for d in devices
                ],
                dropped,
            )
            for account, devices, dropped in targets
        ]
        ids = tuple(s.id for _, stored, _ in fanout for s in stored)
        out.items.append(Reply(conn.id, GroupSent(id=req.id, envelope_ids=ids)))
        for account, stored, dropped in fanout:
            self._commit(conn, account, stored, out, now=now, source=me, dropped=dropped)

    def _put_group_state(self, conn: ConnectionContext, req: PutGroupState, out: _Out) -> None:
        # No account (the state names nobody), so bounded by the address's send tokens, before the
        # signature costs a verification.
        self._limit("put_group_state", conn, ("send_per_address", _host(conn)))
        held = self.store.group_write_keys(req.group)
        current = None if held is None else held[1]
        if current == ():
            # The last member left (its upload emptied the set): no key can sign another version, and
            # the group id is spent. Said before the signature is checked: get_group_state shows anyone
            # the same (the version, and no write keys), and a verification would be spent for nothing.
            assert held is not None
            raise _Refused(
                ErrorCode.GROUP_CLOSED,
                f"group state {req.group.hex()} is closed: its last member left at version {held[0]}, so no "
                "write key can sign another version; a group starts again under a new group id",
                "group",
            )
        if req.write_keys is not None:
            _check_sorted_keys(req.write_keys)
        key = self._group_signer(req, current)
        if req.signature is None:
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                f"put_group_state needs signature: the write key's Ed25519 signature over "
                f"group {req.group.hex()}, version {req.version} and the state's SHA-256",
                "signature",
            )
        message = group_state_message(req.group, req.version, req.state, req.write_keys)
        if not ed25519_verify(key, message, req.signature):
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                f"signature is not write_key's signature over group {req.group.hex()}, "
                f"version {req.version}, this state"
                + ("" if req.write_keys is None else " and these write_keys"),
                "signature",
            )
        # Only now the version: a refusal of an upload no current member signed names none.
        expected = 0 if held is None else held[0] + 1
        if req.version != expected:
            raise _Refused(
                ErrorCode.STALE_GROUP,
                f"group state {req.group.hex()} is at version {'none' if held is None else held[0]}; "
                f"the next is {expected}, not {req.version}: fetch the state, apply the change, and retry",
                "version",
            )
        if req.write_keys is None:
            keys = (key,) if current is None else current
        else:
            # The keys the relay holds were checked when they came; a new member's key is checked
            # here, after the signature (a member vouches for it), once. A check is ~0.3 ms (libsodium's
            # subgroup test), so new keys beyond the first few spend the address's send tokens too,
            # one for every WRITE_KEYS_PER_TOKEN (a 1,024-member group's creation: 256 of a burst of
            # 500), before any is checked: a stream of big creations costs what a stream of sends does.
            known = set(current or ())
            new = [i for i, k in enumerate(req.write_keys) if k not in known]
            if len(new) > WRITE_KEYS_PER_TOKEN:
                self._limit(
                    f"put_group_state's {len(new)} new write keys, a token for every {WRITE_KEYS_PER_TOKEN}",
                    conn,
                    ("send_per_address", _host(conn)),
                    cost=len(new) / WRITE_KEYS_PER_TOKEN,
                )
            for i in new:
                k = req.write_keys[i]
                if not ed25519_key_ok(k):
                    raise _Refused(
                        ErrorCode.INVALID_VALUE,
                        f"write_keys[{i}] is not an Ed25519 public key of prime order (a key made from a "
                        "seed always is): anyone could sign as that member",
                        f"write_keys[{i}]",
                    )
            keys = req.write_keys
        self.store.put_group_state(req.group, req.version, req.state, keys)
        out.items.append(Reply(conn.id, GroupStateStored(id=req.id, group=req.group, version=req.version)))

    def _group_signer(self, req: PutGroupState, current: tuple[bytes, ...] | None) -> bytes:
        """The key ``req``'s signature must verify under: ``write_key``, which must be one of the
        group's current write keys (one per member: a member who was removed, or left, has none of
        them), or, where the relay holds none (a creation, or a state stored before write keys, store
        schema v14), one of the keys ``req`` registers. A key that is not a canonical point of
        Ed25519's prime-order subgroup is refused: no seed makes one, and a key of small order would
        let anyone sign for the group."""
        group = req.group.hex()
        if current is not None:
            if req.write_key is None:
                if len(current) == 1:
                    return current[0]  # a client from before write_keys: the group's one key
                raise _Refused(
                    ErrorCode.BAD_SIGNATURE,
                    f"put_group_state needs write_key: group state {group} has {len(current)} write keys, "
                    "one per member; name the one that signed",
                    "write_key",
                )
            if req.write_key not in current:
                raise _Refused(
                    ErrorCode.BAD_SIGNATURE,
                    f"write_key is not one of the {len(current)} write keys of group state {group}'s current "
                    "members: only a current member can change it (a member who was removed, or left, "
                    "no longer can)",
                    "write_key",
                )
            return req.write_key
        if req.write_key is None:
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                f"put_group_state needs write_key: no write key is registered for group state "
                f"{group}, and the upload that creates it registers its members' keys",
                "write_key",
            )
        if req.write_keys is not None and req.write_key not in req.write_keys:
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                f"write_key is not one of write_keys: the upload that creates group state {group} is "
                "signed by one of the keys it registers",
                "write_key",
            )
        if not ed25519_key_ok(req.write_key):
            raise _Refused(
                ErrorCode.BAD_SIGNATURE,
                "write_key is not an Ed25519 public key of prime order (a key made from a seed always is)",
                "write_key",
            )
        return req.write_key

    def _get_group_state(self, conn: ConnectionContext, req: GetGroupState, out: _Out) -> None:
        # Anyone may ask, logged in or not (the state names nobody): bounded by the address's own
        # bucket, as the other requests that need no login are, before the store is read.
        self._limit("get_group_state", conn, ("group_state_per_address", _host(conn)))
        held = self.store.group_state(req.group)
        if held is None:
            raise _Refused(
                ErrorCode.UNKNOWN_GROUP, f"no group state {req.group.hex()} is stored here", "group"
            )
        version, state = held
        keys = None
        if req.write_keys:
            # The keys the next version must be signed by, for the members to check against their
            # state: public keys that name nobody, and how many there are the blob's size tells anyway.
            stored = self.store.group_write_keys(req.group)
            keys = None if stored is None else stored[1]
        out.items.append(
            Reply(
                conn.id, GroupState(id=req.id, group=req.group, version=version, state=state, write_keys=keys)
            )
        )

    def _end_sessions(self, device: DeviceAddress, keep: int) -> None:
        """Log out every connection authenticated as ``device`` but ``keep``."""
        key = (device.account, device.device)
        live = self._online.get(key, {})
        for cid in [c for c in live if c != keep]:
            live.pop(cid).authenticated = None
        if not live:
            self._online.pop(key, None)

    def _remember_block(self, account: str, blocked: str, since: float) -> None:
        self._blocks.setdefault(account, {}).setdefault(blocked, since)

    def _forget_block(self, account: str, blocked: str) -> None:
        mine = self._blocks.get(account)
        if mine is not None:
            mine.pop(blocked, None)
            if not mine:
                del self._blocks[account]


# New write keys a send token pays for the checking of (put_group_state): a key's check is ~0.3 ms.
WRITE_KEYS_PER_TOKEN: Final = 4
# Group members a token pays for the reading of (get_group, change_group, group_send; measured on
# 2026-12-03's machine, durable=False): a member read is ~3.4 µs in get_group, ~5 µs in group_send
# (its devices too), ~9 µs in change_group (which reads the list three times), so 32 of them are
# ~110-290 µs, the order of a one-envelope send (~100 µs), the work a token buys elsewhere. A group of
# up to 32 takes one token a request, as before; one of 1,024 takes 32.
MEMBERS_PER_TOKEN: Final = 32
# Copies of a group_send a token pays for the storing of (measured on 2026-12-04's shared machine,
# durable=False, interleaved: a copy ~40-120 µs, its row, id and metadata record; a one-envelope send
# ~120-220 µs on the same core): two copies a token, the work of a send. A send to 1,023 single-device
# members took 32 tokens, for its members, where it did ~120 ms of work; it now takes the burst.
COPIES_PER_TOKEN: Final = 2
# Members create_group writes a token pays for (a row each, ~17-40 µs measured as above): eight a
# token, about a send's work. A group of 1,024 took one token; it takes 128.
ROWS_PER_TOKEN: Final = 8


def _rate_limited(what: str, name: str, rate: Rate, wait: float) -> _Refused:
    """rate_limited by the bucket ``name`` (a Limits field, named in the frame's field), with the wait."""
    return _Refused(
        ErrorCode.RATE_LIMITED,
        f"{what}: over this relay's limit {name.replace('_', ' ')} ({rate}); retry in {wait:.3f} s",
        name,
        retry_after=wait,
    )


def _not_a_member(group: bytes, me: DeviceAddress) -> _Refused:
    """unknown_group: the one answer to a caller not in ``group``, whether or not it exists."""
    return _Refused(
        ErrorCode.UNKNOWN_GROUP, f"no group {group.hex()} with {me.account!r} as a member", "group"
    )


def _check_sorted_keys(keys: tuple[bytes, ...]) -> None:
    """``write_keys`` in one order only, each once: the set the members signed is the list the relay
    stores, and a key named twice would count a member twice."""
    for i in range(1, len(keys)):
        if keys[i] <= keys[i - 1]:
            raise _Refused(
                ErrorCode.INVALID_VALUE,
                f"write_keys must be sorted with no key twice: write_keys[{i}] is "
                + ("the same key as" if keys[i] == keys[i - 1] else "below")
                + f" write_keys[{i - 1}]",
                f"write_keys[{i}]",
            )


def _wire_head(head: SignedTreeHead) -> KeyLogHead:
    """A signed tree head as the wire carries it."""
    return KeyLogHead(
        tree_size=head.tree_size, timestamp=head.timestamp, root_hash=head.root_hash, signature=head.signature
    )
