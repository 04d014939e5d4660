"""The recipients' exchanges computed on the second core while messages travel (sims.world.ahead):
the worker answers what ``clients.ahead.compute_ahead`` answers, and a run is byte-identical with
or without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from relaysim.clients import _primitives as _p
from relaysim.clients.agent import DeviceAgent
from relaysim.clients.ahead import AHEAD_BASE, AHEAD_DH, AHEAD_VERIFY, compute_ahead
from relaysim.sims.bench.sim import scale_scenario
from relaysim.sims.world import simulation as simulation_module
from relaysim.sims.world.ahead import SPIN, AheadWorker, spin_seconds
from relaysim.sims.world.simulation import Simulation
from tests.helpers import run_with_and_without


def test_the_worker_answers_in_order_and_says_what_it_cost() -> None:
    keys = [bytes([i]) * 32 for i in range(1, 6)]
    jobs = [(AHEAD_BASE, k) for k in keys] + [(AHEAD_DH, keys[0], keys[1]), (AHEAD_DH, keys[0], bytes(32))]
    worker = AheadWorker(wait=60.0)
    try:
        worker.ask(jobs[:3])
        worker.ask(jobs[3:])
        worker.refill()
        table = worker.table
        expected = compute_ahead(jobs)
        assert table.pending == {} and worker.answered == len(jobs) - 1  # the refused one is not held
        assert [table.base[k] for k in keys] == expected[:5]
        assert table.dh == {(keys[0], keys[1]): expected[5]}
        assert table.take(table.dh, (keys[0], keys[1])) == expected[5] and table.hits == 1
        assert table.take(table.dh, (keys[0], keys[1])) is None and table.misses == 1  # used once
    finally:
        stats = worker.close()
    assert stats["asked"] == len(jobs) and stats["dropped"] == 0 and stats["worker_cpu_seconds"] > 0
    worker.ask(jobs)  # after close: nothing is sent, nothing fails
    assert worker.asked == len(jobs)


def test_the_worker_polls_for_questions_only_with_a_core_of_its_own() -> None:
    # On one core, a worker polling for 5 ms after each question would take the core from the
    # simulation it serves: there it waits in select instead.
    assert spin_seconds(1) == 0.0
    assert spin_seconds(2) == spin_seconds(64) == SPIN > 0


def test_a_question_asked_already_is_asked_again_only_once_its_answer_is_taken() -> None:
    keys = [bytes([i]) * 32 for i in range(1, 4)]
    jobs = [(AHEAD_BASE, k) for k in keys]
    worker = AheadWorker(wait=60.0)
    try:
        worker.ask(jobs[:2])
        worker.ask(jobs, new_only=True)  # two of them asked already (their answers still to come or held)
        assert worker.asked == 3
        worker.refill()
        assert worker.table.known(jobs[0]) and worker.table.take(worker.table.base, keys[0]) is not None
        worker.ask(jobs, new_only=True)  # the one taken is asked again; the two held are not
        assert worker.asked == 4
        worker.ask(jobs)  # without new_only, every one
        assert worker.asked == 7
    finally:
        worker.close()


class _Waiting(Simulation):
    _ahead_wait = 60.0  # every answer is back before it is asked for, however slow the worker


@pytest.fixture
def short_lookahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sessions' questions asked 8 planned messages ahead (a test scenario has fewer than the default)."""
    monkeypatch.setattr(simulation_module, "SESSION_LOOKAHEAD", 8)


class _CountingWorker(AheadWorker):
    """Counts the signature checks it sends the worker, by the hook that asks (``hook``)."""

    hook = "recipient"
    checks: ClassVar[dict[str, int]] = {}

    def ask(self, jobs: list[tuple[Any, ...]], *, new_only: bool = False) -> None:
        if new_only:
            jobs = [job for job in jobs if not self.table.known(job)]
        self.checks[self.hook] = self.checks.get(self.hook, 0) + sum(
            1 for job in jobs if job[0] == AHEAD_VERIFY
        )
        super().ask(jobs)


class _Counting(_Waiting):
    def _ask_session_ahead(self, m: Any) -> None:
        _CountingWorker.hook = "planned"
        super()._ask_session_ahead(m)
        _CountingWorker.hook = "recipient"

    def _ask_bundle_ahead(self, d: Any, frame: Any) -> None:
        _CountingWorker.hook = "bundle"
        super()._ask_bundle_ahead(d, frame)
        _CountingWorker.hook = "recipient"


