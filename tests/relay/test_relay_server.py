"""relay.server: the trio loop around RelayCore, over memory streams and real loopback sockets.

Everything listens on 127.0.0.1 with port 0 (a free port) and is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import sqlite3
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
import trustme

from relaysim.relay import server as server_module
from relaysim.relay import wire
from relaysim.relay.core import RelayCore
from relaysim.relay.limits import DEFAULT_LIMITS, Rate
from relaysim.relay.server import RelayServer, build_parser, lock_store, main
from relaysim.relay.store import Store, StoredEnvelope, StoreError
from tests.helpers import DeviceKeys, RelayProcess, WireClient, new_core, running

ALICE, BOB = DeviceKeys.make("alice"), DeviceKeys.make("bob")


async def _pair(port: int, ssl_context: ssl.SSLContext | None = None) -> tuple[WireClient, WireClient]:
    alice = await WireClient.connect(port, ssl_context=ssl_context)
    bob = await WireClient.connect(port, ssl_context=ssl_context)
    for client, keys in [(alice, ALICE), (bob, BOB)]:
        await client.register(keys)
        await client.authenticate(keys)
    return alice, bob


async def _exchange(alice: WireClient, bob: WireClient) -> None:
    """Both directions, live pushes and queued receipt, with acknowledgement."""
    sent = await alice.send("bob", [1], b"to bob")
    back = await bob.send("alice", [1], b"to alice")
    got_bob = await bob.drain()
    got_alice = await alice.drain()
    assert [(e.id, e.body, e.source_account) for e in got_bob] == [(sent[0], b"to bob", "alice")]
    assert [(e.id, e.body, e.source_account) for e in got_alice] == [(back[0], b"to alice", "bob")]
    with trio.fail_after(5):  # the live push arrives too (it may trail the receive)
        while not bob.pushes:
            await bob.request(lambda i: wire.Ping(id=i))
    assert bob.pushes[0].envelope.id == sent[0]
    assert await bob.drain() == []  # acknowledged means gone


async def _read_until_closed(stream: trio.abc.Stream, timeout: float = 5.0) -> bytes:
    chunks = []
    with trio.fail_after(timeout):
        try:
            while data := await stream.receive_some(65536):
                chunks.append(data)
        except trio.BrokenResourceError:  # a reset is a close too
            pass
    return b"".join(chunks)


def _frames(data: bytes) -> list[wire.Frame]:
    decoder = wire.FrameDecoder("device")
    decoder.receive_data(data)
    decoder.receive_data(b"")
    frames = []
    while (frame := decoder.next_frame()) is not wire.CLOSED:
        assert frame is not wire.NEED_DATA
        frames.append(frame)
    return frames


# --- over memory streams --------------------------------------------------------------------


class CountingStream(trio.abc.Stream):  # type: ignore[misc]
    """Wraps a stream and counts send_all calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0

    async def send_all(self, data: bytes) -> None:
        self.writes += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_pipelined_requests_get_their_responses_in_one_write() -> None:
    server = RelayServer(new_core())
    server_end, client_end = trio.testing.memory_stream_pair()
    counted = CountingStream(server_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, counted)
        await client_end.send_all(b"".join(wire.encode(wire.Ping(id=i)) for i in range(1, 51)))
        decoder = wire.FrameDecoder("device")
        pongs: list[wire.Frame] = []
        with trio.fail_after(5):
            while len(pongs) < 50:
                decoder.receive_data(await client_end.receive_some())
                while (frame := decoder.next_frame()) is not wire.NEED_DATA:
                    assert frame is not wire.CLOSED
                    pongs.append(frame)
        assert pongs == [wire.Pong(id=i) for i in range(1, 51)]
        assert counted.writes == 1
        await client_end.send_eof()
    assert server.connection_count == 0


class WriteBreaksStream(CountingStream):
    """Reads normally; every write fails, as to a peer that has gone away."""

    async def send_all(self, data: bytes) -> None:
        self.writes += 1
        raise trio.BrokenResourceError("peer went away")


async def test_a_failed_write_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    server = RelayServer(new_core())
    server_end, client_end = trio.testing.memory_stream_pair()
    broken = WriteBreaksStream(server_end)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, broken)
            await client_end.send_all(wire.encode(wire.Ping(id=1)))
            # The handler returns on its own: the failed write ended the connection.
    assert broken.writes == 1 and server.connection_count == 0
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


async def test_a_connection_whose_handler_fails_is_logged_and_everyone_else_is_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # On trio >= 0.25 a failure inside a connection's handler may come as an ExceptionGroup; it
    # must still stop at that connection's handler, never reach serve_listeners.
    read_loop = RelayServer._read_loop

    async def fails_for_the_first(self: RelayServer, conn: Any) -> bool:
        if conn.ctx.id == 1:
            raise RuntimeError("the reader of connection 1 failed")
        return await read_loop(self, conn)

    monkeypatch.setattr(RelayServer, "_read_loop", fails_for_the_first)
    async with running(new_core(clock=time.time)) as server:
        doomed = await trio.open_tcp_stream("127.0.0.1", server.port)  # connection 1
        await _read_until_closed(doomed)  # closed by the relay
        alice, bob = await _pair(server.port)
        await _exchange(alice, bob)
        for c in (alice, bob):
            await c.aclose()
    failed = [r for r in caplog.records if r.getMessage() == "connection handler failed"]
    assert len(failed) == 1 and "the reader of connection 1 failed" in caplog.text


@pytest.mark.parametrize("epoll", [True, False])
async def test_a_frame_with_a_key_too_long_to_quote_whole_is_answered_and_the_relay_serves_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, epoll: bool
) -> None:
    """One frame with a 5,000-character key took the relay down: the error about it (unknown_field,
    or wrong_type for a key that is no string) quoted the key whole, past the 4,096 characters an
    error frame holds, so building the answer raised outside any handler's reach and ended the
    server. Now the unknown key is answered and the connection reads on, the bin key is answered and
    the connection closed, and everyone else is served."""
    if not epoll:
        import select

        monkeypatch.delattr(select, "epoll")
    long = "k" * 5000
    async with running(new_core(clock=time.time)) as server:
        alice, bob = await _pair(server.port)
        unknown = await WireClient.connect(server.port)
        answer = await unknown.request(lambda i: wire.Ping(id=i))  # a device that works
        body = msgpack.packb({"v": 1, "id": 5, "kind": "ping", long: 1}, use_bin_type=True)
        await unknown.stream.send_all(struct.pack(">I", len(body)) + body)
        refused = await unknown.next_frame()
        assert isinstance(refused, wire.ErrorFrame) and refused.code == "unknown_field", refused
        assert refused.id == 5 and refused.field == repr("k" * 57) + "… (5,000 characters)"
        assert isinstance(await unknown.request(lambda i: wire.Ping(id=i)), wire.Pong)  # read on
        not_a_str = await trio.open_tcp_stream("127.0.0.1", server.port)
        body = msgpack.packb({"v": 1, "id": 6, "kind": "ping", long.encode(): 1}, use_bin_type=True)
        await not_a_str.send_all(struct.pack(">I", len(body)) + body)
        (closing,) = _frames(await _read_until_closed(not_a_str))
        assert isinstance(closing, wire.ErrorFrame) and closing.code == "wrong_type", closing
        await _exchange(alice, bob)
        for c in (alice, bob, unknown):
            await c.aclose()
    assert isinstance(answer, wire.Pong)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


def _named_twice(key: str) -> bytes:
    """A send whose one envelope names ``key`` twice (a dict cannot: packed by hand)."""
    pairs = (("device", 1), ("body", b""), (key, 1), (key, 2))
    envelope = b"\x84" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)
    head = msgpack.packb({"v": 1, "id": 8, "kind": "send", "to": "bob"})
    body = bytes([head[0] + 1]) + head[1:] + msgpack.packb("envelopes") + b"\x91" + envelope
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("epoll", [True, False])
async def test_what_a_peer_sends_reaches_the_log_escaped_and_cut(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, epoll: bool
) -> None:
    """The relay's INFO line about a refused frame carried the decoder's whole message: a key named
    twice under a 100,000-character key was a 100 KB log line, and a newline in a key a line of its
    own. Now each such line shows the message escaped (wire.for_log) and cut; the peer is answered."""
    if not epoll:
        import select

        monkeypatch.delattr(select, "epoll")
    caplog.set_level(logging.INFO, logger="relay.server")
    async with running(new_core(clock=time.time)) as server:
        alice, bob = await _pair(server.port)
        for key in ("k" * 100_000, "x\nINFO relay.server: forged line"):
            attacker = await trio.open_tcp_stream("127.0.0.1", server.port)
            await attacker.send_all(_named_twice(key))
            (closing,) = _frames(await _read_until_closed(attacker))
            assert isinstance(closing, wire.ErrorFrame) and closing.code == "invalid_value", closing
        unknown = await WireClient.connect(server.port)
        body = msgpack.packb({"v": 1, "id": 5, "kind": "ping", "y\r\n" * 3000: 1})
        await unknown.stream.send_all(struct.pack(">I", len(body)) + body)
        refused = await unknown.next_frame()
        assert isinstance(refused, wire.ErrorFrame) and refused.code == "unknown_field", refused
        await _exchange(alice, bob)
        for c in (alice, bob, unknown):
            await c.aclose()
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "relay.server"]
    refused_lines = [line for line in lines if "more than once" in line or "unknown field" in line]
    assert len(refused_lines) == 3, lines
    for line in lines:
        assert line.isprintable() and len(line) < wire.MAX_LOGGED + 100, line[:300]


