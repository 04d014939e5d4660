"""Legal process as data (relay/legal.py): the tables, and reasons that never contradict the store.

- every reason a disclosure gives is true of the relay's store: *not retained* only where the
  store holds nothing of that category for the order; *cryptographically impossible* only where
  no key the provider holds opens a body; *no capability* only where the relay had no tap;
  *withheld by policy* only where the profile's policy for that instrument does not hand it over;
- the validator, the desk and the CLI read one table (``needs_target``, the jurisdiction);
- a return never states a false zero; Threema's creation time is a date.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaysim.relay.compliance import ComplianceDesk, Disclosure, LegalProcess
from relaysim.relay.custody import route_ad
from relaysim.relay.legal import INSTRUMENTS, JURISDICTIONS, REASONS, resolve_instrument, with_article
from relaysim.relay.metadata import RecordKind
from relaysim.relay.profiles import PROFILES, get_profile
from relaysim.relay.store import Store
from relaysim.sims.scenario import (
    LegalProcessEvent,
    Scenario,
    ScenarioError,
    parse_scenario,
    resolve_scenario,
)
from relaysim.sims.world.simulation import Simulation


def _concerns(r: Any, target: str | None) -> bool:
    return target is None or target in (r.account, r.recipient_account)


def check_against_store(d: Disclosure, desk: ComplianceDesk, store: Store) -> None:
    """Each reason the disclosure gives, held against the store it was read from."""
    p, pr = d.process, desk.profile
    instrument, target = p.instrument, p.target
    lo, hi = p.window()

    def inside(t: float | None) -> bool:
        return t is None or lo <= t <= hi

    meta = [r for r in store.metadata() if _concerns(r, target) and inside(r.time)]
    bodies = [
        e
        for e in [*store.all_envelopes(), *store.archived()]
        if (target is None or target in (e.account, e.source_account)) and inside(e.timestamp / 1000)
    ]
    tapped = list(store.intercepts(p.name))
    for category, (reason, why) in d.reasons.items():
        assert reason in REASONS and why, (category, reason)
        where = f"{pr.name}: {p.process} {category}: {reason} ({why})"
        if reason == "not_retained":
            if instrument.forward:
                assert not tapped, where
            elif category == "message_log":
                assert not [
                    r
                    for r in meta
                    if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
                    and r.account
                    and r.recipient_account
                ], where
            elif category == "message_counts":
                # only every send, kept, is a count (WhatsApp keeps the latest send's time, for "last seen")
                every = (
                    pr.policy.rules.get(RecordKind.SEND) is not None
                    and pr.policy.rules[RecordKind.SEND].keep == "all"
                )
                assert not every or not [
                    r for r in meta if r.kind == RecordKind.SEND and r.account == target
                ], where
            elif category in ("ip_addresses", "location"):
                assert not [r for r in meta if r.host is not None and r.account == target], where
            elif category == "last_seen":
                assert not [r for r in meta if r.kind in pr.last_seen_kinds], where
            elif category == "lookup_log":
                assert not [r for r in meta if r.kind == RecordKind.BUNDLE_FETCH], where
            elif category == "contacts" and target:
                assert not store.contacts_of(target), where
            elif category == "reverse_contacts" and target:
                assert not store.reverse_contacts(target), where
            elif category == "blocked_users" and target:
                assert not store.blocks_of(target) and not store.blockers_of(target), where
            elif category == "group_membership" and target:
                assert not store.groups_of(target), where
                # under encrypted group state, "not retained" only where the relay holds no state at all
                assert not pr.group_state_encrypted or not store.group_states(), where
            elif category in ("ciphertext", "content"):
                assert not bodies, where
            elif category == "subscriber_info":
                assert not pr.subscriber_record, where
        elif reason == "cryptographically_impossible" and category == "group_membership":
            # no member list in the clear: only blobs the clients encrypted, which name no account
            assert pr.group_state_encrypted and store.group_count() == 0, where
            assert store.group_states(), where  # something is held that no key opens
            assert not target or not store.groups_of(target), where
        elif reason == "cryptographically_impossible":
            assert category == "content", where
            assert pr.custody != "provider", where
            for e in bodies:
                assert not any(k.open(e.body, route_ad(e.account)) for k in desk.keys), where
        elif reason == "no_capability":
            assert instrument.forward and not tapped, where
            assert not (pr.wiretap if instrument.copies_bodies else pr.pen_register), where
        elif reason == "withheld_by_policy":
            assert category not in d.provided, where
            answers = bool(pr.discloses.get(instrument.key, frozenset()) & instrument.asks)
            assert (
                category not in pr.discloses.get(instrument.key, frozenset())
                or (instrument.forward and not answers)
                or d.response != "complied"
                or instrument.builds  # a capability notice hands nothing over by itself
            ), where
            if instrument.builds:  # ... and says so only of what the relay can already collect
                assert pr.wiretap if instrument.copies_bodies else pr.pen_register, where
    assert set(d.provided) | set(d.reasons) == instrument.asks
    assert not set(d.provided) & set(d.reasons)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 4))
    people = [f"p{i}" for i in range(n)]
    profile = draw(st.sampled_from(list(PROFILES)))
    lines = ['[scenario]\nname = "random"\nduration = "3h"', f"seed = {draw(st.integers(0, 2**20))}", ""]
    sealed = draw(st.sampled_from(["", "sealed_sender = true\n", "sealed_sender = false\n"]))
    lines += [f'[relay]\nprofile = "{profile}"\n{sealed}']
    for i, p in enumerate(people):
        offline = ""
        if draw(st.booleans()):
            a = draw(st.integers(10, 90))
            offline = f', offline = [["{a}m", "{a + draw(st.integers(10, 60))}m"]]'
        lines.append(f'[[people]]\nname = "{p}"\ndevices = [{{ address = "192.0.2.{i + 10}"{offline} }}]')
    pairs: dict[tuple[str, str], list[str]] = {}
    for k in range(draw(st.integers(1, 6))):
        a, b = draw(st.permutations(people))[:2]
        pairs.setdefault((min(a, b), max(a, b)), []).append(
            f'{{ at = "{draw(st.integers(2, 170))}m", from = "{a}", text = "m{k}" }}'
        )
    for (a, b), msgs in pairs.items():
        lines.append(f'[[conversations]]\nbetween = ["{a}", "{b}"]\nmessages = [{", ".join(msgs)}]')
    if draw(st.booleans()):  # a group chat: its membership is what group_membership asks about
        members = draw(st.permutations(people))[: draw(st.integers(2, n))]
        times = sorted(draw(st.lists(st.integers(5, 170), min_size=1, max_size=3)))
        said = ", ".join(
            f'{{ at = "{at}m", from = "{draw(st.sampled_from(members))}", text = "g{k}" }}'
            for k, at in enumerate(times)
        )
        listed = ", ".join(f'"{m}"' for m in members)
        lines.append(
            f'[[groups]]\nname = "club"\nmembers = [{listed}]\nadmins = ["{members[0]}"]\ntimeline = [{said}]'
        )
    for k in range(draw(st.integers(1, 4))):
        instrument = INSTRUMENTS[draw(st.sampled_from(list(INSTRUMENTS)))]
        at = draw(st.integers(1, 150))
        target = f'target = "{draw(st.sampled_from(people))}"\n' if instrument.needs_target else ""
        to = (  # within the 3 h run; a preservation request covers no period (it freezes what is held)
            f'to = "{at + draw(st.integers(5, min(60, 180 - at)))}m"\n'
            if instrument.looks != "freeze" and draw(st.booleans())
            else ""
        )
        lines.append(
            f'[[events]]\nat = "{at}m"\nkind = "legal_process"\nprocess = "{instrument.key}"\n{target}{to}name = "o{k}"'
        )
    return parse_scenario("\n".join(lines) + "\n", "random.toml")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_no_disclosure_claims_a_reason_the_store_contradicts(scenario: Scenario) -> None:
    sim = Simulation(scenario, db_path=":memory:")
    checked: list[Disclosure] = []
    serve = sim.desk.serve

    def serve_and_check(process: Any) -> Disclosure:
        d = serve(process)
        check_against_store(d, sim.desk, sim.store)
        checked.append(d)
        return d

    sim.desk.serve = serve_and_check  # type: ignore[method-assign]
    result = sim.run()
    # every disclosure the relay's desk made is checked (a backup warrant is served on another party)
    assert len(checked) == len([d for d in result.disclosures if d.served_on is None])
    assert result.disclosures


def test_the_checker_catches_a_false_reason() -> None:
    """The property above can fail: a 'not retained' message log on a relay that keeps one."""
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    sim = Simulation(replace(sc, relay=replace(sc.relay, profile="viber")), db_path=":memory:")
    serve = sim.desk.serve
    caught: list[str] = []

    def serve_and_lie(process: Any) -> Disclosure:
        d = serve(process)
        check_against_store(d, sim.desk, sim.store)  # the truth passes
        if process.process == "court_order_2703d":
            del d.provided["message_log"]
            d.reasons["message_log"] = ("not_retained", "a lie")
            with pytest.raises(AssertionError, match="message_log: not_retained") as exc:
                check_against_store(d, sim.desk, sim.store)
            caught.append(str(exc.value))
        return d

    sim.desk.serve = serve_and_lie  # type: ignore[method-assign]
    sim.run()
    assert caught


# --- one table, read by the validator, the desk and the CLI --------------------------------------


def test_every_instrument_belongs_to_a_known_jurisdiction_and_asks_known_categories() -> None:
    from relaysim.relay.legal import CATEGORIES

    for key, i in INSTRUMENTS.items():
        assert i.key == key and i.jurisdiction in JURISDICTIONS and i.statute
        assert i.asks <= set(CATEGORIES)
        assert (i.looks == "freeze") == (not i.asks)
    for p in PROFILES.values():
        assert set(p.discloses) <= set(INSTRUMENTS), p.name


def test_no_profile_answers_a_process_its_desk_refuses(tmp_path: Path) -> None:
    """bbm-consumer, line-letter-sealing-off and keep-everything (and every profile answering each process it
    defines) listed content under a search warrant on the backup's custodian, which the relay's desk refuses (it is
    served on Apple or Google: relay/backup.py): an answer read by nothing. No profile, as it is today or as of any
    day its record changed, answers a process its own desk refuses; and a profile that does is refused."""
    from datetime import timedelta

    from relaysim.relay.profiles import HISTORY, profile_as_of

    store = Store(tmp_path / "relay.db", durable=False)
    try:
        for name in PROFILES:
            days = sorted(
                {d for c in HISTORY.get(name, ()) for d in (c.effective, c.effective - timedelta(days=1))}
            )
            for profile in (get_profile(name), *(profile_as_of(name, d) for d in days)):
                desk = ComplianceDesk(store, profile)
                for process in profile.discloses:
                    try:
                        desk.serve(LegalProcess(name="o", process=process, target="nobody", served=0.0))
                    except ValueError as e:
                        assert "not on the relay's operator" not in str(e), (name, profile.as_of, process, e)
    finally:
        store.close()
    with pytest.raises(
        ValueError, match="discloses answers backup_warrant, served on the backup's custodian"
    ):
        replace(get_profile("keep-everything"), discloses={"backup_warrant": frozenset({"content"})})


_ORDER = """
[scenario]
name = "x"
duration = "1h"
[[people]]
name = "a"
[[events]]
at = "1m"
kind = "legal_process"
{order}
"""


def test_the_validator_reads_the_table() -> None:
    ok = parse_scenario(_ORDER.format(order='process = "pta_demand"'), "x.toml")
    order = ok.events[0]
    assert isinstance(order, LegalProcessEvent) and order.process == "pta_demand" and order.target is None
    alias = parse_scenario(_ORDER.format(order='process = "blanket_demand"\njurisdiction = "in"'), "x.toml")
    assert isinstance(alias.events[0], LegalProcessEvent) and alias.events[0].process == "india_access_demand"
    with pytest.raises(ScenarioError, match=r"events\[0\]\.target: missing; a Fair Trial Act warrant"):
        parse_scenario(_ORDER.format(order='process = "ifta_warrant"'), "x.toml")
    with pytest.raises(
        ScenarioError, match=r"events\[0\]\.jurisdiction: .*jurisdiction = 'pk' \(pta_demand\)"
    ):
        parse_scenario(_ORDER.format(order='process = "blanket_demand"'), "x.toml")
    with pytest.raises(
        ScenarioError, match=r"events\[0\]\.jurisdiction: 'subpoena' is an instrument of United States"
    ):
        parse_scenario(
            _ORDER.format(order='process = "subpoena"\ntarget = "a"\njurisdiction = "pk"'), "x.toml"
        )
    with pytest.raises(ScenarioError, match=r"events\[0\]\.process: expected one of .*got 'writ'"):
        parse_scenario(_ORDER.format(order='process = "writ"\ntarget = "a"'), "x.toml")
    assert resolve_instrument("blanket_demand", "pk").key == "pta_demand"


# --- item 6: no false zeros; a date is a date ------------------------------------------------------


def test_a_count_under_sealed_sender_is_unknown_not_zero() -> None:
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    sc = replace(sc, relay=replace(sc.relay, profile="keep-everything", sealed_sender=True))
    result = Simulation(sc, db_path=":memory:").run()
    (d,) = [d for d in result.disclosures if d.process.process == "subpoena"]
    (row,) = d.provided["message_counts"]
    assert row["messages_sent"] == "unknown: the relay cannot attribute sealed sends"
    assert row["sealed_sends_in_window"] > 0


def test_threema_creation_time_is_a_date() -> None:
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    result = Simulation(replace(sc, relay=replace(sc.relay, profile="threema")), db_path=":memory:").run()
    (d,) = [d for d in result.disclosures if d.process.process == "subpoena"]
    (created,) = d.provided["account_created"]
    assert created["created"] % 86400 == 0
    assert all(r["registered"] % 86400 == 0 for r in d.provided["device_info"])


def test_ip_addresses_are_not_withheld_in_one_category_and_printed_in_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # iMessage as if its policy withheld the addresses from a 2703(d) order: the look-ups come without them
    imessage = get_profile("imessage")
    discloses = {
        **imessage.discloses,
        "court_order_2703d": imessage.discloses["court_order_2703d"] - {"ip_addresses"},
    }
    monkeypatch.setitem(PROFILES, "imessage", replace(imessage, discloses=discloses))  # type: ignore[index]
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    result = Simulation(replace(sc, relay=replace(sc.relay, profile="imessage")), db_path=":memory:").run()
    (d,) = [d for d in result.disclosures if d.process.process == "court_order_2703d"]
    assert "ip_addresses" in d.withheld and d.provided["lookup_log"]
    assert not any("host" in r for rows in d.provided.values() for r in rows)


def _imessage_chart() -> dict[str, Disclosure]:
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    result = Simulation(replace(sc, relay=replace(sc.relay, profile="imessage")), db_path=":memory:").run()
    return {d.process.process: d for d in result.disclosures}


def test_an_imessage_subpoena_gets_the_addresses_basic_subscriber_information_names() -> None:
    """The FBI chart's iMessage subpoena cell is "basic subscriber info", which 18 U.S.C. 2703(c)(2)(E)
    defines to include "any temporarily assigned network address": the addresses are handed over, and
    so to the orders above a subpoena."""
    by = _imessage_chart()
    for process in ("subpoena", "court_order_2703d", "search_warrant"):
        assert by[process].provided["ip_addresses"], process
    assert any("2703(c)(2)(E)" in n for n in by["subpoena"].notes)
    assert not any(n.startswith("Assumption: ") for n in by["subpoena"].notes)
    # the note opens with the category's label as written ("IP addresses", not "Ip addresses")
    assert any(n.startswith("IP addresses: the FBI chart's subpoena cell") for n in by["subpoena"].notes)


def test_imessage_look_ups_come_with_their_client_ip_under_a_2703d_order_as_assumed() -> None:
    """The chart names 25 days of look-ups to a 2703(d) order and is silent on their IPs; Apple's FAQ
    shows 'Client IP' in the look-up logs it produces: handed over, and said to be assumed."""
    by = _imessage_chart()
    for process in ("court_order_2703d", "search_warrant"):
        d = by[process]
        assert d.provided["lookup_log"] and all("host" in r for r in d.provided["lookup_log"]), process
        (assumed,) = [n for n in d.notes if n.startswith("Assumption: ")]
        assert "Client IP" in assumed and "IP address each came from" in assumed, process


def test_a_response_other_than_complied_is_a_policy_hook() -> None:
    sc = resolve_scenario("pakistan-2015")
    bes = replace(get_profile("bes"), responses={"pta_demand": "refused"})
    sc = replace(sc, relay=replace(sc.relay, profile="bes"), compare_profiles=())
    sim = Simulation(sc, db_path=":memory:")
    sim.desk.profile = bes
    result = sim.run()
    (d,) = [d for d in result.disclosures if d.process.process == "pta_demand"]
    assert d.response == "withdrawn" and not d.provided and d.to_json()["response"] == "withdrawn"
    assert [r for r, _t in d.history] == ["refused", "withdrawn"]
    # refused as a whole: what it holds or could collect is withheld; BES content stays impossible
    assert set(d.withheld) == INSTRUMENTS["pta_demand"].asks - {"content"}
    assert d.reasons["content"][0] == "cryptographically_impossible"


def test_a_new_instrument_is_one_row_uk_targeted_interception(monkeypatch: pytest.MonkeyPatch) -> None:
    """Added as one row of relay.legal.INSTRUMENTS: the validator, the desk and the headers read it.
    (Under a consumer BBM whose policy hands the words over to it: the record says nothing of BlackBerry
    under UK law, and the real profile withholds them, as its reported policy does.)"""
    bbm = get_profile("bbm-consumer")
    handing = {**bbm.discloses, "ipa_targeted_interception": INSTRUMENTS["ipa_targeted_interception"].asks}
    monkeypatch.setitem(PROFILES, "bbm-consumer", replace(bbm, discloses=handing))
    sc = parse_scenario(
        _ORDER.format(order='process = "ipa_targeted_interception"\ntarget = "a"')
        + '[[people]]\nname = "b"\n[[conversations]]\nbetween = ["a", "b"]\n'
        + 'messages = [{ at = "10m", from = "a", text = "hello" }]\n[relay]\nprofile = "bbm-consumer"\n',
        "uk.toml",
    )
    (d,) = Simulation(sc, db_path=":memory:").run().disclosures
    assert d.to_json()["jurisdiction"] == "uk" and "Investigatory Powers Act 2016" in d.to_json()["statute"]
    # the message, and b's delivery receipt for it (opened too: the provider holds the key)
    rows = [(r["from"], r["to"], r["kind"], r.get("text")) for r in d.provided["content"]]
    assert rows == [("a", "b", "message", "hello"), ("b", "a", "delivery receipt", None)]  # relay.content
    assert "United Kingdom" in d.to_markdown()


# The record: WhatsApp's pen register, "near real time (15-minute batches) — source, destination,
# timestamps, routing data, for up to 60 days, on a certification of relevance" (In re WhatsApp pen
# register orders, E.D. Cal. 2022); 18 U.S.C. 3123(c)(1): "a period not to exceed sixty days".
_DAYS = 86400.0


def test_a_wiretap_order_asks_for_what_passes_not_for_the_look_up_log() -> None:
    """The record ties look-up logs to a 2703(d) order (the FBI chart: iMessage's "25 days of
    look-ups") and to pen register / trap-and-trace orders (Apple's iMessage FAQ for law enforcement,
    The Intercept, 2016-09-28), and says nothing of them under a wiretap order. The project's reading
    (relay/legal.py, beside the row): Title III authorizes intercepting the contents of communications
    in transmission (18 U.S.C. 2518), and a look-up log is a record the provider keeps; an agency wanting
    both serves both. So no interception order asks for the look-up log, and a wiretap disclosure neither
    provides it nor gives a reason for not providing it, even from a relay that logs every look-up."""
    assert "lookup_log" in INSTRUMENTS["pen_register"].asks
    assert "lookup_log" in INSTRUMENTS["court_order_2703d"].asks
    for instrument in INSTRUMENTS.values():
        if instrument.copies_bodies:
            assert "lookup_log" not in instrument.asks, instrument.key
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    result = Simulation(
        replace(sc, relay=replace(sc.relay, profile="keep-everything")), db_path=":memory:"
    ).run()
    by = {d.process.process: d for d in result.disclosures}
    assert by["pen_register"].provided["lookup_log"] or by["court_order_2703d"].provided["lookup_log"]
    wiretap = by["wiretap"]
    assert wiretap.provided["ciphertext"]  # it collected what passed
    assert "lookup_log" not in wiretap.provided and "lookup_log" not in wiretap.reasons


def test_a_pen_register_collects_for_at_most_60_days_from_service() -> None:
    order = LegalProcess("pr", "pen_register", "a", served=10 * _DAYS)
    assert order.window() == (10 * _DAYS, 70 * _DAYS)
    assert LegalProcess("pr", "pen_register", "a", served=0.0, end=5 * _DAYS).window() == (0.0, 5 * _DAYS)
    text = """
