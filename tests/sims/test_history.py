"""Dated profiles, and the replays that depend on them (issue #10, items 3 and 5).

A profile holds its history (relay.profiles.HISTORY): a scenario set in a year gets the provider as
it was then. The Signal 2016 subpoena runs without sealed sender and answers "no such account" for a
number with none; rcmp-clemenza shows a global key opening every intercepted word; and the scoring
never counts a directory look-up as a contact.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from relaysim.relay.profiles import HISTORY, POLICY_FIELDS, PROFILES, changes_in_effect, profile_as_of
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import ScenarioError, parse_scenario, resolve_scenario
from relaysim.sims.scoring import GroundTruth, TrueMessage, score
from relaysim.sims.world.simulation import SIM_EPOCH, Simulation

DAY = timedelta(days=1)
DATES = st.dates(min_value=date(2009, 1, 1), max_value=date(2030, 12, 31))


@given(name=st.sampled_from(sorted(HISTORY)), a=DATES, b=DATES)
def test_profile_as_of_is_monotone_in_the_date(name: str, a: date, b: date) -> None:
    early, late = sorted((a, b))
    assume(
        PROFILES[name].not_yet(early) is None
    )  # no profile before the provider's first day (Profile.since)
    later = changes_in_effect(name, late)
    assert all(c in later for c in changes_in_effect(name, early))
    # the profile is a function of the changes in effect and of the month, not of the day itself: inside a
    # year or a month the record names alone, a text says so ("(2018: this year, the month not on the
    # record)", relay.profiles._this_year; Change.within, Signal's 2021 warrant said as an assumption)
    if changes_in_effect(name, early) == changes_in_effect(name, late) and (early.year, early.month) == (
        late.year,
        late.month,
    ):
        assert replace(profile_as_of(name, early), as_of=None) == replace(
            profile_as_of(name, late), as_of=None
        )


@given(name=st.sampled_from(sorted(PROFILES)), when=DATES)
def test_after_every_change_the_profile_is_todays(name: str, when: date) -> None:
    assume(PROFILES[name].not_yet(when) is None)  # no profile before the provider's first day (Profile.since)
    last = max((c.effective for c in HISTORY.get(name, ())), default=date.min)
    # (a change said otherwise inside the year or month it names, Change.within, is today's once that is over)
    if when >= last and not any(c.within and c.inside(when) for c in HISTORY.get(name, ())):
        assert replace(profile_as_of(name, when), as_of=None) == PROFILES[name]
    assert profile_as_of(name) is PROFILES[name]  # no date: as it is today
    assert profile_as_of(name, datetime(when.year, when.month, when.day, 12)).as_of == when


def test_every_change_is_documented_and_changes_something() -> None:
    for name, changes in HISTORY.items():
        assert list(changes) == sorted(changes, key=lambda c: c.effective)
        for c in changes:
            assert c.source and c.what and c.before
            before = profile_as_of(name, c.effective - DAY)
            after = profile_as_of(name, c.effective)
            assert any(getattr(before, k) != getattr(after, k) for k in c.before)


SIDES = [
    # Signal: sealed sender from October 2018 (signal.org/blog/sealed-sender)
    ("signal", date(2018, 10, 29), lambda p: not p.sealed_sender, lambda p: p.sealed_sender),
    # Telegram: before its 2018 privacy policy (§8.3, terror suspects), "0 bytes of user data" to anyone
    (
        "telegram-cloud",
        date(2018, 8, 28),
        lambda p: (
            "disclosed '0 bytes of user data" in (p.policy_record or "")
            and "those words" in p.notes["ip_addresses"]
        ),
        lambda p: "only for confirmed terror suspects" in p.notes["ip_addresses"],
    ),
    # Telegram: before September 2024, IP and phone number only for confirmed terror suspects
    (
        "telegram-cloud",
        date(2024, 9, 23),
        lambda p: not p.discloses.get("court_order_2703d") and "terror" in p.notes["ip_addresses"],
        lambda p: p.discloses.get("court_order_2703d") == {"subscriber_info", "ip_addresses"},
    ),
    # iMessage: look-up logs to pen/trap orders (Apple's FAQ, The Intercept, 2016-09-28) until the FBI
    # chart's date; "no capability" in the chart (2021-01-07, capabilities as of November 2020)
    (
        "imessage",
        date(2021, 1, 7),
        lambda p: p.discloses["pen_register"] == {"lookup_log"},
        lambda p: p.discloses["pen_register"] == frozenset(),
    ),
]


@pytest.mark.parametrize(
    ("name", "effective", "before", "after"), SIDES, ids=[f"{s[0]}-{s[1].year}" for s in SIDES]
)
def test_the_documented_state_on_each_side_of_each_change(name, effective, before, after) -> None:  # type: ignore[no-untyped-def]
    assert effective in {c.effective for c in HISTORY[name]}
    assert before(profile_as_of(name, effective - DAY)) and not after(profile_as_of(name, effective - DAY))
    assert after(profile_as_of(name, effective)) and not before(profile_as_of(name, effective))


def test_imessage_lookups_as_the_chart_has_them() -> None:
    p = profile_as_of("imessage", date(2020, 11, 1))
    assert p.lookback["lookup_log"] == 25 * 86400
    assert "lookup_log" in p.discloses["court_order_2703d"]
    assert "doesn't prove that any communication actually took place" in p.notes["lookup_log"]


def test_a_lookup_is_not_a_contact() -> None:
    """Apple: a look-up "doesn't prove that any communication actually took place"."""
    truth = GroundTruth(
        (TrueMessage(SIM_EPOCH + 10, "a", "b", "hi"),), {"a": frozenset({"us"})}, frozenset({"a", "b", "c"})
    )
    disclosure = {
        "target": "a",
        "window": [None, SIM_EPOCH + 100],
        "provided": {
            "lookup_log": [
                {"time": SIM_EPOCH + 5, "account": "a", "recipient_account": "b"},
                {"time": SIM_EPOCH + 6, "account": "a", "recipient_account": "c"},
            ]
        },
    }
    sc = score(disclosure, truth)
    assert sc["contacts"] == {"true": 1, "revealed": 0, "share": 0.0}
    assert sc["looked_up"] == {"accounts": 2, "of_true_contacts": 1}


# --- [scenario] start ------------------------------------------------------------------------------

_FILE = """
[scenario]
name = "x"
duration = "1h"
{start}

