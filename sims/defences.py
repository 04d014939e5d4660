"""What each defence buys against a provider that watches its relay: ``relaysim defences``.

Runs one scenario (by default the built-in ``sealed-sender-leaks``: a Signal-profile relay, sealed
sender on) once as written and once with each ``[defences]`` switch on (``sims.scenario``), each
into ``DIR/<variant>/``, then ``relaysim analyze --as-seen`` on each (``DIR/<variant>/analysis/as-seen/``):
the analyses of what the relay *saw* (``relay-view.jsonl``), scored against the run's ground truth.
Prints, and writes to ``DIR/defences.md`` and ``defences.json``, one row per variant:

- sealed-sender attribution by address and connection (``sims.analysis.attribution``), over the
  sealed sends of messages people wrote: precision and recall;
- the contact graph rebuilt from those attributions: precision and recall;
- the statistical disclosure attack (Martiny et al., NDSS 2021; ``sims.analysis.sda``) from
  recipients and times alone: for how many targets a true contact ranks first, and stays first at
  every later target epoch of the run, within :data:`MAX_K` messages written to the target, and the median number of them it took (messages,
  as the paper counts: the attack's epochs also follow the receipts for the target's own
  messages, which are not messages written to it);
- the first-contact size channel (``sims.analysis.sizes``): session-opening envelopes flagged by
  size, precision and recall;
- what the defence costs: median delivery latency, and sealed envelopes the relay carried per
  message written (receipts, cover, mailbox traffic).

Variants run in parallel worker processes; every run is deterministic, so the table is too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relaysim.sims.analysis.runfiles import SDA_TOP, out_folder, read_run_text, scenario_arg
from relaysim.sims.numbers import add_sda_top
from relaysim.sims.numbers import workers as workers_arg
from relaysim.sims.scenario import Scenario, ScenarioError, one_profile, resolve_scenario

if TYPE_CHECKING:
    from relaysim.sims.analysis.sda import TargetRanking
    from relaysim.sims.analysis_scoring import Truth

__all__ = ["DEFAULT_SCENARIO", "MAX_K", "VARIANTS", "measure", "render", "run_defences", "sda_row"]

DEFAULT_SCENARIO = "sealed-sender-leaks"
MAX_K = 60  # messages written to a target the timing attack is given at most

# name → (folder, the [defences] switches it changes on top of the scenario's own)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "as written": ("as-written", {}),
    "receipts off": ("receipts-off", {"receipts": "off"}),
    "receipts delayed (0-5 min)": ("receipts-delayed", {"receipts": "delayed", "receipt_delay": 300.0}),
    "receipts batched (10 min)": ("receipts-batched", {"receipts": "batched", "receipt_batch": 600.0}),
    "padding off": ("padding-none", {"padding": "none"}),
    "padding to powers of 2": ("padding-pow2", {"padding": "pow2"}),
    "fresh connection per sealed send": (
        "fresh-connections",
        {"sealed_connection": "fresh", "bundle_fetch": "unauthenticated"},
    ),
    "cover traffic (60/h per phone)": ("cover", {"cover_per_hour": 60.0}),
    "sealed conversations (ephemeral mailboxes)": ("mailboxes", {"mailboxes": "ephemeral"}),
}


class DefencesError(Exception):
    """Bad input to ``relaysim defences``; the message names it."""


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


def measure(run: Path, sda_top: int = SDA_TOP) -> dict[str, Any]:
    """``relaysim analyze RUN --as-seen --sda-top SDA_TOP``, then one row of the table from its files and
    the transcript."""
    # Imported here, not with the module: the CLI imports this module to build its parser, and the
    # analyses bring numpy and networkx (~0.2 s of every command's start-up, --help's too).
    from relaysim.sims.analysis_scoring import AS_SEEN, analyse_and_write, read_truth

    truth = read_truth(run / "transcript.jsonl")
    # with the truth, the analysis takes the timing attack once, with a checkpoint after every target
    # epoch keeping the ranks of each target's true contacts: the pass sda_row scores below
    _, analyses = analyse_and_write(run, as_seen=True, truth=truth, sda_top=sda_top)
    relay = analyses.get("relay")
    every_epoch = None if relay is None else relay.sda_every_epoch
    if every_epoch is None:  # (made with sda_watch: analyse_and_write was given the truth; never without)
        raise RuntimeError(
            f"relaysim defences: the analysis of {run} as seen gave no disclosure attack's pass with a "
            "checkpoint after every target epoch (sda_every_epoch), which the SDA cells are scored from"
        )
    data = json.loads(read_run_text(run / "analysis" / AS_SEEN / "relay.json"))
    score, analysis = data["score"], data["analysis"]
    # attribution, over the sealed sends of messages someone wrote (receipts and cover are not texts)
    judged = attributed = correct = 0
    for a in analysis["sealed_sender_attribution"]["attributions"]:
        if truth.what_was(a["envelope_id"], a["time"], a["recipient"]) != "message":
            continue
        judged += 1
        if a["sender"] is not None:
            attributed += 1
            correct += a["sender"] == truth.sender_of(a["envelope_id"], a["time"], a["recipient"])
    summary = json.loads(read_run_text(run / "summary.json"))
    sealed = data["kept_beside_seen"]["by_kind"].get("sealed_send", {}).get("seen", 0)
    written = len(truth.messages)
    graph, sizes = score["contact_graph"], score["sizes"]
    return {
        "attribution": {
            "sealed_message_records": judged,
            "attributed": attributed,
            "correct": correct,
            "precision": _ratio(correct, attributed),
            "recall": _ratio(correct, judged),
        },
        "contact_graph": {k: graph[k] for k in ("true_pairs", "inferred_pairs", "precision", "recall")},
        # the timing attack, message by message up to MAX_K (a checkpoint after every target epoch: MAX_K
        # messages may take many more epochs): when does a true contact rank first and stay first?
        "sda": sda_row(every_epoch.rankings, truth),
        "first_contact_by_size": {
            k: sizes[k] for k in ("flagged", "session_opening_envelopes", "precision", "recall")
        },
        # what padding is for: how well an envelope's size gives away the length of the text
        "size_vs_plaintext_length_correlation": sizes["size_vs_plaintext_length_correlation"],
        "cost": {
            "latency_p50_s": summary.get("latency_s", {}).get("p50"),
            "messages_written": written,
            "sealed_envelopes_seen": sealed,
            "sealed_envelopes_per_message": _ratio(sealed, written),
        },
    }


def sda_row(rankings: Iterable[TargetRanking], truth: Truth) -> dict[str, Any]:
    """The table's SDA cells: per target with true contacts, the messages written to it until one
    of them ranked first and stayed first at every later target epoch of the run
    (``messages_until_linked``), counted within :data:`MAX_K`; and how many targets the run ended for
    before MAX_K messages were written to them, not linked (cut short: ``linking``). Which are not
    scored: the accounts with a correspondent the attack took no target (``not_ranked``: it takes
    those with the most epochs, 5 or more, ``sims.analysis.sda.statistical_disclosure``), and how many
    of its targets had none (``ranked_without_contacts``: an ephemeral mailbox, to which the truth
    has no message written, what is written to it being its holder's)."""
    from relaysim.sims.analysis_scoring import linking

    written: dict[str, list[float]] = {}
    for t, _sender, recipient, _id in truth.messages:
        written.setdefault(recipient, []).append(t)
    with_contacts = truth.all_contacts()
    linked: list[int | None] = []
    cut_short = without_contacts = 0
    ranked: set[str] = set()
    for r in rankings:
        ranked.add(r.target)
        contacts = truth.contacts(r.target)
        if not contacts:
            without_contacts += 1
            continue
        link = linking(r, contacts, sorted(written.get(r.target, [])), MAX_K)
        linked.append(link.messages)
        cut_short += link.censored
    found = sorted(k for k in linked if k is not None)
    return {
        "targets": len(linked),
        "linked_within_max_k": len(found),
        "max_k": MAX_K,
        "linked_means": "a true contact ranks first (ties against the attacker) from then on, at every later "
        "target epoch of the run",
        # the median over all targets, a target never linked counting as beyond MAX_K
        "median_messages_to_rank_1": _median(linked),
        "linked_within_5": sum(1 for k in found if k <= 5),
        # not linked when the run ended, before MAX_K messages were written to them: a longer run might
        # link them (counted above as not linked within MAX_K)
        "cut_short": cut_short,
        # who is not among ``targets``: the accounts with a correspondent the attack took no target, and
        # how many of its targets had no correspondent (targets + not_ranked = with_contacts)
        "with_contacts": len(with_contacts),
        "not_ranked": sorted(set(with_contacts) - ranked),
        "ranked_without_contacts": without_contacts,
    }


def _sda_notes(s: Mapping[str, Any]) -> str:
    """The SDA cell's notes (sda_row): the targets cut short; of the accounts with a correspondent, the
    ones the attack took no target; and its targets with none, not scored."""
    not_ranked, without = s.get("not_ranked") or [], s.get("ranked_without_contacts") or 0
    notes = [f"{s['cut_short']} cut short"] if s.get("cut_short") else []
    if not_ranked:
        notes.append(
            f"{s['targets']} of the {s['with_contacts']} accounts with a correspondent; not the attack's "
            f"targets: {', '.join(not_ranked)}"
        )
    if without:
        notes.append(f"{without} targets with no correspondent not scored")
    return f" ({'; '.join(notes)})" if notes else ""


def _median(linked: list[int | None]) -> int | None:
    """The (upper) median over all targets of the messages until a true contact ranked first, a target
    never linked counting as more than MAX_K; None if there are no targets or the median is beyond MAX_K."""
    ks = sorted(k if k is not None else MAX_K + 1 for k in linked)
    if not ks or ks[len(ks) // 2] > MAX_K:
        return None
    return ks[len(ks) // 2]


def _one(job: tuple[Scenario, str, str, dict[str, Any], str, int]) -> dict[str, Any]:
    base, name, folder, switches, out, sda_top = job
    from relaysim.sims.report import run_to_dir

    scenario = replace(base, defences=replace(base.defences, **switches))
    run = Path(out) / folder
    run_to_dir(scenario, run, counterfactuals=False)
    return {"variant": name, "folder": folder, "switches": switches, **measure(run, sda_top)}


def run_defences(
    scenario: Scenario,
    out: Path,
    *,
    workers: int = 2,
    variants: Mapping[str, tuple[str, dict[str, Any]]] = VARIANTS,
    step: Callable[[int, int], None] | None = None,
    sda_top: int = SDA_TOP,
) -> dict[str, Any]:
    """Every variant of ``scenario`` (by default :data:`VARIANTS`) into ``out/<folder>/``, analysed as
    seen; the table as data. ``step`` gets (variants finished, variants in all), once before the
    first and after each (for a progress bar: ``relaysim defences city`` ran for minutes saying
    nothing). ``sda_top``: the best accounts per checkpoint each variant's analysis gives
    (:func:`~sims.analysis.run.analyze`'s; ``relaysim defences --sda-top``)."""
    one_profile(scenario, "relaysim defences")
    jobs = [(scenario, name, folder, sw, str(out), sda_top) for name, (folder, sw) in variants.items()]
    # no more processes than runs: --workers 99999999999999999999 asked the pool for more than a C
    # int holds (OverflowError), and --workers 1000 forked 1000 processes for 9 runs
    workers = min(workers, len(jobs))
    if step is not None:
        step(0, len(jobs))
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for j in jobs:
            rows.append(_one(j))
            if step is not None:
                step(len(rows), len(jobs))
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_one, j) for j in jobs]
            for done, _ in enumerate(as_completed(futures), 1):
                if step is not None:
                    step(done, len(jobs))
            rows = [f.result() for f in futures]  # (in the variants' order, whatever finished first)
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "profile": scenario.relay.profile,
        "profile_said": scenario.relay.profile_said(),  # ("keep-everything (the default)" when no file named it)
        "analysed": "what the relay saw (relay-view.jsonl), as relaysim analyze DIR --as-seen does",
        "variants": rows,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def render(data: dict[str, Any]) -> str:
    """The table, as Markdown (readable as text too)."""
    profile = data.get(
        "profile_said", data["profile"]
    )  # (a defences.json written before it said the default)
    lines = [
        f"# What each defence buys: {data['scenario']} (seed {data['seed']}, profile {profile})",
        "",
        "Each row is the same scenario with one `[defences]` switch on, analysed as a provider that *watches* its "
        "relay would (`relaysim analyze DIR --as-seen`: what the relay saw, not what the profile keeps), and scored "
        "against what really happened. Attribution: sealed sends of messages people wrote, joined to a sender by "
        "address and connection. SDA: the statistical disclosure attack of Martiny et al. (NDSS 2021) from "
        f"recipients and times alone; targets whose true contact ranked first, and stayed first at every later target epoch of the run, within {MAX_K} messages written to "
        "them, and the median messages it took (its epochs also follow the receipts for a target's own messages, "
        f"which are not counted as messages); cut short: targets not linked when the run ended, before {MAX_K} "
        "messages were written to them, counted as not linked though a longer run might link them. Size: session-opening (PQXDH) envelopes flagged by size.",
        "",
        "| defence | attribution P / R | contact graph P / R | SDA linked | SDA median k | first contact by size "
        "P / R | size ~ text length | latency p50 | sealed envelopes per message |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["variants"]:
        at, g, s, z, c = r["attribution"], r["contact_graph"], r["sda"], r["first_contact_by_size"], r["cost"]
        median = s["median_messages_to_rank_1"]
        lat, per, corr = (
            c["latency_p50_s"],
            c["sealed_envelopes_per_message"],
            r["size_vs_plaintext_length_correlation"],
        )
        lines.append(
            f"| {r['variant']} | {_pct(at['precision'])} / {_pct(at['recall'])} | {_pct(g['precision'])} / "
            f"{_pct(g['recall'])} | {s['linked_within_max_k']} of {s['targets']}"
            + _sda_notes(s)
            + " | "
            + f"{median if median is not None else f'>{MAX_K}'} | {_pct(z['precision'])} / {_pct(z['recall'])} | "
            f"{_pct(corr)} | {'–' if lat is None else f'{lat:.3f} s'} | {'–' if per is None else f'{per:.2f}'} |"
        )
    lines += [
        "",
        "P / R: precision / recall against ground truth (– where nothing was inferred, or nothing to find). "
        "Size ~ text length: the correlation of envelope size with the length of the text inside (padding's "
        "job is to break it; – where sizes do not vary). SDA linked scores the attack's targets that had a "
        "correspondent; its note names the accounts with one it took no target (it takes those with the most "
        "epochs, 5 or more) and counts its targets with none (an ephemeral mailbox: what is written to it is "
        "counted as written to its holder).",
        "Each variant's run and its analysis are in DIR/<variant>/ and DIR/<variant>/analysis/as-seen/relay.md.",
    ]
    return "\n".join(lines) + "\n"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``defences`` subcommand, added to ``relaysim``'s subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "defences",
        help="what each defence buys against a provider that watches its relay: one table, with numbers",
        description=(
            "Run a scenario once as written and once with each [defences] switch on (receipts off, delayed or "
            "batched; padding off or to powers of 2; a fresh connection per sealed send; cover traffic; "
            "ephemeral mailboxes), each into DIR/<variant>/, analyse what the relay saw in each "
            "(relaysim analyze DIR/<variant> --as-seen) and print one table: sealed-sender attribution, the "
            "contact graph, the statistical disclosure attack and the first-contact size channel, scored "
            "against what really happened, beside what each defence costs. Writes DIR/defences.md and "
            "DIR/defences.json."
        ),
        epilog=(
            "examples:\n  relaysim defences                       # sealed-sender-leaks: a Signal-profile relay\n"
            "  relaysim defences sda-martiny-2021 --out out/defences-sda"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenario",
        type=scenario_arg,
        metavar="NAME_OR_PATH",
        nargs="?",
        default=DEFAULT_SCENARIO,
        help=f"a built-in scenario or a .toml file (default: {DEFAULT_SCENARIO})",
    )
    p.add_argument(
        "--out", type=out_folder, metavar="DIR", help="where to write (default: out/defences-NAME)"
    )
    p.add_argument(
        "--workers", type=workers_arg(), default=2, metavar="N", help="worker processes (default: 2)"
    )
    add_sda_top(p, "each DIR/<variant>/analysis/as-seen/relay.json's top_after_k")
    p.add_argument("--force", action="store_true", help="replace the runs already in DIR")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown on stderr only when it is a terminal)"
    )
    return p


