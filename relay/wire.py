"""The relay's wire protocol: length-prefixed msgpack frames, sans-IO.

A frame on the wire is a 4-byte big-endian length ``n`` followed by ``n`` bytes holding one
msgpack map. Every map carries ``v`` (the protocol version, :data:`PROTOCOL_VERSION`), ``id``
(an unsigned request id that the response echoes; the relay's own pushes use 0) and ``kind``.
The other keys depend on the kind; each kind is a frozen dataclass below that checks itself
when it is built, whether by a caller or by :class:`FrameDecoder` (h11's ``_events.py`` is the
model). The full description for client writers is ``docs/protocol.md``.

This module is pure: no sockets, no clock, no randomness. :func:`encode` turns a frame into
bytes; :class:`FrameDecoder` turns bytes into frames, returning :data:`NEED_DATA` until a whole
frame has arrived and raising :class:`RemoteProtocolError` (with a stable ``code`` and the
offending ``field``) when the peer sent something it should not have. A decoder that has raised
stays failed, as an h11 connection does: after a framing error there is no safe place to resume.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import functools
import hashlib
import itertools
import re
import struct
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, cast

import msgpack

from relaysim.relay import _msgpack
from relaysim.relay._frozen import quick_init

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_FRAME_SIZE",
    "EC_KEY_TYPE",
    "ENVELOPE_ID_SIZE",
    "KEM_KEY_TYPE",
    "KEM_PUBLIC_KEY_SIZE",
    "KEY_LOG_HEAD_REFRESH",
    "KT_HEAD_VERSION",
    "KT_LEAF_VERSION",
    "MAX_GROUP_WRITE_KEYS",
    "MAX_KEY_LOG_ENTRIES",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "REQUEST_KINDS",
    "RESPONSE_KINDS",
    "RESUMABLE_CODES",
    "Ack",
    "Acked",
    "AuthChallenge",
    "Authenticate",
    "Authenticated",
    "Block",
    "Blocked",
    "Bundle",
    "Challenge",
    "ChangeGroup",
    "ContactsFound",
    "CreateGroup",
    "Deliver",
    "DeviceBundle",
    "DiscoverContacts",
    "Envelope",
    "Envelopes",
    "ErrorCode",
    "ErrorFrame",
    "FetchBundle",
    "Frame",
    "FrameDecoder",
    "GetGroup",
    "GetGroupState",
    "GetKeyLogConsistency",
    "GetKeyLogEntries",
    "GetKeyLogHead",
    "GetSenderCertificate",
    "GroupInfo",
    "GroupMember",
    "GroupSend",
    "GroupSent",
    "GroupState",
    "GroupStateStored",
    "GroupUpdated",
    "KemPrekey",
    "KeyInclusion",
    "KeyLogConsistency",
    "KeyLogEntries",
    "KeyLogHead",
    "KeyLogHeadResponse",
    "KeyLogProof",
    "LocalProtocolError",
    "MsgpackError",
    "OutgoingEnvelope",
    "Ping",
    "Pong",
    "Prekey",
    "PrekeysUploaded",
    "ProtocolError",
    "PutGroupState",
    "Receive",
    "Register",
    "Registered",
    "RemoteProtocolError",
    "Request",
    "Response",
    "SealedSend",
    "Send",
    "SenderCertificateResponse",
    "Sent",
    "SignedPrekey",
    "Unblock",
    "Unblocked",
    "UploadPrekeys",
    "auth_message",
    "cut",
    "encode",
    "for_log",
    "group_state_message",
    "kem_prekey_message",
    "kt_leaf",
    "kt_leaf_decode",
    "kt_tree_head_body",
    "prechecked",
    "quoted",
    "signed_prekey_message",
    "type_name",
    "unpack_value",
    "value_text",
]

PROTOCOL_VERSION: Final = 1

# The largest frame body (the msgpack map, not counting the 4-byte prefix) a decoder accepts.
# Precedent: Signal-Server refuses message bodies above 256 KiB
# (MessageController.MAX_MESSAGE_SIZE = DataSize.kibibytes(256), signalapp/Signal-Server,
# service/src/main/java/org/whispersystems/textsecuregcm/controllers/MessageController.java).
# For comparison, gRPC's default maximum receive size is 4 MiB and h11 allows 16 KiB of
# headers (DEFAULT_MAX_INCOMPLETE_EVENT_SIZE). 256 KiB also holds a registration with 100
# signed ML-KEM-1024 prekeys (about 165 KB). Configurable per decoder and per relay.
DEFAULT_MAX_FRAME_SIZE: Final = 256 * 1024

_PREFIX = struct.Struct(">I")


class _ReservedExt(typing.NamedTuple):
    """An ext value of a type msgpack reserves (-128 to -2; -1 is its timestamp), which msgpack's own
    ExtType will not hold ("code must be 0~127": a body holding one was refused as not msgpack at all).
    Named ExtType, as msgpack's is, so that a repr (a debugger's, a failing test's) shows one as any ext;
    an error names it in msgpack's words, ``ext -2 b'\\x00'``, as any ext (:func:`value_text`)."""

    code: int
    data: bytes


_ReservedExt.__name__ = _ReservedExt.__qualname__ = "ExtType"


def _ext(code: int, data: bytes) -> Any:
    """msgpack's ext_hook for a frame body: an ext of any type read as a value (refused as one where the
    body holds it), never an error of msgpack's own words."""
    return msgpack.ExtType(code, data) if code >= 0 else _ReservedExt(code, data)


# How deep msgpack unpacks (relay._msgpack.MAX_NESTING: the C build's stack, kept by the pure-Python build
# too): 1,024 maps and arrays, the body's own map counted; one more is refused.
MAX_NESTING: Final = _msgpack.MAX_NESTING
# msgpack's Unpacker and unpackb, which read a body the same, or refuse it the same, in either build.
_Unpacker: Any = _msgpack.Unpacker
_unpackb: Callable[..., Any] = _msgpack.unpackb
_unpackb_ext = functools.partial(_unpackb, ext_hook=_ext)  # (off the hot path: ~0.2 µs a call)


def _unpack_body(body: bytes | bytearray) -> Any:
    """A frame body's msgpack value, read as a dict of what it holds; raises what msgpack raises."""
    try:
        return _unpackb(body, raw=False, strict_map_key=False)
    except ValueError:  # (an ext of a type msgpack reserves among what it refuses so: read again for it)
        return _unpackb_ext(body, raw=False, strict_map_key=False)


# msgpack.packb makes a Packer (and its buffer) per call, as long as packing a small map takes;
# each thread keeps one instead (a Packer is not to be shared between threads).
_packers = threading.local()


def _pack(obj: Any) -> bytes:
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)


PREFIX_SIZE: Final = _PREFIX.size

# Sizes of the things the relay checks but never interprets.
KEY_SIZE: Final = 32  # X25519 public key (u-coordinate)
SIGNATURE_SIZE: Final = 64  # XEdDSA / Ed25519 signature
KEM_PUBLIC_KEY_SIZE: Final = 1568  # ML-KEM-1024 encapsulation key, FIPS 203 table 3
ENVELOPE_ID_SIZE: Final = 16
NONCE_SIZE: Final = 32
TOKEN_SIZE: Final = 32

# Upper bounds on lists. Signal-Server replaces a device's prekeys with each upload and its
# clients upload 100 at a time (libsignal-service PREKEY_BATCH_SIZE = 100); we allow that many.
MAX_PREKEYS_PER_UPLOAD: Final = 100
MAX_DEVICES_PER_SEND: Final = 64
MAX_DEVICES_PER_ACCOUNT: Final = MAX_DEVICES_PER_SEND  # so one send and one bundle reach them all
# The highest device id a device may register under: Signal's server holds device ids 1 to 127
# (Signal-Server, grpc/DeviceIdUtil.java ``isValid``: 1 to Byte.MAX_VALUE; its device ids are bytes),
# and libsignal's DeviceId no other (rust/core/src/address.rs, MAX_VALID_DEVICE_ID). The wire holds
# every device id to it, wherever a frame names one (DeviceId; an error's device lists): a device past
# it cannot register, so no frame can name one (a send to 128 was read, and answered stale_devices).
MAX_DEVICE_ID: Final = 127
MAX_ACK_IDS: Final = 1000
MAX_ACCOUNT_LEN: Final = 128  # characters; Signal's account ids are 36-character UUIDs
# Contact discovery answers at most this many accounts per request. Signal's CDSI takes a client's
# whole address book in one session, rate-limited by a token bucket rather than a fixed cap; a
# bound per frame keeps the largest request (about 130 KB of account ids) inside one frame.
MAX_CONTACTS: Final = 1000
# A push token is the push service's opaque address for the device: 32 bytes from APNs, a string of
# about 160 characters from FCM; a register may carry one of up to this many bytes.
MAX_PUSH_TOKEN: Final = 256
MAX_DEVICE_FACT_LEN: Final = 64  # characters of a device type or an app version
# Groups (docs/protocol.md, "Groups"). A group is named by its 16-byte distribution id (the sender
# keys' id, clients/groups.py). WhatsApp's groups hold up to 1024 members (since the launch of
# Communities, blog.whatsapp.com, 2022-11-03); a group send fans out to every device of every
# member, at most MAX_DEVICES_PER_SEND each. Signal's server keeps each group's state encrypted
# (groups v2: "The Signal Private Group System", Chase, Perrin and Zaverucha, CCS 2020); the relay
# bounds the opaque blob a client uploads.
GROUP_ID_SIZE: Final = 16
MAX_GROUP_MEMBERS: Final = 1024
MAX_GROUP_FANOUT: Final = MAX_GROUP_MEMBERS * 8  # envelopes one group send may make
MAX_GROUP_STATE: Final = 128 * 1024
# A group state's write keys (PutGroupState.write_keys): one per current member, so at most as many
# as a group has members.
MAX_GROUP_WRITE_KEYS: Final = MAX_GROUP_MEMBERS

# What a prekey signature covers: the identity key's XEdDSA signature over Encode(PK).
# X25519: 0x05 ‖ u (X3DH §2.1 Encode, libsignal's DJB key type). ML-KEM-1024: 0x0A ‖ key
# (PQXDH §2.1 leaves EncodeKEM to the application; 0x0A is libsignal's key type byte for
# ML-KEM-1024, KeyType::MLKEM1024 in rust/protocol/src/kem.rs, beside 0x08 for the Kyber-1024
# Signal deploys, whose keys are not ML-KEM's). These are the only
# definitions of the two tags: clients/spec.py and clients/keys.py import them from here. The relay checks both signatures on upload, as Signal-Server does
# (PreKeyState.isSignatureValidOnEachSignedKey).
EC_KEY_TYPE: Final = b"\x05"
KEM_KEY_TYPE: Final = b"\x0a"

# Context for the authentication signature, so that it can never be mistaken for a prekey
# signature or anything else the identity key signs.
AUTH_CONTEXT: Final = b"relaysim-auth-v1\x00"

_UINT32_MAX: Final = 2**32 - 1
_UINT64_MAX: Final = 2**64 - 1

# Context for a group state's write signature (PutGroupState.signature): the group's write key is
# an Ed25519 key the members derive from the group's master key, and it signs nothing else, but the
# context keeps its signatures apart from any other relaysim signature all the same.
GROUP_STATE_CONTEXT: Final = b"relaysim group state write v1\x00"
# The same, for an upload that also sets the write keys of the group's current members
# (PutGroupState.write_keys): the signature covers the new key set as well.
GROUP_STATE_KEYS_CONTEXT: Final = b"relaysim group state write v2\x00"


def signed_prekey_message(public: bytes) -> bytes:
    """The bytes a signed (X25519) prekey's signature covers."""
    return EC_KEY_TYPE + public


def kem_prekey_message(public: bytes) -> bytes:
    """The bytes a signed ML-KEM-1024 prekey's signature covers."""
    return KEM_KEY_TYPE + public


def auth_message(nonce: bytes, account: str, device: int) -> bytes:
    """What a device signs to answer a challenge: context ‖ nonce ‖ device (u32 BE) ‖ account (UTF-8).

    The nonce and device are fixed-width, so the encoding is unambiguous.
    """
    return AUTH_CONTEXT + nonce + device.to_bytes(4, "big") + account.encode("utf-8")


REGISTRATION_POW_CONTEXT: Final = b"relaysim registration proof v1\x00"


def registration_pow_message(account: str, identity_key: bytes) -> bytes:
    """What a hashcash registration stamp is appended to: context ‖ identity key (32 bytes) ‖
    account (UTF-8). A stamp made for one account and key is no use for another."""
    return REGISTRATION_POW_CONTEXT + identity_key + account.encode("utf-8")


def group_state_message(
    group: bytes, version: int, state: bytes, write_keys: Sequence[bytes] | None = None
) -> bytes:
    """What a write key signs to store ``state`` as ``version``: context ‖ group (16 bytes) ‖
    version (u64 BE) ‖ SHA-256(state), and, when the upload sets the group's write keys
    (``write_keys``, in the order sent), a second context and ‖ count (u16 BE) ‖ SHA-256(the keys,
    32 bytes each, concatenated). Fixed widths, so the encoding is unambiguous; a signature for
    one group, version, state or key set is no use for another, and one without keys is no use
    with them. Defined here, once, for the relay that checks it and the clients that sign it
    (clients may import relay.wire, never the reverse)."""
    if type(group) is not bytes or len(group) != GROUP_ID_SIZE:
        raise ValueError(f"group state signature: group must be {GROUP_ID_SIZE} bytes")
    if type(version) is not int or not 0 <= version <= _UINT64_MAX:
        raise ValueError(f"group state signature: version must be an integer 0 to 2**64 - 1, not {version!r}")
    body = group + version.to_bytes(8, "big") + hashlib.sha256(state).digest()
    if write_keys is None:
        return GROUP_STATE_CONTEXT + body
    if len(write_keys) > MAX_GROUP_WRITE_KEYS or any(
        type(k) is not bytes or len(k) != KEY_SIZE for k in write_keys
    ):
        raise ValueError(
            f"group state signature: write_keys must be at most {MAX_GROUP_WRITE_KEYS} keys of {KEY_SIZE} bytes"
        )
    keys = hashlib.sha256(b"".join(write_keys)).digest()
    return GROUP_STATE_KEYS_CONTEXT + body + len(write_keys).to_bytes(2, "big") + keys


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def registration_pow_ok(account: str, identity_key: bytes, stamp: bytes, difficulty: int) -> bool:
    """Whether SHA-256(registration_pow_message ‖ stamp) starts with ``difficulty`` zero bits."""
    digest = hashlib.sha256(registration_pow_message(account, identity_key) + stamp).digest()
    return leading_zero_bits(digest) >= difficulty


def solve_registration_pow(account: str, identity_key: bytes, difficulty: int) -> bytes:
    """The first 8-byte counter stamp that meets ``difficulty``: 2**difficulty tries on average (at
    the default 18 bits, 2^18 = 262,144 SHA-256 hashes on average, each of ~100 bytes); how long
    that takes is the machine's, measured by no test or benchmark."""
    base = hashlib.sha256(registration_pow_message(account, identity_key))
    for counter in itertools.count():
        stamp = counter.to_bytes(8, "big")
        h = base.copy()
        h.update(stamp)
        if leading_zero_bits(h.digest()) >= difficulty:
            return stamp
    raise AssertionError("unreachable")


# --- errors ----------------------------------------------------------------------------------


class ErrorCode(enum.StrEnum):
    """Stable error codes. Clients may branch on these; the human ``message`` may change."""

    # The frame itself (raised by FrameDecoder / frame constructors).
    FRAME_TOO_LARGE = "frame_too_large"
    TRUNCATED_FRAME = "truncated_frame"
    MALFORMED_MSGPACK = "malformed_msgpack"
    NOT_A_MAP = "not_a_map"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_KIND = "unknown_kind"
    UNSUPPORTED_VERSION = "unsupported_version"
    # What the request asked for (raised by the relay core; the connection stays open).
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    FORBIDDEN = "forbidden"
    NO_CHALLENGE = "no_challenge"
    CHALLENGE_EXPIRED = "challenge_expired"
    AUTHENTICATION_FAILED = "authentication_failed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_ACCOUNT = "unknown_account"
    STALE_DEVICES = "stale_devices"
    INVALID_DELIVERY_TOKEN = "invalid_delivery_token"
    ENVELOPE_TOO_LARGE = "envelope_too_large"
    DUPLICATE_DEVICE = "duplicate_device"
    TOO_MANY_DEVICES = "too_many_devices"  # register: the account has MAX_DEVICES_PER_ACCOUNT already
    RATE_LIMITED = "rate_limited"  # retry_after_ms says when to try again
    RECIPIENT_QUEUE_FULL = "recipient_queue_full"  # the recipient's device has too much waiting
    REGISTRATION_PROOF = "registration_proof"  # a new account needs the relay's proof (see Register)
    UNKNOWN_GROUP = "unknown_group"  # no such group, or the caller is not a member of it
    GROUP_EXISTS = "group_exists"  # create_group with a group id already taken
    STALE_GROUP = "stale_group"  # the group changed since the epoch (or version) the request names
    GROUP_CLOSED = "group_closed"  # put_group_state: the state's last member left; no key can write it
    # The connection (raised by the server).
    TIMEOUT = "timeout"
    SERVER_BUSY = "server_busy"
    INTERNAL_ERROR = "internal_error"


