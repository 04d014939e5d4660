"""sims.live: scenarios played through a real relay process, every device a real trio client.

Live runs are not deterministic, so these tests check properties, not bytes: every planned
message reaches every device of its recipient exactly once and unchanged, and the relay never
holds or receives plaintext. Each run plays five simulated hours in about four real seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from relaysim.clients.link import DeviceLink
from relaysim.relay import wire
from relaysim.relay.metadata import RecordKind
from relaysim.relay.store import Store
from relaysim.sims import live
from relaysim.sims.cli import main as relaysim
from relaysim.sims.live import RelayStartError, relay_process, run_live
from relaysim.sims.report import render_show, run_to_dir
from relaysim.sims.scenario import Scenario, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation
from relaysim.sims.world.traffic import plan_group_steps, plan_messages
from tests.helpers import BUSY_BOOK_CLUB, MAILBOX_SCALE, MAILBOXES, fresh_connections

TIME_SCALE = 0.0002  # real seconds per simulated second: two-friends' 5 h in 3.6 s
SCALE = 0.0005  # a wider margin, where a test's figures depend on each message's timing: 5 h in 9 s
RUN = 8  # bytes: no run this long of any plaintext may appear in what the relay holds or receives


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]


def _plaintext_runs(plaintexts: list[bytes], blob: bytes) -> list[bytes]:
    """Every RUN-byte slice of any plaintext that occurs in ``blob``."""
    return sorted(
        {p[i : i + RUN] for p in plaintexts for i in range(len(p) - RUN + 1) if p[i : i + RUN] in blob}
    )


def _assert_each_message_arrived_once(scenario: Scenario, out: Path) -> list[dict[str, Any]]:
    events = _events(out)
    planned = {m.id: m for m in plan_messages(scenario)}
    received = [e for e in events if e["kind"] == "message_received"]
    copies = Counter((e["message"], e["device"]) for e in received)
    expected = {
        (m.id, d.name): m.text for m in planned.values() for d in scenario.person(m.recipient).devices
    }
    assert set(copies) == set(expected), "a message missed a device, or went to one it was not for"
    assert set(copies.values()) == {1}, f"some message arrived more than once: {copies}"
    for e in received:
        assert e["plaintext"] == planned[e["message"]].text
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    m = summary["messages"]
    assert (m["device_deliveries"], m["device_deliveries_expected"]) == (len(expected), len(expected))
    assert m["plaintext_mismatches"] == m["undecryptable"] == 0
    # A send whose answer was lost with a dropped connection is written again (clients/link.py) and may
    # have been carried out twice: its recipient drops the second copy (a duplicate), no more often than
    # the relay recorded a send again (the same sender, recipient device and size as another)
    assert m["duplicates_dropped"] <= _sent_again(out)
    # the phones' other duplicates (receipts, cover...) checked against the relay's records: none it
    # accepted once
    check = summary["live"]["duplicates_checked_by_relay"]
    assert check["disagreements"] == [], check
    assert check["confirmed"] + check["unchecked"] == check["duplicates_by_phones"]
    assert summary["relay_queued_at_end"] == 0  # every envelope acknowledged, so deleted
    assert summary["live"]["relay_exit_code"] == 0
    # Ben's hour offline happened, and messages waited for him.
    assert {"device_offline", "device_online"} <= {e["kind"] for e in events}
    assert max(e["latency"] for e in received) > 1800
    return events


def _sent_again(out: Path) -> int:
    """How many of the relay's send records are the same (sender, recipient device, size) as another:
    at least as many as the sends it carried out twice."""
    with Store(out / "relay.db") as store:
        keys = [
            (r.account, r.device, r.recipient_account, r.recipient_device, r.size)
            for r in store.metadata()
            if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
        ]
    return len(keys) - len(set(keys))


def test_the_checker_finds_a_plaintext_run() -> None:
    assert _plaintext_runs([b"Page 4 is the one"], b"xxPage 4 ixx") == [b"Page 4 i"]
    assert _plaintext_runs([b"Page 4 is the one"], b"xxPage 4 xx") == []


def test_two_friends_live_every_message_once_and_no_plaintext_at_the_relay(tmp_path: Path) -> None:
    scenario = resolve_scenario("two-friends")
    written: list[bytes] = []
    assert run_live(scenario, tmp_path, time_scale=TIME_SCALE, wire_tap=written.append) == 0
    events = _assert_each_message_arrived_once(scenario, tmp_path)

    # The headline property: no 8-byte run of any plaintext in the relay's files or in anything
    # it was sent.
    plaintexts = [m.text.encode() for m in plan_messages(scenario)]
    wire_bytes = b"".join(written)
    files = {p.name: p.read_bytes() for p in tmp_path.glob("relay.db*")}
    assert "relay.db" in files
    assert b"amira" in files["relay.db"] and b"amira" in wire_bytes  # we are reading the real thing
    assert len(wire_bytes) > sum(map(len, plaintexts))
    for name, blob in [("bytes the relay received", wire_bytes), *files.items()]:
        assert _plaintext_runs(plaintexts, blob) == [], f"plaintext in {name}"

    # What the relay recorded is there beside what the phones saw.
    accepted = [e for e in events if e["kind"] == "message_accepted"]
    assert len(accepted) == len(plaintexts)
    assert all(r["kind"] == "send" and r["account"] in ("amira", "ben") for e in accepted for r in e["relay"])
    assert all(
        e["relay"]["delivery"]["kind"] == "delivery" for e in events if e["kind"] == "message_received"
    )

    # Each order the timeline served is written as a simulated run writes it (they were served and
    # answered, but neither the files nor the summary had them: the report said none was served).
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    served = [e.name for e in scenario.events if e.kind == "legal_process"]  # type: ignore[attr-defined]
    assert served and [o["name"] for o in summary["disclosures"]] == served
    for name in served:
        md = (tmp_path / "disclosures" / f"{name}.md").read_text(encoding="utf-8")
        assert "**Response:**" in md
    # its times on the run's clock, not the relay's wall clock (the pen register is served at 01:30)
    assert "Served at:** 01:30:0" in (tmp_path / "disclosures" / f"{served[0]}.md").read_text(
        encoding="utf-8"
    )


def test_an_order_is_served_at_its_events_time_however_late_the_drivers_clock_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run's clock reads late when its loop is: on a busy machine the pen register above was
    served 10 or more simulated seconds after 01:30 (2 ms late is 10 s at TIME_SCALE). An order is
    served at the time its event gives, as a simulated run serves it; here the simulator's clock
    reads 7 s late."""
    on_time = Simulation.now
    monkeypatch.setattr(Simulation, "now", lambda self: on_time(self) + 7.0)
    scenario = resolve_scenario("two-friends")
    sim = Simulation(scenario, db_path=str(tmp_path / "relay.db"))
    result = sim.run()
    given = {sim.relay_time(e.at) for e in scenario.events if e.kind == "legal_process"}  # type: ignore[attr-defined]
    assert result.disclosures and {d.process.served for d in result.disclosures} <= given


