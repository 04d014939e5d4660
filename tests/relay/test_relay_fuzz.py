"""The relay under hostile frames: a valid frame of every request kind, mutated (a field, nested or not,
replaced by a value of another msgpack type or an extreme one, left out, added; the frame's ``v`` or
``kind`` wrong; the length prefix lying; the frame split anywhere), against the sans-IO decoder and
RelayCore, and against a live server while two good devices talk through it.

Each bad frame must get a specific error (a stable code, and the field it is about for an error about a
field) or, from the server, a close after an error frame; never ``internal_error``, never an exception;
the good devices' messages all arrive, and every envelope the relay acknowledged is delivered."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay import server as relay_server
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from tests.helpers import DeviceKeys, WireClient, core_device, new_core, put_group_state, reply, running

E = wire.ErrorCode
G = bytes(range(16))
# Codes about a field of the frame: each names it (a key that is no string too, by its repr:
# test_relay_wire's "must be strings").
FIELD_CODES = frozenset({E.MISSING_FIELD, E.UNKNOWN_FIELD, E.WRONG_TYPE, E.INVALID_VALUE})


def _keys() -> dict[str, DeviceKeys]:
    return {a: DeviceKeys.make(a) for a in ("alice", "bob", "carol")}


async def _good_devices(
    port: int, keys: dict[str, DeviceKeys], *, carol: bool = False
) -> dict[str, WireClient]:
    """alice and bob registered and logged in on connections of their own (the good devices beside an
    attack); with ``carol``, carol registered too, her connection closed (an account to attack as)."""
    good = {a: await WireClient.connect(port) for a in ("alice", "bob")}
    for account, client in good.items():
        await client.register(keys[account])
        await client.authenticate(keys[account])
    if carol:
        client = await WireClient.connect(port)
        await client.register(keys["carol"])
        await client.aclose()
    return good


def _seeds(keys: dict[str, DeviceKeys]) -> list[wire.Request]:
    """One valid frame of every request kind, every optional field set, as the world below accepts
    (or refuses for what it asks, not for its form)."""
    alice, bob = keys["alice"], keys["bob"]
    kem = alice.kem_prekeys(2)
    register = alice.register(1)
    seeds: list[wire.Request] = [
        register,
        wire.Register(
            id=2, account="dave", device=1, registration_id=1, identity_key=register.identity_key,
            signed_prekey=register.signed_prekey, one_time_prekeys=register.one_time_prekeys,
            kem_prekeys=register.kem_prekeys, last_resort_kem_prekey=register.last_resort_kem_prekey,
            delivery_token=b"t" * 32, proof=b"p", push_token=b"push", device_type="phone", app_version="1.0",
            device_signature=b"s" * 64,
        ),
        wire.UploadPrekeys(
            id=3, one_time_prekeys=alice.prekeys(2), kem_prekeys=kem[:1], signed_prekey=alice.signed_prekey(),
            last_resort_kem_prekey=kem[1], delivery_token=b"t" * 32,
        ),
        wire.FetchBundle(id=4, account="bob", delivery_token=bob.delivery_token, key_log=True),
        wire.AuthChallenge(id=5, account="alice", device=1),
        wire.Authenticate(id=6, nonce=b"n" * 32, signature=b"s" * 64),
        wire.Send(id=7, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"x", bob.registration_id),)),
        wire.SealedSend(
            id=8, to="bob", delivery_token=bob.delivery_token, envelopes=(wire.OutgoingEnvelope(1, b"x"),)
        ),
        wire.GetSenderCertificate(id=9),
        wire.Receive(id=10, limit=5),
        wire.Ack(id=11, envelope_ids=(b"E" * 16,)),
        wire.Ping(id=12),
        wire.DiscoverContacts(id=13, contacts=("bob", "carol")),
        wire.Block(id=14, account="carol"),
        wire.Unblock(id=15, account="carol"),
        wire.CreateGroup(id=16, group=b"H" * 16, members=("bob",)),
        wire.ChangeGroup(id=17, group=G, add=("carol",), remove=("bob",), admins=("carol",)),
        wire.GetGroup(id=18, group=G),
        wire.GroupSend(id=19, group=G, epoch=0, body=b"to the group"),
        put_group_state(20, G, 1, b"state 1", write_keys=(b"k" * 32,)),
        wire.GetGroupState(id=21, group=G, write_keys=True),
        wire.GetKeyLogHead(id=22),
        wire.GetKeyLogConsistency(id=23, first=1, second=2),
        wire.GetKeyLogEntries(id=24, start=0, end=1),
    ]  # fmt: skip
    assert {s.kind for s in seeds} == set(wire.REQUEST_KINDS)  # a new kind needs a seed here
    return seeds


def _wire_map(frame: wire.Frame) -> dict[Any, Any]:
    return msgpack.unpackb(wire.encode(frame)[wire.PREFIX_SIZE :], raw=False)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a decoded frame: each key of each map, each item of each list, nested."""
    items = obj.items() if type(obj) is dict else enumerate(obj) if type(obj) is list else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _longer(value: Any, spec: Any) -> Any:
    """A field's wire value with each list in it that takes three items or more made three long at least
    (copies of its first item after it, each made its own), so that its last item is not its first or
    second."""
    while isinstance(spec, wire._Optional):
        spec = spec.inner
    if isinstance(spec, wire._Struct) and type(value) is dict:
        specs = {name: sub for name, sub, _default in spec.cls._specs()}
        return {k: _longer(v, specs[k]) if k in specs else v for k, v in value.items()}
    if isinstance(spec, wire._List) and type(value) is list and value:
        items = [_longer(v, spec.item) for v in value]
        while spec.max_items >= 3 and len(items) < 3:
            item = copy.deepcopy(items[0])
            # (each its own, after the others, for lists that take no item twice, or sorted: a prekey's id, a
            # write key, a member; else the copy, not the last item's fault, is refused)
            if type(item) is dict and type(item.get("id")) is int:
                item["id"] = max(i["id"] for i in items) + 1
            elif type(item) is bytes and item:
                top = max(items)
                item = (int.from_bytes(top, "big") + 1).to_bytes(len(top), "big")
            elif type(item) is str:
                item = max(items) + "2"
            items.append(item)
        return items
    return value


def _last_items(seed: wire.Request) -> tuple[dict[Any, Any], list[tuple[Any, ...]]]:
    """``seed``'s wire map with its lists made three long (:func:`_longer`), and the places inside the last
    item of a list of three or more (each list it passes through by its last item): the attacks on a list
    once changed its first item alone (``envelopes[0]``), and a check that stopped early passed."""
    frame = _wire_map(seed)
    specs = {name: spec for name, spec, _default in type(seed)._specs()}
    frame = {k: _longer(v, specs[k]) if k in specs and k != "id" else v for k, v in frame.items()}
    places = []
    for path in _paths(frame):
        steps = [(i, k) for i, k in enumerate(path) if type(k) is int]
        if (
            steps
            and all(k == len(_at(frame, path[:i])) - 1 for i, k in steps)
            and max(k for _, k in steps) >= 2
        ):
            places.append(path)
    return frame, places