[[people]]
name = "a"
"""


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("", None),
        ("start = 2016-05-01", date(2016, 5, 1)),
        ("start = 2016-05-01T09:30:00Z", date(2016, 5, 1)),
    ],
)
def test_scenario_start_is_a_toml_date_or_datetime(start: str, expected: date | None) -> None:
    assert parse_scenario(_FILE.format(start=start), "x.toml").start == expected


def test_a_quoted_start_is_a_clear_error() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_FILE.format(start='start = "2016-05-01"'), "x.toml")
    assert str(info.value).startswith("x.toml: scenario.start: expected a TOML date")


_ORDER = """
[scenario]
name = "x"
duration = "1h"

[[people]]
name = "a"

[[events]]
at = "10m"
kind = "legal_process"
{order}
"""


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ('process = "subpoena"\ntargets = ["a", "bob"]', "events[0].targets[1]: expected one of the people"),
        ('process = "subpoena"\ntarget = "a"\ntargets = ["a"]', "events[0].targets: give either"),
        (
            'process = "pk_court_order"\ntarget = "a"\nnondisclosure_order = true',
            "events[0].nondisclosure_order",
        ),
        (
            'process = "subpoena"\ntarget = "a"\nwithdrawn = "20m"',
            "events[0].withdrawn: a subpoena is answered",
        ),
        ('process = "pta_demand"\nwithdrawn = "5m"', "events[0].withdrawn: expected a time after"),
        ('process = "pta_demand"\ncounterfactual = "obeyed"', "events[0].counterfactual: expected one of"),
    ],
)
def test_legal_process_options_are_validated(order: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_ORDER.format(order=order), "x.toml")
    assert str(info.value).startswith(f"x.toml: {expected}"), str(info.value)


# --- the replays ----------------------------------------------------------------------------------


def test_signal_2016_no_sealed_sender_no_such_account_and_the_2705b_order(tmp_path: Path) -> None:
    scenario = resolve_scenario("signal-subpoena-2016")
    assert scenario.start is not None and scenario.start.year == 2016
    result, _summary = run_to_dir(scenario, tmp_path)
    # 2016: the relay saw the sender of every message (no sealed sender) and kept no record of it
    assert result.relay_records.get("send", 0) > 0 and not result.relay_records.get("sealed_send")
    d = json.loads((tmp_path / "disclosures" / "grand-jury-subpoena-dana.json").read_text("utf-8"))
    assert set(d["provided"]) == {"account_created", "last_seen"}
    assert "kept no record" in d["not_provided"]["not_retained"]["message_log"]
    assert d["nondisclosure_order"] == "18 U.S.C. 2705(b)"
    nobody = json.loads(
        (tmp_path / "disclosures" / "grand-jury-subpoena-17035550143.json").read_text("utf-8")
    )
    assert nobody["no_such_account"] is True and nobody["target"] == "+17035550143"
    assert not nobody["provided"] and not any(nobody["not_provided"].values())
    assert nobody["nondisclosure_order"] == "18 U.S.C. 2705(b)"
    report = (tmp_path / "summary.md").read_text("utf-8")
    assert "**no such account**" in report and report.count("non-disclosure order (18 U.S.C. 2705(b))") == 2
    assert "as it was on 2016-05-01" in report
    # the same scenario set today: sealed sender, so the relay cannot attribute sends
    today = Simulation(replace(scenario, start=None)).run()
    assert today.relay_records.get("sealed_send", 0) > 0 and not today.relay_records.get("send")


def test_rcmp_clemenza_the_words_open_to_whoever_holds_the_global_key(tmp_path: Path) -> None:
    scenario = resolve_scenario("rcmp-clemenza")
    result, _summary = run_to_dir(scenario, tmp_path)
    (d,) = result.disclosures
    assert d.process.instrument.jurisdiction == "ca" and d.process.target == "marco"
    start, _end = d.process.window()
    truth = [m for m in result.truth.messages if "marco" in (m.sender, m.recipient) and m.time >= start]
    words = [r["text"] for r in d.provided["content"] if r["kind"] == "message"]
    assert truth and sorted(words) == sorted(m.text for m in truth)
    # the rest are the phones' delivery receipts (relay.content), opened by the same key and read as such
    receipts = [c for c in result.truth.control if "marco" in (c.sender, c.recipient) and c.time >= start]
    assert receipts and len(d.provided["content"]) - len(words) >= len(receipts)
    assert d.decryption and all(x["opened"] for x in d.decryption)
    report = json.loads((tmp_path / "exceptional" / "global-key.json").read_text("utf-8"))
    assert len(report["messages_under_global_key"]) == len(result.messages)  # from the first minute
    # the record has the police decrypting with their own copy of the key, not BlackBerry answering the
    # authorization: the disclosure says its provider-side reading is the project's assumption
    (assumed,) = [n for n in d.notes if n.startswith("Assumption:")]
    assert "the police held the consumer BBM/PIN global key" in assumed and "about a million" in assumed
    assert "does not say that BlackBerry answered a Part VI authorization" in assumed


# --- a policy change reaches an order by the day it is served ---------------------------------------

# The record: Telegram, "2018 to Aug 2024: IP address and phone number only for confirmed terror
# suspects (the FBI chart's wording). From September 2024: to a valid order from judicial authorities
# naming the user as a criminal suspect" (telegram.org/privacy §8.3; FBI 'Lawful Access' chart,
# 2021-01-07). A run set before the change that serves an order after it gets the new policy.
_SPANNING = """
[scenario]
name = "telegram-across-the-change"
duration = "6d"
seed = 1
start = 2024-09-20

