"""``relaysim bench analysis``: what the statistical disclosure attack costs on a day of a big provider's traffic.

The attack on sealed sender (``sims.analysis.sda``; Martiny et al., NDSS 2021) over --messages
sealed messages (1,000,000 by default), from one day of synthetic traffic: --people accounts
(10,000) on a Barabási–Albert graph (m = 3, networkx; the model of the generated populations), each
message written by a person drawn at random to one of their contacts, at the times of a Poisson
process over the day, and each answered by a delivery receipt — itself a sealed message, back to
the writer 0.5 to 0.9 s later, as Signal's phones send them — so half the messages are receipts.
Of each, the provider's view holds what the relay sees: its recipient and its time (a
``sims.analysis.view.Obs`` of kind ``sealed_send``, no sender). The attack runs on that view with
its defaults (the 150 accounts that received the most, Martiny et al.'s one-second epochs:
``statistical_disclosure(view, receipts=True)``), --repeat times; the median is judged. Its rankings
are held to the attack's bound (1 GiB, ``sims.analysis.sda.MAX_RANKING_BYTES``; far from reached at
the defaults): traffic whose rankings would grow past it is refused, naming --people and --messages,
not left to fill the machine's memory. Building the
view is timed apart, for information (``relaysim analyze`` reads it from a run's relay.db instead).

Target (issue #11, docs/performance.md): the attack over 1,000,000 sealed messages in under a
minute on this machine; judged only at that many messages or more. Beside it, what the attack found
on this traffic: the share of its targets whose best-ranked account is one of their contacts (a
bench whose traffic the attack could not read would be timing the wrong thing).

With --keep-top K, also what ``statistical_disclosure(keep_top=K)`` saves where the reproduction uses
it (``relaysim reproduce``: a checkpoint after every target epoch, only the best K and the correspondents'
ranks kept): for the --keep-top-targets busiest targets (10), a checkpoint after each of their first
200 epochs (and their last), the attack with the full ranking (``keep_top=None``: every account with a non-zero score
ranked at every checkpoint, what keep_top cost before it updated only the accounts whose scores
changed) and with keep_top, --repeat times each; printed as the ratio of their medians, whole and
with the rest of the attack (one checkpoint per target, timed apart) taken off both. The best K
and the ranks of each target's contacts are checked to be the full ranking's. For information: no
target is set for it. The full ranking is held to the attack's bound too (1 GiB): before it is timed,
a pass with keep_top counts the accounts it would keep (16 bytes each, at every checkpoint), and
past the bound it is refused, naming --keep-top-targets and --people, not left to fill the memory.

A sweep's use of both cores, the other speed target of issue #11, has a benchmark of its own:
``relaysim bench sweep`` (``sims/bench/sweep.py``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

import networkx as nx

from relaysim.sims.analysis import sda
from relaysim.sims.analysis.sda import CHECKPOINTS, RankingBoundError, statistical_disclosure
from relaysim.sims.analysis.view import Obs, ProviderView
from relaysim.sims.bench import harness
from relaysim.sims.numbers import state_bounds, whole_number
from relaysim.sims.scenario import seed_arg

__all__ = ["TARGET", "main", "synthetic_day"]

DAY: Final = 86_400.0
TARGET_MESSAGES: Final = 1_000_000
TARGET = harness.Target("sda_seconds", "SDA over the sealed messages: seconds (median)", "<=", 60.0)
RECEIPT_DELAY: Final = (0.5, 0.9)  # seconds after the message, the receipt's sealed send


def synthetic_day(people: int, messages: int, seed: int = 1) -> tuple[ProviderView, dict[str, set[str]]]:
    """One day of sealed traffic among ``people`` on a Barabási–Albert graph (m = 3): ``messages``
    sealed sends in all, each written message followed by its delivery receipt; the provider's view
    (recipient and time of each, in time order) and everyone's contacts (the ground truth)."""
    graph = nx.barabasi_albert_graph(people, 3, seed=seed)
    names = [f"p{i:06d}" for i in range(people)]
    contacts = [list(graph.neighbors(i)) for i in range(people)]
    rng = random.Random(seed)
    written = messages // 2
    rate = written / DAY
    lo, hi = RECEIPT_DELAY
    obs: list[Obs] = []
    t = 0.0
    for _ in range(written):
        t += rng.expovariate(rate)
        writer = rng.randrange(people)
        reader = rng.choice(contacts[writer])
        obs.append(Obs("sealed_send", t, recipient_account=names[reader], recipient_device=1))
        receipt_at = t + lo + rng.random() * (hi - lo)
        obs.append(Obs("sealed_send", receipt_at, recipient_account=names[writer], recipient_device=1))
    if messages % 2:  # an odd count: one last message without its receipt
        t += rng.expovariate(rate)
        writer = rng.randrange(people)
        reader = rng.choice(contacts[writer])
        obs.append(Obs("sealed_send", t, recipient_account=names[reader], recipient_device=1))
    obs.sort(key=lambda o: o.time or 0.0)
    truth = {names[i]: {names[j] for j in contacts[i]} for i in range(people)}
    return ProviderView("bench analysis: a synthetic day", tuple(obs)), truth


