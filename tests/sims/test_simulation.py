"""The simulator's headline claims, as properties over generated scenarios.

- Every message is delivered exactly once to every device of its recipient, with identical
  plaintext, or is accounted as lost by the network model.
- The relay never sees plaintext: no run of 8 or more bytes of any plaintext occurs in any frame
  the relay received, any row of its store, the bytes of its SQLite files (the WAL included), or
  any metadata record; no message, chain or root key occurs there either.
- The relay's records carry only the fields its metadata schema declares.
- The same scenario and seed give byte-identical output files.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaysim.clients import groups, spec
from relaysim.clients.agent import MAX_RETRY_RECEIPTS
from relaysim.relay import wire
from relaysim.relay.metadata import METADATA_FIELDS, METADATA_SCHEMA
from relaysim.sims.scenario import (
    PADDING_MODES,
    RECEIPT_MODES,
    Conversation,
    DefenceSpec,
    DeviceSpec,
    GroupChange,
    GroupSpec,
    NetworkSpec,
    Partition,
    PersonSpec,
    RelaySpec,
    Scenario,
    ScriptedMessage,
    TrafficSpec,
)
from relaysim.sims.world.simulation import Simulation

# Plaintexts from an alphabet that cannot spell the protocol's own field names or addresses
# (lower-case ASCII, dots), so that a match in the relay's bytes can only mean a leak.
PLAIN = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !?ÄÖÜßéあいうえお漢字😀"),
    min_size=8,
    max_size=60,
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n_people = draw(st.integers(2, 4))
    people = []
    for i in range(n_people):
        n_dev = draw(st.integers(1, 2))
        devices = []
        for j in range(n_dev):
            offline: tuple[tuple[float, float], ...] = ()
            if draw(st.booleans()):
                start = draw(st.floats(100, 1500))
                offline = ((start, start + draw(st.floats(10, 900))),)
            devices.append(
                DeviceSpec(
                    f"u{i}", j + 1, draw(st.sampled_from(["a", "b"])), f"192.0.2.{i * 4 + j + 1}", offline
                )
            )
        people.append(PersonSpec(f"u{i}", tuple(devices)))
    messages = []
    for _ in range(draw(st.integers(1, 12))):
        s, r = draw(st.permutations(range(n_people)))[:2]
        messages.append(ScriptedMessage(draw(st.floats(60, 2400)), f"u{s}", f"u{r}", draw(PLAIN)))
    partitions = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.floats(60, 2400))
        # "drop" loses what crosses it (accounted as lost); "hold" delivers it when it heals, which
        # is well before the end of the run
        partitions.append(
            Partition(
                (draw(st.sampled_from(["a", "b"])),),
                start,
                start + draw(st.floats(1, 900)),
                draw(st.sampled_from(["drop", "hold"])),
            )
        )
    network = NetworkSpec(
        latency_ms=draw(st.floats(1, 300)),
        jitter_ms=draw(st.floats(0, 200)),
        loss=draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
        duplication=draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
        partitions=tuple(partitions),
    )
    return Scenario(
        name="generated",
        description="",
        duration=4000.0,  # every offline window and message ends well before this
        seed=draw(st.integers(0, 2**31)),
        people=tuple(people),
        conversations=(Conversation(("u0", "u1"), tuple(messages)),),
        network=network,
        relay=RelaySpec(sealed_sender=draw(st.booleans())),
        generate=None,
        events=(),
        # receipts are messages too: every switch must keep exactly-once and no plaintext at the relay
        traffic=TrafficSpec(read_receipts=draw(st.booleans())),
        defences=DefenceSpec(
            receipts=draw(st.sampled_from(RECEIPT_MODES)),
            padding=draw(st.sampled_from(PADDING_MODES)),
            sealed_connection=draw(st.sampled_from(["shared", "fresh"])),
            bundle_fetch=draw(st.sampled_from(["authenticated", "unauthenticated"])),
        ),
    )


def _runs(text: str) -> Iterator[bytes]:
    data = text.encode()
    for i in range(len(data) - 7):
        yield data[i : i + 8]


# The spec's own KDFs, taken once: each example's recorder wraps these, not the previous example's
# wrapper (the monkeypatch is module-scoped, so wrappers would otherwise nest, one per example, until the
# recursion limit — as they did under hypothesis 6.100's longer runs).
_REAL_KDF_RK, _REAL_KDF_CK = spec.kdf_rk, spec.kdf_ck


class KeyRecorder:
    """Records every root, chain and message key the devices derive, by wrapping the spec's KDFs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[bytes] = []
        real_rk, real_ck = _REAL_KDF_RK, _REAL_KDF_CK

        def kdf_rk(rk: bytes, dh_out: bytes, info: bytes) -> tuple[bytes, bytes]:
            out = real_rk(rk, dh_out, info)
            self.keys.extend(out)
            return out

        def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
            out = real_ck(ck)
            self.keys.extend(out)
            return out

        monkeypatch.setattr(spec, "kdf_rk", kdf_rk)
        monkeypatch.setattr(spec, "kdf_ck", kdf_ck)


