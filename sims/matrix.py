"""The legal-process matrix: every real provider profile under every kind of US legal process.

A scenario with ``matrix = true`` in its ``[scenario]`` table (the built-in ``fbi-chart`` is one)
is run once per profile in :data:`relay.profiles.REAL_PROFILES`, each run into ``DIR/<profile>/``
with its own ``relay.db`` and ``disclosures/``. The scenario's timeline must serve exactly one
order of each kind in :data:`MATRIX_PROCESSES`, all on the same account; each is answered by that
profile's compliance desk from what that run's relay actually stored or collected. The matrix is
then read off the disclosures, never written by hand:

    {profile: {process: {"response": ..., "provided": [...], "withheld_by_policy": [...],
                         "not_retained": [...], "no_capability": [...], "cryptographically_impossible": [...]}}}

``DIR/matrix.json`` holds exactly that; ``DIR/matrix.md`` renders it for people (rows profiles,
columns processes); ``render_terminal`` prints a "can reveal / cannot reveal" table per profile.
``relaysim run fbi-chart --out DIR`` does all of it; ``tests/sims/test_fbi_chart.py`` holds the result
against the FBI's chart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from relaysim.relay.compliance import Disclosure, in_order
from relaysim.relay.legal import CATEGORIES, INSTRUMENTS, REASON_LABELS, REASONS, RESPONSES
from relaysim.relay.mdtext import md_block
from relaysim.relay.profiles import ASKS, REAL_PROFILES, get_profile, profile_as_of
from relaysim.sims.analysis.runfiles import brief, read_run_text
from relaysim.sims.scenario import LegalProcessEvent, Scenario, is_builtin
from relaysim.sims.term import outcome_style, render, table
from relaysim.sims.world.simulation import SimulationResult

__all__ = [
    "MATRIX_PROCESSES",
    "Matrix",
    "build_matrix",
    "check_matrix_scenario",
    "markdown_problem",
    "markdown_tables",
    "matrix_disagreement",
    "matrix_problem",
    "outcome_disagreement",
    "outcome_problem",
    "render_markdown",
    "render_terminal",
    "run_matrix_to_dir",
    "terminal_notes",
]

MATRIX_PROCESSES = ("subpoena", "court_order_2703d", "search_warrant", "pen_register", "wiretap")

Cell = dict[str, Any]  # "response", "provided" and each reason in relay.legal.REASONS
Matrix = dict[str, dict[str, Cell]]


def check_matrix_scenario(scenario: Scenario) -> str:
    """The account every order is served on; ValueError naming the problem if the timeline does not
    serve exactly one order of each kind in :data:`MATRIX_PROCESSES` on one account."""
    orders = [e for e in scenario.events if isinstance(e, LegalProcessEvent)]
    where = f"{scenario.source}: a matrix scenario"
    counts = {p: sum(1 for o in orders if o.process == p) for p in MATRIX_PROCESSES}
    missing = [p for p, n in counts.items() if n != 1]
    if missing:
        raise ValueError(
            f"{where} serves exactly one order of each of {', '.join(MATRIX_PROCESSES)}; "
            + ", ".join(f"{p} is served {counts[p]} time(s)" for p in missing)
        )
    others = sorted({o.process for o in orders} - set(MATRIX_PROCESSES))
    if others:
        raise ValueError(
            f"{where} serves only {', '.join(MATRIX_PROCESSES)}; it also serves {', '.join(others)}"
        )
    targets = {o.target for o in orders}
    if len(targets) != 1:
        raise ValueError(f"{where} serves every order on one account; got {sorted(map(str, targets))}")
    (target,) = targets
    return str(target)


def build_matrix(disclosures: Mapping[str, Sequence[Disclosure]]) -> Matrix:
    """Profile → process → the response, the categories provided, and those not provided by reason,
    from the disclosures each profile's desk made (one per process in :data:`MATRIX_PROCESSES`)."""
    matrix: Matrix = {}
    for profile, ds in disclosures.items():
        by_process = {d.process.process: d for d in ds}
        matrix[profile] = {}
        for process in MATRIX_PROCESSES:
            d = by_process[process]
            matrix[profile][process] = d.summary()
    return matrix


