"""Group messages fanned out by the relay from the membership list it holds (WhatsApp's design):
the agent takes the members from the relay, hands its sender key out over the pairwise sessions,
and sends one body; a member the provider adds itself gets the next messages, and the members see
the change unless their client was changed not to show it."""

from __future__ import annotations

import random
from collections.abc import Callable

from relaysim.clients.agent import (
    Accepted,
    DeviceAgent,
    Failed,
    GroupMembershipChanged,
    GroupUpdated,
    LoggedIn,
    Received,
    Registered,
)
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.relay.store import Store
from relaysim.sims.world.util import SimulationRandom
from tests.helpers import T0

G = bytes(range(16))


def _agent(account: str, *, show: bool = True) -> DeviceAgent:
    rng = SimulationRandom(account)
    return DeviceAgent(
        Device(account, 1, rng=rng.randbytes, deterministic=True),
        registration_id=1 + rng.randrange(16000),
        delivery_token=rng.randbytes(32),
        rng=rng.randbytes,
        clock=lambda: T0,
        group_fanout="server",
        show_group_changes=show,
    )


class _World:
    def __init__(self, *accounts: str, show: bool = True) -> None:
        self.core = RelayCore(Store(), clock=lambda: T0, rng=random.Random(3).randbytes)
        self.agents = {a: _agent(a, show=show) for a in accounts}
        self.conns = {a: ConnectionContext(i + 1) for i, a in enumerate(accounts)}
        for a, agent in self.agents.items():
            agent.register(one_time=4, kem_one_time=4)
            agent.login()
            assert [type(e) for e in self.pump(a)] == [Registered, LoggedIn]

    def pump(self, account: str, before: Callable[[wire.Request], None] | None = None) -> list[object]:
        """Carry ``account``'s requests to the relay and the answers back until both are quiet;
        ``before`` sees each request first."""
        agent, conn = self.agents[account], self.conns[account]
        events: list[object] = []
        while outbox := agent.take_outbox():
            for request in outbox:
                if before is not None:
                    before(request)
                for output in self.core.handle(conn, request):
                    if isinstance(output, Reply) and output.connection == conn.id:
                        events += agent.handle(output.frame)
        return events

    def read(self, account: str) -> list[bytes]:
        """What ``account``'s device decrypts of the group's messages waiting for it."""
        self.agents[account].receive()
        got = [e for e in self.pump(account) if isinstance(e, Received) and e.group == G]
        return [e.plaintext for e in got]


def test_one_group_send_reaches_every_member_the_relay_lists() -> None:
    w = _World("alice", "bob", "carol", "dave")
    w.agents["alice"].create_group(G, ["bob", "carol"])
    assert w.pump("alice") == [GroupUpdated(G, 0)]
    assert w.agents["alice"].group_lists[G] == (0, ("alice", "bob", "carol"))
    w.agents["alice"].send_group(G, ["ignored: the relay's list counts"], b"hello group", ref="m1")
    events = w.pump("alice")
    (accepted,) = [e for e in events if isinstance(e, Accepted) and e.ref == "m1"]
    assert accepted.to == f"group:{G.hex()}" and len(accepted.envelope_ids) == 2
    assert accepted.members == ("alice", "bob", "carol")  # the relay's list it went to (dave is not on it)
    bodies = {e.body for e in w.core.store.all_envelopes() if e.id in accepted.envelope_ids}
    assert len(bodies) == 1  # the same SenderKeyMessage for every member
    assert w.read("bob") == [b"hello group"] and w.read("carol") == [b"hello group"]
    assert w.read("dave") == []


def test_a_member_the_provider_adds_reads_what_follows_and_the_members_see_it_added() -> None:
    w = _World("alice", "bob", "ghost")
    w.agents["alice"].create_group(G, ["bob"])
    w.pump("alice")
    w.agents["alice"].send_group(G, (), b"before", ref=1)
    w.pump("alice")
    assert w.read("bob") == [b"before"]  # and bob's phone looks the new group's members up
    assert w.core.provision_group_member(G, "ghost") == 1
    w.agents["alice"].send_group(G, (), b"after", ref=2)
    events = w.pump("alice")
    assert GroupMembershipChanged(G, ("ghost",), (), 1, True) in events
    assert w.read("ghost") == [b"after"]  # handed alice's sender key like any member
    assert w.read("bob") == [b"after"]
    # bob, who never sent, sees the change the next time his phone logs in
    w.core.disconnect(w.conns["bob"])
    w.agents["bob"].connection_lost()
    w.conns["bob"] = ConnectionContext(99)
    w.agents["bob"].login()
    assert GroupMembershipChanged(G, ("ghost",), (), 1, True) in w.pump("bob")