def run_and_capture(scenario: Scenario, db: Path) -> tuple[Any, list[bytes], list[tuple[Any, ...]]]:
    """Run; before the store closes, read its files (db and WAL) and every row of every table."""
    sim = Simulation(scenario, db_path=db, capture_frames=True)
    files: list[bytes] = []
    rows: list[tuple[Any, ...]] = []
    real_close = sim.store.close

    def close() -> None:
        for suffix in ("", "-wal"):
            p = Path(str(db) + suffix)
            if p.exists():
                files.append(p.read_bytes())
        peek = sqlite3.connect(db)
        for (table,) in peek.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows.extend(peek.execute(f'SELECT * FROM "{table}"'))
        peek.close()
        real_close()

    sim.store.close = close  # type: ignore[method-assign]
    return sim.run(), files, rows


@settings(deadline=None)  # examples per profile: dev 30, ci 60
@given(scenario=scenarios())
def test_exactly_once_or_lost_and_the_relay_never_sees_plaintext(
    scenario: Scenario, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    recorder = KeyRecorder(monkeypatch_module)
    recorder.keys.clear()
    db = tmp_path_factory.mktemp("sim") / "relay.db"
    result, files, rows = run_and_capture(scenario, db)

    # exactly once, identical plaintext, or accounted as lost
    assert result.mismatched == 0
    assert result.undecryptable == 0
    for m in result.messages:
        if m.lost is None:
            assert sorted(m.delivered) == sorted(m.recipients), (m.planned, m.delivered)
        else:
            assert m.delivered == {}, m
    assert result.queued_at_end == 0

    # nothing the relay holds contains plaintext or keys
    haystacks = [*result.frames_to_relay, *files]
    for row in rows:
        haystacks.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    blob = b"\x00".join(haystacks)
    for m in result.messages:
        for run in _runs(m.planned.text):
            assert run not in blob, (m.planned.text, run)
    assert recorder.keys, "the key recorder saw no keys: the check below would be empty"
    for key in recorder.keys:
        assert key not in blob


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_relay_records_only_schema_fields_and_sealed_sends_hide_the_sender(tmp_path: Path) -> None:
    base = _two_people(sealed=True)
    db = tmp_path / "relay.db"
    result, _files, _rows = run_and_capture(base, db)
    assert sum(len(m.delivered) for m in result.messages) == 3
    con = sqlite3.connect(db)
    columns = [c[1] for c in con.execute("PRAGMA table_info(metadata)")]
    assert set(columns) - {"seq", "kind"} <= set(METADATA_FIELDS), columns
    kinds_seen = set()
    for row in con.execute("SELECT * FROM metadata"):
        record = dict(zip(columns, row, strict=True))
        kind = record["kind"]
        kinds_seen.add(kind)
        present = {k for k, v in record.items() if v is not None and k not in ("seq", "kind")}
        allowed = {f for k, fields in METADATA_SCHEMA.items() if k.value == kind for f in fields}
        assert present <= allowed, (kind, present - allowed)
        if kind == "sealed_send":
            # the sender's connection is unauthenticated: the relay does not know who sent it
            assert record["account"] is None and record["device"] is None
    assert "sealed_send" in kinds_seen and "send" not in kinds_seen


def _two_people(sealed: bool = False, offline_until: float | None = None) -> Scenario:
    off = ((500.0, offline_until),) if offline_until else ()
    people = (
        PersonSpec("ana", (DeviceSpec("ana", 1, "a", "192.0.2.1"),)),
        PersonSpec("bo", (DeviceSpec("bo", 1, "b", "192.0.2.2", off),)),
    )
    msgs = (
        ScriptedMessage(100, "ana", "bo", "FIRST MESSAGE 123"),
        ScriptedMessage(200, "bo", "ana", "SECOND MESSAGE 456"),
        ScriptedMessage(600, "ana", "bo", "THIRD MESSAGE 789"),
    )
    return Scenario(
        "two",
        "",
        1000.0,
        5,
        people,
        (Conversation(("ana", "bo"), msgs),),
        NetworkSpec(),
        RelaySpec(sealed_sender=sealed),
        None,
        (),
    )


def _run_cli(out: Path, scenario: str, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", "run", scenario, "--out", str(out), "--quiet"],
        check=True,
        env=env,
        capture_output=True,
    )


def test_same_scenario_and_seed_give_byte_identical_outputs(tmp_path: Path) -> None:
    # Two separate processes with different hash seeds, so set and dict orderings differ too.
    _run_cli(tmp_path / "a", "two-friends", "1")
    _run_cli(tmp_path / "b", "two-friends", "2")
    names = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"relay.db", "relay-view.jsonl", "summary.json", "summary.md", "transcript.jsonl"} <= set(names)
    assert any(n.startswith("disclosures/") for n in names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_outputs_do_not_depend_on_the_machine_they_are_made_on(tmp_path: Path) -> None:
    """What a user's machine varies leaves every file of run, analyze and report as it was: the hash
    seed, the time zone, the working directory, the output folder's path (relative or absolute) and
    name, and the scenario given by name or as a copy of its file."""
    from relaysim.sims.scenario import builtin_scenarios

    copy = tmp_path / "elsewhere" / "two-friends.toml"
    copy.parent.mkdir()
    copy.write_bytes(builtin_scenarios()["two-friends"].read_bytes())
    (tmp_path / "cwd" / "deeper").mkdir(parents=True)
    machines = [
        ({"PYTHONHASHSEED": "0", "TZ": "UTC"}, tmp_path, "two-friends", "a"),
        (
            {"PYTHONHASHSEED": "123", "TZ": "Asia/Karachi"},
            tmp_path / "cwd" / "deeper",
            str(copy),
            str(tmp_path / "b" / "another name"),
        ),
    ]
    outs = []
    for env, cwd, scenario, out in machines:
        for argv in (["run", scenario, "--out", out, "--quiet"], ["analyze", out], ["report", out]):
            subprocess.run(
                [sys.executable, "-m", "relaysim.sims.cli", *argv],
                check=True,
                cwd=cwd,
                env={**os.environ, **env},
                capture_output=True,
            )
        outs.append(cwd / out)
    a, b = outs
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert {"relay.db", "report.html", "transcript.jsonl"} <= set(names)
    assert any(n.startswith("analysis/") for n in names)
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_different_seed_gives_a_different_run(tmp_path: Path) -> None:
    from relaysim.sims.report import run_to_dir
    from relaysim.sims.scenario import resolve_scenario

    sc = resolve_scenario("two-friends")
    run_to_dir(sc, tmp_path / "a")
    run_to_dir(sc.with_seed(sc.seed + 1), tmp_path / "b")
    assert (tmp_path / "a" / "transcript.jsonl").read_bytes() != (
        tmp_path / "b" / "transcript.jsonl"
    ).read_bytes()


def test_messages_for_an_offline_phone_wait_at_the_relay(tmp_path: Path) -> None:
    result, _f, _r = run_and_capture(_two_people(offline_until=900.0), tmp_path / "relay.db")
    third = result.messages[2]
    assert third.planned.text == "THIRD MESSAGE 789"
    assert third.delivered["bo/1"] >= 900.0  # held until the phone came back


def test_relay_db_is_byte_identical_even_with_queued_pqxdh_envelopes(tmp_path: Path) -> None:
    """Bob is offline at the end, so the relay still holds PQXDH prekey messages for him: their
    ML-KEM ciphertexts must come from the seeded RNG for the database to repeat."""
    from relaysim.sims.report import run_to_dir

    sc = _two_people(offline_until=999_999.0)
    _r1, s1 = run_to_dir(sc, tmp_path / "a")
    _r2, _s2 = run_to_dir(sc, tmp_path / "b")
    assert s1["relay_queued_at_end"] >= 1
    assert (tmp_path / "a" / "relay.db").read_bytes() == (tmp_path / "b" / "relay.db").read_bytes()


def test_sealed_sender_certificates_are_renewed_on_long_runs(tmp_path: Path) -> None:
    """Regression: sender certificates last a day; a phone online for longer must renew its own."""
    people = (
        PersonSpec("ana", (DeviceSpec("ana", 1, "a", "192.0.2.1"),)),
        PersonSpec("bo", (DeviceSpec("bo", 1, "b", "192.0.2.2"),)),
    )
    msgs = (
        ScriptedMessage(3600, "ana", "bo", "FIRST DAY"),
        ScriptedMessage(30 * 3600, "ana", "bo", "SECOND DAY"),
        ScriptedMessage(30 * 3600 + 60, "bo", "ana", "SECOND DAY REPLY"),
    )
    sc = Scenario(
        "days",
        "",
        2 * 86400.0,
        1,
        people,
        (Conversation(("ana", "bo"), msgs),),
        NetworkSpec(),
        RelaySpec(sealed_sender=True),
        None,
        (),
    )
    result, _f, _r = run_and_capture(sc, tmp_path / "relay.db")
    assert result.undecryptable == 0
    assert [len(m.delivered) for m in result.messages] == [1, 1, 1]
    assert result.relay_records["sender_certificate"] >= 3  # two at login, then at least one renewal


def test_a_message_waiting_for_a_bundle_when_its_phone_goes_offline_is_sent_after_it_returns(
    tmp_path: Path,
) -> None:
    """Regression (shrunk by the property above): ana's first message to cy waits for cy's prekey
    bundle; a "hold" partition keeps the fetch from the relay until after ana's phone has gone
    offline, so the answer never comes on that connection. The device must ask again once it is
    back online, not keep the message forever."""
    people = (
        PersonSpec("ana", (DeviceSpec("ana", 1, "a", "192.0.2.1", offline=((100.0, 624.0),)),)),
        PersonSpec("bo", (DeviceSpec("bo", 1, "b", "192.0.2.5"),)),
        PersonSpec("cy", (DeviceSpec("cy", 1, "b", "192.0.2.9"),)),
    )
    msgs = (
        ScriptedMessage(60.0, "ana", "bo", "WARM UP 0001"),
        ScriptedMessage(61.0, "ana", "cy", "WAITS FOR A BUNDLE"),
    )
    sc = Scenario(
        name="held-fetch",
        description="",
        duration=4000.0,
        seed=548,
        people=people,
        conversations=(Conversation(("ana", "bo"), msgs),),
        network=NetworkSpec(
            latency_ms=1.0, jitter_ms=0.0, partitions=(Partition(("a",), 61.0, 101.0, mode="hold"),)
        ),
        relay=RelaySpec(sealed_sender=False),
        generate=None,
        events=(),
    )
    result, _f, _r = run_and_capture(sc, tmp_path / "relay.db")
    waiting = result.messages[1]
    assert waiting.lost is None
    assert waiting.delivered["cy/1"] >= 624.0  # sent once ana's phone was back


# --- groups (sender keys, client-side fan-out) and sync copies -------------------------------------


@st.composite
def group_scenarios(draw: st.DrawFn) -> Scenario:
    """``scenarios()`` plus one group whose members join, leave and write over time."""
    base = draw(scenarios())
    names = [p.name for p in base.people]
    members = set(draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
    start = tuple(sorted(members))
    changes = []
    for at in sorted(draw(st.lists(st.floats(60, 2400), min_size=1, max_size=10))):
        who = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["message", "message", "join_or_leave"]))
        if kind == "message" and who in members:
            changes.append(GroupChange(at, "message", who, draw(PLAIN)))
        elif kind == "join_or_leave" and who in members:
            members.discard(who)
            changes.append(GroupChange(at, "leave", who))
        elif kind == "join_or_leave":
            members.add(who)
            changes.append(GroupChange(at, "join", who))
    # With loss: a lost sender key distribution is asked for again with retry receipts (clients.agent);
    # a lost part of the client-side fan-out is lost for that account's devices (MessageState.lost_for).
    return replace(base, groups=(GroupSpec("g", start, (), tuple(changes)),))


