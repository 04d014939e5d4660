"""Helpers shared by the tests: device keys, requests built from them, a settable clock, relay
error checks, a relay served in-process or run as a process of its own (to be killed), and a trio
wire client.

Signatures are real XEdDSA signatures made by ``clients._xeddsa.xeddsa_sign`` (tests may import
``clients``; the relay may not). ML-KEM-1024 public keys are real ones, generated once and
reused: the relay never looks inside them, it only checks the signatures over them.

This module holds no tests of its own (pytest does not collect it: its name does not start
with ``test_``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import random
import re
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relaysim.clients._xeddsa import xeddsa_sign
from relaysim.clients.groups import group_write_key, sign_group_state
from relaysim.relay import wire
from relaysim.relay.core import ConnectionContext, RelayCore, Reply
from relaysim.relay.limits import UNLIMITED
from relaysim.relay.server import RelayServer, serve
from relaysim.relay.store import Store
from relaysim.sims.scenario import Scenario

RNG = Callable[[int], bytes]


@functools.cache
def kem_public_keys(n: int = 4) -> tuple[bytes, ...]:
    return tuple(mlkem.MLKEM1024PrivateKey.generate().public_key().public_bytes_raw() for _ in range(n))


@dataclass
class DeviceKeys:
    """One device's long-term keys and the ids it registers under."""

    account: str
    device: int
    rng: RNG
    identity_private: bytes = b""
    identity_key: bytes = b""
    registration_id: int = 0
    delivery_token: bytes = b""
    _next_prekey_id: int = field(default=1, repr=False)

    def __post_init__(self) -> None:
        if not self.identity_private:
            private = X25519PrivateKey.from_private_bytes(self.rng(32))
            self.identity_private = private.private_bytes_raw()
            self.identity_key = private.public_key().public_bytes_raw()
        if not self.registration_id:
            self.registration_id = 1 + int.from_bytes(self.rng(2), "big") % 16380
        if not self.delivery_token:
            self.delivery_token = self.rng(32)

    @classmethod
    def make(cls, account: str, device: int = 1, seed: int = 0) -> DeviceKeys:
        return cls(account, device, random.Random(f"{account}.{device}.{seed}").randbytes)

    def sign(self, message: bytes) -> bytes:
        return xeddsa_sign(self.identity_private, message, self.rng(64))

    def _ids(self, n: int) -> range:
        first = self._next_prekey_id
        self._next_prekey_id += n
        return range(first, first + n)

    def signed_prekey(self) -> wire.SignedPrekey:
        (i,) = self._ids(1)
        public = X25519PrivateKey.from_private_bytes(self.rng(32)).public_key().public_bytes_raw()
        return wire.SignedPrekey(i, public, self.sign(wire.signed_prekey_message(public)))

    def prekeys(self, n: int) -> tuple[wire.Prekey, ...]:
        return tuple(wire.Prekey(i, self.rng(32)) for i in self._ids(n))

    def kem_prekeys(self, n: int) -> tuple[wire.KemPrekey, ...]:
        pool = kem_public_keys()
        return tuple(
            wire.KemPrekey(i, pool[i % len(pool)], self.sign(wire.kem_prekey_message(pool[i % len(pool)])))
            for i in self._ids(n)
        )

    def register(self, request_id: int = 1, *, one_time: int = 2, kem: int = 2) -> wire.Register:
        return wire.Register(
            id=request_id,
            account=self.account,
            device=self.device,
            registration_id=self.registration_id,
            identity_key=self.identity_key,
            signed_prekey=self.signed_prekey(),
            one_time_prekeys=self.prekeys(one_time),
            kem_prekeys=self.kem_prekeys(kem),
            last_resort_kem_prekey=self.kem_prekeys(1)[0],
            delivery_token=self.delivery_token,
        )

    def answer(self, nonce: bytes, request_id: int = 3) -> wire.Authenticate:
        return wire.Authenticate(
            id=request_id,
            nonce=nonce,
            signature=self.sign(wire.auth_message(nonce, self.account, self.device)),
        )


# --- driving a RelayCore directly --------------------------------------------------------------

T0: Final = 1_700_000_000.0  # seconds since the epoch: November 2023, where the relay tests' clocks start


