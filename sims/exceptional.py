"""Exceptional access, run for real: key escrow, a global key, a ghost device, a seized phone.

Each timeline event changes what the simulated phones or the relay actually do, and each
result is read off real ciphertext with real keys — nothing here is a table of answers:

- ``exceptional_access`` / ``key_escrow``: from service on, every device wraps every message in
  an escrow frame carrying its message key sealed to the escrow agent's public key
  (``clients.escrow``; the key pair is generated here from the scenario's seed). The relay
  carries larger opaque bytes and nothing else changes. ``escrow_key_stolen``: whoever holds
  the escrow private key now opens every escrowed envelope that was ever captured — by a tap
  the relay was ordered to run, or because the relay keeps envelopes.
- ``exceptional_access`` / ``global_key``: from service on, every device seals message bodies
  under one AES-256-GCM key the provider holds (``relay.custody.ContentKey``), as consumer
  BlackBerry PIN/BBM did, instead of running the Double Ratchet. The provider's compliance desk
  is handed the key and its custody becomes "provider", so content under any later order opens.
- ``exceptional_access`` / ``ghost_device``: the provider, compelled, writes a new device into
  the target's account directly in its store — no authentication, as only the provider can — with
  keys the agency holds (a real ``Device`` and ``DeviceAgent``, connecting like any phone). The
  target's contacts' next sends meet ``stale_devices``, refetch the bundles and encrypt to the
  ghost too; their agents report ``DeviceListChanged``, the one trace a careful user can see
  (Levy & Robinson's "ghost" proposal, Lawfare, 2018-11-29).
- ``seize_phone``: at that moment the device's whole protocol state is copied
  (``Device.to_dict``: identity key, prekey secrets, every session). The phone is handed back
  and keeps running (a forensic copy at a border, say). At the end the copy is run against
  every envelope to or from that device, in order, to see what it opens and why.

What is "captured": for the escrow thief, what the relay's store holds — the envelope bodies of
every content tap (wiretap, blanket demand), archived envelopes, and envelopes still queued. For
the seized phone, every envelope to or from it that the relay accepted, from the first minute
(recorded from the frames the simulation carries). That is what a wiretap on the account from
the start would collect, sealed envelopes included; giving the agency everything means that
the only thing keeping a message closed is the cryptography.

Results go to the transcript and, through ``write_exceptional``, to ``DIR/exceptional/NAME.json``
and ``NAME.md``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients import agent as A
from clients import escrow as _escrow
from clients import sealed, spec
from clients.errors import DecryptionError
from clients.escrow import EscrowKeyPair
from clients.ratchet import HEADER as _HEADER  # the ratchet header: DHs public ‖ PN ‖ N
from clients.session import Device, PeerAddress, parse_ciphertext
from relay import wire
from relay.custody import ContentKey
from relay.store import DeviceRecord
from sims.scenario import DeviceSpec

if TYPE_CHECKING:
    from sims.runner import SimDevice, Simulation

__all__ = ["AGENCY_ADDRESS", "ExceptionalAccess", "ExceptionalReport", "write_exceptional"]

AGENCY_ADDRESS = "203.0.113.250"  # where the agency runs the ghost device from (TEST-NET-3)


def _seeded(seed: int, *label: object) -> random.Random:
    return random.Random(f"{seed}:exceptional:" + ":".join(map(str, label)))


def _clock(t: float) -> str:
    t = int(t)
    day, t = divmod(t, 86400)
    return (f"day {day + 1} " if day else "") + f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


@dataclass
class ExceptionalReport:
    """One result, as written to ``exceptional/NAME.json`` and ``NAME.md``."""

    name: str
    data: dict[str, Any]
    markdown: str


@dataclass(frozen=True)
class Captured:
    """One envelope as the relay accepted it, with what the simulation knows about it."""

    envelope_id: bytes
    message: int | None
    sender: str  # device name, e.g. "alice/1"
    recipient: PeerAddress
    sealed: bool
    body: bytes
    time: float  # simulated seconds, when the relay accepted it


@dataclass
class _Seizure:
    device: str
    at: float
    state: dict[str, Any]  # Device.to_dict() at the moment of seizure


@dataclass
class _Ghost:
    device: SimDevice
    target: str
    added_at: float
    read: dict[int, dict[str, Any]] = field(default_factory=dict)  # message id → what it read
    undecryptable: int = 0


class ExceptionalAccess:
    """The exceptional-access side of one ``Simulation``: the runner calls in on its events."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        seed = sim.scenario.seed
        self.escrow_keys = EscrowKeyPair.generate(_seeded(seed, "escrow-key").randbytes)
        self.escrow_since: float | None = None
        self.escrow_stolen_at: float | None = None
        self.stolen_preview: list[int] = []
        self.global_key: ContentKey | None = None
        self.global_since: float | None = None
        self.ghosts: dict[str, _Ghost] = {}
        self.seizures: list[_Seizure] = []
        self.list_changes: list[dict[str, Any]] = []
        # Only a scenario that seizes a phone needs every envelope kept.
        wants = any(ev.kind == "seize_phone" for ev in sim.scenario.events)
        self.captured: list[Captured] | None = [] if wants else None

    # --- the runner's hooks ------------------------------------------------------------------

    def handle(self, kind: str, params: dict[str, Any]) -> None:
        """A timeline event of kind exceptional_access, escrow_key_stolen or seize_phone."""
        if kind == "exceptional_access":
            demand = params["demand"]
            if demand == "key_escrow":
                self._begin_escrow()
            elif demand == "global_key":
                self._begin_global_key()
            elif demand == "ghost_device":
                self._add_ghost(params["target"])
            else:
                raise ValueError(f"unknown exceptional-access demand {demand!r}")
        elif kind == "escrow_key_stolen":
            self._steal_escrow_key()
        elif kind == "seize_phone":
            self._seize(params["device"])
        else:
            raise ValueError(f"not an exceptional-access event: {kind!r}")

    def on_accepted(
        self, sender: SimDevice, frame: wire.Send | wire.SealedSend, ids: tuple[bytes, ...]
    ) -> None:
        """The relay accepted ``frame``'s envelopes under ``ids`` (same order)."""
        if self.captured is None:
            return
        t = self.sim.sched.now
        for env, eid in zip(frame.envelopes, ids, strict=True):
            self.captured.append(
                Captured(
                    eid,
                    self.sim.envelope_message.get(eid),
                    sender.name,
                    PeerAddress(frame.to, env.device),
                    isinstance(frame, wire.SealedSend),
                    env.body,
                    t,
                )
            )

    def on_agent_event(self, d: SimDevice, event: A.AgentEvent) -> bool:
        """Take the events that are ours; True when the runner should not handle ``event`` itself."""
        t = self.sim.sched.now
        if isinstance(event, A.DeviceListChanged):
            row = {
                "t": t,
                "device": d.name,
                "account": event.account,
                "added": list(event.added),
                "removed": list(event.removed),
                "identity_changed": list(event.identity_changed),
            }
            self.list_changes.append(row)
            self.sim.emit(
                {"t": t, "kind": "device_list_changed", **{k: v for k, v in row.items() if k != "t"}}
            )
            return True
        ghost = self.ghosts.get(d.name)
        if ghost is None:
            return False
        if isinstance(event, A.Received):
            mid = self.sim.envelope_message.get(event.envelope_id)
            if mid is not None and mid not in ghost.read:
                text = event.plaintext.decode("utf-8", "replace")
                ghost.read[mid] = {
                    "t": t,
                    "from": f"{event.sender.account}/{event.sender.device}",
                    "text": text,
                }
                self.sim.emit(
                    {"t": t, "kind": "ghost_read", "device": d.name, "message": mid, "plaintext": text}
                )
            return True
        if isinstance(event, A.Undecryptable):
            ghost.undecryptable += 1
            return True
        return False

    # --- key escrow ---------------------------------------------------------------------------

    def _all_devices(self) -> list[SimDevice]:
        return [*self.sim.devices.values(), *(g.device for g in self.ghosts.values())]

    def _begin_escrow(self) -> None:
        if self.escrow_since is not None:
            return
        self.escrow_since = self.sim.sched.now
        public = self.escrow_keys.public_key
        for d in self._all_devices():
            d.agent.device.escrow = public
        self.sim.emit(
            {
                "t": self.escrow_since,
                "kind": "exceptional_access",
                "demand": "key_escrow",
                "devices": len(self._all_devices()),
                "escrow_public_key": public.public.hex(),
                "what_changes": "every message key is also sealed to the escrow key, inside the envelope body",
            }
        )

    def _captured_bodies(self) -> list[tuple[bytes, bytes, str]]:
        """Every envelope body the relay's store holds: (envelope id, body, where), each id once."""
        sim = self.sim
        store = sim.store
        taps = [*sim._open_orders, *(d.process.name for d in sim.disclosures if d.process.forward)]
        seen: set[bytes] = set()
        out: list[tuple[bytes, bytes, str]] = []

        def add(eid: bytes | None, body: bytes | None, where: str) -> None:
            if eid is not None and body is not None and eid not in seen:
                seen.add(eid)
                out.append((eid, body, where))

        for name in dict.fromkeys(taps):
            for record, body in store.intercepts(name):
                add(record.envelope_id, body, f"tap {name}")
        for a in store.archived():
            add(a.id, a.body, "archived by the relay")
        for e in store.all_envelopes():
            add(e.id, e.body, "still queued on the relay")
        return out

    def _escrow_open(self) -> dict[int, tuple[str, str]]:
        """Message id → (plaintext, where its envelope was captured), for every capture that opens."""
        opened: dict[int, tuple[str, str]] = {}
        for eid, body, where in self._captured_bodies():
            mid = self.sim.envelope_message.get(eid)
            if mid is None or mid in opened:
                continue
            try:
                text = self.escrow_keys.read(body)
            except DecryptionError:
                continue
            opened[mid] = (text.decode("utf-8", "replace"), where)
        return opened

    def _steal_escrow_key(self) -> None:
        now = self.sim.sched.now
        self.escrow_stolen_at = now
        opened = self._escrow_open()
        self.stolen_preview = sorted(opened)
        self.sim.emit(
            {
                "t": now,
                "kind": "escrow_key_stolen",
                "captured_envelopes": len(self._captured_bodies()),
                "opened_messages": sorted(opened),
                "what_it_means": "whoever holds the escrow private key opens every escrowed envelope captured, "
                "past and future, of every user",
            }
        )

    def _escrow_report(self) -> ExceptionalReport:
        sim = self.sim
        since, stolen = self.escrow_since, self.escrow_stolen_at
        captured_ids: dict[int, str] = {}
        sizes: dict[int, list[int]] = {}
        for eid, body, where in self._captured_bodies():
            mid = sim.envelope_message.get(eid)
            if mid is not None:
                captured_ids.setdefault(mid, where)
                sizes.setdefault(mid, []).append(len(body) - len(_escrow.strip(body)))
        opened = self._escrow_open() if stolen is not None else {}
        rows: list[dict[str, Any]] = []
        for mid in sorted(sim.messages):
            m = sim.messages[mid]
            if m.accepted_at is None:
                continue
            sent = m.sent_at if m.sent_at is not None else m.planned.at
            escrowed = since is not None and sent >= since
            got = opened.get(mid)
            after_theft = stolen is not None and (m.accepted_at or 0.0) > stolen
            if got is not None:
                why = f"escrowed, and captured ({got[1]}): the stolen key opens its escrowed message key"
                if after_theft:
                    why += " (sent after the theft: the key keeps working)"
            elif mid not in captured_ids:
                why = "never captured: no tap, archive or queue on the relay holds its envelope"
            elif not escrowed:
                why = "sent before escrow began: no escrow record; its keys exist only on the phones"
            elif stolen is None:
                why = "escrowed and captured, but the escrow key was never stolen"
            else:
                why = "escrowed and captured, yet it did not open (unexpected)"
            rows.append(
                {
                    "message": mid,
                    "from": m.planned.sender,
                    "to": m.planned.recipient,
                    "sent": round(sent, 3),
                    "escrowed": escrowed,
                    "captured": mid in captured_ids,
                    "captured_after_theft": after_theft,
                    "escrow_frame_bytes": sizes.get(mid, []),
                    "opened": got is not None,
                    "text_matches": got is not None and got[0] == m.planned.text,
                    "opened_text": None if got is None else got[0],
                    "why": why,
                }
            )
        expected = (
            {r["message"] for r in rows if r["escrowed"] and r["captured"]} if stolen is not None else set()
        )
        got_ids = {r["message"] for r in rows if r["opened"]}

        frames = [n for r in rows for n in r["escrow_frame_bytes"] if n]

        data = {
            "scenario": sim.scenario.name,
            "escrow_began": since,
            "escrow_key_stolen": stolen,
            "escrow_public_key": self.escrow_keys.public_key.public.hex(),
            "sealed_sender": sim.sealed,
            "messages": len(rows),
            "opened": sorted(got_ids),
            "opened_when_stolen": self.stolen_preview,
            "expected_escrowed_and_captured": sorted(expected),
            "mean_escrow_frame_bytes": round(sum(frames) / len(frames), 1) if frames else None,
            "matches_ground_truth": got_ids == expected
            and all(r["text_matches"] for r in rows if r["opened"]),
            "rows": rows,
        }
        return ExceptionalReport("key-escrow", data, _escrow_markdown(data, sim.scenario.name))

    # --- global key ---------------------------------------------------------------------------

    def _begin_global_key(self) -> None:
        sim = self.sim
        if self.global_key is not None:
            return
        self.global_since = sim.sched.now
        key = ContentKey("global-key", _seeded(sim.scenario.seed, "global-key").randbytes(32), "provider")
        self.global_key = key
        for d in self._all_devices():
            d.agent.content_key = key
        # The provider now holds a key to every message from here on: its desk gets it, and the
        # desk's idea of who holds content keys changes with the design (relay.compliance reads
        # ``profile.custody``). Done from here; relay.compliance is unchanged.
        sim.desk.keys.append(key)
        sim.desk.profile = dataclasses.replace(sim.desk.profile, custody="provider")
        sim.emit(
            {
                "t": self.global_since,
                "kind": "exceptional_access",
                "demand": "global_key",
                "devices": len(self._all_devices()),
                "key_id": key.key_id,
                "what_changes": "devices seal messages under one key the provider holds (as consumer BBM) "
                "instead of the Double Ratchet; the compliance desk holds it too",
            }
        )

    def _global_key_report(self) -> ExceptionalReport:
        sim = self.sim
        since = self.global_since
        assert since is not None
        orders: list[dict[str, Any]] = []
        for d in sim.disclosures:
            opened = sum(1 for x in d.decryption if x["opened"])
            orders.append(
                {
                    "name": d.process.name,
                    "process": d.process.process,
                    "served": d.process.served - (sim.relay.clock() - sim.sched.now),
                    "ciphertexts_tried": len(d.decryption),
                    "opened": opened,
                    "content_rows": len(d.provided.get("content", [])),
                }
            )
        after = [mid for mid, m in sorted(sim.messages.items()) if (m.sent_at or m.planned.at) >= since]
        data = {
            "scenario": sim.scenario.name,
            "global_key_since": since,
            "messages_under_global_key": after,
            "orders": orders,
        }
        lines = [
            f"# Global key — {sim.scenario.name}",
            "",
            f"At {_clock(since)} the provider was made to switch every device from the Double Ratchet to one "
            "key it holds (as consumer BlackBerry PIN/BBM did). From then on each message body is AES-256-GCM "
            "under that key, and the provider's compliance desk holds it.",
            "",
            f"Messages sent from then on: {len(after)} of {len(sim.messages)}.",
            "",
            "| order | process | served | ciphertexts tried | opened |",
            "|---|---|---|---|---|",
            *[
                f"| {o['name']} | {o['process']} | {_clock(o['served'])} | {o['ciphertexts_tried']} | {o['opened']} |"
                for o in orders
            ],
            "",
            "Ciphertexts from before the switch stay end-to-end encrypted: the global key does not open them.",
            "",
        ]
        return ExceptionalReport("global-key", data, "\n".join(lines))

    # --- ghost device -------------------------------------------------------------------------

    def _add_ghost(self, target: str) -> None:
        from sims.runner import SimDevice

        sim = self.sim
        now = sim.sched.now
        if not sim.store.account_exists(target):  # not registered yet: the provider waits for it
            sim.sched.after(60.0, self._add_ghost, target)
            return
        known = [d.index for d in sim.scenario.person(target).devices] + sim.store.device_ids(target)
        gid = max(known) + 1
        rng = _seeded(sim.scenario.seed, "ghost", target)
        primary = sim.by_address[(target, 1)].agent
        agent = A.DeviceAgent(
            Device(target, gid, rng=rng.randbytes, pq=True, deterministic=True),
            registration_id=rng.randrange(1, 16380),
            delivery_token=primary.delivery_token,
            rng=rng.randbytes,
            trust_root=sim.relay.trust_root_public,
            clock=sim.relay.clock,
            tokens=dict(primary.tokens),
            content_key=self.global_key,
        )
        agent.device.escrow = self.escrow_keys.public_key if self.escrow_since is not None else None
        # The provider writes the device straight into its store: no authentication by any of
        # the target's devices, no registration record in the metadata, nothing the target sees.
        agent.register()
        (frame,) = agent.take_outbox()
        assert isinstance(frame, wire.Register)
        with sim.store.transaction():
            sim.store.put_device(
                DeviceRecord(
                    account=target,
                    device=gid,
                    registration_id=frame.registration_id,
                    identity_key=frame.identity_key,
                    signed_prekey=frame.signed_prekey,
                    last_resort_kem_prekey=frame.last_resort_kem_prekey,
                    registered_at=sim.relay.clock(),
                )
            )
            sim.store.replace_prekeys(target, gid, frame.one_time_prekeys)
            sim.store.replace_kem_prekeys(target, gid, frame.kem_prekeys)
        agent.handle(wire.Registered(id=frame.id, account=target, device=gid))
        spec_ = DeviceSpec(target, gid, sim.relay_region, AGENCY_ADDRESS)
        d = SimDevice(spec_, agent, port=39000 + len(self.ghosts))
        d.registered = True
        ghost = _Ghost(d, target, now)
        self.ghosts[d.name] = ghost
        sim.emit(
            {
                "t": now,
                "kind": "exceptional_access",
                "demand": "ghost_device",
                "target": target,
                "ghost": d.name,
                "registered_by": "the provider, directly in its store (no authentication by the account)",
                "operated_from": AGENCY_ADDRESS,
            }
        )
        sim.start_device(d)

    def _ghost_report(self, ghost: _Ghost) -> ExceptionalReport:
        sim = self.sim
        target, added = ghost.target, ghost.added_at
        rows: list[dict[str, Any]] = []
        for mid in sorted(sim.messages):
            m = sim.messages[mid]
            if m.planned.recipient != target or m.accepted_at is None:
                continue
            after = m.accepted_at > added
            read = ghost.read.get(mid)
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
        noticed = [
            c for c in self.list_changes if c["account"] == target and ghost.device.spec.index in c["added"]
        ]
        senders = sorted({m.planned.sender for m in sim.messages.values() if m.planned.recipient == target})
        noticed_by = sorted({c["device"] for c in noticed})
        data = {
            "scenario": sim.scenario.name,
            "target": target,
            "ghost": ghost.device.name,
            "added_at": added,
            "operated_from": AGENCY_ADDRESS,
            "read": sorted(ghost.read),
            "expected_after_added": sorted(r["message"] for r in rows if r["after_ghost_added"]),
            "matches_ground_truth": sorted(ghost.read)
            == sorted(r["message"] for r in rows if r["after_ghost_added"])
            and all(r["text_matches"] for r in rows if r["read_by_ghost"]),
            "undecryptable": ghost.undecryptable,
            "device_list_changes_seen": noticed,
            "noticed_by": noticed_by,
            "senders_to_target": senders,
            "rows": rows,
        }
        return ExceptionalReport("ghost-device", data, _ghost_markdown(data, sim.scenario.name))

    # --- device seizure -----------------------------------------------------------------------

    def _seize(self, name: str) -> None:
        d = self.sim.devices[name]
        state = d.agent.device.to_dict()
        self.seizures.append(_Seizure(name, self.sim.sched.now, state))
        self.sim.emit(
            {
                "t": self.sim.sched.now,
                "kind": "phone_seized",
                "device": name,
                "copied": {
                    "sessions": len(state["sessions"]) + sum(len(xs) for _a, _n, xs in state["inactive"]),
                    "skipped_message_keys": sum(
                        len(x["ratchet"]["mkskipped"]) for _a, _n, x in state["sessions"]
                    ),
                    "one_time_prekeys": len(state["one_time"]),
                    "kem_prekeys": len(state["kem"]),
                },
                "what_it_means": "the phone's keys as they stand now; the phone is handed back and keeps running",
            }
        )

    def _seizure_report(self, seizure: _Seizure, name: str) -> ExceptionalReport:
        sim = self.sim
        assert self.captured is not None
        data = analyse_seizure(
            seizure.state,
            seized_at=seizure.at,
            device=seizure.device,
            captured=self.captured,
            delivered={mid: m.delivered.get(seizure.device) for mid, m in sim.messages.items()},
            texts={mid: m.planned.text for mid, m in sim.messages.items()},
            trust_root=sim.relay.trust_root_public,
            epoch=sim.relay.clock() - sim.sched.now,
            rng=_seeded(sim.scenario.seed, "seized-copy", seizure.device).randbytes,
        )
        data["scenario"] = sim.scenario.name
        return ExceptionalReport(name, data, _seizure_markdown(data, sim.scenario.name))

    # --- the end ------------------------------------------------------------------------------

    def finish(self) -> list[ExceptionalReport]:
        """Every report, while the store is still open; each also summarised in the transcript."""
        reports: list[ExceptionalReport] = []
        if self.escrow_since is not None or self.escrow_stolen_at is not None:
            reports.append(self._escrow_report())
        if self.global_since is not None:
            reports.append(self._global_key_report())
        for ghost in self.ghosts.values():
            reports.append(self._ghost_report(ghost))
        for i, s in enumerate(self.seizures):
            reports.append(self._seizure_report(s, "device-seizure" if i == 0 else f"device-seizure-{i + 1}"))
        taken: set[str] = set()
        for r in reports:  # two ghosts (or two reports of one kind) get distinct file names
            base, n = r.name, 1
            while r.name in taken:
                n += 1
                r.name = f"{base}-{n}"
            taken.add(r.name)
            summary = {k: v for k, v in r.data.items() if k != "rows"}
            self.sim.emit({"t": self.sim.sched.now, "kind": "exceptional_report", "name": r.name, **summary})
        return reports


