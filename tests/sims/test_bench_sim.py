"""``relaysim bench sim`` runs end to end at a tiny size and reports every contender and ratio (no timing claims)."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from pathlib import Path

import pytest

from relaysim.relay import identity as relay_identity
from relaysim.sims.bench import harness, sim
from relaysim.sims.world.simulation import Simulation


def test_json_has_both_contenders_the_scale_runs_and_the_ratios_and_check_names_what_was_missed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One bound no run can meet, judged by the real ratio and check code.
    impossible = harness.Target(
        "sim_vs_ratchet", "simulated message / ratchet-only encrypt + decrypt", "<=", 0.0
    )
    monkeypatch.setattr(sim, "RATIOS", [impossible, *sim.RATIOS[1:]])
    argv = ["--pairs", "3", "--timed-messages", "60", "--registration-phones", "1"]
    assert sim.main([*argv, "--devices", "12", "--messages", "60", "--json", "-", "--check", "--quiet"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # --json -: stdout is the JSON alone
    assert "target MISSED: simulated message / ratchet-only encrypt + decrypt" in captured.err
    assert report["ratios"]["sim_vs_ratchet"]["met"] is False
    # a fit from 12 phones is printed for information, never judged: it over-predicts the target's size
    assert report["scale"]["at_target_size"] is False
    assert "target MISSED: scale: minutes" not in captured.err
    assert "target MISSED: scale: peak RSS" not in captured.err
    assert "for information, not judged: a fit from 12 phones" in captured.err

    results = report["results"]
    assert set(results) == {sim.SIM, sim.RATCHET}
    for key, r in results.items():
        assert r["samples"] and all(math.isfinite(s) and s > 0 for s in r["samples"]), key
        assert r["us_per_message"] == pytest.approx(statistics.median(r["samples"])), key
        assert math.isfinite(r["cpu_us_per_message"]) and r["cpu_us_per_message"] > 0, key  # for information
    sim_us, ratchet_us = results[sim.SIM]["us_per_message"], results[sim.RATCHET]["us_per_message"]
    ratio = report["ratios"]["sim_vs_ratchet"]
    assert ratio["value"] == pytest.approx(sim_us / ratchet_us)
    pairs = zip(results[sim.SIM]["samples"], results[sim.RATCHET]["samples"], strict=True)
    assert ratio["paired_median"] == pytest.approx(statistics.median(s / r for s, r in pairs))
    assert ratio["target"] == 0.0 and ratio["met"] is False

    setup = report["setup"]
    assert setup["registration_us_per_phone_in_sim"] > 0 and setup["warmup_us_per_pair_in_sim"] > 0
    registration = setup["registration"]
    counted = {p["op"]: p["calls"] for p in registration["parts"]}
    assert counted["xeddsa_sign"] >= 2 and counted["mlkem_keygen"] >= 1 and counted["relay_verify"] >= 2
    assert all(p["us_per_call"] > 0 for p in registration["parts"])

    components = report["breakdown"]["components"]
    assert {c["component"] for c in components} >= {"crypto", "wire", "relay_core", "store", "scheduler"}
    assert sum(c["share"] for c in components) == pytest.approx(1.0)
    assert sum(c["us_per_message"] for c in components) == pytest.approx(sim_us)

    floor = report["floor"]
    parts = {p["part"]: p["us_per_message"] for p in floor["parts"]}
    assert set(parts) == set(sim.FLOOR_PARTS) and all(v > 0 for v in parts.values())
    assert floor["us_per_message"] == pytest.approx(sum(parts.values()))
    assert floor["vs_ratchet"] == pytest.approx(floor["us_per_message"] / parts["ratchet"])
    assert floor["per_message"]["msgpack"] == 2.0  # a send and its ack reach the relay as bytes
    assert floor["per_message"]["sqlite"] > 0 and floor["per_message"]["events"] >= 5
    to_floor = report["ratios"]["sim_vs_floor"]  # each against the ratchet timed beside it
    assert to_floor["value"] == pytest.approx(ratio["value"] / floor["vs_ratchet"])
    assert to_floor["target"] is None and to_floor["met"] is None  # information: --check ignores it

    scale = report["scale"]
    one, two = scale["runs"]["1x"], scale["runs"]["2x"]
    for run in (scale["base_run"], one, two):
        assert run["finished"] and run["seconds"] > 0 and run["peak_rss_bytes"] > 0
        assert run["deliveries"] > 0 and run["devices_registered"] == run["devices"]
    assert one["devices"] == two["devices"] == 12 and two["messages"] > one["messages"]
    detail = report["ratios"]["scale_2x_vs_1x"]["detail"]
    assert detail["raw"] == pytest.approx(two["seconds"] / one["seconds"])
    assert detail["message_ratio"] == pytest.approx(two["messages"] / one["messages"])
    assert report["ratios"]["scale_2x_vs_1x"]["value"] == pytest.approx(detail["at_2x"])
    assert report["ratios"]["scale_2x_vs_1x"]["target"] == 2.2
    model = scale["model"]
    assert model["seconds_per_message"] == pytest.approx(
        (two["seconds"] - one["seconds"]) / (two["messages"] - one["messages"])
    )
    target = scale["extrapolated_to_target"]
    # a fit over two tiny, noisy runs can come out negative: check it is there, not its sign
    assert (
        target["devices"] == 100_000 and target["messages"] == 1_000_000 and math.isfinite(target["seconds"])
    )

    table = captured.err  # the table goes to stderr when the JSON goes to stdout
    assert (
        "targets (docs/performance.md)" in table and "where the time goes" in table and "(b) scale" in table
    )
    assert "in this process's CPU time" in table
    assert "the floor — what one timed message requires in this design" in table


@pytest.mark.parametrize("at_target", [True, False])
def test_the_extrapolated_minutes_and_gb_are_judged_only_from_runs_at_the_targets_size(
    at_target: bool,
) -> None:
    report = sim.Report({})
    report.scale = {
        "at_target_size": at_target,
        "extrapolated_to_target": {"seconds": 11 * 60.0, "peak_rss_bytes": 3e9},  # too slow, small enough
    }
    rows = {r["label"].split(" (fit")[0]: r for r in sim.judged_targets(report)}
    minutes = rows["scale: minutes at 100,000 devices, 1,000,000 messages"]
    rss = rows["scale: peak RSS GB at 100,000 devices, 1,000,000 messages"]
    assert minutes["value"] == 11.0 and rss["value"] == 3.0
    missed, unjudged = harness.not_met([minutes, rss])
    if at_target:
        assert (minutes["met"], rss["met"]) == (False, True) and missed == [minutes] and not unjudged
    else:
        assert minutes["target"] is None and rss["target"] is None and not missed and not unjudged
    assert sim.at_target_size(100_000, 1_000_000) and sim.at_target_size(200_000, 2_000_000)
    assert not sim.at_target_size(100, 1_000_000) and not sim.at_target_size(100_000, 1_000)


def test_the_steady_scenario_sends_one_way_after_three_warm_up_messages() -> None:
    scenario = sim.steady_scenario(pairs=2, messages=10)
    assert len(scenario.people) == 4
    for conversation in scenario.conversations:
        a, b = conversation.between
        warm = [m for m in conversation.messages if m.at < sim.TIMED_START]
        timed = [m for m in conversation.messages if m.at >= sim.TIMED_START]
        assert [(m.sender, m.recipient) for m in warm] == [(a, b), (b, a), (a, b)]
        assert len(timed) == 5 and all((m.sender, m.recipient) == (a, b) for m in timed)
        assert all(len(m.text.encode()) == len(sim.MESSAGE) for m in conversation.messages)


def test_the_steady_scenario_times_messages_alone_without_receipts(tmp_path: Path) -> None:
    """The baseline is one symmetric-ratchet message; a delivery receipt would add a second message
    (b → a) and make every following message carry a DH ratchet step."""
    scenario = sim.steady_scenario(pairs=2, messages=6)
    result = Simulation(scenario, db_path=str(tmp_path / "steady.db")).run()
    assert sum(len(m.delivered) for m in result.messages) == 6 + 2 * 3
    assert result.control["receipts_sent"] == 0 and result.control["receipts_received"] == 0


def test_help_says_what_is_measured_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sim.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--scale" in text and "--devices" in text and "--messages" in text and "ratchet" in text
    assert "relaysim bench sim --scale --devices" in text
    assert "--check" in text and "docs/performance.md" in text and "shared/" not in text


def test_the_default_targets_are_those_of_docs_performance_md() -> None:
    assert {r.key: (r.comparison, r.bound) for r in sim.RATIOS} == {
        "sim_vs_ratchet": ("<=", 2.0),
        "sim_vs_floor": ("<=", None),  # for information
        "scale_2x_vs_1x": ("<=", 2.2),
    }
    assert [(t.comparison, t.bound) for t in sim.SCALE_TARGETS] == [("<=", 10.0), ("<=", 4.0)]


@pytest.mark.parametrize(
    ("budget", "why"),
    [
        ("nan", "expected a number of seconds (digits 0-9, a point, an exponent), got 'nan'"),
        ("inf", "expected a number of seconds (digits 0-9, a point, an exponent), got 'inf'"),
        ("1e400", "expected a finite number of seconds, got '1e400'"),
        ("-1", "expected more than 0 seconds, got -1"),
        ("0", "expected more than 0 seconds, got 0"),
        ("86401", "expected at most 86400 seconds (a day), got 86401"),
    ],
)
def test_a_budget_that_is_no_positive_finite_number_is_refused(
    budget: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--budget nan`` passed the check (``nan <= 0`` is false); a run could never be stopped by it."""
    with pytest.raises(SystemExit) as exc:
        sim.main(["--budget", budget])
    assert exc.value.code == 2
    assert f"argument --budget: {why}" in capsys.readouterr().err


