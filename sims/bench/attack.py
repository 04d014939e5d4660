"""``relaysim bench relay --attack``: each abuse of issue #14 at a live relay, beside good devices.

The relay runs in a child process (its own core) as ``relaysim relay serve`` runs it: the default
limits (relay.limits.DEFAULT_LIMITS), the default connection caps, per-address caps and
connection rate (relay.server), and an 18-bit registration proof, over a temporary SQLite file.
Its devices are registered before it listens (through ``RelayCore.handle(Register)``: real
XEdDSA signatures, no sockets, in one transaction), each with one-time prekeys; with them the
accounts that fill the groupbig attack's group.

The good devices (--good, default 16) each connect from their own loopback address
(127.0.1.x) and log in. Device i sends to device i + N/2 at a steady --rate messages a second
(default 5: a busy person; well under the relay's per-account 20/s), and acknowledges what is
pushed to it. Each slice follows every message sent in it until it is delivered (pushed to the
recipient) or refused: it stays open past its --duration until the last has arrived, or until a
generous cap (``arrival_cap``: 10 s, or twice --duration) passes, and what has not arrived by then
is counted ``lost`` (``cap_reached`` in the JSON). So a stall of the relay's disk (an fsync of
seconds on a loaded machine) near a slice's end makes messages late, with their latencies, not
missing. Their throughput is the messages sent in the slice and delivered, over --duration; their
latency, each message's, from writing ``send`` to reading the ``deliver``. An attack's cost to them
is their throughput during it over their throughput in the baseline slice before it: what the
relay lost or could not take (a send it refused, a sender held back); that it fell behind shows in
the latencies (``p99_ms``) and ``arrival_wait_s``. Each baseline
starts once the relay process is idle (no thread of it running or waiting for the disk, Linux
/proc; elsewhere after half a second): the previous attack's leftover work is not counted against
the next one's baseline (``waited_for_idle_s`` in the JSON: how long that took).

The attacks, each for --duration seconds (default 3), every loop bounded in count and time, from
addresses of their own in 127.0.2.0/24 .. 127.0.13.0/24 (loopback only: on Linux all of 127/8
reaches the loopback interface):

* memory — pipelined ``receive`` and ``fetch_bundle`` requests (at most 4,000 on each of 4
  logged-in connections) that never read an answer (memory amplification: the relay must stop reading, not buffer);
* slots — as many idle sockets as it can open (at most 600) from one address;
* flood — one attacker account sends to one good device as fast as the relay accepts (queue
  flooding; the per-account send rate and the queue caps bound it);
* register — ``register`` requests for new accounts without a stamp, as fast as answered;
* drain — ``fetch_bundle`` of good accounts' bundles, each taking a one-time prekey;
* enumerate — ``auth_challenge`` + a wrong ``authenticate`` for existing and absent accounts,
  timing the answers (the relay verifies against a stand-in key for an absent device), 400 from
  each address (past the relay's 128-challenge burst of logins per address, the rest refused);
* keys — pipelined ``upload_prekeys`` of 100 signed ML-KEM prekeys each (102 signatures for the
  relay to check, ~11 ms of its CPU a request) on 8 logged-in connections of two attacker devices;
* acks — pipelined ``ack`` of 1,000 envelope ids the attacker never received (a look-up each,
  ~5 ms a request) on 8 logged-in connections of two attacker accounts;
* keylog — pipelined key log reads (``get_key_log_head``, ``get_key_log_consistency`` from the
  first leaf to the whole log, ``get_key_log_entries`` of a page of every leaf), which need no
  login, on 8 connections from one address (its bucket: Limits.key_log_per_address);
* groupread — pipelined ``get_group`` of a group of every device of the run on 8 logged-in
  connections of two attacker accounts, its members (Limits.group_reads_per_account);
* groupbig — the same, by two other attacker accounts, of a group of the most members a group may
  have (1,024: the run's devices and accounts registered for it), each read 32 tokens of the bucket
  (relay.core.MEMBERS_PER_TOKEN) and 1,024 members read from the store;
* groupstate — pipelined ``get_group_state`` of a group state of the largest size (128 KiB, with
  its write keys), which needs no login, on 8 connections from one address
  (Limits.group_state_per_address).

The keys and acks attacks and the last four attack a bucket: each of their connections goes on past
--duration until the relay has refused it once for a rate (``rate_limited``), at most 30 s longer,
reading every answer: so every run reaches the bucket however slow the machine
(``refused_on_every_connection`` in the notes), and what the relay answered is counted, not left
unread on a closed connection.

Memory: the relay process's peak RSS (Linux /proc VmHWM) over the run, against its stated
ceiling at the default connection cap (``relay.server.memory_ceiling`` per connection × 4,096
connections, docs/protocol.md "Limits"). Targets (issue #14, docs/performance.md): the good
devices keep ≥ 80 % of their unattacked throughput during each attack; peak RSS under the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import os
import selectors
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.clients import _primitives
from relaysim.clients.keys import IdentityKeyPair
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.relay.limits import DEFAULT_LIMITS, UNLIMITED
from relaysim.relay.server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_REGISTRATION_POW,
    memory_ceiling,
    serve,
)
from relaysim.relay.store import Store
from relaysim.sims.bench import harness
from relaysim.sims.numbers import decimal_number, state_bounds, whole_number
from relaysim.sims.scenario import seed_arg

__all__ = ["ATTACKS", "main"]

ATTACKS: Final = (
    "memory",
    "slots",
    "flood",
    "register",
    "drain",
    "enumerate",
    "keys",
    "acks",
    "keylog",
    "groupread",
    "groupbig",
    "groupstate",
)
LABELS: Final = {
    "memory": "memory amplification (pipelined requests, answers never read)",
    "slots": "connection-slot exhaustion (idle sockets from one address)",
    "flood": "queue flooding of one good device",
    "register": "registration flood (no stamp)",
    "drain": "prekey draining (bundle fetches of good accounts)",
    "enumerate": "account enumeration by timing (authenticate, existing vs absent)",
    "keys": "key-upload flood (signed ML-KEM prekeys, pipelined)",
    "acks": "acks of envelope ids never received (pipelined)",
    "keylog": "key log reads (head, consistency, entries; no login, one address)",
    "groupread": "group member lists (get_group of a group of every device, pipelined)",
    "groupbig": "group member lists of a 1,024-member group (get_group, 32 tokens each, pipelined)",
    "groupstate": "group state reads (128 KiB answers, no login, one address)",
}
SHARE: Final = 0.8  # issue #14: good devices keep >= 80 % of their unattacked throughput
ONE_TIME_PREKEYS: Final = 20
_PREFIX = struct.Struct(">I")
_STAMP = struct.Struct(">d")
_READY_TIMEOUT = 60.0
_MAX_SLOTS = 600  # sockets the slot attacker opens at most
_MAX_PIPELINED = 4000  # requests each memory attacker writes at most
_ATTACKER_ACCOUNTS = 10
_PIPELINES = 8  # connections each attacker on a bucket (_past_a_bucket) pipelines on
# Before each baseline slice the relay must be idle: no thread of its process running or waiting
# for the disk (Linux /proc) at _IDLE_LOOKS looks in a row, _IDLE_POLL s apart. An attack leaves
# work behind: the attacks on a bucket close their connections with requests written and not yet
# answered (the key log's ~21,000 written against ~5,200 answered, 2026-12-03), and whatever of them
# the relay still reads after the close it handles then; a baseline started under it measures a
# relay still attacked, and on a loaded machine, where that work takes seconds, delivers nothing.
# _IDLE_TIMEOUT is a hang guard.
_IDLE_LOOKS = 5
_IDLE_POLL = 0.02
_IDLE_TIMEOUT = 120.0
# A slice waits this long at least (arrival_cap) after its sending ends for its last messages.
_ARRIVAL_CAP = 10.0
# The attacks on a bucket (_past_a_bucket) go on past --duration until the relay has refused each of
# their connections once, at most this much longer.
_REFUSAL_GUARD = 30.0


def account_name(i: int) -> str:
    return f"good{i:04d}"


def attacker_name(i: int) -> str:
    return f"mallory{i:02d}"


def filler_name(i: int) -> str:
    return f"member{i:04d}"


def big_group_members(goods: int) -> list[str]:
    """The groupbig attack's group as attacker 8 makes it: attacker 9, the good devices, and accounts
    registered to fill it (filler_name) up to the most members a group may have. (Attackers 8 and 9
    read it: 6's and 7's buckets are the groupread attack's, empty just before.)"""
    fillers = wire.MAX_GROUP_MEMBERS - 2 - goods
    return (
        [attacker_name(9)]
        + [account_name(i) for i in range(goods)]
        + [filler_name(i) for i in range(fillers)]
    )


def identity_private(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"relaysim bench attack {seed} {name}".encode()).digest()


def good_address(i: int) -> str:
    return f"127.0.1.{1 + i % 250}"


def attacker_address(attack: str, i: int = 0) -> str:
    return f"127.0.{2 + ATTACKS.index(attack)}.{1 + i % 250}"


def _is_loopback(host: str) -> bool:
    return host.startswith("127.")


# --- the relay process ----------------------------------------------------------------------------


def preregister(core: RelayCore, names: list[str], seed: int) -> None:
    """Register every device through ``core.handle(Register)`` (no sockets), with one-time prekeys."""
    _key, kem_public = _primitives.mlkem_keypair_from_seed(hashlib.sha512(b"bench kem").digest())
    for n, name in enumerate(names):
        identity = IdentityKeyPair(identity_private(seed, name))
        spk = hashlib.sha256(b"spk" + identity.private).digest()
        one_time = tuple(
            wire.Prekey(id=10 + k, public=hashlib.sha256(b"opk%d" % k + identity.private).digest())
            for k in range(ONE_TIME_PREKEYS)
        )
        request = wire.Register(
            id=1,
            account=name,
            device=1,
            registration_id=1 + n,
            identity_key=identity.public,
            signed_prekey=wire.SignedPrekey(1, spk, identity.sign(wire.signed_prekey_message(spk))),
            one_time_prekeys=one_time,
            kem_prekeys=(),
            last_resort_kem_prekey=wire.KemPrekey(
                2, kem_public, identity.sign(wire.kem_prekey_message(kem_public))
            ),
        )
        reply = core.handle(ConnectionContext(1_000_000_000 + n), request)[0]
        if not (isinstance(reply, Reply) and isinstance(reply.frame, wire.Registered)):
            raise harness.BenchError(f"pre-registration of {name} failed: {reply}")


def _abandon_on_cancel() -> dict[str, Any]:
    """trio 0.23 renamed ``cancellable`` to ``abandon_on_cancel`` (as in sims/bench/relay.py)."""
    parameters = inspect.signature(trio.to_thread.run_sync).parameters
    return {"abandon_on_cancel" if "abandon_on_cancel" in parameters else "cancellable": True}


def _child_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sims.bench.attack --child")
    p.add_argument("--child", action="store_true")
    p.add_argument("--good", type=whole_number("good devices", 2, 250), required=True)
    p.add_argument("--seed", type=seed_arg, required=True)
    p.add_argument("--db", required=True)
    return state_bounds(p)


def child_main(argv: list[str]) -> int:
    """The relay process: register the devices, then serve with the defaults until stdin closes."""
    args = _child_parser().parse_args(argv)
    harness.raise_fd_limit(4096)
    with Store(args.db) as store:
        core = RelayCore(store, limits=UNLIMITED)
        names = [account_name(i) for i in range(args.good)] + [
            attacker_name(i) for i in range(_ATTACKER_ACCOUNTS)
        ]
        names += [m for m in big_group_members(args.good) if m not in names]
        with store.transaction():  # one commit: ~1,000 accounts in about a second, not a sync each
            preregister(core, names, args.seed)
        core.limits = DEFAULT_LIMITS  # from here on, as `relaysim relay serve` runs
        core.registration_pow = DEFAULT_REGISTRATION_POW

        async def run_relay() -> None:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    lambda task_status: serve(core, "127.0.0.1", 0, task_status=task_status)
                )
                print(f"READY {server.port}", flush=True)
                await trio.to_thread.run_sync(sys.stdin.buffer.read, **_abandon_on_cancel())
                nursery.cancel_scope.cancel()

        trio.run(run_relay)
    return 0


