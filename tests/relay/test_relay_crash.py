"""Crash durability of ``relaysim relay serve``: killed at any instant, it loses nothing it
acknowledged and keeps nothing half done.

The README's promise: the relay "survives a crash without losing an accepted message". Here the
real relay runs as its own process (profile ``keep-everything``: it keeps every metadata record,
address book and block, so that every effect of a request is in its database) while devices drive a
random mix of requests over TCP — registrations (and a device's again, with a new identity key),
prekey uploads, bundle fetches, sends and sealed sends (some pipelined by the hundred), receives and
acks, server-side groups created, changed and sent to (one of them large), group state, blocks,
contact discovery — and the operator places and removes taps and serves preservations on its socket
(``--admin``, relay/admin.py). Every answer a client gets is written down (:class:`Ledger`). The
relay is then killed with SIGKILL — after a random time, right after some answer went out, right
after a large ``group_send`` or an operator's order was written to it, while it starts, and while it
starts again on what a kill left — or stopped with SIGTERM under load, and restarted on the same
database, which must then hold:

- every acknowledged effect, exactly once: each envelope a sender was told is ``sent``, in its
  recipient's queue (or delivered and acknowledged), each device ``registered`` with its key in the
  key-transparency log, each prekey upload, group change, group state, block, tap and preservation;
- nothing half applied of a request no one was told about: all of a send's or group send's copies or
  none, each with its metadata record; a group's epoch bumped exactly with its member change; the
  key log holding exactly the devices' keys; no one-time prekey handed out twice, nor kept once
  handed out; no acknowledged envelope queued again;
- ``PRAGMA integrity_check`` ok, and a relay that answers as before (each device logs in, drains its
  queue, fetches a bundle whose key-log head matches the log on disk).

SIGKILL tests what the relay writes to the file before it answers, not what reaches the disk before
a power cut (the kernel keeps a killed process's writes): the fsync is ``relay.server``'s own concern
(its docstring, "Group commit"), tested there.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import trio

from relaysim.relay import wire
from tests.helpers import DeviceKeys, RelayProcess, WireClient, put_group_state

PROFILE_ARGS: Final = (
    "--profile",
    "keep-everything",
    # nothing refused for its rate or size: every refusal here is about the request itself
    "--send-rate-address",
    "off",
    "--fetch-rate-requester",
    "off",
    "--fetch-rate-target",
    "off",
    "--discover-rate-account",
    "off",
    "--key-rate-device",
    "off",
    "--ack-unknown-rate-account",
    "off",
    "--queue-envelopes",
    "off",
    "--queue-bytes",
    "off",
    "--connection-rate",  # (every device connects from 127.0.0.1, late accounts each anew)
    "off",
)
TOLD: Final = "told"  # the client was answered: the effect is acknowledged
IN_FLIGHT: Final = "in flight"  # asked, never answered: either outcome is allowed, but whole
REFUSED: Final = "refused"  # an error answer: nothing of it may be there

# Who is who: talkers send to and receive from each other (u0 with two devices); the crowd only
# swells the large group (its devices never connect, so their queues only grow).
TALKERS: Final = (("u0", 1), ("u0", 2), ("u1", 1), ("u2", 1), ("u3", 1))
CROWD: Final = tuple((f"c{i}", d) for i in range(10) for d in (1, 2, 3, 4))
BIG_GROUP: Final = b"G" * 16  # u0's: every talker and the crowd
SMALL_GROUP: Final = b"g" * 16  # u1's, changed by u1 alone (one change at a time)
STATE_GROUP: Final = b"s" * 16  # encrypted group state, put by u2 alone
BLOCKED: Final = "c0"  # blocked and unblocked by u3 alone (it never sends, so no send is dropped)
BIG_BODY: Final = 24 * 1024


@dataclass
class Outcome:
    status: str = IN_FLIGHT


@dataclass
class SendOp(Outcome):
    """One send, sealed send or group send: its body is unique, so its copies can be found by it."""

    body: bytes = b""
    fanout: frozenset[tuple[str, int]] = frozenset()  # the devices a copy was for
    ids: tuple[bytes, ...] = ()  # as told
    sender: str = ""
    sealed: bool = False  # (the relay does not know a sealed send's sender)
    taps: dict[str, tuple[str, bool]] = field(default_factory=dict)  # in place when it was asked


@dataclass
class Change(Outcome):
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


@dataclass
class Group:
    members: set[str]
    admins: set[str]
    created: Outcome = field(default_factory=Outcome)
    applied: list[Change] = field(default_factory=list)  # the changes that took effect, in order
    pending: Change | None = None  # asked, not answered (one at a time)

    def at(self, epoch: int) -> tuple[set[str], set[str]]:
        """(members, admins) at ``epoch`` (the first ``epoch`` changes applied)."""
        members, admins = set(self.members), set(self.admins)
        for c in self.applied[:epoch] if epoch <= len(self.applied) else [*self.applied, self.pending]:
            assert c is not None
            members = (members - set(c.remove)) | set(c.add)
            admins = (admins | set(c.admins)) & members
        return members, admins


@dataclass
class Prekeys:
    """One device's one-time prekeys (EC and KEM) as its uploads and the bundles handed out say."""

    allowed: set[int] = field(default_factory=set)  # ids the store may hold
    allowed_kem: set[int] = field(default_factory=set)
    handed: set[int] = field(default_factory=set)  # handed out in a bundle someone was given
    handed_kem: set[int] = field(default_factory=set)


class Kill(Exception):
    """The relay went away under a client (it was killed)."""


