"""What the provider sees, as one list of observations, whichever way it came to light.

Four sources, all of them the provider's own: a relay's database (``relay.db``) read under a
profile's retention policy, what a tap collected (the ``intercepts`` of a pen register or a
wiretap, in the same database), a disclosure package as handed over (``disclosures/NAME.json``),
and what the relay *saw* while it ran (``relay-view.jsonl``: every observation whole, before any
retention policy — what a provider that watches its relay live, is compelled to, or is hacked,
has even if it keeps nothing).
Each becomes a :class:`ProviderView`: observations (:class:`Obs`, one per record), the address
books the provider holds, and the provider's own address-to-region table (its GeoIP) if it has one.

Nothing here reads the simulator's ground truth: not the transcript, not the scenario. The
databases are opened read-only, so analysing a run never changes it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relaysim.relay.metadata import METADATA_FIELDS, MetadataRecord, RecordKind, RetentionPolicy
from relaysim.relay.profiles import Profile
from relaysim.sims.analysis.runfiles import (
    brief,
    finite_number,
    line_too_long,
    loads,
    not_a_file,
    not_json,
    numbered_lines,
    open_run_file,
    read_run_text,
)

__all__ = [
    "RELAY_VIEW_FILE",
    "AnalysisInputError",
    "Obs",
    "ProviderView",
    "from_db",
    "from_disclosure",
    "from_relay_view",
    "from_tap",
    "on_run_clock",
    "record_json",
]

MESSAGE_KINDS = ("send", "sealed_send")
RELAY_VIEW_FILE = "relay-view.jsonl"  # in a run's folder: what the relay saw, one record a line


class StoreCopyNote(UserWarning):
    """A note that a store is copied before it is read, and why (:func:`_read_copy`): the relaysim
    command says it on stderr as ``relaysim COMMAND: note: ...`` as it is made, before the copy
    (sims.cli's ``_run_folder_warnings``); elsewhere, a warning as Python shows one."""


class AnalysisInputError(Exception):
    """An input the analyses cannot read: names the file, the field and what was expected."""


@dataclass(frozen=True, slots=True)
class Obs:
    """One observation the provider holds. ``kind`` is a ``relay.metadata.RecordKind`` value, or
    ``"sighting"`` (an address an account was seen at, as a disclosure's IP-address list gives it)."""

    kind: str
    time: float | None = None
    connection: int | None = None
    host: str | None = None
    port: int | None = None
    account: str | None = None
    device: int | None = None
    recipient_account: str | None = None
    recipient_device: int | None = None
    envelope_id: str | None = None  # hex
    size: int | None = None

    @property
    def sealed(self) -> bool:
        """A message whose sender the record does not name."""
        return self.kind in MESSAGE_KINDS and self.account is None


@dataclass(frozen=True)
class ProviderView:
    source: (
        str  # what it was read from, for people ("relay.db under whatsapp", "disclosure pen-register-amira")
    )
    observations: tuple[Obs, ...]
    address_books: Mapping[str, frozenset[str]] = field(default_factory=dict)  # account → contacts
    geoip: Mapping[str, str] = field(default_factory=dict)  # the provider's own address → region table
    target: str | None = None  # the account an order named, if the view is a disclosure or a tap
    window: tuple[float | None, float | None] = (None, None)

    def of_kind(self, *kinds: str) -> list[Obs]:
        return [o for o in self.observations if o.kind in kinds]

    def messages(self) -> list[Obs]:
        return self.of_kind(*MESSAGE_KINDS)

    def accounts(self) -> set[str]:
        out: set[str] = set()
        for o in self.observations:
            out.update(a for a in (o.account, o.recipient_account) if a is not None)
        return out


def _obs(r: MetadataRecord) -> Obs:
    return Obs(
        r.kind.value,
        r.time,
        r.connection,
        r.host,
        r.port,
        r.account,
        r.device,
        r.recipient_account,
        r.recipient_device,
        r.envelope_id.hex() if r.envelope_id is not None else None,
        r.size,
    )


# What reading a relay.db that is not as a relay wrote it raises: SQLite's own errors (a row's text
# that is not UTF-8 among them), and UnicodeDecodeError where the names in SQLite's schema
# (sqlite_master) are not UTF-8, as a damaged file's may be: Python's sqlite3 decodes them itself.
# Each is said naming the file.
_UNREADABLE = (sqlite3.DatabaseError, UnicodeDecodeError)


class _ReadCopy(sqlite3.Connection):
    """A connection to a copy of a relay.db and its write-ahead log, in a folder of its own that
    goes when the connection is closed."""

    folder = ""

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.folder:
                shutil.rmtree(self.folder, ignore_errors=True)


def _connect(db: Path) -> sqlite3.Connection:
    """``db``, a run's relay.db, opened to read without writing a byte into the run's folder. A WAL
    store opened ``mode=ro`` made ``relay.db-wal`` and ``relay.db-shm`` beside it and left them (a
    read-only connection does not remove them): a failed or a good ``analyze`` left the folder with
    two files it did not have. Without a write-ahead log beside it (a finished run's store: closing
    it checkpoints and removes its log) the file is whole, and is read as immutable: no lock, no
    file made, read-only media too. With one (a run killed before its store was closed), what it
    holds would be missed: a copy of both is read, in a temporary folder of its own. (Immutable
    means unchanged while read: a finished run's store, not a relay's that is running.)"""
    if not db.is_file():  # (a folder or a pipe there is said to be one: it was "no such file")
        raise AnalysisInputError(f"{db}: {not_a_file(db) or 'no such file'}; expected a run's relay.db")
    try:  # (SQLite says only "unable to open database file", and the store was blamed for it)
        with open(db, "rb"):
            pass
    except OSError as exc:
        raise AnalysisInputError(
            f"{db}: cannot read it: {exc.strerror or exc}; check its permissions"
        ) from None
    wal = db.with_name(db.name + "-wal")
    try:
        logged = wal.stat().st_size > 0
    except OSError:
        logged = False
    conn = (
        _read_copy(db, wal)
        if logged
        else sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    )
    try:
        conn.execute("SELECT 1 FROM metadata LIMIT 1")
    except _UNREADABLE as exc:
        conn.close()
        raise AnalysisInputError(f"{db}: cannot read it as a relay store ({exc})") from None
    return conn


# Above this many bytes (relay.db and its log together), a note on stderr says why reading the store
# takes a while before it is copied: a store of a long run copied with no word looked like a hang.
COPY_NOTE_BYTES = 100 * 1024 * 1024
_CHUNK = 1 << 20


def _read_copy(db: Path, wal: Path) -> sqlite3.Connection:
    """A connection reading a copy of ``db`` and its write-ahead log ``wal`` (_ReadCopy). A copy of
    more than :data:`COPY_NOTE_BYTES` is said on stderr first, and why it is made; a file that cannot
    be read, and a copy that cannot be written (a full temporary folder), are each said as what
    they are, with why a copy is made (a copy that could not be written was "cannot read it")."""
    why = f"{wal.name} beside it is not empty: the run was stopped before its store was closed"
    try:
        size = db.stat().st_size + wal.stat().st_size
    except OSError:
        size = 0
    folder = tempfile.mkdtemp(prefix="relaysim-read-")
    if size > COPY_NOTE_BYTES:  # (said by the command that reads it, naming itself: StoreCopyNote)
        warnings.warn(
            f"{db}: {why}; copying it and its log ({size / 1e6:,.0f} MB) to read them together, in {folder}",
            StoreCopyNote,
            stacklevel=2,
        )
    try:
        for src in (db, wal):
            target = os.path.join(folder, src.name)
            try:
                f = open_run_file(src)
            except OSError as exc:
                raise AnalysisInputError(f"{src}: cannot read it: {exc.strerror or exc}") from None
            with f:
                try:  # (an error of the copy's, writing it: not of the store's, which reads well)
                    with open(target, "wb") as out:
                        while True:
                            try:
                                chunk = f.read(_CHUNK)
                            except OSError as exc:
                                raise AnalysisInputError(
                                    f"{src}: cannot read it: {exc.strerror or exc}"
                                ) from None
                            if not chunk:
                                break
                            out.write(chunk)
                except OSError as exc:
                    raise AnalysisInputError(
                        f"{db}: cannot copy it to {folder} to read it ({why}): {exc.strerror or exc}"
                    ) from None
        copy = Path(folder, db.name).as_uri()
        conn = sqlite3.connect(f"{copy}?mode=ro", uri=True, factory=_ReadCopy)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    conn.folder = folder
    return conn


_COLUMNS = ", ".join(METADATA_FIELDS)


def _records(rows: Iterable[Sequence[Any]]) -> list[MetadataRecord]:
    out = []
    for row in rows:
        kind, *values = row
        out.append(MetadataRecord(RecordKind(kind), **dict(zip(METADATA_FIELDS, values, strict=True))))
    return out


def _under_policy(records: list[MetadataRecord], policy: RetentionPolicy) -> list[MetadataRecord]:
    """The records as ``policy`` would have kept them (kinds, fields, granularity, first/latest)."""
    kept: list[MetadataRecord | None] = []
    keyed: dict[tuple[Any, ...], int] = {}
    for r in records:
        rule = policy.rule(r.kind)
        applied = policy.apply(r)
        if rule is None or applied is None:
            continue
        if rule.keep == "all":
            kept.append(applied)
            continue
        key = (r.kind, *(getattr(applied, k) for k in rule.key))
        if key in keyed and rule.keep == "first":
            continue
        if key in keyed:
            kept[keyed[key]] = None
        keyed[key] = len(kept)
        kept.append(applied)
    return [r for r in kept if r is not None]


_SQL_TYPES: dict[str, tuple[str, ...]] = {
    "time": ("integer", "real"),
    "connection": ("integer",),
    "host": ("text",),
    "port": ("integer",),
    "account": ("text",),
    "device": ("integer",),
    "recipient_account": ("text",),
    "recipient_device": ("integer",),
    "envelope_id": ("blob",),
    "size": ("integer",),
    "count": ("integer",),
}


def check_records(conn: sqlite3.Connection, label: str | Path, table: str = "metadata") -> None:
    """An AnalysisInputError naming the first row of ``table`` (``metadata`` or ``intercepts``) whose
    kind is no record kind or whose column holds what the relay never writes there (text for a time,
    an infinite time, a number for an envelope id): readers of the store take its columns as
    relay.metadata.MetadataRecord has them. One pass over the table."""
    kinds = [k.value for k in RecordKind]
    bad_type = [
        f"typeof({col}) NOT IN ({', '.join(repr(t) for t in (*types, 'null'))})"
        for col, types in _SQL_TYPES.items()
    ]
    where = " OR ".join(
        [f"kind IS NULL OR kind NOT IN ({', '.join('?' * len(kinds))})", *bad_type, "abs(time) > 1e300"]
    )
    try:
        row = conn.execute(
            f"SELECT seq, kind, {_COLUMNS} FROM {table} WHERE {where} ORDER BY seq LIMIT 1", kinds
        ).fetchone()
    except _UNREADABLE as exc:
        raise AnalysisInputError(
            f"{label}: cannot read its {table} table as a relay store's ({exc})"
        ) from None
    if row is None:
        return
    seq, kind, *values = row
    at = f"{label}: {table} row {seq}"
    if kind not in kinds:
        raise AnalysisInputError(f"{at}: kind: expected one of {', '.join(kinds)}, got {brief(kind)}")
    for (col, types), value in zip(_SQL_TYPES.items(), values, strict=True):
        sql_type = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), "null")
        if sql_type == "null" or (sql_type in types and not (col == "time" and abs(value) > 1e300)):
            continue
        want = {"time": "a time (a finite number)", "envelope_id": "bytes"}.get(col) or (
            "text" if "text" in types else "an integer"
        )
        raise AnalysisInputError(f"{at}: {col}: expected {want}, got {value!r:.60}")
    raise AnalysisInputError(f"{at}: not a record as the relay writes it")


