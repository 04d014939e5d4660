"""[[groups]] in a run where the relay has a part: server-side membership and fan-out (whatsapp) and
encrypted group state (signal); what the compliance desk answers for group membership under each."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings

from relaysim.clients.errors import DecryptionError
from relaysim.clients.groups import GroupWriteKey, open_group_state, read_group_state
from relaysim.relay import wire
from relaysim.relay.profiles import get_profile
from relaysim.sims.scenario import GroupChange, LegalProcessEvent, Scenario
from relaysim.sims.world.groups import group_write_secret
from relaysim.sims.world.simulation import Simulation, group_distribution_id
from tests.sims.test_simulation import _group_scenario, _runs, group_scenarios, run_and_capture

G = group_distribution_id("g")
CHANGES = (
    GroupChange(58.0, "message", "bo", "ONE"),
    GroupChange(700.0, "message", "cy", "TWO"),
    GroupChange(760.0, "leave", "cy"),
    GroupChange(900.0, "message", "ana", "THREE"),
)


CHANGE_CAST = ("ana", "bo", "cy", "dan")


def _under(profile: str, sc: Scenario) -> Scenario:
    return replace(sc, relay=replace(sc.relay, profile=profile, sealed_sender=False))


def _order_on(sc: Scenario, target: str) -> Scenario:
    """``sc`` with a 2703(d) order for ``target``'s records served near its end."""
    order = LegalProcessEvent(at=sc.duration - 60.0, process="court_order_2703d", name="o", target=target)
    return replace(sc, events=(*sc.events, order))


def _kinds(frames: list[bytes]) -> list[str]:
    decoder = wire.FrameDecoder("relay")
    out = []
    for data in frames:
        decoder.receive_data(data)
        frame = decoder.next_frame()
        assert isinstance(frame, wire.Request)
        out.append(frame.kind)
    return out


def test_under_whatsapp_the_relay_fans_each_group_message_out_from_the_list_it_holds(tmp_path: Path) -> None:
    sc = _under("whatsapp", _group_scenario("server-fanout", 551, CHANGES))
    sim = Simulation(sc, db_path=tmp_path / "relay.db", capture_frames=True)
    members = {}

    def look(t: float) -> None:
        members[t] = [m.account for m in sim.store.group_members(G)]

    for t in (50.0, 730.0, 3000.0):
        sim.sched.at(t, look, t)
    result = sim.run()
    assert result.undecryptable == 0 and result.mismatched == 0
    written = [m for m in result.messages if m.planned.recipient == "group:g"]
    assert [m.planned.text for m in written] == ["ONE", "TWO", "THREE"]
    for m in written:
        assert m.lost is None and sorted(m.delivered) == sorted(m.recipients), (m.planned.text, m.delivered)
    assert sorted(written[-1].delivered) == ["bo/1", "dan/1"]  # cy left; the relay's list says so
    # one group_send per group message (a frame the network duplicated aside), no per-member send
    assert _kinds(result.frames_to_relay or []).count("group_send") >= 3
    assert members == {
        50.0: ["ana", "bo", "cy"],
        730.0: ["ana", "bo", "cy", "dan"],
        3000.0: ["ana", "bo", "dan"],
    }


def test_under_signal_the_relay_holds_only_encrypted_group_state(tmp_path: Path) -> None:
    sc = _under("signal", _group_scenario("encrypted-state", 552, CHANGES))
    result, files, rows = run_and_capture(sc, tmp_path / "relay.db")
    assert all(m.lost is None for m in result.messages)
    blob = b"\x00".join(files)
    states = [r for r in rows if len(r) == 4 and r[0] == G]
    ((_, version, state, write_keys),) = states
    assert version == 2  # 0 created, 1 dan joined, 2 cy left
    key = Simulation(sc, db_path=":memory:").group_director.master_key("g")
    # the write keys of the members now, one each; cy's, who left, is gone: its uploads are refused
    mine = {
        p: GroupWriteKey.for_member(key, G, group_write_secret(sc.seed, "g", p)).public for p in CHANGE_CAST
    }
    assert write_keys == b"".join(sorted(mine[p] for p in ("ana", "bo", "dan")))
    assert mine["cy"] not in write_keys and all(p.encode() not in write_keys for p in CHANGE_CAST)
    assert open_group_state(key, G, version, state) == ("ana", "bo", "dan")
    # each member's key sealed beside it: the phone that made each change took the keys from the
    # state it fetched (dan's, a newcomer's, from dan), and checked the relay's against them
    assert read_group_state(key, G, version, state).write_keys == {p: mine[p] for p in ("ana", "bo", "dan")}
    assert _kinds(result.frames_to_relay or []).count("get_group_state") >= 2  # dan's join, cy's leave
    with pytest.raises(DecryptionError):
        open_group_state(bytes(32), G, version, state)  # the relay's keys open nothing: it holds none
    for name in (b"ana", b"dan"):
        assert name not in state
    assert blob  # (the files hold the blob, and nothing else about the group: test_relay_groups)


