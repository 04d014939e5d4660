"""Sender keys (clients.groups): the key schedule against an independent computation, the receiving
side's limits and failures, and group membership over pairwise Double Ratchet sessions."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from relaysim.clients import groups as G
from relaysim.clients.errors import DecryptionError, UsageError
from relaysim.clients.ratchet import RatchetConfig
from relaysim.clients.session import Device, PeerAddress
from tests.conftest import seeded_rng

GID = bytes(range(16))
ALICE = PeerAddress("alice", 1)
BOB = PeerAddress("bob", 1)


def keys(owner: PeerAddress, seed: int) -> G.GroupKeys:
    return G.GroupKeys(owner, rng=seeded_rng(seed))


def alice_and_bob() -> tuple[G.GroupKeys, G.GroupKeys]:
    a, b = keys(ALICE, 1), keys(BOB, 2)
    [(peer, skdm)] = a.prepare_send(GID, [BOB])
    assert peer == BOB
    b.process(ALICE, skdm.to_bytes())
    return a, b


def test_key_schedule_matches_an_independent_computation() -> None:
    """SenderChainKey and SenderMessageKey as libsignal defines them, computed with the standard library's
    HMAC and cryptography's HKDF and AES-CBC, open what GroupKeys.encrypt produced."""
    a, _b = alice_and_bob()
    state = a.own[GID]
    ck, pub = state.chain_key, state.signing_public
    messages = [a.encrypt(GID, f"message {i}".encode()) for i in range(3)]
    for i, msg in enumerate(messages):
        seed = hmac.new(ck, b"\x01", hashlib.sha256).digest()
        ck = hmac.new(ck, b"\x02", hashlib.sha256).digest()
        derived = HKDF(hashes.SHA256(), 48, salt=None, info=b"WhisperGroup").derive(seed)
        body, sig = msg[:-64], msg[-64:]
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, body)  # raises if wrong
        assert body[0] == 0x33 and body[1:17] == GID
        assert int.from_bytes(body[21:25], "big") == i
        dec = Cipher(algorithms.AES(derived[16:]), modes.CBC(derived[:16])).decryptor()
        padded = dec.update(body[25:]) + dec.finalize()
        assert padded[: -padded[-1]] == f"message {i}".encode()


def test_one_encryption_reaches_every_holder_in_any_order() -> None:
    a, b = alice_and_bob()
    c = keys(PeerAddress("carol", 1), 3)
    for peer, skdm in a.prepare_send(GID, [BOB, c.owner]):
        assert peer == c.owner
        c.process(ALICE, skdm.to_bytes())
    msgs = [a.encrypt(GID, bytes([i]) * 5) for i in range(6)]
    for i in [3, 0, 5, 1, 4, 2]:
        assert b.decrypt(ALICE, msgs[i]) == (GID, bytes([i]) * 5)
    for i in range(6):
        assert c.decrypt(ALICE, msgs[i])[1] == bytes([i]) * 5


def _snapshot(k: G.GroupKeys) -> dict[str, object]:
    return k.to_dict()


def test_failures_leave_the_state_unchanged() -> None:
    a, b = alice_and_bob()
    first = a.encrypt(GID, b"one")
    second = a.encrypt(GID, b"two")
    assert b.decrypt(ALICE, second)[1] == b"two"
    before = _snapshot(b)
    tampered = bytearray(first)
    tampered[30] ^= 1
    bad = [
        bytes(tampered),  # the signature no longer verifies
        first[:-1] + bytes([first[-1] ^ 1]),  # a bad signature
        b"",
        b"\x33" + bytes(100),  # an unknown chain
        second,  # a replay
    ]
    for data in bad:
        with pytest.raises(DecryptionError):
            b.decrypt(ALICE, data)
        assert _snapshot(b) == before
    with pytest.raises(DecryptionError):
        b.decrypt(BOB, first)  # from a sender whose key we do not hold
    assert b.decrypt(ALICE, first)[1] == b"one"  # the skipped key was kept


# libsignal's limits for sender keys (rust/protocol/src/consts.rs, used in group_cipher.rs and
# sender_keys.rs): written out here, so that a change of the module's constants is seen.
LIBSIGNAL_MAX_FORWARD_JUMPS = 25_000
LIBSIGNAL_MAX_MESSAGE_KEYS = 2_000