def from_db(
    db: str | Path,
    profile: Profile | None = None,
    *,
    geoip: Mapping[str, str] | None = None,
) -> ProviderView:
    """A relay's database as its operator holds it. With ``profile``, read it under that profile's
    retention policy (a database recorded under ``keep-everything`` read as WhatsApp would have kept it);
    without, as recorded."""
    path = Path(db)
    conn = _connect(path)
    try:
        check_records(conn, path)
        records = _records(conn.execute(f"SELECT kind, {_COLUMNS} FROM metadata ORDER BY seq"))
        books: dict[str, set[str]] = {}
        for account, contact in conn.execute("SELECT account, contact FROM contacts"):
            if isinstance(account, str) and isinstance(contact, str):
                books.setdefault(account, set()).add(contact)
    except _UNREADABLE as exc:
        raise AnalysisInputError(f"{path}: cannot read it as a relay store ({exc})") from None
    finally:
        conn.close()
    if profile is not None:
        records = _under_policy(records, profile.policy)
        if not profile.keep_contacts:
            books = {}
    label = f"{path.name} under {profile.name}" if profile is not None else path.name
    return ProviderView(
        label,
        tuple(_obs(r) for r in records),
        {k: frozenset(v) for k, v in books.items()},
        dict(geoip or {}),
    )


