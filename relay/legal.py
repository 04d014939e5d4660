"""Legal process as data: one table of instruments, one of disclosure categories, one of reasons.

Everything about legal process that the profiles, the compliance desk, the scenario validator,
the CLI and the reports need is a row here, read by all of them; nothing is decided twice.

- :data:`JURISDICTIONS`: whose law an order is made under, and which instrument of that law (if
  any) can compel a provider to *build* a capability it lacks.
- :data:`INSTRUMENTS`: each kind of legal process, in its own law — its name, jurisdiction, the
  statute that grants it, whether it looks back at what is held, forward from service, or
  freezes what is held; whether it must name a target account; and which categories it asks for.
- :data:`CATEGORIES`: the vocabulary of what an order asks for and a disclosure contains.
- :data:`REASONS`: why a category asked for was not handed over — four reasons that differ in
  kind, not one "impossible" for all of them.
- :data:`RESPONSES`: what a provider did with a demand as a whole.

Adding a process is a row in :data:`INSTRUMENTS` (and its tests); a provider's policy for it is
an entry in that profile's ``discloses`` (and, if it did not comply, ``responses``).

Sources, as named per row: 18 U.S.C. 2703, 2518, 3121-3127; 47 U.S.C. 1002 (CALEA); the
Pakistan Telecommunication (Re-organization) Act 1996 and the PTA's statement of 2015-12-31; the
Investigation for Fair Trial Act 2013 (Pakistan); BlackBerry's lawful-access policy as reported in
December 2015 (John Chen) for Pakistani court orders; Canada's Criminal Code Part VI; the Indian Telegraph Act 1885 s.5(2) and
Rule 419A of the Indian Telegraph Rules; the Information Technology Act 2000 s.69 (as substituted by
the Information Technology (Amendment) Act 2008, in force 2009-10-27) and the Information Technology
(Procedure and Safeguards for Interception, Monitoring and Decryption of Information) Rules 2009; the UK Investigatory Powers Act 2016 (s.15 warrants, s.253 technical
capability notices); Australia's Telecommunications and Other Legislation Amendment (Assistance and
Access) Act 2018 (TOLA), which inserted Part 15 into the Telecommunications Act 1997 (s.317G
technical assistance requests, s.317L technical assistance notices, s.317T technical capability
notices, s.317ZG: no notice may require a systemic weakness, s.317B: what "systemic" means).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

__all__ = [
    "BACKUP_WARRANT",
    "CATEGORIES",
    "INSTRUMENTS",
    "JURISDICTIONS",
    "REASONS",
    "RESPONSES",
    "Category",
    "Instrument",
    "Jurisdiction",
    "Looks",
    "Reason",
    "Response",
    "get_instrument",
    "in_order",
    "resolve_instrument",
    "with_article",
]

Looks = Literal["back", "forward", "freeze"]
# The key of the search warrant served on the custodian of the target's device backups, not on the relay's operator
# (its row is in INSTRUMENTS; relay/backup.py answers it, the relay's desk refuses it: relay.profiles.NOT_ON_THE_RELAY).
# The one name every module refers to it by.
BACKUP_WARRANT: Final = "backup_warrant"
Reason = Literal["withheld_by_policy", "not_retained", "no_capability", "cryptographically_impossible"]
Response = Literal["complied", "refused", "challenged", "withdrawn"]


# --- categories ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    name: str
    label: str  # in prose: "IP addresses"
    short: str  # in a table cell: "IPs"
    description: str


CATEGORIES: Final[Mapping[str, Category]] = {
    c.name: c
    for c in (
        Category(
            "subscriber_info",
            "subscriber info",
            "subscriber",
            "who holds the account: its identifier (here, the phone number) and what was given at sign-up",
        ),
        Category("account_created", "account created", "created", "when the account was registered"),
        Category("last_seen", "last seen", "last seen", "when the account last connected"),
        Category("ip_addresses", "IP addresses", "IPs", "network addresses the account connected from"),
        Category(
            "device_info", "device info", "devices", "the account's devices: how many, when each registered"
        ),
        Category("contacts", "contacts", "contacts", "the account's uploaded address book"),
        Category(
            "reverse_contacts",
            "reverse contacts",
            "reverse contacts",
            "accounts whose uploaded address books contain this account",
        ),
        # Both ways: WhatsApp's 2703(d) return "may include numbers blocking or blocked by the user"
        # (faq.whatsapp.com, 'Information for law enforcement authorities').
        Category(
            "blocked_users",
            "blocked users",
            "blocked users",
            "accounts this account blocked, and accounts that blocked it",
        ),
        Category(
            "group_membership",
            "groups",  # (short: a chip of it fits a phone's table, tests/sims/test_html_report.py)
            "groups",
            "the groups the account is in: each group's members and admins, and who added the account when",
        ),
        Category("message_log", "message log", "message log", "who messaged whom and when (no content)"),
        Category("message_counts", "message counts", "message counts", "how many messages the account sent"),
        Category(
            "lookup_log", "lookup log", "look-up log", "who looked up whose keys in the directory, and when"
        ),
        Category(
            "realtime_routing",
            "realtime routing",
            "real-time routing",
            "source, destination and time of each message, collected as it happens",
        ),
        Category(
            "location",
            "location",
            "location",
            "where the account's devices were, as far as their network addresses tell",
        ),
        Category(
            "ciphertext",
            "ciphertext",
            "ciphertext",
            "the encrypted message bodies the relay holds or intercepts",
        ),
        Category("content", "content", "CONTENT", "what the messages said"),
    )
}


def in_order(categories: object) -> list[str]:
    """Categories in the vocabulary's order (who, when, where, with whom, what)."""
    order = list(CATEGORIES)
    return sorted(categories, key=order.index)  # type: ignore[call-overload]


