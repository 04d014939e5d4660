"""Pinned identities: a device remembers each peer device's identity key from first contact.

Trust on first use, as Signal's clients do (libsignal's ``IdentityKeyStore``): the first identity
key seen for a peer address is saved. A different key later for the same address — a bundle the
relay hands out, or a prekey message it labels with that address — is an ``IdentityChanged``,
never a silent replacement. What happens then is the device's policy:

- ``warn`` (Signal's default, "safety number changed"): the new key is accepted and saved, and
  the change is reported so the app can show it;
- ``block`` (Signal's "blocking" setting, approval required): the new key is refused — no
  session is made with it, no message from it is accepted, nothing is sent to it — until the user
  verifies or approves it (``verify`` / ``approve``).

A peer whose safety number the user has verified (``verify``) is always blocking: a key change
undoes the verification and waits for the user, whatever the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["IDENTITY_POLICIES", "IdentityChanged", "IdentityStore", "PeerAddress", "UntrustedIdentity"]


class PeerAddress(NamedTuple):
    """One device of one account (re-exported by ``clients.session``).

    A named tuple rather than a frozen dataclass: the same fields, order, equality between addresses
    and hash (that of ``(account, device)``), but made, hashed and compared in C. A device looks its
    sessions and pinned keys up by address several times per message, and the dataclass's Python
    ``__init__``, ``__hash__`` and ``__eq__`` cost ~0.6 µs each time."""

    account: str
    device: int


IDENTITY_POLICIES = ("warn", "block")


@dataclass(frozen=True)
class IdentityChanged:
    """``peer`` now presents ``new`` where ``previous`` was pinned.

    ``via``: ``"bundle"`` (a fetched prekey bundle) or ``"message"`` (a prekey message).
    ``accepted``: the device took the new key (policy ``warn``); False: it refused it and waits for
    the user. ``was_verified``: the user had verified the previous key."""

    peer: PeerAddress
    previous: bytes
    new: bytes
    via: str
    accepted: bool
    was_verified: bool


class UntrustedIdentity(Exception):
    """A peer's identity key changed and the device's policy (or a verification) blocks it.

    Not a ``DecryptionError``: nothing failed to decrypt (a message refused so did authenticate, on
    a copy of its session), and a caller must be able to tell it from one, which says nothing of the
    check that failed. libsignal too keeps it apart: ``SignalProtocolError::UntrustedIdentity``, not
    ``InvalidMessage``. When it is raised differs: libsignal checks a prekey message's identity key
    before decrypting it (``process_prekey``, rust/protocol/src/session.rs) and a message on a
    session after (``message_decrypt_signal``, session_management.rs); here both are checked after,
    so that a forgery (which does not decrypt) raises the one ``DecryptionError`` and reports no
    change. Either way nothing is stored: the sessions, prekeys and pinned keys stay as they were
    (the change is recorded, to be reported once)."""

    def __init__(self, change: IdentityChanged) -> None:
        Exception.__init__(
            self, f"identity key of {change.peer.account}.{change.peer.device} changed: waiting for the user"
        )
        self.change = change


class IdentityStore:
    """The identity key pinned per peer address, whether the user verified it, and the changes seen."""

    def __init__(self, policy: str = "warn") -> None:
        if policy not in IDENTITY_POLICIES:
            raise ValueError(f"identity policy must be one of {', '.join(IDENTITY_POLICIES)}, got {policy!r}")
        self.policy = policy
        self._pinned: dict[PeerAddress, bytes] = {}
        # Sets kept as dicts of None: an empty set is 216 B, an empty dict 64 (a store per phone).
        self._verified: dict[PeerAddress, None] = {}
        self._changes: list[IdentityChanged] = []
        self._reported: dict[tuple[PeerAddress, bytes, bytes], None] = {}  # a blocked key is reported once

    def pinned(self, peer: PeerAddress) -> bytes | None:
        return self._pinned.get(peer)

    def pinned_peers(self, account: str) -> list[PeerAddress]:
        """The devices of ``account`` this device has pinned a key for."""
        return sorted(p for p in self._pinned if p.account == account)

    def is_verified(self, peer: PeerAddress) -> bool:
        return peer in self._verified

    def blocks(self, peer: PeerAddress, key: bytes) -> bool:
        """Whether ``check(peer, key, …)`` would refuse ``key`` now. Records nothing."""
        known = self._pinned.get(peer)
        return known is not None and known != key and (peer in self._verified or self.policy != "warn")

    def check(self, peer: PeerAddress, key: bytes, via: str) -> IdentityChanged | None:
        """Is ``key`` trusted for ``peer``? None: first contact or the pinned key. Otherwise the
        change, already recorded; raises ``UntrustedIdentity`` when it is blocked."""
        known = self._pinned.get(peer)
        if known is None or known == key:
            return None
        verified = peer in self._verified
        change = IdentityChanged(peer, known, key, via, not verified and self.policy == "warn", verified)
        if (peer, known, key) not in self._reported:
            self._reported[(peer, known, key)] = None
            self._changes.append(change)
        if not change.accepted:
            raise UntrustedIdentity(change)
        return change

    def check_account(self, peer: PeerAddress, key: bytes, via: str) -> IdentityChanged | None:
        """The "account" identity model (Signal: linked devices share the account's identity key):
        is ``key`` the one pinned for ``peer``'s account? A device of a known account presenting
        another key — one the account's own devices never received at linking — is the account's
        safety number changing. None: no device of that account pinned yet, or the same key.
        Otherwise the change, recorded against the new device; raises ``UntrustedIdentity`` when
        blocked (the policy, or any device of the account verified)."""
        known = sorted((p, k) for p, k in self._pinned.items() if p.account == peer.account and p != peer)
        if not known or any(k == key for _, k in known) or self._pinned.get(peer) == key:
            return None
        previous = known[0][1]
        verified = any(p in self._verified for p, _ in known)
        change = IdentityChanged(peer, previous, key, via, not verified and self.policy == "warn", verified)
        if (peer, previous, key) not in self._reported:
            self._reported[(peer, previous, key)] = None
            self._changes.append(change)
        if not change.accepted:
            raise UntrustedIdentity(change)
        return change

    def pin(self, peer: PeerAddress, key: bytes) -> None:
        """Save ``key`` for ``peer`` (after ``check`` let it through and the session authenticated)."""
        if self._pinned.get(peer) != key:
            self._verified.pop(peer, None)
        self._pinned[peer] = key

    def approve(self, peer: PeerAddress, key: bytes) -> None:
        """The user accepts ``key`` for ``peer`` without verifying it."""
        self.pin(peer, key)

    def verify(self, peer: PeerAddress, key: bytes) -> None:
        """The user compared safety numbers and they matched for ``key``: pinned and verified."""
        self._pinned[peer] = key
        self._verified[peer] = None

    def take_changes(self) -> list[IdentityChanged]:
        out, self._changes = self._changes, []
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "pinned": [
                [p.account, p.device, k, p in self._verified] for p, k in sorted(self._pinned.items())
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IdentityStore:
        store = cls(d["policy"])
        for account, device, key, verified in d["pinned"]:
            peer = PeerAddress(account, device)
            store._pinned[peer] = key
            if verified:
                store._verified[peer] = None
        return store
