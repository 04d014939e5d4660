"""Exceptional access, end to end: each demand changes what the phones or the relay do, and each
result is checked against what the simulator knows to be true.

- Key escrow: the stolen escrow key opens exactly the messages sent after escrow began (and
  captured), word for word, and none from before.
- Ghost device: the ghost reads exactly the messages sent to the target after it was added, and
  every sender's phone saw the target's device list grow.
- Device seizure: the copied state opens exactly the messages the Double Ratchet says it must —
  none the phone had already decrypted, the ones in flight, and none after the next DH ratchet
  step of the phone.
- Global key: the compliance desk opens content from the switch on, and nothing before it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from relaysim.clients import escrow, spec
from relaysim.clients.errors import DecryptionError
from relaysim.clients.escrow import ESCROW_TAG, EscrowKeyPair, strip
from relaysim.clients.session import Device, PeerAddress
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import Scenario, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation, SimulationResult
from tests.conftest import seeded_rng


def _run(name_or_text: str) -> tuple[SimulationResult, list[dict[str, Any]]]:
    scenario = resolve_scenario(name_or_text) if "\n" not in name_or_text else parse_scenario(name_or_text)
    return _run_scenario(scenario)


def _run_scenario(scenario: Scenario) -> tuple[SimulationResult, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    result = Simulation(scenario, transcript=events.append).run()
    assert result.undecryptable == 0 and result.mismatched == 0
    return result, events


def _report(result: SimulationResult, name: str) -> dict[str, Any]:
    (report,) = [r for r in result.exceptional if r.name == name]
    return report.data


def _ids(result: SimulationResult, **where: Any) -> set[int]:
    return {
        m.planned.id
        for m in result.messages
        if m.accepted_at is not None and all(getattr(m.planned, k) == v for k, v in where.items())
    }


def _text(result: SimulationResult, mid: int) -> str:
    return next(m.planned.text for m in result.messages if m.planned.id == mid)


# --- the pieces -------------------------------------------------------------------------------------


def _pair(rng: Any) -> tuple[Device, Device]:
    alice, bob = Device("alice", rng=rng), Device("bob", rng=rng)
    alice.start_session(PeerAddress("bob", 1), bob.generate_prekeys(2, 2))
    return alice, bob


def test_an_escrowed_message_opens_with_the_escrow_key_and_the_recipient_strips_the_frame() -> None:
    rng = seeded_rng(1)
    alice, bob = _pair(rng)
    keys = EscrowKeyPair.generate(rng)
    plain = alice.encrypt(PeerAddress("bob", 1), b"before escrow")
    alice.escrow = keys.public_key
    escrowed = alice.encrypt(PeerAddress("bob", 1), b"under escrow")
    assert escrowed[0] == ESCROW_TAG and plain[0] != ESCROW_TAG
    assert len(escrowed) > len(plain)
    assert keys.read(escrowed) == b"under escrow"
    with pytest.raises(DecryptionError):
        keys.read(plain)  # no escrow record: nothing to open
    with pytest.raises(DecryptionError):
        EscrowKeyPair.generate(seeded_rng(2)).read(escrowed)  # another key opens nothing
    assert bob.decrypt(PeerAddress("alice", 1), plain) == b"before escrow"
    assert bob.decrypt(PeerAddress("alice", 1), escrowed) == b"under escrow"
    assert strip(plain) == plain


@pytest.mark.parametrize("version", [1, True], ids=["one", "msgpack-true"])
def test_an_escrow_record_opens_only_with_version_1_as_an_integer(version: int) -> None:
    """The record's first item is its version, 1. msgpack's true unpacks as a Python bool, an int
    equal to 1: a record whose version is true was opened as one of version 1."""
    rng = seeded_rng(5)
    keys = EscrowKeyPair.generate(rng)
    public = keys.public_key.public
    # the blob as EscrowPublicKey.wrap makes it (clients/escrow.py docstring), with the version given
    record = msgpack.packb([version, bytes(32), b"ad", b"header", b"info", None], use_bin_type=True)
    e = spec.generate_dh(rng)
    key = escrow._record_key(e.dh(public), e.public, public)
    blob = (
        bytes((escrow.VERSION,))
        + e.public
        + spec.encrypt(key, record, e.public + public, escrow._RECORD_INFO)
    )
    if type(version) is int:
        assert keys.open_record(blob).header == b"header"
    else:
        with pytest.raises(DecryptionError):
            keys.open_record(blob)


def test_a_device_state_copy_decrypts_what_the_device_would_and_is_independent_of_it() -> None:
    rng = seeded_rng(3)
    alice, bob = _pair(rng)
    first = alice.encrypt(PeerAddress("bob", 1), b"one")
    assert bob.decrypt(PeerAddress("alice", 1), first) == b"one"
    state = bob.to_dict()
    copy = Device.from_dict(state, rng=seeded_rng(4))
    assert copy.to_dict() == state
    second = alice.encrypt(PeerAddress("bob", 1), b"two")
    assert copy.decrypt(PeerAddress("alice", 1), second) == b"two"
    assert bob.decrypt(PeerAddress("alice", 1), second) == b"two"  # the copy took nothing from bob
    with pytest.raises(DecryptionError):
        copy.decrypt(PeerAddress("alice", 1), first)  # decrypted before the copy: its key is gone


# --- key escrow -----------------------------------------------------------------------------------


def test_the_stolen_escrow_key_opens_exactly_the_messages_sent_after_escrow_began(tmp_path: Path) -> None:
    result, summary = run_to_dir(resolve_scenario("key-escrow"), tmp_path)
    data = json.loads((tmp_path / "exceptional" / "key-escrow.json").read_text())
    assert (tmp_path / "exceptional" / "key-escrow.md").exists()
    assert summary["exceptional"] == [{"name": "key-escrow", "json": "exceptional/key-escrow.json"}]
    began = data["escrow_began"]
    after = {m.planned.id for m in result.messages if m.accepted_at is not None and (m.sent_at or 0) >= began}
    before = _ids(result) - after
    assert after and before
    assert set(data["opened"]) == after
    assert all(
        r["captured"] for r in data["rows"]
    )  # the earlier ones were captured too: the key is what fails
    for r in data["rows"]:
        assert r["opened"] == (r["message"] in after)
        if r["opened"]:
            assert r["opened_text"] == _text(result, r["message"])
    assert data["matches_ground_truth"]
    # the theft also opens what was recorded hours before it, of every sender
    assert {r["from"] for r in data["rows"] if r["opened"]} == {"hina", "kamran", "zara"}
    assert set(data["opened_when_stolen"]) < set(data["opened"])


def test_without_escrow_the_stolen_key_opens_nothing() -> None:
    scenario = resolve_scenario("key-escrow")  # the same story, minus the mandate
    events = tuple(e for e in scenario.events if e.kind != "exceptional_access")
    result = Simulation(replace(scenario, events=events)).run()
    data = _report(result, "key-escrow")
    assert data["opened"] == [] and data["escrow_began"] is None
    assert all(r["captured"] for r in data["rows"])


# --- ghost device ---------------------------------------------------------------------------------


def test_the_ghost_reads_exactly_what_is_sent_to_the_target_after_it_was_added() -> None:
    result, events = _run("ghost-device")
    data = _report(result, "ghost-device")
    added = data["added_at"]
    to_omar = [m for m in result.messages if m.planned.recipient == "omar" and m.accepted_at is not None]
    expected = {m.planned.id for m in to_omar if (m.accepted_at or 0) > added}
    assert expected and len(expected) < len(to_omar)
    assert set(data["read"]) == expected
    assert all(r["text_matches"] for r in data["rows"] if r["read_by_ghost"])
    reads = {e["message"]: e["plaintext"] for e in events if e["kind"] == "ghost_read"}
    assert reads == {mid: _text(result, mid) for mid in expected}
    # the target still gets everything; the ghost's copies are not counted as his deliveries
    assert all(set(m.delivered) == {"omar/1"} for m in to_omar)
    # every contact who sent to omar afterwards saw his device list grow, in the transcript too
    changed = [e for e in events if e["kind"] == "device_list_changed"]
    assert {e["device"] for e in changed} == {"lena/1", "sam/1"}
    assert all(e["account"] == "omar" and e["added"] == [2] for e in changed)
    assert all(e["t"] > added for e in changed)


def test_a_relay_that_asks_new_accounts_for_a_proof_does_not_stop_the_provider_adding_the_ghost() -> None:
    """The ghost device is no registration: the provider writes it into its store
    (relay.core.RelayCore.provision_device), past the relay's registration proof and its limit on new
    accounts per address, which the agency's phone of a ghost participant meets (tests/sims/
    test_ghost_participant.py). From 01:59 this relay asks every new account for a proof of 8 bits,
    which no phone here makes: the ghost is still added at 02:00 and reads what it read before. (A
    guard: nothing was changed for it; the ghost report's claims stay true.)"""
    sim = Simulation(resolve_scenario("ghost-device"))
    sim.sched.at(7140.0, lambda: setattr(sim.relay, "registration_pow", 8))
    result = sim.run()
    data = _report(result, "ghost-device")
    assert data["added_at"] == 7200.0 and data["read"] and data["matches_ground_truth"], data


# --- device seizure -------------------------------------------------------------------------------


def test_with_delivery_receipts_the_first_receipt_after_the_seizure_heals_the_session() -> None:
    """Receipts are on by default, and a receipt is a Double Ratchet message like any other: Bruno's
    receipt for the message that waited through the seizure answers Aiko's newest ratchet key with
    a fresh one of his, so her next message is already beyond what the copy opens."""
    result, _events = _run("device-seizure")
    assert result.scenario.defences.receipts == "on" and result.control["receipts_sent"] > 0
    data = _report(result, "device-seizure")
    rows = {r["message"]: r for r in data["rows"]}
    by_text = {_text(result, mid): mid for mid in rows}
    opened = {mid for mid, r in rows.items() if r["opened"]}
    assert opened == {by_text["Call me when you land. Use the other number."]}
    assert "after the next DH ratchet step" in rows[by_text["Did they take your phone?"]]["why"]


def test_a_seized_state_opens_exactly_what_the_double_ratchet_predicts() -> None:
    """Without receipts, only the written turns move the ratchet: the chains the copy holds carry on."""
    sc = resolve_scenario("device-seizure")
    result, events = _run_scenario(replace(sc, defences=replace(sc.defences, receipts="off")))
    data = _report(result, "device-seizure")
    rows = {r["message"]: r for r in data["rows"]}
    by_text = {_text(result, mid): mid for mid in rows}
    opened = {mid for mid, r in rows.items() if r["opened"]}
    # In flight at the seizure (Bruno's phone was off): same receiving chain as seized.
    in_flight = by_text["Call me when you land. Use the other number."]
    # After it: Aiko's next message on the same chain; Bruno's reply on the sending chain the copy
    # holds; Aiko's answer to it, whose new chain answers the ratchet key that was seized.
    after_same_chains = {
        by_text["Did they take your phone?"],
        by_text["They took it for twenty minutes. I have it back."],
        by_text["Assume they copied everything on it."],
    }
    assert opened == {in_flight, *after_same_chains}
    assert data["in_flight_at_seizure"] == [in_flight]
    # Forward secrecy: what the phone had decrypted before the seizure stays closed.
    assert data["decrypted_before_seizure"] and data["opened_of_decrypted_before_seizure"] == []
    # Post-compromise security: from Bruno's next DH ratchet step on, nothing opens.
    healed = {
        by_text["Then let us keep talking; the keys move on."],
        by_text["Meeting moved to Thursday, same place."],
        by_text["Thursday. I will bring the originals."],
    }
    assert healed.isdisjoint(opened)
    assert all("after the next DH ratchet step" in rows[m]["why"] for m in healed)
    assert all(rows[m]["text_matches"] for m in opened)
    assert any(e["kind"] == "phone_seized" and e["device"] == "bruno/1" for e in events)


# --- global key -----------------------------------------------------------------------------------

GLOBAL_KEY = """
[scenario]
name = "global-key"
duration = "2h"
seed = 2010

[relay]
profile = "keep-everything"

[[people]]
name = "alice"

[[people]]
name = "bob"

[[conversations]]
between = ["alice", "bob"]
messages = [
  { at = "10m", from = "alice", text = "Before the switch, one." },
  { at = "20m", from = "bob", text = "Before the switch, two." },
  { at = "1h10m", from = "alice", text = "After the switch, three." },
  { at = "1h20m", from = "bob", text = "After the switch, four." },
]

[[events]]
at = "1m"
kind = "legal_process"
process = "wiretap"
target = "bob"
to = "50m"
name = "wiretap-before"

[[events]]
at = "2m"
kind = "legal_process"
process = "wiretap"
target = "bob"
name = "wiretap-across"

[[events]]
at = "1h"
kind = "exceptional_access"
demand = "global_key"
"""


def test_a_global_key_lets_the_desk_open_content_from_the_switch_on_and_not_before() -> None:
    result, events = _run(GLOBAL_KEY)
    orders = {d.process.name: d for d in result.disclosures}
    before, across = orders["wiretap-before"], orders["wiretap-across"]
    # Answered before the switch: ciphertext, and no key to open it with.
    assert before.provided["ciphertext"] and "content" not in before.provided
    assert not any(x["opened"] for x in before.decryption)
    # Collected across the switch: only what was sent after it opens.
    texts = sorted(row["text"] for row in across.provided["content"] if row["kind"] == "message")
    assert texts == ["After the switch, four.", "After the switch, three."]
    # and the phones' delivery receipts for them, sealed under the same key (relay.content)
    receipts = [r for r in across.provided["content"] if r["kind"] == "delivery receipt" and "text" not in r]
    assert len(receipts) == 2 and len(across.provided["content"]) == 4
    assert sum(1 for x in across.decryption if not x["opened"]) >= 2  # the ratchet's ciphertexts
    assert any(e["kind"] == "exceptional_access" and e["demand"] == "global_key" for e in events)
    assert _report(result, "global-key")["messages_under_global_key"] == [3, 4]


def test_the_ghost_takes_a_free_device_id_when_the_account_already_has_device_127() -> None:
    """The relay registers device ids 1 to 127 only (relay.wire.MAX_DEVICE_ID): with a device 127 in
    Omar's account, the id after the highest (128) would be refused, so the ghost takes the lowest
    free one; with every id taken the provider is refused, saying so."""
    from relaysim.clients.agent import DeviceAgent
    from relaysim.relay import wire

    events: list[dict[str, Any]] = []
    sim = Simulation(resolve_scenario("ghost-device"), transcript=events.append)

    def provision_127() -> None:  # another device of Omar's, written into the store before 02:00
        agent = DeviceAgent(
            Device("omar", 127, rng=seeded_rng(127), pq=True),
            registration_id=127,
            delivery_token=bytes(32),
            clock=sim.relay.clock,
        )
        agent.register()
        (frame,) = agent.take_outbox()
        assert isinstance(frame, wire.Register)
        sim.relay.provision_device(frame)

    sim.sched.at(3600.0, provision_127)
    result = sim.run()
    (added,) = [e for e in events if e["kind"] == "exceptional_access"]
    assert added["ghost"] == "omar/2"
    assert _report(result, "ghost-device")["read"]  # and it reads, as before
    from relaysim.sims.access.ghost import ghost_device_id

    assert ghost_device_id("omar", [1, 2]) == 3
    with pytest.raises(ValueError, match=r"no device id is free in 'omar'.s account \(ids 1 to 127"):
        ghost_device_id("omar", list(range(1, 128)))
