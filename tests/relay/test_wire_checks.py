"""The generated field checks of relay.wire messages against the specs they are made from.

``Message.__post_init__`` runs one generated function per class (``_compile_checks``): each
field's spec inlined as a condition, the spec's own ``check`` called only when it fails. These
tests hold it to the plain loop over the specs — the same outcome, value or error, field by field.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay import wire
from relaysim.relay.wire import LocalProtocolError, Message

CLASSES = sorted(
    {c for c in vars(wire).values() if isinstance(c, type) and issubclass(c, Message) and c is not Message}
    | set(wire.REQUEST_KINDS.values())
    | set(wire.RESPONSE_KINDS.values()),
    key=lambda c: c.__name__,
)

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=2**64 + 3),
    st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64]),
    st.text(max_size=70),
    st.sampled_from(["a", "x" * 64, "x" * 65, "tab\there", "x" * 5000]),
    st.binary(max_size=40),
    st.sampled_from([bytes(32), bytes(33), bytes(64), bytes(16), bytes(1568)]),
    st.lists(st.integers(0, 5), max_size=3),
    st.just(()),
    # tuples (a checked list is one) of items right for some list field and wrong for others
    st.lists(
        st.sampled_from([bytes(16), bytes(32), "bob", "", 1, 0, None, True]), min_size=1, max_size=3
    ).map(tuple),
    st.floats(allow_nan=False),
)


def _bare(cls: type[Message], values: list[Any]) -> Any:
    obj = object.__new__(cls)
    for (name, _, _), v in zip(cls._specs(), values, strict=True):
        object.__setattr__(obj, name, v)
    return obj


def _outcome(run: Any, obj: Any, cls: type[Message]) -> Any:
    try:
        run(obj)
    except LocalProtocolError as e:
        return ("error", e.code, e.message, e.field)
    return ("ok", tuple((type(getattr(obj, n)), getattr(obj, n)) for n, _, _ in cls._specs()))


def _reference(obj: Any) -> None:
    """The checks as a plain loop over the field specs (what __post_init__ did before)."""
    for name, spec, _ in type(obj)._specs():
        value = getattr(obj, name)
        checked = spec.check(value, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_generated_checks_match_the_specs(cls: type[Message], data: st.DataObject) -> None:
    values = [data.draw(VALUES, label=name) for name, _, _ in cls._specs()]
    assert _outcome(Message.__post_init__, _bare(cls, values), cls) == _outcome(
        _reference, _bare(cls, values), cls
    )


def test_a_bad_field_is_named_by_the_generated_checks() -> None:
    with pytest.raises(LocalProtocolError) as e:
        wire.Ack(id=1, envelope_ids=(b"short",))
    assert e.value.field == "envelope_ids[0]"
    with pytest.raises(LocalProtocolError) as e:
        wire.Ack(id=-1, envelope_ids=())
    assert e.value.field == "id"


def test_a_list_becomes_a_tuple_through_the_generated_checks() -> None:
    ack = wire.Ack(id=1, envelope_ids=[bytes(wire.ENVELOPE_ID_SIZE)])  # type: ignore[arg-type]
    assert type(ack.envelope_ids) is tuple


# --- the fast decoders and encoders (relay.wire._fast_decoder, _fast_encoder) ---------------------
# decode_body and Message.from_wire first try a generated one-pass decoder, which only ever accepts;
# whatever it does not accept goes to the checked path, which names the error. These hold the two to
# the same outcome on maps drawn from each class's own specs (mostly valid, often just off), and the
# generated encoder to the bytes of the plain to_wire map.

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), st.binary(max_size=3))


def _spec_values(spec: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for one field on the wire: right, at the edges of right, or of the wrong type."""
    kind = type(spec)
    if kind is wire._UInt:
        edges = st.sampled_from([v for v in (spec.low, spec.high, spec.low - 1, spec.high + 1) if v < 2**64])
        good = st.integers(spec.low, min(spec.high, spec.low + 1000)) | edges
    elif kind is wire._Bool:
        good = st.booleans()
    elif kind is wire._Str:
        good = st.text(
            min_size=max(0, spec.min_len - 1), max_size=min(spec.max_len + 1, 12)
        ) | st.sampled_from(["x" * spec.max_len, "x" * (spec.max_len + 1), "ok", "tab\there"])
    elif kind is wire._Text:
        good = st.text(max_size=8) | st.just("x" * 4097)
    elif kind is wire._Bytes:
        if spec.size is not None:
            good = st.sampled_from(
                [bytes(spec.size), b"\x01" * spec.size, bytes(spec.size + 1), bytes(spec.size - 1)]
            )
        elif spec.max_size is not None:
            good = st.binary(max_size=8) | st.sampled_from([bytes(spec.max_size), bytes(spec.max_size + 1)])
        else:
            good = st.binary(max_size=8)
    elif kind is wire._Optional:
        good = st.none() | _spec_values(spec.inner, depth)
    elif kind is wire._Struct:
        good = _maps(spec.cls, depth + 1)
    elif kind is wire._List:
        low = max(0, spec.min_items - 1)
        good = st.lists(
            _spec_values(spec.item, depth + 1), min_size=low, max_size=min(spec.max_items + 1, low + 3)
        )
    else:
        raise AssertionError(f"no strategy for {spec!r}")
    return st.one_of(good, good, good, JUNK)  # mostly of the right type