@pytest.mark.parametrize("epoll", [True, False])
async def test_a_flood_of_refused_frames_is_answered_each_and_logged_only_at_first(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, epoll: bool
) -> None:
    """Each frame of an unknown kind or with an unknown field was logged (an INFO line each, which took
    the relay more CPU than answering it): a peer sending nothing else had the relay write a line for
    every frame, for ever. Now the first LOGGED_REFUSALS of a connection are logged, the rest counted and
    said once at its close; every one is still answered, in its place, and the others served."""
    if not epoll:
        import select

        monkeypatch.delattr(select, "epoll")
    caplog.set_level(logging.INFO, logger="relay.server")
    flood = 400
    async with running(new_core(clock=time.time)) as server:
        alice, bob = await _pair(server.port)
        peer = await WireClient.connect(server.port)
        unknown_kind = msgpack.packb({"v": 1, "id": 1, "kind": "zzz"})
        unknown_field = msgpack.packb({"v": 1, "id": 2, "kind": "ping", "zz": 1})
        frames = [struct.pack(">I", len(b)) + b for b in (unknown_kind, unknown_field)] * (flood // 2)
        await peer.stream.send_all(b"".join(frames) + wire.encode(wire.Ping(id=3)))
        answers = [await peer.next_frame() for _ in range(flood + 1)]
        assert [a.id for a in answers] == [1, 2] * (flood // 2) + [3]
        assert {a.code for a in answers[:-1] if isinstance(a, wire.ErrorFrame)} == {
            "unknown_kind",
            "unknown_field",
        }
        assert isinstance(answers[-1], wire.Pong)
        await _exchange(alice, bob)
        for c in (alice, bob, peer):
            await c.aclose()
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "relay.server"]
    refused = [line for line in lines if "answered, reading on" in line]
    assert len(refused) == server_module.LOGGED_REFUSALS, lines[:20]
    assert "counted, not logged" in refused[-1]
    assert [line for line in lines if f"{flood} of its frames refused" in line], lines[-5:]


@pytest.mark.parametrize("epoll", [True, False])
async def test_a_decoder_that_fails_unexpectedly_closes_only_that_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, epoll: bool
) -> None:
    """A decoder that raises what it never should (msgpack 1.0.5 refusing to pack a deep frame again
    once did) gets that connection ``internal_error`` and closed; the pump reading every other plain
    TCP connection, and everyone else, go on."""
    decode_body = wire.decode_body

    def fails_on_666(body: bytes, kinds: Any) -> Any:
        frame = decode_body(body, kinds)
        if getattr(frame, "id", None) == 666:
            raise ValueError("recursion limit exceeded.")
        return frame

    monkeypatch.setattr(wire, "decode_body", fails_on_666)
    if not epoll:
        import select

        monkeypatch.delattr(select, "epoll")
    async with running(new_core(clock=time.time)) as server:
        doomed = await trio.open_tcp_stream("127.0.0.1", server.port)
        await doomed.send_all(wire.encode(wire.Ping(id=666)))
        frames = _frames(await _read_until_closed(doomed))
        assert [(type(f), getattr(f, "code", None)) for f in frames] == [(wire.ErrorFrame, "internal_error")]
        alice, bob = await _pair(server.port)
        await _exchange(alice, bob)
        for c in (alice, bob):
            await c.aclose()
    assert "recursion limit exceeded" in caplog.text


async def test_a_writer_that_fails_is_logged_and_only_its_connection_closes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The writer is a task of its own (a system task, started when a write cannot finish at once,
    # always on streams other than plain TCP): what it meets is raised by its connection's handler.
    write_loop = RelayServer._write_loop

    async def fails_for_the_first(self: RelayServer, conn: Any, scope: trio.CancelScope) -> None:
        if conn.ctx.id == 1:
            raise RuntimeError("the writer of connection 1 failed")
        await write_loop(self, conn, scope)

    monkeypatch.setattr(RelayServer, "_write_loop", fails_for_the_first)
    server = RelayServer(new_core(clock=time.time))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            doomed_end, doomed = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, doomed_end)  # connection 1
            await doomed.send_all(wire.encode(wire.Ping(id=1)))
            assert await _read_until_closed(doomed) == b""  # closed by the relay, unanswered
            alice, bob = await _memory_client(server, nursery), await _memory_client(server, nursery)
            for client, keys in [(alice, ALICE), (bob, BOB)]:
                await client.register(keys)
                await client.authenticate(keys)
            await _exchange(alice, bob)
            for c in (alice, bob):
                await c.aclose()
    assert server.connection_count == 0
    failed = [r for r in caplog.records if r.getMessage() == "connection handler failed"]
    assert len(failed) == 1 and "the writer of connection 1 failed" in caplog.text


async def test_an_idle_connection_is_one_task() -> None:
    async with running(new_core(clock=time.time)) as server:
        tasks = _all_tasks()
        streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(5)]
        with trio.fail_after(5):
            while server.connection_count < 5:
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert len(_all_tasks()) - len(tasks) == 5  # one task per connection: no writer, no nursery
        for stream in streams:
            await stream.aclose()


def _all_tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        found.append(task)
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return found


async def test_a_device_that_does_not_read_loses_pushes_not_envelopes() -> None:
    core = new_core(clock=time.time)
    server = RelayServer(core, max_queued_bytes_per_device=2000)
    async with trio.open_nursery() as nursery:
        # Bob's connection is lockstep: the relay's writes to it block until he reads.
        bob_server_end, bob_end = trio.testing.lockstep_stream_pair()
        alice_server_end, alice_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, bob_server_end)
        nursery.start_soon(server.handle_stream, alice_server_end)
        bob, alice = WireClient(bob_end), WireClient(alice_end)
        await bob.register(BOB)
        await bob.authenticate(BOB)
        await alice.register(ALICE)
        await alice.authenticate(ALICE)
        ids = [(await alice.send("bob", [1], b"%03d" % i + bytes(500)))[0] for i in range(30)]
        assert server.dropped_pushes > 0  # Alice was never held up by Bob
        got = await bob.drain()
        assert {e.id for e in got} >= set(ids)
        assert {p.envelope.id for p in bob.pushes} < set(ids)
        await bob_end.aclose()
        await alice_end.aclose()


# --- over real loopback sockets -----------------------------------------------------------------


async def test_two_devices_exchange_envelopes_over_loopback() -> None:
    async with running(new_core(clock=time.time)) as server:
        assert server.addresses[0][0] == "127.0.0.1" and server.port > 0
        alice, bob = await _pair(server.port)
        await _exchange(alice, bob)
        await alice.aclose()
        await bob.aclose()
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)


async def test_without_epoll_each_connection_reads_its_own_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there is no epoll (macOS, the BSDs), serve starts no pump: every connection's task reads
    its socket, as a TLS connection's does, and the devices still talk."""
    import select

    monkeypatch.delattr(select, "epoll")
    async with running(new_core(clock=time.time)) as server:
        alice, bob = await _pair(server.port)
        await _exchange(alice, bob)
        await alice.aclose()
        await bob.aclose()


async def test_the_key_log_is_served_over_loopback_to_a_connection_that_never_logs_in() -> None:
    """A witness's view: the signed head, every entry (in pages when the log is longer than a page)
    and a consistency proof, over a real socket, with no account."""
    core = new_core(clock=time.time)
    async with running(core) as server:
        phones = [await WireClient.connect(server.port) for _ in range(3)]
        for i, phone in enumerate(phones):
            await phone.register(DeviceKeys.make(f"p{i}", 1))
        witness = await WireClient.connect(server.port)
        head = await witness.request(lambda i: wire.GetKeyLogHead(id=i))
        assert isinstance(head, wire.KeyLogHeadResponse) and head.head.tree_size == 3
        entries = await witness.request(lambda i: wire.GetKeyLogEntries(id=i, start=0, end=2))
        assert isinstance(entries, wire.KeyLogEntries)
        assert [wire.kt_leaf_decode(x)[0] for x in entries.entries] == ["p0", "p1", "p2"]
        proof = await witness.request(lambda i: wire.GetKeyLogConsistency(id=i, first=1, second=3))
        assert isinstance(proof, wire.KeyLogConsistency) and len(proof.proof) == 2
        refused = await witness.request(lambda i: wire.GetKeyLogConsistency(id=i, first=1, second=4))
        assert isinstance(refused, wire.ErrorFrame) and refused.field == "second"
        for c in (*phones, witness):
            await c.aclose()


