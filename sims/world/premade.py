"""The phones' registration keys made on the second core: a worker process replays each phone's own
key stream and hands back what its prekey generation will compute (``clients.keys.PremadeKeys``).

A scale run's phones each draw their keys from a ``KeyStream``
(``Simulation(compact_device_rng=True)``), a function of a 32-byte seed and a counter, so what a
phone's first ``generate_prekeys`` computes — its signed prekey and one-time X25519 prekeys (a
fixed-base multiplication each), its last-resort ML-KEM-1024 key (key generation from a seed,
~0.16 ms), their XEdDSA signatures, the identity key's Edwards pair — is known before the run starts. The
worker (a fresh interpreter, ``python -m relaysim.sims.world.premade``) makes a ``Device`` on the
same stream and runs the same ``generate_prekeys``, recording each result by its whole input; the
simulation hands the table to the phone just before it registers. The worker also checks the
signatures the registration will carry as the relay checks them (``relay.identity.xeddsa_verify``),
and the relay takes those answers (``relay.identity.use_verified_ahead``) instead of checking them
again. A table is only a memo of deterministic functions: a phone that draws anything else computes
it as usual, and a phone whose table has not come yet (the worker behind, or gone) computes all of
it, so the run's every byte is the same with or without it. The main process never waits for the
worker: it reads only what is already in the pipe, and a phone that finds no table tells the worker
to skip ahead (on a busy machine it may fall behind).

Tables go in the order the phones come online, a few at a time; the pipe's buffer and the batch
in hand bound what is held (~2.5 KiB a phone).

The simulation reads the pipe without ever blocking (``Frames``): it takes what bytes are there and
unpickles only whole batches. (Through ``multiprocessing.connection``, a batch of 16 tables is
~69 KB, more than a pipe holds: the reader, told that bytes were there, then waited in ``recv`` for
the worker to be scheduled and write the rest — at 3,000 phones, 1.9 s of wall time in a 6.5 s run,
for 0.09 s of CPU time.)
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from relaysim.clients.keys import PremadeKeys
from relaysim.clients.session import Device
from relaysim.relay.identity import xeddsa_verify
from relaysim.relay.wire import kem_prekey_message, signed_prekey_message
from relaysim.sims.world.util import KeyStream

__all__ = ["PremadeSource", "frame", "premade_keys", "send_frame", "start_worker", "stop_worker"]

BATCH = 16  # phones per message from the worker
SKIP_AHEAD = 64  # phones a worker that fell behind skips past the one that asked in vain

PIPE_SIZE = 1 << 20  # the worker's pipe to the simulation, asked of Linux (F_SETPIPE_SZ): ~250 phones
_HEADER = 4  # each frame on that pipe: its length (4 bytes, big-endian), then a pickle

# (device name, account, device id, the KeyStream's seed)
Job = tuple[str, str, int, bytes]


def frame(obj: object) -> bytes:
    """``obj`` as one frame: its pickle's length (4 bytes, big-endian), then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "big") + data


def send_frame(fd: int, obj: object) -> None:
    """Write ``obj`` as one frame to the blocking file descriptor ``fd``."""
    view = memoryview(frame(obj))
    while view:
        view = view[os.write(fd, view) :]


