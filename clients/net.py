"""The device's connection to the relay, with trio: a thin loop around ``clients.link.DeviceLink``.

``clients.agent.DeviceAgent`` knows the protocol; ``clients.link.DeviceLink`` knows the
connection (login before anything else, resending what was unanswered, back-off, keepalive);
neither touches a socket or a clock (h11's split). This module only carries their bytes over
TCP, optionally TLS, and tells the link the time::

    async with open_device_connection(agent, "127.0.0.1", 7465) as conn:
        await conn.register()
        await conn.login()
        envelope_ids = await conn.send_text("bob", b"hi")
        message = await conn.received.receive()  # a clients.agent.Received

What the loop does:

- It writes what ``link.data_to_send()`` holds, everything pending in one ``send_all``, and
  feeds what it reads to ``link.receive_data``; the link's events complete the callers' waits.
- Decrypted messages go to ``conn.received``, an unbounded memory channel: the agent has
  already acknowledged them, so they must not be dropped for want of a reader.
- Sealed sends go over a second connection that never authenticates, opened when the link
  asks for it (``link.wants_anon``); with ``fresh_address``, one such connection per sealed send,
  each from the address ``fresh_address()`` gives (a proxy's or a Tor-like exit), closed once the
  relay has answered it.
- Sends that nobody awaits (``send_group``, ``send_receipt``, ``send_cover``) report how they
  went through ``on_event``: an ``Accepted`` or a ``Failed`` with the caller's ``ref``; so do the
  agent's other events (``ReceiptReceived``, ``IdentityChanged``...).
- When the connection drops it reconnects when the link's back-off says so (see clients/link.py
  for what is written again and what is not).
- One timer task sleeps until ``link.next_deadline()`` (back-off, keepalive pings, and the check
  that the relay answered what was written by each: a relay that stops answering, or a connection
  dead without a reset, is dropped ``keepalive_timeout`` seconds after a ping and made again).

The ``async with`` owns a nursery with a supervisor task and the timer; each connection to the
relay runs its reader and writer in a nursery of the supervisor's. Entering connects once and
raises if that fails (``OSError``, ``trio.TooSlowError``, or ``trio.BrokenResourceError`` for a
failed TLS handshake), as itself, not in an ExceptionGroup; so does whatever the block raises.
Retries are for connections that drop later. ``disconnect()`` and ``connect()`` take the device offline and back, as a phone
losing and regaining its network does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.clients.agent import (
    PREKEY_BATCH,
    Accepted,
    AgentEvent,
    DeviceAgent,
    Duplicate,
    Failed,
    LoggedIn,
    Received,
    SentTranscript,
    Undecryptable,
)
from relaysim.clients.link import (
    ANON,
    DEFAULT_KEEPALIVE,
    DEFAULT_KEEPALIVE_TIMEOUT,
    LOGIN_KINDS,
    MAIN,
    NEED_DATA,
    Answered,
    Backoff,
    Channel,
    DeviceLink,
    LinkEvent,
    RequestLost,
)
from relaysim.relay import wire

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

DEFAULT_CONNECT_TIMEOUT: Final = 10.0  # TCP connect plus any TLS handshake
DEFAULT_WRITE_TIMEOUT: Final = 30.0  # as the relay's: a peer that reads nothing this long is gone
DEFAULT_CLOSE_TIMEOUT: Final = (
    2.0  # on a clean exit, how long to wait for the relay to answer what is in flight
)
_RECEIVE_SIZE: Final = 65536
_DEFAULT_BACKOFF: Final = Backoff()  # frozen, so one shared default is safe
# Refusals for load (rate_limited) are retried after the relay's retry_after_ms, at most this
# many times and never after a wait longer than MAX_RETRY_WAIT seconds (then the caller is told).
DEFAULT_RETRIES: Final = 3
MAX_RETRY_WAIT: Final = 30.0
# A relay asking more of a new account than this many leading zero bits (2**26 SHA-256 tries,
# over a minute in CPython) is refused rather than obeyed: the stamp would hang the device.
MAX_REGISTRATION_POW: Final = 26
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

    def __init__(self, to: str, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"sending to {to!r} failed: {code}: {message}")
        self.to, self.code, self.message = to, code, message
        self.retry_after_ms = retry_after_ms


class ConnectionLost(NetError):
    """The connection dropped while a request that is not safe to repeat was unanswered."""


class ConnectionClosed(NetError):
    """The DeviceConnection has been closed."""


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

    def drop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()


StreamOpener = Callable[[], Awaitable[Any]]


class DeviceConnection:
    """A device's connection to the relay. Make one with :func:`open_device_connection`.

    ``state`` is ``"ready"`` (connected and, once login() has been called, logged in),
    ``"logging_in"``, ``"connecting"``, ``"backoff"`` (waiting to reconnect) or ``"offline"``
    (disconnect() was called). ``open_stream``, if given, replaces the TCP (and TLS) connect:
    an async function returning a trio stream to the relay (tests use memory streams).
    ``local_address``, if given, is the address the TCP connections are made from (on Linux any
    of 127/8 reaches a relay on 127.0.0.1); ``move_to`` changes it. ``on_event``, if given, is
    called with every agent event the connection does not consume itself (see ``send_group``).
    ``fresh_address``, if given, gives the address each sealed send's own connection comes from.
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
        backoff: Backoff = _DEFAULT_BACKOFF,
        keepalive: float | None = DEFAULT_KEEPALIVE,
        keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        wire_tap: Callable[[bytes], None] | None = None,
        open_stream: StreamOpener | None = None,
        local_address: str | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        fresh_address: Callable[[], str] | None = None,
    ) -> None:
        self.agent = agent
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.rng = rng if rng is not None else random.Random()
        self.backoff = backoff
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.wire_tap = wire_tap  # sees every byte written to the relay (before TLS)
        self._opener = open_stream
        self.local_address = local_address
        self.on_event = on_event
        self.fresh_address = fresh_address
        self.link = DeviceLink(
            agent,
            rng=self.rng,
            backoff=backoff,
            keepalive=keepalive,
            keepalive_timeout=keepalive_timeout,
            fresh_anon=fresh_address is not None,
        )
        send, receive = trio.open_memory_channel(math.inf)
        self._deliver = send
        self.received = receive  # Received events, in the order the agent decrypted them
        self.undecryptable: list[Undecryptable] = []
        # second copies of messages read already (a send replayed after a dropped connection): dropped
        self.duplicates: list[Duplicate] = []
        self.synced: list[SentTranscript] = []  # sync copies of what this account's other devices sent
        self.failures: list[Failed] = []  # refusals of requests nobody was waiting for
        self._changed = trio.Event()
        self._closed = False
        self._session: _Session | None = None
        self._waiters: dict[int, _Waiter] = {}  # by request id
        self._sends: dict[int, tuple[_Waiter, str]] = {}  # by the ref given to agent.send_text
        self._login_waiters: list[_Waiter] = []
        self._foreign: dict[int, tuple[DeviceAgent, int]] = {}  # our id -> (agent, its id)
        self._refs = iter(range(1, 2**63))

    # --- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.link.state

    @property
    def logged_in(self) -> bool:
        return self.link.connected and self.link.logged_in

    @property
    def reconnects(self) -> int:
        """Connections made after the first."""
        return self.link.reconnects

    @property
    def last_drop(self) -> str | None:
        """Why the last connection ended."""
        return self.link.last_drop

    def _poke(self) -> None:
        """After every call into the link: act on a drop it asks for, and wake whoever waits."""
        session = self._session
        if session is not None and self.link.drop_reason is not None:
            session.drop(self.link.drop_reason)
        self._changed.set()
        self._changed = trio.Event()

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
        await self.wait_until(lambda: self.state == "ready")

    def set_online(self, online: bool) -> None:
        """Want the device online or offline, at once, without waiting (see connect/disconnect)."""
        self._check_open()
        self.link.set_online(online)
        self._poke()

    async def disconnect(self) -> None:
        """Go offline, as a phone losing its network: close the connection and stay closed."""
        self.set_online(False)
        await self.wait_until(lambda: self.state == "offline")

    async def connect(self) -> None:
        """Come back online after disconnect(); returns once ready (logged in, if login() was called)."""
        self.set_online(True)
        await self.wait_ready()

    async def abort(self) -> None:
        """Drop the current connection as a network failure would; it reconnects with back-off."""
        session = self._session
        if session is not None:
            self.link.abort("aborted by the application")
            self._poke()
            await self.wait_until(lambda: self._session is not session)

    # --- requests --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"{self._name}: the connection is closed")

    def _submit(self) -> list[wire.Request]:
        """Hand the agent's outbox to the link; returns the frames handed."""
        frames = self.link.submit()
        self._poke()
        return frames

    def _expect(self, frames: list[wire.Request], kind: type[wire.Request]) -> _Waiter:
        frame = next(f for f in reversed(frames) if isinstance(f, kind))
        self.link.track(frame.id)
        waiter = self._waiters[frame.id] = _Waiter()
        return waiter

    async def _answer(self, waiter: _Waiter, kind: str) -> wire.Response:
        reply = await waiter.wait()
        assert isinstance(reply, wire.Response)
        if isinstance(reply, wire.ErrorFrame):
            raise RequestRefused(kind, reply.code, reply.message)
        return reply

    async def register(
        self,
        one_time: int = PREKEY_BATCH,
        kem_one_time: int = PREKEY_BATCH,
        *,
        proof: bytes | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        """Publish the device's keys and prekeys (a new account, or a re-registration once logged in).

        A relay that asks a new account for a hashcash stamp says how hard (``registration_pow``
        in its refusal): the stamp is solved in a worker thread, so the connection stays served,
        and the register sent again. ``proof`` (else ``agent.registration_token``) goes with the
        first one. A ``rate_limited`` refusal is waited out (``retry_after_ms``) up to ``retries``
        times. Raises RequestRefused, or ConnectionLost if the connection dropped before the answer
        (the registration may or may not have happened)."""
        self._check_open()
        self.agent.register(one_time, kem_one_time, proof=proof)
        solved = proof is not None
        waits = 0
        while True:
            reply = await self._expect(self._submit(), wire.Register).wait()
            if not isinstance(reply, wire.ErrorFrame):
                return
            bits = reply.registration_pow
            if reply.code == wire.ErrorCode.REGISTRATION_PROOF and bits is not None and not solved:
                if bits > MAX_REGISTRATION_POW:
                    raise RequestRefused(
                        "register",
                        reply.code,
                        f"the relay asks for a {bits}-bit registration stamp; this client solves at most "
                        f"{MAX_REGISTRATION_POW} bits (2**{bits} SHA-256 tries would hang the device)",
                    )
                account, key = self.agent.account, self.agent.device.identity_key
                stamp = await trio.to_thread.run_sync(wire.solve_registration_pow, account, key, bits)
                solved = True
                self.agent.prove_registration(stamp)
                continue
            wait = _retry_wait(reply, waits, retries)
            if wait is None:
                raise RequestRefused("register", reply.code, reply.message)
            waits += 1
            await trio.sleep(wait)
            self.agent.prove_registration()

    async def rotate_delivery_token(self) -> bytes:
        """Give the account a new delivery token (needs a login); returns it once the relay has it.
        The old token stops opening the account for sealed sends at once."""
        self._check_open()
        token = self.agent.rotate_delivery_token()
        await self._answer(self._expect(self._submit(), wire.UploadPrekeys), "upload_prekeys")
        return token

    async def login(self) -> None:
        """Authenticate; from now on every reconnect logs in again before anything else is written.

        After each login the connection receives everything the relay queued for the device."""
        self._check_open()
        if self.link.login():
            return
        waiter = _Waiter()
        self._login_waiters.append(waiter)
        self._poke()
        await waiter.wait()

    async def request_certificate(self) -> bytes:
        """Fetch a sender certificate (needs a login) for sealed sends; returns it."""
        self._check_open()
        self.agent.request_certificate()
        await self._answer(self._expect(self._submit(), wire.GetSenderCertificate), "get_sender_certificate")
        assert self.agent.certificate is not None
        return self.agent.certificate

    async def send_text(
        self, to: str, text: bytes | str, *, sealed: bool = False, retries: int = DEFAULT_RETRIES
    ) -> tuple[bytes, ...]:
        """Send to every device of account ``to``; returns the relay's envelope ids once it has accepted.

        ``sealed=True`` hides the sender from the relay: it needs the recipient's delivery token in
        ``agent.tokens``, and fetches a sender certificate first if the agent has none. Waits while
        the device is offline. A ``rate_limited`` refusal is waited out (``retry_after_ms``) and the
        message sent again, up to ``retries`` times. Raises SendFailed if the relay refuses it."""
        self._check_open()
        plaintext = text.encode() if isinstance(text, str) else text
        if sealed:
            if to not in self.agent.tokens:
                raise SendFailed(
                    to, "not_ready", f"sealed sender needs {to!r}'s delivery token in agent.tokens"
                )
            if self.agent.certificate is None:
                await self.request_certificate()
        waits = 0
        while True:
            try:
                return await self._send_once(to, plaintext, sealed)
            except SendFailed as e:
                wait = _retry_wait(e, waits, retries)
                if wait is None:
                    raise
            waits += 1
            await trio.sleep(wait)

    async def _send_once(self, to: str, plaintext: bytes, sealed: bool) -> tuple[bytes, ...]:
        ref = next(self._refs)
        waiter = _Waiter()
        self._sends[ref] = (waiter, to)
        try:
            self.agent.send_text(to, plaintext, ref, sealed=sealed)
            self._submit()
            ids = await waiter.wait()
        finally:
            self._sends.pop(ref, None)
        assert isinstance(ids, tuple)
        return ids

    async def sync(self) -> None:
        """Until the relay has answered everything written on the main connection before this call."""
        self._check_open()
        self.agent.ping()
        await self._answer(self._expect(self._submit(), wire.Ping), "ping")

    def send_group(self, group_id: bytes, members: Iterable[str], text: bytes, ref: object) -> None:
        """Send ``text`` to group ``group_id`` (``DeviceAgent.send_group``: sender keys, one ``send``
        per member account) without waiting. Each account's part the relay accepts is an ``Accepted``
        with ``ref`` for ``on_event``, each refused one a ``Failed``. ``ref`` must not be an int
        (those are the connection's own, for ``send_text``)."""
        self._start(ref, lambda: self.agent.send_group(group_id, members, text, ref))

    def send_receipt(
        self, to: str, timestamps: Iterable[int], kind: str, ref: object, *, sealed: bool = False
    ) -> None:
        """A delivery or read receipt (``DeviceAgent.send_receipt``) to ``to``'s devices, without
        waiting; its outcome goes to ``on_event`` as for ``send_group``."""
        self._start(ref, lambda: self.agent.send_receipt(to, timestamps, kind, ref, sealed=sealed))

    def send_cover(self, to: str, ref: object, *, sealed: bool = True) -> None:
        """A dummy message (``DeviceAgent.send_cover``, cover traffic) to ``to``, without waiting; its
        outcome goes to ``on_event`` as for ``send_group``."""
        self._start(ref, lambda: self.agent.send_cover(to, ref=ref, sealed=sealed))

    def _start(self, ref: object, action: Callable[[], None]) -> None:
        self._check_open()
        if isinstance(ref, int):
            raise ValueError(f"{self._name}: int refs are the connection's own (send_text); got {ref!r}")
        action()
        self._submit()

    def submit(self) -> None:
        """Hand the link what the caller asked of the agent itself (``agent.create_group``,
        ``agent.change_group``, ``agent.put_group_state``: sims.world.groups), without waiting, as
        ``send_group`` does; what the agent makes of the answers goes to ``on_event``."""
        self._check_open()
        self._submit()

    def move_to(self, local_address: str) -> None:
        """The phone changes network: drop the connection (and the anonymous one) and make the next
        ones from ``local_address``, logging in again as after any drop."""
        self._check_open()
        self.local_address = local_address
        if self._session is not None:
            self.link.abort(f"moved to {local_address}")
            self._poke()

    async def link_device(self, other: DeviceAgent) -> None:
        """Register ``other`` as a new device of this account over this logged-in connection, as a
        primary phone provisions a linked one. ``other`` then opens its own connection and logs in."""
        self._check_open()
        if other.account != self.agent.account:
            raise ValueError(f"{other.account!r} is not a device of account {self.agent.account!r}")
        other.register()
        (frame,) = other.take_outbox()
        our_id = self.link.carry(frame)
        self._foreign[our_id] = (other, frame.id)
        waiter = self._waiters[our_id] = _Waiter()
        self._poke()
        try:
            await self._answer(waiter, "register")
        finally:
            self._foreign.pop(our_id, None)
        self.agent.linked_devices_known()  # it linked one: sync copies from now on, sealed sends too

    # --- what the link reports ----------------------------------------------------------------------

    def _drain(self) -> None:
        while (event := self.link.next_event()) is not NEED_DATA:
            self._on_event(event)

    def _on_event(self, event: LinkEvent) -> None:
        if isinstance(event, Answered):
            waiter = self._waiters.pop(event.request_id, None)
            foreign = self._foreign.get(event.request_id)
            if foreign is not None:
                other, their_id = foreign
                other.handle(_with_id(event.frame, their_id))
                other.take_outbox()  # a Registered answer asks for nothing more
            if waiter is not None:
                waiter.set(event.frame)
        elif isinstance(event, RequestLost):
            waiter = self._waiters.pop(event.request_id, None)
            if waiter is not None:
                waiter.fail(ConnectionLost(f"{self._name}: the connection dropped during {event.kind}"))
        elif isinstance(event, Received):
            try:
                self._deliver.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("%s: nobody reads conn.received; dropped a message", self._name)
        elif isinstance(event, Accepted):
            send = self._sends.get(event.ref) if isinstance(event.ref, int) else None
            if send is not None:
                send[0].set(event.envelope_ids)
            elif self.on_event is not None:
                self.on_event(event)
        elif isinstance(event, SentTranscript):
            self.synced.append(event)
            if self.on_event is not None:
                self.on_event(event)
        elif isinstance(event, Undecryptable):
            log.warning(
                "%s: envelope %s could not be read (%s)", self._name, event.envelope_id.hex(), event.reason
            )
            self.undecryptable.append(event)
            if self.on_event is not None:
                self.on_event(event)
        elif isinstance(event, Duplicate):
            log.info(
                "%s: envelope %s is a second copy of a message read: dropped",
                self._name,
                event.envelope_id.hex(),
            )
            self.duplicates.append(event)
            if self.on_event is not None:
                self.on_event(event)
        elif isinstance(event, LoggedIn):
            waiters, self._login_waiters = self._login_waiters, []
            for w in waiters:
                w.set(None)
            if self.on_event is not None:
                self.on_event(event)  # every login, the ones after a reconnect too
        elif isinstance(event, Failed):
            self._on_failed(event)
        elif self.on_event is not None:  # ReceiptReceived, IdentityChanged, ContactsFound...
            self.on_event(event)

    def _on_failed(self, event: Failed) -> None:
        send = self._sends.get(event.ref) if isinstance(event.ref, int) else None
        if send is not None:
            waiter, to = send
            waiter.fail(SendFailed(to, event.code, event.message, event.retry_after_ms))
        elif event.ref in LOGIN_KINDS:
            waiters, self._login_waiters = self._login_waiters, []
            if not waiters:
                raise LoginFailed(str(event.ref), event.code, event.message)
            for w in waiters:
                w.fail(RequestRefused(str(event.ref), event.code, event.message))
        else:
            log.warning(
                "%s: the relay refused %s: %s: %s",
                self._name,
                event.ref,
                event.code,
                wire.for_log(event.message),
            )
            self.failures.append(event)
            if self.on_event is not None:
                self.on_event(event)

    # --- the tasks --------------------------------------------------------------------------------

    async def _open_stream(self, local_address: str | None = None) -> Any:
        with trio.fail_after(self.connect_timeout):
            if self._opener is not None:
                return await self._opener()
            local = local_address or self.local_address
            stream = await trio.open_tcp_stream(self.host, self.port, local_address=local)
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
        while True:
            if stream is not None:
                await self._run_session(stream)
                stream = None
            await self._wait_for(lambda: self.link.state == "connecting")
            try:
                stream = await self._open_stream()
            except _DROPPED as e:
                self.link.connection_failed(trio.current_time(), repr(e))
                self._poke()
                continue
            if self.link.state != "connecting":  # disconnect() came while we were connecting
                await trio.aclose_forcefully(stream)
                stream = None

    async def _timer(self) -> None:
        """Call the link's handle_timeout when its next deadline comes (back-off, keepalive), and the
        agent's ``tick`` when a retry receipt is due (``DeviceAgent.retry_due``: a group message
        it cannot read yet, whose sender it asks to resend), as the simulator does."""
        while True:
            changed = self._changed
            deadline = self.link.next_deadline()
            retry_at = self._retry_deadline()
            wake = min((d for d in (deadline, retry_at) if d is not None), default=math.inf)
            with trio.move_on_at(wake):
                await changed.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self.link.handle_timeout(now)
                self._poke()
            if retry_at is not None and now >= retry_at:
                self.agent.tick()
                self._submit()

    def _retry_deadline(self) -> float | None:
        """When (trio's clock) the agent's next retry receipt is due, while it is logged in (it sends
        none before: ``tick`` waits for the login, and so does this, so as not to wake for nothing).
        The agent's clock (the relay's, Unix seconds) is read for how far off that is."""
        if not (self.logged_in and self.agent.authenticated):
            return None
        due = self.agent.retry_due()
        if due is None:
            return None
        return trio.current_time() + max(0.0, due - self.agent.clock())

    async def _run_session(self, stream: Any) -> None:
        """Serve one connection until it drops."""
        session = _Session(stream)
        self._session = session
        self.link.connection_made(trio.current_time())
        self._poke()
        try:
            async with trio.open_nursery() as nursery:
                session.nursery = nursery
                if session.reason is not None:  # dropped before it started
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._reader, session, stream, MAIN)
                nursery.start_soon(self._writer, session)
        finally:
            self._session = None
            for s in (session.main, session.anon):
                if s is not None:
                    await trio.aclose_forcefully(s)
            self.link.connection_lost(trio.current_time(), session.reason)
            self._drain()  # RequestLost for what may not be written again
            self._poke()

    async def _writer(self, session: _Session) -> None:
        try:
            while True:
                changed = self._changed
                if data := self.link.data_to_send(MAIN):
                    await self._write(session.main, data)
                elif self.link.wants_anon:
                    fresh = self.fresh_address() if self.fresh_address is not None else None
                    session.anon = await self._open_stream(fresh)
                    self.link.anon_connection_made()
                    session.nursery.start_soon(self._reader, session, session.anon, ANON)
                elif data := self.link.data_to_send(ANON):
                    await self._write(session.anon, data)
                else:
                    await changed.wait()
        except _DROPPED as e:
            session.drop(f"writing failed: {e!r}")

    async def _write(self, stream: Any, data: bytes) -> None:
        if self.wire_tap is not None:
            self.wire_tap(data)
        with trio.fail_after(self.write_timeout):
            await stream.send_all(data)

    async def _reader(self, session: _Session, stream: Any, channel: Channel) -> None:
        try:
            while True:
                data = await stream.receive_some(_RECEIVE_SIZE)
                self.link.receive_data(data, channel)
                try:
                    self._drain()
                finally:
                    self._poke()
                if not data:
                    break
                if channel == ANON and self.link.fresh_anon and not self.link.anon_open:
                    break  # its one sealed send answered: closed below, the next one gets its own
        except _DROPPED as e:
            session.drop(f"reading failed: {e!r}")
            return
        if channel == ANON and not self.link.anon_open:
            # The relay closed an idle anonymous connection: the link opens another when needed.
            session.anon = None
            await trio.aclose_forcefully(stream)

    # --- closing ----------------------------------------------------------------------------------

    async def _flush(self, timeout: float) -> None:
        """On a clean exit: let the relay answer what is in flight (acknowledgements above all),
        unless the connection drops first."""
        if self.state != "ready":
            return
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:

                async def synced() -> None:
                    # A refused ping (an answer this device cannot read: unknown_kind) is an answer all
                    # the same: what was written before it is answered.
                    with contextlib.suppress(RequestRefused):
                        await self.sync()
                    nursery.cancel_scope.cancel()

                async def dropped() -> None:
                    await self.wait_until(lambda: self.state != "ready")
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
        self._poke()


