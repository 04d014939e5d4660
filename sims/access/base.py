"""The one interface between a running simulation and its interventions.

The simulation (``sims.world.simulation.Simulation``) calls an ``Intervention`` on four hooks: a timeline
event of its kind (``on_event``), envelopes the relay accepted (``on_accepted``), what a device
reported (``on_agent_event``) and the end of the run (``finish``). An intervention sees the
simulation only as a ``World``: what it may read (``device_ready``, ``read_already`` among them), and
the few public methods through which it may change something (``emit``, ``mandate_escrow``,
``mandate_content_key``, ``add_device``, ``start_device``, ``flush_device``, ``relay_outputs``: what the
relay made of a request the intervention carried to it itself, counted with the run's records,
``intervention_connection``: an id of its own for a connection it opens itself,
``forge_envelope``, and the relay core's ``provision_device``). The dependency points one way: nothing
here imports the runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from relaysim.clients import agent as A
from relaysim.clients.escrow import EscrowPublicKey
from relaysim.clients.session import PeerAddress
from relaysim.relay import wire
from relaysim.relay.compliance import Disclosure, LegalProcess
from relaysim.relay.core import Output, RelayCore
from relaysim.relay.custody import ContentKey
from relaysim.relay.profiles import Profile
from relaysim.relay.store import Store
from relaysim.sims.scenario import DeviceSpec, Scenario, TimelineEvent
from relaysim.sims.world.engine import Scheduler
from relaysim.sims.world.traffic import PlannedMessage

if TYPE_CHECKING:
    from relaysim.sims.access.reports import ExceptionalReport

__all__ = ["AGENCY_ADDRESS", "Captured", "DeviceView", "Intervention", "MessageView", "World"]

AGENCY_ADDRESS = "203.0.113.250"  # where the agency runs the ghost device from (TEST-NET-3)


class DeviceView(Protocol):
    """A simulated phone, as an intervention sees it."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> DeviceSpec: ...
    @property
    def agent(self) -> A.DeviceAgent: ...


class MessageView(Protocol):
    """What the simulation knows about one planned message."""

    @property
    def planned(self) -> PlannedMessage: ...
    @property
    def sent_at(self) -> float | None: ...
    @property
    def accepted_at(self) -> float | None: ...
    @property
    def delivered(self) -> Mapping[str, float]: ...


class World(Protocol):
    """The simulation, as its interventions may use it: read-only views and a few public actions."""

    @property
    def scenario(self) -> Scenario: ...
    @property
    def sched(self) -> Scheduler: ...
    @property
    def store(self) -> Store: ...
    @property
    def relay(self) -> RelayCore: ...
    @property
    def sealed(self) -> bool: ...
    @property
    def padding(self) -> str: ...  # how the phones pad plaintexts (clients.agent.pad)
    @property
    def relay_region(self) -> str: ...
    @property
    def devices(self) -> Mapping[str, DeviceView]: ...
    @property
    def by_address(self) -> Mapping[tuple[str, int], DeviceView]: ...
    @property
    def messages(self) -> Mapping[int, MessageView]: ...
    @property
    def envelope_message(self) -> Mapping[bytes, int]: ...
    @property
    def disclosures(self) -> Sequence[Disclosure]: ...
    @property
    def open_orders(self) -> Mapping[str, LegalProcess]: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def device_signatures(self) -> dict[tuple[str, int], bytes]: ...  # "signed-devices": primary's signatures
    @property
    def sync_message(self) -> Mapping[bytes, int]: ...  # sync copies: envelope id → message id

    def emit(self, event: dict[str, Any], /) -> None: ...
    def mandate_escrow(self, public: EscrowPublicKey) -> int: ...
    def mandate_content_key(self, key: ContentKey) -> int: ...
    # registered=False: a new account's phone, which start_device registers and logs in on one connection
    def add_device(
        self, spec: DeviceSpec, agent: A.DeviceAgent, *, registered: bool = True
    ) -> DeviceView: ...
    def start_device(self, name: str) -> None: ...
    def device_ready(self, name: str) -> bool: ...  # online and logged in
    def flush_device(self, name: str) -> None: ...  # carry the agent's requests to the relay
    # an envelope the phone could not read was a copy of what it had read: a duplicate, not unread
    def read_already(self, device: str, event: A.Duplicate | A.Undecryptable) -> bool: ...
    # what the relay made of a request an intervention carried to it itself (the key-transparency
    # witness's connection and requests): its records counted as
    # those of any request (the run's relay_records, relay_view)
    def relay_outputs(self, outputs: Sequence[Output], /) -> None: ...
    # an id for a connection an intervention opens itself (the witness's): each asked for gets its own
    def intervention_connection(self) -> int: ...
    def forge_envelope(
        self, to: tuple[str, int], body: bytes, *, sealed: bool, source: tuple[str, int] | None = None
    ) -> bytes: ...


@dataclass(frozen=True)
class Captured:
    """One envelope as the relay accepted it, with what the simulation knows about it."""

    envelope_id: bytes
    message: int | None
    sender: str  # device name, e.g. "alice/1"
    recipient: PeerAddress
    sealed: bool
    body: bytes
    time: float  # simulated seconds, when the relay accepted it


class Intervention(ABC):
    """One exceptional-access demand or one seizure, acting on a running simulation.

    Subclasses name the timeline events they answer in ``answers`` ((event type, demand) pairs;
    demand None for types that have none). ``one_per_run``: every such event goes to one instance (a key
    escrow is begun once, then its key is stolen); otherwise each event gets its own. ``order``
    places its reports among the others'.
    """

    answers: ClassVar[tuple[tuple[type[TimelineEvent], str | None], ...]] = ()
    one_per_run: ClassVar[bool] = False
    order: ClassVar[int] = 0

    def __init__(self, world: World) -> None:
        self.world = world

    @classmethod
    def for_event(cls, world: World, event: TimelineEvent) -> Self:
        """The instance for one timeline event (before the run: it may watch from the first minute)."""
        return cls(world)

    @property
    def started(self) -> float | None:
        """When it first acted on the world (None: not yet); reports of one kind come in this order."""
        return None

    @abstractmethod
    def on_event(self, event: TimelineEvent) -> None:
        """A timeline event this intervention answers, at its time."""

    def on_accepted(
        self, sender: DeviceView, frame: wire.Send | wire.SealedSend, envelope_ids: tuple[bytes, ...]
    ) -> None:
        """The relay accepted ``frame``'s envelopes under ``envelope_ids`` (same order)."""
        return None  # most interventions do not watch the traffic

    def on_agent_event(self, device: DeviceView, event: A.AgentEvent) -> bool:
        """What a device reported; True when it was this intervention's (the world then ignores it)."""
        return False

    def agency_devices(self) -> list[str]:
        """The devices ("account/index") this intervention runs for the agency, whose envelopes the run's
        totals count as the agency's, not the people's (SimulationResult.envelopes)."""
        return []

    @abstractmethod
    def finish(self) -> list[ExceptionalReport]:
        """Its reports, at the end of the run, while the relay's store is still open."""
