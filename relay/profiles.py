"""Relay profiles: how real providers' relays behave, as data that drives the relay core itself.

A profile decides what the relay *records* (a ``RetentionPolicy``: which observations, which
fields, at what granularity, for how long), what survives delivery (message bodies deleted on
acknowledgement, or kept server-side), whether address books and block lists are kept, what it
can collect only once an order is served (a pen register, a wiretap), who holds the keys to
message content, and what the provider's published policy hands over under each kind of legal
process. A run under ``signal`` never writes a who-messaged-whom row: the policy drops those
observations before the store sees them; nothing is hidden at disclosure time.

Every profile cites its sources: the FBI "Lawful Access" chart of 2021-01-07 (FOIA release
2021-11-19; justsecurity.org/79549), providers' published law
enforcement guidelines, Signal's published subpoena responses, court records, reporting on
BlackBerry). docs/record.md says what the public record holds of each provider, and which of the sources
cited here it does not hold (Apple's Legal Process Guidelines, Threema's transparency report, Wickr's privacy
policy, LINE's guidelines): what rests on one of those alone is said as the project's reading or assumption,
never as "its published policy" (``Profile.policy_record``). Where a source says nothing, the profile says what we assumed (``Profile.assumptions``):
every disclosure under that instrument carries it as an "Assumption", and the FBI chart's matrix
lists it apart. Among the chart's rows: WhatsApp's wiretap order returns the ciphertext its relay
routes: no source shows WhatsApp returning ciphertext to a wiretap order; the one reported fight over an
end-to-end wiretap ended, in 2018, with a federal court in E.D. Cal. refusing DOJ's motion to hold Facebook in
contempt for not wiretapping Messenger voice calls (the case's name, In re Facebook Messenger, is the project's
citation: the record gives the court, the year and the facts). And a search warrant on WhatsApp
or iMessage gets what their 2703(d) orders get (blocked users; 25 days of look-ups) as well as what the
chart's warrant cell names: a warrant may compel every record a 2703(d) order may (18 U.S.C.
2703(c)(1)(A)), but the chart is silent. iMessage's look-ups come with the IP address each was made from
to a 2703(d) order (and a warrant), for the same 25 days: the chart names the look-ups, not their IPs. Where
the chart's 2703(d) or search-warrant cell is "—" (it states nothing there: Signal's 2703(d) order, whose
warrant is on Signal's own record from 2021; Threema's, Wickr's, Viber's, LINE's and WeChat's both), the order gets
what the chart's subpoena cell names, which it may compel too (18 U.S.C. 2703(c)(2)): assumed, and so is what it
does not get (``Profile.assumed_answers``). Where the chart's pen-register cell is "—" (Signal's, Threema's,
Wickr's, Viber's, LINE's), that the relay has no way to collect in real time is assumed too: the chart says "no
capability" of iMessage alone, and has no wiretap column. Telegram's subpoena getting nothing is the project's
reading of its §8.3 ("a valid order from the relevant judicial authorities"). WeChat's and
Viber's only record is the chart's row: no policy of theirs for law enforcement is on record
(``published_policy`` False), and what they hold and do not hand over is said as that row's word
(``policy_record``), never as "its published policy". Beyond the chart: Wire, whose guide for law enforcement, if it
publishes one, was not found: what it keeps is its privacy whitepaper's, which instrument gets what is
assumed, under every one; BlackBerry where the record is silent (either under a US subpoena, which is
not a court order; consumer BBM under the PTA's demand, BES under India's orders, either under a Canadian Part VI authorization, either under any
British or Australian instrument); and a Pakistani court's order to Signal, Threema, Wickr, Viber, LINE and
WeChat, whose records are of US process: each hands one what it hands a US search warrant; to WhatsApp and
iMessage, whose records are of US process too: each hands one nothing. And WhatsApp, Telegram's cloud chats
and WeChat under a forward-looking order of another country's law (Pakistan's, India's, Canada's, the UK's,
Australia's): their relays could collect, and each hands one nothing (their records are of US process, or, for
Telegram, of what it hands a court's order looking back).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

from relaysim.relay.legal import BACKUP_WARRANT, INSTRUMENTS, JURISDICTIONS, Instrument, Response
from relaysim.relay.legal import CATEGORIES as LEGAL_CATEGORIES
from relaysim.relay.metadata import DEVICE_FACTS, KEEP_EVERYTHING, KindRule, RecordKind, RetentionPolicy

__all__ = [
    "CATEGORIES",
    "HISTORY",
    "NOT_ON_THE_RELAY",
    "POLICY_FIELDS",
    "PROCESSES",
    "PROFILES",
    "REAL_PROFILES",
    "Change",
    "Profile",
    "changes_in_effect",
    "dated_sources",
    "get_profile",
    "policy_changes",
    "profile_as_of",
    "sources_on",
]

# The vocabulary and the instruments are rows in relay.legal; these are views of them.
CATEGORIES: Final[Mapping[str, str]] = {c.name: c.description for c in LEGAL_CATEGORIES.values()}
PROCESSES: Final[Mapping[str, str]] = {i.key: i.description for i in INSTRUMENTS.values()}
# What each process may compel (asks for), by law.
ASKS: Final[Mapping[str, frozenset[str]]] = {i.key: i.asks for i in INSTRUMENTS.values()}
# The processes served not on the relay's operator but on another custodian (a search warrant on the backup's
# custodian, Apple or Google: relay/backup.py): the relay's desk refuses them (ComplianceDesk.serve), so no profile
# answers them (Profile.discloses), and the rest, the relay's, are what a profile may answer.
NOT_ON_THE_RELAY: Final[frozenset[str]] = frozenset({BACKUP_WARRANT})
_RELAY_ASKS: Final[Mapping[str, frozenset[str]]] = {
    p: a for p, a in ASKS.items() if p not in NOT_ON_THE_RELAY
}
Custody = Literal["devices", "provider", "enterprise"]
# How a contact's phone decides which devices (and keys) belong to an account: see Profile.identity_model.
IdentityModel = Literal["account", "signed-devices", "per-device"]
IDENTITY_MODELS: Final[tuple[str, ...]] = ("account", "signed-devices", "per-device")
# Who fans a group message out, and so whether the relay holds the group's members: see Profile.group_fanout.
GroupFanout = Literal["client", "server"]

_DAY = 86400.0


def _policy(name: str, rules: Mapping[RecordKind, KindRule]) -> RetentionPolicy:
    return RetentionPolicy(name, dict(rules))


def _first(fields: set[str], **kw: object) -> KindRule:
    return KindRule(frozenset(fields | {"account"}), keep="first", key=("account",), **kw)  # type: ignore[arg-type]


def _latest(fields: set[str], **kw: object) -> KindRule:
    return KindRule(frozenset(fields | {"account"}), keep="latest", key=("account",), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    policy: RetentionPolicy
    custody: Custody  # who holds the keys to message content
    sources: tuple[str, ...]
    # Per instrument (and so per jurisdiction: every instrument belongs to one), what the provider's
    # policy hands over when held; an instrument not named here gets nothing.
    discloses: Mapping[str, frozenset[str]]
    sealed_sender: bool = False
    # Its clients pad plaintexts before encryption as Signal's do (libsignal-service's
    # PushTransportDetails: 0x80, then zeros, to a multiple of 160 bytes), so envelope sizes show
    # only a length class. On by default; False for a provider whose clients send lengths as they are.
    padding: bool = True
    keep_delivered: bool = False  # message bodies survive delivery (server-side storage)
    keep_contacts: bool = False
    keep_blocks: bool = False
    pen_register: bool = False  # can collect routing information in real time once ordered
    pen_register_batch: float | None = None  # delivered in batches of this many seconds
    wiretap: bool = True  # can copy envelopes in real time once ordered (ciphertext, for E2E)
    subscriber_hashed: bool = False  # keeps only a hash of the phone number / e-mail
    subscriber_record: bool = True  # keeps anything about the subscriber beyond the account id itself
    created_granularity: float | None = None  # the account's creation time is kept only to this step
    # What the provider means by "last seen": the latest record of these kinds naming the account
    # (the last login, by default; WhatsApp's is the last activity).
    last_seen_kinds: tuple[RecordKind, ...] = (RecordKind.AUTHENTICATION, RecordKind.CONNECTION)
    backup: str = "none"  # where its users' phones back up their history by default (relay/backup.py)
    public_keys: bool = False  # device info includes each device's public identity key (Threema)
    # Which of a registration's facts about the device the relay keeps and device info hands over
    # (relay.metadata.DEVICE_FACTS): Threema's push token; Wickr's device type and app version.
    device_facts: frozenset[str] = frozenset()
    external_id_count: bool = False  # message counts come with the number of external ids (Wickr)
    # Device info shows each device's class (mobile or desktop), read off the type its app registered
    # (the relay keeps the type for it): Wire's "Class: Mobile, Tablet or Desktop".
    device_class: bool = False
    # Device info shows where each device registered from: the location (here the region) of the
    # network address it registered from (Wire's "Location: the geographic coordinates of the IP address
    # used to register"), read off its first authentication, kept per device with its host. A device
    # that registers itself (each Wire client does) authenticates from there right after; in this
    # simulator a linked device's registration travels over its primary's connection (as Signal's
    # primary provisions a new device), so its registration record has the primary's address.
    registration_location: bool = False
    # How its clients tie devices to an account, and so whether a device the provider adds on its
    # own (a "ghost", sims/access/ghost.py) is seen by the account's contacts:
    # - "account": linked devices share the account's identity key, transferred from the primary at
    #   linking; contacts pin one key per account, so a device with another key is "safety number
    #   changed" at every contact (Signal);
    # - "signed-devices": each companion device has its own identity key, signed by the primary;
    #   contacts refuse a device without that signature, so a ghost needs a client change (WhatsApp
    #   multi-device, 2021);
    # - "per-device": per-device keys from the provider's directory, taken as served: a new device
    #   is silent unless the user turned on Contact Key Verification (iMessage, IDS).
    # Profiles without a source for it keep "per-device", the simulator's behaviour before.
    identity_model: IdentityModel = "per-device"
    identity_model_source: str = ""
    # Groups (relay/core.py, "groups"): "server", the relay holds each group's membership list and
    # fans a group message out to every member device from it (WhatsApp); "client", the sender's
    # phone sends a copy to each member itself, and the relay keeps no list (Signal; the default
    # where no source says otherwise). ``group_state_encrypted``: the clients keep the group's state
    # (its members) at the relay as a blob encrypted under a key only members hold (Signal's groups v2).
    group_fanout: GroupFanout = "client"
    group_state_encrypted: bool = False
    # Group membership names who created each group and when (Wire keeps a conversation's creator and
    # creation time); only with the member list at the relay (group_fanout "server").
    group_creator: bool = False
    group_source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)  # per category, why it is as it is
    # Per category, what is said of how long the relay keeps it, where no record says so (the project's
    # assumption): said beside the category only where an order looking back hands it over, never as a reason
    # it is not (``notes`` are said as both).
    retention_notes: Mapping[str, str] = field(default_factory=dict)
    # Per jurisdiction (relay.legal.JURISDICTIONS), per category, the note said instead of ``notes``
    # in a disclosure under that country's instruments: a record of one country's dealings (India's
    # interception facility, the PTA's demand) belongs in that country's disclosures only.
    jurisdiction_notes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Per instrument, what the profile assumes where no source says what the provider returns
    # (each disclosure under that instrument says so).
    assumptions: Mapping[str, str] = field(default_factory=dict)
    # Per instrument, what of the answer the profile gives under it is the project's reading of its record's words,
    # not their letter (BlackBerry's "certain metadata": which records the reported policy hands a court order): each
    # disclosure under that instrument says so in a "Reading" note. Unlike ``assumptions``, the answer is still the
    # record's: a category kept back is kept back by the record's policy, not by an assumption.
    readings: Mapping[str, str] = field(default_factory=dict)
    # The US instruments (of ``assumptions``) under which what the provider hands over is, as a whole, the
    # profile's assumption though it has a published policy on record: no record of the provider's speaks of
    # that instrument (the FBI chart's "—" cells; Signal's 2703(d) order, and its search warrant before the
    # warrant on its record, of 2021). What is withheld under one is said as assumed, never as "its
    # published policy". (Under another country's instrument, or where ``published_policy`` is False, every
    # instrument of ``assumptions`` is so.)
    assumed_answers: frozenset[str] = frozenset()
    # False where no published policy of the provider's for law enforcement was found (Wire), or none is on
    # the record (docs/record.md: WeChat's, Viber's, LINE's): what every instrument gets is then the profile's
    # assumption (``assumptions``) or its record's word (``policy_record``), and the desk never says a
    # category is withheld under "its published policy".
    published_policy: bool = True
    # Where no published policy on record says what the provider keeps back, but a record says what it hands
    # over (WeChat, Viber and LINE: the FBI chart's row, their only record; iMessage, Threema and Wickr, whose
    # own documents cited here are not on the record: docs/record.md), that record, said where a category it
    # holds is not handed over, in place of "its published policy" (that it is withheld is the project's
    # reading of that record).
    policy_record: str = ""
    # Where a relay that could collect in real time collects nothing under a US order and no published
    # policy of the provider's says so, what its record shows instead (WeChat: the FBI chart alone, whose
    # returns are all logs of stored data; Telegram: the chart, and §8.3, of records it holds), said in place
    # of "its published policy hands nothing over".
    realtime_record: str = ""
    # Where the profile gives the relay a way to collect in real time (``pen_register``, ``wiretap``) on the
    # project's inference, not the record's word (WeChat: that its servers hold the keys), that inference: said
    # wherever the desk says the relay could collect and collects nothing.
    realtime_inferred: str = ""
    # How the record names the provider's policy for law enforcement where it is on the record but not as one the
    # provider published (BlackBerry's: "as reported", John Chen, December 2015): said where the policy keeps back
    # what the provider holds, in place of "its published policy".
    policy_name: str = "its published policy"
    # Where the record reports that policy only after the run's date (HISTORY: BlackBerry's, before December
    # 2015), what is said of it beside "only its policy keeps them back" (of words the provider's own key opens).
    policy_later: str = ""
    # Per instrument, how the provider answered the demand as a whole, where it did not comply, and
    # (``response_record``) what the record says of that answer, said beside it in the disclosure.
    responses: Mapping[str, Response] = field(default_factory=dict)
    response_record: Mapping[str, str] = field(default_factory=dict)
    # Per category, how far back (seconds before service) the provider's policy reaches when it
    # hands that category over, where it reaches less far than it keeps.
    lookback: Mapping[str, float] = field(default_factory=dict)
    # The instruments under which the look-up log is handed over with each query's client IP address,
    # as the provider keeps it, though IP addresses are not otherwise handed over under them (Apple's
    # iMessage FAQ for law enforcement shows "Client IP" in the look-up logs produced to pen register /
    # trap-and-trace orders). Elsewhere a row never shows an address its category's policy withholds.
    lookup_log_hosts: frozenset[str] = frozenset()
    # Per [defences] switch (sims.scenario.DefenceSpec) that models a feature of this provider's own apps,
    # the day the feature began (the first of the month the record names; where the record dates only its
    # announcement, the announcement's, and the record says so) and the record: a run under
    # this profile set earlier ([scenario] start) cannot have it (as relay.backup.Backup.since).
    defences_since: Mapping[str, tuple[date, str]] = field(default_factory=dict)
    # The provider's first day (the first of the month, or of the year, its source names) and that source: a run
    # set earlier is refused (``not_yet``, ``profile_as_of``), naming both. The record (docs/record.md) dates no
    # provider's beginning: each is the project's citation. None: no first day is kept (BlackBerry's consumer PIN
    # and BBM, BES; keep-everything, not a real provider).
    since: tuple[date, str] | None = None
    # The date this profile describes the provider as of (``profile_as_of``); None: as it is today.
    as_of: date | None = None

    def __post_init__(self) -> None:
        # a process served on another custodian never reaches this provider's desk: an answer to it would be read
        # by nothing, and say what no disclosure can give
        if elsewhere := sorted(set(self.discloses) & NOT_ON_THE_RELAY):
            raise ValueError(
                f"profile {self.name!r}: discloses answers {', '.join(elsewhere)}, served on the backup's custodian "
                "(relay/backup.py), not on the relay's operator, whose desk refuses it: remove it from discloses"
            )
        # Without a published policy on the record, what each instrument gets and keeps back is said as a record's
        # word (``policy_record``, ``realtime_record``) or as the profile's assumption (``assumptions``): a
        # profile with neither for an instrument would give an empty reason, or claim a published policy it has not.
        if self.published_policy:
            return
        answered = set(self.assumptions)
        if not self.policy_record:
            # every instrument that looks back or collects, but a preservation request (it hands nothing over) and
            # a warrant on a backup's custodian (served on Apple or Google, not on this provider), and a capability
            # notice (it builds, and hands nothing over)
            missing = [
                i.key
                for i in INSTRUMENTS.values()
                if i.looks != "freeze"
                and i.key not in NOT_ON_THE_RELAY
                and not i.builds
                and i.key not in answered
            ]
            if missing:
                raise ValueError(
                    f"profile {self.name!r}: published_policy is False and policy_record is empty, so what the "
                    f"provider keeps back under {', '.join(missing)} has no reason: give policy_record (the "
                    "record's word for what it hands over) or an assumption under each (assumptions)"
                )
        if (self.pen_register or self.wiretap) and not self.realtime_record:
            missing = [
                i.key for i in INSTRUMENTS.values() if i.forward and not i.builds and i.key not in answered
            ]
            if missing:
                raise ValueError(
                    f"profile {self.name!r}: published_policy is False, its relay could collect in real time "
                    f"(pen_register or wiretap) and realtime_record is empty, so that it collects nothing under "
                    f"{', '.join(missing)} has no reason: give realtime_record (what the record shows of real-time "
                    "returns) or an assumption under each (assumptions)"
                )

    def not_yet(self, day: date) -> str | None:
        """Why no run can be set on ``day`` under this profile (the provider did not exist yet), or None."""
        if self.since is None or day >= self.since[0]:
            return None
        first, source = self.since
        return (
            f"{self.title} (profile {self.name!r}) did not exist on {day}: its first day here is {first} ({source}; "
            "the project's citation, not on the record)"
        )

    def response_to(self, instrument: Instrument) -> Response:
        """The provider's response to a demand under ``instrument``: "complied" unless its policy
        for that instrument says otherwise."""
        return self.responses.get(instrument.key, "complied")

    def relay_options(self) -> dict[str, Any]:
        """What the provider's relay keeps, as ``RelayCore``'s keyword arguments: its retention
        policy, delivered bodies, contacts, blocks and device facts (``relay serve --profile``)."""
        return {
            "policy": self.policy,
            "keep_delivered": self.keep_delivered,
            "keep_contacts": self.keep_contacts,
            "keep_blocks": self.keep_blocks,
            # a device's class is read off its registered type, so the relay keeps the type for it
            "keep_device_facts": self.device_facts | ({"device_type"} if self.device_class else frozenset()),
        }

    def holds_records(self, kind: RecordKind, *fields: str) -> bool:
        rule = self.policy.rules.get(kind)
        return rule is not None and all(f in rule.fields for f in fields)


_FBI_CHART = "FBI, 'Lawful Access' chart, 2021-01-07 (FOIA release 2021-11-19; justsecurity.org/79549)"
# The chart's header: "every return except WhatsApp's is a log of stored data, delivered after the
# fact". So no provider on it but WhatsApp collects anything in real time: no pen register, and no
# wiretap either (a wiretap collects everything a pen register does, and the bodies besides).
_NOT_REALTIME = "the FBI chart (2021) shows real-time returns only for WhatsApp"
# Said of a provider whose relay the profile gives no way to collect in real time where the chart's pen-register
# cell is "—": the chart states nothing there (it says "no capability" of iMessage alone), so that the relay has
# none is a design claim the record does not make (_chart_realtime_assumed).
_NOT_REALTIME_ASSUMED = (
    "the FBI chart (2021) shows real-time returns only for WhatsApp; its pen-register cell for this provider is '—', "
    "which states nothing, so this is the project's assumption"
)


def _chart_realtime_assumed(title: str) -> dict[str, str]:
    """The assumption under a pen register and a wiretap order for a provider whose FBI chart pen-register cell
    is "—" and whose relay the profile gives no way to collect in real time (``no capability``): the chart
    says "no capability" of iMessage alone; of the others it states nothing, and it has no wiretap column."""
    header = "its header: every return but WhatsApp's is a log of stored data, delivered after the fact"
    return {
        "pen_register": f"the FBI chart's pen register cell for {title} is '—': the chart states nothing there "
        f"({header}), not that {title} has no capability, as it says of iMessage. This profile assumes its relay "
        "has no way to collect routing in real time, so that a pen register order gets nothing collected",
        "wiretap": f"the FBI chart has no wiretap column ({header}), and no record says whether {title}'s relay "
        "could copy what it routes in real time. This profile assumes it has no way to, so that a wiretap order "
        "gets nothing collected",
    }


def _warrant_gets_the_2703d_records(records: str, cell: str) -> str:
    """The assumption under a search warrant where the FBI chart's search-warrant cell names less than its
    2703(d) cell: a warrant may compel every record a 2703(d) order may, and the profile hands it them."""
    return (
        f"the FBI chart names {records} under a 2703(d) court order, and under a search warrant only {cell}; "
        "no source says what the provider hands a search warrant of them. A search warrant may compel every record a 2703(d) "
        "order may (18 U.S.C. 2703(c)(1)(A)), and this profile assumes the provider hands a search warrant what it "
        "hands a 2703(d) order, as well as what the chart names"
    )


_CHART_RECORD = "the FBI chart, of what US legal process gets"


def _chart_dash_assumed(
    title: str,
    cell: str,
    *,
    own: str = "",
    gets: Mapping[str, str] | None = None,
    processes: tuple[str, ...] = ("court_order_2703d", "search_warrant"),
) -> dict[str, str]:
    """The assumption under each of ``processes`` (a 2703(d) court order, a search warrant) for a provider whose
    FBI chart cell under it is "—". The record gives the dash no meaning: the chart states nothing there, not that
    nothing is handed over, nor what is. The profile hands such an order what the chart's subpoena cell (``cell``)
    names, which either may compel too (18 U.S.C. 2703(c)(2): "any means available under paragraph (1)");
    ``gets``: per process, what is said of it besides; ``own``: the provider's own record, where it is silent on the order too."""
    return {
        p: f"the FBI chart's {INSTRUMENTS[p].name} cell for {title} is '—': the chart states nothing of what one "
        f"gets{own}. This profile assumes {INSTRUMENTS[p].a_name} gets what the chart's subpoena cell names "
        f"('{cell}'), which it may compel too (18 U.S.C. 2703(c)(2)){(gets or {}).get(p, '')}"
        for p in processes
    }


