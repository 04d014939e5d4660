"""Key transparency over the wire: the self-audit, head gossip and the witness, against a real ``RelayCore``.

The phones fetch the log's head, entries and consistency proofs with ``get_key_log_head``,
``get_key_log_entries`` and ``get_key_log_consistency`` (RFC 9162 §5.2–§5.4); heads travel between
the phones and the witness as ``clients.transparency.encode_head`` bytes; the witness asks the relay
for the consistency proofs it needs. A relay that shows one account a log without a ghost device
(``RelayCore.split_key_log``) is caught from what crosses the wire alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaysim.clients import transparency as kt
from relaysim.clients.agent import DeviceAgent, KeyLogAudited, KeyLogChecked, KeyLogCompared
from relaysim.clients.session import Device
from relaysim.relay import core as relay_core
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from tests.conftest import seeded_rng
from tests.helpers import T0, Clock, DeviceKeys, new_core

Tamper = Callable[[wire.Response], wire.Response]  # what a relay that lies would change in an answer


def _agent(core: RelayCore, account: str, seed: int, clock: Callable[[], float] = lambda: T0) -> DeviceAgent:
    rng = seeded_rng(seed)
    return DeviceAgent(
        Device(account, 1, rng=rng),
        registration_id=seed,
        delivery_token=rng(32),
        rng=rng,
        trust_root=core.trust_root_public,
        key_transparency=True,
        clock=clock,
    )


def _over_the_wire(frame: wire.Frame) -> wire.Frame:
    """The frame as the other side decodes it from bytes."""
    decoder = wire.FrameDecoder("relay" if isinstance(frame, wire.Request) else "device")
    decoder.receive_data(wire.encode(frame))
    out = decoder.next_frame()
    assert isinstance(out, wire.Frame)
    return out


def _exchange(
    core: RelayCore, conn: ConnectionContext, agent: DeviceAgent, tamper: Tamper | None = None
) -> list[object]:
    """Carry the agent's requests to the relay and the replies back, as bytes, until it is quiet."""
    events: list[object] = []
    while frames := agent.take_outbox():
        for frame in frames:
            request = _over_the_wire(frame)
            assert isinstance(request, wire.Request)
            for out in core.handle(conn, request):
                if isinstance(out, Reply):
                    answer = _over_the_wire(out.frame)
                    assert isinstance(answer, wire.Response)
                    if tamper is not None:
                        answer = tamper(answer)
                    events += agent.handle(answer)
    return events


class World:
    def __init__(self, clock: Callable[[], float] = lambda: T0) -> None:
        self.core = new_core(clock)  # the relay's clock and the phones' are one
        self.agents: dict[str, DeviceAgent] = {}
        self.conns: dict[str, ConnectionContext] = {}
        for i, name in enumerate(("alice", "bob", "carol")):
            a = self.agents[name] = _agent(self.core, name, i + 1, clock)
            conn = self.conns[name] = ConnectionContext(i + 1, ("192.0.2.1", 40000 + i))
            self.core.connect(conn)
            a.register()
            self.run(name)
            a.login()
            self.run(name)
        self.witness_conn = ConnectionContext(99, ("198.51.100.9", 443))  # never authenticates
        self.core.connect(self.witness_conn)
        self.witness = kt.Witness(self.core.identity.server_certificate.public_key)
        self.next_id = 1

    def run(self, name: str, tamper: Tamper | None = None) -> list[object]:
        return _exchange(self.core, self.conns[name], self.agents[name], tamper)

    def ghost(self, account: str, device: int) -> bytes:
        """The provider writes a device it holds into ``account`` (and the log); its leaf."""
        keys = DeviceKeys.make(account, device, seed=5)
        self.core.provision_device(keys.register())
        return wire.kt_leaf(account, device, keys.identity_key)

    def fetch(self, who: str, account: str) -> KeyLogChecked:
        self.agents[who].send_text(account, b"hello", ref=1)
        (checked,) = [e for e in self.run(who) if isinstance(e, KeyLogChecked)]
        return checked

    def gossip(self, who: str) -> list[kt.Fork]:
        """``who``'s latest head goes to the witness (as bytes); the witness asks the relay for what it
        needs, over its own connection; the forks it finds."""
        head = max(self.agents[who].key_log_heads, key=lambda h: h.tree_size)
        found = self.witness.observe(who, kt.decode_head(kt.encode_head(head)))
        for first, second in self.witness.wanted():
            self.next_id += 1
            ask = _over_the_wire(wire.GetKeyLogConsistency(id=self.next_id, first=first, second=second))
            assert isinstance(ask, wire.Request)
            (reply,) = [o.frame for o in self.core.handle(self.witness_conn, ask) if isinstance(o, Reply)]
            answer = _over_the_wire(reply)
            if isinstance(answer, wire.KeyLogConsistency):
                found += self.witness.proof_received(first, second, answer.proof)
            else:
                assert isinstance(answer, wire.ErrorFrame)
                found += self.witness.proof_received(first, second, None, answer.message)
        return found

    def compare(self, who: str) -> KeyLogCompared:
        latest = self.witness.latest()
        assert latest is not None
        self.agents[who].compare_key_log_head(kt.encode_head(latest))
        (compared,) = [e for e in self.run(who) if isinstance(e, KeyLogCompared)]
        return compared

    def audit(self, who: str, tamper: Tamper | None = None) -> KeyLogAudited:
        a = self.agents[who]
        a.audit_key_log({(1, a.device.identity_key)})
        (audited,) = [e for e in self.run(who, tamper) if isinstance(e, KeyLogAudited)]
        return audited


