"""The msgpack readers beside the wire's (certificates, bundles, tree heads, key log leaves, sealed sender's
content, prekey messages) read as a frame body is read (relay.wire.unpack_value), and say what is wrong
in the wire's words: an ext of a type msgpack reserves (-128 to -2) is a value like any other, refused as
a value of the wrong type where it is, not "not valid msgpack"; a fault msgpack refuses is said as the
wire says it, not in msgpack's words (which differ between its versions)."""

from __future__ import annotations

import msgpack
import pytest

from relaysim.clients import transparency as kt
from relaysim.clients.keys import BundleError, PreKeyBundle
from relaysim.relay import wire
from relaysim.relay.certificates import CertificateError, SenderCertificate, ServerCertificate

RESERVED = b"\xd4\xfe\x00"  # an ext of type -2 (msgpack reserves -128 to -2), one byte of data
SHOWN = "ExtType(code=-2, data=b'\\x00')"
BAD_TIMESTAMP = b"\xd5\xff\x00\x00"  # an ext -1 of 2 bytes: no timestamp
TIMESTAMP_SAID = "not one msgpack value: it holds a timestamp (ext -1) that is not one"


@pytest.mark.parametrize(
    ("decode", "data", "error", "said"),
    [
        (
            ServerCertificate.decode,
            b"\x93" + RESERVED + b"\xc4\x01a\xc4\x01b",
            CertificateError,
            f"server certificate: key_id must be an integer from 0 to 4294967295, got {SHOWN}",
        ),
        (
            kt.decode_head,
            b"\x94" + RESERVED + b"\x01\xc4\x00\xc4\x00",
            kt.ProofError,
            f"gossiped tree head: tree_size must be an integer from 0 to 2**64 - 1, got {SHOWN}",
        ),
        (
            wire.kt_leaf_decode,
            b"\x94\x01" + RESERVED + b"\x01\xc4\x00",
            ValueError,
            f"key transparency leaf: account must be a non-empty string, not {SHOWN}",
        ),
    ],
    ids=["server-certificate", "tree-head", "key-log-leaf"],
)
def test_an_ext_msgpack_reserves_is_a_value_of_the_wrong_type(
    decode: object, data: bytes, error: type[Exception], said: str
) -> None:
    """It was "not valid msgpack": msgpack's ExtType holds types 0 to 127 only, and msgpack refused the
    whole as it refuses garbage. The wire reads it as a value (relay.wire._ReservedExt) and refuses it
    as one of the wrong type, naming the field; so do these readers now."""
    with pytest.raises(error) as info:
        decode(data)  # type: ignore[operator]
    assert str(info.value) == said


@pytest.mark.parametrize(
    ("decode", "data", "error", "said"),
    [
        (PreKeyBundle.decode, b"\x91" + BAD_TIMESTAMP, BundleError, f"prekey bundle: {TIMESTAMP_SAID}"),
        (
            ServerCertificate.decode,
            b"\x93" + BAD_TIMESTAMP,
            CertificateError,
            f"server certificate: {TIMESTAMP_SAID}",
        ),
        (kt.decode_head, b"\x94" + BAD_TIMESTAMP, kt.ProofError, f"gossiped tree head: {TIMESTAMP_SAID}"),
        (
            wire.kt_leaf_decode,
            b"\x94" + BAD_TIMESTAMP,
            ValueError,
            f"key transparency leaf: {TIMESTAMP_SAID}",
        ),
        (
            SenderCertificate.decode,
            b"\x92\xc4\x02ab",
            CertificateError,
            "sender certificate: not one msgpack value: it is cut short at byte 5, its length",
        ),
        (
            SenderCertificate.decode,
            b"\x92\xa1\xff\xc4\x00",
            CertificateError,
            "sender certificate: not one msgpack value: [0] is a msgpack str that is not valid UTF-8",
        ),
        (
            PreKeyBundle.decode,
            b"\x94\xc0\xc0\xc0\xc0\x01",
            BundleError,
            "prekey bundle: not one msgpack value: 1 byte follows its first value",
        ),
    ],
    ids=[
        "bundle-timestamp",
        "certificate-timestamp",
        "head-timestamp",
        "leaf-timestamp",
        "cut-short",
        "utf8",
        "extra",
    ],
)
def test_a_fault_msgpack_refuses_is_said_in_the_wire_s_words(
    decode: object, data: bytes, error: type[Exception], said: str
) -> None:
    """A bundle said msgpack's own words ("prekey bundle is not valid msgpack: invalid timestamp data", or
    with msgpack 1.0.5 "Unpack failed: error = -1"), the others "not valid msgpack" and nothing more."""
    with pytest.raises(error) as info:
        decode(data)  # type: ignore[operator]
    assert str(info.value).startswith(said), str(info.value)