@dataclass
class Report:
    config: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, Any] = field(default_factory=dict)


KEEP_TOP_EPOCHS: Final = 200  # checkpoints after each of a target's first this many epochs
# the most bytes the full ranking --keep-top is timed against may keep (None: the attack's own bound,
# sims.analysis.sda.MAX_RANKING_BYTES as it is when called, 1 GiB)
FULL_RANKING_BYTES: int | None = None


def keep_top_cost(
    view: ProviderView, truth: dict[str, set[str]], keep_top: int, targets: int, repeat: int
) -> dict[str, Any]:
    """The attack with a checkpoint after each of the first :data:`KEEP_TOP_EPOCHS` epochs (and the last),
    for the ``targets`` busiest targets: seconds with the full ranking, with ``keep_top``, and with one
    checkpoint per target (the rest of the attack), ``repeat`` times each; and whether what keep_top kept is the full ranking's."""
    chosen = [
        r.target
        for r in statistical_disclosure(view, receipts=True, max_targets=targets, checkpoints=()).rankings
    ]
    every = range(1, KEEP_TOP_EPOCHS + 1)
    watch = {t: sorted(truth.get(t, ())) for t in chosen}
    # what the full ranking would keep, counted before it runs: every account with a non-zero score at
    # each checkpoint, 16 bytes each (its index and its score), which keep_top counts without keeping
    bound = FULL_RANKING_BYTES if FULL_RANKING_BYTES is not None else sda.MAX_RANKING_BYTES
    counted = statistical_disclosure(view, targets=chosen, receipts=True, checkpoints=every, keep_top=0)
    full_bytes = 16 * sum(sum(r.nonzero()) for r in counted.rankings)
    if full_bytes > bound:
        raise harness.BenchError(
            f"--keep-top-targets {targets:,} and --people {len(truth):,}: the full ranking --keep-top is timed "
            f"against would keep {full_bytes:,} bytes (every account with a non-zero score at each of "
            f"{sum(len(r.checkpoints()) for r in counted.rankings):,} checkpoints), past the bound of {bound:,} "
            f"({'sims.analysis.sda.MAX_RANKING_BYTES' if FULL_RANKING_BYTES is None else 'FULL_RANKING_BYTES'}); "
            "ask for fewer --keep-top-targets or --people"
        )
    del counted
    runs: dict[str, list[float]] = {"full": [], "keep_top": [], "rest": []}
    same = True
    checkpoints = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        statistical_disclosure(view, targets=chosen, receipts=True, checkpoints=())
        runs["rest"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        # (the full ranking at every checkpoint is what keep_top is measured against: counted above,
        # within the bound)
        full = statistical_disclosure(
            view, targets=chosen, receipts=True, checkpoints=every, max_ranking_bytes=bound
        )
        runs["full"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kept = statistical_disclosure(
            view, targets=chosen, receipts=True, checkpoints=every, keep_top=keep_top, watch=watch
        )
        runs["keep_top"].append(time.perf_counter() - t0)
        checkpoints = sum(len(f.checkpoints()) for f in full.rankings)
        for f, r in zip(full.rankings, kept.rankings, strict=True):
            for k in f.checkpoints():
                same = same and r.top(k, keep_top) == f.top(k, keep_top)
                same = same and all(r.rank(a, k) == f.rank(a, k) for a in watch[f.target])
        del full, kept
    med = {name: statistics.median(v) for name, v in runs.items()}
    return {
        "keep_top": keep_top,
        "targets": len(chosen),
        "checkpoints": checkpoints,
        "seconds": runs,
        "median_seconds": med,
        "full_over_keep_top": med["full"] / med["keep_top"] if med["keep_top"] > 0 else None,
        "ranking_full_over_keep_top": (
            (med["full"] - med["rest"]) / (med["keep_top"] - med["rest"])
            if med["keep_top"] > med["rest"]
            else None
        ),
        "identical": same,
    }


def _target_for(messages: int) -> harness.Target:
    """The target, judged only at the size it is set for (below it: for information)."""
    bound = TARGET.bound if messages >= TARGET_MESSAGES else None
    label = f"SDA over {messages:,} sealed messages: seconds (median)"
    return harness.Target(TARGET.key, label, TARGET.comparison, bound)


def measure(args: argparse.Namespace, report: Report, progress: harness.Progress) -> None:
    progress("making the day's traffic")
    t0 = time.perf_counter()
    view, truth = synthetic_day(args.people, args.messages, args.seed)
    built = time.perf_counter() - t0
    runs: list[float] = []
    result = None
    for r in range(args.repeat):
        progress(f"the attack, run {r + 1} of {args.repeat}", r, args.repeat)
        t0 = time.perf_counter()
        try:
            result = statistical_disclosure(view, receipts=True)
        except RankingBoundError as exc:
            # the attack as `relaysim analyze` runs it keeps every account with a non-zero score at each
            # checkpoint, within the attack's bound on rankings (sims.analysis.sda.MAX_RANKING_BYTES):
            # past it, the bench's traffic is refused by the options that make it, not left to a traceback
            raise harness.BenchError(
                f"--people {args.people:,} and --messages {args.messages:,}: the attack's rankings (every "
                f"account with a non-zero score, at each of {len(CHECKPOINTS)} checkpoints of up to 150 "
                f"targets) reached {exc.kept:,} bytes, past its bound of {exc.bound:,} "
                "(sims.analysis.sda.MAX_RANKING_BYTES); ask for fewer --messages or --people"
            ) from None
        runs.append(time.perf_counter() - t0)
    assert result is not None
    progress("done", args.repeat, args.repeat)
    found = sum(1 for t in result.rankings if (top := t.top(n=1)) and top[0][0] in truth.get(t.target, ()))
    seconds = statistics.median(runs)
    report.results = {
        "messages": len(view.observations),
        "people": args.people,
        "view_seconds": built,
        "attack_seconds": runs,
        "attack_median_seconds": seconds,
        "targets": len(result.rankings),
        "targets_best_ranked_a_contact": found,
        "epoch_seconds": result.epoch,
    }
    report.ratios[TARGET.key] = harness.target_row(_target_for(args.messages), seconds)
    if args.keep_top is not None:
        progress("keep_top against the full ranking", args.repeat, args.repeat)
        report.results["keep_top"] = keep_top_cost(
            view, truth, args.keep_top, args.keep_top_targets, args.repeat
        )


def format_report(report: Report) -> str:
    cfg, r = report.config, report.results
    share = r["targets_best_ranked_a_contact"] / r["targets"] if r["targets"] else 0.0
    runs = " ".join(f"{s:.2f}" for s in r["attack_seconds"])
    lines = [
        f"relaysim bench analysis — Python {cfg['python']}, {cfg['machine']}{harness.load_text(cfg.get('load_average'))}",
        "",
        f"the statistical disclosure attack on sealed sender — {r['messages']:,} sealed messages (each "
        f"written one followed by its receipt) among {r['people']:,} people, one day",
        f"  the attack: {r['targets']} targets, {r['epoch_seconds']:g}-second epochs: "
        f"{r['attack_median_seconds']:.2f} s (median of {len(r['attack_seconds'])} runs: {runs})",
        f"  building the provider's view, for information: {r['view_seconds']:.2f} s",
        f"  targets whose best-ranked account is one of their contacts: {r['targets_best_ranked_a_contact']} "
        f"of {r['targets']} ({share:.0%})",
        "",
    ]
    kt = r.get("keep_top")
    if kt is not None:
        med = kt["median_seconds"]
        ranking = kt["ranking_full_over_keep_top"]
        lines += [
            f"keep_top = {kt['keep_top']} against the full ranking, a checkpoint after each of the first "
            f"{KEEP_TOP_EPOCHS} epochs of the {kt['targets']} busiest targets "
            f"({kt['checkpoints']:,} checkpoints), medians of {len(kt['seconds']['full'])} runs:",
            f"  full ranking {med['full']:.2f} s, keep_top {med['keep_top']:.2f} s: "
            f"{kt['full_over_keep_top']:.2f} x; the ranking alone (one checkpoint per target, "
            f"{med['rest']:.2f} s, off both): " + (f"{ranking:.1f} x" if ranking is not None else "-"),
            "  what keep_top kept is the full ranking's: " + ("yes" if kt["identical"] else "NO"),
            "",
        ]
    row = report.ratios[TARGET.key]
    if row["target"] is None:
        lines.append(
            f"target ({harness.DOC}): the attack over {TARGET_MESSAGES:,} sealed messages ≤ {TARGET.bound:.0f} s — "
            f"not judged at {r['messages']:,} (information)"
        )
    else:
        verdict = "met" if row["met"] else "MISSED"
        lines.append(
            f"target ({harness.DOC}): the attack over {TARGET_MESSAGES:,} sealed messages ≤ {row['target']:.0f} s — "
            f"{verdict} ({row['value']:.2f} s at {r['messages']:,})"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = harness.make_parser(
        "relaysim bench analysis",
        __doc__,
        [
            "relaysim bench analysis",
            "relaysim bench analysis --messages 200000 --people 2000 --json sda.json",
            "relaysim bench analysis --check",
        ],
    )
    p.add_argument(
        "--messages",
        type=whole_number("messages", 1, 10 * TARGET_MESSAGES, why="ten times the target's"),
        default=TARGET_MESSAGES,
        metavar="M",
        help=f"sealed messages in the day, receipts included (default: {TARGET_MESSAGES:,})",
    )
    p.add_argument(
        "--people",
        # (at least 4: a Barabási–Albert graph with m = 3 needs more than 3)
        type=whole_number("accounts", 4, 1_000_000),
        default=10_000,
        metavar="N",
        help="accounts (default: 10,000)",
    )
    p.add_argument(
        "--repeat",
        type=whole_number("runs", 1, 1_000),
        default=3,
        metavar="R",
        help="runs of the attack (default: 3)",
    )
    p.add_argument("--seed", type=seed_arg, default=1, help="seed of the graph and the traffic (default: 1)")
    p.add_argument(
        "--keep-top",
        type=whole_number("accounts", 0, 1_000_000),
        metavar="K",
        help="also time statistical_disclosure(keep_top=K) against the full ranking, a checkpoint after "
        "every epoch (default: none: not timed)",
    )
    p.add_argument(
        "--keep-top-targets",
        type=whole_number("targets", 1, 10_000),
        default=10,
        metavar="T",
        help="targets for --keep-top (default: 10)",
    )
    harness.add_common_options(p)
    return state_bounds(p)


def main(argv: list[str]) -> int:
    """``relaysim bench analysis [options]``; the exit status (0; 1 if, with --check, the target was
    not met; 2 on bad options)."""
    parser = _parser()
    args = parser.parse_args(argv)
    report = Report(
        {
            "messages": args.messages,
            "people": args.people,
            "repeat": args.repeat,
            "keep_top": args.keep_top,
            "keep_top_targets": args.keep_top_targets,
            "seed": args.seed,
            **harness.machine_config(),
        }
    )

    def run(progress: harness.Progress) -> dict[str, Any]:
        measure(args, report, progress)
        return report.__dict__

    return harness.run_bench(
        "analysis", args, run, lambda _d: format_report(report), lambda _d: list(report.ratios.values())
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
