"""The device's side against a hostile or broken relay, over the trio loop (clients.net).

tests/clients/test_hostile_input.py feeds hostile frames to the agent (``DeviceAgent.handle``); here
a fake relay (test_client_link's, over ``trio.testing`` memory streams, on the virtual clock) writes
bytes no relay should: frames too long, cut off, of unknown kinds or with unknown fields, answers of
the wrong kind or under the wrong request id, no answer at all. What must hold: no exception but the
documented ones reaches the caller (``RequestRefused``, ``SendFailed``), each naming the frame or the
field; nothing waits forever (a keepalive ping the relay leaves unanswered drops the connection);
what the device had (its sessions) is kept; and the connection goes on, or is made again, and works.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from relaysim.clients.agent import Failed
from relaysim.clients.link import DEFAULT_KEEPALIVE_TIMEOUT, MAIN, Answered, DeviceLink
from relaysim.clients.net import DeviceConnection, RequestRefused, SendFailed
from relaysim.clients.session import PeerAddress
from relaysim.relay import wire
from tests.clients.test_client_link import FakeRelay, RelayTask, connection, make_agent, requests

# What the hostile relay writes instead of its answer to a request: frames' bytes, and None to close.
Forge = Callable[[wire.Request, wire.Response], list[bytes | None]]


def _raw(body: object) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">I", len(packed)) + packed


class _Twice(tuple[tuple[Any, Any], ...]):
    """A map's pairs as written, a key named twice kept (a dict cannot hold them)."""

    def __new__(cls, *pairs: tuple[Any, Any]) -> _Twice:
        return super().__new__(cls, pairs)


def _pairs(pairs: _Twice) -> bytes:
    body = bytes([0x80 | len(pairs)])
    for key, value in pairs:
        body += msgpack.packb(key) + (_pairs(value) if type(value) is _Twice else msgpack.packb(value))
    return body


def _raw_pairs(*pairs: tuple[Any, Any]) -> bytes:
    """A frame whose map (and the maps in it given as _Twice) is written pair by pair, repeats kept."""
    packed = _pairs(_Twice(*pairs))
    return struct.pack(">I", len(packed)) + packed


class HostileRelay(RelayTask):
    """The fake relay, whose answer to the first request ``target`` picks goes through ``forge``."""

    def __init__(self, nursery: trio.Nursery, relay: FakeRelay, account: str) -> None:
        super().__init__(nursery, relay, account)
        self.target: Callable[[wire.Request], bool] = lambda f: False
        self.forge: Forge = lambda request, answer: [wire.encode(answer)]

    def attack(self, target: Callable[[wire.Request], bool], forge: Forge) -> None:
        self.target, self.forge = target, forge

    async def serve(self, stream: trio.abc.Stream) -> None:
        async with stream, aclosing(self.requests(stream)) as requests:
            async for frame in requests:
                answer = self.relay.answer(frame, self.account)
                out: list[bytes | None] = [wire.encode(answer)]
                if self.target(frame):
                    self.target = lambda f: False
                    out = self.forge(frame, answer)
                try:
                    for data in out:
                        if data is None:
                            return
                        await stream.send_all(data)
                except trio.BrokenResourceError:
                    return


@asynccontextmanager
async def _alice(fake: FakeRelay, **options: Any) -> AsyncIterator[tuple[HostileRelay, DeviceConnection]]:
    """Alice's connection (test_client_link's ``connection``, with ``options``) to a hostile relay in
    front of ``fake``; the relay's tasks are cancelled when the block ends."""
    async with trio.open_nursery() as nursery:
        relay = HostileRelay(nursery, fake, "alice")
        async with connection(relay, make_agent("alice"), **options) as conn:
            yield relay, conn
        nursery.cancel_scope.cancel()


async def _talking(conn: DeviceConnection) -> dict[str, Any]:
    """Alice registered, logged in, and in a session with bob (a message sent): her device as data."""
    await conn.register()
    await conn.login()
    await conn.send_text("bob", b"before")
    return conn.agent.device.to_dict()


