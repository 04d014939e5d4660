"""The simulation: real devices and the real relay core, driven in virtual time by one event heap.

Every device is a ``clients.agent.DeviceAgent`` over a ``clients.session.Device`` (real PQXDH,
real Double Ratchet, real XEdDSA); the relay is ``relay.core.RelayCore`` over a
``relay.store.Store`` — the same objects the trio server runs. Between them, every frame is
encoded to bytes with ``relay.wire``, carried by the network model (latency, jitter, loss,
duplication, partitions) and decoded again on the other side. The relay's clock is the
simulated clock, so every metadata record it writes carries simulated time.

What the network model may lose (and the simulation then accounts for by message): a frame
carrying envelopes toward the relay (a send) can be lost or duplicated, or dropped by a "drop"
partition. A lost delivery push toward a device leaves the envelope queued; the device gets it
on its next receive. Control frames (registration, authentication, bundles, receipts) ride a
reliable connection (as TCP retransmits) and are only delayed. A "hold" partition delays every
frame that would cross it, of either kind, until it heals (sims.world.network). A device that goes offline drops its connection; the relay
queues for it, and it drains its queue when it comes back.

Exceptional access (``sims.access``): the timeline's ``exceptional_access`` (key escrow, a global
key, a ghost device), ``escrow_key_stolen`` and ``seize_phone`` events are answered by
interventions, which the simulation calls through one interface (``sims.access.Intervention``)
and which change the world only through its public methods (``mandate_escrow``,
``mandate_content_key``, ``add_device``, ``start_device``); the results are in
``SimulationResult.exceptional``.

Determinism: every random draw comes from generators seeded from the scenario's seed, the
event heap breaks ties by scheduling order, and nothing reads the wall clock, so the same
scenario and seed give byte-identical outputs.
"""

from __future__ import annotations

import functools
import gc
import math
import operator
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast, overload

from relaysim.clients import agent as A
from relaysim.clients.agent import REFUSAL_REASONS
from relaysim.clients.ahead import use_ahead
from relaysim.clients.errors import UsageError
from relaysim.clients.escrow import EscrowPublicKey
from relaysim.clients.fingerprint import safety_number
from relaysim.clients.keys import DecapsulationKeys, KemPreKey, PreKeyBundle, PreKeySecrets, SignedPreKey
from relaysim.clients.session import Device, PeerAddress
from relaysim.relay import wire
from relaysim.relay.compliance import ComplianceDesk, Disclosure, LegalProcess
from relaysim.relay.core import ConnectionContext, Push, RelayCore, Reply, Tap
from relaysim.relay.custody import ContentKey
from relaysim.relay.identity import use_verified_ahead
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.store import Store
from relaysim.sims.access import ExceptionalReport, Interventions
from relaysim.sims.scenario import SIM_EPOCH, DeviceSpec, Scenario, TimelineEvent, VerifySafetyNumber
from relaysim.sims.scoring import GroundTruth, TrueControl, TrueMessage
from relaysim.sims.world.ahead import AheadWorker
from relaysim.sims.world.engine import Scheduler
from relaysim.sims.world.groups import GroupDirector, group_distribution_id
from relaysim.sims.world.network import Network
from relaysim.sims.world.premade import PremadeSource
from relaysim.sims.world.timeline import Receipts, Timeline, padding, policy_on, provider, sealed_sender
from relaysim.sims.world.traffic import (
    GROUP_PREFIX,
    PlannedMessage,
    contact_graph,
    expand_population,
    organisation_traits,
    plan_messages,
    plan_moves,
)
from relaysim.sims.world.util import KeyStream
from relaysim.sims.world.util import seeded as _seeded

__all__ = ["SIM_EPOCH", "Simulation", "SimulationResult", "address_books", "registered_facts"]

# SIM_EPOCH (sims.scenario): the relay's clock at simulated t = 0 for a scenario without a start,
# 2026-01-01T00:00:00Z; a dated scenario's run starts at its own (Scenario.epoch, Simulation.epoch).
SIM_STORE_CACHE_ENTRIES: Final = 1 << 18  # relay.store.Store(cache_entries=...) for a simulation's relay
SETUP_SPREAD = 30.0  # seconds over which devices first come online, so they do not all start at t = 0
SIM_PREKEY_BATCH = 8
SIM_KEM_PREKEY_BATCH = 2
# the first id of the connections interventions open themselves (Simulation.intervention_connection), far
# above the phones' (counted from 1)
OWN_CONNECTIONS: Final = 2**31 + 1
REDELIVERY_DELAY = 30.0  # a lost push is fetched again this long after (the app's next receive)

TranscriptSink = Callable[[dict[str, Any]], None]
GROUP_SEND_LOST = "*"  # in _group_parts_lost: a group_send (server-side fan-out) the network lost
GROUP_WAIT = 5.0  # seconds a group message waits, and waits again, for its group to exist at the relay
# With exchanges_ahead: how many planned messages before the one that starts a session the worker is
# asked for what that session will compute (Simulation._ask_session_ahead).
SESSION_LOOKAHEAD = 256
_CARRY_ENVELOPES = frozenset((wire.Send, wire.SealedSend, wire.GroupSend))  # the frames the network may lose
_SENDS = (wire.Send, wire.SealedSend)


@dataclass
class SimDevice:
    spec: DeviceSpec
    agent: A.DeviceAgent
    port: int
    conn: Link | None = None  # the connection the device authenticates on
    anon: Link | None = None  # an unauthenticated one, for sealed sends
    online: bool = False
    registered: bool = False
    contacts_uploaded: bool = False
    pending_app: list[PlannedMessage] = field(default_factory=list)
    pending_receipts: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    holder: SimDevice | None = None  # for an ephemeral mailbox: the phone that holds it

    @functools.cached_property
    def name(self) -> str:
        """The device's name, made once: each delivery keys MessageState.delivered by it, and a new
        string per delivery is 56 B per message (56 MB at 1,000,000). Its spec may be replaced (a new
        address), never its person or index."""
        return self.spec.name


class Link:
    """One simulated connection: the relay's context for it. (The relay reads each frame whole from
    its bytes: the simulation carries one frame per packet, length prefix included.)"""

    __slots__ = ("ctx", "device", "extra_latency", "fresh", "open")

    def __init__(
        self, ctx: ConnectionContext, device: SimDevice, fresh: bool = False, extra: float = 0.0
    ) -> None:
        self.ctx = ctx
        self.device = device
        self.open = True
        self.fresh = fresh  # one request's connection through an exit (defences.sealed_connection = "fresh")
        self.extra_latency = extra  # what the exit adds each way


class Deliveries(MutableMapping[str, float]):
    """``MessageState.delivered``: recipient device → when it read the message, in the order they
    read it, as a dict would hold them. Most messages have one recipient: that one is kept in two
    slots (56 B), and a dict only from a second on (a dict of one entry is 184 B: 128 MB more at the
    scale run's 1,000,000 messages)."""

    __slots__ = ("_more", "_name", "_t")

    def __init__(self) -> None:
        self._name: str | None = None
        self._t = 0.0
        self._more: dict[str, float] | None = None

    def __getitem__(self, key: str) -> float:
        if self._more is not None:
            return self._more[key]
        if key == self._name and key is not None:
            return self._t
        raise KeyError(key)

    def __setitem__(self, key: str, value: float) -> None:
        more = self._more
        if more is not None:
            more[key] = value
        elif self._name is None or self._name == key:
            self._name, self._t = key, value
        else:
            self._more = {self._name: self._t, key: value}
            self._name = None

    def __delitem__(self, key: str) -> None:
        if self._more is not None:
            del self._more[key]
        elif key == self._name and key is not None:
            self._name = None
        else:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        more = self._more
        return key in more if more is not None else (key == self._name and key is not None)

    def __iter__(self) -> Iterator[str]:
        if self._more is not None:
            return iter(self._more)
        return iter(() if self._name is None else (self._name,))

    def __len__(self) -> int:
        more = self._more
        return len(more) if more is not None else (0 if self._name is None else 1)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclass(slots=True)
class MessageState:
    planned: PlannedMessage
    recipients: tuple[str, ...]  # device names that must receive it
    sent_at: float | None = None
    accepted_at: float | None = None
    envelope_ids: tuple[bytes, ...] = ()
    delivered: MutableMapping[str, float] = field(default_factory=Deliveries)
    lost: str | None = None
    # A group message: the recipient devices that never read it, and why (Simulation._group_losses).
    # Until there is one, every state shares one empty read-only mapping: an empty dict per message
    # is 64 MB at 1,000,000 messages.
    lost_for: Mapping[str, str] = field(default_factory=lambda: NO_LOSSES)


NO_LOSSES: Final[Mapping[str, str]] = MappingProxyType({})


class TrueMessages(Sequence[TrueMessage]):
    """Ground truth's 1:1 messages (``GroundTruth.messages``), each made when it is read from the
    run's message state: the relay-clock time it was accepted, sender, recipient, text. The states
    are final when a run ends, so the values are those a tuple built then would hold; a run of
    1,000,000 messages just does not hold a second million objects at its end, its memory peak
    (~100 MB)."""

    __slots__ = ("_epoch", "_states")

    def __init__(self, states: list[MessageState], epoch: float) -> None:
        self._states = states  # accepted 1:1 messages, in message id order
        self._epoch = epoch

    def _make(self, m: MessageState) -> TrueMessage:
        assert m.accepted_at is not None
        return TrueMessage(self._epoch + m.accepted_at, m.planned.sender, m.planned.recipient, m.planned.text)

    def __len__(self) -> int:
        return len(self._states)

    @overload
    def __getitem__(self, i: int) -> TrueMessage: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[TrueMessage, ...]: ...
    def __getitem__(self, i: int | slice) -> TrueMessage | tuple[TrueMessage, ...]:
        if isinstance(i, slice):
            return tuple(map(self._make, self._states[i]))
        return self._make(self._states[i])

    def __iter__(self) -> Iterator[TrueMessage]:
        return map(self._make, self._states)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TrueMessages({len(self)} messages)"


@dataclass
class SimulationResult:
    scenario: Scenario
    messages: list[MessageState]
    relay_records: dict[str, int]
    network: dict[str, int]
    # envelopes a device did not read, by why (``clients.agent.Undecryptable.reason``): ``undecryptable``
    # did not decrypt (DECRYPTION_FAILED); ``refused`` decrypted and were refused, by reason
    # (UNTRUSTED_IDENTITY: a changed identity key the user has not approved; SEALED_SENDER_SELF_SEND:
    # sealed under the device's own address), each reason always present. A copy of what was read
    # already is neither: ``duplicates_dropped``.
    undecryptable: int
    duplicates_dropped: int
    # decrypted envelopes of no planned message, or a plaintext other than the one planned: every
    # device's, the agency's too (a bug in the simulation, not a fate: they are counted delivered)
    mismatched: int
    events_run: int
    queued_at_end: int
    frames_to_relay: list[bytes] | None
    disclosures: list[Disclosure] = field(default_factory=list)
    truth: GroundTruth | None = None
    exceptional: list[ExceptionalReport] = field(default_factory=list)
    # receipts and cover traffic: messages on the wire, but not messages people wrote
    control: dict[str, int] = field(default_factory=dict)
    # sync copies: message id → the sender's own other devices that read its copy, and when
    synced: dict[int, dict[str, float]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSAL_REASONS, 0))
    # every envelope the relay accepted for a device, by whose device it is: "people" (the scenario's
    # people, their mailboxes included) and "agency" (devices an intervention runs for the agency: a
    # ghost, a ghost participant's phone), each as ``ENVELOPE_FATES`` (the counts above are the people's
    # alone; an intervention's report counts its own device's too)
    envelopes: dict[str, dict[str, int]] = field(default_factory=dict)
    agency_devices: list[str] = field(default_factory=list)
    # the same, device by device ("account/index" → ``ENVELOPE_FATES``; a mailbox is a device of its own):
    # each row adds up as the parties' do (not written to summary.json)
    envelopes_by_device: dict[str, dict[str, int]] = field(default_factory=dict)


