"""relay.wire: frames round-trip, arrive in any split, and every kind of bad input gets its code."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import re
import struct
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Iterator
from typing import Final

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay import server, wire
from tests.helpers import DeviceKeys

KEYS = DeviceKeys.make("alice")
ENVELOPE = wire.Envelope(id=b"E" * 16, body=b"ciphertext", timestamp=1_700_000_000_000, sealed=False,
                         source_account="alice", source_device=1)  # fmt: skip

# One of every frame kind, with optional fields both set and not.
EXAMPLES: list[wire.Frame] = [
    KEYS.register(5),
    dataclasses.replace(
        KEYS.register(5),
        proof=b"p" * 8,
        push_token=b"a" * 32,
        device_type="phone",
        app_version="7.1.0",
        device_signature=b"d" * 64,
    ),
    wire.UploadPrekeys(id=6),
    wire.UploadPrekeys(id=6, one_time_prekeys=KEYS.prekeys(3), signed_prekey=KEYS.signed_prekey()),
    wire.UploadPrekeys(
        id=6,
        one_time_prekeys=KEYS.prekeys(1),
        kem_prekeys=KEYS.kem_prekeys(2),
        signed_prekey=KEYS.signed_prekey(),
        last_resort_kem_prekey=KEYS.kem_prekeys(1)[0],
        delivery_token=b"t" * 32,
    ),
    wire.FetchBundle(id=7, account="bob"),
    wire.FetchBundle(id=7, account="bob", delivery_token=b"t" * 32),
    wire.FetchBundle(id=7, account="bob", delivery_token=b"t" * 32, key_log=True),
    wire.AuthChallenge(id=8, account="alice", device=2),
    wire.Authenticate(id=9, nonce=b"n" * 32, signature=b"s" * 64),
    wire.Send(id=10, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"x"), wire.OutgoingEnvelope(2, b"", 77))),
    wire.Send(id=10, to="bob", envelopes=(wire.OutgoingEnvelope(3, b"y", 78),)),
    wire.SealedSend(
        id=11, to="bob", delivery_token=b"t" * 32, envelopes=(wire.OutgoingEnvelope(3, b"y", 78),)
    ),
    wire.SealedSend(id=11, to="bob", delivery_token=b"t" * 32, envelopes=(wire.OutgoingEnvelope(1, b"x"),)),
    wire.GetSenderCertificate(id=12),
    wire.Receive(id=13),
    wire.Receive(id=13, limit=5),
    wire.Ack(id=14, envelope_ids=(b"E" * 16,)),
    wire.Ping(id=2**64 - 1),
    wire.DiscoverContacts(id=15, contacts=("bob", "carol")),
    wire.DiscoverContacts(id=15, contacts=()),
    wire.Block(id=16, account="mallory"),
    wire.Unblock(id=17, account="mallory"),
    wire.CreateGroup(id=18, group=b"G" * 16, members=("bob", "carol")),
    wire.CreateGroup(id=18, group=b"G" * 16),
    wire.ChangeGroup(id=19, group=b"G" * 16, add=("dave",), remove=("bob",), admins=("carol",)),
    wire.GetGroup(id=20, group=b"G" * 16),
    wire.GroupSend(id=21, group=b"G" * 16, epoch=3, body=b"sender key message"),
    wire.PutGroupState(id=22, group=b"G" * 16, version=0, state=b"opaque"),
    wire.PutGroupState(
        id=22, group=b"G" * 16, version=0, state=b"o", write_key=b"k" * 32, signature=b"s" * 64
    ),
    wire.PutGroupState(id=22, group=b"G" * 16, version=9, state=b"", signature=b"s" * 64),
    wire.PutGroupState(
        id=22,
        group=b"G" * 16,
        version=1,
        state=b"o",
        write_key=b"k" * 32,
        signature=b"s" * 64,
        write_keys=(b"j" * 32, b"k" * 32),
    ),
    wire.GetGroupState(id=23, group=b"G" * 16),
    wire.GetGroupState(id=23, group=b"G" * 16, write_keys=True),
    wire.Registered(id=5, account="alice", device=1),
    wire.PrekeysUploaded(id=6, one_time_prekeys=3, kem_prekeys=0),
    wire.Bundle(id=7, account="bob", devices=()),
    wire.Challenge(id=8, nonce=b"n" * 32, expires_in_ms=30_000),
    wire.Authenticated(id=9, account="alice", device=2),
    wire.Sent(id=10, envelope_ids=(b"E" * 16, b"F" * 16)),
    wire.SenderCertificateResponse(id=12, certificate=b"cert"),
    wire.Envelopes(id=13, envelopes=(ENVELOPE,), more=True),
    wire.Acked(id=14, count=1),
    wire.Pong(id=2**64 - 1),
    wire.ContactsFound(id=15, registered=("bob",)),
    wire.Blocked(id=16),
    wire.Unblocked(id=17),
    wire.GroupUpdated(id=18, group=b"G" * 16, epoch=0),
    wire.GroupInfo(id=20, group=b"G" * 16, epoch=3, members=(wire.GroupMember("alice", True),)),
    wire.GroupSent(id=21, envelope_ids=(b"E" * 16,)),
    wire.GroupSent(id=21, envelope_ids=()),
    wire.GroupStateStored(id=22, group=b"G" * 16, version=0),
    wire.GroupState(id=23, group=b"G" * 16, version=0, state=b"opaque"),
    wire.Deliver(id=0, envelope=wire.Envelope(id=b"E" * 16, body=b"", timestamp=0, sealed=True)),
    wire.ErrorFrame(id=3, code="stale_devices", message="m", field="envelopes", missing=(1,), extra=(3,)),
    wire.GetKeyLogHead(id=18),
    wire.GetKeyLogConsistency(id=19, first=3, second=7),
    wire.GetKeyLogEntries(id=20, start=0, end=9),
    wire.KeyLogHeadResponse(
        id=18,
        head=wire.KeyLogHead(tree_size=7, timestamp=1, root_hash=b"r" * 32, signature=b"s" * 64),
        server_certificate=b"cert",
    ),
    wire.KeyLogConsistency(id=19, first=3, second=7, proof=(b"p" * 32, b"q" * 32)),
    wire.KeyLogEntries(id=20, start=0, entries=(wire.kt_leaf("bob", 1, b"k" * 32),)),
]


def _decoder_for(frame: wire.Frame) -> wire.FrameDecoder:
    return wire.FrameDecoder("relay" if isinstance(frame, wire.Request) else "device")


def test_every_kind_has_an_example() -> None:
    kinds = {f.kind for f in EXAMPLES}
    assert kinds == set(wire.REQUEST_KINDS) | set(wire.RESPONSE_KINDS)


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: f.kind)
def test_round_trip_one_byte_at_a_time(frame: wire.Frame) -> None:
    data = wire.encode(frame)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    decoder = _decoder_for(frame)
    for i in range(len(data) - 1):
        decoder.receive_data(data[i : i + 1])
        assert decoder.next_frame() is wire.NEED_DATA
    decoder.receive_data(data[-1:])
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is wire.NEED_DATA
    decoder.receive_data(b"")
    assert decoder.next_frame() is wire.CLOSED


def test_wire_map_carries_version_id_and_kind_and_omits_unset_options() -> None:
    body = msgpack.unpackb(wire.encode(wire.Receive(id=42))[4:])
    assert body == {"v": 1, "id": 42, "kind": "receive"}


@given(st.lists(st.sampled_from(EXAMPLES), min_size=1, max_size=8), st.data())
def test_many_frames_in_arbitrary_chunks(frames: list[wire.Frame], data: st.DataObject) -> None:
    frames = [f for f in frames if isinstance(f, wire.Request)] or [wire.Ping(id=1)]
    stream = b"".join(wire.encode(f) for f in frames)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    decoder = wire.FrameDecoder()
    got: list[wire.Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if b > a:
            decoder.receive_data(stream[a:b])
        while (frame := decoder.next_frame()) is not wire.NEED_DATA:
            assert frame is not wire.CLOSED
            got.append(frame)
    assert got == frames


# --- errors, one per code --------------------------------------------------------------------


def _frame(body: object, raw: bool = False) -> bytes:
    data = body if raw else msgpack.packb(body, use_bin_type=True)
    assert isinstance(data, bytes)
    return struct.pack(">I", len(data)) + data


def _decoding_error(
    data: bytes, role: str = "relay", max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE
) -> wire.ProtocolError:
    decoder = wire.FrameDecoder(role, max_frame_size=max_frame_size)  # type: ignore[arg-type]
    decoder.receive_data(data)
    with pytest.raises(wire.RemoteProtocolError) as info:
        decoder.next_frame()
    if info.value.code in wire.RESUMABLE_CODES:
        # A frame read whole with only an unknown key or kind: the decoder reads on, from the
        # next frame (here none yet).
        assert decoder.next_frame() is wire.NEED_DATA
        decoder.receive_data(wire.encode(wire.Ping(id=7)))
        assert decoder.next_frame() == wire.Ping(id=7)
        return info.value
    # A decoder that failed otherwise stays failed, with the same error.
    with pytest.raises(wire.RemoteProtocolError) as again:
        decoder.next_frame()
    assert again.value is info.value
    return info.value


def test_too_large_is_detected_from_the_prefix_alone() -> None:
    err = _decoding_error(struct.pack(">I", wire.DEFAULT_MAX_FRAME_SIZE + 1))
    assert (err.code, err.field) == (wire.ErrorCode.FRAME_TOO_LARGE, "length")
    assert str(wire.DEFAULT_MAX_FRAME_SIZE) in err.message


def test_maximum_is_configurable_and_inclusive() -> None:
    ping = wire.encode(wire.Ping(id=1))
    size = len(ping) - 4
    decoder = wire.FrameDecoder(max_frame_size=size)
    decoder.receive_data(ping)
    assert decoder.next_frame() == wire.Ping(id=1)
    assert _decoding_error(ping, max_frame_size=size - 1).code == wire.ErrorCode.FRAME_TOO_LARGE


BASE = {"v": 1, "id": 9, "kind": "ping"}


@pytest.mark.parametrize(
    ("body", "code", "field", "words"),
    [
        (b"\xc1", wire.ErrorCode.MALFORMED_MSGPACK, None, "msgpack"),  # 0xc1 is never used
        (b"", wire.ErrorCode.MALFORMED_MSGPACK, "length", "empty (length 0)"),
        (b"\x91" * 5000 + b"\xc0", wire.ErrorCode.MALFORMED_MSGPACK, None, "nested deeper than 1,024"),
        (msgpack.packb(BASE) + b"\x00", wire.ErrorCode.MALFORMED_MSGPACK, None, "msgpack"),  # trailing data
        (msgpack.packb([1, 2]), wire.ErrorCode.NOT_A_MAP, None, "array"),
        (msgpack.packb({"id": 1, "kind": "ping"}), wire.ErrorCode.MISSING_FIELD, "v", "v is missing"),
        (msgpack.packb({"v": 1, "kind": "ping"}), wire.ErrorCode.MISSING_FIELD, "id", "id is missing"),
        (msgpack.packb({"v": 1, "id": 1}), wire.ErrorCode.MISSING_FIELD, "kind", "kind is missing"),
        (msgpack.packb({**BASE, "v": 2}), wire.ErrorCode.UNSUPPORTED_VERSION, "v", "got 2"),
        (msgpack.packb({**BASE, "v": "1"}), wire.ErrorCode.WRONG_TYPE, "v", "str"),
        (msgpack.packb({**BASE, "id": -1}), wire.ErrorCode.INVALID_VALUE, "id", "-1"),
        (msgpack.packb({**BASE, "id": True}), wire.ErrorCode.WRONG_TYPE, "id", "bool"),
        (msgpack.packb({**BASE, "kind": 7}), wire.ErrorCode.WRONG_TYPE, "kind", "int"),
        (msgpack.packb({**BASE, "kind": "launch"}), wire.ErrorCode.UNKNOWN_KIND, "kind", "'launch'"),
        (msgpack.packb({**BASE, "kind": "pong"}), wire.ErrorCode.UNKNOWN_KIND, "kind", "'pong'"),  # wrong way
        (msgpack.packb({**BASE, "extra": 1}), wire.ErrorCode.UNKNOWN_FIELD, "extra", "'extra'"),
        (
            msgpack.packb({**BASE, 5: 1}),
            wire.ErrorCode.WRONG_TYPE,
            "5",
            "must be strings; got the int key 5",
        ),
        # a key named twice: refused, not read as its last value (a reader keeping the first would differ)
        (
            b"\x84\xa1v\x02\xa2id\x01\xa4kind\xa4ping\xa1v\x01",
            wire.ErrorCode.INVALID_VALUE,
            "v",
            "'v' more than once",
        ),
        (
            b"\xde\x00\x04\xa1v\x01\xa2id\x01\xa4kind\xa4ping\xa4kind\xa4ping",
            wire.ErrorCode.INVALID_VALUE,
            "kind",
            "once",
        ),
        (
            msgpack.packb({"v": 1, "id": 9, "kind": "auth_challenge", "account": "a"}),
            wire.ErrorCode.MISSING_FIELD,
            "device",
            "device is missing",
        ),
        (
            msgpack.packb({"v": 1, "id": 9, "kind": "auth_challenge", "account": b"a", "device": 1}),
            wire.ErrorCode.WRONG_TYPE,
            "account",
            "bin",
        ),
        (
            msgpack.packb({"v": 1, "id": 9, "kind": "auth_challenge", "account": "a", "device": 0}),
            wire.ErrorCode.INVALID_VALUE,
            "device",
            "got 0",
        ),
        (
            msgpack.packb({"v": 1, "id": 9, "kind": "receive", "limit": 1.5}),
            wire.ErrorCode.WRONG_TYPE,
            "limit",
            "float",
        ),
    ],
)
def test_each_error_has_a_code_and_names_the_field(
    body: bytes, code: wire.ErrorCode, field: str | None, words: str
) -> None:
    err = _decoding_error(_frame(body, raw=True))
    assert err.code == code
    assert err.field == field
    assert words in err.message
    if field is not None:
        assert field in err.message or field.strip("[]") in err.message


LONG = "k" * 5000  # a key as long as a frame allows; an error frame holds 4,096 characters


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({**BASE, LONG: 1}, wire.ErrorCode.UNKNOWN_FIELD, repr("k" * 57) + "… (5,000 characters)"),
        ({**BASE, LONG.encode(): 1}, wire.ErrorCode.WRONG_TYPE, repr(b"k" * 57) + "… (5,000 bytes)"),
        (
            {
                "v": 1,
                "id": 9,
                "kind": "send",
                "to": "bob",
                "envelopes": [{"device": 1, "body": b"", LONG: 1}],
            },
            wire.ErrorCode.UNKNOWN_FIELD,
            "envelopes[0]." + repr("k" * 57) + "… (5,000 characters)",
        ),
    ],
)
def test_an_error_about_a_key_too_long_to_quote_whole_still_fits_an_error_frame(
    body: dict[object, object], code: wire.ErrorCode, field: str
) -> None:
    """A 5,000-character key made an error whose message (and field) an error frame cannot hold: the
    relay's answer could not be built, and the exception took the server down with it. The message
    shows the key's first 60 characters, and so does the field (it was the key whole, cut at 4,096)."""
    e = _decoding_error(_frame(body))
    assert e.code == code
    assert e.field == field
    frame = wire.ErrorFrame.from_exception(e)
    assert frame.field == field
    assert len(frame.message) < 200 and "k" * 55 in frame.message
    assert wire.decode_body(wire.encode(frame)[4:], wire.RESPONSE_KINDS) == frame


SEND = {"v": 1, "id": 9, "kind": "send", "to": "bob"}


def _send_with_key(key: bytes) -> bytes:
    """A send whose one envelope has the key ``key`` (msgpack, any type) beside its device and body."""
    p = functools.partial(msgpack.packb, use_bin_type=True)
    envelope = b"\x83" + p("device") + p(1) + p("body") + p(b"") + key + p(1)
    head = b"".join(p(x) for x in ("v", 1, "id", 9, "kind", "send", "to", "bob", "envelopes"))
    return _frame(b"\x85" + head + b"\x91" + envelope, raw=True)


