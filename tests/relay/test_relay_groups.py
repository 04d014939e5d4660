"""Groups at the relay: server-side membership and fan-out (WhatsApp), encrypted group state
(Signal's groups v2), and the provider adding a member itself (the ghost participant)."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from relaysim.clients.groups import GroupWriteKey, group_write_key, sign_group_state, write_key_set
from relaysim.relay import store as store_module
from relaysim.relay import wire
from relaysim.relay._primitives import ed25519_key_ok, ed25519_verify
from relaysim.relay.core import ConnectionContext, Push, RelayCore
from relaysim.relay.limits import UNLIMITED
from relaysim.relay.metadata import MetadataRecord, RecordKind
from tests.helpers import (
    GROUP_MASTER,
    T0,
    DeviceKeys,
    assert_error,
    core_device,
    new_core,
    put_group_state,
    reply,
)

E = wire.ErrorCode
ALICE, BOB, CAROL, DAVE = (DeviceKeys.make(a) for a in ("alice", "bob", "carol", "dave"))
BOB2 = DeviceKeys.make("bob", 2)
G = bytes(range(16))
MASTER = GROUP_MASTER  # the members' secret: the write key is derived from it
STRANGER = bytes(range(1, 33))  # a master key of another group, which a stranger holds


def _put(
    version: int, state: bytes, master: bytes = MASTER, group: bytes = G, rid: int = 1, **fields: object
) -> wire.PutGroupState:
    return put_group_state(rid, group, version, state, master, **fields)


def _world() -> tuple[RelayCore, dict[str, ConnectionContext]]:
    core = new_core()
    conns = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL, DAVE))}
    return core, conns


def _create(core: RelayCore, conn: ConnectionContext, *members: str) -> wire.Response:
    return reply(core.handle(conn, wire.CreateGroup(id=10, group=G, members=members)))


def test_a_group_send_is_one_body_fanned_out_to_every_member_device_but_the_senders() -> None:
    core, c = _world()
    assert isinstance(reply(core.handle(c["bob"], BOB2.register(5))), wire.Registered)  # bob links a device
    created = _create(core, c["alice"], "bob", "carol")
    assert created == wire.GroupUpdated(id=10, group=G, epoch=0)
    outputs = core.handle(c["alice"], wire.GroupSend(id=11, group=G, epoch=0, body=b"sender key message"))
    sent = reply(outputs)
    assert isinstance(sent, wire.GroupSent) and len(sent.envelope_ids) == 3
    queued = {(e.account, e.device): e for e in core.store.all_envelopes()}
    assert set(queued) == {
        ("bob", 1),
        ("bob", 2),
        ("carol", 1),
    }  # every device; not dave (not a member), not alice/1 (the sender)
    assert {e.body for e in queued.values()} == {b"sender key message"}  # the same ciphertext for all
    assert all(e.source_account == "alice" and not e.sealed for e in queued.values())
    # the relay records a send per recipient device, as for any send (WhatsApp's pen register returns)
    sends = [o for o in outputs if isinstance(o, MetadataRecord) and o.kind is RecordKind.SEND]
    assert sorted((r.account, r.recipient_account, r.recipient_device) for r in sends) == [
        ("alice", "bob", 1),
        ("alice", "bob", 2),
        ("alice", "carol", 1),
    ]
    # connected members get it pushed
    pushed = {o.device.account for o in outputs if isinstance(o, Push)}
    assert pushed == {"bob", "carol"}


def test_only_members_see_or_send_to_a_group_and_only_admins_change_it() -> None:
    core, c = _world()
    _create(core, c["alice"], "bob")
    for request in (
        wire.GetGroup(id=1, group=G),
        wire.GroupSend(id=1, group=G, epoch=0, body=b"x"),
        wire.ChangeGroup(id=1, group=G, add=("dave",)),
    ):
        assert_error(reply(core.handle(c["dave"], request)), E.UNKNOWN_GROUP, "group")
    assert_error(
        reply(core.handle(c["bob"], wire.ChangeGroup(id=1, group=G, add=("dave",)))), E.FORBIDDEN, "group"
    )
    assert_error(_create(core, c["carol"]), E.GROUP_EXISTS, "group")
    assert_error(
        reply(core.handle(c["alice"], wire.ChangeGroup(id=1, group=G, add=("nobody",)))),
        E.UNKNOWN_ACCOUNT,
        "add[0]",
    )
    assert_error(
        reply(core.handle(c["alice"], wire.ChangeGroup(id=1, group=G, admins=("carol",)))),
        E.INVALID_VALUE,
        "admins[0]",
    )
    # refused changes left the group as it was
    info = reply(core.handle(c["alice"], wire.GetGroup(id=2, group=G)))
    assert isinstance(info, wire.GroupInfo) and info.epoch == 0
    assert info.members == (wire.GroupMember("alice", True), wire.GroupMember("bob", False))
    # a member may leave on its own
    left = reply(core.handle(c["bob"], wire.ChangeGroup(id=3, group=G, remove=("bob",))))
    assert left == wire.GroupUpdated(id=3, group=G, epoch=1)
    assert [m.account for m in core.store.group_members(G)] == ["alice"]


def test_a_change_that_changes_nothing_keeps_the_epoch() -> None:
    """Adding a member again moved the epoch, so every member's next group_send was refused as
    stale for a membership that had not changed: a change whose answer was lost, sent again, did
    that to the whole group (and so did removing a non-member, or promoting an admin). Such a
    change is still accepted, as removing a non-member always was, but changes nothing, the epoch
    included; a change with anything real in it moves it once."""
    core, c = _world()
    _create(core, c["alice"], "bob")
    assert reply(core.handle(c["alice"], wire.ChangeGroup(id=1, group=G, admins=("bob",)))) == (
        wire.GroupUpdated(id=1, group=G, epoch=1)
    )
    members = core.store.group_members(G)
    for rid, change in enumerate(
        (
            wire.ChangeGroup(id=0, group=G, add=("bob",)),  # already a member
            wire.ChangeGroup(id=0, group=G, remove=("carol",)),  # not a member
            wire.ChangeGroup(id=0, group=G, admins=("bob",)),  # already an admin
            wire.ChangeGroup(id=0, group=G, add=("alice",), remove=("dave",), admins=("alice", "bob")),
        ),
        start=2,
    ):
        answer = reply(core.handle(c["alice"], replace(change, id=rid)))
        assert answer == wire.GroupUpdated(id=rid, group=G, epoch=1), change
    assert core.store.group_members(G) == members
    assert isinstance(
        reply(core.handle(c["bob"], wire.GroupSend(id=7, group=G, epoch=1, body=b"x"))), wire.GroupSent
    )
    # a change with one real part among no-ops moves it, once
    both = wire.ChangeGroup(id=8, group=G, add=("bob", "carol"), remove=("dave",))
    assert reply(core.handle(c["alice"], both)) == wire.GroupUpdated(id=8, group=G, epoch=2)


def test_a_send_for_an_old_membership_is_refused_as_stale() -> None:
    core, c = _world()
    _create(core, c["alice"], "bob")
    assert reply(
        core.handle(c["alice"], wire.ChangeGroup(id=1, group=G, add=("carol",)))
    ) == wire.GroupUpdated(id=1, group=G, epoch=1)
    error = assert_error(
        reply(core.handle(c["bob"], wire.GroupSend(id=2, group=G, epoch=0, body=b"x"))),
        E.STALE_GROUP,
        "epoch",
    )
    assert "epoch 1" in error.message
    assert core.store.all_envelopes() == []


def test_the_provider_adds_a_member_no_admin_asked_for() -> None:
    core, c = _world()
    _create(core, c["alice"], "bob")
    assert core.provision_group_member(G, "dave") == 1
    (dave,) = [m for m in core.store.group_members(G) if m.account == "dave"]
    assert dave.added_by is None and not dave.admin  # the store says nobody in the group added it
    sent = reply(core.handle(c["alice"], wire.GroupSend(id=1, group=G, epoch=1, body=b"x")))
    assert isinstance(sent, wire.GroupSent)
    assert {e.account for e in core.store.all_envelopes()} == {"bob", "dave"}
    with pytest.raises(ValueError, match="no membership list"):
        core.provision_group_member(b"\x01" * 16, "dave")


def test_encrypted_group_state_is_versioned_and_names_no_account() -> None:
    core, c = _world()
    put = _put(0, b"\x00opaque")
    outputs = core.handle(c["alice"], put)
    assert reply(outputs) == wire.GroupStateStored(id=1, group=G, version=0)
    assert not [o for o in outputs if isinstance(o, MetadataRecord)]
    assert_error(reply(core.handle(c["bob"], put)), E.STALE_GROUP, "version")
    assert reply(core.handle(c["bob"], _put(1, b"v1", rid=2))) == wire.GroupStateStored(
        id=2, group=G, version=1
    )
    assert core.store.group_state(G) == (1, b"v1")
    got = reply(core.handle(c["carol"], wire.GetGroupState(id=3, group=G)))
    assert got == wire.GroupState(id=3, group=G, version=1, state=b"v1")
    assert_error(
        reply(core.handle(c["carol"], wire.GetGroupState(id=4, group=b"\x09" * 16))), E.UNKNOWN_GROUP, "group"
    )
    assert core.store.group_members(G) == [] and core.store.group_count() == 0
    row = core.store._db.execute("SELECT * FROM group_states").fetchall()
    # id, version, state and the write key (a key derived from the group's secret): no account, no time
    assert row == [(G, 1, b"v1", group_write_key(MASTER))]


def test_only_a_holder_of_the_groups_key_overwrites_its_state() -> None:
    """A stranger who knows the group id cannot overwrite the state (it could before the write key:
    anyone could put the next version), however it signs; a member can, and the relay keeps
    serving. Nothing of any of it is recorded."""
    core, c = _world()
    anon = ConnectionContext(9, address=("198.51.100.7", 4000))  # nobody: the uploader names no account
    assert isinstance(reply(core.handle(anon, _put(0, b"members v0"))), wire.GroupStateStored)
    refusals = [
        # no key, no signature: the upload the relay took from anyone before
        (wire.PutGroupState(id=2, group=G, version=1, state=b"gone"), "signature"),
        # its own key, properly signed: the key is not the one the group was created with
        (_put(1, b"gone", master=STRANGER), "write_key"),
        # its own signature, under the group's key
        (_put(1, b"gone", write_key=None, signature=sign_group_state(STRANGER, G, 1, b"gone")), "signature"),
        # the members' signature of the creation, replayed for the next version
        (_put(1, b"members v0", signature=sign_group_state(MASTER, G, 0, b"members v0")), "signature"),
        # the members' signature of this version of another group (the same key signs both)
        (_put(1, b"gone", signature=sign_group_state(MASTER, bytes(16), 1, b"gone")), "signature"),
        # the members' signature of another state at this version
        (_put(1, b"gone", signature=sign_group_state(MASTER, G, 1, b"members v1")), "signature"),
        # and at the creation's version: the group exists, and a stranger's key does not replace its key
        (_put(0, b"gone", master=STRANGER), "write_key"),
    ]
    for put, field in refusals:
        outputs = core.handle(anon, put)
        assert_error(reply(outputs), E.BAD_SIGNATURE, field)
        assert not [o for o in outputs if isinstance(o, MetadataRecord)]
        assert core.store.group_state(G) == (0, b"members v0")  # unchanged
        assert core.store.group_write_keys(G) == (0, (group_write_key(MASTER),))
    # the relay keeps serving: a member's next version is stored, read back by anyone
    assert reply(core.handle(c["bob"], _put(1, b"members v1", write_key=None))) == wire.GroupStateStored(
        id=1, group=G, version=1
    )
    got = reply(core.handle(anon, wire.GetGroupState(id=3, group=G)))
    assert got == wire.GroupState(id=3, group=G, version=1, state=b"members v1")


def test_the_creation_registers_a_write_key_it_proves_it_holds() -> None:
    core, c = _world()
    alice = c["alice"]
    assert_error(
        reply(core.handle(alice, wire.PutGroupState(id=1, group=G, version=0, state=b"s"))),
        E.BAD_SIGNATURE,
        "write_key",
    )
    assert_error(reply(core.handle(alice, _put(0, b"s", signature=None))), E.BAD_SIGNATURE, "signature")
    # a key it does not hold: the signature is another key's
    assert_error(
        reply(core.handle(alice, _put(0, b"s", signature=sign_group_state(STRANGER, G, 0, b"s")))),
        E.BAD_SIGNATURE,
        "signature",
    )
    # a key of small order (the identity point): under it (R, s) = (the identity, 0) verifies for
    # any message (OpenSSL's cofactorless check), so anyone could sign every later version
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)
    assert ed25519_verify(identity, wire.group_state_message(G, 5, b"anything"), forged)
    assert_error(
        reply(core.handle(alice, _put(0, b"s", write_key=identity, signature=forged))),
        E.BAD_SIGNATURE,
        "write_key",
    )
    assert core.store.group_state(G) is None
    assert reply(core.handle(alice, _put(0, b"s"))) == wire.GroupStateStored(id=1, group=G, version=0)
    assert core.store.group_write_keys(G) == (0, (group_write_key(MASTER),))
    # a version ahead of the next is still stale, however well signed
    assert_error(reply(core.handle(alice, _put(2, b"s"))), E.STALE_GROUP, "version")


def test_a_group_state_stored_before_write_keys_takes_the_key_of_its_next_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store schema v14 adds the write key; a state stored by a relay before it has none, and the
    next version stored (signed by the key it brings) registers it, as a creation would."""
    path = tmp_path / "relay.db"
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:13])  # the relay before v14
        with store_module.Store(path) as old, old.transaction():
            old._db.execute("INSERT INTO group_states (id, version, state) VALUES (?, 4, ?)", (G, b"old"))
    peek = sqlite3.connect(path)
    assert peek.execute("PRAGMA user_version").fetchone()[0] == 13
    peek.close()
    core = RelayCore(
        store_module.Store(path), clock=lambda: T0, rng=random.Random(7).randbytes, limits=UNLIMITED
    )
    assert core.store.schema_version == store_module.SCHEMA_VERSION == 16
    assert core.store.group_state(G) == (4, b"old") and core.store.group_write_keys(G) == (4, None)
    anon = ConnectionContext(9, address=("198.51.100.7", 4000))
    assert_error(reply(core.handle(anon, _put(5, b"new", write_key=None))), E.BAD_SIGNATURE, "write_key")
    assert reply(core.handle(anon, _put(5, b"new"))) == wire.GroupStateStored(id=1, group=G, version=5)
    assert core.store.group_write_keys(G) == (5, (group_write_key(MASTER),))
    assert_error(reply(core.handle(anon, _put(6, b"gone", master=STRANGER))), E.BAD_SIGNATURE, "write_key")
    core.store.close()


