"""``relaysim demo``: two phones, PQXDH, a short conversation, and what actually travels.

Alice and Bob publish prekey bundles; Alice fetches Bob's and runs PQXDH; they talk, with
replies, and one of Alice's messages arrives late (after Bob has already answered, on an older
ratchet chain). Each line shows the message as the sending phone saw it, the bytes that cross
the network (all anyone in the middle — the relay included — gets), and what the receiving
phone decrypted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from clients.session import Device, parse_ciphertext
from sims.term import render as render_text
from sims.term import table

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
    r = random.Random(seed)
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