# --- the seized phone, against what was captured ---------------------------------------------------


def _header(message: bytes) -> tuple[bytes, int, int] | None:
    if len(message) < _HEADER.size:
        return None
    dh, pn, n = _HEADER.unpack_from(message)
    return dh, pn, n


class _SendingChain:
    """A seized sending chain, run forward: reads the phone's own messages sent on it later."""

    def __init__(self, ck: bytes, n: int, ad: bytes, info: bytes) -> None:
        self.ck, self.n, self.ad, self.info = ck, n, ad, info

    def open(self, message: bytes, n: int) -> bytes | None:
        if n < self.n:
            return None
        ck = self.ck
        for _ in range(n - self.n):
            ck, _mk = spec.kdf_ck(ck)
        ck, mk = spec.kdf_ck(ck)
        header = message[: _HEADER.size]
        try:
            plaintext = spec.decrypt(mk, message[_HEADER.size :], self.ad + header, self.info)
        except DecryptionError:
            return None
        self.ck, self.n = ck, n + 1
        return plaintext


def analyse_seizure(
    state: dict[str, Any],
    *,
    seized_at: float,
    device: str,
    captured: list[Captured],
    delivered: dict[int, float | None],
    texts: dict[int, str],
    trust_root: bytes,
    epoch: float,
    rng: Callable[[int], bytes],
) -> dict[str, Any]:
    """Run a copy of the seized state over every captured envelope to or from ``device``, in order.

    Messages to the phone go through a ``Device`` rebuilt from the copy (``Device.from_dict``),
    exactly as the phone would decrypt them. Messages from the phone are tried on the sending
    chains the copy holds, run forward. Every "opened" is a real decryption; every reason is read
    off the copy's state (or, for keys deleted before the seizure, when the phone decrypted it).
    """
    copy = Device.from_dict(state, rng=rng)
    me = PeerAddress(state["account"], state["device"])
    he = state["config"][4]
    # What the seizure took, read from a second, untouched copy.
    seized = Device.from_dict(state, rng=rng)
    held = [*seized.sessions.items(), *((p, s) for p, xs in seized.inactive.items() for s in xs)]
    seized_dhs = {s.ratchet.dhs.private for _p, s in held if s.ratchet.dhs is not None}
    seized_dhr = {p: s.ratchet.dhr for p, s in seized.sessions.items()}
    chains: dict[bytes, _SendingChain] = {}
    for _p, s in held:
        r = s.ratchet
        if r.cks is not None and r.dhs is not None:
            chains[r.dhs.public] = _SendingChain(r.cks, r.ns, r.ad, r.config.aead_info)
    seen: set[tuple[int | None, str, int]] = set()
    rows: list[dict[str, Any]] = []
    for c in captured:
        incoming = c.recipient == me
        if not incoming and c.sender != f"{me.account}/{me.device}":
            continue
        key = (c.message, c.sender, c.recipient.device)
        if c.message is None or key in seen:
            continue  # a duplicated send: the first copy is the one that counts
        seen.add(key)
        before = c.time < seized_at
        t_dec = delivered.get(c.message) if incoming else None
        when = "before the seizure" if before else "after the seizure"
        if before and incoming and (t_dec is None or t_dec >= seized_at):
            when = "before the seizure, still in flight"
        row: dict[str, Any] = {
            "message": c.message,
            "direction": "to the phone" if incoming else "from the phone",
            "peer": c.sender if incoming else f"{c.recipient.account}/{c.recipient.device}",
            "accepted": round(c.time, 3),
            "when": when,
            "sealed": c.sealed,
        }
        if he:
            row.update(opened=False, why="header encryption: not analysed")
        elif incoming:
            row.update(
                _try_incoming(
                    copy, c, seized_at, delivered.get(c.message), seized_dhs, seized_dhr, trust_root, epoch
                )
            )
        else:
            row.update(_try_outgoing(copy, c, before, chains, trust_root, epoch))
        text = row.pop("_text", None)
        row["text_matches"] = text is not None and text == texts.get(c.message)
        row["opened_text"] = text
        if incoming:
            row["decrypted_on_phone"] = None if t_dec is None else round(t_dec, 3)
        rows.append(row)
    opened = [r["message"] for r in rows if r["opened"]]
    decrypted_before = [
        r["message"]
        for r in rows
        if r.get("decrypted_on_phone") is not None and r["decrypted_on_phone"] < seized_at
    ]
    return {
        "device": device,
        "seized_at": seized_at,
        "copied": {
            "sessions": len(state["sessions"]),
            "inactive_sessions": sum(len(xs) for _a, _n, xs in state["inactive"]),
            "one_time_prekeys": len(state["one_time"]),
            "kem_prekeys": len(state["kem"]),
        },
        "capture": "every envelope to or from the phone the relay accepted, from the start of the run",
        "messages": len(rows),
        "opened": opened,
        "decrypted_before_seizure": decrypted_before,
        "opened_of_decrypted_before_seizure": [m for m in decrypted_before if m in opened],
        "in_flight_at_seizure": [
            r["message"] for r in rows if r["when"] == "before the seizure, still in flight"
        ],
        "rows": rows,
    }


