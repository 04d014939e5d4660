"""Detecting a ghost device: what each setting of the devices' checks finds, and when.

The ghost intervention (``sims.access.ghost``) adds a device to a target's account. This module is
its separate detection step; it reports, per setting, whether and when the interception is found:

* **no check**: nothing is ever found; the contacts' phones show a device-list notice nobody acts on.
* **safety numbers**: a contact who pinned the ghost and later compares safety numbers with the
  target in person (a ``verify_safety_number`` event) sees a number that matches none of the
  target's phones (``sims.world.simulation``).
* **key transparency** (``[defences] key_transparency = true``): the relay logs every identity key
  it serves (``relay/transparency.py``, RFC 9162). Every contact that is handed the ghost's key
  verifies its inclusion against a signed head and gossips that head to a witness; the target's
  phones audit their own account every ``AUDIT_INTERVAL`` (``clients/transparency.py``). Either the
  ghost is in the log the target reads, and the audit finds a device the target never added, or
  the compelled provider shows the target a log without it (``fork = true`` on the demand): then
  the witness holds two signed heads no single append-only log explains, or the target cannot be
  shown any log that matches the head its contacts were given.

The checks run on the real log, real proofs and real signatures; only their timing (when a phone
audits, when heads reach the witness) is the simulation's: a phone audits at the first multiple
of ``AUDIT_INTERVAL`` after the ghost is added, and its contacts' heads reach the witness when
they fetch the ghost's keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from relaysim.clients import transparency as kt
from relaysim.relay import wire
from relaysim.relay.core import RelayCore
from relaysim.relay.transparency import MerkleLog, SignedTreeHead, TreeHeadSigner
from relaysim.sims.scenario import Scenario, VerifySafetyNumber

__all__ = ["AUDIT_INTERVAL", "KeyTransparencyWatch", "detection_by_setting", "swap_detection_by_setting"]

AUDIT_INTERVAL = 3600.0  # seconds between a phone's audits of its own account (a simulation choice)


def _head(h: SignedTreeHead) -> kt.TreeHead:
    return kt.TreeHead(h.tree_size, h.timestamp, h.root_hash, h.signature)


@dataclass
class KeyTransparencyWatch:
    """The devices' checks on the relay's key log around one ghost, and what they found."""

    relay: RelayCore
    target: str
    ghost_device: int
    ghost_key: bytes
    target_devices: dict[int, bytes]  # the target's own phones: device → identity key
    fork: bool
    witness: kt.Witness = field(init=False)
    inclusion_checks: list[dict[str, Any]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    forks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server_public = self.relay.identity.server_certificate.public_key
        self._signer = TreeHeadSigner(self.relay.identity.server_private)  # the provider's own key
        self.witness = kt.Witness(self.server_public, self._consistency)
        self._ghost_leaf = wire.kt_leaf(self.target, self.ghost_device, self.ghost_key)

    # -- the logs the provider shows ---------------------------------------------------------

    def _shown_to_target(self) -> MerkleLog:
        """The log as the provider shows it to the target: without the ghost when it forks."""
        leaves = self.relay.key_log.leaves()
        return MerkleLog([x for x in leaves if x != self._ghost_leaf] if self.fork else leaves)

    def _consistency(self, first: int, second: int) -> list[bytes]:
        """The provider's answer to a consistency question: from whichever of its logs can answer."""
        for log in (self.relay.key_log, self._shown_to_target()):
            if second <= len(log):
                return log.consistency_proof(first, second)
        return []

    # -- what the devices do -----------------------------------------------------------------

    def contact_checked(self, t: float, device: str, head: kt.TreeHead, included: bool) -> None:
        """``device`` was handed the ghost's key and checked its inclusion (clients.agent, under the
        signed ``head`` it was shown); it gossips that head to the witness."""
        self.inclusion_checks.append(
            {"t": t, "device": device, "tree_size": head.tree_size, "included": included}
        )
        self._gossip(t, device, head)

    def target_audit(self, t: float, device: str) -> dict[str, Any]:
        """One of the target's phones audits its account, in the log the provider shows it."""
        shown = self._shown_to_target()
        now = int(self.relay.clock())
        own_head = self._signer.sign(shown, now)
        self._gossip(t, device, _head(own_head))
        expected = {(d, k) for d, k in self.target_devices.items()}
        # Also the devices' earlier keys: the log keeps every key an account ever had.
        for leaf in shown.leaves():
            account, d, k = wire.kt_leaf_decode(leaf)
            if account == self.target and d in self.target_devices:
                expected.add((d, k))
        own = kt.audit(self.target, expected, shown.leaves(), _head(own_head), self.server_public)
        # The largest head the witness knows (gossip): the provider must show a log that matches it.
        latest = max((h for _, h in self.witness.heads), key=lambda h: h.tree_size)
        against = kt.audit(
            self.target, expected, shown.leaves()[: latest.tree_size], latest, self.server_public
        )
        row = {
            "t": t,
            "device": device,
            "tree_size": own_head.tree_size,
            "ghost_in_own_log": any(d == self.ghost_device for d, _ in own.unexpected),
            "unexpected": [f"{self.target}/{d}" for d, _ in own.unexpected],
            "matches_gossiped_head": against.log_matches_head,
            "gossiped_head_size": latest.tree_size,
        }
        self.audits.append(row)
        return row

    def _gossip(self, t: float, device: str, head: kt.TreeHead) -> None:
        for f in self.witness.observe(device, head):
            self.forks.append({"t": t, "seen_by": list(f.seen_by), "why": f.why})

    # -- the result --------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        found = [a for a in self.audits if a["ghost_in_own_log"]]
        mismatch = [a for a in self.audits if not a["matches_gossiped_head"]]
        firsts = [
            (found[0]["t"], f"{found[0]['device']}'s own audit found {self.target}/{self.ghost_device}")
            if found
            else None,
            (self.forks[0]["t"], f"the witness found a fork: {self.forks[0]['why']}") if self.forks else None,
            (
                mismatch[0]["t"],
                f"{mismatch[0]['device']} could not be shown a log matching the head its contacts were given",
            )
            if mismatch
            else None,
        ]
        hits = sorted(x for x in firsts if x is not None)
        return {
            "detected": bool(hits),
            "detected_at": hits[0][0] if hits else None,
            "how": hits[0][1] if hits else "not detected",
            "fork": self.fork,
            "audit_interval": AUDIT_INTERVAL,
            "inclusion_checks": self.inclusion_checks,
            "audits": self.audits,
            "forks": self.forks,
        }


