"""relay.store: schema versioning and migrations, durability settings, queues, metadata columns."""

from __future__ import annotations

import dataclasses
import os
import random
import sqlite3
from pathlib import Path

import pytest

from relaysim.relay import store as store_module
from relaysim.relay.metadata import (
    KEEP_EVERYTHING,
    METADATA_FIELDS,
    KindRule,
    MetadataRecord,
    RecordKind,
    RetentionPolicy,
)
from relaysim.relay.store import SCHEMA_VERSION, DeviceRecord, Store, StoredEnvelope, StoreError
from relaysim.relay.wire import KemPrekey, Prekey, SignedPrekey


def _envelope(n: int, account: str = "bob", device: int = 1, body: bytes = b"x") -> StoredEnvelope:
    return StoredEnvelope(n.to_bytes(16, "big"), account, device, body, 1000 + n, False, "alice", 1)


def test_a_new_database_is_at_the_latest_version_with_every_table(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == len(store_module.MIGRATIONS)
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "accounts",
        "devices",
        "prekeys",
        "kem_prekeys",
        "envelopes",
        "metadata",
        "delivery_tokens",
    } <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_metadata_has_one_column_per_record_field(tmp_path: Path) -> None:
    with Store(tmp_path / "relay.db") as store:
        columns = [r[1] for r in store._db.execute("PRAGMA table_info(metadata)")]
    assert columns == ["seq", "kind", *METADATA_FIELDS]


def test_durability_settings(tmp_path: Path) -> None:
    with Store(tmp_path / "relay.db") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_migrations_run_in_order_once_and_a_newer_schema_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    Store(path).close()
    ran: list[int] = []
    latest = len(store_module.MIGRATIONS)

    def next_step(db: sqlite3.Connection) -> None:
        ran.append(latest + 1)
        db.execute("ALTER TABLE accounts ADD COLUMN note TEXT")

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, next_step])
    with Store(path) as store:
        assert store.schema_version == latest + 1
        assert "note" in [r[1] for r in store._db.execute("PRAGMA table_info(accounts)")]
    Store(path).close()
    assert ran == [latest + 1]  # not again
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:latest])
    with pytest.raises(StoreError, match=f"schema version {latest + 1} is newer"):
        Store(path)


def test_a_newer_schema_is_refused_without_a_byte_of_the_file_changed(tmp_path: Path) -> None:
    """The check of the version came after ``journal_mode=WAL``, which rewrites the header of a file in
    rollback mode (bytes 18-19): a newer relay's store was changed by the relay that refused it."""
    path = tmp_path / "relay.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE accounts (account TEXT PRIMARY KEY, created_at REAL NOT NULL, region TEXT)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer") as refused:
        Store(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay.db"]


def test_a_newer_schema_is_refused_in_the_same_words_with_or_without_a_store(tmp_path: Path) -> None:
    """relay.store owns the check of a newer schema: refuse_a_newer_schema (for the commands that read
    a run's store without a Store: relaysim analyze, report) says what a Store says, reading only."""
    path = tmp_path / "relay.db"
    Store(path).close()
    store_module.refuse_a_newer_schema(path)  # this version's: passes
    store_module.refuse_a_newer_schema(tmp_path / "absent.db")  # nothing there: for the reader to say
    assert not (tmp_path / "absent.db").exists()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as without:
        store_module.refuse_a_newer_schema(path)
    with pytest.raises(StoreError) as opening:
        Store(path)
    assert str(without.value) == str(opening.value)
    assert str(without.value).startswith(
        f"{path}: written by a newer relaysim: schema version {SCHEMA_VERSION + 1} is newer than this one "
        f"reads (up to {SCHEMA_VERSION})"
    )
    assert path.read_bytes() == before


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """A SQLite file with tables of its own and no schema version (``--db`` naming some other
    program's database) was taken for a new store: the relay's tables were added to it, or, where a
    name was taken ("accounts"), the first migration failed with SQLite's words alone."""
    for table in ("photos", "accounts"):
        path = tmp_path / f"{table}.db"
        db = sqlite3.connect(path)
        db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
        db.commit()
        db.close()
        before = path.read_bytes()
        with pytest.raises(StoreError, match=f"not a relay store .*tables of its own: {table}") as refused:
            Store(path)
        assert str(path) in str(refused.value)
        assert path.read_bytes() == before


@pytest.mark.parametrize("version", [-1, -(2**31)])
def test_the_expected_schema_of_a_negative_version_is_refused_by_itself(version: int) -> None:
    """_expected_schema(-1) read MIGRATIONS[:-1], every step but the last, as version -1's tables:
    its callers guarded against it, it did not. It refuses one itself, naming the version."""
    with pytest.raises(ValueError, match=rf"^schema version {version}: no relaysim's"):
        store_module._expected_schema(version)
    assert "accounts" in store_module._expected_schema(SCHEMA_VERSION)  # (0 and up: read as before)
    assert store_module._expected_schema(0) == {}


@pytest.mark.parametrize("version", [-1, -(2**31)])
@pytest.mark.parametrize("content", ["empty", "notes", "a relay store"])
def test_a_negative_schema_version_is_refused_untouched_as_the_readers_refuse_it(
    tmp_path: Path, version: int, content: str
) -> None:
    """A schema version below 0 is no relaysim's: the readers of a run's store refuse it as no relay
    store (refuse_another_schema), but a Store (``relay serve``) checked it against
    ``_expected_schema(-1)``, that is ``MIGRATIONS[:-1]``, and said "a relay store of schema version
    -1 without its accounts, … tables". It is refused in the readers' words, with the relay's advice,
    the file left as it is."""
    path = tmp_path / "relay.db"
    if content == "a relay store":
        Store(path).close()
    db = sqlite3.connect(path)
    if content == "notes":
        db.execute("CREATE TABLE notes (x)")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as opening:
        Store(path)
    with pytest.raises(StoreError) as reading:
        store_module.refuse_another_schema(path)
    assert (
        str(opening.value)
        == str(reading.value)
        == (
            f"{path}: a SQLite database, but not a relay store (schema version {version}: a relay store's is "
            f"from 1 to {SCHEMA_VERSION}); give the relay a new file, or a store it wrote (the file is left as "
            "it is)"
        )
    )
    assert path.read_bytes() == before


def test_an_empty_file_is_a_new_store(tmp_path: Path) -> None:
    """A file of 0 bytes (``touch relay.db``) holds nothing to lose: SQLite takes it for an empty
    database, and the relay makes its store there."""
    path = tmp_path / "relay.db"
    path.write_bytes(b"")
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("DROP TABLE devices", "schema version .* without its devices table"),
        ("DROP TABLE server_identity", "without its server_identity table"),
        ("ALTER TABLE group_states DROP COLUMN write_keys", "table group_states has no write_keys column"),
        ("ALTER TABLE envelopes DROP COLUMN source_device", "table envelopes has no source_device column"),
    ],
)
def test_a_store_missing_a_table_or_column_is_refused_naming_it(
    tmp_path: Path, change: str, said: str
) -> None:
    """A store of the current version without one of its tables or columns (dropped by hand, a bad
    copy) was opened: a relay then served on it until a request needed it (without ``devices``, every
    registration and send failed), or stopped at start with "internal error" (``server_identity``)."""
    path = tmp_path / "relay.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(change)
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=said) as refused:
        Store(path)
    assert str(path) in str(refused.value) and "damaged or changed by hand" in str(refused.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            "INSERT INTO server_identity VALUES (1, 'abc', x'00', x'00')",
            "server_identity row 1: server_private: expected bytes, got 'abc'",
        ),
        ("INSERT INTO key_log VALUES (0, 5)", "key_log row 0: leaf: expected bytes, got 5"),
        (
            "INSERT INTO key_log_head_time VALUES (0, 'soon')",
            "key_log_head_time row 0: signed_at: expected an integer, got 'soon'",
        ),
    ],
)
def test_rows_a_relay_reads_as_it_starts_are_of_the_types_it_writes(
    tmp_path: Path, change: str, said: str
) -> None:
    """SQLite keeps any value in any column. A leaf that is a number was read as that many zero bytes
    (``bytes(5)``) into the key log; a server key or head time of text stopped the relay with an
    internal error."""
    path = tmp_path / "relay.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(change)
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=said) as refused:
        Store(path)
    assert str(path) in str(refused.value)


