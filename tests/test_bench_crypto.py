"""``relaysim bench crypto`` runs end to end and reports every contender and every ratio (no timing claims)."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

from sims.bench import crypto

HAS_VODOZEMAC = importlib.util.find_spec("vodozemac") is not None
HAS_DOUBLERATCHET = importlib.util.find_spec("doubleratchet") is not None


def expected_contenders() -> set[str]:
    keys = {"ours_one_direction", "floor_one_direction", "ours_alternating", "floor_alternating"}
    keys |= {"setup_x3dh", "setup_pqxdh"}
    if HAS_DOUBLERATCHET:
        keys |= {"doubleratchet_one_direction", "doubleratchet_alternating"}
    if HAS_VODOZEMAC:
        keys |= {
            "vodozemac_one_direction",
            "vodozemac_alternating",
            "setup_vodozemac",
            "setup_vodozemac_signed_otk",
        }
    return keys


def test_json_has_every_contender_and_the_ratios_computed_from_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert crypto.main(["--messages", "20", "--repeat", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))

    results = report["results"]
    assert expected_contenders() <= set(results)
    for key, r in results.items():
        assert math.isfinite(r["us_per_op"]) and r["us_per_op"] > 0, key
        assert len(r["samples"]) == 10, key  # 20 messages (or 50 setups) in 10 slices, one repeat
        assert r["us_per_op"] == pytest.approx(statistics.median(r["samples"])), key
    assert (
        report["config"]["messages"] == 20
        and report["config"]["repeat"] == 1
        and report["config"]["chunks"] == 10
    )

    ratios = report["ratios"]
    assert {r.key for r in crypto.RATIOS} == set(ratios)
    for spec_ratio in crypto.RATIOS:
        r = ratios[spec_ratio.key]
        num, den = results.get(spec_ratio.numerator), results.get(spec_ratio.denominator)
        if num is None or den is None:  # a peer that is not installed
            assert r["value"] is None and r["met"] is None
            continue
        value = num["us_per_op"] / den["us_per_op"]
        assert r["value"] == pytest.approx(value)
        slices = zip(num["samples"], den["samples"], strict=True)
        assert r["paired_median"] == pytest.approx(statistics.median(n / d for n, d in slices))
        if spec_ratio.target is None:
            assert r["met"] is None
        else:
            assert r["target"] == spec_ratio.target
            met = value <= spec_ratio.target if spec_ratio.comparison == "<=" else value >= spec_ratio.target
            assert r["met"] is met

    # the targets of performance.md are all there, with their bounds
    targets = {r.key: (r.comparison, r.target) for r in crypto.RATIOS if r.target is not None}
    assert targets == {
        "one_direction_vs_floor": ("<=", 1.15),
        "one_direction_vs_vodozemac": ("<=", 1.6),
        "one_direction_speedup_vs_doubleratchet": (">=", 3.5),
        "alternating_vs_vodozemac": ("<=", 1.15),
        "alternating_speedup_vs_doubleratchet": (">=", 2.0),
        "setup_x3dh_vs_vodozemac": ("<=", 1.2),
        "setup_pqxdh_vs_vodozemac": ("<=", 1.4),
    }

    b = report["breakdown"]
    ours = results["ours_one_direction"]["us_per_op"]
    assert b["ours_one_direction"] == ours
    assert b["state_machine"] == pytest.approx(ours - results["floor_one_direction"]["us_per_op"])
    assert all(p["us_per_call"] > 0 for p in b["parts"])
    x3dh, pqxdh = b["setup"]["setup_x3dh"], b["setup"]["setup_pqxdh"]
    counts = {p["part"]: p["calls_per_setup"] for p in x3dh["parts"]}
    assert (
        counts.get("x25519", 0) >= 8
        and counts.get("generate_dh", 0) >= 2
        and counts.get("xeddsa_verify") == 1
    )
    pq_counts = {p["part"]: p["calls_per_setup"] for p in pqxdh["parts"]}
    assert pq_counts.get("mlkem_encapsulate") == 1 and pq_counts.get("mlkem_decapsulate") == 1

    table = capsys.readouterr().out
    assert "targets (performance.md)" in table and "where the time goes" in table
    for key in expected_contenders():
        assert results[key]["label"] in table


def test_help_says_what_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        crypto.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--messages" in text and "--json" in text and "one direction" in text and "floor" in text


def test_bad_counts_are_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        crypto.main(["--messages", "0"])
    assert exc.value.code == 2