class Ledger:
    """What the clients were told, and what they asked without being answered."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, int], DeviceKeys] = {}
        self.registered: dict[tuple[str, int], Outcome] = {}  # each device's first registration
        self.leaves: dict[bytes, Outcome] = {}  # the key-log leaf of every registration asked for
        self.rekeys: list[tuple[DeviceKeys, Outcome]] = []  # u3's new identity keys, in order
        self.sends: dict[bytes, SendOp] = {}  # by body
        self.seen: dict[bytes, bytes] = {}  # envelope id -> body: told to a sender or delivered
        self.seen_by: dict[bytes, tuple[str, int]] = {}  # envelope id -> the device it was delivered to
        self.stamps: dict[bytes, int] = {}  # envelope id -> its acceptance time (ms), as delivered
        self.preserved: set[bytes] = set()  # acked under a preservation: archived, not deleted
        self.delivered: set[bytes] = set()  # ids in a delivery someone got (push or receive)
        self.acks: dict[bytes, str] = {}  # envelope id -> TOLD or IN_FLIGHT
        self.prekeys: dict[tuple[str, int], Prekeys] = {}
        self.groups: dict[bytes, Group] = {}
        self.states: list[tuple[int, bytes, Outcome]] = []  # STATE_GROUP's versions as put
        self.blocks: list[tuple[bool, Outcome]] = []  # u3's block (True) / unblock of BLOCKED
        self.contacts: dict[str, list[tuple[tuple[str, ...], Outcome]]] = {}
        self.taps: dict[str, Outcome] = {}
        self.tapped: dict[str, tuple[str, bool]] = {}  # tap id -> (target, content)
        self.removed: dict[str, Outcome] = {}  # taps the operator removed
        self.kills: list[tuple[str, float]] = []  # (mode, seconds into the round): for a look by hand
        self.preservations: list[tuple[str, float, Outcome]] = []
        self.problems: list[str] = []
        self.answers = 0
        self.on_answer: Callable[[], None] = lambda: None
        self._n = 0

    def body(self, kind: str, size: int) -> bytes:
        self._n += 1
        head = b"crash %s %d:" % (kind.encode(), self._n)
        return head + b"." * max(0, size - len(head))

    def send_op(self, body: bytes, fanout: frozenset[tuple[str, int]], sender: str) -> SendOp:
        """A new send (or group send) of ``body``, with the taps placed before it was asked."""
        taps = {t: self.tapped[t] for t, o in self.taps.items() if o.status == TOLD and t not in self.removed}
        op = self.sends[body] = SendOp(body=body, fanout=fanout, sender=sender, taps=taps)
        return op

    def frozen(self, envelope_id: bytes) -> bool:
        """Whether a preservation told done before now covers the envelope (18 U.S.C. 2703(f): what
        was held at service): one on its recipient or its known sender served after it was accepted."""
        op = self.sends[self.seen[envelope_id]]
        accounts = {self.seen_by[envelope_id][0]} | (set() if op.sealed else {op.sender})
        accepted = self.stamps[envelope_id] / 1000
        return any(
            o.status == TOLD and account in accounts and since >= accepted
            for account, since, o in self.preservations
        )

    def answered(self) -> None:
        self.answers += 1
        self.on_answer()

    def devices_of(self, account: str) -> list[int]:
        return sorted(d for (a, d), o in self.registered.items() if a == account and o.status == TOLD)

    def got(self, me: tuple[str, int], envelope: wire.Envelope) -> None:
        """A delivery to ``me``: it must be of something sent to it, and not acknowledged already."""
        op = self.sends.get(envelope.body)
        if op is None:
            self.problems.append(
                f"{me} got envelope {envelope.id.hex()} that no one sent: {envelope.body[:40]!r}"
            )
            return
        if me not in op.fanout:
            self.problems.append(
                f"{me} got a copy of {envelope.body[:30]!r}, which was for {sorted(op.fanout)}"
            )
        if self.acks.get(envelope.id) == TOLD:
            self.problems.append(f"{me} got envelope {envelope.id.hex()} again after its ack was answered")
        self.seen[envelope.id] = envelope.body
        self.seen_by[envelope.id] = me
        self.stamps[envelope.id] = envelope.timestamp
        self.delivered.add(envelope.id)


# --- devices and the operator, over the wire -------------------------------------------------------


class Device:
    """One device's connection, driven by one task; ``call`` raises Kill when the relay is gone."""

    def __init__(self, ledger: Ledger, keys: DeviceKeys, client: WireClient, rng: random.Random) -> None:
        self.ledger, self.keys, self.client, self.rng = ledger, keys, client, rng
        self.me = (keys.account, keys.device)
        self.unacked: list[bytes] = []

    @classmethod
    async def open(cls, ledger: Ledger, port: int, keys: DeviceKeys, rng: random.Random) -> Device:
        return cls(ledger, keys, await WireClient.connect(port), rng)

    async def call(
        self, make: Callable[[int], wire.Request], sent: Callable[[], None] | None = None
    ) -> wire.Response:
        try:
            answer = await self.client.request(make, sent=sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError) as e:
            raise Kill from e
        self.ledger.answered()
        return answer

    def _take_pushes(self) -> None:
        for push in self.client.pushes:
            self.ledger.got(self.me, push.envelope)
            self.unacked.append(push.envelope.id)
        self.client.pushes.clear()

    async def register(self, one_time: int = 3, kem: int = 1) -> Outcome:
        ledger, key = self.ledger, self.me
        request = self.keys.register(one_time=one_time, kem=kem)
        outcome = ledger.registered[key] = ledger.leaves[self._leaf()] = Outcome()
        p = ledger.prekeys.setdefault(key, Prekeys())
        p.allowed |= {k.id for k in request.one_time_prekeys}
        p.allowed_kem |= {k.id for k in request.kem_prekeys}
        answer = await self.call(lambda i: dataclasses.replace(request, id=i))
        outcome.status = TOLD if isinstance(answer, wire.Registered) else REFUSED
        if outcome.status == TOLD:
            p.allowed = {k.id for k in request.one_time_prekeys}
            p.allowed_kem = {k.id for k in request.kem_prekeys}
        else:
            ledger.problems.append(f"register {key} refused: {answer}")
        return outcome

    def _leaf(self) -> bytes:
        return wire.kt_leaf(self.keys.account, self.keys.device, self.keys.identity_key)

    async def reregister(self) -> None:
        """This device registers again with a new identity key (a reinstall): the new key joins
        the key log beside the old one, and its prekeys replace the old ones."""
        ledger, old = self.ledger, self.keys
        new = DeviceKeys(
            old.account,
            old.device,
            random.Random(self.rng.random()).randbytes,
            delivery_token=old.delivery_token,
            _next_prekey_id=old._next_prekey_id,  # (prekey ids stay unique to the device)
        )
        request = new.register(one_time=3, kem=1)
        old._next_prekey_id = new._next_prekey_id
        outcome = Outcome()
        ledger.rekeys.append((new, outcome))
        ledger.leaves[wire.kt_leaf(new.account, new.device, new.identity_key)] = outcome
        p = ledger.prekeys[self.me]
        p.allowed |= {k.id for k in request.one_time_prekeys}
        p.allowed_kem |= {k.id for k in request.kem_prekeys}
        answer = await self.call(lambda i: dataclasses.replace(request, id=i))
        if isinstance(answer, wire.Registered):
            outcome.status = TOLD
            self.keys = ledger.keys[self.me] = new
            p.allowed = {k.id for k in request.one_time_prekeys}
            p.allowed_kem = {k.id for k in request.kem_prekeys}
        else:
            outcome.status = REFUSED
            ledger.problems.append(f"re-registration of {self.me} refused: {answer}")

    async def login(self) -> None:
        keys = self.keys
        challenge = await self.call(
            lambda i: wire.AuthChallenge(id=i, account=keys.account, device=keys.device)
        )
        assert isinstance(challenge, wire.Challenge), challenge
        answer = await self.call(lambda i: keys.answer(challenge.nonce, i))
        assert isinstance(answer, wire.Authenticated), answer

    async def send(self, to: str, size: int, *, sealed: bool = False) -> None:
        ledger = self.ledger
        devices = ledger.devices_of(to)
        body = ledger.body("sealed" if sealed else "send", size)
        op = ledger.send_op(body, frozenset((to, d) for d in devices), self.me[0])
        op.sealed = sealed
        envelopes = tuple(wire.OutgoingEnvelope(d, body) for d in devices)
        token = ledger.keys[(to, 1)].delivery_token
        answer = await self.call(
            lambda i: (
                wire.SealedSend(id=i, to=to, delivery_token=token, envelopes=envelopes)
                if sealed
                else wire.Send(id=i, to=to, envelopes=envelopes)
            )
        )
        self._sent(op, answer)

    async def burst(self, to: str, n: int) -> None:
        """``n`` sends to ``to`` in one write (pipelined: they share a batch, or several)."""
        ledger = self.ledger
        devices = ledger.devices_of(to)
        bodies = [ledger.body("burst", self.rng.randrange(10, 200)) for _ in range(n)]
        ops = [ledger.send_op(b, frozenset((to, d) for d in devices), self.me[0]) for b in bodies]
        makes = [
            partial(_send, to=to, envelopes=tuple(wire.OutgoingEnvelope(d, b) for d in devices))
            for b in bodies
        ]

        def answered(index: int, answer: wire.Response) -> None:
            ledger.answered()
            self._sent(ops[index], answer)

        try:
            await self.client.pipeline(makes, answered)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError) as e:
            raise Kill from e

    def _sent(self, op: SendOp, answer: wire.Response) -> None:
        if isinstance(answer, wire.Sent | wire.GroupSent):
            op.status, op.ids = TOLD, answer.envelope_ids
            if len(op.ids) != len(op.fanout):
                self.ledger.problems.append(f"told {len(op.ids)} ids for a send to {len(op.fanout)} devices")
            for i in op.ids:
                self.ledger.seen[i] = op.body
        else:
            op.status = REFUSED

    async def group_send(
        self, group: bytes, size: int, *, on_sent: Callable[[], None] = lambda: None
    ) -> None:
        ledger = self.ledger
        g = ledger.groups[group]
        epoch = len(g.applied)
        members, _ = g.at(epoch)
        if g.created.status != TOLD or self.me[0] not in members:
            return
        body = ledger.body("group", size)
        fanout = frozenset((a, d) for a in members for d in ledger.devices_of(a) if (a, d) != self.me)
        op = ledger.send_op(body, fanout, self.me[0])
        answer = await self.call(
            lambda i: wire.GroupSend(id=i, group=group, epoch=epoch, body=body), sent=on_sent
        )
        self._sent(op, answer)
        if isinstance(answer, wire.ErrorFrame) and answer.code not in ("stale_group", "unknown_group"):
            ledger.problems.append(f"group_send refused: {answer}")

    async def receive(self) -> None:
        self._take_pushes()
        answer = await self.call(lambda i: wire.Receive(id=i, limit=50))
        if not isinstance(answer, wire.Envelopes):
            self.ledger.problems.append(f"receive refused: {answer}")
            return
        for envelope in answer.envelopes:
            self.ledger.got(self.me, envelope)
            self.unacked.append(envelope.id)
        self._take_pushes()
        if self.unacked:
            ids = tuple(dict.fromkeys(self.unacked))[:200]
            del self.unacked[: len(self.unacked)]
            for i in ids:
                self.ledger.acks.setdefault(i, IN_FLIGHT)
                if self.ledger.frozen(i):
                    self.ledger.preserved.add(i)
            acked = await self.call(lambda n: wire.Ack(id=n, envelope_ids=ids))
            if isinstance(acked, wire.Acked):
                for i in ids:
                    self.ledger.acks[i] = TOLD
            else:
                self.ledger.problems.append(f"ack refused: {acked}")

    async def upload_prekeys(self) -> None:
        one_time, kem = self.keys.prekeys(3), self.keys.kem_prekeys(1)
        p = self.ledger.prekeys[self.me]
        p.allowed |= {k.id for k in one_time}
        p.allowed_kem |= {k.id for k in kem}
        answer = await self.call(
            lambda i: wire.UploadPrekeys(id=i, one_time_prekeys=one_time, kem_prekeys=kem)
        )
        if isinstance(answer, wire.PrekeysUploaded):
            p.allowed, p.allowed_kem = {k.id for k in one_time}, {k.id for k in kem}
        else:
            self.ledger.problems.append(f"upload_prekeys refused: {answer}")

    async def fetch_bundle(self, account: str) -> None:
        answer = await self.call(lambda i: wire.FetchBundle(id=i, account=account, key_log=True))
        if not isinstance(answer, wire.Bundle):
            self.ledger.problems.append(f"fetch_bundle {account} refused: {answer}")
            return
        for b in answer.devices:
            p = self.ledger.prekeys.setdefault((account, b.device), Prekeys())
            if b.one_time_prekey is not None:
                if b.one_time_prekey.id in p.handed:
                    self.ledger.problems.append(
                        f"prekey {b.one_time_prekey.id} of {account}/{b.device} handed out twice"
                    )
                p.handed.add(b.one_time_prekey.id)
            if not b.kem_prekey_last_resort:
                if b.kem_prekey.id in p.handed_kem:
                    self.ledger.problems.append(
                        f"KEM prekey {b.kem_prekey.id} of {account}/{b.device} handed out twice"
                    )
                p.handed_kem.add(b.kem_prekey.id)

    async def change_group(self) -> None:
        g = self.ledger.groups[SMALL_GROUP]
        members, _ = g.at(len(g.applied))
        if g.created.status != TOLD:
            return
        if "u3" in members:
            change = Change(remove=("u3",))
        else:
            change = Change(add=("u3",), admins=("u3",) if self.rng.random() < 0.5 else ())
        g.pending = change
        answer = await self.call(
            lambda i: wire.ChangeGroup(
                id=i, group=SMALL_GROUP, add=change.add, remove=change.remove, admins=change.admins
            )
        )
        g.pending = None
        if isinstance(answer, wire.GroupUpdated):
            change.status = TOLD
            g.applied.append(change)
            if answer.epoch != len(g.applied):
                self.ledger.problems.append(
                    f"change_group told epoch {answer.epoch}, expected {len(g.applied)}"
                )
        else:
            self.ledger.problems.append(f"change_group refused: {answer}")

    async def put_state(self) -> None:
        versions = [v for v, _, o in self.ledger.states if o.status == TOLD]
        version = versions[-1] + 1 if versions else 0
        state = self.ledger.body("state", 64)
        outcome = Outcome()
        self.ledger.states.append((version, state, outcome))
        answer = await self.call(lambda i: put_group_state(i, STATE_GROUP, version, state))
        outcome.status = TOLD if isinstance(answer, wire.GroupStateStored) else REFUSED
        if outcome.status == REFUSED:
            self.ledger.problems.append(f"put_group_state {version} refused: {answer}")

    async def toggle_block(self) -> None:
        told = [b for b, o in self.ledger.blocks if o.status == TOLD]
        block = not (told and told[-1])
        outcome = Outcome()
        self.ledger.blocks.append((block, outcome))
        answer = await self.call(
            lambda i: wire.Block(id=i, account=BLOCKED) if block else wire.Unblock(id=i, account=BLOCKED)
        )
        outcome.status = TOLD if isinstance(answer, wire.Blocked | wire.Unblocked) else REFUSED
        if outcome.status == REFUSED:
            self.ledger.problems.append(f"{'block' if block else 'unblock'} refused: {answer}")

    async def discover(self) -> None:
        names = tuple(self.rng.sample([a for a, _ in TALKERS + CROWD], 3))
        outcome = Outcome()
        self.ledger.contacts.setdefault(self.me[0], []).append((names, outcome))
        answer = await self.call(lambda i: wire.DiscoverContacts(id=i, contacts=names))
        outcome.status = TOLD if isinstance(answer, wire.ContactsFound) else REFUSED
        if outcome.status == REFUSED:
            self.ledger.problems.append(f"discover_contacts refused: {answer}")