def from_tap(db: str | Path, tap_id: str, *, geoip: Mapping[str, str] | None = None) -> ProviderView:
    """What one tap (a pen register, a wiretap) collected, from the run's database."""
    path = Path(db)
    conn = _connect(path)
    try:
        check_records(conn, path, "intercepts")
        rows = conn.execute(
            f"SELECT kind, {_COLUMNS} FROM intercepts WHERE tap_id = ? ORDER BY seq", (tap_id,)
        ).fetchall()
        taps = [t for (t,) in conn.execute("SELECT DISTINCT tap_id FROM intercepts ORDER BY tap_id")]
    except _UNREADABLE as exc:
        raise AnalysisInputError(f"{path}: cannot read it as a relay store ({exc})") from None
    finally:
        conn.close()
    if not rows and tap_id not in taps:
        raise AnalysisInputError(
            f"{path}: no tap {tap_id!r} collected anything; taps with intercepts: {', '.join(taps) or 'none'}"
        )
    return ProviderView(f"tap {tap_id}", tuple(_obs(r) for r in _records(rows)), {}, dict(geoip or {}))


def _num(row: Mapping[str, Any], key: str, where: str) -> float | None:
    v = row.get(key)
    if v is None:
        return None
    if not finite_number(v):
        raise AnalysisInputError(f"{where}.{key}: expected a number, got {brief(v)}")
    return float(v)