def _pk_court_order_assumed(record: str) -> dict[str, str]:
    """The assumption under a Pakistani court's order for a provider whose ``record`` (what it hands over,
    and to whom) says nothing of one: the profile hands it what it hands a US search warrant."""
    return {
        "pk_court_order": f"the record ({record}) says nothing of this provider answering a Pakistani court's "
        "order; this profile assumes it hands one what it hands a US search warrant, which asks for the same "
        "(stored content and records)"
    }


def _pk_court_order_nothing(record: str) -> dict[str, str]:
    """The assumption under a Pakistani court's order for a provider whose ``record`` is of US legal process
    only and that the profile hands nothing to under one."""
    return {
        "pk_court_order": f"the record ({record}) says nothing of this provider answering a Pakistani court's "
        "order; this profile assumes it hands one nothing"
    }


def _foreign_forward_nothing(record: str) -> dict[str, str]:
    """The assumption under each forward-looking order of another country's law (an interception warrant,
    direction or authorization, an assistance request or notice, a demand on all traffic; not a capability
    notice, which builds and hands nothing over by itself) for a provider whose ``record`` is of US legal
    process only and that the profile hands nothing to under one: its relay could collect, and collects
    nothing. No source says its published policy refuses one."""
    return {
        i.key: f"the record ({record}) says nothing of this provider answering {i.a_name} "
        f"({JURISDICTIONS[i.jurisdiction].name}); this profile assumes it hands one nothing: its relay could "
        "collect what one asks for, and collects nothing"
        for i in INSTRUMENTS.values()
        if i.jurisdiction != "us" and i.forward and not i.builds
    }


# Signal's own words on groups, in its published responses (signal.org/bigbrother): what the desk
# says beside "not retained" (no group state on the relay) or "cryptographically impossible" (only
# encrypted group state, groups v2).
_SIGNAL_GROUPS_RECORD_2016 = (
    "Signal, 2016: things it does not have stored include 'anything about a user's groups (such as how many "
    "groups a user is in, which groups a user is in, the membership lists of a user's groups)' "
    "(signal.org/bigbrother, E.D. Va. grand-jury subpoena)"
)
_SIGNAL_GROUPS_RECORD = (
    f"{_SIGNAL_GROUPS_RECORD_2016}; 2021: Signal 'doesn't have access to' a user's "
    "messages, chat list, groups or contacts (signal.org/bigbrother, Santa Clara County search warrant)"
)

SIGNAL = Profile(
    name="signal",
    title="Signal",
    since=(
        date(2014, 7, 1),
        "Signal's first release, for the iPhone, July 2014 (en.wikipedia.org, 'Signal (software)', as of 2016-07-29: "
        "'Initial release July 2014'); its Android predecessors TextSecure and RedPhone are not modelled",
    ),
    policy=_policy(
        "signal",
        {
            # "the date and time a user registered with Signal and the last date of a user's
            # connectivity to the Signal service" — nothing else (signal.org/bigbrother).
            RecordKind.REGISTRATION: _first({"time"}),
            RecordKind.AUTHENTICATION: _latest({"time"}, granularity={"time": _DAY}),
        },
    ),
    custody="devices",
    sealed_sender=True,
    wiretap=False,
    subscriber_record=False,
    identity_model="account",
    identity_model_source=(
        "Signal: linked devices share the account's identity key, transferred from the primary when "
        "linking (signal.org/docs, Sesame; support.signal.org 'Linked Devices'); a device the server "
        "adds needs a new identity key, so every contact sees 'safety number changed'"
    ),
    sources=(
        "signal.org/bigbrother: E.D. Va. grand-jury subpoena, 2016 (ACLU, 2016-10-04)",
        "signal.org/bigbrother: C.D. Cal. subpoena and Santa Clara County search warrant, 2021",
        _FBI_CHART,
    ),
    discloses={p: frozenset({"account_created", "last_seen"}) for p in _RELAY_ASKS},
    assumptions={
        **_pk_court_order_assumed(
            "Signal's published responses to US subpoenas and a search warrant, signal.org/bigbrother; the FBI chart"
        ),
        # the Santa Clara County warrant (2021) is on record, a 2703(d) order is not
        **_chart_dash_assumed(
            "Signal",
            "account creation date/time; last connection date",
            own=", and Signal's published responses (signal.org/bigbrother) are to subpoenas and a search "
            "warrant, not to a 2703(d) order",
            processes=("court_order_2703d",),
        ),
        **_chart_realtime_assumed("Signal"),
    },
    assumed_answers=frozenset({"court_order_2703d"}),
    group_state_encrypted=True,
    group_source=(
        "Signal's groups v2 (Chase, Perrin and Zaverucha, 'The Signal Private Group System', CCS 2020; "
        "signal.org/blog/signal-private-group-system, 2019-12-09): the server stores each group's state "
        "encrypted and cannot read its members; group messages are fanned out by the sender's client; "
        f"{_SIGNAL_GROUPS_RECORD}"
    ),
    notes={
        "last_seen": "Signal keeps only the day of the last connection",
        "group_membership": _SIGNAL_GROUPS_RECORD,
        "device_info": "the server must know the account's devices to deliver to each of them, but Signal's "
        "responses name only the two timestamps",
        "subscriber_info": "Signal's 2016 response produced the account's registration date and time and its last "
        "connection date, 'nothing else' (signal.org/bigbrother; ACLU, 2016-10-04): that Signal keeps no other record "
        "of the subscriber than the phone number the order names is the project's reading of that record",
        "realtime_routing": _NOT_REALTIME_ASSUMED,
    },
)

# WhatsApp. Sourced: the subpoena, 2703(d) order, search warrant and pen register columns (its
# law-enforcement FAQ, the FBI chart, In re WhatsApp, E.D. Cal. 2022). ASSUMED, not sourced: that a
# wiretap order gets the ciphertext the relay routes (``assumptions["wiretap"]``; see the docstring).
# What WhatsApp's record is of: US legal process only (a foreign order's answer is assumed).
_WHATSAPP_RECORD = (
    "WhatsApp's guide for law enforcement, the FBI chart and In re WhatsApp, all of US legal process"
)

# How long the relay keeps each connection's time and address: no record says (the project's assumption).
_WHATSAPP_CONNECTIONS_KEPT = 90 * _DAY