def _try_incoming(
    copy: Device,
    c: Captured,
    seized_at: float,
    decrypted_at: float | None,
    seized_dhs: set[bytes],
    seized_dhr: dict[PeerAddress, bytes | None],
    trust_root: bytes,
    epoch: float,
) -> dict[str, Any]:
    body = _escrow.strip(c.body)
    if c.sealed:
        try:
            certificate, inner = sealed.open_envelope(
                copy.secrets.identity, body, trust_root, int(c.time + epoch)
            )
        except DecryptionError:
            return {"opened": False, "why": "the sealed layer did not open with the seized identity key"}
        peer = PeerAddress(certificate.sender, certificate.device)
    else:
        sender, _, number = c.sender.partition("/")
        peer, inner = PeerAddress(sender, int(number)), body
    try:
        initial, message = parse_ciphertext(inner)
    except DecryptionError:
        return {"opened": False, "why": "not a message the phone could parse"}
    header = _header(message)
    assert header is not None
    how = _how(copy, peer, initial, header, seized_dhs, seized_dhr)
    try:
        text: str | None = copy.decrypt(peer, inner).decode("utf-8", "replace")
    except DecryptionError:
        text = None
    if text is not None:
        why = {
            "skipped": "its key was in the phone's store of skipped message keys (it had not arrived yet)",
            "same_chain": "same receiving chain as seized: the copied chain key runs forward to it",
            "derived_chain": "on the peer's next chain, which the copy derived from the seized ratchet key",
            "new_chain_seized_key": "the peer's next DH ratchet step answered the phone's ratchet key, whose "
            "private half was seized: the copy derives the new chain too",
            "new_session": "a new session, from prekeys the seizure copied",
        }.get(how, "the seized state opened it")
        return {"opened": True, "why": why, "_text": text}
    if decrypted_at is not None and decrypted_at < seized_at:
        why = (
            f"key deleted after decryption: the phone decrypted it at {_clock(decrypted_at)}, before the "
            "seizure, and forgot the key (forward secrecy)"
        )
    elif how == "used":
        why = "key deleted after decryption: that chain had already moved past it"
    elif how == "new_chain_fresh_key":
        why = (
            "after the next DH ratchet step: the peer's chain answers a ratchet key the phone generated after "
            "the seizure (post-compromise security)"
        )
    else:
        why = "no key for it in the seized state"
    return {"opened": False, "why": why}


