"""The prekey bundles a simulation's phones verified, shared (clients.keys.VerifiedBundles,
Simulation(share_verified_bundles=True)): a memo of signature verification, so a bundle of other
bytes is still verified in full, and a run is byte-identical with or without it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from relaysim.clients.keys import BundleError, KemPreKey, PreKeyBundle, SignedPreKey, VerifiedBundles
from relaysim.clients.session import Device
from relaysim.sims.bench.sim import scale_scenario
from relaysim.sims.world.simulation import Simulation
from relaysim.sims.world.util import KeyStream


def _bundle(memo: VerifiedBundles | None) -> PreKeyBundle:
    device = Device("ana", 1, rng=KeyStream(bytes(range(32))).randbytes, pq=True)
    bundle = device.generate_prekeys(1, 0)
    return dataclasses.replace(bundle, verified=memo)


def _flip(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


def test_a_bundle_verified_once_is_found_and_any_other_bytes_are_verified_in_full() -> None:
    memo = VerifiedBundles()
    bundle = _bundle(memo)
    bundle.verify()
    assert (memo.misses, memo.hits, len(memo)) == (1, 0, 1)
    _bundle(memo).verify()  # the same bytes, another object
    assert (memo.misses, memo.hits) == (1, 1)
    spk, kem = bundle.signed_prekey, bundle.kem_prekey
    assert kem is not None
    forged = [
        dataclasses.replace(bundle, signed_prekey=SignedPreKey(spk.id, spk.public, _flip(spk.signature))),
        dataclasses.replace(bundle, signed_prekey=SignedPreKey(spk.id, _flip(spk.public), spk.signature)),
        dataclasses.replace(
            bundle, kem_prekey=KemPreKey(kem.id, kem.public, _flip(kem.signature), kem.last_resort)
        ),
        dataclasses.replace(bundle, kem_prekey=KemPreKey(kem.id, _flip(kem.public), kem.signature)),
    ]
    for b in forged:
        with pytest.raises(BundleError, match="does not verify"):
            b.verify()
        with pytest.raises(BundleError, match="does not verify"):  # a refusal is never remembered
            b.verify()
    assert (memo.misses, memo.hits, len(memo)) == (9, 1, 1)
    # the memo is not part of the bundle's value
    assert bundle == dataclasses.replace(bundle, verified=None)


def test_a_full_memo_starts_again() -> None:
    memo = VerifiedBundles(size=1)
    memo.add(b"a")
    memo.add(b"b")
    assert b"b" in memo and b"a" not in memo and len(memo) == 1
    with pytest.raises(ValueError, match="size must be at least 1"):
        VerifiedBundles(size=0)


def test_a_run_with_shared_verified_bundles_is_byte_identical_to_one_without(tmp_path: Path) -> None:
    scenario = scale_scenario(30, 200, 5)
    runs = []
    for i, share in enumerate((False, True)):
        sim = Simulation(
            scenario, db_path=str(tmp_path / f"{i}.db"), capture_frames=True, share_verified_bundles=share
        )
        result = sim.run()
        runs.append(
            (result.frames_to_relay, [dict(m.delivered) for m in result.messages], sim.verified_bundles)
        )
    (frames0, delivered0, none), (frames, delivered, memo) = runs
    assert none is None and memo is not None and memo.hits > 0 and memo.misses > 0
    assert frames == frames0 and delivered == delivered0 and sum(map(len, delivered)) > 0
    assert (tmp_path / "0.db").read_bytes() == (tmp_path / "1.db").read_bytes()
