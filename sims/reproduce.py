"""Reproduce Martiny et al.'s statistical disclosure attack on sealed sender, and each defence against it.

Martiny, Kaptchuk, Aviv, Roche and Wustrow, "Improving Signal's Sealed Sender" (NDSS 2021): with
delivery receipts on, the provider "could link sealed sender users in as few as 5 messages". This
runs a scenario (by default the built-in ``sda-martiny-2021``) once as written and once with each
defence switched on (``[defences]`` in sims.scenario), runs the attack of ``sims.analysis.sda`` on
what the relay recorded (recipients and times only, 1-second epochs after each delivery to the
target), and prints, per variant, how many messages people wrote to a target before the target's
true correspondent ranked first and stayed first at every later target epoch of the run (ties
counted against the attacker), beside the paper's figure; and, for comparison, the count at the
first epoch it ranked first, even where it dropped back later (``messages_until_linked``).

"Stays first" is as far as the run saw, so the run's length bounds the count (``linking``): a target
not linked when the run ended, before MAX_MESSAGES messages were written to it, counts as not linked
within MAX_MESSAGES though a longer run might link it (the table's "cut short" column counts them),
and a correspondent first at the run's last epoch counts as linked though it might drop back after
it (the per-target line gives how many messages each link held over, to the run's end).

The count is of messages, the paper's unit: the attack's epochs follow every delivery to the target,
the delivery receipts for the target's own messages among them (a provider cannot tell those from
messages), but a receipt is not a message written to it, and counting epochs would count each
one (many of a target's epochs are its own messages' receipts). "As few as 5" is the paper's
fastest case, not a median: the table gives the fewest, how many targets were linked within 5
messages, and the median; and, beside the paper's million users, the accounts and sealed
envelopes per 1-second epoch of the run.

It also scores the address join of ``sims.analysis.attribution`` (the attack the fresh-connection
defence is for). With ephemeral mailboxes (Martiny et al.'s sealed conversations), the
conversation's initiator opens a mailbox, and the target's receipts and replies go to it, an
account the relay cannot join to the correspondent: the true correspondent is not linked. On
``sda-martiny-2021`` the attack ranks first, and keeps first, within the same 60 messages, the
mailbox the true correspondent opened for the target, for 11 of 15 targets. For 1 of the others
that mailbox ranked first and dropped back, and the run's end cut 0 of them short (not linked when it
ended, before 60 messages were written to them: the line printed says how many). The other 3 wrote to
their correspondent first: the correspondent's messages then go to the mailbox the target opened, not
to the target's account, and the attack watching that account sees none of them. Variants run in parallel
processes; each run is deterministic.

    relaysim reproduce [SCENARIO] [--targets N] [--workers N]
    python -m relaysim.sims.reproduce [SCENARIO] [--targets N] [--workers N]   (the same)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relaysim.sims.analysis.runfiles import one_line, scenario_arg
from relaysim.sims.numbers import whole_number, workers
from relaysim.sims.scenario import Scenario, ScenarioError, one_profile, resolve_scenario

if TYPE_CHECKING:
    from relaysim.sims.analysis.view import ProviderView
    from relaysim.sims.scoring import GroundTruth

__all__ = [
    "DEFAULT_TARGETS",
    "MAX_MESSAGES",
    "PAPER_CLAIM",
    "VARIANTS",
    "VariantResult",
    "add_parser",
    "main",
    "reproduce",
    "run_variant",
]

PAPER_CLAIM = 'Martiny et al. (NDSS 2021): sealed sender users linked "in as few as 5 messages"'
PAPER_MESSAGES = 5  # the paper's headline figure, the fastest linking it reports
# the paper's simulated world (Martiny et al., NDSS 2021, as docs cite it): a million users, about
# 50 messages a day each, 580-800 messages in each 1-second epoch
PAPER_SCALE = "1,000,000 users, about 580-800 messages per 1-second epoch"
PAPER_PER_ACCOUNT = (580 / 1_000_000, 800 / 1_000_000)  # sealed envelopes per account per 1-second epoch
MAX_MESSAGES = 60  # messages written to a target the attack is given at most
# targets scored per variant, for reproduce() and its command line alike (the README's figure, and
# test_reproduce's run of the built-in scenario, are of 15)
DEFAULT_TARGETS = 15
MAX_TARGETS = 10_000  # --targets: each is an attack of its own, for each variant

# name → the [defences] switches it changes (on top of the scenario's own)
VARIANTS: dict[str, dict[str, Any]] = {
    "as written": {},
    "receipts off": {"receipts": "off"},
    "receipts delayed (0-5 min)": {"receipts": "delayed", "receipt_delay": 300.0},
    "receipts batched (10 min)": {"receipts": "batched", "receipt_batch": 600.0},
    "padding (signal, 160 B)": {"padding": "signal"},
    "fresh connection per sealed send": {"sealed_connection": "fresh", "bundle_fetch": "unauthenticated"},
    "cover traffic (60/h per phone)": {"cover_per_hour": 60.0},
    # the paper's own fix: the initiator's ephemeral mailbox takes the target's receipts and replies
    "sealed conversations (ephemeral mailboxes)": {"mailboxes": "ephemeral"},
}


@dataclass(frozen=True)
class VariantResult:
    name: str
    switches: dict[str, Any]
    targets: int
    # per target: messages people wrote to it until its true correspondent ranked first (None: not
    # within MAX_MESSAGES)
    linked_by: list[int | None]
    sealed_messages: int  # sealed envelopes the relay recorded (receipts and cover among them)
    address_join_correct: float  # share of sealed sends the address join attributed to the true sender
    accounts: int = 0  # accounts the provider knows
    duration: float = 0.0  # seconds the run lasted
    # with [defences] mailboxes = "ephemeral" (else None), per target: messages people wrote to it until
    # the mailbox its true correspondent opened for it ranked first (None: not within MAX_MESSAGES, or
    # no such mailbox)
    mailbox_linked_by: list[int | None] | None = None
    # ... and how many targets' correspondents opened no mailbox for them (the target wrote first)
    no_mailbox: int = 0
    # ... and how many targets with such a mailbox the run's end censored: not linked to it when the run
    # ended, before more than MAX_MESSAGES messages were written to them (``Linking.censored``; None: not
    # known)
    mailbox_cut_short: int | None = None
    # ... and per target, the messages written to it by its last target epoch of the run (as ``seen_by``;
    # None: no mailbox for it), so each mailbox link is given with the messages it held over, as the
    # per-target line gives the correspondent's (None: not known)
    mailbox_seen_by: list[int | None] | None = None
    # per target, for comparison: messages until its true correspondent first ranked first, even if it
    # dropped back later (``messages_until_linked(stays=False)``; None: not within MAX_MESSAGES)
    first_ranked_by: list[int | None] | None = None
    # per target, the messages written to it by its last target epoch of the run: as far as the attack
    # saw (``linking``); with linked_by, the targets the run's end censored and the links' hold
    seen_by: list[int] | None = None

    def censored(self) -> int:
        """Targets not linked when the run ended, before more than MAX_MESSAGES messages were written to
        them: whether a longer run would link them within MAX_MESSAGES, this one cannot say."""
        if self.seen_by is None:
            return 0
        return sum(
            1 for x, n in zip(self.linked_by, self.seen_by, strict=True) if x is None and n <= MAX_MESSAGES
        )

    def held_by(self) -> list[int | None]:
        """Per linked target, the messages written to it after its link, to its last target epoch, over
        which the correspondent stayed first (None: not linked, or seen_by not known)."""
        if self.seen_by is None:
            return [None] * len(self.linked_by)
        return [None if x is None else n - x for x, n in zip(self.linked_by, self.seen_by, strict=True)]

    def linked_within(self, k: int) -> int:
        return sum(1 for x in self.linked_by if x is not None and x <= k)

    def fewest(self) -> int | None:
        return min((x for x in self.linked_by if x is not None), default=None)

    def sealed_per_epoch(self) -> float:
        """Sealed envelopes per 1-second epoch, on average over the run."""
        return self.sealed_messages / self.duration if self.duration > 0 else 0.0


def _targets(scenario: Scenario, truth: Any, n: int) -> list[tuple[str, str]]:
    """(target, true correspondent): accounts that received the most messages from one sender, excluding
    popular accounts (who hear from everyone); ground truth, used only to score."""
    pair = Counter((m.sender, m.recipient) for m in truth.messages)
    received = Counter(m.recipient for m in truth.messages)
    best: dict[str, tuple[int, str]] = {}
    for (s, r), c in pair.items():
        if (c, s) > best.get(r, (0, "")):
            best[r] = (c, s)
    popular = {r for r, _ in received.most_common(scenario.traffic.popular)}
    chosen = sorted((r for r in best if r not in popular and best[r][0] >= 5), key=lambda r: (-best[r][0], r))
    return [(r, best[r][1]) for r in chosen[:n]]


def run_variant(args: tuple[Scenario, str, dict[str, Any], int]) -> VariantResult:
    # (imported here, not with the module: `relaysim --help` builds this command's parser, and the
    # attack's numpy and the phones' cryptography would cost every command their import time)
    from relaysim.sims.analysis.view import from_db

    base, name, switches, n_targets = args
    scenario = replace(base, defences=replace(base.defences, **switches))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        truth, opened = simulate_variant(scenario, db)
        view = from_db(db)
    return score_variant(base, name, switches, n_targets, view, truth, opened)


def simulate_variant(scenario: Scenario, db: Path) -> tuple[GroundTruth, dict[tuple[str, str], str]]:
    """Run ``scenario`` (a variant's, its switches on) into the relay database ``db``: the run's truth,
    and the mailboxes opened ((holder, peer) → the mailbox the holder opened for its conversation with
    peer), what :func:`score_variant` scores the attack on ``db`` against."""
    from relaysim.sims.world.simulation import Simulation

    sim = Simulation(scenario, db_path=db)
    result = sim.run()
    opened: dict[tuple[str, str], str] = {}
    for account, box in sim.mailboxes.items():
        assert box.holder is not None
        for peer, agent in box.holder.agent.mailboxes.items():
            if agent is box.agent:
                opened[(box.holder.spec.person, peer)] = account
    assert result.truth is not None
    return result.truth, opened


def score_variant(
    base: Scenario,
    name: str,
    switches: dict[str, Any],
    n_targets: int,
    view: ProviderView,
    truth: GroundTruth,
    opened: Mapping[tuple[str, str], str],
) -> VariantResult:
    """The attack on what the relay recorded in a variant's run (``view``, read from the database
    :func:`simulate_variant` wrote), scored against its truth: :func:`run_variant`'s result."""
    from relaysim.sims.analysis.attribution import attribute_sealed
    from relaysim.sims.analysis.sda import statistical_disclosure
    from relaysim.sims.analysis_scoring import linking, messages_until_linked

    scenario = replace(base, defences=replace(base.defences, **switches))
    pairs = _targets(base, truth, n_targets)
    # a checkpoint after every target epoch: the count below is of messages, and a target receives
    # receipts for its own messages too, so MAX_MESSAGES messages may take many more epochs
    # only the ranks scored below are kept per checkpoint (the correspondent's, and the mailbox it
    # opened), not every account with a non-zero score
    watch = {t: [c, *([opened[(c, t)]] if (c, t) in opened else [])] for t, c in pairs}
    sda = statistical_disclosure(
        view,
        targets=[t for t, _ in pairs],
        receipts=True,
        epoch=1.0,
        checkpoints=range(1, len(view.observations) + 2),
        keep_top=0,
        watch=watch,
    )
    if pairs and not sda.sealed_messages:  # (then it ranks no target: it has no rankings)
        raise NothingToAttack(
            f"{base.name}: the relay recorded no sealed envelope in the run ({name}), so the attack on "
            "sealed sender has nothing to rank; give a scenario whose people write to each other with "
            "sealed sender on, e.g. sda-martiny-2021"
        )
    written: dict[str, list[float]] = {}
    for m in truth.messages:  # in the order accepted
        written.setdefault(m.recipient, []).append(m.time)
    linked: list[int | None] = []
    first_ranked: list[int | None] = []
    seen: list[int] = []
    for (target, contact), ranking in zip(pairs, sda.rankings, strict=True):
        to_target = sorted(written.get(target, []))
        link = linking(ranking, [contact], to_target, MAX_MESSAGES)
        linked.append(link.messages)
        seen.append(link.seen)
        first_ranked.append(messages_until_linked(ranking, [contact], to_target, MAX_MESSAGES, stays=False))
    mailbox_linked: list[int | None] | None = None
    mailbox_seen: list[int | None] | None = None
    no_mailbox = mailbox_cut_short = 0
    if scenario.defences.mailboxes == "ephemeral":
        mailbox_linked, mailbox_seen = [], []
        for (target, contact), ranking in zip(pairs, sda.rankings, strict=True):
            mailbox = opened.get((contact, target))
            if mailbox is None:
                no_mailbox += 1
                mailbox_linked.append(None)
                mailbox_seen.append(None)
                continue
            boxed = linking(ranking, [mailbox], sorted(written.get(target, [])), MAX_MESSAGES)
            mailbox_linked.append(boxed.messages)
            mailbox_seen.append(boxed.seen)
            mailbox_cut_short += boxed.censored
    # the address join, scored against who really sent each sealed text (receipts and cover are not texts)
    sender_at = {(round(m.time - scenario.epoch, 3), m.recipient): m.sender for m in truth.messages}
    scored = correct = 0
    for a in attribute_sealed(view):
        if a.time is None or a.recipient is None:
            continue
        true = sender_at.get((round(a.time - scenario.epoch, 3), a.recipient))
        if true is None:
            continue
        scored += 1
        correct += a.sender == true
    return VariantResult(
        name,
        switches,
        len(pairs),
        linked,
        sda.sealed_messages,
        correct / max(1, scored),
        accounts=len(view.accounts()),
        duration=scenario.duration,
        mailbox_linked_by=mailbox_linked,
        no_mailbox=no_mailbox,
        mailbox_cut_short=mailbox_cut_short,
        mailbox_seen_by=mailbox_seen,
        first_ranked_by=first_ranked,
        seen_by=seen,
    )