async def test_tls_with_a_private_ca() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running(new_core(clock=time.time), ssl_context=server_context) as server:
        alice, bob = await _pair(server.port, client_context)
        await _exchange(alice, bob)
        # A client that does not speak TLS is dropped, and the relay carries on.
        plain = await trio.open_tcp_stream("127.0.0.1", server.port)
        await plain.send_all(wire.encode(wire.Ping(id=1)))
        assert b"pong" not in await _read_until_closed(plain)
        # A client that does not trust the certificate refuses the relay.
        stranger = WireClient(trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", server.port),
                                             ssl.create_default_context(), server_hostname="127.0.0.1"))  # fmt: skip
        with pytest.raises(trio.BrokenResourceError):
            await stranger.request(lambda i: wire.Ping(id=i))
        assert isinstance(await alice.request(lambda i: wire.Ping(id=i)), wire.Pong)
        for c in (alice, bob):
            await c.aclose()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack(">I", 2**31), "frame_too_large"),
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "malformed_msgpack"),
        (
            wire.encode(wire.Ping(id=1))[:4] + msgpack.packb({"v": 2, "id": 5, "kind": "ping"}),
            "unsupported_version",
        ),
    ],
)
async def test_bad_input_gets_a_specific_error_then_the_connection_closes(data: bytes, code: str) -> None:
    data = data if not data.startswith(b"\x00\x00\x00\x01") else struct.pack(">I", len(data) - 4) + data[4:]
    async with running(new_core(clock=time.time)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(data)
        frames = _frames(await _read_until_closed(stream))
        assert len(frames) == 1 and isinstance(frames[0], wire.ErrorFrame)
        assert frames[0].code == code and frames[0].message


def _raw_frame(body: dict[str, Any]) -> bytes:
    packed = msgpack.packb(body)
    return struct.pack(">I", len(packed)) + packed


@pytest.mark.parametrize("epoll", [True, False], ids=["pumped", "own task"])
async def test_an_unknown_field_or_kind_is_answered_by_name_and_the_connection_is_kept(
    epoll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame read whole whose only fault is a key or a kind this relay does not know (what a newer
    client may send) gets an error naming the frame kind and the field, in its place among the
    answers, and the connection goes on (docs/protocol.md, Errors)."""
    import select

    if not epoll:
        monkeypatch.delattr(select, "epoll")  # each connection's task reads its socket, as over TLS
    async with running(new_core(clock=time.time)) as server:
        client = await WireClient.connect(server.port)
        await client.stream.send_all(
            wire.encode(wire.Ping(id=1))
            + _raw_frame({"v": 1, "id": 2, "kind": "ping", "extra": 1})
            + _raw_frame({"v": 1, "id": 3, "kind": "ping_v2"})
            + _raw_frame({"v": 1, "id": 4, "kind": "fetch_bundle", "account": "bob", "devices_too": True})
            + wire.encode(wire.Ping(id=5))
        )
        frames = [await client.next_frame() for _ in range(5)]
        assert [(type(f).__name__, f.id) for f in frames] == [
            ("Pong", 1), ("ErrorFrame", 2), ("ErrorFrame", 3), ("ErrorFrame", 4), ("Pong", 5),
        ]  # fmt: skip
        errors = [f for f in frames if isinstance(f, wire.ErrorFrame)]
        assert [(e.code, e.field) for e in errors] == [
            ("unknown_field", "extra"), ("unknown_kind", "kind"), ("unknown_field", "devices_too"),
        ]  # fmt: skip
        assert "'extra'" in errors[0].message and "'ping'" in errors[0].message
        assert "'ping_v2'" in errors[1].message
        assert "'devices_too'" in errors[2].message and "'fetch_bundle'" in errors[2].message
        # Still connected, and served.
        assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)
        await client.aclose()


async def test_a_key_named_twice_inside_an_unknown_field_closes_only_its_connection_naming_it() -> None:
    """docs/protocol.md ("Framing", and "Errors"): an unknown field alone is answered unknown_field in
    its place and the connection kept, but inside it, as anywhere, a map names each key once: a key
    named twice there is refused invalid_value by its path with the request's id, and the connection
    closes, as it does for a key named twice in a field the kind has (were unknown fields exempt, whether
    a frame is refused would hang on which fields the reader knows). The decision kept; here over the live
    relay: the answers before it are given, nothing after it is read, and other devices go on."""
    twice = b"\x82\xa1a\x01\xa1a\x02"  # {"a": 1, "a": 2}
    head = b"\x84\xa1v\x01\xa2id\x03\xa4kind\xa4ping"
    async with running(new_core(clock=time.time)) as server:
        alice, bob = await _pair(server.port)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            wire.encode(wire.Ping(id=1))
            + _raw_frame({"v": 1, "id": 2, "kind": "ping", "zzz": {"a": 1, "b": 2}})
            + struct.pack(">I", len(head) + 4 + len(twice))
            + head
            + b"\xa3zzz"
            + twice
            + wire.encode(wire.Ping(id=4))
        )
        frames = _frames(await _read_until_closed(stream))
        await stream.aclose()
        assert [(type(f).__name__, f.id) for f in frames] == [
            ("Pong", 1),
            ("ErrorFrame", 2),
            ("ErrorFrame", 3),
        ]
        assert isinstance(frames[1], wire.ErrorFrame) and isinstance(frames[2], wire.ErrorFrame)
        assert (frames[1].code, frames[1].field) == ("unknown_field", "zzz")
        assert (frames[2].code, frames[2].field) == ("invalid_value", "zzz.a"), frames[2]
        assert "zzz.a" in frames[2].message and "more than once" in frames[2].message, frames[2].message
        await _exchange(alice, bob)  # the devices connected meanwhile are served as before
        await alice.aclose()
        await bob.aclose()


async def test_an_idle_connection_times_out() -> None:
    async with running(new_core(clock=time.time), read_timeout=0.2) as server:
        # before the connection: the relay's timer may start before this task runs again
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(wire.encode(wire.Ping(id=1))[:3])  # part of a frame does not count
        frames = _frames(await _read_until_closed(stream))
        # not before its time (and _read_until_closed fails if the relay never closes)
        assert trio.current_time() - start >= 0.15
        assert isinstance(frames[-1], wire.ErrorFrame) and frames[-1].code == "timeout"


async def test_connections_beyond_the_limit_are_refused_politely() -> None:
    async with running(new_core(clock=time.time), max_connections=2) as server:
        first = await WireClient.connect(server.port)
        second = await WireClient.connect(server.port)
        for c in (first, second):
            assert isinstance(await c.request(lambda i: wire.Ping(id=i)), wire.Pong)
        third = await trio.open_tcp_stream("127.0.0.1", server.port)
        frames = _frames(await _read_until_closed(third))
        assert [(f.code, f.id, f.field) for f in frames if isinstance(f, wire.ErrorFrame)] == [
            ("server_busy", 0, "max_connections")  # the cap that refused it, not the address's
        ]
        await first.aclose()
        with trio.fail_after(5):
            while server.connection_count > 1:
                await trio.sleep(0.01)
        fourth = await WireClient.connect(server.port)
        assert isinstance(await fourth.request(lambda i: wire.Ping(id=i)), wire.Pong)
        await second.aclose()
        await fourth.aclose()


# --- hostile traffic ------------------------------------------------------------------------------

FUZZ_FRAMES = 10_000
_REQUEST_KINDS = sorted(wire.REQUEST_KINDS)


def _random_value(r: random.Random, depth: int = 0) -> object:
    makers = [
        lambda: None,
        lambda: r.random() < 0.5,
        lambda: r.randint(-(2**40), 2**40),
        lambda: r.random(),
        lambda: r.randbytes(r.choice([0, 16, 32, 64, r.randrange(100)])),
        lambda: "".join(r.choice("ab\x00é1") for _ in range(r.randrange(6))),
        lambda: r.choice(_REQUEST_KINDS),
        lambda: [_random_value(r, depth + 1) for _ in range(r.randrange(4))],
        lambda: {
            r.choice(["id", "v", "kind", "to", "x"]): _random_value(r, depth + 1)
            for _ in range(r.randrange(4))
        },
    ]
    return makers[r.randrange(len(makers) if depth < 2 else len(makers) - 2)]()


def _prefixed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _fuzz_frame(r: random.Random) -> tuple[bytes, bool]:
    """(frame bytes, whether the relay will keep the connection open after it)."""
    roll = r.random()
    if roll < 0.1:
        return r.randbytes(r.randrange(1, 40)), False  # garbage (may even be a whole odd frame)
    if roll < 0.2:
        return struct.pack(">I", r.randint(wire.DEFAULT_MAX_FRAME_SIZE + 1, 2**32 - 1)) + r.randbytes(
            8
        ), False
    if roll < 0.35:
        return _prefixed(r.randbytes(r.randrange(0, 60))), False
    if roll < 0.6:
        body = {"v": r.choice([1, 1, 1, 2, "1"]), "id": r.choice([r.randrange(2**32), -1, "x"])}
        body |= {"kind": r.choice([*_REQUEST_KINDS, "pong", "nope"])}
        body |= {
            r.choice(["to", "account", "device", "nonce", "envelopes", "limit", "junk"]): _random_value(r)
        }
        return _prefixed(msgpack.packb(body, use_bin_type=True)), False
    # Well-formed requests that the core must refuse or carry out without closing.
    token, account = r.randbytes(32), r.choice(["alice", "bob", "nobody"])
    envelopes = tuple(wire.OutgoingEnvelope(r.randint(1, 3), r.randbytes(r.randrange(20))) for _ in range(2))
    frame = r.choice(
        [
            wire.Ping(id=r.randrange(2**32)),
            wire.Receive(id=1, limit=r.randint(1, 5)),
            wire.Ack(id=2, envelope_ids=(r.randbytes(16),)),
            wire.AuthChallenge(id=3, account=account, device=r.randint(1, 3)),
            wire.Authenticate(id=4, nonce=r.randbytes(32), signature=r.randbytes(64)),
            wire.Send(id=5, to=account, envelopes=envelopes[:1]),
            wire.SealedSend(id=6, to=account, delivery_token=token, envelopes=envelopes),
            wire.FetchBundle(id=7, account=account, delivery_token=token),
            wire.GetSenderCertificate(id=8),
            wire.UploadPrekeys(id=9),
        ]
    )
    return wire.encode(frame), True


async def test_ten_thousand_hostile_frames_then_good_devices_still_talk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="relay.server")
    r = random.Random(20240229)
    # Each burst: well-formed requests (served, refused or not), then usually one hostile frame
    # that ends the connection; anything after it would never be read.
    bursts: list[list[tuple[bytes, bool]]] = []
    total = answerable = hostile = 0
    while total < FUZZ_FRAMES:
        burst = [frame for frame in (_fuzz_frame(r) for _ in range(r.randint(0, 40))) if frame[1]]
        answerable += len(burst)
        if r.random() < 0.9:
            while (frame := _fuzz_frame(r))[1]:
                pass
            burst.append(frame)
            hostile += 1
        if burst:
            bursts.append(burst)
            total += len(burst)
    responses: list[wire.Frame] = []

    async def attack(port: int, queue: list[list[tuple[bytes, bool]]]) -> None:
        while queue:
            burst = queue.pop()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await stream.send_all(b"".join(data for data, _ in burst))
                await stream.send_eof()
            except trio.BrokenResourceError:
                pass  # the relay already cut us off
            data = await _read_until_closed(stream, timeout=10)
            await stream.aclose()
            # A reset can cut the last response short; what did arrive must parse.
            with contextlib.suppress(wire.RemoteProtocolError):
                responses.extend(_frames(data))

    core = new_core(clock=time.time)
    # hundreds of connections from one loopback address: the per-address caps are not under test here
    # (a hang guard, not a speed check: the whole test takes a few seconds)
    with trio.fail_after(300):
        async with running(
            core, read_timeout=5, max_connections_per_address=None, connection_rate=None
        ) as server:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(attack, server.port, bursts)
            alice, bob = await _pair(server.port)
            await _exchange(alice, bob)
            await alice.aclose()
            await bob.aclose()
    assert total >= FUZZ_FRAMES
    # Every well-formed request got its answer; each hostile frame at most one error.
    assert answerable <= len(responses) <= answerable + hostile
    codes = {f.code for f in responses if isinstance(f, wire.ErrorFrame)}
    assert {
        "frame_too_large",
        "malformed_msgpack",
        "unknown_kind",
        "not_authenticated",
        "invalid_delivery_token",
    } <= codes
    assert codes <= {c.value for c in wire.ErrorCode}
    assert any(isinstance(f, wire.Pong) for f in responses)  # good frames in between were served
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


# --- the command line, and crashes ---------------------------------------------------------------


def test_main_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "relaysim relay serve" in out and "--tls-cert" in out and "--db relay.db" in out
    assert main(["--port", "not-a-number"]) == 2
    assert main(["--tls-cert", "cert.pem"]) == 2
    assert "go together" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--port", "65536", "a TCP port is 0 to 65535"),  # it listened on a random port (mod 65536)
        ("--port", "-1", "a TCP port is 0 to 65535"),
        ("--read-timeout", "nan", "'nan' is not a number of seconds"),  # every connection died in the loop
        ("--read-timeout", "0", "positive number of seconds"),
        ("--read-timeout", "86401", "at most 86400 (a day)"),
        ("--write-timeout", "nan", "'nan' is not a number of seconds"),
        ("--write-timeout", "0", "positive number of seconds"),
        ("--write-timeout", "-3", "positive number of seconds"),
        ("--write-timeout", "86401", "at most 86400 (a day)"),
        ("--write-timeout", "30s", "is not a number of seconds (digits 0-9, a point)"),
        # digits of another script, underscores, blanks: int() and float() take them, an operator means none
        ("--read-timeout", "\u0666\u0660", "is not a number of seconds (digits 0-9, a point)"),
        ("--port", "\uff18\uff10", "is not a whole number in digits 0-9"),
        ("--max-connections", "1_000", "is not a whole number in digits 0-9"),
        ("--queue-envelopes", " 5", "is not a whole number from 1 to 2**63 - 1 (digits 0-9), or off"),
        ("--queue-bytes", "9" * 100, "… (100 characters) is not a whole number from 1 to 2**63 - 1"),
        ("--queue-bytes", str(2**63), "is not a whole number from 1 to 2**63 - 1"),
        # these two were int(): --prekeys-low -5 and 10**30, --registration-pow 10**30 were taken
        ("--prekeys-low", "-1", "out of range: one-time prekeys from 0, never told, to 10,000"),
        ("--prekeys-low", "10001", "out of range: one-time prekeys from 0, never told, to 10,000"),
        ("--registration-pow", "33", "out of range: bits from 0 to 32"),
        ("--registration-pow", "\u0663", "is not a whole number in digits 0-9 (bits from 0 to 32)"),
        ("--max-connections", "0", "at least one connection"),  # every connection was refused
        ("--max-queued-bytes", "-5", "at least one byte"),
        ("--max-frame-size", "0", "a frame is 16384 to 4294967295 bytes"),  # was an "internal error"
        ("--max-frame-size", "4294967296", "a frame is 16384 to 4294967295 bytes"),
        # a bucket that never empties (a float of 1e23 does not count down by one), or whose wait
        # would not fit retry_after_ms (an internal error at the first refusal): say off instead
        ("--send-rate-account", "5/99999999999999999999999", "the burst must be from 1 (one request) to"),
        (
            "--send-rate-account",
            "1e-30/10",
            "the rate must be from 0.000001 to 1,000,000,000 requests a second",
        ),
        ("--connection-rate", "inf/64", "the rate must be from"),
        ("--ack-unknown-rate-account", "50/nan", "the burst must be from"),
        ("--register-rate", "2e9/3", "the rate must be from"),
    ],
)
def test_an_option_out_of_its_range_is_a_usage_error_naming_the_range(
    option: str, value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:  # were the value accepted, the relay would stop at binding, not serve
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["--db", str(tmp_path / "relay.db"), "--port", port, option, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and says in err
    assert not (tmp_path / "relay.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("name", ["read_timeout", "write_timeout"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (0.0, "0.0"), (-3, "-3"), (float("nan"), "nan"), (float("inf"), "inf"), (86_401, "86401")],
)
def test_the_server_refuses_a_timeout_out_of_the_command_line_s_bounds_in_its_words(
    name: str, value: float, shown: str
) -> None:
    """Only --read-timeout and --write-timeout were checked: RelayServer(...) and serve() took 0, a negative
    number or NaN (every connection closed at once, or a deadline that never falls due). Both refuse
    them now where the server is made, before it listens, with the command line's bounds and words."""
    words = f"{name} {shown}: expected a positive number of seconds, at most 86400 (a day)"
    with pytest.raises(ValueError) as info:
        RelayServer(new_core(), **{name: value})
    assert str(info.value) == words
    with socket.socket() as taken:  # were the value taken, serve would stop at binding, not at the value
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError) as info:
            trio.run(partial(server_module.serve, new_core(), "127.0.0.1", port, **{name: value}))
    assert str(info.value) == words
    if shown not in ("nan", "inf"):  # (which the command line refuses as no number of seconds at all)
        with pytest.raises(argparse.ArgumentTypeError) as cli:
            server_module._seconds(shown)
        assert str(cli.value).split(": ", 1)[1] == words.split(": ", 1)[1]  # the command line's words
    for good in (0.001, 1, 86_400):
        assert getattr(RelayServer(new_core(), **{name: good}), name) == good


@pytest.mark.parametrize("value", [True, "5", None])
def test_the_server_refuses_a_timeout_that_is_no_number(value: object) -> None:
    with pytest.raises(TypeError, match=r"read_timeout: expected a number of seconds, got "):
        RelayServer(new_core(), read_timeout=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "read", "write"),
    [
        ([], server_module.DEFAULT_READ_TIMEOUT, server_module.DEFAULT_WRITE_TIMEOUT),
        (["--write-timeout", "2.5"], server_module.DEFAULT_READ_TIMEOUT, 2.5),
        (["--write-timeout", "120", "--read-timeout", "7"], 7.0, 120.0),
    ],
)
def test_the_write_timeout_is_an_option_as_the_read_timeout_is(
    args: list[str],
    read: float,
    write: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The relay's write timeout (a connection that takes nothing it writes for so long is closed) could
    not be set: serve() had no write_timeout and the command line no --write-timeout, as it has
    --read-timeout. Both now: the option reaches serve(), and serve() the server; its --help says it and
    its bounds (a value past them is a usage error: test_an_option_out_of_its_range_...)."""
    assert main(["--help"]) == 0
    helped = " ".join(capsys.readouterr().out.split())
    assert "--write-timeout SECONDS seconds a connection may go taking nothing the relay writes" in helped
    assert "(default: 30.0); more than 0, at most 86,400" in helped
    given: list[dict[str, Any]] = []
    real_serve = server_module.serve

    async def fake_serve(*a: Any, **kwargs: Any) -> None:  # (stops the relay as a port it cannot have)
        given.append(kwargs)
        raise server_module.CannotListen("127.0.0.1", 0, OSError(98, "stand-in"))

    monkeypatch.setattr(server_module, "serve", fake_serve)
    assert main(["--db", str(tmp_path / "relay.db"), "--port", "0", *args]) == 2
    assert [(g["read_timeout"], g["write_timeout"]) for g in given] == [(read, write)]

    async def served() -> None:
        async with trio.open_nursery() as nursery:
            real = await nursery.start(partial(real_serve, new_core(), "127.0.0.1", 0, write_timeout=write))
            assert (real.read_timeout, real.write_timeout) == (server_module.DEFAULT_READ_TIMEOUT, write)
            nursery.cancel_scope.cancel()

    trio.run(served)


@pytest.mark.parametrize(
    ("option", "value", "then"),
    [
        (
            "--queue-bytes",
            "9" * 100,
            " is not a whole number",
        ),  # (cut at 40 characters, by a rule of its own)
        ("--read-timeout", "5" * 100, " is not a number of seconds"),
        ("--send-rate-account", "1/" + "x" * 5000, " is not a rate"),  # (said whole: 5,002 characters)
        ("--host", "h" * 300 + "!", ""),  # (cut at 80 characters, by a rule of its own)
        ("--profile-as-of", "2" * 300, ""),  # (said whole)
    ],
)
def test_an_options_word_is_quoted_by_the_rule_the_relay_quotes_everything_by(
    option: str, value: str, then: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A word given to an option is quoted in its error as the relay quotes a peer's key or kind
    (wire.quoted): whole up to 60 characters, else a closed quote of its beginning, "…" and its length.
    Each option's error quoted it by a rule of its own: 40 characters, 80, or the word whole."""
    assert main(["--db", str(tmp_path / "relay.db"), option, value]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]  # (after the usage)
    assert wire.quoted(value) + then in said, said[:300]
    assert value not in said and len(said) < 300, said[:300]


def test_the_group_state_limit_is_an_option_of_relay_serve(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args([]).group_state_per_address == DEFAULT_LIMITS.group_state_per_address
    assert parser.parse_args(["--group-state-rate-address", "2/20"]).group_state_per_address == Rate(
        2.0, 20.0
    )
    assert parser.parse_args(["--group-state-rate-address", "off"]).group_state_per_address is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--group-state-rate-address", "fast"])
    assert "argument --group-state-rate-address:" in capsys.readouterr().err
    assert "--group-state-rate-address" in parser.format_help()


@pytest.mark.parametrize(
    ("flag", "field"),
    [
        ("--key-log-rate-address", "key_log_per_address"),
        ("--login-rate-address", "logins_per_address"),
        ("--group-read-rate-account", "group_reads_per_account"),
    ],
)
def test_each_request_limit_is_an_option_of_relay_serve(
    flag: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert getattr(parser.parse_args([]), field) == getattr(DEFAULT_LIMITS, field) is not None
    assert getattr(parser.parse_args([flag, "2/20"]), field) == Rate(2.0, 20.0)
    assert getattr(parser.parse_args([flag, "off"]), field) is None
    with pytest.raises(SystemExit):
        parser.parse_args([flag, "fast"])
    assert f"argument {flag}:" in capsys.readouterr().err
    assert flag in parser.format_help()


def test_main_reports_a_port_in_use_as_a_usage_error_naming_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A port in use was "cannot serve: [Errno 98] Address already in use", exit 1, naming neither
    --port nor the address: now a usage error as the other options' are, naming both, exit 2.
    (trio >= 0.25 hands the OSError out of the nursery inside an ExceptionGroup: the same answer.)
    The port is bound first: a relay that cannot listen had already created (and migrated) its
    database and logged its set-up (the database, what it records, its trust root) as if it served."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="relay.server"):
            code = main(["--host", "127.0.0.1", "--port", str(port), "--db", str(tmp_path / "relay.db")])
    assert code == 2
    err = capsys.readouterr().err
    said = f"relaysim relay serve: error: --port {port}: cannot serve on 127.0.0.1 port {port}: it is in use"
    assert said in err, err
    assert "--port 0" in err and err.count("error:") == 1 and "Traceback" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "relay.server"] == []  # no set-up lines
    assert list(tmp_path.iterdir()) == []  # no relay.db (nor its -wal, -shm) left behind


def test_main_sets_the_collector_for_serving(tmp_path: Path) -> None:
    import gc

    from relaysim.relay.server import SERVING_GC_THRESHOLD

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with socket.socket() as taken:  # it stops at once, having set up as it serves
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            main(
                ["--host", "127.0.0.1", "--port", str(taken.getsockname()[1]), "--db", str(tmp_path / "r.db")]
            )
        assert gc.get_threshold() == SERVING_GC_THRESHOLD
        assert SERVING_GC_THRESHOLD[0] >= 10_000
    finally:
        gc.set_threshold(*before)


async def test_killed_relay_loses_no_acknowledged_envelope(tmp_path: Path) -> None:
    db, log = tmp_path / "relay.db", tmp_path / "relay.log"
    r = random.Random(7)
    acknowledged: dict[bytes, bytes] = {}  # envelope id -> body, as confirmed to the sender
    counter = 0
    # Alice sends as fast as the relay answers, from the loopback address every test device has: on a
    # quiet machine past the per-address limit's burst (500) within a round, refused rate_limited.
    unlimited = ("--send-rate-address", "off")
    for round_ in range(6):
        relay = await trio.to_thread.run_sync(RelayProcess, db, log, *unlimited)
        try:
            alice = await WireClient.connect(relay.port)
            if round_ == 0:
                bob = await WireClient.connect(relay.port)
                await bob.register(BOB)
                await alice.register(ALICE)
                await bob.aclose()
            await alice.authenticate(ALICE)

            async def sender(alice: WireClient = alice) -> None:
                nonlocal counter
                while True:
                    body = b"message %d" % counter
                    counter += 1
                    (envelope_id,) = await alice.send("bob", [1], body)
                    acknowledged[envelope_id] = body

            with trio.move_on_after(r.uniform(0.05, 0.4)):
                await sender()
            relay.proc.send_signal(signal.SIGKILL)  # mid-send, most likely
            with pytest.raises((trio.BrokenResourceError, EOFError, trio.ClosedResourceError)):
                with trio.fail_after(5):
                    await sender()
        finally:
            relay.proc.kill()
            await trio.to_thread.run_sync(relay.proc.wait)
    assert len(acknowledged) > 20

    relay = await trio.to_thread.run_sync(RelayProcess, db, log)
    try:
        bob = await WireClient.connect(relay.port)
        await bob.authenticate(BOB)
        received = await bob.drain()
        await bob.aclose()
        by_id = {e.id: e.body for e in received}  # the device's dedupe by envelope id
        for envelope_id, body in acknowledged.items():
            assert by_id.get(envelope_id) == body
        # Nothing arrives that no one sent; bodies are unique, so dedupe by id leaves each once.
        assert len(set(by_id.values())) == len(by_id)
        assert all(b.startswith(b"message ") for b in by_id.values())
        relay.proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(partial(relay.proc.wait, timeout=10)) == 0
        assert "SIGTERM received; shutting down" in log.read_text()
    finally:
        relay.proc.kill()
        relay.proc.wait()
    with Store(db) as store:
        assert store.all_envelopes() == []  # acknowledged means deleted


# --- group commit -----------------------------------------------------------------------------


class CountingStore(Store):
    """A Store that counts its outermost transactions (one commit each)."""

    def __init__(self) -> None:
        self.commits = 0
        self._nesting = 0
        super().__init__(":memory:")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._nesting += 1
        try:
            with super().transaction():
                yield
        finally:
            self._nesting -= 1
        if not self._nesting:
            self.commits += 1


def _counting_core() -> tuple[RelayCore, CountingStore]:
    store = CountingStore()
    return RelayCore(store, clock=time.time, rng=random.Random(7).randbytes), store


async def _memory_client(server: RelayServer, nursery: trio.Nursery) -> WireClient:
    server_end, client_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    return WireClient(client_end)


async def test_a_pipelined_burst_is_one_commit_and_refused_requests_undo_only_themselves() -> None:
    core, store = _counting_core()
    server = RelayServer(core)
    async with trio.open_nursery() as nursery:
        alice, bob = await _memory_client(server, nursery), await _memory_client(server, nursery)
        for client, keys in [(alice, ALICE), (bob, BOB)]:
            await client.register(keys)
            await client.authenticate(keys)
        one = (wire.OutgoingEnvelope(1, b"first"),)
        burst = [
            wire.Send(id=101, to="bob", envelopes=one),
            wire.Send(id=102, to="nobody", envelopes=one),  # unknown_account
            wire.Send(id=103, to="bob", envelopes=(*one, wire.OutgoingEnvelope(2, b"x"))),  # stale_devices
            wire.Send(id=104, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"second"),)),
        ]
        before = store.commits
        await alice.stream.send_all(b"".join(wire.encode(r) for r in burst))
        with trio.fail_after(5):
            answers = [await alice.next_frame() for _ in burst]
        assert [a.id for a in answers] == [101, 102, 103, 104]  # in the order asked
        assert [type(a) for a in answers] == [wire.Sent, wire.ErrorFrame, wire.ErrorFrame, wire.Sent]
        assert [a.code for a in answers if isinstance(a, wire.ErrorFrame)] == [
            "unknown_account",
            "stale_devices",
        ]
        assert store.commits == before + 1  # four requests, one transaction
        sent = [a.envelope_ids[0] for a in answers if isinstance(a, wire.Sent)]
        assert [(e.id, e.body) for e in store.all_envelopes()] == list(
            zip(sent, [b"first", b"second"], strict=True)
        )
        got = await bob.drain()
        assert [e.body for e in got] == [b"first", b"second"]
        await alice.aclose()
        await bob.aclose()