@pytest.mark.parametrize(
    ("key", "got"),
    [
        (msgpack.packb(b"k" * 5000), "the bin key " + repr(b"k" * 57) + "…, 5,000 bytes"),
        (b"\x81" + msgpack.packb("k" * 100) + b"\x01", "the map key {" + repr("k" * 57) + "…, 82 characters"),
        (b"\x91" + msgpack.packb("k" * 100), "the array key [" + repr("k" * 57) + "…, 79 characters"),
    ],
    ids=["bin", "map", "array"],
)
def test_a_long_key_that_is_no_string_inside_a_map_is_refused_in_one_clause_naming_the_kind(
    key: bytes, got: str
) -> None:
    """A key that is no string, too long to quote whole, in a map inside a frame ended its refusal
    "b'kkk…'… (5,000 bytes) (in a 'send' frame)": two parentheses in a row. Its length and the frame's
    kind are one clause now, the kind named as every refusal names it ("in a 'send' frame")."""
    e = _decoding_error(_send_with_key(key))
    assert e.code == wire.ErrorCode.WRONG_TYPE and e.field is not None and e.field.startswith("envelopes[0].")
    assert e.message == f"the keys of envelopes[0] must be strings; got {got}, in a 'send' frame", e.message
    assert ") (" not in e.message


@pytest.mark.parametrize(
    ("body", "code", "field", "quoted"),
    [
        # a key that is no string, at the frame's own level: its field was None (nothing named)
        ({**BASE, 5: 1}, wire.ErrorCode.WRONG_TYPE, "5", "5"),
        ({**BASE, b"x": 1}, wire.ErrorCode.WRONG_TYPE, "b'x'", "b'x'"),
        ({**BASE, None: 1}, wire.ErrorCode.WRONG_TYPE, "nil", "the key nil"),  # (msgpack's nil: never None)
        ({**BASE, 1.5: 1}, wire.ErrorCode.WRONG_TYPE, "1.5", "1.5"),
        # ... and in a map inside the frame: named by the map and the key, as any other field
        (
            {**SEND, "envelopes": [{"device": 1, "body": b"", 5: 1}]},
            wire.ErrorCode.WRONG_TYPE,
            "envelopes[0].5",
            "5",
        ),
        # an empty key: its field was "", which names nothing (and inside a map, the map alone)
        ({**BASE, "": 1}, wire.ErrorCode.UNKNOWN_FIELD, "''", "''"),
        (
            {**SEND, "envelopes": [{"device": 1, "body": b"", "": 1}]},
            wire.ErrorCode.UNKNOWN_FIELD,
            "envelopes[0].''",
            "''",
        ),
        # a key of control characters or blanks, or one a path would misread: quoted, its escapes shown
        ({**BASE, "a\nb": 1}, wire.ErrorCode.UNKNOWN_FIELD, "'a\\nb'", "'a\\nb'"),
        ({**BASE, " ": 1}, wire.ErrorCode.UNKNOWN_FIELD, "' '", "' '"),
        ({**BASE, "a.b": 1}, wire.ErrorCode.UNKNOWN_FIELD, "'a.b'", "'a.b'"),
        ({**BASE, "[0]": 1}, wire.ErrorCode.UNKNOWN_FIELD, "'[0]'", "'[0]'"),
        # a key that reads as a name: itself
        ({**BASE, "extra": 1}, wire.ErrorCode.UNKNOWN_FIELD, "extra", "'extra'"),
        ({**BASE, "k" * 58: 1}, wire.ErrorCode.UNKNOWN_FIELD, "k" * 58, repr("k" * 58)),
        (
            {**BASE, "k" * 59: 1},
            wire.ErrorCode.UNKNOWN_FIELD,
            repr("k" * 57) + "… (59 characters)",
            repr("k" * 57) + "… (59 characters)",
        ),
        # a longer one by its quote, as the message quotes it: its field was the key itself, cut at 4,096
        # characters (neither the key nor its quote)
        (
            {**BASE, "k" * 5000: 1},
            wire.ErrorCode.UNKNOWN_FIELD,
            repr("k" * 57) + "… (5,000 characters)",
            repr("k" * 57) + "… (5,000 characters)",
        ),
        (
            {**SEND, "envelopes": [{"device": 1, "body": b"", "k" * 61: 1}]},
            wire.ErrorCode.UNKNOWN_FIELD,
            "envelopes[0]." + repr("k" * 57) + "… (61 characters)",
            repr("k" * 57) + "… (61 characters)",
        ),
    ],
)
def test_every_key_an_error_is_about_is_named_in_its_field(
    body: dict[object, object], code: wire.ErrorCode, field: str, quoted: str
) -> None:
    """The field of an error about a key is never None nor "" (a client can tell nothing from either),
    and a key no field name could show (control characters, blanks, "." or "[") is shown quoted."""
    e = _decoding_error(_frame(body))
    assert (e.code, e.field) == (code, field)
    assert quoted in e.message
    assert e.message.isprintable()