WHATSAPP = Profile(
    name="whatsapp",
    title="WhatsApp",
    since=(
        date(2009, 1, 1),
        "WhatsApp, founded and first released in 2009 (en.wikipedia.org, 'WhatsApp'): the year",
    ),
    policy=_policy(
        "whatsapp",
        {
            RecordKind.REGISTRATION: _first({"time", "host", "device"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host", "device"}),
            # kept 90 days: the period is the project's assumption (docs/record.md: no record says how long
            # WhatsApp keeps the addresses it hands over)
            RecordKind.CONNECTION: KindRule(frozenset({"time", "host"}), keep_for=_WHATSAPP_CONNECTIONS_KEPT),
            # "last seen" is the last activity: only the latest moment of each kind, per account
            RecordKind.SEND: _latest({"time"}),
            RecordKind.ACKNOWLEDGEMENT: _latest({"time"}),
            RecordKind.DISCONNECT: _latest({"time"}),
        },
    ),
    custody="devices",
    backup="gdrive",  # Android's default; on an iPhone, "icloud" (faq.whatsapp.com)
    last_seen_kinds=(
        RecordKind.AUTHENTICATION,
        RecordKind.SEND,
        RecordKind.ACKNOWLEDGEMENT,
        RecordKind.DISCONNECT,
    ),
    keep_contacts=True,
    keep_blocks=True,
    pen_register=True,
    pen_register_batch=15 * 60.0,
    group_fanout="server",
    group_source=(
        "WhatsApp Security Whitepaper, 'Transmitting Messages' / group messages: server-side fan-out, "
        "one sender-key message for the whole group, the sender keys handed out over the pairwise "
        "sessions; the server holds each group's member list"
    ),
    identity_model="signed-devices",
    identity_model_source=(
        "WhatsApp multi-device (engineering.fb.com, 2021-07-14; WhatsApp Security Whitepaper): each "
        "companion device has its own identity key, signed by the primary device; contacts check the "
        "signed device list, so a server-added device needs a client change"
    ),
    defences_since={
        "key_transparency": (
            date(2023, 4, 1),
            "WhatsApp's key transparency (its Auditable Key Directory) was announced in April 2023 "
            "(engineering.fb.com, 'Deploying key transparency at WhatsApp', 2023-04-13); the date is the "
            "announcement's: the record gives no date for its roll-out to users, which may have come later",
        )
    },
    sources=(
        "faq.whatsapp.com, 'Information for law enforcement authorities'",
        "In re WhatsApp pen register orders, E.D. Cal. 2022 (15-minute batches, up to 60 days)",
        "a federal court in E.D. Cal., 2018, refused DOJ's motion to hold Facebook in contempt for not wiretapping "
        "Messenger voice calls (the case's name, In re Facebook Messenger, is the project's citation, not on the "
        "record: docs/record.md)",
        _FBI_CHART,
    ),
    assumptions={
        "search_warrant": _warrant_gets_the_2703d_records(
            "blocked users ('numbers blocking or blocked by the user', faq.whatsapp.com)",
            "address-book contacts and the users who have the target in theirs",
        ),
        **_pk_court_order_nothing(_WHATSAPP_RECORD),
        **_foreign_forward_nothing(_WHATSAPP_RECORD),
        "wiretap": "no source shows WhatsApp returning ciphertext to a wiretap order; the relay could copy the "
        "encrypted bodies it routes, and this profile assumes it would. In the one reported fight over a "
        "wiretap order on an end-to-end service, in 2018 a federal court in E.D. Cal. refused DOJ's motion to hold "
        "Facebook in contempt for not wiretapping Messenger voice calls (E.D. Cal. 2018; the case's name, In re "
        "Facebook Messenger, is the project's citation, not on the record)",
    },
    discloses={
        "subpoena": frozenset({"subscriber_info", "account_created", "last_seen", "ip_addresses"}),
        "court_order_2703d": frozenset(
            {"subscriber_info", "account_created", "last_seen", "ip_addresses", "blocked_users"}
        ),
        "search_warrant": frozenset(
            {
                "subscriber_info",
                "account_created",
                "last_seen",
                "ip_addresses",
                "blocked_users",
                "contacts",
                "reverse_contacts",
            }
        ),
        "pen_register": frozenset({"realtime_routing", "ip_addresses"}),
        "wiretap": frozenset({"realtime_routing", "ip_addresses", "ciphertext"}),
    },
    retention_notes={
        "ip_addresses": "the relay keeps each connection's time and address for 90 days; that period is the "
        "project's assumption (the record names the IP address among what WhatsApp hands over, not how long it "
        "keeps it)"
    },
    notes={
        "content": "content lives only on the phones and in their backups",
        "blocked_users": "both ways: the numbers the account blocks and the numbers that block it ('numbers "
        "blocking or blocked by the user', faq.whatsapp.com, to a 2703(d) order)",
        "last_seen": "WhatsApp's 'last seen' is the account's last activity (a message sent or received, the "
        "app going offline), not its last login",
        "group_membership": "WhatsApp holds every group's member list (its server fans group messages out "
        "from it), and its published guide for law enforcement names no instrument under which it hands one "
        "over (the guide lists subscriber records, blocked numbers and address books; the project's reading "
        "of the record)",
    },
)

# iMessage's pen register, dated by the record: the FBI chart (dated 2021-01-07, capabilities as of
# November 2020) says "no capability"; Apple's own FAQ for law enforcement (published by The
# Intercept, 2016-09-28) shows look-up logs produced to pen/trap orders. The record gives no date at
# which Apple's practice changed, nor whether it did: the profile follows the FAQ before the chart's
# date and the chart from it (HISTORY["imessage"]).
_IMESSAGE_FAQ = "Apple's iMessage FAQ for law enforcement (published by The Intercept, 2016-09-28)"
_IMESSAGE_CHART_PEN = (
    "the FBI chart (dated 2021-01-07, capabilities as of November 2020) lists no pen-register capability for "
    "iMessage: nothing in real time, and no look-up log to a pen register order. Before the chart's date the record "
    f"is {_IMESSAGE_FAQ}, which shows look-up logs produced to pen register / trap-and-trace orders; the record "
    "does not say when, or whether, Apple's practice changed"
)
_IMESSAGE_FAQ_PEN = (
    "nothing in real time: the look-ups are logged directory queries, not the routing of messages. "
    f"{_IMESSAGE_FAQ} shows look-up logs produced to pen register / trap-and-trace orders; the FBI chart "
    "(dated 2021-01-07, after this date; capabilities as of November 2020) lists no pen-register capability for "
    "iMessage"
)

# The FBI chart's 2703(d) cell names the look-ups, not what each row holds; Apple's FAQ shows the client IP
# in each look-up it produces (to a pen/trap order). Handing the IPs over with the look-ups is assumed.
_IMESSAGE_LOOKUP_IPS = (
    "the FBI chart names 25 days of iMessage look-ups to and from the target number under a 2703(d) order and "
    f"says nothing of the IP address each came from; Apple keeps it ({_IMESSAGE_FAQ} shows 'Client IP' in the "
    "look-up logs it produces to pen register / trap-and-trace orders), and this profile assumes it is handed "
    "over with the look-ups, for the same 25 days"
)

# The chart has no wiretap column: that iMessage's relay cannot copy what it routes in real time either is read off
# its pen-register cell ("no capability"), and said as the project's inference under every wiretap order.
_IMESSAGE_WIRETAP_INFERRED = (
    "the FBI chart has no wiretap column; it says 'no capability' of iMessage in its pen-register column, and no "
    "record says whether Apple's relay could copy what it routes in real time. That it cannot (so that a wiretap "
    "order gets nothing collected) is the project's inference from that pen-register cell"
)

IMESSAGE = Profile(
    name="imessage",
    title="Apple iMessage",
    since=(
        date(2011, 10, 1),
        "iMessage came with iOS 5, released in October 2011 (2011-10-12; Apple Newsroom)",
    ),
    policy=_policy(
        "imessage",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time"}),
            # "capability look-ups" (source, target, time, IP) kept about 30 days; 25 days are
            # handed over under a 2703(d) order (FBI chart).
            RecordKind.BUNDLE_FETCH: KindRule(
                frozenset({"time", "host", "account", "recipient_account"}), keep_for=30 * _DAY
            ),
        },
    ),
    custody="devices",
    wiretap=False,
    backup="icloud",  # iCloud Backup on, Advanced Data Protection off (ADP is opt-in)
    identity_model="per-device",
    identity_model_source=(
        "Apple Platform Security guide, 'How iMessage sends and receives messages securely': "
        "per-device keys from Apple's directory service (IDS), no primary signature; Contact Key "
        "Verification (iOS 17.2, Dec 2023; security.apple.com/blog/imessage-contact-key-verification) "
        "alerts on a device the user did not add"
    ),
    defences_since={
        "key_verification": (
            date(2023, 12, 1),
            "iMessage Contact Key Verification came with iOS 17.2, December 2023 "
            "(security.apple.com/blog/imessage-contact-key-verification)",
        )
    },
    sources=(
        "Apple, 'Legal Process Guidelines' (iMessage capability query logs, 30 days; not on the record: docs/record.md)",
        "Apple, iMessage FAQ for law enforcement (published by The Intercept, 2016-09-28): a look-up "
        "'doesn't prove that any communication actually took place'",
        _FBI_CHART,
    ),
    # The chart's subpoena cell, "basic subscriber info", is 18 U.S.C. 2703(c)(2)'s, which names "any
    # temporarily assigned network address" (2703(c)(2)(E)): the addresses are handed over with it, and
    # to the orders above a subpoena (each may compel what a subpoena may, 2703(c)(2)).
    discloses={
        "subpoena": frozenset({"subscriber_info", "account_created", "last_seen", "ip_addresses"}),
        "court_order_2703d": frozenset(
            {"subscriber_info", "account_created", "last_seen", "ip_addresses", "lookup_log"}
        ),
        "search_warrant": frozenset(
            {"subscriber_info", "account_created", "last_seen", "ip_addresses", "lookup_log", "content"}
        ),
        # The FBI chart (2021-01-07; capabilities as of November 2020): "no capability". Before the
        # chart's date the record is Apple's FAQ (The Intercept, 2016-09-28), which shows look-up logs
        # produced to pen/trap orders: HISTORY["imessage"] dates the two.
        "pen_register": frozenset(),
        "wiretap": frozenset(),
    },
    # The FBI chart: "25 days of iMessage look-ups to/from the target number" to a 2703(d) order; the
    # same 25 days to a search warrant is the project's assumption (``assumptions``).
    lookback={"lookup_log": 25 * _DAY},
    # Apple's Legal Process Guidelines (cited above) are not on the record; its FAQ for law enforcement is, of the
    # look-ups to pen/trap orders (docs/record.md). What Apple keeps back is said as the chart's word.
    policy_record="its record, the FBI chart, names 'basic subscriber info' under a subpoena, '25 days of iMessage "
    "look-ups to/from the target number' under a 2703(d) order and 'device backups' under a search warrant, and "
    "no more",
    assumptions={
        "court_order_2703d": _IMESSAGE_LOOKUP_IPS,
        "search_warrant": _warrant_gets_the_2703d_records(
            "25 days of iMessage look-ups to and from the target number",
            f"device backups (reached here by a search warrant on the backup's custodian, {BACKUP_WARRANT})",
        )
        + f" (the same 25 days of look-ups); and {_IMESSAGE_LOOKUP_IPS}",
        "wiretap": _IMESSAGE_WIRETAP_INFERRED,
        **_pk_court_order_nothing(
            "the FBI chart and Apple's iMessage FAQ for law enforcement, both of US legal process"
        ),
    },
    notes={
        "ip_addresses": "the FBI chart's subpoena cell is 'basic subscriber info', which 18 U.S.C. 2703(c)(2)(E) "
        "defines to include 'any temporarily assigned network address': the addresses the relay keeps for the "
        "account, where it registered from, and, to an order the look-up log is handed to, where its own "
        "look-ups came from (each a row of that log, which the FBI chart puts at a 2703(d) order: a subpoena "
        "does not get them), of the 25 days of look-ups handed over, not of the 30 Apple keeps",
        "content": "with iCloud Backup on (and Advanced Data Protection off) Apple holds the backup's keys: "
        f"the history is reached by a search warrant on the backup custodian ({BACKUP_WARRANT}), not on the relay",
        "realtime_routing": _IMESSAGE_CHART_PEN,
        "lookup_log": "Apple keeps look-ups about 30 days and hands over 25 days of them to a 2703(d) order (FBI "
        "chart); a look-up is not a message: Apple says it \"doesn't prove that any communication actually "
        "took place\" (Apple's iMessage FAQ for law enforcement, published by The Intercept, 2016-09-28)",
    },
)

THREEMA = Profile(
    name="threema",
    title="Threema",
    since=(date(2012, 1, 1), "Threema, launched in 2012 (en.wikipedia.org, 'Threema'): the year"),
    policy=_policy(
        "threema",
        {
            RecordKind.REGISTRATION: _first({"time"}),
            RecordKind.AUTHENTICATION: _latest({"time"}, granularity={"time": _DAY}),
        },
    ),
    custody="devices",
    subscriber_hashed=True,
    created_granularity=_DAY,  # "ID creation date" (the FBI chart): a date, no time
    wiretap=False,
    public_keys=True,
    device_facts=frozenset({"push_token"}),
    sources=(
        "Threema, 'Transparency report' and law-enforcement guidelines (creation date, push token, public key; not on the record: docs/record.md)",
        _FBI_CHART,
    ),
    discloses={
        p: frozenset({"subscriber_info", "account_created", "last_seen", "device_info"}) for p in _RELAY_ASKS
    },
    assumptions={
        **_pk_court_order_assumed(
            "the FBI chart, of what US legal process gets; Threema's transparency report"
        ),
        **_chart_dash_assumed(
            "Threema", "hash of phone/email, push token, ID creation date, last login date"
        ),
        **_chart_realtime_assumed("Threema"),
    },
    assumed_answers=frozenset({"court_order_2703d", "search_warrant"}),
    # Threema's transparency report and guidelines (cited above) are not on the record; what Threema hands over is
    # (docs/record.md: the chart's row; its creation date, push token and public key)
    policy_record="its record, the FBI chart, names 'hash of phone/email, push token, ID creation date, last login "
    "date' under a subpoena, and the record adds the public key, no more",
    notes={
        "account_created": "Threema hands over the date the ID was created, not the time (the FBI chart: 'ID "
        "creation date')",
        "ip_addresses": "Threema keeps no IP logs",
        "subscriber_info": "only a hash of the phone number or e-mail (the push token and the public key are "
        "handed over with the device info)",
        # Threema's transparency report (in the sources) is not on the record: the public key is, beside the chart
        "device_info": "each device's public key and the push token its app registered (the FBI chart names the "
        "push token; the record adds the public key)",
        "realtime_routing": _NOT_REALTIME_ASSUMED,
    },
)

WICKR = Profile(
    name="wickr",
    title="Wickr",
    since=(date(2012, 1, 1), "Wickr, launched in 2012 (en.wikipedia.org, 'Wickr'): the year"),
    policy=_policy(
        "wickr",
        {
            RecordKind.REGISTRATION: _first({"time", "device"}),
            # "the date of last use" (Wickr's privacy policy, 2016-02-29; the FBI chart: "last use"): a day
            RecordKind.AUTHENTICATION: _latest({"time"}, granularity={"time": _DAY}),
            RecordKind.SEND: KindRule(frozenset({"account"})),  # counted, not logged
        },
    ),
    custody="devices",
    # "the date your account was created" (Wickr's privacy policy, 2016-02-29), "creation date" (the FBI
    # chart), "date of its creation" (wickr.com/information-request-reporting): a date, no time
    created_granularity=_DAY,
    wiretap=False,
    external_id_count=True,
    device_facts=frozenset({"device_type", "app_version"}),
    sources=(
        _FBI_CHART,
        "Wickr, Privacy Policy (last modified 2016-02-29): Wickr cannot reveal anything about a user 'aside from "
        "the date your account was created, the date of last use and the type of device on which such account "
        "was installed' (not on the record: docs/record.md)",
        "Wickr, 'Information Request Reporting' (wickr.com/information-request-reporting): 'date of its creation, "
        "the date of last use, the total number of messages sent and/or received, the type of device on which "
        "the account was created' (not on the record: docs/record.md)",
    ),
    discloses={
        p: frozenset({"account_created", "device_info", "last_seen", "message_counts"}) for p in _RELAY_ASKS
    },
    assumptions={
        **_pk_court_order_assumed(
            "the FBI chart, of what US legal process gets; Wickr's privacy policy and information request reporting"
        ),
        **_chart_dash_assumed(
            "Wickr",
            "creation date, device types, last use, number of messages, number of external ids, recent settings "
            "changes, version",
            own=", and Wickr's own words (its privacy policy; its information request reporting) list the facts "
            "it holds about an account, not the process each goes to",
        ),
        **_chart_realtime_assumed("Wickr"),
    },
    assumed_answers=frozenset({"court_order_2703d", "search_warrant"}),
    # Wickr's privacy policy and information request reporting (cited above for their wording) are not on the
    # record; what Wickr hands over is (docs/record.md: the chart's row; the avatar besides)
    policy_record="its record, the FBI chart, names 'creation date, device types, last use, number of messages, "
    "number of external ids, recent settings changes, version' under a subpoena, and the record adds the avatar, "
    "no more",
    notes={
        "account_created": "Wickr hands over the date the account was created, not the time (the FBI chart: "
        "'creation date'; Wickr: 'the date your account was created')",
        # the chart says "last use"; only Wickr's privacy policy, not on the record, says it is a date
        "last_seen": "Wickr hands over the date of last use, not the time: the FBI chart says 'last use', and that "
        "it is a date is the project's reading of Wickr's privacy policy ('the date of last use'), which is not on "
        "the record (docs/record.md)",
        "message_counts": "the number of messages, with no sender-recipient pairs or times, and the number of "
        "external ids (not the ids)",
        "device_info": "each device's type and app version, as its app registered them (the FBI chart); the "
        "chart's 'recent settings changes' the simulated clients do not make, and Wickr's avatar (which it hands "
        "over too) they do not set",
        "realtime_routing": _NOT_REALTIME_ASSUMED,
    },
)

VIBER = Profile(
    name="viber",
    title="Viber",
    since=(
        date(2010, 12, 1),
        "Viber, first released for the iPhone in December 2010 (2010-12-02; telecompaper.com, 2010-12-14)",
    ),
    policy=_policy(
        "viber",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.SEND: KindRule(frozenset({"time", "account", "recipient_account"})),
        },
    ),
    custody="devices",
    wiretap=False,
    sources=(_FBI_CHART,),
    # no policy of Viber's for law enforcement is on record, only the chart's row
    published_policy=False,
    policy_record="its only record, the FBI chart, names 'registration data, IP at creation; message history: "
    "time, date, source, destination' under a subpoena, and no more; no policy of Viber's for law enforcement is on record",
    discloses={
        p: frozenset({"subscriber_info", "account_created", "ip_addresses", "message_log"})
        for p in _RELAY_ASKS
    },
    assumptions={
        **_pk_court_order_assumed(_CHART_RECORD),
        **_chart_dash_assumed(
            "Viber",
            "registration data, IP at creation; message history: time, date, source, destination (no content)",
        ),
        **_chart_realtime_assumed("Viber"),
    },
    notes={"ip_addresses": "the IP address at registration only", "realtime_routing": _NOT_REALTIME_ASSUMED},
)

# The instruments that are orders of a judicial authority and look back at what is held: Telegram's
# "valid order from the relevant judicial authorities" (telegram.org/privacy §8.3).
_TELEGRAM_JUDICIAL: Final = ("court_order_2703d", "search_warrant", "pk_court_order")
_TELEGRAM_ORDER = (
    "Telegram hands over IP address and phone number to 'a valid order from the relevant judicial authorities' "
    "confirming the user is a suspect in a case involving criminal activities (telegram.org/privacy §8.3, "
    "September 2024): a court's order, not a subpoena"
)
# What Telegram's record is of: what it hands a court's order looking back, and US process (the chart);
# none of it speaks of collecting in real time under an interception order of any country's law.
_TELEGRAM_RECORD = (
    "telegram.org/privacy §8.3, of the IP address and phone number it hands a court's order, and the FBI "
    "chart, of US legal process"
)


# A subpoena gets nothing from Telegram today: the profile's reading of §8.3 ("a valid order from the relevant judicial
# authorities"), which the record does not settle: the FBI chart put the IP address and phone number of Telegram's
# 2018 policy (to "a court order", §8.3) in its subpoena column. Said in every subpoena's disclosure, and beside
# each category a 2703(d) order gets and a subpoena does not.
_TELEGRAM_SUBPOENA_READING = (
    "Telegram's privacy policy names 'a valid order from the relevant judicial authorities' (telegram.org/privacy "
    "§8.3, September 2024); no record says whether a subpoena, which no judge issues on the case, is one, and the "
    "FBI chart put the IP address and phone number of Telegram's earlier policy (to 'a court order', §8.3, 2018) in "
    "its subpoena column. That a subpoena gets nothing is the project's reading of §8.3"
)


def _telegram_foreign_forward_nothing() -> dict[str, str]:
    """Telegram's answer to each forward-looking order of another country's law, as ``_foreign_forward_nothing``,
    saying why §8.3 is not that answer, even where a judge made the order (Canada's Part VI authorization)."""
    return {
        key: f"{why}. Telegram's privacy policy §8.3 hands over IP address and phone number to an order of the "
        "judicial authorities (from September 2024 one naming the user as a criminal suspect; from 2018 one "
        "confirming a terror suspect): records Telegram holds, handed over after the fact, which this profile hands "
        f"a court's order looking back (a Pakistani court's order); {INSTRUMENTS[key].a_name} asks instead for "
        "what passes from its service on (the phone number not at all), and no record says Telegram collects "
        "anything in real time"
        for key, why in _foreign_forward_nothing(_TELEGRAM_RECORD).items()
    }