def test_relaysim_bench_sim_reaches_this_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from relaysim.sims.cli import main as relaysim

    with pytest.raises(SystemExit) as exc:
        relaysim(["bench", "sim", "--help"])
    assert exc.value.code == 0
    assert "relaysim bench sim" in capsys.readouterr().out


def test_one_scale_run_prints_its_wall_time_peak_rss_and_messages_delivered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sim.main(["--scale-run", "--devices", "8", "--messages", "30", "--json", "-", "--quiet"]) == 0
    captured = capsys.readouterr()
    run = json.loads(captured.out)
    assert run["finished"] and run["devices"] == 8 and run["receipts"] == "off"
    assert run["deliveries"] == run["messages"] > 0 and run["cpu_seconds"] > 0
    text = captured.err
    assert "wall time" in text and "peak RSS" in text and "CPU time" in text
    assert f"messages delivered {run['deliveries']:,} of {run['messages']:,}" in text
    assert "receipts off" in text and "load average" in text


def test_the_2x_ratio_is_also_given_in_cpu_time() -> None:
    """On a shared machine wall time includes waiting for a core: the CPU-time ratio is given beside."""
    one = {"finished": True, "seconds": 100.0, "cpu_seconds": 50.0, "messages": 1000}
    two = {"finished": True, "seconds": 300.0, "cpu_seconds": 100.0, "messages": 2000}
    ratio = sim.scale_ratio(one, two)
    assert ratio is not None and ratio["at_2x"] == 3.0 and ratio["cpu_at_2x"] == 2.0
    assert "in CPU time, interpolated the same way, 2.00×" in "\n".join(sim._scale_note({"detail": ratio}))


