"""A phone with key transparency on checks every bundle's keys against the relay's signed key log.

Driven against a real ``RelayCore`` (sans-IO: frames handed across by hand).
"""

from __future__ import annotations

import dataclasses

from relaysim.clients.agent import DeviceAgent, Failed, KeyLogChecked
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from tests.conftest import seeded_rng
from tests.helpers import new_core


def _agent(core: RelayCore, account: str, seed: int) -> DeviceAgent:
    rng = seeded_rng(seed)
    return DeviceAgent(
        Device(account, 1, rng=rng),
        registration_id=seed,
        delivery_token=rng(32),
        rng=rng,
        trust_root=core.trust_root_public,
        key_transparency=True,
        clock=lambda: 1_700_000_000.0,
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


def _setup() -> tuple[RelayCore, ConnectionContext, DeviceAgent]:
    core = new_core()
    alice, bob = _agent(core, "alice", 1), _agent(core, "bob", 2)
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