[relay]
profile = "telegram-cloud"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [{ at = "1h", from = "a", text = "hi" }, { at = "4d", from = "b", text = "yo" }]

[[events]]
at = "1d"
kind = "legal_process"
process = "court_order_2703d"
target = "a"
name = "before"

[[events]]
at = "5d"
kind = "legal_process"
process = "court_order_2703d"
target = "a"
name = "after"
"""


def test_a_policy_change_reaches_an_order_served_after_it_in_a_run_set_before_it(tmp_path: Path) -> None:
    from relaysim.sims.cli import main

    result, _summary = run_to_dir(parse_scenario(_SPANNING, "x.toml"), tmp_path / "run")
    before, after = result.disclosures
    assert before.process.name == "before" and after.process.name == "after"
    # 2024-09-21: before the change, nothing to ordinary criminal process
    assert not before.provided and set(before.withheld) >= {"subscriber_info", "ip_addresses"}
    # 2024-09-25: after it, IP address and phone number
    assert set(after.provided) == {"subscriber_info", "ip_addresses"}
    assert any("policy changed on 2024-09-23" in n for n in after.notes)
    assert not any("policy changed" in n for n in before.notes)
    # relaysim disclose on the finished run answers by the day it is served (--at) in the same way
    db = str(tmp_path / "run" / "relay.db")
    for at, expected in (("2d", []), ("5d", ["ip_addresses", "subscriber_info"])):
        out = tmp_path / f"{at}.json"
        args = [
            "disclose",
            "--db",
            db,
            "--process",
            "court_order_2703d",
            "--target",
            "a",
            "--at",
            at,
            "--json",
            str(out),
        ]
        assert main(args) == 0
        assert sorted(json.loads(out.read_text("utf-8"))["provided"]) == expected


def test_telegram_before_its_2018_policy_shared_nothing_and_said_so(tmp_path: Path) -> None:
    """Before its privacy policy of August 2018 (§8.3: IP address and phone number to a court order
    confirming a terror suspect), Telegram's page said "We never share your data with anyone. To this
    day, we have disclosed 0 bytes of user data to third parties, including governments." A run set in
    2018 before the change answers with those words; an order served after it in the same run is
    answered under §8.3 (still nothing to ordinary criminal process) and says the policy changed."""
    spanning = _SPANNING.replace("start = 2024-09-20", "start = 2018-08-24")
    result, _summary = run_to_dir(parse_scenario(spanning, "x.toml"), tmp_path / "run")
    before, after = result.disclosures  # served 2018-08-25 and 2018-08-29
    assert not before.provided and not after.provided
    # (the words quoted once, in the reason's record of them; the note says "those words")
    assert (
        before.reasons["ip_addresses"][1].count(
            "'0 bytes of user data to third parties, including governments'"
        )
        == 1
    )
    assert "only for confirmed terror suspects" in after.reasons["ip_addresses"][1]
    assert any("policy changed on 2018-08-28" in n for n in after.notes)
    assert not any("policy changed" in n for n in before.notes)


def test_a_design_change_holds_from_the_runs_date_a_policy_change_from_the_day_served() -> None:
    # Signal's sealed sender (October 2018) is the clients' design: a run set before it runs without it
    signal = profile_as_of("signal", date(2018, 10, 1), served=date(2018, 11, 1))
    assert not signal.sealed_sender and signal.as_of == date(2018, 10, 1)
    telegram = profile_as_of("telegram-cloud", date(2024, 9, 1), served=date(2024, 9, 30))
    assert telegram.discloses == PROFILES["telegram-cloud"].discloses
    assert profile_as_of("telegram-cloud", date(2024, 9, 1)).discloses == {}


def test_a_policy_change_changes_only_what_the_desk_hands_over() -> None:
    for changes in HISTORY.values():
        for c in changes:
            if c.policy:
                assert set(c.before) <= set(POLICY_FIELDS), c


# --- backups that did not exist yet -----------------------------------------------------------------

_BACKUP = """
[scenario]
name = "x"
duration = "1h"
{start}

