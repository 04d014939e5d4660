"""The ``relaysim`` command.

    relaysim demo                      two phones talk; see what the relay sees
    relaysim scenarios                 the built-in scenarios
    relaysim run two-friends --out d   run a scenario to files
    relaysim show d                    the phones' view beside the relay's
    relaysim report d                  the same, and the legal orders, as one HTML file to project
    relaysim disclose --db d/relay.db --process subpoena --target amira
                                       serve legal process on a finished run's relay
    relaysim chart                     every provider under every kind of process (the FBI chart)
    relaysim bench crypto              the ratchet and session set-up against their peers
    relaysim bench relay               the relay over loopback TCP against a bare trio echo server
    relaysim bench sim                 a simulated message against the ratchet alone; simulation scale
    relaysim bench analysis            the statistical disclosure attack over 1,000,000 sealed messages
    relaysim bench sweep               a sweep of small runs on one core and on two
    relaysim relay serve --port 7465   run a relay on loopback
    relaysim sweep two-friends --param network.loss=0,0.1 --seeds 5
                                       a grid of runs: means with 95% intervals, and a plot

Each subcommand has its own ``--help`` with an example.

Errors are one line on stderr and a non-zero exit status, never a traceback: 2 for a usage error
(a bad option, a scenario that does not load, an --out folder that cannot be used, a run folder
that cannot be read), 130 when interrupted (Ctrl-C), 1 when the reader of stdout went away
(``relaysim show DIR | head``), and 1 for anything unexpected (a bug; ``RELAYSIM_TRACEBACK=1``
shows where).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from relaysim.sims.analysis.runfiles import (
    PIPE_HELP,
    SDA_TOP,
    brief,
    broken_link,
    in_file,
    not_a_file,
    not_empty,
    one_line,
    out_folder,
    read_run_file,
    read_run_text,
    run_folder,
    run_subfolder_problem,
    scenario_arg,
    text_arg,
    writable_file,
    write_whole,
)
from relaysim.sims.numbers import (
    MAX_COLUMNS,
    MIN_COLUMNS,
    SEED_BOUNDS,
    add_sda_top,
    decimal_number,
    state_bounds,
    whole_number,
)

if TYPE_CHECKING:
    from relaysim.sims.scenario import Scenario

__all__ = ["command", "main"]


class CliError(Exception):
    """A user error: printed as ``relaysim COMMAND: message`` on stderr, exit status 2."""


def _version() -> str:
    """The installed distribution's version; from pyproject.toml beside the package when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relaysim")
    except PackageNotFoundError:
        import tomllib

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"]) + " (not installed)"
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown (not installed)"


# Row counts: whole numbers in ASCII digits (sims.numbers), at most what a file of a few megabytes
# can hold. (Widths: sims.numbers.MIN_COLUMNS to MAX_COLUMNS.)
MAX_ROWS = 10_000_000
SHOW_ROWS = 24  # show's rows without --limit or --all


DEMO_WIRE_SEED = 2015  # demo --wire: the phones' keys
LIVE_TIME_SCALE = 0.001  # run --live: real seconds per simulated second
# run --live --time-scale's largest: slower than real time is allowed (watching a few exchanges), up
# to a simulated minute in about 17 hours; past that a run outlives any demonstration. The smallest is
# sims.live.MIN_TIME_SCALE (the clock's resolution: a simulated second as a microsecond), said here too so
# that --help states it without importing sims.live (tests/sims/test_cli_numbers.py holds them equal).
LIVE_MIN_TIME_SCALE = 1e-6
LIVE_MAX_TIME_SCALE = 1000.0


def _seed(text: str) -> int:
    """``--seed``'s type: sims.scenario.seed_arg (an integer from 0 to 2**63 - 1, MAX_SEED, which
    says why), imported only when a seed is given."""
    from relaysim.sims.scenario import seed_arg

    return seed_arg(text)


_seed.bounds = SEED_BOUNDS  # type: ignore[attr-defined]  # (--help states it: state_bounds)


def _order_name(text: str) -> str:
    """``disclose --name``'s type: text (text_arg), not empty nor only blanks. ``--name "$N"`` with N
    unset fell back to PROCESS-TARGET without a word, and ``--name " "`` named the order " "."""
    return not_empty(text_arg(text), "the order's name", "leave --name out for PROCESS-TARGET")


_columns = whole_number("columns", MIN_COLUMNS, MAX_COLUMNS)
_rows = whole_number("rows", 1, MAX_ROWS)


def _scenario(name_or_path: str) -> Any:
    """The scenario, checked as far as it can be before running; CliError naming what is wrong."""
    from relaysim.sims.scenario import ScenarioError, resolve_scenario

    try:
        scenario = resolve_scenario(name_or_path)
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read {name_or_path}: {exc.strerror or exc}") from None
    if scenario.matrix:
        from relaysim.sims.matrix import check_matrix_scenario

        try:
            check_matrix_scenario(scenario)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return scenario


def _prepare_out(out: Path, force: bool) -> None:
    from relaysim.sims.report import OutputDirError, prepare_out_dir

    try:
        prepare_out_dir(out, force=force)
    except OutputDirError as exc:
        raise CliError(str(exc)) from None