def reproduce(scenario: Scenario, *, targets: int = DEFAULT_TARGETS, workers: int = 2) -> list[VariantResult]:
    from relaysim.sims.world.traffic import expand_population

    one_profile(scenario, "relaysim reproduce")
    scenario = expand_population(scenario)
    jobs = [(scenario, name, sw, targets) for name, sw in VARIANTS.items()]
    if workers <= 1:
        return [run_variant(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run_variant, jobs))


def _median(xs: list[int | None]) -> str:
    known = sorted(x if x is not None else MAX_MESSAGES + 1 for x in xs)
    if not known:
        return "-"
    m = known[len(known) // 2]
    return f"{m}" if m <= MAX_MESSAGES else f">{MAX_MESSAGES}"


def _per_target(linked: int | None, seen: int) -> str:
    """One target's entry in the per-target line: ``k+h`` linked after k messages and held over h more,
    ``?n`` not linked when the run ended n messages in (cut short), ``-`` not linked within MAX_MESSAGES."""
    if linked is not None and linked <= MAX_MESSAGES:
        return f"{linked}+{seen - linked}"
    return f"?{seen}" if seen <= MAX_MESSAGES else "-"


def render(scenario: Scenario, results: list[VariantResult]) -> str:
    base = results[0]
    fewest = base.fewest()
    width = max(len("variant"), *(len(r.name) for r in results))  # the longest name fits its column
    lines = [
        f"statistical disclosure attack on sealed sender: {scenario.name}",
        f"paper: {PAPER_CLAIM}; {PAPER_SCALE}",
        f"here ({base.name}): {base.linked_within(PAPER_MESSAGES)} of {base.targets} targets linked within "
        f"{PAPER_MESSAGES} messages, the fewest {fewest if fewest is not None else '-'}, the median "
        f"{_median(base.linked_by)}; {base.accounts:,} accounts, {base.sealed_per_epoch():.2f} sealed envelopes "
        "per 1-second epoch (receipts included)",
        f"not the paper's rate: {base.sealed_per_epoch() / max(1, base.accounts):.4f} sealed envelopes per account per "
        f"epoch here, {PAPER_PER_ACCOUNT[0]:.5f}-{PAPER_PER_ACCOUNT[1]:.4f} in the paper; its million accounts and "
        "their hours of traffic, each envelope a real Double Ratchet message, are beyond a run (docs/papers.md)",
        "1-second target epochs after each delivery to the target (its own messages' receipts too); +1 per",
        "target epoch, -1 per random epoch; a target is linked after k messages when its true correspondent",
        "ranks first (ties against the attacker) from then on, at every later target epoch of the run, k counting",
        "the messages people wrote to it, as the paper does.",
        f"The run's end censors that count: a target not linked when the run ended, before {MAX_MESSAGES} messages were",
        f"written to it, counts as not linked within {MAX_MESSAGES} (the median too), though a longer run might link it",
        "('cut short' counts them); and a correspondent first at the run's last epoch counts as linked though it",
        "might drop back after it (how many messages each link held over is given per target, below).",
        "",
        f"{'variant':{width}} {'targets':>7} {'median k':>8} {'fewest':>6} {'<=5':>5} {'<=10':>5} {'<=20':>5}"
        f" {f'<={MAX_MESSAGES}':>5} {'cut short':>9} {'address join':>12}",
    ]
    for r in results:
        low = r.fewest()
        lines.append(
            f"{r.name:{width}} {r.targets:>7} {_median(r.linked_by):>8} {low if low is not None else '-':>6}"
            f" {r.linked_within(5):>5} {r.linked_within(10):>5} {r.linked_within(20):>5}"
            f" {r.linked_within(MAX_MESSAGES):>5} {r.censored() if r.seen_by is not None else '-':>9}"
            f" {r.address_join_correct:>12.0%}"
        )
    lines.append("")
    for r in results:
        if r.mailbox_linked_by is None:
            continue
        ranked = sum(1 for x in r.mailbox_linked_by if x is not None)
        lines.append(
            f"{r.name}: the mailbox a target's true correspondent opened for it ranks first, and stays first, "
            f"within {MAX_MESSAGES} messages for {ranked} of {r.targets} targets"
            + (
                ""
                if r.mailbox_cut_short is None
                else f" ({r.mailbox_cut_short} of the others cut short: not linked when the run ended, before "
                f"{MAX_MESSAGES} messages were written to them; a longer run might link them)"
            )
            + f"; {r.no_mailbox} wrote to their correspondent first, whose messages then went to the target's "
            "own mailbox"
        )
        if r.mailbox_seen_by is not None:
            seen_by = r.mailbox_seen_by
            held = [
                n - x
                for x, n in zip(r.mailbox_linked_by, seen_by, strict=True)
                if x is not None and n is not None
            ]
            lines.append(
                f"the mailbox linked after k messages, per target ({r.name}; k+h: linked after k, and first over "
                f"the h messages written to it after, to the run's end; -: not within {MAX_MESSAGES}; ?n: not "
                "linked when the run ended, n messages in, cut short; x: no mailbox opened for it): "
                + " ".join(
                    "x" if n is None else _per_target(x, n)
                    for x, n in zip(r.mailbox_linked_by, seen_by, strict=True)
                )
                + (
                    f"; the fewest messages a link held over, {min(held)}, the median {sorted(held)[len(held) // 2]}"
                    if held
                    else ""
                )
            )
    if base.seen_by is None:
        lines.append(
            f"linked after k messages, per target ({base.name}; -: not within {MAX_MESSAGES}): "
            + " ".join(str(x) if x is not None and x <= MAX_MESSAGES else "-" for x in base.linked_by)
        )
    else:
        held = [h for h in base.held_by() if h is not None]
        lines.append(
            f"linked after k messages, per target ({base.name}; k+h: linked after k, and first over the h messages "
            f"written to it after, to the run's end; -: not within {MAX_MESSAGES}; ?n: not linked when the run "
            f"ended, n messages in, cut short): "
            + " ".join(_per_target(x, n) for x, n in zip(base.linked_by, base.seen_by, strict=True))
            + (
                f"; the fewest messages a link held over, {min(held)}, the median {sorted(held)[len(held) // 2]}"
                if held
                else ""
            )
        )
    if base.first_ranked_by is not None:
        first = base.first_ranked_by
        low = min((x for x in first if x is not None), default=None)
        lines.append(
            f"counted instead at the first epoch the correspondent ranked first, even where it dropped back "
            f"later (no attacker could tell that epoch from a lucky one): {sum(1 for x in first if x is not None and x <= PAPER_MESSAGES)} "
            f"of {base.targets} within {PAPER_MESSAGES} messages, the fewest {low if low is not None else '-'}, "
            f"the median {_median(first)}; per target: "
            + " ".join(str(x) if x is not None and x <= MAX_MESSAGES else "-" for x in first)
        )
    return "\n".join(lines)


DESCRIPTION = "\n\n".join(
    [
        textwrap.fill(
            'Reproduce Martiny, Kaptchuk, Aviv, Roche and Wustrow, "Improving Signal\'s Sealed Sender" (NDSS '
            '2021): with delivery receipts on, a provider "could link sealed sender users in as few as 5 '
            'messages", by a statistical disclosure attack on the recipients and times of sealed envelopes '
            "alone. Runs the scenario (default: the built-in sda-martiny-2021, 40 people for an hour) once as "
            "written and once with each defence switched on, runs the attack on what the relay recorded, and "
            "prints the paper's figure beside ours.",
            100,
        ),
        "variants (the [defences] switches each turns on):\n"
        + "\n".join(
            f"  {name:{max(map(len, VARIANTS))}}   "
            + (", ".join(f"{k} = {json.dumps(v)}" for k, v in sw.items()) or "(none)")
            for name, sw in VARIANTS.items()
        ),
        textwrap.fill(
            "printed: one row per variant: for how many targets the true correspondent ranked first, and stayed "
            "first to the run's end, within 5, 10, 20 and 60 messages people wrote to the target, the median and "
            "the fewest it took, how many targets the run ended for before 60 messages, not yet linked (cut short: "
            "a longer run might link them), and the "
            "share of sealed sends whose sender the address join (network address and time) named correctly; "
            "with ephemeral mailboxes, for how many targets the mailbox the correspondent opened ranked first "
            "instead; last, the messages each target took as written and how many more each link held over to the "
            "run's end, and what counting at the first epoch the "
            "correspondent ranked first (even where it dropped back) would give. Nothing is written to disk; each run is "
            "deterministic, so the same scenario prints the same bytes.",
            100,
        ),
        textwrap.fill(
            "time: the built-in scenario's 8 runs, each a whole simulation of real Double Ratchet traffic, and "
            "their attacks, on --workers processes; how long is the machine's (no test or benchmark measures "
            "it), and grows with a larger scenario.",
            100,
        ),
    ]
)


def _add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "scenario",
        nargs="?",
        default="sda-martiny-2021",
        type=scenario_arg,
        metavar="NAME_OR_PATH",
        help="a built-in scenario or a .toml file (default: sda-martiny-2021)",
    )
    p.add_argument(
        "--targets",
        type=whole_number("targets", 1, MAX_TARGETS, why="each is an attack of its own, for each variant"),
        default=DEFAULT_TARGETS,
        metavar="N",
        help=f"targets to attack per variant: the accounts that heard most from one correspondent, popular "
        f"accounts left out (default: {DEFAULT_TARGETS}; fewer if the scenario has fewer)",
    )
    p.add_argument(
        "--workers",
        type=workers(),
        default=2,
        metavar="N",
        help="variants run at once, each in its own process (default: 2)",
    )
    return p


