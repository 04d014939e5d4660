"""Pattern of life: when an account is awake, where its phone is, and who is with it.

- **Daily rhythm.** The hours (UTC, on the relay's clock) of an account's own actions — the
  messages it sends (named, or sealed and attributed), the blocks it makes — not what its phone
  does by itself (logins, look-ups, deliveries). The quietest :data:`SLEEP_HOURS` hours in a row are the
  sleep window; taking its middle for :data:`LOCAL_SLEEP_MIDPOINT` local time gives a guess at the
  account's UTC offset (an assumption about people, stated as one).
- **Location trail.** The network addresses the relay saw the account's devices at, in order,
  with how long each stay lasted; a region only where the provider itself has one for the
  address (its own GeoIP table, or a disclosure's location rows).
- **Co-location.** Two accounts seen at the same address within ``window`` seconds of each other:
  the same household, office or phone-shop Wi-Fi — or the same carrier NAT.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from relaysim.sims.analysis.view import ProviderView

__all__ = ["Colocation", "Rhythm", "Stay", "colocation", "daily_rhythm", "location_trail"]

SLEEP_HOURS = 6
LOCAL_SLEEP_MIDPOINT = 3.0  # hours after local midnight: the middle of a night's sleep, 00:00-06:00
MIN_ACTIONS = 20  # fewer actions than this give no rhythm
_ACTIONS = ("send", "sealed_send", "block")  # what a person does; look-ups ride along with a first message


@dataclass(frozen=True)
class Rhythm:
    account: str
    actions: int
    hours: tuple[int, ...]  # 24 counts, UTC hour of the relay's clock
    active_hours: tuple[int, ...]  # hours with at least half the mean hourly activity
    sleep_window: tuple[int, int] | None  # (first hour, hour after the last), UTC
    utc_offset: int | None  # inferred, hours

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "actions": self.actions,
            "by_utc_hour": list(self.hours),
            "active_hours_utc": list(self.active_hours),
            "sleep_window_utc": list(self.sleep_window) if self.sleep_window else None,
            "inferred_utc_offset_h": self.utc_offset,
        }


def daily_rhythm(
    view: ProviderView, attributed: Iterable[tuple[str, float]] = (), automatic: float | None = None
) -> list[Rhythm]:
    """Per account with enough actions. ``attributed``: (sender, time) of sealed sends attributed to it.
    ``automatic``: drop a send that follows, within this many seconds, something arriving for the same
    account (accepted for it, or delivered to it): the phone's delivery receipt, sent without anyone
    awake. The provider cannot tell a receipt from a message; it can tell one that came too fast."""
    times: dict[str, list[float]] = {}
    seen: set[tuple[str, float]] = set()
    arrivals: dict[str, list[float]] = {}
    if automatic is not None:
        for o in view.observations:
            if o.time is None:
                continue
            if o.kind == "delivery" and o.account is not None:
                arrivals.setdefault(o.account, []).append(o.time)
            elif o.kind in ("send", "sealed_send") and o.recipient_account is not None:
                arrivals.setdefault(o.recipient_account, []).append(o.time)
        for ts in arrivals.values():
            ts.sort()

    def by_a_person(account: str, t: float) -> bool:
        if automatic is None:
            return True
        ts = arrivals.get(account, [])
        i = bisect.bisect_right(ts, t)
        return not (i > 0 and t - ts[i - 1] <= automatic)

    for o in view.observations:
        if o.kind in _ACTIONS and o.account is not None and o.time is not None:
            if (o.account, o.time) in seen:  # one message, a record per recipient device
                continue
            seen.add((o.account, o.time))
            if by_a_person(o.account, o.time):
                times.setdefault(o.account, []).append(o.time)
    for account, t in attributed:
        if (account, t) not in seen:
            seen.add((account, t))
            if by_a_person(account, t):
                times.setdefault(account, []).append(t)
    out = []
    for account in sorted(times):
        ts = times[account]
        hours = [0] * 24
        for t in ts:
            hours[int(t // 3600) % 24] += 1
        if len(ts) < MIN_ACTIONS:
            out.append(Rhythm(account, len(ts), tuple(hours), (), None, None))
            continue
        mean = len(ts) / 24
        active = tuple(h for h in range(24) if hours[h] >= mean / 2)
        # the quietest window; among equally quiet ones, the one in the middle of the quiet stretch
        start = min(
            range(24),
            key=lambda h: (
                sum(hours[(h + i) % 24] for i in range(SLEEP_HOURS)),
                sum(hours[(h + i) % 24] for i in range(-SLEEP_HOURS // 2, SLEEP_HOURS + SLEEP_HOURS // 2)),
                h,
            ),
        )
        mid = start + SLEEP_HOURS / 2
        offset = round(LOCAL_SLEEP_MIDPOINT - mid)
        offset = (offset + 12) % 24 - 12
        out.append(
            Rhythm(account, len(ts), tuple(hours), active, (start, (start + SLEEP_HOURS) % 24), offset)
        )
    return out


@dataclass(frozen=True, slots=True)
class Stay:
    host: str
    region: str | None  # from the provider's own table only
    first: float
    last: float
    records: int

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "region": self.region,
            "first": self.first,
            "last": self.last,
            "records": self.records,
        }


def _sightings(view: ProviderView, by_device: bool = False) -> dict[str, list[tuple[float, str]]]:
    out: dict[str, list[tuple[float, str]]] = {}
    for o in view.observations:
        if o.account is not None and o.host is not None and o.time is not None:
            who = f"{o.account}/{o.device}" if by_device and o.device is not None else o.account
            out.setdefault(who, []).append((o.time, o.host))
    for v in out.values():
        v.sort()
    return out


def location_trail(view: ProviderView) -> dict[str, list[Stay]]:
    """Per device (``account/device``, or the account where records name no device), its stays at
    each address in time order."""
    trails: dict[str, list[Stay]] = {}
    for account, rows in sorted(_sightings(view, by_device=True).items()):
        stays: list[Stay] = []
        for t, host in rows:
            if stays and stays[-1].host == host:
                s = stays[-1]
                stays[-1] = Stay(host, s.region, s.first, t, s.records + 1)
            else:
                stays.append(Stay(host, view.geoip.get(host), t, t, 1))
        trails[account] = stays
    return trails


@dataclass(frozen=True, slots=True)
class Colocation:
    a: str
    b: str
    host: str
    first: float
    times: int  # sightings of one within the window of the other's

    def to_json(self) -> dict[str, Any]:
        return {"accounts": [self.a, self.b], "host": self.host, "first": self.first, "times": self.times}


def colocation(view: ProviderView, window: float = 900.0) -> list[Colocation]:
    """Pairs of accounts seen at the same address within ``window`` seconds."""
    by_host: dict[str, list[tuple[float, str]]] = {}
    for account, rows in _sightings(view).items():
        for t, host in rows:
            by_host.setdefault(host, []).append((t, account))
    found: dict[tuple[str, str, str], list[Any]] = {}
    for host, rows in sorted(by_host.items()):
        if len({a for _, a in rows}) < 2:
            continue
        rows.sort()
        ts = [t for t, _ in rows]
        for t, a in rows:
            j = bisect.bisect_left(ts, t - window)
            for t2, b in rows[j:]:
                if t2 > t:
                    break
                if b == a:
                    continue
                x, y = (a, b) if a < b else (b, a)
                entry = found.setdefault((x, y, host), [min(t, t2), 0])
                entry[0] = min(entry[0], t2)
                entry[1] += 1
    return [Colocation(a, b, h, first, n) for (a, b, h), (first, n) in sorted(found.items())]