def test_unpack_value_reads_what_msgpack_reads() -> None:
    assert wire.unpack_value(b"\x92\x01\xc4\x01a", "x") == [1, b"a"]
    assert wire.unpack_value(b"\x81\x01\x02", "x") == {1: 2}  # (keys of any type, as a frame's)
    with pytest.raises(wire.MsgpackError, match=r"^x: not one msgpack value: it is empty"):
        wire.unpack_value(b"", "x")
    with pytest.raises(
        wire.MsgpackError, match=r"^x: not one msgpack value: the keys of the value must be strings"
    ):
        wire.unpack_value(b"\x81\x91\x01\x01", "x")


_P = msgpack.packb


@pytest.mark.parametrize(
    ("data", "bound", "said"),
    [
        (
            _P({"a": {"b": b"x" * 20}}),
            {"max_bin_len": 10},
            "a bin of 20 bytes, more than this reader takes (max_bin_len 10), at a.b",
        ),
        (
            _P(b"x" * 20),
            {"max_bin_len": 10},
            "a bin of 20 bytes, more than this reader takes (max_bin_len 10)",
        ),
        (
            _P([1, "s" * 20]),
            {"max_str_len": 10},
            "a str of 20 bytes, more than this reader takes (max_str_len 10), at [1]",
        ),
        (
            _P({"k" * 20: 1}),
            {"max_str_len": 10},
            "a str of 20 bytes, more than this reader takes (max_str_len 10), as a key of its map",
        ),
        (
            _P({"a": [[1, 2, 3]]}),
            {"max_array_len": 2},
            "an array of 3 items, more than this reader takes (max_array_len 2), at a[0]",
        ),
        (
            _P({"a": {1: 1, 2: 2, 3: 3}}),
            {"max_map_len": 2},
            "a map of 3 pairs, more than this reader takes (max_map_len 2), at a",
        ),
        (
            _P({"a": msgpack.ExtType(5, b"x" * 11)}),
            {"max_ext_len": 10},
            "an ext of 11 bytes, more than this reader takes (max_ext_len 10), at a",
        ),
    ],
    ids=["bin-nested", "bin-alone", "str-in-array", "str-key", "array", "map", "ext"],
)
def test_a_value_past_a_reader_s_bound_is_said_in_the_wire_s_words(
    data: bytes, bound: dict[str, int], said: str
) -> None:
    """A value longer than a bound the reader was given (clients.framing reads a prekey message with
    max_bin_len) was said in msgpack's words in parentheses, "msgpack cannot read it (20 exceeds
    max_bin_len(10))": now what it is, how long, the bound and where, from the value's bytes."""
    with pytest.raises(wire.MsgpackError) as info:
        wire.unpack_value(data, "thing", **bound)  # type: ignore[arg-type]
    assert str(info.value) == f"thing: not one msgpack value: it holds {said}"
    assert (
        "exceeds" not in str(info.value) and "(" in said
    )  # (msgpack's words are "20 exceeds max_bin_len(10)")


def test_a_value_at_a_reader_s_bound_is_read() -> None:
    assert wire.unpack_value(_P({"a": b"x" * 10}), "thing", max_bin_len=10) == {"a": b"x" * 10}
    assert wire.unpack_value(_P(msgpack.ExtType(5, b"x" * 10)), "thing", max_ext_len=10) == msgpack.ExtType(
        5, b"x" * 10
    )


def test_a_str_not_utf8_in_a_value_with_bytes_after_it_is_said_in_the_wire_s_words() -> None:
    """A str not UTF-8 in a value that bytes follow: msgpack refuses the str first, and the wire's search
    for it stops at the bytes after the value; this was msgpack's words, "msgpack cannot read it ('utf-8'
    codec can't decode byte 0xff in position 0: invalid start byte)"."""
    with pytest.raises(wire.MsgpackError) as info:
        wire.unpack_value(b"\x81\xa1\xff\x01\x01", "thing")
    assert str(info.value) == "thing: not one msgpack value: 1 byte follows its first value"
