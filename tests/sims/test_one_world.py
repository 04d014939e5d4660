"""One world for both drivers: a scenario run simulated and run live (a real ``relaysim relay serve``
process, trio clients on loopback) records and discloses the same fields, apart from times and
addresses (sims.world.Timeline interprets the timeline, the profile, sealed sender and legal
process for both)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio  # type: ignore[import-untyped,unused-ignore]

from relaysim.relay.store import Store
from relaysim.sims.live import _run_live, live_refusal, simulated_only
from relaysim.sims.scenario import resolve_scenario
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
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VARIES}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _records(db: Path, until: float) -> list[tuple[Any, ...]]:
    with Store(db) as store:
        return sorted(
            (r.kind.value, r.account, r.device, r.recipient_account, r.recipient_device, r.size)
            for r in store.metadata()
            if r.time is None or r.time <= until
        )


@pytest.mark.parametrize(("name", "scale"), [("two-friends", 0.0005), ("signal-subpoena-2016", 0.0001)])
def test_live_and_simulated_runs_record_and_disclose_the_same_fields(
    tmp_path: Path, name: str, scale: float
) -> None:
    scenario = resolve_scenario(name)
    # Live phones send no receipts yet (sims.live.simulated_only says so on stderr): compare like with like.
    scenario = replace(scenario, defences=replace(scenario.defences, receipts="off"))
    assert simulated_only(scenario) == []
    simulated = Simulation(scenario, db_path=tmp_path / "sim.db").run()
    live = trio.run(_run_live, scenario, tmp_path, scale, None)
    assert live.relay_exit == 0
    assert _records(tmp_path / "relay.db", live.relay_end) == _records(tmp_path / "sim.db", float("inf"))
    assert [_strip(d.to_json()) for d in live.result.disclosures] == [
        _strip(d.to_json()) for d in simulated.disclosures
    ]
    assert simulated.disclosures  # both scenarios serve legal process


def test_a_live_run_refuses_exceptional_access_instead_of_ignoring_it() -> None:
    refusal = live_refusal(resolve_scenario("key-escrow"))
    assert refusal is not None and "exceptional_access" in refusal and "without --live" in refusal
    seized = live_refusal(resolve_scenario("device-seizure"))
    assert seized is not None and "seize_phone" in seized
    assert live_refusal(resolve_scenario("two-friends")) is None


def test_a_live_run_names_what_it_does_not_carry() -> None:
    """Receipts are on by default; live phones send none yet, and the run says so instead of
    quietly doing something else."""
    assert simulated_only(resolve_scenario("two-friends")) == [
        "receipts ([defences] receipts = 'on', read receipts False)"
    ]
