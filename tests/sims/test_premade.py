"""Registration keys made ahead in a worker process (sims.world.premade, clients.keys.PremadeKeys):
a memo of deterministic key generation, so a phone given a table computes the same bytes it would
have computed, and a run is byte-identical with or without the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaysim.clients.keys import PreKeySecrets, PremadeKeys
from relaysim.clients.session import Device
from relaysim.relay.identity import xeddsa_verify
from relaysim.sims.bench.sim import scale_scenario
from relaysim.sims.world.premade import SKIP_AHEAD, PremadeSource, premade_keys
from relaysim.sims.world.simulation import SIM_KEM_PREKEY_BATCH, SIM_PREKEY_BATCH, Simulation
from relaysim.sims.world.util import KeyStream
from tests.helpers import run_with_and_without

SEED = bytes(range(32))


def _secrets(s: PreKeySecrets) -> tuple[object, ...]:
    """Every byte of a device's prekey secrets."""
    return (
        s.identity.private,
        s.identity.public,
        [(i, p.private, p.public, spk) for i, (p, spk) in sorted(s.signed.items())],
        [(i, p.private, p.public) for i, p in sorted(s.one_time.items())],
        [(i, seed, k) for i, (seed, k) in sorted(s.kem.items())],
    )


def _device(seed: bytes, table: PremadeKeys | None) -> Device:
    device = Device("ana", 1, rng=KeyStream(seed).randbytes, pq=True)
    device.secrets.premade = table
    device.generate_prekeys(SIM_PREKEY_BATCH, 0)
    device.secrets.premade = None
    return device


def test_a_premade_table_gives_the_keys_the_device_would_compute() -> None:
    table = premade_keys("ana", 1, SEED, SIM_PREKEY_BATCH, 0)
    # a signed prekey and 8 one-time prekeys, the last-resort ML-KEM key, and the two signatures
    assert (len(table.x25519), len(table.mlkem), len(table.signatures)) == (1 + SIM_PREKEY_BATCH, 1, 2)
    assert table.edwards is not None
    with_table, computed = _device(SEED, table), _device(SEED, None)
    assert _secrets(with_table.secrets) == _secrets(computed.secrets)
    assert table.hits == 1 + SIM_PREKEY_BATCH + 1 + 2 and table.misses == 0 and len(table) == 0
    # the identity key's Edwards pair came with it (its next signature, a login's, needs it)
    assert with_table.secrets.identity._edwards == computed.secrets.identity._edwards


def test_a_table_made_from_other_draws_is_not_used_and_changes_nothing() -> None:
    table = premade_keys("ana", 1, bytes(32), SIM_PREKEY_BATCH, 0)  # another phone's stream
    with_table, computed = _device(SEED, table), _device(SEED, None)
    assert _secrets(with_table.secrets) == _secrets(computed.secrets)
    assert table.hits == 0 and table.misses == 1 + SIM_PREKEY_BATCH + 1 + 2


def test_the_worker_sends_each_phones_table_and_says_what_it_cost() -> None:
    jobs = [(f"p{i}/1", f"p{i}", 1, bytes([i]) * 32) for i in range(3)]
    source = PremadeSource(jobs, SIM_PREKEY_BATCH, 0)
    try:
        for name, account, device_id, seed in jobs:
            table = source.take(name, wait=60.0)
            assert table is not None
            local = premade_keys(account, device_id, seed, SIM_PREKEY_BATCH, 0)
            assert (table.x25519, table.mlkem, table.signatures, table.edwards) == (
                local.x25519,
                local.mlkem,
                local.signatures,
                local.edwards,
            )
        assert source.take("nobody/1") is None
        # the relay's checks of each phone's signed prekey and last-resort KEM prekey signatures,
        # each one the relay's own function accepts
        assert len(source.verified) == 3 * 2 == source.checks
        assert all(xeddsa_verify(*check) for check in source.verified)
    finally:
        stats = source.close()
    assert stats["given"] == 3 and stats["missed"] == 1 and stats["worker_cpu_seconds"] > 0
    assert stats["checks"] == 6 and stats["checks_left"] == 6 and source.verified == {}