[scenario]
name = "x"
duration = "80d"

[[people]]
name = "a"

[[events]]
at = "1d"
kind = "legal_process"
process = "pen_register"
target = "a"
to = "{to}"
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text.format(to="61d1s"), "x.toml")
    assert str(info.value).startswith(
        "x.toml: events[0].to: a pen register runs at most 60 days from service"
    )
    parse_scenario(text.format(to="61d"), "x.toml")


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        (INSTRUMENTS["telegraph_act_5_2"].name, "an interception order under s.5(2)"),
        (INSTRUMENTS["it_act_69"].name, "an s.69 interception direction"),  # "ess"
        (INSTRUMENTS["pta_demand"].name, "a PTA demand"),  # "pee"
        (INSTRUMENTS["court_order_2703d"].name, "a 2703(d) court order"),
        (INSTRUMENTS["wiretap"].name, "a wiretap order"),
        (get_profile("imessage").title, "an Apple iMessage"),
        (get_profile("line").title, "a LINE (Letter Sealing on)"),  # said as a word
        ("IT Act direction", "an IT Act direction"),
        ("18 U.S.C. order", "an 18 U.S.C. order"),
        ("8-day order", "an 8-day order"),
        ("2010 access demand", "a 2010 access demand"),
    ],
)
def test_a_name_in_prose_gets_the_article_it_is_said_with(phrase: str, expected: str) -> None:
    """Prose built as "a {name}" read "a interception order" and "A Apple iMessage relay"."""
    assert with_article(phrase) == expected
    assert with_article(phrase, capital=True) == expected[0].upper() + expected[1:]