def with_article(phrase: str, *, capital: bool = False) -> str:
    """``phrase`` after "a" or "an", by the sound it begins with when said (prose built from names
    as "a {name}" read "a interception order"): "an interception order", "an Apple iMessage
    relay"; letters said by name ("ess", "pee"): "an s.69 interception direction", "a PTA demand"
    (a word in capitals of four letters or more is said as a word: "a LINE relay"); numbers:
    "a 2703(d) court order", "an 18 U.S.C. order". ``capital``: "A"/"An", to begin a sentence.
    A word said with a vowel written otherwise ("hour") or the reverse ("user") is not told
    apart: no name here is one."""
    word = phrase.split(" ", 1)[0]
    digits = word[: len(word) - len(word.lstrip("0123456789"))]
    if digits:  # "eight", "eleven", "eighteen", "eighty", "eleven thousand"…
        vowel = digits[0] == "8" or (len(digits) % 3 == 2 and digits[:2] in ("11", "18"))
    elif len(word) == 1 or (len(word) <= 3 and word.isupper()) or word[1:2] == ".":  # letter by letter
        vowel = word[0].upper() in "AEFHILMNORSX"
    else:
        vowel = word[:1].lower() in ("a", "e", "i", "o", "u")
    article = "an" if vowel else "a"
    return f"{article.capitalize() if capital else article} {phrase}"


# --- reasons and responses ------------------------------------------------------------------------

REASONS: Final[Mapping[Reason, str]] = {
    "withheld_by_policy": "held (or could be collected), and the provider's policy does not hand it over",
    "not_retained": "could have been kept and was not: nothing exists for the past",
    "no_capability": "never built; where a law can compel building it, the reason names that instrument",
    "cryptographically_impossible": "no key the provider holds opens it; only a change to the clients "
    "(escrow, a ghost participant, client-side scanning, a malicious update) would get past it",
}
REASON_LABELS: Final[Mapping[Reason, str]] = {
    "withheld_by_policy": "withheld by policy",
    "not_retained": "not retained",
    "no_capability": "no capability",
    "cryptographically_impossible": "cryptographically impossible",
}
RESPONSES: Final[Mapping[Response, str]] = {
    "complied": "the provider answered the demand with what its policy hands over",
    "refused": "the provider refused the demand as a whole",
    "challenged": "the provider challenged the demand in court",
    "withdrawn": "the authority withdrew the demand",
}


# --- jurisdictions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jurisdiction:
    code: str
    name: str
    compels_capability: str  # which instrument (if any) can make a provider build what it lacks
    # What its law says about compelling a provider past encryption it cannot open (said beside
    # "cryptographically impossible" under its instruments); "" where the record names nothing.
    protection_limit: str = ""
    # Where ``protection_limit`` cites events: per event, earliest first, its day (the first of the month
    # the record names) and what is said instead in a disclosure dated before it, which cites it (and any
    # later one) as after its date, or leaves out a law not yet in force.
    protection_limit_before: tuple[tuple[date, str], ...] = ()
    # The same for ``compels_capability``.
    compels_capability_before: tuple[tuple[date, str], ...] = ()

    def compels_capability_on(self, day: date | None) -> str:
        """``compels_capability`` as a disclosure served on ``day`` says it (None: an undated run, today)."""
        return _as_of(self.compels_capability, self.compels_capability_before, day)

    def protection_limit_on(self, day: date | None) -> str:
        """``protection_limit`` as a disclosure served on ``day`` says it (None: an undated run, today)."""
        return _as_of(self.protection_limit, self.protection_limit_before, day)


def _as_of(text: str, before: tuple[tuple[date, str], ...], day: date | None) -> str:
    """``text``, or what ``before`` says instead on a ``day`` before an event it cites: the text for the
    earliest event after ``day``."""
    if day is not None:
        for since, earlier in sorted(before):
            if day < since:
                return earlier
    return text


_UK_LIMIT = (
    "a UK technical capability notice may oblige an operator to remove electronic protection applied by or on "
    "behalf of that operator (Investigatory Powers Act 2016 s.253(5)(c)); whether that reaches encryption the "
    "users' own devices apply is contested ({adp}), and no notice gives the provider a key it does not hold"
)

# Canada's: the record of Project Clemenza came out in April 2016 (R v. Mirarchi); a disclosure dated before
# then (the rcmp-clemenza built-in is set in 2011) says the report is later than it.
_CA_COMPELS = (
    "none named in the record; in Project Clemenza (2010-2012, {reported}; R v. Mirarchi) the RCMP held the "
    "consumer BlackBerry global key itself"
)