def test_files_sqlite_cannot_open_are_refused_saying_what_is_wrong(tmp_path: Path) -> None:
    """SQLite's own words ("file is not a database", "unable to open database file") came out alone,
    as a sqlite3 error: the same for a folder, a missing folder and a read-only one."""
    good = tmp_path / "good.db"
    Store(good).close()
    noise = tmp_path / "noise.db"
    noise.write_bytes(random.Random(1).randbytes(8192))
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100, encoding="utf-8")
    cut = tmp_path / "cut.db"
    cut.write_bytes(good.read_bytes()[:5000])  # mid-page
    folder = tmp_path / "folder.db"
    folder.mkdir()
    cases = [
        (noise, "not a SQLite database"),
        (text, "not a SQLite database"),
        (cut, "a damaged SQLite file"),
        (folder, "a folder, not a database file"),
        (tmp_path / "nowhere" / "relay.db", f"its folder {tmp_path / 'nowhere'} does not exist"),
    ]
    for path, said in cases:
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(StoreError, match=said) as refused:
            Store(path)
        assert str(refused.value).startswith(f"{path}: ")
        if before is not None:
            assert path.read_bytes() == before
    assert not (tmp_path / "nowhere").exists()


def test_a_read_only_store_is_refused_saying_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store on read-only media, or in a folder the relay cannot write its -wal and -shm files to:
    SQLite says "unable to open database file" (or "attempt to write a readonly database"). As root,
    permissions stop nothing; a test can only pretend (os.access) and give SQLite's error."""
    path = tmp_path / "relay.db"
    Store(path).close()
    failed = sqlite3.OperationalError("unable to open database file")
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    assert store_module._explain(str(path), failed).startswith("read-only (unable to open database file)")
    monkeypatch.setattr(os, "access", lambda p, mode: os.path.isfile(p))
    assert f"its folder {tmp_path} is read-only" in store_module._explain(str(path), failed)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a read-only file all the same")
def test_a_read_only_store_is_refused_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "relay.db"
    Store(path).close()
    before = path.read_bytes()
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="read-only") as refused:
            Store(path)
        assert str(path) in str(refused.value)
        assert path.read_bytes() == before
    finally:
        folder.chmod(0o755)


def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    Store(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE accounts ADD COLUMN half TEXT")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "half" not in [r[1] for r in db.execute("PRAGMA table_info(accounts)")]


def test_v9_the_metadata_table_without_autoincrement_keeps_every_record_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:8])  # a relay of schema v8
    records = [
        MetadataRecord(RecordKind.CONNECTION, time=1.0, connection=1, host="10.0.0.1", port=5),
        MetadataRecord(RecordKind.SEND, time=2.0, account="alice", recipient_account="bob", size=10),
        MetadataRecord(RecordKind.CONNECTION, time=3.0, connection=2),
    ]
    with Store(path) as store, store.transaction():
        store.append_metadata((r, KEEP_EVERYTHING.rules[r.kind]) for r in records)
    monkeypatch.undo()
    with Store(path) as store:
        assert store.schema_version == store_module.SCHEMA_VERSION
        assert store.metadata() == records  # every column, in the order recorded
        assert store.metadata(RecordKind.CONNECTION) == [records[0], records[2]]
        (sql,) = store._db.execute("SELECT sql FROM sqlite_master WHERE name = 'metadata'").fetchone()
        assert "AUTOINCREMENT" not in sql.upper()  # no sqlite_sequence update per insert
        assert store._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'metadata_by_kind_time'"
        ).fetchone()
        with store.transaction():
            store.append_metadata([(records[1], KEEP_EVERYTHING.rules[RecordKind.SEND])])
        assert store.metadata() == [*records, records[1]]


def test_a_record_kept_once_per_account_is_found_by_index_not_by_a_scan() -> None:
    # "latest" (last connection) and "first" (account creation) look up the account's earlier record
    # on every write: with one row per account, a scan costs a row per account on every login.
    from relaysim.relay.profiles import get_profile

    rules = get_profile("signal").policy.rules
    latest = next(k for k, r in rules.items() if r.keep == "latest" and r.key == ("account",))
    with Store(":memory:") as store:
        with store.transaction():
            store.append_metadata(
                (MetadataRecord(latest, time=float(i), account=f"a{i}"), rules[latest]) for i in range(50)
            )
            store.append_metadata([(MetadataRecord(latest, time=99.0, account="a7"), rules[latest])])
        kept = store.metadata(latest)
        assert len(kept) == 50 and [r.time for r in kept if r.account == "a7"] == [99.0]
        plan = " ".join(
            str(row[-1])
            for row in store._db.execute(
                f"EXPLAIN QUERY PLAN DELETE FROM metadata WHERE kind = '{latest.value}' AND account IS ?",
                ("a7",),
            )
        )
        assert f"metadata_{latest.value}_by_account" in plan, plan