class ProtocolError(Exception):
    """Something broke the protocol. ``code`` is stable, ``field`` names the offending field.

    ``request_id`` is the ``id`` of the frame at fault when it could be read, else 0.
    """

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None, request_id: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        # How the message is said of the field's whole path, when a map inside a frame refused it: that
        # map knows its own keys, not where it is ("envelopes[1].device is missing", never its type's name).
        self.by_path: Callable[[str], str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r}, field={self.field!r})"


# Errors about a frame whose bytes were read whole and whose body is a map with a known version:
# only what it names is wrong (a key or a kind a newer peer may speak), the next frame starts where
# its length said, so the connection goes on (docs/protocol.md, Errors). Every other decoder error
# leaves no safe place to resume, or says the peer speaks something else: those close.
RESUMABLE_CODES: Final = frozenset({ErrorCode.UNKNOWN_FIELD, ErrorCode.UNKNOWN_KIND})


class LocalProtocolError(ProtocolError):
    """This side tried to build or send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


def _prefixed(path: str, name: str | None) -> str:
    if not name or not path:
        return name or path
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


# --- field specifications --------------------------------------------------------------------
# A spec checks one field of a frame. ``check`` validates an in-memory value (and may normalise
# a list into a tuple); ``from_wire`` turns a decoded msgpack value into that in-memory value
# (only structs and lists need converting; everything else is checked by ``check`` when the
# dataclass is built); ``to_wire`` goes the other way.


# The most characters of an error frame's message and field (ErrorFrame's _Text): an error about a
# peer's key or path says at most this much of it.
MAX_ERROR_TEXT: Final = 4096


def _clipped(text: str, most: int = MAX_ERROR_TEXT) -> str:
    """``text``, or its first ``most`` - 1 characters and "…" when it is longer."""
    return text if len(text) <= most else text[: most - 1] + "…"


# The most characters of a peer's key or kind an error quotes (a key may be as long as a frame; the
# message must fit an error frame, and a log line).
MAX_QUOTED: Final = 60


def quoted(value: object, most: int = MAX_QUOTED) -> str:
    """``value`` (a key, a kind: what a peer sent) as an error quotes it: its ``repr`` whole when that is
    at most ``most`` (MAX_QUOTED) characters; else the repr of its first characters (a str's or a bin's, so
    that the quote closes) within ``most``, "…" and how long it is: ``'kkk…kk'… (5,000 characters)``; an
    integer by how many digits it has (``an integer of 400 digits``); anything else by its repr's first
    ``most`` characters, "…" and its length (:func:`cut`). A quote that follows words of its own within
    the limit (an ext's data after ``ext 5 ``: :func:`value_text`) is given a smaller ``most``. The one
    rule for what the relay's errors quote of what it was given (a repr shows control characters
    escaped): every key and kind a peer sent, a sender certificate's sender (relay.certificates), an
    option's word (relay.server), a limit's value (relay.limits), and, by its twin sims.analysis.runfiles.brief
    (which may not import this module), the simulator's words about what it was given. The operator's socket, which speaks JSON, quotes by the same
    rule in JSON's quotes (relay.admin._shown). A str read with ``surrogateescape`` (msgpack's, or an argv
    word's: one that is not UTF-8) is shown by its bytes, ``b'\\xff'``, never ``'\\udcff'`` (:func:`_as_sent`)."""
    value = _as_sent(value)
    if type(value) is int and value.bit_length() > 150:  # (an integer this long: by how many digits)
        try:
            digits = len(str(abs(value)))
        except ValueError:  # (past sys.get_int_max_str_digits(): Python will not say them)
            digits = 0
        if not digits or digits + (value < 0) > most:
            amount = f"{digits:,}" if digits else f"more than {sys.get_int_max_str_digits():,}"
            return f"{'a negative' if value < 0 else 'an'} integer of {amount} digits"
    shown = repr(value)
    if len(shown) <= most:
        return shown
    if type(value) is str or type(value) is bytes:
        head = value[: most - 3]  # (a character's repr is mostly itself: no pass of the loop)
        while len(repr(head)) > most:  # (escapes: "\\n", "\\x00")
            head = head[:-1]
        unit = "characters" if type(value) is str else "bytes"
        return f"{head!r}… ({len(value):,} {unit})"
    return cut(shown, most)


def cut(shown: str, most: int = MAX_QUOTED) -> str:
    """``shown`` (how an error shows a value that is no str or bin: a repr, or a value in a format of its
    own, unquoted) whole when it is at most ``most`` (MAX_QUOTED) characters, else its first ``most``, "…"
    and how long it is: the rule of :func:`quoted` for what has no quote to close. A str read with
    ``surrogateescape`` (not UTF-8) in it is shown by its bytes' escapes, ``\\xff``, never ``\\udcff``
    (:func:`_bytes_escaped`)."""
    shown = _bytes_escaped(shown)
    return shown if len(shown) <= most else f"{_whole_head(shown, most)}… ({len(shown):,} characters)"


# One thing a shown text says: an escape as a repr writes one (``\\``, ``\n``, ``\x1b``, ``\u2028``,
# ``\U0001f600``; and as :func:`_bytes_escaped` and :func:`for_log` write them), or one character.
_SHOWN_UNIT: Final = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)|.", re.DOTALL)


def _whole_head(shown: str, most: int) -> str:
    """The longest head of ``shown`` of at most ``most`` characters that cuts no escape in two: a cut at
    ``most`` characters alone left ``\\x1`` of ``\\x1b`` before its "…", an escape of no character. Read
    from the start (an escaped backslash, ``\\\\``, is one), and no further than ``most``."""
    end = 0
    for unit in _SHOWN_UNIT.finditer(shown):
        if unit.end() > most:
            break
        end = unit.end()
    return shown[:end]


def _bytes_escaped(text: str) -> str:
    """``text`` with each surrogate that stands for a byte (U+DC80 to U+DCFF: how msgpack's and argv's
    ``surrogateescape`` read a str that is not UTF-8) as that byte's escape, ``\\xff``, as :func:`quoted`
    shows such a str by its bytes, ``b'\\xff'``; any other surrogate (no reading made it) by its own,
    ``\\ud800``. A str with no surrogate is given back as it is (a str is checked in one pass)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(
            f"\\x{ord(c) - 0xDC00:02x}"
            if "\udc80" <= c <= "\udcff"
            else repr(c)[1:-1]
            if "\ud800" <= c <= "\udfff"
            else c
            for c in text
        )
    return text


_cut = cut


# The most characters of a peer's words (an error's message, a path through its keys) a log line
# shows: an error frame holds up to MAX_ERROR_TEXT, a line of the relay's log need not.
MAX_LOGGED: Final = 500


def for_log(text: str, most: int = MAX_LOGGED) -> str:
    """``text`` (what a peer controls: a decoder error's message, an error frame's) as a log line shows
    it: every character that is not printable (a newline, a carriage return, an escape that would start
    a terminal sequence) as its escape (``\\n``, ``\\x1b``), so that what a peer sends can neither
    start a line of its own nor drive a terminal (log injection: CWE-117, "Improper Output
    Neutralization for Logs"); a str read with ``surrogateescape`` (not UTF-8) in it by its bytes'
    escapes, ``\\xff``, as :func:`quoted` shows one by its bytes, never ``\\udcff``; and
    at most ``most`` characters, cut between escapes, never inside one (:func:`_whole_head`), then "…"
    and how long it was, escaped. A ``\\x`` escape of 80 to ff is always a byte that is not UTF-8: a
    character from U+0080 up that is not printable (the C1 controls U+0080 to U+009F, U+00A0, U+00AD, a
    U+2028) is shown by its code point, ``\\u0085``, never as its repr would, ``\\x85``, the escape of
    the byte 0x85; ``\\x`` below 80 is a character (``\\x1b``, ``\\x7f``), as no byte below 0x80 is
    ever not UTF-8 (docs/protocol.md, "Errors"). A backslash the text holds is shown escaped, ``\\\\``, so
    that every backslash of a log line begins an escape this function wrote: a peer's backslash then
    "x85" is ``\\\\x85``, never what looks like the escape of a byte it did not send (and an error's quote
    of a str not UTF-8, ``b'\\xff'``, is logged ``b'\\\\xff'``: the quote's text, escaped)."""
    if not text.isprintable() or "\\" in text:
        text = "".join(_log_escaped(c) for c in text)
    return text if len(text) <= most else f"{_whole_head(text, most)}… ({len(text):,} characters)"


def _log_escaped(c: str) -> str:
    """One character of a text as :func:`for_log` shows it."""
    if c == "\\":  # (the peer's own backslash: ``\\x85`` sent as text is not the escape of a byte)
        return "\\\\"
    if c.isprintable():
        return c
    if "\udc80" <= c <= "\udcff":  # (a byte that is not UTF-8, read with surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    if "\x80" <= c <= "\xff":  # (repr's \x85 would be the byte's escape)
        return f"\\u{ord(c):04x}"
    return repr(c)[1:-1]


def _as_sent(value: Any) -> Any:
    """``value``, but a str read with msgpack's ``surrogateescape`` (one that is not UTF-8: each byte that
    is not stood for by a surrogate, U+DC80 to U+DCFF, which no UTF-8 str holds) as its bytes, so that an
    error shows what the peer sent, ``b'\\xff'``, as it shows any str not UTF-8, never ``'\\udcff'``."""
    if type(value) is str and not value.isprintable():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:
                return value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # (a surrogate no byte stands for: no reading made it)
                pass
    return value


def _key_name(key: object) -> str:
    """How an error's ``field`` names a map's key a peer sent: a str key that reads as a name (not empty,
    short enough to be quoted whole, MAX_QUOTED - 2 characters; printable, no blank at either end, no
    ``.`` or ``[`` a path would misread, no ``…``, which says that something is left out) as itself; any
    other key as :func:`value_text` shows it (``''``, ``'a\\nb'``, ``5``, ``b'x'``, ``{1: 2}``, ``[1, 2]``,
    ``ext 5 b'x'``, a long one cut ``'kkk…kk'… (5,000 characters)``): so a field names a key in at most
    MAX_QUOTED characters of quote, as the message does (a field of a 5,000-character key was the key,
    cut at 4,096 characters: neither the key nor its quote, and an error frame of up to 16 KiB, 4 bytes a
    character, where the relay reserves 4 KiB for the answer to a frame it refuses)."""
    if (
        type(key) is str
        and key
        and len(key) <= MAX_QUOTED - 2
        and key.isprintable()
        and key.strip() == key
        and "." not in key
        and "[" not in key
        and "…" not in key
    ):
        return key
    return value_text(key)


def value_text(value: object) -> str:
    """A value a peer sent, a map's key or a value of the wrong type, as an error's message and its
    ``field`` show it, in the protocol's (msgpack's) words, never a Python class's or repr's: a map or an
    array by its items in brackets, ``{1: 2}``, ``[1, 2]`` (:func:`_shown_key`; a tuple, as this side
    builds an array, too, never ``(1, 2)``), cut as :func:`cut` cuts; any other as :func:`_scalar_text`
    shows it (``'a'``, ``5``, ``b'x'``, ``nil``, ``true``, ``ext 5 b'x'``, ``timestamp
    1970-01-01T00:00:01Z``). The one rule for the wire's errors and for every reader of msgpack a peer
    sent that names what it got (relay.certificates; clients.keys and clients.transparency import it:
    clients may import relay.wire, never the reverse); in at most MAX_QUOTED characters, then "…" and how
    long it is."""
    if type(value) is _Pairs or type(value) in (dict, list, tuple):  # a map (a body read as _Pairs), an array
        return _cut(_shown_key(value))
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    """A value that is no map or array, a key or an item of one, as :func:`value_text` shows it: nil and
    the bools by msgpack's names, ``nil``, ``true``, ``false`` (not Python's ``None``, ``True``); an ext
    by its type and its data, ``ext 5 b'x'``, the data quoted as any bin, within MAX_QUOTED characters
    with ``ext 5 `` (``ext -128 b'kkk…'… (64 bytes)``, never a quote of MAX_QUOTED after the words); a
    timestamp (ext -1) as the instant it is (:func:`_timestamp_text`); any other, a str, an int, a float
    or a bin, as :func:`quoted` shows it."""
    if value is None:
        return "nil"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is msgpack.Timestamp:
        return _cut(_timestamp_text(value))
    if isinstance(value, msgpack.ExtType | _ReservedExt):  # (a msgpack ext is one of these two exactly)
        words = f"ext {value.code} "
        return words + quoted(value.data, MAX_QUOTED - len(words))
    return quoted(_as_sent(value))


_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _timestamp_text(value: msgpack.Timestamp) -> str:
    """A msgpack timestamp (ext -1: seconds and nanoseconds since 1970-01-01T00:00:00Z, UTC, leap seconds
    not counted; the msgpack specification, msgpack/msgpack spec.md, "Timestamp extension type") as an
    error names it: its instant in RFC 3339's form, ``timestamp 1970-01-01T00:00:01Z``, with its
    nanoseconds when it has some, ``timestamp 1970-01-01T00:00:01.000000002Z``; one outside the years 1
    to 9999, which RFC 3339 cannot write (a timestamp 96 holds 64 bits of seconds), by its seconds since
    1970, ``timestamp 4611686018427387904 s since 1970``, with its nanoseconds as nine digits after a
    point when it has some, ``timestamp -4611686018427387904.000000005 s since 1970``."""
    seconds, nanoseconds = value.seconds, value.nanoseconds
    try:
        instant = _EPOCH + datetime.timedelta(seconds=seconds)
    except OverflowError:  # (before the year 1 or after 9999: datetime holds no such instant)
        total = seconds * 1_000_000_000 + nanoseconds
        whole, part = divmod(abs(total), 1_000_000_000)
        sign = "-" if total < 0 else ""
        fraction = f".{part:09d}" if part else ""
        return f"timestamp {sign}{whole}{fraction} s since 1970"
    fraction = f".{nanoseconds:09d}" if nanoseconds else ""
    return f"timestamp {instant.year:04d}-{instant:%m-%dT%H:%M:%S}{fraction}Z"


def _the_key(key: object) -> str:
    """A key that is no string as a refusal's message says what it got: its msgpack type and its text
    (:func:`value_text`), ``the bin key b'x'``, ``the bool key true``, ``the array key [1, 2]``; nil, an
    ext or a timestamp, whose text says its type, by its text alone, ``the key nil``, ``the key ext 5
    b'x'``, ``the key timestamp 1970-01-01T00:00:01Z``."""
    if type(key) in _TYPED_TEXT:
        return f"the key {value_text(key)}"
    return f"the {type_name(key)} key {value_text(key)}"


# What a value is, in the protocol's words (msgpack's types): by its class, then (a value this side
# builds may be of another class: an IntEnum, a bytearray, a set) by the class it derives from.
_TYPE_NAMES: Final[dict[type, str]] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bin",
    bytearray: "bin",
    memoryview: "bin",
    list: "array",
    tuple: "array",
    dict: "map",
    msgpack.ExtType: "ext",
    msgpack.Timestamp: "timestamp (ext -1)",
}
# The keys whose text (:func:`value_text`) says their msgpack type: nil's, an ext's, a timestamp's.
_TYPED_TEXT: Final = frozenset({type(None), msgpack.ExtType, _ReservedExt, msgpack.Timestamp})


def type_name(value: object) -> str:
    """What ``value`` is, as an error says what it got: its msgpack type (``nil``, ``int``, ``bin``,
    ``array``, ``map``, ``timestamp (ext -1)``...), never this side's class names; a value msgpack has no
    type for (only in a frame this side builds: a peer's frame holds msgpack's types alone) is "a value
    of no msgpack type". The wire's and the other msgpack readers' (relay.certificates, clients.keys,
    clients.transparency) one rule for a type, as :func:`value_text` is for a value."""
    if value is None:
        return "nil"
    name = _TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    if type(value) is _Pairs:  # (a map read as its pairs)
        return "map"
    if isinstance(value, _ReservedExt):
        return "ext"
    for cls, name in _TYPE_NAMES.items():
        if isinstance(value, cls):
            return name
    return "a value of no msgpack type"


class _Spec:
    describe: str = "a value"

    def check(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def from_wire(self, raw: Any, name: str) -> Any:
        return raw

    def to_wire(self, value: Any) -> Any:
        return value

    def _wrong_type(self, value: object, name: str) -> LocalProtocolError:
        return LocalProtocolError(
            ErrorCode.WRONG_TYPE, f"{name} must be {self.describe}, got {type_name(value)}", field=name
        )


class _UInt(_Spec):
    def __init__(self, low: int = 0, high: int = _UINT32_MAX, why: str = "") -> None:
        self.low, self.high = low, high
        self.describe = "an unsigned integer"
        self.why = why  # (said after the range, before the value: where the range comes from)

    def check(self, value: Any, name: str) -> Any:
        if type(value) is not int:  # bool is an int subclass; it is not an int on the wire
            raise self._wrong_type(value, name)
        if not self.low <= value <= self.high:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                f"{name} must be from {self.low} to {self.high}{self.why}, got {value}",
                field=name,
            )
        return value


class _Bool(_Spec):
    describe = "a boolean"

    def check(self, value: Any, name: str) -> Any:
        if type(value) is not bool:
            raise self._wrong_type(value, name)
        return value


class _Str(_Spec):
    def __init__(self, min_len: int, max_len: int) -> None:
        self.min_len, self.max_len = min_len, max_len
        self.describe = "a string"

    def check(self, value: Any, name: str) -> Any:
        if type(value) is not str:
            raise self._wrong_type(value, name)
        if not self.min_len <= len(value) <= self.max_len:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                f"{name} must be {self.min_len} to {self.max_len} characters, got {len(value)}",
                field=name,
            )
        if not value.isprintable():
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE, f"{name} must not contain control characters", field=name
            )
        return value