# What became of the envelopes the relay accepted for one party's devices (SimulationResult.envelopes):
# ``sent`` the relay's records of envelopes accepted for them (send and sealed_send, one per recipient
# device), and the envelopes it queued for them with no send (``forged_by_relay``, among ``sent``:
# World.forge_envelope, a relay that attacks); ``acknowledged`` its records of their acknowledgements; ``unread`` still queued for them at the
# end (the relay's store); of those acknowledged, what the devices reported: ``duplicates_dropped``,
# ``refused`` (decrypted, not read: SimulationResult.refused's reasons), ``undecryptable``, and
# ``delivered`` the rest (read: a message, a receipt, a sync copy, a sender key, cover); ``dropped_by_relay``
# neither acknowledged nor still queued. delivered + duplicates_dropped + refused + undecryptable +
# unread + dropped_by_relay = sent, each envelope in one of them: what a device reported of one whose
# acknowledgement never reached the relay is in none of the devices' columns (Simulation._outcome).
ENVELOPE_FATES = (
    "sent",
    "forged_by_relay",
    "delivered",
    "duplicates_dropped",
    "refused",
    "undecryptable",
    "unread",
    "dropped_by_relay",
)


def envelope_rows(
    sent: Mapping[str, int],
    acked: Mapping[str, int],
    unread: Mapping[str, int],
    outcomes: Mapping[str, Sequence[int]],
    forged: Mapping[str, int] = MappingProxyType({}),
) -> dict[str, dict[str, int]]:
    """SimulationResult.envelopes_by_device from per-device counts (device name "account/index" → count;
    ``outcomes``: [duplicates dropped, refused, undecryptable]; ``sent`` counts the forged among them)."""
    rows = {}
    for name in sorted(set(sent) | set(acked) | set(unread) | set(outcomes) | set(forged)):
        dup, refused, bad = outcomes.get(name, (0, 0, 0))
        n_sent, n_acked, n_unread = sent.get(name, 0), acked.get(name, 0), unread.get(name, 0)
        rows[name] = {
            "sent": n_sent,
            "forged_by_relay": forged.get(name, 0),
            "delivered": n_acked - dup - refused - bad,
            "duplicates_dropped": dup,
            "refused": refused,
            "undecryptable": bad,
            "unread": n_unread,
            "dropped_by_relay": n_sent - n_acked - n_unread,
        }
    return rows


def envelope_ledger(
    sent: Mapping[str, int],
    acked: Mapping[str, int],
    unread: Mapping[str, int],
    outcomes: Mapping[str, Sequence[int]],
    agency: Collection[str],
    forged: Mapping[str, int] = MappingProxyType({}),
) -> dict[str, dict[str, int]]:
    """SimulationResult.envelopes from per-device counts (as :func:`envelope_rows`): its rows summed by
    party, the agency's devices' (``agency``) and the people's."""
    return ledger_by_party(envelope_rows(sent, acked, unread, outcomes, forged), agency)


def ledger_by_party(
    rows: Mapping[str, Mapping[str, int]], agency: Collection[str]
) -> dict[str, dict[str, int]]:
    """:func:`envelope_rows`' rows summed by party: "agency" (the devices in ``agency``) and "people"."""
    ledger = {party: dict.fromkeys(ENVELOPE_FATES, 0) for party in ("people", "agency")}
    for name, row in rows.items():
        total = ledger["agency" if name in agency else "people"]
        for k in ENVELOPE_FATES:
            total[k] += row[k]
    return ledger


MAILBOX_DEVICE: Final = 1


def mailbox_device(agent: A.DeviceAgent, holder: str) -> int:
    """The device number of a mailbox (``DeviceAgent.new_mailbox``, opened by the phone ``holder``): its
    account's one device, device 1, under which both drivers count what the relay queued for it
    ("account/1", SimulationResult.envelopes_by_device) and look for it among the devices online.
    ValueError naming the mailbox if its agent was made another device of its account."""
    index = agent.device.address.device
    if index != MAILBOX_DEVICE:
        raise ValueError(
            f"mailbox {agent.account} opened by {holder} is device {index} of its account; a mailbox is "
            f"its account's one device, device {MAILBOX_DEVICE}, as the drivers count its envelopes"
        )
    return index


