"""A phone with key transparency on checks every bundle's keys against the relay's signed key log.

Driven against a real ``RelayCore`` (sans-IO: frames handed across by hand).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

from relaysim.clients import transparency as kt
from relaysim.clients.agent import KEPT_KEY_LOG_HEADS, DeviceAgent, Failed, KeyLogAudited, KeyLogChecked
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.relay.store import Store
from relaysim.relay.transparency import MerkleLog, TreeHeadSigner
from tests.conftest import seeded_rng
from tests.helpers import T0, UNLIMITED, Clock, DeviceKeys, new_core


def _agent(core: RelayCore, account: str, seed: int, clock: Callable[[], float] = lambda: T0) -> DeviceAgent:
    rng = seeded_rng(seed)
    return DeviceAgent(
        Device(account, 1, rng=rng),
        registration_id=seed,
        delivery_token=rng(32),
        rng=rng,
        trust_root=core.trust_root_public,
        key_transparency=True,
        clock=clock,
    )


def _exchange(core: RelayCore, conn: ConnectionContext, agent: DeviceAgent) -> list[object]:
    """Hand the agent's requests to the relay and the replies back, until it has nothing to say."""
    events: list[object] = []
    while frames := agent.take_outbox():
        for frame in frames:
            for out in core.handle(conn, frame):
                if isinstance(out, Reply):
                    events += agent.handle(out.frame)
    return events


def _setup(clock: Callable[[], float] = lambda: T0) -> tuple[RelayCore, ConnectionContext, DeviceAgent]:
    core = new_core(clock)
    alice, bob = _agent(core, "alice", 1, clock), _agent(core, "bob", 2, clock)
    conns = []
    for i, a in enumerate((alice, bob)):
        conn = ConnectionContext(i + 1, ("192.0.2.1", 40000 + i))
        core.connect(conn)
        a.register()
        _exchange(core, conn, a)
        a.login()
        _exchange(core, conn, a)
        conns.append(conn)
    return core, conns[0], alice


