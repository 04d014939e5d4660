"""A scenario run live: a real relay process on loopback, and every device a real trio client.

``run_live(scenario, out, time_scale=...)`` starts ``relaysim relay serve`` as a subprocess on
127.0.0.1 (a free port, its database ``out/relay.db``), gives every device of the scenario a
``clients.net.DeviceConnection``, and replays the scenario's timeline in real time scaled by
``time_scale`` (real seconds per simulated second; 0.001 plays five simulated hours in 18 s):

- at set-up, before the clock starts, every device registers (a linked device through its
  primary, as in the simulator), logs in and, with sealed sender, fetches a certificate;
- offline windows and ``device_offline``/``device_online`` events disconnect and reconnect the
  device's connection; while a phone is offline its app holds what it would send;
- scripted and generated messages (``sims.world.traffic.plan_messages``) are sent when they are due,
  and ``[[groups]]`` messages (``plan_group_steps``) with sender keys over the pairwise sessions; a
  member who leaves forgets its sender key. The profile says who fans them out: the phones, one send
  per member account (client-side), or the relay, from the member list it holds (server-side,
  WhatsApp); there, and where the clients keep the group's state encrypted at the relay (Signal), the
  phones create, change and leave the group at the relay as the simulator's do (the same
  ``sims.world.groups.GroupDirector``, on this run's clock and a reader of the relay's store);
- the phones send what the simulator's do on their own: delivery and read receipts (``[defences]
  receipts``: at once, delayed or batched; sealed under sealed sender) and cover traffic
  (``[defences] cover_per_hour``), from generators seeded as the simulator's;
- every phone connects from a loopback address of its own, one per address of the scenario
  (``LOOPBACK``), so the relay records who came from where; a phone changing networks (``[traffic]
  moves``, ``mobile``) drops its connections and logs in again from another; a fresh connection
  per sealed send (``[defences] sealed_connection``) and a sealed conversation's mailbox
  (``[defences] mailboxes``) come from exit addresses instead;
- after the scenario's end it waits (at most ``DRAIN_TIMEOUT`` real seconds) for messages still
  in flight to phones that are online and until the relay holds nothing for them: every
  acknowledgement they sent answered, as an envelope leaves the relay's queue only then
  (``_settled``, whatever the phones' connections do as they close); then it lets every phone
  flush and close, and stops the relay with SIGTERM, waiting for it to exit. If the wait runs out
  first, ``summary.json``'s ``live.drain_ran_out`` (None when it did not) says after how long and how
  many envelopes the relay still held for phones online then, as do summary.md and a warning on stderr:
  what it still holds at the end is counted unread.

It writes what ``relaysim run`` writes — ``transcript.jsonl``, ``relay.db`` (the server's own
store), ``provider.json`` (with the relay's clock at the run's start and the time scale, so that
``relaysim disclose`` reads the store on the run's clock), ``summary.json``, ``summary.md`` — plus
``relay.log``, the server's log. Transcript times
``t`` are simulated seconds, real elapsed time divided by ``time_scale``. The ``relay`` parts of
message events come from the relay's store after it has stopped; their ``time`` fields are the
relay's real clock (Unix seconds), not simulated time. The records of the envelopes a phone could not
read (``undecryptable``, with the ``reason`` of a refusal, and ``duplicate_dropped``; a mailbox's naming
the mailbox) are the simulator's, each at the time its phone reported it, put in place after the run:
which copies were duplicates is known only once the relay's ids for every send have reached their
senders. A duplicate
that is no planned message (a receipt, cover...) is the phone's word, set beside the relay's records:
``summary.json``'s ``live.duplicates_checked_by_relay`` says how many the relay's records confirm (it
accepted another envelope of the same size for that device), and each it accepted only once is a
disagreement, listed there and warned of on stderr. ``summary.json``'s ``envelopes`` counts every
envelope the relay accepted as the simulator counts them, from the relay's records (``_envelope_rows``)
where its profile keeps a record of each send and acknowledgement naming the device, the envelope and
its exact time; where it keeps none, ``live.envelopes_not_counted`` says so. It counts each as it stood
at the scenario's end, where the simulator stops, by the times of the relay's records: one the relay
accepted after the end is not counted (``relay_records`` still counts its record, and
``live.envelopes_after_end`` says how many such records there are), one whose acknowledgement it
recorded after the end is ``unread``, as the simulator counts one whose acknowledgement is still on
its way at the end. ``messages`` is counted as of the end too (``_messages_by_the_end``): a planned
message the relay accepted during the wait is not ``accepted_by_relay`` (its transcript event a
``message_accepted_after_end``, ``live.messages_accepted_after_end`` how many), one a phone read then is
``still_queued_or_in_flight`` (a ``message_received_after_end``, ``live.device_deliveries_after_end``), and
so is the rest the phones saw during the wait (``_the_rest_by_the_end``): duplicates dropped, envelopes
that did not decrypt or were refused, sync copies, plaintexts other than planned and receipts then are
left out of the counts, their records ``<kind>_after_end``, ``live.after_end`` how many of each. The
scenario's network model (latency, loss, partitions) is not applied: the network is loopback. What a live run does not carry yet,
``simulated_only`` names, on stderr and in ``summary.json``.

Live runs are not deterministic. trio's scheduler is randomised on purpose, the devices' keys
come from ``os.urandom``, and the operating system decides when bytes arrive, so two runs of
the same scenario and seed differ in timings and may differ in order; only the plan of messages
is the same. Use ``relaysim run`` without ``--live`` for reproducible runs.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio  # type: ignore[import-untyped,unused-ignore]  # trio 0.22 ships no type information

from relaysim.clients.agent import (
    REFUSAL_REASONS,
    Accepted,
    AgentEvent,
    DeviceAgent,
    DeviceListChanged,
    Duplicate,
    Failed,
    GroupMembershipChanged,
    GroupUpdated,
    IdentityChanged,
    KeyLogChecked,
    LoggedIn,
    ReceiptReceived,
    Received,
    SentTranscript,
    Undecryptable,
    refusal,
    sign_device,
)
from relaysim.clients.keys import PreKeySecrets
from relaysim.clients.net import (
    DeviceConnection,
    NetError,
    SendFailed,
    open_device_connection,
    sole_exception,
)
from relaysim.clients.session import Device
from relaysim.relay.compliance import ComplianceDesk
from relaysim.relay.core import Tap
from relaysim.relay.custody import ContentKey
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.store import Store
from relaysim.sims.analysis.runfiles import relay_to_run
from relaysim.sims.progress import progress_bar
from relaysim.sims.report import (
    outputs_written,
    summarise,
    summary_markdown,
    transcript_writer,
    write_disclosures,
)
from relaysim.sims.scenario import DeviceSpec, Scenario, TimelineEvent
from relaysim.sims.world.groups import GroupDirector
from relaysim.sims.world.simulation import (
    GROUP_WAIT,
    MAILBOX_DEVICE,
    MessageState,
    SimulationResult,
    address_books,
    envelope_rows,
    group_distribution_id,
    ledger_by_party,
    mailbox_device,
    record_view,
    registered_facts,
)
from relaysim.sims.world.timeline import Receipts, Timeline, padding, policy_on, provider, sealed_sender
from relaysim.sims.world.traffic import (
    GROUP_PREFIX,
    PlannedMessage,
    contact_graph,
    expand_population,
    plan_group_steps,
    plan_messages,
    plan_moves,
)
from relaysim.sims.world.util import seeded

__all__ = ["RelayProcess", "RelayStartError", "relay_process", "run_live"]

log = logging.getLogger("sims.live")

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
RELAY_START_TIMEOUT: Final = 30.0  # real seconds for the relay process to start listening
# Real seconds after SIGTERM before SIGKILL: a hang guard, not an expected time. The relay's
# shutdown takes 25-300 ms here (its log's "SIGTERM received" to "stopped", under load 7 on 2
# CPUs too), but its steps wait for the disk, shielded: the fsync of the batch recording the
# disconnections, a WAL checkpoint still running in its worker thread, SQLite's checkpoint as the
# store closes; on a disk shared with several test suites an fsync can stall for seconds, and
# killing the relay then makes a correct run fail (exit code -9). 10 s once was not enough.
RELAY_STOP_TIMEOUT: Final = 60.0
SETUP_TIMEOUT: Final = 120.0  # real seconds for every device to register and log in
SETUP_CONCURRENCY: Final = 16  # devices setting up at once
DRAIN_TIMEOUT: Final = 10.0  # real seconds after the end for messages still in flight
DRAIN_POLL: Final = 0.05  # real seconds between looks at the relay's queue while draining
# One socket per device (two with sealed sender) in this process, and Python cryptography for
# every key: live runs are for small scenarios. Larger ones belong to the simulator.
MAX_LIVE_DEVICES: Final = 200
# The smallest time scale: a simulated second is at least a microsecond of real time, all the wall
# clock can tell (relay_to_run). Below it the relay's clock could not tell apart the start and end
# of an order's period (a Tap whose end is its start: a ValueError, an internal error).
MIN_TIME_SCALE: Final = 1e-6
# Every phone connects from a loopback address of its own, one per address of the scenario (people
# who share an address in the scenario share one here), so the relay records who came from where
# as it would: on Linux all of 127/8 reaches a relay listening on 127.0.0.1. Phones are numbered
# into PHONE_NET; fresh connections for sealed sends ([defences] sealed_connection = "fresh") come
# from EXIT_NET, a few addresses many people share, as a proxy's or a Tor-like network's exits.
LOOPBACK: Final = ipaddress.IPv4Network("127.0.0.0/8")
PHONE_NET: Final = ipaddress.IPv4Network("127.1.0.0/16")
EXIT_NET: Final = ipaddress.IPv4Network("127.2.0.0/24")
EXITS: Final = 64


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
    *("--fetch-rate-requester", "off", "--group-state-rate-address", "off"),
    *("--key-log-rate-address", "off", "--login-rate-address", "off"),
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
    pending_receipts: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    address: str = HOST  # the loopback address it connects from (see LOOPBACK)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class _Mailbox:
    """A sealed conversation's mailbox (``DeviceAgent.new_mailbox``): an account of its own, held by a
    phone, on a connection of its own from an exit address while its holder is online."""

    agent: DeviceAgent
    holder: _Phone
    conn: DeviceConnection | None = None
    registered: bool = False
    waiting: list[PlannedMessage] = field(default_factory=list)  # texts that wait for its registration
    stop: Any = field(default_factory=trio.CancelScope)  # ends it at the end of the run, as a phone's
    running: bool = False  # its connection's task is running

    @property
    def name(self) -> str:
        """The device the relay queues its envelopes for: its account's one device (as Simulation's)."""
        return f"{self.agent.account}/{MAILBOX_DEVICE}"


def loopback_address(n: int, net: ipaddress.IPv4Network = PHONE_NET) -> str:
    """The ``n``-th address (from 0) of ``net``, a part of 127/8; refuses anything outside 127/8,
    so a live run never binds a socket to an address that reaches beyond this machine."""
    address = net[1 + n]
    if address not in LOOPBACK or address not in net or address == net.broadcast_address:
        raise ValueError(f"address {n} of {net} is not a loopback address for a phone")
    return str(address)


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
        self.padding = padding(scenario, self.profile)
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
            client_padding=self.padding != "none",
            policy_on=policy_on(scenario),
            day_of=self._calendar_day,
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
        self.nursery: Any = None  # the phones' (and mailboxes') tasks
        self.progress = trio.Event()
        self.limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)
        self.duplicates_dropped = 0
        # ... each with the device the relay queued it for and its envelope id (SimulationResult.envelopes)
        self._read_again: list[tuple[str, bytes]] = []
        # envelopes the phones could not read, counted at the end: (phone, envelope id, when, the
        # ``Undecryptable.reason``, or None for a ``Duplicate``, the device the relay queued it for: the
        # phone, or a mailbox on it)
        self._unread: list[tuple[str, bytes, float, str | None, str]] = []
        # why summary.json's "envelopes" could not be counted from the relay's records, if they could not
        self.envelopes_not_counted: str | None = None
        # the envelopes the relay accepted after the scenario's end, which "envelopes" leaves out
        # (_envelope_rows; None where it counted none), and the phones' reads of planned messages then,
        # which "messages" leaves out (result): the simulator, which stops at the end, makes neither
        self.envelopes_after_end: int | None = None
        self.device_deliveries_after_end = 0
        self.messages_accepted_after_end = 0
        # envelopes the relay still held for phones online when the drain's wait ran out (run), or None
        self.queued_when_drain_ran_out: int | None = None
        # when a phone read a plaintext other than the one planned (or one nobody sent it), each time: the
        # run's plaintext_mismatches are those by the end, as the rest (_the_rest_by_the_end)
        self._mismatched: list[float] = []
        # what the phones saw during the wait after the end besides reading planned messages, which the
        # run's counts leave out (summary.json's live.after_end; _the_rest_by_the_end)
        self.after_end: dict[str, Any] = {}
        self.envelope_message: dict[bytes, int] = {}
        # Receipts, cover traffic and changes of network, as the simulator makes them (its
        # Simulation._after_delivery, _cover, _move), from generators seeded the same way.
        self.defences = scenario.defences
        self.control: dict[str, int] = {
            "receipts_sent": 0,
            "receipts_received": 0,
            "cover_sent": 0,
            "fresh_connections": 0,
            "moves": 0,
        }
        self.receipts: Receipts[_Phone] = Receipts(
            scenario, seeded(scenario.seed, "receipts"), now=self.now, at=self._later, send=self._send_receipt
        )
        self._cover_rng = seeded(scenario.seed, "cover")
        self._exit_rng = seeded(scenario.seed, "exits")
        self._control_serial = 0
        self._control_in_flight: dict[tuple[object, ...], _Phone] = {}  # ref → the phone sending it
        self._control_route: dict[tuple[object, ...], tuple[str, str, str]] = {}  # ref → from, to, kind
        self._control_accepted: list[tuple[dict[str, Any], tuple[bytes, ...]]] = []  # event, envelope ids
        self._addresses: dict[str, str] = {}  # the scenario's address → the loopback address for it
        self.synced: dict[int, dict[str, float]] = {}  # message id → the sender's devices that read its copy
        # [defences] mailboxes = "ephemeral": sealed conversations' mailboxes (Simulation's, carried live)
        self.mailboxes: dict[str, _Mailbox] = {}  # by account
        self._mailbox_of: dict[tuple[str, str], _Mailbox] = {}  # (holder person, peer) → mailbox
        self._mailbox_rng = seeded(scenario.seed, "mailbox-exits")
        tokens = {p.name: os.urandom(32) for p in scenario.people}
        self.phones: dict[str, _Phone] = {}
        self.by_address: dict[tuple[str, int], _Phone] = {}
        model = self.profile.identity_model
        self.device_signatures: dict[tuple[str, int], bytes] = {}  # "signed-devices": the primary's
        for spec in scenario.devices():
            device = Device(spec.person, spec.index, identity_policy=scenario.defences.identity_changes)
            primary = self.by_address.get((spec.person, 1))
            if spec.index != 1 and primary is not None:
                # Linking, per the profile's identity model, as the simulator links (its _link_identity):
                # the account's identity key from the primary, or the primary's signature over its own.
                if model == "account":
                    device.secrets = PreKeySecrets(primary.agent.device.secrets.identity)
                elif model == "signed-devices":
                    signature = sign_device(primary.agent.device, device.identity_key)
                    self.device_signatures[(spec.person, spec.index)] = signature
            agent = DeviceAgent(
                device,
                registration_id=random.SystemRandom().randrange(1, 16380),
                delivery_token=tokens[spec.person],
                trust_root=relay.trust_root,
                clock=time.time,  # the relay's clock: sender certificates expire by it
                tokens=tokens,
                content_key=self.content_key,
                padding=self.padding,
                unauthenticated_fetch=scenario.defences.bundle_fetch == "unauthenticated",
                identity_model=model,
                key_verification=scenario.defences.key_verification == "on",
                key_transparency=scenario.defences.key_transparency,
                **registered_facts(scenario.seed, spec),
                group_fanout=self.profile.group_fanout,
            )
            # "signed-devices": the primary signed it when linking; it registers with the signature
            agent.device_signature = self.device_signatures.get((spec.person, spec.index))
            phone = _Phone(spec, agent, random.Random(f"{scenario.seed}:backoff:{spec.name}"))
            phone.address = self._loopback(spec.address, spec.region)
            self.phones[spec.name] = phone
            self.by_address[(spec.person, spec.index)] = phone
        self.messages: dict[int, MessageState] = {}
        self.plan = plan_messages(scenario)
        for m in self.plan:
            recipients = tuple(d.name for d in scenario.person(m.recipient).devices)
            self.messages[m.id] = MessageState(m, recipients)
        # [[groups]]: sender keys over the pairwise sessions (DeviceAgent.send_group), fanned out by the
        # phones or by the relay; the relay's part (its member list, the encrypted state) as the simulator's
        self.group_director = GroupDirector(
            self,
            self.store,
            self.by_address,
            self._submit,
            server=self.profile.group_fanout == "server",
            encrypted_state=self.profile.group_state_encrypted,
            seed=scenario.seed,
        )
        self.group_steps = plan_group_steps(scenario, len(self.plan))
        self.group_sends: dict[int, tuple[bytes, tuple[str, ...]]] = {}  # message id → (group id, members)
        for step in self.group_steps:
            if step.message is not None:
                self.messages[step.message.id] = MessageState(step.message, step.recipients)
                self.group_sends[step.message.id] = (group_distribution_id(step.group), step.members)

    def _loopback(self, address: str, region: str) -> str:
        """The loopback address standing in for the scenario's ``address`` (the same for the same one),
        known to the compliance desk's geolocation as the scenario's is."""
        if address not in self._addresses:
            self._addresses[address] = loopback_address(len(self._addresses))
        here = self._addresses[address]
        self.desk.geoip.setdefault(here, region)
        return here

    # --- time and events --------------------------------------------------------------------------

    def _calendar_day(self, t: float) -> date:
        """The scenario's calendar day at the relay's time ``t`` (its clock is the wall clock): an
        order is answered under the provider's policy of that day (relay.compliance)."""
        return datetime.fromtimestamp(self.scenario.epoch + (t - self.wall_t0) / self.time_scale, UTC).date()

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
            phone.agent,
            HOST,
            self.relay.port,
            rng=phone.rng,
            wire_tap=self.wire_tap,
            local_address=phone.address,
            on_event=partial(self._agent_event, phone),
            fresh_address=self._exit if self.defences.sealed_connection == "fresh" else None,
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
        self._mailboxes_online(phone, False)
        self.emit({"kind": "device_offline", "device": phone.name, "why": why})

    def _come_online(self, phone: _Phone) -> None:
        if phone.online:
            return
        phone.online = True
        assert phone.conn is not None
        phone.conn.set_online(True)  # it logs in again before it writes anything else
        self._mailboxes_online(phone, True)
        self.emit({"kind": "device_online", "device": phone.name})
        backlog, phone.pending_app = phone.pending_app, []
        for m in backlog:
            self._app_send(m)
        receipts, phone.pending_receipts = phone.pending_receipts, []
        for to, stamps, kind in receipts:
            self._send_receipt(phone, to, stamps, kind)

    # --- messages -----------------------------------------------------------------------------------

    def _app_send(self, m: PlannedMessage) -> None:
        phone = self.by_address[(m.sender, 1)]
        if not phone.online:
            phone.pending_app.append(m)  # the app keeps it until the phone is back online
            return
        if m.id not in self.group_sends and self._wait_for_mailbox(phone, m):
            return
        group = self.group_sends.get(m.id)
        if group is not None and not self.group_director.ready(group[0]):
            self.after(GROUP_WAIT, self._app_send, m)  # the relay does not hold the group yet
            return
        self.messages[m.id].sent_at = self.now()
        if group is not None:
            self.emit(
                {
                    "kind": "group_message_sent",
                    "message": m.id,
                    "from": phone.name,
                    "group": m.recipient[len(GROUP_PREFIX) :],
                    "members": list(group[1]),
                    "plaintext": m.text,
                }
            )
            assert phone.conn is not None
            # each member account's part, once the relay has it, comes back through _agent_event
            phone.conn.send_group(group[0], group[1], m.text.encode(), ("group", m.id))
            return
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
        self._accepted(m.id, ids)

    def _accepted(self, mid: int, ids: tuple[bytes, ...]) -> None:
        """The relay accepted message ``mid`` (for a group message: one member account's part)."""
        state = self.messages[mid]
        for eid in ids:
            self.envelope_message[eid] = mid
        if state.accepted_at is None:
            state.accepted_at = self.now()
            state.envelope_ids = ids
            # "relay" (the relay's send records) is filled in from its store after the run.
            self.emit(
                {"kind": "message_accepted", "message": mid, "plaintext": state.planned.text, "relay": []}
            )
        self._notify()

    def _refused(self, mid: int, why: str) -> None:
        state = self.messages[mid]
        if state.lost is None and state.accepted_at is None:
            state.lost = why
            self.emit({"kind": "message_lost", "message": mid, "why": why})
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
                and (m.id in self.group_sends) == (ev.group is not None)
                and m.text.encode() == ev.plaintext
            ):
                return m.id
        return None

    def _received(self, phone: _Phone, ev: Received, box: _Mailbox | None = None) -> None:
        if self._delivered(phone, ev, box):
            self._after_delivery(phone, ev)

    def _delivered(self, phone: _Phone, ev: Received, box: _Mailbox | None = None) -> bool:
        """Account for a message a phone decrypted; True the first time this phone reads it (``box``: the
        mailbox on it that read it, under which a copy read again is counted)."""
        now = self.now()
        mid = self._match(phone, ev)
        state = self.messages.get(mid) if mid is not None else None
        if state is None or phone.name not in state.recipients:
            log.warning("%s received a message nobody sent it: %r", phone.name, ev.plaintext[:40])
            self._mismatched.append(now)
            return False
        if phone.name in state.delivered:
            self.duplicates_dropped += 1
            name = phone.name if box is None else box.name
            self._read_again.append((name, ev.envelope_id))
            # one record a duplicate, as for a copy the phone could not read (_unread_classified)
            self.emit({"t": now, "kind": "duplicate_dropped", "device": name, "message": state.planned.id})
            return False
        self.envelope_message[ev.envelope_id] = state.planned.id
        if ev.plaintext != state.planned.text.encode() or ev.sender.account != state.planned.sender:
            self._mismatched.append(now)
        state.delivered[phone.name] = now
        self.emit(
            {
                "t": now,
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
        return True

    def _agent_event(self, phone: _Phone, event: AgentEvent) -> None:
        """What a phone's agent reports beside the messages it reads (DeviceConnection's on_event): how
        the sends nobody awaits went (group messages, receipts, cover), the receipts it gets, and what
        it noticed of keys and devices (transcribed as the simulator does)."""
        if isinstance(event, Duplicate | Undecryptable):
            self._unreadable(phone, event)
            return
        ref = getattr(event, "ref", None)
        if isinstance(event, Accepted) and isinstance(ref, tuple):
            if ref[:1] == ("group",):
                state = self.messages[ref[1]]
                if event.members and state.accepted_at is None:
                    # server-side fan-out: to the devices of the members the relay listed when it took it
                    # (the phones' changes reach the relay when they do), as the simulator's
                    # _group_fanned_out; the sender's own other devices among them
                    state.recipients = tuple(
                        p.name
                        for p in self.phones.values()
                        if p.spec.person in event.members and p is not phone
                    )
                self._accepted(ref[1], event.envelope_ids)
            elif ref in self._control_in_flight:
                self._control_done(ref, event.envelope_ids)
            elif ref[:1] == ("sync",):  # a sync copy to the account's other devices: ground truth, as above
                me = phone.spec.person
                event_ = {
                    "kind": "control_accepted",
                    "control": "sync copy",
                    "from": me,
                    "to": me,
                    "relay": [],
                }
                self.emit(event_)
                self._control_accepted.append((self.events[-1], event.envelope_ids))
        elif isinstance(event, Failed) and isinstance(ref, tuple):
            if ref[:1] == ("group",):
                self._refused(ref[1], f"refused: {event.code}: {event.message}")
            elif ref in self._control_in_flight:
                self._control_done(ref, None)
        elif isinstance(event, LoggedIn) and self.sealed and self.work is not None and phone.conn is not None:
            # logged in again (back online, or from a new network): a fresh sender certificate, as the
            # simulated phones fetch one at every login (set-up fetches the first)
            self.work.start_soon(self._renew_certificate, phone.conn)
        elif isinstance(event, SentTranscript):
            self._sync_copy(phone, event)
        elif isinstance(event, GroupMembershipChanged):
            self.emit(
                {
                    "kind": "group_membership_changed",
                    "device": phone.name,
                    "group": event.group.hex(),
                    "added": list(event.added),
                    "removed": list(event.removed),
                    "shown_to_user": event.shown,
                }
            )
        elif isinstance(event, GroupUpdated):
            pass  # the change the phone asked for; the relay's list shows it (group_membership_changed)
        elif isinstance(event, IdentityChanged):
            self.emit(
                {
                    "kind": "identity_changed",
                    "device": phone.name,
                    "peer": f"{event.peer.account}/{event.peer.device}",
                    "via": event.via,
                    "accepted": event.accepted,
                    "was_verified": event.was_verified,
                }
            )
        elif isinstance(event, DeviceListChanged):
            self.emit(
                {
                    "kind": "device_list_changed",
                    "device": phone.name,
                    "account": event.account,
                    "added": list(event.added),
                    "removed": list(event.removed),
                    "identity_changed": list(event.identity_changed),
                }
            )
        elif isinstance(event, KeyLogChecked):
            self.emit(
                {
                    "kind": "key_log_checked",
                    "device": phone.name,
                    "account": event.account,
                    "tree_size": event.tree_size,
                    "logged": list(event.logged),
                    "unlogged": list(event.unlogged),
                    "refused": event.reason,
                }
            )
        elif isinstance(event, ReceiptReceived):
            self.control["receipts_received"] += 1
            self.emit(
                {
                    "kind": "receipt_received",
                    "device": phone.name,
                    "from": f"{event.sender.account}/{event.sender.device}",
                    "receipt": event.kind,
                    "for_ms": list(event.timestamps),
                    "sealed": event.sealed,
                }
            )

    def _unreadable(
        self, phone: _Phone, event: Duplicate | Undecryptable, box: _Mailbox | None = None
    ) -> None:
        """An envelope a phone could not read: a ``Duplicate`` (by its header, a second copy of a message
        it read, as a send its sender's link wrote again after a dropped connection and the relay carried
        out twice) or an ``Undecryptable``. Counted and transcribed at the end of the run
        (``_unread_records``), when the relay's ids for every copy have reached the senders' drivers.
        ``box``: the mailbox on ``phone`` that could not read it, the device it is counted under."""
        # (a reason no agent gives: a ValueError naming it, as the simulator's counts, clients.agent.refusal)
        reason = None if isinstance(event, Duplicate) else (refusal(event) or event.reason)
        counted = phone.name if box is None else box.name
        self._unread.append((phone.name, event.envelope_id, self.now(), reason, counted))

    def _unread_records(self) -> list[dict[str, Any]]:
        return [record for _, record in self._unread_classified()]

    def _unread_classified(self) -> list[tuple[str, dict[str, Any]]]:
        """The transcript's records of the envelopes the phones could not read, as the simulator writes
        them (Simulation._agent_event), each at the time its phone reported it: ``duplicate_dropped``, or
        ``undecryptable`` with the ``reason`` of one that opened and was refused. What is a duplicate is
        decided as the simulator decides it (Simulation._read_already): for a planned message, a duplicate
        if the phone had read it by then, whatever its agent made of the copy; for any other envelope, as
        the agent reported it. (The simulator also knows how often the relay accepted a receipt or a
        cover message; the live driver cannot tie a copy whose answer was lost to its message, so there
        it counts the agent's word, and sets it beside the relay's records after the run: ``_relay_check``.)
        Each with the device the relay queued it for, which the record names: the phone, or the mailbox on
        it that could not read it (its holder's phone is the one whose reads make it a duplicate)."""
        records = []
        for name, eid, t, reason, counted in self._unread:
            duplicate = reason is None
            mid = self.envelope_message.get(eid)
            if mid is not None:
                read = self.messages[mid].delivered.get(name)
                duplicate = read is not None and read <= t
            record: dict[str, Any] = {
                "t": t,
                "kind": "duplicate_dropped" if duplicate else "undecryptable",
                "device": counted,
                "message": mid,
            }
            if not duplicate and reason in REFUSAL_REASONS:
                record["reason"] = reason  # it opened: refused for its identity key, or a self-send
            records.append((counted, record))
        return records

    def _relay_check(self, records: Sequence[MetadataRecord]) -> dict[str, Any]:
        """The phones' word on the duplicates that are no planned message (receipts, cover, sync copies,
        sender keys: the driver cannot tie their copies to a send), set beside the relay's own records: a
        copy of a send the relay carried twice is a second envelope it accepted for the same device, of
        the same size. ``confirmed``: the relay accepted another envelope of that size for that device;
        ``disagreements``: it accepted none, so the phone called a duplicate what the relay took once;
        ``unchecked``: the relay kept no record of the envelope's acceptance (its profile's retention)."""
        accepted: dict[bytes, MetadataRecord] = {}
        sizes: dict[tuple[str | None, int | None, int | None], int] = {}
        for r in records:
            if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND) and r.envelope_id is not None:
                accepted[r.envelope_id] = r
                key = (r.recipient_account, r.recipient_device, r.size)
                sizes[key] = sizes.get(key, 0) + 1
        checked = confirmed = unchecked = 0
        disagreements: list[dict[str, Any]] = []
        for _phone, eid, t, reason, counted in self._unread:
            if reason is not None or eid in self.envelope_message:
                continue  # not a duplicate by the phone's word, or a planned message (the driver knows it)
            checked += 1
            sent = accepted.get(eid)
            if sent is None:
                unchecked += 1
            elif sizes[(sent.recipient_account, sent.recipient_device, sent.size)] > 1:
                confirmed += 1
            else:
                disagreements.append(
                    {
                        "t": t,
                        "device": counted,  # the device the relay queued it for: a mailbox's, not its holder's
                        "envelope_id": eid.hex(),
                        "size": sent.size,
                        "why": "the phone dropped it as a duplicate; the relay accepted no other envelope of "
                        "its size for that device",
                    }
                )
        return {
            "duplicates_by_phones": checked,
            "confirmed": confirmed,
            "unchecked": unchecked,
            "disagreements": disagreements,
        }

    def _unread_counts(self) -> tuple[int, dict[str, int], int]:
        """(undecryptable, refused by reason, duplicates dropped) among the envelopes the phones could not
        read (``_unread_records``), counted as the simulator counts them (SimulationResult.refused): what
        is no duplicate by its ``Undecryptable.reason``."""
        undecryptable = duplicates = 0
        refused = dict.fromkeys(REFUSAL_REASONS, 0)
        for record in self._unread_records():
            if record["kind"] == "duplicate_dropped":
                duplicates += 1
            elif "reason" in record:
                refused[record["reason"]] += 1
            else:
                undecryptable += 1
        return undecryptable, refused, duplicates

    def _sync_copy(self, phone: _Phone, event: SentTranscript) -> None:
        """A sync copy of a 1:1 message another phone of this account sent, transcribed as the simulator
        does (its message found by what it says and where it went: the sender's send and its copy's
        envelope ids are not tied together here)."""
        mid = next(
            (
                state.planned.id
                for state in self.messages.values()
                if state.sent_at is not None
                and state.planned.sender == event.sender.account
                and state.planned.recipient == event.destination
                and state.planned.text.encode() == event.plaintext
                and phone.name not in self.synced.get(state.planned.id, {})
            ),
            None,
        )
        now = self.now()
        if mid is not None:
            self.synced.setdefault(mid, {})[phone.name] = now
        else:
            self._mismatched.append(now)
        self.emit(
            {
                "t": now,
                "kind": "sync_copy_received",
                "device": phone.name,
                "from": f"{event.sender.account}/{event.sender.device}",
                "message": mid,
                "to": event.destination,
                "plaintext": event.plaintext.decode("utf-8", "replace"),
            }
        )

    async def _renew_certificate(self, conn: DeviceConnection) -> None:
        with contextlib.suppress(NetError):  # closed at the end, or refused: the next login asks again
            await conn.request_certificate()

    # --- receipts, cover traffic, changes of network ([traffic] and [defences]) ---------------------

    def _later(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``t`` in a task of its own; never after the end (the
        simulator runs nothing after it either)."""
        if self.work is None or self.t0 is None or t > self.scenario.duration:
            return
        self.work.start_soon(self._sleep_then, t, action)

    async def _sleep_then(self, t: float, action: Callable[[], None]) -> None:
        assert self.t0 is not None
        await trio.sleep_until(self.t0 + t * self.time_scale)
        action()

    def _after_delivery(self, phone: _Phone, ev: Received) -> None:
        """The reading phone's receipts, as in the simulator (sims.world.timeline.Receipts); none for
        what arrives after the end."""
        if self.now() > self.scenario.duration:
            return
        self.receipts.after_delivery(
            phone, phone.name, phone.spec.person, ev.sender.account, ev.relay_timestamp_ms
        )

    def _send_receipt(self, phone: _Phone, to: str, stamps: tuple[int, ...], kind: str) -> None:
        if not phone.online:
            phone.pending_receipts.append((to, stamps, kind))  # sent when the phone is back
            return
        self.control["receipts_sent"] += 1
        self._control_serial += 1
        ref = ("receipt", kind, self._control_serial)
        self._control_started(phone, ref, to, f"{kind} receipt")
        assert phone.conn is not None
        phone.conn.send_receipt(to, stamps, kind, ref, sealed=self.sealed)

    def _cover_gap(self) -> float:
        return self._cover_rng.expovariate(self.defences.cover_per_hour / 3600)

    async def _cover_loop(self) -> None:
        """Cover traffic, every phone's in one chain by due time, so the shared generator is drawn in
        the simulator's order whatever order trio wakes tasks in (two due at once may run either way)."""
        assert self.t0 is not None
        due: list[tuple[float, int, _Phone]] = []
        for phone in self.phones.values():
            if phone.spec.index == 1:
                due.append((self._cover_gap(), len(due), phone))
        heapq.heapify(due)
        serial = itertools.count(len(due))
        while due and due[0][0] <= self.scenario.duration:
            t, _n, phone = heapq.heappop(due)
            await trio.sleep_until(self.t0 + t * self.time_scale)
            self._cover(phone)
            heapq.heappush(due, (t + self._cover_gap(), next(serial), phone))

    def _cover(self, phone: _Phone) -> None:
        """One dummy message to a random contact (Loopix's Poisson cover traffic)."""
        book = self.contacts.get(phone.spec.person) or [
            p.name for p in self.scenario.people if p.name != phone.spec.person
        ]
        if book and phone.online:
            self.control["cover_sent"] += 1
            self._control_serial += 1
            ref: tuple[object, ...] = ("cover", self._control_serial)
            to = self._cover_rng.choice(book)
            self._control_started(phone, ref, to, "cover")
            assert phone.conn is not None
            phone.conn.send_cover(to, ref, sealed=self.sealed)

    def _control_started(self, phone: _Phone, ref: tuple[object, ...], to: str, kind: str) -> None:
        self._control_in_flight[ref] = phone
        self._control_route[ref] = (phone.spec.person, to, kind)

    def _control_done(self, ref: tuple[object, ...], ids: tuple[bytes, ...] | None) -> None:
        """A receipt or cover message the relay accepted (``ids``) or refused (None). Its ground truth
        goes to the transcript as the simulator's does (``control_accepted``), for the analyses' scoring."""
        self._control_in_flight.pop(ref, None)
        sender, to, kind = self._control_route[ref]
        if ids is not None:
            event = {"kind": "control_accepted", "control": kind, "from": sender, "to": to, "relay": []}
            self.emit(event)
            self._control_accepted.append((self.events[-1], ids))
        self._notify()

    # --- sealed conversations: ephemeral mailboxes ([defences] mailboxes), as Simulation's ----------

    def _wait_for_mailbox(self, phone: _Phone, m: PlannedMessage) -> bool:
        """Before a text goes out under ``mailboxes = "ephemeral"`` (Simulation._wait_for_mailbox): a
        text to a peer's mailbox is for the phone holding it; the first text to someone who gave us no
        mailbox opens one and waits until the relay has registered it. True: the text waits."""
        if self.defences.mailboxes != "ephemeral":
            return False
        peer = m.recipient
        target = phone.agent.reply_to.get(peer)
        if target is not None and target in self.mailboxes:
            self.messages[m.id].recipients = (self.mailboxes[target].holder.name,)
            return False
        if peer == phone.spec.person:
            return False
        box = self._mailbox_of.get((phone.spec.person, peer))
        if box is None:
            box = self._open_mailbox(phone, peer)
        if box.registered:
            return False
        box.waiting.append(m)
        return True

    def _open_mailbox(self, phone: _Phone, peer: str) -> _Mailbox:
        agent = phone.agent.new_mailbox(
            peer, seeded(self.scenario.seed, "mailbox", phone.spec.person, peer).randbytes
        )
        mailbox_device(agent, phone.name)  # device 1: as name and _settled take it
        box = _Mailbox(agent, phone)
        self.mailboxes[agent.account] = box
        self._mailbox_of[(phone.spec.person, peer)] = box
        self.emit({"kind": "mailbox_opened", "device": phone.name, "peer": peer, "mailbox": agent.account})
        self._mailbox_connect(box)
        return box

    def _mailbox_connect(self, box: _Mailbox) -> None:
        """The mailbox's own connection, from an exit address: from the phone's, the relay would join
        the mailbox to its holder. It is online while its holder is (_mailboxes_online)."""
        if self.nursery is not None and not box.running:  # beside the phones: it flushes as they do
            box.running = True
            self.nursery.start_soon(self._mailbox_task, box)

    async def _mailbox_task(self, box: _Mailbox) -> None:
        exit_address = loopback_address(self._mailbox_rng.randrange(EXITS), EXIT_NET)
        try:
            async with open_device_connection(
                box.agent,
                HOST,
                self.relay.port,
                rng=random.Random(f"{self.scenario.seed}:backoff:{box.agent.account}"),
                wire_tap=self.wire_tap,
                local_address=exit_address,
                on_event=partial(self._mailbox_event, box),
            ) as conn:
                box.conn = conn
                with box.stop:
                    if not box.registered:
                        await conn.register()
                        box.registered = True
                    await conn.login()
                    waiting, box.waiting = box.waiting, []
                    for m in waiting:
                        self._app_send(m)
                    async for event in conn.received:
                        box.holder.agent.mailbox_answered(event.sender.account)
                        self._received(box.holder, event, box)
        except (NetError, OSError, trio.TooSlowError) as e:  # (its holder went offline while it registered,
            # or the relay could not be reached): again when its holder is next back online
            log.warning("mailbox %s of %s: %s", box.agent.account, box.holder.name, e)
        finally:
            box.conn = None
            box.running = False

    def _mailbox_event(self, box: _Mailbox, event: AgentEvent) -> None:
        """What a mailbox's agent reports beside what it reads: the receipts it gets are its holder's."""
        if isinstance(event, ReceiptReceived):
            box.holder.agent.mailbox_answered(event.sender.account)
            self._agent_event(box.holder, event)
        elif isinstance(event, Duplicate | Undecryptable):
            self._unreadable(box.holder, event, box)  # counted under the mailbox: the relay queued it for it

    def _mailboxes_online(self, phone: _Phone, online: bool) -> None:
        for box in self.mailboxes.values():
            if box.holder is not phone:
                continue
            if box.conn is not None:
                box.conn.set_online(online)
            elif online:
                self._mailbox_connect(box)

    def _exit(self) -> str:
        """``[defences] sealed_connection = "fresh"``: the address a sealed send's own connection comes
        from, one of a few exits many people share (as Simulation._open's 185.220.101.x)."""
        self.control["fresh_connections"] += 1
        return loopback_address(self._exit_rng.randrange(EXITS), EXIT_NET)

    def _move(self, phone: _Phone, address: str) -> None:
        """The phone changes network: its connections drop and it reconnects from the loopback address
        standing in for ``address`` (as Simulation._move, with the same transcript events)."""
        self.control["moves"] += 1
        phone.address = self._loopback(address, phone.spec.region)
        self.emit({"kind": "device_moved", "device": phone.name, "address": address})
        assert phone.conn is not None
        phone.conn.local_address = phone.address
        if phone.online:
            phone.conn.move_to(phone.address)
            self.emit({"kind": "device_offline", "device": phone.name, "why": "changed network"})
            self.emit({"kind": "device_online", "device": phone.name})

    def _leave(self, person: str, group: str) -> None:
        """``person`` leaves ``group``: each of their phones forgets its own sender key for it."""
        gid = group_distribution_id(group)
        for phone in self.phones.values():
            if phone.spec.person == person:
                phone.agent.leave_group(gid)

    # --- the timeline -------------------------------------------------------------------------------

    # --- what the timeline asks (sims.world.Driver) ----------------------------------------------

    def relay_time(self, t: float) -> float:
        return self.wall_t0 + t * self.time_scale

    def provider_file(self) -> dict[str, Any]:
        """``provider.json``, as a simulated run writes it (sims.report._provider_file), so that
        ``relaysim disclose`` on this run's relay.db answers as its desk did, on the run's clock: the
        profile (and a dated run's ``profile_as_of``), the keys the provider holds, its geo-IP table (the
        scenario's addresses and the loopback addresses standing in for them), and the relay's clock
        (the wall clock) at the scenario's t = 0 and end (``clock_epoch``, ``run_ended``), with
        ``time_scale`` (relay seconds per simulated second) and ``scenario_epoch`` (the run's own clock at
        t = 0, which the transcript's ``at`` counts from): a relay time ``r`` is the run's
        ``scenario_epoch + (r - clock_epoch) / time_scale`` (relay_to_run)."""
        keys = [
            k for k in ([self.content_key] if self.content_key is not None else []) if k.holder == "provider"
        ]
        out: dict[str, Any] = {
            "profile": self.profile.name,
            "clock_epoch": self.relay_time(0.0),
            "run_ended": self.relay_time(self.scenario.duration),
            "time_scale": self.time_scale,
            "scenario_epoch": self.scenario.epoch,
        }
        if self.scenario.start is not None:
            out["profile_as_of"] = self.scenario.start.isoformat()
        out["content_keys"] = [{"key_id": k.key_id, "holder": k.holder, "key": k.key.hex()} for k in keys]
        out["geoip"] = dict(self.desk.geoip)
        return out

    def at(self, t: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._actions, (t, next(self._serial), partial(action, *args) if args else action))

    def after(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        self.at(self.now() + delay, action, *args)

    def _submit(self, phone: _Phone) -> None:
        """What ``phone``'s agent was asked outside its connection's methods (GroupDirector's changes)."""
        if phone.conn is not None:
            phone.conn.submit()

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
        # An order that looks forward with no end (a wiretap with no `to`) collects, in the simulator,
        # until the run's end; the operator's socket takes only a time on the relay's clock (JSON has
        # no infinity), so it is given the scenario's end, as of which a live run counts what it did.
        end = tap.end if math.isfinite(tap.end) else self.relay_time(self.scenario.duration)
        self._admin_queue.append(
            {"op": "add_tap", "id": tap.id, "target": tap.target, "start": tap.start, "end": end}
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

    def _schedule(self) -> None:
        """What the simulator schedules at the start (Simulation._schedule), in its order: changes of
        network, cover traffic, the messages, then the groups: the relay's part (GroupDirector), their
        messages and leaves."""
        sc = self.scenario
        for at, device, address in plan_moves(sc):
            if device in self.phones and at < sc.duration:
                self.at(at, partial(self._move, self.phones[device], address))
        if self.defences.cover_per_hour > 0:
            self.work.start_soon(self._cover_loop)
        self.timeline.schedule_messages(self.plan)
        for g in sc.groups:
            self.group_director.schedule(g, group_distribution_id(g.name))
        for step in self.group_steps:
            if step.message is not None:
                self.at(step.at, partial(self._app_send, step.message))
            else:
                assert step.leaver is not None
                self.at(step.at, partial(self._leave, step.leaver, step.group))

    def _queued_for_online(self) -> int:
        """How many envelopes the relay holds for a phone (or a mailbox on one) that is online."""
        online = {(p.spec.person, p.spec.index) for p in self.phones.values() if p.online}
        online |= {(a, MAILBOX_DEVICE) for a, box in self.mailboxes.items() if box.holder.online}
        return sum((e.account, e.device) in online for e in self.store.all_envelopes())

    def _settled(self) -> bool:
        """Nothing more can arrive: every message accepted has reached its recipients that are
        online, none is still on its way from a phone that is online, no receipt or cover message
        either, and the relay holds nothing for a phone that is online (sender keys, receipts; and
        what it delivered until the phone's acknowledgement of it is answered: the relay stopped
        before, it would still be queued). summary.json's ``envelopes`` counts each as it stood at the
        scenario's end all the same (_envelope_rows), as the simulator, which stops there, does."""
        if any(phone.online for phone in self._control_in_flight.values()):
            return False
        if self._queued_for_online():
            return False
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
            self.nursery = phones
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
                self._schedule()
                await self._play()
                await trio.sleep_until(self.t0 + self.scenario.duration * self.time_scale)
                with trio.move_on_after(DRAIN_TIMEOUT) as drain:
                    while not self._settled():
                        with trio.move_on_after(DRAIN_POLL):  # the relay's queue is read, not told
                            await self.progress.wait()
                if drain.cancelled_caught:  # not settled: what the relay still holds is counted unread
                    self.queued_when_drain_ran_out = self._queued_for_online()
                work.cancel_scope.cancel()  # sends still waiting for an offline phone stay unsent
            for phone in self.phones.values():
                phone.stop.cancel()  # each phone flushes its acknowledgements and closes
            for box in self.mailboxes.values():
                box.stop.cancel()
        self.timeline.finish()  # orders still running at the end are answered now
        await self._operator()
        if self.report_progress is not None:
            self.report_progress(self.scenario.duration, self.scenario.duration)

    # --- results ------------------------------------------------------------------------------------

    def result(self, db: Path) -> SimulationResult:
        """Read the relay's store (the relay has stopped) and fill in the relay's view."""
        with Store(db) as store:
            records = store.metadata()
            left = store.all_envelopes()
            queued = len(left)
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
        for e, ids in self._control_accepted:
            e["relay"] = [
                record_view(r)
                for eid in ids
                for r in by_envelope.get(eid, [])
                if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
            ]
        self.relay_check = self._relay_check(records)
        undecryptable, refused, duplicates = self._unread_counts()
        by_device = self._envelope_rows(records, left)
        envelopes = ledger_by_party(by_device, ()) if by_device is not None else {}
        # the unread envelopes' records, each in its place by time (the events are in order of time)
        self.events[:] = list(heapq.merge(self.events, self._unread_records(), key=lambda e: e["t"]))
        # (last: what the phones could not read is classified by what they had read by then, at any time)
        self._messages_by_the_end(by_envelope)
        after = self.after_end = self._the_rest_by_the_end()
        for reason, n in after["refused"].items():
            refused[reason] -= n
        end = self.scenario.duration
        return SimulationResult(
            self.scenario,
            [self.messages[k] for k in sorted(self.messages)],
            dict(sorted(counts.items())),
            {"lost": 0, "duplicated": 0, "partitioned": 0},  # loopback: no simulated network
            undecryptable - after["undecryptable"],
            self.duplicates_dropped + duplicates - after["duplicates_dropped"],
            sum(t <= end for t in self._mismatched),
            len(self.events),
            queued,
            None,
            list(self.timeline.disclosures),
            control=dict(self.control),
            synced={k: dict(v) for k, v in sorted(self.synced.items())},
            refused=refused,
            envelopes=envelopes,  # no agency's devices: a live run refuses interventions (live_refusal)
            envelopes_by_device=by_device or {},
        )

    def _messages_by_the_end(self, by_envelope: dict[bytes, list[MetadataRecord]]) -> None:
        """Count the messages as they stood at the scenario's end, as the simulator, which stops there,
        does (and as ``_envelope_rows`` counts the envelopes): what happened during the wait after the end
        (run's drain) is in summary.json's ``live`` alone. A message the relay accepted then is not
        ``accepted_by_relay``, its transcript event a ``message_accepted_after_end``,
        ``messages_accepted_after_end`` how many: by the relay's send records' times where its profile
        keeps them exactly (``_envelope_rows`` counted the envelopes), of any envelope of the message
        the run knows of, else by when the sender heard of it or a recipient read it. A phone's read of a planned message then is no delivery
        (``device_deliveries``; it is among ``still_queued_or_in_flight``), its event a
        ``message_received_after_end``, ``device_deliveries_after_end`` how many: by its time in the
        message's state (_delivered), which the event's is taken beside."""
        end = self.scenario.duration
        relay_end = self.relay_time(end)
        # every envelope of each message the run knows of, not only those of the first answer that reached
        # its sender (state.envelope_ids: of a group message, one member account's part): that answer may
        # be for a copy sent again after a dropped connection, whose earlier copy the relay had accepted
        # (its answer lost) and a phone read; the relay had the message from its first record
        envelopes: dict[int, list[bytes]] = {}
        for eid, mid in self.envelope_message.items():
            envelopes.setdefault(mid, []).append(eid)
        late: set[int] = set()
        for mid, state in self.messages.items():
            if state.accepted_at is None:
                continue
            sends = [
                r
                for eid in dict.fromkeys([*state.envelope_ids, *envelopes.get(mid, [])])
                for r in by_envelope.get(eid, [])
                if r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
            ]
            if self.envelopes_not_counted is None and sends:
                accepted = any(_made_by(r, relay_end) for r in sends)
            else:  # (a recipient that read it by the end: the relay had it then, its answer still on its way)
                accepted = state.accepted_at <= end or any(t <= end for t in state.delivered.values())
            if not accepted:
                late.add(mid)
                state.accepted_at = None
        self.messages_accepted_after_end = len(late)
        for e in self.events:
            if e["kind"] == "message_accepted" and e["message"] in late:
                e["kind"] = "message_accepted_after_end"
            elif e["kind"] == "message_received" and self.messages[e["message"]].delivered[e["device"]] > end:
                e["kind"] = "message_received_after_end"
                self.device_deliveries_after_end += 1
        for state in self.messages.values():
            for name in [name for name, t in state.delivered.items() if t > end]:
                del state.delivered[name]

    def _the_rest_by_the_end(self) -> dict[str, Any]:
        """What the phones saw during the wait after the scenario's end besides the planned messages they
        read (``_messages_by_the_end``), which the simulator, stopped there, never sees: copies dropped as
        duplicates, envelopes that did not decrypt or were refused, sync copies, plaintexts other than
        planned, receipts. Each transcript record of one is renamed ``<kind>_after_end``
        (``duplicate_dropped_after_end``, ``undecryptable_after_end``, ``sync_copy_received_after_end``,
        ``receipt_received_after_end``), the sync copies read then are taken out of ``synced`` and the
        receipts out of ``control``'s ``receipts_received``; returned: how many of each, under the names
        of the counts they are left out of (summary.json's ``live.after_end``), which ``result`` takes
        from its own. By each record's time, the phone's report's (_unreadable, _delivered,
        _sync_copy, _agent_event)."""
        end = self.scenario.duration
        after: dict[str, Any] = {
            "duplicates_dropped": 0,
            "undecryptable": 0,
            "refused": dict.fromkeys(REFUSAL_REASONS, 0),
            "sync_copies_read": 0,
            "plaintext_mismatches": sum(t > end for t in self._mismatched),
            "receipts_received": 0,
        }
        for e in self.events:
            kind = e["kind"]
            if kind not in _AFTER_END_KINDS or e["t"] <= end:
                continue
            e["kind"] = f"{kind}_after_end"
            if kind == "duplicate_dropped":
                after["duplicates_dropped"] += 1
            elif kind == "undecryptable" and "reason" in e:
                after["refused"][e["reason"]] += 1
            elif kind == "undecryptable":
                after["undecryptable"] += 1
            elif kind == "receipt_received":
                after["receipts_received"] += 1
        for mid, copies in list(self.synced.items()):
            for name in [name for name, t in copies.items() if t > end]:
                del copies[name]
                after["sync_copies_read"] += 1
            if not copies:
                del self.synced[mid]
        self.control["receipts_received"] -= after["receipts_received"]
        return after

    def _envelope_rows(
        self, records: Sequence[MetadataRecord], left: Sequence[Any]
    ) -> dict[str, dict[str, int]] | None:
        """SimulationResult.envelopes_by_device as the simulator counts it (``envelope_rows``), from the
        relay's records of what it accepted for each device and of each device's acknowledgements, what
        it still holds (``left``), and what the phones reported of those they could not read, each
        envelope as it stood at the scenario's end (the relay's clock then, ``relay_time``): the
        simulator stops there (Simulation._run); the live run goes on waiting (run's drain). None, with
        the reason in ``envelopes_not_counted``, where the profile keeps no such record of each, with its
        envelope and its exact time."""
        policy = self.profile.policy
        for kind, fields in (
            (RecordKind.SEND, ("recipient_account", "recipient_device", "envelope_id", "time")),
            (RecordKind.SEALED_SEND, ("recipient_account", "recipient_device", "envelope_id", "time")),
            (RecordKind.ACKNOWLEDGEMENT, ("account", "device", "envelope_id", "time")),
        ):
            rule = policy.rule(kind)
            if (
                rule is None
                or rule.keep != "all"
                or rule.keep_for is not None
                or not set(fields) <= rule.fields
                or "time" in rule.granularity
            ):
                self.envelopes_not_counted = (
                    f"the {self.profile.name} profile keeps no {kind.value} record of every one naming the "
                    f"device, the envelope and the exact time ({', '.join(fields)}), which a live run counts "
                    "the envelopes from"
                )
                return None
        # By the relay's records' times, as the simulator counts them at the end: an envelope the relay
        # accepted after it (a send still on its way then) is none of the run's; one whose
        # acknowledgement it recorded after it (in flight at the end, answered during the drain) was
        # still queued at the end: unread, as one it still holds now is.
        end = self.relay_time(self.scenario.duration)
        sent: dict[str, int] = {}
        acked: dict[str, int] = {}
        accepted: set[bytes] = set()
        acked_ids: set[bytes] = set()
        unread: dict[str, int] = {}
        late = 0  # (summary.json's live.envelopes_after_end)
        for r in records:
            if r.kind not in (RecordKind.SEND, RecordKind.SEALED_SEND):
                continue
            if not _made_by(r, end):
                late += 1
            else:
                name = f"{r.recipient_account}/{r.recipient_device}"
                sent[name] = sent.get(name, 0) + 1
                if r.envelope_id is not None:
                    accepted.add(r.envelope_id)
        for r in records:
            if r.kind is not RecordKind.ACKNOWLEDGEMENT or r.envelope_id not in accepted:
                continue
            name = f"{r.account}/{r.device}"
            if _made_by(r, end):
                acked[name] = acked.get(name, 0) + 1
                acked_ids.add(r.envelope_id)
            else:
                unread[name] = unread.get(name, 0) + 1
        self.envelopes_after_end = late
        for e in left:
            if e.id in accepted:
                name = f"{e.account}/{e.device}"
                unread[name] = unread.get(name, 0) + 1
        # what a phone reported of an envelope it did not read, counted as the simulator counts it
        # (Simulation._outcome): once the relay recorded its acknowledgement, one report an envelope (its
        # last); one the relay still holds is unread alone
        reported: dict[bytes, tuple[str, int]] = {}
        for name, eid in self._read_again:
            reported[eid] = (name, 0)
        for (name, record), (_phone, eid, _t, _reason, _counted) in zip(
            self._unread_classified(), self._unread, strict=True
        ):
            reported[eid] = (
                name,
                0 if record["kind"] == "duplicate_dropped" else 1 if "reason" in record else 2,
            )
        outcomes: dict[str, list[int]] = {}
        for eid, (name, which) in reported.items():
            if eid in acked_ids:
                outcomes.setdefault(name, [0, 0, 0])[which] += 1
        return envelope_rows(sent, acked, unread, outcomes)


# The transcript's records of what the phones saw that _the_rest_by_the_end renames ``<kind>_after_end``
# when they came during the wait after the scenario's end (as _messages_by_the_end renames a
# message_accepted or message_received then)
_AFTER_END_KINDS: Final = ("duplicate_dropped", "undecryptable", "sync_copy_received", "receipt_received")


def _made_by(r: MetadataRecord, end: float) -> bool:
    """Whether the relay made the record ``r`` by the scenario's end (``end``, the relay's clock then)."""
    return r.time is not None and r.time <= end


@dataclass
class _Outcome:
    result: SimulationResult
    events: list[dict[str, Any]]
    relay_exit: int
    reconnects: int
    real_seconds: float
    relay_end: float  # the relay's clock at the scenario's end: later records are the phones hanging up
    relay_start: float  # the relay's clock (the wall clock) at the scenario's t = 0
    # the phones' duplicates set beside the relay's records (_LiveRun._relay_check)
    relay_check: dict[str, Any] = field(default_factory=dict)
    envelopes_not_counted: str | None = None  # why result.envelopes is empty (_LiveRun._envelope_rows)
    # the envelopes still queued for online phones when the drain's wait ran out (_LiveRun.run), or None
    queued_when_drain_ran_out: int | None = None
    # what happened during the wait after the end, which the summary's counts leave out (_LiveRun's)
    envelopes_after_end: int | None = None
    device_deliveries_after_end: int = 0
    messages_accepted_after_end: int = 0
    # the rest the phones saw then, by the name of the count it is left out of (_LiveRun._the_rest_by_the_end)
    after_end: dict[str, Any] = field(default_factory=dict)
    provider: dict[str, Any] = field(default_factory=dict)  # provider.json (_LiveRun.provider_file)


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
    result = run.result(db)
    return _Outcome(
        result,
        run.events,
        exit_code,
        reconnects,
        trio.current_time() - started,
        run.relay_time(scenario.duration),
        run.relay_time(0.0),
        run.relay_check,
        run.envelopes_not_counted,
        run.queued_when_drain_ran_out,
        run.envelopes_after_end,
        run.device_deliveries_after_end,
        run.messages_accepted_after_end,
        run.after_end,
        run.provider_file(),
    )


def _envelopes(n: int) -> str:
    return f"{n:,} envelope{'s' if n != 1 else ''}"


def _after_end_words(
    accepted: int, deliveries: int, envelopes: int | None, rest: dict[str, Any] | None = None
) -> str:
    """summary.md's words for what the run did during its wait after the scenario's end, which its
    counts leave out (summary.json's ``live.messages_accepted_after_end``,
    ``live.device_deliveries_after_end``, ``live.envelopes_after_end``, and ``live.after_end``: ``rest``);
    none when it did nothing then."""
    said = []
    if accepted:
        said.append(f"the relay accepted {accepted} planned message{'s' if accepted != 1 else ''}")
    if deliveries:
        said.append(
            f"the phones read {deliveries} planned message{'s' if deliveries != 1 else ''} (counted still "
            "queued or in flight)"
        )
    if envelopes:
        said.append(
            f"the relay accepted {_envelopes(envelopes)} (among its records, none of the envelopes counted)"
        )
    rest = rest or {}

    def n_of(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    seen = [
        f"{verb} {n_of(n, one, many)}"
        for n, verb, one, many in (
            (rest.get("duplicates_dropped", 0), "dropped", "duplicate", "duplicates"),
            (rest.get("undecryptable", 0), "could not decrypt", "envelope", "envelopes"),
            (sum(rest.get("refused", {}).values()), "refused", "envelope", "envelopes"),
            (rest.get("sync_copies_read", 0), "read", "sync copy", "sync copies"),
            (
                rest.get("plaintext_mismatches", 0),
                "read",
                "plaintext other than planned",
                "plaintexts other than planned",
            ),
            (rest.get("receipts_received", 0), "received", "receipt", "receipts"),
        )
        if n
    ]
    if seen:
        said.append(f"the phones {', '.join(seen)} (none of them counted)")
    if not said:
        return ""
    return (
        f"\nDuring the wait after the scenario's end {' and '.join(said)}: the counts above are as of the end, "
        "where the simulator stops.\n"
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
    """What ``scenario`` asks for that a live run does not carry yet. Receipts, cover traffic, a
    fresh connection per sealed send, bundle fetches with the recipient's delivery token, ephemeral
    mailboxes, phones changing networks and ``[[groups]]`` (under every profile: the phones' fan-out, the
    relay's member list, the encrypted group state) are carried. A
    live run goes ahead without what is listed here and says so on stderr and in summary.json
    (``live.not_carried``); the simulator runs it all."""
    d = scenario.defences
    out = []
    if d.exit_latency_ms and (d.sealed_connection == "fresh" or d.mailboxes == "ephemeral"):
        out.append("the exits' latency ([defences] exit_latency_ms): loopback has none")
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
    if time_scale < MIN_TIME_SCALE:
        print(
            f"relaysim run --live: --time-scale must be at least {MIN_TIME_SCALE:g} (a simulated second as a "
            f"microsecond of real time, all the relay's clock can tell), got {time_scale:g}",
            file=sys.stderr,
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
    for stale in ("relay.db", "relay.db-wal", "relay.db-shm", "relay.log", "relay.admin", "provider.json"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "disclosures", ignore_errors=True)  # no earlier run's beside this one's

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
    (out / "provider.json").write_text(json.dumps(outcome.provider, indent=2) + "\n", encoding="utf-8")
    summary = summarise(outcome.result)
    if outcome.result.disclosures:  # each order served in the timeline, as a simulated run writes it
        t0, epoch = outcome.relay_start, scenario.epoch
        summary["disclosures"] = write_disclosures(
            outcome.result,
            out / "disclosures",
            relay_to_sim=lambda t: epoch + relay_to_run(t, t0, time_scale),
        )
    summary["live"] = {
        "not_carried": not_carried,
        "time_scale": time_scale,
        "real_seconds": round(outcome.real_seconds, 3),
        "reconnects": outcome.reconnects,
        "relay_exit_code": outcome.relay_exit,
        "note": "real relay process and trio clients on loopback; not deterministic",
        # the duplicates the phones dropped that are no planned message, checked against the relay's records
        "duplicates_checked_by_relay": outcome.relay_check,
    }
    if outcome.envelopes_not_counted is not None:  # (summary.json's "envelopes" is then empty)
        summary["live"]["envelopes_not_counted"] = outcome.envelopes_not_counted
    # what the relay and the phones did during the wait after the end, which "messages" and "envelopes"
    # count as the simulator does, as of the end: the envelopes the relay accepted then (among
    # relay_records' send and sealed_send; null where "envelopes" counted none), the planned messages
    # it accepted then (not accepted_by_relay; message_accepted_after_end in the transcript) and those
    # the phones read then (each among still_queued_or_in_flight; message_received_after_end)
    summary["live"]["envelopes_after_end"] = outcome.envelopes_after_end
    summary["live"]["messages_accepted_after_end"] = outcome.messages_accepted_after_end
    summary["live"]["device_deliveries_after_end"] = outcome.device_deliveries_after_end
    # the rest the phones saw then, by the name of the count it is left out of: "messages"'
    # duplicates_dropped, undecryptable, refused (by reason), sync_copies_read, plaintext_mismatches, and
    # the receipts they received; each with its transcript record a <kind>_after_end
    summary["live"]["after_end"] = outcome.after_end
    # None: the wait after the end settled; else how long it waited and what was still queued then
    queued = outcome.queued_when_drain_ran_out
    summary["live"]["drain_ran_out"] = None
    if queued is not None:
        summary["live"]["drain_ran_out"] = {
            "after_real_seconds": DRAIN_TIMEOUT,
            "queued_for_online_phones": queued,
        }
        print(
            f"relaysim run --live: warning: the wait after the scenario's end ran out ({DRAIN_TIMEOUT:g} real "
            f"seconds) before the run settled: {_envelopes(queued)} still queued at "
            "the relay for phones online then; what the relay still held at the end is counted unread "
            "(summary.json's live.drain_ran_out)",
            file=sys.stderr,
        )
    for d in outcome.relay_check.get("disagreements", []):
        print(
            f"relaysim run --live: warning: {d['device']} dropped envelope {d['envelope_id']} as a duplicate, "
            f"but the relay accepted no other envelope of its size ({d['size']} bytes) for that device",
            file=sys.stderr,
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    markdown = summary_markdown(summary, scenario) + (
        "\n## Live run\n\n"
        f"A real relay process on {HOST} and a trio client per device, the timeline played at "
        f"{time_scale:g} real seconds per simulated second ({outcome.real_seconds:.1f} s in all). "
        "Timings and order vary from run to run; the scenario's network model was not applied.\n"
        + (
            ""
            if queued is None
            else f"\nThe wait after the scenario's end ran out ({DRAIN_TIMEOUT:g} real seconds) before the run "
            f"settled: {_envelopes(queued)} still queued at the relay for phones "
            "online then. What the relay still held at the end is counted unread.\n"
        )
        + _after_end_words(
            outcome.messages_accepted_after_end,
            outcome.device_deliveries_after_end,
            outcome.envelopes_after_end,
            outcome.after_end,
        )
    )
    (out / "summary.md").write_text(markdown, encoding="utf-8")
    m = summary["messages"]
    print(
        f"{scenario.name} live (time scale {time_scale:g}) under relay profile {scenario.relay.profile_said()}: "
        f"{m['planned']} message{'s' if m['planned'] != 1 else ''}; "
        f"{m['device_deliveries']}/{m['device_deliveries_expected']} device deliveries, "
        f"{m['plaintext_mismatches']} mismatch{'es' if m['plaintext_mismatches'] != 1 else ''}; "
        f"relay exit code {outcome.relay_exit}; "
        f"{outcome.real_seconds:.1f} s of real time."
    )
    print(f"wrote {out}/{outputs_written(out)}")
    return 0 if outcome.relay_exit == 0 else 1