class _Bytes(_Spec):
    def __init__(self, size: int | None = None, max_size: int | None = None) -> None:
        self.size, self.max_size = size, max_size
        self.describe = "binary data (msgpack bin)"

    def check(self, value: Any, name: str) -> Any:
        if type(value) is not bytes:
            raise self._wrong_type(value, name)
        if self.size is not None and len(value) != self.size:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE, f"{name} must be {self.size} bytes, got {len(value)}", field=name
            )
        if self.max_size is not None and len(value) > self.max_size:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                f"{name} must be at most {self.max_size} bytes, got {len(value)}",
                field=name,
            )
        return value


class _Text(_Spec):
    """Free human text (error messages): any string up to a length."""

    describe = "a string"

    def check(self, value: Any, name: str) -> Any:
        if type(value) is not str:
            raise self._wrong_type(value, name)
        if len(value) > MAX_ERROR_TEXT:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE, f"{name} must be at most {MAX_ERROR_TEXT} characters", field=name
            )
        return value


def _keys_of(cls: type[Message]) -> str:
    """The keys of a map of ``cls`` as docs/protocol.md writes them, an optional one marked ``?``:
    ``{device, body, registration_id?}``."""
    return (
        "{" + ", ".join(f"{name}{'?' if has_default else ''}" for name, _, has_default in cls._specs()) + "}"
    )


class _Struct(_Spec):
    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        self.describe = "a map"

    def check(self, value: Any, name: str) -> Any:
        if not isinstance(value, self.cls):
            # Raised only as this side builds a frame (a peer's map is read by from_wire): said in the
            # protocol's words, what the field holds, never this side's class names ("must be an
            # OutgoingEnvelope, got str").
            got = (
                f"the map {_keys_of(type(value))}"
                if isinstance(value, Message)
                else "a map not built as one"
                if isinstance(value, dict)
                else type_name(value)
            )
            raise LocalProtocolError(
                ErrorCode.WRONG_TYPE, f"{name} must be the map {_keys_of(self.cls)}, got {got}", field=name
            )
        return value

    def from_wire(self, raw: Any, name: str) -> Any:
        if type(raw) is not dict:
            raise self._wrong_type(raw, name)
        try:
            return self.cls.from_wire(raw)
        except ProtocolError as e:
            field = _prefixed(name, e.field)
            message = e.message
            if e.by_path is not None and field:
                message = e.by_path(field)  # (the map's refusal of its key, said by the key's path)
            elif e.field and field != e.field and message.startswith(f"{e.field} "):
                # said by its path, as its field is: "device must be from 1 to 127" did not say which
                # envelope's ("envelopes[1].device must be ...")
                message = f"{field}{message[len(e.field) :]}"
            refused = LocalProtocolError(e.code, message, field=field)
            refused.by_path = e.by_path  # (a map inside a map: said again by the longer path)
            raise refused from None

    def to_wire(self, value: Any) -> Any:
        return value.to_wire()


class _List(_Spec):
    def __init__(self, item: _Spec | type[Message], max_items: int, min_items: int = 0) -> None:
        self._item = item
        self.min_items, self.max_items = min_items, max_items
        self.describe = "an array"

    @property
    def item(self) -> _Spec:
        if not isinstance(self._item, _Spec):
            self._item = _Struct(self._item)
        return self._item

    def check(self, value: Any, name: str) -> Any:
        if type(value) not in (tuple, list):
            raise self._wrong_type(value, name)
        if not self.min_items <= len(value) <= self.max_items:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                f"{name} must hold {self.min_items} to {self.max_items} items, got {len(value)}",
                field=name,
            )
        item = self.item
        for i, v in enumerate(value):
            item.check(v, f"{name}[{i}]")
        return value if type(value) is tuple else tuple(value)

    def from_wire(self, raw: Any, name: str) -> Any:
        if type(raw) is not list:
            raise self._wrong_type(raw, name)
        item = self.item
        return tuple(item.from_wire(v, f"{name}[{i}]") for i, v in enumerate(raw))

    def to_wire(self, value: Any) -> Any:
        item = self.item
        return [item.to_wire(v) for v in value]


class _Optional(_Spec):
    def __init__(self, inner: _Spec) -> None:
        self.inner = inner
        self.describe = f"nil or {inner.describe}"

    def check(self, value: Any, name: str) -> Any:
        return None if value is None else self.inner.check(value, name)

    def from_wire(self, raw: Any, name: str) -> Any:
        return None if raw is None else self.inner.from_wire(raw, name)

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)


# Field types: the annotation says what Python holds, the spec what the wire allows.
_UINT64 = _UInt(0, _UINT64_MAX)
RequestId = Annotated[int, _UINT64]
AccountId = Annotated[str, _Str(1, MAX_ACCOUNT_LEN)]
_DEVICE_ID = _UInt(1, MAX_DEVICE_ID, " (a device id, as Signal's server and libsignal's DeviceId hold them)")
DeviceId = Annotated[int, _DEVICE_ID]
KeyId = Annotated[int, _UInt(0, _UINT32_MAX)]
RegistrationId = Annotated[int, _UInt(0, _UINT32_MAX)]
Count = Annotated[int, _UInt(0, _UINT32_MAX)]
Millis = Annotated[int, _UINT64]
PublicKey = Annotated[bytes, _Bytes(KEY_SIZE)]
Signature = Annotated[bytes, _Bytes(SIGNATURE_SIZE)]
KemPublicKey = Annotated[bytes, _Bytes(KEM_PUBLIC_KEY_SIZE)]
EnvelopeId = Annotated[bytes, _Bytes(ENVELOPE_ID_SIZE)]
Nonce = Annotated[bytes, _Bytes(NONCE_SIZE)]
Token = Annotated[bytes, _Bytes(TOKEN_SIZE)]
Body = Annotated[bytes, _Bytes()]
Flag = Annotated[bool, _Bool()]
GroupId = Annotated[bytes, _Bytes(GROUP_ID_SIZE)]


def _spec_for(hint: Any, owner: type) -> _Spec:
    if typing.get_origin(hint) is Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, _Spec):
                return extra
    if isinstance(hint, type) and issubclass(hint, Message):
        return _Struct(hint)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _Optional(_spec_for(inner, owner))
    raise TypeError(f"{owner.__name__}: no wire spec for annotation {hint!r}")


_M = TypeVar("_M", bound="Message")


@typing.dataclass_transform(frozen_default=True)
def message(cls: type[_M]) -> type[_M]:
    """Make ``cls`` a frozen, slotted dataclass whose fields check themselves against their specs."""
    return quick_init(dataclass(frozen=True, slots=True)(cls))


def _valid_expr(spec: _Spec, v: str, env: dict[str, Any]) -> str | None:
    """A Python expression over the variable ``v`` that is true exactly when ``spec.check`` would
    pass ``v`` and hand it back unchanged; None for specs that have none (they are called)."""
    kind = type(spec)
    if kind is _UInt:
        assert isinstance(spec, _UInt)
        return f"(type({v}) is int and {spec.low} <= {v} <= {spec.high})"
    if kind is _Bool:
        return f"(type({v}) is bool)"
    if kind is _Str:
        assert isinstance(spec, _Str)
        return f"(type({v}) is str and {spec.min_len} <= len({v}) <= {spec.max_len} and {v}.isprintable())"
    if kind is _Bytes:
        assert isinstance(spec, _Bytes)
        cond = f"type({v}) is bytes"
        if spec.size is not None:
            cond += f" and len({v}) == {spec.size}"
        if spec.max_size is not None:
            cond += f" and len({v}) <= {spec.max_size}"
        return f"({cond})"
    if kind is _Text:
        return f"(type({v}) is str and len({v}) <= {MAX_ERROR_TEXT})"
    if kind is _Struct:
        assert isinstance(spec, _Struct)
        env[f"cls_{len(env)}"] = spec.cls
        return f"isinstance({v}, cls_{len(env) - 1})"
    if kind is _Optional:
        assert isinstance(spec, _Optional)
        inner = _valid_expr(spec.inner, v, env)
        return None if inner is None else f"({v} is None or {inner})"
    if kind is _List:  # a tuple of valid items passes as it is; a list is made a tuple by check
        assert isinstance(spec, _List)
        x = f"x{v.count('x')}"  # (a fresh name inside nested lists)
        item = _valid_expr(spec.item, x, env)
        if item is None:
            return None
        return f"(type({v}) is tuple and {spec.min_items} <= len({v}) <= {spec.max_items} and all({item} for {x} in {v}))"
    return None


def _compile_checks(cls: type[Message]) -> Callable[[Message], None]:
    """The checks of ``Message.__post_init__`` for one class, as one generated function: each
    field's spec as an inline condition (type, range, length), and only when it fails the spec's
    own ``check``, which raises the specific error (or returns a converted value, as a list made
    a tuple). The same fields, the same order, the same errors; a few µs less per frame."""
    env: dict[str, Any] = {"_setattr": object.__setattr__}
    lines = ["def _checks(self):"]
    for i, (name, spec, _) in enumerate(cls._specs()):
        env[f"spec_{i}"] = spec
        cond = _valid_expr(spec, "v", env)
        lines.append(f"    v = self.{name}")
        indent = "    "
        if cond is not None:
            lines.append(f"    if not {cond}:")
            indent = "        "
        lines.append(f"{indent}c = spec_{i}.check(v, {name!r})")
        lines.append(f"{indent}if c is not v:")
        lines.append(f"{indent}    _setattr(self, {name!r}, c)")
    lines.append("    return None")
    exec("\n".join(lines), env)  # generated from the class's own field specs, nothing else
    checks: Callable[[Message], None] = env["_checks"]
    return checks


_NO_DEFAULT: Final = object()