class Frames:
    """The reading end of a pipe of frames (``send_frame``), read without blocking: ``read`` takes
    the bytes the pipe holds and returns the objects whose frames are now whole; a frame's first
    part waits in the buffer for the rest. ``ended``: the writer has closed its end."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buf = bytearray()
        self.ended = False

    def read(self, wait: float = 0.0) -> list[object]:
        """The objects whose frames are whole; with ``wait``, up to that many seconds for the pipe to
        hold something (once: a frame may still be incomplete after it)."""
        if wait > 0 and not self.ended:
            select.select([self.fd], [], [], wait)
        buf = self._buf
        while not self.ended:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self.ended = True
            buf += chunk
        out: list[object] = []
        start = 0
        while len(buf) - start >= _HEADER:
            end = start + _HEADER + int.from_bytes(buf[start : start + _HEADER], "big")
            if end > len(buf):
                break
            out.append(pickle.loads(buf[start + _HEADER : end]))
            start = end
        if start:
            del buf[:start]
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.ended = True


def premade_keys(
    account: str, device_id: int, stream_seed: bytes, one_time: int, kem_one_time: int
) -> PremadeKeys:
    """What ``Device.generate_prekeys(one_time, kem_one_time)`` computes for a phone on ``KeyStream(stream_seed)``
    made as the simulation makes it (its identity key first, then the prekeys)."""
    return _premade(account, device_id, stream_seed, one_time, kem_one_time)[0]


def _premade(
    account: str, device_id: int, stream_seed: bytes, one_time: int, kem_one_time: int
) -> tuple[PremadeKeys, list[tuple[bytes, bytes, bytes]]]:
    """``premade_keys``, and the relay's checks of the signatures the phone's registration will
    carry (its signed prekey's, its KEM prekeys'), each (identity key, message, signature) that
    ``relay.identity.xeddsa_verify`` — the relay's own check — accepts."""
    device = Device(account, device_id, rng=KeyStream(stream_seed).randbytes, pq=True)
    table = PremadeKeys(recording=True)
    device.secrets.premade = table
    bundle = device.generate_prekeys(one_time, kem_one_time)
    device.secrets.premade = None
    table.recording = False
    identity = device.identity_key
    signed = [(signed_prekey_message(bundle.signed_prekey.public), bundle.signed_prekey.signature)]
    signed += [(kem_prekey_message(k.public), k.signature) for _seed, k in device.secrets.kem.values()]
    checks = [(identity, m, sig) for m, sig in signed if xeddsa_verify(identity, m, sig)]
    return table, checks


def _serve() -> None:
    """The worker: the job list from the file named by its argument; batches of ``(name, PremadeKeys)``
    on its stdout, and None at the end; on its stdin, positions to skip to. (Its stdout is the pipe
    alone: anything printed goes to stderr.)"""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    with open(sys.argv[1], "rb") as f:
        one_time, kem_one_time, jobs = pickle.load(f)
    inbox = Connection(0, writable=False)  # where the simulation has got to, when it is ahead
    batch: list[tuple[str, PremadeKeys, list[tuple[bytes, bytes, bytes]]]] = []
    i = 0
    try:
        while i < len(jobs):
            while inbox.poll():
                i = max(i, inbox.recv())  # phones before i have registered already: skip them
            if i >= len(jobs):
                break
            name, account, device_id, seed = jobs[i]
            batch.append((name, *_premade(account, device_id, seed, one_time, kem_one_time)))
            i += 1
            if len(batch) >= BATCH:
                send_frame(out_fd, batch)
                batch = []
        send_frame(out_fd, batch)
        send_frame(out_fd, None)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the simulation has ended (or no longer reads)


def start_worker(module: str, *args: str) -> subprocess.Popen[bytes]:
    """``python -m module args`` in a fresh interpreter that finds this relaysim package, its stdin
    and stdout pipes to this process (the stdout pipe made larger, where Linux allows it)."""
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the relaysim package
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError, AttributeError, ImportError):
        import fcntl  # (not on every system: the simulation imports this module everywhere)

        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> float:
    """Stop a worker (done already, or not needed any more) and reap it: its CPU time, user + system
    seconds. (Not through Popen's methods: they reap the process, and with it its resource usage.)"""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere
        proc.wait()
        return 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