@pytest.mark.parametrize("sealed", [False, True])
def test_a_send_the_relay_carried_out_twice_is_counted_as_a_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed: bool
) -> None:
    """amira's connection drops just as the relay's answer to her third send comes (the answer is lost
    with it): her link writes the send again on the next connection, the relay carries it out again, and
    ben gets the same message twice. He reads it once and drops the copy: one duplicate, nothing
    undecryptable (the run counted the copy as undecryptable before). Any other send of hers with no
    answer yet at the cut (a delivery receipt, on a busy machine) is written again too, and may make
    one more duplicate: at most as many as were in flight."""
    cut: list[int] = []
    in_flight: list[int] = []  # her sends without an answer at the cut, the lost one among them
    sends = (wire.Send, wire.SealedSend)
    on_frame = DeviceLink._on_frame

    def lose_an_answer(self: DeviceLink, frame: wire.Response) -> None:
        request = self._unanswered.get(frame.id)
        if isinstance(request, sends) and self.agent.account == "amira" and isinstance(frame, wire.Sent):
            cut.append(frame.id)
            if len(cut) == 3:
                in_flight.append(sum(isinstance(r, sends) for r in self._unanswered.values()))
                self.abort("the test lost the relay's answer")
                return
        on_frame(self, frame)

    monkeypatch.setattr(DeviceLink, "_on_frame", lose_an_answer)
    plain = resolve_scenario("two-friends")
    scenario = dataclasses.replace(plain, relay=dataclasses.replace(plain.relay, sealed_sender=sealed))
    assert run_live(scenario, tmp_path, time_scale=TIME_SCALE) == 0
    assert len(cut) > 3 and cut[2] in cut[3:]  # the lost answer's request was written again, and answered
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert 1 <= summary["messages"]["duplicates_dropped"] <= in_flight[0]
    assert summary["messages"]["undecryptable"] == 0
    # and the transcript says so, as the simulator's does: ben dropped a second copy (of a message)
    dropped = [e for e in _events(tmp_path) if e["kind"] == "duplicate_dropped"]
    assert 1 <= len(dropped) <= summary["messages"]["duplicates_dropped"]
    assert all(e["device"] == "ben/1" for e in dropped)
    _assert_each_message_arrived_once(scenario, tmp_path)