[[people]]
name = "a"
backup = "{backup}"
"""


# The record: iCloud Backup holds the Messages key "unless Advanced Data Protection is on (ADP from
# Dec 2022 ...)" (Apple); WhatsApp backups "are readable by that custodian unless the user turns on
# end-to-end encrypted backups (from Oct 2021)" (faq.whatsapp.com). Before then a backup warrant on the
# custodian got the words, so a run set earlier cannot have the setting that would say it could not.
@pytest.mark.parametrize(
    ("backup", "before", "since"),
    [
        ("icloud-adp", date(2022, 11, 30), date(2022, 12, 1)),
        ("gdrive-e2e", date(2021, 9, 30), date(2021, 10, 1)),
    ],
)
def test_an_end_to_end_backup_before_it_existed_is_refused(backup: str, before: date, since: date) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_BACKUP.format(start=f"start = {before}", backup=backup), "x.toml")
    assert str(info.value).startswith(f"x.toml: people[0].backup: '{backup}' did not exist on {before}")
    for start in (f"start = {since}", ""):
        (person,) = parse_scenario(_BACKUP.format(start=start, backup=backup), "x.toml").people
        assert person.backup == backup


_DEFENCE = """
[scenario]
name = "x"
duration = "1h"
{start}
{profiles}

[defences]
{switch}