def _how(
    copy: Device,
    peer: PeerAddress,
    initial: Any,
    header: tuple[bytes, int, int],
    seized_dhs: set[bytes],
    seized_dhr: dict[PeerAddress, bytes | None],
) -> str:
    """What the copy's state says about a message before it tries it."""
    dh, _pn, n = header
    sessions = [s for s in (copy.sessions.get(peer), *copy.inactive.get(peer, [])) if s is not None]
    if initial is not None and not any(s.initial == initial for s in sessions):
        return "new_session"
    for s in sessions:
        if (dh, n) in s.ratchet.mkskipped:
            return "skipped"
    for s in sessions:
        r = s.ratchet
        if r.dhr == dh and r.ckr is not None:
            if n < r.nr:
                return "used"
            return "same_chain" if seized_dhr.get(peer) == dh else "derived_chain"
    if any(s.ratchet.dhs is not None and s.ratchet.dhs.private in seized_dhs for s in sessions):
        return "new_chain_seized_key"
    return "new_chain_fresh_key"


def _try_outgoing(
    copy: Device,
    c: Captured,
    before: bool,
    chains: dict[bytes, _SendingChain],
    trust_root: bytes,
    epoch: float,
) -> dict[str, Any]:
    body = _escrow.strip(c.body)
    if c.sealed:
        try:
            sealed.open_envelope(copy.secrets.identity, body, trust_root, int(c.time + epoch))
        except DecryptionError:
            return {
                "opened": False,
                "why": "sealed to the recipient's identity key, which the seizure did not copy",
            }
    try:
        _initial, message = parse_ciphertext(body)
    except DecryptionError:
        return {"opened": False, "why": "not a message the phone could parse"}
    header = _header(message)
    assert header is not None
    dh, _pn, n = header
    chain = chains.get(dh)
    if chain is not None:
        text = chain.open(message, n)
        if text is not None:
            return {
                "opened": True,
                "why": "on the phone's own sending chain the seizure copied: the chain key runs forward to it",
                "_text": text.decode("utf-8", "replace"),
            }
        return {
            "opened": False,
            "why": "sent before the seizure: the sending chain had already moved past it",
        }
    if before:
        return {
            "opened": False,
            "why": "sent before the seizure on an earlier sending chain, whose keys are gone",
        }
    return {
        "opened": False,
        "why": "after the next DH ratchet step: the phone's new sending chain comes from a private key it "
        "generated after the seizure (post-compromise security)",
    }