def test_the_relays_identity_key_conversion_is_timed_on_keys_it_has_not_converted_before(
    tmp_path: Path,
) -> None:
    """relay.identity keeps the last identity keys it converted (a registration's key, converted again
    at the login moments later): timing one key over and over times the kept one. A phone's first
    conversion is the whole computation; the breakdown counts each kind and times each on its own."""
    relay_identity._edwards.cache_clear()  # (the rig's phones have the same keys in every run)
    breakdown = sim.registration_breakdown(1, str(tmp_path))
    part = next(p for p in breakdown["parts"] if p["op"] == "relay_identity_key")
    assert part["calls"] == 2 and part["first_conversions"] == 1  # the registration's; the login's is kept
    assert part["us"] == pytest.approx(part["us_first"] + part["us_kept"])
    assert part["us_per_call"] == pytest.approx(part["us"] / part["calls"])


def _rows(path: str, table: str, order: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        db.close()


def test_the_floor_replays_exactly_what_the_timed_phase_asked_of_sqlite(tmp_path: Path) -> None:
    """The floor's SQLite part replays the statements recorded in the timed phase on the database as it
    was when the phase began: replayed, they must leave it as the run left it (a statement missed or
    recorded twice would not), and the frames and events counted are the phase's own."""
    messages = 24
    scenario = sim.steady_scenario(pairs=3, messages=messages)
    recorder = sim.record_floor(scenario, str(tmp_path))
    assert recorder.calls
    assert len(recorder.frames) == 2 * messages  # a send and its ack each, nothing else in the phase
    assert recorder.events >= 5 * messages  # app send, send, sent, deliver, ack, acked: each an event
    before = _rows(recorder.copy_path, "metadata", "seq")
    after_run = _rows(recorder.db_path, "metadata", "seq")
    assert len(after_run) >= len(before) + 3 * messages  # send, delivery, acknowledgement records
    assert sim.replay_statements(recorder.calls, recorder.copy_path) > 0
    assert _rows(recorder.copy_path, "metadata", "seq") == after_run
    assert _rows(recorder.copy_path, "envelopes", "id") == _rows(recorder.db_path, "envelopes", "id")


def test_bench_json_replaces_a_file_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json FILE was written in place (json.dump into an open file): a bench whose write failed left
    FILE truncated and half written. Now it is replaced whole, with the bytes json.dump wrote, or
    left as it was with nothing beside it."""
    import argparse
    import errno
    import os

    report = {"name": "bench", "samples": [1.5, 2.0], "ratios": {"a": None}}
    out = tmp_path / "bench.json"
    args = argparse.Namespace(json=str(out), check=False)
    assert harness.finish("sim", report, "table", args, []) == 0
    assert out.read_text(encoding="utf-8") == json.dumps(report, indent=2) + "\n"
    out.write_text("earlier\n", encoding="utf-8")

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space left on device") as info:
        harness.finish("sim", report, "table", args, [])
    assert info.value.filename == str(out)
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
    capsys.readouterr()
