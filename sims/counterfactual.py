"""Counterfactual runs: what a demand would have yielded had the provider complied.

A ``legal_process`` event with ``counterfactual = "complied"`` is served as it happened in the
scenario's own run (the record). ``relaysim run`` then runs the same scenario a second time,
separately, into ``DIR/counterfactual/``, with one change: the provider complies with that
instrument in full — it answers the demand ("complied" instead of its recorded response), its
policy hands over everything the instrument asks for, and no withdrawal follows. Everything else
is the same: the same people, messages, seed and capabilities, so the difference between the two
runs is the provider's decision and nothing else.

A demand the record shows made of some operators only (``profiles``: the PTA's of 2015 named BES)
is, in the counterfactual, made of every operator the scenario compares: the same demand on the
other design, which is what the comparison is for, and said so beside it ("had the same demand
been made of this operator"). On BlackBerry Enterprise Server compliance yields routing metadata
and ciphertext nobody at BlackBerry can open; on consumer BBM, where only policy protected the
words, the provider's own (global) key opens them.

The counterfactual run's scenario description begins "COUNTERFACTUAL", its outputs live in their
own folder, and ``counterfactual.md`` says which demand was changed and how: it is never mixed
with the record.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from relaysim.relay.legal import REASON_LABELS, get_instrument
from relaysim.relay.mdtext import md_code_line, md_text
from relaysim.relay.profiles import Profile
from relaysim.sims.analysis.runfiles import read_run_text
from relaysim.sims.scenario import LegalProcessEvent, Scenario

__all__ = [
    "LABEL",
    "complied_profile",
    "counterfactual_events",
    "counterfactual_scenario",
    "render_counterfactual",
]

LABEL = "COUNTERFACTUAL — not what happened"


def counterfactual_events(scenario: Scenario) -> list[tuple[str, str, str]]:
    """(order name, instrument key, counterfactual) for each legal_process event that asks for one."""
    return [
        (e.name, e.process, e.counterfactual)
        for e in scenario.events
        if isinstance(e, LegalProcessEvent) and e.counterfactual
    ]


def counterfactual_scenario(scenario: Scenario) -> Scenario:
    """The same scenario, marked as the counterfactual run and labelled so in its description."""
    demands = ", ".join(
        f"{name} ({get_instrument(p).name})" for name, p, _c in counterfactual_events(scenario)
    )
    widened = [
        e.name
        for e in scenario.events
        if isinstance(e, LegalProcessEvent) and e.counterfactual and e.profiles
    ]
    events = tuple(
        replace(e, profiles=()) if isinstance(e, LegalProcessEvent) and e.counterfactual else e
        for e in scenario.events
    )
    also = (
        f" {', '.join(widened)}, made in the record of some operators only, is made here of every operator."
        if widened
        else ""
    )
    return replace(
        scenario,
        events=events,
        counterfactual=True,
        description=f"{LABEL}: the provider complies in full with {demands}.{also} "
        f"Everything else is as in the record.\n\n{scenario.description}",
    )


def complied_profile(profile: Profile, scenario: Scenario) -> Profile:
    """``profile`` as if it had complied in full with each counterfactual demand of ``scenario``."""
    responses = dict(profile.responses)
    discloses = dict(profile.discloses)
    assumptions = dict(profile.assumptions)
    for _name, process, what in counterfactual_events(scenario):
        assert what == "complied", what
        instrument = get_instrument(process)
        if responses.get(process, "complied") != "complied":
            assumptions.pop(process, None)  # what it assumed was the answer, now replaced
        responses[process] = "complied"
        discloses[process] = instrument.asks
    return replace(profile, responses=responses, discloses=discloses, assumptions=assumptions)


def _disclosure(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / "disclosures" / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(read_run_text(path))
    return data


def _answer(data: dict[str, Any] | None, quotes: int) -> list[str]:
    """What one run's disclosure came to, in a few lines."""
    if data is None:
        return ["(no answer in this run)"]
    history = data.get("history") or []
    course = "; then ".join(h["response"].replace("withdrawn", "demand withdrawn") for h in history)
    lines = [f"response: {course or data['response']}"]
    provided = data["provided"]
    got = [c for c in provided if provided[c]]
    lines.append(f"handed over: {', '.join(got) or 'nothing'}")
    content = provided.get("content") or []
    words = [r for r in content if "text" in r]  # receipts and other control content carry none
    if content:
        lines.append(f"the words: {len(words)} message(s), opened with the provider's own key, e.g.:")
        lines += [
            f"  {r.get('from') or '?'} → {r.get('to')}: “{md_code_line(r.get('text'))}”"
            for r in words[:quotes]
        ]
    else:
        why = {c: (r, w) for r, cats in data["not_provided"].items() for c, w in cats.items()}.get("content")
        if why:
            lines.append(f"the words: none — {REASON_LABELS[why[0]]}: {why[1]}")
        cipher = provided.get("ciphertext") or []
        if cipher:
            lines.append(f"ciphertext: {len(cipher)} message body(ies) handed over")
    return lines


def render_counterfactual(scenario: Scenario, out: Path, *, quotes: int = 3) -> str:
    """``counterfactual.md`` (and the demo's last section): per counterfactual demand and profile,
    the record beside what compliance would have yielded, each labelled as what it is."""
    profiles = list(scenario.compare_profiles) or [scenario.relay.profile]
    nested = bool(scenario.compare_profiles)
    events = {e.name: e for e in scenario.events if isinstance(e, LegalProcessEvent)}
    lines = [
        f"# {md_text(scenario.name)}: {LABEL}",
        "",
        "The record is what the scenario's own run produced (the provider's recorded response). The "
        "counterfactual is a separate run of the same people, messages and seed in `counterfactual/`, in "
        "which the provider complies in full with the demand(s) below; nothing else changes"
        + (
            ", except that a demand the record shows made of some operators only is made of every one "
            "(said so where it applies)."
            if any(e.profiles for e in events.values() if e.counterfactual)
            else "."
        ),
    ]
    for name, process, _what in counterfactual_events(scenario):
        lines += ["", f"## {md_text(name)}: {get_instrument(process).name}", ""]
        for profile in profiles:
            record_dir = out / profile if nested else out
            cf_dir = out / "counterfactual" / profile if nested else out / "counterfactual"
            lines.append(f"### {profile}")
            lines += ["", "THE RECORD (what happened):", ""]
            if events[name].served_under(profile):
                lines += [f"    {x}" for x in _answer(_disclosure(record_dir, name), quotes)]
                lines += ["", f"{LABEL} (had the provider complied):", ""]
            else:
                made_on = ", ".join(events[name].profiles)
                lines += [f"    not served on this operator: the demand was made of {made_on} only"]
                lines += [
                    "",
                    f"{LABEL} (had the same demand been made of this operator, and complied with):",
                    "",
                ]
            lines += [f"    {x}" for x in _answer(_disclosure(cf_dir, name), quotes)]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
