"""``relaysim bench analysis`` runs end to end at a small size and reports what it measured (no timing claims)."""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

import pytest

from relaysim.sims import cli
from relaysim.sims.bench import analysis, harness


def test_the_synthetic_day_is_sealed_messages_and_their_receipts_in_time_order() -> None:
    view, truth = analysis.synthetic_day(people=50, messages=401, seed=3)
    obs = view.observations
    assert len(obs) == 401 and all(o.sealed and o.kind == "sealed_send" for o in obs)
    times = [o.time for o in obs if o.time is not None]
    assert len(times) == 401 and times == sorted(times)
    assert times[0] > 0 and times[-1] < analysis.DAY + 1  # one day (a receipt may come just after it)
    assert all(o.account is None and o.host is None for o in obs)  # nothing of the sender
    assert {o.recipient_device for o in obs} == {1}  # the odd count's last message too
    assert len(truth) == 50 and all(len(c) >= 3 for c in truth.values())  # Barabási–Albert, m = 3
    # the same seed, the same day
    again, _ = analysis.synthetic_day(people=50, messages=401, seed=3)
    assert again.observations == obs


def test_json_has_the_attack_s_runs_what_it_found_and_the_target_judged_only_at_its_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--messages", "20000", "--people", "300", "--repeat", "2", "--json", "-", "--quiet", "--check"]
    assert analysis.main(argv) == 0  # --check: below the target's size, nothing is judged
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    r = report["results"]
    assert r["messages"] == 20000 and r["people"] == 300 and len(r["attack_seconds"]) == 2
    assert r["attack_median_seconds"] == pytest.approx(statistics.median(r["attack_seconds"]))
    assert r["targets"] == 150 and r["epoch_seconds"] == 1.0
    # with each message's receipt in its epoch, the writers come out on top
    assert r["targets_best_ranked_a_contact"] >= 0.8 * r["targets"]
    row = report["ratios"]["sda_seconds"]
    assert row["target"] is None and row["met"] is None  # set for 1,000,000 messages
    assert "not judged at 20,000" in captured.err and "target not judged" not in captured.err
    assert "no target is judged by this run" in captured.err and "every target met" not in captured.err


def test_at_the_target_s_size_the_target_is_judged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(analysis, "TARGET_MESSAGES", 2000)
    monkeypatch.setattr(
        analysis, "TARGET", harness.Target("sda_seconds", "SDA", "<=", 0.0)
    )  # none can meet it
    assert (
        analysis.main(["--messages", "2000", "--people", "100", "--repeat", "1", "--quiet", "--check"]) == 1
    )
    captured = capsys.readouterr()
    assert "MISSED" in captured.out and "target MISSED: SDA over 2,000 sealed messages" in captured.err


