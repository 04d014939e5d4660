"""The ghost device under each profile's identity model (relay.profiles.Profile.identity_model).

- "account" (signal): linked devices share the account's identity key; the ghost's new key is
  "safety number changed" (IdentityChanged) at every contact that sends to the target;
- "signed-devices" (whatsapp): contacts refuse a companion the primary did not sign; with the
  compelled client change (the primary signs the ghost) they accept it;
- "per-device" (imessage): silent, unless Contact Key Verification is on;
- the ghost reads the sync copies of the target's own outgoing 1:1 messages.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from relaysim.clients import agent as A
from relaysim.clients.session import Device
from relaysim.relay.profiles import PROFILES
from relaysim.sims.scenario import ExceptionalAccess, ScenarioError, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation, SimulationResult
from tests.conftest import seeded_rng


def _ghost(
    profile: str, *, client_change: bool = False, ckv: str = "off"
) -> tuple[SimulationResult, dict[str, Any], list[dict[str, Any]]]:
    sc = resolve_scenario("ghost-device")
    events = tuple(
        replace(e, client_change=client_change) if isinstance(e, ExceptionalAccess) else e for e in sc.events
    )
    sc = replace(
        sc,
        relay=replace(sc.relay, profile=profile),
        events=events,
        defences=replace(sc.defences, key_verification=ckv),
    )
    transcript: list[dict[str, Any]] = []
    result = Simulation(sc, transcript=transcript.append).run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-device"]
    return result, report.data, transcript


def _after(
    result: SimulationResult, data: dict[str, Any], *, to: str | None = None, frm: str | None = None
) -> set[int]:
    return {
        m.planned.id
        for m in result.messages
        if m.accepted_at is not None
        and m.accepted_at > data["added_at"]
        and (to is None or m.planned.recipient == to)
        and (frm is None or m.planned.sender == frm)
    }


def test_profiles_name_their_identity_model_with_a_source() -> None:
    assert PROFILES["signal"].identity_model == "account"
    assert PROFILES["whatsapp"].identity_model == "signed-devices"
    assert PROFILES["imessage"].identity_model == "per-device"
    for name in ("signal", "whatsapp", "imessage"):
        assert PROFILES[name].identity_model_source


def test_under_signal_every_contact_sees_the_safety_number_change() -> None:
    result, data, transcript = _ghost("signal")
    assert data["identity_model"] == "account" and not data["ghost_has_account_key"]
    assert data["contacts_saw_identity_change"] == ["lena/1", "sam/1"]
    changed = [e for e in transcript if e["kind"] == "identity_changed"]
    assert {e["device"] for e in changed} == {"lena/1", "sam/1"}
    assert data["safety_number_check_catches_it"]
    # "warn" (Signal's default) accepts the new key: the ghost still reads what is sent afterwards
    assert set(data["read"]) == _after(result, data, to="omar") != set()


def test_under_signal_with_the_client_change_the_ghost_has_the_account_key_and_is_silent() -> None:
    _result, data, transcript = _ghost("signal", client_change=True)
    assert data["ghost_has_account_key"]
    assert data["contacts_saw_identity_change"] == []
    assert not [e for e in transcript if e["kind"] == "identity_changed"]
    assert not data["safety_number_check_catches_it"]


def test_under_signal_blocking_contacts_send_nothing_to_the_ghost() -> None:
    sc = resolve_scenario("ghost-device")
    sc = replace(sc, defences=replace(sc.defences, identity_changes="block"))
    result = Simulation(sc).run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-device"]
    assert report.data["read"] == [] and report.data["contacts_saw_identity_change"] == ["lena/1", "sam/1"]


def test_under_whatsapp_contacts_refuse_the_unsigned_ghost() -> None:
    result, data, transcript = _ghost("whatsapp")
    assert data["identity_model"] == "signed-devices" and not data["ghost_signed_by_primary"]
    assert data["contacts_refused_ghost"] == ["lena/1", "sam/1"]
    assert data["read"] == [] and data["sync_read"] == []
    failures = [e for e in transcript if e["kind"] == "failure" and e["code"] == "unsigned_device"]
    assert {e["device"] for e in failures} >= {"lena/1", "sam/1"}
    assert "needs a client change" in next(r for r in result.exceptional if r.name == "ghost-device").markdown


def test_under_whatsapp_the_client_change_makes_contacts_accept_the_ghost() -> None:
    result, data, _transcript = _ghost("whatsapp", client_change=True)
    assert data["ghost_signed_by_primary"] and data["contacts_refused_ghost"] == []
    assert set(data["read"]) == _after(result, data, to="omar") != set()
    assert not data["safety_number_check_catches_it"]


def test_under_imessage_the_ghost_is_silent() -> None:
    result, data, transcript = _ghost("imessage")
    assert data["contacts_saw_identity_change"] == [] and data["contacts_refused_ghost"] == []
    assert not [e for e in transcript if e["kind"] == "identity_changed"]
    assert set(data["read"]) == _after(result, data, to="omar") != set()
    assert not data["safety_number_check_catches_it"]


def test_under_imessage_contact_key_verification_sees_the_ghost() -> None:
    _result, data, transcript = _ghost("imessage", ckv="on")
    assert data["contacts_saw_identity_change"] == ["lena/1", "sam/1"]
    assert {e["device"] for e in transcript if e["kind"] == "identity_changed"} == {"lena/1", "sam/1"}
    assert data["safety_number_check_catches_it"]


@pytest.mark.parametrize(
    ("profile", "client_change"), [("imessage", False), ("whatsapp", True), ("signal", True)]
)
def test_the_ghost_reads_the_sync_copies_of_the_targets_outgoing_messages(
    profile: str, client_change: bool
) -> None:
    result, data, transcript = _ghost(profile, client_change=client_change)
    sent_by_omar = _after(result, data, frm="omar")
    assert sent_by_omar and set(data["sync_read"]) == sent_by_omar
    assert all(r["text_matches"] for r in data["sync_rows"] if r["read_by_ghost"])
    reads = {e["message"]: e["plaintext"] for e in transcript if e["kind"] == "ghost_read_sync_copy"}
    texts = {m.planned.id: m.planned.text for m in result.messages}
    assert reads == {mid: texts[mid] for mid in sent_by_omar}


def test_under_signal_the_targets_phone_sends_no_sync_copy_to_a_ghost_with_another_key() -> None:
    """Signal's clients trust only their own identity key for their own account's devices."""
    sc = resolve_scenario("ghost-device")
    # Omar sends without sealed sender, so the relay's needs_sync tells his phone of the ghost.
    sc = replace(sc, relay=replace(sc.relay, sealed_sender=False))
    _result, data, _transcript = _ghost_of(sc)
    assert data["sync_read"] == [] and data["target_refused_ghost"] == ["omar/1"]


def _ghost_of(sc: Any) -> tuple[SimulationResult, dict[str, Any], list[dict[str, Any]]]:
    transcript: list[dict[str, Any]] = []
    result = Simulation(sc, transcript=transcript.append).run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-device"]
    return result, report.data, transcript


def test_a_linked_device_gets_sync_copies_of_one_to_one_messages() -> None:
    text = """
