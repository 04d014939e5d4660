"""What lawful access adds to the relay: taps, delivered and preserved envelopes kept in an
archive, address books and blocks, and the v2 schema that holds them."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest

from relaysim.clients.agent import Accepted, ContactsFound, DeviceAgent, Failed, LoggedIn, Registered
from relaysim.clients.session import Device
from relaysim.relay import store as store_module
from relaysim.relay import wire
from relaysim.relay.compliance import ComplianceDesk, LegalProcess
from relaysim.relay.core import TAPPED_KINDS, ConnectionContext, Push, RelayCore, Reply, Tap
from relaysim.relay.metadata import (
    KEEP_EVERYTHING,
    KEEP_NOTHING,
    METADATA_SCHEMA,
    KindRule,
    MetadataRecord,
    RecordKind,
    RetentionPolicy,
)
from relaysim.relay.profiles import get_profile
from relaysim.relay.store import ArchivedEnvelope, Store
from relaysim.sims.world.util import SimulationRandom
from tests.helpers import T0, Clock, DeviceKeys, assert_error, core_device, reply

E = wire.ErrorCode
ALICE, BOB, CAROL = DeviceKeys.make("alice"), DeviceKeys.make("bob"), DeviceKeys.make("carol")


def _core(store: Store | None = None, clock: Clock | None = None, **kwargs: object) -> RelayCore:
    return RelayCore(
        store if store is not None else Store(),
        clock=clock or Clock(),
        rng=random.Random(7).randbytes,
        **kwargs,  # type: ignore[arg-type]
    )


def _send(to: str, body: bytes, *devices: int, rid: int = 1) -> wire.Send:
    return wire.Send(id=rid, to=to, envelopes=tuple(wire.OutgoingEnvelope(d, body) for d in devices or (1,)))


def _sealed(to: str, token: bytes, body: bytes, rid: int = 1) -> wire.SealedSend:
    return wire.SealedSend(id=rid, to=to, delivery_token=token, envelopes=(wire.OutgoingEnvelope(1, body),))


def _sent(outputs: list[object]) -> tuple[bytes, ...]:
    frame = reply(outputs)
    assert isinstance(frame, wire.Sent), frame
    return frame.envelope_ids


def _records(outputs: list[object]) -> list[MetadataRecord]:
    """The records among ``outputs``, each checked against METADATA_SCHEMA."""
    records = [o for o in outputs if isinstance(o, MetadataRecord)]
    for r in records:
        present = {
            f.name for f in dataclasses.fields(r) if f.name != "kind" and getattr(r, f.name) is not None
        }
        assert present <= METADATA_SCHEMA[r.kind], (r.kind, present - METADATA_SCHEMA[r.kind])
    return records


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _ack_all(core: RelayCore, conn: ConnectionContext, rid: int = 50) -> int:
    got = reply(core.handle(conn, wire.Receive(id=rid)))
    assert isinstance(got, wire.Envelopes)
    if not got.envelopes:
        return 0
    acked = reply(core.handle(conn, wire.Ack(id=rid + 1, envelope_ids=tuple(e.id for e in got.envelopes))))
    assert isinstance(acked, wire.Acked)
    return acked.count


# --- taps ------------------------------------------------------------------------------------------


def test_a_tap_collects_the_targets_records_inside_its_window_and_nothing_before_service() -> None:
    clock = Clock()
    core = _core(clock=clock, policy=KEEP_NOTHING)  # the provider keeps nothing; the order still collects
    alice, bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    clock.now = T0 + 10
    core.handle(alice, _send("bob", b"before service"))
    # Served at T0 + 50 with a window that reaches back to T0: what happened before is not collected.
    clock.now = T0 + 50
    core.add_tap(Tap("order-1", "alice", start=T0, end=T0 + 200, content=False))
    clock.now = T0 + 100
    inside = _sent(core.handle(alice, _send("bob", b"inside")))
    core.handle(carol, _send("bob", b"not alice's"))
    core.handle(bob, _send("alice", b"to alice"))
    core.handle(bob, wire.FetchBundle(id=3, account="alice"))
    core.handle(carol, wire.FetchBundle(id=4, account="bob"))
    clock.now = T0 + 200  # the window is closed: end is exclusive
    core.handle(alice, _send("bob", b"after"))
    core.disconnect(alice)

    assert core.store.metadata() == []
    got = core.store.intercepts("order-1")
    assert got and all(body is None for _, body in got)  # a pen register: no content
    records = [r for r, _ in got]
    assert all(r.kind in TAPPED_KINDS for r in records)
    assert all("alice" in (r.account, r.recipient_account) for r in records)
    assert all(r.time is not None and T0 + 50 <= r.time < T0 + 200 for r in records)
    assert [(r.kind, r.account, r.recipient_account) for r in records] == [
        (RecordKind.SEND, "alice", "bob"),
        (RecordKind.SEND, "bob", "alice"),
        (RecordKind.DELIVERY, "alice", None),  # pushed to alice's connection
        (RecordKind.BUNDLE_FETCH, "bob", "alice"),
    ]
    # Whole records, whatever the retention policy: where from, which envelope, how big.
    send = records[0]
    assert (send.host, send.port, send.envelope_id, send.size) == ("192.0.2.1", 40001, inside[0], 6)


def test_a_blanket_tap_sees_everyone_until_it_is_removed(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "relay.db"
    with Store(path) as store:
        core = _core(store, clock)
        core.add_tap(Tap("everyone", None, start=T0, end=T0 + 10**6, content=False))
        assert set(core.taps) == {"everyone"}
        alice = core_device(core, ALICE, 1)
        core_device(core, BOB, 2)
        core.handle(alice, _send("bob", b"x"))
        removed = core.remove_tap("everyone")
        assert removed.id == "everyone" and dict(core.taps) == {}
        core.handle(alice, _send("bob", b"y"))
    with Store(path) as store:  # durable, and still there after the tap was removed
        kinds = [r.kind for r, _ in store.intercepts("everyone")]
    assert kinds.count(RecordKind.CONNECTION) == 2  # connection records name no one: only a blanket tap
    assert kinds.count(RecordKind.AUTHENTICATION) == 2
    assert kinds.count(RecordKind.SEND) == 1  # not the send after removal
    assert RecordKind.REGISTRATION not in kinds  # not a tapped kind


def test_a_content_tap_keeps_the_bodies_sent() -> None:
    core = _core()
    alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    core.add_tap(Tap("wiretap", "bob", start=T0, end=T0 + 1, content=True))
    core.add_tap(Tap("pen", "bob", start=T0, end=T0 + 1, content=False))
    core.handle(alice, _send("bob", b"ciphertext for bob"))
    core.handle(bob, _send("alice", b"ciphertext for alice"))
    wiretap = [(r.kind, body) for r, body in core.store.intercepts("wiretap")]
    assert wiretap == [
        (RecordKind.SEND, b"ciphertext for bob"),
        (RecordKind.DELIVERY, None),  # bodies are taken as sent, once
        (RecordKind.SEND, b"ciphertext for alice"),
    ]
    assert [body for _, body in core.store.intercepts("pen")] == [None, None, None]
    assert b"ciphertext" not in repr(core.store.metadata()).encode()  # the retained records stay body-free


def test_a_tap_on_a_sealed_sender_misses_its_sealed_sends_but_a_tap_on_the_recipient_sees_them() -> None:
    core = _core()
    alice, _bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    anonymous = ConnectionContext(9, ("198.51.100.1", 9))
    core.connect(anonymous)
    core.add_tap(Tap("on-alice", "alice", start=T0, end=T0 + 1, content=True))
    core.add_tap(Tap("on-bob", "bob", start=T0, end=T0 + 1, content=True))
    _sent(core.handle(anonymous, _sealed("bob", BOB.delivery_token, b"sealed, anonymous")))
    sealed_to_bob = [
        (r.account, body) for r, body in core.store.intercepts("on-bob") if r.kind == "sealed_send"
    ]
    assert sealed_to_bob == [(None, b"sealed, anonymous")]  # seen, but the relay does not know by whom
    assert not [r for r, _ in core.store.intercepts("on-alice") if r.kind == RecordKind.SEALED_SEND]
    # Sealed over her own authenticated connection, the relay knows it is alice: then it is tapped.
    core.handle(alice, _sealed("bob", BOB.delivery_token, b"sealed, but logged in"))
    from_alice = [(r.kind, body) for r, body in core.store.intercepts("on-alice")]
    assert from_alice == [(RecordKind.SEALED_SEND, b"sealed, but logged in")]


def test_taps_are_checked_and_their_view_is_read_only() -> None:
    core = _core()
    with pytest.raises(ValueError, match=r"Tap\.end must be after Tap\.start"):
        Tap("t", "alice", start=5.0, end=5.0, content=False)
    with pytest.raises(ValueError, match=r"Tap\.id"):
        Tap("", "alice", start=0.0, end=1.0, content=False)
    with pytest.raises(ValueError, match=r"Tap\.target"):
        Tap("t", "", start=0.0, end=1.0, content=False)
    with pytest.raises(ValueError, match=r"Tap\.content"):
        Tap("t", None, start=0.0, end=1.0, content=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Tap\.start"):
        Tap("t", None, start=float("nan"), end=1.0, content=False)
    tap = Tap("t", "alice", start=0.0, end=float("inf"), content=False)
    core.add_tap(tap)
    with pytest.raises(ValueError, match="already in place"):
        core.add_tap(tap)
    with pytest.raises(TypeError):
        core.taps["u"] = tap  # type: ignore[index]
    with pytest.raises(KeyError, match="no tap"):
        core.remove_tap("u")
    assert core.taps == {"t": tap}


# --- envelopes kept after delivery, and preservation ----------------------------------------------


def test_a_cloud_relay_archives_acknowledged_envelopes_and_the_default_deletes_them(tmp_path: Path) -> None:
    marker = b"DELIVERED-BODY-MARKER" * 4
    for keep in (True, False):
        clock = Clock()
        path = tmp_path / f"keep-{keep}.db"
        with Store(path) as store:
            core = _core(store, clock, keep_delivered=keep)
            alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
            (eid,) = _sent(core.handle(alice, _send("bob", marker)))
            clock.now = T0 + 60
            assert _ack_all(core, bob) == 1
            assert store.all_envelopes() == []  # out of the queue either way
            store.checkpoint()
            archived = store.archived()
        if keep:
            assert archived == [
                ArchivedEnvelope(
                    eid,
                    "bob",
                    1,
                    marker,
                    int(T0 * 1000),
                    False,
                    "alice",
                    1,
                    archived_at=T0 + 60,
                    reason="kept",
                )
            ]
            assert marker in _db_bytes(path)
        else:
            assert archived == []
            assert marker not in _db_bytes(path)


def test_preservation_archives_only_the_preserved_accounts_envelopes_from_since_on(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "relay.db"
    with Store(path) as store:
        core = _core(store, clock)
        alice, bob, carol = (
            core_device(core, ALICE, 1),
            core_device(core, BOB, 2),
            core_device(core, CAROL, 3),
        )
        core.preserve("alice", since=T0 + 100)
        core.handle(bob, _send("alice", b"to alice, acked before since"))
        assert _ack_all(core, alice) == 1
        clock.now = T0 + 100
        core.handle(bob, _send("alice", b"to alice"))
        core.handle(alice, _send("carol", b"from alice"))
        core.handle(bob, _send("carol", b"BOB-TO-CAROL-NOT-PRESERVED"))
        anonymous = ConnectionContext(9, ("198.51.100.1", 9))
        core.handle(
            anonymous, _sealed("carol", CAROL.delivery_token, b"sealed: the relay cannot say it is alice's")
        )
        assert _ack_all(core, alice) == 1
        assert _ack_all(core, carol) == 3  # one archived, two deleted, all counted
        store.checkpoint()
        archived = store.archived()
        assert [(e.body, e.reason, e.archived_at) for e in archived] == [
            (b"to alice", "preserved", T0 + 100),
            (b"from alice", "preserved", T0 + 100),
        ]
        assert [e.body for e in store.archived("alice")] == [b"to alice", b"from alice"]
        assert [e.body for e in store.archived("carol")] == [b"from alice"]
        assert store.archived("bob") == [e for e in archived if e.source_account == "bob"]
        assert store.all_envelopes() == []
    data = _db_bytes(path)
    assert b"BOB-TO-CAROL-NOT-PRESERVED" not in data and b"acked before since" not in data
    assert b"from alice" in data


def test_preserved_accounts_metadata_does_not_expire() -> None:
    clock = Clock()
    week = RetentionPolicy(
        "week",
        {RecordKind.SEND: KindRule(frozenset({"time", "account", "recipient_account"}), keep_for=7 * 86400)},
    )
    core = _core(clock=clock, policy=week)
    alice, bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    core.handle(alice, _send("bob", b"1"))
    core.handle(carol, _send("alice", b"2"))
    core.handle(bob, _send("carol", b"3"))
    core.preserve("alice", since=T0 + 86400)
    clock.now = T0 + 8 * 86400
    assert core.expire() == 1  # only bob → carol
    assert [(r.account, r.recipient_account) for r in core.store.metadata()] == [
        ("alice", "bob"),
        ("carol", "alice"),
    ]
    assert core.preservations == {"alice": (T0 + 86400,)}


def test_a_preservation_lapses_after_90_days_unless_renewed() -> None:
    """18 U.S.C. 2703(f)(2): retained "for a period of 90 days, which shall be extended for an
    additional 90-day period upon a renewed request" (it froze the records for good)."""
    from relaysim.relay.core import PRESERVATION_PERIOD

    assert PRESERVATION_PERIOD == 90 * 86400
    clock = Clock()
    week = RetentionPolicy(
        "week",
        {RecordKind.SEND: KindRule(frozenset({"time", "account", "recipient_account"}), keep_for=7 * 86400)},
    )
    for renewed in (False, True):
        core = _core(clock=clock, policy=week)
        alice, _bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
        clock.now = T0
        core.handle(alice, _send("bob", b"1"))
        core.preserve("alice", since=T0 + 86400)
        if renewed:
            core.preserve("alice", since=T0 + 80 * 86400)  # a renewed request before it lapses
        clock.now = T0 + 86400 + PRESERVATION_PERIOD - 1
        assert core.expire() == 0  # still preserved on day 90
        clock.now = T0 + 86400 + PRESERVATION_PERIOD
        assert core.expire() == (0 if renewed else 1)


