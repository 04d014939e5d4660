"""Who is in a scenario and what they say: explicit people and messages, or a generated population.

A ``[generate]`` table grows a population on a social graph (networkx's Barabási–Albert or
Erdős–Rényi generator, seeded), gives each person a message rate drawn from a log-normal
distribution (heavy-tailed, as messaging volumes are), spreads their messages over the day by a
daily rhythm, and sends each to a neighbour on the graph. Message texts are short random
sentences, different from one another, so tests can look for any of them in what the relay holds.

Rates are per day and hold for any duration. A person's messages arrive as a process whose
intensity at time t is ``rate × w(hour of t) / 1 day``, where ``w`` is the daily rhythm scaled to
average 1 over the day (hours of the clock: t = 0 is midnight unless the scenario starts at a
date-time, [scenario] start). Over a run of D seconds that person sends, on
average, ``rate × activity_days(D)`` messages (``activity_days``: D / 1 d for a flat rhythm, the
rhythm's weight over [0, D) otherwise). Each person's rate is drawn once from the log-normal;
their count is rate × activity_days(D) rounded up or down at random (so its mean is exact), and
each message's time is drawn from the same intensity. People with no contacts send nothing.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, replace

from relaysim.sims.scenario import (
    DeviceOffline,
    DeviceOnline,
    DeviceSpec,
    PersonSpec,
    Scenario,
    ScenarioError,
    SeizePhone,
    generated_names,
)

__all__ = [
    "DEFAULT_RHYTHM",
    "GroupStep",
    "PlannedMessage",
    "activity_days",
    "check_population",
    "contact_graph",
    "expand_population",
    "organisation_accounts",
    "organisation_traits",
    "plan_group_steps",
    "plan_messages",
    "plan_moves",
    "population_expanded",
]

# Relative messaging activity per hour of the day (00-23): quiet at night, peaks at midday and
# in the evening. An illustrative shape, not a measured one; scenarios may give their own.
DEFAULT_RHYTHM = (
    0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7, 1.0, 1.0, 1.0, 1.1,
    1.3, 1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.5, 1.6, 1.5, 1.0, 0.5,
)  # fmt: skip

_WORDS = [
    "meet",
    "call",
    "later",
    "tonight",
    "tomorrow",
    "coffee",
    "train",
    "late",
    "early",
    "office",
    "home",
    "park",
    "news",
    "photo",
    "send",
    "bring",
    "book",
    "ticket",
    "dinner",
    "lunch",
    "doctor",
    "school",
    "market",
    "bridge",
    "river",
    "station",
    "corner",
    "window",
    "garden",
    "letter",
    "money",
    "phone",
    "charger",
    "keys",
    "jacket",
    "rain",
    "sun",
    "weekend",
    "monday",
    "friday",
    "plan",
    "change",
    "cancel",
    "confirm",
    "address",
    "number",
    "minutes",
    "hours",
    "quickly",
    "slowly",
    "maybe",
    "sure",
    "thanks",
    "sorry",
    "great",
    "fine",
    "okay",
    "please",
    "again",
    "soon",
    "never",
    "always",
]


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    id: int
    at: float
    sender: str
    recipient: str
    text: str


def _rng(seed: int, label: str) -> random.Random:
    return random.Random(f"{seed}:{label}")


def expand_population(scenario: Scenario) -> Scenario:
    """The scenario with its generated people added (a no-op without ``[generate]``, or on a
    scenario this has already expanded: the generated people are the last ``generate.people``)."""
    g = scenario.generate
    if g is None or population_expanded(scenario):
        return scenario
    rng = _rng(scenario.seed, "population")
    regions, region_w = zip(*g.regions, strict=True)
    counts, count_w = zip(*g.devices_per_person, strict=True)
    people = list(scenario.people)
    for i, name in enumerate(generated_names(g.people)):
        region = rng.choices(regions, region_w)[0]
        n_devices = rng.choices(counts, count_w)[0]
        devices = tuple(
            DeviceSpec(name, j + 1, region, f"10.{(i >> 8) & 255}.{i & 255}.{j + 1}")
            for j in range(n_devices)
        )
        people.append(PersonSpec(name, devices))
    # labelled organisations go before the generated people (who are always the last g.people)
    first = len(scenario.people)
    people[first:first] = _organisation_people(scenario)
    _check_named_devices(scenario, people)
    return replace(scenario, people=tuple(_households(scenario, people, g.people)))


def population_expanded(scenario: Scenario) -> bool:
    """Whether ``scenario``'s ``[generate]`` people are among its people (:func:`expand_population`
    was called on it): its last ``generate.people`` people bear the generated names, which no person
    given in the file may (sims.scenario refuses them)."""
    g = scenario.generate
    if g is None or g.people == 0:  # (people[-0:] is everyone)
        return True
    return [p.name for p in scenario.people[-g.people :]] == generated_names(g.people)


def _named_devices(scenario: Scenario) -> list[tuple[str, str]]:
    """(key path, device) of every device an event or a ``traffic.moves`` entry names that is not
    one of the ``[[people]]``'s: a generated one, which exists only if the seed made it."""
    given = {d.name for p in scenario.people for d in p.devices}
    paths = scenario.event_paths or tuple(f"events[{i}]" for i in range(len(scenario.events)))
    out = [
        (f"{path}.device", ev.device)
        for ev, path in zip(scenario.events, paths, strict=True)
        if isinstance(ev, DeviceOffline | DeviceOnline | SeizePhone)
    ]
    out += [(f"traffic.moves[{i}].device", m.device) for i, m in enumerate(scenario.traffic.moves)]
    return [(path, device) for path, device in out if device not in given]