class Simulation:
    _premade_wait = 0.0  # seconds a phone would wait for its premade keys: never (a test's subclass may)
    _ahead_wait = 0.0  # ... and for the answers of sims.world.ahead's worker: never (a test's may)

    def __init__(
        self,
        scenario: Scenario,
        *,
        db_path: str | Path = ":memory:",
        transcript: TranscriptSink | None = None,
        relay_view: Callable[[MetadataRecord], None] | None = None,
        capture_frames: bool = False,
        progress: Callable[[float, float], None] | None = None,
        deterministic_kem: bool = True,
        kem_prekey_batch: int = SIM_KEM_PREKEY_BATCH,
        compact_device_rng: bool = False,
        premade_keys: bool = False,
        kem_key_cache: int = 0,
        exchanges_ahead: bool = False,
    ) -> None:
        """``deterministic_kem=False`` lets OpenSSL draw the ML-KEM encapsulation's randomness (~40 µs
        instead of ~0.2 ms with numpy per new session): faster, but the run is then no longer
        byte-identical across runs of the same scenario and seed (``relaysim bench sim --scale``).
        ``relay_view`` is given every observation the relay makes, whole, as it makes it — what a
        provider watching its own relay sees whatever its profile keeps (``relay-view.jsonl``,
        ``sims.analysis.view.from_relay_view``).
        ``kem_prekey_batch``: one-time ML-KEM prekeys each phone publishes (and tops up by); 0 leaves
        only the last-resort one, which PQXDH then uses for every session (the spec allows it; each
        one-time KEM prekey costs a key generation, a signature and the relay's check of it).
        ``compact_device_rng=True`` gives each phone a ``KeyStream`` (~0.1 KiB) seeded from its own
        generator's first 32 bytes instead of keeping that generator (a Mersenne Twister, 2.5 KiB:
        240 MiB at 100,000 phones): still deterministic, but other keys, so other ciphertexts, than the
        default's (``relaysim bench sim --scale``).
        ``premade_keys=True`` (with ``compact_device_rng``): a worker process replays each phone's
        key stream and makes its registration keys ahead on the other core (``sims.world.premade``);
        the same bytes either way, only the main process's CPU time changes.
        ``kem_key_cache=N``: the phones of the N people with the most contacts (those most often
        asked to answer a new PQXDH session) keep their last-resort ML-KEM decapsulation key
        (``clients.keys.DecapsulationKeys``, ~13 KiB each) instead of making it again from its seed
        for each session (~0.11 ms); the same bytes, less CPU time.
        ``exchanges_ahead=True`` (with ``compact_device_rng``): when a phone sends, a worker process
        computes on the other core the X25519 exchanges, key pair and ML-KEM decapsulation the
        recipient's phone will make to read it, and when the relay answers a bundle fetch, the
        signature checks, exchanges, key pairs and encapsulation the phone will make to start its
        sessions (``sims.world.ahead``); the same bytes either way (an OpenSSL encapsulation's
        randomness is then the worker's), only the main process's CPU time changes."""
        if premade_keys and not compact_device_rng:
            raise ValueError(
                "Simulation(premade_keys=True) needs compact_device_rng=True: the worker replays each "
                "phone's KeyStream"
            )
        # a [generate] scenario as loaded, its generated people not yet made (traffic.contact_graph
        # read them by index: an IndexError); a no-op on one already expanded
        scenario = expand_population(scenario)
        self.scenario = scenario
        # The relay's clock at t = 0: the scenario's start, or SIM_EPOCH (sims.scenario.Scenario.epoch).
        self.epoch = scenario.epoch
        self.deterministic_kem = deterministic_kem
        self.kem_prekey_batch = kem_prekey_batch
        self.compact_device_rng = compact_device_rng
        self.premade_keys = premade_keys
        self._stream_seeds: dict[str, bytes] = {}  # device → its KeyStream's seed, for the worker
        self._premade: PremadeSource | None = None
        self._verified_before: dict[tuple[bytes, bytes, bytes], bool] | None = None
        self.premade_stats: dict[str, float] = {}  # the worker's CPU time and tables given, after the run
        if exchanges_ahead and not compact_device_rng:
            raise ValueError(
                "Simulation(exchanges_ahead=True) needs compact_device_rng=True: the worker's key pairs "
                "are drawn ahead from each phone's KeyStream"
            )
        self.exchanges_ahead = exchanges_ahead
        self._ahead: AheadWorker | None = None
        self._plan: list[PlannedMessage] = []  # the planned messages, in time order (_schedule)
        self.ahead_stats: dict[str, float] = {}  # the exchanges' worker: CPU time and counts, after the run
        self.kem_keys = (
            DecapsulationKeys(2 * kem_key_cache) if kem_key_cache else None
        )  # (room for rotations)
        self._kem_key_cache = kem_key_cache
        self.sched = Scheduler()
        seed = scenario.seed
        self.net = Network(scenario.network, _seeded(seed, "network"))
        # (room in the relay's hot-path caches for every device of a 100,000-phone scale run: with
        # the default 65,536 they started again from empty, and the misses cost ~7 % of its CPU)
        self.store = Store(db_path, durable=False, cache_entries=SIM_STORE_CACHE_ENTRIES)
        # Every key this run makes (the relay's trust root and server key, every device's) can be
        # recomputed from the seed: say so in the file, so `relaysim relay serve` refuses it.
        self.store.mark_simulation_keys(f"scenario {scenario.name!r}, seed {seed}")
        relay_rng = _seeded(seed, "relay")
        # The provider as it was when the scenario is set, or as it is today (sims.world.provider).
        self.profile = provider(scenario)
        self.relay = RelayCore(
            self.store,
            clock=self._relay_clock,
            rng=relay_rng.randbytes,
            **self.profile.relay_options(),  # what the provider's relay keeps
        )
        # [defences] padding, or the profile's: Signal's padding unless the profile turns it off.
        self.padding = padding(scenario, self.profile)
        self.sealed = sealed_sender(scenario, self.profile)
        # Who holds the content keys when the profile is not end-to-end (relay.custody).
        self.content_key: ContentKey | None = None
        if self.profile.custody != "devices":
            self.content_key = ContentKey(
                f"{self.profile.name}-content",
                _seeded(seed, "content-key").randbytes(32),
                self.profile.custody,
            )
        self.desk = ComplianceDesk(
            self.store,
            self.profile,
            content_keys=[self.content_key] if self.content_key else [],
            geoip={d.address: d.region for d in scenario.devices()},
            client_padding=self.padding != "none",
            policy_on=policy_on(scenario),
        )
        # The scenario's timeline and its legal process, interpreted as in a live run (sims.world.timeline).
        self.timeline = Timeline(self)
        self.graph = contact_graph(scenario)  # built once: networkx on 100k people takes seconds
        self.contacts = address_books(scenario, self.graph)
        self.relay_region = scenario.relay.region
        self.emit: TranscriptSink = transcript or (lambda _e: None)
        # Without a transcript, the per-message event dicts are not built at all (at scale they
        # are most of the simulation glue's time and allocations).
        self.transcribing = transcript is not None
        self.relay_view = relay_view
        self.frames_to_relay: list[bytes] | None = [] if capture_frames else None
        self.progress = progress
        self.devices: dict[str, SimDevice] = {}
        self.links: dict[int, Link] = {}
        self.by_address: dict[tuple[str, int], SimDevice] = {}
        self.messages: dict[int, MessageState] = {}
        self._group_sends: dict[int, tuple[bytes, tuple[str, ...]]] = {}  # message id → (group id, members)
        self._group_parts_lost: dict[int, set[str]] = {}  # group message id → accounts a send to was lost
        self._tick_at: dict[str, float] = {}  # device → when its agent's next retry receipt is due
        self.envelope_message: dict[bytes, int] = {}
        self.last_delivery: dict[bytes, dict[str, Any]] = {}
        self.record_counts: dict[RecordKind, int] = {}  # by kind; named by value in the result
        self.undecryptable = 0
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)  # SimulationResult.refused
        self.duplicates_dropped = 0
        # per recipient device ("account/index"): envelopes the relay accepted for it, its acknowledgements,
        # and what it reported of those it could not read (SimulationResult.envelopes)
        # (_sent_to and _acked_by keyed by (account, index) on the hot path, named at the end)
        self._sent_to: dict[tuple[str | None, int | None], int] = {}
        self._forged_to: dict[str, int] = {}  # ... and those the relay forged (forge_envelope)
        self._acked_by: dict[tuple[str | None, int | None], int] = {}
        # per device, [duplicates dropped, refused, undecryptable] among the envelopes it acknowledged
        # (the relay's record of the acknowledgement, _ledger); what a device reported of an envelope
        # whose acknowledgement has not reached the relay waits here, by envelope id (its device's name,
        # which of the three): still queued at the end, it is counted unread alone (envelope_rows)
        self._outcomes: dict[str, list[int]] = {}
        self._unacked_outcomes: dict[bytes, tuple[str, int]] = {}
        self._agency_read: set[tuple[str, int]] = (
            set()
        )  # (an agency's device, a message it read): _agency_event
        self.deliveries = 0  # first reads of a message by one of its recipient devices, so far
        self.mismatched = 0
        self._next_conn = 1
        self._next_own_conn = OWN_CONNECTIONS  # interventions' own connections: intervention_connection
        self.defences = scenario.defences
        self._mailboxes = self.defences.mailboxes == "ephemeral"  # (fixed for the run: _app_send asks first)
        self.control: dict[str, int] = {
            "receipts_sent": 0,
            "receipts_received": 0,
            "cover_sent": 0,
            "fresh_connections": 0,
            "moves": 0,
        }
        self.receipts: Receipts[SimDevice] = Receipts(
            scenario,
            _seeded(seed, "receipts"),
            now=lambda: self.sched.now,
            at=lambda t, action: self.sched.at(t, action),
            send=self._send_receipt,
        )
        self._cover_rng = _seeded(seed, "cover")
        self._exit_rng = _seeded(seed, "exits")
        self._control_serial = 0
        self._control_copies: dict[bytes, tuple[object, ...]] = {}  # envelope id → its receipt/cover ref
        self._control_accepted: dict[tuple[object, ...], int] = {}  # ref → copies the relay accepted
        # ground truth of receipts and cover traffic: ref → (sender, recipient, kind), and when accepted
        self._control_route: dict[tuple[object, ...], tuple[str, str, str]] = {}
        self._control_truth: list[TrueControl] = []
        # "signed-devices" profiles: the primary's signature per companion (account, device).
        self.device_signatures: dict[tuple[str, int], bytes] = {}
        # Sync copies of 1:1 messages to the sender's own other devices: envelope id → message id.
        self.sync_message: dict[bytes, int] = {}
        self.synced: dict[
            int, dict[str, float]
        ] = {}  # message id → the sender's devices that read its copy, when
        # [defences] mailboxes = "ephemeral": sealed conversations' mailboxes, by account
        self.mailboxes: dict[str, SimDevice] = {}
        self._mailbox_of: dict[tuple[str, str], SimDevice] = {}  # (holder person, peer) → mailbox
        self._mailbox_waiting: dict[str, list[PlannedMessage]] = {}  # mailbox account → texts waiting
        self._mailbox_rng = _seeded(seed, "mailbox-exits")
        self._build_devices()
        # Devices added during the run (a ghost device), and the mandates every device follows.
        self.added_devices: dict[str, SimDevice] = {}
        self._escrow_mandate: EscrowPublicKey | None = None
        self._content_key_mandate: ContentKey | None = None
        # (key, relay time) of each global-key mandate: the desk holds the key from then on (provider.json)
        self.mandated_keys: list[tuple[ContentKey, float]] = []
        # [[groups]] where the relay has a part (server-side membership, encrypted group state).
        self.group_director = GroupDirector(
            self.sched,
            self.store,
            self.by_address,
            self._flush,
            server=self.profile.group_fanout == "server",
            encrypted_state=self.profile.group_state_encrypted,
            seed=scenario.seed,
        )
        # Key escrow, a global key, ghost devices and seized phones (sims.access).
        self.interventions = Interventions(self)
        self._intervening = bool(self.interventions)  # made from the scenario's events: fixed for the run

    # --- set-up -------------------------------------------------------------------------------

    def _relay_clock(self) -> float:
        return self.epoch + self.sched.now

    def _build_devices(self) -> None:
        sc = self.scenario
        trust_root = self.relay.trust_root_public
        tokens = {p.name: _seeded(sc.seed, "token", p.name).randbytes(32) for p in sc.people}
        # kem_key_cache: the people whose phones keep their last-resort decapsulation key, by contacts
        keeping: set[str] = set()
        if self.kem_keys is not None:  # (every run without it skips the sort)
            ranked = sorted(sc.people, key=lambda p: (-len(self.graph.get(p.name, ())), p.name))
            keeping = {p.name for p in ranked[: self._kem_key_cache]}
        for n, spec in enumerate(sc.devices()):
            rng = _seeded(sc.seed, "device", spec.name)
            draw: Callable[[int], bytes] = rng.randbytes
            registration_id = 0
            if self.compact_device_rng:  # the phone keeps a KeyStream, not its 2.5 KiB generator
                registration_id = rng.randrange(1, 16380)
                stream_seed = rng.randbytes(32)
                draw = KeyStream(stream_seed).randbytes
                if self.premade_keys and spec.index == 1:
                    self._stream_seeds[spec.name] = stream_seed
            device = Device(
                spec.person,
                spec.index,
                rng=draw,
                pq=True,
                deterministic=self.deterministic_kem,
                identity_policy=sc.defences.identity_changes,
            )
            agent = A.DeviceAgent(
                device,
                registration_id=registration_id or rng.randrange(1, 16380),
                delivery_token=tokens[spec.person],
                rng=draw,
                trust_root=trust_root,
                clock=self._relay_clock,
                tokens=tokens,
                content_key=self.content_key,
                # Simulated phones publish fewer one-time prekeys than real ones (Signal's
                # clients upload 100) and top up as real ones do: registration is most of a
                # phone's set-up cost here (XEdDSA signatures, ML-KEM key generation).
                prekey_batch=SIM_PREKEY_BATCH,
                kem_prekey_batch=self.kem_prekey_batch,
                # ... which is below the relay's prekeys_left mark (10), so that notice would make
                # every login upload, as live phones (PREKEY_BATCH keys) do not: they top up by
                # their own count alone (tests/sims/test_one_world.py compares the two).
                answer_prekeys_left=False,
                padding=self.padding,
                unauthenticated_fetch=sc.defences.bundle_fetch == "unauthenticated",
                identity_model=self.profile.identity_model,
                key_verification=sc.defences.key_verification == "on",
                # Sync copies of 1:1 messages to the account's other devices, wherever it has any (its
                # linked devices, or a ghost), as Signal's, WhatsApp's and iMessage's clients send them;
                # the ground truth tells them apart (TrueControl "sync copy"), as it does receipts.
                sync_copies=True,
                key_transparency=sc.defences.key_transparency,
                **registered_facts(sc.seed, spec),
                group_fanout=self.profile.group_fanout,
            )
            self._link_identity(device)
            if spec.person in keeping:
                device.secrets.kem.cache = self.kem_keys
            # "signed-devices": the primary signed it when linking; it registers with the signature
            agent.device_signature = self.device_signatures.get((spec.person, spec.index))
            d = SimDevice(spec, agent, port=40000 + n % 20000)
            self.devices[spec.name] = d
            self.by_address[(spec.person, spec.index)] = d

    def _link_identity(self, device: Device) -> None:
        """Linking a companion device, per the profile's identity model (relay.profiles): under
        "account" it receives the account's identity key from the primary (Signal's provisioning);
        under "signed-devices" the primary signs the companion's own key (WhatsApp's device list)."""
        account, index = device.address.account, device.address.device
        primary = self.by_address.get((account, 1))
        if index == 1 or primary is None:
            return
        model = self.profile.identity_model
        if model == "account":
            device.secrets = PreKeySecrets(primary.agent.device.secrets.identity)
        elif model == "signed-devices":
            rng = _seeded(self.scenario.seed, "device-list", account, str(index))
            self.device_signatures[(account, index)] = A.sign_device(
                primary.agent.device, device.identity_key, rng.randbytes
            )

    def _schedule(self) -> None:
        sc = self.scenario
        setup = _seeded(sc.seed, "setup")
        starts = []
        for d in self.devices.values():
            # primaries first; a linked device waits for its primary (see _come_online)
            start = setup.random() * SETUP_SPREAD + (0.0 if d.spec.index == 1 else SETUP_SPREAD)
            self.sched.at(start, self._come_online, d, True)
            starts.append((start, d.name))
        if self._stream_seeds:
            self._start_premade(starts)
        self.timeline.schedule_events()
        for at, device, address in plan_moves(sc):
            if device in self.devices and at < sc.duration:
                self.sched.at(at, self._move, self.devices[device], address)
        if sc.defences.cover_per_hour > 0:
            for d in self.devices.values():
                if d.spec.index == 1:
                    self.sched.at(self._cover_gap(), self._cover, d)
        device_names = {p.name: tuple(d.name for d in p.devices) for p in sc.people}
        plan = plan_messages(sc, self.graph)
        for m in plan:
            self.messages[m.id] = MessageState(m, device_names[m.recipient])
        # (as timeline.schedule_messages would, one event per message, but handed to the heap one at a
        # time: the plan is in time order, and at scale the scheduled copies were a quarter of a GB)
        self.sched.stream(plan, _planned_at, self._app_send)
        self._plan = plan  # (for _ask_session_ahead: plan[i] has id i + 1)
        self._schedule_groups(len(plan), device_names)
        self._transcribe_traits()

    def _start_premade(self, starts: list[tuple[float, str]]) -> None:
        """The worker that makes the phones' registration keys, in the order they come online (by
        start time, ties in scheduling order: the heap's)."""
        seeds, self._stream_seeds = self._stream_seeds, {}
        jobs = []
        for _start, name in sorted(starts, key=lambda s: s[0]):
            seed = seeds.get(name)
            if seed is not None:
                d = self.devices[name]
                jobs.append((name, d.spec.person, d.spec.index, seed))
        self._premade = PremadeSource(jobs, SIM_PREKEY_BATCH, self.kem_prekey_batch)
        # The relay takes the worker's checks of the registrations' signatures (made with its own
        # function, held under their whole input) instead of making them again, until the run ends.
        self._verified_before = use_verified_ahead(self._premade.verified)

    def _register(self, d: SimDevice) -> None:
        """The phone publishes its keys (``DeviceAgent.register``), with the worker's table if it came."""
        premade = self._premade
        if premade is None or d.spec.index != 1:
            d.agent.register()
            return
        secrets = d.agent.device.secrets
        secrets.premade = table = premade.take(d.name, wait=self._premade_wait)
        try:
            d.agent.register()
        finally:
            secrets.premade = None
        if table is not None:
            premade.used(table)

    def _close_premade(self) -> None:
        if self._premade is not None:
            use_verified_ahead(self._verified_before)
            self.premade_stats = self._premade.close()
            self._premade = None

    def _schedule_groups(self, last_id: int, device_names: dict[str, tuple[str, ...]]) -> None:
        """[[groups]]: each group message is planned like any other (ids after the 1:1 messages); its
        recipients are every device of every member when it is written, the sender's own other devices
        included (their sync copy). A member who leaves forgets the group's sender keys."""
        next_id = last_id
        for g in self.scenario.groups:
            gid = group_distribution_id(g.name)
            self.group_director.schedule(g, gid)
            # Members as the timeline stands when each message is written, in the file's order: a message
            # and a leave at the same moment happen in the order the timeline gives them (as they are run).
            current = set(g.members)
            for c in g.timeline:
                if c.kind == "join":
                    current.add(c.person)
                if c.kind == "leave":
                    current.discard(c.person)
                    for d in [d for d in self.devices.values() if d.spec.person == c.person]:
                        self.sched.at(c.at, d.agent.leave_group, gid)
                    continue
                if c.kind != "message":
                    continue
                next_id += 1
                m = PlannedMessage(next_id, c.at, c.person, f"{GROUP_PREFIX}{g.name}", c.text)
                members = tuple(sorted(current))
                recipients = tuple(n for a in members for n in device_names[a] if n != f"{c.person}/1")
                self.messages[m.id] = MessageState(m, recipients)
                self._group_sends[m.id] = (gid, members)
                self.sched.at(m.at, self._app_send, m)

    def _transcribe_traits(self) -> None:
        """Ground truth of ``[generate] organisations``: who was given which sensitive trait (and the
        organisation they contact for it), for the scoring of sims.analysis.traits."""
        if not self.transcribing:
            return
        for person, traits in sorted(organisation_traits(self.scenario).items()):
            for kind, org in sorted(traits.items()):
                self.emit(
                    {"t": 0.0, "kind": "trait_assigned", "person": person, "trait": kind, "organisation": org}
                )

    # --- what the timeline asks (sims.world.Driver) -----------------------------------------------

    def now(self) -> float:
        return self.sched.now

    def relay_time(self, t: float) -> float:
        return self.epoch + t

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.sched.at(t, action)

    def go_offline(self, device: str, why: str) -> None:
        d = self.devices.get(device)
        if d is not None:
            self._go_offline(d, why)

    def come_online(self, device: str) -> None:
        d = self.devices.get(device)
        if d is not None:
            self._come_online(d, False)

    def app_send(self, message: PlannedMessage) -> None:
        self._app_send(message)

    def preserve(self, account: str, since: float) -> None:
        self.relay.preserve(account, since)

    def add_tap(self, tap: Tap) -> None:
        self.relay.add_tap(tap)

    def remove_tap(self, tap_id: str) -> None:
        self.relay.remove_tap(tap_id)

    def intervene(self, index: int, event: TimelineEvent) -> None:
        if isinstance(event, VerifySafetyNumber):
            self._verify_safety_number(event.who, event.whom)
            return
        self.interventions.on_event(index, event)

    # --- what interventions may do (sims.access) ---------------------------------------------------

    @property
    def open_orders(self) -> Mapping[str, LegalProcess]:
        """The forward-looking orders still running, by name (a read-only view)."""
        return self.timeline.open_orders

    @property
    def disclosures(self) -> list[Disclosure]:
        return self.timeline.disclosures

    def _every_device(self) -> list[SimDevice]:
        return [*self.devices.values(), *self.added_devices.values()]

    def mandate_escrow(self, public: EscrowPublicKey) -> int:
        """A key-escrow mandate: every device, and every device added later, seals its message keys
        to ``public`` from now on. Returns how many devices it reached."""
        self._escrow_mandate = public
        for d in self._every_device():
            d.agent.comply_with_escrow(public)
        return len(self._every_device())

    def mandate_content_key(self, key: ContentKey) -> int:
        """A global-key mandate: every device, and every device added later, seals bodies under ``key``
        from now on, and the provider's compliance desk holds it. Returns how many devices it reached."""
        self._content_key_mandate = key
        self.mandated_keys.append((key, self.epoch + self.sched.now))
        for d in self._every_device():
            d.agent.use_content_key(key)
        self.desk.hold_content_key(key)
        return len(self._every_device())

    def add_device(self, spec: DeviceSpec, agent: A.DeviceAgent, *, registered: bool = True) -> SimDevice:
        """Add a device the relay has already registered (a ghost device), under the mandates in force;
        ``start_device`` brings it online. ``registered=False``: a new account's phone (the agency's,
        sims.access.ghost_participant) that ``start_device`` connects, registers on that connection and,
        once the relay answers, logs in on the same one, as every phone does (its ``Registered`` reported
        like any phone's, to the interventions first)."""
        if spec.name in self.devices or spec.name in self.added_devices:
            raise ValueError(f"device {spec.name} is already in the simulation")
        if self._escrow_mandate is not None:
            agent.comply_with_escrow(self._escrow_mandate)
        if self._content_key_mandate is not None:
            agent.use_content_key(self._content_key_mandate)
        d = SimDevice(spec, agent, port=39000 + len(self.added_devices))
        d.registered = registered
        self.added_devices[spec.name] = d
        return d

    def forge_envelope(
        self, to: tuple[str, int], body: bytes, *, sealed: bool, source: tuple[str, int] | None = None
    ) -> bytes:
        """The relay queues (and pushes) an envelope no device sent (``RelayCore.forge_envelope``)."""
        envelope_id, pushes = self.relay.forge_envelope(
            to[0],
            to[1],
            body,
            sealed=sealed,
            source_account=None if source is None else source[0],
            source_device=None if source is None else source[1],
        )
        name = f"{to[0]}/{to[1]}"  # queued for that device as a send is, with no send record: counted here
        self._forged_to[name] = self._forged_to.get(name, 0) + 1
        self._relay_outputs(list(pushes))
        return envelope_id

    def start_device(self, name: str) -> None:
        """Bring a device added during the run online: it logs in, or, not registered yet (the first of a
        new account), registers and then logs in, on one connection."""
        self._come_online(self.added_devices[name], False)

    def device_ready(self, name: str) -> bool:
        """Whether the phone ``name`` is online and logged in (its requests can go now)."""
        d = self.devices.get(name) or self.added_devices.get(name)
        return d is not None and d.online and d.agent.authenticated

    def relay_outputs(self, outputs: Sequence[Reply | Push | MetadataRecord], /) -> None:
        """What the relay made of a request an intervention carried to it on a connection of its own (the
        key-transparency witness's connection and consistency requests, sims.access.key_transparency):
        its records counted with every
        other (SimulationResult.relay_records, ``relay_view``); a reply on a connection no device's link
        holds goes nowhere (the intervention reads it itself)."""
        self._relay_outputs(list(outputs))

    def intervention_connection(self) -> int:
        """An id for a connection an intervention opens to the relay itself (a key-transparency witness's,
        sims.access.key_transparency): ``OWN_CONNECTIONS``, then the next, in the order they are asked for
        (the run's, so deterministic), apart from the phones' (from 1): no two share one."""
        conn, self._next_own_conn = self._next_own_conn, self._next_own_conn + 1
        return conn

    def flush_device(self, name: str) -> None:
        """Carry what an intervention asked of the phone ``name``'s agent (its outbox) to the relay."""
        d = self.devices.get(name) or self.added_devices.get(name)
        if d is not None:
            self._flush(d)

    # --- connections ----------------------------------------------------------------------------

    def _offline_now(self, d: SimDevice) -> bool:
        t = self.sched.now
        return any(start <= t < end for start, end in d.spec.offline)

    def _open(self, d: SimDevice, fresh: bool = False) -> Link:
        if fresh:
            # a proxy's or Tor-like exit: an address many people share, a port of its own
            host = f"185.220.101.{self._exit_rng.randrange(1, 65)}"
            link = Link(
                ConnectionContext(self._next_conn, (host, self._exit_rng.randrange(1024, 65536))),
                d,
                fresh=True,
                extra=self.defences.exit_latency_ms / 1000,
            )
            self.control["fresh_connections"] += 1
        else:
            link = Link(ConnectionContext(self._next_conn, (d.spec.address, d.port)), d)
        self._next_conn += 1
        self.links[link.ctx.id] = link
        self._relay_outputs(self.relay.connect(link.ctx))
        return link

    def _close(self, link: Link) -> None:
        link.open = False
        self._relay_outputs(self.relay.disconnect(link.ctx))
        self.links.pop(link.ctx.id, None)

    def _come_online(self, d: SimDevice, first: bool) -> None:
        if d.online or (first and self._offline_now(d)):
            return
        if not d.registered and d.spec.index != 1:
            # A linked device registers over its primary's authenticated connection (as Signal's
            # primary provisions a new device), then opens its own connection.
            primary = self.by_address[(d.spec.person, 1)]
            if not (primary.registered and primary.online and primary.agent.authenticated):
                self.sched.after(5.0, self._come_online, d, first)
                return
            self._register(d)
            for frame in d.agent.take_outbox():
                self._to_relay(primary, frame, owner=d)
            return
        d.conn = self._open(d)
        d.online = True
        self.emit({"t": self.sched.now, "kind": "device_online", "device": d.name})
        if d.registered:
            d.agent.login()
        else:
            self._register(d)
        self._flush(d)
        self._mailboxes_online(d)

    def _go_offline(self, d: SimDevice, why: str) -> None:
        if not d.online or d.conn is None:
            return
        d.online = False
        for link in (d.conn, d.anon):
            if link is not None:
                self._close(link)
        d.conn = d.anon = None
        d.agent.connection_lost()
        self._mailboxes_offline(d)
        self.emit({"t": self.sched.now, "kind": "device_offline", "device": d.name, "why": why})

    # --- frames -------------------------------------------------------------------------------

    def _flush(self, d: SimDevice) -> None:
        agent = d.agent
        outbox = agent.take_outbox()
        if outbox:
            for frame in outbox:
                self._to_relay(d, frame)
        due = agent.retry_due()
        if due is None:
            return
        due -= self.epoch  # the agent's clock is the relay's (Unix seconds); the heap's is from 0
        if due < self._tick_at.get(d.name, math.inf):
            # the agent's retry receipts (clients.agent): wake it when the next one is due
            self._tick_at[d.name] = due
            self.sched.at(max(due, self.sched.now), self._tick, d, due)

    def _tick(self, d: SimDevice, due: float) -> None:
        if self._tick_at.get(d.name) != due:
            return  # superseded by an earlier wake-up
        del self._tick_at[d.name]
        if d.online and d.agent.authenticated:
            d.agent.tick()
            self._flush(d)

    def _to_relay(self, d: SimDevice, frame: wire.Request, owner: SimDevice | None = None) -> None:
        """Carry a frame from device ``d`` to the relay; ``owner`` gets the answer (default ``d``)."""
        owner = owner or d
        cls = type(frame)  # the agents build frames of wire's own classes, never of subclasses
        unauthenticated = cls is wire.SealedSend or (
            type(frame) is wire.FetchBundle and frame.delivery_token is not None and d.agent.authenticated
        )
        if unauthenticated and self.defences.sealed_connection == "fresh" and d.online:
            link: Link | None = self._open(d, fresh=True)  # one connection per request, from an exit
        elif unauthenticated:
            # Sealed sends (and bundle fetches with a delivery token) go over a connection that never
            # authenticates, as Signal's do: the relay sees the network address but not the account.
            if d.anon is None and d.online:
                d.anon = self._open(d)
            link = d.anon
        else:
            link = d.conn
        if link is None:
            return
        data = wire.encode(frame)
        if self._ahead is not None and cls is wire.Send:
            self._ask_ahead(d, cast(wire.Send, frame))
        if self.transcribing and isinstance(
            frame, wire.GetKeyLogHead | wire.GetKeyLogEntries | wire.GetKeyLogConsistency
        ):
            # key transparency over the wire: what the phone asked the relay's log (sims.access.key_transparency)
            asked = {f.name: getattr(frame, f.name) for f in fields(frame) if f.name != "id"}
            self.emit(
                {
                    "t": self.sched.now,
                    "kind": "key_log_request",
                    "device": owner.name,
                    "request": frame.kind,
                    **asked,
                }
            )
        sched = self.sched
        if cls not in _CARRY_ENVELOPES:
            # a control frame on a connection that retransmits: one copy, only delayed
            delay = self.net.reliable(d.spec.region, self.relay_region, sched.now)
            sched.at(sched.now + (delay + link.extra_latency), self._relay_receive, link, data, owner, None)
            return
        ref = owner.agent.message_ref(frame.id)
        delays = self.net.transit(d.spec.region, self.relay_region, sched.now)
        if not delays and isinstance(ref, int) and ref in self._group_sends:
            # one account's part of a group message, or a resend to it (or, server-side fan-out, the
            # one group send for all: GROUP_SEND_LOST): accounted per device at the end
            to = frame.to if isinstance(frame, wire.Send | wire.SealedSend) else GROUP_SEND_LOST
            self._group_parts_lost.setdefault(ref, set()).add(to)
        elif not delays and isinstance(ref, int):
            self._lost(ref, "the network lost the send")
        for delay in delays:
            sched.at(sched.now + (delay + link.extra_latency), self._relay_receive, link, data, owner, ref)

    def _ask_ahead(self, d: SimDevice, frame: wire.Send) -> None:
        """Ask the worker now for what the recipient's phones will compute to read ``frame``
        (``sims.world.ahead``): its answers are the same bytes the phones would compute."""
        assert self._ahead is not None
        sender = PeerAddress(d.spec.person, d.spec.index)
        jobs: list[tuple[Any, ...]] = []
        for env in frame.envelopes:
            r = self.by_address.get((frame.to, env.device))
            if r is None:
                continue
            device = r.agent.device
            peek = _peek(device)
            jobs += device.exchanges_ahead(sender, env.body, peek)
            jobs += r.agent.top_up_ahead(env.body, peek)  # (its stock of one-time prekeys runs low)
        self._ahead.ask(jobs)

    def _ask_bundle_ahead(self, d: SimDevice, frame: wire.Bundle) -> None:
        """Ask the worker now for what phone ``d`` will compute when ``frame`` reaches it and it
        starts its sessions (``DeviceAgent.bundle_exchanges_ahead``), but what was asked already
        (``_ask_session_ahead``)."""
        assert self._ahead is not None
        self._ahead.ask(d.agent.bundle_exchanges_ahead(frame, _peek(d.agent.device)), new_only=True)

    def _ask_session_ahead(self, m: PlannedMessage) -> None:
        """Ask the worker now, SESSION_LOOKAHEAD planned messages before ``m`` is written, for what
        the sessions it will start (if its sender has none with the recipient's phones) will
        compute (``Device.session_exchanges_ahead``): the bundle's two signature checks, X3DH's
        exchanges on Alice's side but the one with the one-time prekey, PQXDH's encapsulation, the
        ratchet's first key pair and exchange, from the keys the recipient's phones publish
        (``_published_bundle``) and the sender's next draws as if it drew nothing before then.
        Asked only when the relay's bundle comes (``_ask_bundle_ahead``, which then asks only what
        was not asked here), most came back too late: a phone starts its session the moment the
        bundle reaches it. A guess: a session made by then, a draw in between or keys changed
        since leave answers nobody takes."""
        assert self._ahead is not None
        d = self.by_address.get((m.sender, 1))
        if d is None or d.agent.content_key is not None:
            return
        device = d.agent.device
        peek = _peek(device)
        jobs: list[tuple[Any, ...]] = []
        index = draw = 0
        while (r := self.by_address.get((m.recipient, index + 1))) is not None:
            index += 1
            if not r.registered or device.has_session(PeerAddress(m.recipient, r.spec.index)):
                continue
            bundle = self._published_bundle(r)
            if bundle is None:
                continue
            more, used = device.session_exchanges_ahead(bundle, peek, draw)
            jobs += more
            draw += used
        self._ahead.ask(jobs, new_only=True)

    def _published_bundle(self, r: SimDevice) -> PreKeyBundle | None:
        """The bundle of phone ``r`` without a one-time prekey, for ``_ask_session_ahead``'s guess. A
        phone holding only its last-resort KEM prekey (a scale run's) would make that key's 1568-byte
        public key again from its seed to say it (``KemPreKeys``: FIPS 203 key generation, ~0.15 ms in
        the simulation's process, about what the signature check and encapsulation asked ahead with
        it save there); the relay has it, uploaded at registration, in the row the bundle it will hand
        out is read from when it holds no one-time KEM prekey (``Store.device``), so it comes from there."""
        secrets = r.agent.device.secrets
        if len(secrets.kem) != 1:
            try:
                return secrets.bundle(one_time=False)
            except UsageError:
                return None
        address = r.agent.device.address
        record = self.store.device(address.account, address.device)
        if record is None:
            return None
        spk, kem = record.signed_prekey, record.last_resort_kem_prekey
        return PreKeyBundle(
            record.identity_key,
            SignedPreKey(spk.id, spk.public, spk.signature),
            None,
            KemPreKey(kem.id, kem.public, kem.signature, last_resort=True),
        )

    def _relay_receive(self, link: Link, data: bytes, owner: SimDevice, ref: object) -> None:
        if not link.open:
            if isinstance(ref, int) and ref not in self._group_sends:
                # (a group message's part is sent again after the next login: DeviceAgent.connection_lost)
                self._lost(ref, "the connection closed while the send was in flight")
            return
        if self.frames_to_relay is not None:
            self.frames_to_relay.append(data)
        frame = _relay_reads(data)
        outputs = self.relay.handle(link.ctx, frame)
        cls = type(frame)  # decoded: always one of wire's own classes
        if cls is wire.GroupSend and isinstance(ref, int):  # server-side fan-out
            for o in outputs:
                if isinstance(o, Reply) and isinstance(o.frame, wire.GroupSent):
                    self._group_fanned_out(ref, o.frame.envelope_ids, outputs)
        if cls in _SENDS:
            for o in outputs:
                if type(o) is Reply and type(o.frame) is wire.Sent:
                    if isinstance(ref, int):
                        self._accepted(ref, o.frame.envelope_ids, outputs)
                    elif isinstance(ref, tuple) and ref[:1] == ("sync",):  # a sync copy to one's own devices
                        self._control_accepted[ref] = self._control_accepted.get(ref, 0) + 1
                        if self._control_accepted[ref] == 1:
                            # ground truth: an envelope nobody wrote to anyone, from the person to themself
                            own = (owner.spec.person, owner.spec.person, "sync copy")
                            self._control_truth.append(TrueControl(self._relay_clock(), *own))
                            if self.transcribing:
                                self._transcribe_control(own, outputs)
                        for eid in o.frame.envelope_ids:
                            self._control_copies[eid] = ref  # so a duplicated copy counts as one
                            if isinstance(ref[1], int):
                                self.sync_message[eid] = ref[1]
                    elif isinstance(ref, tuple):  # a receipt or cover message
                        self._control_accepted[ref] = self._control_accepted.get(ref, 0) + 1
                        route = self._control_route.get(ref)
                        if route is not None and self._control_accepted[ref] == 1:
                            self._control_truth.append(TrueControl(self._relay_clock(), *route))
                            if self.transcribing:
                                self._transcribe_control(route, outputs)
                        for eid in o.frame.envelope_ids:
                            self._control_copies[eid] = ref
                    if self._intervening:
                        assert isinstance(frame, _SENDS)  # (cls is one of them)
                        self.interventions.on_accepted(owner, frame, tuple(o.frame.envelope_ids))
        self._relay_outputs(outputs, owner)

    def _relay_outputs(
        self, outputs: list[Reply | Push | MetadataRecord], owner: SimDevice | None = None
    ) -> None:
        links = self.links
        counts = self.record_counts
        plain = self.relay_view is None and not self.transcribing  # only counted (_count_record)
        for o in outputs:
            # relay.core's own classes (relay.core.Output), never subclassed: no isinstance chain
            if type(o) is MetadataRecord:
                if plain:
                    kind = o.kind
                    counts[kind] = counts.get(kind, 0) + 1
                    if kind in _LEDGER_KINDS:
                        self._ledger(o)
                else:
                    self._count_record(o)
                continue
            if type(o) is Reply:
                link = links.get(o.connection)
                if link is not None:
                    if self._ahead is not None and type(o.frame) is wire.Bundle:
                        self._ask_bundle_ahead(owner or link.device, o.frame)
                    self._to_device(owner or link.device, link, o.frame, push=False)
            elif type(o) is Push:
                link = links.get(o.connection)
                if link is not None:
                    self._to_device(link.device, link, o.frame, push=True)

    def _ledger(self, r: MetadataRecord) -> None:
        if r.kind is RecordKind.ACKNOWLEDGEMENT:
            key, tally = (r.account, r.device), self._acked_by
            if self._unacked_outcomes and r.envelope_id is not None:
                reported = self._unacked_outcomes.pop(r.envelope_id, None)
                if reported is not None:
                    name, which = reported
                    row = self._outcomes.get(name)
                    if row is None:
                        row = self._outcomes[name] = [0, 0, 0]
                    row[which] += 1
        else:
            key, tally = (r.recipient_account, r.recipient_device), self._sent_to
        tally[key] = tally.get(key, 0) + 1

    def _outcome(self, d: SimDevice, which: int, envelope_id: bytes) -> None:
        """What ``d`` reported of the envelope ``envelope_id`` it did not read (``which``: 0 a duplicate
        dropped, 1 refused, 2 undecryptable), counted once the relay records its acknowledgement
        (_ledger): one report an envelope, the device's last before its acknowledgement."""
        self._unacked_outcomes[envelope_id] = (d.name, which)

    def _count_record(self, r: MetadataRecord) -> None:
        counts = self.record_counts
        counts[r.kind] = counts.get(r.kind, 0) + 1
        if r.kind in _LEDGER_KINDS:
            self._ledger(r)
        if self.relay_view is not None:
            self.relay_view(r)
        if self.transcribing and r.kind is RecordKind.DELIVERY and r.envelope_id is not None:
            self.last_delivery[r.envelope_id] = record_view(r, self.epoch)

    def _to_device(self, d: SimDevice, link: Link, frame: wire.Response, *, push: bool) -> None:
        # Frames toward devices travel as the objects the relay core built: they are valid by
        # construction, nothing in the simulation inspects their bytes, and encoding and
        # decoding them again would double the cost of the wire format. (Frames toward the
        # relay are carried as bytes and decoded by the relay, which must never trust a device.)
        sched = self.sched
        if push:
            delays = self.net.transit(self.relay_region, d.spec.region, sched.now)
            if not delays:  # lost push: the envelope stays queued; the app receives again later
                sched.at(sched.now + REDELIVERY_DELAY, self._poll, d)
                return
            delay = delays[0]
        else:
            delay = self.net.reliable(self.relay_region, d.spec.region, sched.now)
        sched.at(sched.now + (delay + link.extra_latency), self._device_receive, d, link, frame)

    def _poll(self, d: SimDevice) -> None:
        if d.online and d.agent.authenticated:
            d.agent.receive()
            self._flush(d)

    def _device_receive(self, d: SimDevice, link: Link, frame: wire.Response) -> None:
        if not link.open and not isinstance(frame, wire.Registered):
            return  # arrived after the connection closed
        for event in d.agent.handle(frame):
            self._agent_event(d, event)
        if link.fresh and link.open:
            self._close(link)  # the exit's connection served its one request
        self._flush(d)

    # --- what the devices report ------------------------------------------------------------------

    def _agent_event(self, d: SimDevice, event: A.AgentEvent, box: SimDevice | None = None) -> None:
        """What ``d``'s agent reports. ``box``: the mailbox whose agent reported it, for its holder ``d``
        (``_mailbox_event``); what it could not read is counted under the mailbox, the device the relay
        queued it for (SimulationResult.envelopes), the rest as its holder's."""
        if d.holder is not None:
            self._mailbox_event(d, event)
            return
        if self._intervening and self.interventions.on_agent_event(d, event):
            # an intervention's: its agency device's counted as a person's would be; a person's phone's
            # (a relay's forgery it read: sims.access.identity_swap) is the intervention's alone
            if (box or d).name in self.interventions.agency_devices():
                self._agency_event(box or d, event)
            return
        # clients.agent's own event classes, never subclassed: the common cases first, by their exact
        # type, then the same chain as before
        if type(event) is A.Accepted:
            return  # the relay's word reached the phone; the simulation counted it when the relay took it
        if type(event) is A.Received:
            if self._received(d, event, box):
                self._after_delivery(d, event)
            return
        t = self.sched.now
        if isinstance(event, A.GroupMembershipChanged):
            self.emit(
                {
                    "t": t,
                    "kind": "group_membership_changed",
                    "device": d.name,
                    "group": event.group.hex(),
                    "added": list(event.added),
                    "removed": list(event.removed),
                    "shown_to_user": event.shown,
                }
            )
        elif isinstance(event, A.GroupUpdated):
            pass  # the change the phone asked for; the relay's list shows it (group_membership_changed)
        elif isinstance(event, A.IdentityChanged):
            self._identity_changed(d, event)
        elif isinstance(event, A.SentTranscript):
            mid = self.sync_message.get(event.envelope_id)
            state = self.messages.get(mid) if mid is not None else None
            if state is not None:
                # (its destination is the account it went to: under mailboxes = "ephemeral", the peer's mailbox)
                if event.plaintext != state.planned.text.encode():
                    self.mismatched += 1
                self.synced.setdefault(state.planned.id, {}).setdefault(d.name, t)
            if self.transcribing:
                self.emit(
                    {
                        "t": t,
                        "kind": "sync_copy_received",
                        "device": d.name,
                        "from": f"{event.sender.account}/{event.sender.device}",
                        "message": mid,
                        "to": event.destination,
                        "plaintext": event.plaintext.decode("utf-8", "replace"),
                    }
                )
        elif isinstance(event, A.DeviceListChanged):
            self.emit(
                {
                    "t": t,
                    "kind": "device_list_changed",
                    "device": d.name,
                    "account": event.account,
                    "added": list(event.added),
                    "removed": list(event.removed),
                    "identity_changed": list(event.identity_changed),
                }
            )
        elif isinstance(event, A.KeyLogChecked):
            self.emit(
                {
                    "t": t,
                    "kind": "key_log_checked",
                    "device": d.name,
                    "account": event.account,
                    "tree_size": event.tree_size,
                    "logged": list(event.logged),
                    "unlogged": list(event.unlogged),
                    "refused": event.reason,
                }
            )
        elif isinstance(event, A.Registered):
            d.registered = True
            if d.spec.index != 1:  # a linked device now opens its own connection
                primary = self.by_address.get((d.spec.person, 1))
                if primary is not None:
                    primary.agent.linked_devices_known()  # it linked this one: sync copies from now on
                self._come_online(d, False)
                return
            d.agent.login()
        elif isinstance(event, A.LoggedIn):
            if self.sealed:
                d.agent.request_certificate()
            if not d.contacts_uploaded and d.spec.index == 1 and self.contacts.get(d.spec.person):
                # the app looks up the address book once, as messengers do at install time
                d.agent.discover_contacts(self.contacts[d.spec.person])
                d.contacts_uploaded = True
            d.agent.receive()
            backlog, d.pending_app = d.pending_app, []
            for m in backlog:
                self._app_send(m)
            receipts, d.pending_receipts = d.pending_receipts, []
            for to, stamps, kind in receipts:
                self._send_receipt(d, to, stamps, kind)
        elif isinstance(event, A.Received):
            if self._received(d, event, box):
                self._after_delivery(d, event)
        elif isinstance(event, A.ReceiptReceived):
            self.control["receipts_received"] += 1
            if self.transcribing:
                self.emit(
                    {
                        "t": t,
                        "kind": "receipt_received",
                        "device": d.name,
                        "from": f"{event.sender.account}/{event.sender.device}",
                        "receipt": event.kind,
                        "for_ms": list(event.timestamps),
                        "sealed": event.sealed,
                    }
                )
        elif isinstance(event, A.Duplicate | A.Undecryptable):
            mid = self.envelope_message.get(event.envelope_id)
            # the device that could not read it, as counted (a mailbox on ``d``, or ``d``)
            reader = (box or d).name
            if self._read_already(d, event, mid):
                self.duplicates_dropped += 1  # the network duplicated the send: a second copy
                self._outcome(box or d, 0, event.envelope_id)
                self.emit({"t": t, "kind": "duplicate_dropped", "device": reader, "message": mid})
            else:
                record = {"t": t, "kind": "undecryptable", "device": reader, "message": mid}
                reason = A.refusal(event) if isinstance(event, A.Undecryptable) else None
                if reason is not None:
                    self.refused[reason] += 1
                    record["reason"] = reason  # it opened: refused for its identity key, or a self-send
                    self._outcome(box or d, 1, event.envelope_id)
                else:
                    self.undecryptable += 1
                    self._outcome(box or d, 2, event.envelope_id)
                self.emit(record)
        elif isinstance(event, A.Failed):
            if isinstance(event.ref, int):
                self._lost(event.ref, f"refused: {event.code}: {event.message}")
            self.emit(
                {"t": t, "kind": "failure", "device": d.name, "code": event.code, "message": event.message}
            )

    def _agency_event(self, d: SimDevice, event: A.AgentEvent) -> None:
        """A ghost device's report, its intervention's (sims.access): its envelopes counted as the people's
        are (SimulationResult.envelopes, the agency's) and transcribed as theirs, one record for each it
        did not read, by the same rules (_read_already, _received), its first read of a message standing
        for a person's delivery: a copy of a message it read already (``A.Duplicate`` or
        ``A.Undecryptable``: _read_already) or decrypted a second time (``A.Received``), a
        ``duplicate_dropped``; any other that did not open or opened and was refused, an ``undecryptable``
        (with the ``reason`` of a refusal). Its first read of each message is its intervention's
        (``ghost_read``), counted delivered; a decrypted envelope of no planned message, or a plaintext
        other than the one planned, is counted ``mismatched``, as a person's is."""
        if not isinstance(event, A.Received | A.Duplicate | A.Undecryptable):
            return
        mid = self.envelope_message.get(event.envelope_id)
        record: dict[str, Any] = {
            "t": self.sched.now,
            "kind": "duplicate_dropped",
            "device": d.name,
            "message": mid,
        }
        if isinstance(event, A.Received):
            state = self.messages.get(mid) if mid is not None else None
            if state is None:  # as _received counts a person's: a bug in the simulation
                self.mismatched += 1
                return
            if (d.name, state.planned.id) not in self._agency_read:
                if event.plaintext != state.planned.text.encode():
                    self.mismatched += 1
                self._agency_read.add((d.name, state.planned.id))
                return
            self._outcome(d, 0, event.envelope_id)  # read again: acknowledged, and counted as a duplicate
        elif self._read_already(d, event, mid):
            self._outcome(d, 0, event.envelope_id)
        else:
            record["kind"] = "undecryptable"
            reason = A.refusal(event) if isinstance(event, A.Undecryptable) else None
            if reason is not None:
                record["reason"] = reason  # it opened: refused for its identity key, or a self-send
                self._outcome(d, 1, event.envelope_id)
            else:
                self._outcome(d, 2, event.envelope_id)
        self.emit(record)

    def read_already(self, device: str, event: A.Duplicate | A.Undecryptable) -> bool:
        """Whether the envelope the phone ``device`` could not read carried what it had read already, so is
        counted as a duplicate dropped (_read_already): for an intervention counting its own device's."""
        d = self.devices.get(device) or self.added_devices[device]
        return self._read_already(d, event, self.envelope_message.get(event.envelope_id))

    def _read_already(self, d: SimDevice, event: A.Duplicate | A.Undecryptable, mid: int | None) -> bool:
        """Whether an envelope ``d`` could not read carried what it had read already, so is counted as a
        duplicate dropped: as the world knows it for a planned message (``d`` read it: a person's device
        delivered it, an agency's read it first, _agency_event) or a receipt or cover message (the relay
        accepted it more than once), whatever the device made of it (a copy on a receiving chain it no
        longer holds is ``A.Undecryptable``; a message whose skipped key it dropped, never read, is
        ``A.Duplicate``); for any other envelope (a sender key handout, a sync copy, an intervention's),
        as the device reports it (``A.Duplicate``: by its header, a copy of a message it read).
        sims/live.py counts the same way."""
        if mid is not None:
            return d.name in self.messages[mid].delivered or (d.name, mid) in self._agency_read
        control = self._control_copies.get(event.envelope_id)
        if control is not None:
            return self._control_accepted.get(control, 0) > 1
        return isinstance(event, A.Duplicate)

    def _received(self, d: SimDevice, ev: A.Received, box: SimDevice | None = None) -> bool:
        """Account for a message a device decrypted; True the first time this device gets it (``box``: the
        mailbox on ``d`` that read it, under which a copy read again is counted)."""
        mid = self.envelope_message.get(ev.envelope_id)
        state = self.messages.get(mid) if mid is not None else None
        if state is None:
            # a duplicate envelope of a message already delivered on this device is rejected by the
            # ratchet before it gets here; anything else is a bug in the simulation
            self.mismatched += 1
            return False
        if d.name in state.delivered:
            self.duplicates_dropped += 1
            # counted as a duplicate once acknowledged (SimulationResult.envelopes)
            self._outcome(box or d, 0, ev.envelope_id)
            # transcribed as _agent_event transcribes a copy the ratchet refused: one record a duplicate
            self.emit(
                {"t": self.sched.now, "kind": "duplicate_dropped", "device": (box or d).name, "message": mid}
            )
            return False
        if ev.plaintext != state.planned.text.encode():
            self.mismatched += 1
        state.delivered[d.name] = self.sched.now
        self.deliveries += 1
        if not self.transcribing:
            return True
        self.emit(
            {
                "t": self.sched.now,
                "kind": "message_received",
                "message": state.planned.id,
                "device": d.name,
                "plaintext": ev.plaintext.decode("utf-8", "replace"),
                "latency": round(self.sched.now - state.planned.at, 6),
                "relay": {
                    "envelope_id": ev.envelope_id.hex(),
                    # the relay's timestamp (ms on its clock), as simulated seconds from the start
                    "accepted": (ev.relay_timestamp_ms - self.epoch * 1000) / 1000,
                    "sealed": ev.sealed,
                    "sender_shown_by_relay": None if ev.sealed else f"{ev.sender.account}/{ev.sender.device}",
                    "delivery": self.last_delivery.pop(ev.envelope_id, None),
                },
            }
        )
        return True

    # --- receipts, cover traffic, changes of network (sims.scenario's [traffic] and [defences]) ----------

    def _after_delivery(self, d: SimDevice, ev: A.Received) -> None:
        """The receiving phone's receipts (sims.world.timeline.Receipts, shared with live runs)."""
        self.receipts.after_delivery(d, d.name, d.spec.person, ev.sender.account, ev.relay_timestamp_ms)

    def _send_receipt(self, d: SimDevice, to: str, stamps: tuple[int, ...], kind: str) -> None:
        if not (d.online and d.agent.authenticated):
            d.pending_receipts.append((to, stamps, kind))  # sent when the phone is back
            return
        self.control["receipts_sent"] += 1
        self._control_serial += 1
        ref = ("receipt", kind, self._control_serial)
        self._control_route[ref] = (d.spec.person, to, f"{kind} receipt")
        d.agent.send_receipt(to, stamps, kind, ref=ref, sealed=self.sealed)
        self._flush(d)

    def _cover_gap(self) -> float:
        return self._cover_rng.expovariate(self.defences.cover_per_hour / 3600)

    def _cover(self, d: SimDevice) -> None:
        """One dummy sealed message to a random contact (Loopix's Poisson cover traffic), then the next."""
        book = self.contacts.get(d.spec.person) or [
            p.name for p in self.scenario.people if p.name != d.spec.person
        ]
        if book and d.online and d.agent.authenticated:
            self.control["cover_sent"] += 1
            self._control_serial += 1
            ref: tuple[object, ...] = ("cover", self._control_serial)
            to = self._cover_rng.choice(book)
            self._control_route[ref] = (d.spec.person, to, "cover")
            d.agent.send_cover(to, ref=ref, sealed=self.sealed)
            self._flush(d)
        self.sched.after(self._cover_gap(), self._cover, d)

    # --- sealed conversations: ephemeral mailboxes ([defences] mailboxes) ----------------------------

    def _wait_for_mailbox(self, d: SimDevice, m: PlannedMessage) -> bool:
        """Before a text goes out under ``mailboxes = "ephemeral"``: a text to a peer's mailbox is for the
        phone holding it; the first text to someone who gave us no mailbox opens one (the conversation's
        initiator does, as Martiny et al. propose) and waits until the relay has registered it. True:
        the text waits."""
        if self.defences.mailboxes != "ephemeral":
            return False
        peer = m.recipient
        target = d.agent.reply_to.get(peer)
        if target is not None and target in self.mailboxes:
            holder = self.mailboxes[target].holder
            assert holder is not None
            self.messages[m.id].recipients = (holder.name,)  # the mailbox is on its holder's phone
            return False
        if peer == d.spec.person:
            return False
        box = self._mailbox_of.get((d.spec.person, peer))
        if box is None:
            box = self._open_mailbox(d, peer)
        if box.registered:
            return False
        self._mailbox_waiting.setdefault(box.agent.account, []).append(m)
        return True

    def _open_mailbox(self, d: SimDevice, peer: str) -> SimDevice:
        agent = d.agent.new_mailbox(
            peer, _seeded(self.scenario.seed, "mailbox", d.spec.person, peer).randbytes
        )
        index = mailbox_device(agent, d.name)
        box = SimDevice(DeviceSpec(agent.account, index, d.spec.region, "0.0.0.0"), agent, port=0, holder=d)
        self.mailboxes[agent.account] = box
        self._mailbox_of[(d.spec.person, peer)] = box
        if self.transcribing:  # ground truth: the provider sees an account nobody is known to hold
            self.emit(
                {
                    "t": self.sched.now,
                    "kind": "mailbox_opened",
                    "device": d.name,
                    "peer": peer,
                    "mailbox": agent.account,
                }
            )
        self._mailbox_connect(box)
        return box

    def _mailbox_connect(self, box: SimDevice) -> None:
        """The mailbox's own connection, from an exit address (a proxy or Tor-like exit): from the
        phone's address the relay would join the mailbox to its holder."""
        holder = box.holder
        if box.online or holder is None or not holder.online:
            return
        host = f"185.220.101.{self._mailbox_rng.randrange(1, 65)}"
        ctx = ConnectionContext(self._next_conn, (host, self._mailbox_rng.randrange(1024, 65536)))
        self._next_conn += 1
        link = Link(ctx, box, extra=self.defences.exit_latency_ms / 1000)
        self.links[ctx.id] = link
        self._relay_outputs(self.relay.connect(ctx))
        box.spec = replace(box.spec, address=host)
        box.conn, box.online = link, True
        if box.registered:
            box.agent.login()
        else:
            box.agent.register()
        self._flush(box)

    def _mailbox_disconnect(self, box: SimDevice) -> None:
        if box.conn is not None:
            self._close(box.conn)
        box.conn, box.online = None, False
        box.agent.connection_lost()

    def _mailboxes_online(self, d: SimDevice) -> None:
        for box in self.mailboxes.values():
            if box.holder is d:
                self._mailbox_connect(box)

    def _mailboxes_offline(self, d: SimDevice) -> None:
        for box in self.mailboxes.values():
            if box.holder is d and box.online:
                self._mailbox_disconnect(box)

    def _mailbox_retry(self, box: SimDevice) -> None:
        if not box.registered and not box.online:
            self._mailbox_connect(box)

    def _mailbox_event(self, box: SimDevice, event: A.AgentEvent) -> None:
        """What a mailbox's agent reports: once registered, the texts waiting for it go out; what it
        receives is its holder's (who answers with receipts from its own account)."""
        holder = box.holder
        assert holder is not None
        if isinstance(event, A.Registered):
            box.registered = True
            box.agent.login()
            for m in self._mailbox_waiting.pop(box.agent.account, []):
                self._app_send(m)
        elif isinstance(event, A.LoggedIn):
            box.agent.receive()
        elif isinstance(event, A.Failed) and not box.registered:
            # refused (the exit's registrations are rate-limited): again later, from another exit
            self._mailbox_disconnect(box)
            self.sched.after(61.0, self._mailbox_retry, box)
        elif isinstance(event, A.Received | A.ReceiptReceived):
            holder.agent.mailbox_answered(event.sender.account)
            self._agent_event(holder, event, box)
        elif isinstance(event, A.Undecryptable | A.Duplicate):
            self._agent_event(holder, event, box)  # counted under the mailbox: the relay queued it for it

    def _move(self, d: SimDevice, address: str) -> None:
        """The phone changes network (Wi-Fi to mobile data, another cell): its connections drop and it
        reconnects from the new address."""
        self.control["moves"] += 1
        d.spec = replace(d.spec, address=address)
        self.desk.geoip.setdefault(address, d.spec.region)
        self.emit({"t": self.sched.now, "kind": "device_moved", "device": d.name, "address": address})
        if d.online:
            self._go_offline(d, "changed network")
            self._come_online(d, False)

    def _group_fanned_out(self, mid: int, envelope_ids: tuple[bytes, ...], outputs: list[Any]) -> None:
        """Server-side fan-out: the message goes to the member devices the relay listed when it took
        it (the phones' changes reach the relay when they do, not in the file's order), so those are
        the devices that must receive it — the scenario's phones among them (a ghost's reads are its
        intervention's to count)."""
        state = self.messages[mid]
        if state.accepted_at is None:
            ids = set(envelope_ids)
            state.recipients = tuple(
                name
                for r in outputs
                if isinstance(r, MetadataRecord) and r.kind is RecordKind.SEND and r.envelope_id in ids
                if (name := f"{r.recipient_account}/{r.recipient_device}") in self.devices
            )
        self._accepted(mid, envelope_ids, outputs)

    def _accepted(self, mid: int, envelope_ids: tuple[bytes, ...], outputs: list[Any]) -> None:
        state = self.messages[mid]
        for eid in envelope_ids:
            self.envelope_message[eid] = mid
        if state.accepted_at is not None:
            return  # a duplicated send frame: the relay accepted a second copy
        state.accepted_at = self.sched.now
        state.envelope_ids = tuple(envelope_ids)
        if not self.transcribing:
            return
        seen = _send_records(outputs, self.epoch)
        self.emit(
            {
                "t": self.sched.now,
                "kind": "message_accepted",
                "message": mid,
                "plaintext": state.planned.text,
                "relay": seen,
            }
        )

    def _transcribe_control(self, route: tuple[str, str, str], outputs: list[Any]) -> None:
        """Ground truth for the scoring (sims.analysis_scoring): which envelopes the relay accepted were
        receipts or cover traffic, which it cannot tell from messages."""
        sender, to, kind = route
        seen = _send_records(outputs, self.epoch)
        self.emit(
            {
                "t": self.sched.now,
                "kind": "control_accepted",
                "control": kind,
                "from": sender,
                "to": to,
                "relay": seen,
            }
        )

    def _lost(self, mid: int, why: str) -> None:
        state = self.messages.get(mid)
        if state is None or state.accepted_at is not None or state.lost is not None:
            return
        state.lost = why
        self.emit({"t": self.sched.now, "kind": "message_lost", "message": mid, "why": why})

    # --- the application and the timeline ------------------------------------------------------

    def _app_send(self, m: PlannedMessage) -> None:
        if self._ahead is not None and m.id - 1 + SESSION_LOOKAHEAD < len(self._plan):
            self._ask_session_ahead(self._plan[m.id - 1 + SESSION_LOOKAHEAD])
        d = self.by_address[(m.sender, 1)]
        state = self.messages[m.id]
        if not (d.online and d.agent.authenticated):
            d.pending_app.append(m)  # the app keeps it until the phone is back online
            return
        if self._mailboxes and m.id not in self._group_sends and self._wait_for_mailbox(d, m):
            return
        state.sent_at = self.sched.now
        group = self._group_sends.get(m.id)
        if group is not None and not self.group_director.ready(group[0]):
            state.sent_at = None
            self.sched.after(GROUP_WAIT, self._app_send, m)  # the relay does not hold the group yet
            return
        if group is not None:
            if self.transcribing:
                self.emit(
                    {
                        "t": self.sched.now,
                        "kind": "group_message_sent",
                        "message": m.id,
                        "from": d.name,
                        "group": m.recipient[len(GROUP_PREFIX) :],
                        "members": list(group[1]),
                        "plaintext": m.text,
                    }
                )
            d.agent.send_group(group[0], group[1], m.text.encode(), ref=m.id)
            self._flush(d)
            return
        if self.transcribing:
            self.emit(
                {
                    "t": self.sched.now,
                    "kind": "message_sent",
                    "message": m.id,
                    "from": d.name,
                    "to": m.recipient,
                    "plaintext": m.text,
                    "relay": None,  # nothing has reached the relay yet
                }
            )
        d.agent.send_text(m.recipient, m.text.encode(), ref=m.id, sealed=self.sealed)
        self._flush(d)

    def _identity_changed(self, d: SimDevice, event: A.IdentityChanged) -> None:
        self.emit(
            {
                "t": self.sched.now,
                "kind": "identity_changed",
                "device": d.name,
                "peer": f"{event.peer.account}/{event.peer.device}",
                "via": event.via,
                "accepted": event.accepted,
                "was_verified": event.was_verified,
            }
        )

    def _verify_safety_number(self, who: str, whom: str) -> None:
        """``who`` and ``whom`` meet and compare safety numbers (clients.fingerprint), device by device:
        what each of who's phones shows for each device of whom it has pinned, against what whom's
        phone at that address shows for who. Only the phones whom holds take part (a device added
        behind whom's back is in no one's hand: its number matches nothing). A match marks the key
        verified (a later change then always blocks)."""
        in_hand = {(s.person, s.index): d for s, d in ((d.spec, d) for d in self.devices.values())}
        for d in [x for x in self._every_device() if x.spec.person == who]:
            mine = d.agent.device
            for peer in mine.identities.pinned_peers(whom):
                theirs = mine.identities.pinned(peer)
                assert theirs is not None
                shown = safety_number(who, mine.identity_key, whom, theirs)
                w = in_hand.get((whom, peer.device))
                match = False
                if w is not None:
                    me = PeerAddress(who, d.spec.index)
                    known = w.agent.device.identities.pinned(me) or mine.identity_key
                    match = shown.matches(safety_number(whom, w.agent.device.identity_key, who, known).code)
                if match:
                    d.agent.verify_identity(peer, theirs)
                self.emit(
                    {
                        "t": self.sched.now,
                        "kind": "safety_number_compared",
                        "device": d.name,
                        "peer": f"{whom}/{peer.device}",
                        "safety_number": shown.grouped(),
                        "match": match,
                        "in_hand": w is not None,
                    }
                )

    def _group_losses(self) -> None:
        """At the end: why each group message recipient device that never read it did not."""
        waiting: dict[tuple[str, bytes], int] = {}
        for d in self.devices.values():
            for w in d.agent.waiting_for_sender_keys():
                waiting[(d.name, w.envelope_id)] = w.retries
        for mid in self._group_sends:
            state = self.messages[mid]
            lost_parts = self._group_parts_lost.get(mid, set())
            for name in state.recipients:
                if name in state.delivered:
                    continue
                held = [
                    r
                    for (n, eid), r in waiting.items()
                    if n == name and self.envelope_message.get(eid) == mid
                ]
                account = name.split("/")[0]
                if held:
                    why = (
                        f"its sender key never came, and no resend answered the {max(held)} retry "
                        "receipt(s) it sent"
                    )
                elif state.sent_at is None:
                    why = "never sent: the sender's phone was not online again before the end"
                elif account in lost_parts:
                    why = f"the network lost the send to {account}"
                elif GROUP_SEND_LOST in lost_parts:
                    why = "the network lost the group send to the relay (server-side fan-out: one for all members)"
                elif state.lost is not None:
                    why = state.lost
                else:
                    why = "unexplained"
                if state.lost_for is NO_LOSSES:
                    state.lost_for = {}
                assert isinstance(state.lost_for, dict)
                state.lost_for[name] = why

    def _truth(self, states: list[MessageState]) -> GroundTruth:
        """Ground truth, its 1:1 messages made when read (``TrueMessages``) from ``states``, the
        run's message states in id order."""
        regions: dict[str, set[str]] = {}
        for d in self.scenario.devices():
            regions.setdefault(d.person, set()).add(d.region)
        return GroundTruth(
            TrueMessages(
                [m for m in states if m.accepted_at is not None and m.planned.id not in self._group_sends],
                self.epoch,
            ),
            {k: frozenset(v) for k, v in regions.items()},
            frozenset(regions),
            tuple(sorted(self._control_truth, key=lambda c: (c.time, c.sender, c.recipient, c.kind))),
        )

    # --- run ------------------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        # The garbage collector does not run during a run (gc.disable; turned back on when the run
        # ends, however it ends, unless the process had turned it off itself). Most of what a run
        # makes lives until its end (phones, sessions, queues, message states) and it makes next to
        # no cyclic garbage (about 10,000 unreachable objects in a 10,000-phone day, against ~1.26
        # million live ones), yet each collection walks what it looks at and what that points to,
        # spread over a heap of gigabytes. At 100,000 phones and 1,000,000 messages (sims/bench/sim.py
        # --scale-run, 2026-12-02), with the youngest generation collected every 20,000 net
        # allocations and what was alive frozen (gc.freeze) after each 1 % step, the collector still
        # took 53 s of 811 s CPU (~1,250 young collections of ~25 ms); every 200,000, 28 s; off,
        # 4 s (all of it before the run), the peak RSS the same (3,221 and 3,219 MiB). What cycles a
        # run makes are collected after it, with the oldest generation: turned back on as it was,
        # the collector would take everything made during the run for young objects and walk it
        # all at the next allocation (10 s of the same run's 650, in whatever ran next, 2026-12-02),
        # so it first moves them to the oldest generation, where a run with the collector on would
        # have put them (gc.freeze then gc.unfreeze: two list splices, no walk).
        enabled = gc.isenabled()
        gc.disable()
        previous = None
        try:
            if self.exchanges_ahead:
                self._ahead = AheadWorker(wait=self._ahead_wait)
                previous = use_ahead(self._ahead.table)
            return self._run()
        finally:
            if enabled:
                gc.freeze()
                gc.unfreeze()
                gc.enable()
            self._close_premade()
            if self._ahead is not None:
                use_ahead(previous)
                self.ahead_stats = self._ahead.close()
                self._ahead = None

    def _run(self) -> SimulationResult:
        self._schedule()
        end = self.scenario.duration
        step = max(end / 100, 1.0)
        t = 0.0
        while t < end:
            t = min(end, t + step)
            # One commit per step of simulated time, each request inside it a savepoint of its own
            # (relay.store.Store.transaction): the same writes, without a commit per request.
            with self.store.transaction():
                self.sched.run(until=t)
            if self.progress is not None:
                self.progress(t, end)
        self.timeline.finish()  # orders still running at the end are answered now
        self._group_losses()
        exceptional = self.interventions.finish()
        left = self.store.all_envelopes()
        queued = len(left)
        unread: dict[str, int] = {}
        for e in left:
            name = f"{e.account}/{e.device}"
            unread[name] = unread.get(name, 0) + 1
        agency = sorted(self.interventions.agency_devices()) if self._intervening else []
        sent = {f"{a}/{d}": n for (a, d), n in self._sent_to.items()}
        for name, n in self._forged_to.items():
            sent[name] = sent.get(name, 0) + n
        acked = {f"{a}/{d}": n for (a, d), n in self._acked_by.items()}
        by_device = envelope_rows(sent, acked, unread, self._outcomes, self._forged_to)
        ledger = ledger_by_party(by_device, agency)
        self.store.close()
        states = [self.messages[k] for k in sorted(self.messages)]
        return SimulationResult(
            self.scenario,
            states,
            dict(sorted((k.value, n) for k, n in self.record_counts.items())),
            {
                "lost": self.net.lost,
                "duplicated": self.net.duplicated,
                "partitioned": self.net.partitioned,
                "held": self.net.held,
            },
            self.undecryptable,
            self.duplicates_dropped,
            self.mismatched,
            self.sched.events_run,
            queued,
            self.frames_to_relay,
            self.disclosures,
            self._truth(states),
            exceptional,
            dict(self.control),
            {k: self.synced[k] for k in sorted(self.synced)},
            dict(self.refused),
            ledger,
            agency,
            by_device,
        )