class RelayProcess:
    def __init__(self, good: int, seed: int, db: str) -> None:
        cmd, env = harness.module_command(
            "sims.bench.attack", "--child", "--good", str(good), "--seed", str(seed), "--db", db
        )
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(_READY_TIMEOUT)
        sel.close()
        line = self.proc.stdout.readline().decode().split() if ready else []
        if len(line) != 2 or line[0] != "READY":
            self.stop()
            raise harness.BenchError(f"the relay process did not start (exit status {self.proc.poll()})")
        self.port = int(line[1])

    def status_kb(self, key: str) -> int | None:
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def busy_threads(self) -> int | None:
        return busy_threads(self.proc.pid)

    def stop(self) -> None:
        harness.stop_child(self.proc)


def busy_threads(pid: int) -> int | None:
    """How many threads of process ``pid`` are running, runnable or in an uninterruptible wait (the
    disk: an fsync), from Linux /proc; None where /proc cannot tell (another system, the process gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    busy = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:  # (a thread that just ended)
            continue
        state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]  # after "pid (comm) "
        busy += state in ("R", "D")
    return busy


async def until_idle(busy: Callable[[], int | None], otherwise: float) -> float | None:
    """Wait until ``busy()`` has said 0 at _IDLE_LOOKS looks in a row; the seconds waited. Where it
    cannot tell (None), sleep ``otherwise`` seconds instead and return None. A BenchError after
    _IDLE_TIMEOUT s (a hang guard: the relay never went idle)."""
    start = trio.current_time()
    idle = 0
    with trio.move_on_after(_IDLE_TIMEOUT):
        while idle < _IDLE_LOOKS:
            n = busy()
            if n is None:
                await trio.sleep(otherwise)
                return None
            idle = idle + 1 if n == 0 else 0
            await trio.sleep(_IDLE_POLL)
        return trio.current_time() - start
    raise harness.BenchError(f"the relay process was still busy {_IDLE_TIMEOUT:g} s later")


# --- clients ------------------------------------------------------------------------------------


class Client:
    """One raw connection: frames out, frames in, by msgpack maps."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream, self.name = stream, name
        self.buf = bytearray()
        self.next_id = 1
        self.lock = trio.Lock()  # a sender and a reader (its acks) share the stream

    @classmethod
    async def open(cls, port: int, source: str, name: str) -> Client:
        if not _is_loopback(source):
            raise ValueError(f"not a loopback address: {source}")
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        return cls(stream, name)

    def frame(self, kind: str, **fields: Any) -> bytes:
        rid = self.next_id
        self.next_id += 1
        body = msgpack.packb({"v": 1, "id": rid, "kind": kind, **fields}, use_bin_type=True)
        return _PREFIX.pack(len(body)) + body

    async def send(self, kind: str, **fields: Any) -> None:
        await self.send_frame(self.frame(kind, **fields))

    async def send_frame(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)

    async def read(self) -> dict[str, Any] | None:
        while True:
            if len(self.buf) >= 4:
                (length,) = _PREFIX.unpack_from(self.buf)
                if len(self.buf) >= 4 + length:
                    body = bytes(self.buf[4 : 4 + length])
                    del self.buf[: 4 + length]
                    out: dict[str, Any] = msgpack.unpackb(body, raw=False)
                    return out
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.buf += data

    async def expect(self, *kinds: str) -> dict[str, Any]:
        while True:
            f = await self.read()
            if f is None:
                raise harness.BenchError(f"{self.name}: the relay closed the connection")
            if f["kind"] in kinds:
                return f
            if f["kind"] == "deliver":  # not ours to count here: acknowledge it
                await self.send("ack", envelope_ids=[f["envelope"]["id"]])

    async def ask(self, kind: str, answer: str, could_not: str, **fields: Any) -> dict[str, Any]:
        """Send ``kind`` and wait for its ``answer``; an error instead stops the bench, saying what
        the attack ``could_not`` do."""
        await self.send(kind, **fields)
        got = await self.expect(answer, "error")
        if got["kind"] != answer:
            raise harness.BenchError(f"{could_not}: {got}")
        return got

    async def log_in(self, seed: int) -> None:
        await self.send("auth_challenge", account=self.name, device=1)
        nonce = (await self.expect("challenge"))["nonce"]
        signature = IdentityKeyPair(identity_private(seed, self.name)).sign(
            wire.auth_message(nonce, self.name, 1)
        )
        await self.send("authenticate", nonce=nonce, signature=signature)
        f = await self.expect("authenticated", "error")
        if f["kind"] != "authenticated":
            raise harness.BenchError(f"{self.name}: login refused: {f}")

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()