def test_a_malformed_write_key_or_signature_is_refused_by_its_field() -> None:
    for fields, name, size in (
        ({"write_key": bytes(31)}, "write_key", 32),
        ({"signature": bytes(65)}, "signature", 64),
    ):
        with pytest.raises(wire.LocalProtocolError, match=f"{name} must be {size} bytes") as info:
            wire.PutGroupState(id=1, group=G, version=0, state=b"s", **fields)  # type: ignore[arg-type]
        assert info.value.field == name
    # off the wire: a str where the key's bytes belong, and a short signature
    for key, value, code in (
        ("write_key", "k" * 32, E.WRONG_TYPE),
        ("signature", bytes(63), E.INVALID_VALUE),
    ):
        raw = {
            "v": 1,
            "id": 7,
            "kind": "put_group_state",
            "group": G,
            "version": 0,
            "state": b"s",
            key: value,
        }
        body = msgpack.packb(raw, use_bin_type=True)
        decoder = wire.FrameDecoder("relay")
        decoder.receive_data(len(body).to_bytes(4, "big") + body)
        with pytest.raises(wire.RemoteProtocolError) as refused:
            decoder.next_frame()
        assert (refused.value.code, refused.value.field, refused.value.request_id) == (code, key, 7)
    # and a whole one goes through the decoder as it was made
    frame = _put(3, b"state")
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(wire.encode(frame))
    assert decoder.next_frame() == frame


