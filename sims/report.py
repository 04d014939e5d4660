"""Running a scenario to files, and reading them back for the teaching view.

``run_to_dir`` writes, in ``--out DIR``:

- ``transcript.jsonl`` — one JSON object per event: ``t`` (simulated seconds from the start),
  ``at`` (the same instant on the simulated calendar, ISO 8601 UTC) and ``kind``; message events
  carry the text as the devices saw it under ``plaintext`` and what the relay saw (ids,
  addresses, sizes, times — never content) under ``relay``. Every time in it is on one base: see
  :func:`transcript_writer`;
- ``relay.db`` — the relay's own SQLite store as it stands at the end of the run: what the
  provider *keeps*, under its profile's retention policy;
- ``relay-view.jsonl`` — what the relay *saw* while it ran: every observation it made, whole, one
  metadata record a line (no content, no ground truth: only :class:`relay.metadata.MetadataRecord`
  fields; times on the relay's clock, as in ``relay.db``), whatever the profile keeps. What a
  provider that watches live has; ``relaysim analyze DIR --as-seen`` analyses it;
- ``summary.json`` — counts, delivery-latency percentiles, losses;
- ``summary.md`` — the same, for people;
- ``disclosures/NAME.json`` and ``NAME.md`` — per legal process served in the timeline, what the
  relay's compliance desk handed over, withheld or could not produce, scored against ground truth;
- ``provider.json`` — what the provider holds beside its database: the relay profile, the content
  keys the provider itself holds (for provider-key profiles such as consumer BBM, and a global-key
  mandate's from the time it was made, ``held_from``), and the address-to-region table it would use
  as GeoIP. ``relaysim disclose`` reads it.

A scenario with ``compare_profiles = ["bes", "bbm-consumer"]`` runs once per profile into
``DIR/<profile>/`` (each as above) and writes ``DIR/comparison.md`` and ``comparison.json``: per
order, what each profile's operator could produce, side by side. A scenario with ``matrix = true``
runs under every real profile and writes the process matrix (see ``sims.matrix``).

Nothing written depends on the wall clock, so the same scenario and seed give the same bytes.

An ``--out`` folder is relaysim's to write only where it holds none of these files already:
:func:`prepare_out_dir` refuses a folder holding an earlier run unless forced, and forced, removes
exactly the files and folders listed in :data:`OWNED_FILES` and :data:`OWNED_DIRS` (and
per-profile subfolders holding them), never anything else.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from rich.table import Table
from rich.text import Text

from relaysim.clients.agent import REFUSAL_REASONS
from relaysim.relay.compliance import Disclosure
from relaysim.relay.legal import REASON_LABELS
from relaysim.relay.mdtext import md_block, md_text
from relaysim.relay.metadata import MetadataRecord
from relaysim.sims.access.reports import detection_by_profile_lines, write_exceptional
from relaysim.sims.analysis.runfiles import (
    brief,
    broken_link,
    finite_number,
    line_too_long,
    loads,
    not_a_file,
    not_json,
    numbered_lines,
    open_run_file,
    plain_name_problem,
    read_provider,
    read_run_text,
    relay_clock,
    shell_word,
)
from relaysim.sims.analysis.view import RELAY_VIEW_FILE, record_json
from relaysim.sims.scenario import Scenario, is_builtin
from relaysim.sims.term import printable, render, table
from relaysim.sims.world.simulation import ENVELOPE_FATES, SIM_EPOCH, Simulation, SimulationResult
from relaysim.sims.world.traffic import expand_population
from relaysim.sims.world.util import clock

__all__ = [
    "BEFORE_START",
    "OWNED_DIRS",
    "OWNED_FILES",
    "OutputDirError",
    "RunFolderError",
    "RunFolderWarning",
    "disclosure_json",
    "disclosure_problem",
    "make_run_command",
    "order_outcome",
    "outputs_written",
    "percentile",
    "prepare_out_dir",
    "read_run",
    "relay_clock",
    "relay_view_writer",
    "relaysim_outputs",
    "render_comparison",
    "render_demo",
    "render_demo_comparison",
    "render_show",
    "run_again",
    "run_calendar",
    "run_comparison_to_dir",
    "run_disagreements",
    "run_relay_clock",
    "run_to_dir",
    "show_rows",
    "sim_clock",
    "summarise",
    "transcript_writer",
]

# What relaysim writes in an --out folder (run, live run, comparison, matrix), and nothing else.
OWNED_FILES = (
    "transcript.jsonl",
    "relay.db",
    "relay.db-wal",
    "relay.db-shm",
    "relay-view.jsonl",
    "relay.log",
    "summary.json",
    "summary.md",
    "provider.json",
    "directory.json",
    "comparison.md",
    "comparison.json",
    "matrix.json",
    "matrix.md",
    "report.html",
    "counterfactual.md",
)
# analysis/ is written later by relaysim analyze, counterfactual/ by a run with a counterfactual demand:
# a forced rerun removes both, so no page of an earlier run sits beside the new one.
OWNED_DIRS = ("disclosures", "exceptional", "analysis", "counterfactual")


class OutputDirError(Exception):
    """An --out folder relaysim will not write into; the message says why and what to do."""


class RunFolderError(Exception):
    """A run's folder that cannot be read back (missing, interrupted or damaged files)."""


class RunFolderWarning(UserWarning):
    """A run's folder whose files can each be read but do not agree with one another (see
    :func:`run_disagreements`): the command goes on, and the relaysim command prints it on stderr."""


def relaysim_outputs(out: Path) -> list[Path]:
    """relaysim's own files and folders in ``out``: those in :data:`OWNED_FILES` and
    :data:`OWNED_DIRS`, and the per-profile subfolders (named after a relay profile) holding them.

    A symbolic link at any of those names counts too, dangling or not: a run writes its files by
    name, so it would write through the link into whatever the link points at (``transcript.jsonl``
    -> a file of the user's, ``signal/`` -> another folder); ``--force`` removes the link itself."""
    from relaysim.relay.profiles import PROFILES

    if not out.is_dir():
        return []
    found = [out / n for n in (*OWNED_FILES, *OWNED_DIRS, *PROFILES) if (out / n).is_symlink()]
    found += [out / n for n in OWNED_FILES if (out / n).is_file() and not (out / n).is_symlink()]
    found += [out / n for n in OWNED_DIRS if (out / n).is_dir() and not (out / n).is_symlink()]
    found += [
        out / n
        for n in PROFILES
        if (out / n).is_dir() and not (out / n).is_symlink() and relaysim_outputs(out / n)
    ]
    return found


def outputs_written(out: Path) -> str:
    """relaysim's own files and folders in ``out`` (:func:`relaysim_outputs`), in the order of
    :data:`OWNED_FILES` and :data:`OWNED_DIRS`, a folder with a slash: ``transcript.jsonl, relay.db,
    relay-view.jsonl, …, disclosures/``. What a run says it wrote, read from the folder it wrote."""
    from relaysim.relay.profiles import PROFILES

    order = {name: i for i, name in enumerate((*OWNED_FILES, *OWNED_DIRS, *PROFILES))}
    found = sorted(relaysim_outputs(out), key=lambda p: order.get(p.name, len(order)))
    return ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)