# s.69 as the s.69 interception direction is modelled (a direction authorised by the Union or a State Home
# Secretary, under the 2009 Interception Rules) is the section the Information Technology (Amendment) Act 2008
# substituted; the Act (assent 2009-02-05) came into force by notification, with the Rules, on 2009-10-27.
# (The IT Act 2000's own s.69 let the Controller of Certifying Authorities direct an interception: another
# instrument, not modelled.)
_IT_ACT_69_2009 = date(2009, 10, 27)
_IT_ACT_69_2009_RECORD = (
    "s.69 of the Information Technology Act 2000 as substituted by the Information Technology (Amendment) Act "
    "2008 (Act 10 of 2009, assent 2009-02-05) came into force, with the Information Technology (Procedure and "
    "Safeguards for Interception, Monitoring and Decryption of Information) Rules 2009 (G.S.R. 780(E)), on "
    "2009-10-27 (The Hindu, 'Amended IT Act to prevent cyber crime comes into effect'; notified with effect from "
    "27/10/2009; the notification's gazette number is not in the record, nor here: the project's citation, the record "
    "names s.69 and the Rules without a date)"
)

# India's power to compel before s.69 (as substituted) was in force: an order under s.5(2) of the Telegraph Act
# 1885, carried out by the service provider under Rule 419A (the record: "Indian Telegraph Act s.5(2) with
# Rule 419A", undated). The Rule as modelled is its text as in force from the Indian Telegraph (Amendment)
# Rules 2007, G.S.R. 193(E): the project's citation, not the record's, which dates neither that text nor the
# Rule's earlier one; a dated run's disclosure under s.5(2) served before 2008 says so (_RULE_419A_CAVEAT).
_IN_COMPELS_BEFORE_2009 = (
    "an order under s.5(2) of the Indian Telegraph Act 1885, with Rule 419A of the Indian Telegraph Rules 1951, "
    "binds the service provider to assist, per order (s.69 of the Information Technology Act 2000 as "
    "substituted in 2008, and the 2009 Interception Rules, came into force on 2009-10-27, after this date)"
)

_RULE_419A_2007 = date(2008, 1, 1)  # the year after the amendment's (its day is not kept here)
# Said on every day of a dated run: the record names the Rule and dates neither it nor the text modelled.
_RULE_419A_CITED = (
    "Rule 419A is modelled as amended by the Indian Telegraph (Amendment) Rules 2007 (G.S.R. 193(E)): the project's "
    "citation, not the record's, which names the Rule (with s.5(2)) and dates neither it nor that amendment"
)
# Said besides before 2008: the amendment's day in 2007 is not kept, so the day may precede it.
_RULE_419A_CAVEAT = (
    "the amendment's day in 2007 is not kept here: the Rule's text before it, which may have applied on this day, is "
    "not modelled"
)

JURISDICTIONS: Final[Mapping[str, Jurisdiction]] = {
    j.code: j
    for j in (
        Jurisdiction(
            "us",
            "United States",
            "CALEA binds carriers but exempts information services (47 U.S.C. 1002(b)(2)(A)); a court has "
            "compelled technical assistance beside a pen/trap order (Lavabit, 2013; 4th Cir. 2014)",
            "CALEA binds carriers, not information services (47 U.S.C. 1002(b)(2)(A)), and even a carrier is not "
            "responsible for decrypting a communication its subscriber encrypted unless the carrier provided the "
            "encryption and holds what is needed to decrypt it (47 U.S.C. 1002(b)(3))",
        ),
        Jurisdiction(
            "pk",
            "Pakistan",
            "the PTA's licensing powers under the Pakistan Telecommunication (Re-organization) Act 1996 "
            "(its 2015 demand to monitor BES was withdrawn on 2015-12-31)",
            compels_capability_before=(
                # the record gives the month of the PTA's notice, not the day: its first
                (
                    date(2015, 7, 1),
                    "the PTA's licensing powers under the Pakistan Telecommunication (Re-organization) Act "
                    "1996 (its demand to monitor BES was made in July 2015 and withdrawn on 2015-12-31, both "
                    "after this date)",
                ),
                (
                    date(2015, 12, 31),
                    "the PTA's licensing powers under the Pakistan Telecommunication (Re-organization) Act "
                    "1996 (its demand of July 2015 to monitor BES was withdrawn on 2015-12-31, after this date)",
                ),
            ),
        ),
        Jurisdiction(
            "in",
            "India",
            "a direction under s.69 of the Information Technology Act 2000 and the 2009 Interception Rules "
            "binds an intermediary to assist, per order",
            compels_capability_before=((_IT_ACT_69_2009, _IN_COMPELS_BEFORE_2009),),
        ),
        Jurisdiction(
            "ca",
            "Canada",
            _CA_COMPELS.format(reported="reported in April 2016"),
            compels_capability_before=(
                (date(2016, 4, 1), _CA_COMPELS.format(reported="reported in April 2016, after this date")),
            ),
        ),
        Jurisdiction(
            "uk",
            "United Kingdom",
            "a technical capability notice under the Investigatory Powers Act 2016 (s.253)",
            _UK_LIMIT.format(
                adp="after such a notice Apple withdrew Advanced Data Protection for new UK users, February 2025"
            ),
            (
                (
                    date(2025, 2, 1),
                    _UK_LIMIT.format(
                        adp="in February 2025, after this date, Apple withdrew Advanced Data Protection for new "
                        "UK users after such a notice"
                    ),
                ),
            ),
        ),
        Jurisdiction(
            "au",
            "Australia",
            "a technical capability notice under Part 15 of the Telecommunications Act 1997, inserted by the "
            "TOLA Act 2018 (s.317T)",
            "and no Australian notice can require a way in: a technical assistance or capability notice "
            "must not require a provider to build a systemic weakness or vulnerability into a form of "
            "electronic protection, "
            "including a new decryption capability (Telecommunications Act 1997 s.317ZG); a weakness "
            "selectively introduced to target technologies connected with a particular person is not "
            "'systemic' (s.317B)",
        ),
    )
}