# --- per-member write keys: only a current member changes the state ------------------------------

SECRETS = {name: bytes([i + 1]) * 32 for i, name in enumerate(("ann", "ben", "cat", "dov", "eve"))}
WRITER = {name: GroupWriteKey.for_member(MASTER, G, s) for name, s in SECRETS.items()}
PUB = {name: w.public for name, w in WRITER.items()}


def _member_put(
    version: int, state: bytes, by: str, members: tuple[str, ...] | None, rid: int = 1, **fields: object
) -> wire.PutGroupState:
    """``by``'s upload of ``version``, setting the write keys to ``members``' (None: unchanged)."""
    keys = None if members is None else write_key_set(PUB[m] for m in members)
    signed: dict[str, object] = {
        "write_key": PUB[by],
        "signature": WRITER[by].sign(G, version, state, keys),
        "write_keys": keys,
    }
    signed.update(fields)
    return wire.PutGroupState(id=rid, group=G, version=version, state=state, **signed)  # type: ignore[arg-type]


def _stored(core: RelayCore, put: wire.PutGroupState, conn: ConnectionContext | None = None) -> None:
    outputs = core.handle(conn or ANON, put)
    assert reply(outputs) == wire.GroupStateStored(id=put.id, group=G, version=put.version)
    assert not [o for o in outputs if isinstance(o, MetadataRecord)]


def _refused(core: RelayCore, put: wire.PutGroupState, code: wire.ErrorCode, field: str) -> None:
    """``put`` is refused by ``field``, and the state, its keys and the records are as they were."""
    before = (core.store.group_state(G), core.store.group_write_keys(G))
    outputs = core.handle(ANON, put)
    assert_error(reply(outputs), code, field)
    assert not [o for o in outputs if isinstance(o, MetadataRecord)]
    assert (core.store.group_state(G), core.store.group_write_keys(G)) == before


ANON = ConnectionContext(9, address=("198.51.100.7", 4000))  # an upload names no account


def test_a_removed_member_can_no_longer_change_the_state_and_the_others_go_on() -> None:
    """Creation, an add, a removal, a leave: each version's write keys are its members', and a
    version is stored only when signed by a key of the version before. cat, removed, still holds
    the master key (and so the group-wide key of the first design) and her own key: every upload of
    hers is refused, however she builds it, and the state stays as the members left it."""
    core = new_core()
    _stored(core, _member_put(0, b"v0", "ann", ("ann", "ben", "cat")))
    assert core.store.group_write_keys(G) == (0, write_key_set(PUB[m] for m in ("ann", "ben", "cat")))
    _stored(core, _member_put(1, b"v1", "ben", ("ann", "ben", "cat", "dov")))  # ben adds dov
    _stored(core, _member_put(2, b"v2", "cat", None))  # a change that keeps the keys (no write_keys)
    _stored(core, _member_put(3, b"v3", "ann", ("ann", "ben", "dov")))  # ann removes cat
    assert core.store.group_write_keys(G) == (3, write_key_set(PUB[m] for m in ("ann", "ben", "dov")))
    for put, field in (
        (_member_put(4, b"cat's", "cat", ("ann", "ben", "cat", "dov")), "write_key"),  # back in
        (_member_put(4, b"cat's", "cat", ("cat",)), "write_key"),  # everyone else out
        (_member_put(4, b"cat's", "cat", None), "write_key"),  # the keys kept
        # the group-wide key of the first design, which the master key gives her
        (_put(4, b"cat's", write_keys=write_key_set([PUB["cat"]])), "write_key"),
        (_put(4, b"cat's"), "write_key"),
        # no key named: the group has three, and the relay tries none of them for her
        (_member_put(4, b"cat's", "cat", None, write_key=None), "write_key"),
        # a current member's key with her signature
        (_member_put(4, b"cat's", "cat", ("cat",), write_key=PUB["ann"]), "signature"),
        # a version she signed while a member, replayed as the next
        (_member_put(4, b"v2", "cat", None, signature=WRITER["cat"].sign(G, 2, b"v2")), "write_key"),
    ):
        _refused(core, put, E.BAD_SIGNATURE, field)
    assert core.store.group_state(G) == (3, b"v3")
    # the members who remain go on; dov leaves (his own key signs a set without it), then cannot write
    _stored(core, _member_put(4, b"v4", "dov", ("ann", "ben")))
    _refused(core, _member_put(5, b"dov's", "dov", ("ann", "ben", "dov")), E.BAD_SIGNATURE, "write_key")
    _stored(core, _member_put(5, b"v5", "ben", None))
    assert core.store.group_state(G) == (5, b"v5")
    assert core.store.group_write_keys(G) == (5, write_key_set([PUB["ann"], PUB["ben"]]))
    # and nothing names anyone: the row is the id, the version, the blob and the members' public keys
    row = core.store._db.execute("SELECT * FROM group_states").fetchall()
    assert row == [(G, 5, b"v5", b"".join(write_key_set([PUB["ann"], PUB["ben"]])))]


def test_the_write_keys_are_signed_with_the_state() -> None:
    """The set is covered by the uploader's signature: whoever sees a member's upload on its way
    (or replays it) cannot add a key to it, drop one, or send it without its keys."""
    core = new_core()
    _stored(core, _member_put(0, b"v0", "ann", ("ann", "ben")))
    honest = _member_put(1, b"v1", "ann", ("ann", "ben", "cat"))
    assert honest.write_keys is not None
    for keys in (
        write_key_set([*honest.write_keys, PUB["eve"]]),  # eve slipped in
        write_key_set([PUB["ann"], PUB["ben"]]),  # cat left out
        (),  # everyone out
    ):
        _refused(core, replace(honest, write_keys=keys), E.BAD_SIGNATURE, "signature")
    _refused(core, replace(honest, write_keys=None), E.BAD_SIGNATURE, "signature")
    # a signature without keys does not carry keys either
    plain = _member_put(1, b"v1", "ann", None)
    _refused(core, replace(plain, write_keys=honest.write_keys), E.BAD_SIGNATURE, "signature")
    _stored(core, honest)