def _retry_wait(reply: wire.ErrorFrame | SendFailed, waits: int, retries: int) -> float | None:
    """Seconds to wait before trying a ``rate_limited`` request again; None to give up."""
    ms = reply.retry_after_ms
    if reply.code != wire.ErrorCode.RATE_LIMITED or ms is None or waits >= retries:
        return None
    wait = ms / 1000
    return wait if wait <= MAX_RETRY_WAIT else None


def _with_id(frame: wire.Response, request_id: int) -> wire.Response:
    return dataclasses.replace(frame, id=request_id)


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
    back-off jitter), ``backoff``, ``keepalive`` (None for none), ``keepalive_timeout`` (how long the
    relay has to answer what was written by a keepalive ping before the connection is dropped and
    made again; without keepalive pings, what was unanswered at the last check, every that many
    seconds; None: wait as long as it takes), ``connect_timeout``,
    ``write_timeout``, ``wire_tap``, ``local_address``, ``on_event``. Raises if the first connection cannot be made (see the module
    docstring). What the block raises comes out as itself, not wrapped in an ExceptionGroup;
    only when the connection fails too (LoginFailed) at the same time do both come out in one."""
    conn = DeviceConnection(agent, host, port, **options)
    # The first connection is made before the nursery opens, so its failure reaches the caller
    # as itself: trio (>= 0.25) wraps whatever leaves a nursery in an ExceptionGroup.
    stream = await conn._open_stream()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._supervise, stream)
            nursery.start_soon(conn._timer)
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