class _Factory:
    """A field's default_factory, marked so that from_wire calls it rather than sharing one value."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def __call__(self) -> Any:
        return self.make()


class Message:
    """A msgpack map with a fixed set of checked fields. Subclasses are built with @message."""

    __slots__ = ()
    # (name, spec, has_default) per field, in order; computed once per class on first use.
    _specs_cache: ClassVar[dict[type, tuple[tuple[str, _Spec, bool], ...]]] = {}
    _checks_cache: ClassVar[dict[type, Callable[[Message], None]]] = {}
    _plan_cache: ClassVar[dict[type, tuple[frozenset[str], tuple[tuple[str, _Spec, Any], ...], bool]]] = {}

    @classmethod
    def _specs(cls) -> tuple[tuple[str, _Spec, bool], ...]:
        specs = Message._specs_cache.get(cls)
        if specs is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            specs = tuple(
                (
                    f.name,
                    _spec_for(hints[f.name], cls),
                    f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
                )
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
            Message._specs_cache[cls] = specs
        return specs

    def __post_init__(self) -> None:
        checks = Message._checks_cache.get(type(self))
        if checks is None:
            checks = Message._checks_cache[type(self)] = _compile_checks(type(self))
        checks(self)

    @classmethod
    def _decode_plan(cls) -> tuple[frozenset[str], tuple[tuple[str, _Spec, Any], ...], bool]:
        """What ``from_wire`` needs, worked out once per class: the field names as a set (the
        unknown-field check is one lookup per key), each field's spec and its default
        (``_NO_DEFAULT`` when required, a factory's product made per call), and whether the
        class checks itself only through ``Message.__post_init__`` (then a decoded message is
        built without a second pass over its fields)."""
        plan = Message._plan_cache.get(cls)
        if plan is None:
            defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            fields = []
            for name, spec, has_default in cls._specs():
                f = defaults[name]
                if not has_default:
                    default: Any = _NO_DEFAULT
                elif f.default is not dataclasses.MISSING:
                    default = f.default
                else:
                    default = _Factory(f.default_factory)  # type: ignore[arg-type]
                fields.append((name, spec, default))
            plain = cls.__post_init__ is Message.__post_init__
            plan = (frozenset(n for n, _, _ in fields), tuple(fields), plain)
            Message._plan_cache[cls] = plan
        return plan

    @classmethod
    def from_wire(cls: type[_M], raw: Mapping[Any, Any]) -> _M:
        """Build from a decoded msgpack map (checked, so it raises LocalProtocolError)."""
        fast = _FAST_DECODERS[cls, False] if (cls, False) in _FAST_DECODERS else _fast_decoder(cls)
        if fast is not None:
            try:
                return fast(raw)
            except _Slow:
                pass  # the checked path names what is wrong
        return cls._from_wire_checked(raw)

    @classmethod
    def _from_wire_checked(cls: type[_M], raw: Mapping[Any, Any]) -> _M:
        """``from_wire`` without the fast path: field by field, each error its own."""
        names, fields, plain = cls._decode_plan()
        for key in raw:
            if type(key) is not str:  # (the field named: the key, as _key_name shows one that is no string)
                # A frame's own map is "the frame", its kind said after, as where a key that is a map or an
                # array, or two keys held as one, are refused (_refuse_unhashable_key, _check_keys_once):
                # one wording for one refusal, "the keys of the frame must be strings; got ... (in a
                # 'ping' frame)", never "the keys of a 'ping' frame" for some keys alone.
                got = f" must be strings; got {_the_key(key)}"
                frame = "the frame" if isinstance(getattr(cls, "kind", None), str) else None
                raise _in_map(ErrorCode.WRONG_TYPE, _key_name(key), "the keys of ", cls, got, where=frame)
            if key not in names:
                raise _in_map(
                    ErrorCode.UNKNOWN_FIELD, _key_name(key), f"unknown field {quoted(key)} in ", cls
                )
        values: list[tuple[str, _Spec, Any]] = []
        for name, spec, default in fields:
            if name in raw:
                values.append((name, spec, spec.from_wire(raw[name], name)))
            elif default is _NO_DEFAULT:
                # Said by its path, as its field is: the map it is missing from is named by where it is
                # (its type's name is this side's, not the protocol's).
                missing = LocalProtocolError(ErrorCode.MISSING_FIELD, f"{name} is missing", field=name)
                missing.by_path = lambda path: f"{path} is missing"
                raise missing
            elif plain:
                values.append((name, spec, default() if type(default) is _Factory else default))
        if not plain:
            return cls(**{name: value for name, _, value in values})
        # The same checks, in the same order, as __init__ + __post_init__ would make, without
        # the keyword-argument call and the getattr per field: decoding is on every frame.
        obj = object.__new__(cls)
        for name, _, value in values:
            object.__setattr__(obj, name, value)
        obj.__post_init__()
        return obj

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map. Optional fields that are None are left out."""
        out: dict[str, Any] = {}
        for name, spec, _ in self._specs():
            value = getattr(self, name)
            if value is not None:
                out[name] = spec.to_wire(value)
        return out


# --- the decoding and encoding fast paths ----------------------------------------------------
# Decoding and encoding are on every frame (two in and three out per envelope at the relay), so
# each class gets two more generated functions, built on first use from the same field specs:
# one that turns a decoded msgpack map into a message in one pass (the unknown-field and
# required-field checks as two set comparisons, each field's spec as an inline condition, no
# call per field), and one that builds the map to pack. The fast decoder only ever accepts: at
# the first thing it does not like it raises _Slow, and the checked path (``Message.from_wire``'s
# loop over the specs, ``decode_body``'s envelope checks) decides again from the start and raises
# its specific error. So every error is still the checked path's, and a frame the fast path
# accepts is the one the checked path would build (tests/relay/test_wire_checks.py holds the two
# to the same outcome).


class _Slow(Exception):
    """The fast decoder does not accept this map; the checked path decides (and names the error)."""


_ABSENT: Final = object()


def _fast_convert(spec: _Spec, v: str, env: dict[str, Any], pad: str) -> list[str] | None:
    """Statements that check the decoded msgpack value in variable ``v`` against ``spec`` and leave
    in ``v`` what ``spec.from_wire`` then ``spec.check`` would (a tuple for a list, a message for a
    map), raising _Slow where either would raise; None for a spec with no fast form."""
    kind = type(spec)
    if kind is _Struct:
        assert isinstance(spec, _Struct)
        fast = _fast_decoder(spec.cls)
        if fast is None:
            return None
        name = f"dec_{len(env)}"
        env[name] = fast
        return [f"{pad}{v} = {name}({v})"]  # it checks that v is a dict
    if kind is _List:
        assert isinstance(spec, _List)
        head = f"{pad}if type({v}) is not list or not {spec.min_items} <= len({v}) <= {spec.max_items}: raise _Slow"
        item = spec.item
        if type(item) is _Struct:
            fast = _fast_decoder(item.cls)
            if fast is None:
                return None
            name = f"dec_{len(env)}"
            env[name] = fast
            return [head, f"{pad}{v} = tuple(map({name}, {v}))"]
        cond = _valid_expr(item, "x", env)
        if cond is None or type(item) in (_Optional, _List):
            return None
        return [head, f"{pad}for x in {v}:", f"{pad}    if not {cond}: raise _Slow", f"{pad}{v} = tuple({v})"]
    if kind is _Optional:
        assert isinstance(spec, _Optional)
        inner = _fast_convert(spec.inner, v, env, pad + "    ")
        return None if inner is None else [f"{pad}if {v} is not None:", *inner]
    cond = _valid_expr(spec, v, env)
    return None if cond is None else [f"{pad}if not {cond}: raise _Slow"]


def _fast_decoder(cls: type[Message], frame: bool = False) -> Callable[[Any], Any] | None:
    """``cls``'s fast decoder (cached): a function of a decoded msgpack map that returns the
    message or raises _Slow; None if the class has none (a check of its own, an unusual spec).
    ``frame``: the map is a whole frame's, with ``v`` and ``kind`` beside the fields."""
    key = (cls, frame)
    if key in _FAST_DECODERS:
        return _FAST_DECODERS[key]
    _FAST_DECODERS[key] = None  # (while it is being built)
    names, fields, plain = cls._decode_plan()
    env: dict[str, Any] = {
        "_Slow": _Slow,
        "_ABSENT": _ABSENT,
        "_new": object.__new__,
    }
    allowed = set(names)
    required = {name for name, _, default in fields if default is _NO_DEFAULT}
    if frame:
        allowed |= {"v", "kind"}
        required |= {"v", "kind"}
    env["cls"], env["allowed"], env["required"] = cls, frozenset(allowed), frozenset(required)
    lines = [
        "def _decode(raw):",
        "    if type(raw) is not dict: raise _Slow",
        "    keys = raw.keys()",
        "    if not (keys <= allowed and keys >= required): raise _Slow",
    ]
    if frame:
        lines.append(f"    v = raw['v']\n    if type(v) is not int or v != {PROTOCOL_VERSION}: raise _Slow")
    built = plain
    for i, (name, spec, default) in enumerate(fields):
        var = f"f{i}"
        convert = _fast_convert(spec, var, env, "        ")
        if convert is None:
            built = False
            break
        if default is _NO_DEFAULT:
            lines.append(f"    {var} = raw[{name!r}]")
            lines.extend(line[4:] for line in convert)
            continue
        if type(default) is _Factory or spec.check(default, name) is not default:
            built = False  # (a default that is not its own wire value: the checked path makes it)
            break
        if default is None and type(spec) is _Optional:  # absent or nil: None
            lines.append(f"    {var} = raw.get({name!r})")
            lines.extend(line[4:] for line in convert)
            continue
        env[f"default_{i}"] = default
        lines.append(f"    {var} = raw.get({name!r}, _ABSENT)")
        lines.append(f"    if {var} is _ABSENT:\n        {var} = default_{i}\n    else:")
        lines.extend(convert)
    if not built:
        return None
    lines.append("    obj = _new(cls)")
    for i, (name, _, _) in enumerate(fields):  # each slot set through its descriptor (relay._frozen)
        env[f"_set{i}"] = getattr(cls, name).__set__
        lines.append(f"    _set{i}(obj, f{i})")
    lines.append("    return obj")
    exec("\n".join(lines), env)  # generated from the class's own field specs, nothing else
    decoder: Callable[[Any], Any] = env["_decode"]
    _FAST_DECODERS[key] = decoder
    return decoder


_FAST_DECODERS: dict[tuple[type, bool], Callable[[Any], Any] | None] = {}


def _fast_wire_expr(spec: _Spec, value: str, env: dict[str, Any], depth: int = 0) -> str:
    """An expression for ``spec.to_wire(value)`` (value not None), as msgpack packs it: a tuple
    of plain values is left a tuple (it packs as the list ``to_wire`` makes)."""
    kind = type(spec)
    if kind is _Struct:
        assert isinstance(spec, _Struct)
        name = f"enc_{len(env)}"
        env[name] = _fast_encoder(spec.cls)
        return f"{name}({value})"
    if kind is _List:
        assert isinstance(spec, _List)
        item = _fast_wire_expr(spec.item, f"x{depth}", env, depth + 1)
        return value if item == f"x{depth}" else f"[{item} for x{depth} in {value}]"
    if kind is _Optional:
        assert isinstance(spec, _Optional)
        return f"(None if {value} is None else {_fast_wire_expr(spec.inner, value, env, depth)})"
    return value


def _fast_encoder(cls: type[Message], frame: bool = False) -> Callable[[Any], dict[str, Any]]:
    """``cls.to_wire`` as one generated function (cached): the fields in order, None left out.
    ``frame``: the whole frame's map, ``v``, ``id`` and ``kind`` first, as ``encode_body`` has it."""
    key = (cls, frame)
    encoder = _FAST_ENCODERS.get(key)
    if encoder is not None:
        return encoder
    env: dict[str, Any] = {}
    kind = getattr(cls, "kind", None)
    items = [f"'v': {PROTOCOL_VERSION}", "'id': m.id", f"'kind': {kind!r}"] if frame else []
    optional = []
    for name, spec, _ in cls._specs():
        if frame and name == "id":
            continue
        if type(spec) is _Optional:
            assert isinstance(spec, _Optional)
            expr = _fast_wire_expr(spec.inner, "x", env)
            optional.append(f"    x = m.{name}\n    if x is not None:\n        out[{name!r}] = {expr}")
        else:  # a checked message holds no None in a field that is not optional
            items.append(f"{name!r}: {_fast_wire_expr(spec, f'm.{name}', env)}")
    lines = ["def _encode(m):", "    out = {" + ", ".join(items) + "}", *optional, "    return out"]
    exec("\n".join(lines), env)  # generated from the class's own field specs, nothing else
    made: Callable[[Any], dict[str, Any]] = env["_encode"]
    _FAST_ENCODERS[key] = made
    return made


_FAST_ENCODERS: dict[tuple[type, bool], Callable[[Any], dict[str, Any]]] = {}


def prechecked(cls: type[_M]) -> Callable[..., _M]:
    """A maker of ``cls`` from its fields, positional, that skips the checks of ``__post_init__``
    (cached): for the relay's own answers on its hot path, made only of values that have passed
    the same checks already (a request's decoded fields, the relay's own envelope ids and counts).
    The object is the one ``cls(...)`` makes from the same values (tests hold it to that); anything
    made from values not known to be valid goes through ``cls(...)``."""
    maker = _PRECHECKED.get(cls)
    if maker is not None:
        return cast("Callable[..., _M]", maker)
    env: dict[str, Any] = {"_new": object.__new__, "cls": cls}
    args, lines = [], []
    for i, (name, _, _) in enumerate(cls._specs()):
        env[f"_set{i}"] = getattr(cls, name).__set__  # each slot through its descriptor (relay._frozen)
        args.append(f"f{i}")
        lines.append(f"    _set{i}(obj, f{i})")
    source = f"def _make({', '.join(args)}):\n    obj = _new(cls)\n" + "\n".join(lines) + "\n    return obj"
    exec(source, env)  # generated from the class's own field names, nothing else
    _PRECHECKED[cls] = env["_make"]
    return cast("Callable[..., _M]", env["_make"])


_PRECHECKED: dict[type, Callable[..., Any]] = {}


# --- structures inside frames ----------------------------------------------------------------


@message
class Prekey(Message):
    """A one-time X25519 prekey."""

    id: KeyId
    public: PublicKey


@message
class SignedPrekey(Message):
    """The signed X25519 prekey; ``signature`` is XEdDSA over :func:`signed_prekey_message`."""

    id: KeyId
    public: PublicKey
    signature: Signature


@message
class KemPrekey(Message):
    """A signed ML-KEM-1024 prekey; ``signature`` is XEdDSA over :func:`kem_prekey_message`."""

    id: KeyId
    public: KemPublicKey
    signature: Signature


@message
class DeviceBundle(Message):
    """One device's keys as handed to someone starting a session with it."""

    device: DeviceId
    registration_id: RegistrationId
    identity_key: PublicKey
    signed_prekey: SignedPrekey
    kem_prekey: KemPrekey
    kem_prekey_last_resort: Flag  # True when the one-time KEM prekeys ran out
    one_time_prekey: Prekey | None = None  # None when the one-time prekeys ran out
    # The primary's signature over this device's identity key, as the device registered it
    # (Register.device_signature); None when it gave none.
    device_signature: Signature | None = None


# Key transparency (relay/transparency.py): a signed head of the relay's key log, and where each
# device's identity key sits in it. Sent only to a fetch that asks (FetchBundle.key_log).
MAX_AUDIT_PATH: Final = 64  # a path in a tree of up to 2**64 leaves


@message
class KeyLogHead(Message):
    """A signed tree head: the server key's signature over ``kt_tree_head_body``."""

    tree_size: Annotated[int, _UINT64]
    timestamp: Annotated[int, _UINT64]  # seconds since the epoch, by the relay's clock
    root_hash: Annotated[bytes, _Bytes(32)]
    signature: Signature


@message
class KeyInclusion(Message):
    """The audit path (RFC 9162 §2.1.3.1) of one device's ``kt_leaf`` in the tree of the head."""

    device: DeviceId
    leaf_index: Annotated[int, _UINT64]
    path: Annotated[tuple[bytes, ...], _List(_Bytes(32), MAX_AUDIT_PATH)]


@message
class KeyLogProof(Message):
    """What a bundle carries for key transparency: the head, the server certificate that signs it
    (checked against the trust root), and one inclusion proof per device of the bundle."""

    head: KeyLogHead
    server_certificate: Annotated[bytes, _Bytes(max_size=256)]
    inclusions: Annotated[tuple[KeyInclusion, ...], _List(KeyInclusion, MAX_DEVICES_PER_SEND)]


@message
class OutgoingEnvelope(Message):
    """One ciphertext for one device of the recipient; ``body`` is opaque to the relay."""

    device: DeviceId
    body: Body
    # If given, the relay checks it against the device's registration id (a reinstalled device
    # gets a new one) and answers stale_devices on mismatch, as Signal's 410 does.
    registration_id: RegistrationId | None = None


@message
class Envelope(Message):
    """A queued envelope as delivered. ``timestamp`` is when the relay accepted it (ms since epoch)."""

    id: EnvelopeId
    body: Body
    timestamp: Millis
    sealed: Flag
    source_account: AccountId | None = None  # None for sealed sends: the relay does not know
    source_device: DeviceId | None = None


@message
class GroupMember(Message):
    """One member of a group as the relay holds it (server-side membership)."""

    account: AccountId
    admin: Flag


# --- frames ----------------------------------------------------------------------------------


@message
class Frame(Message):
    """A top-level frame. ``id`` pairs a response with its request; pushes use 0."""

    kind: ClassVar[str]
    id: RequestId


class Request(Frame):
    """A frame a device sends to the relay."""

    __slots__ = ()


class Response(Frame):
    """A frame the relay sends to a device (a response, an error, or a push)."""

    __slots__ = ()


# Requests.


@message
class Register(Request):
    """Create or replace a device. New account: anyone. Existing account: authenticate first
    as the same device (to re-register) or as another device of the account (to add one)."""

    kind: ClassVar[str] = "register"
    account: AccountId
    device: DeviceId
    registration_id: RegistrationId
    identity_key: PublicKey
    signed_prekey: SignedPrekey
    one_time_prekeys: Annotated[tuple[Prekey, ...], _List(Prekey, MAX_PREKEYS_PER_UPLOAD)]
    kem_prekeys: Annotated[tuple[KemPrekey, ...], _List(KemPrekey, MAX_PREKEYS_PER_UPLOAD)]
    last_resort_kem_prekey: KemPrekey
    delivery_token: Token | None = None  # gates sealed sends to this account
    # What the relay asks of a new account (docs/protocol.md, "Registration proof"): the
    # operator's registration token, or a hashcash stamp (see registration_pow_message).
    proof: Annotated[bytes | None, _Optional(_Bytes(None, 64))] = None
    # Facts about the device that real clients send and some providers keep and hand over (the
    # FBI "Lawful Access" chart, 2021: Threema's push token; Wickr's device types and app version).
    # All optional: a relay that does not keep them ignores them (relay.profiles device_facts).
    push_token: Annotated[bytes | None, _Optional(_Bytes(None, MAX_PUSH_TOKEN))] = None
    device_type: Annotated[str | None, _Optional(_Str(1, MAX_DEVICE_FACT_LEN))] = None
    app_version: Annotated[str | None, _Optional(_Str(1, MAX_DEVICE_FACT_LEN))] = None
    # "signed-devices" accounts (WhatsApp's multi-device): the primary device's XEdDSA signature over
    # this companion's identity key (clients.agent.sign_device), which the relay serves with the
    # device's bundle for contacts to check. The relay stores it as given and checks nothing.
    device_signature: Signature | None = None


@message
class UploadPrekeys(Request):
    """Replace this device's prekeys (authenticated). An empty list leaves that kind alone,
    as Signal-Server's PreKeyState does; with nothing at all it just reports the counts."""

    kind: ClassVar[str] = "upload_prekeys"
    one_time_prekeys: Annotated[tuple[Prekey, ...], _List(Prekey, MAX_PREKEYS_PER_UPLOAD)] = ()
    kem_prekeys: Annotated[tuple[KemPrekey, ...], _List(KemPrekey, MAX_PREKEYS_PER_UPLOAD)] = ()
    signed_prekey: SignedPrekey | None = None
    last_resort_kem_prekey: KemPrekey | None = None
    delivery_token: Token | None = None  # a new token for sealed sends (rotation); None keeps it


@message
class FetchBundle(Request):
    """Get one bundle per device of ``account``; needs authentication or the account's token."""

    kind: ClassVar[str] = "fetch_bundle"
    account: AccountId
    delivery_token: Token | None = None
    key_log: Flag | None = None  # True: send the key-transparency proofs (Bundle.key_log) too


@message
class AuthChallenge(Request):
    kind: ClassVar[str] = "auth_challenge"
    account: AccountId
    device: DeviceId


@message
class Authenticate(Request):
    """Answer the challenge: XEdDSA signature by the identity key over :func:`auth_message`."""

    kind: ClassVar[str] = "authenticate"
    nonce: Nonce
    signature: Signature


@message
class Send(Request):
    """Authenticated send: one envelope per current device of ``to``."""

    kind: ClassVar[str] = "send"
    to: AccountId
    envelopes: Annotated[tuple[OutgoingEnvelope, ...], _List(OutgoingEnvelope, MAX_DEVICES_PER_SEND, 1)]


@message
class SealedSend(Request):
    """Unauthenticated send, allowed by the recipient's delivery token."""

    kind: ClassVar[str] = "sealed_send"
    to: AccountId
    delivery_token: Token
    envelopes: Annotated[tuple[OutgoingEnvelope, ...], _List(OutgoingEnvelope, MAX_DEVICES_PER_SEND, 1)]


@message
class GetSenderCertificate(Request):
    kind: ClassVar[str] = "get_sender_certificate"


@message
class Receive(Request):
    """Fetch queued envelopes, oldest first, up to ``limit`` and the frame size."""

    kind: ClassVar[str] = "receive"
    limit: Annotated[int | None, _Optional(_UInt(1, 10_000))] = None


@message
class Ack(Request):
    """Delete envelopes from this device's own queue."""

    kind: ClassVar[str] = "ack"
    envelope_ids: Annotated[tuple[bytes, ...], _List(_Bytes(ENVELOPE_ID_SIZE), MAX_ACK_IDS, 1)]


@message
class Ping(Request):
    kind: ClassVar[str] = "ping"


@message
class DiscoverContacts(Request):
    """Which of ``contacts`` have accounts (authenticated). Whether the relay keeps the list
    (WhatsApp keeps the address book) or answers and forgets (Signal) is its configuration."""

    kind: ClassVar[str] = "discover_contacts"
    contacts: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_CONTACTS)]


@message
class Block(Request):
    """Stop envelopes from ``account`` (authenticated): its sends to the caller's account are
    accepted and then dropped. Sealed sends cannot be attributed, so they still arrive."""

    kind: ClassVar[str] = "block"
    account: AccountId


@message
class Unblock(Request):
    """Undo a block (authenticated); unblocking an account that is not blocked is not an error."""

    kind: ClassVar[str] = "unblock"
    account: AccountId


# Groups with a membership list the relay holds (server-side fan-out, as WhatsApp's server does).


@message
class CreateGroup(Request):
    """Create group ``group`` (authenticated): the caller is its first admin, ``members`` the others."""

    kind: ClassVar[str] = "create_group"
    group: GroupId
    members: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_GROUP_MEMBERS)] = ()


@message
class ChangeGroup(Request):
    """Add and remove members (authenticated, an admin; any member may remove itself: leaving).
    ``admins`` makes members admins. Each change moves the group to its next epoch."""

    kind: ClassVar[str] = "change_group"
    group: GroupId
    add: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_GROUP_MEMBERS)] = ()
    remove: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_GROUP_MEMBERS)] = ()
    admins: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_GROUP_MEMBERS)] = ()


@message
class GetGroup(Request):
    """The group's members as the relay holds them (authenticated, a member)."""

    kind: ClassVar[str] = "get_group"
    group: GroupId


@message
class GroupSend(Request):
    """One body for the whole group (authenticated, a member): the relay queues a copy for every
    device of every member but the sender's own device. ``epoch`` is the membership the sender
    distributed its sender key for; if the group changed since, the answer is stale_group."""

    kind: ClassVar[str] = "group_send"
    group: GroupId
    epoch: Annotated[int, _UINT64]
    body: Body


