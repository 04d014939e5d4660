"""The compliance desk: answers legal process from what the relay's store actually holds.

``ComplianceDesk(store, profile)`` serves a ``LegalProcess`` and returns a ``Disclosure``: the
records handed over, by category, and for every category the process asked for but did not get,
whether it was **withheld by policy** (the provider holds it but its published policy, or the
law for this kind of process, keeps it back) or is **technically impossible** (never recorded
under this profile, deleted after delivery, or end-to-end encrypted with the keys only on the
devices), with the reason.

Nothing here is a lookup table of answers: every provided category is read from the store (the
metadata the profile's retention policy let through, the devices, the queued or archived
envelopes, the intercepts a tap collected), and every "impossible" is true of that store. For
content, the desk hands over the ciphertext it holds and shows what happens when it tries every
key it has: under end-to-end profiles, nothing opens; under provider-held keys, everything does.

Looking back (subpoena, 2703(d) order, search warrant) the desk reads what exists at service.
Looking forward (pen register, wiretap, blanket demand) it collects from service to expiry:
``begin`` returns the ``Tap`` to install on the relay core at service, and ``serve`` at expiry
reads what the tap collected. A profile without the capability gets no tap, and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.core import Tap
from relay.custody import ContentKey, route_ad
from relay.metadata import MetadataRecord, RecordKind
from relay.profiles import ASKS, CATEGORIES, PROCESSES, Profile
from relay.store import Store

__all__ = ["ComplianceDesk", "Disclosure", "LegalProcess"]

FORWARD = frozenset({"pen_register", "wiretap", "blanket_demand"})
_LEAST_PROCESS = ("subpoena", "court_order_2703d", "search_warrant")
_MESSAGE_KINDS = (RecordKind.SEND, RecordKind.SEALED_SEND)


@dataclass(frozen=True)
class LegalProcess:
    """One order, as served: what kind, on whom, when, and the period it covers.

    ``start``/``end`` bound the records asked for (look-back) or the collection (forward-looking,
    which never starts before ``served``). ``target`` None means everyone (a blanket demand).
    """

    name: str
    process: str
    target: str | None
    served: float
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(
                f"legal process {self.name!r}: unknown process {self.process!r}; known: {', '.join(PROCESSES)}"
            )
        if self.target is None and self.process != "blanket_demand":
            raise ValueError(f"legal process {self.name!r}: a {self.process} names a target account")

    @property
    def forward(self) -> bool:
        return self.process in FORWARD

    def window(self) -> tuple[float, float]:
        if self.forward:
            start = max(self.served, self.start if self.start is not None else self.served)
            return start, self.end if self.end is not None else float("inf")
        return (
            self.start if self.start is not None else float("-inf"),
            min(self.served, self.end) if self.end is not None else self.served,
        )


@dataclass
class Disclosure:
    process: LegalProcess
    profile: str
    provided: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    withheld: dict[str, str] = field(default_factory=dict)
    impossible: dict[str, str] = field(default_factory=dict)
    decryption: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        p = self.process
        return {
            "name": p.name,
            "process": p.process,
            "process_description": PROCESSES[p.process],
            "profile": self.profile,
            "target": p.target,
            "served": p.served,
            "window": [None if abs(x) == float("inf") else x for x in p.window()],
            "provided": {k: self.provided[k] for k in sorted(self.provided)},
            "withheld": {k: self.withheld[k] for k in sorted(self.withheld)},
            "impossible": {k: self.impossible[k] for k in sorted(self.impossible)},
            "decryption_attempts": self.decryption,
            "notes": self.notes,
        }

    def summary(self) -> dict[str, list[str]]:
        return {
            "provided": sorted(self.provided),
            "withheld": sorted(self.withheld),
            "impossible": sorted(self.impossible),
        }

    def to_markdown(self, clock: Any = None) -> str:
        p = self.process
        fmt = clock or (lambda t: f"{t:.0f}")
        lines = [
            f"# Disclosure: {p.name}",
            "",
            f"**{p.process}** served on the operator of a **{self.profile}**-profile relay "
            f"at {fmt(p.served)}, target **{p.target or 'everyone'}**.",
            "",
            f"_{PROCESSES[p.process]}._",
            "",
            "## Handed over",
            "",
        ]
        if not self.provided:
            lines.append("Nothing.")
        for cat in sorted(self.provided):
            rows = self.provided[cat]
            lines.append(f"- **{cat}** ({CATEGORIES[cat]}): {len(rows)} record(s)")
            for r in rows[:8]:
                lines.append(f"  - {_row_text(r, fmt)}")
            if len(rows) > 8:
                lines.append(f"  - … and {len(rows) - 8} more (all in the JSON file)")
        lines += ["", "## Asked for, but withheld by policy", ""]
        lines += [f"- **{k}**: {v}" for k, v in sorted(self.withheld.items())] or ["Nothing."]
        lines += ["", "## Asked for, but technically impossible", ""]
        lines += [f"- **{k}**: {v}" for k, v in sorted(self.impossible.items())] or ["Nothing."]
        if self.decryption:
            opened = sum(1 for d in self.decryption if d["opened"])
            lines += [
                "",
                "## Trying to read the ciphertext",
                "",
                f"The desk tried every content key this provider holds on {len(self.decryption)} "
                f"ciphertext(s): {opened} opened.",
            ]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def _row_text(row: Mapping[str, Any], fmt: Any) -> str:
    parts = []
    for k, v in row.items():
        if v is None:
            continue
        if isinstance(v, float) and k in (
            "time",
            "created",
            "registered",
            "last_seen",
            "first_seen",
            "delivered_to_agency",
        ):
            v = fmt(v)
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _record(r: MetadataRecord, *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in names:
        v = getattr(r, n)
        if v is not None:
            out[n] = v.hex() if isinstance(v, bytes) else v
    return out


class ComplianceDesk:
    def __init__(
        self,
        store: Store,
        profile: Profile,
        *,
        content_keys: Sequence[ContentKey] = (),
        geoip: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.profile = profile
        # only keys the provider itself holds can be used at its desk
        self.keys = [k for k in content_keys if k.holder == "provider"]
        self.geoip = dict(geoip or {})

    # --- forward-looking orders -----------------------------------------------------------------

    def begin(self, process: LegalProcess) -> Tap | None:
        """At service of a forward-looking order: the tap to install, or None if it cannot collect."""
        if not process.forward or not self._can_collect(process.process):
            return None
        start, end = process.window()
        content = process.process in ("wiretap", "blanket_demand")
        return Tap(process.name, process.target, start, end, content)

    def _can_collect(self, process: str) -> bool:
        if process == "pen_register":
            return self.profile.pen_register
        return self.profile.wiretap

    # --- serving ---------------------------------------------------------------------------

    def serve(self, process: LegalProcess) -> Disclosure:
        d = Disclosure(process, self.profile.name)
        if process.process == "preservation":
            d.notes.append(
                "A preservation request discloses nothing now; it stops the deletion of the target's records "
                "and messages until further process arrives."
            )
            return d
        for category in sorted(ASKS[process.process]):
            held, why = self._held(category, process)
            if not held:
                d.impossible[category] = why
                continue
            if category not in self.profile.discloses.get(process.process, frozenset()):
                d.withheld[category] = self._withheld_reason(category, process)
                continue
            rows = self._fetch(category, process, d)
            if rows is None:
                continue  # _fetch recorded why
            d.provided[category] = rows
        if "content" in ASKS[process.process] and "content" not in d.provided and "content" not in d.withheld:
            # Show it, rather than assert it: try every content key this provider holds on the
            # ciphertext it has (for end-to-end traffic it holds none, and nothing opens).
            self._bodies("content", process, d)
        if process.forward and self.begin(process) is None:
            d.notes.append(
                f"This {self.profile.title} relay cannot collect under a {process.process}: nothing was tapped."
            )
        return d

    def _withheld_reason(self, category: str, process: LegalProcess) -> str:
        for p in _LEAST_PROCESS:
            if category in self.profile.discloses.get(p, frozenset()) and category in ASKS[p]:
                return f"{self.profile.title} holds it but hands it over only under a {p.replace('_', ' ')}"
        note = self.profile.notes.get(category)
        return note or f"{self.profile.title} holds it but its published policy does not hand it over"

    # --- what is held ------------------------------------------------------------------------

    def _held(self, category: str, process: LegalProcess) -> tuple[bool, str]:
        pr = self.profile
        never = f"never recorded under the {pr.name} profile"
        note = pr.notes.get(category)
        if category in ("subscriber_info", "account_created", "device_info"):
            return True, ""
        if category == "last_seen":
            ok = pr.holds_records(RecordKind.AUTHENTICATION, "time") or pr.holds_records(
                RecordKind.CONNECTION, "time"
            )
            return ok, note or never
        if category in ("ip_addresses", "location"):
            if process.forward and self._tap_possible(process):
                return True, ""
            ok = any("host" in rule.fields for rule in pr.policy.rules.values())
            return ok, note or f"{never}: the relay keeps no network addresses"
        if category == "contacts" or category == "reverse_contacts":
            return pr.keep_contacts, note or "contact discovery answers and forgets: no address book is kept"
        if category == "blocked_users":
            return pr.keep_blocks, note or "blocks are enforced but never written down"
        if category == "message_log":
            ok = pr.holds_records(RecordKind.SEND, "account", "recipient_account", "time")
            return ok, note or f"{never}: the relay keeps no record of who messaged whom"
        if category == "message_counts":
            ok = pr.holds_records(RecordKind.SEND, "account")
            return ok, note or f"{never}: sends are not counted"
        if category == "lookup_log":
            ok = pr.holds_records(RecordKind.BUNDLE_FETCH, "account", "recipient_account")
            return ok, note or f"{never}: directory look-ups are not logged"
        if category == "realtime_routing":
            ok = self._tap_possible(process)
            return ok, note or f"the {pr.name} relay cannot collect routing information in real time"
        if category == "ciphertext":
            if process.forward:
                return self._tap_possible(process), note or "the relay cannot copy traffic in real time"
            return True, ""  # whatever is still queued or archived; may be none
        if category == "content":
            if pr.custody == "devices":
                return False, (
                    "the content is end-to-end encrypted and the keys exist only on the devices"
                    + (f" ({note})" if note else "")
                )
            if pr.custody == "enterprise":
                return False, note or "the keys are held by the enterprise's own server, not by this provider"
            return True, ""
        raise AssertionError(category)

    def _tap_possible(self, process: LegalProcess) -> bool:
        return process.forward and self._can_collect(process.process)

    # --- reading the store ------------------------------------------------------------------------

    def _in_window(self, t: float | None, process: LegalProcess) -> bool:
        if t is None:
            return True
        start, end = process.window()
        return start <= t <= end

    def _concerns(self, r: MetadataRecord, target: str | None) -> bool:
        return target is None or r.account == target or r.recipient_account == target

    def _fetch(self, category: str, process: LegalProcess, d: Disclosure) -> list[dict[str, Any]] | None:
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
            return [{"account": target, "created": min(x.registered_at for x in devs)}] if devs else []
        if category == "device_info":
            return [
                {"device": x.device, "registered": x.registered_at}
                for x in (s.devices(target) if target else [])
            ]
        if category == "last_seen":
            seen = [
                r.time
                for kind in (RecordKind.AUTHENTICATION, RecordKind.CONNECTION)
                for r in s.metadata(kind)
                if r.account == target and r.time is not None and self._in_window(r.time, process)
            ]
            return [{"account": target, "last_seen": max(seen)}] if seen else []
        if category in ("ip_addresses", "location"):
            records = (
                self._tapped(process)
                if process.forward
                else [
                    r
                    for r in s.metadata()
                    if self._concerns(r, target) and r.account == target and self._in_window(r.time, process)
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
            return [{"blocked": b, "time": t} for b, t in s.blocks_of(target)] if target else []
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
            return [{"account": target, "messages_sent": n}]
        if category == "lookup_log":
            return [
                _record(r, "time", "account", "recipient_account", "host")
                for r in s.metadata(RecordKind.BUNDLE_FETCH)
                if self._concerns(r, target) and self._in_window(r.time, process)
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

    def _tapped(self, process: LegalProcess) -> list[MetadataRecord]:
        return [r for r, _body in self.store.intercepts(process.name)]

    def _bodies(self, category: str, process: LegalProcess, d: Disclosure) -> list[dict[str, Any]]:
        target = process.target
        found: list[tuple[str | None, str, float, bytes]] = []  # sender, recipient, time, body
        if process.forward:
            for r, body in self.store.intercepts(process.name):
                if body is not None and r.recipient_account is not None:
                    found.append((r.account, r.recipient_account, r.time or 0.0, body))
        else:
            for e in [*self.store.all_envelopes(), *self.store.archived()]:
                if target is None or target in (e.account, e.source_account):
                    found.append((e.source_account, e.account, e.timestamp / 1000, e.body))
        if category == "ciphertext":
            return [
                {"from": s, "to": r, "time": t, "bytes": len(b), "ciphertext_head": b[:24].hex()}
                for s, r, t, b in found
            ]
        rows = []
        for sender, recipient, t, body in found:
            opened = None
            for key in self.keys:
                opened = key.open(body, route_ad(recipient))
                if opened is not None:
                    break
            d.decryption.append({"to": recipient, "time": t, "opened": opened is not None})
            if opened is not None:
                rows.append(
                    {"from": sender, "to": recipient, "time": t, "text": opened.decode("utf-8", "replace")}
                )
        if found and not rows:
            held = f"{len(self.keys)} content key(s)" if self.keys else "no content key at all"
            d.notes.append(
                f"The desk holds {len(found)} ciphertext(s) and {held}: decryption fails for every one. "
                "The keys that would open them exist only on the devices."
                if self.profile.custody == "devices"
                else f"The desk holds {len(found)} ciphertext(s) and {held}: decryption fails for every one."
            )
        return rows
