"""The device's two kinds of failure.

``DecryptionError`` is the only thing a peer's bad input can make the device raise while it
decrypts or opens an envelope. Its message is always the same: whether a tag, a padding, a
header key, a skipped-key limit or a certificate failed stays private, so an attacker who
sends forged messages learns nothing from the error (compare ``cryptography``'s Fernet,
which turns every failure into one ``InvalidToken``).

Two refusals of a message that did open are not decryption failures and have their own types, as in
libsignal: ``clients.identity.UntrustedIdentity`` (an identity key the user has not approved) and
``SealedSenderSelfSend`` below. Only a message that authenticated can raise them, so they tell a
forger nothing.

``UsageError`` is the local side doing something that cannot work (sending on a session that
has no sending chain yet, a key of the wrong length). It is a bug in the caller, not an attack.
"""

from __future__ import annotations


class DecryptionError(Exception):
    """The message could not be decrypted. On purpose, nothing more is said."""

    def __init__(self) -> None:
        super().__init__("message could not be decrypted")


class UsageError(Exception):
    """The caller asked for something this session or key cannot do."""


class SealedSenderSelfSend(Exception):
    """A sealed envelope that opened, whose certificate checked and names this very device (its account
    and device id): libsignal's ``SealedSenderSelfSend`` (``sealed_sender_decrypt``, checked after the
    certificate is validated). Not a decryption failure: the envelope authenticated, and only the
    holder of the identity key the certificate names can have sealed it; the message inside is not
    read. Signal's clients drop such a message."""

    def __init__(self, account: str, device: int) -> None:
        super().__init__(
            f"a sealed message from this very device ({account}.{device}): refused as a self-send"
        )
        self.account, self.device = account, device