def _run_to_dir(scenario: Any, out: Path, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``run_to_dir``, with what can go wrong on the user's side said in one line."""
    from relaysim.sims.report import run_to_dir

    try:
        return run_to_dir(scenario, out, **kwargs)
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted; {out} holds an unfinished run (replace it with --force)") from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else f" {out}"
        raise CliError(f"cannot write{where}: {exc.strerror or exc}") from None


class _Interrupted(Exception):
    """Ctrl-C, with a line saying what it left behind."""


FORCE_HELP = (
    "replace an earlier run in the --out folder: relaysim then removes only its own files there "
    "(transcript.jsonl, relay.db*, relay-view.jsonl, relay.log, summary.*, provider.json, comparison.*, matrix.*, report.html, counterfactual.md, "
    "disclosures/, exceptional/, analysis/, counterfactual/ and per-profile subfolders); without it, a folder holding an earlier run is refused"
)

DEMO_SCENARIO = "pakistan-2015"

EPILOG = """examples:
  relaysim run two-friends --out out/two-friends && relaysim show out/two-friends
  relaysim run pakistan-2015 --out out/pk && less out/pk/comparison.md
  relaysim disclose --db out/two-friends/relay.db --process court_order_2703d --target amira
  relaysim chart
  relaysim scenarios
  relaysim demo
  relaysim bench crypto --messages 2000
  relaysim relay serve --host 127.0.0.1 --port 7465 --db relay.db
  relaysim sweep two-friends --param network.loss=0,0.1,0.2 --seeds 5 --out out/loss
  relaysim run sealed-sender-leaks --out out/ssl && relaysim analyze out/ssl --as-seen
  relaysim defences
  relaysim reproduce
"""


def _ignored(command: str, option: str, needs: str) -> None:
    print(f"relaysim {command}: warning: {option} is for {needs}, and is ignored without it", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from relaysim.sims.term import use_color

    if args.seed != DEMO_WIRE_SEED and not args.wire:
        _ignored("demo", "--seed", "--wire (the two phones' keys); the scenario's own seed runs the demo")
    if args.wire:
        from relaysim.sims.demo import render, run_demo

        print(render(run_demo(args.seed), width=args.width, color=use_color()))
        return 0
    from relaysim.sims.report import render_demo

    scenario = _scenario(args.scenario)
    out = Path(args.out or f"out/{scenario.name}")
    _prepare_out(out, args.force)
    _result, summary = _run_to_dir(scenario, out)
    if scenario.compare_profiles:  # one run per profile: the phones, then each operator's answer
        from relaysim.sims.report import RunFolderError, render_demo_comparison

        try:
            text = render_demo_comparison(
                out, list(scenario.compare_profiles), width=args.width, color=use_color()
            )
        except RunFolderError as exc:  # (its files changed under it as it ran: said, not a traceback)
            raise CliError(str(exc)) from None
        print(text)
    elif scenario.matrix:
        _report_multi(scenario, summary, out)
    else:
        print(render_demo(out, width=args.width, color=use_color()))
    _say_report(out, args.report)
    if not scenario.matrix:  # the last word: an inference from the metadata alone (sims.analysis)
        from relaysim.sims.demo import render_inference

        run = out / scenario.compare_profiles[0] if scenario.compare_profiles else out
        print(render_inference(run, width=args.width, color=use_color()))
    return 0


def _say_report(out: Path, write: bool) -> None:
    """Where the HTML report is: written now (``--report``), or how to write it."""
    if not write:
        print(f"for a browser or a projector: relaysim report {_q(out)}")
        return
    from relaysim.sims.reports.html import ReportError, write_report

    try:
        print(f"report: {write_report(out)} (one file; open it in a browser, no network needed)")
    except ReportError as exc:
        raise CliError(str(exc)) from None


# The advice given with a relay.db that is no relay store (another program's, or an empty one), by
# every command that reads a finished run's store: a Store's own ("give the relay a new file") is
# for relay serve.
_RUN_STORE_ADVICE = "give the relay.db a run wrote (in its --out folder), or run the scenario again"


def _newer_store(out: Path, command: str, read: Iterable[Path]) -> None:
    """A CliError if a relay.db the command reads (``read``: analyze reads DIR/relay.db, report the
    store of each run whose page it computes) was written by a newer relaysim, or by an older one:
    the analyses read the file as it is, as this relaysim writes it, without relay.store, which they
    must not import (a Store migrates an older file as it opens it, writing it; analyze and report
    must not); or if it is a SQLite database of another program's, or an empty one (the words
    disclose gives too). The store owns the check (relay.store.refuse_another_schema), and its
    words. Every other relay.db in the folder, at any depth (a comparison's profiles' folders,
    counterfactual/ and counterfactual/PROFILE/, a copy the user left in a subfolder), is checked
    too, and one of these is a warning: the command does not read it, and refused the whole
    command for it. Folders reached through a link are not walked into (_no_pipes' walk)."""
    from relaysim.relay.store import StoreError, refuse_another_schema

    reads = {os.path.normpath(p) for p in read}
    found = [Path(folder) / "relay.db" for folder, _dirs, names in os.walk(out) if "relay.db" in names]
    for db in sorted(found, key=lambda p: (os.path.normpath(p) not in reads, len(p.parts), p)):
        if db.is_file():
            read_it = os.path.normpath(db) in reads
            try:  # (a warning says what the file is, and that it is not read: no advice of what to give)
                refuse_another_schema(db, empty=True, advice=_RUN_STORE_ADVICE, advise=read_it)
            except StoreError as exc:
                if read_it:
                    raise CliError(str(exc)) from None
                print(f"relaysim {command}: warning: {exc} ({command} does not read it)", file=sys.stderr)


# The files of a run's folder that show, analyze and report read when they are there, and pass over
# when they are not (provider.json: no profile; transcript.jsonl: analyze scores nothing): a
# symbolic link there that leads to no file (to nothing, or in a loop) was passed over as no file.
_RUN_FILES = frozenset(
    ("transcript.jsonl", "summary.json", "provider.json", "relay-view.jsonl", "directory.json", "relay.db")
)


def _no_pipes(out: Path) -> None:
    """A CliError naming the first entry of the run folder ``out`` (its subfolders too, not through
    a link to a folder) that is a named pipe, a socket or a device, or a link to one, or one of the
    run's files (_RUN_FILES) that is a symbolic link to no file: relaysim writes
    only files and folders there, and show, analyze and report read them whole. A named pipe nothing
    wrote to held analyze and report in open() for ever (provider.json, a disclosure's .json,
    relay-view.jsonl: cli13's fuzz); a link to a device would be read without end."""
    for folder, _dirs, names in os.walk(out):
        for name in sorted(names):
            path = Path(folder) / name
            if name in _RUN_FILES:  # (a loop of links at provider.json was read as no file: no profile)
                _no_broken_link(path)
            what = not_a_file(path)
            if what is not None and what.startswith("not a regular file"):
                raise CliError(
                    f"{path}: {what}, where a run keeps the files relaysim wrote; move it away, or run "
                    "the scenario again"
                )


def _no_broken_link(path: Path) -> None:
    """A CliError if ``path``, one of a run's files (_RUN_FILES), is a symbolic link that leads to no
    file (runfiles.broken_link), in the words every command gives of one."""
    link = broken_link(path)
    if link is not None:
        raise CliError(
            f"{path}: {link}, where a run keeps a file relaysim wrote; remove the link, or run the scenario again"
        )


def _report(args: argparse.Namespace) -> int:
    from relaysim.sims.analysis.view import AnalysisInputError
    from relaysim.sims.reports.html import ReportError, write_report

    out = Path(args.dir)
    if not out.is_dir():
        from relaysim.sims.report import make_run_command

        raise CliError(
            f"{out}: no such folder; give the --out folder of a finished run, or make one with: "
            f"{make_run_command(out)}"
        )
    _no_pipes(out)
    from relaysim.sims.reports.html import relay_stores_read

    with _run_folder_warnings("report"):  # (a store copied to read its schema: said as it is)
        _newer_store(out, "report", relay_stores_read(out))
    try:
        with _run_folder_warnings("report"):
            path = write_report(out)
    except (ReportError, AnalysisInputError) as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {path} (one file; open it in a browser, no network needed)")
    return 0


def _scenarios(args: argparse.Namespace) -> int:
    from relaysim.sims.scenario import builtin_scenarios, load_scenario

    for name, path in builtin_scenarios().items():
        sc = load_scenario(path)
        first = (sc.description.split(". ")[0].rstrip(".") + ".") if sc.description else ""
        print(f"{name:<22} {first}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import time

    scenario = _scenario(args.scenario)
    if args.seed is not None:
        scenario = scenario.with_seed(args.seed)
    from relaysim.sims.scenario import ScenarioError, one_profile
    from relaysim.sims.world.traffic import check_population

    try:
        check_population(scenario)  # the devices events name, once the seed has made the people
        if args.live:  # (one relay process: a comparison's ran under [relay] profile alone, unsaid)
            one_profile(scenario, "relaysim run --live")
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out or f"out/{scenario.name}")
    _prepare_out(out, args.force)
    if args.time_scale != LIVE_TIME_SCALE and not args.live:
        _ignored("run", "--time-scale", "--live (a simulated run takes no real time per simulated second)")
    if args.live:
        from relaysim.sims.live import run_live

        code = run_live(scenario, out, time_scale=args.time_scale, quiet=args.quiet)
        if (out / "summary.json").is_file():  # (--report was not read: a live run wrote no page)
            _say_report(out, args.report)
        return code
    started = time.monotonic()
    from relaysim.sims.progress import progress_bar

    with progress_bar("simulating", scenario.duration, enabled=False if args.quiet else None) as bar:
        _result, summary = _run_to_dir(scenario, out, progress=bar.sim_time)
    if scenario.matrix or scenario.compare_profiles:
        _say_report(out, args.report)
        _report_multi(scenario, summary, out, time.monotonic() - started)
        return 0
    m = summary["messages"]
    lat = summary["latency_s"]
    p50 = "–" if lat["p50"] is None else f"{lat['p50']:.3f} s"
    p99 = "–" if lat["p99"] is None else f"{lat['p99']:.3f} s"
    print(
        f"{scenario.name} (seed {scenario.seed}) under relay profile {scenario.relay.profile_said()}: "
        f"{summary['people']} people, {summary['devices']} devices, "
        f"{m['planned']} message{'s' if m['planned'] != 1 else ''}; "
        f"{m['device_deliveries']}/{m['device_deliveries_expected']} device deliveries, "
        f"{m['lost_by_network']} lost by the network; latency p50 {p50}, p99 {p99}; "
        f"{time.monotonic() - started:.1f} s of real time."
    )
    from relaysim.sims.report import outputs_written

    # (report.html is said on its own line, by _say_report, once written)
    print(f"wrote {out}/{outputs_written(out)} — see it with: relaysim show {_q(out)}")
    _say_report(out, args.report)
    _say_orders(summary, out)
    return 0


def _say_orders(summary: dict[str, Any], out: Path, profile: str = "") -> None:
    """One line per legal order served in the run: what came back, and where the disclosure is."""
    from relaysim.sims.report import order_outcome

    for o in summary.get("disclosures") or []:
        print(
            f"legal order {o['name']} ({o['process']}{', ' + profile if profile else ''}): "
            f"{order_outcome(o)} — {out}/disclosures/{o['name']}.md"
        )


def _report_multi(
    scenario: Scenario, summary: dict[str, Any], out: Path, seconds: float | None = None
) -> int:
    """What ``run`` prints for a scenario run under several profiles (a comparison or the matrix)."""
    name = scenario.name
    took = "" if seconds is None else f" in {seconds:.1f} s"
    if "matrix" in summary:
        from relaysim.sims.matrix import render_terminal, terminal_notes
        from relaysim.sims.term import use_color

        print(render_terminal(summary["matrix"], color=use_color()))
        notes = terminal_notes(summary["matrix"], scenario)
        if notes:
            print(f"\n{notes}")
        print()
        print(
            f"{name}: {len(summary['profiles'])} profiles × {len(summary['processes'])} kinds of process"
            f"{took}. Wrote {out}/matrix.json and {out}/matrix.md, and each run in {out}/<profile>/."
        )
        return 0
    print(
        f"{name}: the same people under {', '.join(summary['compare_profiles'])}{took}. "
        f"Wrote {out}/comparison.md (side by side) and each run in {out}/<profile>/."
    )
    for profile, s in summary["profiles"].items():
        _say_orders(s, out / profile, profile)
    return 0


def _show(args: argparse.Namespace) -> int:
    from relaysim.sims.report import RunFolderError, render_show
    from relaysim.sims.term import use_color

    out = Path(args.dir)
    _no_pipes(out)
    runs = sorted(p.parent.name for p in out.glob("*/transcript.jsonl"))
    if not (out / "transcript.jsonl").exists() and runs:
        # a scenario run under several profiles keeps one run per profile in a folder of its own
        raise CliError(
            f"{out} holds one run per relay profile; show one of them, e.g.: "
            f"relaysim show {_q(out / runs[0])}   (runs: {', '.join(runs)})"
        )
    try:
        with _run_folder_warnings("show"):
            text = render_show(
                out,
                limit=None if args.all else args.limit or SHOW_ROWS,
                width=args.width,
                color=use_color(),
            )
        print(text)
    except RunFolderError as exc:
        raise CliError(str(exc)) from None
    return 0


@contextlib.contextmanager
def _run_folder_warnings(command: str) -> Iterator[None]:
    """Within it, a run folder whose files disagree (sims.report.RunFolderWarning) is a line on
    stderr, ``relaysim COMMAND: warning: ...``, each time it is found, and a store copied before it
    is read (sims.analysis.view.StoreCopyNote), or to read its schema version (relay.store.SchemaCopyNote),
    ``relaysim COMMAND: note: ...``, as the copy starts;
    other warnings as Python shows them."""
    import warnings

    from relaysim.relay.store import SchemaCopyNote
    from relaysim.sims.analysis.view import StoreCopyNote
    from relaysim.sims.report import RunFolderWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", RunFolderWarning)
        warnings.simplefilter("always", StoreCopyNote)
        warnings.simplefilter("always", SchemaCopyNote)
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
            if issubclass(category, RunFolderWarning):
                print(f"relaysim {command}: warning: {message}", file=sys.stderr)
            elif issubclass(
                category, (StoreCopyNote, SchemaCopyNote)
            ):  # (a store of hundreds of MB: said before it is copied)
                print(f"relaysim {command}: note: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, *rest, **kw)

        warnings.showwarning = show
        yield


def _disclose(args: argparse.Namespace) -> int:
    import json
    import sqlite3
    import tempfile
    from datetime import UTC, date, datetime

    from relaysim.relay.compliance import ComplianceDesk, LegalProcess
    from relaysim.relay.custody import ContentKey
    from relaysim.relay.legal import BACKUP_WARRANT, INSTRUMENTS, with_article
    from relaysim.relay.profiles import NOT_ON_THE_RELAY, PROFILES, profile_as_of
    from relaysim.relay.store import Store, StoreError, refuse_another_schema
    from relaysim.sims.analysis.runfiles import read_provider
    from relaysim.sims.report import disclosure_json, relay_clock, run_again, sim_clock
    from relaysim.sims.scenario import MAX_DURATION, parse_duration
    from relaysim.sims.term import printable
    from relaysim.sims.world.simulation import SIM_EPOCH

    if args.process == BACKUP_WARRANT:
        # (it was served on the relay's desk: "Served on: the relay's operator", the profile's sources, and what the
        # relay holds, never the history a backup holds)
        raise CliError(
            f"--process {BACKUP_WARRANT}: a search warrant on the backup custodian is served on the custodian of the "
            "target's device backups (Apple for iCloud Backup, Google for Google Drive: relay/backup.py), not on "
            "the relay's operator, whose relay.db this reads; the backup is the history the phones held, which a "
            "finished run's relay.db does not keep. Put it in the scenario's timeline instead ([[events]] with "
            f'kind = "legal_process", process = "{BACKUP_WARRANT}" and the target) and run it again with relaysim run: '
            "the run's disclosures/ hold the custodian's answer"
        )
    if args.process in NOT_ON_THE_RELAY:
        # any other process served not on the relay's operator but on another custodian: the desk refuses it too
        # (ComplianceDesk.serve), and the relay.db this reads holds nothing that answers it
        raise CliError(
            f"--process {args.process}: {with_article(INSTRUMENTS[args.process].name)} is served on another "
            "custodian, not on the relay's operator, whose relay.db this reads: what it reaches is not the relay's, "
            "so the relay has nothing to answer it with, and neither has this command"
        )
    db = Path(args.db)
    what = not_a_file(db)
    if what is not None:
        raise CliError(f"--db {db}: {what}; give the relay.db in a run's --out folder")
    provider_file = db.parent / "provider.json"
    provider: dict[str, Any] = {}
    odd = not_a_file(provider_file)
    if odd is not None and odd != "no such file":  # (a named pipe held disclose in open() for ever)
        raise CliError(
            f"{provider_file}: {odd}, where a run keeps the provider's file beside relay.db; move it away"
        )
    if provider_file.exists():

        def advice() -> str:  # (made as the error is raised: it may read the run's summary.json)
            return (
                "it says which profile answered and which keys the provider holds: "
                f"{run_again(db.parent)}, or give --profile and move the file aside"
            )

        try:  # (in the words analyze and report give, with the command that writes it)
            provider = read_provider(provider_file) or {}
        except ValueError as exc:
            raise CliError(f"{exc}; {advice()}") from None
        except OSError as exc:
            raise CliError(f"{provider_file} cannot be read ({exc}); {advice()}") from None
    recorded = provider.get("profile")
    profile_name = args.profile or recorded
    if profile_name is None:
        if _live_run(db.parent):
            raise CliError(
                f"no --profile, and no {provider_file} to say which profile the run used: {db.parent} holds a "
                "live run (relaysim run --live) made before live runs wrote one; the orders its timeline served "
                f"are answered in {db.parent / 'disclosures'}; to serve another, give --profile (the scenario's "
                "[relay] profile: keep-everything where it names none), or run the scenario live again to read "
                "its times on the run's clock"
            )
        raise CliError(f"no --profile, and no {provider_file} to say which profile the run used")
    as_of = provider.get("profile_as_of")  # a dated run: the provider as it was then (a date: checked)
    day = None if as_of is None else date.fromisoformat(as_of)
    try:
        # a dated run's provider as it was then (relay.profiles.profile_as_of), as the run had it
        profile = profile_as_of(profile_name, day)
    except ValueError as exc:
        # The day is the run's (provider.json's profile_as_of); the profile is --profile's where it is given:
        # a provider that did not exist yet on the run's day is the option's error, not the file's.
        if args.profile:
            raise CliError(
                f"--profile {brief(args.profile)}: {exc} (the run's day, from {provider_file})"
            ) from None
        # (analyze's words; a profile no relaysim has: the file is not one a run wrote)
        unknown = recorded not in PROFILES
        raise CliError(f"{provider_file}: profile: {exc}" + (f"; {advice()}" if unknown else "")) from None
    # an older live run's relay.db, with no provider.json: its relay kept the wall clock, the run's start and
    # time scale unknown; its times are shown as the wall clock's dates, not as a day of a run (day 339 01:31:55)
    wall_clock = not provider_file.exists() and _live_run(db.parent)
    if wall_clock:
        print(
            f"relaysim disclose: warning: no {provider_file} beside the database: {db.parent} holds a live run "
            "made before live runs wrote one; its relay kept the wall clock, and the run's start and time scale "
            "are unknown: times are shown as the relay's wall clock (UTC); addresses have no region, and keys "
            "the provider held are unknown; run the scenario live again to read its times on the run's clock",
            file=sys.stderr,
        )
    elif not provider_file.exists():
        print(
            f"relaysim disclose: warning: no {provider_file} beside the database: times are read from the "
            "simulator's own start (no calendar date), addresses have no region, and keys the provider held "
            "are unknown; keep provider.json with relay.db to read it as the run did",
            file=sys.stderr,
        )
    if recorded is not None and recorded != profile.name:
        print(
            f"relaysim disclose: warning: {db} was recorded under the {recorded!r} profile, not {profile.name!r}: "
            f"the answer may describe records that {profile.name}'s relay would not have kept",
            file=sys.stderr,
        )
    from relaysim.relay.legal import get_instrument, with_article

    if get_instrument(args.process).needs_target and not args.target:
        raise CliError(
            f"{with_article(args.process)} names the account it is served on: give --target ACCOUNT"
        )
    epoch = float(provider.get("clock_epoch", SIM_EPOCH))
    # A live run's relay kept the wall clock, the scenario's time scaled (sims.live: provider.json's
    # time_scale, and scenario_epoch, the run's own clock at t = 0); a simulated run's relay clock is the run's.
    scale = float(provider.get("time_scale", 1.0))
    run_epoch = float(provider.get("scenario_epoch", epoch))
    on_run_clock = relay_clock(provider)

    def when(option: str, value: str | None) -> float | None:
        if value is None:
            return None
        if wall_clock:  # (read from the simulator's own start, a day of no live run: "Nothing.")
            raise CliError(
                f"{option} {brief(value)}: {db.parent} holds a live run made before live runs wrote "
                "provider.json: when the run started on its relay's clock (the wall clock) is unknown, so no "
                f"time since the start of the run can be read on it; leave out {option} (the order is then "
                "served at the last moment the store knows of, and covers all of it), or run the scenario "
                "live again"
            )
        try:
            number: float | None = float(value)  # bare seconds, as a scenario's numbers are
        except ValueError:
            number = None
        try:
            seconds = parse_duration(value if number is None else number)
        except ValueError as exc:
            raise CliError(
                f"{option} {brief(value)}: {exc} (simulated time since the start of the run)"
            ) from None
        if seconds > MAX_DURATION:  # (1e308 was taken, and answered "Nothing." as of a time no run reaches)
            raise CliError(
                f'{option} {brief(value)}: expected a time of at most "365d" ({MAX_DURATION:g} s, the longest '
                "run) since the start of the run"
            )
        return epoch + seconds * scale

    start, end, at = when("--from", args.start), when("--to", args.end), when("--at", args.at)
    if start is not None and end is not None and end <= start:
        raise CliError(f"--to {brief(args.end)}: expected a time after --from {brief(args.start)}")
    # the keys the provider held all along, and (``held_from``) a global-key mandate's, held from then on
    held = [
        (ContentKey(k["key_id"], bytes.fromhex(k["key"]), k["holder"]), k.get("held_from"))
        for k in provider.get("content_keys", [])
        if recorded == profile.name
    ]
    keys = [k for k, since in held if since is None]
    try:  # (a newer store, another program's database, an empty one: in the words analyze gives)
        with _run_folder_warnings("disclose"):  # (a store copied to read its schema: said as it is)
            refuse_another_schema(db, older=False, empty=True, advice=_RUN_STORE_ADVICE)
    except StoreError as exc:
        # (it says what the file is: "cannot open it as a relay store: …, not a relay store" said it twice)
        raise CliError(f"--db {exc}") from None
    with tempfile.TemporaryDirectory(prefix="relaysim-disclose-") as tmp:
        # Serve on a copy: opening a Store may migrate or checkpoint, and the run's file stays as it was.
        copy = Path(tmp) / "relay.db"
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(db) + suffix)
            if src.exists():
                try:
                    content = read_run_file(src, limit=None)
                except OSError as exc:  # (it said "check its permissions, or give another folder")
                    # (a pipe at relay.db-wal was waited on for ever; a folder is no matter of permissions)
                    hint = "; check its permissions" if exc.errno in (errno.EACCES, errno.EPERM) else ""
                    raise CliError(f"--db {db}: cannot read {src}: {exc.strerror or exc}{hint}") from None
                Path(str(copy) + suffix).write_bytes(content)
        try:
            _check_records(copy, db)
            store = Store(copy, durable=False)
        except (StoreError, sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # (a StoreError names the file it opened: the copy, under a name of its own; a damaged
            # file's schema may hold names that are not UTF-8, which Python's sqlite3 cannot decode)
            said = str(exc).removeprefix(f"{copy}: ")
            raise CliError(f"--db {db}: cannot open it as a relay store: {said}") from None
        try:
            # A phone number with no account behind it is a real order's target (the 2016 grand-jury
            # subpoena to Signal named one): the desk answers "no such account". Any other name that
            # is no account is most likely a slip, and is refused with the accounts there are.
            if args.target and not store.account_exists(args.target) and not _PHONE.fullmatch(args.target):
                known = _accounts(copy)
                listed = ", ".join(known[:12]) + (f", … ({len(known)} in all)" if len(known) > 12 else "")
                raise CliError(
                    f"--target {brief(args.target)} names no account on this relay ({db} has "
                    + (f"{len(known)}: {listed})" if known else "none)")
                )
            served = at if at is not None else float(provider.get("run_ended", _latest_time(store, epoch)))
            if start is not None and start >= served:
                raise CliError(
                    f"--from {brief(args.start)}: the reporting period would start at or after the order is served "
                    f"({'--at ' + brief(args.at) if args.at is not None else 'the end of the run'}); give an earlier "
                    "--from, or a later --at"
                )
            order = LegalProcess(
                name=args.name or f"{args.process}-{args.target or 'everyone'}",
                process=args.process,
                target=args.target,
                served=served,
                start=start,
                end=end,
            )
            desk = ComplianceDesk(
                store,
                profile,
                content_keys=keys,
                geoip=provider.get("geoip", {}),
                # a dated run: the order is answered under the policy of the day it is served
                policy_on=None if day is None else lambda on: profile_as_of(profile.name, day, served=on),
                # the run's calendar day at a relay time (a live relay's clock is the wall clock)
                day_of=lambda t: datetime.fromtimestamp(on_run_clock(t), UTC).date(),
            )
            for key, since in held:
                if since is not None and since <= served:  # mandated before the order: held, as in the run
                    desk.hold_content_key(key)
            disclosure = desk.serve(order)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise CliError(f"--db {db}: not a relay store relaysim can read: {exc}") from None
        except ValueError as exc:  # LegalProcess refuses an order that does not hold together
            raise CliError(str(exc)) from None
        finally:
            store.close()
    data = json.dumps(disclosure_json(disclosure), indent=2, ensure_ascii=False) + "\n"
    if args.json == "-":  # stdout carries the JSON alone, for a pipe
        _write_utf8(data)
    else:
        # the terminal's copy shows the scenario's words, never runs them (sims.term.printable); the
        # --json file keeps them as written
        print(
            printable(
                disclosure.to_markdown(
                    # an older live run's: the relay's wall clock, dated (its start unknown: nothing is before it)
                    (lambda t: sim_clock(t, 0.0, True))
                    if wall_clock
                    else (lambda t: sim_clock(on_run_clock(t), run_epoch, day is not None))
                )
            ),
            end="",
        )
        if args.json:
            try:
                write_whole(args.json, data)
            except OSError as exc:
                raise CliError(f"--json {args.json}: cannot write it: {exc.strerror or exc}") from None
    if order.forward:
        print(
            f"\nrelaysim disclose: {with_article(args.process)} looks forward from its service: served on a "
            "finished run it collects nothing. To see what it would collect, put it in the scenario's timeline, e.g.\n\n"
            f'  [[events]]\n  at = "1h"\n  kind = "legal_process"\n  process = "{args.process}"\n'
            + (f'  target = "{args.target}"\n' if args.target else "")
            + '  to = "3h"\n\nand run it again with relaysim run.',
            file=sys.stderr,
        )
    return 0


def _live_run(folder: Path) -> bool:
    """Whether ``folder`` holds a live run's summary.json (its ``live`` table): a live run made before
    live runs wrote provider.json has none. An unreadable summary is no live run's here: the error names
    provider.json."""
    summary = folder / "summary.json"
    if not_a_file(summary) is not None:
        return False
    from relaysim.sims.analysis.runfiles import loads

    try:
        data = loads(read_run_text(summary))
    except (ValueError, OSError):  # (a JSONDecodeError, a UnicodeDecodeError: ValueErrors)
        return False
    return isinstance(data, dict) and isinstance(data.get("live"), dict)


_PHONE = re.compile(r"\+[0-9]{6,15}")  # E.164, as a scenario's legal-process targets (sims.scenario)


def _check_records(db: Path, label: Path) -> None:
    """A CliError naming the first record of ``db`` no relay writes (sims.analysis.view.check_records)."""
    import sqlite3

    from relaysim.sims.analysis.view import AnalysisInputError, check_records

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        have = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in ("metadata", "intercepts"):
            if table in have:  # a store from before taps is given its intercepts table when opened
                check_records(con, label, table)
    except AnalysisInputError as exc:
        raise CliError(f"--db {exc}") from None
    finally:
        con.close()


def _accounts(db: Path) -> list[str]:
    """The accounts a relay store holds (for naming them when --target names none)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in con.execute("SELECT account FROM accounts ORDER BY account")]
    finally:
        con.close()


def _latest_time(store: Any, default: float) -> float:
    """The last moment the store knows of, for serving an order on a run with no provider.json."""
    times = [r.time for r in store.metadata() if r.time is not None]
    times += [e.timestamp / 1000 for e in store.all_envelopes()]
    return max(times, default=default)


def _analyze(args: argparse.Namespace) -> int:
    from relaysim.sims.analysis.view import AnalysisInputError
    from relaysim.sims.analysis_scoring import write_analysis
    from relaysim.sims.report import run_calendar, sim_clock

    out = Path(args.dir)
    # (a link there in a loop was said in the system's words, "Too many levels of symbolic links"; a
    # link to nothing was "has no relay.db": report's words, _no_pipes', for both)
    _no_broken_link(out / "relay.db")
    odd = not_a_file(out / "relay.db")
    if odd not in (None, "no such file"):  # (a folder there was "has no relay.db", a pipe "no such file")
        raise CliError(f"{out / 'relay.db'}: {odd}; expected a run's relay.db")
    if not (out / "relay.db").is_file():
        runs = sorted(p.parent.name for p in out.glob("*/relay.db"))
        per = (
            "defences variant" if (out / "defences.json").is_file() else "profile"
        )  # (relaysim defences' DIR)
        if runs:
            hint = f"; it holds one run per {per}: analyse one, e.g. {out / runs[0]}"
        else:
            from relaysim.sims.report import make_run_command

            hint = f"; make one with: {make_run_command(out)}"
        raise CliError(f"{out} has no relay.db: expected a run's --out directory{hint}")
    _no_pipes(out)
    for name in ("disclosures", "analysis"):  # (what it reads, and where it writes)
        problem = run_subfolder_problem(out, name)
        if problem is not None:
            raise CliError(problem)
    with _run_folder_warnings("analyze"):  # (--as-seen too: kept_beside_seen; a copy for its schema said)
        _newer_store(out, "analyze", [out / "relay.db"])
    from relaysim.sims.analysis_scoring import read_truth
    from relaysim.sims.report import RunFolderError, run_disagreements

    transcript = out / "transcript.jsonl"
    try:
        epoch, dated = run_calendar(out)
        truth = read_truth(transcript) if transcript.exists() else None  # read once, for both below
        # what analyze reads, from files of the same run? (a summary.json there that cannot be read is
        # refused before anything is written: the check was skipped, saying nothing)
        problems = run_disagreements(out, kinds=None if truth is None else truth.kinds)
        with _run_folder_warnings("analyze"):
            lines = write_analysis(
                out,
                # (the analyses' times are on the run's clock already: sims.analysis.run.run_views)
                lambda t: sim_clock(t, epoch, dated),
                as_seen=args.as_seen,
                truth=truth,
                sda_top=args.sda_top,
            )
    except (AnalysisInputError, RunFolderError, ValueError) as exc:
        raise CliError(str(exc)) from None  # a file it cannot read: that alone
    for problem in problems:
        print(f"relaysim analyze: warning: {problem}", file=sys.stderr)
    for line in lines:
        print(line)
    if args.as_seen:
        print(
            f"wrote {out}/analysis/as-seen/relay.json and relay.md: what the relay saw while it ran "
            "(what a provider that watches, not keeps, learns)"
        )
    else:
        names = sorted(p.stem for p in (out / "analysis").glob("*.json"))
        shown = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
        print(
            f"wrote {out}/analysis/: a .json and a .md for each of {shown} (relay: the relay's database; "
            "the others: one per disclosure)"
        )
    return 0


def _chart(args: argparse.Namespace) -> int:
    from relaysim.sims.analysis.runfiles import loads
    from relaysim.sims.matrix import matrix_disagreement, matrix_problem, render_terminal, terminal_notes
    from relaysim.sims.report import relaysim_outputs
    from relaysim.sims.term import printable, use_color

    out = Path(args.dir or "out/fbi-chart")
    matrix_file = out / "matrix.json"
    if matrix_file.exists() and not matrix_file.is_file():  # (--rerun ran the chart, then could not write it)
        raise CliError(
            f"{matrix_file}: {'a folder' if matrix_file.is_dir() else 'no regular file'} stands where the chart "
            f"writes its matrix; move it away, then run it again with: relaysim chart {_q(out)} --rerun"
        )
    if args.rerun or not matrix_file.exists():
        if relaysim_outputs(out) and not args.force:
            held = _held_scenario(out)
            if held != "fbi-chart" or not matrix_file.exists():
                if matrix_file.is_symlink() and not matrix_file.exists():
                    there = f"matrix.json, a dangling symbolic link (to {os.readlink(matrix_file)}, which does not exist)"
                elif held == "fbi-chart":
                    there = "a run of fbi-chart without its matrix.json"
                else:
                    there = f"another run ({held or 'an unfinished or unknown one'})"
                raise CliError(
                    f"{out} holds {there}, not the chart; give "
                    "chart a folder of its own, or pass --force to replace that run (only relaysim's own files "
                    "there are removed)"
                )
        # DIR holds nothing of relaysim's, or the chart itself (--rerun replaces it), or --force
        _prepare_out(out, force=True)
        _run_to_dir(_scenario("fbi-chart"), out)
    again = f"run it again with: relaysim chart {_q(out)} --rerun"
    try:
        matrix = loads(read_run_text(matrix_file))
    except OSError as exc:
        raise CliError(f"cannot read {matrix_file}: {exc.strerror or exc}; {again}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{matrix_file}: not UTF-8 text ({exc.reason} at byte {exc.start}); {again}") from None
    except ValueError as exc:  # (json.JSONDecodeError)
        raise CliError(f"{matrix_file}: not JSON ({exc}); {again}") from None
    # each entry checked first: an edited or damaged one was a Python error (KeyError('subpoena')), or
    # was shown as the chart (a category taken out of a cell, or a list written as 0, as nothing)
    problem = matrix_problem(matrix)
    if problem is None:  # and against the disclosures it was read off: a cell given another valid value
        problem = matrix_disagreement(out, matrix)
    if problem is not None:
        raise CliError(f"{matrix_file}: {problem}; {again}")
    _check_summary_copy(out / "summary.json", matrix, again)
    if args.markdown:
        # matrix.md is printed only if it is matrix.json's, as the run wrote it: a hand-edited one was
        # printed as the chart (chart checked matrix.json alone)
        written = _checked_matrix_md(out, matrix, again)
        print(printable(written), end="")  # (its text shown, never run)
        return 0
    table = render_terminal(matrix, width=args.width, color=use_color())
    notes = terminal_notes(matrix, _scenario("fbi-chart"), width=args.width)
    print(table)
    if notes:
        print(f"\n{notes}")
    print(
        f"\nThe matrix is in {out}/matrix.json and {out}/matrix.md; each provider's disclosures in {out}/<profile>/."
    )
    return 0


def _check_summary_copy(summary_file: Path, matrix: Any, again: str) -> None:
    """A CliError unless ``summary_file`` (the chart's summary.json) holds ``matrix`` (matrix.json,
    checked) as its copy of the chart (sims.matrix.summary_problem): it was never read back against
    it, and a hand-edited one was kept as the run's."""
    from relaysim.sims.analysis.runfiles import loads
    from relaysim.sims.matrix import summary_problem

    try:
        summary = loads(read_run_text(summary_file))
    except OSError as exc:
        raise CliError(f"cannot read {summary_file}: {exc.strerror or exc}; {again}") from None
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{summary_file}: not UTF-8 text ({exc.reason} at byte {exc.start}); {again}"
        ) from None
    except ValueError as exc:  # (json.JSONDecodeError)
        raise CliError(f"{summary_file}: not JSON ({exc}); {again}") from None
    problem = summary_problem(summary, matrix)
    if problem is not None:
        raise CliError(f"{summary_file}: {problem}; {again}")


def _checked_matrix_md(out: Path, matrix: Any, again: str) -> str:
    """The text of ``out``/matrix.md; a CliError unless its tables are those of ``matrix`` (matrix.json,
    checked), with the marks of categories handed over empty from summary.json
    (sims.matrix.markdown_problem)."""
    from relaysim.sims.analysis.runfiles import loads
    from relaysim.sims.matrix import markdown_problem

    md_file, summary_file = out / "matrix.md", out / "summary.json"
    for path in (md_file, summary_file):
        what = not_a_file(path)
        if what is not None:  # (a named pipe was read, and waited on for ever)
            raise CliError(f"{path}: {what}; {again}")
    try:
        written = read_run_text(md_file)
    except OSError as exc:
        raise CliError(f"cannot read {md_file}: {exc.strerror or exc}; {again}") from None
    except UnicodeDecodeError as exc:  # (it was an internal error)
        raise CliError(f"{md_file}: not UTF-8 text ({exc.reason} at byte {exc.start}); {again}") from None
    try:
        empty = loads(read_run_text(summary_file)).get("empty")
    except (OSError, ValueError, AttributeError):
        empty = None
    if not (
        isinstance(empty, dict)
        and all(
            isinstance(row, dict) and all(isinstance(v, list) for v in row.values()) for row in empty.values()
        )
    ):
        raise CliError(
            f"{summary_file}: cannot be read, or holds no 'empty' (the categories each provider handed over "
            f"with nothing in them), which matrix.md marks; {again}"
        )
    problem = markdown_problem(written, matrix, empty)
    if problem is not None:
        raise CliError(
            f"{md_file}: not the chart matrix.json holds (edited, or an older relaysim's tables?): {problem}; {again}"
        )
    # and the words around the tables, as this relaysim writes them from its scenario: the run folder
    # keeps no version, so words that differ may be an older relaysim's (said so, not "not the chart")
    from relaysim.sims.matrix import check_matrix_scenario, render_markdown, text_problem

    scenario = _scenario("fbi-chart")
    expected = render_markdown(matrix, scenario, check_matrix_scenario(scenario), empty)
    problem = text_problem(written, expected)
    if problem is not None:
        raise CliError(
            f"{md_file}: its tables are the chart matrix.json holds, but not its words around them: {problem} "
            f"(an older relaysim's words, or edited); {again}, to write them anew"
        )
    return written


def _held_scenario(out: Path) -> str | None:
    """The name of the scenario whose run ``out`` holds, from its summary.json (None if unknown)."""
    from relaysim.sims.analysis.runfiles import loads

    try:
        name = loads(read_run_text(out / "summary.json")).get("scenario")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.what is None:
        raise CliError("say which benchmark: crypto, relay, sim, analysis or sweep (relaysim bench --help)")
    if args.what == "crypto":
        from relaysim.sims.bench.crypto import main as bench_crypto

        return bench_crypto(rest)
    if args.what == "relay":
        from relaysim.sims.bench.relay import main as bench_relay

        return bench_relay(rest)
    if args.what == "sim":
        from relaysim.sims.bench.sim import main as bench_sim

        return bench_sim(rest)
    if args.what == "analysis":
        from relaysim.sims.bench.analysis import main as bench_analysis

        return bench_analysis(rest)
    if args.what == "sweep":
        from relaysim.sims.bench.sweep import main as bench_sweep

        return bench_sweep(rest)
    raise AssertionError(args.what)


def _relay(args: argparse.Namespace, rest: list[str]) -> int:
    if args.action is None:
        raise CliError("say what to do: serve (relaysim relay serve --help)")
    from relaysim.relay.server import main as relay_main

    return relay_main(rest)


def _sweep(args: argparse.Namespace) -> int:
    from relaysim.sims.sweep import main as sweep_main

    return sweep_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaysim",
        description=(
            "A simulator of end-to-end encrypted messaging: phones running Signal's protocols, a relay "
            "that sees only routing metadata, and what legal process served on it can reveal."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"relaysim {_version()}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="one of these; relaysim COMMAND --help says what it takes"
    )
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="the main demo: a conversation as the phones saw it, beside what the relay saw and could disclose",
        description=(
            "Run a built-in scenario, then show a stretch of the conversation as the phones saw it beside the same "
            "minutes as the relay saw them, and what each legal process served in the scenario obtained. With --wire, "
            "instead show two phones running PQXDH and the Double Ratchet, each message beside its bytes."
        ),
        epilog=(
            "examples:\n  relaysim demo\n  relaysim demo --scenario two-friends --out out/tf\n"
            "  relaysim demo --out out/pk --force     # replace the run already in out/pk\n"
            "  relaysim demo --wire --width 120"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--scenario",
        type=scenario_arg,
        default=DEMO_SCENARIO,
        help=f"which scenario (default: {DEMO_SCENARIO})",
    )
    demo.add_argument(
        "--out", type=out_folder, metavar="DIR", help="where to write its outputs (default: out/NAME)"
    )
    demo.add_argument("--force", action="store_true", help=FORCE_HELP)
    demo.add_argument(
        "--report",
        action="store_true",
        help="at the end, also write DIR/report.html: the run as one HTML file to open in a browser or project",
    )
    demo.add_argument("--wire", action="store_true", help="show the packet-level demo of two phones instead")
    demo.add_argument(
        "--seed",
        type=_seed,
        default=DEMO_WIRE_SEED,
        help=f"with --wire: seed for the phones' keys (default: {DEMO_WIRE_SEED})",
    )
    demo.add_argument("--width", type=_columns, help="width in columns (default: the terminal's, or COLUMNS)")

    scen = sub.add_parser(
        "scenarios",
        help="list the built-in scenarios",
        description="List the scenarios that ship with relaysim, one line each.",
        epilog="examples:\n  relaysim scenarios\n  relaysim run two-friends   # then run one of them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    del scen

    run = sub.add_parser(
        "run",
        help="run a scenario (built-in name or TOML file) and write its outputs",
        description=(
            "Run a scenario in simulated time: real devices (PQXDH, Double Ratchet) and the real relay core, "
            "joined by a simulated network. Writes transcript.jsonl (every event, with the phones' plaintext and "
            "the relay's view side by side), relay.db (the relay's SQLite store at the end), relay-view.jsonl "
            "(everything the relay saw as it ran, whatever its profile keeps), provider.json (the profile, keys "
            "and GeoIP table disclose reads), summary.json and summary.md; and, as the scenario has them, "
            "directory.json (its organisations' public listing), disclosures/ (each legal order served), "
            "exceptional/ (what exceptional access obtained: key escrow, ghost devices, seized phones) and "
            "counterfactual/ with counterfactual.md (the run again with the provider complying with a demand it refused). A scenario run under several profiles "
            "writes each run in DIR/<profile>/ and comparison.md (or matrix.md) beside them. The line run prints "
            "at the end lists what it wrote. The same scenario and seed always give the same files."
        ),
        epilog=(
            "examples:\n  relaysim run two-friends --out out/two-friends\n"
            "  relaysim run my-case.toml --seed 7 --out out/case7   # your own file (the format: docs/scenarios.md)\n"
            "  relaysim run two-friends --out out/two-friends --force   # replace the earlier run there"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "scenario",
        type=scenario_arg,
        metavar="NAME_OR_PATH",
        help="a built-in scenario (see: relaysim scenarios) or a .toml file",
    )
    run.add_argument(
        "--seed",
        type=_seed,
        help="override the scenario's seed (default: the seed its [scenario] table gives)",
    )
    run.add_argument(
        "--out", type=out_folder, metavar="DIR", help="where to write the outputs (default: out/NAME)"
    )
    run.add_argument("--force", action="store_true", help=FORCE_HELP)
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar; what the run found is printed all the same (its summary line, a comparison's "
        "orders, the matrix's chart: relaysim chart DIR prints that again)",
    )
    run.add_argument(
        "--report",
        action="store_true",
        help="at the end, also write DIR/report.html: the run as one HTML file to open in a browser or project",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="run it live instead: a real relay process on 127.0.0.1 and a real trio client per device, "
        "the timeline replayed in scaled real time (not deterministic; for small scenarios)",
    )
    run.add_argument(
        "--time-scale",
        type=decimal_number(
            "real seconds per simulated second",
            LIVE_MIN_TIME_SCALE,
            LIVE_MAX_TIME_SCALE,
            why="a simulated minute in 17 hours",
        ),
        default=LIVE_TIME_SCALE,
        metavar="SECONDS",
        help="with --live, real seconds per simulated second (default: 0.001, so 5 simulated hours take 18 s)",
    )

    show = sub.add_parser(
        "show",
        help="the teaching view of a finished run: the phones' view beside the relay's",
        description=(
            "Print a stretch of a finished run as two columns: the conversation as the phones saw it, and the same "
            "minutes as the relay saw them (who, when, from where, how many bytes)."
        ),
        epilog=(
            "examples:\n  relaysim run two-friends --out out/tf && relaysim show out/tf --limit 30\n"
            "  relaysim show out/pakistan-2015/bes --width 120   # after relaysim demo (or run pakistan-2015)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("dir", type=run_folder, metavar="DIR", help="the --out directory of a run")
    # --all with --limit N is refused, naming both (--all won, N ignored, saying nothing); --limit's
    # default is None, so that --limit 24 given is seen as given (argparse takes a value that is its
    # default, the same int, for one not given)
    rows = show.add_mutually_exclusive_group()
    rows.add_argument(
        "--limit",
        type=_rows,
        default=None,
        help=f"how many rows to show (default: {SHOW_ROWS}; the rest are counted)",
    )
    rows.add_argument("--all", action="store_true", help="show every row of the run (not with --limit)")
    show.add_argument(
        "--width",
        type=_columns,
        help="total width in columns (default: the terminal's, or COLUMNS)",
    )

    bench = sub.add_parser(
        "bench",
        help="benchmarks that print ratios against baselines measured in the same run",
        description="Benchmarks. Each prints absolute times and, more usefully, ratios to baselines run alongside.",
        epilog=(
            "examples:\n  relaysim bench crypto\n  relaysim bench crypto --help\n  relaysim bench relay\n"
            "  relaysim bench sim --scale --devices 5000 --messages 50000\n"
            "  relaysim bench analysis --messages 1000000\n  relaysim bench sweep --runs 100"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "what",
        nargs="?",  # (missing: _bench says which there are, not argparse's "required: what, rest")
        metavar="BENCHMARK",
        choices=["crypto", "relay", "sim", "analysis", "sweep"],
        help="which benchmark (crypto, relay, sim, analysis: the statistical disclosure attack, sweep: "
        "a sweep on both cores); its own options follow",
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, metavar="...", help=argparse.SUPPRESS)

    from relaysim.relay.profiles import PROCESSES, PROFILES

    disclose = sub.add_parser(
        "disclose",
        help="serve legal process on a finished run's relay and print the disclosure",
        description=(
            "Serve legal process on the relay of a finished run, as its operator's compliance desk would "
            "answer it: what it hands over, and for the rest why not (withheld by policy, not retained, no "
            "capability, or cryptographically impossible), "
            "all read from the relay's own store. The run's relay.db is not modified (the desk works on a "
            "copy). The profile, the provider's content keys and its GeoIP table come from provider.json "
            "beside relay.db. Times are simulated time since the start of the run, like the scenario's (a live "
            "run's too: its provider.json says how its relay's clock, the wall clock, reads on the run's). "
            "Forward-looking orders (a pen register order, a wiretap order and the like) collect only from service on: "
            "served on a finished run they collect nothing, so put them in the scenario's timeline instead.\n\n"
            "processes:\n" + "\n".join(f"  {k:<18} {v}" for k, v in PROCESSES.items())
        ),
        epilog=(
            "examples:\n"
            "  relaysim run two-friends --out out/tf\n"
            "  relaysim disclose --db out/tf/relay.db --process subpoena --target amira\n"
            "  relaysim disclose --db out/tf/relay.db --process court_order_2703d --target ben --from 1h --to 3h\n"
            "  relaysim disclose --db out/tf/relay.db --process search_warrant --target amira --at 1h30m "
            "--json warrant.json\n"
            "  relaysim disclose --db out/tf/relay.db --profile signal --process subpoena --target amira\n"
            "  relaysim disclose --db out/tf/relay.db --process subpoena --target amira --json - | jq .provided"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    disclose.add_argument(
        "--db", required=True, type=in_file, metavar="FILE", help="a finished run's relay.db"
    )
    disclose.add_argument(
        "--profile",
        choices=list(PROFILES),
        metavar="PROFILE",
        help="the provider profile answering (default: the one the run used, from provider.json): "
        + ", ".join(PROFILES),
    )
    disclose.add_argument(
        "--process", required=True, choices=list(PROCESSES), help="the kind of legal process"
    )
    disclose.add_argument(
        "--target",
        type=text_arg,
        metavar="ACCOUNT",
        help="the account it names (default: none, for a demand on everyone; the others need one)",
    )
    disclose.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="start of the period it covers, in simulated time since the start of the run: seconds, or a "
        'duration such as "1h" or "3h30m" (default: the start of the run; a forward-looking '
        "order's: when it is served)",
    )
    disclose.add_argument(
        "--to",
        dest="end",
        metavar="T",
        help="end of the period it covers, as --from (default: when it is served, --at; a forward-looking order's: the longest its law allows, if any)",
    )
    disclose.add_argument(
        "--at",
        metavar="T",
        help="when it is taken to be served, as --from (default: the end of the run); records made after it are left "
        "out, but the store is the one at the end of the run: what was deleted by then is gone",
    )
    disclose.add_argument("--name", type=_order_name, help="the order's name (default: PROCESS-TARGET)")
    disclose.add_argument(
        "--json",
        metavar="FILE",
        type=writable_file,
        help="also write the disclosure as JSON to FILE (default: none: only the text, to stdout); with --json -, "
        f"write only the JSON, to stdout; {PIPE_HELP}",
    )

    analyze = sub.add_parser(
        "analyze",
        help="what a finished run's metadata reveals: sealed-sender attribution, contact graph, timing attack, sizes",
        description=(
            "Analyse what the provider of a finished run holds, as its analysts would: the relay's database (under "
            "the run's profile) and each disclosure package. Infers the sender of sealed-sender messages from network "
            "addresses, the contact graph, a statistical disclosure attack on sealed sender from recipients and times "
            "alone (Martiny et al., NDSS 2021), first contacts from envelope sizes, and each account's daily rhythm, "
            "addresses and co-locations; then scores each inference against the run's transcript. Writes "
            f"DIR/analysis/NAME.json and NAME.md. The attack's rankings there give the {SDA_TOP} best accounts per "
            "checkpoint, and with a transcript keep only those and each target's true contacts' ranks; for more, "
            "give --sda-top N, or call relaysim.sims.analysis.run.analyze(view, sda_top=N) from Python."
        ),
        epilog=(
            "examples:\n  relaysim run two-friends --out out/tf && relaysim analyze out/tf\n"
            "  relaysim analyze out/tf --as-seen     # what the relay saw, not what it keeps"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("dir", type=run_folder, metavar="DIR", help="the --out directory of a finished run")
    analyze.add_argument(
        "--as-seen",
        action="store_true",
        help=(
            "analyse what the relay SAW while it ran (DIR/relay-view.jsonl: every request with its address and time, "
            "every sealed send's recipient, size and connection), not what its profile keeps: what a provider that "
            "watches live, is compelled to, or is hacked learns. Writes DIR/analysis/as-seen/relay.json and relay.md"
        ),
    )
    add_sda_top(analyze)

    report = sub.add_parser(
        "report",
        help="a finished run as one HTML file (DIR/report.html) to open in a browser or project",
        description=(
            "Write DIR/report.html: the timeline (each message as the phones saw it beside the relay's record of "
            "it, filterable by person), each legal order (what was asked, given, and why not, one colour per "
            "reason), the true contact graph beside the one an analyst rebuilt (from DIR/analysis/ if relaysim "
            "analyze wrote it, else computed), comparisons, the FBI chart and exceptional access. One file with "
            "nothing to fetch: it opens from a USB stick with no network. The same run gives the same bytes."
        ),
        epilog=(
            "examples:\n  relaysim run two-friends --out out/tf && relaysim report out/tf\n"
            "  relaysim report out/pakistan-2015      # after relaysim demo: both profiles, side by side\n"
            "  relaysim run key-escrow --report       # write it at the end of the run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("dir", type=run_folder, metavar="DIR", help="the --out directory of a finished run")

    chart = sub.add_parser(
        "chart",
        help="every provider profile under every kind of US legal process, as the FBI's chart has it",
        description=(
            "Run the built-in fbi-chart scenario under every real provider profile, serve a subpoena, a 2703(d) "
            "order, a search warrant, a pen register order and a wiretap order in each, and print what each provider "
            "can and cannot reveal. Where DIR already holds the chart, print it again without running (--rerun "
            "runs it again, replacing it). chart never writes into a folder holding another run unless --force."
        ),
        epilog=(
            "examples:\n  relaysim chart\n  relaysim chart out/fbi-chart --markdown\n"
            "  relaysim chart out/chart2 --rerun --width 100"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chart.add_argument(
        "dir",
        nargs="?",
        type=out_folder,
        metavar="DIR",
        help="where the run is (or goes; default: out/fbi-chart)",
    )
    chart.add_argument("--rerun", action="store_true", help="run it again even if DIR already holds one")
    chart.add_argument("--force", action="store_true", help=FORCE_HELP.replace("--out", "DIR"))
    chart.add_argument(
        "--markdown", action="store_true", help="print matrix.md instead of the terminal tables"
    )
    chart.add_argument(
        "--width", type=_columns, help="width in columns (default: the terminal's, or COLUMNS)"
    )

    relay = sub.add_parser(
        "relay",
        help="run the relay server (relaysim relay serve --help)",
        description="Run the relay: a trio TCP server over a SQLite store.",
        epilog="example:\n  relaysim relay serve --host 127.0.0.1 --port 7465 --db relay.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    relay.add_argument(
        "action", nargs="?", metavar="ACTION", choices=["serve"], help="serve; its own options follow"
    )
    relay.add_argument("rest", nargs=argparse.REMAINDER, metavar="...", help=argparse.SUPPRESS)

    from relaysim.sims.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    from relaysim.sims.defences import add_parser as add_defences_parser

    add_defences_parser(sub)
    from relaysim.sims.reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    return state_bounds(parser)  # (each number option's --help says its bounds, from its type)


def _tolerate_the_terminals_encoding() -> None:
    """On a terminal or pipe whose locale is not UTF-8 (``LANG=de_DE.ISO-8859-1``; on Windows, a
    redirect in the ANSI code page), print what it cannot show as ``?`` rather than stop: the tables'
    rules and the em dashes in what relaysim prints would otherwise end a finished run with an
    internal error (UnicodeEncodeError) after its files were written. UTF-8 output is left as it is."""
    import codecs

    encoding = getattr(sys.stdout, "encoding", None)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if encoding and reconfigure is not None and codecs.lookup(encoding).name != "utf-8":
        reconfigure(errors="replace")


def _write_utf8(text: str) -> None:
    """``text`` to stdout as UTF-8 whatever the locale's encoding: JSON for a pipe is UTF-8 (RFC 8259,
    section 8.1), and the same bytes as the file ``--json FILE`` writes, on any machine."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (a test's StringIO)
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "relaysim"
    _tolerate_the_terminals_encoding()
    try:
        parser = build_parser()
        # bench and relay hand everything after their first word to their own parsers
        args = parser.parse_args(argv)
        command = f"relaysim {args.command}"
        status = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except CliError as exc:
        _flush_quietly()
        print(f"{command}: {one_line(exc)}", file=sys.stderr)
        return 2
    except _Interrupted as exc:
        _flush_quietly()
        print(f"{command}: {one_line(exc)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        _flush_quietly()
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (relaysim show DIR | head). As the Python docs advise for SIGPIPE:
        # point stdout at devnull so the interpreter's final flush does not fail again, and exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        # The file system said no (a read-only folder, a file where a folder belongs, a full
        # disk): the user's to fix, with the path and the system's reason; not a bug.
        _flush_quietly()
        print(f"{command}: {one_line(_os_error_text(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # the last resort: a bug, not a user error
        if os.environ.get("RELAYSIM_TRACEBACK"):
            raise
        _flush_quietly()
        print(
            f"{command}: internal error: {type(exc).__name__}: {one_line(exc)} (a bug in relaysim; "
            "RELAYSIM_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 1


def _q(path: Path | str) -> str:
    """``path`` as a shell word, so that a suggested command works when pasted (runfiles.shell_word:
    a byte not in the locale's encoding too)."""
    from relaysim.sims.analysis.runfiles import shell_word

    return shell_word(path)


def _os_error_text(exc: OSError) -> str:
    """``cannot write out/x/report.html: Read-only file system``, or the error as it is."""
    if exc.filename is None:
        return str(exc)
    reason = exc.strerror or str(exc)
    path = exc.filename if exc.filename2 is None else f"{exc.filename} → {exc.filename2}"
    hint = {
        errno.EROFS: "; copy the folder somewhere writable, or give another folder",
        errno.EACCES: "; check its permissions, or give another folder",
        errno.ENOTDIR: "; a file stands where a folder belongs: give another path",
        errno.EEXIST: "; a file stands where a folder belongs: move it, or give another path",
        errno.EISDIR: "; a folder stands where a file belongs: give a file's path",
        errno.ENOSPC: "; free some space, or give a folder on another disk",
    }.get(exc.errno or 0, "")
    return f"{path}: {reason}{hint}"


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args)
    if args.command == "scenarios":
        return _scenarios(args)
    if args.command == "run":
        return _run(args)
    if args.command == "show":
        return _show(args)
    if args.command == "disclose":
        return _disclose(args)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "report":
        return _report(args)
    if args.command == "chart":
        return _chart(args)
    if args.command == "bench":
        return _bench(args, args.rest)
    if args.command == "relay":
        return _relay(args, args.rest)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "defences":
        from relaysim.sims.defences import main as defences_main

        return defences_main(args)
    if args.command == "reproduce":
        from relaysim.sims.reproduce import run as reproduce_run

        return reproduce_run(args)
    raise AssertionError(args.command)


def command() -> NoReturn:
    """The ``relaysim`` command as a process (the console script, ``python -m relaysim``): exits
    with ``main()``'s status.

    An interrupted command leaves by ``os._exit(130)``, after flushing its output, not through the
    interpreter's own exit. A Ctrl-C that lands while a module imported mid-run is being made
    (a dataclass's or a namedtuple's methods are compiled from source by ``exec``) passes through
    that ``exec`` on its way to ``main``, and CPython then marks the KeyboardInterrupt unhandled
    though ``main`` handled it: at exit it would kill the process with SIGINT instead of exiting
    with 130 (the flag is ``_Py_UnhandledKeyboardInterrupt``, set by ``run_eval_code_obj`` in
    Python/pythonrun.c, since 3.8). Either way a shell's ``$?`` reads 130; the status
    ``--help`` promises is what a parent process's ``waitpid`` now sees too. By then every file
    the run wrote is closed (their ``with`` blocks were left on the way out)."""
    status = main()
    if status == 130:
        _flush_quietly()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == "__main__":
    command()
