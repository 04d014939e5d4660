"""[[groups]] where the relay has a part in the group (relay.profiles.Profile.group_fanout and
group_state_encrypted): the phones tell the relay of each change as it happens.

- Server-side membership (WhatsApp): the group's first admin creates the group at the relay once
  every member's account exists, and makes the other admins admins; a join is the admin's
  ``change_group`` (``add``), a leave the member's own (``remove`` itself). The relay fans every
  group message out from the list it holds, so the list is what a member's messages reach.
- Encrypted group state (Signal's groups v2): the phone that makes a change (the creator, the
  admin who adds, the member who leaves) does it from the state as stored
  (``clients.agent.DeviceAgent.change_group_state``): it fetches and opens the state, checks the
  relay's write keys against the keys the state lists beside its members, and seals the next member
  list under the group's master key (``clients.groups.seal_group_state``), one version per change,
  with the public write keys of the new member list, signed by its own write key (each member's is
  derived from the master key and a secret of its own: the relay stores a version only from a
  member of the version before, and learns which of its pseudonymous keys made the change, not
  whose it is; a member who left has no key the relay takes). The master key is the members'
  secret (Signal's clients carry it in each group message's context); here it, each member's write
  secret, and so the public write key a newcomer gives the member who adds it (and each member
  gives the creator), are drawn from the seed and handed over by the simulation; every other key
  of a version comes from the state before it.

A phone that is offline, or not yet logged in, when its change is due does it once it is (every
few seconds, it tries again). Nothing here reads the clock or draws randomness of its own: both
drivers run it, the simulator (sims.world.simulation, on its Scheduler and the relay core's store)
and a live run (sims.live, on its timeline of actions and a reader of the relay process's store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from relaysim.clients import agent as A
from relaysim.clients.groups import GroupWriteKey
from relaysim.relay.store import Store
from relaysim.sims.scenario import GroupSpec
from relaysim.sims.world.util import seeded

__all__ = ["GroupDirector", "group_distribution_id", "group_master_key", "group_write_secret"]

RETRY = 5.0  # seconds: a phone that cannot make its change yet tries again this long after


def group_distribution_id(name: str) -> bytes:
    """A group's 16-byte distribution id (clients.groups), derived from its name so runs repeat."""
    return hashlib.sha256(b"relaysim group " + name.encode()).digest()[:16]


def group_master_key(seed: int, name: str) -> bytes:
    """Group ``name``'s master key (encrypted state): the members' secret, the relay never has it."""
    return seeded(seed, "group-master-key", name).randbytes(32)


def group_write_secret(seed: int, name: str, person: str) -> bytes:
    """``person``'s own secret for group ``name``'s write key (encrypted state): only it holds it."""
    return seeded(seed, "group-write-secret", name, person).randbytes(32)


class _Phone(Protocol):
    @property
    def agent(self) -> A.DeviceAgent: ...
    @property
    def online(self) -> bool: ...


class _Timeline(Protocol):
    """When the director's steps run: the simulator's Scheduler, or a live run's actions."""

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None: ...
    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None: ...


P = TypeVar("P", bound=_Phone)


