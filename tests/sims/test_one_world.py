"""One world for both drivers: a scenario run simulated and run live (a real ``relaysim relay serve``
process, trio clients on loopback) records and discloses the same fields, apart from times and
addresses, and its phones read the same messages (sims.world.Timeline interprets the timeline, the
profile, sealed sender and legal process for both; receipts and [[groups]] are carried by both)."""

from __future__ import annotations

import json
from collections import Counter
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
from tests.helpers import BOOK_CLUB, BUSY_BOOK_CLUB, MAILBOXES, fresh_connections

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


def _strip(value: Any, varies: set[str] = _VARIES) -> Any:
    """``value`` without what varies; lists as multisets: records the relay made at nearly the same
    moment (a group message's parts, the members' receipts) come in the order the drivers ran them."""
    if isinstance(value, dict):
        return {k: _strip(v, varies) for k, v in value.items() if k not in varies}
    if isinstance(value, list):
        return sorted((_strip(v, varies) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


_AT_LEAST_ONCE = ("delivery", "acknowledgement")


def _records(db: Path, until: float, *, sizes: bool = True) -> list[tuple[Any, ...]]:
    with Store(db) as store:
        rows = [
            (r.kind.value, r.account, r.device, r.recipient_account, r.recipient_device)
            + ((r.size,) if sizes else ())
            for r in store.metadata()
            if r.time is None or r.time <= until
        ]
    return sorted(rows, key=repr)  # a record of one kind may name an account or not (None)


def _scenario(name: str) -> Scenario:
    if name.startswith("book-club"):
        return parse_scenario(
            BUSY_BOOK_CLUB if name == "book-club-busy" else BOOK_CLUB, source=f"{name}.toml"
        )
    if name == "mailboxes":
        return parse_scenario(MAILBOXES, source="mailboxes.toml")
    if name == "two-friends-fresh":
        return fresh_connections(resolve_scenario("two-friends"))
    return resolve_scenario(name)


def _like_live_phones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated phones publish fewer one-time prekeys than live ones (simulation.SIM_PREKEY_BATCH, to
    save set-up time), so a phone that many people start sessions with uploads more in the simulator:
    give them the live phones' batch, so both drivers run the same phones."""
    monkeypatch.setattr(simulation, "SIM_PREKEY_BATCH", PREKEY_BATCH)
    monkeypatch.setattr(simulation, "SIM_KEM_PREKEY_BATCH", PREKEY_BATCH)


@pytest.mark.parametrize(
    ("name", "scale"),
    [
        ("two-friends", 0.0005),
        ("two-friends-fresh", 0.0005),
        ("mailboxes", 0.002),
        ("signal-subpoena-2016", 0.0001),
        ("book-club", 0.002),
        ("book-club-busy", 0.002),
    ],
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
    sizes = name != "book-club-busy"
    live_records = _records(tmp_path / "relay.db", live.relay_end, sizes=sizes)
    sim_records = _records(tmp_path / "sim.db", float("inf"), sizes=sizes)
    if name == "book-club-busy":
        # A phone that changes networks live drops its connection as it is: an envelope pushed to it,
        # or its acknowledgement, may be in flight, and is delivered (acknowledged) again after it logs
        # in from the new address (at-least-once delivery). The simulator's move falls between frames.
        again = Counter(r for r in live_records if r[0] in _AT_LEAST_ONCE)
        once = Counter(r for r in sim_records if r[0] in _AT_LEAST_ONCE)
        assert set(again) == set(once) and all(again[r] >= n for r, n in once.items())
        live_records = [r for r in live_records if r[0] not in _AT_LEAST_ONCE]
        sim_records = [r for r in sim_records if r[0] not in _AT_LEAST_ONCE]
    assert live_records == sim_records
    varies = _VARIES if sizes else _VARIES | {"size"}
    assert [_strip(d.to_json(), varies) for d in live.result.disclosures] == [
        _strip(d.to_json(), varies) for d in simulated.disclosures
    ]
    assert simulated.disclosures  # every scenario here serves legal process
    # What the phones read: the same messages on the same devices, unchanged, and the same receipts.
    assert _read(live.result.messages) == _read(simulated.messages)
    assert live.result.mismatched == simulated.mismatched == 0
    assert live.result.undecryptable == simulated.undecryptable == 0
    assert live.result.control == simulated.control
    assert {m: sorted(d) for m, d in live.result.synced.items()} == {
        m: sorted(d) for m, d in simulated.synced.items()
    }
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
    they do (receipts, cover traffic, fresh connections, moves, groups, mailboxes) it does not list."""
    two = resolve_scenario("two-friends")
    assert simulated_only(two) == []
    carried = replace(
        fresh_connections(two),
        defences=replace(fresh_connections(two).defences, receipts="batched", cover_per_hour=2.0),
        traffic=replace(two.traffic, read_receipts=True, moves_per_day=4.0, mobile=0.5),
    )
    assert simulated_only(carried) == []
    assert simulated_only(_scenario("book-club-busy")) == []  # [[groups]], moves, cover
    not_yet = replace(
        two,
        defences=replace(
            two.defences, sealed_connection="fresh", bundle_fetch="unauthenticated", mailboxes="ephemeral"
        ),
    )
    assert simulated_only(not_yet) == [
        "the exits' latency ([defences] exit_latency_ms): loopback has none",
    ]
    boxes = replace(two, defences=replace(two.defences, mailboxes="ephemeral"))
    assert simulated_only(boxes) == simulated_only(not_yet)  # a mailbox's connection comes from an exit too
    # groups: carried with the clients' own fan-out; a profile whose relay holds group state says so
    club = _scenario("book-club")
    under = {
        p: simulated_only(replace(club, relay=replace(club.relay, profile=p))) for p in ("whatsapp", "signal")
    }
    assert [line.split(" (")[0] for line in under["whatsapp"]] == ["server-side group fan-out"]
    assert under["signal"] == ["the encrypted group state signal's clients keep at the relay"]