def test_a_preservation_in_the_future_is_not_yet_in_effect() -> None:
    clock = Clock()
    core = _core(clock=clock)
    alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    core.preserve("alice", since=T0 + 10)
    core.handle(alice, _send("bob", b"x"))
    _ack_all(core, bob)
    assert core.store.archived() == []


def test_preservation_freezes_what_is_held_at_service_and_captures_nothing_after() -> None:
    """18 U.S.C. 2703(f): records and evidence in the provider's possession at service, for 90 days;
    nothing new is captured ("prospective preservation" is a contested practice, not the request)."""
    clock = Clock()
    week = RetentionPolicy(
        "week",
        {RecordKind.SEND: KindRule(frozenset({"time", "account", "recipient_account"}), keep_for=7 * 86400)},
    )
    core = _core(clock=clock, policy=week)
    alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    core.handle(bob, _send("alice", b"HELD-AT-SERVICE"))
    clock.now = T0 + 100
    core.preserve("alice", since=clock.now)  # served now
    clock.now = T0 + 200
    core.handle(bob, _send("alice", b"ACCEPTED-AFTER-SERVICE", rid=2))
    assert _ack_all(core, alice) == 2  # both delivered; only the one held at service is frozen
    assert [e.body for e in core.store.archived()] == [b"HELD-AT-SERVICE"]
    clock.now = T0 + 8 * 86400
    assert core.expire() == 1  # the send after service expires as the policy says
    assert [r.time for r in core.store.metadata()] == [T0]


