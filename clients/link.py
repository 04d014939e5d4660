"""The device's connection to the relay, sans-IO: protocol, login, resend and back-off as data.

``DeviceLink`` is to a device's relay connection what h11's ``Connection`` is to HTTP: it never
touches a socket, never reads a clock and draws randomness only from the ``random.Random`` it is
given. The driver (``clients.net``'s trio loop, or a test) does the I/O and tells it what happened::

    link = DeviceLink(agent, rng=random.Random(7))
    # link.state == "connecting": the driver opens a stream to the relay, then
    link.connection_made(now)
    stream.send_all(link.data_to_send())          # the login, once link.login() was called
    link.receive_data(stream.receive_some())      # b"" when the relay closed its side
    while (event := link.next_event()) is not NEED_DATA:
        ...                                       # the agent's events, Answered, RequestLost
    if link.drop_reason is not None:              # the link wants the connection closed
        close the stream
    link.connection_lost(now, "reading failed")   # then: state "backoff" until next_deadline()
    link.handle_timeout(now)                      # at next_deadline(): reconnect, or keepalive ping

Two channels carry frames: ``MAIN``, the connection the device logs in on, and ``ANON``, one that
never authenticates, for sealed sends (docs/protocol.md: on an authenticated connection the relay
knows who is sending anyway), and bundle fetches made with the recipient's delivery token.
``wants_anon`` says when the driver should open it. With ``fresh_anon``, every sealed send (or
such a fetch) has an anonymous connection of its own: the link writes one per
connection, and once it is answered ``anon_open`` falls to False and the driver closes that
connection (from another network address, the relay cannot join one sealed send to the next).

What the link decides:

- Before a login completes only the handshake is written; everything else waits, and after
  each login the link asks the relay for everything queued (``receive``).
- A frame counts as written once ``data_to_send`` has handed it over. When the connection drops,
  every request the relay had not answered is written again on the next connection, with the
  same id, so its answer still finds the agent's pending state (the agent is therefore not told
  ``connection_lost``: nothing it waits on is lost). The handshake is begun afresh instead, and a
  ``register`` is not repeated blindly (it may have happened): it becomes ``RequestLost``. A
  replayed send the relay had in fact accepted reaches the recipient twice; the recipient's
  ratchet refuses the second copy, which its agent reports as a ``Duplicate`` (not
  ``Undecryptable``), so each plaintext is still delivered at most once.
- Reconnection attempts are spaced by ``Backoff`` (exponential, capped, jittered from the
  injected RNG); the schedule starts again from the bottom only after a connection that worked
  (the relay answered, and the login, if one is wanted, succeeded).
- A ping every ``keepalive`` seconds keeps the relay's read timeout from closing the connection.
  It is also the check that the relay still answers: a request written by the time of a keepalive
  ping (the ping among them) still unanswered ``keepalive_timeout`` seconds later drops the
  connection (``drop_reason`` names the request), and what was unanswered is written again on the
  next one. Without it a relay that stops answering, or answers under the wrong request ids, and a
  connection dead without a reset (a phone's network gone) would hold every waiting request forever.
  With ``keepalive=None`` (no pings) the check runs on its own every ``keepalive_timeout`` seconds:
  what was unanswered at one must be answered by the next (it checked nothing, a ``sync()``'s own ping
  included); ``keepalive_timeout=None`` waits as long as it takes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from relaysim.clients.agent import AgentEvent, DeviceAgent, Failed, LoggedIn, unexpected_answer
from relaysim.relay import wire

__all__ = [
    "ANON",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "MAIN",
    "NEED_DATA",
    "Answered",
    "Backoff",
    "DeviceLink",
    "LinkEvent",
    "RequestLost",
]

log = logging.getLogger("clients.link")

Channel = Literal["main", "anon"]
MAIN: Final = "main"
ANON: Final = "anon"
NEED_DATA: Final = wire.NEED_DATA

# Signal's clients keep their websocket alive with a request every 30 s; the relay closes a
# connection after 60 s without a complete frame (relay.server.DEFAULT_READ_TIMEOUT).
DEFAULT_KEEPALIVE: Final = 30.0
# How long the relay has to answer what was written by a keepalive ping: Signal-Android's
# SignalWebSocketHealthMonitor takes a websocket whose keepalive has no answer after 20 s for dead.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 20.0
# Ids for requests carried for another agent (link_device): far above any id an agent reaches.
_FOREIGN_IDS: Final = 2**48
_HANDSHAKE: Final = (wire.AuthChallenge, wire.Authenticate)
LOGIN_KINDS: Final = ("auth_challenge", "authenticate")


def _decoder() -> wire.FrameDecoder:
    """A decoder of what the relay sends, that reads a frame with fields newer than this device speaks
    without them (``FrameDecoder.ignore_unknown_fields``): a relay that adds a field to an answer must
    not make every such answer unreadable, and the device reconnect for it again and again."""
    return wire.FrameDecoder("device", ignore_unknown_fields=True)


def _anonymous(frame: wire.Request) -> bool:
    """Whether ``frame`` goes over the connection that never logs in: a sealed send, or a bundle fetch
    opened with the recipient's delivery token (as Signal's unauthenticated fetches are)."""
    return isinstance(frame, wire.SealedSend) or (
        isinstance(frame, wire.FetchBundle) and frame.delivery_token is not None
    )


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: exponential, capped, jittered.

    The shape is gRPC's connection back-off (github.com/grpc/grpc, doc/connection-backoff.md: initial 1 s, multiplier
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


@dataclass(frozen=True)
class Answered:
    """The relay's answer to a request the driver asked to hear about (``track`` or ``carry``).

    A refusal is the ``wire.ErrorFrame`` here; the agent's ``Failed`` for it is not reported twice.
    An answer of the wrong kind is reported as the agent's refusal of it, an ``ErrorFrame`` whose code
    is ``unexpected_answer`` (``clients.agent.unexpected_answer``); so is one of the right kind the agent
    refuses (a sender certificate that does not verify: ``bad_certificate``), with the agent's code."""

    request_id: int
    frame: wire.Response


