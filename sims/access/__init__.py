"""Exceptional access, run for real: key escrow, a global key, a ghost device, a seized phone.

Each timeline event of kind ``exceptional_access`` (demand ``key_escrow``, ``global_key``,
``ghost_device``), ``escrow_key_stolen`` or ``seize_phone`` is answered by one small class, an
``Intervention`` (``sims.access.base``), which the simulation calls through one interface and
which changes the world only through its public methods (``World``). Each result is read off
real ciphertext with real keys — nothing here is a table of answers:

- ``escrow.KeyEscrow``: every message key also sealed to an escrow agent; the agent's key stolen.
- ``global_key.GlobalKey``: every device switched to one key the provider holds (consumer BBM).
- ``ghost.GhostDevice``: the provider, compelled, adds a device the agency holds to an account.
- ``ghost_participant.GhostParticipant``: the provider, compelled, adds a silent member to a group
  (GCHQ's original proposal), where it holds the member list.
- ``seizure.DeviceSeizure``: a phone's whole protocol state copied, and run against everything.
- ``identity_swap.RelaySwapsIdentity``: the relay delivers an attacker's first message under a
  known address (``relay_swaps_identity``); who noticed the changed identity key, and when.

``INTERVENTIONS`` is the table from (event kind, demand) to the class that answers it; adding a
demand is a module, a row, and its tests. ``Interventions`` is what the simulation holds: it makes
the instances for the scenario's events before the run, passes the hooks on, and gathers the
reports at the end (``reports.write_exceptional`` writes them to ``DIR/exceptional/``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from relaysim.clients import agent as A
from relaysim.relay import wire
from relaysim.sims.access.base import AGENCY_ADDRESS, Captured, DeviceView, Intervention, MessageView, World
from relaysim.sims.access.escrow import KeyEscrow
from relaysim.sims.access.ghost import GhostDevice
from relaysim.sims.access.ghost_participant import GhostParticipant
from relaysim.sims.access.global_key import GlobalKey
from relaysim.sims.access.identity_swap import RelaySwapsIdentity
from relaysim.sims.access.reports import ExceptionalReport, write_exceptional
from relaysim.sims.access.seizure import DeviceSeizure, analyse_seizure
from relaysim.sims.scenario import ExceptionalAccess, Scenario, TimelineEvent

__all__ = [
    "AGENCY_ADDRESS",
    "INTERVENTIONS",
    "KINDS",
    "TYPES",
    "Captured",
    "DeviceSeizure",
    "DeviceView",
    "ExceptionalReport",
    "GhostDevice",
    "GhostParticipant",
    "GlobalKey",
    "Intervention",
    "Interventions",
    "KeyEscrow",
    "MessageView",
    "RelaySwapsIdentity",
    "World",
    "analyse_seizure",
    "intervention_for",
    "write_exceptional",
]

# (event type, demand or None) → the class that answers it, read off each class's ``answers``.
INTERVENTIONS: dict[tuple[type[TimelineEvent], str | None], type[Intervention]] = {
    key: cls
    for cls in (KeyEscrow, GlobalKey, GhostDevice, GhostParticipant, DeviceSeizure, RelaySwapsIdentity)
    for key in cls.answers
}
TYPES = frozenset(t for t, _demand in INTERVENTIONS)
KINDS = frozenset(t.kind for t in TYPES)


def intervention_for(event: TimelineEvent) -> type[Intervention] | None:
    """The class that answers a timeline event, or None when no intervention does."""
    if type(event) not in TYPES:
        return None
    demand = event.demand if isinstance(event, ExceptionalAccess) else None
    cls = INTERVENTIONS.get((type(event), demand))
    if cls is None:
        raise ValueError(f"unknown exceptional-access demand {demand!r} for a {event.kind!r} event")
    return cls


class Interventions:
    """Every intervention in one simulation, called by it on its events (one way: they never call back in
    except through ``World``)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._by_event: dict[int, Intervention] = {}
        self._all: list[Intervention] = []
        shared: dict[type[Intervention], Intervention] = {}
        for i, ev in enumerate(world.scenario.events):
            cls = intervention_for(ev)
            if cls is None:
                continue
            iv = shared.get(cls) if cls.one_per_run else None
            if iv is None:
                iv = cls.for_event(world, ev)
                self._all.append(iv)
                if cls.one_per_run:
                    shared[cls] = iv
            self._by_event[i] = iv

    def __bool__(self) -> bool:
        return bool(self._all)

    def on_event(self, index: int, event: TimelineEvent) -> None:
        """Timeline event number ``index`` of the scenario, at its time."""
        iv = self._by_event.get(index)
        if iv is None:
            raise ValueError(f"timeline event {index} ({event.kind!r}) is not an exceptional-access event")
        iv.on_event(event)

    def on_accepted(
        self, sender: DeviceView, frame: wire.Send | wire.SealedSend, envelope_ids: tuple[bytes, ...]
    ) -> None:
        for iv in self._all:
            iv.on_accepted(sender, frame, envelope_ids)

    def on_agent_event(self, device: DeviceView, event: A.AgentEvent) -> bool:
        """True when an intervention took ``event`` as its own (a ghost device's reads)."""
        taken = False
        for iv in self._all:
            taken = iv.on_agent_event(device, event) or taken
        return taken

    def agency_devices(self) -> set[str]:
        """Every device an intervention runs for the agency (``Intervention.agency_devices``)."""
        return {name for iv in self._all for name in iv.agency_devices()}

    def finish(self) -> list[ExceptionalReport]:
        """Every report, while the store is still open; each also summarised in the transcript."""
        ordered = sorted(self._all, key=lambda iv: (iv.order, math.inf if iv.started is None else iv.started))
        reports: list[ExceptionalReport] = []
        taken: set[str] = set()
        for r in [r for iv in ordered for r in iv.finish()]:
            name, n = r.name, 1
            while name in taken:  # two ghosts (or two reports of one kind) get distinct file names
                n += 1
                name = f"{r.name}-{n}"
            taken.add(name)
            reports.append(ExceptionalReport(name, r.data, _dated(r.markdown, self.world.scenario)))
            summary = {k: v for k, v in r.data.items() if k != "rows"}
            self.world.emit(
                {"t": self.world.sched.now, "kind": "exceptional_report", "name": name, **summary}
            )
        return reports


def _dated(markdown: str, scenario: Scenario) -> str:
    """A dated run's report says, under its title, which calendar its times count from: they are
    simulated time since the start, while the disclosures it quotes give dates (sims.report)."""
    if scenario.start is None:
        return markdown
    start = datetime.fromtimestamp(scenario.epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    title, _, rest = markdown.partition("\n")
    return f"{title}\n\n_Times in this report count from the start of the run, {start}._\n{rest}"