def _send(i: int, *, to: str, envelopes: tuple[wire.OutgoingEnvelope, ...]) -> wire.Request:
    return wire.Send(id=i, to=to, envelopes=envelopes)


async def _after(delay: float, fn: Callable[[], object]) -> None:
    await trio.sleep(delay)
    fn()


async def talk(device: Device, late: list[str], on_big_send: Callable[[], None]) -> None:
    """One talker's random requests until the relay is killed."""
    rng, me = device.rng, device.me
    others = sorted({a for a, _ in TALKERS} - {me[0]})
    ops: list[tuple[int, Callable[[], object]]] = [
        (30, lambda: device.send(rng.choice(others), rng.randrange(10, 400))),
        (10, lambda: device.send(rng.choice(others), rng.randrange(10, 400), sealed=True)),
        (20, device.receive),
        (3, lambda: device.burst(rng.choice(others), rng.randrange(20, 300))),
        (5, device.upload_prekeys),
        (8, lambda: device.fetch_bundle(rng.choice([*others, *late[-3:]]))),
        (8, lambda: device.group_send(SMALL_GROUP, rng.randrange(10, 200))),
        (2, lambda: device.group_send(BIG_GROUP, rng.randrange(10, 200))),
    ]
    if me == ("u0", 1):
        ops.append((4, lambda: device.group_send(BIG_GROUP, BIG_BODY, on_sent=on_big_send)))
    if me == ("u1", 1):
        ops.append((8, device.change_group))
    if me == ("u2", 1):
        ops.append((8, device.put_state))
    if me == ("u3", 1):
        ops.append((6, device.toggle_block))
        ops.append((2, device.reregister))
    if me[1] == 1:
        ops.append((3, device.discover))
    weights = [w for w, _ in ops]
    try:
        while True:
            (_, op) = rng.choices(ops, weights)[0]
            await op()  # type: ignore[misc]
    except Kill:
        return


