"""Every reason held to the public record (docs/record.md) for the run's date.

A document a disclosure cites must be one the record holds, dated no later than the disclosure, or the
disclosure says it is later (the FBI chart, dated 2021-01-07) or not on the record (Telegram's words before its
2018 policy, LINE's guidelines); where the profile goes beyond the record, it says so (the project's assumption,
reading or inference).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay.backup import BACKUPS
from relaysim.relay.compliance import Disclosure
from relaysim.relay.legal import CATEGORIES
from relaysim.relay.profiles import (
    HISTORY,
    POLICY_FIELDS,
    PROFILES,
    Profile,
    dated_sources,
    get_profile,
    profile_as_of,
    sources_on,
)
from relaysim.sims.scenario import builtin_scenarios, parse_scenario, resolve_scenario
from relaysim.sims.world.simulation import Simulation

CHART = date(2021, 1, 7)
_TEXT_FIELDS = (
    "notes",
    "jurisdiction_notes",
    "assumptions",
    "readings",
    "policy_record",
    "realtime_record",
    "response_record",
)
# Every text of Profile a disclosure says (relay/profiles.py: _TEXT_FIELDS; test 25 holds it to Profile's fields).
PROFILE_TEXT_FIELDS = (
    *_TEXT_FIELDS,
    "realtime_inferred",
    "retention_notes",
    "policy_name",
    "policy_later",
)

_RUN = """
[scenario]
name = "dated"
duration = "{duration}"
seed = 5
{start}

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


def _serve(
    profile: str, start: str | None, *processes: str, at: str = "30m", duration: str = "3h"
) -> list[Disclosure]:
    text = _RUN.format(profile=profile, start=f"start = {start}" if start else "", duration=duration)
    for p in processes:
        text += f'\n[[events]]\nat = "{at}"\nkind = "legal_process"\nprocess = "{p}"\nname = "{p}"\ntarget = "a"\n'
        if p in ("pen_register", "wiretap"):
            text += 'to = "2h"\n'
    return list(Simulation(parse_scenario(text, "x.toml")).run().disclosures)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) or hasattr(value, "values"):
        return [t for v in value.values() for t in _texts(v)]
    return []


def _said(d: Disclosure) -> str:
    return " ".join([*d.notes, *(why for _r, why in d.reasons.values())])


# --- 1. the FBI chart, dated 2021-01-07 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_before_the_charts_date_every_text_citing_it_says_it_is_later(name: str) -> None:
    for day in (date(2016, 5, 1), date(2018, 9, 1), CHART - timedelta(days=1)):
        profile = profile_as_of(name, day)
        for f in _TEXT_FIELDS:
            for text in _texts(getattr(profile, f)):
                if "chart" in text:
                    assert "2021-01-07, after this date" in text, (name, day, f, text)
    # from the chart's date on (and today) the texts are as written: no "after this date" of the chart
    for when in (CHART, None):
        profile = profile_as_of(name, when)
        for f in _TEXT_FIELDS:
            for text in _texts(getattr(profile, f)):
                assert "2021-01-07, after this date" not in text, (name, f, text)


def test_every_profile_citing_the_chart_has_its_date_in_history() -> None:
    for name, profile in PROFILES.items():
        if any("chart" in t for f in _TEXT_FIELDS for t in _texts(getattr(profile, f))):
            assert CHART in {c.effective for c in HISTORY[name] if c.record}, name


def test_a_run_before_the_chart_says_so_in_the_real_time_notes_the_dashes_and_threemas_creation_date() -> (
    None
):
    (pen,) = _serve("signal", "2016-05-01", "pen_register")
    assert pen.reasons["realtime_routing"][0] == "no_capability"
    assert (
        "dated 2021-01-07, after this date (capabilities as of November 2020)"
        in pen.reasons["realtime_routing"][1]
    )
    assert any(
        n.startswith("Assumption: the FBI chart's pen register cell") and "after this date" in n
        for n in pen.notes
    )
    (dash,) = _serve("viber", "2019-03-01", "court_order_2703d")
    assert any(
        n.startswith("Assumption: the FBI chart's 2703(d) court order cell") and "after this date" in n
        for n in dash.notes
    )
    (threema,) = _serve("threema", "2019-03-01", "subpoena")
    (note,) = [n for n in threema.notes if n.startswith("Account created:")]
    assert (
        "'ID creation date'" in note
        and "dated 2021-01-07, after this date (capabilities as of November 2020)" in note
    )
    # the same orders on the chart's date cite it as written
    (threema,) = _serve("threema", "2021-01-07", "subpoena")
    assert "after this date" not in _said(threema)


def test_an_order_served_after_the_chart_in_a_run_set_before_it_cites_the_chart_as_written() -> None:
    before, after = (
        _serve("threema", "2021-01-05", "subpoena", at="1h", duration="4d")[0],
        _serve("threema", "2021-01-05", "subpoena", at="3d", duration="4d")[0],
    )
    assert "after this date" in _said(before) and "after this date" not in _said(after)
    (changed,) = [n for n in after.notes if "2021-01-07" in n and "changed" in n]
    assert (
        changed.startswith("The record of Threema changed on 2021-01-07") and "policy changed" not in changed
    )


def test_every_change_to_a_providers_record_is_said_as_the_records_not_its_policy() -> None:
    """A dated change that is a document of the record (BlackBerry's answers and policy as reported,
    Clemenza's report, Signal's 2021 warrant, iMessage's FAQ giving way to the chart) changes what the
    profile can cite, not what the provider did: an order served after it in a run set before it says
    'the record of X changed', never 'X's policy changed' (Change.record)."""
    of_record = [
        (name, c.effective)
        for name, changes in HISTORY.items()
        for c in changes
        if c.what.startswith("the record") or c.what.startswith("the FBI chart is dated")
    ]
    assert len(of_record) >= 8, of_record
    unmarked = [
        (name, c.effective)
        for name, changes in HISTORY.items()
        for c in changes
        if (name, c.effective) in of_record and not c.record
    ]
    assert not unmarked, unmarked


def test_signal_answering_a_warrant_after_its_2021_record_in_a_run_set_before_says_the_record_changed() -> (
    None
):
    """The record gives the year of Signal's 2021 response, not its day: the note said the record "changed on
    2021-01-01", a day nothing happened on; it says the year, and that the date is the project's, once."""
    (after,) = _serve("signal", "2020-12-30", "search_warrant", at="3d", duration="4d")
    (changed,) = [n for n in after.notes if "2021-01-01" in n and "changed" in n]
    assert changed.startswith(
        "The record of Signal changed in 2021 (the record gives the year, not the day: dated here from its first "
        "day, 2021-01-01), after this run's date (2020-12-30)"
    ), changed
    assert "changed on" not in changed and changed.count("the record gives") == 1, changed
    assert "policy changed" not in changed


def test_a_record_dated_by_its_month_in_a_run_set_before_it_says_the_month_not_a_day() -> None:
    """Project Clemenza's report is of April 2016 (the month only): an order served in April in a run set in March
    said the record "changed on 2016-04-01"."""
    (after,) = _serve("bbm-consumer", "2016-03-30", "ca_part_vi_authorization", at="3d", duration="4d")
    (changed,) = [n for n in after.notes if "changed" in n and "Clemenza" in n]
    assert changed.startswith(
        "The record of BlackBerry Messenger / PIN (consumer) changed in April 2016 (the record gives the month, "
        "not the day: dated here from its first day, 2016-04-01)"
    ), changed
    assert "changed on" not in changed and changed.count("the record gives") == 1, changed


# --- 2. LINE's guidelines, not on the record --------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["line", "line-letter-sealing-off"])
def test_line_keeping_back_the_ip_addresses_its_guidelines_list_is_the_projects_reading(profile: str) -> None:
    (d,) = _serve(profile, None, "subpoena")
    reason, why = d.reasons["ip_addresses"]
    assert reason == "withheld_by_policy"
    assert "the IP address of the device used" in why and "not on the record" in why, why
    assert "this profile follows the chart" in why and "the project's reading" in why, why


# --- 3. WhatsApp's 90 days -----------------------------------------------------------------------------------------


def test_whatsapps_90_days_of_connection_records_are_said_as_assumed_where_they_are_handed_over() -> None:
    subpoena, pen = _serve("whatsapp", None, "subpoena", "pen_register")
    assert "ip_addresses" in subpoena.provided and "ip_addresses" in pen.provided
    said = [n for n in subpoena.notes if "90 days" in n]
    assert said == [
        "IP addresses: the relay keeps each connection's time and address for 90 days; that period is the project's "
        "assumption (the record names the IP address among what WhatsApp hands over, not how long it keeps it)."
    ]
    assert not [
        n for n in pen.notes if "90 days" in n
    ]  # collected from service on, not read off what is kept


# --- 4. the FBI chart scenario's sources ----------------------------------------------------------------------------


def test_the_fbi_chart_scenario_names_the_sources_on_the_record() -> None:
    description = resolve_scenario("fbi-chart").description
    assert "Legal Process Guidelines" not in description
    assert "Apple's iMessage FAQ for law enforcement (published by The Intercept, 2016-09-28)" in description
    assert "docs/record.md" in description


# --- 5. the IPA's Royal Assent: the project's citation ---------------------------------------------------------------


def test_the_ipas_royal_assent_is_said_as_the_projects_citation() -> None:
    from relaysim.relay.legal import INSTRUMENTS

    for key, day in (("ipa_targeted_interception", date(2019, 6, 1)), ("ipa_tcn", date(2019, 6, 1))):
        said = " ".join(INSTRUMENTS[key].caveats_on(day))
        assert "the record gives" not in said and "the project's citation" in said, said
        refused = INSTRUMENTS[key].not_yet(date(2016, 6, 1))
        assert refused is not None and "the project's citation" in refused, refused


# --- 6. Telegram before 2018 ------------------------------------------------------------------------------------------


def test_telegrams_words_before_2018_are_said_as_not_on_the_record() -> None:
    (d,) = _serve("telegram-cloud", "2018-05-01", "court_order_2703d")
    why = d.reasons["ip_addresses"][1]
    assert "disclosed '0 bytes of user data" in why
    assert (
        "Neither those words nor the policy's day (2018-08-28, after this date, as reported) is on the record"
        in why
        and "the project's citation" in why
    ), why
    (change,) = [c for c in HISTORY["telegram-cloud"] if c.effective == date(2018, 8, 28)]
    assert "not on the record" in change.what and "project's citation" in change.source