def _check_named_devices(scenario: Scenario, people: list[PersonSpec]) -> None:
    named = _named_devices(scenario)
    if not named:
        return
    by_name = {p.name: p for p in people}
    have = {d.name for p in people for d in p.devices}
    for path, device in named:
        if device in have:
            continue
        person = by_name.get(device.rpartition("/")[0])
        has = (
            f"{person.name} has {len(person.devices)} device{'s' if len(person.devices) > 1 else ''}"
            if person is not None
            else "no such person"
        )
        raise ScenarioError(
            scenario.source,
            path,
            f"expected a device the seed generated (with seed {scenario.seed}, {has}; how many devices a "
            f"generated person has depends on the seed), got {device!r}",
        )


def check_population(scenario: Scenario) -> None:
    """Raise ScenarioError, before anything runs, if an event or a move names a generated device that
    the scenario's seed does not make (``expand_population`` checks the same as it builds)."""
    if scenario.generate is not None and _named_devices(scenario):
        expand_population(scenario)


def contact_graph(scenario: Scenario) -> dict[str, list[str]]:
    """Each generated person's contacts (sorted), from the seeded graph model. A ``[generate]``
    scenario not yet expanded (its generated people not among its people) is a ValueError naming
    :func:`expand_population` (it was an IndexError)."""
    import networkx as nx

    g = scenario.generate
    if g is None:
        return {}
    if not population_expanded(scenario):
        raise ValueError(
            f"scenario {scenario.name!r}: its [generate] people are not among its people; call "
            "relaysim.sims.world.traffic.expand_population(scenario) first"
        )
    names = [p.name for p in scenario.people][-g.people :]
    if g.graph_model == "barabasi-albert":
        graph = nx.barabasi_albert_graph(g.people, g.graph_m, seed=scenario.seed)
    else:
        p = min(1.0, 2 * g.graph_m / max(1, g.people - 1))
        graph = nx.fast_gnp_random_graph(g.people, p, seed=scenario.seed)
    return {names[n]: sorted(names[m] for m in graph.neighbors(n)) for n in sorted(graph.nodes)}


def _sentence(rng: random.Random, serial: int) -> str:
    choice = rng.choice
    words = [choice(_WORDS) for _ in range(rng.randint(3, 9))]
    # a serial number keeps every text distinct, so each can be looked for on its own
    return f"{' '.join(words)} #{serial}"