class GroupDirector(Generic[P]):
    """The relay's side of the scenario's groups, for the profile's design. ``flush`` hands what a
    phone's agent queued to the relay (the driver's own)."""

    def __init__(
        self,
        sched: _Timeline,
        store: Store,
        phones: Mapping[tuple[str, int], P],
        flush: Callable[[P], None],
        *,
        server: bool,
        encrypted_state: bool,
        seed: int,
    ) -> None:
        self.sched, self.store, self.phones, self.flush = sched, store, phones, flush
        self.server, self.encrypted_state, self.seed = server, encrypted_state, seed
        self.members: dict[bytes, set[str]] = {}  # encrypted state: the members the phones know of

    @property
    def active(self) -> bool:
        return self.server or self.encrypted_state

    def master_key(self, name: str) -> bytes:
        """The group's master key (encrypted state): the members' secret, the relay never has it."""
        return group_master_key(self.seed, name)

    def ready(self, group: bytes) -> bool:
        """Whether a member's message can go to the group (server-side: the relay holds it)."""
        return not self.server or self.store.group_epoch(group) is not None

    def schedule(self, g: GroupSpec, group: bytes) -> None:
        if not self.active:
            return
        creator = g.admins[0] if g.admins else sorted(g.members)[0]
        self.sched.at(0.0, self._create, g, group, creator)
        for c in g.timeline:
            if c.kind == "join":
                self.sched.at(c.at, self._join, g, group, c.by or self._adder(creator), c.person)
            elif c.kind == "leave":
                self.sched.at(c.at, self._leave, g, group, c.person)

    def _phone(self, person: str) -> P | None:
        """``person``'s primary phone, if it is online and logged in now."""
        d = self.phones.get((person, 1))
        return d if d is not None and d.online and d.agent.authenticated else None

    def _create(self, g: GroupSpec, group: bytes, creator: str) -> None:
        d = self._phone(creator)
        if d is None or not all(self.store.account_exists(m) for m in g.members):
            self.sched.after(RETRY, self._create, g, group, creator)
            return
        if self.server:
            d.agent.create_group(group, [m for m in g.members if m != creator])
            others = [a for a in g.admins if a != creator]
            if others:
                self.sched.after(RETRY, self._promote, group, creator, tuple(others))
        if self.encrypted_state:
            self.members[group] = set(g.members)
            d.agent.create_group_state(
                group,
                self.master_key(g.name),
                self._writer(g, group, creator),
                {m: self._writer(g, group, m).public for m in g.members},
            )
        self.flush(d)

    def _promote(self, group: bytes, creator: str, admins: tuple[str, ...]) -> None:
        d = self._phone(creator)
        if d is None or self.store.group_epoch(group) is None:
            self.sched.after(RETRY, self._promote, group, creator, admins)
            return
        d.agent.change_group(group, admins=admins)
        self.flush(d)

    def _is_admin(self, group: bytes, account: str) -> bool:
        return any(m.account == account and m.admin for m in self.store.group_members(group))

    def _adder(self, creator: str) -> Callable[[bytes], str]:
        """Who adds a member when the join names no admin (a group without admins): the creator,
        or, with encrypted state once the creator has left, the first of the current members (only
        a current member's write key can store the next version)."""

        def pick(group: bytes) -> str:
            members = self.members.get(group)
            if self.server or not members or creator in members:
                return creator
            return min(members)

        return pick

    def _join(self, g: GroupSpec, group: bytes, admin: str | Callable[[bytes], str], person: str) -> None:
        by = admin if isinstance(admin, str) else admin(group)
        d = self._phone(by)
        if d is None or (self.server and not self._is_admin(group, by)):
            self.sched.after(RETRY, self._join, g, group, admin, person)
            return
        if self.server:
            d.agent.change_group(group, add=[person])
        if self.encrypted_state:
            self.members.setdefault(group, set(g.members)).add(person)
            d.agent.change_group_state(
                group,
                self.master_key(g.name),
                self._writer(g, group, by),
                add={person: self._writer(g, group, person).public},  # the newcomer's, from the newcomer
            )
        self.flush(d)

    def _leave(self, g: GroupSpec, group: bytes, person: str) -> None:
        d = self._phone(person)
        if d is None or (self.server and self.store.group_epoch(group) is None):
            self.sched.after(RETRY, self._leave, g, group, person)
            return
        if self.server:
            d.agent.change_group(group, remove=[person])
        if self.encrypted_state:
            self.members.setdefault(group, set(g.members)).discard(person)
            d.agent.change_group_state(
                group, self.master_key(g.name), self._writer(g, group, person), remove=[person]
            )
        self.flush(d)

    def _writer(self, g: GroupSpec, group: bytes, person: str) -> GroupWriteKey:
        """``person``'s write key for the group (encrypted state)."""
        return GroupWriteKey.for_member(
            self.master_key(g.name), group, group_write_secret(self.seed, g.name, person)
        )