def test_a_worker_that_is_behind_skips_ahead_of_the_phone_that_asked_in_vain() -> None:
    jobs = [(f"p{i}/1", f"p{i}", 1, i.to_bytes(32, "big")) for i in range(SKIP_AHEAD + 40)]
    source = PremadeSource(jobs, 1, 0)
    try:
        assert source.take("p0/1") is None  # asked before the worker has even started
        last = source.take(jobs[-1][0], wait=60.0)
        assert last is not None and len(last.x25519) == 2
        assert source.take(jobs[SKIP_AHEAD][0], wait=60.0) is not None
        assert source.take(jobs[SKIP_AHEAD - 1][0], wait=1.0) is None  # skipped, never made
    finally:
        source.close()
    assert source.received == 40


class _Waiting(Simulation):
    _premade_wait = 60.0  # every phone gets its table, however slow the worker is to start


def test_a_run_with_premade_keys_is_byte_identical_to_one_without(tmp_path: Path) -> None:
    (frames, delivered, stats), (frames0, delivered0, _) = run_with_and_without(
        scale_scenario(12, 60, 7), tmp_path, _Waiting, Simulation, "premade_keys", "premade_stats"
    )
    # each phone: its signed and one-time X25519 prekeys, its ML-KEM prekeys and a signature of each
    per_phone = 1 + SIM_PREKEY_BATCH + 2 * (SIM_KEM_PREKEY_BATCH + 1) + 1
    assert (
        stats["given"] == 12
        and stats["missed"] == 0
        and stats["hits"] == 12 * per_phone
        and stats["computed"] == 0
    )
    # the relay took the worker's checks of every registration's signatures (its signed prekey's,
    # its KEM prekeys') instead of making them itself
    assert stats["checks"] == 12 * (1 + SIM_KEM_PREKEY_BATCH + 1) and stats["checks_left"] == 0
    assert frames == frames0 and delivered == delivered0 and sum(map(len, delivered)) == len(delivered) > 0
    assert (tmp_path / "0.db").read_bytes() == (tmp_path / "1.db").read_bytes()


def test_premade_keys_need_the_compact_key_streams(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="premade_keys=True\\) needs compact_device_rng=True"):
        Simulation(scale_scenario(3, 3, 1), db_path=str(tmp_path / "r.db"), premade_keys=True)


def test_the_pipe_is_read_without_waiting_for_the_rest_of_a_batch() -> None:
    """The simulation never waits on the worker: bytes of a batch not yet whole stay in the reader's
    buffer (through multiprocessing's ``recv`` the simulation waited for the worker to write the
    rest: ~0.3 ms of wall time a phone on a busy machine)."""
    import os
    import pickle

    from relaysim.sims.world.premade import Frames, send_frame

    r, w = os.pipe()
    frames = Frames(r)
    try:
        big = [("p/1", bytes(100_000))]  # more than a pipe holds at once, by default
        whole = pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL)
        framed = len(whole).to_bytes(4, "big") + whole
        os.write(w, framed[:3])  # not even the length yet
        assert not os.get_blocking(r)  # so the reads below return at once instead of waiting for bytes
        assert frames.read() == []
        os.write(w, framed[3:1000])
        assert frames.read() == [] and not frames.ended
        rest = framed[1000:]
        while rest:  # (the pipe takes it in parts; the reader drains as it comes)
            n = os.write(w, rest[:4096])
            rest = rest[n:]
            got = frames.read()
            assert got == ([] if rest else [big])
        send_frame(w, None)
        send_frame(w, [("q/1", b"x")])
        assert frames.read(wait=5.0) == [None, [("q/1", b"x")]]
        os.close(w)
        w = -1
        assert frames.read(wait=5.0) == [] and frames.ended
    finally:
        frames.close()
        if w >= 0:
            os.close(w)