# --- markdown ----------------------------------------------------------------------------------


def _yes(b: bool) -> str:
    return "**opened**" if b else "closed"


def _escrow_markdown(data: dict[str, Any], scenario: str) -> str:
    since, stolen = data["escrow_began"], data["escrow_key_stolen"]
    rows = data["rows"]
    escrowed = [r for r in rows if r["escrowed"]]
    lines = [
        f"# Key escrow — {scenario}",
        "",
        "From the moment a key-escrow mandate is in force, every phone still runs the Double Ratchet, but "
        "each message also carries its message key (with the header and associated data needed to use it) "
        "encrypted to an escrow agent's public key. The relay sees the same opaque bytes, only larger. "
        "Whoever holds the escrow private key can open every escrowed message that anyone captured.",
        "",
        f"- Escrow began: **{_clock(since) if since is not None else 'never'}**.",
        f"- The escrow private key was stolen: **{_clock(stolen) if stolen is not None else 'never'}**.",
        f"- Messages accepted by the relay: {len(rows)}; sent under escrow: {len(escrowed)}; "
        f"captured: {sum(1 for r in rows if r['captured'])}.",
        f"- Opened with the stolen key: **{len(data['opened'])}** "
        f"({len(data['opened_when_stolen'])} of them already captured at the moment of the theft).",
        f"- Matches ground truth (opened = escrowed and captured, word for word): "
        f"**{'yes' if data['matches_ground_truth'] else 'NO'}**.",
    ]
    if data["mean_escrow_frame_bytes"] is not None:
        lines.append(
            f"- What the relay sees: the same opaque envelopes, each {data['mean_escrow_frame_bytes']:.0f} bytes "
            "larger on average under escrow (the escrow frame). Nothing else in its view changes."
        )
    if data["sealed_sender"]:
        lines.append(
            "- Sealed sender was on, so the relay did not see who sent what — and it made no difference: the "
            "escrow frame sits outside the sealed layer, and its record carries the ratchet message too."
        )
    lines += [
        "",
        "No message sent before escrow began opens: those keys never left the phones. Every message sent "
        "after it, by every user, opens — including those recorded long before the key leaked.",
        "",
        "| message | from → to | sent | escrowed | captured | with the stolen key | what the thief reads | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        text = f"“{r['opened_text']}”" if r["opened_text"] is not None else "—"
        lines.append(
            f"| {r['message']} | {r['from']} → {r['to']} | {_clock(r['sent'])} "
            f"| {'yes' if r['escrowed'] else 'no'} | {'yes' if r['captured'] else 'no'} | {_yes(r['opened'])} "
            f"| {text} | {r['why']} |"
        )
    lines.append("")
    return "\n".join(lines)


def _ghost_markdown(data: dict[str, Any], scenario: str) -> str:
    rows = data["rows"]
    noticed = data["device_list_changes_seen"]
    lines = [
        f"# Ghost device — {scenario}",
        "",
        f"At **{_clock(data['added_at'])}** the provider, compelled, added device **{data['ghost']}** to "
        f"**{data['target']}**'s account, writing it straight into its own store: none of "
        f"{data['target']}'s devices approved it, and no registration was logged. The agency holds its keys "
        f"and runs it from {data['operated_from']}.",
        "",
        f"The next time each contact sent to {data['target']}, the relay refused the send as naming stale "
        "devices; the contact's phone fetched the bundles again, started a session with the new device, and "
        "encrypted every later message to it as well. Nothing in the Double Ratchet is broken: the senders "
        "encrypt to whom the directory tells them to.",
        "",
        f"- Messages to {data['target']}: {len(rows)}; read by the ghost: **{len(data['read'])}**.",
        f"- Matches ground truth (read = sent after the ghost was added, word for word): "
        f"**{'yes' if data['matches_ground_truth'] else 'NO'}**.",
        "",
        "| message | from | at the relay | after the ghost was added | ghost read it | why |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['message']} | {r['from']} | {_clock(r['accepted'])} | {'yes' if r['after_ghost_added'] else 'no'} "
            f"| {'**yes**' if r['read_by_ghost'] else 'no'} | {r['why']} |"
        )
    lines += ["", "## What the target's contacts could see", ""]
    if noticed:
        lines.append(
            f"Each sender's phone saw {data['target']}'s device list grow — the notice the ghost proposal needs "
            "suppressed, and the one a user who checks safety numbers or a key-transparency log would catch:"
        )
        lines.append("")
        for c in noticed:
            lines.append(
                f"- {_clock(c['t'])}: **{c['device']}** saw {c['account']}'s device list grow by device {', '.join(map(str, c['added']))}"
            )
    else:
        lines.append("No contact's phone saw the device list change (no one sent to the target afterwards).")
    missing = sorted(set(data["senders_to_target"]) - {n.split("/")[0] for n in data["noticed_by"]})
    if missing:
        lines += [
            "",
            f"Contacts who never sent to {data['target']} afterwards noticed nothing: {', '.join(missing)}.",
        ]
    lines += [
        "",
        f"{data['target']}'s own phones were not told: this simulation has no linked-device list to show "
        f"them. The ghost logs in to the relay like any phone, from {data['operated_from']}; whether that "
        "is written down depends on what the relay keeps.",
        "",
    ]
    return "\n".join(lines)


def _seizure_markdown(data: dict[str, Any], scenario: str) -> str:
    rows = data["rows"]
    c = data["copied"]
    lines = [
        f"# Device seizure — {scenario}",
        "",
        f"At **{_clock(data['seized_at'])}** the phone **{data['device']}** was seized and its protocol state "
        f"copied: {c['sessions']} session(s) (+{c['inactive_sessions']} inactive), {c['one_time_prekeys']} "
        f"one-time prekey(s), {c['kem_prekeys']} KEM prekey(s), and the identity key. The phone was then "
        "handed back and kept running.",
        "",
        "The agency is also given every envelope to or from that phone that the relay ever accepted (as a "
        "wiretap on the account from the first minute would collect). A copy of the seized state is run over "
        "them in order, decrypting as the phone would. Every *opened* below is a real decryption.",
        "",
        f"- Messages to or from the phone: {len(rows)}; opened with the seized state: **{len(data['opened'])}**.",
        f"- Of the {len(data['decrypted_before_seizure'])} messages the phone had already decrypted before the "
        f"seizure, opened: **{len(data['opened_of_decrypted_before_seizure'])}** (forward secrecy: each message "
        "key is deleted once used).",
        "",
        "| message | direction | peer | at the relay | before/after seizure | decrypted on the phone | seized state | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dec = r.get("decrypted_on_phone")
        dec_s = "—" if r["direction"] == "from the phone" else ("not yet" if dec is None else _clock(dec))
        lines.append(
            f"| {r['message']} | {r['direction']} | {r['peer']} | {_clock(r['accepted'])} | {r['when']} | {dec_s} "
            f"| {_yes(r['opened'])} | {r['why']} |"
        )
    lines += [
        "",
        "## Reading the table",
        "",
        "- **Forward secrecy**: a message the phone had already decrypted does not open again — its key was "
        "deleted when it was used, and the chain key only runs forward.",
        "- **In flight, and after the seizure**: the copy holds the current chain keys, so messages still on the "
        "way and messages sent later on the same chains open.",
        "- **The next DH ratchet step**: the copy also holds the phone's current ratchet private key, so the "
        "peer's next chain (which answers that key) still opens. Once the phone makes a fresh ratchet key "
        "after the seizure, its own sending chain and the peer's chain that answers it are out of reach: "
        "the session has healed (post-compromise security).",
        "- This counts only what keys open. A seized phone that keeps its message history hands that over as "
        "plain text; only disappearing messages keep deleted history closed.",
        "",
    ]
    return "\n".join(lines)


def write_exceptional(reports: list[ExceptionalReport], folder: Path) -> list[dict[str, Any]]:
    """``NAME.json`` and ``NAME.md`` per report; returns an index for the run's summary."""
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for r in reports:
        (folder / f"{r.name}.json").write_text(
            json.dumps(r.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (folder / f"{r.name}.md").write_text(r.markdown, encoding="utf-8")
        index.append({"name": r.name, "json": f"exceptional/{r.name}.json"})
    return index