def test_write_keys_are_checked_by_their_index() -> None:
    """Sorted, each once, each a key of Ed25519's prime-order subgroup (a small-order key would let
    anyone sign as that member), at most MAX_GROUP_WRITE_KEYS; the creation is signed by one of the
    keys it registers. Every refusal names the field and changes nothing."""
    core = new_core()
    small = bytes([1]) + bytes(31)  # the identity point: of order 1
    assert not ed25519_key_ok(small)
    ab = write_key_set([PUB["ann"], PUB["ben"]])
    for keys, field in (
        ((ab[1], ab[0]), "write_keys[1]"),  # out of order
        ((ab[0], ab[0], ab[1]), "write_keys[1]"),  # a member counted twice
    ):
        put = _member_put(
            0, b"v0", "ann", None, write_keys=keys, signature=WRITER["ann"].sign(G, 0, b"v0", keys)
        )
        _refused(core, put, E.INVALID_VALUE, field)
    with_small = tuple(sorted([*ab, small]))
    put = _member_put(0, b"v0", "ann", None, write_keys=with_small)
    put = replace(put, signature=WRITER["ann"].sign(G, 0, b"v0", with_small))
    _refused(core, put, E.INVALID_VALUE, f"write_keys[{with_small.index(small)}]")
    _refused(core, _member_put(0, b"v0", "cat", ("ann", "ben")), E.BAD_SIGNATURE, "write_key")  # not hers
    assert core.store.group_state(G) is None
    _stored(core, _member_put(0, b"v0", "ann", ("ann", "ben")))
    # ben adds a member whose key is of small order: refused, ann and ben as they were
    put = replace(_member_put(1, b"v1", "ben", None), write_keys=with_small)
    put = replace(put, signature=WRITER["ben"].sign(G, 1, b"v1", with_small))
    _refused(core, put, E.INVALID_VALUE, f"write_keys[{with_small.index(small)}]")
    # the relay's set is bounded by the frame: MAX_GROUP_WRITE_KEYS keys, no more
    many = write_key_set(
        GroupWriteKey.for_member(MASTER, G, i.to_bytes(32, "big")).public for i in range(1025)
    )
    assert len(many) == wire.MAX_GROUP_WRITE_KEYS + 1 == 1025
    with pytest.raises(wire.LocalProtocolError, match="write_keys must hold 0 to 1024 items") as info:
        replace(_member_put(1, b"v1", "ben", None), write_keys=many)
    assert info.value.field == "write_keys"
    raw = {
        "v": 1,
        "id": 7,
        "kind": "put_group_state",
        "group": G,
        "version": 1,
        "state": b"s",
        "write_keys": list(many),
    }
    body = msgpack.packb(raw, use_bin_type=True)
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(len(body).to_bytes(4, "big") + body)
    with pytest.raises(wire.RemoteProtocolError) as refused:
        decoder.next_frame()
    assert (refused.value.code, refused.value.field) == (E.INVALID_VALUE, "write_keys")
    full = tuple(sorted({*many[:1023], PUB["ben"]}))
    assert len(full) == 1024
    put = replace(_member_put(1, b"v1", "ben", None), write_keys=full)
    put = replace(put, signature=WRITER["ben"].sign(G, 1, b"v1", full))
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(wire.encode(put))
    _stored(core, decoder.next_frame())  # type: ignore[arg-type]
    assert core.store.group_write_keys(G) == (1, full) and core.store.group_write_key_count() == 1024


def test_new_write_keys_beyond_a_few_spend_send_tokens_before_they_are_checked() -> None:
    """Each new key costs a subgroup check (~0.3 ms): an upload with more than WRITE_KEYS_PER_TOKEN
    new keys spends a token for every WRITE_KEYS_PER_TOKEN of them, so one address cannot make the
    relay check keys faster than it may send; keys the relay already holds cost nothing again."""
    from relaysim.relay.core import WRITE_KEYS_PER_TOKEN
    from relaysim.relay.limits import Rate

    assert WRITE_KEYS_PER_TOKEN == 4
    core = new_core(limits=replace(UNLIMITED, send_per_address=Rate(0.001, 20.0)))
    writers = [GroupWriteKey.for_member(MASTER, G, i.to_bytes(32, "big")) for i in range(1, 101)]
    by_public = {w.public: w for w in writers}
    keys = write_key_set(by_public)
    first = by_public[keys[0]]

    def put(version: int, ks: tuple[bytes, ...], rid: int = 1) -> wire.PutGroupState:
        state = b"v%d" % version
        return wire.PutGroupState(
            id=rid,
            group=G,
            version=version,
            state=state,
            write_key=first.public,
            signature=first.sign(G, version, state, ks),
            write_keys=ks,
        )

    # 100 new keys: 1 token for the upload and 25 for the keys, more than the 20 the address has
    refused = reply(core.handle(ANON, put(0, keys)))
    assert isinstance(refused, wire.ErrorFrame) and refused.code == E.RATE_LIMITED.value
    assert "100 new write keys" in refused.message and core.store.group_state(G) is None
    # (the refusal took the upload's token: 19 left) 60 new keys (1 + 15 tokens) fit; a version that
    # adds one key to the 60 held takes a token, no more, as does one that keeps them
    _stored(core, put(0, keys[:60]))
    _stored(core, put(1, keys[:61]))
    _stored(core, put(2, keys[:61]))
    _stored(core, put(3, keys[:62]))
    assert core.store.group_write_keys(G) == (3, keys[:62])
    refused = reply(core.handle(ANON, put(4, keys[:62])))  # and the address's 20 are spent
    assert isinstance(refused, wire.ErrorFrame) and refused.code == E.RATE_LIMITED.value