def test_a_long_key_or_kind_is_quoted_by_one_rule_its_quote_closed_and_its_length_said() -> None:
    """A key was quoted by the first 60 characters of its repr and "…", the closing quote lost; a kind by
    its first 40. Now both by ``_quoted``: a well-formed quote of the first characters, "…" and the
    length, at most MAX_QUOTED characters of quote."""
    key = _decoding_error(_frame({**BASE, "k" * 300: 1}))
    kind = _decoding_error(_frame({**BASE, "kind": "k" * 300}))
    quote = repr("k" * (wire.MAX_QUOTED - 3)) + "… (300 characters)"
    assert f"unknown field {quote} in a 'ping' frame" in key.message
    assert f"unknown kind {quote};" in kind.message
    # escapes take more room than the characters: the quote is cut before one, never inside it
    escaped = _decoding_error(_frame({**BASE, "\x00" * 100: 1}))
    shown = repr("\x00" * ((wire.MAX_QUOTED - 2) // 4))  # 14 escapes of 4 characters, and the quotes
    assert f"unknown field {shown}… (100 characters) in" in escaped.message
    binary = _decoding_error(_frame({**BASE, b"\xff" * 100: 1}))
    assert binary.message.endswith(
        repr(b"\xff" * ((wire.MAX_QUOTED - 3) // 4)) + "…, 100 bytes, in a 'ping' frame"
    )  # (a key that is no string, its length and the frame's kind in one clause)
    assert binary.field == repr(b"\xff" * ((wire.MAX_QUOTED - 3) // 4)) + "… (100 bytes)"


@pytest.mark.parametrize(
    "body",
    [
        {**BASE, "\U0001f600" * 4096: 1},  # 4 bytes a character: a field of 4,096 of them was 16 KiB
        {**BASE, "\U0001f600" * 60_000: 1},
        {**SEND, "envelopes": [{"device": 1, "body": b"", "\U0001f600" * 4096: 1}]},
        {**BASE, "kind": "\U0001f600" * 4096},
        {**BASE, "\x00" * 4096: 1},
    ],
    ids=["key", "longest-key", "nested-key", "kind", "escapes"],
)
def test_the_answer_to_a_frame_the_relay_refuses_and_reads_past_fits_what_it_reserves(
    body: dict[object, object],
) -> None:
    """A frame refused unknown_field or unknown_kind is answered and the connection read on: the relay
    reads a request only while the answer it reserves for it (relay.server._SMALL_ANSWER, 4 KiB) fits
    the connection's unsent bound. The answer to a long key named it whole in its field (cut at 4,096
    characters: 16,730 bytes of error frame for 4,096 characters of 4 bytes)."""
    e = _decoding_error(_frame(body))
    assert e.code in wire.RESUMABLE_CODES
    assert len(wire.encode(wire.ErrorFrame.from_exception(e))) <= server._SMALL_ANSWER


def _twice(path_key: str) -> bytes:
    """A send whose one envelope names ``path_key`` twice (a dict cannot: packed by hand)."""
    inner = b"\x84" + b"".join(
        msgpack.packb(k) + msgpack.packb(v)
        for k, v in (("device", 1), ("body", b""), (path_key, 1), (path_key, 2))
    )
    head = msgpack.packb({"v": 1, "id": 9, "kind": "send", "to": "bob"})
    body = bytes([head[0] + 1]) + head[1:] + msgpack.packb("envelopes") + b"\x91" + inner
    return _frame(body, raw=True)


def test_a_path_through_a_peers_keys_shows_no_control_character() -> None:
    """A key named twice inside a map was named by a path of its raw key: a newline a peer put in a key
    reached the error's message (and so the relay's log line) as a newline."""
    e = _decoding_error(_twice("x\nINFO forged line"))
    assert e.code == wire.ErrorCode.INVALID_VALUE
    assert e.field == "envelopes[0].'x\\nINFO forged line'"
    assert "\n" not in e.message and e.message.isprintable()


def test_for_log_escapes_what_is_not_printable_and_cuts() -> None:
    assert wire.for_log("a\nb\r\x1b[31m") == "a\\nb\\r\\x1b[31m"
    assert wire.for_log("plain") == "plain"
    long = wire.for_log("x" * 10_000)
    assert long == "x" * wire.MAX_LOGGED + "… (10,000 characters)"


def test_cut_and_for_log_show_a_str_not_utf8_by_its_bytes() -> None:
    """A str that is not UTF-8, read with surrogateescape (msgpack's, an argv word's), is shown by
    wire.quoted by its bytes, b'\\xff' (relay17); wire.cut and wire.for_log showed it by the surrogates
    Python reads its bytes as, '\\udcff', which no one sent. Now by its bytes' escapes, as quoted's bin is;
    a surrogate no byte stands for (no reading makes one) by its own escape."""
    not_utf8 = b"a\xffb\x80".decode("utf-8", "surrogateescape")
    assert wire.quoted(not_utf8) == "b'a\\xffb\\x80'"
    assert wire.cut(not_utf8) == "a\\xffb\\x80"
    assert wire.for_log(f"the option {not_utf8}\n") == "the option a\\xffb\\x80\\n"
    assert wire.cut("\ud800") == wire.for_log("\ud800") == "\\ud800"
    long = wire.cut(not_utf8 * 30)
    assert long == ("a\\xffb\\x80" * 6)[: wire.MAX_QUOTED] + "… (300 characters)", long
    assert "\\udc" not in long and "\\udc" not in wire.for_log(not_utf8 * 300)
    assert wire.cut("plain") == "plain" and wire.cut("\u00ff\x80") == "\u00ff\x80"  # (no surrogate: as given)


@pytest.mark.parametrize(
    "unit",
    ["\x1b", "\n", "\u2028", "\U000e0001", b"\xff".decode("utf-8", "surrogateescape"), "\ud800", "\x85"],
    ids=["esc", "newline", "line-separator", "tag", "byte-not-utf8", "lone-surrogate", "c1-control"],
)
@pytest.mark.parametrize("before", range(1, 10))
def test_for_log_and_cut_cut_between_escapes_never_inside_one(unit: str, before: int) -> None:
    """for_log and cut cut after escaping, at a count of characters alone: an escape reaching past the cut
    was split, ``\\x1`` then "…", the escape of no character (a log line that says neither what was sent
    nor that it was cut there). Now each cuts before an escape that would not fit whole; what it shows is
    a head of the whole text as shown, escapes whole."""
    text = "x" * (wire.MAX_LOGGED - before) + unit + "y" * 20
    whole = wire.for_log(text, most=10_000)
    shown = wire.for_log(text)
    head, _, rest = shown.partition("… (")
    assert rest == f"{len(whole):,} characters)", shown
    assert whole.startswith(head) and len(head) <= wire.MAX_LOGGED, shown
    escape = whole[wire.MAX_LOGGED - before :].removesuffix("y" * 20)
    kept = "x" * (wire.MAX_LOGGED - before)
    assert head == kept or head.startswith(kept + escape), (head[-12:], escape)
    # cut: the same for a str with a byte not UTF-8 (its escape its own), and for a repr's escapes
    for value in (
        "x" * (wire.MAX_QUOTED - before) + b"\xff".decode("utf-8", "surrogateescape") + "y" * 20,
        repr(["x" * (wire.MAX_QUOTED - before - 3) + unit + "y" * 20]),
    ):
        full = wire._bytes_escaped(value)
        got = wire.cut(value)
        cut_head = got.partition("… (")[0]
        assert full.startswith(cut_head) and len(cut_head) <= wire.MAX_QUOTED, got
        assert not re.search(r"(?<!\\)\\(x.?|u.{0,3}|U.{0,7})$", cut_head), got  # (no escape cut short)


def test_for_log_tells_a_byte_not_utf8_from_a_control_character() -> None:
    """for_log showed a byte that is not UTF-8 (0x85, read with surrogateescape) by its escape, \\x85, and
    the control character U+0085 (NEL) by its repr's, \\x85 too: two things a peer may send, one log
    line. Now a character from U+0080 up that is not printable is shown by its code point, \\u0085, and
    a \\x escape of 80 to ff is always a byte (docs/protocol.md, "Errors")."""
    byte = b"\x85".decode("utf-8", "surrogateescape")
    assert wire.for_log(byte) == "\\x85"
    assert wire.for_log("\x85") == "\\u0085"
    assert wire.for_log("\xa0\xad\x9f") == "\\u00a0\\u00ad\\u009f"
    assert (
        wire.for_log("\x1b\x7f\u2028") == "\\x1b\\x7f\\u2028"
    )  # (below 0x80 a character; above 0xff as repr)
    shown = {wire.for_log(chr(c)) for c in range(0x80, 0x100)} | {
        wire.for_log(bytes([b]).decode("utf-8", "surrogateescape")) for b in range(0x80, 0x100)
    }
    assert len(shown) == 256  # (each of 128 characters and 128 bytes its own)


def test_for_log_escapes_a_peer_s_own_backslash() -> None:
    """for_log left a backslash as it was: a peer's text "\\x85" (a backslash, then "x85") was logged
    \\x85, the escape for_log writes for the byte 0x85, which the peer never sent. A backslash is shown
    escaped now, so each backslash of a log line begins an escape for_log wrote."""
    sent = "\\x85"
    assert len(sent) == 4 and sent[0] == "\\"
    assert wire.for_log(sent) == "\\\\x85"
    assert wire.for_log("\x85") == "\\u0085"
    byte = b"\x85".decode("utf-8", "surrogateescape")
    assert len({wire.for_log(sent), wire.for_log("\x85"), wire.for_log(byte)}) == 3
    assert wire.for_log("a\\nb\n") == "a\\\\nb\\n"  # (a backslash then "n", and a newline: two things)
    assert wire.for_log("C:\\x") == "C:\\\\x"  # (printable but for the backslash: escaped all the same)
    long = wire.for_log("\\" * 600)  # (cut between escapes: an escaped backslash is one)
    assert long == "\\\\" * (wire.MAX_LOGGED // 2) + "… (1,200 characters)"


def test_nested_errors_name_the_path() -> None:
    good = wire.encode(KEYS.register(4))
    body = msgpack.unpackb(good[4:])
    body["kem_prekeys"][1]["public"] = b"short"
    err = _decoding_error(_frame(body))
    assert (err.code, err.field) == (wire.ErrorCode.INVALID_VALUE, "kem_prekeys[1].public")
    assert "1568 bytes, got 5" in err.message
    assert err.request_id == 4  # the error can be matched to the request
    body = msgpack.unpackb(good[4:])
    del body["signed_prekey"]["signature"]
    err = _decoding_error(_frame(body))
    assert (err.code, err.field) == (wire.ErrorCode.MISSING_FIELD, "signed_prekey.signature")
    body = msgpack.unpackb(good[4:])
    body["one_time_prekeys"] = {"id": 1}
    assert _decoding_error(_frame(body)).field == "one_time_prekeys"


def _bad_utf8(packed: bytes, text: str) -> bytes:
    """``packed`` with the str ``text`` (ASCII, in it once) made invalid UTF-8, its length kept."""
    assert packed.count(text.encode()) == 1
    return packed.replace(text.encode(), b"\xff" * len(text))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            _bad_utf8(
                msgpack.packb({"v": 1, "id": 9, "kind": "auth_challenge", "account": "zz", "device": 1}), "zz"
            ),
            "account",
            "account is a msgpack str that is not valid UTF-8",
        ),
        (_bad_utf8(msgpack.packb({**BASE, "kind": "zz"}), "zz"), "kind", "kind is a msgpack str"),
        (
            _bad_utf8(
                msgpack.packb({"v": 1, "id": 9, "kind": "discover_contacts", "contacts": ["a", "zz"]}), "zz"
            ),
            "contacts[1]",
            "contacts[1] is a msgpack str",
        ),
        (
            _bad_utf8(
                msgpack.packb({"v": 1, "id": 9, "kind": "send", "to": "b", "envelopes": [{"zz": 1}]}), "zz"
            ),
            "envelopes[0].b'\\xff\\xff'",
            "the key b'\\xff\\xff' of envelopes[0] is a msgpack str",
        ),
        # a key was named by its map alone, and at the frame's own level not at all (field None)
        (
            _bad_utf8(msgpack.packb({**BASE, "zz": 1}), "zz"),
            "b'\\xff\\xff'",
            "the key b'\\xff\\xff' of the frame is a msgpack str",
        ),
    ],
    ids=["field", "kind", "in-a-list", "key-in-a-map", "key-of-the-frame"],
)
def test_a_str_that_is_not_utf8_is_refused_naming_where_it_is(
    body: bytes, field: str | None, words: str
) -> None:
    # msgpack's own error says only "'utf-8' codec can't decode byte 0xff in position 0"
    err = _decoding_error(_frame(body, raw=True))
    assert (err.code, err.field) == (wire.ErrorCode.MALFORMED_MSGPACK, field)
    assert words in err.message, err.message


def _map(*pairs: tuple[object, bytes]) -> bytes:
    """A msgpack map of (key, packed value) pairs as given, a key named twice kept twice (which
    msgpack.packb cannot write)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + v for k, v in pairs)


def _array(*packed: bytes) -> bytes:
    assert len(packed) < 16
    return bytes([0x90 | len(packed)]) + b"".join(packed)


def _send_body(second: bytes, packed_id: bytes = msgpack.packb(9)) -> bytes:
    """A send frame's body whose second envelope is the packed map ``second``."""
    first = msgpack.packb({"device": 1, "body": b"c1"})
    p = msgpack.packb
    return _map(
        ("v", p(1)),
        ("id", packed_id),
        ("kind", p("send")),
        ("to", p("bob")),
        ("envelopes", _array(first, second)),
    )


@pytest.mark.parametrize(
    ("second", "field"),
    [
        # one envelope naming its device twice: which device would the relay store it for?
        (
            _map(("device", b"\x02"), ("body", msgpack.packb(b"c2")), ("device", b"\x03")),
            "envelopes[1].device",
        ),
        (
            _map(("device", b"\x02"), ("body", msgpack.packb(b"c2")), ("body", msgpack.packb(b"c3"))),
            "envelopes[1].body",
        ),
    ],
    ids=["device", "body"],
)
def test_a_key_named_twice_inside_a_nested_map_is_refused_by_its_path(second: bytes, field: str) -> None:
    err = _decoding_error(_frame(_send_body(second), raw=True))
    assert (err.code, err.field) == (wire.ErrorCode.INVALID_VALUE, field)
    assert "more than once" in err.message and field in err.message
    assert err.message.endswith("(in a 'send' frame)"), err.message  # (the kind, as unknown_field names it)


@pytest.mark.parametrize(
    ("pairs", "message", "field"),
    [
        (
            (("zzz", _map(("a", msgpack.packb(1)), ("a", msgpack.packb(2)))),),
            "frame body names the key 'a' more than once (at zzz.a); each key once (in a 'ping' frame)",
            "zzz.a",
        ),
        (
            (("id", msgpack.packb(5)),),
            "frame body names the key 'id' more than once; each key once (in a 'ping' frame)",
            "id",
        ),
        (
            (("kind", msgpack.packb("ping")),),  # (two kinds: no one kind to name)
            "frame body names the key 'kind' more than once; each key once",
            "kind",
        ),
        (
            ((1, msgpack.packb(0)), (True, msgpack.packb(0))),
            "the keys of the frame must be strings; got the int key 1 and the bool key true, which a map "
            "reader holds as one (in a 'ping' frame)",
            "1",
        ),
    ],
    ids=["nested", "top", "kind-twice", "held-as-one"],
)
def test_a_key_named_twice_is_refused_naming_the_frame_s_kind_the_field_and_the_id(
    pairs: tuple[tuple[object, bytes], ...], message: str, field: str
) -> None:
    """An independent check's rule: every refusal names the frame's kind, the field by its path and the
    request's id. The refusal of a key named twice named the field and the id, not the kind (which
    unknown_field's names: "(in a 'send' frame)"); now it does, when the body names one kind."""
    p = msgpack.packb
    body = _map(("v", p(1)), ("id", p(5)), ("kind", p("ping")), *pairs)
    err = _decoding_error(_frame(body, raw=True))
    assert (err.message, err.field) == (message, field), err
    assert err.request_id == (0 if field == "id" else 5), err  # (an id named twice is no one id)


@pytest.mark.parametrize(
    ("keys", "field"),
    [((1, True), "1"), ((1, 1.0), "1"), ((0, False, 0.0), "0")],
    ids=["int-bool", "int-float", "int-bool-float"],
)
@pytest.mark.parametrize("nested", [False, True], ids=["frame", "envelope"])
def test_keys_equal_in_python_but_of_other_msgpack_types_are_not_one_key_named_twice(
    keys: tuple[object, ...], field: str, nested: bool
) -> None:
    """1, 1.0 and true are three msgpack keys (Python holds them as one: 1 == 1.0 == True). A map of
    them was refused "names the key True more than once" (invalid_value), which it does not: it is
    refused as any key that is no string, naming the key (wrong_type)."""
    p = msgpack.packb
    extra = tuple((k, p(0)) for k in keys)
    if nested:
        body = _send_body(_map(("device", p(2)), ("body", p(b"c2")), *extra))
        field = f"envelopes[1].{field}"
    else:
        body = _map(("v", p(1)), ("id", p(9)), ("kind", p("ping")), *extra)
    err = _decoding_error(_frame(body, raw=True))
    assert (err.code, err.field) == (wire.ErrorCode.WRONG_TYPE, field), err
    assert "must be strings" in err.message and "more than once" not in err.message


def test_a_prekey_naming_its_id_twice_is_refused() -> None:
    body = msgpack.unpackb(wire.encode(KEYS.register(4, one_time=3))[4:])
    prekeys = [msgpack.packb(k) for k in body["one_time_prekeys"]]
    third = body["one_time_prekeys"][2]
    prekeys[2] = _map(
        *((k, msgpack.packb(v)) for k, v in third.items()), ("id", msgpack.packb(third["id"] + 1))
    )
    pairs = [(k, msgpack.packb(v)) for k, v in body.items() if k != "one_time_prekeys"]
    raw = _map(*pairs, ("one_time_prekeys", b"\xdc" + len(prekeys).to_bytes(2, "big") + b"".join(prekeys)))
    err = _decoding_error(_frame(raw, raw=True))
    assert (err.code, err.field) == (wire.ErrorCode.INVALID_VALUE, "one_time_prekeys[2].id")


@pytest.mark.parametrize("depth", [10, 1020])
def test_the_nested_key_check_reads_nesting_as_deep_as_msgpack_does(depth: int) -> None:
    """A body read again map by map (here for a uint32 deep inside) is walked without recursion:
    about 1,020 arrays deep, which msgpack unpacks, used to end in RecursionError in the relay; and
    msgpack 1.0.5 (the lowest declared) will not pack it again ("recursion limit exceeded" past 511
    levels), which must send it to the map-by-map reading, not out of the decoder as a ValueError."""
    deep = b"\x91" * depth + b"\xce\x00\x00\x00\x01"
    p = msgpack.packb
    body = _map(("v", p(1)), ("id", p(1)), ("kind", p("send")), ("to", p("bob")), ("envelopes", deep))
    err = _decoding_error(_frame(body, raw=True))
    assert (err.code, err.field) == (wire.ErrorCode.WRONG_TYPE, "envelopes[0]")
    twice = _map(("a", p(1)), ("a", p(2)))  # and a repeat that deep is found, by its path
    body = _map(
        ("v", p(1)),
        ("id", p(1)),
        ("kind", p("send")),
        ("to", p("bob")),
        ("envelopes", b"\x91" * depth + twice),
    )
    err = _decoding_error(_frame(body, raw=True))
    if depth == 10:
        assert (err.code, err.field) == (wire.ErrorCode.INVALID_VALUE, "envelopes" + "[0]" * depth + ".a")
    else:  # its first and last steps, within MAX_PATH, and how many are left out between them
        field = "envelopes" + "[0]" * 30 + ".…(958 more)" + "[0]" * 32 + ".a"
        assert (err.code, err.field) == (wire.ErrorCode.INVALID_VALUE, field)


def test_bodies_in_another_encoder_s_longer_forms_still_decode() -> None:
    """The nested-key check packs the decoded frame again and compares; a body in longer msgpack forms
    (an id as uint32, as another client's encoder may write it) differs from that but is read
    again map by map, and accepted when no key repeats."""
    body = _send_body(msgpack.packb({"device": 2, "body": b"c2"}), packed_id=b"\xce\x00\x00\x00\x09")
    frame = wire.decode_body(body, wire.REQUEST_KINDS)
    assert isinstance(frame, wire.Send) and frame.id == 9
    assert [e.device for e in frame.envelopes] == [1, 2]


def test_truncated_frame_at_end_of_stream() -> None:
    data = wire.encode(wire.Ping(id=1))
    decoder = wire.FrameDecoder()
    decoder.receive_data(data[:-1])
    decoder.receive_data(b"")
    with pytest.raises(wire.RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == wire.ErrorCode.TRUNCATED_FRAME


def test_building_a_bad_frame_is_a_local_error() -> None:
    with pytest.raises(wire.LocalProtocolError) as info:
        wire.Authenticate(id=1, nonce=b"n" * 31, signature=b"s" * 64)
    assert (info.value.code, info.value.field) == (wire.ErrorCode.INVALID_VALUE, "nonce")
    with pytest.raises(wire.LocalProtocolError) as info:
        wire.Send(id=1, to="bob", envelopes=())
    assert info.value.field == "envelopes"
    with pytest.raises(wire.LocalProtocolError) as info:
        wire.Send(id=1, to="bob", envelopes=(wire.OutgoingEnvelope(1, b""), "nope"))  # type: ignore[arg-type]
    assert info.value.field == "envelopes[1]"
    # what the field holds, in the protocol's words (docs/protocol.md), not this side's class names ("must
    # be an OutgoingEnvelope, got str" before; "a OutgoingEnvelope" before that)
    assert str(info.value) == "envelopes[1] must be the map {device, body, registration_id?}, got str"
    for wrong, got in [
        (wire.Prekey(1, b"k" * 32), "the map {id, public}"),
        ({"device": 2, "body": b""}, "a map not built as one"),
        (None, "nil"),
        (b"x", "bin"),
    ]:
        with pytest.raises(wire.LocalProtocolError) as info:
            wire.Send(id=1, to="bob", envelopes=(wire.OutgoingEnvelope(1, b""), wrong))  # type: ignore[arg-type]
        assert (info.value.code, info.value.field) == (wire.ErrorCode.WRONG_TYPE, "envelopes[1]")
        assert (
            str(info.value) == f"envelopes[1] must be the map {{device, body, registration_id?}}, got {got}"
        )
    with pytest.raises(wire.LocalProtocolError) as info:
        wire.UploadPrekeys(id=1, signed_prekey="x")  # type: ignore[arg-type]
    assert str(info.value) == "signed_prekey must be the map {id, public, signature}, got str"
    with pytest.raises(wire.LocalProtocolError):
        wire.AuthChallenge(id=1, account="a\nb", device=1)  # control characters


class _Device(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("wrong", "got"),
    [
        (bytearray(b"x"), "bin"),
        (memoryview(b"x"), "bin"),
        (_Device.ONE, "int"),
        (1.5, "float"),
        ({1, 2}, "a value of no msgpack type"),
        (object(), "a value of no msgpack type"),
        (msgpack.Timestamp(1, 0), "timestamp (ext -1)"),
    ],
    ids=["bytearray", "memoryview", "int-enum", "float", "set", "object", "timestamp"],
)
def test_building_a_frame_names_any_value_in_the_protocol_s_words(wrong: object, got: str) -> None:
    """_Struct.check's "got X" named a value of a class its table does not list by Python's class name
    ("got bytearray", "got set", "got _Device"): this side's words, where every other is the protocol's."""
    with pytest.raises(wire.LocalProtocolError) as info:
        wire.Send(id=1, to="bob", envelopes=(wire.OutgoingEnvelope(1, b""), wrong))  # type: ignore[arg-type]
    assert (info.value.code, info.value.field) == (wire.ErrorCode.WRONG_TYPE, "envelopes[1]")
    assert str(info.value) == f"envelopes[1] must be the map {{device, body, registration_id?}}, got {got}"


def test_lists_become_tuples_so_frames_stay_hashable_values() -> None:
    frame = wire.Ack(id=1, envelope_ids=[b"E" * 16])  # type: ignore[arg-type]
    assert frame.envelope_ids == (b"E" * 16,)
    assert hash(frame) == hash(wire.Ack(id=1, envelope_ids=(b"E" * 16,)))


# --- hostile input never crashes the decoder -----------------------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)  # fmt: skip
FIELD_NAMES = sorted({"v", "id", "kind", "account", "device", "envelopes", "body", "nonce", "to", "limit"})
frame_like_maps = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 2, 0, "1", None]),
        "id": st.integers(-5, 2**64 - 1) | msgpack_values,  # 2**64 itself has no msgpack form
        "kind": st.sampled_from(sorted(wire.REQUEST_KINDS) + sorted(wire.RESPONSE_KINDS) + ["nope"]),
    },
).flatmap(
    lambda base: st.dictionaries(
        st.sampled_from(FIELD_NAMES) | st.text(max_size=8), msgpack_values, max_size=6
    ).map(lambda extra: {**extra, **base})
)


def _decode_everything(data: bytes, role: str) -> None:
    decoder = wire.FrameDecoder(role, max_frame_size=4096)  # type: ignore[arg-type]
    decoder.receive_data(data)
    decoder.receive_data(b"")
    try:
        while decoder.next_frame() is not wire.CLOSED:
            pass
    except wire.RemoteProtocolError as e:
        assert isinstance(e.code, wire.ErrorCode)
        assert e.message
        assert e.request_id >= 0
        frame = wire.ErrorFrame.from_exception(e)  # always expressible as an error frame
        assert wire.encode(frame)


@given(st.binary(max_size=300), st.sampled_from(["relay", "device"]))
def test_random_bytes_only_ever_raise_protocol_errors(data: bytes, role: str) -> None:
    _decode_everything(data, role)


@given(st.binary(max_size=300), st.sampled_from(["relay", "device"]))
def test_random_bodies_behind_a_valid_prefix(body: bytes, role: str) -> None:
    _decode_everything(_frame(body, raw=True), role)


@given(frame_like_maps, st.sampled_from(["relay", "device"]))
def test_random_maps_only_ever_raise_protocol_errors(body: dict[str, object], role: str) -> None:
    _decode_everything(_frame(body), role)


def test_a_decoder_that_ignores_unknown_fields_reads_a_newer_frame_without_them() -> None:
    """``ignore_unknown_fields`` (the device's decoder, clients.link): a frame of a known kind with keys
    its kind does not have, at any depth, is read without them, and ``ignored_fields`` names their
    paths; anything else wrong in it is refused as ever, and a decoder without it still refuses them."""
    body = msgpack.unpackb(wire.encode_body(wire.Envelopes(id=3, envelopes=(ENVELOPE, ENVELOPE), more=False)))
    body["new"] = {"deep": [1]}
    body["envelopes"][1]["later"] = 1
    body["envelopes"][1][""] = 2
    decoder = wire.FrameDecoder("device", ignore_unknown_fields=True)
    decoder.receive_data(_frame(body) + wire.encode(wire.Pong(id=4)))
    assert decoder.next_frame() == wire.Envelopes(id=3, envelopes=(ENVELOPE, ENVELOPE), more=False)
    assert decoder.ignored_fields == ("new", "envelopes[1].later", "envelopes[1].''")
    assert decoder.next_frame() == wire.Pong(id=4)
    assert decoder.ignored_fields == ()
    strict = wire.FrameDecoder("device")  # the default: refused
    strict.receive_data(_frame(body))
    with pytest.raises(wire.RemoteProtocolError) as refused:
        strict.next_frame()
    assert (refused.value.code, refused.value.field) == (wire.ErrorCode.UNKNOWN_FIELD, "new")
    for bad, code, field in [
        ({**body, 5: 1}, wire.ErrorCode.WRONG_TYPE, "5"),
        ({**body, "more": 1}, wire.ErrorCode.WRONG_TYPE, "more"),
        ({**body, "kind": "pong_v2"}, wire.ErrorCode.UNKNOWN_KIND, "kind"),
    ]:
        decoder = wire.FrameDecoder("device", ignore_unknown_fields=True)
        decoder.receive_data(_frame(bad))
        with pytest.raises(wire.RemoteProtocolError) as info:
            decoder.next_frame()
        assert (info.value.code, info.value.field) == (code, field)


PING_HEAD = b"\x84\xa1v\x01\xa2id\x05\xa4kind\xa4ping"  # a ping map of 4 keys, the 4th to come


@pytest.mark.parametrize(
    ("rest", "field", "words"),
    [
        (b"\x81\x01\x01\x01", "{1: 1}", "got the map key {1: 1}"),
        # an array in msgpack's (and JSON's) brackets, never Python's tuple's (a path says it after a ".")
        (b"\x92\x01\x02\x01", "[1, 2]", "got the array key [1, 2]"),
        (b"\x91\x01\x01", "[1]", "got the array key [1]"),
        (b"\x81\x91\x01\x02\x01", "{[1]: 2}", "got the map key {[1]: 2}"),
        (b"\x81" * 900 + b"\x01\x01" + b"\x01" * 900, "{{{{…}: 1}: 1}: 1}", "map key {{{{…}: 1}: 1}: 1}"),
        (b"\x91" * 900 + b"\x01\x01", "[[[[…]]]]", "array key [[[[…]]]]"),
        (b"\x9f" + b"\xa1x" * 15 + b"\x01", "['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', …]", "array key ['x'"),
        # a key too long to show whole: cut as any repr, "…" and its length (it was cut at 60, unclosed)
        (
            b"\x93" + (b"\xb4" + b"y" * 20) * 3 + b"\x01",
            f"[{', '.join([repr('y' * 20)] * 3)}]"[:60] + "… (72 characters)",
            "array key ['yyy",
        ),
    ],
)
def test_a_key_that_is_a_map_or_an_array_is_refused_as_a_key_that_is_no_string(
    rest: bytes, field: str, words: str
) -> None:
    """msgpack allows any value as a map's key; a map or an array cannot be a Python dict's, and the
    frame was refused malformed_msgpack, "not one msgpack value: unhashable type: 'dict'" (which it is),
    naming nothing. Now as any key that is no string: wrong_type, the key shown (cut) in the field."""
    e = _decoding_error(_frame(PING_HEAD + rest, raw=True))
    assert (e.code, e.field) == (wire.ErrorCode.WRONG_TYPE, field)
    assert "must be strings" in e.message and words in e.message
    inner = msgpack.packb({"v": 1, "id": 5, "kind": "send", "to": "b"}).replace(b"\x84", b"\x85", 1)
    e = _decoding_error(_frame(inner + b"\xa9envelopes\x91\x81\x81\x81\x01\x02\x03\x04", raw=True))
    assert (e.code, e.field) == (wire.ErrorCode.WRONG_TYPE, "envelopes[0].{{1: 2}: 3}")
    assert "the keys of envelopes[0] must be strings" in e.message


def test_an_ext_value_is_named_by_its_msgpack_type() -> None:
    """A msgpack ext (and the timestamp ext, -1) where another type belongs was named by Python's class
    (``ExtType``, ``Timestamp``); the other types go by their msgpack names (bin, nil, map)."""
    e = _decoding_error(_frame({"v": 1, "id": 5, "kind": "receive", "limit": msgpack.ExtType(5, b"x")}))
    assert (e.code, e.field, e.message) == (
        wire.ErrorCode.WRONG_TYPE,
        "limit",
        "limit must be an unsigned integer, got ext (in a 'receive' frame)",
    )
    e = _decoding_error(_frame({"v": 1, "id": 5, "kind": "receive", "limit": msgpack.Timestamp(1, 2)}))
    assert e.message == "limit must be an unsigned integer, got timestamp, ext -1, in a 'receive' frame"


@pytest.mark.parametrize("field", ["v", "id", "limit"])
def test_a_timestamp_in_a_uint_field_is_refused_in_one_clause_naming_the_kind(field: str) -> None:
    """A timestamp (ext -1) where a uint belongs ended its refusal "got timestamp (ext -1) (in a 'receive'
    frame)": two parentheses in a row. Its type and the frame's kind are one clause now, the kind named as
    every refusal names it ("in a 'receive' frame")."""
    body = {"v": 1, "id": 5, "kind": "receive", "limit": 3, field: msgpack.Timestamp(1, 2)}
    e = _decoding_error(_frame(body))
    assert (e.code, e.field) == (wire.ErrorCode.WRONG_TYPE, field)
    assert e.message == f"{field} must be an unsigned integer, got timestamp, ext -1, in a 'receive' frame"
    assert ") (" not in e.message


# A key that is nil, a bool, an ext, a timestamp or an array, in the protocol's words: (its packed bytes,
# its field's text, what the message says it got).
_KEYS_IN_WORDS: Final = [
    (msgpack.packb(msgpack.ExtType(5, b"x")), "ext 5 b'x'", "the key ext 5 b'x'"),
    (b"\xd4\xfb\x00", "ext -5 b'\\x00'", "the key ext -5 b'\\x00'"),  # a type msgpack reserves
    (
        msgpack.packb(msgpack.Timestamp(1, 0)),
        "timestamp 1970-01-01T00:00:01Z",
        "the key timestamp 1970-01-01T00:00:01Z",
    ),
    (
        msgpack.packb(msgpack.Timestamp(1_700_000_000, 2)),
        "timestamp 2023-11-14T22:13:20.000000002Z",
        "the key timestamp 2023-11-14T22:13:20.000000002Z",
    ),
    (
        msgpack.packb(msgpack.Timestamp(-1, 5)),
        "timestamp 1969-12-31T23:59:59.000000005Z",
        "the key timestamp 1969-12-31",
    ),
    # (past the year 9999: by its seconds since 1970)
    (
        msgpack.packb(msgpack.Timestamp(2**62, 5)),
        f"timestamp {2**62}.000000005 s since 1970",
        f"the key timestamp {2**62}.000000005 s since 1970",
    ),
    # (before the year 1, and past 9999 with no nanoseconds: no point, no digits after it)
    (
        msgpack.packb(msgpack.Timestamp(-62_135_596_801, 0)),
        "timestamp -62135596801 s since 1970",
        "the key timestamp -62135596801 s since 1970",
    ),
    (
        msgpack.packb(msgpack.Timestamp(253_402_300_800, 0)),
        "timestamp 253402300800 s since 1970",
        "the key timestamp 253402300800 s since 1970",
    ),
    # nil and the bools by msgpack's names, never Python's None, True, False
    (b"\xc0", "nil", "the key nil"),
    (b"\xc3", "true", "the bool key true"),
    (b"\x91\xc2", "[false]", "the array key [false]"),
    (b"\x92\x01\x02", "[1, 2]", "the array key [1, 2]"),
    (b"\x91" + msgpack.packb(msgpack.ExtType(5, b"x")), "[ext 5 b'x']", "the array key [ext 5 b'x']"),
    (
        b"\x81" + msgpack.packb(msgpack.Timestamp(1, 0)) + b"\x91\x01",
        "{timestamp 1970-01-01T00:00:01Z: [1]}",
        "the map key {",
    ),
]
_KEY_IDS: Final = ["ext", "reserved-ext", "timestamp", "timestamp-ns", "timestamp-before-1970", "timestamp-far", "timestamp-before-year-1", "timestamp-after-9999", "nil", "bool", "bool-in-an-array", "array", "ext-in-an-array", "timestamp-in-a-map"]  # fmt: skip


@pytest.mark.parametrize(("key", "field", "got"), _KEYS_IN_WORDS, ids=_KEY_IDS)
def test_a_key_that_is_no_string_is_named_in_the_protocol_s_words(key: bytes, field: str, got: str) -> None:
    """A key that is an ext or a timestamp was shown by Python's repr, in the message and in the field:
    "got the ext key ExtType(code=5, data=b'x')", "got the timestamp (ext -1) key Timestamp(seconds=1,
    nanoseconds=0)"; nil and a bool as Python's None and True; an array key as a Python tuple, "(1, 2)".
    Now in the protocol's words: an ext by its type and data, a timestamp as its instant, nil and the
    bools by msgpack's names, an array in brackets; the field names no Python class."""
    body = _map(("v", P(1)), ("id", P(9)), ("kind", P("ping"))) + key + P(1)
    e = _decoding_error(_frame(bytes([body[0] + 1]) + body[1:], raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.WRONG_TYPE, field, 9), e
    assert e.message.startswith("the keys of ") and f"must be strings; got {got}" in e.message, e.message
    assert "'ping' frame" in e.message, e.message
    for python in ("ExtType", "Timestamp", "seconds=", "code=", "(1, 2)", "(1,)", "None", "True", "False"):
        assert python not in e.message and python not in e.field, e


@pytest.mark.parametrize(("key", "field", "got"), _KEYS_IN_WORDS, ids=_KEY_IDS)
def test_a_key_that_is_no_string_inside_a_map_is_refused_in_one_clause(
    key: bytes, field: str, got: str
) -> None:
    """Inside a map of a frame such a key's refusal ended "ExtType(code=5, data=b'x') (in a 'send' frame)",
    "(1, 2) (in a 'send' frame)": two parentheses in a row. Now the key in the protocol's words, then the
    frame's kind, never ") ("; the field is the key's path, an array key after a ".", never read as an
    index."""
    e = _decoding_error(_send_with_key(key))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.WRONG_TYPE, f"envelopes[0].{field}", 9), e
    assert e.message.startswith(f"the keys of envelopes[0] must be strings; got {got}"), e.message
    assert e.message.endswith(" (in a 'send' frame)") and ") (" not in e.message, e.message


def test_an_ext_key_too_long_to_quote_whole_is_refused_in_one_clause_naming_the_kind() -> None:
    """An ext key whose data is cut short says the data's length and the frame's kind in one clause; the
    words "ext 5 " and the data's quote in at most MAX_QUOTED characters together."""
    e = _decoding_error(_send_with_key(P(msgpack.ExtType(5, b"k" * 5000))))
    assert (e.code, e.field, e.request_id) == (
        wire.ErrorCode.WRONG_TYPE,
        f"envelopes[0].ext 5 {b'k' * 51!r}… (5,000 bytes)",
        9,
    )
    assert e.message == (
        f"the keys of envelopes[0] must be strings; got the key ext 5 {b'k' * 51!r}…, 5,000 bytes, in a 'send' frame"
    )


def _packed_ext(code: int, data: bytes) -> bytes:
    """An ext of any type, -128 to 127 (msgpack's ExtType packs 0 to 127 only), as msgpack writes it."""
    head = b"\xc7" + bytes([len(data)]) if len(data) < 256 else b"\xc8" + len(data).to_bytes(2, "big")
    return head + code.to_bytes(1, "big", signed=True) + data


@pytest.mark.parametrize("code", [-128, -2, 5, 127])
@pytest.mark.parametrize("data", [b"k" * 64, b"\x00" * 64, b"k" * 5000], ids=["64", "escaped", "5000"])
def test_an_ext_key_is_named_within_the_quote_limit_its_words_counted(code: int, data: bytes) -> None:
    """An ext key's text was "ext -128 " and then a quote of up to MAX_QUOTED characters of its data: up
    to 69 characters where docs/protocol.md says a key is quoted in at most 60. Now the words and the
    quote together are at most MAX_QUOTED, then "…" and the data's length, as any quote cut short."""
    body = _map(("v", P(1)), ("id", P(9)), ("kind", P("ping"))) + _packed_ext(code, data) + P(1)
    e = _decoding_error(_frame(bytes([body[0] + 1]) + body[1:], raw=True))
    words = f"ext {code} "
    assert e.code == wire.ErrorCode.WRONG_TYPE and e.field.startswith(words), e
    quote, cut_short, length = e.field.partition("… (")
    assert cut_short and length == f"{len(data):,} bytes)", e.field
    assert len(quote) <= wire.MAX_QUOTED < len(quote) + 4, e.field  # (an escape is 4 characters)
    assert quote == words + repr(data[: (len(quote) - len(words) - 3) // len(repr(data[:1])[2:-1])]), e.field
    assert e.message == (
        f"the keys of the frame must be strings; got the key {quote}…, {len(data):,} bytes, in a 'ping' frame"
    )
    assert (
        wire.value_text(msgpack.ExtType(code, data) if code >= 0 else wire._ReservedExt(code, data))
        == e.field
    )


@pytest.mark.parametrize(
    ("key", "got"),
    [
        (msgpack.packb(5), "the int key 5"),
        (msgpack.packb(b"x"), "the bin key b'x'"),
        (b"\xc0", "the key nil"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "the key ext 5 b'x'"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "the key timestamp 1970-01-01T00:00:01Z"),
        (b"\x92\x01\x02", "the array key [1, 2]"),  # (refused as msgpack reads the body: a dict holds none)
        (b"\x81\x01\x02", "the map key {1: 2}"),
    ],
    ids=["int", "bin", "nil", "ext", "timestamp", "array", "map"],
)
def test_a_key_that_is_no_string_in_the_frame_s_own_map_is_refused_in_one_wording(
    key: bytes, got: str
) -> None:
    """A key that is a map or an array in the frame's own map was refused "the keys of the frame must be
    strings; got the array key [1, 2] (in a 'ping' frame)", any other "the keys of a 'ping' frame must be
    strings; got the int key 5": two wordings of one refusal. Now one, the frame's kind said after, as
    inside a map ("the keys of envelopes[0] must be strings; got ... (in a 'send' frame)")."""
    body = _map(("v", P(1)), ("id", P(9)), ("kind", P("ping"))) + key + P(1)
    e = _decoding_error(_frame(bytes([body[0] + 1]) + body[1:], raw=True))
    assert (e.code, e.request_id) == (wire.ErrorCode.WRONG_TYPE, 9), e
    assert e.message == f"the keys of the frame must be strings; got {got} (in a 'ping' frame)"


def test_a_key_whose_quote_holds_the_kind_s_words_does_not_stand_for_the_kind() -> None:
    """A refusal names the frame's kind unless the message says it already; a bin key's quote holding
    "'ping' frame" was read as saying it, and the kind was left out."""
    e = _decoding_error(_frame({**BASE, b"'ping' frame": 1}))
    assert (
        e.message
        == "the keys of the frame must be strings; got the bin key b\"'ping' frame\" (in a 'ping' frame)"
    )
    e = _decoding_error(_frame({**BASE, "x": 1}))  # (named in the message's own words: once)
    assert e.message == "unknown field 'x' in a 'ping' frame"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "nil"),
        (True, "true"),
        (False, "false"),
        (msgpack.ExtType(5, b"x"), "ext 5 b'x'"),
        (wire._ReservedExt(-2, b"\x00"), "ext -2 b'\\x00'"),
        (msgpack.Timestamp(1, 0), "timestamp 1970-01-01T00:00:01Z"),
        ([None, True], "[nil, true]"),
        ((1, 2), "[1, 2]"),
        ({1: None, "a": [b"x"]}, "{1: nil, 'a': [b'x']}"),
        ({i: i for i in range(9)}, "{0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, …}"),
        ([[[[1]]]], "[[[[…]]]]"),
        ("s", "'s'"),
        (-1, "-1"),
    ],
    ids=[
        "nil",
        "true",
        "false",
        "ext",
        "reserved-ext",
        "timestamp",
        "array",
        "tuple",
        "map",
        "long-map",
        "deep",
        "str",
        "int",
    ],
)
def test_a_value_is_named_in_the_protocol_s_words(value: object, said: str) -> None:
    """relay.wire.value_text, the one rule the wire and the other msgpack readers name a value by (a
    key's rule, for values too): never Python's None, True, ExtType(code=5, data=b'x'),
    Timestamp(seconds=1, nanoseconds=0), a tuple's parentheses or a dict's Python reprs inside."""
    assert wire.value_text(value) == said
    for python in ("None", "True", "False", "ExtType", "Timestamp", "("):
        assert python not in wire.value_text(value)