@settings(deadline=None, max_examples=10)
@given(scenario=group_scenarios())
def test_group_messages_reach_exactly_the_member_devices_and_the_relay_never_sees_plaintext(
    scenario: Scenario, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    """Group messages, sync copies to the sender's other devices and sender-key distribution: every
    member device (at the time of writing) gets each message exactly once or it is accounted as lost;
    no plaintext, Double Ratchet key or sender chain key or message key seed reaches the relay.
    (It failed on group sends and key handouts lost with a connection, on a member who left while
    offline, and on duplicated sends: the regression tests below are those cases.)"""
    recorder = KeyRecorder(monkeypatch_module)
    real_step = groups.sender_chain_step

    def step(ck: bytes) -> tuple[bytes, bytes]:
        out = real_step(ck)
        recorder.keys.extend((ck, *out))
        return out

    monkeypatch_module.setattr(groups, "sender_chain_step", step)
    recorder.keys.clear()
    db = tmp_path_factory.mktemp("sim") / "relay.db"
    result, files, rows = run_and_capture(scenario, db)
    monkeypatch_module.setattr(groups, "sender_chain_step", real_step)

    assert result.mismatched == 0
    assert result.undecryptable == 0
    for m in result.messages:
        if m.lost is not None:
            assert m.delivered == {}, m
            continue
        # every member device read it, or is accounted for, with the reason
        assert not set(m.delivered) & set(m.lost_for), m
        assert sorted([*m.delivered, *m.lost_for]) == sorted(m.recipients), (
            m.planned,
            m.delivered,
            m.lost_for,
        )
        for why in m.lost_for.values():
            assert why.startswith("the network lost the send to ") or (
                why.startswith("its sender key never came") and f"the {MAX_RETRY_RECEIPTS} retry" in why
            ), why
    haystacks = [*result.frames_to_relay, *files]
    for row in rows:
        haystacks.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    blob = b"\x00".join(haystacks)
    for m in result.messages:
        for run in _runs(m.planned.text):
            assert run not in blob, (m.planned.text, run)
    for key in recorder.keys:
        assert key not in blob


def _group_scenario(
    name: str, seed: int, changes: tuple[GroupChange, ...], duplication: float = 0.0
) -> Scenario:
    """ana (offline 100–624 s, her sends toward the relay held 61–101 s), bo and cy in group g; dan
    joins at 56 s. ana writes each of them at 59–60 s so she has their bundles when she writes the group."""
    people = (
        PersonSpec("ana", (DeviceSpec("ana", 1, "a", "192.0.2.1", offline=((100.0, 624.0),)),)),
        PersonSpec("bo", (DeviceSpec("bo", 1, "b", "192.0.2.5"),)),
        PersonSpec("cy", (DeviceSpec("cy", 1, "b", "192.0.2.9"),)),
        PersonSpec("dan", (DeviceSpec("dan", 1, "b", "192.0.2.13"),)),
    )
    return Scenario(
        name=name,
        description="",
        duration=4000.0,
        seed=seed,
        people=people,
        conversations=tuple(
            Conversation(("ana", who), (ScriptedMessage(59.0 + i / 4, "ana", who, f"WARM UP {i}"),))
            for i, who in enumerate(("bo", "cy", "dan"))
        ),
        network=NetworkSpec(
            latency_ms=1.0,
            jitter_ms=0.0,
            duplication=duplication,
            partitions=(Partition(("a",), 61.0, 101.0, mode="hold"),),
        ),
        relay=RelaySpec(sealed_sender=False),
        generate=None,
        events=(),
        groups=(GroupSpec("g", ("ana", "bo", "cy"), (), (GroupChange(56.0, "join", "dan"), *changes)),),
    )


def test_a_group_send_and_its_key_handout_in_flight_when_the_phone_goes_offline_are_sent_after_login(
    tmp_path: Path,
) -> None:
    """Regression (the open case of the property above): ana's first group message after dan joined
    carries her sender key to dan; both are held on the network until her phone has gone offline, so
    the relay never sees them. Before, ana's device counted dan as holding her key, so her next group
    message stayed undecryptable (held, never accounted) on dan's phone, and the first one was lost.
    Now both go again after she logs in, and every member device reads both."""
    sc = _group_scenario(
        "held-group-send",
        548,
        (
            GroupChange(55.0, "message", "ana", "BEFORE DAN HAS HER KEY"),
            GroupChange(61.0, "message", "ana", "HELD WITH THE KEY"),
            GroupChange(700.0, "message", "ana", "AFTER"),
        ),
    )
    result, _f, _r = run_and_capture(sc, tmp_path / "relay.db")
    assert result.undecryptable == 0
    held, after = result.messages[-2:]
    for m in (held, after):
        assert m.lost is None
        assert sorted(m.delivered) == ["bo/1", "cy/1", "dan/1"], (m.planned.text, m.delivered)
    assert min(held.delivered.values()) >= 624.0


def test_a_member_who_left_while_offline_still_reads_what_was_written_before_leaving(tmp_path: Path) -> None:
    """Regression: bo writes the group at 200 s while ana (a member) is offline; ana leaves at 300 s,
    still offline. The message is hers to read when her phone comes back: leaving forgets her own
    sender key, not the ones the members gave her before."""
    sc = _group_scenario(
        "left-while-offline",
        549,
        (
            GroupChange(40.0, "message", "bo", "BEFORE THE WINDOW"),
            GroupChange(200.0, "message", "bo", "WHILE SHE IS AWAY"),
            GroupChange(300.0, "leave", "ana"),
        ),
    )
    result, _f, _r = run_and_capture(sc, tmp_path / "relay.db")
    assert result.undecryptable == 0
    away = result.messages[-1]
    assert away.lost is None
    assert sorted(away.delivered) == ["ana/1", "cy/1", "dan/1"], away.delivered


def test_a_duplicated_group_send_and_key_handout_are_counted_as_dropped_duplicates(tmp_path: Path) -> None:
    """Regression: with every send toward the relay duplicated, the second copy of a sender key message
    was held in the waiting list (as if its key had not come yet) and never counted, and the second copy
    of a sender key handout (a Double Ratchet message already read) came out as undecryptable. Both are
    duplicates: each delivered message and each delivery receipt has one dropped copy."""
    sc = _group_scenario(
        "duplicated-group-sends",
        550,
        (
            GroupChange(40.0, "message", "bo", "ONE"),
            GroupChange(700.0, "message", "cy", "TWO"),
            GroupChange(800.0, "message", "bo", "THREE"),
        ),
        duplication=1.0,
    )
    sim = Simulation(sc, db_path=str(tmp_path / "relay.db"))
    result = sim.run()
    assert result.undecryptable == 0
    assert result.mismatched == 0
    deliveries = sum(len(m.delivered) for m in result.messages)
    assert sim.deliveries == deliveries  # a duplicate read is not counted again
    assert all(m.lost is None and sorted(m.delivered) == sorted(m.recipients) for m in result.messages)
    assert result.duplicates_dropped >= 2 * deliveries


def test_a_group_message_written_the_moment_its_sender_leaves_reaches_the_senders_other_devices(
    tmp_path: Path,
) -> None:
    """Regression (shrunk by the group property under hypothesis 6.100): u1 writes the group and leaves
    it at the same instant, in that order. The message was written while u1 was a member, so its sync
    copy to u1's second phone is expected; the recipients were computed as if the leave came first."""
    people = (
        PersonSpec("u0", (DeviceSpec("u0", 1, "a", "192.0.2.1"),)),
        PersonSpec("u1", (DeviceSpec("u1", 1, "a", "192.0.2.5"), DeviceSpec("u1", 2, "a", "192.0.2.6"))),
    )
    sc = Scenario(
        name="write-then-leave",
        description="",
        duration=4000.0,
        seed=0,
        people=people,
        conversations=(Conversation(("u0", "u1"), (ScriptedMessage(60.0, "u0", "u1", "00000000"),)),),
        network=NetworkSpec(latency_ms=1.0, jitter_ms=0.0),
        relay=RelaySpec(sealed_sender=False),
        generate=None,
        events=(),
        groups=(
            GroupSpec(
                "g",
                ("u0", "u1"),
                (),
                (GroupChange(60.0, "message", "u1", "WRITTEN THEN LEFT"), GroupChange(60.0, "leave", "u1")),
            ),
        ),
    )
    result, _f, _r = run_and_capture(sc, tmp_path / "relay.db")
    written = result.messages[-1]
    assert written.planned.text == "WRITTEN THEN LEFT"
    assert sorted(written.recipients) == ["u0/1", "u1/2"]
    assert sorted(written.delivered) == ["u0/1", "u1/2"]


def test_phones_may_publish_only_the_last_resort_kem_prekey(tmp_path: Path) -> None:
    """``Simulation(kem_prekey_batch=0)`` (the scale bench's setting): no one-time ML-KEM prekeys are
    made or uploaded, and every PQXDH session uses the last-resort one, as the spec allows."""
    db = tmp_path / "relay.db"
    result = Simulation(_two_people(), db_path=str(db), kem_prekey_batch=0).run()
    assert [sorted(m.delivered) for m in result.messages] == [["bo/1"], ["ana/1"], ["bo/1"]]
    assert result.mismatched == result.undecryptable == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM kem_prekeys").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM devices").fetchone() == (2,)
    default = tmp_path / "default.db"
    Simulation(_two_people(), db_path=str(default)).run()
    with sqlite3.connect(default) as con:  # by default each phone keeps one-time KEM prekeys there
        assert con.execute("SELECT count(*) FROM kem_prekeys").fetchone()[0] > 0


