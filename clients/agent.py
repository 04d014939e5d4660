"""The phone's side of the relay protocol, sans-IO (in the style of h11's ``Connection``).

``DeviceAgent`` wraps a ``clients.session.Device`` and speaks ``relay.wire`` frames. Calls such
as ``register()``, ``login()`` or ``send_text()`` queue request frames; ``handle(frame)`` takes a
frame from the relay and returns what happened, as small event values (``Received``,
``Accepted``, ``Failed``, …), queueing any follow-up requests (an ``Ack`` for a delivered
envelope, a ``Send`` once a fetched bundle has made the sessions). The driver — the simulator's
event heap or a trio connection — drains ``take_outbox()`` and carries the frames; the agent
never touches a socket, a clock or global randomness.

What the agent does on its own, as Signal's clients do:
- fetches a recipient's bundles and runs PQXDH for each of their devices it has no session with;
- answers a stale-devices error by fetching the bundles again and re-sending;
- drops an envelope it has already processed (delivery is at-least-once), and acknowledges it;
- acknowledges an envelope it cannot decrypt (a replay or a forgery) and reports it;
- tops up its one-time prekeys on the relay when they run low;
- reports when a known peer device presents another identity key than the one pinned at first
  contact (``IdentityChanged``, see ``clients.identity``); under the ``block`` policy, or once the
  user has verified the peer, it sends nothing to that key until the user approves it;
- reports when a peer's device list changes between two fetches (``DeviceListChanged``): a new
  device on a contact's account is what a silently added "ghost" device looks like from outside.
"""

from __future__ import annotations

import dataclasses
import os
import uuid as _uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients import transparency as kt
from relaysim.clients.errors import DecryptionError
from relaysim.clients.escrow import EscrowPublicKey
from relaysim.clients.groups import VERSION as SENDER_KEY_VERSION
from relaysim.clients.groups import GroupKeys
from relaysim.clients.identity import IdentityChanged, UntrustedIdentity
from relaysim.clients.keys import BundleError, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.relay.certificates import CertificateError, SenderCertificate, ServerCertificate
from relaysim.relay.custody import CUSTODY_TAG, ContentKey, route_ad

__all__ = [
    "Accepted",
    "AgentEvent",
    "ContactsFound",
    "DeviceAgent",
    "DeviceListChanged",
    "Failed",
    "IdentityChanged",
    "KeyLogChecked",
    "LoggedIn",
    "ProofRequired",
    "ReceiptReceived",
    "Received",
    "Registered",
    "SentTranscript",
    "Undecryptable",
    "UnsignedDevice",
    "sign_device",
]

RNG = Callable[[int], bytes]
PREKEY_BATCH = 20
PREKEY_LOW_WATER = 5
# Signed prekeys (and the last-resort ML-KEM prekey with them) are replaced every 2 days, and a
# replaced one is kept 30 days for messages that were begun with it and are still on their way,
# then deleted: Signal-Android's schedule (RotateSignedPreKeyListener.INTERVAL, 2 days;
# PreKeyUtil.ARCHIVE_AGE, 30 days; github.com/signalapp/Signal-Android).
SIGNED_PREKEY_ROTATION = 2 * 86400.0
PREKEY_ARCHIVE_AGE = 30 * 86400.0
# Renew the sender certificate when less than this many seconds of it are left (ours: an hour).
CERTIFICATE_RENEWAL = 3600.0
# An envelope id is remembered (to drop a second copy of it unread) until this many seconds after the
# relay confirmed our ack of it: an acked envelope is deleted and never delivered again, so only a
# copy already in flight can still come (a push that crossed the fetch that acked it). One that
# came later still would be refused by the ratchet, whose message keys are used once.
SEEN_AFTER_ACK = 3600.0


@dataclass(frozen=True)
class Registered:
    pass


@dataclass(frozen=True)
class ProofRequired:
    """The relay refused a new account for want of a registration proof and asks for a hashcash
    stamp of ``difficulty`` leading zero bits (docs/protocol.md, "Registration proof"). Solving it
    is pure CPU work (``relay.wire.solve_registration_pow``); the driver does it where it suits
    (``clients.net`` in a worker thread) and hands the stamp to ``DeviceAgent.prove_registration``."""

    difficulty: int


@dataclass(frozen=True)
class LoggedIn:
    pass


@dataclass(frozen=True)
class Received:
    sender: PeerAddress  # from the relay's envelope, or from the sealed sender certificate
    plaintext: bytes
    envelope_id: bytes
    relay_timestamp_ms: int
    sealed: bool
    group: bytes | None = None  # the group's distribution id, for a sender-key message


@dataclass(frozen=True)
class ReceiptReceived:
    """A delivery or read receipt from ``sender``'s device for our messages the relay stamped at
    ``timestamps`` (ms). A receipt is an ordinary end-to-end encrypted (and, under sealed sender,
    sealed) message: the relay cannot tell it from a text, except perhaps by its size."""

    sender: PeerAddress
    kind: str  # "delivery" or "read"
    timestamps: tuple[int, ...]
    envelope_id: bytes
    sealed: bool


@dataclass(frozen=True)
class Accepted:
    """The relay has durably accepted a message's envelopes (one per recipient device)."""

    ref: object
    to: str
    envelope_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Undecryptable:
    envelope_id: bytes
    sealed: bool


@dataclass(frozen=True)
class Failed:
    ref: object
    code: str
    message: str
    retry_after_ms: int | None = None  # rate_limited: when the relay would accept it


# "signed-devices": what the primary signs to vouch for a companion device's identity key (the
# signed device list of WhatsApp's multi-device design; this prefix is the simulator's own).
DEVICE_LIST_PREFIX = b"relaysim device list v1:"


def sign_device(primary: Device, companion_identity_key: bytes, rng: RNG = os.urandom) -> bytes:
    """The primary device's XEdDSA signature over a companion's identity key ("signed-devices")."""
    return primary.secrets.identity.sign(DEVICE_LIST_PREFIX + companion_identity_key, rng)


class UnsignedDevice(Exception):
    """A served device the identity model refuses: "signed-devices", a companion carrying no valid
    signature by the primary; "account" (``own``), a device of one's own account with another
    identity key than the account's (Signal's clients trust only their own key for their own
    address)."""

    def __init__(self, peer: PeerAddress, own: bool = False) -> None:
        super().__init__(
            f"device {peer.account}.{peer.device} does not have this account's identity key: refused"
            if own
            else f"device {peer.account}.{peer.device} is not signed by {peer.account}'s primary device: refused"
        )
        self.peer, self.own = peer, own