# --- instruments ----------------------------------------------------------------------------------

# The days the laws that make the UK's, Australia's and Pakistan's instruments were made (India's s.69
# direction: _IT_ACT_69_2009, above), and the days the two demands modelled were made (below): an order under
# one in a run set earlier is refused (Instrument.not_yet). Where the record leaves the day open (a demand it
# dates by its year or month; an Act dated by its Royal Assent, not by the commencement of the sections that
# make the instrument), a dated run's disclosure says so (Instrument.caveats).
_IPA_2016 = date(2016, 11, 29)
_IPA_2016_RECORD = (
    "the Investigatory Powers Act 2016 received Royal Assent on 2016-11-29 (legislation.gov.uk/ukpga/2016/25, the "
    "project's citation: the record names the Act without a date); it gives no day on which the sections that make this instrument came into force, which Royal Assent "
    "does not settle, so the date is the Royal Assent's: the earliest they can have been"
)
# Said in a dated run's disclosure under an IPA instrument: the day is Royal Assent's, not the commencement's, and
# the project's citation (the record names the Act without a date: docs/record.md).
_IPA_2016_CAVEAT = (
    "the Investigatory Powers Act 2016 is dated here by its Royal Assent (2016-11-29, legislation.gov.uk/ukpga/2016/25: "
    "the project's citation; the record names the Act, not the day), not by the day {sections} came into force: "
    "that it was in force on this day is the project's assumption"
)
_TOLA_2018 = date(2018, 12, 8)
_TOLA_2018_RECORD = (
    "the TOLA Act 2018 (Telecommunications and Other Legislation Amendment (Assistance and Access) Act 2018, "
    "No. 148 of 2018), which inserted Part 15 into the Telecommunications Act 1997, received Royal Assent on "
    "2018-12-08 (legislation.gov.au, the project's citation: the record names the Act without a date); the day Part 15 came into force is not kept here, which Royal Assent does "
    "not settle, so the date is the Royal Assent's: the earliest it can have been"
)
# Said in a dated run's disclosure under a TOLA instrument, as the IPA's: the day is Royal Assent's.
_TOLA_2018_CAVEAT = (
    "the TOLA Act 2018 is dated here by its Royal Assent (2018-12-08, legislation.gov.au: the project's citation; the "
    "record names the Act, not the day), not by the day Part 15 of "
    "the Telecommunications Act 1997, which it inserted ({section}), came into force: that it was in force on this "
    "day is the project's assumption"
)
_IFTA_2013 = date(2013, 2, 20)
_IFTA_2013_RECORD = (
    "the Investigation for Fair Trial Act 2013 (Act No. I of 2013) received the President's assent on 2013-02-20 "
    "(Gazette of Pakistan, Extraordinary, Part I, 2013-02-22, the project's citation: the record names the Act without "
    "a date); the day it came into force is not kept here, which "
    "assent does not settle, so the date is the assent's: the earliest it can have been"
)
_IFTA_2013_CAVEAT = (
    "the Investigation for Fair Trial Act 2013 is dated here by the President's assent (2013-02-20, Gazette of "
    "Pakistan: the project's citation; the record names the Act, not the day), not by the day it came into force: that it was in force on this day is the project's assumption"
)

