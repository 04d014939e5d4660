"""Scenario files: TOML in, validated frozen values out, and errors that say exactly what is wrong.
(docs/scenarios.md is the page for a scenario's writer: a whole file, each table's keys and defaults.)

A scenario names people and their devices, conversations (given message by message, or
generated from a social-graph model), the network, relay settings, a duration, a seed and a
timeline of events. Every problem in a file is reported as

    two-friends.toml: people[1].devices[0].region: expected one of 'pk', 'us', got 'mars' (line 24)

naming the file, the key path, the bad value and what was expected, and the line the key path is
written on when the text says it for sure (``_line_of``).

Nothing wrong runs: a file is refused (``relaysim run`` exits with status 2 and prints that one
line) rather than run doing something other than what it says. In particular:

- Numbers are finite everywhere (TOML's ``nan`` and ``inf`` are refused), counts are integers
  (``true`` is not 1), probabilities lie in [0, 1], keys are known. ``seed`` is an integer from 0
  to 2**63 − 1 (``MAX_SEED`` says why), as is ``relaysim run --seed``. Latencies and jitter
  (``network`` latency_ms, jitter_ms, a latency rule's ``ms``, ``defences`` exit_latency_ms) are
  from 0 to 60,000 ms (``MAX_LATENCY_MS``, a minute each way: far beyond any real path, a
  geostationary satellite hop included; an outage is a partition with ``mode = "hold"``). Jitter
  is added to the latency, a uniform draw from 0 to ``jitter_ms``, so it may exceed the latency
  and never makes a delay negative.
- Times are seconds of simulated time, written as a number or as a string with a unit:
  ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, or combined, ``"1h30m"``. t = 0 is the scenario's
  ``[scenario] start`` (midnight UTC of a date, or the exact instant of a date-time; a date-time
  without an offset is UTC) and without one midnight of 2026-01-01 UTC (``SIM_EPOCH``): the
  relay's clock, the transcript's ``at``, served orders and the disclosures all read that
  calendar. A daily rhythm follows the clock's hours (from the start of the run when it starts
  at midnight). ``duration`` is positive and at most ``"365d"`` (``MAX_DURATION``), and so are
  ``[traffic]``'s median delays, ``reply_delay`` and ``read_delay``.
- A window (a device's ``offline`` window, a partition, a legal process's ``from``) that starts
  at or after the end of the run is refused, as is a legal process's ``to`` after the end (a
  running order that reaches the end of the run is answered then; one that would expire later
  cannot be). A window that starts within the run may end after it. A device's offline windows
  may not overlap. A legal process's times are read as its instrument reads them: one that looks
  forward (a pen register order, a wiretap order) collects from service (``at``, or a later ``from``: an
  earlier one is refused, it would change nothing) until ``to`` or ``withdrawn``, which therefore
  come after both (``withdrawn`` by the end of the run, and before ``to``: an order that has
  lapsed can no longer be withdrawn; ``answered``, when a provider that did not comply gave its
  response, between service and the withdrawal); one that looks back
  covers what is held at service, so its ``from`` is before ``at`` (a search warrant on a
  backup's custodian: its ``from`` and ``to`` bound the backed-up messages handed over, see
  relay.backup). Scripted messages are
  sent before the end; events happen by the end.
- Regions are names you choose (not empty or blank, no control characters). The regions of a scenario are the relay's
  and its devices' (``[[people]]`` devices and ``[generate]`` regions); a latency rule or a
  partition that names any other region is refused (it would silently do nothing), as is a
  partition that names them all (it would cut no path) or one of them twice. When
  ``network.latency`` gives rules, every device's region must be one a rule names or the relay's:
  a device in any other region would silently get the default latency.
- Addresses (a device's, the relay's) are IPv4 or IPv6 addresses. A person has at most 64
  devices (``relay.wire.MAX_DEVICES_PER_ACCOUNT``, the most the relay registers to one account),
  ghost devices (``ghost_device`` demands) included.
- A scripted text fits the frames that carry it (``max_text_bytes``): a send carries one envelope
  per device of its recipient, and a frame is at most ``relay.wire.DEFAULT_MAX_FRAME_SIZE`` bytes
  (256 KiB; about 252 KiB of text to a single device, less to several or under ``pow2`` padding).
  It holds no NUL (U+0000): the HTML report's parser drops it (WHATWG HTML, "The 'in body' insertion
  mode"). Every other C0 control character (U+0001 to U+001F) and DEL (U+007F) is kept, as no output
  drops or changes one: the transcript's JSON escapes it (``\\u001b``) and reads it back as it was;
  the Markdown files (``relay/mdtext.py``) and the HTML report (``html.escape``) write it as it is, and
  HTML's parser keeps it (a "control-character-in-input-stream" parse error, no more); the terminal
  shows it escaped. A carriage return (U+000D), alone or before a line feed, is a line break, as a
  line feed is: the transcript keeps it, the Markdown files write it as a break (``<br>``), HTML's
  parser reads it as a line feed ("Preprocessing the input stream"), a counterfactual's code block
  shows it as ``\\r``. (A line break written ``\\r\\n`` in a scenario was taken, and is: refusing it
  would lose what is accepted.)
- Names are unique: people, legal processes (each names its disclosure's files, so not even case may
  be all that tells two apart), latency rules (one per pair of regions), the group of a
  ghost_participant demand (one ghost per group). The scenario's name names its output folder:
  letters, digits, '_', '.', '-'. Names that become file or folder names (the scenario's, a legal
  process's) are never ``.`` or ``..`` (no '/' either: nothing is written outside the run's folder),
  never a Windows device name (``nul``, ``con``, ``com1``…, with any extension: Windows opens the
  device, and ``disclosures/nul.json`` would be written nowhere), and a legal process is never
  named ``relay`` (in any case): ``analysis/relay.json`` is the analysis of the relay's own
  records, beside ``analysis/NAME.json`` of each disclosure. Events, legal process targets and
  ghost devices name someone in the scenario; with ``[generate]`` the generated people are ``p0``, ``p1``, … (zero-padded to the
  width of the count, e.g. ``p0007`` of 1000), each with at most as many devices as
  ``devices_per_person`` allows (how many a generated person has depends on the seed).

Partitions cut the regions they list off from every other region from ``from`` to ``to``. What
happens to a packet that would cross one is chosen per partition by ``mode``:

- ``"drop"`` (the default): a frame carrying a message toward the relay, or a delivery push
  toward a device, is lost (the message is then lost, or the push fetched again later, see
  sims.world.simulation); control frames (registration, fetches, receipts) ride a connection that
  retransmits and are not dropped.
- ``"hold"``: every frame that would cross it, in either direction, waits until the partition
  heals and then travels with the usual latency (as TCP retransmits across an outage). Nothing
  is lost to the partition; a frame held past the end of the run never arrives.

``[generate]``'s ``messages_per_day`` is a rate per day whatever the duration: with a flat
``daily_rhythm`` a person with rate r sends r × duration / 1 d messages on average; with a rhythm,
each hour counts by its weight (so a 2 h run from midnight, when few write, holds fewer than 2/24
of a day's messages; see sims.world.traffic). A person with no contact on the graph sends nothing.

The file format, by example (every table but ``[scenario]`` and ``[[people]]`` is optional)::

    [scenario]
    name = "two-friends"
    description = "Two people, a dozen messages, Bob's phone offline for an hour."
    duration = "4h"
    seed = 7
    # Either of these instead of [relay] profile (see sims.report and sims.matrix):
    # compare_profiles = ["bes", "bbm-consumer"]  # run once per profile; DIR/<profile>/, DIR/comparison.md
    # matrix = true         # run under every real profile; DIR/matrix.json and DIR/matrix.md

    [network]
    latency_ms = 60          # between any two regions not listed below
    jitter_ms = 10
    loss = 0.0               # probability a packet is lost
    duplication = 0.0        # probability a packet arrives twice
    latency = [{ between = ["pk", "us"], ms = 180 }]
    partitions = [{ regions = ["pk"], from = "2h", to = "2h10m", mode = "drop" }]  # or "hold"

    [relay]
    region = "us"
    profile = "signal"       # what the relay records (see the lawful-access profiles)
    sealed_sender = true

    [[people]]
    name = "alice"
    region = "pk"            # the default for her devices (as may be address)
    devices = [{ region = "pk", address = "203.0.113.7", offline = [["1h", "2h"]] }]

    [[conversations]]
    between = ["alice", "bob"]
    messages = [{ at = "10m", from = "alice", text = "hi" }]

    [generate]               # instead of, or beside, explicit people and conversations
    people = 1000
    devices_per_person = { one = 0.8, two = 0.2 }
    graph = { model = "barabasi-albert", m = 3 }
    messages_per_day = { mean = 20, sigma = 1.0 }   # log-normal per person
    regions = { pk = 0.5, us = 0.5 }

    [[events]]
    at = "3h"
    kind = "device_offline"
    device = "bob/1"
"""

from __future__ import annotations

import argparse
import calendar
import errno
import ipaddress
import itertools
import math
import os
import re
import stat
import sys
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from relaysim.sims.analysis.runfiles import MAX_SHOWN, brief
from relaysim.sims.numbers import MAX_SEED, SEED_BOUNDS

_brief = brief

__all__ = [
    "EVENT_TYPES",
    "MAX_DURATION",
    "MAX_LATENCY_MS",
    "MAX_SEED",
    "SIM_EPOCH",
    "Conversation",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceSpec",
    "EscrowKeyStolen",
    "Event",
    "ExceptionalAccess",
    "GenerateSpec",
    "IdentitySwap",
    "LatencyRule",
    "LegalProcessEvent",
    "NetworkSpec",
    "Partition",
    "PersonSpec",
    "RelaySpec",
    "Scenario",
    "ScenarioError",
    "ScriptedMessage",
    "SeizePhone",
    "TimelineEvent",
    "VerifySafetyNumber",
    "generated_names",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "read_scenario_text",
    "read_toml",
    "scenario_from_data",
    "seed_arg",
    "seed_problem",
]

EVENT_KINDS = {
    "device_offline": "a device loses its connection until a matching device_online",
    "device_online": "a device reconnects and drains its queue",
    "seize_phone": "a device is seized: its stored keys and history are copied at that moment",
    "legal_process": "legal process is served on the relay's operator (process, jurisdiction, target, from, to, name, "
    "profiles)",
    "exceptional_access": "the provider is made to change its design: key_escrow, global_key, ghost_device or "
    "ghost_participant",
    "escrow_key_stolen": "the escrow agent's private key leaks: whoever has it opens every escrowed message",
    "relay_swaps_identity": "a malicious relay delivers an attacker's first message to contact, labelled as victim's",
    "verify_safety_number": "who compares safety numbers with whom in person (and marks whom verified if they match)",
}
EXCEPTIONAL_DEMANDS = ("key_escrow", "global_key", "ghost_device", "ghost_participant")
PARTITION_MODES = ("drop", "hold")
MAX_DURATION = 365 * 86400.0  # "365d": a year of simulated time is the longest run
# The largest scenario file read: far beyond any written by hand or listing people ([generate] makes
# a million in a few lines); a larger "scenario" is some other file, or a device (/dev/zero) that
# would be read until memory ran out.
MAX_SCENARIO_BYTES = 64 * 1024 * 1024
# The deepest a scenario's arrays and tables nest, the file's top level counted: a device's offline
# windows are 7 deep ([[people]] devices = [{ offline = [["1h", "2h"]] }]); the rest is room.
MAX_NESTING = 32
# The longest latency or jitter a scenario may give, in ms: a minute each way. A real path takes well
# under a second (a geostationary satellite hop about 0.3 s); a link that is down is a partition.
MAX_LATENCY_MS = 60_000.0
# The relay's clock at simulated t = 0 when the scenario has no [scenario] start: 2026-01-01T00:00:00Z,
# a fixed date, so runs stay byte-identical. A dated scenario starts its own calendar (Scenario.epoch).
SIM_EPOCH = 1_767_225_600
DEVICE_COUNTS = {"one": 1, "two": 2, "three": 3, "four": 4}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# d, h, m and s, each at most once and in that order ("1h30m", not "30m1h" or "1h1h"); ASCII digits only
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_DURATION = re.compile("".join(f"(?:{_NUMBER}{unit})?" for unit in "dhms"))