@dataclass(frozen=True)
class ContactsFound:
    """The relay's answer to ``discover_contacts``: which of the accounts asked about exist."""

    registered: tuple[str, ...]


@dataclass(frozen=True)
class DeviceListChanged:
    """A fetch of ``account``'s bundles showed other devices than the previous fetch did.

    ``added`` / ``removed`` are device ids; ``identity_changed`` are devices still listed whose
    identity key is not the one this device had a session with (a reinstall, or an impostor).
    Signal shows these as "safety number changed" and new-device notices; the agent only
    reports them (it still sends to every device the relay lists, as Signal's clients do).
    """

    account: str
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    identity_changed: tuple[int, ...] = ()


@dataclass(frozen=True)
class SentTranscript:
    """A sync copy: another device of this account sent ``plaintext`` to ``destination`` (Signal's
    SyncMessage.Sent), so every device of the account shows the conversation."""

    sender: PeerAddress
    destination: str
    plaintext: bytes
    envelope_id: bytes
    relay_timestamp_ms: int


@dataclass(frozen=True)
class KeyLogChecked:
    """Key transparency: this device checked the keys of ``account``'s bundle against the relay's
    signed key log (clients.transparency). ``unlogged`` are devices whose key has no valid inclusion
    proof; ``reason`` says why the whole proof was refused, if it was (None: head and chain good)."""

    account: str
    tree_size: int
    logged: tuple[int, ...]
    unlogged: tuple[int, ...]
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None and not self.unlogged


AgentEvent = (
    Registered
    | SentTranscript
    | ProofRequired
    | LoggedIn
    | Received
    | ReceiptReceived
    | Accepted
    | Undecryptable
    | Failed
    | ContactsFound
    | DeviceListChanged
    | IdentityChanged
    | KeyLogChecked
)

# What a message carries besides text, as Signal's Content message does (receipts, and here cover
# traffic): a control content starts with CONTROL, then a kind byte. Texts are carried as they are.
CONTROL = b"\x00\xfe"
_RECEIPT_KINDS = {b"D": "delivery", b"R": "read"}
_COVER = b"C"
_MAILBOX = b"M"  # a sealed conversation's mailbox: where to write back (see DeviceAgent.new_mailbox)
_SENDER_KEY = b"K"  # a SenderKeyDistributionMessage, over the pairwise session (clients.groups)
_SYNC = b"S"  # a sync copy of a 1:1 message this account sent (then: destination length, destination)
MAX_GROUP_BACKLOG = 256  # group messages kept while their sender key has not arrived yet
SIGNAL_PAD_BLOCK = 160  # libsignal-service's PushTransportDetails