def test_a_client_changed_not_to_show_membership_changes_hides_the_ghost() -> None:
    w = _World("alice", "bob", "ghost", show=False)
    w.agents["alice"].create_group(G, ["bob"])
    w.pump("alice")
    w.agents["alice"].send_group(G, (), b"first", ref=1)
    w.pump("alice")
    w.core.provision_group_member(G, "ghost")
    w.agents["alice"].send_group(G, (), b"second", ref=2)
    changes = [e for e in w.pump("alice") if isinstance(e, GroupMembershipChanged)]
    assert changes == [GroupMembershipChanged(G, ("ghost",), (), 1, False)]
    assert w.read("ghost") == [b"second"]


def test_a_send_that_meets_a_changed_group_looks_the_members_up_again() -> None:
    w = _World("alice", "bob", "carol")
    w.agents["alice"].create_group(G, ["bob"])
    w.pump("alice")
    added = []

    def add_carol_first(request: wire.Request) -> None:
        if isinstance(request, wire.GroupSend) and not added:
            added.append(w.core.provision_group_member(G, "carol"))

    w.agents["alice"].send_group(G, (), b"raced", ref=1)
    events = w.pump("alice", before=add_carol_first)
    assert added == [1]
    assert [e.ref for e in events if isinstance(e, Accepted) and isinstance(e.ref, int)] == [1]
    assert w.read("carol") == [b"raced"] and w.read("bob") == [b"raced"]


def test_a_removed_member_reads_nothing_sent_after_it_left() -> None:
    w = _World("alice", "bob", "carol")
    w.agents["alice"].create_group(G, ["bob", "carol"])
    w.pump("alice")
    w.agents["alice"].send_group(G, (), b"one", ref=1)
    w.pump("alice")
    assert w.read("carol") == [b"one"]
    w.agents["alice"].change_group(G, remove=["carol"])
    assert w.pump("alice") == [GroupUpdated(G, 1), GroupMembershipChanged(G, (), ("carol",), 1, True)]
    w.agents["alice"].send_group(G, (), b"two", ref=2)
    w.pump("alice")
    assert w.read("carol") == [] and w.read("bob") == [b"one", b"two"]
    assert [m.account for m in w.core.store.group_members(G)] == ["alice", "bob"]


def test_a_member_who_leaves_does_not_ask_for_the_list_it_left() -> None:
    """After its own leave the relay's answer is the last word: asking for the members again would
    only be refused (a non-member is not told the group exists)."""
    w = _World("alice", "bob")
    w.agents["alice"].create_group(G, ["bob"])
    w.pump("alice")
    w.agents["bob"].refresh_group(G)
    w.pump("bob")
    assert G in w.agents["bob"].group_lists
    w.agents["bob"].change_group(G, remove=["bob"])
    asked: list[wire.Request] = []
    assert w.pump("bob", before=asked.append) == [GroupUpdated(G, 1)]
    assert [r.kind for r in asked] == ["change_group"]
    assert G not in w.agents["bob"].group_lists  # nor at its next login
    assert [m.account for m in w.core.store.group_members(G)] == ["alice"]