[[people]]
name = "a"
"""


# The record: iMessage's Contact Key Verification came with iOS 17.2, December 2023; WhatsApp announced
# key transparency (its Auditable Key Directory) in April 2023. A run under the provider set before cannot
# have it; under a provider whose apps never had it the switch is the simulator's what-if, at any date.
@pytest.mark.parametrize(
    ("profile", "switch", "before", "since"),
    [
        ("imessage", 'key_verification = "on"', date(2023, 11, 30), date(2023, 12, 1)),
        ("whatsapp", "key_transparency = true", date(2023, 3, 31), date(2023, 4, 1)),
    ],
)
def test_a_providers_feature_before_it_existed_is_refused(
    profile: str, switch: str, before: date, since: date
) -> None:
    key = switch.split(" = ")[0]
    for profiles in (f'[relay]\nprofile = "{profile}"', f'compare_profiles = ["signal", "{profile}"]'):
        with pytest.raises(ScenarioError) as info:
            parse_scenario(
                _DEFENCE.format(start=f"start = {before}", profiles=profiles, switch=switch), "x.toml"
            )
        assert str(info.value).startswith(f"x.toml: defences.{key}: "), info.value
        assert f"under the {profile} profile did not exist on {before}" in str(info.value)
        for start in (f"start = {since}", ""):
            sc = parse_scenario(_DEFENCE.format(start=start, profiles=profiles, switch=switch), "x.toml")
            assert key in sc.defences.changed()
    other = parse_scenario(
        _DEFENCE.format(start=f"start = {before}", profiles='[relay]\nprofile = "signal"', switch=switch),
        "x.toml",
    )
    assert key in other.defences.changed()


def test_whatsapps_key_transparency_is_dated_by_its_announcement_and_says_so() -> None:
    """The record dates WhatsApp's key transparency by its announcement (April 2023), not its roll-out:
    the refusal of a run set before it says the date is the announcement's."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            _DEFENCE.format(
                start="start = 2023-03-31",
                profiles='[relay]\nprofile = "whatsapp"',
                switch="key_transparency = true",
            ),
            "x.toml",
        )
    said = str(info.value)
    assert "announced in April 2023" in said and "no date for its roll-out" in said, said


def test_the_desk_reads_the_day_an_order_is_served_off_the_runs_calendar() -> None:
    """A live relay's clock is the wall clock: the driver gives the desk the run's calendar day
    (``day_of``), and the policy of that day answers (Telegram's, September 2024, as above)."""
    from relaysim.relay.compliance import ComplianceDesk, LegalProcess
    from relaysim.relay.store import DeviceRecord, Store
    from relaysim.relay.wire import KemPrekey, SignedPrekey

    store = Store()
    store.create_account("a", 1.0)
    store.put_device(
        DeviceRecord(
            "a",
            1,
            7,
            bytes(32),
            SignedPrekey(1, bytes(32), bytes(64)),
            KemPrekey(2, bytes(1568), bytes(64)),
            1.0,
        )
    )
    set_on = date(2024, 9, 20)
    days = {1.0e9: date(2024, 9, 21), 2.0e9: date(2024, 9, 25)}  # relay times far from either day's Unix time
    desk = ComplianceDesk(
        store,
        profile_as_of("telegram-cloud", set_on),
        policy_on=lambda day: profile_as_of("telegram-cloud", set_on, served=day),
        day_of=days.__getitem__,
    )
    before, after = (desk.serve(LegalProcess(f"o{t:g}", "court_order_2703d", "a", served=t)) for t in days)
    assert not before.provided
    assert set(after.provided) == {"subscriber_info", "ip_addresses"}
    assert desk.profile.discloses == {}  # the desk itself keeps the run's profile