_LEDGER_KINDS: Final = frozenset((RecordKind.SEND, RecordKind.SEALED_SEND, RecordKind.ACKNOWLEDGEMENT))
_PREFIX_SIZE: Final = wire.PREFIX_SIZE  # (read once: two frames a message come through here)
_MAX_FRAME_SIZE: Final = wire.DEFAULT_MAX_FRAME_SIZE
_REQUEST_KINDS: Final = wire.REQUEST_KINDS
_decode_body: Final = wire.decode_body


def _peek(device: Device) -> Callable[..., bytes] | None:
    """What the phone's RNG will give at its k-th draw from now, without drawing: its ``KeyStream``'s
    ``peek`` (``Simulation(compact_device_rng=True)``), else None (nothing to tell)."""
    stream = getattr(device.rng, "__self__", None)
    return stream.peek if type(stream) is KeyStream else None


def _relay_reads(data: bytes) -> wire.Request:
    """The relay's reading of one frame the simulation carried: the bytes of exactly one whole frame
    (``wire.encode``), so its body is decoded straight away, every field checked as the server's
    ``wire.FrameDecoder`` checks it, without a stream buffer; a frame over the size limit goes through
    a ``FrameDecoder`` to be refused as the server refuses it."""
    if len(data) - _PREFIX_SIZE > _MAX_FRAME_SIZE:
        decoder = wire.FrameDecoder("relay")
        decoder.receive_data(data)
        frame = decoder.next_frame()
    else:
        frame = _decode_body(data[_PREFIX_SIZE:], _REQUEST_KINDS)
    assert isinstance(frame, wire.Request)
    return frame


