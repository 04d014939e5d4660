"""The compliance desk: answers legal process from what the relay's store actually holds.

``ComplianceDesk(store, profile)`` serves a ``LegalProcess`` and returns a ``Disclosure``: the
records handed over, by category, and for every category the process asked for but did not get,
one of four reasons (``relay.legal.REASONS``), which differ in kind:

- **withheld by policy**: the provider holds it (or could collect it) and its policy on the record (its
  published policy; BlackBerry's as reported: ``Profile.policy_name``)
  for this instrument does not hand it over (or, where none is on record, its record does not show it
  handed over, or the profile assumes it is not: the reason says which);
- **not retained**: it could have been kept and was not, so nothing exists for the past (never
  recorded under this profile, or deleted on delivery);
- **no capability**: the relay has no way to collect it (no real-time tap was built); the reason
  names the instrument of the order's jurisdiction that could compel one, where there is one;
- **cryptographically impossible**: no key the provider holds opens it (end-to-end content).

A disclosure also carries the provider's **response** to the demand as a whole
(``relay.legal.RESPONSES``): "complied" unless the profile's policy for that instrument says
otherwise (``Profile.responses``).

Nothing here is a lookup table of answers: every provided category is read from the store (the
metadata the profile's retention policy let through, the devices, the queued or archived
envelopes, the intercepts a tap collected), and every reason is true of that store. For content,
the desk hands over the ciphertext it holds and shows what happens when it tries every key it
has: under end-to-end profiles, nothing opens; under provider-held keys, everything does.

Looking back (``Instrument.looks == "back"``) the desk reads what exists at service. Looking
forward it collects from service to expiry: ``begin`` returns the ``Tap`` to install on the relay
core at service, and ``serve`` at expiry reads what the tap collected. A profile without the
capability gets no tap, and says so. A forward-looking order the desk never saw begin (one served
on a finished run's store, as ``relaysim disclose`` does) collected nothing. A preservation
request freezes what is held and discloses nothing by itself.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from relaysim.relay.content import read_content
from relaysim.relay.core import Tap
from relaysim.relay.custody import ContentKey, route_ad
from relaysim.relay.legal import (
    BACKUP_WARRANT,
    CATEGORIES,
    INSTRUMENTS,
    JURISDICTIONS,
    REASON_LABELS,
    REASONS,
    Instrument,
    Reason,
    Response,
    get_instrument,
    with_article,
)
from relaysim.relay.legal import in_order as _in_order
from relaysim.relay.mdtext import md_text
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.profiles import NOT_ON_THE_RELAY, PROFILES, Change, Profile, policy_changes, sources_on
from relaysim.relay.store import DeviceFacts, Store

__all__ = ["ComplianceDesk", "Disclosure", "LegalProcess", "in_order"]

_MESSAGE_KINDS = (RecordKind.SEND, RecordKind.SEALED_SEND)
# A device's class (Wire's "Mobile, Tablet or Desktop"), read off the type its app registered: the
# simulated apps register a phone as "android" or "ios" and a linked device as "desktop". Another type
# (a live client may send any) has no class here, and device info shows none.
_DEVICE_CLASSES = {"android": "mobile", "ios": "mobile", "desktop": "desktop"}
# What a forward-looking order reads from the provider's own logs, from its service on, not from a
# tap: look-ups are logged whether or not anything is collected in real time (Apple's iMessage FAQ
# for law enforcement, published by The Intercept, 2016-09-28: look-up logs to pen/trap orders).
_LOGGED = frozenset({"lookup_log"})
# Look-back instruments of the US, least first: "handed over only under a 2703(d) court order".
_LEAST_PROCESS = ("subpoena", "court_order_2703d", "search_warrant")


@dataclass(frozen=True)
class LegalProcess:
    """One order, as served: which instrument, on whom, when, and the period it covers.

    ``process`` is the key of an instrument in ``relay.legal.INSTRUMENTS``. ``start``/``end``
    bound the records asked for (look-back) or the collection (forward-looking, which never
    starts before ``served``). ``target`` None means everyone (an instrument that needs no target).
    """

    name: str
    process: str
    target: str | None
    served: float
    start: float | None = None
    end: float | None = None
    # when the authority withdrew the demand (relay clock), if it did: the order ends there
    withdrawn: float | None = None
    # when the provider gave a response other than complying (refused, challenged), where the record
    # dates it later than service (BlackBerry's refusal of the PTA's demand, 2015-11-30); None: at service
    answered: float | None = None
    # a non-disclosure order served with it, e.g. "18 U.S.C. 2705(b)": the provider may not tell the user
    nondisclosure: str | None = None

    def __post_init__(self) -> None:
        if self.process not in INSTRUMENTS:
            raise ValueError(
                f"legal process {self.name!r}: unknown process {self.process!r}; known: {', '.join(INSTRUMENTS)}"
            )
        if self.target is None and self.instrument.needs_target:
            raise ValueError(f"legal process {self.name!r}: {self.instrument.a_name} names a target account")
        if self.answered is not None and not (
            self.served <= self.answered and (self.withdrawn is None or self.answered <= self.withdrawn)
        ):
            raise ValueError(
                f"legal process {self.name!r}: answered ({self.answered:g}) must be at or after service "
                f"({self.served:g}) and not after the withdrawal"
            )

    @property
    def instrument(self) -> Instrument:
        return get_instrument(self.process)

    @property
    def forward(self) -> bool:
        return self.instrument.forward

    def window(self) -> tuple[float, float]:
        if self.forward:
            start = max(self.served, self.start if self.start is not None else self.served)
            end = self.end if self.end is not None else float("inf")
            longest = self.instrument.max_period
            if longest is not None:  # a pen register runs at most 60 days from service
                end = min(end, self.served + longest)
            return start, end if self.withdrawn is None else min(end, self.withdrawn)
        return (
            self.start if self.start is not None else float("-inf"),
            min(self.served, self.end) if self.end is not None else self.served,
        )


@dataclass
class Disclosure:
    process: LegalProcess
    profile: str
    provided: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # every category asked for and not provided: why, as (reason class, the explanation)
    reasons: dict[str, tuple[Reason, str]] = field(default_factory=dict)
    response: Response = "complied"
    decryption: list[dict[str, Any]] = field(default_factory=list)
    content_keys: int = 0  # how many content keys the desk held when it tried to decrypt
    notes: list[str] = field(default_factory=list)
    # the demand's course: (response, relay time), e.g. refused at service, then withdrawn
    history: list[tuple[Response, float]] = field(default_factory=list)
    # the order named an account that does not exist: that is the answer ("no such account")
    no_such_account: bool = False
    served_on: str | None = None  # a party other than the relay's operator (a backup custodian)
    # The profile's sources, as of the day the order was served (relay.profiles.sources_on): listed under "Sources".
    sources: tuple[str, ...] = ()
    # The row fields (of account created, device info, last seen) the provider keeps only to the day:
    # shown as a date, never as a time of day nobody recorded (Threema's "ID creation date", Signal's
    # "last connection date").
    days: frozenset[str] = frozenset()

    def refuse(self, category: str, reason: Reason, why: str) -> None:
        self.reasons[category] = (reason, why)

    def by_reason(self, reason: Reason) -> dict[str, str]:
        """Category → explanation, for the categories not provided for ``reason``."""
        return {c: why for c, (r, why) in self.reasons.items() if r == reason}

    @property
    def withheld(self) -> dict[str, str]:
        return self.by_reason("withheld_by_policy")

    def to_json(self) -> dict[str, Any]:
        p = self.process
        instrument = p.instrument
        return {
            "name": p.name,
            "process": p.process,
            "process_description": instrument.description,
            "jurisdiction": instrument.jurisdiction,
            "statute": instrument.statute,
            "profile": self.profile,
            **({"served_on": self.served_on} if self.served_on else {}),
            "target": p.target,
            "served": p.served,
            "window": [None if abs(x) == float("inf") else x for x in p.window()],
            "response": self.response,
            "history": [{"response": r, "at": t} for r, t in self.history],
            "no_such_account": self.no_such_account,
            "nondisclosure_order": p.nondisclosure,
            "provided": {k: self.provided[k] for k in sorted(self.provided)},
            "not_provided": {r: dict(sorted(self.by_reason(r).items())) for r in REASONS},
            "decryption_attempts": self.decryption,
            "content_keys_held": self.content_keys,
            "notes": self.notes,
            **({"sources": list(self.sources)} if self.sources else {}),
        }

    def summary(self) -> dict[str, Any]:
        """Per reason, the categories; and the response. The matrix cell and the transcript's record."""
        out: dict[str, Any] = {
            "response": self.response,
            "provided": in_order(self.provided),
            **{r: in_order(self.by_reason(r)) for r in REASONS},
        }
        if len(self.history) > 1:
            out["history"] = [r for r, _t in self.history]
        if self.no_such_account:
            out["no_such_account"] = True
        if self.process.nondisclosure:
            out["nondisclosure_order"] = self.process.nondisclosure
        return out

    def to_markdown(self, clock: Any = None) -> str:
        """The disclosure for people: what was served, what came back, and why the rest did not."""
        p = self.process
        instrument = p.instrument
        fmt = clock or (lambda t: f"{t:.0f}")
        title = PROFILES[self.profile].title if self.profile in PROFILES else self.profile
        start, end = p.window()
        if p.forward:
            until = "the end of the run" if end == float("inf") else fmt(end)
            covers = f"collection from {fmt(start)} until {until} (it looks forward, never back)"
        elif instrument.looks == "freeze":
            covers = "what is held at that moment, frozen; nothing after it"
        elif start == float("-inf"):
            covers = "everything held at that moment"
        else:
            covers = f"records from {fmt(start)} to {fmt(end)}"
        lines = [
            f"# Disclosure: {md_text(p.name)}",
            "",
            f"- **Order:** {instrument.name}: {instrument.title} (`{p.process}`)",
            f"- **Under:** {instrument.statute} ({JURISDICTIONS[instrument.jurisdiction].name})",
            f"- **Served on:** {self.served_on}, for a user of {title}"
            if self.served_on
            else f"- **Served on:** the relay's operator — {title} (profile `{self.profile}`)",
            f"- **Target:** {f'account `{p.target}`' if p.target else 'everyone who uses the relay'}",
            f"- **Served at:** {fmt(p.served)}; it covers {covers}",
            "- **Response:** "
            + (
                "; then ".join(
                    f"{r.replace('withdrawn', 'demand withdrawn')} at {fmt(t)}" for r, t in self.history
                )
                if len(self.history) > 1
                else self.response
            ),
        ]
        if self.no_such_account:
            lines.append(f"- **Answer:** no such account: no account is registered to `{p.target}`")
        if p.nondisclosure:
            lines.append(
                f"- **Non-disclosure order:** {p.nondisclosure}: the provider may not tell the subscriber "
                "about this order"
            )
        lines += ["", "## Handed over", ""]
        if not self.provided:
            lines.append("Nothing.")
        for cat in in_order(self.provided):
            rows = self.provided[cat]
            count = "none found" if not rows else "1 record" if len(rows) == 1 else f"{len(rows)} records"
            lines.append(f"- **{_label(cat)}** — {CATEGORIES[cat].description}: {count}")
            for r in rows[:_SHOWN]:
                lines.append(f"  - {md_text(_row_text(cat, r, fmt, self.days))}")  # names, words: as written
            if len(rows) > _SHOWN:
                lines.append(f"  - … and {len(rows) - _SHOWN} more (all of them are in the JSON file)")
        for reason, meaning in REASONS.items():
            lines += ["", f"## Asked for, but {REASON_LABELS[reason]} ({meaning})", ""]
            lines += _grouped(self.by_reason(reason)) or ["Nothing."]
        if self.decryption:
            opened = sum(1 for d in self.decryption if d["opened"])
            n, k = len(self.decryption), self.content_keys
            held = f"The provider holds {n} ciphertext{'s' if n > 1 else ''} covered by this order"
            if k:
                keys = f"{k} content key{'s' if k > 1 else ''}"
                text = f"{held} and {keys} of its own; the desk tried each key on every one: {opened} opened."
            else:
                text = f"{held}, and no key to any of them: none can be opened."
            custody = PROFILES[self.profile].custody if self.profile in PROFILES else None
            if not opened and custody == "devices":
                text += " The keys that would open them exist only on the phones."
            elif not opened and custody == "enterprise":
                text += " The keys that would open them are on the enterprise's own server."
            lines += ["", "## Trying to read the ciphertext", "", text]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        if self.sources:
            lines += [
                "",
                # a warrant on a backup's custodian lists the backup's sources (relay/backup.py), not the profile's
                f"## Sources the backup held by {self.served_on} cites (docs/record.md: what of them is on the record)"
                if self.served_on is not None
                else f"## Sources the profile `{self.profile}` cites (docs/record.md: what of them is on the record)",
                "",
                *[f"- {md_text(s)}" for s in self.sources],
            ]
        return "\n".join(lines) + "\n"