def test_a_relay_that_cannot_tap_says_so_with_the_right_article() -> None:
    sc = replace(resolve_scenario("fbi-chart"), matrix=False)
    result = Simulation(replace(sc, relay=replace(sc.relay, profile="imessage")), db_path=":memory:").run()
    (d,) = [d for d in result.disclosures if d.process.process == "wiretap"]
    assert "An Apple iMessage relay cannot collect under a wiretap order: nothing was tapped." in d.notes
    reasons = [text for _reason, text in d.reasons.values()]
    assert any(text.startswith("an Apple iMessage relay has no way to collect") for text in reasons), reasons


def test_a_later_answer_dates_a_refusal_and_never_a_compliance() -> None:
    """``answered``: when a provider that did not comply gave its response (BlackBerry's refusal of the
    PTA's demand, 2015-11-30); a provider that complies answers at service, and collects from then on."""

    demand = LegalProcess("d", "pta_demand", None, served=10.0, withdrawn=100.0, answered=50.0)
    with pytest.raises(ValueError, match=r"answered \(5\) must be at or after service"):
        LegalProcess("d", "pta_demand", None, served=10.0, answered=5.0)
    with pytest.raises(ValueError, match="not after the withdrawal"):
        LegalProcess("d", "pta_demand", None, served=10.0, withdrawn=20.0, answered=30.0)
    sc = resolve_scenario("pakistan-2015")
    sc = replace(sc, relay=replace(sc.relay, profile="bes"), compare_profiles=())
    result = Simulation(sc, db_path=":memory:").run()
    (d,) = [d for d in result.disclosures if d.process.process == "pta_demand"]
    assert d.process.answered is not None and d.process.served < d.process.answered < d.process.withdrawn
    assert d.history == [("refused", d.process.answered), ("withdrawn", d.process.withdrawn)]
    complying = replace(get_profile("bes"), responses={})
    sim = Simulation(sc, db_path=":memory:")
    sim.desk.profile = complying
    (c,) = [d for d in sim.run().disclosures if d.process.process == "pta_demand"]
    assert c.history[0] == ("complied", c.process.served)
    assert demand.answered == 50.0


