"""Running a scenario to files, and reading them back for the teaching view.

``run_to_dir`` writes, in ``--out DIR``:

- ``transcript.jsonl`` — one JSON object per event, ``t`` in simulated seconds and ``kind``;
  message events carry the text as the devices saw it under ``plaintext`` and what the relay
  saw (ids, addresses, sizes, times — never content) under ``relay``;
- ``relay.db`` — the relay's own SQLite store as it stands at the end of the run;
- ``summary.json`` — counts, delivery-latency percentiles, losses;
- ``summary.md`` — the same, for people.

Nothing written depends on the wall clock, so the same scenario and seed give the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sims.exceptional import write_exceptional
from sims.runner import Simulation, SimulationResult
from sims.scenario import Scenario
from sims.traffic import expand_population

__all__ = ["percentile", "render_show", "run_to_dir", "summarise"]


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(result: SimulationResult) -> dict[str, Any]:
    latencies = sorted(t - m.planned.at for m in result.messages for t in m.delivered.values())
    expected = sum(len(m.recipients) for m in result.messages)
    delivered = sum(len(m.delivered) for m in result.messages)
    lost = [m for m in result.messages if m.lost is not None]
    undelivered = sum(len(m.recipients) - len(m.delivered) for m in result.messages if m.lost is None)
    sc = result.scenario
    return _round(
        {
            "scenario": sc.name,
            "seed": sc.seed,
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
                "plaintext_mismatches": result.mismatched,
                "duplicates_dropped": result.duplicates_dropped,
                "undecryptable": result.undecryptable,
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
            "events": result.events_run,
        }
    )


def _markdown(summary: dict[str, Any], scenario: Scenario) -> str:
    m = summary["messages"]
    lat = summary["latency_s"]

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f} s"

    lines = [
        f"# {scenario.name}",
        "",
        scenario.description or "",
        "",
        f"Seed {summary['seed']}, {summary['duration_s'] / 3600:g} simulated hours, "
        f"{summary['people']} people on {summary['devices']} devices.",
        "",
        "## Messages",
        "",
        "| | count |",
        "|---|---|",
        f"| planned | {m['planned']} |",
        f"| accepted by the relay | {m['accepted_by_relay']} |",
        f"| lost by the network | {m['lost_by_network']} |",
        f"| deliveries to devices (expected) | {m['device_deliveries']} ({m['device_deliveries_expected']}) |",
        f"| still queued or in flight at the end | {m['still_queued_or_in_flight']} |",
        f"| duplicates dropped by devices | {m['duplicates_dropped']} |",
        f"| plaintext mismatches | {m['plaintext_mismatches']} |",
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
    ]
    return "\n".join(lines)


def run_to_dir(
    scenario: Scenario,
    out: Path,
    *,
    progress: Callable[[float, float], None] | None = None,
    capture_frames: bool = False,
) -> tuple[SimulationResult, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    db = out / "relay.db"
    for stale in (db, out / "relay.db-wal", out / "relay.db-shm"):
        stale.unlink(missing_ok=True)
    scenario = expand_population(scenario)
    with open(out / "transcript.jsonl", "w", encoding="utf-8") as f:
        write = _writer(f)
        sim = Simulation(
            scenario, db_path=db, transcript=write, progress=progress, capture_frames=capture_frames
        )
        result = sim.run()
    summary = summarise(result)
    if result.disclosures:
        summary["disclosures"] = write_disclosures(result, out / "disclosures")
    if result.exceptional:  # key escrow, global key, ghost devices, seized phones (sims.exceptional)
        summary["exceptional"] = write_exceptional(result.exceptional, out / "exceptional")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_markdown(summary, scenario), encoding="utf-8")
    return result, summary


def _sim_clock(t: float) -> str:
    """A relay-clock time as simulated time of day, for people."""
    from sims.runner import SIM_EPOCH

    rel = t - SIM_EPOCH
    day = int(rel // 86400)
    return (f"day {day + 1} " if day else "") + _clock(rel % 86400)


def write_disclosures(result: SimulationResult, folder: Path) -> list[dict[str, Any]]:
    """``NAME.json`` and ``NAME.md`` per disclosure, each scored against ground truth."""
    from sims.scoring import score

    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for d in result.disclosures:
        data = _round(d.to_json())
        if result.truth is not None:
            data["score"] = score(data, result.truth)
        (folder / f"{d.process.name}.json").write_text(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        md = d.to_markdown(_sim_clock)
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
            f"- Locations revealed: {', '.join(sc['locations']['revealed']) or 'none'} of "
            f"{', '.join(sc['locations']['true']) or 'none'}",
            f"- Messages whose words were revealed: {sc['plaintext']['revealed']}",
            "",
        ]
    )


def _writer(f: TextIO) -> Callable[[dict[str, Any]], None]:
    dumps = json.dumps

    def write(event: dict[str, Any]) -> None:
        f.write(dumps(_round(event), separators=(",", ":"), ensure_ascii=False))
        f.write("\n")

    return write


# --- the teaching view --------------------------------------------------------------------------


def _clock(t: float) -> str:
    t = int(t)
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def render_show(out: Path, *, limit: int = 20, width: int = 120) -> str:
    """Side by side: the conversation as the phones saw it, and the same minutes as the relay saw them."""
    events = [
        json.loads(line) for line in (out / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    half = (width - 3) // 2
    rows = [
        f"{summary['scenario']} — seed {summary['seed']}",
        "",
        f"{'WHAT THE PHONES SAW':<{half}} | WHAT THE RELAY SAW",
        f"{'-' * half}-+-{'-' * half}",
    ]
    shown = 0
    for e in events:
        kind = e["kind"]
        left = right = ""
        if kind == "message_accepted":
            recs = e["relay"]
            r0 = recs[0] if recs else {}
            sender = f"{r0.get('account', '?')}/{r0.get('device', '?')}" if "account" in r0 else "(sealed)"
            size = sum(r.get("size", 0) for r in recs)
            left = f"{_clock(e['t'])} sent: {e['plaintext']!r}"
            right = (
                f"{_clock(e['t'])} send from {sender} @ {r0.get('host', '?')} to "
                f"{r0.get('recipient_account', '?')} ({len(recs)} device(s)), {size} bytes of ciphertext"
            )
        elif kind == "message_received":
            left = f"{_clock(e['t'])} {e['device']} read: {e['plaintext']!r}"
            d = e["relay"].get("delivery") or {}
            right = (
                f"{_clock(e['t'])} delivered envelope {e['relay']['envelope_id'][:8]}… to "
                f"{d.get('account', '?')}/{d.get('device', '?')} @ {d.get('host', '?')}"
            )
        elif kind in ("device_online", "device_offline"):
            left = right = (
                f"{_clock(e['t'])} {e['device']} {'comes online' if kind == 'device_online' else 'goes offline'}"
            )
        elif kind == "legal_process_served":
            right = f"{_clock(e['t'])} SERVED: {e['process']} on {e['target'] or 'everyone'} ({e['name']})"
        elif kind == "disclosure":
            right = f"{_clock(e['t'])} DISCLOSED for {e['name']}: {', '.join(e['provided']) or 'nothing'}"
        elif kind == "message_lost":
            left = f"{_clock(e['t'])} message {e['message']} lost: {e['why']}"
        else:
            continue
        rows.append(f"{left[:half]:<{half}} | {right[:half]}")
        shown += 1
        if shown >= limit:
            break
    rows += [
        "",
        "The left column exists only on the phones. The right column is everything the relay could",
        "hand over: who, when, from which address, how many bytes — and no words.",
    ]
    return "\n".join(rows)


def render_demo(out: Path, *, width: int = 140) -> str:
    """The teaching view, then what each legal process served in the run obtained."""
    parts = [render_show(out, limit=40, width=width)]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    orders = summary.get("disclosures") or []
    if orders:
        parts += ["", "LEGAL PROCESS SERVED ON THE RELAY'S OPERATOR", ""]
        for o in orders:
            parts.append(f"- {o['name']} ({o['process']})")
            parts.append(f"    handed over:            {', '.join(o['provided']) or 'nothing'}")
            parts.append(f"    withheld by policy:     {', '.join(o['withheld']) or 'nothing'}")
            parts.append(f"    technically impossible: {', '.join(o['impossible']) or 'nothing'}")
            sc = o.get("score") or {}
            if sc:
                parts.append(
                    f"    against the truth: {sc['contacts']['revealed']}/{sc['contacts']['true']} contacts, "
                    f"{sc['message_times']['revealed']}/{sc['message_times']['true']} message times, "
                    f"{sc['plaintext']['revealed']} message texts revealed"
                )
        parts += ["", f"Full disclosures: {out}/disclosures/*.md"]
    parts += [
        "",
        f"Everything is in {out}/ (transcript.jsonl, relay.db, summary.md). Run it again: relaysim show {out}",
    ]
    return "\n".join(parts)
