"""The msgpack readers beside the wire's (certificates, bundles, tree heads, key log leaves, sealed sender's
content, prekey messages) read as a frame body is read (relay.wire.unpack_value), and say what is wrong
in the wire's words: an ext of a type msgpack reserves (-128 to -2) is a value like any other, refused as
a value of the wrong type where it is, not "not valid msgpack"; a fault msgpack refuses is said as the
wire says it, not in msgpack's words (which differ between its versions)."""

from __future__ import annotations

from typing import Any, Final

import msgpack
import pytest

from relaysim.clients import transparency as kt
from relaysim.clients.keys import BundleError, PreKeyBundle
from relaysim.relay import wire
from relaysim.relay.certificates import CertificateError, SenderCertificate, ServerCertificate

_P = msgpack.packb
_SPK = b"\x93\x01" + _P(b"k" * 32) + _P(b"s" * 64)  # a signed prekey [id, public, signature]
RESERVED = b"\xd4\xfe\x00"  # an ext of type -2 (msgpack reserves -128 to -2), one byte of data
SHOWN = "ext -2 b'\\x00'"  # (in msgpack's words, as the wire names it: never Python's ExtType(code=-2, ...))
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


_IN_PYTHON_S_WORDS = ("None", "True", "False", "ExtType", "Timestamp", "NoneType", "list", "dict", "tuple")

# Each reader's place for an integer, bytes and an array, a value of the wrong type put there (packed), and
# what it says of it.
_INT_PLACES: Final = [
    (ServerCertificate.decode, lambda v: b"\x93" + v + b"\xc4\x01a\xc4\x01b", "server certificate: key_id must be an integer from 0 to 4294967295, got"),
    (kt.decode_head, lambda v: b"\x94" + v + b"\x01\xc4\x00\xc4\x00", "gossiped tree head: tree_size must be an integer from 0 to 2**64 - 1, got"),
    (wire.kt_leaf_decode, lambda v: b"\x94\x01\xa1a" + v + b"\xc4\x00", "key transparency leaf: device must be an integer >= 1, not"),
    (PreKeyBundle.decode, lambda v: b"\x94" + _P(b"k" * 32) + b"\x93" + v + _P(b"k" * 32) + _P(b"s" * 64) + b"\xc0\xc0", "signed_prekey.id must be an integer from 0 to 2**32-1, got"),
]  # fmt: skip
_BYTES_PLACES: Final = [
    (kt.decode_head, lambda v: b"\x94\x01\x01" + v + b"\xc4\x00", "gossiped tree head: root_hash must be 32 bytes, got"),
    (PreKeyBundle.decode, lambda v: b"\x94" + v + b"\x93\x00" + _P(b"k" * 32) + _P(b"s" * 64) + b"\xc0\xc0", "identity_key must be 32 bytes, got"),
    (PreKeyBundle.decode, lambda v: b"\x94" + _P(b"k" * 32) + v + b"\xc0\xc0", "signed_prekey must be the array [id, public, signature], got"),
]  # fmt: skip
_WRONG: Final = [
    (b"\xc0", "nil", "nil"),
    (b"\xc3", "true", "bool"),
    (RESERVED, SHOWN, "ext"),
    (msgpack.packb(msgpack.ExtType(5, b"x")), "ext 5 b'x'", "ext"),
    (msgpack.packb(msgpack.Timestamp(1, 0)), "timestamp 1970-01-01T00:00:01Z", "timestamp (ext -1)"),
    (b"\x91\xc0", "[nil]", "array"),
    (b"\x81\x01\xc2", "{1: false}", "map"),
]
_WRONG_IDS: Final = ["nil", "true", "reserved-ext", "ext", "timestamp", "array", "map"]


@pytest.mark.parametrize(("packed", "value", "_type"), _WRONG, ids=_WRONG_IDS)
@pytest.mark.parametrize(
    ("decode", "data", "said"), _INT_PLACES, ids=["certificate", "tree-head", "leaf", "bundle"]
)
def test_a_value_of_the_wrong_type_is_named_in_msgpack_s_words(
    decode: Any, data: Any, said: str, packed: bytes, value: str, _type: str
) -> None:
    """Where an integer belongs, the readers named what they got by Python's repr: "got None", "got True",
    "got ExtType(code=-2, data=b'\\x00')", "not Timestamp(seconds=1, nanoseconds=0)", "got [None]",
    "got {1: False}". Now as the wire names a key (relay.wire.value_text): nil, true, ext -2 b'\\x00',
    timestamp 1970-01-01T00:00:01Z, [nil], {1: false}."""
    with pytest.raises(Exception) as info:
        decode(data(packed))
    assert str(info.value) == f"{said} {value}"
    assert not any(python in str(info.value) for python in _IN_PYTHON_S_WORDS), info.value


@pytest.mark.parametrize(("packed", "_value", "type_"), _WRONG, ids=_WRONG_IDS)
@pytest.mark.parametrize(
    ("decode", "data", "said"), _BYTES_PLACES, ids=["tree-head", "bundle-key", "bundle-prekey"]
)
def test_a_value_where_bytes_or_an_array_belong_is_named_by_its_msgpack_type(
    decode: Any, data: Any, said: str, packed: bytes, _value: str, type_: str
) -> None:
    """Where bytes belong, the readers named what they got by its Python class, "got NoneType", "got
    ExtType", "got Timestamp", "got list"; where a prekey's array belongs, a bundle spread it as Python's
    arguments ("argument after * must be an iterable, not NoneType"). Now by its msgpack type, as the wire
    names a field's (relay.wire.type_name)."""
    if said.startswith("signed_prekey must be") and type_ == "array":
        type_ = "an array of 1 item"
    with pytest.raises(Exception) as info:
        decode(data(packed))
    assert str(info.value) == f"{said} {type_}"
    assert not any(python in str(info.value) for python in _IN_PYTHON_S_WORDS), info.value