TELEGRAM_CLOUD = Profile(
    name="telegram-cloud",
    title="Telegram (cloud chats)",
    since=(
        date(2013, 8, 1),
        "Telegram, first released for iOS in August 2013 (2013-08-14; telegram.org/blog, 2019)",
    ),
    policy=_policy(
        "telegram-cloud",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host"}),
            RecordKind.SEND: KindRule(frozenset({"time", "account", "recipient_account", "size"})),
        },
    ),
    custody="provider",
    keep_delivered=True,
    keep_contacts=True,
    pen_register=True,  # its servers route and store every cloud message and hold the keys:
    wiretap=True,  # what stops a real-time return is its policy, not its design
    # no record says what Telegram hands a pen register or wiretap order: §8.3 names records it holds, handed over
    # after the fact, and the chart shows no real-time return from it (its cells "—")
    realtime_record=(
        "its record, the FBI chart (2021), shows no real-time return from it (every return but WhatsApp's is a log "
        "of stored data, delivered after the fact), and its privacy policy (telegram.org/privacy §8.3) names records "
        "it holds, handed over after the fact (that it hands nothing over in real time is the project's reading)"
    ),
    sources=(
        "telegram.org/privacy §8.3 (IP address and phone number: 2018 to August 2024 only for confirmed terror "
        "suspects, the FBI chart's wording (the policy of August 2018: the month is the project's citation, the record "
        "gives the year); from September 2024 to a valid order from judicial authorities naming "
        "the user as a criminal suspect)",
        "telegram.org/faq: cloud chats are encrypted client-server and stored on Telegram's servers",
        _FBI_CHART,
    ),
    # "IP address and phone number" to "a valid order from the relevant judicial authorities" naming the
    # user (telegram.org/privacy §8.3, September 2024): a court's order looking back (a 2703(d) order, a
    # search warrant, a Pakistani court order), not a subpoena, which no judge issues on the case;
    # nothing in real time (the chart)
    discloses={p: frozenset({"subscriber_info", "ip_addresses"}) for p in _TELEGRAM_JUDICIAL},
    # its servers could collect under an interception order of another country's law; no record says what
    # it hands one (§8.3 names what it hands a court's order, records it holds: a judge's order looking
    # back gets them, pk_court_order): assumed, nothing. A subpoena: §8.3 read as a court's order, not one
    assumptions={**_telegram_foreign_forward_nothing(), "subpoena": _TELEGRAM_SUBPOENA_READING},
    notes={
        "content": "the keys are on Telegram's servers: content is withheld by policy, not by mathematics",
        "subscriber_info": _TELEGRAM_ORDER,
        "ip_addresses": _TELEGRAM_ORDER,
        "realtime_routing": _NOT_REALTIME,
    },
)

# LINE: "account data; up to 7 days of chats only if E2EE is off" (the FBI chart). Which account data
# is the project's inference: the subscriber record and the creation time. This profile has Letter
# Sealing (LINE's end-to-end encryption) on.
_LINE_CELL = "account data; up to 7 days of chats only if E2EE is off"
# LINE's own guidelines (not on the record, docs/record.md: the project's citation) list, as information on a
# user's communications that may be disclosed, the date each was sent and the IP address of the device used, as
# well as text from chats, naming no process. Both LINE profiles keep the IP addresses and do not hand them over,
# following the chart, which names neither: said wherever a LINE profile keeps back what it holds.
_LINE_GUIDELINES = (
    "LINE Corporation, 'Guidelines for Responding to Law Enforcement' (linecorp.com/en/security/article/291, "
    "2022-01-19)"
)
_LINE_GUIDELINES_LIST = (
    "LINE's guidelines for responding to law enforcement, of 2022-01-19 and not on the record (docs/record.md), "
    "list, as information on a user's communications that may be disclosed, the date each was sent, the IP address "
    "of the device used and text from chats, under no named process; this profile follows the chart, which names "
    "none of them"
)
LINE = Profile(
    name="line",
    title="LINE (Letter Sealing on)",
    since=(
        date(2011, 6, 1),
        "LINE, launched in June 2011 (The Japan Times, 2021-03-31); Letter Sealing came later, and is not dated here",
    ),
    policy=_policy(
        "line",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host"}),
        },
    ),
    custody="devices",
    wiretap=False,
    sources=(_FBI_CHART,),
    # no policy of LINE's for law enforcement is on record, only the chart's row: what it withholds is said as
    # that row's word, never as "its published policy"
    published_policy=False,
    policy_record=f"its only record, the FBI chart, names '{_LINE_CELL}' under a subpoena, and no more; no policy of "
    f"LINE's for law enforcement is on record ({_LINE_GUIDELINES_LIST})",
    discloses={p: frozenset({"subscriber_info", "account_created"}) for p in _RELAY_ASKS},
    assumptions={
        **_pk_court_order_assumed(_CHART_RECORD),
        **_chart_dash_assumed("LINE", _LINE_CELL),
        **_chart_realtime_assumed("LINE"),
    },
    notes={
        # The record does not date Letter Sealing (docs/record.md): no dated design change, as Signal's sealed sender
        # has in HISTORY, can say a run set before it had none; the note says the day is not on the record instead.
        "content": "Letter Sealing (LINE's end-to-end encryption) is on; with it off, LINE hands over up to "
        "7 days of chats (FBI chart). The record gives no date for Letter Sealing's start: that LINE had it on the "
        "date of a run set on one is the project's assumption",
        "subscriber_info": "the chart says 'account data'; which fields is the project's inference",
        "realtime_routing": _NOT_REALTIME_ASSUMED,
    },
)

# LINE with Letter Sealing off: the FBI chart's "up to 7 days of chats only if E2EE is off". Without
# Letter Sealing a chat is encrypted between the phone and LINE's servers only, so the keys are LINE's
# (custody "provider") and the chats are held at the relay (keep_delivered). The chart puts the chats in
# its one LINE cell, beside "account data"; read as for the chart's other rows (the cell is what the
# provider hands over, to each instrument that may compel it: relay.legal), the chats go to a search
# warrant, which may compel content, not to a subpoena, which may not (18 U.S.C. 2703(a)). "Up to 7 days"
# is the desk's reach (``lookback``): the chart does not say whether LINE keeps chats longer, and the
# relay here keeps every delivered body. No real-time return, as for every chart row but WhatsApp's.
_LINE_7_DAYS = 7 * _DAY
LINE_LETTER_SEALING_OFF = replace(
    LINE,
    name="line-letter-sealing-off",
    title="LINE (Letter Sealing off)",
    policy=_policy("line-letter-sealing-off", LINE.policy.rules),
    custody="provider",
    keep_delivered=True,
    sources=(
        _FBI_CHART,
        f"{_LINE_GUIDELINES}: the information on a user's communications that may be disclosed includes the 'date "
        "that the communications were sent, the IP address of the device used, the port number of the device used, "
        "text from chats' (not on the record: docs/record.md)",
    ),
    # LINE's guidelines (above) are cited for the chats; they are not on the record (docs/record.md), and what
    # the profile keeps back is said as the chart's word, as with Letter Sealing on
    policy_record=f"its record, the FBI chart, names '{_LINE_CELL}' under a subpoena, and no more; {_LINE_GUIDELINES_LIST}"
    " (this profile cites them for the chats)",
    discloses={p: frozenset({"subscriber_info", "account_created", "content"}) for p in _RELAY_ASKS},
    assumptions={
        **_pk_court_order_assumed(f"{_CHART_RECORD}; LINE's guidelines for responding to law enforcement"),
        **_chart_dash_assumed(
            "LINE",
            _LINE_CELL,
            own=", and LINE's guidelines for responding to law enforcement name what may be disclosed, not under "
            "which process",
            gets={
                "court_order_2703d": ", but for the chats, content, which only a search warrant may compel (18 U.S.C. 2703(a))",
                "search_warrant": ", the chats (up to 7 days of them) included, content a search warrant may compel "
                "(18 U.S.C. 2703(a))",
            },
        ),
        **_chart_realtime_assumed("LINE"),
    },
    lookback={"content": _LINE_7_DAYS},
    notes={
        "content": "Letter Sealing (LINE's end-to-end encryption) is off: the keys are LINE's, and LINE hands over "
        "up to 7 days of chats (FBI chart: 'up to 7 days of chats only if E2EE is off')",
        "ciphertext": "the chart names chats, not their encrypted form",
        "subscriber_info": LINE.notes["subscriber_info"],
        "realtime_routing": _NOT_REALTIME_ASSUMED,
    },
)

# Wire. What its servers keep is Wire's own account (Wire Privacy Whitepaper, wire.com/en/resources/
# whitepapers/privacy): each user's profile (§2.1); per device its class, model, label, registration
# time and the geographic location of the IP address it registered from (§2.2); per group conversation
# its creator, creation time, participants and their devices, name and roles (§3.2). Wire is not on the
# FBI chart, and no published guide of Wire's for law enforcement was found: which instrument gets what
# is the project's assumption (``assumptions``, said in every disclosure under Wire): what the
# whitepaper says it keeps, to any instrument that may compel it; nothing in real time.
_WIRE_PRIVACY = "Wire Privacy Whitepaper (wire.com/en/resources/whitepapers/privacy)"
_WIRE_LOOK_BACK = (
    "no published guide of Wire's for law enforcement says what it hands over under which instrument; this "
    "profile assumes it hands over what its privacy whitepaper says it keeps (the user's profile; each "
    "device's class, registration time and the location of the address it registered from; each group's "
    "creator and members), to any instrument that may compel it"
)
_WIRE_REALTIME = (
    "no source says whether Wire collects anything in real time; this profile assumes it has no way to (as no "
    "provider on the FBI chart but WhatsApp does)"
)
WIRE = Profile(
    name="wire",
    title="Wire",
    since=(date(2014, 12, 1), "Wire, launched in December 2014 (The Verge, 2014-12-03)"),
    policy=_policy(
        "wire",
        {
            # each device's registration, when (§2.2 "Timestamp")
            RecordKind.REGISTRATION: KindRule(
                frozenset({"time", "account", "device"}), keep="first", key=("account", "device")
            ),
            # each device's first connection of its own, right after it registered: the address its
            # location is derived from (§2.2 "Location"; see Profile.registration_location)
            RecordKind.AUTHENTICATION: KindRule(
                frozenset({"time", "host", "account", "device"}), keep="first", key=("account", "device")
            ),
        },
    ),
    custody="devices",
    wiretap=False,
    published_policy=False,  # no guide for law enforcement found: every instrument's answer is assumed
    last_seen_kinds=(),  # the first connection per device is kept, not the last
    device_class=True,
    registration_location=True,
    group_fanout="server",
    group_creator=True,
    group_source=(
        f"{_WIRE_PRIVACY} §3.2 'Group data': the backend keeps each conversation's creator, creation time, "
        "participants list (the users and their devices, which clients use to display the participants and to "
        "encrypt end to end between clients), name and roles. The relay holds the member list as WhatsApp's "
        "does (group_fanout 'server'); how Wire's clients encrypt a group message is not what this models"
    ),
    identity_model="per-device",
    identity_model_source=(
        "Wire: each device an account logs in on generates its own key (wire.com/en/blog/"
        "key-verification-secure-conversations, 2017-01-16); a contact's devices are listed with their key "
        "fingerprints, each compared and marked verified one by one, and a conversation is verified only once "
        "every device is (support.wire.com, 'How can I compare key fingerprints?'). No source found says a "
        "contact's device list is signed by another of the account's devices: modelled as per-device keys "
        "taken as served"
    ),
    sources=(
        f"{_WIRE_PRIVACY}: §2.1 profiles, §2.2 user devices, §3.2 group data (not on the record: docs/record.md)",
        "Wire, 'Make your conversations safe and secure' (wire.com/en/blog/key-verification-secure-conversations, "
        "2017-01-16); support.wire.com, 'How can I compare key fingerprints?' (the project's citation, not on the "
        "record: docs/record.md)",
    ),
    discloses={
        i.key: frozenset({"subscriber_info", "device_info", "group_membership"})
        for i in INSTRUMENTS.values()
        if not i.forward and i.key not in NOT_ON_THE_RELAY
    },
    # (not a preservation request, which hands nothing over, nor a warrant on a backup custodian,
    # served on Apple or Google, not on Wire: relay/backup.py)
    assumptions={
        i.key: _WIRE_REALTIME if i.forward else _WIRE_LOOK_BACK
        for i in INSTRUMENTS.values()
        if i.looks != "freeze" and i.key not in NOT_ON_THE_RELAY
    },
    notes={
        # the whitepaper is not on the record (docs/record.md), which names the user's names, not the rest
        "subscriber_info": f"the user's profile: username, display name, picture, accent colour, locale ({_WIRE_PRIVACY} "
        "§2.1; the whitepaper is not on the record, which names the user's names: the rest is the project's "
        "citation)",
        "device_info": "per device its class (Mobile, Tablet or Desktop), model, label, registration time and the "
        f"geographic location of the IP address used to register ({_WIRE_PRIVACY} §2.2); the simulated apps "
        "register a type (android, ios, desktop), from which the class is read, and no model or label (the label, "
        "of all these, is the whitepaper's alone: the project's citation, not on the record)",
        "group_membership": f"Wire's backend keeps each group conversation's creator, creation time and "
        f"participants with their devices ({_WIRE_PRIVACY} §3.2)",
        "account_created": "Wire's privacy whitepaper names no account creation time; each device's registration "
        "time comes with the device info",
        "ip_addresses": "Wire's privacy whitepaper names the location of the address a device registered from, not "
        "the address: the device info hands over the location (the relay keeps the address each device first "
        "connected from only to derive it; the project's modelling)",
        "location": "the location each device registered from comes with the device info (Wire Privacy "
        "Whitepaper §2.2)",
        "last_seen": "Wire's privacy whitepaper lists no record of when a device last connected; this profile "
        "keeps none (the project's reading)",
        "contacts": "Wire keeps each user's connections, the connection requests users accepted (Wire Privacy "
        "Whitepaper §2.3; the project's citation, not on the record), which the simulated clients do not make; no "
        "address book is kept",
        "ciphertext": "Wire's privacy whitepaper lists no message bodies among what it keeps; those waiting for "
        "delivery are not handed over (the project's assumption)",
        "realtime_routing": _WIRE_REALTIME,
    },
)

# WeChat: "non-China accounts: name, phone, email, IP" (the FBI chart). That WeChat is not end to
# end, so that the keys are its own and content is withheld by policy, is the project's inference;
# the chart says only that no content is handed over.
WECHAT = Profile(
    name="wechat",
    title="WeChat (account registered outside China)",
    since=(date(2011, 1, 1), "WeChat, first released as Weixin in January 2011 (en.wikipedia.org, 'WeChat')"),
    policy=_policy(
        "wechat",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host"}),
        },
    ),
    custody="provider",
    pen_register=True,  # its servers route every message and hold the keys (the project's inference):
    wiretap=True,  # what stops a real-time return is its policy, as the chart shows none
    realtime_inferred="the project's inference: WeChat is not end to end, so its servers, which route every "
    "message, hold the keys to it",
    # no policy of WeChat's is on record, only the chart: it shows no real-time return, and says no more
    realtime_record=(
        "its only record, the FBI chart (2021), shows no real-time return from it (every return but WhatsApp's "
        "is a log of stored data, delivered after the fact)"
    ),
    sources=(_FBI_CHART,),
    # no policy of WeChat's for law enforcement is on record, only the chart's row: what it withholds is said
    # as that row's word, never as "its published policy"
    published_policy=False,
    policy_record="its only record, the FBI chart, names 'non-China accounts: name, phone, email, IP' under a "
    "subpoena, and no more; no policy of WeChat's for law enforcement is on record",
    discloses={
        i.key: frozenset({"subscriber_info", "ip_addresses"})
        for i in INSTRUMENTS.values()
        if not i.forward and i.key not in NOT_ON_THE_RELAY
    },
    # its record is the chart's, of US process: what it hands a 2703(d) order or a search warrant (the chart's
    # cells: "—"), an interception order of another country's law, which its servers could serve (nothing), or
    # a Pakistani court's order is assumed
    assumptions={
        **_chart_dash_assumed("WeChat", "non-China accounts: name, phone, email, IP"),
        **_pk_court_order_assumed(_CHART_RECORD),
        **_foreign_forward_nothing(_CHART_RECORD),
    },
    notes={
        "subscriber_info": "for an account registered outside China: name, phone number and e-mail (FBI chart)",
        "content": "WeChat is not end to end (the project's inference), so its own key opens the messages its "
        "relay holds; its only record, the FBI chart, says no message content is handed over ('no'), and no "
        "policy of WeChat's is on record: that WeChat keeps back what its key opens is the project's assumption",
        "realtime_routing": _NOT_REALTIME,
    },
)