async def register_late(ledger: Ledger, port: int, late: list[str], rng: random.Random, round_: int) -> None:
    """New accounts, one after another, each on a connection of its own."""
    n = 0
    try:
        while True:
            account = f"late{round_}x{n}"
            n += 1
            keys = ledger.keys[(account, 1)] = DeviceKeys.make(account, 1, seed=round_)
            device = await Device.open(ledger, port, keys, rng)
            try:
                if (await device.register()).status == TOLD:
                    late.append(account)
            finally:
                await device.client.aclose()
            await trio.sleep(rng.uniform(0, 0.03))
    except (Kill, OSError):
        return


async def operate(ledger: Ledger, path: Path, rng: random.Random, on_order: Callable[[], None]) -> None:
    """The operator's orders, one line each, on the admin socket."""
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError:
        return
    n = len(ledger.taps)
    try:
        async with stream:
            while True:
                await trio.sleep(rng.uniform(0.01, 0.06))
                target = rng.choice(["u0", "u1", "u2", "u3"])
                placed = [t for t, o in ledger.taps.items() if o.status == TOLD and t not in ledger.removed]
                if placed and rng.random() < 0.2:
                    tap_id = rng.choice(placed)
                    outcome = ledger.removed[tap_id] = Outcome()
                    order: dict[str, object] = {"op": "remove_tap", "id": tap_id}
                elif rng.random() < 0.6:
                    tap_id = f"tap{n}"
                    n += 1
                    outcome = ledger.taps[tap_id] = Outcome()
                    content = rng.random() < 0.5
                    ledger.tapped[tap_id] = (target, content)
                    order = {
                        "op": "add_tap",
                        "id": tap_id,
                        "target": target,
                        "start": 0,
                        "end": 4e9,
                        "content": content,
                    }
                else:
                    outcome = Outcome()
                    since = time.time()
                    ledger.preservations.append((target, since, outcome))
                    order = {"op": "preserve", "account": target, "since": since}
                await stream.send_all(json.dumps(order).encode() + b"\n")
                if rng.random() < 0.3:
                    on_order()
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    line += chunk
                answer = json.loads(line)
                outcome.status = TOLD if answer == {"ok": True} else REFUSED
                if outcome.status == REFUSED:
                    ledger.problems.append(f"operator's {order} refused: {answer}")
                ledger.answered()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return


# --- what the database must hold -------------------------------------------------------------------