def test_the_ground_truth_keeps_each_message_without_an_instance_dict(tmp_path: Path) -> None:
    """A run's ground truth holds one TrueMessage per message (a million at the scale target): slots,
    no per-instance dict."""
    result = Simulation(_two_people(), db_path=str(tmp_path / "relay.db")).run()
    assert result.truth is not None and len(result.truth.messages) == 3
    assert not any(hasattr(m, "__dict__") for m in result.truth.messages)


def test_the_ground_truth_holds_no_true_message_objects_until_read(tmp_path: Path) -> None:
    """The end of a run is its memory peak: ground truth's messages are made when read, from the
    message states the result holds anyway, with the values an eager tuple would have."""
    import gc

    from relaysim.sims.scoring import TrueMessage

    sim = Simulation(_two_people(), db_path=str(tmp_path / "relay.db"))
    result = sim.run()
    assert result.truth is not None
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, TrueMessage)]
    eager = tuple(
        TrueMessage(sim.epoch + m.accepted_at, m.planned.sender, m.planned.recipient, m.planned.text)
        for m in result.messages
        if m.accepted_at is not None
    )
    truth = result.truth.messages
    assert len(truth) == 3 and tuple(truth) == eager and truth == eager
    assert truth[1] == eager[1] and truth[-1] == eager[-1] and truth[1:] == eager[1:]