# Keys as long as a frame allows: an error about one must still fit an error frame (4,096 characters).
LONG_KEYS = ["k" * 5000, b"k" * 5000]
map_keys = (
    st.text(max_size=10)
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=4)
    | st.sampled_from(LONG_KEYS)
)
EXTREMES = [0, -1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), math.nan, math.inf, -0.0]
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(EXTREMES)
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=80)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    | st.sampled_from([*sorted(wire.REQUEST_KINDS), "error", "deliver", "bob", "alice"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(map_keys, children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[wire.Request]) -> tuple[str, dict[Any, Any]]:
    """A seed frame's map with one thing wrong: what, and the map."""
    seed = draw(st.sampled_from(seeds))
    frame = _wire_map(seed)
    places = list(_paths(frame))
    how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "grow"]))
    if how == "add":
        maps = [()] + [p for p in places if type(_at(frame, p)) is dict]
        where = draw(st.sampled_from(maps))
        key: Any = draw(map_keys)
        _at(frame, where)[key] = draw(msgpack_values)
        return f"{seed.kind}: {key!r} added at {where}", frame
    if how == "grow":
        lists = [p for p in places if type(_at(frame, p)) is list and _at(frame, p)]
        if lists:
            where = draw(st.sampled_from(lists))
            items = _at(frame, where)
            items.extend(copy.deepcopy(items[0]) for _ in range(draw(st.sampled_from([1, 64, 1000]))))
            return f"{seed.kind}: {where} grown to {len(items)}", frame
    path = draw(st.sampled_from(places))
    parent = _at(frame, path[:-1])
    if how == "delete":
        del parent[path[-1]]
        return f"{seed.kind}: {path} left out", frame
    parent[path[-1]] = value = draw(msgpack_values)
    return f"{seed.kind}: {path} = {value!r:.60}", frame


def _world() -> tuple[RelayCore, dict[str, ConnectionContext], dict[str, DeviceKeys]]:
    """alice (an admin) and bob in group G with a stored state, carol outside it, all authenticated,
    a connection that is no device yet, and dora and erin, whom no seed names (no mutated frame can
    block one from the other), talking beside them."""
    keys = _keys()
    core = new_core()
    conns = {account: core_device(core, k, i + 1) for i, (account, k) in enumerate(keys.items())}
    assert isinstance(reply(core.handle(conns["alice"], wire.CreateGroup(id=1, group=G, members=("bob",)))),
                      wire.GroupUpdated)  # fmt: skip
    assert isinstance(reply(core.handle(conns["alice"], put_group_state(1, G, 0, b"state 0"))),
                      wire.GroupStateStored)  # fmt: skip
    anonymous = ConnectionContext(9, ("192.0.2.9", 50000))
    core.connect(anonymous)
    conns["anonymous"] = anonymous
    for i, account in enumerate(("dora", "erin")):
        conns[account] = core_device(core, DeviceKeys.make(account), 20 + i)
    return core, conns, keys


def _check_decoder_error(e: wire.RemoteProtocolError, what: str) -> None:
    assert isinstance(e.code, E) and e.code is not E.INTERNAL_ERROR, (what, e)
    if e.code in FIELD_CODES:
        assert e.field, (what, e)  # about a field: names it (a key "" as '')
    answer = wire.encode(wire.ErrorFrame.from_exception(e))  # said as an error frame
    if e.code in wire.RESUMABLE_CODES:  # answered in the frame's place: within what the relay reserves
        assert len(answer) <= relay_server._SMALL_ANSWER, (what, len(answer))


WORLD_SEEDS = _seeds(_keys())


@given(mutated(WORLD_SEEDS), st.sampled_from(["alice", "bob", "carol", "anonymous"]))
def test_a_mutated_frame_of_any_kind_gets_a_specific_error_or_an_answer_and_nothing_else_breaks(
    bad: tuple[str, dict[Any, Any]], who: str
) -> None:
    what, frame = bad
    core, conns, _ = _world()
    body = msgpack.packb(frame, use_bin_type=True)
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(struct.pack(">I", len(body)) + body)
    try:
        request = decoder.next_frame()
    except wire.RemoteProtocolError as e:
        _check_decoder_error(e, what)
    else:
        assert isinstance(request, wire.Request), (what, request)
        answers = [o.frame for o in core.handle(conns[who], request) if isinstance(o, Reply)]
        assert len(answers) == 1, (what, answers)
        for answer in answers:
            assert not (isinstance(answer, wire.ErrorFrame) and answer.code == E.INTERNAL_ERROR), (
                what,
                answer,
            )
            assert wire.decode_body(wire.encode(answer)[wire.PREFIX_SIZE :], wire.RESPONSE_KINDS) == answer
            # the server reads a request only while the answer it reserves for it fits the connection's
            # unsent bound: a frame for the kinds it names, 4 KiB for the others
            if request.kind not in relay_server._LARGE_ANSWERS:
                assert len(wire.encode(answer)) <= relay_server._SMALL_ANSWER, (what, answer)
    # the relay serves good devices as before: dora's send to erin is queued and received whole
    sent = reply(
        core.handle(conns["dora"], wire.Send(id=90, to="erin", envelopes=(wire.OutgoingEnvelope(1, b"hi"),)))
    )
    assert isinstance(sent, wire.Sent), (what, sent)
    got = reply(core.handle(conns["erin"], wire.Receive(id=91)))
    assert isinstance(got, wire.Envelopes) and sent.envelope_ids[0] in {e.id for e in got.envelopes}, what


@pytest.mark.parametrize("seed", WORLD_SEEDS, ids=lambda s: s.kind)
def test_a_valid_frame_split_at_every_byte_or_behind_a_lying_length_prefix(seed: wire.Request) -> None:
    data = wire.encode(seed)
    body = data[wire.PREFIX_SIZE :]
    for cut in range(1, len(data) + 1):  # (b"" would say the stream ended)
        decoder = wire.FrameDecoder("relay")
        decoder.receive_data(data[:cut])
        if cut < len(data):
            assert decoder.next_frame() is wire.NEED_DATA
            decoder.receive_data(data[cut:])
        assert decoder.next_frame() == seed
    for length, code in [(0, E.MALFORMED_MSGPACK), (2**32 - 1, E.FRAME_TOO_LARGE),
                         (wire.DEFAULT_MAX_FRAME_SIZE + 1, E.FRAME_TOO_LARGE), (len(body) + 7, E.TRUNCATED_FRAME),
                         (len(body) - 1, None)]:  # fmt: skip
        decoder = wire.FrameDecoder("relay")
        decoder.receive_data(struct.pack(">I", length) + body)
        decoder.receive_data(b"")
        with pytest.raises(wire.RemoteProtocolError) as raised:
            while decoder.next_frame() is not wire.CLOSED:
                pass
        if code is not None:  # a short prefix: the body cut short, its last byte read as the next frame
            assert raised.value.code is code, (length, raised.value)
        _check_decoder_error(raised.value, f"{seed.kind} behind a length of {length}")


