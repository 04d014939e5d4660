"""The ghost as an extra group participant (sims.access.ghost_participant; Levy & Robinson, 2018):
where the relay holds the member list (whatsapp) the provider adds it and it reads what follows, and
the members' phones show it added unless their clients were changed; under signal's encrypted group
state the provider has no list to add to."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from relaysim.clients import agent as A
from relaysim.clients.identity import IdentityChanged
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.profiles import get_profile, profile_as_of
from relaysim.sims.access.base import AGENCY_ADDRESS
from relaysim.sims.cli import main
from relaysim.sims.scenario import (
    ExceptionalAccess,
    LegalProcessEvent,
    ScenarioError,
    parse_scenario,
    resolve_scenario,
)
from relaysim.sims.world.simulation import SimDevice, Simulation


def _run(
    tmp_path: Path, *, profile: str = "whatsapp", client_change: bool = False
) -> tuple[dict[str, Any], Any]:
    sc = resolve_scenario("ghost-participant")
    events = tuple(
        replace(e, client_change=client_change) if isinstance(e, ExceptionalAccess) else e for e in sc.events
    )
    sc = replace(sc, relay=replace(sc.relay, profile=profile), events=events)
    sim = Simulation(sc, db_path=tmp_path / "relay.db")
    result = sim.run()
    (report,) = [r for r in result.exceptional if r.name == "ghost-participant"]
    return report.data, result


def test_the_ghost_reads_every_group_message_after_it_was_added_and_the_members_see_it(
    tmp_path: Path,
) -> None:
    data, result = _run(tmp_path)
    # demanded at 02:00: the agency's account is added once the relay has registered it (a round trip)
    assert 7200.0 < data["added_at"] < 7201.0 and data["why_not_added"] is None
    assert data["read"] == data["expected_after_added"] == [3, 4, 5]
    assert data["matches_ground_truth"]
    assert data["noticed_by"] == ["lena/1", "omar/1", "sam/1"]
    assert all(s["shown_to_user"] and s["t"] > data["added_at"] for s in data["saw_it_added"])
    # the members' own deliveries are untouched: every member device read every group message
    assert all(m.lost is None and sorted(m.delivered) == sorted(m.recipients) for m in result.messages)


def test_a_client_changed_not_to_show_membership_changes_leaves_no_one_noticing(tmp_path: Path) -> None:
    data, _result = _run(tmp_path, client_change=True)
    assert data["read"] == [3, 4, 5] and data["matches_ground_truth"]
    assert data["noticed_by"] == []
    assert len(data["saw_it_added"]) == 3 and not any(s["shown_to_user"] for s in data["saw_it_added"])


def test_under_signal_the_server_has_no_member_list_to_add_a_ghost_to(tmp_path: Path) -> None:
    data, result = _run(tmp_path, profile="signal")
    assert data["added_at"] is None and data["read"] == []
    assert "encrypted" in data["why_not_added"] and "cannot add a member" in data["why_not_added"]
    assert data["saw_it_added"] == []
    assert all(m.lost is None for m in result.messages)


def test_a_ghost_participant_names_one_of_the_groups() -> None:
    base = (Path(__file__).parents[2] / "sims" / "scenarios" / "ghost-participant.toml").read_text()
    with pytest.raises(
        ScenarioError,
        match=r"events\[0\]\.group: expected the name of one of the \[\[groups\]\] \('newsroom'\), got 'club'",
    ):
        parse_scenario(base.replace('group = "newsroom"', 'group = "club"'), "gp.toml")
    with pytest.raises(ScenarioError, match=r"events\[0\]\.group: only a ghost_participant names a group"):
        parse_scenario(base.replace('demand = "ghost_participant"', 'demand = "key_escrow"'), "gp.toml")


def test_a_second_ghost_participant_in_the_same_group_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ghost_participant demands on one group added the account ghost-newsroom twice: the run
    failed inside the simulation (ValueError: device ghost-newsroom/1 is already in the
    simulation, an internal error)."""
    base = (Path(__file__).parents[2] / "sims" / "scenarios" / "ghost-participant.toml").read_text()
    again = '\n[[events]]\nat = "3h"\nkind = "exceptional_access"\ndemand = "ghost_participant"\ngroup = "newsroom"\n'
    path = tmp_path / "gp.toml"
    path.write_text(base + again, encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err, err
    assert (
        "gp.toml: events[1].group: events[0] already makes the provider add a ghost participant to 'newsroom'"
        in err
    )


def test_a_disclosure_of_the_member_list_shows_the_member_no_admin_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a provider hands member lists over (here WhatsApp's profile, opened up for the test), the
    list it hands over is the one it fans out from: the ghost is in it, added by no admin."""
    whatsapp = get_profile("whatsapp")
    opened = replace(
        whatsapp, discloses={**whatsapp.discloses, "court_order_2703d": frozenset({"group_membership"})}
    )
    monkeypatch.setattr("relaysim.sims.world.simulation.provider", lambda _sc: opened)
    sc = resolve_scenario("ghost-participant")
    order = LegalProcessEvent(at=3 * 3600.0, process="court_order_2703d", name="o", target="lena")
    result = Simulation(replace(sc, events=(*sc.events, order)), db_path=tmp_path / "relay.db").run()
    (d,) = result.disclosures
    (row,) = d.provided["group_membership"]
    assert row["members"] == ["ghost-newsroom", "lena", "omar", "sam"]
    assert row["provider_added"] == ["ghost-newsroom"] and row["added_by"] == "omar"


@pytest.mark.parametrize(
    ("start", "v2"),
    [("2019-06-01", False), ("2019-12-09", True)],
)
def test_a_signal_run_before_groups_v2_reads_signals_groups_as_they_were(
    tmp_path: Path, start: str, v2: bool
) -> None:
    """Signal's groups v2 (encrypted group state at the server) was announced on 2019-12-09: a Signal run set
    before it printed the groups v2 design, citing 2019-12-09 and CCS 2020, as the run's own. Before it the run's
    groups are those of the record (Signal, 2016: nothing about a user's groups stored; the clients fan out)."""
    base = (Path(__file__).parents[2] / "sims" / "scenarios" / "ghost-participant.toml").read_text()
    text = base.replace("seed = 2018\n", f"seed = 2018\nstart = {start}\n").replace(
        'profile = "whatsapp"', 'profile = "signal"'
    )
    path = tmp_path / "gp.toml"
    path.write_text(text, encoding="utf-8")
    sc = parse_scenario(text, "gp.toml")
    (report,) = [r for r in Simulation(sc, db_path=tmp_path / "relay.db").run().exceptional]
    data = report.data
    assert data["added_at"] is None and data["group_state_encrypted"] is v2
    if v2:
        assert "cannot add a member" in data["why_not_added"], data["why_not_added"]
        # as of the run's date: CCS 2020 and Signal's 2021 response said to be later (relay/profiles.py, HISTORY)
        assert data["group_source"] == profile_as_of("signal", date.fromisoformat(start)).group_source
    else:
        assert "fan group messages out themselves" in data["why_not_added"], data["why_not_added"]
        assert "CCS 2020" not in data["group_source"], data["group_source"]
        assert "announced 2019-12-09, after this date" in data["group_source"], data["group_source"]
        assert "'anything about a user's groups" in data["group_source"], data["group_source"]
        assert "after this date" in report.markdown and "groups v2" not in data["why_not_added"]


def test_the_agency_s_phone_s_records_at_the_relay_are_those_of_any_phone_under_sealed_sender() -> None:
    """The agency's phone registers like any phone, and, under sealed sender, asks for a sender
    certificate at each login like any phone (Simulation._agent_event's LoggedIn: its login is the world's,
    not the intervention's). Its registration was carried to the relay by the intervention itself, and
    the records the relay made of it (the connection, the registration, the disconnect) were dropped: in
    no count of the run (summary.json's relay_records named 3 registrations for 4 phones) nor its relay
    view. Now the relay's records of each phone, kind by kind, are those of any phone."""
    sc = resolve_scenario("ghost-participant")
    sc = replace(sc, relay=replace(sc.relay, sealed_sender=True))
    records: list[MetadataRecord] = []
    sim = Simulation(sc, relay_view=records.append)
    result = sim.run()
    (phone,) = sim.interventions.agency_devices()
    kinds: dict[str, Counter[str]] = {}
    queued: Counter[str] = Counter()
    for r in records:
        if r.account is not None:
            kinds.setdefault(f"{r.account}/{r.device}", Counter())[r.kind.value] += 1
        if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND):
            queued[f"{r.recipient_account}/{r.recipient_device}"] += 1
    assert sorted(kinds) == sorted(["omar/1", "lena/1", "sam/1", phone])
    for name, kind in kinds.items():  # each phone registered once, and got a certificate at each login
        assert kind["registration"] == 1 and kind["sender_certificate"] == kind["authentication"] >= 1, (
            name,
            kind,
        )
        assert kind["delivery"] == kind["acknowledgement"] == queued[name] > 0, (name, kind, queued[name])
    # the agency's phone only reads: what any phone does at its login and to read, no more
    assert set(kinds[phone]) == {
        "registration",
        "authentication",
        "sender_certificate",
        "delivery",
        "acknowledgement",
    }
    assert result.relay_records["registration"] == 4, result.relay_records
    assert result.relay_records["sender_certificate"] == sum(k["authentication"] for k in kinds.values())


def test_the_agency_s_phone_registers_and_logs_in_on_one_connection_as_a_phone_does() -> None:
    """A phone registers and then logs in on the connection it opened (clients.net's register then login;
    sims.live; the simulated phones). The agency's phone registered on a connection the intervention
    opened and closed, and logged in on another: two connection records where a phone has one. Now its
    registration, its login and its reads are on one connection, as each person's phone's are."""
    sc = resolve_scenario("ghost-participant")
    records: list[MetadataRecord] = []
    sim = Simulation(sc, relay_view=records.append)
    sim.run()
    (phone,) = sim.interventions.agency_devices()
    account = phone.split("/")[0]
    agency = [r for r in records if r.host == AGENCY_ADDRESS]
    assert [r.kind for r in agency if r.kind is RecordKind.CONNECTION] == [RecordKind.CONNECTION]
    assert {r.connection for r in agency} == {agency[0].connection}
    (registered,) = [r for r in records if r.kind is RecordKind.REGISTRATION and r.account == account]
    (login,) = [r for r in records if r.kind is RecordKind.AUTHENTICATION and r.account == account]
    assert registered.connection == login.connection == agency[0].connection
    assert registered.time < login.time
    for person in ("omar", "lena", "sam"):  # as the people's phones: registered and logged in on one
        (reg,) = [r for r in records if r.kind is RecordKind.REGISTRATION and r.account == person]
        first = min(
            (r for r in records if r.kind is RecordKind.AUTHENTICATION and r.account == person),
            key=lambda r: r.time,
        )
        assert reg.connection == first.connection, person


class _AgencyReports(Simulation):
    """A run in which the agency's phone, right after it reads its first planned message, reports what
    any phone's agent can: a request the relay refused (``A.Failed``) and a contact's identity key that
    changed (``IdentityChanged``). ``phone``: the agency's phone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phone: str | None = None

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        super()._agent_event(d, event, box)
        if (
            self.phone is None
            and type(event) is A.Received
            and self.envelope_message.get(event.envelope_id) is not None
            and d.name in self.interventions.agency_devices()
        ):
            self.phone = d.name
            super()._agent_event(d, A.Failed(None, "rate_limited", "too many requests"), box)
            changed = IdentityChanged(event.sender, b"\x01" * 32, b"\x02" * 32, "message", True, False)
            super()._agent_event(d, changed, box)
            if event.group is not None:  # it sees itself in the group's list, as a member's phone would
                account = d.name.split("/")[0]
                super()._agent_event(d, A.GroupMembershipChanged(event.group, (account,), (), 9, True), box)


@pytest.mark.parametrize("name", ["ghost-participant", "ghost-device"])
def test_what_the_agency_s_phone_reports_is_in_the_transcript_as_any_phone_s(name: str) -> None:
    """GhostParticipant.on_agent_event took every event of the agency's phone as its own, so the world
    wrote none of them: a request the relay refused left no ``failure`` record, a changed identity key
    no ``identity_changed``, where the ghost device's (sims.access.ghost) and every person's phone have
    them. The agency's phone is a device the relay serves: its records are in the transcript, as the
    ghost device's are; what it reads stays the agency's (``ghost_read``)."""
    events: list[dict[str, Any]] = []
    sim = _AgencyReports(resolve_scenario(name), transcript=events.append)
    result = sim.run()
    phone = sim.phone
    assert phone is not None
    failures = [e for e in events if e["kind"] == "failure" and e["device"] == phone]
    assert [(e["code"], e["message"]) for e in failures] == [("rate_limited", "too many requests")], failures
    changed = [e for e in events if e["kind"] == "identity_changed" and e["device"] == phone]
    assert len(changed) == 1 and changed[0]["accepted"] is True, changed
    assert [e["device"] for e in events if e["kind"] == "ghost_read"] == [phone] * 3
    if name == "ghost-participant":  # its own view of the list is written, and is no member noticing
        seen = [e for e in events if e["kind"] == "group_membership_changed" and e["device"] == phone]
        assert len(seen) == 1, seen
        (data,) = [r.data for r in result.exceptional if r.name == "ghost-participant"]
        assert phone not in [s["device"] for s in data["saw_it_added"]], data["saw_it_added"]
        assert phone not in data["noticed_by"], data["noticed_by"]


def _four_ghosts() -> str:
    """The built-in scenario with three more groups of the same people, and a ghost participant demanded in
    each of the four at 02:00: four new accounts, each registered from the agency's one address."""
    base = (Path(__file__).parents[2] / "sims" / "scenarios" / "ghost-participant.toml").read_text()
    groups = "".join(
        f'\n[[groups]]\nname = "{g}"\nmembers = ["omar", "lena", "sam"]\nadmins = ["omar"]\n'
        f'timeline = [{{ at = "15m", from = "omar", text = "hi" }}, {{ at = "3h", from = "lena", text = "later" }}]\n'
        for g in ("desk", "board", "night")
    )
    demands = "".join(
        f'\n[[events]]\nat = "2h"\nkind = "exceptional_access"\ndemand = "ghost_participant"\ngroup = "{g}"\n'
        for g in ("desk", "board", "night")
    )
    return base.replace("[[events]]", groups + "\n[[events]]", 1) + demands


def test_a_registration_the_relay_refuses_is_said_and_not_taken_for_a_group_that_never_existed() -> None:
    """Four ghost participants demanded at once: the relay registers at most 3 new accounts from one
    address in a burst (relay.limits.Limits.register_per_address), so it refuses the fourth agency
    phone's registration (rate_limited). Its report said "Group … never existed at the relay: nothing
    was added", though the group did: it says now that the agency's phone could not register, and the
    relay's reason."""
    events: list[dict[str, Any]] = []
    result = Simulation(parse_scenario(_four_ghosts(), "four.toml"), transcript=events.append).run()
    reports = {r.data["group"]: r for r in result.exceptional if "group" in r.data}
    refused = [g for g, r in reports.items() if r.data["added_at"] is None]
    assert len(reports) == 4 and len(refused) == 1, {g: r.data["why_not_added"] for g, r in reports.items()}
    (group,) = refused
    data, markdown = reports[group].data, reports[group].markdown
    assert "never existed" not in markdown, markdown
    (failure,) = [e for e in events if e["kind"] == "failure" and e["device"] == f"ghost-{group}/1"]
    assert failure["code"] == "rate_limited" and "register per address" in failure["message"], failure
    assert data["registration_refused"] == {"code": "rate_limited", "message": failure["message"]}
    assert data["why_not_added"].startswith(
        f"the relay refused to register the agency's phone ghost-{group}/1"
    )
    assert data["read"] == []
    assert f"the agency's phone could not register its account **ghost-{group}**" in markdown, markdown
    assert "rate_limited: register: over this relay's limit register per address" in markdown, markdown
    (said,) = [e for e in events if e["kind"] == "exceptional_access" and e.get("group") == group]
    assert said["added"] is False and said["why"] == data["why_not_added"], said


def test_a_relay_that_asks_the_agency_s_phone_for_a_registration_proof_is_said(tmp_path: Path) -> None:
    """A relay that asks a new account for a registration proof (relay.core.RelayCore's registration_pow,
    turned on here at 01:59, after the people registered): the agency's phone makes none, so it has no
    account; the report says so, not that the group never existed."""
    sim = Simulation(resolve_scenario("ghost-participant"), db_path=tmp_path / "relay.db")
    sim.sched.at(7140.0, lambda: setattr(sim.relay, "registration_pow", 8))
    result = sim.run()
    ((data, markdown),) = [(r.data, r.markdown) for r in result.exceptional if r.name == "ghost-participant"]
    assert "never existed" not in markdown and "could not register" in markdown, markdown
    assert data["added_at"] is None and data["read"] == []
    assert data["registration_refused"]["code"] == "registration_proof", data["registration_refused"]
    assert "8 leading zero bits" in data["registration_refused"]["message"]


def test_a_run_that_ends_while_the_agency_s_phone_registers_says_so() -> None:
    """Demanded 10 ms before the end: the group exists, the agency's phone has no answer from the relay
    yet. The report said the group never existed; it says the run ended while the phone registered."""
    base = (Path(__file__).parents[2] / "sims" / "scenarios" / "ghost-participant.toml").read_text()
    late = base.replace(
        'at = "2h"\nkind = "exceptional_access"', 'at = "14399.99s"\nkind = "exceptional_access"'
    )
    assert late != base
    result = Simulation(parse_scenario(late, "late.toml")).run()
    ((data, markdown),) = [(r.data, r.markdown) for r in result.exceptional if r.name == "ghost-participant"]
    assert "never existed" not in markdown, markdown
    assert (
        "the run ended while the agency's phone was still registering account **ghost-newsroom**" in markdown
    )
    assert data["added_at"] is None and data["registering"] and data["registration_refused"] is None