@message
class PutGroupState(Request):
    """Store a group's state as an opaque blob the clients encrypted (Signal's groups v2: the server
    holds the state and cannot read it). ``version`` must be the stored version plus one (0 creates).
    No account: the relay learns nothing about who keeps which group. Instead the relay holds the
    group's **write keys**, one Ed25519 key per current member (pseudonymous: a key names nobody),
    and stores a version only when ``write_key``, the uploader's key, is one of them and its
    ``signature`` over :func:`group_state_message` verifies. ``write_keys``, sorted and without
    repeats, replaces the set with the new version's members' keys (a removal leaves the removed
    member's key out, and its later uploads are refused); absent, the set stays as it is. The
    creation (version 0) registers ``write_keys`` (or ``write_key`` alone), and ``write_key`` must
    be among them. ``write_key`` and ``signature`` were added after the first release of protocol
    version 1, ``write_keys`` after them (hence all optional on the wire); the relay refuses a put
    without a signature (docs/protocol.md, "put_group_state")."""

    kind: ClassVar[str] = "put_group_state"
    group: GroupId
    version: Annotated[int, _UINT64]
    state: Annotated[bytes, _Bytes(max_size=MAX_GROUP_STATE)]
    # The uploader's Ed25519 write key: one of the group's current write keys (at the creation, one
    # of those it registers). It may be left out only where the group has one key.
    write_key: PublicKey | None = None
    signature: Signature | None = None  # the write key's Ed25519 signature over group_state_message
    # The write keys of the new version's members, sorted, no repeats; absent: unchanged.
    write_keys: Annotated[
        tuple[bytes, ...] | None, _Optional(_List(_Bytes(KEY_SIZE), MAX_GROUP_WRITE_KEYS))
    ] = None


@message
class GetGroupState(Request):
    """The group's encrypted state as stored, to anyone who names the group: only the members can
    open it, and a proof of the write key would need a relay challenge per read to be sound, to
    hide no more than the version and the blob's size (docs/protocol.md, "put_group_state").
    ``write_keys`` (added after ``put_group_state``'s ``write_keys``, hence optional: a relay from
    before refuses it as ``unknown_field``, and a client from before, which does not ask, gets the
    answer it always got) asks for the write keys the relay holds as well (GroupState.write_keys),
    for a member to check them against the keys in the state it opens."""

    kind: ClassVar[str] = "get_group_state"
    group: GroupId
    write_keys: Flag | None = None  # True: send the stored write keys (GroupState.write_keys) too


# Responses.


@message
class Registered(Response):
    kind: ClassVar[str] = "registered"
    account: AccountId
    device: DeviceId


@message
class PrekeysUploaded(Response):
    """How many one-time prekeys of each kind the relay now holds for the device."""

    kind: ClassVar[str] = "prekeys_uploaded"
    one_time_prekeys: Count
    kem_prekeys: Count


@message
class Bundle(Response):
    kind: ClassVar[str] = "bundle"
    account: AccountId
    devices: Annotated[tuple[DeviceBundle, ...], _List(DeviceBundle, MAX_DEVICES_PER_SEND)]
    key_log: KeyLogProof | None = None  # only when the fetch asked for it


@message
class Challenge(Response):
    kind: ClassVar[str] = "challenge"
    nonce: Nonce
    expires_in_ms: Millis


@message
class Authenticated(Response):
    kind: ClassVar[str] = "authenticated"
    account: AccountId
    device: DeviceId
    prekeys_left: Count | None = None  # set when the one-time prekeys run low: upload more


@message
class Sent(Response):
    """The envelopes are committed; ids in the order of the request's envelopes."""

    kind: ClassVar[str] = "sent"
    envelope_ids: Annotated[tuple[bytes, ...], _List(_Bytes(ENVELOPE_ID_SIZE), MAX_DEVICES_PER_SEND, 1)]
    # Signal-Server's SendMessageResponse.needsSync: set on an authenticated send to another
    # account when the sender's account has other devices, which should get a sync copy.
    # Absent on sealed sends (the relay does not know the sender).
    needs_sync: Flag | None = None


@message
class SenderCertificateResponse(Response):
    """``certificate`` is a ``relay.certificates.SenderCertificate`` in its encoded form: the
    device's account, device id, identity key and expiry, signed by the server key, with the
    server key's certificate from the trust root inside."""

    kind: ClassVar[str] = "sender_certificate"
    certificate: Body


@message
class Envelopes(Response):
    kind: ClassVar[str] = "envelopes"
    envelopes: Annotated[tuple[Envelope, ...], _List(Envelope, 10_000)]
    more: Flag  # True if more are queued than fitted
    prekeys_left: Count | None = None  # set when the one-time prekeys run low: upload more


@message
class Acked(Response):
    kind: ClassVar[str] = "acked"
    count: Count  # how many of the ids were in this device's queue and are now deleted


@message
class Pong(Response):
    kind: ClassVar[str] = "pong"


@message
class ContactsFound(Response):
    """The contacts that have accounts, in the order asked, each once."""

    kind: ClassVar[str] = "contacts_found"
    registered: Annotated[tuple[str, ...], _List(_Str(1, MAX_ACCOUNT_LEN), MAX_CONTACTS)]


@message
class Blocked(Response):
    kind: ClassVar[str] = "blocked"


@message
class Unblocked(Response):
    kind: ClassVar[str] = "unblocked"


@message
class GroupUpdated(Response):
    """The group was created or changed; ``epoch`` is its membership's version now."""

    kind: ClassVar[str] = "group_updated"
    group: GroupId
    epoch: Annotated[int, _UINT64]


@message
class GroupInfo(Response):
    kind: ClassVar[str] = "group_info"
    group: GroupId
    epoch: Annotated[int, _UINT64]
    members: Annotated[tuple[GroupMember, ...], _List(GroupMember, MAX_GROUP_MEMBERS, 1)]


@message
class GroupSent(Response):
    """The group send is committed: one envelope per member device, in (account, device) order."""

    kind: ClassVar[str] = "group_sent"
    envelope_ids: Annotated[tuple[bytes, ...], _List(_Bytes(ENVELOPE_ID_SIZE), MAX_GROUP_FANOUT)]


@message
class GroupStateStored(Response):
    kind: ClassVar[str] = "group_state_stored"
    group: GroupId
    version: Annotated[int, _UINT64]


@message
class GroupState(Response):
    kind: ClassVar[str] = "group_state"
    group: GroupId
    version: Annotated[int, _UINT64]
    state: Annotated[bytes, _Bytes(max_size=MAX_GROUP_STATE)]
    # Only when get_group_state asked for them: the write keys the relay holds for the next version
    # (sorted; empty once the last member left), absent for a state stored before write keys.
    write_keys: Annotated[
        tuple[bytes, ...] | None, _Optional(_List(_Bytes(KEY_SIZE), MAX_GROUP_WRITE_KEYS))
    ] = None


@message
class Deliver(Response):
    """Pushed by the relay (id 0) when an envelope arrives for a connected device."""

    kind: ClassVar[str] = "deliver"
    envelope: Envelope


@message
class ErrorFrame(Response):
    """An error. ``field`` names the offending field (rate_limited and server_busy: the limit that
    refused it, e.g. ``send_per_account``, ``max_connections``); stale_devices also fills the lists."""

    kind: ClassVar[str] = "error"
    code: Annotated[str, _Str(1, 64)]
    message: Annotated[str, _Text()]
    field: Annotated[str | None, _Optional(_Text())] = None
    missing: Annotated[tuple[int, ...] | None, _Optional(_List(_DEVICE_ID, MAX_DEVICES_PER_SEND))] = None
    extra: Annotated[tuple[int, ...] | None, _Optional(_List(_DEVICE_ID, MAX_DEVICES_PER_SEND))] = None
    stale: Annotated[tuple[int, ...] | None, _Optional(_List(_DEVICE_ID, MAX_DEVICES_PER_SEND))] = None
    retry_after_ms: Millis | None = None  # rate_limited: when the request would be accepted
    # registration_proof: the hashcash difficulty this relay asks of a new account, in leading zero
    # bits (absent when it asks for the operator's token instead); see solve_registration_pow.
    registration_pow: Annotated[int | None, _Optional(_UInt(1, 32))] = None

    @classmethod
    def from_exception(cls, e: ProtocolError) -> ErrorFrame:
        """The error frame of ``e``; a message or field longer than an error frame holds (a path
        through a peer's long keys) cut to fit, so that every error can be said."""
        field = None if e.field is None else _clipped(e.field)
        return cls(id=e.request_id, code=e.code.value, message=_clipped(e.message), field=field)


# --- key transparency over the wire: the log's heads, entries and consistency proofs -------------
# RFC 9162 §5 (Certificate Transparency 2.0) gives a log's clients get-sth (§5.2), get-sth-consistency
# (§5.3) and get-entries (§5.4); these are the same three, as frames. Any connection may ask (the log
# is public, as a CT log is); the relay answers an authenticated connection from the log it shows
# that account (relay.core.RelayCore.split_key_log: a split view is exactly what these let devices
# catch). Devices check what comes back in clients/transparency.py.
MAX_KEY_LOG_ENTRIES: Final = 256  # leaves per key_log_entries answer; the log may return fewer (§5.4)
MAX_KEY_LOG_LEAF: Final = 576  # a kt_leaf: msgpack of [1, account (≤ 128 characters), device, key32]
MAX_CONSISTENCY_PATH: Final = 2 * MAX_AUDIT_PATH
# How old, in seconds of the relay's clock, a signed head the relay serves may be: a head older than
# this is signed again over the same root with the time now (RFC 6962 §3.5: a log "MUST produce on
# demand a Signed Tree Head that is no older than the Maximum Merge Delay" and, given nothing new,
# signs "the same Merkle Tree Hash with a fresh timestamp"). Without it a quiet log would show its
# first head for ever, and a device could not tell the current head from an old one replayed (or a
# view frozen for it). An hour: with the device's allowance for clocks that disagree
# (clients.transparency.MAX_HEAD_AGE) it bounds how long an old head can pass for the current one,
# far below the 24-hour MMD of Certificate Transparency logs (a hidden key is read while it lasts),
# for one signature per hour of a quiet log.
KEY_LOG_HEAD_REFRESH: Final = 3600


@message
class GetKeyLogHead(Request):
    """The log's current signed tree head (RFC 9162 §5.2 get-sth)."""

    kind: ClassVar[str] = "get_key_log_head"


@message
class GetKeyLogConsistency(Request):
    """A consistency proof between the log at ``first`` and at ``second`` leaves (§5.3); 0 ≤ first ≤
    second ≤ the log's size."""

    kind: ClassVar[str] = "get_key_log_consistency"
    first: Annotated[int, _UINT64]
    second: Annotated[int, _UINT64]


@message
class GetKeyLogEntries(Request):
    """The leaves ``start`` to ``end`` inclusive (§5.4; end < the log's size); the answer may hold fewer,
    from ``start`` on."""

    kind: ClassVar[str] = "get_key_log_entries"
    start: Annotated[int, _UINT64]
    end: Annotated[int, _UINT64]


@message
class KeyLogHeadResponse(Response):
    """The signed head, and the server certificate whose key signs it (checked against the trust root)."""

    kind: ClassVar[str] = "key_log_head"
    head: KeyLogHead
    server_certificate: Annotated[bytes, _Bytes(max_size=256)]


@message
class KeyLogConsistency(Response):
    """PROOF(first, D[second]) of RFC 9162 §2.1.4.1 (empty when first is 0 or equals second)."""

    kind: ClassVar[str] = "key_log_consistency"
    first: Annotated[int, _UINT64]
    second: Annotated[int, _UINT64]
    proof: Annotated[tuple[bytes, ...], _List(_Bytes(32), MAX_CONSISTENCY_PATH)]


@message
class KeyLogEntries(Response):
    """Leaves of the log (``relay.wire.kt_leaf``) from index ``start`` on, in order."""

    kind: ClassVar[str] = "key_log_entries"
    start: Annotated[int, _UINT64]
    entries: Annotated[tuple[bytes, ...], _List(_Bytes(max_size=MAX_KEY_LOG_LEAF), MAX_KEY_LOG_ENTRIES)]


_KEY_LOG_REQUESTS: Final = (GetKeyLogHead, GetKeyLogConsistency, GetKeyLogEntries)
_KEY_LOG_RESPONSES: Final = (KeyLogHeadResponse, KeyLogConsistency, KeyLogEntries)


_F = TypeVar("_F", bound=Frame)


def _kinds(*classes: type[_F]) -> dict[str, type[_F]]:
    return {c.kind: c for c in classes}


REQUEST_KINDS: Final[Mapping[str, type[Request]]] = types.MappingProxyType(
    _kinds(
        Register,
        UploadPrekeys,
        FetchBundle,
        AuthChallenge,
        Authenticate,
        Send,
        SealedSend,
        GetSenderCertificate,
        Receive,
        Ack,
        Ping,
        DiscoverContacts,
        Block,
        Unblock,
        CreateGroup,
        ChangeGroup,
        GetGroup,
        GroupSend,
        PutGroupState,
        GetGroupState,
        *_KEY_LOG_REQUESTS,
    )
)
RESPONSE_KINDS: Final[Mapping[str, type[Response]]] = types.MappingProxyType(
    _kinds(
        Registered,
        PrekeysUploaded,
        Bundle,
        Challenge,
        Authenticated,
        Sent,
        SenderCertificateResponse,
        Envelopes,
        Acked,
        Pong,
        ContactsFound,
        Blocked,
        Unblocked,
        GroupUpdated,
        GroupInfo,
        GroupSent,
        GroupStateStored,
        GroupState,
        Deliver,
        ErrorFrame,
        *_KEY_LOG_RESPONSES,
    )
)
_ENVELOPE_KEYS: Final = frozenset({"v", "id", "kind"})


# --- encoding --------------------------------------------------------------------------------


def encode_body(frame: Frame) -> bytes:
    """The msgpack map of a frame, without the length prefix."""
    encoder = _FRAME_ENCODERS.get(type(frame))
    if encoder is None:
        encoder = _FRAME_ENCODERS[type(frame)] = _fast_encoder(type(frame), True)
    return _pack(encoder(frame))


# A frame class's encoder (_fast_encoder(cls, True)) and decoder (_fast_decoder(cls, True), None when
# it has none), by class alone: looked up for every frame.
_FRAME_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}
_FRAME_DECODERS: dict[type, Callable[[Any], Any] | None] = {}


def encode(frame: Frame) -> bytes:
    """A whole frame: 4-byte big-endian length, then the msgpack map."""
    body = encode_body(frame)
    return _PREFIX.pack(len(body)) + body


# --- decoding --------------------------------------------------------------------------------


class _Event(enum.Enum):
    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = _Event.NEED_DATA
"""next_frame() has nothing complete yet; feed more bytes."""
CLOSED: Final = _Event.CLOSED
"""The peer closed the connection cleanly, between frames."""


def _decode_error(e: ProtocolError, request_id: int, kind: str | None = None) -> RemoteProtocolError:
    message = e.message
    if kind is not None and not message.endswith((f" in a {quoted(kind)} frame", _in_a_frame(kind))):
        # Every refusal of a field of a frame whose kind is a str names the kind (with the field's path and
        # the request's id: the field alone does not say which frame, e.g. ``envelopes[0].device``). A
        # message names it already only at its end ("unknown field 'x' in a 'ping' frame", _where): a
        # key's quote that holds "'ping' frame" (b"'ping' frame", a key that is no string) is no naming.
        message = _in_frame(message, _in_a_frame(kind))
    return RemoteProtocolError(e.code, message, field=e.field, request_id=request_id)


# How :func:`quoted` and :func:`cut` end what they cut short: "…" and its length in parentheses; and how
# :func:`type_name` names a timestamp, "timestamp (ext -1)": what a message may end with in parentheses.
_CUT_LENGTH: Final = re.compile(r"(?<=…) \(([0-9][0-9,]* (?:characters|bytes))\)\Z")
_CLOSING_ASIDE: Final = re.compile(f"{_CUT_LENGTH.pattern}|(?<=timestamp) \\((ext -1)\\)\\Z")


def _in_a_frame(kind: str) -> str:
    """`` (in a 'send' frame)``: how a refusal names the kind of the frame it refuses (``kind``, a str the
    peer sent, :func:`quoted`). A kind too long to quote whole is quoted cut short and its length said
    after, ``(in a 'kkk…'… frame, its kind 300 characters long)``, never in parentheses inside these."""
    shown = quoted(kind)
    cut_short = _CUT_LENGTH.search(shown)
    if cut_short is None:
        return f" (in a {shown} frame)"
    return f" (in a {shown[: cut_short.start()]} frame, its kind {cut_short[1]} long)"


def _in_frame(message: str, in_kind: str) -> str:
    """``message`` with ``in_kind`` (`` (in a 'send' frame)``, or nothing) after it; when the message
    ends with an aside in parentheses, a quote cut short and its length, ``b'kkk…'… (5,000 bytes)``, or a
    timestamp's type, ``got timestamp (ext -1)``, the two said in one clause, ``b'kkk…'…, 5,000 bytes, in
    a 'send' frame``, ``got timestamp, ext -1, in a 'send' frame``, never two parentheses in a row."""
    aside = _CLOSING_ASIDE.search(message) if in_kind else None
    if aside is None:
        return f"{message}{in_kind}"
    return f"{message[: aside.start()]}, {aside[1] or aside[2]}, {in_kind.strip()[1:-1]}"


def _where(cls: type[Message]) -> str:
    """How an error names the map a key is in: a frame by its kind; a map inside one by its path, which
    the map does not know (:func:`_in_map` says it), and never by its type's name, which is this side's."""
    kind = getattr(cls, "kind", None)
    return f"a {kind!r} frame" if isinstance(kind, str) else "the map"


def _in_map(
    code: ErrorCode, key: str, before: str, cls: type[Message], after: str = "", *, where: str | None = None
) -> LocalProtocolError:
    """The refusal of the key ``key`` (its field, as :func:`_key_name` names it) of a map of ``cls``:
    ``before``, the map (``where``, else :func:`_where`), ``after``; said again of that map's path once a
    map holding it knows the path (the key's path without its last step)."""
    error = LocalProtocolError(code, f"{before}{where or _where(cls)}{after}", field=key)

    def by_path(path: str) -> str:
        where = path[: len(path) - len(key)] if path.endswith(key) else path
        return f"{before}{where.removesuffix('.')}{after}"

    error.by_path = by_path
    return error