def _server_attacks(
    seeds: list[wire.Request], paths: dict[str, tuple[Any, ...]] | None = None
) -> Iterator[tuple[str, bytes, bool]]:
    """(what, bytes, whether to end the stream after them): for every kind, each top-level field left
    out and given values of three other msgpack types (in turn, so that over the kinds each field
    meets every type; test_a_mutated_frame_of_any_kind... and the longer run in the report try them
    all), a nested field replaced (in a list's first item, and in the last of a list of three), an extra
    field, the kind another's, the length prefix lying. ``paths``: the place each nested attack changed,
    by what it is called."""
    paths = {} if paths is None else paths
    types_ = [None, True, 2**64 - 1, -1, 1.5, "bob", b"\x00" * 16, [1], {"a": 1}, msgpack.ExtType(1, b"x"), 0]
    turn = 0
    for seed in seeds:
        frame = _wire_map(seed)
        variants: list[tuple[str, dict[Any, Any]]] = []
        # (nested: in the first item of a list only, as the others are checked by the same code)
        for path in [p for p in _paths(frame) if len(p) <= 3 and not any(type(k) is int and k for k in p)]:
            values = ["x"]
            if len(path) == 1:
                values = [types_[(turn + i) % len(types_)] for i in range(3)]
                turn += 3
            for value in values:
                changed = copy.deepcopy(frame)
                _at(changed, path[:-1])[path[-1]] = value
                variants.append((f"{seed.kind}: {path} = {value!r}", changed))
            left_out = copy.deepcopy(frame)
            del _at(left_out, path[:-1])[path[-1]]
            variants.append((f"{seed.kind}: {path} left out", left_out))
        longer, last_places = _last_items(seed)
        for path in [p for p in last_places if len(p) <= 3]:  # (the last item of a list of three)
            changed = copy.deepcopy(longer)
            _at(changed, path[:-1])[path[-1]] = "x"
            paths[f"{seed.kind}: {path} = 'x'"] = path
            variants.append((f"{seed.kind}: {path} = 'x'", changed))
        variants.append((f"{seed.kind}: extra field", {**frame, "extra": 1}))
        variants.extend((f"{seed.kind}: a long {type(k).__name__} key", {**frame, k: 1}) for k in LONG_KEYS)
        variants.append(
            (f"{seed.kind}: as another kind", {**frame, "kind": "ping" if seed.kind != "ping" else "ack"})
        )
        for what, changed in variants:
            body = msgpack.packb(changed, use_bin_type=True)
            yield what, struct.pack(">I", len(body)) + body, False
        body = wire.encode(seed)[wire.PREFIX_SIZE :]
        for length in (0, 2**32 - 1, wire.DEFAULT_MAX_FRAME_SIZE + 1):
            yield f"{seed.kind} behind a length of {length}", struct.pack(">I", length) + body, False
        yield f"{seed.kind} behind a long length, then the end", struct.pack(">I", len(body) + 9) + body, True


def _takes_three(spec: Any) -> bool:
    """Whether a field of ``spec`` holds a list that takes three items or more, in it or in a map it holds."""
    while isinstance(spec, wire._Optional):
        spec = spec.inner
    if isinstance(spec, wire._List):
        return spec.max_items >= 3 or _takes_three(spec.item)
    if isinstance(spec, wire._Struct):
        return any(_takes_three(sub) for _name, sub, _default in spec.cls._specs())
    return False


def test_the_attacks_change_the_last_item_of_a_list_of_three_too_and_each_refusal_names_its_path() -> None:
    """The attacks changed a list's first item alone: a fault in a later one was never sent (the out-of-range
    cases had [1] only). Each list of every kind that takes three items is sent three long with its last
    item's fields changed, by both attacks; each refusal about a field names that item by its own index."""
    keys = _keys()
    server_paths: dict[str, tuple[Any, ...]] = {}
    attacks = {what: data for what, data, _end in _server_attacks(_seeds(keys), server_paths)}
    every_paths: dict[str, tuple[Any, ...]] = {}
    every = {
        what: data
        for what, data, _end in _every_type_in_every_field(keys, every_paths)
        if type(data) is bytes
    }
    reached = {p[0] for p in server_paths.values()} & {p[0] for p in every_paths.values() if 2 in p}
    # (the one-time prekeys' list is one_time_prekeys, in the register and upload_prekeys seeds: no field
    # is named prekeys; it was reached, and not required)
    assert {"envelopes", "one_time_prekeys", "kem_prekeys", "members", "contacts", "envelope_ids"} <= reached
    # every list of every request kind that takes three items, at any depth, by its frame's field: a new
    # one needs a seed that holds an item of it
    assert reached == {
        name
        for cls in wire.REQUEST_KINDS.values()
        for name, spec, _default in cls._specs()
        if _takes_three(spec)
    }, reached
    wrong = []
    for cases, named in ((attacks, server_paths), (every, every_paths)):
        for what, path in named.items():
            if not any(type(k) is int and k >= 2 for k in path):
                continue
            decoder = wire.FrameDecoder("relay")
            decoder.receive_data(cases[what])
            try:
                decoder.next_frame()
            except wire.RemoteProtocolError as e:
                said = "".join(f"[{k}]" if type(k) is int else f".{k}" for k in path).lstrip(".")
                item = said[: said.rindex("]") + 1]  # (the last item: "envelopes[2]")
                if e.code in FIELD_CODES and not (_names(e.field or "", path) and item in e.message):
                    wrong.append((what, e.field, e.message))
    assert not wrong, wrong[:5]


def _decodes(data: bytes) -> bool:
    """Whether the relay reads ``data`` as a frame and goes on (it then reaches the core)."""
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(data)
    try:
        decoder.next_frame()
    except wire.RemoteProtocolError as e:
        return e.code in wire.RESUMABLE_CODES
    return True


async def test_a_live_server_answers_every_mutated_frame_and_keeps_serving_the_good_devices(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _attack_live(lambda keys: list(_server_attacks(_seeds(keys))), caplog)


def _pairs_body(*pairs: tuple[str, bytes]) -> bytes:
    """A frame body: a map of (key, packed value) pairs as given (a value may be bytes msgpack refuses)."""
    return bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + v for k, v in pairs)