async def test_devices_sending_at_once_share_commits_and_one_failure_disturbs_no_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    core, store = _counting_core()
    server = RelayServer(core)
    enqueue = store.enqueue

    def failing_enqueue(envelopes: Sequence[StoredEnvelope]) -> None:
        enqueue(envelopes)  # written, then the core fails: the savepoint must undo it
        if any(e.body == b"boom" for e in envelopes):
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "enqueue", failing_enqueue)
    senders = [DeviceKeys.make(f"dev{i}") for i in range(24)]
    async with trio.open_nursery() as nursery:
        bob = await _memory_client(server, nursery)
        await bob.register(BOB)
        await bob.authenticate(BOB)
        clients = []
        for keys in senders:
            client = await _memory_client(server, nursery)
            await client.register(keys)
            await client.authenticate(keys)
            clients.append(client)
        answers: dict[int, wire.Frame] = {}

        async def send(i: int, client: WireClient) -> None:
            to, body = ("nobody", b"refused") if i == 1 else ("bob", b"boom" if i == 2 else b"%d" % i)
            request = wire.Send(id=7, to=to, envelopes=(wire.OutgoingEnvelope(1, body),))
            await client.stream.send_all(wire.encode(request))
            answers[i] = await client.next_frame()

        before, batches_before = store.commits, server.batches
        with trio.fail_after(5):
            async with trio.open_nursery() as burst:
                for i, client in enumerate(clients):
                    burst.start_soon(send, i, client)
        # 24 requests from 24 connections in a handful of transactions, not 24.
        assert server.batches - batches_before == store.commits - before <= len(clients) // 4
        assert isinstance(answers[1], wire.ErrorFrame) and answers[1].code == "unknown_account"
        assert isinstance(answers[2], wire.ErrorFrame) and answers[2].code == "internal_error"
        assert all(isinstance(answers[i], wire.Sent) for i in answers if i not in (1, 2))
        got = await bob.drain()
        expected = {b"%d" % i for i in range(len(clients)) if i not in (1, 2)}
        assert sorted(e.body for e in got) == sorted(expected)
        assert isinstance(await clients[1].request(lambda i: wire.Ping(id=i)), wire.Pong)  # still open
        with pytest.raises(EOFError):  # the core failed on its request: closed
            await clients[2].next_frame()
        for client in [bob, *clients]:
            await client.aclose()
    assert "the core failed on a send request" in caplog.text