@pytest.mark.parametrize(
    ("leaf", "said"),
    [
        ((None, 1), "account must be a non-empty string, not nil"),
        (("a", True), "device must be an integer >= 1, not true"),
        (
            ("a", msgpack.Timestamp(1, 0)),
            "device must be an integer >= 1, not timestamp 1970-01-01T00:00:01Z",
        ),
        (("a", [None]), "device must be an integer >= 1, not [nil]"),
        ((msgpack.ExtType(5, b"x"), 1), "account must be a non-empty string, not ext 5 b'x'"),
    ],
    ids=["nil", "true", "timestamp", "array", "ext"],
)
def test_a_key_log_leaf_names_a_value_in_the_protocol_s_words(leaf: tuple[object, object], said: str) -> None:
    """A key log leaf read from msgpack named what it got by Python's repr: "not None", "not True",
    "not Timestamp(seconds=1, nanoseconds=0)", "not [None]"."""
    account, device = leaf
    with pytest.raises(ValueError) as info:
        wire.kt_leaf_decode(P([wire.KT_LEAF_VERSION, account, device, b"k" * 32]))
    assert str(info.value) == f"key transparency leaf: {said}"


@pytest.mark.parametrize(
    ("key", "named"),
    [
        (msgpack.packb(msgpack.ExtType(5, b"x")), "ext 5 b'x'"),
        (msgpack.packb(msgpack.Timestamp(1, 2)), "timestamp 1970-01-01T00:00:01.000000002Z"),
        (b"\xc0", "nil"),
    ],
    ids=["ext", "timestamp", "nil"],
)
def test_a_key_that_is_no_string_named_twice_is_named_in_the_protocol_s_words(key: bytes, named: str) -> None:
    """An ext key named twice was quoted by its repr, "names the key ExtType(code=5, data=b'x') more than
    once", a timestamp "Timestamp(seconds=1, nanoseconds=2)", nil "None"."""
    body = _map(("v", P(1)), ("id", P(9)), ("kind", P("ping"))) + key + P(1) + key + P(2)
    e = _decoding_error(_frame(bytes([body[0] + 2]) + body[1:], raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.INVALID_VALUE, named, 9), e
    assert e.message == f"frame body names the key {named} more than once; each key once (in a 'ping' frame)"


@pytest.mark.parametrize(
    ("missing", "kind"), [("v", "k" * 300), ("id", "k" * 300), ("v", "k\n" * 300)], ids=["v", "id", "escaped"]
)
def test_a_frame_missing_v_or_id_of_a_long_unknown_kind_names_it_without_nesting(
    missing: str, kind: str
) -> None:
    """A frame missing v or id whose kind is unknown and too long to quote whole nested its length's
    parentheses in the kind's: "(in a 'kkk…'… (300 characters) frame)". The length is said after the
    kind's quote now, inside the one parenthesis."""
    body = {k: v for k, v in {"v": 1, "id": 5, "kind": kind}.items() if k != missing}
    e = _decoding_error(_frame(body))
    assert (e.code, e.field) == (wire.ErrorCode.MISSING_FIELD, missing)
    head = wire.quoted(kind).partition("… (")[0]
    assert e.message == f"{missing} is missing (in a {head}… frame, its kind {len(kind):,} characters long)"
    assert e.message.count("(") == e.message.count(")") == 1, e.message


def test_a_body_not_one_value_of_a_long_kind_names_it_without_nesting() -> None:
    """The same for a body msgpack would not read (its kind read pair by pair: _in_kind)."""
    e = _decoding_error(_frame(msgpack.packb({"v": 1, "id": 5, "kind": "k" * 300}) + b"\x00", raw=True))
    assert e.code == wire.ErrorCode.MALFORMED_MSGPACK
    assert e.message.endswith(
        f" (in a {wire.quoted('k' * 300).partition('… (')[0]}… frame, its kind 300 characters long)"
    )
    assert e.message.count("(") == e.message.count(")") == 1, e.message


def _ping_with(*pairs: tuple[object, bytes], packed_id: bytes = msgpack.packb(5)) -> bytes:
    """A ping frame whole, its body a map of its three keys then ``pairs`` (a key may repeat)."""
    p = msgpack.packb
    return _frame(_map(("v", p(1)), ("id", packed_id), ("kind", p("ping")), *pairs), raw=True)


P = msgpack.packb


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_ping_with(("v", P(1))), wire.ErrorCode.INVALID_VALUE),  # a key named twice, at the top
        (
            _frame(_send_body(_map(("device", P(2)), ("device", P(2)))), raw=True),
            wire.ErrorCode.INVALID_VALUE,
        ),
        (_ping_with(("x", b"\xa2\xff\xfe")), wire.ErrorCode.MALFORMED_MSGPACK),  # a str not UTF-8
        (_frame(PING_HEAD + b"\xa1\xff\x01", raw=True), wire.ErrorCode.MALFORMED_MSGPACK),  # a key not UTF-8
        (_frame(PING_HEAD + b"\x92\x01\x02\x01", raw=True), wire.ErrorCode.WRONG_TYPE),  # an array as a key
        (_frame(P({**BASE, "id": 5}) + b"\x01", raw=True), wire.ErrorCode.MALFORMED_MSGPACK),  # a byte past
    ],
    ids=["twice", "twice-inside", "utf8-value", "utf8-key", "array-key", "extra-data"],
)
def test_an_error_about_a_frame_whose_id_can_be_read_carries_it(data: bytes, code: wire.ErrorCode) -> None:
    """An error about a map that was read (a key named twice, a str not UTF-8, a key that is an array, a
    byte after the map) carried request id 0, whatever the frame's id: a client that pipelines could not
    tell which of its requests was refused. Its id is read from the map when it is there once and a uint."""
    e = _decoding_error(data)
    assert (e.code, e.request_id) == (code, 9 if b"send" in data else 5), e
    assert wire.ErrorFrame.from_exception(e).id == e.request_id