class Clock:
    """A clock the test sets by hand (``clock.now = ...``), for RelayCore(clock=...)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def count_attack_calls(monkeypatch: Any) -> list[Any]:
    """From now on (``monkeypatch``'s undo ends it), each call of the statistical disclosure attack, by
    the checkpoints it was asked for, wherever it is called from (``sims.analysis.sda``'s name for it
    and ``sims.analysis.run``'s): the list the calls are put in."""
    from relaysim.sims.analysis import run as analysis_run
    from relaysim.sims.analysis import sda as sda_module

    calls: list[Any] = []
    real = sda_module.statistical_disclosure

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("checkpoints"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sda_module, "statistical_disclosure", counted)
    monkeypatch.setattr(analysis_run, "statistical_disclosure", counted)
    return calls


def new_core(clock: Callable[[], float] | None = None, seed: int = 7, **kwargs: object) -> RelayCore:
    """A core on an in-memory store; without ``limits``, none (the abuse tests name theirs)."""
    kwargs.setdefault("limits", UNLIMITED)
    return RelayCore(
        Store(":memory:"),
        clock=clock or (lambda: T0),
        rng=random.Random(seed).randbytes,
        **kwargs,  # type: ignore[arg-type]
    )


GROUP_MASTER: Final = bytes(range(32))  # a group's master key, as its members hold it


def put_group_state(
    rid: int, group: bytes, version: int, state: bytes, master: bytes = GROUP_MASTER, **fields: object
) -> wire.PutGroupState:
    """A ``put_group_state`` as a holder of ``master`` sends it: its write key and the key's
    signature (``fields`` override what it would send)."""
    signed: dict[str, Any] = {
        "write_key": group_write_key(master),
        "signature": sign_group_state(master, group, version, state),
    }
    signed.update(fields)
    return wire.PutGroupState(id=rid, group=group, version=version, state=state, **signed)


def reply(outputs: list[object]) -> wire.Response:
    """The one Reply among the outputs."""
    replies = [o for o in outputs if isinstance(o, Reply)]
    assert len(replies) == 1, outputs
    return replies[0].frame


class _Unchecked(enum.Enum):
    FIELD = "any field"


ANY_FIELD: Final = _Unchecked.FIELD


def assert_error(
    frame: wire.Response, code: wire.ErrorCode, field: str | _Unchecked | None = ANY_FIELD
) -> wire.ErrorFrame:
    """``frame`` is the relay's error ``code``, about ``field`` (None: about no field) unless the
    field is left unchecked."""
    assert isinstance(frame, wire.ErrorFrame), frame
    assert frame.code == code.value, frame
    if field is not ANY_FIELD:
        assert frame.field == field, frame
    return frame


def core_authenticate(core: RelayCore, conn: ConnectionContext, keys: DeviceKeys) -> wire.Response:
    challenge = reply(core.handle(conn, wire.AuthChallenge(id=2, account=keys.account, device=keys.device)))
    assert isinstance(challenge, wire.Challenge), challenge
    return reply(core.handle(conn, keys.answer(challenge.nonce)))


def core_device(core: RelayCore, keys: DeviceKeys, conn_id: int, register: bool = True) -> ConnectionContext:
    """A connection for ``keys`` on ``core``: registered (if asked) and authenticated."""
    conn = ConnectionContext(conn_id, ("192.0.2.1", 40000 + conn_id))
    core.connect(conn)
    if register:
        assert isinstance(reply(core.handle(conn, keys.register())), wire.Registered)
    assert isinstance(core_authenticate(core, conn, keys), wire.Authenticated)
    return conn


# --- a device over the network -----------------------------------------------------------------


@asynccontextmanager
async def running(core: RelayCore, **kwargs: Any) -> AsyncIterator[RelayServer]:
    """``core`` served by relay.server on a free loopback port for the duration of the block."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, core, "127.0.0.1", 0, **kwargs))
        yield server
        nursery.cancel_scope.cancel()


class WireClient:
    """A well-behaved device connection: request/response by id, pushes collected aside."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = wire.FrameDecoder("device")
        self.pushes: list[wire.Deliver] = []
        self._ids = iter(range(1, 2**32))

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> WireClient:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
        return cls(stream)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def next_frame(self) -> wire.Frame:
        while True:
            frame = self.decoder.next_frame()
            if frame is wire.CLOSED:
                raise EOFError("relay closed the connection")
            if frame is not wire.NEED_DATA:
                return frame
            self.decoder.receive_data(await self.stream.receive_some(65536))

    async def request(
        self, make: Callable[[int], wire.Request], *, sent: Callable[[], None] | None = None
    ) -> wire.Response:
        """Send ``make(id)`` and return the frame answering that id (pushes are set aside); ``sent``
        is called once the request is written."""
        request_id = next(self._ids)
        await self.stream.send_all(wire.encode(make(request_id)))
        if sent is not None:
            sent()
        while True:
            frame = await self.next_frame()
            if isinstance(frame, wire.Deliver):
                self.pushes.append(frame)
            elif frame.id == request_id:
                assert isinstance(frame, wire.Response)
                return frame

    async def pipeline(
        self, makes: list[Callable[[int], wire.Request]], answered: Callable[[int, wire.Response], None]
    ) -> None:
        """Send every ``make(id)`` in one write, then read their answers, calling ``answered(index,
        answer)`` for each as it comes (pushes are set aside)."""
        ids = {next(self._ids): n for n in range(len(makes))}
        await self.stream.send_all(b"".join(wire.encode(make(i)) for make, i in zip(makes, ids, strict=True)))
        while ids:
            frame = await self.next_frame()
            if isinstance(frame, wire.Deliver):
                self.pushes.append(frame)
            elif frame.id in ids:
                assert isinstance(frame, wire.Response)
                answered(ids.pop(frame.id), frame)

    async def register(self, keys: DeviceKeys) -> None:
        register = keys.register()
        answer = await self.request(lambda i: dataclasses.replace(register, id=i))
        assert isinstance(answer, wire.Registered), answer

    async def authenticate(self, keys: DeviceKeys) -> None:
        challenge = await self.request(
            lambda i: wire.AuthChallenge(id=i, account=keys.account, device=keys.device)
        )
        assert isinstance(challenge, wire.Challenge), challenge
        answer = await self.request(lambda i: keys.answer(challenge.nonce, i))
        assert isinstance(answer, wire.Authenticated), answer

    async def send(self, to: str, devices: list[int], body: bytes) -> tuple[bytes, ...]:
        envelopes = tuple(wire.OutgoingEnvelope(d, body) for d in devices)
        answer = await self.request(lambda i: wire.Send(id=i, to=to, envelopes=envelopes))
        assert isinstance(answer, wire.Sent), answer
        return answer.envelope_ids

    async def drain(self) -> list[wire.Envelope]:
        """Receive and acknowledge everything queued; returns what came (duplicates included)."""
        got: list[wire.Envelope] = []
        while True:
            answer = await self.request(lambda i: wire.Receive(id=i))
            assert isinstance(answer, wire.Envelopes), answer
            got.extend(answer.envelopes)
            if answer.envelopes:
                ids = tuple(e.id for e in answer.envelopes)
                acked = await self.request(lambda i, ids=ids: wire.Ack(id=i, envelope_ids=ids))  # type: ignore[misc]
                assert isinstance(acked, wire.Acked), acked
            if not answer.more:
                return got


class RelayProcess:
    """``python -m relaysim.relay.server`` on a database, as its own process (for tests that kill it);
    stderr goes to ``log``, where the port is read from. Its devices all register from one loopback
    address, without the registration proof; ``extra`` adds options. ``wait=False`` returns at once,
    before it listens (``port`` is then 0: call :meth:`wait_for_port`)."""

    ROOT: Final = Path(__file__).resolve().parents[1]

    def __init__(self, db: Path, log: Path, *extra: str, wait: bool = True) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        env = {**os.environ, "PYTHONPATH": str(self.ROOT)}
        args = [
            sys.executable,
            "-m",
            "relaysim.relay.server",
            "--port",
            "0",
            "--db",
            str(db),
            "--log-level",
            "INFO",
        ]
        args += ["--registration-pow", "0", "--register-rate", "off", "--send-rate-account", "off", *extra]
        with log.open("ab") as f:
            self.proc = subprocess.Popen(args, stderr=f, stdout=subprocess.DEVNULL, env=env, cwd=self.ROOT)
        self.port = self.wait_for_port() if wait else 0

    def output(self) -> str:
        """What this process has logged so far."""
        return self.log.read_bytes()[self.offset :].decode(errors="replace")

    def wait_for_port(self, ready: str = "") -> int:
        """The port, once the relay listens (and, with ``ready``, once that text is logged too)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.output()
            if (m := re.search(r"relay listening on 127\.0\.0\.1:(\d+)", text)) and ready in text:
                self.port = int(m.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError("relay did not start listening")


# --- scenarios run by both drivers (tests/sims/test_one_world.py, tests/sims/test_live.py) ------------

# A group chat (sender keys, client-side fan-out) with a linked device (sync copies of group messages),
# a join, a leave, a member offline while the group writes, delivery receipts (on by default) and a
# pen register on the group's admin. Every phone gets at most four new sessions, so none runs low on
# one-time prekeys in either driver (tests/sims/test_one_world.py runs it in both drivers).
BOOK_CLUB = """
[scenario]
name = "book-club"
duration = "30m"
seed = 7

[[people]]
name = "ana"
devices = [{ region = "us", address = "192.0.2.1" }, { region = "us", address = "192.0.2.2" }]

[[people]]
name = "bo"
devices = [{ region = "us", address = "192.0.2.5", offline = [["10m", "14m"]] }]

[[people]]
name = "cy"
devices = [{ region = "eu", address = "198.51.100.9" }]

[[people]]
name = "dan"
devices = [{ region = "us", address = "192.0.2.13" }]

[[conversations]]
between = ["ana", "bo"]
messages = [{ at = "1m", from = "bo", text = "see you at the club" }]

[[groups]]
name = "book-club"
members = ["ana", "bo", "cy"]
admins = ["ana"]
timeline = [
  { at = "2m", from = "ana", text = "chapter one tonight" },
  { at = "3m", from = "bo", text = "I have not started it" },
  { at = "5m", join = "dan", by = "ana" },
  { at = "6m", from = "ana", text = "welcome, dan" },
  { at = "11m", from = "dan", text = "bo is away" },
  { at = "16m", leave = "cy" },
  { at = "18m", from = "ana", text = "after cy left" },
]

[[events]]
at = "30s"
kind = "legal_process"
process = "pen_register"
target = "ana"
to = "29m"
name = "pen-register-ana"
"""


# The same, busier: read receipts, cover traffic and two phones changing networks. Which of two
# messages crossing each other starts a session (a ~1.9 kB PQXDH message instead of a ~0.2 kB one)
# is a race the two drivers run at different speeds, so the records are compared without sizes. Read
# receipts' delays are drawn in the order phones read, which differs too; the pen register's window
# is wide enough that no receipt falls near its ends.
BUSY_BOOK_CLUB = BOOK_CLUB.replace(
    "[[people]]",
    """[traffic]
read_receipts = true
read_delay = "20s"
moves = [
  { device = "dan/1", at = "8m", address = "100.64.0.9" },
  { device = "ana/2", at = "12m", address = "100.64.0.10" },
]

[defences]
cover_per_hour = 6

[[people]]""",
    1,
)


def fresh_connections(scenario: Scenario) -> Scenario:
    """``scenario`` under sealed sender, every sealed send and bundle fetch (with the recipient's
    delivery token) on a fresh connection from an exit (with no latency of its own: loopback has
    none), and power-of-two padding."""
    return dataclasses.replace(
        scenario,
        relay=dataclasses.replace(scenario.relay, sealed_sender=True),
        defences=dataclasses.replace(
            scenario.defences,
            sealed_connection="fresh",
            exit_latency_ms=0.0,
            padding="pow2",
            bundle_fetch="unauthenticated",
        ),
    )


# MAILBOXES live (real seconds per simulated second): ben answers 3 simulated minutes after amira's
# first text, which must reach him first (her mailbox registered, the session begun, the text read), or
# he opens a mailbox of his own. That is work for the machine's CPU, which a busy one hands out slowly:
# it took ~0.46 s of real time once, more than the 0.36 s of a 0.002 scale; 0.005 gives it 0.9 s (a wait
# on the operating system's scheduler, not on our code).
MAILBOX_SCALE: Final = 0.005

# Sealed conversations with ephemeral mailboxes (Martiny et al., NDSS 2021): amira's first text opens a
# mailbox for ben's replies; ben goes offline while she writes again. Each message comes minutes after
# the last, so the mailbox is registered before anyone answers in either driver (live: at MAILBOX_SCALE).
MAILBOXES = """
[scenario]
name = "mailboxes"
duration = "15m"
seed = 11

[relay]
sealed_sender = true

[defences]
mailboxes = "ephemeral"
exit_latency_ms = 0  # the mailboxes' exits add none (loopback has none)

[[people]]
name = "amira"
devices = [{ region = "pk", address = "203.0.113.24" }]

[[people]]
name = "ben"
devices = [{ region = "ca", address = "198.51.100.77", offline = [["6m", "8m"]] }]

[[conversations]]
between = ["amira", "ben"]
messages = [
  { at = "1m", from = "amira", text = "Hi Ben, write to my mailbox" },
  { at = "4m", from = "ben", text = "Writing to it now" },
  { at = "7m", from = "amira", text = "While you were away" },
  { at = "10m", from = "ben", text = "Back, and writing to it again" },
]

[[events]]
at = "30s"
kind = "legal_process"
process = "pen_register"
target = "amira"
to = "14m"
name = "pen-register-amira"
"""


def run_with_and_without(
    scenario: Any, tmp_path: Any, with_cls: type, without_cls: type, option: str, stats: str
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A scenario run twice on compact key streams, with the simulation option ``option`` on (as
    ``with_cls``) and off (``without_cls``): each run's frames to the relay, deliveries and the
    option's ``stats`` attribute, for tests that an option changes no byte (its relay.db files are
    ``tmp_path / "0.db"`` and ``"1.db"``)."""
    runs = []
    for i, (cls, on) in enumerate(((with_cls, True), (without_cls, False))):
        sim = cls(
            scenario,
            db_path=str(tmp_path / f"{i}.db"),
            capture_frames=True,
            compact_device_rng=True,
            **{option: on},
        )
        result = sim.run()
        runs.append(
            (result.frames_to_relay, [dict(m.delivered) for m in result.messages], getattr(sim, stats))
        )
    return runs[0], runs[1]
