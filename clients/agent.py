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
- acknowledges an envelope it cannot decrypt and reports it: a second copy of a message it read
  (``Duplicate``, known from the header: the message number's key was used) apart from the rest
  (``Undecryptable``: a forgery, a message for a session it no longer holds);
- tops up its one-time prekeys on the relay when they run low;
- reports when a known peer device presents another identity key than the one pinned at first
  contact (``IdentityChanged``, see ``clients.identity``); under the ``block`` policy, or once the
  user has verified the peer, it sends nothing to that key until the user approves it;
- reports when a peer's device list changes between two fetches (``DeviceListChanged``): a new
  device on a contact's account is what a silently added "ghost" device looks like from outside;
- asks a group message's sender to resend it when the sender key it was written with has not come
  (its distribution message was lost): a retry receipt, as Signal's clients send a decryption error
  message and WhatsApp's a retry receipt; the sender answers from its log of recent group messages
  by handing its sender key over again and resending the message over the pairwise session
  (``tick``, ``retry_due``; bounded on both sides, see "retry receipts" below); and, once, a 1:1
  message that found no session (the receipt begins a new one, which the sender's resend uses).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import uuid as _uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients import transparency as kt
from relaysim.clients.errors import DecryptionError, SealedSenderSelfSend, UsageError
from relaysim.clients.escrow import EscrowPublicKey
from relaysim.clients.groups import VERSION as SENDER_KEY_VERSION
from relaysim.clients.groups import (
    GroupKeys,
    GroupWriteKey,
    parse_sender_key_message,
    read_group_state,
    seal_group_state,
    write_key_set,
)
from relaysim.clients.identity import IdentityChanged, UntrustedIdentity
from relaysim.clients.keys import BundleError, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import content, wire
from relaysim.relay._frozen import quick_init
from relaysim.relay.certificates import CertificateError, SenderCertificate, ServerCertificate
from relaysim.relay.content import CONTROL
from relaysim.relay.custody import CUSTODY_TAG, ContentKey, route_ad

__all__ = [
    "DECRYPTION_FAILED",
    "REFUSAL_REASONS",
    "SEALED_SENDER_SELF_SEND",
    "UNTRUSTED_IDENTITY",
    "Accepted",
    "AgentEvent",
    "ContactsFound",
    "DeviceAgent",
    "DeviceListChanged",
    "Duplicate",
    "Failed",
    "GroupMembershipChanged",
    "GroupStateStored",
    "GroupUpdated",
    "IdentityChanged",
    "KeyLogAudited",
    "KeyLogChecked",
    "KeyLogCompared",
    "LoggedIn",
    "ProofRequired",
    "ReceiptReceived",
    "Received",
    "Registered",
    "SentTranscript",
    "Undecryptable",
    "UnsignedDevice",
    "WaitingForSenderKey",
    "refusal",
    "sign_device",
    "unexpected_answer",
]

RNG = Callable[[int], bytes]
PREKEY_BATCH = 20
PREKEY_LOW_WATER = 5
# draws of the RNG a phone may make before its one-time prekey top-up's (the DH ratchet step of the
# prekey message that takes it, and whatever else it reads or sends first): ``top_up_ahead`` guesses
# that many more key pairs, so that its guess covers the top-up wherever it starts among them
TOP_UP_AHEAD_SLACK = 3
# Signed prekeys (and the last-resort ML-KEM prekey with them) are replaced every 2 days, and a
# replaced one is kept 30 days for messages that were begun with it and are still on their way,
# then deleted: Signal-Android's schedule (RotateSignedPreKeyListener.INTERVAL, 2 days;
# PreKeyUtil.ARCHIVE_AGE, 30 days; github.com/signalapp/Signal-Android).
SIGNED_PREKEY_ROTATION = 2 * 86400.0
PREKEY_ARCHIVE_AGE = 30 * 86400.0
# Renew the sender certificate when less than this many seconds of it are left (ours: an hour).
CERTIFICATE_RENEWAL = 3600.0
# When renewing fails (the relay refuses the request, or answers with a certificate that does not
# check), the sealed sends waiting for it go with the one held while more than this is left of it:
# time for the send to reach the relay, whose stamp on the envelope is the time its recipients check
# the certificate at (``_certificate_time``). With less, they fail with the renewal's reason.
CERTIFICATE_LAST_USE = 300.0
# An envelope id is remembered (to drop a second copy of it unread) until this many seconds after the
# relay confirmed our ack of it: an acked envelope is deleted and never delivered again, so only a
# copy already in flight can still come (a push that crossed the fetch that acked it). One that
# came later still would be refused by the ratchet, whose message keys are used once (a ``Duplicate``).
SEEN_AFTER_ACK = 3600.0
# How many of the key-log heads it took a device keeps (``DeviceAgent.key_log_heads``). Freshness
# (clients.transparency.check_fresh) needs only the last: every head taken was checked against those
# before it, so sizes never shrink and, of one size, timestamps never go back, and the last has the
# largest size and, of that size, the latest time. The few before it are for whoever looks at the
# device; a device up for years, shown a head an hour, holds no more.
KEPT_KEY_LOG_HEADS = 8


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


@quick_init
@dataclass(frozen=True, slots=True)
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


@quick_init
@dataclass(frozen=True, slots=True)
class Accepted:
    """The relay has durably accepted a message's envelopes (one per recipient device)."""

    ref: object
    to: str
    envelope_ids: tuple[bytes, ...]
    # A group send (server-side fan-out): the member accounts the relay's list named at the epoch the
    # message was sent for (the relay refuses a send for any other), so the accounts it went to.
    members: tuple[str, ...] = ()


# Why an envelope was not read (``Undecryptable.reason``): it did not decrypt (which check refused
# it is not said: clients.errors.DecryptionError); it decrypted, from an identity key the user has not
# approved (clients.identity.UntrustedIdentity); it opened as a sealed message from this very device
# (clients.errors.SealedSenderSelfSend). libsignal keeps the three apart (InvalidMessage,
# UntrustedIdentity, SealedSenderSelfSend), and so do Signal's clients: a decryption failure may ask the
# sender for a resend; a blocked identity waits for the user (the message is not lost to an attack);
# a self-send is dropped without a word.
DECRYPTION_FAILED = "decryption_failed"
UNTRUSTED_IDENTITY = "untrusted_identity"
SEALED_SENDER_SELF_SEND = "sealed_sender_self_send"
# The two reasons for which a message that did decrypt is not read (what counts of unread envelopes
# report beside the DECRYPTION_FAILED ones: sims.world.simulation.SimulationResult.refused).
REFUSAL_REASONS = (UNTRUSTED_IDENTITY, SEALED_SENDER_SELF_SEND)


@dataclass(frozen=True)
class Undecryptable:
    """An envelope the device could not read: acknowledged and dropped. ``reason`` says which kind of
    refusal (``DECRYPTION_FAILED``: a forgery, a message for a session it no longer holds...;
    ``UNTRUSTED_IDENTITY``: it decrypted, but from an identity key the user has not approved, reported
    by an ``IdentityChanged`` (not ``accepted``); ``SEALED_SENDER_SELF_SEND``: a sealed message from
    this very device)."""

    envelope_id: bytes
    sealed: bool
    reason: str = DECRYPTION_FAILED


def refusal(event: Undecryptable) -> str | None:
    """Which refusal ``event`` reports, as the drivers count it: its ``reason`` when the envelope decrypted
    and was refused (one of ``REFUSAL_REASONS``), None when it did not decrypt (``DECRYPTION_FAILED``). Any
    other reason is none an agent gives, a programming error: a ValueError naming it (the people's and the
    agency's counts each read it so, rather than one failing on it and the other taking it silently for a
    decryption failure)."""
    reason = event.reason
    if reason == DECRYPTION_FAILED:
        return None
    if reason in REFUSAL_REASONS:
        return reason
    known = ", ".join((DECRYPTION_FAILED, *REFUSAL_REASONS))
    raise ValueError(f"Undecryptable.reason: {wire.quoted(reason)} is none an agent gives (one of {known})")


@dataclass(frozen=True)
class Duplicate:
    """An envelope the device could not read because, by its header, it is a second copy of a message
    read already: a send the network or a reconnecting phone carried twice (clients/link.py replays a
    request whose answer was lost), delivered under a new envelope id. Found before any decryption,
    from the header alone (``Device.replayed``: the message number's key was used; a group message's
    sender key and iteration were read), as libsignal reports a DuplicatedMessage and Signal's clients
    drop it silently: acknowledged and dropped, with no retry receipt. A forgery bearing a used number
    is reported so too; it could not have been read either, and changes nothing."""

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


@dataclass(frozen=True)
class GroupMembershipChanged:
    """Server-side membership (``DeviceAgent.group_fanout == "server"``): the relay's list for
    ``group`` has other members than the one this device knew. WhatsApp's clients show each change
    in the chat ("X was added"); a client changed under compulsion can be made not to (the ghost
    proposal, Levy & Robinson, 2018): ``shown`` says whether the user saw it."""

    group: bytes
    added: tuple[str, ...]
    removed: tuple[str, ...]
    epoch: int
    shown: bool


@dataclass(frozen=True)
class GroupUpdated:
    """The relay took this device's change to ``group`` (created it, or changed its members)."""

    group: bytes
    epoch: int


@dataclass(frozen=True)
class GroupStateStored:
    """The relay stored ``version`` of ``group``'s encrypted state, made by this device
    (``DeviceAgent.create_group_state``, ``change_group_state``)."""

    group: bytes
    version: int


@dataclass(frozen=True)
class KeyLogAudited:
    """Key transparency: this device read the relay's key log over the wire (``audit_key_log``) up to a
    signed ``head`` and compared ``account``'s entries with the devices it expected. ``unexpected``:
    (device, identity key) entries it did not expect (a ghost); ``missing``: expected ones not there.
    ``reason`` says why the audit could not be trusted or finished (None: the entries hash to the
    signed head)."""

    account: str
    tree_size: int
    unexpected: tuple[tuple[int, bytes], ...] = ()
    missing: tuple[tuple[int, bytes], ...] = ()
    reason: str | None = None
    head: kt.TreeHead | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None and not self.unexpected and not self.missing


@dataclass(frozen=True)
class KeyLogCompared:
    """Key transparency: this device compared its latest signed head (``ours``) with one gossiped to it
    (``theirs``, ``compare_key_log_head``), asking the relay for the consistency proof between them
    when their sizes differ. Not ``consistent``: the relay has shown different logs (``why``)."""

    ours: kt.TreeHead
    theirs: kt.TreeHead
    consistent: bool
    why: str | None = None


AgentEvent = (
    Registered
    | GroupMembershipChanged
    | GroupUpdated
    | GroupStateStored
    | SentTranscript
    | ProofRequired
    | LoggedIn
    | Received
    | ReceiptReceived
    | Accepted
    | Undecryptable
    | Duplicate
    | Failed
    | ContactsFound
    | DeviceListChanged
    | IdentityChanged
    | KeyLogChecked
    | KeyLogAudited
    | KeyLogCompared
)

# What a message carries besides text, as Signal's Content message does (receipts, and here cover
# traffic, mailbox addresses, sender keys, sync copies, retry receipts and resends): a control content
# starts with CONTROL, then a kind byte; texts are carried as they are. The format is relay.content's,
# so that a provider holding a content key (relay.custody) reads it as the clients write it.
_RECEIPT_KINDS = {content.DELIVERY_RECEIPT: "delivery", content.READ_RECEIPT: "read"}
_COVER = content.COVER
_MAILBOX = (
    content.MAILBOX
)  # a sealed conversation's mailbox: where to write back (see DeviceAgent.new_mailbox)
_SENDER_KEY = content.SENDER_KEY  # a SenderKeyDistributionMessage, over the pairwise session (clients.groups)
_SYNC = content.SYNC  # a sync copy of a 1:1 message this account sent (then: destination length, destination)
# A retry receipt: the device asked (4) ‖ what to resend: b"G" ‖ distribution id (16) ‖ chain id (4) ‖
# iteration (4), a group message; or b"P" ‖ envelope id (16), a 1:1 message that found no session.
_RETRY = content.RETRY
_RESEND = (
    content.RESEND
)  # a group message resent over the pairwise session: distribution id ‖ chain id ‖ iteration ‖ text
_MAILBOX_PREFIX = CONTROL + _MAILBOX
_SENDER_KEY_BODY = bytes((SENDER_KEY_VERSION,))  # the first byte of a group (sender key) message's body
MAX_GROUP_BACKLOG = 256  # group messages kept while their sender key has not arrived yet
# Retry receipts (ours, in the spirit of Signal's DecryptionErrorMessage and WhatsApp's retry receipt):
# a group message whose sender key has not come within RETRY_GRACE seconds (the distribution message
# may only be late: it and the message travel separately) is asked for again, then every
# RETRY_INTERVAL seconds, at most MAX_RETRY_RECEIPTS times; the message then stays waiting (for a
# late key or resend) and is reported by ``waiting_for_sender_keys``. The sender answers each
# requesting device at most MAX_RETRY_RECEIPTS times and at most once per RETRY_INTERVAL / 2, from
# a log of the group messages it sent in the last SEND_LOG_AGE seconds (at most SEND_LOG_SIZE).
RETRY_GRACE = 10.0
# What the relay answers to each request (relay.core); any request may also be answered with an
# ``error``. An answer of another kind is the relay's fault (a bug, or a hostile relay): the request is
# failed as if the relay had refused it (``UNEXPECTED_ANSWER``), and the frame goes no further than
# that, to code written for what was asked (a ``sent`` handed to a fetch, a ``bundle`` to a ping).
UNEXPECTED_ANSWER = "unexpected_answer"
_ANSWERS: dict[str, type[wire.Response]] = {
    wire.Register.kind: wire.Registered,
    wire.UploadPrekeys.kind: wire.PrekeysUploaded,
    wire.FetchBundle.kind: wire.Bundle,
    wire.AuthChallenge.kind: wire.Challenge,
    wire.Authenticate.kind: wire.Authenticated,
    wire.Send.kind: wire.Sent,
    wire.SealedSend.kind: wire.Sent,
    wire.GetSenderCertificate.kind: wire.SenderCertificateResponse,
    wire.Receive.kind: wire.Envelopes,
    wire.Ack.kind: wire.Acked,
    wire.Ping.kind: wire.Pong,
    wire.DiscoverContacts.kind: wire.ContactsFound,
    wire.Block.kind: wire.Blocked,
    wire.Unblock.kind: wire.Unblocked,
    wire.CreateGroup.kind: wire.GroupUpdated,
    wire.ChangeGroup.kind: wire.GroupUpdated,
    wire.GetGroup.kind: wire.GroupInfo,
    wire.GroupSend.kind: wire.GroupSent,
    wire.PutGroupState.kind: wire.GroupStateStored,
    wire.GetGroupState.kind: wire.GroupState,
    wire.GetKeyLogHead.kind: wire.KeyLogHeadResponse,
    wire.GetKeyLogConsistency.kind: wire.KeyLogConsistency,
    wire.GetKeyLogEntries.kind: wire.KeyLogEntries,
}


def unexpected_answer(kind: str, frame: wire.Response) -> wire.ErrorFrame | None:
    """The ``UNEXPECTED_ANSWER`` refusal that stands for ``frame`` when it answers a ``kind`` request
    with neither what the relay answers to one nor an ``error``; None when it is a fit answer. The
    agent fails the request with it, and ``clients.link`` reports it as the request's answer, so a
    caller awaiting (say) a sender certificate is told the request failed, not handed a ``pong``."""
    if type(frame) is _ANSWERS.get(kind) or type(frame) is wire.ErrorFrame:
        return None
    message = f"the relay answered {frame.kind!r} to a {kind!r} request"
    return wire.ErrorFrame(id=frame.id, code=UNEXPECTED_ANSWER, message=message)


RETRY_INTERVAL = 60.0
MAX_RETRY_RECEIPTS = 5
SEND_LOG_AGE = 86400.0
SEND_LOG_SIZE = 1000
READ_LOG_SIZE = 4096  # group messages read, remembered to drop a resend or a late original of one
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
    envelopes: int = 0  # how many envelopes its send in flight carries: its ``sent`` has one id each


@dataclass
class _GroupSend:
    """A group message waiting for the device lists of its members' accounts (``DeviceAgent.send_group``)."""

    ref: object
    group_id: bytes
    members: tuple[str, ...]
    plaintext: bytes
    waiting: set[str]
    targets: tuple[str, ...] = ()  # the accounts that get the message (all members when empty)
    epoch: int | None = None  # server-side fan-out: the membership epoch the relay listed
    attempts: int = 0  # server-side fan-out: membership look-ups for this message


@dataclass
class _StateChange:
    """A change to a group's encrypted state this device makes (``DeviceAgent.change_group_state``):
    waiting for the state as stored, then for the relay's word on the next version."""

    ref: object
    group_id: bytes
    master_key: bytes
    writer: GroupWriteKey
    add: dict[str, bytes]
    remove: frozenset[str]
    attempts: int = 0  # stale_group answers taken (another member's version came first): fetch again


@dataclass
class _Audit:
    """A self-audit of the key log over the wire, in progress (``DeviceAgent.audit_key_log``)."""

    expected: frozenset[tuple[int, bytes]]
    known: frozenset[int]
    head: kt.TreeHead | None = None
    leaves: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class _Compare:
    """A comparison of two signed heads waiting for the relay's consistency proof."""

    ours: kt.TreeHead
    theirs: kt.TreeHead


class _KeyLogRefused(Exception):
    """Why a key-log answer cannot be trusted (the message is the reason given in the event)."""


GroupMessageKey = tuple[bytes, int, int]  # (distribution id, chain id, iteration): one SenderKeyMessage


@dataclass
class _Backlogged:
    """A group message this device cannot read yet: its sender key has not come."""

    envelope: wire.Envelope
    sender: PeerAddress
    key: GroupMessageKey
    next_retry: float  # when to send the next retry receipt (clock seconds)
    retries: int = 0  # retry receipts sent for it


@dataclass(slots=True)
class _Logged:
    """A group message this device sent, kept to answer retry receipts (Signal's message send log)."""

    ref: object
    plaintext: bytes
    # a group's member accounts; a 1:1 text's one account as a 1-tuple (a frozenset is 216 B, and a
    # day's log holds each 1:1 text sent that day: a million of them at the scale target)
    accounts: frozenset[str] | tuple[str]
    at: float
    answered: dict[PeerAddress, tuple[int, float]] | None = (
        None  # device → (count, last), from the first retry
    )


@dataclass(frozen=True)
class WaitingForSenderKey:
    """A group message ``envelope_id`` from ``sender`` this device still cannot read: its sender key
    never came, and ``retries`` retry receipts have been sent for it (``DeviceAgent.waiting_for_sender_keys``)."""

    envelope_id: bytes
    sender: PeerAddress
    retries: int


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
    # over its identity key, served with its bundle (wire.DeviceBundle.device_signature); "per-device":
    # keys taken as served.
    identity_model: str = "per-device"
    # Contact Key Verification (iMessage, iOS 17.2): under "per-device", a device added to a known
    # account is reported as an identity change instead of being taken silently.
    key_verification: bool = False
    # "signed-devices": this companion device's identity key signed by its account's primary
    # (sign_device), which the primary hands it when linking it (a QR code, in WhatsApp) and it sends
    # in its register; the relay serves it with the device's bundle, and contacts check it there
    # (WhatsApp's signed device list). None: it has none (a primary, or another identity model).
    device_signature: bytes | None = None
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
    # What the app tells the relay about the device when it registers (wire.Register's optional
    # fields): the push service's token for it, its type and the app's version. None: not sent.
    push_token: bytes | None = field(default=None, kw_only=True)
    device_type: str | None = field(default=None, kw_only=True)
    app_version: str | None = field(default=None, kw_only=True)
    # Seconds between signed-prekey rotations (checked at each login); None: never on its own.
    signed_prekey_rotation: float | None = field(default=SIGNED_PREKEY_ROTATION, kw_only=True)
    # Upload a fresh batch of one-time prekeys when the relay says they run low (prekeys_left).
    answer_prekeys_left: bool = field(default=True, kw_only=True)
    # Who fans a group message out (relay.profiles.Profile.group_fanout): "client", one ``send`` per
    # member account (Signal); "server", one ``group_send`` to the membership list the relay holds
    # (WhatsApp), the members taken from the relay's list before each message.
    group_fanout: str = field(default="client", kw_only=True)
    # Server-side membership: show the user each change the relay's list shows (WhatsApp's "X was
    # added"); False is a client changed to hide them (a ghost participant's precondition).
    show_group_changes: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        _p.require_key_source(self.rng, f"DeviceAgent({self.device.address.account!r})")
        self._next_id = 1
        self._outbox: list[wire.Request] = []
        self._pending: dict[int, tuple[str, object]] = {}
        self._waiting_bundle: dict[str, list[_Outgoing]] = {}
        self._devices: dict[str, tuple[int, ...]] = {}  # the recipient devices we last learnt of
        self._listed: dict[str, tuple[int, ...]] = {}  # ... kept across stale-device refetches
        self._seen: set[bytes] = set()
        # (when confirmed, ids), oldest first; a list, as a deque is 760 B even empty (one per phone)
        self._acked: list[tuple[float, tuple[bytes, ...]]] = []
        self._events: list[AgentEvent] = []
        self.certificate: bytes | None = None
        self._certificate_expires = 0.0
        self._waiting_certificate: list[_Outgoing] = []
        self.authenticated = False
        self.groups = GroupKeys(self.device.address, self.rng)
        self._group_backlog: list[_Backlogged] = []
        self._send_log: dict[GroupMessageKey, _Logged] = {}  # the group messages we sent, to resend
        self._read_group: dict[tuple[PeerAddress, GroupMessageKey], None] = {}  # read, oldest first
        self._retries = 0
        self._pairwise_log: dict[bytes, _Logged] = {}  # envelope id → a 1:1 text we sent (retry receipts)
        self._asked_again: dict[bytes, None] = {}  # envelope ids of 1:1 messages we asked for again
        self._handed_again: dict[tuple[bytes, PeerAddress], float] = {}  # sender key handed over again, when
        self._multi_device = False  # this account has other devices, as far as this device knows
        self._handouts = 0
        # Group sends and sender key handouts whose answer a lost connection took: sent again after login.
        self._resend: list[_Outgoing] = []
        # Server-side membership: the relay's list for each group this device is in, as last seen
        # (epoch, members), and group sends to start again after a lost connection.
        self.group_lists: dict[bytes, tuple[int, tuple[str, ...]]] = {}
        self._resend_groups: list[_GroupSend] = []
        # Encrypted group state: changes whose answer a lost connection took, made again after login
        # from the state as then stored (the relay either stored the version or never saw it).
        self._resend_state: list[_StateChange] = []
        # the last signed key-log heads this device was shown and took (fresh: clients.transparency.
        # check_fresh), oldest first, at most KEPT_KEY_LOG_HEADS of them
        self.key_log_heads: list[kt.TreeHead] = []
        self._key_log_server: bytes | None = (
            None  # the server key that signs heads, once its certificate checked
        )

        self._last_register: wire.Register | None = None  # kept to send again with a proof
        self._stamped = False  # a stamp was sent with it: a second refusal is final
        self._signed_made_at: float | None = None  # when the current signed prekey was published
        self._retired: dict[tuple[str, int], float] = {}  # ("spk"|"kem", id) -> when replaced

    def linked_devices_known(self) -> None:
        """This device knows its account has other devices (it linked one): sync copies from now on,
        to the account's devices as the relay lists them next (a list fetched before is stale)."""
        self._multi_device = True
        self._devices.pop(self.account, None)

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
        if pending is not None and pending[0] == wire.GroupSend.kind and isinstance(pending[1], _GroupSend):
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

    def hide_group_changes(self) -> None:
        """A compelled change to the client (a ghost participant's precondition): from now on changes
        to a group's member list are no longer shown to the user (``GroupMembershipChanged.shown``)."""
        self.show_group_changes = False

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
        self._request(
            wire.Register,
            account=self.account,
            device=self.device_id,
            registration_id=self.registration_id,
            identity_key=self.device.identity_key,
            signed_prekey=_signed(bundle.signed_prekey),
            one_time_prekeys=tuple(wire.Prekey(id=i, public=public) for i, public in s.one_time.publics()),
            kem_prekeys=tuple(_kem(k) for _i, (_seed, k) in sorted(s.kem.items()) if not k.last_resort),
            last_resort_kem_prekey=_kem(last_resort),
            delivery_token=self.delivery_token,
            proof=proof if proof is not None else self.registration_token,
            push_token=self.push_token,
            device_type=self.device_type,
            app_version=self.app_version,
            device_signature=self.device_signature,
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
        if self._introducing or self.reply_to:  # (no mailboxes: nowhere else to route it)
            to, plaintext = self._mailbox_route(to, plaintext)
        out = _Outgoing(ref, to, plaintext, sealed)
        devices = self._devices.get(to)
        if devices is None:
            self._fetch(to, out)
            return
        if self.content_key is None:
            has_session = self.device.has_session
            for d in devices:
                if not has_session(_peer((to, d))):
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
        devices (authenticated, never sealed: it goes to oneself), as Signal's clients send one
        (Signal-Android's SignalServiceMessageSender sends the SentTranscript to its own address without
        unidentified access; older versions used the account's own, sealed). Under sealed sender the
        relay therefore sees, a round trip after each sealed send, the sender writing to itself."""
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

    def _send(self, out: _Outgoing, renew: bool = True) -> None:
        """Encrypt and send ``out``, or queue it for what it needs first (the recipient's devices, a
        sender certificate). ``renew=False``: a sealed send goes with the certificate held, due for
        renewal or not (renewing it just failed; ``_held_certificate_usable``)."""
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
            out.envelopes = len(envelopes)
            self._request(wire.Send, context=out, to=out.to, envelopes=envelopes)
            return
        if out.sealed:
            if out.to not in self.tokens:
                self._fail(out, "not_ready", f"sealed sender needs {out.to!r}'s delivery token")
                return
            if self.certificate is None or (
                renew and self._certificate_expires - self.clock() < CERTIFICATE_RENEWAL
            ):
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
            out.envelopes = len(envelopes)
            self._request(
                wire.SealedSend,
                context=out,
                to=out.to,
                delivery_token=self.tokens[out.to],
                envelopes=envelopes,
            )
        else:
            encrypt, to = self.device.encrypt, out.to
            envelopes = tuple(
                [wire.OutgoingEnvelope(device=d, body=encrypt(_peer((to, d)), plaintext)) for d in devices]
            )
            out.envelopes = len(envelopes)
            self._request(wire.Send, context=out, to=to, envelopes=envelopes)

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
        if self.group_fanout == "server":
            # the members are the relay's list, asked for first: ``members`` is not used
            self._group_lookup(_GroupSend(ref, group_id, (), plaintext, set()))
            return
        accounts = tuple(sorted(set(members) | {self.account}))
        gs = _GroupSend(ref, group_id, accounts, plaintext, set(accounts))
        self._group_fetch(gs)

    # --- groups with a membership list the relay holds (group_fanout "server") --------------------

    def create_group(self, group_id: bytes, members: Iterable[str]) -> None:
        """Create ``group_id`` at the relay with this account as its admin (server-side membership);
        a ``GroupUpdated`` event when the relay took it."""
        listed = tuple(dict.fromkeys(m for m in members if m != self.account))
        self._request(wire.CreateGroup, context=("group", group_id), group=group_id, members=listed)

    def change_group(
        self, group_id: bytes, add: Iterable[str] = (), remove: Iterable[str] = (), admins: Iterable[str] = ()
    ) -> None:
        """Add, remove or promote members (an admin), or leave (``remove`` = this account)."""
        removed = tuple(remove)
        self._request(
            wire.ChangeGroup,
            context=("left" if self.account in removed else "group", group_id),
            group=group_id,
            add=tuple(add),
            remove=removed,
            admins=tuple(admins),
        )

    def put_group_state(
        self,
        group_id: bytes,
        version: int,
        state: bytes,
        writer: GroupWriteKey,
        write_keys: Iterable[bytes] | None = None,
    ) -> None:
        """Store ``group_id``'s state, sealed by this device (``clients.groups.seal_group_state``),
        at the relay: Signal's groups v2, where the server holds each group's state encrypted.
        ``writer`` is this member's own write key for the group (``GroupWriteKey.for_member``), and
        ``write_keys`` the public write keys of the new version's members (the version that creates
        the state registers them; a removal leaves the removed member's out): the relay stores a
        version only when signed by a key of the version before's members."""
        keys = None if write_keys is None else write_key_set(write_keys)
        self._request(
            wire.PutGroupState,
            context=("group", group_id),
            group=group_id,
            version=version,
            state=state,
            write_key=writer.public,
            signature=writer.sign(group_id, version, state, keys),
            write_keys=keys,
        )

    def create_group_state(
        self,
        group_id: bytes,
        master_key: bytes,
        writer: GroupWriteKey,
        members: Mapping[str, bytes],
        ref: object = None,
    ) -> None:
        """Create ``group_id``'s encrypted state (version 0): ``members`` maps each member's account,
        this one's included, to its public write key (each gives its own to the creator; this
        account's is ``writer``'s), sealed in the state beside the account (format 2) and registered
        with the relay as the group's write keys. A ``GroupStateStored`` when the relay took it, a
        ``Failed`` with ``ref`` if not."""
        if members.get(self.account) != writer.public:
            raise UsageError(f"members must map this account, {self.account!r}, to writer's public key")
        state = seal_group_state(master_key, group_id, 0, members)
        keys = write_key_set(members.values())
        self._request(
            wire.PutGroupState,
            context=("state", ref),
            group=group_id,
            version=0,
            state=state,
            write_key=writer.public,
            signature=writer.sign(group_id, 0, state, keys),
            write_keys=keys,
        )

    def change_group_state(
        self,
        group_id: bytes,
        master_key: bytes,
        writer: GroupWriteKey,
        add: Mapping[str, bytes] | None = None,
        remove: Iterable[str] = (),
        ref: object = None,
    ) -> None:
        """Add members to (``add``: account → the public write key the newcomer gave) or remove them
        from (``remove``; this account to leave) ``group_id``'s encrypted state, as a member who holds
        ``master_key`` and, as ``writer``, one of the state's write keys. The device fetches the state
        as stored, with the relay's write keys, opens it, and refuses to go on (``Failed`` with
        ``ref``, code ``write_keys_mismatch``) when the relay's keys are not exactly the keys the
        state lists: a relay that had added a key of its own would otherwise have it signed into the
        next version. The next version's keys are the state's, less the removed members', plus the
        newcomers': nothing else comes from outside the state. A state sealed before keys were
        (format 1) lists none: then every remaining member's key must be in ``add``. On
        ``stale_group`` (another member's version came first) it starts again from the state as
        stored, up to three times. A ``GroupStateStored`` when the relay took the version."""
        change = _StateChange(ref, group_id, master_key, writer, dict(add or {}), frozenset(remove))
        for m, k in change.add.items():
            if type(k) is not bytes or len(k) != 32:
                raise UsageError(f"add[{m!r}] must be a 32-byte public write key")
        self._fetch_state(change)

    def _fetch_state(self, change: _StateChange) -> None:
        self._request(wire.GetGroupState, context=change, group=change.group_id, write_keys=True)

    def _state_fetched(self, change: _StateChange, frame: wire.GroupState) -> None:
        """Make ``change``'s next version from the state the relay returned, and upload it."""
        group = frame.group.hex()
        try:
            opened = read_group_state(change.master_key, frame.group, frame.version, frame.state)
        except DecryptionError:
            message = (
                f"group state {group} version {frame.version} does not open with this group's master key"
            )
            self._events.append(Failed(change.ref, "bad_group_state", message))
            return
        listed = opened.key_set()
        if listed is not None and frame.write_keys != listed:
            held = "none" if frame.write_keys is None else str(len(frame.write_keys))
            message = (
                f"the relay's write keys for group state {group} ({held}) are not the {len(listed)} keys its "
                f"version {frame.version} lists for its members: refused, as the relay could have added a "
                "key of its own, which the next version would carry"
            )
            self._events.append(Failed(change.ref, "write_keys_mismatch", message))
            return
        keys = dict(opened.write_keys or {})
        members = [m for m in opened.members if m not in change.remove]
        members += [m for m in change.add if m not in members and m not in change.remove]
        next_keys: dict[str, bytes] = {}
        for m in members:
            k = change.add.get(m, keys.get(m))
            if k is None:
                message = (
                    f"group state {group} version {frame.version} holds no write keys (sealed before they were): "
                    f"the next version needs {m!r}'s, and add does not give it"
                )
                self._events.append(Failed(change.ref, "missing_write_key", message))
                return
            next_keys[m] = k
        if opened.write_keys is not None and next_keys == opened.write_keys:
            # Nothing to change (the version came before the answer was lost, or another member made
            # the same change): a version that changes nothing would only move the others' version on.
            self._events.append(GroupStateStored(frame.group, frame.version))
            return
        version = frame.version + 1
        try:
            state = seal_group_state(change.master_key, change.group_id, version, next_keys)
        except UsageError as exc:
            self._events.append(Failed(change.ref, "bad_group_state", f"group state {group}: {exc}"))
            return
        new_keys = write_key_set(next_keys.values())
        self._request(
            wire.PutGroupState,
            context=change,
            group=change.group_id,
            version=version,
            state=state,
            write_key=change.writer.public,
            signature=change.writer.sign(change.group_id, version, state, new_keys),
            write_keys=new_keys,
        )

    def refresh_group(self, group_id: bytes) -> None:
        """Ask the relay for ``group_id``'s members (a ``GroupMembershipChanged`` if they changed)."""
        self._request(wire.GetGroup, context=("group", group_id), group=group_id)

    def _group_lookup(self, gs: _GroupSend) -> None:
        gs.attempts += 1
        self._request(wire.GetGroup, context=gs, group=gs.group_id)

    def _group_listed(self, frame: wire.GroupInfo) -> tuple[str, ...]:
        """Take the relay's list for a group; report what changed since the last one seen."""
        members = tuple(m.account for m in frame.members)
        known = self.group_lists.get(frame.group)
        self.group_lists[frame.group] = (frame.epoch, members)
        if known is not None and known[0] >= 0 and known[1] != members:
            added = tuple(sorted(set(members) - set(known[1])))
            removed = tuple(sorted(set(known[1]) - set(members)))
            if added or removed:
                self._events.append(
                    GroupMembershipChanged(frame.group, added, removed, frame.epoch, self.show_group_changes)
                )
        return members

    def _group_send_server(self, gs: _GroupSend, body: bytes) -> None:
        assert gs.epoch is not None
        self._request(wire.GroupSend, context=gs, group=gs.group_id, epoch=gs.epoch, body=body)

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
        own = self.groups.own[gs.group_id]
        self._log_sent((gs.group_id, own.chain_id, own.iteration), gs)
        body = self.groups.encrypt(gs.group_id, pad(gs.plaintext, self.padding))
        if gs.epoch is not None:
            self._group_send_server(gs, body)
            return
        for a in gs.targets or gs.members:
            if not devices[a]:
                continue  # our own account, with no other device
            envelopes = tuple(wire.OutgoingEnvelope(device=d, body=body) for d in devices[a])
            part = _GroupSend(gs.ref, gs.group_id, gs.members, gs.plaintext, set(), (a,))
            out = _Outgoing(gs.ref, a, gs.plaintext, False, attempts=1, group=part, envelopes=len(envelopes))
            self._request(wire.Send, context=out, to=a, envelopes=envelopes)

    def leave_group(self, group_id: bytes) -> None:
        """Forget our sender key for ``group_id`` (we send nothing more to it). The keys other members gave
        us are kept: a message they wrote while we were members may still be queued for a phone that was
        offline, and it is ours to read; what they write after we left uses a new sender key (they rotate
        when a holder of theirs leaves), which we never get."""
        self.groups.own.pop(group_id, None)
        self.groups.shared_with.pop(group_id, None)
        self.group_lists.pop(group_id, None)

    def _group_receive(self, env: wire.Envelope, waiting: _Backlogged | None = None) -> None:
        """A ``SenderKeyMessage``: decrypt it, or keep it until its sender's key (or a resend) arrives."""
        assert env.source_account is not None and env.source_device is not None
        sender = PeerAddress(env.source_account, env.source_device)
        try:
            key = parse_sender_key_message(env.body)
        except DecryptionError:
            self._events.append(Undecryptable(env.id, env.sealed))
            return
        if (sender, key) in self._read_group:  # a repeat, or the original of a resend we read, come late
            self._events.append(Duplicate(env.id, env.sealed))
            return
        try:
            group, plaintext = self.groups.decrypt(sender, env.body)
            plaintext = unpad(plaintext, self.padding)
        except DecryptionError:
            # Held: a forgery, or a message of the sender's that our copy of its key cannot read (sent
            # before the iteration it starts at: the handout that came was a later one). Not held: its
            # key may still be on its way. Both of the sender's own can be resent: wait, then ask.
            if self._holds(sender, env.body) and not self.groups.signed(sender, env.body):
                self._events.append(Undecryptable(env.id, env.sealed))
            elif waiting is not None:
                self._group_backlog.append(waiting)  # still unreadable: keep asking as scheduled
            elif len(self._group_backlog) < MAX_GROUP_BACKLOG:
                self._group_backlog.append(_Backlogged(env, sender, key, self.clock() + RETRY_GRACE))
            else:
                self._events.append(Undecryptable(env.id, env.sealed))
            return
        self._mark_read(sender, key)
        self._events.append(Received(sender, plaintext, env.id, env.timestamp, env.sealed, group))
        if self.group_fanout == "server" and group not in self.group_lists and self.authenticated:
            # a group this device has not seen the list of: look it up, as WhatsApp's clients fetch a
            # group's metadata (what later changes are shown against)
            self.group_lists[group] = (-1, ())
            self.refresh_group(group)

    def _mark_read(self, sender: PeerAddress, key: GroupMessageKey) -> None:
        self._read_group[(sender, key)] = None
        while len(self._read_group) > READ_LOG_SIZE:
            del self._read_group[next(iter(self._read_group))]

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
        for entry in waiting:
            if entry.sender == sender:
                self._group_receive(entry.envelope, entry)
            else:
                self._group_backlog.append(entry)

    # --- retry receipts: asking a sender to resend a group message we cannot read -------------------

    def retry_due(self) -> float | None:
        """When (clock seconds) ``tick`` has a retry receipt to send; None when nothing waits for one."""
        if not self._group_backlog:
            return None
        due = [b.next_retry for b in self._group_backlog if b.retries < MAX_RETRY_RECEIPTS]
        return min(due) if due else None

    def tick(self) -> None:
        """The driver's call when ``retry_due`` has come: send the retry receipts that are due (only
        while logged in; an offline phone sends them after its next login)."""
        if not self.authenticated:
            return
        now = self.clock()
        for entry in self._group_backlog:
            if entry.retries < MAX_RETRY_RECEIPTS and entry.next_retry <= now:
                entry.retries += 1
                entry.next_retry = now + RETRY_INTERVAL
                group, chain, iteration = entry.key
                body = (
                    CONTROL
                    + _RETRY
                    + entry.sender.device.to_bytes(4, "big")
                    + b"G"
                    + group
                    + chain.to_bytes(4, "big")
                    + iteration.to_bytes(4, "big")
                )
                self._retries += 1
                ref = ("retry", self.account, self.device_id, self._retries)
                self.send_text(entry.sender.account, body, ref)

    def waiting_for_sender_keys(self) -> list[WaitingForSenderKey]:
        """The group messages this device holds and still cannot read, with the retry receipts sent for each."""
        return [WaitingForSenderKey(b.envelope.id, b.sender, b.retries) for b in self._group_backlog]

    def _log_sent(self, key: GroupMessageKey, gs: _GroupSend) -> None:
        now = self.clock()
        self._send_log[key] = _Logged(gs.ref, gs.plaintext, frozenset(gs.members), now)
        for old in list(self._send_log):
            if len(self._send_log) <= SEND_LOG_SIZE and now - self._send_log[old].at <= SEND_LOG_AGE:
                break
            del self._send_log[old]

    def _retry_asked(self, requester: PeerAddress, rest: bytes) -> None:
        """A retry receipt from ``requester``: resend the group message it names (if we sent it, recently,
        to the requester's account), over the pairwise session, and hand our sender key over again if
        it is still the one the requester should hold."""
        if len(rest) < 5 or int.from_bytes(rest[:4], "big") != self.device_id:
            return  # malformed, or asked of another device of this account
        kind, rest = rest[4:5], rest[5:]
        if kind == b"P" and len(rest) == wire.ENVELOPE_ID_SIZE:
            self._pairwise_retry_asked(requester, rest)
            return
        if kind != b"G" or len(rest) != 16 + 4 + 4:
            return
        group, chain, iteration = (
            rest[:16],
            int.from_bytes(rest[16:20], "big"),
            int.from_bytes(rest[20:], "big"),
        )
        entry = self._send_log.get((group, chain, iteration))
        now = self.clock()
        if entry is None or requester.account not in entry.accounts or now - entry.at > SEND_LOG_AGE:
            return  # not ours to resend (too old, or never sent to that account)
        answered = entry.answered = entry.answered or {}
        count, last = answered.get(requester, (0, -RETRY_INTERVAL))
        if count >= MAX_RETRY_RECEIPTS or now - last < RETRY_INTERVAL / 2:
            return  # answered enough, or just now (the receipts queued while we were offline)
        answered[requester] = (count + 1, now)
        own = self.groups.own.get(group)
        if (
            own is not None
            and own.chain_id == chain
            and requester in self.groups.shared_with.get(group, ())
            and now - self._handed_again.get((group, requester), -RETRY_INTERVAL) >= RETRY_INTERVAL / 2
        ):
            self._handed_again[(group, requester)] = now  # (not again for each message it asks about)
            self._handouts += 1
            skdm = self.groups.distribution(group).to_bytes()
            ref = ("sender_key", self.account, self.device_id, self._handouts)
            self.send_text(requester.account, CONTROL + _SENDER_KEY + skdm, ref)
        header = group + chain.to_bytes(4, "big") + iteration.to_bytes(4, "big")
        self.send_text(requester.account, CONTROL + _RESEND + header + entry.plaintext, entry.ref)

    # --- retry receipts for 1:1 messages that found no session ---------------------------------

    def _ask_pairwise_resend(self, sender: PeerAddress, envelope_id: bytes) -> None:
        """A 1:1 message from ``sender`` we hold no session for (we lost it, or never had the one it was
        sent on): ask for it again, once, as Signal's clients send a DecryptionErrorMessage. The retry
        receipt itself starts a new session from ``sender``'s bundle (a prekey message), which becomes
        the session the sender answers on."""
        if envelope_id in self._asked_again or not self.authenticated:
            return
        self._asked_again[envelope_id] = None
        while len(self._asked_again) > READ_LOG_SIZE:
            del self._asked_again[next(iter(self._asked_again))]
        self._retries += 1
        body = CONTROL + _RETRY + sender.device.to_bytes(4, "big") + b"P" + envelope_id
        self.send_text(sender.account, body, ("retry", self.account, self.device_id, self._retries))

    def _log_sent_pairwise(self, out: _Outgoing, envelope_ids: tuple[bytes, ...]) -> None:
        """Keep a 1:1 text we sent (unsealed) by its envelope ids, to answer a retry receipt."""
        if (
            out.group is not None
            or out.sealed
            or out.plaintext.startswith(CONTROL)
            or out.to == self.device.address.account  # (self.account, without the property's call)
        ):
            return
        now = self.clock()
        entry = _Logged(out.ref, out.plaintext, (out.to,), now)
        for eid in envelope_ids:
            self._pairwise_log[eid] = entry
        log = self._pairwise_log
        # oldest first (insertion order): drop from the front, without copying the keys each time
        while log:
            old = next(iter(log))
            if len(log) <= SEND_LOG_SIZE and now - log[old].at <= SEND_LOG_AGE:
                break
            del log[old]

    def _pairwise_retry_asked(self, requester: PeerAddress, envelope_id: bytes) -> None:
        """A retry receipt for the 1:1 message we sent as ``envelope_id``: send it again to the
        requester's account, now over the session its receipt began (the active one: Sesame)."""
        entry = self._pairwise_log.get(envelope_id)
        now = self.clock()
        if entry is None or requester.account not in entry.accounts or now - entry.at > SEND_LOG_AGE:
            return
        answered = entry.answered = entry.answered or {}
        count, _last = answered.get(requester, (0, 0.0))
        if count >= 1:
            return  # answered once: the receiver asks once per message
        answered[requester] = (1, now)
        self.send_text(requester.account, entry.plaintext, entry.ref)

    def _resent(self, sender: PeerAddress, rest: bytes, env: wire.Envelope) -> None:
        """A group message ``sender`` resent to us over the pairwise session, in answer to our retry
        receipt: read only if we hold that message unread (anything else is a repeat, or unasked)."""
        if len(rest) < 24:
            return
        key = (rest[:16], int.from_bytes(rest[16:20], "big"), int.from_bytes(rest[20:24], "big"))
        held = [b for b in self._group_backlog if b.sender == sender and b.key == key]
        if not held or (sender, key) in self._read_group:
            return
        self._group_backlog = [b for b in self._group_backlog if b not in held]
        self._mark_read(sender, key)
        self._events.append(Received(sender, rest[24:], env.id, env.timestamp, env.sealed, key[0]))

    def _fail(self, out: _Outgoing, code: str, message: str, retry_after_ms: int | None = None) -> None:
        self._events.append(Failed(out.ref, code, message, retry_after_ms))

    # --- frames from the relay ------------------------------------------------------------

    def handle(self, frame: wire.Response) -> list[AgentEvent]:
        """Process one frame from the relay. Returns events (with any from earlier calls that failed);
        follow-up requests go to the outbox."""
        self._handle(frame)
        if self._group_backlog:  # (retry_due is None without one)
            due = self.retry_due()
            if due is not None and due <= self.clock():
                self.tick()
        changes = self.device.identities.take_changes()
        if changes:
            self._events.extend(changes)
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
        if type(frame) is not _ANSWERS.get(kind) and type(frame) is not wire.ErrorFrame:
            refusal = unexpected_answer(kind, frame)
            assert refusal is not None
            frame = refusal
        # The answers every message brings, first: the same branches as below, without the chain of
        # isinstance checks (a context of these types is never an _Audit or a _Compare).
        if type(frame) is wire.Acked and type(context) is tuple:
            self._forget_acked(context)
            return
        if type(frame) is wire.Sent and type(context) is _Outgoing:
            self._sent(context, frame)
            return
        if isinstance(frame, wire.ErrorFrame):
            self._error(kind, context, frame)
        elif isinstance(context, _Audit | _Compare):
            self._key_log_answer(context, frame)
        elif isinstance(frame, wire.Registered):
            self._last_register = None  # nothing left to prove (and ~5 KiB of public keys per phone)
            self._events.append(Registered())
        elif isinstance(frame, wire.Challenge):
            signature = self.device.secrets.identity.sign(
                wire.auth_message(frame.nonce, self.account, self.device_id), self.rng
            )
            self._request(wire.Authenticate, nonce=frame.nonce, signature=signature)
        elif isinstance(frame, wire.Authenticated):
            refused = self._not_us(frame)
            if refused is not None:
                self._events.append(Failed(kind, UNEXPECTED_ANSWER, refused))
                return
            self.authenticated = True
            self._events.append(LoggedIn())
            self._resume()
            self._relay_low(frame.prekeys_left)
            self._rotate_if_due()
        elif isinstance(frame, wire.SenderCertificateResponse):
            waiting, self._waiting_certificate = self._waiting_certificate, []
            try:
                self._certificate_expires = self._check_certificate(frame.certificate)
            except CertificateError as exc:
                # The one held (if any) is kept: the sends waiting go with it while it is still good
                # for them, else fail now (asking again would be a loop with a relay that answers so
                # each time); the next sealed send asks again.
                # (named as the wire names a field: by its path and the frame's kind, docs/protocol.md Errors)
                where = f"certificate in a {wire.quoted(frame.kind)} frame"
                message = f"the relay's sender certificate ({where}) is refused: {exc}"
                self._events.append(Failed(kind, "bad_certificate", message))
                fallback = self._held_certificate_usable()
                for out in waiting:
                    if fallback:
                        self._send(out, renew=False)
                    else:
                        self._fail(out, "bad_certificate", message)
                return
            self.certificate = frame.certificate
            for out in waiting:
                self._send(out)
        elif isinstance(frame, wire.Bundle):
            self._bundles(str(context), frame)
        elif isinstance(frame, wire.Sent):
            if context == _SENDER_KEY:
                return  # a sender key distribution went out
            assert isinstance(context, _Outgoing)
            self._sent(context, frame)
        elif isinstance(frame, wire.Envelopes):
            self._envelopes(frame.envelopes)
            self._relay_low(frame.prekeys_left)
            if frame.more:
                self.receive()
        elif isinstance(frame, wire.ContactsFound):
            self._events.append(ContactsFound(tuple(frame.registered)))
        elif isinstance(frame, wire.GroupUpdated):
            self._events.append(GroupUpdated(frame.group, frame.epoch))
            if context == ("left", frame.group):  # we left: no list of it to keep, nor to ask for
                self.group_lists.pop(frame.group, None)
            else:
                # the list as it now stands: what later changes are shown against
                self.refresh_group(frame.group)
        elif isinstance(frame, wire.GroupInfo):
            members = self._group_listed(frame)
            if isinstance(context, _GroupSend):
                context.members, context.epoch = members, frame.epoch
                context.waiting = set(members)
                self._group_fetch(context)
        elif isinstance(frame, wire.GroupState) and isinstance(context, _StateChange):
            self._state_fetched(context, frame)
        elif isinstance(frame, wire.GroupStateStored) and (
            isinstance(context, _StateChange) or (type(context) is tuple and context[0] == "state")
        ):
            self._events.append(GroupStateStored(frame.group, frame.version))
        elif isinstance(frame, wire.GroupSent):
            assert isinstance(context, _GroupSend)
            to = f"group:{context.group_id.hex()}"
            self._events.append(Accepted(context.ref, to, tuple(frame.envelope_ids), context.members))
        elif isinstance(frame, wire.Acked) and isinstance(context, tuple):
            self._forget_acked(context)

    def _sent(self, context: _Outgoing, frame: wire.Sent) -> None:
        """The relay took a message we sent (its ``sent``): one envelope id for each envelope, in
        their order (wire.Sent). Other than one each is no answer to this send, and is refused as an
        answer of another kind is: the ids are what the message is logged by for a retry receipt
        (``_log_sent_pairwise``) and what the driver matches receipts to, so an id more would have the
        text sent again for an envelope it never was, and one fewer leave a device's copy unaccounted."""
        ids = tuple(frame.envelope_ids)
        if len(ids) != context.envelopes:
            message = f"the relay's 'sent' carries {len(ids)} envelope_ids for the {context.envelopes} envelopes sent"
            self._fail(context, UNEXPECTED_ANSWER, message)
            return
        self._events.append(Accepted(context.ref, context.to, ids))
        self._log_sent_pairwise(context, ids)
        if frame.needs_sync:
            self._multi_device = True
        self._sync(context)

    def request_certificate(self) -> None:
        self._request(wire.GetSenderCertificate)

    def _not_us(self, frame: wire.Authenticated) -> str | None:
        """Why the relay's ``authenticated`` is not this device's login (it names another account or
        device than the challenge and signature were for), or None when it names this one."""
        if frame.account != self.account:
            return f"the relay's 'authenticated' names account {frame.account!r}, not this device's {self.account!r}"
        if frame.device != self.device_id:
            return (
                f"the relay's 'authenticated' names device {frame.device}, not this device's {self.device_id}"
            )
        return None

    def _held_certificate_usable(self) -> bool:
        """Whether the sender certificate held can still carry a sealed send when renewing it failed:
        more than CERTIFICATE_LAST_USE seconds of it left."""
        return (
            self.certificate is not None and self._certificate_expires - self.clock() > CERTIFICATE_LAST_USE
        )

    def _check_certificate(self, certificate: bytes) -> float:
        """Check a sender certificate the relay issued this device before it replaces the one held:
        as its recipients will check it (``clients.sealed.open_envelope``: the chain to the trust root,
        the signatures, the expiry), and that it names this device and its identity key (else every
        recipient refuses the sealed sends it goes in). Returns its expiry; raises CertificateError
        saying why not, also for one that expires within CERTIFICATE_RENEWAL (it would be asked for
        again at the next sealed send)."""
        cert = SenderCertificate.decode(certificate)
        if cert.sender != self.account:
            raise CertificateError(f"it names sender {cert.sender!r}, not {self.account!r}")
        if cert.device != self.device_id:
            raise CertificateError(f"it names device {cert.device}, not {self.device_id}")
        if not _p.constant_time_equal(cert.identity_key, self.device.identity_key):
            raise CertificateError("it names another identity_key than this device's")
        if self.trust_root is None:
            raise CertificateError("no trust root to check it against")
        now = self.clock()
        cert.verify(self.trust_root, int(now))
        if cert.expires - now < CERTIFICATE_RENEWAL:
            raise CertificateError(
                f"it expires at {cert.expires}, in {cert.expires - now:.0f} s (fewer than {CERTIFICATE_RENEWAL:.0f})"
            )
        return cert.expires

    def connection_lost(self) -> None:
        """The driver's word that the connection to the relay closed: no answer will come to any
        request in flight on it. Requests are forgotten (a late answer is ignored); messages that
        were waiting for a prekey bundle or a sender certificate stay queued, and are asked for
        again once the device has logged in on its next connection (see ``_resume``). A send in
        flight is the driver's to account for: the relay either accepted it or never saw it."""
        for _kind, context in self._pending.values():
            if isinstance(context, _Outgoing) and (context.group is not None or _is_handout(context)):
                self._resend.append(context)
            elif isinstance(context, _GroupSend):  # a server-side group send: look the list up again
                self._resend_groups.append(context)
            elif isinstance(context, _StateChange):  # made again from the state as then stored
                self._resend_state.append(context)
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
        # Server-side membership: what changed while this device was away, then the group sends.
        for group_id in sorted(self.group_lists):
            self.refresh_group(group_id)
        groups, self._resend_groups = self._resend_groups, []
        for gs in groups:
            gs.attempts = 0
            self._group_lookup(gs)
        changes, self._resend_state = self._resend_state, []
        for change in changes:
            self._fetch_state(change)
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
        if isinstance(context, _GroupSend):
            if frame.code == wire.ErrorCode.STALE_GROUP and context.attempts < 3:
                self._group_lookup(context)  # the members changed: hand out the sender key, send again
                return
            self._events.append(Failed(context.ref, frame.code, frame.message, frame.retry_after_ms))
            return
        if isinstance(context, _StateChange):
            if (
                frame.code == wire.ErrorCode.STALE_GROUP
                and kind == wire.PutGroupState.kind
                and context.attempts < 3
            ):
                context.attempts += 1
                self._fetch_state(context)  # another member's version came first: start from it
                return
            self._events.append(Failed(context.ref, frame.code, frame.message, frame.retry_after_ms))
            return
        if type(context) is tuple and context[0] == "state":
            self._events.append(Failed(context[1], frame.code, frame.message, frame.retry_after_ms))
            return
        if isinstance(context, _Audit | _Compare):
            self._key_log_answer(context, frame)
        elif isinstance(context, _Outgoing):
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
        elif kind == "get_sender_certificate":
            # The sealed sends waiting for it go with the certificate held while it is still good for
            # them, else fail with the relay's reason (and when to retry, if it said), as for a
            # certificate refused: left waiting, they and every sealed send after them (which asks
            # only when the first is queued) would wait for the next login. The next sealed send
            # asks again.
            waiting, self._waiting_certificate = self._waiting_certificate, []
            self._events.append(Failed(kind, frame.code, frame.message, frame.retry_after_ms))
            fallback = self._held_certificate_usable()
            for out in waiting:
                if fallback:
                    self._send(out, renew=False)
                else:
                    self._fail(out, frame.code, frame.message, frame.retry_after_ms)
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
        try:
            server = self._key_log_key(
                proof.server_certificate, f"key_log.server_certificate in a {wire.quoted(frame.kind)} frame"
            )
        except _KeyLogRefused as exc:
            return KeyLogChecked(account, 0, (), devices, str(exc))
        h = proof.head
        head = kt.TreeHead(h.tree_size, h.timestamp, h.root_hash, h.signature)
        if not head.verify(server):
            return KeyLogChecked(
                account, h.tree_size, (), devices, "the tree head's signature does not verify"
            )
        try:
            self._take_head(head)
        except _KeyLogRefused as exc:
            return KeyLogChecked(account, h.tree_size, (), devices, str(exc))
        paths = {i.device: i for i in proof.inclusions}
        logged: list[int] = []
        unlogged: list[int] = []
        for b in frame.devices:
            i = paths.get(b.device)
            leaf = wire.kt_leaf(account, b.device, b.identity_key)
            good = i is not None and kt.verify_inclusion(leaf, i.leaf_index, h.tree_size, i.path, h.root_hash)
            (logged if good else unlogged).append(b.device)
        return KeyLogChecked(account, h.tree_size, tuple(sorted(logged)), tuple(sorted(unlogged)))

    def _take_head(self, head: kt.TreeHead) -> None:
        """Keep a signed head the relay served this device, if it is fresh (clients.transparency.check_fresh:
        not older than MAX_HEAD_AGE by this device's clock, nor more than MAX_HEAD_AHEAD ahead of it, nor
        older than a head of the same or a larger size it already took, nor of a smaller tree than one it
        took, nor of another tree signed no later than one it took); else refuse it, saying why."""
        try:
            kt.check_fresh(head, self.clock(), self.key_log_heads)
        except kt.ProofError as exc:
            raise _KeyLogRefused(str(exc)) from None
        heads = self.key_log_heads
        if heads and heads[-1] == head:  # the same head served again: nothing new to hold
            return
        heads.append(head)
        del heads[:-KEPT_KEY_LOG_HEADS]

    def _key_log_key(self, certificate: bytes, where: str) -> bytes:
        """The server key that signs the log's heads, from its certificate checked against the trust root;
        ``where``: the certificate's field in the relay's frame, by its path and the frame's kind."""
        if self.trust_root is None:
            raise _KeyLogRefused("no trust root to check the server certificate")
        try:
            cert = ServerCertificate.decode(certificate)
            cert.verify(self.trust_root)
        except CertificateError as exc:
            raise _KeyLogRefused(f"server certificate ({where}): {exc}") from None
        self._key_log_server = cert.public_key
        return cert.public_key

    # --- key transparency over the wire: the self-audit and head comparisons ---------------------

    def audit_key_log(
        self,
        expected: Iterable[tuple[int, bytes]],
        known_devices: Iterable[int] = (),
        *,
        head: bytes | kt.TreeHead | None = None,
    ) -> None:
        """Audit this account in the relay's key log, over the wire: fetch the signed head
        (``get_key_log_head``), then every entry up to it (``get_key_log_entries``, page by page), check
        that they hash to the signed root, and compare this account's entries with ``expected``
        (device, identity key) — any key logged for a device in ``known_devices`` counts as expected
        (a device's earlier keys stay in the log). The answer is a ``KeyLogAudited`` event.

        With ``head`` (one gossiped to this device, as ``compare_key_log_head`` takes it), audit the log
        up to that head instead of the relay's current one: a relay that showed this device a log
        without an entry others were shown must now either serve that entry or fail to match the head
        (``reason``). A malformed or unsigned ``head`` raises ``clients.transparency.ProofError``."""
        audit = _Audit(frozenset(expected), frozenset(known_devices))
        if head is None:
            self._request(wire.GetKeyLogHead, context=audit)
            return
        audit.head = self._gossiped(head)
        if audit.head.tree_size == 0:
            self._audit_done(audit)
        else:
            self._request(wire.GetKeyLogEntries, context=audit, start=0, end=audit.head.tree_size - 1)

    def _gossiped(self, gossiped: bytes | kt.TreeHead) -> kt.TreeHead:
        head = kt.decode_head(gossiped) if isinstance(gossiped, bytes) else gossiped
        if self._key_log_server is None:
            raise kt.ProofError(
                "gossiped tree head: this device has no checked server key to verify it with yet"
            )
        if not head.verify(self._key_log_server):
            raise kt.ProofError(
                "gossiped tree head: its signature does not verify under the relay's server key"
            )
        return head

    def compare_key_log_head(self, gossiped: bytes | kt.TreeHead) -> None:
        """A signed head another party holds (the witness's, as ``clients.transparency.encode_head``
        bytes): compare it with the latest this device was shown, asking the relay for the consistency
        proof between the two (``get_key_log_consistency``; for two heads of one size the roots must match).
        The answer is a ``KeyLogCompared`` event. A malformed head, or one the relay's server key did not
        sign, raises ``clients.transparency.ProofError``; with no head of its own yet, nothing happens."""
        theirs = self._gossiped(gossiped)
        if not self.key_log_heads:
            return
        ours = max(self.key_log_heads, key=lambda h: h.tree_size)
        small, large = sorted((ours.tree_size, theirs.tree_size))
        self._request(wire.GetKeyLogConsistency, context=_Compare(ours, theirs), first=small, second=large)

    def _key_log_answer(self, context: _Audit | _Compare, frame: wire.Response) -> None:
        if isinstance(context, _Compare):
            self._events.append(self._compared(context, frame))
            return
        try:
            self._audit_step(context, frame)
        except _KeyLogRefused as exc:
            size = 0 if context.head is None else context.head.tree_size
            self._events.append(KeyLogAudited(self.account, size, reason=str(exc), head=context.head))

    def _compared(self, c: _Compare, frame: wire.Response) -> KeyLogCompared:
        small, large = sorted((c.ours.tree_size, c.theirs.tree_size))
        if small == large and c.ours.root_hash != c.theirs.root_hash:
            return KeyLogCompared(
                c.ours, c.theirs, False, f"two signed heads of size {small} with different roots"
            )
        if isinstance(frame, wire.ErrorFrame):
            why = f"the relay gave no consistency proof from size {small} to {large}: {frame.code}: {frame.message}"
            return KeyLogCompared(c.ours, c.theirs, False, why)
        if not isinstance(frame, wire.KeyLogConsistency) or (frame.first, frame.second) != (small, large):
            return KeyLogCompared(
                c.ours, c.theirs, False, f"the relay answered another question than {small} → {large}"
            )
        try:
            good = kt.check_consistency(c.ours, c.theirs, frame.proof)
        except kt.ProofError as exc:
            return KeyLogCompared(c.ours, c.theirs, False, f"a malformed consistency proof: {exc}")
        if good:
            return KeyLogCompared(c.ours, c.theirs, True)
        why_not = f"the relay's consistency proof from size {small} to {large} does not join the heads"
        return KeyLogCompared(c.ours, c.theirs, False, why_not)

    def _audit_step(self, audit: _Audit, frame: wire.Response) -> None:
        if isinstance(frame, wire.ErrorFrame):
            raise _KeyLogRefused(f"the relay refused: {frame.code}: {frame.message}")
        if isinstance(frame, wire.KeyLogHeadResponse):
            server = self._key_log_key(
                frame.server_certificate, f"server_certificate in a {wire.quoted(frame.kind)} frame"
            )
            h = frame.head
            head = kt.TreeHead(h.tree_size, h.timestamp, h.root_hash, h.signature)
            if not head.verify(server):
                raise _KeyLogRefused("the tree head's signature does not verify")
            self._take_head(head)
            audit.head = head
        elif isinstance(frame, wire.KeyLogEntries) and audit.head is not None:
            have = len(audit.leaves)
            if frame.start != have or not frame.entries:
                raise _KeyLogRefused(
                    f"key log entries: asked from index {have}, got {len(frame.entries)} from index {frame.start}"
                )
            if have + len(frame.entries) > audit.head.tree_size:
                raise _KeyLogRefused(
                    f"key log entries: {have + len(frame.entries)} entries for a head of {audit.head.tree_size}"
                )
            for i, leaf in enumerate(frame.entries):
                try:
                    wire.kt_leaf_decode(leaf)
                except ValueError as exc:
                    where = f"entries[{i}] in a {wire.quoted(frame.kind)} frame"
                    raise _KeyLogRefused(f"key log entry {have + i} ({where}): {exc}") from None
            audit.leaves.extend(frame.entries)
        else:
            raise _KeyLogRefused(f"the relay answered {frame.kind!r} to a key log request")
        head = audit.head
        assert head is not None
        if len(audit.leaves) < head.tree_size:
            self._request(
                wire.GetKeyLogEntries, context=audit, start=len(audit.leaves), end=head.tree_size - 1
            )
            return
        self._audit_done(audit)

    def _audit_done(self, audit: _Audit) -> None:
        head = audit.head
        assert head is not None and self._key_log_server is not None
        found = kt.audit(
            self.account, set(audit.expected), audit.leaves, head, self._key_log_server, audit.known
        )
        reason = None if found.log_matches_head else "the entries do not hash to the signed head's root"
        self._events.append(
            KeyLogAudited(self.account, head.tree_size, found.unexpected, found.missing, reason, head)
        )

    def _bundles(self, account: str, frame: wire.Bundle) -> None:
        waiting = self._waiting_bundle.pop(account, [])
        unfit = self._unfit_bundle(account, frame)
        if unfit is not None:  # a bundle no relay makes: send nothing, and say why
            for out in waiting:
                self._fail(out, "bad_bundle", unfit)
            return
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

    def _unfit_bundle(self, account: str, frame: wire.Bundle) -> str | None:
        """Why ``frame``, the answer to a fetch of ``account``'s bundle, is not a bundle of it: another
        account's, a device listed twice (two sessions for one address, one message written to both),
        or no device at all for another account (the messages waiting on it would go to no one, and
        never fail). None if it is one."""
        if frame.account != account:
            return f"the relay answered a fetch of {account!r} with a bundle for {frame.account!r}"
        seen: set[int] = set()
        for b in frame.devices:
            if b.device in seen:
                return f"the bundle for {account!r} lists device {b.device} more than once"
            seen.add(b.device)
        if not seen and account != self.account:
            return f"the bundle for {account!r} lists no device"
        return None

    def bundle_exchanges_ahead(
        self, frame: wire.Bundle, peek: Callable[[int, int], bytes] | None = None
    ) -> list[tuple[Any, ...]]:
        """What receiving ``frame`` (a bundle this agent asked for) would compute as it starts its
        sessions (``Device.session_exchanges_ahead`` for each device it has no session with),
        as jobs for a simulation's worker to compute ahead. ``peek(n, k)``: the n bytes the device's
        RNG will give at its k-th draw from now (0: the next), if the caller can tell. A guess: it
        changes nothing, and trusts nothing it is given."""
        account = frame.account
        if self.content_key is not None:
            return []
        jobs: list[tuple[Any, ...]] = []
        draw = 0
        for b in frame.devices:
            if account == self.account and b.device == self.device_id:
                continue
            peer = PeerAddress(account, b.device)
            if self.device.has_session(peer) and self.device.peer_identity(peer) == b.identity_key:
                continue
            try:
                bundle = _bundle(b)
            except (BundleError, ValueError, TypeError):
                continue
            more, used = self.device.session_exchanges_ahead(bundle, peek, draw)
            jobs += more
            draw += used
        return jobs

    def top_up_ahead(
        self, ciphertext: bytes, peek: Callable[[int, int], bytes] | None = None
    ) -> list[tuple[Any, ...]]:
        """The key pairs ``_top_up`` would make once this agent has read ``ciphertext``, as jobs for a
        simulation's worker to compute ahead: if it is a prekey message taking one of the one-time
        prekeys it holds, and that leaves fewer than the low-water mark, the public keys of the next
        ``prekey_batch`` draws of its RNG past the draws reading may make first (``peek(n, k)``: the n
        bytes of the k-th draw from now, if the caller can tell). A guess: it changes nothing, and a
        wrong one only costs the worker's time."""
        if peek is None or len(self.device.secrets.one_time) > min(PREKEY_LOW_WATER, self.prekey_batch):
            return []
        if not self.device.takes_one_time_prekey(ciphertext):
            return []
        return [(_p.AHEAD_BASE, peek(32, k)) for k in range(self.prekey_batch + TOP_UP_AHEAD_SLACK)]

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
            # the signature the relay served with the device's keys (the account's signed device list)
            signature = next((b.device_signature for b in frame.devices if b.device == peer.device), None)
            if primary is None or signature is None:
                return False
            return spec.xeddsa_verify(primary, DEVICE_LIST_PREFIX + key, signature)
        return True

    def _replayed(self, env: wire.Envelope) -> bool:
        """Whether an envelope the device could not read is, by its header, a copy of a message it read
        (``Duplicate``). Asked only after a refusal, so reading costs nothing more."""
        if self.content_key is not None and env.body[:1] == CUSTODY_TAG:
            return False  # no message numbers under a content key
        if env.sealed:
            return self.trust_root is not None and self.device.sealed_replayed(
                env.body, self.trust_root, _certificate_time(env)
            )
        if env.source_account is None or env.source_device is None:
            return False
        return self.device.replayed(PeerAddress(env.source_account, env.source_device), env.body)

    def _envelopes(self, envelopes: tuple[wire.Envelope, ...]) -> None:
        acks = []
        for env in envelopes:
            acks.append(env.id)
            if env.id in self._seen:
                continue  # at-least-once delivery: already processed
            self._seen.add(env.id)
            sessionless: PeerAddress | None = None  # a 1:1 message from a peer we hold no session with
            try:
                if self.content_key is not None and env.body[:1] == CUSTODY_TAG:
                    # (bodies sent before a switch to a content key still go to the ratchet below)
                    opened = self.content_key.open(env.body, route_ad(self.account))
                    if opened is None or env.source_account is None or env.source_device is None:
                        raise DecryptionError()
                    sender, plaintext = PeerAddress(env.source_account, env.source_device), opened
                elif env.sealed:
                    if self.trust_root is None:
                        raise DecryptionError()
                    sender, plaintext = self.device.open_sealed(
                        env.body, self.trust_root, _certificate_time(env)
                    )
                elif env.source_account is None or env.source_device is None:
                    # The relay names the sender of every unsealed envelope, and only the session or
                    # the sender key then shows whether it wrote it; one named by nobody is nobody's.
                    raise DecryptionError()
                elif env.body[:1] == _SENDER_KEY_BODY:
                    self._group_receive(env)
                    continue
                else:
                    sender = _peer((env.source_account, env.source_device))
                    if not self.device.has_session(sender):
                        sessionless = sender
                    plaintext = self.device.decrypt(sender, env.body)
                plaintext = unpad(plaintext, self.padding)
            except UntrustedIdentity:
                # it authenticated, from an identity key the user has not approved (refused with the
                # session as it was, the change reported: IdentityChanged): no resend to ask for
                self._events.append(Undecryptable(env.id, env.sealed, UNTRUSTED_IDENTITY))
                continue
            except SealedSenderSelfSend:
                # sealed by this very device's address (libsignal's SealedSenderSelfSend): dropped
                self._events.append(Undecryptable(env.id, env.sealed, SEALED_SENDER_SELF_SEND))
                continue
            except DecryptionError:
                if self._replayed(env):
                    self._events.append(Duplicate(env.id, env.sealed))  # no retry receipt: it was read
                    continue
                if sessionless is not None:
                    self._ask_pairwise_resend(sessionless, env.id)
                self._events.append(Undecryptable(env.id, env.sealed))
                continue
            if plaintext.startswith(_MAILBOX_PREFIX):
                plaintext = self._mailbox_introduced(sender.account, plaintext)
            if plaintext.startswith(CONTROL):
                code, rest = plaintext[2:3], plaintext[3:]
                if code == _SENDER_KEY:
                    self._sender_key_arrived(sender, rest)
                elif code == _RETRY:
                    self._retry_asked(sender, rest)
                elif code == _RESEND:
                    self._resent(sender, rest, env)
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
        cutoff, n = now - SEEN_AFTER_ACK, 0
        while acked[n][0] < cutoff:  # stops at the entry just added, at the latest
            self._seen.difference_update(acked[n][1])
            n += 1
        if n:
            del acked[:n]

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


# PeerAddress((account, device)) made in C: a NamedTuple's own __new__ is a Python function (~0.2 µs
# more a call), and a message makes two (the sender's address for its session, the recipient's).
_peer = cast(Callable[[tuple[str, int]], PeerAddress], functools.partial(tuple.__new__, PeerAddress))


def _certificate_time(env: wire.Envelope) -> int:
    """The time a sealed envelope's sender certificate is checked at: when the relay took the
    envelope, in the whole seconds the relay counts a certificate's expiry in. Signal's clients give
    libsignal the envelope's server timestamp, not the time they read it, so a message that waited
    in the queue while its recipient was offline longer than the certificate had left (a day at
    most) is read, not refused. The relay that stamps the time is the one that signs certificates."""
    return env.timestamp // 1000


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