def _refusals_naming_the_kind() -> list[tuple[str, bytes, int, str | None, str | None]]:
    """(what, the frame, its id, the kind its refusal names or None, the field it names or None): the
    refusals relay19 and relay20 made name the frame's kind. Every field of every request kind just out of
    its range, in a list's first item and a later one (tests/relay/test_relay_wire.py's cases); a body
    msgpack will not read (a str not UTF-8, a key that is an array, a byte 0xc1, cut short, a byte after its
    map), a v or an id refused; and a kind that cannot be known, which none names."""
    from tests.relay.test_relay_wire import _OUT_OF_RANGE  # (the wire's own cases, made from its specs)

    cases: list[tuple[str, bytes, int, str | None, str | None]] = []
    for case_id, data, request_id, path in _OUT_OF_RANGE:
        kind = msgpack.unpackb(data[wire.PREFIX_SIZE :])["kind"]
        cases.append((f"out of range: {case_id}", data, request_id, kind, path))
    p = msgpack.packb
    head = [("v", p(1)), ("id", p(7))]
    envelopes = ("envelopes", p([{"device": 1, "body": b"x"}], use_bin_type=True))
    send = [*head, ("kind", p("send"))]
    whole = _pairs_body(*send, ("to", p("bob")), envelopes)
    for what, body, kind, field in [
        ("to not UTF-8", _pairs_body(*send, ("to", b"\xa3b\xffb"), envelopes), "send", "to"),
        ("to not UTF-8, the kind after it", _pairs_body(*head, ("to", b"\xa3b\xffb"), ("kind", p("send")), envelopes), "send", "to"),
        ("an array as a key in to", _pairs_body(*send, ("to", b"\x81\x91\x01\x02"), envelopes), "send", "to.[1]"),
        ("to the byte 0xc1", _pairs_body(*send, ("to", b"\xc1"), envelopes), "send", None),
        ("cut short", whole[:-2], "send", None),
        ("a byte after the map", whole + b"\x01", "send", None),
        ("v 2", _pairs_body(("v", p(2)), ("id", p(7)), ("kind", p("send")), ("to", p("bob")), envelopes), "send", "v"),
        ("v a str", _pairs_body(("v", p("1")), ("id", p(7)), ("kind", p("send")), ("to", p("bob")), envelopes), "send", "v"),
        ("the byte 0xc1 before the kind", _pairs_body(*head, ("to", b"\xc1"), ("kind", p("send")), envelopes), None, None),
        ("a kind not UTF-8", _pairs_body(*head, ("kind", b"\xa4se\xffd"), ("to", p("bob")), envelopes), None, "kind"),
    ]:  # fmt: skip
        cases.append((what, _raw_frame(body), 7, kind, field))
    return cases


async def test_a_live_server_names_the_kind_of_every_frame_it_refuses_and_costs_no_other_connection_anything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refusals the last two rounds made name the frame's kind (a field out of its range, in a list's
    later item too; a body msgpack will not read; a v or an id), sent on a live relay four connections at a
    time while good devices exchange messages throughout: each gets its error frame, with the request's
    id, the field by its path and the kind, "(in a 'send' frame)" (none where the kind cannot be known);
    none is an internal error or a silent close, and the good devices lose nothing (_attack_live)."""
    cases = {what: rest for what, *rest in _refusals_naming_the_kind()}
    errors = await _attack_live(lambda keys: [(what, c[0], False) for what, c in cases.items()], caplog)
    first: dict[str, wire.ErrorFrame] = {}
    for what, error in errors:
        first.setdefault(what, error)
    assert set(first) == set(cases), set(cases) - set(first)
    wrong = []
    for what, (_data, request_id, kind, field) in cases.items():
        e = first[what]
        named = e.message.endswith(f" (in a {kind!r} frame)") if kind else " frame)" not in e.message
        if not named or e.id != request_id or (field is not None and e.field != field):
            wrong.append((what, e.id, e.field, e.message))
    assert not wrong, wrong[:5]


# A frame written in pieces: each piece a write of its own, the relay's reads between them.
Pieces = tuple[bytes, ...]


async def _attack_live(
    attacks_of: Callable[[dict[str, DeviceKeys]], list[tuple[str, bytes | Pieces, bool]]],
    caplog: pytest.LogCaptureFixture,
) -> list[tuple[str, wire.ErrorFrame]]:
    """The attacks (what, bytes or pieces of bytes, whether to end the stream after them) made on a live
    relay, four connections at a time, each followed by a ping on its connection, while good devices talk
    beside them: every refusal is an error frame (never a silent close, never internal_error), one about a
    field names it, one answered in its place fits what the relay reserves, every envelope the relay
    acknowledged is delivered, and the good devices' messages all arrive."""
    keys = _keys()
    core = new_core()
    accepted: dict[bytes, str] = {}  # envelope id → the attack whose send the relay acknowledged
    errors: list[tuple[str, wire.ErrorFrame]] = []
    closed_silently: list[str] = []
    async with running(core, connection_rate=None, max_connections_per_address=None) as server:
        good = await _good_devices(server.port, keys, carol=True)
        group = await good["alice"].request(
            lambda i: wire.CreateGroup(id=i, group=G, members=("bob", "carol"))
        )
        assert isinstance(group, wire.GroupUpdated), group
        sent_good: list[bytes] = []
        attacks = attacks_of(keys)
        done = trio.Event()

        async def attack(lane: list[tuple[int, tuple[str, bytes | Pieces, bool]]]) -> None:
            attacker: WireClient | None = None
            for n, (what, data, end) in lane:
                whole = data if type(data) is bytes else b"".join(data)
                if attacker is None:
                    attacker = await WireClient.connect(server.port)
                    if _decodes(whole):  # (a frame the relay closes on needs no device to be sent from)
                        await attacker.authenticate(keys["carol"])
                ping = 2**40 + n
                if type(data) is bytes:
                    await attacker.stream.send_all(data)
                else:
                    for piece in data:
                        await attacker.stream.send_all(piece)
                        await trio.sleep(0.0005)  # (the relay reads what has come, then waits for more)
                if end:
                    await attacker.stream.send_eof()
                else:
                    await attacker.stream.send_all(wire.encode(wire.Ping(id=ping)))
                error = None
                with trio.fail_after(10):
                    while True:
                        try:
                            frame = await attacker.next_frame()
                        except (EOFError, trio.BrokenResourceError):
                            if error is None:
                                closed_silently.append(what)
                            await attacker.aclose()
                            attacker = None
                            break
                        if isinstance(frame, wire.ErrorFrame):
                            error = frame
                            errors.append((what, frame))
                        elif isinstance(frame, wire.Sent | wire.GroupSent):
                            accepted.update(dict.fromkeys(frame.envelope_ids, what))
                        elif isinstance(frame, wire.Pong) and frame.id == ping:
                            break
            if attacker is not None:
                await attacker.aclose()

        async def talk() -> None:  # the good devices go on talking while the attacks go on
            while not done.is_set():
                sent_good.extend(await good["alice"].send("bob", [1], b"good %d" % len(sent_good)))
                await trio.sleep(0.005)

        lanes = 4
        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            async with trio.open_nursery() as attacking:
                for lane in range(lanes):
                    attacking.start_soon(attack, list(enumerate(attacks))[lane::lanes])
            done.set()
        carol = await WireClient.connect(server.port)
        await carol.authenticate(keys["carol"])
        delivered = {e.id for client in (*good.values(), carol) for e in await client.drain()}
    assert not closed_silently, closed_silently[:5]
    assert not [(w, e) for w, e in errors if e.code == E.INTERNAL_ERROR], errors
    unnamed = [(w, e) for w, e in errors if e.code in FIELD_CODES and not e.field]
    assert not unnamed, unnamed[:5]
    # a frame answered in its place (the connection read on) is answered within what the relay reserves
    # for it (a long key's field was the key, cut at 4,096 characters: 4,272 bytes of answer)
    large = [
        (w, len(wire.encode(e)))
        for w, e in errors
        if e.code in {c.value for c in wire.RESUMABLE_CODES}
        and len(wire.encode(e)) > relay_server._SMALL_ANSWER
    ]
    assert not large, large[:5]
    assert sent_good and set(sent_good) <= delivered
    assert {i: w for i, w in accepted.items() if i not in delivered} == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    return errors


# Every msgpack type, and the edges of a few: what each field of each kind meets in the attack below.
EVERY_TYPE = [None, True, False, 0, 2**64 - 1, -(2**63), -1, 1.5, "", "bob", b"", bytes(16), bytes(32), [], [1], {},
              {"a": 1}, msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0)]  # fmt: skip


