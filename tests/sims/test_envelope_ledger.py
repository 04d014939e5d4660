"""Every envelope a run's relay accepted, by whose device it was for: the people's and the agency's (a
ghost is the agency's device), and what became of each, adding up to what the relay accepted per party.

Before, a ghost's envelopes were in no total of the run: the run's counts were the people's devices'
only, without saying so, and the ghost's unread ones were counted by its intervention alone."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import agent as A
from relaysim.clients.errors import DecryptionError
from relaysim.clients.identity import IdentityChanged, UntrustedIdentity
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.sims import report
from relaysim.sims.live import _run_live, run_live
from relaysim.sims.report import run_to_dir
from relaysim.sims.reports.html import render_report
from relaysim.sims.scenario import builtin_scenarios, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import ENVELOPE_FATES, SimDevice, Simulation, envelope_ledger
from tests.helpers import MAILBOX_SCALE, MAILBOXES

_PARTS = ("delivered", "duplicates_dropped", "refused", "undecryptable", "unread", "dropped_by_relay")


def test_a_ghost_s_envelopes_are_the_agency_s_and_each_party_s_add_up(tmp_path: Path) -> None:
    sc = resolve_scenario("ghost-device")
    run_to_dir(sc, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    env = summary["envelopes"]
    assert env["agency_devices"] == ["omar/2"]
    for party in ("people", "agency"):
        row = env[party]
        assert set(row) == set(ENVELOPE_FATES)
        assert all(row[k] >= 0 for k in ENVELOPE_FATES), (party, row)
        # delivered + unread + refused + undecryptable (+ duplicates, + neither) = sent, per party
        assert sum(row[k] for k in _PARTS) == row["sent"], (party, row)
        assert row["dropped_by_relay"] == 0
    # the two parties' envelopes are every envelope the relay recorded accepting, from its own records
    records = summary["relay_records"]
    assert env["people"]["sent"] + env["agency"]["sent"] == records.get("send", 0) + records.get(
        "sealed_send", 0
    )
    # the ghost read 3 messages: its envelopes are the agency's, at least those
    ghost = json.loads((tmp_path / "exceptional" / "ghost-device.json").read_text(encoding="utf-8"))
    assert len(ghost["read"]) == 3
    assert env["agency"]["delivered"] >= 3
    assert env["agency"]["undecryptable"] == ghost["undecryptable"]
    assert env["agency"]["refused"] == sum(ghost["refused"].values())
    # the run's own counts are the people's, and are said to be
    m = summary["messages"]
    assert env["people"]["undecryptable"] == m["undecryptable"]
    assert env["people"]["refused"] == sum(m["refused"].values())
    assert env["people"]["duplicates_dropped"] == m["duplicates_dropped"]
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "## Envelopes, by whose device they were for" in text
    messages = text.split("## Messages", 1)[1].split("\n## ", 1)[0]
    assert "what the people's devices made of it" in messages  # the Messages counts say whose they are
    assert "the agency's devices (omar/2)" in text
    # relaysim show and the HTML report say the same, party by party
    agency = env["agency"]
    line = (
        f"the agency's (omar/2): {agency['sent']} accepted by the relay = {agency['delivered']} read + "
        f"{agency['duplicates_dropped']} duplicates dropped + {agency['refused']} refused + "
        f"{agency['undecryptable']} could not decrypt + {agency['unread']} still queued"
    )
    shown = " ".join(report.render_show(tmp_path, width=400).split())
    assert "ENVELOPES, BY WHOSE DEVICE THEY WERE FOR" in shown and line in shown
    html = render_report(tmp_path).replace("&#x27;", "'")
    assert f"<li>{line}</li>" in html


def test_a_run_without_an_intervention_has_every_envelope_the_people_s() -> None:
    sc = resolve_scenario("two-friends")
    result = Simulation(sc).run()
    s = report.summarise(result)
    env = s["envelopes"]
    assert "agency_devices" not in env and all(v == 0 for v in env["agency"].values())
    assert env["people"]["sent"] == s["relay_records"].get("send", 0) + s["relay_records"].get(
        "sealed_send", 0
    )
    assert sum(env["people"][k] for k in _PARTS) == env["people"]["sent"]


def test_the_ledger_puts_the_agency_s_unread_envelopes_in_the_agency_s_column() -> None:
    ledger = envelope_ledger(
        {"omar/1": 10, "omar/2": 6, "lena/1": 4},
        {"omar/1": 9, "omar/2": 5, "lena/1": 4},
        {"omar/1": 1, "omar/2": 1},
        {"omar/2": [1, 1, 2], "lena/1": [0, 0, 1]},
        ["omar/2"],
    )
    assert ledger["agency"] == {
        "sent": 6,
        "forged_by_relay": 0,
        "delivered": 1,
        "duplicates_dropped": 1,
        "refused": 1,
        "undecryptable": 2,
        "unread": 1,
        "dropped_by_relay": 0,
    }
    assert ledger["people"] == {
        "sent": 14,
        "forged_by_relay": 0,
        "delivered": 12,
        "duplicates_dropped": 0,
        "refused": 0,
        "undecryptable": 1,
        "unread": 1,
        "dropped_by_relay": 0,
    }


def test_an_envelope_the_relay_forged_is_counted_as_one_it_queued() -> None:
    """relay-swaps-identity: the relay queues Nadia's phone an envelope no device sent (no send record);
    it is among what was queued for the people, said to be forged, and the sum still adds up (before, it
    came out as -1 envelopes "neither acknowledged nor queued")."""
    result = Simulation(resolve_scenario("relay-swaps-identity")).run()
    s = report.summarise(result)
    people = s["envelopes"]["people"]
    assert people["forged_by_relay"] == 1
    records = s["relay_records"]
    assert people["sent"] == records.get("send", 0) + records.get("sealed_send", 0) + 1
    assert sum(people[k] for k in _PARTS) == people["sent"]
    assert people["dropped_by_relay"] == 0


def test_a_mailbox_s_unread_envelopes_are_counted_under_the_mailbox_device_by_device() -> None:
    """Under ``mailboxes = "ephemeral"`` the relay queues a sealed conversation's replies for the mailbox,
    an account of its own on its holder's phone. What the mailbox could not read was counted under the
    holder's phone (Simulation._mailbox_event handed it to the holder's events): the parties' totals
    added up, but device by device the mailbox read more than it was sent copies of, its holder fewer.
    Now each is counted under the device the relay queued it for, and every device's row adds up."""
    text = MAILBOXES.replace("[relay]", "[network]\nduplication = 0.2\n\n[relay]", 1)
    result = Simulation(parse_scenario(text, source="mailboxes.toml")).run()
    rows = result.envelopes_by_device
    boxes = [name for name in rows if name.split("/")[0] not in ("amira", "ben")]
    assert len(boxes) == 1, rows  # amira's mailbox, for ben's replies
    box = rows[boxes[0]]
    assert box["duplicates_dropped"] >= 1, rows  # the network carried one of ben's sends twice
    for name, row in rows.items():
        assert sum(row[k] for k in _PARTS) == row["sent"], (name, row)
        assert all(row[k] >= 0 for k in ENVELOPE_FATES), (name, row)
        assert row["dropped_by_relay"] == 0, (name, row)
    # amira's phone was queued nothing of its own (ben writes to her mailbox): nothing counted under it
    assert "amira/1" not in rows, rows
    # the parties' sums are the devices' rows summed
    assert result.envelopes["people"] == {k: sum(r[k] for r in rows.values()) for k in ENVELOPE_FATES}
    assert result.envelopes["people"]["duplicates_dropped"] == result.duplicates_dropped


def _live(scenario: Any, out: Path, time_scale: float) -> Any:
    """A live run of ``scenario`` into ``out`` (sims.live._run_live: its result with every device's row)."""
    out.mkdir(parents=True, exist_ok=True)
    return trio.run(_run_live, scenario, out, time_scale, None).result