def test_bytes_after_the_body_s_value_are_said_in_so_many_words() -> None:
    """msgpack's own words were "unpack(b) received extra data."."""
    for extra, said in [(b"\x01", "1 byte follows"), (b"\x01" * 1200, "1,200 bytes follow")]:
        e = _decoding_error(_frame(P(BASE) + extra, raw=True))
        assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, None, 9)
        assert e.message == (
            f"frame body is not one msgpack value: {said} its first value, which a frame's length counts alone"
            " (in a 'ping' frame)"  # (one clause in parentheses, the frame's kind: not two in a row)
        )


@pytest.mark.parametrize(
    "packed_id",
    [P(-1), P(1.5), P(None), P(True), P(b"5", use_bin_type=True), P("5"), P([5]), P(2**64 - 1)],
    ids=["negative", "float", "nil", "bool", "bin", "str", "array", "largest"],
)
def test_an_id_is_echoed_only_when_it_is_one(packed_id: bytes) -> None:
    """The id is echoed only when it is one (an unsigned integer of 64 bits) named once: else 0."""
    want = 2**64 - 1 if packed_id == P(2**64 - 1) else 0
    for data in (_ping_with(("v", P(1)), packed_id=packed_id), _ping_with(((), P(1)), packed_id=packed_id)):
        e = _decoding_error(data)
        assert e.code is not wire.ErrorCode.INTERNAL_ERROR and e.request_id == want, e
    e = _decoding_error(_ping_with(("id", P(8)), packed_id=P(7)))  # two ids: no one id
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.INVALID_VALUE, "id", 0)


def _deep(levels: int, key: str, bottom: bytes) -> bytes:
    """A ping whose extra key ``x`` holds maps ``levels`` deep, each of one ``key``, then ``bottom``
    (the body's map as a map16, which the decoder always reads again map by map)."""
    head = _map(("v", P(1)), ("id", P(5)), ("kind", P("ping")), ("x", (b"\x81" + P(key)) * levels + bottom))
    return _frame(b"\xde\x00" + bytes([head[0] & 0x0F]) + head[1:], raw=True)


@pytest.mark.parametrize("key", ["k" * 58, "é" * 58, "\U0001f600" * 58, "k" * 59])
@pytest.mark.parametrize(
    ("bottom", "code"),
    [
        (b"\x82\xa1d\x01\xa1d\x02", wire.ErrorCode.INVALID_VALUE),  # d named twice
        (b"\x81\xa1d\xa2\xff\xfe", wire.ErrorCode.MALFORMED_MSGPACK),  # d's value not UTF-8
        (b"\x81\xa1\xff\x01", wire.ErrorCode.MALFORMED_MSGPACK),  # a key not UTF-8
        (b"\x81\x92\x01\x02\x01", wire.ErrorCode.WRONG_TYPE),  # an array as a key
    ],
    ids=["twice", "utf8-value", "utf8-key", "array-key"],
)
def test_a_path_through_a_peers_maps_is_said_by_its_ends_within_max_path(
    key: str, bottom: bytes, code: wire.ErrorCode
) -> None:
    """A path 900 maps deep through keys of 58 characters (each a name) was said whole, ~53,000
    characters, then cut at 4,095 by the error frame ("…" and nothing else: neither a path nor a quote;
    ~16 KiB of answer at 4 bytes a character). Now by its first and last steps within MAX_PATH, and how
    many it leaves out between them: "x", its first keys, "…(N more)", its last keys and the key."""
    e = _decoding_error(_deep(900, key, bottom))
    assert (e.code, e.request_id) == (code, 5), e
    assert e.field is not None
    name = wire._key_name(key)
    steps = e.field.split(".")
    assert steps[0] == "x" and steps[1] == name and steps[-2] == name, e.field
    assert steps[-1] in ("d", "b'\\xff'", "[1, 2]"), e.field
    marker = [s for s in steps if s.startswith("…(")]
    assert len(marker) == 1 and marker[0] == f"…({900 + 2 - len(steps) + 1:,} more)", e.field
    assert len(e.field) <= wire.MAX_PATH + 100 and e.message.isprintable()
    answer = wire.encode(wire.ErrorFrame.from_exception(e))
    assert len(answer) <= server._SMALL_ANSWER, len(answer)


def test_a_key_with_the_ellipsis_is_quoted_so_that_a_path_cut_short_is_never_a_key() -> None:
    """ "…" in a field says that something was left out (a path's middle, a long quote's end); a key
    that holds it was a name like any other, and a key "…(3 more)" read as a path cut short."""
    e = _decoding_error(_frame({**BASE, "…(3 more)": 1}))
    assert (e.code, e.field) == (wire.ErrorCode.UNKNOWN_FIELD, "'…(3 more)'")


def test_a_deep_and_wide_body_is_walked_in_memory_of_its_size() -> None:
    """The walk that looks for a key named twice (and for a str not UTF-8, a key that is an array) made
    the path's text for every value of every map it reached: 900 maps deep through keys of 58
    characters, ~53 KB of path for each of the 3,000 values of the map at the bottom, 160 MB (2.5 GB
    and ~7 s of the relay's loop for the ~48,000 a frame holds). A path is now made when it is said."""
    wide = b"\xdc" + (3000).to_bytes(2, "big") + b"\x90" * 3000  # (an array: any list or map will do)
    data = _deep(900, "k" * 58, b"\x81\xa1w" + wide)
    tracemalloc.start()
    try:
        e = _decoding_error(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (e.code, e.field) == (wire.ErrorCode.UNKNOWN_FIELD, "x")  # read whole: no key twice
    assert peak < 20_000_000, peak


@pytest.mark.parametrize("role", ["relay", "device"])
def test_an_unknown_kind_is_answered_in_few_bytes_pointing_to_the_kinds(role: str) -> None:
    """unknown_kind's message listed every kind (23 requests: the answer to a 20-byte frame, which the
    relay answers without a bucket and reads on after, was 414 bytes); it names where they are listed."""
    data = _frame({"v": 1, "id": 5, "kind": "zz"})
    assert len(data) == 20
    decoder = wire.FrameDecoder(role)  # type: ignore[arg-type]
    decoder.receive_data(data)
    with pytest.raises(wire.RemoteProtocolError) as refused:
        decoder.next_frame()
    e = refused.value
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.UNKNOWN_KIND, "kind", 5)
    which = "request" if role == "relay" else "response"
    assert e.message == f"unknown kind 'zz'; not a {which} kind (docs/protocol.md lists them)"
    assert len(wire.encode(wire.ErrorFrame.from_exception(e))) < 140


@pytest.mark.parametrize("v", [-1, -(2**63), 0, 2, 2**64 - 1])
def test_any_integer_v_but_1_is_an_unsupported_version(v: int) -> None:
    """docs/protocol.md: unsupported_version, "v is not 1". A negative v was invalid_value ("v must be from
    0 to 18446744073709551615"), as if a v of 5 were a version and one of -1 a mistake of form."""
    e = _decoding_error(_frame({**BASE, "v": v}))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.UNSUPPORTED_VERSION, "v", 9)
    assert (
        e.message == f"v must be 1, the only protocol version this side speaks; got {v} (in a 'ping' frame)"
    )


@pytest.mark.parametrize(
    ("v", "name"), [(1.0, "float"), (True, "bool"), (None, "nil"), ("1", "str"), (b"1", "bin")]
)
def test_a_v_that_is_no_integer_is_of_the_wrong_type(v: object, name: str) -> None:
    e = _decoding_error(_frame({**BASE, "v": v}))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.WRONG_TYPE, "v", 9)
    assert e.message == f"v must be an unsigned integer, got {name} (in a 'ping' frame)"


def test_a_body_that_names_no_key_twice_is_checked_without_the_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every body read again map by map (any map16 or map32 frame; any frame of a client whose encoder is
    not msgpack's shortest) was walked with the place of every map and array: ~100,000 of them in a frame,
    ~0.4 s of the relay's loop. A first pass without places now says whether there is a repeat at all;
    the places are made only for a body that has one (refused: once a connection)."""
    walked: list[object] = []
    real = wire._walk

    def walk(root: object) -> object:
        walked.append(root)
        return real(root)

    monkeypatch.setattr(wire, "_walk", walk)
    many = b"\xdd" + (1000).to_bytes(4, "big") + b"\x91\x00" * 1000
    e = _decoding_error(_deep(3, "k", b"\x82\xa1a" + many + b"\xa1b" + many))
    assert (e.code, e.field, walked) == (wire.ErrorCode.UNKNOWN_FIELD, "x", [])
    e = _decoding_error(_deep(3, "k", b"\x82\xa1a" + many + b"\xa1a" + many))  # a repeat: its place said
    assert (e.code, e.field) == (wire.ErrorCode.INVALID_VALUE, "x.k.k.k.a") and len(walked) == 1


def _lines_run_in_wire(data: bytes) -> tuple[wire.ProtocolError | wire.Frame, int]:
    """What decoding ``data`` gives, and how many lines of relay/wire.py it ran (a count, not a time)."""
    lines = 0
    path = wire.__file__

    def trace(frame: types.FrameType, event: str, arg: object) -> object:
        nonlocal lines
        if frame.f_code.co_filename != path:
            return None
        if event == "line":
            lines += 1
        return trace

    decoder = wire.FrameDecoder()
    decoder.receive_data(data)
    sys.settrace(trace)
    try:
        result: wire.ProtocolError | wire.Frame = decoder.next_frame()  # type: ignore[assignment]
    except wire.RemoteProtocolError as e:
        result = e
    finally:
        sys.settrace(None)
    return result, lines


@pytest.mark.parametrize("where", ["ping-map16", "ping-map16-maps16", "send-envelopes"])
def test_a_body_of_many_maps_in_longer_headers_is_checked_without_a_pass_for_each(where: str) -> None:
    """A body whose headers are not msgpack's shortest (a map16 frame; any map16 inside a frame that
    nests) is asked whether a map names a key twice; that was a Python loop pass for each of its maps and
    arrays, ~100,000 in a frame of 256 KiB (~0.05-0.2 s of the relay's loop a frame, and the frame, refused
    unknown_field, keeps its connection). msgpack's own passes now count the pairs: the lines the decoder
    runs do not grow with the maps the body holds."""
    n = 20_000
    small = {"ping-map16": b"\x81\xa0\xc0", "ping-map16-maps16": b"\xde\x00\x01\xa0\xc0"}.get(
        where, b"\x81\xa0\xc0"
    )
    many = b"\xdd" + n.to_bytes(4, "big") + small * n
    if where == "send-envelopes":
        body = _map(("v", P(1)), ("id", P(5)), ("kind", P("send")), ("to", P("bob")), ("envelopes", many))
        expected = (wire.ErrorCode.UNKNOWN_FIELD, "envelopes[0].''")
    else:
        body = b"\xde\x00\x04" + _map(("v", P(1)), ("id", P(5)), ("kind", P("ping")), ("x", many))[1:]
        expected = (wire.ErrorCode.UNKNOWN_FIELD, "x")
    result, lines = _lines_run_in_wire(_frame(body, raw=True))
    assert isinstance(result, wire.RemoteProtocolError)
    assert (result.code, result.field, result.request_id) == (*expected, 5)
    assert lines < 2_000, lines


@pytest.mark.parametrize(
    ("last", "code", "field"),
    [
        (b"\xa2\xff\xfe", wire.ErrorCode.MALFORMED_MSGPACK, "x[20000]"),  # a str not UTF-8
        (b"\x81\x91\x01\x01", wire.ErrorCode.WRONG_TYPE, "x[20000].[1]"),  # an array as a key
        (
            b"\x81\xa2\xff\xfe\x01",
            wire.ErrorCode.MALFORMED_MSGPACK,
            "x[20000].b'\\xff\\xfe'",
        ),  # a key not UTF-8
    ],
    ids=["utf8-value", "array-key", "utf8-key"],
)
def test_a_fault_at_the_end_of_many_maps_is_placed_without_a_pass_for_each(
    last: bytes, code: wire.ErrorCode, field: str
) -> None:
    """A str that is not UTF-8, or a key that is an array, after 20,000 maps: its place was found by a walk
    of every map and str of the body in Python (~0.15-0.2 s of the relay's loop for 80,000 maps, once a
    connection). Each level's values are now read by msgpack's own loop until one is refused: the lines
    the decoder runs do not grow with the maps before the fault, and the place is as precise as it was."""
    n = 20_000
    many = b"\xdd" + (n + 1).to_bytes(4, "big") + b"\x81\xa0\xc0" * n + last
    body = _map(("v", P(1)), ("id", P(5)), ("kind", P("ping")), ("x", many))
    result, lines = _lines_run_in_wire(_frame(body, raw=True))
    assert isinstance(result, wire.RemoteProtocolError)
    assert (result.code, result.field, result.request_id) == (code, field, 5), result
    assert lines < 2_000, lines


def test_a_fault_deep_inside_the_first_value_of_each_level_is_said_to_be_somewhere_in_what_was_reached() -> (
    None
):
    """Each level is read up to its fault: a fault at the bottom of a long chain of arrays, each holding the
    next first, is read again at each level (the chain's depth times the body). Past _FIND_READS times the
    body, the place reached is named as holding it "somewhere inside"; the lines run stay bounded."""
    n = 20_000
    bottom = b"\xdd" + (n + 1).to_bytes(4, "big") + b"\x81\xa0\xc0" * n + b"\xa2\xff\xfe"
    chain = b"\x92" * 1000 + bottom + b"\x00" * 1000
    body = _map(("v", P(1)), ("id", P(5)), ("kind", P("ping")), ("x", chain))
    result, lines = _lines_run_in_wire(_frame(body, raw=True))
    assert isinstance(result, wire.RemoteProtocolError)
    assert (result.code, result.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, 5), result
    assert result.field is not None and result.field.startswith("x[0][0]"), result.field
    assert result.message.startswith(f"{result.field} holds a msgpack str that is not valid UTF-8 somewhere")
    assert lines < 5_000, lines


@pytest.mark.parametrize(
    ("bottom", "code", "said"),
    [
        (
            b"\xa2\xff\xfe",
            wire.ErrorCode.MALFORMED_MSGPACK,
            "{field} holds a msgpack str that is not valid UTF-8 somewhere inside it, which was not searched "
            "further (in a 'send' frame)",
        ),
        (
            b"\x81\x81\x01\x02\x03",
            wire.ErrorCode.WRONG_TYPE,
            "a map somewhere inside {field}, which was not searched further, has a key that is a map or an "
            "array; the keys of a map must be strings (in a 'send' frame)",
        ),
    ],
    ids=["str-not-utf8", "key-map"],
)
def test_a_fault_not_searched_further_is_said_in_one_clause_naming_the_kind(
    bottom: bytes, code: wire.ErrorCode, said: str
) -> None:
    """A str not UTF-8, or a key that is a map, past what is searched was said "(somewhere inside it: it
    was not searched further)", then the kind: "... (somewhere inside it: ...) (in a 'send' frame)", two
    parentheses in a row, or two asides. Said in the sentence now, the kind's the one parenthesis."""
    n = 20_000
    deep = b"\xdd" + (n + 1).to_bytes(4, "big") + b"\x81\xa0\xc0" * n + bottom
    chain = b"\x92" * 1000 + deep + b"\x00" * 1000
    e = _decoding_error(_frame(_map(("v", P(1)), ("id", P(5)), ("kind", P("send")), ("x", chain)), raw=True))
    assert (e.code, e.request_id) == (code, 5), e
    assert e.field is not None and e.field.startswith("x[0][0]"), e.field
    assert e.message == said.format(field=e.field)
    assert e.message.count("(") == e.message.count(")") == 1, e.message