def test_states_stored_under_schema_v14_keep_working_and_move_to_member_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema v15 holds each state's write keys in place of v14's one key: a v14 state's key becomes
    a set of one, which a member (holding the master key) uses once to store the next version with
    the members' own keys; from then on the group-wide key is refused. A state from before v14 (no
    key) still takes the keys of its next version, as a creation does."""
    path = tmp_path / "relay.db"
    old_g = bytes(16)
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:14])  # the relay before v15
        with store_module.Store(path) as old, old.transaction():
            old._db.execute(
                "INSERT INTO group_states (id, version, state, write_key) VALUES (?, 2, ?, ?)",
                (G, b"v14 state", group_write_key(MASTER)),
            )
            old._db.execute(
                "INSERT INTO group_states (id, version, state) VALUES (?, 4, ?)", (old_g, b"older")
            )
    core = RelayCore(
        store_module.Store(path), clock=lambda: T0, rng=random.Random(7).randbytes, limits=UNLIMITED
    )
    assert core.store.schema_version == store_module.SCHEMA_VERSION == 16
    columns = [r[1] for r in core.store._db.execute("PRAGMA table_info(group_states)")]
    assert columns == ["id", "version", "state", "write_keys"]
    assert core.store.group_write_keys(G) == (2, (group_write_key(MASTER),))
    assert core.store.group_write_keys(old_g) == (4, None)
    # an old client goes on as before: the group's key, named or not
    _stored(core, _put(3, b"v3"))
    _stored(core, _put(4, b"v4", write_key=None))
    # a member moves the group to its members' keys, signing with the group's key
    ab = write_key_set([PUB["ann"], PUB["ben"]])
    _stored(
        core, _put(5, b"v5", write_keys=ab, signature=GroupWriteKey.for_group(MASTER).sign(G, 5, b"v5", ab))
    )
    _refused(core, _put(6, b"gone"), E.BAD_SIGNATURE, "write_key")
    _stored(core, _member_put(6, b"v6", "ben", ("ben",)))
    assert core.store.group_write_keys(G) == (6, (PUB["ben"],))
    # the state from before v14 takes the keys of its next version
    put = wire.PutGroupState(
        id=1,
        group=old_g,
        version=5,
        state=b"newer",
        write_key=PUB["ann"],
        signature=WRITER["ann"].sign(old_g, 5, b"newer", (PUB["ann"],)),
        write_keys=(PUB["ann"],),
    )
    assert reply(core.handle(ANON, put)) == wire.GroupStateStored(id=1, group=old_g, version=5)
    assert core.store.group_write_keys(old_g) == (5, (PUB["ann"],))
    assert core.store.group_write_key_count() == 2
    core.store.close()


def test_group_frames_are_bounded() -> None:
    with pytest.raises(wire.LocalProtocolError, match="members"):
        wire.CreateGroup(id=1, group=G, members=tuple(f"a{i}" for i in range(wire.MAX_GROUP_MEMBERS + 1)))
    with pytest.raises(wire.LocalProtocolError, match="group must be 16 bytes"):
        wire.GetGroup(id=1, group=b"short")
    with pytest.raises(wire.LocalProtocolError, match="state"):
        wire.PutGroupState(id=1, group=G, version=0, state=bytes(wire.MAX_GROUP_STATE + 1))
    frame = wire.GroupSend(id=3, group=G, epoch=2, body=b"b")
    decoder = wire.FrameDecoder("relay")
    decoder.receive_data(wire.encode(frame))
    assert decoder.next_frame() == frame


def test_when_the_last_admin_leaves_the_longest_standing_member_becomes_admin() -> None:
    clock = [1_000.0]
    core = new_core(lambda: clock[0])
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL, DAVE))}
    _create(core, c["alice"], "carol")
    clock[0] += 60
    assert isinstance(
        reply(core.handle(c["alice"], wire.ChangeGroup(id=2, group=G, add=("bob",)))), wire.GroupUpdated
    )
    left = reply(core.handle(c["alice"], wire.ChangeGroup(id=3, group=G, remove=("alice",))))
    assert isinstance(left, wire.GroupUpdated)
    members = {m.account: m.admin for m in core.store.group_members(G)}
    assert members == {"bob": False, "carol": True}  # carol was there first
    # and the group can still change: the new admin adds someone
    added = reply(core.handle(c["carol"], wire.ChangeGroup(id=4, group=G, add=("dave",))))
    assert isinstance(added, wire.GroupUpdated)
    # a group whose last member leaves is simply empty, with no admin to promote
    for who in ("bob", "carol", "dave"):
        core.handle(c[who], wire.ChangeGroup(id=5, group=G, remove=(who,)))
    assert core.store.group_members(G) == []


def test_a_change_reads_the_member_list_once() -> None:
    """change_group read the whole member list three times (before the change, after the adds and
    removes, after the promotions), ~3.5 µs a member each; the members after the change are what it
    wrote, so it reads them once, and leaves the same members, admins and epoch."""
    clock = [1_000.0]
    core = new_core(lambda: clock[0])
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL, DAVE))}
    _create(core, c["alice"], "bob", "carol")
    reads = _calls(core, "group_members")
    clock[0] += 60
    # an add, a remove and a promotion in one change
    both = wire.ChangeGroup(id=2, group=G, add=("dave",), remove=("carol",), admins=("bob",))
    assert reply(core.handle(c["alice"], both)) == wire.GroupUpdated(id=2, group=G, epoch=1)
    assert reads == [G]
    members = {m.account: (m.admin, m.added_at) for m in store_module.Store.group_members(core.store, G)}
    assert members == {"alice": (True, 1_000.0), "bob": (True, 1_000.0), "dave": (False, 1_060.0)}
    # the admins leave: the longest-standing member left is promoted, in the same single read
    reads.clear()
    for rid, who in ((3, "alice"), (4, "bob")):
        left = wire.ChangeGroup(id=rid, group=G, remove=(who,))
        assert reply(core.handle(c[who], left)) == wire.GroupUpdated(id=rid, group=G, epoch=rid - 1)
    assert reads == [G, G]
    assert [(m.account, m.admin) for m in store_module.Store.group_members(core.store, G)] == [("dave", True)]


def test_group_operations_spend_send_tokens() -> None:
    import dataclasses

    from relaysim.relay.limits import UNLIMITED, Rate

    limits = dataclasses.replace(
        UNLIMITED, send_per_account=Rate(0.001, 2.0), send_per_address=Rate(0.001, 3.0)
    )
    core = new_core(limits=limits)
    alice, _ = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    assert isinstance(_create(core, alice, "bob"), wire.GroupUpdated)
    assert isinstance(
        reply(core.handle(alice, wire.ChangeGroup(id=2, group=G, admins=("bob",)))), wire.GroupUpdated
    )
    limited = reply(core.handle(alice, wire.ChangeGroup(id=3, group=G, remove=("bob",))))
    assert isinstance(limited, wire.ErrorFrame) and limited.code == E.RATE_LIMITED.value
    assert {m.account for m in core.store.group_members(G)} == {"alice", "bob"}  # refused whole
    # an unauthenticated state upload spends its address's tokens (three, then refused)
    anon = ConnectionContext(9, address=("198.51.100.7", 4000))
    for v in range(3):
        stored = reply(core.handle(anon, _put(v, b"sealed", group=bytes(16), rid=4)))
        assert isinstance(stored, wire.GroupStateStored)
    again = reply(core.handle(anon, _put(3, b"sealed", group=bytes(16), rid=5)))
    assert isinstance(again, wire.ErrorFrame) and again.code == E.RATE_LIMITED.value


def _accounts(core: RelayCore, n: int, devices: int = 0) -> list[str]:
    """``n`` more accounts straight in the store (cheap: no keys checked), each with ``devices``
    copies of bob's device record."""
    import dataclasses

    bob = core.store.device("bob", 1)
    assert bob is not None
    names = [f"m{i:05d}" for i in range(n)]
    with core.store.transaction():
        for name in names:
            core.store.create_account(name, 0.0)
            for d in range(1, devices + 1):
                core.store.put_device(dataclasses.replace(bob, account=name, device=d))
    return names


def test_a_group_holds_at_most_what_one_group_info_lists() -> None:
    core, c = _world()
    names = _accounts(core, wire.MAX_GROUP_MEMBERS)
    # alice and 1,023 others: the most one group_info lists, so get_group answers with all of them
    assert isinstance(_create(core, c["alice"], *names[:-1]), wire.GroupUpdated)
    info = reply(core.handle(c["alice"], wire.GetGroup(id=2, group=G)))
    assert isinstance(info, wire.GroupInfo) and len(info.members) == wire.MAX_GROUP_MEMBERS
    # one more, by adding or at creation, is refused (it was taken, and get_group then failed)
    over = reply(core.handle(c["alice"], wire.ChangeGroup(id=3, group=G, add=(names[-1],))))
    assert "most a group may have is 1024" in assert_error(over, E.INVALID_VALUE, "add").message
    swap = reply(
        core.handle(c["alice"], wire.ChangeGroup(id=4, group=G, add=(names[-1],), remove=(names[0],)))
    )
    assert isinstance(swap, wire.GroupUpdated)  # one in, one out: still 1,024
    other = bytes(16)
    too_big = reply(core.handle(c["bob"], wire.CreateGroup(id=5, group=other, members=tuple(names))))
    assert "would have 1025 members" in assert_error(too_big, E.INVALID_VALUE, "members").message
    assert core.store.group_epoch(other) is None  # refused whole


def _calls(core: RelayCore, method: str) -> list[Any]:
    """The arguments of every call the core makes to its store's ``method`` from now on (one
    argument: itself; more: their tuple); the calls still go through."""
    calls: list[Any] = []
    real = getattr(core.store, method)

    def counted(*args: Any) -> Any:
        calls.append(args[0] if len(args) == 1 else args)
        return real(*args)

    setattr(core.store, method, counted)
    return calls


def _read_members(kind: str, group: bytes, rid: int) -> wire.Request:
    """A request of ``kind`` that reads every member of ``group`` and changes nothing."""
    if kind == "get_group":
        return wire.GetGroup(id=rid, group=group)
    if kind == "change_group":
        return wire.ChangeGroup(id=rid, group=group, admins=("alice",))  # alice is an admin already
    return wire.GroupSend(id=rid, group=group, epoch=0, body=b"skm")


@pytest.mark.parametrize("kind", ["get_group", "change_group", "group_send"])
def test_a_request_that_reads_every_member_takes_a_token_for_every_32_of_them(kind: str) -> None:
    """get_group, change_group and group_send read every member of the group (~3.5-9 ms at 1,024
    members) and took one token whatever its size: a 1,024-member group had the relay do ~1,000 x
    the work of a small one per token. Now a token for every 32 members (relay.core.MEMBERS_PER_TOKEN)."""
    from relaysim.relay.core import MEMBERS_PER_TOKEN
    from relaysim.relay.limits import Rate

    bucket = "group_reads_per_account" if kind == "get_group" else "send_per_account"
    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, **{bucket: Rate(1.0, 40.0)}))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    small = bytes(16)
    created = reply(core.handle(c["alice"], wire.CreateGroup(id=1, group=small, members=("bob",))))
    assert isinstance(created, wire.GroupUpdated)
    now[0] += 100  # (writing 1,024 members takes a full bucket: relay.core.ROWS_PER_TOKEN)
    assert isinstance(_create(core, c["alice"], "bob", *_accounts(core, 1022)), wire.GroupUpdated)
    assert len(core.store.group_members(G)) == wire.MAX_GROUP_MEMBERS == 32 * MEMBERS_PER_TOKEN
    now[0] += 100  # the bucket full again: 40 tokens
    assert not isinstance(reply(core.handle(c["alice"], _read_members(kind, G, 2))), wire.ErrorFrame)  # 32
    again = assert_error(reply(core.handle(c["alice"], _read_members(kind, G, 3))), E.RATE_LIMITED, bucket)
    assert again.retry_after_ms == 24_000  # 8 tokens left of the 32 it takes, at 1 a second
    assert f"{kind} to a group of 1024 members, a token for every 32" in again.message
    # a group of up to 32 members takes one token a request, as any request does
    for i in range(8):
        assert not isinstance(
            reply(core.handle(c["alice"], _read_members(kind, small, 4 + i))), wire.ErrorFrame
        )
    assert_error(reply(core.handle(c["alice"], _read_members(kind, small, 12))), E.RATE_LIMITED, bucket)