def pad(plaintext: bytes, mode: str) -> bytes:
    """``plaintext`` padded before encryption: ``signal`` as PushTransportDetails does (a 0x80
    terminator, then zeros, to one byte short of a multiple of 160), ``pow2`` to a power of two
    (at least 32 bytes), ``none`` as it is."""
    if mode == "none":
        return plaintext
    if mode == "signal":
        size = -(-(len(plaintext) + 2) // SIGNAL_PAD_BLOCK) * SIGNAL_PAD_BLOCK - 1
    elif mode == "pow2":
        size = max(32, 1 << len(plaintext).bit_length())
    else:
        raise ValueError(f"unknown padding {mode!r}: expected none, signal or pow2")
    return plaintext + b"\x80" + bytes(size - len(plaintext) - 1)


def unpad(padded: bytes, mode: str) -> bytes:
    if mode == "none":
        return padded
    body = padded.rstrip(b"\x00")
    if not body.endswith(b"\x80"):
        raise DecryptionError()
    return body[:-1]


@dataclass
class _Outgoing:
    ref: object
    to: str
    plaintext: bytes
    sealed: bool
    attempts: int = 0
    group: _GroupSend | None = None  # one account's part of a group message: wait for the others


@dataclass
class _GroupSend:
    """A group message waiting for the device lists of its members' accounts (``DeviceAgent.send_group``)."""

    ref: object
    group_id: bytes
    members: tuple[str, ...]
    plaintext: bytes
    waiting: set[str]
    targets: tuple[str, ...] = ()  # the accounts that get the message (all members when empty)


@dataclass
class DeviceAgent:
    device: Device
    registration_id: int
    delivery_token: bytes
    rng: RNG = os.urandom
    trust_root: bytes | None = None  # needed to open sealed envelopes
    tokens: dict[str, bytes] = field(default_factory=dict)  # contacts' delivery tokens (sealed sender)
    # Not end-to-end: bodies sealed under a key a provider or an enterprise also holds (consumer
    # BBM's global key, Telegram's cloud chats, a BES server's key) instead of the Double Ratchet.
    content_key: ContentKey | None = None
    # How many one-time prekeys (X25519 and ML-KEM) to publish at a time.
    prekey_batch: int = PREKEY_BATCH
    kem_prekey_batch: int = PREKEY_BATCH
    # Design choices (sims.scenario's [defences]): how plaintexts are padded, and whether bundles
    # are fetched with the recipient's delivery token instead of on the logged-in connection.
    padding: str = "signal"  # on by default, as Signal's clients pad
    unauthenticated_fetch: bool = False
    # How this provider's clients tie devices to an account (relay.profiles.Profile.identity_model):
    # "account": one identity key per account, so a device with another is "safety number changed";
    # "signed-devices": a companion device (not device 1) is used only with the primary's signature
    # over its identity key (``device_signature`` below); "per-device": keys taken as served.
    identity_model: str = "per-device"
    # Contact Key Verification (iMessage, iOS 17.2): under "per-device", a device added to a known
    # account is reported as an identity change instead of being taken silently.
    key_verification: bool = False
    # "signed-devices": the primary's signature over a companion device's identity key, for
    # (account, device); None when it has none. WhatsApp's clients carry it with the companion's
    # keys (the signed device list); the simulation hands it over out of band.
    device_signature: Callable[[str, int], bytes | None] | None = None
    # Send a sync copy of each 1:1 message to this account's other devices (Signal's
    # SyncMessage.Sent), once the agent knows there are any: the relay's ``needs_sync`` on an
    # authenticated send, or ``linked_devices_known`` (the primary linked one itself).
    sync_copies: bool = True
    # Key transparency ([defences] key_transparency): ask for the log's proofs with every bundle,
    # check each key's inclusion under a head signed by the server key, and refuse unlogged keys.
    key_transparency: bool = False
    # Seconds since the epoch, by which sender certificates expire: required, keyword-only. There is
    # no default, because a default clock (time 0) would accept a certificate that expired in 1970.
    # A real device passes time.time; a simulation passes its simulated clock.
    clock: Callable[[], float] = field(kw_only=True)
    # Sealed conversations (Martiny et al., NDSS 2021; DeviceAgent.new_mailbox): the mailbox each peer
    # asked us to write to, and the mailboxes we opened for peers.
    reply_to: dict[str, str] = field(default_factory=dict, kw_only=True)
    mailboxes: dict[str, DeviceAgent] = field(default_factory=dict, kw_only=True)
    _introducing: dict[str, bytes] = field(default_factory=dict, kw_only=True, repr=False)
    # The operator's registration token (``relay serve --registration-token-file``), sent as the
    # proof of a new account; None on a relay that asks for a hashcash stamp or for nothing.
    registration_token: bytes | None = field(default=None, kw_only=True)
    # Seconds between signed-prekey rotations (checked at each login); None: never on its own.
    signed_prekey_rotation: float | None = field(default=SIGNED_PREKEY_ROTATION, kw_only=True)
    # Upload a fresh batch of one-time prekeys when the relay says they run low (prekeys_left).
    answer_prekeys_left: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        _p.require_key_source(self.rng, f"DeviceAgent({self.device.address.account!r})")
        self._next_id = 1
        self._outbox: list[wire.Request] = []
        self._pending: dict[int, tuple[str, object]] = {}
        self._waiting_bundle: dict[str, list[_Outgoing]] = {}
        self._devices: dict[str, tuple[int, ...]] = {}  # the recipient devices we last learnt of
        self._listed: dict[str, tuple[int, ...]] = {}  # ... kept across stale-device refetches
        self._seen: set[bytes] = set()
        self._acked: deque[tuple[float, tuple[bytes, ...]]] = deque()  # (when confirmed, ids), oldest first
        self._events: list[AgentEvent] = []
        self.certificate: bytes | None = None
        self._certificate_expires = 0.0
        self._waiting_certificate: list[_Outgoing] = []
        self.authenticated = False
        self._uploaded_one_time: set[int] = set()
        self.groups = GroupKeys(self.device.address, self.rng)
        self._group_backlog: list[wire.Envelope] = []
        self._multi_device = False  # this account has other devices, as far as this device knows
        self._handouts = 0
        # Group sends and sender key handouts whose answer a lost connection took: sent again after login.
        self._resend: list[_Outgoing] = []
        self.key_log_heads: list[kt.TreeHead] = []  # every signed key-log head this device was shown

        self._last_register: wire.Register | None = None  # kept to send again with a proof
        self._stamped = False  # a stamp was sent with it: a second refusal is final
        self._signed_made_at: float | None = None  # when the current signed prekey was published
        self._retired: dict[tuple[str, int], float] = {}  # ("spk"|"kem", id) -> when replaced

    def linked_devices_known(self) -> None:
        """This device knows its account has other devices (it linked one): sync copies from now on."""
        self._multi_device = True

    # --- plumbing -------------------------------------------------------------------------

    @property
    def account(self) -> str:
        return self.device.address.account

    @property
    def device_id(self) -> int:
        return self.device.address.device

    def _request(self, frame_type: type[wire.Request], context: object = None, **fields: object) -> None:
        rid = self._next_id
        self._next_id += 1
        frame = frame_type(id=rid, **fields)
        self._pending[rid] = (frame_type.kind, context)
        self._outbox.append(frame)

    def message_ref(self, request_id: int) -> object:
        """The ``ref`` of the message a pending send request carries, or None."""
        pending = self._pending.get(request_id)
        if pending is not None and isinstance(pending[1], _Outgoing):
            return pending[1].ref
        return None

    def take_outbox(self) -> list[wire.Request]:
        out, self._outbox = self._outbox, []
        return out

    # --- mandates imposed on the device ---------------------------------------------------

    def comply_with_escrow(self, escrow: EscrowPublicKey | None) -> None:
        """A key-escrow mandate (``clients.escrow``): from now on every message key the device uses
        is also sealed to ``escrow``; None lifts it."""
        self.device.escrow = escrow

    def use_content_key(self, key: ContentKey | None) -> None:
        """Seal message bodies under ``key`` from now on instead of running the Double Ratchet (a
        global-key mandate, as consumer BBM's); None goes back to end-to-end encryption."""
        self.content_key = key

    # --- requests -------------------------------------------------------------------------

    def register(
        self, one_time: int | None = None, kem_one_time: int | None = None, *, proof: bytes | None = None
    ) -> None:
        """Publish the device's keys. ``proof`` (else ``registration_token``) goes in
        ``register.proof``; a relay that wants a hashcash stamp answers with ``ProofRequired``."""
        bundle = self.device.generate_prekeys(
            self.prekey_batch if one_time is None else one_time,
            self.kem_prekey_batch if kem_one_time is None else kem_one_time,
        )
        s = self.device.secrets
        last_resort = next(k for _seed, k in s.kem.values() if k.last_resort)
        self._uploaded_one_time = set(s.one_time)
        self._request(
            wire.Register,
            account=self.account,
            device=self.device_id,
            registration_id=self.registration_id,
            identity_key=self.device.identity_key,
            signed_prekey=_signed(bundle.signed_prekey),
            one_time_prekeys=tuple(wire.Prekey(id=i, public=p.public) for i, p in sorted(s.one_time.items())),
            kem_prekeys=tuple(_kem(k) for _i, (_seed, k) in sorted(s.kem.items()) if not k.last_resort),
            last_resort_kem_prekey=_kem(last_resort),
            delivery_token=self.delivery_token,
            proof=proof if proof is not None else self.registration_token,
        )
        self._last_register = self._outbox[-1]  # type: ignore[assignment]
        self._stamped = proof is not None
        self._signed_made_at = self.clock()
        s.kem.forget_publics()  # uploaded: the relay has them; the seeds re-derive them if need be

    def prove_registration(self, stamp: bytes | None = None) -> None:
        """Send the last ``register`` again, with ``stamp`` as its proof if given (the answer to
        ``ProofRequired``; without one, after ``rate_limited`` once ``retry_after_ms`` has passed:
        the driver keeps the time). The same keys, so a stamp, bound to the account and the
        identity key, still fits."""
        last = self._last_register
        if last is None:
            raise ValueError("prove_registration: no register was sent to send again")
        if stamp is not None:
            self._stamped = True
            last = dataclasses.replace(last, proof=stamp)
        self._request(
            wire.Register,
            **{f.name: getattr(last, f.name) for f in dataclasses.fields(last) if f.name != "id"},
        )
        self._last_register = self._outbox[-1]  # type: ignore[assignment]

    def rotate_signed_prekeys(self) -> None:
        """Publish a new signed prekey (and a new last-resort ML-KEM prekey) in ``upload_prekeys``.
        The old private keys stay for ``PREKEY_ARCHIVE_AGE`` seconds, for sessions begun from the old
        bundle whose first message is still on its way, then go (``_delete_retired``)."""
        s = self.device.secrets
        now = self.clock()
        fields: dict[str, object] = {}
        if s.current_signed_id >= 0:
            self._retired[("spk", s.current_signed_id)] = now
        fields["signed_prekey"] = _signed(s.new_signed_prekey(self.rng))
        if self.device.pq:
            for i in [i for i in s.kem if s.kem.last_resort(i)]:
                self._retired.setdefault(("kem", i), now)
            (last_resort,) = s.new_kem_prekeys(1, last_resort=True, rng=self.rng)
            fields["last_resort_kem_prekey"] = _kem(last_resort)
        self._signed_made_at = now
        self._request(wire.UploadPrekeys, **fields)
        s.kem.forget_publics()

    def _rotate_if_due(self) -> None:
        now = self.clock()
        if self._signed_made_at is None:
            self._signed_made_at = now  # registered before this agent was made: count from now
        elif (
            self.signed_prekey_rotation is not None
            and now - self._signed_made_at >= self.signed_prekey_rotation
        ):
            self.rotate_signed_prekeys()
        self._delete_retired(now)

    def _delete_retired(self, now: float) -> None:
        s = self.device.secrets
        for (kind, i), when in list(self._retired.items()):
            if now - when >= PREKEY_ARCHIVE_AGE:
                if kind == "spk":
                    s.signed.pop(i, None)
                elif i in s.kem:
                    del s.kem[i]
                del self._retired[(kind, i)]

    def rotate_delivery_token(self) -> bytes:
        """A new delivery token for sealed sends to this account (``upload_prekeys``): the old one
        stops opening the account as soon as the relay has it. Contacts need the new one, as
        Signal's contacts learn a new profile key. Returns it."""
        self.delivery_token = self.rng(len(self.delivery_token) or 16)
        self._request(wire.UploadPrekeys, delivery_token=self.delivery_token)
        return self.delivery_token

    def login(self) -> None:
        """Start authentication: the relay answers with a challenge the identity key signs."""
        self.authenticated = False
        self._request(wire.AuthChallenge, account=self.account, device=self.device_id)

    def receive(self, limit: int = 100) -> None:
        self._request(wire.Receive, limit=limit)

    def ping(self) -> None:
        self._request(wire.Ping)

    def discover_contacts(self, accounts: Iterable[str]) -> None:
        """Ask which of ``accounts`` (at most ``wire.MAX_CONTACTS``) are registered; the answer
        is a ``ContactsFound`` event. Whether the relay keeps the list is up to the relay."""
        self._request(wire.DiscoverContacts, contacts=tuple(accounts))

    def block(self, account: str) -> None:
        """Ask the relay to drop ``account``'s (non-sealed) sends to this account."""
        self._request(wire.Block, account=account)

    def unblock(self, account: str) -> None:
        self._request(wire.Unblock, account=account)

    def send_text(self, to: str, plaintext: bytes, ref: object = None, *, sealed: bool = False) -> None:
        """Send ``plaintext`` to every device of account ``to`` (fetching bundles first if needed)."""
        to, plaintext = self._mailbox_route(to, plaintext)
        out = _Outgoing(ref, to, plaintext, sealed)
        devices = self._devices.get(to)
        if devices is None or (
            self.content_key is None and not all(self.device.has_session(PeerAddress(to, d)) for d in devices)
        ):
            self._fetch(to, out)
            return
        self._send(out)

    def send_receipt(
        self,
        to: str,
        timestamps: Iterable[int],
        kind: str = "delivery",
        ref: object = None,
        *,
        sealed: bool = False,
    ) -> None:
        """Tell ``to``'s devices that their messages stamped ``timestamps`` (ms) were delivered (or read),
        in one message, as Signal's ReceiptMessage does."""
        code = next(k for k, v in _RECEIPT_KINDS.items() if v == kind)
        body = CONTROL + code + b"".join(int(t).to_bytes(8, "big") for t in timestamps)
        self.send_text(to, body, ref, sealed=sealed)

    def send_cover(self, to: str, size: int = 32, ref: object = None, *, sealed: bool = True) -> None:
        """A dummy message (cover traffic): ``to`` decrypts it and drops it, without a receipt."""
        self.send_text(to, CONTROL + _COVER + self.rng(max(0, size)), ref, sealed=sealed)

    def _sync(self, out: _Outgoing) -> None:
        """After a 1:1 message to another account went out, its sync copy to this account's other
        devices (authenticated, never sealed: it goes to oneself), as Signal's clients send one."""
        if (
            not self.sync_copies
            or not self._multi_device
            or out.to == self.account
            or out.group is not None
            or out.plaintext.startswith(CONTROL)
            or self.content_key is not None
        ):
            return
        to = out.to.encode()
        body = CONTROL + _SYNC + len(to).to_bytes(1, "big") + to + out.plaintext
        self.send_text(self.account, body, ("sync", out.ref))

    def _fetch(self, to: str, out: _Outgoing) -> None:
        waiting = self._waiting_bundle.setdefault(to, [])
        waiting.append(out)
        if len(waiting) == 1:
            use_token = not self.authenticated or self.unauthenticated_fetch
            token = self.tokens.get(to) if use_token else None
            self._request(
                wire.FetchBundle,
                context=to,
                account=to,
                delivery_token=token,
                key_log=True if self.key_transparency else None,
            )

    def _send(self, out: _Outgoing) -> None:
        if out.group is not None:
            self._group_ready(out.group, out.to)
            return
        out.attempts += 1
        devices = self._devices[out.to]
        if not devices:
            return  # a sync copy, and this account has no other device after all
        plaintext = pad(out.plaintext, self.padding)
        if self.content_key is not None:
            key, ad = self.content_key, route_ad(out.to)
            envelopes = tuple(
                wire.OutgoingEnvelope(device=d, body=key.seal(plaintext, ad, self.rng)) for d in devices
            )
            self._request(wire.Send, context=out, to=out.to, envelopes=envelopes)
            return
        if out.sealed:
            if out.to not in self.tokens:
                self._fail(out, "not_ready", f"sealed sender needs {out.to!r}'s delivery token")
                return
            if self.certificate is None or self._certificate_expires - self.clock() < CERTIFICATE_RENEWAL:
                # Certificates are short-lived (about a day): get a fresh one first, then send.
                if not self.authenticated:
                    self._fail(out, "not_ready", "sealed sender needs a sender certificate: log in first")
                    return
                self._waiting_certificate.append(out)
                if len(self._waiting_certificate) == 1:
                    self.request_certificate()
                return
            envelopes = tuple(
                wire.OutgoingEnvelope(
                    device=d, body=self.device.seal(PeerAddress(out.to, d), plaintext, self.certificate)
                )
                for d in devices
            )
            self._request(
                wire.SealedSend,
                context=out,
                to=out.to,
                delivery_token=self.tokens[out.to],
                envelopes=envelopes,
            )
        else:
            envelopes = tuple(
                wire.OutgoingEnvelope(device=d, body=self.device.encrypt(PeerAddress(out.to, d), plaintext))
                for d in devices
            )
            self._request(wire.Send, context=out, to=out.to, envelopes=envelopes)

    # --- sealed conversations: ephemeral mailboxes (Martiny et al., NDSS 2021) -------------------

    def new_mailbox(self, peer: str, rng: RNG | None = None) -> DeviceAgent:
        """Open a sealed conversation with ``peer``: a fresh account (a random UUID for a name, a fresh
        identity key and delivery token, nothing in common with this account) for ``peer``'s replies
        and receipts, as Martiny, Kaptchuk, Aviv, Roche and Wustrow propose ("Improving Signal's
        Sealed Sender", NDSS 2021). Returns the mailbox's agent; the driver registers it (``register()``)
        and carries its frames over a connection of its own, never this one's nor from this one's
        address, or the relay joins the two. Until the mailbox hears from ``peer``
        (``mailbox_answered``), every text to ``peer`` carries the mailbox's name and delivery token
        inside the end-to-end encryption, so only ``peer`` learns where to write."""
        r = rng or self.rng
        name = str(_uuid.UUID(bytes=r(16), version=4))
        device = Device(name, 1, rng=r, pq=self.device.pq, deterministic=self.device.deterministic)
        box = DeviceAgent(
            device,
            registration_id=1 + int.from_bytes(r(2), "big") % 16380,
            delivery_token=r(32),
            rng=r,
            trust_root=self.trust_root,
            clock=self.clock,
            prekey_batch=self.prekey_batch,
            kem_prekey_batch=self.kem_prekey_batch,
            padding=self.padding,
            unauthenticated_fetch=True,
        )
        raw = name.encode()
        self.mailboxes[peer] = box
        self._introducing[peer] = CONTROL + _MAILBOX + box.delivery_token + bytes((len(raw),)) + raw
        return box

    def mailbox_answered(self, peer: str) -> None:
        """``peer`` has written to our mailbox: it knows the address, stop carrying it."""
        self._introducing.pop(peer, None)

    def _mailbox_route(self, to: str, plaintext: bytes) -> tuple[str, bytes]:
        """Where a message to ``to`` goes (the mailbox ``to`` gave us, if any), and what it carries
        (a text to a peer we opened a mailbox for carries its address until the peer has used it)."""
        intro = self._introducing.get(to)
        if intro is not None and not plaintext.startswith(CONTROL):
            plaintext = intro + plaintext
        return self.reply_to.get(to, to), plaintext

    def _mailbox_introduced(self, sender: str, plaintext: bytes) -> bytes:
        """``sender`` (authenticated by the session or its sender certificate) asks us to write to a
        mailbox from now on. Returns the text it carried."""
        head = len(CONTROL + _MAILBOX)
        token, size = plaintext[head : head + 32], plaintext[head + 32 : head + 33]
        if len(token) < 32 or not size:
            return b""
        end = head + 33 + size[0]
        try:
            name = plaintext[head + 33 : end].decode()
        except UnicodeDecodeError:
            return b""
        if name and len(plaintext) >= end:
            self.reply_to[sender] = name
            self.tokens[name] = token
        return plaintext[end:]

    # --- groups: sender keys, client-side fan-out (clients.groups) ------------------------------

    def send_group(
        self, group_id: bytes, members: Iterable[str], plaintext: bytes, ref: object = None
    ) -> None:
        """Send ``plaintext`` to group ``group_id`` (a 16-byte distribution id) with one sender-key
        encryption, to every device of every account in ``members`` and to this account's own other
        devices (their sync copy), as Signal's clients do (client-side fan-out: one ``Send`` per
        account, every envelope carrying the same ``SenderKeyMessage``).

        The device lists are fetched first where unknown; then our sender key goes, over the pairwise
        sessions, to every device that lacks it (a new sender key first if a device that held ours is
        no longer in the group), and then the group message. The relay's ``Send`` wants an envelope
        for every current device of an account, so a distribution message goes to all of an account's
        devices when any of them needs it (a repeat is ignored by the devices that have it).

        Not covered yet: sealed sender for group messages, and key escrow (group messages are not
        escrowed)."""
        accounts = tuple(sorted(set(members) | {self.account}))
        gs = _GroupSend(ref, group_id, accounts, plaintext, set(accounts))
        self._group_fetch(gs)

    def _group_fetch(self, gs: _GroupSend) -> None:
        for to in sorted(gs.waiting):
            devices = self._devices.get(to)
            if devices is None or not all(self.device.has_session(PeerAddress(to, d)) for d in devices):
                self._fetch(to, _Outgoing(gs.ref, to, gs.plaintext, False, group=gs))
            else:
                gs.waiting.discard(to)
        if not gs.waiting:
            self._group_dispatch(gs)

    def _group_ready(self, gs: _GroupSend, to: str) -> None:
        if gs.targets and to in gs.waiting:  # a part sent again after a stale-devices answer
            gs.waiting.discard(to)
            self._group_dispatch(gs)
            return
        if to in gs.waiting:
            gs.waiting.discard(to)
            if not gs.waiting:
                self._group_dispatch(gs)

    def _group_dispatch(self, gs: _GroupSend) -> None:
        devices = {a: self._devices.get(a, ()) for a in gs.members}
        recipients = [PeerAddress(a, d) for a, ds in devices.items() for d in ds]
        needing = {peer.account for peer, _ in self.groups.prepare_send(gs.group_id, recipients)}
        skdm = self.groups.distribution(gs.group_id).to_bytes()
        for a in sorted(needing):
            # A handout is a message of its own (ref ("sender_key", us, n)): resent after a lost
            # connection, fetched again on a stale-devices answer, and told apart by the driver.
            self._handouts += 1
            ref = ("sender_key", self.account, self.device_id, self._handouts)
            self._send(_Outgoing(ref, a, CONTROL + _SENDER_KEY + skdm, False))
        body = self.groups.encrypt(gs.group_id, pad(gs.plaintext, self.padding))
        for a in gs.targets or gs.members:
            if not devices[a]:
                continue  # our own account, with no other device
            envelopes = tuple(wire.OutgoingEnvelope(device=d, body=body) for d in devices[a])
            part = _GroupSend(gs.ref, gs.group_id, gs.members, gs.plaintext, set(), (a,))
            out = _Outgoing(gs.ref, a, gs.plaintext, False, attempts=1, group=part)
            self._request(wire.Send, context=out, to=a, envelopes=envelopes)

    def leave_group(self, group_id: bytes) -> None:
        """Forget our sender key for ``group_id`` (we send nothing more to it). The keys other members gave
        us are kept: a message they wrote while we were members may still be queued for a phone that was
        offline, and it is ours to read; what they write after we left uses a new sender key (they rotate
        when a holder of theirs leaves), which we never get."""
        self.groups.own.pop(group_id, None)
        self.groups.shared_with.pop(group_id, None)

    def _group_receive(self, env: wire.Envelope) -> None:
        """A ``SenderKeyMessage``: decrypt it, or keep it until its sender's key arrives."""
        assert env.source_account is not None and env.source_device is not None
        sender = PeerAddress(env.source_account, env.source_device)
        try:
            group, plaintext = self.groups.decrypt(sender, env.body)
            plaintext = unpad(plaintext, self.padding)
        except DecryptionError:
            if self._holds(sender, env.body):  # a repeat (a duplicated send) or a forgery: reject it now
                self._events.append(Undecryptable(env.id, env.sealed))
            elif len(self._group_backlog) < MAX_GROUP_BACKLOG:
                self._group_backlog.append(env)  # its distribution message may still be on its way
            else:
                self._events.append(Undecryptable(env.id, env.sealed))
            return
        self._events.append(Received(sender, plaintext, env.id, env.timestamp, env.sealed, group))

    def _holds(self, sender: PeerAddress, body: bytes) -> bool:
        try:
            return self.groups.holds(sender, body)
        except DecryptionError:
            return True  # not a sender key message at all: no key will make it one

    def _sender_key_arrived(self, sender: PeerAddress, skdm: bytes) -> None:
        try:
            self.groups.process(sender, skdm)
        except DecryptionError:
            return
        waiting, self._group_backlog = self._group_backlog, []
        for env in waiting:
            if (env.source_account, env.source_device) == (sender.account, sender.device):
                self._group_receive(env)
            else:
                self._group_backlog.append(env)

    def _fail(self, out: _Outgoing, code: str, message: str, retry_after_ms: int | None = None) -> None:
        self._events.append(Failed(out.ref, code, message, retry_after_ms))

    # --- frames from the relay ------------------------------------------------------------

    def handle(self, frame: wire.Response) -> list[AgentEvent]:
        """Process one frame from the relay. Returns events (with any from earlier calls that failed);
        follow-up requests go to the outbox."""
        self._handle(frame)
        self._events.extend(self.device.identities.take_changes())
        events, self._events = self._events, []
        return events

    # --- what the user does ---------------------------------------------------------------

    def verify_identity(self, peer: PeerAddress, key: bytes) -> None:
        """The user compared safety numbers with ``peer`` for ``key`` and they matched: from now on a
        key change of ``peer`` is blocking, whatever the policy."""
        self.device.identities.verify(peer, key)

    def approve_identity(self, peer: PeerAddress, key: bytes) -> None:
        """The user accepts ``peer``'s new ``key`` (after an ``IdentityChanged``) without verifying it."""
        self.device.identities.approve(peer, key)

    def _handle(self, frame: wire.Response) -> None:
        if isinstance(frame, wire.Deliver):
            self._envelopes((frame.envelope,))
            return
        pending = self._pending.pop(frame.id, None)
        if pending is None:
            return  # a late answer to a request we no longer track
        kind, context = pending
        if isinstance(frame, wire.ErrorFrame):
            self._error(kind, context, frame)
        elif isinstance(frame, wire.Registered):
            self._last_register = None  # nothing left to prove (and ~5 KiB of public keys per phone)
            self._events.append(Registered())
        elif isinstance(frame, wire.Challenge):
            signature = self.device.secrets.identity.sign(
                wire.auth_message(frame.nonce, self.account, self.device_id), self.rng
            )
            self._request(wire.Authenticate, nonce=frame.nonce, signature=signature)
        elif isinstance(frame, wire.Authenticated):
            self.authenticated = True
            self._events.append(LoggedIn())
            self._resume()
            self._relay_low(frame.prekeys_left)
            self._rotate_if_due()
        elif isinstance(frame, wire.SenderCertificateResponse):
            self.certificate = frame.certificate
            try:
                self._certificate_expires = SenderCertificate.decode(frame.certificate).expires
            except CertificateError:
                self._certificate_expires = 0
            waiting, self._waiting_certificate = self._waiting_certificate, []
            if self._certificate_expires - self.clock() < CERTIFICATE_RENEWAL:
                for out in waiting:
                    self._fail(
                        out, "bad_certificate", "the relay issued an unusable or expired sender certificate"
                    )
            else:
                for out in waiting:
                    self._send(out)
        elif isinstance(frame, wire.Bundle):
            self._bundles(str(context), frame)
        elif isinstance(frame, wire.Sent):
            if context == _SENDER_KEY:
                return  # a sender key distribution went out
            assert isinstance(context, _Outgoing)
            self._events.append(Accepted(context.ref, context.to, tuple(frame.envelope_ids)))
            if frame.needs_sync:
                self._multi_device = True
            self._sync(context)
        elif isinstance(frame, wire.Envelopes):
            self._envelopes(frame.envelopes)
            self._relay_low(frame.prekeys_left)
            if frame.more:
                self.receive()
        elif isinstance(frame, wire.ContactsFound):
            self._events.append(ContactsFound(tuple(frame.registered)))
        elif isinstance(frame, wire.Acked) and isinstance(context, tuple):
            self._forget_acked(context)

    def request_certificate(self) -> None:
        self._request(wire.GetSenderCertificate)

    def connection_lost(self) -> None:
        """The driver's word that the connection to the relay closed: no answer will come to any
        request in flight on it. Requests are forgotten (a late answer is ignored); messages that
        were waiting for a prekey bundle or a sender certificate stay queued, and are asked for
        again once the device has logged in on its next connection (see ``_resume``). A send in
        flight is the driver's to account for: the relay either accepted it or never saw it."""
        for _kind, context in self._pending.values():
            if isinstance(context, _Outgoing) and (context.group is not None or _is_handout(context)):
                self._resend.append(context)
        self._pending.clear()
        self._outbox.clear()
        self.authenticated = False

    def _resume(self) -> None:
        """After a login: ask again for what queued messages still wait on."""
        asked = {(kind, context) for kind, context in self._pending.values() if isinstance(context, str)}
        for to, waiting in self._waiting_bundle.items():
            if waiting and (wire.FetchBundle.kind, to) not in asked:
                self._request(
                    wire.FetchBundle,
                    context=to,
                    account=to,
                    delivery_token=None,
                    key_log=True if self.key_transparency else None,
                )
        if self._waiting_certificate and not any(
            kind == wire.GetSenderCertificate.kind for kind, _ in self._pending.values()
        ):
            self.request_certificate()
        # Sender key handouts first, then group messages: the relay may have taken them before the
        # connection went (a repeat is then dropped by the member devices), or never seen them.
        resend, self._resend = self._resend, []
        for out in sorted(resend, key=lambda o: not _is_handout(o)):
            out.attempts = 0
            if out.group is not None:
                self._group_dispatch(out.group)
            elif out.to in self._devices:
                self._send(out)
            else:
                self._fetch(out.to, out)

    def _error(self, kind: str, context: object, frame: wire.ErrorFrame) -> None:
        if isinstance(context, _Outgoing):
            if frame.code == wire.ErrorCode.STALE_DEVICES and context.attempts < 3:
                self._devices.pop(context.to, None)
                if context.group is not None:  # one account's part of a group message: fetch, then again
                    context.attempts += 1
                    context.group.waiting = {context.to}
                self._fetch(context.to, context)
                return
            self._fail(context, frame.code, frame.message, frame.retry_after_ms)
        elif kind == "fetch_bundle":
            for out in self._waiting_bundle.pop(str(context), []):
                self._fail(out, frame.code, frame.message)
        elif (
            kind == "register"
            and frame.code == wire.ErrorCode.REGISTRATION_PROOF
            and frame.registration_pow is not None
            and not self._stamped
        ):
            self._events.append(ProofRequired(frame.registration_pow))
        else:
            self._events.append(Failed(kind, frame.code, frame.message, frame.retry_after_ms))

    def _check_key_log(self, account: str, frame: wire.Bundle) -> KeyLogChecked:
        """Check every key of the bundle against the relay's signed key log (clients.transparency)."""
        devices = tuple(sorted(b.device for b in frame.devices))
        proof = frame.key_log
        if proof is None:
            return KeyLogChecked(account, 0, (), devices, "the relay sent no key-log proof")
        if self.trust_root is None:
            return KeyLogChecked(account, 0, (), devices, "no trust root to check the server certificate")
        try:
            cert = ServerCertificate.decode(proof.server_certificate)
            cert.verify(self.trust_root)
        except CertificateError as exc:
            return KeyLogChecked(account, 0, (), devices, f"server certificate: {exc}")
        h = proof.head
        head = kt.TreeHead(h.tree_size, h.timestamp, h.root_hash, h.signature)
        if not head.verify(cert.public_key):
            return KeyLogChecked(
                account, h.tree_size, (), devices, "the tree head's signature does not verify"
            )
        self.key_log_heads.append(head)
        paths = {i.device: i for i in proof.inclusions}
        logged: list[int] = []
        unlogged: list[int] = []
        for b in frame.devices:
            i = paths.get(b.device)
            leaf = wire.kt_leaf(account, b.device, b.identity_key)
            good = i is not None and kt.verify_inclusion(leaf, i.leaf_index, h.tree_size, i.path, h.root_hash)
            (logged if good else unlogged).append(b.device)
        return KeyLogChecked(account, h.tree_size, tuple(sorted(logged)), tuple(sorted(unlogged)))

    def _bundles(self, account: str, frame: wire.Bundle) -> None:
        waiting = self._waiting_bundle.pop(account, [])
        if self.key_transparency:
            checked = self._check_key_log(account, frame)
            self._events.append(checked)
            if not checked.ok:  # a key no one else can see in the log: send nothing to this account
                why = (
                    checked.reason or f"devices {list(checked.unlogged)} of {account} are not in the key log"
                )
                for out in waiting:
                    self._fail(out, "key_not_logged", why)
                return
        changed: list[int] = []
        try:
            for b in frame.devices if self.content_key is None else ():
                if account == self.account and b.device == self.device_id:
                    continue  # our own bundle, in a fetch of our account for our other devices
                peer = PeerAddress(account, b.device)
                if not self._device_trusted(frame, peer, b.identity_key):
                    raise UnsignedDevice(
                        peer, own=account == self.account and self.identity_model == "account"
                    )
                known = self.device.peer_identity(peer)
                if known is not None and known != b.identity_key:
                    changed.append(b.device)
                if known is None or known != b.identity_key or not self.device.has_session(peer):
                    self.device.start_session(peer, _bundle(b))
        except BundleError as exc:  # a forged bundle: send nothing
            for out in waiting:
                self._fail(out, "bad_bundle", str(exc))
            return
        except UntrustedIdentity as exc:  # a changed identity key the user has not approved
            for out in waiting:
                self._fail(out, "untrusted_identity", str(exc))
            return
        except UnsignedDevice as exc:  # "signed-devices": a companion without the primary's signature
            for out in waiting:
                self._fail(out, "foreign_identity" if exc.own else "unsigned_device", str(exc))
            return
        devices = tuple(sorted(b.device for b in frame.devices))
        if account == self.account:
            devices = tuple(d for d in devices if d != self.device_id)
        before = self._listed.get(account)
        if before is not None and (devices != before or changed):
            self._events.append(
                DeviceListChanged(
                    account,
                    added=tuple(d for d in devices if d not in before),
                    removed=tuple(d for d in before if d not in devices),
                    identity_changed=tuple(changed),
                )
            )
        self._listed[account] = devices
        self._devices[account] = devices
        for out in waiting:
            self._send(out)

    def _device_trusted(self, frame: wire.Bundle, peer: PeerAddress, key: bytes) -> bool:
        """The identity model's check of one served device of another account, before any session
        with it. False: refuse it ("signed-devices", no valid signature by the primary). Raises
        ``UntrustedIdentity`` for a blocked change ("account", or "per-device" with Contact Key
        Verification); a change let through is recorded as ``IdentityChanged``."""
        ids = self.device.identities
        if peer.account == self.account:  # one's own other devices
            if self.identity_model == "account":
                return key == self.device.identity_key
            if self.identity_model != "signed-devices":
                return True
        if self.identity_model == "account":
            ids.check_account(peer, key, "bundle")
        elif self.identity_model == "per-device" and self.key_verification:
            if peer.account in self._listed and peer.device not in self._listed[peer.account]:
                # a device added to an account already known: the key is new, whatever it is
                ids.check_account(peer, key, "bundle")
        elif self.identity_model == "signed-devices" and peer.device != 1:
            primary = next((b.identity_key for b in frame.devices if b.device == 1), None)
            primary = ids.pinned(PeerAddress(peer.account, 1)) or primary
            signature = (
                None if self.device_signature is None else self.device_signature(peer.account, peer.device)
            )
            if primary is None or signature is None:
                return False
            return spec.xeddsa_verify(primary, DEVICE_LIST_PREFIX + key, signature)
        return True

    def _envelopes(self, envelopes: tuple[wire.Envelope, ...]) -> None:
        acks = []
        for env in envelopes:
            acks.append(env.id)
            if env.id in self._seen:
                continue  # at-least-once delivery: already processed
            self._seen.add(env.id)
            try:
                if self.content_key is not None and env.body[:1] == CUSTODY_TAG:
                    # (bodies sent before a switch to a content key still go to the ratchet below)
                    opened = self.content_key.open(env.body, route_ad(self.account))
                    if opened is None or env.source_account is None or env.source_device is None:
                        raise DecryptionError()
                    sender, plaintext = PeerAddress(env.source_account, env.source_device), opened
                elif not env.sealed and env.body[:1] == bytes((SENDER_KEY_VERSION,)):
                    self._group_receive(env)
                    continue
                elif env.sealed:
                    if self.trust_root is None:
                        raise DecryptionError()
                    sender, plaintext = self.device.open_sealed(env.body, self.trust_root, int(self.clock()))
                else:
                    assert env.source_account is not None and env.source_device is not None
                    sender = PeerAddress(env.source_account, env.source_device)
                    plaintext = self.device.decrypt(sender, env.body)
                plaintext = unpad(plaintext, self.padding)
            except DecryptionError:
                self._events.append(Undecryptable(env.id, env.sealed))
                continue
            if plaintext.startswith(CONTROL + _MAILBOX):
                plaintext = self._mailbox_introduced(sender.account, plaintext)
            if plaintext.startswith(CONTROL):
                code, rest = plaintext[2:3], plaintext[3:]
                if code == _SENDER_KEY:
                    self._sender_key_arrived(sender, rest)
                elif code == _SYNC and sender.account == self.account and len(rest) >= 1:
                    n = rest[0]
                    self._events.append(
                        SentTranscript(
                            sender,
                            rest[1 : 1 + n].decode("utf-8", "replace"),
                            rest[1 + n :],
                            env.id,
                            env.timestamp,
                        )
                    )
                elif code in _RECEIPT_KINDS:
                    stamps = tuple(int.from_bytes(rest[i : i + 8], "big") for i in range(0, len(rest) - 7, 8))
                    self._events.append(
                        ReceiptReceived(sender, _RECEIPT_KINDS[code], stamps, env.id, env.sealed)
                    )
                continue  # cover traffic: dropped
            self._events.append(Received(sender, plaintext, env.id, env.timestamp, env.sealed))
        if acks:
            ids = tuple(acks)
            self._request(wire.Ack, ids, envelope_ids=ids)
        self._top_up()

    def _forget_acked(self, ids: tuple[bytes, ...]) -> None:
        """The relay confirmed our ack of ``ids``: forget the ids acked more than SEEN_AFTER_ACK ago,
        so that ``_seen`` holds what is unacked or recent, not every envelope ever received."""
        now = self.clock()
        acked = self._acked
        acked.append((now, ids))
        while acked[0][0] < now - SEEN_AFTER_ACK:
            self._seen.difference_update(acked.popleft()[1])

    def _relay_low(self, prekeys_left: int | None) -> None:
        """The relay's ``prekeys_left`` notice: its stock of our one-time prekeys runs low (others
        fetched our bundle, or someone drains it), whatever we hold: upload a fresh batch, once
        (not while an upload is in flight)."""
        if prekeys_left is None or not self.authenticated or not self.answer_prekeys_left:
            return
        if any(kind == wire.UploadPrekeys.kind for kind, _ in self._pending.values()):
            return
        self._top_up(force=True)

    def _top_up(self, *, force: bool = False) -> None:
        s = self.device.secrets
        if not self.authenticated:
            return
        if not force and len(s.one_time) >= min(PREKEY_LOW_WATER, self.prekey_batch):
            return
        fresh = s.new_one_time_prekeys(self.prekey_batch, self.rng)
        kem = s.new_kem_prekeys(self.kem_prekey_batch, rng=self.rng) if self.device.pq else []
        self._request(
            wire.UploadPrekeys,
            one_time_prekeys=tuple(wire.Prekey(id=p.id, public=p.public) for p in fresh),
            kem_prekeys=tuple(_kem(k) for k in kem),
        )
        s.kem.forget_publics()


def _is_handout(out: _Outgoing) -> bool:
    return isinstance(out.ref, tuple) and out.ref[:1] == ("sender_key",)


def _signed(spk: SignedPreKey) -> wire.SignedPrekey:
    return wire.SignedPrekey(id=spk.id, public=spk.public, signature=spk.signature)


def _kem(k: KemPreKey) -> wire.KemPrekey:
    return wire.KemPrekey(id=k.id, public=k.public, signature=k.signature)


def _bundle(b: wire.DeviceBundle) -> PreKeyBundle:
    """The relay's per-device bundle as the device's own PreKeyBundle (checked again there)."""
    opk = b.one_time_prekey
    return PreKeyBundle(
        identity_key=b.identity_key,
        signed_prekey=SignedPreKey(b.signed_prekey.id, b.signed_prekey.public, b.signed_prekey.signature),
        one_time_prekey=None if opk is None else OneTimePreKey(opk.id, opk.public),
        kem_prekey=KemPreKey(
            b.kem_prekey.id, b.kem_prekey.public, b.kem_prekey.signature, b.kem_prekey_last_resort
        ),
    )
