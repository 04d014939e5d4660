"""Lawful access end to end: what each profile's relay writes, and what its compliance desk hands over.

(a) After a run under each profile, the SQLite file holds nothing the profile does not record.
(b) Each disclosure is what ground truth predicts for that profile (the simulator knows every message).
(c) No plaintext ever appears in a disclosure under an end-to-end profile; under provider-held keys it does.
Also: the Signal 2016 subpoena, the BlackBerry comparisons, ``relaysim disclose`` on a finished run, and the
scenario options that run one scenario under several profiles.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaysim.relay.compliance import Disclosure
from relaysim.relay.legal import INSTRUMENTS, JURISDICTIONS
from relaysim.relay.metadata import METADATA_FIELDS
from relaysim.relay.profiles import ASKS, NOT_ON_THE_RELAY, PROCESSES, PROFILES, REAL_PROFILES, get_profile
from relaysim.sims.cli import main
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import (
    LegalProcessEvent,
    Scenario,
    ScenarioError,
    parse_scenario,
    resolve_scenario,
)
from relaysim.sims.world.simulation import Simulation, SimulationResult

FBI = resolve_scenario("fbi-chart")
EPOCH = FBI.epoch  # the relay's clock at t = 0: midnight UTC of the chart's date (its [scenario] start)
TARGET = "tariq"
END_TO_END = [name for name, p in PROFILES.items() if p.custody != "provider"]


def under(profile: str, scenario: Scenario = FBI) -> Scenario:
    return replace(
        scenario, relay=replace(scenario.relay, profile=profile), matrix=False, compare_profiles=()
    )


class Run:
    def __init__(self, scenario: Scenario, db: Path | str = ":memory:") -> None:
        self.events: list[dict[str, Any]] = []
        self.scenario = scenario
        self.db = Path(db) if db != ":memory:" else None
        self.result: SimulationResult = Simulation(scenario, db_path=db, transcript=self.events.append).run()
        assert self.result.truth is not None
        self.truth = self.result.truth

    def disclosure(self, name: str) -> Disclosure:
        (d,) = [d for d in self.result.disclosures if d.process.name == name]
        return d

    def texts(self) -> list[str]:
        return [m.planned.text for m in self.result.messages]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The fbi-chart afternoon under every profile, each into its own relay.db."""
    return {name: Run(under(name), tmp_path_factory.mktemp(name) / "relay.db") for name in PROFILES}


def _mine(m: Any, target: str = TARGET) -> bool:
    return target in (m.sender, m.recipient)


def _devices(scenario: Scenario, person: str) -> int:
    return len(scenario.person(person).devices)


def _receipts(run: Run, start: float, end: float) -> list[Any]:
    """The delivery receipts to or from the target the relay accepted in [start, end): each phone
    answers every message with one (as Signal's do), and the provider logs it as one more message."""
    return [c for c in run.truth.control if _mine(c) and start <= c.time < end and c.kind.endswith("receipt")]


def _is_receipt(row: dict[str, Any]) -> bool:
    """A content row the desk read as a delivery receipt (relay.content), not as words."""
    return row["kind"] == "delivery receipt" and "text" not in row


# --- (a) the database file holds only what the profile records --------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_database_file_holds_only_what_the_profile_records(runs: dict[str, Run], profile: str) -> None:
    run, pr = runs[profile], get_profile(profile)
    assert run.db is not None
    records = run.result.relay_records
    assert records.get("send", 0) + records.get("sealed_send", 0) > 0  # messages did pass
    con = sqlite3.connect(f"file:{run.db}?mode=ro", uri=True)
    try:
        kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM metadata")}
        assert kinds <= {k.value for k in pr.policy.rules}, "a kind the policy does not keep was written"
        assert "registration" in kinds
        for kind, rule in pr.policy.rules.items():
            for column in METADATA_FIELDS:
                if column in rule.fields:
                    continue
                (n,) = con.execute(
                    f'SELECT COUNT(*) FROM metadata WHERE kind = ? AND "{column}" IS NOT NULL', (kind.value,)
                ).fetchone()
                assert n == 0, f"{profile}: {kind.value}.{column} is kept in {n} row(s)"
            for column, step in rule.granularity.items():
                for (value,) in con.execute(f'SELECT "{column}" FROM metadata WHERE kind = ?', (kind.value,)):
                    assert value % step == 0, f"{profile}: {kind.value}.{column} = {value} is not rounded"
            if rule.keep != "all":
                key = ", ".join(f'"{k}"' for k in rule.key)
                (dupes,) = con.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM metadata WHERE kind = ? GROUP BY {key} "
                    "HAVING COUNT(*) > 1)",
                    (kind.value,),
                ).fetchone()
                assert dupes == 0, f"{profile}: {kind.value} keeps more than the {rule.keep} per {rule.key}"

        def count(sql: str) -> int:
            return int(con.execute(sql).fetchone()[0])

        assert (count("SELECT COUNT(*) FROM contacts") > 0) == pr.keep_contacts
        if not pr.keep_blocks:
            assert count("SELECT COUNT(*) FROM blocks") == 0
        assert (count("SELECT COUNT(*) FROM archive WHERE reason = 'kept'") > 0) == pr.keep_delivered
        # taps exist only where the profile can collect and its policy hands something over under
        # the order, and then they collected something (Telegram could, and its policy says no)
        for tap, can in (("pen_register", pr.pen_register), ("wiretap", pr.wiretap)):
            answers = bool(pr.discloses.get(tap, frozenset()) & ASKS[tap])
            assert (count(f"SELECT COUNT(*) FROM intercepts WHERE tap_id = '{tap}'") > 0) == (can and answers)
    finally:
        con.close()


def test_a_signal_relay_keeps_no_sends_and_no_addresses_anywhere_in_its_file(runs: dict[str, Run]) -> None:
    run = runs["signal"]
    assert run.db is not None
    con = sqlite3.connect(f"file:{run.db}?mode=ro", uri=True)
    try:
        kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM metadata")}
        assert kinds == {"registration", "authentication"}
        assert con.execute(
            "SELECT COUNT(*) FROM metadata WHERE host IS NOT NULL OR port IS NOT NULL"
        ).fetchone()[0] == (0)
        assert con.execute("SELECT COUNT(*) FROM intercepts").fetchone()[0] == 0
    finally:
        con.close()
    raw = run.db.read_bytes()
    for device in run.scenario.devices():  # not one of the phones' addresses, in any table or free page
        assert device.address.encode() not in raw
    # while a keep-everything relay, on the same afternoon, has them all
    other = runs["keep-everything"].db
    assert other is not None
    assert all(d.address.encode() in other.read_bytes() for d in run.scenario.devices())


# --- (b) each disclosure is what ground truth predicts ------------------------------------------