def test_forward_jump_and_stored_key_limits() -> None:
    a, b = alice_and_bob()
    state = a.own[GID]
    state_copy = state.copy()
    # Jump past MAX_FORWARD_JUMPS: refused.
    state.chain_key, state.iteration = (
        _advance(state.chain_key, LIBSIGNAL_MAX_FORWARD_JUMPS + 1),
        LIBSIGNAL_MAX_FORWARD_JUMPS + 1,
    )
    with pytest.raises(DecryptionError):
        b.decrypt(ALICE, a.encrypt(GID, b"too far"))
    # Exactly MAX_FORWARD_JUMPS ahead: accepted; only MAX_MESSAGE_KEYS skipped keys are kept, the newest.
    a.own[GID] = state_copy
    jump = LIBSIGNAL_MAX_FORWARD_JUMPS
    state_copy.chain_key, state_copy.iteration = _advance(state_copy.chain_key, jump), jump
    assert b.decrypt(ALICE, a.encrypt(GID, b"far"))[1] == b"far"
    held = b.received[(GID, ALICE)][0].skipped
    assert sorted(held) == list(range(jump - LIBSIGNAL_MAX_MESSAGE_KEYS, jump))


def test_a_receiver_keeps_a_senders_five_newest_sender_keys() -> None:
    """libsignal's MAX_SENDER_KEY_STATES = 5 (consts.rs; sender_keys.rs add_sender_key_state drops the
    oldest past it): after six keys from one sender in one group, a message under each of the five
    newest reads and one under the first is refused (no sender key state for its chain id)."""
    a, b = alice_and_bob()
    messages = [a.encrypt(GID, b"key 0")]
    for i in range(1, 6):
        b.process(ALICE, a.rotate(GID).to_bytes())
        messages.append(a.encrypt(GID, b"key %d" % i))
    state = b.to_dict()
    with pytest.raises(DecryptionError):
        b.decrypt(ALICE, messages[0])
    assert b.to_dict() == state
    assert [b.decrypt(ALICE, m)[1] for m in messages[1:]] == [b"key %d" % i for i in range(1, 6)]


def _advance(ck: bytes, n: int) -> bytes:
    for _ in range(n):
        ck = G.sender_chain_step(ck)[1]
    return ck


def test_rotation_when_a_holder_is_no_longer_a_recipient() -> None:
    a, b = alice_and_bob()
    c = keys(PeerAddress("carol", 1), 3)
    for _peer, skdm in a.prepare_send(GID, [BOB, c.owner]):
        c.process(ALICE, skdm.to_bytes())
    chain = a.own[GID].chain_id
    assert a.prepare_send(GID, [BOB, c.owner]) == []  # nothing new to hand out
    out = a.prepare_send(GID, [BOB])  # carol left
    assert [p for p, _ in out] == [BOB] and a.own[GID].chain_id != chain
    b.process(ALICE, out[0][1].to_bytes())
    msg = a.encrypt(GID, b"after carol left")
    assert b.decrypt(ALICE, msg)[1] == b"after carol left"
    with pytest.raises(DecryptionError):
        c.decrypt(ALICE, msg)


def test_usage_errors() -> None:
    a = keys(ALICE, 1)
    with pytest.raises(UsageError, match="prepare_send"):
        a.encrypt(GID, b"x")
    with pytest.raises(UsageError, match="16 bytes"):
        a.distribution(b"short")


def test_a_repeated_distribution_keeps_the_position() -> None:
    a, b = alice_and_bob()
    skdm = a.distribution(GID).to_bytes()
    m = a.encrypt(GID, b"x")
    assert b.decrypt(ALICE, m)[1] == b"x"
    b.process(ALICE, skdm)  # the same key again (an at-least-once redelivery)
    with pytest.raises(DecryptionError):
        b.decrypt(ALICE, m)  # still a replay


# --- membership over pairwise sessions -------------------------------------------------------

SKDM = b"\x00\xfeK"  # the control prefix a distribution message travels under