def _every_type_in_every_field(
    keys: dict[str, DeviceKeys], paths: dict[str, tuple[Any, ...]]
) -> list[tuple[str, bytes | Pieces, bool]]:
    """For every request kind, every field at every depth (a list's first item), given every msgpack type
    in turn; and every kind's valid frame written a byte at a time (split at every byte). ``paths``: each
    attack's field, by what it is called."""
    attacks: list[tuple[str, bytes | Pieces, bool]] = []
    for seed in _seeds(keys):
        frame = _wire_map(seed)
        longer, last_places = _last_items(seed)
        places = [(frame, p) for p in _paths(frame) if not any(type(k) is int and k for k in p)]
        for within, path in [*places, *((longer, p) for p in last_places)]:
            if path[0] in ("v", "kind"):
                continue  # (v and kind: the other live attacks)
            # (a list's first item, and the last of a list of three: a check that read the first alone, or
            # stopped early, or named a later item's fault by another index, is caught)
            for value in EVERY_TYPE:
                changed = copy.deepcopy(within)
                _at(changed, path[:-1])[path[-1]] = value
                what = f"{seed.kind} (id {seed.id}): {path} = {value!r}"
                paths[what] = path
                attacks.append((what, _raw_frame(msgpack.packb(changed, use_bin_type=True)), False))
        data = wire.encode(seed)
        pieces = tuple(data[i : i + 1] for i in range(len(data)))
        attacks.append((f"{seed.kind} (id {seed.id}): split at every byte", pieces, False))
    return attacks