def test_message_states_without_losses_share_one_empty_lost_for(tmp_path: Path) -> None:
    """An empty dict per message is 64 MB at a million messages: the states share one read-only one."""
    result = Simulation(_two_people(), db_path=str(tmp_path / "relay.db")).run()
    assert len(result.messages) == 3
    assert len({id(m.lost_for) for m in result.messages}) == 1
    assert all(m.lost_for == {} for m in result.messages)
    with pytest.raises(TypeError):
        result.messages[0].lost_for["x"] = "y"  # type: ignore[index]


@given(st.lists(st.tuples(st.sampled_from(["a/1", "b/1", "c/2"]), st.floats(0, 1e6)), max_size=6))
def test_deliveries_read_and_change_as_the_dict_they_replace(writes: list[tuple[str, float]]) -> None:
    from relaysim.sims.world.simulation import Deliveries

    compact, plain = Deliveries(), dict[str, float]()
    for name, t in writes:
        compact[name] = plain[name] = t
        assert (
            compact == plain and list(compact.items()) == list(plain.items()) and len(compact) == len(plain)
        )
    assert all((n in compact) == (n in plain) for n in ["a/1", "b/1", "c/2", "d/1"])
    assert repr(compact) == repr(plain) and compact.get("d/1") is None
    for name in list(plain)[:1]:
        del compact[name], plain[name]
        assert compact == plain
    with pytest.raises(KeyError):
        compact["d/1"]


