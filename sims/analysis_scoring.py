"""Scoring what ``sims.analysis`` inferred against ground truth, and ``relaysim analyze``'s files.

The analyses see only what the provider holds; this module is on the other side of that fence:
it reads the run's ``transcript.jsonl`` (who really sent each message, when it was received,
what it said) and says how right each inference was. ``write_analysis(DIR)`` runs the analyses
on a finished run and writes ``DIR/analysis/NAME.json`` and ``NAME.md`` — for ``relay`` (the
relay's database under the run's profile) and for each disclosure in ``DIR/disclosures/`` — each
with the inferences and their score.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relaysim.sims.analysis.run import (
    Analysis,
    analyze,
    as_seen_view,
    directory_problems,
    run_clock,
    run_directory,
)
from relaysim.sims.analysis.run import run_views as analysis_views
from relaysim.sims.analysis.runfiles import (
    finite_number,
    line_too_long,
    loads,
    numbered_lines,
    open_run_file,
    own_file,
    write_whole,
)
from relaysim.sims.analysis.sda import CHECKPOINTS, SDA_TOP, TargetRanking
from relaysim.sims.analysis.traits import PAPER_SHARES
from relaysim.sims.analysis.view import AnalysisInputError, ProviderView

__all__ = [
    "AS_SEEN",
    "Linking",
    "Truth",
    "analyse_and_write",
    "kept_beside_seen",
    "linking",
    "messages_until_linked",
    "read_truth",
    "score_analysis",
    "write_analysis",
]


def messages_until_linked(
    ranking: TargetRanking,
    correspondents: Collection[str],
    written: Sequence[float],
    most: int,
    *,
    stays: bool = True,
) -> int | None:
    """How many messages people wrote to ``ranking.target`` before one of ``correspondents`` ranked
    first (ties against the attacker) and stayed first; None if not within ``most`` of them.

    ``stays`` (the default): linked at the first target epoch from which on one of ``correspondents``
    ranks first at every checkpoint to the last, the run's last target epoch: an attacker that stops
    there names the correspondent, and one that stops at any later epoch does too. Without it: at the
    first checkpoint at which one ranks first, even if it drops back later, which no attacker could
    tell from a lucky epoch (the figure flatters). Martiny et al. (NDSS 2021) report the messages until
    the attacker links the pair ("as few as 5 messages"); the reference (docs/papers.md) does not say
    whether the correspondent must stay first, so the stricter count is the one reported.

    The run's end censors the count (:func:`linking` says how): "stays first" is as far as the run
    saw, so a correspondent that drops back after the run's last target epoch is counted linked, and a
    target the run ended for before ``most`` messages were written to it, not yet linked, is None
    like one the attack never linked within ``most``.

    ``written``: when the relay accepted each message people wrote to the target (relay clock,
    sorted; ground truth). The attack's target epochs follow every delivery to the target, the
    receipts for its own messages among them, since a provider cannot tell those from messages; but
    Martiny et al. count messages sent to the target, so the count here is of the messages written
    to it by the time the epoch in which it was linked began. The ranking must have a checkpoint
    after every one of its target epochs."""
    return linking(ranking, correspondents, written, most, stays=stays).messages


@dataclass(frozen=True)
class Linking:
    """:func:`messages_until_linked`'s count for one target, and how the run's end bounds it."""

    messages: int | None  # messages written to the target until it was linked; None: not within ``most``
    seen: int  # messages written to the target by its last target epoch in the run: as far as the attack saw
    most: int  # the count looked within

    @property
    def held(self) -> int | None:
        """Linked: the messages written to the target after its link, to its last target epoch, over
        which the correspondent stayed first; a link with few of them may not outlast a longer run."""
        return None if self.messages is None else self.seen - self.messages

    @property
    def censored(self) -> bool:
        """Not linked, and the run ended before more than ``most`` messages were written to the target:
        whether it would be linked within ``most`` in a longer run, the run cannot say."""
        return self.messages is None and self.seen <= self.most


def linking(
    ranking: TargetRanking,
    correspondents: Collection[str],
    written: Sequence[float],
    most: int,
    *,
    stays: bool = True,
) -> Linking:
    """:func:`messages_until_linked`, with what the run's end leaves open: the messages the run let
    the attack see (to the target's last target epoch), so that a target not linked because the
    run ended early (:attr:`Linking.censored`) is told from one not linked within ``most``, and a
    link the run saw held over few messages (:attr:`Linking.held`) from one held over many."""
    ks = ranking.checkpoints()
    if ks != list(range(1, len(ks) + 1)) or len(ranking.starts) < len(ks):
        raise ValueError(
            f"the ranking of {ranking.target!r} needs a checkpoint after every target epoch "
            f"(statistical_disclosure(checkpoints=range(1, ...))); it has {ks[:5]}..."
        )
    seen = bisect.bisect_right(written, ranking.starts[ks[-1] - 1]) if ks else 0
    first: int | None = None  # the checkpoint from which on a correspondent has ranked first
    for k in ks:
        n = bisect.bisect_right(written, ranking.starts[k - 1])
        if first is None and n > most:
            return Linking(None, seen, most)  # not first within ``most`` messages
        if min(ranking.rank(c, k) for c in correspondents) == 1:
            if first is None:
                first = k
                if not stays:
                    break
        else:
            first = None
    if first is None:
        return Linking(None, seen, most)
    n = bisect.bisect_right(written, ranking.starts[first - 1])
    return Linking(n if n <= most else None, seen, most)


@dataclass
class _Envelope:
    message: int
    sender: str
    recipient: str
    time: float
    recipient_device: int | None
    size: int | None
    length: int  # plaintext length in UTF-8 bytes


@dataclass
class _Control:
    sender: str
    recipient: str
    kind: str  # "delivery receipt", "read receipt", "cover", "sync copy" (to the sender's own devices)
    time: float
    recipient_device: int | None


@dataclass
class Truth:
    """What the transcript says: the sender of each envelope, who messaged whom, and when."""

    envelopes: dict[str, _Envelope] = field(default_factory=dict)  # envelope id → truth
    by_route: dict[tuple[float, str], str] = field(default_factory=dict)  # (relay time, recipient) → sender
    messages: list[tuple[float, str, str, int]] = field(default_factory=list)  # time, sender, recipient, id
    first_received: dict[tuple[str, str], float] = field(
        default_factory=dict
    )  # (receiver, from "account/device") → relay time the receiver's first device heard from it
    # Envelopes nobody wrote: delivery and read receipts, cover traffic, and the sync copies a phone
    # sends its own account's other devices (the transcript's control_accepted events). The provider
    # cannot tell receipts and cover from messages; the scoring can. A sync copy goes from an account
    # to itself: never a pair, a contact or a message (``pairs``, ``contacts``, ``messages``).
    control: dict[str, _Control] = field(default_factory=dict)  # envelope id → truth
    control_by_route: dict[tuple[float, str], tuple[str, str]] = field(
        default_factory=dict
    )  # (relay time, recipient) → sender, kind
    # [generate] organisations: who was given which sensitive trait (the transcript's trait_assigned)
    traits: dict[str, set[str]] = field(default_factory=dict)  # person → kinds
    # how many events of each kind the transcript holds (sims.report.run_disagreements checks them
    # against summary.json's counts: from here, the file is read once)
    kinds: Counter[str] = field(default_factory=Counter)

    def pairs(self, target: str | None = None) -> set[frozenset[str]]:
        return {
            frozenset((s, r))
            for _, s, r, _ in self.messages
            if s != r and (target is None or target in (s, r))
        }

    def people(self) -> set[str]:
        """Everyone who sent or was sent a message, and everyone given a trait."""
        return {x for _, s, r, _ in self.messages for x in (s, r)} | set(self.traits)

    def contacts(self, person: str) -> set[str]:
        return {r if s == person else s for _, s, r, _ in self.messages if person in (s, r) and s != r}

    def all_contacts(self) -> dict[str, set[str]]:
        """:meth:`contacts` of everyone who sent or was sent a message, in one pass over the messages."""
        out: dict[str, set[str]] = {}
        for _, s, r, _ in self.messages:
            if s != r:
                out.setdefault(s, set()).add(r)
                out.setdefault(r, set()).add(s)
        return out

    def sender_of(self, envelope_id: str | None, time: float | None, recipient: str | None) -> str | None:
        """Who really sent the envelope: a message's writer, or the phone that sent a receipt."""
        if envelope_id is not None and envelope_id in self.envelopes:
            return self.envelopes[envelope_id].sender
        if envelope_id is not None and envelope_id in self.control:
            return self.control[envelope_id].sender
        if time is not None and recipient is not None:
            key = (round(time, 6), recipient)
            if key in self.by_route:
                return self.by_route[key]
            if key in self.control_by_route:
                return self.control_by_route[key][0]
        return None

    def what_was(self, envelope_id: str | None, time: float | None, recipient: str | None) -> str:
        """ "message", "delivery receipt", "read receipt", "cover", "sync copy" or "unknown"."""
        if envelope_id is not None and envelope_id in self.envelopes:
            return "message"
        if envelope_id is not None and envelope_id in self.control:
            return self.control[envelope_id].kind
        if time is not None and recipient is not None:
            key = (round(time, 6), recipient)
            if key in self.by_route:
                return "message"
            if key in self.control_by_route:
                return self.control_by_route[key][1]
        return "unknown"


def _field(e: dict[str, Any], key: str, what: str, where: str, optional: bool = False) -> Any:
    """``e[key]`` if it is ``what`` ("text", "a number", "an id", "a list of records"); an
    AnalysisInputError naming the line and the field otherwise (None passes when ``optional``)."""
    value = e.get(key)
    if value is None and optional:
        return None
    # only the check asked for (read_truth makes several calls for each line of a transcript)
    if what == "text":
        ok = type(value) is str
    elif what == "a number":
        ok = finite_number(value)
    elif what == "an id":
        ok = isinstance(value, str | int) and not isinstance(value, bool)
    else:  # "a list of records"
        ok = isinstance(value, list) and all(isinstance(r, dict) for r in value)
    if not ok:
        got = "nothing" if key not in e else repr(value)[:60]
        raise AnalysisInputError(f"{where}: {key}: expected {what}, got {got}")
    return value


def read_truth(transcript: str | Path, to_run: Callable[[float], float] | None = None) -> Truth:
    """The truth of a run, from its ``transcript``. The times of the relay's records in it are read on
    the run's own clock, as the analyses read relay.db's (sims.analysis.run.run_views): by ``to_run``,
    or else by the provider.json beside the transcript (:func:`~sims.analysis.run.run_clock`; a live
    run's relay kept the wall clock, and its records matched no analysis's, nor fell in its hours)."""
    path = Path(transcript)
    if not path.exists():  # (a pipe or a folder there is said to be one, as it is read: not "no such file")
        raise AnalysisInputError(f"{path}: no such file; scoring needs the run's transcript.jsonl")
    if to_run is None:
        to_run = run_clock(path.parent)
    sent: dict[int, tuple[str, str, str]] = {}
    truth = Truth()
    epoch_of: dict[int, float] = {}  # message id → relay time - simulated time (the relay clock's epoch)
    received: list[tuple[int, str, float]] = []
    receipts_in: list[tuple[str, str, float]] = []
    with open_run_file(path) as f:
        # (a line of a gigabyte was read whole: at most MAX_LINE bytes of it are)
        for n, raw in numbered_lines(f):
            where = f"{path}: line {n}"
            too_long = line_too_long(raw)
            if too_long is not None:
                raise AnalysisInputError(f"{where}: {too_long}")
            try:
                e = loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise AnalysisInputError(
                    f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            except ValueError as exc:
                raise AnalysisInputError(f"{where}: not JSON ({exc}); expected one event") from None
            if not isinstance(e, dict):
                raise AnalysisInputError(f"{where}: expected an event (a JSON object), got {raw[:60]!r}")
            kind = e.get("kind")
            if isinstance(kind, str):
                truth.kinds[kind] += 1
            if kind == "message_sent":
                frm, to = _field(e, "from", "text", where), _field(e, "to", "text", where)
                text = _field(e, "plaintext", "text", where, optional=True) or ""
                sent[_field(e, "message", "an id", where)] = (frm.split("/")[0], to, text)
            elif kind == "message_accepted" and _field(e, "message", "an id", where) in sent:
                sender, recipient, text = sent[e["message"]]
                t_event = float(_field(e, "t", "a number", where))
                times = []
                for i, r in enumerate(_field(e, "relay", "a list of records", where, optional=True) or []):
                    at = f"{where}: relay[{i}]"
                    t = _field(r, "time", "a number", at, optional=True)
                    if t is None:
                        continue
                    t = to_run(t)
                    times.append(t)
                    to = _field(r, "recipient_account", "text", at, optional=True) or recipient
                    truth.by_route[(round(t, 6), to)] = sender
                    if _field(r, "envelope_id", "text", at, optional=True):
                        truth.envelopes[r["envelope_id"]] = _Envelope(
                            e["message"],
                            sender,
                            recipient,
                            t,
                            _field(r, "recipient_device", "a number", at, optional=True),
                            _field(r, "size", "a number", at, optional=True),
                            len(text.encode()),
                        )
                t0 = min(times) if times else t_event
                epoch_of[e["message"]] = t0 - t_event
                truth.messages.append((t0, sender, recipient, e["message"]))
            elif kind == "control_accepted":
                for i, r in enumerate(_field(e, "relay", "a list of records", where, optional=True) or []):
                    at = f"{where}: relay[{i}]"
                    t = _field(r, "time", "a number", at, optional=True)
                    if t is None:
                        continue
                    t = to_run(t)
                    frm, control = _field(e, "from", "text", where), _field(e, "control", "text", where)
                    to = _field(r, "recipient_account", "text", at, optional=True) or _field(
                        e, "to", "text", where
                    )
                    truth.control_by_route[(round(t, 6), to)] = (frm, control)
                    if _field(r, "envelope_id", "text", at, optional=True):
                        truth.control[r["envelope_id"]] = _Control(
                            frm,
                            e["to"],
                            control,
                            t,
                            _field(r, "recipient_device", "a number", at, optional=True),
                        )
            elif kind == "trait_assigned":
                person, trait = _field(e, "person", "text", where), _field(e, "trait", "text", where)
                truth.traits.setdefault(person, set()).add(trait)
            elif kind in ("receipt_received", "message_received"):
                device = _field(e, "device", "text", where)
                if not device.endswith("/1"):
                    continue  # the app sends from a person's first device only
                t = float(_field(e, "t", "a number", where))
                if kind == "receipt_received":
                    # a receipt answers the session as a message does (the sender heard back on it)
                    receipts_in.append((device.split("/")[0], _field(e, "from", "text", where), t))
                else:
                    received.append((_field(e, "message", "an id", where), device.split("/")[0], t))
    for mid, receiver, t in received:
        if mid in sent and mid in epoch_of:
            key = (receiver, f"{sent[mid][0]}/1")  # the app sends from a person's first device
            rel = t + epoch_of[mid]
            truth.first_received[key] = min(truth.first_received.get(key, rel), rel)
    epoch = next(iter(epoch_of.values()), 0.0)  # one relay clock: the same for every message
    for receiver, sender, t in receipts_in:
        key, rel = (receiver, sender), t + epoch
        truth.first_received[key] = min(truth.first_received.get(key, rel), rel)
    truth.messages.sort()
    return truth


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


LINK_MESSAGES = 60  # messages written to a target the stays-first count looks within (reproduce's, defences')


def score_analysis(a: Analysis, truth: Truth, view: ProviderView | None = None) -> dict[str, Any]:
    """How right each of ``a``'s inferences was. With ``view`` (what ``a`` was made from), the
    disclosure attack is also scored as ``relaysim reproduce`` scores it: messages until a true
    contact ranks first and stays first (:func:`linking`), which takes the attack again with a
    checkpoint after every target epoch, unless ``a`` was made with it (``analyze(sda_watch=...)``,
    the watch holding each target's true contacts, :meth:`Truth.all_contacts`): then from that."""
    if a.sda_watch is not None:
        for r in a.sda.rankings:
            missing = truth.contacts(r.target) - set(a.sda_watch.get(r.target, ()))
            if missing:
                raise ValueError(
                    f"sda_watch: for {r.target!r} the analysis kept the ranks of the accounts watched, not of "
                    f"its true contacts {sorted(missing)[:3]}: make it with analyze(sda_watch=truth.all_contacts())"
                )
    out: dict[str, Any] = {}
    # sealed-sender attribution
    judged = [(x, truth.sender_of(x.envelope_id, x.time, x.recipient)) for x in a.attributions]
    attributed = [(x, s) for x, s in judged if x.sender is not None]
    correct = sum(1 for x, s in attributed if s is not None and x.sender == s)
    really: dict[str, int] = {}
    for x in a.attributions:
        what = truth.what_was(x.envelope_id, x.time, x.recipient)
        really[what] = really.get(what, 0) + 1
    out["attribution"] = {
        "sealed_records": len(a.attributions),
        # what the sealed records really were: the provider counts them all as messages
        "sealed_records_really": dict(sorted(really.items())),
        "attributed": len(attributed),
        "correct": correct,
        "precision": _ratio(correct, len(attributed)),
        "recall": _ratio(correct, len(a.attributions)),
    }
    # contact graph
    true_pairs = truth.pairs(a.target)
    for label, found in (
        ("contact_graph", a.graph.strong()),
        ("contact_graph_with_lookups", a.graph.all_pairs()),
    ):
        hit = len(found & true_pairs)
        out[label] = {
            "true_pairs": len(true_pairs),
            "inferred_pairs": len(found),
            "correct": hit,
            "precision": _ratio(hit, len(found)),
            "recall": _ratio(hit, len(true_pairs)),
        }
    out["statistical_disclosure"] = _score_sda(a, truth)
    if view is not None and out["statistical_disclosure"]["targets"]:
        out["statistical_disclosure"]["linked"] = _score_linked(a, truth, view)
    out["sizes"] = _score_sizes(a, truth)
    out["daily_rhythm"] = _score_rhythm(a, truth)
    if a.traits is not None:
        out["sensitive_traits"] = _score_traits(a, truth)
    return out


def _score_traits(a: Analysis, truth: Truth) -> dict[str, Any]:
    """Per trait: the people inferred to have it against those given it (sims.world.traffic's
    organisation_traits), beside MetaPhone's share of participants (Mayer et al., PNAS 2016)."""
    assert a.traits is not None
    people = {p for p in truth.people() if p not in a.traits.directory} if truth.messages else set()
    out: dict[str, Any] = {"people": len(people), "by_trait": {}}
    for kind in a.traits.kinds():
        inferred = a.traits.holders(kind) & people
        true = {p for p in people if kind in truth.traits.get(p, set())}
        hit = len(inferred & true)
        label, share = PAPER_SHARES.get(kind, (kind, None))
        out["by_trait"][kind] = {
            "paper_label": label,
            "paper_share": share,
            "true_holders": len(true),
            "true_share": _ratio(len(true), len(people)),
            "inferred": len(inferred),
            "inferred_share": _ratio(len(inferred), len(people)),
            "correct": hit,
            "precision": _ratio(hit, len(inferred)),
            "recall": _ratio(hit, len(true)),
        }
    return out


def _score_sda(a: Analysis, truth: Truth) -> dict[str, Any]:
    per_target = []
    first_at_end = 0
    by_k: dict[int, list[int]] = {}
    for r in a.sda.rankings:
        contacts = truth.contacts(r.target)
        if not contacts:
            continue
        ranks = {k: min(r.rank(c, k) for c in contacts) for k in r.checkpoints()}
        for k, best in ranks.items():
            if k in CHECKPOINTS:
                by_k.setdefault(k, []).append(best)
        last = ranks[max(ranks)] if ranks else None
        first_at_end += last == 1
        per_target.append(
            {
                "target": r.target,
                "true_contacts": len(contacts),
                "target_epochs": r.epochs,
                "best_true_contact_rank_after_k": {str(k): v for k, v in ranks.items()},
            }
        )
    return {
        "targets": len(per_target),
        "true_contact_first_after_all": first_at_end,
        "true_contact_first_after_all_means": "a true contact ranks first (ties against the attacker) at the "
        "target's last target epoch of the run",
        "true_contact_first_after_k_means": "a true contact ranks first at the target's k-th target epoch, whether "
        "or not it stays first after; target epochs, which the receipts for the target's own messages open too, "
        "not messages written to it (those 'linked' counts)",
        "true_contact_first_after_k": {
            str(k): {"targets": len(v), "first": sum(1 for x in v if x == 1)} for k, v in sorted(by_k.items())
        },
        "per_target": per_target,
    }


def _score_linked(a: Analysis, truth: Truth, view: ProviderView) -> dict[str, Any]:
    """The disclosure attack's targets scored as ``relaysim reproduce`` and ``relaysim defences`` score
    theirs: the messages written to each until a true contact ranked first and stayed first at every
    later target epoch of the run, within :data:`LINK_MESSAGES`, and the targets the run's end cut short."""
    from relaysim.sims.analysis.sda import statistical_disclosure

    targets = [r.target for r in a.sda.rankings if truth.contacts(r.target)]
    watch = {t: sorted(truth.contacts(t)) for t in targets}
    if a.sda_every_epoch is not None:  # the pass that made a.sda had a checkpoint after every target epoch
        rankings = [r for r in a.sda_every_epoch.rankings if r.target in watch]
    else:
        # the same attack (epoch, receipts, targets) with a checkpoint after every target epoch, keeping
        # only the ranks of each target's true contacts
        rankings = list(
            statistical_disclosure(
                view,
                targets=targets,
                receipts=a.sda.receipts,
                epoch=a.sda.epoch,
                checkpoints=range(1, len(view.observations) + 2),
                keep_top=0,
                watch=watch,
            ).rankings
        )
    written: dict[str, list[float]] = {}
    for t, _sender, recipient, _id in truth.messages:
        written.setdefault(recipient, []).append(t)
    per_target = {
        r.target: linking(r, watch[r.target], sorted(written.get(r.target, [])), LINK_MESSAGES)
        for r in rankings
    }
    found = sorted(x.messages for x in per_target.values() if x.messages is not None)
    ks = sorted(x.messages if x.messages is not None else LINK_MESSAGES + 1 for x in per_target.values())
    median = ks[len(ks) // 2] if ks else None
    held = [x.held for x in per_target.values() if x.held is not None]
    return {
        "means": "messages written to the target until a true contact ranks first (ties against the attacker) "
        "and stays first at every later target epoch of the run, as relaysim reproduce counts them; the run's "
        "end censors it: 'cut_short' targets were not linked when the run ended, before max_messages were "
        "written to them, and 'held' counts the messages after a link over which it stayed first",
        "max_messages": LINK_MESSAGES,
        "targets": len(per_target),
        "linked_within_5": sum(1 for k in found if k <= 5),
        "linked_within_max": len(found),
        "cut_short": sum(1 for x in per_target.values() if x.censored),
        # the fewest messages written to a linked target after its link, to the run's end: how far the
        # run saw the shakiest link hold
        "held_fewest": min(held, default=None),
        # the upper median over all targets, a target not linked (cut short or not) counting as beyond max
        "median_messages": median if median is not None and median <= LINK_MESSAGES else None,
        "per_target": {
            t: {"messages": x.messages, "seen": x.seen, "held": x.held, "cut_short": x.censored}
            for t, x in per_target.items()
        },
    }


def _score_sizes(a: Analysis, truth: Truth) -> dict[str, Any]:
    """A PQXDH message goes out on a session until its sender hears back on it. Here the app sends
    from a person's first device, so a session to a recipient's device is answered once the sender's
    first device has received anything from that device: a message (from a first device only) or a
    delivery receipt (every device sends its own). Without receipts a session to a recipient's other
    device is never answered."""
    flagged = {f.envelope_id for f in a.sizes.first_contacts if f.envelope_id}
    target = a.target
    mine = {
        eid: e for eid, e in truth.envelopes.items() if target is None or target in (e.sender, e.recipient)
    }
    # receipts are Double Ratchet messages like any other: the first on a session is a PQXDH one too
    routes = [(eid, e.sender, e.recipient, e.recipient_device, e.time) for eid, e in mine.items()] + [
        (eid, c.sender, c.recipient, c.recipient_device, c.time)
        for eid, c in truth.control.items()
        if target is None or target in (c.sender, c.recipient)
    ]
    expected = {
        eid
        for eid, s, r, device, t in routes
        if t <= truth.first_received.get((s, f"{r}/{device}"), float("inf"))
    }
    first_of_pair: dict[frozenset[str], int] = {}
    for _, s, r, mid in truth.messages:
        first_of_pair.setdefault(frozenset((s, r)), mid)
    by_message: dict[int, list[str]] = {}
    for eid, e in mine.items():
        by_message.setdefault(e.message, []).append(eid)
    firsts = [mid for mid in first_of_pair.values() if by_message.get(mid)]
    marked = sum(1 for mid in firsts if all(eid in flagged for eid in by_message[mid]))
    rest = [(e.size, e.length) for eid, e in mine.items() if eid not in flagged and e.size is not None]
    corr = None
    if len(rest) > 2:
        sizes, lengths = np.array(rest, dtype=float).T
        if sizes.std() > 0 and lengths.std() > 0:
            corr = round(float(np.corrcoef(sizes, lengths)[0, 1]), 4)
    right = len(flagged & expected)
    return {
        "flagged": len(flagged),
        "session_opening_envelopes": len(expected),
        "flagged_correctly": right,
        "precision": _ratio(right, len(flagged)),
        "recall": _ratio(right, len(expected)),
        "first_messages_between_two_people": len(firsts),
        "first_messages_marked": marked,
        "size_vs_plaintext_length_correlation": corr,
    }


def _score_rhythm(a: Analysis, truth: Truth) -> dict[str, Any]:
    sent: dict[str, list[float]] = {}
    for t, s, _, _ in truth.messages:
        sent.setdefault(s, []).append(t)
    inside = total = accounts = 0
    for r in a.rhythms:
        if r.sleep_window is None or r.account not in sent:
            continue
        start, _ = r.sleep_window
        hours = {(start + i) % 24 for i in range(6)}
        accounts += 1
        for t in sent[r.account]:
            total += 1
            inside += int(t // 3600) % 24 in hours
    return {
        "accounts_with_a_sleep_window": accounts,
        "true_messages_sent_inside_it": inside,
        "true_messages": total,
        "share_inside": _ratio(inside, total),
        "share_of_the_day": round(6 / 24, 4),
    }


# --- relaysim analyze ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def headline(name: str, a: Analysis, score: Mapping[str, Any] | None) -> str:
    """One line: what the provider's records gave away, and how right it was."""
    sealed = len(a.attributions)
    got = sum(1 for x in a.attributions if x.sender is not None)
    parts = [f"{name}:"]
    if sealed:
        parts.append(
            f"sealed sender on: {got:,} of {sealed:,} sealed sends attributed to a sender by address"
        )
        if score:
            parts[-1] += f" ({score['attribution']['correct']:,} correctly)"
    else:
        parts.append("no sealed sends")
    g = score["contact_graph"] if score else None
    edges = len(a.graph.strong())
    parts.append(
        f"; contact graph {edges} pairs"
        + (f", precision {_pct(g['precision'])} recall {_pct(g['recall'])}" if g else "")
    )
    if score and score["statistical_disclosure"]["targets"]:
        s = score["statistical_disclosure"]
        parts.append(
            f"; timing-only SDA ranked a true contact first at the run's last target epoch for "
            f"{s['true_contact_first_after_all']} of {s['targets']} targets"
        )
        if "linked" in s:
            k = s["linked"]
            parts[-1] += (
                f" (first and staying first within {k['max_messages']} messages: {k['linked_within_max']}, "
                f"{k['cut_short']} cut short by the run's end)"
            )
    if a.sizes.threshold is not None:
        parts.append(f"; {len(a.sizes.first_contacts):,} first-contact envelopes by size")
    if score and score.get("sensitive_traits"):
        rows = score["sensitive_traits"]["by_trait"]
        parts.append(
            "; traits (precision/recall): "
            + ", ".join(f"{k} {_pct(r['precision'])}/{_pct(r['recall'])}" for k, r in rows.items())
        )
    return " ".join(parts).replace(" ;", ";")


def to_markdown(
    name: str,
    a: Analysis,
    score: Mapping[str, Any] | None,
    clock: Any = None,
    *,
    intro: list[str] | None = None,
) -> str:
    fmt = clock or (lambda t: f"{t:.0f}")
    j = a.to_json()
    att = j["sealed_sender_attribution"]
    lines = intro or [
        f"# What the provider's records reveal: {name}",
        "",
        f"Read from: {a.source}" + (f" (an order on `{a.target}`)" if a.target else "") + ".",
        "Everything below is inferred from what the provider holds; the scores compare it with what really happened.",
        "",
    ]
    lines += [
        "## Sealed sender: who sent what",
        "",
        f"- {att['attributed']:,} of {att['sealed_records']:,} sealed-sender records attributed to a sender, by "
        f"evidence: {', '.join(f'{k} {v:,}' for k, v in att['by_evidence'].items()) or 'none'}",
    ]
    if score:
        s = score["attribution"]
        lines.append(
            f"- correct: {s['correct']:,} (precision {_pct(s['precision'])}, recall {_pct(s['recall'])})"
        )
    g = j["contact_graph"]
    lines += [
        "",
        "## Contact graph",
        "",
        f"- {g['accounts']} accounts, {g['edges']} pairs ("
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g["edges_by_evidence"].items())
        + f"); largest connected group {g['largest_component']}",
    ]
    if score:
        s = score["contact_graph"]
        lines.append(
            f"- against the true pairs: {s['correct']} of {s['true_pairs']} found, {s['inferred_pairs']} inferred "
            f"(precision {_pct(s['precision'])}, recall {_pct(s['recall'])})"
        )
    lines += [
        "",
        "## Statistical disclosure attack on sealed sender",
        "",
        f"- {a.sda.note()}",
    ]
    if a.sda.sealed_messages:
        lines.append(
            "- a target epoch follows each delivery to the target, the receipts for its own messages among them (a "
            "provider cannot tell those from messages): k target epochs are not k messages written to it, the unit "
            'of Martiny et al.\'s "as few as 5 messages"'
        )
    # the 3 best, or as many as the analysis kept (analyze(sda_top=...) with sda_watch keeps no more)
    shown = 3 if a.sda_every_epoch is None else min(3, a.sda_top)
    for rk in a.sda.rankings[:5]:
        top = ", ".join(f"{x} ({s:+d})" for x, s in rk.top(n=shown)) or "nobody"
        if not shown:
            top = "none kept (sda_top=0)"
        lines.append(f"- `{rk.target}` after {rk.epochs} target epochs: {top}")
    if score and score["statistical_disclosure"]["targets"]:
        s = score["statistical_disclosure"]
        lines.append(
            f"- a true contact ranked first at the run's last target epoch for {s['true_contact_first_after_all']} of "
            f"{s['targets']} targets; at the k-th target epoch (first then, whether or not it stayed first; epochs, "
            "not messages): "
            + ", ".join(
                f"k={k}: {v['first']}/{v['targets']}" for k, v in s["true_contact_first_after_k"].items()
            )
        )
        if "linked" in s:
            k = s["linked"]
            median = k["median_messages"]
            lines.append(
                f"- linked as `relaysim reproduce` counts it (a true contact ranks first and stays first at every "
                f"later target epoch of the run), within {k['max_messages']} messages written to the target: "
                f"{k['linked_within_max']} of {k['targets']} targets, {k['linked_within_5']} within 5, the median "
                f"{median if median is not None else '>' + str(k['max_messages'])}; {k['cut_short']} not linked "
                f"when the run ended before {k['max_messages']} messages to them (cut short: a longer run might "
                "link them)"
                + (
                    f"; the link held over the fewest messages written to its target after it, to the run's end, "
                    f"held over {k['held_fewest']} (one held over few might not outlast a longer run)"
                    if k["held_fewest"] is not None
                    else ""
                )
            )
    sz = j["sizes"]
    lines += ["", "## Envelope sizes", ""]
    if sz["first_contact_threshold_bytes"] is not None:
        lines.append(
            f"- {sz['first_contacts']:,} envelopes above {sz['first_contact_threshold_bytes']:.0f} bytes: a PQXDH first "
            "message, someone new writing (or writing again before any reply)"
            + (
                f"; {own:,} of them from an account to its own other device (a sync copy opening a session, "
                "not a new correspondent)"
                if (own := sz.get("first_contacts_to_own_devices", 0))
                else ""
            )
        )
    classes = ", ".join(f"{c['size']} B × {c['envelopes']}" for c in sz["length_classes"][:8])
    lines.append(
        f"- the others in length classes {classes or 'none'} "
        + (
            f"(steps of {sz['padding_step_bytes']} bytes)"
            if sz["padding_step_bytes"] is not None
            else "(no step between classes to read a padding scheme from)"
        )
    )
    if score:
        s = score["sizes"]
        lines.append(
            f"- first messages between two people marked: {s['first_messages_marked']} of "
            f"{s['first_messages_between_two_people']}; session-opening envelopes flagged: {s['flagged_correctly']} "
            f"of {s['session_opening_envelopes']} (precision {_pct(s['precision'])}, recall {_pct(s['recall'])}); "
            f"size against plaintext length, correlation {s['size_vs_plaintext_length_correlation']}"
        )
    lines += ["", "## Pattern of life", ""]
    rhythms = [r for r in a.rhythms if r.sleep_window is not None]
    for r in rhythms[:5]:
        assert r.sleep_window is not None
        lines.append(
            f"- `{r.account}`: {r.actions} actions; asleep {r.sleep_window[0]:02d}:00–{r.sleep_window[1]:02d}:00 UTC, "
            f"so UTC{r.utc_offset:+d} if they sleep at night"
        )
    if score:
        s = score["daily_rhythm"]
        lines.append(
            f"- true messages sent inside the inferred sleep windows: {s['true_messages_sent_inside_it']} of "
            f"{s['true_messages']} ({_pct(s['share_inside'])}; the windows are {s['share_of_the_day']:.2f} of the day)"
        )
    moved = {acc: st for acc, st in a.trails.items() if len({x.host for x in st}) > 1}
    lines.append(
        f"- location trails for {len(a.trails)} accounts; {len(moved)} seen at more than one address"
    )
    for acc, st in list(moved.items())[:5]:
        lines.append(
            f"  - `{acc}`: "
            + " → ".join(f"{x.host}{f' ({x.region})' if x.region else ''} from {fmt(x.first)}" for x in st)
        )
    lines.append(f"- {len(a.colocations)} pairs of accounts seen at the same address within 15 minutes")
    for c in a.colocations[:5]:
        lines.append(f"  - `{c.a}` and `{c.b}` at {c.host}, first {fmt(c.first)}")
    lines += _traits_markdown(a, score)
    return "\n".join(lines) + "\n"


def _traits_markdown(a: Analysis, score: Mapping[str, Any] | None) -> list[str]:
    if a.traits is None:
        return []
    lines = [
        "",
        "## Sensitive traits from whom people contact (MetaPhone, Mayer, Mutchler and Mitchell, PNAS 2016)",
        "",
        f"- a public directory lists {len(a.traits.directory)} organisation accounts; {len(a.traits.traits)} of "
        f"{a.traits.people} accounts contacted at least one",
    ]
    s = score.get("sensitive_traits") if score else None
    if s:
        lines += [
            "",
            "| trait | inferred | truly | precision | recall | MetaPhone's participants |",
            "|---|---|---|---|---|---|",
        ]
        for kind, r in s["by_trait"].items():
            paper = f"{r['paper_label']} {r['paper_share']:.0%}" if r["paper_share"] is not None else "–"
            lines.append(
                f"| {kind} | {r['inferred']} ({_pct(r['inferred_share'])}) | {r['true_holders']} "
                f"({_pct(r['true_share'])}) | {_pct(r['precision'])} | {_pct(r['recall'])} | {paper} |"
            )
        lines += [
            "",
            "- truly: whom the scenario gave each trait (`[generate] trait_probability`, by default MetaPhone's "
            "shares of participants), the run's input, not a finding; what the analysis shows is how many of them "
            "whom they contacted gives away (precision, recall)",
        ]
    else:
        for kind in a.traits.kinds():
            lines.append(f"- {kind}: {len(a.traits.holders(kind))} accounts")
    return lines


def write_analysis(
    run: str | Path,
    clock: Any = None,
    *,
    as_seen: bool = False,
    truth: Truth | None = None,
    sda_top: int = SDA_TOP,
) -> list[str]:
    """Analyse a finished run, score it, write ``DIR/analysis/NAME.{json,md}``; the headlines.
    ``as_seen``: analyse what the relay saw while it ran (``relay-view.jsonl``) instead of what the
    provider keeps, into ``DIR/analysis/as-seen/relay.{json,md}``. ``truth``: the run's transcript
    as :func:`read_truth` read it, if the caller has (else read here, when the run has one).
    ``sda_top``: how many of the best accounts per checkpoint the attack's rankings give
    (``analyze(sda_top=...)``; ``relaysim analyze --sda-top``)."""
    return analyse_and_write(run, clock, as_seen=as_seen, truth=truth, sda_top=sda_top)[0]


def analyse_and_write(
    run: str | Path,
    clock: Any = None,
    *,
    as_seen: bool = False,
    truth: Truth | None = None,
    sda_top: int = SDA_TOP,
) -> tuple[list[str], dict[str, Analysis]]:
    """:func:`write_analysis`, and the analyses it wrote, by name (``relay``, each disclosure): for a
    caller that scores more of them (``relaysim defences``) without taking the disclosure attack again.
    With the truth, each one's ``sda_every_epoch`` holds the attack's pass with a checkpoint after every
    target epoch and the ranks of each target's true contacts (``analyze(sda_watch=...)``)."""
    out = Path(run)
    folder = own_file(out, "analysis", AS_SEEN) if as_seen else own_file(out, "analysis")
    computed = compute_analyses(out, as_seen=as_seen, truth=truth, sda_top=sda_top)
    # every file it writes checked before any is: a link or a folder at the last one (relay.md) was
    # refused after the first ones were written, leaving relay.json of this analysis beside none
    for name in computed:
        for file in (f"{name}.json", f"{name}.md"):
            target = own_file(folder, file)
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    analyses: dict[str, Analysis] = {}
    for name, (a, data) in computed.items():
        score = data["score"]
        intro = _as_seen_intro(data["kept_beside_seen"]) if as_seen else None
        write_whole(own_file(folder, f"{name}.json"), json.dumps(_round(data), indent=1) + "\n")
        write_whole(own_file(folder, f"{name}.md"), to_markdown(name, a, score, clock, intro=intro))
        lines.append(headline(f"{name} as seen" if as_seen else name, a, score))
        analyses[name] = a
    return lines, analyses


def compute_analyses(
    run: str | Path, *, as_seen: bool = False, truth: Truth | None = None, sda_top: int = SDA_TOP
) -> dict[str, tuple[Analysis, dict[str, Any]]]:
    """Each analysis of a finished run, by name (``relay``, each disclosure; ``as_seen``: ``relay``, of
    ``relay-view.jsonl``), and what ``analysis/NAME.json`` holds of it (``analysis``, ``score``, and
    ``as_seen``, ``kept_beside_seen``; :func:`as_written` is the file's JSON of it): the one path from a run's files to its analyses, which
    ``relaysim analyze`` writes and ``relaysim report`` computes when the run has no ``analysis/``
    (it read the run without its ``directory.json``: other trait inferences, and a broken one unsaid).
    ``truth``: the run's transcript as :func:`read_truth` read it (else read here, when the run has one).
    ``sda_top``: :func:`~sims.analysis.run.analyze`'s, the best accounts per checkpoint it gives."""
    out = Path(run)
    if truth is None and (out / "transcript.jsonl").exists():
        truth = read_truth(out / "transcript.jsonl")
    views = {"relay": as_seen_view(out)} if as_seen else analysis_views(out)
    directory = run_directory(out)
    if directory:  # (an unknown kind refused; accounts the run has not, a warning: both were said nowhere)
        import warnings

        from relaysim.sims.report import RunFolderWarning
        from relaysim.sims.scenario import organisation_kinds

        accounts = set().union(*(view.accounts() for view in views.values()))
        for problem in directory_problems(out, directory, accounts, organisation_kinds()):
            warnings.warn(problem, RunFolderWarning, stacklevel=2)
    computed: dict[str, tuple[Analysis, dict[str, Any]]] = {}
    for name, view in views.items():
        # with the truth, the attack's ranks of each target's true contacts are kept at every target epoch,
        # so that one pass of it gives both its figures and the "linked" count (score_analysis)
        a = analyze(
            view,
            directory=directory,
            sda_watch=truth.all_contacts() if truth is not None else None,
            sda_top=sda_top,
        )
        score = score_analysis(a, truth, view) if truth is not None else None
        data: dict[str, Any] = {"analysis": a.to_json(), "score": score}
        if as_seen:
            data["kept_beside_seen"] = kept_beside_seen(analysis_views(out)["relay"], view)
        computed[name] = (a, data)
    return computed


def as_written(data: Mapping[str, Any]) -> Any:
    """``data`` (:func:`compute_analyses`') as ``analysis/NAME.json`` holds it, read back: rounded as
    :func:`write_analysis` writes it, lists for tuples."""
    return json.loads(json.dumps(_round(data)))


AS_SEEN = "as-seen"  # DIR/analysis/as-seen/: the analyses of what the relay saw


def kept_beside_seen(kept: ProviderView, seen: ProviderView) -> dict[str, Any]:
    """Per record kind, how many observations the relay made and how many its profile kept."""
    counts: dict[str, dict[str, Any]] = {}
    for label, view in (("seen", seen), ("kept", kept)):
        for o in view.observations:
            row = counts.setdefault(o.kind, {"seen": 0, "kept": 0})
            row[label] += 1
    return {"kept_from": kept.source, "by_kind": dict(sorted(counts.items()))}


def _as_seen_intro(kept: Mapping[str, Any]) -> list[str]:
    rows = kept["by_kind"]
    sealed = rows.get("sealed_send", {"seen": 0, "kept": 0})
    seen_total = sum(r["seen"] for r in rows.values())
    kept_total = sum(r["kept"] for r in rows.values())
    lines = [
        "# What the relay saw: what a provider that watches (not keeps) learns",
        "",
        "Read from: `relay-view.jsonl`, every observation the relay made while the run went on — each request on "
        "each connection with its network address and time, and each sealed send's recipient, size, time and "
        "connection — before any retention policy. A provider that watches its relay live has all of it, whatever "
        "its profile keeps; so does one compelled to (by a pen register order, a wiretap order), or whose relay is hacked. "
        "Everything below is inferred from that alone; the scores compare it with what really happened.",
        "",
        f"The relay saw {seen_total:,} records ({sealed['seen']:,} sealed sends); {kept['kept_from']} keeps "
        f"{kept_total:,} of them ({sealed['kept']:,} sealed sends); what keeping alone reveals is "
        "`relaysim analyze DIR` (`DIR/analysis/relay.md`).",
        "",
        "| record kind | seen | kept |",
        "|---|---|---|",
        *(f"| {k} | {r['seen']:,} | {r['kept']:,} |" for k, r in rows.items()),
        "",
    ]
    return lines


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round(v) for v in obj]
    return obj
