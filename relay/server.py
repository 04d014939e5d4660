"""The relay over TCP (optionally TLS), with trio: a thin loop around ``RelayCore``.

Per connection there is one task, its handler. On TLS and other streams it is also the reader:
it feeds a :class:`~relay.wire.FrameDecoder` and queues each request for the core. Where the
system has epoll (Linux; elsewhere they are read as TLS ones are), plain TCP
connections are read by one task for all of them, the pump (``RelayServer.run_pump``, which
``serve`` runs): it waits on an epoll set of its own until any of them is readable, reads each
readable one once, decodes and queues its requests, and starts a task to lead the next batch if
none does; the handler task sleeps meanwhile, woken only at the connection's end (the peer
closed, a framing error) or when a request's answer does not fit in its output's bound
(back-pressure, below). A request then costs no task wake-up to read it nor another to wait for
its answers, and no ``epoll_ctl`` (trio arms a descriptor anew for each wait): ~15 % of the
server's CPU per envelope in ``relaysim bench relay``. After each batch commits, everything it
queued for a connection (responses to pipelined requests and pushes coalesce) goes out in one
write: on a plain TCP socket, a non-blocking write on the spot, which the kernel's send buffer
nearly always takes whole, with no task switch. Only what the kernel does not take at once, and
everything on TLS or other streams, goes through a writer task, started for it and gone once it
has sent everything (see ``_Connection.flush``): an idle connection costs one task, not two and
a nursery.

Group commit: the requests queued by all connections are handled together, in batches of at
most ``MAX_BATCH``, each batch in ONE store transaction (one fsync) with every request in its
own savepoint, so a refused request undoes only its own writes. Whichever reader finds no
batch under way leads the next one: it yields, so that every other connection with a request
ready can queue it too (for as long as the queue still grows, a few scheduling rounds at most),
then handles the whole queue synchronously, in as few batches of even size as ``MAX_BATCH``
allows. The responses and pushes of the batches are released only after their commits:
nothing is acknowledged before it is durable. A reader that queues requests while a batch is
being gathered goes back to reading at once (the leader takes the whole queue, in order, and
writes the answers); one that leads waits for its batch, and so does one that has queued
``_FRAMES_PER_TURN`` requests in a row. (The pump reads a connection at most once per pass, at
most ``_RECEIVE_SIZE`` bytes, so no connection's pipeline crowds out the others either.) The
queue is first in, first out, so the responses of one connection keep the order of its requests.
If the core fails on a request, the batch stops that connection's reader.

On a durable store in a file, a batch's COMMIT only writes the WAL, and the fsync that makes it
durable runs in a worker thread (``Store.defer_syncs``, ``Store.sync``): the store is free again
at once, so the loop reads, decodes and handles the next batch during the fsync. A batch's
answers are released after its fsync has returned, and after the answers of every batch
committed before it (an fsync of the WAL covers every transaction written before it; so nothing
a device is told, not even an envelope it receives, can be lost by a crash). Nothing uses the
store beside a batch: a connection's connect and disconnect records are jobs in the same queue,
and retention and the operator's orders (``RelayServer.call``) wait for the store between
batches (their own transactions sync before they return). Only the WAL's checkpoints run beside
the loop, every ``_CHECKPOINT_INTERVAL`` seconds, in a worker thread through a connection of
their own (``Store.checkpoint_beside``): SQLite lets a checkpoint run beside a writer.

- A connection that sends nothing complete for ``read_timeout`` seconds (up to an eighth more)
  gets a ``timeout`` error and is closed. Its deadline is moved on only when it would fall due
  within ``read_timeout``, then to ``read_timeout`` and an eighth: not on every frame (moving a
  trio deadline costs µs and leaves an entry in trio's deadline heap each time).
- Bad input gets the most specific error frame the decoder can give, then the connection is
  closed (after a framing error there is no safe place to resume); the server keeps serving
  everyone else. An unexpected exception in the core gets ``internal_error`` and is logged.
- At most ``max_connections`` at once, and ``max_connections_per_address`` from one address;
  the next one gets ``server_busy`` (``field`` names which cap) and is closed. New connections from one address are a token
  bucket (``connection_rate``); past it, ``rate_limited`` with a retry-after, and closed.
- Back-pressure: a connection's requests are read only while its unsent output, plus a whole
  frame for each of its requests not yet answered, stays within ``max_queued_bytes_per_device``;
  past it the reader stops reading (the peer's sends then fill the kernel's buffers and block)
  until the writer has sent enough. So the bytes held for one connection are at most
  ``max_queued_bytes_per_device`` + one response frame + the decoder's buffer (one request frame
  plus one read): with the defaults, 1 MiB + 256 KiB + 256 KiB + 64 KiB, ~1.6 MiB
  (:func:`memory_ceiling`). A peer that reads nothing for ``write_timeout`` seconds is dropped.
- Pushes to a device whose connection already has ``max_queued_bytes_per_device`` unsent
  are dropped: the envelope is still queued in the store and the device gets it on
  ``receive``. Responses are never dropped; instead the reader waits for the writer.

``main(args)`` is the command line, ``relaysim relay serve ...``, and shuts down cleanly on
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import ipaddress
import itertools
import logging
import math
import os
import re
import select
import signal
import socket
import sqlite3
import ssl
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Final, TypeVar

import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.relay.core import ConnectionContext, Output, Push, RelayCore, Reply
from relaysim.relay.limits import (
    DEFAULT_LIMITS,
    MAX_BURST,
    MAX_PER_SECOND,
    MIN_PER_SECOND,
    Limits,
    Rate,
    RateLimiter,
    address_key,
    parse_rate,
)
from relaysim.relay.metadata import KEEP_EVERYTHING, KEEP_NOTHING, RetentionPolicy
from relaysim.relay.profiles import PROFILES, Profile, profile_as_of
from relaysim.relay.store import Store, StoreError, dangling_link
from relaysim.relay.wire import (
    CLOSED,
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    RESUMABLE_CODES,
    ErrorCode,
    ErrorFrame,
    FrameDecoder,
    RemoteProtocolError,
    Request,
    encode,
    for_log,
    quoted,
)

__all__ = ["CannotListen", "RelayServer", "build_parser", "main", "memory_ceiling", "serve"]

log = logging.getLogger("relay.server")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7465
# Idle time allowed between complete frames; clients send ping to stay connected. (Signal's
# clients keep their websocket alive with a request every 30 s; 60 s gives them room.)
DEFAULT_READ_TIMEOUT: Final = 60.0
DEFAULT_WRITE_TIMEOUT: Final = 30.0  # a peer that reads nothing for this long is dropped
# One file descriptor each; the performance target is 1,000 concurrent connections.
DEFAULT_MAX_CONNECTIONS: Final = 4096
# Unsent bytes per connection (4 maximum-size frames): the bound of its output, see the docstring.
DEFAULT_MAX_QUEUED_BYTES: Final = 1024 * 1024
# One address: a phone has one connection, a household or an office behind one NAT a few dozen;
# 64 leaves the other 4,032 slots to everyone else.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 64
DEFAULT_CONNECTION_RATE: Final = Rate(2.0, 64.0)  # new connections per address: 2/s, burst 64
DEFAULT_RETENTION_INTERVAL: Final = 60.0  # seconds between retention sweeps
_RECEIVE_SIZE: Final = 65536
# Requests whose answer may fill a frame (a group's state is up to 128 KiB, its member list up to
# 1,024 names, a group send's answer up to 8,192 envelope ids); any other answer (an ack, an error,
# a certificate) takes at most _SMALL_ANSWER bytes.
_LARGE_ANSWERS: Final = frozenset(
    {
        "receive",
        "fetch_bundle",
        "discover_contacts",
        "get_key_log_entries",
        "get_key_log_consistency",
        "get_group",
        "get_group_state",
        "group_send",
    }
)
_SMALL_ANSWER: Final = 4096
MAX_BATCH: Final = 256  # requests in one transaction (one commit)
_FRAMES_PER_TURN: Final = 64  # requests a connection queues before it waits for their batch
_GATHER_ROUNDS: Final = 4  # scheduling rounds a batch's leader waits for more requests
_LINGER: Final = 1.0  # seconds to drain a peer we are cutting off
_CHECKPOINT_INTERVAL: Final = 0.25  # seconds between checkpoints of the WAL beside the loop
_DEADLINE_SLACK: Final = 1.125  # a read deadline, when moved, is moved this many read_timeouts on
_POSIX: Final = os.name == "posix"  # sockets are file descriptors: read and written with os.read/write


POLICIES: Final[dict[str, RetentionPolicy]] = {p.name: p for p in (KEEP_EVERYTHING, KEEP_NOTHING)}
# The cyclic garbage collector in a serving process. CPython runs a young-generation collection
# whenever the container objects allocated and not yet freed grow past the first threshold (700 by
# default), and the relay allocates a few dozen per envelope (requests, outputs, records, rows),
# nearly all freed by reference counting the moment their batch is answered: with the default,
# collections that find next to nothing took ~7 % of the server's CPU in ``relaysim bench relay``
# (perf). At 10,000 a batch's own objects still crossed it: 119 young collections of ~1.9 ms each
# (the batch's live objects walked every time) in one bench run, ~1.6 us an envelope, ~2 % of the
# server's CPU; at 50,000 the same run made one. Cyclic garbage still counts towards it, so it is
# still collected, after at most 50,000 such objects; the older generations keep their ratios.
SERVING_GC_THRESHOLD: Final = (50_000, 10, 10)


def tune_gc_for_serving() -> None:
    """Set the collector for a process that serves (``relay serve``; the benchmark's relay process):
    :data:`SERVING_GC_THRESHOLD`. Process-wide, so ``serve`` itself leaves it to its caller."""
    gc.set_threshold(*SERVING_GC_THRESHOLD)


DEFAULT_PROFILE: Final = "signal"  # the least a relay can keep (relay.profiles)
DEFAULT_REGISTRATION_POW: Final = 18  # bits of hashcash a new account needs from `relay serve`


def memory_ceiling(max_queued_bytes: int, max_frame_size: int) -> int:
    """The most bytes of buffers one connection can hold (see the module docstring)."""
    return max_queued_bytes + 2 * max_frame_size + _RECEIVE_SIZE


def peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    inner = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            host, port = inner.socket.getpeername()[:2]
        except OSError:
            return None
        return str(host), int(port)
    return None


async def _linger(stream: trio.abc.Stream) -> None:
    """Close our side, then read and discard for a moment before closing.

    Closing a TCP socket with unread input makes the kernel send a reset, which can destroy
    the error frame we just sent before the peer reads it (the "lingering close" of HTTP
    servers, RFC 9112 §9.6).
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    with trio.move_on_after(_LINGER), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_eof()
        while await stream.receive_some(_RECEIVE_SIZE):
            pass


class _Connection:
    """One live connection: its context for the core, and what is waiting to be written."""

    __slots__ = (
        "closed",
        "ctx",
        "decoder",
        "end_error",
        "ended",
        "failed",
        "fd",
        "held",
        "in_flight",
        "outbox",
        "outbox_bytes",
        "pending",
        "progress",
        "reader",
        "refused",
        "reserved",
        "server",
        "stream",
        "task",
        "write_error",
        "write_failed",
        "writer",
    )

    def __init__(self, ctx: ConnectionContext, stream: trio.abc.Stream, server: RelayServer) -> None:
        self.ctx = ctx
        self.stream = stream
        self.server = server
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.in_flight = 0
        self.pending = 0  # requests queued for a batch, not yet handled
        self.reserved = 0  # the most bytes their answers can take
        self.failed = False  # the core failed on one of its requests: answer no more
        self.closed = False  # gone: its queued requests are not handled
        self.refused = 0  # frames the decoder refused and the connection outlived (_refusal)
        # Made only when needed (most connections never need them): the event a task waiting
        # for a write to finish waits on, the running writer task's cancel scope, the reader's.
        self.progress: trio.Event | None = None
        self.writer: trio.CancelScope | None = None
        self.reader: trio.CancelScope | None = None
        self.write_failed = False  # the peer stopped reading or went away: the reader stops too
        self.write_error: Exception | None = None  # the writer failed unexpectedly: the handler raises it
        # A plain TCP socket can be written without the writer task (see flush); TLS and
        # other streams always go through the writer.
        # A POSIX file descriptor, which os.read / os.write take (on Windows a socket is not one)
        self.fd = stream.socket.fileno() if type(stream) is trio.SocketStream and _POSIX else -1
        # Read by the server's pump (RelayServer.run_pump), not by a task of its own: its decoder,
        # a request it took but could not queue yet (back-pressure), whether its reading has ended
        # and with what framing error, and its handler task while that waits for any of these.
        self.decoder: FrameDecoder | None = None
        self.held: Request | _Refused | None = None
        self.ended = False
        self.end_error: ErrorFrame | None = None
        self.task: trio.lowlevel.Task | None = None

    @property
    def unsent(self) -> int:
        return self.outbox_bytes + self.in_flight

    def queue(self, data: bytes) -> None:
        """Add ``data`` to the outbox; nothing is sent until :meth:`flush`."""
        self.outbox.append(data)
        self.outbox_bytes += len(data)

    def flush(self) -> None:
        """Send the outbox now, in one write, if that can be done without waiting; whatever
        cannot is left to a writer task, started for it.

        The fast path: when no writer is running and the stream is a plain TCP socket, one
        non-blocking ``write`` on its descriptor usually takes everything (the kernel's send
        buffer is far larger than a batch's frames), and costs no task switch. If a writer is
        mid-``send_all``, the data waits behind it (the order of a connection's frames is the
        order they were queued; the writer sends the outbox again before it ends); a partial
        write leaves the rest first in the outbox; an error is left for the writer's
        ``send_all`` to meet, which closes the connection.
        """
        if not self.outbox or self.closed or self.writer is not None:
            return
        if self.fd >= 0:
            data = self.outbox[0] if len(self.outbox) == 1 else b"".join(self.outbox)
            try:
                sent = os.write(self.fd, data)
            except OSError:  # EAGAIN, or a broken connection: the writer's send_all deals with it
                sent = 0
            if sent == len(data):
                self.outbox.clear()
                self.outbox_bytes = 0
                self.progressed()
                return
            self.outbox[:] = [data[sent:]]
            self.outbox_bytes = len(data) - sent
        # A system task: it needs no nursery of the connection's. It never raises (it hands its
        # failures to the reader), and the handler stops it before the connection is closed.
        self.writer = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self.run_writer, self.writer, name="relay writer")

    async def run_writer(self, scope: trio.CancelScope) -> None:
        """The writer task: ``RelayServer._write_loop`` until the outbox is empty. A system task
        must not raise, so this never does: a peer that reads nothing for ``write_timeout`` or has
        gone away ends the connection (``write_failed``), anything else is handed to the
        connection's handler (``write_error``), which raises it."""
        try:
            await self.server._write_loop(self, scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            if not self.closed:
                log.info("connection %d: write failed (%s); closing", self.ctx.id, type(e).__name__)
            self.write_failed = True
        except Exception as e:
            self.write_error = e
            self.write_failed = True
        finally:
            self.writer = None
            self.in_flight = 0
            if self.write_failed:
                self.outbox.clear()  # never to be sent
                self.outbox_bytes = 0
                if self.reader is not None:
                    self.reader.cancel()
            self.progressed()

    def progressed(self) -> None:
        """A write finished (or failed): wake whoever waits for one."""
        if self.progress is not None:
            self.progress.set()
            self.progress = None

    async def wait_progress(self) -> None:
        """Until the next write finishes (or fails)."""
        if self.progress is None:
            self.progress = trio.Event()
        await self.progress.wait()

    def wake(self) -> None:
        """Wake the handler task if it waits for the pump (:meth:`RelayServer._pumped_requests`)."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    async def stop_writer(self) -> None:
        """Cancel a running writer and wait until it has ended (it ends at once)."""
        with trio.CancelScope(shield=True):
            while self.writer is not None:
                self.writer.cancel()
                await self.wait_progress()


_T = TypeVar("_T")
_Job = Callable[[], Sequence[Output]]  # a core call the server queues for itself (connect, disconnect)


class _Refused:
    """A frame the decoder refused and the connection outlives (an unknown field or kind: a code in
    ``RESUMABLE_CODES``): queued as a request is, so its error comes in its place among the answers
    and counts against the connection's output as a request's answer does."""

    __slots__ = ("error", "id")
    kind: Final = "error"  # (what it is answered with; not a large answer)

    def __init__(self, error: ErrorFrame):
        self.error = error
        self.id = error.id


_Queued = tuple[_Connection | None, Request | _Refused | _Job]  # (None: the server's own job)
# What a connection queues (isinstance against this tuple, made once: ``Request | _Refused`` would build
# a union object on every request of the hot path)
_ANSWERED = (Request, _Refused)


# The refused frames (an unknown kind or field) of one connection that are logged each: past them a
# peer that sends nothing else would have the relay write a log line for every frame it sends (~150-500
# bytes, and twice the CPU of answering it, measured 2026-12-04), so the rest are counted, and said at
# the connection's close.
LOGGED_REFUSALS: Final = 8


def _refusal(conn: _Connection, e: RemoteProtocolError) -> _Refused:
    """A resumable decoder error (a code in ``RESUMABLE_CODES``) as the :class:`_Refused` queued in
    its frame's place (logged, the first LOGGED_REFUSALS of a connection). The callers catch the error
    around ``decoder.next_frame()`` itself: a wrapper's call on every frame of the hot path would cost
    for the rare frame refused."""
    conn.refused += 1
    if conn.refused <= LOGGED_REFUSALS:
        more = "" if conn.refused < LOGGED_REFUSALS else "; more of this connection's are counted, not logged"
        log.info(
            "connection %d: %s (%s); answered, reading on%s",
            conn.ctx.id,
            for_log(e.message),
            e.code.value,
            more,
        )
    return _Refused(ErrorFrame.from_exception(e))


def _internal_error(request_id: int) -> ErrorFrame:
    return ErrorFrame(id=request_id, code=ErrorCode.INTERNAL_ERROR.value, message="internal error; closing")


class RelayServer:
    """Connection handling for one RelayCore. Use :func:`serve` to run it on TCP listeners."""

    def __init__(
        self,
        core: RelayCore,
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_queued_bytes_per_device: int = DEFAULT_MAX_QUEUED_BYTES,
        max_connections_per_address: int | None = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        connection_rate: Rate | None = DEFAULT_CONNECTION_RATE,
        address_of: Callable[[trio.abc.Stream], tuple[str, int] | None] = peer_address,
    ) -> None:
        # The bounds and the words of --read-timeout and --write-timeout (_seconds): a timeout of 0, below
        # it or NaN given here (serve's callers, a test, a benchmark) closed every connection at once, or
        # never (a NaN deadline never falls due), where the command line refused it.
        check_seconds("read_timeout", read_timeout)
        check_seconds("write_timeout", write_timeout)
        self.core = core
        self.max_connections_per_address = max_connections_per_address
        self.connection_rate = connection_rate
        # Where a connection comes from, as the relay believes it: the peer's address; a test or
        # a benchmark on loopback may stand in other addresses for some of its sockets.
        self.address_of = address_of
        self._per_address: dict[str, int] = {}
        self._connection_buckets = RateLimiter()
        self.refused_connections = 0
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.max_queued_bytes_per_device = max_queued_bytes_per_device
        self.addresses: list[tuple[str, int]] = []  # filled in by serve()
        self.dropped_pushes = 0
        self.batches = 0  # transactions committed for requests
        self.requests = 0  # requests handled in them
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        # For the next batch: a connection's request, or (None, job) a core call made for the server
        # itself (a connection's connect and disconnect records), handled in order with the rest.
        self._queue: list[_Queued] = []
        self._leading = False  # a reader has taken the lead of the next batch
        self._batch_done = trio.Event()  # set when the batch being led is committed
        # The store is in use by a batch (handled, then committing) or by retention: whoever
        # wants it next waits for _store_free.
        self._store_busy = False
        self._store_free: trio.Event | None = None
        # A durable store on a file: a batch's COMMIT only writes the WAL, and its fsync runs in a
        # worker thread (Store.defer_syncs) while the loop handles the next batch; its answers are
        # released after the fsync, in the order of the commits. (In memory, or not durable: no
        # fsync to wait for.)
        self.sync_in_thread = core.store.defer_syncs()
        self._released: trio.Event | None = None  # set once the last batch's answers are released
        self.disk_failed = False  # an fsync failed: every request is refused from then on
        self._unflushed: dict[int, _Connection] = {}  # connections with output queued since the last flush
        # The pump (run_pump, started by serve): one task reads every plain TCP connection, from an
        # epoll set of its own, and queues their requests; None when it is not running.
        self._epoll: select.epoll | None = None
        self._pumped: dict[int, _Connection] = {}  # by file descriptor
        self._pump_nursery: trio.Nursery | None = None
        self._leader_starting = False  # the pump has started a task to lead the next batch
        self._checkpointing = False  # a checkpoint beside the loop is under way
        self._next_checkpoint = -math.inf  # when the next may start (trio.current_time())

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes. Never raises (serve_listeners would stop)."""
        try:
            if len(self._connections) >= self.max_connections:
                await self._refuse(stream)
                return
            address = self.address_of(stream)
            # (the limits' view of it: an IPv6 address counts by its /64, relay.limits.address_key)
            host = address_key(address[0]) if address is not None else None
            if host is not None:
                refusal = self._address_refusal(host)
                if refusal is not None:
                    await self._refuse(stream, refusal)
                    return
                self._per_address[host] = self._per_address.get(host, 0) + 1
            ctx = ConnectionContext(next(self._ids), address)
            conn = _Connection(ctx, stream, self)
            self._connections[ctx.id] = conn
            try:
                # The connection record, in the next batch's transaction, before any request.
                self._queue.append((None, partial(self.core.connect, ctx)))
                await self._turn()
                failed = await self._read_loop(conn)
                if conn.write_error is not None:
                    raise conn.write_error
                # Let the writer send what is queued (an error frame, say).
                with trio.move_on_after(self.write_timeout):
                    while conn.unsent and not conn.write_failed:
                        await conn.wait_progress()
                if failed and not conn.write_failed:
                    await _linger(stream)
            finally:
                conn.closed = True
                if conn.refused > LOGGED_REFUSALS:
                    log.info(
                        "connection %d: closed; %d of its frames refused (unknown kind or field)",
                        ctx.id,
                        conn.refused,
                    )
                await conn.stop_writer()
                del self._connections[ctx.id]
                if host is not None:
                    left = self._per_address[host] - 1
                    if left:
                        self._per_address[host] = left
                    else:
                        del self._per_address[host]
                # The disconnect record, after whatever the connection queued (skipped: closed).
                self._queue.append((None, partial(self.core.disconnect, ctx)))
                with trio.CancelScope(shield=True):  # also when the server is being stopped
                    await self._turn()
        except Exception:
            log.exception("connection handler failed")
        finally:
            await trio.aclose_forcefully(stream)

    def _address_refusal(self, host: str) -> ErrorFrame | None:
        """Why a new connection from ``host`` is refused (its cap or its rate), or None."""
        cap = self.max_connections_per_address
        if cap is not None and self._per_address.get(host, 0) >= cap:
            return ErrorFrame(
                id=0,
                code=ErrorCode.SERVER_BUSY.value,
                message=f"your address{' (by its network, ' + host + ')' if ':' in host else ''} has this "
                f"relay's maximum of {cap} connections open; close one first",
                field="max_connections_per_address",  # the cap that refused it, as rate_limited names its
            )
        now = trio.current_time()
        wait = self._connection_buckets.wait("connection", host, self.connection_rate, now)
        if wait > 0:
            return ErrorFrame(
                id=0,
                code=ErrorCode.RATE_LIMITED.value,
                message=f"too many new connections from your address ({self.connection_rate}); retry in {wait:.3f} s",
                field="connection_rate",  # the limit that refused it, as the core's refusals name theirs
                retry_after_ms=max(1, math.ceil(wait * 1000)),
            )
        self._connection_buckets.take("connection", host, self.connection_rate, now)
        return None

    async def _refuse(self, stream: trio.abc.Stream, frame: ErrorFrame | None = None) -> None:
        self.refused_connections += 1
        if frame is None:
            log.warning("refusing a connection: %d connections already open", len(self._connections))
            frame = ErrorFrame(
                id=0,
                code=ErrorCode.SERVER_BUSY.value,
                message=f"the relay is serving its maximum of {self.max_connections} connections; retry later",
                field="max_connections",  # (not the address's own cap: closing one of its own will not help)
            )
        with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(encode(frame))

    async def _read_loop(self, conn: _Connection) -> bool:
        """Queue requests for the core until the peer closes (False) or must be cut off (True)."""
        decoder = FrameDecoder("relay", max_frame_size=self.core.max_frame_size)
        # One cancel scope for the connection's life; each complete frame moves its deadline on.
        # A writer that fails cancels it too (write_failed): then there is nobody to answer.
        with trio.CancelScope(deadline=trio.current_time() + self.read_timeout) as timer:
            conn.reader = timer
            if conn.write_failed:  # already, answering connect
                timer.cancel()
            if conn.fd >= 0 and self._epoll is not None:
                error = await self._pumped_requests(conn, decoder)
            else:
                error = await self._read_requests(conn, decoder, timer)
        if conn.write_failed:
            if conn.pending:  # handled (the batch is under way), never answered
                await self._turn()
            return False
        if timer.cancelled_caught and not conn.failed:  # (a failed request cancels it too)
            log.info("connection %d: no complete frame for %.1f s; closing", conn.ctx.id, self.read_timeout)
            error = ErrorFrame(
                id=0,
                code=ErrorCode.TIMEOUT.value,
                message=f"no complete frame for {self.read_timeout} s; send ping to stay connected",
            )
        if conn.pending:  # the answers to what was read come before any error frame
            await self._turn()
        if conn.failed:  # internal_error is queued already
            return True
        if error is not None:
            conn.queue(encode(error))
            conn.flush()
            return True
        return False

    async def _read_requests(
        self, conn: _Connection, decoder: FrameDecoder, timer: trio.CancelScope
    ) -> ErrorFrame | None:
        """Read and queue requests; returns at the peer's end (None) or with a framing error."""
        queue = self._queue
        frame_size = self.core.max_frame_size
        fd, wait_readable = conn.fd, trio.lowlevel.wait_readable
        read_timeout = self.read_timeout
        limit = max(self.max_queued_bytes_per_device, frame_size)
        drained = False  # the last read took less than it asked for: the socket was empty then
        while True:
            queued = 0
            while True:
                frame: object  # (a Frame, NEED_DATA or CLOSED, or a _Refused)
                try:
                    frame = decoder.next_frame()
                except RemoteProtocolError as e:
                    if e.code not in RESUMABLE_CODES:
                        log.info(
                            "connection %d: %s (%s); closing", conn.ctx.id, for_log(e.message), e.code.value
                        )
                        return ErrorFrame.from_exception(e)
                    frame = _refusal(conn, e)
                except Exception:  # a bug of the decoder's, met on this connection's bytes: its alone
                    log.exception("connection %d: decoding failed; closing", conn.ctx.id)
                    return _internal_error(0)
                if frame is NEED_DATA:
                    break
                if frame is CLOSED:
                    return None
                assert isinstance(frame, _ANSWERED)  # a "relay" decoder only yields requests
                # Back-pressure: take the request only if its answer still fits beside what is
                # unsent and what the requests already taken may answer.
                answer = frame_size if frame.kind in _LARGE_ANSWERS else _SMALL_ANSWER
                if conn.unsent + conn.reserved + answer > limit:
                    if await self._make_room(conn, limit - answer):
                        return None
                    queued = 0
                queue.append((conn, frame))
                conn.pending += 1
                conn.reserved += answer
                queued += 1
                if queued == _FRAMES_PER_TURN:  # a long pipeline: let others in between
                    if await self._wait_for_answers(conn):
                        return None
                    queued = 0
            if queued:
                now = trio.current_time()
                if timer.deadline < now + read_timeout:  # it would fall due early: move it on
                    timer.deadline = now + read_timeout * _DEADLINE_SLACK
                # With a batch being gathered, its leader handles these too (it takes the whole
                # queue, in order) and writes their answers: read on. Otherwise lead one.
                if not self._leading and await self._wait_for_answers(conn):
                    return None
            if fd >= 0:
                # A plain TCP socket (non-blocking, as trio made it): read its descriptor, and wait
                # only when there is nothing to read. What SocketStream.receive_some does, without
                # its layers of wrappers (a few µs a read, and ~1 KiB of frames per idle connection).
                # When the last read drained the socket (it took less than it asked for), the next
                # one would most likely find nothing (a device waits for the answer before it sends
                # again): wait first, and save a failed read (a system call and an exception) per
                # request. epoll is level-triggered: what arrived since is reported at once.
                if drained:
                    try:
                        await wait_readable(fd)
                    except trio.ClosedResourceError:
                        return None
                try:
                    got: bytes | None = os.read(fd, _RECEIVE_SIZE)
                except BlockingIOError:
                    got = None  # wait outside the handler: an exception held while suspended costs memory
                except OSError:  # reset by the peer, say: as receive_some's BrokenResourceError
                    return None
                if got is None:
                    drained = False
                    try:
                        await wait_readable(fd)
                    except trio.ClosedResourceError:
                        return None
                else:
                    drained = len(got) < _RECEIVE_SIZE
                    decoder.receive_data(got)
                continue
            try:
                data = await conn.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            # TLS streams return a bytearray (trio's type says bytes | bytearray); bytes() of
            # bytes, what a TCP socket returns, is the same object, not a copy.
            decoder.receive_data(bytes(data))

    async def _pumped_requests(self, conn: _Connection, decoder: FrameDecoder) -> ErrorFrame | None:
        """What :meth:`_read_requests` does, for a plain TCP connection read by the pump: the handler
        task waits until the peer's end (None) or a framing error, and meanwhile only when one of
        its requests does not fit beside its unsent output (back-pressure): then it waits for room
        and hands the request back. Cancelled (the read deadline, a failed write, a failed
        request), it stops the pump reading the connection."""
        epoll = self._epoll
        assert epoll is not None
        fd = conn.fd
        conn.decoder = decoder
        self._pumped[fd] = conn
        limit = max(self.max_queued_bytes_per_device, self.core.max_frame_size)

        def abort(_: object) -> trio.lowlevel.Abort:
            conn.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            epoll.register(fd, select.EPOLLIN)
            while True:
                if conn.held is None and not conn.ended:
                    conn.task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(abort)
                    continue
                if conn.ended:
                    return conn.end_error
                request, conn.held = conn.held, None
                assert request is not None
                answer = self._answer_size(request)
                if await self._make_room(conn, limit - answer):
                    return None
                self._queue.append((conn, request))
                conn.pending += 1
                conn.reserved += answer
                self._take_frames(conn, limit)
                if conn.held is None and not conn.ended:
                    with contextlib.suppress(OSError, ValueError):  # (ValueError: the pump has stopped)
                        epoll.register(fd, select.EPOLLIN)  # the pump reads it again
                if not self._leading and await self._wait_for_answers(conn):
                    return None
        finally:
            conn.task = None
            del self._pumped[fd]
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(fd)

    def _answer_size(self, request: Request | _Refused) -> int:
        return self.core.max_frame_size if request.kind in _LARGE_ANSWERS else _SMALL_ANSWER

    def _take_frames(self, conn: _Connection, limit: int) -> int:
        """Queue the requests complete in ``conn``'s decoder (the pump's work for one connection);
        how many. Stops at the peer's end or a framing error (``conn.ended``), or at a request
        whose answer does not fit (``conn.held``, for the handler task); either way the pump stops
        reading the connection."""
        decoder = conn.decoder
        assert decoder is not None
        queue = self._queue
        frame_size = self.core.max_frame_size
        queued = 0
        while True:
            frame: object  # (a Frame, NEED_DATA or CLOSED, or a _Refused)
            try:
                frame = decoder.next_frame()
            except RemoteProtocolError as e:
                if e.code not in RESUMABLE_CODES:
                    log.info("connection %d: %s (%s); closing", conn.ctx.id, for_log(e.message), e.code.value)
                    self._stop_pumping(conn, ErrorFrame.from_exception(e))
                    return queued
                frame = _refusal(conn, e)
            except Exception:  # a bug of the decoder's: this connection stops, the pump goes on
                log.exception("connection %d: decoding failed; closing", conn.ctx.id)
                self._stop_pumping(conn, _internal_error(0))
                return queued
            if frame is NEED_DATA:
                return queued
            if frame is CLOSED:
                self._stop_pumping(conn, None)
                return queued
            assert isinstance(frame, _ANSWERED)  # a "relay" decoder only yields requests
            answer = frame_size if frame.kind in _LARGE_ANSWERS else _SMALL_ANSWER
            if conn.unsent + conn.reserved + answer > limit:
                conn.held = frame
                self._stop_pumping(conn)
                return queued
            queue.append((conn, frame))
            conn.pending += 1
            conn.reserved += answer
            queued += 1

    def _stop_pumping(self, conn: _Connection, error: ErrorFrame | None = None) -> None:
        """The pump reads ``conn`` no more (for now, if it holds a request back); its handler is woken."""
        if conn.held is None:
            conn.ended, conn.end_error = True, error
        if self._epoll is not None:
            # Out of the set, not merely without EPOLLIN: epoll reports a hang-up whatever the
            # events asked for, and a level-triggered one would wake the pump on every pass.
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(conn.fd)
        conn.wake()

    async def run_pump(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every plain TCP connection from one task (``serve`` runs it): wait until any of them
        is readable, read each readable one once, queue the requests, and start a task to lead the
        next batch if none does. Per request this saves a task's wake-up to read it, another to
        wait for its answers, and an ``epoll_ctl`` (trio re-arms a descriptor for every wait),
        and a connection costs no more: its handler task waits, as it did, for its end."""
        epoll = select.epoll()
        pumped, queue = self._pumped, self._queue
        wait_readable, read = trio.lowlevel.wait_readable, os.read
        read_timeout = self.read_timeout
        limit = max(self.max_queued_bytes_per_device, self.core.max_frame_size)
        try:
            async with trio.open_nursery() as nursery:
                self._epoll, self._pump_nursery = epoll, nursery
                task_status.started()
                while True:
                    await wait_readable(epoll.fileno())
                    taken = []
                    for fd, _events in epoll.poll(0):
                        conn = pumped.get(fd)
                        if conn is None or conn.ended or conn.held is not None:
                            continue
                        try:
                            got = read(fd, _RECEIVE_SIZE)
                        except BlockingIOError:
                            continue
                        except OSError:  # reset by the peer, say: as receive_some's BrokenResourceError
                            self._stop_pumping(conn)
                            continue
                        conn.decoder.receive_data(got)  # type: ignore[union-attr]  # (set when pumped)
                        if self._take_frames(conn, limit):
                            taken.append(conn)
                    if taken:
                        now = trio.current_time()
                        for conn in taken:
                            timer = conn.reader
                            if timer is not None and timer.deadline < now + read_timeout:
                                timer.deadline = now + read_timeout * _DEADLINE_SLACK
                    if queue and not self._leading and not self._leader_starting:
                        self._leader_starting = True
                        nursery.start_soon(self._lead)
        finally:
            self._epoll = self._pump_nursery = None
            epoll.close()

    async def _lead(self) -> None:
        """A batch for what the pump queued (see :meth:`_turn`)."""
        self._leader_starting = False
        try:
            await self._turn()
        except Exception:
            log.exception("a batch failed")

    async def _wait_for_answers(self, conn: _Connection) -> bool:
        """Until this connection's queued requests are handled and committed, and its unsent
        bytes are within bounds. True if the core failed on one of them (stop reading)."""
        await self._turn()
        while conn.unsent > self.max_queued_bytes_per_device:
            await conn.wait_progress()
        return conn.failed

    async def _make_room(self, conn: _Connection, room: int) -> bool:
        """Until this connection's requests are answered and at most ``room`` bytes of its output
        are unsent. True if the core failed on one of them (stop reading)."""
        await self._turn()
        while conn.unsent > room:
            await conn.wait_progress()
        return conn.failed

    async def _turn(self) -> None:
        """Return once every request queued so far is handled, committed and durable, and its
        answers released."""
        if self._leading:
            await self._batch_done.wait()  # the leader handles the whole queue
            return
        self._leading = True
        queue = self._queue
        # Shielded: others wait on this batch, so it is led to the end even if this task is
        # cancelled (the cancellation is delivered afterwards).
        with trio.CancelScope(shield=True):
            try:
                if not self._store_busy:
                    # Everyone else with a request ready queues it now. A reader whose data had
                    # already arrived queues its request a scheduling round after it was woken,
                    # so wait while the queue still grows (a few rounds at most).
                    for _ in range(_GATHER_ROUNDS):
                        before = len(queue)
                        await trio.sleep(0)
                        if len(queue) == before or len(queue) >= MAX_BATCH:
                            break
                # (If the previous batch holds the store, what arrives meanwhile joins this one.)
                await self._acquire_store()
            finally:
                # From here on, what is queued is the next batch's, led by whoever queues it.
                done = self._batch_done
                self._leading = False
                self._batch_done = trio.Event()
                items = queue[:]
                queue.clear()
                previous, released = self._released, trio.Event()
                self._released = released
            try:
                try:
                    # As few commits as MAX_BATCH allows, of even sizes (not 256 + 2).
                    size = -(-len(items) // -(-len(items) // MAX_BATCH)) if items else 1
                    batches = [items[i : i + size] for i in range(0, len(items), size)]
                    results = [self._commit_batch(batch) for batch in batches]
                finally:
                    self._release_store()  # the next batch may be handled now
                if self.sync_in_thread and items:
                    try:
                        await trio.to_thread.run_sync(self.core.store.sync)
                    except OSError:
                        # Committed, but perhaps not on disk; and after a failed fsync a later
                        # one may succeed without the lost pages (the kernel may have dropped
                        # them): acknowledge nothing of it, nor anything from now on.
                        log.critical(
                            "fsync of the relay's database failed; acknowledging nothing more", exc_info=True
                        )
                        self.disk_failed = True
                        results = [self._refuse_batch(batch) for batch in batches]
                if previous is not None:
                    await previous.wait()  # answers in the order of the commits
                for batch, outputs in zip(batches, results, strict=True):
                    self._release(batch, outputs)
                self._flush()  # one write per connection
                if self.sync_in_thread:
                    self._checkpoint_beside()
            finally:
                released.set()
                done.set()

    def _checkpoint_beside(self) -> None:
        """Every ``_CHECKPOINT_INTERVAL`` seconds, a checkpoint of the WAL in a worker thread
        (:meth:`Store.checkpoint_beside`) while the loop goes on: without it, a COMMIT in the loop's
        thread would copy the WAL's pages into the main file and fsync it every 1,000 pages (~4 MB,
        a few hundred envelopes), the loop waiting. It runs in the pump's nursery; without the pump
        the store's own COMMIT checkpoints (past ``_FALLBACK_CHECKPOINT_PAGES``)."""
        nursery = self._pump_nursery
        now = trio.current_time()
        if nursery is None or self._checkpointing or now < self._next_checkpoint:
            return
        try:
            nursery.start_soon(self._run_checkpoint)
        except RuntimeError:  # closed: the server is stopping (its last batches run shielded)
            return
        self._checkpointing = True
        self._next_checkpoint = now + _CHECKPOINT_INTERVAL

    async def _run_checkpoint(self) -> None:
        try:
            await trio.to_thread.run_sync(self.core.store.checkpoint_beside)
        except Exception:  # (the store's own COMMIT checkpoints past its fallback)
            log.exception("checkpoint of the relay's database failed")
        finally:
            self._checkpointing = False

    async def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (a synchronous call that may use the core and its store: an operator's order)
        between batches, when no batch is using the store."""
        await self._acquire_store()
        try:
            return fn()
        finally:
            self._release_store()

    async def _acquire_store(self) -> None:
        while self._store_busy:
            if self._store_free is None:
                self._store_free = trio.Event()
            await self._store_free.wait()
        self._store_busy = True

    def _release_store(self) -> None:
        self._store_busy = False
        if self._store_free is not None:
            self._store_free.set()
            self._store_free = None

    def _commit_batch(self, batch: list[_Queued]) -> list[Sequence[Output]]:
        """Handle ``batch`` in one transaction (the caller holds the store); its outputs, to be
        released once it is durable (:meth:`_release`)."""
        if self.disk_failed:
            return self._refuse_batch(batch)
        results: list[Sequence[Output]] = []
        store = self.core.store
        try:
            if self.sync_in_thread:
                store.begin_group()
                try:
                    self._handle_batch(batch, results)
                except BaseException:
                    store.abort_group()
                    raise
                store.commit_group()  # written, not yet synced: the caller syncs
            else:
                with store.transaction():  # the core's own transactions nest as savepoints
                    self._handle_batch(batch, results)
        except Exception:
            # Nothing of the batch is durable, so nothing of it may be acknowledged; nor may it
            # stay in the core's memory (a key logged, a block) when it is not in the store.
            log.exception("committing a batch of %d requests failed", len(batch))
            self.core.reload()
            return self._refuse_batch(batch)
        return results

    def _refuse_batch(self, batch: list[_Queued]) -> list[Sequence[Output]]:
        """``internal_error`` to every request of a batch that is not durable; their connections stop."""
        results: list[Sequence[Output]] = []
        for conn, request in batch:
            if isinstance(request, _ANSWERED) and conn is not None and not (conn.closed or conn.failed):
                self._fail(conn)
                results.append([Reply(conn.ctx.id, _internal_error(request.id))])
        return results

    def _release(self, batch: list[_Queued], results: list[Sequence[Output]]) -> None:
        """The batch is durable: count its requests answered, and queue its answers and pushes."""
        self.batches += 1
        self.requests += len(batch)
        frame_size = self.core.max_frame_size
        for conn, request in batch:
            if conn is not None and isinstance(request, _ANSWERED):
                conn.pending -= 1
                conn.reserved -= frame_size if request.kind in _LARGE_ANSWERS else _SMALL_ANSWER
        for outputs in results:
            self._dispatch(outputs)

    def _handle_batch(self, batch: list[_Queued], results: list[Sequence[Output]]) -> None:
        """Each request of ``batch`` through the core (each its own savepoint), in order."""
        handle = self.core.handle
        for conn, request in batch:
            if type(request) is _Refused:
                if conn is not None and not conn.closed and not conn.failed:
                    results.append([Reply(conn.ctx.id, request.error)])
                continue
            if conn is None or not isinstance(request, Request):  # a job of the server's own
                try:
                    results.append(request())  # type: ignore[operator]  # (a job, not a request)
                except Exception:
                    log.exception("the core failed on %r", request)
                continue
            if conn.closed or conn.failed:
                continue
            try:
                results.append(handle(conn.ctx, request))
            except Exception:
                log.exception("connection %d: the core failed on a %s request", conn.ctx.id, request.kind)
                self._fail(conn)
                results.append([Reply(conn.ctx.id, _internal_error(request.id))])

    @staticmethod
    def _fail(conn: _Connection) -> None:
        """The core failed on one of ``conn``'s requests: answer it no more, and stop its reader
        (which may be waiting to read, its requests having been taken by another's batch)."""
        conn.failed = True
        if conn.reader is not None:
            conn.reader.cancel()

    async def _write_loop(self, conn: _Connection, scope: trio.CancelScope) -> None:
        """Send the outbox, in one ``send_all`` each time, until it is empty (the writer task's
        work; ``_Connection.run_writer`` runs it and deals with how it ends)."""
        with scope:
            while conn.outbox and not conn.closed:
                data = b"".join(conn.outbox)  # everything pending, one write
                conn.outbox.clear()
                conn.in_flight, conn.outbox_bytes = len(data), 0
                scope.deadline = trio.current_time() + self.write_timeout
                await conn.stream.send_all(data)
                conn.in_flight = 0
                conn.progressed()
        if scope.cancelled_caught and not conn.closed:
            log.info("connection %d: write failed (TooSlowError); closing", conn.ctx.id)
            conn.write_failed = True

    def _dispatch(self, outputs: Sequence[Output]) -> None:
        for output in outputs:
            if type(output) is Reply:
                conn = self._connections.get(output.connection)
                if conn is not None:
                    conn.queue(encode(output.frame))
                    self._unflushed[conn.ctx.id] = conn
            elif type(output) is Push:
                target = self._connections.get(output.connection)
                if target is None:
                    continue
                data = encode(output.frame)
                if target.unsent + len(data) > self.max_queued_bytes_per_device:
                    # Still queued in the store; the device gets it with its next receive.
                    self.dropped_pushes += 1
                    continue
                target.queue(data)
                self._unflushed[target.ctx.id] = target
            # MetadataRecords are already in the store, as the policy allowed.

    def _flush(self) -> None:
        """Send what :meth:`_dispatch` queued (see :meth:`_Connection.flush`)."""
        for conn in self._unflushed.values():
            conn.flush()
        self._unflushed.clear()

    async def retention_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            # The store is the batches' while one is handled or committing: wait for it.
            await self._acquire_store()
            try:
                deleted = self.core.expire()
                await trio.to_thread.run_sync(self.core.store.checkpoint)
            except Exception:
                # A sweep that fails (a disk error, a bug) is said, at each sweep it fails, and the relay
                # serves on: one failed sweep stopped every connection (it raised out of serve's nursery).
                # The expiry's transaction is undone whole; the next sweep tries again.
                log.exception("retention sweep failed; serving on, the next sweep tries again")
                continue
            finally:
                self._release_store()
            if deleted:
                log.info("retention: deleted %d metadata records", deleted)


class CannotListen(OSError):
    """:func:`serve` could not listen on its host and port (the port in use, the host not an address
    of this machine, a port below 1024 without the right): the OSError it got, with both named."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.host, self.port = host, port

    def __str__(self) -> str:
        if self.errno == errno.EADDRINUSE:
            return (
                f"--port {self.port}: cannot serve on {self.host} port {self.port}: it is in use (another "
                "relay or program listens there); give another --port, or --port 0 to take a free one"
            )
        return f"--host {self.host} --port {self.port}: cannot serve there: {self.strerror}"


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """trio's listeners on (host, port), or :class:`CannotListen` naming both."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as e:
        raise CannotListen(host, port, e) from e


async def serve(
    core: RelayCore,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ssl_context: ssl.SSLContext | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_queued_bytes_per_device: int = DEFAULT_MAX_QUEUED_BYTES,
    retention_interval: float = DEFAULT_RETENTION_INTERVAL,
    max_connections_per_address: int | None = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    connection_rate: Rate | None = DEFAULT_CONNECTION_RATE,
    address_of: Callable[[trio.abc.Stream], tuple[str, int] | None] = peer_address,
    listeners: Sequence[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[RelayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on (host, port) and serve until cancelled. Port 0 picks a free port.

    Use ``server = await nursery.start(serve, core, host, 0)``: it reports the
    :class:`RelayServer` (with ``.addresses``) only once it is listening. ``listeners``, from
    :func:`open_listeners`, are served instead of opening (host, port) here.
    """
    server = RelayServer(
        core,
        read_timeout=read_timeout,
        write_timeout=write_timeout,
        max_connections=max_connections,
        max_queued_bytes_per_device=max_queued_bytes_per_device,
        max_connections_per_address=max_connections_per_address,
        connection_rate=connection_rate,
        address_of=address_of,
    )
    tcp = list(listeners) if listeners is not None else await open_listeners(host, port)
    server.addresses = [(str(a[0]), int(a[1])) for a in (lst.socket.getsockname() for lst in tcp)]
    served: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
    if ssl_context is not None:
        served = [trio.SSLListener(lst, ssl_context, https_compatible=False) for lst in tcp]
    async with trio.open_nursery() as nursery:
        if hasattr(select, "epoll"):  # Linux; elsewhere each connection's task reads it, as TLS ones are
            await nursery.start(server.run_pump)
        await nursery.start(trio.serve_listeners, server.handle_stream, served)
        nursery.start_soon(server.retention_loop, retention_interval)
        for h, p in server.addresses:
            log.info("relay listening on %s:%d%s", h, p, " (TLS)" if ssl_context else "")
        task_status.started(server)


# --- command line ----------------------------------------------------------------------------


def _rate(text: str) -> Rate | None:
    """A rate option's type: ``RATE/BURST`` in ASCII digits (a point and an exponent), or off. Each
    part was read by float(): "١٠/١٠٠" (Arabic-Indic digits), "1_0/20" and " 5/10" were rates."""
    rate, sep, burst = text.partition("/")
    # (what float() takes and no operator means; "inf" and "nan" are refused by parse_rate's range)
    if sep and any(not p.isascii() or "_" in p or p != p.strip() for p in (rate, burst)):
        raise argparse.ArgumentTypeError(
            f"{quoted(text)} is not a rate: expected RATE/BURST in digits 0-9 (a point, an exponent), "
            "requests a second then the burst (e.g. 20/200), or off"
        )
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# (--help states it, as _state_bounds does every number option's bounds; the error said them, --help did not)
_rate.bounds = (  # type: ignore[attr-defined]
    f"rate from {MIN_PER_SECOND:.6f} to {MAX_PER_SECOND:,.0f} a second, burst from 1 to {MAX_BURST:,.0f}, or off"
)


def _rate_text(rate: Rate | None) -> str:
    return "off" if rate is None else f"{rate.per_second:g}/{rate.burst:g}"


# A number option is written in ASCII digits (a point and an exponent for seconds): int() and float()
# also take other scripts' digits, underscores, blanks around, "nan" and "inf", none of which an
# operator means. At most 30 digits: every bound below is far smaller, and int() of a long word is slow.
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]{1,30}")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,4})?")
# The largest queue cap: what SQLite's integers hold (the store counts queued envelopes and bytes).
MAX_CAP: Final = 2**63 - 1
# The longest --read-timeout and --write-timeout: a day (a connection silent, or not reading, for longer
# is gone).
MAX_READ_TIMEOUT: Final = 86_400.0


def _cap(text: str) -> int | None:
    if text.strip().lower() == "off":
        return None
    value = int(text) if _WHOLE_TEXT.fullmatch(text) else 0
    if not 1 <= value <= MAX_CAP:
        raise argparse.ArgumentTypeError(
            f"{quoted(text)} is not a whole number from 1 to 2**63 - 1 (digits 0-9), or off"
        )
    return value


def _whole(minimum: int, maximum: int, what: str) -> Callable[[str], int]:
    """An option's type: a whole number from ``minimum`` to ``maximum``, else a usage error."""

    def parse(text: str) -> int:
        if not _WHOLE_TEXT.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number in digits 0-9 ({what})")
        value = int(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {what}")
        return value

    parse.__name__ = parse.__qualname__ = "_whole"
    parse.bounds = f"from {minimum:,} to {maximum:,}"  # type: ignore[attr-defined]  # (_state_bounds)
    return parse


def _path(expected: str) -> Callable[[str], str]:
    """An argparse type for a path: not empty (nor only blanks). An empty word (``--admin "$SOCK"``
    with SOCK unset) was taken as the option left out (no admin socket, no registration token: open
    registration, no TLS), or for --db as SQLite's private temporary database, deleted on close: a
    relay on it would keep nothing it promised was durable."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r} (an empty shell variable?)")
        return text

    return parse


_db_file = _path("the database file's path")
_cap.bounds = f"from 1 to {MAX_CAP:,}, or off"  # type: ignore[attr-defined]  # (_state_bounds)


def _seconds(text: str) -> float:
    if not _DECIMAL_TEXT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a number of seconds (digits 0-9, a point)")
    value = float(text)
    if not _in_seconds_bounds(value):
        raise argparse.ArgumentTypeError(f"{quoted(text)}: {_SECONDS_EXPECTED}")
    return value


_SECONDS_EXPECTED: Final = f"expected a positive number of seconds, at most {MAX_READ_TIMEOUT:g} (a day)"


def _in_seconds_bounds(value: float) -> bool:
    # (an int compared as it is: math.isfinite of one past a float's range raises OverflowError)
    return (type(value) is int or math.isfinite(value)) and 0 < value <= MAX_READ_TIMEOUT


def check_seconds(name: str, value: object) -> None:
    """Refuse a read or a write timeout given to :class:`RelayServer` (or :func:`serve`) out of the bounds
    --read-timeout and --write-timeout keep, in their words (ValueError; TypeError for no number, a bool
    too): more than 0 seconds, at most a day, not NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number of seconds, got {type(value).__name__} {quoted(value)}")
    if not _in_seconds_bounds(value):
        raise ValueError(f"{name} {quoted(value)}: {_SECONDS_EXPECTED}")


_seconds.bounds = f"more than 0, at most {MAX_READ_TIMEOUT:,.0f}"  # type: ignore[attr-defined]


def _state_bounds(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with each number option's help ending in its bounds (``; from 0 to 65,535``), read
    from its type's ``bounds``, so that --help and the error for a value past them cannot drift apart
    (only the error said most of them). As sims.numbers.state_bounds does for the other commands."""
    for action in parser._actions:
        bounds = getattr(action.type, "bounds", None)
        if (
            isinstance(bounds, str)
            and action.help is not argparse.SUPPRESS
            and bounds not in (action.help or "")
        ):
            action.help = f"{action.help}; {bounds}" if action.help else bounds
    return parser


# The smallest frame this relay will serve with: room for a request's fields beside a body, and for
# a bundle with a few devices' ML-KEM-1024 keys (1,568 bytes each); the largest the 4-byte length says.
MIN_FRAME_SIZE: Final = 16 * 1024
MAX_FRAME_SIZE: Final = 2**32 - 1


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # one label of a host name (RFC 1123, 2.1)


def _host(text: str) -> str:
    """``--host``'s type: an IP address (``127.0.0.1``, ``::1``, ``0.0.0.0``) or a host name
    (``localhost``, ``relay.example.org``: labels of letters, digits and '-'). Anything else was
    refused as "not a loopback address and there is no --tls-cert/--tls-key" (give TLS, it said, to a
    host that was no address at all: ``--host ''``, ``[::1]``, ``127.0.0.1:7465``, ``999.1.1.1``), or
    with --insecure "cannot serve there: Name or service not known"."""
    shown = quoted(text)
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected an IP address or a host name, got {shown} (an empty shell variable?)"
        )
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        scope = getattr(address, "scope_id", None)  # (fe80::1%eth0: the interface a link-local one is on)
        if scope is not None and not address.is_link_local:
            # A zone is given effect only on a link-local address (fe80::/10): getaddrinfo refused
            # "::1%lo" as "Name or service not known" (lo is an interface here), and took "::1%1" and
            # "fd00::2%eth0"'s index only to drop it, listening on the address alone.
            unzoned = text.partition("%")[0]
            raise argparse.ArgumentTypeError(
                f"{shown}: the part after '%' (a zone) names the interface of a link-local address "
                f"(fe80::/10) only; {unzoned} is not one: give --host {unzoned}"
            )
        if scope is not None and not _is_interface(scope):
            raise argparse.ArgumentTypeError(
                f"{shown}: no network interface {scope!r} on this machine (the part after '%' names the "
                f"interface of a link-local address); interfaces here: {_listed(_interfaces())}"
            )
        return text
    name = text.removesuffix(".")
    if re.fullmatch(r"[0-9.]+", name):
        raise argparse.ArgumentTypeError(
            f"expected an IP address or a host name, got {shown}: not an IPv4 address (four numbers from 0 "
            "to 255, separated by dots)"
        )
    if len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return text
    hint = ""
    if text.startswith("[") and text.endswith("]"):
        hint = f"; an IPv6 address is given without brackets: --host {text[1:-1]}"
    elif ":" in text and text.rpartition(":")[2].isdigit():
        hint = "; the port is --port's"
    raise argparse.ArgumentTypeError(
        f"expected an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name (localhost, relay.example.org), "
        f"got {shown}{hint}"
    )


def _interfaces() -> list[str]:
    """The names of this machine's network interfaces (none where the system cannot list them)."""
    try:
        return [name for _index, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return []


def _listed(names: list[str], most: int = 12) -> str:
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f", … ({len(names)} in all)" if len(names) > most else "")


def _is_interface(scope: str) -> bool:
    """Whether ``scope`` (an IPv6 address's zone: a name or an index) is an interface of this machine.
    Where the system cannot say, it is taken: listening there says what is wrong."""
    try:
        names = socket.if_nameindex()
    except (OSError, AttributeError):
        return True
    return any(scope in (name, str(index)) for index, name in names)


MAX_TOKEN_FILE = 64 * 1024  # bytes read of --registration-token-file: more is no token (64 bytes at most)


def _read_token_file(path: str) -> bytes:
    """The bytes of ``--registration-token-file`` (up to MAX_TOKEN_FILE + 1). A named pipe (FIFO) is
    opened without waiting: one nothing writes to is an OSError saying so (a plain open waited for a
    writer for ever, the relay neither serving nor saying why); one with a writer (``<(pass show
    relay/token)``) is read as a file. A file of gigabytes was read whole into memory."""
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        first = b""
        if nonblock and stat.S_ISFIFO(os.fstat(fd).st_mode):
            try:
                first = os.read(fd, MAX_TOKEN_FILE + 1)
            except BlockingIOError:  # a writer, nothing written yet: wait for it, as for a file
                pass
            else:
                if not first:  # end of file at once: no program holds the pipe open for writing
                    raise OSError(
                        errno.EPIPE,
                        "a pipe (FIFO) that nothing is writing to: start the program that writes the token first",
                    )
        if nonblock:
            os.set_blocking(fd, True)
        return first + f.read(MAX_TOKEN_FILE + 1 - len(first))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The files SQLite keeps beside a database (sqlite.org/tempfiles.html: the write-ahead log, its
# shared-memory index, the rollback journal): a socket made at one of them would be the store's.
_DATABASE_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")


def _is_a_database_file(path: str, db: str) -> bool:
    """Whether ``path`` (--admin) is ``db`` or one of the files SQLite keeps beside it, links
    resolved: SQLite opens a linked database at its target and keeps the -wal and -shm beside the
    target (its unix VFS resolves the links), so --admin TARGET-wal with --db LINK was taken."""
    own = {p + suffix for p in (os.path.abspath(db), os.path.realpath(db)) for suffix in _DATABASE_SUFFIXES}
    return bool({os.path.abspath(path), os.path.realpath(path)} & own)


def build_parser(prog: str = "relaysim relay serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the relay: it stores and forwards opaque end-to-end encrypted envelopes between "
            "registered devices and records the metadata it can see, as its profile allows "
            "(by default the signal profile: the least a relay can keep). It prints what it records "
            "at start-up. Every limit below has a default; docs/protocol.md (Limits) explains them."
        ),
        epilog=(
            "examples:\n"
            f"  {prog} --host 127.0.0.1 --port 7465 --db relay.db\n"
            f"  {prog} --host 0.0.0.0 --db relay.db --tls-cert cert.pem --tls-key key.pem   # your own PEM files\n"
            f"  {prog} --registration-token-file invite.txt --send-rate-account 5/50   # your own token in it\n\n"
            "A rate is RATE/BURST: requests a second on average, and how many at once (a token\n"
            "bucket), or off. An address other than loopback needs TLS (or --insecure).\n"
            "The server's trust-root public key (what devices need to check sender certificates) is\n"
            "logged at start-up. SIGINT or SIGTERM stop it cleanly."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        type=_host,
        default=DEFAULT_HOST,
        help="address to listen on: an IP address or a host name (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=_whole(0, 65535, "a TCP port is 0 to 65535"),
        default=DEFAULT_PORT,
        help="TCP port; 0 picks one (default: %(default)s)",
    )
    parser.add_argument(
        "--db",
        type=_db_file,
        default="relay.db",
        metavar="FILE",
        help="SQLite database file, created if absent; one relay at a time serves it, the second is "
        "refused (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        type=_path("the certificate file's path"),
        metavar="FILE",
        help="PEM certificate chain; with --tls-key, serve TLS (default: none: plain TCP, on a loopback "
        "address only unless --insecure)",
    )
    parser.add_argument(
        "--tls-key",
        type=_path("the key file's path"),
        metavar="FILE",
        help="PEM private key for --tls-cert (default: none)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve plain TCP on an address other than loopback (metadata and tokens in the clear)",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=DEFAULT_PROFILE,
        help="what the relay records and keeps, as a real provider's relay (default: %(default)s)",
    )
    parser.add_argument(
        "--retention",
        choices=sorted(POLICIES),
        default=None,
        help="override the profile's metadata retention policy (default: the profile's)",
    )
    parser.add_argument(
        "--read-timeout",
        type=_seconds,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help="seconds a connection may go without a complete frame (default: %(default)s)",
    )
    parser.add_argument(
        "--write-timeout",
        type=_seconds,
        default=DEFAULT_WRITE_TIMEOUT,
        metavar="SECONDS",
        help="seconds a connection may go taking nothing the relay writes to it (a device that stopped "
        "reading) before it is closed (default: %(default)s)",
    )
    g = parser.add_argument_group("limits (a rate, and a cap that says so, takes off to turn it off)")
    g.add_argument(
        "--max-connections",
        type=_whole(1, 2**31 - 1, "at least one connection"),
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="COUNT",
        help="concurrent connections (default: %(default)s)",
    )
    g.add_argument(
        "--max-connections-per-address",
        type=_cap,
        default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        metavar="COUNT",
        help="concurrent connections from one address, or off (default: %(default)s)",
    )
    g.add_argument(
        "--connection-rate",
        type=_rate,
        default=DEFAULT_CONNECTION_RATE,
        metavar="RATE/BURST",
        help=f"new connections per address (default: {_rate_text(DEFAULT_CONNECTION_RATE)})",
    )
    g.add_argument(
        "--max-queued-bytes",
        type=_whole(1, 2**62, "at least one byte"),
        default=DEFAULT_MAX_QUEUED_BYTES,
        metavar="BYTES",
        help="unsent bytes per connection: past it, its requests are not read and pushes to it are "
        "dropped (default: %(default)s)",
    )
    g.add_argument(
        "--max-frame-size",
        type=_whole(MIN_FRAME_SIZE, MAX_FRAME_SIZE, f"a frame is {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE} bytes"),
        default=DEFAULT_MAX_FRAME_SIZE,
        metavar="BYTES",
        help="largest frame accepted, in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-simulation-keys",
        action="store_true",
        help=(
            "serve a database written by a seeded simulation (relaysim run): its server key, trust "
            "root and every device key are public, recomputable from the seed; refused without this"
        ),
    )
    d = DEFAULT_LIMITS
    g.add_argument(
        "--queue-envelopes",
        type=_cap,
        default=d.queue_envelopes,
        metavar="COUNT",
        help="envelopes waiting for one device; past it, recipient_queue_full (default: %(default)s)",
    )
    g.add_argument(
        "--queue-bytes",
        type=_cap,
        default=d.queue_bytes,
        metavar="BYTES",
        help="bytes of envelopes waiting for one device (default: %(default)s)",
    )
    for flag, name, what in (
        ("--send-rate-account", "send_per_account", "sends per sending account"),
        ("--send-rate-address", "send_per_address", "sends per source address"),
        ("--register-rate", "register_per_address", "new accounts per source address"),
        (
            "--fetch-rate-requester",
            "fetch_per_requester",
            "bundle fetches per requester (account or address)",
        ),
        (
            "--fetch-rate-target",
            "fetch_per_target",
            "bundle fetches with one-time prekeys per target account (past it: bundles without them)",
        ),
        (
            "--discover-rate-account",
            "discover_per_account",
            "names looked up with discover_contacts per account, a token a name",
        ),
        (
            "--key-rate-device",
            "keys_per_device",
            "key uploads per device (upload_prekeys, and a device registering itself again)",
        ),
        (
            "--ack-unknown-rate-account",
            "ack_unknown_per_account",
            "envelope ids acked that were not in the device's queue, per account, a token an id",
        ),
        (
            "--certificate-rate-account",
            "certificates_per_account",
            "sender certificates (get_sender_certificate) per account",
        ),
        (
            "--group-state-rate-address",
            "group_state_per_address",
            "group state fetches (get_group_state, which needs no login) per source address",
        ),
        (
            "--key-log-rate-address",
            "key_log_per_address",
            "key log reads (get_key_log_head, _consistency, _entries; no login needed) per source address",
        ),
        (
            "--login-rate-address",
            "logins_per_address",
            "logins (auth_challenge, each allowing one authenticate) per source address",
        ),
        (
            "--group-read-rate-account",
            "group_reads_per_account",
            "group member lists (get_group) per account, a token for every 32 members",
        ),
    ):
        g.add_argument(
            flag,
            dest=name,
            type=_rate,
            default=getattr(d, name),
            metavar="RATE/BURST",
            help=f"{what} (default: {_rate_text(getattr(d, name))})",
        )
    g.add_argument(
        "--prekeys-low",
        type=_whole(0, 10_000, "one-time prekeys from 0, never told, to 10,000"),
        default=d.prekeys_low,
        metavar="COUNT",
        help="tell a device with fewer one-time prekeys than this to upload more (default: %(default)s)",
    )
    r = parser.add_argument_group("registration proof (what a new account must show)")
    r.add_argument(
        "--registration-pow",
        type=_whole(0, 32, "bits from 0 to 32"),
        default=DEFAULT_REGISTRATION_POW,
        metavar="BITS",
        help="hashcash: SHA-256 of the account's stamp must start with BITS zero bits, 2^BITS tries on "
        "average (default: %(default)s: 262,144 tries); 0 for none",
    )
    r.add_argument(
        "--registration-token-file",
        type=_path("the token file's path"),
        metavar="FILE",
        help="instead of hashcash, the operator's registration token (the file's bytes, stripped) "
        "(default: none: hashcash, --registration-pow)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe log lines written to stderr (default: %(default)s)",
    )
    _add_profile_options(parser)
    return _state_bounds(parser)


# --- --profile and --admin: the provider the relay runs, and its operator's socket ---------------


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile-as-of",
        metavar="YYYY-MM-DD",
        help="with --profile, the provider as it was on that day (relay.profiles.profile_as_of) "
        "(default: the provider as it is today)",
    )
    parser.add_argument(
        "--admin",
        type=_path("the admin socket's path"),
        metavar="PATH",
        help="listen for the operator's orders (taps, preservations) on a Unix socket at PATH, mode 0600 "
        "(relay/admin.py) (default: none: no orders can be given while it runs)",
    )


def describe_recording(profile: Profile, policy: RetentionPolicy) -> list[str]:
    """What the relay will record, one line per kind of observation (and what it keeps)."""
    lines = [f"profile {profile.name}: {profile.title}; retention policy {policy.name}"]
    if not policy.rules:
        lines.append("  records no metadata")
    for kind, rule in sorted(policy.rules.items()):
        how = f"keeps the {rule.keep} per {', '.join(rule.key)}" if rule.keep != "all" else "keeps each"
        span = f", for {rule.keep_for:g} s" if rule.keep_for is not None else ""
        lines.append(f"  {kind.value}: {how}: {', '.join(sorted(rule.fields))}{span}")
    kept = [
        n
        for n, on in (
            ("message bodies after delivery", profile.keep_delivered),
            ("address books", profile.keep_contacts),
            ("block lists", profile.keep_blocks),
        )
        if on
    ]
    lines.append(f"  also keeps: {', '.join(kept) if kept else 'nothing else'}")
    return lines


# The largest --tls-cert or --tls-key file read: a PEM chain of a few certificates is a few KB, a key
# less; a file past a megabyte is not one (OpenSSL would read all of it, a log or a disk image).
MAX_TLS_FILE: Final = 1024 * 1024


# The first line of a PEM certificate and of a PEM private key (RFC 7468: "CERTIFICATE", and
# "PRIVATE KEY", "ENCRYPTED PRIVATE KEY" or OpenSSL's older "RSA PRIVATE KEY", "EC PRIVATE KEY").
_PEM_CERTIFICATE: Final = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----")
_PEM_PRIVATE_KEY: Final = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


class _TlsFileError(Exception):
    """A --tls-cert or --tls-key file that is no PEM file to read; the message says why."""


def _read_tls_file(path: str) -> bytes:
    """The bytes of ``path`` (--tls-cert or --tls-key), read from one open (else _TlsFileError): it is
    opened without waiting (a named pipe nothing writes to held OpenSSL's open, and the relay, for
    ever), the open file must be a regular file of at most MAX_TLS_FILE bytes, and at most that is
    read. The path was checked, closed and opened again by OpenSSL (twice: at the check and as the
    relay started), so a file put there in between (a FIFO, gigabytes) was read, or waited on, as
    checked. A file that is there but no PEM is OpenSSL's to say."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _TlsFileError(e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _TlsFileError("a folder, not a file; give the PEM file's path")
        if not stat.S_ISREG(st.st_mode):
            kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket or a device"
            raise _TlsFileError(f"{kind}, not a regular file; give the PEM file's path")
        data = b""
        while st.st_size <= MAX_TLS_FILE and len(data) <= MAX_TLS_FILE:
            chunk = os.read(fd, MAX_TLS_FILE + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if st.st_size > MAX_TLS_FILE or len(data) > MAX_TLS_FILE:  # (or it grew as it was read)
            raise _TlsFileError(
                f"{max(st.st_size, len(data)):,} bytes, more than a PEM certificate chain or key holds "
                f"(at most {MAX_TLS_FILE:,}); give the PEM file's path"
            )
    except OSError as e:
        raise _TlsFileError(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    return data


class _TlsScratchError(OSError):
    """No private temporary folder to hand a PEM file to OpenSSL in (no memfd_create): TMPDIR's fault,
    not the PEM files' (it was said as "cannot load them as a PEM certificate chain")."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # (os.write may write less than it is given)
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _pem_path(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open to read ``data`` (ssl loads a certificate chain only from a path): an
    anonymous file in memory (memfd_create, Linux) where there is one, else a file (mode 0600) in a
    private temporary folder (mode 0700, mkdtemp's), removed with its folder on every way out of the
    ``with``: loaded, refused by OpenSSL, a failed write, or interrupted (KeyboardInterrupt); if it
    cannot be removed, said (it holds the private key)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("relay-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    try:
        folder = tempfile.mkdtemp(prefix="relay-tls-")  # (only this user may enter it: 0700)
    except OSError as e:
        raise _TlsScratchError(
            e.errno,
            f"no private temporary folder to hand the PEM files to OpenSSL in ({e.strerror or e}); set TMPDIR "
            "to a folder of your own",
        ) from None
    try:
        path = os.path.join(folder, "pem")
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(path, flags, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        if os.path.lexists(folder):
            log.warning("could not remove %s, which holds a TLS private key: remove it", folder)


def _tls_context(cert: bytes, key: bytes) -> ssl.SSLContext:
    """An SSL context serving the PEM certificate chain ``cert`` with its private key ``key`` (the
    bytes _read_tls_file read); ssl.SSLError or OSError if they are no such pair."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with _pem_path(cert) as cert_path, _pem_path(key) as key_path:
        context.load_cert_chain(cert_path, key_path)
    return context


async def _run(
    opts: argparse.Namespace, limits: Limits, token: bytes | None, listeners: Sequence[trio.SocketListener]
) -> None:
    ssl_context: ssl.SSLContext | None = opts.ssl_context  # (main loaded it, from one read of each file)
    from datetime import date

    when = None if opts.profile_as_of is None else date.fromisoformat(opts.profile_as_of)
    profile = profile_as_of(opts.profile, when)
    policy = POLICIES[opts.retention] if opts.retention else profile.policy
    with Store(opts.db) as store:
        core = RelayCore(
            store,
            **{**profile.relay_options(), "policy": policy},
            max_frame_size=opts.max_frame_size,
            limits=limits,
            registration_pow=0 if token is not None else opts.registration_pow,
            registration_token=token,
        )
        log.info("database %s", opts.db)
        for line in describe_recording(profile, policy):
            log.info("%s", line)
        if opts.profile_as_of:
            log.info("provider profile %s as of %s", opts.profile, opts.profile_as_of)
        log.info("trust root public key: %s", core.trust_root_public.hex())
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    partial(
                        serve,
                        core,
                        opts.host,
                        opts.port,
                        ssl_context=ssl_context,
                        read_timeout=opts.read_timeout,
                        write_timeout=opts.write_timeout,
                        max_connections=opts.max_connections,
                        max_queued_bytes_per_device=opts.max_queued_bytes,
                        max_connections_per_address=opts.max_connections_per_address,
                        connection_rate=opts.connection_rate,
                        listeners=listeners,
                    )
                )
                if opts.admin:
                    from relaysim.relay.admin import serve_admin

                    # Orders are carried out between the server's batches (it holds the store).
                    await nursery.start(partial(serve_admin, core, opts.admin, run=server.call))
                async for signum in signals:
                    log.info("%s received; shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
    log.info("stopped")


def main(args: list[str]) -> int:
    """``relaysim relay serve [options]``: run the relay until SIGINT/SIGTERM. Returns an exit code."""
    parser = build_parser()
    try:
        opts = parser.parse_args(args)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    if opts.profile_as_of is not None:
        from datetime import date

        try:
            day = date.fromisoformat(opts.profile_as_of)
        except ValueError:
            print(
                f"{parser.prog}: error: --profile-as-of: expected a date like 2016-05-01, got {quoted(opts.profile_as_of)}",
                file=sys.stderr,
            )
            return 2
        if opts.profile in PROFILES and (why := PROFILES[opts.profile].not_yet(day)) is not None:
            # a provider on a day before it existed: no profile describes it then (Profile.since)
            print(f"{parser.prog}: error: --profile-as-of: {why}", file=sys.stderr)
            return 2

    def usage(message: str) -> int:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2

    if opts.admin:
        from relaysim.relay.admin import AdminPathError, prepare_admin_path

        if _is_a_database_file(opts.admin, opts.db):
            return usage(
                f"--admin {opts.admin} is the database's own file; give the socket a path of its own"
            )
        try:
            prepare_admin_path(opts.admin)  # (a file there is refused, never removed)
        except AdminPathError as e:
            return usage(str(e))

    if bool(opts.tls_cert) != bool(opts.tls_key):
        return usage("--tls-cert and --tls-key go together")
    opts.ssl_context = None
    if opts.tls_cert:
        # each read once, without waiting on a pipe, naming the one that is wrong: a FIFO held
        # OpenSSL's open for ever, the relay neither serving nor saying why
        pem = []
        for option, path in (("--tls-cert", opts.tls_cert), ("--tls-key", opts.tls_key)):
            try:
                pem.append(_read_tls_file(path))
            except _TlsFileError as e:
                return usage(f"{option} {path}: {e}")
        # each holds what its option names, said naming it: the two swapped, or the certificate given
        # twice, was OpenSSL's "[SSL] PEM lib (_ssl.c:3926)", naming both files and neither fault
        swapped = bool(_PEM_CERTIFICATE.search(pem[1]) and not _PEM_CERTIFICATE.search(pem[0]))
        for option, path, data, label, what in (
            ("--tls-cert", opts.tls_cert, pem[0], _PEM_CERTIFICATE, "certificate"),
            ("--tls-key", opts.tls_key, pem[1], _PEM_PRIVATE_KEY, "private key"),
        ):
            if not label.search(data):
                hint = "; --tls-cert and --tls-key are the other way round?" if swapped else ""
                return usage(
                    f"{option} {path}: holds no PEM {what} (no '-----BEGIN {what.upper()}-----' line){hint}"
                )
        # loaded here, as a usage error naming them: a file that is no PEM was "cannot serve:
        # [Errno 21] Is a directory" (exit 1) once the store had been opened
        try:
            opts.ssl_context = _tls_context(*pem)
        except _TlsScratchError as e:
            return usage(f"--tls-cert {opts.tls_cert} --tls-key {opts.tls_key}: {e.strerror}")
        except (OSError, ssl.SSLError) as e:
            said = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return usage(
                f"--tls-cert {opts.tls_cert} --tls-key {opts.tls_key}: cannot load them as a PEM "
                f"certificate chain and its private key: {said}"
            )
    if not opts.tls_cert and not opts.insecure and not _is_loopback(opts.host):
        return usage(
            f"--host {opts.host} is not a loopback address and there is no --tls-cert/--tls-key: devices' "
            "tokens and everything the relay sees would cross the network in the clear; give TLS, or "
            "--insecure to serve plain TCP anyway"
        )
    try:
        limits = Limits(
            queue_envelopes=opts.queue_envelopes,
            queue_bytes=opts.queue_bytes,
            send_per_account=opts.send_per_account,
            send_per_address=opts.send_per_address,
            register_per_address=opts.register_per_address,
            fetch_per_requester=opts.fetch_per_requester,
            fetch_per_target=opts.fetch_per_target,
            discover_per_account=opts.discover_per_account,
            keys_per_device=opts.keys_per_device,
            ack_unknown_per_account=opts.ack_unknown_per_account,
            certificates_per_account=opts.certificates_per_account,
            group_state_per_address=opts.group_state_per_address,
            key_log_per_address=opts.key_log_per_address,
            logins_per_address=opts.logins_per_address,
            group_reads_per_account=opts.group_reads_per_account,
            prekeys_low=opts.prekeys_low,
        )
    except ValueError as e:
        return usage(str(e))
    if not 0 <= opts.registration_pow <= 32:
        return usage(f"--registration-pow {opts.registration_pow}: expected a number of bits from 0 to 32")
    token = None
    if opts.registration_token_file:
        try:
            token = _read_token_file(opts.registration_token_file).strip()
        except OSError as e:
            return usage(f"--registration-token-file {opts.registration_token_file}: {e.strerror}")
        if not 1 <= len(token) <= 64:
            return usage(
                f"--registration-token-file {opts.registration_token_file}: the token is "
                + (
                    f"{len(token)} bytes"
                    if len(token) <= MAX_TOKEN_FILE
                    else f"more than {MAX_TOKEN_FILE:,} bytes"
                )
                + "; expected 1 to 64"
            )
    logging.basicConfig(
        level=opts.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code = 0
    try:
        code = trio.run(_bind_then_serve, parser, opts, limits, token)
    except* CannotListen as refused:  # a usage error, as the options' others are: naming them, exit 2
        for listen_error in refused.exceptions:
            print(f"{parser.prog}: error: {listen_error}", file=sys.stderr)
        code = 2
    except* OSError as group:  # trio >= 0.25 hands it out of _run's nursery in an ExceptionGroup
        for error in group.exceptions:
            log.error("cannot serve: %s", error)
        code = 1
    return code


async def _bind_then_serve(
    parser: argparse.ArgumentParser, opts: argparse.Namespace, limits: Limits, token: bytes | None
) -> int:
    """:func:`main` from the port on. The port is bound first: a relay that cannot listen stops
    before it has created, locked or migrated its database or logged a line of its set-up."""
    tune_gc_for_serving()
    listeners = await open_listeners(opts.host, opts.port)
    try:
        try:
            # Taken before the file is opened (a relay that migrates it would change a store another
            # serves), and held until the relay stops.
            lock = lock_store(opts.db)
        except StoreError as exc:
            print(f"{parser.prog}: error: --db {exc}", file=sys.stderr)
            return 2
        try:
            return await _serve_locked(parser, opts, limits, token, listeners)
        finally:
            if lock >= 0:
                os.close(lock)
    finally:
        for listener in listeners:
            listener.socket.close()


def lock_store(path: str) -> int:
    """Hold ``path`` for this relay alone: an exclusive ``flock`` on the database file (made empty if
    there is none, as SQLite would; a symbolic link is followed, one to nothing refused as the Store
    refuses it: relay.store.dangling_link), or a StoreError naming it if another relay holds it. Returns the
    descriptor that holds the lock (closing it lets go), or -1 where the file cannot be opened (SQLite
    then says why, naming the file).

    Two relays on one store would each keep their own caches (queue sizes, routes, the next record's
    number) and their own rate limits, and refuse or overwrite each other's writes. Readers (the
    compliance desk of a live run, ``relaysim disclose`` on a copy) take no such lock and are not held
    up: on Linux a ``flock`` and SQLite's own locks (``fcntl`` byte ranges) do not interact (flock(2))."""
    import fcntl  # (not on every system: only the server, which needs epoll, i.e. Linux, takes the lock)

    dangling = dangling_link(path)  # (O_CREAT would make the file it points to: an empty store)
    if dangling is not None:
        raise StoreError(f"{path}: {dangling}")
    try:
        # (O_NONBLOCK: a FIFO at the path would wait for a writer; it is no file to lock)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return -1
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path}: another relay is serving this database (it holds its lock): two relays on one store "
            "would each keep its queues and counters in memory and overwrite the other's records; stop it "
            "first, or give another --db"
        ) from None
    except OSError:  # a file system without flock: nothing to hold it with
        return fd
    return fd


async def _serve_locked(
    parser: argparse.ArgumentParser,
    opts: argparse.Namespace,
    limits: Limits,
    token: bytes | None,
    listeners: Sequence[trio.SocketListener],
) -> int:
    """:func:`main` once the port is bound and the database's lock held."""
    try:
        with Store(opts.db) as store:
            simulation = store.simulation_keys
    except StoreError as exc:
        print(f"{parser.prog}: error: --db {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"{parser.prog}: error: --db {opts.db}: cannot open the relay database: {exc}", file=sys.stderr)
        return 2
    if simulation is not None:
        if not opts.allow_simulation_keys:
            print(
                f"{parser.prog}: error: --db {opts.db} was written by a seeded simulation ({simulation}): "
                "its server key, trust root and every device key can be recomputed by anyone from the seed, "
                "so nothing sent through it would be private. Refusing to serve it; pass "
                "--allow-simulation-keys to serve it anyway (demonstrations only), or give a new --db.",
                file=sys.stderr,
            )
            return 2
        log.warning(
            "serving %s, written by a seeded simulation (%s): its keys are PUBLIC (recomputable from the "
            "seed); nothing sent through this relay is private",
            opts.db,
            simulation,
        )
    await _run(opts, limits, token, listeners)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
