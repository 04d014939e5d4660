"""The relay_swaps_identity scenario: the swap is noticed at its first message, never silent."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import ScenarioError, VerifySafetyNumber, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation

SWAP_AT = 3600.0


def _run(policy: str, *, verify: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    sc = resolve_scenario("relay-swaps-identity")
    sc = replace(sc, defences=replace(sc.defences, identity_changes=policy))
    if verify:
        sc = replace(sc, events=(VerifySafetyNumber(at=1800.0, who="nadia", whom="ilya"), *sc.events))
    events: list[dict[str, Any]] = []
    result = Simulation(sc, transcript=events.append).run()
    (report,) = [r for r in result.exceptional if r.name == "relay-swaps-identity"]
    return report.data, events, result


def test_without_verification_the_contact_is_warned_at_the_swaps_first_message() -> None:
    data, events, _result = _run("warn")
    assert data["noticed_by"] == ["nadia/1"] and data["silently_accepted_by"] == []
    assert SWAP_AT <= data["first_notice_at"] < SWAP_AT + 1
    (notice,) = data["notices"]
    assert notice["accepted"] and notice["via"] == "message"
    assert data["outcomes"]["nadia/1"]["shown_to_user"]
    assert next(e["device"] for e in events if e["kind"] == "identity_changed") == "nadia/1"
    # the warning is all there is: the next message went to the attacker
    assert [r["text"] for r in data["read_by_attacker"]] == ["Which documents? The ones from March?"]


@pytest.mark.parametrize("verify", [False, True])
def test_blocking_or_a_verified_peer_refuses_the_swap(verify: bool) -> None:
    data, events, result = _run("warn" if verify else "block", verify=verify)
    (notice,) = data["notices"]
    assert not notice["accepted"] and notice["was_verified"] == verify
    assert data["outcomes"]["nadia/1"]["shown_to_user"] is False
    assert data["outcomes"]["nadia/1"]["reason"] == "untrusted_identity"
    assert data["read_by_attacker"] == []
    # the phone refused an envelope: the run's counts and transcript have it, as the report does
    assert result.refused == {"untrusted_identity": 1, "sealed_sender_self_send": 0}
    assert result.undecryptable == 0
    (refused,) = [e for e in events if e["kind"] == "undecryptable"]
    assert (refused["device"], refused["message"], refused["reason"]) == (
        "nadia/1",
        None,
        "untrusted_identity",
    )
    assert all(m.delivered for m in result.messages)  # the real conversation goes on
    if verify:
        (compared,) = [e for e in events if e["kind"] == "safety_number_compared"]
        assert compared["match"] and len(compared["safety_number"].replace(" ", "")) == 60


def test_the_report_is_written_as_json_and_markdown() -> None:
    _data, _events, result = _run("warn")
    (report,) = [r for r in result.exceptional if r.name == "relay-swaps-identity"]
    assert "nadia/1" in report.markdown and "01:00:00" in report.markdown


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ('kind = "relay_swaps_identity"\nvictim = "ilya"', "events[0].contact"),
        ('kind = "relay_swaps_identity"\nvictim = "ilya"\ncontact = "ilya"', "someone other than victim"),
        ('kind = "verify_safety_number"\nwho = "nadia"\nwhom = "zed"', "events[0].whom"),
        ('kind = "verify_safety_number"\nwho = "nadia"\nwhom = "ilya"\nhow = "qr"', "how"),
    ],
)
def test_identity_events_are_validated(event: str, message: str) -> None:
    text = f"""
[scenario]
name = "x"
duration = "1h"
[[people]]
name = "ilya"
[[people]]
name = "nadia"
[[events]]
at = "10m"
{event}
"""
    with pytest.raises(ScenarioError, match=re.escape(message)):
        parse_scenario(text)


def test_a_safety_number_check_after_a_ghost_was_added_matches_nothing_for_the_ghost() -> None:
    sc = resolve_scenario("ghost-device")
    check = VerifySafetyNumber(at=3 * 3600.0, who="lena", whom="omar")
    events: list[dict[str, Any]] = []
    Simulation(replace(sc, events=(*sc.events, check)), transcript=events.append).run()
    compared = {e["peer"]: e for e in events if e["kind"] == "safety_number_compared"}
    assert compared["omar/1"]["match"] and compared["omar/1"]["in_hand"]
    assert not compared["omar/2"]["match"] and not compared["omar/2"]["in_hand"]
    # signal's identity model is "account" (linked devices share the account key): the ghost's
    # new key is "safety number changed" for omar at lena's phone (tests/sims/test_ghost_identity_models.py)
    changed = [e for e in events if e["kind"] == "identity_changed"]
    assert changed and {e["device"] for e in changed} <= {"lena/1", "sam/1"}


def test_under_a_per_device_identity_model_the_ghost_changes_no_pinned_key() -> None:
    sc = resolve_scenario("ghost-device")
    check = VerifySafetyNumber(at=3 * 3600.0, who="lena", whom="omar")
    sc = replace(sc, relay=replace(sc.relay, profile="imessage"), events=(*sc.events, check))
    events: list[dict[str, Any]] = []
    Simulation(sc, transcript=events.append).run()
    compared = {e["peer"]: e for e in events if e["kind"] == "safety_number_compared"}
    assert not compared["omar/2"]["match"] and not compared["omar/2"]["in_hand"]
    # the ghost came at a new address with its own key: no pinned key changed, so no IdentityChanged
    assert not [e for e in events if e["kind"] == "identity_changed"]


def test_the_summary_counts_the_refused_forgery_the_report_names(tmp_path: Path) -> None:
    """Under ``block`` the built-in scenario's forgery is refused (untrusted_identity): summary.json's
    ``messages.refused`` counts it, and the report says why it was not shown; under ``warn`` it is shown,
    and not counted as refused."""
    for policy, refused in (("block", 1), ("warn", 0)):
        sc = resolve_scenario("relay-swaps-identity")
        sc = replace(sc, defences=replace(sc.defences, identity_changes=policy))
        out = tmp_path / policy
        run_to_dir(sc, out)
        messages = json.loads((out / "summary.json").read_text(encoding="utf-8"))["messages"]
        assert messages["refused"]["untrusted_identity"] == refused
        report = (out / "exceptional" / "relay-swaps-identity.md").read_text(encoding="utf-8")
        not_shown = "nadia/1: not shown (refused: it decrypted, from a changed identity key" in report
        assert not_shown == bool(refused)
