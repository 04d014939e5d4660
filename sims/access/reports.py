"""What the interventions found, written down: ``exceptional/NAME.json`` and ``NAME.md`` per report.

Each ``*_markdown`` function turns one report's data (the JSON written beside it) into the page a
reader sees; ``write_exceptional`` writes them all and returns the index for the run's summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaysim.relay.mdtext import md_text
from relaysim.sims.world.util import clock as _clock

__all__ = [
    "REFUSED_TEXT",
    "ExceptionalReport",
    "detection_by_profile_lines",
    "escrow_markdown",
    "ghost_markdown",
    "global_key_markdown",
    "identity_swap_markdown",
    "refused_words",
    "seizure_markdown",
    "unread_lines",
    "write_exceptional",
]


@dataclass
class ExceptionalReport:
    """One result, as written to ``exceptional/NAME.json`` and ``NAME.md``."""

    name: str
    data: dict[str, Any]
    markdown: str


# what each reason an agent refuses an envelope it decrypted means (clients.agent.REFUSAL_REASONS),
# in summary.md's words (sims.report): the one table the ghost reports' Markdown and the HTML report
# (sims.reports.html) say them from
REFUSED_TEXT = {
    "untrusted_identity": "from a changed identity key the user has not approved",
    "sealed_sender_self_send": "sealed under its own address, a self-send",
}


def refused_words(refused: dict[str, Any]) -> str:
    """A ghost report's ``refused`` counts, by reason, in :data:`REFUSED_TEXT`'s words (a reason it does
    not have, as its key): plain text, which each output escapes as it writes it."""
    return "; ".join(f"{REFUSED_TEXT.get(r, r)}: {n}" for r, n in refused.items())


def unread_lines(data: dict[str, Any], phone: str) -> list[str]:
    """The report's ``undecryptable`` and ``refused`` counts (what reached ``phone`` that it did not
    read), as the JSON beside it has them."""
    refused = data["refused"]
    by_reason = md_text(refused_words(refused))
    return [
        f"- Envelopes that reached {phone} and did not decrypt: {data['undecryptable']}; that it decrypted "
        f"and refused, unread: {sum(refused.values())}" + (f" ({by_reason})." if by_reason else "."),
    ]


def _yes(b: bool) -> str:
    return "**opened**" if b else "closed"


def escrow_markdown(data: dict[str, Any], scenario: str) -> str:
    since, stolen = data["escrow_began"], data["escrow_key_stolen"]
    rows = data["rows"]
    escrowed = [r for r in rows if r["escrowed"]]
    lines = [
        f"# Key escrow — {md_text(scenario)}",
        "",
        "From the moment a key-escrow mandate is in force, every phone still runs the Double Ratchet, but "
        "each message also carries its message key (with the header and associated data needed to use it) "
        "encrypted to an escrow agent's public key. The relay sees the same opaque bytes, only larger. "
        "Whoever holds the escrow private key can open every escrowed message that anyone captured.",
        "",
        f"- Escrow began: **{_clock(since) if since is not None else 'never'}**.",
        f"- The escrow private key was stolen: **{_clock(stolen) if stolen is not None else 'never'}**.",
        f"- Messages accepted by the relay: {len(rows)}; sent under escrow: {len(escrowed)}; "
        f"captured: {sum(1 for r in rows if r['captured'])}.",
        f"- Opened with the stolen key: **{len(data['opened'])}** "
        f"({len(data['opened_when_stolen'])} of them already captured at the moment of the theft).",
        f"- Matches ground truth (opened = escrowed and captured, word for word): "
        f"**{'yes' if data['matches_ground_truth'] else 'NO'}**.",
    ]
    if data["mean_escrow_frame_bytes"] is not None:
        lines.append(
            f"- What the relay sees: the same opaque envelopes, each {data['mean_escrow_frame_bytes']:.0f} bytes "
            "larger on average under escrow (the escrow frame). Nothing else in its view changes."
        )
    if data["sealed_sender"]:
        lines.append(
            "- Sealed sender was on, so the relay did not see who sent what — and it made no difference: the "
            "escrow frame sits outside the sealed layer, and its record carries the ratchet message too."
        )
    lines += [
        "",
        "No message sent before escrow began opens: those keys never left the phones. Every message sent "
        "after it, by every user, opens — including those recorded long before the key leaked.",
        "",
        "| message | from → to | sent | escrowed | captured | with the stolen key | what the thief reads | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        text = f"“{md_text(r['opened_text'])}”" if r["opened_text"] is not None else "—"
        lines.append(
            f"| {r['message']} | {md_text(r['from'])} → {md_text(r['to'])} | {_clock(r['sent'])} "
            f"| {'yes' if r['escrowed'] else 'no'} | {'yes' if r['captured'] else 'no'} | {_yes(r['opened'])} "
            f"| {text} | {md_text(r['why'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def global_key_markdown(data: dict[str, Any], scenario: str, messages: int) -> str:
    since, after, orders = data["global_key_since"], data["messages_under_global_key"], data["orders"]
    lines = [
        f"# Global key — {md_text(scenario)}",
        "",
        f"At {_clock(since)} the provider was made to switch every device from the Double Ratchet to one "
        "key it holds (as consumer BlackBerry PIN/BBM did). From then on each message body is AES-256-GCM "
        "under that key, and the provider's compliance desk holds it.",
        "",
        f"Messages sent from then on: {len(after)} of {messages}.",
        "",
        "| order | process | served | ciphertexts tried | opened |",
        "|---|---|---|---|---|",
        *[
            f"| {md_text(o['name'])} | {o['process']} | {_clock(o['served'])} | {o['ciphertexts_tried']} | {o['opened']} |"
            for o in orders
        ],
        "",
        "Ciphertexts from before the switch stay end-to-end encrypted: the global key does not open them.",
        "",
    ]
    return "\n".join(lines)


def ghost_markdown(data: dict[str, Any], scenario: str) -> str:
    rows = data["rows"]
    noticed = data["device_list_changes_seen"]
    lines = [
        f"# Ghost device — {md_text(scenario)}",
        "",
        f"At **{_clock(data['added_at'])}** the provider, compelled, added device **{md_text(data['ghost'])}** to "
        f"**{md_text(data['target'])}**'s account, writing it straight into its own store: none of "
        f"{md_text(data['target'])}'s devices approved it, and no registration was logged. The agency holds its keys "
        f"and runs it from {data['operated_from']}.",
        "",
        (
            f"The next time each contact sent to {md_text(data['target'])}, the relay refused the send as naming stale "
            "devices; the contact's phone fetched the bundles again and found the new device without the "
            f"signature of {md_text(data['target'])}'s primary: it refused to encrypt to it (see below)."
            if data.get("contacts_refused_ghost")
            else f"The next time each contact sent to {md_text(data['target'])}, the relay refused the send as naming stale "
            "devices; the contact's phone fetched the bundles again, started a session with the new device, and "
            "encrypted every later message to it as well. Nothing in the Double Ratchet is broken: the senders "
            "encrypt to whom the directory tells them to."
        ),
        "",
        f"- Messages to {md_text(data['target'])}: {len(rows)}; read by the ghost: **{len(data['read'])}**.",
        f"- Matches ground truth (read = sent after the ghost was added, word for word): "
        f"**{'yes' if data['matches_ground_truth'] else 'NO'}**.",
        *unread_lines(data, "the ghost"),
        "",
        "| message | from | at the relay | after the ghost was added | ghost read it | why |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['message']} | {md_text(r['from'])} | {_clock(r['accepted'])} | {'yes' if r['after_ghost_added'] else 'no'} "
            f"| {'**yes**' if r['read_by_ghost'] else 'no'} | {md_text(r['why'])} |"
        )
    lines += ["", "## What the target's contacts could see", ""]
    if noticed:
        lines.append(
            f"Each sender's phone saw {md_text(data['target'])}'s device list grow — the notice the ghost proposal needs "
            "suppressed. "
            + (
                "Under this profile's identity model the ghost's key also raised IdentityChanged ('safety "
                "number changed') at: " + ", ".join(map(md_text, data["contacts_saw_identity_change"])) + ". "
                if data.get("contacts_saw_identity_change")
                else "Here the ghost arrives at a new address with a key of its own: no pinned key changes "
                "and no phone raises IdentityChanged. "
            )
            + "A safety-number "
            f"comparison in person (a `verify_safety_number` event) would catch it: the sender's phone shows a "
            f"number for a device that is in none of {md_text(data['target'])}'s hands, and it matches nothing:"
        )
        lines.append("")
        for c in noticed:
            lines.append(
                f"- {_clock(c['t'])}: **{md_text(c['device'])}** saw {md_text(c['account'])}'s device list grow by device {', '.join(map(str, c['added']))}"
            )
    else:
        lines.append("No contact's phone saw the device list change (no one sent to the target afterwards).")
    missing = sorted(set(data["senders_to_target"]) - {n.split("/")[0] for n in data["noticed_by"]})
    if missing:
        lines += [
            "",
            f"Contacts who never sent to {md_text(data['target'])} afterwards noticed nothing: {', '.join(map(md_text, missing))}.",
        ]
    lines += [
        "",
        f"{md_text(data['target'])}'s own phones were not told: this simulation has no linked-device list to show "
        f"them. The ghost logs in to the relay like any phone, from {data['operated_from']}; whether that "
        "is written down depends on what the relay keeps.",
        "",
    ]
    if "identity_model" in data:
        lines += ghost_identity_lines(data)
    if "detection" in data:
        lines += _ghost_detection_lines(data)
    return "\n".join(lines)


_MODEL_TEXT = {
    "account": "linked devices share the account's identity key (transferred from the primary at linking)",
    "signed-devices": "each companion device has its own key, which the primary device must sign",
    "per-device": "per-device keys from the provider's directory, taken as served",
}


def ghost_identity_lines(data: dict[str, Any]) -> list[str]:
    """What each side saw, by the profile's identity model (relay.profiles.Profile.identity_model)."""
    target, model = md_text(data["target"]), data["identity_model"]
    warned, refused = data["contacts_saw_identity_change"], data["contacts_refused_ghost"]
    if refused:
        contacts = (
            f"refused the ghost: no signature by {target}'s primary over its key; their sends to {target} "
            f"failed (unsigned_device) on {', '.join(map(md_text, refused))} — the server alone cannot add a device; "
            "it needs a client change"
        )
    elif warned:
        contacts = f"'safety number changed' (IdentityChanged) on {', '.join(map(md_text, warned))}"
    else:
        contacts = "nothing: no identity change, no refusal (at most a device-list change, if they look)"
    sync = data["sync_rows"]
    after = [r for r in sync if r["after_ghost_added"]]
    lines = [
        "## By identity model",
        "",
        f"- Profile: **{data['profile']}**; identity model **{model}**: {_MODEL_TEXT.get(model, model)}"
        + (f" ({data['identity_model_source']})." if data["identity_model_source"] else "."),
        f"- Client change compelled (the target's primary vouches for the ghost): "
        f"**{'yes' if data['client_change'] else 'no'}**; ghost has the account's key: "
        f"{'yes' if data['ghost_has_account_key'] else 'no'}; signed by the primary: "
        f"{'yes' if data['ghost_signed_by_primary'] else 'no'}"
        + ("; Contact Key Verification on." if data["key_verification"] else "."),
        f"- What {target} saw: "
        + (
            f"{len(data['target_saw'])} change(s) of their own device list."
            if data["target_saw"]
            else "nothing (no device of theirs was told of the new device)."
        )
        + (
            f" {target}'s own phone refused to send it sync copies ({', '.join(map(md_text, data['target_refused_ghost']))})."
            if data["target_refused_ghost"]
            else ""
        ),
        f"- What the contacts saw: {contacts}.",
        f"- What the ghost read: {len(data['read'])} incoming message(s), and "
        f"{len(data['sync_read'])} sync copy(ies) of {target}'s own outgoing messages "
        f"(of {len(after)} sent after it was added).",
        f"- Would a safety-number check catch it: **{'yes' if data['safety_number_check_catches_it'] else 'no'}**.",
        "",
    ]
    return lines