async def test_a_durable_batch_is_synced_beside_the_loop_while_the_next_is_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk: each fsync of the WAL is held until the test lets it finish. While alice's is
    held, bob's batch is handled, committed and its own fsync begun; nobody is answered before
    their batch's fsync has returned. Steps, not timings: a busy machine cannot change them."""
    core = RelayCore(Store(tmp_path / "relay.db"), clock=time.time, rng=random.Random(7).randbytes)
    server = RelayServer(core)
    assert server.sync_in_thread
    gates = [threading.Event(), threading.Event()]  # the first two fsyncs wait for these
    started: list[int] = []  # the fsyncs begun, in order
    ended: list[int] = []  # ... and returned
    try:
        async with trio.open_nursery() as nursery:
            alice, bob = await _memory_client(server, nursery), await _memory_client(server, nursery)
            for client, keys in [(alice, ALICE), (bob, BOB)]:
                await client.register(keys)
                await client.authenticate(keys)
            sync = core.store.sync

            def held_sync() -> None:
                n = len(started)
                started.append(n)
                if n < len(gates):
                    assert gates[n].wait(10), f"fsync {n} was never let go"
                sync()
                ended.append(n)

            monkeypatch.setattr(core.store, "sync", held_sync)
            batches = server.batches
            answers: list[wire.Frame] = []
            alice_answered = False

            async def alice_sends() -> None:
                nonlocal alice_answered
                await alice.send("bob", [1], b"first")
                alice_answered = True

            async def bob_sends_two() -> None:
                sends = [
                    wire.Send(id=50 + i, to="alice", envelopes=(wire.OutgoingEnvelope(1, b),))
                    for i, b in enumerate([b"one", b"two"])
                ]
                await bob.stream.send_all(b"".join(wire.encode(r) for r in sends))
                while len(answers) < 2:
                    if not isinstance(frame := await bob.next_frame(), wire.Deliver):
                        answers.append(frame)

            async def until(done: Callable[[], bool]) -> None:
                while not done():  # the loop runs on (and serves) while an fsync is held
                    await trio.sleep(0.005)

            with trio.fail_after(20):  # a hang guard: each step below waits for the one before
                async with trio.open_nursery() as both:
                    both.start_soon(alice_sends)
                    await until(lambda: started == [0])  # alice's batch is being synced now
                    both.start_soon(bob_sends_two)
                    # bob's batch was handled and committed during alice's fsync
                    await until(lambda: started == [0, 1])
                    assert ended == [] and not alice_answered and answers == []
                    gates[0].set()
                    # acknowledged only once durable: alice after her fsync, bob not before his
                    await until(lambda: alice_answered)
                    assert ended == [0] and answers == []
                    gates[1].set()
            assert ended == [0, 1]
            assert [a.id for a in answers] == [50, 51] and all(isinstance(a, wire.Sent) for a in answers)
            assert server.batches - batches == 2  # alice's send; bob's two in the next batch
            nursery.cancel_scope.cancel()
    finally:
        for gate in gates:  # never leave a worker thread waiting
            gate.set()
        core.store.close()