def _activity(
    duration: float, rhythm: tuple[float, ...], offset: float = 0.0
) -> tuple[list[float], list[float]]:
    """The run cut at every hour boundary of the clock: each piece's start and the cumulative activity
    (in days of average activity) up to its end. ``offset``: the clock's time of day (seconds after
    midnight UTC) at t = 0, non-zero when the scenario starts at a date-time (Scenario.epoch)."""
    scale = 24 / sum(rhythm)  # so that the rhythm averages 1 over the day
    starts: list[float] = []
    cumulative: list[float] = []
    total = 0.0
    t = 0.0
    while t < duration:
        hour = int((offset + t) // 3600)
        end = min(duration, (hour + 1) * 3600.0 - offset)
        starts.append(t)
        total += rhythm[hour % 24] * scale * (end - t) / 86400
        cumulative.append(total)
        t = end
    return starts, cumulative


def activity_days(duration: float, rhythm: tuple[float, ...] = DEFAULT_RHYTHM) -> float:
    """How many days' worth of messages a run of ``duration`` seconds from midnight holds under
    ``rhythm``: a person with a rate of r messages a day sends r × this many on average."""
    cumulative = _activity(duration, rhythm)[1]
    return cumulative[-1] if cumulative else 0.0


def plan_messages(scenario: Scenario, graph: dict[str, list[str]] | None = None) -> list[PlannedMessage]:
    """Every message of the run, in time order, with ids from 1. ``graph``: ``contact_graph(scenario)``
    when the caller has already built it."""
    planned: list[tuple[float, str, str, str]] = []
    for conv in scenario.conversations:
        for m in conv.messages:
            planned.append((m.at, m.sender, m.recipient, m.text))
    g = scenario.generate
    if g is not None:
        rng = _rng(scenario.seed, "traffic")
        contacts = contact_graph(scenario) if graph is None else graph
        rhythm = g.daily_rhythm or DEFAULT_RHYTHM
        duration = scenario.duration
        starts, cumulative = _activity(duration, rhythm, scenario.epoch % 86400)
        days = cumulative[-1] if cumulative else 0.0
        pieces = range(len(starts))
        sigma = g.messages_per_day_sigma
        mu = math.log(g.messages_per_day_mean) - sigma * sigma / 2  # so that the mean is the mean
        # Each person's rate comes from a stream of its own, one draw per person in order, so that it
        # belongs to the person: the same people are the heavy writers whatever the duration, and
        # doubling the mean doubles every rate.
        rates = _rng(scenario.seed, "rates")
        serial = 0
        # rng.choices(pieces, cum_weights=cumulative)[0], as random.Random.choices computes it (the
        # same one draw): a bisection of the cumulative weights, without its per-call checks (a
        # million messages at the scale target)
        total, last = (cumulative[-1] + 0.0, len(pieces) - 1) if pieces else (0.0, 0)
        random_, choice = rng.random, rng.choice
        latest = math.nextafter(duration, 0.0)
        for person, friends in contacts.items():
            rate = rates.lognormvariate(mu, sigma)
            if not friends:
                continue
            expected = rate * days
            n = int(expected) + (1 if random_() < expected - int(expected) else 0)
            for _ in range(n):
                # a piece of the run in proportion to its activity, then a uniform time within it
                i = bisect.bisect(cumulative, random_() * total, 0, last)
                start = starts[i]
                end = starts[i + 1] if i < last else duration
                at = min(start + random_() * (end - start), latest)
                serial += 1
                planned.append((at, person, choice(friends), _sentence(rng, serial)))
        planned.extend(_organisation_visits(scenario, list(contacts)))
        planned.extend(_behaviour(scenario, planned, list(contacts)))
    planned.sort(key=lambda p: p[0])
    return [PlannedMessage(i + 1, at, s, r, text) for i, (at, s, r, text) in enumerate(planned)]


# --- [traffic]: answers, popular accounts, background, shared and changing addresses ------------


def _households(scenario: Scenario, people: list[PersonSpec], generated: int) -> list[PersonSpec]:
    """``traffic.households`` of the generated people grouped 2-4 to a home (or an office's NAT):
    every device in a group goes out from the group's one address."""
    share = scenario.traffic.households
    if share <= 0:
        return people
    rng = _rng(scenario.seed, "households")
    first = len(people) - generated
    chosen = [i for i in range(first, len(people)) if rng.random() < share]
    out = list(people)
    home = 0
    while len(chosen) >= 2:
        size = min(len(chosen), rng.randint(2, 4))
        group, chosen = chosen[:size], chosen[size:]
        address = f"172.16.{(home >> 8) & 255}.{home & 255}"
        home += 1
        for i in group:
            p = out[i]
            out[i] = replace(p, devices=tuple(replace(d, address=address) for d in p.devices))
    return out


def _poisson_times(rng: random.Random, per_hour: float, duration: float) -> list[float]:
    out: list[float] = []
    if per_hour <= 0:
        return out
    t = rng.expovariate(per_hour / 3600)
    while t < duration:
        out.append(t)
        t += rng.expovariate(per_hour / 3600)
    return out


def _behaviour(
    scenario: Scenario, planned: list[tuple[float, str, str, str]], names: list[str]
) -> list[tuple[float, str, str, str]]:
    """The ``[traffic]`` messages added to generated traffic: popular accounts' streams, background
    pairs, and answers (turn-taking, each after a log-normal delay with the given median). A random
    stream of its own, so traffic without these keys is what it was."""
    tr = scenario.traffic
    if len(names) < 2:
        return []
    rng = _rng(scenario.seed, "behaviour")
    serial = 10_000_000  # texts stay distinct from the graph traffic's
    extra: list[tuple[float, str, str, str]] = []

    def text() -> str:
        nonlocal serial
        serial += 1
        return _sentence(rng, serial)

    popular = sorted(rng.sample(names, min(tr.popular, len(names))))
    for star in popular:
        for at in _poisson_times(rng, tr.popular_messages_per_hour, scenario.duration):
            sender = rng.choice(names)
            if sender != star:
                extra.append((at, sender, star, text()))
    for at in _poisson_times(rng, tr.background_per_hour, scenario.duration):
        a, b = rng.sample(names, 2)
        extra.append((at, a, b, text()))
    if tr.reply_probability > 0:
        answers: list[tuple[float, str, str, str]] = []
        mu = math.log(max(tr.reply_delay, 1e-3))
        for at, sender, recipient, _text in [*planned, *extra]:
            if recipient in popular:
                continue  # a popular account does not answer its stream
            turn = 1
            while turn < tr.max_turns and rng.random() < tr.reply_probability:
                at += rng.lognormvariate(mu, 1.0)
                if at >= scenario.duration:
                    break
                sender, recipient = recipient, sender
                answers.append((at, sender, recipient, text()))
                turn += 1
        extra.extend(answers)
    return extra


GROUP_PREFIX = "group:"  # a group message's PlannedMessage.recipient: "group:<name>"


@dataclass(frozen=True, slots=True)
class GroupStep:
    """One step of a ``[[groups]]`` timeline as a run carries it: a message written to the group
    (``message``, with the group's ``members`` when it is written and the devices that must read it),
    or a member leaving (``leaver``: every device of that person forgets its sender key)."""

    at: float
    group: str
    message: PlannedMessage | None = None
    members: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()  # device names: every member's devices but the writer's own phone
    leaver: str | None = None


def plan_group_steps(scenario: Scenario, last_id: int) -> list[GroupStep]:
    """Every group's messages and leaves, group by group in the file's order (message ids after
    ``last_id``, the 1:1 messages'). Members are taken as the timeline stands when each message is
    written, in the file's order: a message and a leave at the same moment happen in the order the
    timeline gives them. Joins need no step: a member added is simply addressed from then on."""
    devices = {p.name: tuple(d.name for d in p.devices) for p in scenario.people}
    steps = []
    next_id = last_id
    for g in scenario.groups:
        current = set(g.members)
        for c in g.timeline:
            if c.kind == "join":
                current.add(c.person)
            elif c.kind == "leave":
                current.discard(c.person)
                steps.append(GroupStep(c.at, g.name, leaver=c.person))
            elif c.kind == "message":
                next_id += 1
                members = tuple(sorted(current))
                recipients = tuple(n for a in members for n in devices[a] if n != f"{c.person}/1")
                m = PlannedMessage(next_id, c.at, c.person, f"{GROUP_PREFIX}{g.name}", c.text)
                steps.append(GroupStep(c.at, g.name, m, members, recipients))
    return steps


def plan_moves(scenario: Scenario) -> list[tuple[float, str, str]]:
    """(time, device name, new address) for every change of network: ``traffic.moves`` as given, and
    for ``traffic.mobile`` of the generated people, ``moves_per_day`` moves of their first phone
    (Poisson), each to an address of a carrier's pool."""
    tr = scenario.traffic
    moves = [(m.at, m.device, m.address) for m in tr.moves]
    g = scenario.generate
    if g is not None and tr.mobile > 0 and tr.moves_per_day > 0:
        rng = _rng(scenario.seed, "mobility")
        n = 0
        for p in scenario.people[-g.people :]:
            if rng.random() >= tr.mobile:
                continue
            for at in _poisson_times(rng, tr.moves_per_day / 24, scenario.duration):
                n += 1
                moves.append((at, p.devices[0].name, f"100.64.{(n >> 8) & 255}.{n & 255}"))
    return sorted(moves)


# --- labelled organisations ([generate] organisations): MetaPhone's clinics, pharmacies, lawyers ------


def organisation_accounts(scenario: Scenario) -> dict[str, str]:
    """Account → kind of every organisation ``[generate] organisations`` makes (``clinic-1``, …): what
    a public directory of businesses lists: the labels an analyst takes from public sources, as MetaPhone
    re-identified numbers automatically (32 % of 30,000; docs/papers.md)."""
    g = scenario.generate
    if g is None:
        return {}
    return {f"{kind}-{i + 1}": kind for kind, n in g.organisations for i in range(n)}


def _organisation_people(scenario: Scenario) -> list[PersonSpec]:
    g = scenario.generate
    assert g is not None
    region = g.regions[0][0]
    out = []
    for n, name in enumerate(organisation_accounts(scenario)):
        address = f"198.18.{(n >> 8) & 255}.{n & 255}"  # each its own office line
        out.append(PersonSpec(name, (DeviceSpec(name, 1, region, address),)))
    return out


def organisation_traits(scenario: Scenario) -> dict[str, dict[str, str]]:
    """Ground truth: generated person → {kind: the organisation of that kind they contact}. Each kind's
    ``[generate] trait_probability`` is the share of the generated people who hold its trait: exactly
    that share of them, rounded (at least one for a share above 0), drawn at random from a stream of
    its own, so a small population shows the paper's shares rather than a draw's distance from them."""
    g = scenario.generate
    if g is None or not g.organisations:
        return {}
    rng = _rng(scenario.seed, "organisations")
    by_kind: dict[str, list[str]] = {}
    for account, kind in organisation_accounts(scenario).items():
        by_kind.setdefault(kind, []).append(account)
    people = generated_names(g.people)
    out: dict[str, dict[str, str]] = {}
    for kind, share in g.trait_probability:
        holders = trait_holders(share, len(people))
        for i in sorted(rng.sample(range(len(people)), holders)):  # (in the people's order)
            out.setdefault(people[i], {})[kind] = rng.choice(by_kind[kind])
    return {person: out[person] for person in people if person in out}


def trait_holders(share: float, people: int) -> int:
    """How many of ``people`` hold a trait of ``share``: the share, rounded, and at least one if above 0."""
    return 0 if share <= 0 else min(people, max(1, round(share * people)))


def _organisation_visits(scenario: Scenario, names: list[str]) -> list[tuple[float, str, str, str]]:
    """One or two messages from each person to each organisation they contact, at random times."""
    traits = organisation_traits(scenario)
    if not traits:
        return []
    rng = _rng(scenario.seed, "organisation-visits")
    serial = 20_000_000  # texts stay distinct from the other traffic's
    out = []
    for person in names:
        for _kind, org in sorted(traits.get(person, {}).items()):
            for _ in range(1 + (rng.random() < 0.5)):
                serial += 1
                at = min(rng.random() * scenario.duration, math.nextafter(scenario.duration, 0.0))
                out.append((at, person, org, _sentence(rng, serial)))
    return out