def _remove_outputs(out: Path) -> None:
    from relaysim.relay.profiles import PROFILES

    for path in relaysim_outputs(out):
        if path.is_symlink():  # the link, never what it points at (see relaysim_outputs)
            path.unlink()
        elif path.name in PROFILES and path.is_dir():
            _remove_outputs(path)
            if not any(path.iterdir()):
                path.rmdir()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def prepare_out_dir(out: Path, *, force: bool) -> None:
    """Make ``out`` ready for a fresh run. A folder holding an earlier run (any of relaysim's own
    files, see :func:`relaysim_outputs`) is refused with :class:`OutputDirError` unless ``force``;
    with ``force`` those files are removed and everything else in the folder is left alone. So a
    folder never holds one run's disclosures beside another's."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out} is a file, not a folder; give a folder (it is made if missing)")
    link = broken_link(out)
    if link is not None:  # (mkdir said "File exists" of it)
        raise OutputDirError(f"{out} is {link}; give a folder (it is made if missing)")
    earlier = relaysim_outputs(out)
    if earlier and not force:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in earlier[:5])
        raise OutputDirError(
            f"{out} already holds a run ({names}{', …' if len(earlier) > 5 else ''}); pass --force to "
            "replace it (only relaysim's own files there are removed), or choose another --out folder"
        )
    try:
        _remove_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot write to {out}: {exc.strerror or exc}") from exc


_LEAVES: frozenset[type] = frozenset({str, int, bool, type(None), bytes})
"""Types ``_round`` hands back as they are, checked by exact type before any call (most values)."""


def _round(obj: Any) -> Any:
    """``obj`` with every float rounded to 6 decimals, in dicts and lists at any depth (a copy)."""
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: v if type(v) in _LEAVES else _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [v if type(v) in _LEAVES else _round(v) for v in obj]
    return obj


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarise(result: SimulationResult) -> dict[str, Any]:
    latencies = sorted(t - m.planned.at for m in result.messages for t in m.delivered.values())
    expected = sum(len(m.recipients) for m in result.messages)
    delivered = sum(len(m.delivered) for m in result.messages)
    lost = [m for m in result.messages if m.lost is not None]
    group_lost = sum(len(m.lost_for) for m in result.messages if m.lost is None)
    undelivered = (
        sum(len(m.recipients) - len(m.delivered) for m in result.messages if m.lost is None) - group_lost
    )
    # an account with linked devices: its phone's sync copies, read on its other devices
    synced = {"sync_copies_read": sum(len(v) for v in result.synced.values())} if result.synced else {}
    sc = result.scenario
    return _round(
        {
            "scenario": sc.name,
            "seed": sc.seed,
            "scenario_from": "built-in" if is_builtin(sc) else "file",
            # a dated run's first instant on the calendar ([scenario] start; undated runs say nothing)
            **({"start": _iso(sc.epoch)} if sc.start is not None else {}),
            "duration_s": sc.duration,
            "people": len(sc.people),
            "devices": sum(len(p.devices) for p in sc.people),
            "messages": {
                "planned": len(result.messages),
                "accepted_by_relay": sum(1 for m in result.messages if m.accepted_at is not None),
                "lost_by_network": len(lost),
                "device_deliveries_expected": expected,
                "device_deliveries": delivered,
                "still_queued_or_in_flight": undelivered,
                # group messages a member device never read (the network lost its part, or its sender
                # key and every resend): SimulationResult.messages[].lost_for says which and why
                "group_deliveries_lost": group_lost,
                "plaintext_mismatches": result.mismatched,
                "duplicates_dropped": result.duplicates_dropped,
                # envelopes a device did not read: those that did not decrypt, and, by reason, those
                # that did and were refused (SimulationResult.refused)
                "undecryptable": result.undecryptable,
                "refused": dict(result.refused),
                **synced,
            },
            "latency_s": {
                "p50": percentile(latencies, 50),
                "p90": percentile(latencies, 90),
                "p99": percentile(latencies, 99),
                "max": latencies[-1] if latencies else None,
            },
            "network": result.network,
            "relay_records": result.relay_records,
            "relay_queued_at_end": result.queued_at_end,
            # every envelope the relay accepted, by whose device it was for: the people's (the counts of
            # "messages" above are theirs alone) and the agency's (an intervention's ghost or phone, whose
            # report in exceptional/ counts them too); per party delivered + duplicates_dropped + refused +
            # undecryptable + unread + dropped_by_relay = sent (sims.world.simulation.ENVELOPE_FATES)
            "envelopes": {
                **result.envelopes,
                **({"agency_devices": list(result.agency_devices)} if result.agency_devices else {}),
            },
            "events": result.events_run,
        }
    )


_FATE_LABELS = {
    "sent": "accepted by the relay for them (or forged by it)",
    "forged_by_relay": "of which forged by the relay (no device sent it)",
    "delivered": "read (messages, receipts, sync copies, sender keys, cover)",
    "duplicates_dropped": "duplicates dropped",
    "refused": "refused (decrypted, not read)",
    "undecryptable": "could not decrypt",
    "unread": "still queued at the end",
    "dropped_by_relay": "neither acknowledged nor queued",
}


def envelope_lines(summary: dict[str, Any]) -> list[str]:
    """One line per party of summary.json's "envelopes": what the relay accepted for its devices and
    what became of them (for ``relaysim show`` and the HTML report); none for a run without them."""
    env = summary.get("envelopes")
    if not isinstance(env, dict) or not isinstance(env.get("people"), dict):
        return []
    agency = env.get("agency_devices") or []
    lines = []
    for party, who in (("people", "the people's devices"), ("agency", f"the agency's ({', '.join(agency)})")):
        row = env.get(party)
        if not isinstance(row, dict) or not all(type(row.get(k)) is int for k in ENVELOPE_FATES):
            continue  # (a summary.json this version did not write: said nothing of, rather than wrongly)
        if party == "agency" and not agency:
            continue
        lines.append(
            f"{who}: {row['sent']} accepted by the relay"
            + (f" ({row['forged_by_relay']} forged by it)" if row["forged_by_relay"] else "")
            + f" = {row['delivered']} read + {row['duplicates_dropped']} "
            f"duplicates dropped + {row['refused']} refused + {row['undecryptable']} could not decrypt + "
            f"{row['unread']} still queued"
            + (
                f" + {row['dropped_by_relay']} neither acknowledged nor queued"
                if row["dropped_by_relay"]
                else ""
            )
        )
    return lines


def _envelope_table(summary: dict[str, Any]) -> list[str]:
    """summary.md's "Envelopes, by whose device they were for": the people's and the agency's columns."""
    env = summary.get("envelopes")
    if not env or "people" not in env:
        return []
    agency = env.get("agency_devices", [])
    return [
        "## Envelopes, by whose device they were for",
        "",
        "The counts under Messages are the people's devices' alone; the agency's device"
        + (f"s ({', '.join(agency)})" if agency else "s (none in this run)")
        + " are counted here and in their exceptional-access report. For each, read + duplicates + refused "
        "+ could not decrypt + still queued + neither = accepted.",
        "",
        "| | people | agency |",
        "|---|---|---|",
        *[f"| {label} | {env['people'][k]} | {env['agency'][k]} |" for k, label in _FATE_LABELS.items()],
        "",
    ]


def summary_markdown(summary: dict[str, Any], scenario: Scenario) -> str:
    m = summary["messages"]
    lat = summary["latency_s"]

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f} s"

    lines = [
        f"# {md_text(scenario.name)}",
        "",
        md_block(scenario.description or ""),
        "",
        f"Seed {summary['seed']}, {summary['duration_s'] / 3600:g} simulated hours, "
        f"{summary['people']} people on {summary['devices']} devices; relay profile "
        f"{md_text(scenario.relay.profile_said())}.",
        "",
        "## Messages",
        "",
        *(
            [
                "What the people wrote, and what the people's devices made of it; every envelope the relay "
                "accepted, the agency's devices' too, is under \"Envelopes, by whose device they were for\".",
                "",
            ]
            if isinstance(summary.get("envelopes"), dict) and "people" in summary["envelopes"]
            else []
        ),
        "| | count |",
        "|---|---|",
        f"| planned | {m['planned']} |",
        f"| accepted by the relay | {m['accepted_by_relay']} |",
        f"| lost by the network | {m['lost_by_network']} |",
        f"| deliveries to devices (expected) | {m['device_deliveries']} ({m['device_deliveries_expected']}) |",
        f"| still queued or in flight at the end | {m['still_queued_or_in_flight']} |",
        f"| duplicates dropped by devices | {m['duplicates_dropped']} |",
        f"| envelopes devices could not decrypt | {m['undecryptable']} |",
        f"| refused: from a changed identity key the user has not approved | {m['refused']['untrusted_identity']} |",
        f"| dropped: sealed under the device's own address (a self-send) | {m['refused']['sealed_sender_self_send']} |",
        f"| plaintext mismatches | {m['plaintext_mismatches']} |",
        *(
            [f"| sync copies read on the sender's own other devices | {m['sync_copies_read']} |"]
            if "sync_copies_read" in m
            else []
        ),
        "",
        "## Delivery latency (sent by the app → decrypted on a device)",
        "",
        f"p50 {fmt(lat['p50'])}, p90 {fmt(lat['p90'])}, p99 {fmt(lat['p99'])}, max {fmt(lat['max'])}. "
        "Messages held for an offline phone count from when they were sent.",
        "",
        "## What the relay recorded (observations, before its retention policy)",
        "",
        "| kind | records |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary["relay_records"].items()],
        "",
        f"Envelopes still queued at the end: {summary['relay_queued_at_end']}.",
        "",
        *_envelope_table(summary),
    ]
    if scenario.start is not None:
        lines += [
            f"The relay ran its provider as it was on {scenario.start.isoformat()} (`[scenario] start`).",
            "",
        ]
    if summary.get("disclosures"):
        lines += ["## Legal process (each answer in disclosures/NAME.md)", ""]
        for o in summary["disclosures"]:
            course = " then ".join(o.get("history") or [o["response"]]).replace(
                "withdrawn", "demand withdrawn"
            )
            extra = "; **no such account**" if o.get("no_such_account") else ""
            if o.get("nondisclosure_order"):
                extra += f"; with a non-disclosure order ({o['nondisclosure_order']})"
            got = ", ".join(o["provided"]) or "nothing"
            why_not = "".join(
                f"; {label}: {', '.join(o[reason])}"
                for reason, label in REASON_LABELS.items()
                if o.get(reason)
            )
            lines.append(
                f"- `{o['name']}` ({o['process']}): {course}{extra}; handed over: {got}{why_not} "
                f"([disclosures/{md_text(o['name'])}.md](disclosures/{o['name']}.md))"
            )
        lines.append("")
    if summary.get("exceptional"):
        lines += ["## Exceptional access (each report in exceptional/NAME.md)", ""]
        for x in summary["exceptional"]:
            lines.append(f"- `{x['name']}`: [exceptional/{x['name']}.md](exceptional/{x['name']}.md)")
        lines.append("")
    return "\n".join(lines)


def run_to_dir(
    scenario: Scenario,
    out: Path,
    *,
    progress: Callable[[float, float], None] | None = None,
    capture_frames: bool = False,
    counterfactuals: bool = True,
) -> tuple[SimulationResult, dict[str, Any]]:
    """Run ``scenario`` into ``out``; a legal_process event with a ``counterfactual`` also gets its
    separate, labelled run in ``out/counterfactual/`` (sims.counterfactual), never mixed with the record."""
    result, summary = _run_to_dir(scenario, out, progress=progress, capture_frames=capture_frames)
    if counterfactuals and not scenario.counterfactual:
        from relaysim.sims.counterfactual import (
            counterfactual_events,
            counterfactual_scenario,
            render_counterfactual,
        )

        if counterfactual_events(scenario):
            what_if = counterfactual_scenario(scenario)
            run_to_dir(what_if, out / "counterfactual", progress=progress)
            (out / "counterfactual.md").write_text(render_counterfactual(scenario, out), encoding="utf-8")
            summary["counterfactual"] = {"dir": "counterfactual", "summary": "counterfactual.md"}
            (out / "summary.json").write_text(json.dumps(_round(summary), indent=2) + "\n", encoding="utf-8")
    return result, summary


def _run_to_dir(
    scenario: Scenario,
    out: Path,
    *,
    progress: Callable[[float, float], None] | None = None,
    capture_frames: bool = False,
) -> tuple[SimulationResult, dict[str, Any]]:
    if scenario.matrix:
        from relaysim.sims.matrix import run_matrix_to_dir

        return run_matrix_to_dir(scenario, out, run_one=run_to_dir, progress=progress)
    if scenario.compare_profiles:
        return run_comparison_to_dir(scenario, out, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "relay.db"
    for stale in (db, out / "relay.db-wal", out / "relay.db-shm"):
        stale.unlink(missing_ok=True)
    # a run of its own never leaves another run's disclosures beside its fresh ones
    for folder in OWNED_DIRS:
        shutil.rmtree(out / folder, ignore_errors=True)
    scenario = expand_population(scenario)
    with (
        open(out / "transcript.jsonl", "w", encoding="utf-8") as f,
        open(out / RELAY_VIEW_FILE, "w", encoding="utf-8") as seen,
    ):
        write = transcript_writer(f, epoch=scenario.epoch)
        sim = Simulation(
            scenario,
            db_path=db,
            transcript=write,
            relay_view=relay_view_writer(seen),
            progress=progress,
            capture_frames=capture_frames,
        )
        result = sim.run()
    (out / "provider.json").write_text(
        json.dumps(_provider_file(sim, scenario), indent=2) + "\n", encoding="utf-8"
    )
    _write_directory(scenario, out)
    summary = summarise(result)
    if result.disclosures:
        summary["disclosures"] = write_disclosures(result, out / "disclosures")
    if result.exceptional:  # key escrow, global key, ghost devices, seized phones (sims.access)
        summary["exceptional"] = write_exceptional(result.exceptional, out / "exceptional")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary, scenario), encoding="utf-8")
    return result, summary