# BlackBerry's policy as reported (Dec 2015): who contacted whom "under a court order"; a subpoena
# gets the subscriber records. A subpoena is not a court order: no record says what BlackBerry hands one (assumed).
_BB_SUBPOENA = ASKS["subpoena"] - {"message_log"}
_BB_SUBPOENA_ASSUMED_TEXT = (
    "the record reports BlackBerry's policy for court orders (John Chen, December 2015{later}); a subpoena is not "
    "one, and no record says what BlackBerry hands a subpoena. This profile assumes it hands over the subscriber "
    "records a subpoena may compel (18 U.S.C. 2703(c)(2)), not who contacted whom, which the reported policy "
    "gives a court order"
)
_BB_SUBPOENA_ASSUMED = _BB_SUBPOENA_ASSUMED_TEXT.format(later="")
_BB_SUBPOENA_ASSUMED_LATER = _BB_SUBPOENA_ASSUMED_TEXT.format(later=", after this date")
# Pakistan, December 2015 (John Chen): to a court order, "location, which users contacted each other,
# and certain metadata", never the correspondence (neither the words nor the ciphertext).
_BB_COURT_ORDER = ASKS["pk_court_order"] - {"ciphertext", "content"}
# Pakistan, 2015: BlackBerry refused the PTA's demand to monitor all BES traffic and said it would
# leave; no bulk hand-over happened (the PTA withdrew the demand on 2015-12-31). The demand named BES
# ("every BES e-mail and BES BBM message"), not consumer BBM: what consumer BBM would have answered
# one is the project's assumption (BBM_CONSUMER.assumptions), the same refusal.
_BB_RESPONSES: Mapping[str, Response] = {"pta_demand": "refused"}
_PTA_RECORD_TEXT = (
    "BlackBerry refused the PTA's demand to monitor 'every BES e-mail and BES BBM message' and said on "
    "2015-11-30{left} that it would leave Pakistan rather than comply; on 2015-12-31{withdrew} the PTA withdrew "
    "the demand, 'accepting BlackBerry's position that we cannot provide the content of our customers' BES "
    "traffic, nor will we provide any so-called back doors to our BES servers', and BlackBerry did not have to "
    "leave. No bulk hand-over of BES metadata happened: the metadata it holds it would not give (PTA statement, "
    "2015-12-31; BlackBerry, 2015-11-30)"
)
_PTA_RECORD = _PTA_RECORD_TEXT.format(left="", withdrew="")
# Said of a demand served before the record's dates (HISTORY): they are after the disclosure's date.
_PTA_RECORD_WITHDRAWAL_LATER = _PTA_RECORD_TEXT.format(left="", withdrew=", after this date,")
_PTA_RECORD_LATER = _PTA_RECORD_TEXT.format(left=", after this date,", withdrew=", after this date,")
# The same reported policy ("under a court order ... not the correspondence itself") for every
# targeted order of the US and Pakistan: the words and the ciphertext are withheld, for consumer
# BBM too, where one global key the provider holds would open them — only policy protects them.
# Not for India's interception orders: the Mumbai facility (2012) covers consumer BBM and BIS e-mail;
# nor for Canada's Part VI authorization, modelled on Project Clemenza, where the police read the
# intercepted PIN messages with the global key (sims/scenarios/rcmp-clemenza.toml says how).
_BB_NOT_THE_CORRESPONDENCE: Final = ("search_warrant", "wiretap", "ifta_warrant")

# The UK's and Australia's instruments (and, for BES, Canada's): the record says nothing of BlackBerry
# answering one. The profiles apply the one general policy the record reports, "under a court order"
# location, who contacted whom and certain metadata, never the correspondence, and say in every such
# disclosure that this is assumed.
_BB_SILENT: Final = tuple(i.key for i in INSTRUMENTS.values() if i.jurisdiction in ("uk", "au"))
_BB_SILENT_ASSUMED = (
    "the record says nothing of BlackBerry answering an order of this country's law; this profile assumes it "
    "answers as its policy was reported for court orders (John Chen, December 2015): location, who contacted "
    "whom and certain metadata, never the correspondence"
)
# Said instead before December 2015 (HISTORY): the report is later than the order.
_BB_SILENT_ASSUMED_LATER = (
    "the record says nothing of BlackBerry answering an order of this country's law; this profile assumes it "
    "answers as its policy was reported for court orders in December 2015 (John Chen), after this date (the "
    "record has no earlier report of it): location, who contacted whom and certain metadata, never the "
    "correspondence"
)

# Canada: the record (Project Clemenza, 2010-2012, reported April 2016; R v. Mirarchi) has the police
# holding the consumer global key and decrypting about a million PIN messages themselves; it says
# nothing of BlackBerry answering a Part VI authorization, nor how the police came by the key.
_CLEMENZA_ASSUMED_TEXT = (
    "in Project Clemenza (2010-2012, {reported}; R v. Mirarchi) the police held the consumer BBM/PIN "
    "global key and decrypted about a million intercepted PIN messages themselves; the record does not say "
    "that BlackBerry answered a Part VI authorization, nor how the police came by the key. Here the provider's "
    "desk holds that key and opens what it intercepts under the authorization: the same key and the same "
    "arithmetic, not the record of who turned it"
)
_CLEMENZA_ASSUMED = _CLEMENZA_ASSUMED_TEXT.format(reported="reported April 2016")
# Said instead before April 2016 (HISTORY; the record gives the month: its first day): the report is later.
_CLEMENZA_REPORTED = date(2016, 4, 1)
_CLEMENZA_ASSUMED_LATER = _CLEMENZA_ASSUMED_TEXT.format(reported="reported in April 2016, after this date")

# The words of consumer BBM, which India's facility hands over (so no note of India's here: under
# India's orders they are produced, not withheld).
_BBM_GLOBAL_KEY = "although one global key, held by the provider, opens every consumer message"
_BBM_CONTENT = f"BlackBerry's policy as reported (John Chen, December 2015) never hands over the correspondence, {_BBM_GLOBAL_KEY}"
_BBM_CONTENT_LATER = (
    "BlackBerry's policy as reported in December 2015 (John Chen), after this date (the record has no earlier "
    f"report of it, and this profile follows it before then too), never hands over the correspondence, {_BBM_GLOBAL_KEY}"
)
# The record's word for BlackBerry's policy: reported (docs/record.md), not published.
_BB_POLICY_NAME = "its policy as reported (John Chen, December 2015)"
_BB_POLICY_NAME_LATER = (
    "its policy as reported in December 2015 (John Chen), after this date (that it was its policy on this date is the "
    "project's assumption)"
)
# Pakistan, 2015: "only policy protected them" (the record); before the report, said as assumed.
_BB_POLICY_LATER_KEEPS = "as reported in December 2015, after this date: that it was its policy on this date is the project's assumption"
_BB_POLICY_CIPHERTEXT = (
    "BlackBerry's policy as reported (December 2015) hands over location, who contacted whom and certain "
    "metadata, not the correspondence"
)

# The reported policy's words, under a court order: "location, which users contacted each other, and certain
# metadata" (the record: Pakistan, December 2015). The record does not say what "certain metadata" is: the records a
# profile hands a court order besides location and who contacted whom (the message log; its routing, in real time)
# are the project's reading of those words, said in every disclosure under one (Profile.readings), on every date.
_BB_POLICY_WORDS: Final = frozenset({"location", "message_log", "realtime_routing", "ciphertext", "content"})
_BB_READING_TEXT = (
    "BlackBerry's policy {reported} names, under a court order, location, who contacted whom and certain metadata, "
    "never the correspondence; the record does not say what that metadata is: that it covers the {records} this "
    "profile hands over under {order}, where its relay holds them, is the project's reading of those words"
)
_BB_REPORTED = "as reported (John Chen, December 2015)"
# Said instead before December 2015 (HISTORY): the report is later than the order.
_BB_REPORTED_LATER = (
    "as reported in December 2015 (John Chen), after this date (that it was its policy on this date is the project's "
    "assumption)"
)


def _bb_readings(
    discloses: Mapping[str, frozenset[str]], processes: tuple[str, ...], *, reported: str = _BB_REPORTED
) -> dict[str, str]:
    """The reading under each of ``processes`` whose answer (``discloses``) is BlackBerry's reported policy: the
    records it hands over beyond the policy's words (location, who contacted whom) are "certain metadata" by the
    project's reading, not the record's. A capability notice (it hands nothing over) has none."""
    vocabulary = list(LEGAL_CATEGORIES)
    readings = {}
    for p in processes:
        beyond = sorted(discloses.get(p, frozenset()) - _BB_POLICY_WORDS, key=vocabulary.index)
        if beyond and not INSTRUMENTS[p].builds:
            labels = [LEGAL_CATEGORIES[c].label for c in beyond]
            records = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
            order = INSTRUMENTS[p].a_name + (" order" if p == "pen_register" else "")  # its legal name
            readings[p] = _BB_READING_TEXT.format(reported=reported, records=records, order=order)
    return readings


# The orders whose answer is the reported policy (or, where the record is silent on the order, assumed to be:
# _BB_SILENT, and BES's Canadian authorization), each hands over "certain metadata" as the project reads it.
_BB_COURT_ORDERS: Final = ("court_order_2703d", "pen_register", *_BB_NOT_THE_CORRESPONDENCE, "pk_court_order")
_BBM_DISCLOSES: Final[Mapping[str, frozenset[str]]] = {
    **{p: ASKS[p] for p in _RELAY_ASKS},
    **{p: ASKS[p] - {"ciphertext", "content"} for p in (*_BB_NOT_THE_CORRESPONDENCE, *_BB_SILENT)},
    "subpoena": _BB_SUBPOENA,
    "pk_court_order": _BB_COURT_ORDER,
}
_BBM_READ: Final = (*_BB_COURT_ORDERS, *_BB_SILENT)

BBM_CONSUMER = Profile(
    name="bbm-consumer",
    title="BlackBerry Messenger / PIN (consumer)",
    policy=_policy(
        "bbm-consumer",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host"}),
            RecordKind.SEND: KindRule(frozenset({"time", "host", "account", "recipient_account", "size"})),
        },
    ),
    custody="provider",
    pen_register=True,
    sources=(
        "consumer PIN and BBM messages used one global key held by the provider; the RCMP held it from 2010 "
        "and decrypted about a million PIN messages (Project Clemenza, reported in April 2016; R v. Mirarchi)",
        "India 2012: an interception facility in Mumbai covers BBM and BIS e-mail, not BES",
        "BlackBerry's lawful-access policy as reported (Dec 2015): location, who contacted whom and certain metadata "
        "under a court order, not the correspondence",
    ),
    discloses=_BBM_DISCLOSES,
    responses=_BB_RESPONSES,
    assumed_answers=frozenset({"subpoena"}),
    assumptions={
        "subpoena": _BB_SUBPOENA_ASSUMED,
        **{p: _BB_SILENT_ASSUMED for p in _BB_SILENT},
        "pta_demand": "the PTA's 2015 demand named BlackBerry Enterprise Server traffic ('every BES e-mail and "
        "BES BBM message'), not consumer BBM, and no source says how BlackBerry would have answered one on "
        "consumer BBM; this profile assumes the same refusal",
        "ca_part_vi_authorization": _CLEMENZA_ASSUMED,
    },
    readings=_bb_readings(_BBM_DISCLOSES, _BBM_READ),
    policy_name=_BB_POLICY_NAME,
    notes={"content": _BBM_CONTENT, "ciphertext": _BB_POLICY_CIPHERTEXT},
)

# India's instruments: the per-order interceptions and the 2010 demand the Mumbai facility (2012) met.
_INDIA: Final = tuple(i.key for i in INSTRUMENTS.values() if i.jurisdiction == "in")
# What the record says of BES in India, and what it does not: the routing BlackBerry's relay could
# hand over to an Indian order is the project's assumption, said in every disclosure under one.
_BES_INDIA_ASSUMED_TEXT = (
    "the record says India's interception facility (Mumbai, 2012) covered consumer BBM and BIS e-mail, not "
    "BES, and that India accepted in 2013{when} that enterprise data must be obtained from the enterprise; it "
    "does not say whether BlackBerry handed over the routing of BES traffic (who wrote to whom, when, from "
    "which address) to an Indian order. This profile assumes it did, as its relay routes that traffic, and "
    "withholds the ciphertext"
)
# India's acceptance is dated by the year only: a disclosure dated in 2013 may precede it, one dated
# before 2013 does (HISTORY: said to be after its date).
_BES_INDIA_ASSUMED = _BES_INDIA_ASSUMED_TEXT.format(when=" (the record gives the year, not the day)")
_BES_INDIA_ASSUMED_LATER = _BES_INDIA_ASSUMED_TEXT.format(when=", after this date")

_BES_KEYS = (
    "the keys are held by the enterprise's own BES server, not by BlackBerry: the order has to be "
    "served on the enterprise (RIM, August 2010: 'no master key or back door')"
)
_BES_PTA_ACCEPTED = (
    "BlackBerry's position as the PTA accepted it on 2015-12-31: 'we cannot provide the content of our "
    "customers' BES traffic'"
)
# India's acceptance is dated by the year only: a disclosure dated in 2013 may precede it.
_BES_INDIA_ENTERPRISE = "India accepted in 2013 that enterprise data comes from the enterprise (the record gives the year, not the day)"
_BES_INDIA_ENTERPRISE_LATER = (
    "India accepted in 2013, after this date, that enterprise data comes from the enterprise"
)
_BES_INDIA_CIPHERTEXT = (
    "India's interception facility (Mumbai, 2012) covers consumer BBM and BIS e-mail, not BES: "
    + _BES_INDIA_ENTERPRISE
)
_BES_DISCLOSES: Final[Mapping[str, frozenset[str]]] = {
    **{p: ASKS[p] - {"content"} for p in _RELAY_ASKS},
    **{
        p: ASKS[p] - {"ciphertext", "content"}
        for p in (*_BB_NOT_THE_CORRESPONDENCE, *_BB_SILENT, "ca_part_vi_authorization")
    },
    # India's interception facility (2012) covers consumer BBM and BIS e-mail, not BES: India
    # accepted in 2013 that enterprise data comes from the enterprise
    **{p: ASKS[p] - {"ciphertext", "content"} for p in _INDIA},
    "subpoena": _BB_SUBPOENA,
    "pk_court_order": _BB_COURT_ORDER,
}
_BES_READ: Final = (*_BB_COURT_ORDERS, *_BB_SILENT, "ca_part_vi_authorization")
BES = Profile(
    name="bes",
    title="BlackBerry Enterprise Server (carrier relay)",
    policy=_policy(
        "bes",
        {
            RecordKind.REGISTRATION: _first({"time", "host"}),
            RecordKind.AUTHENTICATION: _latest({"time", "host"}),
            RecordKind.SEND: KindRule(frozenset({"time", "host", "account", "recipient_account", "size"})),
        },
    ),
    custody="enterprise",
    pen_register=True,
    sources=(
        "RIM, August 2010: BES keys are held by the customer's server; 'no master key or back door'",
        "Pakistan 2015: the PTA withdrew its demand on 2015-12-31, 'accepting BlackBerry's position that we "
        "cannot provide the content of our customers' BES traffic'",
        "BlackBerry's lawful-access policy as reported (Dec 2015): location, who contacted whom and certain "
        "metadata under a court order, not the correspondence",
        "India 2010-2013: an interception facility in Mumbai (2012) covers consumer BBM and BIS e-mail, not BES; "
        "India accepted in 2013 that enterprise data must be obtained from the enterprise",
    ),
    discloses=_BES_DISCLOSES,
    responses=_BB_RESPONSES,
    response_record={"pta_demand": _PTA_RECORD},
    assumed_answers=frozenset({"subpoena"}),
    assumptions={
        "subpoena": _BB_SUBPOENA_ASSUMED,
        **{p: _BES_INDIA_ASSUMED for p in _INDIA},
        **{p: _BB_SILENT_ASSUMED for p in (*_BB_SILENT, "ca_part_vi_authorization")},
    },
    readings=_bb_readings(_BES_DISCLOSES, _BES_READ),
    policy_name=_BB_POLICY_NAME,
    notes={"content": _BES_KEYS, "ciphertext": _BB_POLICY_CIPHERTEXT},
    # Each country's record in its own disclosures: the PTA's statement in Pakistan's, India's facility
    # and its acceptance in India's (where BlackBerry's reported policy of December 2015 is not the record
    # the profile follows: _BES_INDIA_ASSUMED).
    jurisdiction_notes={
        "pk": {"content": f"{_BES_KEYS}; {_BES_PTA_ACCEPTED}"},
        "in": {"content": f"{_BES_KEYS}; {_BES_INDIA_ENTERPRISE}", "ciphertext": _BES_INDIA_CIPHERTEXT},
    },
)

KEEP_EVERYTHING_PROFILE = Profile(
    name="keep-everything",
    title="a relay that records everything it can",
    policy=KEEP_EVERYTHING,
    custody="devices",
    keep_contacts=True,
    keep_blocks=True,
    pen_register=True,
    device_facts=DEVICE_FACTS,
    sources=("not a real provider: the upper bound of what an end-to-end relay could hand over",),
    discloses=dict(_RELAY_ASKS),
)

