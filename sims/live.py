"""A scenario run live: a real relay process on loopback, and every device a real trio client.

``run_live(scenario, out, time_scale=...)`` starts ``relaysim relay serve`` as a subprocess on
127.0.0.1 (a free port, its database ``out/relay.db``), gives every device of the scenario a
``clients.net.DeviceConnection``, and replays the scenario's timeline in real time scaled by
``time_scale`` (real seconds per simulated second; 0.001 plays five simulated hours in 18 s):

- at set-up, before the clock starts, every device registers (a linked device through its
  primary, as in the simulator), logs in and, with sealed sender, fetches a certificate;
- offline windows and ``device_offline``/``device_online`` events disconnect and reconnect the
  device's connection; while a phone is offline its app holds what it would send;
- scripted and generated messages (``sims.world.traffic.plan_messages``) are sent when they are due;
- after the scenario's end it waits (at most ``DRAIN_TIMEOUT`` real seconds) for messages still
  in flight to phones that are online, lets every phone flush its acknowledgements, and stops
  the relay with SIGTERM, waiting for it to exit.

It writes what ``relaysim run`` writes — ``transcript.jsonl``, ``relay.db`` (the server's own
store), ``summary.json``, ``summary.md`` — plus ``relay.log``, the server's log. Transcript times
``t`` are simulated seconds, real elapsed time divided by ``time_scale``. The ``relay`` parts of
message events come from the relay's store after it has stopped; their ``time`` fields are the
relay's real clock (Unix seconds), not simulated time. The scenario's network model (latency,
loss, partitions) is not applied: the network is loopback.

Live runs are not deterministic. trio's scheduler is randomised on purpose, the devices' keys
come from ``os.urandom``, and the operating system decides when bytes arrive, so two runs of
the same scenario and seed differ in timings and may differ in order; only the plan of messages
is the same. Use ``relaysim run`` without ``--live`` for reproducible runs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.clients.agent import DeviceAgent, Received
from relaysim.clients.net import DeviceConnection, SendFailed, open_device_connection, sole_exception
from relaysim.clients.session import Device
from relaysim.relay.compliance import ComplianceDesk
from relaysim.relay.core import Tap
from relaysim.relay.custody import ContentKey
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.store import Store
from relaysim.sims.progress import progress_bar
from relaysim.sims.report import summarise, summary_markdown, transcript_writer
from relaysim.sims.scenario import DeviceSpec, Scenario, TimelineEvent
from relaysim.sims.world.simulation import (
    MessageState,
    SimulationResult,
    address_books,
    record_view,
    registered_facts,
)
from relaysim.sims.world.timeline import Timeline, provider, sealed_sender
from relaysim.sims.world.traffic import PlannedMessage, contact_graph, expand_population, plan_messages

__all__ = ["RelayProcess", "RelayStartError", "relay_process", "run_live"]

log = logging.getLogger("sims.live")

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
RELAY_START_TIMEOUT: Final = 30.0  # real seconds for the relay process to start listening
RELAY_STOP_TIMEOUT: Final = 10.0  # real seconds after SIGTERM before SIGKILL
SETUP_TIMEOUT: Final = 120.0  # real seconds for every device to register and log in
SETUP_CONCURRENCY: Final = 16  # devices setting up at once
DRAIN_TIMEOUT: Final = 10.0  # real seconds after the end for messages still in flight
# One socket per device (two with sealed sender) in this process, and Python cryptography for
# every key: live runs are for small scenarios. Larger ones belong to the simulator.
MAX_LIVE_DEVICES: Final = 200


class RelayStartError(RuntimeError):
    """The relay process did not start listening."""


# --- the relay process ---------------------------------------------------------------------------


@dataclass
class RelayProcess:
    """A running ``relaysim relay serve``: its port, its trust root (from its log), its process."""

    process: Any
    port: int
    trust_root: bytes
    log: Path

    @property
    def returncode(self) -> int | None:
        code = self.process.returncode
        return None if code is None else int(code)

    async def stop(self) -> int:
        """SIGTERM, then wait for it to exit (SIGKILL after RELAY_STOP_TIMEOUT). Returns its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(RELAY_STOP_TIMEOUT):
                await self.process.wait()
            if self.process.returncode is None:
                log.warning("the relay did not stop within %.0f s of SIGTERM; killing it", RELAY_STOP_TIMEOUT)
                self.process.kill()
                await self.process.wait()
        return int(self.process.returncode)