def test_only_a_current_member_stores_a_groups_state_and_a_removed_member_no_longer_can() -> None:
    """Each member signs with a write key of its own (from the master key and a secret only it
    holds), and each version carries its members' keys: the relay takes a version signed by a
    member of the version before. When alice removes bob, bob still holds the master key, and his
    uploads are refused, the state left as alice stored it; a stranger's key never counted."""
    from relaysim.clients.groups import GroupWriteKey, open_group_state, seal_group_state

    w = _World("alice", "bob", "mallory")
    master = bytes(range(32))
    key = {a: GroupWriteKey.for_member(master, G, bytes([i + 1]) * 32) for i, a in enumerate(w.agents)}

    def put(who: str, version: int, members: list[str], writer: GroupWriteKey | None = None) -> list[object]:
        state = seal_group_state(master, G, version, members)
        w.agents[who].put_group_state(G, version, state, writer or key[who], [key[m].public for m in members])
        return [e for e in w.pump(who) if isinstance(e, Failed)]

    assert put("alice", 0, ["alice", "bob"]) == []
    assert w.core.store.group_write_keys(G) == (0, tuple(sorted([key["alice"].public, key["bob"].public])))
    [refused] = put("mallory", 1, ["mallory"])  # a stranger, whatever the master key
    assert (refused.ref, refused.code) == ("put_group_state", wire.ErrorCode.BAD_SIGNATURE.value)
    assert put("bob", 1, ["alice", "bob"]) == []  # a member changes it
    assert put("alice", 2, ["alice"]) == []  # alice removes bob
    kept = w.core.store.group_state(G)
    for members in (["alice", "bob"], ["bob"]):  # bob takes himself back in, or alice out
        [refused] = put("bob", 3, members)
        assert (refused.ref, refused.code) == ("put_group_state", wire.ErrorCode.BAD_SIGNATURE.value)
    [refused] = put("bob", 3, ["bob"], GroupWriteKey.for_group(master))  # nor the master key's own key
    assert refused.code == wire.ErrorCode.BAD_SIGNATURE.value
    assert w.core.store.group_state(G) == kept
    assert w.core.store.group_write_keys(G) == (2, (key["alice"].public,))
    assert put("alice", 3, ["alice", "mallory"]) == []  # the members who remain go on
    version, state = w.core.store.group_state(G) or (0, b"")
    assert (version, open_group_state(master, G, version, state)) == (3, ("alice", "mallory"))


def test_a_member_makes_the_next_version_and_its_keys_from_the_state_alone() -> None:
    """The state holds each member's write key beside its account (format 2), so a member who
    changes the group needs from outside only the newcomer's key: alice creates the state with her
    and bob's keys; bob adds mallory from the state he fetches (his own bookkeeping knows nothing of
    alice's key); mallory removes alice; alice, removed, is refused; each version's keys are the
    ones sealed in it, and a change that changes nothing stores no version."""
    from relaysim.clients.agent import GroupStateStored
    from relaysim.clients.groups import GroupWriteKey, read_group_state, write_key_set

    w = _World("alice", "bob", "mallory")
    master = bytes(range(32))
    key = {a: GroupWriteKey.for_member(master, G, bytes([i + 1]) * 32) for i, a in enumerate(w.agents)}

    def stored() -> tuple[int, dict[str, bytes] | None]:
        version, state = w.core.store.group_state(G) or (0, b"")
        opened = read_group_state(master, G, version, state)
        assert w.core.store.group_write_keys(G) == (version, opened.key_set())
        return version, None if opened.write_keys is None else dict(opened.write_keys)

    w.agents["alice"].create_group_state(
        G, master, key["alice"], {a: key[a].public for a in ("alice", "bob")}
    )
    assert w.pump("alice") == [GroupStateStored(G, 0)]
    w.agents["bob"].change_group_state(G, master, key["bob"], add={"mallory": key["mallory"].public})
    assert w.pump("bob") == [GroupStateStored(G, 1)]
    assert stored() == (1, {a: key[a].public for a in ("alice", "bob", "mallory")})
    w.agents["mallory"].change_group_state(G, master, key["mallory"], remove=["alice"])
    assert w.pump("mallory") == [GroupStateStored(G, 2)]
    assert stored() == (2, {a: key[a].public for a in ("bob", "mallory")})
    w.agents["alice"].change_group_state(G, master, key["alice"], add={"alice": key["alice"].public})
    [refused] = w.pump("alice")
    assert isinstance(refused, Failed) and refused.code == wire.ErrorCode.BAD_SIGNATURE.value
    w.agents["bob"].change_group_state(G, master, key["bob"], remove=["alice"])  # done already
    assert w.pump("bob") == [GroupStateStored(G, 2)]
    assert w.core.store.group_write_keys(G) == (2, write_key_set(key[a].public for a in ("bob", "mallory")))