PROFILES: Final[Mapping[str, Profile]] = {
    p.name: p
    for p in (
        SIGNAL,
        WHATSAPP,
        IMESSAGE,
        THREEMA,
        WICKR,
        VIBER,
        TELEGRAM_CLOUD,
        LINE,
        LINE_LETTER_SEALING_OFF,
        WECHAT,
        WIRE,
        BBM_CONSUMER,
        BES,
        KEEP_EVERYTHING_PROFILE,
    )
}
REAL_PROFILES: Final = tuple(name for name in PROFILES if name != "keep-everything")


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown relay profile {name!r}; known: {', '.join(PROFILES)}") from None


# --- history: a provider as it was on a date ------------------------------------------------------


# The ways the texts say that the record gives no day of a change ("the record gives the year", "the date is its
# first day", "dated here from its first day", "not the day", "the day not on the record", "by the year only"): a
# change naming its year or month (``Change.named``) says it by ``Change.when`` and keeps its own word in
# ``Change.gives``, never in ``Change.what``, said after ``when`` (it would be said twice).
_NO_DAY_SAID = re.compile(
    r"\bthe record gives (?:the (?:year|month|years)\b|no (?:day|month)\b)|\b(?:the|its) first day is the date"
    r"|\bthe date is (?:its|the) first day|\bthe first of it is the date|\bdated (?:here )?from (?:its|the) first day"
    r"|\bnot the day\b|\bthe day (?:is )?not on the record|\b(?:the )?(?:year|month) only\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Change:
    """One dated change to a provider's design or policy.

    ``before`` holds the profile's fields as they were until ``effective`` (the profile in
    :data:`PROFILES` is the provider as it is today, after every change). A callable in it rewrites
    the field instead, once every other change not yet in effect is undone: a record dated
    ``effective`` that the profile's texts cite (the FBI chart) is said, before it, to be later.

    ``policy``: the change is to what the provider hands over (only :data:`POLICY_FIELDS`), not to
    what its relay or its clients do. A design change holds for a whole run from the run's start
    (the phones of a run set in October 2018 do not start sealing mid-run); a policy change reaches
    every order by the day it is served, so an order served after it in a run that began before it
    gets the new policy (Telegram's of September 2024)."""

    effective: date
    what: str
    source: str
    before: Mapping[str, Any]
    policy: bool = False
    # the change is to the record of the provider (a document dated ``effective``), not to its policy: an
    # order served after it in a run set before it says "the record", not "its policy", changed
    record: bool = False
    # the year ("2021") or the month ("April 2016") the record gives for the change, where it gives no day:
    # ``effective`` is that year's (month's) first day, the project's date, not the day anything changed
    named: str | None = None
    # the change's own word that the record gives no day, where ``named`` is set ("the record gives the year: the
    # date is its first day"): kept apart from ``what``, since a disclosure says it by ``when`` (``what`` after it
    # would say it twice)
    gives: str | None = None
    # the fields as said on a day inside ``named`` (its year, or its month), after ``effective``: the record does not
    # say whether the change came before that day, so what follows it there is the project's assumption (Signal's
    # 2021 response to a search warrant, answered from on 2021-01-07). A callable rewrites the field as it is then
    # instead (``_within_named``: each text naming the year or the month says so, John Chen's report of December 2015)
    within: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.named is None) != (self.gives is None):
            raise ValueError(
                f"change of {self.effective:%Y-%m-%d} ({self.what[:60]!r}…): named and gives go together, the year "
                "(month) the record gives and the change's word that it gives no day"
            )
        if self.within and (self.named is None or _RANGE_CITED.fullmatch(self.named)):
            raise ValueError(
                f"change of {self.effective:%Y-%m-%d} ({self.what[:60]!r}…): within is said inside the year (month) "
                "named, and needs one"
            )
        if self.named is not None and (said := _NO_DAY_SAID.search(self.what)) is not None:
            raise ValueError(
                f"change of {self.effective:%Y-%m-%d} ({self.what[:60]!r}…): its word that the record gives no day "
                f"({said.group()!r}) belongs in gives, not in what, which a disclosure says after when (said there "
                "already)"
            )
        unit = re.search(r"\bthe record gives the (year|month)\b", self.gives or "")
        if unit is not None and self.named is not None:
            named = "month" if _MONTH_CITED.fullmatch(self.named) else "year"
            if unit.group(1) != named:
                raise ValueError(
                    f"change of {self.effective:%Y-%m-%d} ({self.what[:60]!r}…): gives says the record gives the "
                    f"{unit.group(1)}, but named, {self.named!r}, is a {named}"
                )

    def inside(self, day: date) -> bool:
        """Whether ``day`` is after ``effective`` but inside the year (the month) ``named``, which the record gives
        in place of a day: whether the change came before ``day`` is not on the record."""
        if self.named is None or day < self.effective:
            return False
        same_year = day.year == self.effective.year
        return same_year and (not _MONTH_CITED.fullmatch(self.named) or day.month == self.effective.month)

    def when(self) -> str:
        """When the change took effect, as a disclosure says it: "on 2021-01-07"; or, where the record gives only
        the year (the month), "in 2021 (the record gives the year, not the day: dated here from its first day,
        2021-01-01)"."""
        if self.named is None:
            return f"on {self.effective:%Y-%m-%d}"
        if _RANGE_CITED.fullmatch(self.named):
            return (
                f"in {self.effective.year} (the record gives the years {self.named}, not the day: dated here from "
                f"the first day of the first, {self.effective:%Y-%m-%d})"
            )
        unit = "month" if _MONTH_CITED.fullmatch(self.named) else "year"
        return (
            f"in {self.named} (the record gives the {unit}, not the day: dated here from its first day, "
            f"{self.effective:%Y-%m-%d})"
        )


# What a provider's compliance desk does with what it holds: a policy change may change only these.
POLICY_FIELDS: Final[tuple[str, ...]] = (
    "discloses",
    "responses",
    "response_record",
    "assumptions",
    "readings",
    "assumed_answers",
    "lookback",
    "lookup_log_hosts",
    "notes",
    "jurisdiction_notes",
    "published_policy",
    "policy_record",
    "realtime_record",
    "policy_name",
    "policy_later",
    "realtime_inferred",
    "retention_notes",
)


# The record gives the month, October 2018; the day is Signal's blog post's (the project's citation).
_SEALED_SENDER_DAY = (
    "the record gives the month, October 2018, and the day, that of Signal's post (signal.org/blog/sealed-sender, "
    "2018-10-29), is the project's citation"
)
_SIGNAL_2016_ROUTING = (
    f"before sealed sender (2018-10-29, after this date: {_SEALED_SENDER_DAY}) the server saw the sender and the recipient of every message as "
    "it routed it, and kept no record of either (signal.org/bigbrother, 2016 response; ACLU, 2016-10-04)"
)
# Signal's groups v2 (the Signal Private Group System) was announced on 2019-12-09 (signal.org/blog/signal-private-group-
# system, a technology preview: the project's citation, not on the record, which gives no date for groups v2 reaching
# users, which may have come later). Before it a run's groups are as the record of 2016 has them: the server keeps
# nothing about them, the clients fan each group message out themselves.
_SIGNAL_GROUPS_V2_DAY = date(2019, 12, 9)
_SIGNAL_GROUPS_V2_SOURCE = (
    "signal.org/blog/signal-private-group-system, 2019-12-09: the announcement's day, a technology preview (the "
    "project's citation, not on the record; the record gives no date for groups v2 reaching users, which may have "
    "come later)"
)
# From groups v2's announcement to 2021 the design's source says what it cites is later: the paper (CCS 2020; the
# conference opened 2020-11-09, the project's citation) and Signal's 2021 response on groups.
_SIGNAL_GROUPS_V2_DESIGN = (
    "the server stores each group's state encrypted and cannot read its members; group messages are fanned out by "
    "the sender's client"
)
_SIGNAL_GROUPS_CCS_DAY = date(2020, 11, 9)
_SIGNAL_GROUPS_BEFORE_2021 = (
    "Signal's groups v2 (Chase, Perrin and Zaverucha, 'The Signal Private Group System', CCS 2020; "
    f"signal.org/blog/signal-private-group-system, 2019-12-09): {_SIGNAL_GROUPS_V2_DESIGN}; "
    f"{_SIGNAL_GROUPS_RECORD_2016}; its response of 2021 (Santa Clara County search warrant) is after this date"
)
_SIGNAL_GROUPS_BEFORE_CCS = (
    f"Signal's groups v2 (signal.org/blog/signal-private-group-system, 2019-12-09): {_SIGNAL_GROUPS_V2_DESIGN}; "
    "the paper describing it (Chase, Perrin and Zaverucha, 'The Signal Private Group System', CCS 2020, the "
    "conference opening 2020-11-09: the project's citation) is after this date; "
    f"{_SIGNAL_GROUPS_RECORD_2016}; its response of 2021 (Santa Clara County search warrant) is after this date"
)
_SIGNAL_GROUPS_V1 = (
    "Signal's groups before groups v2 (announced 2019-12-09, after this date: the project's citation, not on the "
    "record): the server keeps no group state and no member list, and the sender's client fans each group message "
    "out to the members it knows (that this is how Signal's groups then worked is the project's reading of the "
    f"record); the record: {_SIGNAL_GROUPS_RECORD_2016}"
)
# Signal's answer to a search warrant is on record from 2021 (the Santa Clara County warrant, signal.org/bigbrother;
# the record gives the year: the first of it is the date here). Before it no record of Signal's speaks of a warrant
# (its published response of 2016 is to a grand-jury subpoena): the profile answers one the same, and says so.
_SIGNAL_WARRANT_REPORTED = date(2021, 1, 1)
_SIGNAL_WARRANT_LATER = (
    "the record of Signal answering a search warrant is its response to a Santa Clara County search warrant in 2021 "
    "(signal.org/bigbrother: the account's creation date and time and its last connection date), after this date "
    "(the record gives the year: the date is its first day); no earlier record of Signal's speaks of a warrant. "
    "This profile assumes a search warrant got then what that one got"
)
# From its first day to the year's end, the record does not say whether Signal's 2021 response came before a disclosure's
# day: answering a search warrant as that one was is the project's assumption then (the record gives only the year).
_SIGNAL_WARRANT_THIS_YEAR = (
    "the record of Signal answering a search warrant is its response to a Santa Clara County search warrant of 2021 "
    "(the record gives the year, not the month: whether it came before this date is not on the record; "
    "signal.org/bigbrother: the account's creation date and time and its last connection date). That a search "
    "warrant got on this date what that one got, answering from a record of this year, is the project's assumption"
)
# Signal's notes before its 2021 record: what it says of groups is the record of 2016 (its 2021 words are later).
_SIGNAL_NOTES_BEFORE_2021 = {
    **SIGNAL.notes,
    "group_membership": f"{_SIGNAL_GROUPS_RECORD_2016}; its response of 2021 (Santa Clara County search warrant) is after this "
    "date",
}
_SIGNAL_2703D_LATER = _chart_dash_assumed(
    "Signal",
    "account creation date/time; last connection date",
    own=", and Signal's published responses (signal.org/bigbrother) are to subpoenas, and in 2021, after this "
    "date, a search warrant, not to a 2703(d) order",
    processes=("court_order_2703d",),
)

# The record: "WhatsApp multi-device (2021)"; the day is the post's on the beta's start (the project's citation).
_MULTI_DEVICE_DAY = (
    "the record gives the year, 2021, and the day, 2021-07-14, that of engineering.fb.com's post on the beta's "
    "start, is the project's citation"
)

_TELEGRAM_TERROR_ONLY = (
    "before September 2024 Telegram's policy handed over IP address and phone number only for confirmed "
    "terror suspects (telegram.org/privacy §8.3, 2018; the FBI chart: 'only for confirmed terror "
    "investigations'); the simulated orders are ordinary criminal process"
)

# Telegram before its 2018 privacy policy: no policy of handing anything over at all.
_TELEGRAM_ZERO_BYTES = (
    "the policy that followed those words in August 2018, after this date (§8.3), allowed IP address and phone number to a court order confirming a terror suspect. Neither those words nor the "
    "policy's day (2018-08-28, after this date, as reported) is on the record the profiles are held to (docs/record.md), which has "
    "Telegram's policy from 2018 and nothing before it: both are the project's citation"
)
# What Telegram kept back before its 2018 policy is said as those words, not as "its published policy": no policy of
# Telegram's before 2018 is on the record (docs/record.md). Said where a category it holds is not handed over
# (Profile.policy_record), and where its servers could collect in real time and collect nothing (realtime_record).
_TELEGRAM_ZERO_BYTES_WORDS = (
    "its words before its privacy policy of August 2018 (after this date), that it had disclosed '0 bytes of user "
    "data to third parties, including governments' (telegram.org/privacy before August 2018; the project's "
    "citation, not on the record: docs/record.md)"
)

# BlackBerry's lawful-access policy is on record from December 2015 (John Chen; the record gives the
# month: the first of it is the date here). The profiles apply it earlier too, having no other record
# of BlackBerry under a court order; a disclosure dated before says the record is later.
_BB_POLICY_REPORTED = date(2015, 12, 1)
_BB_POLICY_LATER = (
    "BlackBerry's policy as reported in December 2015, after this date (the record has no earlier report of it, "
    "and this profile follows it before then too), hands over location, who contacted whom and certain "
    "metadata, not the correspondence"
)
_BB_POLICY_CHANGE = (
    "the record of BlackBerry's lawful-access policy: under a court order location, who contacted whom and "
    "certain metadata, never the correspondence (reported December 2015). Before it the profile answers the same, and its notes say the record is later"
)
_BB_POLICY_SOURCE = "John Chen, BlackBerry, December 2015, as reported (the seed article)"

# The assumptions citing John Chen's report, as said before it (December 2015).
_BES_ASSUMPTIONS_LATER = {
    **BES.assumptions,
    "subpoena": _BB_SUBPOENA_ASSUMED_LATER,
    **{p: _BB_SILENT_ASSUMED_LATER for p in (*_BB_SILENT, "ca_part_vi_authorization")},
}
_BES_INDIA_NOTES_LATER = {
    "content": f"{_BES_KEYS}; {_BES_INDIA_ENTERPRISE_LATER}",
    "ciphertext": "India's interception facility (Mumbai, 2012) covers consumer BBM and BIS e-mail, not BES: "
    + _BES_INDIA_ENTERPRISE_LATER,
}

# The FBI chart's date (dated 2021-01-07, capabilities as of November 2020). A profile's texts cite it as they are
# today; a disclosure dated before it says, in each text citing it, that the chart is later than its date, and that
# what it shows held then is the project's assumption (the profile follows the chart before its date too, where no
# earlier record is followed instead: iMessage's pen register, HISTORY["imessage"], whose text says so itself).
_FBI_CHART_DATE: Final = date(2021, 1, 7)
_CHART_CITED = re.compile(r"\bchart\b")
_CHART_SAID_LATER = "2021-01-07, after this date"
_CHART_LATER = (
    "the FBI chart cited here is dated 2021-01-07, after this date (capabilities as of November 2020): that what it "
    "shows held on this date is the project's assumption"
)
# The fields whose texts may cite a dated source, the chart or another (Profile: the desk says them in a disclosure).
# Each is one of POLICY_FIELDS: a change to the record (``Change.record``) rewrites them as of the day an order is served.
_TEXT_FIELDS: Final = (
    "notes",
    "jurisdiction_notes",
    "assumptions",
    "readings",
    "policy_record",
    "realtime_record",
    "realtime_inferred",
    "response_record",
    "retention_notes",
    "policy_name",
    "policy_later",
)
# The design's texts (Profile: its sources for the identity model and the groups, said in the ghost's reports), as
# of a run's date (design changes, HISTORY's own: WhatsApp's multi-device, Signal's groups v2): a day they cite, a year
# they name alone, or a month with its year, after the run's date, they say is later, by a design change of its own
# (a run set before Wire's key-verification post, 2017-01-16, says so).
_DESIGN_TEXT_FIELDS: Final = ("identity_model_source", "group_source")
# The fields of Profile holding text that are not dated by the rewrite of a dated source (tests/sims/test_record_dates.py
# holds every text field of Profile to be in _TEXT_FIELDS, _DESIGN_TEXT_FIELDS or here): names and keys, which cite
# nothing; the sources (the profile's bibliography, listed in every disclosure under "Sources" and dated there by
# ``sources_on``, not by a change to the record); and the first days (``since``, ``defences_since``), which refuse a
# run or a defence set before them instead.
_UNDATED_TEXT_FIELDS: Final = (
    "name",
    "title",
    "backup",
    "discloses",
    "device_facts",
    "assumed_answers",
    "responses",
    "lookup_log_hosts",
    "lookback",
    "sources",
    "defences_since",
    "since",
)


def _chart_later(value: Any) -> Any:
    """``value`` (a text, or texts by key) as said before the FBI chart's date: each text citing the chart says
    the chart is later (``_CHART_LATER``), once, unless it says so already."""
    if isinstance(value, Mapping):
        return {k: _chart_later(v) for k, v in value.items()}
    if isinstance(value, str) and _CHART_CITED.search(value) and _CHART_SAID_LATER not in value:
        return f"{value}; {_CHART_LATER}"
    return value


