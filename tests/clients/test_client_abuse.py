"""The client's side of the relay's abuse defences (issue #14): the registration proof (a hashcash
stamp whose difficulty the relay announces, or the operator's token), waiting out ``rate_limited``,
answering ``prekeys_left``, and rotating the delivery token."""

from __future__ import annotations

import dataclasses
import time

import pytest
import trio

from relaysim.clients.agent import PREKEY_ARCHIVE_AGE, SIGNED_PREKEY_ROTATION, DeviceAgent, ProofRequired
from relaysim.clients.net import RequestRefused, open_device_connection
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.relay.limits import DEFAULT_LIMITS, Rate
from relaysim.relay.store import Store
from tests.clients.test_client_net import agent, next_message
from tests.helpers import running

BITS = 10  # cheap to solve in a test (about a thousand SHA-256 tries)


def core_with(**options: object) -> RelayCore:
    return RelayCore(Store(":memory:"), clock=time.time, **options)  # type: ignore[arg-type]


def test_the_relay_announces_the_difficulty_and_the_agent_asks_for_a_stamp() -> None:
    core = core_with(registration_pow=BITS)
    alice = agent("alice", core.trust_root_public)
    conn = ConnectionContext(1, ("127.0.0.1", 4000))
    alice.register()
    (frame,) = alice.take_outbox()
    (reply,) = [r.frame for r in core.handle(conn, frame) if isinstance(r, Reply)]
    assert isinstance(reply, wire.ErrorFrame) and reply.code == wire.ErrorCode.REGISTRATION_PROOF
    assert reply.registration_pow == BITS
    # it survives the wire
    decoder = wire.FrameDecoder("device")
    decoder.receive_data(wire.encode(reply))
    decoded = decoder.next_frame()
    assert isinstance(decoded, wire.ErrorFrame) and decoded.registration_pow == BITS
    assert alice.handle(reply) == [ProofRequired(BITS)]
    stamp = wire.solve_registration_pow("alice", alice.device.identity_key, BITS)
    alice.prove_registration(stamp)
    (again,) = alice.take_outbox()
    assert isinstance(again, wire.Register) and again.proof == stamp
    assert dataclasses.replace(again, id=frame.id, proof=None) == frame  # the same keys
    (ok,) = [r.frame for r in core.handle(conn, again) if isinstance(r, Reply)]
    assert isinstance(ok, wire.Registered)
    alice.handle(ok)
    # registered: the register frame (three ML-KEM public keys, ~5 KiB) is no longer kept to send again
    with pytest.raises(ValueError, match="no register was sent to send again"):
        alice.prove_registration(stamp)


async def test_a_device_registers_on_a_relay_that_asks_for_a_stamp() -> None:
    core = core_with(registration_pow=BITS)
    async with (
        running(core) as server,
        open_device_connection(agent("alice", core.trust_root_public), "127.0.0.1", server.port) as a,
    ):
        with trio.fail_after(20):
            await a.register()
            await a.login()
    assert core.store.prekey_counts("alice", 1)[0] > 0


async def test_a_relay_asking_too_much_is_refused_with_a_clear_error() -> None:
    core = core_with(registration_pow=30)
    async with (
        running(core) as server,
        open_device_connection(agent("alice", core.trust_root_public), "127.0.0.1", server.port) as a,
    ):
        with trio.fail_after(20), pytest.raises(RequestRefused, match="30-bit registration stamp"):
            await a.register()


async def test_the_operators_registration_token() -> None:
    core = core_with(registration_token=b"let me in, please")
    root = core.trust_root_public
    async with running(core) as server:
        without = agent("alice", root)
        async with open_device_connection(without, "127.0.0.1", server.port) as a:
            with trio.fail_after(20), pytest.raises(RequestRefused, match="registration token"):
                await a.register()
        with_token = agent("bob", root)
        with_token.registration_token = b"let me in, please"
        async with open_device_connection(with_token, "127.0.0.1", server.port) as b:
            with trio.fail_after(20):
                await b.register()
                await b.login()


