"""The relay's durable state in SQLite: accounts, devices, prekeys, queued envelopes, metadata,
and what lawful access adds: intercepts, archived envelopes, address books and blocks.

One file (or ``":memory:"``), stdlib ``sqlite3``, WAL journal, ``synchronous=FULL``: a commit
is on disk before ``transaction()`` returns, so the core can tell a sender its envelope is
accepted only after the envelope is durable (SQLite docs, "PRAGMA synchronous": with WAL,
FULL syncs the WAL on every commit; NORMAL may lose the last commits on power failure). The
relay server's group transactions sync on their own instead (:meth:`Store.defer_syncs`): a
group's COMMIT writes the WAL, and an fsync of the WAL, in a worker thread, makes it durable
before anything of it is acknowledged.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists the steps, each
run in its own transaction together with the version bump. A database newer than this code
is refused rather than guessed at.

Metadata records get one column per :class:`~relay.metadata.MetadataRecord` field. A field a
retention policy does not keep is never written: its column is NULL in that row, and nothing
else in the file holds it (tests read the ``.db`` file directly to check).

Envelopes are queued per recipient device and deleted when that device acknowledges them.
Until then they are delivered again on every ``receive``: at-least-once, and devices drop
duplicates by envelope id. A relay that keeps delivered messages (a cloud-chat service), or one
under a preservation request, moves them to ``archive`` instead.

``taps`` and ``preservations`` hold the orders in effect, so a relay that restarts keeps
collecting and keeps what was frozen. ``intercepts`` holds what taps (pen registers, wiretaps) collected: whole observation records,
whatever the retention policy, and for content taps the envelope bodies. ``contacts`` and
``blocks`` hold uploaded address books and blocks, for relays configured to keep them.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from relaysim.relay._frozen import quick_init
from relaysim.relay.metadata import (
    DEVICE_FACTS,
    METADATA_FIELDS,
    METADATA_SCHEMA,
    KindRule,
    MetadataRecord,
    RecordKind,
    RetentionPolicy,
)
from relaysim.relay.wire import Envelope, KemPrekey, Prekey, SignedPrekey

__all__ = [
    "DEVICE_FACTS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ArchivedEnvelope",
    "DeviceFacts",
    "DeviceRecord",
    "GroupMemberRecord",
    "SchemaCopyNote",
    "Store",
    "StoreError",
    "StoredEnvelope",
    "dangling_link",
    "refuse_a_newer_schema",
    "refuse_another_schema",
    "schema_version_of",
]


class StoreError(Exception):
    """The database cannot be used by this relay (e.g. its schema is newer)."""


class SchemaCopyNote(UserWarning):
    """A note that a store is copied, with its write-ahead log, to read its schema version and
    tables (:func:`schema_version_of`, :func:`refuse_another_schema`), and why: a store of a run
    stopped uncleanly, checked before relaysim analyze or report reads it (which copies it again,
    and says so: sims.analysis.view.StoreCopyNote). The relaysim command says it on stderr as
    ``relaysim COMMAND: note: ...``; elsewhere, a warning as Python shows one."""


# Above this many bytes (the store and its log together), the copy made to read its schema is said
# (SchemaCopyNote) before it is made: a store of a long run, copied with no word, looked like a hang.
COPY_NOTE_BYTES = 100 * 1024 * 1024


# --- schema ----------------------------------------------------------------------------------
# Each migration takes the database from version i to i + 1. Never edit a released one: add.

_V1 = """
CREATE TABLE accounts (
    account     TEXT PRIMARY KEY,
    created_at  REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE delivery_tokens (
    account     TEXT PRIMARY KEY REFERENCES accounts(account),
    token       BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    account             TEXT NOT NULL REFERENCES accounts(account),
    device              INTEGER NOT NULL,
    registration_id     INTEGER NOT NULL,
    identity_key        BLOB NOT NULL,
    spk_id              INTEGER NOT NULL,
    spk_public          BLOB NOT NULL,
    spk_signature       BLOB NOT NULL,
    last_resort_id      INTEGER NOT NULL,
    last_resort_public  BLOB NOT NULL,
    last_resort_signature BLOB NOT NULL,
    registered_at       REAL NOT NULL,
    PRIMARY KEY (account, device)
) WITHOUT ROWID;

CREATE TABLE prekeys (
    account     TEXT NOT NULL,
    device      INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    public      BLOB NOT NULL,
    PRIMARY KEY (account, device, id)
) WITHOUT ROWID;

CREATE TABLE kem_prekeys (
    account     TEXT NOT NULL,
    device      INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    public      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (account, device, id)
) WITHOUT ROWID;

CREATE TABLE envelopes (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB NOT NULL UNIQUE,
    account         TEXT NOT NULL,
    device          INTEGER NOT NULL,
    body            BLOB NOT NULL,
    timestamp       INTEGER NOT NULL,
    sealed          INTEGER NOT NULL,
    source_account  TEXT,
    source_device   INTEGER
);
CREATE INDEX envelopes_by_device ON envelopes (account, device, seq);

CREATE TABLE metadata (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                TEXT NOT NULL,
    time                REAL,
    connection          INTEGER,
    host                TEXT,
    port                INTEGER,
    account             TEXT,
    device              INTEGER,
    recipient_account   TEXT,
    recipient_device    INTEGER,
    envelope_id         BLOB,
    size                INTEGER,
    count               INTEGER
);
CREATE INDEX metadata_by_kind_time ON metadata (kind, time);

CREATE TABLE server_identity (
    key_id              INTEGER PRIMARY KEY,
    server_private      BLOB NOT NULL,
    server_certificate  BLOB NOT NULL,
    trust_root_public   BLOB NOT NULL
);
"""


# v2: lawful access. Taps' intercepts (every MetadataRecord column, plus the body for content
# taps), delivered envelopes kept server-side, address books and blocks.
_V2 = """
CREATE TABLE intercepts (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    tap_id              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    time                REAL,
    connection          INTEGER,
    host                TEXT,
    port                INTEGER,
    account             TEXT,
    device              INTEGER,
    recipient_account   TEXT,
    recipient_device    INTEGER,
    envelope_id         BLOB,
    size                INTEGER,
    count               INTEGER,
    body                BLOB
);
CREATE INDEX intercepts_by_tap ON intercepts (tap_id, seq);

CREATE TABLE archive (
    seq             INTEGER PRIMARY KEY,
    id              BLOB NOT NULL UNIQUE,
    account         TEXT NOT NULL,
    device          INTEGER NOT NULL,
    body            BLOB NOT NULL,
    timestamp       INTEGER NOT NULL,
    sealed          INTEGER NOT NULL,
    source_account  TEXT,
    source_device   INTEGER,
    archived_at     REAL NOT NULL,
    reason          TEXT NOT NULL CHECK (reason IN ('kept', 'preserved'))
);
CREATE INDEX archive_by_account ON archive (account, seq);
CREATE INDEX archive_by_source ON archive (source_account, seq);

CREATE TABLE contacts (
    account     TEXT NOT NULL,
    contact     TEXT NOT NULL,
    PRIMARY KEY (account, contact)
) WITHOUT ROWID;
CREATE INDEX contacts_by_contact ON contacts (contact, account);

CREATE TABLE blocks (
    account     TEXT NOT NULL,
    blocked     TEXT NOT NULL,
    time        REAL NOT NULL,
    PRIMARY KEY (account, blocked)
) WITHOUT ROWID;
"""


# v3: orders served on a live relay, so that a restart does not forget them: taps in place and
# preservation requests (each service, by time: a preservation freezes what is held at its service).
_V3 = """
CREATE TABLE taps (
    id          TEXT PRIMARY KEY,
    target      TEXT,
    start_time  REAL NOT NULL,
    end_time    REAL NOT NULL,
    content     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE preservations (
    account     TEXT NOT NULL,
    served      REAL NOT NULL,
    PRIMARY KEY (account, served)
) WITHOUT ROWID;
"""


# v4: facts about the file itself, as key/value text. ``simulation_keys`` is set by a seeded
# simulation (sims.world.simulation): every key in such a file can be recomputed from the seed, and
# ``relaysim relay serve`` refuses the file unless told --allow-simulation-keys.
_V4 = """
CREATE TABLE meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
"""


# v5: key transparency (relay/transparency.py): every (account, device, identity key) the relay has
# served, in the order it logged them. Append-only: the Merkle log's leaf ``idx`` is row ``idx``.
_V5 = """
CREATE TABLE key_log (
    idx         INTEGER PRIMARY KEY,
    leaf        BLOB NOT NULL
);
"""


# v6: what a device's registration said about it beyond its keys, where the provider keeps it
# (relay.profiles Profile.device_facts): its push token, device type and app version, as last
# registered. A column is NULL where the device sent nothing or the provider keeps none of it.
_V6 = """
CREATE TABLE device_facts (
    account     TEXT NOT NULL,
    device      INTEGER NOT NULL,
    push_token  BLOB,
    device_type TEXT,
    app_version TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (account, device)
) WITHOUT ROWID;
"""


# v7: "signed-devices" accounts: the primary's signature over each companion's identity key, as
# the companion registered it, served with its bundle (wire.DeviceBundle.device_signature).
_V7 = """
CREATE TABLE device_signatures (
    account     TEXT NOT NULL,
    device      INTEGER NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (account, device)
) WITHOUT ROWID;
"""


# v8: groups. Server-side membership (WhatsApp: the relay fans a group message out from the list it
# holds): who is in which group, who is an admin, when each was added and by whom (NULL: by the
# provider itself, not at an admin's request), and the membership's epoch. Encrypted group state
# (Signal's groups v2): an opaque blob per group id and its version, with no account anywhere.
_V8 = """
CREATE TABLE groups (
    id          BLOB PRIMARY KEY,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    epoch       INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE group_members (
    group_id    BLOB NOT NULL,
    account     TEXT NOT NULL,
    admin       INTEGER NOT NULL,
    added_at    REAL NOT NULL,
    added_by    TEXT,
    PRIMARY KEY (group_id, account)
) WITHOUT ROWID;
CREATE INDEX group_members_by_account ON group_members (account, group_id);

CREATE TABLE group_states (
    id          BLOB PRIMARY KEY,
    version     INTEGER NOT NULL,
    state       BLOB NOT NULL
) WITHOUT ROWID;
"""


# v9: the metadata table without AUTOINCREMENT. Its ``seq`` is still the order records were made
# in (a new row gets a rowid above every row held), but an insert no longer updates the
# ``sqlite_sequence`` table as well: a record is written on every send, delivery and ack. (Nothing
# refers to a record by its seq; intercepts and archive keep their own.) The rows are copied
# whole, in order; dropping the old table overwrites its pages (secure_delete).
_V9 = """
CREATE TABLE metadata_v9 (
    seq                 INTEGER PRIMARY KEY,
    kind                TEXT NOT NULL,
    time                REAL,
    connection          INTEGER,
    host                TEXT,
    port                INTEGER,
    account             TEXT,
    device              INTEGER,
    recipient_account   TEXT,
    recipient_device    INTEGER,
    envelope_id         BLOB,
    size                INTEGER,
    count               INTEGER
);
INSERT INTO metadata_v9 (seq, kind, time, connection, host, port, account, device, recipient_account,
    recipient_device, envelope_id, size, count)
SELECT seq, kind, time, connection, host, port, account, device, recipient_account, recipient_device,
    envelope_id, size, count FROM metadata ORDER BY seq;
DROP TABLE metadata;
ALTER TABLE metadata_v9 RENAME TO metadata;
CREATE INDEX metadata_by_kind_time ON metadata (kind, time);
"""


# v10: an index for the storage rules that keep one record per account ("first": account creation;
# "latest": the last connection, as Signal and WhatsApp keep them, relay.profiles). Their lookup is
# ``kind = ? AND account IS ?``, which the (kind, time) index narrowed only to every row of the
# kind: one row per account, so each login scanned every account's row.
_V10 = """
CREATE INDEX metadata_by_kind_account ON metadata (kind, account);
"""


# v11: no index by (kind, account) over every record. Three records are written per envelope (send,
# delivery, acknowledgement), each also into that index at the place of its account: a random page
# per record, written to the WAL at every commit and, once the index outgrows SQLite's page cache,
# read from the file first. Only the lookups of records kept once per key (Store.append_metadata)
# need one, so each kind kept that way gets an index of its own, over its records alone (a partial
# index, SQLite docs "Partial Indexes"), made by the first such lookup: records kept whole are in
# none but (kind, time), which takes them in time order.
_V11 = """
DROP INDEX IF EXISTS metadata_by_kind_account;
"""


# v12: the records made per envelope (send, sealed send, delivery, acknowledgement: three an
# envelope) are out of the (kind, time) index. Each went into it as well as into the table, a second
# b-tree insert (~1 us a record), and what uses the index asks about one kind at a time: the retention
# sweep and the compliance desk (Store.metadata(kind)). It is now a partial index (SQLite docs,
# "Partial Indexes") over the other kinds' records, the ones made a few times per device
# (registrations, connections, logins, fetches, ...); a query may use it when its WHERE clause has the
# index's own terms (_TIME_INDEXED_TERM). A kind made per envelope gets an index of its own from the
# first sweep of a rule that expires it (Store.expire_metadata); as long as none does, a read of one
# scans the table, in order. SQLite evaluates a partial index's WHERE on every insert: one partial
# index per kind would cost more than the index it replaces, and so does ``kind NOT IN (...)``, whose
# list becomes a table made anew for each row of an executemany; four ``<>`` cost ~0.2 us a row.
_TIME_INDEXED_TERM: Final = (
    "kind <> 'send' AND kind <> 'sealed_send' AND kind <> 'delivery' AND kind <> 'acknowledgement'"
)
_PER_ENVELOPE_KINDS: Final = frozenset(
    {RecordKind.SEND, RecordKind.SEALED_SEND, RecordKind.DELIVERY, RecordKind.ACKNOWLEDGEMENT}
)
_V12 = """
DROP INDEX IF EXISTS metadata_by_kind_time;
CREATE INDEX metadata_by_kind_time ON metadata (kind, time)
    WHERE kind <> 'send' AND kind <> 'sealed_send' AND kind <> 'delivery' AND kind <> 'acknowledgement';
"""


# v13: ``devices`` a rowid table, its two big blobs (the last-resort ML-KEM key, 1,568 bytes, and its
# signature) last. Its rows are ~1.8 KB: a WITHOUT ROWID table keeps at most ~1 KB of a row in its
# b-tree page (4 KiB pages) and the rest in an overflow page of its own (SQLite docs, "Database File
# Format" 1.6, "B-tree Pages"; "The WITHOUT ROWID Optimization" 4: best for rows under 1/20 of a page),
# so 50,000 devices took 57,416 pages and each routing or identity read walked a table of ~8 rows a
# page, beside an overflow page a row. A rowid table keeps a row up to nearly a page in the page: two devices a page,
# found through the index of the (account, device) key, 25,400 pages for 50,000. (A table of their own
# for the last-resort keys measured no better for the reads of routes and identity keys, and slower
# for a bundle fetch: a second lookup.) The rows are copied whole, in key order; dropping the old
# table overwrites its pages (secure_delete). The columns keep their names.
_V13 = """
CREATE TABLE devices_v13 (
    account             TEXT NOT NULL REFERENCES accounts(account),
    device              INTEGER NOT NULL,
    registration_id     INTEGER NOT NULL,
    identity_key        BLOB NOT NULL,
    spk_id              INTEGER NOT NULL,
    spk_public          BLOB NOT NULL,
    spk_signature       BLOB NOT NULL,
    registered_at       REAL NOT NULL,
    last_resort_id      INTEGER NOT NULL,
    last_resort_public  BLOB NOT NULL,
    last_resort_signature BLOB NOT NULL,
    PRIMARY KEY (account, device)
);
INSERT INTO devices_v13 (account, device, registration_id, identity_key, spk_id, spk_public, spk_signature,
    registered_at, last_resort_id, last_resort_public, last_resort_signature)
SELECT account, device, registration_id, identity_key, spk_id, spk_public, spk_signature, registered_at,
    last_resort_id, last_resort_public, last_resort_signature FROM devices ORDER BY account, device;
DROP TABLE devices;
ALTER TABLE devices_v13 RENAME TO devices;
"""


# v14: a group state's write key (relay.core, put_group_state): the Ed25519 public key the members
# derive from the group's master key, registered with the state's creation; every later version must
# be signed by it. A key names nobody, as the rest of the row. A state stored before v14 has none
# (NULL): the next version stored registers the key it comes with, signed by that key, as a creation
# does (until then anyone could overwrite that state anyway, as anyone could before).
_V14 = """
ALTER TABLE group_states ADD COLUMN write_key BLOB
"""


# v15: a group state's write keys, one per current member (relay.core, put_group_state), in place of
# the one key derived from the group's master key, which a member who left still holds. The column
# holds the keys, 32 bytes each, concatenated in sorted order; every version must be signed by one of
# them, and a version may replace them. A key names nobody, as the rest of the row. A v14 state's
# one key becomes a set of one (its members move to their own keys with their next version, signed
# by that key); a state stored before v14 still has none (NULL). The old column is dropped (SQLite
# 3.35), which rewrites the table; secure_delete overwrites the freed pages.
_V15 = """
ALTER TABLE group_states ADD COLUMN write_keys BLOB;
UPDATE group_states SET write_keys = write_key;
ALTER TABLE group_states DROP COLUMN write_key
"""


# v16: key transparency: the latest time the relay signed into a tree head (relay.core.RelayCore._sign_head).
# The heads themselves are signed when asked for and kept in memory; this one number is kept so that a
# relay restarted with its clock behind signs no head earlier than one its devices already hold, which
# they would refuse as an old head replayed (RFC 6962 §3.5: "Each subsequent timestamp MUST be more
# recent than the timestamp of the previous update"). One row, id 0; a store from before v16 has none,
# and the heads its relay signed then were never recorded (taken as 0).
_V16 = """
CREATE TABLE key_log_head_time (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    signed_at   INTEGER NOT NULL
)
"""


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                db.execute(statement)

    return run


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _script(_V1),
    _script(_V2),
    _script(_V3),
    _script(_V4),
    _script(_V5),
    _script(_V6),
    _script(_V7),
    _script(_V8),
    _script(_V9),
    _script(_V10),
    _script(_V11),
    _script(_V12),
    _script(_V13),
    _script(_V14),
    _script(_V15),
    _script(_V16),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _advised(what: str, advice: str | None) -> str:
    """``what`` is wrong with a store, and what to do about it (``advice``, with "the file is left as
    it is"); ``what`` alone with no advice (a warning of a file that is not read needs none)."""
    return what if advice is None else f"{what}; {advice} (the file is left as it is)"


_NEWER_ADVICE: Final = "open it with that version, or upgrade relaysim"
_OLDER_ADVICE: Final = "read it with the relaysim that wrote it, or run the scenario again with this one"


def _newer_schema(path: object, version: int, advice: str | None = _NEWER_ADVICE) -> str:
    """What a store written by a newer relaysim is told, by the Store opening it and by
    :func:`refuse_a_newer_schema` alike."""
    return _advised(
        f"{path}: written by a newer relaysim: schema version {version} is newer than this one reads "
        f"(up to {len(MIGRATIONS)})",
        advice,
    )


def _older_schema(path: object, version: int, advice: str | None = _OLDER_ADVICE) -> str:
    """What a reader that reads a store as this relaysim writes it, without migrating it, is told of
    one written by an older relaysim (:func:`refuse_another_schema`)."""
    return _advised(
        f"{path}: written by an older relaysim: schema version {version} is older than the one this "
        f"relaysim reads ({len(MIGRATIONS)}), and its tables may differ",
        advice,
    )


# What a Store (``relay serve``) advises for a file that is no store of its own; a reader of a
# finished run's store gives its own advice (refuse_another_schema's ``advice``).
_STORE_ADVICE: Final = "give the relay a new file, or a store it wrote"


def _not_a_store(path: object, tables: list[str], advice: str | None = _STORE_ADVICE) -> str:
    """What a SQLite database of another program's (schema version 0, with tables of its own) is
    told: by the Store opening it, and by :func:`refuse_another_schema` alike, with the advice
    that fits what read it."""
    tables = sorted(tables)
    listed = ", ".join(tables[:8]) + (f", … ({len(tables)} in all)" if len(tables) > 8 else "")
    return _advised(
        f"{path}: a SQLite database, but not a relay store (no schema version, and tables of its own: {listed})",
        advice,
    )


def _no_schema_of_ours(path: object, version: int, advice: str | None) -> str:
    """What a reader of a finished run's store (:func:`refuse_another_schema`) is told of a SQLite
    database whose schema version (``PRAGMA user_version``) is below 0: one no relaysim writes."""
    return _advised(
        f"{path}: a SQLite database, but not a relay store (schema version {version}: a relay store's "
        f"is from 1 to {len(MIGRATIONS)})",
        advice,
    )


# What a file that is no SQLite database at all is (a text file, another format): the Store opening it
# (_explain) and the readers of a finished run's store (refuse_another_schema) say it alike.
_NOT_SQLITE: Final = "not a SQLite database (its first bytes are not SQLite's header)"
_SQLITE_HEADER: Final = b"SQLite format 3\x00"  # (sqlite.org/fileformat2.html, 1.3: the first 16 bytes)


def _not_sqlite(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` holds bytes, but not SQLite's header: no SQLite database (an empty
    file is SQLite's empty database; one that cannot be read is its reader's to say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError:
        return False
    return bool(head) and head != _SQLITE_HEADER


def _no_sqlite(path: object, advice: str | None) -> str:
    """What a reader of a finished run's store (:func:`refuse_another_schema`) is told of a file that
    is no SQLite database: said in the Store's words (sqlite3 says "file is not a database")."""
    return _advised(f"{path}: {_NOT_SQLITE}, not a relay store", advice)


def _empty_store(path: object, advice: str | None) -> str:
    """What a reader of a finished run's store (:func:`refuse_another_schema` with ``empty``) is told
    of a file holding no database, or an empty one: no table, no schema version."""
    return _advised(f"{path}: an empty database (no tables, no schema version), not a relay store", advice)


def _missing_tables(path: object, version: int, missing: list[str], advice: str | None) -> str:
    """What a store of a schema version this relaysim knows that lacks some of that version's tables
    is told (a table dropped by hand, a damaged file), naming them: by the Store opening it and by
    :func:`refuse_another_schema` alike, with the advice that fits what read it."""
    names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
    return _advised(
        f"{path}: a relay store of schema version {version} without its {names} "
        f"table{'s' if len(missing) > 1 else ''}: damaged or changed by hand",
        advice,
    )


def schema_version_of(path: str | os.PathLike[str]) -> int | None:
    """The schema version (``PRAGMA user_version``) of the store at ``path``, read without a byte of
    it written or a file made beside it; None for a file SQLite cannot read. (``mode=ro`` made
    ``-wal`` and ``-shm`` beside a WAL store and left them: a read-only connection does not remove
    them.) Without a write-ahead log beside it the file is whole, and read as immutable (no lock, no
    file made); with one, a copy of both is read, in a folder of its own."""
    read = _read_schema(path)
    return None if read is None else read[0]


def _read_schema(path: str | os.PathLike[str]) -> tuple[int, list[str] | None] | None:
    """The schema version of the file at ``path`` and the names of its tables (None if they are not
    UTF-8: a damaged schema), read as :func:`schema_version_of` says; None for a file SQLite cannot
    read."""
    import shutil
    import tempfile
    from pathlib import Path

    db = Path(path).resolve()
    try:
        logged = os.stat(f"{db}-wal").st_size > 0
    except OSError:
        logged = False
    try:
        with tempfile.TemporaryDirectory(prefix="relaysim-schema-") as folder:
            uri = f"{db.as_uri()}?mode=ro&immutable=1"
            if logged:  # (what the store wrote last may be in the log alone: its schema's version too)
                _say_schema_copy(db, folder)
                shutil.copyfile(db, os.path.join(folder, "relay.db"))
                shutil.copyfile(f"{db}-wal", os.path.join(folder, "relay.db-wal"))
                uri = f"{Path(folder, 'relay.db').as_uri()}?mode=ro"
            con = sqlite3.connect(uri, uri=True)
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                try:
                    tables: list[str] | None = [
                        row[0]
                        for row in con.execute(
                            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
                        )
                    ]
                except UnicodeDecodeError:  # (a damaged schema: what reads the file says so, naming it)
                    tables = None
            finally:
                con.close()
    except (sqlite3.Error, OSError):
        return None
    return (version, tables) if isinstance(version, int) else None


def _say_schema_copy(db: os.PathLike[str], folder: str) -> None:
    """A SchemaCopyNote if ``db`` and its log together are more than COPY_NOTE_BYTES, before they
    are copied into ``folder`` to read the schema (the copy was silent, the one read after said)."""
    import warnings

    try:
        size = os.stat(db).st_size + os.stat(f"{os.fspath(db)}-wal").st_size
    except OSError:
        return
    if size > COPY_NOTE_BYTES:
        warnings.warn(
            f"{db}: relay.db-wal beside it is not empty: the run was stopped before its store was closed; "
            f"copying it and its log ({size / 1e6:,.0f} MB) to read its schema version, in {folder}",
            SchemaCopyNote,
            stacklevel=4,
        )


def refuse_a_newer_schema(path: str | os.PathLike[str]) -> None:
    """A StoreError if the store at ``path`` was written by a newer relaysim (its schema version is
    above :data:`SCHEMA_VERSION`): reading it as this one would misread it. A Store checks the same,
    with the same words, as it opens (and migrates an older one). Read only
    (:func:`schema_version_of`). A file SQLite cannot read, or one that is no store, passes: what
    reads it says so, naming it."""
    version = schema_version_of(path)
    if version is not None and version > len(MIGRATIONS):
        raise StoreError(_newer_schema(path, version))


def refuse_another_schema(
    path: str | os.PathLike[str],
    *,
    older: bool = True,
    empty: bool = False,
    advice: str | None = None,
    advise: bool = True,
) -> None:
    """A StoreError if the store at ``path`` is of another schema version than this relaysim's: a
    newer one (:func:`refuse_a_newer_schema`'s words), or an older one, from 1 to SCHEMA_VERSION - 1
    (a Store migrates it as it opens; a reader that reads the file as it is, without a Store, would
    read this version's tables in it: read as having nothing a newer step added, or an SQL error).
    For the readers that read a run's relay.db without opening a Store (``relaysim analyze`` and
    ``report``, which must not write it); ``older=False`` for one that opens it with a Store, on a
    copy (``disclose``). Read only. Version 0 with tables is a SQLite database of another
    program's, refused in the words a Store refuses it with, but for the advice: ``advice`` in place
    of the Store's (which is for ``relay serve``: "give the relay a new file"), and the same advice
    for an empty one (no table: a file of 0 bytes) when ``empty`` is given; without it an empty one
    passes (a Store makes its tables there). With ``empty``, a store of a version it reads that lacks
    some of that version's tables is refused too, naming them (analyze said "no such table:
    metadata", disclose "it has no accounts or devices or metadata table"). A version below 0 is
    no relaysim's, and is refused as no relay store; a file that is no SQLite database at all (a text
    file: not SQLite's header) is refused in the Store's words for one. ``advise=False``: what
    the file is, without any advice (a warning of a file the command does not read)."""
    told = (advice or _STORE_ADVICE) if advise else None  # (a newer or older one: its own advice)
    read = _read_schema(path)
    if read is None:
        if _not_sqlite(path):  # (a text file: analyze said "cannot read it as a relay store (file is
            # not a database)", disclose "cannot open it as a relay store: file is not a database")
            raise StoreError(_no_sqlite(path, told))
        return
    version, tables = read

    if version > len(MIGRATIONS):
        raise StoreError(_newer_schema(path, version, _NEWER_ADVICE if advise else None))
    if older and 0 < version < len(MIGRATIONS):
        raise StoreError(_older_schema(path, version, _OLDER_ADVICE if advise else None))
    if version < 0:  # (no relaysim writes one: disclose said "it has no accounts … table", analyze
        # "no such table: metadata", or read another program's tables as a relay's)
        raise StoreError(_no_schema_of_ours(path, version, told))
    if version == 0 and tables:
        raise StoreError(_not_a_store(path, tables, told))
    if version == 0 and tables == [] and empty:
        raise StoreError(_empty_store(path, told))
    if version > 0 and tables is not None and empty:
        missing = [t for t in _expected_schema(version) if t not in tables]
        if missing:
            raise StoreError(_missing_tables(path, version, sorted(missing), told))


_RELEASED: Final = tuple(MIGRATIONS)
_SCHEMAS: dict[int, dict[str, list[str]]] = {}


def _expected_schema(version: int) -> dict[str, list[str]]:
    """The tables, and each one's columns, that the first ``version`` migrations make (run once per
    process on an empty database in memory); nothing known for a step not among this module's own
    (one a test added). A version below 0 is no relaysim's: refused here, not read as
    ``MIGRATIONS[:version]`` (all the steps but the last ones) by a caller that forgot to guard."""
    if version < 0:
        raise ValueError(f"schema version {version}: no relaysim's (its versions are 0 and up)")
    steps = tuple(MIGRATIONS[:version])
    if steps != _RELEASED[:version]:
        return {}
    schema = _SCHEMAS.get(version)
    if schema is None:
        db = sqlite3.connect(":memory:", isolation_level=None)
        try:
            for step in steps:
                step(db)
            names = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
                )
            ]
            schema = {n: [row[1] for row in db.execute(f'PRAGMA table_info("{n}")')] for n in names}
        finally:
            db.close()
        _SCHEMAS[version] = schema
    return schema


# The tables a relay reads as it starts, their key column and the SQL type each column must hold
# (Store._check_rows): a row of another type is refused rather than read (a number as bytes).
_STARTUP_TYPES: Final = (
    (
        "server_identity",
        "key_id",
        (
            ("key_id", "integer"),
            ("server_private", "blob"),
            ("server_certificate", "blob"),
            ("trust_root_public", "blob"),
        ),
    ),
    ("key_log", "idx", (("idx", "integer"), ("leaf", "blob"))),
    ("key_log_head_time", "id", (("signed_at", "integer"),)),
    ("meta", "key", (("key", "text"), ("value", "text"))),
)


def dangling_link(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with ``path`` if it is a symbolic link to nothing, else None.

    A link to a database is followed (SQLite opens the file it points to, and keeps its -wal and
    -shm files beside that file). A link to nothing is refused rather than followed: SQLite would
    make a new, empty store where it points (or say only "unable to open database file" when the
    folder there is missing too), and a relay whose database was moved, or whose disk is not
    mounted, would start again with no accounts and a new identity key."""
    path = os.fspath(path)
    if path == ":memory:" or not os.path.islink(path) or os.path.exists(path):
        return None
    try:
        target = os.readlink(path)
    except OSError:  # (gone since: SQLite says what it finds)
        return None
    where = os.path.join(os.path.dirname(path), target)
    why = (
        "does not exist"
        if os.path.isdir(os.path.dirname(os.path.abspath(where)))
        else "is in a folder that does not exist"
    )
    return (
        f"a symbolic link to {target}, which {why}: a database is not made through a link to nothing; "
        "give the database's own path, or remove the link to start a new store"
    )


def _explain(path: str, exc: sqlite3.Error) -> str:
    """What is wrong with the file at ``path``, in words, for an error SQLite gave on opening it."""
    message = str(exc)
    if path == ":memory:":
        return message
    where = os.path.abspath(path)
    folder = os.path.dirname(where)
    if os.path.isdir(where):
        return "a folder, not a database file; give the path of a file in it (e.g. relay.db)"
    if os.path.exists(where) and not os.path.isfile(where):
        return f"not a regular file (a pipe, socket or device: {message}); give the path of a database file"
    if not os.path.isdir(folder):
        return f"its folder {folder} does not exist ({message}); make it first, or give another path"
    if message == "file is not a database":
        return f"{_NOT_SQLITE}: give a relay store, or a new path"
    if "malformed" in message:
        return f"a damaged SQLite file ({message}): truncated or overwritten; restore it from a backup"
    if message == "database is locked":
        return (
            f"another program holds a lock on it ({message}, after waiting 5 s): a transaction left open "
            "by a tool that has the file open; close that first"
        )
    if os.path.exists(where) and not os.access(where, os.W_OK):
        return (
            f"read-only ({message}): the relay writes to its database, and to its -wal and -shm files "
            "beside it; make the file, its folder and their file system writable"
        )
    if not os.access(folder, os.W_OK):
        return (
            f"cannot be written ({message}): its folder {folder} is read-only, and the relay keeps its "
            f"-wal and -shm files beside the database"
        )
    return message


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    account: str
    device: int
    registration_id: int
    identity_key: bytes
    signed_prekey: SignedPrekey
    last_resort_kem_prekey: KemPrekey
    registered_at: float


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a registration says about a device beyond its keys (wire.Register's optional fields)."""

    push_token: bytes | None = None
    device_type: str | None = None
    app_version: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.push_token, self.device_type, self.app_version))


@quick_init
@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    """A queued envelope: recipient (account, device), opaque body, and what the relay knew."""

    id: bytes
    account: str
    device: int
    body: bytes
    timestamp: int  # ms since epoch, when the relay accepted it
    sealed: bool
    source_account: str | None = None
    source_device: int | None = None

    def to_wire(self) -> Envelope:
        return Envelope(
            id=self.id,
            body=self.body,
            timestamp=self.timestamp,
            sealed=self.sealed,
            source_account=self.source_account,
            source_device=self.source_device,
        )


_DEVICE_COLUMNS = (
    "account, device, registration_id, identity_key, spk_id, spk_public, spk_signature, "
    "registered_at, last_resort_id, last_resort_public, last_resort_signature"
)
_ENVELOPE_COLUMNS = "id, account, device, body, timestamp, sealed, source_account, source_device"
_ENQUEUE: Final = f"INSERT INTO envelopes ({_ENVELOPE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_METADATA_COLUMNS = ", ".join(("kind", *METADATA_FIELDS))
# A record's columns after kind, in METADATA_FIELDS order, in one C call (a record per event).
_metadata_values: Final = operator.attrgetter(*METADATA_FIELDS)
_METADATA_INSERT = (
    f"INSERT INTO metadata ({_METADATA_COLUMNS}) VALUES ({', '.join('?' * (len(METADATA_FIELDS) + 1))})"
)
# A blob made on every envelope (its id: in its queue row, in its records, in its deletion) is bound
# as a bytearray: sqlite3 binds an int, float, str or bytearray as it is, and looks up adapters for
# any other type first, bytes included (CPython, Modules/_sqlite/cursor.c, need_adapt: two attribute
# lookups, ~3,000 instructions a value, against ~300 for the copy). The same blob in the file.
_blob: Final = bytearray


# The records made on every send, delivery and ack are written with their seq given (their order)
# and only the columns their kind may carry (metadata.METADATA_SCHEMA), the kind a literal: a None
# bound to a statement costs sqlite3 a lookup of adapters (~0.3 us), a literal NULL nothing, and a
# record per envelope carried 1 to 4 of them. One statement per kind, rows of a transaction
# inserted kind by kind (Store._insert_metadata), each at the place its seq gives it.
_METADATA_INSERT_SEQ: Final = (
    f"INSERT INTO metadata (seq, {_METADATA_COLUMNS}) VALUES ({', '.join('?' * (len(METADATA_FIELDS) + 2))})"
)


def _getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """``operator.attrgetter`` of ``names`` that returns a tuple even of one name (or none)."""
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    if not names:
        return lambda obj: ()
    return operator.attrgetter(*names)


def _kind_insert(
    kind: RecordKind,
) -> tuple[str, Callable[[Any], tuple[Any, ...]], tuple[None, ...], Callable[[Any], tuple[Any, ...]], bool]:
    """(statement, getter of the fields ``kind`` never carries, as many Nones, getter of those it may
    but the envelope id, whether it may carry an envelope id: the statement's last column then)."""
    carried = [f for f in METADATA_FIELDS if f in METADATA_SCHEMA[kind] and f != "envelope_id"]
    never = [f for f in METADATA_FIELDS if f not in METADATA_SCHEMA[kind]]
    with_id = "envelope_id" in METADATA_SCHEMA[kind]
    columns = [*carried, "envelope_id"] if with_id else carried
    sql = (
        f"INSERT INTO metadata (seq, kind, {', '.join(columns)}) "
        f"VALUES (?, '{kind.value}', {', '.join('?' * len(columns))})"
    )
    return sql, _getter(never), (None,) * len(never), _getter(carried), with_id


_KIND_INSERTS: Final = {kind: _kind_insert(kind) for kind in RecordKind}


def _insert_metadata(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows made by :meth:`Store.append_records` ((statement, seq, values...)): one executemany per
    statement, in the order of their first rows."""
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        group = groups.get(row[0])
        if group is None:
            group = groups[row[0]] = []
        group.append(row[1:])
    for sql, group in groups.items():
        db.executemany(sql, group)


def _insert_envelopes(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Queued envelopes' rows (id first, as bytes: the key they wait under), the id bound as a bytearray."""
    db.executemany(
        _ENQUEUE, [(_blob(i), a, d, body, ts, sealed, sa, sd) for i, a, d, body, ts, sealed, sa, sd in rows]
    )


_INTERCEPT_INSERT = (
    f"INSERT INTO intercepts (tap_id, {_METADATA_COLUMNS}, body) "
    f"VALUES ({', '.join('?' * (len(METADATA_FIELDS) + 3))})"
)
ARCHIVE_REASONS: Final = ("kept", "preserved")


@dataclass(frozen=True, slots=True)
class ArchivedEnvelope(StoredEnvelope):
    """An acknowledged envelope the relay kept, with when (relay clock, seconds) and why:
    ``reason`` is ``"kept"`` (the relay keeps delivered messages) or ``"preserved"`` (a
    preservation request covered it)."""

    archived_at: float = field(kw_only=True)
    reason: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class GroupMemberRecord:
    """One member of a group the relay holds the membership of (server-side fan-out)."""

    group: bytes
    account: str
    admin: bool
    added_at: float
    added_by: str | None  # None: the provider added it itself, not at an admin's request


def _device(row: Any) -> DeviceRecord:
    a, d, reg, ik, spk_id, spk_pub, spk_sig, at, lr_id, lr_pub, lr_sig = row
    return DeviceRecord(
        a, d, reg, ik, SignedPrekey(spk_id, spk_pub, spk_sig), KemPrekey(lr_id, lr_pub, lr_sig), at
    )


def _envelope(row: Any) -> StoredEnvelope:
    eid, a, d, body, ts, sealed, sa, sd = row
    return StoredEnvelope(eid, a, d, body, ts, bool(sealed), sa, sd)


def _kind_term(kind: RecordKind) -> str:
    """``kind = '<kind>'`` (a literal: an enum value), with the (kind, time) index's own term for the
    kinds it holds, so that SQLite may use it (v12)."""
    term = f"kind = '{kind.value}'"
    return term if kind in _PER_ENVELOPE_KINDS else f"{term} AND {_TIME_INDEXED_TERM}"


class _Transaction:
    """:meth:`Store.transaction`'s context manager: BEGIN/COMMIT outermost, SAVEPOINT/RELEASE nested.

    A class rather than a generator: the relay enters one per request (a savepoint inside its
    batch's transaction), and a generator-based context manager costs several µs more each time.
    A rollback also drops the cache entries the rolled-back writes touched (Store._forget_since),
    and the rows it made that are still waiting to be written (Store._metadata_rows, _envelope_rows)."""

    __slots__ = ("_changes", "_mark", "_name", "_rows", "_savepoint", "_store")

    def __init__(self, store: Store, savepoint: bool = True) -> None:
        self._store = store
        self._savepoint = savepoint
        self._name = ""
        self._mark = 0
        self._rows = (0, 0, 0, 0, 0)
        self._changes = -1  # nested without a savepoint: the file's total_changes at the start

    def __enter__(self) -> None:
        store = self._store
        depth = store._depth
        if depth:
            if self._savepoint:
                self._name = _SAVEPOINTS[depth] if depth < len(_SAVEPOINTS) else f"sp{depth}"
                store._db.execute(f"SAVEPOINT {self._name}")
            else:
                self._changes = store._db.total_changes
            self._mark = len(store._journal)
            m, e = store._metadata_rows, store._envelope_rows
            self._rows = (len(m.rows), m.written, len(e.rows), e.written, len(e.taken))
        else:
            store._db.execute("BEGIN")
        store._depth = depth + 1

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        store = self._store
        store._depth -= 1
        db = store._db
        if self._changes >= 0:
            if kind is not None:
                m, m_written, e, e_written, e_taken = self._rows
                if (
                    db.total_changes != self._changes
                    or store._metadata_rows.written > m_written
                    or store._envelope_rows.written > e_written
                ):
                    # It wrote to the file before it failed, and only the whole transaction can
                    # take that back: its commit will roll it back and raise.
                    store._broken = True
                    return
                store._forget_since(self._mark)
                store._metadata_rows.rollback_to(m, m_written, 0)
                store._envelope_rows.rollback_to(e, e_written, e_taken)
            return
        if self._name:
            if kind is not None:
                db.execute(f"ROLLBACK TO {self._name}")
                db.execute(f"RELEASE {self._name}")
                store._forget_since(self._mark)
                # The file is back where it was: rows written since are not there any more
                # (they wait again), and the ones made since are dropped.
                m, m_written, e, e_written, e_taken = self._rows
                store._metadata_rows.rollback_to(m, m_written, 0)
                store._envelope_rows.rollback_to(e, e_written, e_taken)
            else:
                db.execute(f"RELEASE {self._name}")
            return
        if kind is not None:
            db.execute("ROLLBACK")
            store._forget_since(0)
            store._drop_records()
            return
        try:
            store._check_not_broken()
            store._write_pending()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            store._forget_since(0)  # whatever the file now holds, the caches start again from it
            store._drop_records()
            raise
        store._journal.clear()
        if store._wal_fd >= 0:  # defer_syncs: only a group's COMMIT waits for its sync
            os.fsync(store._wal_fd)


_SAVEPOINTS: Final = tuple(f"sp{i}" for i in range(16))
_IN_CHUNK: Final = 500  # names in one ``IN (...)`` (SQLite allows 32,766 parameters since 3.32; 999 before)
# With defer_syncs, the WAL pages past which the owner's own COMMIT checkpoints (a fallback: the
# relay server checkpoints beside its loop, Store.checkpoint_beside); SQLite's default is 1,000.
_FALLBACK_CHECKPOINT_PAGES: Final = 16384


class _Rows:
    """Rows for one table made inside a transaction, inserted in order (one executemany) when it
    commits or something reads the table. ``written`` of them are in the file already (a read
    made them so): while a savepoint is open they are kept, for its rollback may take them back
    (:meth:`rollback_to`); with none open they are forgotten once written.

    ``keyed`` (the envelope queue): a row still waiting can be taken back by its first column, the
    envelope id (:meth:`take`: an envelope acknowledged before its transaction commits is never
    written, instead of written and deleted); its place holds None, and ``taken`` lists what was
    taken, in order, so that a rollback puts it back."""

    __slots__ = ("index", "insert", "rows", "sql", "taken", "written")

    def __init__(
        self,
        sql: str,
        *,
        keyed: bool = False,
        insert: Callable[[sqlite3.Connection, list[tuple[Any, ...]]], None] | None = None,
    ) -> None:
        self.sql = sql
        # How the rows are inserted: one executemany of ``sql``, unless ``insert`` says otherwise.
        self.insert = insert
        self.rows: list[tuple[Any, ...] | None] = []
        self.written = 0
        # keyed: first column -> place in rows, for the rows not in the file yet
        self.index: dict[object, int] | None = {} if keyed else None
        self.taken: list[tuple[int, tuple[Any, ...]]] = []

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        mine = self.rows
        index = self.index
        if index is not None:
            at = len(mine)
            for row in rows:
                index[row[0]] = at
                at += 1
        mine.extend(rows)

    def take(self, key: object, account: str, device: int) -> tuple[Any, ...] | None:
        """Take back the waiting row ``key`` queued for ``account``'s ``device``. Returns it; an empty
        tuple if it waits for another device (so it is not in the file either); None if it does not
        wait."""
        index = self.index
        if index is None:
            return None
        at = index.get(key)
        if at is None:
            return None
        row = self.rows[at]
        if row is None:
            return None
        if row[1] != account or row[2] != device:
            return ()
        del index[key]
        self.rows[at] = None
        self.taken.append((at, row))
        return row

    def waiting(self) -> list[tuple[Any, ...]]:
        """The rows not in the file yet, in order."""
        rows = self.rows[self.written :]
        return [r for r in rows if r is not None] if self.taken else cast("list[tuple[Any, ...]]", rows)

    def write(self, db: sqlite3.Connection, depth: int) -> None:
        rows, written = self.rows, self.written
        if written < len(rows):
            pending = self.waiting() if self.taken or written else cast("list[tuple[Any, ...]]", rows)
            if pending:
                if self.insert is None:
                    db.executemany(self.sql, pending)
                else:
                    self.insert(db, pending)
        if self.index:
            self.index.clear()  # in the file now: a delete deletes them there
        if depth <= 1:  # no savepoint open that could take them back
            rows.clear()
            self.taken.clear()
            self.written = 0
        else:
            self.written = len(rows)

    def rollback_to(self, length: int, written: int, taken: int) -> None:
        """A savepoint opened when there were ``length`` rows, ``written`` of them in the file, and
        ``taken`` taken back, was rolled back: the rows taken since are back, the ones made since are
        dropped, the ones written since wait again."""
        rows = self.rows
        restored = self.taken[taken:]
        for at, row in reversed(restored):
            rows[at] = row
        del self.taken[taken:]
        dropped = rows[length:]
        del rows[length:]
        moved = written < self.written
        self.written = min(self.written, written)
        index = self.index
        if index is None:
            return
        if restored or moved:
            index.clear()
            for at in range(self.written, len(rows)):
                row = rows[at]
                if row is not None:
                    index[row[0]] = at
        else:
            for row in dropped:
                if row is not None:
                    index.pop(row[0], None)

    def drop(self) -> None:
        self.rows.clear()
        self.taken.clear()
        if self.index is not None:
            self.index.clear()
        self.written = 0


class Store:
    """All of the relay's state. Not thread-safe; one owner (the core) calls it."""

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, durable: bool = True, cache_entries: int = 1 << 16
    ) -> None:
        """``durable=False`` (synchronous=OFF) is for simulations, whose "crash" is the end of the
        process: every commit still happens in order, but SQLite does not wait for the disk. A
        relay that acknowledges envelopes to real senders keeps the default.

        ``cache_entries``: how many devices' queue sizes and accounts' routes the hot path keeps in
        memory, each (past it, a cache starts again from empty: a bound on what lookups of accounts
        that do not exist can make it hold). A simulation of more accounts than that gives more
        room: one that starts again keeps asking the file, and each queue size asked again also
        walks the envelopes waiting to be written."""
        if cache_entries < 1:
            raise ValueError(f"Store(cache_entries={cache_entries}): must be at least 1")
        self._cache_entries = cache_entries
        self.path = os.fspath(path)
        self.durable = durable
        dangling = dangling_link(self.path)
        if dangling is not None:
            raise StoreError(f"{self.path}: {dangling}")
        # isolation_level=None: no implicit transactions; transaction() says BEGIN/COMMIT itself.
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {_explain(self.path, exc)}") from exc
        self._thread = threading.get_ident()  # the thread that may use _db
        self._depth = 0
        self._wal_fd = -1  # with defer_syncs: the WAL file, which sync() fsyncs
        # Answers kept in memory for the relay's hot path (see "caches" below): each device's
        # queue size, each account's devices for routing. Every write that changes what one of
        # them answers updates or drops its entry there and then, and notes it in _journal, so
        # that a rolled-back transaction (or savepoint) drops what it touched.
        self._queue_sizes: dict[tuple[str, int], tuple[int, int]] = {}
        self._routes: dict[str, dict[int, int]] = {}
        self._key_indexes: dict[str, bool] = {}  # the per-kind metadata indexes known to exist (v11)
        self._journal: list[tuple[dict[Any, Any], Any]] = []
        # Metadata rows and queued envelopes appended inside the transaction under way, written
        # to the file table by table (one executemany each) before COMMIT and before anything
        # reads their table: rows of one table inserted together cost a third of rows inserted one
        # request at a time, each between the other table's writes. A savepoint's rollback takes
        # back what it made and wrote (_Rows).
        self._metadata_rows = _Rows(_METADATA_INSERT_SEQ, insert=_insert_metadata)
        # The seq the next record appended gets (0: read from the file first, past its last one).
        # Records wait in memory with their seqs until written; one rolled back leaves a gap.
        self._metadata_seq = 0
        self._envelope_rows = _Rows(_ENQUEUE, keyed=True, insert=_insert_envelopes)
        # Set when a part without a savepoint (without_savepoint()) failed after it had written
        # to the file: the transaction can then only be rolled back whole.
        self._broken = False
        try:
            # What the file is, checked before anything is written to it (the journal mode below
            # rewrites its header): a newer relay's file, another program's database or a damaged
            # store is refused as it is.
            self._check_file()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            # Overwrite deleted rows (acknowledged envelopes, expired metadata) with zeros instead
            # of leaving them in free pages, where a copy of the file would still show them.
            self._db.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path}: {_explain(self.path, exc)}") from exc
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (old page images in the WAL go too).

        It may run in another thread while the owner leaves the store alone (the relay server runs
        its retention sweep's checkpoint in a worker thread): a SQLite connection may be used only
        in the thread that made it, so there it goes through a connection of its own."""
        if self.path == ":memory:":
            return  # no WAL (and the store's connection is its own thread's alone)
        if threading.get_ident() == self._thread:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _check_file(self) -> None:
        """A StoreError, before anything is written, for a file this relay must not open: a newer
        schema, a schema version below 0 (no relaysim's), a SQLite database of some other program's
        (version 0, with tables of its own), or a store missing a table or column its version has
        (dropped by hand, or a damaged file)."""
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(_newer_schema(self.path, version))
        if version < 0:  # (no relaysim writes one: _expected_schema(-1) read MIGRATIONS[:-1], and the
            # file was refused as a store of version -1 missing tables, in no reader's words)
            raise StoreError(_no_schema_of_ours(self.path, version, _STORE_ADVICE))
        have: dict[str, set[str]] = {}
        for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
        ).fetchall():
            have[name] = {row[1] for row in self._db.execute(f'PRAGMA table_info("{name}")')}
        if version == 0:
            if have:
                raise StoreError(_not_a_store(self.path, list(have)))
            return
        expected = _expected_schema(version)
        gone = sorted(t for t in expected if t not in have)
        if gone:
            raise StoreError(_missing_tables(self.path, version, gone, "restore it from a backup"))
        for table, columns in expected.items():
            missing = [c for c in columns if c not in have[table]]
            if missing:
                raise StoreError(
                    f"{self.path}: table {table} has no {', '.join(missing)} column, which schema version "
                    f"{version} has: damaged or changed by hand; restore it from a backup (the file is "
                    "left as it is)"
                )
        self._check_rows()

    def _check_rows(self) -> None:
        """A StoreError naming the first row of the tables a relay reads as it starts (its own keys,
        the key log, the facts about the file) that holds what the relay never writes there: it would
        otherwise start on it (a number read as bytes) or fail with an error of its own."""
        have = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, key, checks in _STARTUP_TYPES:
            if table not in have:  # a store of an older version (in tests, which stop migrations early)
                continue
            where = " OR ".join(f"typeof({col}) <> '{kind}'" for col, kind in checks)
            row = self._db.execute(
                f"SELECT {key}, {', '.join(col for col, _ in checks)} FROM {table} WHERE {where} LIMIT 1"
            ).fetchone()
            if row is None:
                continue
            for (col, kind), value in zip(checks, row[1:], strict=True):
                got = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), "null")
                if got != kind:
                    want = {"blob": "bytes", "integer": "an integer", "text": "text"}[kind]
                    raise StoreError(
                        f"{self.path}: {table} row {row[0]!r:.40}: {col}: expected {want}, got {value!r:.40}; "
                        "the relay never writes that: damaged or changed by hand (the file is left as it is)"
                    )

    def _migrate(self) -> None:
        version = self.schema_version
        for target in range(version + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                MIGRATIONS[target - 1](self._db)
                self._db.execute(f"PRAGMA user_version = {target}")

    # -- what the file is ---------------------------------------------------------------------

    def mark_simulation_keys(self, note: str) -> None:
        """Record that this file's keys come from a seeded simulation (``note``: which one).

        Its server key, trust root and every device key are recomputable from the seed, so the
        mark stays with the file and ``relay serve`` refuses it (relay.server)."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('simulation_keys', ?)", (note,)
            )

    @property
    def simulation_keys(self) -> str | None:
        """The note :meth:`mark_simulation_keys` left, or None for a store with real keys."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'simulation_keys'").fetchone()
        return None if row is None else str(row[0])

    def without_savepoint(self) -> _Transaction:
        """A nested part of the transaction under way without SAVEPOINT and RELEASE, for work that
        refuses only before it writes and whose writes wait in memory until the transaction
        commits (the relay's send: its envelopes and metadata records).

        If it fails having written nothing to the file (a refusal), the transaction goes on as
        after a savepoint's rollback: the rows it made are dropped. If it fails after writing to
        the file (a record kept "first" or "latest", a tap's intercept, a read that wrote the rows
        waiting), only the whole transaction can be undone: its COMMIT (or :meth:`commit_group`)
        then rolls it back and raises :class:`StoreError` — nothing of it is kept, so nothing of it
        was acknowledged. Outside a transaction it is one, as :meth:`transaction`."""
        return _Transaction(self, savepoint=False)

    def transaction(self) -> _Transaction:
        """One atomic, durable unit of work (a context manager).

        A nested use is a savepoint inside the outer transaction: if it fails, its own writes are
        undone and the outer transaction goes on (a simulation commits many requests at once,
        and one refused request must not leave half its writes behind).
        """
        return _Transaction(self)

    # -- group transactions, and the WAL's fsync on its own ------------------------------------

    def defer_syncs(self) -> bool:
        """Let a group transaction's COMMIT return before it is on disk, and :meth:`sync` make it so.

        A durable store in a file switches to ``synchronous=NORMAL`` (a COMMIT writes the WAL but
        does not wait for the disk) and fsyncs the WAL file itself: after :meth:`commit_group`, in
        :meth:`sync`, which may run in a worker thread while the owner goes on using the store
        (the relay server handles the next batch meanwhile). An fsync of the WAL puts every
        transaction written to it before on disk: what ``synchronous=FULL`` does at each COMMIT
        (SQLite docs, "PRAGMA synchronous" and "Write-Ahead Logging": the WAL is the database
        file's name with ``-wal`` appended, and it stays while a connection is open). Every other
        transaction (:meth:`transaction`) still returns only once durable: it syncs at once.
        Returns whether syncs are now deferred (not in memory, nor with ``durable=False``)."""
        if self._wal_fd >= 0:
            return True
        if not self.durable or self.path == ":memory:" or self._depth:
            return False
        self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the WAL exists from here on
        wal = self.path + "-wal"
        try:
            fd = os.open(wal, os.O_RDONLY)
        except OSError:
            return False
        try:
            directory = os.open(os.path.dirname(os.path.abspath(wal)), os.O_RDONLY)
            try:
                os.fsync(directory)  # the WAL's name, too, is on disk
            finally:
                os.close(directory)
            os.fsync(fd)
            self._db.execute("PRAGMA synchronous=NORMAL")
            # The owner's COMMIT checkpoints the WAL only past this many pages: the owner is
            # expected to call checkpoint_beside() in another thread well before (the relay server
            # does, a few times a second), so that copying pages into the main file, and its
            # fsync, do not hold up the owner's thread.
            self._db.execute(f"PRAGMA wal_autocheckpoint={_FALLBACK_CHECKPOINT_PAGES}")
        except BaseException:
            os.close(fd)
            raise
        self._wal_fd = fd
        return True

    def checkpoint_beside(self) -> None:
        """Copy the transactions the WAL holds into the main file without waiting for anyone (a
        PASSIVE checkpoint), through a connection of the calling thread's own: it may run in a
        worker thread while the owner goes on writing (SQLite lets a checkpoint run beside a
        writer in WAL mode). What it copies is on disk before the WAL may be reused (a checkpoint
        fsyncs the WAL before it copies and the main file after). Nothing to do unless
        :meth:`defer_syncs`."""
        if self._wal_fd < 0:
            return
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            db.close()

    def sync(self) -> None:
        """Put every transaction committed so far on disk (fsync of the WAL); nothing to do unless
        :meth:`defer_syncs`. Touches no SQLite state: it may run in another thread."""
        if self._wal_fd >= 0:
            os.fsync(self._wal_fd)

    def begin_group(self) -> None:
        """Open an outermost transaction for a group of requests (each then a savepoint of it, via
        :meth:`transaction`), ended by :meth:`commit_group` or :meth:`abort_group`."""
        if self._depth:
            raise RuntimeError("begin_group: a transaction is already open")
        self._db.execute("BEGIN")
        self._depth = 1

    def commit_group(self) -> None:
        """COMMIT the group transaction. With :meth:`defer_syncs`, it is durable only after the next
        :meth:`sync`. If COMMIT fails, the transaction is rolled back and the error raised."""
        self._depth = 0
        try:
            self._check_not_broken()
            self._write_pending()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._forget_since(0)  # the caches start again from what the file holds
            self._drop_records()
            raise
        self._journal.clear()

    def abort_group(self) -> None:
        """Roll the group transaction back (nothing of it happened)."""
        self._depth = 0
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._forget_since(0)
        self._drop_records()

    # -- caches: answers the hot path asks for on every send, kept consistent with the file --------

    def _touched(self, cache: dict[Any, Any], key: Any) -> None:
        """``cache[key]`` was changed or dropped by a write of the transaction under way: if the
        transaction (or the savepoint) is rolled back, drop the entry (it is read again when asked)."""
        if self._depth:
            self._journal.append((cache, key))

    def _forget_since(self, mark: int) -> None:
        """Drop every cache entry touched since journal position ``mark`` (a rollback)."""
        journal = self._journal
        for cache, key in journal[mark:]:
            cache.pop(key, None)
        del journal[mark:]

    # -- accounts ----------------------------------------------------------------------------

    def account_exists(self, account: str) -> bool:
        return self._db.execute("SELECT 1 FROM accounts WHERE account = ?", (account,)).fetchone() is not None

    def existing_accounts(self, accounts: Sequence[str]) -> set[str]:
        """Those of ``accounts`` that exist: one query for a contact discovery's whole list (each
        name's own query cost ~2 us more a name), in chunks within SQLite's bound on parameters."""
        found: set[str] = set()
        for i in range(0, len(accounts), _IN_CHUNK):
            chunk = accounts[i : i + _IN_CHUNK]
            rows = self._db.execute(
                f"SELECT account FROM accounts WHERE account IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def create_account(self, account: str, created_at: float) -> None:
        self._db.execute("INSERT INTO accounts (account, created_at) VALUES (?, ?)", (account, created_at))

    def set_delivery_token(self, account: str, token: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO delivery_tokens (account, token) VALUES (?, ?)", (account, token)
        )

    def delivery_token(self, account: str) -> bytes | None:
        row = self._db.execute("SELECT token FROM delivery_tokens WHERE account = ?", (account,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- devices -----------------------------------------------------------------------------

    def device(self, account: str, device: int) -> DeviceRecord | None:
        row = self._db.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account = ? AND device = ?", (account, device)
        ).fetchone()
        return None if row is None else _device(row)

    def devices(self, account: str) -> list[DeviceRecord]:
        rows = self._db.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account = ? ORDER BY device", (account,)
        ).fetchall()
        return [_device(r) for r in rows]

    def registration_ids(self, account: str) -> dict[int, int]:
        """Device id → registration id for every device of the account (what routing needs): a new
        dict the caller may change. Kept in memory after the first query; :meth:`put_device` (the
        only write to ``devices``, for registrations and for a provider's compelled additions alike)
        drops the account's entry."""
        return dict(self._route(account))

    def routes(self, account: str) -> Mapping[int, int]:
        """What :meth:`registration_ids` answers, without the copy: the cached map itself, which
        the caller must not change (the relay's send reads it; a send to its own account copies)."""
        return self._route(account)

    def device_count(self, account: str) -> int:
        """How many devices the account has (0: no such account), from the same cache."""
        return len(self._route(account))

    def _route(self, account: str) -> dict[int, int]:
        """The cached device id → registration id map of the account: never to be changed."""
        route = self._routes.get(account)
        if route is None:
            rows = self._db.execute(
                "SELECT device, registration_id FROM devices WHERE account = ?", (account,)
            )
            route = dict(rows.fetchall())
            if len(self._routes) >= self._cache_entries:
                self._routes.clear()
            self._routes[account] = route
            self._touched(self._routes, account)  # read inside a transaction that may roll back
        return route

    def device_ids(self, account: str) -> list[int]:
        rows = self._db.execute("SELECT device FROM devices WHERE account = ? ORDER BY device", (account,))
        return [r[0] for r in rows]

    def put_device(self, d: DeviceRecord) -> None:
        self._routes.pop(d.account, None)
        self._touched(self._routes, d.account)
        spk, lr = d.signed_prekey, d.last_resort_kem_prekey
        self._db.execute(
            f"INSERT OR REPLACE INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d.account,
                d.device,
                d.registration_id,
                d.identity_key,
                spk.id,
                spk.public,
                spk.signature,
                d.registered_at,
                lr.id,
                lr.public,
                lr.signature,
            ),
        )

    def put_device_facts(self, account: str, device: int, facts: DeviceFacts, recorded_at: float) -> None:
        """What the device's registration said about it (only what the provider keeps); replaces
        what an earlier registration of the same device left."""
        self._db.execute(
            "INSERT OR REPLACE INTO device_facts (account, device, push_token, device_type, app_version, "
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (account, device, facts.push_token, facts.device_type, facts.app_version, recorded_at),
        )

    def put_device_signature(self, account: str, device: int, signature: bytes | None) -> None:
        """The primary's signature over the device's identity key, as it registered it; None (a
        registration without one) removes an earlier one, which signed the key it replaces."""
        if signature is None:
            self._db.execute(
                "DELETE FROM device_signatures WHERE account = ? AND device = ?", (account, device)
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO device_signatures (account, device, signature) VALUES (?, ?, ?)",
                (account, device, signature),
            )

    def device_signatures(self, account: str) -> dict[int, bytes]:
        """Device id → the primary's signature it registered with, for the account's devices."""
        rows = self._db.execute(
            "SELECT device, signature FROM device_signatures WHERE account = ?", (account,)
        ).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def device_facts(self, account: str) -> dict[int, DeviceFacts]:
        """Device id → the facts kept from its latest registration, for the account's devices."""
        rows = self._db.execute(
            "SELECT device, push_token, device_type, app_version FROM device_facts WHERE account = ? "
            "ORDER BY device",
            (account,),
        ).fetchall()
        return {r[0]: DeviceFacts(None if r[1] is None else bytes(r[1]), r[2], r[3]) for r in rows}

    # -- prekeys -----------------------------------------------------------------------------

    def replace_prekeys(self, account: str, device: int, prekeys: Sequence[Prekey]) -> None:
        self._db.execute("DELETE FROM prekeys WHERE account = ? AND device = ?", (account, device))
        self._db.executemany(
            "INSERT OR REPLACE INTO prekeys (account, device, id, public) VALUES (?, ?, ?, ?)",
            [(account, device, k.id, k.public) for k in prekeys],
        )

    def replace_kem_prekeys(self, account: str, device: int, prekeys: Sequence[KemPrekey]) -> None:
        self._db.execute("DELETE FROM kem_prekeys WHERE account = ? AND device = ?", (account, device))
        self._db.executemany(
            "INSERT OR REPLACE INTO kem_prekeys (account, device, id, public, signature) VALUES (?, ?, ?, ?, ?)",
            [(account, device, k.id, k.public, k.signature) for k in prekeys],
        )

    def take_prekey(self, account: str, device: int) -> Prekey | None:
        """Remove and return the device's lowest-numbered one-time prekey (each is handed out once)."""
        row = self._db.execute(
            "DELETE FROM prekeys WHERE account = ?1 AND device = ?2 AND id = "
            "(SELECT min(id) FROM prekeys WHERE account = ?1 AND device = ?2) RETURNING id, public",
            (account, device),
        ).fetchone()
        return None if row is None else Prekey(row[0], row[1])

    def take_kem_prekey(self, account: str, device: int) -> KemPrekey | None:
        row = self._db.execute(
            "DELETE FROM kem_prekeys WHERE account = ?1 AND device = ?2 AND id = "
            "(SELECT min(id) FROM kem_prekeys WHERE account = ?1 AND device = ?2) RETURNING id, public, signature",
            (account, device),
        ).fetchone()
        return None if row is None else KemPrekey(row[0], row[1], row[2])

    def prekeys_left(self, account: str, device: int) -> int:
        """The device's one-time X25519 prekeys left (``prekey_counts``'s first, in one query: a
        login asks only this)."""
        (ec,) = self._db.execute(
            "SELECT count(*) FROM prekeys WHERE account = ? AND device = ?", (account, device)
        ).fetchone()
        return int(ec)

    def prekey_counts(self, account: str, device: int) -> tuple[int, int]:
        (ec,) = self._db.execute(
            "SELECT count(*) FROM prekeys WHERE account = ? AND device = ?", (account, device)
        ).fetchone()
        (kem,) = self._db.execute(
            "SELECT count(*) FROM kem_prekeys WHERE account = ? AND device = ?", (account, device)
        ).fetchone()
        return int(ec), int(kem)

    # -- envelopes ---------------------------------------------------------------------------

    def enqueue(self, envelopes: Iterable[StoredEnvelope]) -> None:
        """Queue envelopes, in order. Inside a transaction they are written when it commits (or
        something reads the queue); outside, at once."""
        if type(envelopes) is not list:
            envelopes = list(envelopes)
        self._envelope_rows.add(
            [
                (
                    e.id,
                    e.account,
                    e.device,
                    e.body,
                    e.timestamp,
                    int(e.sealed),
                    e.source_account,
                    e.source_device,
                )
                for e in envelopes
            ]
        )
        if not self._depth:
            self._write_pending_envelopes()
        sizes = self._queue_sizes
        for e in envelopes if sizes else ():  # (no queue's size asked for yet: none to keep)
            key = (e.account, e.device)
            known = sizes.get(key)
            if known is not None:
                sizes[key] = (known[0] + 1, known[1] + len(e.body))
                self._touched(sizes, key)

    def _write_pending_envelopes(self) -> None:
        """Write the queued envelopes still waiting: before anything reads the queue."""
        if self._envelope_rows.rows:
            self._envelope_rows.write(self._db, self._depth)

    def queue_size(self, account: str, device: int) -> tuple[int, int]:
        """(envelopes, bytes of their bodies) queued for one device: counted once, then kept up
        to date by every write to the queue (the relay asks on every send, for its queue cap)."""
        key = (account, device)
        known = self._queue_sizes.get(key)
        if known is None:
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM envelopes WHERE account = ? AND device = ?",
                key,
            ).fetchone()
            # The envelopes still waiting to be written are counted where they wait, not written
            # first: a send asks this before it may refuse, and a send that refused after writing
            # to the file would take its whole group with it (Store.without_savepoint).
            for row in self._envelope_rows.waiting():
                if row[1] == account and row[2] == device:
                    count += 1
                    size += len(row[3])
            known = (int(count), int(size))
            if len(self._queue_sizes) >= self._cache_entries:
                self._queue_sizes.clear()
            self._queue_sizes[key] = known
            self._touched(self._queue_sizes, key)
        return known

    def queued(
        self, account: str, device: int, *, limit: int, max_bytes: int, overhead: int = 0
    ) -> tuple[list[StoredEnvelope], bool]:
        """Oldest first: at most ``limit`` envelopes whose sizes (body + source account +
        ``overhead`` each) add up to at most ``max_bytes`` — but always at least one if any is
        queued. Returns (envelopes, whether more are queued)."""
        self._write_pending_envelopes()
        cursor = self._db.execute(
            f"SELECT {_ENVELOPE_COLUMNS} FROM envelopes WHERE account = ? AND device = ? ORDER BY seq",
            (account, device),
        )
        out: list[StoredEnvelope] = []
        used = 0
        try:
            for row in cursor:
                e = _envelope(row)
                cost = len(e.body) + len((e.source_account or "").encode()) + overhead
                if len(out) >= limit or (out and used + cost > max_bytes):
                    return out, True
                out.append(e)
                used += cost
        finally:
            cursor.close()
        return out, False

    def delete_envelopes(
        self, account: str, device: int, ids: Iterable[bytes], *, removed: list[bytes] | None = None
    ) -> int:
        """Delete the given ids from this device's queue only; returns how many were there, and
        appends each id deleted, once, to ``removed`` if given (the relay records an acknowledgement
        for those alone: not for an id that was never there, or was deleted before).

        An envelope queued in the transaction under way and not written yet is taken back from the
        rows waiting (it never reaches the file); the others are deleted from the file, and the rows
        still waiting wait on (none of them has one of those ids, so a DELETE cannot meet them): an
        ack between sends does not split the group's envelopes into one INSERT per request."""
        pending = self._envelope_rows
        deleted = 0
        size = 0
        rest = []
        for i in dict.fromkeys(ids):  # each once (a second DELETE of one id finds nothing)
            row = pending.take(i, account, device)
            if row is None:
                rest.append(i)
            elif row:
                deleted += 1
                size -= len(row[3])
                if removed is not None:
                    removed.append(i)
        key = (account, device)
        known = self._queue_sizes.get(key)
        if rest:
            if known is None:
                if removed is None:
                    cursor = self._db.executemany(
                        "DELETE FROM envelopes WHERE account = ? AND device = ? AND id = ?",
                        [(account, device, _blob(i)) for i in rest],
                    )
                    return deleted + cursor.rowcount
                for i in rest:  # one by one: which of them were there
                    if self._db.execute(
                        "DELETE FROM envelopes WHERE account = ? AND device = ? AND id = ?",
                        (account, device, _blob(i)),
                    ).rowcount:
                        deleted += 1
                        removed.append(i)
                return deleted
            # The queue's size is known: the body's length too, read before the row goes. (A
            # SELECT, then a DELETE by rowid: ~5.6 us an envelope, where one DELETE ... RETURNING
            # took ~6.8 us; SQLite gathers a RETURNING clause's rows in a table of their own.)
            execute = self._db.execute
            for i in rest:
                found = execute(
                    "SELECT seq, length(body) FROM envelopes WHERE account = ? AND device = ? AND id = ?",
                    (account, device, _blob(i)),
                ).fetchone()
                if found is not None:
                    execute("DELETE FROM envelopes WHERE seq = ?", (found[0],))
                    deleted += 1
                    size -= found[1]
                    if removed is not None:
                        removed.append(i)
        if known is not None and deleted:
            self._queue_sizes[key] = (known[0] - deleted, known[1] + size)
            self._touched(self._queue_sizes, key)
        return deleted

    def queue_length(self, account: str, device: int) -> int:
        self._write_pending_envelopes()
        (n,) = self._db.execute(
            "SELECT count(*) FROM envelopes WHERE account = ? AND device = ?", (account, device)
        ).fetchone()
        return int(n)

    def all_envelopes(self) -> list[StoredEnvelope]:
        """Every queued envelope, in acceptance order (for inspection and tests)."""
        self._write_pending_envelopes()
        return [
            _envelope(r) for r in self._db.execute(f"SELECT {_ENVELOPE_COLUMNS} FROM envelopes ORDER BY seq")
        ]

    def envelope_origins(
        self, account: str, device: int, ids: Iterable[bytes]
    ) -> dict[bytes, tuple[str | None, int]]:
        """Envelope id → (source account or None if sealed, acceptance time in ms) for the given ids
        in this device's queue."""
        self._write_pending_envelopes()
        origins: dict[bytes, tuple[str | None, int]] = {}
        for i in ids:
            row = self._db.execute(
                "SELECT source_account, timestamp FROM envelopes WHERE account = ? AND device = ? AND id = ?",
                (account, device, i),
            ).fetchone()
            if row is not None:
                origins[i] = (row[0], int(row[1]))
        return origins

    # -- archive: envelopes kept after acknowledgement ---------------------------------------

    def archive_envelopes(
        self,
        account: str,
        device: int,
        ids: Iterable[bytes],
        *,
        archived_at: float,
        reason: str,
        moved: list[bytes] | None = None,
    ) -> int:
        """Move the given ids from this device's queue to the archive; returns how many were queued,
        and appends each id moved, once, to ``moved`` if given.

        The queue rows are deleted as :meth:`delete_envelopes` deletes (overwritten on disk); the
        body lives on in ``archive``."""
        self._write_pending_envelopes()
        if reason not in ARCHIVE_REASONS:
            raise ValueError(f"reason must be one of {ARCHIVE_REASONS}, got {reason!r}")
        self._queue_sizes.pop((account, device), None)  # counted again when next asked
        self._touched(self._queue_sizes, (account, device))
        count = 0
        for i in ids:
            key = (account, device, i)
            cursor = self._db.execute(
                f"INSERT INTO archive (seq, {_ENVELOPE_COLUMNS}, archived_at, reason) "
                f"SELECT seq, {_ENVELOPE_COLUMNS}, ?, ? FROM envelopes WHERE account = ? AND device = ? AND id = ?",
                (archived_at, reason, *key),
            )
            if cursor.rowcount:
                self._db.execute("DELETE FROM envelopes WHERE account = ? AND device = ? AND id = ?", key)
                count += 1
                if moved is not None:
                    moved.append(i)
        return count

    def archived(self, account: str | None = None) -> list[ArchivedEnvelope]:
        """Archived envelopes in acceptance order; with ``account``, those to or from it."""
        sql = f"SELECT {_ENVELOPE_COLUMNS}, archived_at, reason FROM archive"
        rows = (
            self._db.execute(sql + " ORDER BY seq")
            if account is None
            else self._db.execute(sql + " WHERE account = ?1 OR source_account = ?1 ORDER BY seq", (account,))
        )
        return [
            ArchivedEnvelope(eid, a, d, body, ts, bool(sealed), sa, sd, archived_at=at, reason=why)
            for eid, a, d, body, ts, sealed, sa, sd, at, why in rows
        ]

    # -- metadata ----------------------------------------------------------------------------

    def append_metadata(self, records: Iterable[tuple[MetadataRecord, KindRule]]) -> None:
        """Write records that a policy has already reduced; ``rule`` says append/first/latest."""
        self._write_pending_records()  # in order, and what first/latest look up must be there
        appended: list[tuple[object, ...]] = []
        for record, rule in records:
            values = (record.kind.value, *_metadata_values(record))
            if rule.keep == "all":
                appended.append(values)
                continue
            if appended:  # keep the order of records
                self._db.executemany(_METADATA_INSERT, appended)
                appended = []
            # The kind as a literal (an enum value), so that SQLite may use the kind's own index.
            where = f"kind = '{record.kind.value}' AND " + " AND ".join(f"{k} IS ?" for k in rule.key)
            params = tuple(getattr(record, k) for k in rule.key)
            self._key_index(record.kind, rule.key)
            if rule.keep == "first":
                if self._db.execute(f"SELECT 1 FROM metadata WHERE {where} LIMIT 1", params).fetchone():
                    continue
            else:
                self._db.execute(f"DELETE FROM metadata WHERE {where}", params)
            self._db.execute(_METADATA_INSERT, values)
        if appended:
            self._db.executemany(_METADATA_INSERT, appended)
        self._metadata_seq = 0  # rows given the next seqs by SQLite: read the last one again

    def _key_index(self, kind: RecordKind, key: tuple[str, ...], columns: tuple[str, ...] = ()) -> None:
        """Make sure the records of ``kind`` have an index by ``key`` (for a rule that keeps one record
        per key; ``("time",)`` for the retention sweep): ``metadata_<kind>_by_<key>``, on ``columns``
        (by default the key's), over that kind's records alone. Made once per file (it stays in it);
        made again if the transaction that made it is rolled back."""
        name = f"metadata_{kind.value}_by_{'_'.join(key)}"
        if name in self._key_indexes:
            return
        # Names and columns from RecordKind values and MetadataRecord fields (KindRule.check).
        self._db.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON metadata ({', '.join(columns or key)}) "
            f"WHERE kind = '{kind.value}'"
        )
        self._key_indexes[name] = True
        self._touched(self._key_indexes, name)

    def append_records(self, records: Sequence[MetadataRecord]) -> None:
        """Append records whole, in order: what :meth:`append_metadata` does with rules that keep
        every field of every record (``RetentionPolicy.appended_whole``), without a rule to ask.
        Inside a transaction they are written when it commits (or something reads the metadata)."""
        seq = self._metadata_seq
        if not seq:  # (nothing waits to be written then: see _metadata_seq)
            (last,) = self._db.execute("SELECT max(seq) FROM metadata").fetchone()
            seq = 1 if last is None else last + 1
        inserts = _KIND_INSERTS
        rows = []
        for r in records:
            sql, never, nones, carried, with_id = inserts[r.kind]
            if never(r) == nones:
                if with_id:  # (bound as a bytearray: see _blob)
                    envelope_id = r.envelope_id
                    rows.append((sql, seq, *carried(r), None if envelope_id is None else _blob(envelope_id)))
                else:
                    rows.append((sql, seq, *carried(r)))
            else:  # a field its kind never carries: written as it is all the same
                rows.append((_METADATA_INSERT_SEQ, seq, r.kind.value, *_metadata_values(r)))
            seq += 1
        self._metadata_seq = seq
        self._metadata_rows.add(rows)
        if not self._depth:
            self._write_pending_records()

    def _write_pending_records(self) -> None:
        """Write the metadata rows still waiting (in order, after every row written before)."""
        self._metadata_rows.write(self._db, self._depth)

    def _write_pending(self) -> None:
        """Write every row still waiting (the transaction commits)."""
        self._envelope_rows.write(self._db, self._depth)
        self._metadata_rows.write(self._db, self._depth)

    def _drop_records(self) -> None:
        """The transaction rolled back: the rows waiting are not written, and it is whole again."""
        self._metadata_rows.drop()
        self._metadata_seq = 0
        self._envelope_rows.drop()
        self._broken = False

    def _check_not_broken(self) -> None:
        if self._broken:
            raise StoreError(
                "a part of this transaction failed after writing, without a savepoint to undo it: "
                "the whole transaction is rolled back"
            )

    def metadata(self, kind: RecordKind | None = None) -> list[MetadataRecord]:
        """The records kept, oldest first (what a compelled provider could hand over)."""
        self._write_pending_records()
        sql = f"SELECT {_METADATA_COLUMNS} FROM metadata"
        rows = (
            self._db.execute(sql + " ORDER BY seq")
            if kind is None
            else self._db.execute(sql + f" WHERE {_kind_term(RecordKind(kind))} ORDER BY seq")
        )
        return [MetadataRecord(RecordKind(r[0]), *r[1:]) for r in rows]

    def expire_metadata(
        self, now: float, policy: RetentionPolicy, exempt: Mapping[str, float] | None = None
    ) -> int:
        """Delete records older than their kind's ``keep_for``; returns how many. ``exempt`` maps a
        preserved account to the time its preservation froze what was held: records naming it (as
        ``account`` or ``recipient_account``) made up to then stay; later ones expire as usual."""
        self._write_pending_records()
        spare = ""
        spared: list[object] = []
        for account, until in sorted((exempt or {}).items()):
            spare += " AND NOT ((account IS ? OR recipient_account IS ?) AND time <= ?)"
            spared += [account, account, until]
        deleted = 0
        for kind, rule in policy.rules.items():
            if rule.keep_for is not None:
                if kind in _PER_ENVELOPE_KINDS:
                    self._key_index(kind, ("time",), ("kind", "time"))  # the kind's own (v12)
                cursor = self._db.execute(
                    f"DELETE FROM metadata WHERE {_kind_term(kind)} AND time < ?" + spare,
                    (now - rule.keep_for, *spared),
                )
                deleted += cursor.rowcount
        return deleted

    # -- intercepts: what taps collected -----------------------------------------------------

    def append_intercepts(self, rows: Iterable[tuple[str, MetadataRecord, bytes | None]]) -> None:
        """Write (tap id, whole record, body or None) rows, in order."""
        self._db.executemany(
            _INTERCEPT_INSERT,
            [(tap_id, record.kind.value, *_metadata_values(record), body) for tap_id, record, body in rows],
        )

    def intercepts(self, tap_id: str) -> list[tuple[MetadataRecord, bytes | None]]:
        """What the tap collected, in order: each record with its envelope body (content taps)."""
        rows = self._db.execute(
            f"SELECT {_METADATA_COLUMNS}, body FROM intercepts WHERE tap_id = ? ORDER BY seq", (tap_id,)
        )
        return [
            (MetadataRecord(RecordKind(r[0]), *r[1:-1]), None if r[-1] is None else bytes(r[-1]))
            for r in rows
        ]

    # -- address books -----------------------------------------------------------------------

    def set_contacts(self, account: str, contacts: Iterable[str]) -> None:
        """Replace ``account``'s uploaded address book."""
        self._db.execute("DELETE FROM contacts WHERE account = ?", (account,))
        self._db.executemany(
            "INSERT OR IGNORE INTO contacts (account, contact) VALUES (?, ?)",
            [(account, c) for c in contacts],
        )

    def contacts_of(self, account: str) -> list[str]:
        rows = self._db.execute("SELECT contact FROM contacts WHERE account = ? ORDER BY contact", (account,))
        return [r[0] for r in rows]

    def reverse_contacts(self, account: str) -> list[str]:
        """The accounts whose uploaded address book contains ``account``."""
        rows = self._db.execute("SELECT account FROM contacts WHERE contact = ? ORDER BY account", (account,))
        return [r[0] for r in rows]

    # -- blocks ------------------------------------------------------------------------------

    def add_block(self, account: str, blocked: str, time: float) -> None:
        """``account`` blocks ``blocked``; blocking again keeps the time of the first block."""
        self._db.execute(
            "INSERT OR IGNORE INTO blocks (account, blocked, time) VALUES (?, ?, ?)", (account, blocked, time)
        )

    def remove_block(self, account: str, blocked: str) -> bool:
        """Returns whether there was such a block."""
        cursor = self._db.execute("DELETE FROM blocks WHERE account = ? AND blocked = ?", (account, blocked))
        return cursor.rowcount > 0

    def blocks_of(self, account: str) -> list[tuple[str, float]]:
        """(blocked account, since when) for every account ``account`` blocks, oldest first."""
        rows = self._db.execute(
            "SELECT blocked, time FROM blocks WHERE account = ? ORDER BY time, blocked", (account,)
        )
        return [(r[0], r[1]) for r in rows]

    def blockers_of(self, account: str) -> list[tuple[str, float]]:
        """(blocking account, since when) for every account that blocks ``account``, oldest first.

        A scan of ``blocks`` (its key is (account, blocked); no index by ``blocked``), on purpose: only
        the compliance desk asks (relay.compliance, "blocked_users"), once per disclosure and from its
        own connection to the file, never the relay's sends (a send checks the blocks the core holds in
        memory). ~58 ms for 1,000,000 blocks (measured 2026-12-04); an index would be written on every
        block to save that once per legal request."""
        rows = self._db.execute(
            "SELECT account, time FROM blocks WHERE blocked = ? ORDER BY time, account", (account,)
        )
        return [(r[0], r[1]) for r in rows]

    def all_blocks(self) -> list[tuple[str, str, float]]:
        """(account, blocked, time) for every block kept (what a relay loads when it starts)."""
        return [(r[0], r[1], r[2]) for r in self._db.execute("SELECT account, blocked, time FROM blocks")]

    # -- orders in effect: taps and preservations ------------------------------------------------

    def save_tap(self, tap_id: str, target: str | None, start: float, end: float, content: bool) -> None:
        self._db.execute(
            "INSERT INTO taps (id, target, start_time, end_time, content) VALUES (?, ?, ?, ?, ?)",
            (tap_id, target, start, end, int(content)),
        )

    def delete_tap(self, tap_id: str) -> None:
        self._db.execute("DELETE FROM taps WHERE id = ?", (tap_id,))

    def taps(self) -> list[tuple[str, str | None, float, float, bool]]:
        """(id, target, start, end, content) of every tap in place, by id (what a relay loads at start)."""
        rows = self._db.execute("SELECT id, target, start_time, end_time, content FROM taps ORDER BY id")
        return [(r[0], r[1], float(r[2]), float(r[3]), bool(r[4])) for r in rows]

    def add_preservation(self, account: str, served: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO preservations (account, served) VALUES (?, ?)", (account, served)
        )

    def preservations(self) -> list[tuple[str, float]]:
        """(account, served) of every preservation request, in order of service."""
        rows = self._db.execute("SELECT account, served FROM preservations ORDER BY served, account")
        return [(r[0], float(r[1])) for r in rows]

    # -- groups: server-side membership, and encrypted group state ------------------------------

    def create_group(self, group: bytes, created_by: str, created_at: float) -> None:
        self._db.execute(
            "INSERT INTO groups (id, created_by, created_at, epoch) VALUES (?, ?, ?, 0)",
            (group, created_by, created_at),
        )

    def group_created(self, group: bytes) -> tuple[str, float] | None:
        """(who created the group, when), or None if the relay holds no such group."""
        row = self._db.execute("SELECT created_by, created_at FROM groups WHERE id = ?", (group,)).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def group_epoch(self, group: bytes) -> int | None:
        """The group's membership epoch, or None if the relay holds no such group."""
        row = self._db.execute("SELECT epoch FROM groups WHERE id = ?", (group,)).fetchone()
        return None if row is None else int(row[0])

    def bump_group_epoch(self, group: bytes) -> int:
        self._db.execute("UPDATE groups SET epoch = epoch + 1 WHERE id = ?", (group,))
        epoch = self.group_epoch(group)
        assert epoch is not None
        return epoch

    def put_group_member(self, m: GroupMemberRecord) -> None:
        """Add a member (an existing one keeps when it was added; ``admin`` is updated)."""
        self._db.execute(
            "INSERT INTO group_members (group_id, account, admin, added_at, added_by) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (group_id, account) DO UPDATE SET admin = excluded.admin",
            (m.group, m.account, int(m.admin), m.added_at, m.added_by),
        )

    def remove_group_member(self, group: bytes, account: str) -> bool:
        """Forget a member (nothing of its membership is kept). Returns whether it was one."""
        cursor = self._db.execute(
            "DELETE FROM group_members WHERE group_id = ? AND account = ?", (group, account)
        )
        return cursor.rowcount > 0

    def group_members(self, group: bytes) -> list[GroupMemberRecord]:
        rows = self._db.execute(
            "SELECT group_id, account, admin, added_at, added_by FROM group_members WHERE group_id = ? "
            "ORDER BY account",
            (group,),
        )
        return [GroupMemberRecord(bytes(r[0]), r[1], bool(r[2]), float(r[3]), r[4]) for r in rows]

    def group_standing(self, group: bytes, account: str) -> tuple[int, bool]:
        """How many members the group has if ``account`` is one of them, else 0, and whether ``account``
        is an admin of it: one look-up of its key, then (for a member) one pass over the group's keys,
        no member record built (what a request is priced and checked by before its members are read)."""
        row = self._db.execute(
            "SELECT (SELECT COUNT(*) FROM group_members WHERE group_id = ?1), admin FROM group_members "
            "WHERE group_id = ?1 AND account = ?2",
            (group, account),
        ).fetchone()
        return (0, False) if row is None else (int(row[0]), bool(row[1]))

    def groups_of(self, account: str) -> list[bytes]:
        """The groups ``account`` is a member of, by id."""
        rows = self._db.execute(
            "SELECT group_id FROM group_members WHERE account = ? ORDER BY group_id", (account,)
        )
        return [bytes(r[0]) for r in rows]

    def group_count(self) -> int:
        """How many groups the relay holds the membership of."""
        return int(self._db.execute("SELECT COUNT(*) FROM groups").fetchone()[0])

    def put_group_state(self, group: bytes, version: int, state: bytes, write_keys: Sequence[bytes]) -> None:
        """Store ``version`` of a group's encrypted state and the write keys (sorted, 32 bytes each)
        that may sign its next version."""
        self._db.execute(
            "INSERT INTO group_states (id, version, state, write_keys) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, state = excluded.state, "
            "write_keys = excluded.write_keys",
            (group, version, state, b"".join(write_keys)),
        )

    def group_write_keys(self, group: bytes) -> tuple[int, tuple[bytes, ...] | None] | None:
        """(version, write keys in sorted order) of a group's stored state, or None if none is
        stored; the keys are None for a state stored before keys were (schema v14)."""
        row = self._db.execute(
            "SELECT version, write_keys FROM group_states WHERE id = ?", (group,)
        ).fetchone()
        if row is None:
            return None
        if row[1] is None:
            return int(row[0]), None
        raw = bytes(row[1])
        return int(row[0]), tuple(raw[i : i + 32] for i in range(0, len(raw), 32))

    def group_write_key_count(self) -> int:
        """How many write keys (one per member of each group, naming no one) the held states have."""
        (n,) = self._db.execute("SELECT COALESCE(SUM(LENGTH(write_keys)), 0) FROM group_states").fetchone()
        return int(n) // 32

    def group_state(self, group: bytes) -> tuple[int, bytes] | None:
        """(version, encrypted state) of a group whose state the clients keep here, or None."""
        row = self._db.execute("SELECT version, state FROM group_states WHERE id = ?", (group,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def group_states(self) -> list[tuple[bytes, int, bytes]]:
        """(group id, version, encrypted state) of every group state held."""
        rows = self._db.execute("SELECT id, version, state FROM group_states ORDER BY id")
        return [(bytes(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    # -- key transparency: the log's leaves -------------------------------------------------------

    def append_key_log(self, index: int, leaf: bytes) -> None:
        """Store leaf ``index`` of the key-transparency log (it must be the next one)."""
        (count,) = self._db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM key_log").fetchone()
        if index != count:
            raise ValueError(f"key log: leaf {index} appended to a log of {count} leaves")
        self._db.execute("INSERT INTO key_log VALUES (?, ?)", (index, leaf))

    def key_log(self) -> list[bytes]:
        """Every leaf of the key-transparency log, in order."""
        return [bytes(r[0]) for r in self._db.execute("SELECT leaf FROM key_log ORDER BY idx")]

    def key_log_head_time(self) -> int:
        """The latest timestamp signed into a key-log tree head (``note_key_log_head_time``); 0 if none is
        recorded (no head signed yet, or only before schema v16)."""
        row = self._db.execute("SELECT signed_at FROM key_log_head_time WHERE id = 0").fetchone()
        return 0 if row is None else int(row[0])

    def note_key_log_head_time(self, timestamp: int) -> None:
        """Record ``timestamp`` as signed into a tree head, unless a later one is recorded already."""
        self._db.execute(
            "INSERT INTO key_log_head_time (id, signed_at) VALUES (0, ?) "
            "ON CONFLICT (id) DO UPDATE SET signed_at = MAX(signed_at, excluded.signed_at)",
            (timestamp,),
        )

    # -- the relay's own keys ----------------------------------------------------------------

    def server_identity(self) -> tuple[bytes, bytes, bytes] | None:
        """(server private key, encoded server certificate, trust root public key), if saved."""
        row = self._db.execute(
            "SELECT server_private, server_certificate, trust_root_public FROM server_identity "
            "ORDER BY key_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), bytes(row[2]))

    def save_server_identity(
        self, key_id: int, server_private: bytes, server_certificate: bytes, trust_root_public: bytes
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO server_identity VALUES (?, ?, ?, ?)",
            (key_id, server_private, server_certificate, trust_root_public),
        )
