"""Key transparency against a ghost device: per setting, whether and when the interception is found.

The ghost-device scenario adds a ghost to omar's account at 02:00; lena's and sam's phones fetch
its keys at their next message to him (02:20, 02:45). With ``[defences] key_transparency``, omar's
phone audits its account at the next hour (03:00).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from relaysim.sims.access.key_transparency import AUDIT_INTERVAL
from relaysim.sims.scenario import (
    ExceptionalAccess,
    Scenario,
    ScenarioError,
    parse_scenario,
    resolve_scenario,
)
from relaysim.sims.world.simulation import Simulation


def _ghost(scenario: Scenario) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    result = Simulation(scenario, transcript=events.append).run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-device"]
    return report.data, events


def _scenario(*, kt: bool, fork: bool = False) -> Scenario:
    base = resolve_scenario("ghost-device")
    events = tuple(replace(e, fork=fork) if isinstance(e, ExceptionalAccess) else e for e in base.events)
    return replace(base, defences=replace(base.defences, key_transparency=kt), events=events)


def test_without_key_transparency_nothing_checks_the_log() -> None:
    data, events = _ghost(_scenario(kt=False))
    d = data["detection"]
    assert d["no_check"]["detected"] is False
    assert d["safety_numbers"]["detected"] is False  # no one compares safety numbers in this scenario
    assert d["key_transparency"]["detected"] is None
    assert not [e for e in events if e["kind"] == "key_transparency_audit"]


def test_the_targets_own_audit_finds_the_ghost_in_the_log() -> None:
    data, events = _ghost(_scenario(kt=True))
    d = data["detection"]["key_transparency"]
    assert d["detected"] is True and d["detected_at"] == 2 * AUDIT_INTERVAL + AUDIT_INTERVAL  # 03:00
    assert "own audit found omar/2" in d["how"]
    # lena's and sam's phones were handed the ghost's key, each with a proof that verifies.
    assert [(c["device"], c["included"]) for c in d["inclusion_checks"]] == [
        ("lena/1", True),
        ("sam/1", True),
    ]
    (audit,) = [e for e in events if e["kind"] == "key_transparency_audit"]
    assert audit["device"] == "omar/1" and audit["unexpected"] == ["omar/2"]
    assert d["forks"] == []
    assert data["read"] == data["expected_after_added"]  # detection does not stop the interception


def test_a_provider_that_hides_the_ghost_from_the_target_is_caught_by_the_gossiped_heads() -> None:
    data, _ = _ghost(_scenario(kt=True, fork=True))
    d = data["detection"]["key_transparency"]
    (audit,) = d["audits"]
    assert audit["ghost_in_own_log"] is False  # the log omar is shown has no ghost ...
    assert audit["matches_gossiped_head"] is False  # ... and cannot match the head lena and sam hold
    assert d["detected"] is True and d["detected_at"] == 3 * AUDIT_INTERVAL
    assert "could not be shown a log matching" in d["how"]


def test_key_transparency_runs_are_deterministic() -> None:
    assert _ghost(_scenario(kt=True, fork=True))[0] == _ghost(_scenario(kt=True, fork=True))[0]


def test_fork_is_only_for_a_ghost_device() -> None:
    text = """
[scenario]
name = "x"
duration = "1h"
[[people]]
name = "a"
devices = [{ region = "us", address = "198.51.100.1" }]
[[events]]
at = "10m"
kind = "exceptional_access"
demand = "key_escrow"
fork = true
"""
    with pytest.raises(ScenarioError, match=r"fork.*only a ghost_device"):
        parse_scenario(text)
    with pytest.raises(ScenarioError, match="key_transparency"):
        parse_scenario(
            text.replace("fork = true\n", "").replace(
                "[[events]]", '[defences]\nkey_transparency = "yes"\n[[events]]'
            )
        )


def test_the_ghost_report_says_per_setting_whether_and_when() -> None:
    events: list[dict[str, Any]] = []
    result = Simulation(_scenario(kt=True), transcript=events.append).run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-device"]
    md = report.markdown
    assert "## Detected? Per setting of the phones' checks" in md
    assert "| no check | no | — |" in md
    assert "| key transparency | **yes** | 03:00" in md
    assert "**omar/1** audited its account in a log of 4 keys: omar/2" in md


def _swap(kt: bool) -> dict[str, Any]:
    base = resolve_scenario("relay-swaps-identity")
    scenario = replace(base, defences=replace(base.defences, key_transparency=kt))
    result = Simulation(scenario).run()
    (report,) = [r for r in result.exceptional if r.name == "relay-swaps-identity"]
    assert "## Detected? Per setting of the phones' checks" in report.markdown
    return report.data


def test_a_swapped_identity_key_is_not_in_the_log() -> None:
    off = _swap(False)["detection"]
    assert off["no_check"]["detected"] is False and off["key_transparency"]["detected"] is None
    data = _swap(True)
    d = data["detection"]["key_transparency"]
    assert d["detected"] is True and d["detected_at"] == data["first_notice_at"]
    assert d["checks"] and not any(c["included"] for c in d["checks"])
