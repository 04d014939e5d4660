"""``relaysim bench relay``: the live relay over loopback TCP against a bare trio echo server, in one run.

What runs where. The machine has two cores, so each server runs in its own child process (its
own core) and one load generator in this process drives them all (the other core). The load
generator is a plain ``selectors`` (epoll) loop over non-blocking sockets, not trio: per frame
it does a ``send``/``recv`` system call and a msgpack pack/unpack, several times less work than
a trio server does per frame, so the servers are the bottleneck, not the clients (the CPU use of
both sides is measured and printed to show it).

Contenders, each with --connections device connections (default 1,000) held open throughout:

* relay, durable — ``relay.server.serve`` over ``RelayCore`` over a temporary SQLite file (in the
  system's temporary directory) with
  ``Store(durable=True)``, the real relay's setting: every request's batch is on disk before its
  answer leaves (the server has the WAL fsynced in a worker thread while it handles the next
  batch: ``Store.defer_syncs``). This is the contender the target judges.
* relay, not durable — the same with ``Store(durable=False)``, for information (what the
  fsyncs cost).
* echo — a bare trio echo server with the same framing: it reads 4-byte-length-prefixed
  msgpack frames, unpacks each frame's map, and writes the frames back in one ``send_all``.

What the relays keep: every metadata record whole (RelayCore's default, the keep-everything
policy: three records an envelope — the send, its delivery, its acknowledgement), the case the
target judges. With --profile NAME both relays keep what ``relay serve --profile NAME`` keeps
(relay/profiles.py: its retention policy, delivered bodies, contacts, blocks, device facts), for
information: ``--profile signal``, say, writes no who-messaged-whom row, so it shows what keeping
them costs the provider. Neither has rate limits (every device comes from one loopback address).

Every server process sets the garbage collector as ``relay serve`` does
(``relay.server.tune_gc_for_serving``).

Set-up (not timed). The devices are registered before the servers listen, through the real
``RelayCore.handle(Register)`` path in the server process (real XEdDSA signatures, verified
by the relay; no sockets), to save a round of connections; each connection then
authenticates over TCP (auth_challenge → XEdDSA-signed authenticate), as a phone does.

The load, the same for every contender. Device i sends to device i + N/2 (mod N); each keeps
--window envelopes of --body-size bytes in flight. Relay: ``send`` → ``sent`` to the sender,
``deliver`` pushed to the recipient, which answers ``ack`` → ``acked``; the envelope counts
when ``acked`` arrives (sent, pushed and acknowledged: 2 frames in, 3 out at the server).
Echo: the same ``send`` frame comes back (standing for both ``sent`` and ``deliver``), the
client answers with the same ``ack`` frame, and the envelope counts when that comes back
(2 in, 2 out). Latency: from writing ``send`` to reading the ``deliver`` (echo: the echoed
``send``). The target, ≥ 50 % of the echo server's frames/s at 1,000 connections
(docs/performance.md), is judged on frames/s at the server (in + out); the envelope ratio,
stricter, is shown for information. --json FILE (or - for stdout) keeps every number; --check
exits 1 unless every target is met.

Timing. Each repeat gives every contender one slice (--warmup s, then --duration s timed,
then a drain until nothing is in flight), in an order rotated from repeat to repeat; a
contender's figure is the median over its slices. Memory per idle connection: the server
process's RSS after all connections are open, authenticated and idle, minus its RSS before
the first one, over the number of connections (Linux /proc); the target is ≤ 8 KiB for the
durable relay.

Where the time goes: the server-side work of one envelope (decode, ``RelayCore.handle``,
encode, for ``send`` and ``ack``, and the COMMIT of each batch), timed in this process without
sockets in batches of 100 requests as the server's loop runs them (a batch's sends with the acks of
the batch before), on a store of each kind, against the server's wall time per envelope in the TCP
run; the difference is the socket I/O (the relay reads every plain TCP connection from one task,
its pump) and trio's scheduling. The fsync after each durable batch, which the server runs in a
worker thread beside its loop, is shown apart; the echo server shows trio's socket I/O and task
switching on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import inspect
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.clients import _primitives
from relaysim.clients.keys import IdentityKeyPair
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply
from relaysim.relay.limits import UNLIMITED
from relaysim.relay.profiles import PROFILES
from relaysim.relay.server import serve, tune_gc_for_serving
from relaysim.relay.store import Store
from relaysim.sims.bench import harness
from relaysim.sims.numbers import decimal_number, state_bounds, whole_number
from relaysim.sims.scenario import seed_arg

__all__ = ["CONTENDERS", "RATIOS", "main"]

ECHO: Final = "echo"
RELAY_DURABLE: Final = "relay_durable"
RELAY_VOLATILE: Final = "relay_not_durable"
CONTENDERS: Final = (RELAY_DURABLE, RELAY_VOLATILE, ECHO)
LABELS: Final = {
    RELAY_DURABLE: "relay, SQLite durable=True (the relay's setting)",
    RELAY_VOLATILE: "relay, SQLite durable=False (information)",
    ECHO: "bare trio echo server, same framing",
}
# Frames through the server per envelope: relay send+ack in, sent+deliver+acked out; echo 2 + 2.
FRAMES_PER_ENVELOPE: Final = {RELAY_DURABLE: 5, RELAY_VOLATILE: 5, ECHO: 4}

_PREFIX = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_HOST = "127.0.0.1"
_RECV = 1 << 18
_READY_TIMEOUT = 120.0  # seconds a server process may take to pre-register its devices
_DRAIN_TIMEOUT = 30.0


# --- devices ----------------------------------------------------------------------------------


def account_name(i: int) -> str:
    return f"bench{i:06d}"


def identity_private(seed: int, i: int) -> bytes:
    """Device ``i``'s X25519 identity private key, the same in the server and the load generator."""
    return hashlib.sha256(f"relaysim bench relay {seed} {i}".encode()).digest()