# The two demands modelled are acts, each made once, not powers: the PTA's, to monitor BES, and India's, that
# BlackBerry's traffic be open to its agencies. Each is dated, and its own record is the later refusal,
# withdrawal or facility (relay.profiles): a run set before one was made cannot serve it. The record gives
# the month of the PTA's notice and the year of India's demand, not the day: the dates are their first days.
_PTA_DEMAND_2015 = date(2015, 7, 1)
_PTA_DEMAND_2015_RECORD = (
    "the PTA gave notice of this demand, to monitor 'every BES e-mail and BES BBM message' or shut BES down from "
    "1 December, in July 2015 (the record gives the month, not the day: the date is its first)"
)
_INDIA_DEMAND_2010 = date(2010, 1, 1)
_INDIA_DEMAND_2010_RECORD = (
    "the Government of India made this demand of BlackBerry in 2010, with a deadline of 2010-08-31 (the record "
    "gives the year, not the day: the date is its first)"
)
# Said in a dated run's disclosure served before the record's bound: the demand may not yet have been made.
_INDIA_DEMAND_2010_CAVEAT = (
    "the record dates this demand by its year, 2010, and its deadline, 2010-08-31, not by the day it was made: "
    "served before the deadline, it may be earlier than the demand itself (the run dates the demand 2010-01-01, "
    "the year's first day)"
)
_PTA_DEMAND_2015_CAVEAT = (
    "the record dates the PTA's notice by its month, July 2015, not by its day: served in July 2015, this demand "
    "may be earlier than the notice itself (the run dates it 2015-07-01, the month's first day)"
)

# What the record names of the Canadian, British and Australian instruments, and what here is the project's citation.
# (And of Pakistan's Fair Trial Act: the record's words are "warrants for surveillance"; what one reaches, as modelled,
# is the project's reading.)
_IFTA_CITED = (
    "the record names the Investigation for Fair Trial Act 2013 and its warrants for surveillance, no section of the "
    "Act, nor what a warrant reaches: that one names a person and reaches the interception of that person's "
    "communications as they pass (what it asks for here) is the project's reading"
)
_CA_PART_VI_CITED = (
    "the record names no Canadian instrument: Part VI of the Criminal Code, s.186, and a judge's authorization are "
    "the project's citation"
)
_IPA_CITED = (
    "the record names the Investigatory Powers Act 2016 and its technical capability notices, not the Act's "
    "sections nor its interception warrants: {what} are the project's citation (legislation.gov.uk/ukpga/2016/25)"
)
_TOLA_CITED = (
    "the record names the TOLA Act 2018's technical assistance requests and notices and technical capability notices, "
    "not their sections: Part 15 of the Telecommunications Act 1997, ss.317B, 317G, 317L, 317T and 317ZG, and who "
    "gives each, are the project's citation (legislation.gov.au)"
)

_BASIC = frozenset({"subscriber_info", "account_created", "last_seen", "ip_addresses", "device_info"})
_RECORDS = _BASIC | {
    "message_log",
    "message_counts",
    "lookup_log",
    "contacts",
    "reverse_contacts",
    "blocked_users",
    "group_membership",
    "location",
}
_STORED = _RECORDS | {"ciphertext", "content"}
_ROUTING = frozenset({"realtime_routing", "ip_addresses"})
_INTERCEPT = _ROUTING | {"ciphertext", "content"}
_MONITOR_ALL = _INTERCEPT | {"location"}


@dataclass(frozen=True)
class Instrument:
    """One kind of legal process, in its own law."""

    key: str  # what a scenario's ``process`` names
    jurisdiction: str
    name: str  # short, for prose: "2703(d) court order"
    title: str  # what it is, in one line
    statute: str  # the law that grants it
    looks: Looks
    needs_target: bool
    asks: frozenset[str]
    # A capability notice: it compels the provider to build the capability to collect what it asks
    # for, and hands nothing over by itself (relay.compliance says, per category, what would be built).
    builds: bool = False
    note: str = ""  # said in every disclosure under it (what the law lets the provider do with it)
    # What of ``statute``, ``title`` and ``note`` (sections, who issues or approves it, its standard) is the
    # project's citation, not the record's (docs/record.md, "Instruments and their dates"): said in every
    # disclosure under it. "": the record names all of it (the US instruments, India's, Pakistan's).
    citation: str = ""
    # A forward-looking order's longest period from service (seconds); a longer one is a new order (an
    # extension). None: the record names no limit.
    max_period: float | None = None
    # The day the law that makes the instrument was made (or, for a demand that is one act, not a power,
    # the day it was made: the PTA's of July 2015, India's of 2010), and that law or demand with its date
    # and source: an order served before it (in a run set on a date) is refused, naming them (``not_yet``).
    # None: no date kept here (the US and Canadian instruments, India's s.5(2) order under the Telegraph Act
    # 1885; a Pakistani court's order, whose law the record does not name).
    since: date | None = None
    since_record: str = ""
    # A demand that is one act of a government's, not a power to order (pta_demand, india_access_demand):
    # ``not_yet`` says when it was made, not when an order under it can be served.
    demand: bool = False
    # What the record leaves open about the instrument on a run's date (a demand dated by its year or month; an
    # Act dated by its Royal Assent): per caveat, the day before which it is said (None: on every day) and what
    # is said, in a dated run's disclosure (``caveats_on``). An undated run is today: none is said.
    caveats: tuple[tuple[date | None, str], ...] = ()

    def caveats_on(self, day: date | None) -> list[str]:
        """The caveats said in a disclosure under this instrument served on ``day`` (None: an undated run)."""
        if day is None:
            return []
        return [text for until, text in self.caveats if until is None or day < until]

    def not_yet(self, day: date) -> str | None:
        """Why no order under this instrument can be served on ``day`` (the law that makes it came
        later, or the demand was made later), or None if it can."""
        if self.since is None or day >= self.since:
            return None
        later = (
            f"the demand was made on {self.since} and can be served from then on"
            if self.demand
            else f"an order under it can be served from {self.since} on"
        )
        return f"{self.a_name} ({self.key!r}) did not exist on {day}: {self.since_record}; {later}"

    @property
    def forward(self) -> bool:
        return self.looks == "forward"

    @property
    def copies_bodies(self) -> bool:
        """A forward-looking order that collects message bodies, not only their routing."""
        return self.forward and "ciphertext" in self.asks

    @property
    def description(self) -> str:
        return f"{self.title} ({self.statute})"

    @property
    def a_name(self) -> str:
        """The name after its article, for prose: "an interception order under s.5(2)"."""
        return with_article(self.name)