def test_a_whatsapp_pen_register_is_exactly_the_targets_messages_from_service_on(
    runs: dict[str, Run],
) -> None:
    run = runs["whatsapp"]
    d = run.disclosure("pen_register")
    start, end = d.process.window()
    assert start == d.process.served
    expected = [m for m in run.truth.messages if _mine(m) and start <= m.time < end]
    receipts = _receipts(run, start, end)
    assert receipts, "delivery receipts are on by default"
    # the target has a linked device: each message it writes goes there too, as a sync copy
    syncs = [c for c in run.truth.control if _mine(c) and start <= c.time < end and c.kind == "sync copy"]
    assert syncs and all(c.sender == c.recipient == TARGET for c in syncs)
    rows = d.provided["realtime_routing"]
    got = {(round(r["time"], 3), r["account"], r["recipient_account"]) for r in rows}
    # the provider cannot tell a receipt from a message: its routing rows are both (and the sync copies)
    assert got == {(round(m.time, 3), m.sender, m.recipient) for m in [*expected, *receipts, *syncs]}
    # one row per recipient device (a sync copy: per other device), both directions, nothing from before service
    assert len(rows) == sum(_devices(run.scenario, m.recipient) for m in [*expected, *receipts]) + len(
        syncs
    ) * (_devices(run.scenario, TARGET) - 1)
    # and the score says how many of those "messages" were receipts, and how many sync copies
    from relaysim.sims.scoring import score

    scored = score(d.to_json(), run.truth)
    split = scored["routing_rows"]
    assert split["messages"] == sum(_devices(run.scenario, m.recipient) for m in expected)
    assert split["sync_copies"] == split["true_sync_copies"] == len(syncs)
    assert (
        split["delivery_receipts"] == len(rows) - split["messages"] - len(syncs) > 0
        and split["unmatched"] == 0
    )
    # a sync copy is not a contact: the target is never counted as its own
    assert scored["contacts"]["true"] == len(
        {m.recipient if m.sender == TARGET else m.sender for m in expected}
    )
    assert {TARGET} < {r["account"] for r in rows} and {TARGET} < {r["recipient_account"] for r in rows}
    assert all(r["time"] >= d.process.served for r in rows)
    assert any(_mine(m) and m.time < start for m in run.truth.messages)  # there were earlier ones
    for r in rows:  # in 15-minute batches
        assert r["delivered_to_agency"] == (r["time"] // 900 + 1) * 900
    assert {r["ip"] for r in d.provided["ip_addresses"]} == {
        d.address for d in run.scenario.person(TARGET).devices
    }
    assert "content" not in ASKS["pen_register"] and "content" not in d.reasons


@pytest.mark.parametrize("profile", ["bbm-consumer", "bes", "viber", "keep-everything"])
def test_a_message_log_is_exactly_the_targets_messages_before_service(
    runs: dict[str, Run], profile: str
) -> None:
    run = runs[profile]
    d = run.disclosure("court_order_2703d")
    written = [m for m in run.truth.messages if _mine(m) and m.time <= d.process.served]
    receipts = _receipts(run, float("-inf"), d.process.served + 1e-9)
    # and the sync copies of the target's messages to its linked device (none where the provider holds
    # the content keys: its server keeps the messages for every device, its clients send no copies)
    syncs = [
        c for c in run.truth.control if _mine(c) and c.time <= d.process.served and c.kind == "sync copy"
    ]
    assert bool(syncs) == (run.result.scenario.relay.profile in ("viber", "keep-everything"))
    expected = {(round(m.time, 3), m.sender, m.recipient) for m in [*written, *receipts, *syncs]}
    got = {(round(r["time"], 3), r["account"], r["recipient_account"]) for r in d.provided["message_log"]}
    assert got == expected and written and receipts  # the log holds both; it cannot tell them apart


def _waiting_at(run: Run, served: float) -> list[Any]:
    """Messages to or from the target accepted before ``served`` and not yet on every recipient device."""
    t = served - run.scenario.epoch
    return [
        m
        for m in run.result.messages
        if _mine(m.planned)
        and m.accepted_at is not None
        and m.accepted_at < t
        and any(m.delivered.get(dev, float("inf")) > t for dev in m.recipients)
    ]


BBM_HANDING_OVER = "bbm-handing-over"


@pytest.fixture
def bbm_handing_over(monkeypatch: pytest.MonkeyPatch) -> str:
    """Consumer BBM with a policy that hands over all an order asks for, the words too: what its
    global key would give any order, were it not for BlackBerry's reported policy (relay/profiles.py)."""
    # (every process served on the relay: not a warrant on the backup's custodian, which its desk refuses)
    handing = {p: asks for p, asks in ASKS.items() if p not in NOT_ON_THE_RELAY}
    profile = replace(get_profile("bbm-consumer"), name=BBM_HANDING_OVER, discloses=handing)
    monkeypatch.setitem(PROFILES, BBM_HANDING_OVER, profile)
    return BBM_HANDING_OVER


def _assert_the_waiting_bodies(run: Run) -> None:
    d = run.disclosure("search_warrant")
    waiting = _waiting_at(run, d.process.served)
    assert waiting, "the scenario keeps Omar offline so that something waits"
    expected = {(m.planned.sender, m.planned.recipient) for m in waiting}
    assert {(r["from"], r["to"]) for r in d.provided["ciphertext"]} == expected
    if get_profile(run.scenario.relay.profile).custody == "provider":
        assert sorted(r["text"] for r in d.provided["content"]) == sorted(m.planned.text for m in waiting)
    else:
        assert d.reasons["content"][0] == "cryptographically_impossible" and "content" not in d.provided


def test_a_search_warrant_gets_the_bodies_still_waiting_at_service(runs: dict[str, Run]) -> None:
    _assert_the_waiting_bodies(runs["keep-everything"])


def test_a_provider_key_opens_the_bodies_still_waiting_when_its_policy_hands_them_over(
    bbm_handing_over: str,
) -> None:
    _assert_the_waiting_bodies(Run(under(bbm_handing_over)))


@pytest.mark.parametrize("profile", ["bbm-consumer", "bes"])
def test_blackberry_hands_over_who_contacted_whom_never_the_correspondence(
    runs: dict[str, Run], profile: str
) -> None:
    """John Chen, December 2015 (relay/profiles.py): under a court order, location, who contacted
    whom and certain metadata, not the correspondence itself — for consumer BBM too, although one
    global key BlackBerry holds opens it: there only policy keeps the words back ("will not"); on
    BES no key BlackBerry holds opens them ("cannot")."""
    run = runs[profile]
    for name in ("search_warrant", "wiretap"):
        d = run.disclosure(name)
        assert "ciphertext" not in d.provided and "content" not in d.provided
        assert d.reasons["ciphertext"][0] == "withheld_by_policy"
        want = "withheld_by_policy" if profile == "bbm-consumer" else "cryptographically_impossible"
        assert d.reasons["content"][0] == want
        blob = json.dumps(d.to_json(), ensure_ascii=False) + d.to_markdown()
        assert not any(t in blob for t in run.texts())
    assert run.disclosure("search_warrant").provided["message_log"]  # who contacted whom
    assert run.disclosure("wiretap").provided["realtime_routing"]


def test_sealed_sender_hides_whose_waiting_messages_they_are(runs: dict[str, Run]) -> None:
    """Tariq's messages to Omar wait on every relay; Signal's cannot tell they are his."""
    waiting = _waiting_at(runs["signal"], runs["signal"].disclosure("search_warrant").process.served)
    assert {m.planned.sender for m in waiting} == {TARGET}
    d = runs["signal"].disclosure("search_warrant")
    reason, why = d.reasons["ciphertext"]
    assert reason == "not_retained" and "cannot tell who sent them" in why
    assert "ciphertext" in runs["whatsapp"].disclosure("search_warrant").withheld  # not sealed: held


def test_a_search_warrant_on_a_relay_with_nothing_waiting_says_so() -> None:
    quiet = under("bbm-consumer", replace(FBI, people=tuple(p for p in FBI.people if p.name != "omar")))
    quiet = replace(
        quiet,
        conversations=tuple(c for c in quiet.conversations if "omar" not in c.between),
    )
    d = Run(quiet).disclosure("search_warrant")
    assert d.reasons["ciphertext"][0] == d.reasons["content"][0] == "not_retained"
    assert "deleted" in d.reasons["content"][1] and "acknowledges" in d.reasons["content"][1]


def _served_on_every_profile(scenario: Scenario) -> Scenario:
    """``scenario`` with every legal_process event served whatever the profile (no ``profiles``)."""
    return replace(
        scenario,
        events=tuple(
            replace(e, profiles=()) if isinstance(e, LegalProcessEvent) else e for e in scenario.events
        ),
    )


def test_a_provider_that_would_hand_nothing_over_collects_nothing(tmp_path: Path) -> None:
    """WhatsApp can run a pen register, but its policy answers no PTA demand: no tap. (A PTA demand on
    WhatsApp is not in the record: the scenario's demand, made on BES alone, is served on everyone here.)"""
    pk = under("whatsapp", _served_on_every_profile(resolve_scenario("pakistan-2015")))
    run = Run(pk, tmp_path / "relay.db")
    d = run.disclosure("pta-blanket-demand")
    assert d.process.process == "pta_demand" and d.process.instrument.jurisdiction == "pk"
    assert not d.provided and d.reasons["content"][0] == "cryptographically_impossible"
    assert set(d.withheld) == ASKS["pta_demand"] - {"content"}
    assert all("could collect it" in why for why in d.withheld.values())
    con = sqlite3.connect(f"file:{tmp_path / 'relay.db'}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM intercepts").fetchone()[0] == 0
    con.close()
    # while BES, had it complied (it refused: the counterfactual run), collects routing
    from relaysim.sims.counterfactual import counterfactual_scenario

    what_if = counterfactual_scenario(under("bes", resolve_scenario("pakistan-2015")))
    bes = Run(what_if).disclosure("pta-blanket-demand")
    assert bes.response == "complied" and bes.provided["realtime_routing"]


def test_a_provider_key_wiretap_reads_every_message_in_its_window(bbm_handing_over: str) -> None:
    run = Run(under(bbm_handing_over))
    d = run.disclosure("wiretap")
    start, end = d.process.window()
    expected = [m for m in run.truth.messages if _mine(m) and start <= m.time < end]
    receipts = _receipts(run, start, end)
    got = [(r["from"], r["to"], r["text"]) for r in d.provided["content"] if r["kind"] == "message"]
    # one copy per recipient device, each opened with the provider's key
    assert sorted(set(got)) == sorted({(m.sender, m.recipient, m.text) for m in expected})
    assert len(got) == sum(_devices(run.scenario, m.recipient) for m in expected)
    # the rest are the receipts, which the provider's key opens too (and so can tell apart)
    opened = sorted((r["from"], r["to"]) for r in d.provided["content"] if _is_receipt(r))
    assert receipts and opened == sorted(
        (c.sender, c.recipient) for c in receipts for _ in range(_devices(run.scenario, c.recipient))
    )
    assert all(a["opened"] for a in d.decryption)


def test_a_whatsapp_warrant_hands_over_the_address_books(runs: dict[str, Run]) -> None:
    run = runs["whatsapp"]
    d = run.disclosure("search_warrant")
    partners = {p for c in run.scenario.conversations if TARGET in c.between for p in c.between} - {TARGET}
    assert {r["contact"] for r in d.provided["contacts"]} == partners
    assert {r["account"] for r in d.provided["reverse_contacts"]} == partners
    assert d.provided["blocked_users"] == []  # nobody blocked anyone
    for withheld_by_2703d in ("contacts", "reverse_contacts"):
        assert withheld_by_2703d in run.disclosure("court_order_2703d").withheld


def test_subscriber_times_match_the_devices_first_and_last_connections(runs: dict[str, Run]) -> None:
    for profile in ("whatsapp", "signal"):
        run = runs[profile]
        d = run.disclosure("subpoena")
        online = [
            e["t"]
            for e in run.events
            if e["kind"] == "device_online" and e["device"].startswith(f"{TARGET}/")
        ]
        (created,) = d.provided["account_created"]
        assert 0 <= created["created"] - (EPOCH + min(online)) < 5
        (seen,) = d.provided["last_seen"]
        last = EPOCH + max(t for t in online if EPOCH + t <= d.process.served)
        if profile == "signal":  # the day of the last connection (signal.org/bigbrother)
            assert seen["last_seen"] == last - last % 86400
        else:  # WhatsApp's "last seen" is the last activity, not the last login (faq.whatsapp.com)
            active = [
                EPOCH + e["t"]
                for e in run.events
                if EPOCH + e["t"] <= d.process.served
                and (
                    (e["kind"] == "message_received" and e["device"].startswith(f"{TARGET}/"))
                    or (e["kind"] == "message_sent" and str(e.get("from")).startswith(f"{TARGET}/"))
                )
            ]
            assert max(active) > last + 3600  # tariq was active long after his last login
            assert 0 <= seen["last_seen"] - max(active) < 5


# --- (c) plaintext: never under end-to-end profiles; under provider-held keys, yes --------------

_LETTERS = "ghijklmnopqrstuvwxyz"  # not hex digits: a text cannot hide in a hex dump by chance


@st.composite
def lawful_scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 4))
    people = [f"p{i}" for i in range(n)]
    lines = ['[scenario]\nname = "random"\nduration = "3h"', f"seed = {draw(st.integers(0, 2**20))}", ""]
    lines += [f'[relay]\nprofile = "{draw(st.sampled_from(END_TO_END))}"', ""]
    for i, p in enumerate(people):
        offline = ""
        if draw(st.booleans()):
            a = draw(st.integers(10, 90))
            offline = f', offline = [["{a}m", "{a + draw(st.integers(10, 60))}m"]]'
        lines.append(f'[[people]]\nname = "{p}"\ndevices = [{{ address = "192.0.2.{i + 10}"{offline} }}]')
    pairs: dict[tuple[str, str], list[str]] = {}
    for k in range(draw(st.integers(1, 6))):
        a, b = draw(st.permutations(people))[:2]
        word = draw(st.text(_LETTERS, min_size=6, max_size=10))
        pairs.setdefault((min(a, b), max(a, b)), []).append(
            f'{{ at = "{draw(st.integers(2, 170))}m", from = "{a}", text = "zz{k}{word}" }}'
        )
    for (a, b), msgs in pairs.items():
        lines.append(f'[[conversations]]\nbetween = ["{a}", "{b}"]\nmessages = [{", ".join(msgs)}]')
    for k in range(draw(st.integers(1, 3))):
        process = draw(st.sampled_from(list(PROCESSES)))
        at = draw(st.integers(1, 150))
        target = "" if process == "blanket_demand" else f'target = "{draw(st.sampled_from(people))}"\n'
        # an order's `to` lies within the run (3 h = 180 m); one without `to` runs to the end; a
        # preservation request covers no period, so it has none (the scenario refuses one)
        with_to = process != "preservation" and draw(st.booleans())
        to = f'to = "{at + draw(st.integers(5, min(60, 180 - at)))}m"\n' if with_to else ""
        lines.append(
            f'[[events]]\nat = "{at}m"\nkind = "legal_process"\nprocess = "{process}"\n{target}{to}name = "o{k}"'
        )
    return parse_scenario("\n".join(lines) + "\n", "random.toml")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=lawful_scenarios())
