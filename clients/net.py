"""The device's connection to the relay, with trio: a thin driver around ``DeviceAgent``.

``clients.agent.DeviceAgent`` knows the protocol and never touches a socket (h11's split); this
module carries its frames over TCP, optionally TLS::

    async with open_device_connection(agent, "127.0.0.1", 7465) as conn:
        await conn.register()
        await conn.login()
        envelope_ids = await conn.send_text("bob", b"hi")
        message = await conn.received.receive()  # a clients.agent.Received

What the connection does, and what it leaves to the agent:

- It writes the agent's outbox, everything pending in one ``send_all`` per connection, and
  reads frames with ``FrameDecoder("device")``, feeding each to the agent. Acknowledgements,
  dropping duplicate envelopes, session set-up and prekey top-ups are the agent's.
- Decrypted messages go to ``conn.received``, an unbounded memory channel: the agent has
  already acknowledged them, so they must not be dropped for want of a reader.
- After every login it asks the relay for everything queued (``receive``).
- Sealed sends go over a second connection that never authenticates (docs/protocol.md: on an
  authenticated one the relay knows who is sending anyway), opened when first needed.
- When the connection drops it reconnects with exponential back-off (capped, jittered from an
  injected ``random.Random``), logs in again if it had logged in, and only then writes what
  was waiting. Requests the relay had not answered are written again with the same ids, so
  their answers still find the agent's pending state. A replayed send the relay had in fact
  accepted reaches the recipient twice; the recipient's ratchet refuses the second copy as a
  replay (an ``Undecryptable`` there), so each plaintext is still delivered at most once.
- It pings every ``keepalive`` seconds so the relay's read timeout never closes it.

The ``async with`` owns a nursery with one supervisor task; each connection to the relay runs
its reader, writer and keepalive in a nursery of the supervisor's. Entering connects once and
raises if that fails (``OSError``, ``trio.TooSlowError``, or ``trio.BrokenResourceError`` for a
failed TLS handshake), as itself, not in an ExceptionGroup; so does whatever the block raises.
Retries are for connections that drop later. ``disconnect()`` and ``connect()`` take the device offline and back, as a phone
losing and regaining its network does.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from clients.agent import (
    PREKEY_BATCH,
    Accepted,
    AgentEvent,
    DeviceAgent,
    Failed,
    LoggedIn,
    Received,
    Undecryptable,
)
from relay import wire

__all__ = [
    "Backoff",
    "ConnectionClosed",
    "ConnectionLost",
    "DeviceConnection",
    "LoginFailed",
    "NetError",
    "RequestRefused",
    "SendFailed",
    "open_device_connection",
    "sole_exception",
]

log = logging.getLogger("clients.net")

# Signal's clients keep their websocket alive with a request every 30 s; the relay closes a
# connection after 60 s without a complete frame (relay.server.DEFAULT_READ_TIMEOUT).
DEFAULT_KEEPALIVE: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0  # TCP connect plus any TLS handshake
DEFAULT_WRITE_TIMEOUT: Final = 30.0  # as the relay's: a peer that reads nothing this long is gone
DEFAULT_CLOSE_TIMEOUT: Final = (
    2.0  # on a clean exit, how long to wait for the relay to answer what is in flight
)
_RECEIVE_SIZE: Final = 65536
# Ids for requests carried for another agent (link_device): far above any id an agent reaches.
_FOREIGN_IDS: Final = 2**48
_HANDSHAKE: Final = (wire.AuthChallenge, wire.Authenticate)
_LOGIN_KINDS: Final = ("auth_challenge", "authenticate")
_DROPPED: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


class NetError(Exception):
    """Something a DeviceConnection could not do."""


class RequestRefused(NetError):
    """The relay answered a request with an error frame."""

    def __init__(self, kind: str, code: str, message: str) -> None:
        super().__init__(f"the relay refused {kind}: {code}: {message}")
        self.kind, self.code, self.message = kind, code, message


class LoginFailed(RequestRefused):
    """Logging in again after a reconnect failed: the connection stops (the keys no longer match)."""


class SendFailed(NetError):
    """A message was not accepted: the relay refused it, or it could not be sent (``code`` says which)."""

    def __init__(self, to: str, code: str, message: str) -> None:
        super().__init__(f"sending to {to!r} failed: {code}: {message}")
        self.to, self.code, self.message = to, code, message


class ConnectionLost(NetError):
    """The connection dropped while a request that is not safe to repeat was unanswered."""


class ConnectionClosed(NetError):
    """The DeviceConnection has been closed."""


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: exponential, capped, jittered.

    The shape is gRPC's connection back-off (doc/connection-backoff.md: initial 1 s, multiplier
    1.6, jitter ±20 %, cap 120 s); the initial delay and the cap are lower here because the
    relay is usually on the same machine or network.
    """

    initial: float = 0.1  # seconds
    multiplier: float = 1.6
    jitter: float = 0.2  # ± this fraction
    maximum: float = 10.0  # seconds

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.multiplier >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"need 0 < initial <= maximum, multiplier >= 1, 0 <= jitter < 1; got {self}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (0 for the first)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 200))
        return min(self.maximum, base * (1 + self.jitter * (2 * rng.random() - 1)))


