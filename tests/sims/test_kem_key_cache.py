"""The last-resort ML-KEM decapsulation keys a simulation keeps (clients.keys.DecapsulationKeys,
Simulation(kem_key_cache=N)): a memo of key generation from a seed, so a run is byte-identical with
or without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaysim.clients import _primitives as _p
from relaysim.clients.keys import DecapsulationKeys, PreKeySecrets
from relaysim.clients.session import Device
from relaysim.sims.bench.sim import scale_scenario
from relaysim.sims.world.simulation import Simulation
from relaysim.sims.world.util import KeyStream


def _secrets() -> PreKeySecrets:
    device = Device("ana", 1, rng=KeyStream(bytes(range(32))).randbytes, pq=True)
    device.generate_prekeys(1, 2)  # two one-time KEM prekeys and the last-resort one
    return device.secrets


def test_only_the_last_resort_key_is_kept_and_it_decapsulates_as_its_seed_does() -> None:
    kem = _secrets().kem
    cache = DecapsulationKeys(4)
    kem.cache = cache
    last = next(i for i in kem if kem.last_resort(i))
    one_time = [i for i in kem if not kem.last_resort(i)]
    assert len(one_time) == 2
    for i in one_time:
        assert kem.decapsulation_key(i) == kem.seed(i)  # used once: never kept
    seed = kem.seed(last)
    assert seed is not None
    key = kem.decapsulation_key(last)
    assert key is not seed and kem.decapsulation_key(last) is key
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)
    public = kem[last][1].public
    shared, ciphertext = _p.mlkem_encapsulate(public)
    assert _p.mlkem_decapsulate(key, ciphertext) == _p.mlkem_decapsulate(seed, ciphertext) == shared
    assert kem.decapsulation_key(10**6) is None


def test_the_cache_keeps_the_keys_used_last() -> None:
    cache = DecapsulationKeys(2)
    seeds = [bytes([i]) * 64 for i in range(3)]
    first = cache.get(seeds[0])
    cache.get(seeds[1])
    assert cache.get(seeds[0]) is first  # used again: now the newest
    cache.get(seeds[2])  # evicts seeds[1], the oldest
    assert len(cache) == 2 and cache.get(seeds[0]) is first
    assert (cache.hits, cache.misses) == (2, 3)
    cache.get(seeds[1])
    assert cache.misses == 4
    with pytest.raises(ValueError, match="size must be at least 1"):
        DecapsulationKeys(0)


def _counting_keygen(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every seed FIPS 203 key generation runs on (public key included)."""
    seen: list[bytes] = []
    real = _p.mlkem_keypair_from_seed

    def counting(seed: bytes) -> tuple[object, bytes]:
        seen.append(seed)
        return real(seed)

    monkeypatch.setattr(_p, "mlkem_keypair_from_seed", counting)
    return seen


def test_a_bundle_makes_again_only_the_kem_prekey_it_hands_out(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _secrets()
    before = secrets.bundle()
    secrets.kem.forget_publics()  # as a phone does once its keys are uploaded
    seen = _counting_keygen(monkeypatch)
    bundle = secrets.bundle()
    assert bundle == before and bundle.kem_prekey is not None and not bundle.kem_prekey.last_resort
    assert seen == [secrets.kem.seed(bundle.kem_prekey.id)]  # the one handed out, made once
    for i in [i for i in secrets.kem if not secrets.kem.last_resort(i)]:
        del secrets.kem[i]
    seen.clear()
    last = secrets.bundle().kem_prekey
    assert last is not None and last.last_resort and len(seen) == 1


def test_a_kept_last_resort_key_gives_its_public_key_without_key_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kem = _secrets().kem
    whole = {i: kem[i] for i in kem}
    kem.forget_publics()
    cache = DecapsulationKeys(4)
    kem.cache = cache
    last = next(i for i in kem if kem.last_resort(i))
    seen = _counting_keygen(monkeypatch)
    assert kem[last] == whole[last]  # not kept yet: made once, then kept with its decapsulation key
    assert kem[last] == whole[last] and len(seen) == 1
    assert kem.decapsulation_key(last) is kem.decapsulation_key(last)  # the key made for the public one
    assert (cache.misses, cache.hits, len(cache)) == (0, 2, 1)  # decapsulations only are counted
    fresh = DecapsulationKeys(4)  # a key kept for decapsulating first: its public key from it, no keygen
    kem.cache = fresh
    fresh.get(kem.seed(last) or b"")
    seen.clear()
    assert kem[last] == whole[last] and seen == []
    one_time = next(i for i in kem if not kem.last_resort(i))
    assert kem[one_time] == whole[one_time] and len(seen) == 1  # one-time keys are never kept


def test_a_run_with_the_kem_key_cache_is_byte_identical_to_one_without(tmp_path: Path) -> None:
    scenario = scale_scenario(30, 200, 5)
    runs = []
    for i, size in enumerate((0, 3)):
        sim = Simulation(scenario, db_path=str(tmp_path / f"{i}.db"), capture_frames=True, kem_key_cache=size)
        result = sim.run()
        runs.append((result.frames_to_relay, [dict(m.delivered) for m in result.messages], sim))
    (frames0, delivered0, sim0), (frames, delivered, sim) = runs
    cache = sim.kem_keys
    assert sim0.kem_keys is None and cache is not None
    # the phones of the three people with the most contacts keep their key, and no others
    contacts = {p: len(c) for p, c in sim.graph.items()}
    keeping = sorted(contacts, key=lambda p: (-contacts[p], p))[:3]
    assert {d.spec.person for d in sim.devices.values() if d.agent.device.secrets.kem.cache is cache} == set(
        keeping
    )
    assert cache.hits > 0 and 0 < len(cache) <= 6
    assert frames == frames0 and delivered == delivered0 and sum(map(len, delivered)) > 0
    assert (tmp_path / "0.db").read_bytes() == (tmp_path / "1.db").read_bytes()
