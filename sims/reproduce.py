"""Reproduce Martiny et al.'s statistical disclosure attack on sealed sender, and each defence against it.

Martiny, Kaptchuk, Aviv, Roche and Wustrow, "Improving Signal's Sealed Sender" (NDSS 2021): with
delivery receipts on, the provider "could link sealed sender users in as few as 5 messages". This
runs a scenario (by default the built-in ``sda-martiny-2021``) once as written and once with each
defence switched on (``[defences]`` in sims.scenario), runs the attack of ``sims.analysis.sda`` on
what the relay recorded (recipients and times only, 1-second epochs after each delivery to the
target), and prints, per variant, how many messages to a target it took before the target's true
correspondent ranked first (ties counted against the attacker), beside the paper's claim. It also
scores the address join of ``sims.analysis.attribution`` (the attack the fresh-connection defence
is for). With ephemeral mailboxes (Martiny et al.'s sealed conversations), the target's receipts go to
an account the relay cannot join to the correspondent: the attack still ranks that mailbox first,
but the true correspondent is not linked. Variants run in parallel processes; each run is deterministic.

    python -m relaysim.sims.reproduce [SCENARIO] [--targets N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relaysim.sims.analysis.attribution import attribute_sealed
from relaysim.sims.analysis.sda import statistical_disclosure
from relaysim.sims.analysis.view import from_db
from relaysim.sims.scenario import Scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation
from relaysim.sims.world.traffic import expand_population

__all__ = ["PAPER_CLAIM", "VARIANTS", "VariantResult", "main", "reproduce", "run_variant"]

PAPER_CLAIM = 'Martiny et al. (NDSS 2021): sealed sender users linked "in as few as 5 messages"'
MAX_EPOCHS = 60

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
    linked_by: list[
        int | None
    ]  # per target: messages until its true correspondent ranked first (None: never)
    sealed_messages: int
    address_join_correct: float  # share of sealed sends the address join attributed to the true sender

    def linked_within(self, k: int) -> int:
        return sum(1 for x in self.linked_by if x is not None and x <= k)


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
    base, name, switches, n_targets = args
    scenario = replace(base, defences=replace(base.defences, **switches))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        result = Simulation(scenario, db_path=db).run()
        view = from_db(db)
    truth = result.truth
    assert truth is not None
    pairs = _targets(base, truth, n_targets)
    sda = statistical_disclosure(
        view, targets=[t for t, _ in pairs], receipts=True, epoch=1.0, checkpoints=range(1, MAX_EPOCHS + 1)
    )
    linked: list[int | None] = []
    for (_target, contact), ranking in zip(pairs, sda.rankings, strict=True):
        first = next((k for k in ranking.checkpoints() if ranking.rank(contact, k) == 1), None)
        linked.append(first)
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
    return VariantResult(name, switches, len(pairs), linked, sda.sealed_messages, correct / max(1, scored))


def reproduce(scenario: Scenario, *, targets: int = 20, workers: int = 2) -> list[VariantResult]:
    scenario = expand_population(scenario)
    jobs = [(scenario, name, sw, targets) for name, sw in VARIANTS.items()]
    if workers <= 1:
        return [run_variant(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run_variant, jobs))


def _median(xs: list[int | None]) -> str:
    known = sorted(x if x is not None else 10**9 for x in xs)
    if not known:
        return "-"
    m = known[len(known) // 2]
    return f"{m}" if m < 10**9 else f">{MAX_EPOCHS}"


def render(scenario: Scenario, results: list[VariantResult]) -> str:
    lines = [
        f"statistical disclosure attack on sealed sender: {scenario.name}",
        f"paper: {PAPER_CLAIM}",
        "1-second target epochs after each delivery to the target; +1 per target epoch, -1 per random epoch;",
        "a target is linked after k messages when its true correspondent ranks first (ties against the attacker).",
        "",
        f"{'variant':36} {'targets':>7} {'median k':>8} {'<=5':>5} {'<=10':>5} {'<=20':>5} {f'<={MAX_EPOCHS}':>5}"
        f" {'address join':>12}",
    ]
    for r in results:
        lines.append(
            f"{r.name:36} {r.targets:>7} {_median(r.linked_by):>8} {r.linked_within(5):>5} {r.linked_within(10):>5}"
            f" {r.linked_within(20):>5} {r.linked_within(MAX_EPOCHS):>5} {r.address_join_correct:>11.0%}"
        )
    lines.append("")
    lines.append(
        "linked after k messages, per target (as written): "
        + " ".join(str(x) if x is not None else "-" for x in results[0].linked_by)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m relaysim.sims.reproduce", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("scenario", nargs="?", default="sda-martiny-2021")
    ap.add_argument("--targets", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    from relaysim.sims.scenario import ScenarioError

    try:
        scenario = resolve_scenario(args.scenario)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"python -m relaysim.sims.reproduce: {exc}", file=sys.stderr)
        return 2
    print(render(scenario, reproduce(scenario, targets=args.targets, workers=args.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
