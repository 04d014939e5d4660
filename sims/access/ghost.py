"""A ghost device: the provider, compelled, adds a device the agency holds to the target's account.

``exceptional_access`` / ``ghost_device``: the provider writes a new device into the target's
account directly in its store (``relay.core.RelayCore.provision_device``) — no authentication, as
only the provider can — with keys the agency holds (a real ``Device`` and ``DeviceAgent``,
connecting like any phone). The target's contacts' next sends meet ``stale_devices``, refetch
the bundles and encrypt to the ghost too; their agents report ``DeviceListChanged``, the one
trace a careful user can see (Levy & Robinson's "ghost" proposal, Lawfare, 2018-11-29).
Being no registration, it meets neither the relay's limit on new accounts per address nor its
registration proof (``provision_device`` checks neither), which a ghost participant's agency phone,
a new account, can be refused by (sims.access.ghost_participant); what ``provision_device`` does
refuse (no such account, a device id past 127, an account full) the provider waits out, cannot pick
(``ghost_device_id``) or the scenario's validator refuses before the run.

What the contacts see depends on the profile's identity model (``relay.profiles``):
- "account" (Signal): linked devices share the account's identity key, which the provider does
  not have; the ghost's new key is "safety number changed" (``IdentityChanged``) at every contact;
- "signed-devices" (WhatsApp): the contacts refuse a companion device the primary did not sign;
  a ghost needs a client change (``client_change = true``: the target's primary is made to sign it);
- "per-device" (iMessage): contacts take the keys the directory serves, so the ghost is silent,
  unless Contact Key Verification (``[defences] key_verification = "on"``) is on.
With ``client_change`` under "account", the target's primary hands the ghost the account's key (as
at linking), so no safety number changes. The ghost also reads the sync copies of the target's own
outgoing 1:1 messages, once the target's phone sends them (it learns of other devices from the
relay's ``needs_sync`` on an authenticated send, or, with the client change, is told).
"""

from __future__ import annotations

from typing import Any

from relaysim.clients import agent as A
from relaysim.clients.session import Device
from relaysim.relay import wire
from relaysim.relay.wire import MAX_DEVICE_ID
from relaysim.sims.access.base import AGENCY_ADDRESS, DeviceView, Intervention, World
from relaysim.sims.access.key_transparency import KeyTransparencyWatch, detection_by_setting, next_audit
from relaysim.sims.access.reports import ExceptionalReport, ghost_markdown
from relaysim.sims.scenario import DeviceSpec, ExceptionalAccess, TimelineEvent
from relaysim.sims.world.util import seeded

__all__ = ["GhostDevice", "ghost_device_id"]

RETRY = 60.0  # seconds: the provider waits this long for the target's account to exist


def ghost_device_id(target: str, known: list[int]) -> int:
    """The device id the provider gives the ghost: the one after the highest ``known`` id (the
    account's devices, in the scenario and in the store), or, when that is past MAX_DEVICE_ID (the
    relay registers device ids 1 to 127 only, as Signal's server and libsignal's DeviceId hold them),
    the lowest id in 1..MAX_DEVICE_ID no device has. Raises ``ValueError`` when every one is taken."""
    after = max(known, default=0) + 1
    if after <= MAX_DEVICE_ID:
        return after
    taken = set(known)
    free = next((i for i in range(1, MAX_DEVICE_ID + 1) if i not in taken), None)
    if free is None:
        raise ValueError(
            f"ghost_device: no device id is free in {target!r}'s account (ids 1 to {MAX_DEVICE_ID} are all "
            "taken): the provider cannot add a ghost device"
        )
    return free