@dataclass(frozen=True)
class RequestLost:
    """The connection dropped before the relay answered a request that is not safe to repeat."""

    request_id: int
    kind: str


LinkEvent = AgentEvent | Answered | RequestLost


class DeviceLink:
    """A device's relay connection as a state machine, driven by its caller.

    ``state`` is ``"connecting"`` (the driver should open a connection now), ``"logging_in"``,
    ``"ready"`` (connected and, once login() has been called, logged in), ``"backoff"`` (waiting
    until ``next_deadline()`` to reconnect) or ``"offline"`` (``set_online(False)``).
    """

    def __init__(
        self,
        agent: DeviceAgent,
        *,
        rng: random.Random,
        backoff: Backoff = Backoff(),  # frozen, so one shared default is safe
        keepalive: float | None = DEFAULT_KEEPALIVE,
        keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
        fresh_anon: bool = False,
    ) -> None:
        if keepalive is not None and keepalive <= 0:
            raise ValueError(f"keepalive must be positive seconds or None, got {keepalive!r}")
        if keepalive_timeout is not None and keepalive_timeout <= 0:
            raise ValueError(f"keepalive_timeout must be positive seconds or None, got {keepalive_timeout!r}")
        self.agent = agent
        self.rng = rng
        self.backoff = backoff
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.fresh_anon = fresh_anon
        self._sealed_waiting: list[wire.Request] = []  # fresh_anon: sealed sends for connections to come
        self._anon_request: int | None = None  # fresh_anon: the one the open anonymous connection carries
        self.state = "connecting"
        self.connected = False
        self.logged_in = False
        self.anon_open = False
        self.want_online = True
        self.want_login = False
        self.reconnects = 0  # connections made after the first
        self.last_drop: str | None = None  # why the last connection ended
        self.drop_reason: str | None = None  # set when the link wants the connection closed
        # Frames from the relay of a kind newer than this device speaks that answered nothing it
        # waited for: read past (logged), the connection kept.
        self.ignored_frames = 0
        # Frames from the relay read without fields newer than this device speaks (the first logged).
        self.ignored_fields = 0
        self._connections = 0
        self._attempt = 0  # reconnection attempts since the last connection that worked
        self._heard = False  # any frame received on the current connection
        self._reconnect_at: float | None = None
        self._ping_at: float | None = None
        # The keepalive's check: when, and the ids of the requests written by the ping that must be
        # answered by then (keepalive_timeout).
        self._check_at: float | None = None
        self._awaited: set[int] = set()
        self._queue: list[wire.Request] = []  # to be written, oldest first
        self._unanswered: dict[int, wire.Request] = {}  # written, no answer yet
        self._out: dict[str, bytearray] = {MAIN: bytearray(), ANON: bytearray()}
        self._decoders = {MAIN: _decoder(), ANON: _decoder()}
        self._events: deque[LinkEvent] = deque()
        self._tracked: dict[int, str] = {}  # request id -> kind, whose answer is reported
        self._carried: set[int] = set()  # ids of frames carried for another agent
        self._foreign_ids = itertools.count(_FOREIGN_IDS)

    @property
    def _name(self) -> str:
        return f"{self.agent.account}.{self.agent.device_id}"

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.debug("%s: %s -> %s", self._name, self.state, state)
            self.state = state

    # --- what the application asks for ------------------------------------------------------------

    def submit(self) -> list[wire.Request]:
        """Queue what the agent has asked for since the last call; returns those frames."""
        frames = self.agent.take_outbox()
        self._queue.extend(frames)
        return frames

    def track(self, request_id: int) -> None:
        """Report the relay's answer to request ``request_id`` as an ``Answered`` event."""
        self._tracked[request_id] = next(
            (f.kind for f in [*self._queue, *self._unanswered.values()] if f.id == request_id), ""
        )

    def carry(self, frame: wire.Request) -> int:
        """Queue another agent's request (a device being linked); returns the id it goes out with.
        Its answer comes back as ``Answered`` with that id, and is not shown to this agent."""
        request_id = next(self._foreign_ids)
        self._queue.append(dataclasses.replace(frame, id=request_id))
        self._tracked[request_id] = frame.kind
        self._carried.add(request_id)
        return request_id

    def login(self) -> bool:
        """Log in now if connected (and on every later connection); True if already logged in."""
        self.want_login = True
        if self.connected and not self.logged_in and not self._login_in_flight():
            self._begin_login()
        return self.connected and self.logged_in

    def set_online(self, online: bool) -> None:
        """Want the device online or offline, as a phone gaining or losing its network. Going
        offline while connected sets ``drop_reason``; coming back connects without back-off."""
        self.want_online = online
        if online:
            if self.state == "offline":
                self._set_state("connecting")
        elif self.connected:
            self.drop_reason = self.drop_reason or "disconnected by the application"
        else:
            self._go_offline()

    def abort(self, reason: str) -> None:
        """Drop the current connection as a network failure would (``drop_reason``)."""
        if self.connected and self.drop_reason is None:
            self.drop_reason = reason

    # --- what the driver reports ------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A connection to the relay is open (the driver was in state ``connecting``)."""
        if self.state != "connecting":
            raise RuntimeError(f"{self._name}: connection_made in state {self.state!r}")
        if self._connections:
            self.reconnects += 1
        self._connections += 1
        self.connected, self.logged_in, self.anon_open, self._heard = True, False, False, False
        self.drop_reason = None
        self._decoders = {MAIN: _decoder(), ANON: _decoder()}
        self._reconnect_at = None
        self._ping_at = None if self.keepalive is None else now + self.keepalive
        self._check_at, self._awaited = None, set()
        if self.keepalive is None and self.keepalive_timeout is not None:
            # No pings: the check runs on its own, every keepalive_timeout (see handle_timeout)
            self._check_at = now + self.keepalive_timeout
        # A login begun on an earlier connection is begun again on this one.
        self._queue = [f for f in self._queue if not isinstance(f, _HANDSHAKE)]
        if self.want_login:
            self._begin_login()
        else:
            self._set_state("ready")

    def connection_failed(self, now: float, reason: str) -> None:
        """Opening a connection failed: back off, then try again."""
        self.last_drop = f"connecting failed: {reason}"
        log.info("%s: %s", self._name, self.last_drop)
        self._back_off(now)

    def connection_lost(self, now: float, reason: str | None = None) -> None:
        """The connection (both channels) is closed. ``reason`` is the driver's, for a drop it
        noticed (a failed read or write); the link's own ``drop_reason`` comes first."""
        if not self.connected:
            raise RuntimeError(f"{self._name}: connection_lost while not connected")
        worked = self._heard and (self.logged_in or not self.want_login)
        self.last_drop = self.drop_reason or reason
        self.connected = self.logged_in = self.anon_open = False
        self.drop_reason = None
        self._ping_at = None
        self._check_at, self._awaited = None, set()
        for buffer in self._out.values():
            buffer.clear()  # what they held is in _unanswered, and is requeued
        self._queue = self._sealed_waiting + self._queue  # never written: queued again as they were
        self._sealed_waiting = []
        self._anon_request = None
        self._requeue()
        log.info("%s: connection closed: %s", self._name, wire.for_log(self.last_drop or "closing"))
        if worked:
            self._attempt = 0
        if self.want_online:
            self._back_off(now)
        else:
            self._go_offline()

    def anon_connection_made(self) -> None:
        """The connection for sealed sends is open (the driver saw ``wants_anon``)."""
        if not self.connected:
            raise RuntimeError(f"{self._name}: the anonymous connection needs a main one")
        self.anon_open = True
        self._decoders[ANON] = _decoder()
        if self.fresh_anon and self._sealed_waiting:
            frame = self._sealed_waiting.pop(0)
            self._anon_request = frame.id
            self._unanswered[frame.id] = frame
            self._out[ANON] += wire.encode(frame)

    def receive_data(self, data: bytes, channel: Channel = MAIN) -> None:
        """Bytes from the relay on ``channel``; ``b""`` when the relay closed its side."""
        self._decoders[channel].receive_data(data)

    def next_event(self) -> LinkEvent | Literal[wire._Event.NEED_DATA]:
        """The next thing that happened, or NEED_DATA. Frames are handled here, one at a time."""
        while not self._events:
            for channel in (MAIN, ANON):
                if self._read_frame(channel):
                    break
            else:
                return NEED_DATA
        return self._events.popleft()

    def data_to_send(self, channel: Channel = MAIN) -> bytes:
        """Bytes to write on ``channel`` now (empty if none, or while that channel is closed)."""
        self._move()
        if channel == ANON and not self.anon_open:
            return b""
        data = bytes(self._out[channel])
        self._out[channel].clear()
        return data

    @property
    def wants_anon(self) -> bool:
        """Whether the driver should open the anonymous connection: sealed sends wait for it."""
        self._move()
        return self.connected and not self.anon_open and bool(self._out[ANON] or self._sealed_waiting)

    # --- timers -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` is next due (the driver's clock), or None."""
        deadlines = [d for d in (self._reconnect_at, self._ping_at, self._check_at) if d is not None]
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> None:
        """Do what is due at ``now``: end a back-off (state ``connecting``), ping, or drop a
        connection on which the relay left what was written by a keepalive ping unanswered."""
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self._set_state("connecting")
        if self._check_at is not None and now >= self._check_at:
            late = sorted(self._awaited.intersection(self._unanswered))
            self._check_at, self._awaited = None, set()
            if late and self.connected and self.drop_reason is None:
                first = self._unanswered[late[0]]
                since = "of a keepalive ping" if self.keepalive is not None else "of the last check"
                self.drop_reason = (
                    f"the relay did not answer {first.kind} (request {first.id}) within "
                    f"{self.keepalive_timeout:g} s {since}"
                )
                log.warning("%s: %s", self._name, self.drop_reason)
            if self.keepalive is None and self.keepalive_timeout is not None and self.connected:
                # Without keepalive pings nothing else would check that the relay answers (a request
                # the application wrote, a sync()'s ping, held for ever by a relay that stopped
                # answering, or a connection dead without a reset): what is unanswered now must be
                # answered by the next check, keepalive_timeout on (so each within twice that).
                self._check_at = now + self.keepalive_timeout
                self._awaited = set(self._unanswered)
        if self._ping_at is not None and now >= self._ping_at:
            assert self.keepalive is not None
            self._ping_at = now + self.keepalive
            self.agent.ping()
            frames = self.submit()
            if self.keepalive_timeout is not None and self._check_at is None:
                self._check_at = now + self.keepalive_timeout
                self._awaited = {f.id for f in frames}.union(self._unanswered)

    # --- inside -----------------------------------------------------------------------------------

    def _begin_login(self) -> None:
        self.agent.login()
        self.submit()
        self._set_state("logging_in")

    def _login_in_flight(self) -> bool:
        return any(isinstance(f, _HANDSHAKE) for f in [*self._queue, *self._unanswered.values()])

    def _go_offline(self) -> None:
        self._attempt = 0
        self._reconnect_at = None
        self._set_state("offline")

    def _back_off(self, now: float) -> None:
        delay = self.backoff.delay(self._attempt, self.rng)
        self._attempt += 1
        self._reconnect_at = now + delay
        self._set_state("backoff")
        log.info("%s: reconnecting in %.3f s (attempt %d)", self._name, delay, self._attempt)

    def _move(self) -> None:
        """Encode what may be written now: everything once logged in (or if no login is wanted),
        else only the handshake. From here on a drop means "write it again"."""
        if not self.connected:
            return
        if self.logged_in or not self.want_login:
            frames, self._queue = self._queue, []
        else:
            frames = [f for f in self._queue if isinstance(f, _HANDSHAKE)]
            if frames:
                self._queue = [f for f in self._queue if not isinstance(f, _HANDSHAKE)]
        for frame in frames:
            anonymous = _anonymous(frame)
            if self.fresh_anon and anonymous:
                self._sealed_waiting.append(frame)  # written when a connection of its own is open
                continue
            self._unanswered[frame.id] = frame
            self._out[ANON if anonymous else MAIN] += wire.encode(frame)

    def _requeue(self) -> None:
        """Put what the relay never answered back at the front of the queue, oldest first."""
        replay = []
        for frame in sorted(self._unanswered.values(), key=lambda f: f.id):
            if isinstance(frame, _HANDSHAKE):
                continue  # the next connection logs in afresh
            if isinstance(frame, wire.Register):
                # Not safe to repeat blindly: it may have happened, and a second one needs a login.
                self._tracked.pop(frame.id, None)
                self._carried.discard(frame.id)
                self._events.append(RequestLost(frame.id, frame.kind))
                continue
            replay.append(frame)
        self._unanswered.clear()
        self._queue = replay + self._queue

    def _read_frame(self, channel: str) -> bool:
        """Handle one frame from ``channel``, if a whole one is there; False if none."""
        if channel == ANON and not self.anon_open:
            return False
        decoder = self._decoders[channel]
        try:
            frame = decoder.next_frame()
        except wire.RemoteProtocolError as e:
            if e.code in wire.RESUMABLE_CODES and e.request_id in self._unanswered:
                # The answer to a request it waits for, of a kind newer than this device speaks (the
                # decoder goes on after it: wire.RESUMABLE_CODES). Written again on another connection
                # it would be answered so again, and the device reconnect for ever: the request fails
                # instead, refused with the decoder's error (unknown_kind, naming the kind), and the
                # connection goes on.
                self._on_frame(wire.ErrorFrame.from_exception(e))
                return True
            if e.code in wire.RESUMABLE_CODES:
                # A frame read whole, only of a kind newer than this device speaks, answering nothing
                # it waits for (a push, id 0, or an id it is not waiting on): read past it.
                self.ignored_frames += 1
                log.warning(
                    "%s: ignored a frame from the relay: %s: %s",
                    self._name,
                    e.code.value,
                    wire.for_log(e.message),
                )
                return True
            if self.connected and self.drop_reason is None:
                # The message names a nested field by its own name ("identity_key must be 32
                # bytes"); the path says where it is (devices[0].identity_key, envelope.body).
                where = f" (at {e.field})" if e.field and e.field not in e.message else ""
                self.drop_reason = f"the relay sent a bad frame: {e.code.value}: {e.message}{where}"
                log.error("%s: %s", self._name, wire.for_log(self.drop_reason))
            return False
        if frame is wire.NEED_DATA:
            return False
        if frame is wire.CLOSED:
            self._closed_by_relay(channel)
            return False
        assert isinstance(frame, wire.Response)  # a "device" decoder yields nothing else
        if decoder.ignored_fields:
            self.ignored_fields += 1
            log.log(
                logging.WARNING if self.ignored_fields == 1 else logging.DEBUG,
                "%s: read a frame of kind %r from the relay without the fields this device does not know: %s",
                self._name,
                frame.kind,
                wire.for_log(", ".join(decoder.ignored_fields)),
            )
        self._on_frame(frame)
        return True

    def _closed_by_relay(self, channel: str) -> None:
        idle = not any(_anonymous(f) for f in self._unanswered.values())
        if channel == ANON and idle:
            # The relay closes an idle anonymous connection (its read timeout): open another when needed.
            self.anon_open = False
        elif self.connected and self.drop_reason is None:
            self.drop_reason = "the relay closed the connection"

    def _on_frame(self, frame: wire.Response) -> None:
        self._heard = True
        answer = frame  # what Answered reports
        if isinstance(frame, wire.Deliver):
            kind = None
        else:
            self._unanswered.pop(frame.id, None)
            if self._anon_request is not None and frame.id == self._anon_request:
                self._anon_request = None
                self.anon_open = False  # its one request answered: the driver closes that connection
            if frame.id == 0 and isinstance(frame, wire.ErrorFrame):
                level = logging.INFO if frame.code == wire.ErrorCode.TIMEOUT else logging.WARNING
                log.log(
                    level, "%s: the relay says %s: %s", self._name, frame.code, wire.for_log(frame.message)
                )
            kind = self._tracked.pop(frame.id, None)
            # An answer of another kind than the request's is reported as the refusal the agent
            # makes of it (``unexpected_answer``), not as itself: a caller awaiting a register or a
            # sender certificate must not take a ``pong`` for one. (``track`` of an id it never saw: "".)
            if kind:
                answer = unexpected_answer(kind, frame) or frame
            if frame.id in self._carried:
                self._carried.discard(frame.id)
                self._events.append(Answered(frame.id, answer))
                return
        events = self.agent.handle(frame)
        if kind is not None:
            if kind and not isinstance(answer, wire.ErrorFrame):
                # An answer of the right kind the agent refused (a sender certificate that does not
                # verify): reported as that refusal, as one of another kind is, not as the answer.
                for event in events:
                    if isinstance(event, Failed) and event.ref == kind:
                        answer = wire.ErrorFrame(id=frame.id, code=event.code, message=event.message)
                        break
            self._events.append(Answered(frame.id, answer))
        for event in events:
            if isinstance(event, LoggedIn):
                self.logged_in = True
                self.agent.receive()
                self._set_state("ready")
            elif isinstance(event, Failed) and event.ref in LOGIN_KINDS:
                self.want_login = False  # what waited for the login is written now (and refused)
                self._set_state("ready")
            elif isinstance(event, Failed) and kind is not None and event.ref == kind:
                continue  # the Answered above carries the refusal
            self._events.append(event)
        self.submit()
