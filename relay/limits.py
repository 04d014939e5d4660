"""What one client may make the relay do: token buckets and queue caps, without I/O.

Everything here is sans-IO: the time is always passed in (the relay core passes its own injected
clock, so a simulation's virtual clock drives the buckets just as the wall clock drives a live
relay's). Nothing reads a clock or a socket.

- :class:`Rate` is a token bucket: ``burst`` requests at once, then ``per_second`` on average.
- :class:`Limits` is every limit of the relay core, each with its default; ``None`` turns one off.
  The server's limits (bytes of unsent output per connection, connections per address, new
  connections per second per address) are in ``relay.server``.
- :class:`RateLimiter` holds the buckets, by (limit name, key). A bucket that has filled up again
  is no different from a new one, so it is forgotten: memory is bounded by the buckets in use.

The defaults (docs/protocol.md, "Limits") are generous for a person and for a phone: a person
does not send 20 messages a second for long, register 3 accounts a minute from one address, or
start sessions with 60 new accounts a minute. Signal-Server enforces the same kinds of limit
(its ``RateLimiters``: a bucket per kind, with a size and a leak rate, and a 413/429 answer with
a Retry-After header); the numbers here are ours.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, fields
from typing import Final

from relaysim.relay.wire import quoted

__all__ = [
    "DEFAULT_LIMITS",
    "UNLIMITED",
    "Limits",
    "Rate",
    "RateLimiter",
    "address_key",
    "parse_rate",
]


# The bounds of a rate (docs/protocol.md, "Limits"): a bucket refilled more slowly than once in
# ~12 days would answer waits beyond what retry_after_ms can say (a uint64 of milliseconds), and a
# rate or a burst above a billion requests is no limit any relay meets (and past 2^53 a float bucket
# no longer counts its tokens down one by one): ``off`` says "no limit".
MIN_PER_SECOND: Final = 1e-6
MAX_PER_SECOND: Final = 1e9
MAX_BURST: Final = 1e9


def _rate_problem(per_second: object, burst: object) -> str | None:
    """What is wrong with a rate of ``per_second`` and ``burst``, in words; None if nothing."""
    for value in (per_second, burst):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"the rate and the burst must be numbers, got {quoted(value)}"
    assert isinstance(per_second, int | float) and isinstance(burst, int | float)
    if not MIN_PER_SECOND <= per_second <= MAX_PER_SECOND:  # (also NaN and the infinities)
        return (
            f"the rate must be from {MIN_PER_SECOND:.6f} to {MAX_PER_SECOND:,.0f} requests a second, "
            f"got {per_second:g}"
        )
    if not 1 <= burst <= MAX_BURST:
        return f"the burst must be from 1 (one request) to {MAX_BURST:,.0f} requests, got {burst:g}"
    return None


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: ``burst`` tokens, refilled at ``per_second`` tokens a second (each within
    MIN_PER_SECOND..MAX_PER_SECOND and 1..MAX_BURST)."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        problem = _rate_problem(self.per_second, self.burst)
        if problem is not None:
            raise ValueError(f"Rate: {problem}")

    def __str__(self) -> str:
        return f"{self.per_second:g}/s, burst {self.burst:g}"


def parse_rate(text: str) -> Rate | None:
    """``"RATE/BURST"`` (requests a second, then the burst), or ``"off"``; ValueError otherwise."""
    if text.strip().lower() == "off":
        return None
    rate, sep, burst = text.partition("/")
    try:
        if not sep:
            raise ValueError
        per_second, size = float(rate), float(burst)
    except ValueError:
        raise ValueError(
            f"{quoted(text)} is not a rate: expected RATE/BURST, requests a second then the burst (e.g. 20/200), or off"
        ) from None
    problem = _rate_problem(per_second, size)
    if problem is not None:
        raise ValueError(f"{quoted(text)} is not a rate this relay can keep: {problem} (or off: no limit)")
    return Rate(per_second, size)


@dataclass(frozen=True, slots=True)
class Limits:
    """The relay core's limits. Every one has a default; None turns it off."""

    # Per recipient device: what may wait for it in the relay's queue. A send that would pass
    # either cap is refused whole with ``recipient_queue_full``; nothing already queued is lost.
    queue_envelopes: int | None = 10_000
    queue_bytes: int | None = 64 * 1024 * 1024
    # Sends (authenticated and sealed), one token per request, per sending account and per
    # source address (a sealed send over an unauthenticated connection has only its address).
    # ``create_group``, ``change_group`` and ``group_send`` spend the same tokens; the last two a token
    # for every 32 members of the group they read (relay.core.MEMBERS_PER_TOKEN), 32 for 1,024.
    send_per_account: Rate | None = Rate(20.0, 200.0)
    send_per_address: Rate | None = Rate(50.0, 500.0)
    # New accounts per source address (re-registration and linking need a logged-in device and
    # are not counted).
    register_per_address: Rate | None = Rate(3 / 60, 3.0)
    # Bundle fetches (each takes a one-time prekey of every device of the target): per requester
    # (its account when logged in, else its address) and per target account.
    fetch_per_requester: Rate | None = Rate(1.0, 60.0)
    fetch_per_target: Rate | None = Rate(6 / 60, 10.0)
    # Contact discovery, per account: each name looked up takes a token (the first upload of a
    # whole address book fits in the burst; after it, about 86,000 names a day), so that no one
    # account can walk the directory of who is registered.
    discover_per_account: Rate | None = Rate(1.0, 5000.0)
    # Key uploads per device: ``upload_prekeys``, and a device registering itself again. Each may
    # carry 102 signatures for the relay to check (100 signed ML-KEM prekeys, the signed prekey, the
    # last-resort key: ~11 ms of the relay's CPU), and without a bucket one logged-in device that
    # pipelines them holds the loop for everyone. A device uploads when its stock runs low (the
    # relay's ``prekeys_left``, at most every few minutes with ``fetch_per_target``), and sends a
    # new signed prekey every few days: a burst of 10, then one every 10 s, leaves it room.
    keys_per_device: Rate | None = Rate(6 / 60, 10.0)
    # Envelope ids an ``ack`` names that were not in the device's queue, per account. Each id costs
    # the relay a look-up whether or not it was there (an ack holds up to 1,000), and a device acks
    # what it received: a few again after a reconnect, never a stream of ids it never got. An ack
    # is refused (``rate_limited``, nothing deleted) only while the bucket is empty; the ids of an
    # ack that were not there are taken from it afterwards.
    ack_unknown_per_account: Rate | None = Rate(50.0, 1000.0)
    # Sender certificates (``get_sender_certificate``) per account: each costs the relay an Ed25519
    # signature (~50 µs), and without a bucket one logged-in device that pipelines them holds the
    # loop for everyone. A device asks for one when the one it holds has less than an hour left
    # (``clients.agent.CERTIFICATE_RENEWAL``; they last a day), the simulated phones also at every
    # login, and again at its next sealed send after one was refused: a few a day each. A burst of
    # 10 covers a phone and its linked devices all logging in at once, with room; then one a minute,
    # 60 an hour, is more than an account's devices ask for in a day (every built-in scenario runs
    # the same with it, and the live runs never meet it).
    certificates_per_account: Rate | None = Rate(1 / 60, 10.0)
    # ``get_group_state`` per source address: it needs no login (a group's state names nobody) and
    # its answer may be a whole frame (a state up to 128 KiB), so, as the other requests anyone may
    # make (registration, a sealed send, a bundle fetch without login, ``put_group_state``), it is
    # bounded by the address it comes from. A member fetches the state when it learns of a change
    # (``clients.agent``): a burst of 200 covers the members behind one address (a NAT) all fetching
    # one change at once, and 10 a second after it more than a group's changes call for.
    group_state_per_address: Rate | None = Rate(10.0, 200.0)
    # Key log reads (``get_key_log_head``, ``get_key_log_consistency``, ``get_key_log_entries``) per
    # source address, a token a request: they need no login, and a consistency proof is hashing
    # (~50-80 µs of the relay's CPU in a log of 100,000 keys) and a page of entries up to 256 leaves
    # (~140 µs with its encoding, ~13 KB). A device's self-audit reads the whole log, a page per
    # 256 keys: a burst of 5,000 is a whole audit of a log of a million keys (3,907 pages and a
    # head) from one address, and 50 a second after it reads such a log again every 80 s; an
    # address that asks without end has the relay spend under 1 % of a core on it (~7 ms a second).
    key_log_per_address: Rate | None = Rate(50.0, 5000.0)
    # Logins per source address: a token an ``auth_challenge``, which lets its connection make one
    # ``authenticate``, one XEdDSA verification (~250-300 µs of the relay's CPU, for a device there
    # or not). A device asks for one challenge at each login, once a connection, and a connection
    # that is logged in cannot ask again; new connections from one address are already held to 2 a
    # second, burst 64 (``relay.server``'s connection rate). Twice that never bites a device the
    # connection rate lets in, whatever number share the address (a NAT), a failed attempt and its
    # retry included: it bounds only a connection that asks again and again without logging in (to
    # ~1.2 ms of the relay's CPU a second per address). An operator who turns the connection rate
    # off for a big NAT should turn this off with it.
    logins_per_address: Rate | None = Rate(4.0, 128.0)
    # ``get_group`` per account, a token for every 32 members its answer lists (relay.core.
    # MEMBERS_PER_TOKEN: one for a group of up to 32, 32 for one of 1,024, each read from the store at
    # ~3.5 µs a member); a caller not in the group takes one and is refused before any member is read.
    # A member asks before each group message it sends under server fan-out (its ``group_send`` is
    # held to the account's send rate, 20 a second, and takes as many tokens of it for the members it
    # reads), after each change it makes, and, at each login, for every group it knows: a burst of
    # 1,000 covers a login in a thousand groups of up to 32 members (or 31 of 1,024), 20 a second the
    # account's sends.
    group_reads_per_account: Rate | None = Rate(20.0, 1000.0)
    # Below this many one-time prekeys, a device is told so (``prekeys_left`` in Authenticated
    # and Envelopes) and should upload more.
    prekeys_low: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("queue_envelopes", "queue_bytes", "prekeys_low"):
                if value is None and f.name != "prekeys_low":
                    continue
                if type(value) is not int or value < (0 if f.name == "prekeys_low" else 1):
                    raise ValueError(
                        f"Limits.{f.name} must be a positive integer or None, got {quoted(value)}"
                    )
            elif value is not None and not isinstance(value, Rate):
                raise ValueError(f"Limits.{f.name} must be a Rate or None, got {quoted(value)}")