def test_two_friends_live_with_sealed_sender(tmp_path: Path) -> None:
    plain = resolve_scenario("two-friends")
    scenario = dataclasses.replace(plain, relay=dataclasses.replace(plain.relay, sealed_sender=True))
    assert run_live(scenario, tmp_path, time_scale=TIME_SCALE) == 0
    events = _assert_each_message_arrived_once(scenario, tmp_path)
    for e in events:
        if e["kind"] == "message_received":
            assert e["relay"]["sealed"] is True and e["relay"]["sender_shown_by_relay"] is None
        if e["kind"] == "message_accepted":
            # Sent over a connection that never logged in: the relay has no sender to record.
            assert [r["kind"] for r in e["relay"]] == ["sealed_send"]
            assert "account" not in e["relay"][0]


def test_relaysim_run_live_writes_what_relaysim_show_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tf"
    assert relaysim(["run", "two-friends", "--live", "--time-scale", "0.0001", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "two-friends live (time scale 0.0001) under relay profile keep-everything (the default): 12 messages; "
        "12/12 device deliveries"
    ) in printed
    assert {p.name for p in out.iterdir()} >= {
        "transcript.jsonl",
        "relay.db",
        "relay.log",
        "summary.json",
        "summary.md",
    }
    assert "SIGTERM received; shutting down" in (out / "relay.log").read_text()
    # as the README says: no relay-view.jsonl; a provider.json, which disclose reads (the test below)
    assert not (out / "relay-view.jsonl").exists() and (out / "provider.json").is_file()
    shown = render_show(out, limit=40, width=200)  # the teaching view reads live runs too
    assert "amira/1 read, from ben/1: \u201cSorry, phone was off. Won't forward.\u201d" in shown
    assert "ben/1 goes offline" in shown and "ben/1 comes online" in shown
    assert "## Live run" in (out / "summary.md").read_text()


def test_disclose_on_a_live_runs_database_dates_its_records_on_the_runs_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live run wrote no provider.json: disclose on its relay.db read the relay's wall clock against the
    simulator's own start ("Served at: day 339 01:31:55") and ignored the time scale. The run writes
    provider.json (the relay's clock at t = 0, the time scale, the profile; no machine path), and a
    disclosure of it shows the run's times: inside the scenario, each message's record between the
    transcript's times of its send and of the relay's answer to it (the relay recorded it in between)."""
    # (2.5 x the module's time scale: under a loaded machine's tests, a message reached the relay late
    # enough to miss the order's 30 minutes at 0.0002)
    out = tmp_path / "tf"
    assert relaysim(["run", "two-friends", "--live", "--time-scale", str(SCALE), "--out", str(out)]) == 0
    text = (out / "provider.json").read_text(encoding="utf-8")
    assert str(tmp_path) not in text and "/" not in text  # no machine path
    provider = json.loads(text)
    assert (provider["profile"], provider["time_scale"]) == ("keep-everything", SCALE)
    assert provider["run_ended"] == pytest.approx(provider["clock_epoch"] + 5 * 3600 * SCALE)
    assert provider["geoip"]["127.1.0.1"] == "pk"  # the loopback address amira's phone came from
    capsys.readouterr()
    at = 1800  # "30m": amira's and ben's first three messages, planned at 10, 12 and 15 minutes, before it
    argv = ["disclose", "--db", str(out / "relay.db"), "--process", "search_warrant", "--target", "amira"]
    assert relaysim([*argv, "--at", "30m", "--json", str(tmp_path / "d.json")]) == 0
    shown = capsys.readouterr().out
    assert "Served at:** 00:30:00;" in shown, shown
    assert "and more" not in shown and "… and" not in shown  # every record is shown
    rows = [
        (int(h) * 3600 + int(m) * 60 + int(s), sender, recipient)
        for h, m, s, sender, recipient in re.findall(r"^  - (\d\d):(\d\d):(\d\d) (\w+) → (\w+)$", shown, re.M)
    ]
    assert rows and all(0 <= t <= at for t, _, _ in rows), rows
    events = _events(out)
    sent = {e["message"]: e for e in events if e["kind"] == "message_sent"}
    accepted = [e for e in events if e["kind"] == "message_accepted" and e["t"] <= at]
    assert len(accepted) == 3, accepted  # (a machine so busy that a message was 15 simulated minutes late)
    planned = {m.id: m for m in plan_messages(resolve_scenario("two-friends"))}
    for e in accepted:
        m = planned[e["message"]]
        # shown to the second (floored); the relay recorded it after the phone sent it, before its answer came
        assert any(
            (sender, recipient) == (m.sender, m.recipient)
            and math.floor(sent[m.id]["t"]) - 1 <= t <= e["t"] + 1
            and t >= m.at - 1  # (the simulated run's record of it: at m.at)
            for t, sender, recipient in rows
        ), (m, sent[m.id]["t"], e["t"], rows)
    # the phones' set-up came before the run's clock started: said so ("created day 0 23:59:17", the real
    # milliseconds of set-up stretched by the time scale), in disclose's Markdown and in the run's disclosures/
    assert "account amira, created before the run's start" in shown, shown
    assert "day 0" not in shown
    assert "created before the run's start" in (out / "disclosures" / "search-warrant-amira.md").read_text()
    # the JSON keeps the relay's own clock, as the run's disclosures/ do
    data = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert data["served"] == pytest.approx(provider["clock_epoch"] + at * SCALE)
    assert data["provided"]["account_created"][0]["created"] < provider["clock_epoch"]
    # the report's orders read the same clock: served when the timeline served them (it showed the real
    # seconds since the start, "Served at 00:00:01", the time scale left out)
    assert relaysim(["report", str(out)]) == 0
    served = re.findall(r"Served at ([^<]*) on the", (out / "report.html").read_text(encoding="utf-8"))
    assert sorted(served) == ["01:30:00", "04:30:00"], served  # two-friends' pen register, search warrant


def test_relaysim_run_live_refuses_a_bad_time_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # too small for the relay's clock: an order's period started and ended on the same instant
    # (Tap.end must be after Tap.start: an internal error, exit 1). The command refuses it as it reads
    # its options, naming the option (exit 2); run_live, called from Python, says why.
    for scale in ("0", "1e-12"):
        with pytest.raises(SystemExit) as exited:
            relaysim(["run", "two-friends", "--live", "--time-scale", scale, "--out", str(tmp_path)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert (
            f"argument --time-scale: expected at least 1e-06 real seconds per simulated second, got {float(scale):g}"
            in err
        )
    scenario = resolve_scenario("two-friends")
    assert run_live(scenario, tmp_path, time_scale=0) == 2
    assert "--time-scale must be a positive number" in capsys.readouterr().err
    assert run_live(scenario, tmp_path, time_scale=1e-12) == 2
    err = capsys.readouterr().err
    assert "--time-scale must be at least 1e-06" in err and "got 1e-12" in err and "internal error" not in err
    with pytest.raises(SystemExit):
        relaysim(["run", "--help"])
    usage = capsys.readouterr().out
    assert "--live" in usage and "--time-scale" in usage


def test_a_forward_order_with_no_end_live_and_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wiretap with no `to` collects, in the simulator, until the run's end; live, its tap's end went
    to the relay's operator socket as JSON's Infinity, which it refuses: `relaysim run india-2010
    --live` stopped with an internal error. And `run --live --report` wrote no report.html, unsaid."""
    text = (
        '[scenario]\nname = "open-tap"\nduration = "30m"\n[[people]]\nname = "amira"\n[[people]]\nname = "ben"\n'
        '[[conversations]]\nbetween = ["amira", "ben"]\n'
        'messages = [{ at = "10m", from = "amira", text = "after the tap" }]\n'
        '[[events]]\nat = "5m"\nkind = "legal_process"\nprocess = "wiretap"\ntarget = "amira"\nname = "tap"\n'
    )
    (tmp_path / "open-tap.toml").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "open-tap.toml"), "--live", "--time-scale", "0.0005", "--out", str(out)]
    assert relaysim([*argv, "--report", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "open-tap live (time scale 0.0005) under relay profile keep-everything (the default): " in printed
    assert f"report: {out / 'report.html'}" in printed
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    tap = json.loads((out / "disclosures" / "tap.json").read_text(encoding="utf-8"))
    assert tap["response"] == "complied", tap["response"]
    # The README: a live transcript's relay records keep the relay's own clock, which provider.json reads.
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    (received,) = [e for e in _events(out) if e["kind"] == "message_received"]
    assert provider["clock_epoch"] <= received["relay"]["accepted_ms"] / 1000 <= provider["run_ended"]
    assert provider["clock_epoch"] <= received["relay"]["delivery"]["time"] <= provider["run_ended"]
    # (keep-everything holds no content key: the tap's collection is the message's ciphertext)
    assert [(c["from"], c["to"]) for c in tap["provided"]["ciphertext"]][:1] == [("amira", "ben")], tap


def test_relaysim_run_live_refuses_a_scenario_of_several_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """india-2010 compares BES with consumer BBM; live, it ran one relay under keep-everything, the
    default [relay] profile, and said nothing of it."""
    out = tmp_path / "in"
    assert relaysim(["run", "india-2010", "--live", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "india-2010: scenario.compare_profiles: this scenario runs under several relay" in err, err
    assert "relaysim run --live runs one relay under one profile" in err, err
    assert not out.exists()


def test_a_relay_slow_to_stop_is_waited_for_not_killed() -> None:
    """RELAY_STOP_TIMEOUT is a hang guard: a relay whose shutdown waits 30 s on the disk (its last
    fsync and checkpoint, on a loaded machine) exits by itself with 0; one that never exits is killed."""

    class Process:
        def __init__(self, stops_after: float) -> None:
            self.returncode: int | None = None
            self.stops_after = stops_after
            self.signals: list[int] = []
            self.killed = False

        def send_signal(self, signum: int) -> None:
            self.signals.append(signum)

        def kill(self) -> None:
            self.killed, self.returncode = True, -9

        async def wait(self) -> int:
            if self.returncode is None:
                await trio.sleep(self.stops_after)
                if self.returncode is None:
                    self.returncode = 0
            return self.returncode

    async def stop(stops_after: float) -> tuple[int, bool]:
        process = Process(stops_after)
        relay = live.RelayProcess(process, 1, b"", Path("relay.log"))
        return await relay.stop(), process.killed

    clock = trio.testing.MockClock(autojump_threshold=0)  # (trio's virtual clock: no real waiting)
    assert trio.run(stop, 30.0, clock=clock) == (0, False)
    assert trio.run(stop, math.inf, clock=clock) == (-9, True)


LINKED = """
[scenario]
name = "linked"
duration = "20m"

[[people]]
name = "alice"
devices = [{ region = "us", address = "192.0.2.1" }, { region = "us", address = "192.0.2.2" }]

[[people]]
name = "bob"
devices = [{ region = "us", address = "192.0.2.3" }]

[[conversations]]
between = ["alice", "bob"]
messages = [
  { at = "1m", from = "bob", text = "to both of alice's devices" },
  { at = "5m", from = "bob", text = "while the laptop is off" },
  { at = "6m", from = "alice", text = "from the phone" },
]

[[events]]
at = "4m"
kind = "device_offline"
device = "alice/2"

[[events]]
at = "8m"
kind = "device_online"
device = "alice/2"
"""


@pytest.mark.parametrize("profile", [None, "signal", "whatsapp"])
def test_a_linked_device_and_timeline_events_live(tmp_path: Path, profile: str | None) -> None:
    """A linked device as the profile's identity model links it (as the simulator does): under Signal's
    ("account") it holds the account's identity key, under WhatsApp's ("signed-devices") a key of its
    own that bob accepts only with alice's primary's signature; either way it reads every message."""
    scenario = parse_scenario(LINKED, source="linked.toml")
    if profile is not None:
        scenario = dataclasses.replace(scenario, relay=dataclasses.replace(scenario.relay, profile=profile))
    assert run_live(scenario, tmp_path, time_scale=0.002) == 0
    with Store(tmp_path / "relay.db") as store:
        keys = [d.identity_key for d in store.devices("alice")]
    assert len(keys) == 2 and (keys[0] == keys[1]) == (profile == "signal")
    events = _events(tmp_path)
    received = Counter((e["message"], e["device"]) for e in events if e["kind"] == "message_received")
    assert received == {
        (1, "alice/1"): 1,
        (1, "alice/2"): 1,
        (2, "alice/1"): 1,
        (2, "alice/2"): 1,
        (3, "bob/1"): 1,
    }
    laptop = [e["kind"] for e in events if e.get("device") == "alice/2" and e["kind"].startswith("device_")]
    assert laptop == ["device_online", "device_offline", "device_online"]
    late = next(
        e
        for e in events
        if e["kind"] == "message_received" and e["device"] == "alice/2" and e["message"] == 2
    )
    assert late["t"] >= 8 * 60  # held by the relay until the laptop came back
    # What alice wrote from her phone reaches her laptop too, as a sync copy, once it is back.
    synced = [e for e in events if e["kind"] == "sync_copy_received"]
    assert [(e["device"], e["message"], e["to"], e["plaintext"]) for e in synced] == [
        ("alice/2", 3, "bob", "from the phone")
    ]
    assert synced[0]["t"] >= 8 * 60
    copies = [e for e in events if e["kind"] == "control_accepted" and e["control"] == "sync copy"]
    assert [(e["from"], e["to"]) for e in copies] == [("alice", "alice")]
    if profile is None:  # (a profile that keeps less may keep no record of it)
        assert [r["recipient_device"] for r in copies[0]["relay"]] == [2]


def test_a_group_with_receipts_cover_and_moves_live_under_sealed_sender(tmp_path: Path) -> None:
    """[[groups]] (sender keys over the pairwise sessions, one send per member account), delivery and
    read receipts and cover traffic (sealed), and two phones changing networks, all in one live run:
    every message reaches exactly the devices it is for, once and unchanged; nothing the relay
    receives or stores holds a plaintext; the relay sees the moved phones come from new addresses."""
    base = parse_scenario(BUSY_BOOK_CLUB, source="book-club-busy.toml")
    scenario = dataclasses.replace(base, relay=dataclasses.replace(base.relay, sealed_sender=True))
    written: list[bytes] = []
    assert run_live(scenario, tmp_path, time_scale=0.002, wire_tap=written.append) == 0
    events = _events(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["live"]["not_carried"] == []

    direct = plan_messages(scenario)
    steps = [s for s in plan_group_steps(scenario, len(direct)) if s.message is not None]
    group = [s.message for s in steps if s.message is not None]
    expected = {(m.id, d.name) for m in direct for d in scenario.person(m.recipient).devices}
    expected |= {(m.id, device) for m, s in zip(group, steps, strict=True) for device in s.recipients}
    # the group as each message was written: dan once he joined, cy no more once she left
    assert {d for m, d in expected if m == group[-1].id} == {"ana/2", "bo/1", "dan/1"}
    received = Counter((e["message"], e["device"]) for e in events if e["kind"] == "message_received")
    assert received == dict.fromkeys(expected, 1)
    texts = {m.id: m.text for m in [*direct, *group]}
    assert all(e["plaintext"] == texts[e["message"]] for e in events if e["kind"] == "message_received")
    sent = {e["message"] for e in events if e["kind"] == "group_message_sent"}
    assert sent == {m.id for m in group}

    plaintexts = [t.encode() for t in texts.values()]
    files = {p.name: p.read_bytes() for p in tmp_path.glob("relay.db*")}
    for name, blob in [("bytes the relay received", b"".join(written)), *files.items()]:
        assert _plaintext_runs(plaintexts, blob) == [], f"plaintext in {name}"

    # Receipts and cover, sealed: the relay recorded no sender for any of them.
    receipts = [e for e in events if e["kind"] == "receipt_received"]
    assert {e["receipt"] for e in receipts} == {"delivery", "read"}
    assert all(e["sealed"] for e in receipts)
    control = [e for e in events if e["kind"] == "control_accepted"]
    assert {e["control"] for e in control} == {"delivery receipt", "read receipt", "cover"}
    for e in control:
        assert e["relay"] and all(r["kind"] == "sealed_send" and "account" not in r for r in e["relay"])

    # Each move: the phone logs in again from the loopback address standing in for its new network.
    assert [e["device"] for e in events if e["kind"] == "device_moved"] == ["dan/1", "ana/2"]
    with Store(tmp_path / "relay.db") as store:
        logins = store.metadata(RecordKind.AUTHENTICATION)
    for device in (("dan", 1), ("ana", 2)):
        hosts = {r.host for r in logins if (r.account, r.device) == device}
        assert len(hosts) == 2 and all(h is not None and h.startswith("127.1.") for h in hosts), hosts


def test_a_fresh_connection_from_an_exit_for_each_sealed_send_live(tmp_path: Path) -> None:
    """``[defences] sealed_connection = "fresh"``: every sealed send (messages and receipts) and every
    bundle fetch (``bundle_fetch = "unauthenticated"``) comes over a connection of its own, from one of
    the exits' loopback addresses, never from the sender's; the relay cannot join two of them by
    connection or by the phone's address."""
    scenario = fresh_connections(resolve_scenario("two-friends"))
    assert run_live(scenario, tmp_path, time_scale=TIME_SCALE) == 0
    events = _assert_each_message_arrived_once(scenario, tmp_path)
    assert {e["receipt"] for e in events if e["kind"] == "receipt_received"} == {"delivery"}
    with Store(tmp_path / "relay.db") as store:
        records = store.metadata()
    sealed = [r for r in records if r.kind is RecordKind.SEALED_SEND]
    phones = {r.host for r in records if r.kind is RecordKind.AUTHENTICATION}
    assert len(sealed) == 24  # 12 messages and 12 delivery receipts, one device each
    assert len({r.connection for r in sealed}) == len(sealed)
    assert all(r.host is not None and r.host.startswith("127.2.0.") for r in sealed)
    assert phones and all(h is not None and h.startswith("127.1.") for h in phones)
    assert all(r.account is None for r in sealed)
    # bundles fetched with the recipient's delivery token, each over an exit's connection of its own
    fetches = [r for r in records if r.kind is RecordKind.BUNDLE_FETCH]
    assert fetches and all(r.account is None and str(r.host).startswith("127.2.0.") for r in fetches)
    assert len({r.connection for r in [*sealed, *fetches]}) == len(sealed) + len(fetches)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["live"]["not_carried"] == []


def test_key_transparency_live_checks_every_bundle_against_the_relays_key_log(tmp_path: Path) -> None:
    """``[defences] key_transparency``: live phones ask for the log's proofs with each bundle and check
    every key's inclusion under a signed head, and the transcript says so as the simulator's does."""
    plain = resolve_scenario("two-friends")
    scenario = dataclasses.replace(plain, defences=dataclasses.replace(plain.defences, key_transparency=True))
    assert run_live(scenario, tmp_path, time_scale=TIME_SCALE) == 0
    _assert_each_message_arrived_once(scenario, tmp_path)
    checked = [e for e in _events(tmp_path) if e["kind"] == "key_log_checked"]
    assert {(e["device"], e["account"]) for e in checked} == {("amira/1", "ben"), ("ben/1", "amira")}
    assert all(e["logged"] == [1] and e["unlogged"] == [] and e["refused"] is None for e in checked)
    assert all(e["tree_size"] >= 2 for e in checked)


def test_ephemeral_mailboxes_live(tmp_path: Path) -> None:
    """``[defences] mailboxes = "ephemeral"``: amira's first text opens a mailbox (an account of its own,
    registered and logged in from an exit's address, never from her phone's); ben's replies go to it
    and reach her phone, also while his phone was away; the relay sees them addressed to the mailbox."""
    scenario = parse_scenario(MAILBOXES, source="mailboxes.toml")
    written: list[bytes] = []
    assert run_live(scenario, tmp_path, time_scale=MAILBOX_SCALE, wire_tap=written.append) == 0
    events = _events(tmp_path)
    received = Counter((e["message"], e["device"]) for e in events if e["kind"] == "message_received")
    assert received == {(1, "ben/1"): 1, (2, "amira/1"): 1, (3, "ben/1"): 1, (4, "amira/1"): 1}
    (opened,) = [e for e in events if e["kind"] == "mailbox_opened"]
    assert (opened["device"], opened["peer"]) == ("amira/1", "ben")
    mailbox = opened["mailbox"]
    with Store(tmp_path / "relay.db") as store:
        records = store.metadata()
    to_mailbox = [r for r in records if r.kind is RecordKind.SEALED_SEND and r.recipient_account == mailbox]
    to_amira = [r for r in records if r.kind is RecordKind.SEALED_SEND and r.recipient_account == "amira"]
    assert len(to_mailbox) >= 2 and to_amira == []  # ben's texts (and receipts) all went to the mailbox
    own = [r for r in records if r.account == mailbox and r.kind is not RecordKind.DISCONNECT]
    assert {r.kind for r in own} >= {RecordKind.REGISTRATION, RecordKind.AUTHENTICATION}
    assert all(str(r.host).startswith("127.2.0.") for r in own if r.host is not None)
    plaintexts = [m.text.encode() for m in plan_messages(scenario)]
    assert _plaintext_runs(plaintexts, b"".join(written)) == []


async def test_a_relay_that_cannot_listen_raises_relay_start_error_itself(tmp_path: Path) -> None:
    # The error leaves relay_process's nursery bare, not in an ExceptionGroup (trio >= 0.25 wraps).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(60), pytest.raises(RelayStartError, match="exited before it was listening"):
            async with relay_process(tmp_path / "relay.db", tmp_path / "relay.log", port=port):
                pytest.fail("the relay started on a port that is taken")
    assert "cannot serve" in (tmp_path / "relay.log").read_text()


def test_run_live_reports_a_relay_that_did_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "RELAY_START_TIMEOUT", 0.001)  # no relay starts listening that fast
    assert run_live(resolve_scenario("two-friends"), tmp_path, time_scale=TIME_SCALE) == 1
    assert "relaysim run --live: the relay did not start listening within 0.001 s" in capsys.readouterr().err


def test_the_relays_clock_reads_back_as_the_runs_to_the_second() -> None:
    """What the live run tells the relay happened at simulated second ``s`` (``t0 + s * scale``) reads
    back as ``s``, not a hair below it (then shown a whole second early: 01:29:59 for 01:30:00),
    whatever the wall clock read at the start."""
    r = random.Random(7)
    for scale in (0.0001, TIME_SCALE, 0.002, 1.0):
        for _ in range(2000):
            t0 = 1.7e9 + r.random() * 1e8
            s = float(r.randrange(18_000))
            assert math.floor(live.relay_to_run(t0 + s * scale, t0, scale)) == s, (t0, s, scale)


RHYTHM = """
[scenario]
name = "rhythm"
duration = "1d"
seed = 3

[relay]
profile = "keep-everything"

[generate]
people = 4
devices_per_person = { one = 1.0 }
messages_per_day = { mean = 40, sigma = 0.2 }
daily_rhythm = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 0, 0]
"""


def test_analyze_on_a_live_run_gives_the_simulated_runs_hours_of_the_day(tmp_path: Path) -> None:
    """analyze on a live run counted each account's hours of the day on the relay's wall clock: a day
    played in ten real seconds fell in one or two hours of the machine's clock, and its sleep window
    and UTC offset were those of whatever hour that was. It reads them on the run's clock: people who
    write from 08:00 to 22:00 UTC are seen to, asleep in the night's hours, as the simulated run of
    the same scenario sees them (up to an hour's edge: the live network's timing is not the simulator's,
    and a receipt slower than analyze's two seconds is taken for a person's action)."""
    scenario = parse_scenario(RHYTHM)
    sim, out = tmp_path / "sim", tmp_path / "live"
    run_to_dir(scenario, sim)
    assert run_live(scenario, out, time_scale=0.0001) == 0
    pages = {}
    for run in (sim, out):
        assert relaysim(["analyze", str(run)]) == 0
        pages[run] = json.loads((run / "analysis" / "relay.json").read_text(encoding="utf-8"))
    night = {22, 23, *range(8)}  # the scenario's rhythm writes nothing in them
    for run, page in pages.items():
        rhythms = page["analysis"]["pattern_of_life"]["daily_rhythm"]
        assert len(rhythms) == 4 and all(r["sleep_window_utc"] is not None for r in rhythms), (run, rhythms)
        for r in rhythms:
            hours = {h for h, n in enumerate(r["by_utc_hour"]) if n}
            # the day's hours, at most an hour's edge past them, not one or two of the machine's clock
            assert len(hours) >= 10 and not hours & (night - {7, 22}), (run, r)
            start, _ = r["sleep_window_utc"]
            assert {(start + i) % 24 for i in range(6)} <= night, (run, r)
            assert r["inferred_utc_offset_h"] in (-1, 0, 1), (run, r)
        assert page["score"]["daily_rhythm"]["share_inside"] == 0.0
    assert {r["account"] for r in pages[out]["analysis"]["pattern_of_life"]["daily_rhythm"]} == {
        r["account"] for r in pages[sim]["analysis"]["pattern_of_life"]["daily_rhythm"]
    }
