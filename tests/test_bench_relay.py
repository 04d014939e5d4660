"""``relaysim bench relay`` runs end to end at a tiny size and reports every contender and ratio (no timing claims)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from sims.bench import relay


def test_json_has_every_contender_and_the_ratios_computed_from_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "relay.json"
    argv = ["--connections", "8", "--duration", "0.3", "--warmup", "0", "--repeat", "2"]
    assert relay.main([*argv, "--steps", "20", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["config"]["connections"] == 8 and report["config"]["repeat"] == 2

    results = report["results"]
    assert set(results) == set(relay.CONTENDERS)
    for kind, r in results.items():
        samples = r["envelopes_per_s_samples"]
        assert len(samples) == 2 and all(math.isfinite(s) and s > 0 for s in samples), kind
        assert r["envelopes_per_s"] == pytest.approx(statistics.median(samples)), kind
        assert r["frames_per_s"] == pytest.approx(r["envelopes_per_s"] * relay.FRAMES_PER_ENVELOPE[kind])
        assert r["envelopes_timed"] > 0, kind
        latency = r["latency_ms"]
        assert latency["samples"] > 0 and 0 < latency["p50"] <= latency["p99"], kind
        assert r["client_cpu_share"] > 0, kind
        memory = report["memory"][kind]
        assert memory["bytes_per_connection"] is None or math.isfinite(memory["bytes_per_connection"])

    ratios = report["ratios"]
    assert {r.key for r in relay.RATIOS} == set(ratios)
    for spec in relay.RATIOS:
        r = ratios[spec.key]
        num, den = results[spec.numerator], results[spec.denominator]
        value = num[spec.metric] / den[spec.metric]
        assert r["value"] == pytest.approx(value)
        assert r["met"] is (None if spec.target is None else value >= spec.target)
    assert ratios["relay_vs_echo_frames"]["target"] == 0.5  # performance.md: ≥ 50 % of the echo server

    breakdown = report["breakdown"]
    for kind in (relay.RELAY_DURABLE, relay.RELAY_VOLATILE):
        b = breakdown[kind]
        assert set(b["steps_us"]) == set(relay.STEP_LABELS)
        assert all(v > 0 for v in b["steps_us"].values())
        assert b["request_handling_us"] == pytest.approx(sum(b["steps_us"].values()))
        assert b["server_wall_us_per_envelope"] == pytest.approx(1e6 / results[kind]["envelopes_per_s"])
        assert b["core_group_commit_us"] > 0
    assert breakdown[relay.ECHO]["framing_us"] > 0

    table = capsys.readouterr().out
    assert "targets (performance.md)" in table and "where the time goes" in table
    assert "memory per idle connection" in table
    for kind in relay.CONTENDERS:
        assert results[kind]["label"] in table


def test_help_says_what_is_measured_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        relay.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--connections" in text and "echo" in text and "durable" in text
    assert "relaysim bench relay --connections" in text


def test_bad_options_are_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        relay.main(["--connections", "1"])
    assert exc.value.code == 2


def test_relaysim_bench_relay_reaches_this_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from sims.cli import main as relaysim

    with pytest.raises(SystemExit) as exc:
        relaysim(["bench", "relay", "--help"])
    assert exc.value.code == 0
    assert "relaysim bench relay" in capsys.readouterr().out