def test_a_live_run_counts_every_envelope_as_the_simulator_does(tmp_path: Path) -> None:
    """A live summary.json had ``"envelopes": {}`` and summary.md no table: _LiveRun.result counted none.
    Now it counts them from the live relay's records and the phones' reports, each device's row and
    the people's adding up to what the relay recorded accepting."""
    scenario = resolve_scenario("two-friends")
    assert run_live(scenario, tmp_path, time_scale=0.0002, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    env, records, m = summary["envelopes"], summary["relay_records"], summary["messages"]
    people = env["people"]
    assert set(people) == set(ENVELOPE_FATES) and all(people[k] >= 0 for k in ENVELOPE_FATES), people
    assert people["sent"] == records.get("send", 0) + records.get("sealed_send", 0) > 0
    assert sum(people[k] for k in _PARTS) == people["sent"]
    assert people["dropped_by_relay"] == 0 and people["unread"] == m["still_queued_or_in_flight"] == 0
    # every message reached its recipient's device: at least those were read
    assert people["delivered"] >= m["device_deliveries"] == m["device_deliveries_expected"]
    assert people["duplicates_dropped"] == m["duplicates_dropped"]
    assert people["undecryptable"] == m["undecryptable"]
    assert all(v == 0 for v in env["agency"].values()) and "agency_devices" not in env
    assert "envelopes_not_counted" not in summary["live"]
    assert "## Envelopes, by whose device they were for" in (tmp_path / "summary.md").read_text(
        encoding="utf-8"
    )


def test_a_live_run_counts_a_mailbox_s_envelopes_under_the_mailbox(tmp_path: Path) -> None:
    scenario = parse_scenario(MAILBOXES, source="mailboxes.toml")
    result = _live(scenario, tmp_path, MAILBOX_SCALE)
    rows = result.envelopes_by_device
    boxes = [name for name in rows if name.split("/")[0] not in ("amira", "ben")]
    assert len(boxes) == 1 and rows[boxes[0]]["sent"] >= 2, rows  # ben's texts to amira's mailbox
    for name, row in rows.items():
        assert all(row[k] >= 0 for k in ENVELOPE_FATES), (name, row)
        assert sum(row[k] for k in _PARTS) == row["sent"], (name, row)
        assert row["dropped_by_relay"] == 0, (name, row)
    assert result.envelopes["people"] == {k: sum(r[k] for r in rows.values()) for k in ENVELOPE_FATES}
    records = result.relay_records
    assert result.envelopes["people"]["sent"] == records.get("send", 0) + records.get("sealed_send", 0)


def test_a_live_run_under_a_profile_that_keeps_no_such_records_says_it_counted_none(tmp_path: Path) -> None:
    """Under Signal's profile the relay keeps no record of a send or an acknowledgement: a live run
    cannot count the envelopes from them, and says so, rather than count nothing as none."""
    sc = resolve_scenario("two-friends")
    scenario = dataclasses.replace(sc, relay=dataclasses.replace(sc.relay, profile="signal"))
    assert run_live(scenario, tmp_path, time_scale=0.0002, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["envelopes"] == {}
    assert "the signal profile keeps no send record" in summary["live"]["envelopes_not_counted"]


class _ReadTwice(Simulation):
    """A run in which one device reads one planned message a second time (``by_mailbox``: a mailbox
    reads it, on its holder's phone), as a copy of it encrypted afresh would be read, not refused by the
    ratchet as a replayed one is: its agent's ``Received`` handed over twice. ``twice``: the device the
    relay queued that envelope for."""

    by_mailbox = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.twice: list[str] = []

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        super()._agent_event(d, event, box)
        if (
            not self.twice
            and type(event) is A.Received
            and (box is not None) == self.by_mailbox
            and self.envelope_message.get(event.envelope_id) is not None
        ):
            self.twice.append((box or d).name)
            super()._agent_event(d, event, box)


@pytest.mark.parametrize("by_mailbox", [False, True])
def test_a_message_read_again_on_the_same_device_is_counted_a_duplicate_under_that_device(
    by_mailbox: bool,
) -> None:
    """Simulation._received counts a planned message a device reads a second time as a duplicate dropped
    (summary.json's messages); its envelope was counted as delivered in ``envelopes``, a duplicate
    nowhere there, so the device's row and the parties' said fewer duplicates than the run's count. Now
    it is one under the device the relay queued it for (a mailbox's under the mailbox)."""
    scenario = (
        parse_scenario(MAILBOXES, source="mailboxes.toml") if by_mailbox else resolve_scenario("two-friends")
    )
    plain = Simulation(scenario).run()
    sim = _ReadTwice(scenario)
    sim.by_mailbox = by_mailbox
    result = sim.run()
    (name,) = sim.twice
    assert name.split("/")[0] not in ("amira", "ben") if by_mailbox else name in ("amira/1", "ben/1")
    assert result.duplicates_dropped == plain.duplicates_dropped + 1
    row, before = result.envelopes_by_device[name], plain.envelopes_by_device[name]
    assert row["duplicates_dropped"] == before["duplicates_dropped"] + 1, (row, before)
    assert row["delivered"] == before["delivered"] - 1, (row, before)  # the same envelopes acknowledged
    assert sum(row[k] for k in _PARTS) == row["sent"] == before["sent"]
    assert result.envelopes["people"]["duplicates_dropped"] == result.duplicates_dropped


# ben's first reply, to amira's mailbox (MAILBOXES' message 2)
_REFUSED_AT_THE_MAILBOX = "Writing to it now"


def _refuse_at_the_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Amira's mailbox refuses ben's first reply as from an identity key the user has not approved (it
    decrypted), as ``Device`` refuses one under ``identity_changes = "block"``: an envelope the mailbox,
    not its holder's phone, could not read, in either driver."""
    decrypt = Device._decrypt

    def refusing(self: Device, peer: Any, ciphertext: bytes, identity: bytes | None) -> bytes:
        plaintext = decrypt(self, peer, ciphertext, identity)
        if self.address.account not in ("amira", "ben") and _REFUSED_AT_THE_MAILBOX.encode() in plaintext:
            raise UntrustedIdentity(
                IdentityChanged(peer, b"\x01" * 32, b"\x02" * 32, "message", False, False)
            )
        return plaintext

    monkeypatch.setattr(Device, "_decrypt", refusing)


def _check_the_mailbox_s_refusal(result: Any, events: list[dict[str, Any]]) -> None:
    """The mailbox's refusal is counted under the mailbox and its transcript record names the mailbox's
    device, as ``relaysim show`` says whose it is."""
    (opened,) = [e for e in events if e["kind"] == "mailbox_opened"]
    box = f"{opened['mailbox']}/1"
    unread = [e for e in events if e["kind"] in ("undecryptable", "duplicate_dropped")]
    assert [(e["kind"], e["device"], e["message"], e.get("reason")) for e in unread] == [
        ("undecryptable", box, 2, A.UNTRUSTED_IDENTITY)
    ]
    rows = result.envelopes_by_device
    assert rows[box]["refused"] == 1, rows
    for name, row in rows.items():
        assert all(row[k] >= 0 for k in ENVELOPE_FATES), (name, row)
        assert sum(row[k] for k in _PARTS) == row["sent"], (name, row)
        assert name == box or row["refused"] == 0, (name, row)  # nothing counted under amira's phone
    assert result.refused[A.UNTRUSTED_IDENTITY] == 1
    shown = [row[1] for row in report.show_rows(events) if "refused message 2" in row[1]]
    assert shown == [
        f"amira/1's mailbox for ben ({box}) refused message 2: it decrypted, but from a changed identity key "
        "the user has not approved"
    ]


def test_what_a_mailbox_could_not_read_names_the_mailbox_in_the_transcript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transcript's record of an envelope a mailbox could not read named its holder's phone (amira/1)
    while the counts put it under the mailbox; now it names the mailbox's device, as the counts do."""
    _refuse_at_the_mailbox(monkeypatch)
    result, _ = run_to_dir(parse_scenario(MAILBOXES, source="mailboxes.toml"), tmp_path)
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    _check_the_mailbox_s_refusal(result, [json.loads(line) for line in lines])


def test_a_live_run_counts_what_a_mailbox_could_not_read_under_the_mailbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live (sims/live.py: a relay process, trio clients), an envelope a mailbox could not read is counted
    under the mailbox (_LiveRun._mailbox_event, _unreadable's ``box``), not under its holder's phone, which
    the relay queued nothing for (counted there, the phone's row had read -1 envelopes), and its
    transcript record names the mailbox, as the simulator's does."""
    _refuse_at_the_mailbox(monkeypatch)
    scenario = parse_scenario(MAILBOXES, source="mailboxes.toml")
    tmp_path.mkdir(parents=True, exist_ok=True)
    outcome = trio.run(_run_live, scenario, tmp_path, MAILBOX_SCALE, None)
    _check_the_mailbox_s_refusal(outcome.result, outcome.events)


@pytest.mark.parametrize("by_mailbox", [False, True])
def test_a_message_read_again_has_its_duplicate_dropped_record_in_the_transcript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_mailbox: bool
) -> None:
    """Simulation._received counted a planned message a device read a second time as a duplicate dropped,
    but wrote no ``duplicate_dropped`` record, as a copy the ratchet refused gets: the transcript had one
    record fewer than summary.json's count. Now the two agree, and the record names the device the copy
    was counted under."""

    class ReadTwice(_ReadTwice):
        pass

    ReadTwice.by_mailbox = by_mailbox
    made: list[_ReadTwice] = []

    def simulation(*args: Any, **kwargs: Any) -> _ReadTwice:
        made.append(ReadTwice(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(report, "Simulation", simulation)
    scenario = (
        parse_scenario(MAILBOXES, source="mailboxes.toml") if by_mailbox else resolve_scenario("two-friends")
    )
    run_to_dir(scenario, tmp_path)
    (sim,) = made
    (name,) = sim.twice
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    dropped = [e for e in map(json.loads, lines) if e["kind"] == "duplicate_dropped"]
    assert summary["messages"]["duplicates_dropped"] >= 1
    assert len(dropped) == summary["messages"]["duplicates_dropped"], dropped
    assert name in [e["device"] for e in dropped]


def test_a_live_run_transcribes_a_message_read_again_as_a_duplicate_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live (sims/live.py), a planned message a phone reads a second time (_LiveRun._delivered's read-again
    path) was counted a duplicate with no ``duplicate_dropped`` record; now it has one, naming the phone,
    and the transcript's records are as many as the run's count."""
    from relaysim.sims import live

    twice: list[str] = []
    received = live._LiveRun._received

    def read_twice(self: Any, phone: Any, ev: A.Received, box: Any = None) -> None:
        received(self, phone, ev, box)
        if not twice and box is None and self.envelope_message.get(ev.envelope_id) is not None:
            twice.append(phone.name)
            received(self, phone, ev, box)

    monkeypatch.setattr(live._LiveRun, "_received", read_twice)
    outcome = trio.run(_run_live, resolve_scenario("two-friends"), tmp_path, 0.0002, None)
    (name,) = twice
    dropped = [e for e in outcome.events if e["kind"] == "duplicate_dropped"]
    assert outcome.result.duplicates_dropped >= 1
    assert len(dropped) == outcome.result.duplicates_dropped, dropped
    assert name in [e["device"] for e in dropped]


def test_a_ghost_s_duplicates_have_their_duplicate_dropped_records_in_the_transcript(tmp_path: Path) -> None:
    """A ghost's (ghost-device's agency device, omar/2) copies of what it read already were counted in
    summary.json's ``envelopes`` (the agency's) but written to no transcript record, as the people's
    are: the transcript had fewer ``duplicate_dropped`` records than the ledger's duplicates. Now each
    has its record, naming the ghost's device, and the two agree."""
    toml = (Path(report.__file__).parent / "scenarios" / "ghost-device.toml").read_text(encoding="utf-8")
    # the network carries some sends twice: the ghost gets copies of envelopes it read
    toml = toml.replace("[network]\n", "[network]\nduplication = 0.2\n", 1)
    run_to_dir(parse_scenario(toml, source="ghost-device.toml"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    env = summary["envelopes"]
    assert env["agency_devices"] == ["omar/2"]
    assert env["agency"]["duplicates_dropped"] >= 1, env  # the ghost dropped copies
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    dropped = [e for e in map(json.loads, lines) if e["kind"] == "duplicate_dropped"]
    ghost = [e for e in dropped if e["device"] == "omar/2"]
    assert len(ghost) == env["agency"]["duplicates_dropped"], ghost
    assert len(dropped) == env["people"]["duplicates_dropped"] + env["agency"]["duplicates_dropped"]
    people = [e for e in dropped if e["device"] != "omar/2"]
    assert people and all(set(e) == set(people[0]) for e in ghost), (ghost, people)  # the people's shape


def _mailboxes_made_device_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mailbox's agent made device 2 of its account, which neither driver counts it as."""
    new_mailbox = A.DeviceAgent.new_mailbox

    def device_2(self: A.DeviceAgent, peer: str, rng: Any = None) -> A.DeviceAgent:
        box = new_mailbox(self, peer, rng)
        box.device.address = PeerAddress(box.account, 2)
        return box

    monkeypatch.setattr(A.DeviceAgent, "new_mailbox", device_2)


def _messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [m for e in error.exceptions for m in _messages(e)]
    return [str(error)]


def test_a_mailbox_that_is_not_device_1_is_refused_where_it_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both drivers count a mailbox's envelopes as "account/1" and look for it online as device 1; a
    mailbox made another device of its account was counted under a device the relay queued nothing for,
    without a word. Now the driver that makes it says which mailbox is which device, and stops."""
    _mailboxes_made_device_2(monkeypatch)
    scenario = parse_scenario(MAILBOXES, source="mailboxes.toml")
    with pytest.raises(ValueError, match=r"mailbox [0-9a-f-]+ opened by amira/1 is device 2 of its account"):
        Simulation(scenario).run()


def test_a_live_mailbox_that_is_not_device_1_is_refused_where_it_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mailboxes_made_device_2(monkeypatch)
    scenario = parse_scenario(MAILBOXES, source="mailboxes.toml")
    with pytest.raises(BaseException) as caught:  # (out of trio's nurseries, maybe in a group)
        trio.run(_run_live, scenario, tmp_path, MAILBOX_SCALE, None)
    assert any("opened by amira/1 is device 2 of its account" in m for m in _messages(caught.value)), (
        caught.value
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda e: e.pop("message"), "'message'"),  # read as "an envelope that is no written message"
        (lambda e: e.pop("device"), "'device'"),  # read as "?"
        (lambda e: e.update(message="2"), "message: '2'"),
        (lambda e: e.update(device=7), "device: 7"),
        (lambda e: e.update(reason="tired"), "reason: 'tired'"),
    ],
)
def test_a_malformed_unread_record_is_an_error_naming_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any, said: str
) -> None:
    """report.unread_words read an ``undecryptable`` record with ``.get``: one without its ``message``
    was shown as "an envelope that is no written message", without its ``device`` as "?"; now a
    malformed record is an error naming its line, as show's other reads of the transcript are, in show
    and in the HTML report."""
    _refuse_at_the_mailbox(monkeypatch)  # (one undecryptable record: the mailbox's refusal)
    run_to_dir(parse_scenario(MAILBOXES, source="mailboxes.toml"), tmp_path)
    transcript = tmp_path / "transcript.jsonl"
    events = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    (n,) = [i for i, e in enumerate(events, 1) if e["kind"] == "undecryptable"]
    change(events[n - 1])
    transcript.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    with pytest.raises(report.RunFolderError) as shown:
        report.render_show(tmp_path, limit=None)
    assert f"{transcript}: line {n}: an event this version of relaysim does not read" in str(shown.value)
    assert said in str(shown.value)
    from relaysim.sims.reports.html import ReportError

    with pytest.raises(ReportError, match=f"line {n}: "):
        render_report(tmp_path)


# A last text a moment before the end: its acknowledgement is written after the scenario's end, while
# the live driver drains (no receipts: nothing else is sent after it).
_LAST_WORD = """
[scenario]
name = "last-word"
duration = "2m"
seed = 5

[defences]
receipts = "off"

[[people]]
name = "amira"
devices = [{ region = "pk", address = "203.0.113.24" }]

[[people]]
name = "ben"
devices = [{ region = "ca", address = "198.51.100.77" }]

[[conversations]]
between = ["amira", "ben"]
messages = [
  { at = "10s", from = "amira", text = "First" },
  { at = "119s", from = "ben", text = "Last, just before the end" },
]
"""


def test_a_live_run_stops_the_relay_only_once_the_phones_acknowledgements_are_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run's ``relay_queued_at_end == 0`` holds only if the relay answered every
    acknowledgement the phones sent before it stopped: one it never read leaves its envelope queued. The
    live driver waits for that itself, whatever the phones' connections do on closing: its drain waits
    until the relay holds nothing for a phone online (_LiveRun._settled reads the relay's store, where an
    envelope leaves the queue when its acknowledgement is answered). Here the phones' connections close
    without their own wait for answers (DeviceConnection._flush made to return at once), every write is
    late, and the last text reaches the relay after the scenario's end: the relay holds nothing at the end
    of the wait (without _settled's look at the relay's queue the relay stopped before the last
    acknowledgement reached it: one envelope left). The ledger counts the envelopes as they stood at the
    scenario's end, as the simulator does (docs/protocol.md): the last text, which the relay accepted
    after the end, is none of its envelopes (before, both were counted, as read); the first, acknowledged before
    the end, is delivered."""
    from relaysim.clients import net

    async def no_flush(self: Any, timeout: float) -> None:
        return None

    write = net.DeviceConnection._write

    async def slow_write(self: Any, stream: Any, data: bytes) -> None:
        await trio.sleep(0.1)  # every write late: an acknowledgement among them, still unwritten at first
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_flush", no_flush)
    monkeypatch.setattr(net.DeviceConnection, "_write", slow_write)
    scenario = parse_scenario(_LAST_WORD, source="last-word.toml")
    result = _live(scenario, tmp_path, 0.02)
    people = result.envelopes["people"]
    # (the last text, read after the end too, is counted as of the end: still in flight)
    first, last = result.messages
    assert first.delivered and first.accepted_at is not None and not last.delivered, result.messages
    assert result.queued_at_end == 0
    assert result.relay_records.get("send", 0) + result.relay_records.get("sealed_send", 0) == 2
    assert people == {**dict.fromkeys(ENVELOPE_FATES, 0), "sent": 1, "delivered": 1}, people


def test_a_live_run_counts_its_messages_as_they_stood_at_the_scenario_s_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben's last text reaches the relay after the scenario's end, and amira reads it while the run waits.
    The simulator (the reference: the same scenario ending while the text is on its way) stops at the end:
    the text not accepted, not read, still in flight; one envelope, read. The live run's ``envelopes``
    counted so, but its ``messages`` counted the text accepted and read (2 device deliveries, 0 still in
    flight), its transcript had its ``message_received``, and nothing said the relay's second send record
    was left out of ``envelopes``. Now ``messages`` is counted as of the end, as ``envelopes`` is: the two
    agree with the simulator's, and ``live`` says what happened after the end, the transcript too."""
    from relaysim.clients import net

    ending = _LAST_WORD.replace('"2m"', '"119.001s"', 1)  # the simulated text still on its way at the end
    simulated = report.summarise(Simulation(parse_scenario(ending, source="last-word.toml")).run())
    assert (simulated["messages"]["accepted_by_relay"], simulated["messages"]["device_deliveries"]) == (1, 1)

    write = net.DeviceConnection._write

    async def slow_write(self: Any, stream: Any, data: bytes) -> None:
        await trio.sleep(
            0.1
        )  # every write 5 simulated seconds late: ben's last text reaches the relay after the end
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", slow_write)
    scenario = parse_scenario(_LAST_WORD, source="last-word.toml")
    assert run_live(scenario, tmp_path, time_scale=0.02, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    m, people, live, records = (
        summary["messages"],
        summary["envelopes"]["people"],
        summary["live"],
        summary["relay_records"],
    )
    for key in (
        "accepted_by_relay",
        "device_deliveries",
        "still_queued_or_in_flight",
        "device_deliveries_expected",
    ):
        assert m[key] == simulated["messages"][key], (key, m, simulated["messages"])
    assert people == simulated["envelopes"]["people"], (people, simulated["envelopes"])
    # what happened after the end is said apart from the counts, and reconciles with the relay's records
    assert live["drain_ran_out"] is None
    assert (live["messages_accepted_after_end"], live["device_deliveries_after_end"]) == (1, 1), live
    assert live["envelopes_after_end"] == 1, live
    assert records["send"] + records.get("sealed_send", 0) - live["envelopes_after_end"] == people["sent"]
    # each message read by the end has its envelope read or still queued at the end
    assert people["delivered"] + people["unread"] >= m["device_deliveries"]
    events = [
        json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    kinds = [(e["kind"], e["message"]) for e in events if e["kind"].startswith("message_")]
    assert kinds.count(("message_received_after_end", 2)) == 1, kinds
    assert kinds.count(("message_accepted_after_end", 2)) == 1, kinds
    assert ("message_received", 2) not in kinds and ("message_accepted", 2) not in kinds, kinds
    late = next(e for e in events if e["kind"] == "message_received_after_end")
    assert late["t"] > scenario.duration and late["device"] == "amira/1", late
    assert report.run_disagreements(tmp_path) == []  # the transcript's events are as many as the counts
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert (
        "During the wait after the scenario's end the relay accepted 1 planned message and the phones read 1 "
        "planned message (counted still queued or in flight) and the relay accepted 1 envelope"
    ) in " ".join(text.split()), text


_LAST_TEXT = b"Last, just before the end"


def _amira_reads_the_last_text(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Amira's phone makes of ben's last text of ``_LAST_WORD`` what ``how`` says: "refused" (it decrypted,
    from an identity key the user has not approved), "failed" (it did not decrypt), "twice" (it reads it,
    then reads it again) or "other_text" (it reads another plaintext than the one written)."""
    from relaysim.sims import live

    if how in ("refused", "failed"):
        decrypt = Device._decrypt

        def unreadable(self: Device, peer: Any, ciphertext: bytes, identity: bytes | None) -> bytes:
            plaintext = decrypt(self, peer, ciphertext, identity)
            if self.address.account == "amira" and _LAST_TEXT in plaintext:
                if how == "failed":
                    raise DecryptionError()
                raise UntrustedIdentity(
                    IdentityChanged(peer, b"\x01" * 32, b"\x02" * 32, "message", False, False)
                )
            return plaintext

        monkeypatch.setattr(Device, "_decrypt", unreadable)
        return
    received = live._LiveRun._received

    def reads(self: Any, phone: Any, ev: A.Received, box: Any = None) -> None:
        if ev.plaintext != _LAST_TEXT:
            received(self, phone, ev, box)
        elif how == "twice":
            received(self, phone, ev, box)
            received(self, phone, ev, box)
        else:  # (tied to its message by its envelope: its text no longer says which it is)
            self.envelope_message[ev.envelope_id] = self._match(phone, ev)
            received(self, phone, dataclasses.replace(ev, plaintext=b"not what was written"), box)

    monkeypatch.setattr(live._LiveRun, "_received", reads)


@pytest.mark.parametrize("how", ["refused", "failed", "twice", "other_text"])
def test_a_live_run_counts_what_its_phones_could_not_read_as_it_stood_at_the_scenario_s_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Ben's last text reaches the relay after the scenario's end (every write late), and amira's phone
    cannot read it (refuses it, or fails to decrypt it), reads it twice, or reads another plaintext, while
    the run waits. The simulator (the reference: the same scenario ending with the text on its way) stops
    at the end and sees none of it. The live run counted it all the same (``undecryptable`` 1, a refusal,
    a duplicate dropped, a plaintext mismatch), its transcript an ``undecryptable`` or
    ``duplicate_dropped`` record, where its messages and envelopes were counted as of the end. Now these
    are counted as of the end too, as the simulator's, and summary.json's ``live.after_end`` says what
    came after (its record an ``undecryptable_after_end`` or ``duplicate_dropped_after_end``)."""
    from relaysim.clients import net
    from relaysim.sims import live

    keys = ("duplicates_dropped", "undecryptable", "refused", "plaintext_mismatches")
    _amira_reads_the_last_text(monkeypatch, how)
    ending = _LAST_WORD.replace('"2m"', '"119.001s"', 1)  # the simulated text still on its way at the end
    simulated = report.summarise(Simulation(parse_scenario(ending, source="last-word.toml")).run())
    assert all(simulated["messages"][k] in (0, dict.fromkeys(A.REFUSAL_REASONS, 0)) for k in keys)

    write = net.DeviceConnection._write

    async def slow_write(self: Any, stream: Any, data: bytes) -> None:
        await trio.sleep(0.1)  # 5 simulated seconds: ben's last text reaches the relay after the end
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", slow_write)
    # (a text amira's phone could not read is one the wait after the end waits for to the last: not long)
    monkeypatch.setattr(live, "DRAIN_TIMEOUT", 2.0)
    scenario = parse_scenario(_LAST_WORD, source="last-word.toml")
    assert run_live(scenario, tmp_path, time_scale=0.02, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    m = summary["messages"]
    assert {k: m[k] for k in keys} == {k: simulated["messages"][k] for k in keys}, (m, simulated["messages"])
    after = summary["live"]["after_end"]  # (what came after the end, said apart)
    says: dict[str, dict[str, Any]] = {
        "refused": {"refused": {**dict.fromkeys(A.REFUSAL_REASONS, 0), A.UNTRUSTED_IDENTITY: 1}},
        "failed": {"undecryptable": 1},
        "twice": {"duplicates_dropped": 1},
        "other_text": {"plaintext_mismatches": 1},
    }
    said = says[how]
    assert after == {
        **dict.fromkeys(("duplicates_dropped", "undecryptable", "sync_copies_read"), 0),
        "refused": dict.fromkeys(A.REFUSAL_REASONS, 0),
        "plaintext_mismatches": 0,
        "receipts_received": 0,
        **said,
    }, after
    events = [
        json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    unread = [
        (e["kind"], e["message"]) for e in events if e["kind"].startswith(("undecryptable", "duplicate"))
    ]
    record = {"refused": "undecryptable", "failed": "undecryptable", "twice": "duplicate_dropped"}.get(how)
    assert unread == ([(f"{record}_after_end", 2)] if record else []), unread
    assert all(e["t"] > scenario.duration for e in events if e["kind"].endswith("_after_end"))
    assert report.run_disagreements(tmp_path) == []
    words = " ".join((tmp_path / "summary.md").read_text(encoding="utf-8").split())
    assert {
        "refused": "the phones refused 1 envelope",
        "failed": "the phones could not decrypt 1 envelope",
        "twice": "the phones dropped 1 duplicate",
        "other_text": "the phones read 1 plaintext other than planned",
    }[how] in words, words


# A phone that reads a text and loses its network before its acknowledgement reaches the relay, and
# stays offline to the end: ``%s`` is its offline window.
_GONE = """
[scenario]
name = "gone"
duration = "2m"
seed = 5

[defences]
receipts = "off"

[[people]]
name = "amira"
devices = [{ region = "pk", address = "203.0.113.24" }]

[[people]]
name = "ben"
devices = [{ region = "ca", address = "198.51.100.77", offline = [[%s, "5m"]] }]

[[conversations]]
between = ["amira", "ben"]
messages = [{ at = "10s", from = "amira", text = "Read, then gone" }]
"""


def test_both_drivers_count_an_envelope_read_by_a_phone_gone_before_its_acknowledgement_as_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben reads the text, then goes offline before his acknowledgement reaches the relay, and is offline
    at the end: the relay still holds the envelope. The simulated run (the reference) counts it unread, not
    delivered, whatever the phone read (message_received): its ledger is the relay's (an envelope is
    delivered once the relay has its acknowledgement; what it still holds at the end is unread). The live
    run counts it so too (its phone keeps the acknowledgement to write after its next login, which never
    comes): one run counted one way by both drivers."""
    from relaysim.clients import net

    read_at = (
        Simulation(parse_scenario(_GONE % '"100s"', source="gone.toml")).run().messages[0].delivered["ben/1"]
    )
    # offline a millisecond after reading: the acknowledgement is still on its way
    simulated = Simulation(parse_scenario(_GONE % (read_at + 0.001), source="gone.toml")).run()
    assert simulated.messages[0].delivered["ben/1"] == read_at
    assert simulated.queued_at_end == 1
    gone = {**dict.fromkeys(ENVELOPE_FATES, 0), "sent": 1, "unread": 1}
    assert simulated.envelopes_by_device["ben/1"] == gone

    write = net.DeviceConnection._write

    async def ben_writes_late(self: Any, stream: Any, data: bytes) -> None:
        if self._name.startswith("ben."):
            await trio.sleep(0.4)  # 20 simulated seconds: his acknowledgement unwritten when he goes offline
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", ben_writes_late)
    # (offline 10 simulated seconds after the send, 200 ms of real time: the envelope reaches him before,
    # on a busy machine too, where 2 simulated seconds, 40 ms, were not always enough)
    live = _live(parse_scenario(_GONE % '"20s"', source="gone.toml"), tmp_path, 0.02)
    events = list(live.messages[0].delivered.items())
    assert [name for name, _t in events] == ["ben/1"] and events[0][1] < 20, live.messages
    assert live.queued_at_end == 1
    assert live.envelopes_by_device["ben/1"] == gone, live.envelopes_by_device


# A text ben reads just before the run's end: ``%s`` is the run's duration.
_LAST_READ = """
[scenario]
name = "last-read"
duration = %s
seed = 5

[defences]
receipts = "off"

[[people]]
name = "amira"
devices = [{ region = "pk", address = "203.0.113.24" }]

[[people]]
name = "ben"
devices = [{ region = "ca", address = "198.51.100.77" }]

[[conversations]]
between = ["amira", "ben"]
messages = [{ at = "110s", from = "amira", text = "Read just before the end" }]
"""


def test_both_drivers_count_an_envelope_whose_acknowledgement_is_in_flight_at_the_end_as_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben reads the text just before the run's end; his acknowledgement is still on its way to the relay
    when the end comes. The simulator (the reference) stops at the end: the relay still holds the envelope
    then, counted unread. The live driver waited after the end until the relay held nothing for a phone
    online (_LiveRun._settled), the acknowledgement reached the relay after the end and the envelope was
    counted delivered. Now the live run counts the envelopes as they stood at the end, by the relay's
    records' times (an acknowledgement recorded after the end is not one, docs/protocol.md): unread in
    both."""
    from relaysim.clients import net

    read_at = (
        Simulation(parse_scenario(_LAST_READ % '"10m"', source="last-read.toml"))
        .run()
        .messages[0]
        .delivered["ben/1"]
    )
    # the end a millisecond after he read it: the acknowledgement is still on its way
    simulated = Simulation(
        parse_scenario(_LAST_READ % f'"{read_at + 0.001}s"', source="last-read.toml")
    ).run()
    assert simulated.messages[0].delivered["ben/1"] == read_at
    in_flight = {**dict.fromkeys(ENVELOPE_FATES, 0), "sent": 1, "unread": 1}
    assert simulated.envelopes_by_device["ben/1"] == in_flight, simulated.envelopes_by_device

    write = net.DeviceConnection._write

    async def ben_writes_late(self: Any, stream: Any, data: bytes) -> None:
        if self._name.startswith("ben."):
            await trio.sleep(0.4)  # 20 simulated seconds: his acknowledgement written after the end
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", ben_writes_late)
    # the end 10 simulated seconds after the send (200 ms of real time): the envelope reaches him before
    live = _live(parse_scenario(_LAST_READ % '"120s"', source="last-read.toml"), tmp_path, 0.02)
    events = list(live.messages[0].delivered.items())
    assert [name for name, _t in events] == ["ben/1"] and events[0][1] < 120, live.messages
    assert live.envelopes_by_device["ben/1"] == in_flight, live.envelopes_by_device


def test_both_drivers_count_a_receipt_in_flight_at_the_end_as_not_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben reads amira's text just before the end and his phone sends her a delivery receipt, still on its
    way at the end. The simulator (the reference) stops there: one receipt sent, none received. The live
    driver's wait after the end carried it to amira's phone, and its ``receipts_received`` counted it, a
    ``receipt_received`` in its transcript. Now the live run counts the receipts as of the end, as the
    simulator does, and says apart what came after (summary.json's ``live.after_end``, a
    ``receipt_received_after_end`` record)."""
    from relaysim.clients import net
    from relaysim.sims import live

    text = _LAST_READ.replace('receipts = "off"', 'receipts = "on"', 1)
    read_at = Simulation(parse_scenario(text % '"10m"', source="last-read.toml")).run().messages[0].delivered
    # the end a millisecond after he read it: his receipt is still on its way
    simulated = Simulation(
        parse_scenario(text % f'"{read_at["ben/1"] + 0.001}s"', source="last-read.toml")
    ).run()
    assert (simulated.control["receipts_sent"], simulated.control["receipts_received"]) == (1, 0)

    write = net.DeviceConnection._write

    async def ben_writes_late(self: Any, stream: Any, data: bytes) -> None:
        if self._name.startswith("ben."):
            await trio.sleep(0.4)  # 20 simulated seconds: his receipt reaches the relay after the end
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", ben_writes_late)
    result: list[Any] = []
    run = live._run_live

    async def kept(*args: Any) -> Any:
        result.append(await run(*args))
        return result[-1]

    monkeypatch.setattr(live, "_run_live", kept)
    # the end 10 simulated seconds after the send (200 ms of real time): the text reaches him before
    scenario = parse_scenario(text % '"120s"', source="last-read.toml")
    assert run_live(scenario, tmp_path, time_scale=0.02, quiet=True) == 0
    (outcome,) = result
    assert [name for name, t in outcome.result.messages[0].delivered.items() if t < 120] == ["ben/1"]
    assert outcome.result.control == simulated.control, (outcome.result.control, simulated.control)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["live"]["after_end"]["receipts_received"] == 1, summary["live"]
    events = [
        json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    receipts = [(e["kind"], e["device"], e["t"] > 120) for e in events if e["kind"].startswith("receipt_")]
    assert receipts == [("receipt_received_after_end", "amira/1", True)], receipts
    assert report.run_disagreements(tmp_path) == []
    assert "the phones received 1 receipt" in " ".join(
        (tmp_path / "summary.md").read_text(encoding="utf-8").split()
    )


def _ledger_run(profile: Any) -> Any:
    """A live run's ledger alone (_LiveRun._envelope_rows: no relay process, no phones), under ``profile``:
    a 100-second scenario whose t = 0 is the relay's clock's 1000.0, at 0.01 real seconds a second (its
    end is then the relay's 1001.0)."""
    from relaysim.sims.live import _LiveRun

    run = _LiveRun.__new__(_LiveRun)
    run.scenario = dataclasses.replace(resolve_scenario("two-friends"), duration=100.0)
    run.profile, run.wall_t0, run.time_scale = profile, 1000.0, 0.01
    run.envelope_message, run.messages, run._unread, run._read_again = {}, {}, [], []
    run.envelopes_not_counted, run.envelopes_after_end = None, None
    return run


def test_a_live_run_counts_each_envelope_as_it_stood_at_the_scenario_s_end() -> None:
    """The relay's records of ben's four envelopes, by their times: one accepted and acknowledged before
    the end (delivered), one acknowledged after it (unread: in flight at the end, as the simulator,
    which stops there, counts it), one accepted after it (none of the run's: a send still on its way at
    the end, which the simulated relay never accepted) and one still queued (unread). The live ledger
    counted every record the relay made while the run waited after the end: 4 sent, 3 delivered."""
    from relaysim.relay.metadata import MetadataRecord, RecordKind
    from relaysim.relay.profiles import KEEP_EVERYTHING_PROFILE
    from relaysim.relay.store import StoredEnvelope

    def send(eid: bytes, t: float) -> MetadataRecord:
        return MetadataRecord(
            RecordKind.SEND,
            t,
            account="amira",
            device=1,
            recipient_account="ben",
            recipient_device=1,
            envelope_id=eid,
        )

    def ack(eid: bytes, t: float) -> MetadataRecord:
        return MetadataRecord(RecordKind.ACKNOWLEDGEMENT, t, account="ben", device=1, envelope_id=eid)

    read, in_flight, late, queued = (bytes([i]) * 16 for i in range(1, 5))
    records = [
        send(read, 1000.5),
        ack(read, 1000.6),
        send(in_flight, 1000.9),
        send(queued, 1000.95),
        ack(in_flight, 1001.0 + 1e-3),
        send(late, 1001.1),
        ack(late, 1001.2),
    ]
    left = [StoredEnvelope(queued, "ben", 1, b"", 1000950, False, "amira", 1)]
    run = _ledger_run(KEEP_EVERYTHING_PROFILE)
    rows = run._envelope_rows(records, left)
    assert rows == {"ben/1": {**dict.fromkeys(ENVELOPE_FATES, 0), "sent": 3, "delivered": 1, "unread": 2}}
    # the send record left out, said (summary.json's live.envelopes_after_end): 4 records - 1 = 3 sent
    assert run.envelopes_after_end == 1


def test_a_live_run_under_a_profile_that_rounds_the_times_of_its_records_says_it_counted_none() -> None:
    """A live run counts each envelope as it stood at the scenario's end, by its records' exact times: a
    profile that keeps every acknowledgement but only its day cannot say which came before the end, and
    the run says so rather than count them all as before it."""
    from relaysim.relay.metadata import RecordKind, RetentionPolicy
    from relaysim.relay.profiles import KEEP_EVERYTHING, KEEP_EVERYTHING_PROFILE

    rules = dict(KEEP_EVERYTHING.rules)
    kind = RecordKind.ACKNOWLEDGEMENT
    rules[kind] = dataclasses.replace(rules[kind], granularity={"time": 86400.0})
    profile = dataclasses.replace(KEEP_EVERYTHING_PROFILE, policy=RetentionPolicy("days", rules))
    run = _ledger_run(profile)
    assert run._envelope_rows([], []) is None
    assert run.envelopes_after_end is None  # (none counted: none said to be left out)
    assert run.envelopes_not_counted == (
        "the keep-everything profile keeps no acknowledgement record of every one naming the device, the "
        "envelope and the exact time (account, device, envelope_id, time), which a live run counts the "
        "envelopes from"
    )


def test_a_live_run_counts_its_messages_as_they_stood_at_the_end_by_its_records_or_its_phones() -> None:
    """_LiveRun._messages_by_the_end on four texts of a 100-second scenario (the relay's clock 1000.0 to
    1001.0): one accepted and read before the end; one the relay accepted before it, read after it; one
    accepted and read after it (none of the run's counts, said apart); and, where the profile keeps no
    exact record of a send, one whose sender heard of it after the end but whose recipient read it before
    (the relay had it then). Each event after the end is renamed, and counted apart."""
    from relaysim.relay.metadata import MetadataRecord, RecordKind
    from relaysim.relay.profiles import KEEP_EVERYTHING_PROFILE
    from relaysim.sims.world.simulation import MessageState
    from relaysim.sims.world.traffic import PlannedMessage

    def state(mid: int, accepted: float, read: float) -> MessageState:
        s = MessageState(PlannedMessage(mid, 1.0, "amira", "ben", "text"), ("ben/1",))
        s.sent_at, s.accepted_at, s.envelope_ids = 1.0, accepted, (bytes([mid]) * 16,)
        s.delivered["ben/1"] = read
        return s

    def send(mid: int, t: float) -> MetadataRecord:
        eid = bytes([mid]) * 16
        return MetadataRecord(
            RecordKind.SEND,
            t,
            account="amira",
            device=1,
            recipient_account="ben",
            recipient_device=1,
            envelope_id=eid,
        )

    def events(run: Any) -> list[tuple[str, int]]:
        return [(e["kind"], e["message"]) for e in run.events]

    run = _ledger_run(KEEP_EVERYTHING_PROFILE)
    run.messages = {1: state(1, 50.0, 60.0), 2: state(2, 101.0, 102.0), 3: state(3, 101.0, 102.0)}
    run.events = [
        {"kind": kind, "message": mid, "device": "ben/1"}
        for mid in (1, 2, 3)
        for kind in ("message_accepted", "message_received")
    ]
    run.device_deliveries_after_end = run.messages_accepted_after_end = 0
    # message 2's send recorded before the end (its answer reached amira after it), message 3's after
    run._messages_by_the_end(
        {
            s.envelope_ids[0]: [send(mid, t)]
            for (mid, s), t in zip(run.messages.items(), (1000.5, 1000.99, 1001.01), strict=True)
        }
    )
    assert [dict(s.delivered) for s in run.messages.values()] == [{"ben/1": 60.0}, {}, {}]
    assert [s.accepted_at for s in run.messages.values()] == [50.0, 101.0, None]
    assert events(run) == [
        ("message_accepted", 1),
        ("message_received", 1),
        ("message_accepted", 2),
        ("message_received_after_end", 2),
        ("message_accepted_after_end", 3),
        ("message_received_after_end", 3),
    ]
    assert (run.messages_accepted_after_end, run.device_deliveries_after_end) == (1, 2)

    # a profile that keeps no exact record of a send: by the phones, the sender's word or the recipient's
    run = _ledger_run(KEEP_EVERYTHING_PROFILE)
    run.envelopes_not_counted = "(none kept)"
    run.messages = {1: state(1, 101.0, 99.0), 2: state(2, 101.0, 102.0)}
    run.events = [{"kind": "message_accepted", "message": mid} for mid in (1, 2)]
    run.device_deliveries_after_end = run.messages_accepted_after_end = 0
    run._messages_by_the_end({})
    assert [s.accepted_at for s in run.messages.values()] == [101.0, None]
    assert events(run) == [("message_accepted", 1), ("message_accepted_after_end", 2)]


def test_a_live_run_counts_a_message_the_relay_had_before_the_end_by_any_of_its_envelopes() -> None:
    """_LiveRun._messages_by_the_end went by the send records of the envelopes of the first answer that
    reached the sender (``MessageState.envelope_ids``: for a group message, its first member account's
    part). Where that answer was of a copy sent again after a dropped connection, the relay having
    accepted the copy before, whose answer was lost, before the end, and ben having read that one before
    the end, the message was counted accepted after the end though read before it (read, never
    accepted). Now any envelope of the message the run knows of (every part's, every copy a phone read)
    counts: accepted by the end, read by the end."""
    from relaysim.relay.metadata import MetadataRecord, RecordKind
    from relaysim.relay.profiles import KEEP_EVERYTHING_PROFILE
    from relaysim.sims.world.simulation import MessageState
    from relaysim.sims.world.traffic import PlannedMessage

    def send(eid: bytes, t: float) -> MetadataRecord:
        return MetadataRecord(
            RecordKind.SEND,
            t,
            account="amira",
            device=1,
            recipient_account="ben",
            recipient_device=1,
            envelope_id=eid,
        )

    first, again = b"\x01" * 16, b"\x02" * 16
    state = MessageState(PlannedMessage(1, 1.0, "amira", "ben", "text"), ("ben/1",))
    # the answer amira heard (after the end) was for the copy sent again; ben read the first copy at 60 s
    state.sent_at, state.accepted_at, state.envelope_ids = 1.0, 101.0, (again,)
    state.delivered["ben/1"] = 60.0
    run = _ledger_run(KEEP_EVERYTHING_PROFILE)
    run.messages, run.envelope_message = {1: state}, {again: 1, first: 1}
    run.events = [{"kind": "message_accepted", "message": 1}, {"kind": "message_received", "message": 1}]
    run.events[1]["device"] = "ben/1"
    run.device_deliveries_after_end = run.messages_accepted_after_end = 0
    run._messages_by_the_end({first: [send(first, 1000.5)], again: [send(again, 1001.01)]})
    assert (state.accepted_at, dict(state.delivered)) == (101.0, {"ben/1": 60.0})
    assert [e["kind"] for e in run.events] == ["message_accepted", "message_received"]
    assert run.messages_accepted_after_end == 0


def test_a_live_run_counts_what_its_phones_saw_as_it_stood_at_the_end(tmp_path: Path) -> None:
    """_LiveRun.result on what the phones saw on either side of a 100-second scenario's end: a copy read
    again, an envelope that did not decrypt, one refused, a sync copy, a receipt and a plaintext other
    than planned, each before the end and again after it. The counts take those before the end (the
    simulator, stopped there, sees no others); the others are summary.json's ``live.after_end``, their
    records renamed ``<kind>_after_end``, the late sync copy out of ``synced``."""
    from types import SimpleNamespace

    from relaysim.relay.profiles import KEEP_EVERYTHING_PROFILE
    from relaysim.relay.store import Store

    run = _ledger_run(KEEP_EVERYTHING_PROFILE)
    ids = [bytes([i]) * 16 for i in range(1, 5)]
    run.events = [
        {"t": t, "kind": kind, "device": device, "message": mid}
        for t, kind, device, mid in (
            (10.0, "duplicate_dropped", "ben/1", 1),
            (20.0, "sync_copy_received", "amira/2", 1),
            (30.0, "receipt_received", "amira/1", None),
            (101.0, "duplicate_dropped", "ben/1", 2),
            (102.0, "sync_copy_received", "amira/2", 2),
            (103.0, "sync_copy_received", "amira/2", None),  # (a plaintext other than any sent)
            (104.0, "receipt_received", "amira/1", None),
        )
    ]
    run._unread = [
        ("ben/1", ids[0], 40.0, A.DECRYPTION_FAILED, "ben/1"),
        ("ben/1", ids[1], 50.0, A.UNTRUSTED_IDENTITY, "ben/1"),
        ("ben/1", ids[2], 105.0, A.DECRYPTION_FAILED, "ben/1"),
        ("ben/1", ids[3], 106.0, A.UNTRUSTED_IDENTITY, "ben/1"),
    ]
    run.duplicates_dropped, run._read_again = 2, [("ben/1", b"\x09" * 16), ("ben/1", b"\x0a" * 16)]
    run._mismatched = [60.0, 103.0]
    run.synced = {1: {"amira/2": 20.0}, 2: {"amira/2": 102.0}}
    run.control = dict.fromkeys(("receipts_sent", "cover_sent", "fresh_connections", "moves"), 0)
    run.control["receipts_received"] = 2
    run._control_accepted, run.timeline = [], SimpleNamespace(disclosures=[])
    run.device_deliveries_after_end = run.messages_accepted_after_end = 0
    Store(tmp_path / "relay.db").close()
    result = run.result(tmp_path / "relay.db")
    assert result.synced == {1: {"amira/2": 20.0}}, result.synced
    assert result.control["receipts_received"] == 1
    one = {A.UNTRUSTED_IDENTITY: 1, A.SEALED_SENDER_SELF_SEND: 0}
    assert (result.duplicates_dropped, result.undecryptable, result.refused, result.mismatched) == (
        1,
        1,
        one,
        1,
    )
    assert run.after_end == {
        "duplicates_dropped": 1,
        "undecryptable": 1,
        "refused": one,
        "sync_copies_read": 1,
        "plaintext_mismatches": 1,
        "receipts_received": 1,
    }
    assert [(e["t"], e["kind"]) for e in run.events] == [
        (10.0, "duplicate_dropped"),
        (20.0, "sync_copy_received"),
        (30.0, "receipt_received"),
        (40.0, "undecryptable"),
        (50.0, "undecryptable"),
        (101.0, "duplicate_dropped_after_end"),
        (102.0, "sync_copy_received_after_end"),
        (103.0, "sync_copy_received_after_end"),
        (104.0, "receipt_received_after_end"),
        (105.0, "undecryptable_after_end"),
        (106.0, "undecryptable_after_end"),
    ]


def _ben_cannot_read_it(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Ben's phone does not read the text of ``_GONE``, in either driver: "refused" (it decrypted, from an
    identity key the user has not approved, as ``Device`` refuses one under ``identity_changes = "block"``)
    or "failed" (it did not decrypt)."""
    decrypt = Device._decrypt

    def unreadable(self: Device, peer: Any, ciphertext: bytes, identity: bytes | None) -> bytes:
        plaintext = decrypt(self, peer, ciphertext, identity)
        if self.address.account == "ben" and b"Read, then gone" in plaintext:
            if how == "failed":
                raise DecryptionError()
            raise UntrustedIdentity(
                IdentityChanged(peer, b"\x01" * 32, b"\x02" * 32, "message", False, False)
            )
        return plaintext

    monkeypatch.setattr(Device, "_decrypt", unreadable)


@pytest.mark.parametrize("how", ["refused", "failed"])
def test_both_drivers_count_an_envelope_a_phone_could_not_read_and_left_unacknowledged_as_unread_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Ben's phone cannot read the text (refuses it, or fails to decrypt it), then goes offline before its
    acknowledgement reaches the relay, and is offline at the end: the relay still holds the envelope.
    Both drivers counted it twice, in the phone's column (``refused`` or ``undecryptable``) and in
    ``unread``, and ``delivered`` = acknowledged - those columns came out -1: the row summed to 1 with
    -1 delivered. Now what a phone reported of an envelope is counted once the relay has its
    acknowledgement (docs/protocol.md): this one is unread alone, in both drivers."""
    from relaysim.clients import net

    read_at = (
        Simulation(parse_scenario(_GONE % '"100s"', source="gone.toml")).run().messages[0].delivered["ben/1"]
    )
    _ben_cannot_read_it(monkeypatch, how)
    gone = {**dict.fromkeys(ENVELOPE_FATES, 0), "sent": 1, "unread": 1}
    simulated = Simulation(parse_scenario(_GONE % (read_at + 0.001), source="gone.toml")).run()
    column = "refused" if how == "refused" else "undecryptable"
    # the phone did report it (the run's messages count it), and the relay still holds it
    assert (sum(simulated.refused.values()) if how == "refused" else simulated.undecryptable) == 1
    assert simulated.queued_at_end == 1
    assert simulated.envelopes_by_device["ben/1"] == gone, (column, simulated.envelopes_by_device)

    write = net.DeviceConnection._write

    async def ben_writes_late(self: Any, stream: Any, data: bytes) -> None:
        if self._name.startswith("ben."):
            await trio.sleep(0.4)  # 20 simulated seconds: his acknowledgement unwritten when he goes offline
        await write(self, stream, data)

    monkeypatch.setattr(net.DeviceConnection, "_write", ben_writes_late)
    # (offline 10 simulated seconds after the send, 200 ms of real time: the envelope reaches him before)
    live = _live(parse_scenario(_GONE % '"20s"', source="gone.toml"), tmp_path, 0.02)
    assert (sum(live.refused.values()) if how == "refused" else live.undecryptable) == 1
    assert live.queued_at_end == 1
    assert live.envelopes_by_device["ben/1"] == gone, (column, live.envelopes_by_device)


# Two people, one phone each; ``{messages}``: the texts, ``{offline}``: each phone's offline windows.
_SMALL = """
[scenario]
name = "small"
duration = "{duration}s"
seed = {seed}

[[people]]
name = "amira"
devices = [{{ region = "pk", address = "203.0.113.24", offline = {amira} }}]

[[people]]
name = "ben"
devices = [{{ region = "ca", address = "198.51.100.77", offline = {ben} }}]

[[conversations]]
between = ["amira", "ben"]
messages = [{messages}]
"""

_UNREADABLE = b"[unreadable]"


@st.composite
def _small_runs(draw: st.DrawFn) -> str:
    """A small scenario whose phones go offline (and the run ends) close after a text reaches them, some
    texts unreadable (``_UNREADABLE``: refused or not decrypted, ``_unreadable_texts``), so that an
    acknowledgement is often still on its way when its phone goes, or when the run ends."""
    n = draw(st.integers(1, 4))
    at = sorted(draw(st.lists(st.floats(1, 60), min_size=n, max_size=n)))
    senders = draw(st.lists(st.sampled_from(["amira", "ben"]), min_size=n, max_size=n))
    unreadable = draw(st.lists(st.sampled_from(["", " [unreadable]"]), min_size=n, max_size=n))
    messages = ", ".join(
        f'{{ at = "{t:.3f}s", from = "{who}", text = "m{i}{bad}" }}'
        for i, (t, who, bad) in enumerate(zip(at, senders, unreadable, strict=True))
    )
    duration = at[-1] + draw(st.floats(0.05, 0.6))
    offline = {}
    for person in ("amira", "ben"):
        i = draw(st.integers(0, n))  # offline just after which text (n: none)
        start = at[i] + draw(st.floats(0, 0.6)) if i < n else duration
        back = start + draw(st.sampled_from([2, 3600]))  # back soon after, or not before the end
        offline[person] = "[]" if start >= duration else f'[["{start:.3f}s", "{back:.3f}s"]]'
    return _SMALL.format(
        duration=f"{duration:.3f}", seed=draw(st.integers(0, 9)), messages=messages, **offline
    )


def _unreadable_texts(how: str) -> Any:
    """Every phone does not read a text carrying ``_UNREADABLE``: refuses it ("refused", as
    ``_ben_cannot_read_it``) or fails to decrypt it ("failed")."""
    decrypt = Device._decrypt

    def unreadable(self: Device, peer: Any, ciphertext: bytes, identity: bytes | None) -> bytes:
        plaintext = decrypt(self, peer, ciphertext, identity)
        if _UNREADABLE in plaintext:
            if how == "failed":
                raise DecryptionError()
            raise UntrustedIdentity(
                IdentityChanged(peer, b"\x01" * 32, b"\x02" * 32, "message", False, False)
            )
        return plaintext

    return unreadable


def _rows_add_up(rows: dict[str, dict[str, int]], where: str) -> None:
    for name, row in rows.items():
        assert all(row[k] >= 0 for k in ENVELOPE_FATES), (where, name, row)
        assert sum(row[k] for k in _PARTS) == row["sent"], (where, name, row)


@given(text=_small_runs(), how=st.sampled_from(["refused", "failed"]))
def test_every_device_s_row_is_never_negative_and_adds_up_to_what_was_sent(text: str, how: str) -> None:
    """Property: in a run whose phones go offline, or whose end comes, while an acknowledgement is on its
    way, each envelope is counted in one column: every column >= 0 and the columns sum to ``sent``. (An
    unreadable envelope whose acknowledgement never reached the relay was counted both in the phone's
    column and in ``unread``, its row's ``delivered`` -1.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Device, "_decrypt", _unreadable_texts(how))
        result = Simulation(parse_scenario(text, source="small.toml")).run()
    _rows_add_up(result.envelopes_by_device, text)
    assert result.envelopes["people"] == {
        k: sum(r[k] for r in result.envelopes_by_device.values()) for k in ENVELOPE_FATES
    }


@pytest.mark.parametrize("name", sorted(set(builtin_scenarios()) - {"city"}))
def test_every_built_in_scenario_s_rows_are_never_negative_and_add_up(name: str) -> None:
    """The same of each built-in scenario, simulated (city, ~45 s of CPU, is left to its own tests)."""
    scenario = resolve_scenario(name)
    result = Simulation(scenario).run()
    _rows_add_up(result.envelopes_by_device, name)
    for party, row in result.envelopes.items():
        assert all(row[k] >= 0 for k in ENVELOPE_FATES) and sum(row[k] for k in _PARTS) == row["sent"], (
            party,
            row,
        )


class _AgencyUnread(Simulation):
    """A run in which the agency's device (a ghost) does not read the first planned message it decrypts,
    as its agent would report it: ``how`` "failed" (``Undecryptable``, it did not open), "refused"
    (``Undecryptable`` for an identity key the user has not approved: it opened) or "twice" (its
    ``Received`` handed over a second time, as a copy encrypted afresh is read again). ``hit``: the
    ghost's device and the message."""

    how = "failed"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hit: list[tuple[str, int]] = []

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        mid = self.envelope_message.get(event.envelope_id) if type(event) is A.Received else None
        if self.hit or mid is None or d.name not in self.interventions.agency_devices():
            super()._agent_event(d, event, box)
            return
        assert isinstance(event, A.Received)
        self.hit.append((d.name, mid))
        if self.how == "twice":
            super()._agent_event(d, event, box)
            super()._agent_event(d, event, box)
            return
        reason = A.UNTRUSTED_IDENTITY if self.how == "refused" else A.DECRYPTION_FAILED
        super()._agent_event(d, A.Undecryptable(event.envelope_id, event.sealed, reason), box)


def _party_rows_match_their_records(
    env: dict[str, Any], unread: list[dict[str, Any]], agency_device: str
) -> None:
    """summary.json's envelope rows of the people and of the agency (``agency_device``'s records theirs)
    each count what the transcript's unread records say, and sum to what was sent."""
    for party in ("people", "agency"):
        row = env[party]
        records = [e for e in unread if (e["device"] == agency_device) == (party == "agency")]
        assert sum(e["kind"] == "duplicate_dropped" for e in records) == row["duplicates_dropped"], (
            party,
            row,
        )
        assert sum("reason" in e for e in records) == row["refused"], (party, row)
        assert (
            sum(e["kind"] == "undecryptable" and "reason" not in e for e in records) == row["undecryptable"]
        )
        assert sum(row[k] for k in _PARTS) == row["sent"], (party, row)


@pytest.mark.parametrize("how", ["failed", "refused", "twice"])
@pytest.mark.parametrize("name", ["ghost-device", "ghost-participant"])
def test_what_a_ghost_could_not_read_is_transcribed_and_counted_as_the_people_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, how: str
) -> None:
    """A ghost's (ghost-device's omar/2, ghost-participant's agency phone) ``Undecryptable``, refused or
    failed, was counted in summary.json's ``envelopes`` (the agency's) but written to no ``undecryptable``
    transcript record, as the people's are; and a message it decrypted a second time was counted
    delivered, where Simulation._received counts a person's read-again copy a duplicate dropped, with its
    record. Now each is counted as the people's would be, with the people's record naming the ghost's
    device, and the transcript's records are as many as summary.json's counts, party by party."""
    made: list[_AgencyUnread] = []

    def simulation(*args: Any, **kwargs: Any) -> _AgencyUnread:
        made.append(type("Sim", (_AgencyUnread,), {"how": how})(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(report, "Simulation", simulation)
    run_to_dir(resolve_scenario(name), tmp_path)
    ((ghost, mid),) = made[0].hit
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    env = summary["envelopes"]
    assert env["agency_devices"] == [ghost]
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    unread = [e for e in map(json.loads, lines) if e["kind"] in ("undecryptable", "duplicate_dropped")]
    mine = [e for e in unread if e["device"] == ghost]
    kind = "duplicate_dropped" if how == "twice" else "undecryptable"
    expected = {"t", "at", "kind", "device", "message"} | ({"reason"} if how == "refused" else set())
    assert [(e["kind"], e["message"], set(e)) for e in mine] == [(kind, mid, expected)], mine
    if how == "refused":
        assert mine[0]["reason"] == A.UNTRUSTED_IDENTITY
    fate = {"failed": "undecryptable", "refused": "refused", "twice": "duplicates_dropped"}[how]
    assert env["agency"][fate] == 1, env
    _party_rows_match_their_records(env, unread, ghost)
    # the ghost read the message once (a second read is no second message read)
    (data,) = [json.loads(f.read_text(encoding="utf-8")) for f in (tmp_path / "exceptional").glob("*.json")]
    assert (mid in data["read"]) == (how == "twice"), data["read"]
    # its report counts what it could not read as summary.json does (ghost-participant.json had no counts)
    assert data["undecryptable"] == env["agency"]["undecryptable"], data
    assert data["refused"] == {
        reason: sum(e.get("reason") == reason for e in mine) for reason in A.REFUSAL_REASONS
    }, data
    assert sum(data["refused"].values()) == env["agency"]["refused"], data
    # its markdown report says the counts its JSON has (neither ghost report's did)
    (md,) = [f.read_text(encoding="utf-8") for f in (tmp_path / "exceptional").glob("*.md")]
    said = re.search(
        r"and did not decrypt: (\d+); that it decrypted and refused, unread: (\d+) \(from a changed "
        r"identity key the user has not approved: (\d+); sealed under its own address, a self-send: (\d+)\)\.",
        md,
    )
    assert said is not None, md
    assert [int(n) for n in said.groups()] == [
        data["undecryptable"],
        sum(data["refused"].values()),
        data["refused"][A.UNTRUSTED_IDENTITY],
        data["refused"][A.SEALED_SENDER_SELF_SEND],
    ], (said.group(0), data)
    # relaysim show words each record as the people's
    shown = " ".join(report.render_show(tmp_path, limit=None, width=400).split())
    words = "dropped a second copy of" if how == "twice" else "refused" if how == "refused" else "could not"
    assert f"{ghost} {words}" in shown, shown[-2000:]


class _UnknownReason(Simulation):
    """A run in which the first planned message read by a person's phone (``agency`` False) or by the
    agency's (True) is reported instead as an ``Undecryptable`` with a reason no agent gives."""

    agency = False

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        if (
            type(event) is A.Received
            and self.envelope_message.get(event.envelope_id) is not None
            and ((box or d).name in self.interventions.agency_devices()) == self.agency
        ):
            event = A.Undecryptable(event.envelope_id, event.sealed, "mangled")
        super()._agent_event(d, event, box)


@pytest.mark.parametrize(
    ("name", "agency"),
    [("two-friends", False), ("ghost-device", False), ("ghost-device", True), ("ghost-participant", True)],
)
def test_a_reason_no_agent_gives_is_one_error_naming_it_for_the_people_and_the_agency(
    name: str, agency: bool
) -> None:
    """An ``Undecryptable`` whose reason is none of clients.agent's was a KeyError on the people's path
    (``self.refused[event.reason]``) and counted as a decryption failure, silently, on the agency's
    (Simulation._agency_event, the ghost device's and the ghost participant's own counts). It is a
    programming error: both paths now raise the same ValueError naming it (clients.agent.refusal)."""
    sim = type("Sim", (_UnknownReason,), {"agency": agency})(resolve_scenario(name))
    known = "decryption_failed, untrusted_identity, sealed_sender_self_send"
    with pytest.raises(
        ValueError, match=rf"^Undecryptable\.reason: 'mangled' is none an agent gives \(one of {known}\)$"
    ):
        sim.run()


def test_a_live_run_whose_wait_after_the_end_runs_out_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When DRAIN_TIMEOUT ran out before the relay's queue for the phones online emptied, _LiveRun.run went
    on silently and what the relay still held was counted unread, with nothing saying why. Now summary.json
    (``live.drain_ran_out``), summary.md and stderr say the wait ran out and how many envelopes were still
    queued for phones online then. Here amira's phone never acknowledges: ben's last text stays queued."""
    from relaysim.sims import live

    request = A.DeviceAgent._request

    def no_ack_from_amira(
        self: A.DeviceAgent, frame_type: Any, context: object = None, **fields: Any
    ) -> None:
        if frame_type is wire.Ack and self.device.address.account == "amira":
            return
        request(self, frame_type, context, **fields)

    monkeypatch.setattr(A.DeviceAgent, "_request", no_ack_from_amira)
    monkeypatch.setattr(live, "DRAIN_TIMEOUT", 0.5)
    # (the end 11 simulated seconds after ben's text, 220 ms of real time: the relay has it by then)
    scenario = parse_scenario(_LAST_WORD.replace('"2m"', '"2m10s"', 1), source="last-word.toml")
    assert run_live(scenario, tmp_path, time_scale=0.02, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["live"]["drain_ran_out"] == {"after_real_seconds": 0.5, "queued_for_online_phones": 1}
    assert summary["envelopes"]["people"]["unread"] == 1, summary["envelopes"]
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "the wait after the scenario's end ran out (0.5 real seconds) before the run settled: 1 envelope "
        in err
    )
    assert "1 envelope still queued at the relay" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_a_live_run_that_settles_says_its_wait_did_not_run_out(tmp_path: Path) -> None:
    scenario = parse_scenario(_LAST_WORD, source="last-word.toml")
    assert run_live(scenario, tmp_path, time_scale=0.02, quiet=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["live"]["drain_ran_out"] is None
    assert summary["relay_queued_at_end"] == 0
    # (every text read by the end of the wait; one read during it is counted still in flight, as of the end)
    live = summary["live"]
    assert summary["messages"]["still_queued_or_in_flight"] == live["device_deliveries_after_end"] <= 1, (
        summary
    )
    # (ben's last text may still be on its way, or its acknowledgement, at the end: counted as then)
    people = summary["envelopes"]["people"]
    assert sum(people[k] for k in _PARTS) == people["sent"] and people["dropped_by_relay"] == 0, people


class _Alike(Simulation):
    """A run in which one device, the agency's (``who`` "ghost": ghost-device's omar/2) or a person's
    ("person"), reports of the first planned message it decrypts what its agent could report instead
    (``how``): "undecryptable_after_read" or "refused_after_read" (it read it, then a copy of it did not
    open, or opened and was refused: a copy on a receiving chain it no longer holds), "duplicate_unread"
    (``A.Duplicate`` for it, never read: a message whose skipped key it dropped), "no_planned_message"
    (it read it, then decrypted an envelope of no planned message) or "other_text" (it read another
    plaintext than the one planned). ``hit``: the device and the message."""

    who = "ghost"
    how = "undecryptable_after_read"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hit: list[tuple[str, int]] = []

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        mid = self.envelope_message.get(event.envelope_id) if type(event) is A.Received else None
        agency = self._intervening and d.name in self.interventions.agency_devices()
        if self.hit or mid is None or agency != (self.who == "ghost"):
            super()._agent_event(d, event, box)
            return
        assert isinstance(event, A.Received)
        self.hit.append((d.name, mid))
        if self.how == "duplicate_unread":
            super()._agent_event(d, A.Duplicate(event.envelope_id, event.sealed), box)
            return
        if self.how == "other_text":
            super()._agent_event(d, dataclasses.replace(event, plaintext=b"not what was written"), box)
            return
        super()._agent_event(d, event, box)
        if self.how == "no_planned_message":
            super()._agent_event(d, dataclasses.replace(event, envelope_id=b"\x00" * 16), box)
            return
        reason = A.UNTRUSTED_IDENTITY if self.how == "refused_after_read" else A.DECRYPTION_FAILED
        super()._agent_event(d, A.Undecryptable(event.envelope_id, event.sealed, reason), box)


@pytest.mark.parametrize(
    "how",
    [
        "undecryptable_after_read",
        "refused_after_read",
        "duplicate_unread",
        "no_planned_message",
        "other_text",
    ],
)
@pytest.mark.parametrize("who", ["ghost", "person"])
def test_the_agency_s_device_counts_what_it_could_not_read_as_a_person_s_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, who: str, how: str
) -> None:
    """Simulation._agency_event counted a ghost's ``Undecryptable`` for a message it had read already as
    undecryptable (or refused), where _read_already counts a person's as a duplicate dropped; its
    ``A.Duplicate`` for a message it never read as a duplicate, where a person's is undecryptable; and
    its ``Received`` of an envelope of no planned message, or of another plaintext than the one
    planned, nowhere, where _received counts a person's ``mismatched``. Now each is counted alike, the
    same record in the transcript, and ghost-device.json's counts agree with the ledger's."""
    made: list[_Alike] = []

    def simulation(*args: Any, **kwargs: Any) -> _Alike:
        made.append(type("Sim", (_Alike,), {"who": who, "how": how})(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(report, "Simulation", simulation)
    result, _ = run_to_dir(resolve_scenario("ghost-device"), tmp_path)
    ((device, mid),) = made[0].hit
    assert (device == "omar/2") == (who == "ghost"), device
    env = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["envelopes"]
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    unread = [e for e in map(json.loads, lines) if e["kind"] in ("undecryptable", "duplicate_dropped")]
    mine = [(e["kind"], e["message"], e.get("reason")) for e in unread if e["device"] == device]
    expected = {
        "undecryptable_after_read": [("duplicate_dropped", mid, None)],
        "refused_after_read": [("duplicate_dropped", mid, None)],
        "duplicate_unread": [("undecryptable", mid, None)],
    }.get(how, [])
    assert mine == expected, mine
    assert result.mismatched == (how in ("no_planned_message", "other_text")), result.mismatched
    _party_rows_match_their_records(env, unread, "omar/2")
    ghost = json.loads((tmp_path / "exceptional" / "ghost-device.json").read_text(encoding="utf-8"))
    assert ghost["undecryptable"] == env["agency"]["undecryptable"], (ghost["undecryptable"], env)
    assert sum(ghost["refused"].values()) == env["agency"]["refused"], (ghost["refused"], env)
