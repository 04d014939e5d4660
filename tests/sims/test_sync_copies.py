"""Sync copies: wherever an account has linked devices, its phone sends each 1:1 message it writes to
them too (Signal's SyncMessage.Sent; WhatsApp's companion devices and iMessage's other devices get
the same), so every device shows the conversation. The ground truth tells these copies apart, as it
does receipts: a copy to one's own devices is neither a contact nor a message to anyone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.analysis.attribution import attribute_sealed
from relaysim.sims.analysis.run import analyze, run_views
from relaysim.sims.analysis.view import Obs, ProviderView, from_db
from relaysim.sims.analysis_scoring import read_truth, score_analysis
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import Scenario, parse_scenario
from relaysim.sims.scoring import score
from relaysim.sims.world.simulation import SIM_EPOCH, Simulation, SimulationResult

LAPTOP = '{ region = "us", address = "203.0.113.2" }'


def _scenario(*, profile: str = "keep-everything", sealed: bool = True, linked: bool = True) -> Scenario:
    """Ana (a phone, and a laptop linked to it) and Bo write to each other; a pen register on Ana."""
    laptop = f", {LAPTOP}" if linked else ""
    return parse_scenario(
        f"""
[scenario]
name = "sync-copies"
duration = "2h"
seed = 7

[relay]
region = "us"
profile = "{profile}"
sealed_sender = {"true" if sealed else "false"}

[[people]]
name = "ana"
devices = [{{ region = "us", address = "203.0.113.1" }}{laptop}]

[[people]]
name = "bo"
devices = [{{ region = "us", address = "198.51.100.3" }}]

[[people]]
name = "cy"
devices = [{{ region = "us", address = "198.51.100.4" }}]

[[conversations]]
between = ["ana", "bo"]
messages = [
  {{ at = "5m", from = "ana", text = "Lunch at noon?" }},
  {{ at = "6m", from = "bo", text = "Yes, the usual place." }},
  {{ at = "40m", from = "ana", text = "Running ten minutes late." }},
  {{ at = "1h10m", from = "ana", text = "Thanks for lunch." }},
]

[[conversations]]
between = ["ana", "cy"]
messages = [
  {{ at = "20m", from = "ana", text = "Did the parcel arrive?" }},
  {{ at = "25m", from = "cy", text = "It did, thank you." }},
]

