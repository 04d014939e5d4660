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
  the compelled provider shows the target a log without it (``fork = true`` on the demand; the relay
  then answers the target's account from a split view, ``RelayCore.split_key_log``): then the witness
  holds two signed heads no single append-only log explains, or the target cannot be shown a log
  that matches the head its contacts were given.

Everything the checks use crosses the wire: the phones fetch heads, entries and consistency proofs
with ``relay.wire``'s key-log requests over their own connections (``DeviceAgent.audit_key_log``,
``compare_key_log_head``); heads go to the witness and back as ``clients.transparency.encode_head``
bytes; the witness asks the relay for consistency proofs over a connection of its own (carried
without delay, and it never logs in; each watch's witness has its own, ``World.intervention_connection``,
closed when the run ends, ``KeyTransparencyWatch.close``; the relay's records of it are counted with the
run's, ``World.relay_outputs``). Only the timing is the simulation's: a phone audits at the
first multiple of ``AUDIT_INTERVAL`` after the ghost is added (later if it is offline then), and its
contacts' heads reach the witness when they fetch the ghost's keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from relaysim.clients import agent as A
from relaysim.clients import transparency as kt
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.sims.access.base import World
from relaysim.sims.scenario import Scenario, VerifySafetyNumber

__all__ = ["AUDIT_INTERVAL", "KeyTransparencyWatch", "detection_by_setting", "swap_detection_by_setting"]

AUDIT_INTERVAL = 3600.0  # seconds between a phone's audits of its own account (a simulation choice)
OFFLINE_RETRY = 60.0  # a phone that is offline when its audit is due tries again this much later


@dataclass
class KeyTransparencyWatch:
    """The devices' checks on the relay's key log around one ghost, and what they found."""

    world: World
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
        relay = self.relay
        self.server_public = relay.identity.server_certificate.public_key
        self.witness = kt.Witness(self.server_public)
        self._ghost_leaf = wire.kt_leaf(self.target, self.ghost_device, self.ghost_key)
        if self.fork:  # the compelled provider shows the target's account a log without the ghost
            relay.split_key_log(self.target, [self._ghost_leaf])
        # the witness's own connection, with an id no other watch in the run has (World.intervention_connection)
        self._conn = ConnectionContext(self.world.intervention_connection(), ("203.0.113.77", 443))
        # what the relay records of the witness's connection and requests is counted with the run's
        # (SimulationResult.relay_records, relay-view.jsonl), as any phone's
        self.world.relay_outputs(relay.connect(self._conn))
        self._requests = 0
        self._closed = False
        self._open: dict[str, dict[str, Any]] = {}  # device → its audit row, while it is in progress

    def close(self) -> None:
        """The watch is over (the run ends): the witness disconnects, and the relay records it as it does
        any connection closed (its records counted with the run's, ``World.relay_outputs``). Once."""
        if self._closed:
            return
        self._closed = True
        self.world.relay_outputs(self.relay.disconnect(self._conn))

    @property
    def relay(self) -> RelayCore:
        return self.world.relay

    # -- the witness: heads gossiped to it, consistency proofs it asks the relay for ----------------

    def _gossip(self, t: float, device: str, head: kt.TreeHead) -> None:
        found = self.witness.observe(device, kt.decode_head(kt.encode_head(head)))
        for first, second in self.witness.wanted():
            self._requests += 1
            ask = _over_the_wire(wire.GetKeyLogConsistency(id=self._requests, first=first, second=second))
            assert isinstance(ask, wire.Request)
            outputs = self.relay.handle(self._conn, ask)
            self.world.relay_outputs(outputs)  # its reply goes to no device's link: read here
            (reply,) = [o.frame for o in outputs if isinstance(o, Reply)]
            answer = _over_the_wire(reply)
            if isinstance(answer, wire.KeyLogConsistency):
                found += self.witness.proof_received(first, second, answer.proof)
            else:
                why = answer.message if isinstance(answer, wire.ErrorFrame) else answer.kind
                found += self.witness.proof_received(first, second, None, why)
        for f in found:
            self.forks.append({"t": t, "seen_by": list(f.seen_by), "why": f.why})

    # -- what the devices do -----------------------------------------------------------------

    def contact_checked(self, t: float, device: str, head: kt.TreeHead, included: bool) -> None:
        """``device`` was handed the ghost's key and checked its inclusion (clients.agent, under the
        signed ``head`` it was shown); it gossips that head to the witness."""
        self.inclusion_checks.append(
            {"t": t, "device": device, "tree_size": head.tree_size, "included": included}
        )
        self._gossip(t, device, head)

    def _expected(self) -> tuple[set[tuple[int, bytes]], set[int]]:
        """What the target's phones put in the log: their keys (any earlier key of theirs counts too)."""
        return set(self.target_devices.items()), set(self.target_devices)

    def start_audit(self, device: str) -> None:
        """One of the target's phones audits its account, over the wire (once it is online)."""
        world = self.world
        if not world.device_ready(device):
            world.sched.after(OFFLINE_RETRY, self.start_audit, device)
            return
        expected, known = self._expected()
        self._open[device] = {"t": world.sched.now, "device": device, "phase": "own"}
        world.devices[device].agent.audit_key_log(expected, known)
        world.flush_device(device)

    def on_event(self, t: float, device: str, event: A.KeyLogAudited | A.KeyLogCompared) -> None:
        """A target phone's answer from the relay, for the audit in progress."""
        row = self._open.get(device)
        if row is None:
            return
        agent = self.world.devices[device].agent
        if isinstance(event, A.KeyLogCompared):
            row["consistent_with_gossiped_head"] = event.consistent
            row["comparison"] = event.why
        elif row["phase"] == "own":
            row.update(
                tree_size=event.tree_size,
                ghost_in_own_log=any(d == self.ghost_device for d, _ in event.unexpected),
                unexpected=[f"{self.target}/{d}" for d, _ in event.unexpected],
                own_log_matches_its_head=event.reason is None,
                refused=event.reason,
            )
            if event.head is not None:
                self._gossip(t, device, event.head)
            latest = self.witness.latest()
            row["gossiped_head_size"] = 0 if latest is None else latest.tree_size
            # the same tree (a head signed again differs only in its timestamp): nothing to compare
            if latest is None or (event.head is not None and latest.same_tree(event.head)):
                row["matches_gossiped_head"] = event.reason is None
                self._close(t, device)
                return
            # the witness's head (what the contacts were given): prove it extends ours, and read up to it
            row["phase"] = "against"
            expected, known = self._expected()
            agent.compare_key_log_head(kt.encode_head(latest))
            agent.audit_key_log(expected, known, head=kt.encode_head(latest))
            self.world.flush_device(device)
            return
        else:
            row["matches_gossiped_head"] = event.reason is None
            row["against_gossiped_head"] = event.reason
            if any(d == self.ghost_device for d, _ in event.unexpected):
                row["ghost_in_own_log"] = True  # the relay served the entry after all
                row["unexpected"] = sorted({*row["unexpected"], f"{self.target}/{self.ghost_device}"})
        if "matches_gossiped_head" in row and "consistent_with_gossiped_head" in row:
            self._close(t, device)

    def _close(self, t: float, device: str) -> None:
        row = self._open.pop(device)
        del row["phase"]
        row["checked_at"] = t
        self.audits.append(row)
        self.world.emit({"t": t, "kind": "key_transparency_audit", **row})

    # -- the result --------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        found = [a for a in self.audits if a["ghost_in_own_log"]]
        mismatch = [a for a in self.audits if not a["matches_gossiped_head"]]
        firsts = [
            (
                found[0]["checked_at"],
                f"{found[0]['device']}'s own audit found {self.target}/{self.ghost_device}",
            )
            if found
            else None,
            (self.forks[0]["t"], f"the witness found a fork: {self.forks[0]['why']}") if self.forks else None,
            (
                mismatch[0]["checked_at"],
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


def _over_the_wire(frame: wire.Frame) -> wire.Frame:
    """``frame`` as the other side reads it: encoded to bytes and decoded again."""
    decoder = wire.FrameDecoder("relay" if isinstance(frame, wire.Request) else "device")
    decoder.receive_data(wire.encode(frame))
    out = decoder.next_frame()
    assert isinstance(out, wire.Frame)
    return out


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