async def test_a_live_server_answers_every_type_in_every_field_of_every_kind_and_frames_split_at_every_byte(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every field of every request kind, at every depth, given every msgpack type (the attack before this
    one gives each top-level field three, in turn), and every kind's frame written a byte at a time, on a
    live relay beside good devices: each refusal names its frame (its id, but where the id is what is
    wrong) and, when a field is at fault, the field (its path); a valid frame split anywhere is read as
    itself; nothing accepted is lost."""
    paths: dict[str, tuple[Any, ...]] = {}
    errors = await _attack_live(lambda keys: _every_type_in_every_field(keys, paths), caplog)
    wrong_id = [(w, e) for w, e in errors if paths.get(w, ("",))[0] != "id" and f"(id {e.id})" not in w]
    assert not wrong_id, wrong_id[:5]
    split = [
        (w, e)
        for w, e in errors
        if w not in paths and e.code in {c.value for c in FIELD_CODES} | {"malformed_msgpack"}
    ]
    assert not split, split[:5]  # (a valid frame, split: never refused as a frame)
    elsewhere = [
        (w, e)
        for w, e in errors
        if w in paths
        and e.code in {c.value for c in FIELD_CODES}
        and not _names(e.field or "", paths[w])
        and f"{paths[w][-1]}" not in e.message  # (a bound between two fields: second below first, by first)
    ]
    assert not elsewhere, [(w, e.field, e.message) for w, e in elsewhere]


def _names(field: str, path: tuple[Any, ...]) -> bool:
    """Whether an error's field names the place at ``path`` or one inside or around it (a map put where a
    field was is refused by its first key, ``signed_prekey.a``; a list's item by its index)."""
    said = "".join(f"[{k}]" if type(k) is int else f".{k}" for k in path).lstrip(".")
    return (
        field == said
        or field.startswith((said + ".", said + "["))
        or said.startswith((field + ".", field + "["))
    )


def _raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _padded_ping(size: int) -> bytes:
    """A ping whose body is exactly ``size`` bytes: padded with an unknown key's str value."""
    for pad in range(size - 64, size):
        body = msgpack.packb({"v": 1, "id": 70, "kind": "ping", "pad": "p" * pad})
        if len(body) == size:
            return _raw_frame(body)
    raise AssertionError(size)


def _send_of(size: int, to: str) -> wire.Send:
    """A send to ``to``'s device 1 whose frame body is exactly ``size`` bytes."""
    for n in range(size - 64, size):
        frame = wire.Send(id=71, to=to, envelopes=(wire.OutgoingEnvelope(1, b"b" * n),))
        if len(wire.encode_body(frame)) == size:
            return frame
    raise AssertionError(size)


async def test_a_live_server_at_the_bounds_and_under_floods_keeps_serving_the_good_devices(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a live server, while two good devices talk through it: frames of exactly the size bound
    and one byte past it, msgpack ext values and keys, a key nested as deep as msgpack reads, 20,000
    frames in one write, and a connection that writes requests and never reads its answers. Each bad
    frame gets its specific error (never internal_error), the connection reads on after what it can,
    no connection holds more than its unsent bound, every good message arrives, nothing is logged as
    an error."""
    keys = _keys()
    core = new_core()
    limit = wire.DEFAULT_MAX_FRAME_SIZE
    bound = 1024 * 1024 + limit  # relay.server's default unsent bound, and the one answer past it
    async with running(core, connection_rate=None, max_connections_per_address=None) as server:
        good = await _good_devices(server.port, keys)
        sent_good: list[bytes] = []
        done = trio.Event()
        held: list[int] = []

        async def talk() -> None:
            while not done.is_set():
                sent_good.extend(await good["alice"].send("bob", [1], b"good %d" % len(sent_good)))
                held.append(max((c.unsent for c in server._connections.values()), default=0))
                await trio.sleep(0.005)

        async def closes_with(data: bytes, code: str, field: str | None) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(data)
            decoder = wire.FrameDecoder("device")
            with trio.fail_after(10):
                while True:
                    got = await stream.receive_some(65536)
                    decoder.receive_data(got)
                    if not got:
                        break
            answers = []
            while (frame := decoder.next_frame()) is not wire.CLOSED:
                answers.append(frame)
            (error,) = answers
            assert isinstance(error, wire.ErrorFrame) and (error.code, error.field) == (code, field), error
            await stream.aclose()

        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            # exactly the bound: read (a ping with an unknown key answered unknown_field, a send too
            # large for its envelope refused envelope_too_large), the connection reading on
            at_bound = await WireClient.connect(server.port)
            await at_bound.authenticate(keys["alice"])
            await at_bound.stream.send_all(_padded_ping(limit) + wire.encode(_send_of(limit, "bob")))
            first, second = await at_bound.next_frame(), await at_bound.next_frame()
            assert isinstance(first, wire.ErrorFrame) and (first.code, first.field) == (
                "unknown_field",
                "pad",
            )
            assert isinstance(second, wire.ErrorFrame) and second.code == "envelope_too_large", second
            # the largest body the relay takes goes, and comes to bob whole in one frame
            largest = core.max_body_size
            (big_id,) = await at_bound.send("bob", [1], b"L" * largest)
            assert isinstance(await at_bound.request(lambda i: wire.Ping(id=i)), wire.Pong)
            await at_bound.aclose()
            # one byte past it: frame_too_large from the prefix alone, closed
            await closes_with(_padded_ping(limit + 1)[:4], "frame_too_large", "length")
            # ext values and keys; keys that are maps; nesting as deep as msgpack reads
            ping = {"v": 1, "id": 9, "kind": "ping"}
            for body, code, field in [
                (msgpack.packb({**ping, "id": msgpack.ExtType(1, b"")}), "wrong_type", "id"),
                (msgpack.packb({**ping, "kind": msgpack.Timestamp(1, 0)}), "wrong_type", "kind"),
                (
                    msgpack.packb({**ping, msgpack.ExtType(2, b"k"): 1}),
                    "wrong_type",
                    "ext 2 b'k'",
                ),
                (
                    msgpack.packb({"v": 1, "id": 9, "kind": "receive", "limit": msgpack.ExtType(3, b"")}),
                    "wrong_type",
                    "limit",
                ),
                (
                    msgpack.packb(ping).replace(b"\x83", b"\x84", 1)
                    + b"\x81" * 900
                    + b"\x01\x01"
                    + b"\x01" * 900,
                    "wrong_type",
                    "{{{{…}: 1}: 1}: 1}",
                ),
                (b"\x91" * 5000 + b"\xc0", "malformed_msgpack", None),
            ]:
                await closes_with(_raw_frame(body), code, field)
            # 20,000 frames in one write, pings and unknown kinds alternating: each answered, in order
            many = await WireClient.connect(server.port)
            unknown = _raw_frame(msgpack.packb({"v": 1, "id": 1, "kind": "zzz"}))
            ids: list[int] = []

            async def read_all() -> None:
                while len(ids) < 20_000:
                    ids.append((await many.next_frame()).id)

            with trio.fail_after(60):
                async with (
                    trio.open_nursery() as both
                ):  # (it reads as it writes: a device that does not is the hog's case)
                    both.start_soon(read_all)
                    await many.stream.send_all(
                        b"".join(wire.encode(wire.Ping(id=2)) + unknown for _ in range(10_000))
                    )
            assert ids == [2, 1] * 10_000
            await many.aclose()
            # a connection that writes and never reads: read only while its answers fit its bound
            hog = await trio.open_tcp_stream("127.0.0.1", server.port)
            with trio.move_on_after(2):  # (its socket buffers fill, then the write waits)
                await hog.send_all(b"".join(wire.encode(wire.GetKeyLogHead(id=i)) for i in range(1, 50_000)))
            await trio.sleep(0.5)
            sent_before = len(sent_good)
            await trio.sleep(0.5)
            assert len(sent_good) > sent_before  # the good devices still talk
            await hog.aclose()
            done.set()
        delivered = {e.id: e for e in await good["bob"].drain()}
        for client in good.values():
            await client.aclose()
    assert sent_good and set(sent_good) <= set(delivered)
    assert delivered[big_id].body == b"L" * largest
    assert max(held) <= bound, max(held)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(
    ("tail", "code", "request_id"),
    [
        (_raw_frame(b"\xc1"), "malformed_msgpack", 0),  # 0xc1: never used in msgpack
        (struct.pack(">I", 2**32 - 1), "frame_too_large", 0),
        (struct.pack(">I", 100) + b"\x80", "truncated_frame", 0),  # then the end: cut off inside a frame
        (b"", None, 0),  # the end after them (a half-close): no error
        # a frame whose map was read: its id (it was 0)
        (_raw_frame(msgpack.packb({"v": 1, "id": 105, "kind": "ping"}) + b"\x01"), "malformed_msgpack", 105),
        (
            _raw_frame(b"\x84" + msgpack.packb({"v": 1, "id": 106, "kind": "ping"})[1:] + b"\xa1v\x01"),
            "invalid_value",
            106,
        ),  # a key named twice
    ],
    ids=["malformed", "too-large", "truncated", "half-closed", "extra-data", "key-twice"],
)
async def test_requests_written_before_a_frame_the_relay_closes_on_are_answered_and_kept(
    tail: bytes, code: str | None, request_id: int
) -> None:
    """Sends pipelined in one write with a bad frame (or the end) behind them: each is answered and
    delivered, then the error comes (about the frame: its request id when its map was read, else 0) and
    the relay closes; nothing it acknowledged is lost."""
    keys = _keys()
    async with running(new_core(), connection_rate=None, max_connections_per_address=None) as server:
        for account in ("alice", "bob"):
            client = await WireClient.connect(server.port)
            await client.register(keys[account])
            await client.aclose()
        alice = await WireClient.connect(server.port)
        await alice.authenticate(keys["alice"])
        sends = [
            wire.Send(id=100 + i, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"m%d" % i),))
            for i in range(5)
        ]
        await alice.stream.send_all(b"".join(wire.encode(s) for s in sends) + tail)
        await alice.stream.send_eof()
        answers: list[wire.Frame] = []
        with trio.fail_after(10):
            while True:
                try:
                    answers.append(await alice.next_frame())
                except EOFError:
                    break
        await alice.aclose()
        assert [(a.kind, a.id) for a in answers[:5]] == [("sent", 100 + i) for i in range(5)], answers
        if code is None:
            assert len(answers) == 5, answers
        else:
            (error,) = answers[5:]
            assert isinstance(error, wire.ErrorFrame) and (error.code, error.id) == (code, request_id), error
        accepted = {i for a in answers[:5] if isinstance(a, wire.Sent) for i in a.envelope_ids}
        bob = await WireClient.connect(server.port)
        await bob.authenticate(keys["bob"])
        got = {e.id: e.body for e in await bob.drain()}
        await bob.aclose()
    assert set(got) == accepted and sorted(got.values()) == [b"m%d" % i for i in range(5)]


async def _answers(stream: trio.abc.Stream, within: float) -> tuple[list[wire.Frame], bool]:
    """What the relay writes on ``stream`` until it closes (True) or ``within`` seconds pass (False)."""
    decoder = wire.FrameDecoder("device")
    frames: list[wire.Frame] = []
    with trio.move_on_after(within):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return frames, True
            decoder.receive_data(data)
            while (frame := decoder.next_frame()) not in (wire.NEED_DATA, wire.CLOSED):
                assert isinstance(frame, wire.Frame)
                frames.append(frame)
            if not data:
                return frames, True
    return frames, False


# Request ids of every msgpack type a peer may send: the uints are echoed (the largest a uint64), the
# others refused naming the id; and no error echoes what is no id (test_relay_wire: only a uint, once).
ODD_IDS: list[tuple[object, str | None]] = [
    (0, None), (2**32, None), (2**64 - 1, None), (-1, "invalid_value"), (-(2**63), "invalid_value"),
    (1.5, "wrong_type"), (math.nan, "wrong_type"), (b"\x01", "wrong_type"), (None, "wrong_type"),
    (True, "wrong_type"), ("7", "wrong_type"), ([7], "wrong_type"), ({"a": 1}, "wrong_type"),
    (msgpack.ExtType(1, b""), "wrong_type"),
]  # fmt: skip
ODD_VERSIONS: list[tuple[object, str]] = [
    (0, "unsupported_version"), (2, "unsupported_version"), (-1, "unsupported_version"),
    (2**64 - 1, "unsupported_version"), (-(2**63), "unsupported_version"), (1.0, "wrong_type"),
    (True, "wrong_type"), (None, "wrong_type"), ("1", "wrong_type"), (b"\x01", "wrong_type"),
]  # fmt: skip


async def test_a_live_server_meets_odd_ids_and_versions_split_frames_half_closes_and_silence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a live server (a short read timeout), while two good devices talk through it: a request
    id and a version of every msgpack type, a send written a byte at a time, connections half-closed
    after their requests or inside a frame, and connections that send nothing, or a frame's beginning,
    or a byte now and then, until the read timeout. Each gets its answer or its specific error (the
    request's id where it can be read), the silent ones a timeout (not before it falls due), and the
    good devices all their messages; every envelope the relay acknowledged is delivered."""
    keys = _keys()
    core = new_core()
    read_timeout = 1.5
    problems: list[str] = []
    accepted: set[bytes] = set()
    async with running(
        core, connection_rate=None, max_connections_per_address=None, read_timeout=read_timeout
    ) as server:
        good = await _good_devices(server.port, keys, carol=True)
        sent_good: list[bytes] = []
        done = trio.Event()

        async def talk() -> None:
            while not done.is_set():
                sent_good.extend(await good["alice"].send("bob", [1], b"good %d" % len(sent_good)))
                await trio.sleep(0.005)

        async def keep_bob() -> None:  # bob only receives: a ping now and then keeps him connected
            while not done.is_set():
                assert isinstance(await good["bob"].request(lambda i: wire.Ping(id=i)), wire.Pong)
                await trio.sleep(read_timeout / 5)

        async def one_frame(frame: dict[Any, Any], what: str, code: str | None, request_id: int) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(_raw_frame(msgpack.packb(frame, use_bin_type=True)))
            got, closed = await _answers(stream, 5 if code else 0.5)
            await stream.aclose()
            want = [("pong", request_id, None)] if code is None else [("error", request_id, code)]
            seen = [(f.kind, f.id, getattr(f, "code", None)) for f in got]
            if seen != want or closed != (code is not None):
                problems.append(f"{what}: {seen} (closed: {closed}), expected {want}")
            for f in got:
                if isinstance(f, wire.ErrorFrame) and f.field not in ("id", "v"):
                    problems.append(f"{what}: field {f.field!r}")

        async def oddities() -> None:
            for value, code in ODD_IDS:
                echo = value if code is None else 0
                assert isinstance(echo, int)
                await one_frame({"v": 1, "id": value, "kind": "ping"}, f"id {value!r}", code, echo)
            for value, code in ODD_VERSIONS:
                await one_frame({"v": value, "id": 9, "kind": "ping"}, f"v {value!r}", code, 9)

        async def as_carol(data: bytes, *, bytewise: bool, end: bool) -> tuple[list[wire.Frame], bool]:
            client = await WireClient.connect(server.port)
            await client.authenticate(keys["carol"])
            if bytewise:
                for i in range(len(data)):
                    await client.stream.send_all(data[i : i + 1])
                    await trio.sleep(0.001)
            else:
                await client.stream.send_all(data)
            if end:
                await client.stream.send_eof()
            got, closed = await _answers(client.stream, 5)
            await client.aclose()
            for f in got:
                if isinstance(f, wire.Sent):
                    accepted.update(f.envelope_ids)
            return got, closed

        async def splits_and_half_closes() -> None:
            send = wire.Send(id=31, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"split"),))
            requests = wire.encode(send) + wire.encode(wire.Ping(id=32))
            got, closed = await as_carol(requests, bytewise=True, end=False)  # (then silent: timed out)
            kinds = [(f.kind, f.id, getattr(f, "code", None)) for f in got]
            if kinds != [("sent", 31, None), ("pong", 32, None), ("error", 0, "timeout")] or not closed:
                problems.append(f"a byte at a time: {got} (closed: {closed})")
            got, closed = await as_carol(requests, bytewise=False, end=True)  # then half-closed
            if [(f.kind, f.id) for f in got] != [("sent", 31), ("pong", 32)] or not closed:
                problems.append(f"half-closed after its requests: {got} (closed: {closed})")
            got, closed = await as_carol(requests + requests[:7], bytewise=False, end=True)  # inside one
            kinds = [(f.kind, f.id, getattr(f, "code", None)) for f in got]
            if (
                kinds != [("sent", 31, None), ("pong", 32, None), ("error", 0, "truncated_frame")]
                or not closed
            ):
                problems.append(f"half-closed inside a frame: {got} (closed: {closed})")

        async def silent(first: bytes, drip: bytes, what: str) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            started = trio.current_time()
            await stream.send_all(first)
            async with trio.open_nursery() as dripping:

                async def drip_bytes() -> None:
                    for i in range(len(drip)):
                        await trio.sleep(read_timeout / 4)
                        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                            await stream.send_all(drip[i : i + 1])

                if drip:
                    dripping.start_soon(drip_bytes)
                got, closed = await _answers(stream, read_timeout * 4)
                dripping.cancel_scope.cancel()
            took = trio.current_time() - started
            await stream.aclose()
            kinds = [(f.kind, f.id, getattr(f, "code", None)) for f in got]
            if (
                kinds != [("error", 0, "timeout")] or not closed or took < read_timeout
            ):  # (within 4: _answers)
                problems.append(f"{what}: {got} (closed: {closed}) after {took:.2f} s")

        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            talking.start_soon(keep_bob)
            async with trio.open_nursery() as attacking:
                attacking.start_soon(oddities)
                attacking.start_soon(splits_and_half_closes)
                attacking.start_soon(silent, b"", b"", "a connection that sends nothing")
                attacking.start_soon(
                    silent, wire.encode(wire.Ping(id=1))[:6], b"", "a frame begun, then nothing"
                )
                attacking.start_soon(silent, b"", wire.encode(wire.Ping(id=1)) * 2, "a byte now and then")
            done.set()
        delivered = {e.id for e in await good["bob"].drain()}
        for client in good.values():
            await client.aclose()
    assert not problems, problems
    assert sent_good and set(sent_good) <= delivered
    assert accepted and accepted <= delivered
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def _wide(obj: Any, wider: Callable[[], bool]) -> bytes:
    """``obj`` packed as msgpack with each map's, array's, str's, bin's and int's header in a longer form
    than the shortest wherever ``wider()`` says so (another client's encoder may write map32 for 3 keys)."""
    if isinstance(obj, dict | list):
        n = len(obj)
        fix, h16, h32 = (0x80, b"\xde", b"\xdf") if isinstance(obj, dict) else (0x90, b"\xdc", b"\xdd")
        head = (
            h32 + struct.pack(">I", n)
            if wider()
            else h16 + struct.pack(">H", n)
            if wider() or n > 15
            else bytes([fix | n])
        )
        items = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        return head + b"".join(_wide(x, wider) for x in items)
    if type(obj) is str and wider():
        data = obj.encode()
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if type(obj) is bytes and wider():
        return b"\xc6" + struct.pack(">I", len(obj)) + obj
    if type(obj) is int and wider():
        return b"\xcf" + struct.pack(">Q", obj) if obj >= 0 else b"\xd3" + struct.pack(">q", obj)
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


