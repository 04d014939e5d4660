"""``relaysim sweep``: one scenario over a grid of parameters and seeds, as a table and a plot.

    relaysim sweep two-friends --param network.loss=0,0.1,0.2 --param relay.sealed_sender=true,false \\
        --seeds 5 --out out/sweep

Each ``--param KEY=V1,V2,…`` names a key of the scenario file by its dotted path (``network.loss``,
``relay.profile``, ``generate.people``; an array element by its index, ``people.0.devices.0.region``)
and the values to try, each read as a TOML value (a word that is not one, like ``signal``, is taken
as a string). The grid is every combination of the values; each combination (a *cell*) runs under
``--seeds N`` seeds, the scenario's own seed and the N − 1 after it. The values are put into the
parsed file before it is validated, so a bad key or value gets the validator's error, naming the
file, the key path and the value.

Every run is a whole ``relaysim run`` (``sims.report.run_to_dir`` in a temporary directory) in a
worker process: a local process pool by default, or the workers of a Dask cluster given its
scheduler's address (``--dask tcp://host:8786``; needs dask's ``distributed``, the ``sweep``
extra). The same function runs in either. What is measured is numbers from each run's
``summary.json``, by dotted path (``--metric messages.lost_by_network``; a list element by its
``name`` or index, ``disclosures.search-warrant-amira.score.contacts.share``; a name may hold '.',
``disclosures.order.v2.score.contacts.share``). Per cell and metric:
the mean over the seeds and its 95 % confidence interval (Student's t with n − 1 degrees of
freedom).

Outputs in ``--out DIR``: ``sweep.json`` (everything, the per-seed values too), ``sweep.md`` (the
table), ``sweep.svg`` (a plot written here, no plotting library: each metric against the first
parameter, one series per combination of the others, with the intervals as error bars) and
``runs/<hash>.json``, each run's summary, saved as it finishes. The hash covers the scenario's
text, the cell's parameters and the seed, so a sweep run again in the same DIR (interrupted, or
with more values or seeds) reuses what is there and runs only what is missing; a saved run cut
short, changed since it was written (each record holds its key and a check of itself), or
another run's, is made again, and said (``warn``). A run is
deterministic in (scenario, parameters, seed), and the outputs are built from the saved runs in
grid order, so they are byte for byte the same whichever pool ran them and in whatever order.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaysim.relay.mdtext import md_code, md_text
from relaysim.sims.analysis.runfiles import (
    brief,
    loads,
    not_a_file,
    not_empty,
    out_folder,
    own_file,
    read_run_text,
    scenario_arg,
    text_arg,
)
from relaysim.sims.numbers import whole_number
from relaysim.sims.numbers import workers as workers_arg

__all__ = [
    "RunFailed",
    "SweepError",
    "add_parser",
    "apply_param",
    "build_scenario",
    "main",
    "mean_ci",
    "metric_problem",
    "parse_param",
    "run_one",
    "run_sweep",
    "t_quantile_975",
]

# part of each run's hash: bump it when a run's saved form changes (2: the record holds its key and a check)
RUN_FORMAT = 2
DEFAULT_METRICS = ("messages.device_deliveries", "messages.lost_by_network", "latency_s.p50")
DISCLOSURE_METRICS = ("score.contacts.share", "score.message_times.share", "score.locations.share")


class SweepError(ValueError):
    """A sweep cannot start or finish: bad arguments, a missing dependency, an unreachable cluster."""


class RunFailed(RuntimeError):
    """A run raised in its worker (a bug, not bad input); the runs finished before it stay saved."""


# --- parameters --------------------------------------------------------------------------------


def _split_values(text: str) -> list[str]:
    """``0,0.1,[1,2],"a,b"`` → the four values: commas inside brackets, braces or quotes do not split."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current = ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def _toml_value(key: str, text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: signal, whatsapp
    except RecursionError:  # tomllib's parser recurses once an array or inline table deep
        raise SweepError(f"--param {key}: a value nested too deeply to read") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (CPython's limit on converting one)
        raise SweepError(f"--param {key}: a value that cannot be read: {str(exc).split(';')[0]}") from None


def parse_param(spec: str) -> tuple[str, list[Any]]:
    """``network.loss=0,0.1`` → ``("network.loss", [0, 0.1])``; SweepError saying what is wrong."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"--param {brief(spec)}: expected KEY=V1,V2,… (e.g. network.loss=0,0.1,0.2)")
    if any(not part for part in key.split(".")):
        raise SweepError(f"--param {brief(spec)}: expected a dotted key like network.loss, got {brief(key)}")
    if key == "scenario.seed":
        raise SweepError("--param scenario.seed: the seeds are chosen by --seeds N, not as a parameter")
    texts = _split_values(values)
    if any(not t for t in texts):
        raise SweepError(f"--param {brief(spec)}: expected values separated by commas, got an empty one")
    parsed = [_toml_value(key, t) for t in texts]
    seen: dict[object, int] = {}
    for i, value in enumerate(parsed):
        j = seen.setdefault(_same(value), i)
        if j != i:
            first, again = texts[j].strip(), texts[i].strip()
            also = "" if first == again else f" ({brief(first, 's')} and {brief(again, 's')} are one value)"
            raise SweepError(f"--param {brief(spec)}: a value is given twice{also}")
    return key, parsed


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same(value: Any) -> object:
    """What two values of one --param share when they are the same value: a number by its value (``0``
    and ``0.0``, ``1`` and ``1e0`` are one, which the scenario reads as the same float: two cells of
    one run, and the plot of a numeric axis divided by its width, 0, an internal error), anything
    else by its JSON."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("number", value)  # (equal numbers hash alike: 0 == 0.0)
    return ("json", _canon(value))


def _show(value: Any) -> str:
    """A value as it would be written in TOML (and on the command line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def apply_param(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set the dotted ``key`` of a parsed scenario to ``value`` (tables on the way are made if missing)."""
    from relaysim.sims.scenario import ScenarioError

    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "the top level"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(
                    source,
                    key,
                    f"{where} is an array of {len(node)}; expected an index 0–{len(node) - 1}, got {brief(part)}",
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ScenarioError(source, key, f"{where} is {_show(node)}, not a table or an array")


def build_scenario(text: str, source: str, params: Sequence[tuple[str, Any]]) -> Any:
    """The scenario ``text`` with ``params`` put in, validated (``sims.scenario.Scenario``)."""
    from relaysim.sims.scenario import ScenarioError, _line_of, read_toml, scenario_from_data

    data = read_toml(text, source)
    # (each key and value cut short as an error shows a value: the label prefixes every error)
    cells = ", ".join(f"{brief(k, 's')}={brief(_show(v), 's')}" for k, v in params)
    label = f"{source} [{cells}]" if params else source
    for key, value in params:
        apply_param(data, key, copy.deepcopy(value), label)
    try:
        return scenario_from_data(data, label)
    except ScenarioError as exc:
        # the line the key is written on in the file, as relaysim run says it (parse_scenario), unless
        # a --param set it or a table or array it is in (then it is not the file's)
        if not exc.path or exc.line is not None or any(_within(exc.path, _as_path(k)) for k, _v in params):
            raise
        culprit = _culprit(text, source, params)
        if culprit is not None:
            # the file is good without the --param: the error is the change's, named by it
            # (relay.region=zz was said as network.latency[1].between's error, the key it broke)
            line = _line_of(text, exc.path)
            at = f" (line {line})" if line is not None else ""
            raise ScenarioError(
                exc.source,
                f"--param {culprit}",
                f"this value makes the file's {brief(exc.path, 's')}{at} wrong: {exc.message}",
            ) from None
        line = _line_of(text, exc.path)
        if line is None:
            raise
        raise ScenarioError(exc.source, exc.path, exc.message, line) from None


def _culprit(text: str, source: str, params: Sequence[tuple[str, Any]]) -> str | None:
    """Which of ``params`` makes the (otherwise valid) scenario ``text`` invalid, as ``KEY`` (one of
    them does alone) or ``KEY1, KEY2`` (only together); None if the file is invalid without them."""
    from relaysim.sims.scenario import ScenarioError, read_toml, scenario_from_data

    def fails(chosen: Sequence[tuple[str, Any]]) -> bool:
        data = read_toml(text, source)
        try:
            for key, value in chosen:
                apply_param(data, key, copy.deepcopy(value), source)
            scenario_from_data(data, source)
        except ScenarioError:
            return True
        return False

    if not params or fails([]):
        return None
    alone = [k for k, v in params if fails([(k, v)])]
    return ", ".join(brief(k, "s") for k in (alone[:1] or [k for k, _v in params]))


def _as_path(key: str) -> str:
    """A --param key as an error's key path: ``people.0.devices.0.region`` → ``people[0].devices[0].region``."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)


def _within(path: str, key: str) -> bool:
    """Whether ``path`` and ``key`` (key paths) are one in the other: either is the other, or under it."""
    short, long = sorted((path, key), key=len)
    return long == short or long.startswith((f"{short}.", f"{short}["))


# --- one run ------------------------------------------------------------------------------------


def run_key(text: str, params: Sequence[tuple[str, Any]], seed: int) -> str:
    """The hash a run is saved under: the scenario's text, the cell's parameters and the seed."""
    blob = json.dumps(
        {"format": RUN_FORMAT, "scenario": text, "params": [[k, v] for k, v in params], "seed": seed},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Run one (cell, seed) and return its summary; this is what a pool or a Dask worker runs."""
    from relaysim.sims.report import run_to_dir

    params = [(k, v) for k, v in job["params"]]
    scenario = build_scenario(job["text"], job["source"], params).with_seed(job["seed"])
    with tempfile.TemporaryDirectory(prefix="relaysim-sweep-", dir=_scratch()) as tmp:
        _result, summary = run_to_dir(scenario, Path(tmp))
    return {"key": job["key"], "params": job["params"], "seed": job["seed"], "summary": summary}


def _scratch() -> str | None:
    """Where a run's files go (and are thrown away): memory on Linux, so a run is not waiting on the disk
    (SQLite's WAL set-up alone waits for two fsyncs); else the usual temporary directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


# --- statistics ---------------------------------------------------------------------------------

# Student's t, the 0.975 quantile, for 1–30 degrees of freedom (a 95 % two-sided interval).
_T975 = (
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
)


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile: a table to 30 degrees of freedom, then the Cornish–Fisher series."""
    if df < 1:
        raise ValueError(f"expected at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence interval (Student's t); no interval from fewer than two values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "ci95": None, "half_width": None}
    try:
        mean = math.fsum(values) / n
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else 0.0
    except OverflowError:
        # values near a float's limit (a run's record in DIR/runs edited: no metric of a run is):
        # the same over the values scaled down by the largest, which may leave no finite interval
        scale = max(abs(x) for x in values)
        scaled = [x / scale for x in values]
        mean_scaled = math.fsum(scaled) / n
        mean = mean_scaled * scale
        sd = math.sqrt(math.fsum((x - mean_scaled) ** 2 for x in scaled) / (n - 1)) * scale if n > 1 else 0.0
    if n < 2:
        return {"n": 1, "mean": round(mean, 6), "ci95": None, "half_width": None}
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    if not all(math.isfinite(v) for v in (half, mean - half, mean + half)):
        return {"n": n, "mean": round(mean, 6), "ci95": None, "half_width": None}
    return {
        "n": n,
        "mean": round(mean, 6),
        "ci95": [round(mean - half, 6), round(mean + half, 6)],
        "half_width": round(half, 6),
    }


def metric_value(summary: Any, path: str) -> float | None:
    """A number from a summary by dotted path; a list element by its ``name`` or its index. A name
    may hold dots (a legal process's may: ``name = "order.v2"``), so in a list the parts are read as
    the longest name there that leaves a path to a number (``disclosures.order.v2.score.contacts.share``
    is the disclosure named "order.v2")."""
    return _metric_value(summary, path.split("."))


def _metric_value(node: Any, parts: list[str]) -> float | None:
    if not parts:
        if isinstance(node, bool):
            return float(node)
        if isinstance(node, int | float) and math.isfinite(node):
            return float(node)
        return None
    if isinstance(node, dict):
        return _metric_value(node[parts[0]], parts[1:]) if parts[0] in node else None
    if not isinstance(node, list):
        return None
    for end in range(len(parts), 0, -1):  # (the longest name first)
        name = ".".join(parts[:end])
        for x in node:
            if isinstance(x, dict) and x.get("name") == name:
                value = _metric_value(x, parts[end:])
                if value is not None:
                    return value
                break  # (the first element of that name, as before)
    if parts[0].isdigit() and int(parts[0]) < len(node):
        return _metric_value(node[int(parts[0])], parts[1:])
    return None


def metric_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a metric (an "expected ..." phrase naming the metrics there
    are), or None. An empty path, or one with an empty part ('', 'messages.', 'a..b'), names no
    number of any summary: ``--metric ''`` (an unset shell variable) ran the whole sweep and then
    only warned that no run had a number there."""
    if path.strip() and all(part.strip() for part in path.split(".")):
        return None
    each = ", ".join(f"disclosures.NAME.{m}" for m in DISCLOSURE_METRICS)
    return (
        f"expected a dotted path to a number in a run's summary.json, got {brief(path)}; the metrics are "
        f"{', '.join(DEFAULT_METRICS)} and, for each disclosure NAME, {each} (leave --metric out for all "
        "of them), or any other number in summary.json, e.g. messages.planned"
    )


# What summary.json holds, as sims.report.summarise (and run_to_dir, after it) writes it, for checking a
# --metric before any run: a section whose keys relaysim sets (a dict here) or a value (NUMBER, TEXT),
# or a section whose keys the run's own records set (OPEN: relay_records by kind, disclosures by name,
# the refusals by reason), checked only against the runs. A metric no run could have a number at
# (``--metric messages.lost_by_netwrk``) was refused only after every run of the sweep had finished.
# tests/sims/test_sweep.py holds it to the summaries of built-in scenarios' runs.
NUMBER, TEXT, OPEN = "a number", "text", "open"
_FATES = dict.fromkeys(
    (
        "sent",
        "forged_by_relay",
        "delivered",
        "duplicates_dropped",
        "refused",
        "undecryptable",
        "unread",
        "dropped_by_relay",
    ),
    NUMBER,
)
SUMMARY_SCHEMA: dict[str, Any] = {
    "scenario": TEXT,
    "seed": NUMBER,
    "scenario_from": TEXT,
    "start": TEXT,
    "duration_s": NUMBER,
    "people": NUMBER,
    "devices": NUMBER,
    "messages": {
        **dict.fromkeys(
            (
                "planned",
                "accepted_by_relay",
                "lost_by_network",
                "device_deliveries_expected",
                "device_deliveries",
                "still_queued_or_in_flight",
                "group_deliveries_lost",
                "plaintext_mismatches",
                "duplicates_dropped",
                "undecryptable",
            ),
            NUMBER,
        ),
        "refused": OPEN,
        "sync_copies_read": NUMBER,
    },
    "latency_s": dict.fromkeys(("p50", "p90", "p99", "max"), NUMBER),
    "network": dict.fromkeys(("lost", "duplicated", "partitioned", "held"), NUMBER),
    "relay_records": OPEN,
    "relay_queued_at_end": NUMBER,
    "envelopes": {"people": _FATES, "agency": _FATES, "agency_devices": "a list of names"},
    "events": NUMBER,
    "disclosures": OPEN,
    "exceptional": OPEN,
    "counterfactual": OPEN,
    "live": OPEN,
}


def _schema_numbers(node: Any, at: str) -> list[str]:
    """The metric paths under ``node`` of SUMMARY_SCHEMA (an open section as ``at.…``)."""
    if node == NUMBER:
        return [at]
    if node == OPEN:
        return [f"{at}.…"]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _schema_numbers(v, f"{at}.{k}" if at else k)]
    return []


def schema_problem(path: str) -> str | None:
    """Why no run's summary.json can hold a number at ``path`` (SUMMARY_SCHEMA: a key relaysim never
    writes in a section whose keys it sets, a section of numbers or a text named for one, a path past
    a number), naming the metrics there are; None when some run's may (a path into an open section is
    left to the runs)."""
    node: Any = SUMMARY_SCHEMA
    parts = path.split(".")
    for i, part in enumerate(parts):
        at = ".".join(parts[:i])
        if node == OPEN:
            return None
        if not isinstance(node, dict):
            return (
                f"{at} is {node}, with nothing under it"
                if node == NUMBER
                else f"{at} is {node}, not a number"
            )
        if part not in node:
            numbers = _schema_numbers(node, at)
            listed = ", ".join(numbers[:MAX_CHOICES]) + (
                f" and {len(numbers) - MAX_CHOICES} more" if len(numbers) > MAX_CHOICES else ""
            )
            return f"summary.json has no {brief(part, 's')}{f' under {at}' if at else ''}; the metrics {'under ' + at + ' ' if at else ''}are {listed}"
        node = node[part]
    if (
        node == OPEN
    ):  # (a section of the runs' own keys is no number: --metric disclosures was run, then refused)
        return f"{path} is a section, not a number; name a number under it ({path}.…)"
    if node == NUMBER:
        return None
    if isinstance(node, str):
        return f"{path} is {node}, not a number"
    return f"{path} is a section, not a number; the numbers under it are {', '.join(_schema_numbers(node, path))}"


def _order_problem(metric: str, orders: Iterable[str]) -> str | None:
    """Why ``metric``, a path under ``disclosures``, names no order of the scenario (``orders``, the
    names of the orders a run serves, LegalProcessEvent.order_names: summary.json's ``disclosures``
    holds one entry per order, by its name, or by its index); None for a metric elsewhere, or one
    that names an order."""
    parts = metric.split(".")
    if parts[0] != "disclosures" or len(parts) < 2:
        return None
    rest = ".".join(parts[1:])
    names = list(orders)
    if any(rest == n or rest.startswith(n + ".") for n in names):
        return None
    if parts[1].isdigit() and int(parts[1]) < len(names):
        return None
    if not names:
        return "the scenario has no legal order, so its runs' summary.json has no disclosures"
    return (
        f"names no legal order of the scenario after disclosures.; its orders are {', '.join(names)} "
        f"(e.g. disclosures.{names[0]}.{DISCLOSURE_METRICS[0]})"
    )


def _metric(text: str) -> str:
    """--metric's type: text (text_arg), and a path that can name a number (metric_problem)."""
    problem = metric_problem(text_arg(text))
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


MAX_CHOICES = 40  # metric paths an error lists, at most


def number_paths(summaries: Iterable[Any]) -> list[str]:
    """Every dotted path to a number in ``summaries`` (a list element by its ``name``, else its index),
    in order of first appearance: what ``--metric`` can name."""
    paths: dict[str, None] = {}

    def walk(node: Any, at: str) -> None:
        if isinstance(node, bool) or (isinstance(node, int | float) and math.isfinite(node)):
            paths.setdefault(at, None)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{at}.{k}" if at else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                name = v.get("name") if isinstance(v, dict) else None
                walk(v, f"{at}.{name if isinstance(name, str) and name else i}")

    for summary in summaries:
        walk(summary, "")
    return list(paths)


def metric_choices(summaries: Sequence[Any], metric: str) -> str:
    """The metrics there are, for an error about ``metric``: those under the longest start of its path
    that the runs have (``messages`` → messages.planned, …), else every one (at most MAX_CHOICES)."""
    paths = number_paths(summaries)
    parts = metric.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        under = [p for p in paths if p.startswith(prefix + ".")]
        if under:
            break
    else:
        prefix, under = "", paths
    shown = ", ".join(under[:MAX_CHOICES]) + (
        f" and {len(under) - MAX_CHOICES} more" if len(under) > MAX_CHOICES else ""
    )
    return f"the numbers under {prefix} are {shown}" if prefix else f"the metrics are {shown or 'none'}"


def default_metrics(summaries: Iterable[dict[str, Any]]) -> list[str]:
    """A few messages numbers, and each disclosure's score shares (disclosures in order of appearance)."""
    names: list[str] = []
    for s in summaries:
        disclosures = s.get("disclosures")
        for d in disclosures if isinstance(disclosures, list) else []:
            if (
                isinstance(d, dict)
                and d.get("score")
                and isinstance(d.get("name"), str)
                and d["name"] not in names
            ):
                names.append(d["name"])
    return list(DEFAULT_METRICS) + [f"disclosures.{n}.{m}" for n in names for m in DISCLOSURE_METRICS]


# --- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    data: dict[str, Any]  # sweep.json
    ran: int  # runs made now
    reused: int  # runs found in DIR/runs


def _scenario_text(name_or_path: str) -> tuple[str, str]:
    """The text and file name of a built-in scenario or a scenario file."""
    from relaysim.sims.scenario import ScenarioError, builtin_scenarios, read_scenario_text

    builtin = builtin_scenarios()
    path = builtin.get(name_or_path) or Path(name_or_path)
    if name_or_path not in builtin and path.suffix != ".toml" and not path.exists():
        raise ScenarioError(
            name_or_path, "", f"no such built-in scenario or file; built-in ones: {', '.join(builtin)}"
        )
    return read_scenario_text(path), path.name


def _label(params: Sequence[tuple[str, Any]]) -> str:
    return " ".join(f"{k}={_show(v)}" for k, v in params) or "(the scenario as it is)"


def _pool_executor(workers: int) -> Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]]:
    def execute(jobs: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a fresh interpreter per worker, safe even when the caller has threads (fork is not);
        # no more workers than runs (a --workers past a C int was an OverflowError)
        with ProcessPoolExecutor(
            max_workers=max(1, min(workers, len(jobs))), mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = {pool.submit(run_one, job): job for job in jobs}
            try:
                for fut in as_completed(futures):
                    yield _result(fut, futures[fut])
            finally:
                for fut in futures:
                    fut.cancel()

    return execute


def _dask_executor(address: str) -> Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]]:
    try:
        import distributed
    except ImportError:
        raise SweepError(
            "--dask needs dask's distributed package, which is not installed: pip install 'relaysim[sweep]'"
        ) from None

    def execute(jobs: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        try:
            client = distributed.Client(address, timeout=10)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"--dask {address}: cannot reach the Dask scheduler: {exc}") from None
        with client:
            futures = {
                client.submit(run_one, job, key=f"relaysim-run-{job['key']}", pure=False): job for job in jobs
            }
            try:
                for fut in distributed.as_completed(list(futures)):
                    yield _result(fut, futures[fut])
            finally:
                client.cancel(list(futures))

    return execute