# The kinds recorded per envelope: in no index unless a policy expires them (v12).
_PER_ENVELOPE = {RecordKind.SEND, RecordKind.SEALED_SEND, RecordKind.DELIVERY, RecordKind.ACKNOWLEDGEMENT}
_TIME_INDEXES = {"metadata_by_kind_time"}


def _plan(store: Store, sql: str, *params: object) -> str:
    return " ".join(str(row[-1]) for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, params))


def _metadata_indexes(store: Store) -> dict[str, str]:
    return dict(
        store._db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'metadata'"
        )
    )


def test_records_kept_whole_are_in_no_index_by_account(tmp_path: Path) -> None:
    # A send, delivery and acknowledgement record is written for every envelope: an index by account
    # would take an insert at a random place for each (a page written per record), and only the
    # lookups of records kept once per key need one. Those kinds get an index of their own, made by
    # the first such lookup; the kinds every record of which is appended are in none.
    from relaysim.relay.profiles import get_profile

    rules = get_profile("signal").policy.rules
    first = next(k for k, r in rules.items() if r.keep == "first" and r.key == ("account",))
    with Store(tmp_path / "relay.db") as store:
        with store.transaction():
            store.append_metadata(
                (MetadataRecord(kind, time=1.0, account="alice"), KEEP_EVERYTHING.rules[kind])
                for kind in (RecordKind.SEND, RecordKind.DELIVERY, RecordKind.ACKNOWLEDGEMENT)
            )
        assert set(_metadata_indexes(store)) == _TIME_INDEXES
        with store.transaction():
            store.append_metadata([(MetadataRecord(first, time=2.0, account="alice"), rules[first])])
            store.append_metadata([(MetadataRecord(first, time=3.0, account="alice"), rules[first])])
        indexes = _metadata_indexes(store)
        assert set(indexes) == {*_TIME_INDEXES, f"metadata_{first.value}_by_account"}
        assert f"WHERE kind = '{first.value}'" in indexes[f"metadata_{first.value}_by_account"]
        assert [r.time for r in store.metadata(first)] == [2.0]
    with Store(tmp_path / "relay.db") as store, store.transaction():  # the index stays with the file
        store.append_metadata([(MetadataRecord(first, time=4.0, account="alice"), rules[first])])
        assert [r.time for r in store.metadata(first)] == [2.0]


def test_records_made_per_envelope_are_in_no_index_and_the_others_in_one_by_kind_and_time(
    tmp_path: Path,
) -> None:
    # Three records per envelope (send, delivery, acknowledgement): one b-tree insert each, not two.
    with Store(tmp_path / "relay.db") as store:
        (sql,) = _metadata_indexes(store).values()
        assert "ON metadata (kind, time)" in sql
        with store.transaction():
            store.append_metadata(
                (MetadataRecord(kind, time=float(i), account="a"), KEEP_EVERYTHING.rules[kind])
                for i, kind in enumerate(RecordKind)
            )
        indexed = store._db.execute(
            "SELECT count(*) FROM metadata INDEXED BY metadata_by_kind_time WHERE "
            + sql.split(" WHERE ", 1)[1]
        ).fetchone()[0]
        assert indexed == len(RecordKind) - len(_PER_ENVELOPE)
        for i, kind in enumerate(RecordKind):  # each kind's records, found with or without the index
            assert [r.time for r in store.metadata(kind)] == [float(i)]
        assert [r.kind for r in store.metadata()] == list(RecordKind)
        # what the store asks of a kind in the index, and of one not in it
        term = store_module._kind_term(RecordKind.BLOCK)
        assert "metadata_by_kind_time" in _plan(store, f"SELECT seq FROM metadata WHERE {term} ORDER BY seq")
        assert "metadata_by_kind_time" in _plan(store, f"DELETE FROM metadata WHERE {term} AND time < ?", 1.0)
        term = store_module._kind_term(RecordKind.SEND)
        assert "SCAN metadata" in _plan(store, f"SELECT seq FROM metadata WHERE {term} ORDER BY seq")


def test_expiring_a_kind_made_per_envelope_gives_it_an_index_by_time(tmp_path: Path) -> None:
    policy = RetentionPolicy(
        "expires-sends",
        {
            RecordKind.SEND: KindRule(frozenset({"time", "account"}), keep_for=10.0),
            RecordKind.DELIVERY: KindRule(frozenset({"time", "account"})),
        },
    )
    with Store(tmp_path / "relay.db") as store:
        with store.transaction():
            store.append_metadata(
                (MetadataRecord(kind, time=float(t), account="a"), policy.rules[kind])
                for t in range(20)
                for kind in (RecordKind.SEND, RecordKind.DELIVERY)
            )
        assert "metadata_send_by_time" not in _metadata_indexes(store)
        with store.transaction():
            assert store.expire_metadata(25.0, policy) == 15
        assert "metadata_send_by_time" in _metadata_indexes(store)
        assert [r.time for r in store.metadata(RecordKind.SEND)] == [15.0, 16.0, 17.0, 18.0, 19.0]
        assert len(store.metadata(RecordKind.DELIVERY)) == 20
        assert "metadata_delivery_by_time" not in _metadata_indexes(store)


def test_a_rolled_back_index_is_made_again(tmp_path: Path) -> None:
    rule = KindRule(frozenset({"time", "account"}), keep="latest", key=("account",))
    kind = RecordKind.AUTHENTICATION
    with Store(tmp_path / "relay.db") as store:
        with store.transaction():
            with pytest.raises(RuntimeError), store.transaction():
                store.append_metadata([(MetadataRecord(kind, time=1.0, account="a"), rule)])
                raise RuntimeError("refused")
            assert f"metadata_{kind.value}_by_account" not in _metadata_indexes(store)
            store.append_metadata([(MetadataRecord(kind, time=2.0, account="a"), rule)])
            store.append_metadata([(MetadataRecord(kind, time=3.0, account="a"), rule)])
        assert f"metadata_{kind.value}_by_account" in _metadata_indexes(store)
        assert [r.time for r in store.metadata(kind)] == [3.0]