class GhostDevice(Intervention):
    """One ghost device in one target's account; the agency reads what it receives."""

    answers = ((ExceptionalAccess, "ghost_device"),)
    order = 2

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.device: DeviceView | None = None
        self.target: str | None = None
        self.added_at: float | None = None
        self.read: dict[int, dict[str, Any]] = {}  # message id → what it read
        self.undecryptable = 0  # what reached the ghost and did not decrypt (no copy of what it read)
        self.refused = dict.fromkeys(A.REFUSAL_REASONS, 0)  # ... and what did, refused, by reason
        self.list_changes: list[dict[str, Any]] = []  # every device-list change any phone saw
        self.client_change = False
        self.identity_changes: list[dict[str, Any]] = []  # IdentityChanged at any phone for the target
        self.refusals: list[dict[str, Any]] = []  # contacts that refused the ghost ("signed-devices")
        self.sync_read: dict[int, dict[str, Any]] = {}  # message id → the sync copy the ghost read
        self.fork = False
        self.watch: KeyTransparencyWatch | None = None  # the detection step, under key transparency

    @property
    def started(self) -> float | None:
        return self.added_at

    def on_event(self, event: TimelineEvent) -> None:
        assert isinstance(event, ExceptionalAccess) and event.target is not None  # the validator's promise
        self.client_change = event.client_change
        self.fork = event.fork
        self._add(event.target)

    def _add(self, target: str) -> None:
        world = self.world
        now = world.sched.now
        if not world.store.account_exists(target):  # not registered yet: the provider waits for it
            world.sched.after(RETRY, self._add, target)
            return
        known = [d.index for d in world.scenario.person(target).devices] + world.store.device_ids(target)
        gid = ghost_device_id(target, known)
        rng = seeded(world.scenario.seed, "exceptional", "ghost", target)
        primary = world.by_address[(target, 1)].agent
        model = world.profile.identity_model
        # With the client change under "account", the target's primary hands over the account's
        # identity key, as it does when linking; otherwise the provider can only make a new one.
        identity = primary.device.secrets.identity if self.client_change and model == "account" else None
        device = Device(target, gid, rng=rng.randbytes, pq=True, deterministic=True, identity=identity)
        registration_id = rng.randrange(1, 16380)
        signature = None
        if self.client_change and model == "signed-devices":
            # the target's primary, changed, signs the ghost's key; the ghost registers with it
            signature = world.device_signatures[(target, gid)] = A.sign_device(
                primary.device, device.identity_key, rng.randbytes
            )
        agent = A.DeviceAgent(
            device,
            registration_id=registration_id,
            delivery_token=primary.delivery_token,
            rng=rng.randbytes,
            trust_root=world.relay.trust_root_public,
            clock=world.relay.clock,
            tokens=dict(primary.tokens),
            identity_model=primary.identity_model,
            key_verification=primary.key_verification,
            device_signature=signature,
        )
        if self.client_change:
            primary.linked_devices_known()  # and, changed, sends sync copies to it
        # The provider writes the device straight into its store: no authentication by any of
        # the target's devices, no registration record in the metadata, nothing the target sees.
        agent.register()
        (frame,) = agent.take_outbox()
        assert isinstance(frame, wire.Register)
        agent.handle(world.relay.provision_device(frame))
        # The world puts it under the mandates in force (escrow, a global key) like every phone.
        d = world.add_device(DeviceSpec(target, gid, world.relay_region, AGENCY_ADDRESS), agent)
        self.device, self.target, self.added_at = d, target, now
        world.emit(
            {
                "t": now,
                "kind": "exceptional_access",
                "demand": "ghost_device",
                "target": target,
                "ghost": d.name,
                "registered_by": "the provider, directly in its store (no authentication by the account)",
                "operated_from": AGENCY_ADDRESS,
                "identity_model": model,
                "client_change": self.client_change,
            }
        )
        world.start_device(d.name)
        self._watch(target, gid, agent.device.identity_key)

    # -- detection (sims.access.key_transparency): a step apart from adding the ghost ------------

    def _watch(self, target: str, gid: int, ghost_key: bytes) -> None:
        world = self.world
        if not world.scenario.defences.key_transparency:
            return
        own = {
            d.spec.index: d.agent.device.identity_key
            for d in world.devices.values()
            if d.spec.person == target and d.spec.index != gid
        }
        self.watch = KeyTransparencyWatch(world, target, gid, ghost_key, own, self.fork)
        when = next_audit(world.sched.now)
        for index in sorted(own):
            world.sched.after(when - world.sched.now, self.watch.start_audit, f"{target}/{index}")

    def agency_devices(self) -> list[str]:
        return [] if self.device is None else [self.device.name]

    def on_agent_event(self, device: DeviceView, event: A.AgentEvent) -> bool:
        world = self.world
        t = world.sched.now
        if isinstance(event, A.KeyLogAudited | A.KeyLogCompared):
            if self.watch is not None:
                self.watch.on_event(t, device.name, event)
            return False
        if isinstance(event, A.KeyLogChecked):
            watch = self.watch
            if watch is not None and event.account == self.target and device.agent.key_log_heads:
                ghost_listed = watch.ghost_device in event.logged + event.unlogged
                if ghost_listed and device.name not in {c["device"] for c in watch.inclusion_checks}:
                    head = device.agent.key_log_heads[-1]
                    watch.contact_checked(t, device.name, head, watch.ghost_device in event.logged)
            return False  # the world writes it to the transcript
        if isinstance(event, A.DeviceListChanged):
            self.list_changes.append(
                {
                    "t": t,
                    "device": device.name,
                    "account": event.account,
                    "added": list(event.added),
                    "removed": list(event.removed),
                    "identity_changed": list(event.identity_changed),
                }
            )
            return False  # the world writes it to the transcript
        if isinstance(event, A.IdentityChanged) and event.peer.account == self.target:
            self.identity_changes.append(
                {
                    "t": t,
                    "device": device.name,
                    "peer": f"{event.peer.account}/{event.peer.device}",
                    "accepted": event.accepted,
                }
            )
            return False
        if isinstance(event, A.Failed) and event.code in ("unsigned_device", "foreign_identity"):
            self.refusals.append({"t": t, "device": device.name, "message": event.message})
            return False
        if self.device is None or device.name != self.device.name:
            return False
        if isinstance(event, A.Received):
            mid = world.envelope_message.get(event.envelope_id)
            if mid is not None and mid not in self.read:
                text = event.plaintext.decode("utf-8", "replace")
                self.read[mid] = {
                    "t": t,
                    "from": f"{event.sender.account}/{event.sender.device}",
                    "text": text,
                }
                world.emit(
                    {"t": t, "kind": "ghost_read", "device": device.name, "message": mid, "plaintext": text}
                )
            return True
        if isinstance(event, A.SentTranscript):
            mid = world.sync_message.get(event.envelope_id)
            if mid is not None and mid not in self.sync_read:
                text = event.plaintext.decode("utf-8", "replace")
                self.sync_read[mid] = {"t": t, "to": event.destination, "text": text}
                world.emit(
                    {
                        "t": t,
                        "kind": "ghost_read_sync_copy",
                        "device": device.name,
                        "message": mid,
                        "to": event.destination,
                        "plaintext": text,
                    }
                )
            return True
        if isinstance(event, A.Duplicate | A.Undecryptable):
            if world.read_already(device.name, event):
                return True  # a second copy of what the ghost read: dropped (a duplicate, as a person's)
            reason = A.refusal(event) if isinstance(event, A.Undecryptable) else None
            if reason is not None:
                self.refused[reason] += 1  # it decrypted, and the ghost's agent refused it
            else:
                self.undecryptable += 1
            return True
        return False

    def finish(self) -> list[ExceptionalReport]:
        if self.watch is not None:
            self.watch.close()  # the run ends: the witness disconnects
        if self.device is None or self.target is None or self.added_at is None:
            return []
        world = self.world
        target, added, ghost = self.target, self.added_at, self.device
        rows: list[dict[str, Any]] = []
        for mid in sorted(world.messages):
            m = world.messages[mid]
            if m.planned.recipient != target or m.accepted_at is None:
                continue
            after = m.accepted_at > added
            read = self.read.get(mid)
            if read is not None:
                why = "sent after the ghost was added: the sender encrypted a copy to the ghost's keys"
            elif after:
                why = "sent after the ghost was added, yet the ghost did not read it (still queued or lost)"
            else:
                why = "sent before the ghost was added: encrypted only to the target's own devices"
            rows.append(
                {
                    "message": mid,
                    "from": m.planned.sender,
                    "accepted": round(m.accepted_at, 3),
                    "after_ghost_added": after,
                    "read_by_ghost": read is not None,
                    "text_matches": read is not None and read["text"] == m.planned.text,
                    "ghost_read_text": None if read is None else read["text"],
                    "why": why,
                }
            )
        noticed = [c for c in self.list_changes if c["account"] == target and ghost.spec.index in c["added"]]
        senders = sorted({m.planned.sender for m in world.messages.values() if m.planned.recipient == target})
        noticed_by = sorted({c["device"] for c in noticed})
        model = world.profile.identity_model
        ckv = world.scenario.defences.key_verification == "on"
        ghost_key = ghost.agent.device.identity_key
        account_key = world.by_address[(target, 1)].agent.device.identity_key
        sync_rows = []
        for mid in sorted(world.messages):
            m = world.messages[mid]
            if m.planned.sender != target or m.accepted_at is None or m.planned.recipient == target:
                continue
            got = self.sync_read.get(mid)
            sync_rows.append(
                {
                    "message": mid,
                    "to": m.planned.recipient,
                    "accepted": round(m.accepted_at, 3),
                    "after_ghost_added": m.accepted_at > added,
                    "read_by_ghost": got is not None,
                    "text_matches": got is not None and got["text"] == m.planned.text,
                }
            )
        warned = sorted({c["device"] for c in self.identity_changes if c["peer"] == ghost.name})
        own = f"{target}/"
        refused = sorted({r["device"] for r in self.refusals if not r["device"].startswith(own)})
        target_refused = sorted({r["device"] for r in self.refusals if r["device"].startswith(own)})
        target_saw = [
            c for c in self.list_changes if c["account"] == target and c["device"].startswith(f"{target}/")
        ]
        if model == "account":
            check = ghost_key != account_key  # the account's one key is what the safety number covers
        elif model == "signed-devices":
            check = not self.client_change  # unsigned: refused outright; signed: the code is unchanged
        else:
            check = ckv  # per-device keys: only Contact Key Verification compares them
        data = {
            "scenario": world.scenario.name,
            "profile": world.profile.name,
            "identity_model": model,
            "identity_model_source": world.profile.identity_model_source,
            "client_change": self.client_change,
            "key_verification": ckv,
            "ghost_has_account_key": ghost_key == account_key,
            "ghost_signed_by_primary": (target, ghost.spec.index) in world.device_signatures,
            "contacts_saw_identity_change": warned,
            "contacts_refused_ghost": refused,
            "target_refused_ghost": target_refused,  # the target's phone would not send it sync copies
            "target_saw": target_saw,
            "sync_read": sorted(self.sync_read),
            "sync_rows": sync_rows,
            "safety_number_check_catches_it": check,
            "target": target,
            "ghost": ghost.name,
            "added_at": added,
            "operated_from": AGENCY_ADDRESS,
            "read": sorted(self.read),
            "expected_after_added": sorted(r["message"] for r in rows if r["after_ghost_added"]),
            "matches_ground_truth": sorted(self.read)
            == sorted(r["message"] for r in rows if r["after_ghost_added"])
            and all(r["text_matches"] for r in rows if r["read_by_ghost"]),
            "undecryptable": self.undecryptable,
            "refused": self.refused,
            "device_list_changes_seen": noticed,
            "noticed_by": noticed_by,
            "senders_to_target": senders,
            "rows": rows,
            "detection": detection_by_setting(world.scenario, target, noticed, self.watch),
        }
        return [ExceptionalReport("ghost-device", data, ghost_markdown(data, world.scenario.name))]