async def test_after_a_failed_fsync_nothing_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    core = RelayCore(Store(tmp_path / "relay.db"), clock=time.time, rng=random.Random(7).randbytes)
    server = RelayServer(core)
    async with trio.open_nursery() as nursery:
        alice, bob = await _memory_client(server, nursery), await _memory_client(server, nursery)
        for client, keys in [(alice, ALICE), (bob, BOB)]:
            await client.register(keys)
            await client.authenticate(keys)
        fail = [True]
        sync = core.store.sync

        def failing_sync() -> None:
            if fail.pop() if fail else False:
                raise OSError(5, "Input/output error")
            sync()

        monkeypatch.setattr(core.store, "sync", failing_sync)
        with trio.fail_after(5):
            answer = await alice.request(
                lambda i: wire.Send(id=i, to="bob", envelopes=(wire.OutgoingEnvelope(1, b"lost?"),))
            )
            assert isinstance(answer, wire.ErrorFrame) and answer.code == "internal_error"
            # The next fsync would succeed, but what the failed one held may be gone: no more answers.
            answer = await bob.request(lambda i: wire.Ping(id=i))
            assert isinstance(answer, wire.ErrorFrame) and answer.code == "internal_error"
        assert server.disk_failed and "fsync of the relay's database failed" in caplog.text
        nursery.cancel_scope.cancel()
    core.store.close()


class _CommitFails:
    """A store's SQLite connection whose next COMMIT fails, as on a full disk (SQLITE_FULL)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.armed = db, False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.armed and sql == "COMMIT":
            self.armed = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_batch_whose_commit_fails_leaves_nothing_of_it_in_memory_either(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "relay.db")
    core = RelayCore(store, clock=time.time, rng=random.Random(7).randbytes, keep_blocks=True)
    server = RelayServer(core)
    db = store._db = _CommitFails(store._db)  # type: ignore[assignment]
    carol = DeviceKeys.make("carol")
    async with trio.open_nursery() as nursery:
        alice = await _memory_client(server, nursery)
        await alice.register(ALICE)
        await alice.authenticate(ALICE)
        # bob's registration and alice's block are handled, then their batch's COMMIT fails.
        bob = await _memory_client(server, nursery)
        assert isinstance(await bob.request(lambda i: wire.Ping(id=i)), wire.Pong)  # (connected)
        db.armed = True
        register = BOB.register()
        with trio.fail_after(5):
            answer = await bob.request(lambda i: dataclasses.replace(register, id=i))
        assert isinstance(answer, wire.ErrorFrame) and answer.code == "internal_error"
        assert "committing a batch of 1 requests failed" in caplog.text
        assert store.key_log() == core.key_log.leaves() and store.device_ids("bob") == []
        # The disk has room again: the relay serves everyone as before, its key log in step with
        # its store (before, every new key was refused its leaf, a leaf short, until a restart).
        for keys in (carol, BOB):
            client = await _memory_client(server, nursery)
            await client.register(keys)
        assert (
            store.key_log()
            == core.key_log.leaves()
            == [wire.kt_leaf(k.account, 1, k.identity_key) for k in (ALICE, carol, BOB)]
        )
        bundle = await alice.request(lambda i: wire.FetchBundle(id=i, account="bob", key_log=True))
        assert isinstance(bundle, wire.Bundle) and bundle.key_log is not None
        assert bundle.key_log.head.tree_size == 3 and bundle.key_log.inclusions[0].leaf_index == 2
        # A block whose COMMIT failed is not enforced either: carol's sends reach alice.
        db.armed = True
        answer = await alice.request(lambda i: wire.Block(id=i, account="carol"))
        assert isinstance(answer, wire.ErrorFrame) and answer.code == "internal_error"
        assert store.blocks_of("alice") == [] and core.blocked_by("alice") == {}
        nursery.cancel_scope.cancel()
    store.close()


# --- the direct write after a batch (plain TCP) ---------------------------------------------


async def test_replies_over_tcp_are_written_after_the_commit_without_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer_sends = 0
    send_all = trio.SocketStream.send_all
    clients: list[trio.SocketStream] = []

    async def counting_send_all(self: trio.SocketStream, data: bytes) -> None:
        nonlocal writer_sends
        writer_sends += self not in clients
        await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counting_send_all)
    async with running(new_core(clock=time.time)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        clients.append(stream)
        await stream.send_all(b"".join(wire.encode(wire.Ping(id=i)) for i in range(1, 201)))
        decoder = wire.FrameDecoder("device")
        pongs: list[wire.Frame] = []
        with trio.fail_after(5):
            while len(pongs) < 200:
                decoder.receive_data(await stream.receive_some())
                while (frame := decoder.next_frame()) is not wire.NEED_DATA:
                    pongs.append(frame)
        assert pongs == [wire.Pong(id=i) for i in range(1, 201)]  # in order, across several batches
        assert writer_sends == 0  # the kernel took every batch's write at once: no writer task
        await stream.aclose()


async def test_what_the_kernel_does_not_take_at_once_the_writer_sends_in_order() -> None:
    from relaysim.relay.core import ConnectionContext
    from relaysim.relay.server import _Connection

    server = RelayServer(new_core())
    left, right = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(left), trio.SocketStream(right)
    conn = _Connection(ConnectionContext(1, None), ours, server)
    assert conn.fd >= 0
    chunks = [bytes([i]) * 65536 for i in range(64)]  # 4 MiB: far more than a socket buffer
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < 64 * 65536:
            await trio.sleep(0.001)
            received.extend(await theirs.receive_some(65536))

    with trio.fail_after(10):
        for i, chunk in enumerate(chunks):
            conn.queue(chunk)
            conn.flush()
            if i == 7:
                assert (
                    conn.unsent > 0 and conn.writer is not None
                )  # the buffer is full: a writer sends the rest
            await trio.sleep(0)
        await read_slowly()
        assert conn.unsent == 0
        await trio.sleep(0)
        assert conn.writer is None  # done: the writer has ended
    assert bytes(received) == b"".join(chunks)
    await ours.aclose()
    await theirs.aclose()


# --- a store written by a seeded simulation is not a relay's ----------------------------------


def test_main_refuses_a_store_written_by_a_seeded_simulation(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from relaysim.sims.cli import main as relaysim

    out = tmp_path / "run"
    assert relaysim(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    db = out / "relay.db"
    assert db.exists()
    with Store(db) as store:
        assert store.simulation_keys is not None and "seed" in store.simulation_keys
    capsys.readouterr()
    assert main(["--host", "127.0.0.1", "--port", "0", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "seeded simulation" in err and "--allow-simulation-keys" in err and str(db) in err
    assert "Traceback" not in err
    # Told, it serves, and warns that the keys are public (stopped where it would start serving).
    served: list[str] = []

    async def serve_nothing(opts: Any, *_: Any) -> None:
        served.append(opts.db)

    monkeypatch.setattr(server_module, "_run", serve_nothing)
    with caplog.at_level(logging.WARNING, logger="relay.server"):
        code = main(["--host", "127.0.0.1", "--port", "0", "--db", str(db), "--allow-simulation-keys"])
    assert code == 0 and served == [str(db)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PUBLIC" in w and "seeded simulation" in w for w in warnings), warnings


def test_main_refuses_an_empty_db_path(capsys: pytest.CaptureFixture[str]) -> None:
    """``--db ""`` (an unset shell variable) served from SQLite's private temporary database, gone
    at exit: every answer the relay gave as durable was lost."""
    with socket.socket() as taken:  # were it accepted, the relay would stop at binding
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--host", "127.0.0.1", "--port", str(port), "--db", ""]) == 2
    assert "argument --db: expected the database file's path, got ''" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("", "got '' (an empty shell variable?)"),
        ("[::1]", "got '[::1]'; an IPv6 address is given without brackets: --host ::1"),
        ("127.0.0.1:7465", "got '127.0.0.1:7465'; the port is --port's"),
        ("999.1.1.1", "got '999.1.1.1': not an IPv4 address"),
        ("not a host", "got 'not a host'"),
        ("relay_1", "got 'relay_1'"),
    ],
)
@pytest.mark.parametrize("insecure", [[], ["--insecure"]])
def test_a_host_that_is_no_address_nor_host_name_is_refused_naming_it(
    host: str, said: str, insecure: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--host "[::1]" or "127.0.0.1:7465" was refused as "not a loopback address and there is no
    --tls-cert/--tls-key", telling the user to give TLS; with --insecure, "cannot serve there: Name or
    service not known". Nothing is made: no database."""
    db = tmp_path / "relay.db"
    assert main(["--host", host, "--port", "0", "--db", str(db), *insecure]) == 2
    err = capsys.readouterr().err
    assert "error: argument --host: expected an IP address" in err and said in err, err
    assert "loopback" not in err and "Name or service" not in err, err
    assert not db.exists()


def _interfaces() -> list[tuple[int, str]]:
    """This machine's network interfaces (index, name); the test is skipped where Python cannot list
    them (socket.if_nameindex is missing on some systems, or fails). It was called as the module was
    imported: where it is missing, none of this file's tests ran, each an import error."""
    try:
        interfaces = socket.if_nameindex()
    except (AttributeError, OSError) as e:
        pytest.skip(f"socket.if_nameindex() cannot list this machine's interfaces: {e!r}")
    if not interfaces:
        pytest.skip("socket.if_nameindex() lists no interfaces here")
    return interfaces


