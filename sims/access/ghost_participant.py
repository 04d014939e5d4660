"""The ghost as an extra group participant: GCHQ's original proposal (Levy & Robinson, "Principles
for a More Informed Exceptional Access Debate", Lawfare, 2018-11-29): the provider silently adds a
law-enforcement participant to a group chat, and suppresses the notice.

``exceptional_access`` / ``ghost_participant`` names a ``[[groups]]`` entry. The agency registers an
account like anyone (its phone runs from the agency's address, and registers and logs in on one
connection, as a phone does: clients.net); once the relay has registered it, the provider, compelled,
adds that account to the group's member list:

- where the relay holds the member list (server-side fan-out, WhatsApp): straight into its store
  (``relay.core.RelayCore.provision_group_member``; no admin asked, no record). The members' phones
  take the members from the relay before each message, hand the ghost their sender keys over the
  pairwise sessions like any member's and the relay fans the messages out to it. Each member phone
  sees the change the next time it looks the list up (before it writes, and at each login) and
  shows it ("X was added"), unless ``client_change``: the compelled change to the clients that stops
  them showing it (the proposal's "suppress the notice");
- where the clients keep the group state encrypted (Signal's groups v2) or fan out themselves, the
  server has no member list to add to: nothing is added, and the report says why.

The agency's account is a new account like anyone's: where the relay refuses its registration (its
limit on new accounts per address, ``relay.limits.Limits.register_per_address``, or a registration
proof the agency's phone does not make) there is no account to add, and the report says so with the
relay's reason (``registration_refused``).

The report says, per member device, whether and when it saw the ghost added and whether it showed
the user; and which group messages the ghost read, against the ground truth.
"""

from __future__ import annotations

from typing import Any

from relaysim.clients import agent as A
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.mdtext import md_text
from relaysim.sims.access.base import AGENCY_ADDRESS, DeviceView, Intervention, World
from relaysim.sims.access.reports import ExceptionalReport, unread_lines
from relaysim.sims.scenario import DeviceSpec, ExceptionalAccess, TimelineEvent
from relaysim.sims.world.groups import group_distribution_id
from relaysim.sims.world.util import clock, seeded

__all__ = ["GhostParticipant"]

RETRY = 30.0  # seconds: the provider waits this long for the group (and the agency's account) to exist