def test_a_planned_message_s_session_is_asked_for_before_its_bundle_comes(
    tmp_path: Path, short_lookahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most of what starting a session will compute (the bundle's signature checks among it) is
    asked SESSION_LOOKAHEAD planned messages before the message that starts it; when the bundle
    comes, only what was not asked then is asked."""
    monkeypatch.setattr(simulation_module, "AheadWorker", _CountingWorker)
    monkeypatch.setattr(_CountingWorker, "checks", {})
    sim = _Counting(
        scale_scenario(12, 80, 7),
        db_path=str(tmp_path / "r.db"),
        compact_device_rng=True,
        exchanges_ahead=True,
    )
    sim.run()
    checks = _CountingWorker.checks
    assert checks.get("planned", 0) > 0 and checks.get("bundle", 0) < checks["planned"]
    assert sim.ahead_stats["taken"] >= 0.5 * sim.ahead_stats["answered"]


@pytest.mark.usefixtures("short_lookahead")
def test_a_run_with_exchanges_ahead_is_byte_identical_to_one_without(tmp_path: Path) -> None:
    (frames, delivered, stats), (frames0, delivered0, stats0) = run_with_and_without(
        scale_scenario(12, 80, 7), tmp_path, _Waiting, Simulation, "exchanges_ahead", "ahead_stats"
    )
    assert stats0 == {} and stats["asked"] > 0 and stats["dropped"] == 0
    # every answer was back in time, and most were taken (a guess can be wrong: another draw first)
    assert stats["answered"] > 0 and stats["taken"] >= 0.5 * stats["answered"]
    assert frames == frames0 and delivered == delivered0 and sum(map(len, delivered)) == len(delivered) > 0
    assert (tmp_path / "0.db").read_bytes() == (tmp_path / "1.db").read_bytes()


def test_exchanges_ahead_need_the_compact_key_streams(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exchanges_ahead=True\\) needs compact_device_rng=True"):
        Simulation(scale_scenario(3, 3, 1), db_path=str(tmp_path / "r.db"), exchanges_ahead=True)


class _Published(_Waiting):
    """Checks every bundle ``_ask_session_ahead`` reads against the one the phone would say."""

    keygens: ClassVar[list[bytes]] = []
    compared: ClassVar[list[bool]] = []

    def _published_bundle(self, r: Any) -> Any:
        real = _p.mlkem_keypair_from_seed
        _p.mlkem_keypair_from_seed = lambda seed: self.keygens.append(seed) or real(seed)  # type: ignore[assignment]
        try:
            bundle = super()._published_bundle(r)
        finally:
            _p.mlkem_keypair_from_seed = real  # type: ignore[assignment]
        assert len(r.agent.device.secrets.kem) == 1  # only the last-resort KEM prekey
        self.compared.append(bundle == r.agent.device.secrets.bundle(one_time=False))
        return bundle


def test_the_planned_sessions_bundle_is_the_relay_s_copy_of_what_the_phone_publishes(
    tmp_path: Path, short_lookahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone that holds only its last-resort KEM prekey (a scale run's) is not asked for its bundle:
    saying it would make that key's public key again from its seed (FIPS 203 key generation). The
    relay's copy is read instead, and it is the bundle the phone would say."""
    monkeypatch.setattr(_Published, "keygens", [])
    monkeypatch.setattr(_Published, "compared", [])
    sim = _Published(
        scale_scenario(12, 80, 7),
        db_path=str(tmp_path / "r.db"),
        compact_device_rng=True,
        kem_prekey_batch=0,
        exchanges_ahead=True,
    )
    sim.run()
    assert len(_Published.compared) > 10 and all(_Published.compared)
    assert _Published.keygens == []


def test_a_one_time_prekey_top_up_s_key_pairs_are_asked_for_with_the_message_that_starts_it(
    tmp_path: Path, short_lookahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prekey message that takes one of its recipient's last one-time prekeys above the low-water
    mark brings a top-up (``DeviceAgent._top_up``): its key pairs are asked for when that message is
    sent (``DeviceAgent.top_up_ahead``), and the phone takes them instead of computing them."""
    computed = {"in_top_ups": 0, "top_ups": 0}
    base, top_up = _p._sodium_scalarmult_base, DeviceAgent._top_up
    in_top_up = [False]

    def counting_base(k: bytes) -> bytes:
        computed["in_top_ups"] += in_top_up[0]
        return base(k)

    def counting_top_up(self: DeviceAgent, *, force: bool = False) -> None:
        before = len(self.device.secrets.one_time)
        in_top_up[0] = True
        try:
            top_up(self, force=force)
        finally:
            in_top_up[0] = False
        computed["top_ups"] += len(self.device.secrets.one_time) > before

    monkeypatch.setattr(_p, "_sodium_scalarmult_base", counting_base)
    monkeypatch.setattr(DeviceAgent, "_top_up", counting_top_up)
    sim = _Waiting(
        scale_scenario(40, 400, 7),
        db_path=str(tmp_path / "r.db"),
        compact_device_rng=True,
        exchanges_ahead=True,
    )
    sim.run()
    made = computed["top_ups"] * simulation_module.SIM_PREKEY_BATCH
    assert computed["top_ups"] > 0
    assert computed["in_top_ups"] <= made // 4, computed  # most taken from the worker's answers