_planned_at: Callable[[PlannedMessage], float] = operator.attrgetter("at")  # (in C: one call a message)


SIM_APP_VERSION = "1.0"  # the simulated app's version, as its registrations report it


def registered_facts(seed: int, spec: DeviceSpec) -> dict[str, Any]:
    """What a simulated device's app tells the relay about it when it registers (wire.Register's
    optional fields; the relay keeps what its profile keeps): a push token (32 bytes, the size of
    an APNs device token), its type (the first device a phone, ``android`` or ``ios``; a linked one
    ``desktop``) and the app's version. From streams of their own, so no other draw moves."""
    kind = (
        _seeded(seed, "device-type", spec.name).choice(("android", "ios")) if spec.index == 1 else "desktop"
    )
    return {
        "push_token": _seeded(seed, "push-token", spec.name).randbytes(32),
        "device_type": kind,
        "app_version": SIM_APP_VERSION,
    }


def address_books(scenario: Scenario, graph: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each person's address book: the people they converse with, and their social-graph neighbours."""
    book: dict[str, set[str]] = {p.name: set() for p in scenario.people}
    for conv in scenario.conversations:
        a, b = conv.between
        book[a].add(b)
        book[b].add(a)
    for person, friends in graph.items():
        book[person].update(friends)
    return {k: sorted(v) for k, v in book.items()}


def record_view(r: MetadataRecord, epoch: float | None = None) -> dict[str, Any]:
    """A metadata record as JSON: the fields the relay observed, never content. Given the relay
    clock's ``epoch`` (what it read at simulated t = 0), ``time`` is simulated seconds from the
    start, the transcript's time base (``sims.report.transcript_writer``); without, it is the
    relay's clock as recorded (Unix seconds)."""
    out: dict[str, Any] = {"kind": r.kind.value}
    if r.time is not None and epoch is not None:
        out["time"] = round(r.time - epoch, 6)
    for name in (
        "time",
        "host",
        "port",
        "account",
        "device",
        "recipient_account",
        "recipient_device",
        "size",
    ):
        value = getattr(r, name)
        if value is not None and name not in out:
            out[name] = value
    if r.envelope_id is not None:
        out["envelope_id"] = r.envelope_id.hex()
    return out


def _send_records(outputs: list[Any], epoch: float) -> list[dict[str, Any]]:
    """The relay's send records among a request's outputs, as the transcript shows them."""
    return [
        record_view(r, epoch)
        for r in outputs
        if isinstance(r, MetadataRecord) and r.kind in (RecordKind.SEND, RecordKind.SEALED_SEND)
    ]