def _str(row: Mapping[str, Any], key: str, where: str) -> str | None:
    v = row.get(key)
    if v is None or isinstance(v, str):
        return v
    raise AnalysisInputError(f"{where}.{key}: expected a string, got {brief(v)}")


def _int(row: Mapping[str, Any], key: str, where: str) -> int | None:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise AnalysisInputError(f"{where}.{key}: expected an integer, got {brief(v)}")
    return v


def from_disclosure(path: str | Path, data: Mapping[str, Any] | None = None) -> ProviderView:
    """A disclosure package as handed over (``disclosures/NAME.json``): only what is in it. Rows of a
    message log or of real-time routing without a sender are sealed-sender messages."""
    p = Path(path)
    if data is None:
        try:
            data = loads(read_run_text(p))
        except ValueError as exc:  # (not JSON, not UTF-8: every reader's words for it)
            raise AnalysisInputError(not_json(p, exc)) from None
        except OSError as exc:
            raise AnalysisInputError(f"{p}: cannot read it as a disclosure (JSON): {exc}") from None
    if not isinstance(data, Mapping):
        raise AnalysisInputError(f"{p}: expected a disclosure (a JSON object), got {type(data).__name__}")
    if not isinstance(data.get("provided"), Mapping):
        raise AnalysisInputError(
            f"{p}: provided: expected an object of categories, as relaysim writes, got {brief(data.get('provided'))}"
        )
    target = data.get("target")
    if target is not None and not isinstance(target, str):
        raise AnalysisInputError(f"{p}: target: expected an account name or null, got {brief(target)}")
    provided: Mapping[str, Any] = data["provided"]
    obs: list[Obs] = []
    geoip: dict[str, str] = {}
    books: dict[str, set[str]] = {}
    for category, rows in provided.items():
        if not isinstance(rows, list):
            raise AnalysisInputError(f"{p}: provided.{category}: expected a list of rows, got {brief(rows)}")
        for i, row in enumerate(rows):
            where = f"{p}: provided.{category}[{i}]"
            if not isinstance(row, Mapping):
                raise AnalysisInputError(f"{where}: expected an object, got {brief(row)}")
            if category in ("message_log", "realtime_routing"):
                account = _str(row, "account", where)
                obs.append(
                    Obs(
                        "send" if account is not None else "sealed_send",
                        time=_num(row, "time", where),
                        host=_str(row, "host", where),
                        account=account,
                        device=_int(row, "device", where),
                        recipient_account=_str(row, "recipient_account", where),
                        recipient_device=_int(row, "recipient_device", where),
                        size=_int(row, "size", where),
                    )
                )
            elif category == "lookup_log":
                obs.append(
                    Obs(
                        "bundle_fetch",
                        time=_num(row, "time", where),
                        host=_str(row, "host", where),
                        account=_str(row, "account", where),
                        recipient_account=_str(row, "recipient_account", where),
                    )
                )
            elif category == "ip_addresses" and target is not None:
                obs.append(
                    Obs(
                        "sighting",
                        time=_num(row, "first_seen", where),
                        host=_str(row, "ip", where),
                        account=target,
                    )
                )
            elif category == "location":
                ip, region = _str(row, "ip", where), _str(row, "region", where)
                if ip is not None and region is not None and region != "unknown":
                    geoip[ip] = region
            elif category == "contacts" and target is not None:
                contact = _str(row, "contact", where)
                if contact:
                    books.setdefault(target, set()).add(contact)
            elif category == "reverse_contacts" and target is not None:
                account = _str(row, "account", where)
                if account:
                    books.setdefault(account, set()).add(target)
    window = data.get("window") or [None, None]
    if not (
        isinstance(window, list) and len(window) == 2 and all(w is None or finite_number(w) for w in window)
    ):
        raise AnalysisInputError(f"{p}: window: expected [from, to] (numbers or null), got {window!r:.60}")
    name = data.get("name", p.stem)
    return ProviderView(
        f"disclosure {name}",
        tuple(sorted(obs, key=lambda o: (o.time is None, o.time or 0.0))),
        {k: frozenset(v) for k, v in books.items()},
        geoip,
        target,
        (window[0], window[1]),
    )