ODD_VALUES: list[tuple[str, bytes]] = [
    ("ext 5", b"\xd4\x05\x00"),
    ("ext -5 (reserved)", b"\xd4\xfb\x00"),
    ("ext -128 (reserved)", b"\xc7\x00\x80"),
    ("timestamp", msgpack.packb(msgpack.Timestamp(1, 2))),
    ("timestamp of 3 bytes", b"\xc7\x03\xff\x00\x00\x00"),
    ("timestamp of 10**9 ns", b"\xc7\x0c\xff" + struct.pack(">Iq", 10**9, 0)),
    ("float32 1.0", b"\xca" + struct.pack(">f", 1.0)),
    ("-0.0", msgpack.packb(-0.0)),
    ("nan", msgpack.packb(math.nan)),
    ("uint64 max", msgpack.packb(2**64 - 1)),
    ("int64 min", msgpack.packb(-(2**63))),
    ("0-length str", b"\xa0"),
    ("0-length bin", b"\xc4\x00"),
    ("map of a 0-length key", b"\x81\xa0\x01"),
    ("map32 of a key named twice", b"\xdf\x00\x00\x00\x02\xa1a\x01\xa1a\x02"),
    ("fixmap of a key named twice", b"\x82\xa1a\x01\xa1a\x02"),
    ("keys 1 and true", b"\x82\x01\x01\xc3\x01"),
]
MSGPACK_WORDS = ("Unpack failed", "unpack(b)", "code must be", "exceeds max_", "nanoseconds must")