class PremadeSource:
    """The simulation's side: starts the worker on ``jobs`` (in the order the phones will register)
    and gives each phone its table when asked, if it has come."""

    def __init__(self, jobs: Sequence[Job], one_time: int, kem_one_time: int) -> None:
        # The job list goes in a file (8 MB at 100,000 phones): through the pipe, the simulation
        # would wait for the worker to start up and read it.
        fd, self._jobs_file = tempfile.mkstemp(prefix="relaysim-premade-", suffix=".pickle")
        with os.fdopen(fd, "wb") as f:
            pickle.dump((one_time, kem_one_time, list(jobs)), f, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc: subprocess.Popen[bytes] | None = start_worker(
            "relaysim.sims.world.premade", self._jobs_file
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to: Connection | None = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._from: Frames | None = Frames(os.dup(self._proc.stdout.fileno()))
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._position = {job[0]: i for i, job in enumerate(jobs)}
        self._told = 0  # the furthest position the worker was told to skip to
        self._ready: dict[str, tuple[PremadeKeys, list[tuple[bytes, bytes, bytes]]]] = {}
        # The relay's checks of the signatures in the registrations of the phones given their
        # tables, made by the worker (_premade): for relay.identity.use_verified_ahead.
        self.verified: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._passed: set[str] = set()  # phones that asked before their table came
        self.given = 0  # tables handed to phones
        self.received = 0  # tables that came from the worker
        self.missed = 0  # phones that asked before their table came
        self.hits = 0  # results the phones given a table took from it
        self.computed = 0  # ... and computed themselves (their draws were not the worker's)
        self.checks = 0  # the relay's signature checks handed over in ``verified``

    def take(self, name: str, *, wait: float = 0.0) -> PremadeKeys | None:
        """The table for device ``name``, if the worker has sent it; None otherwise. The simulation
        never waits (``wait=0``); a test may, up to ``wait`` seconds for each batch. The relay's
        checks of the signatures its registration will carry go in ``verified``."""
        ready = self._ready.pop(name, None)
        frames = self._from
        if ready is None and frames is not None:
            deadline = time.monotonic() + wait
            while True:
                try:
                    batches = frames.read(max(0.0, deadline - time.monotonic()) if wait else 0.0)
                except OSError:
                    batches = [None]
                for batch in batches:
                    if batch is None:  # the worker is done
                        break
                    assert isinstance(batch, list)
                    self.received += len(batch)
                    for n, t, checks in batch:
                        if n not in self._passed:
                            self._ready[n] = (t, checks)
                ready = self._ready.pop(name, None)
                if None in batches or frames.ended:  # done (or gone)
                    self._end_reading()
                    break
                if ready is not None or not wait or time.monotonic() >= deadline:
                    break
        if ready is None:
            self._passed.add(name)
            self.missed += 1
            self._behind(name)
            return None
        self.given += 1
        table, checks = ready
        for check in checks:
            self.verified[check] = True
        self.checks += len(checks)
        return table

    def used(self, table: PremadeKeys) -> None:
        """Count what a phone's registration took from its table, and what it computed itself."""
        self.hits += table.hits
        self.computed += table.misses

    def _behind(self, name: str) -> None:
        """The worker is behind (on a busy machine, say): tell it to go on from SKIP_AHEAD phones
        past this one, so that its tables come before their phones again."""
        position = self._position.get(name)
        to = self._to
        if position is None or to is None or position + SKIP_AHEAD <= self._told:
            return
        self._told = position + SKIP_AHEAD
        try:
            to.send(self._told)
        except OSError:  # the worker is gone
            to.close()
            self._to = None

    def _end_reading(self) -> None:
        if self._from is not None:
            self._from.close()
            self._from = None

    def close(self) -> dict[str, float]:
        """Stop the worker (if it still runs); its CPU time (user + system seconds) and the counts."""
        self._end_reading()
        if self._to is not None:
            self._to.close()
            self._to = None
        with contextlib.suppress(OSError):
            os.unlink(self._jobs_file)
        self._ready.clear()
        checks_left = len(self.verified)  # (not taken by the relay: registrations not made, or refused)
        self.verified.clear()
        self._position.clear()
        proc, self._proc = self._proc, None
        return {
            "worker_cpu_seconds": 0.0 if proc is None else stop_worker(proc),
            "given": self.given,
            "missed": self.missed,
            "hits": self.hits,
            "computed": self.computed,
            "checks": self.checks,
            "checks_left": checks_left,
        }


if __name__ == "__main__":
    _serve()