def _short_key_bundle(request_id: int) -> bytes:
    """A ``bundle`` frame whose one device's identity key is a byte short."""
    spk = wire.SignedPrekey(id=1, public=bytes(32), signature=bytes(64))
    kem = wire.KemPrekey(id=1, public=bytes(wire.KEM_PUBLIC_KEY_SIZE), signature=bytes(64))
    device = wire.DeviceBundle(
        device=1,
        registration_id=1,
        identity_key=bytes(32),
        signed_prekey=spk,
        kem_prekey=kem,
        kem_prekey_last_resort=True,
    )
    body = msgpack.unpackb(wire.encode_body(wire.Bundle(id=request_id, account="bob", devices=(device,))))
    body["devices"][0]["identity_key"] = bytes(31)
    return _raw(body)


def _fake() -> FakeRelay:
    fake = FakeRelay()
    fake.register(make_agent("bob"))
    return fake


def _is_ping(frame: wire.Request) -> bool:
    return isinstance(frame, wire.Ping)


# --- bytes no relay writes: the connection is dropped, made again, and the request answered -------------

BAD_FRAMES: dict[str, tuple[Forge, str]] = {
    "longer than the client's bound": (
        lambda r, a: [struct.pack(">I", wire.DEFAULT_MAX_FRAME_SIZE + 1)],
        "frame_too_large: frame length 262145 exceeds the maximum of 262144 bytes",
    ),
    "cut off, then closed": (
        lambda r, a: [wire.encode(a)[:6], None],
        "truncated_frame: connection closed with 6 bytes of an incomplete frame",
    ),
    "no id": (
        lambda r, a: [_raw({"v": 1, "kind": "pong"})],
        "missing_field: id is missing (in a 'pong' frame)",
    ),
    "a text id": (
        lambda r, a: [_raw({"v": 1, "id": str(r.id), "kind": "pong"})],
        "wrong_type: id must be an unsigned integer, got str",
    ),
    "nested 3,000 deep": (
        lambda r, a: [struct.pack(">I", 3000) + b"\x91" * 3000],
        "malformed_msgpack: frame body is not one msgpack value: it is nested deeper than 1,024 maps and arrays",
    ),
    "not a map": (lambda r, a: [_raw([1, 2])], "not_a_map: frame body must be a msgpack map, got array"),
    "empty": (lambda r, a: [struct.pack(">I", 0)], "malformed_msgpack: frame body is empty (length 0)"),
    "another protocol version": (
        lambda r, a: [_raw({"v": 2, "id": r.id, "kind": "pong"})],
        "unsupported_version: v must be 1",
    ),
    "a bundle whose identity key is 31 bytes": (
        lambda r, a: [_short_key_bundle(r.id)],
        "devices[0].identity_key",
    ),
    "a deliver whose envelope body is a number": (
        lambda r, a: [
            _raw(
                {
                    "v": 1,
                    "id": 0,
                    "kind": "deliver",
                    "envelope": {"id": bytes(16), "body": 5, "timestamp": 1, "sealed": False},
                }
            )
        ],
        "wrong_type: envelope.body must be binary data (msgpack bin), got int (in a 'deliver' frame)",
    ),
    "closed with no answer": (lambda r, a: [None], "the relay closed the connection"),
    # docs/protocol.md, Errors: the fields a device does not know are read past, but what every version-1
    # body is holds inside them as anywhere (each key once): refused as the relay refuses it
    "a key named twice inside an unknown field": (
        lambda r, a: [
            _raw_pairs(("v", 1), ("id", r.id), ("kind", "pong"), ("zzz", _Twice(("a", 1), ("a", 2))))
        ],
        "invalid_value: frame body names the key 'a' more than once (at zzz.a); each key once (in a 'pong' frame)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_a_bad_frame_drops_the_connection_which_is_made_again_and_nothing_is_lost(
    case: str, autojump_clock: trio.testing.MockClock
) -> None:
    forge, why = BAD_FRAMES[case]
    fake = _fake()
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        relay.attack(_is_ping, forge)
        with trio.fail_after(100):
            await conn.sync()  # written again on the next connection, and answered there
        assert conn.reconnects == 1
        assert conn.last_drop is not None and why in conn.last_drop
        assert conn.agent.device.to_dict() == state  # its sessions as they were
        await conn.send_text("bob", b"after")  # on the session it had
        assert conn.failures == [] and conn.undecryptable == []
    assert [f.kind for f in fake.seen].count("fetch_bundle") == 1


# --- frames newer than the device speaks, answering nothing it waits for: read past ---------------------

NEWER_FRAMES: dict[str, Forge] = {
    "a push of an unknown kind": lambda r, a: [
        _raw({"v": 1, "id": 0, "kind": "zzz", "x": 1}),
        wire.encode(a),
    ],
    "a push with an unknown field": lambda r, a: [
        _raw({"v": 1, "id": 0, "kind": "error", "code": "timeout", "message": "m", "zzz": 1}),
        wire.encode(a),
    ],
    "an unknown kind under an id it never wrote": lambda r, a: [
        _raw({"v": 1, "id": 2**63, "kind": "zzz"}),
        wire.encode(a),
    ],
    "an unknown field under an id it never wrote": lambda r, a: [
        _raw({"v": 1, "id": 2**63, "kind": "pong", "extra": 1}),
        wire.encode(a),
    ],
}


@pytest.mark.parametrize("case", sorted(NEWER_FRAMES))
async def test_a_frame_of_an_unknown_kind_or_field_that_answers_nothing_awaited_is_read_past(
    case: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The relay reads on past an unknown field or kind (wire.RESUMABLE_CODES); the device dropped its
    connection on one. One that answers no request the device waits for is now counted and ignored (a
    frame with an unknown field read without it), and the frames after it read on the same connection
    (an awaited answer: test_a_relay_that_adds_fields..., test_an_awaited_answer_of_an_unknown_kind...)."""
    fake = _fake()
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        relay.attack(_is_ping, NEWER_FRAMES[case])
        pings = [f.kind for f in fake.seen].count("ping")
        with trio.fail_after(100):
            await conn.sync()  # its answer comes after the frame it cannot read
        assert [f.kind for f in fake.seen].count("ping") == pings + 1  # answered once, not written again
        assert conn.reconnects == 0 and conn.last_drop is None
        if "field" in case:  # read without the field (answering nothing awaited, it changes nothing)
            assert (conn.link.ignored_frames, conn.link.ignored_fields) == (0, 1)
        else:
            assert (conn.link.ignored_frames, conn.link.ignored_fields) == (1, 0)
        assert conn.agent.device.to_dict() == state
        await conn.send_text("bob", b"after")
        assert conn.failures == [] and conn.undecryptable == []


# --- a newer relay: fields added to every answer, or a kind the device does not speak ----------------


def _with_added_fields(value: Any) -> Any:
    """``value`` (a decoded frame) with a field a newer relay might add in every map, at every depth."""
    if isinstance(value, dict):
        return {**{k: _with_added_fields(v) for k, v in value.items()}, "added_later": [1, {"x": 2}]}
    if isinstance(value, list):
        return [_with_added_fields(v) for v in value]
    return value


class NewerRelay(HostileRelay):
    """The fake relay, as a newer relay would answer: every frame with fields this device does not know."""

    async def serve(self, stream: trio.abc.Stream) -> None:
        async with stream, aclosing(self.requests(stream)) as requests:
            async for frame in requests:
                answer = self.relay.answer(frame, self.account)
                out = [_raw(_with_added_fields(msgpack.unpackb(wire.encode_body(answer))))]
                if self.target(frame):
                    out = self.forge(frame, answer)
                try:
                    for data in out:
                        assert data is not None
                        await stream.send_all(data)
                except trio.BrokenResourceError:
                    return


async def test_a_relay_that_adds_fields_to_every_answer_is_read_without_them_and_never_reconnected_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The device dropped the connection on an answer with a field it did not know, and wrote the request
    again on the next connection: a newer relay that adds a field to an answer answers so every time, and
    the device reconnected for ever. Now it reads each answer without the fields it does not know (as a
    protobuf reader does), logged once and counted; register, login, sessions and messages all work on the
    one connection."""
    fake = _fake()
    async with trio.open_nursery() as nursery:
        relay = NewerRelay(nursery, fake, "alice")
        async with connection(relay, make_agent("alice")) as conn:
            with trio.fail_after(100):
                await _talking(conn)
                await conn.sync()
            assert conn.reconnects == 0 and conn.last_drop is None
            assert conn.link.ignored_fields >= 4  # registered, challenge, authenticated, bundle, sent, pong
            assert conn.failures == [] and conn.undecryptable == []
        nursery.cancel_scope.cancel()


async def test_an_awaited_answer_of_an_unknown_kind_fails_its_request_by_name_and_the_connection_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An answer of a kind the device does not speak, to a request it waits for: the connection was
    dropped and the request written again, to be answered so again by a relay that speaks that kind
    (a reconnection loop). Now the request fails, refused with ``unknown_kind`` naming the kind, and the
    connection goes on."""
    fake = _fake()
    async with trio.open_nursery() as nursery:
        relay = NewerRelay(nursery, fake, "alice")
        async with connection(relay, make_agent("alice")) as conn:
            state = await _talking(conn)
            relay.target = _is_ping  # every ping, on every connection
            relay.forge = lambda r, a: [_raw({"v": 1, "id": r.id, "kind": "pong_v2"})]
            for _ in range(3):
                with trio.fail_after(100), pytest.raises(RequestRefused) as info:
                    await conn.sync()
                assert info.value.code == "unknown_kind"
                assert "unknown kind 'pong_v2'" in info.value.message
            assert conn.reconnects == 0 and conn.last_drop is None
            assert conn.agent.device.to_dict() == state
            await conn.send_text("bob", b"after")  # the same connection, the same session
            assert conn.reconnects == 0
        nursery.cancel_scope.cancel()


# --- answers of the wrong kind: the request fails, the connection goes on ---------------------------


async def _certificate(conn: DeviceConnection) -> None:
    await conn.request_certificate()


async def _register_again(conn: DeviceConnection) -> None:
    await conn.register()


async def _rotate(conn: DeviceConnection) -> None:
    await conn.rotate_delivery_token()


async def _sync(conn: DeviceConnection) -> None:
    await conn.sync()


async def _link(conn: DeviceConnection) -> None:
    await conn.link_device(make_agent("alice", 2))


WRONG_KIND: dict[str, tuple[Callable[[DeviceConnection], Any], str]] = {
    "get_sender_certificate": (_certificate, "get_sender_certificate"),
    "register": (_register_again, "register"),
    "upload_prekeys": (_rotate, "upload_prekeys"),
    "ping": (_sync, "ping"),
    "register (a linked device's)": (_link, "register"),
}


@pytest.mark.parametrize("request_kind", sorted(WRONG_KIND))
async def test_an_answer_of_another_kind_to_an_awaited_request_is_refused_by_name(
    request_kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The relay answers the request with a ``bundle`` (a ``pong`` to a ping): the caller gets
    ``RequestRefused`` naming both kinds, not the frame as if it were the answer (a register taken
    as done, or an AssertionError where a sender certificate should be)."""
    call, kind = WRONG_KIND[request_kind]
    fake = _fake()
    other: wire.Response = wire.Bundle(id=0, account="mallory", devices=())
    if kind == "ping":
        other = wire.Acked(id=0, count=1)
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        token = conn.agent.delivery_token
        relay.attack(
            lambda f: f.kind == kind,
            lambda r, a: [wire.encode(dataclasses.replace(other, id=r.id))],
        )
        with trio.fail_after(100), pytest.raises(RequestRefused) as info:
            await call(conn)
        assert info.value.code == "unexpected_answer"
        assert info.value.message == f"the relay answered {other.kind!r} to a {kind!r} request"
        assert conn.agent.certificate is None
        if kind in ("get_sender_certificate", "ping"):
            assert conn.agent.device.to_dict() == state
        if kind == "upload_prekeys":  # (the new token is the device's; the relay never took it)
            assert conn.agent.delivery_token != token
        await conn.sync()  # the same connection still works
        assert conn.reconnects == 0


def test_the_link_reports_an_answer_of_another_kind_as_the_refusal() -> None:
    """Without the trio loop: ``Answered`` carries an ``unexpected_answer`` error frame, once."""
    link = DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive=None)
    link.connection_made(0.0)
    link.agent.ping()
    (ping,) = link.submit()
    link.track(ping.id)
    link.data_to_send(MAIN)
    link.receive_data(wire.encode(wire.Acked(id=ping.id, count=0)))
    events = []
    while (event := link.next_event()) is not wire.NEED_DATA:
        events.append(event)
    (answered,) = events
    assert isinstance(answered, Answered) and isinstance(answered.frame, wire.ErrorFrame)
    assert (answered.frame.code, answered.frame.message) == (
        "unexpected_answer",
        "the relay answered 'acked' to a 'ping' request",
    )


# --- answers of the kind asked for that do not answer the request ----------------------------------------


async def test_a_sender_certificate_the_agent_refuses_is_the_awaited_requests_refusal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A ``sender_certificate`` answer that is no certificate: the agent refuses it, and the caller
    awaiting it gets that refusal (``RequestRefused``, saying why), not the frame as if it were the
    certificate (then an AssertionError: the agent has none). The connection goes on."""
    fake = _fake()
    garbage = b"not a certificate"
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        relay.attack(
            lambda f: isinstance(f, wire.GetSenderCertificate),
            lambda r, a: [wire.encode(wire.SenderCertificateResponse(id=r.id, certificate=garbage))],
        )
        with trio.fail_after(100), pytest.raises(RequestRefused) as info:
            await conn.request_certificate()
        assert (info.value.kind, info.value.code, info.value.message) == (
            "get_sender_certificate",
            "bad_certificate",
            "the relay's sender certificate (certificate in a 'sender_certificate' frame) is refused: sender "
            "certificate: not one msgpack value: 16 bytes "
            "follow its first value",
        )
        assert conn.agent.certificate is None
        assert conn.agent.device.to_dict() == state
        await conn.sync()
        assert conn.reconnects == 0 and conn.failures == []


async def test_a_login_answered_for_another_account_is_refused_and_the_next_one_goes_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = _fake()
    async with _alice(fake) as (relay, conn):
        await conn.register()
        relay.attack(
            lambda f: isinstance(f, wire.Authenticate),
            lambda r, a: [wire.encode(dataclasses.replace(a, account="bob"))],
        )
        with trio.fail_after(100), pytest.raises(RequestRefused) as info:
            await conn.login()
        assert (info.value.kind, info.value.code, info.value.message) == (
            "authenticate",
            "unexpected_answer",
            "the relay's 'authenticated' names account 'bob', not this device's 'alice'",
        )
        assert not conn.agent.authenticated and not conn.link.logged_in
        await conn.login()
        assert conn.agent.authenticated
        await conn.send_text("bob", b"logged in as herself")
        assert conn.reconnects == 0


async def test_a_send_answered_with_an_envelope_id_too_many_fails_and_the_next_goes_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = _fake()
    async with _alice(fake) as (relay, conn):
        await _talking(conn)

        def forge(request: wire.Request, answer: wire.Response) -> list[bytes | None]:
            assert isinstance(answer, wire.Sent)
            ids = (*answer.envelope_ids, bytes(16))
            return [wire.encode(dataclasses.replace(answer, envelope_ids=ids))]

        relay.attack(lambda f: isinstance(f, wire.Send), forge)
        with trio.fail_after(100), pytest.raises(SendFailed) as info:
            await conn.send_text("bob", b"answered with two ids")
        assert (info.value.code, info.value.message) == (
            "unexpected_answer",
            "the relay's 'sent' carries 2 envelope_ids for the 1 envelopes sent",
        )
        assert len(await conn.send_text("bob", b"after")) == 1
        assert conn.reconnects == 0 and conn.failures == []


# --- refusals with codes no relay here sends ------------------------------------------------------------


async def test_an_error_of_an_unknown_code_is_passed_on_as_it_came(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = _fake()
    weird = "x" * 64
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        relay.attack(
            lambda f: isinstance(f, wire.Send),
            lambda r, a: [
                wire.encode(wire.ErrorFrame(id=0, code=weird, message="a push of no request")),
                wire.encode(wire.ErrorFrame(id=r.id, code=weird, message="é" * 4096, retry_after_ms=2**32)),
            ],
        )
        with trio.fail_after(100), pytest.raises(SendFailed) as info:
            await conn.send_text("bob", b"refused")
        assert (info.value.code, info.value.message) == (weird, "é" * 4096)
        assert conn.agent.device.to_dict() != state  # (the message was encrypted: a ratchet step)
        await conn.send_text("bob", b"after")
        assert conn.reconnects == 0 and conn.failures == []


# --- pushes of garbage ------------------------------------------------------------------------------------


async def test_a_deliver_of_garbage_twice_is_reported_and_acked_and_the_connection_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A well-formed ``deliver`` whose body decrypts under nothing (labelled as bob's, whom alice
    talks to), pushed twice: reported undecryptable once (the second copy is known by its id), each
    copy acked, and the session kept."""
    fake = _fake()
    garbage = wire.Envelope(
        id=bytes(range(16)),
        body=b"\x01" + bytes(200),
        timestamp=2**63,
        sealed=False,
        source_account="bob",
        source_device=1,
    )
    push = wire.encode(wire.Deliver(id=0, envelope=garbage))
    async with _alice(fake) as (relay, conn):
        state = await _talking(conn)
        relay.attack(_is_ping, lambda r, a: [push, push, wire.encode(a)])
        await conn.sync()
        await conn.sync()  # (the acks written after the first, answered by now)
        assert [e.envelope_id for e in conn.undecryptable] == [garbage.id]
        assert conn.agent.device.to_dict() == state
        await conn.send_text("bob", b"after")
        assert conn.reconnects == 0
    acked = [i for f in fake.seen if isinstance(f, wire.Ack) for i in f.envelope_ids]
    assert acked.count(garbage.id) == 2


# --- a relay that does not answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["no answer", "under another id", "under an id never used"])
async def test_a_request_the_relay_leaves_unanswered_drops_the_connection_after_a_keepalive(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Answered under another request's id, or never, a request would be awaited forever on a
    connection that looks alive: the keepalive ping after it is answered or not, what was written by
    then must be answered ``keepalive_timeout`` seconds later, else the connection is made again (and
    the request written again on it)."""

    def forge(request: wire.Request, answer: wire.Response) -> list[bytes | None]:
        if how == "no answer":
            return []
        other = request.id + 1 if how == "under another id" else 2**64 - 1
        return [wire.encode(wire.Pong(id=other))]

    fake = _fake()
    async with _alice(fake, keepalive=30.0) as (relay, conn):
        state = await _talking(conn)
        relay.attack(lambda f: isinstance(f, wire.Send), forge)
        with trio.fail_after(1000):
            ids = await conn.send_text("bob", b"answered on the next connection")
        assert len(ids) == 1 and conn.reconnects == 1
        assert conn.last_drop is not None
        assert "the relay did not answer send (request" in conn.last_drop
        assert f"within {DEFAULT_KEEPALIVE_TIMEOUT:g} s of a keepalive ping" in conn.last_drop
        assert conn.agent.device.to_dict() != state  # (a ratchet step: the message was encrypted once)
    sends = [f for f in fake.seen if isinstance(f, wire.Send)]
    assert len(sends) == 3 and sends[1] == sends[2]  # "before", then the one written twice


async def test_a_relay_that_answers_within_the_timeout_is_never_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = _fake()
    async with _alice(fake, keepalive=30.0) as (_relay, conn):
        await _talking(conn)
        await trio.sleep(600)  # twenty keepalives, each answered at once
        assert conn.reconnects == 0 and conn.state == "ready"


async def test_without_keepalive_pings_a_request_the_relay_leaves_unanswered_still_drops_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``keepalive=None`` no ping was written and no answer checked: ``sync()``'s own ping (or any
    request) that the relay left unanswered was awaited for ever, keepalive_timeout or not. The check
    now runs on its own every keepalive_timeout: what was unanswered at one must be answered by the next."""
    fake = _fake()
    async with _alice(fake, keepalive=None, keepalive_timeout=20.0) as (relay, conn):
        await _talking(conn)
        relay.attack(lambda f: isinstance(f, wire.Ping), lambda request, answer: [])
        with trio.fail_after(2 * 20.0 + 5):  # (two checks, a back-off: it waited for ever)
            await conn.sync()  # answered on the next connection, the ping written again
        assert conn.reconnects == 1
        assert conn.last_drop is not None
        assert "the relay did not answer ping (request" in conn.last_drop
        assert "within 20 s of the last check" in conn.last_drop


def test_without_keepalive_pings_the_check_is_a_deadline_of_the_link_unless_none_is_wanted() -> None:
    link = DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive=None, keepalive_timeout=5.0)
    link.connection_made(0.0)
    assert link.next_deadline() == 5.0
    link.handle_timeout(5.0)  # nothing written: nothing late
    assert link.drop_reason is None and link.next_deadline() == 10.0
    link.agent.ping()
    link.submit()
    (ping,) = requests(link.data_to_send(MAIN))
    link.handle_timeout(10.0)  # written since the last check: awaited by the next
    assert link.drop_reason is None and link.next_deadline() == 15.0
    link.handle_timeout(15.0)
    assert (
        link.drop_reason == f"the relay did not answer ping (request {ping.id}) within 5 s of the last check"
    )
    # keepalive_timeout=None: no check (as long as it takes)
    link = DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive=None, keepalive_timeout=None)
    link.connection_made(0.0)
    assert link.next_deadline() is None