class _Waiter:
    """One answer that a caller awaits: a value, or an exception to raise."""

    __slots__ = ("_event", "error", "value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._event.is_set():
            self.value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Session:
    """One connection to the relay (and its anonymous companion for sealed sends)."""

    def __init__(self, main: Any) -> None:
        self.main = main
        self.anon: Any = None
        self.nursery: Any = None
        self.reason: str | None = None
        self.logged_in = False
        self.heard_from_relay = False  # any frame received on it

    def drop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()


class DeviceConnection:
    """A device's connection to the relay. Make one with :func:`open_device_connection`.

    ``state`` is ``"ready"`` (connected and, once login() has been called, logged in),
    ``"logging_in"``, ``"connecting"``, ``"backoff"`` (waiting to reconnect) or ``"offline"``
    (disconnect() was called).
    """

    def __init__(
        self,
        agent: DeviceAgent,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        rng: random.Random | None = None,
        backoff: Backoff = Backoff(),  # frozen, so one shared default is safe
        keepalive: float | None = DEFAULT_KEEPALIVE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        wire_tap: Callable[[bytes], None] | None = None,
    ) -> None:
        self.agent = agent
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.rng = rng if rng is not None else random.Random()
        self.backoff = backoff
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.wire_tap = wire_tap  # sees every byte written to the relay (before TLS)
        send, receive = trio.open_memory_channel(math.inf)
        self._deliver = send
        self.received = receive  # Received events, in the order the agent decrypted them
        self.undecryptable: list[Undecryptable] = []
        self.failures: list[Failed] = []  # refusals of requests nobody was waiting for
        self.reconnects = 0  # connections made after the first
        self.last_drop: str | None = None  # why the last connection ended
        self._state = "connecting"
        self._changed = trio.Event()
        self._wakeup = trio.Event()
        self._want_online = True
        self._want_login = False
        self._closed = False
        self._session: _Session | None = None
        self._queue: list[wire.Request] = []  # to be written, oldest first
        self._unanswered: dict[int, wire.Request] = {}  # written, no answer yet
        self._waiters: dict[int, _Waiter] = {}  # by request id
        self._sends: dict[int, tuple[_Waiter, str]] = {}  # by the ref given to agent.send_text
        self._login_waiters: list[_Waiter] = []
        self._foreign: dict[int, tuple[DeviceAgent, int]] = {}  # our id -> (agent, its id)
        self._refs = itertools.count(1)
        self._foreign_ids = itertools.count(_FOREIGN_IDS)

    # --- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def logged_in(self) -> bool:
        return self._session is not None and self._session.logged_in

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            log.debug("%s: %s -> %s", self._name, self._state, state)
            self._state = state
        self._notify()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds, checked whenever the connection's state changes (a connection
        made or lost, a login); ConnectionClosed if the connection is closed first."""
        while not predicate():
            self._check_open()
            await self._changed.wait()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        """For the supervisor, which closing cancels."""
        while not predicate():
            await self._changed.wait()

    @property
    def _name(self) -> str:
        return f"{self.agent.account}.{self.agent.device_id}"

    async def wait_ready(self) -> None:
        """Until connected and, if login() has been called, logged in."""
        await self.wait_until(lambda: self._state == "ready")

    def set_online(self, online: bool) -> None:
        """Want the device online or offline, at once, without waiting (see connect/disconnect)."""
        self._check_open()
        self._want_online = online
        if not online and self._session is not None:
            self._session.drop("disconnected by the application")
        self._notify()

    async def disconnect(self) -> None:
        """Go offline, as a phone losing its network: close the connection and stay closed."""
        self.set_online(False)
        await self.wait_until(lambda: self._state == "offline")

    async def connect(self) -> None:
        """Come back online after disconnect(); returns once ready (logged in, if login() was called)."""
        self.set_online(True)
        await self.wait_ready()

    async def abort(self) -> None:
        """Drop the current connection as a network failure would; it reconnects with back-off."""
        session = self._session
        if session is not None:
            session.drop("aborted by the application")
            await self.wait_until(lambda: self._session is not session)

    # --- requests --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"{self._name}: the connection is closed")

    def _pull(self) -> list[wire.Request]:
        """Move the agent's outbox to the write queue; returns the frames moved."""
        frames = self.agent.take_outbox()
        if frames:
            self._queue.extend(frames)
            self._wakeup.set()
        return frames

    def _expect(self, frames: list[wire.Request], kind: type[wire.Request]) -> _Waiter:
        frame = next(f for f in reversed(frames) if isinstance(f, kind))
        waiter = self._waiters[frame.id] = _Waiter()
        return waiter

    async def _answer(self, waiter: _Waiter, kind: str) -> wire.Response:
        reply = await waiter.wait()
        assert isinstance(reply, wire.Response)
        if isinstance(reply, wire.ErrorFrame):
            raise RequestRefused(kind, reply.code, reply.message)
        return reply

    async def register(self, one_time: int = PREKEY_BATCH, kem_one_time: int = PREKEY_BATCH) -> None:
        """Publish the device's keys and prekeys (a new account, or a re-registration once logged in).

        Raises RequestRefused, or ConnectionLost if the connection dropped before the answer (the
        registration may or may not have happened)."""
        self._check_open()
        self.agent.register(one_time, kem_one_time)
        await self._answer(self._expect(self._pull(), wire.Register), "register")

    async def login(self) -> None:
        """Authenticate; from now on every reconnect logs in again before anything else is written.

        After each login the connection receives everything the relay queued for the device."""
        self._check_open()
        waiter = _Waiter()
        self._login_waiters.append(waiter)
        self._want_login = True
        session = self._session
        if session is not None and not session.logged_in and not self._login_in_flight():
            self.agent.login()
            self._pull()
            self._set_state("logging_in")
        elif session is not None and session.logged_in:
            self._login_waiters.remove(waiter)
            return
        await waiter.wait()

    def _login_in_flight(self) -> bool:
        frames = [*self._queue, *self._unanswered.values()]
        return any(isinstance(f, _HANDSHAKE) for f in frames)

    async def request_certificate(self) -> bytes:
        """Fetch a sender certificate (needs a login) for sealed sends; returns it."""
        self._check_open()
        self.agent.request_certificate()
        await self._answer(self._expect(self._pull(), wire.GetSenderCertificate), "get_sender_certificate")
        assert self.agent.certificate is not None
        return self.agent.certificate

    async def send_text(self, to: str, text: bytes | str, *, sealed: bool = False) -> tuple[bytes, ...]:
        """Send to every device of account ``to``; returns the relay's envelope ids once it has accepted.

        ``sealed=True`` hides the sender from the relay: it needs the recipient's delivery token in
        ``agent.tokens``, and fetches a sender certificate first if the agent has none. Waits while
        the device is offline. Raises SendFailed if the relay refuses the message."""
        self._check_open()
        plaintext = text.encode() if isinstance(text, str) else text
        if sealed:
            if to not in self.agent.tokens:
                raise SendFailed(
                    to, "not_ready", f"sealed sender needs {to!r}'s delivery token in agent.tokens"
                )
            if self.agent.certificate is None:
                await self.request_certificate()
        ref = next(self._refs)
        waiter = _Waiter()
        self._sends[ref] = (waiter, to)
        try:
            self.agent.send_text(to, plaintext, ref, sealed=sealed)
            self._pull()
            ids = await waiter.wait()
        finally:
            self._sends.pop(ref, None)
        assert isinstance(ids, tuple)
        return ids

    async def sync(self) -> None:
        """Until the relay has answered everything written on the main connection before this call."""
        self._check_open()
        self.agent.ping()
        await self._answer(self._expect(self._pull(), wire.Ping), "ping")

    async def link_device(self, other: DeviceAgent) -> None:
        """Register ``other`` as a new device of this account over this logged-in connection, as a
        primary phone provisions a linked one. ``other`` then opens its own connection and logs in."""
        self._check_open()
        if other.account != self.agent.account:
            raise ValueError(f"{other.account!r} is not a device of account {self.agent.account!r}")
        other.register()
        (frame,) = other.take_outbox()
        our_id = next(self._foreign_ids)
        self._foreign[our_id] = (other, frame.id)
        waiter = self._waiters[our_id] = _Waiter()
        self._queue.append(dataclasses.replace(frame, id=our_id))
        self._wakeup.set()
        try:
            await self._answer(waiter, "register")
        finally:
            self._foreign.pop(our_id, None)

    # --- frames from the relay ------------------------------------------------------------------

    def _on_frame(self, session: _Session, frame: wire.Frame) -> None:
        assert isinstance(frame, wire.Response)  # a "device" decoder yields nothing else
        session.heard_from_relay = True
        if not isinstance(frame, wire.Deliver):
            self._unanswered.pop(frame.id, None)
            if frame.id == 0 and isinstance(frame, wire.ErrorFrame):
                level = logging.INFO if frame.code == wire.ErrorCode.TIMEOUT else logging.WARNING
                log.log(level, "%s: the relay says %s: %s", self._name, frame.code, frame.message)
        waiter = None if isinstance(frame, wire.Deliver) else self._waiters.pop(frame.id, None)
        if waiter is not None and frame.id in self._foreign:
            other, their_id = self._foreign[frame.id]
            other.handle(dataclasses.replace(frame, id=their_id))
            other.take_outbox()  # a Registered answer asks for nothing more
            waiter.set(frame)
            return
        events = self.agent.handle(frame)
        if waiter is not None:
            waiter.set(frame)
        for event in events:
            self._on_event(session, event, answered=waiter is not None)
        self._pull()

    def _on_event(self, session: _Session, event: AgentEvent, *, answered: bool) -> None:
        if isinstance(event, Received):
            try:
                self._deliver.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("%s: nobody reads conn.received; dropped a message", self._name)
        elif isinstance(event, Accepted):
            send = self._sends.get(event.ref) if isinstance(event.ref, int) else None
            if send is not None:
                send[0].set(event.envelope_ids)
        elif isinstance(event, Undecryptable):
            log.warning("%s: envelope %s could not be decrypted", self._name, event.envelope_id.hex())
            self.undecryptable.append(event)
        elif isinstance(event, LoggedIn):
            session.logged_in = True
            self.agent.receive()
            waiters, self._login_waiters = self._login_waiters, []
            for w in waiters:
                w.set(None)
            self._set_state("ready")
        elif isinstance(event, Failed):
            self._on_failed(event, answered=answered)

    def _on_failed(self, event: Failed, *, answered: bool) -> None:
        send = self._sends.get(event.ref) if isinstance(event.ref, int) else None
        if send is not None:
            waiter, to = send
            waiter.fail(SendFailed(to, event.code, event.message))
        elif event.ref in _LOGIN_KINDS:
            self._want_login = False
            waiters, self._login_waiters = self._login_waiters, []
            if not waiters:
                raise LoginFailed(str(event.ref), event.code, event.message)
            for w in waiters:
                w.fail(RequestRefused(str(event.ref), event.code, event.message))
            self._set_state("ready")
            self._wakeup.set()  # what waited for the login is written now (and refused)
        elif not answered:
            log.warning("%s: the relay refused %s: %s: %s", self._name, event.ref, event.code, event.message)
            self.failures.append(event)

    # --- the tasks --------------------------------------------------------------------------------

    async def _open_stream(self) -> Any:
        with trio.fail_after(self.connect_timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
            if self.ssl_context is None:
                return stream
            tls = trio.SSLStream(stream, self.ssl_context, server_hostname=self.server_hostname)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return tls

    async def _supervise(self, stream: Any) -> None:
        """Serve ``stream`` (the first connection, made by the caller), then reconnect until closed."""
        attempt = 0
        while True:
            if await self._run_session(stream):
                attempt = 0
            stream = None
            wait = self._want_online  # a drop backs off; coming back from disconnect() does not
            while stream is None:
                if not self._want_online:
                    attempt, wait = 0, False
                    self._set_state("offline")
                    await self._wait_for(lambda: self._want_online)
                if wait:
                    delay = self.backoff.delay(attempt, self.rng)
                    attempt += 1
                    self._set_state("backoff")
                    log.info("%s: reconnecting in %.3f s (attempt %d)", self._name, delay, attempt)
                    with trio.move_on_after(delay):
                        await self._wait_for(lambda: not self._want_online)
                    if not self._want_online:
                        continue
                wait = True  # failing to connect backs off
                self._set_state("connecting")
                try:
                    stream = await self._open_stream()
                except _DROPPED as e:
                    self.last_drop = f"connecting failed: {e!r}"
                    log.info("%s: %s", self._name, self.last_drop)
                    continue
                if not self._want_online:  # disconnect() came while we were connecting
                    await trio.aclose_forcefully(stream)
                    stream = None
            self.reconnects += 1

    async def _run_session(self, stream: Any) -> bool:
        """Serve one connection until it drops; returns whether it worked (the relay answered, and
        the login, if one is wanted, succeeded): only then does the back-off start again from the bottom."""
        session = _Session(stream)
        self._session = session
        worked = False
        # A login begun on an earlier connection is begun again on this one.
        self._queue = [f for f in self._queue if not isinstance(f, _HANDSHAKE)]
        if self._want_login:
            self.agent.login()
            self._pull()
            self._set_state("logging_in")
        else:
            self._set_state("ready")
        try:
            async with trio.open_nursery() as nursery:
                session.nursery = nursery
                if session.reason is not None:  # dropped before it started
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._reader, session, stream)
                nursery.start_soon(self._writer, session)
                if self.keepalive:
                    nursery.start_soon(self._keepalive)
        finally:
            worked = session.heard_from_relay and (session.logged_in or not self._want_login)
            self._session = None
            self._notify()
            for s in (session.main, session.anon):
                if s is not None:
                    await trio.aclose_forcefully(s)
            self._requeue()
            self.last_drop = session.reason
            log.info("%s: connection closed: %s", self._name, session.reason or "closing")
        return worked

    def _requeue(self) -> None:
        """Put what the relay never answered back at the front of the queue, oldest first."""
        replay = []
        for frame in sorted(self._unanswered.values(), key=lambda f: f.id):
            if isinstance(frame, _HANDSHAKE):
                continue  # the next connection logs in afresh
            if isinstance(frame, wire.Register):
                # Not safe to repeat blindly: it may have happened, and a second one needs a login.
                waiter = self._waiters.pop(frame.id, None)
                if waiter is not None:
                    waiter.fail(ConnectionLost(f"{self._name}: the connection dropped during register"))
                continue
            replay.append(frame)
        self._unanswered.clear()
        self._queue = replay + self._queue

    def _take_ready(self, session: _Session) -> list[wire.Request]:
        """What may be written now: everything once logged in (or if no login is wanted), else the login."""
        if session.logged_in or not self._want_login:
            frames, self._queue = self._queue, []
            return frames
        frames = [f for f in self._queue if isinstance(f, _HANDSHAKE)]
        if frames:
            self._queue = [f for f in self._queue if not isinstance(f, _HANDSHAKE)]
        return frames

    async def _writer(self, session: _Session) -> None:
        while True:
            frames = self._take_ready(session)
            if not frames:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            for frame in frames:
                self._unanswered[frame.id] = frame  # from here on, a drop means "write it again"
            main = [f for f in frames if not isinstance(f, wire.SealedSend)]
            sealed = [f for f in frames if isinstance(f, wire.SealedSend)]
            try:
                if main:
                    await self._write(session.main, main)
                if sealed:
                    if session.anon is None:
                        session.anon = await self._open_stream()
                        session.nursery.start_soon(self._reader, session, session.anon)
                    await self._write(session.anon, sealed)
            except _DROPPED as e:
                session.drop(f"writing failed: {e!r}")
                return

    async def _write(self, stream: Any, frames: Sequence[wire.Request]) -> None:
        data = b"".join(wire.encode(f) for f in frames)  # everything pending, one write
        if self.wire_tap is not None:
            self.wire_tap(data)
        with trio.fail_after(self.write_timeout):
            await stream.send_all(data)

    async def _reader(self, session: _Session, stream: Any) -> None:
        decoder = wire.FrameDecoder("device")
        try:
            while (frame := decoder.next_frame()) is not wire.CLOSED:
                if frame is wire.NEED_DATA:
                    decoder.receive_data(await stream.receive_some(_RECEIVE_SIZE))
                else:
                    self._on_frame(session, frame)
        except _DROPPED as e:
            session.drop(f"reading failed: {e!r}")
            return
        except wire.RemoteProtocolError as e:
            log.error("%s: the relay sent a bad frame: %s", self._name, e)
            session.drop(f"the relay sent a bad frame: {e.code.value}: {e.message}")
            return
        idle = not any(isinstance(f, wire.SealedSend) for f in self._unanswered.values())
        if stream is session.anon and idle:
            # The relay closes an idle anonymous connection (its read timeout): open another when needed.
            session.anon = None
            await trio.aclose_forcefully(stream)
            return
        session.drop("the relay closed the connection")

    async def _keepalive(self) -> None:
        assert self.keepalive is not None
        while True:
            await trio.sleep(self.keepalive)
            self.agent.ping()
            self._pull()

    # --- closing ----------------------------------------------------------------------------------

    async def _flush(self, timeout: float) -> None:
        """On a clean exit: let the relay answer what is in flight (acknowledgements above all),
        unless the connection drops first."""
        if self._state != "ready":
            return
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:

                async def synced() -> None:
                    await self.sync()
                    nursery.cancel_scope.cancel()

                async def dropped() -> None:
                    await self.wait_until(lambda: self._state != "ready")
                    nursery.cancel_scope.cancel()

                nursery.start_soon(synced)
                nursery.start_soon(dropped)

    def _close(self) -> None:
        self._closed = True
        self._deliver.close()
        error = ConnectionClosed(f"{self._name}: the connection is closed")
        sends = [waiter for waiter, _to in self._sends.values()]
        for waiter in [*self._waiters.values(), *sends, *self._login_waiters]:
            waiter.fail(error)
        self._notify()


