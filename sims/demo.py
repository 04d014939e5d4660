"""``relaysim demo``: two phones, PQXDH, a short conversation, and what actually travels.

Alice and Bob publish prekey bundles; Alice fetches Bob's and runs PQXDH; they talk, with
replies, and one of Alice's messages arrives late (after Bob has already answered, on an older
ratchet chain). Each line shows the message as the sending phone saw it, the bytes that cross
the network (all anyone in the middle — the relay included — gets), and what the receiving
phone decrypted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaysim.clients.session import Device, parse_ciphertext
from relaysim.sims.analysis.runfiles import read_run_text
from relaysim.sims.term import render as render_text
from relaysim.sims.term import table
from relaysim.sims.world.util import SimulationRandom

__all__ = ["DemoStep", "run_demo"]

SCRIPT: list[tuple[str, str]] = [
    ("alice", "Hi Bob, are you free tonight?"),
    ("alice", "(this one will arrive late)"),
    ("bob", "Hi Alice! Yes, after 8."),
    ("alice", "Great, the usual place?"),
    ("bob", "See you there."),
    ("bob", "Bring the book, please."),
    ("alice", "Will do."),
]
LATE_INDEX = 1  # delivered at the very end


@dataclass(frozen=True)
class DemoStep:
    sender: str
    receiver: str
    sent: str
    wire: bytes
    received: str
    prekey_message: bool
    late: bool


def _conversation(seed: int) -> Iterator[DemoStep]:
    r = SimulationRandom(seed)
    alice = Device("alice", 1, rng=r.randbytes, pq=True, deterministic=True)
    bob = Device("bob", 1, rng=r.randbytes, pq=True, deterministic=True)
    bob_bundle = bob.generate_prekeys(one_time=5, kem_one_time=5)
    alice.generate_prekeys(one_time=5, kem_one_time=5)
    alice.start_session(bob.address, bob_bundle)  # PQXDH: the bundle's signatures are checked here

    phones = {"alice": alice, "bob": bob}
    held: list[tuple[str, str, str, bytes]] = []
    for i, (who, text) in enumerate(SCRIPT):
        other = "bob" if who == "alice" else "alice"
        wire = phones[who].encrypt(phones[other].address, text.encode())
        if i == LATE_INDEX:
            held.append((who, other, text, wire))
            continue
        yield _deliver(phones, who, other, text, wire, late=False)
    for who, other, text, wire in held:
        yield _deliver(phones, who, other, text, wire, late=True)


def _deliver(
    phones: dict[str, Device], who: str, other: str, text: str, wire: bytes, *, late: bool
) -> DemoStep:
    got = phones[other].decrypt(phones[who].address, wire)
    initial, _ = parse_ciphertext(wire)
    return DemoStep(who, other, text, wire, got.decode(), initial is not None, late)


def run_demo(seed: int = 2015) -> list[DemoStep]:
    return list(_conversation(seed))


PREVIEW_BYTES = 24  # of each message's bytes shown, in groups of four


def _preview(data: bytes) -> str:
    """The first bytes in hex, four to a group (so a narrow column wraps between groups)."""
    head = data[:PREVIEW_BYTES].hex()
    groups = " ".join(head[i : i + 8] for i in range(0, len(head), 8))
    return groups + (" …" if len(data) > PREVIEW_BYTES else "")


def render(steps: list[DemoStep], width: int | None = None, color: bool = False) -> str:
    rows = []
    for s in steps:
        tag = "prekey msg" if s.prekey_message else "message"
        rows.append(
            (
                f"{s.sender}: {s.sent}",
                f"{tag}, {len(s.wire)} B: {_preview(s.wire[1:])}",
                f"{s.receiver}: {s.received}" + (" (arrived late)" if s.late else ""),
            )
        )
    return render_text(
        "relaysim demo — two phones, PQXDH (X25519 + ML-KEM-1024), then the Double Ratchet.",
        "Left: what the sending phone shows. Middle: the bytes on the network (all the relay ever gets). "
        "Right: what the receiving phone decrypted.",
        "",
        table(["sender sees", "on the wire", "receiver sees"], rows, ratios=(3, 4, 3)),
        "",
        "The first messages carry PQXDH's header (the ephemeral key and an ML-KEM-1024 ciphertext, hence "
        "their size) until Bob answers. The late message still opens: its key was kept as a skipped key. "
        "No plaintext appears in any of the bytes in the middle column.",
        width=width,
        color=color,
    )


# --- the demo's last word: what the metadata alone gives away -------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def inference_lines(run: Path, operator: str = "the operator") -> list[str]:
    """Two to four plain sentences, with the numbers: what ``sims.analysis`` infers from what the
    run's relay holds and from each disclosure, scored against what really happened
    (``sims.analysis_scoring``). The inferences the audience does not expect from a relay that never
    sees a word: the contact graph, well past the people any order named; one order's whole circle;
    senders under sealed sender, by address; message lengths, from envelope sizes."""
    from relaysim.sims.analysis.run import analyze_run
    from relaysim.sims.analysis_scoring import read_truth, score_analysis

    truth = read_truth(run / "transcript.jsonl")
    analyses = analyze_run(run)
    relay = analyses["relay"]
    sc = score_analysis(relay, truth)
    lines = []
    att = sc["attribution"]
    if att["sealed_records"]:
        lines.append(
            f"The relay never saw a sender's name, yet by matching network addresses an analyst attributed "
            f"{att['attributed']} of {att['sealed_records']} sealed envelopes to a sender, {att['correct']} "
            f"of them correctly (precision {_pct(att['precision'])}, recall {_pct(att['recall'])})."
        )
    g = sc["contact_graph"]
    targets = {a.target for name, a in analyses.items() if name != "relay" and a.target}
    unnamed = sorted(
        " and ".join(sorted(p)) for p in relay.graph.strong() & truth.pairs() if not p & targets and targets
    )
    if g["correct"]:
        lines.append(
            f"Without reading a single message, {operator}'s own records rebuild who talks to whom: "
            f"{g['correct']} of {g['true_pairs']} true pairs (precision {_pct(g['precision'])}, recall "
            f"{_pct(g['recall'])})"
            + (f", including {'; '.join(unnamed)}, whom no order named." if unnamed else ".")
        )
    else:
        lines.append(
            f"{operator}'s records rebuild none of the {g['true_pairs']} pairs who talked: it keeps too little."
        )
    seen = _as_seen_line(run, truth) if not att["sealed_records"] else None
    if seen:
        lines.append(seen)
    for name, a in analyses.items():
        if name == "relay" or not a.target:
            continue
        found = {x for pair in a.graph.strong() if a.target in pair for x in pair if x != a.target}
        true = truth.contacts(a.target)
        if found and true:
            lines.append(
                f"The order {name} alone gives {a.target}'s whole circle: {len(found & true)} of {len(true)} "
                f"contacts ({', '.join(sorted(found & true))})"
                + (f", and {len(found - true)} wrong" if found - true else "")
                + "."
            )
            break
    corr = sc["sizes"]["size_vs_plaintext_length_correlation"]
    if corr is not None and corr >= 0.9:
        lines.append(
            f"Unpadded, each envelope's size follows the length of the message inside (correlation "
            f"{corr:.2f} over {relay.sizes.to_json()['envelopes_with_size']} envelopes): the relay knows "
            "which message is the long one."
        )
    return lines[:4]


def _as_seen_line(run: Path, truth: Any) -> str | None:
    """For a relay that keeps no sealed sends (Signal's profile): what it saw of them while it ran
    (``relay-view.jsonl``), attributed by address as a provider that watches would."""
    from relaysim.sims.analysis.run import analyze, as_seen_view
    from relaysim.sims.analysis.view import RELAY_VIEW_FILE
    from relaysim.sims.analysis_scoring import score_analysis

    if not (run / RELAY_VIEW_FILE).exists():
        return None
    sc = score_analysis(analyze(as_seen_view(run)), truth)
    att, g = sc["attribution"], sc["contact_graph"]
    if not att["sealed_records"]:
        return None
    return (
        f"Its database keeps no sealed send, but its relay saw all {att['sealed_records']} while it ran: "
        f"an operator that watches instead of keeping attributes {att['correct']} of them to their true sender "
        f"by address (precision {_pct(att['precision'])}, recall {_pct(att['recall'])}) and rebuilds "
        f"{g['correct']} of {g['true_pairs']} pairs who talked (relaysim analyze DIR --as-seen)."
    )


def render_inference(run: Path, *, width: int | None = None, color: bool = False) -> str:
    """:func:`inference_lines` for the end of ``relaysim demo``, under a heading naming the relay."""
    import json

    from rich.table import Table

    from relaysim.relay.profiles import get_profile

    provider = json.loads(read_run_text(run / "provider.json"))
    title = get_profile(provider["profile"]).title
    g = Table.grid(padding=(0, 1, 0, 0))
    g.add_column(no_wrap=True)
    g.add_column(overflow="fold")
    for line in inference_lines(run, "the operator"):
        g.add_row("-", line)
    return render_text(
        "",
        f"WHAT THE METADATA ALONE GIVES AWAY: {title}, its records analysed (sims.analysis) and scored "
        "against what happened",
        g,
        width=width,
        color=color,
    )