def _maps(cls: type[Message], depth: int = 0) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps of ``cls``'s fields: every field or some left out, now and then a key too many."""
    if depth > 2:
        return st.just({})
    fields = {name: _spec_values(spec, depth) for name, spec, _ in cls._specs()}
    return st.fixed_dictionaries({}, optional=fields) | st.fixed_dictionaries(fields)


def _envelope(cls: type[wire.Frame]) -> st.SearchStrategy[dict[Any, Any]]:
    return st.fixed_dictionaries(
        {"v": st.sampled_from([1, 1, 1, 2, True]), "kind": st.just(cls.kind)}
    ).flatmap(
        lambda head: _maps(cls).flatmap(
            lambda body: st.sampled_from([{}, {"extra": 1}, {"v": None}]).map(
                lambda more: {**head, **body, **more}
            )
        )
    )


def _decoded(run: Any, *args: Any) -> Any:
    try:
        value = run(*args)
    except wire.ProtocolError as e:
        return ("error", type(e), e.code, e.message, e.field, e.request_id)
    return ("ok", value, value.to_wire())


FRAME_CLASSES = [c for c in CLASSES if issubclass(c, wire.Frame) and hasattr(c, "kind")]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_the_fast_decoder_of_each_class_matches_the_checked_path(
    cls: type[Message], data: st.DataObject
) -> None:
    raw = data.draw(_maps(cls))
    fast = _decoded(cls.from_wire, raw)
    assert fast == _decoded(cls._from_wire_checked, raw)
    if fast[0] == "ok":  # and the generated encoder packs as the map to_wire gives (a tuple as a list)
        value = fast[1]
        pack = msgpack.Packer(use_bin_type=True).pack
        assert pack(wire._fast_encoder(cls)(value)) == pack(Message.to_wire(value))


@pytest.mark.parametrize("cls", FRAME_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_decode_body_matches_the_checked_path_and_encode_body_round_trips(
    cls: type[wire.Frame], data: st.DataObject
) -> None:
    kinds = wire.REQUEST_KINDS if issubclass(cls, wire.Request) else wire.RESPONSE_KINDS
    raw = data.draw(_envelope(cls))
    body = msgpack.packb(raw, use_bin_type=True)
    outcome = _decoded(wire.decode_body, body, kinds)
    assert outcome == _decoded(wire._decode_map, msgpack.unpackb(body, strict_map_key=False), kinds)
    if outcome[0] == "ok":
        frame = outcome[1]
        plain = {"v": wire.PROTOCOL_VERSION, "id": frame.id, "kind": frame.kind, **frame.to_wire()}
        assert wire.encode_body(frame) == msgpack.packb(plain, use_bin_type=True)


def test_the_fast_decoders_accept_what_they_should() -> None:
    """Not only errors: the drawn maps above reach the fast path's acceptance too (a smoke check
    that a real send, ack and deliver take it, not the checked path)."""
    send = wire.Send(id=3, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"x", 7),))
    deliver = wire.Deliver(id=0, envelope=wire.Envelope(id=bytes(16), body=b"x", timestamp=1, sealed=True))
    for frame, kinds in ((send, wire.REQUEST_KINDS), (deliver, wire.RESPONSE_KINDS)):
        raw = msgpack.unpackb(wire.encode_body(frame))
        fast = wire._fast_decoder(type(frame), True)
        assert fast is not None and fast(raw) == frame == wire.decode_body(wire.encode_body(frame), kinds)


# --- wire.prechecked: the relay's answers made without checking values already checked -----------


@given(st.data())
def test_prechecked_makes_what_the_checked_constructor_makes(data: st.DataObject) -> None:
    """For every class and any values its checks accept as they are, ``prechecked(cls)(*values)``
    is the object ``cls(*values)`` is: equal, the same fields, the same bytes on the wire."""
    cls = data.draw(st.sampled_from(CLASSES))
    values = [data.draw(VALUES) for _ in cls._specs()]
    try:
        checked = cls(*values)
    except LocalProtocolError:
        return  # values the checks refuse are never handed to prechecked
    if any(getattr(checked, n) is not v for (n, _, _), v in zip(cls._specs(), values, strict=True)):
        return  # a value the checks convert (a list made a tuple) is not one they accept as it is
    made = wire.prechecked(cls)(*values)
    assert type(made) is cls and made == checked
    assert [getattr(made, n) for n, _, _ in cls._specs()] == values
    if issubclass(cls, wire.Frame):
        assert wire.encode(made) == wire.encode(checked)


