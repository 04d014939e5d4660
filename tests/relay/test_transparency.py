"""Key transparency: the RFC 9162 Merkle log (relay) against the verifier (clients), and forks.

Reference values: the Certificate Transparency test leaves and their tree heads for sizes 0..8
(RFC 6962 §2.1 trees, as published with Google's certificate-transparency and
transparency-dev/merkle test data), and the example trees of RFC 6962 §2.1.3 (seven leaves a..g).
"""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import transparency as C
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore
from relaysim.relay.store import Store
from relaysim.relay.transparency import (
    MerkleLog,
    TreeHeadSigner,
    largest_power_of_two_below,
    leaf_hash,
    node_hash,
)
from tests.helpers import T0, UNLIMITED, Clock, DeviceKeys, core_device, new_core, reply

CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
KEY = bytes(range(32))
T0_S = int(T0)  # a head's time, in whole seconds
SERVER = TreeHeadSigner(bytes(32))


def test_roots_match_the_certificate_transparency_reference() -> None:
    log = MerkleLog(CT_LEAVES)
    for n, want in enumerate(CT_ROOTS):
        assert log.root(n).hex() == want
        assert C.root_of(CT_LEAVES[:n]).hex() == want


def test_reference_inclusion_and_consistency_proofs() -> None:
    # Published with the same test data: leaf 0 and leaf 5 of the 8-leaf tree, and 2 → 8, 6 → 8.
    log = MerkleLog(CT_LEAVES)
    assert [p.hex() for p in log.inclusion_path(0, 8)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in log.inclusion_path(5, 8)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in log.consistency_proof(2, 8)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert log.consistency_proof(6, 8)[1:] == [
        bytes.fromhex("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        bytes.fromhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]


def test_rfc6962_example_tree_of_seven() -> None:
    # RFC 6962 §2.1.3: in the tree of d0..d6, the audit path for d0 is [b, h, l], for d3 [c, g, l],
    # for d4 [f, j, k]; the consistency proof between the trees of 3 and 7 leaves is [c, d, g, l].
    d = [bytes([i]) for i in range(7)]
    a, b, c, dd, e, f, j = (leaf_hash(x) for x in d)
    g, h, i = node_hash(a, b), node_hash(c, dd), node_hash(e, f)
    k, l = node_hash(g, h), node_hash(i, j)  # noqa: E741 (the RFC's names)
    log = MerkleLog(d)
    assert log.root() == node_hash(k, l)
    assert log.inclusion_path(0) == [b, h, l]
    assert log.inclusion_path(3) == [c, g, l]
    assert log.inclusion_path(4) == [f, j, k]
    assert log.consistency_proof(3, 7) == [c, dd, g, l]
    assert log.consistency_proof(4, 7) == [l]
    assert log.consistency_proof(6, 7) == [i, j, k]


def test_the_split_is_the_largest_power_of_two_below_n() -> None:
    assert [largest_power_of_two_below(n) for n in (2, 3, 4, 5, 8, 9, 1000)] == [1, 2, 2, 4, 4, 8, 512]
    with pytest.raises(ValueError):
        largest_power_of_two_below(1)


leaves_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(leaves_st, st.data())
def test_inclusion_proofs_verify_and_tampered_ones_fail(leaves: list[bytes], data: st.DataObject) -> None:
    log = MerkleLog(leaves)
    n = data.draw(st.integers(1, len(leaves)), label="tree size")
    index = data.draw(st.integers(0, n - 1), label="leaf")
    root, path = log.root(n), log.inclusion_path(index, n)
    assert C.root_of(leaves[:n]) == root
    assert C.verify_inclusion(leaves[index], index, n, path, root)
    # Another leaf, another index, another size, another root, a changed or shortened path: all fail.
    other = leaves[index] + b"x"
    assert not C.verify_inclusion(other, index, n, path, root)
    assert not C.verify_inclusion(leaves[index], index, n, path, leaf_hash(b"not the root"))
    if n > 1:
        j = data.draw(
            st.integers(0, n - 1).filter(lambda j: leaf_hash(leaves[j]) != leaf_hash(leaves[index]))
        )
        assert not C.verify_inclusion(leaves[index], j, n, path, root)
    assert not C.verify_inclusion(leaves[index], n, n, path, root)
    if path:
        at = data.draw(st.integers(0, len(path) - 1), label="tampered node")
        bad = list(path)
        bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
        assert not C.verify_inclusion(leaves[index], index, n, bad, root)
        assert not C.verify_inclusion(leaves[index], index, n, path[:-1], root)
    assert not C.verify_inclusion(leaves[index], index, n, [*path, root], root)


@given(leaves_st, st.data())
def test_consistency_proofs_verify_and_tampered_ones_fail(leaves: list[bytes], data: st.DataObject) -> None:
    log = MerkleLog(leaves)
    n = data.draw(st.integers(1, len(leaves)), label="second size")
    m = data.draw(st.integers(0, n), label="first size")
    proof = log.consistency_proof(m, n)
    assert C.verify_consistency(m, n, log.root(m), log.root(n), proof)
    if 0 < m < n:
        at = data.draw(st.integers(0, len(proof) - 1), label="tampered node")
        bad = list(proof)
        bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
        assert not C.verify_consistency(m, n, log.root(m), log.root(n), bad)
        assert not C.verify_consistency(m, n, log.root(m), log.root(n), proof[:-1])
        assert not C.verify_consistency(m, n, log.root(m), log.root(n), [*proof, log.root(n)])
        assert not C.verify_consistency(m, n, leaf_hash(b"other"), log.root(n), proof)
        assert not C.verify_consistency(m, n, log.root(m), leaf_hash(b"other"), proof)
        assert not C.verify_consistency(m, n, log.root(m), log.root(n), [])


def _head(log: MerkleLog, t: int = 0, size: int | None = None) -> C.TreeHead:
    sth = SERVER.sign(log, t, size)
    assert sth.verify(SERVER.public)
    return C.TreeHead(sth.tree_size, sth.timestamp, sth.root_hash, sth.signature)


def _leaf(account: str, device: int, key: bytes = KEY) -> bytes:
    return wire.kt_leaf(account, device, key)


accounts_st = st.lists(st.sampled_from(["alice", "bob", "carol"]), min_size=1, max_size=20)


@given(accounts_st, st.integers(0, 25), st.integers(0, 25), st.integers(1, 3))
def test_a_forked_log_is_always_detected_by_two_devices_comparing_heads(
    accounts: list[str], at: int, extra_a: int, extra_b: int
) -> None:
    # The provider keeps one shared history of ``at`` entries, then forks it: the ghost goes into
    # the log everyone else is shown, not into the one the target is shown. Both logs grow on
    # (the target's view by at least one entry: it is not simply frozen in the past); whichever
    # heads the two devices were shown, the witness finds the fork.
    base = [_leaf(a, i + 1) for i, a in enumerate(accounts)]
    at = min(at, len(base))
    honest = MerkleLog([*base[:at], _leaf("bob", 99, bytes(32)), *base[at:]])
    hidden = MerkleLog(base)
    for i in range(extra_a):
        honest.append(_leaf("carol", 100 + i))
    for i in range(extra_b):
        hidden.append(_leaf("alice", 200 + i))
    shown_target = _head(hidden, 1)
    shown_sender = _head(honest, 1)

    def prove(m: int, n: int) -> list[bytes]:  # the provider answers from whichever log it likes
        for log in (honest, hidden):
            if n <= len(log) and m <= n:
                return log.consistency_proof(m, n)
        return []

    witness = C.Witness(SERVER.public, prove)
    witness.observe("bob/1", shown_target)
    forks = witness.observe("alice/1", shown_sender)
    assert forks and witness.forks == forks
    assert forks[0].seen_by == ("bob/1", "alice/1")


@given(accounts_st, st.integers(1, 5))
def test_an_honest_log_is_never_called_a_fork(accounts: list[str], grow: int) -> None:
    log = MerkleLog([_leaf(a, i + 1) for i, a in enumerate(accounts)])
    witness = C.Witness(SERVER.public, lambda m, n: log.consistency_proof(m, n))
    heads = [_head(log, 0)]
    for i in range(grow):
        log.append(_leaf("dave", i + 1))
        heads.append(_head(log, i + 1))
    for i, h in enumerate(heads):
        assert witness.observe(f"d{i}", h) == []
        assert witness.observe(f"e{i}", h) == []


def test_a_head_not_signed_by_the_server_key_is_set_aside() -> None:
    log = MerkleLog([_leaf("alice", 1)])
    good = _head(log)
    forged = C.TreeHead(good.tree_size, good.timestamp, leaf_hash(b"x"), good.signature)
    witness = C.Witness(SERVER.public)
    witness.observe("a", good)
    assert witness.observe("b", forged) == []
    assert witness.bad_signatures == [("b", forged)]


def test_the_witness_gossips_the_newest_head_of_the_largest_tree() -> None:
    """Witness.latest: of the heads of the largest tree size, the one signed last (a head signed again
    over the same root, RFC 6962 §3.5, is newer and as true): the head a phone takes back is then as
    recent as the witness can give it. A newer head of a smaller tree does not win."""
    log = MerkleLog([_leaf("alice", 1), _leaf("bob", 2)])
    witness = C.Witness(SERVER.public, lambda m, n: log.consistency_proof(m, n))
    assert witness.latest() is None
    small_late = _head(log, 9000, size=1)
    first, resigned, again = _head(log, 1000), _head(log, 4601), _head(log, 4601)
    for who, head in (
        ("a", first),
        ("b", resigned),
        ("c", small_late),
        ("d", _head(log, 2000)),
        ("e", again),
    ):
        assert witness.observe(who, head) == []  # the same tree, signed at other times: no fork
    assert witness.latest() == resigned  # the newest of size 2 (the first seen of that time)
    assert resigned.same_tree(first) and resigned != first
    assert not first.same_tree(small_late) and not first.same_tree(_head(MerkleLog([_leaf("x", 1)] * 2)))


def test_a_head_is_fresh_up_to_the_maximum_age_and_while_time_goes_forward() -> None:
    head = C.TreeHead(5, 1000, bytes(32), bytes(64))
    C.check_fresh(head, 1000 + C.MAX_HEAD_AGE)  # exactly as old as a head may be
    C.check_fresh(head, 1000 - C.MAX_HEAD_AHEAD)  # signed "in the future": the device's clock may be behind
    with pytest.raises(
        C.ProofError, match=r"^tree head of size 5 signed at 1000 is 3601 s ahead of .*from the future"
    ):
        C.check_fresh(head, 1000 - C.MAX_HEAD_AHEAD - 1)  # ... by up to an hour
    with pytest.raises(
        C.ProofError, match=r"^tree head of size 5 signed at 1000 is 7201 s old .*stale or replayed"
    ):
        C.check_fresh(head, 1000 + C.MAX_HEAD_AGE + 1)
    C.check_fresh(head, 1000, [head, C.TreeHead(5, 1000, bytes(32), bytes(64))])  # served again: taken
    C.check_fresh(head, 1000, [C.TreeHead(4, 999, bytes(32), bytes(64))])  # a larger tree, signed after
    for seen in (C.TreeHead(5, 1001, bytes(32), bytes(64)), C.TreeHead(6, 1001, bytes(32), bytes(64))):
        with pytest.raises(
            C.ProofError, match=f"older than the head of size {seen.tree_size} signed at 1001"
        ):
            C.check_fresh(head, 1001, [seen])
    with pytest.raises(C.ProofError, match="of a smaller tree than the head of size 6 signed at 999"):
        C.check_fresh(head, 1001, [C.TreeHead(6, 999, bytes(32), bytes(64))])  # the log went back


def test_a_head_of_another_tree_must_be_signed_after_every_head_taken() -> None:
    """RFC 6962 §3.5: each new head is "more recent". The same time is for the same tree served again
    only: a head of a larger tree, or of another root, with the time of a head already taken, or a
    larger tree signed before a smaller one taken, is refused, naming both heads."""
    head = C.TreeHead(5, 1000, bytes(32), bytes(64))
    for seen in (
        C.TreeHead(4, 1000, bytes(32), bytes(64)),  # a smaller tree, the same second
        C.TreeHead(4, 1001, bytes(32), bytes(64)),  # a smaller tree, signed later
        C.TreeHead(5, 1000, leaf_hash(b"x"), bytes(64)),  # the same size, another root, the same second
    ):
        with pytest.raises(
            C.ProofError,
            match=rf"^tree head of size 5 signed at 1000 is of another tree than the head of size "
            rf"{seen.tree_size} signed at {seen.timestamp} this device already accepted, and not signed "
            r"after it: a head of a new tree must be more recent",
        ):
            C.check_fresh(head, 1000, [seen])


def test_the_targets_audit_sees_a_ghost_in_its_account() -> None:
    log = MerkleLog([_leaf("alice", 1), _leaf("bob", 1), _leaf("bob", 2)])
    mine = {(1, KEY), (2, KEY)}
    clean = C.audit("bob", mine, log.leaves(), _head(log), SERVER.public)
    assert clean.ok and clean.unexpected == () and clean.missing == ()
    ghost_key = bytes(range(1, 33))
    log.append(_leaf("bob", 3, ghost_key))
    found = C.audit("bob", mine, log.leaves(), _head(log), SERVER.public)
    assert not found.ok and found.log_matches_head and found.unexpected == ((3, ghost_key),)
    # A relay that leaves the ghost out of what it shows bob must show leaves that do not hash to
    # the head it signed for everyone else.
    hidden = C.audit("bob", mine, log.leaves()[:3], _head(log), SERVER.public)
    assert not hidden.ok and not hidden.log_matches_head


def test_leaf_encoding_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="device must be an integer >= 1"):
        wire.kt_leaf("alice", 0, KEY)
    with pytest.raises(ValueError, match="identity_key must be 32 bytes"):
        wire.kt_leaf("alice", 1, b"short")
    with pytest.raises(
        ValueError,
        match="key transparency leaf: not one msgpack value: it holds the byte 0xc1, which begins no msgpack value",
    ):
        wire.kt_leaf_decode(b"\xc1")
    assert wire.kt_leaf_decode(wire.kt_leaf("alice", 2, KEY)) == ("alice", 2, KEY)
    # the version as msgpack's true, a bool equal to 1: another leaf (other bytes, another hash)
    with pytest.raises(ValueError, match=r"expected \[1, account, device, key\]"):
        wire.kt_leaf_decode(msgpack.packb([True, "alice", 2, KEY], use_bin_type=True))
    with pytest.raises(ValueError, match="device must be an integer >= 1"):
        wire.kt_leaf_decode(msgpack.packb([1, "alice", True, KEY], use_bin_type=True))


def test_tree_head_body_refuses_bools_and_out_of_range_integers() -> None:
    """True and False are ints in Python but msgpack's true and false on the wire: a body signed with
    one is another body, which clients.transparency.decode_head would never let a device verify."""
    root = bytes(32)
    for size, stamp, name in ((True, 0, "tree_size"), (1, False, "timestamp"), (2**64, 0, "tree_size")):
        with pytest.raises(ValueError, match=f"tree head: {name} must be an integer from 0 to 2\\*\\*64 - 1"):
            wire.kt_tree_head_body(size, stamp, root)
    assert wire.kt_tree_head_body(2**64 - 1, 2**64 - 1, root)  # the largest uint64 still packs


# --- the relay logs what it serves -----------------------------------------------------------------


def test_the_relay_logs_every_registration_and_a_provisioned_ghost(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    alice, bob, renewed = DeviceKeys.make("alice"), DeviceKeys.make("bob"), DeviceKeys.make("alice", seed=2)
    with Store(path) as store:
        core = RelayCore(store, clock=lambda: T0, rng=random.Random(1).randbytes, limits=UNLIMITED)
        conn = core_device(core, alice, 1)
        core_device(core, bob, 2)
        assert isinstance(reply(core.handle(conn, renewed.register())), wire.Registered)  # a new key
        ghost = DeviceKeys.make("bob", 7, seed=5)
        core.provision_device(ghost.register())  # what the compelled provider does
        expected = [
            wire.kt_leaf("alice", 1, alice.identity_key),
            wire.kt_leaf("bob", 1, bob.identity_key),
            wire.kt_leaf("alice", 1, renewed.identity_key),
            wire.kt_leaf("bob", 7, ghost.identity_key),
        ]
        assert core.key_log.leaves() == expected
        head = core.key_log_head()
        server_public = core.identity.server_certificate.public_key
        assert head.verify(server_public) and head.tree_size == 4 and head.timestamp == int(T0)
        proof = core.key_log_inclusion("bob", 7, ghost.identity_key)
        assert proof is not None
        assert C.verify_inclusion(expected[3], proof[0], 4, proof[1], head.root_hash)
        assert core.key_log_inclusion("bob", 7, ghost.identity_key, size=3) is None
        assert C.verify_consistency(
            2, 4, core.key_log_head(2).root_hash, head.root_hash, core.key_log_consistency(2)
        )
        # bob's own audit finds the device he never added.
        sth = C.TreeHead(head.tree_size, head.timestamp, head.root_hash, head.signature)
        found = C.audit("bob", {(1, bob.identity_key)}, core.key_log.leaves(), sth, server_public)
        assert found.unexpected == ((7, ghost.identity_key),)
    with Store(path) as store:  # the log survives a restart, leaf for leaf
        again = RelayCore(store, clock=lambda: T0 + 5, rng=random.Random(2).randbytes, limits=UNLIMITED)
        assert again.key_log.leaves() == expected and again.key_log.root() == head.root_hash
        conn = core_device(again, renewed, 3, register=False)
        assert isinstance(reply(again.handle(conn, alice.register(9))), wire.Registered)  # its old key again
        assert len(again.key_log) == 4  # already logged, before the restart


def test_re_registering_the_same_key_adds_no_leaf() -> None:
    core = new_core()
    alice = DeviceKeys.make("alice")
    conn = core_device(core, alice, 1)
    assert isinstance(reply(core.handle(conn, alice.register(5))), wire.Registered)
    assert core.key_log.leaves() == [wire.kt_leaf("alice", 1, alice.identity_key)]


def test_the_store_refuses_a_leaf_out_of_order() -> None:
    with Store(":memory:") as store, store.transaction():
        store.append_key_log(0, b"a")
        with pytest.raises(ValueError, match="leaf 2 appended to a log of 1 leaves"):
            store.append_key_log(2, b"b")
        assert store.key_log() == [b"a"]


def test_key_log_entries_fit_one_frame_and_the_client_pages_on() -> None:
    """get_key_log_entries answers at most what fits in a frame of the relay's size (the rest on the
    next request, from where this answer stops), always at least one entry."""
    from relaysim.relay.core import _FRAME_HEADROOM, ConnectionContext, Reply

    core = new_core(max_frame_size=_FRAME_HEADROOM + 100)
    for i in range(5):
        conn = ConnectionContext(i + 1, ("192.0.2.1", 1000 + i))
        core.connect(conn)
        core.handle(conn, DeviceKeys.make(f"u{i}", 1).register())
    conn = ConnectionContext(99, ("192.0.2.9", 1))
    got: list[bytes] = []
    while len(got) < 5:
        ask = wire.GetKeyLogEntries(id=1, start=len(got), end=4)
        (answer,) = [o.frame for o in core.handle(conn, ask) if isinstance(o, Reply)]
        assert isinstance(answer, wire.KeyLogEntries) and answer.start == len(got)
        assert 1 <= len(answer.entries) <= 2  # ~45-byte leaves in 100 bytes of room
        assert len(wire.encode(answer)) <= core.max_frame_size
        got += answer.entries
    assert got == core.key_log.leaves()


# --- fresh heads: a quiet log's head is signed again (RFC 6962 §3.5) -------------------------------


def _served_head(core: RelayCore, conn: ConnectionContext) -> C.TreeHead:
    """The head ``conn`` is served over the wire (get_key_log_head), as a device reads it."""
    answer = reply(core.handle(conn, wire.GetKeyLogHead(id=1)))
    assert isinstance(answer, wire.KeyLogHeadResponse)
    h = answer.head
    return C.TreeHead(h.tree_size, h.timestamp, h.root_hash, h.signature)


def test_a_quiet_logs_head_is_signed_again_once_older_than_the_refresh_period() -> None:
    """No new leaf for hours: the head served then still carries a recent time, over the same root,
    validly signed; within the period the head signed first is served as it was."""
    clock = Clock()
    core = new_core(clock)
    server_public = core.identity.server_certificate.public_key
    conn = core_device(core, DeviceKeys.make("alice"), 1)
    first = _served_head(core, conn)
    assert first.timestamp == int(T0)
    clock.now = T0 + wire.KEY_LOG_HEAD_REFRESH  # exactly as old as the period: still served
    assert _served_head(core, conn) == first
    clock.now = T0 + 3 * wire.KEY_LOG_HEAD_REFRESH + 0.5
    again = _served_head(core, conn)
    assert again.timestamp == int(clock.now) and again.verify(server_public)
    assert (again.tree_size, again.root_hash) == (first.tree_size, first.root_hash)
    assert core.key_log_head() == core.key_log_head() and core.key_log_head().timestamp == again.timestamp


def test_head_timestamps_never_go_back_though_the_relays_clock_does() -> None:
    clock = Clock()
    core = new_core(clock)
    core_device(core, DeviceKeys.make("alice"), 1)
    signed = core.key_log_head().timestamp
    clock.now = T0 - 50  # the clock stepped back; then a new leaf needs a new head
    core_device(core, DeviceKeys.make("bob"), 2)
    assert core.key_log_head().timestamp == signed + 1  # a new tree: the second after the last head


def test_heads_of_new_trees_signed_in_one_second_carry_increasing_times() -> None:
    """The relay's clock is read in whole seconds: two trees signed in the same second (a key logged
    between two fetches) would carry the same time, which a device that took the first refuses for
    the second (check_fresh). Each head of a new tree gets the second after the last; the same tree
    served again keeps its time; the clock, once past, is the time again."""
    clock = Clock(T0 + 0.25)
    core = new_core(clock)
    alice = core_device(core, DeviceKeys.make("alice"), 1)
    taken = [_served_head(core, alice)]
    for i, who in enumerate(("bob", "carol", "dave")):
        core_device(core, DeviceKeys.make(who), 2 + i)
        clock.now = T0 + 0.5 + i / 10  # still the same second
        head = _served_head(core, alice)
        C.check_fresh(head, clock.now, taken)  # the device takes each
        taken.append(head)
    assert [h.timestamp for h in taken] == [int(T0) + i for i in range(4)]
    assert _served_head(core, alice) == taken[-1]  # the same tree again: the same head
    clock.now = T0 + 10
    core_device(core, DeviceKeys.make("erin"), 9)
    assert _served_head(core, alice).timestamp == int(T0) + 10


def test_a_split_views_heads_are_refreshed_and_the_fork_still_shows() -> None:
    """A split view (split_key_log) is signed afresh as the log is: the target gets recent heads, but
    they are still heads of another tree than everyone else's, which the witness proves."""
    clock = Clock()
    core = new_core(clock)
    server_public = core.identity.server_certificate.public_key
    alice = core_device(core, DeviceKeys.make("alice"), 1)
    bob = core_device(core, DeviceKeys.make("bob"), 2)
    ghost = DeviceKeys.make("alice", 2, seed=5)
    core.provision_device(ghost.register())
    core.split_key_log("alice", [wire.kt_leaf("alice", 2, ghost.identity_key)])
    core_device(core, DeviceKeys.make("carol"), 3)  # the two logs now differ at index 2
    shown, real = _served_head(core, alice), _served_head(core, bob)
    clock.now = T0 + 2 * wire.KEY_LOG_HEAD_REFRESH
    shown_later, real_later = _served_head(core, alice), _served_head(core, bob)
    for before, after in ((shown, shown_later), (real, real_later)):
        assert int(clock.now) + 1 >= after.timestamp >= int(clock.now) > before.timestamp
        assert after.verify(server_public)
        assert (after.tree_size, after.root_hash) == (before.tree_size, before.root_hash)
    assert (shown.tree_size, real.tree_size) == (3, 4)
    witness = C.Witness(server_public, core.key_log_consistency)
    assert witness.observe("bob/1", real) == [] and witness.observe("bob/1", real_later) == []
    forks = witness.observe("alice/1", shown_later)  # against the real log (bob's two heads: one tree)
    assert [f.why for f in forks] == ["no valid consistency proof from size 3 to 4"]
    assert (forks[0].first, forks[0].seen_by) == (real_later, ("bob/1", "alice/1"))  # the newest held


def test_the_witness_holds_one_head_per_tree_however_long_the_run() -> None:
    """A relay signs its head again every hour and every device gossips the head it was given: over a
    long run the witness is shown the same few trees again and again. It holds the newest head of each
    tree, not every head, gossips the newest back, and still finds a fork against any of them."""
    log = MerkleLog([_leaf("alice", 1), _leaf("bob", 2), _leaf("carol", 3)])
    witness = C.Witness(SERVER.public, lambda m, n: log.consistency_proof(m, n))
    for hour in range(500):  # three weeks: both trees signed again each hour, shown by two devices
        for who in ("bob/1", "carol/1"):
            for size in (2, 3):
                assert witness.observe(who, _head(log, T0_S + 3600 * hour, size=size)) == []
    assert [(h.tree_size, h.timestamp) for _who, h in witness.heads] == [
        (2, T0_S + 3600 * 499),
        (3, T0_S + 3600 * 499),
    ]
    assert witness.latest() == _head(log, T0_S + 3600 * 499)
    forked = MerkleLog([_leaf("alice", 1), _leaf("bob", 2), _leaf("mallory", 9)])
    forks = witness.observe("alice/1", _head(forked, T0_S))  # an old head of another tree still shows
    assert [f.why for f in forks] == [  # one fork against each tree held
        "no valid consistency proof from size 2 to 3",
        "two signed heads of size 3 with different roots",
    ]


def test_head_timestamps_never_go_back_across_a_relay_restart(tmp_path: Path) -> None:
    """The latest time signed into a head is in the store: a relay restarted over the same file, its
    clock now behind, signs no head earlier than one its devices already hold (they would refuse it as
    an old head replayed, clients.transparency.check_fresh)."""
    path = tmp_path / "relay.db"
    clock = Clock(T0 + 3 * wire.KEY_LOG_HEAD_REFRESH)
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(1).randbytes, limits=UNLIMITED)
        held = _served_head(core, core_device(core, DeviceKeys.make("alice"), 1))
    clock.now = T0  # the restarted relay's clock is three hours behind
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(2).randbytes, limits=UNLIMITED)
        conn = core_device(core, DeviceKeys.make("alice"), 1, register=False)
        again = _served_head(core, conn)
        assert (again.tree_size, again.root_hash) == (held.tree_size, held.root_hash)
        assert again.timestamp >= held.timestamp
        device_clock = T0 + 3 * wire.KEY_LOG_HEAD_REFRESH  # the devices' clocks are right
        C.check_fresh(again, device_clock, [held])  # the device takes it
        core_device(core, DeviceKeys.make("bob"), 2)  # a new leaf: a new head, still not earlier
        assert _served_head(core, conn).timestamp >= held.timestamp


def test_a_head_signed_in_a_transaction_rolled_back_is_noted_again_when_served(tmp_path: Path) -> None:
    """A group COMMIT that failed takes the time noted with a head signed in it out of the store;
    after RelayCore.reload a head served is signed, and its time noted, again, so a restart still
    signs no head earlier than one served."""
    path = tmp_path / "relay.db"
    clock = Clock()
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(1).randbytes, limits=UNLIMITED)
        conn = core_device(core, DeviceKeys.make("alice"), 1)
        _served_head(core, conn)  # signed at T0, noted
        clock.now = T0 + 3 * wire.KEY_LOG_HEAD_REFRESH
        with pytest.raises(OSError), store.transaction():  # a relay server's group transaction ...
            _served_head(core, conn)  # ... in which the head is signed again (not sent: it failed)
            raise OSError("disk full")  # ... and whose COMMIT failed
        core.reload()
        held = _served_head(core, conn)
    clock.now = T0
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(2).randbytes, limits=UNLIMITED)
        again = _served_head(core, core_device(core, DeviceKeys.make("alice"), 1, register=False))
        assert again.timestamp >= held.timestamp == int(T0 + 3 * wire.KEY_LOG_HEAD_REFRESH)