@dataclass
class Snapshot:
    """The relay's database as a restarted relay found it (read beside it: WAL lets a reader in)."""

    integrity: list[str]
    copies: dict[bytes, dict[bytes, tuple[str, int]]]  # body -> envelope id -> device, queued or archived
    queued: set[bytes]
    archived: set[bytes]
    records: dict[str, list[tuple[object, ...]]]  # kind -> (account, device, recipient, envelope id)
    key_log: list[tuple[int, bytes]]
    devices: dict[tuple[str, int], bytes]  # -> identity key
    accounts: set[str]
    prekeys: dict[tuple[str, int], set[int]]
    kem_prekeys: dict[tuple[str, int], set[int]]
    groups: dict[bytes, int]  # -> epoch
    members: dict[bytes, dict[str, bool]]  # -> account -> admin
    state: tuple[int, bytes] | None
    blocks: set[tuple[str, str]]
    contacts: dict[str, set[str]]
    taps: set[str]
    preservations: set[tuple[str, float]]
    intercepts: list[tuple[str, str, bytes | None, bytes | None]]  # tap id, kind, envelope id, body

    @classmethod
    def read(cls, db: Path) -> Snapshot:
        con = sqlite3.connect(db, isolation_level=None)
        try:

            def rows(sql: str) -> list[tuple[object, ...]]:
                return con.execute(sql).fetchall()

            copies: dict[bytes, dict[bytes, tuple[str, int]]] = {}
            queued = set()
            archived = set()
            for table in ("envelopes", "archive"):
                for i, a, d, body in rows(f"SELECT id, account, device, body FROM {table}"):
                    copies.setdefault(bytes(body), {})[bytes(i)] = (str(a), int(d))  # type: ignore[arg-type]
                    if table == "envelopes":
                        queued.add(bytes(i))  # type: ignore[arg-type]
                    else:
                        archived.add(bytes(i))  # type: ignore[arg-type]
            records: dict[str, list[tuple[object, ...]]] = {}
            for kind, *rest in rows(
                "SELECT kind, account, device, recipient_account, envelope_id FROM metadata ORDER BY seq"
            ):
                records.setdefault(str(kind), []).append(
                    tuple(bytes(v) if isinstance(v, bytes) else v for v in rest)
                )
            prekeys: dict[tuple[str, int], set[int]] = {}
            kem: dict[tuple[str, int], set[int]] = {}
            for table, into in (("prekeys", prekeys), ("kem_prekeys", kem)):
                for a, d, i in rows(f"SELECT account, device, id FROM {table}"):
                    into.setdefault((str(a), int(d)), set()).add(int(i))  # type: ignore[call-overload]
            members: dict[bytes, dict[str, bool]] = {}
            for g, a, admin in rows("SELECT group_id, account, admin FROM group_members"):
                members.setdefault(bytes(g), {})[str(a)] = bool(admin)  # type: ignore[arg-type]
            states = rows(f"SELECT version, state FROM group_states WHERE id = x'{STATE_GROUP.hex()}'")
            contacts: dict[str, set[str]] = {}
            for a, c in rows("SELECT account, contact FROM contacts"):
                contacts.setdefault(str(a), set()).add(str(c))
            return cls(
                integrity=[str(r[0]) for r in rows("PRAGMA integrity_check")],
                copies=copies,
                queued=queued,
                archived=archived,
                records=records,
                key_log=[
                    (int(i), bytes(leaf)) for i, leaf in rows("SELECT idx, leaf FROM key_log ORDER BY idx")
                ],  # type: ignore[call-overload]
                devices={
                    (str(a), int(d)): bytes(k)
                    for a, d, k in rows("SELECT account, device, identity_key FROM devices")
                },  # type: ignore[call-overload]
                accounts={str(r[0]) for r in rows("SELECT account FROM accounts")},
                prekeys=prekeys,
                kem_prekeys=kem,
                groups={bytes(g): int(e) for g, e in rows("SELECT id, epoch FROM groups")},  # type: ignore[call-overload]
                members=members,
                state=(int(states[0][0]), bytes(states[0][1])) if states else None,  # type: ignore[call-overload]
                blocks={(str(a), str(b)) for a, b in rows("SELECT account, blocked FROM blocks")},
                contacts=contacts,
                taps={str(r[0]) for r in rows("SELECT id FROM taps")},
                preservations={
                    (str(a), float(s)) for a, s in rows("SELECT account, served FROM preservations")
                },  # type: ignore[arg-type]
                intercepts=[
                    (str(t), str(k), None if i is None else bytes(i), None if b is None else bytes(b))  # type: ignore[call-overload]
                    for t, k, i, b in rows("SELECT tap_id, kind, envelope_id, body FROM intercepts")
                ],
            )
        finally:
            con.close()


def _allowed(outcomes: list[tuple[object, Outcome]], initial: object) -> list[object]:
    """Of a sequence of one writer's requests, the values the store may hold: the last told one's
    (``initial`` if none was told), and those of any asked after it and not refused."""
    told = [i for i, (_, o) in enumerate(outcomes) if o.status == TOLD]
    start = told[-1] if told else 0
    return ([] if told else [initial]) + [v for v, o in outcomes[start:] if o.status != REFUSED]