def test_a_str_not_utf8_inside_a_key_that_is_an_array_is_named_by_that_key() -> None:
    """A key that is an array holding a str that is not UTF-8: the walk looked at keys that are strs only,
    and the frame was refused in msgpack's words ("'utf-8' codec can't decode byte 0xff ...")."""
    e = _decoding_error(_frame(PING_HEAD + b"\x91\xa1\xff\x01", raw=True))
    # (the str in it shown by its bytes, as every other str not UTF-8 is: not by the surrogate that
    # stands for its byte where Python reads it, '\\udcff')
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, "[b'\\xff']", 5), e
    assert e.message == (
        "the key [b'\\xff'] of the frame holds a msgpack str that is not valid UTF-8 (in a 'ping' frame)"
    )


@pytest.mark.parametrize(
    ("rest", "field", "said"),
    [
        (b"\x81\xa2a\xff\x01\x01", "{b'a\\xff': 1}", "the key {b'a\\xff': 1} of the frame holds"),
        (b"\x81\xa2a\xff\x01\xda\x00\x10", None, "inside the value of its key {b'a\\xff': 1}"),
        (b"\x91\x92\x01\xa1\xfe\x01", "[[1, b'\\xfe']]", "the key [[1, b'\\xfe']] of the frame holds"),
        (
            b"\xa1\xff\xda\x00\x10",
            None,
            "cut short at byte 23, the frame's length, inside the value of its key b'\\xff'",
        ),
    ],
    ids=["in-a-map-key", "in-a-map-key-cut-short", "in-a-nested-array-key", "key-of-a-value-cut-short"],
)
def test_a_str_not_utf8_in_a_key_is_shown_by_its_bytes(rest: bytes, field: str | None, said: str) -> None:
    """A str that is not UTF-8 inside a key that is a map or an array, or a key of the body's map whose value
    is cut short: shown by its bytes, b'\\xff', as the wire shows every str not UTF-8 (a key of the body's
    own map, a field), never by the surrogates Python reads its bytes as ('\\udcff', '\\udcfe')."""
    e = _decoding_error(_frame(PING_HEAD + rest, raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, field, 5), e
    assert said in e.message, e.message
    assert "\\udc" not in e.message and "\\udc" not in (e.field or ""), e


@pytest.mark.parametrize("header", ["fixmap", "map16", "map32"])
@pytest.mark.parametrize(
    ("kind", "inside", "code", "field"),
    [
        ("ping", _map(("a", P(1)), ("a", P(2))), wire.ErrorCode.INVALID_VALUE, "x.a"),
        ("ping", _array(P(0), _map(("b", P(1)), ("b", P(1)))), wire.ErrorCode.INVALID_VALUE, "x[1].b"),
        ("zz", _map(("a", P(1)), ("a", P(2))), wire.ErrorCode.INVALID_VALUE, "x.a"),
        ("ping", _map((1, P(1)), (True, P(2))), wire.ErrorCode.WRONG_TYPE, "x.1"),
        ("ping", _map(("a", P(1)), ("b", P(2))), wire.ErrorCode.UNKNOWN_FIELD, "x"),
        ("zz", _map(("a", P(1)), ("b", P(2))), wire.ErrorCode.UNKNOWN_KIND, "kind"),
    ],
    ids=["unknown-field", "unknown-field-array", "unknown-kind", "one-key-to-python", "once", "once-kind"],
)
def test_a_key_named_twice_anywhere_gets_one_answer_whatever_the_header_width(
    header: str, kind: str, inside: bytes, code: wire.ErrorCode, field: str
) -> None:
    """docs/protocol.md: a map, the body's or one inside it, names each key once, else invalid_value by
    its path. A key named twice in a field a kind does not have (or in a frame of a kind not known) was
    unknown_field (or unknown_kind), the connection kept, when the body's own map was a fixmap, and
    invalid_value, the connection closed, when it was a map16 or map32: the same content, two answers.
    Keys Python holds as one (1 and true) are refused as keys that are no string, wherever they are."""
    pairs = _map(("v", P(1)), ("id", P(5)), ("kind", P(kind)), ("x", inside))
    head = {"fixmap": pairs[:1], "map16": b"\xde\x00\x04", "map32": b"\xdf\x00\x00\x00\x04"}[header]
    e = _decoding_error(_frame(head + pairs[1:], raw=True))
    assert (e.code, e.field, e.request_id) == (code, field, 5), e


_PING_HEAD = b"\x84" + P("v") + P(1) + P("id") + P(7)


@pytest.mark.parametrize(
    ("body", "said", "request_id"),
    [
        (_PING_HEAD + P("kind") + P("ping")[:-2], "is cut short at byte 16, the frame's length, inside the value of its key 'kind'", 7),
        (_PING_HEAD + P("kind") + P("ping"), "is cut short at byte 18, the frame's length, at key 4 of the 4 its map's header counts (in a 'ping' frame)", 7),
        (b"\x83" + P("v") + P(1) + P("id") + b"\xcd\x00", "is cut short at byte 9, the frame's length, inside the value of its key 'id'", 0),
        (b"\xdb\x00\x01\x00\x00abc", "is cut short at byte 8, the frame's length", 0),
        (_PING_HEAD + P("kind") + P("ping") + P("x") + b"\x91" * 2000 + b"\xc0", "is nested deeper than 1,024 maps and arrays, inside the value of its key 'x' (in a 'ping' frame)", 7),
        (_PING_HEAD + P("kind") + P("ping") + P("x") + b"\x91" * 1023 + b"\x90", "is nested deeper than 1,024 maps and arrays, inside the value of its key 'x' (in a 'ping' frame)", 7),
        (b"\x91" * 3000, "is nested deeper than 1,024 maps and arrays", 0),
        (_PING_HEAD + P("x") + b"\xc1", "holds the byte 0xc1, which begins no msgpack value, inside the value of its key 'x'", 7),
        (_PING_HEAD + P("x") + b"\xd5\xff\x00\x00", "holds a timestamp (ext -1) that is not one: not 4, 8 or 12 bytes long, or of more than 999,999,999 nanoseconds, inside the value of its key 'x'", 7),
        (_PING_HEAD + P("x") + b"\xc7\x0c\xff" + struct.pack(">Iq", 10**9, 0), "holds a timestamp (ext -1) that is not one: not 4, 8 or 12 bytes long, or of more than 999,999,999 nanoseconds, inside the value of its key 'x'", 7),
        (b"\x84" + P("v") + P(1) + P("id") + P(7) + P("x") + b"\xa1\xff" + P("kind") + b"\xa4pi", "is cut short at byte 20, the frame's length, inside the value of its key 'kind'", 7),
        (b"\x84" + P("v") + P(1) + P("id") + P(7) + P("x") + b"\x81\x91\x01\x01" + P("kind") + b"\xa4pi", "is cut short at byte 22, the frame's length, inside the value of its key 'kind'", 7),
    ],
    ids=["in-a-value", "a-pair-short", "in-the-id", "a-str-longer-than-the-body", "deep", "deep-at-the-bound", "deep-no-map", "0xc1", "timestamp", "timestamp-ns", "and-not-utf-8", "and-an-array-key"],
)  # fmt: skip
def test_a_body_msgpack_cannot_read_is_said_in_the_protocol_s_words_with_its_id(
    body: bytes, said: str, request_id: int
) -> None:
    """A body cut short or nested too deep got msgpack's words ("Unpack failed: incomplete input", or its
    exception's name) and request id 0; it says what is wrong, in the value of which key, and echoes the
    id the map names before the fault, as the other errors about a frame do. A value exactly at the
    bound (1,023 arrays and an empty one, inside the body's map) lacked its key: read again alone, it
    started at depth 0 and fit."""
    e = _decoding_error(_frame(body, raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, None, request_id), e
    assert e.message == f"frame body is not one msgpack value: it {said}"


class _Reworded(msgpack.Unpacker):  # type: ignore[misc]
    """msgpack's Unpacker, saying "kaputt" where it raises a plain ValueError (another version's words)."""

    def unpack(self) -> object:
        with _reworded():
            return super().unpack()

    def __next__(self) -> object:
        with _reworded():
            return super().__next__()


@contextlib.contextmanager
def _reworded() -> Iterator[None]:
    try:
        yield
    except ValueError as e:
        if type(e) is not ValueError:  # (ExtraData, FormatError, StackError: types, not words)
            raise
        raise ValueError("kaputt") from None


def _reworded_unpackb(data: bytes, **options: object) -> object:
    with _reworded():
        return msgpack.unpackb(data, **options)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (b"\xd5\xff\x00\x00", "holds a timestamp (ext -1) that is not one"),  # 2 bytes
        (b"\xc7\x0c\xff" + struct.pack(">Iq", 10**9, 0), "holds a timestamp (ext -1) that is not one"),
        (b"\xd7\xff" + ((10**9 << 34) | 5).to_bytes(8, "big"), "holds a timestamp (ext -1) that is not one"),
        (b"\x91\xc7\x03\xff\x00\x00\x00", "holds a timestamp (ext -1) that is not one"),  # inside an array
        (b"\xdb\x00\x01\x00\x00abc", "is cut short at byte"),  # a str longer than the body
        (b"\xc7\x05\x01\x00", "is cut short at byte"),  # an ext longer than the body
    ],
    ids=["ts-2-bytes", "ts-12-ns", "ts-8-ns", "ts-in-an-array", "str-past-the-end", "ext-past-the-end"],
)
def test_what_msgpack_refuses_is_said_from_the_bytes_not_from_msgpack_s_words(
    monkeypatch: pytest.MonkeyPatch, value: bytes, said: str
) -> None:
    """A timestamp that is not one (and a length past the body's) was recognised by msgpack's message
    ("invalid timestamp data", "Unpack failed: error = -1", "exceeds max_str_len"): with another version's
    words it was "msgpack cannot read it (...)". It is now said from the bytes of the value refused."""
    reworded = types.ModuleType("msgpack")
    reworded.__dict__.update(msgpack.__dict__)
    reworded.Unpacker = _Reworded  # type: ignore[attr-defined]
    reworded.unpackb = _reworded_unpackb  # type: ignore[attr-defined]
    monkeypatch.setattr(wire, "msgpack", reworded)
    monkeypatch.setattr(wire, "_unpackb", _reworded_unpackb)
    monkeypatch.setattr(wire, "_unpackb_ext", functools.partial(_reworded_unpackb, ext_hook=wire._ext))
    e = _decoding_error(_frame(_PING_HEAD + P("x") + value, raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, None, 7), e
    assert e.message.startswith(f"frame body is not one msgpack value: it {said}"), e.message
    assert e.message.endswith(", inside the value of its key 'x'"), e.message


@pytest.mark.parametrize("device", [0, 128, 2**32 - 1])
@pytest.mark.parametrize(
    ("role", "body", "field"),
    [
        ("relay", lambda d: {**BASE, "kind": "send", "to": "bob", "envelopes": [{"device": d, "body": b"x"}]}, "envelopes[0].device"),
        ("relay", lambda d: {**BASE, "kind": "auth_challenge", "account": "bob", "device": d}, "device"),
        ("device", lambda d: {**BASE, "kind": "error", "code": "stale_devices", "message": "m", "stale": [1, d]}, "stale[1]"),
        ("device", lambda d: {**BASE, "kind": "authenticated", "account": "bob", "device": d}, "device"),
    ],
    ids=["send", "auth_challenge", "error-stale", "authenticated"],
)  # fmt: skip
def test_a_device_id_outside_1_to_127_is_refused_wherever_a_frame_names_one(
    role: str, body: object, field: str, device: int
) -> None:
    """Signal-Server's DeviceIdUtil.isValid (1 to 127) held at registration alone: a send to device 128,
    a bundle or an auth_challenge naming 2**32 - 1 were read (docs/protocol.md: device, 1 … 2^32−1)."""
    assert callable(body)
    e = _decoding_error(_frame(body(device)), role)
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.INVALID_VALUE, field, 9), e
    assert f"{field} must be from 1 to 127 (a device id, as Signal's server" in e.message
    assert e.message.endswith(f"DeviceId hold them), got {device} (in a {body(device)['kind']!r} frame)")
    with pytest.raises(wire.LocalProtocolError):  # nor is one made
        wire.OutgoingEnvelope(device, b"x")