_SHOWN = 8
_DAY = 86400.0
_TIMES = ("time", "created", "registered", "last_seen", "first_seen", "delivered_to_agency")


def in_order(categories: Iterable[str]) -> list[str]:
    """Categories in the vocabulary's order (who, when, where, with whom, what)."""
    return _in_order(categories)


def _grouped(reasons: Mapping[str, str]) -> list[str]:
    """One line per reason, naming every category it applies to."""
    by_reason: dict[str, list[str]] = {}
    for category in in_order(reasons):
        by_reason.setdefault(reasons[category], []).append(f"**{_label(category)}**")
    return [f"- {', '.join(cats)}: {reason}" for reason, cats in by_reason.items()]


def _label(category: str) -> str:
    return CATEGORIES[category].label


def _sentence(label: str) -> str:
    """A label opening a sentence: its first letter a capital, the rest as written ("IP addresses",
    not ``str.capitalize``'s "Ip addresses")."""
    return label[:1].upper() + label[1:]


def _day_only(text: str) -> str:
    """A time as the clock shows it ("2016-05-03 00:00:00 UTC", "day 2 00:00:00"), said as the day
    it falls on, for a value kept only to the day: the time of day would be one nobody recorded."""
    day = _CLOCK_TIME.sub("", text).replace(" UTC", "").strip()
    if day == text.strip():  # no time of day in it (raw seconds): say what it is
        return f"{text} (the day only)"
    return f"{day or 'day 1'} (the day only{', UTC' if 'UTC' in text else ''})"


