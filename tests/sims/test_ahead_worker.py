"""The recipients' exchanges computed on the second core while messages travel (sims.world.ahead):
the worker answers what ``clients.ahead.compute_ahead`` answers, and a run is byte-identical with
or without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaysim.clients.ahead import AHEAD_BASE, AHEAD_DH, compute_ahead
from relaysim.sims.bench.sim import scale_scenario
from relaysim.sims.world.ahead import AheadWorker
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


class _Waiting(Simulation):
    _ahead_wait = 60.0  # every answer is back before it is asked for, however slow the worker


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
