"""The terminal view fits the terminal (issue #12, item 3): tables wrap between words at any width,
the phones' column names the sender, the relay's FROM cell under sealed sender reads "(sealed)",
``show`` counts what it leaves out, exceptional access is shown, and ``run`` ends with the orders."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest

from relaysim.sims.cli import main
from relaysim.sims.demo import render as render_wire
from relaysim.sims.demo import run_demo
from relaysim.sims.numbers import MAX_COLUMNS
from relaysim.sims.report import SEALED, read_run, render_show, show_rows
from relaysim.sims.term import MIN_WIDTH, SEP, terminal_width, use_color

WIDTHS = (80, 150)


def columns(text: str) -> list[str]:
    """Each column of the (first) table in ``text``, its cells' lines joined by spaces."""
    cols: list[list[str]] = []
    for line in text.splitlines():
        if SEP not in line:
            continue
        cells = line.split(SEP)
        while len(cols) < len(cells):
            cols.append([])
        for i, cell in enumerate(cells):
            if cell.strip():
                cols[i].append(cell.strip())
    return [" ".join(c) for c in cols]


def missing_words(cells: list[str], output: str) -> Counter[str]:
    """Words of the source cells that do not appear whole in the output (a cut word shows up as
    two fragments, neither of which counts)."""
    want = Counter(w for c in cells for w in c.split())
    got = Counter(re.split(r"[\s" + SEP + r"]+", output))
    return want - got


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("views")
    out = {}
    for name in ("two-friends", "ghost-device", "device-seizure"):
        assert main(["run", name, "--out", str(base / name), "--quiet"]) == 0
        out[name] = base / name
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["two-friends", "ghost-device", "device-seizure"])
def test_show_never_cuts_a_word(runs: dict[str, Path], name: str, width: int) -> None:
    text = render_show(runs[name], limit=None, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    events, _ = read_run(runs[name])
    cells = [c for row in show_rows(events) for c in row]
    assert not missing_words(cells, text)


@pytest.mark.parametrize("width", WIDTHS)
def test_wire_demo_never_cuts_a_word(width: int) -> None:
    steps = run_demo(5)
    text = render_wire(steps, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    cells = [f"{s.sender}: {s.sent}" for s in steps] + [s.received for s in steps]
    assert not missing_words(cells, text)


def test_the_check_catches_a_cut_word() -> None:
    assert missing_words(["79 bytes of ciphertext"], "79 bytes of ciph\nertext") == Counter({"ciphertext": 1})


@pytest.mark.parametrize("width", WIDTHS)
def test_sealed_sender_from_cell_is_visibly_empty_and_the_phones_name_the_sender(
    runs: dict[str, Path], width: int
) -> None:
    text = render_show(runs["ghost-device"], limit=None, width=width)
    _time, phones, frm, relay = columns(text)
    assert frm.split()[:2] == ["FROM", "(relay)"]
    assert set(frm.split()[2:]) == {SEALED}  # ghost-device runs under sealed sender: never a name
    assert "lena/1 sent to omar:" in phones and "omar/1 read, from lena/1:" in phones
    assert "lena" not in relay.replace("to lena", "").replace("lena/1 comes", "").replace(
        "lena/1 fetches", ""
    )


def test_without_sealed_sender_the_from_cell_names_the_account(runs: dict[str, Path]) -> None:
    _t, _phones, frm, _relay = columns(render_show(runs["two-friends"], limit=None, width=100))
    assert SEALED not in frm and "amira/1" in frm


def test_show_counts_the_rows_it_leaves_out_and_all_shows_them(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, _ = read_run(runs["two-friends"])
    total = len(show_rows(events))
    assert total > 5
    assert main(["show", str(runs["two-friends"]), "--limit", "5", "--width", "120"]) == 0
    out = capsys.readouterr().out
    assert f"… {total - 5} more rows not shown (of {total}): relaysim show {runs['two-friends']} --all" in out
    assert main(["show", str(runs["two-friends"]), "--all", "--width", "120"]) == 0
    out = capsys.readouterr().out
    assert "not shown" not in out
    assert len(columns(out)[0].split()) == total + 1  # one time per row, and the header


def test_show_has_the_ghost_reading_and_the_seized_phone(runs: dict[str, Path]) -> None:
    ghost = render_show(runs["ghost-device"], limit=None, width=120)
    _t, phones, _frm, relay = columns(ghost)
    assert "GHOST omar/2 read message 5:" in phones and "GHOST DEVICE omar/2 added to omar's account" in relay
    assert "the ghost omar/2 read messages 5, 7, 9" in ghost
    assert f"{runs['ghost-device']}/exceptional/ghost-device.md" in ghost
    seized = render_show(runs["device-seizure"], limit=None, width=120)
    assert "bruno/1 SEIZED; its keys copied" in columns(seized)[1]


def test_ghost_device_demo_shows_the_ghost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "ghost-device", "--out", str(tmp_path / "g"), "--width", "120"]) == 0
    out = capsys.readouterr().out
    assert "GHOST omar/2 read message" in columns(out)[1]


def test_no_colour_off_a_terminal_or_with_no_color(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color(Tty()) and not use_color(io.StringIO())
    assert "\x1b[" in render_show(runs["ghost-device"], width=120, color=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Tty())
    assert main(["show", str(runs["ghost-device"])]) == 0
    assert "\x1b[" not in capsys.readouterr().out


def test_show_takes_the_terminal_width_from_columns(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for width in WIDTHS:
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(["show", str(runs["two-friends"])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= width
        assert any(len(line) > width - 10 for line in lines)  # and it uses the width


def test_columns_is_bounded_and_read_in_ascii_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    """COLUMNS had no upper bound: COLUMNS=1000000000 laid every table out a billion columns wide
    (relaysim demo --wire ran past a minute, growing). And it was read by int(): "١٢٠" (Arabic-Indic
    digits) and " 120" were widths of 120, where --width refuses them."""
    monkeypatch.delenv("COLUMNS", raising=False)
    own = terminal_width()  # the terminal's own, or the default
    for columns, width in (("120", 120), ("10", MIN_WIDTH), (str(10**9), MAX_COLUMNS), ("9" * 5000, own)):
        monkeypatch.setenv("COLUMNS", columns)
        assert terminal_width() == width, columns
    for nonsense in ("abc", "-5", "0", "", "\u0661\u0662\u0660", " 120", "1_20", "0x78"):
        monkeypatch.setenv("COLUMNS", nonsense)
        assert terminal_width() == own, nonsense
    monkeypatch.setenv("COLUMNS", str(10**9))
    lines = render_wire(run_demo(2015)).splitlines()
    assert max(len(line) for line in lines) <= MAX_COLUMNS


def test_run_ends_with_one_line_per_legal_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "legal order pen-register-amira (pen_register): complied; handed over: ip_addresses, lookup_log, realtime_routing"
        f" — {out}/disclosures/pen-register-amira.md",
        "legal order search-warrant-amira (search_warrant): complied; handed over: subscriber_info, "
        "account_created, last_seen, ip_addresses, device_info, contacts, reverse_contacts, blocked_users, "
        "message_log, message_counts, lookup_log, location; not retained: group_membership, ciphertext; "
        f"cryptographically impossible: content — {out}/disclosures/search-warrant-amira.md",
    ]
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "cryptographically impossible: content ([disclosures/search-warrant-amira.md]" in md


def test_run_of_a_comparison_ends_with_each_profiles_orders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pk"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    orders = [line for line in lines if line.startswith("legal order ")]
    # the PTA's demand on BES, the court order on both: the demand named BES, not consumer BBM
    assert lines[-3:] == orders and len(orders) == 3
    assert not any("pta-blanket-demand" in line and "bbm-consumer" in line for line in orders)
    assert any(
        "bes" in line and "cryptographically impossible: content" in line and "bes/disclosures/" in line
        for line in orders
    )
    assert any(
        "bbm-consumer" in line and "withheld by policy" in line and "content" in line for line in orders
    )


def test_show_writes_a_messages_control_characters_as_escapes_never_to_the_terminal(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario file's message may hold ESC (a colour, a cursor move, a window title), CR or a
    bidirectional override: ``show`` passed them to the terminal, which obeyed them."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["two-friends"], run)
    hostile = "Hi \x1b[2J\x1b]0;title\x07 back\r over \u202eevil"
    lines = []
    for line in (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if "plaintext" in event:
            event["plaintext"] = hostile
        lines.append(json.dumps(event))
    (run / "transcript.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["show", str(run), "--width", "150"]) == 0
    out = capsys.readouterr().out
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", out), repr(out)
    phones = columns(out)[1]
    assert "Hi \\x1b[2J\\x1b]0;title\\x07 back\\x0d over \\u202eevil" in phones, phones


def test_a_message_refused_for_its_identity_key_or_as_a_self_send_is_not_shown_as_undecryptable() -> None:
    """The agent tells a refusal of a message that opened (``Undecryptable.reason``) from a decryption
    failure; the run records it (``reason``) and the teaching view says which, not "could not decrypt"."""
    base = {"t": 60.0, "kind": "undecryptable", "device": "nadia/1", "message": 4}
    rows = show_rows(
        [base, {**base, "reason": "untrusted_identity"}, {**base, "reason": "sealed_sender_self_send"}]
    )
    phones = [row[1] for row in rows]
    assert phones[0] == "nadia/1 could not decrypt message 4"
    assert "refused message 4" in phones[1] and "identity key" in phones[1]
    assert "could not decrypt" not in phones[1]
    assert "dropped message 4" in phones[2] and "self-send" in phones[2]
    # an envelope with no written message (a control message, the relay's forgery): said as such, never
    # "message None" nor "a control message" of what may be a forgery
    rows = show_rows([{**base, "message": None}, {**base, "message": None, "reason": "untrusted_identity"}])
    phones = [row[1] for row in rows]
    assert phones[0] == "nadia/1 could not decrypt an envelope that is no written message", phones
    assert phones[1].startswith("nadia/1 refused an envelope that is no written message: it decrypted"), (
        phones
    )


def test_a_mailbox_s_unread_envelope_is_named_by_the_device_its_record_names() -> None:
    """``show_rows`` named a mailbox's device as its account's device 1, so a record naming any other of
    its devices was not said to be the mailbox's; now the device is the one the record names."""
    opened = {"t": 1.0, "kind": "mailbox_opened", "device": "amira/1", "peer": "ben", "mailbox": "mbx-7f3a"}
    rows = show_rows(
        [
            opened,
            {"t": 2.0, "kind": "undecryptable", "device": "mbx-7f3a/2", "message": 3},
            {"t": 3.0, "kind": "duplicate_dropped", "device": "mbx-7f3a/1", "message": None},
        ]
    )
    assert [row[1] for row in rows if row[1]] == [
        "amira/1's mailbox for ben (mbx-7f3a/2) could not decrypt message 3",
        "amira/1's mailbox for ben (mbx-7f3a/1) dropped a second copy of a receipt or other control message",
    ]