def check(s: Snapshot, ledger: Ledger) -> list[str]:
    """Everything acknowledged is there exactly once; nothing unacknowledged is there in part."""
    problems = [*ledger.problems]
    if s.integrity != ["ok"]:
        problems.append(f"PRAGMA integrity_check: {s.integrity[:5]}")
    # Envelopes: each send's copies all there (queued, archived, or delivered and acknowledged) or none.
    sends = {kind: [r[3] for r in s.records.get(kind, [])] for kind in ("send", "sealed_send")}
    send_records: dict[bytes, int] = {}
    for i in sends["send"] + sends["sealed_send"]:
        send_records[i] = send_records.get(i, 0) + 1  # type: ignore[index]
    present_ids: set[bytes] = set()
    for body in s.copies.keys() - ledger.sends.keys():
        problems.append(f"queued envelope(s) no one sent: {body[:40]!r}")
    by_body_seen: dict[bytes, set[bytes]] = {}
    for i, body in ledger.seen.items():
        by_body_seen.setdefault(body, set()).add(i)
    for body, op in ledger.sends.items():
        stored = s.copies.get(body, {})
        ids = set(stored) | by_body_seen.get(body, set()) | set(op.ids)
        devices = list(stored.values())
        what = f"{body[:24]!r} ({op.status}, for {len(op.fanout)} devices)"
        if len(set(devices)) != len(devices) or not set(devices) <= op.fanout:
            problems.append(f"{what}: copies for {sorted(devices)}")
        if op.status == REFUSED and ids:
            problems.append(f"{what}: refused, yet {len(ids)} copies are there")
        if op.status == TOLD:
            lost = [i for i in op.ids if i not in stored and i not in ledger.acks]
            if lost:
                problems.append(f"{what}: {len(lost)} acknowledged copies lost")
            if ids - set(op.ids):
                problems.append(f"{what}: copies under ids the sender was not told")
        if op.status == IN_FLIGHT and ids and len(ids) != len(op.fanout):
            problems.append(f"{what}: unacknowledged, and {len(ids)} of its copies are there: half applied")
        present_ids |= ids
    for i in present_ids:
        if send_records.get(i, 0) != 1:
            problems.append(f"envelope {i.hex()}: {send_records.get(i, 0)} send records, not 1")
    for i in send_records.keys() - present_ids:
        problems.append(f"a send record for envelope {i.hex()}, which is nowhere")
    for i in ledger.preserved:
        if ledger.acks.get(i) == TOLD and i not in s.archived:
            problems.append(
                f"envelope {i.hex()} was preserved (2703(f)) and acknowledged, and it is not archived"
            )
    delivered = {r[3] for r in s.records.get("delivery", [])}
    for i in ledger.delivered - delivered:
        problems.append(f"envelope {i.hex()} was delivered, and its delivery record is missing")
    acked = {r[3] for r in s.records.get("acknowledgement", [])}
    for i, status in ledger.acks.items():
        if status == TOLD and i in s.queued:
            problems.append(f"envelope {i.hex()}: its ack was answered, and it is queued again")
        if status == TOLD and i not in acked:
            problems.append(f"envelope {i.hex()}: its ack was answered, and its record is missing")
    # Taps: each copy of a send asked while a tap on its sender or recipient was in place (and not
    # removed since) is intercepted with its record, and a wiretap's with its body.
    intercepted = {(tap, i): body for tap, kind, i, body in s.intercepts if kind in sends}
    for op in ledger.sends.values():
        if op.status == REFUSED or not op.taps:
            continue
        copies = {**{i: ledger.seen_by.get(i) for i in op.ids}, **s.copies.get(op.body, {})}
        for i, device in copies.items():
            for tap, (target, content) in op.taps.items():
                if device is None or tap in ledger.removed or target not in (op.sender, device[0]):
                    continue
                if (tap, i) not in intercepted:
                    problems.append(
                        f"{tap} on {target} missed {op.body[:24]!r} to {device}, sent while it was in place"
                    )
                elif intercepted[(tap, i)] != (op.body if content else None):
                    problems.append(
                        f"{tap} (content: {content}) holds {intercepted[(tap, i)]!r:.40} for {op.body[:24]!r}"
                    )
    for tap, kind, i, _ in s.intercepts:
        if ledger.taps.get(tap, Outcome(REFUSED)).status == REFUSED:  # (a removed tap's intercepts stay)
            problems.append(f"an intercept of {tap!r}, a tap never placed")
        if kind in sends and i not in send_records:
            problems.append(f"{tap!r} intercepted {kind} {i!r}, of which there is no record")
    # Devices, accounts and the key-transparency log, in step.
    registrations = {(r[0], r[1]) for r in s.records.get("registration", [])}
    for key, outcome in ledger.registered.items():
        there = s.devices.get(key)
        keys = [ledger.keys[key].identity_key] + [
            k.identity_key for k, o in ledger.rekeys if (k.account, k.device) == key and o.status == IN_FLIGHT
        ]
        if outcome.status == TOLD and there not in keys:
            problems.append(f"{key} was told registered; the store holds {there!r}")
        if outcome.status == TOLD and key not in registrations:
            problems.append(f"{key} was told registered; its registration record is missing")
        if outcome.status == REFUSED and there is not None:
            problems.append(f"{key}: its registration was refused, yet it is there")
    if [i for i, _ in s.key_log] != list(range(len(s.key_log))):
        problems.append(f"key log indexes {[i for i, _ in s.key_log][:10]}...: not 0, 1, 2, ...")
    leaves = [leaf for _, leaf in s.key_log]
    if len(set(leaves)) != len(leaves):
        problems.append(f"the key log holds a leaf twice ({len(leaves)} leaves, {len(set(leaves))} distinct)")
    held = {wire.kt_leaf(a, d, k) for (a, d), k in s.devices.items()}
    if held - set(leaves):
        problems.append(f"{len(held - set(leaves))} devices' keys are not in the key log")
    for leaf in leaves:
        status = ledger.leaves[leaf].status if leaf in ledger.leaves else "never asked for"
        if status == REFUSED or (status == IN_FLIGHT and leaf not in held) or leaf not in ledger.leaves:
            problems.append(f"the key log holds {wire.kt_leaf_decode(leaf)[:2]}, a registration {status}")
    for leaf, outcome in ledger.leaves.items():
        if outcome.status == TOLD and leaf not in leaves:
            problems.append(
                f"a registration was told done, and its key {wire.kt_leaf_decode(leaf)[:2]} is not logged"
            )
    if {a for a, _ in s.devices} != s.accounts:
        problems.append(
            f"accounts without devices or devices without accounts: {s.accounts ^ {a for a, _ in s.devices}}"
        )
    # One-time prekeys: none handed out twice (Device.fetch_bundle), none kept once handed out.
    for key, p in ledger.prekeys.items():
        for name, held, allowed, handed in (
            ("prekeys", s.prekeys.get(key, set()), p.allowed, p.handed),
            ("KEM prekeys", s.kem_prekeys.get(key, set()), p.allowed_kem, p.handed_kem),
        ):
            if held & handed:
                problems.append(f"{key}: {name} {sorted(held & handed)} handed out, and still there")
            if not held <= allowed:
                problems.append(f"{key}: {name} {sorted(held - allowed)} from an upload since replaced")
    # Groups: the epoch moves with its member change, never without it.
    for gid, g in ledger.groups.items():
        epoch = s.groups.get(gid)
        if epoch is None:
            if g.created.status == TOLD:
                problems.append(f"group {gid!r}: told created, and it is not there")
            continue
        if g.created.status == REFUSED:
            problems.append(f"group {gid!r}: refused, and it is there")
        k = len(g.applied)
        if not (epoch == k or (epoch == k + 1 and g.pending is not None)):
            problems.append(
                f"group {gid!r} at epoch {epoch}: {k} changes were told, {g.pending} is in flight"
            )
            continue
        members, admins = g.at(epoch)
        held = s.members.get(gid, {})
        if set(held) != members or {a for a, admin in held.items() if admin} != admins:
            problems.append(
                f"group {gid!r} at epoch {epoch} has {held}; its changes say {members}, admins {admins}"
            )
    # One writer's sequences: the last told value, or one asked after it.
    allowed = _allowed([((v, st), o) for v, st, o in ledger.states], None)
    if s.state not in allowed:
        problems.append(f"group state {s.state}: expected one of {allowed}")
    allowed = _allowed([(b, o) for b, o in ledger.blocks], False)
    if (("u3", BLOCKED) in s.blocks) not in allowed:
        problems.append(
            f"u3's block of {BLOCKED} is {('u3', BLOCKED) in s.blocks}; expected one of {allowed}"
        )
    for account, lists in ledger.contacts.items():
        allowed = _allowed([(frozenset(n), o) for n, o in lists], frozenset())
        if frozenset(s.contacts.get(account, set())) not in allowed:
            problems.append(
                f"{account}'s address book is {s.contacts.get(account)}; expected one of {allowed}"
            )
    # The operator's orders.
    for tap, outcome in ledger.taps.items():
        removed = ledger.removed.get(tap, Outcome(REFUSED)).status
        if removed == TOLD or (removed == IN_FLIGHT and outcome.status == TOLD):
            expected = [False] if removed == TOLD else [True, False]
        else:
            expected = {TOLD: [True], REFUSED: [False], IN_FLIGHT: [True, False]}[outcome.status]
        if (tap in s.taps) not in expected:
            problems.append(
                f"tap {tap} (placed: {outcome.status}, removed: {removed}): in place is {tap in s.taps}"
            )
    for account, since, outcome in ledger.preservations:
        if outcome.status == TOLD and (account, since) not in s.preservations:
            problems.append(f"the preservation of {account} at {since} was told done, and it is not there")
    return problems