def _cites_chart(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_cites_chart(v) for v in value.values())
    return isinstance(value, str) and bool(_CHART_CITED.search(value))


def _chart_dated() -> Change:
    return Change(
        _FBI_CHART_DATE,
        "the FBI chart is dated this day (capabilities as of November 2020); before it, each text of this profile "
        "citing the chart says the chart is later than the disclosure's date, and that what it shows held then is "
        "the project's assumption",
        _FBI_CHART,
        {f: _chart_later for f in _TEXT_FIELDS},
        policy=True,
        record=True,
    )


# A source (or an event of the record) a text cites by its day. Before that day the text says so beside the day
# ("2016-10-04, after this date"), once: a disclosure cites only what is on the record by its date, or says it is later.
_DAY_CITED = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_SAID_LATER = ", after this date"


def _days_cited(value: Any) -> set[date]:
    if isinstance(value, Mapping):
        return {d for v in value.values() for d in _days_cited(v)}
    if not isinstance(value, str):
        return set()
    return {date.fromisoformat(m.group()) for m in _DAY_CITED.finditer(value)}


def _day_later(day: date) -> Any:
    """The rewrite of texts as said before ``day``: each citing ``day`` says, beside its first citation of it, that it
    is after this date, unless it says so already (``_chart_later``, for a source cited by its day)."""
    cited = f"{day:%Y-%m-%d}"

    def rewrite(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, str) and cited in value and f"{cited}{_SAID_LATER}" not in value:
            return value.replace(cited, f"{cited}{_SAID_LATER}", 1)
        return value

    return rewrite


def _citation_of(day: date, values: list[Any]) -> str:
    """The first citation of ``day`` in ``values`` (texts, or texts by key): from the parenthesis it is in to it."""
    cited = f"{day:%Y-%m-%d}"
    for value in values:
        if isinstance(value, Mapping):
            if found := _citation_of(day, list(value.values())):
                return found
        elif isinstance(value, str) and (at := value.find(cited)) >= 0:
            return value[value.rfind("(", 0, at) + 1 : at + len(cited)]
    return ""


def _day_dated(day: date, values: list[Any], design: bool = False) -> Change:
    if design:
        return Change(
            day,
            "a source this profile's design texts cite by its day is dated this day; before it, a run set before it "
            "says, in each design text citing it, that it is after the run's date",
            _citation_of(day, values),
            {f: _day_later(day) for f in _DESIGN_TEXT_FIELDS},
        )
    return Change(
        day,
        "a source this profile's texts cite by its day is dated this day; before it, each text citing it says it is "
        "after the disclosure's date",
        _citation_of(day, values),
        {f: _day_later(day) for f in _TEXT_FIELDS},
        policy=True,
        record=True,
    )


# A year a source names alone (not as part of a day: "2021", "April 2016"); one after a disclosure's year is said to be
# later at the source's end. A month a source names with its year ("April 2016", "Dec 2015") is a year named too; one
# of the disclosure's own year, after its day's month, is said to be later by itself ("April 2016 is after this date",
# on 2016-03-01): the record gives the month, so the month's first day is the date (as HISTORY's). A year joined to
# another by a hyphen or an en dash ("2010-2012", "2010–2012", as the record writes its ranges) is a range's, not alone.
_YEAR_CITED = re.compile(r"(?<![\d\-\u2013])(?:19|20)\d{2}(?![\d\-\u2013])")
# A range of years a text names ("Project Clemenza (2010-2012)", "India 2010-2013", or with an en dash, "2010–2012"):
# dated by its first year, as a year named alone (a run set before it says the range is later); a run set inside it
# says so (``_this_year``).
_RANGE_CITED = re.compile(r"(?<![\d\-\u2013])((?:19|20)\d{2})[\-\u2013]((?:19|20)\d{2})(?![\d\-\u2013])")
_MONTH_NAMES: Final = (
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
)
_MONTH_CITED = re.compile(
    r"\b(" + "|".join(f"{m[:3]}(?:{m[3:]})?" for m in _MONTH_NAMES) + r")\.? ((?:19|20)\d{2})(?![\d\-\u2013])"
)


def _month_name(word: str) -> str:
    """The month ``word`` names in full or by its first three letters."""
    (name,) = [m for m in _MONTH_NAMES if m.startswith(word[:3])]
    return name


# A year a text names alone, or a month it names with its year ("in 2018 a federal court", "before September 2024"):
# before its first day each text naming it says so at its end, as a source does (``_years_later``): "(2018 is after
# this date)", before the FBI chart's note where it has one. A month is not said where its year is, nor a year (a month)
# where the text says so itself ("2018, after this date", "December 2015, after this date"), or says a day of that year
# is later ("2018-10-29, after this date"). One change to the record per year or month named (HISTORY).
# Not a citation: the FBI chart's year ("the FBI chart (2021)") and its "capabilities as of November 2020", which the
# chart's own note says with its date (``_chart_later``), and an instrument's own name ("a 2010 access demand": the
# run's instrument, refused before its day, relay/legal.py).
_CHART_YEAR = re.compile(
    rf"\bchart \({_FBI_CHART_DATE.year}\)|\bcapabilities as of November {_FBI_CHART_DATE.year - 1}\b|"
    + "|".join(re.escape(i.name) for i in INSTRUMENTS.values() if _YEAR_CITED.search(i.name))
)
_LATER_SAID = re.compile(r" \(([^()]*) (?:is|are) after this date\)$")


def _named_first(said: str) -> date:
    """The first day of ``said``, a year ("2018") or a month with its year ("August 2018", "Dec 2015")."""
    if (m := _MONTH_CITED.fullmatch(said)) is not None:
        return date(int(m.group(2)), _MONTH_NAMES.index(_month_name(m.group(1))) + 1, 1)
    if (r := _RANGE_CITED.fullmatch(said)) is not None:
        return date(int(r.group(1)), 1, 1)
    return date(int(said), 1, 1)


def _undated(text: str) -> str:
    """``text`` without its days (``_DAY_CITED``) and what names a year without citing it (``_CHART_YEAR``)."""
    return _CHART_YEAR.sub("", _DAY_CITED.sub("", text))


def _named_alone(value: Any) -> set[str]:
    """The years ``value`` (a text, or texts by key) names alone, and the months it names with their years."""
    if isinstance(value, Mapping):
        return {n for v in value.values() for n in _named_alone(v)}
    if not isinstance(value, str):
        return set()
    undated = _undated(value)
    return (
        set(_YEAR_CITED.findall(undated))
        | {m.group() for m in _MONTH_CITED.finditer(undated)}
        | {r.group() for r in _RANGE_CITED.finditer(undated)}
    )


def _is_named(said: str) -> bool:
    return bool(_YEAR_CITED.fullmatch(said) or _MONTH_CITED.fullmatch(said) or _RANGE_CITED.fullmatch(said))


# A year a text names alone in the disclosure's own year (in a design text: the run's), or a range of years the
# disclosure's year is in: the record gives no month, so whether it came before the disclosure's day is not known
# (India's acceptance "in 2013" in a run of January 2013). Said at the text's end, before what it says is later and the
# FBI chart's note: "(2013: this year, the month not on the record)"; a range "(2010-2012: this year is its first, the
# month not on the record)", "(… its last …)", or "(2010-2012: this date is within it)". Not a year the text names a
# month or a day of, nor one it says is later itself.
_THIS_YEAR_MONTH = "the month not on the record"


def _this_year(value: Any, on: date) -> Any:
    """``value`` (a text, or texts by key) as said on ``on``: its years of ``on``'s year, and its ranges ``on`` is
    in, said as such at its end (above)."""
    if isinstance(value, Mapping):
        return {k: _this_year(v, on) for k, v in value.items()}
    if not isinstance(value, str) or f"{_THIS_YEAR_MONTH})" in value or "this date is within it)" in value:
        return value
    chart = f"; {_CHART_LATER}"
    head, tail = (value[: -len(chart)], chart) if value.endswith(chart) else (value, "")
    group = _LATER_SAID.search(head)
    body, later = (head[: group.start()], head[group.start() :]) if group else (head, "")
    undated = _undated(body)
    ranges = [(r.group(), int(r.group(1)), int(r.group(2))) for r in _RANGE_CITED.finditer(undated)]
    alone = _MONTH_CITED.sub("", _RANGE_CITED.sub("", undated))
    year = f"{on.year}"
    said = []
    for named, first, last in sorted(set(ranges), key=lambda r: r[1]):
        if first == on.year:
            said.append(f"{named}: this year is its first, {_THIS_YEAR_MONTH}")
        elif last == on.year:
            said.append(f"{named}: this year is its last, {_THIS_YEAR_MONTH}")
        elif first < on.year < last:
            said.append(f"{named}: this date is within it")
    if (
        year in _YEAR_CITED.findall(alone)
        and not re.search(rf"\b{year}\b[^()]*,? (?:is )?after this date", body)
        # "India accepted in 2013 that … (the record gives the year, not the day)": said already
        and not re.search(rf"\b{year}\b[^()]*\(the record gives the year", body)
    ):
        said.append(f"{year}: this year, {_THIS_YEAR_MONTH}")
    if not said:
        return value
    return f"{body} ({'; '.join(said)}){later}{tail}"