def preregister(core: RelayCore, n: int, seed: int) -> None:
    """Register ``n`` devices through ``core.handle(Register)``: the relay's own checks, no sockets.

    Each device has a signed prekey and a last-resort ML-KEM prekey, both with real XEdDSA
    signatures by its identity key (the relay verifies them); one real ML-KEM-1024 public key
    serves for all (the relay never looks inside it). No one-time prekeys: no bundle is fetched.
    """
    _key, kem_public = _primitives.mlkem_keypair_from_seed(hashlib.sha512(b"bench kem").digest())
    for i in range(n):
        identity = IdentityKeyPair(identity_private(seed, i))
        spk = hashlib.sha256(b"spk" + identity.private).digest()
        request = wire.Register(
            id=1,
            account=account_name(i),
            device=1,
            registration_id=1 + i % 16380,
            identity_key=identity.public,
            signed_prekey=wire.SignedPrekey(1, spk, identity.sign(wire.signed_prekey_message(spk))),
            one_time_prekeys=(),
            kem_prekeys=(),
            last_resort_kem_prekey=wire.KemPrekey(
                2, kem_public, identity.sign(wire.kem_prekey_message(kem_public))
            ),
        )
        reply = core.handle(ConnectionContext(1_000_000_000 + i), request)[0]
        if not (isinstance(reply, Reply) and isinstance(reply.frame, wire.Registered)):
            raise harness.BenchError(f"pre-registration of {account_name(i)} failed: {reply}")


# --- the server processes -----------------------------------------------------------------------


def _child_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sims.bench.relay --child")
    p.add_argument("--child", choices=CONTENDERS, required=True)
    p.add_argument(
        "--connections",
        type=whole_number("connections", 2, 4096, why="relay serve's default --max-connections"),
        required=True,
    )
    p.add_argument("--seed", type=seed_arg, required=True)
    p.add_argument("--db", default="")
    p.add_argument("--profile", default="")
    return state_bounds(p)


def relay_options(profile: str | None) -> dict[str, Any]:
    """RelayCore's keyword arguments for what the relays keep: everything (its defaults) without a
    profile, else what ``relay serve --profile`` keeps."""
    return PROFILES[profile].relay_options() if profile else {}


def child_main(argv: list[str]) -> int:
    """A server process: set up, print ``READY <port>``, serve until stdin closes."""
    args = _child_parser().parse_args(argv)
    harness.raise_fd_limit(args.connections + 256)
    # As `relay serve` sets it, for every contender alike (the echo server allocates little per frame).
    tune_gc_for_serving()

    if args.child == ECHO:

        async def run_echo() -> None:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(trio.serve_tcp, _echo_handler, 0, host=_HOST)
                )
                await _announce_and_wait(listeners[0].socket.getsockname()[1])
                nursery.cancel_scope.cancel()

        trio.run(run_echo)
        return 0

    with Store(args.db, durable=args.child == RELAY_DURABLE) as store:
        # A benchmark of throughput: every device on one loopback address, no limits (the attack
        # bench, tests/relay/test_relay_abuse.py, measures them).
        core = RelayCore(store, limits=UNLIMITED, **relay_options(args.profile))
        preregister(core, args.connections, args.seed)

        async def run_relay() -> None:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    lambda task_status: serve(
                        core,
                        _HOST,
                        0,
                        read_timeout=3600.0,  # idle connections wait through the other contenders' slices
                        max_connections=args.connections + 64,
                        max_connections_per_address=None,
                        connection_rate=None,
                        retention_interval=3600.0,  # no retention sweep inside a timed slice
                        task_status=task_status,
                    )
                )
                await _announce_and_wait(server.port)
                nursery.cancel_scope.cancel()

        trio.run(run_relay)
    return 0


async def _announce_and_wait(port: int) -> None:
    gc.collect()
    print(f"READY {port}", flush=True)
    # Serve until the parent closes our stdin (or dies).
    await trio.to_thread.run_sync(sys.stdin.buffer.read, **ABANDON_ON_CANCEL)


def _abandon_on_cancel() -> dict[str, Any]:
    """The keyword that lets a cancelled ``trio.to_thread.run_sync`` leave its thread behind: trio 0.23
    renamed ``cancellable`` to ``abandon_on_cancel``, and later releases dropped the old name."""
    parameters = inspect.signature(trio.to_thread.run_sync).parameters
    return {"abandon_on_cancel" if "abandon_on_cancel" in parameters else "cancellable": True}


ABANDON_ON_CANCEL: Final = _abandon_on_cancel()


async def _echo_handler(stream: Any) -> None:
    """Echo whole frames: read, split on the length prefixes, unpack each map, write them back."""
    unpackb, unpack_from, prefix = msgpack.unpackb, _PREFIX.unpack_from, _PREFIX.size
    buf = bytearray()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            data = await stream.receive_some(_RECV)
            if not data:
                return
            buf += data
            pos, end = 0, len(buf)
            while end - pos >= prefix:
                (length,) = unpack_from(buf, pos)
                stop = pos + prefix + length
                if stop > end:
                    break
                unpackb(buf[pos + prefix : stop])  # the same framing work as the relay's decoder
                pos = stop
            if pos:
                out = bytes(buf[:pos])
                del buf[:pos]
                await stream.send_all(out)