async def _read_relay_log(stream: Any, path: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Copy the relay's stderr to ``path``; report (port, trust root) once it says it listens."""
    seen = ""
    started = False
    with path.open("ab") as f:
        while chunk := await stream.receive_some(65536):
            f.write(chunk)
            f.flush()
            if started:
                continue
            seen += chunk.decode("utf-8", "replace")
            port = re.search(r"relay listening on 127\.0\.0\.1:(\d+)", seen)
            root = re.search(r"trust root public key: ([0-9a-f]{64})", seen)
            if port and root:
                started = True
                task_status.started((int(port.group(1)), bytes.fromhex(root.group(1))))
    if not started:
        raise RelayStartError(f"the relay exited before it was listening; its log ({path}):\n{seen}")


# Every simulated person shares one loopback address: the per-address limits and the
# registration proof are off here (tests/relay/test_relay_abuse.py exercises them).
_OPEN_LIMITS: Final = (
    *("--registration-pow", "0", "--register-rate", "off"),
    *("--send-rate-address", "off", "--send-rate-account", "off"),
    *("--max-connections-per-address", "off", "--connection-rate", "off"),
    *("--fetch-rate-requester", "off"),
)


@asynccontextmanager
async def relay_process(
    db: Path,
    log_path: Path,
    *,
    port: int = 0,
    serve_args: Sequence[str] = (),
    defaults: bool = False,
) -> AsyncIterator[RelayProcess]:
    """Run ``relaysim relay serve`` on 127.0.0.1 (port 0: a free one) over ``db`` for the block,
    with ``serve_args`` (``--profile``, ``--admin``...) added. ``defaults``: with the relay's own
    limits and registration proof, as a reader's ``relaysim relay serve`` runs.

    Its stderr goes to ``log_path``. On leaving the block it gets SIGTERM and is waited for."""
    args = [
        *(sys.executable, "-m", "relaysim.sims.cli", "relay", "serve"),
        *("--host", HOST, "--port", str(port), "--db", str(db), "--log-level", "INFO"),
        *(() if defaults else _OPEN_LIMITS),
        *serve_args,
    ]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    process = await trio.lowlevel.open_process(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        # The block's exception (a RelayStartError, a failed assertion) leaves the nursery as
        # itself, not in the one-element ExceptionGroup trio >= 0.25 wraps it in.
        try:
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(RELAY_START_TIMEOUT) as waiting:
                    found, root = await nursery.start(_read_relay_log, process.stderr, log_path)
                if waiting.cancelled_caught:
                    raise RelayStartError(
                        f"the relay did not start listening within {RELAY_START_TIMEOUT:g} s; see {log_path}"
                    )
                relay = RelayProcess(process, found, root, log_path)
                try:
                    yield relay
                finally:
                    with trio.CancelScope(shield=True):
                        await relay.stop()
        except BaseExceptionGroup as group:
            error = sole_exception(group)
            if error is None:
                raise
        else:
            return
        raise error  # outside the handler, so the group does not become its __context__
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


# --- the run -------------------------------------------------------------------------------------


@dataclass
class _Phone:
    spec: DeviceSpec
    agent: DeviceAgent
    rng: random.Random  # the connection's back-off jitter
    conn: DeviceConnection | None = None
    online: bool = True  # whether the phone has its network, as the timeline says
    ready: Any = field(default_factory=trio.Event)  # registered and logged in
    stop: Any = field(default_factory=trio.CancelScope)  # ends the app's read loop
    pending_app: list[PlannedMessage] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


class _LiveRun:
    def __init__(
        self,
        scenario: Scenario,
        relay: RelayProcess,
        time_scale: float,
        wire_tap: Callable[[bytes], None] | None,
        db: Path,
        admin: Path,
        progress: Callable[[float, float], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.relay = relay
        self.time_scale = time_scale
        self.wire_tap = wire_tap
        # The provider, sealed sender and the timeline, as the simulator reads them (sims.world.timeline).
        self.profile = provider(scenario)
        self.sealed = sealed_sender(scenario, self.profile)
        self.content_key: ContentKey | None = None
        if self.profile.custody != "devices":
            self.content_key = ContentKey(
                f"{self.profile.name}-content", os.urandom(32), self.profile.custody
            )
        # The compliance desk reads the relay's database while the relay runs (WAL: a concurrent
        # reader); taps and preservations go to the relay process through its operator socket.
        self.store = Store(db)
        self.desk = ComplianceDesk(
            self.store,
            self.profile,
            content_keys=[self.content_key] if self.content_key else [],
            geoip={d.address: d.region for d in scenario.devices()},
        )
        self.admin_path = admin
        self._admin_queue: list[dict[str, Any]] = []
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = itertools.count()
        self.wall_t0 = 0.0
        self.report_progress = progress
        self.timeline = Timeline(self)
        self.contacts = address_books(scenario, contact_graph(scenario))
        self.events: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.work: Any = None
        self.progress = trio.Event()
        self.limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)
        self.duplicates_dropped = 0
        self.mismatched = 0
        self.envelope_message: dict[bytes, int] = {}
        tokens = {p.name: os.urandom(32) for p in scenario.people}
        self.phones: dict[str, _Phone] = {}
        self.by_address: dict[tuple[str, int], _Phone] = {}
        for spec in scenario.devices():
            device = Device(spec.person, spec.index)
            agent = DeviceAgent(
                device,
                registration_id=random.SystemRandom().randrange(1, 16380),
                delivery_token=tokens[spec.person],
                trust_root=relay.trust_root,
                clock=time.time,  # the relay's clock: sender certificates expire by it
                tokens=tokens,
                content_key=self.content_key,
                **registered_facts(scenario.seed, spec),
            )
            phone = _Phone(spec, agent, random.Random(f"{scenario.seed}:backoff:{spec.name}"))
            self.phones[spec.name] = phone
            self.by_address[(spec.person, spec.index)] = phone
        self.messages: dict[int, MessageState] = {}
        for m in plan_messages(scenario):
            recipients = tuple(d.name for d in scenario.person(m.recipient).devices)
            self.messages[m.id] = MessageState(m, recipients)

    # --- time and events --------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the clock started."""
        if self.t0 is None:
            return 0.0
        return (trio.current_time() - self.t0) / self.time_scale

    def emit(self, event: dict[str, Any], /) -> None:
        self.events.append({"t": self.now(), **event})

    def _notify(self) -> None:
        self.progress.set()
        self.progress = trio.Event()

    # --- the phones -------------------------------------------------------------------------------

    async def _phone(self, phone: _Phone) -> None:
        primary = self.by_address[(phone.spec.person, 1)]
        if primary is not phone:
            await primary.ready.wait()  # a linked device is registered through its primary
        async with open_device_connection(
            phone.agent, HOST, self.relay.port, rng=phone.rng, wire_tap=self.wire_tap
        ) as conn:
            phone.conn = conn
            async with self.limiter:
                if primary is phone:
                    await conn.register()
                else:
                    assert primary.conn is not None
                    await primary.conn.link_device(phone.agent)
                await conn.login()
                if self.sealed:
                    await conn.request_certificate()
                book = self.contacts.get(phone.spec.person)
                if primary is phone and book:
                    # the app looks up the address book once, as in the simulator (sims.world.simulation)
                    phone.agent.discover_contacts(book)
                    await conn.sync()
            phone.ready.set()
            with phone.stop:
                async for event in conn.received:
                    self._received(phone, event)

    def _go_offline(self, phone: _Phone, why: str) -> None:
        if not phone.online:
            return
        phone.online = False
        assert phone.conn is not None
        phone.conn.set_online(False)
        self.emit({"kind": "device_offline", "device": phone.name, "why": why})

    def _come_online(self, phone: _Phone) -> None:
        if phone.online:
            return
        phone.online = True
        assert phone.conn is not None
        phone.conn.set_online(True)  # it logs in again before it writes anything else
        self.emit({"kind": "device_online", "device": phone.name})
        backlog, phone.pending_app = phone.pending_app, []
        for m in backlog:
            self._app_send(m)

    # --- messages -----------------------------------------------------------------------------------

    def _app_send(self, m: PlannedMessage) -> None:
        phone = self.by_address[(m.sender, 1)]
        if not phone.online:
            phone.pending_app.append(m)  # the app keeps it until the phone is back online
            return
        self.messages[m.id].sent_at = self.now()
        self.emit(
            {
                "kind": "message_sent",
                "message": m.id,
                "from": phone.name,
                "to": m.recipient,
                "plaintext": m.text,
                "relay": None,  # nothing has reached the relay yet
            }
        )
        self.work.start_soon(self._send, phone, m)

    async def _send(self, phone: _Phone, m: PlannedMessage) -> None:
        assert phone.conn is not None
        try:
            ids = await phone.conn.send_text(m.recipient, m.text.encode(), sealed=self.sealed)
        except SendFailed as e:
            state = self.messages[m.id]
            if state.lost is None and state.accepted_at is None:
                state.lost = f"refused: {e.code}: {e.message}"
                self.emit({"kind": "message_lost", "message": m.id, "why": state.lost})
            self._notify()
            return
        state = self.messages[m.id]
        state.accepted_at = self.now()
        state.envelope_ids = ids
        for eid in ids:
            self.envelope_message[eid] = m.id
        # "relay" (the relay's send records) is filled in from its store after the run.
        self.emit({"kind": "message_accepted", "message": m.id, "plaintext": m.text, "relay": []})
        self._notify()

    def _match(self, phone: _Phone, ev: Received) -> int | None:
        """The message a received envelope carries. The sender may not have the relay's answer
        (with the envelope ids) yet, so failing the ids, the oldest sent message that fits."""
        mid = self.envelope_message.get(ev.envelope_id)
        if mid is not None:
            return mid
        for state in self.messages.values():
            m = state.planned
            if (
                state.sent_at is not None
                and phone.name in state.recipients
                and phone.name not in state.delivered
                and m.sender == ev.sender.account
                and m.text.encode() == ev.plaintext
            ):
                return m.id
        return None

    def _received(self, phone: _Phone, ev: Received) -> None:
        mid = self._match(phone, ev)
        state = self.messages.get(mid) if mid is not None else None
        if state is None or phone.name not in state.recipients:
            log.warning("%s received a message nobody sent it: %r", phone.name, ev.plaintext[:40])
            self.mismatched += 1
            return
        if phone.name in state.delivered:
            self.duplicates_dropped += 1
            return
        self.envelope_message[ev.envelope_id] = state.planned.id
        if ev.plaintext != state.planned.text.encode() or ev.sender.account != state.planned.sender:
            self.mismatched += 1
        now = self.now()
        state.delivered[phone.name] = now
        self.emit(
            {
                "kind": "message_received",
                "message": state.planned.id,
                "device": phone.name,
                "plaintext": ev.plaintext.decode("utf-8", "replace"),
                "latency": now - state.planned.at,
                "relay": {
                    "envelope_id": ev.envelope_id.hex(),
                    "accepted_ms": ev.relay_timestamp_ms,
                    "sealed": ev.sealed,
                    "sender_shown_by_relay": None if ev.sealed else f"{ev.sender.account}/{ev.sender.device}",
                    "delivery": None,  # filled in from the relay's store after the run
                },
            }
        )
        self._notify()

    # --- the timeline -------------------------------------------------------------------------------

    # --- what the timeline asks (sims.world.Driver) ----------------------------------------------

    def relay_time(self, t: float) -> float:
        return self.wall_t0 + t * self.time_scale

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._actions, (t, next(self._serial), action))

    def go_offline(self, device: str, why: str) -> None:
        phone = self.phones.get(device)
        if phone is not None:
            self._go_offline(phone, why)

    def come_online(self, device: str) -> None:
        phone = self.phones.get(device)
        if phone is not None:
            self._come_online(phone)

    def app_send(self, message: PlannedMessage) -> None:
        self._app_send(message)

    def preserve(self, account: str, since: float) -> None:
        self._admin_queue.append({"op": "preserve", "account": account, "since": since})

    def add_tap(self, tap: Tap) -> None:
        self._admin_queue.append(
            {"op": "add_tap", "id": tap.id, "target": tap.target, "start": tap.start, "end": tap.end}
            | {"content": tap.content}
        )

    def remove_tap(self, tap_id: str) -> None:
        self._admin_queue.append({"op": "remove_tap", "id": tap_id})

    def intervene(self, index: int, event: TimelineEvent) -> None:
        raise AssertionError(f"run_live refuses {event.kind!r} events before the run")  # see live_refusal

    async def _operator(self) -> None:
        """Send the orders the last action served to the relay process, in order, each answered."""
        if not self._admin_queue:
            return
        queue, self._admin_queue = self._admin_queue, []
        async with await trio.open_unix_socket(str(self.admin_path)) as stream:
            for command in queue:
                await stream.send_all(json.dumps(command).encode() + b"\n")
                answer = b""
                while not answer.endswith(b"\n"):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise RuntimeError(f"the relay's operator socket closed before answering {command}")
                    answer += chunk
                reply = json.loads(answer)
                if not reply.get("ok"):
                    raise RuntimeError(f"the relay refused the operator's {command}: {reply.get('error')}")

    async def _play(self) -> None:
        """Each scheduled action at its time (ties in scheduling order); actions may schedule more."""
        assert self.t0 is not None
        end = self.scenario.duration
        while self._actions and self._actions[0][0] <= end:
            t, _n, action = heapq.heappop(self._actions)
            await trio.sleep_until(self.t0 + t * self.time_scale)
            action()
            await self._operator()
            if self.report_progress is not None:
                self.report_progress(t, end)

    def _start_clock(self) -> None:
        self.t0 = trio.current_time()
        self.wall_t0 = time.time()
        for phone in self.phones.values():
            if any(start <= 0 < end for start, end in phone.spec.offline):
                phone.online = False  # offline from the start: never seen online until its window ends
                assert phone.conn is not None
                phone.conn.set_online(False)
            else:
                self.emit({"kind": "device_online", "device": phone.name})

    def _settled(self) -> bool:
        """Nothing more can arrive: every message accepted has reached its recipients that are
        online, and none is still on its way from a phone that is online."""
        for state in self.messages.values():
            if state.lost is not None:
                continue
            if state.accepted_at is None:
                if state.sent_at is not None and self.by_address[(state.planned.sender, 1)].online:
                    return False
                continue
            for name in state.recipients:
                if self.phones[name].online and name not in state.delivered:
                    return False
        return True

    async def run(self) -> None:
        async with trio.open_nursery() as phones:
            for phone in self.phones.values():
                phones.start_soon(self._phone, phone)
            with trio.move_on_after(SETUP_TIMEOUT) as setup:
                for phone in self.phones.values():
                    await phone.ready.wait()
            if setup.cancelled_caught:
                late = [p.name for p in self.phones.values() if not p.ready.is_set()]
                raise RuntimeError(f"devices not registered and logged in after {SETUP_TIMEOUT:g} s: {late}")
            async with trio.open_nursery() as work:
                self.work = work
                self._start_clock()
                assert self.t0 is not None
                self.timeline.schedule_events()
                self.timeline.schedule_messages([state.planned for state in self.messages.values()])
                await self._play()
                await trio.sleep_until(self.t0 + self.scenario.duration * self.time_scale)
                with trio.move_on_after(DRAIN_TIMEOUT):
                    while not self._settled():
                        await self.progress.wait()
                work.cancel_scope.cancel()  # sends still waiting for an offline phone stay unsent
            for phone in self.phones.values():
                phone.stop.cancel()  # each phone flushes its acknowledgements and closes
        self.timeline.finish()  # orders still running at the end are answered now
        await self._operator()
        if self.report_progress is not None:
            self.report_progress(self.scenario.duration, self.scenario.duration)

    # --- results ------------------------------------------------------------------------------------

    def result(self, db: Path) -> SimulationResult:
        """Read the relay's store (the relay has stopped) and fill in the relay's view."""
        with Store(db) as store:
            records = store.metadata()
            queued = len(store.all_envelopes())
        counts: dict[str, int] = {}
        by_envelope: dict[bytes, list[MetadataRecord]] = {}
        for r in records:
            counts[r.kind.value] = counts.get(r.kind.value, 0) + 1
            if r.envelope_id is not None:
                by_envelope.setdefault(r.envelope_id, []).append(r)
        for e in self.events:
            if e["kind"] == "message_accepted":
                ids = self.messages[e["message"]].envelope_ids
                e["relay"] = [
                    record_view(r)
                    for eid in ids
                    for r in by_envelope.get(eid, [])
                    if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
                ]
            elif e["kind"] == "message_received":
                person, _, index = e["device"].rpartition("/")
                deliveries = [
                    r
                    for r in by_envelope.get(bytes.fromhex(e["relay"]["envelope_id"]), [])
                    if r.kind is RecordKind.DELIVERY and (r.account, r.device) == (person, int(index))
                ]
                e["relay"]["delivery"] = record_view(deliveries[-1]) if deliveries else None
        undecryptable = sum(len(p.conn.undecryptable) for p in self.phones.values() if p.conn is not None)
        return SimulationResult(
            self.scenario,
            [self.messages[k] for k in sorted(self.messages)],
            dict(sorted(counts.items())),
            {"lost": 0, "duplicated": 0, "partitioned": 0},  # loopback: no simulated network
            undecryptable,
            self.duplicates_dropped,
            self.mismatched,
            len(self.events),
            queued,
            None,
            list(self.timeline.disclosures),
        )


@dataclass
class _Outcome:
    result: SimulationResult
    events: list[dict[str, Any]]
    relay_exit: int
    reconnects: int
    real_seconds: float
    relay_end: float  # the relay's clock at the scenario's end: later records are the phones hanging up


async def _run_live(
    scenario: Scenario,
    out: Path,
    time_scale: float,
    wire_tap: Callable[[bytes], None] | None,
    progress: Callable[[float, float], None] | None = None,
) -> _Outcome:
    started = trio.current_time()
    db = out / "relay.db"
    admin = out / "relay.admin"
    profile = scenario.relay.profile
    serve_args = ["--profile", profile, "--admin", str(admin)]
    if scenario.start is not None:
        serve_args += ["--profile-as-of", scenario.start.isoformat()]
    async with relay_process(db, out / "relay.log", serve_args=serve_args) as relay:
        run = _LiveRun(scenario, relay, time_scale, wire_tap, db, admin, progress)
        try:
            budget = SETUP_TIMEOUT + scenario.duration * time_scale + DRAIN_TIMEOUT + 60
            with trio.fail_after(budget):
                await run.run()
        finally:
            run.store.close()
    reconnects = sum(p.conn.reconnects for p in run.phones.values() if p.conn is not None)
    exit_code = relay.returncode
    assert exit_code is not None
    return _Outcome(
        run.result(db),
        run.events,
        exit_code,
        reconnects,
        trio.current_time() - started,
        run.relay_time(scenario.duration),
    )


def live_refusal(scenario: Scenario) -> str | None:
    """Why ``scenario`` cannot run live, or None. Exceptional access (escrow, a global key, a ghost
    device) and seized phones are answered by interventions that read the simulation's own relay
    core and devices (sims.access); they are not carried over to a relay in another process, and a
    live run refuses them rather than leave them out."""
    from relaysim.sims.access import TYPES

    kinds = sorted({type(e).kind for e in scenario.events if type(e) in TYPES})
    if kinds:
        return (
            f"{scenario.name} has {', '.join(kinds)} events; exceptional access and seized phones run only in "
            "the simulator (sims.access reads its relay core and devices). Run it without --live."
        )
    if scenario.counterfactual:
        return "a counterfactual run's provider is not a profile the relay process can run; run it without --live"
    return None


def simulated_only(scenario: Scenario) -> list[str]:
    """What ``scenario`` asks for that a live run does not carry yet: the phones' automatic traffic
    and the network tricks of ``[defences]``/``[traffic]`` (receipts, cover traffic, fresh connections
    per sealed send, moving phones) and ``[[groups]]``. A live run goes ahead without them and says
    so on stderr and in summary.json (``live.not_carried``); the simulator runs them all."""
    d, tr = scenario.defences, scenario.traffic
    out = []
    if d.receipts != "off" or tr.read_receipts:
        out.append(f"receipts ([defences] receipts = {d.receipts!r}, read receipts {tr.read_receipts})")
    if d.cover_per_hour > 0:
        out.append("cover traffic ([defences] cover_per_hour)")
    if d.sealed_connection != "shared":
        out.append("a fresh connection per sealed send ([defences] sealed_connection)")
    if tr.mobile > 0 or tr.moves:
        out.append("phones changing networks ([traffic] mobile, moves)")
    if scenario.groups:
        out.append("[[groups]]")
    return out


def run_live(
    scenario: Scenario,
    out: Path,
    *,
    time_scale: float,
    wire_tap: Callable[[bytes], None] | None = None,
    quiet: bool = False,
) -> int:
    """Run ``scenario`` live into ``out`` (see the module docstring); returns an exit code.

    0: the run finished and the relay stopped cleanly; 1: the relay failed to start or exit
    cleanly; 2: the request makes no sense (time_scale, too many devices). ``wire_tap``, if
    given, sees every byte any device writes to the relay (before TLS, were there any). The
    progress bar (simulated time, with an ETA) is on stderr when it is a terminal, unless ``quiet``."""
    if not (math.isfinite(time_scale) and time_scale > 0):
        print(
            f"relaysim run --live: --time-scale must be a positive number, got {time_scale}", file=sys.stderr
        )
        return 2
    scenario = expand_population(scenario)
    refusal = live_refusal(scenario)
    if refusal:
        print(f"relaysim run --live: {refusal}", file=sys.stderr)
        return 2
    devices = len(scenario.devices())
    if devices > MAX_LIVE_DEVICES:
        print(
            f"relaysim run --live: {scenario.name} has {devices} devices; live runs take at most "
            f"{MAX_LIVE_DEVICES} (one connection each in this process). Run it without --live.",
            file=sys.stderr,
        )
        return 2
    not_carried = simulated_only(scenario)
    if not_carried:
        print(
            f"relaysim run --live: not carried in a live run (the simulator runs them): {'; '.join(not_carried)}",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("relay.db", "relay.db-wal", "relay.db-shm", "relay.log", "relay.admin"):
        (out / stale).unlink(missing_ok=True)

    try:
        with progress_bar(
            f"{scenario.name} live", scenario.duration, enabled=False if quiet else None
        ) as bar:
            outcome = trio.run(_run_live, scenario, out, time_scale, wire_tap, bar.sim_time)
    except RelayStartError as e:
        print(f"relaysim run --live: {e}", file=sys.stderr)
        return 1
    with open(out / "transcript.jsonl", "w", encoding="utf-8") as f:
        write = transcript_writer(f, epoch=scenario.epoch)
        for event in outcome.events:
            write(event)
    summary = summarise(outcome.result)
    summary["live"] = {
        "not_carried": not_carried,
        "time_scale": time_scale,
        "real_seconds": round(outcome.real_seconds, 3),
        "reconnects": outcome.reconnects,
        "relay_exit_code": outcome.relay_exit,
        "note": "real relay process and trio clients on loopback; not deterministic",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    markdown = summary_markdown(summary, scenario) + (
        "\n## Live run\n\n"
        f"A real relay process on {HOST} and a trio client per device, the timeline played at "
        f"{time_scale:g} real seconds per simulated second ({outcome.real_seconds:.1f} s in all). "
        "Timings and order vary from run to run; the scenario's network model was not applied.\n"
    )
    (out / "summary.md").write_text(markdown, encoding="utf-8")
    m = summary["messages"]
    print(
        f"{scenario.name} live (time scale {time_scale:g}): {m['planned']} messages; "
        f"{m['device_deliveries']}/{m['device_deliveries_expected']} device deliveries, "
        f"{m['plaintext_mismatches']} mismatches; relay exit code {outcome.relay_exit}; "
        f"{outcome.real_seconds:.1f} s of real time."
    )
    print(f"wrote {out}/transcript.jsonl, relay.db, relay.log, summary.json, summary.md")
    return 0 if outcome.relay_exit == 0 else 1