def test_no_plaintext_ever_appears_in_a_disclosure_under_an_end_to_end_profile(scenario: Scenario) -> None:
    run = Run(scenario)
    for d in run.result.disclosures:
        if d.served_on is not None:
            # A warrant on a backup custodian (iCloud, Google Drive) is the second door, not the relay:
            # tests/sims/test_fbi_chart.py checks what it opens and when end-to-end backups close it.
            continue
        blob = json.dumps(d.to_json(), ensure_ascii=False) + d.to_markdown()
        for text in run.texts():
            assert text not in blob, f"{scenario.relay.profile}: {d.process.process} disclosed {text!r}"
        assert "content" not in d.provided
        assert not any(a["opened"] for a in d.decryption)


def test_plaintext_does_appear_under_a_provider_key_whose_policy_hands_it_over(
    runs: dict[str, Run], bbm_handing_over: str
) -> None:
    run = Run(under(bbm_handing_over))
    for name in ("wiretap", "search_warrant"):
        blob = json.dumps(run.disclosure(name).to_json(), ensure_ascii=False)
        assert any(t in blob for t in run.texts()), name
    # Telegram's cloud chats: the keys are on its servers, so it could; its policy says no.
    tg = runs["telegram-cloud"]
    d = tg.disclosure("search_warrant")
    assert d.reasons["content"][0] == "withheld_by_policy"
    assert "policy" in d.withheld["content"]
    blob = json.dumps(d.to_json(), ensure_ascii=False) + d.to_markdown()
    assert not any(t in blob for t in tg.texts())


# --- the Signal subpoena of 2016 --------------------------------------------------------------


def test_signal_2016_the_subpoena_gets_two_timestamps_and_nothing_else_exists() -> None:
    scenario = resolve_scenario("signal-subpoena-2016")
    run = Run(scenario)
    d = run.disclosure("grand-jury-subpoena-dana")
    assert set(d.provided) == {"account_created", "last_seen"}
    (seen,) = d.provided["last_seen"]
    assert seen["last_seen"] % 86400 == 0  # the day, not the time
    online = [e["t"] for e in run.events if e["kind"] == "device_online" and e["device"] == "dana/1"]
    epoch = scenario.epoch  # the relay's clock starts on the scenario's date, 2016-05-01
    assert (epoch + max(online)) % 86400 != 0  # so the rounding is visible
    assert seen["last_seen"] == epoch + max(online) - (epoch + max(online)) % 86400
    assert datetime.fromtimestamp(seen["last_seen"], UTC).date() == date(2016, 5, 3)
    # Everything else the subpoena asks for was never recorded. The one exception: the relay must
    # know an account's devices to deliver to them, so that is held, and not handed over.
    assert set(d.withheld) == {"device_info"}
    not_retained = d.by_reason("not_retained")
    assert set(not_retained) == ASKS["subpoena"] - {"account_created", "last_seen", "device_info"}
    assert set(d.reasons) == set(not_retained) | {"device_info"}  # nothing else, for no other reason
    assert "never recorded" in not_retained["ip_addresses"]
    for category in ("message_log", "message_counts"):  # 2016: seen while routing, never kept
        assert "kept no record" in not_retained[category]
    assert "phone number" in not_retained["subscriber_info"]
    assert len(run.truth.messages) == len(scenario.conversations[0].messages) + len(
        scenario.conversations[1].messages
    )


# --- several profiles from one scenario ---------------------------------------------------------