INSTRUMENTS: Final[Mapping[str, Instrument]] = {
    i.key: i
    for i in (
        # United States. A subpoena reaches "name; address; local and long distance telephone connection
        # records, or records of session times and durations; length of service (including start date) ...;
        # telephone or instrument number or other subscriber number or identity, including any temporarily
        # assigned network address" (18 U.S.C. 2703(c)(2)(A)-(E)): so a log of who messaged whom, where one
        # exists, is asked for too (the FBI chart's Viber row: "message history: time, date, source,
        # destination", under a subpoena).
        Instrument(
            "subpoena",
            "us",
            "subpoena",
            "grand-jury or administrative subpoena, on no standard beyond relevance: basic subscriber information",
            "18 U.S.C. 2703(c)(2)",
            "back",
            True,
            _BASIC | {"message_counts", "message_log"},
        ),
        Instrument(
            "court_order_2703d",
            "us",
            "2703(d) court order",
            "court order on specific and articulable facts: non-content records",
            "18 U.S.C. 2703(d)",
            "back",
            True,
            _RECORDS,
        ),
        Instrument(
            "search_warrant",
            "us",
            "search warrant",
            "search warrant on probable cause: stored content and records",
            "18 U.S.C. 2703(a)/(b)",
            "back",
            True,
            _STORED,
        ),
        Instrument(
            "pen_register",
            "us",
            "pen register",
            "pen register / trap-and-trace order on a certification of relevance: routing information from "
            "service on",
            "18 U.S.C. 3121-3127",
            "forward",
            True,
            # Routing in real time, and the provider's own log of directory look-ups made from service
            # on: Apple's iMessage FAQ for law enforcement (published by The Intercept, 2016-09-28) shows
            # look-up logs produced to pen register / trap-and-trace orders.
            _ROUTING | {"lookup_log"},
            # "for up to 60 days, on a certification of relevance" (In re WhatsApp pen register orders,
            # E.D. Cal. 2022); 18 U.S.C. 3123(c)(1): "a period not to exceed sixty days"
            max_period=60 * 86400.0,
        ),
        # A wiretap order asks for what passes through the relay (each message's routing and body), not
        # for the provider's log of directory look-ups. The record is silent on look-ups under Title III;
        # the project's reading: Title III authorizes intercepting the contents of communications in
        # transmission (18 U.S.C. 2510(4), 2518(4)), while a look-up log is a record the provider keeps,
        # reached looking back by a 2703(d) order (the FBI chart: iMessage's "25 days of look-ups") and
        # from service on by a pen register / trap-and-trace order (Apple's iMessage FAQ for law
        # enforcement, The Intercept, 2016-09-28). An agency that wants the look-ups too serves one of
        # those beside the wiretap, as a scenario can.
        Instrument(
            "wiretap",
            "us",
            "wiretap order",
            "wiretap order on probable cause and necessity: content in real time from service on",
            "Title III, 18 U.S.C. 2518",
            "forward",
            True,
            _INTERCEPT,
        ),
        Instrument(
            "preservation",
            "us",
            "preservation request",
            "preservation request, on no standard: freeze what is held at service, for 90 days (renewable); "
            "discloses nothing by itself",
            "18 U.S.C. 2703(f)",
            "freeze",
            True,
            frozenset(),
        ),
        # The same warrant served not on the relay's operator but on the custodian of the target's
        # device backups (Apple for iCloud Backup, Google for Google Drive): relay/backup.py.
        Instrument(
            BACKUP_WARRANT,
            "us",
            "search warrant on the backup custodian",
            "search warrant on probable cause, served on the custodian of the target's device backups (Apple "
            "for iCloud Backup, Google for Google Drive): the message history the phone backed up",
            "18 U.S.C. 2703(a)/(b)",
            "back",
            True,
            frozenset({"content"}),
        ),
        # Pakistan.
        Instrument(
            "pta_demand",
            "pk",
            "PTA demand",
            # (what came of it, the refusal and the withdrawal, is the response's record: relay.profiles)
            "the Pakistan Telecommunication Authority's demand to monitor all traffic (BES, July 2015)",
            "licensing powers under the Pakistan Telecommunication (Re-organization) Act 1996",
            "forward",
            False,
            _MONITOR_ALL,
            since=_PTA_DEMAND_2015,
            since_record=_PTA_DEMAND_2015_RECORD,
            demand=True,
            caveats=((date(2015, 8, 1), _PTA_DEMAND_2015_CAVEAT),),
        ),
        # BlackBerry's policy as reported in December 2015 (John Chen, BlackBerry; the seed article):
        # "under a court order" it may give a phone's location, which users contacted each other, and
        # certain metadata, never the correspondence. The record names no statute for these orders, so
        # this row is a Pakistani court's order for records, looking back, as the record has it.
        Instrument(
            "pk_court_order",
            "pk",
            "Pakistani court order",
            "a Pakistani court's order for a named user's records and what the provider holds for them",
            "a court order, as BlackBerry's policy was reported (John Chen, BlackBerry, December 2015); the "
            "record names no statute (for forward-looking surveillance see the Investigation for Fair Trial "
            "Act 2013)",
            "back",
            True,
            _STORED,
        ),
        Instrument(
            "ifta_warrant",
            "pk",
            "Fair Trial Act warrant",
            # the record's words: "the Investigation for Fair Trial Act 2013 (warrants for surveillance)"
            "warrant for surveillance of a named person's communications",
            "Investigation for Fair Trial Act 2013",
            "forward",
            True,
            _INTERCEPT,
            citation=_IFTA_CITED,
            since=_IFTA_2013,
            since_record=_IFTA_2013_RECORD,
            caveats=((None, _IFTA_2013_CAVEAT),),
        ),
        # India: interception is per order, authorised by the Union or a State Home Secretary.
        Instrument(
            "telegraph_act_5_2",
            "in",
            "interception order under s.5(2)",
            "order to intercept a named person's messages, authorised by the Union or a State Home Secretary",
            "Indian Telegraph Act 1885 s.5(2) with Rule 419A of the Indian Telegraph Rules",
            "forward",
            True,
            _INTERCEPT,
            caveats=((None, _RULE_419A_CITED), (_RULE_419A_2007, _RULE_419A_CAVEAT)),
        ),
        Instrument(
            "it_act_69",
            "in",
            "s.69 interception direction",
            "direction to intercept, monitor or decrypt a named person's information, authorised by the Union "
            "or a State Home Secretary",
            "Information Technology Act 2000 s.69 with the Information Technology (Procedure and Safeguards "
            "for Interception, Monitoring and Decryption of Information) Rules 2009",
            "forward",
            True,
            _INTERCEPT,
            since=_IT_ACT_69_2009,
            since_record=_IT_ACT_69_2009_RECORD,
        ),
        Instrument(
            "india_access_demand",
            "in",
            "2010 access demand",
            "the Government of India's 2010 demand that BlackBerry's traffic be open to its security agencies "
            "(deadline 2010-08-31), met from 2012 by an interception facility in Mumbai",
            "no instrument of its own: each interception through the facility rests on an order under the "
            "Indian Telegraph Act 1885 s.5(2) or the Information Technology Act 2000 s.69",
            "forward",
            False,
            _MONITOR_ALL,
            since=_INDIA_DEMAND_2010,
            since_record=_INDIA_DEMAND_2010_RECORD,
            demand=True,
            caveats=((date(2010, 8, 31), _INDIA_DEMAND_2010_CAVEAT),),
        ),
        # Canada: interception of private communications on a judge's authorization.
        Instrument(
            "ca_part_vi_authorization",
            "ca",
            "Part VI authorization",
            "a judge's authorization to intercept a named person's private communications from issue on",
            "Criminal Code (R.S.C. 1985, c. C-46), Part VI, s.186",
            "forward",
            True,
            _INTERCEPT,
            citation=_CA_PART_VI_CITED,
        ),
        # United Kingdom.
        Instrument(
            "ipa_targeted_interception",
            "uk",
            "targeted interception warrant",
            "warrant to intercept a named person's communications in the course of transmission, issued by "
            "the Secretary of State and approved by a Judicial Commissioner",
            "Investigatory Powers Act 2016 s.15(2)",
            "forward",
            True,
            _INTERCEPT,
            citation=_IPA_CITED.format(
                what="a targeted interception warrant under s.15(2), who issues and approves one, and s.253(5)(c)"
            ),
            since=_IPA_2016,
            since_record=_IPA_2016_RECORD,
            caveats=((None, _IPA_2016_CAVEAT.format(sections="Part 2 (s.15)")),),
        ),
        Instrument(
            "ipa_tcn",
            "uk",
            "technical capability notice",
            "notice obliging an operator to build and maintain the capability to give effect to warrants, "
            "given by the Secretary of State and approved by a Judicial Commissioner (s.254)",
            "Investigatory Powers Act 2016 s.253",
            "forward",
            False,
            _INTERCEPT,
            builds=True,
            citation=_IPA_CITED.format(what="s.253, s.253(5)(c) and the approval under s.254"),
            note="A technical capability notice obliges the operator to build a capability, here to "
            "intercept and hand over; it hands nothing over by itself (what the capability collects is "
            "then reached by an interception warrant). Among its obligations: removing electronic "
            "protection applied by or on behalf of the operator (Investigatory Powers Act 2016 s.253(5)(c))",
            since=_IPA_2016,
            since_record=_IPA_2016_RECORD,
            # the record shows a UK technical capability notice in effect by February 2025 (Apple withdrew
            # Advanced Data Protection for new UK users after one)
            caveats=((date(2025, 2, 1), _IPA_2016_CAVEAT.format(sections="s.253")),),
        ),
        # Australia: Part 15 of the Telecommunications Act 1997, inserted by the Telecommunications and
        # Other Legislation Amendment (Assistance and Access) Act 2018 (TOLA). A notice gives no power to
        # intercept by itself: the interception rests on a warrant under the Telecommunications
        # (Interception and Access) Act 1979, and the request or notice is for the provider's help with it.
        Instrument(
            "tola_tar",
            "au",
            "technical assistance request",
            "request that the provider help, voluntarily, with intercepting a named person's communications "
            "under an interception warrant",
            "Telecommunications Act 1997 s.317G (Part 15, inserted by the TOLA Act 2018)",
            "forward",
            True,
            _INTERCEPT,
            citation=_TOLA_CITED,
            note="A technical assistance request asks for help the provider may decline to give "
            "(Telecommunications Act 1997 s.317G); no penalty attaches to declining",
            since=_TOLA_2018,
            since_record=_TOLA_2018_RECORD,
            caveats=((None, _TOLA_2018_CAVEAT.format(section="s.317G")),),
        ),
        Instrument(
            "tola_tan",
            "au",
            "technical assistance notice",
            "notice requiring the provider to give help it is already capable of giving with intercepting a "
            "named person's communications under an interception warrant, given by the Director-General of "
            "Security or the chief officer of an interception agency",
            "Telecommunications Act 1997 s.317L (Part 15, inserted by the TOLA Act 2018)",
            "forward",
            True,
            _INTERCEPT,
            citation=_TOLA_CITED,
            note="A technical assistance notice requires only help the provider is already capable of giving "
            "(Telecommunications Act 1997 s.317L); it cannot require a systemic weakness (s.317ZG)",
            since=_TOLA_2018,
            since_record=_TOLA_2018_RECORD,
            caveats=((None, _TOLA_2018_CAVEAT.format(section="s.317L")),),
        ),
        Instrument(
            "tola_tcn",
            "au",
            "technical capability notice",
            "notice requiring the provider to build a capability to help agencies, here to intercept and "
            "hand over, given by the Attorney-General",
            "Telecommunications Act 1997 s.317T (Part 15, inserted by the TOLA Act 2018)",
            "forward",
            False,
            _INTERCEPT,
            builds=True,
            citation=_TOLA_CITED,
            note="A technical capability notice requires the provider to build a capability "
            "(Telecommunications Act 1997 s.317T); it hands nothing over by itself (what the capability "
            "collects is then reached under an interception warrant). It must not require a systemic "
            "weakness or vulnerability, or a new decryption capability (s.317ZG)",
            since=_TOLA_2018,
            since_record=_TOLA_2018_RECORD,
            caveats=((None, _TOLA_2018_CAVEAT.format(section="s.317T")),),
        ),
    )
}