def test_this_file_imports_where_the_interfaces_cannot_be_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """(A copy of this module, imported with socket.if_nameindex gone: its tests that need the
    interfaces skip, saying why.)"""
    import importlib.util

    monkeypatch.delattr(socket, "if_nameindex")
    spec = importlib.util.spec_from_file_location("_test_relay_server_copy", __file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(pytest.skip.Exception, match="cannot list this machine's interfaces"):
        module._interfaces()


@pytest.mark.parametrize("host", ["::1", "localhost", "relay.example.org", "0.0.0.0"])
def test_a_host_that_is_an_address_or_a_host_name_is_taken(host: str) -> None:
    assert build_parser().parse_args(["--host", host]).host == host


def test_a_link_local_host_on_an_interface_here_is_taken() -> None:
    index, name = _interfaces()[0]
    for host in (f"fe80::1%{name}", f"fe80::1%{index}"):
        assert build_parser().parse_args(["--host", host]).host == host


@pytest.mark.parametrize("host", ["::1%lo", "::1%1", "fd00::2%eth0", "2001:db8::1%1"])
def test_a_zone_on_an_address_that_is_not_link_local_is_refused_naming_it(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--host ::1%lo`` (lo an interface here) was "cannot serve there: Name or service not known"
    (getaddrinfo takes an interface's name only on a link-local address), and ``::1%1`` listened on
    ::1, the zone dropped: a zone is given effect on a link-local address (fe80::/10) only."""
    with pytest.raises(SystemExit):  # (parsed alone: main would serve on ::1, the zone dropped)
        build_parser().parse_args(["--host", host])
    err = capsys.readouterr().err
    unzoned = host.partition("%")[0]
    assert (
        f"argument --host: {host!r}: the part after '%' (a zone) names the interface of a link-local" in err
    )
    assert f"{unzoned} is not one: give --host {unzoned}" in err, err
    if host == "::1%lo":  # (main: refused as it reads its options, nothing made)
        db = tmp_path / "relay.db"
        assert main(["--host", host, "--port", "0", "--db", str(db)]) == 2
        assert "Name or service" not in capsys.readouterr().err and not db.exists()


def test_a_host_on_an_interface_this_machine_lacks_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--host fe80::1%zz`` was taken (any zone after '%'), then "cannot serve there: Name or service
    not known", naming no interface."""
    interfaces = _interfaces()
    absent = max(index for index, _name in interfaces) + 1
    for zone in ("zz", str(absent)):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--host", f"fe80::1%{zone}"])
        err = capsys.readouterr().err
        assert f"--host: 'fe80::1%{zone}': no network interface '{zone}' on this machine" in err, err
        assert f"interfaces here: {interfaces[0][1]}" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_token_file_that_is_a_pipe_nothing_writes_to_is_refused_not_waited_on(tmp_path: Path) -> None:
    """``--registration-token-file fifo`` with nothing writing to it waited in open() for ever: no
    relay, and not a word. (The timeout turns a hang into a failure.)"""
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    argv = ["--port", "0", "--db", str(tmp_path / "r.db"), "--registration-token-file", str(fifo)]
    res = subprocess.run(
        [sys.executable, "-m", "relaysim.relay.server", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert f"--registration-token-file {fifo}: a pipe (FIFO) that nothing is writing to" in res.stderr
    assert not (tmp_path / "r.db").exists()


def test_a_token_file_of_any_size_is_read_only_as_far_as_a_token_can_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of gigabytes given for the token was read whole into memory, then said to be a token
    of that many bytes."""
    from relaysim.relay.server import MAX_TOKEN_FILE, _read_token_file

    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_TOKEN_FILE + 10))
    assert main(["--port", "0", "--db", str(tmp_path / "r.db"), "--registration-token-file", str(big)]) == 2
    err = capsys.readouterr().err
    assert f"the token is more than {MAX_TOKEN_FILE:,} bytes; expected 1 to 64" in err, err
    assert len(_read_token_file(str(big))) == MAX_TOKEN_FILE + 1


def test_a_second_relay_on_a_store_another_serves_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``relay serve`` on one --db both ran: each with its own caches (queue sizes, routes, the next
    record's seq), rate limits and key log in memory, writing over the other's records."""
    db, log = tmp_path / "relay.db", tmp_path / "relay.log"
    first = RelayProcess(db, log)
    try:
        # (It binds a free port first, then is refused the store; were it not, it would serve.)
        assert main(["--host", "127.0.0.1", "--port", "0", "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert f"--db {db}: another relay is serving this database" in err and "Traceback" not in err
        assert first.proc.poll() is None  # the first serves on
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=20) == 0
        lock = lock_store(str(db))  # the first has stopped: the lock went with it
        assert lock >= 0
        os.close(lock)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()


def test_main_says_what_is_wrong_with_the_db_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused store's message named the file twice ("--db X: cannot open the relay database: X:
    ..."), and SQLite's words alone said nothing of a folder given for the file."""
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 1000")
    db.close()
    folder = tmp_path / "folder.db"
    folder.mkdir()
    for path, said in (
        (newer, "written by a newer relaysim: schema version 1000 is newer"),
        (folder, "a folder, not a database file"),
    ):
        assert main(["--host", "127.0.0.1", "--port", "0", "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"error: --db {path}: {said}" in err and err.count(str(path)) == 1, err


def test_a_db_that_is_a_link_to_nothing_is_refused_naming_it_and_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--db`` a symbolic link to a file in a missing folder said only "unable to open database
    file"; one to a missing file in a folder that exists had the lock (then SQLite) make an empty
    store there: a relay whose database moved started again with no accounts and a new key."""
    (tmp_path / "disk").mkdir()
    for target, said in (
        (tmp_path / "unmounted" / "relay.db", "which is in a folder that does not exist"),
        (tmp_path / "disk" / "relay.db", "which does not exist"),
    ):
        link = tmp_path / "relay.db"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        assert main(["--host", "127.0.0.1", "--port", "0", "--db", str(link)]) == 2
        err = capsys.readouterr().err
        assert f"error: --db {link}: a symbolic link to {target}, {said}" in err, err
        assert not target.exists() and "Traceback" not in err
        with pytest.raises(StoreError, match="a symbolic link to"):
            lock_store(str(link))
        with pytest.raises(StoreError, match="a symbolic link to"):
            Store(link)
        assert not target.exists()


def test_a_db_that_is_a_link_to_a_store_is_followed(tmp_path: Path) -> None:
    """A link to a store is the store (SQLite opens what it points to): locked and opened there."""
    real = tmp_path / "disk" / "relay.db"
    real.parent.mkdir()
    with Store(real) as store:
        store.mark_simulation_keys("seed 7")
    link = tmp_path / "relay.db"
    link.symlink_to(real)
    lock = lock_store(str(link))
    try:
        assert lock >= 0 and os.fstat(lock).st_ino == real.stat().st_ino
    finally:
        os.close(lock)
    with Store(link) as store:
        assert store.simulation_keys == "seed 7"


def test_tls_files_that_hold_no_certificate_or_no_key_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tls-cert and --tls-key swapped, or the certificate given for both, was OpenSSL's "[SSL] PEM
    lib (_ssl.c:3926)", naming both files and neither fault. A key that is not the certificate's is
    still OpenSSL's to say."""
    ca = trustme.CA()
    issued, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.2")
    cert, key, stranger = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "other-key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    other.private_key_pem.write_to_path(str(stranger))
    db = tmp_path / "relay.db"
    for given, said in (
        (
            (key, cert),
            f"--tls-cert {key}: holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line); "
            "--tls-cert and --tls-key are the other way round?",
        ),
        ((cert, cert), f"--tls-key {cert}: holds no PEM private key (no '-----BEGIN PRIVATE KEY-----' line)"),
        (
            (cert, stranger),
            f"--tls-cert {cert} --tls-key {stranger}: cannot load them as a PEM certificate chain",
        ),
    ):
        argv = ["--port", "0", "--db", str(db), "--tls-cert", str(given[0]), "--tls-key", str(given[1])]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"error: {said}" in err and "PEM lib" not in err, err
        assert not db.exists()


def test_tls_files_that_cannot_be_loaded_are_a_usage_error_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tls-cert and --tls-key naming a folder, or a file that is no PEM, were loaded only once the
    store was opened and the server starting: "cannot serve: [Errno 21] Is a directory", exit 1,
    naming neither option, and a relay.db made for nothing."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n", encoding="ascii")
    db = tmp_path / "relay.db"
    for given, said in (
        (tmp_path, f"--tls-cert {tmp_path}: a folder, not a file"),
        (junk, f"--tls-cert {junk}: holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
        (tmp_path / "absent.pem", f"--tls-cert {tmp_path / 'absent.pem'}: No such file or directory"),
    ):
        argv = ["--port", "0", "--db", str(db), "--tls-cert", str(given), "--tls-key", str(given)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"error: {said}" in err, err
        assert not db.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_tls_files_that_are_a_pipe_or_too_large_are_refused_not_waited_on(tmp_path: Path) -> None:
    """``--tls-cert fifo`` (or --tls-key) with nothing writing to the pipe waited in OpenSSL's open
    for ever: no relay, and not a word. A file of gigabytes was read whole by OpenSSL. (The timeout
    turns a hang into a failure.)"""
    from relaysim.relay.server import MAX_TLS_FILE

    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    big = tmp_path / "big.pem"
    with open(big, "wb") as f:
        f.truncate(MAX_TLS_FILE + 1)  # (sparse: no megabyte written)
    db = tmp_path / "r.db"
    for cert, key, said in (
        (fifo, fifo, f"--tls-cert {fifo}: a named pipe (FIFO), not a regular file"),
        (big, fifo, f"--tls-cert {big}: {MAX_TLS_FILE + 1:,} bytes, more than a PEM"),
    ):
        tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
        res = subprocess.run(
            [sys.executable, "-m", "relaysim.relay.server", "--port", "0", "--db", str(db), *tls],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(RelayProcess.ROOT)},
        )
        assert res.returncode == 2, res.stderr
        assert f"error: {said}" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not db.exists()


# (run in a relay serve process: after the first open of each TLS file, a FIFO is put at its path)
_SWAP_AFTER_OPEN = """
import os, sys
from relaysim.relay import server
swapped, real_open = set(), os.open
def swapping_open(path, *args, **kwargs):
    fd = real_open(path, *args, **kwargs)
    if str(path).endswith('.pem') and path not in swapped:
        swapped.add(path)
        os.unlink(path)
        os.mkfifo(path)  # (nothing will ever write to it)
    return fd
os.open = swapping_open
sys.exit(server.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_tls_files_are_read_from_the_one_open_that_was_checked(tmp_path: Path) -> None:
    """--tls-cert and --tls-key were opened, checked (a regular file, not too large) and closed, then
    opened again by OpenSSL, by path, twice: a FIFO put there in between was waited on for ever, a
    file of gigabytes read whole. Each is now read once, from the open it was checked on. (Here a
    FIFO replaces each file after its first open; the timeout turns a hang into a failure.)"""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    absent = tmp_path / "absent-token"  # (a usage error after the TLS files: the relay stops there)
    argv = ["--port", "0", "--db", str(tmp_path / "r.db"), "--tls-cert", str(cert), "--tls-key", str(key)]
    res = subprocess.run(
        [sys.executable, "-c", _SWAP_AFTER_OPEN, *argv, "--registration-token-file", str(absent)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(RelayProcess.ROOT)},
    )
    assert res.returncode == 2, res.stderr
    assert f"error: --registration-token-file {absent}: No such file" in res.stderr, res.stderr
    assert stat.S_ISFIFO(cert.stat().st_mode) and stat.S_ISFIFO(key.stat().st_mode)  # (swapped)


def test_a_pipe_at_the_db_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    """The lock's open of a FIFO at --db waited for a writer, for ever; SQLite says "disk I/O error"."""
    fifo = tmp_path / "relay.db"
    os.mkfifo(fifo)
    res = subprocess.run(
        [sys.executable, "-m", "relaysim.relay.server", "--port", "0", "--db", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(RelayProcess.ROOT)},
    )
    assert res.returncode == 2, res.stderr
    assert f"--db {fifo}: not a regular file" in res.stderr and "Traceback" not in res.stderr


def test_a_fresh_store_has_no_simulation_mark(tmp_path: Path) -> None:
    with Store(tmp_path / "relay.db") as store:
        assert store.simulation_keys is None
        store.mark_simulation_keys("seed 7")
    with Store(tmp_path / "relay.db") as store:
        assert store.simulation_keys == "seed 7"


async def test_a_drained_socket_is_waited_on_before_it_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a read that emptied the socket, the reader waits for readability before reading again:
    a device sends its next request only after the answer, so reading at once would find nothing
    (a failed system call and an exception per request)."""
    failed: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        try:
            return real_read(fd, n)
        except BlockingIOError:
            failed.append(fd)
            raise

    async with running(new_core()) as server:
        client = await WireClient.connect(server.port)
        await client.request(lambda i: wire.Ping(id=i))  # the connection is set up
        monkeypatch.setattr(os, "read", counting_read)
        for _ in range(20):
            assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)
        monkeypatch.undo()
        await client.aclose()
    assert len(failed) <= 1  # (before: one failed read per request, 20)


class _HandlerSteps(trio.abc.Instrument):  # type: ignore[misc]
    """Counts the steps run by connection handler tasks (serve_listeners' _run_handler)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += task.name.endswith("_run_handler")


async def test_requests_over_tcp_are_read_without_waking_their_connections_tasks() -> None:
    """One task, the pump, reads every plain TCP connection and queues its requests: a connection's
    own task wakes at its start and end (or to wait for room for an answer), not to read each
    request and again to wait for its answer."""
    steps = _HandlerSteps()
    async with running(new_core(clock=time.time)) as server:
        clients = [await WireClient.connect(server.port) for _ in range(4)]
        for client in clients:
            await client.request(lambda i: wire.Ping(id=i))  # the connection is set up

        async def pings(client: WireClient) -> None:
            for _ in range(25):
                assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)

        trio.lowlevel.add_instrument(steps)
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for client in clients:
                        nursery.start_soon(pings, client)
        finally:
            trio.lowlevel.remove_instrument(steps)
        for client in clients:
            await client.aclose()
    assert steps.steps <= 4  # (before: two or more per request, 200 or more)


async def test_the_retention_sweep_checkpoints_the_database_in_a_worker_thread(tmp_path: Path) -> None:
    """The server's retention sweep runs the WAL checkpoint in a worker thread: through a connection
    of that thread's own (a SQLite connection may be used only in the thread that made it), not the
    store's. (Before: every sweep raised ProgrammingError, which stopped the server at its first
    sweep, 60 s after it started.)"""
    path = tmp_path / "relay.db"
    with Store(path) as store:
        core = RelayCore(store, clock=time.time)
        async with running(core, retention_interval=0.05) as server:
            client = await WireClient.connect(server.port)
            await client.register(ALICE)
            await client.authenticate(ALICE)
            with trio.fail_after(5):
                while os.path.getsize(f"{path}-wal"):  # the sweep truncates the WAL
                    await trio.sleep(0.02)
            await trio.sleep(0.2)  # several sweeps later, still serving
            assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)
            await client.aclose()


async def test_the_retention_sweep_of_a_relay_on_a_store_in_memory_leaves_it_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store in memory (every test's, an embedding's) was checkpointed by the sweep's worker thread
    through the store's own connection, which SQLite lets only its own thread use: the first sweep
    raised ProgrammingError out of serve's nursery and the relay stopped, 60 s after it started (the
    fuzz's longer run met it). A database in memory has no WAL: there is nothing to checkpoint."""
    async with running(new_core(clock=time.time), retention_interval=0.05) as server:
        client = await WireClient.connect(server.port)
        await client.register(ALICE)
        await trio.sleep(0.3)  # several sweeps later, still serving
        assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)
        await client.aclose()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


async def test_a_retention_sweep_that_fails_is_logged_and_the_relay_serves_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sweep that raises (here the expiry, as a disk error would) is logged at each sweep and the
    relay keeps serving; it raised out of serve's nursery and ended every connection."""
    core = new_core(clock=time.time)
    failures = 0

    def failing_expire() -> int:
        nonlocal failures
        failures += 1
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(core, "expire", failing_expire)
    async with running(core, retention_interval=0.05) as server:
        client = await WireClient.connect(server.port)
        await client.register(ALICE)
        with trio.fail_after(5):
            while failures < 3:  # several failed sweeps
                await trio.sleep(0.02)
        assert isinstance(await client.request(lambda i: wire.Ping(id=i)), wire.Pong)
        await client.aclose()
    assert "retention sweep failed" in caplog.text


async def test_a_durable_store_is_checkpointed_beside_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL's checkpoints (its pages copied into the main file, which is then fsynced) run in a
    worker thread beside the loop; the loop's own COMMITs checkpoint only past a fallback size,
    not every 1,000 pages (SQLite's default), which held the loop up for an fsync each time."""
    store = Store(tmp_path / "relay.db")
    core = RelayCore(store, clock=time.time)
    threads: list[int] = []
    beside = store.checkpoint_beside

    def spy() -> None:
        threads.append(threading.get_ident())
        beside()

    monkeypatch.setattr(store, "checkpoint_beside", spy)
    async with running(core) as server:
        (pages,) = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert pages > 1000
        client = await WireClient.connect(server.port)
        await client.register(ALICE)
        await client.authenticate(ALICE)
        with trio.fail_after(5):
            while not threads:
                await client.request(lambda i: wire.Ping(id=i))
                await trio.sleep(0.01)
        await client.aclose()
    store.close()
    assert threading.get_ident() not in threads


async def test_a_long_pipeline_over_tcp_waits_for_room_and_is_answered_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More pipelined requests than their answers' room (the connection's output bound over a
    small answer's size) are all answered, in order: the pump holds the
    first that does not fit back, and the connection's task queues it once there is room."""
    from relaysim.relay import server as server_module

    held: list[int] = []
    take_frames = server_module.RelayServer._take_frames

    def spying(self: RelayServer, conn: Any, limit: int) -> int:
        queued = take_frames(self, conn, limit)
        if conn.held is not None:
            held.append(conn.held.id)
        return queued

    monkeypatch.setattr(server_module.RelayServer, "_take_frames", spying)
    # The bound: the larger of max_queued_bytes_per_device and a frame, 256 KiB: 64 small answers.
    async with running(new_core(clock=time.time), max_queued_bytes_per_device=1000) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        count = 700
        await stream.send_all(b"".join(wire.encode(wire.Ping(id=i)) for i in range(1, count + 1)))
        decoder = wire.FrameDecoder("device")
        pongs: list[wire.Frame] = []
        with trio.fail_after(10):
            while len(pongs) < count:
                decoder.receive_data(await stream.receive_some())
                while (frame := decoder.next_frame()) is not wire.NEED_DATA:
                    pongs.append(frame)
        assert pongs == [wire.Pong(id=i) for i in range(1, count + 1)]
        await stream.aclose()
    assert held  # the pump held a request back at least once


async def test_no_checkpoint_is_started_once_the_server_is_stopping(tmp_path: Path) -> None:
    """A batch led while the server stops (a connection's disconnect record, shielded) may find the
    pump's nursery closed already: it skips the checkpoint beside the loop rather than failing."""
    with Store(tmp_path / "relay.db") as store:
        server = RelayServer(RelayCore(store, clock=time.time))
        assert server.sync_in_thread
        async with trio.open_nursery() as nursery:
            pass  # closed from here on
        server._pump_nursery = nursery
        server._checkpoint_beside()  # (before: RuntimeError, nursery closed to new arrivals)
        assert not server._checkpointing


def test_the_tls_fallback_without_memfd_keeps_the_key_private_and_removes_it_on_every_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without memfd_create, the PEM files OpenSSL reads by path are written in a private temporary
    folder: 0700, the file 0600, removed when loaded, refused, cut short by a failed write or by
    KeyboardInterrupt; a TMPDIR where no folder can be made was said as "cannot load them as a PEM
    certificate chain", blaming the PEM files."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = issued.cert_chain_pems[0].bytes(), issued.private_key_pem.bytes()

    with server_module._pem_path(key) as path:  # type: ignore[attr-defined]
        folder = Path(path).parent
        assert folder.parent == scratch
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        assert Path(path).read_bytes() == key
    assert list(scratch.iterdir()) == []
    assert isinstance(server_module._tls_context(cert, key), ssl.SSLContext)  # type: ignore[attr-defined]
    assert list(scratch.iterdir()) == []
    with pytest.raises(ssl.SSLError):  # refused by OpenSSL
        server_module._tls_context(key, cert)  # type: ignore[attr-defined]
    assert list(scratch.iterdir()) == []
    # interrupted while loaded
    with pytest.raises(KeyboardInterrupt), server_module._pem_path(key):  # type: ignore[attr-defined]
        raise KeyboardInterrupt
    assert list(scratch.iterdir()) == []

    files = tmp_path / "cert.pem", tmp_path / "key.pem"
    files[0].write_bytes(cert)
    files[1].write_bytes(key)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))
    db = tmp_path / "relay.db"
    argv = ["--port", "0", "--db", str(db), "--tls-cert", str(files[0]), "--tls-key", str(files[1])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"error: --tls-cert {files[0]} --tls-key {files[1]}: no private temporary folder to hand the PEM files "
        "to OpenSSL in (No such file or directory); set TMPDIR to a folder of your own"
    ) in err, err
    assert not db.exists()

    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def interrupted(fd: int, data: Any) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # interrupted while it is written
        m.setattr(os, "write", interrupted)
        with pytest.raises(KeyboardInterrupt), server_module._pem_path(key):  # type: ignore[attr-defined]
            pass
    assert list(scratch.iterdir()) == []