def test_what_telegram_kept_back_before_2018_is_never_said_as_its_published_policy() -> None:
    """Its words before 2018 are the project's citation, not on the record: what it holds and keeps back, and the
    words its own key opens, were said to be kept back 'under its published policy' and by 'only its policy'."""
    (d,) = _serve("telegram-cloud", "2017-06-01", "search_warrant")
    withheld = d.by_reason("withheld_by_policy")
    assert {"account_created", "message_log", "content"} <= set(withheld), withheld
    for category, why in withheld.items():
        assert "published policy" not in why and "only its policy" not in why, (category, why)
        assert why.startswith(
            "held by Telegram (cloud chats), but not handed over: its words before its privacy policy of August "
            "2018 (after this date), that it had disclosed '0 bytes of user data"
        ), why
        assert "the project's citation, not on the record" in why, why
    assert "the provider's own key opens" in withheld["content"]
    # from that policy on, its published policy, as before
    (d,) = _serve("telegram-cloud", "2019-06-01", "search_warrant")
    assert d.by_reason("withheld_by_policy")["account_created"].endswith(
        "not handed over under its published policy"
    )


# --- 7. iMessage's wiretap ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [None, "2021-01-07", "2019-03-01"])
def test_imessages_wiretap_no_capability_is_said_as_inferred_from_its_pen_register_cell(
    start: str | None,
) -> None:
    (d,) = _serve("imessage", start, "wiretap")
    assert d.reasons["realtime_routing"][0] == "no_capability"
    (assumed,) = [n for n in d.notes if n.startswith("Assumption:")]
    assert "no wiretap column" in assumed and "the project's inference from that pen-register cell" in assumed
    assert ("after this date" in assumed) == (start == "2019-03-01")


# --- 8. a US forward order answered by assumption, on a relay that could collect --------------------------------------


def test_a_us_forward_order_whose_answer_is_assumed_says_so_and_its_real_time_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wechat = get_profile("wechat")
    built = replace(
        wechat, name="wechat-assumed-pen", assumptions={**wechat.assumptions, "pen_register": "assumed here"}
    )
    monkeypatch.setitem(PROFILES, built.name, built)
    (d,) = _serve(built.name, None, "pen_register")
    reason, why = d.reasons["realtime_routing"]
    assert reason == "withheld_by_policy"
    assert "hands nothing over under a pen register (the project's assumption)" in why
    assert why.endswith(f"so it collects nothing ({wechat.notes['realtime_routing']})"), why
    assert wechat.realtime_record not in why  # the record backs no assumed answer
    assert "Assumption: assumed here." in d.notes
    assert any("hands nothing over under one (the project's assumption)" in n for n in d.notes)


# --- 9. "only its policy keeps them back" ------------------------------------------------------------------------------


def test_a_key_opening_withheld_words_says_only_its_policy_keeps_them_back_only_of_a_policy_on_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bbm = get_profile("bbm-consumer")
    (d,) = _serve(bbm.name, None, "search_warrant")
    assert d.reasons["content"][0] == "withheld_by_policy"
    assert d.reasons["content"][1].endswith(": only its policy keeps them back")
    record = "its record, a chart, names who contacted whom, and no more"
    built = replace(bbm, name="bbm-by-its-record", policy_record=record)
    monkeypatch.setitem(PROFILES, built.name, built)
    (d,) = _serve(built.name, None, "search_warrant")
    reason, why = d.reasons["content"]
    assert reason == "withheld_by_policy" and "the provider's own key opens" in why
    assert "only its policy keeps them back" not in why, why


# --- 10. a provider before it existed ------------------------------------------------------------------------------------

_BARE = """
[scenario]
name = "x"
duration = "1h"
start = {start}
{head}

{relay}

[[people]]
name = "a"
"""


@pytest.mark.parametrize(
    ("head", "relay", "path", "title", "first"),
    [
        ("", '[relay]\nprofile = "signal"', "relay.profile", "Signal (profile 'signal')", "2014-07-01"),
        (
            'compare_profiles = ["bes", "wire"]',
            "",
            "scenario.compare_profiles[1]",
            "Wire (profile 'wire')",
            "2014-12-01",
        ),
        ("matrix = true", "", "scenario.start", "Signal (profile 'signal')", "2014-07-01"),
    ],
)
def test_a_run_set_before_a_provider_existed_is_refused_naming_it_and_its_first_day(
    head: str, relay: str, path: str, title: str, first: str
) -> None:
    from relaysim.sims.scenario import ScenarioError

    with pytest.raises(ScenarioError) as info:
        parse_scenario(_BARE.format(start="2013-06-01", head=head, relay=relay), "x.toml")
    said = str(info.value)
    assert said.startswith(
        f"x.toml: {path}: {title} did not exist on 2013-06-01: its first day here is {first}"
    ), said
    assert "the project's citation, not on the record" in said and f"expected a start from {first}" in said, (
        said
    )
    # from its first day on (and in an undated run) it runs
    if path != "scenario.start":
        parse_scenario(_BARE.format(start=first, head=head, relay=relay), "x.toml")
    parse_scenario(
        _BARE.format(start="2013-06-01", head=head, relay=relay).replace("start = 2013-06-01\n", ""), "x.toml"
    )


def test_profile_as_of_refuses_a_day_before_the_provider_and_keeps_none_where_no_first_day_is_kept() -> None:
    with pytest.raises(
        ValueError, match=r"Telegram \(cloud chats\) \(profile 'telegram-cloud'\) did not exist on 2013-07-31"
    ):
        profile_as_of("telegram-cloud", date(2013, 7, 31))
    assert profile_as_of("telegram-cloud", date(2013, 8, 1)).as_of == date(2013, 8, 1)
    # no first day kept: BlackBerry's consumer PIN and BBM, BES
    assert profile_as_of("bbm-consumer", date(2003, 1, 1)).as_of == date(2003, 1, 1)
    for name, p in PROFILES.items():
        if p.since is not None:
            assert (
                p.since[1] and p.not_yet(p.since[0]) is None and p.not_yet(p.since[0] - timedelta(days=1))
            ), name