def test_v11_a_v10_database_loses_the_index_by_kind_and_account_and_keeps_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    rule = KindRule(frozenset({"time", "account"}), keep="latest", key=("account",))
    kind = RecordKind.AUTHENTICATION
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:10])
    with Store(path) as store, store.transaction():
        store.append_metadata(
            (MetadataRecord(kind, time=float(i), account=f"a{i % 3}"), rule) for i in range(6)
        )
        store.append_metadata(
            [
                (
                    MetadataRecord(RecordKind.SEND, time=9.0, account="a0"),
                    KEEP_EVERYTHING.rules[RecordKind.SEND],
                )
            ]
        )
    monkeypatch.undo()
    with Store(path) as store:
        assert "metadata_by_kind_account" not in _metadata_indexes(store)
        with store.transaction():
            store.append_metadata([(MetadataRecord(kind, time=10.0, account="a1"), rule)])
        assert [(r.account, r.time) for r in store.metadata(kind)] == [("a0", 3.0), ("a2", 5.0), ("a1", 10.0)]
        assert len(store.metadata(RecordKind.SEND)) == 1


def test_deferred_syncs_a_group_is_durable_at_sync_every_other_transaction_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not Store(":memory:").defer_syncs()  # nothing to sync
    assert not Store(tmp_path / "volatile.db", durable=False).defer_syncs()
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    with Store(tmp_path / "relay.db") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.defer_syncs()
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the WAL synced by us
        wal = os.stat(str(tmp_path / "relay.db") + "-wal").st_ino
        assert os.fstat(store._wal_fd).st_ino == wal
        synced.clear()
        with store.transaction():
            store.create_account("alice", 1.0)
        assert synced == [store._wal_fd]  # an ordinary transaction: durable when it returns
        store.begin_group()
        store.create_account("bob", 2.0)
        store.commit_group()
        assert synced == [store._wal_fd]  # a group: written, not synced
        store.sync()
        assert synced == [store._wal_fd] * 2
        store.begin_group()
        store.create_account("carol", 3.0)
        store.abort_group()
    with Store(tmp_path / "relay.db") as store:
        assert [store.account_exists(a) for a in ("alice", "bob", "carol")] == [True, True, False]


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as store, store.transaction():
        store.create_account("bob", 1.0)
        store.enqueue([_envelope(1), _envelope(2)])
    with Store(path) as store:
        assert store.account_exists("bob")
        assert [e.id for e in store.all_envelopes()] == [_envelope(1).id, _envelope(2).id]


def test_a_transaction_that_raises_writes_nothing() -> None:
    store = Store()
    with pytest.raises(ZeroDivisionError), store.transaction():
        store.enqueue([_envelope(1)])
        with store.transaction():  # nested: joins the outer one
            store.create_account("bob", 1.0)
        1 / 0  # noqa: B018
    assert store.all_envelopes() == [] and not store.account_exists("bob")


def test_queues_are_per_device_ordered_and_budgeted() -> None:
    store = Store()
    store.enqueue([_envelope(i, device=1 + i % 2, body=bytes(100)) for i in range(10)])
    got, more = store.queued("bob", 1, limit=100, max_bytes=10**6)
    assert [int.from_bytes(e.id, "big") for e in got] == [0, 2, 4, 6, 8] and not more
    got, more = store.queued("bob", 1, limit=2, max_bytes=10**6)
    assert len(got) == 2 and more
    # 100-byte bodies + 5-byte source account + 10 overhead = 115 each: three fit in 345.
    got, more = store.queued("bob", 1, limit=100, max_bytes=345, overhead=10)
    assert len(got) == 3 and more
    got, more = store.queued("bob", 1, limit=100, max_bytes=1, overhead=10)
    assert len(got) == 1 and more  # always at least one


def test_deleting_touches_only_the_named_devices_queue() -> None:
    store = Store()
    store.enqueue([_envelope(1, device=1), _envelope(2, device=2), _envelope(3, account="carol")])
    ids = [_envelope(n).id for n in (1, 2, 3)]
    assert store.delete_envelopes("bob", 2, ids) == 1
    assert [int.from_bytes(e.id, "big") for e in store.all_envelopes()] == [1, 3]
    assert store.delete_envelopes("bob", 2, ids) == 0


@pytest.mark.parametrize("size_known", [False, True])
def test_a_deletion_and_an_archiving_name_the_ids_they_took_out_of_the_queue(size_known: bool) -> None:
    # The relay records an acknowledgement for these alone: each id taken out of the device's own
    # queue, once — not one never queued, another device's, already gone or named twice. Whether
    # or not the queue's size is known (two ways to delete), and for an envelope still waiting.
    store = Store()
    store.enqueue([_envelope(n) for n in (1, 2, 3, 4)] + [_envelope(5, device=2)])
    if size_known:
        assert store.queue_size("bob", 1) == (4, 4)
    with store.transaction():
        store.enqueue([_envelope(6)])  # waiting, not in the file yet
        ids = [_envelope(n).id for n in (9, 6, 1, 5, 1, 2, 8)]
        removed: list[bytes] = []
        assert store.delete_envelopes("bob", 1, ids, removed=removed) == 3
        assert removed == [_envelope(n).id for n in (6, 1, 2)]
        removed = []
        assert store.delete_envelopes("bob", 1, ids, removed=removed) == 0 and removed == []
        moved: list[bytes] = []
        ids = [_envelope(n).id for n in (4, 1, 5, 4, 3)]
        assert store.archive_envelopes("bob", 1, ids, archived_at=9.0, reason="kept", moved=moved) == 2
        assert moved == [_envelope(n).id for n in (4, 3)]
    assert [int.from_bytes(e.id, "big") for e in store.all_envelopes()] == [5]


def test_one_time_prekeys_are_taken_lowest_first_and_only_once() -> None:
    store = Store()
    store.replace_prekeys("bob", 1, [Prekey(5, bytes(32)), Prekey(2, bytes(32))])
    store.replace_kem_prekeys("bob", 1, [KemPrekey(7, bytes(1568), bytes(64))])
    assert store.prekey_counts("bob", 1) == (2, 1)
    assert store.prekeys_left("bob", 1) == 2 and store.prekeys_left("bob", 2) == 0
    assert [store.take_prekey("bob", 1) for _ in range(3)] == [
        Prekey(2, bytes(32)),
        Prekey(5, bytes(32)),
        None,
    ]
    assert store.prekeys_left("bob", 1) == 0 and store.prekey_counts("bob", 1) == (0, 1)
    assert store.take_kem_prekey("bob", 1) == KemPrekey(7, bytes(1568), bytes(64))
    assert store.take_kem_prekey("bob", 1) is None
    assert store.take_prekey("bob", 2) is None