@dataclass
class Slice:
    """One slice of the good devices' sending: every message sent in it is followed until it arrives,
    is refused, or the arrival cap passes (then it is counted ``lost``)."""

    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # the slice's sends refused, by error code
    other_errors: dict[str, int] = field(default_factory=dict)  # errors answering anything else (acks)
    seconds: float = 0.0
    sent: int = 0  # messages written in the slice (those the relay refused among them)
    lost: int = 0  # neither delivered nor refused when the arrival cap passed
    late: int = 0  # delivered after the fixed window this bench used to count in (end + min(1 s, duration))
    arrival_wait_s: float = 0.0  # from the slice's end (start + duration) until the last arrived, or the cap
    cap_reached: bool = False


def arrival_cap(duration: float) -> float:
    """How long after its sending ends a slice waits for the last of its messages: generous (a stall
    of the relay's disk, an fsync of seconds on a loaded machine, is late, not lost)."""
    return max(_ARRIVAL_CAP, 2 * duration)


async def good_slice(goods: list[Client], rate: float, duration: float, body_size: int) -> Slice:
    """Every good device sends to its partner at ``rate``/s for ``duration`` s; then the slice stays
    open until every message sent in it has been delivered or refused, or ``arrival_cap`` passes.
    ``delivered`` counts the messages that arrived, each with its own latency (send to deliver):
    a message the relay delivers late is counted, with its latency, not missed."""
    out = Slice()
    n = len(goods)
    pad = bytes(max(0, body_size - _STAMP.size))
    start = time.perf_counter()
    end = start + duration
    fixed_window = end + min(1.0, duration)  # where this bench stopped counting before: ``late`` after it
    # A message is (recipient, its stamp): a device has one partner, whose stamps only grow.
    outstanding: set[tuple[str, float]] = set()
    awaiting_answer: dict[tuple[str, int], tuple[str, float]] = {}  # (sender, request id) -> message
    settled = trio.Event()
    sending = [n]

    def settle() -> None:
        if not sending[0] and not outstanding:
            settled.set()

    async def sender(i: int) -> None:
        c, to = goods[i], account_name((i + n // 2) % n)
        k = 0
        while (t := start + (k + i / n) / rate) < end:
            await trio.sleep_until(trio.current_time() + max(0.0, t - time.perf_counter()))
            stamp = time.perf_counter()
            rid = c.next_id
            data = c.frame("send", to=to, envelopes=[{"device": 1, "body": _STAMP.pack(stamp) + pad}])
            outstanding.add((to, stamp))
            awaiting_answer[(c.name, rid)] = (to, stamp)
            out.sent += 1
            await c.send_frame(data)
            k += 1
        sending[0] -= 1
        settle()

    async def reader(c: Client) -> None:
        while True:
            f = await c.read()
            if f is None:
                raise harness.BenchError(f"{c.name}: the relay closed a good device's connection")
            if f["kind"] == "deliver":
                now = time.perf_counter()
                env = f["envelope"]
                await c.send("ack", envelope_ids=[env["id"]])
                if len(env["body"]) >= _STAMP.size:
                    (sent,) = _STAMP.unpack_from(env["body"])
                    if (c.name, sent) in outstanding:
                        outstanding.discard((c.name, sent))
                        out.delivered += 1
                        out.latencies_ms.append((now - sent) * 1000)
                        out.late += now > fixed_window
                        settle()
            elif f["kind"] == "error":
                message = awaiting_answer.pop((c.name, f.get("id", 0)), None)
                if message is None:  # not a send's answer (an ack refused): not a refused message
                    out.other_errors[f["code"]] = out.other_errors.get(f["code"], 0) + 1
                else:  # a send refused: it will not arrive, nothing to wait for
                    out.refused[f["code"]] = out.refused.get(f["code"], 0) + 1
                    outstanding.discard(message)
                    settle()
            elif f["kind"] == "sent":
                awaiting_answer.pop((c.name, f.get("id", 0)), None)

    async with trio.open_nursery() as nursery:
        for c in goods:
            nursery.start_soon(reader, c)
        async with trio.open_nursery() as senders:
            for i in range(n):
                senders.start_soon(sender, i)
        with trio.move_on_after(arrival_cap(duration)):
            await settled.wait()
        out.arrival_wait_s = max(0.0, time.perf_counter() - end)
        nursery.cancel_scope.cancel()
    out.lost = len(outstanding)
    out.cap_reached = bool(outstanding)
    out.seconds = duration
    return out


# --- the attacks ---------------------------------------------------------------------------------


@dataclass
class AttackStats:
    requests: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def answer(self, f: dict[str, Any] | None) -> None:
        key = "closed" if f is None else (f["code"] if f["kind"] == "error" else f["kind"])
        self.answers[key] = self.answers.get(key, 0) + 1


async def _reader_counting(c: Client, stats: AttackStats) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        while True:
            f = await c.read()
            stats.answer(f)
            if f is None:
                return


async def attack_memory(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    clients = []
    try:
        for i in range(4):
            c = await Client.open(port, attacker_address("memory", i), attacker_name(i))
            await c.log_in(seed)
            clients.append(c)
        deadline = trio.current_time() + duration

        async def pipeline(c: Client) -> None:
            batch = b"".join(
                c.frame("receive", limit=10_000)
                if k % 2
                else c.frame("fetch_bundle", account=account_name(0))
                for k in range(100)
            )
            with trio.move_on_at(deadline), contextlib.suppress(trio.BrokenResourceError, OSError):
                for _ in range(_MAX_PIPELINED // 100):
                    await c.stream.send_all(batch)  # blocks once the relay stops reading: back-pressure
                    stats.requests += 100

        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(pipeline, c)
        await trio.sleep_until(deadline)
    finally:
        for c in clients:
            await c.aclose()


async def attack_slots(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    socks = []
    deadline = trio.current_time() + duration
    try:
        with trio.move_on_at(deadline):
            for _ in range(_MAX_SLOTS):
                try:
                    with trio.fail_after(1.0):
                        c = await Client.open(port, attacker_address("slots"), "slot")
                except (OSError, trio.TooSlowError):
                    stats.answer({"kind": "error", "code": "connect_failed"})
                    continue
                socks.append(c)
                stats.requests += 1
            await trio.sleep_until(deadline)
        # how many the relay kept: a closed one reads EOF (or server_busy) at once
        kept = 0
        for c in socks:
            with trio.move_on_after(0.01) as waiting:
                f = await c.read()
                stats.answer(f)
            if waiting.cancelled_caught:
                kept += 1
        stats.notes["sockets_kept_open_by_relay"] = kept
        # and a new good device can still connect and log in
        with trio.fail_after(5):
            probe = await Client.open(port, good_address(249), account_name(0))
            try:
                await probe.send("ping")
                stats.notes["new_good_connection_answered"] = (await probe.expect("pong", "error"))[
                    "kind"
                ] == "pong"
            finally:
                await probe.aclose()
    finally:
        for c in socks:
            await c.aclose()


async def attack_flood(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    c = await Client.open(port, attacker_address("flood"), attacker_name(4))
    try:
        await c.log_in(seed)
        deadline = trio.current_time() + duration
        body = bytes(1024)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reader_counting, c, stats)
            with trio.move_on_at(deadline):
                for _ in range(50_000):
                    await c.send("send", to=account_name(0), envelopes=[{"device": 1, "body": body}])
                    stats.requests += 1
                    await trio.sleep(0)
            nursery.cancel_scope.cancel()
    finally:
        await c.aclose()


async def attack_register(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    deadline = trio.current_time() + duration
    key = IdentityKeyPair(identity_private(seed, "sybil"))
    spk = hashlib.sha256(b"spk").digest()
    _k, kem_public = _primitives.mlkem_keypair_from_seed(hashlib.sha512(b"bench kem").digest())
    signed = {"id": 1, "public": spk, "signature": key.sign(wire.signed_prekey_message(spk))}
    kem = {"id": 2, "public": kem_public, "signature": key.sign(wire.kem_prekey_message(kem_public))}
    k = 0
    with trio.move_on_at(deadline):
        while k < 20_000:
            c = await Client.open(port, attacker_address("register", k // 50), "sybil")
            try:
                for _ in range(50):
                    await c.send(
                        "register",
                        account=f"sybil{k:06d}",
                        device=1,
                        registration_id=1,
                        identity_key=key.public,
                        signed_prekey=signed,
                        one_time_prekeys=[],
                        kem_prekeys=[],
                        last_resort_kem_prekey=kem,
                    )
                    stats.requests += 1
                    k += 1
                    f = await c.read()
                    stats.answer(f)
                    if f is None:
                        break
            finally:
                await c.aclose()


async def attack_drain(port: int, seed: int, duration: float, stats: AttackStats, goods: int) -> None:
    c = await Client.open(port, attacker_address("drain"), attacker_name(5))
    try:
        await c.log_in(seed)
        deadline = trio.current_time() + duration
        with trio.move_on_at(deadline):
            for k in range(20_000):
                await c.send("fetch_bundle", account=account_name(k % goods))
                stats.requests += 1
                f = await c.expect("bundle", "error")
                if f["kind"] == "bundle":
                    has = any(d.get("one_time_prekey") for d in f["devices"])
                    stats.answer({"kind": "bundle with a one-time prekey" if has else "bundle without"})
                else:
                    stats.answer(f)
    finally:
        await c.aclose()


async def attack_enumerate(port: int, seed: int, duration: float, stats: AttackStats, goods: int) -> None:
    times: dict[str, list[float]] = {"existing": [], "absent": []}
    deadline = trio.current_time() + duration
    wrong = bytes(64)
    with trio.move_on_at(deadline):
        for k in range(2000):
            c = await Client.open(port, attacker_address("enumerate", k // 20), "probe")
            try:
                for j in range(20):
                    which = "existing" if (k + j) % 2 else "absent"
                    account = account_name((k + j) % goods) if which == "existing" else f"nobody{k:05d}"
                    await c.send("auth_challenge", account=account, device=1)
                    f = await c.expect("challenge", "error")
                    stats.requests += 1
                    if f["kind"] != "challenge":
                        stats.answer(f)
                        break
                    t0 = time.perf_counter()
                    await c.send("authenticate", nonce=f["nonce"], signature=wrong)
                    f = await c.expect("authenticated", "error")
                    times[which].append((time.perf_counter() - t0) * 1e6)
                    stats.answer({"kind": f"{which}: {f.get('code', f['kind'])}"})
            finally:
                await c.aclose()
            k += 1
    for which, ts in times.items():
        stats.notes[f"authenticate_median_us_{which}"] = round(statistics.median(ts), 1) if ts else None


async def attack_keys(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    """Pipelined ``upload_prekeys`` of 100 signed ML-KEM prekeys each by attackers 6 and 7, past their
    devices' buckets (Limits.keys_per_device)."""
    _k, kem_public = _primitives.mlkem_keypair_from_seed(hashlib.sha512(b"bench kem").digest())
    signed = {}
    for name in (attacker_name(6), attacker_name(7)):
        signature = IdentityKeyPair(identity_private(seed, name)).sign(wire.kem_prekey_message(kem_public))
        signed[name] = [{"id": 100 + k, "public": kem_public, "signature": signature} for k in range(100)]
    await _past_a_bucket(
        port,
        seed,
        duration,
        stats,
        "keys",
        lambda c: c.frame("upload_prekeys", kem_prekeys=signed[c.name]),
        accounts=(attacker_name(6), attacker_name(7)),
        one_address=False,
    )


async def attack_acks(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    """Pipelined ``ack`` of 1,000 envelope ids never received by attackers 6 and 7, past their
    accounts' buckets (Limits.ack_unknown_per_account)."""
    ids = [hashlib.sha256(b"never sent %d" % k).digest()[:16] for k in range(wire.MAX_ACK_IDS)]
    await _past_a_bucket(
        port,
        seed,
        duration,
        stats,
        "acks",
        lambda c: c.frame("ack", envelope_ids=ids),
        accounts=(attacker_name(6), attacker_name(7)),
        one_address=False,
    )


async def _past_a_bucket(
    port: int,
    seed: int,
    duration: float,
    stats: AttackStats,
    attack: str,
    frame: Callable[[Client], bytes],
    *,
    accounts: tuple[str, ...] = (),
    one_address: bool = True,
    setup: Callable[[Client], Any] | None = None,
) -> None:
    """``frame(client)`` written over and over on _PIPELINES connections (logged in as ``accounts`` in
    turn, if any; from one address of the attack's own if ``one_address``, else one each), each until
    --duration has passed and the relay has refused it once for a rate (rate_limited): so every run
    reaches the bucket, however slow the machine; at most _MAX_PIPELINED requests a connection and
    _REFUSAL_GUARD s past the duration. ``setup(first client)`` runs before. Every answer counted;
    ``refused_on_every_connection`` in the notes says whether each connection met its bucket, and
    ``attack_s`` how long the attack wrote (its buckets refill meanwhile)."""
    clients: list[Client] = []
    refused: list[trio.Event] = []
    try:
        for i in range(_PIPELINES):
            name = accounts[i % len(accounts)] if accounts else f"{attack}{i}"
            c = await Client.open(port, attacker_address(attack, 0 if one_address else i), name)
            if accounts:
                await c.log_in(seed)
            clients.append(c)
            refused.append(trio.Event())
        if setup is not None:
            await setup(clients[0])
        deadline = trio.current_time() + duration

        async def reader(c: Client, refusal: trio.Event) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                while (f := await c.read()) is not None:
                    stats.answer(f)
                    if f["kind"] == "error" and f["code"] == "rate_limited":
                        refusal.set()
                stats.answer(None)

        async def pipeline(c: Client, refusal: trio.Event) -> None:
            with contextlib.suppress(trio.BrokenResourceError, OSError):
                for _ in range(_MAX_PIPELINED):
                    if refusal.is_set() and trio.current_time() >= deadline:
                        return
                    await c.stream.send_all(frame(c))  # blocks once the relay stops reading
                    stats.requests += 1
                await refusal.wait()

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for c, refusal in zip(clients, refused, strict=True):
                nursery.start_soon(reader, c, refusal)
            with trio.move_on_at(deadline + _REFUSAL_GUARD):
                async with trio.open_nursery() as writers:
                    for c, refusal in zip(clients, refused, strict=True):
                        writers.start_soon(pipeline, c, refusal)
            nursery.cancel_scope.cancel()
        stats.notes["refused_on_every_connection"] = all(r.is_set() for r in refused)
        # how long the buckets had to refill while the attack wrote (its answers' upper bound)
        stats.notes["attack_s"] = round(trio.current_time() - started, 3)
    finally:
        for c in clients:
            await c.aclose()


async def attack_keylog(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    """The key log's reads, which need no login, from one address: its head, a consistency proof
    from the first leaf to the whole log, and every leaf (a page), in turn, past the address's bucket
    (Limits.key_log_per_address)."""
    size = [1]

    async def setup(c: Client) -> None:
        head = await c.ask(
            "get_key_log_head", "key_log_head", "the key log attack could not read the log's head"
        )
        size[0] = max(1, head["head"]["tree_size"])
        stats.requests += 1
        stats.answer({"kind": "key_log_head"})

    def frame(c: Client) -> bytes:
        k = c.next_id % 3
        if k == 0:
            return c.frame("get_key_log_head")
        if k == 1:
            return c.frame("get_key_log_consistency", first=1, second=size[0])
        return c.frame("get_key_log_entries", start=0, end=size[0] - 1)

    await _past_a_bucket(port, seed, duration, stats, "keylog", frame, setup=setup)


_GROUP = hashlib.sha256(b"relaysim bench attack group").digest()[:16]
_BIG_GROUP = hashlib.sha256(b"relaysim bench attack big group").digest()[:16]


async def attack_groupread(
    port: int, seed: int, duration: float, stats: AttackStats, goods: int, *, big: bool = False
) -> None:
    """``get_group`` of a group of every device of the run (the attackers' and the good ones), pipelined
    by attackers 6 and 7, its members, past their accounts' buckets (Limits.group_reads_per_account).
    ``big``: by attackers 8 and 9, of a group of MAX_GROUP_MEMBERS (big_group_members), a read 32
    tokens (the groupbig attack)."""
    group = _BIG_GROUP if big else _GROUP
    readers = (attacker_name(8), attacker_name(9)) if big else (attacker_name(6), attacker_name(7))
    members = (
        big_group_members(goods) if big else [attacker_name(7)] + [account_name(i) for i in range(goods)]
    )

    async def setup(c: Client) -> None:  # the first reader makes the group (a write: its send bucket)
        await c.ask(
            "create_group",
            "group_updated",
            "the group attack could not make its group",
            group=group,
            members=members,
        )

    await _past_a_bucket(
        port,
        seed,
        duration,
        stats,
        "groupbig" if big else "groupread",
        lambda c: c.frame("get_group", group=group),
        accounts=readers,
        one_address=False,
        setup=setup,
    )


async def attack_groupstate(port: int, seed: int, duration: float, stats: AttackStats) -> None:
    """``get_group_state`` (no login) of a group state of the largest size (128 KiB, an answer a whole
    frame), with its write keys, from one address past its bucket (Limits.group_state_per_address)."""
    group = hashlib.sha256(b"relaysim bench attack group state").digest()[:16]
    state = bytes(wire.MAX_GROUP_STATE)
    secret = identity_private(seed, "group state writer")
    write_key = _primitives.ed25519_public(secret)

    async def setup(c: Client) -> None:  # the state stored as a group's first version
        signature = _primitives.ed25519_sign(secret, wire.group_state_message(group, 0, state, [write_key]))
        await c.ask(
            "put_group_state",
            "group_state_stored",
            "the group state attack could not store its state",
            group=group,
            version=0,
            state=state,
            write_key=write_key,
            signature=signature,
            write_keys=[write_key],
        )

    await _past_a_bucket(
        port,
        seed,
        duration,
        stats,
        "groupstate",
        lambda c: c.frame("get_group_state", group=group, write_keys=True),
        setup=setup,
    )


# --- the run ------------------------------------------------------------------------------------


def _summary(s: Slice) -> dict[str, Any]:
    lat = sorted(s.latencies_ms)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
    return {
        "delivered": s.delivered,
        "per_s": s.delivered / s.seconds if s.seconds else 0.0,
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": p99,
        "refused": s.refused,
        "other_errors": s.other_errors,
        "sent": s.sent,
        "lost": s.lost,
        "late": s.late,
        "arrival_wait_s": round(s.arrival_wait_s, 3),
        "cap_reached": s.cap_reached,
    }


async def _run(
    args: argparse.Namespace, relay: RelayProcess, progress: Callable[[str], None]
) -> dict[str, Any]:
    port = relay.port
    goods = [await Client.open(port, good_address(i), account_name(i)) for i in range(args.good)]
    results: dict[str, Any] = {}
    peak = 0
    try:
        for c in goods:
            await c.log_in(args.seed)
        progress(f"{args.good} good devices logged in")
        await good_slice(goods, args.rate, min(0.5, args.duration), args.body_size)  # warm-up, untimed
        for attack in ATTACKS if args.only is None else args.only:
            # The relay idle first: the warm-up's or the last attack's work done, its connections dropped.
            waited = await until_idle(relay.busy_threads, min(0.5, args.duration))
            base = await good_slice(goods, args.rate, args.duration, args.body_size)
            peak = max(peak, relay.status_kb("VmHWM") or 0)
            stats = AttackStats()
            attacked = Slice()
            runner = {
                "memory": lambda s: attack_memory(port, args.seed, args.duration, s),
                "slots": lambda s: attack_slots(port, args.seed, args.duration, s),
                "flood": lambda s: attack_flood(port, args.seed, args.duration, s),
                "register": lambda s: attack_register(port, args.seed, args.duration, s),
                "drain": lambda s: attack_drain(port, args.seed, args.duration, s, args.good),
                "enumerate": lambda s: attack_enumerate(port, args.seed, args.duration, s, args.good),
                "keys": lambda s: attack_keys(port, args.seed, args.duration, s),
                "acks": lambda s: attack_acks(port, args.seed, args.duration, s),
                "keylog": lambda s: attack_keylog(port, args.seed, args.duration, s),
                "groupread": lambda s: attack_groupread(port, args.seed, args.duration, s, args.good),
                "groupbig": lambda s: attack_groupread(
                    port, args.seed, args.duration, s, args.good, big=True
                ),
                "groupstate": lambda s: attack_groupstate(port, args.seed, args.duration, s),
            }[attack]

            async def good(into: list[Slice]) -> None:
                into.append(await good_slice(goods, args.rate, args.duration, args.body_size))

            got: list[Slice] = []
            # a hang guard: the good slice waits for its last messages, a bucket attack for its refusals
            with trio.fail_after(args.duration * 4 + 30 + arrival_cap(args.duration) + _REFUSAL_GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(runner, stats)
                    nursery.start_soon(good, got)
            attacked = got[0]
            rss = relay.status_kb("VmRSS")
            peak = max(peak, relay.status_kb("VmHWM") or 0)
            results[attack] = {
                "baseline": _summary(base),
                "attacked": _summary(attacked),
                "share": (attacked.delivered / base.delivered) if base.delivered else None,
                "attacker_requests": stats.requests,
                "attacker_answers": stats.answers,
                "notes": stats.notes,
                "relay_rss_kb_after": rss,
                "waited_for_idle_s": waited,
            }
            progress(f"{attack}: good throughput {results[attack]['share'] or 0:.0%} of unattacked")
    finally:
        for c in goods:
            await c.aclose()
    return {"results": results, "peak_rss_kb": peak}


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relaysim-attack-") as directory:
        relay = RelayProcess(args.good, args.seed, os.path.join(directory, "relay.db"))
        try:
            start_kb = relay.status_kb("VmRSS")
            measured = trio.run(_run, args, relay, progress)
        finally:
            relay.stop()
    ceiling_kb = (start_kb or 0) + memory_ceiling(DEFAULT_MAX_QUEUED_BYTES, wire.DEFAULT_MAX_FRAME_SIZE) * (
        DEFAULT_MAX_CONNECTIONS
    ) // 1024
    ratios: dict[str, Any] = {}
    for attack, r in measured["results"].items():
        t = harness.Target(
            f"good_share_{attack}", f"good devices' throughput under {attack} / unattacked", ">=", SHARE
        )
        ratios[t.key] = harness.target_row(t, r["share"])
    mem = harness.Target(
        "peak_rss_kb", "relay peak RSS in KiB (ceiling: memory_ceiling x default cap)", "<=", ceiling_kb
    )
    ratios[mem.key] = harness.target_row(
        mem, float(measured["peak_rss_kb"]) if measured["peak_rss_kb"] else None
    )
    return {
        "config": {
            "good": args.good,
            "rate": args.rate,
            "duration": args.duration,
            "body_size": args.body_size,
            "attacks": list(measured["results"]),
            **harness.machine_config(),
        },
        "results": measured["results"],
        "memory": {
            "start_rss_kb": start_kb,
            "peak_rss_kb": measured["peak_rss_kb"],
            "ceiling_kb": ceiling_kb,
        },
        "ratios": ratios,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"relay under attack: {cfg['good']} good devices at {cfg['rate']:g} msg/s each, "
        f"{cfg['duration']:g} s per slice, relay with its defaults ({cfg['machine']})",
        "",
        f"{'attack':<10} {'good/s base':>11} {'good/s att':>10} {'share':>6} {'p99 base':>9} {'p99 att':>8} "
        f"{'lost':>5} {'att req':>8}  attacker's answers",
    ]
    capped = False
    for attack, r in report["results"].items():
        b, a = r["baseline"], r["attacked"]
        answers = ", ".join(f"{k} {v}" for k, v in sorted(r["attacker_answers"].items()))
        notes = "; ".join(f"{k} {v}" for k, v in r["notes"].items())
        share = "-" if r["share"] is None else f"{r['share']:.0%}"
        # (reports from before the slices followed each message have no "lost")
        lost = b.get("lost", 0) + a.get("lost", 0)
        cap = b.get("cap_reached") or a.get("cap_reached")
        capped = capped or bool(cap)
        lines.append(
            f"{attack:<10} {b['per_s']:>11.1f} {a['per_s']:>10.1f} {share:>6} {_fmt(b['p99_ms']):>9} "
            f"{_fmt(a['p99_ms']):>8} {str(lost) + ('*' if cap else ''):>5} {r['attacker_requests']:>8}  {answers}"
        )
        if notes:
            lines.append(f"{'':<10} {notes}")
    if capped:
        lines.append(
            f"* a slice's arrival cap passed (at least {_ARRIVAL_CAP:g} s after its sending ended) with "
            "messages neither delivered nor refused: counted lost"
        )
    m = report["memory"]
    lines += [
        "",
        f"relay RSS: {m['start_rss_kb']} KiB at start, peak {m['peak_rss_kb']} KiB; stated ceiling "
        f"{m['ceiling_kb'] / 1024 / 1024:.1f} GiB (relay.server.memory_ceiling x {DEFAULT_MAX_CONNECTIONS} connections)",
        "",
        f"targets ({harness.DOC}, issue #14):",
    ]
    for r in report["ratios"].values():
        verdict = "n/a" if r["met"] is None else "met" if r["met"] else "MISSED"
        value = "-" if r["value"] is None else f"{r['value']:.2f}"
        lines.append(f"  {r['label']:<62} {value:>12}  {r['comparison']} {r['target']:<10.2f} {verdict}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = harness.make_parser(
        "relaysim bench relay --attack",
        __doc__,
        [
            "relaysim bench relay --attack",
            "relaysim bench relay --attack --duration 1 --only memory slots --check",
        ],
    )
    p.add_argument(
        "--good",
        type=whole_number("good devices", 2, 250),
        default=16,
        metavar="N",
        help="good devices (default: 16)",
    )
    p.add_argument(
        "--rate",
        type=decimal_number(
            "messages a second", 0.0, 15.0, above_minimum=True, why="the relay allows an account 20/s"
        ),
        default=5.0,
        metavar="R",
        help="messages a second per good device (default: 5)",
    )
    p.add_argument(
        "--duration",
        type=decimal_number("seconds", 0.0, 60.0, above_minimum=True),
        default=3.0,
        metavar="S",
        help="seconds per slice (default: 3)",
    )
    p.add_argument(
        "--body-size",
        type=whole_number("bytes", _STAMP.size, wire.DEFAULT_MAX_FRAME_SIZE, why=harness.FRAME_WHY),
        default=160,
        metavar="B",
        help="envelope body bytes (default: 160)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=ATTACKS,
        metavar="ATTACK",
        help=f"run only these ({', '.join(ATTACKS)}) (default: all of them)",
    )
    p.add_argument("--seed", type=seed_arg, default=1, help="seed for the devices' keys (default: 1)")
    harness.add_common_options(p)
    return state_bounds(p)


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.good % 2:  # (its range, and the other numbers' bounds, are their types')
        parser.error(f"--good {args.good}: expected an even number from 2 to 250")
    harness.raise_fd_limit(4096)
    return harness.run_bench(
        "relay --attack",
        args,
        lambda progress: run(args, progress),
        format_report,
        lambda r: r["ratios"].values(),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(child_main(sys.argv[1:]))
    raise SystemExit(main(sys.argv[1:]))