def test_relay_serve_refuses_a_profile_as_of_before_the_provider(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from relaysim.relay.server import main

    # (a --tls-cert without its key is refused next: were the day not checked first, no relay would start)
    args = ["--profile", "wire", "--profile-as-of", "2014-11-30", "--db", str(tmp_path / "relay.db")]
    assert main([*args, "--tls-cert", str(tmp_path / "cert.pem")]) == 2
    err = capsys.readouterr().err
    assert (
        "--profile-as-of: Wire (profile 'wire') did not exist on 2014-11-30: its first day here is 2014-12-01"
        in err
    )


# --- 11. the days the record gives only by their month ----------------------------------------------------------------


def test_telegrams_september_2024_change_says_its_day_is_the_projects_citation() -> None:
    """The record: "From September 2024"; the day (2024-09-23, Pavel Durov's post announcing it) is the project's
    citation, said with its source in the note of an order served after it in a run set before it."""
    (change,) = [c for c in HISTORY["telegram-cloud"] if c.effective == date(2024, 9, 23)]
    assert (
        "the record gives the month, September 2024, and the day, that of Pavel Durov's post" in change.source
    )
    (d,) = _serve("telegram-cloud", "2024-09-20", "court_order_2703d", at="4d", duration="5d")
    (said,) = [n for n in d.notes if "policy changed on 2024-09-23" in n]
    assert "t.me/durov, 2024-09-23, is the project's citation" in said, said


_GIVES_ONLY = re.compile(r"the record gives the (month|year), ((?:[A-Z][a-z]+ )?\d{4})")


@pytest.mark.parametrize("name", sorted(HISTORY))
def test_a_change_dated_by_a_day_where_the_record_gives_its_month_or_year_cites_the_days_source(
    name: str,
) -> None:
    """Telegram's change of September 2024 was dated 2024-09-23, "announced 2024-09-23 … the day is the project's
    citation", with no source of that day: a change the record dates by its month or year alone is either dated by
    that month (year) (``Change.named``, as rec25's markers: BES's December 2015, consumer BBM's April 2016) or
    carries the source of its day, as sealed sender's (signal.org/blog/sealed-sender, 2018-10-29) and WhatsApp
    multi-device's (engineering.fb.com, 2021-07-14) do: a source named with the day ("SOURCE, YYYY-MM-DD"), inside
    the month (year) the record gives."""
    for change in HISTORY[name]:
        gives = _GIVES_ONLY.search(change.source)
        if change.named is not None or gives is None or "the day" not in change.source:
            continue
        day = f"{change.effective:%Y-%m-%d}"
        assert re.search(rf"[\w.')/] ?, {day}\b", change.source), (name, day, change.source)
        assert gives.group(2) in (f"{change.effective:%B %Y}", f"{change.effective:%Y}"), (
            name,
            gives.group(),
        )


# --- 12. a category's note is not a reason -----------------------------------------------------------------------------


def test_an_assumed_answer_says_why_a_category_is_kept_back_before_what_its_note_says() -> None:
    """WhatsApp under a Pakistani court's order (its record is of US process: what it hands one is assumed, nothing):
    blocked users and last seen were kept back with their notes alone ("both ways: ..."), which say what they are,
    not that they are held and kept back, nor that this is assumed."""
    (d,) = _serve("whatsapp", None, "pk_court_order")
    said = "held by WhatsApp, and not handed over under a Pakistani court order (the project's assumption)"
    for category, note in (
        ("blocked_users", "both ways: the numbers the account blocks"),
        ("last_seen", "WhatsApp's 'last seen' is the account's last activity"),
    ):
        reason, why = d.reasons[category]
        assert reason == "withheld_by_policy" and why.startswith(f"{said}: {note}"), why
    assert d.reasons["ip_addresses"][1] == said  # no note: the reason alone


def test_a_note_is_said_after_why_the_category_is_kept_back_under_a_policy_or_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As for an assumed answer: under a published policy (Signal's device info under a subpoena, WhatsApp's group
    membership under a 2703(d) order) and under a record's word (Profile.policy_record), a category's note was given
    as the whole reason, saying what the category is, not that it is held and kept back."""
    (d,) = _serve("signal", None, "subpoena")
    said = "held by Signal, but not handed over"
    assert d.reasons["device_info"] == (
        "withheld_by_policy",
        f"{said}: {get_profile('signal').notes['device_info']}",
    )
    (d,) = _serve("whatsapp", None, "court_order_2703d")
    reason, why = d.reasons["group_membership"]
    assert reason == "withheld_by_policy"
    assert (
        why == f"held by WhatsApp, but not handed over: {get_profile('whatsapp').notes['group_membership']}"
    )
    # a note that dates the policy after the run's date is not preceded by "its published policy" (BlackBerry's,
    # reported in December 2015, under a Pakistani court's order in July 2015)
    (d,) = _serve("bes", "2015-07-01", "pk_court_order")
    reason, why = d.reasons["ciphertext"]
    assert reason == "withheld_by_policy" and "published policy" not in why, why
    assert why.startswith(
        "held by BlackBerry Enterprise Server (carrier relay), but not handed over: BlackBerry's policy as reported "
        "in December 2015, after this date"
    ), why
    # no profile's record-only answer keeps back a category with a note: built here (iMessage's device info)
    note = "each device Apple's directory lists for the account"
    imessage = get_profile("imessage")
    built = replace(
        imessage, name="imessage-with-a-device-note", notes={**imessage.notes, "device_info": note}
    )
    monkeypatch.setitem(PROFILES, built.name, built)
    (d,) = _serve(built.name, None, "subpoena")
    reason, why = d.reasons["device_info"]
    assert reason == "withheld_by_policy"
    assert why == (
        f"held by Apple iMessage, but not handed over: {imessage.policy_record}; that it is withheld is the "
        f"project's reading of that record: {note}"
    ), why


# --- 13. an assumed answer's keeping back of words a key opens is said as assumed --------------------------------------


@pytest.mark.parametrize("process", ["ipa_targeted_interception", "tola_tar"])
def test_words_kept_back_by_an_assumed_answer_are_not_said_to_be_kept_back_by_its_policy(
    process: str,
) -> None:
    """Consumer BBM under a UK or Australian order: the record says nothing of BlackBerry answering one, and the
    profile assumes it answers as its reported policy for court orders does. The words its own key opens were said
    to be kept back by 'only its policy', as if a policy of BlackBerry's for that order were on record."""
    (d,) = _serve("bbm-consumer", None, process, duration="5h")
    reason, why = d.reasons["content"]
    assert reason == "withheld_by_policy" and "the provider's own key opens" in why, why
    assert "only its policy keeps them back" not in why, why
    assert why.endswith(
        ": only the answer this profile assumes it gives to this order keeps them back (the project's assumption)"
    ), why
    assert any(n.startswith("Assumption: the record says nothing of BlackBerry") for n in d.notes)
    # where its policy for the order is on record (a US search warrant), the words say so, as before
    (d,) = _serve("bbm-consumer", None, "search_warrant")
    assert d.reasons["content"][1].endswith(": only its policy keeps them back")


# --- 14. LINE's Letter Sealing: the record gives no date -----------------------------------------------------------


@pytest.mark.parametrize("start", ["2012-06-01", "2016-05-01", None])
def test_a_line_run_says_the_record_gives_no_date_for_letter_sealing(start: str | None) -> None:
    """No date for Letter Sealing is on the record (docs/record.md), so no dated design change can say a run set
    before it had none, as Signal's sealed sender does: a dated run under `line` said the words were end-to-end
    encrypted and never that the day Letter Sealing began is not on the record."""
    assert not any("Letter Sealing" in c.what for c in HISTORY.get("line", ()))
    (d,) = _serve("line", start, "search_warrant")
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible"
    assert (
        "The record gives no date for Letter Sealing's start: that LINE had it on the date of a run set on one is "
        "the project's assumption" in why
    ), why


# --- 15. a fact resting on a document not on the record says so --------------------------------------------------------


def test_wickrs_last_use_as_a_date_and_threemas_public_key_say_what_of_the_record_they_rest_on() -> None:
    """The chart says Wickr's "last use", not its date: that last seen is a date rests on Wickr's privacy policy,
    which is not on the record (docs/record.md), and was said as "Wickr: 'the date of last use'". Threema's device
    info cited its transparency report, not on the record, for what the record itself holds (the public key)."""
    (d,) = _serve("wickr", None, "subpoena")
    (said,) = [n for n in d.notes if n.startswith("Last seen:")]
    assert "the FBI chart says 'last use'" in said and "which is not on the record" in said, said
    (d,) = _serve("threema", None, "subpoena")
    (said,) = [n for n in d.notes if n.startswith("Device info:")]
    assert "transparency report" not in said and "the record adds the public key" in said, said


def test_what_wire_keeps_by_its_whitepaper_alone_is_said_as_the_projects_citation() -> None:
    """The record names Wire's group creator, members, devices and names, and per device its class, model,
    registration time and location; not its privacy whitepaper, whose sections the notes cited for the rest (a
    profile's picture, accent colour and locale; a device's label; connections) as if on the record."""
    wire = get_profile("wire")
    for category in ("subscriber_info", "device_info", "contacts"):
        assert "the project's citation, not on the record" in wire.notes[category] or (
            "the whitepaper is not on the record" in wire.notes[category]
        ), (category, wire.notes[category])
    (d,) = _serve("wire", None, "subpoena")
    (said,) = [n for n in d.notes if n.startswith("Subscriber info:")]
    assert "the whitepaper is not on the record" in said, said


# --- 16. days HISTORY takes from a source dated more finely than the record ----------------------------------------------


def test_the_days_of_sealed_sender_and_whatsapp_multi_device_are_said_as_the_projects_citation() -> None:
    """The record gives sealed sender's month (October 2018) and WhatsApp multi-device's year (2021); HISTORY's days
    (2018-10-29, 2021-07-14) are the days of the posts it cites, and were shown as if the record's."""
    (sealed,) = [c for c in HISTORY["signal"] if c.effective == date(2018, 10, 29)]
    (multi,) = [c for c in HISTORY["whatsapp"] if c.effective == date(2021, 7, 14)]
    assert (
        "the record gives the month, October 2018" in sealed.source and "project's citation" in sealed.source
    )
    assert "the record gives the year, 2021" in multi.source and "project's citation" in multi.source
    (d,) = _serve("signal", "2016-05-01", "subpoena")
    why = d.reasons["message_log"][1]
    assert "2018-10-29, after this date" in why and "the record gives the month, October 2018" in why, why
    said = profile_as_of("whatsapp", date(2020, 6, 1)).identity_model_source
    assert (
        "2021-07-14" in said and "the record gives the year, 2021" in said and "project's citation" in said
    ), said
    record = (Path(__file__).parents[2] / "docs" / "record.md").read_text()
    assert "`HISTORY` dates it 2018-10-29" in record and "`HISTORY` dates it 2021-07-14" in record


# --- 17. consumer BBM's words before BlackBerry's policy was reported ---------------------------------------------------


def test_words_its_key_opens_before_the_policy_was_reported_say_the_report_is_later() -> None:
    """pakistan-2015's court order (July 2015) on consumer BBM: the words were said to be kept back by "only its
    policy", the record of which is a report of December 2015 (the record: of Pakistan in 2015 "only policy protected
    them")."""
    (d,) = _serve("bbm-consumer", "2015-07-01", "pk_court_order")
    reason, why = d.reasons["content"]
    assert reason == "withheld_by_policy" and "the provider's own key opens" in why, why
    assert why.endswith(
        ": only its policy keeps them back (as reported in December 2015, after this date: that it was its policy on "
        "this date is the project's assumption)"
    ), why
    # served after the report's month in a run set before it: the policy as reported, as today
    served = profile_as_of("bbm-consumer", date(2015, 11, 29), served=date(2016, 1, 2))
    assert served.policy_later == "" and served.policy_name == get_profile("bbm-consumer").policy_name
    # inside the report's month (the record gives no day of it): as reported, its day not known (Change.within)
    inside = profile_as_of("bbm-consumer", date(2015, 11, 29), served=date(2015, 12, 2))
    assert inside.policy_later == "" and inside.policy_name == (
        f"{get_profile('bbm-consumer').policy_name} (December 2015: this month, the day not on the record: whether "
        "John Chen's report (the seed article) came before this date is not known, and that it was its policy on "
        "this date is the project's assumption)"
    ), inside.policy_name


# --- 18. a profile without a published policy gives a reason for every instrument -------------------------------------


def test_a_profile_without_a_published_policy_record_or_assumption_is_refused_where_it_is_defined() -> None:
    """published_policy False with no policy_record and no assumption under an instrument gave the reason "held by
    X, but not handed over: ; that it is withheld is the project's reading of that record"; a relay that could
    collect, with no realtime_record, "its published policy hands nothing over", of a provider without one."""
    viber = get_profile("viber")
    with pytest.raises(
        ValueError, match=r"profile 'viber-bare': published_policy is False and policy_record is empty"
    ):
        replace(viber, name="viber-bare", policy_record="")
    wechat = get_profile("wechat")
    with pytest.raises(ValueError, match=r"could collect in real time .* realtime_record is empty") as caught:
        replace(wechat, name="wechat-bare", realtime_record="")
    assert "pen_register" in str(caught.value) and "wiretap" in str(caught.value)
    # an assumption under each instrument is a reason too (Wire), and so is a record's word (Viber, WeChat)
    for name in ("wire", "viber", "wechat"):
        replace(get_profile(name))


# --- 19. WeChat's real-time capability is the project's inference ------------------------------------------------------


def test_wechat_could_collect_in_real_time_is_said_as_the_projects_inference() -> None:
    (d,) = _serve("wechat", None, "pen_register")
    for category in ("realtime_routing", "ip_addresses"):
        reason, why = d.reasons[category]
        assert reason == "withheld_by_policy"
        assert why.startswith(
            "WeChat (account registered outside China) could collect it in real time (the project's inference: "
        ), why
    (note,) = [n for n in d.notes if "could collect under a pen register" in n]
    assert "(the project's inference: WeChat is not end to end" in note, note


# --- 20. BlackBerry's policy is reported, not published -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["bbm-consumer", "bes"])
def test_blackberrys_policy_is_called_reported_not_published(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record has BlackBerry's policy "as reported" (John Chen, December 2015): a category it keeps back without a
    note of its own was said to be kept back "under its published policy". No real order reaches that; built here."""
    bb = get_profile(name)
    built = replace(bb, name=f"{name}-no-notes", notes={})
    monkeypatch.setitem(PROFILES, built.name, built)
    (d,) = _serve(built.name, None, "pk_court_order")
    reason, why = d.reasons["ciphertext"]
    assert reason == "withheld_by_policy" and "published" not in why, why
    assert why.endswith("not handed over under its policy as reported (John Chen, December 2015)"), why
    # before the report, the policy is said as reported later, and as assumed on the run's date
    assert profile_as_of(name, date(2015, 7, 1)).policy_name == (
        "its policy as reported in December 2015 (John Chen), after this date (that it was its policy on this date "
        "is the project's assumption)"
    )


# --- 21. Telegram before 2018: its words quoted once ---------------------------------------------------------------------


@pytest.mark.parametrize("process", ["search_warrant", "court_order_2703d", "pen_register"])
def test_telegrams_zero_bytes_words_are_quoted_once_in_a_reason_or_note(process: str) -> None:
    (d,) = _serve("telegram-cloud", "2017-06-01", process)
    texts = [why for _r, why in d.reasons.values()] + d.notes
    assert any("0 bytes" in t for t in texts), texts
    for t in texts:
        assert t.count("0 bytes") <= 1, t


# --- 22. Signal's subscriber info: "nothing else" -----------------------------------------------------------------------


def test_signals_subscriber_info_says_what_the_record_says() -> None:
    (d,) = _serve("signal", None, "subpoena")
    reason, why = d.reasons["subscriber_info"]
    assert reason == "not_retained"
    assert "'nothing else'" in why and "the project's reading of that record" in why, why
    assert "payment details exist" not in why, why


# --- 23. what the record does not name: BlackBerry's answer to a subpoena ----------------------------------------------


@pytest.mark.parametrize(("name", "start"), [("bbm-consumer", None), ("bes", None), ("bes", "2015-07-01")])
def test_blackberrys_answer_to_a_subpoena_is_assumed(name: str, start: str | None) -> None:
    """The record reports BlackBerry's policy for court orders; a subpoena is not one, and its answer (the subscriber
    records, not who contacted whom) was given with no word that no record says it."""
    (d,) = _serve(name, start, "subpoena")
    (assumed,) = [n for n in d.notes if n.startswith("Assumption:")]
    assert "a subpoena is not one, and no record says what BlackBerry hands a subpoena" in assumed, assumed
    assert ("December 2015, after this date" in assumed) == (start is not None), assumed
    reason, why = d.reasons["message_log"]
    assert reason == "withheld_by_policy" and why.endswith("(the project's assumption)"), why


# --- 24. any source cited by its day, dated after the run ----------------------------------------------------------------

_DAY = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_before_a_day_a_text_cites_it_says_it_is_later(name: str) -> None:
    """As the FBI chart's citations do: a text citing a source (or an event) by its day says, in a disclosure dated
    before it, that it is after this date; from that day on it is as written."""
    cited = sorted(
        {
            date.fromisoformat(m)
            for f in PROFILE_TEXT_FIELDS
            for t in _texts(getattr(get_profile(name), f))
            for m in _DAY.findall(t)
        }
    )
    for day in sorted(
        {date(2011, 6, 1), date(2013, 1, 7), date(2015, 7, 1), date(2016, 5, 1), CHART, *cited}
    ):
        try:
            profile = profile_as_of(name, day)
        except ValueError:  # the provider did not exist yet
            continue
        for f in PROFILE_TEXT_FIELDS:
            for text in _texts(getattr(profile, f)):
                for later in {m for m in _DAY.findall(text) if date.fromisoformat(m) > day}:
                    assert f"{later}, after this date" in text, (name, day, f, text)
    for f in PROFILE_TEXT_FIELDS:
        for text in _texts(getattr(profile_as_of(name, None), f)):
            assert ", after this date" not in text, (name, f, text)


def test_the_2016_subpoena_scenario_says_the_aclus_publication_is_later() -> None:
    """signal-subpoena-2016 runs on 2016-05-01; the ACLU published Signal's answer on 2016-10-04."""
    disclosures = Simulation(resolve_scenario("signal-subpoena-2016")).run().disclosures
    (d,) = [d for d in disclosures if "subscriber_info" in d.reasons]  # not the number with no account
    reason, why = d.reasons["subscriber_info"]
    assert reason == "not_retained"
    assert "(signal.org/bigbrother; ACLU, 2016-10-04, after this date)" in why, why
    # an order served on or after that day, in a run set before it, cites it as written, and says the record changed
    later = profile_as_of("signal", date(2016, 5, 1), served=date(2016, 10, 4))
    assert "ACLU, 2016-10-04)" in later.notes["subscriber_info"], later.notes["subscriber_info"]


@pytest.mark.parametrize("profile", ["line", "line-letter-sealing-off"])
def test_the_fbi_chart_scenario_says_lines_guidelines_are_later(profile: str) -> None:
    """fbi-chart runs on 2021-01-07; LINE's guidelines it cites (not on the record) are of 2022-01-19."""
    start = resolve_scenario("fbi-chart").start
    assert start is not None and start < date(2022, 1, 19)
    (d,) = _serve(profile, "2021-01-07T12:00:00Z", "subpoena")
    said = [why for _r, why in d.reasons.values() if "LINE's guidelines" in why]
    assert said and all("of 2022-01-19, after this date" in why for why in said), said


# --- 25. every text field of Profile is dated, or cites nothing a disclosure says ------------------------------------------


def test_every_text_field_of_profile_is_dated_or_listed_as_not() -> None:
    """A new text field of Profile is held to the run's date (profiles._TEXT_FIELDS, which a change to the record may
    rewrite, so each is one of POLICY_FIELDS) or listed as one that a disclosure never says (_UNDATED_TEXT_FIELDS)."""
    import dataclasses

    from relaysim.relay import profiles

    text = {f.name for f in dataclasses.fields(Profile) if "str" in str(f.type)}
    dated, undated = set(profiles._TEXT_FIELDS), set(profiles._UNDATED_TEXT_FIELDS)
    design = set(profiles._DESIGN_TEXT_FIELDS)  # dated as of the run's date, by design changes
    assert not dated & undated and not design & (dated | undated), (dated & undated, design)
    assert text == dated | undated | design, (
        text - dated - undated - design,
        (dated | undated | design) - text,
    )
    assert dated <= set(POLICY_FIELDS), dated - set(POLICY_FIELDS)
    assert not design & set(POLICY_FIELDS), design & set(POLICY_FIELDS)
    assert "realtime_inferred" in dated


# --- 26. a built-in scenario's sources, for its date --------------------------------------------------------------------

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
_MONTH_YEAR = re.compile(rf"\b({'|'.join(_MONTHS)}) (\d{{4}})\b")


def _dates_in(text: str) -> list[date]:
    return [date.fromisoformat(m) for m in _DAY.findall(text)] + [
        date(int(y), _MONTHS.index(m) + 1, 1) for m, y in _MONTH_YEAR.findall(text)
    ]


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_a_scenarios_sources_dated_after_its_start_are_said_to_be(name: str) -> None:
    """A built-in scenario set on a date lists a source dated after it (by its day, or its month) only where it says
    so: after "dated after the run"."""
    scenario = resolve_scenario(name)
    if scenario.start is None or "Sources:" not in scenario.description:
        return
    start = (
        scenario.start if isinstance(scenario.start, date) else date.fromisoformat(str(scenario.start)[:10])
    )
    sources = scenario.description.split("Sources:", 1)[1]
    on_record = sources.split("dated after the run", 1)[0]
    later = [d for d in _dates_in(on_record) if d > start]
    assert not later, (name, start, later, on_record)


def test_the_fbi_chart_scenario_says_the_foia_release_is_after_its_date() -> None:
    assert "released under FOIA on 2021-11-19, after it" in resolve_scenario("fbi-chart").description


# --- 26. the scenarios' words: nothing beyond the record unless said as the project's ---------------------------------------


def test_india_2010_says_bis_e_mail_under_blackberrys_keys_is_the_projects_inference() -> None:
    """The record says only that the Mumbai facility covered BIS e-mail; the description said it travels "under keys
    BlackBerry holds" as the record's."""
    description = resolve_scenario("india-2010").description
    assert "which travel under keys BlackBerry holds" not in description
    assert (
        "that BIS e-mail too travels under keys BlackBerry holds is the project's inference from the facility's "
        "covering it: the record says only that it did" in description
    ), description
    # the record has BES keys held by the customer's server, not generated there (RIM, August 2010)
    for name in ("india-2010", "pakistan-2015"):
        assert "generate" not in resolve_scenario(name).description, name


def test_rcmp_clemenza_says_only_what_the_record_says_of_r_v_mirarchi() -> None:
    """The record: "reported April 2016; R v. Mirarchi". Not Quebec, not "through the court record"; that BES was
    beyond the global key is the project's inference."""
    description = resolve_scenario("rcmp-clemenza").description
    assert "Quebec" not in description and "court record" not in description
    assert "it was reported in April 2016 (R v. Mirarchi)" in description
    assert (
        "was beyond that key (the project's inference" in description
        and "was not affected" not in description
    )


# Where the instrument is named loosely: "a pen register" for a pen register (/ trap-and-trace) order, "a wiretap" for a
# wiretap order, "a warrant" for a search warrant. Not: its column or cell in the FBI chart, "a pen register or wiretap
# order" (one order of either name), the chart's 'pen register' column, Pakistan's warrant under the Investigation for Fair Trial Act 2013 (the Act's name).
_LOOSE = re.compile(
    r"(?<!')\bpen[ -]register\b(?! order| / trap|,? or (a )?wiretap order| cell| column| capability)"
    r"|\bwiretap\b(?! order| column)"
    r"|(?<!search )(?<!interception )(?<!Act )(?<!')\bwarrant\b(?! \(2703| cell| for surveillance)",
    re.IGNORECASE,
)
# What is not prose: process keys and names (pen_register, search_warrant, pen-register-amira, warrant.json), quoted or
# in backticks, argparse's choices ({subpoena,...}) and the key column of its choice list.
_NOT_PROSE = re.compile(
    r"[\w.-]*(pen[_-]register|wiretap|warrant)[_.-][\w.-]*|[\w-]+[_-](warrant|wiretap)\b|\"[\w-]*\"|`[^`\n]*`"
    r"|\{[^}\n]*\}|^ {2}[a-z0-9_]+ {2,}",
    re.MULTILINE,
)
_ROOT = Path(__file__).parents[2]


def _prose_of_the_record() -> dict[str, str]:
    import argparse

    from relaysim.sims.cli import build_parser

    texts = {
        str(p.relative_to(_ROOT)): p.read_text(encoding="utf-8")
        for p in sorted(_ROOT.glob("sims/scenarios/*.toml"))
    }
    texts |= {
        str(p.relative_to(_ROOT)): p.read_text(encoding="utf-8") for p in sorted(_ROOT.glob("docs/*.md"))
    }
    texts["README.md"] = (_ROOT / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    texts["relaysim --help"] = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                texts[f"relaysim {name} --help"] = sub.format_help()
    return texts


def _disclosed_texts_of_the_relay() -> dict[str, str]:
    """What the relay's profiles say in a disclosure (every text field), as of today and as of the day before each
    dated change, and as an order served on a later day in a run set on one of those shows them (``served``: the
    policy changes, and the rewrites of a record dated later, as of the day served; the design changes as of the
    run's day): relay/profiles.py's texts that reach output."""
    texts = {}
    for name, profile in PROFILES.items():
        changes = HISTORY.get(name, ())
        days = sorted({c.effective - timedelta(days=1) for c in changes})
        served_days = sorted({*days, *(c.effective for c in changes)})
        for day in [None, *days]:
            if day is not None and profile.not_yet(day) is not None:
                continue
            for served in [None, *(s for s in served_days if day is not None and s > day)]:
                as_of = profile_as_of(name, day, served=served)
                for field in PROFILE_TEXT_FIELDS:
                    for i, text in enumerate(_texts(getattr(as_of, field))):
                        on = f", served {served}" if served else ""
                        texts[f"profile {name} as of {day or 'today'}{on}: {field} #{i}"] = text
    return texts


def test_the_relays_texts_checked_for_legal_names_include_those_of_an_order_served_later() -> None:
    """The legal-name test read the texts as of a run's day alone; an order served after a policy change in a run
    set before it shows the texts as served (Telegram's of September 2024 in a run set in 2018)."""
    texts = _disclosed_texts_of_the_relay()
    served = {k for k in texts if ", served " in k}
    assert any(k.startswith("profile telegram-cloud as of ") for k in served), sorted(served)[:5]
    # every text an order served on a later day shows is among those the test reads
    for name in sorted(HISTORY):
        changes = HISTORY.get(name, ())
        if not changes:
            continue
        first = min(c.effective for c in changes) - timedelta(days=1)
        if PROFILES[name].not_yet(first) is not None:
            continue
        shown = profile_as_of(name, first, served=max(c.effective for c in changes))
        said = set(texts.values())
        for field in PROFILE_TEXT_FIELDS:
            for text in _texts(getattr(shown, field)):
                assert text in said, (name, field, text)


def test_scenarios_docs_and_help_name_each_instrument_by_its_legal_name() -> None:
    """two-friends said an agency "serves a pen register"; fbi-chart's description, docs and `relaysim chart --help`
    named the pen register order and the wiretap order loosely too; and the relay's own disclosures said "so that a
    pen register gets nothing collected" (relay/profiles.py, _chart_realtime_assumed)."""
    loose = []
    for where, text in (_prose_of_the_record() | _disclosed_texts_of_the_relay()).items():
        prose = re.sub(
            r"\s*\n[ \t]*(#[ \t]*)?", " ", _NOT_PROSE.sub("", text)
        )  # a wrapped line (or comment) as one
        loose += [(where, prose[max(0, m.start() - 60) : m.end() + 30]) for m in _LOOSE.finditer(prose)]
    assert not loose, loose


@pytest.mark.parametrize("start", [None, "2013-01-07", "2015-07-01"])
def test_bes_keys_are_said_held_by_the_customers_server_as_the_record_says_not_generated_there(
    start: str | None,
) -> None:
    """The record (RIM, August 2010): the customer's server holds the keys. That it generates them is not on it."""
    profile = profile_as_of("bes", None if start is None else date.fromisoformat(start))
    texts = [t for f in PROFILE_TEXT_FIELDS for t in _texts(getattr(profile, f))] + list(profile.sources)
    assert any("held by the" in t for t in texts)
    assert not [t for t in texts if "generated" in t], [t for t in texts if "generated" in t]


@pytest.mark.parametrize(
    ("start", "later"), [("2016-05-01", True), ("2020-06-01", True), ("2021-01-07", False), (None, False)]
)
def test_signals_groups_note_cites_its_2021_response_only_from_2021(start: str | None, later: bool) -> None:
    """Signal's note on group membership quoted its 2021 response (Santa Clara County warrant) in a disclosure of
    2016 as if on the record then; before 2021 it says that response is after the disclosure's date."""
    (d,) = _serve("signal", start, "court_order_2703d")
    why = d.reasons["group_membership"][1]
    assert "'anything about a user's groups" in why, why
    assert ("2021: Signal 'doesn't have access to'" in why) is not later, why
    assert ("its response of 2021 (Santa Clara County search warrant) is after this date" in why) is later, (
        why
    )


def test_the_scenarios_descriptions_say_the_records_words_or_mark_the_projects() -> None:
    """signal-subpoena-2016 named Open Whisper Systems and spelled out what a subpoena reaches as the record's; india-2010
    had India demand access to traffic, RIM answer India, and the Acts' years as the record's; pakistan-2015 said the
    record names no statute; key-escrow had the escrow mandate beside the PTA's demand as if it were the PTA's."""
    signal = resolve_scenario("signal-subpoena-2016").description
    assert "Open Whisper Systems" not in signal and "payment details" not in signal
    assert "for basic subscriber information (the record's words;" in signal
    india = resolve_scenario("india-2010").description
    assert "access to BlackBerry traffic" not in india and "RIM answered" not in india
    assert "which the record does not tie to India" in india
    assert "Act 1885" not in india and "Act 2000" not in india
    assert "the Acts' years, 1885 and 2000, are the project's citation, not on the record" in india
    pakistan = resolve_scenario("pakistan-2015").description
    assert "the record names no statute for such orders" not in pakistan
    assert "the record names the Investigation for Fair Trial Act 2013 for surveillance warrants" in pakistan
    escrow = resolve_scenario("key-escrow").description
    assert "as Pakistan's PTA asked" not in escrow
    assert (
        "mandates key escrow (the project's hypothetical: no regulator on the record asked for escrow"
        in escrow
    )


@pytest.mark.parametrize(
    ("start", "ccs_later", "response_later"),
    [
        ("2020-06-01", True, True),
        ("2020-12-01", False, True),
        ("2021-06-01", False, False),
        (None, False, False),
    ],
)
def test_signals_groups_v2_design_source_says_ccs_2020_and_the_2021_response_are_later(
    start: str | None, ccs_later: bool, response_later: bool
) -> None:
    """A run set between groups v2's announcement (2019-12-09) and 2021 cited CCS 2020 and Signal's 2021 response in
    its design source (the ghost-participant report's source) as if on the record on its date."""
    source = profile_as_of("signal", None if start is None else date.fromisoformat(start)).group_source
    assert "CCS 2020" in source and "2019-12-09" in source, source
    assert (
        "CCS 2020, the conference opening 2020-11-09: the project's citation) is after this date" in source
    ) is (ccs_later), source
    assert (
        "its response of 2021 (Santa Clara County search warrant) is after this date" in source
    ) is response_later
    assert ("2021: Signal 'doesn't have access to'" in source) is not response_later, source


# --- 28. the profiles' sources, listed in every disclosure and dated as of its day ---------------------------------


def test_a_disclosure_lists_its_profiles_sources() -> None:
    """The sources were said in no disclosure: a reader saw "(ACLU, 2016-10-04)" in a reason and nowhere the list."""
    (d,) = _serve("signal", None, "subpoena")
    assert d.sources == get_profile("signal").sources
    md = d.to_markdown()
    assert "## Sources the profile `signal` cites" in md
    assert all(s in md for s in d.sources) and d.to_json()["sources"] == list(d.sources)


_YEAR = re.compile(r"(?<![\d-])(?:19|20)\d{2}(?![\d-])")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_source_dated_after_a_disclosures_day_says_it_is_later(name: str) -> None:
    """As the texts (test 24): a source citing a day, or naming a year alone, after the day an order is served says
    so; the FBI chart's before its date too; an undated run lists them as written."""
    profile = get_profile(name)
    assert sources_on(profile, None) == profile.sources
    for day in (date(2011, 6, 1), date(2013, 1, 7), date(2016, 5, 1), date(2020, 6, 1), date(2021, 6, 1)):
        if profile.not_yet(day) is not None:
            continue
        for written, said in zip(profile.sources, sources_on(profile, day), strict=True):
            later_days = {d for d in _DAY.findall(written) if date.fromisoformat(d) > day}
            for d in later_days:
                assert f"{d}, after this date" in said, (name, day, said)
            for year in {y for y in _YEAR.findall(written) if int(y) > day.year}:
                later = rf"\b{year}(-\d\d-\d\d)?, after this date|\([^()]*\b{year}\b[^()]* after this date\)"
                assert re.search(later, said), (name, day, year, said)
            if "chart" in written and day < CHART:
                assert "the FBI chart cited here is dated 2021-01-07, after this date" in said
            if not later_days and not any(int(y) > day.year for y in _YEAR.findall(written)):
                # but a year of the day's own, or a range it is in, said as such (test 32)
                this_year = re.sub(
                    r" \([^()]*(the month not on the record|this date is within it)\)$", "", said
                )
                assert this_year == written or "chart" in written, (name, day, said)


def test_the_2016_subpoena_scenarios_disclosures_list_signals_sources_as_of_2016() -> None:
    for d in Simulation(resolve_scenario("signal-subpoena-2016")).run().disclosures:
        md = d.to_markdown()
        assert "(ACLU, 2016-10-04, after this date)" in md
        assert "search warrant, 2021 (2021 is after this date)" in md
        assert "FOIA release 2021-11-19, after this date" in md


def test_a_source_not_on_the_record_says_so() -> None:
    """docs/record.md lists Apple's Legal Process Guidelines, Threema's transparency report, Wickr's privacy policy and
    reporting page, LINE's guidelines and Wire's privacy whitepaper as not on the record: their sources said nothing.
    Nor did Wire's key-verification blog post (2017-01-16), nor the case name "In re Facebook Messenger", which the
    record does not give (it gives the court, E.D. Cal., the year, 2018, and the facts)."""
    marked = {
        (name, s.split(",")[0].split(" (")[0])
        for name, p in PROFILES.items()
        for s in p.sources
        if "not on the record: docs/record.md" in s
    }
    assert marked == {
        ("imessage", "Apple"),
        ("threema", "Threema"),
        ("wickr", "Wickr"),
        ("line-letter-sealing-off", "LINE Corporation"),
        ("wire", "Wire Privacy Whitepaper"),
        ("wire", "Wire"),
        ("whatsapp", "a federal court in E.D. Cal."),
    }, marked
    assert sum("not on the record" in s for s in get_profile("wickr").sources) == 2


def test_telegrams_source_says_what_the_record_says_before_and_after_september_2024() -> None:
    """It said "on a court order" for the years before 2024: the record has "only for confirmed terror suspects"."""
    (policy,) = [s for s in get_profile("telegram-cloud").sources if "§8.3" in s]
    assert "2018 to August 2024 only for confirmed terror suspects" in policy
    assert (
        "from September 2024 to a valid order from judicial authorities naming the user as a criminal suspect"
        in (policy)
    )


@pytest.mark.parametrize("name", ["bbm-consumer", "bes"])
def test_a_profile_citing_blackberrys_reported_policy_lists_it_among_its_sources(name: str) -> None:
    """bbm-consumer's texts cite the policy as reported (John Chen, December 2015) throughout; its sources did not."""
    profile = get_profile(name)
    cites = any("John Chen" in t for f in PROFILE_TEXT_FIELDS for t in _texts(getattr(profile, f)))
    assert cites
    assert any("policy as reported (Dec 2015)" in s for s in profile.sources), profile.sources


def test_bes_lists_the_record_of_india_among_its_sources() -> None:
    """BES's texts cite India's facility (2012) and its acceptance (2013) under every Indian order; its sources named
    only RIM, Pakistan and the reported policy."""
    profile = get_profile("bes")
    assert any("Mumbai" in t for f in PROFILE_TEXT_FIELDS for t in _texts(getattr(profile, f)))
    (india,) = [s for s in profile.sources if s.startswith("India")]
    assert "Mumbai (2012)" in india and "accepted in 2013" in india


# --- BlackBerry's "certain metadata": the records beyond the policy's words, the project's reading ----------------


@pytest.mark.parametrize("name", ["bbm-consumer", "bes"])
@pytest.mark.parametrize("start", [None, "2011-06-01", "2016-05-01"])
def test_blackberrys_certain_metadata_is_said_as_the_projects_reading(name: str, start: str | None) -> None:
    """The reported policy's words are "location, who contacted whom and certain metadata" (John Chen, December
    2015): the IP addresses, device info, message counts, contacts, groups and look-up log handed a 2703(d) order, a
    search warrant and a Pakistani court's order were said as that policy, and no disclosure said that they are
    "certain metadata" only by the project's reading; on every date, also before the report (HISTORY)."""
    processes = ("court_order_2703d", "search_warrant", "pk_court_order")
    for d in _serve(name, start, *processes):
        (reading,) = [n for n in d.notes if n.startswith("Reading: ")]
        assert "certain metadata" in reading and "the project's reading" in reading, reading
        for category in ("ip_addresses", "device_info", "message_counts", "contacts", "group_membership"):
            assert category in PROFILES[name].discloses[d.process.process], category
            assert CATEGORIES[category].label in reading, (category, reading)
        assert ("after this date" in reading) is (start is not None and "2011" in start), reading
    profile = get_profile(name)
    for day in (None, date(2011, 6, 1), date(2015, 11, 30), date(2016, 5, 1)):
        readings = profile_as_of(name, day).readings
        assert set(processes) <= set(readings), (name, day)
    assert "location" not in profile.readings["court_order_2703d"].split("covers", 1)[1]


def test_the_messenger_ruling_is_said_as_the_record_gives_it_and_its_name_as_the_projects_citation() -> None:
    """The record: "in 2018 a federal court in E.D. Cal. refused DOJ's motion to hold Facebook in contempt for not
    wiretapping Messenger voice calls". WhatsApp's source and its wiretap assumption named the case "In re Facebook
    Messenger" as if the record did; docs/record.md was silent on it, and on Wire's key-verification blog post."""
    for name, profile in PROFILES.items():
        for field in (*PROFILE_TEXT_FIELDS, "sources"):
            for text in _texts(getattr(profile, field)) if field != "sources" else profile.sources:
                if "In re Facebook Messenger" in text:
                    assert "E.D. Cal." in text and "2018" in text, (name, field, text)
                    assert "the project's citation" in text.split("In re Facebook Messenger", 1)[1], (
                        name,
                        text,
                    )
    (ruling,) = [s for s in get_profile("whatsapp").sources if "Messenger" in s]
    assert ruling.startswith("a federal court in E.D. Cal., 2018, refused DOJ's motion"), ruling
    assert "federal court in E.D. Cal." in get_profile("whatsapp").assumptions["wiretap"]
    record = (Path(__file__).parents[2] / "docs" / "record.md").read_text(encoding="utf-8")
    assert "In re Facebook Messenger" in record and "key-verification-secure-conversations" in record


@pytest.mark.parametrize(
    ("name", "day", "said"),
    [
        (
            "bbm-consumer",
            date(2016, 3, 1),
            "(Project Clemenza, reported in April 2016; R v. Mirarchi) (April 2016 is after this date)",
        ),
        ("bes", date(2015, 11, 1), "not the correspondence (Dec 2015 is after this date)"),
        ("telegram-cloud", date(2024, 8, 15), "criminal suspect) (September 2024 is after this date)"),
    ],
)
def test_a_later_month_of_the_disclosures_own_year_is_told_apart(name: str, day: date, said: str) -> None:
    """ "April 2016" in a disclosure served on 2016-03-01 was listed as written: only a later year was told apart."""
    assert any(said in s for s in sources_on(get_profile(name), day)), sources_on(get_profile(name), day)
    # from the month's first day on, it is not later
    month = {"bbm-consumer": date(2016, 4, 1), "bes": date(2015, 12, 1), "telegram-cloud": date(2024, 9, 1)}[
        name
    ]
    assert not any("is after this date)" in s for s in sources_on(get_profile(name), month) if said[:20] in s)


def test_the_later_years_of_a_source_are_said_before_the_fbi_charts_note() -> None:
    """Telegram's §8.3 source read "…the project's assumption (2018, 2024 are after this date)": the years its own
    words name were said after the FBI chart's note, as if of the chart."""
    (policy,) = [s for s in sources_on(get_profile("telegram-cloud"), date(2016, 3, 1)) if "§8.3" in s]
    assert (
        "criminal suspect) (2018, 2024 are after this date); the FBI chart cited here is dated 2021-01-07"
        in policy
    )
    assert policy.endswith("that what it shows held on this date is the project's assumption"), policy


@pytest.mark.parametrize(
    ("name", "start"), [("whatsapp", None), ("whatsapp", "2016-05-01"), ("imessage", "2016-05-01")]
)
def test_a_warrant_on_a_backups_custodian_lists_the_backups_sources_dated_as_of_service(
    name: str, start: str | None
) -> None:
    """Every other disclosure ends with its profile's sources; one under a warrant on the backup's custodian listed
    none, though its note says what the backup is (iCloud's keys, WhatsApp's end-to-end backups) on the record's
    word."""
    (d,) = _serve(name, start, "backup_warrant")
    backup = BACKUPS[get_profile(name).backup]
    assert backup.sources and d.sources, (name, d.sources)
    if start is None:
        assert d.sources == backup.sources
    else:
        assert d.sources == dated_sources(backup.sources, date.fromisoformat(start)) != backup.sources
        assert all("after this date" in s for s in d.sources if re.search(r"20(2\d|17|18|19)", s)), d.sources
        if name == "imessage":
            assert any(
                "the FBI chart cited here is dated 2021-01-07, after this date" in s for s in d.sources
            )
    md = d.to_markdown()
    assert (
        f"## Sources the backup held by {backup.custodian} cites" in md and "## Sources the profile" not in md
    )
    assert all(s in md for s in d.sources) and d.to_json()["sources"] == list(d.sources)


# --- 29. a year named alone, or a month with its year, in a text: as the sources (test 28) ----------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_before_a_year_a_text_names_alone_it_says_it_is_later(name: str) -> None:
    """Only days were dated in the texts: "in 2018 a federal court in E.D. Cal. refused…" (WhatsApp's wiretap
    assumption) was said as known in a disclosure of 2016. A year a text names alone (but the FBI chart's, "the FBI
    chart (2021)", "capabilities as of November 2020", whose own note says it is later) after the day is said to be
    later, as a source says it."""
    for day in (date(2010, 6, 1), date(2013, 1, 7), date(2016, 5, 1), date(2020, 6, 1), date(2024, 8, 1)):
        if get_profile(name).not_yet(day) is not None:
            continue
        profile = profile_as_of(name, day)
        for f in PROFILE_TEXT_FIELDS:
            for text in _texts(getattr(profile, f)):
                chart = re.sub(r"chart \(2021\)|capabilities as of November 2020", "", text)
                alone = _YEAR.findall(_DAY.sub("", chart))
                for year in {y for y in alone if int(y) > day.year}:
                    later = (
                        rf"\b{year}(-\d\d-\d\d)?( \([^()]*\))?,? (is )?after this date|\b{year} \(after this date"
                        rf"|\([^()]*\b{year}\b[^()]* after this date\)"
                        rf"|\b{year}\b[^()]*\) (is|are) after this date"
                    )
                    assert re.search(later, text), (name, day, f, year, text)


def test_whatsapps_messenger_ruling_is_said_later_in_a_run_set_before_2018() -> None:
    (d,) = _serve("whatsapp", "2016-05-01T12:00:00Z", "wiretap")
    (assumed,) = [n for n in d.notes if "E.D. Cal." in n]
    assert "(2018 is after this date)" in assumed, assumed
    # today, and in a run of 2018, as written
    assert "after this date" not in get_profile("whatsapp").assumptions["wiretap"]
    assert "after this date" not in profile_as_of("whatsapp", date(2018, 1, 1)).assumptions["wiretap"]
    # served on or after 2018-01-01 in a run set before it: as written, the record said to have changed
    later = profile_as_of("whatsapp", date(2017, 12, 1), served=date(2018, 1, 2))
    assert "after this date" not in later.assumptions["wiretap"]


@pytest.mark.parametrize(
    ("name", "day", "field", "key", "said"),
    [
        ("bes", date(2010, 6, 1), "notes", "content", "(August 2010 is after this date)"),
        ("telegram-cloud", date(2024, 8, 1), "notes", "ip_addresses", "(September 2024 is after this date)"),
        # (not iMessage's "capabilities as of November 2020", which the chart's note says with its date: test 31)
    ],
)
def test_a_later_month_a_text_names_in_the_disclosures_own_year_is_said_later(
    name: str, day: date, field: str, key: str, said: str
) -> None:
    """As a source's (test 28): "RIM, August 2010" in a BES disclosure of June 2010 was said as known."""
    text = getattr(profile_as_of(name, day), field)[key]
    assert said in text, text
    month = date(day.year, {"bes": 8, "telegram-cloud": 9}[name], 1)
    assert said not in getattr(profile_as_of(name, month), field)[key]


def test_telegrams_2018_policy_is_said_later_in_a_disclosure_of_2018_before_august() -> None:
    """The source read "2018 to August 2024 only for confirmed terror suspects": on 2018-06-01, in 2018, it said
    nothing, though the policy dates from August 2018."""
    (policy,) = [s for s in sources_on(get_profile("telegram-cloud"), date(2018, 6, 1)) if "§8.3" in s]
    assert "(August 2018, 2024 are after this date)" in policy, policy
    (policy,) = [s for s in sources_on(get_profile("telegram-cloud"), date(2018, 9, 1)) if "§8.3" in s]
    assert "August 2018" in policy and "(2024 is after this date)" in policy, policy


# --- 30. the design's texts: dated as of the run's date -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_before_a_day_a_design_text_cites_it_says_it_is_later_from_the_runs_start(name: str) -> None:
    """Wire's identity_model_source cites its key-verification post, 2017-01-16, and no design change covered it: a
    Wire run set in 2016 cited it as written. A design text says a later day, or a later year it names alone, is
    after the run's date, for the whole run (an order served after it does not change the design)."""
    design = ("identity_model_source", "group_source")
    cited = {date.fromisoformat(m) for f in design for m in _DAY.findall(getattr(get_profile(name), f))}
    # a design change of the profile's own says, in its texts before it, that its day is later in its own words
    # (Signal's groups v2, WhatsApp's multi-device: tested above)
    own = {
        c.effective
        for c in HISTORY.get(name, ())
        for f in design
        if f in c.before and not callable(c.before[f])
    }
    for day in sorted({date(2013, 1, 7), date(2016, 5, 1), date(2020, 6, 1), *cited}):
        if get_profile(name).not_yet(day) is not None:
            continue
        for served in (None, date(2025, 1, 1)):
            profile = profile_as_of(name, day, served=served)
            for f in design:
                text = getattr(profile, f)
                for later in {m for m in _DAY.findall(text) if day < date.fromisoformat(m) not in own}:
                    assert f"{later}, after this date" in text, (name, day, f, text)
                for year in {y for y in _YEAR.findall(_DAY.sub("", text)) if int(y) > day.year}:
                    later = (
                        rf"\b{year}(-\d\d-\d\d)?( \([^()]*\))?,? (is )?after this date|\b{year} \(after this date"
                        rf"|\([^()]*\b{year}\b[^()]* after this date\)"
                        rf"|\b{year}\b[^()]*\) (is|are) after this date"
                    )
                    assert re.search(later, text), (name, day, f, year, text)


def test_a_wire_run_before_its_key_verification_post_says_it_is_later() -> None:
    before = profile_as_of("wire", date(2016, 5, 1), served=date(2018, 1, 1)).identity_model_source
    assert "key-verification-secure-conversations, 2017-01-16, after this date)" in before, before
    assert "after this date" not in profile_as_of("wire", date(2017, 1, 16)).identity_model_source


# --- 31. one thing said later once; an instrument's own name is no citation ------------------------------------


def test_what_a_text_says_is_later_itself_is_not_said_again_at_its_end() -> None:
    """iMessage's note on the chart's pen-register cell says "(dated 2021-01-07, after this date; capabilities as
    of November 2020)", and before November 2020 it ended "(November 2020 is after this date)" besides; Signal's
    design source from groups v2's announcement to the year's end said the paper (CCS 2020) "is after this date",
    and ended "(2020 is after this date)"; a 2009 WhatsApp text naming "a 2010 access demand", the instrument's
    own name, ended "(2010 is after this date)"."""
    imessage = profile_as_of("imessage", date(2020, 6, 1))
    (pen,) = [
        t for t in _texts(imessage.notes) if "capabilities as of November 2020) lists no pen-register" in t
    ]
    assert "dated 2021-01-07, after this date" in pen and "November 2020 is after this date" not in pen, pen
    assert not [t for t in _texts(imessage.notes) if "November 2020 is after this date" in t]
    group = profile_as_of("signal", date(2019, 12, 20)).group_source
    assert "CCS 2020, the conference opening 2020-11-09: the project's citation) is after this date" in group
    assert "(2020 is after this date)" not in group, group
    whatsapp = profile_as_of("whatsapp", date(2009, 6, 1))
    (demand,) = {t for t in _texts(whatsapp.assumptions) if "a 2010 access demand" in t}
    assert "2010 is after this date" not in demand, demand
    assert not any("2010" in c.what for c in HISTORY["whatsapp"]), HISTORY["whatsapp"]


# --- 32. a range of years; a year of the disclosure's own, whose month the record does not give ----------------


def test_a_range_of_years_is_dated_by_its_first_year_and_a_run_inside_it_says_so() -> None:
    """Project Clemenza (2010-2012) and BlackBerry in India (2010-2013) were not dated at all (a hyphenated year was
    skipped): a consumer BBM run of 2009 named Clemenza's years as known, one of 2011 did not say it is inside
    them; BES's source was listed so in 2009."""

    def clemenza(day: date) -> str:
        (text,) = [
            t for t in _texts(profile_as_of("bbm-consumer", day).assumptions) if "Clemenza (2010-2012" in t
        ]
        return text

    assert clemenza(date(2009, 6, 1)).endswith("(2010-2012 is after this date)"), clemenza(date(2009, 6, 1))
    assert clemenza(date(2010, 3, 1)).endswith(
        "(2010-2012: this year is its first, the month not on the record)"
    )
    assert clemenza(date(2011, 6, 1)).endswith("(2010-2012: this date is within it)")
    assert clemenza(date(2012, 3, 1)).endswith(
        "(2010-2012: this year is its last, the month not on the record)"
    )
    assert clemenza(date(2013, 3, 1)).endswith("not the record of who turned it"), clemenza(date(2013, 3, 1))
    (first,) = [c for c in HISTORY["bbm-consumer"] if c.named == "2010-2012"]
    assert first.effective == date(2010, 1, 1) and first.record and "range of years" in first.what
    assert first.when().startswith("in 2010 (the record gives the years 2010-2012, not the day")
    (india,) = [
        s for s in sources_on(get_profile("bes"), date(2009, 6, 1)) if s.startswith("India 2010-2013")
    ]
    assert india.endswith(  # the years inside the range said with it, once
        "(2010-2013 is after this date)"
    ), india
    (india,) = [
        s for s in sources_on(get_profile("bes"), date(2011, 6, 1)) if s.startswith("India 2010-2013")
    ]
    assert india.endswith("(2010-2013: this date is within it) (2012, 2013 are after this date)"), india


def test_a_year_of_the_disclosures_own_whose_month_the_record_does_not_give_is_said_so() -> None:
    """India's acceptance "in 2013" and the Mumbai facility "(2012)" were said as known in a run earlier that year
    (india-2010 is set on 2013-01-07): the record gives no month, so whether they came before it is not known."""
    (india,) = [
        s for s in sources_on(get_profile("bes"), date(2012, 3, 1)) if s.startswith("India 2010-2013")
    ]
    assert "(2010-2013: this date is within it; 2012: this year, the month not on the record)" in india, india
    (india,) = [
        s for s in sources_on(get_profile("bes"), date(2013, 1, 7)) if s.startswith("India 2010-2013")
    ]
    assert india.endswith("2013: this year, the month not on the record)"), india
    notes = profile_as_of("bes", date(2012, 3, 1)).jurisdiction_notes["in"]
    assert notes["ciphertext"].startswith("India's interception facility (Mumbai, 2012)")
    assert notes["ciphertext"].endswith(
        "India accepted in 2013, after this date, that enterprise data comes from the enterprise (2012: this year, "
        "the month not on the record)"
    ), notes
    # said once: a text that says the record gives the year only is not said again; a named month is no year alone
    accepted = profile_as_of("bes", date(2013, 1, 7)).jurisdiction_notes["in"]["ciphertext"]
    # (and, inside 2013, there that whether it came before this date is not known: Change.within)
    assert "(the record gives the year, not the day: whether India's acceptance" in accepted, accepted
    assert "this year" not in accepted, accepted
    rim = profile_as_of("bes", date(2010, 9, 1)).notes["content"]
    assert "RIM, August 2010" in rim and "this year" not in rim and "after this date" not in rim, rim
    # a year passed says nothing
    assert "this year" not in profile_as_of("bes", date(2014, 3, 1)).jurisdiction_notes["in"]["ciphertext"]


# --- 33. a range of years written with an en dash, as the record writes them ------------------------------------


def test_a_range_of_years_written_with_an_en_dash_is_dated_as_one_with_a_hyphen() -> None:
    """Only a hyphenated range ("2010-2012") was dated: the record writes its ranges with an en dash
    ("Project Clemenza (2010\u20132012, reported April 2016)"), whose years were taken as two years named alone, and
    a year ending "April 2016\u20132017" as a month of 2016."""
    from relaysim.relay import profiles

    for dash in ("-", "\u2013"):
        years = f"2010{dash}2012"
        text = (
            f"in Project Clemenza ({years}, reported April 2016; R v. Mirarchi) the RCMP held the global key"
        )
        assert profiles._named_alone(text) == {years, "April 2016", "2016"}, (
            dash,
            profiles._named_alone(text),
        )
        assert profiles._named_first(years) == date(2010, 1, 1)
        assert profiles._named_later(years)(text).endswith(f"({years} is after this date)")
        assert profiles._this_year(text, date(2011, 6, 1)).endswith(f"({years}: this date is within it)")
        assert profiles._this_year(text, date(2012, 3, 1)).endswith(
            f"({years}: this year is its last, the month not on the record)"
        )
        (change,) = [c for c in [profiles._named_dated(years, [text])] if c.named == years]
        assert change.when().startswith(f"in 2010 (the record gives the years {years}, not the day")
        assert profiles._named_alone(f"from April 2016{dash}2017") == {f"2016{dash}2017"}


# --- 34. a change's word that the record gives no day is a field, not text to strip ------------------------------


def test_a_changes_word_that_the_record_gives_no_day_is_its_own_field_said_once() -> None:
    """Change.told took the change's own "(the record gives the year: …)" out of what by a pattern: one worded
    otherwise ("(the record gives the year only)") was said after when, which says it, a second time. The word is
    Change.gives; what never says it, and a change that does, or names a year without it, is refused."""
    from relaysim.relay.profiles import Change

    for name, changes in HISTORY.items():
        for c in changes:
            assert (c.named is None) == (c.gives is None), (name, c)
            assert "the record gives" not in c.what, (name, c.what)
    with pytest.raises(ValueError, match="belongs in gives, not in what"):
        Change(
            date(2021, 1, 1),
            "a record of 2021 (the record gives the year only)",
            "a source, 2021",
            {},
            named="2021",
            gives="the record gives the year: the date is its first day",
        )
    with pytest.raises(ValueError, match="named and gives go together"):
        Change(date(2021, 1, 1), "a record of 2021", "a source, 2021", {}, named="2021")
    (after,) = _serve("bes", "2015-11-20", "subpoena", at="12d", duration="13d")
    (changed,) = [n for n in after.notes if "changed in December 2015" in n]
    assert changed.count("the record gives") == 1 and "(reported December 2015)" in changed, changed


# --- 35. answering from a record of the disclosure's own year, whose month the record does not give ----------------


def test_signal_answering_a_warrant_in_2021_from_its_2021_record_says_that_is_the_projects_assumption() -> (
    None
):
    """Signal on 2021-01-07 (the FBI chart's run) answered a search warrant from its 2021 record, dated 2021-01-01,
    as on record, while its source says the month of 2021 is not on the record: whether that response came before
    the disclosure's day is not known, so answering from it then is the project's assumption, said in the reason."""
    (d,) = _serve("signal", "2021-01-07", "search_warrant")
    (assumed,) = [n for n in d.notes if n.startswith("Assumption:")]
    assert (
        "of 2021 (the record gives the year, not the month: whether it came before this date is not on the record"
        in (assumed)
    ), assumed
    assert assumed.endswith("answering from a record of this year, is the project's assumption."), assumed
    assert "this year, the month not on the record" not in assumed, assumed
    assert d.reasons["device_info"][1].startswith(
        "held by Signal, and not handed over under a search warrant (the project's assumption)"
    ), d.reasons["device_info"]
    # a year later the record is before the disclosure's day: answered as on record, nothing assumed
    (later,) = _serve("signal", "2022-03-01", "search_warrant")
    assert not [n for n in later.notes if n.startswith("Assumption:")], later.notes
    assert "(the project's assumption)" not in later.reasons["device_info"][1]
    # the subpoena is on record before 2021 (2016): nothing of the warrant said
    (subpoena,) = _serve("signal", "2021-01-07", "subpoena")
    assert not [n for n in subpoena.notes if n.startswith("Assumption:")], subpoena.notes
    # a month the record gives is inside only that month
    (clemenza,) = [c for c in HISTORY["bbm-consumer"] if c.named == "April 2016"]
    assert clemenza.inside(date(2016, 4, 30)) and not clemenza.inside(date(2016, 5, 1))
    assert not clemenza.inside(date(2016, 3, 31))


# --- 36. a record dated by its year or month: inside it, the texts resting on it say its day is not known ----------


_WITHIN = [
    # (profile, process, a date inside the named year or month, a date after it, what the texts then say)
    (
        "bes",
        "telegraph_act_5_2",
        "2013-06-01",
        "2014-01-02",
        "(the record gives the year, not the day: whether India's acceptance (the record of BlackBerry in India) "
        "came before this date is not known)",
    ),
    (
        "bes",
        "court_order_2703d",
        "2015-12-10",
        "2016-01-02",
        "(December 2015: this month, the day not on the record: whether John Chen's report (the seed article) came "
        "before this date is not known, and that it was its policy on this date is the project's assumption)",
    ),
    (
        "bbm-consumer",
        "court_order_2703d",
        "2015-12-20",
        "2016-01-02",
        "(December 2015: this month, the day not on the record: whether John Chen's report (the seed article) came "
        "before this date is not known, and that it was its policy on this date is the project's assumption)",
    ),
    (
        "bbm-consumer",
        "ca_part_vi_authorization",
        "2016-04-15",
        "2016-05-02",
        "(April 2016: this month, the day not on the record: whether the reporting on Project Clemenza (R v. "
        "Mirarchi) came before this date is not known)",
    ),
]


@pytest.mark.parametrize(
    ("name", "process", "inside", "after", "said"), _WITHIN, ids=[w[0] + "-" + w[2] for w in _WITHIN]
)
def test_a_record_dated_by_its_year_or_month_says_inside_it_that_its_day_is_not_known(
    name: str, process: str, inside: str, after: str, said: str
) -> None:
    """BES's India record (2013), John Chen's report (December 2015) and Project Clemenza's (April 2016) are dated
    from the first day of the year (month) the record gives: a disclosure inside it, after that day, says the day is
    not on the record, so whether the record came before the disclosure's day is not known (``Change.within``); one
    after it says nothing of the kind."""
    (change,) = [c for c in HISTORY[name] if c.within and c.inside(date.fromisoformat(inside))]
    assert change.policy and not change.inside(date.fromisoformat(after))
    (d,) = _serve(name, inside, process)
    assert said in _said(d), _said(d)
    (later,) = _serve(name, after, process)
    assert "came before this date is not known" not in _said(later), _said(later)
    # the same words in the disclosure as a whole, once per text
    assert all(t.count(said) <= 1 for t in [*d.notes, *(why for _r, why in d.reasons.values())])


@pytest.mark.parametrize(
    "said",
    [
        "the record gives the year only",
        "dated here from its first day",
        "the date is its first day",
        "the first of it is the date here",
        "2021, not the day",
        "the day not on the record",
        "by the year only",
        "The record gives no day",
    ],
)
def test_a_change_naming_its_year_says_no_other_way_in_what_that_the_record_gives_no_day(said: str) -> None:
    """Change refused "the record gives" in ``what`` and let the texts' other ways of saying the same through ("dated
    here from its first day", "not the day", "by the year only"): a disclosure says ``what`` after ``when``, which
    says it already (HISTORY's changes, and the ones dating the texts' years and months, are made on import)."""
    from relaysim.relay.profiles import Change

    with pytest.raises(ValueError, match=r"belongs in gives, not in what"):
        Change(
            date(2021, 1, 1),
            f"a record of 2021 ({said})",
            "a source, 2021",
            {},
            named="2021",
            gives="the record gives the year: the date is its first day",
        )
    # the same words where the change names no year: its day is on the record (or the project's citation), said so
    assert (
        Change(date(2021, 1, 7), f"a record of 2021-01-07 ({said})", "a source, 2021-01-07", {}).named is None
    )


def test_a_changes_gives_says_the_unit_its_named_is() -> None:
    """``gives`` says which the record gives, the year or the month: one saying the year of a month named (or the
    month of a year) claims what ``named`` does not, and is refused."""
    from relaysim.relay.profiles import Change

    with pytest.raises(
        ValueError, match=r"gives says the record gives the year, but named, 'April 2016', is a month"
    ):
        Change(
            date(2016, 4, 1),
            "a report",
            "a source, April 2016",
            {},
            named="April 2016",
            gives="the record gives the year: the date is its first day",
        )
    with pytest.raises(
        ValueError, match=r"gives says the record gives the month, but named, '2013', is a year"
    ):
        Change(
            date(2013, 1, 1),
            "a record",
            "a source, 2013",
            {},
            named="2013",
            gives="the record gives the month",
        )
    for changes in HISTORY.values():  # HISTORY's own say the unit they name
        for c in changes:
            if c.named is not None and c.gives is not None and "the record gives the" in c.gives:
                assert ("month" in c.gives) == bool(re.search(r"[A-Z][a-z]+ \d{4}", c.named)), c


def test_a_range_said_to_be_later_is_said_without_the_years_inside_it() -> None:
    """BES's source "India 2010-2013: … Mumbai (2012) … in 2013 …" in a run of 2009 said "(2010-2013, 2012, 2013 are
    after this date)": the years inside the range were said twice. Each is said once, in every source and every text
    of every profile, on every date."""
    from relaysim.relay.profiles import sources_on

    (india,) = [
        s for s in sources_on(get_profile("bes"), date(2009, 6, 1)) if s.startswith("India 2010-2013")
    ]
    assert india.endswith(
        "not BES; India accepted in 2013 that enterprise data must be obtained from the enterprise "
        "(2010-2013 is after this date)"
    ), india
    group = re.compile(r"\(([^()]*) (?:is|are) after this date\)")
    for name in PROFILES:
        for year in range(2009, 2026):
            on = date(year, 6, 1)
            if PROFILES[name].not_yet(on) is not None:
                continue
            profile = profile_as_of(name, on)
            texts = [
                *sources_on(profile, on),
                *(t for f in _TEXT_FIELDS for t in _texts(getattr(profile, f))),
            ]
            for text in texts:
                for said in group.findall(text):
                    named = [n.strip() for n in said.split(",")]
                    ranges = [
                        tuple(map(int, re.split("[-\u2013]", n)))
                        for n in named
                        if re.fullmatch(r"\d{4}[-\u2013]\d{4}", n)
                    ]
                    inside = [
                        n
                        for n in named
                        if re.fullmatch(r"\d{4}", n) and any(a <= int(n) <= b for a, b in ranges)
                    ]
                    assert not inside, (name, on, text)