def test_a_group_send_whose_copies_would_take_more_than_the_members_leave_of_a_burst_is_too_large() -> None:
    # A 1,024-member group's send takes 32 tokens for its members; the frames' worth of copies past the
    # first must fit in what is left of a burst (8 of 40 here), or the send could never be met.
    from relaysim.relay.limits import Rate

    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, send_per_account=Rate(1.0, 40.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    assert isinstance(_create(core, c["alice"], "bob", *_accounts(core, 1022, devices=1)), wire.GroupUpdated)
    now[0] += 100
    # 2,500 bytes to 1,023 devices: 10 frames' worth, 9 tokens past the first
    too_big = reply(core.handle(c["alice"], wire.GroupSend(id=2, group=G, epoch=0, body=bytes(2500))))
    message = assert_error(too_big, E.ENVELOPE_TOO_LARGE, "body").message
    assert "the most one request to this group may make this relay store is 9 frames' worth" in message
    now[0] += 100
    # 2,200 bytes: 9 frames' worth, 8 tokens past the first, the 8 the members' 32 leave
    sent = reply(core.handle(c["alice"], wire.GroupSend(id=3, group=G, epoch=0, body=bytes(2200))))
    assert isinstance(sent, wire.GroupSent) and len(sent.envelope_ids) == 1023
    assert core.store.all_envelopes()[0].body == bytes(2200)


def test_a_group_send_spends_a_send_token_for_every_two_copies_it_stores_up_to_what_a_burst_leaves() -> None:
    """A small body to 1,023 single-device members (~120 ms of copies: a row, an id and a record
    each) took the 32 tokens of its members read, ~4 ms a token where a send is ~0.2 ms. Now a token
    for every relay.core.COPIES_PER_TOKEN copies, up to what a burst leaves after the members'."""
    from relaysim.relay.core import COPIES_PER_TOKEN
    from relaysim.relay.limits import Rate

    assert COPIES_PER_TOKEN == 2
    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, send_per_account=Rate(1.0, 40.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    assert isinstance(_create(core, c["alice"], "bob", *_accounts(core, 1022, devices=1)), wire.GroupUpdated)
    now[0] += 100  # the bucket full: 40 tokens
    one = wire.Send(id=2, to="bob", envelopes=(wire.OutgoingEnvelope(device=1, body=b"x"),))
    assert isinstance(reply(core.handle(c["alice"], one)), wire.Sent)  # 39 left
    # 32 for the members, 511 for the copies past the first two, of which the 8 a burst leaves: 7 are
    short = reply(core.handle(c["alice"], wire.GroupSend(id=3, group=G, epoch=0, body=b"skm")))
    refused = assert_error(short, E.RATE_LIMITED, "send_per_account")
    assert "group_send storing 1023 copies, a token for every 2" in refused.message
    assert len(core.store.all_envelopes()) == 1  # the refused send stored nothing
    now[0] += 100
    sent = reply(core.handle(c["alice"], wire.GroupSend(id=4, group=G, epoch=0, body=b"skm")))
    assert isinstance(sent, wire.GroupSent) and len(sent.envelope_ids) == 1023
    # it took the whole burst: not even a one-envelope send is left
    again = reply(core.handle(c["alice"], replace(one, id=5)))
    assert assert_error(again, E.RATE_LIMITED, "send_per_account").retry_after_ms == 1000
    # a group of two devices' send is one token, as before
    small = bytes(16)
    now[0] += 100
    created = reply(core.handle(c["alice"], wire.CreateGroup(id=6, group=small, members=("bob",))))
    assert isinstance(created, wire.GroupUpdated)
    for i in range(39):
        sent = reply(core.handle(c["alice"], wire.GroupSend(id=10 + i, group=small, epoch=0, body=b"skm")))
        assert isinstance(sent, wire.GroupSent), sent
    assert_error(
        reply(core.handle(c["alice"], wire.GroupSend(id=99, group=small, epoch=0, body=b"skm"))),
        E.RATE_LIMITED,
        "send_per_account",
    )


def test_create_group_spends_a_send_token_for_every_eight_members_it_writes_before_any_is_written() -> None:
    """create_group wrote up to 1,024 member rows (~20-40 ms) for one token. Now a token for every
    relay.core.ROWS_PER_TOKEN members, at most the burst, taken before any member is checked."""
    from relaysim.relay.core import ROWS_PER_TOKEN
    from relaysim.relay.limits import Rate

    assert ROWS_PER_TOKEN == 8
    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, send_per_account=Rate(1.0, 40.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    names = _accounts(core, 1022)
    small = bytes(16)
    created = reply(core.handle(c["alice"], wire.CreateGroup(id=1, group=small, members=("bob",))))
    assert isinstance(created, wire.GroupUpdated)  # one token: 39 left
    checked = _calls(core, "account_exists")
    big = reply(core.handle(c["alice"], wire.CreateGroup(id=2, group=G, members=("bob", *names))))
    refused = assert_error(big, E.RATE_LIMITED, "send_per_account")
    assert "create_group of 1024 members, a token for every 8" in refused.message
    assert checked == [] and core.store.group_epoch(G) is None  # refused before any member was read
    now[0] += 100
    assert isinstance(_create(core, c["alice"], "bob", *names), wire.GroupUpdated)  # the whole burst
    other = bytes([7]) * 16
    after = reply(core.handle(c["alice"], wire.CreateGroup(id=3, group=other, members=("bob",))))
    assert assert_error(after, E.RATE_LIMITED, "send_per_account").retry_after_ms == 1000
    now[0] += 2.0
    # nine members (alice and eight): two tokens
    nine = reply(core.handle(c["alice"], wire.CreateGroup(id=5, group=other, members=tuple(names[:8]))))
    assert isinstance(nine, wire.GroupUpdated)
    assert_error(
        reply(core.handle(c["alice"], wire.CreateGroup(id=4, group=bytes([8]) * 16, members=("bob",)))),
        E.RATE_LIMITED,
        "send_per_account",
    )


def test_change_group_spends_a_send_token_for_every_eight_members_it_adds_before_any_is_written() -> None:
    """change_group's add wrote up to 1,023 member rows for the one token of its members read (a
    group of up to 32). Now the members it adds are priced as create_group's rows, a token for every
    relay.core.ROWS_PER_TOKEN past the first ROWS_PER_TOKEN, taken with the members' tokens (at most
    the burst) before any member is checked or written."""
    from relaysim.relay.core import ROWS_PER_TOKEN
    from relaysim.relay.limits import Rate

    assert ROWS_PER_TOKEN == 8
    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, send_per_account=Rate(1.0, 40.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    names = _accounts(core, 1022)
    assert isinstance(_create(core, c["alice"], "bob"), wire.GroupUpdated)  # one token: 39 left
    checked = _calls(core, "account_exists")
    added = _calls(core, "put_group_member")
    big = reply(core.handle(c["alice"], wire.ChangeGroup(id=2, group=G, add=tuple(names))))
    refused = assert_error(big, E.RATE_LIMITED, "send_per_account")
    assert "and 127 more for the members it adds, a token for every 8" in refused.message
    assert checked == [] and added == []  # refused before any member was checked or written
    assert len(core.store.group_members(G)) == 2 and core.store.group_epoch(G) == 0
    now[0] += 100  # the bucket full: 40 tokens, the whole burst (1 + 127, at most 40)
    done = reply(core.handle(c["alice"], wire.ChangeGroup(id=3, group=G, add=tuple(names))))
    assert done == wire.GroupUpdated(id=3, group=G, epoch=1)
    assert len(core.store.group_members(G)) == wire.MAX_GROUP_MEMBERS
    one = wire.Send(id=4, to="bob", envelopes=(wire.OutgoingEnvelope(device=1, body=b"x"),))
    after = assert_error(reply(core.handle(c["alice"], one)), E.RATE_LIMITED, "send_per_account")
    assert after.retry_after_ms == 1000
    # a small group: adding eight is one token, as before; nine is two
    small = bytes(16)
    now[0] += 100
    created = reply(core.handle(c["alice"], wire.CreateGroup(id=5, group=small, members=("bob",))))
    assert isinstance(created, wire.GroupUpdated)  # 39 left
    eight = reply(core.handle(c["alice"], wire.ChangeGroup(id=6, group=small, add=tuple(names[:8]))))
    assert eight == wire.GroupUpdated(id=6, group=small, epoch=1)  # 38 left
    nine = reply(core.handle(c["alice"], wire.ChangeGroup(id=7, group=small, add=tuple(names[8:17]))))
    assert nine == wire.GroupUpdated(id=7, group=small, epoch=2)  # 36 left
    for i in range(36):
        assert isinstance(reply(core.handle(c["alice"], replace(one, id=10 + i))), wire.Sent)
    assert_error(reply(core.handle(c["alice"], replace(one, id=99))), E.RATE_LIMITED, "send_per_account")


def test_a_member_that_is_no_admin_pays_only_its_read_for_a_change_it_may_not_make() -> None:
    """change_group priced the members a caller adds (a token for every 8 past the first 8) before it
    checked that the caller is an admin: a member that is not one paid a burst for rows it would never
    have written. Whether the caller is an admin now comes with the group's count, so a member that is
    none takes the read's one token and is refused forbidden, before the members are read."""
    from relaysim.relay.limits import Rate

    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, send_per_account=Rate(1.0, 40.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB))}
    names = _accounts(core, 1022)
    assert isinstance(_create(core, c["alice"], "bob"), wire.GroupUpdated)
    read = _calls(core, "group_members")
    for rid in (2, 3):  # the second time with the group's count and bob's standing known
        refused = reply(core.handle(c["bob"], wire.ChangeGroup(id=rid, group=G, add=tuple(names))))
        assert_error(refused, E.FORBIDDEN, "group")
    assert read == []  # refused before the members were read
    # bob took a token for each refusal: 38 of its 40 are left, enough for 38 sends and no more
    one = wire.Send(id=10, to="alice", envelopes=(wire.OutgoingEnvelope(1, b"x"),))
    sends = [reply(core.handle(c["bob"], replace(one, id=10 + i))) for i in range(39)]
    assert all(isinstance(s, wire.Sent) for s in sends[:38]), sends[:38]
    assert_error(sends[38], E.RATE_LIMITED, "send_per_account")
    assert len(core.store.group_members(G)) == 2 and core.store.group_epoch(G) == 0


def test_a_refused_group_send_draws_no_envelope_ids() -> None:
    """A group_send drew its copies' ids member by member, before the later members' queues and its
    copies' tokens were checked: a refused one used up ids (and a seeded relay's random stream, every
    draw after it shifted) for envelopes never stored. The ids are drawn once the send is accepted, as
    a send's are; an accepted one draws one per copy, in the members' order, as before."""
    from relaysim.relay.limits import Rate

    now = [T0]
    seeded = random.Random(7).randbytes
    draws: list[int] = []

    def rng(n: int) -> bytes:
        draws.append(n)
        return seeded(n)

    core = RelayCore(
        store_module.Store(":memory:"),
        clock=lambda: now[0],
        rng=rng,
        limits=replace(UNLIMITED, send_per_account=Rate(1.0, 2.0)),
    )
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL, DAVE))}
    assert isinstance(_create(core, c["alice"], "bob", "carol", "dave"), wire.GroupUpdated)  # 1 token left
    draws.clear()
    # the members' read takes the last token; its 3 copies want one more: refused
    send = wire.GroupSend(id=2, group=G, epoch=0, body=b"to all")
    assert_error(reply(core.handle(c["alice"], send)), E.RATE_LIMITED, "send_per_account")
    assert draws == []
    assert all(core.store.queue_size(k.account, 1) == (0, 0) for k in (BOB, CAROL, DAVE))
    now[0] += 10  # the bucket full again
    sent = reply(core.handle(c["alice"], replace(send, id=3)))
    assert isinstance(sent, wire.GroupSent) and len(set(sent.envelope_ids)) == 3
    assert draws == [wire.ENVELOPE_ID_SIZE] * 3