def test_a_message_read_by_one_device_holds_no_dict(tmp_path: Path) -> None:
    """A dict of one delivery is 184 B: at the scale run's 1,000,000 messages, 128 MB more than two slots."""
    result = Simulation(_two_people(), db_path=str(tmp_path / "relay.db")).run()
    assert [len(m.delivered) for m in result.messages] == [1, 1, 1]
    assert all(sys.getsizeof(m.delivered) < sys.getsizeof({"bo/1": 1.0}) for m in result.messages)


def test_a_simulated_phones_agent_and_identity_store_hold_small_containers(tmp_path: Path) -> None:
    """Every phone of a scale run holds these: no deque (760 B even empty), no set the agent never
    reads (the one-time prekey ids it uploaded: 728 B), no empty sets where dicts of None do (216 B
    against 64). Measured at the end of a small run: 2,456 and 408 B per phone (were 3,856 and 712)."""
    sim = Simulation(_two_people(), db_path=str(tmp_path / "relay.db"))
    sim.run()

    def containers(obj: object) -> int:
        return sum(sys.getsizeof(v) for v in vars(obj).values() if isinstance(v, set | dict | list | deque))

    for d in sim.devices.values():
        assert containers(d.agent) <= 3000
        assert containers(d.agent.device.identities) <= 500


