"""clients.link: the device's relay connection sans-IO, alone and under clients.net's trio loop.

The first half drives ``DeviceLink`` by hand against ``FakeRelay``, a few lines of relay that
speak the wire format (real prekeys, real ciphertexts, answers made up): no trio, no clock, no
sockets. The second half runs ``open_device_connection`` over ``trio.testing`` memory streams to
a fake relay task, on ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``), so
back-off delays are checked to the exact (virtual) second and nothing really sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest
import trio
import trio.testing

from relaysim.clients.agent import Accepted, DeviceAgent, Failed, LoggedIn, Received
from relaysim.clients.link import ANON, MAIN, NEED_DATA, Answered, Backoff, DeviceLink, LinkEvent, RequestLost
from relaysim.clients.net import ConnectionLost, open_device_connection
from relaysim.clients.session import Device
from relaysim.relay import wire
from tests.conftest import seeded_rng

TOKENS = {name: seeded_rng(len(name))(32) for name in ("alice", "bob")}
BACKOFF = Backoff(initial=1.0, multiplier=2.0, jitter=0.2, maximum=8.0)


def make_agent(account: str, device: int = 1) -> DeviceAgent:
    rng = seeded_rng(len(account) * 10 + device)
    return DeviceAgent(
        Device(account, device, rng=rng),
        registration_id=1 + device,
        delivery_token=TOKENS[account],
        rng=rng,
        tokens=dict(TOKENS),
        clock=lambda: 0.0,  # the fake relay issues no certificates; nothing here reads the time
    )


class FakeRelay:
    """Just enough relay: remembers registrations, hands out bundles made from them, stamps
    sends with fresh envelope ids and queues them for the recipient. Logins always succeed."""

    def __init__(self) -> None:
        self.registrations: dict[str, wire.Register] = {}
        self.queued: dict[str, list[wire.Envelope]] = {}
        self.seen: list[wire.Request] = []  # every request, in the order read
        self._ids = iter(range(1, 2**32))

    def register(self, agent: DeviceAgent) -> None:
        """Register ``agent`` directly, as if it had done so on an earlier connection."""
        agent.register()
        (frame,) = agent.take_outbox()
        assert isinstance(frame, wire.Register)
        self.answer(frame, "?")

    def answer(self, frame: wire.Request, account: str) -> wire.Response:
        self.seen.append(frame)
        i = frame.id
        if isinstance(frame, wire.Register):
            self.registrations[frame.account] = frame
            return wire.Registered(id=i, account=frame.account, device=frame.device)
        if isinstance(frame, wire.AuthChallenge):
            return wire.Challenge(id=i, nonce=bytes(wire.NONCE_SIZE), expires_in_ms=60_000)
        if isinstance(frame, wire.Authenticate):
            return wire.Authenticated(id=i, account=account, device=1)
        if isinstance(frame, wire.FetchBundle):
            r = self.registrations.get(frame.account)
            if r is None:
                return wire.ErrorFrame(id=i, code=wire.ErrorCode.UNKNOWN_ACCOUNT.value, message=frame.account)
            bundle = wire.DeviceBundle(
                device=r.device,
                registration_id=r.registration_id,
                identity_key=r.identity_key,
                signed_prekey=r.signed_prekey,
                kem_prekey=r.kem_prekeys[0],
                kem_prekey_last_resort=False,
                one_time_prekey=r.one_time_prekeys[0],
            )
            return wire.Bundle(id=i, account=frame.account, devices=(bundle,))
        if isinstance(frame, wire.Send):
            ids = []
            for out in frame.envelopes:
                eid = next(self._ids).to_bytes(wire.ENVELOPE_ID_SIZE, "big")
                ids.append(eid)
                env = wire.Envelope(
                    id=eid, body=out.body, timestamp=1, sealed=False, source_account=account, source_device=1
                )
                self.queued.setdefault(frame.to, []).append(env)
            return wire.Sent(id=i, envelope_ids=tuple(ids))
        if isinstance(frame, wire.Receive):
            return wire.Envelopes(id=i, envelopes=tuple(self.queued.pop(account, [])), more=False)
        if isinstance(frame, wire.Ping):
            return wire.Pong(id=i)
        if isinstance(frame, wire.UploadPrekeys):
            return wire.PrekeysUploaded(
                id=i, one_time_prekeys=len(frame.one_time_prekeys), kem_prekeys=len(frame.kem_prekeys)
            )
        if isinstance(frame, wire.Ack):
            return wire.Acked(id=i, count=len(frame.envelope_ids))
        return wire.ErrorFrame(
            id=i, code=wire.ErrorCode.FORBIDDEN.value, message=f"fake relay: no {frame.kind}"
        )


def requests(data: bytes) -> list[wire.Request]:
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(data)
    frames = []
    while (frame := decoder.next_frame()) is not wire.NEED_DATA:
        assert isinstance(frame, wire.Request)
        frames.append(frame)
    return frames


def events(link: DeviceLink) -> list[LinkEvent]:
    out = []
    while (event := link.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def exchange(
    link: DeviceLink, relay: FakeRelay, *, drop: Callable[[wire.Request], bool] = lambda f: False
) -> list[LinkEvent]:
    """Carry frames both ways until the link has nothing more to write; returns its events.
    ``drop(frame)`` true: the relay reads that frame but the connection fails before its answer."""
    got: list[LinkEvent] = []
    while data := link.data_to_send(MAIN):
        for frame in requests(data):
            if drop(frame):
                relay.seen.append(frame)  # read, never answered
                return got
            link.receive_data(wire.encode(relay.answer(frame, link.agent.account)))
            got += events(link)
    return got


def new_link(account: str = "alice", **options: Any) -> DeviceLink:
    return DeviceLink(make_agent(account), rng=random.Random(3), backoff=BACKOFF, **options)


# --- the link alone ----------------------------------------------------------------------------------


def test_back_off_follows_the_schedule_from_the_seeded_rng_and_restarts_after_a_connection_that_worked() -> (
    None
):
    link = new_link(keepalive=None)
    expected = random.Random(3)  # the same seed as the link's: the jitter must come from it alone
    assert link.state == "connecting" and link.next_deadline() is None
    link.connection_made(0.0)
    link.connection_lost(5.0, "reading failed")
    assert link.last_drop == "reading failed"
    now = 5.0
    for attempt in range(6):
        due = now + BACKOFF.delay(attempt, expected)
        assert (link.state, link.next_deadline()) == ("backoff", pytest.approx(due))
        link.handle_timeout(due - 1e-6)
        assert link.state == "backoff"  # not yet
        link.handle_timeout(due)
        assert link.state == "connecting" and link.next_deadline() is None
        now = due + 0.5
        link.connection_failed(now, "ConnectionRefusedError()")
    assert link.last_drop == "connecting failed: ConnectionRefusedError()"
    assert link.next_deadline() == pytest.approx(now + BACKOFF.delay(6, expected))
    assert link.next_deadline() - now <= BACKOFF.maximum  # capped
    # A connection on which the relay answered starts the schedule from the bottom again.
    link.handle_timeout(100.0)
    link.connection_made(100.0)
    link.agent.ping()
    link.submit()
    exchange(link, FakeRelay())
    link.connection_lost(100.0, "reading failed")
    assert link.next_deadline() == pytest.approx(100.0 + BACKOFF.delay(0, expected))
    assert link.reconnects == 1


def test_a_connection_on_which_the_relay_never_answered_keeps_backing_off() -> None:
    link = new_link(keepalive=None)
    expected = random.Random(3)
    link.connection_made(0.0)
    link.connection_lost(0.0, "reading failed")
    first = BACKOFF.delay(0, expected)
    assert link.next_deadline() == pytest.approx(first)
    link.handle_timeout(first)
    link.connection_made(first)
    link.connection_lost(first, "the relay closed the connection")  # heard nothing: not a success
    assert link.next_deadline() == pytest.approx(first + BACKOFF.delay(1, expected))


def test_going_offline_stops_reconnecting_and_coming_back_connects_at_once() -> None:
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.set_online(False)
    assert link.drop_reason == "disconnected by the application" and link.state == "ready"
    link.connection_lost(1.0)
    assert (link.state, link.next_deadline(), link.last_drop) == (
        "offline",
        None,
        "disconnected by the application",
    )
    link.handle_timeout(1e9)
    assert link.state == "offline"
    link.set_online(True)
    assert link.state == "connecting"
    # Offline during a back-off, too.
    link.connection_made(2.0)
    link.connection_lost(2.0, "reading failed")
    assert link.state == "backoff"
    link.set_online(False)
    assert (link.state, link.next_deadline()) == ("offline", None)


def test_only_the_login_goes_out_before_it_completes_then_everything_queued_and_a_receive() -> None:
    relay = FakeRelay()
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    assert link.login() is False and link.state == "logging_in"
    link.agent.ping()
    link.submit()
    assert [f.kind for f in requests(link.data_to_send())] == ["auth_challenge"]
    assert link.data_to_send() == b""  # the ping waits for the login
    link.connection_lost(1.0, "reading failed")
    link.handle_timeout(1e9)
    link.connection_made(1e9)  # the login is begun afresh on the next connection
    got = exchange(link, relay)
    # (then the agent, which never registered here, tops up its prekeys)
    assert [f.kind for f in relay.seen][:4] == ["auth_challenge", "authenticate", "ping", "receive"]
    assert LoggedIn() in got and link.state == "ready" and link.login() is True


def test_requests_in_flight_when_the_connection_drops_are_written_again_after_the_next_login() -> None:
    relay = FakeRelay()
    bob = make_agent("bob")
    relay.register(bob)
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.login()
    exchange(link, relay)
    link.agent.send_text("bob", b"hello", ref=7)
    (fetch,) = link.submit()
    assert isinstance(fetch, wire.FetchBundle)
    # The relay reads the fetch, then the connection fails before its answer.
    exchange(link, relay, drop=lambda f: isinstance(f, wire.FetchBundle))
    link.connection_lost(1.0, "reading failed")
    link.handle_timeout(link.next_deadline() or 0)
    link.connection_made(2.0)
    # The login first, then the same fetch again; its bundle makes the session, then the send
    # goes out, and the connection fails again before the relay's Sent comes back.
    before = len(relay.seen)
    got = exchange(link, relay, drop=lambda f: isinstance(f, wire.Send))
    kinds = [f.kind for f in relay.seen[before:]]
    assert kinds == ["auth_challenge", "authenticate", "fetch_bundle", "receive", "send"]
    assert [f.id for f in relay.seen if isinstance(f, wire.FetchBundle)] == [fetch.id, fetch.id]
    assert not any(isinstance(e, Accepted) for e in got)
    link.connection_lost(4.0, "writing failed")
    link.handle_timeout(link.next_deadline() or 0)
    link.connection_made(5.0)
    got = exchange(link, relay)
    sends = [f for f in relay.seen if isinstance(f, wire.Send)]
    assert len(sends) == 2 and sends[0] == sends[1]  # the same frame, id and ciphertext
    (accepted,) = [e for e in got if isinstance(e, Accepted)]
    assert accepted.ref == 7 and accepted.to == "bob"
    # Bob reads it once, although the relay took it twice: his ratchet refuses the replay.
    bob_link = DeviceLink(bob, rng=random.Random(1), keepalive=None)
    bob_link.connection_made(0.0)
    bob_link.login()
    got = exchange(bob_link, relay)
    assert [e.plaintext for e in got if isinstance(e, Received)] == [b"hello"]


def test_a_register_in_flight_when_the_connection_drops_is_reported_lost_not_repeated() -> None:
    relay = FakeRelay()
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.agent.register()
    (register,) = link.submit()
    link.track(register.id)
    link.agent.ping()
    link.submit()
    assert [f.kind for f in requests(link.data_to_send())] == ["register", "ping"]
    link.connection_lost(1.0, "reading failed")
    assert events(link) == [RequestLost(register.id, "register")]
    link.handle_timeout(1e9)
    link.connection_made(1e9)
    assert [f.kind for f in requests(link.data_to_send())] == ["ping"]  # the ping, not the register
    del relay


def test_an_answer_to_a_tracked_request_is_reported_once_and_other_refusals_as_failures() -> None:
    relay = FakeRelay()
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.agent.block("mallory")  # the fake relay refuses it
    link.submit()
    link.agent.discover_contacts(["bob"])  # and this, but it is tracked
    (discover,) = link.submit()
    link.track(discover.id)
    got = exchange(link, relay)
    (answered,) = [e for e in got if isinstance(e, Answered)]
    assert answered.request_id == discover.id and isinstance(answered.frame, wire.ErrorFrame)
    assert [e.ref for e in got if isinstance(e, Failed)] == ["block"]


def test_keepalive_pings_every_interval_while_connected() -> None:
    link = new_link(keepalive=30.0)
    assert link.next_deadline() is None
    link.connection_made(100.0)
    assert link.next_deadline() == 130.0
    link.handle_timeout(129.0)
    assert link.data_to_send() == b""
    link.handle_timeout(130.0)
    (ping,) = requests(link.data_to_send())
    assert ping.kind == "ping"
    assert link.next_deadline() == 150.0  # the check that the relay answered it (keepalive_timeout)
    link.receive_data(wire.encode(wire.Pong(id=ping.id)))
    assert events(link) == []
    link.handle_timeout(150.0)
    assert link.drop_reason is None and link.next_deadline() == 160.0
    link.connection_lost(131.0, "reading failed")
    assert link.next_deadline() == pytest.approx(131.0 + BACKOFF.delay(0, random.Random(3)))
    with pytest.raises(ValueError, match="keepalive"):
        new_link(keepalive=0)


def test_the_relay_closing_the_main_connection_is_a_drop_and_an_idle_anonymous_one_is_not() -> None:
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.anon_connection_made()
    link.receive_data(b"", ANON)
    assert events(link) == [] and link.drop_reason is None and not link.anon_open
    link.receive_data(b"", MAIN)
    assert events(link) == [] and link.drop_reason == "the relay closed the connection"
    link.connection_lost(1.0, "ignored: the link's own reason comes first")
    assert link.last_drop == "the relay closed the connection"


def test_a_bad_frame_from_the_relay_drops_the_connection() -> None:
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    link.receive_data(b"\x00\x00\x00\x02\xc1\xc1")  # a length prefix, then no msgpack map
    assert events(link) == []
    assert link.drop_reason is not None and link.drop_reason.startswith("the relay sent a bad frame: ")


def test_sealed_sends_wait_for_the_anonymous_connection() -> None:
    link = new_link(keepalive=None)
    link.connection_made(0.0)
    frame = wire.SealedSend(
        id=5, to="bob", delivery_token=TOKENS["bob"], envelopes=(wire.OutgoingEnvelope(device=1, body=b"x"),)
    )
    link._queue.append(frame)  # as the agent's send would (it needs a certificate first)
    assert link.data_to_send(MAIN) == b"" and link.wants_anon
    assert link.data_to_send(ANON) == b""  # not open yet
    link.anon_connection_made()
    assert not link.wants_anon and requests(link.data_to_send(ANON)) == [frame]
    # The relay closing it while that send is unanswered drops everything; it goes again later.
    link.receive_data(b"", ANON)
    events(link)
    assert link.drop_reason == "the relay closed the connection"


def test_with_fresh_anon_each_sealed_send_and_token_fetch_has_an_anonymous_connection_of_its_own() -> None:
    """``fresh_anon``: one request per anonymous connection. Once the relay has answered it,
    ``anon_open`` falls (the driver closes that connection) and the next request waits for another;
    on a drop, the ones not yet written are queued again in order, with the unanswered one."""
    link = new_link(keepalive=None, fresh_anon=True)
    link.connection_made(0.0)
    body = (wire.OutgoingEnvelope(device=1, body=b"x"),)
    first = wire.SealedSend(id=5, to="bob", delivery_token=TOKENS["bob"], envelopes=body)
    fetch = wire.FetchBundle(id=6, account="bob", delivery_token=TOKENS["bob"])
    second = wire.SealedSend(id=7, to="bob", delivery_token=TOKENS["bob"], envelopes=body)
    link._queue += [first, fetch, second]  # as the agent's sends would (they need a certificate first)
    assert link.data_to_send(MAIN) == b"" and link.wants_anon
    link.anon_connection_made()
    assert not link.wants_anon and requests(link.data_to_send(ANON)) == [first]
    link.receive_data(wire.encode(wire.Sent(id=5, envelope_ids=(bytes(wire.ENVELOPE_ID_SIZE),))), ANON)
    events(link)
    assert not link.anon_open and link.wants_anon  # answered: that connection is done, the next one
    assert link.data_to_send(ANON) == b""
    link.anon_connection_made()
    assert requests(link.data_to_send(ANON)) == [fetch]
    link.connection_lost(1.0, "reading failed")  # before the relay answered the fetch
    link.handle_timeout(link.next_deadline() or 0.0)
    link.connection_made(2.0)
    assert link.data_to_send(MAIN) == b"" and link.wants_anon
    link.anon_connection_made()
    assert requests(link.data_to_send(ANON)) == [fetch]
    # Without fresh_anon, all of them share one anonymous connection, as before.
    shared = new_link(keepalive=None)
    shared.connection_made(0.0)
    shared._queue += [first, fetch, second]
    shared.anon_connection_made()
    assert requests(shared.data_to_send(ANON)) == [first, fetch, second]


def test_connection_made_and_lost_out_of_turn_are_the_drivers_bugs() -> None:
    link = new_link(keepalive=None)
    with pytest.raises(RuntimeError, match="not connected"):
        link.connection_lost(0.0)
    link.connection_made(0.0)
    with pytest.raises(RuntimeError, match="connection_made in state 'ready'"):
        link.connection_made(0.0)


# --- under the trio loop, over memory streams, on a mock clock ------------------------------------------


class RelayTask:
    """The fake relay over memory streams: each ``connect()`` is a new connection it serves."""

    def __init__(self, nursery: trio.Nursery, relay: FakeRelay, account: str) -> None:
        self.nursery, self.relay, self.account = nursery, relay, account
        self.accepted: list[float] = []  # trio.current_time() of each connection
        self.hang_up = 0  # close this many connections at once, before reading anything
        self.cut_on: Callable[[wire.Request], bool] = lambda f: False  # read it, then close

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.accepted.append(trio.current_time())
        self.nursery.start_soon(self.serve, server)
        return client

    @staticmethod
    async def requests(stream: trio.abc.Stream) -> AsyncIterator[wire.Request]:
        """Each request the device writes on ``stream``, until it closes or breaks."""
        decoder = wire.FrameDecoder("relay")
        while True:
            frame = decoder.next_frame()
            if frame is wire.CLOSED:
                return
            if frame is wire.NEED_DATA:
                try:
                    decoder.receive_data(await stream.receive_some(65536))
                except trio.BrokenResourceError:
                    return
                continue
            assert isinstance(frame, wire.Request)
            yield frame

    async def serve(self, stream: trio.abc.Stream) -> None:
        async with stream:
            if self.hang_up:
                self.hang_up -= 1
                return
            async with aclosing(self.requests(stream)) as requests:
                async for frame in requests:
                    if self.cut_on(frame):
                        self.cut_on = lambda f: False
                        self.relay.seen.append(frame)
                        return
                    try:
                        await stream.send_all(wire.encode(self.relay.answer(frame, self.account)))
                    except trio.BrokenResourceError:
                        return


def connection(relay_task: RelayTask, agent: DeviceAgent, **options: Any) -> Any:
    options = {"rng": random.Random(3), "backoff": BACKOFF, "keepalive": None, **options}
    return open_device_connection(agent, "relay.invalid", 0, open_stream=relay_task.connect, **options)


async def test_the_trio_loop_reconnects_on_the_back_off_schedule_to_the_virtual_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expected = random.Random(3)
    async with trio.open_nursery() as nursery:
        relay = RelayTask(nursery, FakeRelay(), "alice")
        relay.hang_up = 4  # the first connection and three reconnects: closed before a word
        async with connection(relay, make_agent("alice")) as conn:
            with trio.fail_after(100):
                await conn.wait_until(lambda: conn.reconnects == 4 and conn.state == "ready")
                await conn.sync()  # the fifth connection works
            assert conn.last_drop == "the relay closed the connection"
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(relay.accepted, relay.accepted[1:], strict=False)]
    assert gaps == pytest.approx([BACKOFF.delay(i, expected) for i in range(4)])
    assert relay.accepted[0] == 0.0  # virtual time: nothing else took any


async def test_the_trio_loop_logs_in_again_and_resends_a_send_whose_answer_was_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeRelay()
    fake.register(make_agent("bob"))
    async with trio.open_nursery() as nursery:
        relay = RelayTask(nursery, fake, "alice")
        async with connection(relay, make_agent("alice")) as conn:
            await conn.register()
            await conn.login()
            relay.cut_on = lambda f: isinstance(f, wire.Send)
            with trio.fail_after(100):
                ids = await conn.send_text("bob", b"hi")
            assert conn.reconnects == 1 and conn.last_drop == "the relay closed the connection"
        nursery.cancel_scope.cancel()
    sends = [f for f in fake.seen if isinstance(f, wire.Send)]
    assert len(sends) == 2 and sends[0] == sends[1] and len(ids) == 1
    kinds = [f.kind for f in fake.seen]
    second = kinds.index("send") + 1
    assert kinds[second : second + 3] == ["auth_challenge", "authenticate", "send"]  # login first


async def test_the_trio_loop_fails_a_register_cut_off_with_connection_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeRelay()
    async with trio.open_nursery() as nursery:
        relay = RelayTask(nursery, fake, "alice")
        async with connection(relay, make_agent("alice")) as conn:
            relay.cut_on = lambda f: isinstance(f, wire.Register)
            with pytest.raises(ConnectionLost, match="register"):
                await conn.register()
            await conn.wait_ready()
            await conn.sync()
        nursery.cancel_scope.cancel()
    assert [f.kind for f in fake.seen].count("register") == 1


async def test_the_trio_loop_pings_on_the_keepalive_interval(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRelay()
    async with trio.open_nursery() as nursery:
        relay = RelayTask(nursery, fake, "alice")
        async with connection(relay, make_agent("alice"), keepalive=30.0):
            start = trio.current_time()
            await trio.sleep(95)
            assert trio.current_time() - start == 95  # virtual seconds: the test took none
        nursery.cancel_scope.cancel()
    assert [f.kind for f in fake.seen] == ["ping"] * 3 + ["ping"]  # three keepalives, the closing sync


class RetryAgent(DeviceAgent):
    """A real agent whose retry receipts (``retry_due`` / ``tick``, clients.agent: a group message it
    cannot read yet) come from a list of due times, so that only the connection's part is tested: that
    it calls ``tick`` when one is due, only while logged in, and writes what ``tick`` queued."""

    def __init__(self) -> None:
        rng = seeded_rng(77)
        super().__init__(
            Device("alice", 1, rng=rng),
            registration_id=2,
            delivery_token=TOKENS["alice"],
            rng=rng,
            tokens=dict(TOKENS),
            clock=trio.current_time,  # the agent's clock is the mock clock here
        )
        self.due: list[float] = []
        self.ticks: list[float] = []

    def retry_due(self) -> float | None:
        return self.due[0] if self.due else None

    def tick(self) -> None:
        if not self.authenticated:
            return
        now = self.clock()
        self.ticks.append(now)
        while self.due and self.due[0] <= now:
            self.due.pop(0)
            self.ping()  # stands for the retry receipt's send


async def test_the_trio_loop_ticks_the_agent_when_a_retry_receipt_is_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeRelay()
    agent = RetryAgent()
    async with trio.open_nursery() as nursery:
        relay = RelayTask(nursery, fake, "alice")
        async with connection(relay, agent) as conn:
            start = trio.current_time()
            agent.due = [start + 30, start + 90]
            await trio.sleep(10)
            assert agent.ticks == []  # not logged in: nothing would be sent, so no wake-up either
            await conn.register()
            await conn.login()
            await trio.sleep(190)
            assert agent.ticks == [start + 30, start + 90] and agent.due == []
            assert [f.kind for f in fake.seen].count("ping") == 2  # what each tick queued was written
        nursery.cancel_scope.cancel()