def test_a_head_signed_by_a_request_that_failed_is_not_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that signs a head and then fails (here its metadata record cannot be written) is rolled
    back whole, the time noted with the head too: the head must not stay cached, to be served later
    with a time the store does not hold — a relay restarted with its clock behind would then sign an
    earlier head than one its devices hold, and they would refuse it as an old head replayed."""
    path = tmp_path / "relay.db"
    clock = Clock(T0 + 5)
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(1).randbytes, limits=UNLIMITED)
        conn = core_device(core, DeviceKeys.make("alice"), 1)
        assert store.key_log_head_time() == 0  # no head signed yet

        def fail(*args: object) -> None:
            raise RuntimeError("the metadata record could not be written")

        monkeypatch.setattr(core, "_write_records", fail)
        with pytest.raises(RuntimeError, match="metadata record"):  # signs the head at T0 + 5, then fails
            core.handle(conn, wire.FetchBundle(id=1, account="alice", key_log=True))
        monkeypatch.undo()
        clock.now = T0 + 20
        held = _served_head(core, conn)
        assert store.key_log_head_time() >= held.timestamp  # the time of the head served is stored
    clock.now = T0  # the restarted relay's clock is behind
    with Store(path) as store:
        core = RelayCore(store, clock=clock, rng=random.Random(2).randbytes, limits=UNLIMITED)
        again = _served_head(core, core_device(core, DeviceKeys.make("alice"), 1, register=False))
    C.check_fresh(again, T0 + 20, [held])  # the device, its clock right, takes it