def test_telegrams_policy_since_september_2024_answers_a_court_order_not_a_subpoena() -> None:
    """The record: from September 2024 Telegram hands IP address and phone number "to a valid order from
    judicial authorities naming the user as a criminal suspect" (telegram.org/privacy §8.3). A 2703(d)
    order, a search warrant and a Pakistani court's order are a court's orders; a grand-jury or
    administrative subpoena is not: it gets nothing, and the disclosure says which order would."""
    run = Simulation(parse_scenario(_SUBPOENA_AND_ORDER, "x.toml")).run()
    by = {d.process.process: d for d in run.disclosures}
    for process in ("court_order_2703d", "search_warrant", "pk_court_order"):
        assert set(by[process].provided) == {"subscriber_info", "ip_addresses"}, process
        assert any("relevant judicial authorities" in n for n in by[process].notes), process
    subpoena = by["subpoena"]
    assert not subpoena.provided
    for category in ("subscriber_info", "ip_addresses"):
        reason, why = subpoena.reasons[category]
        assert reason == "withheld_by_policy" and "only under a 2703(d) court order" in why


_SUBPOENA_AND_ORDER = """
[scenario]
name = "telegram-today"
duration = "3h"
seed = 1

[relay]
profile = "telegram-cloud"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [{ at = "1h", from = "a", text = "hi" }]
""" + "".join(
    f"""
[[events]]
at = "2h"
kind = "legal_process"
process = "{p}"
target = "a"
name = "{p}"
"""
    for p in ("subpoena", "court_order_2703d", "search_warrant", "pk_court_order")
)


_IMESSAGE_PEN = """
[scenario]
name = "imessage-pen-register"
duration = "3h"
seed = 3
start = {start}

[relay]
profile = "imessage"

[[people]]
name = "a"

[[people]]
name = "b"

[[people]]
name = "c"

[[conversations]]
between = ["a", "b"]
messages = [{{ at = "10m", from = "a", text = "hi" }}]

[[conversations]]
between = ["a", "c"]
messages = [{{ at = "2h", from = "a", text = "yo" }}]

[[events]]
at = "1h"
kind = "legal_process"
process = "pen_register"
target = "a"
name = "pen"
"""


def test_imessage_pen_register_gets_the_lookups_from_service_on_until_the_fbi_charts_date() -> None:
    """Apple's iMessage FAQ for law enforcement (published by The Intercept, 2016-09-28) shows look-up
    logs produced to pen/trap orders; the FBI chart (2021-01-07) says "no capability". Before the
    chart's date a pen register gets the look-ups made from its service on (between a and c, not the
    earlier ones between a and b), and nothing in real time; from it, nothing, the look-ups going to a 2703(d) order."""
    from relaysim.sims.scoring import score

    run = Simulation(parse_scenario(_IMESSAGE_PEN.format(start="2019-06-01"), "x.toml")).run()
    (d,) = run.disclosures
    rows = d.provided["lookup_log"]
    # to and from the target (c looks a up to answer): none with b, looked up before service
    assert {(r["account"], r["recipient_account"]) for r in rows} == {("a", "c"), ("c", "a")}
    assert all(r["time"] >= d.process.served for r in rows)
    # the FAQ's sample return: date and time, the numbers, and the "Client IP" of each query
    hosts = {r["account"]: r["host"] for r in rows}
    assert hosts and all(hosts.values()) and f"from {hosts['a']}" in d.to_markdown()
    assert {c: d.reasons[c][0] for c in ("realtime_routing", "ip_addresses")} == {
        "realtime_routing": "no_capability",
        "ip_addresses": "no_capability",
    }
    assert any("doesn't prove that any communication actually took place" in n for n in d.notes)
    assert any("nothing was tapped" in n and "read from its own records" in n for n in d.notes)
    assert score(d.to_json(), run.truth)["contacts"]["revealed"] == 0  # a look-up is not a contact

    run = Simulation(parse_scenario(_IMESSAGE_PEN.format(start="2021-01-07"), "x.toml")).run()
    (d,) = run.disclosures
    assert not d.provided
    reason, why = d.reasons["lookup_log"]
    assert reason == "withheld_by_policy" and "only under a 2703(d) court order" in why
    assert "no look-up log to a pen register order" in d.reasons["realtime_routing"][1]