def test_metadata_keep_modes() -> None:
    store = Store()
    first = KindRule(fields=frozenset({"time", "account"}), keep="first", key=("account",))
    latest = dataclasses.replace(first, keep="latest")
    for t in (1.0, 2.0, 3.0):
        store.append_metadata([(MetadataRecord(RecordKind.REGISTRATION, time=t, account="a"), first)])
        store.append_metadata([(MetadataRecord(RecordKind.AUTHENTICATION, time=t, account="a"), latest)])
        store.append_metadata([(MetadataRecord(RecordKind.AUTHENTICATION, time=t, account="b"), latest)])
    assert [(r.kind, r.account, r.time) for r in store.metadata()] == [
        (RecordKind.REGISTRATION, "a", 1.0),
        (RecordKind.AUTHENTICATION, "a", 3.0),
        (RecordKind.AUTHENTICATION, "b", 3.0),
    ]
    assert [r.account for r in store.metadata(RecordKind.AUTHENTICATION)] == ["a", "b"]


def test_a_simulation_store_does_not_wait_for_the_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from relaysim.relay.store import Store

    durable = Store(tmp_path / "a.db")
    fast = Store(tmp_path / "b.db", durable=False)
    assert durable._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert fast._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF
    durable.close()
    fast.close()


def test_a_failed_nested_transaction_undoes_only_its_own_writes() -> None:
    from relaysim.relay.store import Store

    store = Store()
    with store.transaction():
        store.create_account("kept", 1.0)
        try:
            with store.transaction():
                store.create_account("undone", 2.0)
                raise RuntimeError("refused")
        except RuntimeError:
            pass
        store.create_account("also-kept", 3.0)
    assert store.account_exists("kept") and store.account_exists("also-kept")
    assert not store.account_exists("undone")


# --- what the relay asks on every send, answered from memory and kept right ------------------------