class ServerProcess:
    """One contender's server in a child process (on the other core), and its /proc figures."""

    def __init__(self, kind: str, connections: int, seed: int, db: str, profile: str | None = None) -> None:
        self.kind = kind
        cmd, env = harness.module_command(
            "sims.bench.relay",
            "--child",
            kind,
            "--connections",
            str(connections),
            "--seed",
            str(seed),
            "--db",
            db,
            "--profile",
            profile or "",
        )
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.port = 0

    def wait_ready(self) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(_READY_TIMEOUT):
            raise harness.BenchError(f"{self.kind} server did not start within {_READY_TIMEOUT:.0f} s")
        sel.close()
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "READY":
            raise harness.BenchError(f"{self.kind} server failed to start (exit status {self.proc.wait()})")
        self.port = int(line[1])
        return self.port

    def rss_kb(self) -> int | None:
        """Resident set size in KiB (Linux), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (Linux), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        harness.stop_child(self.proc)


# --- the load generator ----------------------------------------------------------------------


def _frame(body: dict[str, Any]) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return _PREFIX.pack(len(data)) + data


@dataclass(eq=False)
class _Conn:
    index: int
    sock: socket.socket
    account: str
    peer: str
    private: bytes
    rbuf: bytearray = field(default_factory=bytearray)
    out: list[bytes] = field(default_factory=list)
    wbuf: bytes = b""
    next_id: int = 1
    ready: bool = False

    def request_id(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid


@dataclass
class SliceResult:
    """One timed slice of one contender."""

    envelopes: int
    seconds: float
    latencies_ms: list[float]
    server_cpu: float | None
    client_cpu: float

    @property
    def envelopes_per_s(self) -> float:
        return self.envelopes / self.seconds


class LoadGenerator:
    """``n`` device connections to one server, driven by one epoll loop in this process."""

    def __init__(self, kind: str, port: int, n: int, seed: int, body_size: int, window: int) -> None:
        self.kind = kind
        self.relay = kind != ECHO
        self.window = window
        self.padding = bytes(max(0, body_size - _SEQ.size))
        self.sel = selectors.DefaultSelector()
        self.conns: list[_Conn] = []
        self.dirty: list[_Conn] = []
        self.sending = False
        self.outstanding = 0  # envelopes sent and not yet complete
        self.completed = 0
        self.frames_in = 0
        self.errors: list[str] = []
        self.seq = 0
        self.send_times: dict[int, float] = {}
        self.window_start = self.window_end = 0.0
        self.latencies: list[float] = []
        for i in range(n):
            sock = socket.create_connection((_HOST, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            c = _Conn(i, sock, account_name(i), account_name((i + n // 2) % n), identity_private(seed, i))
            self.conns.append(c)
            self.sel.register(sock, selectors.EVENT_READ, c)

    # -- frames out --

    def _write(self, c: _Conn, data: bytes) -> None:
        if not c.out:
            self.dirty.append(c)
        c.out.append(data)

    def _flush(self) -> None:
        for c in self.dirty:
            data = b"".join(c.out)
            c.out.clear()
            if c.wbuf:
                c.wbuf += data
                continue
            try:
                sent = c.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                c.wbuf = data[sent:]
                self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        self.dirty.clear()

    def _send_envelope(self, c: _Conn) -> None:
        self.seq += 1
        self.outstanding += 1
        self.send_times[self.seq] = time.perf_counter()
        body = _SEQ.pack(self.seq) + self.padding
        envelope = {"device": 1, "body": body}
        self._write(
            c,
            _frame({"v": 1, "id": c.request_id(), "kind": "send", "to": c.peer, "envelopes": [envelope]}),
        )

    def _ack(self, c: _Conn, envelope_id: bytes) -> None:
        self._write(c, _frame({"v": 1, "id": c.request_id(), "kind": "ack", "envelope_ids": [envelope_id]}))

    def _delivered(self, body: bytes) -> None:
        now = time.perf_counter()
        sent = self.send_times.pop(_SEQ.unpack_from(body)[0], None)
        if sent is not None and self.window_start <= sent and now <= self.window_end:
            self.latencies.append((now - sent) * 1000.0)

    # -- frames in --

    def _on_frame(self, c: _Conn, f: dict[str, Any]) -> None:
        kind = f.get("kind")
        if kind == "deliver":  # relay: pushed to the recipient; ack it
            envelope = f["envelope"]
            self._delivered(envelope["body"])
            self._ack(c, envelope["id"])
        elif kind == "sent":
            if self.sending:
                self._send_envelope(c)
        elif kind == "acked":
            self.completed += f["count"]
            self.outstanding -= f["count"]
        elif kind == "send":  # echo: our send came back; it stands for sent and deliver
            self._delivered(f["envelopes"][0]["body"])
            self._ack(c, f["envelopes"][0]["body"][:8] * 2)
            if self.sending:
                self._send_envelope(c)
        elif kind == "ack":  # echo: our ack came back
            self.completed += 1
            self.outstanding -= 1
        elif kind == "challenge":
            signature = IdentityKeyPair(c.private).sign(wire.auth_message(f["nonce"], c.account, 1))
            self._write(
                c,
                _frame(
                    {
                        "v": 1,
                        "id": c.request_id(),
                        "kind": "authenticate",
                        "nonce": f["nonce"],
                        "signature": signature,
                    }
                ),
            )
        elif kind in ("authenticated", "ping"):  # "ping": the echo of our hello
            c.ready = True
        else:
            self.errors.append(f"{c.account}: {f}")

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(_RECV)
        except BlockingIOError:
            return
        if not data:
            raise harness.BenchError(f"{self.kind}: the server closed {c.account}'s connection")
        buf = c.rbuf
        buf += data
        pos, end, unpackb = 0, len(buf), msgpack.unpackb
        while end - pos >= 4:
            (length,) = _PREFIX.unpack_from(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            self.frames_in += 1
            self._on_frame(c, unpackb(buf[pos + 4 : stop], raw=False))
            pos = stop
        if pos:
            del buf[:pos]

    def _turn(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            c: _Conn = key.data
            if mask & selectors.EVENT_READ:
                self._read(c)
            if mask & selectors.EVENT_WRITE and c.wbuf:
                try:
                    sent = c.sock.send(c.wbuf)
                except BlockingIOError:
                    sent = 0
                c.wbuf = c.wbuf[sent:]
                if not c.wbuf:
                    self.sel.modify(c.sock, selectors.EVENT_READ, c)
        self._flush()
        if self.errors:
            raise harness.BenchError(
                f"{self.kind}: {len(self.errors)} unexpected frames; first: {self.errors[0]}"
            )

    def _until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.perf_counter() + timeout
        while not done():
            if time.perf_counter() > deadline:
                raise harness.BenchError(f"{self.kind}: {what} did not finish within {timeout:.0f} s")
            self._turn(0.05)

    # -- phases --

    def log_in(self) -> None:
        """Relay: authenticate every connection. Echo: one hello round trip each."""
        for c in self.conns:
            if self.relay:
                frame = {"v": 1, "id": c.request_id(), "kind": "auth_challenge", "account": c.account}
                frame["device"] = 1
            else:
                frame = {"v": 1, "id": c.request_id(), "kind": "ping"}
            self._write(c, _frame(frame))
        self._flush()
        self._until(lambda: all(c.ready for c in self.conns), 120.0, "logging in")

    def run_slice(self, warmup: float, duration: float, server: ServerProcess | None) -> SliceResult:
        """Keep ``window`` envelopes in flight per connection; time ``duration`` s after ``warmup``."""
        self.sending = True
        self.latencies = []
        start = time.perf_counter()
        self.window_start, self.window_end = start + warmup, start + warmup + duration
        for c in self.conns:
            for _ in range(self.window):
                self._send_envelope(c)
        self._flush()
        while time.perf_counter() < self.window_start:
            self._turn(0.01)
        t0, done0, cpu0 = time.perf_counter(), self.completed, time.process_time()
        server_cpu0 = server.cpu_seconds() if server else None
        while time.perf_counter() < self.window_end:
            self._turn(0.01)
        t1, done1, cpu1 = time.perf_counter(), self.completed, time.process_time()
        server_cpu1 = server.cpu_seconds() if server else None
        self.sending = False
        self._until(lambda: self.outstanding == 0, _DRAIN_TIMEOUT, "draining the envelopes in flight")
        self.send_times.clear()
        wall = t1 - t0
        server_cpu = (
            None if server_cpu0 is None or server_cpu1 is None else (server_cpu1 - server_cpu0) / wall
        )
        return SliceResult(done1 - done0, wall, self.latencies, server_cpu, (cpu1 - cpu0) / wall)

    def close(self) -> None:
        for c in self.conns:
            self.sel.unregister(c.sock)
            c.sock.close()
        self.sel.close()


# --- where the time goes: one envelope's server-side work, without sockets -----------------------


STEP_LABELS: Final = {
    "decode_send": "decode send (FrameDecoder: msgpack + field checks)",
    "core_send": "RelayCore.handle(send): route, enqueue, 2 metadata records",
    "encode_sent_deliver": "encode sent + deliver",
    "decode_ack": "decode ack",
    "core_ack": "RelayCore.handle(ack): delete, metadata record",
    "encode_acked": "encode acked",
    "commit": "COMMIT of the batch (its rows written), per envelope",
}
_SEND_STEPS: Final = ("decode_send", "core_send", "encode_sent_deliver")
_ACK_STEPS: Final = ("decode_ack", "core_ack", "encode_acked")
# Not in the server loop's own time: the batch's fsync runs in a worker thread beside it.
SYNC_LABEL: Final = "fsync of the WAL after each batch (a worker thread), per envelope"
GROUP: Final = 100  # envelopes per batch (one transaction) in the steps and the group-commit what-if


class StepRig:
    """A relay core with two authenticated devices, in this process: one envelope's server work, step by step."""

    def __init__(self, durable: bool, body_size: int, directory: str, profile: str | None = None) -> None:
        path = os.path.join(directory, f"steps-{'durable' if durable else 'volatile'}.db")
        self.store = Store(path, durable=durable)
        self.core = RelayCore(self.store, limits=UNLIMITED, **relay_options(profile))
        preregister(self.core, 2, seed=0)
        self.ctxs = [ConnectionContext(i + 1, (_HOST, 50000 + i)) for i in range(2)]
        for i, ctx in enumerate(self.ctxs):
            self.core.connect(ctx)
            challenge = self.core.handle(ctx, wire.AuthChallenge(id=1, account=account_name(i), device=1))[0]
            assert isinstance(challenge, Reply) and isinstance(challenge.frame, wire.Challenge)
            nonce = challenge.frame.nonce
            signature = IdentityKeyPair(identity_private(0, i)).sign(
                wire.auth_message(nonce, account_name(i), 1)
            )
            self.core.handle(ctx, wire.Authenticate(id=2, nonce=nonce, signature=signature))
        self.decoder = wire.FrameDecoder("relay")
        self.padding = bytes(max(0, body_size - _SEQ.size))
        self.seq = 0
        # As the server: a durable batch's COMMIT writes the WAL, its fsync comes after (Store.sync,
        # in the server's worker thread); other transactions still sync at once.
        self.store.defer_syncs()

    def _send_bytes(self) -> bytes:
        self.seq += 1
        envelope = {"device": 1, "body": _SEQ.pack(self.seq) + self.padding}
        return _frame(
            {"v": 1, "id": self.seq, "kind": "send", "to": account_name(1), "envelopes": [envelope]}
        )

    def steps(self, n: int) -> dict[str, float]:
        """Run ``n`` envelopes as the server's loop does, in batches of GROUP requests, each batch one
        transaction (``Store.begin_group``: every request a savepoint of it) holding GROUP sends and
        the acks of the batch before (an ack comes back a round trip after its send); µs per envelope
        per step, the batch's COMMIT and its fsync (``sync``) among them."""
        clock, store = time.perf_counter, self.store
        sender, recipient = self.ctxs
        acc = dict.fromkeys([*STEP_LABELS, "sync"], 0.0)
        acks: list[bytes] = []
        done = 0
        while done < n or acks:
            store.begin_group()
            later: list[bytes] = []
            for _ in range(min(GROUP, n - done)):
                pushed = self._timed(sender, self._send_bytes(), wire.Send, _SEND_STEPS, acc)
                deliver = wire.decode_body(pushed[4:], wire.RESPONSE_KINDS)  # the last output: deliver
                assert isinstance(deliver, wire.Deliver)
                later.append(
                    _frame({"v": 1, "id": self.seq, "kind": "ack", "envelope_ids": [deliver.envelope.id]})
                )
                done += 1
            for ack in acks:
                self._timed(recipient, ack, wire.Ack, _ACK_STEPS, acc)
            t8 = clock()
            store.commit_group()
            t9 = clock()
            store.sync()
            acc["commit"] += t9 - t8
            acc["sync"] += clock() - t9
            acks = later
        return {k: v / n * 1e6 for k, v in acc.items()}

    def _timed(
        self,
        ctx: ConnectionContext,
        data: bytes,
        expected: type[wire.Request],
        steps: tuple[str, str, str],
        acc: dict[str, float],
    ) -> bytes:
        """Decode one request's bytes, handle it, encode what it answers, each step's seconds added to
        ``acc`` under ``steps`` (decode, handle, encode); the last frame encoded."""
        clock = time.perf_counter
        t0 = clock()
        self.decoder.receive_data(data)
        frame = self.decoder.next_frame()
        t1 = clock()
        assert isinstance(frame, expected)
        outputs = self.core.handle(ctx, frame)
        t2 = clock()
        encoded = b""
        for o in outputs:
            if isinstance(o, Reply | Push):
                encoded = wire.encode(o.frame)
        t3 = clock()
        acc[steps[0]] += t1 - t0
        acc[steps[1]] += t2 - t1
        acc[steps[2]] += t3 - t2
        return encoded

    def one_per_transaction(self, n: int) -> float:
        """µs per envelope of ``core.handle(send)`` + ``core.handle(ack)``, each request a durable
        transaction of its own (what the server did before it grouped requests)."""
        core, decoder = self.core, self.decoder
        sender, recipient = self.ctxs
        total = 0.0
        for _ in range(n):
            decoder.receive_data(self._send_bytes())
            frame = decoder.next_frame()
            assert isinstance(frame, wire.Send)
            start = time.perf_counter()
            reply = core.handle(sender, frame)[0]
            total += time.perf_counter() - start
            assert isinstance(reply, Reply) and isinstance(reply.frame, wire.Sent)
            ack = wire.Ack(id=1, envelope_ids=(reply.frame.envelope_ids[0],))
            start = time.perf_counter()
            core.handle(recipient, ack)
            total += time.perf_counter() - start
        return total / n * 1e6

    def grouped(self, n: int) -> float:
        """µs per envelope of ``core.handle(send)`` + ``core.handle(ack)`` with GROUP envelopes per
        transaction (``Store.transaction`` nests: each request joins the outer one): a group commit."""
        core, decoder = self.core, self.decoder
        sender, recipient = self.ctxs
        sends = []
        for _ in range(n):
            decoder.receive_data(self._send_bytes())
            frame = decoder.next_frame()
            assert isinstance(frame, wire.Send)
            sends.append(frame)
        start = time.perf_counter()
        for i in range(0, n, GROUP):
            with self.store.transaction():
                ids = []
                for frame in sends[i : i + GROUP]:
                    reply = core.handle(sender, frame)[0]
                    assert isinstance(reply, Reply) and isinstance(reply.frame, wire.Sent)
                    ids.append(reply.frame.envelope_ids[0])
                for envelope_id in ids:
                    core.handle(recipient, wire.Ack(id=1, envelope_ids=(envelope_id,)))
        return (time.perf_counter() - start) / n * 1e6

    def close(self) -> None:
        assert self.store.queue_length(account_name(1), 1) == 0, "every envelope was acknowledged"
        self.store.close()