def matrix_problem(data: object, profiles: Sequence[str] = REAL_PROFILES) -> str | None:
    """What keeps ``data`` (matrix.json read back) from being a matrix as :func:`run_matrix_to_dir`
    writes it, as ``WHERE: expected …, got …`` (WHERE: ``profile.process.key``); None if nothing does.

    It has a row for each of ``profiles`` (those it was run under) and no other, each with an
    outcome for each of :data:`MATRIX_PROCESSES` and no other; each outcome has a response
    (relay.legal.RESPONSES) and, under ``provided`` and each reason, a list of categories that
    process asks for, each once in the outcome, and every category it asks for in one of them (but
    for "no such account": nothing). ``relaysim chart`` read a hand-edited
    or damaged file as far as it could: a category taken out of a cell, or put under two outcomes,
    was shown so; a list written as ``0`` or ``""`` as nothing; anything else was a Python error."""
    if isinstance(data, dict | list) and not data:
        return "it holds no provider"
    if not isinstance(data, dict):
        return f"expected a JSON object of providers (profiles), got {_json_kind(data)}"
    for profile in data:
        if profile not in profiles:
            return f"{brief(profile)}: expected only the providers (profiles) it was run under, {', '.join(profiles)}"
    missing = [p for p in profiles if p not in data]
    if missing:
        return f"expected a row for each provider (profile) it was run under; {', '.join(missing)} missing"
    for profile, row in data.items():
        if not isinstance(row, dict):
            return f"{profile}: expected an object of outcomes by process, got {_json_kind(row)}"
        missing = [p for p in MATRIX_PROCESSES if p not in row]
        if missing:
            return f"{profile}: expected an outcome for each of {', '.join(MATRIX_PROCESSES)}; {', '.join(missing)} missing"
        others = [p for p in row if p not in MATRIX_PROCESSES]
        if others:
            return f"{profile}: expected only {', '.join(MATRIX_PROCESSES)}, got also {brief(others[0])}"
        for process in MATRIX_PROCESSES:
            problem = outcome_problem(row[process], process)
            if problem is not None:
                return f"{profile}.{process}{problem}"
    return None


