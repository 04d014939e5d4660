"""Answers of the device's costliest pure steps computed ahead, on another core: the public face of
``clients._primitives.Ahead`` for a simulation's worker (``sims.world.ahead``) and its tests.

``Device.exchanges_ahead`` lists, as jobs, what decrypting a message would compute, and
``Device.session_exchanges_ahead`` what starting a session from a bundle would;
``compute_ahead`` answers jobs (in the worker); ``Ahead`` holds the answers under each function's
whole input and ``use_ahead`` installs it, so that ``X25519Pair.dh``, ``x25519_pair_from_private``,
``mlkem_decapsulate``, ``mlkem_encapsulate`` and ``_xeddsa.xeddsa_verify_each`` take a held answer instead of computing
it: the same answers either way.
"""

from relaysim.clients._primitives import (
    AHEAD_BASE,
    AHEAD_DH,
    AHEAD_ENCAPS,
    AHEAD_KEM,
    AHEAD_VERIFY,
    Ahead,
    compute_ahead,
    use_ahead,
)

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