class GhostParticipant(Intervention):
    """One silent participant added to one group; the agency reads what it receives."""

    answers = ((ExceptionalAccess, "ghost_participant"),)
    order = 2

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.group: str | None = None
        self.account: str | None = None
        self.device: DeviceView | None = None
        self.demanded_at: float | None = None
        self.added_at: float | None = None
        self.client_change = False
        self.why_not_added: str | None = None  # why the provider could not add it
        # the relay's refusal of the agency's phone's registration (its code and message): no account to add
        self.registration_refused: dict[str, str] | None = None
        self.read: dict[int, dict[str, Any]] = {}  # message id → what the ghost read
        # what reached the agency's phone and did not decrypt (no copy of what it read), and what did and
        # its agent refused, by reason: counted as the ghost device's are (sims.access.ghost)
        self.undecryptable = 0
        self.refused = dict.fromkeys(A.REFUSAL_REASONS, 0)
        self.seen: list[dict[str, Any]] = []  # each member phone's GroupMembershipChanged naming the ghost

    @property
    def started(self) -> float | None:
        return self.demanded_at

    def on_event(self, event: TimelineEvent) -> None:
        assert isinstance(event, ExceptionalAccess) and event.group is not None  # the validator's promise
        self.group, self.client_change = event.group, event.client_change
        self.demanded_at = self.world.sched.now
        names = {p.name for p in self.world.scenario.people}
        account, n = f"ghost-{event.group}", 1
        while account in names:
            n += 1
            account = f"ghost-{event.group}-{n}"
        self.account = account
        if self.client_change:  # the compelled client: membership changes are no longer shown
            for d in self.world.devices.values():
                d.agent.hide_group_changes()
        self._add()

    def _add(self) -> None:
        world = self.world
        assert self.group is not None and self.account is not None
        gid = group_distribution_id(self.group)
        profile = world.profile
        if profile.group_fanout != "server":
            self.why_not_added = (
                f"{profile.title}'s relay holds no member list to add to: "
                + (
                    "its clients keep each group's state encrypted under a key only the members hold (groups "
                    "v2), so the server cannot add a member, and cannot even tell who the members are"
                    if profile.group_state_encrypted
                    else "its clients fan group messages out themselves, to the members they know"
                )
                + "; only a change to the members' clients could add one"
            )
            self._emit_not_added()
            return
        if world.store.group_epoch(gid) is None:  # the group does not exist yet at the relay
            world.sched.after(RETRY, self._add)
            return
        if self.device is None:
            self.device = self._agency_phone(self.account)
        if not world.store.account_exists(self.account):
            return  # its registration is on its way: added when the relay has answered it (on_agent_event)
        epoch = world.relay.provision_group_member(gid, self.account)
        self.added_at = world.sched.now
        world.emit(
            {
                "t": world.sched.now,
                "kind": "exceptional_access",
                "demand": "ghost_participant",
                "group": self.group,
                "ghost": self.account,
                "added": True,
                "epoch": epoch,
                "added_by": "the provider, straight into its member list (no admin asked)",
                "client_change": self.client_change,
                "operated_from": AGENCY_ADDRESS,
            }
        )

    def _registration_refused(self, code: str, message: str) -> None:
        assert self.device is not None  # (the phone whose registration the relay answered)
        self.registration_refused = {"code": code, "message": message}
        self.why_not_added = (
            f"the relay refused to register the agency's phone {self.device.name} ({code}: {message}): "
            "there was no account to add"
        )
        self._emit_not_added()

    def _emit_not_added(self) -> None:
        """The run's event that the ghost was not added, and why (``why_not_added``)."""
        self.world.emit(
            {
                "t": self.world.sched.now,
                "kind": "exceptional_access",
                "demand": "ghost_participant",
                "group": self.group,
                "added": False,
                "why": self.why_not_added,
            }
        )

    def _agency_phone(self, account: str) -> DeviceView:
        """The agency's phone: an account registered like anyone's, run from the agency's address. It
        connects, registers on that connection and logs in on the same one (``World.add_device`` with
        ``registered=False``), as a phone does (clients.net's ``register`` then ``login``; the simulated
        phones, sims.world.simulation): the relay records one connection, as it does a phone's."""
        world = self.world
        rng = seeded(world.scenario.seed, "exceptional", "ghost-participant", account)
        agent = A.DeviceAgent(
            Device(account, 1, rng=rng.randbytes, pq=True, deterministic=True),
            registration_id=rng.randrange(1, 16380),
            delivery_token=rng.randbytes(32),
            rng=rng.randbytes,
            trust_root=world.relay.trust_root_public,
            clock=world.relay.clock,
            padding=world.padding,
            group_fanout="server",
        )
        d = world.add_device(
            DeviceSpec(account, 1, world.relay_region, AGENCY_ADDRESS), agent, registered=False
        )
        world.start_device(d.name)
        return d

    def agency_devices(self) -> list[str]:
        return [] if self.device is None else [self.device.name]

    def on_agent_event(self, device: DeviceView, event: A.AgentEvent) -> bool:
        """What a phone reported. A member's phone seeing the ghost added is noted (the world writes it).
        The agency's phone is a device the relay serves: what it reads is the agency's (``ghost_read``),
        and with what it could not read the world counts and transcribes as a person's
        (Simulation._agency_event); the rest it reports (a ``Failed`` request, an ``IdentityChanged``,
        a group's or an account's devices changing, its login...) the world handles and writes as any
        phone's, as it does the ghost device's (sims.access.ghost)."""
        world = self.world
        agency = self.device is not None and device.name == self.device.name
        if agency and isinstance(event, A.Registered) and self.added_at is None:
            self._add()  # the relay has the agency's account now: the provider adds it to the group
            return False  # the world has the phone log in, on the connection it registered on
        if agency and self.added_at is None and self.registration_refused is None:
            # the relay refused the agency's phone's registration (its limits, or its profile's proof): the
            # account the provider would add does not exist, so nothing is added; the world writes a Failed
            if isinstance(event, A.Failed) and event.ref == "register":
                self._registration_refused(event.code, event.message)
            elif isinstance(event, A.ProofRequired):
                self._registration_refused(
                    wire.ErrorCode.REGISTRATION_PROOF.value,
                    f"the relay asks a new account for a registration proof (a hashcash stamp of "
                    f"{event.difficulty} leading zero bits), which the agency's phone does not make",
                )
        if isinstance(event, A.GroupMembershipChanged) and self.account in event.added and not agency:
            self.seen.append({"t": world.sched.now, "device": device.name, "shown_to_user": event.shown})
            return False  # the world writes it to the transcript
        if not agency:
            return False
        if isinstance(event, A.Received):
            mid = world.envelope_message.get(event.envelope_id)
            if mid is not None and mid not in self.read:
                text = event.plaintext.decode("utf-8", "replace")
                self.read[mid] = {"t": world.sched.now, "text": text}
                world.emit(
                    {
                        "t": world.sched.now,
                        "kind": "ghost_read",
                        "device": device.name,
                        "message": mid,
                        "plaintext": text,
                    }
                )
        elif isinstance(event, A.Duplicate | A.Undecryptable) and not world.read_already(device.name, event):
            reason = A.refusal(event) if isinstance(event, A.Undecryptable) else None
            if reason is not None:
                self.refused[reason] += 1  # it decrypted, and the agency's phone's agent refused it
            else:
                self.undecryptable += 1
        return isinstance(event, A.Received | A.Duplicate | A.Undecryptable)  # what it read, or could not

    def finish(self) -> list[ExceptionalReport]:
        if self.group is None:
            return []
        world = self.world
        prefix = f"group:{self.group}"
        rows = []
        for mid in sorted(world.messages):
            m = world.messages[mid]
            if m.planned.recipient != prefix or m.accepted_at is None:
                continue
            after = self.added_at is not None and m.accepted_at > self.added_at
            got = self.read.get(mid)
            rows.append(
                {
                    "message": mid,
                    "from": m.planned.sender,
                    "accepted": round(m.accepted_at, 3),
                    "after_ghost_added": after,
                    "read_by_ghost": got is not None,
                    "text_matches": got is not None and got["text"] == m.planned.text,
                }
            )
        members = sorted(
            d.name for d in world.devices.values() if self.device is None or d.name != self.device.name
        )
        first_seen: dict[str, dict[str, Any]] = {}
        for s in self.seen:
            first_seen.setdefault(s["device"], s)
        data = {
            "scenario": world.scenario.name,
            "profile": world.profile.name,
            "group_fanout": world.profile.group_fanout,
            "group_state_encrypted": world.profile.group_state_encrypted,
            "group_source": world.profile.group_source,
            "group": self.group,
            "ghost": self.account,
            "demanded_at": self.demanded_at,
            "added_at": self.added_at,
            "why_not_added": self.why_not_added,
            "registration_refused": self.registration_refused,
            "registering": self.device is not None
            and self.added_at is None
            and self.registration_refused is None,
            "client_change": self.client_change,
            "read": sorted(self.read),
            "expected_after_added": [r["message"] for r in rows if r["after_ghost_added"]],
            "matches_ground_truth": sorted(self.read)
            == [r["message"] for r in rows if r["after_ghost_added"]]
            and all(r["text_matches"] for r in rows if r["read_by_ghost"]),
            "saw_it_added": [first_seen[d] for d in sorted(first_seen)],
            "noticed_by": sorted(d for d, s in first_seen.items() if s["shown_to_user"]),
            "never_looked": [d for d in members if d not in first_seen],
            "undecryptable": self.undecryptable,
            "refused": self.refused,
            "rows": rows,
        }
        return [ExceptionalReport("ghost-participant", data, _markdown(data))]