def test_compact_device_rng_keeps_a_small_key_stream_per_phone_and_stays_deterministic(
    tmp_path: Path,
) -> None:
    """A Mersenne Twister per phone is 2.5 KiB (240 MiB at the scale run's 100,000 phones): with
    compact_device_rng each phone keeps a KeyStream (~0.1 KiB), seeded from its generator. The run is
    as deterministic (the same frames reach the relay twice), with other keys than the default's."""
    from relaysim.sims.world.util import KeyStream, SimulationRandom

    frames = []
    for i, compact in enumerate([True, True, False]):
        sim = Simulation(
            _two_people(), db_path=str(tmp_path / f"{i}.db"), capture_frames=True, compact_device_rng=compact
        )
        owners = [d.agent.rng.__self__ for d in sim.devices.values()]  # type: ignore[attr-defined]
        assert all(isinstance(o, KeyStream if compact else SimulationRandom) for o in owners)
        result = sim.run()
        assert [sorted(m.delivered) for m in result.messages] == [["bo/1"], ["ana/1"], ["bo/1"]]
        frames.append(result.frames_to_relay)
    assert frames[0] == frames[1] and frames[0] != frames[2]
    assert sys.getsizeof(KeyStream(bytes(32))) + 65 < sys.getsizeof(SimulationRandom(1)) // 10


class _DropHandouts(Simulation):
    """Loses the first ``n`` sender key handouts ana's phone sends to ``to`` (their ``Send`` never
    reaches the relay), and records every send's (device, to, ref) in ``refs_seen``."""

    def __init__(self, scenario: Scenario, db: Path, to: str, n: int) -> None:
        super().__init__(scenario, db_path=db, capture_frames=True)
        self.to, self.left = to, n
        self.refs_seen: list[tuple[str, str, object]] = []
        self.dan_has_asked = False

    def _to_relay(self, d: Any, frame: wire.Request, owner: Any = None) -> None:
        if isinstance(frame, wire.Send):
            ref = (owner or d).agent.message_ref(frame.id)
            self.refs_seen.append((d.name, frame.to, ref))
            handout = isinstance(ref, tuple) and ref[0] == "sender_key"
            if handout and d.name == "ana/1" and frame.to == self.to and self.left > 0:
                self.left -= 1
                return
        super()._to_relay(d, frame, owner)


def _online_group(name: str, changes: tuple[GroupChange, ...]) -> Scenario:
    """ana, bo and dan, always online, in group g; ana writes each of them at 50 s (sessions made)."""
    people = tuple(
        PersonSpec(who, (DeviceSpec(who, 1, "a", f"192.0.2.{i + 1}"),))
        for i, who in enumerate(("ana", "bo", "dan"))
    )
    return Scenario(
        name=name,
        description="",
        duration=2000.0,
        seed=553,
        people=people,
        conversations=tuple(
            Conversation(("ana", who), (ScriptedMessage(50.0 + i, "ana", who, f"WARM UP {i}"),))
            for i, who in enumerate(("bo", "dan"))
        ),
        network=NetworkSpec(latency_ms=1.0, jitter_ms=0.0),
        relay=RelaySpec(sealed_sender=False),
        generate=None,
        events=(),
        groups=(GroupSpec("g", ("ana", "bo", "dan"), (), changes),),
    )