class _World:
    """Accounts with linked devices, one group, sender keys distributed over Double Ratchet sessions.

    Every group message is offered to every device that ever existed, members or not, as a relay
    that copies it everywhere would: the test checks who can read it.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.devices: dict[PeerAddress, tuple[Device, G.GroupKeys]] = {}
        self.accounts: dict[str, list[int]] = {}
        self.members: set[str] = set()
        self.next_id: dict[str, int] = {}

    def link(self, account: str) -> None:
        number = self.next_id[account] = self.next_id.get(account, 0) + 1  # ids are never reused
        self.accounts.setdefault(account, []).append(number)
        rng = seeded_rng(self.seed * 1000 + len(self.devices) + 1)
        addr = PeerAddress(account, number)
        device = Device(account, number, rng=rng, pq=False, config=RatchetConfig())
        self.devices[addr] = (device, G.GroupKeys(addr, rng=rng))

    def unlink(self, account: str) -> None:
        ids = self.accounts.get(account, [])
        if len(ids) > 1:
            ids.pop()  # the newest linked device; the primary stays

    def current(self) -> set[PeerAddress]:
        return {PeerAddress(a, d) for a in self.members for d in self.accounts[a]}

    def pairwise(self, src: PeerAddress, dst: PeerAddress, plaintext: bytes) -> None:
        sd, _ = self.devices[src]
        dd, dk = self.devices[dst]
        if not sd.has_session(dst):
            sd.start_session(dst, dd.generate_prekeys(1, 0))
        got = dd.decrypt(src, sd.encrypt(dst, plaintext))
        assert got.startswith(SKDM)
        dk.process(src, got[len(SKDM) :])

    def send(self, src: PeerAddress, text: bytes) -> dict[PeerAddress, bytes | None]:
        _, gk = self.devices[src]
        recipients = self.current() - {src}
        for peer, skdm in gk.prepare_send(GID, recipients):
            self.pairwise(src, peer, SKDM + skdm.to_bytes())
        msg = gk.encrypt(GID, text)
        out: dict[PeerAddress, bytes | None] = {}
        for addr, (_, k) in self.devices.items():
            if addr == src:
                continue
            try:
                out[addr] = k.decrypt(src, msg)[1]
            except DecryptionError:
                out[addr] = None
        return out


ACCOUNTS = ["ann", "ben", "cat", "dan"]
step = st.one_of(
    st.tuples(st.just("link"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("unlink"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("join"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("leave"), st.sampled_from(ACCOUNTS)),
    st.tuples(st.just("send"), st.integers(0, 99)),
)


@given(st.integers(0, 2**16), st.lists(step, min_size=1, max_size=25))
def test_member_devices_read_exactly_the_messages_sent_while_they_are_members(
    seed: int, steps: list[tuple[str, object]]
) -> None:
    """In any sequence of device links, unlinks, joins and leaves, every current member device decrypts
    every message sent after it joined, and no device reads one sent while it was not a member device."""
    world = _World(seed)
    for a in ACCOUNTS:
        world.link(a)
    world.members = {"ann", "ben"}
    sent = 0
    for kind, arg in steps:
        if kind == "link":
            world.link(str(arg))
        elif kind == "unlink":
            world.unlink(str(arg))
        elif kind == "join":
            world.members.add(str(arg))
        elif kind == "leave":
            world.members.discard(str(arg))
        else:
            current = sorted(world.current())
            if not current:
                continue
            src = current[int(str(arg)) % len(current)]
            text = f"message {sent}".encode()
            sent += 1
            got = world.send(src, text)
            for addr, plaintext in got.items():
                if addr in world.current():
                    assert plaintext == text, f"{addr} is a member device and could not read {text!r}"
                else:
                    assert plaintext is None, f"{addr} is not a member device and read {text!r}"


def test_the_group_write_key_and_its_signature_match_an_independent_computation() -> None:
    """The write key is the Ed25519 key whose RFC 8032 seed is HKDF-SHA256(master key, info
    "relaysim group write key"), and it signs context ‖ group ‖ version (u64 BE) ‖ SHA-256(state)
    (relay.wire.group_state_message, which the relay checks): computed here with cryptography's HKDF
    and Ed25519 and the standard library's SHA-256."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    master, state = bytes(range(32)), b"sealed state"
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"relaysim group write key").derive(master)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert G.group_write_key(master) == public.public_bytes_raw()
    signed = (
        b"relaysim group state write v1\x00" + GID + (7).to_bytes(8, "big") + hashlib.sha256(state).digest()
    )
    public.verify(G.sign_group_state(master, GID, 7, state), signed)  # raises if wrong
    with pytest.raises(InvalidSignature):  # bound to the version
        public.verify(G.sign_group_state(master, GID, 8, state), signed)
    assert G.group_write_key(bytes(32)) != G.group_write_key(master)  # another group's key is another key
    with pytest.raises(UsageError, match="master key is 32 bytes"):
        G.group_write_key(bytes(31))
    with pytest.raises(UsageError, match="16 bytes"):
        G.sign_group_state(master, b"short", 0, state)