def main(args: argparse.Namespace) -> int:
    """``relaysim defences``: 0 when done, 2 for bad input."""
    from relaysim.sims.report import OutputDirError, prepare_out_dir

    try:
        scenario = resolve_scenario(args.scenario)
        one_profile(scenario, "relaysim defences")  # (before DIR is made)
        out = Path(args.out or f"out/defences-{scenario.name}")
        if out.exists() and not out.is_dir():
            raise DefencesError(f"--out {out} is a file, not a folder")
        prepare_out_dir(out, force=args.force)  # no run of another command beside the variants' folders
        for folder, _ in VARIANTS.values():
            prepare_out_dir(out / folder, force=args.force)
        from relaysim.sims.progress import progress_bar

        with progress_bar(
            "defences", len(VARIANTS), enabled=False if args.quiet else None, unit="runs"
        ) as bar:
            data = run_defences(
                scenario,
                out,
                workers=args.workers,
                step=lambda done, total: bar.update(done, total),
                sda_top=args.sda_top,
            )
    except (ScenarioError, DefencesError, OutputDirError, ValueError, OSError) as exc:
        from relaysim.sims.analysis.runfiles import one_line

        print(f"relaysim defences: {one_line(exc)}", file=sys.stderr)
        return 2
    text = render(data)
    (out / "defences.md").write_text(text, encoding="utf-8")
    (out / "defences.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(text, end="")
    print(
        f"\nwrote {out}/defences.md, defences.json, and each variant's run and analysis in {out}/<variant>/"
    )
    return 0
