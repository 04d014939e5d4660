"""The fbi-chart scenario's matrix, held against the FBI's "Lawful Access" chart (2021-01-07).

The chart (rebuilt from press copies of the FOIA release, 2021-11-19: justsecurity.org/79549,
cyberkendra.com 2021/11, cyberdaily.au/security/9243) says, per app, what a subpoena, a 2703(d) order, a search
warrant and a pen register return. For every cell that states something, the matrix read off the
simulated disclosures must agree; for every "—" cell, nothing beyond what that app's subpoena returns
may be handed over. Where the chart's words are vaguer than the categories (LINE's "account data"),
the categories chosen are the project's inference and say so where they are set. LINE's row is held
twice, as the chart words it: with Letter Sealing (LINE's end-to-end encryption) on, and off ("up to 7
days of chats only if E2EE is off"). The matrix also has rows the chart does not (BlackBerry's, and
Wire's, whose every cell rests on the project's assumption): those are not held against it.

Message content, the chart's first column: "limited" for iMessage and WhatsApp, "no" for the rest.
Limited means: not from the relay (a search warrant on it gets content that no key it holds opens),
but from the phone's cloud backup, served with its own warrant on the custodian (Apple, Google;
relay/backup.py), unless the user turned on end-to-end backups (Advanced Data Protection, WhatsApp's
end-to-end encrypted backups).

Every cell not handed over carries one of the four reasons (relay.legal.REASONS), and
``CHART_REASONS`` holds each against the chart and the sources it rests on.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay.legal import INSTRUMENTS, REASON_LABELS, REASONS
from relaysim.relay.profiles import ASKS, REAL_PROFILES, get_profile, profile_as_of
from relaysim.sims.cli import main
from relaysim.sims.matrix import MATRIX_PROCESSES, check_matrix_scenario, render_terminal, terminal_notes
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import LegalProcessEvent, resolve_scenario
from relaysim.sims.term import SEP
from tests.sims.test_term_view import missing_words

# The chart's rows that have a profile here, and the subpoena column in our categories.
CHART_SUBPOENA = {
    "signal": {"account_created", "last_seen"},  # "account creation date/time; last connection date"
    "whatsapp": {
        "subscriber_info",
        "account_created",
        "last_seen",
        "ip_addresses",
    },  # "basic subscriber records"
    # "IP address and phone number, only for confirmed terror investigations": the orders served here are
    # ordinary criminal process, so nothing (the scenario runs Telegram as of the chart, 2021-01-07)
    "telegram-cloud": set(),
    # "hash of phone/email, push token, ID creation date, last login date"
    "threema": {"subscriber_info", "account_created", "last_seen", "device_info"},
    # "registration data, IP at creation; message history: time, date, source, destination"
    "viber": {"subscriber_info", "account_created", "ip_addresses", "message_log"},
    # "creation date, device types, last use, number of messages, number of external ids, ..."
    "wickr": {"account_created", "device_info", "last_seen", "message_counts"},
    # "account data; up to 7 days of chats only if E2EE is off": which account data is the project's
    # inference (subscriber record and creation time); Letter Sealing is on here, so no chats
    "line": {"subscriber_info", "account_created"},
    # ... and with Letter Sealing off, the chats too: the cell is what LINE hands over, each instrument
    # getting what it may compel (relay.legal): the chats go to a search warrant, not to a subpoena
    "line-letter-sealing-off": {"subscriber_info", "account_created", "content"},
    # "non-China accounts: name, phone, email, IP"
    "wechat": {"subscriber_info", "ip_addresses"},
}
CHART_ROWS = ("imessage", "whatsapp", *sorted(set(CHART_SUBPOENA) - {"whatsapp"}))
DASHES = (
    "signal",
    "telegram-cloud",
    "threema",
    "viber",
    "wickr",
    "line",
    "line-letter-sealing-off",
    "wechat",
)  # "—" in every column after the subpoena
BASIC = ASKS["subpoena"] - {"message_log", "message_counts"}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fbi-chart")
    _result, summary = run_to_dir(resolve_scenario("fbi-chart"), out)
    return out, summary["matrix"]


def provided(matrix: dict[str, Any], profile: str, process: str) -> set[str]:
    return set(matrix[profile][process]["provided"])


def disclosure(out: Path, profile: str, process: str) -> dict[str, Any]:
    return dict(json.loads((out / profile / "disclosures" / f"{process}.json").read_text(encoding="utf-8")))


def test_matrix_json_has_exactly_the_promised_shape_and_comes_from_the_disclosures(
    chart: tuple[Path, dict[str, Any]],
) -> None:
    out, matrix = chart
    assert json.loads((out / "matrix.json").read_text(encoding="utf-8")) == matrix
    assert list(matrix) == list(REAL_PROFILES)
    for profile, row in matrix.items():
        assert list(row) == list(MATRIX_PROCESSES)
        for process, cell in row.items():
            assert set(cell) == {"response", "provided", *REASONS}
            assert cell["response"] == "complied"
            parts = [set(cell[k]) for k in ("provided", *REASONS)]
            assert sum(map(len, parts)) == len(set().union(*parts))  # each category once
            assert set().union(*parts) == ASKS[process], (
                profile,
                process,
            )  # every category asked is answered
            d = disclosure(out, profile, process)
            assert set(d["provided"]) == parts[0]
            assert [set(d["not_provided"][r]) for r in REASONS] == parts[1:]


@pytest.mark.parametrize("profile", sorted(CHART_SUBPOENA))
def test_the_subpoena_column(chart: tuple[Path, dict[str, Any]], profile: str) -> None:
    _out, matrix = chart
    # what a subpoena may compel of the cell (LINE's chats, content, it may not: 18 U.S.C. 2703(a))
    assert provided(matrix, profile, "subpoena") == CHART_SUBPOENA[profile] & ASKS["subpoena"]
    assert CHART_SUBPOENA[profile] - ASKS["subpoena"] <= {"content"}


def test_line_hands_over_chats_only_with_letter_sealing_off(chart: tuple[Path, dict[str, Any]]) -> None:
    """The chart: "up to 7 days of chats only if E2EE is off". With Letter Sealing off LINE's key opens
    Tariq's chats held at service, and a search warrant gets them; with it on, no key LINE holds opens
    any."""
    out, matrix = chart
    assert "content" in provided(matrix, "line-letter-sealing-off", "search_warrant")
    assert "content" in matrix["line"]["search_warrant"]["cryptographically_impossible"]
    words = {
        r.get("text")
        for r in disclosure(out, "line-letter-sealing-off", "search_warrant")["provided"]["content"]
    }
    assert {"Are we still on for Thursday?", "I know. I will explain in person."} <= words
    assert "Change of plan, meet at the library." not in words  # written after service, at 3h20m
    for process in ("subpoena", "court_order_2703d", "pen_register", "wiretap"):
        assert "content" not in provided(matrix, "line-letter-sealing-off", process), process


def test_the_chart_is_replayed_as_of_its_own_date(chart: tuple[Path, dict[str, Any]]) -> None:
    """Telegram's policy of September 2024 (IP address and phone number to any order naming a criminal
    suspect) is not the chart's: in 2021 it handed them over only in confirmed terror investigations."""
    out, matrix = chart
    assert resolve_scenario("fbi-chart").start == date(2021, 1, 7)
    assert (
        json.loads((out / "telegram-cloud" / "provider.json").read_text(encoding="utf-8"))["profile_as_of"]
        == "2021-01-07"
    )
    withheld = disclosure(out, "telegram-cloud", "subpoena")["not_provided"]["withheld_by_policy"]
    for category in ("subscriber_info", "ip_addresses"):
        assert "only for confirmed terror investigations" in withheld[category]
    assert not any(provided(matrix, "telegram-cloud", p) for p in MATRIX_PROCESSES)
    assert "Each provider is run as it was on 2021-01-07" in (out / "matrix.md").read_text(encoding="utf-8")