@pytest.mark.parametrize("code", [-128, -2, 5])
@pytest.mark.parametrize("where", ["field", "unknown-field", "key"])
def test_an_ext_of_a_type_msgpack_reserves_is_a_value_refused_as_any_ext(code: int, where: str) -> None:
    """An ext of type -128 to -2 (msgpack reserves them; -1 is its timestamp) is a msgpack value like any
    other; msgpack's ExtType will not hold one, and a body holding one was refused malformed_msgpack in
    msgpack's words ("code must be 0~127"). It is refused as any ext is where it is (found by fuzzing)."""
    ext = b"\xd4" + code.to_bytes(1, "big", signed=True) + b"\x00"
    if where == "field":
        body, expected = (
            _map(("v", P(1)), ("id", P(9)), ("kind", P("fetch_bundle")), ("account", ext)),
            (wire.ErrorCode.WRONG_TYPE, "account"),
        )
    elif where == "unknown-field":
        body, expected = (
            _map(("v", P(1)), ("id", P(9)), ("kind", P("ping")), ("x", ext)),
            (wire.ErrorCode.UNKNOWN_FIELD, "x"),
        )
    else:
        body = _map(("v", P(1)), ("id", P(9)), ("kind", P("ping"))) + ext + P(1)
        body = bytes([body[0] + 1]) + body[1:]
        expected = (wire.ErrorCode.WRONG_TYPE, f"ext {code} b'\\x00'")
    e = _decoding_error(_frame(body, raw=True))
    assert (e.code, e.field, e.request_id) == (*expected, 9), e
    assert "code must be" not in e.message and (
        "got ext" in e.message or f"got the key ext {code} b'\\x00'" in e.message or where == "unknown-field"
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (1.0, "got float"),
        (msgpack.ExtType(5, b"a"), "got ext"),
        (msgpack.Timestamp(1, 0), "got timestamp, ext -1, in a 'ping' frame"),  # (one clause with the kind)
    ],
)
def test_no_field_takes_a_float_an_ext_or_a_timestamp(value: object, got: str) -> None:
    """docs/protocol.md, "msgpack types used": where a field of the kind is expected, a float, an ext or a
    timestamp is wrong_type naming the field and what came; inside an unknown field it is that field's."""
    body = msgpack.packb({"v": 1, "kind": "ping", "id": value}, use_bin_type=True)
    with pytest.raises(wire.RemoteProtocolError) as e:
        wire.decode_body(body, wire.REQUEST_KINDS)
    assert (e.value.code, e.value.field) == ("wrong_type", "id") and got in str(e.value)
    body = msgpack.packb({"v": 1, "kind": "ping", "id": 1, "zz": value}, use_bin_type=True)
    with pytest.raises(wire.RemoteProtocolError) as e:
        wire.decode_body(body, wire.REQUEST_KINDS)
    assert (e.value.code, e.value.field) == ("unknown_field", "zz")


def test_a_str_not_utf8_in_a_frame_with_bytes_after_its_map_is_said_in_the_wire_s_words() -> None:
    """A str not UTF-8 inside a body with a byte after its map: msgpack refuses the str first, its search
    stops at the byte after the map, and the frame was refused in msgpack's words in parentheses ("msgpack
    cannot read it ('utf-8' codec can't decode byte 0xff ...)"). Now: the byte after the map, as a body
    with no str at fault is refused, with the frame's id."""
    e = _decoding_error(_frame(PING_HEAD + P("x") + b"\x81\x91\xa1\xff\x01\x02", raw=True))
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.MALFORMED_MSGPACK, None, 5), e
    assert e.message == (
        "frame body is not one msgpack value: 1 byte follows its first value, which a frame's length counts alone"
        " (in a 'ping' frame)"
    )


def _send_with_to(packed_to: bytes, *, kind: bytes = P("send"), kind_first: bool = True) -> bytes:
    """A send frame whole whose ``to`` is the bytes ``packed_to`` (a str not UTF-8, a byte 0xc1...), its
    kind before ``to`` or after it."""
    pairs = [("to", packed_to), ("envelopes", P([{"device": 1, "body": b"x"}], use_bin_type=True))]
    head = [("v", P(1)), ("id", P(7))]
    kind_pair = [("kind", kind)]
    return _frame(
        _map(*head, *(kind_pair + pairs if kind_first else pairs[:1] + kind_pair + pairs[1:])), raw=True
    )


@pytest.mark.parametrize(
    ("data", "code", "said"),
    [
        (_send_with_to(b"\xa3b\xffb"), wire.ErrorCode.MALFORMED_MSGPACK, "to is a msgpack str that is not valid UTF-8"),
        (_send_with_to(b"\xa3b\xffb", kind_first=False), wire.ErrorCode.MALFORMED_MSGPACK, "to is a msgpack str that is not valid UTF-8"),
        (_send_with_to(b"\x81\x91\x01\x02"), wire.ErrorCode.WRONG_TYPE, "the keys of to must be strings; got the array key [1]"),
        (_send_with_to(b"\x81\x91\x01\x02", kind_first=False), wire.ErrorCode.WRONG_TYPE, "the keys of to must be strings; got the array key [1]"),
        (_send_with_to(b"\xc1"), wire.ErrorCode.MALFORMED_MSGPACK, "frame body is not one msgpack value: it holds the byte 0xc1, which begins no msgpack value, inside the value of its key 'to'"),
        (_send_with_to(P("bob"))[:-3], wire.ErrorCode.MALFORMED_MSGPACK, "frame body is not one msgpack value: it is cut short at byte"),
        (_send_with_to(P("bob")) + b"\x01", wire.ErrorCode.MALFORMED_MSGPACK, "frame body is not one msgpack value: 1 byte follows its first"),
    ],
    ids=["utf8", "utf8-kind-after", "array-key", "array-key-kind-after", "0xc1", "cut-short", "extra"],
)  # fmt: skip
def test_a_refusal_of_a_body_msgpack_will_not_read_names_the_frame_s_kind(
    data: bytes, code: wire.ErrorCode, said: str
) -> None:
    """The last round named the kind in every refusal of a field ("(in a 'send' frame)"), but not where
    msgpack itself refused the body: a str not UTF-8 ("to is a msgpack str that is not valid UTF-8"), a key
    that is an array, a byte 0xc1 in a field; the kind is read from the body's map as far as it reads."""
    length = len(data) - 4  # (the frame's length says the body's, cut short or with a byte after it)
    e = _decoding_error(length.to_bytes(4, "big") + data[4:])
    assert (e.code, e.request_id) == (code, 7), e
    assert e.message.startswith(said), e.message
    assert e.message.endswith(" (in a 'send' frame)"), e.message
    assert e.message.count("'send' frame") == 1, e.message


@pytest.mark.parametrize(
    "data",
    [
        _send_with_to(b"\xc1", kind_first=False),  # kind after the fault: never read
        _send_with_to(P("bob"), kind=b"\xa4se\xffd"),  # kind is no valid str: no kind to name
        _send_with_to(b"\xa3b\xffb", kind=b"\xa4se\xffd"),
    ],
    ids=["0xc1-kind-after", "kind-not-utf8", "to-and-kind-not-utf8"],
)
def test_a_kind_that_cannot_be_read_is_not_named(data: bytes) -> None:
    """docs/protocol.md, Errors: a kind after a fault msgpack cannot read past (a byte 0xc1, a body cut
    short), or a kind that is not valid UTF-8 itself, is not known: no kind is named, none guessed."""
    e = _decoding_error(data)
    assert e.code is wire.ErrorCode.MALFORMED_MSGPACK and e.request_id == 7, e
    assert " frame)" not in e.message, e.message


_NESTING_PROBE = """
import msgpack
from relaysim.relay import wire
p = msgpack.packb
for depth, leaf in ((1020, b"\\xce\\x00\\x00\\x00\\x01"), (1023, b"\\xc0"), (1023, b"\\x90"), (1024, b"\\xc0"), (3000, b"\\xc0")):
    body = b"\\x85" + p("v") + p(1) + p("id") + p(1) + p("kind") + p("send") + p("to") + p("bob")
    body += p("envelopes") + b"\\x91" * depth + leaf
    decoder = wire.FrameDecoder()
    decoder.receive_data(len(body).to_bytes(4, "big") + body)
    try:
        print(decoder.next_frame())
    except wire.ProtocolError as e:
        print(e.code.value, e.field, e.request_id, e.message)
print(msgpack.Unpacker.__module__)
"""