def test_pakistan_2015_the_record_and_separately_the_counterfactual(tmp_path: Path) -> None:
    """The PTA's demand, made on BES, refused, then withdrawn; a Pakistani court order gets location,
    who contacted whom and metadata, never the words; had BlackBerry complied (its separate, labelled
    run), BES's routing and ciphertext, still unreadable."""
    scenario = resolve_scenario("pakistan-2015")
    _result, summary = run_to_dir(scenario, tmp_path)
    texts = [m.text for c in scenario.conversations for m in c.messages]

    def load(*parts: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(tmp_path.joinpath(*parts).read_text(encoding="utf-8"))
        return data

    demand = load("bes", "disclosures", "pta-blanket-demand.json")
    assert demand["jurisdiction"] == "pk" and "Re-organization) Act 1996" in demand["statute"]
    assert [h["response"] for h in demand["history"]] == ["refused", "withdrawn"]
    assert demand["response"] == "withdrawn" and not demand["provided"]
    # the metadata BlackBerry holds is not handed over in bulk: withheld ("will not"), by its refusal,
    # in the record's words; the content it cannot provide
    withheld = demand["not_provided"]["withheld_by_policy"]
    assert set(withheld) == ASKS["pta_demand"] - {"content"}
    for why in withheld.values():
        assert "nor will we provide any so-called back doors to our BES servers" in why
        assert "No bulk hand-over of BES metadata happened" in why
    assert (
        "we cannot provide the content of our customers' BES traffic"
        in (demand["not_provided"]["cryptographically_impossible"]["content"])
    )
    md = (tmp_path / "bes" / "disclosures" / "pta-blanket-demand.md").read_text(encoding="utf-8")
    assert "demand withdrawn at" in md and "U.S.C." not in md.split("## Handed over")[0]
    # the demand named BES, not consumer BBM: on consumer BBM nothing was served, nor refused
    assert not (tmp_path / "bbm-consumer" / "disclosures" / "pta-blanket-demand.json").exists()
    events = (tmp_path / "bbm-consumer" / "transcript.jsonl").read_text(encoding="utf-8")
    assert "pta-blanket-demand" not in events
    assert {row["name"]: set(row["profiles"]) for row in summary["comparison"]}["pta-blanket-demand"] == {
        "bes"
    }
    for profile in ("bes", "bbm-consumer"):
        order = load(profile, "disclosures", "court-order-saima.json")
        assert order["jurisdiction"] == "pk" and order["process"] == "pk_court_order"
        assert {"location", "message_log", "account_created"} <= set(order["provided"])
        assert order["provided"]["message_log"] and "content" not in order["provided"]
        assert not any(t in json.dumps(order, ensure_ascii=False) for t in texts)
    bes = load("bes", "disclosures", "pta-blanket-demand.json")
    assert "enterprise" in bes["not_provided"]["cryptographically_impossible"]["content"]
    bes_order = load("bes", "disclosures", "court-order-saima.json")
    assert "content" in bes_order["not_provided"]["cryptographically_impossible"]
    # consumer BBM: the words withheld by policy while the provider's own key opens them
    bbm_order = load("bbm-consumer", "disclosures", "court-order-saima.json")
    why = bbm_order["not_provided"]["withheld_by_policy"]["content"]
    assert "only its policy keeps them back" in why
    attempts = bbm_order["decryption_attempts"]
    assert attempts and all(a["opened"] for a in attempts)
    record = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert not any(t in record for t in texts) and "COUNTERFACTUAL" not in record

    # the counterfactual: a separate run, labelled, never mixed with the record
    assert "counterfactual" in summary
    cf_bes = load("counterfactual", "bes", "disclosures", "pta-blanket-demand.json")
    assert cf_bes["response"] == "complied"
    assert "content" in cf_bes["not_provided"]["cryptographically_impossible"]
    assert not any(t in json.dumps(cf_bes, ensure_ascii=False) for t in texts)
    assert cf_bes["provided"]["ciphertext"] and cf_bes["provided"]["realtime_routing"]
    # the record served the demand on BES alone; the counterfactual makes the same demand of consumer
    # BBM too (the other design, labelled so), and there the provider's own key opens every word
    assert not (tmp_path / "bbm-consumer" / "disclosures" / "pta-blanket-demand.json").exists()
    cf_bbm = load("counterfactual", "bbm-consumer", "disclosures", "pta-blanket-demand.json")
    assert cf_bbm["response"] == "complied" and "content" in cf_bbm["provided"]
    assert not any("Assumption" in note for note in cf_bbm.get("notes", []))  # it assumed a refusal
    assert "\x00" not in (tmp_path / "counterfactual.md").read_text(encoding="utf-8")
    assert "COUNTERFACTUAL" in (tmp_path / "counterfactual" / "comparison.md").read_text(encoding="utf-8")
    told = (tmp_path / "counterfactual.md").read_text(encoding="utf-8")
    assert told.index("THE RECORD") < told.index("had the provider complied")
    bbm = told.split("### bbm-consumer")[1]
    assert "not served on this operator: the demand was made of bes only" in bbm
    assert "had the same demand been made of this operator, and complied with" in bbm
    assert any(t in bbm for t in texts)


def test_india_2010_the_interception_facility_reads_bbm_but_not_bes(tmp_path: Path) -> None:
    """The Mumbai facility is a capability used per interception order, not a blanket copy."""
    _result, summary = run_to_dir(resolve_scenario("india-2010"), tmp_path)
    assert {row["process"] for row in summary["comparison"]} == {"telegraph_act_5_2", "it_act_69"}
    assert all(row["target"] for row in summary["comparison"])
    for row in summary["comparison"]:
        assert "content" in row["profiles"]["bbm-consumer"]["provided"]
        assert "content" in row["profiles"]["bes"]["cryptographically_impossible"]
    # the words the phones wrote, counted apart from the receipts the same key opens (it said "8
    # message(s) in the clear" where 4 were written)
    md = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert md.count("**handed over, decrypted**: 4 message(s) in the clear (besides 4 receipt(s)") == 2
    d = json.loads((tmp_path / "bes" / "disclosures" / "interception-order-arjun.json").read_text("utf-8"))
    assert d["jurisdiction"] == "in" and "s.69" in d["statute"] and d["response"] == "complied"
    # that BES routing went to an Indian order is the project's assumption, and each BES disclosure says so
    for order in ("interception-order-priya", "interception-order-arjun"):
        text = (tmp_path / "bes" / "disclosures" / f"{order}.md").read_text("utf-8")
        assert "Assumption: the record says India's interception facility (Mumbai, 2012) covered" in text
        assert "Assumption:" not in (tmp_path / "bbm-consumer" / "disclosures" / f"{order}.md").read_text(
            "utf-8"
        )


_INDIA_DEMAND = """
[scenario]
name = "india-demand"
duration = "2h"
start = 2013-01-07T03:30:00Z

[relay]
profile = "{profile}"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [{{ at = "1h", from = "a", text = "ledgers" }}]

[[events]]
at = "30m"
kind = "legal_process"
process = "india_access_demand"
name = "demand"
"""


def test_indias_2010_demand_gets_no_bes_ciphertext_as_the_facility_did_not_cover_bes() -> None:
    """The record: the Mumbai facility (2012) covered consumer BBM and BIS e-mail, not BES. Under India's
    2010 demand BES hands over no ciphertext, as under India's per-order interceptions; consumer BBM does."""
    (bes,) = Simulation(parse_scenario(_INDIA_DEMAND.format(profile="bes"), "x.toml")).run().disclosures
    assert "ciphertext" not in bes.provided and bes.reasons["ciphertext"][0] == "withheld_by_policy"
    assert bes.provided["realtime_routing"] and any(
        n.startswith("Assumption: the record says") for n in bes.notes
    )
    (bbm,) = (
        Simulation(parse_scenario(_INDIA_DEMAND.format(profile="bbm-consumer"), "x.toml")).run().disclosures
    )
    assert bbm.provided["ciphertext"]


# BlackBerry under every other country's instrument, as the record has it: each row what is handed over,
# the response, why the words are not (or are), and the record it rests on. "(assumed)": the record is
# silent, and the disclosure says so ("Assumption: ...").
_BB_RECORDS = {
    "subscriber_info",
    "account_created",
    "last_seen",
    "ip_addresses",
    "device_info",
    "message_log",
    "message_counts",
    "location",
}
_ROUTED = {"ip_addresses", "realtime_routing"}
_CHEN = "John Chen, December 2015: location, who contacted whom, certain metadata, never the correspondence"
_UK_AU = ("ipa_targeted_interception", "tola_tar", "tola_tan")
BB_TABLE: dict[tuple[str, str], tuple[str, set[str], str, bool, str]] = {
    # (profile, process): (response, provided, the words' reason or "provided", assumed, source)
    ("bes", "pta_demand"): (
        "refused",
        set(),
        "cryptographically_impossible",
        False,
        "PTA, 2015-12-31: 'accepting BlackBerry's position that we cannot provide the content of our customers' "
        "BES traffic'; BlackBerry refused, 2015-11-30",
    ),
    ("bbm-consumer", "pta_demand"): (
        "refused",
        set(),
        "withheld_by_policy",
        True,
        "(assumed) the demand named BES, not consumer BBM: the same refusal; the global key would open the words",
    ),
    **{
        (bb, "pk_court_order"): (
            "complied",
            _BB_RECORDS,
            "cryptographically_impossible" if bb == "bes" else "withheld_by_policy",
            False,
            _CHEN,
        )
        for bb in ("bes", "bbm-consumer")
    },
    **{
        (bb, "ifta_warrant"): (
            "complied",
            _ROUTED,
            "cryptographically_impossible" if bb == "bes" else "withheld_by_policy",
            False,
            _CHEN,
        )
        for bb in ("bes", "bbm-consumer")
    },
    **{
        ("bes", p): (
            "complied",
            _ROUTED | ({"location"} if p == "india_access_demand" else set()),
            "cryptographically_impossible",
            True,
            "(assumed routing) the Mumbai facility (2012) covered consumer BBM and BIS e-mail, not BES; India "
            "accepted in 2013 that enterprise data comes from the enterprise",
        )
        for p in ("telegraph_act_5_2", "it_act_69", "india_access_demand")
    },
    **{
        ("bbm-consumer", p): (
            "complied",
            _ROUTED | {"ciphertext", "content"} | ({"location"} if p == "india_access_demand" else set()),
            "provided",
            False,
            "the Mumbai facility (2012) covered consumer BBM: the words, opened with BlackBerry's global key",
        )
        for p in ("telegraph_act_5_2", "it_act_69", "india_access_demand")
    },
    ("bbm-consumer", "ca_part_vi_authorization"): (
        "complied",
        _ROUTED | {"ciphertext", "content"},
        "provided",
        True,
        "(assumed who turned the key) Project Clemenza: the RCMP held the global key and read about a million "
        "PIN messages",
    ),
    ("bes", "ca_part_vi_authorization"): (
        "complied",
        _ROUTED,
        "cryptographically_impossible",
        True,
        f"(assumed) the record says nothing of BES under Canadian law: {_CHEN}",
    ),
    **{
        (bb, p): (
            "complied",
            _ROUTED,
            "cryptographically_impossible" if bb == "bes" else "withheld_by_policy",
            True,
            f"(assumed) the record says nothing of BlackBerry under UK or Australian law: {_CHEN}",
        )
        for bb in ("bes", "bbm-consumer")
        for p in _UK_AU
    },
}

_BB_ORDERS = """
[scenario]
name = "blackberry-abroad"
duration = "3h"
seed = 5

[relay]
profile = "{profile}"

[[people]]
name = "a"

[[people]]
name = "b"
devices = [{{ offline = [["5m", "45m"]] }}]

[[conversations]]
between = ["a", "b"]
messages = [{{ at = "10m", from = "a", text = "tender" }}, {{ at = "1h", from = "b", text = "ledgers" }}]
"""


@pytest.fixture(scope="module")
def bb_abroad() -> dict[str, dict[str, Disclosure]]:
    out = {}
    for profile in ("bes", "bbm-consumer"):
        events = "".join(
            f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\n'
            + ("" if p in ("pta_demand", "india_access_demand") else 'target = "a"\n')
            for (bb, p) in BB_TABLE
            if bb == profile
        )
        run = Simulation(parse_scenario(_BB_ORDERS.format(profile=profile) + events, "x.toml")).run()
        out[profile] = {d.process.process: d for d in run.disclosures}
    return out


@pytest.mark.parametrize(("profile", "process"), sorted(BB_TABLE))
def test_blackberry_under_each_countrys_instrument_as_the_record_has_it(
    bb_abroad: dict[str, dict[str, Disclosure]], profile: str, process: str
) -> None:
    response, expected, words, assumed, source = BB_TABLE[(profile, process)]
    d = bb_abroad[profile][process]
    assert d.response == response, source
    assert set(d.provided) == expected, source
    assert ("provided" if "content" in d.provided else d.reasons["content"][0]) == words, source
    assert any(n.startswith("Assumption: ") for n in d.notes) == assumed, source


# A Pakistani court's order (pk_court_order) under each real profile: the record (the FBI chart, providers'
# own pages) is of US legal process for every provider but BlackBerry (John Chen, December 2015) and Telegram
# (its policy names "the relevant judicial authorities", of any country); for the others what a Pakistani
# court gets is the project's assumption, and every such disclosure says so. (Wire: every instrument.)
_PK_HANDS_WHAT_A_WARRANT_GETS = {
    "signal",
    "threema",
    "wickr",
    "viber",
    "line",
    "line-letter-sealing-off",
    "wechat",
}
# their records are of US process too, and say nothing of a Pakistani court: that they hand one nothing is
# assumed as well (no source says their policy refuses one)
_PK_NOTHING = {"whatsapp", "imessage"}
_PK_ASSUMED = _PK_HANDS_WHAT_A_WARRANT_GETS | _PK_NOTHING | {"wire"}


@pytest.fixture(scope="module")
def pk_orders() -> dict[str, Disclosure]:
    out = {}
    for profile in REAL_PROFILES:
        events = '\n[[events]]\nat = "2h"\nkind = "legal_process"\nprocess = "pk_court_order"\ntarget = "a"\n'
        run = Simulation(parse_scenario(_BB_ORDERS.format(profile=profile) + events, "x.toml")).run()
        (out[profile],) = run.disclosures
    return out


@pytest.mark.parametrize("profile", REAL_PROFILES)
def test_a_pakistani_court_order_says_where_no_source_backs_the_answer(
    pk_orders: dict[str, Disclosure], profile: str
) -> None:
    d = pk_orders[profile]
    assumed = [n for n in d.notes if n.startswith("Assumption: ")]
    assert bool(assumed) == (profile in _PK_ASSUMED), assumed
    if profile in _PK_ASSUMED - {"wire"}:
        assert "Pakistani court's order" in assumed[0]
    if profile in _PK_HANDS_WHAT_A_WARRANT_GETS:
        # what it hands over is what it hands a US search warrant, which asks for the same
        assert set(d.provided) == set(get_profile(profile).discloses["search_warrant"]) & set(d.provided)
    assert bool(d.provided) != (profile in _PK_NOTHING)
    if profile in _PK_NOTHING:
        assert "hands one nothing" in assumed[0]
        # and no reason claims a published policy no source shows
        assert not any("published policy" in why for _, why in d.reasons.values()), d.reasons


# WhatsApp, Telegram's cloud chats and WeChat under a forward-looking order of another country's law (an
# interception warrant, direction or authorization, an assistance request or notice, a demand on all traffic):
# each relay could collect, and each hands nothing over. Their records (WhatsApp's guide, the FBI chart, In re
# WhatsApp; Telegram's privacy policy, of what it hands a court's order looking back; the chart alone for
# WeChat) say nothing of one, so that each hands one nothing is assumed, said in every such disclosure; no
# reason or note claims a published policy that hands nothing over, and no reason that says the relay could
# collect cites the FBI chart's real-time column, which is of US process.
_FOREIGN_FORWARD = sorted(
    i.key for i in INSTRUMENTS.values() if i.jurisdiction != "us" and i.forward and not i.builds
)
_COULD_COLLECT = ("whatsapp", "telegram-cloud", "wechat")


@pytest.fixture(scope="module")
def could_collect_abroad() -> dict[str, dict[str, Disclosure]]:
    events = "".join(
        f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\n'
        + ('target = "a"\n' if INSTRUMENTS[p].needs_target else "")
        for p in _FOREIGN_FORWARD
    )
    out = {}
    for profile in _COULD_COLLECT:
        run = Simulation(parse_scenario(_BB_ORDERS.format(profile=profile) + events, "x.toml")).run()
        out[profile] = {d.process.process: d for d in run.disclosures}
    return out


@pytest.mark.parametrize("profile", _COULD_COLLECT)
@pytest.mark.parametrize("process", _FOREIGN_FORWARD)
def test_a_relay_that_could_collect_under_a_foreign_forward_order_says_its_answer_is_assumed(
    could_collect_abroad: dict[str, dict[str, Disclosure]], profile: str, process: str
) -> None:
    d = could_collect_abroad[profile][process]
    assert not d.provided
    assumed = [n for n in d.notes if n.startswith("Assumption: ")]
    assert len(assumed) == 1, d.notes
    assert INSTRUMENTS[process].a_name in assumed[0] and "hands one nothing" in assumed[0]
    assert "nothing was tapped" in " ".join(d.notes)
    withheld = [why for reason, why in d.reasons.values() if reason == "withheld_by_policy"]
    assert withheld and all("the project's assumption" in why for why in withheld), d.reasons
    said = [why for _, why in d.reasons.values()] + d.notes
    assert not any("published policy" in x for x in said), said
    could = [why for _, why in d.reasons.values() if "could collect it in real time" in why]
    assert could and not any("FBI chart" in why for why in could), could


@pytest.mark.parametrize("process", ["pen_register", "wiretap"])
def test_wechat_under_a_us_real_time_order_says_what_the_fbi_chart_shows_not_a_policy(process: str) -> None:
    """WeChat's record is the FBI chart alone, not a published policy of WeChat's (as Wire's was no guide of
    its own): where its relay could collect under a US pen register or wiretap order and collects nothing,
    every reason and note says what the chart shows (no real-time return from it), never "its published
    policy hands nothing over". Nor do Telegram's cloud chats: their privacy policy, on record, names what a
    court's order gets (IP address and phone number: records held, handed over after the fact), not what a
    pen register or wiretap order gets, itself a court's order; that nothing in real time is the project's
    reading of it and of the chart."""
    events = f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{process}"\ntarget = "a"\n'
    said = {}
    for profile in ("wechat", "telegram-cloud"):
        scenario = parse_scenario(_BB_ORDERS.format(profile=profile) + events, "x.toml")
        (d,) = Simulation(scenario).run().disclosures
        assert not d.provided
        could = [why for _, why in d.reasons.values() if "could collect it in real time" in why]
        could += [n for n in d.notes if "could collect under" in n]
        assert len(could) >= 2, (d.reasons, d.notes)
        said[profile] = could
    assert not any("published policy" in x for x in said["wechat"]), said["wechat"]
    assert all("the FBI chart (2021), shows no real-time return from it" in x for x in said["wechat"])
    assert not any("published policy" in x for x in said["telegram-cloud"]), said["telegram-cloud"]
    assert all(
        "§8.3) names records it holds, handed over after the fact" in x for x in said["telegram-cloud"]
    )
    assert all("the project's reading" in x for x in said["telegram-cloud"])


# BES's notes belong to the country of the order, and cite nothing from after the order's date unless they
# say so: the PTA's statement (2015-12-31) in Pakistan's disclosures only, from that date; India's facility
# and its acceptance (2012, 2013) in India's only; BlackBerry's policy as reported (December 2015) said to
# be later where the order is earlier.
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_CITED = re.compile(r"(\d{4})-(\d{2})-(\d{2})|(" + "|".join(_MONTHS) + r") (\d{4})")


def _cited(text: str) -> list[date]:
    return [
        date(int(m[1]), int(m[2]), int(m[3])) if m[1] else date(int(m[5]), _MONTHS.index(m[4]) + 1, 1)
        for m in _CITED.finditer(text)
    ]


def test_telegram_before_its_2018_policy_says_the_policy_that_followed_is_after_this_date() -> None:
    """Before August 2018 Telegram's reasons quote its earlier word ('0 bytes') and name the policy that
    followed (§8.3): every date they cite after the order's day is said to be after this date, as the other
    dated texts say it."""
    start = date(2017, 5, 2)
    orders = ("subpoena", "pen_register", "ifta_warrant")
    events = "".join(
        f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\ntarget = "a"\n'
        for p in orders
    )
    text = (
        _BB_ORDERS.format(profile="telegram-cloud").replace("seed = 5", f"seed = 5\nstart = {start}") + events
    )
    by = {d.process.process: d for d in Simulation(parse_scenario(text, "x.toml")).run().disclosures}
    followed = []
    for process in orders:
        for _, why in by[process].reasons.values():
            if "0 bytes" in why:
                followed.append(why)
                assert any(cited > start for cited in _cited(why)), why
                assert "after this date" in why, why
    assert followed


@pytest.mark.parametrize(
    "start", [date(2013, 1, 7), date(2015, 7, 1), date(2015, 12, 15), date(2016, 2, 1), date(2017, 1, 2)]
)
@pytest.mark.parametrize("profile", ["bes", "bbm-consumer"])
def test_blackberrys_notes_belong_to_the_orders_country_and_date(profile: str, start: date) -> None:
    orders = ("pk_court_order", "telegraph_act_5_2", "search_warrant", "ipa_targeted_interception")
    # (a UK warrant only from the Investigatory Powers Act 2016, 2016-11-29)
    orders = orders if start >= date(2016, 11, 29) else orders[:-1]
    events = "".join(
        f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\ntarget = "a"\n'
        for p in orders
    )
    text = _BB_ORDERS.format(profile=profile).replace("seed = 5", f"seed = 5\nstart = {start}") + events
    by = {d.process.process: d for d in Simulation(parse_scenario(text, "x.toml")).run().disclosures}
    for process in orders:
        d = by[process]
        # (the country's own limit on what a notice can compel is the country's, not the profile's: apart)
        limit = JURISDICTIONS[d.process.instrument.jurisdiction].protection_limit or "\0"
        said = " ".join(
            why.replace(limit, "") for c, (_, why) in d.reasons.items() if c in ("content", "ciphertext")
        )
        pta = "the PTA accepted it" in said
        india = "Mumbai" in said or "India accepted" in said
        assert pta == (profile == "bes" and process == "pk_court_order" and start >= date(2015, 12, 31)), said
        assert india == (profile == "bes" and process == "telegraph_act_5_2"), said
        for cited in _cited(said):
            assert cited <= start or "after this date" in said, (cited, said)


_BASE = """
[scenario]
name = "x"
duration = "1h"
{head}

[relay]
{relay}

[[people]]
name = "a"

[[people]]
name = "b"
"""


@pytest.mark.parametrize(
    ("head", "relay", "expected"),
    [
        ('compare_profiles = ["bes", "nope"]', "", "scenario.compare_profiles[1]: expected one of"),
        ('compare_profiles = ["bes"]', "", "expected at least two profiles"),
        ('compare_profiles = ["bes", "bes"]', "", "expected different profiles"),
        ('compare_profiles = ["bes", "signal"]', 'profile = "signal"', "relay.profile: the scenario sets"),
        ('compare_profiles = ["bes", "signal"]\nmatrix = true', "", "not both"),
        ('matrix = "yes"', "", "scenario.matrix: expected true or false"),
    ],
)
def test_profile_options_are_checked(head: str, relay: str, expected: str) -> None:
    with pytest.raises(ScenarioError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(_BASE.format(head=head, relay=relay), "x.toml")


def test_the_options_load() -> None:
    sc = parse_scenario(_BASE.format(head='compare_profiles = ["bes", "signal"]', relay=""), "x.toml")
    assert sc.compare_profiles == ("bes", "signal") and not sc.matrix
    assert parse_scenario(_BASE.format(head="matrix = true", relay=""), "x.toml").matrix


_ORDER_ON = """
[[events]]
at = "10m"
kind = "legal_process"
process = "pta_demand"
{profiles}
"""


@pytest.mark.parametrize(
    ("head", "relay", "profiles", "expected"),
    [
        (
            'compare_profiles = ["bes", "signal"]',
            "",
            'profiles = ["bes", "nope"]',
            "events[0].profiles[1]: expected one of",
        ),
        (
            'compare_profiles = ["bes", "signal"]',
            "",
            "profiles = []",
            "events[0].profiles: expected at least one",
        ),
        (
            'compare_profiles = ["bes", "signal"]',
            "",
            'profiles = ["bes", "bes"]',
            "events[0].profiles: expected different",
        ),
        (
            'compare_profiles = ["bes", "signal"]',
            "",
            'profiles = "bes"',
            "events[0].profiles: expected an array",
        ),
        (
            'compare_profiles = ["bes", "signal"]',
            "",
            'profiles = ["bbm-consumer"]',
            "events[0].profiles: expected profiles the scenario runs under ('bes', 'signal'), got 'bbm-consumer'",
        ),
        (
            "",
            'profile = "signal"',
            'profiles = ["bes"]',
            "events[0].profiles: expected profiles the scenario runs under ('signal')",
        ),
        (
            "matrix = true",
            "",
            'profiles = ["bes"]',
            "events[0].profiles: a matrix scenario serves every order",
        ),
    ],
)
def test_an_order_served_on_some_profiles_only_is_checked(
    head: str, relay: str, profiles: str, expected: str
) -> None:
    text = _BASE.format(head=head, relay=relay) + _ORDER_ON.format(profiles=profiles)
    with pytest.raises(ScenarioError, match=re.escape(expected)):
        parse_scenario(text, "x.toml")


def test_an_order_served_on_some_profiles_only_is_served_on_those_only() -> None:
    text = _BASE.format(head="", relay='profile = "bes"') + _ORDER_ON.format(profiles='profiles = ["bes"]')
    sc = parse_scenario(text, "x.toml")
    (order,) = sc.events
    assert isinstance(order, LegalProcessEvent) and order.profiles == ("bes",)
    assert order.served_under("bes") and not order.served_under("bbm-consumer")
    assert [d.process.name for d in Run(sc).result.disclosures] == [order.name]
    assert not Run(replace(sc, relay=replace(sc.relay, profile="bbm-consumer"))).result.disclosures


# --- relaysim disclose on a finished run --------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fbi-chart afternoon on consumer BBM, with Omar's phone off from 2 pm to past the end."""
    return _finished_under("bbm-consumer", tmp_path_factory.mktemp("finished"))


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_disclose_serves_a_finished_run_without_touching_its_file(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = finished / "relay.db"
    before = _digest(db)
    files = sorted(p.name for p in finished.iterdir())
    out_json = tmp_path / "d.json"
    argv = ["disclose", "--db", str(db), "--process", "court_order_2703d", "--target", "tariq"]
    assert main([*argv, "--from", "1h", "--to", "2h", "--json", str(out_json)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Disclosure: court_order_2703d-tariq")
    assert "00:20:00" not in md  # only the window asked for
    data = json.loads(out_json.read_text(encoding="utf-8"))
    log = data["provided"]["message_log"]
    times = [r["time"] - EPOCH for r in log]
    assert times and all(3600 <= t <= 7200 for t in times)
    # Tariq's 1:40 message, among the receipts the log cannot tell from messages (the page shows
    # the first rows, the JSON all of them)
    assert any(
        6000 <= r["time"] - EPOCH < 6001 and (r["account"], r["recipient_account"]) == ("tariq", "farah")
        for r in log
    )
    assert ("01:40:00 tariq → farah" in md) or "more (all of them are in the JSON file)" in md
    assert _digest(db) == before and sorted(p.name for p in finished.iterdir()) == files
    # BlackBerry's policy keeps the words back from a search warrant, although its key would open them
    assert main(["disclose", "--db", str(db), "--process", "search_warrant", "--target", "omar"]) == 0
    md = capsys.readouterr().out
    assert "Call me when you land." not in md and "withheld by policy" in md
    assert _digest(db) == before


def _finished_under(profile: str, out: Path) -> Path:
    """The fbi-chart afternoon under ``profile``, with Omar's phone off from 2 pm to past the end."""
    omar = FBI.person("omar")
    away = replace(omar, devices=tuple(replace(d, offline=((7200.0, 86400.0),)) for d in omar.devices))
    people = tuple(away if p.name == "omar" else p for p in FBI.people)
    run_to_dir(replace(under(profile), people=people), out)
    return out


def test_disclose_opens_what_waits_with_the_key_provider_json_names(
    bbm_handing_over: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _finished_under(bbm_handing_over, tmp_path / "run") / "relay.db"
    before = _digest(db)
    # the provider's key comes from provider.json: what still waited for Omar at the end, decrypted
    assert main(["disclose", "--db", str(db), "--process", "search_warrant", "--target", "omar"]) == 0
    md = capsys.readouterr().out
    assert "“Call me when you land.”" in md and "opened" in md
    # served "at 3h": what had arrived by then (the store is the one at the end of the run)
    assert (
        main(["disclose", "--db", str(db), "--process", "search_warrant", "--target", "omar", "--at", "3h"])
        == 0
    )
    md = capsys.readouterr().out
    assert "Call me when you land." in md and "Will do. Safe travels." not in md
    assert _digest(db) == before


def test_disclose_says_a_forward_looking_order_collects_nothing_after_the_fact(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["disclose", "--db", str(finished / "relay.db"), "--process", "wiretap", "--target", "tariq"])
        == 0
    )
    cap = capsys.readouterr()
    assert "## Handed over\n\nNothing." in cap.out
    assert "collects only from its service on" in cap.out
    assert "put it in the scenario's timeline" in cap.err and 'kind = "legal_process"' in cap.err


def test_disclose_refuses_a_warrant_on_the_backup_custodian_saying_where_it_is_served(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was served on the relay's own desk: "Served on: the relay's operator", the profile's sources, and what the
    relay holds (the content "cryptographically impossible" even for a backup its custodian can read), where the
    timeline serves it on the backup's custodian (relay/backup.py)."""
    db = finished / "relay.db"
    before = _digest(db)
    argv = ["disclose", "--db", str(db), "--process", "backup_warrant", "--target", "omar"]
    assert main([*argv, "--json", str(tmp_path / "d.json")]) == 2
    cap = capsys.readouterr()
    assert not cap.out and not (tmp_path / "d.json").exists()
    assert "--process backup_warrant" in cap.err and "not on the relay's operator" in cap.err, cap.err
    assert "served on the custodian of the target's device backups" in cap.err, cap.err
    assert "timeline" in cap.err and 'process = "backup_warrant"' in cap.err, cap.err
    assert _digest(db) == before
    # nor does the relay's desk answer one served on it
    from relaysim.relay.compliance import ComplianceDesk, LegalProcess
    from relaysim.relay.store import Store

    store = Store(tmp_path / "relay.db", durable=False)
    try:
        desk = ComplianceDesk(store, get_profile("whatsapp"))
        with pytest.raises(ValueError, match="served on the custodian of the target's device backups"):
            desk.serve(LegalProcess(name="b", process="backup_warrant", target="omar", served=0.0))
    finally:
        store.close()


def test_a_forward_order_served_after_the_fact_keeps_what_could_never_be_had(tmp_path: Path) -> None:
    """Served on a finished run, a forward-looking order collected nothing, and what was not kept for it
    is "not retained"; but what the relay could never collect, or no key it holds opens, keeps that
    reason (it read "not retained" for a Signal wiretap's content and an iMessage pen register's
    routing, where the FBI chart says "no capability")."""
    db = str(_finished_under("signal", tmp_path / "signal") / "relay.db")
    out = tmp_path / "wiretap.json"
    assert (
        main(["disclose", "--db", db, "--process", "wiretap", "--target", "tariq", "--json", str(out)]) == 0
    )
    d = json.loads(out.read_text("utf-8"))
    assert not d["provided"] and "content" in d["not_provided"]["cryptographically_impossible"]
    assert {"realtime_routing", "ip_addresses", "ciphertext"} <= set(d["not_provided"]["no_capability"])
    db = str(_finished_under("imessage", tmp_path / "imessage") / "relay.db")
    out = tmp_path / "pen.json"
    assert (
        main(["disclose", "--db", db, "--process", "pen_register", "--target", "tariq", "--json", str(out)])
        == 0
    )
    d = json.loads(out.read_text("utf-8"))
    assert set(d["not_provided"]["no_capability"]) == {"realtime_routing", "ip_addresses"}
    assert "collects only from its service on" in d["not_provided"]["not_retained"]["lookup_log"]


def test_disclose_under_another_profile_warns_and_bad_arguments_are_clear(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(finished / "relay.db")
    assert (
        main(["disclose", "--db", db, "--profile", "signal", "--process", "subpoena", "--target", "tariq"])
        == 0
    )
    err = capsys.readouterr().err
    assert "recorded under the 'bbm-consumer' profile, not 'signal': the answer may describe records" in err
    assert "signal's relay would not have kept" in err and "'signal''s" not in err, err  # (said 'signal''s)
    assert main(["disclose", "--db", db, "--process", "subpoena"]) == 2
    assert "give --target ACCOUNT" in capsys.readouterr().err
    assert main(["disclose", "--db", db, "--process", "it_act_69"]) == 2  # said "an it_act_69", not "a"
    assert "relaysim disclose: an it_act_69 names the account it is served on: give --target ACCOUNT" in (
        capsys.readouterr().err
    )
    assert (
        main(["disclose", "--db", str(finished / "nope.db"), "--process", "subpoena", "--target", "x"]) == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_disclose_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["disclose", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "relaysim disclose --db" in out and "pen_register" in out


GLOBAL_KEY_RUN = """
[scenario]
name = "gk"
duration = "2h"
seed = 1

[relay]
profile = "wickr"

[[people]]
name = "ana"
devices = [{ region = "us", address = "198.51.100.10" }]

[[people]]
name = "ben"
devices = [{ region = "us", address = "198.51.100.11", offline = [["30m", "2h"]] }]

[[conversations]]
between = ["ana", "ben"]
messages = [{ at = "40m", from = "ana", text = "meet at noon" }]

[[events]]
at = "20m"
kind = "exceptional_access"
demand = "global_key"

[[events]]
at = "1h"
kind = "legal_process"
process = "search_warrant"
target = "ben"
"""


def test_disclose_after_a_global_key_mandate_answers_as_the_runs_desk_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A global-key mandate's key was not in provider.json: disclose on the finished run said content was
    cryptographically impossible where the run's own desk, which held that key, said it was withheld by
    policy and its key opened the message waiting. provider.json now names the key and since when the
    provider held it (``held_from``); an order served before the mandate holds no such key."""
    out = tmp_path / "run"
    run_to_dir(parse_scenario(GLOBAL_KEY_RUN), out)
    provider = json.loads((out / "provider.json").read_text())
    (mandated,) = provider["content_keys"]
    assert mandated["key_id"] == "global-key" and mandated["held_from"] == provider["clock_epoch"] + 20 * 60
    in_run = json.loads((out / "disclosures" / "search_warrant-ben-1.json").read_text())
    assert in_run["content_keys_held"] == 1 and "content" in in_run["not_provided"]["withheld_by_policy"]
    argv = ["disclose", "--db", str(out / "relay.db"), "--process", "search_warrant", "--target", "ben"]
    after = tmp_path / "after.json"
    assert main([*argv, "--at", "1h", "--json", str(after), "--name", "search_warrant-ben-1"]) == 0
    capsys.readouterr()
    post = json.loads(after.read_text())
    assert {k: v for k, v in post.items() if k != "score"} == {
        k: v for k, v in in_run.items() if k != "score"
    }
    before = tmp_path / "before.json"
    assert main([*argv, "--at", "10m", "--json", str(before)]) == 0
    assert json.loads(before.read_text())["content_keys_held"] == 0


# An instrument exists from the day the law that makes it was made: a run set earlier that serves one is
# refused, naming the law and its date, as an instrument of another country's law is. A demand that is one
# act, not a power (the PTA's of July 2015, India's of 2010), exists from the day it was made (the record's
# month or year: its first day).
_LAWS = [
    ("ipa_targeted_interception", date(2016, 11, 29), "Investigatory Powers Act 2016"),
    ("ipa_tcn", date(2016, 11, 29), "Investigatory Powers Act 2016"),
    ("tola_tar", date(2018, 12, 8), "TOLA Act 2018"),
    ("tola_tan", date(2018, 12, 8), "TOLA Act 2018"),
    ("tola_tcn", date(2018, 12, 8), "TOLA Act 2018"),
    ("ifta_warrant", date(2013, 2, 20), "Investigation for Fair Trial Act 2013"),
    ("it_act_69", date(2009, 10, 27), "Information Technology (Amendment) Act 2008"),
    ("pta_demand", date(2015, 7, 1), "the PTA gave notice of this demand"),
    (
        "india_access_demand",
        date(2010, 1, 1),
        "the Government of India made this demand of BlackBerry in 2010",
    ),
]


def _dated_order(process: str, start: datetime | None, at: str) -> str:
    target = 'target = "a"\n' if INSTRUMENTS[process].needs_target else ""
    dated = f"seed = 5\nstart = {start:%Y-%m-%dT%H:%M:%SZ}" if start is not None else "seed = 5"
    return (
        _BB_ORDERS.format(profile="bes").replace("seed = 5", dated)
        + f'\n[[events]]\nat = "{at}"\nkind = "legal_process"\nprocess = "{process}"\n{target}'
    )


@pytest.mark.parametrize(("process", "since", "law"), _LAWS)
def test_an_order_under_a_law_not_yet_made_is_refused_naming_the_law(
    process: str, since: date, law: str
) -> None:
    # the run starts at 21:30 UTC the day before the law; an order at 23:30 is refused
    start = datetime(since.year, since.month, since.day, tzinfo=UTC) - timedelta(hours=2, minutes=30)
    with pytest.raises(ScenarioError, match=r"events\[0\]\.process") as caught:
        parse_scenario(_dated_order(process, start, "2h"), "x.toml")
    said = str(caught.value)
    assert law in said and str(since) in said and "did not exist on" in said, said
    # a demand is one act, made on its day, not a law under which orders are served
    demand = process in ("pta_demand", "india_access_demand")
    assert (f"the demand was made on {since}" in said) == demand, said
    assert ("an order under it" in said) != demand, said
    # the same order served past midnight, on the law's day, stands
    parse_scenario(_dated_order(process, start, "2h45m"), "x.toml")
    # and an undated run (no [scenario] start) has no calendar to refuse it by
    parse_scenario(_dated_order(process, None, "2h"), "x.toml")


def test_the_desk_refuses_an_order_under_a_law_made_after_the_day_it_is_served() -> None:
    """`relaysim disclose` serves an order on a dated run's store through the desk itself."""
    from relaysim.relay.compliance import ComplianceDesk, LegalProcess
    from relaysim.relay.profiles import profile_as_of
    from relaysim.relay.store import Store

    served = datetime(2016, 6, 1, 12, tzinfo=UTC).timestamp()
    desk = ComplianceDesk(Store(":memory:"), profile_as_of("bes", date(2016, 6, 1)))
    order = LegalProcess("uk", "ipa_targeted_interception", "a", served=served)
    with pytest.raises(ValueError, match=r"did not exist on 2016-06-01: the Investigatory Powers Act 2016"):
        desk.serve(order)
    later = datetime(2017, 1, 2, tzinfo=UTC).timestamp()
    assert desk.serve(LegalProcess("uk", "ipa_targeted_interception", "a", served=later)).no_such_account


@pytest.mark.parametrize(("start", "later"), [(date(2019, 5, 1), True), (date(2025, 3, 3), False)])
def test_the_uks_limit_cites_apples_withdrawal_of_adp_as_later_in_an_earlier_disclosure(
    start: date, later: bool
) -> None:
    """The UK's limit on what a notice can compel cites Apple's withdrawal of Advanced Data Protection
    (February 2025): a disclosure served before then says it came after its date."""
    text = _BB_ORDERS.format(profile="signal").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "ipa_targeted_interception"\ntarget = "a"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible" and "February 2025" in why, why
    assert ("after this date" in why) == later, why
    for cited in _cited(why):
        assert cited <= start or "after this date" in why, (cited, why)


@pytest.mark.parametrize("start", [date(2012, 6, 1), date(2013, 1, 7), date(2015, 7, 1), date(2016, 2, 1)])
def test_bes_assumptions_cite_nothing_later_than_the_order_unsaid(start: date) -> None:
    """What BES's disclosures say is assumed cites John Chen's report (December 2015) and India's
    acceptance (2013, the year only) as after the order's date where it is earlier, and India's with its
    year-only caveat where the order is in or after that year."""
    orders = ("telegraph_act_5_2", "ca_part_vi_authorization", "pk_court_order")
    events = "".join(
        f'\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\ntarget = "a"\n'
        for p in orders
    )
    text = _BB_ORDERS.format(profile="bes").replace("seed = 5", f"seed = 5\nstart = {start}") + events
    by = {d.process.process: d for d in Simulation(parse_scenario(text, "x.toml")).run().disclosures}
    (part_vi,) = [n for n in by["ca_part_vi_authorization"].notes if n.startswith("Assumption: ")]
    assert "December 2015" in part_vi
    for cited in _cited(part_vi):
        assert cited <= start or "after this date" in part_vi, (cited, part_vi)
    (india,) = [n for n in by["telegraph_act_5_2"].notes if n.startswith("Assumption: ")]
    said = " ".join([india, *(why for _, why in by["telegraph_act_5_2"].reasons.values())])
    assert "India accepted in 2013" in india, india
    if start < date(2013, 1, 1):
        assert "in 2013, after this date" in india and "gives the year" not in said, said
    elif start.year == 2013:  # inside the year: whether it came before this date is not known
        assert "(the record gives the year, not the day: whether India's acceptance" in india, india
        assert "after this date" not in said, said
    else:
        assert "(the record gives the year, not the day)" in india and "after this date" not in said, said


@pytest.mark.parametrize("start", [date(2015, 7, 1), date(2015, 12, 5), date(2016, 1, 5)])
def test_the_ptas_demand_cites_its_refusal_and_withdrawal_as_later_where_they_are(start: date) -> None:
    """The refused PTA demand quotes BlackBerry (2015-11-30) and the PTA's withdrawal (2015-12-31): a
    disclosure served before either says it came after its date; the order's own title cites neither."""
    text = _BB_ORDERS.format(profile="bes").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "pta_demand"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    assert d.response == "refused"
    said = " ".join(why for _, why in d.reasons.values())
    assert "2015-12-31" in said and "2015-11-30" in said
    assert ("after this date" in said) == (start < date(2015, 12, 31)), said
    for cited in _cited(said):
        assert cited <= start or "after this date" in said, (cited, said)
    assert not [c for c in _cited(d.process.instrument.title) if c > start]


@pytest.fixture
def undated_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests below read a country's law's words on early days (2008-2014) in a disclosure from a relay with no
    real-time tap: Signal's profile stands for one, its first day (July 2014, ``Profile.since``) set aside, as a
    run set before it is otherwise refused."""
    monkeypatch.setitem(PROFILES, "signal", replace(get_profile("signal"), since=None))


@pytest.mark.usefixtures("undated_signal")
@pytest.mark.parametrize("start", [date(2014, 3, 1), date(2016, 3, 1)])
def test_pakistans_power_to_compel_a_capability_cites_the_withdrawal_as_later_where_it_is(
    start: date,
) -> None:
    text = _BB_ORDERS.format(profile="signal").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "ifta_warrant"\ntarget = "a"\nto = "2h"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    reason, why = d.reasons["realtime_routing"]
    assert reason == "no_capability" and "withdrawn on 2015-12-31" in why, why
    # (the power's own words; the FBI chart cited in the note before them is said to be later on its own)
    assert why.endswith("after this date)") == (start < date(2015, 12, 31)), why


@pytest.mark.usefixtures("undated_signal")
@pytest.mark.parametrize(("start", "later"), [(date(2011, 6, 1), True), (date(2016, 4, 1), False)])
@pytest.mark.parametrize("profile", ["bbm-consumer", "signal"])
def test_project_clemenza_is_cited_as_later_in_an_earlier_canadian_disclosure(
    profile: str, start: date, later: bool
) -> None:
    """Project Clemenza (2010-2012) was reported in April 2016 (R v. Mirarchi): a disclosure under a Canadian
    Part VI authorization served before then says the report came after its date, in consumer BBM's
    assumption and in Canada's power to compel a capability (said where the provider cannot give the
    words) alike; one served from April 2016 cites it as past."""
    text = _BB_ORDERS.format(profile=profile).replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "ca_part_vi_authorization"\ntarget = "a"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    said = [n for n in d.notes if "Clemenza" in n] + [
        why for _, why in d.reasons.values() if "Clemenza" in why
    ]
    assert said, (d.notes, d.reasons)
    for x in said:
        assert ("April 2016, after this date" in x) == later, x


@pytest.mark.usefixtures("undated_signal")
@pytest.mark.parametrize(
    "start", [date(2008, 6, 2), date(2009, 10, 26), date(2009, 10, 27), date(2011, 3, 1)]
)
def test_indias_power_to_compel_a_capability_names_s69_only_from_its_day(start: date) -> None:
    """India's s.69 direction and the 2009 Interception Rules came into force on 2009-10-27: a disclosure
    served before then says what compelled a provider then (an order under s.5(2) of the Telegraph Act 1885
    with Rule 419A) and cites s.69 as after its date; one served from that day names the s.69 direction."""
    text = _BB_ORDERS.format(profile="signal").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "telegraph_act_5_2"\ntarget = "a"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    reason, why = d.reasons["realtime_routing"]
    assert reason == "no_capability", why
    compel = why.split("to compel one: ", 1)[1]
    if start < date(2009, 10, 27):
        assert compel.startswith("an order under s.5(2) of the Indian Telegraph Act 1885, with Rule 419A"), (
            why
        )
        assert "came into force on 2009-10-27, after this date" in compel, why
    else:
        assert compel.startswith("a direction under s.69 of the Information Technology Act 2000"), why
        assert "after this date" not in compel, why


@pytest.mark.usefixtures("undated_signal")
@pytest.mark.parametrize("start", [date(2014, 3, 1), date(2015, 6, 30), date(2015, 7, 1), date(2015, 8, 3)])
def test_pakistans_power_to_compel_a_capability_cites_the_ptas_demand_as_later_where_it_is(
    start: date,
) -> None:
    """The PTA's demand to monitor BES was made in July 2015 (the record gives the month: its first day): a
    disclosure served before then cites the demand, as well as its withdrawal, as after its date."""
    text = _BB_ORDERS.format(profile="signal").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "ifta_warrant"\ntarget = "a"\nto = "2h"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    reason, why = d.reasons["realtime_routing"]
    assert reason == "no_capability" and "July 2015" in why, why
    before = start < date(2015, 7, 1)
    assert ("made in July 2015 and withdrawn on 2015-12-31, both after this date" in why) == before, why
    assert ("its demand of July 2015 to monitor BES was withdrawn on 2015-12-31, after this date" in why) == (
        not before
    ), why


_BARE_MONTH = re.compile(r"\b(?:19|20)\d\d-\d\d(?![-\d])")


def test_sources_and_dated_texts_name_a_month_as_their_dated_texts_do() -> None:
    """A month the record gives without a day is written as the dated texts write it ('reported in April
    2016', as Project Clemenza is cited before and after that month), never as a bare '2016-04', which reads
    as neither a day nor the month's words the dated texts (HISTORY, a jurisdiction's texts) use."""
    texts = [s for name in REAL_PROFILES for s in get_profile(name).sources]
    for j in JURISDICTIONS.values():
        texts += [j.compels_capability, j.protection_limit]
        texts += [t for _, t in (*j.compels_capability_before, *j.protection_limit_before)]
    bare = [t for t in texts if _BARE_MONTH.search(t)]
    assert not bare, bare
    (clemenza,) = [s for s in get_profile("bbm-consumer").sources if "Clemenza" in s]
    assert "reported in April 2016" in clemenza, clemenza


_IMESSAGE_LOOKUPS = """
[scenario]
name = "imessage-lookups"
duration = "2h"
seed = 5

[relay]
profile = "imessage"

[[people]]
name = "a"
devices = [{ address = "203.0.113.7" }]

[[people]]
name = "b"

[[people]]
name = "c"

[[conversations]]
between = ["a", "b"]
messages = [{ at = "10m", from = "a", text = "first" }]

[[conversations]]
between = ["a", "c"]
messages = [{ at = "40m", from = "a", text = "from the cafe" }]

[traffic]
moves = [{ device = "a/1", at = "30m", address = "100.64.0.9" }]
"""


def test_imessages_subpoena_gets_no_address_read_off_the_targets_own_lookups() -> None:
    """The address a look-up came from, and when it was first seen, is a row of the look-up log (Apple's
    capability query logs), which the FBI chart puts at a 2703(d) order: a subpoena's basic subscriber info
    gives the address the account registered from, not the one its phone looked up a new contact from after
    it moved; a 2703(d) order, which gets the look-ups, gets that address too."""
    text = _IMESSAGE_LOOKUPS + "".join(
        f'\n[[events]]\nat = "1h"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\ntarget = "a"\n'
        for p in ("subpoena", "court_order_2703d")
    )
    by = {d.process.process: d for d in Simulation(parse_scenario(text, "x.toml")).run().disclosures}
    assert [r["ip"] for r in by["subpoena"].provided["ip_addresses"]] == ["203.0.113.7"]
    assert "lookup_log" not in by["subpoena"].provided
    order = by["court_order_2703d"].provided
    assert [r["ip"] for r in order["ip_addresses"]] == ["203.0.113.7", "100.64.0.9"]
    assert {r["host"] for r in order["lookup_log"] if r["account"] == "a"} >= {"100.64.0.9"}


@pytest.mark.parametrize("start", [date(2017, 5, 2), date(2019, 5, 2)])
def test_telegram_before_its_2018_policy_refuses_a_foreign_order_by_its_published_word(start: date) -> None:
    """Before its privacy policy of August 2018 Telegram said it had disclosed '0 bytes of user data to third
    parties, including governments': under an interception order of another country's law in a run set then,
    that it hands nothing over is that word, cited, not the project's assumption, and, as the word is not on the
    record (docs/record.md), never 'its published policy'; from that policy (which names what it hands a court's
    order looking back) it is assumed."""
    text = _BB_ORDERS.format(profile="telegram-cloud").replace("seed = 5", f"seed = 5\nstart = {start}")
    text += '\n[[events]]\nat = "30m"\nkind = "legal_process"\nprocess = "ifta_warrant"\ntarget = "a"\n'
    (d,) = Simulation(parse_scenario(text, "x.toml")).run().disclosures
    assert not d.provided
    why = [w for r, w in d.reasons.values() if r == "withheld_by_policy"]
    assumed = [n for n in d.notes if n.startswith("Assumption: ")]
    if start < date(2018, 8, 28):
        assert not assumed, d.notes
        assert why and all(
            "say it hands nothing over" in w and "0 bytes" in w and "not on the record" in w for w in why
        ), why
        assert not any("published policy" in w for w in why), why
        assert not any("FBI chart" in w for w in why), why
    else:
        assert len(assumed) == 1 and "hands one nothing" in assumed[0], d.notes
        assert why and all("the project's assumption" in w for w in why), why
