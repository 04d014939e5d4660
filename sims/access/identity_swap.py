"""A malicious relay swaps an identity: it delivers an attacker's first message labelled as the victim's.

``relay_swaps_identity`` (``victim``, ``contact``, optional ``text``): the relay — malicious, or
compelled — makes a device of its own with a fresh identity key, starts a session with each of
the contact's devices from the keys it stores (signed prekey and last-resort KEM prekey: no
one-time prekey is needed), and queues the first message as coming from the victim's device 1
(``World.forge_envelope``). Under sealed sender it also signs a sender certificate naming the
victim with the attacker's key: the relay's signature is all a certificate has. The contact's
phone has pinned the victim's real identity key (``clients.identity``): it raises
``IdentityChanged`` and, by its policy, accepts with a warning or refuses; a refused forgery is
counted and transcribed as any envelope a phone refuses (``untrusted_identity`` in summary.json's
``messages.refused``), and the report's outcome gives the same reason. Whatever the contact's
phone sends to the victim afterwards is tried against the attacker's sessions: what it reads is
what a silent takeover would have cost.
"""

from __future__ import annotations

from typing import Any

from relaysim.clients import agent as A
from relaysim.clients.errors import DecryptionError
from relaysim.clients.keys import KemPreKey, PreKeyBundle, SignedPreKey
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.sims.access.base import DeviceView, Intervention, World
from relaysim.sims.access.key_transparency import check_presented_key, swap_detection_by_setting
from relaysim.sims.access.reports import ExceptionalReport, identity_swap_markdown
from relaysim.sims.scenario import IdentitySwap, TimelineEvent
from relaysim.sims.world.util import seeded

__all__ = ["RelaySwapsIdentity"]

RETRY = 60.0  # seconds: wait for both accounts to exist
DEFAULT_TEXT = "New phone, same me. Send the documents here from now on."