# --- what the record leaves open of an instrument's day (relay.legal.Instrument.caveats) --------------

_DATED_ORDER = """
[scenario]
name = "dated"
duration = "2h"
seed = 1
start = {start}

[relay]
profile = "bes"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [{{ at = "10m", from = "a", text = "hello" }}]

[[events]]
at = "1h"
kind = "legal_process"
process = "{process}"
{target}
"""


def _notes_under(process: str, start: str) -> str:
    from relaysim.relay.legal import INSTRUMENTS

    target = 'target = "a"' if INSTRUMENTS[process].needs_target else ""
    toml = _DATED_ORDER.format(start=start or '""', process=process, target=target)
    if not start:
        toml = toml.replace('start = ""\n', "")
    (d,) = Simulation(parse_scenario(toml, "x.toml")).run().disclosures
    return " ".join(d.notes)


@pytest.mark.parametrize(
    ("process", "inside", "outside", "said"),
    [
        # the record: India's demand of 2010, deadline 2010-08-31 (dated here 2010-01-01, the year's first day)
        ("india_access_demand", "2010-03-01", "2010-09-01", "dates this demand by its year, 2010"),
        # the record: the PTA's notice, July 2015 (dated here 2015-07-01)
        ("pta_demand", "2015-07-01", "2015-08-01", "by its month, July 2015, not by its day"),
        # the record names Rule 419A, undated; the 2007 amendment is the project's citation, said on every day
        # of a dated run, and before 2008 that the amendment's day (in 2007) is not kept
        ("telegraph_act_5_2", "2005-06-01", "2013-01-07", "amendment's day in 2007 is not kept here"),
        (
            "telegraph_act_5_2",
            "2013-01-07",
            None,
            "the project's citation, not the record's, which names the Rule",
        ),
        # the record dates no Act's commencement: the date is the Royal Assent's (the President's assent's)
        ("ipa_targeted_interception", "2019-06-01", None, "not by the day Part 2 (s.15) came into force"),
        (
            "tola_tar",
            "2019-06-01",
            None,
            "not by the day Part 15 of the Telecommunications Act 1997, which it "
            "inserted (s.317G), came into force",
        ),
        ("tola_tan", "2019-06-01", None, "which it inserted (s.317L), came into force: that it was in force"),
        ("tola_tcn", "2019-06-01", None, "which it inserted (s.317T), came into force: that it was in force"),
        (
            "ifta_warrant",
            "2014-01-01",
            None,
            "dated here by the President's assent (2013-02-20, Gazette of Pakistan: the project's citation; the "
            "record names the Act, not the day), not by the day it came into force",
        ),
        # a UK technical capability notice is on record by February 2025 (Apple's ADP)
        ("ipa_tcn", "2019-06-01", "2025-03-01", "not by the day s.253 came into force"),
    ],
)
def test_a_dated_disclosure_says_what_the_record_leaves_open_of_its_instruments_day(
    process: str, inside: str, outside: str | None, said: str
) -> None:
    assert said in _notes_under(process, inside)
    if outside is not None:
        assert said not in _notes_under(process, outside)
    assert said not in _notes_under(process, "")  # an undated run is today


def test_the_ipa_is_dated_by_royal_assent_and_says_its_commencement_is_not_in_the_record() -> None:
    from relaysim.relay.legal import INSTRUMENTS

    for key in ("ipa_targeted_interception", "ipa_tcn"):
        why = INSTRUMENTS[key].not_yet(date(2016, 6, 1))
        assert why is not None and "Royal Assent" in why and "no day on which the sections" in why
    # the TOLA Act and the Fair Trial Act, dated by assent too: an order refused before it says so
    for key, day in (
        ("tola_tar", date(2018, 6, 1)),
        ("tola_tcn", date(2018, 6, 1)),
        ("ifta_warrant", date(2012, 6, 1)),
    ):
        why = INSTRUMENTS[key].not_yet(day)
        assert why is not None and "the date is the" in why and "the earliest it can have been" in why, why
    # s.69 as substituted: its commencement's notification is dated, its gazette number is not in the record
    s69 = INSTRUMENTS["it_act_69"].not_yet(date(2008, 1, 1))
    assert s69 is not None and "gazette number is not in the record" in s69