def test_relaysim_bench_reaches_the_analysis_and_sweep_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    for what, words in (
        ("analysis", "The attack on sealed sender"),
        ("sweep", "once on a pool of one worker process"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["bench", what, "--help"])
        assert exc.value.code == 0
        assert words in capsys.readouterr().out, what


def test_keep_top_is_set_beside_the_full_ranking_and_kept_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--messages", "20000", "--people", "300", "--repeat", "1", "--keep-top", "3"]
    argv += ["--keep-top-targets", "2", "--json", "-", "--quiet"]
    assert analysis.main(argv) == 0
    captured = capsys.readouterr()
    kt = json.loads(captured.out)["results"]["keep_top"]
    assert kt["keep_top"] == 3 and kt["targets"] == 2 and kt["identical"] is True
    assert kt["checkpoints"] > 2 and len(kt["seconds"]["full"]) == 1
    assert kt["full_over_keep_top"] == pytest.approx(
        kt["median_seconds"]["full"] / kt["median_seconds"]["keep_top"]
    )
    assert "keep_top = 3 against the full ranking" in captured.err
    assert "what keep_top kept is the full ranking's: yes" in captured.err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--keep-top", "-1"], "argument --keep-top: expected at least 0 accounts, got -1"),
        (["--keep-top", "1_0"], "argument --keep-top: expected a whole number of accounts (digits 0-9)"),
        (
            ["--keep-top", "1", "--keep-top-targets", "0"],
            "argument --keep-top-targets: expected at least 1 targets, got 0",
        ),
        (["--keep-top-targets", "10001"], "argument --keep-top-targets: expected at most 10,000 targets"),
    ],
)
def test_bad_keep_top_options_are_refused_by_name(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        analysis.main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_the_attack_s_rankings_past_their_bound_are_refused_naming_the_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``measure`` runs the attack as analyze does, every account with a non-zero score kept at each
    checkpoint: at a large --people and --messages those rankings pass the attack's bound (1 GiB,
    sims.analysis.sda.MAX_RANKING_BYTES). Here at a small bound: refused with the options that make
    the traffic named, not a ValueError's traceback (nor, unbounded, the machine's memory)."""
    from relaysim.sims.analysis import sda

    argv = ["--messages", "4000", "--people", "200", "--repeat", "1", "--quiet"]
    assert analysis.main([*argv, "--json", "-"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sda, "MAX_RANKING_BYTES", 10_000)
    assert analysis.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("relaysim bench analysis: --people 200 and --messages 4,000: the attack's rankings")
    assert "past its bound of 10,000 (sims.analysis.sda.MAX_RANKING_BYTES)" in err
    assert err.rstrip().endswith("ask for fewer --messages or --people") and "Traceback" not in err


def test_the_full_ranking_keep_top_is_timed_against_is_bounded_before_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--keep-top times keep_top against the full ranking (every account with a non-zero score at each
    of 201 checkpoints per target), which ran unbounded: a large --keep-top-targets and --people could
    fill the memory. It is counted first and, past the bound, refused naming the options, before it
    runs (here at a small bound); the count is what the full ranking keeps."""
    from relaysim.sims.analysis.sda import statistical_disclosure

    argv = ["--messages", "4000", "--people", "200", "--repeat", "1", "--keep-top", "3"]
    argv += ["--keep-top-targets", "3", "--quiet"]
    full_runs: list[Any] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("keep_top") is None and kwargs.get("checkpoints") not in (None, ()):
            full_runs.append(kwargs["checkpoints"])
        return statistical_disclosure(*args, **kwargs)

    monkeypatch.setattr(analysis, "statistical_disclosure", counted)
    monkeypatch.setattr(analysis, "FULL_RANKING_BYTES", 10_000)
    assert analysis.main(argv) == 1
    err = capsys.readouterr().err
    assert not full_runs  # refused before the full ranking ran
    found = re.search(
        r"relaysim bench analysis: --keep-top-targets 3 and --people 200: the full ranking --keep-top is timed "
        r"against would keep ([\d,]+) bytes \(every account with a non-zero score at each of ([\d,]+) "
        r"checkpoints\), past the bound of 10,000 \(FULL_RANKING_BYTES\); ask for fewer --keep-top-targets or "
        r"--people",
        err,
    )
    assert found is not None and "Traceback" not in err, err
    # the count is the full ranking's own
    view, _ = analysis.synthetic_day(200, 4000, 1)
    chosen = [
        r.target for r in statistical_disclosure(view, receipts=True, max_targets=3, checkpoints=()).rankings
    ]
    full = statistical_disclosure(
        view, targets=chosen, receipts=True, checkpoints=range(1, analysis.KEEP_TOP_EPOCHS + 1)
    )
    kept = sum(idx.nbytes + sc.nbytes for r in full.rankings for _, idx, sc in r._arrays)
    assert int(found.group(1).replace(",", "")) == kept > 10_000
    assert int(found.group(2).replace(",", "")) == sum(len(r.checkpoints()) for r in full.rankings)
    # within the bound, it runs
    monkeypatch.setattr(analysis, "FULL_RANKING_BYTES", kept)
    assert analysis.main(argv) == 0 and len(full_runs) == 1