def address_key(host: str) -> str:
    """What a limit "per address" counts ``host`` as: an IPv4 address as itself; an IPv6 address by
    its /64, the network one subscriber is given (RFC 4291 §2.5.1: the low 64 bits name an interface
    on it) and whose addresses a host may change or take at will (temporary addresses, RFC 8981),
    so that one network's 2^64 addresses are one address to the limits; an IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, a dual-stack socket's view of an IPv4 peer) as its IPv4 address. Anything
    that is not an address is left as it is."""
    return host if ":" not in host else _ipv6_key(host)


@functools.lru_cache(maxsize=4096)
def _ipv6_key(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])  # (a scope "%eth0" names no network)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


DEFAULT_LIMITS: Final = Limits()
UNLIMITED: Final = Limits(
    queue_envelopes=None,
    queue_bytes=None,
    send_per_account=None,
    send_per_address=None,
    register_per_address=None,
    fetch_per_requester=None,
    fetch_per_target=None,
    discover_per_account=None,
    keys_per_device=None,
    ack_unknown_per_account=None,
    certificates_per_account=None,
    group_state_per_address=None,
    key_log_per_address=None,
    logins_per_address=None,
    group_reads_per_account=None,
    prekeys_low=0,
)
"""No limits at all (a simulation of many people behind one address, a benchmark of the core)."""