def test_the_self_audit_over_the_wire_reads_every_page_and_finds_a_ghost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_core, "MAX_KEY_LOG_ENTRIES", 2)  # a page of two leaves: the audit pages on
    w = World()
    clean = w.audit("alice")
    assert clean.ok and clean.tree_size == 3 and clean.head is not None
    w.ghost("alice", 2)
    found = w.audit("alice")
    assert found.reason is None and found.tree_size == 4
    assert [d for d, _k in found.unexpected] == [2] and found.missing == ()
    assert not found.ok


def test_a_consistent_log_passes_the_witness_and_the_phones_comparisons() -> None:
    w = World()
    assert w.fetch("bob", "alice").ok  # bob holds the head of 3
    assert w.gossip("bob") == []
    conn = ConnectionContext(50, ("192.0.2.50", 1))  # a new account: the log grows to 4
    w.core.connect(conn)
    w.core.handle(conn, DeviceKeys.make("dave", 1).register())
    assert w.audit("carol").ok  # carol's audit saw the head of 4
    assert w.gossip("carol") == []  # the witness asked for 3 → 4 and it verifies
    compared = w.compare("bob")  # bob's 3 against the witness's 4: the relay proves it
    assert compared.consistent and compared.why is None
    assert (compared.ours.tree_size, compared.theirs.tree_size) == (3, 4)
    assert w.witness.forks == []


def test_a_split_view_is_caught_by_the_target_from_what_crosses_the_wire() -> None:
    """The relay adds a ghost to alice's account and shows alice a log without it. bob, handed the
    ghost's key, checks its inclusion under the real head and gossips it; alice's audit finds nothing
    (her log has no ghost). Her log is a prefix of the real one, so no consistency proof is missing
    between the heads the witness holds; but alice, given the witness's head, asks her relay to prove
    it extends hers and to serve the entries up to it, and it can do neither."""
    w = World()
    leaf = w.ghost("alice", 2)
    w.core.split_key_log("alice", [leaf])
    checked = w.fetch("bob", "alice")
    assert checked.ok and checked.logged == (1, 2) and checked.tree_size == 4
    audited = w.audit("alice")
    assert audited.ok and audited.tree_size == 3  # the ghost is not in the log she is shown
    assert w.gossip("bob") == [] and w.gossip("alice") == []
    compared = w.compare("alice")
    assert not compared.consistent
    assert compared.why is not None and "no consistency proof from size 3 to 4" in compared.why
    assert "beyond the key log's 3 entries" in compared.why
    latest = w.witness.latest()
    assert latest is not None and latest.tree_size == 4
    a = w.agents["alice"]
    a.audit_key_log({(1, a.device.identity_key)}, head=kt.encode_head(latest))
    (against,) = [e for e in w.run("alice") if isinstance(e, KeyLogAudited)]
    assert against.reason is not None and "start 3 is beyond the key log's 3 entries" in against.reason
    # without the split, the same steps find the ghost in alice's own audit, and nothing else
    w2 = World()
    w2.ghost("alice", 2)
    w2.fetch("bob", "alice")
    assert [d for d, _ in w2.audit("alice").unexpected] == [2]
    assert w2.gossip("bob") == [] and w2.gossip("alice") == []
    assert w2.compare("alice").consistent


def test_a_split_view_that_goes_on_growing_is_a_fork_the_witness_proves() -> None:
    """After the split, dave registers: the log alice is shown and the real one now differ in an entry
    both have at index 3. Two signed heads of size 4 with different roots (bob's and alice's) are a
    fork; and carol's head of 5 against alice's 4 has no consistency proof."""
    w = World()
    leaf = w.ghost("alice", 2)
    w.core.split_key_log("alice", [leaf])
    assert w.fetch("bob", "alice").tree_size == 4  # [alice, bob, carol, ghost]
    conn = ConnectionContext(50, ("192.0.2.50", 1))
    w.core.connect(conn)
    w.core.handle(conn, DeviceKeys.make("dave", 1).register())
    assert w.audit("alice").tree_size == 4  # [alice, bob, carol, dave]
    assert w.gossip("bob") == []
    (fork,) = w.gossip("alice")
    assert fork.why == "two signed heads of size 4 with different roots" and fork.seen_by == ("bob", "alice")
    assert w.audit("carol").tree_size == 5
    (fork,) = w.gossip("carol")
    assert fork.seen_by == ("alice", "carol") and "no valid consistency proof from size 4 to 5" in fork.why


