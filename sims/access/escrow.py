"""Key escrow, and the theft of the escrow key.

``exceptional_access`` / ``key_escrow``: from service on, every device wraps every message in an
escrow frame carrying its message key sealed to the escrow agent's public key
(``clients.escrow``; the key pair is generated here from the scenario's seed). The relay carries
larger opaque bytes and nothing else changes. ``escrow_key_stolen``: whoever holds the escrow
private key now opens every escrowed envelope that was ever captured.

What is captured is what the relay's store holds: the envelope bodies of every content tap
(wiretap, blanket demand), archived envelopes, and envelopes still queued.
"""

from __future__ import annotations

import contextlib
from typing import Any

from relaysim.clients import escrow as _escrow
from relaysim.clients.agent import unpad
from relaysim.clients.errors import DecryptionError
from relaysim.clients.escrow import EscrowKeyPair
from relaysim.sims.access.base import Intervention, World
from relaysim.sims.access.reports import ExceptionalReport, escrow_markdown
from relaysim.sims.scenario import EscrowKeyStolen, ExceptionalAccess, TimelineEvent
from relaysim.sims.world.util import seeded

__all__ = ["KeyEscrow"]


class KeyEscrow(Intervention):
    """A key-escrow mandate (``exceptional_access`` / ``key_escrow``) and the theft of its key."""

    answers = ((ExceptionalAccess, "key_escrow"), (EscrowKeyStolen, None))
    one_per_run = True
    order = 0

    def __init__(self, world: World) -> None:
        super().__init__(world)
        rng = seeded(world.scenario.seed, "exceptional", "escrow-key")
        self.keys = EscrowKeyPair.generate(rng.randbytes)
        self.since: float | None = None
        self.stolen_at: float | None = None
        self.stolen_preview: list[int] = []

    @property
    def started(self) -> float | None:
        return self.since if self.since is not None else self.stolen_at

    def on_event(self, event: TimelineEvent) -> None:
        if isinstance(event, EscrowKeyStolen):
            self._steal()
        else:
            self._begin()

    def _begin(self) -> None:
        if self.since is not None:
            return
        world = self.world
        self.since = world.sched.now
        public = self.keys.public_key
        devices = world.mandate_escrow(public)
        world.emit(
            {
                "t": self.since,
                "kind": "exceptional_access",
                "demand": "key_escrow",
                "devices": devices,
                "escrow_public_key": public.public.hex(),
                "what_changes": "every message key is also sealed to the escrow key, inside the envelope body",
            }
        )

    def _captured_bodies(self) -> list[tuple[bytes, bytes, str]]:
        """Every envelope body the relay's store holds: (envelope id, body, where), each id once."""
        world = self.world
        store = world.store
        taps = [*world.open_orders, *(d.process.name for d in world.disclosures if d.process.forward)]
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

    def _open(self) -> dict[int, tuple[str, str]]:
        """Message id → (plaintext, where its envelope was captured), for every capture that opens."""
        opened: dict[int, tuple[str, str]] = {}
        for eid, body, where in self._captured_bodies():
            mid = self.world.envelope_message.get(eid)
            if mid is None or mid in opened:
                continue
            try:
                text = self.keys.read(body)
            except DecryptionError:
                continue
            # the phones' padding (clients.agent.pad); a text not padded so is shown as it is
            with contextlib.suppress(DecryptionError):
                text = unpad(text, self.world.padding)
            opened[mid] = (text.decode("utf-8", "replace"), where)
        return opened

    def _steal(self) -> None:
        now = self.world.sched.now
        self.stolen_at = now
        opened = self._open()
        self.stolen_preview = sorted(opened)
        self.world.emit(
            {
                "t": now,
                "kind": "escrow_key_stolen",
                "captured_envelopes": len(self._captured_bodies()),
                "opened_messages": sorted(opened),
                "what_it_means": "whoever holds the escrow private key opens every escrowed envelope captured, "
                "past and future, of every user",
            }
        )

    def finish(self) -> list[ExceptionalReport]:
        if self.since is None and self.stolen_at is None:
            return []
        world = self.world
        since, stolen = self.since, self.stolen_at
        captured_ids: dict[int, str] = {}
        sizes: dict[int, list[int]] = {}
        for eid, body, where in self._captured_bodies():
            mid = world.envelope_message.get(eid)
            if mid is not None:
                captured_ids.setdefault(mid, where)
                sizes.setdefault(mid, []).append(len(body) - len(_escrow.strip(body)))
        opened = self._open() if stolen is not None else {}
        rows: list[dict[str, Any]] = []
        for mid in sorted(world.messages):
            m = world.messages[mid]
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
            "scenario": world.scenario.name,
            "escrow_began": since,
            "escrow_key_stolen": stolen,
            "escrow_public_key": self.keys.public_key.public.hex(),
            "sealed_sender": world.sealed,
            "messages": len(rows),
            "opened": sorted(got_ids),
            "opened_when_stolen": self.stolen_preview,
            "expected_escrowed_and_captured": sorted(expected),
            "mean_escrow_frame_bytes": round(sum(frames) / len(frames), 1) if frames else None,
            "matches_ground_truth": got_ids == expected
            and all(r["text_matches"] for r in rows if r["opened"]),
            "rows": rows,
        }
        return [ExceptionalReport("key-escrow", data, escrow_markdown(data, world.scenario.name))]