def test_the_keepalive_check_is_a_deadline_of_the_link() -> None:
    link = DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive=30.0, keepalive_timeout=5.0)
    link.connection_made(0.0)
    link.handle_timeout(30.0)
    (ping,) = requests(link.data_to_send(MAIN))
    assert link.next_deadline() == 35.0
    link.handle_timeout(35.0)
    reason = f"the relay did not answer ping (request {ping.id}) within 5 s of a keepalive ping"
    assert link.drop_reason == reason
    link.connection_lost(35.0)
    assert link.last_drop == reason and link.state == "backoff"
    # answered in time: no drop
    link = DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive=30.0, keepalive_timeout=5.0)
    link.connection_made(0.0)
    link.handle_timeout(30.0)
    (ping,) = requests(link.data_to_send(MAIN))
    link.receive_data(wire.encode(wire.Pong(id=ping.id)))
    assert link.next_event() is wire.NEED_DATA
    link.handle_timeout(35.0)
    assert link.drop_reason is None and link.next_deadline() == 60.0
    with pytest.raises(ValueError, match="keepalive_timeout"):
        DeviceLink(make_agent("alice"), rng=random.Random(1), keepalive_timeout=0)


# --- bundles no relay makes --------------------------------------------------------------------------------


def _bundle_forge(change: Callable[[wire.Bundle], wire.Bundle]) -> Forge:
    def forge(request: wire.Request, answer: wire.Response) -> list[bytes | None]:
        assert isinstance(answer, wire.Bundle)
        return [wire.encode(change(answer))]

    return forge