def test_a_body_nested_deep_is_read_the_same_by_msgpack_s_pure_python_build() -> None:
    """msgpack's pure-Python build (MSGPACK_PUREPYTHON=1) reads nesting by recursion, bounded only by
    Python's recursion limit: a body about 1,000 deep that the C build reads was refused as nested deeper
    than 1,024 (RecursionError, said as msgpack's StackError), and the relay's answer depended on the build.
    Both now read, and refuse, the same bodies with the same errors (relay._msgpack keeps the C build's
    bound ahead of the recursion)."""
    answers = {}
    for pure in ("", "1"):
        env = {**os.environ, "MSGPACK_PUREPYTHON": pure}
        run = subprocess.run(
            [sys.executable, "-c", _NESTING_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        *lines, module = run.stdout.splitlines()
        assert module == ("msgpack.fallback" if pure else "msgpack._cmsgpack"), module
        answers[pure] = lines
    assert answers[""] == answers["1"], answers
    said = answers[""]
    assert said[0].startswith("wrong_type envelopes[0] 1 "), said  # (read whole: the field's type is wrong)
    assert said[1].startswith("wrong_type envelopes[0] 1 "), said
    assert all("nested deeper than 1,024 maps and arrays" in line for line in said[2:]), said


_RECURSION_LIMIT_PROBE = """
import sys, threading
import msgpack
from relaysim.relay import wire
p = msgpack.packb
before = sys.getrecursionlimit()
limits = []
for depth in (1, 1000, 3000):  # read whole, read whole (wrong_type), refused as nested too deep
    body = b"\\x85" + p("v") + p(1) + p("id") + p(1) + p("kind") + p("send") + p("to") + p("bob")
    body += p("envelopes") + b"\\x91" * depth + b"\\xc0"
    decoder = wire.FrameDecoder()
    decoder.receive_data(len(body).to_bytes(4, "big") + body)
    try:
        decoder.next_frame()
    except wire.ProtocolError as e:
        pass
    limits.append(sys.getrecursionlimit())
def read_in_a_thread():
    wire.decode_body(p({"v": 1, "id": 2, "kind": "ping"}), wire.REQUEST_KINDS)
thread = threading.Thread(target=read_in_a_thread)
thread.start(); thread.join()
limits.append(sys.getrecursionlimit())
print(msgpack.Unpacker.__module__, before, *limits)
"""


def test_msgpack_s_pure_python_build_leaves_python_s_recursion_limit_as_it_found_it() -> None:
    """relay._msgpack raises Python's recursion limit so that the pure-Python build reads 1,024 levels
    as the C build does; it raised it for good (the limit is the whole process's: a program that read one
    frame then ran with a limit of thousands). Now the limit is put back after each read, a body read whole,
    one refused as nested too deep and one read in another thread alike."""
    run = subprocess.run(
        [sys.executable, "-c", _RECURSION_LIMIT_PROBE],
        env={**os.environ, "MSGPACK_PUREPYTHON": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    module, before, *after = run.stdout.split()
    assert module == "msgpack.fallback", module
    assert after == [before] * 4, (before, after)


@pytest.mark.parametrize(
    ("inside", "code", "field"),
    [
        (_map(("a", P(1)), ("a", P(2))), wire.ErrorCode.INVALID_VALUE, "zzz.a"),
        (_array(_map(("b", P(1)), ("b", P(1)))), wire.ErrorCode.INVALID_VALUE, "zzz[0].b"),
        (_map((1, P(1)), (True, P(2))), wire.ErrorCode.WRONG_TYPE, "zzz.1"),
        (b"\xa1\xff", wire.ErrorCode.MALFORMED_MSGPACK, "zzz"),
        (_map(("a", P(1)), ("b", P(2.5))), None, None),
    ],
    ids=["key-twice", "key-twice-in-array", "keys-held-as-one", "str-not-utf8", "only-unknown"],
)
def test_inside_an_unknown_field_the_relay_and_the_device_keep_the_same_rule(
    inside: bytes, code: wire.ErrorCode | None, field: str | None
) -> None:
    """docs/protocol.md: a field a reader does not know is a newer peer's addition, read past (the relay
    answers unknown_field and reads on; the device reads the frame without it); but what every version-1
    body is (each key once, strs UTF-8, no two keys a map reader holds as one) holds inside it as anywhere,
    at both ends alike: a frame that breaks it is refused by the same error, which closes, by the relay and
    by the device. (A newer peer speaks version 1 too: no frame of it breaks the rule, and were unknown
    fields exempt, whether a frame is refused would hang on which fields the reader knows.)"""
    relay = wire.FrameDecoder("relay")
    relay.receive_data(
        _frame(_map(("v", P(1)), ("id", P(5)), ("kind", P("ping")), ("zzz", inside)), raw=True)
    )
    device = wire.FrameDecoder("device", ignore_unknown_fields=True)
    device.receive_data(
        _frame(_map(("v", P(1)), ("id", P(5)), ("kind", P("pong")), ("zzz", inside)), raw=True)
    )
    if code is None:  # the rule kept: the relay answers unknown_field and reads on, the device reads past
        with pytest.raises(wire.RemoteProtocolError) as info:
            relay.next_frame()
        assert (info.value.code, info.value.field) == (wire.ErrorCode.UNKNOWN_FIELD, "zzz")
        assert device.next_frame() == wire.Pong(id=5) and device.ignored_fields == ("zzz",)
        return
    for decoder in (relay, device):
        with pytest.raises(wire.RemoteProtocolError) as info:
            decoder.next_frame()
        assert (info.value.code, info.value.field, info.value.request_id) == (code, field, 5), info.value
        assert info.value.code not in wire.RESUMABLE_CODES  # (the connection closes, at either end)
        with pytest.raises(wire.RemoteProtocolError):
            decoder.next_frame()  # (a decoder that has refused so stays failed)


# What a field may take of a frame at the size limit, beside the frame's other fields (a few KiB at most in
# the examples): a bin or a list one past its bound within it is sent whole, and refused naming the field.
_FRAME_ROOM: Final = wire.DEFAULT_MAX_FRAME_SIZE - 8192


def _out_of_range(spec: object, value: object, path: str) -> list[tuple[str, object]]:
    """(path, value) for each way ``value`` (the wire form of a field of spec ``spec``, at ``path``) can be
    put just out of its range (not of its type), inside structs and lists' items too: the first, and a later
    one (``envelopes[1].device``: a list of one item sent with a second, a copy of its first), so that a
    check that reads a list's first item alone, or names every fault ``[0]``, is caught."""
    if isinstance(spec, wire._Optional):
        return _out_of_range(spec.inner, value, path)
    if isinstance(spec, wire._UInt):
        # (msgpack holds no uint65: past 2**64 - 1 a number is another type, a float, refused wrong_type;
        # the top of uint 64, and past int 64's, are read: test_a_uint64_field_reads_up_to_its_top)
        above = [(path, spec.high + 1)] if spec.high < 2**64 - 1 else []
        return [(path, spec.low - 1), *above]
    if isinstance(spec, wire._Str):
        out: list[tuple[str, object]] = [(path, "a" * (spec.max_len + 1)), (path, "a\x00")]
        return out + ([(path, "")] if spec.min_len > 0 else [])
    if isinstance(spec, wire._Bytes):
        most = spec.size if spec.size is not None else spec.max_size
        if most is None:  # (bounded by the frame alone: test_a_bin_bounded_by_the_frame_alone_...)
            return []
        assert most + 1 < _FRAME_ROOM, (path, most)  # (a bound past the frame's would be no bound)
        return [(path, b"b" * (most + 1))] + ([(path, b"b" * (most - 1))] if spec.size else [])
    if isinstance(spec, wire._Struct) and isinstance(value, dict):
        return [
            (f"{path}.{p}", {**value, name: v})  # (v: the field's new value, whatever depth p reaches)
            for name, sub, _default in spec.cls._specs()
            if value.get(name) is not None
            for p, v in _out_of_range(sub, value[name], name)
        ]
    if isinstance(spec, wire._List) and isinstance(value, list):
        out = []
        if value and (spec.max_items + 1) * len(msgpack.packb(value[0], use_bin_type=True)) < _FRAME_ROOM:
            out.append((path, value + [value[0]] * (spec.max_items + 1 - len(value))))
        if value:
            for p, v in _out_of_range(spec.item, value[0], f"{path}[0]"):
                out.append((p, [v, *value[1:]]))
        if value and spec.max_items >= 2:
            later = value if len(value) >= 2 else [value[0], value[0]]
            for p, v in _out_of_range(spec.item, later[1], f"{path}[1]"):
                out.append((p, [later[0], v, *later[2:]]))
        if value and spec.max_items >= 3:  # (and the last of a longer list: a check that stops early)
            longer = value if len(value) >= 3 else [*value, *[value[0]] * (3 - len(value))]
            last = len(longer) - 1
            for p, v in _out_of_range(spec.item, longer[last], f"{path}[{last}]"):
                out.append((p, [*longer[:last], v]))
        return out
    return []


def _requests_with_a_field_out_of_range() -> list[tuple[str, bytes, int, str]]:
    cases = []
    for example in EXAMPLES:
        if not isinstance(example, wire.Request):
            continue
        body = msgpack.unpackb(wire.encode_body(example))  # (the frame: with its v and kind)
        for name, spec, _default in type(example)._specs():
            if name == "id" or body.get(name) is None:
                continue
            for path, bad in _out_of_range(spec, body[name], name):
                case_id = f"{example.kind}-{path}-{len(cases)}"
                cases.append((case_id, _frame({**body, name: bad}), example.id, path))
    return cases


_OUT_OF_RANGE = _requests_with_a_field_out_of_range()


def _field_paths(spec: object, path: str) -> Iterator[tuple[str, bool]]:
    """Every field path under a field of spec ``spec`` at ``path`` (a list's by its first item, ``[0]``),
    itself first, each with whether it has a range to be out of (a number's bounds, a str's or a bin's
    length, a list's count; a flag and a bin bounded by the frame alone have none), from the wire's own
    specs."""
    while isinstance(spec, wire._Optional):
        spec = spec.inner
    if isinstance(spec, wire._Struct):
        yield path, False
        for name, sub, _default in spec.cls._specs():
            yield from _field_paths(sub, f"{path}.{name}")
    elif isinstance(spec, wire._List):
        yield path, True
        yield from _field_paths(spec.item, f"{path}[0]")
    elif isinstance(spec, wire._Bytes):
        yield path, spec.size is not None or spec.max_size is not None
    else:
        yield path, isinstance(spec, wire._UInt | wire._Str)


def _set_paths(value: object, path: str) -> Iterator[str]:
    """The paths of what a wire value (a frame's field) holds, as _field_paths names them."""
    yield path
    if isinstance(value, dict):
        for name, sub in value.items():
            if sub is not None:
                yield from _set_paths(sub, f"{path}.{name}")
    elif isinstance(value, list) and value:
        yield from _set_paths(value[0], f"{path}[0]")


def test_every_field_of_every_request_kind_is_set_in_an_example_and_sent_out_of_its_range() -> None:
    """The out-of-range cases are made from EXAMPLES, so a field that no example of its kind sets (a
    register's push_token, an upload's KEM prekeys, a put's write_keys) was never sent out of its range.
    Every field of every request kind, the optional ones and those of the maps inside, as the wire's own
    specs list them, is set in some example; and each that has a range is among the cases."""
    set_in: dict[str, set[str]] = {}
    for example in EXAMPLES:
        if isinstance(example, wire.Request):
            body = msgpack.unpackb(wire.encode_body(example))
            paths = set_in.setdefault(example.kind, set())
            for name, value in body.items():
                paths.update(_set_paths(value, name))
    cased: dict[str, set[str]] = {}
    for case_id, _data, _request_id, path in _OUT_OF_RANGE:
        cased.setdefault(case_id.split("-", 1)[0], set()).add(path)
    never_set, never_cased = [], []
    for kind, cls in wire.REQUEST_KINDS.items():
        for name, spec, _default in cls._specs():
            if name == "id":
                continue
            for path, ranged in _field_paths(spec, name):
                if path not in set_in.get(kind, set()):
                    never_set.append(f"{kind}.{path}")
                elif ranged and path not in cased.get(kind, set()):
                    never_cased.append(f"{kind}.{path}")
    assert not never_set, never_set
    assert not never_cased, never_cased


@pytest.mark.parametrize(
    ("data", "request_id", "path"), [c[1:] for c in _OUT_OF_RANGE], ids=[c[0] for c in _OUT_OF_RANGE]
)
def test_every_field_of_every_request_out_of_its_range_is_named_by_its_path_with_the_request_s_id(
    data: bytes, request_id: int, path: str
) -> None:
    """relay16 sent every wrong type; this sends every field of every request kind (and of the structs and
    the first item of the lists inside) just out of its range: a number one below or above its bounds,
    a str one character too long, empty or with a control character, a bin one byte off, a list one item
    too long. Each is refused invalid_value naming that field by its path, with the request's id, and
    the frame's kind (as an unknown field's refusal names it; it did not, relay19)."""
    e = _decoding_error(data)
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.INVALID_VALUE, path, request_id), e
    assert e.message.startswith(f"{path} "), e.message  # (the field by its path, as field carries it)
    assert e.message.endswith(f"(in a {msgpack.unpackb(data[4:])['kind']!r} frame)"), e.message
    assert ")(" not in e.message.replace(" ", ""), e.message  # (one parenthesis at its end, not two)


def test_the_out_of_range_cases_put_a_fault_in_a_later_item_of_every_list_too() -> None:
    """The cases walked a list's first item alone: a fault in ``envelopes[1]`` was never sent, and a check
    that read the first item only, or named every item's fault ``[0]``, passed. Each path through a list's
    first item has its twin through the second (the lists that take two items: all of the requests')."""
    cased = {(c[0].split("-", 1)[0], c[3]) for c in _OUT_OF_RANGE}
    firsts = {(kind, path) for kind, path in cased if "[0]" in path}
    assert firsts, cased
    assert {(kind, path.replace("[0]", "[1]")) for kind, path in firsts} <= cased
    assert {("send", "envelopes[1].device"), ("sealed_send", "envelopes[1].device")} <= cased
    data, request_id, path = next(c[1:] for c in _OUT_OF_RANGE if c[0].startswith("send-envelopes[1].device"))
    sent = msgpack.unpackb(data[4:])["envelopes"]
    # (the first item valid: only the second at fault)
    assert len(sent) >= 2 and 1 <= sent[0]["device"] <= 127
    e = _decoding_error(data)
    assert (e.code, e.field, e.request_id) == (wire.ErrorCode.INVALID_VALUE, path, request_id)
    assert path == "envelopes[1].device"
    assert "envelopes[1].device" in e.message and e.message.endswith("(in a 'send' frame)"), e.message


def test_the_out_of_range_cases_put_a_fault_in_the_last_item_of_a_longer_list_too() -> None:
    """Items [0] and [1] alone: a check that stopped after the second item, or named a later item's fault
    by another index, passed. Each path through a list's first item has its twin through the last of a
    list of three (every request's list takes three), and that one is named by its own index."""
    cased = {(c[0].split("-", 1)[0], c[3]) for c in _OUT_OF_RANGE}
    firsts = {(kind, path) for kind, path in cased if "[0]" in path}
    assert {(kind, path.replace("[0]", "[2]", 1)) for kind, path in firsts} <= cased
    data, request_id, _path = next(
        c[1:] for c in _OUT_OF_RANGE if c[0].startswith("send-envelopes[2].device")
    )
    sent = msgpack.unpackb(data[4:])["envelopes"]
    assert len(sent) == 3 and all(1 <= item["device"] <= 127 for item in sent[:2])  # (only the last at fault)
    e = _decoding_error(data)
    assert (e.code, e.field, e.request_id) == (
        wire.ErrorCode.INVALID_VALUE,
        "envelopes[2].device",
        request_id,
    )
    assert e.message == (
        "envelopes[2].device must be from 1 to 127 (a device id, as Signal's server and libsignal's DeviceId "
        f"hold them), got {sent[2]['device']} (in a 'send' frame)"
    )


_KEY = b"k" * wire.KEY_SIZE
_SIG = b"s" * wire.SIGNATURE_SIZE
_DEVICE_BUNDLE = {
    "device": 1,
    "registration_id": 1,
    "identity_key": _KEY,
    "signed_prekey": {"id": 1, "public": _KEY, "signature": _SIG},
    "kem_prekey": {"id": 1, "public": b"p" * wire.KEM_PUBLIC_KEY_SIZE, "signature": _SIG},
    "kem_prekey_last_resort": False,
}


@pytest.mark.parametrize(
    ("role", "body", "code", "field", "message"),
    [
        (
            "relay",
            {**BASE, "kind": "send", "to": "bob", "envelopes": [{"device": 1, "body": b"x"}, {"body": b"x"}]},
            wire.ErrorCode.MISSING_FIELD,
            "envelopes[1].device",
            "envelopes[1].device is missing (in a 'send' frame)",
        ),
        (
            "relay",
            {**BASE, "kind": "send", "envelopes": [{"device": 1, "body": b"x"}]},
            wire.ErrorCode.MISSING_FIELD,
            "to",
            "to is missing (in a 'send' frame)",
        ),
        (
            "relay",
            {**BASE, "kind": "send", "to": "bob", "envelopes": [{"device": 1, "body": b"x"}, {"device": 2, "body": b"x", "zz": 1}]},
            wire.ErrorCode.UNKNOWN_FIELD,
            "envelopes[1].zz",
            "unknown field 'zz' in envelopes[1] (in a 'send' frame)",
        ),
        (
            "relay",
            {**BASE, "kind": "send", "to": "bob", "envelopes": [{"device": 1, "body": b"x"}, {"device": 2, "body": b"x", 5: 1}]},
            wire.ErrorCode.WRONG_TYPE,
            "envelopes[1].5",
            "the keys of envelopes[1] must be strings; got the int key 5 (in a 'send' frame)",
        ),
        (
            "relay",
            {**BASE, "kind": "send", "to": "bob", 5: 1, "envelopes": [{"device": 1, "body": b"x"}]},
            wire.ErrorCode.WRONG_TYPE,
            "5",
            "the keys of the frame must be strings; got the int key 5 (in a 'send' frame)",
        ),
        (
            "device",
            {**BASE, "kind": "bundle", "account": "bob", "devices": [_DEVICE_BUNDLE, {**_DEVICE_BUNDLE, "signed_prekey": {"public": _KEY, "signature": _SIG}}]},
            wire.ErrorCode.MISSING_FIELD,
            "devices[1].signed_prekey.id",
            "devices[1].signed_prekey.id is missing (in a 'bundle' frame)",
        ),
        (
            "device",
            {**BASE, "kind": "bundle", "account": "bob", "devices": [_DEVICE_BUNDLE, {**_DEVICE_BUNDLE, "signed_prekey": {"id": 1, "public": _KEY, "signature": _SIG, "a.b": 1}}]},
            wire.ErrorCode.UNKNOWN_FIELD,
            "devices[1].signed_prekey.'a.b'",
            "unknown field 'a.b' in devices[1].signed_prekey (in a 'bundle' frame)",
        ),
    ],
    ids=["nested-missing", "missing", "nested-unknown", "nested-key-not-str", "key-not-str", "deep-missing", "deep-unknown"],
)  # fmt: skip
def test_a_key_missing_or_left_over_in_a_map_inside_a_frame_is_named_by_its_path_never_a_class_name(
    role: str, body: dict[object, object], code: wire.ErrorCode, field: str, message: str
) -> None:
    """A missing envelope's device was "OutgoingEnvelope is missing required field 'device' (in a 'send'
    frame)", a key left over "unknown field 'zz' in OutgoingEnvelope": this side's Python types, which a
    peer does not know (nor which envelope), named to it. Now the field's path, as ``field`` carries it."""
    kinds = wire.REQUEST_KINDS if role == "relay" else wire.RESPONSE_KINDS
    with pytest.raises(wire.RemoteProtocolError) as info:
        wire.decode_body(_frame(body)[wire.PREFIX_SIZE :], kinds)
    e = info.value
    assert (e.code, e.field, e.request_id, e.message) == (code, field, 9, message)
    names = {
        cls.__name__ for cls in vars(wire).values() if isinstance(cls, type) and issubclass(cls, wire.Message)
    }
    assert not {word.strip("(),;'") for word in e.message.split()} & names, e.message


@pytest.mark.parametrize("key", ["v", "id", "kind"])
def test_a_frame_without_its_v_id_or_kind_is_said_as_any_missing_field_is(key: str) -> None:
    """A frame without ``v``, ``id`` or ``kind`` was "frame is missing required field 'v' (in a 'send'
    frame)", every other missing field "to is missing (in a 'send' frame)": one wording for all, the kind
    named where the frame names one (not where ``kind`` is what is missing), the id where it can be read."""
    whole = {**SEND, "envelopes": [{"device": 1, "body": b"x"}]}
    e = _decoding_error(_frame({k: v for k, v in whole.items() if k != key}))
    in_kind = "" if key == "kind" else " (in a 'send' frame)"
    assert (e.code, e.field, e.message) == (wire.ErrorCode.MISSING_FIELD, key, f"{key} is missing{in_kind}")
    assert e.request_id == (0 if key == "id" else 9)


def test_the_out_of_range_cases_reach_the_bounds_that_fit_a_frame() -> None:
    """The cases above once left out every bin and list whose overflow passed 40,000 bytes: a group state
    one byte past its 128 KiB and a register with 101 KEM prekeys (~168 KB) fit a 256 KiB frame, and are
    among them now."""
    paths = {c[3] for c in _OUT_OF_RANGE}
    assert {"state", "kem_prekeys"} <= paths, paths
    assert any(len(c[1]) > wire.MAX_GROUP_STATE for c in _OUT_OF_RANGE)


def _filling(kind: str, size: int) -> tuple[bytes, int]:
    """A frame of ``kind`` whose one bin bounded by the frame alone (a send's envelope body, a group_send's
    body) makes its body exactly ``size`` bytes, and that bin's length."""
    if kind == "group_send":
        frame: wire.Request = wire.GroupSend(id=9, group=bytes(16), epoch=3, body=b"")
    else:
        frame = wire.Send(id=9, to="bob", envelopes=(wire.OutgoingEnvelope(device=1, body=b""),))
    # a bin of n bytes takes n + 5 with its bin32 header (n of 65,536 and more), n + 2 for a bin8 of none
    grown = size - len(wire.encode_body(frame)) - 3
    if kind == "group_send":
        frame = wire.GroupSend(id=9, group=bytes(16), epoch=3, body=bytes(grown))
    else:
        frame = wire.Send(id=9, to="bob", envelopes=(wire.OutgoingEnvelope(device=1, body=bytes(grown)),))
    data = wire.encode(frame)
    assert len(data) == 4 + size, (len(data), size)
    return data, grown


@pytest.mark.parametrize("kind", ["send", "group_send"])
def test_a_bin_bounded_by_the_frame_alone_is_read_at_the_limit_and_refused_past_it(kind: str) -> None:
    """An envelope's body and a group_send's body have no bound of their own but the frame's (docs/
    protocol.md, "Framing": 262,144 bytes, as Signal-Server's message limit): a frame exactly at the limit,
    that bin filling it, is read whole; one byte longer is refused frame_too_large from its length prefix
    alone, before any of the body is read (its id unread: 0), and naming the limit."""
    at_limit, grown = _filling(kind, wire.DEFAULT_MAX_FRAME_SIZE)
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(at_limit)
    frame = decoder.next_frame()
    body = frame.body if isinstance(frame, wire.GroupSend) else frame.envelopes[0].body  # type: ignore[attr-defined]
    assert (frame.kind, frame.id, len(body)) == (kind, 9, grown), frame.kind
    past, _ = _filling(kind, wire.DEFAULT_MAX_FRAME_SIZE + 1)
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(past[: wire.PREFIX_SIZE])  # (the prefix alone is refused)
    with pytest.raises(wire.RemoteProtocolError) as info:
        decoder.next_frame()
    e = info.value
    assert (e.code, e.request_id) == (wire.ErrorCode.FRAME_TOO_LARGE, 0), e
    assert f"{wire.DEFAULT_MAX_FRAME_SIZE + 1}" in e.message and f"{wire.DEFAULT_MAX_FRAME_SIZE}" in e.message


def _uint64_fields() -> list[tuple[str, bytes, str]]:
    cases = []
    for example in EXAMPLES:
        if not isinstance(example, wire.Request):
            continue
        body = msgpack.unpackb(wire.encode_body(example))
        for name, spec, _default in type(example)._specs():
            inner = spec.inner if isinstance(spec, wire._Optional) else spec
            if isinstance(inner, wire._UInt) and inner.high == 2**64 - 1 and body.get(name) is not None:
                cases.append((f"{example.kind}-{name}", msgpack.packb(body), name))
    return list({c[0]: c for c in cases}.values())


@pytest.mark.parametrize(
    ("body", "name"), [c[1:] for c in _uint64_fields()], ids=[c[0] for c in _uint64_fields()]
)
@pytest.mark.parametrize("value", [2**63 - 1, 2**63, 2**64 - 1])
def test_a_uint64_field_reads_up_to_its_top(body: bytes, name: str, value: int) -> None:
    """A uint64 field (a request's id, a key log's start, end, first and second, a group's epoch and state
    version) has no value just above its range to send: msgpack's widest integer is uint 64 (its spec's
    "int format family"), so past 2**64 - 1 a number is another type (a float 64, refused wrong_type by
    the wrong-type tests). What is tested instead is its top: 2**63 - 1 (int 64's top), 2**63 and
    2**64 - 1, written as uint 64, are read as themselves, as a signed reading would not."""
    fields = msgpack.unpackb(body)
    data = _frame({**fields, name: value})
    assert data[4:].count(b"\xcf" + value.to_bytes(8, "big")) == 1  # (written as uint 64)
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert getattr(frame, name) == value, frame