def record_json(r: MetadataRecord) -> dict[str, Any]:
    """One line of ``relay-view.jsonl``: a metadata record whole, as the relay made it — ``kind``,
    then each field it has (``time`` on the relay's clock, Unix seconds, as in ``relay.db``;
    ``envelope_id`` in hex). Only :class:`MetadataRecord` fields: nothing the relay did not see."""
    out: dict[str, Any] = {"kind": r.kind.value}
    for name in METADATA_FIELDS:
        value = getattr(r, name)
        if value is None:
            continue
        if name == "envelope_id":
            value = value.hex()
        elif name == "time":
            value = round(value, 6)
        out[name] = value
    return out


_VIEW_TYPES: dict[str, tuple[type, ...]] = {
    "time": (int, float),
    "connection": (int,),
    "host": (str,),
    "port": (int,),
    "account": (str,),
    "device": (int,),
    "recipient_account": (str,),
    "recipient_device": (int,),
    "envelope_id": (str,),
    "size": (int,),
    "count": (int,),
}


def _view_record(row: Any, where: str) -> MetadataRecord:
    if not isinstance(row, dict):
        raise AnalysisInputError(f"{where}: expected an object (one metadata record), got {brief(row)}")
    kind = row.get("kind")
    try:
        rk = RecordKind(str(kind)) if isinstance(kind, str) else RecordKind("")
    except ValueError:
        kinds = ", ".join(k.value for k in RecordKind)
        raise AnalysisInputError(f"{where}.kind: expected one of {kinds}, got {brief(kind)}") from None
    fields: dict[str, Any] = {}
    for key, value in row.items():
        if key == "kind" or value is None:
            continue
        types_ = _VIEW_TYPES.get(key)
        if types_ is None:
            raise AnalysisInputError(
                f"{where}.{key}: not a metadata field; expected only kind and {', '.join(METADATA_FIELDS)}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, types_)
            or (key == "time" and not finite_number(value))
        ):
            want = "a number" if key == "time" else ("a string" if str in types_ else "an integer")
            raise AnalysisInputError(f"{where}.{key}: expected {want}, got {brief(value)}")
        if isinstance(value, str) and key == "envelope_id":
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise AnalysisInputError(f"{where}.envelope_id: expected hex, got {brief(value)}") from None
        fields[key] = float(value) if key == "time" else value
    return MetadataRecord(rk, **fields)