class RelaySwapsIdentity(Intervention):
    """One identity swap: the attacker's first message to ``contact``, labelled as ``victim``'s device 1."""

    answers = ((IdentitySwap, None),)
    order = 3

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.victim: str | None = None
        self.contact: str | None = None
        self.swapped_at: float | None = None
        self.attacker: Device | None = None
        self.forged: dict[bytes, str] = {}  # envelope id → the contact's device it went to
        self.notices: list[dict[str, Any]] = []
        self.outcomes: dict[str, dict[str, Any]] = {}  # contact device → what became of the forgery
        self.read: list[dict[str, Any]] = []  # what the attacker read of the contact's later messages
        self.sent_to_victim: list[dict[str, Any]] = []

    @property
    def started(self) -> float | None:
        return self.swapped_at

    def on_event(self, event: TimelineEvent) -> None:
        assert isinstance(event, IdentitySwap)
        self._swap(event.victim, event.contact, DEFAULT_TEXT if event.text is None else event.text)

    def _swap(self, victim: str, contact: str, text: str) -> None:
        world = self.world
        store = world.store
        if not (store.account_exists(victim) and store.account_exists(contact)):
            world.sched.after(RETRY, self._swap, victim, contact, text)
            return
        rng = seeded(world.scenario.seed, "exceptional", "identity-swap", victim, contact)
        attacker = Device(victim, 1, rng=rng.randbytes, pq=True, deterministic=True)
        relay = world.relay
        plaintext = A.pad(text.encode(), world.padding)
        for record in store.devices(contact):
            peer = PeerAddress(contact, record.device)
            spk, kem = record.signed_prekey, record.last_resort_kem_prekey
            attacker.start_session(
                peer,
                PreKeyBundle(
                    identity_key=record.identity_key,
                    signed_prekey=SignedPreKey(spk.id, spk.public, spk.signature),
                    kem_prekey=KemPreKey(kem.id, kem.public, kem.signature, True),
                ),
            )
            if world.sealed:
                # the relay signs whatever sender certificate it likes: the victim's name, the attacker's key
                expires = int(relay.clock()) + relay.certificate_ttl
                certificate = relay.identity.issue(victim, 1, attacker.identity_key, expires).encode()
                body = attacker.seal(peer, plaintext, certificate)
                eid = world.forge_envelope((contact, record.device), body, sealed=True)
            else:
                body = attacker.encrypt(peer, plaintext)
                eid = world.forge_envelope((contact, record.device), body, sealed=False, source=(victim, 1))
            self.forged[eid] = f"{contact}/{record.device}"
        self.victim, self.contact, self.attacker, self.swapped_at = victim, contact, attacker, world.sched.now
        world.emit(
            {
                "t": world.sched.now,
                "kind": "relay_swaps_identity",
                "victim": f"{victim}/1",
                "contact": contact,
                "envelopes": len(self.forged),
                "sealed": world.sealed,
            }
        )

    def on_agent_event(self, device: DeviceView, event: A.AgentEvent) -> bool:
        if self.attacker is None:
            return False
        t = self.world.sched.now
        if isinstance(event, A.IdentityChanged):
            if event.peer == PeerAddress(str(self.victim), 1) and event.new == self.attacker.identity_key:
                self.notices.append(
                    {
                        "t": t,
                        "device": device.name,
                        "via": event.via,
                        "accepted": event.accepted,
                        "was_verified": event.was_verified,
                    }
                )
                if self.world.scenario.defences.key_transparency:  # the detection step: ask the log
                    self.notices[-1]["key_log"] = check_presented_key(
                        self.world.relay, str(self.victim), 1, self.attacker.identity_key
                    )
            return False  # the world writes it to the transcript
        if isinstance(event, A.Received | A.Undecryptable | A.Duplicate) and event.envelope_id in self.forged:
            received = isinstance(event, A.Received)
            outcome: dict[str, Any] = {
                "t": t,
                "shown_to_user": received,
                "text": event.plaintext.decode("utf-8", "replace") if isinstance(event, A.Received) else None,
            }
            if isinstance(event, A.Undecryptable):
                outcome["reason"] = event.reason  # untrusted_identity: it opened, from a key not approved
            elif isinstance(event, A.Duplicate):
                outcome["reason"] = "duplicate"
            self.outcomes[device.name] = outcome
            # Read, the forgery is this intervention's, not a planned message. Not read, it is an envelope
            # the phone did not read like any other: the world counts it (summary.json's messages.refused,
            # undecryptable) and transcribes it, as the report's outcome says.
            return received
        return False

    def on_accepted(
        self, sender: DeviceView, frame: wire.Send | wire.SealedSend, envelope_ids: tuple[bytes, ...]
    ) -> None:
        if self.attacker is None or sender.spec.person != self.contact or frame.to != self.victim:
            return
        world = self.world
        mid = next((world.envelope_message[e] for e in envelope_ids if e in world.envelope_message), None)
        for env in frame.envelopes:
            if env.device != 1:
                continue
            try:
                if isinstance(frame, wire.SealedSend):
                    _, plaintext = self.attacker.open_sealed(
                        env.body, world.relay.trust_root_public, int(world.relay.clock())
                    )
                else:
                    plaintext = self.attacker.decrypt(
                        PeerAddress(sender.spec.person, sender.spec.index), env.body
                    )
                text: str | None = A.unpad(plaintext, world.padding).decode("utf-8", "replace")
            except DecryptionError:
                text = None
            row = {
                "t": world.sched.now,
                "from": sender.name,
                "message": mid,
                "read_by_attacker": text is not None,
            }
            self.sent_to_victim.append(row)
            if text is not None and not text.startswith("\x00"):
                self.read.append({**row, "text": text})

    def finish(self) -> list[ExceptionalReport]:
        if self.attacker is None or self.victim is None or self.contact is None or self.swapped_at is None:
            return []
        world = self.world
        first = min((n["t"] for n in self.notices), default=None)
        silent = sorted(
            d
            for d, o in self.outcomes.items()
            if o["shown_to_user"] and not any(n["device"] == d for n in self.notices)
        )
        data = {
            "scenario": world.scenario.name,
            "victim": f"{self.victim}/1",
            "contact": self.contact,
            "swapped_at": self.swapped_at,
            "sealed_sender": world.sealed,
            "policy": world.scenario.defences.identity_changes,
            "forged_to": sorted(self.forged.values()),
            "noticed_by": sorted({n["device"] for n in self.notices}),
            "first_notice_at": first,
            "notices": self.notices,
            "outcomes": self.outcomes,
            "silently_accepted_by": silent,
            "messages_to_victim_after": self.sent_to_victim,
            "read_by_attacker": self.read,
            "detection": swap_detection_by_setting(
                world.scenario, self.victim, self.contact, self.swapped_at, self.notices
            ),
        }
        return [
            ExceptionalReport("relay-swaps-identity", data, identity_swap_markdown(data, world.scenario.name))
        ]