_PRUNE_EVERY: Final = 4096  # buckets taken between sweeps of the full ones


class RateLimiter:
    """Token buckets by (limit name, key); the time is always passed in."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, object], tuple[float, float, Rate]] = {}  # → (tokens, at, rate)
        self._taken = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, name: str, key: object, rate: Rate | None, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0.0: now). Takes nothing."""
        if rate is None:
            return 0.0
        tokens = self._tokens(name, key, rate, now)
        return 0.0 if tokens >= cost else (cost - tokens) / rate.per_second

    def take(self, name: str, key: object, rate: Rate | None, now: float, cost: float = 1.0) -> None:
        """Take ``cost`` tokens (call :meth:`wait` first: this may leave the bucket negative)."""
        if rate is None:
            return
        self._put((name, key), self._tokens(name, key, rate, now) - cost, now, rate)

    def take_all(
        self, buckets: list[tuple[str, object, Rate | None]], now: float, cost: float = 1.0
    ) -> tuple[str, Rate, float] | None:
        """Take ``cost`` tokens (one by default) from each of ``buckets`` ((name, key, rate)), or, if
        one of them has too few now, none at all: then the first such bucket's name, rate and wait
        (seconds). The same as :meth:`wait` on each and then :meth:`take` on each, with each
        bucket's tokens computed once. (A cost above a bucket's burst is never met: check first.)"""
        counted: list[tuple[tuple[str, object], float, Rate]] = []
        for name, key, rate in buckets:
            if rate is None:
                continue
            tokens = self._tokens(name, key, rate, now)
            if tokens < cost:
                return name, rate, (cost - tokens) / rate.per_second
            counted.append(((name, key), tokens, rate))
        for bucket, tokens, rate in counted:
            self._put(bucket, tokens - cost, now, rate)
        return None

    def _put(self, bucket: tuple[str, object], tokens: float, now: float, rate: Rate) -> None:
        """What is left in ``bucket`` after a take at ``now``; every so many takes, full buckets go."""
        self._buckets[bucket] = (tokens, now, rate)
        self._taken += 1
        if self._taken % _PRUNE_EVERY == 0:
            self._prune(now)

    def _tokens(self, name: str, key: object, rate: Rate, now: float) -> float:
        held = self._buckets.get((name, key))
        if held is None:
            return rate.burst
        tokens, at, _ = held
        return min(rate.burst, tokens + max(0.0, now - at) * rate.per_second)

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, (tokens, at, rate) in self._buckets.items()
            if tokens + (now - at) * rate.per_second >= rate.burst
        ]
        for k in full:
            del self._buckets[k]