# --- each instrument's name, statute and standard, as the record (docs/record.md) has them -----------------------

# The record's table of US process (docs/record.md, from the reference's "Kinds of legal process"): per instrument,
# its statute and the standard an order under it must meet.
_US_RECORD = {
    "subpoena": ("18 U.S.C. 2703(c)(2)", "no standard beyond relevance"),
    "court_order_2703d": ("18 U.S.C. 2703(d)", "specific and articulable facts"),
    "search_warrant": ("18 U.S.C. 2703(a)/(b)", "probable cause"),
    "pen_register": ("18 U.S.C. 3121-3127", "certification of relevance"),
    "wiretap": ("Title III, 18 U.S.C. 2518", "probable cause and necessity"),
    "preservation": ("18 U.S.C. 2703(f)", "no standard"),
}


@pytest.mark.parametrize("key", sorted(_US_RECORD))
def test_each_us_instrument_names_its_statute_and_its_standard(key: str) -> None:
    """The subpoena's title named no standard (the record: none beyond relevance), nor the preservation request's
    (none); the others named theirs."""
    statute, standard = _US_RECORD[key]
    i = INSTRUMENTS[key]
    assert i.jurisdiction == "us" and i.statute == statute
    assert standard in i.title and standard in i.description, i.title


def test_an_instrument_the_record_does_not_name_in_full_says_what_is_the_projects_citation() -> None:
    """The record names no Canadian instrument, the Investigatory Powers Act 2016 and its technical capability
    notices without sections (nor its interception warrants), the TOLA Act 2018's requests and notices without
    sections: Part VI s.186, s.15(2), s.253, s.317G... were given as the record's."""
    cited = {k for k, i in INSTRUMENTS.items() if i.citation}
    assert cited == {
        "ca_part_vi_authorization",
        "ipa_targeted_interception",
        "ipa_tcn",
        "tola_tar",
        "tola_tan",
        "tola_tcn",
        "ifta_warrant",
    }
    for key in cited - {"ifta_warrant"}:  # (the Fair Trial Act's: test_the_fair_trial_act_warrant_...)
        i = INSTRUMENTS[key]
        assert "the project's citation" in i.citation, key
        # every section the instrument names, in its statute, note or its jurisdiction's limit, is in the citation
        said = " ".join([i.statute, i.note, JURISDICTIONS[i.jurisdiction].protection_limit])
        for section in {
            m.split(".", 1)[1].split("(")[0] for m in re.findall(r"\bs\.\d+[A-Z]*(?:\(\d+\))?", said)
        }:
            assert section in i.citation, (key, section)