def measure_server_steps(
    envelopes: int, body_size: int, directory: str, chunks: int = 10, profile: str | None = None
) -> dict[str, Any]:
    """Medians over ``chunks`` interleaved slices of both kinds of store: µs per envelope per step."""
    rigs = {
        kind: StepRig(kind == RELAY_DURABLE, body_size, directory, profile)
        for kind in (RELAY_DURABLE, RELAY_VOLATILE)
    }
    try:
        for rig in rigs.values():  # warm caches and code paths
            rig.steps(20)
            rig.one_per_transaction(20)
            rig.grouped(GROUP)
        per_chunk = max(1, envelopes // chunks)
        group_chunk = max(GROUP, per_chunk // GROUP * GROUP)
        samples: dict[str, dict[str, list[float]]] = {k: {} for k in rigs}
        for _ in range(chunks):
            for kind, rig in rigs.items():
                for key, us in rig.steps(per_chunk).items():
                    samples[kind].setdefault(key, []).append(us)
                samples[kind].setdefault("group_commit", []).append(rig.grouped(group_chunk))
                samples[kind].setdefault("one_per_transaction", []).append(
                    rig.one_per_transaction(max(1, per_chunk // 10))
                )
    finally:
        for rig in rigs.values():
            rig.close()
    return {kind: {key: statistics.median(v) for key, v in s.items()} for kind, s in samples.items()}


def measure_echo_step(envelopes: int, body_size: int) -> float:
    """µs per envelope of the echo server's framing work: split and unpack its 2 frames in, copy them out."""
    send = _frame(
        {
            "v": 1,
            "id": 7,
            "kind": "send",
            "to": account_name(1),
            "envelopes": [{"device": 1, "body": bytes(body_size)}],
        }
    )
    ack = _frame({"v": 1, "id": 8, "kind": "ack", "envelope_ids": [bytes(16)]})
    unpackb, unpack_from = msgpack.unpackb, _PREFIX.unpack_from
    start = time.perf_counter()
    for _ in range(envelopes):
        for data in (send, ack):
            buf = bytearray(data)
            (length,) = unpack_from(buf, 0)
            unpackb(buf[4 : 4 + length])
            bytes(buf[: 4 + length])
            del buf[: 4 + length]
    return (time.perf_counter() - start) / envelopes * 1e6


# --- ratios, report, command line ------------------------------------------------------------


@dataclass(frozen=True)
class Ratio(harness.Target):
    """A target on ``numerator``'s ``metric`` over ``denominator``'s (contender kinds)."""

    numerator: str = ""
    denominator: str = ""
    metric: str = "frames_per_s"  # or "envelopes_per_s"


RATIOS: Final = [
    Ratio(
        "relay_vs_echo_frames",
        "relay (durable) / echo, frames per second",
        ">=",
        0.5,
        RELAY_DURABLE,
        ECHO,
        "frames_per_s",
    ),
    Ratio(
        "relay_vs_echo_envelopes",
        "relay (durable) / echo, envelopes per second",
        ">=",
        None,
        RELAY_DURABLE,
        ECHO,
        "envelopes_per_s",
    ),
    Ratio(
        "relay_not_durable_vs_echo_frames",
        "relay (durable=False) / echo, frames per second",
        ">=",
        None,
        RELAY_VOLATILE,
        ECHO,
        "frames_per_s",
    ),
    Ratio(
        "durable_vs_not_durable",
        "relay durable / durable=False, envelopes per second",
        ">=",
        None,
        RELAY_DURABLE,
        RELAY_VOLATILE,
        "envelopes_per_s",
    ),
]
# docs/performance.md: ≤ 8 KiB per idle authenticated connection (server RSS growth / connections).
MEMORY: Final = harness.Target(
    "memory_per_idle_connection", "relay (durable), KiB per idle connection", "<=", 8.0
)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def summarise(kind: str, slices: list[SliceResult]) -> dict[str, Any]:
    per_s = [s.envelopes_per_s for s in slices]
    latencies = [x for s in slices for x in s.latencies_ms]
    server_cpu = [s.server_cpu for s in slices if s.server_cpu is not None]
    # CPU per envelope (share of a core × slice seconds / envelopes): unlike throughput, it holds
    # when other processes share the cores and the server gets less than a whole one.
    cpu_per_envelope = [
        s.server_cpu * s.seconds * 1e6 / s.envelopes
        for s in slices
        if s.server_cpu is not None and s.envelopes
    ]
    median = statistics.median(per_s)
    return {
        "label": LABELS[kind],
        "frames_per_envelope": FRAMES_PER_ENVELOPE[kind],
        "envelopes_per_s": median,
        "frames_per_s": median * FRAMES_PER_ENVELOPE[kind],
        "envelopes_per_s_samples": per_s,
        "envelopes_timed": sum(s.envelopes for s in slices),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "samples": len(latencies),
        },
        "server_cpu_share": statistics.median(server_cpu) if server_cpu else None,
        "server_cpu_us_per_envelope": statistics.median(cpu_per_envelope) if cpu_per_envelope else None,
        "client_cpu_share": statistics.median(s.client_cpu for s in slices),
    }


def compute_ratios(
    results: dict[str, dict[str, Any]], memory: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each ratio of medians (``value``, what ``met`` judges) with the median of the per-repeat ratios,
    and the memory target (KiB per idle connection of the durable relay; no value off Linux)."""
    out: dict[str, dict[str, Any]] = {}
    for r in RATIOS:
        num, den = results[r.numerator], results[r.denominator]
        pairs = zip(num["envelopes_per_s_samples"], den["envelopes_per_s_samples"], strict=True)
        scale = num["frames_per_envelope"] / den["frames_per_envelope"] if r.metric == "frames_per_s" else 1.0
        out[r.key] = {
            "numerator": r.numerator,
            "denominator": r.denominator,
            "metric": r.metric,
            **harness.target_row(
                r, num[r.metric] / den[r.metric], statistics.median(n / d * scale for n, d in pairs)
            ),
        }
    per = memory[RELAY_DURABLE]["bytes_per_connection"]
    out[MEMORY.key] = harness.target_row(MEMORY, None if per is None else per / 1024)
    return out


def compute_breakdown(
    results: dict[str, dict[str, Any]], steps: dict[str, dict[str, float]], echo_framing_us: float
) -> dict[str, Any]:
    """The server's wall time per envelope, split into request handling (timed without sockets) and the rest."""
    out: dict[str, Any] = {}
    for kind in (RELAY_DURABLE, RELAY_VOLATILE):
        parts = {key: steps[kind][key] for key in STEP_LABELS}
        handled = sum(parts.values())
        rate = results[kind]["envelopes_per_s"]
        wall = 1e6 / rate if rate > 0 else float("inf")  # nothing completed in the timed slices
        out[kind] = {
            "steps_us": parts,
            "request_handling_us": handled,
            "server_wall_us_per_envelope": wall,
            "sockets_and_trio_us": wall - handled,
            "core_one_per_transaction_us": steps[kind]["one_per_transaction"],
            "sync_us": steps[kind]["sync"],
            "core_group_commit_us": steps[kind]["group_commit"],
        }
    rate = results[ECHO]["envelopes_per_s"]
    wall = 1e6 / rate if rate > 0 else float("inf")
    out[ECHO] = {
        "framing_us": echo_framing_us,
        "server_wall_us_per_envelope": wall,
        "sockets_and_trio_us": wall - echo_framing_us,
    }
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


def _cpu_lines(res: dict[str, dict[str, Any]]) -> list[str]:
    """The server's CPU per envelope, and the echo/relay ratio per frame by CPU (information)."""
    durable, volatile, echo = (res[kind].get("server_cpu_us_per_envelope") for kind in CONTENDERS)
    if durable is None or volatile is None or echo is None:
        return []  # (no CPU times off Linux)
    per_frame = (echo / FRAMES_PER_ENVELOPE[ECHO]) / (durable / FRAMES_PER_ENVELOPE[RELAY_DURABLE])
    return [
        f"  server CPU per envelope: relay durable {durable:.1f} µs, not durable {volatile:.1f} µs, "
        f"echo {echo:.1f} µs; echo / relay (durable) CPU per frame {per_frame:.2f}",
        "  (information: on a shared machine the throughput ratio swings with what the servers get of "
        "a core; CPU per envelope does much less)",
    ]


def format_report(report: dict[str, Any]) -> str:
    cfg, res = report["config"], report["results"]
    lines = [
        f"relaysim bench relay — {cfg['connections']:,} connections over loopback TCP, {cfg['body_size']}-byte "
        f"envelopes, {cfg['window']} in flight per device; {cfg['repeat']} × {cfg['duration']:g} s "
        "timed per contender, interleaved; medians",
        f"Python {cfg['python']}, {cfg['machine']}; servers in child processes, load from one epoll "
        f"loop in this one{harness.load_text(cfg.get('load_average'))}",
        "the relays keep "
        + (
            f"what `relay serve --profile {cfg['profile']}` keeps (information: the target judges a relay "
            "that keeps every metadata record)"
            if cfg.get("profile")
            else "every metadata record whole (3 an envelope), as the target has it"
        ),
        "",
        f"  {'contender':50s} {'env/s':>8s} {'frames/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'server':>6s} {'client':>6s}",
    ]
    for kind in CONTENDERS:
        r = res[kind]
        lat = r["latency_ms"]
        lines.append(
            f"  {r['label']:50s} {_fmt(r['envelopes_per_s'], 0):>8s} {_fmt(r['frames_per_s'], 0):>9s} "
            f"{_fmt(lat['p50'], 2):>7s} {_fmt(lat['p99'], 2):>7s} {_pct(r['server_cpu_share']):>6s} "
            f"{_pct(r['client_cpu_share']):>6s}"
        )
    lines += [
        "  (env/s: sent, pushed and acknowledged; frames/s at the server, in + out; latency: send → "
        "deliver; server, client: CPU share of one core)",
        *_cpu_lines(res),
        "",
        "memory per idle connection (server RSS after all connections are open and authenticated, "
        "minus before, / connections)",
    ]
    for kind in CONTENDERS:
        m = report["memory"][kind]
        per = m["bytes_per_connection"]
        lines.append(
            f"  {LABELS[kind]:50s} {'—' if per is None else f'{per / 1024:,.1f} KiB':>10s}  "
            f"(RSS {_fmt(m['rss_before_kb'] and m['rss_before_kb'] / 1024)} → "
            f"{_fmt(m['rss_after_kb'] and m['rss_after_kb'] / 1024)} MiB)"
        )
    lines += harness.format_targets(report["ratios"], paired="per-repeat ratios", width=52)
    b = report["breakdown"]
    durable, volatile, echo = b[RELAY_DURABLE], b[RELAY_VOLATILE], b[ECHO]
    lines += [
        "",
        "where the time goes — the server's work per envelope, each step timed in this process without "
        f"sockets, in batches of {GROUP} requests as the server's loop runs them (µs), against its wall "
        "time per envelope in the run above",
        f"  {'step':70s} {'durable':>8s} {'not dur.':>8s}",
    ]
    for key, label in STEP_LABELS.items():
        lines.append(f"  {label:70s} {durable['steps_us'][key]:8.1f} {volatile['steps_us'][key]:8.1f}")
    rows = [
        ("request handling, sum", "request_handling_us"),
        ("server wall time per envelope in the TCP run (1 / env/s)", "server_wall_us_per_envelope"),
        ("the rest: socket reads (the pump) and writes, trio", "sockets_and_trio_us"),
        (SYNC_LABEL, "sync_us"),
    ]
    for label, key in rows:
        lines.append(f"  {label:70s} {durable[key]:8.1f} {volatile[key]:8.1f}")
    lines += [
        f"  echo server, per envelope: framing (split + unpack 2 frames) {echo['framing_us']:.1f}, "
        f"trio sockets {echo['sockets_and_trio_us']:.1f}, wall {echo['server_wall_us_per_envelope']:.1f}",
        f"  what-if: RelayCore.handle(send) + handle(ack), one transaction per request "
        f"{durable['core_one_per_transaction_us']:.1f} / {volatile['core_one_per_transaction_us']:.1f}; "
        f"{GROUP} envelopes per transaction (group commit) {durable['core_group_commit_us']:.1f} / "
        f"{volatile['core_group_commit_us']:.1f}",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = harness.make_parser(
        "relaysim bench relay",
        __doc__,
        [
            "relaysim bench relay",
            "relaysim bench relay --connections 200 --duration 1 --repeat 1 --json relay.json",
            "relaysim bench relay --json - --check > relay.json",
            "relaysim bench relay --profile signal",
        ],
    )
    p.add_argument(
        "--connections",
        type=whole_number("connections", 2, 4096, why="relay serve's default --max-connections"),
        default=1000,
        metavar="N",
        help="device connections (default: 1000)",
    )
    p.add_argument(
        "--duration",
        type=decimal_number("seconds", 0.0, 3600.0, above_minimum=True),
        default=3.0,
        metavar="S",
        help="timed seconds per slice (default: 3)",
    )
    p.add_argument(
        "--warmup",
        type=decimal_number("seconds", 0.0, 600.0),
        default=0.5,
        metavar="S",
        help="untimed seconds before each (default: 0.5)",
    )
    p.add_argument(
        "--repeat",
        type=whole_number("slices", 1, 1_000),
        default=3,
        metavar="R",
        help="slices per contender (default: 3)",
    )
    p.add_argument(
        "--window",
        type=whole_number("envelopes", 1, 1_000),
        default=1,
        metavar="W",
        help="envelopes in flight per device (default: 1)",
    )
    p.add_argument(
        "--body-size",
        type=whole_number("bytes", _SEQ.size, wire.DEFAULT_MAX_FRAME_SIZE, why=harness.FRAME_WHY),
        default=160,
        metavar="B",
        help="envelope body bytes (default: 160)",
    )
    p.add_argument(
        "--steps",
        type=whole_number("envelopes", 1, 1_000_000),
        default=2000,
        metavar="E",
        help="envelopes for the where-the-time-goes steps (default: 2000)",
    )
    p.add_argument("--seed", type=seed_arg, default=1, help="seed for the devices' keys (default: 1)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        metavar="NAME",
        help="the relays keep what `relay serve --profile NAME` keeps, for information (default: every "
        f"metadata record, the case the target judges); one of {', '.join(sorted(PROFILES))}",
    )
    p.add_argument(
        "--attack",
        action="store_true",
        help="run the attack bench instead (sims/bench/attack.py; see relaysim bench relay --attack --help)",
    )
    harness.add_common_options(p)
    return state_bounds(p)


@contextlib.contextmanager
def _servers(
    kinds: tuple[str, ...], n: int, seed: int, directory: str, profile: str | None = None
) -> Iterator[dict[str, ServerProcess]]:
    servers: dict[str, ServerProcess] = {}
    try:
        for kind in kinds:
            servers[kind] = ServerProcess(kind, n, seed, os.path.join(directory, f"{kind}.db"), profile)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def run(args: argparse.Namespace, progress: harness.Progress) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    memory: dict[str, dict[str, Any]] = {}
    slices: dict[str, list[SliceResult]] = {k: [] for k in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="relaysim-bench-") as directory:
        with _servers(CONTENDERS, args.connections, args.seed, directory, args.profile) as servers:
            loads: dict[str, LoadGenerator] = {}
            try:
                for kind in CONTENDERS:
                    port = servers[kind].wait_ready()
                    before = servers[kind].rss_kb()
                    load = LoadGenerator(kind, port, args.connections, args.seed, args.body_size, args.window)
                    loads[kind] = load
                    load.log_in()
                    time.sleep(0.3)  # let the server settle: every connection idle
                    after = servers[kind].rss_kb()
                    memory[kind] = {
                        "rss_before_kb": before,
                        "rss_after_kb": after,
                        "bytes_per_connection": None
                        if before is None or after is None
                        else (after - before) * 1024 / args.connections,
                    }
                    progress(f"{kind}: {args.connections} connections open and logged in")
                for kind in CONTENDERS:  # one untimed slice each: code paths, caches, SQLite pages
                    loads[kind].run_slice(0.0, min(0.5, args.duration), None)
                for r in range(args.repeat):
                    order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]
                    for kind in order:
                        slices[kind].append(loads[kind].run_slice(args.warmup, args.duration, servers[kind]))
                    progress(f"repeat {r + 1} of {args.repeat}", r + 1, args.repeat)
            finally:
                for load in loads.values():
                    load.close()
        progress("timing the server's steps without sockets")
        steps = measure_server_steps(args.steps, args.body_size, directory, profile=args.profile)
    echo_framing = measure_echo_step(args.steps, args.body_size)
    for kind in CONTENDERS:
        results[kind] = summarise(kind, slices[kind])
    return {
        "config": {
            "connections": args.connections,
            "duration": args.duration,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "window": args.window,
            "body_size": args.body_size,
            "steps": args.steps,
            "profile": args.profile,
            **harness.machine_config(),
        },
        "results": results,
        "memory": memory,
        "ratios": compute_ratios(results, memory),
        "breakdown": compute_breakdown(results, steps, echo_framing),
    }


def main(argv: list[str]) -> int:
    """``relaysim bench relay [options]``; the exit status (0; 1 if a contender failed or, with --check,
    a target was not met; 2 on bad options)."""
    if "--attack" in argv:  # the attack bench: sims/bench/attack.py, options of its own
        from relaysim.sims.bench import attack

        return attack.main([a for a in argv if a != "--attack"])
    parser = _parser()
    args = parser.parse_args(argv)
    # (each number's bounds are its type's, sims.numbers: nan passed "<= 0" and "< 0", and ran for ever)
    if args.profile and args.check:
        parser.error(
            "--check judges the targets, which are for a relay that keeps every metadata record; "
            "leave out --profile (a profile's run is for information)"
        )
    harness.raise_fd_limit(len(CONTENDERS) * args.connections + 256)
    return harness.run_bench(
        "relay", args, lambda progress: run(args, progress), format_report, lambda r: r["ratios"].values()
    )


def _entry(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        return child_main(argv)
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(_entry(sys.argv[1:]))