def test_under_signal_a_join_after_the_creator_left_is_signed_by_a_member_who_remains(tmp_path: Path) -> None:
    """A group without admins: a join that names no one is made by the creator (ana), and once she
    has left, by the first of the current members, whose key the relay takes (hers it refuses)."""
    changes = (
        GroupChange(700.0, "leave", "ana"),
        GroupChange(760.0, "leave", "cy"),
        GroupChange(900.0, "join", "cy"),
    )
    sc = _under("signal", _group_scenario("encrypted-rejoin", 555, changes))
    _result, _files, rows = run_and_capture(sc, tmp_path / "relay.db")
    ((_, version, state, write_keys),) = [r for r in rows if len(r) == 4 and r[0] == G]
    key = Simulation(sc, db_path=":memory:").group_director.master_key("g")
    assert version == 4  # 0 created, 1 dan joined, 2 ana left, 3 cy left, 4 cy back, added by bo
    assert open_group_state(key, G, version, state) == ("bo", "cy", "dan")
    mine = {
        p: GroupWriteKey.for_member(key, G, group_write_secret(sc.seed, "g", p)).public for p in CHANGE_CAST
    }
    assert write_keys == b"".join(sorted(mine[p] for p in ("bo", "cy", "dan")))


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ("whatsapp", "withheld_by_policy"),
        ("signal", "cryptographically_impossible"),
        ("viber", "not_retained"),
    ],
)
def test_the_desk_answers_for_group_membership_from_what_the_store_holds(
    tmp_path: Path, profile: str, reason: str
) -> None:
    sc = _order_on(_under(profile, _group_scenario(f"desk-{profile}", 553, CHANGES)), "bo")
    (d,) = Simulation(sc, db_path=tmp_path / "relay.db").run().disclosures
    assert d.reasons["group_membership"][0] == reason, d.reasons["group_membership"]
    if profile == "signal":
        # "cannot": the state is held, encrypted; said with Signal's own words from its published responses
        why = d.reasons["group_membership"][1]
        assert "holds 1 such encrypted group state" in why
        # and the write keys of its members, ana, bo and dan (cy left), which name no one
        assert "with them 3 write key(s), public keys that name no account" in why
        assert not re.search(r"\b(ana|bo|cy|dan)\b", why), why
        assert "doesn't have access to" in why and "signal.org/bigbrother" in why


def test_a_relay_that_discloses_membership_hands_over_the_list_it_fans_out_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whatsapp = get_profile("whatsapp")
    opened = replace(
        whatsapp, discloses={**whatsapp.discloses, "court_order_2703d": frozenset({"group_membership"})}
    )
    monkeypatch.setattr("relaysim.sims.world.simulation.provider", lambda _sc: opened)
    sc = _order_on(_under("whatsapp", _group_scenario("desk-lists", 554, CHANGES)), "dan")
    (d,) = Simulation(sc, db_path=tmp_path / "relay.db").run().disclosures
    (row,) = d.provided["group_membership"]
    assert row["members"] == ["ana", "bo", "dan"] and row["admins"] == ["ana"]
    assert row["added_by"] == "ana" and row["provider_added"] == []


@settings(deadline=None, max_examples=8)
@given(scenario=group_scenarios())
def test_under_server_fanout_every_member_device_reads_each_message_once(
    scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """...and no plaintext reaches the relay: not in a frame, not in its files, not in a row."""
    sc = _under("whatsapp", scenario)
    result, files, rows = run_and_capture(sc, tmp_path_factory.mktemp("sim") / "relay.db")
    assert result.mismatched == 0 and result.undecryptable == 0
    for m in result.messages:
        if m.lost is not None:
            assert m.delivered == {}, m
            continue
        # every member device the relay fanned it out to read it, or is accounted for, with the reason
        assert not set(m.delivered) & set(m.lost_for), m
        assert sorted([*m.delivered, *m.lost_for]) == sorted(m.recipients), (
            m.planned,
            m.delivered,
            m.lost_for,
        )
        for why in m.lost_for.values():
            assert why.startswith(("the network lost the group send", "the network lost the send to ")) or (
                why.startswith("its sender key never came")
            ), why
    haystacks = [*(result.frames_to_relay or []), *files]
    for row in rows:
        haystacks.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    blob = b"\x00".join(haystacks)
    for m in result.messages:
        for run in _runs(m.planned.text):
            assert run not in blob, (m.planned.text, run)