@pytest.mark.parametrize("process", ["ca_part_vi_authorization", "ipa_targeted_interception", "tola_tan"])
def test_a_disclosure_under_an_instrument_beyond_the_record_says_so(process: str) -> None:
    sc = parse_scenario(
        _ORDER.format(order=f'process = "{process}"\ntarget = "a"') + '[relay]\nprofile = "bbm-consumer"\n',
        "x.toml",
    )
    (d,) = Simulation(sc, db_path=":memory:").run().disclosures
    (note,) = [n for n in d.notes if n.startswith("Citation: ")]
    assert (
        note == f"Citation: {INSTRUMENTS[process].citation}." and "the project's citation" in d.to_markdown()
    )


def test_the_day_of_a_law_the_record_names_without_one_is_said_as_the_projects_citation() -> None:
    """The IPA's Royal Assent said so; the TOLA Act's (legislation.gov.au), the Fair Trial Act's (Gazette of Pakistan)
    and s.69's commencement (The Hindu) were given as the record's, though the record dates none of them."""
    for key, i in INSTRUMENTS.items():
        if i.since is None or i.demand:  # the two demands are dated by the record itself
            continue
        assert "the project's citation" in i.since_record, (key, i.since_record)
        for _until, caveat in i.caveats:
            if re.search(r"\d{4}-\d{2}-\d{2}", caveat):
                assert "the project's citation" in caveat, (key, caveat)