_CLOCK_TIME = re.compile(r"\s*\b\d{2}:\d{2}:\d{2}\b")


def _row_text(category: str, row: Mapping[str, Any], fmt: Any, days: frozenset[str] = frozenset()) -> str:
    """One record as plain text (its names and a message's words as written): ``to_markdown``
    escapes it (``relay.mdtext``)."""

    def t(key: str) -> str:
        v = row.get(key)
        return fmt(v) if isinstance(v, int | float) else "?"

    if category in ("content", "ciphertext"):
        to = row["to"] + (f"/{row['to_device']}" if row.get("to_device") is not None else "")
        route = f"{row.get('from') or '(sealed sender)'} → {to}, {t('time')}"
        if category == "content":
            kind = row.get("kind", "message")
            if "text" not in row:
                return f"{route}: ({kind}, no words)"
            return f"{route}: “{row['text']}”" + ("" if kind == "message" else f" ({kind})")
        return f"{route}: {row['bytes']} bytes, beginning {row['ciphertext_head'][:16]}…"
    if category == "realtime_routing":
        sender = f"{row['account']}/{row.get('device', '?')}" if "account" in row else "(sealed sender)"
        text = (
            f"{t('time')} {sender} → {row.get('recipient_account', '?')}/{row.get('recipient_device', '?')}"
        )
        if "host" in row:
            text += f" from {row['host']}"
        if "size" in row:
            text += f", {row['size']} bytes"
        if "delivered_to_agency" in row:
            text += f" (delivered to the agency at {t('delivered_to_agency')})"
        return text
    if category == "message_log":
        return f"{t('time')} {row.get('account') or '(sender unknown)'} → {row.get('recipient_account', '?')}"
    if category == "group_membership":
        text = (
            f"group {row['group'][:12]}…: members {', '.join(row['members'])}; admins "
            f"{', '.join(row['admins']) or 'none'}; the target added {t('added')} by {row['added_by']}"
        )
        if row["provider_added"]:
            text += f"; added by the provider, not by an admin: {', '.join(row['provider_added'])}"
        if "creator" in row:
            text += f"; created {t('created')} by {row['creator']}"
        return text
    if category == "lookup_log":
        where = f", from {row['host']}" if "host" in row else ""
        return f"{t('time')} {row.get('account', '?')} looked up {row.get('recipient_account', '?')}'s keys{where}"
    parts = []
    for k, v in row.items():
        if v is None:
            continue
        if isinstance(v, float) and k in _TIMES:
            v = _day_only(fmt(v)) if k in days else fmt(v)
        parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts)