@asynccontextmanager
async def open_device_connection(
    agent: DeviceAgent,
    host: str,
    port: int,
    *,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    **options: Any,
) -> AsyncIterator[DeviceConnection]:
    """Connect ``agent`` to the relay at (host, port) for the duration of the ``async with``.

    Options are DeviceConnection's: ``ssl_context`` and ``server_hostname`` (TLS), ``rng`` (the
    back-off jitter), ``backoff``, ``keepalive`` (None for none), ``connect_timeout``,
    ``write_timeout``, ``wire_tap``. Raises if the first connection cannot be made (see the module
    docstring). What the block raises comes out as itself, not wrapped in an ExceptionGroup;
    only when the connection fails too (LoginFailed) at the same time do both come out in one."""
    conn = DeviceConnection(agent, host, port, **options)
    # The first connection is made before the nursery opens, so its failure reaches the caller
    # as itself: trio (>= 0.25) wraps whatever leaves a nursery in an ExceptionGroup.
    stream = await conn._open_stream()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._supervise, stream)
            try:
                yield conn
                await conn._flush(close_timeout)
            finally:
                conn._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = sole_exception(group)
        if error is None:  # several at once (the block's and the connection's): the group it is
            raise
    else:
        return
    raise error  # outside the handler, so the group does not become its __context__


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception in ``group`` (however deeply nested), or None if it holds several.

    For context managers that run a nursery behind the caller's back: the caller's
    ``except SendFailed`` (or ``pytest.raises``) should see what the block raised, not a
    one-element ExceptionGroup made only because a nursery was in the way (trio >= 0.25 makes
    one for every exception that leaves a nursery; trio 0.22 did not).
    """
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error
