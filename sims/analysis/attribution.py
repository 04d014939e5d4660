"""Who sent each sealed-sender message, from what the relay saw of the network.

Sealed sender hides the sender inside the envelope, and the envelope arrives on a connection
that never authenticates. But that connection comes from a network address, and the same phone
logs in, from the same address, on the connection it authenticates on. Joining the two:

- ``connection``: the sealed send came over a connection that authenticated (the relay knows);
- ``address``: one account was seen on the send's address near that time (within ``window``
  seconds): an authentication, a login, any record naming both an account and that address;
  several accounts there (a shared address, carrier NAT) make it ``ambiguous`` — the nearest in
  time is named, with how many there were;
- ``sync_copy``: where the sender has linked devices, its phone sends a copy of each message it
  writes to its own other devices (a sync copy) as soon as the relay has taken the message, and
  sends it authenticated, as Signal's clients do (Signal-Android's SignalServiceMessageSender sends
  the SentTranscript to its own address without unidentified access): a send from an account to
  itself, naming it, within ``sync_window`` seconds after the sealed send. Used when exactly one
  account sent itself something in that window, and the address alone did not name one account;
- ``prekey_fetch``: an authenticated fetch of the recipient's prekey bundle shortly before
  (``fetch_window`` seconds) — the step before a first message.

Address evidence wins over a sync copy, and both over a prekey fetch; all are inferences, not records.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relaysim.sims.analysis.view import Obs, ProviderView

__all__ = ["Attribution", "attribute_sealed"]

DEFAULT_WINDOW = 6 * 3600.0
FETCH_WINDOW = 10.0
SYNC_WINDOW = 2.0  # seconds from a sealed send to its sender's sync copy (one round trip, in practice)


@dataclass(frozen=True, slots=True)
class Attribution:
    time: float | None
    recipient: str | None
    recipient_device: int | None
    envelope_id: str | None
    host: str | None
    sender: str | None  # None: not attributed
    sender_device: int | None
    evidence: str  # connection | address | sync_copy | address_other_time | ambiguous | prekey_fetch | none
    candidates: int  # accounts the evidence allowed

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "recipient": self.recipient,
            "recipient_device": self.recipient_device,
            "envelope_id": self.envelope_id,
            "host": self.host,
            "sender": self.sender,
            "sender_device": self.sender_device,
            "evidence": self.evidence,
            "candidates": self.candidates,
        }


class _Sightings:
    """Per address, time-sorted (time, account, device) of records that name an account there."""

    def __init__(self, observations: Sequence[Obs]) -> None:
        by_host: dict[str, list[tuple[float, str, int]]] = {}
        self.by_connection: dict[int, tuple[str, int | None]] = {}
        for o in observations:
            if o.account is None:
                continue
            if o.connection is not None and o.kind == "authentication":
                self.by_connection[o.connection] = (o.account, o.device)
            if o.host is not None:
                by_host.setdefault(o.host, []).append(
                    (
                        o.time if o.time is not None else 0.0,
                        o.account,
                        o.device if o.device is not None else -1,
                    )
                )
        self.hosts = {h: sorted(v) for h, v in by_host.items()}
        self.times = {h: [x[0] for x in v] for h, v in self.hosts.items()}

    def near(self, host: str, t: float, window: float) -> list[tuple[float, str, int]]:
        rows = self.hosts.get(host)
        if not rows:
            return []
        times = self.times[host]
        lo = bisect.bisect_left(times, t - window)
        hi = bisect.bisect_right(times, t + window)
        return rows[lo:hi]


def _sync_copies(observations: Sequence[Obs]) -> tuple[list[float], list[tuple[float, str, int | None]]]:
    """Sends from an account to itself (its phone's sync copies, one record per device it went to,
    taken once), time-sorted: the times, and (time, account, device)."""
    rows = sorted(
        {
            (o.time, o.account, o.device)
            for o in observations
            if o.kind == "send"
            and o.account is not None
            and o.account == o.recipient_account
            and o.time is not None
        },
        key=lambda x: (x[0], x[1], -1 if x[2] is None else x[2]),
    )
    return [r[0] for r in rows], rows


def attribute_sealed(
    view: ProviderView,
    *,
    window: float = DEFAULT_WINDOW,
    fetch_window: float = FETCH_WINDOW,
    sync_window: float = SYNC_WINDOW,
) -> list[Attribution]:
    """An :class:`Attribution` for every sealed-sender message record in ``view``."""
    obs = view.observations
    sightings = _Sightings(obs)
    fetches: dict[str, list[tuple[float, str, int | None]]] = {}
    for o in obs:
        if o.kind == "bundle_fetch" and o.account and o.recipient_account and o.time is not None:
            if o.account == o.recipient_account:
                continue  # a phone fetching its own account's devices (for its sync copies) writes to no one
            fetches.setdefault(o.recipient_account, []).append((o.time, o.account, o.device))
    for v in fetches.values():
        v.sort(key=lambda x: x[0])
    sync_times, syncs = _sync_copies(obs)
    out = []
    for o in view.messages():
        if not o.sealed:
            continue
        t = o.time if o.time is not None else 0.0
        sender: str | None = None
        device: int | None = None
        evidence, candidates = "none", 0
        if o.connection is not None and o.connection in sightings.by_connection:
            sender, device = sightings.by_connection[o.connection]
            evidence, candidates = "connection", 1
        elif o.host is not None and (near := sightings.near(o.host, t, window)):
            accounts = {a for _, a, _ in near}
            best = min(near, key=lambda x: (abs(x[0] - t), x[1]))
            sender, device = best[1], (best[2] if best[2] >= 0 else None)
            evidence = "address" if len(accounts) == 1 else "ambiguous"
            candidates = len(accounts)
        elif o.host is not None and (anytime := sightings.near(o.host, t, float("inf"))):
            accounts = {a for _, a, _ in anytime}
            best = min(anytime, key=lambda x: (abs(x[0] - t), x[1]))
            sender, device = best[1], (best[2] if best[2] >= 0 else None)
            evidence = "address_other_time" if len(accounts) == 1 else "ambiguous"
            candidates = len(accounts)
        if evidence not in ("connection", "address") and syncs:
            lo, hi = bisect.bisect_left(sync_times, t), bisect.bisect_right(sync_times, t + sync_window)
            after = {(a, d) for _, a, d in syncs[lo:hi] if a != o.recipient_account}
            if len({a for a, _ in after}) == 1:
                (sender, device), *_ = sorted(after, key=lambda x: -1 if x[1] is None else x[1])
                evidence, candidates = "sync_copy", 1
        if evidence == "none" and o.recipient_account in fetches:
            before = [f for f in fetches[o.recipient_account] if t - fetch_window <= f[0] <= t]
            if before:
                accounts = {a for _, a, _ in before}
                _, sender, device = before[-1]
                evidence, candidates = "prekey_fetch", len(accounts)
        out.append(
            Attribution(
                o.time,
                o.recipient_account,
                o.recipient_device,
                o.envelope_id,
                o.host,
                sender,
                device,
                evidence,
                candidates,
            )
        )
    return out


def summary(attributions: Sequence[Attribution]) -> dict[str, Any]:
    by: dict[str, int] = {}
    for a in attributions:
        by[a.evidence] = by.get(a.evidence, 0) + 1
    return {
        "sealed_records": len(attributions),
        "attributed": sum(1 for a in attributions if a.sender is not None),
        "by_evidence": dict(sorted(by.items())),
    }
