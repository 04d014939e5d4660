"""relay.content: the desk reads the clients' content format as the clients write it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import agent
from relaysim.relay import content
from relaysim.relay.content import CONTROL, read_content


def test_a_text_is_a_message() -> None:
    assert read_content(b"See you at 4.") == ("message", b"See you at 4.")


def test_receipts_covers_keys_and_retries_carry_no_words() -> None:
    stamp = (1_700_000_000_000).to_bytes(8, "big")
    assert read_content(CONTROL + b"D" + stamp) == ("delivery receipt", None)
    assert read_content(CONTROL + b"R" + stamp * 2) == ("read receipt", None)
    assert read_content(CONTROL + b"C" + b"\x13" * 40) == ("cover traffic", None)
    assert read_content(CONTROL + b"K" + b"skdm") == ("sender key", None)
    assert read_content(CONTROL + b"E" + b"\x00\x00\x00\x01P" + b"i" * 16) == ("retry receipt", None)
    assert read_content(CONTROL + b"?") == ("control", None)  # a kind the table does not know


def test_the_controls_that_carry_words_give_them() -> None:
    assert read_content(CONTROL + b"S" + b"\x03bob" + b"on my way") == ("sync copy", b"on my way")
    header = b"d" * 16 + b"\x00\x00\x00\x07" + b"\x00\x00\x00\x02"
    assert read_content(CONTROL + b"G" + header + b"to the group") == ("resend", b"to the group")
    intro = CONTROL + b"M" + b"t" * 32 + b"\x04box1"
    assert read_content(intro + b"hello") == ("mailbox address", b"hello")
    assert read_content(intro) == ("mailbox address", None)


def test_the_clients_write_the_format_this_module_reads() -> None:
    # clients/agent.py takes its constants from here; a drift would show as a wrong kind at the desk.
    assert agent.CONTROL is content.CONTROL
    assert agent._RECEIPT_KINDS == {b"D": "delivery", b"R": "read"}
    assert (agent._COVER, agent._MAILBOX, agent._SENDER_KEY, agent._SYNC, agent._RETRY, agent._RESEND) == (
        b"C",
        b"M",
        b"K",
        b"S",
        b"E",
        b"G",
    )


@given(st.binary(max_size=80))
def test_any_bytes_read_without_an_exception(body: bytes) -> None:
    for plaintext in (body, CONTROL + body):
        kind, words = read_content(plaintext)
        assert kind in {"message", "control", *content.CONTROL_KINDS.values()}
        if kind == "message":
            assert words == plaintext
        else:
            assert words is None or (words and plaintext.endswith(words))