[[events]]
at = "1m"
kind = "legal_process"
process = "pen_register"
target = "ana"
to = "1h50m"
name = "pen_register"
""",
        "sync-copies.toml",
    )


def _run(sc: Scenario) -> tuple[SimulationResult, list[dict[str, Any]]]:
    transcript: list[dict[str, Any]] = []
    return Simulation(sc, transcript=transcript.append).run(), transcript


@pytest.mark.parametrize(
    ("profile", "sealed"),
    [
        ("keep-everything", True),
        ("keep-everything", False),
        ("signal", True),
        ("whatsapp", True),
        ("imessage", False),
    ],
)
def test_a_linked_device_reads_every_message_its_primary_sends(profile: str, sealed: bool) -> None:
    result, transcript = _run(_scenario(profile=profile, sealed=sealed))
    assert result.mismatched == result.undecryptable == 0
    from_ana = [m for m in result.messages if m.planned.sender == "ana"]
    assert len(from_ana) == 4 and all(m.accepted_at is not None for m in from_ana)
    # what the laptop decrypted: each of the phone's messages, to whom, word for word
    read = {
        e["message"]: (e["to"], e["plaintext"])
        for e in transcript
        if e["kind"] == "sync_copy_received" and e["device"] == "ana/2"
    }
    assert read == {m.planned.id: (m.planned.recipient, m.planned.text) for m in from_ana}
    assert sorted(result.synced) == sorted(read) and all(set(v) == {"ana/2"} for v in result.synced.values())
    # Bo's and Cy's messages reach both of Ana's devices, as before; nobody else gets a sync copy
    for m in result.messages:
        if m.planned.recipient == "ana":
            assert set(m.delivered) == {"ana/1", "ana/2"}
    assert {e["device"] for e in transcript if e["kind"] == "sync_copy_received"} == {"ana/2"}
    # the ground truth: one sync copy per message Ana wrote, from Ana to Ana, apart from the messages
    syncs = [c for c in result.truth.control if c.kind == "sync copy"] if result.truth else []
    assert len(syncs) == 4 and all(c.sender == c.recipient == "ana" for c in syncs)
    assert result.truth is not None and all(m.sender != m.recipient for m in result.truth.messages)


def test_without_a_linked_device_there_are_no_sync_copies() -> None:
    result, transcript = _run(_scenario(linked=False))
    assert not result.synced and not any(e["kind"] == "sync_copy_received" for e in transcript)
    assert result.truth is not None and not any(c.kind == "sync copy" for c in result.truth.control)


@pytest.mark.parametrize("sealed", [True, False])
def test_a_sync_copy_is_not_a_contact_in_a_disclosures_score(sealed: bool) -> None:
    """The pen register on Ana logs her sync copies (an authenticated send from Ana to Ana, even under
    sealed sender); the score counts them apart, and her contacts and message times score as they do
    without the laptop."""
    scores = {}
    for linked in (True, False):
        result, _ = _run(_scenario(linked=linked, sealed=sealed))
        (d,) = [d for d in result.disclosures if d.process.name == "pen_register"]
        assert result.truth is not None
        scores[linked] = s = score(d.to_json(), result.truth)
        rows = d.to_json()["provided"]["realtime_routing"]
        selfs = [r for r in rows if r.get("account") == r.get("recipient_account") == "ana"]
        assert len(selfs) == (4 if linked else 0), "the provider's rows hold the sync copies, sender named"
        if linked:
            assert s["routing_rows"]["sync_copies"] == s["routing_rows"]["true_sync_copies"] == 4
        else:
            assert "sync_copies" not in s["routing_rows"] and "true_sync_copies" not in s["routing_rows"]
        assert s["routing_rows"]["unmatched"] == 0
    with_laptop, without = scores[True], scores[False]
    # under sealed sender the pen register names none of Ana's correspondents, with or without the laptop
    revealed = 0 if sealed else 2
    assert (
        with_laptop["contacts"]
        == without["contacts"]
        == {"true": 2, "revealed": revealed, "share": revealed / 2}
    )
    assert with_laptop["message_times"] == without["message_times"]
    # the messages logged are the same, and Bo's and Cy's to the laptop (one row per recipient device)
    assert with_laptop["routing_rows"]["messages"] == without["routing_rows"]["messages"] + 2


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    out = {}
    for linked in (True, False):
        out[linked] = tmp_path_factory.mktemp(f"linked-{linked}")
        run_to_dir(_scenario(linked=linked), out[linked])
    return out


def test_the_analysis_scoring_tells_sync_copies_apart(run_dirs: dict[bool, Path]) -> None:
    scores = {}
    for linked, out in run_dirs.items():
        truth = read_truth(out / "transcript.jsonl")
        syncs = {eid: c for eid, c in truth.control.items() if c.kind == "sync copy"}
        assert len(syncs) == (4 if linked else 0)
        assert all(truth.what_was(eid, None, None) == "sync copy" for eid in syncs)
        assert all(truth.sender_of(eid, None, None) == "ana" for eid in syncs)
        assert truth.pairs() == {frozenset(("ana", "bo")), frozenset(("ana", "cy"))}
        a = analyze(run_views(out)["relay"])
        scores[linked] = score_analysis(a, truth)
    # the contact graph the provider's records draw is scored the same with the laptop as without it
    for key in ("contact_graph", "contact_graph_with_lookups"):
        assert scores[True][key] == scores[False][key]
        assert scores[True][key]["precision"] == scores[True][key]["recall"] == 1.0
    # a sync copy to a device that never answers opens its session every time (a PQXDH message):
    # the size analysis flags them, and the truth counts them as session openings, not errors
    sizes = scores[True]["sizes"]
    assert sizes["flagged_correctly"] == sizes["flagged"]
    summary = {k: json.loads((out / "summary.json").read_text())["messages"] for k, out in run_dirs.items()}
    assert summary[True]["sync_copies_read"] == 4 and "sync_copies_read" not in summary[False]
    assert (
        "| sync copies read on the sender's own other devices | 4 |"
        in (run_dirs[True] / "summary.md").read_text()
    )
    page = json.loads((run_dirs[True] / "disclosures" / "pen_register.json").read_text())
    assert page["score"]["routing_rows"]["sync_copies"] == 4
    md = (run_dirs[True] / "disclosures" / "pen_register.md").read_text()
    assert "4 sync copies" in md and "addressed to its sender's own account" in md


def test_a_sync_copy_names_the_sender_of_the_sealed_send_before_it(tmp_path: Path) -> None:
    """Sealed sends through fresh exit addresses (``sealed_connection = "fresh"``) defeat attribution by
    address; Ana's sync copies, authenticated sends to herself a round trip after each of her sealed
    sends, name her anyway."""
    for linked in (True, False):
        sc = _scenario(linked=linked)
        sc = replace(sc, defences=replace(sc.defences, sealed_connection="fresh"))
        transcript: list[dict[str, Any]] = []
        db = tmp_path / f"relay-{linked}.db"
        result = Simulation(sc, db_path=db, transcript=transcript.append).run()
        atts = attribute_sealed(from_db(db))
        written = {  # the relay times of Ana's own messages (1:1, sealed)
            round(e["relay"][0]["time"], 6)
            for e in transcript
            if e["kind"] == "message_accepted" and result.messages[e["message"] - 1].planned.sender == "ana"
        }
        by_sync = [a for a in atts if a.evidence == "sync_copy"]
        if linked:
            assert len(written) == 4
            assert {round(a.time - SIM_EPOCH, 6) for a in by_sync if a.time is not None} == written
            assert {(a.sender, a.sender_device) for a in by_sync} == {("ana", 1)}
        else:
            assert not by_sync


def test_a_sync_copy_names_nobody_when_two_accounts_sent_themselves_one() -> None:
    def obs(kind: str, t: float, account: str | None, to: str, device: int | None = None) -> Obs:
        return Obs(kind, t, account=account, device=device, recipient_account=to)

    sealed = obs("sealed_send", 100.0, None, "bo")
    one = ProviderView(
        "test", (sealed, obs("send", 100.2, "ana", "ana", 1), obs("send", 103.0, "cy", "cy", 1))
    )
    two = ProviderView(
        "test", (sealed, obs("send", 100.2, "ana", "ana", 1), obs("send", 100.5, "cy", "cy", 1))
    )
    (a,) = attribute_sealed(one)
    assert (a.sender, a.sender_device, a.evidence) == ("ana", 1, "sync_copy")
    (b,) = attribute_sealed(two)
    assert (b.sender, b.evidence) == (None, "none")
    # a send to the recipient itself is not its sender's copy
    (c,) = attribute_sealed(ProviderView("test", (sealed, obs("send", 100.2, "bo", "bo", 1))))
    assert c.evidence == "none"