def _named_later(said: str) -> Any:
    """The rewrite of texts as said before ``said`` (a year, or a month with its year) begins: each naming it says at
    its end that it is after this date, unless it says so already (``_day_later``, for a day)."""
    year = f"{_named_first(said).year}"
    chart = f"; {_CHART_LATER}"
    # "2018, after this date", "2018-10-29, after this date", "August 2018 (after this date)", "its response of 2021
    # (Santa Clara County search warrant) is after this date"
    said_itself = re.compile(
        rf"\b{year}(?:-\d\d-\d\d)?(?: \([^()]*\))?,? (?:is )?after this date|\b{year} \(after this date"
        # "(…, CCS 2020, the conference opening 2020-11-09: the project's citation) is after this date"
        rf"|\b{year}\b[^()]*\) (?:is|are) after this date"
    )

    def rewrite(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: rewrite(v) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        head, tail = (value[: -len(chart)], chart) if value.endswith(chart) else (value, "")
        group = _LATER_SAID.search(head)
        named = [n.strip() for n in group.group(1).split(",")] if group else []
        if group is None or not all(map(_is_named, named)):
            body, named = head, []
        else:
            body = head[: group.start()]
        if said not in _named_alone(body) or said_itself.search(body) or year in named or said in named:
            return value
        if said == year:  # the year says its months
            named = [n for n in named if _named_first(n).year != int(year)]
        named = sorted({*named, said}, key=_named_first)
        return f"{body} ({', '.join(named)} {'is' if len(named) == 1 else 'are'} after this date){tail}"

    return rewrite


def _within_named(said: str, whether: str) -> dict[str, Any]:
    """``Change.within`` for a change to the record that the record dates by ``said`` alone, a year ("2013") or a month
    with its year ("December 2015"): on a day inside it, after its first day, each text naming it says at its end that
    the day is not on the record, so that ``whether`` (what came, cited by its source, and what rests on it) is not
    known: "(December 2015: this month, the day not on the record: whether John Chen's report … came before this date
    is not known, …)". A text that says the record gives the year (month) only says it there instead, once: "in 2013
    (the record gives the year, not the day: whether India's acceptance … came before this date is not known)"."""
    unit = "month" if _MONTH_CITED.fullmatch(said) else "year"
    marker = f" ({said}: this {unit}, the day not on the record: whether {whether})"
    gives = f"(the record gives the {unit}, not the day)"

    def rewrite(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: rewrite(v) for k, v in value.items()}
        if not isinstance(value, str) or said not in _named_alone(value) or f"whether {whether}" in value:
            return value
        if gives in value:
            return value.replace(gives, f"{gives[:-1]}: whether {whether})")
        return value + marker

    return {f: rewrite for f in _TEXT_FIELDS}


def _naming_of(said: str, values: list[Any]) -> str:
    """The first text in ``values`` (texts, or texts by key) naming ``said`` alone, as the source of its change."""
    for value in values:
        if isinstance(value, Mapping):
            if found := _naming_of(said, list(value.values())):
                return found
        elif isinstance(value, str) and said in _named_alone(value):
            return value
    return ""


def _named_dated(said: str, values: list[Any], design: bool = False) -> Change:
    texts = "design texts" if design else "texts"
    kind = (
        f"month this profile's {texts} name with its year"
        if _MONTH_CITED.fullmatch(said)
        else f"range of years this profile's {texts} name, dated by its first year"
        if _RANGE_CITED.fullmatch(said)
        else f"year this profile's {texts} name alone"
    )
    return Change(
        _named_first(said),
        f"a {kind}, {said}, begins this day; before it, each text naming it says it is after the "
        f"{'run' if design else 'disclosure'}'s date",
        _naming_of(said, values),
        {f: _named_later(said) for f in (_DESIGN_TEXT_FIELDS if design else _TEXT_FIELDS)},
        policy=not design,
        record=not design,
        named=said,
        gives="the record gives no day: the first day is the date",
    )


def _dated_sources(name: str) -> list[Change]:
    """The changes to the record of profile ``name`` that its texts cite, today or as they were (``_HISTORY``):
    the FBI chart (cited by its name), each day cited (``_DAY_CITED``) but the chart's, and but a day of
    ``_HISTORY``'s own (whose texts before it say it is later themselves), and each year named alone, or month
    named with its year, that some text does not say is later itself (``_named_later``), but one whose first day is
    a day of ``_HISTORY``'s own. The same for the design's texts (``_DESIGN_TEXT_FIELDS``), by design changes: a
    run set before a day they cite says it is later, from the run's start (Wire's key-verification post)."""
    return [*_dated_in(name, design=False), *_dated_in(name, design=True)]


def _dated_in(name: str, design: bool) -> list[Change]:
    own = _HISTORY.get(name, ())
    fields = _DESIGN_TEXT_FIELDS if design else _TEXT_FIELDS
    values = [getattr(PROFILES[name], f) for f in fields]
    values += [c.before[f] for c in own for f in fields if f in c.before and not callable(c.before[f])]
    days = set().union(*map(_days_cited, values)) - {c.effective for c in own} - {_FBI_CHART_DATE}
    named = {
        n
        for v in values
        for n in _named_alone(v)
        if _named_first(n) not in {c.effective for c in own}
        # a year before the provider existed dates nothing
        and PROFILES[name].not_yet(_named_first(n) - timedelta(days=1)) is None
        and any(_named_later(n)(v) != v for v in values)
    }
    return [
        *([_chart_dated()] if not design and any(map(_cites_chart, values)) else []),
        *(_day_dated(d, values, design) for d in days),
        *(_named_dated(n, values, design) for n in sorted(named, key=_named_first)),
    ]


# Inside December 2015, after its first day (HISTORY's date for John Chen's report), the record does not say whether
# the report came before a disclosure's day: that the policy held then is the project's assumption, as before it.
_BB_POLICY_WITHIN: Final = _within_named(
    "December 2015",
    "John Chen's report (the seed article) came before this date is not known, and that it was its policy on this "
    "date is the project's assumption",
)

_HISTORY: Final[Mapping[str, tuple[Change, ...]]] = {
    "bes": (
        Change(
            date(2013, 1, 1),
            "the record of India's acceptance (in 2013) that enterprise data comes from the enterprise; before "
            "this date India's disclosures say it came after theirs",
            "the record of BlackBerry in India, 2010-2013",
            {
                "assumptions": {
                    **_BES_ASSUMPTIONS_LATER,
                    **{p: _BES_INDIA_ASSUMED_LATER for p in _INDIA},
                },
                "jurisdiction_notes": {"pk": {"content": _BES_KEYS}, "in": _BES_INDIA_NOTES_LATER},
            },
            policy=True,
            record=True,
            named="2013",
            gives="the record gives the year: the date is its first day",
            within=_within_named(
                "2013",
                "India's acceptance (the record of BlackBerry in India) came before this date is not known",
            ),
        ),
        Change(
            date(2015, 11, 30),
            "the record of BlackBerry's answer to the PTA's demand: on this date it said it would leave "
            "Pakistan rather than comply; before it, a disclosure says that answer came after its date",
            "BlackBerry, 2015-11-30",
            {"response_record": {**BES.response_record, "pta_demand": _PTA_RECORD_LATER}},
            policy=True,
            record=True,
        ),
        Change(
            _BB_POLICY_REPORTED,
            _BB_POLICY_CHANGE,
            _BB_POLICY_SOURCE,
            {
                "policy_name": _BB_POLICY_NAME_LATER,
                "readings": _bb_readings(_BES_DISCLOSES, _BES_READ, reported=_BB_REPORTED_LATER),
                "notes": {**BES.notes, "ciphertext": _BB_POLICY_LATER},
                "jurisdiction_notes": {**BES.jurisdiction_notes, "pk": {"content": _BES_KEYS}},
                "assumptions": _BES_ASSUMPTIONS_LATER,
            },
            policy=True,
            record=True,
            named="December 2015",
            gives="the record gives the month, so the date is its first day",
            within=_BB_POLICY_WITHIN,
        ),
        Change(
            date(2015, 12, 31),
            "the record of BlackBerry's position as the PTA accepted it, withdrawing its demand: 'we cannot "
            "provide the content of our customers' BES traffic', said in Pakistan's disclosures from this date",
            "PTA statement, 2015-12-31",
            {
                "jurisdiction_notes": {**BES.jurisdiction_notes, "pk": {"content": _BES_KEYS}},
                "response_record": {**BES.response_record, "pta_demand": _PTA_RECORD_WITHDRAWAL_LATER},
            },
            policy=True,
            record=True,
        ),
    ),
    "whatsapp": (
        Change(
            date(2021, 7, 14),
            "multi-device: each companion device has its own identity key, signed by the primary device, and "
            "contacts check the signed device list; before it an account was its phone, with one identity key, "
            "and WhatsApp Web and Desktop ran through the phone",
            "engineering.fb.com, 'How WhatsApp enables multi-device capability', 2021-07-14 (the beta's start): "
            "the phone was 'the only device capable of end-to-end encrypting messages for another user'. "
            f"{_MULTI_DEVICE_DAY}",
            {
                "identity_model": "account",
                "identity_model_source": (
                    f"WhatsApp before multi-device (2021, after this date; {_MULTI_DEVICE_DAY}): an account was its phone, "
                    "the only device capable of end-to-end encrypting messages for another user, with one identity "
                    "key; a device the server added would need another key, a security code change at each "
                    "contact (modelled as Signal's one key per account)"
                ),
            },
        ),
    ),
    "bbm-consumer": (
        Change(
            _BB_POLICY_REPORTED,
            _BB_POLICY_CHANGE,
            _BB_POLICY_SOURCE,
            {
                "policy_name": _BB_POLICY_NAME_LATER,
                "policy_later": _BB_POLICY_LATER_KEEPS,
                "readings": _bb_readings(_BBM_DISCLOSES, _BBM_READ, reported=_BB_REPORTED_LATER),
                "notes": {
                    **BBM_CONSUMER.notes,
                    "content": _BBM_CONTENT_LATER,
                    "ciphertext": _BB_POLICY_LATER,
                },
                "assumptions": {
                    **BBM_CONSUMER.assumptions,
                    "subpoena": _BB_SUBPOENA_ASSUMED_LATER,
                    **{p: _BB_SILENT_ASSUMED_LATER for p in _BB_SILENT},
                    "ca_part_vi_authorization": _CLEMENZA_ASSUMED_LATER,
                },
            },
            policy=True,
            record=True,
            named="December 2015",
            gives="the record gives the month, so the date is its first day",
            within=_BB_POLICY_WITHIN,
        ),
        Change(
            _CLEMENZA_REPORTED,
            "the record of Project Clemenza (the RCMP held the consumer global key, 2010-2012), reported in April "
            "2016; before this date a disclosure under a Canadian Part VI authorization says the report came "
            "after its date",
            "reporting on Project Clemenza and R v. Mirarchi, April 2016",
            {
                "assumptions": {
                    **BBM_CONSUMER.assumptions,
                    "ca_part_vi_authorization": _CLEMENZA_ASSUMED_LATER,
                }
            },
            policy=True,
            record=True,
            named="April 2016",
            gives="the record gives the month: the date is its first day",
            within=_within_named(
                "April 2016",
                "the reporting on Project Clemenza (R v. Mirarchi) came before this date is not known",
            ),
        ),
    ),
    "imessage": (
        Change(
            date(2021, 1, 7),
            "the record from this date is the FBI chart, which lists no pen-register capability for iMessage "
            "(capabilities as of November 2020); before it, the record is Apple's FAQ, which shows look-up "
            "logs produced to pen register / trap-and-trace orders. The record gives no date at which Apple's "
            "practice changed, nor says whether it did: the date is the chart's",
            f"{_FBI_CHART}; {_IMESSAGE_FAQ}",
            {
                "discloses": {**IMESSAGE.discloses, "pen_register": frozenset({"lookup_log"})},
                "lookup_log_hosts": frozenset({"pen_register"}),
                "notes": {
                    **IMESSAGE.notes,
                    "realtime_routing": _IMESSAGE_FAQ_PEN,
                    "lookup_log": "Apple keeps look-ups about 30 days; to a pen register / trap-and-trace order "
                    "it produces those made from the order's service on, each with its date and time, the "
                    f"numbers looking up and looked up, and the client IP it came from ({_IMESSAGE_FAQ}); a "
                    "look-up is not a "
                    'message: Apple says it "doesn\'t prove that any communication actually took place" '
                    f"({_IMESSAGE_FAQ})",
                },
            },
            policy=True,
            record=True,
        ),
    ),
    "signal": (
        Change(
            date(2018, 10, 29),
            "sealed sender: the sender's identity travels inside the encrypted envelope; the server no longer "
            "sees who sent a message",
            _SEALED_SENDER_DAY,
            {
                "sealed_sender": False,
                "notes": {
                    **_SIGNAL_NOTES_BEFORE_2021,
                    "message_log": _SIGNAL_2016_ROUTING,
                    "message_counts": _SIGNAL_2016_ROUTING,
                },
            },
        ),
        Change(
            _SIGNAL_GROUPS_V2_DAY,
            "groups v2: the clients keep each group's state (its members) at the server, encrypted under a key only "
            "the members hold; before it the server kept no group state at all",
            _SIGNAL_GROUPS_V2_SOURCE,
            {"group_state_encrypted": False, "group_source": _SIGNAL_GROUPS_V1},
        ),
        Change(
            _SIGNAL_GROUPS_CCS_DAY,
            "groups v2's design source cites the paper describing it (CCS 2020), presented from this day; before it "
            "the design's source says the paper is after the run's date",
            "ACM CCS 2020, opening 2020-11-09 (the project's citation, not on the record)",
            {"group_source": _SIGNAL_GROUPS_BEFORE_CCS},
        ),
        Change(
            _SIGNAL_WARRANT_REPORTED,
            "groups v2's design source cites Signal's 2021 response on groups (Santa Clara County search warrant); "
            "before this date it says that response is after the run's date",
            "signal.org/bigbrother: Santa Clara County search warrant, 2021 (the record gives the year: the date is "
            "its first day)",
            {"group_source": _SIGNAL_GROUPS_BEFORE_2021},
            record=True,
            named="2021",
            gives="the record gives the year: the date is its first day",
        ),
        Change(
            _SIGNAL_WARRANT_REPORTED,
            "the record of Signal answering a search warrant: the Santa Clara County search warrant of 2021 got the "
            "account's creation date and time and its last connection date; before this date a search warrant's "
            "answer is the project's assumption, the same",
            "signal.org/bigbrother: Santa Clara County search warrant, 2021",
            {
                "assumptions": {
                    **SIGNAL.assumptions,
                    **_SIGNAL_2703D_LATER,
                    "search_warrant": _SIGNAL_WARRANT_LATER,
                },
                "assumed_answers": SIGNAL.assumed_answers | {"search_warrant"},
                "notes": _SIGNAL_NOTES_BEFORE_2021,
            },
            policy=True,
            record=True,
            named="2021",
            gives="the record gives the year: the date is its first day",
            within={
                "assumptions": {**SIGNAL.assumptions, "search_warrant": _SIGNAL_WARRANT_THIS_YEAR},
                "assumed_answers": SIGNAL.assumed_answers | {"search_warrant"},
            },
        ),
    ),
    "telegram-cloud": (
        Change(
            date(2018, 8, 28),
            "a privacy policy with §8.3: 'If Telegram receives a court order that confirms you're a terror suspect, "
            "we may disclose your IP address and phone number to the relevant authorities'; before it, Telegram "
            "said it shared no user data with anyone (the project's citation, not on the record: docs/record.md)",
            "telegram.org/privacy §8.3, the privacy policy Telegram wrote in 2018 for the GDPR (Pavel Durov to "
            "RFE/RL, as reported by Firstpost, 2018-08-30); the date is the day the change was announced and "
            "reported (TASS, 2018-08-28; Firstpost: 'On 28 August, Telegram announced a change in its privacy "
            "policy'); one report (hybridtechcar.com, 2018-08-28) says the section was on the site by 2018-08-15, "
            "so the day it took effect is not known exactly. The record (docs/record.md) gives the year, 2018, not "
            "the day, nor Telegram's words before it: the day and those words are the project's citation",
            {
                "discloses": {},
                "notes": {
                    **TELEGRAM_CLOUD.notes,
                    "subscriber_info": _TELEGRAM_ZERO_BYTES,
                    "ip_addresses": _TELEGRAM_ZERO_BYTES,
                    "realtime_routing": _TELEGRAM_ZERO_BYTES,
                },
                # 'we have disclosed 0 bytes of user data to third parties, including governments': its
                # word answers an order of any country's law, so nothing there is assumed, and hands nothing over
                # in real time either; what it keeps back is said as those words, which are not on the record
                "assumptions": {},
                "policy_record": _TELEGRAM_ZERO_BYTES_WORDS,
                "realtime_record": f"{_TELEGRAM_ZERO_BYTES_WORDS} say it hands nothing over",
            },
            policy=True,
        ),
        Change(
            date(2024, 9, 23),
            "IP address and phone number to a valid order from judicial authorities naming the user as a "
            "criminal suspect, not only in confirmed terror cases",
            "telegram.org/privacy §8.3, as updated September 2024 (the record gives the month, September 2024, and "
            "the day, that of Pavel Durov's post announcing it on his Telegram channel, t.me/durov, 2024-09-23, is the "
            "project's citation); the FBI chart's wording for the earlier policy",
            {
                "discloses": {},
                "notes": {
                    **TELEGRAM_CLOUD.notes,
                    "subscriber_info": _TELEGRAM_TERROR_ONLY,
                    "ip_addresses": _TELEGRAM_TERROR_ONLY,
                },
                # no order gets anything then: which order §8.3 names is not read
                "assumptions": _telegram_foreign_forward_nothing(),
            },
            policy=True,
        ),
    ),
}


def _dating(name: str) -> tuple[Change, ...]:
    """Profile ``name``'s changes (``_HISTORY``'s and ``_dated_sources``), but a year or a month named that dates
    nothing: each text naming it is, before it, one a change of ``_HISTORY``'s own says is later itself (BES's
    "December 2015" before John Chen's report)."""
    changes = tuple(sorted((*_HISTORY.get(name, ()), *_dated_sources(name)), key=lambda c: c.effective))
    profile = PROFILES[name]

    def dates(c: Change) -> bool:
        if c.what.startswith(("a year this", "a month this")):
            day = c.effective
            before = _as_of(profile, day - timedelta(days=1), day - timedelta(days=1), changes)
            return any(getattr(before, f) != getattr(_as_of(profile, day, day, changes), f) for f in c.before)
        return True

    return tuple(filter(dates, changes))


def _as_of(profile: Profile, day: date, on: date, changes: tuple[Change, ...]) -> Profile:
    """``profile`` on ``day`` (``on`` for its policy changes), ``changes`` not yet in effect undone (``profile_as_of``)."""
    rewrites: list[tuple[str, Any]] = []
    for change in reversed(changes):
        if change.effective > (on if change.policy else day):
            profile = replace(profile, **{k: v for k, v in change.before.items() if not callable(v)})
            rewrites += [(k, v) for k, v in change.before.items() if callable(v)]
        elif change.within and change.inside(on if change.policy else day):
            profile = replace(
                profile,
                **{k: v(getattr(profile, k)) if callable(v) else v for k, v in change.within.items()},
            )
    for (
        key,
        rewrite,
    ) in rewrites:  # once every field is as it was: a record dated later says so (_chart_later, _day_later)
        profile = replace(profile, **{key: rewrite(getattr(profile, key))})
    # a year of the disclosure's own (the run's, for the design), which the record gives no month of (_this_year)
    dated = {f: _this_year(getattr(profile, f), on) for f in _TEXT_FIELDS}
    dated |= {f: _this_year(getattr(profile, f), day) for f in _DESIGN_TEXT_FIELDS}
    return replace(profile, **dated, as_of=day)


# Every provider whose profile cites a dated source (the FBI chart, a day, a year or a month), today or as it was: its
# texts are dated by the source's date.
HISTORY: Final[Mapping[str, tuple[Change, ...]]] = {
    name: changes for name in PROFILES if (changes := _dating(name))
}


def _when(when: date | datetime | None) -> date | None:
    return when.date() if isinstance(when, datetime) else when


def changes_in_effect(name: str, when: date | datetime | None = None) -> tuple[Change, ...]:
    """The dated changes to profile ``name`` in effect on ``when`` (all of them if None: today)."""
    get_profile(name)
    day = _when(when)
    return tuple(c for c in HISTORY.get(name, ()) if day is None or c.effective <= day)


def profile_as_of(
    name: str, when: date | datetime | None = None, *, served: date | datetime | None = None
) -> Profile:
    """Profile ``name`` as the provider was on ``when`` (a date, or the date of a datetime);
    None gives the provider as it is today. Changes not yet in effect are undone, latest first.

    ``served``: the day an order is served, for a run set on ``when``: the policy changes
    (``Change.policy``) are taken as of that day instead, the design changes still as of ``when``."""
    profile = get_profile(name)
    day = _when(when)
    if day is None:
        return profile
    if (why := profile.not_yet(day)) is not None:
        raise ValueError(why)
    return _as_of(profile, day, _when(served) or day, HISTORY.get(name, ()))


def policy_changes(name: str, when: date | datetime, served: date | datetime) -> tuple[Change, ...]:
    """The policy changes to profile ``name`` that took effect after ``when`` (a run's date), up to
    and including ``served`` (the day an order is served in it)."""
    start, on = _when(when), _when(served)
    assert start is not None and on is not None
    return tuple(c for c in HISTORY.get(name, ()) if c.policy and start < c.effective <= on)


def sources_on(profile: Profile, day: date | datetime | None) -> tuple[str, ...]:
    """``profile``'s sources as a disclosure served on ``day`` lists them (None: an undated run, today, as written):
    each source citing a day after ``day`` says so beside it ("2016-10-04, after this date"), and each citing the FBI
    chart before the chart's date says the chart is later, as the texts do (``_day_later``, ``_chart_later``). The
    sources are not among ``_TEXT_FIELDS``: they are no policy, and a day only they cite is no change to the record
    (``HISTORY``); they are dated here, where a disclosure lists them."""
    return dated_sources(profile.sources, day)


def dated_sources(written: tuple[str, ...], day: date | datetime | None) -> tuple[str, ...]:
    """Sources (``written``) as a disclosure served on ``day`` lists them (``sources_on``): a profile's, or a backup's
    (relay/backup.py), dated the same way."""
    on = _when(day)
    if on is None:
        return written
    sources: Any = {i: text for i, text in enumerate(written)}
    for cited in sorted(set().union(*map(_days_cited, written)) - {_FBI_CHART_DATE}):
        if cited > on:
            sources = _day_later(cited)(sources)
    # the later years and months a source names are said after what it says, before the FBI chart's note (which
    # follows it): "… (2018, 2024 are after this date); the FBI chart cited here is dated …"
    sources = {i: _years_later(sources[i], written[i], on) for i in sources}
    if on < _FBI_CHART_DATE:
        sources = _chart_later(sources)
    return tuple(sources[i] for i in range(len(written)))


def _years_later(source: str, written: str, on: date) -> str:
    """``source`` (``written``, dated by its days) with the later years ``written`` names alone, and the later months
    of ``on``'s own year it names, said at its end, but a year (a month) one of its days, already said to be later,
    falls in."""
    days_later = {d for d in _days_cited(written) if d > on}
    undated = _undated(written)
    named = {int(y) for y in _YEAR_CITED.findall(undated)}
    later = [str(y) for y in sorted(named - {d.year for d in days_later}) if y > on.year]
    later = sorted(
        {*later, *(r.group() for r in _RANGE_CITED.finditer(undated) if int(r.group(1)) > on.year)},
        key=lambda n: (int(n[:4]), len(n)),
    )
    months = {
        f"{m.group(1)} {m.group(2)}": date(
            int(m.group(2)), _MONTH_NAMES.index(_month_name(m.group(1))) + 1, 1
        )
        for m in _MONTH_CITED.finditer(undated)
    }
    later = [
        said
        for said, first in sorted(months.items(), key=lambda m: m[1])
        if first.year == on.year
        and first > on
        and (first.year, first.month) not in {(d.year, d.month) for d in days_later}
    ] + later
    # each once: a year inside a range said to be later is said with it ("India 2010-2013 … in Mumbai (2012) … in
    # 2013" in 2009: "(2010-2013 is after this date)", not "(2010-2013, 2012, 2013 are after this date)")
    ranges = [(int(r.group(1)), int(r.group(2))) for r in map(_RANGE_CITED.fullmatch, later) if r is not None]
    later = [
        n for n in later if _RANGE_CITED.fullmatch(n) or not any(a <= int(n[-4:]) <= b for a, b in ranges)
    ]
    if not later:
        return _this_year(source, on)
    return _this_year(
        f"{source} ({', '.join(later)} {'is' if len(later) == 1 else 'are'} after this date)", on
    )