def _live_odd_attacks(keys: dict[str, DeviceKeys]) -> Iterator[tuple[str, bytes, bool]]:
    """(what, bytes, whether the relay must read on past it): valid frames in longer headers, odd values at
    every top-level field in both, device ids out of range, bodies cut short, too deep, many maps."""
    rng = random.Random(14)
    for seed in _seeds(keys):
        raw = _wire_map(seed)
        for p in (1.0, 0.5):
            yield (
                f"{seed.kind} in longer headers ({p})",
                _raw_frame(_wide(raw, lambda p=p: rng.random() < p)),
                True,
            )
        for key in [k for k in raw if k not in ("v", "kind")]:
            for name, value in ODD_VALUES:
                body = _wide({**raw, key: "\x00mark"}, lambda: rng.random() < 0.3)
                for mark in (b"\xa5\x00mark", b"\xdb\x00\x00\x00\x05\x00mark"):
                    body = body.replace(mark, value, 1)
                yield f"{seed.kind}.{key} = {name}", _raw_frame(body), False
        full = wire.encode_body(seed)
        for cut in sorted({1, len(full) // 3, len(full) // 2, len(full) - 1}):
            yield f"{seed.kind} cut at {cut}", _raw_frame(full[:cut]), False
    for device in (0, 128, 2**32 - 1):
        send = {"v": 1, "id": 9, "kind": "send", "to": "bob", "envelopes": [{"device": device, "body": b"x"}]}
        yield f"send to device {device}", _raw_frame(_wide(send, lambda: rng.random() < 0.5)), False
        ask = {"v": 1, "id": 9, "kind": "auth_challenge", "account": "bob", "device": device}
        yield f"auth_challenge of device {device}", _raw_frame(msgpack.packb(ask)), False
    yield (
        "nested 2,000 deep",
        _raw_frame(b"\x84\xa1v\x01\xa2id\x09\xa4kind\xa4ping\xa1x" + b"\x91" * 2000 + b"\xc0"),
        False,
    )
    many = b"\xdd" + (50_000).to_bytes(4, "big") + b"\xde\x00\x01\xa0\xc0" * 50_000
    for _ in range(3):  # (read whole and answered unknown_field: the connection reads on)
        yield (
            "50,000 map16s in an unknown field",
            _raw_frame(b"\xde\x00\x04\xa1v\x01\xa2id\x09\xa4kind\xa4ping\xa1x" + many),
            True,
        )


async def test_a_live_server_meets_longer_headers_odd_values_and_cut_bodies_and_keeps_serving() -> None:
    """The relay's answers to frames of odd forms, live, with good devices beside: a valid frame in longer
    msgpack headers is read as itself; every odd value (ext types reserved or not, timestamps, floats,
    -0.0, 64-bit extremes, empty keys, keys named twice in either header width) and every body cut short
    or nested too deep gets an error naming the field or the fault in the protocol's words (never
    msgpack's), before any close; nothing the good devices sent is lost."""
    keys = _keys()
    core = new_core()
    errors: list[tuple[str, wire.ErrorFrame]] = []
    closed_silently: list[str] = []
    closed_on_good: list[str] = []
    async with running(core, connection_rate=None, max_connections_per_address=None) as server:
        good = await _good_devices(server.port, keys, carol=True)
        sent_good: list[bytes] = []
        done = trio.Event()

        async def attack() -> None:
            attacker: WireClient | None = None
            for n, (what, data, reads_on) in enumerate(_live_odd_attacks(keys)):
                if attacker is None:
                    attacker = await WireClient.connect(server.port)
                    await attacker.authenticate(keys["carol"])
                ping = 2**40 + n
                await attacker.stream.send_all(data + wire.encode(wire.Ping(id=ping)))
                error = None
                with trio.fail_after(20):
                    while True:
                        try:
                            frame = await attacker.next_frame()
                        except (EOFError, trio.BrokenResourceError):
                            if error is None:
                                closed_silently.append(what)
                            if reads_on:
                                closed_on_good.append(what)
                            await attacker.aclose()
                            attacker = None
                            break
                        if isinstance(frame, wire.ErrorFrame):
                            error = frame
                            errors.append((what, frame))
                        elif isinstance(frame, wire.Pong) and frame.id == ping:
                            break
            if attacker is not None:
                await attacker.aclose()

        async def talk() -> None:
            while not done.is_set():
                sent_good.extend(await good["alice"].send("bob", [1], b"good %d" % len(sent_good)))
                await trio.sleep(0.005)

        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            await attack()
            done.set()
        delivered = {e.id for e in await good["bob"].drain()}
    assert not closed_silently, closed_silently[:5]
    assert not closed_on_good, closed_on_good[:5]
    assert not [(w, e) for w, e in errors if e.code == E.INTERNAL_ERROR], errors[:5]
    assert not [(w, e) for w, e in errors if e.code in FIELD_CODES and not e.field][:5]
    assert not [(w, e.message) for w, e in errors if any(x in e.message for x in MSGPACK_WORDS)][:5]
    decoder_codes = {
        E.MALFORMED_MSGPACK,
        E.NOT_A_MAP,
        E.MISSING_FIELD,
        E.UNKNOWN_FIELD,
        E.WRONG_TYPE,
        E.UNKNOWN_KIND,
    }
    assert not [
        (w, e.code, e.message) for w, e in errors if "longer headers" in w and e.code in decoder_codes
    ]
    assert sent_good and set(sent_good) <= delivered


@pytest.mark.parametrize("p", [0.3, 0.7, 1.0])
def test_every_valid_frame_in_longer_headers_is_read_as_itself(p: float) -> None:
    """msgpack allows a longer form for every header (map32 for 3 keys, uint64 for 1, str32, bin32):
    another client's encoder may write one anywhere, and the frame is the same frame."""
    rng = random.Random(p)
    for seed in _seeds(_keys()):
        for _ in range(5):
            body = _wide(_wire_map(seed), lambda: rng.random() < p)
            assert wire.decode_body(body, wire.REQUEST_KINDS) == seed