def test_malformed_proofs_and_heads_give_a_clear_error() -> None:
    w = World()
    w.fetch("bob", "alice")
    w.ghost("carol", 2)
    assert w.audit("carol").tree_size == 4

    def drop_a_hash(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.KeyLogConsistency):
            return dataclasses.replace(frame, proof=frame.proof[:-1])
        return frame

    w.gossip("carol")
    latest = w.witness.latest()
    assert latest is not None and latest.tree_size == 4
    w.agents["bob"].compare_key_log_head(kt.encode_head(latest))
    (compared,) = [e for e in w.run("bob", drop_a_hash) if isinstance(e, KeyLogCompared)]
    assert not compared.consistent
    assert compared.why == (
        "a malformed consistency proof: consistency proof from tree size 3 to 4: expected 3 hashes, got 2"
    )

    def bad_entry(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.KeyLogEntries):
            return dataclasses.replace(frame, entries=(frame.entries[0], b"\xc1", *frame.entries[2:]))
        return frame

    audited = w.audit("alice", bad_entry)
    assert (
        audited.reason
        == "key log entry 1 (entries[1] in a 'key_log_entries' frame): key transparency leaf: not one msgpack value: "
        "it holds the byte 0xc1, which begins no msgpack value"
    )

    head = kt.TreeHead(4, 1, bytes(32), bytes(64))
    with pytest.raises(kt.ProofError, match=r"hash \[1\] must be 32 bytes \(SHA-256\), got 31 bytes"):
        kt.check_consistency(kt.TreeHead(3, 1, bytes(32), bytes(64)), head, [bytes(32), bytes(31)])
    with pytest.raises(kt.ProofError, match="gossiped tree head: root_hash must be 32 bytes, got 3 bytes"):
        kt.decode_head(kt.encode_head(dataclasses.replace(head, root_hash=b"abc")))
    with pytest.raises(
        kt.ProofError,
        match="gossiped tree head: not one msgpack value: it holds the byte 0xc1, which begins no msgpack value",
    ):
        kt.decode_head(b"\xc1")
    with pytest.raises(kt.ProofError, match="its signature does not verify"):
        w.agents["bob"].compare_key_log_head(kt.encode_head(head))


def test_a_server_certificate_that_is_no_msgpack_is_refused_naming_its_field_and_the_frame_s_kind() -> None:
    """A server certificate read out of a frame (a bundle's key_log.server_certificate, a key_log_head's
    server_certificate) was refused as "server certificate: not one msgpack value: ...": which field of
    which frame, not said. Now by its path and the frame's kind, as the wire names a field."""
    w = World()

    def bad_bundle(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.Bundle) and frame.key_log is not None:
            return dataclasses.replace(
                frame, key_log=dataclasses.replace(frame.key_log, server_certificate=b"\xc1")
            )
        return frame

    w.agents["bob"].send_text("alice", b"hello", ref=1)
    (checked,) = [e for e in w.run("bob", bad_bundle) if isinstance(e, KeyLogChecked)]
    assert checked.reason == (
        "server certificate (key_log.server_certificate in a 'bundle' frame): server certificate: not one "
        "msgpack value: it holds the byte 0xc1, which begins no msgpack value"
    )

    def bad_head(frame: wire.Response) -> wire.Response:
        if isinstance(frame, wire.KeyLogHeadResponse):
            return dataclasses.replace(frame, server_certificate=b"")
        return frame

    audited = w.audit("alice", bad_head)
    assert audited.reason == (
        "server certificate (server_certificate in a 'key_log_head' frame): server certificate: not one "
        "msgpack value: it is empty (0 bytes)"
    )


