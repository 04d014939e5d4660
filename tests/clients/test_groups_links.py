"""Groups over the agents and the relay core while accounts link devices, members join and leave,
under both fan-out designs (the phones', one send per member account; the relay's, from its member
list): every device of every member when a message is sent reads it, once, and no other device does.

A device linked while the group is in use is one its contacts do not know yet. Client-side fan-out
learns of it at once (the relay refuses a send that leaves out a device of the account, and the
sender fetches the list again); server-side fan-out reaches it with the sender's message but not
with the sender key, so it asks for a resend (a retry receipt, ``RETRY_GRACE`` later) and reads it
then. The world below lets that time pass after each step. Devices are never unlinked: neither the
relay nor the agents have a way to remove one (the model in tests/clients/test_groups.py has).

That a member who left cannot read what the others send afterwards, even when a relay hands it the
message, is tested there too, on the sender keys alone; here the relay gives it nothing to read.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaysim.clients.agent import RETRY_GRACE, DeviceAgent, Received
from relaysim.clients.session import Device
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply
from relaysim.relay.store import Store
from relaysim.sims.world.util import SimulationRandom
from tests.helpers import T0

G = bytes(range(16))
ACCOUNTS = ("ann", "ben", "cat", "dan")
Address = tuple[str, int]


class _World:
    def __init__(self, fanout: str) -> None:
        self.fanout = fanout
        self.now = T0
        self.core = RelayCore(Store(), clock=lambda: self.now, rng=random.Random(3).randbytes)
        self.agents: dict[Address, DeviceAgent] = {}
        self.conns: dict[Address, ConnectionContext] = {}
        self.by_conn: dict[int, Address] = {}
        self.read: dict[bytes, list[Address]] = {}  # message → the devices that read it, in order
        self.members: set[str] = set()
        for a in ACCOUNTS:
            self.link(a)

    def _agent(self, account: str, n: int) -> DeviceAgent:
        rng = SimulationRandom(f"{account}/{n}")
        return DeviceAgent(
            Device(account, n, rng=rng.randbytes, deterministic=True),
            registration_id=1 + rng.randrange(16000),
            delivery_token=SimulationRandom(account).randbytes(32),
            rng=rng.randbytes,
            clock=lambda: self.now,
            group_fanout=self.fanout,
        )

    def link(self, account: str) -> Address:
        """A new device of ``account``: its first, or one its primary links (registered over the
        primary's connection, as Signal's provisioning), then logged in on a connection of its own."""
        n = 1 + sum(1 for acct, _ in self.agents if acct == account)
        agent, address = self._agent(account, n), (account, n)
        self.agents[address] = agent
        self.conns[address] = ConnectionContext(len(self.conns) + 1)
        self.by_conn[self.conns[address].id] = address
        agent.register(one_time=4, kem_one_time=4)
        if n == 1:
            self.pump()
        else:
            (frame,) = agent.take_outbox()
            for out in self.core.handle(self.conns[(account, 1)], frame):
                if isinstance(out, Reply):
                    agent.handle(out.frame)
            self.agents[(account, 1)].linked_devices_known()
        agent.login()
        self.pump()
        return address

    def pump(self) -> None:
        """Carry every device's requests to the relay, and its answers and pushes back, until quiet."""
        busy = True
        while busy:
            busy = False
            for address, agent in list(self.agents.items()):
                for request in agent.take_outbox():
                    busy = True
                    for out in self.core.handle(self.conns[address], request):
                        if isinstance(out, Reply | Push):
                            to = self.by_conn[out.connection]
                            for event in self.agents[to].handle(out.frame):
                                if isinstance(event, Received) and event.group == G:
                                    self.read.setdefault(event.plaintext, []).append(to)

    def settle(self) -> None:
        """Let time pass: whoever still waits for a sender key asks for a resend, and gets it."""
        for _ in range(3):
            self.now += RETRY_GRACE + 1
            for agent in self.agents.values():
                agent.tick()
                agent.receive()
            self.pump()

    def devices_of(self, accounts: set[str]) -> set[Address]:
        return {a for a in self.agents if a[0] in accounts}

    def create(self, members: set[str]) -> None:
        self.members = set(members)
        if self.fanout == "server":
            self.agents[("ann", 1)].create_group(G, sorted(members - {"ann"}))
            self.pump()

    def join(self, account: str) -> None:
        if account in self.members:
            return
        if self.fanout == "server":
            admin = next(m.account for m in self.core.store.group_members(G) if m.admin)
            self.agents[(admin, 1)].change_group(G, add=[account])
            self.pump()
        self.members.add(account)

    def leave(self, account: str) -> None:
        if account not in self.members or len(self.members) == 1:
            return  # (the last member stays: a group nobody is in has nobody to send)
        if self.fanout == "server":
            self.agents[(account, 1)].change_group(G, remove=[account])
            self.pump()
        self.members.discard(account)
        for address in self.devices_of({account}):
            self.agents[address].leave_group(G)

    def send(self, sender: Address, text: bytes) -> None:
        self.agents[sender].send_group(G, sorted(self.members), text, ref=("group", text))
        self.pump()
        self.settle()


step = st.one_of(
    st.tuples(st.just("link"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("join"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("leave"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("send"), st.integers(0, 99)),
)


@pytest.mark.parametrize("fanout", ["client", "server"])
@settings(deadline=None, max_examples=40)
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_member_devices_read_exactly_the_messages_sent_while_they_are_members_devices_linked_included(
    fanout: str, steps: list[tuple[str, object]]
) -> None:
    """In any sequence of device links, group joins and leaves, every device of every member when a
    message is sent (linked during the group's life or not) reads it exactly once, and no other."""
    world = _World(fanout)
    world.create({"ann", "ben"})
    expected: dict[bytes, set[Address]] = {}
    # a message first (the sender learns the members' devices), and one last (after the last change)
    for kind, arg in [("send", 0), *steps, ("send", 0)]:
        if kind == "link":
            world.link(str(arg))
        elif kind == "join":
            world.join(str(arg))
        elif kind == "leave":
            world.leave(str(arg))
        else:
            senders = sorted(world.devices_of(world.members))
            sender = senders[int(str(arg)) % len(senders)]
            text = f"message {len(expected)} from {sender[0]}/{sender[1]}".encode()
            expected[text] = world.devices_of(world.members) - {sender}
            world.send(sender, text)
    for text, devices in expected.items():
        got = world.read.get(text, [])
        assert sorted(got) == sorted(devices), (fanout, text, sorted(got), sorted(devices))


def test_a_device_linked_after_the_group_began_reads_what_follows_under_either_fan_out() -> None:
    for fanout in ("client", "server"):
        world = _World(fanout)
        world.create({"ann", "ben"})
        world.send(("ann", 1), b"before")
        linked = world.link("ben")
        world.send(("ann", 1), b"after")
        world.send(linked, b"from the new one")
        assert world.read[b"before"] == [("ben", 1)]
        assert sorted(world.read[b"after"]) == [("ben", 1), linked], fanout
        assert sorted(world.read[b"from the new one"]) == [("ann", 1), ("ben", 1)], fanout
