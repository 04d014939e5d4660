"""What envelope sizes give away, with every word encrypted.

- **First contact.** The first messages of a new session carry the PQXDH header: the sender's
  identity and ephemeral keys and an ML-KEM-1024 ciphertext of 1,568 bytes (FIPS 203), so they
  stand more than a kilobyte above everything else. Split at the widest gap in the sizes seen
  (when it is at least :data:`MIN_GAP` bytes), every envelope above it marks someone writing to
  that device for the first time — or, until they get a reply, again. A first contact from an
  account to its own other device (a phone's first sync copy to a newly linked desktop) is a new
  session, not a new correspondent: it is counted apart (:attr:`FirstContact.own_devices`) where
  the record names the sender or the attribution found it.
- **Length classes.** The rest differ only by the length of what is inside, in steps of the
  padding block: the steps between the sizes seen are the block, and each class is a range of
  plaintext lengths.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relaysim.sims.analysis.view import ProviderView

__all__ = ["FirstContact", "SizeReport", "size_channels"]

MIN_GAP = 1000  # bytes: below the ML-KEM-1024 ciphertext a PQXDH first message carries (1,568)


@dataclass(frozen=True, slots=True)
class FirstContact:
    time: float | None
    recipient: str | None
    recipient_device: int | None
    sender: str | None  # named by the record, or attributed; None if unknown
    size: int
    envelope_id: str | None

    @property
    def own_devices(self) -> bool:
        """From an account to one of its own devices: a sync copy opening a session, not someone new."""
        return self.sender is not None and self.sender == self.recipient

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "recipient": self.recipient,
            "recipient_device": self.recipient_device,
            "sender": self.sender,
            "size": self.size,
            "envelope_id": self.envelope_id,
            "own_devices": self.own_devices,
        }


@dataclass(frozen=True)
class SizeReport:
    envelopes: int
    threshold: float | None  # sizes above it are first contacts; None: no such split in this traffic
    first_contacts: tuple[FirstContact, ...]
    classes: tuple[tuple[int, int], ...]  # (size, envelopes) of the others
    step: int | None  # the padding block the other sizes move in

    def new_correspondents(self) -> dict[str, int]:
        """Per recipient, how many first-contact envelopes reached them from someone else (an
        account's first sync copies to its own devices are not new correspondents)."""
        out: dict[str, int] = {}
        for f in self.first_contacts:
            if f.recipient is not None and not f.own_devices:
                out[f.recipient] = out.get(f.recipient, 0) + 1
        return dict(sorted(out.items(), key=lambda x: (-x[1], x[0])))

    def to_json(self) -> dict[str, Any]:
        return {
            "envelopes_with_size": self.envelopes,
            "first_contact_threshold_bytes": self.threshold,
            "first_contacts": len(self.first_contacts),
            "first_contacts_to_own_devices": sum(1 for f in self.first_contacts if f.own_devices),
            "first_contact_envelopes": [f.to_json() for f in self.first_contacts],
            "first_contacts_by_recipient": self.new_correspondents(),
            "length_classes": [{"size": s, "envelopes": n} for s, n in self.classes],
            "padding_step_bytes": self.step,
        }


def size_channels(view: ProviderView, attributed: Mapping[str, str] | None = None) -> SizeReport:
    """``attributed``: envelope id → inferred sender of sealed envelopes, to name senders of first contacts."""
    msgs = [o for o in view.messages() if o.size is not None]
    sizes = sorted({o.size for o in msgs if o.size is not None})
    threshold: float | None = None
    if len(sizes) > 1:
        gap, at = max((b - a, i) for i, (a, b) in enumerate(itertools.pairwise(sizes)))
        if gap >= MIN_GAP:
            threshold = (sizes[at] + sizes[at + 1]) / 2
    attributed = attributed or {}
    first: list[FirstContact] = []
    counts: dict[int, int] = {}
    for o in msgs:
        assert o.size is not None
        if threshold is not None and o.size > threshold:
            sender = o.account or (attributed.get(o.envelope_id) if o.envelope_id else None)
            first.append(
                FirstContact(o.time, o.recipient_account, o.recipient_device, sender, o.size, o.envelope_id)
            )
        else:
            counts[o.size] = counts.get(o.size, 0) + 1
    classes = tuple(sorted(counts.items()))
    return SizeReport(len(msgs), threshold, tuple(first), classes, _step(s for s, _ in classes))


def _step(sizes: Iterable[int]) -> int | None:
    xs = sorted(sizes)
    g = 0
    for a, b in itertools.pairwise(xs):
        g = math.gcd(g, b - a)
    return g or None