def _json_kind(value: object) -> str:
    """What a value read from JSON is, as an error says what it got."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({brief(value)})"
    if isinstance(value, str):
        return f"a string ({brief(value)})"
    return "a list" if isinstance(value, list) else "an object"


def outcome_problem(cell: object, process: str) -> str | None:
    """What keeps ``cell`` (one outcome read back from matrix.json or comparison.json: ``process``
    served on one provider) from being one as a compliance desk writes it (relay.compliance's
    ``Disclosure.summary``), as ``.key: expected …, got …``; None if nothing does."""
    if not isinstance(cell, dict):
        return f": expected an object (the response and the categories), got {_json_kind(cell)}"
    response = cell.get("response")
    if not isinstance(response, str) or response not in RESPONSES:
        return f".response: expected one of {', '.join(RESPONSES)}, got {_json_kind(response) if 'response' in cell else 'nothing'}"
    asks = ASKS[process]
    seen: dict[str, str] = {}
    for key in ("provided", *REASONS):
        if key not in cell:
            return f".{key}: expected a list of categories (it may be empty), got nothing"
        categories = cell[key]
        if not isinstance(categories, list):
            return f".{key}: expected a list of categories (it may be empty), got {_json_kind(categories)}"
        for category in categories:
            if not isinstance(category, str) or category not in asks:
                return (
                    f".{key}: expected categories {INSTRUMENTS[process].a_name} asks for "
                    f"({', '.join(in_order(asks))}), got {_json_kind(category)}"
                )
            if category in seen:
                where = "twice" if seen[category] == key else f"under {seen[category]} too"
                return f".{key}: {category} is there {where}; each category asked for has one outcome"
            seen[category] = key
    unanswered = in_order(asks - set(seen))
    if unanswered and not cell.get("no_such_account"):
        return (
            f": {', '.join(unanswered)} asked for, and neither provided nor held back for a reason "
            "(every category asked for is one or the other)"
        )
    return None


def outcome_disagreement(disclosures: Path, cell: Cell, process: str, name: str | None = None) -> str | None:
    """Where ``cell`` (an outcome that :func:`outcome_problem` passed) differs from the disclosure it
    was read off: the one in ``disclosures`` (a profile's ``disclosures/`` folder) named ``name``, or
    without a name the one answering ``process``; as ``.key: …, but FILE says …``; None if they agree.

    A cell changed to another valid value (a response "complied" made "refused", a category moved
    from one reason to another) passes every check of its own file, and was shown as the provider's
    answer; the disclosure beside it is the desk's own record of that answer. A digest in the run's
    folder would not do better: whoever edits a file there can write its digest again; the
    disagreement of two files, the one read and the record it was read off, shows an edit of one."""
    found = _disclosure(disclosures, process, name)
    if isinstance(found, str):
        return found
    path, record = found
    shown = f"{disclosures.parent.name}/{disclosures.name}/{path.name}"
    if record.get("response") != cell["response"]:
        return (
            f".response is {brief(cell['response'])}, but {shown}, the disclosure it is read off, says "
            f"{brief(record.get('response'))}"
        )
    provided = record.get("provided")
    not_provided = record.get("not_provided")
    if not isinstance(provided, dict) or not isinstance(not_provided, dict):
        return f": {shown}, the disclosure it is read off, is not one as relaysim writes it (no provided or not_provided)"
    for key in ("provided", *REASONS):
        there = provided if key == "provided" else not_provided.get(key, {})
        if not isinstance(there, dict):
            return f": {shown}, the disclosure it is read off, is not one as relaysim writes it ({key})"
        if set(cell[key]) != set(there):
            return (
                f".{key} is {', '.join(cell[key]) or 'empty'}, but {shown}, the disclosure it is read off, says "
                f"{', '.join(in_order(there)) or 'none'}"
            )
    return None


def _disclosure(folder: Path, process: str, name: str | None) -> tuple[Path, dict[str, Any]] | str:
    """The disclosure in ``folder`` named ``name`` (or, with no name, the one answering ``process``),
    as its path and record; or what keeps it from being read."""
    from relaysim.sims.analysis.runfiles import loads, not_a_file, not_json

    where = f"{folder.parent.name}/{folder.name}"
    paths = [folder / f"{name}.json"] if name is not None else sorted(folder.glob("*.json"))
    for path in paths:
        what = not_a_file(path)
        if what == "no such file":
            continue
        if what is not None:  # (a named pipe was read, and waited on for ever)
            return f": {where}/{path.name}, the disclosure it is read off, is {what}"
        try:
            record = loads(read_run_text(path))
        except FileNotFoundError:
            continue
        except ValueError as exc:  # (not JSON, not UTF-8: every reader's words for it)
            return f", read off {where}/{path.name}: {not_json(path, exc)}"
        except OSError as exc:
            return f": {where}/{path.name}, the disclosure it is read off, cannot be read ({brief(str(exc))})"
        if not isinstance(record, dict):
            return f": {where}/{path.name}, the disclosure it is read off, is not a JSON object"
        if record.get("process") == process:
            return path, record
        if name is not None:
            return (
                f": {where}/{path.name}, the disclosure it is read off, answers {brief(record.get('process'))}, "
                f"not {process}"
            )
    return f": no disclosure of it in {where} to check it against (it is read off one)"


def matrix_disagreement(run: Path, matrix: Matrix) -> str | None:
    """Where ``matrix`` (read back from ``run``/matrix.json, :func:`matrix_problem` passed) differs
    from the disclosures its cells were read off (:func:`outcome_disagreement`), as
    ``profile.process.key: …``; None if it agrees with every one."""
    for profile, row in matrix.items():
        for process in MATRIX_PROCESSES:
            problem = outcome_disagreement(run / profile / "disclosures", row[process], process)
            if problem is not None:
                return f"{profile}.{process}{problem}"
    return None


RunOne = Callable[..., tuple[SimulationResult, dict[str, Any]]]


def run_matrix_to_dir(
    scenario: Scenario,
    out: Path,
    *,
    run_one: RunOne,
    profiles: Sequence[str] = REAL_PROFILES,
    progress: Callable[[float, float], None] | None = None,
) -> tuple[SimulationResult, dict[str, Any]]:
    """Run ``scenario`` under each profile into ``out/<profile>/`` with ``run_one`` (``sims.report.run_to_dir``,
    handed in so that this module does not import the one that calls it); write ``out/matrix.json``,
    ``out/matrix.md`` and ``out/summary.json``. Returns the first profile's result and a summary
    whose ``matrix`` is the matrix."""
    target = check_matrix_scenario(scenario)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, SimulationResult] = {}
    empty: dict[str, dict[str, list[str]]] = {}  # provided, but nothing of it in this run
    for name in profiles:
        single = replace(
            scenario, relay=replace(scenario.relay, profile=name, profile_given=True), matrix=False
        )
        results[name], _summary = run_one(single, out / name, progress=progress)
        empty[name] = {
            d.process.process: in_order(c for c, rows in d.provided.items() if not rows)
            for d in results[name].disclosures
        }
    matrix = build_matrix({name: r.disclosures for name, r in results.items()})
    (out / "matrix.json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    (out / "matrix.md").write_text(render_markdown(matrix, scenario, target, empty), encoding="utf-8")
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "scenario_from": "built-in" if is_builtin(scenario) else "file",
        "target": target,
        "profiles": list(profiles),
        "processes": list(MATRIX_PROCESSES),
        "matrix": matrix,
        "empty": empty,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return results[profiles[0]], summary


# --- rendering ------------------------------------------------------------------------------


def _cell(categories: Sequence[str], empty: Sequence[str] = ()) -> str:
    if not categories:
        return "—"
    return ", ".join(CATEGORIES[c].short + ("°" if c in empty else "") for c in categories)


def render_markdown(
    matrix: Matrix,
    scenario: Scenario,
    target: str,
    empty: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> str:
    """``matrix.md``: one table for what was handed over and one per reason the rest was not
    (relay.legal.REASONS), rows profiles and columns processes (:func:`markdown_tables`), and a legend."""
    lines = [
        f"# What each provider can be made to hand over — `{scenario.name}`",
        "",
        md_block(scenario.description),
        "",
        f"Every order was served on `{target}`. Each cell is read off the disclosure that profile's compliance "
        f"desk produced from its own relay's store (`<profile>/disclosures/<process>.md` has the records and "
        "the reasons). A subpoena, 2703(d) order and search warrant look back at what is held at service; a pen "
        "register and a wiretap order collect from service until they expire."
        + (
            f" Each provider is run as it was on {scenario.start.isoformat()} (`[scenario] start`)."
            if scenario.start is not None
            else ""
        ),
        "",
        *markdown_tables(matrix, empty or {}),
        *_assumptions(matrix, scenario),
        *_readings(matrix, scenario),
        "## Legend",
        "",
        "| in the cells | category | meaning |",
        "|---|---|---|",
        *[f"| {c.short} | `{c.name}` | {c.description} |" for c in CATEGORIES.values()],
        "",
        "Processes: "
        + "; ".join(f"**{INSTRUMENTS[p].name}** (`{p}`)" for p in MATRIX_PROCESSES)
        + ". CONTENT means the words of the messages, in the clear.",
        "",
    ]
    return "\n".join(lines)


def markdown_tables(matrix: Matrix, empty: Mapping[str, Mapping[str, Sequence[str]]]) -> list[str]:
    """The lines of matrix.md that are the chart: the table of what was handed over (with ``empty``'s
    marks: handed over, but none of it in the run) and one per reason the rest was not, each under
    its heading. Nothing of them comes from the scenario: the matrix alone."""
    head = "| provider (profile) | " + " | ".join(INSTRUMENTS[p].name for p in MATRIX_PROCESSES) + " |"
    rule = "|---|" + "---|" * len(MATRIX_PROCESSES)

    def table(kind: str) -> list[str]:
        rows = [head, rule]
        for profile, cells in matrix.items():
            marks = empty.get(profile, {})
            row = [
                _cell(cells[p][kind], marks.get(p, ()) if kind == "provided" else ())
                for p in MATRIX_PROCESSES
            ]
            rows.append(f"| {get_profile(profile).title} (`{profile}`) | " + " | ".join(row) + " |")
        return rows

    return [
        "## Handed over",
        "",
        *table("provided"),
        "",
        "° the provider hands this over, but this run produced none of it (e.g. nobody blocked anyone).",
        "",
        *[
            line
            for reason, meaning in REASONS.items()
            for line in (f"## Not handed over: {REASON_LABELS[reason]} ({meaning})", "", *table(reason), "")
        ],
    ]


def markdown_problem(
    text: str, matrix: Matrix, empty: Mapping[str, Mapping[str, Sequence[str]]]
) -> str | None:
    """What keeps ``text`` (matrix.md read back) from being the chart ``matrix`` (matrix.json,
    checked) holds: its tables (:func:`markdown_tables`) as they are, and no table row besides them
    and the legend's; None if nothing does. (The text around them is the scenario's, which the run
    folder does not keep.)"""
    tables = markdown_tables(matrix, empty)
    block = "\n".join(tables)
    if block not in text:
        lines = text.splitlines()
        have = [line for line in lines if line.startswith("|")]
        want = [line for line in tables if line.startswith("|")]
        at = next(
            (i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want))
        )
        shown = brief(have[at]) if at < len(have) else "no more rows"
        return f"its tables are not those matrix.json holds, from table row {at + 1}: {shown}"
    rows = sum(1 for line in text.splitlines() if line.startswith("|"))
    expected = sum(1 for line in tables if line.startswith("|")) + 2 + len(CATEGORIES)  # (and the legend)
    if rows != expected:
        return f"it has {rows} table rows, where the chart and its legend have {expected}"
    return None


def text_problem(text: str, expected: str) -> str | None:
    """Where ``text`` (matrix.md read back, its tables passed by :func:`markdown_problem`) differs
    from ``expected`` (:func:`render_markdown` of matrix.json, checked, and the scenario that made it):
    the first line that differs, as ``line N: ...``; None if none does. Its tables alone were held
    to matrix.json: the words around them (whom the orders were served on, the date each provider
    is taken as of, the assumptions, the legend) were printed as the chart whatever they said."""
    have, want = text.splitlines(), expected.splitlines()
    for n, (a, b) in enumerate(zip(have, want, strict=False), 1):
        if a != b:
            return f"line {n} is {brief(a)}, where this relaysim writes {brief(b)}"
    if len(have) != len(want) or text.endswith("\n") != expected.endswith("\n"):
        return f"it has {len(have)} lines, where this relaysim writes {len(want)}"
    return None


def summary_problem(summary: object, matrix: Matrix) -> str | None:
    """What keeps ``summary`` (summary.json read back) from holding ``matrix`` (matrix.json,
    checked) as its copy of the chart (``summary["matrix"]``): the first cell that differs, as
    ``matrix.profile.process``; None if it holds it. The copy was never read back against it."""
    if not isinstance(summary, dict):
        return f"expected a JSON object, got {type(summary).__name__}"
    copy = summary.get("matrix")
    if not isinstance(copy, dict):
        return f"matrix: expected the chart (a JSON object of profiles, as matrix.json), got {brief(copy)}"
    for profile in copy.keys() - matrix.keys():
        return f"matrix: {brief(profile)} is no profile of matrix.json (edited?)"
    for profile, row in matrix.items():
        theirs = copy.get(profile)
        if not isinstance(theirs, dict):
            return f"matrix.{profile}: not as matrix.json has it (edited?)"
        for process in theirs.keys() - row.keys():
            return f"matrix.{profile}: {brief(process)} is no process of matrix.json (edited?)"
        for process, outcome in row.items():
            if theirs.get(process) != outcome:
                return f"matrix.{profile}.{process}: not as matrix.json has it (edited?)"
    return None


def _assumptions(matrix: Matrix, scenario: Scenario) -> list[str]:
    """The cells that rest on the project's assumption, not on a source (``Profile.assumptions``),
    each with what is assumed, so that a reader holds no such cell against the chart as a fact."""
    return _notes(matrix, scenario, "assumptions", "## Assumptions (no source says so)")


def _readings(matrix: Matrix, scenario: Scenario) -> list[str]:
    """The cells whose answer is the project's reading of its record's words, not their letter
    (``Profile.readings``: BlackBerry's "certain metadata"), each with the reading, as its disclosure's
    "Reading" note says it."""
    return _notes(matrix, scenario, "readings", "## Readings (the project's reading of the record's words)")


def _notes(matrix: Matrix, scenario: Scenario, field: str, heading: str) -> list[str]:
    """A section of the chart's notes: each cell's note in ``Profile.<field>`` (as of the run's start)
    for the processes the chart shows, under ``heading``; nothing if no cell has one."""
    rows = [
        f"- {get_profile(profile).title} (`{profile}`), {INSTRUMENTS[p].name}: {note}."
        for profile in matrix
        for p, note in getattr(profile_as_of(profile, scenario.start), field).items()
        if p in MATRIX_PROCESSES
    ]
    if not rows:
        return []
    return [heading, "", *rows, ""]


def terminal_notes(matrix: Matrix, scenario: Scenario, width: int | None = None) -> str:
    """What the terminal's tables rest on, said below them as matrix.md says it: the date each
    provider is taken as of, the cells no source backs (``Profile.assumptions``) and those that rest on
    the project's reading of the record's words (``Profile.readings``); wrapped between words at
    ``width`` columns (default: the terminal's)."""
    lines = []
    if scenario.start is not None:
        lines.append(f"Each provider as it was on {scenario.start.isoformat()} ([scenario] start).")
    assumed = _assumptions(matrix, scenario)[2:-1]  # the markdown's rows, without its heading
    if assumed:
        lines += ["Assumptions (no source says so):", *assumed]
    read = _readings(matrix, scenario)[2:-1]
    if read:
        lines += ["Readings (the project's reading of the record's words):", *read]
    return render(*(Text(line) for line in lines), width=width) if lines else ""


def render_terminal(matrix: Matrix, width: int | None = None, *, color: bool = False) -> str:
    """Per profile, a table: each process, what it can reveal, and what it cannot, by the reason why not.

    The tables wrap between words at ``width`` columns (default: the terminal's, sims/term.py);
    with ``color`` each category is coloured by its outcome: handed over, or the reason it was not
    (the colours of the HTML report's legend)."""

    def mark(text: str, outcome: str) -> Text:
        return Text(text, style=outcome_style(outcome) if color else "")

    items: list[Text | Table] = []
    for profile, cells in matrix.items():
        rows = []
        for p in MATRIX_PROCESSES:
            c = cells[p]
            can = Text(", ").join(mark(CATEGORIES[x].short, "provided") for x in c["provided"])
            cannot = Text("; ").join(
                mark(f"{REASON_LABELS[r]}: " + ", ".join(CATEGORIES[x].short for x in c[r]), r)
                for r in REASONS
                if c[r]
            )
            rows.append((INSTRUMENTS[p].name, can or Text("nothing"), cannot or Text("—")))
        if items:
            items.append(Text(""))
        items.append(Text(f"{get_profile(profile).title} (profile {profile})", style="bold" if color else ""))
        items.append(table(("process", "can reveal", "cannot reveal"), rows, ratios=(2, 3, 5)))
    return render(*items, width=width, color=color)