[scenario]
name = "sync"
duration = "1h"
[relay]
profile = "imessage"
[[people]]
name = "ana"
devices = [{}, {}]
[[people]]
name = "ben"
[[conversations]]
between = ["ana", "ben"]
messages = [{ at = "20m", from = "ana", text = "hello from my phone" }]
[[events]]
at = "50m"
kind = "exceptional_access"
demand = "ghost_device"
target = "ben"
"""
    transcript: list[dict[str, Any]] = []
    Simulation(parse_scenario(text), transcript=transcript.append).run()
    syncs = [e for e in transcript if e["kind"] == "sync_copy_received"]
    assert [(e["device"], e["from"], e["to"]) for e in syncs] == [("ana/2", "ana/1", "ben")]


def test_account_model_check_reports_a_second_key_for_a_known_account() -> None:
    from relaysim.clients.identity import IdentityStore, PeerAddress

    store = IdentityStore()
    store.pin(PeerAddress("omar", 1), b"k" * 32)
    assert store.check_account(PeerAddress("omar", 2), b"k" * 32, "bundle") is None
    change = store.check_account(PeerAddress("omar", 2), b"g" * 32, "bundle")
    assert change is not None and change.accepted and change.previous == b"k" * 32


def test_sign_device_verifies_only_for_the_signed_key() -> None:
    from relaysim.clients import spec

    primary = Device("omar", 1, rng=seeded_rng("p"))
    companion = Device("omar", 2, rng=seeded_rng("c"))
    sig = A.sign_device(primary, companion.identity_key, seeded_rng("s"))
    assert spec.xeddsa_verify(primary.identity_key, A.DEVICE_LIST_PREFIX + companion.identity_key, sig)
    assert not spec.xeddsa_verify(primary.identity_key, A.DEVICE_LIST_PREFIX + primary.identity_key, sig)


def test_client_change_is_validated() -> None:
    base = """
[scenario]
name = "x"
duration = "1h"
[[people]]
name = "omar"
[[events]]
at = "10m"
kind = "exceptional_access"
"""
    with pytest.raises(ScenarioError, match="client_change"):
        parse_scenario(base + 'demand = "key_escrow"\nclient_change = true\n')
    with pytest.raises(ScenarioError, match="client_change"):
        parse_scenario(base + 'demand = "ghost_device"\ntarget = "omar"\nclient_change = "yes"\n')
    sc = parse_scenario(base + 'demand = "ghost_device"\ntarget = "omar"\nclient_change = true\n')
    (event,) = sc.events
    assert isinstance(event, ExceptionalAccess) and event.client_change


def test_the_comparison_scenario_runs_the_three_profiles() -> None:
    sc = resolve_scenario("ghost-identity-models")
    assert sc.compare_profiles == ("signal", "whatsapp", "imessage")
    seen = {}
    for profile in sc.compare_profiles:
        _result, data, _t = _ghost_of(replace(sc, relay=replace(sc.relay, profile=profile)))
        seen[profile] = (data["contacts_saw_identity_change"], data["contacts_refused_ghost"])
    assert seen == {
        "signal": (["lena/1", "sam/1"], []),
        "whatsapp": ([], ["lena/1", "sam/1"]),
        "imessage": ([], []),
    }


def test_whatsapp_before_multi_device_was_one_key_per_account_and_the_ghost_a_key_change() -> None:
    """Signed companion devices date from WhatsApp's multi-device beta (engineering.fb.com, 2021-07-14,
    HISTORY["whatsapp"]): a run set before it has no signed device list, so the ghost is not refused for
    want of the primary's signature; its new key is a key change at each contact, as under one key per
    account."""
    sc = resolve_scenario("ghost-device")
    before = replace(sc, relay=replace(sc.relay, profile="whatsapp"), start=date(2021, 7, 13))
    (report,) = [r for r in Simulation(before).run().exceptional if r.name == "ghost-device"]
    assert report.data["identity_model"] == "account"
    assert report.data["contacts_saw_identity_change"] == ["lena/1", "sam/1"]
    on_the_day = replace(before, start=date(2021, 7, 14))
    (report,) = [r for r in Simulation(on_the_day).run().exceptional if r.name == "ghost-device"]
    assert report.data["identity_model"] == "signed-devices"
    assert report.data["contacts_saw_identity_change"] == []