def test_the_orders_are_served_at_the_hour_the_description_gives() -> None:
    """The description tells a reader the orders come "At 3 pm" and Omar's phone is off "from 2 to
    4 pm", in UTC as the disclosures give times: the run's clock must say the same (a date-only start
    put t = 0 at midnight, and every disclosure read 03:00 UTC)."""
    scenario = resolve_scenario("fbi-chart")
    assert "At 3 pm" in scenario.description and "from 2 to 4 pm" in scenario.description
    assert "times in UTC" in scenario.description
    assert scenario.start_at is not None
    served = {e.at for e in scenario.events if isinstance(e, LegalProcessEvent)}
    assert [datetime.fromtimestamp(scenario.start_at + t, UTC).strftime("%H:%M") for t in served] == ["15:00"]


def test_signal_holds_no_group_state_here_and_says_so_in_its_own_words(
    chart: tuple[Path, dict[str, Any]],
) -> None:
    """Nobody in the chart's afternoon is in a group: the relay holds no group state, encrypted or not,
    so Signal's group membership is not retained (not "cryptographically impossible": nothing is held
    that a key could open), in the words of Signal's published responses."""
    out, _matrix = chart
    why = disclosure(out, "signal", "court_order_2703d")["not_provided"]["not_retained"]["group_membership"]
    assert "anything about a user's groups" in why and "doesn't have access to" in why
    assert "signal.org/bigbrother" in why


def test_imessage_row(chart: tuple[Path, dict[str, Any]]) -> None:
    out, matrix = chart
    # subpoena: "basic subscriber info"
    assert "subscriber_info" in provided(matrix, "imessage", "subpoena") <= BASIC
    # 2703(d): "25 days of iMessage look-ups to/from the target number"
    assert "lookup_log" in provided(matrix, "imessage", "court_order_2703d")
    lookups = disclosure(out, "imessage", "court_order_2703d")["provided"]["lookup_log"]
    assert lookups and all("tariq" in (r["account"], r["recipient_account"]) for r in lookups)
    assert "message_log" not in provided(matrix, "imessage", "court_order_2703d")
    # search warrant: the chart's content comes from iCloud backups, not from the relay (see the backup tests)
    warrant = disclosure(out, "imessage", "search_warrant")
    assert "content" not in warrant["provided"]
    assert "iCloud Backup" in warrant["not_provided"]["cryptographically_impossible"]["content"]
    # pen register: "no capability" as of the chart's date; Apple's FAQ (look-up logs to pen/trap orders,
    # The Intercept, 2016-09-28) is the record before it (tests/sims/test_history.py): the look-ups Apple
    # logs go to a 2703(d) order, not to a pen register
    assert provided(matrix, "imessage", "pen_register") == set()
    assert "realtime_routing" in matrix["imessage"]["pen_register"]["no_capability"]
    pen = disclosure(out, "imessage", "pen_register")["not_provided"]
    why = pen["no_capability"]["realtime_routing"]
    assert "FBI chart" in why and "The Intercept, 2016-09-28" in why and "nothing in real time" in why
    assert "only under a 2703(d) court order" in pen["withheld_by_policy"]["lookup_log"]


def test_whatsapp_row(chart: tuple[Path, dict[str, Any]]) -> None:
    out, matrix = chart
    sub = provided(matrix, "whatsapp", "subpoena")
    # 2703(d): "subpoena return + blocked users"
    assert provided(matrix, "whatsapp", "court_order_2703d") == sub | {"blocked_users"}
    # search warrant: "address-book contacts + users who have the target in theirs"
    warrant = provided(matrix, "whatsapp", "search_warrant")
    assert warrant - provided(matrix, "whatsapp", "court_order_2703d") == {"contacts", "reverse_contacts"}
    # pen register: "every 15 minutes: source and destination of each message"
    assert "realtime_routing" in provided(matrix, "whatsapp", "pen_register")
    rows = disclosure(out, "whatsapp", "pen_register")["provided"]["realtime_routing"]
    assert rows and all({"account", "recipient_account", "time"} <= set(r) for r in rows)
    assert all(r["delivered_to_agency"] % 900 == 0 and r["delivered_to_agency"] > r["time"] for r in rows)


def test_threema_keeps_a_hash_and_viber_the_ip_at_creation(chart: tuple[Path, dict[str, Any]]) -> None:
    out, _matrix = chart
    (sub,) = disclosure(out, "threema", "subpoena")["provided"]["subscriber_info"]
    assert "account_hash" in sub and "account" not in sub and "tariq" not in json.dumps(sub)
    viber = disclosure(out, "viber", "subpoena")["provided"]
    (created,) = viber["account_created"]
    assert viber["ip_addresses"] and all(r["first_seen"] == created["created"] for r in viber["ip_addresses"])
    assert viber["message_log"] and all(
        set(r) == {"time", "account", "recipient_account"} for r in viber["message_log"]
    )