def _markdown(data: dict[str, Any]) -> str:
    lines = [f"# Ghost participant — {md_text(data['scenario'])}", ""]
    if data.get("registration_refused") is not None:
        refused = data["registration_refused"]
        lines += [
            f"The provider ({data['profile']}) was ordered to add a silent participant to group "
            f"**{md_text(data['group'])}**, and added none: the agency's phone could not register its account "
            f"**{md_text(data['ghost'])}**. The relay refused the registration "
            f"({md_text(refused['code'])}: {md_text(refused['message'])}), so there was no account to add "
            "to the member list, and the ghost read nothing.",
        ]
        return "\n".join(lines) + "\n"
    if data["why_not_added"] is not None:
        lines += [
            f"The provider ({data['profile']}) was ordered to add a silent participant to group "
            f"**{md_text(data['group'])}**, and could not: {data['why_not_added']}.",
            "",
            f"- Source: {data['group_source'] or 'the profile names none'}.",
        ]
        return "\n".join(lines) + "\n"
    if data["added_at"] is None and data.get("registering"):
        return (
            "\n".join(
                [
                    *lines,
                    f"Group **{md_text(data['group'])}** existed at the relay, but the run ended while the agency's "
                    f"phone was still registering account **{md_text(data['ghost'])}**: nothing was added.",
                ]
            )
            + "\n"
        )
    if data["added_at"] is None:
        return (
            "\n".join(
                [*lines, f"Group **{md_text(data['group'])}** never existed at the relay: nothing was added."]
            )
            + "\n"
        )
    rows = data["rows"]
    lines += [
        f"At **{clock(data['added_at'])}** the provider ({data['profile']}) added **{md_text(data['ghost'])}**, an account "
        f"the agency holds, to group **{md_text(data['group'])}**'s member list, straight into its store: no admin "
        "asked for it. From then on every member's phone took the ghost for a member: it handed the ghost its "
        "sender key over a pairwise session, and the relay fanned each message out to it too.",
        "",
        f"- Group messages after the ghost was added: {len(data['expected_after_added'])}; read by the ghost: "
        f"**{len(data['read'])}**; matches ground truth: **{'yes' if data['matches_ground_truth'] else 'NO'}**.",
        *unread_lines(data, "the agency's phone"),
        f"- Members' clients changed to hide membership changes: **{'yes' if data['client_change'] else 'no'}**.",
        f"- Phones that saw the ghost added: {len(data['saw_it_added'])}; that showed it to their user: "
        f"**{', '.join(map(md_text, data['noticed_by'])) or 'none'}**; that never looked the list up again: "
        f"{', '.join(map(md_text, data['never_looked'])) or 'none'}.",
        "",
        "| phone | saw it added at | shown to the user |",
        "|---|---|---|",
        *[
            f"| {md_text(s['device'])} | {clock(s['t'])} | {'yes' if s['shown_to_user'] else 'no (changed client)'} |"
            for s in data["saw_it_added"]
        ],
        "",
        "| message | from | at the relay | after the ghost was added | ghost read it |",
        "|---|---|---|---|---|",
        *[
            f"| {r['message']} | {md_text(r['from'])} | {clock(r['accepted'])} | {'yes' if r['after_ghost_added'] else 'no'} | "
            f"{'**yes**' if r['read_by_ghost'] else 'no'} |"
            for r in rows
        ],
        "",
        "Nothing in the sender keys or the Double Ratchet is broken: each member encrypts to whom the "
        "relay's member list names. What protects the group is the members seeing that list change.",
    ]
    return "\n".join(lines) + "\n"