def _statements(store: Store) -> list[str]:
    """Every SQL statement the store runs from now on (sqlite3's trace callback)."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def _true_queue_size(store: Store, account: str, device: int) -> tuple[int, int]:
    store._write_pending_envelopes()  # what waits for the commit is queued too
    count, size = store._db.execute(
        "SELECT count(*), coalesce(sum(length(body)), 0) FROM envelopes WHERE account = ? AND device = ?",
        (account, device),
    ).fetchone()
    return count, size


def test_queue_size_is_counted_once_then_kept_by_every_write_and_rollback() -> None:
    store = Store()
    store.enqueue([_envelope(n, body=bytes(n)) for n in range(1, 6)])  # before anyone asked
    assert store.queue_size("bob", 1) == (5, 15)
    statements = _statements(store)
    assert store.queue_size("bob", 1) == (5, 15)
    assert statements == []  # the second time, no query: the relay asks on every send
    with store.transaction():
        store.enqueue([_envelope(10, body=bytes(100))])
        assert store.delete_envelopes("bob", 1, [(1).to_bytes(16, "big"), b"no such id".ljust(16)]) == 1
    assert not any("count(" in s for s in statements)
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (5, 114)
    # A rolled-back write, in a savepoint or the whole transaction, leaves the count as the file has it.
    with store.transaction():
        store.enqueue([_envelope(11, body=bytes(7))])
        with pytest.raises(RuntimeError), store.transaction():
            store.enqueue([_envelope(12, body=bytes(9))])
            store.delete_envelopes("bob", 1, [(2).to_bytes(16, "big")])
            raise RuntimeError("refused")
        assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (6, 121)
    with pytest.raises(RuntimeError), store.transaction():
        store.enqueue([_envelope(13, body=bytes(50))])
        raise RuntimeError("refused")
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (6, 121)
    moved = store.archive_envelopes("bob", 1, [(3).to_bytes(16, "big")], archived_at=9.0, reason="kept")
    assert moved == 1
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (5, 118)
    assert store.queue_size("carol", 1) == (0, 0)


def _device(account: str, device: int, registration_id: int) -> DeviceRecord:
    return DeviceRecord(
        account,
        device,
        registration_id,
        bytes(32),
        SignedPrekey(1, bytes(32), bytes(64)),
        KemPrekey(2, bytes(1568), bytes(64)),
        1.0,
    )


def test_routing_is_answered_from_memory_and_sees_every_device_written() -> None:
    store = Store()
    store.create_account("bob", 1.0)
    store.put_device(_device("bob", 1, 11))
    assert store.registration_ids("bob") == {1: 11}
    statements = _statements(store)
    route = store.registration_ids("bob")
    assert route == {1: 11} and statements == []  # no query for a send to a known account
    route.pop(1)  # the caller's own copy
    assert store.registration_ids("bob") == {1: 11}
    # A device added straight into the store (a compelled provider's ghost: RelayCore.provision_device)
    # is routed to at once.
    store.put_device(_device("bob", 2, 22))
    assert store.registration_ids("bob") == {1: 11, 2: 22}
    # One added in a transaction that is rolled back is not.
    with pytest.raises(RuntimeError), store.transaction():
        store.put_device(_device("bob", 3, 33))
        assert store.registration_ids("bob") == {1: 11, 2: 22, 3: 33}
        raise RuntimeError("refused")
    assert store.registration_ids("bob") == {1: 11, 2: 22}
    with store.transaction():
        with pytest.raises(RuntimeError), store.transaction():
            store.put_device(_device("bob", 1, 99))  # a re-registration, undone
            assert store.registration_ids("bob")[1] == 99
            raise RuntimeError("refused")
        assert store.registration_ids("bob") == {1: 11, 2: 22}
    assert store.registration_ids("nobody") == {}


# --- metadata rows written once per transaction ---------------------------------------------------


def _rec(n: int, kind: RecordKind = RecordKind.SEND) -> MetadataRecord:
    return MetadataRecord(kind, time=float(n), account="a", size=n)


def _file_rows(path: Path) -> list[tuple[str, float]]:
    """What another connection (a compliance desk reading the file) sees: committed rows."""
    with sqlite3.connect(path) as other:
        return [(k, t) for k, t in other.execute("SELECT kind, time FROM metadata ORDER BY seq")]


def test_records_of_a_transaction_are_written_in_one_statement_at_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    statements = _statements(store)
    store.begin_group()
    for n in range(1, 4):
        with store.transaction():  # a request: its savepoint
            store.append_records([_rec(n)])
    assert not [s for s in statements if "INTO metadata" in s]  # waiting, not yet written
    store.commit_group()
    inserts = [s for s in statements if "INTO metadata" in s]
    commit = statements.index("COMMIT")
    assert len(inserts) == 3 and all(statements.index(s) < commit for s in inserts)  # one executemany
    assert _file_rows(tmp_path / "relay.db") == [("send", 1.0), ("send", 2.0), ("send", 3.0)]
    store.append_records([_rec(4)])  # outside a transaction: written at once
    assert _file_rows(tmp_path / "relay.db")[-1] == ("send", 4.0)
    store.close()


def test_records_of_every_kind_come_back_whole_in_the_order_made_each_kind_with_its_own_columns(
    tmp_path: Path,
) -> None:
    """A transaction's records are inserted kind by kind, each with its seq (its place) and only the
    columns its kind carries (no NULL bound for the others); one that carries a field its kind
    never does is written whole all the same. Read back, they are what was appended, in order,
    and a store opened again on the file goes on after the last of them."""
    path = tmp_path / "relay.db"
    where = {
        "time": 5.0,
        "connection": 7,
        "host": "192.0.2.1",
        "port": 40000,
        "account": "alice",
        "device": 1,
    }
    made = [
        MetadataRecord(
            RecordKind.SEND,
            **where,
            recipient_account="bob",
            recipient_device=2,
            envelope_id=bytes(16),
            size=160,
        ),
        MetadataRecord(
            RecordKind.DELIVERY, **{**where, "account": "bob", "device": 2}, envelope_id=bytes(16), size=160
        ),
        MetadataRecord(RecordKind.CONNECTION, time=6.0, connection=8),
        MetadataRecord(RecordKind.ACKNOWLEDGEMENT, **{**where, "account": "bob"}, envelope_id=bytes(16)),
        MetadataRecord(RecordKind.ACKNOWLEDGEMENT, time=7.0, size=3, count=4),  # fields acks never carry
        MetadataRecord(RecordKind.SEALED_SEND, time=8.0, recipient_account="bob", recipient_device=2, size=1),
        MetadataRecord(RecordKind.SEND, time=9.0),
    ]
    store = Store(path)
    statements = _statements(store)
    store.begin_group()
    for record in made:
        with store.transaction():
            store.append_records([record])
    store.commit_group()
    assert store.metadata() == made
    assert [r.kind for r in store.metadata(RecordKind.ACKNOWLEDGEMENT)] == [RecordKind.ACKNOWLEDGEMENT] * 2
    inserts = [s for s in statements if "INTO metadata" in s]
    assert len(inserts) == len(made)
    acks = sorted(
        s.split("(", 1)[1].split(")", 1)[0].split(", ") for s in inserts if "'acknowledgement'" in s
    )
    assert acks == [
        ["seq", "kind", "time", "connection", "host", "port", "account", "device", "envelope_id"],
        ["seq", "kind", *METADATA_FIELDS],  # the one with a size and a count: every column
    ]
    store.close()
    with Store(path) as again:
        again.append_records([MetadataRecord(RecordKind.CONNECTION, time=10.0)])
        assert again.metadata() == [*made, MetadataRecord(RecordKind.CONNECTION, time=10.0)]
    assert [t for _, t in _file_rows(path)] == [5.0, 5.0, 6.0, 5.0, 7.0, 8.0, 9.0, 10.0]


def test_records_waiting_are_seen_by_every_reader_in_order_and_a_rollback_drops_them() -> None:
    store = Store()
    latest = KindRule(fields=frozenset({"time", "account"}), keep="latest", key=("account",))
    with store.transaction():
        store.append_records([_rec(1)])
        # a "latest" record replaces what is there, the waiting row included, and comes after it
        store.append_metadata([(_rec(2, RecordKind.AUTHENTICATION), latest)])
        store.append_records([_rec(3)])
        assert [r.time for r in store.metadata()] == [1.0, 2.0, 3.0]  # a read inside sees them
        store.append_metadata([(_rec(4, RecordKind.AUTHENTICATION), latest)])
        assert [(r.kind, r.time) for r in store.metadata()] == [
            (RecordKind.SEND, 1.0),
            (RecordKind.SEND, 3.0),
            (RecordKind.AUTHENTICATION, 4.0),
        ]
        store.append_records([_rec(5)])
        assert store.expire_metadata(100.0, KEEP_EVERYTHING) == 0  # sees them too (keeps forever)
    assert [r.time for r in store.metadata()] == [1.0, 3.0, 4.0, 5.0]
    with pytest.raises(RuntimeError), store.transaction():
        store.append_records([_rec(6)])
        raise RuntimeError("refused")
    store.begin_group()
    store.append_records([_rec(7)])
    store.abort_group()
    assert [r.time for r in store.metadata()] == [1.0, 3.0, 4.0, 5.0]


def test_a_refused_request_takes_back_only_its_own_records_even_after_a_read_wrote_them() -> None:
    store = Store()
    with store.transaction():  # a group
        with store.transaction():  # request 1: done, its record waits
            store.append_records([_rec(1)])
        with pytest.raises(RuntimeError), store.transaction():  # request 2, refused after
            store.append_records([_rec(2)])
            assert len(store.metadata()) == 2  # a read: both rows written inside request 2's savepoint
            store.append_records([_rec(3)])
            raise RuntimeError("refused")
        with store.transaction():  # request 3
            with pytest.raises(RuntimeError), store.transaction():  # nested, refused
                store.append_records([_rec(4)])
                store.metadata()
                raise RuntimeError("refused")
            store.append_records([_rec(5)])
    # request 1's record was written inside request 2's savepoint, which rolled back: it is
    # written again at commit, in its place
    assert [r.time for r in store.metadata()] == [1.0, 5.0]


def test_envelopes_queued_in_a_transaction_are_written_at_commit_and_seen_by_every_reader(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "relay.db")
    statements = _statements(store)
    store.begin_group()
    for n in range(1, 4):
        with store.transaction():
            store.enqueue([_envelope(n, body=bytes(n))])
    assert not [s for s in statements if "INTO envelopes" in s]  # waiting
    assert store.queue_size("bob", 1) == (3, 6)  # counted with the waiting ones
    with pytest.raises(RuntimeError), store.transaction():  # a refused request: its envelope goes
        store.enqueue([_envelope(4)])
        raise RuntimeError("refused")
    with store.transaction():
        store.enqueue([_envelope(5)])
        assert [e.id[-1] for e in store.queued("bob", 1, limit=10, max_bytes=1000)[0]] == [1, 2, 3, 5]
    store.commit_group()
    with sqlite3.connect(tmp_path / "relay.db") as other:  # what the file holds
        assert [r[0][-1] for r in other.execute("SELECT id FROM envelopes ORDER BY seq")] == [1, 2, 3, 5]
    # a request that reads the queue (and so writes what waited) and is then refused
    with store.transaction():
        with store.transaction():
            store.enqueue([_envelope(6)])
        with pytest.raises(RuntimeError), store.transaction():
            store.enqueue([_envelope(7)])
            assert store.queue_length("bob", 1) == 6
            raise RuntimeError("refused")
        assert store.delete_envelopes("bob", 1, [_envelope(1).id]) == 1
    assert [e.id[-1] for e in store.all_envelopes()] == [2, 3, 5, 6]
    assert store.queue_size("bob", 1) == (4, 2 + 3 + 1 + 1)
    # a group whose writes fail at commit (an id taken twice) keeps nothing of it
    store.begin_group()
    store.enqueue([_envelope(8)])
    store.enqueue([_envelope(2)])
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_group()
    assert [e.id[-1] for e in store.all_envelopes()] == [2, 3, 5, 6]
    store.close()


# --- a nested part without a savepoint ------------------------------------------------------------


def test_a_part_without_a_savepoint_that_fails_before_writing_leaves_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    statements = _statements(store)
    store.begin_group()
    store.create_account("kept", 1.0)
    assert store.queue_size("bob", 1) == (0, 0)
    with pytest.raises(RuntimeError), store.without_savepoint():
        store.append_records([_rec(1)])  # waiting, not in the file: dropped with the part
        store.enqueue([_envelope(1)])
        assert store.account_exists("kept") and store.queue_size("bob", 1) == (1, 1)
        raise RuntimeError("refused")
    with store.without_savepoint():
        store.append_records([_rec(2)])
        store.enqueue([_envelope(2)])
    store.commit_group()
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
    assert store.account_exists("kept") and _file_rows(tmp_path / "relay.db") == [("send", 2.0)]
    assert [e.id for e in store.all_envelopes()] == [_envelope(2).id] and store.queue_size("bob", 1) == (1, 1)
    store.close()


def test_a_part_without_a_savepoint_that_fails_after_writing_rolls_the_whole_group_back(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "relay.db")
    store.begin_group()
    store.create_account("before", 1.0)
    with pytest.raises(RuntimeError), store.without_savepoint():
        store.create_account("half", 2.0)
        raise RuntimeError("failed after its write")
    store.create_account("after", 3.0)
    with pytest.raises(StoreError, match="rolled back"):
        store.commit_group()
    assert not any(store.account_exists(a) for a in ("before", "half", "after"))
    # the same through transaction(), with a read that wrote the waiting rows; the store goes on
    with pytest.raises(StoreError), store.transaction():
        store.enqueue([_envelope(1)])
        with pytest.raises(RuntimeError), store.without_savepoint():
            store.enqueue([_envelope(2)])
            assert len(store.all_envelopes()) == 2  # a read: both are in the file now
            raise RuntimeError("failed after its write")
    assert store.all_envelopes() == [] and store.queue_size("bob", 1) == (0, 0)
    with store.transaction():
        store.create_account("next", 4.0)
    store.close()
    with Store(tmp_path / "relay.db") as again:
        assert again.account_exists("next") and not again.account_exists("before")


# --- an envelope acknowledged before its transaction commits --------------------------------------


def _file_envelopes(path: Path) -> list[int]:
    with sqlite3.connect(path) as other:
        return [r[0][-1] for r in other.execute("SELECT id FROM envelopes ORDER BY seq")]


def test_an_envelope_acknowledged_while_waiting_is_never_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    statements = _statements(store)
    store.begin_group()
    with store.without_savepoint():
        store.enqueue([_envelope(1, body=bytes(3)), _envelope(2, body=bytes(5))])
    assert store.queue_size("bob", 1) == (2, 8)
    with store.transaction():
        # only the recipient device's own envelope is taken back; another device's id is not found
        assert store.delete_envelopes("bob", 2, [_envelope(1).id]) == 0
        assert store.delete_envelopes("bob", 1, [_envelope(1).id, _envelope(1).id]) == 1
    assert store.queue_size("bob", 1) == (1, 5)
    assert not [s for s in statements if "INTO envelopes" in s or "DELETE" in s]
    store.commit_group()
    assert _file_envelopes(tmp_path / "relay.db") == [2]
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (1, 5)
    # a mix: one in the file, one waiting
    with store.transaction():
        store.enqueue([_envelope(3)])
        assert store.delete_envelopes("bob", 1, [_envelope(2).id, _envelope(3).id]) == 2
    assert _file_envelopes(tmp_path / "relay.db") == [] and store.queue_size("bob", 1) == (0, 0)
    store.close()


def test_an_acknowledgement_of_envelopes_in_the_file_leaves_the_waiting_ones_waiting(tmp_path: Path) -> None:
    # Sends and acks interleave in a group: the acks of earlier envelopes delete them from the file
    # without writing the envelopes queued since, which all go in with one executemany at the commit.
    store = Store(tmp_path / "relay.db")
    with store.transaction():
        store.enqueue([_envelope(1), _envelope(2, body=bytes(4))])
    statements = _statements(store)
    store.begin_group()
    with store.without_savepoint():
        store.enqueue([_envelope(3)])
    with store.without_savepoint():
        assert store.delete_envelopes("bob", 1, [_envelope(1).id, _envelope(9).id]) == 1
    with store.without_savepoint():
        store.enqueue([_envelope(4)])
    with store.without_savepoint():
        assert store.delete_envelopes("bob", 1, [_envelope(2).id]) == 1
    assert store.queue_size("bob", 1) == (2, 2)
    assert not [s for s in statements if "INTO envelopes" in s]
    assert len([s for s in statements if "DELETE" in s]) == 3
    store.commit_group()
    assert _file_envelopes(tmp_path / "relay.db") == [3, 4]
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (2, 2)
    store.close()


@pytest.mark.parametrize("part", ["savepoint", "without_savepoint"])
@pytest.mark.parametrize("read_after", [False, True])
def test_a_rolled_back_acknowledgement_puts_the_waiting_envelope_back(
    tmp_path: Path, part: str, read_after: bool
) -> None:
    store = Store(tmp_path / "relay.db")
    store.begin_group()
    store.enqueue([_envelope(1), _envelope(2, body=bytes(4))])
    assert store.queue_size("bob", 1) == (2, 5)
    with pytest.raises(RuntimeError), getattr(store, "transaction" if part == "savepoint" else part)():
        assert store.delete_envelopes("bob", 1, [_envelope(2).id]) == 1
        store.enqueue([_envelope(3)])
        if read_after:  # a read writes what waits (the taken one is not among it)
            assert store.queue_length("bob", 1) == 2
        raise RuntimeError("refused")
    if part == "without_savepoint" and read_after:
        with pytest.raises(StoreError, match="rolled back"):  # it wrote, then failed: all of it goes
            store.commit_group()
        assert _file_envelopes(tmp_path / "relay.db") == []
        store.close()
        return
    assert store.queue_size("bob", 1) == (2, 5)
    with store.transaction():  # taken back again, then the commit writes only envelope 1
        assert store.delete_envelopes("bob", 1, [_envelope(2).id]) == 1
    with pytest.raises(RuntimeError), store.transaction():
        assert store.delete_envelopes("bob", 1, [_envelope(1).id]) == 1
        raise RuntimeError("refused")
    store.commit_group()
    assert _file_envelopes(tmp_path / "relay.db") == [1]
    assert store.queue_size("bob", 1) == _true_queue_size(store, "bob", 1) == (1, 1)
    store.close()


def _devices_with_distinct_keys(n: int) -> list[DeviceRecord]:
    """``n`` devices over a few accounts, each key and signature its own bytes, as a relay holds them."""
    rng = random.Random(13)
    return [
        DeviceRecord(
            f"+1555{i // 3:07d}",
            1 + i % 3,
            rng.randrange(1, 1 << 14),
            rng.randbytes(32),
            SignedPrekey(rng.randrange(1 << 24), rng.randbytes(32), rng.randbytes(64)),
            KemPrekey(rng.randrange(1 << 24), rng.randbytes(1568), rng.randbytes(64)),
            1000.0 + i / 7,
        )
        for i in range(n)
    ]


def _devices_pages(path: Path) -> int:
    """Pages of the file's ``devices`` b-trees (table and index), overflow pages included: the file's
    pages in use with the table minus without it."""
    db = sqlite3.connect(path)
    try:
        used = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        db.execute("DROP TABLE devices")
        left = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        db.rollback()
        return int(used - left)
    finally:
        db.close()


def test_a_device_row_fits_in_its_page_without_overflow(tmp_path: Path) -> None:
    # A device's row carries its last-resort ML-KEM key (1,568 bytes) and signature: in a WITHOUT ROWID
    # table a row over ~1 KB spills to an overflow page of its own (SQLite docs, "Database File Format"
    # 1.6), so 50,000 devices took 57,416 pages. In a rowid table (v13) two rows share a page.
    path = tmp_path / "relay.db"
    devices = _devices_with_distinct_keys(300)
    with Store(path) as store, store.transaction():
        for d in devices:
            store.put_device(d)
    assert _devices_pages(path) < 0.6 * len(devices)  # was 1.15 a device


def test_v13_a_relay_db_of_schema_v12_keeps_every_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    devices = _devices_with_distinct_keys(40)
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:12])  # the relay before v13
        with Store(path) as old, old.transaction():
            for d in devices:
                if d.device == 1:
                    old.create_account(d.account, 1.0)
                old.put_device(d)
            old.put_device(dataclasses.replace(devices[4], registration_id=77))  # replaced: the later one
    devices[4] = dataclasses.replace(devices[4], registration_id=77)
    peek = sqlite3.connect(path)
    assert peek.execute("PRAGMA user_version").fetchone()[0] == 12
    peek.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 16
        accounts = sorted({d.account for d in devices})
        assert [r for a in accounts for r in store.devices(a)] == devices
        assert all(store.device(d.account, d.device) == d for d in devices)
        assert store.registration_ids(devices[4].account)[devices[4].device] == 77
        (sql,) = store._db.execute("SELECT sql FROM sqlite_master WHERE name = 'devices'").fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        with store.transaction():  # and the table takes writes as before
            store.put_device(dataclasses.replace(devices[0], registration_id=5))
        assert store.device(devices[0].account, devices[0].device) == dataclasses.replace(
            devices[0], registration_id=5
        )
    assert _devices_pages(path) < 0.6 * len(devices) + 2


def test_existing_accounts_answers_as_account_exists_does_name_by_name_past_one_chunk() -> None:
    """A contact discovery asks about its whole list in one query (chunked below SQLite's bound on
    parameters): the same answer as one account_exists per name, repeats and absent names included."""
    rng = random.Random(7)
    with Store() as store:
        with store.transaction():
            for i in range(0, 1300, 2):
                store.create_account(f"user{i:04d}", 0.0)
        asked = [f"user{rng.randrange(1400):04d}" for _ in range(store_module._IN_CHUNK * 2 + 37)]
        expected = {a for a in asked if store.account_exists(a)}
        assert 0 < len(expected) < len(set(asked))
        assert store.existing_accounts(asked) == expected
        assert store.existing_accounts(asked[:1]) == expected & {asked[0]}
        assert store.existing_accounts([]) == set()


def test_the_hot_path_caches_hold_as_many_entries_as_the_store_is_given_room_for() -> None:
    with pytest.raises(ValueError, match="cache_entries=0"):
        Store(cache_entries=0)
    for room, asked_again in ((2, True), (3, False)):
        store = Store(cache_entries=room)
        for account in ("a", "b", "c"):
            store.create_account(account, 1.0)
            store.put_device(_device(account, 1, 11))
            assert store.registration_ids(account) == {1: 11}
            assert store.queue_size(account, 1) == (0, 0)
        statements = _statements(store)
        assert store.registration_ids("a") == {1: 11} and store.queue_size("a", 1) == (0, 0)
        # with room for two, the third account's entry started each cache again: "a" is asked again
        assert bool(statements) is asked_again


def test_v16_the_latest_head_time_is_kept_and_never_lowered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v16 keeps the latest time signed into a key-log tree head (relay.core: a restarted relay signs
    none earlier). A store of v15 has its log, and no time: 0."""
    path = tmp_path / "relay.db"
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:15])  # the relay before v16
        with Store(path) as old, old.transaction():
            old.append_key_log(0, b"leaf")
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 16
        assert store.key_log() == [b"leaf"] and store.key_log_head_time() == 0
        with store.transaction():
            store.note_key_log_head_time(1_700_003_600)
            store.note_key_log_head_time(1_700_000_000)  # an earlier one does not lower it
    with Store(path) as store:
        assert store.key_log_head_time() == 1_700_003_600
