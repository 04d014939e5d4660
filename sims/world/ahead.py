"""A phone's costliest steps computed on the second core while the message (or bundle) it will read travels.

A message's sender knows, when it sends, what the recipient's phone will compute to read it: the
Double Ratchet's DH ratchet step when the header carries a new ratchet key (two X25519 exchanges
and a key pair's public key), and for a prekey message also X3DH's four exchanges on Bob's side and
PQXDH's ML-KEM decapsulation — about two thirds of a scale run's X25519 exchanges, and the
decapsulations of the phones that keep no decapsulation key. ``Device.exchanges_ahead`` lists
them from the recipient's state when the message is sent (the next 32 bytes of the phone's
``KeyStream`` stand for the key pair it will draw). Likewise, when the relay answers a phone's
bundle fetch, what the phone will compute as it starts its sessions: the bundle's two XEdDSA
signature checks, X3DH's four exchanges on Alice's side and the ratchet's first, its two new key
pairs and PQXDH's encapsulation (``DeviceAgent.bundle_exchanges_ahead``; an encapsulation made with
OpenSSL's randomness, as a scale run makes them, is made with the worker's: as random, and taken
once). Most of those are asked earlier still, ``SESSION_LOOKAHEAD`` planned messages before the one
that starts the session (``Simulation._ask_session_ahead``), from the keys the recipient's phone
publishes: asked only when the bundle comes, they came back too late. A worker process (a fresh
interpreter, ``python -m relaysim.sims.world.ahead``) computes them with the same functions
(``clients.ahead.compute_ahead``) while the message crosses the simulated network, and the answers
wait in ``clients.ahead.Ahead`` under each function's whole input. The phone then decrypts as
always: each exchange whose input is held takes the held bytes, any other (a guess that was wrong,
an answer not back yet) is computed as usual. So every byte of a run is the same with or without it;
only the simulation process's CPU time changes (``Simulation(exchanges_ahead=True)``).

The simulation never waits for the worker: questions go out on a pipe it never blocks on (what
does not fit waits in a buffer; past ``MAX_UNSENT`` bytes, questions are dropped), and answers
are read without blocking, when a phone misses one while some are still to come. Answers not
taken (a guess that was wrong) are forgotten after ``KEEP`` newer ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from typing import Any

from relaysim.clients import ahead as _p
from relaysim.sims.world.premade import PIPE_SIZE, Frames, frame, send_frame, start_worker, stop_worker

__all__ = ["AheadWorker"]

MAX_UNSENT = 1 << 20  # bytes of questions waiting for room in the pipe; past it, questions are dropped
SPIN = 0.005  # seconds the worker polls for questions after the last one before it sleeps
KEEP = 1 << 16  # answers held, newest first: older ones not taken by then are forgotten


def spin_seconds(cores: int) -> float:
    """How long the worker polls after a question: ``SPIN`` where it has a core of its own to spin
    on, none on one core (there, polling would take the core from the simulation it serves)."""
    return SPIN if cores >= 2 else 0.0


def _cores() -> int:
    """The cores this process may run on (its affinity where the system says; else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _serve() -> None:
    """The worker: batches of jobs on its stdin, their answers (one frame each, in order) on its
    stdout, until its stdin ends. (Its stdout is the pipe alone: anything printed goes to stderr.)"""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (the simulation stops it; a ^C is the simulation's)
    frames = Frames(0)
    spin = spin_seconds(_cores())
    busy = time.monotonic()  # when the last question came
    try:
        while not frames.ended:
            # While questions keep coming, poll for the next one instead of sleeping in select: a
            # sleeping worker wakes up too late for a message that arrives a fraction of a
            # millisecond after it was sent (a core that yields to whatever else wants it).
            idle = time.monotonic() - busy > spin
            batches = frames.read(wait=1.0 if idle else 0.0)
            if not batches:
                if not idle:
                    os.sched_yield()
                continue
            for jobs in batches:
                assert isinstance(jobs, list)
                send_frame(out_fd, _p.compute_ahead(jobs))
            busy = time.monotonic()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the simulation has ended (or no longer reads)


class AheadWorker:
    """The simulation's side: starts the worker, sends it questions (``ask``), and takes its answers
    into ``table`` (a ``clients.ahead.Ahead``, to install with ``use_ahead``)."""

    def __init__(self, *, wait: float = 0.0) -> None:
        """``wait``: seconds a miss may wait for answers still to come (0: never, as a simulation runs;
        a test may, so that every answer is back before it is asked for)."""
        self._wait = wait
        self._proc: subprocess.Popen[bytes] | None = start_worker("relaysim.sims.world.ahead")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with contextlib.suppress(OSError, AttributeError, ImportError):
            import fcntl  # (not on every system)

            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # questions too
        self._to = os.dup(self._proc.stdin.fileno())
        os.set_blocking(self._to, False)
        self._from: Frames | None = Frames(os.dup(self._proc.stdout.fileno()))
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._unsent = bytearray()
        self._asked: deque[list[tuple[Any, ...]]] = deque()  # batches sent, their answers to come
        self._kept: deque[tuple[dict[Any, bytes], Any]] = deque()  # answers held, oldest first
        self.table = _p.Ahead(refill=self.refill)
        self.asked = 0  # questions sent
        self.answered = 0  # answers taken in
        self.dropped = 0  # questions not sent: the worker was too far behind

    def ask(self, jobs: list[tuple[Any, ...]], *, new_only: bool = False) -> None:
        """Send ``jobs`` (``clients.ahead.compute_ahead``'s) to the worker, unless it is too far behind.
        ``new_only``: not those whose answers are held or still to come (asked already)."""
        if new_only:
            known = self.table.known
            jobs = [job for job in jobs if not known(job)]
        if not jobs or self._to < 0:
            return
        if len(self._unsent) > MAX_UNSENT:
            self.dropped += len(jobs)
            return
        self._unsent += frame(jobs)
        self._asked.append(jobs)
        pending, key_of = self.table.pending, self.table.key
        for job in jobs:
            key = key_of(job)
            pending[key] = pending.get(key, 0) + 1
        self.asked += len(jobs)
        self._write()
        self.refill()

    def _write(self) -> None:
        try:
            sent = os.write(self._to, self._unsent)
        except BlockingIOError:
            return
        except OSError:  # the worker is gone: its answers still to come never will
            self._stop_asking()
            return
        del self._unsent[:sent]

    def refill(self) -> None:
        """Take in the answers that have come (never waits, unless made with ``wait``: then up to that
        many seconds for all of those still to come)."""
        if self._unsent and self._to >= 0:
            self._write()
        deadline = time.monotonic() + self._wait
        while self._from is not None:
            left = deadline - time.monotonic() if self._wait and self._asked else 0.0
            self._take(self._from, max(0.0, left))
            if left <= 0 or not self._asked:
                break

    def _take(self, frames: Frames, wait: float) -> None:
        try:
            batches = frames.read(wait)
        except OSError:
            batches = []
            frames.ended = True
        table, kept, pending = self.table, self._kept, self.table.pending
        for answers in batches:
            jobs = self._asked.popleft()
            if not isinstance(answers, list) or len(answers) != len(jobs):
                answers = [None] * len(jobs)  # (not the worker's answers: none taken, each computed here)
            for job, answer in zip(jobs, answers, strict=True):
                key = table.key(job)
                left = pending.pop(key, 1) - 1
                if left > 0:
                    pending[key] = left
                if answer is None:
                    continue
                where, key = table.hold(job, answer)
                kept.append((where, key))
                self.answered += 1
        while len(kept) > KEEP:
            where, key = kept.popleft()
            where.pop(key, None)
        if frames.ended:
            self._from = None
            frames.close()
            pending.clear()  # (nothing more will come)

    def _stop_asking(self) -> None:
        if self._to >= 0:
            with contextlib.suppress(OSError):
                os.close(self._to)
            self._to = -1

    def close(self) -> dict[str, float]:
        """Stop the worker; its CPU time (user + system seconds) and the counts."""
        self._stop_asking()
        if self._from is not None:
            self._from.close()
            self._from = None
        table = self.table
        table.pending.clear()
        table.dh.clear()
        table.base.clear()
        table.kem.clear()
        table.verified.clear()
        table.encaps.clear()
        self._kept.clear()
        self._asked.clear()
        proc, self._proc = self._proc, None
        return {
            "worker_cpu_seconds": 0.0 if proc is None else stop_worker(proc),
            "asked": self.asked,
            "answered": self.answered,
            "dropped": self.dropped,
            "taken": table.hits,
            "computed": table.misses,
        }


if __name__ == "__main__":
    _serve()
