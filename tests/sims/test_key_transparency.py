"""Key transparency against a ghost device: per setting, whether and when the interception is found.

The ghost-device scenario adds a ghost to omar's account at 02:00; lena's and sam's phones fetch
its keys at their next message to him (02:20, 02:45). With ``[defences] key_transparency``, omar's
phone audits its account at the next hour (03:00).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay import wire
from relaysim.relay.metadata import MetadataRecord
from relaysim.sims.access.key_transparency import AUDIT_INTERVAL
from relaysim.sims.report import run_comparison_to_dir
from relaysim.sims.scenario import (
    DeviceOffline,
    DeviceOnline,
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
    # 03:00, and the few round trips to the relay the audit takes over the wire
    assert d["detected"] is True and 3 * AUDIT_INTERVAL < d["detected_at"] < 3 * AUDIT_INTERVAL + 5
    assert "own audit found omar/2" in d["how"]
    # lena's and sam's phones were handed the ghost's key, each with a proof that verifies.
    assert [(c["device"], c["included"]) for c in d["inclusion_checks"]] == [
        ("lena/1", True),
        ("sam/1", True),
    ]
    (audit,) = [e for e in events if e["kind"] == "key_transparency_audit"]
    assert audit["device"] == "omar/1" and audit["unexpected"] == ["omar/2"]
    assert audit["matches_gossiped_head"] is True and audit["own_log_matches_its_head"] is True
    # the audit went over the wire: omar's phone asked for the head and the entries
    requests = [e for e in events if e["kind"] == "key_log_request"]
    assert {r["request"] for r in requests if r["device"] == "omar/1"} >= {
        "get_key_log_head",
        "get_key_log_entries",
    }
    assert d["forks"] == []
    assert data["read"] == data["expected_after_added"]  # detection does not stop the interception


def test_a_provider_that_hides_the_ghost_from_the_target_is_caught_by_the_gossiped_heads() -> None:
    """The relay answers omar's account from a log without the ghost (a split view). What omar's phone
    fetches over the wire has no ghost, but given the head the witness holds (the one lena's and sam's
    phones were shown), his relay can neither prove it extends his nor serve the entries up to it."""
    data, _ = _ghost(_scenario(kt=True, fork=True))
    d = data["detection"]["key_transparency"]
    (audit,) = d["audits"]
    assert audit["ghost_in_own_log"] is False  # the log omar is shown has no ghost ...
    assert audit["own_log_matches_its_head"] is True  # ... and is a good log, for its own head ...
    assert audit["matches_gossiped_head"] is False  # ... but cannot match the head lena and sam hold
    assert audit["tree_size"] == audit["gossiped_head_size"] - 1
    assert "beyond the key log's" in audit["against_gossiped_head"]
    assert audit["consistent_with_gossiped_head"] is False
    assert d["detected"] is True and 3 * AUDIT_INTERVAL < d["detected_at"] < 3 * AUDIT_INTERVAL + 5
    assert "could not be shown a log matching" in d["how"]


def test_a_head_signed_again_is_the_same_tree_not_a_fork_nor_a_head_to_compare_with() -> None:
    """omar's phone is offline from 02:55 to 04:30: its audit, due at 03:00, runs at 04:30, when the
    head lena's and sam's phones were given at 02:20 is more than an hour old, and the relay signs the
    same root again with the time then (RFC 6962 §3.5). The witness then holds two heads of one tree
    that differ only in their timestamps: no fork, and nothing for omar's phone to prove against."""
    base = _scenario(kt=True)
    scenario = replace(
        base,
        duration=6 * AUDIT_INTERVAL,
        events=(
            *base.events,
            DeviceOffline(at=2 * AUDIT_INTERVAL + 55 * 60, device="omar/1"),
            DeviceOnline(at=4.5 * AUDIT_INTERVAL, device="omar/1"),
        ),
    )
    sim = Simulation(scenario)
    (report,) = [r for r in sim.run().exceptional if r.name == "ghost-device"]
    d = report.data["detection"]["key_transparency"]
    (audit,) = d["audits"]
    assert audit["checked_at"] > 4.5 * AUDIT_INTERVAL
    given, own = (sim.devices[name].agent.key_log_heads[-1] for name in ("lena/1", "omar/1"))
    assert (given.tree_size, given.root_hash) == (own.tree_size, own.root_hash)  # one tree ...
    assert own.timestamp - given.timestamp > wire.KEY_LOG_HEAD_REFRESH  # ... signed twice
    assert d["forks"] == []
    assert audit["matches_gossiped_head"] is True and audit["ghost_in_own_log"] is True
    assert "consistent_with_gossiped_head" not in audit  # the same tree: no proof to ask for
    assert d["detected"] is True and "own audit found omar/2" in d["how"]