async def test_a_rate_limited_send_is_waited_out_and_sent_again() -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, send_per_account=Rate(5.0, 1.0))  # one now, then 1 in 0.2 s
    core = core_with(limits=limits)
    root = core.trust_root_public
    async with (
        running(core) as server,
        open_device_connection(agent("alice", root), "127.0.0.1", server.port) as a,
        open_device_connection(agent("bob", root), "127.0.0.1", server.port) as b,
    ):
        with trio.fail_after(20):
            for conn in (a, b):
                await conn.register()
                await conn.login()
            await a.send_text("bob", b"one")
            await a.send_text("bob", b"two")  # refused rate_limited first, then accepted
            with pytest.raises(Exception, match="rate_limited"):
                await a.send_text("bob", b"three", retries=0)
        assert [(await next_message(b)).plaintext for _ in range(2)] == [b"one", b"two"]


async def test_prekeys_left_makes_the_device_upload_more() -> None:
    core = core_with()
    root = core.trust_root_public
    async with running(core) as server:
        async with open_device_connection(agent("bob", root), "127.0.0.1", server.port) as b:
            with trio.fail_after(20):
                await b.register(one_time=3)  # as if strangers' fetches had drained all but 3
            assert core.store.prekey_counts("bob", 1)[0] == 3
            # the device holds all 3 private keys, so only the relay's word says they run low
            assert len(b.agent.device.secrets.one_time) == 3
            with trio.fail_after(20):
                await b.login()  # Authenticated carries prekeys_left=3: below the relay's low mark
                await b.sync()
        assert core.store.prekey_counts("bob", 1)[0] == 20


async def test_rotating_the_delivery_token_retires_the_old_one() -> None:
    core = core_with()
    root = core.trust_root_public
    async with (
        running(core) as server,
        open_device_connection(agent("bob", root), "127.0.0.1", server.port) as b,
    ):
        with trio.fail_after(20):
            await b.register()
            await b.login()
            old = b.agent.delivery_token
            new = await b.rotate_delivery_token()
    assert new != old and b.agent.delivery_token == new
    assert core._token_matches("bob", new) and not core._token_matches("bob", old)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _pump(core: RelayCore, conn: ConnectionContext, a: DeviceAgent) -> None:
    """Carry the agent's frames to the core on ``conn`` and the answers back, until none are left."""
    for _ in range(50):
        frames = a.take_outbox()
        if not frames:
            return
        for frame in frames:
            for out in core.handle(conn, frame):
                if isinstance(out, Reply) and out.connection == conn.id:
                    a.handle(out.frame)


def test_signed_prekeys_rotate_every_two_days_and_old_ones_go_after_thirty() -> None:
    clock = Clock()
    core = RelayCore(Store(":memory:"), clock=clock)
    bob = agent("bob", core.trust_root_public)
    bob.clock = clock
    conn = ConnectionContext(1, ("127.0.0.1", 4000))
    bob.register()
    _pump(core, conn, bob)
    first = bob.device.secrets.current_signed_id

    def log_in_again() -> None:
        nonlocal conn
        core.disconnect(conn)
        conn = ConnectionContext(conn.id + 1, ("127.0.0.1", 4000))
        bob.login()
        _pump(core, conn, bob)

    clock.now += SIGNED_PREKEY_ROTATION - 60
    log_in_again()
    assert bob.device.secrets.current_signed_id == first  # not yet due
    clock.now += 120
    log_in_again()
    second = bob.device.secrets.current_signed_id
    assert second != first
    bundle = core.handle(conn, wire.FetchBundle(id=99, account="bob"))[0]
    assert isinstance(bundle, Reply) and isinstance(bundle.frame, wire.Bundle)
    (device,) = bundle.frame.devices
    assert device.signed_prekey.id == second  # the relay hands out the new one
    assert first in bob.device.secrets.signed  # the old one is kept for messages on their way
    old_kem = [i for i in bob.device.secrets.kem if bob.device.secrets.kem.last_resort(i)]
    assert len(old_kem) == 2  # the old last-resort KEM prekey too, beside the new one
    clock.now += PREKEY_ARCHIVE_AGE - 3600  # (rotating twice more meanwhile would hide nothing)
    bob.signed_prekey_rotation = None
    log_in_again()
    assert first in bob.device.secrets.signed
    clock.now += 7200
    log_in_again()
    assert first not in bob.device.secrets.signed and second in bob.device.secrets.signed
    assert [i for i in bob.device.secrets.kem if bob.device.secrets.kem.last_resort(i)] == [max(old_kem)]
