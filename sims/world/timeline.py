"""One world for both drivers: the scenario's timeline, the provider and its legal process, interpreted once.

``Timeline`` reads the scenario — its offline windows, its typed timeline events
(``sims.scenario.Event``), its planned messages — and, at each one's time, calls a small
``Driver`` interface that both ``sims.world.simulation.Simulation`` (discrete events in virtual time) and
``sims.live`` (a real ``relaysim relay serve`` process and trio clients on loopback) implement.
Everything a legal_process event means is decided here: one order per named account, the
instrument's kind (a preservation freezes, a forward-looking order taps until it expires or is
withdrawn, a backup warrant goes to the backup's custodian, the rest look back), the windows on
the relay's clock, and the disclosures, answered by the driver's ``relay.compliance.ComplianceDesk``.
``provider``, ``sealed_sender`` and ``padding`` are the relay profile, the sealed-sender choice and the
phones' padding both drivers run.

What differs between the drivers is only how a step is carried out: the simulation calls its
in-process ``RelayCore``; the live driver asks the relay process through its operator socket
(``relay.server``'s ``--admin``) and answers orders from the relay's database, read while it runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from datetime import date
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from relaysim.relay.backup import disclose_backup
from relaysim.relay.compliance import ComplianceDesk, Disclosure, LegalProcess
from relaysim.relay.core import Tap
from relaysim.relay.legal import BACKUP_WARRANT
from relaysim.relay.profiles import Profile, profile_as_of
from relaysim.sims.scenario import (
    DeviceOffline,
    DeviceOnline,
    LegalProcessEvent,
    Scenario,
    TimelineEvent,
)
from relaysim.sims.world.traffic import PlannedMessage

__all__ = [
    "NONDISCLOSURE",
    "Driver",
    "MessageRecord",
    "Receipts",
    "Timeline",
    "padding",
    "policy_on",
    "provider",
    "sealed_sender",
]

NONDISCLOSURE = "18 U.S.C. 2705(b)"  # what a nondisclosure_order is issued under


def provider(scenario: Scenario, served: date | None = None) -> Profile:
    """The provider the relay runs: its profile as it was when the scenario is set ([scenario] start),
    or as it is today; on a counterfactual run, as if it had complied (never the record).

    ``served``: the day an order is served in a dated run: its policy as of then
    (relay.profiles.profile_as_of), what ``policy_on`` gives the compliance desk."""
    profile = profile_as_of(scenario.relay.profile, scenario.start, served=served)
    if scenario.counterfactual:
        from relaysim.sims.counterfactual import complied_profile

        profile = complied_profile(profile, scenario)
    return profile


def policy_on(scenario: Scenario) -> Callable[[date], Profile] | None:
    """For a dated run, the provider answering an order served on a day (``ComplianceDesk``'s
    ``policy_on``); None for an undated one, whose provider is as it is today."""
    return None if scenario.start is None else partial(provider, scenario)


def sealed_sender(scenario: Scenario, profile: Profile) -> bool:
    """Whether devices send sealed: the scenario's [relay] sealed_sender, else the profile's default."""
    return scenario.relay.sealed_sender if scenario.relay.sealed_sender is not None else profile.sealed_sender


def padding(scenario: Scenario, profile: Profile) -> str:
    """How the phones pad plaintexts: the scenario's [defences] padding, else the profile's (Signal's
    padding unless the profile turns it off)."""
    chosen = scenario.defences.padding
    return chosen if chosen != "profile" else ("signal" if profile.padding else "none")


PhoneT = TypeVar("PhoneT")


class Receipts(Generic[PhoneT]):
    """The receipts a reading phone sends, as both drivers make them: a delivery receipt right after
    it decrypts a message (Signal's clients send one for every message; ``[defences] receipts``
    delays, batches or drops them) and a read receipt when the person reads it (``[traffic]
    read_receipts``, after a log-normal delay). The draws come from ``rng`` in the same order in
    both drivers; ``at(t, action)`` runs ``action`` at time ``t`` on the driver's clock ``now``, and
    ``send(phone, to, stamps, kind)`` sends one receipt for the relay timestamps ``stamps``."""

    def __init__(
        self,
        scenario: Scenario,
        rng: random.Random,
        now: Callable[[], float],
        at: Callable[[float, Callable[[], None]], None],
        send: Callable[[PhoneT, str, tuple[int, ...], str], None],
    ) -> None:
        self.defences, self.traffic = scenario.defences, scenario.traffic
        self._rng, self._now, self._at, self._send = rng, now, at, send
        self._batches: dict[tuple[str, str, str], list[int]] = {}

    def after_delivery(self, phone: PhoneT, name: str, person: str, sender: str, stamp: int) -> None:
        """``phone`` (device ``name`` of ``person``) read a message from ``sender`` that the relay
        stamped ``stamp`` (ms): its receipts. None for one's own messages (a sync copy)."""
        if sender == person:
            return
        if self.defences.receipts != "off":
            self._receipt(phone, name, sender, stamp, "delivery", 0.0)
        if self.traffic.read_receipts:
            read = self._rng.lognormvariate(math.log(max(self.traffic.read_delay, 1e-3)), 1.0)
            self._receipt(phone, name, sender, stamp, "read", read)

    def _receipt(self, phone: PhoneT, name: str, to: str, stamp: int, kind: str, after: float) -> None:
        mode = self.defences.receipts
        if mode == "delayed":
            after += self._rng.uniform(0.0, self.defences.receipt_delay)
        if mode == "batched":
            key = (name, to, kind)
            batch = self._batches.setdefault(key, [])
            batch.append(stamp)
            if len(batch) == 1:
                period = self.defences.receipt_batch
                due = (math.floor((self._now() + after) / period) + 1) * period
                self._at(due, partial(self._flush, phone, key))
            return
        if after <= 0:
            self._send(phone, to, (stamp,), kind)
        else:
            self._at(self._now() + after, partial(self._send, phone, to, (stamp,), kind))

    def _flush(self, phone: PhoneT, key: tuple[str, str, str]) -> None:
        stamps = self._batches.pop(key, [])
        if stamps:
            self._send(phone, key[1], tuple(stamps), key[2])