def from_relay_view(path: str | Path, *, geoip: Mapping[str, str] | None = None) -> ProviderView:
    """What the relay saw while it ran (``relay-view.jsonl``, written by the run): every observation,
    whole, whatever the profile kept. A provider that watches its relay (or is made to, or whose
    relay is hacked) has all of it; one that only keeps has ``relay.db`` (:func:`from_db`)."""
    p = Path(path)
    try:
        f = open_run_file(p)  # (closed below; one line at a time)
    except OSError as exc:
        raise AnalysisInputError(
            f"{p}: cannot read it ({exc.strerror or exc}); expected a run's {RELAY_VIEW_FILE}, which a "
            "simulated relaysim run writes (a --live run's relay is a separate server and writes none, nor did "
            "runs made by earlier versions: run the scenario again, without --live)"
        ) from None
    obs: list[Obs] = []
    with f:
        # (a line of a gigabyte was read whole: at most MAX_LINE bytes of it are)
        for n, raw in numbered_lines(f):
            where = f"{p}: line {n}"
            too_long = line_too_long(raw)
            if too_long is not None:
                raise AnalysisInputError(f"{where}: {too_long}")
            if not raw.strip():
                continue
            try:
                row = loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:  # as read_truth says it of the transcript
                raise AnalysisInputError(
                    f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            except ValueError as exc:
                raise AnalysisInputError(f"{where}: not JSON ({exc}); expected one metadata record") from None
            obs.append(_obs(_view_record(row, where)))
    return ProviderView(f"{p.name} (what the relay saw)", tuple(obs), {}, dict(geoip or {}))


def with_geoip(view: ProviderView, geoip: Mapping[str, str]) -> ProviderView:
    return replace(view, geoip={**geoip, **view.geoip})


def on_run_clock(view: ProviderView, to_run: Callable[[float], float]) -> ProviderView:
    """``view`` with every time (each observation's, the order's window) read on the run's own clock by
    ``to_run`` (runfiles.relay_clock of the run's provider.json): a live run's relay kept the wall clock,
    the scenario's time scaled, and an analysis of time (the hour of the day, a window of seconds)
    made on it means little: a live run of two simulated hours at time scale 0.0005 is four real seconds."""

    def at(t: float | None) -> float | None:
        return None if t is None else to_run(t)

    return replace(
        view,
        observations=tuple(
            o if o.time is None else replace(o, time=to_run(o.time)) for o in view.observations
        ),
        window=(at(view.window[0]), at(view.window[1])),
    )