@pytest.mark.parametrize("profile", DASHES)
def test_dash_cells_hand_over_nothing_beyond_the_subpoena(
    chart: tuple[Path, dict[str, Any]], profile: str
) -> None:
    _out, matrix = chart
    for process in ("court_order_2703d", "search_warrant", "pen_register"):
        assert provided(matrix, profile, process) <= CHART_SUBPOENA[profile], process


def test_no_message_content_from_any_app_on_the_chart(chart: tuple[Path, dict[str, Any]]) -> None:
    """But LINE's, with Letter Sealing off, to the search warrant (the test above)."""
    _out, matrix = chart
    for profile in CHART_ROWS:
        for process in MATRIX_PROCESSES:
            if (profile, process) != ("line-letter-sealing-off", "search_warrant"):
                assert "content" not in provided(matrix, profile, process), (profile, process)


def test_only_whatsapp_returns_anything_in_real_time(chart: tuple[Path, dict[str, Any]]) -> None:
    """The chart's header: every return except WhatsApp's is a log of stored data, after the fact."""
    _out, matrix = chart
    for profile in CHART_ROWS:
        live = provided(matrix, profile, "pen_register") | provided(matrix, profile, "wiretap")
        assert bool(live) == (profile == "whatsapp"), profile


def test_blackberry_rows_the_chart_does_not_have(chart: tuple[Path, dict[str, Any]]) -> None:
    """Not on the chart; from the reporting on BlackBerry (relay/profiles.py): consumer messages are
    readable by the provider, BES messages are not, who-contacted-whom comes with a court order, and
    the correspondence never does (John Chen, December 2015): for consumer BBM only policy keeps the
    words back — "will not" — for BES no key BlackBerry holds opens them — "cannot"."""
    _out, matrix = chart
    for process in ("wiretap", "search_warrant"):
        assert "content" not in provided(matrix, "bbm-consumer", process)
        assert {"content", "ciphertext"} <= set(matrix["bbm-consumer"][process]["withheld_by_policy"])
    assert "realtime_routing" in provided(matrix, "bbm-consumer", "wiretap")
    assert "content" in matrix["bes"]["wiretap"]["cryptographically_impossible"]
    assert "ciphertext" in matrix["bes"]["wiretap"]["withheld_by_policy"]
    assert "message_log" in provided(matrix, "bes", "court_order_2703d")
    assert "message_log" in matrix["bes"]["subpoena"]["withheld_by_policy"]


def test_matrix_md_and_the_terminal_tables(
    chart: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _matrix = chart
    md = (out / "matrix.md").read_text(encoding="utf-8")
    for title in ("Signal (`signal`)", "WhatsApp (`whatsapp`)", "(`bes`)", "## Legend"):
        assert title in md
    assert (
        "| Signal (`signal`) | created, last seen | created, last seen | created, last seen | — | — |" in md
    )
    assert main(["chart", str(out), "--width", "120"]) == 0
    text = capsys.readouterr().out
    assert "can reveal" in text and "cannot reveal" in text and "Signal (profile signal)" in text


@pytest.mark.parametrize("width", [80, 150])
def test_the_chart_fits_the_width_and_cuts_no_word(
    chart: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str], width: int
) -> None:
    out, matrix = chart
    assert main(["chart", str(out), "--width", str(width)]) == 0
    text = capsys.readouterr().out.split("\nThe matrix is in ")[0]  # the tables (the path after them is long)
    assert max(len(line) for line in text.splitlines()) <= width
    unwrapped = render_terminal(matrix, width=1000)  # every cell on one line: the words to find whole
    assert "not retained: subscriber, IPs" in unwrapped
    cells = [line.replace(SEP, " ") for line in unwrapped.splitlines() if "─" not in line]
    assert not missing_words(cells, text)