def resolve(s: Snapshot, ledger: Ledger) -> None:
    """Settle what was in flight by what the restarted relay holds (checked whole by ``check``):
    from now on it must stay so."""
    for key, outcome in ledger.registered.items():
        if outcome.status == IN_FLIGHT:
            outcome.status = TOLD if key in s.devices else REFUSED
    for keys, outcome in ledger.rekeys:
        if outcome.status == IN_FLIGHT:
            outcome.status = (
                TOLD if s.devices.get((keys.account, keys.device)) == keys.identity_key else REFUSED
            )
            if outcome.status == TOLD:
                ledger.keys[(keys.account, keys.device)] = keys
    for body, op in ledger.sends.items():
        if op.status == IN_FLIGHT:
            there = set(s.copies.get(body, {})) | {i for i, b in ledger.seen.items() if b == body}
            op.status, op.ids = (TOLD, tuple(there)) if there else (REFUSED, ())
            for i in there:
                ledger.seen[i] = body
    for i, status in list(ledger.acks.items()):
        if status == IN_FLIGHT:
            if i in s.queued:
                del ledger.acks[i]  # not done: the device gets it again and acknowledges it again
            else:
                ledger.acks[i] = TOLD
    for gid, g in ledger.groups.items():
        if g.created.status == IN_FLIGHT:
            g.created.status = TOLD if gid in s.groups else REFUSED
        if g.pending is not None:
            if s.groups.get(gid) == len(g.applied) + 1:
                g.pending.status = TOLD
                g.applied.append(g.pending)
            g.pending = None
    for version, state, outcome in ledger.states:
        if outcome.status == IN_FLIGHT:
            outcome.status = TOLD if s.state == (version, state) else REFUSED
    for block, outcome in ledger.blocks:
        if outcome.status == IN_FLIGHT:
            outcome.status = TOLD if (("u3", BLOCKED) in s.blocks) == block else REFUSED
    for account, lists in ledger.contacts.items():
        for names, outcome in lists:
            if outcome.status == IN_FLIGHT:
                outcome.status = TOLD if s.contacts.get(account, set()) == set(names) else REFUSED
    for tap, outcome in ledger.taps.items():
        if outcome.status == IN_FLIGHT:
            outcome.status = TOLD if tap in s.taps else REFUSED
    for tap, outcome in ledger.removed.items():
        if outcome.status == IN_FLIGHT:
            outcome.status = REFUSED if tap in s.taps else TOLD
    for account, since, outcome in ledger.preservations:
        if outcome.status == IN_FLIGHT:
            outcome.status = TOLD if (account, since) in s.preservations else REFUSED


# --- the rounds ------------------------------------------------------------------------------------


class Relay:
    """The relay process of one round, on the test's database, with the operator's socket."""

    def __init__(self, tmp: Path) -> None:
        self.db, self.log, self.admin = tmp / "relay.db", tmp / "relay.log", tmp / "admin.sock"
        self.startup = 0.5  # seconds from spawn to serving, as last seen

    def args(self) -> tuple[str, ...]:
        return (*PROFILE_ARGS, "--admin", str(self.admin))

    async def start(self) -> RelayProcess:
        def started() -> RelayProcess:
            began = time.monotonic()
            relay = RelayProcess(self.db, self.log, *self.args(), wait=False)
            relay.wait_for_port(ready="operator socket on")
            self.startup = time.monotonic() - began
            return relay

        return await trio.to_thread.run_sync(started)

    async def kill_while_starting(self, rng: random.Random) -> None:
        """Started and killed while it comes up (importing, opening and migrating the database,
        recovering its WAL, loading its keys and orders), or just after: whatever a kill before left.
        The moment is drawn over the time the last start took."""
        relay = await trio.to_thread.run_sync(
            lambda: RelayProcess(self.db, self.log, *self.args(), wait=False)
        )
        await trio.sleep(rng.uniform(0.5, 1.1) * self.startup)
        relay.proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(relay.proc.wait)


async def set_up_devices(ledger: Ledger, port: int, rng: random.Random) -> list[Device]:
    """Talkers and the crowd registered, the groups made; returns the talkers' devices."""
    for account, device in TALKERS + CROWD:
        ledger.keys[(account, device)] = DeviceKeys.make(account, device)
    talkers = []
    for key in TALKERS:
        d = await Device.open(ledger, port, ledger.keys[key], rng)
        if key[1] == 1:
            await d.register()
        else:  # a linked device: registered by a connection logged in as another device of the account
            first = await Device.open(ledger, port, ledger.keys[(key[0], 1)], rng)
            await first.login()
            await Device(ledger, ledger.keys[key], first.client, rng).register()
            await first.client.aclose()
        talkers.append(d)
    for account in sorted({a for a, _ in CROWD}):
        first = await Device.open(ledger, port, ledger.keys[(account, 1)], rng)
        await first.register(one_time=0, kem=0)
        await first.login()
        for d in (2, 3, 4):
            await Device(ledger, ledger.keys[(account, d)], first.client, rng).register(one_time=0, kem=0)
        await first.client.aclose()
    for d in talkers:
        await d.login()
    for owner, gid, members in (
        (talkers[0], BIG_GROUP, sorted({a for a, _ in TALKERS + CROWD} - {"u0"})),
        (talkers[2], SMALL_GROUP, ["u0", "u2"]),
    ):
        g = ledger.groups[gid] = Group(members={owner.me[0], *members}, admins={owner.me[0]})
        answer = await owner.call(
            lambda i, gid=gid, members=members: wire.CreateGroup(id=i, group=gid, members=tuple(members))
        )  # type: ignore[misc]
        assert isinstance(answer, wire.GroupUpdated), answer
        g.created.status = TOLD
    return talkers