def _write_directory(scenario: Scenario, out: Path) -> None:
    """``directory.json``: the public listing of the scenario's organisation accounts (account → kind),
    the labels an analyst takes from public sources, as MetaPhone re-identified numbers automatically
    (docs/papers.md); the analyst's, not ground truth about people."""
    from relaysim.sims.world.traffic import organisation_accounts

    listed = organisation_accounts(scenario)
    (out / "directory.json").unlink(missing_ok=True)
    if listed:
        (out / "directory.json").write_text(json.dumps(listed, indent=2) + "\n", encoding="utf-8")


# A relay time before the run's start, as disclose, analyze and a run's disclosures/ show it (_sim_clock)
BEFORE_START = "before the run's start"


def _sim_clock(t: float, days: bool = False, epoch: float = SIM_EPOCH, dated: bool = False) -> str:
    """A relay-clock time for people. ``epoch``: the relay's clock at t = 0 (the scenario's start,
    sims.scenario.Scenario.epoch). A ``dated`` run (one with a [scenario] start) reads the calendar,
    ``2016-05-03 20:00:00 UTC``; any other the simulated time of day, ``day 3 20:00:00`` (``days``:
    always name the day), day 1 being the day the run starts. A time before ``epoch`` is
    :data:`BEFORE_START`: a live run's phones register and log in before its clock starts, in real time
    that the time scale would stretch (20 ms at 0.0005 read as 40 s: "created day 0 23:59:20")."""
    if t < epoch:
        return BEFORE_START
    if dated:
        try:
            return datetime.fromtimestamp(math.floor(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, ValueError, OSError):
            # past the calendar (year 9999) or before it: a time in a run's file edited, which
            # show, analyze and report read; no time a run writes
            return f"{t:g} s (Unix time, past the calendar)"
    return clock(t - (epoch - epoch % 86400), day=True if days else None)


def run_calendar(run: Path) -> tuple[float, bool]:
    """The calendar of the finished run in folder ``run``: the run's own clock at ``t = 0`` (provider.json
    ``clock_epoch``, the relay clock's epoch: the scenario's start, or SIM_EPOCH; a live run's
    ``scenario_epoch``, its relay having kept the wall clock) and whether the run is dated (it names
    ``profile_as_of``: the scenario has a start). ``(SIM_EPOCH, False)`` when the folder has no
    provider.json; a broken one is a ValueError naming the file and the field. A relay time (relay.db's,
    a disclosure's) is read on this clock through :func:`run_relay_clock`."""
    data = _run_provider_clock(run)
    if data is None:
        return SIM_EPOCH, False
    return data.get("scenario_epoch", data.get("clock_epoch", SIM_EPOCH)), "profile_as_of" in data


def run_relay_clock(run: Path) -> Callable[[float], float]:
    """The relay's times of the finished run in folder ``run`` (relay.db's, its disclosures') read on the
    run's own clock, the one :func:`run_calendar` gives the start of (:func:`relay_clock`); a broken
    provider.json is a ValueError naming the file and the field."""
    return relay_clock(_run_provider_clock(run) or {})


def _run_provider_clock(run: Path) -> dict[str, Any] | None:
    """``run``'s provider.json, checked (runfiles.read_provider), or None if the folder has none; a
    ValueError naming the file, with the command that writes it again."""
    path = run / "provider.json"
    try:  # (a pipe there was taken for no provider.json: the run shown undated)
        return read_provider(path)
    except ValueError as exc:
        raise ValueError(f"{exc}; {run_again(run)}") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc}); {run_again(run)}") from None


def sim_clock(t: float, epoch: float = SIM_EPOCH, dated: bool = False) -> str:
    """A relay-clock time for people: "day 2 14:05:00", or on a dated run (one with a [scenario]
    start) "2016-05-02 14:05:00 UTC"; ``epoch`` is the run's (provider.json ``clock_epoch``)."""
    return _sim_clock(t, epoch=epoch, dated=dated)


def disclosure_json(d: Disclosure) -> dict[str, Any]:
    """A disclosure as written to ``disclosures/NAME.json`` (before scoring)."""
    return dict(_round(d.to_json()))


def disclosure_problem(data: object) -> str | None:
    """What keeps ``data``, a ``disclosures/NAME.json`` read back, from being a disclosure as
    :func:`disclosure_json` writes it, as ``field: expected …, got …`` (the fields the readers of the
    file use: the HTML report's orders, the demo's comparison); None if it is one. Each reader says it
    of the file, with its own error class and advice: an edited or foreign file raised a KeyError or
    TypeError to the last-resort handler, or was shown with a repr of one."""
    from relaysim.relay.legal import REASONS, RESPONSES

    if not isinstance(data, dict):
        return f"expected a disclosure (a JSON object), got {type(data).__name__}"
    for key in ("name", "process"):
        if not isinstance(data.get(key), str):
            return f"{key}: expected a string, got {brief(data.get(key))}"
    if data.get("target") is not None and not isinstance(data["target"], str):
        return f"target: expected an account name or null, got {brief(data['target'])}"
    if data.get("served") is not None and not finite_number(data["served"]):
        return f"served: expected a time in seconds, got {json.dumps(data['served'])[:40]}"
    responses = ", ".join(RESPONSES)
    if data.get("response") not in RESPONSES:
        return f"response: expected one of {responses}, got {brief(data.get('response'))}"
    history = data.get("history")
    if history is not None and not isinstance(history, list):
        return f"history: expected a list of the demand's responses, got {brief(history)}"
    for i, h in enumerate(history or []):
        if not isinstance(h, dict) or h.get("response") not in RESPONSES:
            got = brief(h.get("response")) if isinstance(h, dict) else brief(h)
            return f"history[{i}].response: expected one of {responses}, got {got}"
    provided = data.get("provided")
    if not isinstance(provided, dict):
        return f"provided: expected an object of categories, as relaysim writes, got {brief(provided)}"
    for category, rows in provided.items():
        if not isinstance(rows, list):
            return f"provided.{category}: expected a list of rows, got {brief(rows)}"
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                return f"provided.{category}[{i}]: expected an object, got {brief(row)}"
    not_provided = data.get("not_provided")
    if not isinstance(not_provided, dict):
        return f"not_provided: expected an object of reason → category → why, got {brief(not_provided)}"
    for reason, why in not_provided.items():
        if reason not in REASONS:
            return f"not_provided: {brief(reason)} is no reason relaysim gives (expected one of {', '.join(REASONS)})"
        if not isinstance(why, dict):
            return f"not_provided.{reason}: expected an object of category → why, got {brief(why)}"
        for category, words in why.items():
            if not isinstance(words, str):
                return f"not_provided.{reason}.{category}: expected a string, got {brief(words)}"
    return None