def test_an_honest_relays_keys_are_all_in_the_log() -> None:
    core, conn, alice = _setup()
    alice.send_text("bob", b"hi", ref=1)
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    assert fetch.key_log is True
    (reply,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    assert isinstance(reply, wire.Bundle) and reply.key_log is not None
    events = alice.handle(reply)
    (checked,) = [e for e in events if isinstance(e, KeyLogChecked)]
    assert checked.ok and checked.logged == (1,) and checked.tree_size == 2
    assert alice.key_log_heads[-1].tree_size == 2
    assert not [e for e in events if isinstance(e, Failed)]


def test_a_key_the_relay_did_not_log_is_refused() -> None:
    core, conn, alice = _setup()
    alice.send_text("bob", b"hi", ref=1)
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    (reply,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    assert isinstance(reply, wire.Bundle) and reply.key_log is not None
    # The relay leaves bob's proof out (as it must for a key it never logged).
    hidden = dataclasses.replace(reply, key_log=dataclasses.replace(reply.key_log, inclusions=()))
    events = alice.handle(hidden)
    (checked,) = [e for e in events if isinstance(e, KeyLogChecked)]
    assert not checked.ok and checked.unlogged == (1,)
    assert [e.code for e in events if isinstance(e, Failed)] == ["key_not_logged"]


def test_a_head_not_signed_by_the_server_key_is_refused() -> None:
    core, conn, alice = _setup()
    alice.send_text("bob", b"hi", ref=1)
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    (reply,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    assert isinstance(reply, wire.Bundle) and reply.key_log is not None
    head = dataclasses.replace(reply.key_log.head, tree_size=reply.key_log.head.tree_size + 1)
    events = alice.handle(dataclasses.replace(reply, key_log=dataclasses.replace(reply.key_log, head=head)))
    (checked,) = [e for e in events if isinstance(e, KeyLogChecked)]
    assert checked.reason == "the tree head's signature does not verify"
    assert [e.code for e in events if isinstance(e, Failed)] == ["key_not_logged"]
    assert alice.key_log_heads == []


def test_bundle_key_log_round_trips_on_the_wire() -> None:
    core, conn, alice = _setup()
    alice.send_text("bob", b"hi", ref=1)
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    (reply,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    decoder = wire.FrameDecoder("device")
    decoder.receive_data(wire.encode(reply))
    assert decoder.next_frame() == reply
    plain = wire.FetchBundle(id=9, account="bob")
    assert wire.FetchBundle.from_wire({"account": "bob", "id": 9}) == plain  # older clients: unchanged


def _head_now(core: RelayCore) -> wire.KeyLogHead:
    """The relay's current signed head (as a relay that keeps it to replay later would)."""
    h = core.key_log_head()
    return wire.KeyLogHead(
        tree_size=h.tree_size, timestamp=h.timestamp, root_hash=h.root_hash, signature=h.signature
    )


def test_a_stale_head_replayed_hours_later_is_refused() -> None:
    """The relay signs the head of a quiet log again each hour (relay.wire.KEY_LOG_HEAD_REFRESH): a
    head signed hours ago, though validly signed and proving bob's key, is not its current head."""
    clock = Clock()
    core, conn, alice = _setup(clock)
    old = _head_now(core)
    assert old.timestamp == int(T0)
    clock.now = T0 + kt.MAX_HEAD_AGE + 1
    alice.send_text("bob", b"hi", ref=1)
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    (fresh,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    assert isinstance(fresh, wire.Bundle) and fresh.key_log is not None
    assert fresh.key_log.head.timestamp == int(clock.now)  # the relay signed its head again
    replayed = dataclasses.replace(fresh, key_log=dataclasses.replace(fresh.key_log, head=old))
    events = alice.handle(replayed)  # bob's inclusion proof verifies under the old head too
    (checked,) = [e for e in events if isinstance(e, KeyLogChecked)]
    assert checked.reason == (
        f"tree head of size 2 signed at {int(T0)} is {kt.MAX_HEAD_AGE + 1} s old by this device's clock, "
        f"more than the {kt.MAX_HEAD_AGE} s a current head may be: stale or replayed, or the relay's clock "
        "is more than 3600 s behind this device's (the relay signs its head again only once it is 3600 s "
        "old by its own clock), or this device's clock is fast"
    )
    assert [e.code for e in events if isinstance(e, Failed)] == ["key_not_logged"]
    assert alice.key_log_heads == []
    alice.send_text("bob", b"hi again", ref=2)  # the relay's current head, at the same hour, is taken
    (fetch,) = [f for f in alice.take_outbox() if isinstance(f, wire.FetchBundle)]
    (fresh,) = [o.frame for o in core.handle(conn, fetch) if isinstance(o, Reply)]
    assert isinstance(fresh, wire.Bundle)
    (checked,) = [e for e in alice.handle(fresh) if isinstance(e, KeyLogChecked)]
    assert checked.ok and len(alice.key_log_heads) == 1


def _audit(
    core: RelayCore, conn: ConnectionContext, alice: DeviceAgent, head: wire.KeyLogHead | None = None
) -> KeyLogAudited:
    """alice audits her account over the wire; with ``head``, the relay answers get_key_log_head with it."""
    alice.audit_key_log({(1, alice.device.identity_key)})
    events: list[object] = []
    while frames := alice.take_outbox():
        for frame in frames:
            for out in core.handle(conn, frame):
                if isinstance(out, Reply):
                    answer = out.frame
                    if head is not None and isinstance(answer, wire.KeyLogHeadResponse):
                        answer = dataclasses.replace(answer, head=head)
                    events += alice.handle(answer)
    (audited,) = [e for e in events if isinstance(e, KeyLogAudited)]
    return audited


def test_a_head_older_than_one_already_taken_is_refused() -> None:
    """Within the age a head may be, but older than a head of the same size the device already took:
    heads went back in time, an old head replayed."""
    clock = Clock()
    core, conn, alice = _setup(clock)
    old = _head_now(core)
    clock.now = T0 + wire.KEY_LOG_HEAD_REFRESH + 60  # the relay signs its head again
    newer = _audit(core, conn, alice)
    assert newer.ok and newer.head is not None and newer.head.timestamp == int(clock.now)
    assert clock.now - old.timestamp < kt.MAX_HEAD_AGE  # not too old in itself
    refused = _audit(core, conn, alice, head=old)
    assert refused.reason == (
        f"tree head of size 2 signed at {old.timestamp} is older than the head of size 2 signed at "
        f"{newer.head.timestamp} this device already accepted: heads went back in time (an old head replayed)"
    )
    assert alice.key_log_heads == [newer.head]
    assert _audit(core, conn, alice).ok  # the current head is still taken


def test_a_device_holds_its_last_few_heads_not_every_head_it_was_shown() -> None:
    """A device up for days is shown a head signed again every hour: it holds the last
    KEPT_KEY_LOG_HEADS of them (the same head served twice once), and freshness still refuses a head
    older than the last, though the heads it was checked against before are gone."""
    clock = Clock()
    core, conn, alice = _setup(clock)
    assert _audit(core, conn, alice).ok and _audit(core, conn, alice).ok  # the same head, twice
    assert len(alice.key_log_heads) == 1
    shown = [_head_now(core)]
    for hour in range(1, 3 * KEPT_KEY_LOG_HEADS):
        clock.now = T0 + hour * (wire.KEY_LOG_HEAD_REFRESH + 60)
        assert _audit(core, conn, alice).ok
        shown.append(_head_now(core))
    assert [h.timestamp for h in alice.key_log_heads] == [h.timestamp for h in shown[-KEPT_KEY_LOG_HEADS:]]
    replayed = _audit(core, conn, alice, head=shown[-2])  # signed an hour before the last one taken
    assert replayed.reason is not None and "heads went back in time" in replayed.reason
    assert alice.key_log_heads[-1].timestamp == shown[-1].timestamp


def test_a_head_from_far_in_the_future_is_refused_and_cannot_lock_the_device_out() -> None:
    """A head signed with a time a year ahead of the device's clock: taken, every later honest head of
    that size would be "older" than it and refused, until the log grew past it. It is refused (more than
    clients.transparency.MAX_HEAD_AHEAD ahead of this device's clock), and the current head is still
    taken; one within that bound (the relay's clock a little fast) is taken."""
    clock = Clock()
    core, conn, alice = _setup(clock)
    h = core.key_log_head()
    signer = TreeHeadSigner(core.identity.server_private)  # the relay's own key: it can sign any time
    year = 365 * 86400
    future = signer.sign(MerkleLog(core.key_log.leaves()), int(T0) + year)
    ahead = wire.KeyLogHead(
        tree_size=future.tree_size,
        timestamp=future.timestamp,
        root_hash=h.root_hash,
        signature=future.signature,
    )
    refused = _audit(core, conn, alice, head=ahead)
    assert refused.reason == (
        f"tree head of size 2 signed at {int(T0) + year} is {year} s ahead of this device's clock, more than "
        f"the {kt.MAX_HEAD_AHEAD} s a relay's clock may be ahead of it: a head from the future"
    )
    assert alice.key_log_heads == []
    assert _audit(core, conn, alice).ok  # the relay's current head is still taken
    fast = signer.sign(MerkleLog(core.key_log.leaves()), int(T0) + kt.MAX_HEAD_AHEAD)
    a_little = wire.KeyLogHead(
        tree_size=fast.tree_size, timestamp=fast.timestamp, root_hash=h.root_hash, signature=fast.signature
    )
    assert _audit(core, conn, alice, head=a_little).ok


def test_a_head_of_a_smaller_tree_than_one_taken_is_refused_though_signed_later() -> None:
    """A relay that has shown alice's phone a head of the log with a ghost in her account cannot then
    answer her audit with a fresh head of the log before the ghost (a prefix, so every consistency
    proof holds): the log only grows, and the relay serves only its current head."""
    clock = Clock()
    core, conn, alice = _setup(clock)
    before = core.key_log_head()  # two leaves: alice/1 and bob/1
    core.provision_device(DeviceKeys.make("alice", 2, seed=5).register())  # the ghost
    assert not _audit(core, conn, alice).ok  # alice's phone took the head of 3 leaves, and saw the ghost
    clock.now = T0 + 60
    signer = TreeHeadSigner(core.identity.server_private)
    sth = signer.sign(MerkleLog(core.key_log.leaves()), int(clock.now), size=before.tree_size)
    rolled_back = wire.KeyLogHead(
        tree_size=sth.tree_size, timestamp=sth.timestamp, root_hash=sth.root_hash, signature=sth.signature
    )
    refused = _audit(core, conn, alice, head=rolled_back)
    assert refused.reason == (
        f"tree head of size 2 signed at {int(T0) + 60} is of a smaller tree than the head of size 3 "
        f"signed at {int(T0) + 1} this device already accepted: the log went back (it only grows)"
    )
    assert [h.tree_size for h in alice.key_log_heads] == [3]


def test_a_relay_restarted_with_its_clock_hours_behind_is_refused_naming_its_clock(tmp_path: Path) -> None:
    """A relay restarted with its clock three hours behind signs no head earlier than the last it signed
    (that time is stored): its devices take the head it serves then — and, its clock reading that head
    as new, it does not sign it again while their clocks age it past MAX_HEAD_AGE. The policy refuses
    it then; the reason names the relay's clock, not only a replay."""
    path = tmp_path / "relay.db"
    device_clock, relay_clock = Clock(), Clock()
    with Store(path) as store:
        core = RelayCore(store, clock=relay_clock, rng=random.Random(1).randbytes, limits=UNLIMITED)
        alice, bob = _agent(core, "alice", 1, device_clock), _agent(core, "bob", 2, device_clock)
        conn = _online(core, (alice, bob), register=True)
        assert _audit(core, conn, alice).reason is None  # the head of two leaves, signed at T0
    relay_clock.now = T0 - 3 * 3600  # restarted with its clock three hours behind
    with Store(path) as store:
        core = RelayCore(store, clock=relay_clock, rng=random.Random(2).randbytes, limits=UNLIMITED)
        conn = _online(core, (alice, bob), register=False)
        taken = _audit(core, conn, alice)
        assert taken.reason is None and taken.head is not None and taken.head.timestamp > int(T0)
        relay_clock.now += kt.MAX_HEAD_AGE + 60
        device_clock.now += kt.MAX_HEAD_AGE + 60  # two hours on: the relay's clock still reads before T0
        refused = _audit(core, conn, alice)
    age = int(device_clock.now) - taken.head.timestamp
    assert refused.reason == (
        f"tree head of size 2 signed at {taken.head.timestamp} is {age} s old by this device's clock,"
        f" more than the {kt.MAX_HEAD_AGE} s a current head may be: stale or "
        "replayed, or the relay's clock is more than 3600 s behind this device's (the relay signs its head "
        "again only once it is 3600 s old by its own clock), or this device's clock is fast"
    )


def _online(core: RelayCore, agents: tuple[DeviceAgent, ...], register: bool) -> ConnectionContext:
    """Each agent connected to ``core`` (registered first, if asked) and logged in; the first's connection."""
    conns = []
    for i, a in enumerate(agents):
        conn = ConnectionContext(i + 1, ("192.0.2.1", 40000 + i))
        core.connect(conn)
        if register:
            a.register()
            _exchange(core, conn, a)
        a.login()
        _exchange(core, conn, a)
        conns.append(conn)
    return conns[0]