def _record(r: MetadataRecord, *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in names:
        v = getattr(r, n)
        if v is not None:
            out[n] = v.hex() if isinstance(v, bytes) else v
    return out


@dataclass(frozen=True)
class _Body:
    """A message body the relay holds or intercepted, and what it knows of its route."""

    sender: str | None  # None: a sealed sender
    recipient: str
    device: int | None
    time: float
    body: bytes


def _utc_day(t: float) -> date:
    return datetime.fromtimestamp(t, UTC).date()


class ComplianceDesk:
    def __init__(
        self,
        store: Store,
        profile: Profile,
        *,
        content_keys: Sequence[ContentKey] = (),
        geoip: Mapping[str, str] | None = None,
        client_padding: bool | None = None,
        policy_on: Callable[[date], Profile] | None = None,
        day_of: Callable[[float], date] | None = None,
    ) -> None:
        """``client_padding``: whether the provider's clients pad plaintexts (0x80, then zeros, as
        Signal's PushTransportDetails), which the desk removes from content it opens; None takes
        the profile's ``padding``.

        ``policy_on``: for a run set on a date (``profile.as_of``, the relay's clock in Unix seconds
        on that calendar), the provider's profile for an order served on a given day. An order
        served after a policy change (``relay.profiles.Change.policy``) that came after the run's
        date is answered under the new policy, the fields that change touched taken from it.
        ``day_of``: the run's calendar day at a relay time; by default the relay's clock reads Unix
        seconds on that calendar (the simulator's does; a live relay's is the wall clock)."""
        self.store = store
        self.profile = profile
        self.policy_on = policy_on
        self.day_of = day_of or _utc_day
        self._policy_changed: tuple[Change, ...] = ()  # since the run's date, for the order served
        self.client_padding = profile.padding if client_padding is None else client_padding
        # only keys the provider itself holds can be used at its desk
        self.keys = [k for k in content_keys if k.holder == "provider"]
        self.geoip = dict(geoip or {})
        # forward-looking orders this desk saw served while traffic still passed (``begin``)
        self._begun: set[str] = set()

    def hold_content_key(self, key: ContentKey) -> None:
        """The provider now holds ``key`` to content (a global-key mandate, as consumer BBM's): the desk
        uses it on every order answered from now on, and custody of content becomes the provider's."""
        if key.holder != "provider":
            raise ValueError(
                f"the desk can only use keys the provider holds, not {key.holder!r}'s ({key.key_id})"
            )
        self.keys.append(key)
        self.profile = replace(self.profile, custody="provider")

    # --- forward-looking orders -----------------------------------------------------------------

    def _as_served(self, process: LegalProcess) -> ComplianceDesk:
        """The desk that answers ``process``: this one, or, where the provider's policy changed
        between the run's date and the day the order is served, a copy under the policy of that day."""
        start = self.profile.as_of
        if self.policy_on is None or start is None:
            return self
        day = self.day_of(process.served)
        changes = policy_changes(self.profile.name, start, day)
        if not changes:
            return self
        served = self.policy_on(day)
        desk = copy.copy(self)  # shares the store, the keys and the orders begun
        desk.profile = replace(self.profile, **{k: getattr(served, k) for c in changes for k in c.before})
        desk._policy_changed = changes
        return desk

    def begin(self, process: LegalProcess) -> Tap | None:
        """At service of a forward-looking order: the tap to install, or None if it cannot collect."""
        return self._as_served(process)._begin(process)

    def _begin(self, process: LegalProcess) -> Tap | None:
        if not process.forward:
            return None
        self._begun.add(process.name)
        if not self._collects(process.instrument):
            return None
        start, end = process.window()
        return Tap(process.name, process.target, start, end, process.instrument.copies_bodies)

    def _can_collect(self, instrument: Instrument) -> bool:
        """Whether the relay has a real-time tap for such an order at all (its design, not its policy)."""
        if instrument.copies_bodies:
            return self.profile.wiretap
        return self.profile.pen_register

    def _collects(self, instrument: Instrument) -> bool:
        """Whether the provider collects under such an order: it can, it answers the demand, and its
        policy hands over something of what the order asks (else it collects nothing)."""
        return (
            self._can_collect(instrument)
            and not instrument.builds  # a capability notice builds; it collects nothing itself
            and self.profile.response_to(instrument) == "complied"
            and bool(self._discloses(instrument) & instrument.asks)
        )

    def _discloses(self, instrument: Instrument) -> frozenset[str]:
        return self.profile.discloses.get(instrument.key, frozenset())

    # --- serving ---------------------------------------------------------------------------

    def serve(self, process: LegalProcess) -> Disclosure:
        # a process served on another custodian (NOT_ON_THE_RELAY: the timeline serves a warrant on the backup's
        # custodian there, relay/backup.py)
        if process.process in NOT_ON_THE_RELAY:
            where = (
                "the custodian of the target's device backups (relay/backup.py, disclose_backup)"
                if process.process == BACKUP_WARRANT
                else "another custodian"
            )
            raise ValueError(
                f"legal process {process.name!r}: {with_article(process.instrument.name)} ({process.process}) is "
                f"served on {where}, not on the relay's operator, whose desk this is"
            )
        if self.profile.as_of is not None:  # a run set on a date: no order under a law made after its day
            why = process.instrument.not_yet(self.day_of(process.served))
            if why is not None:
                raise ValueError(f"legal process {process.name!r}: {why}")
        desk = self._as_served(process)
        local = desk.profile.jurisdiction_notes.get(process.instrument.jurisdiction)
        if local:  # the notes of this order's country (Profile.jurisdiction_notes)
            desk = copy.copy(desk)
            desk.profile = replace(desk.profile, notes={**desk.profile.notes, **local})
        d = desk._serve(process)
        for c in reversed(desk._policy_changed):
            d.notes.insert(
                0,
                f"The record of {self.profile.title} changed {c.when()}, after this run's date "
                f"({self.profile.as_of:%Y-%m-%d}) and by the day this order was served: {c.what} ({c.source}). "
                "The order is answered as the record stood when it was served."
                if c.record
                else f"{self.profile.title}'s policy changed {c.when()}, after this run's date "
                f"({self.profile.as_of:%Y-%m-%d}) and by the day this order was served: {c.what} ({c.source}). "
                "The order is answered under the policy in force when it was served.",
            )
        return d

    def _serve(self, process: LegalProcess) -> Disclosure:
        instrument = process.instrument
        d = Disclosure(
            process,
            self.profile.name,
            response=self.profile.response_to(instrument),
            days=self._day_fields(),
            sources=sources_on(self.profile, self.served_day(process)),
        )
        answered = process.answered if d.response != "complied" and process.answered is not None else None
        d.history.append((d.response, process.served if answered is None else answered))
        if process.withdrawn is not None:
            d.history.append(("withdrawn", process.withdrawn))
        if process.nondisclosure:
            d.notes.append(
                f"Served with a non-disclosure order ({process.nondisclosure}): {self.profile.title} may not "
                "tell the subscriber about this order until a court lifts it."
            )
        if instrument.note:
            d.notes.append(f"{instrument.note}.")
        if instrument.citation:
            d.notes.append(f"Citation: {instrument.citation}.")
        for caveat in instrument.caveats_on(
            self.served_day(process)
        ):  # what the record leaves open of the day
            d.notes.append(f"{caveat[0].upper()}{caveat[1:]}.")
        if process.target is not None and not self.store.devices(process.target):
            # An answer, not an error: the number has no account with this provider.
            d.no_such_account = True
            d.notes.append(
                f"No such account: no {self.profile.title} account is registered to {process.target}, so "
                "there is nothing to produce for it."
            )
            return d
        if instrument.looks == "freeze":
            d.notes.append(
                f"{with_article(instrument.name, capital=True)} discloses nothing now; it freezes what the "
                "provider holds about the target at service, so that further process can reach it, and "
                "captures nothing after it."
            )
            return d
        assumed = self.profile.assumptions.get(instrument.key)
        if assumed:  # said however the provider answers (a refusal can be assumed too)
            d.notes.append(f"Assumption: {assumed}.")
        if reading := self.profile.readings.get(instrument.key):
            d.notes.append(f"Reading: {reading}.")
        if d.response != "complied":
            record = self.profile.response_record.get(instrument.key)
            declined = f"{self.profile.title}'s response to the demand as a whole: {d.response}" + (
                f" ({record})" if record else ""
            )
            for category in in_order(instrument.asks):
                # what could not be produced even by complying keeps its own reason (no key opens it,
                # or no way to collect it), with the record of the answer where there is one (the PTA's
                # withdrawal: "we cannot provide the content"); the rest the provider has, or could
                # collect, and declines
                missing = self._missing(category, process)
                if missing is not None and missing[0] in ("cryptographically_impossible", "no_capability"):
                    d.refuse(category, missing[0], f"{missing[1]}; {declined}" if record else missing[1])
                else:
                    d.refuse(category, "withheld_by_policy", declined)
            if process.withdrawn is not None:
                d.notes.append(
                    f"{self.profile.title} {d.response} the demand; the authority withdrew it, and nothing was "
                    "handed over."
                )
                d.response = "withdrawn"
            return d
        if instrument.builds:
            # A capability notice: per category, what the provider would have to build (no
            # capability: this notice compels it), what no notice can build (no key the provider
            # holds opens it), and what it can collect already (nothing to build; nothing handed over).
            for category in in_order(instrument.asks):
                missing = self._missing(category, process)
                if missing is not None and missing[0] in ("cryptographically_impossible", "no_capability"):
                    d.refuse(category, *missing)
                else:
                    d.refuse(category, "withheld_by_policy", self._withheld_reason(category, process))
            return d
        if process.forward and process.name not in self._begun:
            # Served after the fact (e.g. on a finished run's store): a forward-looking order
            # collects from its service on, and nothing passed through the relay since.
            why = (
                f"{instrument.a_name} collects only from its service on, and it was not in effect while "
                "traffic passed: nothing of that traffic was kept for it"
            )
            for category in in_order(instrument.asks):
                # what the relay could never collect, or no key opens, keeps that reason
                missing = self._missing(category, process)
                if missing is not None and missing[0] in ("cryptographically_impossible", "no_capability"):
                    d.refuse(category, *missing)
                else:
                    d.refuse(category, "not_retained", why)
            d.notes.append(
                "Nothing was collected: a forward-looking order has to be in place before the traffic it "
                "covers passes (in a scenario, a legal_process event in the timeline)."
            )
            return d
        discloses = self._discloses(instrument)
        for category in in_order(instrument.asks):
            missing = self._missing(category, process)
            if missing is not None:
                d.refuse(category, *missing)
                continue
            tapped = process.forward and category not in _LOGGED
            if category not in discloses or (tapped and not self._collects(instrument)):
                d.refuse(category, "withheld_by_policy", self._withheld_reason(category, process))
                continue
            rows = self._fetch(category, process, d)
            logged_hosts = category == "lookup_log" and instrument.key in self.profile.lookup_log_hosts
            if (
                "ip_addresses" not in discloses
                and category not in ("ip_addresses", "location")
                and not logged_hosts
            ):
                # IP addresses are not withheld in one category and printed in another (but where the
                # record shows a log handed over with its client IPs: Profile.lookup_log_hosts)
                rows = [{k: v for k, v in r.items() if k != "host"} for r in rows]
            d.provided[category] = rows
            note = self.profile.notes.get(category)
            if note and category not in ("content", "ciphertext"):
                d.notes.append(f"{_sentence(_label(category))}: {note}.")
            kept = self.profile.retention_notes.get(category)
            if kept and not process.forward:  # of what the relay keeps: said where an order looks back at it
                d.notes.append(f"{_sentence(_label(category))}: {kept}.")
        if "content" in instrument.asks and "content" not in d.provided and "content" not in d.reasons:
            self._bodies("content", process, d)
        elif "content" in d.withheld and self.keys:
            # Nothing protects the words but the provider's answer: its own keys open them. That answer is
            # its policy where one is on record; else its record's word and the project's assumption, which
            # the reason (the profile's note) says. Where nothing was held or collected, there is nothing
            # to open, and nothing is said of keys.
            rows = self._bodies("content", process, d)
            if d.decryption:
                opened = sum(1 for x in d.decryption if x["opened"])
                texts = sum(1 for r in rows if r["kind"] == "message")
                # "its policy" only where a published policy of the provider's is on the record: not where
                # what it keeps back is said as its record's word (Profile.policy_record); and where its answer to
                # this order is assumed (no record of the provider's speaks of one: consumer BBM under a UK or
                # Australian order, which the profile assumes it answers by its reported policy for court
                # orders), what keeps them back is that assumed answer, said as assumed
                policy = self.profile.published_policy and not self.profile.policy_record
                keeps = (
                    ": only the answer this profile assumes it gives to this order keeps them back (the project's "
                    "assumption)"
                    if self._answer_assumed(instrument)
                    else ": only its policy keeps them back"
                    + (f" ({self.profile.policy_later})" if self.profile.policy_later else "")
                )
                reason, why = d.reasons["content"]
                d.refuse(
                    "content",
                    reason,
                    f"{why}; the provider's own key opens {opened} of the {len(d.decryption)} held envelope(s) "
                    f"({texts} of them messages, the rest receipts and other control content)"
                    + (keeps if policy else ""),
                )
        if process.forward and not self._can_collect(instrument):
            logged = [_label(c) for c in in_order(d.provided) if c in _LOGGED]
            d.notes.append(
                f"{with_article(self.profile.title, capital=True)} relay cannot collect under "
                f"{instrument.a_name}: nothing was tapped"
                + (
                    f"; the {' and '.join(logged)} handed over is read from its own records, not collected "
                    "in real time"
                    if logged
                    else ""
                )
                + "."
            )
        elif process.forward and not self._collects(instrument):
            d.notes.append(
                f"{self.profile.title} could collect under {instrument.a_name}"
                + (f" ({self.profile.realtime_inferred})" if self.profile.realtime_inferred else "")
                + ", but "
                + (
                    "hands nothing over under one (the project's assumption)"
                    if self._answer_assumed(instrument)
                    else self.profile.realtime_record
                    or f"{self.profile.policy_name} hands nothing over under one"
                )
                + ", so it collects nothing: nothing was tapped."
            )
        return d

    def _answer_assumed(self, instrument: Instrument) -> bool:
        """Whether what the provider hands over under ``instrument`` is the profile's assumption as a whole,
        not a published policy's: an order of another country's law that the profile assumes for (no record
        of the provider's speaks of one), a US order no record of the provider's speaks of
        (``Profile.assumed_answers``: the FBI chart's "—" cells), or any it assumes for where the provider
        publishes no policy for law enforcement (Wire: ``Profile.published_policy``)."""
        pr = self.profile
        return instrument.key in pr.assumptions and (
            instrument.jurisdiction != "us" or not pr.published_policy or instrument.key in pr.assumed_answers
        )

    def _withheld_reason(self, category: str, process: LegalProcess) -> str:
        pr = self.profile
        instrument = process.instrument
        if instrument.builds:
            return (
                f"{pr.title} can already collect it, so there is nothing to build; {instrument.a_name} "
                "compels building a capability and hands nothing over by itself (what the relay collects is "
                "reached by an interception warrant)"
            )
        if process.forward and category not in _LOGGED and not self._collects(instrument):
            assumed = self._answer_assumed(instrument)
            # A profile's note on real-time returns (the FBI chart's, of US process) backs no answer to an
            # order of another country's law: where that answer is assumed, the assumption says the record.
            # (where the record is said in place of a policy, it is the note: said once)
            record = "" if assumed else pr.realtime_record
            note = (
                None
                if (assumed and instrument.jurisdiction != "us") or record
                else pr.notes.get("realtime_routing")
            )
            policy = (
                f"hands nothing over under {instrument.a_name} (the project's assumption)"
                if assumed
                else record or f"{pr.policy_name} hands nothing over under {instrument.a_name}"
            )
            inferred = f" ({pr.realtime_inferred})" if pr.realtime_inferred else ""
            return (
                f"{pr.title} could collect it in real time{inferred}, but {policy}, so it collects nothing"
                + (f" ({note})" if note else "")
            )
        if category in _LOGGED and process.forward:
            has = f"logged by {pr.title} from this order's service on"
        elif process.forward:
            has = f"collected under this order by {pr.title}"
        else:
            has = f"held by {pr.title}"
        # The US ladder ("handed over only under a 2703(d) court order") for a US order only: an order of another
        # country's law, targeted or a demand on everyone, is answered by the provider's policy for it. Where the
        # profile carries an assumption for the order, which rung gets it is the project's reading (Telegram's
        # subpoena: §8.3 names an order of the judicial authorities).
        if instrument.jurisdiction == "us":
            for p in _LEAST_PROCESS:
                least = INSTRUMENTS[p]
                if category in pr.discloses.get(p, frozenset()) and category in least.asks:
                    return f"{has}, but handed over only under {least.a_name}" + (
                        " (the project's assumption)" if instrument.key in pr.assumptions else ""
                    )
        note = pr.notes.get(category)
        if self._answer_assumed(instrument):
            # an order of another country's law that no record of the provider's speaks of, a US order none
            # speaks of (an FBI chart cell "—"), or any order to a provider that publishes no policy for law
            # enforcement: no published policy says what it gets, only what this profile assumes (said in the notes)
            # The category's note says what it is, not why it is kept back: said after the reason, never as it
            # (WhatsApp's blocked users under a Pakistani court's order: "both ways: ...").
            kept_back = f"{has}, and not handed over under {instrument.a_name} (the project's assumption)"
            return f"{kept_back}: {note}" if note else kept_back
        # As above, the category's note is said after that it is held and kept back, never as the reason by itself
        # (Signal's device info under a subpoena, WhatsApp's group membership under a 2703(d) order).
        if pr.policy_record or not pr.published_policy:
            # no published policy on record says it, but a record of what the provider hands over does (the FBI
            # chart's row)
            kept_back = (
                f"{has}, but not handed over: {pr.policy_record}; that it is withheld is the project's reading of "
                "that record"
            )
            return f"{kept_back}: {note}" if note else kept_back
        if note:
            # the note says which policy, or what of the record, keeps it back, dated as the record dates it
            # (BlackBerry's policy "as reported in December 2015, after this date"): "its published policy" besides
            # would claim more than a note saying the record is later than the run's date
            return f"{has}, but not handed over: {note}"
        return f"{has}, but not handed over under {pr.policy_name}"

    # --- what is held ------------------------------------------------------------------------

    def _missing(self, category: str, process: LegalProcess) -> tuple[Reason, str] | None:
        """None if the category is held (or collected); else the reason class and why."""
        pr = self.profile
        never = f"never recorded under the {pr.name} profile"
        note = pr.notes.get(category)

        def kept(ok: bool, why: str) -> tuple[Reason, str] | None:
            return None if ok else ("not_retained", why)

        if category == "subscriber_info":
            return kept(
                pr.subscriber_record, note or "nothing is kept about the subscriber beyond the account id"
            )
        if category in ("account_created", "device_info"):
            return None  # the relay must know an account's devices to deliver to them
        if process.forward and category in ("ip_addresses", "location", "realtime_routing", "ciphertext"):
            # from service on, only what a tap collects
            return (
                None
                if self._can_collect(process.instrument)
                else ("no_capability", self._no_tap_reason(process))
            )
        if category == "last_seen":
            ok = any(pr.holds_records(kind, "time") for kind in pr.last_seen_kinds)
            return kept(ok, note or never)
        if category in ("ip_addresses", "location"):
            ok = any("host" in rule.fields for rule in pr.policy.rules.values())
            return kept(ok, note or f"{never}: the relay keeps no network addresses")
        if category == "contacts" or category == "reverse_contacts":
            return kept(
                pr.keep_contacts, note or "contact discovery answers and forgets: no address book is kept"
            )
        if category == "blocked_users":
            return kept(pr.keep_blocks, note or "blocks are enforced but never written down")
        if category == "group_membership":
            if pr.group_fanout == "server":
                return None  # the relay fans group messages out from the member lists it holds
            if pr.group_state_encrypted:
                # The reason is what the store holds: encrypted states no key of the provider's opens
                # ("cannot"), or none at all, so nothing exists to hand over ("not retained").
                said = f" ({note})" if note else ""
                held = len(self.store.group_states())
                if held:
                    # And each state's write keys (put_group_state): one per current member, pseudonymous
                    # (derived from a secret of the member's own, a different key in each group), so what
                    # they tell is how many members a group has, not who they are.
                    keys = self.store.group_write_key_count()
                    return (
                        "cryptographically_impossible",
                        f"{pr.title}'s clients keep each group's state, its members, encrypted under a key only "
                        f"the members hold; the relay holds {held} such encrypted group state(s), no key that "
                        f"opens them and no member list in the clear"
                        + (
                            f", and with them {keys} write key(s), public keys that name no account: one per "
                            "current member (a member's keys in two groups are unalike), or one for a whole group "
                            "whose state was stored before member keys; they tell how many members a group has, "
                            "not who they are"
                            if keys
                            else ""
                        )
                        + said,
                    )
                return (
                    "not_retained",
                    f"the relay holds no group's state: {pr.title}'s clients would keep a group's members there "
                    f"only encrypted under a key only the members hold, and no group was made{said}",
                )
            return kept(
                False,
                note
                or f"{never}: its clients fan group messages out themselves, and the relay keeps no member list",
            )
        if category == "message_log":
            ok = pr.holds_records(RecordKind.SEND, "account", "recipient_account", "time")
            return kept(ok, note or f"{never}: the relay keeps no record of who messaged whom")
        if category == "message_counts":
            rule = pr.policy.rules.get(RecordKind.SEND)
            ok = rule is not None and "account" in rule.fields and rule.keep == "all"
            return kept(ok, note or f"{never}: sends are not counted")
        if category == "lookup_log":
            ok = pr.holds_records(RecordKind.BUNDLE_FETCH, "account", "recipient_account")
            return kept(ok, note or f"{never}: directory look-ups are not logged")
        if category == "ciphertext":
            return self._bodies_missing(process)
        if category == "content":
            limit = JURISDICTIONS[process.instrument.jurisdiction].protection_limit_on(
                self.served_day(process)
            )
            limit = f"; {limit}" if limit else ""
            if pr.custody == "devices":
                return (
                    "cryptographically_impossible",
                    "the content is end-to-end encrypted and the keys exist only on the devices"
                    + (f" ({note})" if note else "")
                    + limit,
                )
            if pr.custody == "enterprise":
                return (
                    "cryptographically_impossible",
                    (note or "the keys are held by the enterprise's own server, not by this provider")
                    + limit,
                )
            if process.forward and not self._can_collect(process.instrument):
                return ("no_capability", self._no_tap_reason(process))
            return self._bodies_missing(process)
        raise AssertionError(category)

    def served_day(self, process: LegalProcess) -> date | None:
        """The day ``process`` is served in a run set on a date; None in an undated run (today)."""
        return None if self.profile.as_of is None else self.day_of(process.served)

    def _facts(self, facts: DeviceFacts | None) -> dict[str, str]:
        """A device's registered facts, as device info shows them: what the profile keeps and the
        device sent (the push token as hex: it is opaque bytes)."""
        if facts is None:
            return {}
        out = {}
        for name in sorted(self.profile.device_facts):
            value = getattr(facts, name)
            if value is not None:
                out[name] = value.hex() if isinstance(value, bytes) else value
        return out

    def _device_class(self, facts: DeviceFacts | None) -> dict[str, str]:
        """A device's class, where the profile hands one over and its registered type names one."""
        kind = _DEVICE_CLASSES.get(facts.device_type or "") if facts is not None else None
        return {"device_class": kind} if self.profile.device_class and kind else {}

    def _registered_from(self, account: str) -> dict[int, str]:
        """Per device of ``account``, the location (the region) of the address it registered from:
        what a provider derives from the IP address used to register, read off the device's first
        authentication (Profile.registration_location says why not its registration record)."""
        where: dict[int, str] = {}
        for r in self.store.metadata(RecordKind.AUTHENTICATION):
            if r.account == account and r.device is not None and r.host is not None:
                where.setdefault(r.device, self.geoip.get(r.host, "unknown"))
        return where

    def _no_tap_reason(self, process: LegalProcess) -> str:
        pr = self.profile
        instrument = process.instrument
        why = pr.notes.get("realtime_routing")
        compel = JURISDICTIONS[instrument.jurisdiction].compels_capability_on(self.served_day(process))
        if instrument.builds:
            compel = (
                f"this notice compels building one ({instrument.statute}); nothing is collected until it "
                "is built"
            )
        else:
            compel = f"to compel one: {compel}"
        return (
            f"{with_article(pr.title)} relay has no way to collect in real time under {instrument.a_name}"
            + (f" ({why})" if why else "")
            + f"; {compel}"
        )

    def _bodies_missing(self, process: LegalProcess) -> tuple[Reason, str] | None:
        """None if any message body (ciphertext) concerning the order is in the store (or a tap is in
        place); else why not."""
        if process.forward or self._stored_bodies(process):
            return None  # the tap is in place; what it collected may be nothing
        who = f"to or from {process.target}" if process.target else "at all"
        if self.profile.keep_delivered:
            why = f"no message {who} was on the relay at service"
        else:
            why = (
                f"no message {who} was waiting on the relay at service: each one is deleted as soon as "
                "the recipient's device acknowledges it"
            )
        sealed = sum(
            1
            for e in [*self.store.all_envelopes(), *self.store.archived()]
            if e.sealed and e.source_account is None and self._in_window(e.timestamp / 1000, process)
        )
        if sealed and process.target is not None:
            why += (
                f"; {sealed} sealed-sender message(s) for others were waiting, and the relay cannot tell "
                "who sent them"
            )
        return ("not_retained", why)

    # --- reading the store ------------------------------------------------------------------------

    def _in_window(self, t: float | None, process: LegalProcess) -> bool:
        if t is None:
            return True
        start, end = process.window()
        return start <= t <= end

    def _concerns(self, r: MetadataRecord, target: str | None) -> bool:
        return target is None or r.account == target or r.recipient_account == target

    def _fetch(self, category: str, process: LegalProcess, d: Disclosure) -> list[dict[str, Any]]:
        target = process.target
        pr = self.profile
        s = self.store
        if category == "subscriber_info":
            if target is None:
                return []
            ident = hashlib.sha256(target.encode()).hexdigest()[:16] if pr.subscriber_hashed else target
            key = "account_hash" if pr.subscriber_hashed else "account"
            return [{key: ident, "devices": len(s.device_ids(target))}]
        if category == "account_created":
            devs = s.devices(target) if target else []
            return (
                [{"account": target, "created": self._created(min(x.registered_at for x in devs))}]
                if devs
                else []
            )
        if category == "device_info":
            facts = s.device_facts(target) if target and (pr.device_facts or pr.device_class) else {}
            where = self._registered_from(target) if target and pr.registration_location else {}
            return [
                {"device": x.device, "registered": self._created(x.registered_at)}
                | ({"public_key": x.identity_key.hex()} if pr.public_keys else {})
                | self._facts(facts.get(x.device))
                | self._device_class(facts.get(x.device))
                | ({"location": where[x.device]} if x.device in where else {})
                for x in (s.devices(target) if target else [])
            ]
        if category == "last_seen":
            seen = [
                r.time
                for kind in pr.last_seen_kinds
                for r in s.metadata(kind)
                if r.account == target and r.time is not None and self._in_window(r.time, process)
            ]
            return [{"account": target, "last_seen": max(seen)}] if seen else []
        if category in ("ip_addresses", "location"):
            # A directory look-up's address is a row of the look-up log (iMessage's capability query logs,
            # which the FBI chart puts at a 2703(d) order): it comes only to an order the log is handed to,
            # and reaches back no further than the log does (the chart's 25 days of look-ups, though Apple
            # keeps them 30: Profile.lookback).
            lookups = "lookup_log" in self._discloses(process.instrument)
            reach = pr.lookback.get("lookup_log")
            records = (
                self._tapped(process)
                if process.forward
                else [
                    r
                    for r in s.metadata()
                    if self._concerns(r, target)
                    and r.account == target
                    and self._in_window(r.time, process)
                    and (
                        r.kind is not RecordKind.BUNDLE_FETCH
                        or (lookups and (reach is None or r.time is None or r.time >= process.served - reach))
                    )
                ]
            )
            hosts: dict[str, float] = {}
            for r in records:
                if r.host is not None and (target is None or r.account == target):
                    hosts.setdefault(r.host, r.time or 0.0)
            if category == "ip_addresses":
                return [{"ip": h, "first_seen": t} for h, t in hosts.items()]
            return [{"ip": h, "region": self.geoip.get(h, "unknown")} for h in hosts]
        if category == "contacts":
            return [{"contact": c} for c in s.contacts_of(target)] if target else []
        if category == "reverse_contacts":
            return [{"account": c} for c in s.reverse_contacts(target)] if target else []
        if category == "blocked_users":
            # "numbers blocking or blocked by the user" (faq.whatsapp.com): the target's blocks, then
            # the blocks of the target by others
            if not target:
                return []
            return [{"blocked": b, "time": t} for b, t in s.blocks_of(target)] + [
                {"blocked_by": a, "time": t} for a, t in s.blockers_of(target)
            ]
        if category == "group_membership":
            groups: list[dict[str, Any]] = []
            for group in s.groups_of(target) if target else []:
                members = s.group_members(group)
                (me,) = [m for m in members if m.account == target]
                row: dict[str, Any] = {
                    "group": group.hex(),
                    "members": [m.account for m in members],
                    "admins": [m.account for m in members if m.admin],
                    "added": me.added_at,
                    "added_by": me.added_by or "the provider itself",
                    "provider_added": [m.account for m in members if m.added_by is None],
                }
                made = s.group_created(group) if pr.group_creator else None
                if made is not None:
                    row["creator"], row["created"] = made
                groups.append(row)
            return groups
        if category == "message_log":
            return [
                _record(r, "time", "account", "recipient_account")
                for kind in _MESSAGE_KINDS
                for r in s.metadata(kind)
                if self._concerns(r, target) and self._in_window(r.time, process)
            ]
        if category == "message_counts":
            n = sum(
                1
                for r in s.metadata(RecordKind.SEND)
                if r.account == target and self._in_window(r.time, process)
            )
            sealed = sum(
                1
                for r in s.metadata(RecordKind.SEALED_SEND)
                if r.account is None and self._in_window(r.time, process)
            )
            if sealed or pr.sealed_sender:
                # never a false zero: some sends could have been the target's, and nobody can tell
                return [
                    {
                        "account": target,
                        "messages_sent": "unknown: the relay cannot attribute sealed sends",
                        "attributed": n,
                        "sealed_sends_in_window": sealed,
                    }
                ]
            # the account id (the phone number) is the one external id the relay knows of
            ids = {"external_ids": 1 if s.devices(target) else 0} if pr.external_id_count and target else {}
            return [{"account": target, "messages_sent": n, **ids}]
        if category == "lookup_log":
            reach = pr.lookback.get(category)  # e.g. 25 days of look-ups to a 2703(d) order (the FBI chart)
            return [
                _record(r, "time", "account", "recipient_account", "host")
                for r in s.metadata(RecordKind.BUNDLE_FETCH)
                if self._concerns(r, target)
                and self._in_window(r.time, process)
                and (reach is None or r.time is None or r.time >= process.served - reach)
            ]
        if category == "realtime_routing":
            rows = [
                _record(
                    r, "time", "account", "device", "recipient_account", "recipient_device", "host", "size"
                )
                for r in self._tapped(process)
                if r.kind in _MESSAGE_KINDS
            ]
            batch = pr.pen_register_batch
            if batch:
                for row in rows:
                    row["delivered_to_agency"] = (int(row["time"] // batch) + 1) * batch
                d.notes.append(f"Routing records are delivered in batches every {batch / 60:g} minutes.")
            return rows
        if category in ("ciphertext", "content"):
            return self._bodies(category, process, d)
        raise AssertionError(category)

    def _day_fields(self) -> frozenset[str]:
        """The row fields this provider keeps only to the day (Disclosure.days): an account's and its
        devices' creation, where ``created_granularity`` is whole days; "last seen", where every kind
        of record it is read from is kept with its time rounded to whole days."""
        pr = self.profile
        out = set()
        step = pr.created_granularity
        if step and step % _DAY == 0:
            out |= {"created", "registered"}
        steps = [
            rule.granularity.get("time")
            for kind in pr.last_seen_kinds
            if (rule := pr.policy.rules.get(kind)) is not None and "time" in rule.fields
        ]
        if steps and all(s is not None and s % _DAY == 0 for s in steps):
            out.add("last_seen")
        return frozenset(out)

    def _created(self, t: float) -> float:
        step = self.profile.created_granularity
        return t - t % step if step else t

    def _tapped(self, process: LegalProcess) -> list[MetadataRecord]:
        return [r for r, _body in self.store.intercepts(process.name)]

    def _stored_bodies(self, process: LegalProcess) -> list[_Body]:
        """Queued and archived envelopes to or from the target, accepted inside the window."""
        target = process.target
        return [
            _Body(e.source_account, e.account, e.device, e.timestamp / 1000, e.body)
            for e in [*self.store.all_envelopes(), *self.store.archived()]
            if (target is None or target in (e.account, e.source_account))
            and self._in_window(e.timestamp / 1000, process)
        ]

    def _bodies(self, category: str, process: LegalProcess, d: Disclosure) -> list[dict[str, Any]]:
        found: list[_Body] = []
        if process.forward:
            for r, body in self.store.intercepts(process.name):
                if body is not None and r.recipient_account is not None:
                    found.append(
                        _Body(r.account, r.recipient_account, r.recipient_device, r.time or 0.0, body)
                    )
        else:
            found = self._stored_bodies(process)
            reach = self.profile.lookback.get(category)  # e.g. LINE's 7 days of chats (the FBI chart)
            if reach is not None:
                older = [f for f in found if f.time < process.served - reach]
                if older:
                    d.notes.append(
                        f"{_sentence(_label(category))}: {self.profile.title} hands over only what was sent in "
                        f"the {reach / 86400:g} days before service; {len(older)} older held message(s) were "
                        "not handed over."
                    )
                found = [f for f in found if f.time >= process.served - reach]
        if category == "ciphertext":
            return [
                {
                    "from": f.sender,
                    "to": f.recipient,
                    "to_device": f.device,
                    "time": f.time,
                    "bytes": len(f.body),
                    "ciphertext_head": f.body[:24].hex(),
                }
                for f in found
            ]
        rows = []
        for f in found:
            opened = None
            for key in self.keys:
                opened = key.open(f.body, route_ad(f.recipient))
                if opened is not None:
                    break
            d.decryption.append({"to": f.recipient, "time": f.time, "opened": opened is not None})
            if opened is not None:
                # The provider wrote the clients: it tells a text from a receipt (relay.content).
                kind, words = read_content(self._unpadded(opened))
                row: dict[str, Any] = {
                    "from": f.sender,
                    "to": f.recipient,
                    "to_device": f.device,
                    "time": f.time,
                    "kind": kind,
                }
                if words is not None:
                    row["text"] = words.decode("utf-8", "replace")
                rows.append(row)
        d.content_keys = len(self.keys)
        return rows

    def _unpadded(self, plaintext: bytes) -> bytes:
        """The plaintext without its clients' padding (0x80, then zeros), when they pad."""
        if not self.client_padding:
            return plaintext
        body = plaintext.rstrip(b"\x00")
        return body[:-1] if body.endswith(b"\x80") else plaintext