# The words older scenario files used for a demand on everyone, resolved by jurisdiction.
_BLANKET_ALIAS = "blanket_demand"


def get_instrument(key: str) -> Instrument:
    try:
        return INSTRUMENTS[key]
    except KeyError:
        raise ValueError(f"unknown legal process {key!r}; known: {', '.join(INSTRUMENTS)}") from None


def resolve_instrument(process: str, jurisdiction: str | None = None) -> Instrument:
    """The instrument a scenario's ``process`` (and optional ``jurisdiction``) names.

    ``blanket_demand``, the word older scenario files used, names the jurisdiction's demand on
    everyone (``pta_demand`` in ``pk``, ``india_access_demand`` in ``in``). ValueError says what
    was expected."""
    if jurisdiction is not None and jurisdiction not in JURISDICTIONS:
        raise ValueError(
            f"expected a jurisdiction, one of {', '.join(map(repr, JURISDICTIONS))}; got {jurisdiction!r}"
        )
    if process == _BLANKET_ALIAS:
        blanket = {
            i.jurisdiction: i
            for i in INSTRUMENTS.values()
            if i.forward and not i.needs_target and not i.builds
        }
        if jurisdiction not in blanket:
            known = ", ".join(f"jurisdiction = {j!r} ({i.key})" for j, i in blanket.items())
            raise ValueError(
                f"a blanket demand is made under some country's law; give one of: {known}, "
                "or name the instrument itself"
            )
        return blanket[jurisdiction]
    if process not in INSTRUMENTS:
        raise ValueError(f"expected one of {', '.join(map(repr, INSTRUMENTS))}, got {process!r}")
    instrument = INSTRUMENTS[process]
    if jurisdiction is not None and instrument.jurisdiction != jurisdiction:
        raise ValueError(
            f"{process!r} is an instrument of {JURISDICTIONS[instrument.jurisdiction].name} "
            f"({instrument.jurisdiction!r}), not of {jurisdiction!r}"
        )
    return instrument