@pytest.mark.parametrize(
    ("prekeys", "said"),
    [
        ([_P(b"abc"), b"\xc0", b"\xc0"], "signed_prekey must be the array [id, public, signature], got bin"),
        ([b"\x92\x01" + _P(b"k" * 32), b"\xc0", b"\xc0"], "signed_prekey must be the array [id, public, signature], got an array of 2 items"),
        ([_SPK, b"\x93\x01" + _P(b"k" * 32) + b"\x01", b"\xc0"], "one_time_prekey must be the array [id, public], got an array of 3 items"),
        ([_SPK, b"\xc0", b"\x92\x01\x01"], "kem_prekey must be the array [id, public, signature, last_resort?], got an array of 2 items"),
        ([_SPK, b"\xc0", _P("abc")], "kem_prekey must be the array [id, public, signature, last_resort?], got str"),
    ],
    ids=["bin", "short", "long", "kem-short", "kem-str"],
)  # fmt: skip
def test_a_bundle_s_prekey_that_is_no_array_of_its_items_is_refused_as_such(
    prekeys: list[bytes], said: str
) -> None:
    """A bundle spread each prekey as Python's arguments: a bin's bytes were read as its id and its key
    ("signed_prekey.public must be 32 bytes, got int"), a str's characters too, and an array too short or
    too long was said in Python's words ("SignedPreKey.__init__() missing 1 required positional argument:
    'signature'", "takes 3 positional arguments but 4 were given")."""
    with pytest.raises(BundleError) as info:
        PreKeyBundle.decode(b"\x94" + _P(b"k" * 32) + b"".join(prekeys))
    assert str(info.value) == said


def test_a_bundle_whose_kem_prekey_leaves_out_last_resort_is_read() -> None:
    kem = b"\x93\x01" + _P(b"k" * 1568) + _P(b"s" * 64)
    bundle = PreKeyBundle.decode(b"\x94" + _P(b"k" * 32) + _SPK + b"\xc0" + kem)
    assert bundle.kem_prekey is not None and bundle.kem_prekey.last_resort is False


def test_unpack_value_reads_what_msgpack_reads() -> None:
    assert wire.unpack_value(b"\x92\x01\xc4\x01a", "x") == [1, b"a"]
    assert wire.unpack_value(b"\x81\x01\x02", "x") == {1: 2}  # (keys of any type, as a frame's)
    with pytest.raises(wire.MsgpackError, match=r"^x: not one msgpack value: it is empty"):
        wire.unpack_value(b"", "x")
    with pytest.raises(
        wire.MsgpackError, match=r"^x: not one msgpack value: the keys of the value must be strings"
    ):
        wire.unpack_value(b"\x81\x91\x01\x01", "x")


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


_SERVER = ServerCertificate(7, b"p" * 32, b"s" * 64).encode()


def _sender_body(**fields: object) -> bytes:
    """A sender certificate's body [sender, device, identity_key, expires, server_certificate] with
    ``fields`` in place of its good values."""
    good = {"sender": "alice", "device": 1, "identity_key": b"i" * 32, "expires": 10, "server": _SERVER}
    return _P(list((good | fields).values()))


@pytest.mark.parametrize(
    ("decode", "data", "said"),
    [
        (
            ServerCertificate.decode,
            _P([7, None, b"s"]),
            "server certificate: public_key must be bin, got nil",
        ),
        (ServerCertificate.decode, _P([7, b"p", "s"]), "server certificate: signature must be bin, got str"),
        (SenderCertificate.decode, _P([[1], b"s"]), "sender certificate: body must be bin, got array"),
        (SenderCertificate.decode, _P([b"x", True]), "sender certificate: signature must be bin, got bool"),
        (
            SenderCertificate.decode,
            _P([_sender_body(sender=b"alice"), b"s"]),
            "sender certificate: sender must be str, got bin",
        ),
        (
            SenderCertificate.decode,
            _P([_sender_body(identity_key=b"i" * 31), b"s"]),
            "sender certificate: identity_key must be 32 bytes, got 31",
        ),
        (
            SenderCertificate.decode,
            _P([_sender_body(identity_key=5), b"s"]),
            "sender certificate: identity_key must be bin, got int",
        ),
        (
            SenderCertificate.decode,
            _P([_sender_body(server={"a": 1}), b"s"]),
            "sender certificate: server_certificate must be bin, got map",
        ),
    ],
    ids=["public-key", "server-signature", "body", "signature", "sender", "short-key", "key", "server"],
)
def test_a_certificate_field_of_the_wrong_type_is_named_with_what_it_got(
    decode: Any, data: bytes, said: str
) -> None:
    """Each was "fields have the wrong types": neither which field nor what it held."""
    with pytest.raises(CertificateError) as info:
        decode(data)
    assert str(info.value) == said


def test_a_kem_prekey_s_last_resort_that_is_no_boolean_says_what_it_got() -> None:
    from relaysim.clients.keys import KemPreKey

    with pytest.raises(BundleError, match=r"^kem_prekey.last_resort must be a boolean, got nil$"):
        KemPreKey(1, b"k" * 1568, b"s" * 64, None)  # type: ignore[arg-type]
