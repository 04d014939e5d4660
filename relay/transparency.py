"""Key transparency, the relay's half: an append-only Merkle log of every identity key it serves.

The relay appends one leaf — ``relay.wire.kt_leaf(account, device, identity_key)`` — each time a
device registers, and signs the tree head with its server key (the Ed25519 key that signs sender
certificates, ``relay.certificates.ServerSigningKey``), again with a fresh timestamp once the head
is older than ``relay.wire.KEY_LOG_HEAD_REFRESH`` (``relay.core.RelayCore.key_log_head``, RFC 6962
§3.5), so that devices can refuse an old head replayed. With each bundle it can then show the
inclusion proof of the keys it hands out; devices check those proofs, audit their own account's
entries, and compare heads with one another (``clients/transparency.py``). A device the provider
adds in secret must then either be in the log, where the account's own devices see it, or the
provider must show different logs to different devices, and two heads that cannot both be true
give it away. That is the design of CONIKS (Melara et al., USENIX Security 2015) and of WhatsApp's
Auditable Key Directory (2023), on the log of Certificate Transparency.

The tree is RFC 9162 §2.1 (Certificate Transparency 2.0, as RFC 6962 §2.1 before it):

* leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``;
* MTH over n > 1 leaves splits at k, the largest power of two smaller than n; MTH({}) = SHA-256();
* the inclusion proof (audit path, §2.1.3.1) and the consistency proof (§2.1.4.1) are built
  by the recursions given there (PATH and SUBPROOF).

Sans-IO: nothing here reads a clock or draws randomness; the caller passes the time it signs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from relaysim.relay import wire
from relaysim.relay._primitives import Ed25519Signer, ed25519_verify

__all__ = [
    "MerkleLog",
    "SignedTreeHead",
    "TreeHeadSigner",
    "largest_power_of_two_below",
    "leaf_hash",
    "node_hash",
]


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d0}) = HASH(0x00 || d0)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n > 1): where RFC 9162 §2.1.1 splits a tree of n leaves."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves does not split")
    return 1 << ((n - 1).bit_length() - 1)


class MerkleLog:
    """An append-only list of leaves and the RFC 9162 Merkle tree over every prefix of it."""

    def __init__(self, leaves: list[bytes] | None = None) -> None:
        self._leaves: list[bytes] = []
        self._hashes: list[bytes] = []
        self._complete: dict[tuple[int, int], bytes] = {}  # full, aligned subtrees never change
        for leaf in leaves or []:
            self.append(leaf)

    def __len__(self) -> int:
        return len(self._leaves)

    def leaf(self, index: int) -> bytes:
        return self._leaves[index]

    def leaves(self) -> list[bytes]:
        return list(self._leaves)

    def append(self, leaf: bytes) -> int:
        """Add one leaf; its index."""
        self._leaves.append(bytes(leaf))
        self._hashes.append(leaf_hash(leaf))
        return len(self._leaves) - 1

    def _check_size(self, size: int | None) -> int:
        n = len(self._leaves) if size is None else size
        if not 0 <= n <= len(self._leaves):
            raise ValueError(f"tree size {n} is outside 0..{len(self._leaves)}")
        return n

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self._hashes[lo]
        complete = n & (n - 1) == 0
        if complete and (lo, hi) in self._complete:
            return self._complete[lo, hi]
        k = largest_power_of_two_below(n)
        h = node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))
        if complete:
            self._complete[lo, hi] = h
        return h

    def root(self, size: int | None = None) -> bytes:
        """The Merkle Tree Hash of the first ``size`` leaves (all of them by default)."""
        return self._mth(0, self._check_size(size))

    def inclusion_path(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) of RFC 9162 §2.1.3.1, for leaf ``index`` in the tree of ``size`` leaves."""
        n = self._check_size(size)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} is outside a tree of {n} leaves")
        return self._path(index, 0, n)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = largest_power_of_two_below(n)
        if m < k:
            return [*self._path(m, lo, lo + k), self._mth(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self._mth(lo, lo + k)]

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 9162 §2.1.4.1: the tree of ``first`` leaves is a prefix of ``second``.

        Defined for 0 < m < n; for m == n and for m == 0 the proof is empty (there is nothing to show).
        """
        n = self._check_size(second)
        if not 0 <= first <= n:
            raise ValueError(f"first tree size {first} is outside 0..{n}")
        if first in (0, n):
            return []
        return self._subproof(first, 0, n, True)

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self._mth(lo, hi)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, whole), self._mth(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._mth(lo, lo + k)]

    def indices_of(self, account: str) -> list[int]:
        """The indices of every leaf that names ``account`` (what an audit of that account reads)."""
        return [i for i, leaf in enumerate(self._leaves) if wire.kt_leaf_decode(leaf)[0] == account]


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A tree size, its root, when it was signed, and the server key's signature over all three."""

    tree_size: int
    timestamp: int
    root_hash: bytes
    signature: bytes

    def body(self) -> bytes:
        return wire.kt_tree_head_body(self.tree_size, self.timestamp, self.root_hash)

    def verify(self, server_public: bytes) -> bool:
        return ed25519_verify(server_public, self.body(), self.signature)


class TreeHeadSigner:
    """Signs tree heads with an Ed25519 key (the relay's server key)."""

    def __init__(self, private: bytes) -> None:
        self._key = Ed25519Signer(private)
        self.public = self._key.public

    def sign(self, log: MerkleLog, timestamp: int, size: int | None = None) -> SignedTreeHead:
        n = len(log) if size is None else size
        root = log.root(n)
        return SignedTreeHead(n, timestamp, root, self._key.sign(wire.kt_tree_head_body(n, timestamp, root)))