def test_the_fair_trial_act_warrant_is_titled_in_the_records_words() -> None:
    """The record: "the Investigation for Fair Trial Act 2013 (warrants for surveillance)". The title said "surveillance
    or interception", as the record's; what the warrant reaches (a named person's communications, intercepted) is
    the project's reading, said in every disclosure under it."""
    i = INSTRUMENTS["ifta_warrant"]
    assert i.title.startswith("warrant for surveillance ") and "interception" not in i.title, i.title
    assert "warrants for surveillance" in i.citation and "the project's reading" in i.citation, i.citation
    sc = parse_scenario(
        _ORDER.format(order='process = "ifta_warrant"\ntarget = "a"') + '[relay]\nprofile = "bes"\n',
        "x.toml",
    )
    (d,) = Simulation(sc, db_path=":memory:").run().disclosures
    assert f"Citation: {i.citation}." in d.notes, d.notes


def test_the_desk_refuses_every_process_served_on_another_custodian(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ComplianceDesk.serve refused the string "backup_warrant", not the processes of NOT_ON_THE_RELAY: a process
    added to the set was answered by the relay's desk all the same."""
    from relaysim.relay import compliance

    monkeypatch.setattr(compliance, "NOT_ON_THE_RELAY", frozenset({"backup_warrant", "subpoena"}))
    store = Store(tmp_path / "relay.db", durable=False)
    try:
        desk = ComplianceDesk(store, get_profile("signal"))
        for process in ("subpoena", "backup_warrant"):
            with pytest.raises(
                ValueError, match=rf"\({process}\) is served on .*not on the relay's operator"
            ):
                desk.serve(LegalProcess(name="o", process=process, target="nobody", served=0.0))
        desk.serve(LegalProcess(name="o", process="search_warrant", target="nobody", served=0.0))
    finally:
        store.close()


def test_the_backup_warrant_has_one_name_and_every_reference_to_it_is_a_process_the_desk_knows() -> None:
    """ "backup_warrant" was spelled out in Profile.__post_init__, WIRE's assumptions, the desk, the timeline and the
    CLI, beside NOT_ON_THE_RELAY: a misspelling in one of them would have let a profile, the desk or the timeline
    treat the warrant on the backup's custodian as an order on the relay without any error. It has one name,
    relay.legal.BACKUP_WARRANT: the name is an instrument's key, the processes served elsewhere are instruments, and
    no module spells the name (or a near miss of it) out but its definition."""
    import ast
    import difflib

    from relaysim.relay.legal import BACKUP_WARRANT
    from relaysim.relay.profiles import NOT_ON_THE_RELAY

    assert BACKUP_WARRANT in INSTRUMENTS and INSTRUMENTS[BACKUP_WARRANT].looks == "back"
    assert BACKUP_WARRANT in NOT_ON_THE_RELAY and set(INSTRUMENTS) >= NOT_ON_THE_RELAY
    root = Path(__file__).parents[2]
    spelled = []
    for package in ("relay", "sims", "clients"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(n.body[0].value)
                for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and n.body
                and isinstance(n.body[0], ast.Expr)
                and isinstance(n.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    not isinstance(node, ast.Constant)
                    or not isinstance(node.value, str)
                    or id(node) in docstrings
                ):
                    continue
                for word in re.findall(r"[a-z_]*back[a-z_]*", node.value):
                    # every word like the name (a misspelling, "backup_warant", "back_up_warrant") is the name
                    if difflib.SequenceMatcher(None, word, BACKUP_WARRANT).ratio() >= 0.8:
                        spelled.append(f"{path.relative_to(root)}:{node.lineno}: {word}")
    assert spelled == [
        f"relay/legal.py:{_line_of('relay/legal.py', 'BACKUP_WARRANT: Final')}: {BACKUP_WARRANT}"
    ], spelled


def _line_of(path: str, start: str) -> int:
    lines = (Path(__file__).parents[2] / path).read_text(encoding="utf-8").splitlines()
    (line,) = [n for n, text in enumerate(lines, 1) if text.startswith(start)]
    return line