def test_prechecked_answers_of_a_send_and_an_ack() -> None:
    """The four answers the relay makes per envelope, from valid values, as their constructors make them."""
    envelope = wire.prechecked(wire.Envelope)(bytes(16), b"body", 1_700_000_000_000, False, "alice", 2)
    assert envelope == wire.Envelope(
        id=bytes(16),
        body=b"body",
        timestamp=1_700_000_000_000,
        sealed=False,
        source_account="alice",
        source_device=2,
    )
    assert wire.prechecked(wire.Deliver)(0, envelope) == wire.Deliver(id=0, envelope=envelope)
    assert wire.prechecked(wire.Sent)(7, (bytes(16),), None) == wire.Sent(id=7, envelope_ids=(bytes(16),))
    assert wire.prechecked(wire.Acked)(8, 1) == wire.Acked(id=8, count=1)
    assert wire.prechecked(wire.Acked) is wire.prechecked(wire.Acked)  # made once per class


# --- the count of dropped keys against the walk that names them (wire._check_keys_once) -------------
# _check_keys_once asks whether a map drops a key by counting (wire._drops_a_key: pairs against the keys
# of the dicts msgpack makes), and only then walks the body to name the key. The two must agree: a count
# that says "dropped" where the walk finds no key named twice, nor two held as one, would leave the frame
# with no error of its own. Driven here hard: maps nested in arrays nested in maps, many keys, keys of
# every scalar type msgpack has (1, 1.0, true, 0, -0.0, false, nil, "a", b"a", an ext), in every width.

_KEYS = st.sampled_from(
    [0, 1, -1, 2, 0.0, -0.0, 1.0, 2.5, True, False, None, "a", "b", "", b"a", b"", msgpack.ExtType(1, b"")]
)


def _packed(value: Any, wide: bool) -> bytes:
    """``value`` (a scalar, or ("map", pairs) / ("array", items)) as msgpack, a map's pairs as they are
    (repeats kept), each map and array header in its shortest width or its widest (wide)."""
    if type(value) is tuple and value and value[0] in ("map", "array"):
        kind, items = value
        n = len(items)
        if kind == "map":
            head = (b"\xdf" + n.to_bytes(4, "big")) if wide or n > 15 else bytes([0x80 | n])
            return head + b"".join(_packed(k, wide) + _packed(v, wide) for k, v in items)
        head = (b"\xdd" + n.to_bytes(4, "big")) if wide or n > 15 else bytes([0x90 | n])
        return head + b"".join(_packed(v, wide) for v in items)
    return msgpack.packb(value, use_bin_type=True)


def _values(depth: int) -> st.SearchStrategy[Any]:
    scalar = st.one_of(_KEYS, st.integers(-(2**63), 2**64 - 1), st.text(max_size=3))
    if depth == 0:
        return scalar
    inner = _values(depth - 1)
    return st.one_of(
        scalar,
        st.lists(st.tuples(_KEYS, inner), max_size=24).map(lambda p: ("map", p)),
        st.lists(inner, max_size=6).map(lambda v: ("array", v)),
    )


def _drops(value: Any) -> bool:
    """Whether a map in ``value`` holds fewer keys as a dict than it names (the reference, by Python's own
    dict: a key named twice, or two keys it holds as one)."""
    if type(value) is tuple and value and value[0] in ("map", "array"):
        kind, items = value
        if kind == "array":
            return any(map(_drops, items))
        return len(dict(items)) != len(items) or any(_drops(v) for _, v in items)
    return False


@given(
    pairs=st.lists(st.tuples(_KEYS, _values(3)), max_size=40),
    wide=st.booleans(),
)
def test_the_count_of_dropped_keys_agrees_with_the_walk_that_names_them(
    pairs: list[tuple[Any, Any]], wide: bool
) -> None:
    body = _packed(("map", pairs), wide)
    drops = _drops(("map", pairs))
    assert wire._drops_a_key(body) is drops
    if not drops:
        wire._check_keys_once(body)  # (nothing to refuse)
        return
    with pytest.raises(wire.RemoteProtocolError) as caught:
        wire._check_keys_once(body)
    e = caught.value
    # the walk names the map and the key: a key named twice (invalid_value) or two held as one (wrong_type)
    assert e.code in (wire.ErrorCode.INVALID_VALUE, wire.ErrorCode.WRONG_TYPE), e
    assert e.field, e
    assert "fewer keys than it names" not in e.message, e


def test_a_count_the_walk_cannot_explain_is_refused_by_the_wire_s_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were the counts ever to say that a map drops a key the walk cannot find, the frame is refused by the
    wire's error naming it (invalid_value, its id), not an AssertionError out of the decoder (an internal
    error at the relay; and an assert, which python -O leaves out, would read the frame on)."""
    body = msgpack.packb({"v": 1, "id": 9, "kind": "ping"})
    monkeypatch.setattr(wire, "_drops_a_key", lambda body: True)
    with pytest.raises(wire.RemoteProtocolError) as caught:
        wire._check_keys_once(body)
    assert (caught.value.code, caught.value.request_id) == (wire.ErrorCode.INVALID_VALUE, 9)
    assert "each key once" in caught.value.message