def decode_body(body: bytes | bytearray, kinds: Mapping[str, type[Frame]]) -> Frame:
    """Parse one frame body (the msgpack map). Raises RemoteProtocolError."""
    if not body:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_MSGPACK,
            "frame body is empty (length 0): expected a msgpack map",
            field="length",
        )
    try:
        raw = _unpack_body(body)
    except (
        Exception
    ) as e:  # msgpack raises ValueError, FormatError, StackError, ExtraData, UnicodeDecodeError…
        in_kind = _kind_before_fault(body)  # (each refusal below names the frame's kind, when it can)
        try:
            if isinstance(e, UnicodeDecodeError):
                _refuse_bad_utf8(body)
            elif isinstance(e, TypeError):  # "unhashable type": a map's key is a map or an array
                _refuse_unhashable_key(body)
        except RemoteProtocolError as refused:
            raise RemoteProtocolError(
                refused.code,
                _in_frame(refused.message, in_kind),
                field=refused.field,
                request_id=refused.request_id,
            ) from None
        if isinstance(e, msgpack.ExtraData):  # (msgpack says "unpack(b) received extra data.")
            reason = _follows(len(e.extra), _AFTER_FRAME_MAP)
            request_id = _first_value_id(body)
        else:  # (msgpack says "Unpack failed: incomplete input", or nothing at all)
            reason, request_id = _unreadable(body, e)
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_MSGPACK,
            _in_frame(f"frame body is not one msgpack value: {reason}", in_kind),
            request_id=request_id,
        ) from None
    if type(raw) is dict:
        head = body[0]
        # A map that names a key twice unpacks to a dict with the last value: refuse it rather
        # than read a frame other than the one a reader that keeps the first value would see.
        # Maps inside the frame (an envelope, a prekey, or one in a field the kind does not have)
        # may name a key twice too; the answer is the same whatever width the body's headers are
        # written in (docs/protocol.md: a key named twice is invalid_value wherever it is).
        checked = (len(raw) != head & 0x0F) if 0x80 <= head <= 0x8F else head in (0xDE, 0xDF)
        if checked:
            _check_keys_once(body)
        kind = raw.get("kind")
        if type(kind) is str:
            cls = kinds.get(kind)
            if cls is not None:
                # A frame whose kind holds no map, read whole by its fast decoder, holds no map but
                # its own. Else packing the decoded frame again gives the body back byte for byte
                # when no key was dropped (this side's encoding is msgpack's shortest, as every
                # client here sends), for about a µs; any other body has its pairs counted.
                nests = _NESTS[cls] if cls in _NESTS else _nests(cls)
                if nests and not checked and not _packs_back(raw, body):
                    _check_keys_once(body)
                    checked = True
                if cls in _FRAME_DECODERS:
                    fast = _FRAME_DECODERS[cls]
                else:
                    fast = _FRAME_DECODERS[cls] = _fast_decoder(cls, True)
                if fast is not None:
                    try:
                        return fast(raw)
                    except _Slow:
                        pass  # the checked path names what is wrong
                checked = checked or nests  # (a nesting kind's body that packs back drops no key)
        # Refused, or read by the checked path: a key named twice anywhere in it (in a field this
        # kind does not have, in a frame of a kind this side does not know) is said first.
        if not checked and not _packs_back(raw, body):
            _check_keys_once(body)
    return _decode_map(raw, kinds)


def _first_value_id(body: bytes | bytearray) -> int:
    """The request id of a body that holds a whole msgpack value and then more bytes, read from that
    first value (:func:`_read_id`), when it can be."""
    try:
        _unpackb_ext(body, raw=False, strict_map_key=False, object_pairs_hook=_Pairs)
    except msgpack.ExtraData as e:
        return _read_id(e.unpacked)
    except Exception:  # (the first value is one msgpack reads: it raised ExtraData for this body)
        return 0
    return 0


def _pairs_reader(body: bytes | bytearray, bounds: Mapping[str, int] | None = None) -> msgpack.Unpacker:
    """An unpacker fed ``body`` that reads maps as lists of pairs, any ext as a value and a str that is
    not UTF-8 as text, so that what stops it is the fault :func:`_unreadable` says; ``bounds``: the reader's
    own (msgpack's ``max_bin_len`` and the like, :func:`unpack_value`'s options), so that it stops where
    that reader did."""
    unpacker = _Unpacker(
        raw=False,
        strict_map_key=False,
        ext_hook=_ext,
        unicode_errors="surrogateescape",
        object_pairs_hook=_Pairs,  # (a key that is a map shown as one: {1: 2}, as _shown_key shows it)
        max_buffer_size=len(body),  # (so an array, a str or a bin is read no longer than the body)
        **(bounds or {}),
    )
    unpacker.feed(body)
    return unpacker


# The bounds a reader of msgpack may be given (msgpack's Unpacker options) on the length of one value: what
# each bounds, said as :func:`_unreadable` says a value past it: (what it is, what its length counts).
_BOUNDS: Final = {
    "max_str_len": ("a str", "bytes"),
    "max_bin_len": ("a bin", "bytes"),
    "max_array_len": ("an array", "items"),
    "max_map_len": ("a map", "pairs"),
    "max_ext_len": ("an ext", "bytes"),
}


def _bound_of(body: bytes | bytearray, at: int) -> tuple[str, int] | None:
    """The bound (a key of _BOUNDS) on the value whose header begins at ``at``, and that value's length as
    the bound counts it (an ext's by its data's bytes); None for a value no bound is on (an integer, a
    float, nil, a bool) or a header cut short."""
    head = body[at]
    if 0xA0 <= head <= 0xBF:
        return "max_str_len", head & 0x1F
    if 0x90 <= head <= 0x9F:
        return "max_array_len", head & 0x0F
    if 0x80 <= head <= 0x8F:
        return "max_map_len", head & 0x0F
    ext = _ext_at(body, at)
    if ext is not None:
        return "max_ext_len", ext[2]
    bound = _LONG_BOUNDS.get(head)
    width = _LENGTHS.get(head) or _COUNTS.get(head)
    if bound is None or width is None or at + 1 + width > len(body):
        return None
    return bound, int.from_bytes(body[at + 1 : at + 1 + width], "big")


# The headers of a str, a bin, an array and a map whose length follows them (_LENGTHS, _COUNTS) → their bound.
_LONG_BOUNDS: Final = {
    **dict.fromkeys((0xD9, 0xDA, 0xDB), "max_str_len"),
    **dict.fromkeys((0xC4, 0xC5, 0xC6), "max_bin_len"),
    **dict.fromkeys((0xDC, 0xDD), "max_array_len"),
    **dict.fromkeys((0xDE, 0xDF), "max_map_len"),
}


def _past_bound(body: bytes | bytearray, at: int, bounds: Mapping[str, int]) -> bool:
    """Whether the value whose header begins at ``at`` is longer than the one of ``bounds`` that is on it."""
    bound = _bound_of(body, at)
    return bound is not None and bound[0] in bounds and bound[1] > bounds[bound[0]]


# What bytes after a frame body's first value follow (said before the frame's kind, "(in a 'send' frame)":
# no parenthesis of its own, so that one closes the message).
_AFTER_FRAME_MAP: Final = "its first value, which a frame's length counts alone"


def _follows(extra: int, after: str) -> str:
    """How an error says the bytes after a body's first value: ``after`` names that value."""
    return f"{extra:,} {'byte follows' if extra == 1 else 'bytes follow'} {after}"


def _unreadable(
    body: bytes | bytearray,
    error: Exception,
    length: str = "the frame's length",
    bounds: Mapping[str, int] | None = None,
    after: str = _AFTER_FRAME_MAP,
) -> tuple[str, int]:
    """What is wrong with a body msgpack would not unpack (``error``, its exception), said in this
    protocol's words rather than msgpack's ("Unpack failed: incomplete input", "2000 exceeds
    max_bin_len(1000)", or an exception with no words): cut short, nested too deep, a byte no msgpack type
    begins with, a timestamp that is not one, a value longer than one of the reader's ``bounds``, bytes
    after the value (``after`` names it), and in the value of which of the body's keys (for a value past a
    bound: at which path); and the request id, when the body's map names it, once, before the fault. The
    body's map is read again pair by pair to say so (a few µs for the keys of a frame; once a
    connection, which it closes), past what its first reading also refused (a str not UTF-8, a key that
    is a map or an array: said first when the rest of the body reads). msgpack's own words are never said:
    they differ between its versions and builds."""
    unpacker = _pairs_reader(body, bounds)
    fault: Exception | None = None
    ids: list[Any] = []
    where = ""
    long_values: list[
        tuple[object, int, int]
    ] = []  # (key, where its value starts, ends) of a value that may be deep
    try:
        count = unpacker.read_map_header()
        for i in range(count):
            where = f", at key {i + 1:,} of the {count:,} its map's header counts"
            key = unpacker.unpack()
            where = f", inside the value of its key {_cut(_shown_key(key))}"
            start = unpacker.tell()
            value = unpacker.unpack()
            if unpacker.tell() - start >= MAX_NESTING:  # (a value MAX_NESTING deep is that many bytes)
                long_values.append((key, start, unpacker.tell()))
            if type(key) is str and key == "id":
                ids.append(value)
        where = ""
    except Exception as e:  # (OutOfData where it is cut short)
        fault = e
    if fault is None and isinstance(error, msgpack.StackError):
        # A value exactly MAX_NESTING deep: read alone it starts at depth 0 and fits, inside the body's map
        # it did not. Read inside one array more, it is refused as the body refused it: that key is named.
        for key, start, end in long_values:
            try:
                _pairs_reader(b"\x91" + body[start:end], bounds).unpack()
            except msgpack.StackError:
                where = f", inside the value of its key {_cut(_shown_key(key))}"
                break
            except Exception:  # (nothing else a value read whole once refuses; said as before if so)
                pass
    if fault is not None and not where:  # (no map: read whole for what is wrong with it)
        unpacker = _pairs_reader(body, bounds)
        try:
            unpacker.unpack()
            fault = None
        except Exception as e:
            fault = e
    request_id = ids[0] if len(ids) == 1 and type(ids[0]) is int and 0 <= ids[0] <= _UINT64_MAX else 0
    if fault is None and unpacker.tell() < len(body):  # (read whole, as the first reading did not get to)
        return _follows(len(body) - unpacker.tell(), after), request_id
    what = error if fault is None else fault  # (nesting past the bound only as the body's map counts it)
    if isinstance(what, msgpack.StackError):
        return f"it is nested deeper than {MAX_NESTING:,} maps and arrays{where}", request_id
    if isinstance(what, msgpack.FormatError):
        return f"it holds the byte 0xc1, which begins no msgpack value{where}", request_id
    # Else the value msgpack refuses is found, and what is wrong with it said from its bytes, not from
    # msgpack's words (msgpack 1.2 says "invalid timestamp data" where 1.0.5, the lowest declared, says
    # "Unpack failed: error = -1"; another version may say neither).
    found = None
    if not isinstance(what, msgpack.OutOfData):
        try:
            probe = {**_MARKS, **(bounds or {})}
            fed = _Fed(_FIND_READS * len(body) + _FIND_MORE)
            found = _descend(body, probe, ValueError, fed, bounds=bounds)
        except Exception:  # (a value no reading of it reads: said as nothing in particular, below)
            found = None
    refused = None if found is None or not found.whole else found.at
    # (a length past the body's, which msgpack's reader refuses before it looks for the bytes)
    if isinstance(what, msgpack.OutOfData) or (refused is not None and _runs_past(body, refused)):
        return f"it is cut short at byte {len(body):,}, {length}{where}", request_id
    if refused is not None and _bad_timestamp(body, refused):
        return (
            f"it holds a timestamp (ext -1) that is not one: not 4, 8 or 12 bytes long, or of more than "
            f"999,999,999 nanoseconds{where}",
            request_id,
        )
    if refused is not None and bounds and _past_bound(body, refused, bounds):
        bound = _bound_of(body, refused)
        if found is not None and bound is not None:
            option, size = bound
            what_it_is, unit = _BOUNDS[option]
            path = _path_text(found.place)
            if found.key is not _NO_KEY:
                at = f", as a key of {path}" if path else ", as a key of its map"
            else:
                at = f", at {path}" if path else where
            return (
                f"it holds {what_it_is} of {size:,} {unit}, more than this reader takes "
                f"({option} {bounds[option]:,}){at}",
                request_id,
            )
    # (nothing this side can name: said without msgpack's words, which differ between its versions)
    return f"it holds a value that msgpack will not read{where}", request_id


# The msgpack headers that say a length in the bytes after them (str, bin, ext; array and map count values,
# each at least a byte): the header byte → how many bytes the length takes.
_LENGTHS: Final = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4}
_COUNTS: Final = {0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}
_FIXEXT: Final = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


def _ext_at(body: bytes | bytearray, at: int) -> tuple[int, int, int] | None:
    """The ext whose header begins at ``at``: (its type byte, where its data begins, its length); None for
    any other value, or a header cut short."""
    head = body[at]
    if head in _FIXEXT:
        start, size = at + 2, _FIXEXT[head]
    elif head in (0xC7, 0xC8, 0xC9):
        width = _LENGTHS[head]
        start, size = at + 2 + width, int.from_bytes(body[at + 1 : at + 1 + width], "big")
    else:
        return None
    return (body[start - 1], start, size) if start <= len(body) else None


def _runs_past(body: bytes | bytearray, at: int) -> bool:
    """Whether the value whose header begins at ``at`` says a length past the body's end (or is cut short
    in its header): a str, a bin or an ext longer than the bytes left, an array or a map of more values."""
    if at >= len(body):
        return True
    head = body[at]
    ext = _ext_at(body, at)
    if ext is not None:
        return ext[1] + ext[2] > len(body)
    if head in _FIXEXT or head in (0xC7, 0xC8, 0xC9):
        return True  # (its header cut short)
    width = _LENGTHS.get(head) or _COUNTS.get(head)
    if width is None:
        if 0xA0 <= head <= 0xBF:  # fixstr
            return at + 1 + (head & 0x1F) > len(body)
        return False
    if at + 1 + width > len(body):
        return True
    length = int.from_bytes(body[at + 1 : at + 1 + width], "big")
    return at + 1 + width + length > len(body)


def _bad_timestamp(body: bytes | bytearray, at: int) -> bool:
    """Whether the value at ``at`` is an ext -1 that is no timestamp. msgpack's timestamp extension type
    (the msgpack specification, msgpack/msgpack spec.md, "Timestamp extension type") is 4 bytes of seconds,
    8 of 30 bits of nanoseconds and 34 of seconds, or 12: 4 bytes of nanoseconds and 8 of seconds; its
    nanoseconds are at most 999,999,999 (msgpack-python's Timestamp refuses more)."""
    ext = _ext_at(body, at)
    if ext is None or ext[0] != 0xFF or ext[1] + ext[2] > len(body):
        return False
    _, start, size = ext
    if size == 8:
        return int.from_bytes(body[start : start + 8], "big") >> 34 > 999_999_999
    if size == 12:
        return int.from_bytes(body[start : start + 4], "big") > 999_999_999
    return size != 4


def _refuse_bad_utf8(body: bytes | bytearray, whole: str = "the frame") -> None:
    """A body that unpacks but for a str that is not UTF-8: refused naming where that str is (a field,
    ``envelopes[0].body``, or the map whose key it is), which msgpack's own error does not say: the first
    such str in the body's order (a map's key before its value), found by :func:`_find_fault`."""
    found = _find_fault(body, _PROBE_UTF8, UnicodeDecodeError)
    if found is None:  # broken in another way as well: the caller says what msgpack says
        return
    where = _path_text(found.place)
    if not found.whole:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_MSGPACK,
            # (no parenthesis of its own: the frame's kind follows, "(in a 'send' frame)")
            f"{where} holds a msgpack str that is not valid UTF-8 somewhere inside it, which was not searched "
            f"further",
            field=where,
            request_id=found.request_id,
        )
    if found.key is _NO_KEY:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_MSGPACK,
            f"{where or ('the frame body' if whole == 'the frame' else whole)} is a msgpack str that is not valid UTF-8",
            field=where or None,
            request_id=found.request_id,
        )
    key = found.key
    within = f"of {where}" if where else f"of {whole}"
    if type(key) is str:  # named by its bytes (its str would show the surrogates that stand for them)
        named = key.encode("utf-8", "surrogateescape")
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_MSGPACK,
            f"the key {quoted(named)} {within} is a msgpack str that is not valid UTF-8",
            field=_path_text((found.place, named, False)),
            request_id=found.request_id,
        )
    raise RemoteProtocolError(  # a key that is a map or an array, and holds such a str
        ErrorCode.MALFORMED_MSGPACK,
        f"the key {_key_name(key)} {within} holds a msgpack str that is not valid UTF-8",
        field=_path_text((found.place, key, False)),
        request_id=found.request_id,
    )