def _result(future: Any, job: dict[str, Any]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = future.result()
    except Exception as exc:
        raise RunFailed(f"the run {_label(job['params'])} seed={job['seed']} failed: {exc!r}") from exc
    return result


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # (not left behind beside the runs)
        raise


MAX_SWEEP_RUNS = 100_000  # cells × seeds: a larger grid was built and checked seed by seed, and hung


def run_sweep(
    scenario: str,
    params: Sequence[tuple[str, Sequence[Any]]],
    seeds: int,
    out: Path,
    *,
    metrics: Sequence[str] = (),
    workers: int | None = None,
    dask: str | None = None,
    progress: Callable[[str], None] | None = None,
    step: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run the grid (reusing finished runs in ``out/runs``) and write sweep.json, sweep.md and sweep.svg.

    Raises ScenarioError for a bad scenario, key or value (before anything runs) and SweepError for
    anything else the caller got wrong. ``progress`` gets a line per finished run; ``step`` gets
    (runs finished, runs in all), once before the first run and after each (for a progress bar);
    ``warn`` a line if saved runs are there that cannot be reused (see :func:`_saved_summary`).
    """
    if seeds < 1:
        raise SweepError(f"--seeds: expected at least 1, got {seeds}")
    for metric in metrics:
        if (problem := metric_problem(metric)) is not None:
            raise SweepError(f"--metric: {problem}")
    for metric in metrics:  # (before any run: a path no run's summary.json has was found after them all)
        if (problem := schema_problem(metric)) is not None:
            raise SweepError(
                f"--metric {brief(metric, 's')}: no run's summary.json has a number there: {problem}"
            )
    twice = sorted({m for m in metrics if list(metrics).count(m) > 1})
    if twice:  # (its values were gathered once per time it was named: one seed's run read as two, ± 0)
        raise SweepError(
            f"--metric: each metric once, got {', '.join(brief(m, 's') for m in twice)} more than once"
        )
    keys = [k for k, _ in params]
    if len(set(keys)) != len(keys):
        raise SweepError(f"--param: each key once, got {', '.join(keys)}")
    runs = math.prod(len(v) for _, v in params) * seeds
    if runs > MAX_SWEEP_RUNS:  # checked before the grid is made: it was made, and checked, run by run
        raise SweepError(
            f"--seeds {seeds:,} × {runs // seeds:,} cell(s) is {runs:,} runs: expected at most "
            f"{MAX_SWEEP_RUNS:,} in one sweep (at a second or more each, more would not finish in days)"
        )
    text, source = _scenario_text(scenario)
    base = build_scenario(text, source, [])
    from relaysim.sims.scenario import MAX_SEED, lone_profiles, one_profile

    if base.seed + seeds - 1 > MAX_SEED:  # (with_seed refuses a seed past it: it was a ValueError per run)
        raise SweepError(
            f"--seeds {seeds:,}: the seeds run from the scenario's, {base.seed}, to {base.seed + seeds - 1}, past "
            f"{MAX_SEED} (2**63 - 1, the largest seed); give fewer, or a smaller seed in the scenario"
        )
    seed_list = [base.seed + i for i in range(seeds)]
    cells = [list(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in params))]
    from relaysim.sims.scenario import LegalProcessEvent
    from relaysim.sims.world.traffic import check_population

    orders: list[tuple[list[tuple[str, Any]], str, list[str]]] = []  # each cell's, and its profile
    for cell in cells:  # every bad key or value is reported before anything runs
        cell_scenario = build_scenario(text, source, cell)
        usable, left_out = lone_profiles(cell_scenario)
        # (each profile named is one every order of the scenario is served under: relay.profile=bbm-consumer
        # was suggested for pakistan-2015, whose PTA demand is served on BES alone, and refused)
        one_profile(  # (a run's summary.json is one relay's: a matrix's was its [relay] profile's alone)
            cell_scenario,
            "relaysim sweep",
            (
                f"or sweep it one profile at a time: --param {'scenario.matrix=false' if cell_scenario.matrix else 'scenario.compare_profiles=[]'} "
                f"--param relay.profile={','.join(usable)}"
                if usable
                else "or sweep such a copy"
            )
            + (f" ({left_out})" if left_out else ""),
            # (the file, and the cell whose --param made it so, as the validator's errors name them)
            f"{source} [{_label(cell)}]" if cell and not (base.matrix or base.compare_profiles) else source,
        )
        for seed in seed_list:  # and every device an event names, as each seed makes the people
            check_population(cell_scenario.with_seed(seed))
        # the orders a run of the cell serves, by the names its summary.json's disclosures have: an
        # order of several accounts is one per account (NAME-ACCOUNT), and one the scenario serves under
        # other profiles alone is not served (the event's name was taken, the union of every cell's:
        # the metric was found to name nothing only after every run)
        served = [
            name
            for e in cell_scenario.events
            if isinstance(e, LegalProcessEvent) and e.served_under(cell_scenario.relay.profile)
            for name in e.order_names()
        ]
        orders.append((cell, cell_scenario.relay.profile, served))
    for cell, profile, served in orders:
        for metric in metrics:  # (a NAME no order of the scenario has was found only after every run)
            if (problem := _order_problem(metric, served)) is not None:
                where = f" (the cell {_label(cell)}, under {profile})" if cell else ""
                raise SweepError(f"--metric {brief(metric, 's')}: {problem}{where}")

    _check_out_is_this_sweeps(out, base.name, source)
    runs_dir = own_file(out, "runs")  # never a link: the runs would be written wherever it points
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        {"key": run_key(text, cell, seed), "text": text, "source": source, "params": cell, "seed": seed}
        for cell in cells
        for seed in seed_list
    ]
    saved: dict[str, dict[str, Any]] = {}
    unusable: list[str] = []  # saved runs that are there and cannot be reused: made again, and said
    for job in jobs:
        path = runs_dir / f"{job['key']}.json"
        if path.exists() and not path.is_file():  # (the run would be made, and then not saved)
            raise SweepError(
                f"{path}: {'a folder' if path.is_dir() else 'no regular file'} stands where the sweep saves a "
                "finished run; move it away, or give the sweep a folder of its own"
            )
        summary, problem = _saved_summary(path, job["key"])
        if summary is not None:
            saved[job["key"]] = summary
        elif problem is not None:
            unusable.append(f"{job['key']}.json {problem}")
    if unusable and warn is not None:
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        warn(
            f"{len(unusable)} saved run(s) in {runs_dir} cannot be reused, and are made again: "
            f"{unusable[0]}{more}"
        )
    todo = [job for job in jobs if job["key"] not in saved]
    say = progress or (lambda _line: None)
    if saved:
        say(f"{len(saved)} of {len(jobs)} runs already done in {runs_dir}; running the other {len(todo)}")
    if step is not None:
        step(len(saved), len(jobs))
    if todo:
        execute = _dask_executor(dask) if dask else _pool_executor(workers or _cpus())
        finished = len(saved)
        for done in execute(todo):
            _write_atomic(runs_dir / f"{done['key']}.json", _run_record(done))
            saved[done["key"]] = done["summary"]
            finished += 1
            say(f"[{finished}/{len(jobs)}] {_label(done['params'])} seed={done['seed']} done")
            if step is not None:
                step(finished, len(jobs))

    summaries = [saved[job["key"]] for job in jobs]
    for metric in metrics:  # refused, not a table of dashes: the runs stay saved, reused when run again
        if all(metric_value(summary, metric) is None for summary in summaries):
            raise SweepError(
                f"--metric {brief(metric, 's')}: no number at that path in any run's summary.json; "
                f"{metric_choices(summaries, metric)}. The {len(jobs)} run(s) are kept in {runs_dir}: run "
                "again with one of these and they are reused"
            )
    chosen = list(metrics) or default_metrics(summaries)
    table = []
    for cell in cells:
        values = {m: [] for m in chosen}  # type: dict[str, list[float | None]]
        for seed in seed_list:
            summary = saved[run_key(text, cell, seed)]
            for m in chosen:
                values[m].append(metric_value(summary, m))
        table.append(
            {
                "params": {k: v for k, v in cell},
                "metrics": {
                    m: {**mean_ci([x for x in vs if x is not None]), "values": vs} for m, vs in values.items()
                },
            }
        )
    data = {
        "scenario": base.name,
        "source": source,
        "params": [{"key": k, "values": list(v)} for k, v in params],
        "seeds": seed_list,
        "metrics": chosen,
        "interval": "95% confidence interval of the mean over the seeds (Student's t, n - 1 degrees of freedom)",
        "cells": table,
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "sweep.json", json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    _write_atomic(out / "sweep.md", render_markdown(data))
    _write_atomic(out / "sweep.svg", render_svg(data))
    return SweepResult(data, ran=len(todo), reused=len(jobs) - len(todo))


def _run_record(done: dict[str, Any]) -> str:
    """The text of ``runs/<key>.json`` for a finished run: its key, parameters, seed and summary, as
    JSON reads them back, and ``check``, the SHA-256 of them (:func:`_record_check`)."""
    record = json.loads(json.dumps({k: done[k] for k in ("key", "params", "seed", "summary")}, default=str))
    record["check"] = _record_check(record)
    return json.dumps(record, indent=1) + "\n"


def _record_check(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "check"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _saved_summary(path: Path, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The summary of the finished run ``key`` saved in DIR/runs, or None and why it is to be made
    (again): not there (no reason), or (the reason, said) a link to nothing, not readable, cut short, or not the
    record the sweep saved of that run. A record is its run's by its key (the hash of the scenario's
    text, the parameters and the seed: another sweep's run, or another seed's, under this name is not)
    and its check (any change since it was written: a summary edited, a number of it replaced by
    NaN, a string or another number, was put in the table as the run's)."""
    try:
        text = read_run_text(path)
    except FileNotFoundError:
        if path.is_symlink():  # (replaced by the run's record, not written through: said, not silent)
            return None, (
                f"is a symbolic link to {path.readlink()}, which does not exist (the link is replaced by "
                "the run's record)"
            )
        return None, None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    try:
        record = loads(text)
    except ValueError:
        return None, "is not JSON (cut short?)"
    if not isinstance(record, dict) or not isinstance(record.get("summary"), dict):
        return None, "is not a run's record"
    if record.get("key") != key:
        return None, "is the record of another run (another scenario, parameters or seed)"
    if record.get("check") != _record_check(record):
        return None, "was changed after the sweep wrote it (its check does not match)"
    return record["summary"], None


def _check_out_is_this_sweeps(out: Path, scenario: str, source: str) -> None:
    """A sweep's folder is its own: it resumes a sweep of the same scenario there (its finished runs
    are reused), but never writes beside a run, or over another scenario's sweep."""
    if (out / "relay.db").exists() or (out / "transcript.jsonl").exists():
        raise SweepError(f"--out {out} holds a run, not a sweep; give the sweep a folder of its own")
    for name in ("sweep.json", "sweep.md", "sweep.svg"):
        # said before the runs: a folder there was "Is a directory" (naming the copy written to
        # replace it) once every run was done, and a pipe was waited on for a reader
        what = not_a_file(out / name)
        if what not in (None, "no such file"):
            raise SweepError(
                f"--out {out}: {name}, where the sweep writes its table, is {what}; move it away, or give "
                "the sweep a folder of its own"
            )
    try:
        held = loads(read_run_text(out / "sweep.json"))
    except (OSError, ValueError):
        return  # no sweep there yet (or one cut short before its table): this one may write
    if isinstance(held, dict) and (held.get("scenario"), held.get("source")) != (scenario, source):
        raise SweepError(
            f"--out {out} holds a sweep of {held.get('scenario')!r} ({held.get('source')}), not of {scenario!r} "
            f"({source}); give this sweep a folder of its own"
        )


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --- the table and the plot ---------------------------------------------------------------------


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4g}"


def _cell_text(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["half_width"] is None:
        return _num(stat["mean"])
    return f"{_num(stat['mean'])} ± {_num(stat['half_width'])}"


def render_markdown(data: dict[str, Any]) -> str:
    keys = [p["key"] for p in data["params"]]
    lines = [
        f"# Sweep of {data['scenario']} ({data['source']})",
        "",
        f"Seeds {', '.join(map(str, data['seeds']))}; each cell is the mean over them ± the half-width of "
        "its 95 % confidence interval (Student's t, n − 1 degrees of freedom). A metric missing from a "
        "run's summary.json is left out of its cell (n in sweep.json); – where no run had it.",
        "",
        "Metrics (dotted paths into summary.json):",
        "",
    ]
    lines += [f"- m{i + 1}: {md_code(m)}" for i, m in enumerate(data["metrics"])]
    head = [md_text(k) for k in keys] + [f"m{i + 1}" for i in range(len(data["metrics"]))]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in data["cells"]:
        row = [md_text(_show(cell["params"][k])) for k in keys]
        row += [_cell_text(cell["metrics"][m]) for m in data["metrics"]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _esc(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text, {'"': "&quot;"})


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        lo, hi = lo - 0.5 if lo else -0.5, hi + 0.5 if hi else 0.5
    raw = (hi - lo) / count
    mag = 10.0 ** math.floor(math.log10(raw))  # (a float: an int's 10**308 is past a float's range)
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    if not (math.isfinite(first) and math.isfinite(hi + 2 * step)):
        return [-math.inf, math.inf]  # ticks past a float's range (-inf + step is -inf: no end)
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def render_svg(data: dict[str, Any]) -> str:
    """Each metric against the first parameter: one panel per metric, one series per other combination."""
    width, panel_h, left, right, top, bottom = 760, 260, 70, 220, 30, 50
    metrics = data["metrics"]
    params = data["params"]
    cells = data["cells"]
    height = max(1, len(metrics)) * (panel_h + top + bottom) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    if not params:
        xs_values: list[Any] = [None]
        x_name = "(no parameter)"
    else:
        xs_values = params[0]["values"]
        x_name = params[0]["key"]
    numeric = (
        all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs_values) and len(xs_values) > 1
    )
    series_keys = [p["key"] for p in params[1:]]
    series: list[tuple[str, list[dict[str, Any]]]] = []
    for combo in itertools.product(*(p["values"] for p in params[1:])):
        label = (
            ", ".join(f"{k}={_show(v)}" for k, v in zip(series_keys, combo, strict=True)) or data["scenario"]
        )
        members = [
            c
            for c in cells
            if all(_canon(c["params"][k]) == _canon(v) for k, v in zip(series_keys, combo, strict=True))
        ]
        series.append((label, members))
    plot_w = width - left - right
    for i, metric in enumerate(metrics):
        y0 = i * (panel_h + top + bottom) + top
        stats = [c["metrics"][metric] for c in cells]
        lows = [s["ci95"][0] if s["ci95"] else s["mean"] for s in stats if s["mean"] is not None]
        highs = [s["ci95"][1] if s["ci95"] else s["mean"] for s in stats if s["mean"] is not None]
        parts.append(
            f'<text x="{left}" y="{y0 - 10}" font-size="13" font-weight="bold">{_esc(metric)}</text>'
        )
        parts.append(
            f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>'
        )
        if not lows:
            parts.append(f'<text x="{left + 10}" y="{y0 + 20}">no values</text>')
            continue
        ticks = _nice_ticks(min(lows), max(highs))
        if not all(math.isfinite(t) for t in ticks):  # values near a float's limit (an edited run's record)
            parts.append(f'<text x="{left + 10}" y="{y0 + 20}">values too large to plot</text>')
            continue
        ylo, yhi = ticks[0], ticks[-1]

        def ypos(v: float, _lo: float = ylo, _hi: float = yhi, _y0: float = y0) -> float:
            return _y0 + panel_h - (v - _lo) / (_hi - _lo) * panel_h

        for t in ticks:
            y = ypos(t)
            parts.append(
                f'<line x1="{left - 4}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            )
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>')

        def xpos(v: Any) -> float:
            if numeric:
                lo, hi = min(xs_values), max(xs_values)
                return float(left + 20 + (v - lo) / (hi - lo) * (plot_w - 40))
            j = next(k for k, x in enumerate(xs_values) if _canon(x) == _canon(v))
            return left + (j + 0.5) * plot_w / len(xs_values)

        for v in xs_values:
            x = xpos(v)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + panel_h}" y2="{y0 + panel_h + 4}" stroke="#999"/>'
            )
            parts.append(
                f'<text x="{x:.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{_esc(_show(v))}</text>'
            )
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{y0 + panel_h + 34}" text-anchor="middle">{_esc(x_name)}</text>'
        )
        for s_i, (label, members) in enumerate(series):
            colour = _COLOURS[s_i % len(_COLOURS)]
            dodge = (s_i - (len(series) - 1) / 2) * 4
            points = []
            for c in members:
                st = c["metrics"][metric]
                if st["mean"] is None:
                    continue
                x = xpos(c["params"][x_name] if params else None) + dodge
                points.append((x, ypos(st["mean"])))
                if st["ci95"]:
                    ya, yb = ypos(st["ci95"][0]), ypos(st["ci95"][1])
                    parts.append(
                        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{ya:.1f}" y2="{yb:.1f}" stroke="{colour}"/>'
                    )
                    for yy in (ya, yb):
                        parts.append(
                            f'<line x1="{x - 3:.1f}" x2="{x + 3:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}"/>'
                        )
                parts.append(f'<circle cx="{x:.1f}" cy="{ypos(st["mean"]):.1f}" r="3" fill="{colour}"/>')
            if len(points) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            ly = y0 + 12 + s_i * 16
            parts.append(
                f'<rect x="{left + plot_w + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            )
            parts.append(f'<text x="{left + plot_w + 25}" y="{ly + 1}">{_esc(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- the command --------------------------------------------------------------------------------

HELP_EPILOG = """examples:
  relaysim sweep two-friends --param network.loss=0,0.1,0.2 --seeds 5 --out out/loss
  relaysim sweep two-friends --param network.loss=0,0.2 --param relay.profile=signal,whatsapp \\
      --metric messages.lost_by_network --metric disclosures.search-warrant-amira.score.contacts.share
  relaysim sweep city --param generate.people=20,50 --seeds 3 --dask tcp://10.0.0.5:8786

Run again with the same --out to finish an interrupted sweep, or to add values or seeds: finished
runs (DIR/runs/<hash>.json) are reused.
"""


def _scheduler(text: str) -> str:
    """--dask's type: not empty (``--dask "$SCHEDULER"`` with it unset ran the sweep here, unsaid)."""
    return not_empty(
        text, "a Dask scheduler's address", "e.g. tcp://10.0.0.5:8786, or leave --dask out to run here"
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``sweep`` subcommand, added to ``relaysim``'s subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep",
        help="run a scenario over a grid of parameters and seeds: a table of means with 95%% intervals, and a plot",
        description=(
            "Run a scenario over every combination of the --param values, each under --seeds seeds, each run "
            "in its own worker process (a local pool, or a Dask cluster with --dask). Writes DIR/sweep.json, "
            "DIR/sweep.md (per cell and metric, the mean over the seeds and its 95% confidence interval, "
            "Student's t), DIR/sweep.svg (each metric against the first parameter) and every run's summary in "
            "DIR/runs/. KEY is a dotted path into the scenario file (network.loss, relay.profile, "
            "generate.people, people.0.devices.0.region); each value is read as TOML, or as a string if it "
            "is not TOML. The seeds are the scenario's and the N - 1 after it."
        ),
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenario", type=scenario_arg, metavar="NAME_OR_PATH", help="a built-in scenario or a .toml file"
    )
    p.add_argument(
        "--param",
        type=text_arg,
        action="append",
        default=[],
        metavar="KEY=V1,V2,…",
        help="a scenario key and the values to try (repeat for a grid; default: none: one cell, the "
        "scenario as written, under each seed)",
    )
    p.add_argument(
        "--seeds",
        type=whole_number("seeds", 1, MAX_SWEEP_RUNS, why="MAX_SWEEP_RUNS: the runs of all cells"),
        default=5,
        metavar="N",
        help="seeds per cell (default: 5)",
    )
    p.add_argument(
        "--metric",
        type=_metric,
        action="append",
        default=[],
        metavar="PATH",
        help="a number in summary.json by dotted path (repeatable; default: messages delivered and lost, "
        "latency p50, and each disclosure's score shares)",
    )
    p.add_argument("--out", type=out_folder, metavar="DIR", help="where to write (default: out/sweep-NAME)")
    p.add_argument(
        "--workers", type=workers_arg(), metavar="N", help="local worker processes (default: one per CPU)"
    )
    p.add_argument(
        "--dask",
        type=_scheduler,
        metavar="ADDRESS",
        help="run on a Dask cluster instead, given its scheduler's address (tcp://host:8786); "
        "needs dask's distributed (pip install 'relaysim[sweep]') (default: none: a local pool of --workers)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(args: argparse.Namespace) -> int:
    """``relaysim sweep``: 0 when done, 2 for bad input, 1 when a run failed."""
    from relaysim.sims.scenario import ScenarioError
    from relaysim.sims.term import printable

    try:
        params = [parse_param(spec) for spec in args.param]
        name = Path(args.scenario).stem
        out = Path(args.out or f"out/sweep-{name}")

        def progress(line: str) -> None:  # a line names the values (--param's, as given): shown, never run
            print(f"sweep: {printable(line)}", file=sys.stderr, flush=True)

        from relaysim.sims.progress import progress_bar

        # on a terminal, a bar with an ETA; into a file or a pipe, a line per run
        with progress_bar("sweep", None, enabled=False if args.quiet else None, unit="runs") as bar:
            result = run_sweep(
                args.scenario,
                params,
                args.seeds,
                out,
                metrics=args.metric,
                workers=args.workers,
                dask=args.dask,
                progress=None if args.quiet or bar.enabled else progress,
                step=lambda done, total: bar.update(done, total=total),
                warn=lambda line: print(
                    f"relaysim sweep: warning: {printable(line)}", file=sys.stderr, flush=True
                ),
            )
    except (ScenarioError, SweepError) as exc:
        from relaysim.sims.analysis.runfiles import one_line

        print(f"relaysim sweep: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relaysim sweep: interrupted; the finished runs are kept, run again to resume", file=sys.stderr)
        return 130
    except RunFailed as exc:
        print(
            f"relaysim sweep: {printable(str(exc))}; the runs finished before it are kept, run again to resume",
            file=sys.stderr,
        )
        return 1
    # sweep.md keeps a value as written; printed, a control character in it is shown, never run
    print(printable(read_run_text(out / "sweep.md")), end="")
    cells = len(result.data["cells"])
    print(
        f"\n{cells} cells × {len(result.data['seeds'])} seeds: {result.ran} runs now, {result.reused} reused. "
        f"Wrote {out}/sweep.json, sweep.md, sweep.svg and each run in {out}/runs/."
    )
    return 0