@pytest.mark.parametrize("fork", [False, True])
def test_the_witness_s_records_at_the_relay_are_counted_with_the_run_s(fork: bool, tmp_path: Path) -> None:
    """The witness connects to the relay on a connection of its own and asks it for consistency proofs;
    the relay's store kept its connection record, but the run threw the relay's outputs away: in no
    count of the run (summary.json's relay_records) nor its relay view (relay-view.jsonl). Now, under a
    profile that keeps every record, the run's counts are the store's, kind by kind."""
    scenario = _scenario(kt=True, fork=fork)
    scenario = replace(scenario, relay=replace(scenario.relay, profile="keep-everything"))
    records: list[MetadataRecord] = []
    db = tmp_path / "relay.db"
    result = Simulation(scenario, relay_view=records.append, db_path=db).run()
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT kind, count(*) FROM metadata GROUP BY kind").fetchall())
    assert result.relay_records == stored
    assert dict(Counter(r.kind.value for r in records)) == stored
    witness = [r for r in records if r.host == WITNESS_HOST]
    assert [r.kind.value for r in witness] == ["connection", "disconnect"]


WITNESS_HOST = "203.0.113.77"  # where the witness connects from (sims.access.key_transparency)


@pytest.mark.parametrize("fork", [False, True])
def test_the_witness_s_connection_is_closed_when_the_run_ends(fork: bool, tmp_path: Path) -> None:
    """The witness connected when the ghost was added and never disconnected: the relay's store held
    its connection open for ever. Now its connection is closed at the run's end, in the store as in
    the run's relay view."""
    scenario = _scenario(kt=True, fork=fork)
    scenario = replace(scenario, relay=replace(scenario.relay, profile="keep-everything"))
    db = tmp_path / "relay.db"
    Simulation(scenario, db_path=db).run()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT kind, connection, time FROM metadata WHERE host = ? ORDER BY time, kind", (WITNESS_HOST,)
        ).fetchall()
    assert [kind for kind, _, _ in rows] == ["connection", "disconnect"]
    (_, opened, at_open), (_, closed, at_close) = rows
    assert opened == closed  # one connection, opened, and closed ...
    assert at_open < at_close  # ... when the run ends


def test_two_watches_in_one_run_have_a_witness_connection_each(tmp_path: Path) -> None:
    """Two ghost_device demands under key transparency (one on omar, one on lena) make two watches;
    each witness connected with the one fixed id, so the relay's records mixed two connections into
    one. Now each has its own id (the run's, deterministic), opened and closed."""
    base = _scenario(kt=True)
    (ghost,) = [e for e in base.events if isinstance(e, ExceptionalAccess)]
    second = replace(ghost, at=ghost.at + 60, target="lena")
    scenario = replace(base, events=(*base.events, second))
    scenario = replace(scenario, relay=replace(scenario.relay, profile="keep-everything"))
    records: list[MetadataRecord] = []
    result = Simulation(scenario, relay_view=records.append, db_path=tmp_path / "relay.db").run()
    reports = [r for r in result.exceptional if r.name.startswith("ghost-device")]
    assert sorted(r.data["target"] for r in reports) == ["lena", "omar"]
    witness = [r for r in records if r.host == WITNESS_HOST]
    by_connection: dict[int | None, list[str]] = {}
    for r in witness:
        by_connection.setdefault(r.connection, []).append(r.kind.value)
    assert len(by_connection) == 2
    assert all(kinds == ["connection", "disconnect"] for kinds in by_connection.values())
    devices = {r.connection for r in records if r.host != WITNESS_HOST}
    assert not devices & set(by_connection)  # and none a phone's
    again: list[MetadataRecord] = []
    Simulation(scenario, relay_view=again.append, db_path=tmp_path / "again.db").run()
    assert sorted(by_connection) == sorted({r.connection for r in again if r.host == WITNESS_HOST})


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


def test_the_profile_comparison_tabulates_what_each_profiles_phones_detect(tmp_path: Path) -> None:
    """ghost-identity-models (key transparency on) under signal, whatsapp and imessage: comparison.md
    has one row per profile with what each setting of the phones' checks found, from each run."""
    run_comparison_to_dir(resolve_scenario("ghost-identity-models"), tmp_path)
    md = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "## Detected? The ghost device, per profile and per setting of the phones' checks" in md
    for profile, model in (("signal", "account"), ("whatsapp", "signed-devices"), ("imessage", "per-device")):
        assert f"| {profile} | {model} | no | no | **yes**, 03:00:" in md
        assert "omar/1's own audit found omar/2 |" in md
