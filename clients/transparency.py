"""Key transparency, the devices' half: check what the relay's log proves, and compare heads.

The relay keeps an append-only Merkle log of every (account, device, identity key) it serves and
signs its tree heads (``relay/transparency.py``). A device

* **verifies inclusion** of every identity key it is given: the key's leaf is in the tree whose
  signed head the relay showed (``verify_inclusion``, RFC 9162 §2.1.3.2);
* **audits its own account**: it reads the whole log up to a signed head, checks that the leaves
  hash to that head's root, and that the entries naming its account are exactly its own devices
  (``audit``; the monitor of RFC 9162 §8.2, the self-audit of CONIKS and of WhatsApp's Auditable
  Key Directory);
* **compares heads** with others through a witness (``Witness``): two signed heads of the same
  size with different roots, or two heads no valid consistency proof (RFC 9162 §2.1.4.2) joins,
  are proof, signed by the relay's own key, that it showed different logs to different people.

Over the wire (``relay.wire``'s ``get_key_log_head``, ``get_key_log_entries`` and
``get_key_log_consistency``, RFC 9162 §5.2–§5.4) a device fetches the head and the entries for its
audit and the consistency proofs that join heads (``clients.agent.DeviceAgent.audit_key_log`` and
``compare_key_log_head``); the witness asks for the proofs it needs (``Witness.wanted``,
``Witness.proof_received``); heads travel between phones and the witness as ``encode_head`` bytes.
A proof that is malformed for the sizes it claims to join raises ``ProofError`` naming what is wrong
(``check_consistency``), apart from one that is well formed and does not join them.

A head the relay serves a device must also be **fresh** (``check_fresh``): the relay signs its head
again with the time now once it is older than ``relay.wire.KEY_LOG_HEAD_REFRESH`` (RFC 6962 §3.5),
so a device refuses one older than ``MAX_HEAD_AGE`` by its own clock, and one older than a head it
already took of the same or a larger size: an old head replayed, or a view of the log frozen for it,
which no proof of inclusion or consistency can reveal (they hold for an old head as for the current),
and one of a smaller tree than a head it already took, however recently signed: the log rolled back
to a prefix (consistent with the larger head, so no proof reveals that either) to hide what followed.
It refuses one signed more than ``MAX_HEAD_AHEAD`` after its clock's time too, which, taken, would make
every honest head after it look old.

Only ``hashlib`` and the Ed25519 check of ``clients._primitives``; nothing from ``relay`` but the
two encodings and the refresh period in ``relay.wire`` both sides share.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from relaysim.clients._primitives import ed25519_verify
from relaysim.relay import wire

__all__ = [
    "MAX_HEAD_AGE",
    "MAX_HEAD_AHEAD",
    "AuditResult",
    "Fork",
    "ProofError",
    "TreeHead",
    "Witness",
    "audit",
    "check_consistency",
    "check_fresh",
    "consistency_proof_size",
    "decode_head",
    "encode_head",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over the leaves (RFC 9162 §2.1.1), computed from scratch by the device itself."""
    level = [_leaf_hash(x) for x in leaves]
    if not level:
        return EMPTY_ROOT
    # Pairing left to right and carrying an odd last node up unchanged gives the same tree as
    # splitting at the largest power of two below n (RFC 9162 §2.1.1).
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def verify_inclusion(leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: is ``leaf`` the ``index``-th leaf of the tree of ``tree_size`` with ``root``?"""
    if not 0 <= index < tree_size or any(len(p) != 32 for p in path):
        return False
    fn, sn = index, tree_size - 1
    r = _leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``first`` leaves a prefix of the tree of ``second``?

    For first == second the proof is empty and the roots must be equal; every tree extends the
    empty one (first == 0) with an empty proof. Otherwise the algorithm of §2.1.4.2, step by step.
    """
    if not 0 <= first <= second or any(len(p) != 32 for p in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:  # step 1
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # step 2: first is an exact power of two
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0  # step 7


class ProofError(ValueError):
    """A proof (or a head, or an entry) from the relay or a peer that is malformed: the message says
    which proof, what was expected and what came."""


def consistency_proof_size(first: int, second: int) -> int:
    """How many hashes PROOF(first, D[second]) of RFC 9162 §2.1.4.1 has (0 when first is 0 or second)."""
    if not 0 <= first <= second:
        raise ProofError(f"consistency proof: sizes {first} → {second}: the first must be 0 ≤ first ≤ second")
    if first in (0, second):
        return 0
    size, m, n, whole = 0, first, second, True
    while m != n:  # SUBPROOF(m, D[n], b), one level per round
        k = 1 << ((n - 1).bit_length() - 1)
        size += 1
        if m <= k:
            n = k
        else:
            m, n, whole = m - k, n - k, False
    return size + (0 if whole else 1)


def check_consistency(first: TreeHead, second: TreeHead, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 between two heads (in either order): True if the smaller tree is a prefix of the
    larger one. A proof that cannot be one for these sizes (a hash that is not 32 bytes, the wrong
    number of hashes) raises ``ProofError`` saying so; a well-formed one that does not join the two
    roots returns False."""
    small, large = (first, second) if first.tree_size <= second.tree_size else (second, first)
    what = f"consistency proof from tree size {small.tree_size} to {large.tree_size}"
    for i, p in enumerate(proof):
        if not isinstance(p, bytes) or len(p) != 32:
            got = f"{len(p)} bytes" if isinstance(p, bytes) else type(p).__name__
            raise ProofError(f"{what}: hash [{i}] must be 32 bytes (SHA-256), got {got}")
    want = consistency_proof_size(small.tree_size, large.tree_size)
    if len(proof) != want:
        raise ProofError(f"{what}: expected {want} hashes, got {len(proof)}")
    return verify_consistency(small.tree_size, large.tree_size, small.root_hash, large.root_hash, proof)


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head as a device received it (the relay's ``SignedTreeHead``, field for field)."""

    tree_size: int
    timestamp: int
    root_hash: bytes
    signature: bytes

    def same_tree(self, other: TreeHead) -> bool:
        """Whether ``other`` is a head of the same tree (size and root): the same head, or it signed again
        at another time (RFC 6962 §3.5), which is neither a fork nor anything to prove consistent."""
        return self.tree_size == other.tree_size and self.root_hash == other.root_hash

    def verify(self, server_public: bytes) -> bool:
        try:
            body = wire.kt_tree_head_body(self.tree_size, self.timestamp, self.root_hash)
        except ValueError:
            return False
        return ed25519_verify(server_public, body, self.signature)


# The oldest a head the relay serves may be, in seconds by the device's clock: the relay's promise
# (relay.wire.KEY_LOG_HEAD_REFRESH: never a head older than that by its clock) and as much again for
# the device's clock and the relay's to disagree and for the answer's time on the way. Older, the
# head is refused: it is not the relay's current one (RFC 6962 §3.5; CT clients hold an STH to the
# log's Maximum Merge Delay likewise). A device clock more than an hour fast refuses every head.
MAX_HEAD_AGE: Final = 2 * wire.KEY_LOG_HEAD_REFRESH

# How far ahead of the device's clock a head's timestamp may be, in seconds: the same hour MAX_HEAD_AGE
# allows the two clocks to disagree by. Further ahead, the head is refused: taken, it would make every
# honest head of its size or smaller "older than a head already taken" (check_fresh) until the relay's
# clock caught up with it, so one head signed a year ahead would lock a device out of its audits and
# its contacts' keys for a year. Within the bound a fast relay clock costs at most that hour (the
# relay signs its head again within KEY_LOG_HEAD_REFRESH of its clock passing it). A device clock
# more than an hour slow refuses every head.
MAX_HEAD_AHEAD: Final = wire.KEY_LOG_HEAD_REFRESH


def check_fresh(
    head: TreeHead,
    now: float,
    accepted: Iterable[TreeHead] = (),
    max_age: float = MAX_HEAD_AGE,
    max_ahead: float = MAX_HEAD_AHEAD,
) -> None:
    """Refuse, with ``ProofError`` saying why, a head the relay served that is not its current one:
    one signed more than ``max_age`` seconds before ``now`` (the device's clock), or one older than a
    head in ``accepted`` (those the device already took from the relay) of the same or a larger tree
    size. The relay serves only its current head, signed no earlier than any head it served before
    (relay.core.RelayCore.key_log_head), and its log only grows: such a head was signed before one the
    device already has, an old head replayed. For the same reason refuse a head of a smaller tree than
    one accepted, however recently signed: a prefix of the log re-signed, which every consistency proof
    joins to the larger head, and which would hide from an audit the entries after it (a ghost device
    the device was shown a head of). A head of another tree than one accepted (a larger one, or
    another root) must be signed strictly after it: the same time is only for the same tree served
    again, and a larger tree signed no later than a smaller one accepted is a log that was
    shown going back. Refuse too a head signed more than ``max_ahead`` seconds
    after ``now``: up to that the device's clock may be the one behind (``MAX_HEAD_AHEAD``), and
    further it would make the relay's honest heads after it look old."""
    age = now - head.timestamp
    what = f"tree head of size {head.tree_size} signed at {head.timestamp}"
    if age > max_age:
        raise ProofError(
            f"{what} is {math.ceil(age)} s old by this device's clock, more than the {max_age:.0f} s a "
            f"current head may be: stale or replayed, or the relay's clock is more than "
            f"{max(0, max_age - wire.KEY_LOG_HEAD_REFRESH):.0f} s behind this device's (the relay signs "
            f"its head again only once it is {wire.KEY_LOG_HEAD_REFRESH} s old by its own clock), or "
            "this device's clock is fast"
        )
    if -age > max_ahead:
        raise ProofError(
            f"{what} is {math.ceil(-age)} s ahead of this device's clock, more than the {max_ahead:.0f} s a "
            "relay's clock may be ahead of it: a head from the future"
        )
    for seen in accepted:
        if seen.tree_size >= head.tree_size and seen.timestamp > head.timestamp:
            raise ProofError(
                f"{what} is older than the head of size {seen.tree_size} signed at {seen.timestamp} "
                "this device already accepted: heads went back in time (an old head replayed)"
            )
        if seen.tree_size > head.tree_size:
            raise ProofError(
                f"{what} is of a smaller tree than the head of size {seen.tree_size} signed at "
                f"{seen.timestamp} this device already accepted: the log went back (it only grows)"
            )
        if seen.timestamp >= head.timestamp and not seen.same_tree(head):
            raise ProofError(
                f"{what} is of another tree than the head of size {seen.tree_size} signed at "
                f"{seen.timestamp} this device already accepted, and not signed after it: a head of a "
                "new tree must be more recent than every head before it (RFC 6962 §3.5)"
            )


def encode_head(head: TreeHead) -> bytes:
    """A signed head as it is gossiped between phones and the witness: msgpack [size, time, root, sig]."""
    return msgpack.packb([head.tree_size, head.timestamp, head.root_hash, head.signature], use_bin_type=True)


def decode_head(data: bytes) -> TreeHead:
    """A gossiped head (``encode_head``); ``ProofError`` naming the field that is wrong. Unverified: check
    ``TreeHead.verify`` against the server key."""
    try:
        obj = wire.unpack_value(data, "gossiped tree head")  # (what is wrong said in the wire's words)
    except wire.MsgpackError as e:
        raise ProofError(str(e)) from None
    if not isinstance(obj, list) or len(obj) != 4:
        raise ProofError("gossiped tree head: expected [tree_size, timestamp, root_hash, signature]")
    size, stamp, root, signature = obj
    for name, value in (("tree_size", size), ("timestamp", stamp)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise ProofError(  # (what it got in msgpack's words, nil, true, ext 5 b'x', as the wire says it)
                f"gossiped tree head: {name} must be an integer from 0 to 2**64 - 1, got {wire.value_text(value)}"
            )
    for name, value, n in (("root_hash", root, 32), ("signature", signature, 64)):
        if not isinstance(value, bytes) or len(value) != n:
            got = f"{len(value)} bytes" if isinstance(value, bytes) else wire.type_name(value)
            raise ProofError(f"gossiped tree head: {name} must be {n} bytes, got {got}")
    return TreeHead(size, stamp, root, signature)


@dataclass(frozen=True, slots=True)
class AuditResult:
    """What one device's audit of its own account found."""

    ok: bool  # the leaves hash to the signed root and the account shows exactly the expected devices
    log_matches_head: bool
    unexpected: tuple[tuple[int, bytes], ...]  # (device, identity key) in the log the device did not expect
    missing: tuple[tuple[int, bytes], ...]  # expected but not in the log


def audit(
    account: str,
    expected: set[tuple[int, bytes]],
    leaves: Sequence[bytes],
    head: TreeHead,
    server_public: bytes,
    known_devices: frozenset[int] = frozenset(),
) -> AuditResult:
    """Read the log up to ``head`` and compare ``account``'s entries with the devices it should have.

    ``expected`` is every (device, identity key) the account's owner put there. A key that was
    replaced stays in the log (it is append-only), so it belongs in ``expected`` too; or name the
    device in ``known_devices``, and any key the log holds for it is taken as one of its own.
    """
    matches = (
        head.verify(server_public) and len(leaves) == head.tree_size and root_of(leaves) == head.root_hash
    )
    seen: set[tuple[int, bytes]] = set()
    for leaf in leaves:
        name, device, key = wire.kt_leaf_decode(leaf)
        if name == account:
            seen.add((device, key))
    expected = expected | {(d, k) for d, k in seen if d in known_devices}
    unexpected = tuple(sorted(seen - expected))
    missing = tuple(sorted(expected - seen))
    return AuditResult(matches and not unexpected and not missing, matches, unexpected, missing)


@dataclass(frozen=True, slots=True)
class Fork:
    """Two signed heads from the same relay that cannot both describe one append-only log."""

    first: TreeHead
    second: TreeHead
    seen_by: tuple[str, str]
    why: str


# Asked by the witness for a consistency proof between two tree sizes (the relay's answer).
ConsistencyOracle = Callable[[int, int], Sequence[bytes]]


class Witness:
    """Collects every signed head that every device saw, and finds heads that fork the log.

    Gossip, in the simulation one witness all devices report to (as the witness cosigners of
    transparency logs or CONIKS's auditors). A fork is two validly signed heads of the same size
    with different roots, or of different sizes that no consistency proof joins.

    Sans-IO: with ``prove`` (a function that answers at once) the witness checks each new pair of
    sizes as it sees it; without, ``wanted`` lists the (first, second) sizes whose consistency proofs
    it needs from the relay (``relay.wire.GetKeyLogConsistency``, each asked once), and
    ``proof_received`` checks every pair of heads of those sizes against the answer. ``latest`` is
    the newest head of the largest tree it holds, what it gossips back to the phones.

    It holds one head per tree (size and root): the newest of that tree it was shown, and who showed
    it (``heads``). Every comparison a head takes part in — the roots of two heads of one size, a
    consistency proof between two sizes — depends on its size and root alone, so another head of a
    tree held (the relay signs its head again every hour, RFC 6962 §3.5, and every device gossips the
    head it was given) finds nothing the held one did not, and only the newest is wanted for
    ``latest``. So what it holds grows with the log (and the forks it shows), not with time.
    """

    def __init__(self, server_public: bytes, prove: ConsistencyOracle | None = None) -> None:
        self.server_public = server_public
        self.prove = prove
        # (tree size, root) → (when first held: an observation count, who showed it, the newest head)
        self._trees: dict[tuple[int, bytes], tuple[int, str, TreeHead]] = {}
        self._observed = 0
        self.forks: list[Fork] = []
        self.bad_signatures: list[tuple[str, TreeHead]] = []
        self._unproven: dict[tuple[int, int], list[tuple[tuple[str, TreeHead], tuple[str, TreeHead]]]] = {}
        self._asked: set[tuple[int, int]] = set()
        self._proven: dict[tuple[int, int], Sequence[bytes]] = {}

    @property
    def heads(self) -> list[tuple[str, TreeHead]]:
        """(who showed it, head): the newest head of each tree (size and root) held, in the order the
        trees were first seen."""
        return [(who, head) for _seq, who, head in self._trees.values()]

    def observe(self, who: str, head: TreeHead) -> list[Fork]:
        """Record ``head`` as seen by ``who``; the forks it reveals against every earlier head. A head of
        a tree already held reveals nothing new (its comparisons were made): the newer of the two is
        kept."""
        if not head.verify(self.server_public):
            self.bad_signatures.append((who, head))
            return []
        self._observed += 1
        tree = (head.tree_size, head.root_hash)
        held = self._trees.get(tree)
        if held is not None:
            if head.timestamp > held[2].timestamp:
                self._trees[tree] = (self._observed, who, head)
            return []
        found: list[Fork] = []
        for _seq, other_who, other in self._trees.values():
            if self.prove is None and other.tree_size != head.tree_size:
                lo, hi = sorted((other.tree_size, head.tree_size))
                pair = ((other_who, other), (who, head))
                if (lo, hi) in self._proven:
                    found.extend(self._check((lo, hi), pair, self._proven[lo, hi]))
                else:
                    self._unproven.setdefault((lo, hi), []).append(pair)
                continue
            why = _disagreement(other, head, self.prove)
            if why is not None:
                found.append(Fork(other, head, (other_who, who), why))
        self._trees[tree] = (self._observed, who, head)
        self.forks.extend(found)
        return found

    def latest(self) -> TreeHead | None:
        """The head of the largest tree seen, the one signed last of those (the first seen, of equal
        timestamps), or None. Heads of one size that differ only in timestamp (and signature) are the
        same tree signed again (RFC 6962 §3.5), not a fork: the newest is as true as the others and is
        the one a phone can take back and hold as current; heads of one size with different roots are
        a fork the witness has found already, and either may be gossiped."""
        best: tuple[int, int, int] | None = None
        head: TreeHead | None = None
        for seq, _who, held in self._trees.values():
            rank = (held.tree_size, held.timestamp, -seq)  # of equal times, the first seen
            if best is None or rank > best:
                best, head = rank, held
        return head

    def wanted(self) -> list[tuple[int, int]]:
        """The (first, second) tree sizes whose consistency proof the witness needs and has not asked for
        yet; from now on counted as asked."""
        out = sorted(k for k in self._unproven if k not in self._asked)
        self._asked.update(out)
        return out

    def proof_received(
        self, first: int, second: int, proof: Sequence[bytes] | None, why: str = ""
    ) -> list[Fork]:
        """The relay's answer to ``wanted`` (first, second): the proof, or None with ``why`` it refused.
        Returns the forks it reveals: every pair of heads of those sizes it does not join."""
        sizes = (first, second)
        if proof is not None:
            self._proven[sizes] = proof
        found: list[Fork] = []
        for pair in self._unproven.pop(sizes, []):
            if proof is None:
                (wa, a), (wb, b) = pair
                found.append(
                    Fork(
                        a,
                        b,
                        (wa, wb),
                        f"the relay gave no consistency proof from size {first} to {second}: {why}",
                    )
                )
            else:
                found.extend(self._check(sizes, pair, proof))
        self.forks.extend(found)
        return found

    def _check(
        self,
        sizes: tuple[int, int],
        pair: tuple[tuple[str, TreeHead], tuple[str, TreeHead]],
        proof: Sequence[bytes],
    ) -> list[Fork]:
        (wa, a), (wb, b) = pair
        try:
            good = check_consistency(a, b, proof)
        except ProofError as exc:
            return [Fork(a, b, (wa, wb), f"a malformed consistency proof: {exc}")]
        if good:
            return []
        return [Fork(a, b, (wa, wb), f"no valid consistency proof from size {sizes[0]} to {sizes[1]}")]


def _disagreement(a: TreeHead, b: TreeHead, prove: ConsistencyOracle | None) -> str | None:
    if a.tree_size == b.tree_size:
        if a.root_hash != b.root_hash:
            return f"two signed heads of size {a.tree_size} with different roots"
        return None
    if prove is None:
        return None
    small, large = (a, b) if a.tree_size < b.tree_size else (b, a)
    proof = prove(small.tree_size, large.tree_size)
    if not verify_consistency(small.tree_size, large.tree_size, small.root_hash, large.root_hash, proof):
        return f"no valid consistency proof from size {small.tree_size} to {large.tree_size}"
    return None