class ScenarioError(ValueError):
    """A scenario file is broken. The message names the file, the key path, the value and what was
    expected, and, when the file's text is at hand, ends with the line the key path is written on
    (``line``; tomllib keeps no positions: sims.scenario._line_of finds it in the text)."""

    def __init__(self, source: str, path: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.path = path
        self.message = message
        self.line = line
        # (a key of 5,000 characters, unknown, is named cut short, as a value is: the path as it is
        # stays in .path, which finds its line)
        shown = path if len(path) <= 2 * MAX_SHOWN else brief(path, "s")
        text = f"{source}: {shown}: {message}" if path else f"{source}: {message}"
        super().__init__(text if line is None else f"{text} (line {line})")

    def __reduce__(self) -> tuple[Any, ...]:
        # (made again from its own arguments: pickle's default passes only the message, and a sweep's
        # worker process hands its exceptions back pickled)
        return (type(self), (self.source, self.path, self.message, self.line))


# A line of TOML that opens a table ([a.b], [[a]]) or sets a key (a = ..., a.b = ...), with bare keys
# (a scenario's keys are all bare: sims.scenario reads no quoted key); a comment may follow a header.
_TOML_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*(\]\]?)\s*(?:#.*)?")
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*=(.*)")


def _resolve(name: str, arrays: dict[str, int]) -> str:
    """A header's dotted name as the validator names it: an array of tables it passes through is
    its last element (``[[people.devices]]`` under the second ``[[people]]``: ``people[1].devices``)."""
    path = ""
    for part in name.split("."):
        path = f"{path}.{part}" if path else part
        if path in arrays:  # (each is named as resolved: people, people[1].devices)
            path = f"{path}[{arrays[path]}]"
    return path


_TOML_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _array_elements(text_lines: list[str], n: int, value: str) -> tuple[list[tuple[int, bool]], int] | None:
    """Where each element of the array ``value`` (a key's value, from line ``n``, going on over the
    lines after) is: (its line, whether all of it is on that line), and the line the array ends
    on; None if it cannot be followed (a multi-line string in it, or no end)."""
    elements: list[tuple[int, bool]] = []
    depth, expecting, started, line, s, i = 0, False, 0, n, value, 0

    def begin() -> None:
        nonlocal expecting, started
        if depth == 1 and expecting:
            expecting, started = False, line

    while True:
        if i >= len(s):
            if line >= len(text_lines):
                return None
            s, i, line = text_lines[line], 0, line + 1
            continue
        c = s[i]
        if c in "\"'":
            string = _TOML_STRING.match(s, i)
            if s.startswith(c * 3, i) or string is None:
                return None
            begin()
            i = string.end()
            continue
        if c == "#":
            i = len(s)
            continue
        if not c.isspace():
            if c in "]}" or c == ",":
                if depth == 1 and started:
                    elements.append((started, started == line))
                    started = 0
                if c == ",":
                    expecting = depth == 1
                else:
                    depth -= 1
                    if depth == 0:
                        return elements, line
            else:
                begin()
                if c in "[{":
                    depth += 1
                    expecting = expecting or depth == 1
        i += 1


def _key_lines(text: str) -> dict[str, tuple[int, bool, bool]]:
    """Each key path a scenario's TOML text writes at the start of a line, as the validator names it
    (``relay.profile``, ``events[2]``, ``events[2].device``, ``conversations[0].messages[3]``) →
    (its line from 1, whether what is inside it is on that line, whether it is a table). A key
    inside an inline table (``devices = [{ region = ... }]``) is not at a line's start: its
    enclosing key or array element is. Lines inside a multi-line string are skipped. Lines end at
    line feeds alone (a CR before one dropped), as TOML's and tomllib's do: ``str.splitlines`` also
    breaks at U+2028, U+2029 and U+0085 (NEL), which a TOML string may hold raw, and every line
    after one was named a line too far on."""
    text_lines = [line.removesuffix("\r") for line in text.split("\n")]
    lines: dict[str, tuple[int, bool, bool]] = {}
    arrays: dict[str, int] = {}  # an array of tables, as the validator names it → its last index
    table, closing, skip = "", "", 0
    for n, line in enumerate(text_lines, 1):
        if n <= skip:  # the rest of a multi-line array, whose elements are found
            continue
        if closing:  # inside a multi-line string: does this line end it?
            if line.count(closing) % 2:
                closing = ""
            continue
        header = _TOML_HEADER.fullmatch(line)
        if header and (header[1] == "[[") == (header[3] == "]]"):
            parent, _dot, last = re.sub(r"\s+", "", header[2]).rpartition(".")
            name = f"{_resolve(parent, arrays)}.{last}" if parent else last
            if header[1] == "[[":
                arrays[name] = arrays.get(name, -1) + 1
                name = f"{name}[{arrays[name]}]"
            table = name
            lines.setdefault(table, (n, False, True))
            continue
        key = _TOML_KEY.match(line)
        if key:
            path = re.sub(r"\s+", "", key[1])
            # a dotted key (profile.name = ...) writes the tables it passes through on its line
            parts = path.split(".")
            for i in range(1, len(parts)):
                within = ".".join(parts[:i])
                lines.setdefault(f"{table}.{within}" if table else within, (n, False, True))
            path = f"{table}.{path}" if table else path
            value = key[2]
            for quotes in ('"""', "'''"):
                if value.count(quotes) % 2:
                    closing = quotes
            bare = _TOML_STRING.sub("", value)
            whole = not closing and bare.count("[") == bare.count("]") and bare.count("{") == bare.count("}")
            lines.setdefault(path, (n, whole, False))
            if not whole and not closing and value.lstrip().startswith("["):
                found = _array_elements(text_lines, n, value)
                if found is not None:
                    elements, skip = found
                    for k, (at, alone) in enumerate(elements):
                        lines.setdefault(f"{path}[{k}]", (at, alone, False))
    return lines


def _line_of(text: str, path: str) -> int | None:
    """The line ``path`` is written on in ``text``: its own; for a key of a table the file does not
    write (a missing one), the table's header; for a part of a key's value or an array's element
    (an inline table's key), that value's line if all of it is on it. None when the text cannot say."""
    found = _key_lines(text)
    inside = path
    while inside not in found:
        if not re.search(r"[.\[]", inside):
            return None
        inside = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", inside)
    line, whole, is_table = found[inside]
    return line if inside == path or is_table or whole else None


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"1h30m"``: days, hours, minutes and seconds (``d``,
    ``h``, ``m``, ``s``), each at most once and in that order, each an ASCII number (``1.5h``).
    Raises ValueError saying what it wanted."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like 90, "15m" or "1h30m", got {_brief(value)}')
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        raise ValueError(f"expected a finite duration, got {_too_large(value)}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"expected a non-negative duration, got {_brief(value)}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if text and match:
            seconds = float(
                sum(float(n) * _UNITS[u] for n, u in zip(match.groups(), "dhms", strict=True) if n)
            )
            if not math.isfinite(seconds):
                raise ValueError(f"expected a finite duration, got {_brief(value)} (too large for a number)")
            return seconds
    raise ValueError(f'expected a duration like 90, "15m" or "1h30m", got {_brief(value)}')


def _too_large(value: int) -> str:
    """An integer too large for a float, in words: its sign and how many digits it has (the digits
    themselves, up to 4,300 of them, would be the whole error message)."""
    return f"{'a negative' if value < 0 else 'an'} integer of {len(str(abs(value))):,} digits (too large for a number)"


def seed_problem(seed: object) -> str | None:
    """What is wrong with ``seed`` as a scenario's seed (an "expected ..." phrase), or None."""
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED:
        return None
    return f"expected an integer from 0 to {MAX_SEED} (2**63 - 1, the largest a TOML file holds), got {brief(seed)}"


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


def seed_arg(text: str) -> int:
    """Every ``--seed``'s type (run, demo and the benchmarks', relaysim.sims.cli's through ``_seed``):
    an integer from 0 to MAX_SEED, else argparse's error (exit 2) naming the option."""
    value: int | None = None
    if _ASCII_INTEGER.fullmatch(text):  # (int() takes other scripts' digits, "1_0" and blanks too)
        try:
            value = int(text)
        except ValueError:  # (a number of more than 4,300 digits, which Python will not convert)
            value = None
    problem = seed_problem(text if value is None else value)
    if problem is not None or value is None:  # (a text is never a seed: it always has a problem)
        raise argparse.ArgumentTypeError(problem or f"expected an integer (digits 0-9), got {_brief(text)}")
    return value


seed_arg.bounds = SEED_BOUNDS  # type: ignore[attr-defined]  # (--help states it: sims.numbers.state_bounds)


# --- the validated model ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    person: str
    index: int  # device id, 1-based
    region: str
    address: str
    offline: tuple[tuple[float, float], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.person}/{self.index}"


@dataclass(frozen=True)
class PersonSpec:
    name: str
    devices: tuple[DeviceSpec, ...]
    backup: str | None = None  # relay.backup.BACKUPS; None: the profile's default


@dataclass(frozen=True)
class ScriptedMessage:
    at: float
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True)
class Conversation:
    between: tuple[str, str]
    messages: tuple[ScriptedMessage, ...]


@dataclass(frozen=True)
class LatencyRule:
    between: tuple[str, str]
    ms: float


@dataclass(frozen=True)
class Partition:
    regions: tuple[str, ...]
    start: float
    end: float
    mode: str = "drop"  # "drop": packets that would cross it are lost; "hold": they wait until it heals


@dataclass(frozen=True)
class NetworkSpec:
    latency_ms: float = 50.0
    jitter_ms: float = 5.0
    loss: float = 0.0
    duplication: float = 0.0
    latency: tuple[LatencyRule, ...] = ()
    partitions: tuple[Partition, ...] = ()


@dataclass(frozen=True)
class RelaySpec:
    region: str = "us"
    address: str = "198.51.100.1"
    profile: str = "keep-everything"
    sealed_sender: bool | None = None  # None: the profile's default
    # whether the file names the profile ([relay] profile): a run under keep-everything that no file asked
    # for says so, "(the default)" (the same run either way, so not compared)
    profile_given: bool = field(default=True, compare=False)

    def profile_said(self) -> str:
        """The relay profile as a run's summary names it: ``signal``, or ``keep-everything (the default)``
        when the scenario named none."""
        return self.profile if self.profile_given else f"{self.profile} (the default)"


@dataclass(frozen=True)
class GenerateSpec:
    people: int
    devices_per_person: tuple[tuple[int, float], ...] = ((1, 1.0),)
    graph_model: str = "barabasi-albert"
    graph_m: int = 3
    messages_per_day_mean: float = 20.0
    messages_per_day_sigma: float = 1.0
    regions: tuple[tuple[str, float], ...] = (("us", 1.0),)
    daily_rhythm: tuple[float, ...] = ()
    # MetaPhone-style labelled organisations (see _organisations): (kind, how many accounts), and
    # (kind, the probability that a generated person contacts one of that kind).
    organisations: tuple[tuple[str, int], ...] = ()
    trait_probability: tuple[tuple[str, float], ...] = ()


# --- the timeline: one frozen dataclass per event kind (EVENT_KINDS) --------------------------------
#
# The validator (``_events``) produces them; the drivers (sims.world.timeline, sims.world.simulation, sims.live) and
# the interventions (sims.access) read their fields. ``kind`` is the scenario file's name for it.


@dataclass(frozen=True, kw_only=True)
class TimelineEvent:
    at: float  # simulated seconds from the start
    kind: ClassVar[str] = ""

    def describe(self) -> dict[str, Any]:
        """The event as the transcript shows it: its kind and fields (``from``/``to`` by their file names)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            if f.name != "at":
                out[_FILE_NAMES.get(f.name, f.name)] = getattr(self, f.name)
        return out


@dataclass(frozen=True, kw_only=True)
class DeviceOffline(TimelineEvent):
    """A device loses its connection until a matching device_online."""

    kind: ClassVar[str] = "device_offline"
    device: str


@dataclass(frozen=True, kw_only=True)
class DeviceOnline(TimelineEvent):
    """A device reconnects and drains its queue."""

    kind: ClassVar[str] = "device_online"
    device: str


@dataclass(frozen=True, kw_only=True)
class SeizePhone(TimelineEvent):
    """A device is seized: its stored keys and history are copied at that moment."""

    kind: ClassVar[str] = "seize_phone"
    device: str


@dataclass(frozen=True, kw_only=True)
class LegalProcessEvent(TimelineEvent):
    """Legal process served on the relay's operator. ``process`` is the instrument's key
    (relay.legal.INSTRUMENTS, the jurisdiction resolved); ``start``/``end`` are the file's
    ``from``/``to`` (simulated seconds, None: open); ``targets`` the accounts when it names
    several (``target`` is then the first); ``profiles`` the relay profiles whose operator it is
    served on, in a scenario run under several (() : every one) — a demand the record shows made
    on one provider's service only (the PTA's 2015 demand named BES, not consumer BBM)."""

    kind: ClassVar[str] = "legal_process"
    process: str
    name: str
    target: str | None = None
    targets: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    withdrawn: float | None = None
    answered: float | None = None
    counterfactual: str | None = None
    nondisclosure_order: bool = False
    profiles: tuple[str, ...] = ()

    def served_under(self, profile: str) -> bool:
        """Whether the order is served on the operator of a relay run under ``profile``."""
        return not self.profiles or profile in self.profiles

    def order_names(self) -> tuple[str, ...]:
        """The names of the orders it serves, which name their disclosures (summary.json's
        ``disclosures``, ``disclosures/NAME.json``): its own, or, when it names several accounts
        (``targets``), one per account, ``NAME-ACCOUNT`` (a number's ``+`` left out)."""
        if self.targets:
            return tuple(f"{self.name}-{target.lstrip('+')}" for target in self.targets)
        return (self.name,)


@dataclass(frozen=True, kw_only=True)
class ExceptionalAccess(TimelineEvent):
    """The provider is made to change its design: ``demand`` one of EXCEPTIONAL_DEMANDS; a
    ghost_device names its ``target``."""

    kind: ClassVar[str] = "exceptional_access"
    demand: str
    target: str | None = None
    # ghost_device: the provider is also made to change the target's client, so the target's own
    # primary vouches for the ghost (hands it the account key under the "account" identity model,
    # signs it under "signed-devices"): what a ghost needs where the server alone cannot add one.
    client_change: bool = False
    # ghost_device only: the compelled provider shows the target a key log without the ghost
    # (a forked log) instead of the one everyone else sees (sims.access.key_transparency).
    fork: bool = False
    # ghost_participant: the [[groups]] name the provider adds a silent member to; its client_change
    # makes the members' phones stop showing membership changes (sims.access.ghost_participant).
    group: str | None = None


@dataclass(frozen=True, kw_only=True)
class EscrowKeyStolen(TimelineEvent):
    """The escrow agent's private key leaks: whoever has it opens every escrowed message."""

    kind: ClassVar[str] = "escrow_key_stolen"


@dataclass(frozen=True, kw_only=True)
class IdentitySwap(TimelineEvent):
    """A malicious relay delivers an attacker's first message to ``contact``, labelled as ``victim``'s
    (``text``: what the attacker writes; None: a default)."""

    kind: ClassVar[str] = "relay_swaps_identity"
    victim: str
    contact: str
    text: str | None = None


@dataclass(frozen=True, kw_only=True)
class VerifySafetyNumber(TimelineEvent):
    """``who`` compares safety numbers with ``whom`` in person, and marks whom verified if they match."""

    kind: ClassVar[str] = "verify_safety_number"
    who: str
    whom: str


Event = (
    DeviceOffline
    | DeviceOnline
    | SeizePhone
    | LegalProcessEvent
    | ExceptionalAccess
    | EscrowKeyStolen
    | IdentitySwap
    | VerifySafetyNumber
)
EVENT_TYPES: dict[str, type[TimelineEvent]] = {
    cls.kind: cls
    for cls in (
        DeviceOffline,
        DeviceOnline,
        SeizePhone,
        LegalProcessEvent,
        ExceptionalAccess,
        EscrowKeyStolen,
        IdentitySwap,
        VerifySafetyNumber,
    )
}
_FILE_NAMES = {"start": "from", "end": "to"}

# Windows opens these devices for a file of the name, whatever its extension (``nul.json`` is NUL):
# a scenario or legal process named so would have its output folder or files go nowhere there
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in range(10))]
)


def _windows_device(name: str) -> str | None:
    """The Windows device a file or folder named ``name`` would be (its part before the first '.',
    in any case), or None."""
    stem = name.split(".", 1)[0].upper()
    return stem if stem in _WINDOWS_DEVICES else None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration: float
    seed: int
    people: tuple[PersonSpec, ...]
    conversations: tuple[Conversation, ...]
    network: NetworkSpec
    relay: RelaySpec
    generate: GenerateSpec | None
    events: tuple[Event, ...]
    source: str = "<scenario>"
    compare_profiles: tuple[str, ...] = ()  # run once per profile and compare (sims.report)
    matrix: bool = False  # run under every real profile and build the process matrix (sims.matrix)
    # When the scenario is set ([scenario] start, a TOML date or date-time): the relay runs the
    # provider as it was then (relay.profiles.profile_as_of). None: as it is today.
    start: date | None = None
    # The instant a date-time start names (Unix seconds); None for a date (midnight UTC) or no start.
    start_at: float | None = None
    # Set on the separate run of a legal_process event's ``counterfactual`` (sims.counterfactual),
    # never by the scenario file: the run is what would have happened, not the record.
    counterfactual: bool = False
    traffic: TrafficSpec = field(default_factory=lambda: TrafficSpec())  # [traffic]: how people behave
    defences: DefenceSpec = field(default_factory=lambda: DefenceSpec())  # [defences]: one design choice each
    groups: tuple[GroupSpec, ...] = ()  # [[groups]]: group chats (sender keys), see _groups
    # Where each of ``events`` is in the file ("events[3]"), for errors found once the population
    # is known (sims.world.traffic.check_population); () for a scenario not read from a file.
    event_paths: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def epoch(self) -> float:
        """The relay's clock (Unix seconds, UTC) at simulated t = 0: the instant of a date-time
        ``start``, midnight UTC of a date ``start``, else :data:`SIM_EPOCH`. Every time the run
        writes on the calendar (the relay's records, orders served, the transcript's ``at``,
        provider.json) counts from it."""
        if self.start_at is not None:
            return int(self.start_at) if self.start_at.is_integer() else self.start_at
        if self.start is not None:
            return calendar.timegm(self.start.timetuple())
        return SIM_EPOCH

    def devices(self) -> list[DeviceSpec]:
        return [d for p in self.people for d in p.devices]

    def person(self, name: str) -> PersonSpec:
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_seed(self, seed: int) -> Scenario:
        """This scenario under ``seed`` (ValueError outside 0 to MAX_SEED, see seed_problem)."""
        from dataclasses import replace

        if (problem := seed_problem(seed)) is not None:
            raise ValueError(f"seed: {problem}")
        return replace(self, seed=seed)


# --- the validator ----------------------------------------------------------------------------