@pytest.mark.parametrize("kind", ["get_group", "change_group", "group_send"])
def test_a_caller_not_in_a_group_takes_one_token_and_its_members_are_not_read(kind: str) -> None:
    """A stranger's request is refused unknown_group before any member is read (reading 1,024 to
    refuse it was ~2.5 ms a request), for one token whatever the group's size: its waits are those
    for a group that does not exist, so they do not tell it that the group exists or how big it is."""
    from relaysim.relay.limits import Rate

    bucket = "group_reads_per_account" if kind == "get_group" else "send_per_account"
    core = new_core(limits=replace(UNLIMITED, **{bucket: Rate(1.0, 40.0)}))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL))}
    assert isinstance(_create(core, c["alice"], "bob", *_accounts(core, 1022)), wire.GroupUpdated)
    reads = _calls(core, "group_members")
    for i, group in enumerate((G, bytes(16)) * 20):  # the group, and one that does not exist
        assert_error(
            reply(core.handle(c["carol"], _read_members(kind, group, 2 + i))), E.UNKNOWN_GROUP, "group"
        )
    assert reads == []
    waits = [
        assert_error(reply(core.handle(c["carol"], _read_members(kind, group, 50))), E.RATE_LIMITED, bucket)
        for group in (G, bytes(16))
    ]
    assert waits[0].retry_after_ms == waits[1].retry_after_ms == 1000
    assert waits[0].message == waits[1].message


def test_group_lists_name_each_account_once_and_a_change_does_not_both_add_and_remove() -> None:
    core, c = _world()
    twice = reply(core.handle(c["alice"], wire.CreateGroup(id=1, group=G, members=("bob", "carol", "bob"))))
    assert "'bob' is named twice" in assert_error(twice, E.INVALID_VALUE, "members[2]").message
    _create(core, c["alice"], "bob")
    for change, field in (
        (wire.ChangeGroup(id=2, group=G, add=("carol", "carol")), "add[1]"),
        (wire.ChangeGroup(id=3, group=G, remove=("bob", "bob")), "remove[1]"),
        (wire.ChangeGroup(id=4, group=G, admins=("bob", "bob")), "admins[1]"),
        (wire.ChangeGroup(id=5, group=G, add=("carol",), remove=("carol",)), "remove[0]"),
    ):
        assert_error(reply(core.handle(c["alice"], change)), E.INVALID_VALUE, field)
    assert {m.account for m in core.store.group_members(G)} == {"alice", "bob"}
    assert core.store.group_epoch(G) == 0  # nothing refused moved the epoch