def next_audit(added_at: float) -> float:
    """When the target's phones next audit after ``added_at``: the next multiple of the interval."""
    return (math.floor(added_at / AUDIT_INTERVAL) + 1) * AUDIT_INTERVAL


def detection_by_setting(
    scenario: Scenario,
    target: str,
    noticed: list[dict[str, Any]],
    watch: KeyTransparencyWatch | None,
) -> dict[str, dict[str, Any]]:
    """Per setting of the devices' checks: was the ghost detected, when, and how."""
    first_pinned: dict[str, float] = {}
    for c in noticed:
        first_pinned.setdefault(c["device"].split("/")[0], c["t"])
    compared = sorted(
        (e.at, e.who)
        for e in scenario.events
        if isinstance(e, VerifySafetyNumber) and e.whom == target and e.who in first_pinned
        if e.at >= first_pinned[e.who]
    )
    out: dict[str, dict[str, Any]] = {
        "no_check": {
            "detected": False,
            "detected_at": None,
            "how": "not detected: the contacts' phones show a device-list notice, and nothing checks it",
        },
        "safety_numbers": {
            "detected": bool(compared),
            "detected_at": compared[0][0] if compared else None,
            "how": f"{compared[0][1]} compared safety numbers with {target}: the ghost's number matches none of "
            f"{target}'s phones"
            if compared
            else "not detected: no contact who holds the ghost's key compares safety numbers with the target",
        },
    }
    if watch is not None:
        out["key_transparency"] = watch.result()
    else:
        out["key_transparency"] = {
            "detected": None,
            "detected_at": None,
            "how": "not simulated: [defences] key_transparency is off",
        }
    return out


def check_presented_key(relay: RelayCore, account: str, device: int, key: bytes) -> dict[str, Any]:
    """A phone shown a new identity key for ``account``/``device`` asks the log for its proof.

    The relay signs the head; a key it never logged has no inclusion proof it can give, and a
    proof it made up does not verify (clients.transparency.verify_inclusion)."""
    head = relay.key_log_head()
    found = relay.key_log_inclusion(account, device, key, head.tree_size)
    leaf = wire.kt_leaf(account, device, key)
    included = found is not None and kt.verify_inclusion(
        leaf, found[0], head.tree_size, found[1], head.root_hash
    )
    return {"tree_size": head.tree_size, "included": included}


def swap_detection_by_setting(
    scenario: Scenario,
    victim: str,
    contact: str,
    swapped_at: float,
    notices: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per setting of the contact's checks: was the swapped identity detected, when, and how."""
    first = min((n["t"] for n in notices), default=None)
    compared = sorted(
        e.at
        for e in scenario.events
        if isinstance(e, VerifySafetyNumber)
        and {e.who, e.whom} == {victim, contact}
        and first is not None
        and e.at >= first
    )
    out: dict[str, dict[str, Any]] = {
        "no_check": {
            "detected": False,
            "detected_at": None,
            "how": "not detected: the phone shows a 'safety number changed' notice (if it noticed), and nothing checks it",
        },
        "safety_numbers": {
            "detected": bool(compared),
            "detected_at": compared[0] if compared else None,
            "how": f"{contact} and {victim} compared safety numbers: the attacker's key matches none of {victim}'s phones"
            if compared
            else "not detected: no safety-number comparison after the new key arrived",
        },
    }
    if not scenario.defences.key_transparency:
        out["key_transparency"] = {
            "detected": None,
            "detected_at": None,
            "how": "not simulated: [defences] key_transparency is off",
        }
        return out
    checked = [n for n in notices if "key_log" in n]
    caught = [n for n in checked if not n["key_log"]["included"]]
    out["key_transparency"] = {
        "detected": bool(caught),
        "detected_at": caught[0]["t"] if caught else None,
        "how": f"{caught[0]['device']} asked the key log for the new key of {victim}/1: it is not there "
        "(the relay never logged it, and cannot prove it did)"
        if caught
        else "not detected: no phone was shown the attacker's key",
        "checks": [{"t": n["t"], "device": n["device"], **n["key_log"]} for n in checked],
    }
    return out