def test_a_second_preservation_freezes_what_is_held_at_its_own_service() -> None:
    clock = Clock()
    core = _core(clock=clock)
    alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    core.preserve("alice", since=T0)
    clock.now = T0 + 10
    core.handle(bob, _send("alice", b"between the two"))
    clock.now = T0 + 20
    core.preserve("alice", since=clock.now)
    clock.now = T0 + 30
    core.handle(bob, _send("alice", b"after both", rid=2))
    _ack_all(core, alice)
    assert [e.body for e in core.store.archived()] == [b"between the two"]
    assert core.preservations == {"alice": (T0, T0 + 20)}


def test_orders_served_on_a_relay_survive_its_restart(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    clock = Clock()
    with Store(path) as store:
        core = _core(store, clock)
        core_device(core, ALICE, 1)
        core_device(core, BOB, 2)
        core.add_tap(Tap("pen", "alice", start=T0, end=float("inf"), content=False))
        core.add_tap(Tap("gone", "bob", start=T0, end=T0 + 10, content=True))
        core.remove_tap("gone")
        core.preserve("bob", since=T0 + 5)
    with Store(path) as store:
        assert store.schema_version == store_module.SCHEMA_VERSION
        core = _core(store, clock)
        assert dict(core.taps) == {"pen": Tap("pen", "alice", start=T0, end=float("inf"), content=False)}
        assert core.preservations == {"bob": (T0 + 5,)}
        clock.now = T0 + 60
        alice = core_device(core, ALICE, 1, register=False)
        bob_conn = core_device(core, BOB, 2, register=False)
        core.handle(alice, _send("bob", b"after the restart"))
        assert [r.kind for r, _ in store.intercepts("pen")].count(RecordKind.SEND) == 1
        core.handle(bob_conn, _send("alice", b"x", rid=3))
        _ack_all(core, alice)
        assert store.archived() == []  # accepted after bob's preservation was served


def test_a_disclosure_lists_no_acknowledgement_of_an_envelope_that_never_existed() -> None:
    """WhatsApp's "last seen" is the last activity, an acknowledgement among it: a device that
    acknowledged ids never queued to it was made to look active then, to a subpoena (and any order
    that returns records). Only an envelope the ack takes out of its queue is recorded."""
    clock = Clock()
    whatsapp = get_profile("whatsapp")
    core = _core(clock=clock, policy=whatsapp.policy)
    desk = ComplianceDesk(core.store, whatsapp)
    alice, bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    sent = _sent(core.handle(bob, _send("alice", b"real")))  # all at T0
    bobs = _sent(core.handle(carol, _send("bob", b"to bob", rid=2)))
    clock.now = T0 + 3600
    never = tuple(bytes([i]) * 16 for i in range(50)) + bobs
    assert reply(core.handle(alice, wire.Ack(id=3, envelope_ids=never))) == wire.Acked(id=3, count=0)

    def last_seen(served: float) -> float:
        (seen,) = desk.serve(LegalProcess(f"at {served:g}", "subpoena", "alice", served=served)).provided[
            "last_seen"
        ]
        return float(seen["last_seen"])

    assert last_seen(T0 + 7200) == T0  # her authentication, not the fabricated acknowledgements
    clock.now = T0 + 10800
    assert reply(core.handle(alice, wire.Ack(id=4, envelope_ids=sent + sent))) == wire.Acked(id=4, count=1)
    assert last_seen(T0 + 14400) == T0 + 10800  # a real one is recorded, as before
    assert [r.envelope_id for r in core.store.metadata(RecordKind.ACKNOWLEDGEMENT)] == [None]  # time alone


# --- address books ---------------------------------------------------------------------------------


def test_contact_discovery_answers_and_forgets_unless_the_relay_keeps_contacts(tmp_path: Path) -> None:
    unlisted = ("zz-unlisted-contact-7731", "zz-unlisted-contact-9902")
    for keep in (False, True):
        path = tmp_path / f"contacts-{keep}.db"
        with Store(path) as store:
            core = _core(store, keep_contacts=keep)
            alice = core_device(core, ALICE, 1)
            core_device(core, BOB, 2)
            outputs = core.handle(
                alice, wire.DiscoverContacts(id=5, contacts=(unlisted[0], "bob", "bob", unlisted[1]))
            )
            assert reply(outputs) == wire.ContactsFound(id=5, registered=("bob",))
            (record,) = _records(outputs)
            assert (record.kind, record.account, record.count) == (RecordKind.CONTACT_DISCOVERY, "alice", 4)
            store.checkpoint()
            data = _db_bytes(path)
            rows = store._db.execute("SELECT account, contact FROM contacts ORDER BY contact").fetchall()
            if keep:
                assert store.contacts_of("alice") == sorted(["bob", *unlisted])
                assert all(name.encode() in data for name in unlisted)
            else:
                assert rows == [] and store.contacts_of("alice") == []
                assert not any(name.encode() in data for name in unlisted)
    # With keep_contacts, a new upload replaces the old one, and the old entries leave the file.
    path = tmp_path / "contacts-True.db"
    with Store(path) as store:
        core = _core(store, keep_contacts=True)
        alice = core_device(core, ALICE, 1, register=False)
        reply(core.handle(alice, wire.DiscoverContacts(id=6, contacts=("bob",))))
        assert store.contacts_of("alice") == ["bob"]
        store.checkpoint()
    assert not any(name.encode() in _db_bytes(path) for name in unlisted)


def test_reverse_contacts_are_the_accounts_whose_book_holds_the_number() -> None:
    core = _core(keep_contacts=True)
    alice, _bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    core.handle(alice, wire.DiscoverContacts(id=5, contacts=("bob", "dave")))
    core.handle(carol, wire.DiscoverContacts(id=5, contacts=("dave", "bob", "alice")))
    assert core.store.reverse_contacts("bob") == ["alice", "carol"]
    assert core.store.reverse_contacts("dave") == ["alice", "carol"]  # not registered: still in the books
    assert core.store.reverse_contacts("alice") == ["carol"]
    assert core.store.reverse_contacts("carol") == []


def test_contact_discovery_needs_authentication() -> None:
    core = _core(keep_contacts=True)
    anonymous = ConnectionContext(9)
    assert_error(
        reply(core.handle(anonymous, wire.DiscoverContacts(id=1, contacts=("bob",)))),
        E.NOT_AUTHENTICATED,
        None,
    )
    assert core.store._db.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


# --- blocks ----------------------------------------------------------------------------------------


def test_a_blocked_senders_sends_are_accepted_and_dropped() -> None:
    clock = Clock()
    core = _core(clock=clock)
    alice, bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    outputs = core.handle(bob, wire.Block(id=5, account="alice"))
    assert reply(outputs) == wire.Blocked(id=5)
    (record,) = _records(outputs)
    assert (record.kind, record.account, record.recipient_account) == (RecordKind.BLOCK, "bob", "alice")
    assert core.store.blocks_of("bob") == []  # enforced, not kept
    assert core.store._db.execute("SELECT count(*) FROM blocks").fetchone()[0] == 0
    assert core.blocked_by("bob") == {"alice": T0}

    outputs = core.handle(alice, _send("bob", b"blocked"))
    assert len(_sent(outputs)) == 1  # alice cannot tell
    assert not [o for o in outputs if isinstance(o, Push)]
    assert [r.kind for r in _records(outputs)] == [RecordKind.SEND]  # observed, never delivered
    assert core.store.queue_length("bob", 1) == 0
    # Others still reach bob; bob still reaches alice; a sealed send names no sender to drop.
    core.handle(carol, _send("bob", b"from carol"))
    core.handle(bob, _send("alice", b"from bob"))
    core.handle(ConnectionContext(9), _sealed("bob", BOB.delivery_token, b"sealed"))
    assert [e.body for e in core.store.all_envelopes()] == [b"from carol", b"from bob", b"sealed"]

    assert reply(core.handle(bob, wire.Unblock(id=6, account="alice"))) == wire.Unblocked(id=6)
    assert reply(core.handle(bob, wire.Unblock(id=7, account="alice"))) == wire.Unblocked(id=7)  # idempotent
    core.handle(alice, _send("bob", b"unblocked"))
    assert core.store.all_envelopes()[-1].body == b"unblocked"


def test_kept_blocks_are_stored_and_survive_a_restart_while_unkept_ones_do_not(tmp_path: Path) -> None:
    for keep in (True, False):
        clock = Clock()
        path = tmp_path / f"blocks-{keep}.db"
        with Store(path) as store:
            core = _core(store, clock, keep_blocks=keep)
            core_device(core, ALICE, 1)
            bob = core_device(core, BOB, 2)
            core_device(core, CAROL, 3)
            core.handle(bob, wire.Block(id=5, account="alice"))
            clock.now = T0 + 5
            core.handle(bob, wire.Block(id=6, account="carol"))
            core.handle(bob, wire.Block(id=7, account="alice"))  # again: still blocked since T0
            assert store.blocks_of("bob") == ([("alice", T0), ("carol", T0 + 5)] if keep else [])
        with Store(path) as store:
            core = _core(store, clock, keep_blocks=keep)
            alice = core_device(core, ALICE, 4, register=False)
            core.handle(alice, _send("bob", b"after restart"))
            assert store.queue_length("bob", 1) == (0 if keep else 1)
            if keep:
                bob = core_device(core, BOB, 5, register=False)
                core.handle(bob, wire.Unblock(id=8, account="alice"))
                assert store.blocks_of("bob") == [("carol", T0 + 5)]


def test_whatsapps_2703d_order_gets_the_numbers_blocking_and_blocked_by_the_target() -> None:
    """WhatsApp's guide: a 2703(d) order gets records "which may include numbers blocking or blocked by
    the user" (faq.whatsapp.com, 'Information for law enforcement authorities'): both ways, each with
    the time of the block; a subpoena gets neither (basic subscriber records)."""
    clock = Clock()
    whatsapp = get_profile("whatsapp")
    core = _core(clock=clock, **whatsapp.relay_options())
    alice, bob, carol = core_device(core, ALICE, 1), core_device(core, BOB, 2), core_device(core, CAROL, 3)
    core.handle(bob, wire.Block(id=1, account="alice"))  # bob blocks alice
    clock.now = T0 + 5
    core.handle(carol, wire.Block(id=2, account="bob"))  # carol blocks bob
    core.handle(alice, wire.Block(id=3, account="carol"))  # neither way bob's
    desk = ComplianceDesk(core.store, whatsapp)
    d = desk.serve(LegalProcess("d", "court_order_2703d", "bob", served=T0 + 60))
    assert d.provided["blocked_users"] == [
        {"blocked": "alice", "time": T0},
        {"blocked_by": "carol", "time": T0 + 5},
    ]
    assert "blocking or blocked by the user" in " ".join(d.notes)
    assert "blocked by carol" in d.to_markdown()
    sub = desk.serve(LegalProcess("s", "subpoena", "bob", served=T0 + 60))
    assert "blocked_users" not in sub.provided and "blocked_users" not in sub.reasons  # not asked


def test_wire_withholds_under_the_projects_assumption_not_a_published_policy() -> None:
    """Wire publishes no guide for law enforcement (its profile's ``published_policy``): what any instrument
    gets is assumed, so a record it holds and does not hand over is withheld under that assumption, and no
    reason cites "its published policy". (A what-if Wire relay that keeps block lists, which its privacy
    whitepaper does not list, so that a 2703(d) order asks for a record held and not handed over.)"""
    clock = Clock()
    wire_profile = dataclasses.replace(get_profile("wire"), keep_blocks=True)
    assert not wire_profile.published_policy
    core = _core(clock=clock, **wire_profile.relay_options())
    core_device(core, ALICE, 1)
    bob = core_device(core, BOB, 2)
    core.handle(bob, wire.Block(id=1, account="alice"))
    d = ComplianceDesk(core.store, wire_profile).serve(LegalProcess("d", "court_order_2703d", "bob", T0 + 60))
    reason, why = d.reasons["blocked_users"]
    assert reason == "withheld_by_policy"
    assert "the project's assumption" in why and "published policy" not in why, why
    assert any(n.startswith("Assumption: ") for n in d.notes)


def test_block_refusals() -> None:
    core = _core(keep_blocks=True)
    bob = core_device(core, BOB, 2)
    assert_error(reply(core.handle(bob, wire.Block(id=1, account="bob"))), E.FORBIDDEN, "account")
    assert_error(reply(core.handle(bob, wire.Block(id=2, account="nobody"))), E.UNKNOWN_ACCOUNT, "account")
    anonymous = ConnectionContext(9)
    assert_error(reply(core.handle(anonymous, wire.Block(id=3, account="bob"))), E.NOT_AUTHENTICATED, None)
    assert_error(reply(core.handle(anonymous, wire.Unblock(id=4, account="bob"))), E.NOT_AUTHENTICATED, None)
    assert core.store.blocks_of("bob") == [] and core.blocked_by("bob") == {}


# --- the directory: who looked up whose keys -------------------------------------------------------


def test_bundle_fetch_records_say_who_fetched_whose_bundle() -> None:
    core = _core()
    alice, _bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    (record,) = _records(core.handle(alice, wire.FetchBundle(id=5, account="bob")))
    assert (record.kind, record.account, record.device, record.recipient_account) == (
        RecordKind.BUNDLE_FETCH,
        "alice",
        1,
        "bob",
    )
    anonymous = ConnectionContext(9, ("198.51.100.1", 9))
    fetch = wire.FetchBundle(id=6, account="bob", delivery_token=BOB.delivery_token)
    (record,) = _records(core.handle(anonymous, fetch))
    assert (record.account, record.recipient_account, record.host) == (None, "bob", "198.51.100.1")


def test_the_new_kinds_are_in_the_schema_and_kept_by_keep_everything() -> None:
    assert METADATA_SCHEMA[RecordKind.CONTACT_DISCOVERY] == {
        "time",
        "connection",
        "host",
        "port",
        "account",
        "device",
        "count",
    }
    assert METADATA_SCHEMA[RecordKind.BLOCK] == {
        "time",
        "connection",
        "host",
        "port",
        "account",
        "device",
        "recipient_account",
    }
    for kind in (RecordKind.CONTACT_DISCOVERY, RecordKind.BLOCK):
        assert KEEP_EVERYTHING.rules[kind].fields == METADATA_SCHEMA[kind]
    core = _core()
    alice, bob = core_device(core, ALICE, 1), core_device(core, BOB, 2)
    outputs = core.handle(alice, wire.DiscoverContacts(id=1, contacts=("bob",)))
    outputs += core.handle(bob, wire.Block(id=2, account="alice"))
    new = _records(outputs)
    assert [r.kind for r in new] == [RecordKind.CONTACT_DISCOVERY, RecordKind.BLOCK]
    assert core.store.metadata(RecordKind.CONTACT_DISCOVERY) == new[:1]
    assert core.store.metadata(RecordKind.BLOCK) == new[1:]


# --- schema ----------------------------------------------------------------------------------------


def test_a_v1_database_upgrades_to_the_current_schema_keeping_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        with Store(path) as old, old.transaction():
            old.create_account("bob", 1.0)
            old.enqueue([store_module.StoredEnvelope(b"E" * 16, "bob", 1, b"body", 1000, False, "alice", 1)])
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    with Store(path) as store:
        assert store.schema_version == store_module.SCHEMA_VERSION == 16
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        expected = {
            "intercepts",
            "archive",
            "contacts",
            "blocks",
            "taps",
            "preservations",
            "meta",
            "key_log",
            "device_facts",
            "device_signatures",
        }
        expected |= {"groups", "group_members", "group_states"}
        assert expected <= tables
        assert store.account_exists("bob") and [e.body for e in store.all_envelopes()] == [b"body"]
        columns = [r[1] for r in store._db.execute("PRAGMA table_info(intercepts)")]
        assert columns == ["seq", "tap_id", "kind", *store_module.METADATA_FIELDS, "body"]
        archive = [r[1] for r in store._db.execute("PRAGMA table_info(archive)")]
        envelopes = [r[1] for r in store._db.execute("PRAGMA table_info(envelopes)")]
        assert archive == [*envelopes, "archived_at", "reason"]


# --- the device's side -----------------------------------------------------------------------------


def _agent(account: str) -> DeviceAgent:
    rng = SimulationRandom(account)
    device = Device(account, 1, rng=rng.randbytes, deterministic=True)
    return DeviceAgent(
        device,
        registration_id=1 + rng.randrange(16000),
        delivery_token=rng.randbytes(32),
        rng=rng.randbytes,
        clock=lambda: 1.0,
    )


def _pump(core: RelayCore, conn: ConnectionContext, agent: DeviceAgent) -> list[object]:
    """Carry the agent's requests to the core and the answers back until both are quiet."""
    events: list[object] = []
    while outbox := agent.take_outbox():
        for request in outbox:
            for output in core.handle(conn, request):
                if isinstance(output, Reply) and output.connection == conn.id:
                    events += agent.handle(output.frame)
    return events


def test_an_agent_discovers_contacts_and_blocks() -> None:
    core = _core()
    agents = {name: _agent(name) for name in ("alice", "bob")}
    conns = {}
    for n, (name, agent) in enumerate(agents.items()):
        conns[name] = conn = ConnectionContext(n + 1)
        agent.register(one_time=2, kem_one_time=2)
        agent.login()
        assert [type(e) for e in _pump(core, conn, agent)] == [Registered, LoggedIn]
    alice, bob = agents["alice"], agents["bob"]
    alice.discover_contacts(["carol", "bob"])
    assert _pump(core, conns["alice"], alice) == [ContactsFound(("bob",))]
    bob.block("alice")
    assert _pump(core, conns["bob"], bob) == []
    assert core.blocked_by("bob") == {"alice": T0}
    alice.send_text("bob", b"hello?", ref="m1")
    (accepted,) = _pump(core, conns["alice"], alice)
    assert isinstance(accepted, Accepted) and accepted.ref == "m1"  # accepted, and dropped
    assert core.store.queue_length("bob", 1) == 0
    bob.unblock("alice")
    bob.block("bob")
    (failed,) = _pump(core, conns["bob"], bob)
    assert failed == Failed("block", "forbidden", "an account cannot block itself")
    assert core.blocked_by("bob") == {}