def _refuse_unhashable_key(body: bytes | bytearray, whole: str = "the frame") -> None:
    """A body whose map has a key that is a map or an array (msgpack allows it, a Python dict cannot
    hold it: msgpack's error says only "unhashable type"): refused as every key that is no string is
    (wrong_type, the keys must be strings), naming the map and the key: the first such key in the body's
    order, found by :func:`_find_fault`."""
    found = _find_fault(body, _PROBE_KEYS, TypeError)
    if found is None or (found.whole and found.key is _NO_KEY):  # (broken in another way as well)
        return
    where = _path_text(found.place)
    if not found.whole:
        raise RemoteProtocolError(
            ErrorCode.WRONG_TYPE,
            f"a map somewhere inside {where}, which was not searched further, has a key that is a map or an "
            f"array; the keys of a map must be strings",
            field=where,
            request_id=found.request_id,
        )
    key = found.key
    raise RemoteProtocolError(
        ErrorCode.WRONG_TYPE,
        f"the keys of {where or whole} must be strings; got {_the_key(key)}",
        field=_path_text((found.place, key, False)),
        request_id=found.request_id,
    )


# What _find_fault reads a body's values with, besides what it always passes (_reader). To find a str that
# is not UTF-8: strict UTF-8, and each map and array read as the class ``list`` (a C callable: no Python
# code for each, and nothing kept; a key that is a map or an array is then told from any other key).
# To find a key that is a map or an array: dicts, which refuse one (TypeError), and lists, which a dict
# cannot hold as a key.
_PROBE_UTF8: Final = {"object_pairs_hook": type, "list_hook": type}
_PROBE_KEYS: Final = {"unicode_errors": "surrogateescape"}
_MARKS: Final = {"unicode_errors": "surrogateescape", "object_pairs_hook": type, "list_hook": type}
# How a value that is only skipped is read: each map and array as its length (nothing kept).
_SKIP: Final = {"unicode_errors": "surrogateescape", "object_pairs_hook": len, "list_hook": len}

_NO_KEY: Final = object()

# How many bytes _find_fault reads in all, as times the body's length (and 64 KiB more, for a small
# body nested deep): it reads each level's values up to the fault, which for a fault deep inside the
# first of a map's values is that value again at each level (quadratic in the nesting); past this it
# names the value it has reached, "somewhere inside it".
_FIND_READS: Final = 4
_FIND_MORE: Final = 1 << 16


class _Found(typing.NamedTuple):
    place: _Place  # the value that is the fault, or holds it; for a key, the map's
    key: Any  # the map's key that is (or holds) the fault, read as _walk reads one; else _NO_KEY
    whole: bool  # False: the search stopped at ``place`` (the fault is somewhere inside it)
    at: int  # where in the body the value at ``place`` begins
    request_id: int


def _reader(size: int, hooks: Mapping[str, Any]) -> msgpack.Unpacker:
    return _Unpacker(raw=False, strict_map_key=False, ext_hook=_ext, max_buffer_size=size, **hooks)


class _Fed:
    """Bytes read by readers, counted against a budget."""

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.got = 0

    def read(
        self, reader: msgpack.Unpacker, view: memoryview, start: int, count: int, into: list[Any] | None
    ) -> None:
        """Up to ``count`` values from ``view[start:]`` into ``into`` (None: counted, not kept): ``reader``
        fed in growing pieces (a value near ``start`` costs no copy of the rest of the body), each value
        read by msgpack's C loop (:func:`itertools.islice` over the reader: no Python code for each). Fewer
        when the body ends first; raises what reading raises. How many were read is ``got``, either way."""
        fed, piece, end = start, 128, len(view)
        self.got = 0
        try:
            while self.got < count and fed < end:
                step = min(end, fed + piece)
                reader.feed(view[fed:step])
                fed, piece = step, piece * 2
                values = itertools.islice(reader, count - self.got)
                if into is not None:
                    try:
                        into.extend(values)
                    finally:
                        self.got = len(into)
                else:  # (zip stops at the first of its iterables to end or raise: the count is of those read)
                    counted = itertools.count(self.got)
                    try:
                        collections.deque(zip(values, counted, strict=False), maxlen=0)
                    finally:
                        self.got = next(counted)
        except BaseException:
            self.left -= fed - start  # (read up to the fault: at most what was fed)
            raise
        self.left -= reader.tell()


def _container(body: bytes | bytearray, at: int) -> tuple[bool, int, int] | None:
    """The map or array whose header begins at ``at``: (whether a map, how many pairs or values, where
    they begin); None for any other value (or a header cut short)."""
    head = body[at]
    if 0x80 <= head <= 0x9F:
        return head < 0x90, head & 0x0F, at + 1
    width = {0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}.get(head)
    if width is None or at + 1 + width > len(body):
        return None
    return head >= 0xDE, int.from_bytes(body[at + 1 : at + 1 + width], "big"), at + 1 + width


def _find_fault(body: bytes | bytearray, probe: Mapping[str, Any], fault: type[Exception]) -> _Found | None:
    """Where the first value in ``body`` that reading with ``probe`` refuses (``fault``) is: a str that
    is not UTF-8, a map's key that is a map or an array; None when ``body`` does not read whole even
    without it (broken in another way as well).

    Found level by level, each level's values read by msgpack's own loop, not a Python pass for each of
    up to ~100,000 maps and arrays (``_walk``'s, ~0.15-0.2 s of the relay's loop for a body of 80,000 maps
    with the fault at its end): the values of a map or an array are read in turn until one is refused (a
    map's key is one of them: a key at fault, or holding the fault, is named as the key); when none of
    them but the last is, the last holds it, unread. A key that is a map or an array is looked for among
    the keys read as well (``fault`` TypeError). What is read in all is bounded (_FIND_READS): past it the
    value reached is named as holding the fault somewhere inside it."""
    size = len(body)
    view = memoryview(body)
    fed = _Fed(_FIND_READS * size + _FIND_MORE)
    # The body reads whole (values at fault read as anything): else it is refused for what else it is.
    request_id = 0
    top = _container(body, 0)
    pairs: list[Any] | None = None
    try:
        if top is not None and top[0]:  # the body's map: its pairs, for the request id
            pairs = []
            reader = _reader(size, _MARKS)  # (an id that is a map or an array read as the class list)
            fed.read(reader, view, top[2], 2 * top[1], pairs)
            if len(pairs) < 2 * top[1] or top[2] + reader.tell() != size:
                return None
            keys = pairs[0::2]
            if keys.count("id") == 1:  # (== holds only for the str "id": no other value is equal to it)
                value = pairs[2 * keys.index("id") + 1]
                if type(value) is int and 0 <= value <= _UINT64_MAX:
                    request_id = value
        else:
            _unpackb_ext(body, raw=False, strict_map_key=False, **_SKIP)
    except Exception:
        return None
    return _descend(body, probe, fault, fed, request_id, pairs)


def _descend(
    body: bytes | bytearray,
    probe: Mapping[str, Any],
    fault: type[Exception],
    fed: _Fed,
    request_id: int = 0,
    top: list[Any] | None = None,
    bounds: Mapping[str, int] | None = None,
) -> _Found | None:
    """:func:`_find_fault`'s search, level by level from the body's own value (which need not read whole:
    a value cut short by the body's end is the one at fault, as one ``probe`` refuses is). ``top``: the
    values of the body's own map, read as _MARKS reads them, when they were. ``bounds``: the reader's
    bounds on a value's length (in ``probe`` too): a map or an array past one is the value at fault, not
    searched inside."""
    size = len(body)
    view = memoryview(body)
    place: _Place = None
    at = 0
    while True:
        head = _container(body, at) if at < size else None
        if head is None or (bounds and _past_bound(body, at, bounds)):
            # the value at fault itself (or, at the body's end, where one is cut short)
            return _Found(place, _NO_KEY, True, at, request_id)
        if fed.left < 0:
            return _Found(place, _NO_KEY, False, at, request_id)
        is_map, count, first = head
        values = 2 * count if is_map else count
        if not values:
            return None  # (holds nothing: cannot be where the fault is)
        marks: list[Any] | None = None
        limit = values - 1  # (the last is not read: when none before it is at fault, it holds the fault)
        if is_map and fault is TypeError:  # a key that is a map or an array: by the keys, read as marks
            marks = top if at == 0 and top is not None else []
            if marks is not top:
                fed.read(_reader(size, _MARKS), view, first, values - 1, marks)
            keys = marks[0::2]
            if list in keys:
                limit = 2 * keys.index(list)  # (at fault unless a value before it holds a fault first)
        reader = _reader(size, probe)
        # (the values read are kept to name a key by, but not the dicts and lists read for a TypeError)
        read: list[Any] | None = None if fault is TypeError else []
        raised = False
        try:
            fed.read(reader, view, first, limit, read)
        except fault:
            raised = True
        except Exception:
            return None
        index = fed.got  # the value at fault, or the one after the last read (nothing read was at fault)
        # (every value before it read whole, none refused: the reader stopped where it begins)
        at = first + reader.tell() if not raised else _offset(fed, view, first, index)
        if is_map and index % 2 == 0:  # a key: at fault itself, or holding the fault
            try:
                key = _value_at(fed, view, at)
            except Exception:  # (read as _walk reads one, still refused: the value at fault is the key)
                return _Found(place, _NO_KEY, True, at, request_id)
            return _Found(place, key, True, at, request_id)
        if is_map:
            key = (read if read is not None else marks or [])[index - 1]
            if type(key) is not str:  # (as read by the probe: a map or an array is shown as _walk reads it)
                key = _value_at(fed, view, _offset(fed, view, first, index - 1))
            place = (place, key, False)
        else:
            place = (place, index, True)


def _offset(fed: _Fed, view: memoryview, first: int, index: int) -> int:
    """Where the value ``index`` of those beginning at ``first`` begins (the values before it read whole)."""
    reader = _reader(len(view), _SKIP)
    skipped: list[Any] = []
    fed.read(reader, view, first, index, skipped)
    return first + reader.tell()


def _value_at(fed: _Fed, view: memoryview, at: int) -> Any:
    """The value that begins at ``at``, read as _walk reads one."""
    value: list[Any] = []
    shown = _reader(len(view), {"unicode_errors": "surrogateescape", "object_pairs_hook": _Pairs})
    fed.read(shown, view, at, 1, value)
    return value[0]


def _shown_key(value: Any, depth: int = 0) -> str:
    """A map or an array, a key read by ``_refuse_unhashable_key`` (a map as its pairs) or a value (a map
    as a dict; an array this side builds as a tuple), as an error shows it, in msgpack's (and JSON's)
    brackets: a map as ``{1: 2}``, an array as ``[1, 2]``, ``[1]`` (never Python's tuple, ``(1, 2)``: a
    path puts a "." before it, ``to.[1, 2]``, so that it never reads as an index, :func:`_path_text`). At
    most 8 items and 3 levels of it (a key may be nested as deep as msgpack unpacks, and as long as a
    frame), then "…"; each value that is no map or array in it as :func:`_scalar_text` shows one (a str
    or a bin :func:`quoted`, an ext ``ext 5 b'x'``, nil ``nil``)."""
    kind = type(value)
    if kind is _Pairs or kind is dict or kind is list or kind is tuple:
        is_map = kind is _Pairs or kind is dict
        if depth == 3:
            return "{…}" if is_map else "[…]"
        if is_map:
            pairs = itertools.islice(value.items() if kind is dict else value, 8)
            items = [f"{_shown_key(k, depth + 1)}: {_shown_key(v, depth + 1)}" for k, v in pairs]
        else:
            items = [_shown_key(v, depth + 1) for v in value[:8]]
        if len(value) > 8:
            items.append("…")
        inner = ", ".join(items)
        return f"{{{inner}}}" if is_map else f"[{inner}]"
    return _scalar_text(value)


def _packs_back(raw: Any, body: bytes | bytearray) -> bool:
    """Whether packing the decoded ``raw`` gives ``body`` back byte for byte. A value msgpack
    unpacks but will not pack again (older msgpack's Packer stops at 511 levels of nesting, its
    Unpacker at 1,024; the pure-Python build's Packer recurses a Python call a level, past Python's
    recursion limit, which relay._msgpack raises only while it reads) counts as not: the body is then
    read again, map by map."""
    try:
        return _pack(raw) == body
    except (ValueError, RecursionError):  # "recursion limit exceeded"; the Packer empties its buffer first
        return False


class _Pairs(list[Any]):
    """A msgpack map as read by ``_check_keys_once``: its (key, value) pairs, in order, repeats kept."""


# A place in a body read as _Pairs: None for the body itself, else (the place of the map or array it is
# in, its key or index, whether it is an index). Made for each value as the walk reaches it, and said as
# text only for the one an error names: a path's text is as long as the nesting is deep (up to ~1,000
# levels of keys of up to 58 characters), and one for each of the tens of thousands of values a map at
# the bottom may hold was gigabytes.
_Place = tuple[Any, Any, bool] | None


def _walk(root: Any) -> Iterator[tuple[Any, _Place]]:
    """Every map, array and str of ``root`` (a body read as _Pairs) and its place, ``root`` first, each
    map or array before what it holds, in the body's order; no recursion (msgpack unpacks nesting about
    a thousand deep, past Python's recursion limit)."""
    stack: list[tuple[Any, _Place]] = [(root, None)]
    while stack:
        node, place = stack.pop()
        yield node, place
        # (values that are maps, arrays or strs only: nothing else is looked at, or holds anything)
        if type(node) is _Pairs:
            stack.extend([(v, (place, k, False)) for k, v in reversed(node) if type(v) in _WALKED])
        elif type(node) is list:
            stack.extend(
                [(v, (place, i, True)) for i, v in reversed(list(enumerate(node))) if type(v) in _WALKED]
            )


_WALKED: Final = frozenset({_Pairs, list, str})


# The most characters of a path (an error's field, through a peer's maps) said whole; a longer one keeps
# its first and its last steps, about half of this each, and says how many it leaves out between them:
# ``x.k.k.…(996 more).k.v``. A step is at most a quote (~85 characters), so a path is said in at most
# ~220; with the key's quote and the words around it an error about one fits the 4 KiB the server
# reserves for an answer even at 4 bytes a character.
MAX_PATH: Final = 200


def _path_text(place: _Place) -> str:
    """A place as an error's field names it: keys as :func:`_key_name` names them, joined by ".",
    indexes as ``[3]`` (a key that is an array, ``[1, 2]``, after a "." as any key: ``to.[1, 2]``); a path
    longer than MAX_PATH cut in its middle (see MAX_PATH)."""
    steps: list[tuple[str, bool]] = []  # (a step's text, whether it is an index)
    while place is not None:
        place, step, index = place
        steps.append((f"[{step}]", True) if index else (_key_name(step), False))
    steps.reverse()
    if sum(len(text) for text, _ in steps) + len(steps) <= MAX_PATH:
        return _joined(steps)
    head, tail, half = 1, 1, MAX_PATH // 2
    while head < len(steps) - tail and len(_joined(steps[: head + 1])) <= half:
        head += 1
    while head < len(steps) - tail and len(_joined(steps[-tail - 1 :])) <= half:
        tail += 1
    left_out = len(steps) - head - tail
    if not left_out:
        return _joined(steps)
    return _joined([*steps[:head], (f"…({left_out:,} more)", False), *steps[-tail:]])


def _joined(steps: list[tuple[str, bool]]) -> str:
    return "".join(text if i == 0 or index else f".{text}" for i, (text, index) in enumerate(steps))


def _read_id(root: Any) -> int:
    """The request id of a frame body read as _Pairs, when it can be read: the value of its one ``id``
    key, an unsigned integer of 64 bits (what ``id`` is); else 0 (an id named twice is no one id)."""
    if type(root) is not _Pairs:
        return 0
    ids = [v for k, v in root if type(k) is str and k == "id"]
    if len(ids) == 1 and type(ids[0]) is int and 0 <= ids[0] <= _UINT64_MAX:
        return ids[0]
    return 0


def _in_kind(root: Any) -> str:
    """How an error about a frame body read as _Pairs names the frame's kind, as an unknown field's does:
    `` (in a 'send' frame)`` when the body has one ``kind`` key that is a str (quoted, as a peer's kind
    always is: :func:`quoted`); else nothing (no one kind to name)."""
    if type(root) is not _Pairs:
        return ""
    kinds = [v for k, v in root if type(k) is str and k == "kind"]
    if len(kinds) != 1 or type(kinds[0]) is not str or not _is_utf8(kinds[0]):
        return ""
    return _in_a_frame(kinds[0])


