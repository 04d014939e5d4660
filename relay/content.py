"""What a message's plaintext carries, as this project's clients write it (``clients/agent.py``).

A provider that holds a content key (``relay.custody``: consumer BBM's global key, Telegram's cloud
chats) also wrote the clients, so it knows their content format: when its key opens a body it can
tell a text from a delivery receipt, as Signal's ``Content`` message tells a ``DataMessage`` from a
``ReceiptMessage``. The compliance desk uses this to hand over the words as words and a receipt as
a receipt, never a receipt's bytes dressed up as a message.

A text is carried as it is. A control content begins with :data:`CONTROL` and one kind byte:

========  ===================  =========================================================
kind      name                 what follows
========  ===================  =========================================================
``D``     delivery receipt     the relay timestamps (8 bytes each) of the messages received
``R``     read receipt         the same, for messages read
``C``     cover traffic        random padding (a dummy message, dropped on arrival)
``M``     mailbox address      delivery token (32) ‖ name length (1) ‖ name ‖ the text it carries
``K``     sender key           a SenderKeyDistributionMessage (``clients.groups``)
``S``     sync copy            destination length (1) ‖ destination ‖ the text sent
``E``     retry receipt        the device asking (4) ‖ what to resend
``G``     resend               distribution id (16) ‖ chain id (4) ‖ iteration (4) ‖ the text
========  ===================  =========================================================

The relay imports nothing from ``clients``; the clients import these constants from here, so the
two cannot drift apart.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONTROL",
    "CONTROL_KINDS",
    "COVER",
    "DELIVERY_RECEIPT",
    "MAILBOX",
    "MAILBOX_TOKEN_SIZE",
    "READ_RECEIPT",
    "RESEND",
    "RESEND_HEADER_SIZE",
    "RETRY",
    "SENDER_KEY",
    "SYNC",
    "read_content",
]

CONTROL: Final = b"\x00\xfe"
DELIVERY_RECEIPT: Final = b"D"
READ_RECEIPT: Final = b"R"
COVER: Final = b"C"
MAILBOX: Final = b"M"
SENDER_KEY: Final = b"K"
SYNC: Final = b"S"
RETRY: Final = b"E"
RESEND: Final = b"G"
MAILBOX_TOKEN_SIZE: Final = 32
RESEND_HEADER_SIZE: Final = 16 + 4 + 4  # distribution id ‖ chain id ‖ iteration

CONTROL_KINDS: Final = {
    DELIVERY_RECEIPT: "delivery receipt",
    READ_RECEIPT: "read receipt",
    COVER: "cover traffic",
    MAILBOX: "mailbox address",
    SENDER_KEY: "sender key",
    SYNC: "sync copy",
    RETRY: "retry receipt",
    RESEND: "resend",
}


def read_content(plaintext: bytes) -> tuple[str, bytes | None]:
    """``(kind, words)``: ``("message", text)`` for a text; for a control content its name from
    :data:`CONTROL_KINDS` (``"control"`` for a kind this table does not know) and the words it
    carries — a sync copy's, a resend's, or the text a mailbox address rides on — or None."""
    if not plaintext.startswith(CONTROL):
        return "message", plaintext
    code, rest = plaintext[2:3], plaintext[3:]
    kind = CONTROL_KINDS.get(code, "control")
    words: bytes | None = None
    if code == SYNC and rest:
        words = rest[1 + rest[0] :]
    elif code == RESEND and len(rest) >= RESEND_HEADER_SIZE:
        words = rest[RESEND_HEADER_SIZE:]
    elif code == MAILBOX and len(rest) > MAILBOX_TOKEN_SIZE:
        words = rest[MAILBOX_TOKEN_SIZE + 1 + rest[MAILBOX_TOKEN_SIZE] :]
    return kind, words or None