def test_the_chart_reads_columns_as_its_help_says(
    chart: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """chart without --width: as wide as COLUMNS says ("the terminal's, or COLUMNS", as its help
    says, test_cli_numbers)."""
    out, _matrix = chart
    for width in (60, 140):
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(["chart", str(out)]) == 0
        text = capsys.readouterr().out.split("\nThe matrix is in ")[0]
        assert max(len(line) for line in text.splitlines()) in range(width - 10, width + 1), width


def test_the_chart_is_coloured_by_reason_only_on_a_terminal_and_never_with_no_color(
    chart: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _matrix = chart
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert main(["chart", str(out)]) == 0  # stdout captured: no terminal
    assert "\x1b[" not in capsys.readouterr().out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    for colorterm, handed_over in (("", "\x1b[31m"), ("truecolor", "\x1b[38;2;194;65;12m")):
        monkeypatch.setenv("COLORTERM", colorterm)
        assert main(["chart", str(out), "--width", "100"]) == 0
        coloured = capsys.readouterr().out
        assert handed_over + "created" in coloured  # handed over: the legend's orange (#C2410C), or red
        # each reason in a colour of its own, the HTML legend's (24-bit) or the same hue among the 16
        codes = set()
        for reason in REASONS:
            at = coloured.index(REASON_LABELS[reason] + ":")
            codes.add(coloured[coloured.rindex("\x1b[", 0, at) : at])
        assert len(codes) == len(REASONS)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["chart", str(out)]) == 0
    assert "\x1b[" not in capsys.readouterr().out


def test_run_fbi_chart_prints_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet as its help says: no progress bar, and the chart printed all the same (its help said
    only "no progress bar", and a user took it for a run that prints nothing but its last line)."""
    from relaysim.sims.cli import build_parser

    run = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    quiet = next(a for a in run._actions if "--quiet" in a.option_strings)
    assert "no progress bar" in (quiet.help or "") and "the matrix's chart" in (quiet.help or ""), quiet.help
    assert main(["run", "fbi-chart", "--out", str(tmp_path), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.count("can reveal") == len(REAL_PROFILES)
    assert (tmp_path / "matrix.json").exists() and (tmp_path / "matrix.md").exists()


@pytest.mark.parametrize(
    ("drop", "expected"),
    [("wiretap", "wiretap is served 0 time"), (None, "on one account")],
)
def test_a_matrix_scenario_must_serve_each_process_once_on_one_account(
    drop: str | None, expected: str
) -> None:
    from dataclasses import replace

    sc = resolve_scenario("fbi-chart")
    if drop:
        events = tuple(e for e in sc.events if not (isinstance(e, LegalProcessEvent) and e.process == drop))
    else:
        events = tuple(
            replace(e, target="omar") if isinstance(e, LegalProcessEvent) and e.process == "wiretap" else e
            for e in sc.events
        )
    with pytest.raises(ValueError, match=expected):
        check_matrix_scenario(replace(sc, events=events))


# Every cell of the matrix, what is handed over, each row with the record it rests on: a change to a
# profile, an instrument or the desk that moves a cell fails here naming it. "(assumed)": the cell rests on
# the project's assumption, which its disclosure says (the test above); "(inferred)": the record's words are
# vaguer than the categories, and the profile says which it chose.
_BACK = ("subpoena", "court_order_2703d", "search_warrant")
_FORWARD = ("pen_register", "wiretap")
_SUB = "subscriber_info"
_WA_SUB = {_SUB, "account_created", "last_seen", "ip_addresses"}
_IM_SUB = {_SUB, "account_created", "last_seen"}
_BB_RECORDS = {_SUB, "account_created", "last_seen", "ip_addresses", "device_info", "message_counts"}
RECORD_TABLE: dict[tuple[str, str], tuple[set[str], str]] = {
    **{
        ("signal", p): (
            {"account_created", "last_seen"},
            "signal.org/bigbrother: the account's creation date and time and the date of its last connection, "
            "to the E.D. Va. grand-jury subpoena (2016), the C.D. Cal. subpoena and the Santa Clara County warrant "
            "(2021); the chart's subpoena cell",
        )
        for p in _BACK
    },
    ("whatsapp", "subpoena"): (
        _WA_SUB,
        "faq.whatsapp.com: 'name, service start date, last seen date, IP address, and email address'; the "
        "chart: 'basic subscriber records'",
    ),
    ("whatsapp", "court_order_2703d"): (
        _WA_SUB | {"blocked_users"},
        "the chart: 'subpoena return + blocked users'; faq.whatsapp.com: 'numbers blocking or blocked by the "
        "user'",
    ),
    ("whatsapp", "search_warrant"): (
        _WA_SUB | {"blocked_users", "contacts", "reverse_contacts"},
        "the chart: 'address book contacts and WhatsApp users who have the target in their address book "
        "contacts'; blocked users as to a 2703(d) order (assumed: 18 U.S.C. 2703(c)(1)(A))",
    ),
    ("whatsapp", "pen_register"): (
        {"ip_addresses", "realtime_routing"},
        "the chart: 'every 15 minutes: source and destination of each message'; In re WhatsApp, E.D. Cal. "
        "2022: source, destination, timestamps, routing data",
    ),
    ("whatsapp", "wiretap"): (
        {"ip_addresses", "realtime_routing", "ciphertext"},
        "(assumed) no source shows WhatsApp returning ciphertext to a wiretap order",
    ),
    ("imessage", "subpoena"): (
        _IM_SUB | {"ip_addresses"},
        "the chart: 'basic subscriber info', which 18 U.S.C. 2703(c)(2)(E) defines to include 'any temporarily "
        "assigned network address'",
    ),
    ("imessage", "court_order_2703d"): (
        _IM_SUB | {"ip_addresses", "lookup_log"},
        "the chart: '25 days of iMessage look-ups to/from the target number'; the subpoena's basic subscriber "
        "info (a 2703(d) order may compel what a subpoena may)",
    ),
    ("imessage", "search_warrant"): (
        _IM_SUB | {"ip_addresses", "lookup_log"},
        "the chart: device backups, served here on the custodian (backup_warrant); the look-ups as to a "
        "2703(d) order (assumed: 18 U.S.C. 2703(c)(1)(A))",
    ),
    **{
        ("threema", p): (
            {_SUB, "account_created", "last_seen", "device_info"},
            "the chart: 'hash of phone/email, push token, ID creation date, last login date'; Threema's "
            "transparency report: the public key",
        )
        for p in _BACK
    },
    **{
        ("wickr", p): (
            {"account_created", "device_info", "last_seen", "message_counts"},
            "the chart: 'creation date, device types, last use, number of messages, number of external ids, "
            "recent settings changes, version'",
        )
        for p in _BACK
    },
    **{
        ("viber", p): (
            {_SUB, "account_created", "ip_addresses", "message_log"},
            "the chart: 'registration data, IP at creation; message history: time, date, source, destination'",
        )
        for p in _BACK
    },
    **{
        ("telegram-cloud", p): (
            set(),
            "the chart: 'IP address and phone number, only for confirmed terror investigations' (the orders "
            "here are ordinary criminal process; the run is as of the chart's date)",
        )
        for p in _BACK
    },
    **{
        ("line", p): (
            {_SUB, "account_created"},
            "the chart: 'account data; up to 7 days of chats only if E2EE is off' (inferred: which account data)",
        )
        for p in _BACK
    },
    **{
        ("line-letter-sealing-off", p): (
            {_SUB, "account_created"} | ({"content"} if p == "search_warrant" else set()),
            "the chart: 'up to 7 days of chats only if E2EE is off': chats to the process that may compel "
            "content (18 U.S.C. 2703(a))",
        )
        for p in _BACK
    },
    **{
        ("wechat", p): (
            {_SUB, "ip_addresses"},
            "the chart: 'non-China accounts: name, phone, email, IP'",
        )
        for p in _BACK
    },
    **{
        ("wire", p): (
            {_SUB, "device_info"} | ({"group_membership"} if p != "subpoena" else set()),
            "(assumed) Wire Privacy Whitepaper §2.1, §2.2, §3.2: what Wire keeps, to any instrument that may "
            "compel it (a subpoena may not compel group membership: relay/legal.py)",
        )
        for p in _BACK
    },
    **{
        (bb, p): (
            _BB_RECORDS | (set() if p == "subpoena" else {"message_log", "location"}),
            "BlackBerry's policy as reported (John Chen, December 2015): under a court order a phone's "
            "location, which users contacted each other and certain metadata, never the correspondence",
        )
        for bb in ("bbm-consumer", "bes")
        for p in _BACK
    },
    # Forward-looking: the chart's header, every return but WhatsApp's is stored data after the fact
    **{
        (p, f): (set(), "the chart's header: only WhatsApp returns anything in real time")
        for p in CHART_ROWS
        if p != "whatsapp"
        for f in _FORWARD
    },
    **{
        (p, f): (set(), "(assumed) no source says Wire collects anything in real time")
        for p in ["wire"]
        for f in _FORWARD
    },
    **{
        (bb, f): (
            {"ip_addresses", "realtime_routing"},
            "BlackBerry's relay routes every PIN and BBM message; its policy as reported (December 2015): who "
            "contacted whom, never the correspondence",
        )
        for bb in ("bbm-consumer", "bes")
        for f in _FORWARD
    },
}


def test_the_record_table_covers_every_cell_of_the_matrix(chart: tuple[Path, dict[str, Any]]) -> None:
    _out, matrix = chart
    assert set(RECORD_TABLE) == {(p, f) for p in matrix for f in matrix[p]}


@pytest.mark.parametrize(("profile", "process"), sorted(RECORD_TABLE))
def test_each_cell_hands_over_what_the_record_says(
    chart: tuple[Path, dict[str, Any]], profile: str, process: str
) -> None:
    _out, matrix = chart
    expected, source = RECORD_TABLE[(profile, process)]
    assert provided(matrix, profile, process) == expected, source


# Why each cell the chart shows empty is empty, from the chart and the providers' own words:
# (profile, process, category) -> the reason. "provided" where the chart shows a return.
CHART_REASONS = {
    # pen register: the chart's iMessage cell says "no capability"; its header: only WhatsApp returns
    # anything in real time. Telegram holds cloud-chat keys and routes every message: policy, not design.
    **{
        (p, "pen_register", "realtime_routing"): "no_capability"
        for p in ("imessage", "signal", "threema", "wickr", "viber")
    },
    ("telegram-cloud", "pen_register", "realtime_routing"): "withheld_by_policy",
    ("telegram-cloud", "wiretap", "realtime_routing"): "withheld_by_policy",
    ("whatsapp", "pen_register", "realtime_routing"): "provided",
    # content: end to end, no key at the provider; Telegram's cloud chats: keys on its servers
    **{
        (p, "wiretap", "content"): "cryptographically_impossible"
        for p in CHART_ROWS
        if p not in ("telegram-cloud", "wechat", "line-letter-sealing-off")
    },
    **{
        (p, "search_warrant", "content"): "cryptographically_impossible"
        for p in CHART_ROWS
        if p not in ("telegram-cloud", "wechat", "line-letter-sealing-off")
    },
    # LINE without Letter Sealing: its own key opens the chats, handed over to a search warrant; nothing
    # in real time (the chart's header)
    ("line-letter-sealing-off", "search_warrant", "content"): "provided",
    ("line-letter-sealing-off", "search_warrant", "ciphertext"): "withheld_by_policy",
    ("line-letter-sealing-off", "wiretap", "content"): "no_capability",
    # WeChat is not end to end: that its keys are the provider's is the project's inference, not the chart's
    ("wechat", "search_warrant", "content"): "withheld_by_policy",
    ("wechat", "wiretap", "content"): "withheld_by_policy",
    ("telegram-cloud", "search_warrant", "content"): "withheld_by_policy",
    ("telegram-cloud", "wiretap", "content"): "withheld_by_policy",
    # who messaged whom: Signal keeps no record of it (signal.org/bigbrother); Viber hands it over
    **{
        (p, "court_order_2703d", "message_log"): "not_retained"
        for p in ("signal", "whatsapp", "threema", "wickr", "imessage")
    },
    ("viber", "subpoena", "message_log"): "provided",
    ("telegram-cloud", "court_order_2703d", "message_log"): "withheld_by_policy",
    # Threema keeps no IP logs; Signal keeps nothing but two timestamps
    ("threema", "subpoena", "ip_addresses"): "not_retained",
    ("signal", "subpoena", "ip_addresses"): "not_retained",
    ("signal", "subpoena", "subscriber_info"): "not_retained",
    # group membership: Signal's server holds only encrypted group state (groups v2; signal.org/bigbrother,
    # "no group membership"); WhatsApp's server holds the lists it fans out from, and its guide names no
    # instrument that gets one; client-side fan-out keeps none
    ("signal", "court_order_2703d", "group_membership"): "not_retained",
    ("whatsapp", "court_order_2703d", "group_membership"): "withheld_by_policy",
    ("imessage", "court_order_2703d", "group_membership"): "not_retained",
}


@pytest.mark.parametrize(("profile", "process", "category"), sorted(CHART_REASONS))
def test_each_empty_cell_has_the_reason_the_sources_give(
    chart: tuple[Path, dict[str, Any]], profile: str, process: str, category: str
) -> None:
    _out, matrix = chart
    cell = matrix[profile][process]
    (got,) = [k for k in ("provided", *REASONS) if category in cell[k]]
    assert got == CHART_REASONS[(profile, process, category)]


def test_look_back_orders_never_claim_no_capability_and_only_content_is_beyond_keys(
    chart: tuple[Path, dict[str, Any]],
) -> None:
    _out, matrix = chart
    for profile, row in matrix.items():
        for process, cell in row.items():
            # content, and the group state Signal's clients keep encrypted at the relay (groups v2)
            beyond = {"content", "group_membership"} if profile == "signal" else {"content"}
            assert set(cell["cryptographically_impossible"]) <= beyond, (profile, process)
            if process in ("subpoena", "court_order_2703d", "search_warrant"):
                assert not cell["no_capability"], (profile, process)


def test_no_capability_names_what_could_compel_it(chart: tuple[Path, dict[str, Any]]) -> None:
    out, _matrix = chart
    why = disclosure(out, "signal", "pen_register")["not_provided"]["no_capability"]["realtime_routing"]
    assert "47 U.S.C. 1002(b)(2)(A)" in why and "Lavabit" in why


def test_content_beyond_every_key_says_what_us_law_asks_of_decryption(
    chart: tuple[Path, dict[str, Any]],
) -> None:
    """The record, beside "cryptographically impossible": CALEA itself only requires a carrier to decrypt
    encryption it provided and can decrypt (47 U.S.C. 1002(b)(3)); and it exempts information services."""
    out, _matrix = chart
    for profile in ("signal", "whatsapp", "bes"):
        why = disclosure(out, profile, "search_warrant")["not_provided"]["cryptographically_impossible"][
            "content"
        ]
        assert "47 U.S.C. 1002(b)(3)" in why and "information services" in why, profile
    # where the provider's own key opens the words, no such limit is said
    assert "1002(b)(3)" not in json.dumps(disclosure(out, "bbm-consumer", "search_warrant"))


def test_whatsapps_wiretap_return_is_marked_as_an_assumption(chart: tuple[Path, dict[str, Any]]) -> None:
    """No source shows WhatsApp returning ciphertext to a wiretap order; the disclosure says so."""
    out, matrix = chart
    assert "ciphertext" in provided(matrix, "whatsapp", "wiretap")
    notes = " ".join(disclosure(out, "whatsapp", "wiretap")["notes"])
    assert "Assumption" in notes and "In re Facebook Messenger" in notes and "E.D. Cal. 2018" in notes
    assert "Assumption" not in " ".join(disclosure(out, "whatsapp", "pen_register")["notes"])
    # ... and so does the matrix, where the cell is read beside the chart
    assumed = (out / "matrix.md").read_text(encoding="utf-8").split("## Assumptions (no source says so)")[1]
    assumed = assumed.split("\n## ")[0]
    assert "WhatsApp (`whatsapp`), wiretap order: no source shows WhatsApp returning ciphertext" in assumed
    # of the chart's rows, only these cells rest on an assumption (the search warrants: the test below; the
    # "—" cells answered anyway: test_every_dash_cell_answered_says_it_is_assumed); Wire, not on the chart,
    # rests on them all
    rows = [line for line in assumed.splitlines() if line.startswith("- ")]
    others = [r.split(":")[0] for r in rows if not r.startswith("- Wire (`wire`), ")]
    dashes = [
        f"- {get_profile(p).title} (`{p}`), {INSTRUMENTS[q].name}" for p, q in DASH_ASSUMED + NO_TAP_ASSUMED
    ]
    assert sorted(others) == sorted(
        [
            "- WhatsApp (`whatsapp`), search warrant",
            "- WhatsApp (`whatsapp`), wiretap order",
            "- Apple iMessage (`imessage`), 2703(d) court order",  # the look-ups' IPs: the next test but one
            "- Apple iMessage (`imessage`), search warrant",
            # the chart has no wiretap column: iMessage's "no capability" there is read off its pen-register cell
            "- Apple iMessage (`imessage`), wiretap order",
            # BlackBerry's reported policy is for court orders: what it hands a subpoena is on no record
            "- BlackBerry Messenger / PIN (consumer) (`bbm-consumer`), subpoena",
            "- BlackBerry Enterprise Server (carrier relay) (`bes`), subpoena",
            # the chart's day is in 2021, the year of Signal's warrant on its record, whose month is not
            "- Signal (`signal`), search warrant",
            *dashes,
        ]
    )
    assert len(rows) == len(others) + len(MATRIX_PROCESSES)


def test_the_matrix_lists_the_readings_beside_the_assumptions(chart: tuple[Path, dict[str, Any]]) -> None:
    """matrix.md listed the assumptions but not the Reading notes (Profile.readings: BlackBerry's "certain
    metadata" covering the records a court order gets), which each disclosure says: a reader held those cells
    against the chart as the record's letter."""
    out, matrix = chart
    start = resolve_scenario("fbi-chart").start
    md = (out / "matrix.md").read_text(encoding="utf-8")
    read = md.split("## Readings (the project's reading of the record's words)")[1].split("\n## ")[0]
    rows = [line for line in read.splitlines() if line.startswith("- ")]
    want = [
        (p, q, reading)
        for p in matrix
        for q, reading in profile_as_of(p, start).readings.items()
        if q in MATRIX_PROCESSES
    ]
    assert want and len(rows) == len(want), rows
    for p, q, reading in want:
        row = f"- {get_profile(p).title} (`{p}`), {INSTRUMENTS[q].name}: {reading}."
        assert row in rows, row
        notes = disclosure(out, p, q)["notes"]
        assert f"Reading: {reading}." in notes, notes
    # and the terminal's notes, as matrix.md says them
    said = terminal_notes(matrix, resolve_scenario("fbi-chart"), width=10_000)
    assert "Readings (the project's reading of the record's words):" in said
    assert all(f"{INSTRUMENTS[q].name}: {reading}." in said for _p, q, reading in want)


@pytest.mark.parametrize("profile", ["telegram-cloud", "wechat"])
def test_a_wiretap_that_collected_nothing_says_nothing_of_keys_opening_it(
    chart: tuple[Path, dict[str, Any]], profile: str
) -> None:
    """Telegram's and WeChat's relays could collect under a wiretap order and collect nothing: no envelope was
    held or collected for it, so no reason says the provider's key "opens 0 of the 0 held envelope(s)", nor
    that only its policy keeps back words that were never collected."""
    out, _matrix = chart
    why = disclosure(out, profile, "wiretap")["not_provided"]["withheld_by_policy"]["content"]
    assert "could collect it in real time" in why
    assert "own key opens" not in why and "only its policy" not in why, why


# The chart's "—" cells (its 2703(d) order and search warrant columns) that a profile answers anyway with what
# the chart's subpoena cell names. The record gives the dash no meaning: the chart states nothing there, so each
# answer rests on the project's assumption, said in the disclosure and in matrix.md. Not Telegram's, whose
# privacy policy (§8.3) is its answer to a court's order, nor Signal's search warrant, on record itself
# (signal.org/bigbrother: the Santa Clara County warrant, 2021).
DASH_ASSUMED = [
    (p, q)
    for p in DASHES
    if p != "telegram-cloud"
    for q in ("court_order_2703d", "search_warrant")
    if (p, q) != ("signal", "search_warrant")
]


# The chart's "—" pen-register cells of providers whose relays the profiles give no way to collect in real time (not
# Telegram's nor WeChat's, whose servers could, and whose policy or record keeps it back): the chart says "no
# capability" of iMessage alone, and has no wiretap column, so "no capability" under a pen register or a wiretap
# order is the project's assumption, said in the reason, in the disclosure's notes and in matrix.md.
NO_TAP_ASSUMED = [
    (p, q) for p in DASHES if p not in ("telegram-cloud", "wechat") for q in ("pen_register", "wiretap")
]


@pytest.mark.parametrize(("profile", "process"), NO_TAP_ASSUMED)
def test_every_dash_pen_register_cell_says_no_capability_is_assumed(
    chart: tuple[Path, dict[str, Any]], profile: str, process: str
) -> None:
    out, _matrix = chart
    d = disclosure(out, profile, process)
    no_tap = d["not_provided"]["no_capability"]
    assert {"realtime_routing", "ip_addresses"} <= set(no_tap), no_tap
    for why in no_tap.values():
        assert "has no way to collect in real time" in why and "this is the project's assumption" in why, why
        assert "'—', which states nothing" in why, why
    (assumed,) = [n for n in d["notes"] if n.startswith("Assumption: ")]
    assert ("pen register cell for" in assumed) == (process == "pen_register"), assumed
    assert "This profile assumes" in assumed and "nothing collected" in assumed, assumed
    # iMessage's cell is the chart's own "no capability": nothing assumed of its pen register
    imessage = disclosure(out, "imessage", "pen_register")
    assert not any(n.startswith("Assumption: ") for n in imessage["notes"])
    assert all("project's assumption" not in w for w in imessage["not_provided"]["no_capability"].values())


@pytest.mark.parametrize(("profile", "process"), DASH_ASSUMED)
def test_every_dash_cell_answered_says_it_is_assumed(
    chart: tuple[Path, dict[str, Any]], profile: str, process: str
) -> None:
    out, matrix = chart
    assert provided(matrix, profile, process) >= provided(matrix, profile, "subpoena")  # answered, not empty
    (assumed,) = [n for n in disclosure(out, profile, process)["notes"] if n.startswith("Assumption: ")]
    assert f"FBI chart's {INSTRUMENTS[process].name} cell for " in assumed and "is '—'" in assumed, assumed
    assert "the chart's subpoena cell names" in assumed and "18 U.S.C. 2703(c)(2)" in assumed, assumed
    # the subpoena's own cell is the chart's: nothing assumed there
    assert not any(n.startswith("Assumption: ") for n in disclosure(out, profile, "subpoena")["notes"])


def test_telegrams_court_orders_and_signals_warrant_rest_on_their_own_record(
    chart: tuple[Path, dict[str, Any]],
) -> None:
    out, _matrix = chart
    for profile, process in [
        ("telegram-cloud", "court_order_2703d"),
        ("telegram-cloud", "search_warrant"),
    ]:
        assert not any(n.startswith("Assumption: ") for n in disclosure(out, profile, process)["notes"])
    # Signal's warrant is on its record of 2021, the chart's year, which gives no month: answering from it on
    # 2021-01-07 is the project's assumption
    (note,) = [
        n for n in disclosure(out, "signal", "search_warrant")["notes"] if n.startswith("Assumption: ")
    ]
    assert "answering from a record of this year, is the project's assumption" in note, note


@pytest.mark.parametrize(
    ("profile", "cell"),
    [
        ("wechat", "non-China accounts: name, phone, email, IP"),
        ("viber", "registration data, IP at creation"),
    ],
)
def test_a_provider_whose_only_record_is_the_chart_cites_no_policy_of_its_own(
    chart: tuple[Path, dict[str, Any]], profile: str, cell: str
) -> None:
    """WeChat's and Viber's only record is the FBI chart: no policy of theirs for law enforcement is on record.
    What they hold and do not hand over is said as the chart's cell, and the rest as the project's assumption;
    no reason says "its published policy", nor that "only its policy" keeps the words back."""
    out, _matrix = chart
    for process in ("subpoena", "court_order_2703d", "search_warrant", "pen_register", "wiretap"):
        d = disclosure(out, profile, process)
        said = [*d["notes"], *(why for reasons in d["not_provided"].values() for why in reasons.values())]
        assert not any("published policy" in x or "only its policy" in x for x in said), (process, said)
    withheld = disclosure(out, profile, "subpoena")["not_provided"]["withheld_by_policy"]
    assert withheld and all(cell in why and "the project's reading" in why for why in withheld.values()), (
        withheld
    )
    for process in ("court_order_2703d", "search_warrant"):
        withheld = disclosure(out, profile, process)["not_provided"]["withheld_by_policy"]
        assert all("the project's assumption" in why for why in withheld.values()), withheld
    if (
        profile == "wechat"
    ):  # its own key opens the words it holds: the chart's "no" and the assumption say why
        why = disclosure(out, "wechat", "search_warrant")["not_provided"]["withheld_by_policy"]["content"]
        assert (
            "the FBI chart, says no message content is handed over" in why and "project's assumption" in why
        )
        assert "the provider's own key opens" in why


@pytest.mark.parametrize(("profile", "category"), [("imessage", "lookup_log"), ("whatsapp", "blocked_users")])
def test_a_search_warrant_gets_the_2703d_records_the_chart_names_and_says_it_is_assumed(
    chart: tuple[Path, dict[str, Any]], profile: str, category: str
) -> None:
    """The chart names iMessage's 25 days of look-ups and WhatsApp's blocked users under a 2703(d) order,
    and is silent on them under a search warrant (its cells name backups; address books). A warrant may
    compel every record a 2703(d) order may (18 U.S.C. 2703(c)(1)(A)): the warrant gets the same records,
    and its disclosure says that rests on the project's assumption, not on the chart."""
    out, matrix = chart
    assert category in provided(matrix, profile, "court_order_2703d") & provided(
        matrix, profile, "search_warrant"
    )
    order, warrant = (disclosure(out, profile, p) for p in ("court_order_2703d", "search_warrant"))
    assert warrant["provided"][category] == order["provided"][category]  # the same 25 days of look-ups
    (assumed,) = [n for n in warrant["notes"] if n.startswith("Assumption: ")]
    assert "18 U.S.C. 2703(c)(1)(A)" in assumed and "the FBI chart names" in assumed
    # the 2703(d) cell is the chart's (but for the look-ups' IPs, on which it is silent: assumed)
    assert all("IP address each came from" in n for n in order["notes"] if n.startswith("Assumption: "))


def test_wire_is_in_the_matrix_but_not_held_against_the_chart(chart: tuple[Path, dict[str, Any]]) -> None:
    """Wire is not on the FBI chart: its row is run like every real profile's, but it is no chart row,
    and every cell of it says it rests on the project's assumption (no published guide of Wire's for law
    enforcement was found), not on a source."""
    out, matrix = chart
    assert "wire" in matrix and "wire" not in CHART_ROWS
    for process in MATRIX_PROCESSES:
        assert any(n.startswith("Assumption: ") for n in disclosure(out, "wire", process)["notes"]), process
    md = (out / "matrix.md").read_text(encoding="utf-8")
    assert "| Wire (`wire`) |" in md


def test_the_subpoena_cells_details_threema_wickr_line_wechat(chart: tuple[Path, dict[str, Any]]) -> None:
    out, _matrix = chart
    # Threema: "hash of phone/email, push token, ID creation date, last login date"; and the public key
    # (the relay has no push service, so no push token exists to hand over)
    (threema,) = disclosure(out, "threema", "subpoena")["provided"]["subscriber_info"]
    (device,) = disclosure(out, "threema", "subpoena")["provided"]["device_info"][:1]
    assert "account_hash" in threema and len(bytes.fromhex(device["public_key"])) == 32
    # Wickr: "number of external ids" (not the ids): here the phone number is the one external id
    (wickr,) = disclosure(out, "wickr", "subpoena")["provided"]["message_counts"]
    assert wickr["external_ids"] == 1 and "tariq" not in json.dumps(
        {k: v for k, v in wickr.items() if k != "account"}
    )
    # LINE: chats only if Letter Sealing is off; it is on by default, so content is beyond any key
    line = disclosure(out, "line", "search_warrant")
    assert "Letter Sealing" in line["not_provided"]["cryptographically_impossible"]["content"]
    # WeChat: name, phone, e-mail, IP for a non-China account
    (wechat,) = disclosure(out, "wechat", "subpoena")["provided"]["subscriber_info"]
    assert wechat["account"] == "tariq"
    assert disclosure(out, "wechat", "subpoena")["provided"]["ip_addresses"]


# --- backups: the second door (the chart's "limited" message content for iMessage and WhatsApp) ------


def _with_backup_warrant(profile: str, backup: str | None) -> Any:
    from dataclasses import replace

    from relaysim.sims.scenario import PersonSpec

    sc = resolve_scenario("fbi-chart")
    people = tuple(
        PersonSpec(p.name, p.devices, backup) if p.name == "tariq" and backup else p for p in sc.people
    )
    order = LegalProcessEvent(at=3 * 3600.0, process="backup_warrant", target="tariq", name="backup")
    return replace(
        sc,
        people=people,
        events=(*sc.events, order),
        relay=replace(sc.relay, profile=profile),
        matrix=False,
        compare_profiles=(),
    )


def _backup_disclosure(profile: str, backup: str | None) -> Any:
    from relaysim.sims.world.simulation import Simulation

    result = Simulation(_with_backup_warrant(profile, backup)).run()
    (d,) = [d for d in result.disclosures if d.process.name == "backup"]
    return d


@pytest.mark.parametrize(("profile", "custodian"), [("imessage", "Apple"), ("whatsapp", "Google")])
def test_content_is_limited_not_from_the_relay_but_from_the_backup(
    chart: tuple[Path, dict[str, Any]], profile: str, custodian: str
) -> None:
    """The chart's "limited": the relay's search warrant gets no content; a warrant on the backup
    custodian does, by default (iCloud Backup without Advanced Data Protection; WhatsApp's backup
    without end-to-end encrypted backups)."""
    _out, matrix = chart
    assert "content" in matrix[profile]["search_warrant"]["cryptographically_impossible"]
    d = _backup_disclosure(profile, None)
    texts = [r["text"] for r in d.provided["content"]]
    assert "I know. I will explain in person." in texts and "Yes, thank you, it arrived today." in texts
    assert "Change of plan, meet at the library." not in texts  # sent after service
    assert custodian in d.to_markdown()


@pytest.mark.parametrize(("profile", "backup"), [("imessage", "icloud-adp"), ("whatsapp", "gdrive-e2e")])
def test_end_to_end_backups_close_the_second_door(profile: str, backup: str) -> None:
    d = _backup_disclosure(profile, backup)
    assert "content" not in d.provided
    assert d.reasons["content"][0] == "cryptographically_impossible"


def test_a_person_without_a_cloud_backup_has_none_to_serve() -> None:
    d = _backup_disclosure("signal", None)
    assert d.reasons["content"][0] == "not_retained"


def test_a_backup_warrant_hands_over_only_its_window() -> None:
    """A warrant's from/to limit what the custodian hands over, as its disclosure says it covers
    ("records from … to …")."""
    from relaysim.relay.backup import disclose_backup
    from relaysim.relay.compliance import LegalProcess

    order = LegalProcess("backup", "backup_warrant", "tariq", served=300.0, start=100.0)
    history = [
        {"from": "tariq", "to": "ana", "time": t, "text": f"at {t:g}"} for t in (50.0, 100.0, 200.0, 400.0)
    ]
    d = disclose_backup(order, "imessage", "icloud", history)
    assert [r["text"] for r in d.provided["content"]] == ["at 100", "at 200"]
    assert "records from 100 to 300" in d.to_markdown()
    bounded = LegalProcess("backup", "backup_warrant", "tariq", served=300.0, start=100.0, end=150.0)
    assert [
        r["text"] for r in disclose_backup(bounded, "imessage", "icloud", history).provided["content"]
    ] == ["at 100"]


def test_a_backup_warrant_on_a_number_with_no_account_answers_no_such_account() -> None:
    """A phone number among an order's targets that is nobody's account: the custodian's answer, not
    a crash (the scenario accepts such targets; the relay's own desk answers them the same way)."""
    from dataclasses import replace

    from relaysim.sims.world.simulation import Simulation

    sc = _with_backup_warrant("imessage", None)
    order = LegalProcessEvent(
        at=3 * 3600.0,
        process="backup_warrant",
        target="+12025550143",
        targets=("+12025550143",),
        name="nobody",
    )
    result = Simulation(replace(sc, events=(*sc.events, order))).run()
    (d,) = [d for d in result.disclosures if d.process.name == "nobody-12025550143"]
    assert d.no_such_account and not d.provided
    assert "no such account" in d.to_markdown()


def test_the_printed_chart_says_its_date_and_the_cell_no_source_backs(
    chart: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    # The record: the FBI chart is "dated 2021-01-07; capabilities as of Nov 2020"; WhatsApp: "No source
    # shows WhatsApp returning ciphertext to a wiretap order" (In re Facebook Messenger, E.D. Cal. 2018).
    # matrix.md said both; the tables relaysim chart prints said neither.
    out, _matrix = chart
    assert main(["chart", str(out), "--width", "1000"]) == 0
    text = capsys.readouterr().out
    assert "Each provider as it was on 2021-01-07" in text
    assert "WhatsApp (`whatsapp`), wiretap order: no source shows WhatsApp returning ciphertext" in text