class MessageRecord(Protocol):
    """What a driver knows about one planned message (sims.world.simulation.MessageState)."""

    @property
    def planned(self) -> PlannedMessage: ...
    @property
    def delivered(self) -> Mapping[str, float]: ...


class Driver(Protocol):
    """What a run does when the timeline says so. Times are simulated seconds from the start."""

    @property
    def scenario(self) -> Scenario: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def desk(self) -> ComplianceDesk: ...
    @property
    def messages(self) -> Mapping[int, MessageRecord]: ...

    def now(self) -> float: ...
    def relay_time(self, t: float) -> float:
        """What the relay's clock reads (or will read) at simulated time ``t``."""
        ...

    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``t`` (ties in the order they were scheduled)."""
        ...

    def emit(self, event: dict[str, Any], /) -> None: ...
    def go_offline(self, device: str, why: str) -> None: ...
    def come_online(self, device: str) -> None: ...
    def app_send(self, message: PlannedMessage) -> None: ...
    def preserve(self, account: str, since: float) -> None: ...
    def add_tap(self, tap: Tap) -> None: ...
    def remove_tap(self, tap_id: str) -> None: ...
    def intervene(self, index: int, event: TimelineEvent) -> None:
        """Timeline event number ``index``, answered by an intervention (sims.access)."""
        ...


class Timeline:
    """The scenario's timeline over one driver; keeps the orders in force and the disclosures."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.disclosures: list[Disclosure] = []
        self._open: dict[str, LegalProcess] = {}
        self._tapped: set[str] = set()

    @property
    def open_orders(self) -> Mapping[str, LegalProcess]:
        """The forward-looking orders still running, by name (a read-only view)."""
        return MappingProxyType(self._open)

    # --- scheduling ----------------------------------------------------------------------------

    def schedule_events(self) -> None:
        """Offline windows, then the timeline's events, each at its time."""
        d = self.driver
        for spec in d.scenario.devices():
            for start, end in spec.offline:
                d.at(start, partial(d.go_offline, spec.name, "offline window"))
                d.at(end, partial(d.come_online, spec.name))
        for i, ev in enumerate(d.scenario.events):
            d.at(ev.at, partial(self.event, i, ev))

    def schedule_messages(self, messages: list[PlannedMessage]) -> None:
        for m in messages:
            self.driver.at(m.at, partial(self.driver.app_send, m))

    def event(self, index: int, ev: TimelineEvent) -> None:
        d = self.driver
        if isinstance(ev, DeviceOffline):
            d.go_offline(ev.device, "timeline")
        elif isinstance(ev, DeviceOnline):
            d.come_online(ev.device)
        elif isinstance(ev, LegalProcessEvent):
            self.serve(ev)
        else:
            d.intervene(index, ev)

    def finish(self) -> None:
        """At the end of the run: the orders still running are answered now."""
        for name in list(self._open):
            self._expire(name)

    # --- legal process -------------------------------------------------------------------------

    def serve(self, ev: LegalProcessEvent) -> None:
        """One legal_process event: one order per account it names. An order the scenario serves on
        other profiles' operators only (``profiles``) is not served on this one: nothing happens."""
        if not ev.served_under(self.driver.scenario.relay.profile):
            return
        for target, name in zip(ev.targets or (ev.target,), ev.order_names(), strict=True):
            self._serve(ev, target, name)

    def _serve(self, ev: LegalProcessEvent, target: str | None, name: str) -> None:
        d = self.driver
        rel = d.relay_time
        withdrawn, answered = ev.withdrawn, ev.answered
        if ev.counterfactual and d.scenario.counterfactual:
            # had the provider complied, there was no refusal to withdraw over, nor a late answer
            withdrawn = answered = None
        order = LegalProcess(
            name=name,
            process=ev.process,
            target=target,
            # the event's time, not the clock's: a live run's clock reads late when its loop is
            # late (on a busy machine, 2 ms late is 10 simulated seconds at a time scale of 0.0002)
            served=rel(ev.at),
            start=None if ev.start is None else rel(ev.start),
            end=None if ev.end is None else rel(ev.end),
            withdrawn=None if withdrawn is None else rel(withdrawn),
            answered=None if answered is None else rel(answered),
            nondisclosure=NONDISCLOSURE if ev.nondisclosure_order else None,
        )
        d.emit(
            {
                "t": d.now(),
                "kind": "legal_process_served",
                "name": order.name,
                "process": order.process,
                "target": order.target,
                "profile": d.profile.name,
                "response": d.profile.response_to(order.instrument),
                **({"nondisclosure_order": order.nondisclosure} if order.nondisclosure else {}),
            }
        )
        if order.process == BACKUP_WARRANT:
            self._serve_backup(order)
        elif order.instrument.looks == "freeze":
            assert order.target is not None
            d.preserve(order.target, order.served)
            self._disclose(order)
        elif order.forward:
            tap = d.desk.begin(order)
            if tap is not None:
                d.add_tap(tap)
                self._tapped.add(order.name)
            self._open[order.name] = order
            if withdrawn is not None and (ev.end is None or withdrawn < ev.end):
                d.at(withdrawn, partial(self._withdraw, order.name))
            elif ev.end is not None and ev.end < d.scenario.duration:
                d.at(ev.end, partial(self._expire, order.name))
        else:
            self._disclose(order)

    def _withdraw(self, name: str) -> None:
        order = self._open.get(name)
        if order is not None:
            d = self.driver
            d.emit({"t": d.now(), "kind": "demand_withdrawn", "name": name, "process": order.process})
        self._expire(name)

    def _expire(self, name: str) -> None:
        order = self._open.pop(name, None)
        if order is None:
            return
        if name in self._tapped:
            self._tapped.discard(name)
            self.driver.remove_tap(name)
        self._disclose(order)

    def _serve_backup(self, order: LegalProcess) -> None:
        """A search warrant on the custodian of the target's backup: the history the phones held."""
        d = self.driver
        assert order.target is not None
        try:
            backup = d.scenario.person(order.target).backup or d.profile.backup
        except KeyError:  # a phone number that is nobody's account (sims.scenario's targets)
            self._filed(
                order,
                disclose_backup(
                    order, d.profile.name, d.profile.backup, [], account=False, day=d.desk.served_day(order)
                ),
            )
            return
        mine = f"{order.target}/"
        history = []
        for state in d.messages.values():
            m = state.planned
            sent = m.sender == order.target  # on the phone from the moment it was written
            got = [t for device, t in state.delivered.items() if device.startswith(mine)]
            if sent or got:
                at = m.at if sent else min(got)
                history.append(
                    {"from": m.sender, "to": m.recipient, "time": d.relay_time(at), "text": m.text}
                )
        history.sort(key=lambda r: (r["time"], r["from"], r["text"]))
        self._filed(
            order, disclose_backup(order, d.profile.name, backup, history, day=d.desk.served_day(order))
        )

    def _disclose(self, order: LegalProcess) -> None:
        self._filed(order, self.driver.desk.serve(order))

    def _filed(self, order: LegalProcess, disclosure: Disclosure) -> None:
        self.disclosures.append(disclosure)
        d = self.driver
        d.emit(
            {
                "t": d.now(),
                "kind": "disclosure",
                "name": order.name,
                "process": order.process,
                "target": order.target,
                **disclosure.summary(),
            }
        )
