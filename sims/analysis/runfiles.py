"""Reading a run's folder back, and writing into it, when the folder may not be as relaysim left it.

A run's folder (``relaysim run --out DIR``) is read again by ``show``, ``analyze``, ``report``,
``disclose`` and ``chart``, and ``analyze`` and ``report`` write into it. Its files may have been
cut short, edited, or made by someone else (a folder handed over, unpacked from an archive):

- :func:`loads` reads JSON so that anything it cannot read is a :class:`json.JSONDecodeError` (a
  ``ValueError``), which every reader already turns into a line naming the file. ``json.loads``
  itself raises ``RecursionError`` for arrays or objects nested deeper than the interpreter's
  recursion limit, and a bare ``ValueError`` for an integer of more than 4,300 digits (CPython's
  limit on converting long strings to integers, ``sys.int_info.default_max_str_digits``).
- :func:`own_file` refuses a path under the run's folder that passes through a symbolic link: a
  ``report.html`` or ``analysis/`` that is a link would otherwise have relaysim write into a file
  or folder that is not its own.
- :func:`out_folder` and :func:`out_file` (argparse types) refuse an empty name for a folder or
  file to write: ``--out "$DIR"`` with DIR unset would otherwise be the default folder, or nothing.
  :func:`run_folder` refuses one for a run's folder to read: it would be the current folder.
  :func:`in_file` and :func:`scenario_arg` refuse one for a file to read (``disclose --db``) and for a
  scenario (``run NAME_OR_PATH``): the empty path is the current folder, which was then read as
  "a folder" or "``.``: Is a directory", naming neither the argument nor the empty word given.
  All of them are :func:`not_empty`: every relaysim argument that names a path is one of them.
- :func:`relay_clock` reads a relay time on the run's own clock, as provider.json says: a live run's
  relay kept the wall clock, the scenario's time scaled. Here, where the analyses may import it, so
  that disclose, analyze and report make the one conversion.
- :func:`write_whole` writes a file whole or not at all (a copy renamed over it), for the files
  written again into a folder that holds others: analysis/, report.html, --json FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import itertools
import json
import math
import os
import re
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MAX_LINE",
    "MAX_RUN_FILE",
    "MAX_SDA_TOP",
    "MAX_SHOWN",
    "PIPE_HELP",
    "PIPE_READER_WAIT",
    "SDA_TOP",
    "brief",
    "broken_link",
    "finite_number",
    "in_file",
    "line_too_long",
    "loads",
    "not_a_file",
    "not_empty",
    "not_json",
    "numbered_lines",
    "one_line",
    "open_run_file",
    "out_file",
    "out_folder",
    "own_file",
    "plain_name_problem",
    "provider_problem",
    "read_provider",
    "read_run_file",
    "read_run_text",
    "relay_clock",
    "relay_to_run",
    "run_folder",
    "run_subfolder_problem",
    "scenario_arg",
    "shell_word",
    "text_arg",
    "writable_file",
    "write_whole",
]


def loads(text: str) -> Any:
    """``json.loads(text)``; whatever cannot be read is a :class:`json.JSONDecodeError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", text, 0) from None
    except ValueError as exc:  # an integer too long to convert
        raise json.JSONDecodeError(str(exc).split(";")[0], text, 0) from None


def not_json(path: str | Path, exc: ValueError, writer: str = "the run") -> str:
    """The one wording for a run's JSON file that is not JSON (``exc``: :func:`loads`'
    JSONDecodeError, or :func:`read_run_text`'s UnicodeDecodeError), said alike by every reader of it:
    a disclosure not JSON was "is not valid JSON (…): the run was cut short…" to the demo's comparison,
    "cannot be read (…)" to the report and "cannot read it as a disclosure (JSON): …" to analyze.
    ``writer``: what writes the file (``relaysim analyze`` for its pages). The caller adds its advice."""
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    elif isinstance(exc, UnicodeDecodeError):
        why = f"not UTF-8 text: byte {exc.start} is no character's"
    else:
        why = str(exc)
    return (
        f"{path} is not valid JSON ({why}): {writer} was cut short while writing it, or the file was damaged"
    )


# The one rule for showing a value in an error is relay.wire.quoted's (docs/protocol.md, Errors); this
# module may not import relay.wire (sims.analysis imports nothing but the relay's record and profile
# vocabularies: tests/sims/test_analysis.py), so it keeps the rule's twin, which
# tests/sims/test_scenario.py holds to it value by value.
MAX_SHOWN = 60  # characters of a value an error message shows: relay.wire.MAX_QUOTED
# the best accounts the statistical disclosure attack's rankings give per checkpoint by default
# (sims.analysis.sda's to_json, analyze(sda_top=...), relaysim analyze --sda-top): here, beside what the
# commands' parser reads, so that analyze --help states it without importing the analyses (numpy)
SDA_TOP = 10
# the most of them one may ask for (analyze(sda_top=...), --sda-top of analyze and defences): with a
# transcript the attack keeps that many accounts, 16 bytes each, at each of its checkpoints
# (sims.analysis.sda.CHECKPOINTS) and each target's last, for each of its up to sda.MAX_TARGETS
# targets: 10,000 x 12 x 150 x 16 bytes is 288 MB, within the 1 GiB one call may keep
# (sda.MAX_RANKING_BYTES), past which the call is refused naming keep_top, no option of analyze's.
# tests/sims/test_analysis.py holds this bound within that one as those constants change.
MAX_SDA_TOP = 10_000


def brief(value: object, spec: str = "") -> str:
    """``value`` as an error message shows what it was given (a scenario's value, an option's word),
    by the relay's one rule (``relay.wire.quoted``): its ``repr`` whole up to MAX_SHOWN characters, else
    a str's or a bin's first characters with the quote closed, ``…`` and how long the whole is
    (``'kkk…kk'… (5,000 characters)``); an integer of more digits by how many it has; anything else by
    its repr's first MAX_SHOWN characters, ``…`` and its length. ``spec``: a format to show it in instead
    of its repr (``","`` for a number, ``"s"`` for a word unquoted), cut by the same rule. A value is
    shown to say which it is, never whole at any length: a name, a time or a window of 5,000 characters,
    or an integer of 300 digits, was all of the message. A str read with ``surrogateescape`` (an argv
    word that is not UTF-8) is shown by its bytes, ``b'\\xff'``, never ``'\\udcff'`` (in any ``spec``:
    its bytes' repr says what it was given, its text would not)."""
    if type(value) is str and not value.isprintable():  # (relay.wire._as_sent's twin)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:
                return brief(value.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:  # (a surrogate no byte stands for: no reading made it)
                pass
    if spec:
        try:
            text = format(value, spec)
        except ValueError:  # (an integer past Python's int_max_str_digits)
            return brief(value)
        if type(value) is not int or len(text) <= MAX_SHOWN:
            return _cut(text)
    if type(value) is int and value.bit_length() > 150:  # (an integer this long: by how many digits)
        try:
            digits = len(str(abs(value)))
        except ValueError:  # (past sys.get_int_max_str_digits(): Python will not say them)
            digits = 0
        if not digits or digits + (value < 0) > MAX_SHOWN:
            amount = f"{digits:,}" if digits else f"more than {sys.get_int_max_str_digits():,}"
            return f"{'a negative' if value < 0 else 'an'} integer of {amount} digits"
    shown = repr(value)
    if len(shown) <= MAX_SHOWN:
        return shown
    if type(value) is str or type(value) is bytes:
        head = value[: MAX_SHOWN - 3]
        while len(repr(head)) > MAX_SHOWN:  # (escapes: "\\n", "\\x00")
            head = head[:-1]
        unit = "characters" if type(value) is str else "bytes"
        return f"{head!r}… ({len(value):,} {unit})"
    return _cut(shown)


def _cut(shown: str) -> str:
    if len(shown) <= MAX_SHOWN:
        return shown
    end = 0  # (cut between escapes, never inside one: relay.wire._whole_head's twin)
    for unit in _SHOWN_UNIT.finditer(shown):
        if unit.end() > MAX_SHOWN:
            break
        end = unit.end()
    return f"{shown[:end]}… ({len(shown):,} characters)"


# One thing a shown text says: an escape as a repr writes one, or one character (relay.wire._SHOWN_UNIT).
_SHOWN_UNIT = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)|.", re.DOTALL)


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number a time or a size can be: an int or a float, not a bool,
    not NaN or an infinity (``json.loads`` reads ``NaN``, ``Infinity`` and ``1e400``), nor an
    integer too large for a float (the clocks compute in floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past 1.8e308
        return False


def provider_problem(provider: object) -> str | None:
    """What keeps ``provider``, a run's ``provider.json`` read back, from being one as ``relaysim run``
    writes it (sims.report._provider_file), said alike by every reader (analyze, report, disclose):
    ``expected a JSON object, got list``, or ``FIELD: expected …, got …`` for its first field that is
    missing or of the wrong type; None if there is none. ``profile`` is in every one relaysim writes
    (a file without it was read as a run with no profile: its records as recorded, saying nothing);
    ``clock_epoch`` (SIM_EPOCH), ``run_ended``, ``profile_as_of`` (an undated run), ``content_keys``
    and ``geoip`` (none) may be left out, as a run before its calendar (clock_epoch) wrote them, and a
    live run's ``time_scale`` and ``scenario_epoch`` (sims.live) are in no simulated run's. A folder
    without provider.json at all (an older live run's) is the reader's to say."""
    if not isinstance(provider, dict):
        return f"expected a JSON object, got {type(provider).__name__}"

    def bad(field: str, expected: str) -> str:
        return f"{field}: expected {expected}, got {brief(provider[field])}"

    if "profile" not in provider:
        return (
            "profile: expected the name of the relay profile the run used, got nothing (the field is "
            "missing; every provider.json relaysim run writes names it)"
        )
    if not isinstance(provider["profile"], str):
        return bad("profile", "a relay profile's name")
    for field in ("clock_epoch", "run_ended", "scenario_epoch"):
        if field in provider and not finite_number(provider[field]):
            return bad(field, "Unix seconds (a number)")
    if "time_scale" in provider and not (
        finite_number(provider["time_scale"]) and provider["time_scale"] > 0
    ):
        return bad("time_scale", "real seconds per simulated second (a positive number)")  # (a live run's)
    if "time_scale" in provider and "clock_epoch" not in provider:  # (read against SIM_EPOCH, saying nothing)
        return (
            "clock_epoch: expected the relay's clock at the run's start (Unix seconds) beside time_scale, "
            "got nothing (the field is missing; every live run's provider.json gives both)"
        )
    if "profile_as_of" in provider:
        import datetime

        try:
            datetime.date.fromisoformat(provider["profile_as_of"])
        except (TypeError, ValueError):
            return bad("profile_as_of", "a date like 2016-05-01")
    geoip = provider.get("geoip", {})
    if not isinstance(geoip, dict) or not all(isinstance(v, str) for v in geoip.values()):
        return bad("geoip", "an object of address → region")
    keys = provider.get("content_keys", [])
    if not isinstance(keys, list):
        return bad("content_keys", "a list of keys")
    for k in keys:
        try:
            ok = (
                isinstance(k["key_id"], str)
                and isinstance(k["holder"], str)
                and bool(bytes.fromhex(k["key"]))
                and ("held_from" not in k or finite_number(k["held_from"]))
            )
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            return bad(
                "content_keys",
                "keys as relaysim writes them ({'key_id': ..., 'key': hex, 'holder': ..., and for a "
                "mandated key 'held_from': Unix seconds})",
            )
    return None


def relay_to_run(t: float, t0: float, time_scale: float) -> float:
    """The relay's clock ``t`` (the wall clock; ``t0`` at the run's start) as the run's simulated
    seconds. The real seconds are taken to the microsecond first, all the wall clock can tell: a
    float's rounding in ``t0 + s * time_scale`` and back is ~0.2 µs of real time, a millisecond of
    simulated time at 0.0002, and an order served at 01:30:00 read 01:29:59.999 (shown as 01:29:59)."""
    return round(round((t - t0) * 1e6) / 1e6 / time_scale, 6)


def relay_clock(provider: Mapping[str, Any]) -> Callable[[float], float]:
    """A relay time read on the run's own clock (the transcript's, the scenario's), as ``provider`` (a
    run's provider.json, checked by :func:`provider_problem`) says: the one conversion that disclose,
    analyze (every record of relay.db and of the disclosures it reads, and the transcript's relay
    records it scores them by) and report make. A simulated run's relay keeps the run's clock: the time
    as it is. A live run's relay (sims.live) kept the wall clock: ``clock_epoch`` at the scenario's
    ``t = 0``, ``time_scale`` real seconds per simulated second, and ``scenario_epoch`` the run's own
    clock at ``t = 0`` (:func:`relay_to_run`)."""
    if "time_scale" not in provider:
        return lambda t: t
    relay_epoch = float(provider["clock_epoch"])
    run_epoch = float(provider.get("scenario_epoch", relay_epoch))
    scale = float(provider["time_scale"])
    return lambda t: run_epoch + relay_to_run(t, relay_epoch, scale)


def read_provider(path: Path) -> dict[str, Any] | None:
    """A run's ``provider.json`` at ``path``, read and checked (:func:`provider_problem`), or None if there
    is none; a ValueError naming the file when it is not JSON or not one relaysim writes, in the words
    every reader gives (analyze, report, disclose, each adding its own advice); an OSError as the read
    raised it."""
    if not path.exists():
        return None
    try:
        data = loads(read_run_text(path))
    except ValueError as exc:  # (not JSON, not UTF-8)
        raise ValueError(not_json(path, exc)) from None
    problem = provider_problem(data)  # ({"x": 1} was read as a run with no profile, saying nothing)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return data


def own_file(run: Path, *parts: str) -> Path:
    """``run/part/...``, a path relaysim may write: none of ``parts`` (a folder of its own, the file)
    may be a symbolic link, or the write would land in what the link points at. OSError (ELOOP)
    naming the link otherwise, which the commands print as one line."""
    path = Path(run)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise OSError(
                errno.ELOOP,
                f"a symbolic link stands where relaysim writes its own file or folder (it points to "
                f"{path.readlink()}); relaysim never writes through one: remove the link",
                str(path),
            )
    return path


def broken_link(path: str | Path) -> str | None:
    """What ``path`` is, in words, when it is a symbolic link that leads to no file (None otherwise):
    ``a symbolic link to TARGET, which does not exist``, or, for a link in a loop of links (``ln -s
    a b; ln -s b a``), ``a symbolic link to TARGET, in a loop of links that leads to no file``: a
    loop was said to be a link to something "which does not exist", or the file missing ("has no
    transcript.jsonl", "did not finish: no summary.json")."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symbolic link to {os.readlink(path)}, in a loop of links that leads to no file"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return None


def not_empty(text: str, expected: str, hint: str) -> str:
    """``text``, a path given on the command line, if it is not empty (nor only blanks); else the
    argparse error every path argument gives: ``expected EXPECTED, got '' (an empty shell
    variable?); HINT``. An empty word is the current folder to the file system (``Path("")`` is
    ``.``), never what the user meant: most often ``"$VAR"`` with VAR unset."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected {expected}, got {text!r} (an empty shell variable?); {hint}"
        )
    return text


def out_folder(text: str) -> str:
    """An argparse type for a folder to write to (``--out DIR``, ``chart DIR``): not empty. An empty
    word (``--out "$DIR"`` with DIR unset) would otherwise fall back to the default folder, where
    ``--force`` replaces an earlier run the user never named."""
    return not_empty(text, "a folder", "leave it out for the default")


def run_folder(text: str) -> str:
    """An argparse type for a finished run's folder (``show DIR``, ``analyze DIR``, ``report DIR``):
    not empty. An empty word (``relaysim report "$DIR"`` with DIR unset) was the current folder,
    which ``analyze`` and ``report`` then wrote into."""
    not_empty(text, "a folder", "give the --out folder of a run")
    path = Path(text)
    link = broken_link(path)
    if link is not None:
        raise argparse.ArgumentTypeError(f"{text} is {link}; give the --out folder of a run")
    if path.exists() and not path.is_dir():  # (it "has no transcript.jsonl", "no relay.db")
        what = (not_a_file(path) or "a file").removeprefix("not a regular file (").removesuffix(")")
        raise argparse.ArgumentTypeError(f"{text} is {what}, not a folder; give the --out folder of a run")
    return text


def in_file(text: str) -> str:
    """An argparse type for a file to read (``disclose --db FILE``): not empty (it was read as the
    current folder: "--db .: a folder")."""
    return not_empty(text, "a file's path", "give the relay.db in a run's --out folder")


def scenario_arg(text: str) -> str:
    """An argparse type for a scenario (``run``, ``sweep`` and ``defences`` NAME_OR_PATH, ``demo
    --scenario``): not empty (it was read as the current folder: ".: Is a directory")."""
    return not_empty(
        text, "a built-in scenario's name or a .toml file", "see the built-in ones with: relaysim scenarios"
    )


def text_arg(text: str) -> str:
    """An argparse type for words that go into a run's files or its database (``disclose --target``
    and ``--name``, ``sweep --param`` and ``--metric``): text, not bytes the locale cannot decode.
    Python hands such bytes on as lone surrogates (``$'\\xff'`` is ``'\\udcff'``), which no UTF-8 file
    or SQLite text holds: it was an internal error (UnicodeEncodeError) after the work was done,
    or SQLite's "surrogates not allowed". A path may hold them (the file system takes bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text.encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(
            f"expected text, got {raw!r}: byte 0x{ord(text[exc.start]) & 0xFF:02x} is not "
            f"{sys.getfilesystemencoding()}, the encoding of the command line (typed or pasted in another?)"
        ) from None
    return text


def out_file(text: str) -> str:
    """An argparse type for a file to write to (``disclose --json FILE``, ``bench --json FILE``): not
    empty (``--json ""`` wrote nothing and said nothing), and never a symbolic link to nothing. Such
    a link was written through, the file made wherever it pointed (anywhere: a link left in a shared
    /tmp); it is refused naming its target, as ``--out`` refuses one (sims.report.prepare_out_dir).
    A link to a file that is there is written through, the file replaced, as an existing FILE is."""
    not_empty(text, "a file's path (or -, for stdout)", "give the file to write the JSON to")
    path = Path(text)
    link = broken_link(path) if text != "-" else None
    if link is not None:
        raise argparse.ArgumentTypeError(
            f"{text} is {link}; relaysim writes no file through a link to nothing: give the file's own "
            "path, or remove the link"
        )
    return text


def writable_file(text: str) -> str:
    """An argparse type for a file a command will write at its end (``disclose --json FILE``, every
    bench's ``--json FILE``), checked before the work starts, which must not end in an error about
    where its output goes: out_file's (not empty, no symbolic link to nothing), no folder, in a
    folder that is there (a link's: the file's own) and can be written."""
    if out_file(text) == "-":
        return text
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file's path")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: its folder {path.parent} does not exist (or is not a folder)"
        )
    # a device or a pipe that is there (/dev/null) is written into, not replaced (write_whole): its
    # own permission is the one that counts, not its folder's
    into = path.exists() and not path.is_file()
    if (not into and not os.access(folder, os.W_OK)) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text}: cannot write there (permission denied)")
    return text


def not_a_file(path: Path) -> str | None:
    """What ``path`` is, in words, when it is no regular file to read (None when it is one): it
    said "no such file" of /dev/null, a pipe or a socket, all there; opening a socket says "No such
    device or address"."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "no such file"
    except OSError as exc:  # a loop of symbolic links, a folder on the way that cannot be read
        return exc.strerror or str(exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    kinds = ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"))
    for test, kind in (*kinds, (stat.S_ISBLK, "a device")):
        if test(mode):
            return f"not a regular file ({kind})"
    return "not a regular file"


def plain_name_problem(name: object, what: str) -> str | None:
    """What keeps ``name`` (read from a run's file: a comparison's profile, an order's name) from
    being joined onto the run's folder as one name in it, as ``expected WHAT, a plain name (…), got
    NAME``; None if it is one. A hand-edited ``../x`` or ``/etc`` (``run / "/etc"`` is ``/etc``), a
    name with a separator (``a/b``, ``a\\b``), ``.``, ``..``, an empty name or a NUL led a command
    outside the folder it was given, or to another file in it."""
    if isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0"):
        return None
    return f"expected {what}, a plain name (no '/' or '\\', not '.' or '..', not absolute), got {brief(name)}"


def run_subfolder_problem(run: str | Path, name: str) -> str | None:
    """What is wrong with ``run/name``, a folder relaysim keeps in a run's folder (``disclosures/``,
    ``analysis/``, ``exceptional/``), as a line naming it, when something other than a folder stands
    there (a file, a pipe, a symbolic link to nothing); None when it is a folder or nothing is there.
    Its files are found by a glob, which finds none in a file: a file there was passed over as if the
    run had no such folder (``report`` said "No legal order was served", ``analyze`` analysed no
    disclosure), saying nothing."""
    path = Path(run) / name
    if path.is_dir() or not (path.exists() or path.is_symlink()):
        return None
    link = broken_link(path)
    if link is not None:
        what = link
    else:
        what = (not_a_file(path) or "a file").removeprefix("not a regular file (").removesuffix(")")
    return (
        f"{path}: {what} stands where a folder belongs (the run's {name}/, which it would be read as "
        "none of: passed over); move it away"
    )


# The most read of a run's JSON or Markdown file (summary.json, matrix.json, a disclosure, an
# analysis): the largest relaysim writes are a few megabytes; a larger one is no file of a run (a
# disk image, /dev/zero copied in), and was read whole into memory.
MAX_RUN_FILE = 256 * 1024 * 1024


def open_run_file(path: str | Path) -> BinaryIO:
    """``path``, a file in a run's folder, opened for reading (binary) if it is a regular file; else
    an OSError naming it and saying what it is (a folder, a pipe, a socket, a device), which the
    readers' ``except OSError`` already turns into a line. Opened without waiting (O_NONBLOCK) and
    checked on the open file (fstat): a named pipe was waited on for ever by a Python caller (the
    commands check the folder's files first, the functions they call did not), a socket or a
    device read as a file, or "[Errno 6] No such device or address"."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:  # (Windows: a folder is not opened)
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(path))
            kinds = ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"))
            kind = next((k for test, k in (*kinds, (stat.S_ISBLK, "a device")) if test(mode)), "")
            raise OSError(errno.EINVAL, f"not a regular file{f' ({kind})' if kind else ''}", str(path))
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# The longest line of a run's JSON Lines file read one line at a time (transcript.jsonl by
# analysis_scoring.read_truth, relay-view.jsonl by analysis.view.from_relay_view): an event or a
# record is one line of a few kilobytes (a message to a large group, a record per device: a few
# hundred); a longer one is no run's (a file damaged, a disk image copied in), and was read whole
# into memory however long (a gigabyte with no line end), then said to be "not JSON".
MAX_LINE = 64 * 1024 * 1024


def numbered_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The lines of ``f`` (opened by :func:`open_run_file`), numbered from 1, each read with at most
    MAX_LINE + 1 bytes of it: a line longer than MAX_LINE (:func:`line_too_long` says so) is never
    read whole."""
    for n in itertools.count(1):
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        yield n, raw


def line_too_long(raw: bytes) -> str | None:
    """What is wrong with ``raw``, a line :func:`numbered_lines` read, if it is longer than MAX_LINE bytes."""
    if len(raw) <= MAX_LINE:
        return None
    return (
        f"more than {MAX_LINE:,} bytes with no line end; a run writes each one as a line of a few "
        "kilobytes: the file was damaged, or is not the run's"
    )


def read_run_file(path: str | Path, limit: int | None = MAX_RUN_FILE) -> bytes:
    """The bytes of ``path``, a regular file in a run's folder (:func:`open_run_file`) of at most
    ``limit`` bytes; else an OSError naming it (EFBIG: how large it is, and the most read). No
    ``limit`` for the files that grow with the run (transcript.jsonl, relay.db): a regular file all
    the same."""
    with open_run_file(path) as f:
        if limit is None:
            return f.read()
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
        if size > limit or len(data) > limit:  # (or it grew as it was read)
            raise OSError(
                errno.EFBIG,
                f"{max(size, len(data)):,} bytes, more than a run's file holds (at most {limit:,} are read)",
                str(path),
            )
    return data


def read_run_text(path: str | Path, limit: int | None = MAX_RUN_FILE) -> str:
    """:func:`read_run_file` as UTF-8 text, line ends read as ``Path.read_text`` reads them (``\r\n``
    and ``\r`` as ``\n``); UnicodeDecodeError for bytes that are not UTF-8, as it raised."""
    return io.StringIO(read_run_file(path, limit).decode("utf-8"), newline=None).read()


# What an error line must not carry as it is: every C0 and C1 control character (a line break in a
# path given would make it two lines; ESC starts a colour or a cursor move) and the bidirectional
# overrides and isolates; sims.term.printable's set, with the line break and the tab (it keeps those,
# for multi-line views; it is not imported here: it loads rich).
# And a byte of a path or a word that is not the locale's encoding (``relaysim show $'\xff'``),
# which Python holds as a lone surrogate (U+DC80 to U+DCFF, "surrogateescape"): stderr wrote it as
# ``\udcff``, naming no byte the user typed; it is written as the byte, ``\xff``.
_NOT_IN_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\udc80-\udcff]")


def one_line(message: object) -> str:
    """``message`` as one line a terminal shows and never obeys: what an argument or a file name
    carries (``relaysim run $'a\\nb.toml'``, a folder named with an escape sequence) is written as
    ``\\x0a``, ``\\x1b``."""
    return _NOT_IN_ONE_LINE.sub(_escaped, str(message))


def _escaped(m: re.Match[str]) -> str:
    code = ord(m[0])
    if 0xDC80 <= code <= 0xDCFF:  # (a byte surrogateescape holds: the byte itself)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shell_word(path: str | Path) -> str:
    """``path`` as one word a POSIX shell reads back as that path, for a command an error suggests
    (``relaysim run NAME --out WORD --force``): ``shlex.quote``'s, but from the first byte that is
    not the locale's encoding (``relaysim show $'\\xff'``: Python holds it as a lone surrogate) or
    the first control character (one_line's set) on, the path is written as ``printf``'s output,
    ``"$(printf '\\377')"``, each such byte (and ``\\``, ``%`` and ``'``) in octal: bash, zsh, ksh
    and dash (Debian's ``sh``) all read it. ANSI-C quoting, ``$'\\xff'``, was written before: dash
    takes it as the characters ``$``, ``\\``, ``x``, ``f``, ``f``, another path. A command
    substitution drops the line breaks its output ends with, so the rest of the path goes into the
    one ``printf`` (a line break is never its last byte but for a path that ends in one, whose
    ``printf`` ends with ``/``: a folder's name, as every path a hint names is, read the same with
    it). As one_line showed it, ``\\xff`` inside ``'...'`` or bare, it named another path (the four
    characters), or none."""
    text = str(path)
    m = _NOT_IN_ONE_LINE.search(text)
    if m is None:
        return shlex.quote(text)
    rest = text[m.start() :]
    try:
        raw = rest.encode(sys.getfilesystemencoding(), "surrogateescape")
    except UnicodeEncodeError:  # (U+202E under an ASCII locale: its UTF-8, as one_line's \u202e)
        raw = rest.encode("utf-8", "surrogateescape")
    if raw.endswith(b"\n"):  # (dropped by the command substitution: a folder's name read the same)
        raw += b"/"
    form = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"\\%'" else f"\\{b:03o}" for b in raw)
    head = shlex.quote(text[: m.start()]) if m.start() else ""
    return f"{head}\"$(printf '{form}')\""


def write_whole(text: str | Path, data: str) -> None:
    """``data`` (as UTF-8: the bytes ``Path.write_text(data, encoding="utf-8")`` writes on POSIX) into
    the file ``text`` names, whole or not at all: written beside it under a name of its own and
    renamed over it (written in place, a write cut short, the disk full, left half a file, and a file
    that was there already truncated). A file that was there keeps its permissions; a link to one
    stays, the file it points to replaced. An OSError names the file given (not the copy's name, nor
    none, as a failed write's has). Used for disclose's and bench's --json FILE, analyze's
    analysis/NAME.json and .md and report.html: files written again into a folder that holds others.

    A device or a pipe that is there (``--json /dev/null``, a named pipe) is written into, never
    replaced (_write_into).

    A process killed between making its copy and renaming it (SIGKILL, a power cut: nothing runs
    to remove it) left the copy, ``.NAME.xxxxxxxx.tmp``, beside the file for good; each write of the
    file now removes the copies of its name that no write holds (_remove_stale_copies)."""
    target = Path(text).resolve() if Path(text).is_symlink() else Path(text)
    try:
        st = os.stat(target)
    except FileNotFoundError:  # a new file: the permissions open() gives one (0o666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    else:
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            _write_into(target, data, text)
            return
        mode = st.st_mode & 0o7777
    _remove_stale_copies(target)
    try:
        fd, tmp, held = _own_copy(target)
    except OSError as exc:  # (named as the file to write: the name made for its copy means nothing)
        raise OSError(exc.errno, exc.strerror or str(exc), str(text)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8"))
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(text)) from exc
        raise
    finally:
        if held is not None:
            os.close(held)


def _write_into(target: Path, data: str, text: str | Path) -> None:
    """``data`` written into ``target``, a device or a pipe that is there (``--json /dev/null``,
    ``/dev/stdout``, a named pipe), as a shell's redirection writes it: a copy renamed over it put a
    regular file in its place (run as root, over /dev/null itself, for every program on the
    machine), and a device or a pipe holds no half-written file to spare the reader."""
    try:
        fd = _open_for_writing(target)
        with open(fd, "wb") as f:
            f.write(data.encode("utf-8"))
    except _NoReader as exc:  # (the output was lost with the pipe: it is kept in a file, named)
        raise OSError(errno.ENXIO, f"{exc}; {_keep_unread(target, data)}", str(text)) from None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(text)) from exc


class _NoReader(Exception):
    """No program opened the named pipe for reading within PIPE_READER_WAIT seconds."""


def _keep_unread(target: Path, data: str) -> str:
    """``data``, that no program read from the named pipe ``target``, kept in a new file of its own
    (``NAME.xxxxxxxx.unread`` beside the pipe, else in the system's temporary folder), and the words
    that name it: the work was done, and its output was lost with the pipe."""
    import tempfile

    reasons = []
    for folder in (target.parent, Path(tempfile.gettempdir())):
        try:
            fd, kept = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".unread", dir=folder)
        except OSError as exc:
            reasons.append(f"{folder}: {exc.strerror or exc}")
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8"))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(kept)
            reasons.append(f"{kept}: {exc.strerror or exc}")
            continue
        return f"what was to be written into it is kept in {one_line(kept)} instead"
    return f"what was to be written into it could not be kept in a file either ({'; '.join(reasons)})"


# How long a write into a named pipe waits for a program to read it: a shell's ``> fifo`` waits for
# ever, and so did relaysim, its work done, saying nothing (cli13's fuzz: disclose --json FIFO). A
# bound, not for ever: a command whose reader never comes (a typo in the reader's command, a script
# that starts it after) must end, saying why, not hang a script or a CI job. It is said as the wait
# starts (on stderr) and in each --json's --help (PIPE_HELP), so that a reader started late is
# started in time. What no program read is not lost (the work is done by then, and a pipe read by
# nothing keeps none of it): it is written into a new file beside the pipe (else in the temporary
# folder), which the error names (_keep_unread).
PIPE_READER_WAIT = 30.0
PIPE_HELP = (
    f"a named pipe (FIFO) is waited on for a reader for at most {PIPE_READER_WAIT:g} s, then what was "
    "to go into it is kept in a file the error names"
)


def _open_for_writing(target: Path) -> int:
    """A descriptor writing into ``target``; a named pipe is waited on for a reader for at most
    PIPE_READER_WAIT seconds (opened without waiting, again and again: an open that waits cannot be
    given up), then _NoReader saying that nothing reads it."""
    import time

    nonblock = getattr(os, "O_NONBLOCK", 0)
    if not nonblock or not stat.S_ISFIFO(os.stat(target).st_mode):
        return os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    deadline = time.monotonic() + PIPE_READER_WAIT
    said = False
    while True:
        try:
            fd = os.open(target, os.O_WRONLY | nonblock | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # (ENXIO: no process has the pipe open for reading)
                raise
            if not said:  # (the wait was said only when it was over, the output then lost)
                said = True
                print(
                    f"relaysim: {one_line(target)} is a pipe (FIFO) that nothing reads yet: waiting up to "
                    f"{PIPE_READER_WAIT:g} s for a program to read it",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() >= deadline:
                raise _NoReader(
                    f"a pipe (FIFO) that nothing read from for {PIPE_READER_WAIT:g} s: start the program "
                    "that reads it first"
                ) from None
            time.sleep(0.05)
        else:
            os.set_blocking(fd, True)
            return fd


def _copy_pattern(target: Path) -> re.Pattern[str]:
    """The names write_whole's copies of ``target`` have: tempfile.mkstemp's, ``.NAME.`` + 8 of its
    characters (tempfile._RandomNameSequence: lower-case letters, digits, ``_``) + ``.tmp``."""
    return re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")


def _own_copy(target: Path) -> tuple[int, str, int | None]:
    """A new copy for ``target`` beside it (its descriptor and path), and a second descriptor holding
    an exclusive lock (fcntl.flock) on it until the copy is renamed: the lock says a write is under
    way, and goes with its process, however that ends. None for the lock where the system has no
    flock (Windows) or the file system takes none: there no copy is ever removed as stale either."""
    for _ in range(100):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        held = _lock(tmp)
        if held is None:
            return fd, tmp, None
        try:
            # a write of the same file, removing stale copies, may have taken this one before it was
            # locked: then it is gone (or another file has its name), and another is made
            if os.path.samestat(os.fstat(held), os.lstat(tmp)):
                return fd, tmp, held
        except OSError:
            pass
        os.close(held)
        os.close(fd)
    raise OSError(errno.EEXIST, "could not keep a copy to write", str(target))


def _lock(path: str | Path, wait: bool = True) -> int | None:
    """A descriptor of ``path`` holding an exclusive flock on it, or None (no flock on this system or
    file system; without ``wait``, another holds the lock; ``path`` is gone or is no regular file)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            return fd
    except OSError:  # held (LOCK_NB), or a file system that takes no lock
        pass
    os.close(fd)
    return None


def _remove_stale_copies(target: Path) -> None:
    """Remove the copies of ``target`` (``.NAME.xxxxxxxx.tmp`` beside it) that an earlier write left
    when its process was killed before renaming its copy: those whose lock no process holds. A copy
    a write still holds (another relaysim writing the same file now) is left to it. Nothing is said
    of what cannot be removed; the write goes on."""
    pattern = _copy_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if not pattern.fullmatch(name):
            continue
        path = target.parent / name
        held = _lock(path, wait=False)
        if held is None:
            continue
        try:
            if os.path.samestat(os.fstat(held), os.lstat(path)):
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(held)
