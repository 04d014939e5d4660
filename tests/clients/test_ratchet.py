"""The Double Ratchet over an adversarial link, as a hypothesis state machine.

Two sessions, Alice and Bob, joined by a link that can drop, duplicate, reorder (within
MAX_SKIP), tamper with and truncate messages. After every step:
- every plaintext accepted equals what was sent, and is accepted at most once;
- every bad input raised the one ``DecryptionError`` and left the state exactly as it was;
- every message delivered untouched for the first time decrypted (nothing legitimate is lost),
  but one on a chain that has left the window of MAX_RECEIVING_CHAINS receiving chains, whose
  skipped keys were dropped: that one is refused, changing nothing;
- the state survives a msgpack round trip unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError, UsageError
from relaysim.clients.ratchet import HEADER, MAX_RECEIVING_CHAINS, DoubleRatchet, RatchetConfig
from tests.conftest import seeded_rng

MAX_SKIP = 30


def make_pair(config: RatchetConfig, seed: int) -> tuple[DoubleRatchet, DoubleRatchet]:
    rng = seeded_rng(seed)
    sk = rng(32)
    ad = b"\x05" + rng(32) + b"\x05" + rng(32)
    bob_spk = spec.generate_dh(rng)
    hka, nhkb = rng(64), rng(64)
    alice = DoubleRatchet.init_alice(
        sk, bob_spk.public, ad, config=config, rng=rng, shared_hka=hka, shared_nhkb=nhkb
    )
    bob = DoubleRatchet.init_bob(sk, bob_spk, ad, config=config, rng=rng, shared_hka=hka, shared_nhkb=nhkb)
    return alice, bob


class Wire:
    """One message on the link: who it is for, what was sent, and the bytes."""

    def __init__(self, msg_id: int, to: str, plaintext: bytes, data: bytes, chain: bytes | None) -> None:
        self.msg_id = msg_id
        self.to = to
        self.plaintext = plaintext
        self.data = data
        self.chain = chain  # its chain: the header key it was sent under, or its ratchet key


class RatchetOverAdversarialLink(RuleBasedStateMachine):
    header_encryption = False

    in_flight = Bundle("in_flight")
    delivered = Bundle("delivered")

    @initialize(seed=st.integers(0, 2**32))
    def setup(self, seed: int) -> None:
        config = RatchetConfig(
            max_skip=MAX_SKIP, max_stored_skipped=1000, header_encryption=self.header_encryption
        )
        alice, bob = make_pair(config, seed)
        self.sides = {"alice": alice, "bob": bob}
        self.next_id = 0
        self.accepted: set[int] = set()
        self.undelivered = {"alice": 0, "bob": 0}  # messages in flight to each side
        # each side's receiving chains so far, oldest first (chain ids: header keys, or ratchet keys)
        self.received_chains: dict[str, list[bytes | None]] = {"alice": [], "bob": []}

    def _other(self, side: str) -> str:
        return "bob" if side == "alice" else "alice"

    @precondition(lambda self: self.undelivered["bob"] < MAX_SKIP - 2)
    @rule(target=in_flight, plaintext=st.binary(max_size=64))
    def alice_sends(self, plaintext: bytes) -> Wire:
        return self._send("alice", plaintext)

    @precondition(lambda self: self.sides["bob"].cks is not None and self.undelivered["alice"] < MAX_SKIP - 2)
    @rule(target=in_flight, plaintext=st.binary(max_size=64))
    def bob_sends(self, plaintext: bytes) -> Wire:
        return self._send("bob", plaintext)

    def _send(self, side: str, plaintext: bytes) -> Wire:
        sender = self.sides[side]
        data = sender.encrypt(plaintext)
        self.next_id += 1
        to = self._other(side)
        self.undelivered[to] += 1
        # the chain the message is on: its header key, or without header encryption its ratchet key
        chain = sender.hks if self.header_encryption else sender.ratchet_key
        return Wire(self.next_id, to, plaintext, data, chain)

    @rule(target=delivered, wire=consumes(in_flight))
    def deliver(self, wire: Wire) -> Wire:
        # Bundles hand out elements in any order: this is reordering.
        side = self.sides[wire.to]
        # On a chain the receiver has left, with header encryption its key is among the skipped ones
        # (§4.5 derived them up to PN), without it the chain key kept runs forward to it (as libsignal's
        # does), unless that chain has left the window of receiving chains (``MAX_RECEIVING_CHAINS``)
        # and its keys were dropped.
        if self.header_encryption:
            left = self.received_chains[wire.to][:-1]
            current = side.hkr
            gone = wire.chain != current and wire.chain in left
            gone = gone and all(c != wire.chain for c, _n in side.mkskipped)
        else:
            gone = wire.chain in self.received_chains[wire.to][:-MAX_RECEIVING_CHAINS]
        if gone:
            self._must_fail(wire.to, wire.data)
            self.undelivered[wire.to] -= 1
            return wire
        got = side.decrypt(wire.data)
        received = self.received_chains[wire.to]
        now_on = side.hkr if self.header_encryption else side.dhr
        if not received or received[-1] != now_on:
            received.append(now_on)
        assert got == wire.plaintext
        assert wire.msg_id not in self.accepted
        self.accepted.add(wire.msg_id)
        self.undelivered[wire.to] -= 1
        return wire

    @rule(wire=consumes(in_flight))
    def drop(self, wire: Wire) -> None:
        self.undelivered[wire.to] -= 1

    def _must_fail(self, to: str, data: bytes) -> None:
        side = self.sides[to]
        before = side.to_dict()
        with pytest.raises(DecryptionError) as info:
            side.decrypt(data)
        assert str(info.value) == "message could not be decrypted"
        assert side.to_dict() == before

    @rule(wire=delivered)
    def replay(self, wire: Wire) -> None:
        self._must_fail(wire.to, wire.data)

    @rule(wire=in_flight, data=st.data())
    def tamper(self, wire: Wire, data: st.DataObject) -> None:
        pos = data.draw(st.integers(0, len(wire.data) - 1))
        bit = data.draw(st.integers(0, 7))
        forged = bytearray(wire.data)
        forged[pos] ^= 1 << bit
        self._must_fail(wire.to, bytes(forged))

    @rule(wire=in_flight, data=st.data())
    def truncate(self, wire: Wire, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(wire.data) - 1))
        self._must_fail(wire.to, wire.data[:cut])

    @rule(junk=st.binary(max_size=200), to=st.sampled_from(["alice", "bob"]))
    def garbage(self, junk: bytes, to: str) -> None:
        self._must_fail(to, junk)

    @invariant()
    def state_round_trips(self) -> None:
        for name, side in self.sides.items():
            packed = msgpack.packb(side.to_dict(), use_bin_type=True)
            restored = DoubleRatchet.from_dict(msgpack.unpackb(packed, raw=False))
            assert restored == side, name


class RatchetHEOverAdversarialLink(RatchetOverAdversarialLink):
    header_encryption = True


TestRatchet = RatchetOverAdversarialLink.TestCase
TestRatchetHeaderEncryption = RatchetHEOverAdversarialLink.TestCase


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("he", [False, True])
def test_skip_beyond_max_skip_is_refused_and_changes_nothing(he: bool) -> None:
    alice, bob = make_pair(RatchetConfig(max_skip=5, header_encryption=he), 7)
    msgs = [alice.encrypt(b"m%d" % i) for i in range(8)]
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(msgs[6])  # needs 6 skipped keys, one more than allowed
    assert bob.to_dict() == before
    assert bob.decrypt(msgs[5]) == b"m5"  # exactly 5 skipped: fine
    assert [bob.decrypt(m) for m in msgs[:5]] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def _jump(sender: DoubleRatchet, k: int) -> None:
    """``sender`` as if it had sent ``k`` messages that were lost: its chain run ``k`` steps on."""
    assert sender.cks is not None
    ck = sender.cks
    for _ in range(k):
        ck, _mk = spec.kdf_ck(ck)
    sender.cks, sender.ns = ck, sender.ns + k


@pytest.mark.parametrize("he", [False, True])
def test_the_default_limits_are_libsignals(he: bool) -> None:
    """The defaults are libsignal's (rust/protocol/src/consts.rs): MAX_FORWARD_JUMPS = 25,000, a
    message at most 25,000 past the next one is read (libsignal refuses ``jump > MAX_FORWARD_JUMPS``)
    and one 25,001 past refused, changing nothing; of the keys it skips, the newest
    MAX_MESSAGE_KEYS = 2,000 are kept. (The other limit tests set their own, smaller, limits.)"""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 13)
    too_far = DoubleRatchet.from_dict(alice.to_dict())
    _jump(too_far, 25_001)
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(too_far.encrypt(b"25,001 past"))
    assert bob.to_dict() == before
    _jump(alice, 25_000)
    assert bob.decrypt(alice.encrypt(b"25,000 past")) == b"25,000 past"
    assert sorted(n for _chain, n in bob.mkskipped) == list(range(23_000, 25_000))


def test_a_pn_past_max_skip_is_refused_with_no_receiving_chain_too() -> None:
    """With header encryption (§4.5, as §3.5) SkipMessageKeys(state, header.pn) checks
    Nr + MAX_SKIP < PN before it asks whether there is a receiving chain (CKr) at all: a first
    message whose PN jumps past MAX_SKIP is refused too, as it is on a side with a receiving chain
    (an honest sender's first PN is 0). Without header encryption PN is not read, as libsignal reads
    none: ``test_pn_is_not_read_without_header_encryption``."""
    alice, bob = make_pair(RatchetConfig(max_skip=5, header_encryption=True), 11)
    honest = DoubleRatchet.from_dict(alice.to_dict())
    alice.pn = 6  # a hostile Alice: the message authenticates, with a PN one past MAX_SKIP
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(alice.encrypt(b"forged"))
    assert bob.to_dict() == before
    honest.pn = 5  # exactly MAX_SKIP: accepted, as the spec accepts it
    assert bob.decrypt(honest.encrypt(b"m0")) == b"m0"


@pytest.mark.parametrize("he", [False, True])
def test_a_pn_below_what_was_read_on_the_old_chain_skips_nothing(he: bool) -> None:
    """§3.5 (§4.5 with header encryption): SkipMessageKeys(state, header.pn) derives keys only
    ``while state.Nr < until``, so a new chain's message whose PN is below the number already read on
    the old chain skips nothing and is read; doubleratchet 1.3.0 reads it too (it skips
    ``max(PN − receiving chain length, 0)`` keys). An honest sender's PN is never below it; a peer
    whose ratchet state was restored from an older copy sends one. It was refused like a duplicate."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 12)
    old = [alice.encrypt(b"a%d" % i) for i in range(3)]
    assert [bob.decrypt(m) for m in old] == [b"a0", b"a1", b"a2"]  # Bob's Nr on that chain: 3
    assert alice.decrypt(bob.encrypt(b"b0")) == b"b0"  # Alice's next message starts a new chain
    alice.pn = 1  # below Bob's Nr; the message authenticates all the same
    assert bob.decrypt(alice.encrypt(b"a-new")) == b"a-new"
    assert len(bob.mkskipped) == 0
    # the old chain's numbers read stay read: a copy of one is known as used, and refused
    assert bob.already_used(old[2])
    with pytest.raises(DecryptionError):
        bob.decrypt(old[2])


# --- earlier receiving chains: libsignal's chain keys (without header encryption), §4's PN (with it) ----


def _count_kdf_ck(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From here on, how many times ``spec.kdf_ck`` runs (one chain step each), in a one-item list."""
    calls = [0]
    kdf_ck = spec.kdf_ck

    def counted(ck: bytes) -> tuple[bytes, bytes]:
        calls[0] += 1
        return kdf_ck(ck)

    monkeypatch.setattr(spec, "kdf_ck", counted)
    return calls


@pytest.mark.parametrize("he", [False, True])
def test_pn_is_read_only_with_header_encryption(monkeypatch: pytest.MonkeyPatch, he: bool) -> None:
    """libsignal reads no PN (rust/protocol/src/session_cipher.rs ``get_or_create_chain_key`` makes the
    new chain and keeps the old one's chain key): a DH ratchet step whose PN says 25,000 messages went
    unread on the old chain derives nothing, and a first message's PN past MAX_SKIP is no reason to
    refuse it. With header encryption the spec's SkipMessageKeysHE(PN) (§4.5) is kept: the step derives
    the 25,000 keys (the newest 2,000 kept)."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 16)
    assert bob.decrypt(alice.encrypt(b"a0")) == b"a0"
    assert bob.decrypt(alice.encrypt(b"a1")) == b"a1"  # Bob's Nr on Alice's chain: 2
    assert alice.decrypt(bob.encrypt(b"b0")) == b"b0"  # Alice's next message: a new chain
    alice.pn = 25_000  # what it says of her previous chain (she sent 2 on it); it authenticates
    message = alice.encrypt(b"a-new")
    calls = _count_kdf_ck(monkeypatch)
    assert bob.decrypt(message) == b"a-new"
    # one step for the message's own key, and with header encryption the PN's 25,000 - 2
    assert calls[0] == (1 + 25_000 - 2 if he else 1)
    first, receiver = make_pair(RatchetConfig(max_skip=5, header_encryption=he), 17)
    first.pn = 6  # a first message whose PN is past MAX_SKIP; it authenticates
    message = first.encrypt(b"first")
    if he:
        with pytest.raises(DecryptionError):
            receiver.decrypt(message)
    else:
        assert receiver.decrypt(message) == b"first"


@pytest.mark.parametrize("he", [False, True])
def test_an_earlier_chains_messages_past_2000_skipped_are_all_read(he: bool) -> None:
    """libsignal derives an earlier chain's message keys when its messages come, from the chain key it
    keeps (session_cipher.rs ``get_or_create_message_key``; at most MAX_FORWARD_JUMPS, 25,000, past
    the chain's index, the newest MAX_MESSAGE_KEYS, 2,000, of those it skips kept): 2,500 messages
    still unread on a chain when the sender's ratchet turned all read, in any order. They were derived
    up to PN at the DH ratchet step (§3.5) and the oldest 500 dropped; with header encryption (§4.5)
    they still are."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 18)
    assert bob.decrypt(alice.encrypt(b"read")) == b"read"
    late = [alice.encrypt(b"late %d" % i) for i in range(2_500)]
    assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"
    assert bob.decrypt(alice.encrypt(b"new chain")) == b"new chain"
    assert len(bob.mkskipped) == (2_000 if he else 0)
    if he:
        before = bob.to_dict()
        with pytest.raises(DecryptionError):
            bob.decrypt(late[499])
        assert bob.to_dict() == before
        assert bob.decrypt(late[500]) == b"late 500"
        return
    assert bob.decrypt(late[1_000]) == b"late 1000"  # 1,000 skipped on that chain now, and kept
    assert len(bob.mkskipped) == 1_000
    assert bob.decrypt(late[0]) == b"late 0"
    assert bob.decrypt(late[-1]) == b"late 2499"  # 1,498 more skipped: 2,000 kept, the oldest gone
    assert len(bob.mkskipped) == 2_000
    assert bob.decrypt(late[2_000]) == b"late 2000"
    with pytest.raises(DecryptionError):
        bob.decrypt(late[1])  # the oldest of the chain dropped past MAX_MESSAGE_KEYS, as libsignal's
    for message in (late[1_000], late[0], late[-1]):  # read: refused, known as used, nothing changed
        before = bob.to_dict()
        assert bob.already_used(message)
        with pytest.raises(DecryptionError):
            bob.decrypt(message)
        assert bob.to_dict() == before


def test_a_peer_turning_back_to_an_earlier_ratchet_key_is_read() -> None:
    """libsignal finds a message's receiving chain by its ratchet key among all the receiving chains it
    keeps (state/session.rs ``get_receiver_chain``), so a message on an earlier chain, numbered past
    anything sent on it when the sender's ratchet turned (a peer whose state was restored from an
    older copy), is read from that chain's key, with no DH ratchet step. Here it was taken for a new
    ratchet key, whose DH ratchet step made another chain, and refused. A chain out of the window of
    MAX_RECEIVING_CHAINS is no longer held: its messages are refused, changing nothing."""
    alice, bob = make_pair(RatchetConfig(max_skip=100), 19)
    assert bob.decrypt(alice.encrypt(b"a0")) == b"a0"
    restored = DoubleRatchet.from_dict(alice.to_dict())  # Alice's state as it stood on her first chain
    assert alice.decrypt(bob.encrypt(b"b0")) == b"b0"
    assert bob.decrypt(alice.encrypt(b"a-new")) == b"a-new"  # Bob's receiving chain moves on
    current = bob.dhr
    _jump(restored, 9)
    message = restored.encrypt(b"from the restored copy")  # n = 10 on the first chain; PN said 1
    tampered = message[:-1] + bytes([message[-1] ^ 1])
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(tampered)
    assert bob.to_dict() == before
    assert not bob.already_used(message)
    assert bob.exchanges_ahead(message, None) == []  # no DH ratchet step to compute ahead
    assert bob.decrypt(message) == b"from the restored copy"
    assert bob.dhr == current and len(bob.mkskipped) == 9  # no DH ratchet step; 1..9 skipped
    assert bob.already_used(message)
    with pytest.raises(DecryptionError):
        bob.decrypt(message)
    assert bob.decrypt(alice.encrypt(b"a-on")) == b"a-on"  # the current chain reads on
    # a jump past MAX_SKIP on the earlier chain is refused, changing nothing
    spare = DoubleRatchet.from_dict(restored.to_dict())
    _jump(restored, 101)
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(restored.encrypt(b"too far"))
    assert bob.to_dict() == before
    for _turn in range(MAX_RECEIVING_CHAINS - 1):  # four more chains: the first leaves the window
        assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"
        assert bob.decrypt(alice.encrypt(b"read")) == b"read"
    assert len(bob.old_chains) == MAX_RECEIVING_CHAINS - 1 and len(bob.mkskipped) == 0
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(spare.encrypt(b"out of the window"))  # n = 11: the chain's next, had it been held
    assert bob.to_dict() == before


def test_a_state_saved_before_chain_keys_were_kept_still_loads_and_reads() -> None:
    """A state of version 1 kept where each earlier chain ended (``ended``) and held its keys up to PN
    among the skipped ones: it loads, reads those, and refuses what is past PN on such a chain (it has
    no chain key to run), changing nothing; its next DH ratchet step keeps the chain key."""
    alice, bob = make_pair(RatchetConfig(), 20)
    assert bob.decrypt(alice.encrypt(b"a0")) == b"a0"
    late = alice.encrypt(b"late")
    first_chain = DoubleRatchet.from_dict(alice.to_dict())  # Alice's state on her first chain
    assert alice.decrypt(bob.encrypt(b"b0")) == b"b0"
    assert bob.decrypt(alice.encrypt(b"a-new")) == b"a-new"
    ((chain, nr, ck),) = bob.old_chains
    assert nr == 1 and ck is not None
    # Bob's state as version 1 saved it: the old chain's key for ``late`` (n = 1 < PN = 2) skipped
    _ck, mk = spec.kdf_ck(ck)
    v1 = bob.to_dict()
    del v1["old_chains"]
    v1.update(v=1, ended=[[chain, 2]], mkskipped=[[chain, 1, mk]])
    old = DoubleRatchet.from_dict(msgpack.unpackb(msgpack.packb(v1), raw=False))
    assert old.old_chains == ((chain, 2, None),)
    assert old.decrypt(late) == b"late"
    assert old.already_used(late)
    before = old.to_dict()
    assert before["v"] == 2 and before["old_chains"] == [[chain, 2, None]]
    with pytest.raises(DecryptionError):  # past PN on that chain: no chain key to run forward
        old.decrypt(_on_chain(first_chain, chain, 2, b"past PN"))
    assert old.to_dict() == before
    with pytest.raises(UsageError, match="unknown ratchet state version 3"):
        DoubleRatchet.from_dict({**v1, "v": 3})


def _on_chain(sender: DoubleRatchet, ratchet_key: bytes, n: int, plaintext: bytes) -> bytes:
    """Message ``n`` of ``sender``'s chain on ``ratchet_key``, from a copy of ``sender`` that still holds
    that chain (``sender`` is not changed)."""
    copy = DoubleRatchet.from_dict(sender.to_dict())
    assert copy.ratchet_key == ratchet_key and copy.ns <= n
    _jump(copy, n - copy.ns)
    return copy.encrypt(plaintext)


@pytest.mark.parametrize("he", [False, True])
def test_sessions_without_skipped_keys_share_one_read_only_empty_store(he: bool) -> None:
    """An empty dict per session is 64 B, for a simulation's hundreds of thousands of sessions: while
    MKSKIPPED is empty it is one shared read-only mapping, a dict of its own only while it holds keys."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 9)
    other, _ = make_pair(RatchetConfig(header_encryption=he), 10)
    assert alice.mkskipped is bob.mkskipped is other.mkskipped and len(bob.mkskipped) == 0
    with pytest.raises(TypeError):
        bob.mkskipped[(b"k", 0)] = b"v"  # type: ignore[index]
    msgs = [alice.encrypt(b"m%d" % i) for i in range(3)]
    assert bob.decrypt(msgs[2]) == b"m2"
    assert len(bob.mkskipped) == 2 and alice.mkskipped is other.mkskipped is not bob.mkskipped
    assert [bob.decrypt(m) for m in msgs[:2]] == [b"m0", b"m1"]
    assert bob.mkskipped is other.mkskipped  # emptied: shared again
    assert DoubleRatchet.from_dict(bob.to_dict()).mkskipped is other.mkskipped


@pytest.mark.parametrize("he", [False, True])
def test_stored_skipped_keys_are_capped_oldest_first(he: bool) -> None:
    alice, bob = make_pair(RatchetConfig(max_skip=100, max_stored_skipped=3, header_encryption=he), 8)
    msgs = [alice.encrypt(b"m%d" % i) for i in range(6)]
    assert bob.decrypt(msgs[5]) == b"m5"  # five skipped, three kept: m2, m3, m4
    assert len(bob.mkskipped) == 3
    with pytest.raises(DecryptionError):
        bob.decrypt(msgs[0])
    assert bob.decrypt(msgs[2]) == b"m2"


@pytest.mark.parametrize("he", [False, True])
def test_skipped_keys_across_dh_steps(he: bool) -> None:
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 9)
    a0, a1 = alice.encrypt(b"a0"), alice.encrypt(b"a1")
    assert bob.decrypt(a1) == b"a1"
    b0 = bob.encrypt(b"b0")
    assert alice.decrypt(b0) == b"b0"
    a2 = alice.encrypt(b"a2")  # new DH ratchet key; a0 is from the previous chain
    assert bob.decrypt(a2) == b"a2"
    assert bob.decrypt(a0) == b"a0"
    with pytest.raises(DecryptionError):
        bob.decrypt(a0)


def _header_keys_tried(monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    """From here on, the header keys ``spec.hdecrypt`` is called with, in order (§4.5 DecryptHeader)."""
    from relaysim.clients import spec

    tried: list[bytes | None] = []
    hdecrypt = spec.hdecrypt

    def counted(hk: bytes | None, enc_header: bytes) -> bytes | None:
        tried.append(hk)
        return hdecrypt(hk, enc_header)

    monkeypatch.setattr(spec, "hdecrypt", counted)
    return tried


@pytest.mark.parametrize("he", [False, True])
def test_skipped_keys_are_kept_for_five_receiving_chains_at_most(
    monkeypatch: pytest.MonkeyPatch, he: bool
) -> None:
    """libsignal keeps MAX_RECEIVER_CHAINS (5) receiving chains, the current one among them, and drops
    the oldest with its skipped keys at each DH ratchet step past that (double_ratchet.rs
    ``dh_ratchet_step``): so here, with header encryption or without. With it, that also bounds
    TrySkippedMessageKeysHE (§4.5), which tries every header key skipped keys are held under, before
    every message."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 12)
    first_of_each_chain = []
    for turn in range(MAX_RECEIVING_CHAINS + 2):  # seven chains of Alice's, one key skipped on each
        first_of_each_chain.append(alice.encrypt(b"late %d" % turn))
        assert bob.decrypt(alice.encrypt(b"read %d" % turn)) == b"read %d" % turn
        assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"  # Alice's next message: a new chain
    chains = {chain for chain, _n in bob.mkskipped}
    assert len(chains) == len(bob.skipped_chains) == MAX_RECEIVING_CHAINS
    assert len(bob.mkskipped) == len(chains)
    restored = DoubleRatchet.from_dict(msgpack.unpackb(msgpack.packb(bob.to_dict()), raw=False))
    tried = _header_keys_tried(monkeypatch)
    # A new message (on the next chain): each header key skipped keys are held under is tried once
    # (the current chain's among them), then HKr and NHKr (§4.5 DecryptHeader).
    copy = DoubleRatchet.from_dict(bob.to_dict())
    assert copy.decrypt(alice.encrypt(b"now")) == b"now"
    assert len(tried) == (MAX_RECEIVING_CHAINS + 2 if he else 0)
    # the step to an eighth chain took the third out of the window, and its key with it
    assert len({chain for chain, _n in copy.mkskipped}) == MAX_RECEIVING_CHAINS - 1
    dropped, kept = first_of_each_chain[:2], first_of_each_chain[2:]
    for side in (bob, restored):
        for message in dropped:
            before = side.to_dict()
            tried.clear()
            with pytest.raises(DecryptionError):
                side.decrypt(message)
            assert side.to_dict() == before
            skipped_keys_tried = [hk for hk in tried if hk not in (side.hkr, side.nhkr)]
            assert len(skipped_keys_tried) == len(set(skipped_keys_tried)) <= MAX_RECEIVING_CHAINS
        for message in kept:
            turn = first_of_each_chain.index(message)
            assert side.decrypt(message) == b"late %d" % turn
        assert len(side.mkskipped) == 0


@pytest.mark.parametrize("he", [False, True])
def test_skipped_keys_are_capped_per_receiving_chain_not_per_session(he: bool) -> None:
    """libsignal keeps MAX_MESSAGE_KEYS (2,000) skipped keys per receiving chain (double_ratchet.rs
    ``store_skipped_key``), not per session: a peer's messages delayed across two DH ratchet steps —
    1,500 skipped on one chain, then 1,500 on the next — all still read, and only the oldest of a
    chain past 2,000 are dropped (here after 2,500 skipped on a third chain)."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 14)
    late: list[list[bytes]] = []
    for count in (1_500, 1_500, 2_500):
        late.append([alice.encrypt(b"late %d" % i) for i in range(count)])
        assert bob.decrypt(alice.encrypt(b"read")) == b"read"
        assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"  # Alice's next message: a new chain
    assert len(bob.mkskipped) == 1_500 + 1_500 + 2_000
    assert sorted(bob.skipped_chains.values()) == [1_500, 1_500, 2_000]
    before = bob.to_dict()
    with pytest.raises(DecryptionError):  # the third chain's oldest 500: dropped
        bob.decrypt(late[2][499])
    assert bob.to_dict() == before
    for chain, first in ((late[0], 0), (late[1], 0), (late[2], 500)):
        for i in (first, len(chain) // 2, len(chain) - 1):
            assert bob.decrypt(chain[i]) == b"late %d" % i


@pytest.mark.parametrize("he", [False, True])
def test_a_chains_skipped_keys_go_when_it_leaves_the_window_even_if_no_other_chain_holds_any(
    he: bool,
) -> None:
    """The window is of receiving chains, not of chains holding skipped keys (libsignal drops its oldest
    receiver chain at each DH ratchet step past MAX_RECEIVER_CHAINS): one key skipped on Alice's first
    chain is kept while four more chains come, none skipping anything, and dropped at the fifth."""
    alice, bob = make_pair(RatchetConfig(header_encryption=he), 15)
    late = alice.encrypt(b"late")
    assert bob.decrypt(alice.encrypt(b"read")) == b"read"
    for turn in range(MAX_RECEIVING_CHAINS):
        assert len(bob.mkskipped) == 1
        assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"
        assert bob.decrypt(alice.encrypt(b"read %d" % turn)) == b"read %d" % turn  # a new chain
    assert len(bob.mkskipped) == 0 and len(bob.old_chains) == MAX_RECEIVING_CHAINS - 1
    before = bob.to_dict()
    with pytest.raises(DecryptionError):
        bob.decrypt(late)
    assert bob.to_dict() == before


class _CountingStore(dict[tuple[bytes, int], bytes]):
    """MKSKIPPED as it is, counting the entries walked through (``for ... in store``)."""

    walked = 0

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        for key in super().__iter__():
            type(self).walked += 1
            yield key


def test_header_encryption_tries_skipped_keys_per_chain_not_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """TrySkippedMessageKeysHE walked every stored skipped key (up to MAX_MESSAGE_KEYS, 2,000) to find
    the distinct header keys, before every message: the work is now per chain held (at most
    MAX_RECEIVING_CHAINS), and the header keys tried are the same."""
    alice, bob = make_pair(RatchetConfig(header_encryption=True), 13)
    held = 2_000  # DEFAULT_MAX_STORED_SKIPPED, all on one chain
    late = [alice.encrypt(b"late %d" % i) for i in range(held)]
    assert bob.decrypt(alice.encrypt(b"read")) == b"read"
    assert alice.decrypt(bob.encrypt(b"turn")) == b"turn"  # Alice's next messages: a new chain
    assert len(bob.mkskipped) == held
    before = bob.to_dict()
    bob.mkskipped = _CountingStore(bob.mkskipped)
    tried = _header_keys_tried(monkeypatch)
    _CountingStore.walked = 0
    hkr, nhkr = bob.hkr, bob.nhkr
    assert bob.decrypt(alice.encrypt(b"new chain")) == b"new chain"
    assert tried == [before["hkr"], hkr, nhkr] and before["hkr"] == hkr  # the old chain's key, HKr, NHKr
    assert _CountingStore.walked <= MAX_RECEIVING_CHAINS
    # the skipped keys are all still there, and read as ever; the chains are counted as they are held
    assert len(bob.mkskipped) == held
    assert bob.decrypt(late[-1]) == b"late %d" % (held - 1)
    assert bob.decrypt(late[0]) == b"late 0"
    skipped_on_b = alice.encrypt(b"b1")
    assert bob.decrypt(alice.encrypt(b"b2")) == b"b2"
    for side in (bob, DoubleRatchet.from_dict(bob.to_dict())):
        by_chain = Counter(chain for chain, _n in side.mkskipped)
        assert list(side.skipped_chains.items()) == list(by_chain.items()) == [(hkr, held - 2), (nhkr, 1)]
    assert bob.decrypt(skipped_on_b) == b"b1"
    assert dict(bob.skipped_chains) == {hkr: held - 2}


def test_alice_refuses_a_message_on_bobs_signed_prekey_before_his_first_reply() -> None:
    """After RatchetInitAlice (§3.3) DHr is Bob's signed prekey and there is no CKr. §3.5
    RatchetDecrypt takes a header whose dh equals DHr as no DH ratchet step, then needs
    KDF_CK(CKr), which there is not: the message is refused. It was read as a DH ratchet step on the
    same key (DH(DHs, SPK) through KDF_RK once more), which only a Bob who holds his signed prekey's
    private key and sends on it can produce; an honest Bob turns his ratchet before he sends."""
    alice, bob = make_pair(RatchetConfig(), 13)
    spk, a0 = bob.dhs, alice.dhs
    assert spk is not None and a0 is not None and alice.dhr == spk.public and alice.ckr is None
    # the message a DH ratchet step from Alice's state onto the key SPK would read
    _rk, ck = spec.kdf_rk(alice.rk, spk.dh(a0.public), RatchetConfig().root_info)
    _ck, mk = spec.kdf_ck(ck)
    header = HEADER.pack(spk.public, 0, 0)
    message = header + spec.encrypt(mk, b"on the signed prekey", alice.ad + header, RatchetConfig().aead_info)
    stepping = DoubleRatchet.from_dict(alice.to_dict())
    stepping.dhr = None  # the header's key is then a new one: a DH ratchet step reads the message
    assert stepping.decrypt(message) == b"on the signed prekey"
    before = alice.to_dict()
    with pytest.raises(DecryptionError):
        alice.decrypt(message)
    assert alice.to_dict() == before
    # Bob's real first reply, on his next ratchet key, is read as ever
    assert bob.decrypt(alice.encrypt(b"a0")) == b"a0"
    assert alice.decrypt(bob.encrypt(b"b0")) == b"b0"


def test_bob_cannot_send_before_receiving() -> None:
    _alice, bob = make_pair(RatchetConfig(), 10)
    with pytest.raises(UsageError):
        bob.encrypt(b"too early")


def test_header_encryption_hides_the_ratchet_key() -> None:
    alice, _bob = make_pair(RatchetConfig(header_encryption=True), 11)
    assert alice.dhs is not None
    msg = alice.encrypt(b"x" * 10)
    assert alice.dhs.public not in msg
    plain_alice, _ = make_pair(RatchetConfig(), 11)
    assert plain_alice.dhs is not None
    assert plain_alice.encrypt(b"x" * 10).startswith(plain_alice.dhs.public)