def test_the_relay_refuses_impossible_key_log_questions_naming_the_field() -> None:
    """The field named is the one RFC 9162 §5.3's errors name (docs/protocol.md): secondBeforeFirst,
    "second" is smaller than "first" (it named first); endBeforeStart names end; beyond the log, the size."""
    w = World()
    conn = w.witness_conn
    for ask, field, text in (
        (wire.GetKeyLogConsistency(id=1, first=2, second=9), "second", "second tree size 9 is beyond"),
        (
            wire.GetKeyLogConsistency(id=1, first=3, second=2),
            "second",
            "second tree size 2 is below first (3)",
        ),
        (
            wire.GetKeyLogConsistency(id=1, first=3, second=0),
            "second",
            "second tree size 0 is below first (3)",
        ),
        (wire.GetKeyLogEntries(id=1, start=3, end=5), "start", "start 3 is beyond the key log's 3 entries"),
        (wire.GetKeyLogEntries(id=1, start=2, end=1), "end", "end 1 is below start (2)"),
    ):
        (reply,) = [o.frame for o in w.core.handle(conn, ask) if isinstance(o, Reply)]
        assert isinstance(reply, wire.ErrorFrame)
        assert (reply.code, reply.field, reply.id) == (
            "invalid_value",
            field,
            ask.id,
        ) and text in reply.message


def test_the_proof_size_matches_the_relays_proofs() -> None:
    from relaysim.relay.transparency import MerkleLog

    log = MerkleLog([bytes([i]) for i in range(33)])
    for n in range(34):
        for m in range(n + 1):
            assert kt.consistency_proof_size(m, n) == len(log.consistency_proof(m, n)), (m, n)


@settings(deadline=None, max_examples=15)
@given(
    before=st.integers(0, 4),
    after=st.integers(0, 4),
    split=st.booleans(),
)
def test_a_split_view_is_always_caught_over_the_wire_and_an_honest_log_never(
    before: int, after: int, split: bool
) -> None:
    """``before`` accounts register, then the ghost is added to alice's account (hidden from alice when
    ``split``), then ``after`` more register. bob fetches alice's bundle (the real head), alice audits
    (her head); both go to the witness, which asks the relay for what it needs; alice compares the
    witness's head with hers and audits the log up to it. A split is always caught by one of these; an
    honest relay by none, and then alice's own audit finds the ghost."""
    w = World()
    n = 100

    def register(k: int) -> None:
        nonlocal n
        for _ in range(k):
            n += 1
            conn = ConnectionContext(n, ("192.0.2.99", n))
            w.core.connect(conn)
            w.core.handle(conn, DeviceKeys.make(f"x{n}", 1).register())

    register(before)
    leaf = w.ghost("alice", 2)
    if split:
        w.core.split_key_log("alice", [leaf])
    register(after)
    w.fetch("bob", "alice")
    own = w.audit("alice")
    forks = w.gossip("bob") + w.gossip("alice")
    compared = w.compare("alice")
    latest = w.witness.latest()
    assert latest is not None
    a = w.agents["alice"]
    a.audit_key_log({(1, a.device.identity_key)}, head=kt.encode_head(latest))
    (against,) = [e for e in w.run("alice") if isinstance(e, KeyLogAudited)]
    caught = bool(forks) or not compared.consistent or against.reason is not None
    assert caught == split, (forks, compared, against)
    assert own.reason is None
    assert bool(own.unexpected) == (not split)  # the ghost, in the log alice is shown


@pytest.mark.parametrize("split", [False, True])
def test_heads_signed_again_as_hours_pass_keep_a_split_caught_and_an_honest_log_clean(split: bool) -> None:
    """As above, with more than the relay's refresh period between each step: every head a phone is
    shown is signed afresh (relay.wire.KEY_LOG_HEAD_REFRESH), the phones take each one (none is too old,
    none older than one they hold), and the lesson is the same: a split is caught, an honest log is not."""
    clock = Clock()
    w = World(clock)

    def later() -> None:
        clock.now += wire.KEY_LOG_HEAD_REFRESH + 1

    leaf = w.ghost("alice", 2)
    if split:
        w.core.split_key_log("alice", [leaf])
    assert w.audit("alice").reason is None  # a head of the log alice is shown, before any wait
    later()
    checked = w.fetch("bob", "alice")
    later()
    own = w.audit("alice")
    later()
    forks = w.gossip("bob") + w.gossip("alice")
    compared = w.compare("alice")
    latest = w.witness.latest()
    assert latest is not None and latest.timestamp < clock.now - wire.KEY_LOG_HEAD_REFRESH  # an old head
    later()
    a = w.agents["alice"]
    a.audit_key_log({(1, a.device.identity_key)}, head=kt.encode_head(latest))  # gossiped: not held to age
    (against,) = [e for e in w.run("alice") if isinstance(e, KeyLogAudited)]
    assert checked.ok and own.reason is None  # no head was refused as stale
    stamps = [h.timestamp for h in a.key_log_heads]
    assert len(set(stamps)) == len(stamps) == 2  # alice's two audits: a head signed again between them
    caught = bool(forks) or not compared.consistent or against.reason is not None
    assert caught == split, (forks, compared, against)
    assert bool(own.unexpected) == (not split)