class _Reader:
    """Walks the parsed TOML, remembering the key path, so every error can say where it is."""

    def __init__(self, source: str) -> None:
        self.source = source
        # [scenario] duration as the file writes it ("3h", or a bare number of seconds), once read: an
        # error about a time past the end says the end as it was written (past_end)
        self.duration_written: object = None

    def fail(self, path: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, path, message)

    def past_end(
        self, where: str, expected: str, written: object, at: float, duration: float, got: str = ""
    ) -> ScenarioError:
        """The error for a time at or after the end of the run, in the file's own words: the time and
        the duration as written, each with its seconds (``got "5h" (18,000 s), after the scenario's end,
        duration "3h" (10,800 s)``), and, when the duration is a bare number, that a bare number is
        seconds and how to write it with a unit. ``expected`` is what the key takes ("a time before the
        end of the run"); ``got``, what to show as given instead of the time as written (a window's pair)."""
        side = "at" if at == duration else "after"
        written_end = self.duration_written
        if written_end is None:
            end = f"{_shown(duration, at)} s"
        elif isinstance(written_end, str):
            end = f"duration {_as_written(written_end, duration, at)}"
        else:  # a bare number: seconds, which the writer may not have meant
            end = f"duration {_shown(duration, at)} ({_bare_duration_hint(duration, at)})"
        return self.fail(
            where,
            f"expected {expected}, got {got or _as_written(written, at, duration)}, {side} the scenario's end, {end}",
        )

    def table(self, data: object, path: str) -> Mapping[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, f"expected a table, got {_show(data)}")
        return data

    def known(self, data: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                raise self.fail(where, f"unknown key; expected one of {', '.join(map(repr, allowed))}")

    def get(
        self, data: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any = ...
    ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in data:
            if default is ...:
                raise self.fail(where, f"missing; expected {_kind_name(kind)}")
            return default
        value = data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(where, f"expected {_kind_name(kind)}, got {_show(value)}")
        if not isinstance(value, kind):
            raise self.fail(where, f"expected {_kind_name(kind)}, got {_show(value)}")
        return value

    def text(self, data: Mapping[str, Any], key: str, path: str) -> str:
        """``data[key]``, a message's text: a string without U+0000 (NUL). A NUL was taken and reached the
        transcript (JSON's ``\\u0000``) and the HTML report, whose parser drops it without a trace
        (WHATWG HTML, "The 'in body' insertion mode": a U+0000 character token is a parse error, and
        ignored): the report showed another text than the one sent. Any other character is kept
        (line breaks, tabs, any other C0 control and DEL, any script: no output drops or changes one,
        as the module's docstring says; the terminal shows a control character escaped)."""
        value = self.get(data, key, path, str)
        if "\x00" in value:
            raise self.fail(
                f"{path}.{key}" if path else key,
                f"a NUL character (U+0000) at character {value.index(chr(0)) + 1}: a message's text holds "
                "none (the HTML report would drop it); remove it",
            )
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str, bounds: str, default: Any = ...) -> int:
        """``data[key]``, a key that takes an integer (in ``bounds``, which the caller checks: "from 1
        to 100"); one of another type is refused saying so, with its bounds (``expected an integer
        from 1 to 100, got number 1.5``). _finite leaves these keys to it: a float there, ``inf`` or
        ``1e400`` too, was "expected a finite number", as if a number would do."""
        where = f"{path}.{key}" if path else key
        if key not in data:
            if default is ...:
                raise self.fail(where, f"missing; expected an integer {bounds}")
            return int(default)
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer {bounds}, got {_show(value)}")
        return value

    def duration(self, data: Mapping[str, Any], key: str, path: str, default: Any = ...) -> float:
        where = f"{path}.{key}" if path else key
        if key not in data:
            if default is ...:
                raise self.fail(where, 'missing; expected a duration like 90, "15m" or "1h30m"')
            return float(default)
        try:
            return parse_duration(data[key])
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def probability(self, data: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = float(self.get(data, key, path, (int, float), default))
        if not 0.0 <= value <= 1.0:
            raise self.fail(f"{path}.{key}", f"expected a probability from 0 to 1, got {_brief(value)}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        if set(kind) == {int, float}:
            return "a number"
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _shown(seconds: float, *others: float) -> str:
    """``seconds`` as ``:g`` writes it (six significant digits), or in full (``repr``, the shortest text
    that reads back as the same number) where ``:g`` rounds it to the text of one of ``others`` that differs:
    a time a hair past the end of a 5h run, ``"5h0.0000001s"``, was "expected a time within the
    scenario (18000 s), got 18000 s"."""
    text = f"{seconds:g}"
    if float(text) != seconds and any(other != seconds and f"{other:g}" == text for other in others):
        return repr(float(seconds))
    return text


def _seconds(seconds: float, *others: float) -> str:
    """``seconds`` for a reader: a whole number with thousands separated (``18,000``), else as _shown."""
    if seconds.is_integer() and seconds < 1e15:
        return f"{int(seconds):,}"
    return _shown(seconds, *others)


def _as_written(written: object, seconds: float, *others: float) -> str:
    """A time as the file writes it, and what it is in seconds: ``"5h" (18,000 s)``; a bare number,
    which is seconds already, as written (``18000 s``). (A string that parsed as a duration holds only
    digits, '.', units and spaces: quoted as TOML writes it.)"""
    if isinstance(written, str):
        shown = f'"{written}"' if len(written) <= MAX_SHOWN else _brief(written)
        return f"{shown} ({_seconds(seconds, *others)} s)"
    return f"{_shown(seconds, *others)} s"


def _with_units(seconds: float) -> str:
    """Whole seconds as a duration string with units: 10800 as ``"3h"``, 5400 as ``"1h30m"``."""
    rest, parts = int(seconds), []
    for unit in "dhms":
        n, rest = divmod(rest, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


_UNIT_WORDS = {"m": "minutes", "h": "hours", "d": "days"}


def _bare_duration_hint(written: float, refused: float) -> str:
    """What to say when [scenario] duration is a bare number (``duration = 3``) and a time is refused for
    being past it: that a bare number is seconds, and the duration with a unit. A number under 60, as
    minutes, hours or days, the first that holds the refused time (within "365d"): ``for 3 hours, write
    duration = "3h"``; otherwise (3600 is more likely meant as seconds) the same duration with units."""
    shown = f"{_shown(written)} s: a bare number is seconds"
    for unit, word in _UNIT_WORDS.items():
        if written < 60 and refused < written * _UNITS[unit] <= MAX_DURATION:
            return f'{shown}; for {written:g} {word}, write duration = "{written:g}{unit}"'
    if float(written).is_integer():
        return f'{shown}, duration = "{_with_units(written)}" with a unit'
    return shown


def _show(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}
    shown = _brief(value)
    if type(value) is int and shown.startswith(("an integer", "a negative integer")):  # (its digits counted)
        return shown
    return f"{kind.get(type(value), type(value).__name__)} {shown}"


def read_scenario_text(path: str | Path) -> str:
    """A scenario file's text: UTF-8 (a byte-order mark at the start is dropped, as TOML allows none).
    ScenarioError naming the file if it cannot be read or is not UTF-8 text."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a named pipe (FIFO) waits for a writer, for ever if none comes; opened
        # without waiting, a pipe nothing writes to is refused (_read_pipe), one with a writer read
        with open(p, "rb", opener=_open_without_waiting) as f:
            if _NONBLOCK and stat.S_ISFIFO(os.fstat(f.fileno()).st_mode):
                data = _read_pipe(p, f)
            else:
                if _NONBLOCK:
                    os.set_blocking(f.fileno(), True)  # (a terminal, as /dev/stdin, reads as it did)
                data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        from relaysim.sims.analysis.runfiles import not_a_file

        # a socket is refused by open() as "No such device or address", a folder as "Is a directory":
        # say what is there instead
        what = not_a_file(p) if exc.errno in (errno.ENXIO, errno.EISDIR) else None
        if what is not None and what != "no such file":
            what = what.removeprefix("not a regular file (").removesuffix(")")  # "a socket"
            raise ScenarioError(
                str(p), "", f"{what}, not a scenario file: give the scenario's .toml file itself"
            ) from None
        raise ScenarioError(str(p), "", f"cannot read the file: {exc.strerror}") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(
            p.name,
            "",
            f"larger than {MAX_SCENARIO_BYTES // 2**20} MiB: not a scenario file (a scenario is TOML text)",
        )
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # where an editor shows it, as TOML's own errors say (line and column, from 1); the text
        # before the bad byte is good UTF-8, so its column counts characters
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        raise ScenarioError(
            p.name,
            "",
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, column {column}; offset {exc.start})",
        ) from None


_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # (not on Windows, which has no named pipes in its file system)


def _open_without_waiting(path: str, flags: int) -> int:
    return os.open(path, flags | _NONBLOCK)


def _read_pipe(p: Path, f: BinaryIO) -> bytes:
    """A pipe's bytes, up to one more than MAX_SCENARIO_BYTES; a ScenarioError naming it if nothing
    writes to it. A pipe opened without waiting reads as empty (end of file) while no program holds it
    open for writing: a named pipe no program writes to (yet), which a plain open would wait on for
    ever. One with a writer (``relaysim run <(cat x.toml)``, a writer started first and waiting for its
    reader) has bytes to read, or none yet: then it is read as a file, waiting for them."""
    try:
        first = os.read(f.fileno(), 1 << 16)  # (a pipe holds 64 KiB on Linux)
    except BlockingIOError:  # a writer, nothing written yet
        first = b""
    else:
        if not first:
            raise ScenarioError(
                str(p),
                "",
                "a pipe (FIFO) that nothing is writing to, and holding nothing: start the program that "
                "writes the scenario into it first, or give the scenario file itself",
            )
    os.set_blocking(f.fileno(), True)
    return first + f.read(MAX_SCENARIO_BYTES + 1 - len(first))


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(read_scenario_text(path), source=Path(path).name)


def read_toml(text: str, source: str) -> dict[str, Any]:
    """``tomllib.loads(text)``; ScenarioError naming ``source`` for whatever it cannot read. Beside
    its TOMLDecodeError, tomllib raises RecursionError for arrays or inline tables nested deeper than
    the interpreter's recursion limit, and a bare ValueError for an integer of more than 4,300 digits
    (CPython's limit on converting long strings to integers, ``sys.int_info.default_max_str_digits``)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        twice = _declared_twice(str(exc), text)
        if twice is not None:
            raise ScenarioError(source, twice[0], twice[1], twice[2]) from None
        raise ScenarioError(source, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(
            source, "", "not valid TOML: arrays or tables nested too deeply to read"
        ) from None
    except ValueError as exc:  # an integer too long to convert
        path, where = _long_integer(text)
        raise ScenarioError(source, path, f"not valid TOML: {str(exc).split(';')[0]}{where}") from None


# The tables a scenario takes as arrays of tables, one [[NAME]] per item, and what an item is
_ARRAYS_OF_TABLES = {
    "people": "person",
    "conversations": "conversation",
    "events": "event",
    "groups": "group",
}


def _declared_twice(message: str, text: str) -> tuple[str, str, int] | None:
    """tomllib's "Cannot declare ('people',) twice (at line 8, column 8)" in a scenario's words: the
    table's key path, where each header is, and what to write instead: for a table the scenario takes
    as an array of tables, ``[[people]]``, one per person (``[people]`` twice is the newcomer's way of
    writing two people); for any other, one table holding all its keys. Also "Cannot overwrite a
    value" where the line is ``[[people]]`` after a ``[people]``. None for any other error."""
    match = re.fullmatch(
        r"Cannot (?:declare \(((?:'[A-Za-z0-9_-]+', ?)+)\) twice|overwrite a value) \(at line (\d+), column \d+\)",
        message,
    )
    if match is None:
        return None
    lines, line = text.splitlines(), int(match.group(2))
    if match.group(1) is not None:
        name = ".".join(re.findall(r"'([A-Za-z0-9_-]+)'", match.group(1)))
    else:  # (a value overwritten: only a [[NAME]] header on that line, after a [NAME], is said here)
        header = _TOML_HEADER.fullmatch(lines[line - 1]) if 0 < line <= len(lines) else None
        if header is None or header.group(1) != "[[":
            return None
        name = re.sub(r"\s", "", header.group(2))
        if name not in _ARRAYS_OF_TABLES:
            return None
    first = None
    for n, written in enumerate(lines[: line - 1], start=1):
        header = _TOML_HEADER.fullmatch(written)
        if header and re.sub(r"\s", "", header.group(2)) == name:
            first = (header.group(1), n)
            break
    if first is None:
        if match.group(1) is None:
            return None
        said = f"not valid TOML: the table [{name}] is declared twice"
    elif first[0] == "[[" or match.group(1) is None:
        this = "[" if first[0] == "[[" else "[["
        said = (
            f"not valid TOML: {this}{name}{this.replace('[', ']')} after "
            f"{first[0]}{name}{first[0].replace('[', ']')} at line {first[1]}"
        )
    else:
        said = f"not valid TOML: the table [{name}] is declared twice (first at line {first[1]})"
    if name in _ARRAYS_OF_TABLES:
        return (
            name,
            f"{said}; a scenario's {name} are an array of tables: begin each "
            f"{_ARRAYS_OF_TABLES[name]} with [[{name}]] (double brackets)",
            line,
        )
    return name, f"{said}: give all its keys under one [{name}]", line


def _long_integer(text: str) -> tuple[str, str]:
    """Where the integer tomllib could not convert (more digits than ``sys.get_int_max_str_digits()``)
    is written: its key path if that can be told, and " (at line N, column C)", as tomllib places its
    own errors (its ValueError says neither). The text is read again with one run of that many digits
    that stands alone (not a float's, a date's or a word's) put in a string, the others made 0: the
    first run whose string comes back as a value is that integer (one in a string or a comment
    breaks the text or comes back as no value). Where none of the first few does, the first run is
    named, with its line and no path."""
    limit = sys.get_int_max_str_digits()
    if limit <= 0:  # (no limit: not what was raised)
        return "", ""
    runs = list(re.finditer(rf"(?<![\w.:+-])[+-]?[0-9](?:_?[0-9]){{{limit},}}(?![\w.:-])", text))
    if not runs:
        return "", ""
    mark = "relaysim: the long integer"

    def find(value: object, path: str) -> str | None:
        if value == mark:
            return path
        items = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        )
        for key, item in items:
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
            if (found := find(item, where)) is not None:
                return found
        return None

    index, path = 0, ""
    for i in range(min(len(runs), 8)):
        parts, end = [], 0
        for j, run in enumerate(runs):
            parts += [text[end : run.start()], f'"{mark}"' if j == i else "0"]
            end = run.end()
        try:
            found = find(tomllib.loads("".join(parts) + text[end:]), "")
        except (tomllib.TOMLDecodeError, RecursionError, ValueError):
            continue
        if found is not None:
            index, path = i, found
            break
    start = runs[index].start()
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return path, f" (at line {line}, column {column})"


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    data = read_toml(text, source)
    try:
        return scenario_from_data(data, source)
    except ScenarioError as exc:
        # tomllib keeps no positions: the line is the one the key path is written on in the text
        line = _line_of(text, exc.path) if exc.path and exc.line is None else None
        if line is None:
            raise
        raise ScenarioError(exc.source, exc.path, exc.message, line) from None


def scenario_from_data(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate an already parsed scenario mapping (the TOML as ``tomllib`` gives it; see sims.sweep)."""
    r = _Reader(source)
    _finite(r, data, "")
    r.known(
        data,
        "",
        [
            "scenario",
            "network",
            "relay",
            "people",
            "conversations",
            "generate",
            "events",
            "traffic",
            "defences",
            "groups",
        ],
    )

    if "scenario" not in data:
        raise r.fail("", "missing the [scenario] table (its name and duration)")
    head = r.table(data["scenario"], "scenario")
    r.known(
        head, "scenario", ["name", "description", "duration", "seed", "compare_profiles", "matrix", "start"]
    )
    name = r.get(head, "name", "scenario", str)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", name) or set(name) == {"."}:
        raise r.fail(
            "scenario.name",
            f"expected 1-80 letters, digits, '_', '.' or '-' (it names the output folder), got {_brief(name)}",
        )
    if device := _windows_device(name):
        raise r.fail(
            "scenario.name",
            f"expected a name Windows can give a folder ({device} is the name of one of its devices), "
            f"got {_brief(name)}",
        )
    description = r.get(head, "description", "scenario", str, "")
    duration = r.duration(head, "duration", "scenario")
    if not 0 < duration <= MAX_DURATION:
        raise r.fail(
            "scenario.duration",
            f'expected a positive duration of at most "365d" ({_shown(MAX_DURATION, duration)} s), '
            f"got {_as_written(head['duration'], duration, MAX_DURATION)}",
        )
    r.duration_written = head["duration"]
    seed = r.integer(
        head, "seed", "scenario", f"from 0 to {MAX_SEED} (2**63 - 1, the largest a TOML file holds)", 0
    )
    if (problem := seed_problem(seed)) is not None:
        raise r.fail("scenario.seed", problem)
    compare, matrix = _comparison(r, head, data)
    start, start_at = _start(r, head)
    if start is not None:
        first = start_at if start_at is not None else calendar.timegm(start.timetuple())
        try:
            datetime.fromtimestamp(first + duration, UTC)
        except (OverflowError, ValueError, OSError):
            raise r.fail(
                "scenario.start",
                f"expected a start from which the run ({duration:g} s) ends by {datetime.max:%Y-%m-%d} (the "
                f"last day the calendar has), got {head['start']}",
            ) from None

    network = _network(r, data.get("network", {}), duration)
    relay = _relay(r, data.get("relay", {}))
    people = _people(r, data.get("people", []), duration)
    _backups_then(r, people, start)
    generate = _generate(r, data["generate"]) if "generate" in data else None
    if not people and generate is None:
        raise r.fail("people", "no people: give [[people]] or a [generate] table")
    _regions(r, network, relay, people, generate)
    _generated_names_free(r, people, generate)
    names = {p.name for p in people}
    conversations = _conversations(r, data.get("conversations", []), names, duration)
    everyone = _Everyone(people, generate)
    groups_raw = data.get("groups", [])
    group_names = (
        {g["name"] for g in groups_raw if isinstance(g, dict) and isinstance(g.get("name"), str)}
        if isinstance(groups_raw, list)
        else set()
    )
    events, event_paths = _events(r, data.get("events", []), everyone, duration, group_names)
    _order_profiles_run(r, events, event_paths, compare, matrix, relay)
    _instruments_then(r, events, event_paths, start, start_at)
    defences = _defences(r, data.get("defences", {}))
    _profiles_then(r, start, compare, matrix, relay.profile)
    _defences_then(r, defences, start, compare or (_real_profiles() if matrix else (relay.profile,)))
    groups = _groups(r, data.get("groups", []), names, duration)
    _text_sizes(r, people, conversations, groups, defences)
    traffic = _traffic(r, data.get("traffic", {}), everyone, duration)
    _budget(r, duration, people, generate, traffic, defences)
    return Scenario(
        name,
        description,
        duration,
        seed,
        people,
        conversations,
        network,
        relay,
        generate,
        events,
        source,
        compare,
        matrix,
        start=start,
        start_at=start_at,
        traffic=traffic,
        defences=defences,
        groups=groups,
        event_paths=event_paths,
    )


def _start(r: _Reader, head: Mapping[str, Any]) -> tuple[date | None, float | None]:
    """``[scenario] start``: a TOML date (2016-05-01) or date-time (2016-05-01T09:00:00Z); the
    date (UTC) the relay's provider is taken as of, and for a date-time the instant the run starts
    (without an offset, UTC). Absent: (None, None) (the provider as it is today)."""
    if "start" not in head:
        return None, None
    value = head["start"]
    if isinstance(value, datetime):
        at = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if at.year < 1970:
            raise r.fail(
                "scenario.start", f"expected a date-time from 1970 on (the relay's clock), got {value}"
            )
        return at.date(), at.timestamp()
    if isinstance(value, date):
        if value.year < 1970:
            raise r.fail("scenario.start", f"expected a date from 1970 on (the relay's clock), got {value}")
        return value, None
    raise r.fail(
        "scenario.start",
        f"expected a TOML date like 2016-05-01 or date-time like 2016-05-01T09:00:00Z (unquoted), "
        f"got {_show(value)}",
    )


# The keys that take an integer, each read by one that says so with its bounds (seed_problem,
# _Reader.integer, _organisations): _finite leaves them to it. ``seed = 1e400`` (TOML's inf) was
# "expected a finite number, got inf", as if any finite number would do.
_INTEGER_KEY = re.compile(
    r"scenario\.seed|generate\.people|generate\.graph\.m|traffic\.max_turns|traffic\.popular"
    r"|generate\.organisations\.[^.\[]+"
)


def _finite(r: _Reader, data: object, path: str, depth: int = 0) -> None:
    """Refuse ``nan`` and ``inf`` wherever they are: no key of a scenario means them. And refuse
    arrays and tables nested deeper than MAX_NESTING, which no key of a scenario is either: TOML's
    dotted keys (a.a.a... = 1) nest without limit, and a walk of them (this one, the repr in an
    error) would run past the interpreter's recursion limit (RecursionError). And refuse an integer
    too large for a float (past about 1.8e308; TOML reads up to 4,300 digits): every number a
    scenario holds is read as a float or bounded far below, and ``float()`` of one was an internal
    error (OverflowError) in the key that read it."""
    number = not _INTEGER_KEY.fullmatch(path)  # (else its reader says it takes an integer, from what to what)
    if number and isinstance(data, float) and not math.isfinite(data):
        raise r.fail(path, f"expected a finite number, got {_brief(data)}")
    if number and isinstance(data, int) and not isinstance(data, bool) and abs(data) > sys.float_info.max:
        raise r.fail(path, f"expected a finite number, got {_too_large(data)}")
    if isinstance(data, dict | list) and depth >= MAX_NESTING:
        raise r.fail(
            path, f"nested more than {MAX_NESTING} arrays or tables deep; no key of a scenario nests so deep"
        )
    if isinstance(data, dict):
        for key, value in data.items():
            _finite(r, value, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _finite(r, value, f"{path}[{i}]", depth + 1)


def _regions(
    r: _Reader,
    network: NetworkSpec,
    relay: RelaySpec,
    people: tuple[PersonSpec, ...],
    generate: GenerateSpec | None,
) -> None:
    """With latency rules, every device is in a region a rule names (or the relay's); every region a
    latency rule or a partition names is one where the relay or a device is."""
    if network.latency:
        ruled = {relay.region} | {region for rule in network.latency for region in rule.between}
        expected = f"expected one of {', '.join(map(_brief, sorted(ruled)))}"
        for i, p in enumerate(people):
            for j, d in enumerate(p.devices):
                if d.region not in ruled:
                    raise r.fail(f"people[{i}].devices[{j}].region", f"{expected}, got {_brief(d.region)}")
        if generate is not None:
            for region, _w in generate.regions:
                if region not in ruled:
                    raise r.fail(f"generate.regions.{region}", f"{expected}, got {_brief(region)}")
    present = {relay.region} | {d.region for p in people for d in p.devices}
    if generate is not None:
        present |= {region for region, _w in generate.regions}
    known = ", ".join(map(_brief, sorted(present)))
    for i, rule in enumerate(network.latency):
        for region in rule.between:
            if region not in present:
                raise r.fail(
                    f"network.latency[{i}].between",
                    f"expected regions where the relay or a device is ({known}), got {_brief(region)}",
                )
    for i, part in enumerate(network.partitions):
        for j, region in enumerate(part.regions):
            if region not in present:
                raise r.fail(
                    f"network.partitions[{i}].regions[{j}]",
                    f"expected a region where the relay or a device is ({known}), got {_brief(region)}",
                )
        if present <= set(part.regions):
            raise r.fail(
                f"network.partitions[{i}].regions",
                f"names every region of the scenario ({known}), so it cuts no path: a partition cuts the "
                "regions it lists off from the others",
            )


def _generated_names_free(r: _Reader, people: tuple[PersonSpec, ...], generate: GenerateSpec | None) -> None:
    """No one of ``[[people]]`` has the name of a generated person or organisation (they would be merged)."""
    if generate is None:
        return
    everyone = _Everyone((), generate)
    organisations = {f"{kind}-{i + 1}" for kind, n in generate.organisations for i in range(n)}
    for i, p in enumerate(people):
        if everyone.person(p.name):
            first, last = everyone._first_last()
            raise r.fail(
                f"people[{i}].name",
                f"{_brief(p.name)} is already the name of a generated person ([generate] names {first} to {last})",
            )
        if p.name in organisations:
            raise r.fail(
                f"people[{i}].name",
                f"{_brief(p.name)} is already the name of a generated organisation (generate.organisations)",
            )


def generated_names(count: int) -> list[str]:
    """The names ``[generate]`` gives its people: ``p0`` … or zero-padded, ``p0000`` … ``p1999``."""
    width = len(str(count))
    return [f"p{i:0{width}d}" for i in range(count)]


class _Everyone:
    """Who an event may name: the people given, and those ``[generate]`` will make."""

    def __init__(self, people: tuple[PersonSpec, ...], generate: GenerateSpec | None) -> None:
        self.devices = {d.name for p in people for d in p.devices}
        self.names = {p.name for p in people}
        self.device_count = {p.name: len(p.devices) for p in people}
        self.ghosts: dict[str, int] = {}  # ghost_device demands per target, as the events are read
        self.generated = 0 if generate is None else generate.people
        self.width = len(str(self.generated))
        self.max_devices = 0
        if generate is not None:
            self.max_devices = max(n for n, w in generate.devices_per_person if w > 0)

    def _generated(self, name: str) -> bool:
        digits = name[1:]
        return (
            self.generated > 0
            and name.startswith("p")
            and len(digits) == self.width
            and digits.isascii()
            and digits.isdigit()
            and int(digits) < self.generated
        )

    def person(self, name: str) -> bool:
        return name in self.names or self._generated(name)

    def device(self, name: str) -> bool:
        if name in self.devices:
            return True
        person, _, index = name.rpartition("/")
        return (
            self._generated(person)
            and index.isascii()
            and index.isdigit()
            and not index.startswith("0")
            and int(index) <= self.max_devices
        )

    def _first_last(self) -> tuple[str, str]:
        return f"p{0:0{self.width}d}", f"p{self.generated - 1:0{self.width}d}"

    def describe(self) -> str:
        names = sorted(self.names)
        if len(names) > 12:
            names = [*names[:12], "…"]
        if self.generated:
            first, last = self._first_last()
            names.append(f"generated {first} to {last}")
        return ", ".join(names)

    def describe_devices(self) -> str:
        devices = sorted(self.devices)
        if len(devices) > 12:
            devices = [*devices[:12], "…"]
        if self.generated:
            first, last = self._first_last()
            devices.append(f"generated {first}/1 to {last}/{self.max_devices}")
        return ", ".join(devices)


def _address(r: _Reader, value: str, path: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise r.fail(path, f"expected an IPv4 or IPv6 address, got {_brief(value)}") from None
    return value


def _comparison(r: _Reader, head: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """``compare_profiles`` and ``matrix``: a scenario run under several relay profiles."""
    from relaysim.relay.profiles import PROFILES

    raw = r.get(head, "compare_profiles", "scenario", list, [])
    matrix = r.get(head, "matrix", "scenario", bool, False)
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in PROFILES:
            raise r.fail(
                f"scenario.compare_profiles[{i}]",
                f"expected one of {', '.join(map(repr, PROFILES))}, got {_show(name)}",
            )
    if raw and len(set(raw)) != len(raw):
        raise r.fail("scenario.compare_profiles", f"expected different profiles, got {_brief(raw)}")
    if len(raw) == 1:
        raise r.fail(
            "scenario.compare_profiles", f"expected at least two profiles to compare, got {_brief(raw)}"
        )
    if raw and matrix:
        raise r.fail("scenario.matrix", "give compare_profiles or matrix = true, not both")
    relay = data.get("relay")
    if (raw or matrix) and isinstance(relay, dict) and "profile" in relay:
        which = "compare_profiles" if raw else "matrix"
        raise r.fail(
            "relay.profile", f"the scenario sets {which}, which chooses the profiles; remove relay.profile"
        )
    return tuple(raw), matrix


def _network(r: _Reader, raw: object, duration: float) -> NetworkSpec:
    t = r.table(raw, "network")
    r.known(t, "network", ["latency_ms", "jitter_ms", "loss", "duplication", "latency", "partitions"])
    rules = []
    pairs: dict[frozenset[str], int] = {}
    for i, item in enumerate(r.get(t, "latency", "network", list, [])):
        path = f"network.latency[{i}]"
        it = r.table(item, path)
        r.known(it, path, ["between", "ms"])
        if "between" in it and not isinstance(it["between"], list):
            raise r.fail(
                f"{path}.between",
                f'expected an array of two regions\' names, e.g. between = ["pk", "us"], got {_show(it["between"])}',
            )
        between = r.get(it, "between", path, list)
        if len(between) != 2 or not all(isinstance(x, str) for x in between):
            raise r.fail(f"{path}.between", f"expected two region names, got {_show(between)}")
        for j, region in enumerate(between):
            _region(r, region, f"{path}.between[{j}]")
        pair = frozenset(between)
        if pair in pairs:
            raise r.fail(
                f"{path}.between",
                f"network.latency[{pairs[pair]}] already gives the latency between {_brief(between[0])} and {_brief(between[1])}",
            )
        pairs[pair] = i
        ms = _milliseconds(r, it, "ms", path)
        rules.append(LatencyRule((between[0], between[1]), ms))
    partitions = []
    for i, item in enumerate(r.get(t, "partitions", "network", list, [])):
        path = f"network.partitions[{i}]"
        it = r.table(item, path)
        r.known(it, path, ["regions", "from", "to", "mode"])
        regions = r.get(it, "regions", path, list)
        if not regions or not all(isinstance(x, str) for x in regions):
            raise r.fail(
                f"{path}.regions", f"expected a non-empty array of region names, got {_show(regions)}"
            )
        for j, region in enumerate(regions):
            _region(r, region, f"{path}.regions[{j}]")
            if region in regions[:j]:
                raise r.fail(f"{path}.regions[{j}]", f"{_brief(region)} is named twice")
        start, end = r.duration(it, "from", path), r.duration(it, "to", path)
        if start >= duration:
            raise r.past_end(f"{path}.from", "a time before the end of the run", it["from"], start, duration)
        if end <= start:
            raise r.fail(
                f"{path}.to",
                f"expected a time after 'from' ({_shown(start, end)} s), got {_shown(end, start)} s",
            )
        mode = r.get(it, "mode", path, str, "drop")
        if mode not in PARTITION_MODES:
            raise r.fail(
                f"{path}.mode", f"expected one of {', '.join(map(repr, PARTITION_MODES))}, got {_brief(mode)}"
            )
        partitions.append(Partition(tuple(regions), start, end, mode))
    return NetworkSpec(
        _milliseconds(r, t, "latency_ms", "network", 50.0),
        _milliseconds(r, t, "jitter_ms", "network", 5.0),  # added, from 0 to it: never a negative delay
        r.probability(t, "loss", "network", 0.0),
        r.probability(t, "duplication", "network", 0.0),
        tuple(rules),
        tuple(partitions),
    )


def _region(r: _Reader, value: str, path: str) -> str:
    """A region's name: any name but an empty or blank one (it would name no place, and show as
    nothing) or one with control or format characters (they hide in, or rearrange, what prints it)."""
    if not value.strip():
        raise r.fail(path, f"expected a region's name (not empty or blank), got {_brief(value)}")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise r.fail(
            path, f"expected a region's name without control or format characters, got {_brief(value)}"
        )
    return value


def _milliseconds(r: _Reader, t: Mapping[str, Any], key: str, path: str, default: Any = ...) -> float:
    """A latency or jitter in ms: from 0 to MAX_LATENCY_MS."""
    value = float(r.get(t, key, path, (int, float), default))
    if not 0 <= value <= MAX_LATENCY_MS:
        raise r.fail(
            f"{path}.{key}",
            f"expected from 0 to {MAX_LATENCY_MS:,.0f} milliseconds (a minute; a link that is down is a "
            f"partition), got {value:g}",
        )
    return value


def _relay(r: _Reader, raw: object) -> RelaySpec:
    t = r.table(raw, "relay")
    if "max_frame_bytes" in t:
        from relaysim.relay.wire import DEFAULT_MAX_FRAME_SIZE

        raise r.fail(
            "relay.max_frame_bytes",
            f"not a setting of the simulated relay: its frames are at most {DEFAULT_MAX_FRAME_SIZE} bytes, as "
            "its phones expect (relay.wire.DEFAULT_MAX_FRAME_SIZE; a real relay takes "
            "relaysim relay serve --max-frame-size)",
        )
    r.known(t, "relay", ["region", "address", "profile", "sealed_sender"])
    from relaysim.relay.profiles import PROFILES

    profile = r.get(t, "profile", "relay", str, "keep-everything")
    if profile != "keep-everything" and profile not in PROFILES:
        known = ", ".join(map(repr, dict.fromkeys(["keep-everything", *PROFILES])))  # (PROFILES has it too)
        raise r.fail("relay.profile", f"expected one of {known}, got {_brief(profile)}")
    return RelaySpec(
        _region(r, r.get(t, "region", "relay", str, "us"), "relay.region"),
        _address(r, r.get(t, "address", "relay", str, "198.51.100.1"), "relay.address"),
        profile,
        r.get(t, "sealed_sender", "relay", bool, None),
        profile_given="profile" in t,
    )


def _windows(r: _Reader, raw: object, path: str, duration: float) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        raise r.fail(path, f"expected an array of [from, to] pairs, got {_show(raw)}")
    out = []
    for i, pair in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise r.fail(where, f"expected a [from, to] pair, got {_show(pair)}")
        times = []
        for j, value in enumerate(pair):  # (the one that is wrong named: offline[1][1], not the pair)
            try:
                times.append(parse_duration(value))
            except ValueError as exc:
                raise r.fail(f"{where}[{j}]", str(exc)) from None
        start, end = times
        if end <= start:
            raise r.fail(where, f"expected 'to' after 'from', got {_brief(pair)}")
        if start >= duration:
            got = f"{_brief(pair)} (from {_seconds(start, duration)} s)"
            raise r.past_end(
                where, "a window starting before the end of the run", pair[0], start, duration, got
            )
        out.append((start, end))
    out.sort()
    for (_s0, e0), (s1, _e1) in itertools.pairwise(out):
        if s1 < e0:
            raise r.fail(path, f"expected windows that do not overlap, got {_brief(raw)}")
    return tuple(out)


def _people(r: _Reader, raw: object, duration: float) -> tuple[PersonSpec, ...]:
    if not isinstance(raw, list):
        raise r.fail("people", f"expected an array of tables ([[people]]), got {_show(raw)}")
    people: list[PersonSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"people[{i}]"
        t = r.table(item, path)
        r.known(t, path, ["name", "devices", "region", "address", "backup"])
        from relaysim.relay.backup import BACKUPS

        backup = r.get(t, "backup", path, str, None)
        if backup is not None and backup not in BACKUPS:
            raise r.fail(
                f"{path}.backup", f"expected one of {', '.join(map(repr, BACKUPS))}, got {_brief(backup)}"
            )
        name = r.get(t, "name", path, str)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise r.fail(
                f"{path}.name", f"expected 1-64 letters, digits, '_', '.' or '-', got {_brief(name)}"
            )
        if name in seen:
            raise r.fail(f"{path}.name", f"{_brief(name)} is already the name of another person")
        seen.add(name)
        default_region = _region(r, r.get(t, "region", path, str, "us"), f"{path}.region")
        default_address = t.get("address")
        if default_address is not None:
            default_address = _address(r, r.get(t, "address", path, str), f"{path}.address")
        raw_devices = r.get(t, "devices", path, list, [{}])
        if not raw_devices:
            raise r.fail(f"{path}.devices", "expected at least one device")
        from relaysim.relay.wire import MAX_DEVICES_PER_ACCOUNT

        if len(raw_devices) > MAX_DEVICES_PER_ACCOUNT:
            # the relay refuses to register one more (too_many_devices): the rest would sit unregistered
            raise r.fail(
                f"{path}.devices",
                f"expected at most {MAX_DEVICES_PER_ACCOUNT} devices (the most one account may have on the "
                f"relay), got {len(raw_devices)}",
            )
        devices = []
        for j, dev in enumerate(raw_devices):
            dpath = f"{path}.devices[{j}]"
            d = r.table(dev, dpath)
            r.known(d, dpath, ["region", "address", "offline"])
            address = r.get(
                d, "address", dpath, str, default_address or f"192.0.2.{(len(people) * 4 + j) % 250 + 1}"
            )
            devices.append(
                DeviceSpec(
                    name,
                    j + 1,
                    _region(r, r.get(d, "region", dpath, str, default_region), f"{dpath}.region"),
                    _address(r, address, f"{dpath}.address"),
                    _windows(r, d.get("offline", []), f"{dpath}.offline", duration),
                )
            )
        people.append(PersonSpec(name, tuple(devices), backup))
    return tuple(people)


def _backups_then(r: _Reader, people: Sequence[PersonSpec], start: date | None) -> None:
    """A run set on a date ([scenario] start) has only the backup settings that existed then: no
    end-to-end encrypted backup before it was offered (relay.backup.Backup.since)."""
    from relaysim.relay.backup import BACKUPS

    if start is None:
        return
    for i, person in enumerate(people):
        backup = BACKUPS.get(person.backup or "")
        if backup is not None and backup.since is not None and start < backup.since:
            then = ", ".join(repr(k) for k, b in BACKUPS.items() if b.since is None or b.since <= start)
            raise r.fail(
                f"people[{i}].backup",
                f"{_brief(person.backup)} did not exist on {start} (scenario.start): {backup.since_source}; "
                f"expected one of {then}",
            )


def _instruments_then(
    r: _Reader, events: Sequence[Event], paths: Sequence[str], start: date | None, start_at: float | None
) -> None:
    """A run set on a date ([scenario] start) serves only instruments whose law had been made by the day
    each order is served (relay.legal.Instrument.since): a UK warrant before the Investigatory Powers Act
    2016 is refused, as an instrument of another country's law is (relay.legal.resolve_instrument)."""
    from relaysim.relay.legal import get_instrument

    if start is None:
        return
    first = start_at if start_at is not None else calendar.timegm(start.timetuple())
    for ev, path in zip(events, paths, strict=True):
        if not isinstance(ev, LegalProcessEvent):
            continue
        day = datetime.fromtimestamp(first + ev.at, UTC).date()
        why = get_instrument(ev.process).not_yet(day)
        if why is not None:
            raise r.fail(f"{path}.process", f"{why} (served at {ev.at:g} s from scenario.start, {start})")


def _real_profiles() -> tuple[str, ...]:
    from relaysim.relay.profiles import REAL_PROFILES

    return REAL_PROFILES


def _profiles_then(
    r: _Reader, start: date | None, compare: Sequence[str], matrix: bool, profile: str
) -> None:
    """A run set on a date ([scenario] start) is only under providers that existed then: one set before a
    provider's first day (relay.profiles.Profile.since) is refused, naming the provider and that day, rather than
    run as the provider's earliest profile."""
    from relaysim.relay.profiles import get_profile

    if start is None:
        return
    if compare:
        named = [(f"scenario.compare_profiles[{i}]", name) for i, name in enumerate(compare)]
    elif matrix:
        named = [("scenario.start", name) for name in _real_profiles()]
    else:
        named = [("relay.profile", profile)]
    for path, name in named:
        p = get_profile(name)
        why = p.not_yet(start)
        if why is not None and p.since is not None:
            where = "" if path == "scenario.start" else " (scenario.start)"
            raise r.fail(path, f"{why}{where}; expected a start from {p.since[0]}, or another profile")


def _defences_then(r: _Reader, defences: DefenceSpec, start: date | None, profiles: Sequence[str]) -> None:
    """A run set on a date ([scenario] start) under a provider has only the features its apps had then:
    no switch of [defences] that models one before it began (relay.profiles.Profile.defences_since)."""
    from relaysim.relay.profiles import get_profile

    if start is None:
        return
    changed = defences.changed()
    for name in profiles:
        for key, (since, source) in get_profile(name).defences_since.items():
            if key in changed and start < since:
                raise r.fail(
                    f"defences.{key}",
                    f"{key} = {_brief(changed[key])} under the {name} profile did not exist on {start} (scenario.start): "
                    f"{source}; expected the default ({_brief(getattr(DefenceSpec(), key))}) or a start from {since}",
                )


def _conversations(r: _Reader, raw: object, names: set[str], duration: float) -> tuple[Conversation, ...]:
    if not isinstance(raw, list):
        raise r.fail("conversations", f"expected an array of tables ([[conversations]]), got {_show(raw)}")
    out = []
    for i, item in enumerate(raw):
        path = f"conversations[{i}]"
        t = r.table(item, path)
        r.known(t, path, ["between", "messages"])
        if "between" in t and not isinstance(t["between"], list):
            # (between = "amira, ben" or "amira" was "expected an array": of what, it did not say)
            pair = sorted(names)[:2] if len(names) >= 2 else ["alice", "bob"]
            raise r.fail(
                f"{path}.between",
                f'expected an array of two people\'s names, e.g. between = ["{pair[0]}", "{pair[1]}"], '
                f"got {_show(t['between'])}",
            )
        between = r.get(t, "between", path, list)
        if len(between) != 2 or not all(isinstance(x, str) for x in between) or between[0] == between[1]:
            raise r.fail(f"{path}.between", f"expected two different people, got {_show(between)}")
        for who in between:
            if who not in names:
                raise r.fail(
                    f"{path}.between", f"{_brief(who)} is not one of the people ({', '.join(sorted(names))})"
                )
        messages = []
        for j, m in enumerate(r.get(t, "messages", path, list)):
            mpath = f"{path}.messages[{j}]"
            mt = r.table(m, mpath)
            r.known(mt, mpath, ["at", "from", "text"])
            at = r.duration(mt, "at", mpath)
            if at >= duration:
                raise r.past_end(
                    f"{mpath}.at", "a time before the end of the scenario", mt["at"], at, duration
                )
            sender = r.get(mt, "from", mpath, str)
            if sender not in between:
                raise r.fail(
                    f"{mpath}.from",
                    f"expected one of {_brief(between[0])} or {_brief(between[1])}, got {_brief(sender)}",
                )
            recipient = between[1] if sender == between[0] else between[0]
            messages.append(ScriptedMessage(at, sender, recipient, r.text(mt, "text", mpath)))
        out.append(Conversation((between[0], between[1]), tuple(messages)))
    return tuple(out)


# Room for what a phone adds to a text in one envelope: the ratchet's header and MAC, a PQXDH prekey
# message's keys and ML-KEM ciphertext, sealed sender's certificate and wrapping (measured: at most
# ~2.2 KiB, a sealed first message). With it a short text still reaches 64 devices in one send.
ENVELOPE_ALLOWANCE = 3072


def max_text_bytes(devices: int, padding: str) -> int:
    """The longest text (UTF-8 bytes) whose envelopes to ``devices`` devices fit in one frame: a send
    carries one envelope per device of its recipient (relay.wire.Send), and a frame is at most
    relay.wire.DEFAULT_MAX_FRAME_SIZE bytes with the relay's headroom around the bodies. ``padding``
    is the phones' ([defences] padding; "profile" counts as "signal", the larger)."""
    from relaysim.relay.core import _FRAME_HEADROOM
    from relaysim.relay.wire import DEFAULT_MAX_FRAME_SIZE

    room = (DEFAULT_MAX_FRAME_SIZE - _FRAME_HEADROOM) // max(devices, 1) - ENVELOPE_ALLOWANCE
    if padding == "pow2":  # padded to the next power of two above the text
        return (1 << (room.bit_length() - 1)) - 1
    if padding == "none":
        return room
    from relaysim.clients.agent import SIGNAL_PAD_BLOCK

    return room - SIGNAL_PAD_BLOCK  # a 0x80, then zeros to a multiple of 160 (less one)


def _text_sizes(
    r: _Reader,
    people: tuple[PersonSpec, ...],
    conversations: tuple[Conversation, ...],
    groups: tuple[GroupSpec, ...],
    defences: DefenceSpec,
) -> None:
    """Every scripted text fits the frames that carry it (else the relay refuses the frame mid-run)."""
    from relaysim.relay.content import CONTROL, SYNC

    devices = {p.name: len(p.devices) for p in people}
    for i, c in enumerate(conversations):
        for j, m in enumerate(c.messages):
            size = len(m.text.encode("utf-8"))
            # one send to each of the recipient's devices; a sync copy (the text behind a header that
            # names the recipient, relay.content.SYNC) to each of the sender's other devices
            sends = [(m.recipient, devices[m.recipient], 0)]
            if devices[m.sender] > 1:
                sends.append((m.sender, devices[m.sender] - 1, len(CONTROL + SYNC) + 1 + len(m.recipient)))
            for who, n, header in sends:
                limit = max_text_bytes(n, defences.padding) - header
                if size > limit:
                    mine = "other " if who == m.sender else ""
                    raise r.fail(
                        f"conversations[{i}].messages[{j}].text",
                        f"expected at most {limit} bytes (UTF-8), so that its envelopes to {who}'s {n} "
                        f"{mine}device{'s' if n > 1 else ''} fit in one frame of the relay's (at most "
                        f"{_max_frame()} bytes), got {size} bytes",
                    )
    limit = max_text_bytes(1, defences.padding)  # one body for the whole group (relay.wire.GroupSend)
    for i, g in enumerate(groups):
        for j, change in enumerate(g.timeline):
            size = len(change.text.encode("utf-8"))
            if size > limit:
                raise r.fail(
                    f"groups[{i}].timeline[{j}].text",
                    f"expected at most {limit} bytes (UTF-8), so that it fits in one frame of the "
                    f"relay's (at most {_max_frame()} bytes), got {size} bytes",
                )


def _max_frame() -> int:
    from relaysim.relay.wire import DEFAULT_MAX_FRAME_SIZE

    return int(DEFAULT_MAX_FRAME_SIZE)


# The most messages (and cover messages, and moves) one source may plan over a run, on average: ten
# times the scale target's day (docs/performance.md: 100,000 phones, 1,000,000 messages a day, in at
# most 10 minutes). A rate with no bound planned until memory ran out.
MAX_PLANNED = 10_000_000
MAX_SIGMA = (
    3.0  # generate.messages_per_day.sigma: at 3 the busiest of a million people sends ~27,000 × the mean
)


def _budget(
    r: _Reader,
    duration: float,
    people: tuple[PersonSpec, ...],
    generate: GenerateSpec | None,
    traffic: TrafficSpec,
    defences: DefenceSpec,
) -> None:
    """Every rate plans at most MAX_PLANNED of what it makes over the run, on average."""
    hours, days = duration / 3600, duration / 86400
    generated = 0 if generate is None else generate.people
    accounts = (
        len(people) + generated + (0 if generate is None else sum(n for _k, n in generate.organisations))
    )
    checks = []
    if generate is not None:
        checks.append(
            ("generate.messages_per_day.mean", generate.messages_per_day_mean, generated * days, "messages")
        )
    checks += [
        (
            "traffic.popular_messages_per_hour",
            traffic.popular_messages_per_hour,
            traffic.popular * hours,
            "messages",
        ),
        ("traffic.background_per_hour", traffic.background_per_hour, hours, "messages"),
        ("defences.cover_per_hour", defences.cover_per_hour, accounts * hours, "cover messages"),
        ("traffic.moves_per_day", traffic.moves_per_day, traffic.mobile * generated * days, "moves"),
    ]
    for path, rate, per_unit, what in checks:
        if per_unit > 0 and rate * per_unit > MAX_PLANNED:
            raise r.fail(
                path,
                f"expected at most {MAX_PLANNED / per_unit:.6g}, so that the run plans at most {MAX_PLANNED:,} "
                f"{what} (about {rate * per_unit:.3g} at {rate:g}), got {rate:g}",
            )


def _weights(r: _Reader, raw: object, path: str) -> dict[str, float]:
    t = r.table(raw, path)
    out = {}
    for key, value in t.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise r.fail(f"{path}.{key}", f"expected a non-negative weight, got {_show(value)}")
        out[key] = float(value)
    if not out or sum(out.values()) <= 0:
        raise r.fail(path, "expected at least one positive weight")
    if not math.isfinite(sum(out.values())):  # each is finite (_finite), but they are drawn by their total
        raise r.fail(path, f"expected weights whose total is a finite number, got {_show(dict(t))}")
    return out


def _generate(r: _Reader, raw: object) -> GenerateSpec:
    t = r.table(raw, "generate")
    r.known(
        t,
        "generate",
        [
            "people",
            "devices_per_person",
            "graph",
            "messages_per_day",
            "regions",
            "daily_rhythm",
            "organisations",
            "trait_probability",
        ],
    )
    n = r.integer(t, "people", "generate", "from 2 to 1,000,000 people")
    if not 2 <= n <= 1_000_000:
        raise r.fail("generate.people", f"expected from 2 to 1,000,000 people, got {_brief(n)}")
    counts = DEVICE_COUNTS
    dpp = _weights(r, t.get("devices_per_person", {"one": 1.0}), "generate.devices_per_person")
    for key in dpp:
        if key not in counts:
            raise r.fail(f"generate.devices_per_person.{key}", f"expected one of {', '.join(counts)}")
    graph = r.table(t.get("graph", {}), "generate.graph")
    r.known(graph, "generate.graph", ["model", "m"])
    model = r.get(graph, "model", "generate.graph", str, "barabasi-albert")
    if model not in ("barabasi-albert", "erdos-renyi"):
        raise r.fail(
            "generate.graph.model", f"expected 'barabasi-albert' or 'erdos-renyi', got {_brief(model)}"
        )
    m = r.integer(graph, "m", "generate.graph", f"from 1 to people-1 ({n - 1})", 3)
    if not 1 <= m < n:
        raise r.fail("generate.graph.m", f"expected from 1 to people-1 ({n - 1}), got {_brief(m)}")
    rate = r.table(t.get("messages_per_day", {}), "generate.messages_per_day")
    r.known(rate, "generate.messages_per_day", ["mean", "sigma"])
    mean = float(r.get(rate, "mean", "generate.messages_per_day", (int, float), 20.0))
    sigma = float(r.get(rate, "sigma", "generate.messages_per_day", (int, float), 1.0))
    if mean <= 0 or sigma < 0:
        raise r.fail(
            "generate.messages_per_day", f"expected mean > 0 and sigma >= 0, got mean={mean}, sigma={sigma}"
        )
    if sigma > MAX_SIGMA:
        raise r.fail(
            "generate.messages_per_day.sigma",
            f"expected at most {MAX_SIGMA:g} (the spread of a log-normal; real volumes are near 1), got {sigma:g}",
        )
    regions = _weights(r, t.get("regions", {"us": 1.0}), "generate.regions")
    for region in regions:
        _region(
            r, region, f'generate.regions."{region}"'
        )  # only a blank name is refused: quote it to show it
    rhythm = r.get(t, "daily_rhythm", "generate", list, [])
    if rhythm and (
        len(rhythm) != 24
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in rhythm)
        or not 0 < sum(rhythm) < math.inf
    ):
        raise r.fail(
            "generate.daily_rhythm",
            f"expected 24 non-negative weights, one per hour of the day, not all 0, with a finite total, "
            f"got {_show(rhythm)}",
        )
    return GenerateSpec(
        n,
        tuple((counts[k], w) for k, w in dpp.items()),
        model,
        m,
        mean,
        sigma,
        tuple(regions.items()),
        tuple(float(x) for x in rhythm),
        *_organisations(r, t),
    )


def _events(
    r: _Reader,
    raw: object,
    everyone: _Everyone,
    duration: float,
    group_names: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[tuple[Event, ...], tuple[str, ...]]:
    """The events in time order (events at one time in file order), and each one's key path."""
    if not isinstance(raw, list):
        raise r.fail("events", f"expected an array of tables ([[events]]), got {_show(raw)}")
    out = []
    orders: dict[str, tuple[int, str]] = {}  # legal process name, casefolded -> the event that first used it
    ghosted: dict[str, int] = {}  # group -> the ghost_participant demand that first named it
    for i, item in enumerate(raw):
        path = f"events[{i}]"
        t = r.table(item, path)
        at = r.duration(t, "at", path)
        if at > duration:
            raise r.past_end(f"{path}.at", "a time within the scenario", t["at"], at, duration)
        kind = r.get(t, "kind", path, str)
        if kind not in EVENT_KINDS:
            raise r.fail(
                f"{path}.kind", f"expected one of {', '.join(map(repr, EVENT_KINDS))}, got {_brief(kind)}"
            )
        params = {k: v for k, v in t.items() if k not in ("at", "kind")}
        if kind == "legal_process":
            params = _legal_process(r, params, path, everyone, i, duration, at)
            # compared without case: the disclosure's files are named after it, and on a file system
            # that ignores case (macOS's, Windows's) 'Order-A.json' would overwrite 'order-a.json'
            first, taken = orders.setdefault(params["name"].casefold(), (i, params["name"]))
            if first != i:
                raise r.fail(
                    f"{path}.name",
                    f"expected a name of its own (its disclosure is filed under it), "
                    f"got {_brief(params['name'])}, already the name of events[{first}]"
                    + ("" if taken == params["name"] else f" but for case ({_brief(taken)})"),
                )
        elif kind == "exceptional_access":
            r.known(params, path, [*_EVENT_KEYS, "demand", "target", "client_change", "fork", "group"])
            demand = r.get(params, "demand", path, str)
            if demand not in EXCEPTIONAL_DEMANDS:
                raise r.fail(
                    f"{path}.demand",
                    f"expected one of {', '.join(map(repr, EXCEPTIONAL_DEMANDS))}, got {_brief(demand)}",
                )
            if demand == "ghost_participant":
                group = r.get(params, "group", path, str)
                if group not in group_names:
                    known = (
                        ", ".join(map(_brief, sorted(group_names))) or "none: the scenario has no [[groups]]"
                    )
                    raise r.fail(
                        f"{path}.group",
                        f"expected the name of one of the [[groups]] ({known}), got {_brief(group)}",
                    )
                # the provider adds one silent member to a group (its account ghost-<group>, see
                # sims.access.ghost_participant): a second demand added the same account again and
                # the run failed
                first = ghosted.setdefault(group, i)
                if first != i:
                    raise r.fail(
                        f"{path}.group",
                        f"events[{first}] already makes the provider add a ghost participant to {_brief(group)}; "
                        "one ghost reads every message of the group from then on",
                    )
            elif "group" in params:
                raise r.fail(f"{path}.group", f"only a ghost_participant names a group, not {demand}")
            if demand == "ghost_device":
                target = r.get(params, "target", path, str)
                if not everyone.person(target):
                    raise r.fail(
                        f"{path}.target",
                        f"expected one of the people ({everyone.describe()}), got {_brief(target)}",
                    )
                from relaysim.relay.wire import MAX_DEVICES_PER_ACCOUNT

                # each ghost is one more device of the target's account, which holds at most 64
                held = everyone.device_count.get(target, everyone.max_devices) + everyone.ghosts.get(
                    target, 0
                )
                if held >= MAX_DEVICES_PER_ACCOUNT:
                    raise r.fail(
                        f"{path}.target",
                        f"{_brief(target)} would have {held + 1} devices with this ghost; an account has at most "
                        f"{MAX_DEVICES_PER_ACCOUNT} (relay.wire.MAX_DEVICES_PER_ACCOUNT)",
                    )
                everyone.ghosts[target] = everyone.ghosts.get(target, 0) + 1
            if "client_change" in params:
                if demand not in ("ghost_device", "ghost_participant"):
                    raise r.fail(
                        f"{path}.client_change",
                        f"only a ghost_device or a ghost_participant has a client change, not {demand}",
                    )
                if not isinstance(params["client_change"], bool):
                    raise r.fail(
                        f"{path}.client_change",
                        f"expected true or false, got {_brief(params['client_change'])}",
                    )
            if demand != "ghost_device" and "target" in params:
                scope = "names a group" if demand == "ghost_participant" else "covers everyone"
                from relaysim.relay.legal import with_article

                raise r.fail(
                    f"{path}.target",
                    f"{with_article(demand)} demand {scope}; only a ghost_device names a target",
                )
            if "fork" in params:
                r.get(params, "fork", path, bool)
                if demand != "ghost_device":
                    raise r.fail(
                        f"{path}.fork", f"only a ghost_device demand can fork the key log, not {demand}"
                    )
        elif kind == "escrow_key_stolen":
            r.known(params, path, _EVENT_KEYS)
        elif kind in IDENTITY_EVENT_PEOPLE:
            _identity_event(r, kind, params, path, everyone)
        if kind in ("device_offline", "device_online", "seize_phone"):
            r.known(params, path, [*_EVENT_KEYS, "device"])
            device = r.get(params, "device", path, str)
            if not everyone.device(device):
                raise r.fail(
                    f"{path}.device",
                    f"expected a device like 'alice/1' ({everyone.describe_devices()}), got {_brief(device)}",
                )
        out.append((_typed(kind, at, params), path))
    if not any(isinstance(e, ExceptionalAccess) and e.demand == "key_escrow" for e, _p in out):
        for e, where in out:
            if isinstance(e, EscrowKeyStolen):
                raise r.fail(
                    f"{where}.kind",
                    "an escrow_key_stolen needs an escrow key to steal: add an exceptional_access event with "
                    'demand = "key_escrow" (before or after the theft: the stolen key opens what is escrowed later too)',
                )
    ordered = sorted(out, key=lambda e: e[0].at)
    return tuple(e for e, _ in ordered), tuple(p for _, p in ordered)


_EVENT_KEYS = ("at", "kind")  # every event's; the rest are its kind's (named in its "unknown key" error)
IDENTITY_EVENT_PEOPLE = {
    "relay_swaps_identity": ("victim", "contact"),
    "verify_safety_number": ("who", "whom"),
}


def _identity_event(r: _Reader, kind: str, params: Mapping[str, Any], path: str, everyone: _Everyone) -> None:
    """A relay's identity swap, or a safety-number check: two different people (and a text for a swap)."""
    first, second = IDENTITY_EVENT_PEOPLE[kind]
    r.known(
        params,
        path,
        [*_EVENT_KEYS, first, second, "text"]
        if kind == "relay_swaps_identity"
        else [*_EVENT_KEYS, first, second],
    )
    for key in (first, second):
        name = r.get(params, key, path, str)
        if not everyone.person(name):
            raise r.fail(
                f"{path}.{key}", f"expected one of the people ({everyone.describe()}), got {_brief(name)}"
            )
    if params[first] == params[second]:
        raise r.fail(f"{path}.{second}", f"expected someone other than {first} {_brief(params[first])}")
    if "text" in params:
        r.text(params, "text", path)


def _typed(kind: str, at: float, params: Mapping[str, Any]) -> Event:
    """The validated ``params`` of one event as its dataclass."""
    if kind == "legal_process":
        return LegalProcessEvent(
            at=at,
            process=params["process"],
            name=params["name"],
            target=params["target"],
            targets=params["targets"] or (),
            start=params["from"],
            end=params["to"],
            withdrawn=params["withdrawn"],
            answered=params["answered"],
            counterfactual=params["counterfactual"],
            nondisclosure_order=params["nondisclosure_order"],
            profiles=params["profiles"],
        )
    if kind == "exceptional_access":
        return ExceptionalAccess(
            at=at,
            demand=params["demand"],
            target=params.get("target"),
            client_change=bool(params.get("client_change", False)),
            fork=params.get("fork", False),
            group=params.get("group"),
        )
    if kind == "escrow_key_stolen":
        return EscrowKeyStolen(at=at)
    if kind == "device_offline":
        return DeviceOffline(at=at, device=params["device"])
    if kind == "device_online":
        return DeviceOnline(at=at, device=params["device"])
    if kind == "seize_phone":
        return SeizePhone(at=at, device=params["device"])
    if kind == "relay_swaps_identity":
        return IdentitySwap(
            at=at, victim=params["victim"], contact=params["contact"], text=params.get("text")
        )
    if kind == "verify_safety_number":
        return VerifySafetyNumber(at=at, who=params["who"], whom=params["whom"])
    raise AssertionError(f"EVENT_KINDS has {_brief(kind)} but _typed does not")


def _legal_process(
    r: _Reader,
    params: dict[str, Any],
    path: str,
    everyone: _Everyone,
    index: int,
    duration: float,
    at: float,
) -> dict[str, Any]:
    """One legal_process event's keys, checked against how its instrument reads them: an order that
    looks back covers ``from`` (before service) to ``to`` or service, whichever is first; one that
    looks forward collects from service (or a ``from`` after it; an earlier one would change
    nothing) until ``to`` or ``withdrawn``, which are therefore after both."""
    from relaysim.relay.legal import resolve_instrument

    r.known(
        params,
        path,
        [
            *_EVENT_KEYS,
            "process",
            "jurisdiction",
            "target",
            "targets",
            "from",
            "to",
            "name",
            "withdrawn",
            "answered",
            "counterfactual",
            "nondisclosure_order",
            "profiles",
        ],
    )
    process = r.get(params, "process", path, str)
    jurisdiction = r.get(params, "jurisdiction", path, str, None)
    try:
        instrument = resolve_instrument(process, jurisdiction)
    except ValueError as exc:
        from relaysim.relay.legal import INSTRUMENTS, JURISDICTIONS

        bad_place = jurisdiction is not None and jurisdiction not in JURISDICTIONS
        where = (
            "jurisdiction"
            if bad_place or process in INSTRUMENTS or process == "blanket_demand"
            else "process"
        )
        # (relay.legal's words show the value given whole: shown here as every value of the file is)
        said = str(exc).replace(repr(process), _brief(process))
        if jurisdiction is not None:
            said = said.replace(repr(jurisdiction), _brief(jurisdiction))
        raise r.fail(f"{path}.{where}", said) from None
    process = instrument.key
    target = r.get(params, "target", path, str, None)
    targets = _targets(r, params, path, everyone)
    if targets and target is not None:
        raise r.fail(f"{path}.targets", "give either 'target' or 'targets', not both")
    if target is not None and not everyone.person(target):
        raise r.fail(
            f"{path}.target", f"expected one of the people ({everyone.describe()}), got {_brief(target)}"
        )
    if targets:
        target = targets[0]  # each checked by _targets: one of the people or a phone number
    if target is None and instrument.needs_target:
        raise r.fail(f"{path}.target", f"missing; {instrument.a_name} names the account it is served on")
    if instrument.looks == "freeze":
        for key in ("from", "to"):
            if key in params:
                # relay.core's preserve freezes what is held at service, whatever the order says
                raise r.fail(
                    f"{path}.{key}",
                    f"{instrument.a_name} freezes what is held at service (for 90 days, 18 U.S.C. 2703(f)(2)) and "
                    f"covers no period: remove '{key}'",
                )
    start = r.duration(params, "from", path) if "from" in params else None
    end = r.duration(params, "to", path) if "to" in params else None
    if start is not None and start >= duration:
        raise r.past_end(f"{path}.from", "a time before the end of the run", params["from"], start, duration)
    if end is not None and end > duration:
        raise r.past_end(f"{path}.to", "a time by the end of the run", params["to"], end, duration)
    if start is not None and end is not None and end <= start:
        raise r.fail(
            f"{path}.to", f"expected a time after 'from' ({_shown(start, end)} s), got {_shown(end, start)} s"
        )
    if instrument.forward:
        if end is not None and end <= at:
            raise r.fail(
                f"{path}.to",
                f"expected a time after the order is served ({_shown(at, end)} s; {instrument.a_name} collects "
                f"from service on), got {_shown(end, at)} s",
            )
        longest = instrument.max_period
        if end is not None and longest is not None and end - at > longest:
            raise r.fail(
                f"{path}.to",
                f"{instrument.a_name} runs at most {longest / 86400:g} days from service ({instrument.statute}); "
                f"got {(end - at) / 86400:g} days: serve a new order for the rest",
            )
        if start is not None and start < at:
            # relay.compliance: collection starts at the later of service and 'from'; an earlier
            # 'from' would stand in the file and change nothing (one at service says what it does)
            raise r.fail(
                f"{path}.from",
                f"expected a time at or after the order is served ({_shown(at, start)} s; {instrument.a_name} collects from service "
                f"on, never what came before), got {_shown(start, at)} s: remove 'from', or give a later time",
            )
    elif instrument.looks == "back" and start is not None and start >= at:
        raise r.fail(
            f"{path}.from",
            f"expected a time before the order is served ({_shown(at, start)} s; {instrument.a_name} covers what "
            f"is held then), got {_shown(start, at)} s",
        )
    name = r.get(params, "name", path, str, f"{process}-{(target or 'everyone').lstrip('+')}-{index}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", name) or set(name) == {"."}:
        raise r.fail(
            f"{path}.name",
            f"expected 1-80 letters, digits, '_', '.' or '-' (it names output files), got {_brief(name)}",
        )
    if device := _windows_device(name):
        raise r.fail(
            f"{path}.name",
            f"expected a name Windows can give a file ({device} is the name of one of its devices: "
            f"{name}.json would be written to it), got {_brief(name)}",
        )
    if name.casefold() == "relay":
        raise r.fail(
            f"{path}.name",
            "expected a name other than 'relay' (analysis/relay.json is the analysis of the relay's own "
            f"records; a disclosure's is analysis/NAME.json), got {_brief(name)}",
        )
    withdrawn = r.duration(params, "withdrawn", path) if "withdrawn" in params else None
    if withdrawn is not None and not instrument.forward:
        raise r.fail(
            f"{path}.withdrawn",
            f"{instrument.a_name} is answered at service; only a demand in force from service on "
            "(a forward-looking instrument) can be withdrawn later",
        )
    if withdrawn is not None and withdrawn <= at:
        raise r.fail(
            f"{path}.withdrawn",
            f"expected a time after the demand is served ({_shown(at, withdrawn)} s), got {_shown(withdrawn, at)} s",
        )
    if withdrawn is not None and start is not None and withdrawn <= start:
        raise r.fail(
            f"{path}.withdrawn",
            f"expected a time after 'from' ({_shown(start, withdrawn)} s), got {_shown(withdrawn, start)} s",
        )
    if withdrawn is not None and withdrawn > duration:
        raise r.past_end(
            f"{path}.withdrawn", "a time by the end of the run", params["withdrawn"], withdrawn, duration
        )
    if withdrawn is not None and end is not None and withdrawn >= end:
        # The order lapsed at 'to' and was answered then (sims.world.timeline); a withdrawal after
        # it would put "demand withdrawn" on the record of an order no longer in force.
        raise r.fail(
            f"{path}.withdrawn",
            f"expected a time before 'to' ({_shown(end, withdrawn)} s; the order lapses then, and a lapsed order cannot be "
            f"withdrawn), got {_shown(withdrawn, end)} s",
        )
    # When the provider answered a demand it did not comply with (its refusal), where the record dates
    # that later than service: BlackBerry said on 2015-11-30 that it would leave Pakistan rather than
    # comply with the PTA's demand of July. A provider that complies answers at service.
    answered = r.duration(params, "answered", path) if "answered" in params else None
    if answered is not None and not instrument.forward:
        raise r.fail(
            f"{path}.answered",
            f"{instrument.a_name} is answered at service; only a demand in force from service on "
            "(a forward-looking instrument) can be answered later",
        )
    if answered is not None and answered < at:
        raise r.fail(
            f"{path}.answered",
            f"expected a time at or after the demand is served ({_shown(at, answered)} s), got {_shown(answered, at)} s",
        )
    if answered is not None and withdrawn is not None and answered > withdrawn:
        raise r.fail(
            f"{path}.answered",
            f"expected a time by the withdrawal ({_shown(withdrawn, answered)} s): a withdrawn demand is answered no more, "
            f"got {_shown(answered, withdrawn)} s",
        )
    if answered is not None and answered > duration:
        raise r.past_end(
            f"{path}.answered", "a time by the end of the run", params["answered"], answered, duration
        )
    if answered is not None and end is not None and answered > end:
        raise r.fail(
            f"{path}.answered",
            f"expected a time by 'to' ({_shown(end, answered)} s; the order lapses then), got {_shown(answered, end)} s",
        )
    counterfactual = r.get(params, "counterfactual", path, str, None)
    if counterfactual is not None and counterfactual not in COUNTERFACTUALS:
        raise r.fail(
            f"{path}.counterfactual",
            f"expected one of {', '.join(map(repr, COUNTERFACTUALS))}, got {_brief(counterfactual)}",
        )
    gag = r.get(params, "nondisclosure_order", path, bool, False)
    if gag and instrument.jurisdiction != "us":
        raise r.fail(
            f"{path}.nondisclosure_order",
            f"a non-disclosure order under 18 U.S.C. 2705(b) goes with US legal process; {_brief(process)} is "
            f"an instrument of {_brief(instrument.jurisdiction)}",
        )
    return {
        "profiles": _order_profiles(r, params, path),
        "process": process,
        "target": target,
        "targets": targets or None,
        "from": start,
        "to": end,
        "name": name,
        "withdrawn": withdrawn,
        "answered": answered,
        "counterfactual": counterfactual,
        "nondisclosure_order": gag,
    }


def _order_profiles(r: _Reader, params: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """``profiles``: the relay profiles whose operator the order is served on (each once, at least one);
    whether the scenario runs under them is checked once the whole file is read (_order_profiles_run)."""
    from relaysim.relay.profiles import PROFILES

    if "profiles" not in params:
        return ()
    raw = r.get(params, "profiles", path, list)
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in PROFILES:
            raise r.fail(
                f"{path}.profiles[{i}]",
                f"expected one of {', '.join(map(repr, PROFILES))}, got {_show(name)}",
            )
    if not raw:
        raise r.fail(f"{path}.profiles", "expected at least one profile the order is served under, got []")
    if len(set(raw)) != len(raw):
        raise r.fail(f"{path}.profiles", f"expected different profiles, got {_brief(raw)}")
    return tuple(raw)


def _order_profiles_run(
    r: _Reader,
    events: Sequence[Event],
    paths: Sequence[str],
    compare: Sequence[str],
    matrix: bool,
    relay: RelaySpec,
) -> None:
    """Each order's ``profiles`` against the profiles the scenario runs under: an order served under
    none of them would silently never be served, and a matrix serves every order under every profile."""
    for ev, path in zip(events, paths, strict=True):
        if not isinstance(ev, LegalProcessEvent) or not ev.profiles:
            continue
        if matrix:
            raise r.fail(
                f"{path}.profiles",
                "a matrix scenario serves every order under every profile; remove profiles",
            )
        runs = tuple(compare) or (relay.profile,)
        if not set(ev.profiles) <= set(runs):
            outside = [p for p in ev.profiles if p not in runs]
            raise r.fail(
                f"{path}.profiles",
                f"expected profiles the scenario runs under ({', '.join(map(repr, runs))}), got {_brief(outside[0])}",
            )


# What a legal_process event's ``counterfactual`` may ask: "complied" runs the scenario a second
# time, separately and labelled, as if the provider had complied with that demand in full.
COUNTERFACTUALS = ("complied",)
_PHONE = re.compile(r"\+[0-9]{6,15}")


def _targets(r: _Reader, params: Mapping[str, Any], path: str, everyone: _Everyone) -> tuple[str, ...]:
    """``targets``: the accounts one order names, each one of the people or a phone number in E.164
    form ("+12025550143") that is nobody's account (the provider answers "no such account")."""
    if "targets" not in params:
        return ()
    raw = params["targets"]
    if not isinstance(raw, list) or not raw:
        raise r.fail(f"{path}.targets", f"expected a non-empty array of accounts, got {_show(raw)}")
    out = []
    for j, t in enumerate(raw):
        if not isinstance(t, str) or not (everyone.person(t) or _PHONE.fullmatch(t)):
            raise r.fail(
                f"{path}.targets[{j}]",
                f"expected one of the people ({everyone.describe()}) or a phone number like "
                f"'+12025550143', got {_show(t)}",
            )
        if t in out:
            raise r.fail(f"{path}.targets[{j}]", f"{_brief(t)} is named twice")
        out.append(t)
    return tuple(out)


# --- built-in scenarios -----------------------------------------------------------------------

_BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"


def builtin_scenarios() -> dict[str, Path]:
    """Name → file of every scenario that ships with relaysim."""
    return {p.stem: p for p in sorted(_BUILTIN_DIR.glob("*.toml"))}


def is_builtin(scenario: Scenario) -> bool:
    """Whether ``scenario`` is the built-in scenario of its name, under any seed (a copy of its file
    anywhere is too: it makes the same run): what a run's summary.json records as ``scenario_from``, so
    that the command advised to make the run again (sims.report.make_run_command) names the
    built-in for its runs alone, not for a file of the user's own of the same name."""
    path = builtin_scenarios().get(scenario.name)
    if path is None:
        return False
    try:
        return load_scenario(path).with_seed(scenario.seed) == scenario
    except (ScenarioError, OSError, ValueError):
        return False


def one_profile(scenario: Scenario, command: str, instead: str = "", source: str | None = None) -> None:
    """ScenarioError, said before anything runs, for a scenario that runs under several relay profiles
    (``matrix`` or ``compare_profiles``) given to ``command``, which runs one relay: it ran under the
    [relay] profile alone (sweep, reproduce), unsaid, or was refused without naming the profiles
    (defences). ``instead`` is the command's own way out, if it has one; ``source`` names the
    scenario in the error (default: its name). The copy it suggests runs under a profile that every
    order of the scenario is served under (:func:`lone_profiles`)."""
    if not (scenario.matrix or scenario.compare_profiles):
        return
    key = "scenario.matrix" if scenario.matrix else "scenario.compare_profiles"
    profiles = _real_profiles() if scenario.matrix else scenario.compare_profiles
    what = "matrix = true: every real profile" if scenario.matrix else "compare_profiles"
    usable, _note = lone_profiles(scenario)
    copy = (
        f'a copy of this one without {key.split(".")[1]} and with profile = "{usable[0]}" under [relay]'
        if usable
        else f"a copy of this one without {key.split('.')[1]}, its [relay] profile one of its orders' profiles"
    )
    raise ScenarioError(
        scenario.name if source is None else source,
        key,
        f"this scenario runs under several relay profiles ({what}, {', '.join(profiles)}), and {command} "
        f"runs one relay under one profile; give it a scenario with one [relay] profile ({copy})"
        + (f", {instead}" if instead else "")
        + f", or run every profile with relaysim run {scenario.name}",
    )


def lone_profiles(scenario: Scenario) -> tuple[tuple[str, ...], str]:
    """Those of the profiles a scenario of several (``matrix``, ``compare_profiles``) runs under that
    it can run under alone, as its one [relay] profile: each one every order limited to some profiles
    (a legal_process event's ``profiles``) is served under (the validator refuses an order served
    under no profile the scenario runs under: ``_order_profiles_run``); and, when some are left out,
    words saying why, for an error to add. pakistan-2015's PTA demand is served on BES alone: its
    consumer BBM run has no such demand, and a copy run under bbm-consumer alone was refused."""
    profiles = _real_profiles() if scenario.matrix else scenario.compare_profiles
    limited = [ev for ev in scenario.events if isinstance(ev, LegalProcessEvent) and ev.profiles]
    usable = tuple(p for p in profiles if all(p in ev.profiles for ev in limited))
    left = [p for p in profiles if p not in usable]
    if not left:
        return usable, ""
    order = next(ev for ev in limited if left[0] not in ev.profiles)
    return usable, (
        f"not {', '.join(left)}: the order {order.name} is served under {', '.join(order.profiles)} alone (its "
        f"profiles); run {left[0]} from a copy without that order"
    )


def resolve_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario file by path."""
    builtin = builtin_scenarios()
    if name_or_path in builtin:
        return load_scenario(builtin[name_or_path])
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return load_scenario(path)
    raise ScenarioError(
        name_or_path, "", f"no such built-in scenario or file; built-in ones: {', '.join(builtin)}"
    )


# --- how people behave, and the design choices that defend them ([traffic], [defences]) ----------
#
# Kept apart from the rest of the validator: each table has its own dataclass and reader.
#
#     [traffic]                    # all but read_receipts, read_delay and moves need [generate]
#     reply_probability = 0.6      # a generated message is answered (and the answer answered) with this probability
#     reply_delay = "1m"           # median time to answer (log-normal)
#     max_turns = 6                # turns in one exchange, at most
#     read_receipts = false        # read receipts, sent read_delay (median) after delivery
#     read_delay = "30s"
#     popular = 0                  # accounts that receive a stream of messages from everyone
#     popular_messages_per_hour = 60
#     background_per_hour = 0      # messages between random pairs, off the social graph
#     mobile = 0.0                 # share of generated people whose phone changes address
#     moves_per_day = 4
#     households = 0.0             # share of generated people sharing an address (2-4 per home or office NAT)
#     moves = [{ device = "bob/1", at = "2h", address = "100.64.0.9" }]
#
#     [defences]
#     receipts = "on"              # on (as Signal; the default) | off | delayed (uniformly within receipt_delay) | batched (every receipt_batch)
#     receipt_delay = "5m"
#     receipt_batch = "10m"
#     padding = "profile"          # profile (the provider's: signal unless its profile says padding = false) | none | signal (a multiple of 160 bytes) | pow2 (power-of-two buckets)
#     sealed_connection = "shared" # shared (the phone's own address) | fresh (a new connection from an exit address)
#     exit_latency_ms = 200        # what the exit costs each way
#     bundle_fetch = "authenticated"  # or unauthenticated (with the recipient's delivery token, as Signal does)
#     cover_per_hour = 0           # Poisson dummy sealed messages per phone (Loopix's cover traffic)
#     mailboxes = "none"           # or ephemeral: sealed conversations (Martiny et al., NDSS 2021)

RECEIPT_MODES = ("on", "off", "delayed", "batched")
MIN_RECEIPT_BATCH = 0.001  # [defences] receipt_batch: a millisecond; 0 (or nearly) has no next multiple
PADDING_MODES = ("profile", "none", "signal", "pow2")


@dataclass(frozen=True)
class AddressMove:
    device: str
    at: float
    address: str


@dataclass(frozen=True)
class TrafficSpec:
    reply_probability: float = 0.0
    reply_delay: float = 60.0
    max_turns: int = 6
    read_receipts: bool = False
    read_delay: float = 30.0
    popular: int = 0
    popular_messages_per_hour: float = 60.0
    background_per_hour: float = 0.0
    mobile: float = 0.0
    moves_per_day: float = 4.0
    households: float = 0.0
    moves: tuple[AddressMove, ...] = ()


@dataclass(frozen=True)
class DefenceSpec:
    # Delivery receipts are on, as in Signal (where they cannot be turned off) and in the setting of
    # Martiny et al. (NDSS 2021): every phone answers every message it receives with a receipt, an
    # ordinary (under sealed sender, sealed) envelope. A provider's count of "messages" therefore
    # includes them; ground truth keeps them apart (SimulationResult.truth.control), and the scoring
    # says how many of the rows a provider handed over were receipts (sims.scoring).
    # Read receipts ([traffic] read_receipts) stay off unless a scenario turns them on: Signal sends
    # them by default too, but each person can turn them off, they depend on when the person opens
    # the conversation (a behaviour model, read_delay, not calibrated on anything), and the papers
    # reproduced here model delivery receipts only.
    receipts: str = "on"
    receipt_delay: float = 300.0
    receipt_batch: float = 600.0
    padding: str = "profile"
    sealed_connection: str = "shared"
    exit_latency_ms: float = 200.0
    bundle_fetch: str = "authenticated"
    cover_per_hour: float = 0.0
    # What a phone does when a known peer device's identity key changes (clients.identity):
    # "warn" (Signal's default: accept, show "safety number changed") or "block" (wait for the user).
    identity_changes: str = "warn"
    # Contact Key Verification (iMessage, iOS 17.2): "on" makes a device added to a contact's
    # account an identity change under the "per-device" identity model, instead of silent.
    key_verification: str = "off"
    # Sealed conversations (Martiny et al., NDSS 2021): "ephemeral" — whoever writes first in a pair
    # opens a mailbox (a fresh account, registered and fetched from an exit address) and tells the
    # peer inside the encryption; the peer's replies and receipts go there. "none": as Signal.
    mailboxes: str = "none"
    # Key transparency (relay/transparency.py, clients/transparency.py): the relay logs every
    # identity key it serves in an RFC 9162 Merkle log; phones check inclusion of the keys they are
    # given, audit their own account and gossip signed heads to a witness. Off: no phone checks.
    key_transparency: bool = False

    def changed(self) -> dict[str, object]:
        """The switches set away from their defaults."""
        base = DefenceSpec()
        return {k: v for k, v in self.__dict__.items() if getattr(base, k) != v}


def _choice(
    r: _Reader, t: Mapping[str, Any], key: str, path: str, allowed: Sequence[str], default: str
) -> str:
    v = r.get(t, key, path, str, default)
    if v not in allowed:
        raise r.fail(f"{path}.{key}", f"expected one of {', '.join(map(repr, allowed))}, got {_brief(v)}")
    return v


def _rate(r: _Reader, t: Mapping[str, Any], key: str, path: str, default: float) -> float:
    v = float(r.get(t, key, path, (int, float), default))
    if not 0 <= v < math.inf:
        raise r.fail(f"{path}.{key}", f"expected a non-negative number, got {_brief(v)}")
    return v


# [traffic] keys that shape generated traffic (sims.world.traffic plans them with [generate]'s
# messages and people); without [generate] they would silently do nothing. The others (read
# receipts, moves) apply to every message and device.
GENERATED_TRAFFIC = (
    "reply_probability",
    "reply_delay",
    "max_turns",
    "popular",
    "popular_messages_per_hour",
    "background_per_hour",
    "mobile",
    "moves_per_day",
    "households",
)


def _traffic(r: _Reader, raw: object, everyone: _Everyone, duration: float) -> TrafficSpec:
    t = r.table(raw, "traffic")
    fields = [f for f in TrafficSpec.__dataclass_fields__]
    r.known(t, "traffic", fields)
    if not everyone.generated:
        for key in GENERATED_TRAFFIC:
            if key in t:
                raise r.fail(
                    f"traffic.{key}",
                    "shapes generated traffic, and the scenario has no [generate] table: it would do nothing "
                    "(only read_receipts, read_delay and moves apply to [[conversations]])",
                )
    d = TrafficSpec()
    turns = r.integer(t, "max_turns", "traffic", "from 1 to 100", d.max_turns)
    if not 1 <= turns <= 100:
        raise r.fail("traffic.max_turns", f"expected from 1 to 100, got {_brief(turns)}")
    accounts = len(everyone.names) + everyone.generated  # those traffic picks the popular ones from
    popular = r.integer(t, "popular", "traffic", f"from 0 to {accounts:,} accounts (the people)", d.popular)
    if not 0 <= popular <= accounts:
        raise r.fail(
            "traffic.popular",
            f"expected from 0 to {accounts:,} accounts (the people), got {_brief(popular, ',')}",
        )
    moves = []
    raw_moves = r.get(t, "moves", "traffic", list, [])
    for i, m in enumerate(raw_moves):
        path = f"traffic.moves[{i}]"
        mt = r.table(m, path)
        r.known(mt, path, ["device", "at", "address"])
        device = r.get(mt, "device", path, str)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}/[1-9][0-9]?", device):
            raise r.fail(
                f"{path}.device", f"expected a device as person/index (e.g. 'bob/1'), got {_brief(device)}"
            )
        if not everyone.device(device):
            raise r.fail(
                f"{path}.device",
                f"expected a device like 'alice/1' ({everyone.describe_devices()}), got {_brief(device)}",
            )
        at = r.duration(mt, "at", path)
        if at >= duration:
            raise r.past_end(f"{path}.at", "a time before the end of the run", mt["at"], at, duration)
        address = _address(r, r.get(mt, "address", path, str), f"{path}.address")
        moves.append(AddressMove(device, at, address))
    delays = {}
    for key in ("reply_delay", "read_delay"):
        # the median of a log-normal draw (sims.world.traffic, sims.world.timeline): a longer one than
        # the longest run is no delay any run could show, and near 1e308 s the draw overflowed
        delays[key] = r.duration(t, key, "traffic", getattr(d, key))
        if delays[key] > MAX_DURATION:
            raise r.fail(
                f"traffic.{key}",
                f'expected a duration of at most "365d" ({_shown(MAX_DURATION, delays[key])} s, the longest run), '
                f"got {_as_written(t[key], delays[key], MAX_DURATION)}",
            )
    return TrafficSpec(
        reply_probability=r.probability(t, "reply_probability", "traffic", d.reply_probability),
        reply_delay=delays["reply_delay"],
        max_turns=turns,
        read_receipts=r.get(t, "read_receipts", "traffic", bool, d.read_receipts),
        read_delay=delays["read_delay"],
        popular=popular,
        popular_messages_per_hour=_rate(
            r, t, "popular_messages_per_hour", "traffic", d.popular_messages_per_hour
        ),
        background_per_hour=_rate(r, t, "background_per_hour", "traffic", d.background_per_hour),
        mobile=r.probability(t, "mobile", "traffic", d.mobile),
        moves_per_day=_rate(r, t, "moves_per_day", "traffic", d.moves_per_day),
        households=r.probability(t, "households", "traffic", d.households),
        moves=tuple(moves),  # in file order (traffic.moves[i]); sims.world.traffic.plan_moves sorts them
    )


def _defences(r: _Reader, raw: object) -> DefenceSpec:
    t = r.table(raw, "defences")
    r.known(t, "defences", [f for f in DefenceSpec.__dataclass_fields__])
    d = DefenceSpec()
    batch = r.duration(t, "receipt_batch", "defences", d.receipt_batch)
    if batch < MIN_RECEIPT_BATCH:
        # receipts wait for the next multiple of it (sims.world.timeline): 0 has none
        raise r.fail(
            "defences.receipt_batch",
            f"expected a positive duration (at least {_shown(MIN_RECEIPT_BATCH, batch)} s), "
            f"got {_as_written(t['receipt_batch'], batch, MIN_RECEIPT_BATCH)}",
        )
    return DefenceSpec(
        receipts=_choice(r, t, "receipts", "defences", RECEIPT_MODES, d.receipts),
        receipt_delay=r.duration(t, "receipt_delay", "defences", d.receipt_delay),
        receipt_batch=batch,
        padding=_choice(r, t, "padding", "defences", PADDING_MODES, d.padding),
        sealed_connection=_choice(
            r, t, "sealed_connection", "defences", ("shared", "fresh"), d.sealed_connection
        ),
        exit_latency_ms=_milliseconds(r, t, "exit_latency_ms", "defences", d.exit_latency_ms),
        bundle_fetch=_choice(
            r, t, "bundle_fetch", "defences", ("authenticated", "unauthenticated"), d.bundle_fetch
        ),
        cover_per_hour=_rate(r, t, "cover_per_hour", "defences", d.cover_per_hour),
        identity_changes=_choice(r, t, "identity_changes", "defences", ("warn", "block"), d.identity_changes),
        key_verification=_choice(r, t, "key_verification", "defences", ("off", "on"), d.key_verification),
        mailboxes=_choice(r, t, "mailboxes", "defences", ("none", "ephemeral"), d.mailboxes),
        key_transparency=r.get(t, "key_transparency", "defences", bool, d.key_transparency),
    )


# --- group chats ([[groups]]) --------------------------------------------------------------------
#
#     [[groups]]
#     name = "book-club"
#     members = ["alice", "bob", "carol"]      # at the start
#     admins = ["alice"]                       # members who may add people (a join names its admin with "by")
#     timeline = [
#       { at = "1m", from = "alice", text = "hello all" },
#       { at = "5m", leave = "carol" },
#       { at = "6m", join = "dave", by = "alice" },
#     ]


@dataclass(frozen=True)
class GroupChange:
    at: float
    kind: str  # "message", "join" or "leave"
    person: str  # who sends, joins or leaves
    text: str = ""
    by: str | None = None  # the admin who added a joining member


@dataclass(frozen=True)
class GroupSpec:
    name: str
    members: tuple[str, ...]  # at the start
    admins: tuple[str, ...]
    timeline: tuple[GroupChange, ...] = ()  # in time order

    def members_at(self, t: float) -> tuple[str, ...]:
        """The members after every join and leave at or before ``t``."""
        members = set(self.members)
        for c in self.timeline:
            if c.at > t:
                break
            if c.kind == "join":
                members.add(c.person)
            elif c.kind == "leave":
                members.discard(c.person)
        return tuple(sorted(members))


def _people_list(r: _Reader, t: Mapping[str, Any], key: str, path: str, names: set[str]) -> tuple[str, ...]:
    value = r.get(t, key, path, list, [])
    for i, who in enumerate(value):
        if not isinstance(who, str) or who not in names:
            raise r.fail(
                f"{path}.{key}[{i}]",
                f"expected one of the people ({', '.join(sorted(names))}), got {_show(who)}",
            )
    if len(set(value)) != len(value):
        raise r.fail(f"{path}.{key}", f"names someone twice: {_show(value)}")
    return tuple(value)


def _groups(r: _Reader, raw: object, names: set[str], duration: float) -> tuple[GroupSpec, ...]:
    if not isinstance(raw, list):
        raise r.fail("groups", f"expected an array of tables ([[groups]]), got {_show(raw)}")
    out: list[GroupSpec] = []
    for i, item in enumerate(raw):
        path = f"groups[{i}]"
        t = r.table(item, path)
        r.known(t, path, ["name", "members", "admins", "timeline"])
        name = r.get(t, "name", path, str)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", name):
            raise r.fail(
                f"{path}.name", f"expected 1-80 letters, digits, '_', '.' or '-', got {_brief(name)}"
            )
        if any(g.name == name for g in out):
            raise r.fail(f"{path}.name", f"a second group named {_brief(name)}")
        members = _people_list(r, t, "members", path, names)
        if not members:
            raise r.fail(f"{path}.members", "expected at least one member")
        admins = _people_list(r, t, "admins", path, names)
        for j, a in enumerate(admins):
            if a not in members:
                raise r.fail(f"{path}.admins[{j}]", f"{_brief(a)} is an admin but not one of the members")
        current = set(members)
        changes = []
        last = 0.0
        for j, c in enumerate(r.get(t, "timeline", path, list, [])):
            cpath = f"{path}.timeline[{j}]"
            ct = r.table(c, cpath)
            r.known(ct, cpath, ["at", "from", "text", "join", "leave", "by"])
            at = r.duration(ct, "at", cpath)
            if at >= duration:
                raise r.past_end(
                    f"{cpath}.at", "a time before the end of the scenario", ct["at"], at, duration
                )
            if at < last:
                raise r.fail(
                    f"{cpath}.at",
                    f"expected a time from {_shown(last, at)} s (the entry before) to the end of the scenario "
                    f"({_shown(duration, at)} s), got {_shown(at, last, duration)} s",
                )
            last = at
            kinds = [k for k in ("from", "join", "leave") if k in ct]
            if len(kinds) != 1:
                raise r.fail(cpath, 'expected exactly one of "from" (with "text"), "join" or "leave"')
            key = kinds[0]
            who = r.get(ct, key, cpath, str)
            if who not in names:
                raise r.fail(
                    f"{cpath}.{key}",
                    f"expected one of the people ({', '.join(sorted(names))}), got {_brief(who)}",
                )
            if key == "from":
                if who not in current:
                    raise r.fail(
                        f"{cpath}.from", f"{_brief(who)} is not a member of {_brief(name)} at {at:g} s"
                    )
                if "by" in ct:
                    raise r.fail(f"{cpath}.by", '"by" goes with "join"')
                changes.append(GroupChange(at, "message", who, r.text(ct, "text", cpath)))
                continue
            if "text" in ct:
                raise r.fail(f"{cpath}.text", '"text" goes with "from"')
            if key == "join":
                if who in current:
                    raise r.fail(
                        f"{cpath}.join", f"{_brief(who)} is already a member of {_brief(name)} at {at:g} s"
                    )
                by = r.get(ct, "by", cpath, str, None)
                if admins and (by is None or by not in admins or by not in current):
                    raise r.fail(
                        f"{cpath}.by",
                        f"only a current admin adds members to {_brief(name)}: expected one of "
                        f"{sorted(set(admins) & current)}, got {_brief(by)}",
                    )
                current.add(who)
                changes.append(GroupChange(at, "join", who, by=by))
            else:
                if who not in current:
                    raise r.fail(
                        f"{cpath}.leave", f"{_brief(who)} is not a member of {_brief(name)} at {at:g} s"
                    )
                if "by" in ct:
                    raise r.fail(f"{cpath}.by", '"by" goes with "join"')
                current.discard(who)
                changes.append(GroupChange(at, "leave", who))
        out.append(GroupSpec(name, members, admins, tuple(changes)))
    return tuple(out)


# --- labelled organisations ([generate] organisations) -------------------------------------------
#
#     [generate]
#     organisations = { clinic = 2, pharmacy = 2, lawyer = 1, worship = 2, gunshop = 1 }
#     trait_probability = { worship = 0.25 }   # overrides organisation_kinds()' defaults
#
# Each kind makes that many accounts (``clinic-1``, ``clinic-2``, …) that write to no one; the kind's
# share of the generated people (its trait_probability, rounded to whole people, at least one if
# above 0), drawn at random, have the trait and contact one of them
# (sims.world.traffic.organisation_traits). The defaults are the shares of MetaPhone's
# participants whose calls reached such a number (Mayer, Mutchler and Mitchell, PNAS 113(20), 2016):
# health services 57 %, financial services 40 %, pharmacies 30 %, legal services 10 %, firearms
# sellers 7 %, read from sims.analysis.traits.PAPER_SHARES, the table the scoring sets beside what it
# finds (one table for both). Places of worship have no share in the paper: 0.2 is illustrative.

# kinds the paper gives no share for, and the illustrative default share of each
UNPUBLISHED_KINDS: dict[str, float] = {"worship": 0.20}


def organisation_kinds() -> dict[str, float]:
    """Each kind of organisation a scenario may name without a trait_probability, and its default share
    of the generated people: MetaPhone's kinds at the paper's shares, then ``UNPUBLISHED_KINDS``."""
    from relaysim.sims.analysis.traits import PAPER_SHARES

    return {**{kind: share for kind, (_label, share) in PAPER_SHARES.items()}, **UNPUBLISHED_KINDS}


def _organisations(
    r: _Reader, t: Mapping[str, Any]
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, float], ...]]:
    raw = r.table(t.get("organisations", {}), "generate.organisations")
    orgs: list[tuple[str, int]] = []
    for kind, n in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", kind):
            raise r.fail(
                f"generate.organisations.{kind}", "expected a kind of lowercase letters, digits and '_'"
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise r.fail(
                f"generate.organisations.{kind}",
                f"expected an integer from 1 to 1000 accounts, got {_show(n)}",
            )
        orgs.append((kind, n))
    probs = r.table(t.get("trait_probability", {}), "generate.trait_probability")
    out: dict[str, float] = {}
    for kind in probs:
        if kind not in raw:
            raise r.fail(
                f"generate.trait_probability.{kind}",
                f"names no kind of generate.organisations (have: {', '.join(raw) or 'none'})",
            )
        out[kind] = r.probability(probs, kind, "generate.trait_probability", 0.0)
    defaults = organisation_kinds() if orgs else {}
    for kind, _n in orgs:
        if kind not in out:
            if kind not in defaults:
                raise r.fail(
                    f"generate.organisations.{kind}",
                    f"no default share for {_brief(kind)} (known: {', '.join(defaults)}): "
                    f"give generate.trait_probability.{kind}",
                )
            out[kind] = defaults[kind]
    return tuple(orgs), tuple((k, out[k]) for k, _n in orgs)