def _is_utf8(text: str) -> bool:
    """Whether ``text`` was read from valid UTF-8 (a str read with surrogateescape holds a surrogate for
    each byte that was not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind_before_fault(body: bytes | bytearray) -> str:
    """:func:`_in_kind` of a body msgpack would not unpack: its map read pair by pair, as
    :func:`_unreadable` reads it, a str that is not UTF-8 and a key that is a map or an array read past
    (so a ``kind`` after them is read); what cannot be read (a byte 0xc1, a body cut short, nested too
    deep) ends the reading, and a ``kind`` after it, or in it, is not known: nothing is named
    (docs/protocol.md, Errors). A body whose first value is no map names no kind either."""
    unpacker = _pairs_reader(body)
    pairs = _Pairs()
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            pairs.append((key, unpacker.unpack()))
    except Exception:  # (OutOfData, FormatError, StackError…: where the fault is)
        pass
    return _in_kind(pairs)


def _check_keys_once(body: bytes | bytearray) -> None:
    """Refuse a frame body in which a map, the frame's own or one inside it, names a key more than
    once (the first such key, by its path: ``v``, ``envelopes[1].device``).

    Whether any map does is asked first by counting, with no Python code for each map (:func:`_drops_a_key`):
    a body of 256 KiB may hold ~100,000 maps and arrays, and every body whose headers are not msgpack's
    shortest (a map16 of 3 keys; another client's encoder) is asked. Their walk, one loop pass for each,
    took ~0.05-0.1 s of the relay's loop a frame (twice for a frame of a kind that nests); the count takes
    about what msgpack's unpacking of the body does. The walk, which says where, only for a body refused."""
    if not _drops_a_key(body):
        return
    root = _unpackb_ext(body, raw=False, strict_map_key=False, object_pairs_hook=_Pairs)
    request_id = _read_id(root)
    in_kind = _in_kind(root)
    found = _repeated_key(root)
    if found is not None:
        key, place = found
        where = _path_text(place)
        within = "" if where == _key_name(key) else f" (at {where})"
        raise RemoteProtocolError(
            ErrorCode.INVALID_VALUE,
            f"frame body names the key {value_text(key)} more than once{within}; each key once{in_kind}",
            field=where,
            request_id=request_id,
        )
    # No key of one msgpack type twice: keys of two that Python holds as one (1, 1.0 and true), which
    # no dict the decoder reads can hold apart. Refused as a key that is no string, wherever it is (as a
    # key that is a map or an array is: _refuse_unhashable_key), naming the first of them.
    for node, path in _walk(root):
        if type(node) is _Pairs:
            seen: dict[Any, Any] = {}
            for key, _ in node:
                if key in seen:
                    first = seen[key]
                    where = _path_text(path)
                    raise RemoteProtocolError(
                        ErrorCode.WRONG_TYPE,
                        f"the keys of {where or 'the frame'} must be strings; got {_the_key(first)} and "
                        f"{_the_key(key)}, which a map reader holds as one"
                        f"{in_kind}",
                        field=_path_text((path, first, False)),
                        request_id=request_id,
                    )
                seen[key] = key
    # The counts said a map drops a key, and the walk found none that does (it cannot be: a dict drops a
    # key exactly when one is named twice, or two are held as one; tests/relay/test_wire_checks.py drives
    # the two against each other): refused all the same, by the wire's own error naming the frame, never
    # an internal error (nor an assert, which python -O leaves out, reading on a frame whose maps differ
    # from the ones the peer sent).
    raise RemoteProtocolError(
        ErrorCode.INVALID_VALUE,
        f"frame body has a map that a map reader holds with fewer keys than it names; each key once{in_kind}",
        request_id=request_id,
    )


def _repeated_key(root: Any) -> tuple[Any, _Place] | None:
    """The first key a map under ``root`` names twice, and its place; None if there is none. Each map's
    own keys before the maps inside it (a frame's top-level repeat is named first)."""
    for node, place in _walk(root):
        if type(node) is _Pairs:
            # A key by its msgpack type as well: 1, 1.0 and true are three keys (Python's dict holds them
            # as one, 1 == 1.0 == True), and a map of them names none twice; they are refused as keys
            # that are no string, not as one named "more than once".
            seen: set[tuple[type, Any]] = set()
            for key, _ in node:
                typed = (type(key), key)
                if typed in seen:
                    return key, (place, key, False)
                seen.add(typed)
    return None


def _drops_a_key(body: bytes | bytearray) -> bool:
    """Whether reading ``body`` (which msgpack unpacks) as dicts drops a pair: a map names a key twice,
    or two keys Python holds as one (1, 1.0, true). Counted in two passes of msgpack's own, with C
    callables for hooks (no Python code for each of up to ~100,000 maps): every pair of every map (the
    list of a map's pairs added to one list, the map itself read as None), and every key of the dicts
    msgpack makes of them (each dict kept, read as None in the map that holds it). A dict holds fewer
    keys than its map's pairs exactly when it dropped one. Arrays are read as their lengths (an array
    holds no key, and a list kept for each of ~100,000 is what the collector would walk again and again)."""
    pairs: list[Any] = []
    _unpackb_ext(body, raw=False, strict_map_key=False, object_pairs_hook=pairs.extend, list_hook=len)
    dicts: list[dict[Any, Any]] = []
    _unpackb_ext(body, raw=False, strict_map_key=False, object_hook=dicts.append, list_hook=len)
    return len(pairs) != sum(map(len, dicts))


def _key_path(path: str, key: Any) -> str:
    shown = _key_name(key)
    return f"{path}.{shown}" if path else shown


_NESTS: dict[type[Frame], bool] = {}


def _nests(cls: type[Frame]) -> bool:
    """Whether ``cls`` has a field that holds a map (a message, a list of them, or an optional one)."""

    def holds_map(spec: _Spec) -> bool:
        while isinstance(spec, _Optional | _List):
            spec = spec.inner if isinstance(spec, _Optional) else spec.item
        return isinstance(spec, _Struct)

    _NESTS[cls] = found = any(holds_map(spec) for _, spec, _ in cls._decode_plan()[1])
    return found


def _decode_map(raw: Any, kinds: Mapping[str, type[Frame]]) -> Frame:
    """``decode_body`` after msgpack, without the fast path: each check in turn, each error its own."""
    if type(raw) is not dict:
        raise RemoteProtocolError(
            ErrorCode.NOT_A_MAP, f"frame body must be a msgpack map, got {type_name(raw)}"
        )
    request_id = 0
    try:
        if "id" in raw:
            request_id = _UINT64.check(raw["id"], "id")
        for key in ("v", "id", "kind"):
            if key not in raw:  # (said as any missing field is: "id is missing (in a 'ping' frame)")
                raise LocalProtocolError(ErrorCode.MISSING_FIELD, f"{key} is missing", field=key)
        version = raw["v"]
        if type(version) is not int:
            raise _UINT64._wrong_type(version, "v")
        if (
            version != PROTOCOL_VERSION
        ):  # (any other integer, negative or past 2**64 - 1 too: docs/protocol.md)
            raise LocalProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"v must be {PROTOCOL_VERSION}, the only protocol version this side speaks; got {version}",
                field="v",
            )
        kind = raw["kind"]
        if type(kind) is not str:
            raise LocalProtocolError(
                ErrorCode.WRONG_TYPE, f"kind must be a string, got {type_name(kind)}", field="kind"
            )
        cls = kinds.get(kind)
        if cls is None:
            # Not the kinds listed (23 of them: ~330 bytes, an answer of ~400 to a frame of 20 that the
            # relay answers and reads on after, without a bucket): where they are listed.
            which = (
                "request" if kinds is REQUEST_KINDS else "response" if kinds is RESPONSE_KINDS else "known"
            )
            raise LocalProtocolError(
                ErrorCode.UNKNOWN_KIND,
                f"unknown kind {quoted(kind)}; not a {which} kind (docs/protocol.md lists them)",
                field="kind",
            )
        fields = {k: v for k, v in raw.items() if k not in _ENVELOPE_KEYS}
        fields["id"] = request_id
        try:
            return cls.from_wire(fields)
        except ProtocolError as e:
            raise _decode_error(e, request_id, kind) from None
    except ProtocolError as e:
        # A refusal of v or id names the kind too, when the body names one that is a str (an unknown
        # kind's refusal quotes it already: "unknown kind 'x'").
        kind = raw.get("kind")
        named = kind if type(kind) is str and e.code is not ErrorCode.UNKNOWN_KIND else None
        raise _decode_error(e, request_id, named) from None


def _known_keys(raw: dict[Any, Any], cls: type[Message], path: str, dropped: list[str]) -> dict[Any, Any]:
    """``raw`` (a map of a ``cls``) without the str keys ``cls`` does not have, in it and in the maps
    its fields hold; the path of each key left out is added to ``dropped``. Keys that are no str stay
    (they are refused as ever). The depth is the specs' own (a few maps), not the peer's."""
    names = cls._decode_plan()[0]
    top = not path  # a frame: its v and kind are read by _decode_map
    known = {
        k: v for k, v in raw.items() if type(k) is not str or k in names or (top and k in _ENVELOPE_KEYS)
    }
    dropped.extend(_key_path(path, k) for k in raw if k not in known)
    for name, spec, _ in cls._decode_plan()[1]:
        if name in known:
            known[name] = _known_values(spec, known[name], _prefixed(path, name), dropped)
    return known


def _known_values(spec: _Spec, value: Any, path: str, dropped: list[str]) -> Any:
    """``value`` of a field of ``spec`` with _known_keys applied to the maps in it of a known type."""
    while isinstance(spec, _Optional):
        spec = spec.inner
    if isinstance(spec, _Struct) and type(value) is dict:
        return _known_keys(value, spec.cls, path, dropped)
    if isinstance(spec, _List) and type(value) is list:
        item = spec.item
        return [_known_values(item, v, f"{path}[{i}]", dropped) for i, v in enumerate(value)]
    return value


class FrameDecoder:
    """Sans-IO frame reader, in the manner of h11's connection: feed bytes, pull frames.

    ``role="relay"`` reads requests (what the relay receives); ``role="device"`` reads responses
    and pushes. The length limit is enforced from the 4-byte prefix alone, before any of the
    body is buffered.
    """

    # one per connection
    __slots__ = (
        "_buf",
        "_eof",
        "_error",
        "_pos",
        "ignore_unknown_fields",
        "ignored_fields",
        "kinds",
        "max_frame_size",
    )

    def __init__(
        self,
        role: Literal["relay", "device"] = "relay",
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ignore_unknown_fields: bool = False,
    ):
        if role not in ("relay", "device"):
            raise ValueError(f"role must be 'relay' or 'device', got {role!r}")
        self.kinds = REQUEST_KINDS if role == "relay" else RESPONSE_KINDS
        self.max_frame_size = max_frame_size
        # With ignore_unknown_fields, a frame of a known kind with keys this side does not know (a
        # newer peer's optional additions, at any depth) is read without them, as a protobuf reader
        # skips the fields it does not know, instead of refused with unknown_field; ``ignored_fields``
        # then names them (their paths), for the last frame returned. A device reads the relay so
        # (clients.link): refusing what a newer relay adds to every answer would refuse every answer.
        self.ignore_unknown_fields = ignore_unknown_fields
        self.ignored_fields: tuple[str, ...] = ()
        # What has arrived and not been returned, from _pos on: the bytes of the last read as they
        # came when nothing was held before it (most reads hold whole frames: no copy), else a
        # bytearray that collects the reads of a frame split across them.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer. ``b""`` means the peer closed its side."""
        if self._eof and data:
            raise RuntimeError("received data after end of stream")
        if not data:
            self._eof = True
        elif self._pos == len(self._buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        else:
            if type(self._buf) is bytes:  # a frame split across reads: collect them
                self._buf = bytearray(memoryview(self._buf)[self._pos :])
                self._pos = 0
            self._buf += data

    def next_frame(self) -> Frame | Literal[_Event.NEED_DATA, _Event.CLOSED]:
        """The next complete frame, NEED_DATA, or CLOSED; raises RemoteProtocolError.

        After an error whose code is in ``RESUMABLE_CODES`` (the frame was read whole, only what
        it names is unknown) the next call reads the next frame; after any other, it raises the
        same error again.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except RemoteProtocolError as e:
            if e.code not in RESUMABLE_CODES:
                self._error = e
            raise

    def _next_frame(self) -> Frame | Literal[_Event.NEED_DATA, _Event.CLOSED]:
        available = len(self._buf) - self._pos
        if available < PREFIX_SIZE:
            return self._at_end(available)
        (length,) = _PREFIX.unpack_from(self._buf, self._pos)
        if length > self.max_frame_size:
            raise RemoteProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame length {length} exceeds the maximum of {self.max_frame_size} bytes",
                field="length",
            )
        if available < PREFIX_SIZE + length:
            return self._at_end(available)
        start = self._pos + PREFIX_SIZE
        body = self._buf[start : start + length]  # (one copy; msgpack reads a bytearray as well)
        self._pos = start + length
        if self._pos == len(self._buf):
            self._buf = b""
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf) and type(self._buf) is bytearray:
            del self._buf[: self._pos]  # compact now and then, not on every frame
            self._pos = 0
        if not self.ignore_unknown_fields:
            return decode_body(body, self.kinds)
        self.ignored_fields = ()
        try:
            return decode_body(body, self.kinds)
        except RemoteProtocolError as e:
            if e.code is not ErrorCode.UNKNOWN_FIELD:
                raise
        # Read whole, every key once, of a known kind (else the error would be another): read it again
        # without the keys its kind does not have, and so decide on what is left, as for any frame.
        raw = _unpack_body(body)
        dropped: list[str] = []
        known = _known_keys(raw, self.kinds[raw["kind"]], "", dropped)
        frame = _decode_map(known, self.kinds)
        self.ignored_fields = tuple(dropped)
        return frame

    def _at_end(self, available: int) -> Literal[_Event.NEED_DATA, _Event.CLOSED]:
        if not self._eof:
            return NEED_DATA
        if available:
            raise RemoteProtocolError(
                ErrorCode.TRUNCATED_FRAME, f"connection closed with {available} bytes of an incomplete frame"
            )
        return CLOSED


# --- key transparency: the two encodings both sides must agree on byte for byte ------------------
# The relay logs every (account, device, identity key) it serves (relay/transparency.py); devices
# verify (clients/transparency.py). The leaf and the signed tree head's body are defined here,
# once, because clients may import relay.wire and relay may never import clients.

KT_LEAF_VERSION = 1
KT_HEAD_VERSION = 1


def kt_leaf(account: str, device: int, identity_key: bytes) -> bytes:
    """The log entry for one device's identity key: msgpack [version, account, device, key]."""
    if not isinstance(account, str) or not account:
        raise ValueError(
            f"key transparency leaf: account must be a non-empty string, not {value_text(account)}"
        )
    if not isinstance(device, int) or isinstance(device, bool) or device < 1:
        raise ValueError(f"key transparency leaf: device must be an integer >= 1, not {value_text(device)}")
    if not isinstance(identity_key, bytes) or len(identity_key) != KEY_SIZE:
        raise ValueError(f"key transparency leaf: identity_key must be {KEY_SIZE} bytes")
    return msgpack.packb([KT_LEAF_VERSION, account, device, identity_key], use_bin_type=True)


class MsgpackError(ValueError):
    """Bytes that are not one msgpack value (:func:`unpack_value`), said in this protocol's words."""


def unpack_value(data: bytes, what: str, **options: Any) -> Any:
    """``data`` read as one msgpack value, as a frame body is read (``raw=False``, keys of any type, an ext
    of a type msgpack reserves read as a value, ``ExtType``, for the reader to refuse where it is, as any
    value of the wrong type); ``options`` are msgpack's (``max_bin_len``). Else :class:`MsgpackError`,
    "``what``: not one msgpack value: ...", saying what is wrong in the words a frame's error says it
    (cut short, the byte 0xc1, nested too deep, a timestamp that is not one, bytes after the value, a str
    not UTF-8 or a key that is a map or an array and where), not msgpack's, which differ between its
    versions and say "not valid msgpack" of an ext it reserves. The one reader of msgpack for the other
    encodings both sides read (certificates, bundles, tree heads, key log leaves, sealed sender's content,
    prekey messages), so that each says a fault as the wire does."""
    try:
        return _unpackb_ext(data, raw=False, strict_map_key=False, **options)
    except (
        Exception
    ) as e:  # msgpack raises ValueError, FormatError, StackError, ExtraData, UnicodeDecodeError…
        error = e
    if not data:
        reason = "it is empty (0 bytes)"
    elif isinstance(error, msgpack.ExtraData):
        reason = _follows(len(error.extra), "its first value")
    else:
        reason = ""
        try:
            if isinstance(error, UnicodeDecodeError):
                _refuse_bad_utf8(data, "the value")
            elif isinstance(error, TypeError):
                _refuse_unhashable_key(data, "the value")
        except RemoteProtocolError as e:
            reason = e.message
        if not reason:
            bounds = {k: v for k, v in options.items() if k in _BOUNDS}
            reason, _ = _unreadable(data, error, "its length", bounds, "its first value")
    raise MsgpackError(f"{what}: not one msgpack value: {reason}") from None


def kt_leaf_decode(leaf: bytes) -> tuple[str, int, bytes]:
    """(account, device, identity key) of a leaf made by ``kt_leaf``; ValueError naming what is wrong."""
    obj = unpack_value(leaf, "key transparency leaf")
    # (type() is int: msgpack's true unpacks as a bool, an int equal to 1)
    if not isinstance(obj, list) or len(obj) != 4 or type(obj[0]) is not int or obj[0] != KT_LEAF_VERSION:
        raise ValueError(f"key transparency leaf: expected [{KT_LEAF_VERSION}, account, device, key]")
    _, account, device, key = obj
    kt_leaf(account, device, key)  # the same checks as on the way in
    return account, device, key


def kt_tree_head_body(tree_size: int, timestamp: int, root_hash: bytes) -> bytes:
    """What the relay's server key signs for a tree head (RFC 9162 §4.10 TreeHeadDataV2, as msgpack)."""
    # type() is int, not isinstance: True and False are ints equal to 1 and 0, and would be signed as
    # msgpack's true and false, another body (clients.transparency.decode_head refuses them too);
    # both fields are uint64 in RFC 9162's TreeHeadDataV2, and msgpack packs no larger integer
    for name, value in (("tree_size", tree_size), ("timestamp", timestamp)):
        if type(value) is not int or not 0 <= value < 2**64:
            raise ValueError(f"tree head: {name} must be an integer from 0 to 2**64 - 1, not {value!r}")
    if not isinstance(root_hash, bytes) or len(root_hash) != 32:
        raise ValueError("tree head: root_hash must be 32 bytes (SHA-256)")
    return msgpack.packb(
        [b"relaysim-kt-head", KT_HEAD_VERSION, tree_size, timestamp, root_hash], use_bin_type=True
    )
