"""Message content under keys someone other than the two phones holds.

Most profiles are end-to-end: the devices' Double Ratchet keys never leave them, and nothing
here applies. Three designs are not, and relaysim runs them for real so that the contrast is
shown rather than asserted:

- **a provider-held key** — consumer BlackBerry PIN/BBM used one global key the provider held;
  Telegram's cloud chats are encrypted between client and server, with the keys on the server;
- **an enterprise-held key** — BlackBerry Enterprise Server: the customer's own server
  generates and holds the keys; the carrier relay only routes;

A ``ContentKey`` seals a message body with AES-256-GCM under a fresh random 96-bit nonce drawn
from the caller's RNG inside this module (a random GCM nonce is fine for the number of messages
a key sees here; NIST SP 800-38D §8.3 bounds it at 2^32 invocations per key).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from relaysim.relay._primitives import aes_gcm_decrypt, aes_gcm_encrypt

__all__ = ["CUSTODY_TAG", "ContentKey", "route_ad"]

RNG = Callable[[int], bytes]
CUSTODY_TAG = b"\xc5"  # first byte of a body sealed under a ContentKey
_NONCE = 12


@dataclass(frozen=True)
class ContentKey:
    """A symmetric key that seals message bodies; ``holder`` says who else has it."""

    key_id: str
    key: bytes
    holder: str  # "provider" or "enterprise"

    def seal(self, plaintext: bytes, associated_data: bytes, rng: RNG = os.urandom) -> bytes:
        nonce = rng(_NONCE)
        return CUSTODY_TAG + nonce + aes_gcm_encrypt(self.key, nonce, plaintext, associated_data)

    def open(self, body: bytes, associated_data: bytes) -> bytes | None:
        """The plaintext, or None when this key does not open ``body``."""
        if len(body) < 1 + _NONCE + 16 or body[:1] != CUSTODY_TAG:
            return None
        return aes_gcm_decrypt(self.key, body[1 : 1 + _NONCE], body[1 + _NONCE :], associated_data)


def route_ad(recipient: str) -> bytes:
    """Associated data binding a sealed body to the account it is addressed to."""
    return b"relaysim-custody\x00" + recipient.encode()