MODES: Final = (
    "after a time",
    "right after an answer",
    "during a large group send",
    "during an order",
    "by SIGTERM, under load",  # not a crash: a clean stop must lose nothing either, and exit 0
)


async def load_and_kill(
    ledger: Ledger,
    relay: RelayProcess,
    admin: Path,
    talkers: list[Device],
    late: list[str],
    rng: random.Random,
    mode: str,
    round_: int,
) -> None:
    """Every talker, a registrar and the operator at work until the relay is killed (``mode``: when)."""
    kill_now = trio.Event()

    stop = signal.SIGTERM if mode.startswith("by SIGTERM") else signal.SIGKILL

    def kill() -> None:
        if relay.proc.poll() is None and not kill_now.is_set():
            relay.proc.send_signal(stop)
        kill_now.set()

    async def killer() -> None:
        began = trio.current_time()
        with trio.move_on_after(3.0):  # (whatever the mode: a round ends)
            await kill_now.wait()
        kill()
        ledger.kills.append((mode, trio.current_time() - began))
        code = await trio.to_thread.run_sync(relay.proc.wait)
        if stop == signal.SIGTERM and code != 0:
            ledger.problems.append(
                f"stopped by SIGTERM, the relay exited with {code}:\n{relay.output()[-3000:]}"
            )

    async with trio.open_nursery() as timers:

        def soon(low: float, high: float) -> Callable[[], None]:
            return lambda: timers.start_soon(_after, rng.uniform(low, high), kill)

        on_big_send, on_order = (lambda: None), (lambda: None)
        if mode in ("after a time", "by SIGTERM, under load"):
            soon(0.05, 0.8)()
        elif mode == "right after an answer":
            target = ledger.answers + rng.randrange(10, 600)
            ledger.on_answer = lambda: kill() if ledger.answers >= target else None
        elif mode == "during a large group send":
            on_big_send = soon(0.0, 0.02)
        else:
            on_order = soon(0.0, 0.005)
        try:
            async with trio.open_nursery() as workers:
                workers.start_soon(killer)
                for d in talkers:
                    workers.start_soon(talk, d, late, on_big_send)
                workers.start_soon(register_late, ledger, relay.port, late, rng, round_)
                workers.start_soon(operate, ledger, admin, rng, on_order)
        finally:
            ledger.on_answer = lambda: None
        timers.cancel_scope.cancel()
    for d in talkers:
        await d.client.aclose()


async def back_up(ledger: Ledger, relay: RelayProcess, rng: random.Random) -> list[Device]:
    """After the checks of the store: the restarted relay answers each talker as before — it logs in,
    drains its queue, and gets a bundle whose key-log head and proofs match the log on disk."""
    talkers = []
    for key in TALKERS:
        d = await Device.open(ledger, relay.port, ledger.keys[key], rng)
        await d.login()
        while True:
            before = len(ledger.delivered)
            await d.receive()
            if len(ledger.delivered) == before and not d.unacked:
                break
        talkers.append(d)
    answer = await talkers[0].call(lambda i: wire.FetchBundle(id=i, account="u1", key_log=True))
    assert isinstance(answer, wire.Bundle) and answer.key_log is not None, answer
    return talkers


def key_log_matches(bundle: wire.Bundle, db: Path, ledger: Ledger) -> list[str]:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        leaves = [bytes(r[0]) for r in con.execute("SELECT leaf FROM key_log ORDER BY idx")]
    finally:
        con.close()
    assert bundle.key_log is not None
    problems = []
    if bundle.key_log.head.tree_size != len(leaves):
        problems.append(
            f"the relay's key-log head says {bundle.key_log.head.tree_size} leaves; its file holds {len(leaves)}"
        )
    for inclusion in bundle.key_log.inclusions:
        leaf = wire.kt_leaf(
            bundle.account, inclusion.device, ledger.keys[(bundle.account, inclusion.device)].identity_key
        )
        if inclusion.leaf_index >= len(leaves) or leaves[inclusion.leaf_index] != leaf:
            problems.append(
                f"the relay proves {bundle.account}/{inclusion.device} at leaf {inclusion.leaf_index}, which is not its key"
            )
    return problems


async def crash_rounds(tmp: Path, seed: int, rounds: int) -> Ledger:
    """``rounds`` kills under load (each mode in turn), checked after each restart; returns the ledger."""
    rng = random.Random(seed)
    ledger = Ledger()
    relay_files = Relay(tmp)
    for _ in range(2):  # killed while it makes a new database
        await relay_files.kill_while_starting(rng)
    relay = await relay_files.start()
    talkers = await set_up_devices(ledger, relay.port, rng)
    late: list[str] = []
    try:
        for round_ in range(rounds):
            mode = MODES[round_ % len(MODES)]
            await load_and_kill(ledger, relay, relay_files.admin, talkers, late, rng, mode, round_)
            if round_ % 3 == 1:  # and killed again while it recovers from that
                await relay_files.kill_while_starting(rng)
            relay = await relay_files.start()
            snapshot = Snapshot.read(relay_files.db)
            problems = check(snapshot, ledger)
            assert not problems, f"round {round_} (killed {mode}):\n" + "\n".join(problems[:30])
            resolve(snapshot, ledger)
            talkers = await back_up(ledger, relay, rng)
            bundle = await talkers[1].call(lambda i: wire.FetchBundle(id=i, account="u0", key_log=True))
            assert isinstance(bundle, wire.Bundle), bundle
            problems = key_log_matches(bundle, relay_files.db, ledger) + ledger.problems
            assert not problems, f"round {round_} (killed {mode}), restarted:\n" + "\n".join(problems[:30])
        for d in talkers:
            await d.client.aclose()
        relay.proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: relay.proc.wait(timeout=10)) == 0
    finally:
        relay.proc.kill()
        relay.proc.wait()
    return ledger


async def test_a_killed_relay_keeps_what_it_acknowledged_and_nothing_half_done(tmp_path: Path) -> None:
    ledger = await crash_rounds(tmp_path, seed=2024, rounds=6)
    # The rounds did what they are for: every kind of effect was acknowledged, and some left in flight.
    told = [o for o in ledger.sends.values() if o.status == TOLD]
    assert len(told) > 100
    assert any(len(o.fanout) > 40 for o in told)  # large group sends
    assert sum(o.status == TOLD for o in ledger.registered.values()) > len(TALKERS + CROWD)
    assert ledger.groups[SMALL_GROUP].applied and ledger.states and ledger.blocks and ledger.taps
    assert sum(s == TOLD for s in ledger.acks.values()) > 50