def test_a_group_send_reaches_at_most_what_one_group_sent_lists() -> None:
    core, c = _world()
    per = wire.MAX_DEVICES_PER_ACCOUNT
    names = _accounts(core, wire.MAX_GROUP_FANOUT // per + 1, devices=per)  # 8,256 devices
    _create(core, c["alice"], *names)
    refused = reply(core.handle(c["alice"], wire.GroupSend(id=2, group=G, epoch=0, body=b"skm")))
    assert "more than 8192 member devices" in assert_error(refused, E.INVALID_VALUE, "group").message
    assert core.store.all_envelopes() == []
    core.handle(c["alice"], wire.ChangeGroup(id=3, group=G, remove=(names[0],)))  # 8,192 devices now
    sent = reply(core.handle(c["alice"], wire.GroupSend(id=4, group=G, epoch=1, body=b"skm")))
    assert isinstance(sent, wire.GroupSent) and len(sent.envelope_ids) == wire.MAX_GROUP_FANOUT


def test_a_group_send_spends_a_send_token_for_each_frame_s_worth_it_makes_the_relay_store() -> None:
    """One group_send of a 261 KB body to 1,023 members stored ~260 MB for one token: five of them
    grew the database by 1.5 GiB. Now it costs what the pairwise sends storing as much would."""
    import dataclasses

    from relaysim.relay.limits import UNLIMITED, Rate

    core = new_core(limits=dataclasses.replace(UNLIMITED, send_per_account=Rate(0.001, 5.0)))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL, DAVE))}
    _create(core, c["alice"], "bob", "carol", "dave")  # one token
    small = reply(core.handle(c["alice"], wire.GroupSend(id=2, group=G, epoch=0, body=bytes(1000))))
    assert isinstance(small, wire.GroupSent)  # 3 KB stored: one token, as before (3 left)
    body = bytes(150_000)  # 3 copies, 450 KB: two frames' worth, so one token more (1 left)
    assert isinstance(
        reply(core.handle(c["alice"], wire.GroupSend(id=3, group=G, epoch=0, body=body))), wire.GroupSent
    )
    again = reply(core.handle(c["alice"], wire.GroupSend(id=4, group=G, epoch=0, body=body)))
    assert assert_error(again, E.RATE_LIMITED, "send_per_account").retry_after_ms is not None
    assert len(core.store.all_envelopes()) == 6  # the refused send stored nothing
    # more than the burst could ever pay for: refused as too large, not "retry later"
    names = _accounts(core, 20, devices=1)
    other = bytes(16)
    core.handle(c["bob"], wire.CreateGroup(id=5, group=other, members=tuple(names)))
    huge = reply(core.handle(c["bob"], wire.GroupSend(id=6, group=other, epoch=0, body=bytes(200_000))))
    assert "send a smaller body" in assert_error(huge, E.ENVELOPE_TOO_LARGE, "body").message


def test_get_group_state_returns_the_write_keys_only_to_a_client_that_asks() -> None:
    """A member checks the relay's write keys against the keys in the state it opens, so
    get_group_state returns them when asked (write_keys: true); a client from before, which does
    not ask, gets the answer it always got, and a state stored before write keys has none to give."""
    core = new_core()
    _stored(core, _member_put(0, b"v0", "ann", ("ann", "ben")))
    keys = write_key_set([PUB["ann"], PUB["ben"]])
    asked = reply(core.handle(ANON, wire.GetGroupState(id=2, group=G, write_keys=True)))
    assert asked == wire.GroupState(id=2, group=G, version=0, state=b"v0", write_keys=keys)
    old = {"v": wire.PROTOCOL_VERSION, "id": 3, "kind": "get_group_state", "group": G}
    request = wire.decode_body(msgpack.packb(old), wire.REQUEST_KINDS)  # as a client from before sends it
    assert isinstance(request, wire.GetGroupState)
    plain = reply(core.handle(ANON, request))
    assert plain == wire.GroupState(id=3, group=G, version=0, state=b"v0")
    assert "write_keys" not in plain.to_wire()  # nothing its decoder would refuse as unknown_field
    old_g = bytes(range(1, 17))
    core.store.put_group_state(old_g, 4, b"old", [])
    core.store._db.execute("UPDATE group_states SET write_keys = NULL WHERE id = ?", (old_g,))
    before = reply(core.handle(ANON, wire.GetGroupState(id=4, group=old_g, write_keys=True)))
    assert before == wire.GroupState(id=4, group=old_g, version=4, state=b"old")


def test_a_group_whose_last_member_left_is_closed_to_every_later_upload() -> None:
    """The last member's leave empties the write keys: no key can sign another version, and every
    later upload, whoever signs it and whatever version it names (a creation again included), is
    refused group_closed, naming the group, before its signature costs a check; the state stays
    readable, with its empty set of keys."""
    core = new_core()
    _stored(core, _member_put(0, b"v0", "ann", ("ann", "ben")))
    _stored(core, _member_put(1, b"v1", "ben", ("ann",)))  # ben leaves
    _stored(core, _member_put(2, b"v2", "ann", ()))  # ann, the last, leaves
    assert core.store.group_write_keys(G) == (2, ())
    for put in (
        _member_put(3, b"ann's", "ann", ("ann",)),  # the last member back
        _member_put(0, b"new", "eve", ("eve",)),  # a creation again, under the same id
        _member_put(3, b"x", "ben", None, signature=bytes(64)),  # a signature that verifies nothing
    ):
        outputs = core.handle(ANON, put)
        error = reply(outputs)
        assert_error(error, E.GROUP_CLOSED, "group")
        assert isinstance(error, wire.ErrorFrame) and f"group state {G.hex()} is closed" in error.message
        assert "last member left at version 2" in error.message
    assert core.store.group_state(G) == (2, b"v2")
    got = reply(core.handle(ANON, wire.GetGroupState(id=5, group=G, write_keys=True)))
    assert got == wire.GroupState(id=5, group=G, version=2, state=b"v2", write_keys=())


@pytest.mark.parametrize("kind", ["get_group", "change_group", "group_send"])
def test_a_member_refused_for_its_rate_does_not_have_the_group_counted_again(kind: str) -> None:
    """Counting a 1,024-member group is ~0.2 ms, a refusal a few µs: a member pipelining reads of its
    own big group had the relay count it for every refusal. The size counted for the member's last
    request prices the next one, so a request its bucket cannot pay for is refused uncounted, with
    the same answer; a change of the group drops what was counted. (A stranger's request is priced at
    one token, counted: test_a_caller_not_in_a_group_takes_one_token_and_its_members_are_not_read.)"""
    from relaysim.relay.limits import Rate

    bucket = "group_reads_per_account" if kind == "get_group" else "send_per_account"
    now = [T0]
    core = new_core(lambda: now[0], limits=replace(UNLIMITED, **{bucket: Rate(1.0, 40.0)}))
    c = {k.account: core_device(core, k, i + 1) for i, k in enumerate((ALICE, BOB, CAROL))}
    others = _accounts(core, 1021)
    assert isinstance(_create(core, c["alice"], "bob", *others), wire.GroupUpdated)  # 1,023 members
    counted = _calls(core, "group_standing")
    now[0] += 100  # the bucket full again: 40 tokens
    assert not isinstance(reply(core.handle(c["alice"], _read_members(kind, G, 2))), wire.ErrorFrame)  # 32
    assert counted == [(G, "alice")]
    refusals = [
        assert_error(reply(core.handle(c["alice"], _read_members(kind, G, 3 + i))), E.RATE_LIMITED, bucket)
        for i in range(5)
    ]
    assert counted == [(G, "alice")]  # refused five times, counted once
    assert refusals[0].retry_after_ms == 24_000  # 8 tokens left of the 32 it takes, as when counted
    assert "to a group of 1023 members, a token for every 32" in refusals[0].message
    # the group shrinks: what was counted is dropped, so a request the smaller group's price fits is
    # served (priced by the size counted before, 32 tokens, it would have been refused)
    now[0] += 100
    shrunk = reply(core.handle(c["alice"], wire.ChangeGroup(id=20, group=G, remove=tuple(others[:1000]))))
    assert isinstance(shrunk, wire.GroupUpdated)  # 32 tokens for the 1,023 it read: 8 left
    counted.clear()
    epoch = shrunk.epoch
    after = _read_members(kind, G, 21)
    if isinstance(after, wire.GroupSend):
        after = replace(after, epoch=epoch)
    assert not isinstance(reply(core.handle(c["alice"], after)), wire.ErrorFrame)  # 23 members: 1 token
    assert counted == [(G, "alice")]