def test_a_member_refuses_a_state_whose_relay_keys_are_not_the_keys_it_lists() -> None:
    """The relay returns the write keys it holds with the state (get_group_state, write_keys), and
    a member checks them against the keys the state lists: a relay that slipped a key of its own
    into the set (which would let it write the group, and which the member's next version would
    otherwise carry on) is refused with write_keys_mismatch, and no version is uploaded."""
    from relaysim.clients.groups import GroupWriteKey

    w = _World("alice", "bob")
    master = bytes(range(32))
    key = {a: GroupWriteKey.for_member(master, G, bytes([i + 1]) * 32) for i, a in enumerate(w.agents)}
    w.agents["alice"].create_group_state(
        G, master, key["alice"], {a: key[a].public for a in ("alice", "bob")}
    )
    w.pump("alice")
    version, state = w.core.store.group_state(G) or (0, b"")
    relays = GroupWriteKey.for_member(master, G, bytes([9]) * 32).public
    w.core.store.put_group_state(G, version, state, sorted([key["alice"].public, key["bob"].public, relays]))
    sent: list[wire.Request] = []
    w.agents["bob"].change_group_state(G, master, key["bob"], remove=["alice"], ref="leave-alice")
    [refused] = w.pump("bob", sent.append)
    assert isinstance(refused, Failed) and (refused.ref, refused.code) == (
        "leave-alice",
        "write_keys_mismatch",
    )
    assert "(3) are not the 2 keys its version 0 lists" in refused.message
    assert [r.kind for r in sent] == ["get_group_state"]  # nothing signed, nothing uploaded
    assert w.core.store.group_state(G) == (0, state)


def test_a_state_change_that_lost_the_race_or_its_connection_is_made_again_from_the_state_as_stored() -> None:
    """Two members change the group at once: the second upload is stale_group, and its device
    fetches the state again and makes its change on top of the first (both stay made). A change
    whose answer a lost connection took is made again after the next login, from the state then
    stored: stored already, it uploads nothing more."""
    from relaysim.clients.agent import GroupStateStored
    from relaysim.clients.groups import GroupWriteKey, open_group_state

    w = _World("alice", "bob", "carol", "dave")
    master = bytes(range(32))
    key = {a: GroupWriteKey.for_member(master, G, bytes([i + 1]) * 32) for i, a in enumerate(w.agents)}
    w.agents["alice"].create_group_state(
        G, master, key["alice"], {a: key[a].public for a in ("alice", "bob")}
    )
    w.pump("alice")
    # both fetch version 0 before either uploads
    w.agents["alice"].change_group_state(G, master, key["alice"], add={"carol": key["carol"].public})
    w.agents["bob"].change_group_state(G, master, key["bob"], add={"dave": key["dave"].public})
    fetches = {a: w.agents[a].take_outbox() for a in ("alice", "bob")}
    for a, requests in fetches.items():
        for r in requests:
            for o in w.core.handle(w.conns[a], r):
                if isinstance(o, Reply):
                    w.agents[a].handle(o.frame)
    assert w.pump("alice") == [GroupStateStored(G, 1)]
    sent: list[wire.Request] = []
    assert w.pump("bob", sent.append) == [GroupStateStored(G, 2)]
    assert [r.kind for r in sent] == ["put_group_state", "get_group_state", "put_group_state"]
    version, state = w.core.store.group_state(G) or (0, b"")
    assert open_group_state(master, G, version, state) == ("alice", "bob", "carol", "dave")
    # dave leaves; the relay stores the version, and the answer is lost with the connection
    dave = w.agents["dave"]
    dave.change_group_state(G, master, key["dave"], remove=["dave"])

    def carried(agent: DeviceAgent) -> list[wire.Response]:
        return [
            o.frame
            for r in agent.take_outbox()
            for o in w.core.handle(w.conns["dave"], r)
            if isinstance(o, Reply)
        ]

    for frame in carried(dave):  # get_group_state, answered
        dave.handle(frame)
    assert [type(f) for f in carried(dave)] == [wire.GroupStateStored]  # put_group_state: never handed over
    w.core.disconnect(w.conns["dave"])
    dave.connection_lost()
    w.conns["dave"] = ConnectionContext(99)
    dave.login()
    resent: list[wire.Request] = []
    events = w.pump("dave", resent.append)
    assert GroupStateStored(G, 3) in events and not [e for e in events if isinstance(e, Failed)]
    assert "get_group_state" in [r.kind for r in resent] and "put_group_state" not in [r.kind for r in resent]
    version, state = w.core.store.group_state(G) or (0, b"")
    assert (version, open_group_state(master, G, version, state)) == (3, ("alice", "bob", "carol"))
