"""clients.net: devices over real loopback connections to the relay, in-process and as a subprocess.

Every relay listens on 127.0.0.1 with port 0 (a free port), and every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import socket
import ssl
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from relaysim.clients.agent import DeviceAgent, Received
from relaysim.clients.net import (
    Backoff,
    ConnectionClosed,
    DeviceConnection,
    RequestRefused,
    SendFailed,
    open_device_connection,
)
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.relay.core import RelayCore
from relaysim.relay.limits import DEFAULT_LIMITS
from relaysim.relay.metadata import RecordKind
from relaysim.relay.store import Store
from relaysim.sims.live import relay_process
from tests.conftest import seeded_rng
from tests.helpers import running

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {name: seeded_rng(len(name))(32) for name in ("alice", "bob")}
FAST = Backoff(initial=0.02, maximum=0.5)  # reconnect quickly in tests


def new_core(path: str | Path = ":memory:") -> RelayCore:
    return RelayCore(Store(path), clock=time.time)


def agent(account: str, trust_root: bytes, device: int = 1, seed: int = 0) -> DeviceAgent:
    # zlib.crc32, not hash(): str hashes differ per process (PYTHONHASHSEED), so keys would too.
    rng = seeded_rng(zlib.crc32(f"{account}/{device}/{seed}".encode()))
    return DeviceAgent(
        Device(account, device, rng=rng),
        registration_id=1 + device,
        delivery_token=TOKENS[account],
        rng=rng,
        trust_root=trust_root,
        clock=time.time,
        tokens=dict(TOKENS),
    )


@asynccontextmanager
async def two_devices(
    port: int, trust_root: bytes, **options: Any
) -> AsyncIterator[tuple[DeviceConnection, DeviceConnection]]:
    """alice and bob, registered and logged in."""
    options = {"backoff": FAST, "rng": random.Random(5), **options}
    async with (
        open_device_connection(agent("alice", trust_root), "127.0.0.1", port, **options) as a,
        open_device_connection(agent("bob", trust_root), "127.0.0.1", port, **options) as b,
    ):
        with trio.fail_after(20):
            for conn in (a, b):
                await conn.register()
                await conn.login()
        yield a, b


async def next_message(conn: DeviceConnection, timeout: float = 10) -> Received:
    with trio.fail_after(timeout):
        return await conn.received.receive()


async def assert_nothing_more(conn: DeviceConnection) -> None:
    """After a round trip to the relay, no further message is waiting (so none came twice)."""
    with trio.fail_after(10):
        await conn.sync()
    with pytest.raises(trio.WouldBlock):
        extra = conn.received.receive_nowait()
        pytest.fail(f"{conn.agent.account} got an extra message: {extra}")


# --- talking ----------------------------------------------------------------------------------


async def test_two_devices_exchange_messages_both_ways() -> None:
    core = new_core()
    async with running(core) as server, two_devices(server.port, core.trust_root_public) as (a, b):
        with trio.fail_after(10):
            ids = await a.send_text("bob", b"hello bob")
        got = await next_message(b)
        assert (got.plaintext, got.sender, got.sealed) == (b"hello bob", PeerAddress("alice", 1), False)
        assert got.envelope_id == ids[0] and len(ids) == 1
        with trio.fail_after(10):
            await b.send_text("alice", "hello alice")  # str is sent as UTF-8
        got = await next_message(a)
        assert (got.plaintext, got.sender) == (b"hello alice", PeerAddress("bob", 1))
        for i in range(5):  # a conversation, both sessions established
            with trio.fail_after(10):
                await a.send_text("bob", b"ping %d" % i)
                await b.send_text("alice", b"pong %d" % i)
            assert (await next_message(b)).plaintext == b"ping %d" % i
            assert (await next_message(a)).plaintext == b"pong %d" % i
        await assert_nothing_more(a)
        await assert_nothing_more(b)
        assert a.reconnects == b.reconnects == 0
        assert a.undecryptable == b.undecryptable == []
    # Each device acknowledged what it got, so the relay holds nothing any more.
    assert core.store.all_envelopes() == []


async def test_sealed_sender_both_ways_hides_the_sender_from_the_relay() -> None:
    core = new_core()
    async with running(core) as server, two_devices(server.port, core.trust_root_public) as (a, b):
        with trio.fail_after(10):
            await a.send_text("bob", b"sealed to bob", sealed=True)  # fetches a certificate first
        got = await next_message(b)
        assert (got.plaintext, got.sender, got.sealed) == (b"sealed to bob", PeerAddress("alice", 1), True)
        with trio.fail_after(10):
            await b.request_certificate()
            await b.send_text("alice", b"sealed to alice", sealed=True)
        got = await next_message(a)
        assert (got.plaintext, got.sender, got.sealed) == (b"sealed to alice", PeerAddress("bob", 1), True)
        await assert_nothing_more(a)
        await assert_nothing_more(b)
    sealed = core.store.metadata(RecordKind.SEALED_SEND)
    assert len(sealed) == 2
    # Sent over a connection that never authenticated: the relay did not learn who sent them.
    assert [(r.account, r.device) for r in sealed] == [(None, None), (None, None)]
    assert {r.recipient_account for r in sealed} == {"alice", "bob"}
    assert core.store.metadata(RecordKind.SEND) == []


async def test_refusals_raise_with_the_relays_code() -> None:
    core = new_core()
    async with running(core) as server, two_devices(server.port, core.trust_root_public) as (a, _b):
        with trio.fail_after(10), pytest.raises(SendFailed) as refused:
            await a.send_text("nobody", b"hello?")
        assert (refused.value.to, refused.value.code) == ("nobody", "unknown_account")
        with pytest.raises(SendFailed) as not_ready:
            await a.send_text("carol", b"hello?", sealed=True)
        assert not_ready.value.code == "not_ready" and "delivery token" in str(not_ready.value)
        # The connection carries on after a refusal.
        with trio.fail_after(10):
            await a.send_text("bob", b"still here")


async def test_logging_in_as_a_device_the_relay_does_not_know_is_refused() -> None:
    core = new_core()
    async with (
        running(core) as server,
        open_device_connection(agent("alice", core.trust_root_public), "127.0.0.1", server.port) as a,
    ):
        with trio.fail_after(10), pytest.raises(RequestRefused) as refused:
            await a.login()
        assert refused.value.code == "authentication_failed"
        assert a.state == "ready" and not a.logged_in  # still connected; it may register now
        with trio.fail_after(10):
            await a.register()
            await a.login()
        assert a.logged_in


async def test_the_agent_tops_up_its_prekeys_on_the_relay() -> None:
    # A relay that never says prekeys_left (tests/clients/test_client_abuse.py has one that does):
    # the device's own count of its one-time prekeys makes it upload more.
    core = RelayCore(
        Store(":memory:"), clock=time.time, limits=dataclasses.replace(DEFAULT_LIMITS, prekeys_low=0)
    )
    async with running(core) as server:
        root = core.trust_root_public
        async with (
            open_device_connection(agent("alice", root), "127.0.0.1", server.port) as a,
            open_device_connection(agent("bob", root), "127.0.0.1", server.port) as b,
        ):
            with trio.fail_after(20):
                await a.register()
                await a.login()
                await b.register(one_time=3)  # few one-time prekeys, so one use runs them low
                await b.login()
            with trio.fail_after(10):
                await a.send_text("bob", b"first message: a prekey message")
            await next_message(b)
            with trio.fail_after(10):
                await b.sync()  # the upload went before the ping, so it has been answered
            one_time, _kem = core.store.prekey_counts("bob", 1)
            assert one_time == 20  # PREKEY_BATCH fresh keys replaced the two left


# --- going offline and coming back ---------------------------------------------------------------


async def test_messages_queued_while_offline_arrive_once_after_reconnecting() -> None:
    core = new_core()
    slow = Backoff(initial=5.0, maximum=5.0)  # coming back from disconnect() must not wait for it
    async with (
        running(core) as server,
        two_devices(server.port, core.trust_root_public, backoff=slow) as (a, b),
    ):
        with trio.fail_after(10):
            await a.send_text("bob", b"before")
        assert (await next_message(b)).plaintext == b"before"
        with trio.fail_after(10):
            await b.disconnect()
        assert b.state == "offline"
        with trio.fail_after(10):
            for i in range(3):
                await a.send_text("bob", b"while away %d" % i)
        assert len(core.store.all_envelopes()) == 3
        with trio.fail_after(2):
            await b.connect()  # logs in again and receives the queue
        got = [(await next_message(b)).plaintext for _ in range(3)]
        assert got == [b"while away 0", b"while away 1", b"while away 2"]
        await assert_nothing_more(b)
        assert b.reconnects == 1 and b.last_drop == "disconnected by the application"
    assert core.store.all_envelopes() == []


async def test_a_send_made_while_offline_goes_once_back_online() -> None:
    core = new_core()
    async with running(core) as server, two_devices(server.port, core.trust_root_public) as (a, b):
        with trio.fail_after(10):
            await a.disconnect()
        results: list[tuple[bytes, ...]] = []

        async def send() -> None:
            results.append(await a.send_text("bob", b"written offline"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []  # held: the device is offline
            with trio.fail_after(10):
                await a.connect()
        got = await next_message(b)
        assert got.plaintext == b"written offline" and (got.envelope_id,) == results[0]
        await assert_nothing_more(b)


async def test_an_aborted_connection_reconnects_and_loses_nothing() -> None:
    core = new_core()
    async with running(core) as server, two_devices(server.port, core.trust_root_public) as (a, b):
        with trio.fail_after(10):
            await a.send_text("bob", b"0")
        assert (await next_message(b)).plaintext == b"0"
        sent = 1
        for round_ in range(3):
            # Cut bob off while alice keeps sending; his pushes and acks may be lost mid-way.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.abort)
                for _ in range(4):
                    with trio.fail_after(10):
                        await a.send_text("bob", str(sent).encode())
                    sent += 1
            with trio.fail_after(10):
                await b.wait_ready()
            assert b.reconnects == round_ + 1 and b.last_drop == "aborted by the application"
        got = sorted([int((await next_message(b)).plaintext) for _ in range(sent - 1)])
        assert got == list(range(1, sent))
        await assert_nothing_more(b)
        assert b.undecryptable == []
    assert core.store.all_envelopes() == []


async def test_the_relay_closing_an_idle_connection_is_a_drop_and_keepalive_prevents_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On trio's virtual clock, which moves only when every task waits (autojump_clock): the
    relay's 0.3 s and alice's 0.05 s pings are then kept to the virtual second, however busy the
    machine (on the real clock, a loop held up 0.25 s by work timed alice out once)."""
    core = new_core()
    root = core.trust_root_public
    alice, bob = agent("alice", root), agent("bob", root)
    # Registered first, on a relay with its usual read timeout: making a registration's keys
    # holds the loop up, and on a busy machine that took bob past 0.3 s before his register was
    # sent (the relay closed his connection with it in flight: ConnectionLost).
    async with running(core) as server:
        for who in (alice, bob):
            async with open_device_connection(who, "127.0.0.1", server.port) as conn:
                with trio.fail_after(20):
                    await conn.register()
    async with (
        running(core, read_timeout=0.3) as server,
        open_device_connection(alice, "127.0.0.1", server.port, keepalive=0.05) as a,
        open_device_connection(bob, "127.0.0.1", server.port, keepalive=None) as b,
    ):
        with trio.fail_after(20):
            for conn in (a, b):
                await conn.login()
            # Bob sends nothing: the relay times him out; he reconnects and logs in again.
            await b.wait_until(lambda: b.reconnects >= 1 and b.state == "ready")
        assert b.last_drop == "the relay closed the connection"
        assert a.reconnects == 0  # alice's pings kept her connection open all along
        with trio.fail_after(10):
            await a.send_text("bob", b"after the timeout")
        assert (await next_message(b)).plaintext == b"after the timeout"
        assert a.reconnects == 0