_replace = dataclasses.replace


def _forged_signature(b: wire.Bundle) -> wire.Bundle:
    (d,) = b.devices
    spk = dataclasses.replace(d.signed_prekey, signature=bytes(64))
    return dataclasses.replace(b, devices=(dataclasses.replace(d, signed_prekey=spk),))


BAD_BUNDLES: dict[str, tuple[Callable[[wire.Bundle], wire.Bundle], str]] = {
    "no device": (lambda b: _replace(b, devices=()), "the bundle for 'bob' lists no device"),
    "another account's": (
        lambda b: _replace(b, account="carol"),
        "the relay answered a fetch of 'bob' with a bundle for 'carol'",
    ),
    "a device twice": (
        lambda b: _replace(b, devices=b.devices * 2),
        "the bundle for 'bob' lists device 1 more than once",
    ),
    "a forged signed-prekey signature": (
        _forged_signature,
        "signed_prekey.signature does not verify with identity_key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
async def test_a_bundle_no_relay_makes_fails_the_send_by_name_and_makes_no_session(
    case: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A send that waits on it fails (it waited forever when the bundle listed no device)."""
    change, why = BAD_BUNDLES[case]
    fake = _fake()
    async with _alice(fake) as (relay, conn):
        await conn.register()
        await conn.login()
        relay.attack(lambda f: isinstance(f, wire.FetchBundle), _bundle_forge(change))
        with trio.fail_after(100), pytest.raises(SendFailed) as info:
            await conn.send_text("bob", b"never sent")
        assert (info.value.code, info.value.message) == ("bad_bundle", why)
        assert not conn.agent.device.has_session(PeerAddress("bob", 1))
        assert not any(isinstance(f, wire.Send) for f in fake.seen)
        await conn.send_text("bob", b"the honest bundle")  # fetched again: a session now
        assert conn.agent.device.has_session(PeerAddress("bob", 1))
        assert conn.reconnects == 0


def test_the_agent_fails_a_bundle_with_no_device_at_once() -> None:
    """The agent alone: the message waiting on it fails; before, it went to no one, and never failed."""
    alice = make_agent("alice")
    alice.send_text("bob", b"hi", ref="m1")
    (fetch,) = alice.take_outbox()
    events = alice.handle(wire.Bundle(id=fetch.id, account="bob", devices=()))
    assert events == [Failed("m1", "bad_bundle", "the bundle for 'bob' lists no device")]
    assert alice.take_outbox() == []