def write_disclosures(
    result: SimulationResult, folder: Path, relay_to_sim: Callable[[float], float] | None = None
) -> list[dict[str, Any]]:
    """``NAME.json`` and ``NAME.md`` per disclosure, each scored against ground truth.
    ``relay_to_sim``: the relay clock to the run's (a live run's relay keeps the wall clock, its
    timeline scaled); the Markdown shows times on the run's, the JSON the relay's own."""
    from relaysim.sims.scoring import score

    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for d in result.disclosures:
        data = _round(d.to_json())
        if result.truth is not None:
            data["score"] = score(data, result.truth)
        (folder / f"{d.process.name}.json").write_text(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        multi_day = result.scenario.duration > 86400
        md = d.to_markdown(
            lambda t, _m=multi_day, _to=relay_to_sim: _sim_clock(
                _to(t) if _to else t, _m, result.scenario.epoch, result.scenario.start is not None
            )
        )
        if "score" in data:
            md += _score_markdown(data["score"])
        (folder / f"{d.process.name}.md").write_text(md, encoding="utf-8")
        index.append(
            {"name": d.process.name, "process": d.process.process, **d.summary(), "score": data.get("score")}
        )
    return index


def _score_markdown(sc: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.0%}"

    return "\n".join(
        [
            "",
            "## Against ground truth (what the simulator knows and the provider does not)",
            "",
            f"- Contacts revealed: {sc['contacts']['revealed']} of {sc['contacts']['true']} ({pct(sc['contacts']['share'])})",
            f"- Message times revealed: {sc['message_times']['revealed']} of {sc['message_times']['true']} "
            f"({pct(sc['message_times']['share'])})",
            f"- Regions revealed: {', '.join(sc['locations']['revealed']) or 'none'} "
            f"(the target's devices were in: {', '.join(sc['locations']['true']) or 'unknown'})",
            f"- Messages whose words were revealed: {sc['plaintext']['revealed']}",
            *_routing_rows_line(sc.get("routing_rows")),
            "",
        ]
    )


def _routing_rows_line(rows: dict[str, Any] | None) -> list[str]:
    """What the message-log and routing rows really were: the provider counts receipts as messages."""
    if not rows or not rows.get("total"):
        return []
    other = rows["total"] - rows["messages"]
    syncs = f"{rows['sync_copies']} sync copies, " if "sync_copies" in rows else ""
    line = (
        f"- Of the {rows['total']} message records handed over, {rows['messages']} were messages someone wrote "
        f"and {other} were not ({rows['delivery_receipts']} delivery receipts, {rows['read_receipts']} read "
        f"receipts, {rows['covers']} cover, {syncs}{rows['unmatched']} unmatched): the provider cannot tell them apart"
    )
    if syncs:
        line += (
            " (but a sync copy, a phone's copy of what it sent for the same account's other devices, is addressed "
            "to its sender's own account)"
        )
    return [line]


def relay_view_writer(f: TextIO) -> Callable[[MetadataRecord], None]:
    """A sink writing each observation the relay makes as one line of ``relay-view.jsonl``
    (:func:`sims.analysis.view.record_json`)."""
    encode = _LINE_ENCODER.encode

    def write(r: MetadataRecord) -> None:
        f.write(encode(record_json(r)))
        f.write("\n")

    return write


def transcript_writer(f: TextIO, *, epoch: float = SIM_EPOCH) -> Callable[[dict[str, Any]], None]:
    """A sink writing each event as one line of ``transcript.jsonl``.

    One time base throughout: every event starts with ``t``, simulated seconds from the start of
    the run (to the microsecond), then ``at``, the same instant on the simulated calendar as ISO
    8601 UTC (``2026-01-01T00:10:00.552554Z``). The simulated calendar starts at ``epoch``: the
    scenario's ``[scenario] start`` (``Scenario.epoch``), else :data:`sims.scenario.SIM_EPOCH`,
    2026-01-01T00:00:00Z: a fixed date either way, so runs stay byte-identical. Every other time in an event is simulated seconds from the start too: the
    relay's record ``time`` fields under ``relay``, ``relay.accepted`` (when the relay accepted the
    envelope, as its timestamp says, to the millisecond), ``latency`` (a duration), and the times in
    exceptional-access events (``seized_at``, ``added_at``, …)."""
    encode = _LINE_ENCODER.encode
    at = calendar_time(epoch)

    def write(event: dict[str, Any]) -> None:
        event = _round(event)
        f.write(encode({"t": event["t"], "at": at(event["t"]), **event}))
        f.write("\n")

    return write


# One line of JSON, as json.dumps(..., separators=(",", ":"), ensure_ascii=False) writes it, from an
# encoder made once rather than per line (json.dumps builds a new JSONEncoder for such arguments).
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def calendar_time(epoch: float) -> Callable[[float], str]:
    """A function from simulated seconds ``t`` to the instant ``epoch + t`` in ISO 8601 UTC to the
    microsecond (``2026-01-01T00:10:00.552554Z``): ``(epoch as a datetime + timedelta(seconds=t))
    .strftime("%Y-%m-%dT%H:%M:%S.%fZ")``, character for character, with the date's text kept from
    one call to the next (a transcript's events come in time order) and the time of day counted.
    The microseconds are timedelta's: the fraction of ``t`` times 10**6, rounded half to even."""
    start = datetime.fromtimestamp(epoch, UTC)
    last: list[Any] = [None, ""]  # the day (days since 1970-01-01) last formatted, and its date

    def slow(t: float) -> str:
        return (start + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    if start.microsecond:
        return slow
    base = int(start.timestamp())  # whole seconds: UTC has no leap seconds here, a day is 86,400

    def at(t: float) -> str:
        if type(t) is not float or not 0.0 <= t < 1e12:
            return slow(t)
        whole = int(t)
        micro = round((t - whole) * 1e6)  # t - whole is exact; as timedelta rounds the rest
        if micro == 1_000_000:
            whole, micro = whole + 1, 0
        day, second = divmod(base + whole, 86_400)
        if day != last[0]:
            last[0], last[1] = day, (datetime(1970, 1, 1) + timedelta(days=day)).strftime("%Y-%m-%dT")
        hour, second = divmod(second, 3600)
        minute, second = divmod(second, 60)
        return f"{last[1]}{hour:02d}:{minute:02d}:{second:02d}.{micro:06d}Z"

    return at


# --- the teaching view --------------------------------------------------------------------------


def _clock(t: float) -> str:
    return clock(t, day=False)  # the teaching view counts hours on, past 24


def _read_json(path: Path, run: Path) -> Any:
    """``path``, a JSON file of the run in ``run``; RunFolderError saying what is wrong with it."""
    try:
        return loads(read_run_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # (every reader's words: runfiles.not_json)
        raise RunFolderError(f"{not_json(path, exc)}; {run_again(run)}") from exc
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines file: split at line feeds alone. ``str.splitlines`` also splits at
    U+2028, U+2029 and U+0085 (NEL), which JSON written with ``ensure_ascii=False`` keeps as they
    are inside strings: a message whose text held one was read as a line cut in two, and the run as
    "cut short ... or damaged"."""
    lines = text.split("\n")
    if lines[-1] == "":  # after the last line's line feed (or an empty file)
        lines.pop()
    return lines


def _summary_in(run: Path) -> dict[str, Any] | None:
    """The summary.json of the run in ``run`` as an object; None if there is none (or it cannot be
    read, or is no object)."""
    summary_file = run / "summary.json"
    if not summary_file.is_file():  # (not a pipe: it would be waited on)
        return None
    try:
        summary = loads(read_run_text(summary_file))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _profiles_run_in(run: Path) -> tuple[str, list[str]] | None:
    """The scenario and the profiles of the comparison (or matrix) whose folder ``run`` is, from its
    summary.json; None if it is none (or its summary cannot be read)."""
    summary = _summary_in(run)
    if summary is None or not ("compare_profiles" in summary or "matrix" in summary):
        return None
    name, profiles = summary.get("scenario"), summary.get("profiles")
    if not isinstance(name, str) or not isinstance(profiles, dict | list):
        return None
    return name, [str(p) for p in profiles]


def _builtin_profiles(name: str) -> list[str]:
    """The profiles the built-in scenario ``name`` runs under when it runs under several (its
    ``compare_profiles``, or every real one for the matrix); [] for any other name."""
    from relaysim.relay.profiles import REAL_PROFILES
    from relaysim.sims.scenario import ScenarioError, builtin_scenarios, load_scenario

    path = builtin_scenarios().get(name)
    if path is None:
        return []
    try:
        scenario = load_scenario(path)
    except (ScenarioError, OSError):
        return []
    return list(REAL_PROFILES) if scenario.matrix else list(scenario.compare_profiles)


def make_run_command(out: Path) -> str:
    """The command that makes a run in ``out``, the folder a command was given: ``relaysim run NAME
    --out OUT`` (for NAME, the built-in scenario whose run ``out``'s summary.json says it holds, else
    the one ``out`` is named after; ``--force`` where ``out`` holds some of a run's files). But a
    folder named after a relay profile inside a comparison's (or the matrix's) folder, or inside one
    named after a built-in scenario that runs under that profile (``out/pakistan-2015/bes``:
    relaysim demo's), is made by running that scenario into the parent: ``relaysim run pakistan-2015
    --out out/pakistan-2015``. A run of NAME into the subfolder itself made a run of its own there,
    not the comparison's. And where the comparison does not run under that profile
    (``out/pakistan-2015/signal``), a run of its own in the subfolder would be removed with the
    comparison's files by the next ``--force`` run into the parent: a folder beside the comparison's
    is given instead (``out/pakistan-2015-signal``), saying why."""
    from relaysim.relay.profiles import PROFILES

    parent = out.parent
    if out.name in PROFILES and parent != out:
        held = _profiles_run_in(parent)
        if held is not None and out.name in held[1]:
            return f"relaysim run {_scenario_made(_summary_in(parent), parent)} --out {shell_word(parent)} --force"
        compared = held[1] if held is not None else _builtin_profiles(parent.name)
        if held is None and out.name in compared:
            force = " --force" if relaysim_outputs(parent) else ""
            return f"relaysim run {shell_word(parent.name)} --out {shell_word(parent)}{force}"
        if compared and parent.name not in ("", ".", ".."):
            scenario = held[0] if held is not None else parent.name
            beside = parent.with_name(f"{parent.name}-{out.name}")
            return (
                f"relaysim run NAME --out {shell_word(beside)}{' --force' if relaysim_outputs(beside) else ''}"
                f"   ({parent} is the folder of {scenario}'s runs under {', '.join(compared)}, not under "
                f"{out.name}: a run of its own in {out} would be removed by the next run there with --force)"
            )
    return f"relaysim run {_scenario_made(_summary_in(out), out)} --out {shell_word(out)}{' --force' if relaysim_outputs(out) else ''}"


def _scenario_made(summary: dict[str, Any] | None, out: Path) -> str:
    """What ``relaysim run`` is given to make the run in ``out`` again, whose summary.json is
    ``summary`` (None: none there): the built-in scenario it says it ran (its ``scenario``, unless its
    ``scenario_from`` says it was a file of the user's own of that name: NAME then), else the one ``out``
    is named after, else NAME; and ``--seed`` with the seed it ran under where that is not the
    built-in's own (for a file of the user's own, whatever its seed: its file is not known here)."""
    from relaysim.sims.scenario import ScenarioError, builtin_scenarios, load_scenario, seed_problem

    summary = summary or {}
    builtin = builtin_scenarios()
    said, made, seed = summary.get("scenario"), summary.get("scenario_from"), summary.get("seed")
    if made == "file":  # (a run of a file of the user's own; runs before the marker have none)
        name = "NAME"
    elif isinstance(said, str):
        name = said if said in builtin else "NAME"
    else:
        name = out.name if out.name in builtin else "NAME"
    if seed_problem(seed) is not None:  # (none recorded, or not one a run is made with)
        return shell_word(name) if name != "NAME" else name
    if name != "NAME":
        try:
            if load_scenario(builtin[name]).seed == seed:
                return shell_word(name)
        except (ScenarioError, OSError):
            pass
    return f"{shell_word(name) if name != 'NAME' else name} --seed {seed}"


def run_again(out: Path) -> str:
    """The advice an error about the run in ``out`` ends with: ``run it again with:`` and the command
    that makes it (:func:`make_run_command`). Made as the error is raised, never before: it may read
    the folder's summary.json and the built-in scenarios."""
    return f"run it again with: {make_run_command(out)}"


def read_run(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A finished run's transcript events and summary; :class:`RunFolderError` saying what is
    wrong (an interrupted run has a transcript but no summary; a killed one may end mid-line)."""
    transcript, summary_file = out / "transcript.jsonl", out / "summary.json"
    # (a pipe or a folder at either is said to be one as it is read, not "no transcript.jsonl" nor
    # "did not finish")
    for path in (transcript, summary_file):
        link = broken_link(path)
        if link is not None:  # (a loop of links was "no transcript.jsonl", "did not finish")
            raise RunFolderError(f"{path}: {link}; {run_again(out)}")
    if not transcript.exists():
        raise RunFolderError(f"{out} has no transcript.jsonl; make one with: {make_run_command(out)}")
    if not summary_file.exists():
        raise RunFolderError(
            f"the run in {out} did not finish: it has transcript.jsonl but no summary.json (relaysim writes "
            f"that last; the run was interrupted or killed); {run_again(out)}"
        )
    summary = _read_json(summary_file, out)
    events = []
    try:
        for n, line in transcript_lines(transcript, MAX_TRANSCRIPT):
            events.append(_event(transcript, n, line, out))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {transcript}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not isinstance(summary, dict):
        raise RunFolderError(f"{summary_file}: expected a JSON object, got {type(summary).__name__}")
    for text in run_disagreements(out, events, summary):
        warnings.warn(text, RunFolderWarning, stacklevel=2)
    return events, summary


# The most of transcript.jsonl that show and report read (every event is held in memory, as a dict
# several times the size of its line): a scale run's transcript is gigabytes, and was read whole,
# then split, then held as events, until the machine ran out of memory. relaysim analyze reads one
# of any size, line by line.
MAX_TRANSCRIPT = 512 * 1024 * 1024
# Transcript bytes per message written (summary.json's messages.planned), measured: the built-in city
# scenario at 200 people (2,070 messages, with their receipts, sync copies and controls: 3,997,876
# bytes, 1,931 a message) and two-friends (12 messages, 19,705 bytes, 1,642 a message). So
# MAX_TRANSCRIPT holds some 280,000 messages: a city-sized run of 1,000,000 messages writes about
# 1.9 GB, which show and report refuse, saying so (:func:`_too_large`); analyze reads it.
TRANSCRIPT_BYTES_PER_MESSAGE = 1_930


def transcript_lines(path: Path, limit: int | None = None) -> Iterator[tuple[int, str]]:
    """The lines of ``path``, a run's transcript.jsonl (a regular file: open_run_file), numbered from
    1, read one at a time (never the whole file at once), split at line feeds alone, as analyze's
    read_truth reads them (runfiles.numbered_lines), so that both number a line alike: a ``\\r\\n`` is a
    line end (the ``\\r`` dropped), a bare ``\\r`` is not (it was, as ``Path.read_text`` reads one: the
    lines after it were numbered one more than analyze numbered them). ``limit``: the
    most bytes read, else an OSError (EFBIG) naming the file, its size and the most read, before
    any line is (and if it grows past it as it is read). UnicodeDecodeError for a line not UTF-8.
    Each line is read with at most runfiles.MAX_LINE + 1 bytes of it (runfiles.numbered_lines, as
    analyze's read_truth reads it): a longer one is a RunFolderError naming the file and the line
    (runfiles.line_too_long's words), never read whole (it was, up to ``limit``: 512 MiB)."""
    with open_run_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise _too_large(path, size, limit)
        read = 0
        # (split at b"\n": a "\r\n" is never cut in two, nor a UTF-8 character, in a line of MAX_LINE)
        for n, raw in numbered_lines(f):
            too_long = line_too_long(raw)
            if too_long is not None:
                raise RunFolderError(f"{path}: line {n}: {too_long}")
            read += len(raw)
            if limit is not None and read > limit:  # (it grew as it was read)
                raise _too_large(path, read, limit)
            line = raw.decode("utf-8")
            yield n, line[:-2] if line.endswith("\r\n") else line.removesuffix("\n")


def _too_large(path: Path, size: int, limit: int) -> OSError:
    fits = limit // TRANSCRIPT_BYTES_PER_MESSAGE
    return OSError(
        errno.EFBIG,
        f"{size:,} bytes, more than show and report read (at most {limit:,}: they hold every event in "
        f"memory; at about {TRANSCRIPT_BYTES_PER_MESSAGE:,} bytes a message, a run of some {fits:,} messages); "
        f"relaysim analyze {shell_word(path.parent)} reads a transcript of any size, or make the run smaller "
        "to show or report it (fewer people under [generate], or a shorter [scenario] duration)",
        str(path),
    )


def _event(transcript: Path, n: int, line: str, run: Path) -> dict[str, Any]:
    """Line ``n`` of ``transcript``, the run in ``run``'s, as an event; RunFolderError saying what is
    wrong with it."""
    try:
        event = loads(line)
    except json.JSONDecodeError as exc:
        raise RunFolderError(
            f"{transcript}: line {n}: not valid JSON ({exc.msg}): the run was cut short while "
            f"writing it, or the file was damaged; {run_again(run)}"
        ) from exc
    if not (isinstance(event, dict) and isinstance(event.get("kind"), str) and "t" in event):
        raise RunFolderError(
            f"{transcript}: line {n}: expected an event with 't' and 'kind', got {line[:60]!r}"
        )
    try:
        event_time(event["t"])  # the teaching view and the report print it as a clock
    except ValueError as exc:
        raise RunFolderError(f"{transcript}: line {n}: {exc}") from None
    return event


def event_time(t: object) -> float:
    """An event's ``t``, simulated seconds, as the teaching view (show_rows) and the HTML report's timeline
    print it, read_run having refused the rest of a run's transcript: a ValueError naming ``t`` for what is
    no finite number (a str, a bool, NaN, Infinity, 1e400, an integer past a float's range: the clocks'
    floor raised an OverflowError, which neither view's error for an event it cannot read caught)."""
    if not finite_number(t):
        raise ValueError(f"t: expected simulated seconds (a number), got {str(t)[:60]!r}")
    return cast(float, t)


# What a run's transcript.jsonl holds once per count of summary.json's "messages": both are written
# by the same run at the same moment (sims.world.simulation, sims.live), so they agree exactly.
_COUNTED = (
    ("message_accepted", "accepted_by_relay", "messages accepted by the relay"),
    ("message_received", "device_deliveries", "deliveries to devices"),
)


def run_disagreements(
    out: Path,
    events: list[dict[str, Any]] | None = None,
    summary: Any = None,
    *,
    kinds: Mapping[str, int] | None = None,
) -> list[str]:
    """What the files of the run in ``out`` say that does not agree, a sentence each naming the
    files: files from different runs side by side, or one emptied or edited. Checked, from what the
    folder holds: transcript.jsonl's ``message_accepted`` and ``message_received`` events against
    summary.json's ``accepted_by_relay`` and ``device_deliveries``, and relay-view.jsonl's lines
    against summary.json's ``relay_records``. ``events`` and ``summary``: as :func:`read_run` read
    them; or ``kinds``, the transcript's events counted by kind (``analysis_scoring.Truth.kinds``);
    else read here. A file missing is left to the command that reads it; a summary.json that is
    there but cannot be read (a folder, not JSON, not an object) is a :class:`RunFolderError` naming
    it: nothing could be checked against it (``analyze`` went on, saying nothing)."""
    summary_file, transcript, view = out / "summary.json", out / "transcript.jsonl", out / RELAY_VIEW_FILE
    if summary is None:
        if not summary_file.exists() and not summary_file.is_symlink():
            return []
        summary = _read_json(summary_file, out)
        if not isinstance(summary, dict):
            raise RunFolderError(f"{summary_file}: expected a JSON object, got {type(summary).__name__}")
    try:
        if kinds is None and events is None and transcript.is_file():
            kinds = Counter()
            for _n, line in transcript_lines(transcript):
                event = loads(line)
                if isinstance(event, dict) and isinstance(kind := event.get("kind"), str):
                    kinds[kind] += 1
    except (OSError, UnicodeDecodeError, ValueError, RunFolderError):  # (left to the command that reads it)
        kinds = None
    if kinds is None and events is not None:
        kinds = Counter(k for e in events if isinstance(e, dict) and isinstance(k := e.get("kind"), str))
    messages = summary.get("messages") if isinstance(summary, dict) else None
    if not isinstance(messages, dict):
        messages = {}
    found = []
    counted = [(kind, messages[key], what) for kind, key, what in _COUNTED if type(messages.get(key)) is int]
    uncounted = [f"messages.{key}" for _kind, key, _what in _COUNTED if type(messages.get(key)) is not int]
    if uncounted and (kinds is not None or transcript.is_file()):  # (the check was skipped, saying nothing)
        found.append(
            f"{summary_file} has no {' or '.join(uncounted)} (a count, as a run writes it): {transcript}'s "
            f"events were not checked against it; {run_again(out)}"
        )
    if kinds is not None and counted:
        held = [kinds.get(kind, 0) for kind, _n, _w in counted]
        if held != [n for _kind, n, _what in counted]:
            pairs = " and ".join(f"{n} {what}" for _kind, n, what in counted)
            if transcript.is_file() and transcript.stat().st_size == 0:
                found.append(
                    f"{transcript} is empty (0 bytes), but {summary_file} counts {pairs}: the conversation "
                    f"shown is empty because the file was emptied, not because nothing happened; {run_again(out)}"
                )
            else:
                mine = " and ".join(f"{h} {kind}" for h, (kind, _n, _w) in zip(held, counted, strict=True))
                found.append(
                    f"{transcript} holds {mine} events, but {summary_file} counts {pairs}: the two files come from "
                    f"different runs (or one was edited or cut short); {run_again(out)}"
                )
    records = summary.get("relay_records")
    counted_records = isinstance(records, dict) and all(type(v) is int for v in records.values())
    odd = not_a_file(view) if view.exists() or view.is_symlink() else None
    if odd is not None and counted_records:  # (a folder or a pipe there was passed over, saying nothing)
        found.append(
            f"{view} is {odd.removeprefix('not a regular file (').removesuffix(')')}, not a file of relay records: "
            f"the {sum(records.values())} relay records {summary_file} counts were not checked against it; {run_again(out)}"
        )
    if view.is_file() and not counted_records:  # (the check was skipped, saying nothing)
        found.append(
            f"{summary_file} has no relay_records (counts by kind, as a run writes them): {view}'s records "
            f"were not checked against it; {run_again(out)}"
        )
    if view.is_file() and counted_records:
        lines, last = 0, b"\n"
        try:
            with open_run_file(view) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    lines, last = lines + chunk.count(b"\n"), chunk[-1:]
        except OSError:
            return found
        lines += last != b"\n"  # a last line without its line break
        if lines != sum(records.values()):
            found.append(
                f"{view} holds {lines} records, but {summary_file} counts {sum(records.values())} relay records: "
                f"the two files come from different runs (or one was edited or cut short); {run_again(out)}"
            )
    return found


def _quote(text: Any) -> str:
    # printable here, before rich's Text (which drops CR, BEL and a few others unseen): the words
    # exactly as the phones read them, a control character shown as its escape
    return f"\u201c{printable(str(text))}\u201d"


SEALED = "(sealed)"  # the relay's "from" cell under sealed sender: it never learns a sender


def _ids(ids: Any) -> str:
    ids = list(ids or [])
    return ", ".join(str(i) for i in ids) if ids else "none"


def mailbox_holders(events: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """A sealed conversation's mailbox account → (the phone holding it, the peer whose replies it takes),
    from the transcript's ``mailbox_opened`` records: the envelopes a mailbox could not read are named by
    its device, the one the relay queued them for, and said as its holder's."""
    return {
        str(e.get("mailbox")): (str(e.get("device", "?")), str(e.get("peer", "?")))
        for e in events
        if e.get("kind") == "mailbox_opened"
    }


def unread_words(e: dict[str, Any], boxes: Mapping[str, tuple[str, str]]) -> str:
    """What the phones saw of an envelope one could not read, an ``undecryptable`` or ``duplicate_dropped``
    record (the teaching view's and the HTML report's words): a mailbox's device (``boxes``:
    :func:`mailbox_holders`) as its holder's mailbox for its peer, with the device the record names.
    A record without its ``device`` or ``message`` (null for an envelope that is no written message), or
    with one of another type, or a ``reason`` no driver writes, is a KeyError or TypeError, which the
    readers turn into an error naming its line (render_show's first_unread), as show_rows' other reads
    of a record are: not words about an envelope the record does not describe."""
    kind = e["kind"]
    device, message, reason = e["device"], e["message"], e.get("reason")
    if type(device) is not str:
        raise TypeError(f"device: {brief(device)}")  # (a value shown by brief's rule, in unread_reason's)
    if message is not None and type(message) is not int:
        raise TypeError(f"message: {brief(message)}")
    if reason is not None and (kind != "undecryptable" or reason not in REFUSAL_REASONS):
        raise TypeError(f"reason: {brief(reason)}")
    held = boxes.get(device.rpartition("/")[0])
    reader = f"{held[0]}'s mailbox for {held[1]} ({device})" if held else device
    if kind == "duplicate_dropped":
        copy = "a receipt or other control message" if message is None else f"message {message}"
        return f"{reader} dropped a second copy of {copy}"
    # (no message: an envelope no one wrote as a message, a receipt or other control message, or one the
    # relay made, as the identity swap's forgery)
    what = "an envelope that is no written message" if message is None else f"message {message}"
    if reason == "untrusted_identity":
        return f"{reader} refused {what}: it decrypted, but from a changed identity key the user has not approved"
    if reason == "sealed_sender_self_send":
        return f"{reader} dropped {what}: sealed under its own address (a self-send)"
    return f"{reader} could not decrypt {what}"


def show_rows(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The teaching view's rows: (time, what the phones saw, the sender the relay saw, the rest of
    what the relay saw). Under sealed sender the relay's sender cell is :data:`SEALED`. Exceptional
    access (ghost devices, key escrow, a global key, seized phones) has rows of its own."""
    senders = {e["message"]: (e["from"], e["to"]) for e in events if e["kind"] == "message_sent"}
    senders |= {
        e["message"]: (e["from"], f"group {e['group']}") for e in events if e["kind"] == "group_message_sent"
    }
    boxes = mailbox_holders(events)
    rows: list[tuple[str, str, str, str]] = []
    for e in events:
        kind = e["kind"]
        when = _clock(event_time(e["t"]))
        phones = frm = relay = ""
        if kind == "message_accepted":
            recs = e["relay"]
            r0 = recs[0] if recs else {}
            who, to = senders.get(e["message"], ("?", r0.get("recipient_account", "?")))
            frm = f"{r0['account']}/{r0.get('device', '?')}" if "account" in r0 else SEALED
            size = sum(r.get("size", 0) for r in recs)
            phones = f"{who} sent to {to}: {_quote(e['plaintext'])}"
            accounts = ", ".join(dict.fromkeys(str(r.get("recipient_account", "?")) for r in recs)) or "?"
            relay = (
                f"send @ {r0.get('host', '?')} to {accounts} "
                f"({len(recs)} device{'s' if len(recs) != 1 else ''}), {size} bytes of ciphertext"
            )
        elif kind == "message_received":
            r = e["relay"]
            d = r.get("delivery") or {}
            who = senders.get(e["message"], ("?", "?"))[0]
            phones = f"{e['device']} read, from {who}: {_quote(e['plaintext'])}"
            frm = SEALED if r.get("sealed") else (r.get("sender_shown_by_relay") or "")
            relay = (
                f"delivered envelope {r['envelope_id'][:8]}… to "
                f"{d.get('account', '?')}/{d.get('device', '?')} @ {d.get('host', '?')}"
            )
        elif kind in ("device_online", "device_offline"):
            phones = relay = f"{e['device']} {'comes online' if kind == 'device_online' else 'goes offline'}"
        elif kind == "device_moved":
            phones = relay = f"{e['device']} moves to {e['address']}"
        elif kind == "legal_process_served":
            relay = f"SERVED: {e['process']} on {e['target'] or 'everyone'} ({e['name']})"
        elif kind == "demand_withdrawn":
            relay = f"WITHDRAWN: {e['process']} ({e['name']})"
        elif kind == "disclosure":
            relay = f"DISCLOSED for {e['name']}: {', '.join(e['provided']) or 'nothing'}"
        elif kind == "message_lost":
            phones = f"message {e['message']} lost: {e['why']}"
        elif kind in ("undecryptable", "duplicate_dropped"):
            phones = unread_words(e, boxes)
        elif kind == "exceptional_access":
            demand = e["demand"]
            if demand == "ghost_device":
                relay = (
                    f"GHOST DEVICE {e['ghost']} added to {e['target']}'s account by {e['registered_by']}; "
                    f"operated from {e['operated_from']}"
                )
            elif demand == "ghost_participant" and e.get("added"):
                relay = (
                    f"GHOST PARTICIPANT {e['ghost']} added to group {e['group']} by {e['added_by']}; "
                    f"operated from {e['operated_from']}"
                )
            elif demand == "ghost_participant":
                relay = f"GHOST PARTICIPANT for group {e['group']}: not added — {e['why']}"
            elif demand == "key_escrow":
                relay = f"KEY ESCROW on {e['devices']} devices: {e['what_changes']}"
            elif demand == "global_key":
                relay = f"GLOBAL KEY on {e['devices']} devices: {e['what_changes']}"
            else:
                relay = f"EXCEPTIONAL ACCESS: {demand}"
        elif kind == "group_membership_changed":
            change = ", ".join([*(f"{a} added" for a in e["added"]), *(f"{a} removed" for a in e["removed"])])
            phones = f"{e['device']} sees group {e['group'][:8]}… change: {change}" + (
                "" if e["shown_to_user"] else " (not shown: a changed client)"
            )
        elif kind == "ghost_read":
            phones = f"GHOST {e['device']} read message {e['message']}: {_quote(e['plaintext'])}"
        elif kind == "device_list_changed":
            added = ", ".join(f"{e['account']}/{n}" for n in e.get("added") or [])
            phones = f"{e['device']} sees {e['account']}'s devices change" + (
                f": {added} added" if added else ""
            )
            relay = f"{e['device']} fetches {e['account']}'s new device list"
        elif kind == "escrow_key_stolen":
            relay = (
                f"ESCROW KEY STOLEN: {e['captured_envelopes']} captured envelopes; messages "
                f"{_ids(e['opened_messages'])} opened"
            )
        elif kind == "phone_seized":
            copied = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in (e.get("copied") or {}).items())
            phones = f"{e['device']} SEIZED; its keys copied ({copied})"
        else:
            continue
        rows.append((when, phones, frm, relay))
    return rows


def _exceptional_lines(events: list[dict[str, Any]], out: Path) -> list[str]:
    """One line per exceptional-access report: what it opened, and where the report is."""
    lines = []
    for e in events:
        if e["kind"] != "exceptional_report":
            continue
        if "ghost" in e:
            got = f"the ghost {e['ghost']} read messages {_ids(e.get('read'))}"
        elif "opened" in e:
            got = f"messages opened: {_ids(e.get('opened'))}"
        else:
            got = "see the report"
        lines.append(f"- {e['name']}: {got}; in full: {out}/exceptional/{e['name']}.md")
    return lines


def render_show(out: Path, *, limit: int | None = 20, width: int | None = None, color: bool = False) -> str:
    """Side by side: the conversation as the phones saw it, and the same minutes as the relay saw
    them; ``limit`` rows (None: all), saying how many it left out."""
    events, summary = read_run(out)
    try:
        return _render_show(events, summary, out, limit=limit, width=width, color=color)
    except _UNREAD_ERRORS as exc:
        line = first_unread(events)  # (which one was not said: a transcript of 100,000 lines)
        raise RunFolderError(
            f"{out}/transcript.jsonl: {f'line {line}: ' if line else ''}an event this version of "
            f"relaysim does not read ({unread_reason(exc)}: missing or malformed); {run_again(out)}"
        ) from exc


MAX_REASON = 500  # characters of an exception's message that an error about a transcript's event shows


def unread_reason(exc: BaseException) -> str:
    """Why an event could not be read, for an error message: the exception's type and its message whole
    up to MAX_REASON characters (beyond, its first ones, ``…`` and how long it is), every character a
    terminal would obey written as an escape. (``brief(exc)``, its repr cut at 60 characters, left
    the reason out: ``TypeError("unsupported operand type(s) for -: 'str' and 'float'")`` was cut.)"""
    text = str(exc)  # (a KeyError's: the key's repr)
    if len(text) > MAX_REASON:
        text = f"{text[:MAX_REASON]}… ({len(text):,} characters)"
    return printable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# what show_rows raises for an event it cannot read, as the HTML report's timeline (_TIMELINE_ERRORS): a
# ValueError too (relay records' sizes adding up past the digits Python writes an int with)
_UNREAD_ERRORS: tuple[type[Exception], ...] = (KeyError, TypeError, IndexError, AttributeError, ValueError)


def first_unread(
    events: list[dict[str, Any]],
    read: Callable[[list[dict[str, Any]]], object] = show_rows,
    errors: tuple[type[Exception], ...] = _UNREAD_ERRORS,
) -> int | None:
    """The line of the transcript (read_run reads an event a line) of the first event a view cannot read
    alone (``read`` raises one of ``errors`` for it: the teaching view's show_rows, or the HTML report's
    timeline); if each can (what fails is two events together, as a message's words and the
    ``message_sent`` that says who wrote them), the line that completes the fault: the first n at which
    the view cannot read ``events[:n]``, found by halving (the view reads O(log n) prefixes). None if the
    view reads every event alone and all of them together (what failed was not this view)."""
    for n, event in enumerate(events, 1):
        try:
            read([event])
        except errors:
            return n
    if _reads(read, events, errors):
        return None
    good, bad = 0, len(events)  # the view reads events[:good] (none) and not events[:bad]
    while bad - good > 1:
        mid = (good + bad) // 2
        if _reads(read, events[:mid], errors):
            good = mid
        else:
            bad = mid
    return bad


def _reads(
    read: Callable[[list[dict[str, Any]]], object],
    events: list[dict[str, Any]],
    errors: tuple[type[Exception], ...],
) -> bool:
    try:
        read(events)
    except errors:
        return False
    return True


_LOUD = ("SERVED", "DISCLOSED", "WITHDRAWN", "GHOST", "KEY ESCROW", "GLOBAL KEY", "ESCROW KEY")


def _styled(row: tuple[str, str, str, str]) -> tuple[Text, ...]:
    """Colour for a terminal (nothing shows it when colour is off): the state's access stands out."""
    when, phones, frm, relay = row
    return (
        Text(when, style="dim"),
        Text(phones, style="bold red" if phones.startswith("GHOST") or " SEIZED" in phones else ""),
        Text(frm, style="italic cyan" if frm == SEALED else ""),
        Text(relay, style="bold yellow" if relay.startswith(_LOUD) else ""),
    )


def _render_show(
    events: list[dict[str, Any]],
    summary: dict[str, Any],
    out: Path,
    *,
    limit: int | None,
    width: int | None,
    color: bool,
) -> str:
    rows = show_rows(events)
    shown = rows if limit is None else rows[:limit]
    left_out = len(rows) - len(shown)
    grid = table(
        ["time", "WHAT THE PHONES SAW", "FROM (relay)", "WHAT THE RELAY SAW"],
        [_styled(r) for r in shown],
        ratios=(0, 5, 0, 5),
    )
    head = f"{summary.get('scenario', '?')} — seed {summary.get('seed', '?')}"
    if summary.get("start"):
        head += f" — starts {summary['start']} (the times below count from it)"
    tail = [
        "",
        "The phones' column exists only on the phones. The relay's columns are everything the relay could "
        "hand over: who, when, from which address, how many bytes — and no words. Under sealed sender its "
        f"FROM cell is {SEALED}: it never learns who sent a message.",
    ]
    if left_out:
        tail.insert(
            0,
            f"… {left_out} more row{'s' if left_out != 1 else ''} not shown (of {len(rows)}): "
            f"relaysim show {shell_word(out)} --all",
        )
    envelopes = envelope_lines(summary)
    if envelopes:
        tail += ["", "ENVELOPES, BY WHOSE DEVICE THEY WERE FOR", *envelopes]
    exceptional = _exceptional_lines(events, out)
    if exceptional:
        tail += ["", "EXCEPTIONAL ACCESS", *exceptional]
    return render(head, "", grid, *tail, width=width, color=color)


def _grid(rows: list[tuple[str, str]], indent: int = 0) -> Table:
    """Two columns without rules, the second wrapping under itself (a hanging indent), never mid-word."""
    g = Table.grid(padding=(0, 1, 0, 0), pad_edge=False)
    if indent:
        g.add_column(width=indent - 1, no_wrap=True)
    g.add_column(no_wrap=True)
    g.add_column(overflow="fold")
    for label, value in rows:
        g.add_row(*([""] if indent else []), label, value)
    return g


def order_outcome(o: dict[str, Any]) -> str:
    """What one legal order produced, in one line (an entry of ``summary["disclosures"]``)."""
    course = " then ".join(o.get("history") or [o["response"]]).replace("withdrawn", "demand withdrawn")
    parts = [course]
    if o.get("no_such_account"):
        parts.append("no such account")
    parts.append(f"handed over: {', '.join(o['provided']) or 'nothing'}")
    for reason, label in REASON_LABELS.items():
        if o.get(reason):
            parts.append(f"{label}: {', '.join(o[reason])}")
    return "; ".join(parts)


def render_demo(out: Path, *, width: int | None = None, color: bool = False) -> str:
    """The teaching view, then what each legal process served in the run obtained."""
    parts: list[Any] = [render_show(out, limit=40, width=width, color=color)]
    _events, summary = read_run(out)
    orders = summary.get("disclosures") or []
    if orders:
        parts += ["", "LEGAL PROCESS SERVED ON THE RELAY'S OPERATOR", ""]
        for o in orders:
            rows = [("handed over:", ", ".join(o["provided"]) or "nothing")]
            rows += [
                (label + ":", ", ".join(o[reason]) or "nothing") for reason, label in REASON_LABELS.items()
            ]
            sc = o.get("score") or {}
            if sc:
                rows.append(
                    (
                        "against the truth:",
                        f"{sc['contacts']['revealed']}/{sc['contacts']['true']} contacts, "
                        f"{sc['message_times']['revealed']}/{sc['message_times']['true']} message times, "
                        f"{sc['plaintext']['revealed']} message texts revealed",
                    )
                )
            parts += [f"- {o['name']} ({o['process']})", _grid(rows, indent=4)]
        parts += ["", f"Full disclosures: {out}/disclosures/*.md"]
    parts += [
        "",
        f"Everything is in {out}/ (transcript.jsonl, relay.db, summary.md). Run it again: relaysim show {shell_word(out)}",
    ]
    return render(*parts, width=width, color=color)


# --- what the provider holds beside its database ---------------------------------------------


def _provider_file(sim: Simulation, scenario: Scenario) -> dict[str, Any]:
    """``provider.json``: which profile answered, the relay clock's epoch (the run's t = 0: the
    scenario's start, or SIM_EPOCH) and end, the keys the provider holds and its geo-IP table. A
    dated run also says the date its profile is taken as of (``profile_as_of``), so ``relaysim
    disclose`` answers as the provider was then."""
    keys = [k for k in ([sim.content_key] if sim.content_key is not None else []) if k.holder == "provider"]
    out: dict[str, Any] = {
        "profile": sim.profile.name,
        "clock_epoch": sim.epoch,
        "run_ended": sim.epoch + scenario.duration,
    }
    if scenario.start is not None:
        out["profile_as_of"] = scenario.start.isoformat()
    out["content_keys"] = [{"key_id": k.key_id, "holder": k.holder, "key": k.key.hex()} for k in keys]
    # a global-key mandate's key, held by the desk from the mandate on (``held_from``, relay time):
    # ``relaysim disclose`` holds it for an order served then or later, as the run's desk did
    out["content_keys"] += [
        {"key_id": k.key_id, "holder": k.holder, "key": k.key.hex(), "held_from": at}
        for k, at in sim.mandated_keys
        if k.holder == "provider"
    ]
    out["geoip"] = {d.address: d.region for d in scenario.devices()}
    return out


# --- the same people under several profiles ---------------------------------------------------


def run_comparison_to_dir(
    scenario: Scenario, out: Path, *, progress: Callable[[float, float], None] | None = None
) -> tuple[SimulationResult, dict[str, Any]]:
    """Run ``scenario`` once per profile in ``compare_profiles`` into ``out/<profile>/``, then
    write ``out/comparison.md`` and ``comparison.json``. Returns the first profile's result and
    a summary whose ``profiles`` holds each run's summary."""
    from dataclasses import replace

    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, tuple[SimulationResult, dict[str, Any]]] = {}
    for name in scenario.compare_profiles:
        single = replace(
            scenario, relay=replace(scenario.relay, profile=name, profile_given=True), compare_profiles=()
        )
        runs[name] = run_to_dir(single, out / name, progress=progress, counterfactuals=False)
    comparison = _comparison(runs)
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "scenario_from": "built-in" if is_builtin(scenario) else "file",
        "compare_profiles": list(scenario.compare_profiles),
        "profiles": {name: s for name, (_r, s) in runs.items()},
        "comparison": comparison,
    }
    (out / "comparison.json").write_text(
        json.dumps(_round(comparison), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "comparison.md").write_text(render_comparison(scenario, runs), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_round(summary), indent=2) + "\n", encoding="utf-8")
    first = next(iter(runs.values()))[0]
    return first, summary


def _disclosures_by_order(
    runs: dict[str, tuple[SimulationResult, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Order name → profile → that profile's Disclosure, in the order the orders were answered."""
    orders: dict[str, dict[str, Any]] = {}
    answered = [d for result, _s in runs.values() for d in result.disclosures]
    for d in sorted(answered, key=lambda d: (d.process.served, d.process.name)):
        orders.setdefault(d.process.name, {})
    for name, (result, _s) in runs.items():
        for d in result.disclosures:
            orders[d.process.name][name] = d
    return orders


def _comparison(runs: dict[str, tuple[SimulationResult, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for order, by_profile in _disclosures_by_order(runs).items():
        first = next(iter(by_profile.values()))
        rows.append(
            {
                "name": order,
                "process": first.process.process,
                "target": first.process.target,
                "profiles": {p: d.summary() for p, d in by_profile.items()},
            }
        )
    return rows


def _cell(d: Any, category: str) -> str:
    """One profile's answer on one category, for the comparison table."""
    if category in d.provided:
        rows = d.provided[category]
        if category == "content":
            # content rows are messages and the phones' receipts and sync copies, opened alike
            written = sum(1 for r in rows if r.get("kind") == "message")
            other = len(rows) - written
            besides = f" (besides {other} receipt(s) and other control messages)" if other else ""
            return f"**handed over, decrypted**: {written} message(s) in the clear{besides}"
        return (
            f"handed over ({len(rows)} record{'s' if len(rows) != 1 else ''})"
            if rows
            else "handed over (none)"
        )
    if category in d.reasons:
        reason, why = d.reasons[category]
        label = REASON_LABELS[reason]
        return f"{label}: {why}" if reason == "withheld_by_policy" else f"**{label}**: {why}"
    return "–"


def _words(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content rows that carry words (relay.content: a receipt's or a cover's carry none)."""
    return [r for r in rows if "text" in r]


def _controls(rows: list[dict[str, Any]]) -> str:
    """ ", besides N receipt(s) …": the opened envelopes that were not messages, counted by kind."""
    kinds: dict[str, int] = {}
    for r in rows:
        if r.get("kind", "message") != "message":
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    if not kinds:
        return ""
    return " (besides " + ", ".join(f"{n} {k}(s)" for k, n in sorted(kinds.items())) + ")"


def _glance(d: Any) -> str:
    """What one operator could do with the message bodies under one order."""
    cipher = len(d.provided.get("ciphertext") or [])
    if d.provided.get("content"):
        read = _words(d.provided["content"])
        return f"**{len(read)} message(s) read**, decrypted with the provider's own key" + _controls(
            d.provided["content"]
        )
    if "content" in d.withheld:
        return f"held but withheld by policy ({cipher} ciphertext(s) handed over)"
    reason, why = d.reasons.get("content", ("", "not handed over"))
    label = REASON_LABELS.get(reason, "not handed over")
    return f"**{label}**: {why} ({cipher} ciphertext(s) handed over, unreadable)"


# A comparison's cell for an order the scenario served on other operators only (``profiles``).
NOT_SERVED = "not served on this operator"


def render_comparison(scenario: Scenario, runs: dict[str, tuple[SimulationResult, dict[str, Any]]]) -> str:
    """``comparison.md``: per order, what each profile's operator could produce, side by side."""
    from relaysim.relay.compliance import in_order
    from relaysim.relay.legal import INSTRUMENTS
    from relaysim.relay.profiles import ASKS, PROCESSES, get_profile

    PROCESS_NAMES = {k: i.name for k, i in INSTRUMENTS.items()}

    names = list(runs)
    titles = [get_profile(n).title for n in names]
    orders = _disclosures_by_order(runs)
    served = (
        "Each order below was served on each operator"
        if all(len(by_profile) == len(names) for by_profile in orders.values())
        else "Each order below was served on each operator, except where a column says it was not (an order "
        "the record shows made on one provider's service only)"
    )
    lines = [
        f"# {md_text(scenario.name)}: the same people, {len(names)} ways of running the relay",
        "",
        md_block(scenario.description),
        "",
        "The same people send the same messages at the same times in each run; only the relay's profile "
        f"changes ({', '.join(f'`{n}`' for n in names)}). {served}, "
        "and each column is what that operator's compliance desk produced from its own store. "
        "**Withheld by policy** means the operator has it, or could collect it, and does not hand it over; "
        "**not retained** means it could have been kept and was not; **no capability**, that the relay "
        "has no way to collect it; **cryptographically impossible**, that no key the operator holds opens it.",
        "",
        "Each run's full output is in its own folder: "
        + ", ".join(f"[`{n}/`]({n}/summary.md) (disclosures in `{n}/disclosures/`)" for n in names)
        + ".",
        "",
        "## At a glance: the words of the messages",
        "",
        "| order | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(names),
    ]
    for order, by_profile in orders.items():
        first = next(iter(by_profile.values()))
        if "content" not in ASKS[first.process.process]:
            continue
        cells = [_glance(by_profile[n]) if n in by_profile else NOT_SERVED for n in names]
        lines.append(
            f"| {md_text(order)} ({PROCESS_NAMES[first.process.process]}) | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for order, by_profile in orders.items():
        first = next(iter(by_profile.values()))
        p = first.process
        lines += [
            f"## {md_text(order)}: {PROCESS_NAMES[p.process]} on {f'`{p.target}`' if p.target else 'everyone'}",
            "",
            f"_{PROCESSES[p.process]}._ Served at {_sim_clock(p.served, epoch=scenario.epoch, dated=scenario.start is not None)}.",
            "",
            "| asked for | " + " | ".join(titles) + " |",
            "|---|" + "---|" * len(names),
        ]
        asked = set()
        for d in by_profile.values():
            asked |= set(d.provided) | set(d.reasons)
        for cat in in_order(asked):
            cells = [_cell(by_profile[n], cat) if n in by_profile else NOT_SERVED for n in names]
            label = cat.replace("_", " ").replace("ip addresses", "IP addresses")
            lines.append(f"| {label} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
        shown = [
            (n, by_profile[n]) for n in names if n in by_profile and by_profile[n].provided.get("content")
        ]
        if shown:
            lines += ["What the operators that could read the messages handed over:", ""]
            for n, d in shown:
                lines.append(f"- **{get_profile(n).title}**:")
                for row in _words(d.provided["content"])[:5]:
                    said = f"{row.get('from') or '?'} → {row['to']}: “{row['text']}”"
                    lines.append(
                        f"  - {_sim_clock(row['time'], epoch=scenario.epoch, dated=scenario.start is not None)} {md_text(said)}"
                    )
                more = len(_words(d.provided["content"])) - 5
                if more > 0:
                    lines.append(f"  - … and {more} more (in `{n}/disclosures/{order}.json`)")
            for n in names:
                d = by_profile.get(n)
                if d is None or d.provided.get("content"):
                    continue
                cipher = d.provided.get("ciphertext") or []
                why = d.reasons.get("content", ("", "not handed over"))[1]
                lines.append(
                    f"- **{get_profile(n).title}**: "
                    + (f"{len(cipher)} ciphertext(s), none readable — " if cipher else "")
                    + why
                )
            lines.append("")
    # ghost devices and swapped identities: what each profile's phones detect, side by side
    for name in sorted({r.name for result, _s in runs.values() for r in result.exceptional}):
        by_profile = {
            n: next(r for r in result.exceptional if r.name == name)
            for n, (result, _s) in runs.items()
            if any(r.name == name for r in result.exceptional)
        }
        lines += detection_by_profile_lines(by_profile)
    return "\n".join(lines) + "\n"


def render_demo_comparison(
    out: Path, profiles: list[str], *, width: int | None = None, color: bool = False, quotes: int = 3
) -> str:
    """The demo for a scenario run under several profiles: the phones beside the relay for the
    first profile, then, order by order, whether each operator could produce the words."""
    first = out / profiles[0]
    parts: list[Any] = [
        render_show(first, limit=18, width=width, color=color),
        "",
        "WHAT EACH OPERATOR COULD PRODUCE (THE RECORD)",
        "",
    ]
    names: list[str] = []  # every order, on whichever operators it was served
    named: dict[str, str] = {}  # each order's name → the summary's field that first named it
    for profile in profiles:
        summary_file = out / profile / "summary.json"
        summary = _read_json(summary_file, out)
        # (no object, a disclosures entry no object or without its name: a TypeError or KeyError that
        # reached the last-resort handler)
        if not isinstance(summary, dict):
            raise RunFolderError(
                f"{summary_file}: expected a JSON object, got {type(summary).__name__}; {run_again(out)}"
            )
        orders = summary.get("disclosures", [])
        if not isinstance(orders, list):
            raise RunFolderError(
                f"{summary_file}: disclosures: expected a list of the orders served, got "
                f"{type(orders).__name__}; {run_again(out)}"
            )
        for i, o in enumerate(orders):
            if not isinstance(o, dict) or "name" not in o:
                got = "an object without one" if isinstance(o, dict) else brief(o)
                raise RunFolderError(
                    f"{summary_file}: disclosures[{i}]: expected an order served, an object with its name, "
                    f"got {got}; {run_again(out)}"
                )
            # (joined onto the run's folder as disclosures/NAME.json: "../../x" was read outside it)
            problem = plain_name_problem(o["name"], "the order's name, that of its disclosure's file")
            if problem is not None:
                raise RunFolderError(f"{summary_file}: disclosures[{i}].name: {problem}; {run_again(out)}")
            if o["name"] not in names:
                names.append(o["name"])
                named[o["name"]] = f"{summary_file}: disclosures[{i}].name"

    def load(profile: str, name: str) -> dict[str, Any] | None:
        path = out / profile / "disclosures" / f"{name}.json"
        if not path.exists():  # served on the other operators only
            return None
        # (not JSON, a field of another type, a reason relaysim never gives: a JSONDecodeError,
        # KeyError or TypeError reached the last-resort handler; checked as the report checks it)
        data = _read_json(path, out)
        problem = disclosure_problem(data)
        if problem is not None:
            raise RunFolderError(f"{path}: {problem}; {run_again(out)}")
        return cast(dict[str, Any], data)

    def head_of(name: str) -> dict[str, Any]:
        head = next((d for d in (load(p, name) for p in profiles) if d is not None), None)
        if head is None:  # (StopIteration reached the last-resort handler)
            raise RunFolderError(
                f"{named[name]}: {brief(name)} names no disclosure: no profile's disclosures/ holds "
                f"{name}.json; {run_again(out)}"
            )
        return head

    for name in sorted(names, key=lambda n: head_of(n).get("served") or 0):
        head = head_of(name)
        parts.append(f"{name} — {head['process'].replace('_', ' ')} on {head['target'] or 'everyone'}:")
        rows: list[tuple[str, str]] = []
        for profile in profiles:
            data = load(profile, name)
            if data is None:
                rows.append((profile, NOT_SERVED))
                continue
            if data["response"] != "complied":  # the demand's course: refused, then withdrawn
                course = " then ".join(h["response"] for h in data.get("history") or [data])
                rows.append((profile, f"response: {course.replace('withdrawn', 'demand withdrawn')}"))
            content = data["provided"].get("content")
            why_not = {c: (r, w) for r, cats in data["not_provided"].items() for c, w in cats.items()}
            if "content" not in data["provided"] and "content" not in why_not:
                rows.append((profile, "(this order does not ask for content)"))
            elif content:
                rows.append(
                    (profile, f"the words, {len(_words(content))} message(s), e.g.:{_controls(content)}")
                )
                for row in _words(content)[:quotes]:
                    rows.append(
                        ("", f"  {row.get('from') or '?'} → {row.get('to')}: \u201c{row.get('text')}\u201d")
                    )
            else:
                reason, why = why_not["content"]
                rows.append((profile, f"no words — {REASON_LABELS[reason]}: {why}"))
            routing = [c for c in ("realtime_routing", "message_log") if data["provided"].get(c)]
            if routing:
                n = sum(len(data["provided"][c]) for c in routing)
                rows.append(("", f"and {n} routing record(s): who, to whom, when, from which address"))
        parts += [_grid(rows, indent=2), ""]
    parts.append(f"Side by side, in full: {out}/comparison.md")
    what_if = out / "counterfactual.md"  # a separate, labelled run (sims.counterfactual), never the record
    if what_if.exists():
        parts += ["", "=" * 40, "", read_run_text(what_if).rstrip()]
        parts.append(f"\nThe counterfactual run, in full: {out}/counterfactual/")
    return render(*parts, width=width, color=color)
