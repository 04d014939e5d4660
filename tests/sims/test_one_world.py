"""One world for both drivers: a scenario run simulated and run live (a real ``relaysim relay serve``
process, trio clients on loopback) records and discloses the same fields, apart from times and
addresses, and its phones read the same messages (sims.world.Timeline interprets the timeline, the
profile, sealed sender and legal process for both; receipts and [[groups]] are carried by both)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio  # type: ignore[import-untyped,unused-ignore]

from relaysim.clients.agent import PREKEY_BATCH
from relaysim.relay.store import Store
from relaysim.sims.live import _run_live, live_refusal, simulated_only
from relaysim.sims.scenario import Scenario, parse_scenario, resolve_scenario
from relaysim.sims.world import simulation
from relaysim.sims.world.simulation import Simulation

# Times and addresses differ by design (the relay's real clock, loopback); envelope ids are the
# relay's random draws.
_VARIES = {
    "registered",
    "region",
    "regions",
    "created",
    "last_connected",
    "last_connection",
    "day",
    "time",
    "served",
    "window",
    "at",
    "first_seen",
    "last_seen",
    "ip",
    "host",
    "port",
    "envelope_id",
}


def _strip(value: Any) -> Any:
    """``value`` without what varies; lists as multisets: records the relay made at nearly the same
    moment (a group message's parts, the members' receipts) come in the order the drivers ran them."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VARIES}
    if isinstance(value, list):
        return sorted((_strip(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _records(db: Path, until: float) -> list[tuple[Any, ...]]:
    with Store(db) as store:
        return sorted(
            (r.kind.value, r.account, r.device, r.recipient_account, r.recipient_device, r.size)
            for r in store.metadata()
            if r.time is None or r.time <= until
        )


# A group chat (sender keys, client-side fan-out) with a linked device (sync copies of group messages),
# a join, a leave, a member offline while the group writes, delivery receipts (on by default) and a
# pen register on the group's admin. Every phone gets at most four new sessions, so none runs low on
# one-time prekeys in either driver (see _like_live_phones).
BOOK_CLUB = """
[scenario]
name = "book-club"
duration = "30m"
seed = 7

[[people]]
name = "ana"
devices = [{ region = "us", address = "192.0.2.1" }, { region = "us", address = "192.0.2.2" }]

[[people]]
name = "bo"
devices = [{ region = "us", address = "192.0.2.5", offline = [["10m", "14m"]] }]

[[people]]
name = "cy"
devices = [{ region = "eu", address = "198.51.100.9" }]

[[people]]
name = "dan"
devices = [{ region = "us", address = "192.0.2.13" }]

[[conversations]]
between = ["ana", "bo"]
messages = [{ at = "1m", from = "bo", text = "see you at the club" }]

[[groups]]
name = "book-club"
members = ["ana", "bo", "cy"]
admins = ["ana"]
timeline = [
  { at = "2m", from = "ana", text = "chapter one tonight" },
  { at = "3m", from = "bo", text = "I have not started it" },
  { at = "5m", join = "dan", by = "ana" },
  { at = "6m", from = "ana", text = "welcome, dan" },
  { at = "11m", from = "dan", text = "bo is away" },
  { at = "16m", leave = "cy" },
  { at = "18m", from = "ana", text = "after cy left" },
]

[[events]]
at = "4m"
kind = "legal_process"
process = "pen_register"
target = "ana"
to = "25m"
name = "pen-register-ana"
"""


def _scenario(name: str) -> Scenario:
    return (
        parse_scenario(BOOK_CLUB, source="book-club.toml") if name == "book-club" else resolve_scenario(name)
    )


def _like_live_phones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated phones publish fewer one-time prekeys than live ones (simulation.SIM_PREKEY_BATCH, to
    save set-up time), so a phone that many people start sessions with uploads more in the simulator:
    give them the live phones' batch, so both drivers run the same phones."""
    monkeypatch.setattr(simulation, "SIM_PREKEY_BATCH", PREKEY_BATCH)
    monkeypatch.setattr(simulation, "SIM_KEM_PREKEY_BATCH", PREKEY_BATCH)


@pytest.mark.parametrize(
    ("name", "scale"), [("two-friends", 0.0005), ("signal-subpoena-2016", 0.0001), ("book-club", 0.002)]
)
def test_live_and_simulated_runs_record_and_disclose_the_same_fields(
    tmp_path: Path, name: str, scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = _scenario(name)
    assert scenario.defences.receipts == "on"  # the default: live phones send them too
    assert simulated_only(scenario) == []
    _like_live_phones(monkeypatch)
    simulated = Simulation(scenario, db_path=tmp_path / "sim.db").run()
    live = trio.run(_run_live, scenario, tmp_path, scale, None)
    assert live.relay_exit == 0
    assert _records(tmp_path / "relay.db", live.relay_end) == _records(tmp_path / "sim.db", float("inf"))
    assert [_strip(d.to_json()) for d in live.result.disclosures] == [
        _strip(d.to_json()) for d in simulated.disclosures
    ]
    assert simulated.disclosures  # every scenario here serves legal process
    # What the phones read: the same messages on the same devices, unchanged, and the same receipts.
    assert _read(live.result.messages) == _read(simulated.messages)
    assert live.result.mismatched == simulated.mismatched == 0
    assert live.result.undecryptable == simulated.undecryptable == 0
    assert live.result.control == simulated.control
    assert simulated.control["receipts_received"] > 0


def _read(messages: list[simulation.MessageState]) -> list[tuple[int, str, str]]:
    return sorted((m.planned.id, m.planned.recipient, device) for m in messages for device in m.delivered)


def test_a_live_run_refuses_exceptional_access_instead_of_ignoring_it() -> None:
    refusal = live_refusal(resolve_scenario("key-escrow"))
    assert refusal is not None and "exceptional_access" in refusal and "without --live" in refusal
    seized = live_refusal(resolve_scenario("device-seizure"))
    assert seized is not None and "seize_phone" in seized
    assert live_refusal(resolve_scenario("two-friends")) is None


def test_a_live_run_names_what_it_does_not_carry() -> None:
    """What live phones do not do yet, the run says instead of quietly doing something else; what
    they do (receipts, cover traffic, moves, groups) it does not list."""
    two = resolve_scenario("two-friends")
    assert simulated_only(two) == []
    carried = replace(
        two,
        defences=replace(two.defences, receipts="batched", cover_per_hour=2.0),
        traffic=replace(two.traffic, read_receipts=True, moves_per_day=4.0, mobile=0.5),
    )
    assert simulated_only(carried) == []
    assert simulated_only(_scenario("book-club")) == []  # [[groups]]
    fresh = replace(two, defences=replace(two.defences, sealed_connection="fresh"))
    assert simulated_only(fresh) == ["a fresh connection per sealed send ([defences] sealed_connection)"]