_SETTINGS = (
    ("no_check", "no check"),
    ("safety_numbers", "safety numbers"),
    ("key_transparency", "key transparency"),
)


def _detection_table(detection: dict[str, Any]) -> list[str]:
    lines = [
        "## Detected? Per setting of the phones' checks",
        "",
        "| setting | detected | when | how |",
        "|---|---|---|---|",
    ]
    for key, label in _SETTINGS:
        d = detection[key]
        seen = {True: "**yes**", False: "no", None: "not simulated"}[d["detected"]]
        when = _clock(d["detected_at"]) if d["detected_at"] is not None else "—"
        lines.append(f"| {label} | {seen} | {when} | {d['how']} |")
    lines.append("")
    return lines


def detection_by_profile_lines(reports: dict[str, ExceptionalReport]) -> list[str]:
    """For a scenario run once per profile (``compare_profiles``): per profile, what its phones' checks
    detect of the interception (a ghost device or a swapped identity), from each run's own report."""
    rows = {p: r for p, r in reports.items() if "detection" in r.data}
    if not rows:
        return []
    first = next(iter(rows.values()))
    what = "the ghost device" if first.name == "ghost-device" else "the swapped identity"
    lines = [
        f"## Detected? {what[0].upper()}{what[1:]}, per profile and per setting of the phones' checks",
        "",
        f"Each run's own report ({first.name}) says how; here, side by side, whether and when "
        f"{what} was found under each profile.",
        "",
        "| profile | identity model | " + " | ".join(label for _k, label in _SETTINGS) + " |",
        "|---|---|" + "---|" * len(_SETTINGS),
    ]
    for profile, report in rows.items():
        cells = []
        for key, _label in _SETTINGS:
            d = report.data["detection"][key]
            if d["detected"] is None:
                cells.append("not simulated")
            elif d["detected"]:
                cells.append(f"**yes**, {_clock(d['detected_at'])}: {d['how']}")
            else:
                cells.append("no")
        model = report.data.get("identity_model", "—")
        lines.append(f"| {profile} | {model} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    return lines


def _ghost_detection_lines(data: dict[str, Any]) -> list[str]:
    """Per setting of the phones' checks: whether and when the ghost was found (sims.access.key_transparency)."""
    detection = data["detection"]
    lines = _detection_table(detection)
    kt = detection["key_transparency"]
    if kt["detected"] is not None:
        lines += [
            "",
            "Under key transparency the relay logs every identity key it serves (an RFC 9162 Merkle log, "
            "heads signed with its server key). "
            + (
                "The compelled provider showed the target a log without the ghost (a fork). "
                if kt["fork"]
                else "The ghost is in the log everyone sees. "
            )
            + f"The target's phones audit their account every {kt['audit_interval'] / 3600:g} h. "
            "Every check goes over the wire: the phones ask the relay's log for its signed head, its entries "
            "and consistency proofs (RFC 9162 §5), and hand their heads to a witness, which gives back the "
            "largest it holds.",
            "",
        ]
        for c in kt["inclusion_checks"]:
            lines.append(
                f"- {_clock(c['t'])}: **{md_text(c['device'])}** was handed the ghost's key; its inclusion proof in the "
                f"log of {c['tree_size']} keys {'verifies' if c['included'] else 'does NOT verify'}."
            )
        for a in kt["audits"]:
            found = ", ".join(a["unexpected"]) or "nothing unexpected"
            lines.append(
                f"- {_clock(a['t'])}: **{a['device']}** audited its account in a log of {a['tree_size']} keys: "
                f"{found}; that log {'matches' if a['matches_gossiped_head'] else 'does NOT match'} the head of "
                f"{a['gossiped_head_size']} keys its contacts hold"
                + (f" ({a['against_gossiped_head']})" if a.get("against_gossiped_head") else "")
                + "."
            )
        for f in kt["forks"]:
            lines.append(
                f"- {_clock(f['t'])}: the witness found a fork ({' vs '.join(f['seen_by'])}): {f['why']}."
            )
        lines.append("")
    return lines


def _not_shown(outcome: dict[str, Any]) -> str:
    """Why the forged message was not shown (``RelaySwapsIdentity``'s outcome ``reason``: the
    ``Undecryptable.reason``, counted so in summary.json's ``messages``)."""
    reason = outcome.get("reason")
    if reason == "untrusted_identity":
        return "not shown (refused: it decrypted, from a changed identity key the user has not approved)"
    if reason == "decryption_failed":
        return "not shown (it did not decrypt)"
    if reason == "duplicate":
        return "not shown (dropped as a second copy)"
    return f"not shown ({md_text(str(reason))})" if reason else "not shown (refused)"


def identity_swap_markdown(data: dict[str, Any], scenario: str) -> str:
    victim, contact = md_text(data["victim"]), md_text(data["contact"])
    lines = [
        f"# A relay swaps an identity — {md_text(scenario)}",
        "",
        f"At **{_clock(data['swapped_at'])}** the relay delivered a first message from a device of its own, "
        f"with a fresh identity key, to {contact}'s phone(s) ({', '.join(map(md_text, data['forged_to']))}), labelled as "
        f"coming from **{victim}**"
        + (
            ", with a sender certificate it signed for the victim's name and the attacker's key (sealed "
            "sender does not help: the relay is the certificate's only signer)."
            if data["sealed_sender"]
            else "."
        ),
        "",
        f"- Policy on a changed identity key: **{data['policy']}**.",
    ]
    if data["notices"]:
        lines.append(
            f"- Noticed: **{', '.join(map(md_text, data['noticed_by']))}**, first at **{_clock(data['first_notice_at'])}** "
            "(IdentityChanged: the key pinned for that address at first contact is not this one)."
        )
    else:
        lines.append("- **No phone noticed** (the forgery did not reach a phone that knew the victim).")
    for n in data["notices"]:
        what = "accepted with a warning" if n["accepted"] else "refused until the user verifies"
        lines.append(
            f"  - {_clock(n['t'])}: {md_text(n['device'])} — {victim}'s identity key changed (via {n['via']}); {what}"
            + (" (the user had verified the old key)" if n["was_verified"] else "")
        )
    for device, o in sorted(data["outcomes"].items()):
        shown = f"shown to the user: “{md_text(o['text'])}”" if o["shown_to_user"] else _not_shown(o)
        lines.append(f"- The forged message on {md_text(device)}: {shown}.")
    lines.append(
        f"- Silently accepted (shown with no notice): **{', '.join(map(md_text, data['silently_accepted_by'])) or 'nowhere'}**."
    )
    rows = data["messages_to_victim_after"]
    read = data["read_by_attacker"]
    lines += [
        "",
        f"## What {contact} sent to {victim} afterwards",
        "",
        f"Each of {contact}'s later sends to {victim} is tried against the attacker's sessions: "
        f"**{len(read)}** of {len(rows)} opened.",
        "",
    ]
    for r in read:
        lines.append(
            f"- {_clock(r['t'])}: from {md_text(r['from'])}, read by the attacker: “{md_text(r['text'])}”"
        )
    lines += [
        "",
        "Under `warn` the contact's phone takes the new key (as Signal's default does) and shows "
        "“safety number changed”: the user is told, but the next messages go to the attacker until "
        f"{victim} answers on the old session. Under `block`, or once the contact has verified {victim}'s "
        "safety number, nothing is accepted from or sent to the new key until the user decides.",
        "",
    ]
    if "detection" in data:
        lines += _detection_table(data["detection"])
    return "\n".join(lines)


def seizure_markdown(data: dict[str, Any], scenario: str) -> str:
    rows = data["rows"]
    c = data["copied"]
    lines = [
        f"# Device seizure — {md_text(scenario)}",
        "",
        f"At **{_clock(data['seized_at'])}** the phone **{md_text(data['device'])}** was seized and its protocol state "
        f"copied: {c['sessions']} session(s) (+{c['inactive_sessions']} inactive) with the chain keys each holds, "
        f"among them {c['earlier_receiving_chain_keys']} of receiving chains before the current ones, "
        f"{c['skipped_message_keys']} skipped message key(s), {c['one_time_prekeys']} "
        f"one-time prekey(s), {c['kem_prekeys']} KEM prekey(s), and the identity key. The phone was then "
        "handed back and kept running.",
        "",
        "The agency is also given every envelope to or from that phone that the relay ever accepted (as a "
        "wiretap on the account from the first minute would collect). A copy of the seized state is run over "
        "them in order, decrypting as the phone would. Every *opened* below is a real decryption.",
        "",
        f"- Messages to or from the phone: {len(rows)}; opened with the seized state: **{len(data['opened'])}**.",
        f"- Of the {len(data['decrypted_before_seizure'])} messages the phone had already decrypted before the "
        f"seizure, opened: **{len(data['opened_of_decrypted_before_seizure'])}** (forward secrecy: each message "
        "key is deleted once used).",
        "",
        "| message | direction | peer | at the relay | before/after seizure | decrypted on the phone | seized state | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dec = r.get("decrypted_on_phone")
        dec_s = "—" if r["direction"] == "from the phone" else ("not yet" if dec is None else _clock(dec))
        lines.append(
            f"| {r['message']} | {r['direction']} | {md_text(r['peer'])} | {_clock(r['accepted'])} | {r['when']} | {dec_s} "
            f"| {_yes(r['opened'])} | {md_text(r['why'])} |"
        )
    lines += [
        "",
        "## Reading the table",
        "",
        "- **Forward secrecy**: a message the phone had already decrypted does not open again — its key was "
        "deleted when it was used, and the chain key only runs forward.",
        "- **In flight, and after the seizure**: the copy holds the current chain keys, and those of the "
        "receiving chains before the current ones a phone keeps (up to four a session, as libsignal does), so "
        "messages still on the way and messages sent later on any of those chains open.",
        "- **The next DH ratchet step**: the copy also holds the phone's current ratchet private key, so the "
        "peer's next chain (which answers that key) still opens. Once the phone makes a fresh ratchet key "
        "after the seizure, its own sending chain and the peer's chain that answers it are out of reach: "
        "the session has healed (post-compromise security).",
        "- **A changed identity key**: a message the phone refuses for its sender's identity key (a key it "
        "had not pinned, under the 'block' policy or a verified safety number) still decrypts with the seized "
        "state; the refusal is the phone's, waiting for its user, and the copy, which need not wait, reads it: "
        "it is counted as opened.",
        "- This counts only what keys open. A seized phone that keeps its message history hands that over as "
        "plain text; only disappearing messages keep deleted history closed.",
        "",
    ]
    return "\n".join(lines)


def write_exceptional(reports: list[ExceptionalReport], folder: Path) -> list[dict[str, Any]]:
    """``NAME.json`` and ``NAME.md`` per report; returns an index for the run's summary."""
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for r in reports:
        (folder / f"{r.name}.json").write_text(
            json.dumps(r.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (folder / f"{r.name}.md").write_text(r.markdown, encoding="utf-8")
        index.append({"name": r.name, "json": f"exceptional/{r.name}.json"})
    return index