EPILOG = (
    "examples:\n  relaysim reproduce\n  relaysim reproduce --targets 5 --workers 4\n"
    "  relaysim reproduce my-world.toml     # your own scenario file: the same attack and defences on it\n"
    "  python -m relaysim.sims.reproduce    # the same, as a module"
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``reproduce`` subcommand, added to ``relaysim``'s subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "reproduce",
        help="reproduce Martiny et al.'s attack on sealed sender (NDSS 2021), and each defence against it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _add_arguments(p)


def run(args: argparse.Namespace, prog: str = "relaysim reproduce") -> int:
    """``relaysim reproduce`` (and the module): 0 when done, 2 for a scenario that cannot be used."""
    try:
        scenario = resolve_scenario(args.scenario)
        one_profile(scenario, "relaysim reproduce")
        _attackable(scenario)
        results = reproduce(scenario, targets=args.targets, workers=args.workers)
    except (ScenarioError, ValueError, OSError, NothingToAttack) as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return 2
    print(render(scenario, results))
    return 0


class NothingToAttack(Exception):
    """A scenario whose relay records no sealed envelope: the attack ranks nothing (it was an
    internal error, ``zip() argument 2 is shorter than argument 1``, after every variant had run)."""


def _attackable(scenario: Scenario) -> None:
    """NothingToAttack for a scenario whose phones do not send sealed (the scenario's [relay]
    sealed_sender, else its provider's default), said before anything runs: the relay sees each
    sender, and the attack on sealed sender has nothing to find."""
    from relaysim.sims.world.timeline import provider, sealed_sender

    if not sealed_sender(scenario, provider(scenario)):
        raise NothingToAttack(
            f"{scenario.name}: its phones do not send sealed (it sets no relay.sealed_sender = true, and its "
            f"relay's profile, {scenario.relay.profile}, does not by default), so the relay sees every sender "
            "and the attack on sealed sender has nothing to find; give a scenario with sealed_sender = true "
            "under [relay], e.g. sda-martiny-2021"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m relaysim.sims.reproduce``: the same arguments and output as ``relaysim reproduce``."""
    prog = "python -m relaysim.sims.reproduce"
    ap = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = _add_arguments(ap).parse_args(argv)
    return run(args, prog)


if __name__ == "__main__":
    sys.exit(main())
