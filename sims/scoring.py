"""Scoring a disclosure against ground truth: the simulator knows everything the provider does not.

For the target of an order, over the order's window, the truth is: whom they exchanged messages
with, when each message went, where their devices were (the region of each device's network
address), and what the messages said. A disclosure is scored by the share of each it reveals:

- ``contacts``: counterparts named in the disclosure's message logs, real-time routing and address
  books, out of the people the target actually messaged. Directory look-ups are not contacts: a
  look-up "doesn't prove that any communication actually took place" (Apple's iMessage FAQ for law
  enforcement, published by The Intercept, 2016-09-28); they are counted apart, as ``looked_up``;
- ``message_times``: true message times matched by a disclosed record within a second;
- ``locations``: true device regions that the disclosed addresses place the target in;
- ``plaintext``: how many of the target's messages appear, word for word, in the disclosure;
- ``routing_rows``: the disclosed message-log and routing rows, split by what they really were. A
  phone sends a delivery receipt for every message it receives (as Signal's do), and a receipt is
  an ordinary (under sealed sender, sealed) envelope: the provider cannot tell it from a message,
  so its count of "messages" includes the receipts. The score says how many of its rows were
  messages someone wrote and how many were receipts or cover traffic. Where an account has linked
  devices, its phone sends a sync copy of each message it writes to its own other devices (as
  Signal's, WhatsApp's and iMessage's clients do): a send to oneself, neither a contact nor a message
  to anyone, counted apart as ``sync_copies`` (only in runs that have any).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GroundTruth", "TrueControl", "TrueMessage", "score"]

_ROUTING_CATEGORIES = ("message_log", "realtime_routing")
# TrueControl.kind → its count in a score's routing_rows
_ROW_KINDS = {
    "delivery receipt": "delivery_receipts",
    "read receipt": "read_receipts",
    "cover": "covers",
    "sync copy": "sync_copies",
}


@dataclass(frozen=True, slots=True)  # one per message: a run's ground truth holds a million of them
class TrueMessage:
    time: float  # relay clock seconds
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class TrueControl:
    """An envelope the relay accepted that nobody wrote: a phone's delivery or read receipt, cover
    traffic, or a sync copy of a message to the sender's own other devices (sender = recipient). The
    simulator knows which envelopes these are; a provider does not (under sealed sender a receipt is
    an ordinary sealed envelope), so whatever it counts as messages includes them."""

    time: float  # relay clock seconds
    sender: str
    recipient: str
    kind: str  # "delivery receipt", "read receipt", "cover" or "sync copy"


@dataclass(frozen=True)
class GroundTruth:
    # 1:1 messages people wrote that the relay accepted, in message order (a simulation's are made
    # when read: sims.world.simulation.TrueMessages)
    messages: Sequence[TrueMessage]
    regions: Mapping[str, frozenset[str]]  # person → regions of their devices
    people: frozenset[str]
    control: tuple[TrueControl, ...] = ()  # receipts and cover traffic the relay accepted


def _share(found: int, total: int) -> float | None:
    return None if total == 0 else round(found / total, 4)


def score(disclosure: Mapping[str, Any], truth: GroundTruth) -> dict[str, Any]:
    """Score one disclosure (the JSON form of ``relay.compliance.Disclosure``)."""
    target = disclosure.get("target")
    start, end = disclosure["window"]
    lo = float("-inf") if start is None else start
    hi = float("inf") if end is None else end
    mine = [
        m
        for m in truth.messages
        if lo <= m.time <= hi and (target is None or target in (m.sender, m.recipient))
    ]
    provided: Mapping[str, list[dict[str, Any]]] = disclosure["provided"]

    # contacts
    true_contacts = {m.recipient if m.sender == target else m.sender for m in mine} if target else set()
    named: set[str] = set()
    for cat in _ROUTING_CATEGORIES:
        for row in provided.get(cat, []):
            named.update(
                v for k, v in row.items() if k in ("account", "recipient_account") and isinstance(v, str)
            )
    for row in provided.get("contacts", []):
        named.add(row.get("contact", ""))
    for row in provided.get("reverse_contacts", []):
        named.add(row.get("account", ""))
    named.discard(target or "")
    revealed_contacts = true_contacts & named
    # look-ups: whose keys the target fetched, or who fetched the target's (not evidence of a message)
    looked_up = {
        v
        for row in provided.get("lookup_log", [])
        for k, v in row.items()
        if k in ("account", "recipient_account") and isinstance(v, str) and v != target
    }

    # message times
    times = sorted(
        row["time"]
        for cat in ("message_log", "realtime_routing")
        for row in provided.get(cat, [])
        if isinstance(row.get("time"), int | float)
    )
    matched = sum(1 for m in mine if _near(times, m.time))

    # what the routing rows really were: messages people wrote, or receipts and cover traffic
    control = [
        c
        for c in truth.control
        if lo <= c.time <= hi and (target is None or target in (c.sender, c.recipient))
    ]
    rows = _routing_rows(provided, mine, control)

    # locations
    true_regions = set(truth.regions.get(target, frozenset())) if target else set()
    shown_regions = {row.get("region") for row in provided.get("location", [])}
    revealed_regions = true_regions & {r for r in shown_regions if isinstance(r, str)}

    # plaintext
    blob = json.dumps(provided, ensure_ascii=False)
    opened = [m for m in mine if m.text and m.text in blob]

    return {
        "target": target,
        "messages_in_window": len(mine),
        "contacts": {
            "true": len(true_contacts),
            "revealed": len(revealed_contacts),
            "share": _share(len(revealed_contacts), len(true_contacts)),
        },
        "looked_up": {"accounts": len(looked_up), "of_true_contacts": len(looked_up & true_contacts)},
        "message_times": {"true": len(mine), "revealed": matched, "share": _share(matched, len(mine))},
        "locations": {
            "true": sorted(true_regions),
            "revealed": sorted(revealed_regions),
            "share": _share(len(revealed_regions), len(true_regions)),
        },
        "plaintext": {"revealed": len(opened), "any": bool(opened)},
        "routing_rows": rows,
    }


def _routing_rows(
    provided: Mapping[str, list[dict[str, Any]]], mine: list[TrueMessage], control: list[TrueControl]
) -> dict[str, Any]:
    """Each disclosed message-log or routing row matched to the true envelope it records (the same
    recipient and sender, if the row names one, within a second): a message, a receipt or cover
    traffic, or neither."""
    # by recipient: a sealed-sender row names no sender, and is matched on recipient and time alone
    by_recipient: dict[str, list[tuple[float, str, str]]] = {}
    for m in mine:
        by_recipient.setdefault(m.recipient, []).append((m.time, "messages", m.sender))
    for c in control:
        by_recipient.setdefault(c.recipient, []).append(
            (c.time, _ROW_KINDS.get(c.kind, "unmatched"), c.sender)
        )
    counts = {"messages": 0, "delivery_receipts": 0, "read_receipts": 0, "covers": 0, "unmatched": 0}
    syncs = sum(1 for c in control if c.kind == "sync copy")
    if syncs:  # an account with linked devices: its sync copies, counted apart
        counts["sync_copies"] = 0
    total = 0
    for cat in _ROUTING_CATEGORIES:
        for row in provided.get(cat, []):
            total += 1
            t, sender, recipient = row.get("time"), row.get("account"), row.get("recipient_account")
            what = "unmatched"
            if isinstance(t, int | float) and isinstance(recipient, str):
                near = [
                    (abs(ct - t), kind)
                    for ct, kind, s in by_recipient.get(recipient, [])
                    if (sender is None or s == sender) and abs(ct - t) <= 1.0
                ]
                if near:
                    what = min(near)[1]
            counts[what] = counts.get(what, 0) + 1
    receipts = counts["delivery_receipts"] + counts["read_receipts"]
    return {
        "total": total,
        **counts,
        "true_messages": len(mine),
        "true_receipts": sum(1 for c in control if c.kind.endswith("receipt")),
        **({"true_sync_copies": syncs} if syncs else {}),
        # the provider's own count of "messages" is every row; this much of it was not written by anyone
        "not_messages_share": _share(receipts + counts["covers"] + counts.get("sync_copies", 0), total),
    }


def _near(sorted_times: list[float], t: float, tolerance: float = 1.0) -> bool:
    import bisect

    i = bisect.bisect_left(sorted_times, t - tolerance)
    return i < len(sorted_times) and sorted_times[i] <= t + tolerance