def test_a_lost_sender_key_handout_is_asked_for_again_with_a_retry_receipt(tmp_path: Path) -> None:
    """ana's sender key handout to dan is lost: dan's phone holds her group messages, unreadable, then
    (after RETRY_GRACE) sends her a retry receipt for each over their pairwise session; ana hands her
    key over again and resends each message, and dan reads every message, the later ones with the key.
    Before, dan never read any of them. Retry receipts and resends are envelopes like any other."""
    sc = _online_group(
        "lost-handout",
        (
            GroupChange(60.0, "message", "ana", "BEFORE DAN HAS HER KEY"),
            GroupChange(61.0, "message", "ana", "STILL WITHOUT IT"),
            GroupChange(700.0, "message", "ana", "AFTER THE RETRY"),
        ),
    )
    sim = _DropHandouts(sc, tmp_path / "relay.db", "dan", 1)
    result = sim.run()
    assert sim.left == 0  # the handout was dropped
    assert result.undecryptable == 0 and result.mismatched == 0
    for m in result.messages[-3:]:
        assert sorted(m.delivered) == ["bo/1", "dan/1"], (m.planned.text, m.delivered, m.lost_for)
        assert m.lost_for == {}
    first, second, after = result.messages[-3:]
    for m in (first, second):
        assert 10.0 <= m.delivered["dan/1"] - m.planned.at < 20.0  # after the grace, on the first retry
    assert after.delivered["dan/1"] - after.planned.at < 1.0  # with the key handed over again
    retries = [(who, to) for who, to, ref in sim.refs_seen if isinstance(ref, tuple) and ref[0] == "retry"]
    assert retries == [("dan/1", "ana"), ("dan/1", "ana")]  # one per unreadable message
    handouts = [ref for who, to, ref in sim.refs_seen if isinstance(ref, tuple) and ref[0] == "sender_key"]
    assert len(handouts) == 2 + 1  # bo, dan (lost), dan again (once: the second receipt finds it sent)
    resent = [
        ref
        for who, to, ref in sim.refs_seen
        if who == "ana/1" and to == "dan" and ref in (first.planned.id, second.planned.id)
    ]
    assert len(resent) == 4  # the group message itself, and its resend


def test_retry_receipts_are_bounded_when_every_answer_is_lost(tmp_path: Path) -> None:
    """Every handout of ana's to dan is lost, and so is every resend: dan's phone sends at most
    MAX_RETRY_RECEIPTS retry receipts per message and then waits; the run ends with the messages
    accounted as lost for dan/1 and why, and read by everyone else."""

    class DropResends(_DropHandouts):
        def _to_relay(self, d: Any, frame: wire.Request, owner: Any = None) -> None:
            if isinstance(frame, wire.Send):
                ref = d.agent.message_ref(frame.id)
                if d.name == "ana/1" and frame.to == "dan" and isinstance(ref, int) and self.dan_has_asked:
                    self.refs_seen.append((d.name, frame.to, ref))
                    return  # a resend, lost
                if d.name == "dan/1" and isinstance(ref, tuple) and ref[0] == "retry":
                    self.dan_has_asked = True
            super()._to_relay(d, frame, owner)

    sc = _online_group("every-answer-lost", (GroupChange(60.0, "message", "ana", "NEVER FOR DAN"),))
    sim = DropResends(sc, tmp_path / "relay.db", "dan", 1000)
    result = sim.run()
    m = result.messages[-1]
    assert sorted(m.delivered) == ["bo/1"]
    assert list(m.lost_for) == ["dan/1"]
    assert f"the {MAX_RETRY_RECEIPTS} retry receipt(s)" in m.lost_for["dan/1"]
    retries = [ref for who, to, ref in sim.refs_seen if isinstance(ref, tuple) and ref[0] == "retry"]
    assert len(retries) == MAX_RETRY_RECEIPTS
    assert result.undecryptable == 0


def test_deliveries_are_keyed_by_one_name_string_per_device(tmp_path: Path) -> None:
    """MessageState.delivered is keyed by the device's name: one string per device, not a new one per
    delivery (56 B a message at the scale target)."""
    sim = Simulation(_two_people(), db_path=str(tmp_path / "relay.db"))
    result = sim.run()
    keys = [k for m in result.messages for k in m.delivered]
    assert len(keys) == 3 == sim.deliveries  # (counted as they happen, for a scale run's progress)
    assert all(any(k is d.name for d in sim.devices.values()) for k in keys)


def test_what_a_run_made_is_in_the_oldest_generation_after_it(tmp_path: Path) -> None:
    """With the collector off, everything a run makes stays in the youngest generation; turned back
    on as it was, the next allocation would walk all of it (10 s at 100,000 phones). The run moves
    it to the oldest generation instead, where a run with the collector on would have put it."""
    gc.collect()
    result = Simulation(_two_people(), db_path=str(tmp_path / "relay.db")).run()
    state = result.messages[0]
    assert gc.is_tracked(state)
    assert any(o is state for o in gc.get_objects(generation=2))
    assert not any(o is state for o in gc.get_objects(generation=0))


def test_the_collector_is_off_during_a_run_and_back_on_after_it_however_it_ends(tmp_path: Path) -> None:
    """Collections walk a heap that a run fills with objects that live until it ends (and it makes
    next to no cyclic garbage), so the collector is off during a run and turned back on after it,
    even when it ends by an exception; a process that had turned it off keeps it off."""
    assert gc.isenabled()
    seen: list[bool] = []
    sim = Simulation(
        _two_people(),
        db_path=str(tmp_path / "a.db"),
        progress=lambda t, end: seen.append(gc.isenabled()),
    )
    sim.run()
    assert seen and not any(seen)
    assert gc.isenabled()

    def stop(t: float, end: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Simulation(_two_people(), db_path=str(tmp_path / "b.db"), progress=stop).run()
    assert gc.isenabled()
    gc.disable()
    try:
        Simulation(_two_people(), db_path=str(tmp_path / "c.db")).run()
        assert not gc.isenabled()
    finally:
        gc.enable()
