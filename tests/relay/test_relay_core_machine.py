"""RelayCore as a hypothesis state machine, beside a plain model of the queues.

Rules: register (new accounts, linked devices, strangers refused), connect and authenticate,
wrong answers to challenges, sends with right and wrong device lists, sealed sends with good and
bad tokens, receive, acknowledge (own and others' ids), disconnect, time passing. After every
step the store's queues equal the model's: nothing accepted is lost (at-least-once), nothing
acknowledged remains, and nobody's acknowledgement touches another device's queue.
"""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, DeviceAddress, Push, Reply
from relaysim.relay.metadata import METADATA_SCHEMA, MetadataRecord
from tests.helpers import Clock, DeviceKeys, new_core

E = wire.ErrorCode
KEYS = {(a, d): DeviceKeys.make(a, d) for a in ("ann", "ben", "cat") for d in (1, 2)}
REGISTER = {k: keys.register() for k, keys in KEYS.items()}  # built once: signing is the slow part
ALL_DEVICES = sorted(KEYS)


Key = tuple[str, int]


class RelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.core = new_core(self.clock)
        self.queues: dict[Key, list[tuple[bytes, bytes, str | None]]] = {}  # (id, body, source account)
        self.tokens: dict[str, bytes] = {}
        self.conns: dict[int, ConnectionContext] = {}  # authenticated ones
        self.conn_ids = itertools.count(1)
        self.bodies = itertools.count()

    # -- plumbing ------------------------------------------------------------------------------

    def handle(self, conn: ConnectionContext, request: wire.Request) -> tuple[wire.Response, list[Push]]:
        outputs = self.core.handle(conn, request)
        replies = [o for o in outputs if isinstance(o, Reply)]
        assert len(replies) == 1 and replies[0].connection == conn.id and replies[0].frame.id == request.id
        for record in outputs:
            if isinstance(record, MetadataRecord):
                present = {
                    f for f in METADATA_SCHEMA[record.kind] | {"body"} if getattr(record, f, None) is not None
                }
                assert present <= METADATA_SCHEMA[record.kind]
        return replies[0].frame, [o for o in outputs if isinstance(o, Push)]

    def expect_error(self, frame: wire.Response, code: E) -> wire.ErrorFrame:
        assert isinstance(frame, wire.ErrorFrame) and frame.code == code.value, frame
        return frame

    def new_conn(self) -> ConnectionContext:
        conn = ConnectionContext(next(self.conn_ids), ("192.0.2.1", 1000))
        self.core.connect(conn)
        return conn

    def accounts(self) -> list[str]:
        return sorted({a for a, _ in self.queues})

    def devices_of(self, account: str) -> list[int]:
        return sorted(d for a, d in self.queues if a == account)

    # -- rules ---------------------------------------------------------------------------------

    @rule(key=st.sampled_from(ALL_DEVICES), via=st.integers(0, 10**6))
    def register(self, key: Key, via: int) -> None:
        account, device = key
        helpers = [c for c in self.conns.values() if c.authenticated and c.authenticated.account == account]
        if key in self.queues:  # re-registration: only by the device itself
            helpers = [c for c in helpers if c.authenticated == DeviceAddress(*key)]
        if not self.devices_of(account):
            conn = self.new_conn()
        elif helpers:
            conn = helpers[via % len(helpers)]
        else:
            frame, _ = self.handle(self.new_conn(), REGISTER[key])
            self.expect_error(frame, E.NOT_AUTHENTICATED)
            return
        frame, _ = self.handle(conn, REGISTER[key])
        assert frame == wire.Registered(id=REGISTER[key].id, account=account, device=device)
        self.queues.setdefault(key, [])
        self.tokens[account] = KEYS[key].delivery_token

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def stranger_registers(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns.values(), key=lambda c: c.id)))
        me = conn.authenticated
        assert me is not None
        victims = [k for k in self.queues if k != (me.account, me.device)]
        if not victims:
            return
        victim = data.draw(st.sampled_from(sorted(victims)))
        frame, _ = self.handle(conn, REGISTER[victim])
        self.expect_error(frame, E.FORBIDDEN)

    @precondition(lambda self: self.queues)
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.queues)))
        conn = self.new_conn()
        challenge, _ = self.handle(conn, wire.AuthChallenge(id=1, account=key[0], device=key[1]))
        assert isinstance(challenge, wire.Challenge)
        frame, _ = self.handle(conn, KEYS[key].answer(challenge.nonce, 2))
        assert frame == wire.Authenticated(id=2, account=key[0], device=key[1])
        assert conn.authenticated == DeviceAddress(*key)
        self.conns[conn.id] = conn

    @precondition(lambda self: self.queues)
    @rule(data=st.data())
    def answer_with_the_wrong_key(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.queues)))
        impostor = data.draw(st.sampled_from([k for k in ALL_DEVICES if k != key]))
        conn = self.new_conn()
        challenge, _ = self.handle(conn, wire.AuthChallenge(id=1, account=key[0], device=key[1]))
        assert isinstance(challenge, wire.Challenge)
        forged = wire.Authenticate(
            id=2,
            nonce=challenge.nonce,
            signature=KEYS[impostor].sign(wire.auth_message(challenge.nonce, *key)),
        )
        self.expect_error(self.handle(conn, forged)[0], E.AUTHENTICATION_FAILED)
        self.expect_error(self.handle(conn, KEYS[key].answer(challenge.nonce, 3))[0], E.NO_CHALLENGE)
        assert conn.authenticated is None
        self.core.disconnect(conn)

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        conn = self.conns.pop(data.draw(st.sampled_from(sorted(self.conns))))
        self.core.disconnect(conn)
        assert conn.authenticated is None

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), mistake=st.sampled_from(["none", "missing", "extra"]))
    def send(self, data: st.DataObject, mistake: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns.values(), key=lambda c: c.id)))
        me = conn.authenticated
        assert me is not None
        to = data.draw(st.sampled_from(self.accounts()))
        expected = [d for d in self.devices_of(to) if not (to == me.account and d == me.device)]
        named = list(expected)
        if mistake == "missing" and named:
            named.pop(data.draw(st.integers(0, len(named) - 1)))
        if mistake == "extra" or not named:  # an empty list is not a frame: name a device that is not there
            named.append(9)
        body = b"m%d" % next(self.bodies)
        request = wire.Send(id=7, to=to, envelopes=tuple(wire.OutgoingEnvelope(d, body) for d in named))
        frame, pushes = self.handle(conn, request)
        if sorted(named) != expected:
            error = self.expect_error(frame, E.STALE_DEVICES)
            assert error.missing == (tuple(sorted(set(expected) - set(named))) or None)
            assert error.extra == (tuple(sorted(set(named) - set(expected))) or None)
            assert not pushes
            return
        assert isinstance(frame, wire.Sent) and len(frame.envelope_ids) == len(named)
        for device, envelope_id in zip(named, frame.envelope_ids, strict=True):
            self.queues[(to, device)].append((envelope_id, body, me.account))
        online = {
            (c.authenticated, c.id)
            for c in self.conns.values()
            if c.authenticated and c.authenticated.account == to and c.authenticated.device in named
        }
        assert {(p.device, p.connection) for p in pushes} == online
        assert all(p.frame.envelope.body == body for p in pushes)

    @precondition(lambda self: self.queues)
    @rule(data=st.data(), good=st.booleans())
    def sealed_send(self, data: st.DataObject, good: bool) -> None:
        to = data.draw(st.sampled_from(self.accounts()))
        token = self.tokens[to] if good else data.draw(st.binary(min_size=32, max_size=32))
        body = b"s%d" % next(self.bodies)
        envelopes = tuple(wire.OutgoingEnvelope(d, body) for d in self.devices_of(to))
        anonymous = ConnectionContext(0)
        frame, _ = self.handle(
            anonymous, wire.SealedSend(id=8, to=to, delivery_token=token, envelopes=envelopes)
        )
        if token != self.tokens[to]:
            self.expect_error(frame, E.INVALID_DELIVERY_TOKEN)
            return
        assert isinstance(frame, wire.Sent)
        for e, envelope_id in zip(envelopes, frame.envelope_ids, strict=True):
            self.queues[(to, e.device)].append((envelope_id, body, None))

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), limit=st.none() | st.integers(1, 4))
    def receive(self, data: st.DataObject, limit: int | None) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns.values(), key=lambda c: c.id)))
        me = conn.authenticated
        assert me is not None
        frame, _ = self.handle(conn, wire.Receive(id=9, limit=limit))
        assert isinstance(frame, wire.Envelopes)
        queue = self.queues[(me.account, me.device)]
        expected = queue[: limit or 100]
        assert [(e.id, e.body, e.source_account) for e in frame.envelopes] == expected
        assert [e.sealed for e in frame.envelopes] == [s is None for _, _, s in expected]
        assert frame.more == (len(queue) > len(expected))

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns.values(), key=lambda c: c.id)))
        me = conn.authenticated
        assert me is not None
        own = [i for i, _, _ in self.queues[(me.account, me.device)]]
        foreign = [i for k, q in self.queues.items() if k != (me.account, me.device) for i, _, _ in q]
        chosen = data.draw(st.lists(st.sampled_from(own), max_size=4)) if own else []
        others = data.draw(st.lists(st.sampled_from(foreign), max_size=2)) if foreign else []
        ids = tuple(chosen + others) or (bytes(16),)
        frame, _ = self.handle(conn, wire.Ack(id=10, envelope_ids=ids))
        assert frame == wire.Acked(id=10, count=len(set(chosen)))
        key = (me.account, me.device)
        self.queues[key] = [e for e in self.queues[key] if e[0] not in chosen]

    @rule(request=st.sampled_from([wire.Receive(id=11), wire.Ack(id=11, envelope_ids=(bytes(16),))]))
    def anonymous_reads_nothing(self, request: wire.Request) -> None:
        self.expect_error(self.handle(ConnectionContext(0), request)[0], E.NOT_AUTHENTICATED)

    @rule(seconds=st.floats(0, 120))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def store_queues_equal_the_model(self) -> None:
        for (account, device), queue in self.queues.items():
            stored, more = self.core.store.queued(account, device, limit=10**6, max_bytes=2**62)
            assert [(e.id, e.body, e.source_account) for e in stored] == queue
            assert not more
        assert len(self.core.store.all_envelopes()) == sum(len(q) for q in self.queues.values())

    @invariant()
    def online_devices_are_the_authenticated_connections(self) -> None:
        for key in self.queues:
            address = DeviceAddress(*key)
            assert sorted(self.core.online(address)) == sorted(
                c.id for c in self.conns.values() if c.authenticated == address
            )


RelayMachine.TestCase.settings = settings(settings(), stateful_step_count=40)
TestRelayMachine = RelayMachine.TestCase
