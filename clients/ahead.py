"""Answers of the device's costliest pure steps computed ahead, on another core: the public face of
``clients._primitives.Ahead`` for a simulation's worker (``sims.world.ahead``) and its tests.

``Device.exchanges_ahead`` lists, as jobs, what decrypting a message would compute, and
``Device.session_exchanges_ahead`` what starting a session from a bundle would;
``compute_ahead`` answers jobs (in the worker); ``Ahead`` holds the answers under each function's
whole input and ``use_ahead`` installs it, so that ``X25519Pair.dh``,
``x25519_pair_from_private``, ``mlkem_decapsulate``, ``mlkem_encapsulate`` and
``_xeddsa.xeddsa_verify_each`` take a held answer instead of computing it: the same answers either
way.
"""

from __future__ import annotations

from typing import Any

from relaysim.clients import _primitives as _p
from relaysim.clients._primitives import (
    AHEAD_BASE,
    AHEAD_DH,
    AHEAD_ENCAPS,
    AHEAD_KEM,
    AHEAD_VERIFY,
    Ahead,
    use_ahead,
)
from relaysim.clients._xeddsa import xeddsa_verify

__all__ = [
    "AHEAD_BASE",
    "AHEAD_DH",
    "AHEAD_ENCAPS",
    "AHEAD_KEM",
    "AHEAD_VERIFY",
    "Ahead",
    "compute_ahead",
    "use_ahead",
]


_VERIFIED = b"\x01"  # the answer a good signature is held under (a bad one is never held)


def compute_ahead(jobs: list[tuple[Any, ...]]) -> list[bytes | None]:
    """The answers to ``jobs`` — ``(AHEAD_DH, k, u)``, ``(AHEAD_BASE, k)``, ``(AHEAD_KEM, seed,
    ciphertext)``, ``(AHEAD_VERIFY, u, message, signature)``, ``(AHEAD_ENCAPS, public, m or None)``
    (the shared secret and the ciphertext, as one string) — in order, by the functions the device
    calls; None where the function would refuse (or a job is malformed): the asking side then
    computes it, and refuses it, itself. (Where no ``Ahead`` is installed: a worker's process.)"""
    out: list[bytes | None] = []
    for job in jobs:
        answer: bytes | None = None
        try:
            kind = job[0]
            if kind == AHEAD_DH and len(job[1]) == 32:
                answer = _p.X25519Pair(bytes(job[1]), b"").dh(job[2])
            elif kind == AHEAD_BASE:
                answer = _p.x25519_pair_from_private(job[1]).public
            elif kind == AHEAD_KEM:
                answer = _p.mlkem_decapsulate(job[1], job[2])
            elif kind == AHEAD_VERIFY and xeddsa_verify(job[1], job[2], job[3]):
                answer = _VERIFIED
            elif kind == AHEAD_ENCAPS:
                secret, ciphertext = _p.mlkem_encapsulate(job[1], job[2])
                answer = secret + ciphertext
        except (_p.AuthenticationFailed, ValueError, TypeError, IndexError):
            answer = None
        out.append(answer)
    return out