def test_a_members_write_key_and_its_signature_over_a_key_set_match_an_independent_computation() -> None:
    """A member's write key is the Ed25519 key whose RFC 8032 seed is HKDF-SHA256(ikm = the
    member's secret, salt = master key, info "relaysim group member write key" ‖ group id), and with
    ``write_keys`` it signs context v2 ‖ group ‖ version (u64 BE) ‖ SHA-256(state) ‖ count (u16 BE)
    ‖ SHA-256(the keys, sorted, concatenated) (relay.wire.group_state_message, which the relay checks)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    master, secret, state = bytes(range(32)), bytes(range(100, 132)), b"sealed state"
    info = b"relaysim group member write key" + GID
    seed = HKDF(hashes.SHA256(), 32, salt=master, info=info).derive(secret)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    writer = G.GroupWriteKey.for_member(master, GID, secret)
    assert writer.public == public.public_bytes_raw() and secret not in repr(writer).encode()
    other = G.GroupWriteKey.for_member(master, GID, bytes(32)).public
    keys = sorted([writer.public, other])
    signed = (
        b"relaysim group state write v2\x00"
        + GID
        + (7).to_bytes(8, "big")
        + hashlib.sha256(state).digest()
        + (2).to_bytes(2, "big")
        + hashlib.sha256(b"".join(keys)).digest()
    )
    public.verify(writer.sign(GID, 7, state, [other, writer.public, other]), signed)  # raises if wrong
    with pytest.raises(InvalidSignature):  # bound to the keys: none is not these
        public.verify(writer.sign(GID, 7, state), signed)
    assert G.write_key_set([other, writer.public, other]) == tuple(keys)
    # a member's key is its own: another secret, group or master key gives another key
    assert len({other, writer.public}) == 2
    assert G.GroupWriteKey.for_member(master, bytes(16), secret).public != writer.public
    assert G.GroupWriteKey.for_member(bytes(32), GID, secret).public != writer.public
    assert G.GroupWriteKey.for_group(master).public == G.group_write_key(master) != writer.public
    with pytest.raises(UsageError, match="write secret is 32 bytes"):
        G.GroupWriteKey.for_member(master, GID, bytes(31))
    with pytest.raises(UsageError, match="master key is 32 bytes"):
        G.GroupWriteKey.for_member(bytes(31), GID, secret)


def test_a_sealed_state_holds_each_members_write_key_and_a_state_sealed_before_still_opens() -> None:
    """Format 2 seals each member's public write key beside its account, so a member can make the
    next key set from the state alone; a format-1 state (accounts only, sealed before) opens as it
    did and says it holds no keys; a key that is not 32 bytes, or one key for two members, is not
    sealed."""
    master = bytes(range(32))
    keys = {
        m: G.GroupWriteKey.for_member(master, GID, bytes([i + 1]) * 32).public for i, m in enumerate("abc")
    }
    sealed = G.seal_group_state(master, GID, 4, keys)
    opened = G.read_group_state(master, GID, 4, sealed)
    assert opened == G.GroupStateContents(("a", "b", "c"), keys)
    assert opened.key_set() == G.write_key_set(keys.values())
    assert G.open_group_state(master, GID, 4, sealed) == ("a", "b", "c")
    old = G.seal_group_state(master, GID, 4, ["c", "a"])
    assert G.read_group_state(master, GID, 4, old) == G.GroupStateContents(("a", "c"), None)
    assert G.read_group_state(master, GID, 4, old).key_set() is None
    assert G.read_group_state(master, GID, 4, G.seal_group_state(master, GID, 4, {})).write_keys == {}
    with pytest.raises(UsageError, match="'b''s write key must be 32 bytes"):
        G.seal_group_state(master, GID, 4, {"a": keys["a"], "b": bytes(31)})
    with pytest.raises(UsageError, match="members 'a' and 'b' have the same write key"):
        G.seal_group_state(master, GID, 4, {"a": keys["a"], "b": keys["a"]})