async def test_queued_messages_survive_a_relay_restart_on_the_same_database(tmp_path: Path) -> None:
    db, log = tmp_path / "relay.db", tmp_path / "relay.log"
    async with relay_process(db, log) as first:
        port, root = first.port, first.trust_root
        async with two_devices(port, root) as (a, b):
            with trio.fail_after(10):
                await a.send_text("bob", b"before")
            assert (await next_message(b)).plaintext == b"before"
            with trio.fail_after(10):
                await b.disconnect()
                await a.send_text("bob", b"queued 1")
                await a.send_text("bob", b"queued 2")  # accepted means on disk
            assert await first.stop() == 0
            with trio.fail_after(10):
                await a.wait_until(lambda: a.state != "ready")  # alice notices and retries
            sent: list[tuple[bytes, ...]] = []

            async def send_while_down() -> None:
                sent.append(await a.send_text("bob", b"written while the relay was down"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_while_down)
                async with relay_process(db, log, port=port) as second:
                    assert second.trust_root == root  # the relay's identity is in its database
                    with trio.fail_after(20):
                        await a.wait_until(lambda: a.reconnects >= 1 and a.state == "ready")
                        await b.connect()
                    got = [(await next_message(b)).plaintext for _ in range(3)]
                    assert sorted(got) == [b"queued 1", b"queued 2", b"written while the relay was down"]
                    await assert_nothing_more(b)
                    assert len(sent) == 1
                    with trio.fail_after(10):
                        await a.disconnect()
                        await b.disconnect()
    assert "SIGTERM received; shutting down" in log.read_text()
    with Store(db) as store:
        assert store.all_envelopes() == []  # all acknowledged before the second relay stopped


class CuttingProxy:
    """A loopback proxy between devices and the relay. Armed, it forwards the next ``send`` to the
    relay, waits for the relay's answer, swallows it and hangs up on both: the relay has accepted
    the envelopes and the device never hears of it."""

    def __init__(self, relay_port: int) -> None:
        self.relay_port = relay_port
        self.port = 0
        self.armed = False
        self.cuts = 0

    async def handle(self, device: trio.abc.Stream) -> None:
        relay = await trio.open_tcp_stream("127.0.0.1", self.relay_port)
        cut_at: list[int] = []
        async with device, relay, trio.open_nursery() as nursery:

            async def up() -> None:
                decoder = wire.FrameDecoder("relay")
                async for chunk in device:
                    decoder.receive_data(chunk)
                    while (frame := decoder.next_frame()) is not wire.NEED_DATA:
                        if self.armed and isinstance(frame, wire.Send):
                            self.armed = False
                            cut_at.append(frame.id)
                    await relay.send_all(chunk)
                nursery.cancel_scope.cancel()

            async def down() -> None:
                decoder = wire.FrameDecoder("device")
                async for chunk in relay:
                    decoder.receive_data(chunk)
                    while (frame := decoder.next_frame()) is not wire.NEED_DATA:
                        if frame is not wire.CLOSED and frame.id in cut_at:
                            self.cuts += 1
                            nursery.cancel_scope.cancel()  # hang up on both, answer unsent
                            return
                        await device.send_all(wire.encode(frame))
                nursery.cancel_scope.cancel()

            nursery.start_soon(up)
            nursery.start_soon(down)


@asynccontextmanager
async def cutting_proxy(relay_port: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(relay_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()


async def test_a_send_whose_answer_was_lost_is_written_again_and_read_once() -> None:
    core = new_core()
    async with (
        running(core) as server,
        cutting_proxy(server.port) as proxy,
        two_devices(proxy.port, core.trust_root_public) as (a, b),
    ):
        with trio.fail_after(10):
            await a.send_text("bob", b"warm-up")
        assert (await next_message(b)).plaintext == b"warm-up"
        proxy.armed = True
        with trio.fail_after(10):
            ids = await a.send_text("bob", b"the answer to this was lost")
        assert proxy.cuts == 1 and a.reconnects == 1
        got = await next_message(b)
        assert got.plaintext == b"the answer to this was lost" and (got.envelope_id,) != ids
        # The relay took the send twice (same ciphertext, two envelopes); bob's ratchet refuses
        # the second copy, so he reads the message once, and reports it as the duplicate it is.
        await assert_nothing_more(b)
        assert len(core.store.metadata(RecordKind.SEND)) == 3
        assert [u.envelope_id for u in b.duplicates] == list(ids)
        assert b.undecryptable == []
    assert core.store.all_envelopes() == []


async def test_reconnects_back_off_exponentially_up_to_the_cap() -> None:
    accepted: list[float] = []

    async def hang_up(stream: trio.abc.Stream) -> None:
        accepted.append(trio.current_time())
        await stream.aclose()

    backoff = Backoff(initial=0.05, multiplier=2.0, jitter=0.0, maximum=0.2)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
        port = listeners[0].socket.getsockname()[1]
        ag = agent("alice", b"")
        async with open_device_connection(ag, "127.0.0.1", port, backoff=backoff, keepalive=None) as c:
            with trio.fail_after(10):
                await c.wait_until(lambda: c.reconnects >= 5)
            assert c.last_drop == "the relay closed the connection"
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(accepted)]
    for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=False):
        assert gap >= least * 0.95, gaps
    assert max(gaps[:5]) < 0.2 + 2.0, gaps  # capped (the slack is for a loaded machine)


def test_backoff_is_capped_jittered_and_reproducible_from_its_rng() -> None:
    backoff = Backoff(initial=0.1, multiplier=2.0, jitter=0.2, maximum=1.0)
    rng = random.Random(3)
    delays = [backoff.delay(i, rng) for i in range(12)]
    for i, d in enumerate(delays):
        base = min(1.0, 0.1 * 2**i)
        assert base * 0.8 <= d <= min(1.0, base * 1.2), (i, d)
    assert len({round(d, 9) for d in delays[5:]}) > 1  # jittered even at the cap
    again = random.Random(3)
    assert [backoff.delay(i, again) for i in range(12)] == delays
    assert backoff.delay(10**9, random.Random(1)) <= 1.0  # no overflow, however long it has failed
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


# --- linked devices, TLS, closing -----------------------------------------------------------------


async def test_a_linked_device_gets_messages_too() -> None:
    core = new_core()
    root = core.trust_root_public
    async with running(core) as server, two_devices(server.port, root) as (a, b):
        with trio.fail_after(10):
            await b.send_text("alice", b"to alice's phone")
        assert (await next_message(a)).plaintext == b"to alice's phone"
        laptop = agent("alice", root, device=2)
        with trio.fail_after(20):
            await a.link_device(laptop)  # registered through the phone's logged-in connection
        assert core.store.device_ids("alice") == [1, 2]
        async with open_device_connection(laptop, "127.0.0.1", server.port) as a2:
            with trio.fail_after(20):
                await a2.login()
                # bob's agent knows one device of alice's: the relay says stale_devices, the
                # agent fetches the bundles again and sends to both.
                await b.send_text("alice", b"to both")
            assert (await next_message(a)).plaintext == b"to both"
            got = await next_message(a2)
            assert (got.plaintext, got.sender) == (b"to both", PeerAddress("bob", 1))
        with pytest.raises(ValueError, match="not a device of account"):
            await a.link_device(agent("bob", root, device=2))


async def test_a_linked_device_reads_what_its_primary_sends_sealed() -> None:
    """The phone that linked the laptop sends it a sync copy of each message it writes, sealed sender
    or not (the relay's needs_sync comes only with an authenticated send: the phone knows anyway)."""
    core = new_core()
    root = core.trust_root_public
    async with running(core) as server, two_devices(server.port, root) as (a, b):
        laptop = agent("alice", root, device=2)
        with trio.fail_after(20):
            await a.link_device(laptop)
        async with open_device_connection(laptop, "127.0.0.1", server.port) as a2:
            with trio.fail_after(20):
                await a2.login()
                await a.send_text("bob", b"from the phone, sealed", sealed=True)
            assert (await next_message(b)).plaintext == b"from the phone, sealed"
            with trio.fail_after(10):
                while not a2.synced:
                    await a2.sync()
            (copy,) = a2.synced
            assert (copy.destination, copy.plaintext, copy.sender) == (
                "bob",
                b"from the phone, sealed",
                PeerAddress("alice", 1),
            )
            assert not a.synced and not b.synced and not a.failures


async def test_over_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    core = new_core()
    written: list[bytes] = []
    async with (
        running(core, ssl_context=server_context) as server,
        two_devices(
            server.port, core.trust_root_public, ssl_context=client_context, wire_tap=written.append
        ) as (a, b),
    ):
        with trio.fail_after(10):
            await a.send_text("bob", b"over TLS")
            await a.send_text("bob", b"over TLS, sealed", sealed=True)
        assert {(await next_message(b)).plaintext for _ in range(2)} == {b"over TLS", b"over TLS, sealed"}
        # The tap sees the protocol inside TLS: it decodes as requests.
        decoder = wire.FrameDecoder("relay")
        decoder.receive_data(b"".join(written))
        assert isinstance(decoder.next_frame(), wire.Register)
        # A device that does not trust the relay's certificate cannot connect.
        with pytest.raises(trio.BrokenResourceError):
            async with open_device_connection(
                agent("alice", b""), "127.0.0.1", server.port, ssl_context=ssl.create_default_context()
            ):
                pass


async def test_a_relay_that_is_not_listening_raises_oserror_itself() -> None:
    # Not wrapped in an ExceptionGroup (trio >= 0.25 wraps what leaves a nursery): the first
    # connection is made before the connection's nursery opens.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
        port = bound.getsockname()[1]
        with trio.fail_after(10), pytest.raises(OSError):
            async with open_device_connection(agent("alice", b""), "127.0.0.1", port):
                pytest.fail("connected to a port nobody listens on")


async def test_an_error_raised_in_the_block_comes_out_as_itself() -> None:
    core = new_core()
    async with running(core) as server:
        with pytest.raises(SendFailed) as refused:
            async with open_device_connection(
                agent("alice", core.trust_root_public), "127.0.0.1", server.port, backoff=FAST
            ) as a:
                with trio.fail_after(20):
                    await a.register()
                    await a.login()
                    await a.send_text("nobody", b"hello?")
        assert (refused.value.to, refused.value.code) == ("nobody", "unknown_account")
        # Not even a one-element ExceptionGroup around it, nor one in its context.
        assert not isinstance(refused.value.__context__, BaseExceptionGroup)


async def test_closing_fails_what_still_waits_and_ends_the_received_channel() -> None:
    core = new_core()
    outcomes: list[BaseException] = []
    async with running(core) as server:
        async with (
            trio.open_nursery() as outside,
            two_devices(server.port, core.trust_root_public) as (a, b),
        ):
            with trio.fail_after(10):
                await a.disconnect()

            async def send() -> None:
                try:
                    await a.send_text("bob", b"never sent")
                except ConnectionClosed as e:
                    outcomes.append(e)

            outside.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert outcomes == []  # waiting for alice to come back online
        # Both connections closed while the send waited; the nursery has seen it finish.
        assert [type(e) for e in outcomes] == [ConnectionClosed]
        with pytest.raises(ConnectionClosed, match=r"alice\.1"):
            await a.send_text("bob", b"too late")
        assert [m async for m in b.received] == []


# --- the README --------------------------------------------------------------------------------------


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two devices through a running relay", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the README section should hold one python block"
    return blocks[0]


async def test_the_readme_example_runs_against_relaysim_relay_serve(tmp_path: Path) -> None:
    code = _readme_example()
    assert "PORT = 7465\n" in code
    # the relay as a reader starts it: its default limits and registration proof (18 bits)
    async with relay_process(tmp_path / "relay.db", tmp_path / "relay.log", defaults=True) as relay:
        code = code.replace("PORT = 7465\n", f"PORT = {relay.port}\n")
        # As a reader runs it: its own interpreter (it calls trio.run itself), killed if it hangs.
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-c", code], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
            )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode() == "alice hello through the relay\n"
