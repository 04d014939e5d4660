"""``relaysim sweep``: a grid of runs on a process pool or a Dask cluster, resumable and deterministic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relaysim.sims.cli import main
from relaysim.sims.scenario import ScenarioError
from relaysim.sims.sweep import (
    SweepError,
    apply_param,
    build_scenario,
    mean_ci,
    parse_param,
    render_svg,
    run_key,
    run_sweep,
    t_quantile_975,
)

ROOT = Path(__file__).resolve().parents[2]

# Two phones, five messages, a subpoena at the end: a run takes a fraction of a second.
TINY = """\
[scenario]
name = "tiny"
duration = "40m"
seed = 11

[network]
latency_ms = 40
jitter_ms = 10

[relay]
profile = "keep-everything"

[[people]]
name = "amira"
devices = [{ region = "pk", address = "203.0.113.24" }]

[[people]]
name = "ben"
devices = [{ region = "us", address = "198.51.100.77" }]

[[conversations]]
between = ["amira", "ben"]
messages = [
  { at = "1m", from = "amira", text = "one" },
  { at = "2m", from = "ben", text = "two" },
  { at = "3m", from = "amira", text = "three" },
  { at = "4m", from = "ben", text = "four" },
  { at = "5m", from = "amira", text = "five" },
]

[[events]]
at = "30m"
kind = "legal_process"
process = "subpoena"
target = "amira"
name = "subpoena-amira"
"""

GRID = ["--param", "network.loss=0,0.3", "--param", "relay.sealed_sender=true,false", "--seeds", "2"]
OUTPUTS = ("sweep.json", "sweep.md", "sweep.svg")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def _sweep_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process, bounded in time so a stuck pool or cluster cannot hang the suite."""
    return subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", "sweep", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


# --- parameters and statistics -------------------------------------------------------------------


def test_param_values_are_toml_values_and_bare_words_are_strings() -> None:
    assert parse_param("network.loss=0,0.1, 0.2") == ("network.loss", [0, 0.1, 0.2])
    assert parse_param("relay.sealed_sender=true,false") == ("relay.sealed_sender", [True, False])
    assert parse_param("relay.profile=signal,whatsapp") == ("relay.profile", ["signal", "whatsapp"])
    assert parse_param('x.y=[1,2],"a,b",{ c = 1 }') == ("x.y", [[1, 2], "a,b", {"c": 1}])
    for bad in ("network.loss", "=1", "network..loss=1", "network.loss=1,,2", "a.b=1,1", "scenario.seed=1,2"):
        with pytest.raises(SweepError, match="--param"):
            parse_param(bad)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ("0,0.0", " (0 and 0.0 are one value)"),
        ("1, 1e0", " (1 and 1e0 are one value)"),
        ("0.5,-0.0,0", " (-0.0 and 0 are one value)"),
        ("0.1,0.1", ""),
    ],
)
def test_a_param_value_given_twice_as_two_numbers_is_refused(
    values: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--param network.loss=0,0.0`` (two TOML values, an integer and a float: the same number, the
    same runs) was two cells, and the plot's numeric axis, from 0 to 0, divided by its width: an
    internal error (ZeroDivisionError) after every run was made. It is a value given twice, before
    anything runs."""
    with pytest.raises(SweepError) as info:
        parse_param(f"network.loss={values}")
    assert str(info.value) == f"--param {f'network.loss={values}'!r}: a value is given twice{said}"
    out = tmp_path / "sweep"
    assert (
        main(["sweep", "two-friends", "--param", f"network.loss={values}", "--seeds", "1", "--out", str(out)])
        == 2
    )
    assert "a value is given twice" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[" * 5000 + "]" * 5000, "--param network.loss: a value nested too deeply to read"),
        ("1" * 5000, "--param network.loss: a value that cannot be read: Exceeds the limit (4300 digits)"),
    ],
)
def test_a_param_value_tomllib_cannot_read_is_a_sweep_error(value: str, expected: str) -> None:
    """tomllib's RecursionError (nesting past the recursion limit) and bare ValueError (an integer
    of more than 4,300 digits) were no TOMLDecodeError: `relaysim sweep` said "internal error"."""
    with pytest.raises(SweepError) as info:
        parse_param(f"network.loss=0,{value}")
    assert str(info.value).startswith(expected), str(info.value)[:200]


def test_a_scenario_file_tomllib_cannot_read_is_a_scenario_error() -> None:
    with pytest.raises(
        ScenarioError, match=r"^deep\.toml: not valid TOML: arrays or tables nested too deeply"
    ):
        build_scenario("x = " + "[" * 5000 + "]" * 5000, "deep.toml", [])


def test_a_param_goes_into_the_parsed_file_before_validation() -> None:
    data = {"network": {"loss": 0.0}, "people": [{"name": "a", "devices": [{"region": "us"}]}]}
    apply_param(data, "network.loss", 0.25, "f.toml")
    apply_param(data, "people.0.devices.0.region", "pk", "f.toml")
    apply_param(data, "generate.people", 20, "f.toml")
    assert data["network"] == {"loss": 0.25}
    assert data["people"][0]["devices"][0]["region"] == "pk"
    assert data["generate"] == {"people": 20}
    sc = build_scenario(TINY, "tiny.toml", [("network.loss", 0.3), ("relay.profile", "signal")])
    assert sc.network.loss == 0.3 and sc.relay.profile == "signal"


def test_an_error_in_the_file_names_its_line_as_relaysim_run_does() -> None:
    """relaysim run says the line of a key that is wrong (parse_scenario); sweep, which puts its
    --param values in before it validates, said none. A key of the file's own is given its line;
    one a --param set (or one in a table or array a --param set) is not the file's, and has none."""
    from relaysim.sims.scenario import ScenarioError, parse_scenario

    bad = TINY.replace('{ at = "2m"', '{ at = "2x"')
    with pytest.raises(ScenarioError) as run:
        parse_scenario(bad, "tiny.toml")
    assert str(run.value).endswith("(line 25)"), str(run.value)
    for params in ([], [("network.loss", 0.3)], [("people.1.devices.0.region", "pk")]):
        with pytest.raises(ScenarioError) as info:
            build_scenario(bad, "tiny.toml", params)
        assert str(info.value).endswith(str(run.value).split(": ", 1)[1]), str(info.value)
    for key, value in (
        ("conversations.0.messages.1.at", "2x"),
        ("conversations.0.messages", [{"at": "2x", "from": "ben", "text": "t"}]),
    ):
        with pytest.raises(ScenarioError, match=r"expected a duration") as info:
            build_scenario(TINY, "tiny.toml", [(key, value)])
        assert "(line" not in str(info.value), str(info.value)


def test_an_error_a_param_causes_elsewhere_names_the_param() -> None:
    """--param relay.region=zz made the file's network.latency wrong, and the error named only that
    key (the file's, with its line), not the --param that broke it."""
    text = TINY.replace(
        "jitter_ms = 10",
        'jitter_ms = 10\nlatency = [{ between = ["pk", "ca"], ms = 180 }, { between = ["pk", "us"], ms = 180 }, '
        '{ between = ["ca", "us"], ms = 30 }]',
    )
    text = text.replace('profile = "keep-everything"', 'profile = "keep-everything"\nregion = "ca"')
    assert build_scenario(text, "tiny.toml", []).network is not None
    for params in ([("relay.region", "us")], [("network.loss", 0.1), ("relay.region", "us")]):
        with pytest.raises(ScenarioError) as info:
            build_scenario(text, "tiny.toml", params)
        assert info.value.path == "--param relay.region", str(info.value)
        assert (
            "this value makes the file's network.latency[0].between (line 9) wrong: expected regions where the relay or a device is ('pk', 'us'), got 'ca'"
            in str(info.value)
        )
    with pytest.raises(ScenarioError) as info:  # the file's own error stays the file's
        build_scenario(text.replace("ms = 180", "ms = -1"), "tiny.toml", [("network.loss", 0.1)])
    assert info.value.path.startswith("network.latency[0]"), str(info.value)


def test_a_param_that_makes_a_scenario_of_several_profiles_is_named_and_refused(
    tiny: Path, tmp_path: Path
) -> None:
    text = tiny.read_text(encoding="utf-8").replace('profile = "keep-everything"\n', 'region = "us"\n')
    tiny.write_text(text, encoding="utf-8")
    params = [("scenario.compare_profiles", [["signal", "whatsapp"], []])]
    with pytest.raises(ScenarioError) as info:
        run_sweep(str(tiny), params, 1, tmp_path / "sw")
    assert str(info.value).startswith(
        'tiny.toml [scenario.compare_profiles=["signal", "whatsapp"]]: scenario.compare_profiles: this scenario '
        "runs under several relay profiles (compare_profiles, signal, whatsapp), and relaysim sweep runs one "
        "relay under one profile"
    ), str(info.value)
    assert not (tmp_path / "sw").exists()


def test_a_param_is_validated_as_the_file_would_be() -> None:
    from relaysim.sims.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"defences\.receipt_batch: expected a positive duration"):
        build_scenario(TINY, "tiny.toml", [("defences.receipt_batch", 0)])


def test_a_device_some_seed_does_not_generate_is_refused_before_any_run(tmp_path: Path) -> None:
    from relaysim.sims.scenario import ScenarioError

    scenario = tmp_path / "gen.toml"
    scenario.write_text(
        '[scenario]\nname = "g"\nduration = "1h"\n\n[generate]\npeople = 10\n'
        "devices_per_person = { one = 0.5, two = 0.5 }\ngraph = { m = 2 }\n\n"
        '[[events]]\nat = "30m"\nkind = "device_offline"\ndevice = "p04/2"\n',
        encoding="utf-8",
    )
    # p04 has two devices with seed 0, one with seed 1
    with pytest.raises(
        ScenarioError, match=r"events\[0\]\.device: expected a device the seed generated \(with seed 1"
    ):
        run_sweep(str(scenario), [("network.loss", [0.0])], 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_student_t_quantiles_and_intervals() -> None:
    assert t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile_975(9) == pytest.approx(2.2622, abs=1e-4)
    assert t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # past the table: the series
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    assert t_quantile_975(10**6) == pytest.approx(1.95996, abs=1e-4)
    stat = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305 * math.sqrt(5 / 3) / 2  # t(3) · s / √n, s² = 5/3
    assert stat["n"] == 4 and stat["mean"] == 2.5
    assert stat["half_width"] == pytest.approx(half, abs=1e-6)
    assert stat["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-6)
    assert mean_ci([5.0]) == {"n": 1, "mean": 5.0, "ci95": None, "half_width": None}


def test_metrics_near_a_floats_limit_give_a_mean_and_a_plot_not_a_crash() -> None:
    """A run's record in DIR/runs edited to a metric near a float's limit: the spread's squares
    (OverflowError: internal error, exit 1), the plot's ticks (an int past a float's range: the same),
    and for a negative one ticks counting up from -inf, which never end (the sweep ate its memory)."""
    stat = mean_ci([1e300, 0.0])
    assert stat["n"] == 2 and stat["mean"] == 5e299
    assert stat["half_width"] == pytest.approx(12.7062 * 1e300 / 2, rel=1e-4)
    assert mean_ci([1.7e308, 1.7e308]) == {
        "n": 2,
        "mean": 1.7e308,
        "ci95": [1.7e308, 1.7e308],
        "half_width": 0.0,
    }
    assert mean_ci([1.7e308, -1.7e308]) == {"n": 2, "mean": 0.0, "ci95": None, "half_width": None}
    for big in (1.7e308, -1.7e308):
        data = {
            "scenario": "t",
            "params": [{"key": "network.loss", "values": [0, 0.1]}],
            "metrics": ["m"],
            "cells": [
                {"params": {"network.loss": loss}, "metrics": {"m": mean_ci([big, big])}} for loss in (0, 0.1)
            ],
        }
        data["cells"][0]["metrics"]["m"] = mean_ci([0.0, 0.0])
        svg = render_svg(data)
        ET.fromstring(svg)
        assert "values too large to plot" in svg and "nan" not in svg
    assert "too large" not in render_svg(data | {"cells": [data["cells"][0]]})


# --- the sweep -----------------------------------------------------------------------------------


def test_an_empty_dask_address_is_refused_not_run_here(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dask "$SCHEDULER"`` with SCHEDULER unset ran the whole sweep on this machine, unsaid."""
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tiny), "--dask", "", "--out", str(tmp_path / "sw")])
    assert exc.value.code == 2
    assert "argument --dask: expected a Dask scheduler's address, got ''" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()


def test_a_sweep_asks_for_no_more_worker_processes_than_runs(tiny: Path, tmp_path: Path) -> None:
    """``relaysim sweep X --workers 99999999999999999999`` was an internal error (OverflowError: the
    process pool's queue is sized in a C int)."""
    res = run_sweep(str(tiny), [("network.loss", [0])], 1, tmp_path / "sw", workers=10**20)
    assert (res.ran, res.reused) == (1, 0)


def test_a_sweep_run_is_the_run_relaysim_run_makes(tiny: Path, tmp_path: Path) -> None:
    from relaysim.sims.report import run_to_dir
    from relaysim.sims.scenario import load_scenario

    res = run_sweep(str(tiny), [("network.loss", [0.3])], 2, tmp_path / "sw", workers=2)
    assert (res.ran, res.reused) == (2, 0)
    for seed in (11, 12):
        saved = json.loads(
            (tmp_path / "sw" / "runs" / f"{run_key(TINY, [('network.loss', 0.3)], seed)}.json").read_text()
        )
        scenario = build_scenario(TINY, "tiny.toml", [("network.loss", 0.3)]).with_seed(seed)
        _result, summary = run_to_dir(scenario, tmp_path / f"run-{seed}")
        assert saved["summary"] == json.loads(json.dumps(summary)), seed
    cell = res.data["cells"][0]
    lost = [json.loads((tmp_path / f"run-{s}" / "summary.json").read_text())["messages"] for s in (11, 12)]
    assert cell["metrics"]["messages.lost_by_network"]["values"] == [m["lost_by_network"] for m in lost]
    # the default metrics include the disclosure's score shares
    assert "disclosures.subpoena-amira.score.contacts.share" in res.data["metrics"]
    assert load_scenario(tiny).seed == 11


def test_the_tables_are_identical_on_the_process_pool_and_on_a_dask_cluster(
    tiny: Path, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    pool = _sweep_cli(str(tiny), *GRID, "--out", str(tmp_path / "pool"), "--workers", "2")
    assert pool.returncode == 0, pool.stderr
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        dask = _sweep_cli(
            str(tiny), *GRID, "--out", str(tmp_path / "dask"), "--dask", cluster.scheduler_address, "--quiet"
        )
    assert dask.returncode == 0, dask.stderr
    assert "[8/8]" in pool.stderr and "[" not in dask.stderr  # progress, and --quiet
    for name in OUTPUTS:
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name
    data = json.loads((tmp_path / "pool" / "sweep.json").read_text())
    assert [c["params"] for c in data["cells"]] == [
        {"network.loss": 0, "relay.sealed_sender": True},
        {"network.loss": 0, "relay.sealed_sender": False},
        {"network.loss": 0.3, "relay.sealed_sender": True},
        {"network.loss": 0.3, "relay.sealed_sender": False},
    ]
    assert data["seeds"] == [11, 12]
    # sealed sender hides the sender from the relay: the subpoena names fewer contacts with it on
    share = "disclosures.subpoena-amira.score.contacts.share"
    no_loss = {c["params"]["relay.sealed_sender"]: c["metrics"][share]["mean"] for c in data["cells"][:2]}
    assert no_loss[False] > no_loss[True]
    table = (tmp_path / "pool" / "sweep.md").read_text()
    assert "| 0.3 | false |" in table and "±" in table
    svg = ET.parse(tmp_path / "pool" / "sweep.svg").getroot()
    assert svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}circle")) >= 4


def test_a_sweep_resumes_from_the_runs_it_saved(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    params = [("network.loss", [0, 0.3])]
    first = run_sweep(str(tiny), params, 2, out, workers=2)
    assert (first.ran, first.reused) == (4, 0)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    lines: list[str] = []
    again = run_sweep(str(tiny), params, 2, out, workers=2, progress=lines.append)
    assert (again.ran, again.reused) == (0, 4)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert lines[0].startswith("4 of 4 runs already done")
    # the saved runs are what the table is made from: a run cut short, or one whose summary was
    # changed since (a number of it doctored), is run again, the others are not
    key = run_key(TINY, [("network.loss", 0.3)], 12)
    (out / "runs" / f"{key}.json").write_text('{"params": [["network.loss", 0.3]], "seed"')
    other = out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json"
    doctored = json.loads(other.read_text())
    real = doctored["summary"]["messages"]["device_deliveries"]
    doctored["summary"]["messages"]["device_deliveries"] = 1000
    other.write_text(json.dumps(doctored))
    warned: list[str] = []
    more = run_sweep(str(tiny), params, 3, out, workers=2, warn=warned.append)  # and a third seed
    assert (more.ran, more.reused) == (4, 2)
    cell = more.data["cells"][0]["metrics"]["messages.device_deliveries"]
    assert cell["values"][0] == real != 1000 and cell["n"] == 3
    assert len(warned) == 1 and warned[0].startswith("2 saved run(s) in "), warned


def _one_run_sweep(tiny: Path, out: Path) -> list[str]:
    """A sweep of ``tiny`` that makes one run (network.loss=0, one seed, one worker) into ``out``."""
    return [
        "sweep",
        str(tiny),
        "--param",
        "network.loss=0",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--out",
        str(out),
    ]


@pytest.mark.parametrize(
    "record",
    [
        {"seed": 11, "summary": 5},
        {"seed": 11, "summary": []},
        {"seed": 11, "summary": {}},  # a run without its seed: not one the sweep wrote
        {"seed": 11, "summary": {"seed": 12}},  # another seed's summary under this run's name
        [],
    ],
    ids=["summary-a-number", "summary-a-list", "summary-empty", "another-seed", "a-list"],
)
def test_a_saved_run_that_is_not_a_runs_record_is_run_again(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], record: object
) -> None:
    """DIR/runs/<hash>.json edited into JSON of another shape: the sweep crashed (AttributeError:
    internal error, exit 1) or counted it as a finished run with no metrics."""
    out = tmp_path / "sw"
    argv = _one_run_sweep(tiny, out)
    assert main(argv) == 0
    before = (out / "sweep.json").read_bytes()
    capsys.readouterr()
    (out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json").write_text(json.dumps(record))
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "1 runs now, 0 reused" in captured.out
    assert (out / "sweep.json").read_bytes() == before


def _doctor(record: dict[str, Any], path: str, value: object) -> None:
    node = record["summary"]
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda r: _doctor(r, "messages.device_deliveries", 10**6),
            "was changed after the sweep wrote it (its check does not match)",
        ),
        (
            lambda r: _doctor(r, "messages.device_deliveries", float("nan")),
            "was changed after the sweep wrote it (its check does not match)",
        ),
        (
            lambda r: _doctor(r, "messages.device_deliveries", "7"),
            "was changed after the sweep wrote it (its check does not match)",
        ),
        (
            lambda r: _doctor(r, "latency_s.p50", 1e308),
            "was changed after the sweep wrote it (its check does not match)",
        ),
        (lambda r: r.pop("check"), "was changed after the sweep wrote it (its check does not match)"),
        (
            lambda r: r.update(key="0" * 32),
            "is the record of another run (another scenario, parameters or seed)",
        ),
    ],
    ids=["a-number", "nan", "a-string", "huge", "no-check", "another-key"],
)
def test_a_saved_run_changed_since_it_was_written_is_run_again_and_said(
    tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict], object],
    said: str,
) -> None:
    """A saved run's record whose summary was edited (a count doctored, NaN, a number as a string, a
    number huge) was put in the table as the run's, without a word; as was a record whose seed and
    summary were of this run but that another sweep's scenario or parameters made."""
    out = tmp_path / "sw"
    argv = [*_one_run_sweep(tiny, out), "--quiet"]
    assert main(argv) == 0
    before = (out / "sweep.json").read_bytes()
    path = out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    change(record)
    path.write_text(json.dumps(record), encoding="utf-8")
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "1 runs now, 0 reused" in captured.out
    assert captured.err == (
        f"relaysim sweep: warning: 1 saved run(s) in {out / 'runs'} cannot be reused, and are made again: "
        f"{path.name} {said}\n"
    ), captured.err
    assert (out / "sweep.json").read_bytes() == before


def test_a_saved_run_that_is_a_link_to_nothing_is_replaced_and_said(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs/<hash>.json a symbolic link to a file that is gone was replaced by the run made again
    without a word (the link, and where it pointed, lost)."""
    out = tmp_path / "sw"
    argv = [*_one_run_sweep(tiny, out), "--quiet"]
    assert main(argv) == 0
    before = (out / "sweep.json").read_bytes()
    path = out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere" / "run.json")
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "1 runs now, 0 reused" in captured.out
    assert captured.err == (
        f"relaysim sweep: warning: 1 saved run(s) in {out / 'runs'} cannot be reused, and are made again: "
        f"{path.name} is a symbolic link to {tmp_path / 'elsewhere' / 'run.json'}, which does not exist "
        "(the link is replaced by the run's record)\n"
    ), captured.err
    assert not path.is_symlink() and path.is_file() and not (tmp_path / "elsewhere").exists()
    assert (out / "sweep.json").read_bytes() == before


def test_a_folder_where_a_run_is_saved_is_refused_before_anything_runs(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs/<hash>.json a folder: the sweep said it would make the run again, made it, and then
    could not save it ("Is a directory", exit 2), leaving its temporary file in runs/."""
    out = tmp_path / "sw"
    argv = [*_one_run_sweep(tiny, out), "--quiet"]
    assert main(argv) == 0
    path = out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json"
    path.unlink()
    path.mkdir()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"relaysim sweep: {path}: a folder stands where the sweep saves a finished run; move it away, or "
        "give the sweep a folder of its own\n"
    ), err
    assert sorted(p.name for p in (out / "runs").iterdir()) == [path.name]


@pytest.mark.parametrize("name", ["sweep.json", "sweep.md", "sweep.svg"])
def test_a_folder_where_the_sweep_writes_its_table_is_refused_before_anything_runs(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """sweep.json (or .md, .svg) a folder: every run was made, then "OUT/.sweep.json.NNN.tmp →
    OUT/sweep.json: Is a directory" (the copy written to replace it named, exit 2)."""
    out = tmp_path / "sw"
    out.mkdir()
    (out / name).mkdir()
    assert main([*_one_run_sweep(tiny, out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"relaysim sweep: --out {out}: {name}, where the sweep writes its table, is a folder; move it away, "
        "or give the sweep a folder of its own\n"
    ), err
    assert sorted(p.name for p in out.iterdir()) == [name]  # (no run made: no runs/)


def test_a_run_of_another_sweep_saved_under_this_runs_name_is_not_reused(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs/ copied between two sweeps' folders (or a run's file renamed): a record of the same seed
    made from another scenario was reused as this one's (its seed was all that was checked)."""
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace("latency_ms = 40", "latency_ms = 400", 1), encoding="utf-8")
    assert other.read_text(encoding="utf-8") != TINY
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    run_sweep(str(other), [("network.loss", [0])], 1, theirs, workers=1)
    first = run_sweep(str(tiny), [("network.loss", [0])], 1, ours, workers=1)
    (theirs_file,) = (theirs / "runs").iterdir()
    (ours_file,) = (ours / "runs").iterdir()
    ours_file.write_bytes(theirs_file.read_bytes())
    warned: list[str] = []
    again = run_sweep(str(tiny), [("network.loss", [0])], 1, ours, workers=1, warn=warned.append)
    assert (again.ran, again.reused) == (1, 0)
    assert again.data["cells"] == first.data["cells"]
    assert warned and "is the record of another run" in warned[0], warned


def test_a_saved_run_whose_disclosures_are_no_list_is_no_crash(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's record of the right seed whose summary's disclosures is not a list: the default
    metrics read them (TypeError: internal error, exit 1); now they are a list or nothing. (Its
    check made again to match, as a record edited with care would be: it is reused.)"""
    from relaysim.sims.sweep import _record_check

    out = tmp_path / "sw"
    argv = _one_run_sweep(tiny, out)
    assert main([*argv, "--quiet"]) == 0
    path = out / "runs" / f"{run_key(TINY, [('network.loss', 0)], 11)}.json"
    record = json.loads(path.read_text())
    record["summary"]["disclosures"] = 5
    record["check"] = _record_check(record)
    path.write_text(json.dumps(record))
    assert main([*argv, "--quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "sweep.json").read_text())["metrics"]
    assert metrics and not [m for m in metrics if m.startswith("disclosures.")]


def test_a_sweep_never_writes_its_runs_through_a_symbolic_link(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DIR/runs -> a folder elsewhere: every run's summary was written there."""
    out = tmp_path / "sw"
    out.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (out / "runs").symlink_to(theirs)
    status = main(
        ["sweep", str(tiny), "--param", "network.loss=0", "--seeds", "1", "--out", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "symbolic link" in err and str(out / "runs") in err, err
    assert not list(theirs.iterdir())


def test_a_sweep_never_writes_beside_a_run_or_over_another_scenarios_sweep(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sw"
    run_sweep(str(tiny), [("network.loss", [0])], 1, out, workers=1)
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace('name = "tiny"', 'name = "other"'), encoding="utf-8")
    assert 'name = "other"' in other.read_text(encoding="utf-8")
    with pytest.raises(SweepError, match=r"holds a sweep of 'tiny'.*not of 'other'"):
        run_sweep(str(other), [("network.loss", [0])], 1, out, workers=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "transcript.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SweepError, match="holds a run, not a sweep"):
        run_sweep(str(tiny), [("network.loss", [0])], 1, run, workers=1)
    assert not (run / "runs").exists()


def test_bad_keys_and_values_get_the_validators_error_and_exit_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "network.los=0,0.1": "tiny.toml [network.los=0]: network.los: unknown key",
        "network.loss=0,2": "tiny.toml [network.loss=2]: network.loss: expected a probability from 0 to 1, got 2",
        "relay.profile=signal,nope": "relay.profile: expected one of",
        "people.7.name=x": "people.7.name: people is an array of 2",
        "network.loss": "--param 'network.loss': expected KEY=V1,V2",
    }
    for param, message in cases.items():
        assert main(["sweep", str(tiny), "--param", param, "--out", str(tmp_path / "bad"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("relaysim sweep: ") and message in err, (param, err)
    assert not (tmp_path / "bad" / "runs").exists() or not list((tmp_path / "bad" / "runs").iterdir())
    assert main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "bad")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_a_grid_too_large_to_finish_is_refused_before_it_is_made(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seeds 100000000000`` made the grid and checked each seed's people first: it hung, silent. Now
    --seeds alone is at most MAX_SWEEP_RUNS, read with the options, and the grid's cells times the seeds
    at most the same, before the grid is made."""
    out = tmp_path / "big"
    argv = ["sweep", str(tiny), "--param", "network.loss=0,0.1", "--seeds", "100000000000", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        "argument --seeds: expected at most 100,000 seeds (MAX_SWEEP_RUNS: the runs of all cells)" in err
    ), err
    argv = ["sweep", str(tiny), "--param", "network.loss=0,0.1", "--seeds", "60000", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--seeds 60,000 × 2 cell(s) is 120,000 runs: expected at most 100,000 in one sweep" in err, err
    assert not out.exists()


def test_sweep_help_has_an_example() -> None:
    res = _sweep_cli("--help")
    assert res.returncode == 0 and "relaysim sweep two-friends --param network.loss=" in res.stdout
    assert "95% confidence interval" in res.stdout
    top = subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert top.returncode == 0, top.stderr
    assert "sweep     run a scenario over a grid" in top.stdout and "relaysim sweep two-friends" in top.stdout


def test_the_sweep_bench_prints_the_speed_up_and_checks_the_tables_agree(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    res = subprocess.run(
        [
            *(sys.executable, "-m", "relaysim.sims.bench.sweep", "--runs", "5", "--messages", "2"),
            *("--json", str(out), "--check"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (
        "speed-up" in res.stdout and "target ≥ 1.7×" in res.stdout and "tables identical: True" in res.stdout
    )
    assert res.stdout.count("cores busy") == 2 and "the machine's ceiling now" in res.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    r, row = report["results"], report["ratios"]["sweep_speedup"]
    assert r["tables_identical"] is True and r["one_worker_seconds"] > 0 and r["workers_seconds"] > 0
    assert (
        row["value"] == pytest.approx(r["one_worker_seconds"] / r["workers_seconds"]) and row["target"] == 1.7
    )
    # --check: exit 1 exactly when the speed-up missed (five tiny runs may not pay for a pool's start)
    assert res.returncode == (0 if row["met"] else 1), res.stderr
    assert ("target MISSED: sweep of small runs" in res.stderr) is (not row["met"])


def test_without_params_one_cell_and_a_metric_that_is_nowhere_is_named(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A metric no run has a number at (``--metric relay_records.nope``, a kind of record no relay
    writes) only warned, and exited 0 with a column of dashes: it is refused (exit 2), naming the
    numbers there are, and the runs are kept. (One no run can have, by what summary.json holds, is
    refused before any run: test_a_metric_no_summary_can_hold_is_refused_before_any_run.)"""
    argv = ["sweep", str(tiny), "--seeds", "1", "--workers", "1", "--out", str(tmp_path / "one"), "--quiet"]
    for metric, listed in (
        ("relay_records.nope", "the numbers under relay_records are relay_records.acknowledgement, "),
        (  # (an order of the scenario, a key under it no run has: a NAME no order has is refused before)
            "disclosures.subpoena-amira.score.nope",
            "the numbers under disclosures.subpoena-amira.score are disclosures.subpoena-amira.score.",
        ),
    ):
        assert main([*argv, "--metric", "messages.planned", "--metric", metric]) == 2
        err = capsys.readouterr().err
        assert (
            f"relaysim sweep: --metric {metric}: no number at that path in any run's summary.json; {listed}"
            in err
        )
        assert "The 1 run(s) are kept in" in err and "they are reused" in err, err
        assert not (tmp_path / "one" / "sweep.json").exists()
        assert len(list((tmp_path / "one" / "runs").iterdir())) == 1
    assert main([*argv, "--metric", "messages.planned"]) == 0
    data = json.loads((tmp_path / "one" / "sweep.json").read_text())
    assert [c["params"] for c in data["cells"]] == [{}]
    assert data["cells"][0]["metrics"]["messages.planned"] == {
        "n": 1,
        "mean": 5.0,
        "ci95": None,
        "half_width": None,
        "values": [5.0],
    }
    ET.parse(tmp_path / "one" / "sweep.svg")


@pytest.mark.parametrize(
    ("metric", "said"),
    [
        (
            "messages.lost_by_netwrk",
            "summary.json has no lost_by_netwrk under messages; the metrics under "
            "messages are messages.planned, messages.accepted_by_relay, messages.lost_by_network, ",
        ),
        (
            "nope",
            "summary.json has no nope; the metrics are seed, duration_s, people, devices, messages.planned, ",
        ),
        ("messages", "messages is a section, not a number; the numbers under it are messages.planned, "),
        ("scenario", "scenario is text, not a number"),
        ("disclosures", "disclosures is a section, not a number; name a number under it (disclosures.…)"),
        ("messages.refused", "messages.refused is a section, not a number; "),
        ("latency_s.p50.x", "latency_s.p50 is a number, with nothing under it"),
        ("envelopes.agency_devices", "envelopes.agency_devices is a list of names, not a number"),
    ],
)
def test_a_metric_no_summary_can_hold_is_refused_before_any_run(
    metric: str, said: str, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A metric no run's summary.json can hold a number at (a misspelt key of a section whose keys
    relaysim sets, a section, a name) was refused only once every run of the sweep had finished
    (seconds each, a grid of hundreds): it is refused before any run, by what summary.json holds
    (sims.sweep.SUMMARY_SCHEMA), naming the metrics there are; nothing is run or written."""
    out = tmp_path / "sw"
    argv = ["sweep", str(tiny), "--seeds", "2", "--metric", "messages.planned", "--metric", metric]
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"relaysim sweep: --metric {metric}: no run's summary.json has a number there: {said}"
    ), err
    assert err.count("\n") == 1, err
    assert not out.exists()
    with pytest.raises(
        SweepError, match=f"^--metric {metric}: no run's summary.json"
    ):  # (and to run_sweep's caller)
        run_sweep(str(tiny), [], 2, out, metrics=[metric])
    assert not out.exists()


@pytest.mark.parametrize(
    ("scenario", "metric", "said"),
    [
        (
            "two-friends",
            "disclosures.nosuch.score.contacts.share",
            "names no legal order of the scenario after disclosures.; its orders are pen-register-amira, "
            "search-warrant-amira (e.g. disclosures.pen-register-amira.score.contacts.share)",
        ),
        ("two-friends", "disclosures.5", "names no legal order of the scenario"),
        # an order of several accounts is served as one per account, whose disclosures are NAME-ACCOUNT:
        # the event's own name was taken, and found to name nothing only after every run
        (
            "signal-subpoena-2016",
            "disclosures.grand-jury-subpoena.score.contacts.share",
            "names no legal order of the scenario after disclosures.; its orders are grand-jury-subpoena-dana, "
            "grand-jury-subpoena-17035550143 (e.g. disclosures.grand-jury-subpoena-dana.score.contacts.share)",
        ),
        (
            "tiny",
            "disclosures.x.score.contacts.share",
            "names no legal order of the scenario after disclosures.; its orders are subpoena-amira (",
        ),
    ],
)
def test_a_disclosure_metric_naming_no_order_of_the_scenario_is_refused_before_any_run(
    scenario: str, metric: str, said: str, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--metric disclosures.NAME...`` with a NAME that is no legal order of the scenario was found
    only after every run of the sweep had finished (disclosures is a section whose keys the runs set):
    it is checked against the scenario's orders before any run, naming them; nothing is written. An
    order's name, or its index, is still taken."""
    out = tmp_path / "sw"
    source = str(tiny) if scenario == "tiny" else scenario
    assert main(["sweep", source, "--seeds", "2", "--metric", metric, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"relaysim sweep: --metric {metric}: {said}"), err
    assert err.count("\n") == 1, err
    assert not out.exists()
    from relaysim.sims.sweep import _order_problem

    orders = ["pen-register-amira", "search.warrant"]
    assert _order_problem("disclosures.search.warrant.score.contacts.share", orders) is None
    assert _order_problem("disclosures.1.score.contacts.share", orders) is None
    assert _order_problem("messages.planned", orders) is None
    assert _order_problem("disclosures.x", []) == (
        "the scenario has no legal order, so its runs' summary.json has no disclosures"
    )


@pytest.mark.parametrize("name", ["two-friends", "ghost-device", "signal-subpoena-2016"])
def test_the_summary_schema_holds_every_number_a_built_in_runs_summary_has(name: str, tmp_path: Path) -> None:
    """sims.sweep.SUMMARY_SCHEMA, against which a --metric is checked before any run, is what a run
    writes: every number of a built-in scenario's summary.json is a metric it lets through (a key
    summarise adds that the schema lacks would refuse a metric a run has), and every key of a section
    whose keys it sets is one it names."""
    from relaysim.sims.report import run_to_dir
    from relaysim.sims.scenario import resolve_scenario
    from relaysim.sims.sweep import OPEN, SUMMARY_SCHEMA, number_paths, schema_problem
    from relaysim.sims.world.simulation import ENVELOPE_FATES

    _result, summary = run_to_dir(resolve_scenario(name), tmp_path / "run")
    assert name != "signal-subpoena-2016" or "start" in summary  # (a dated run's)
    assert name != "ghost-device" or "exceptional" in summary
    assert [p for p in number_paths([summary]) if schema_problem(p) is not None] == []

    def walk(node: Any, schema: Any, at: str) -> None:
        if isinstance(schema, dict):
            assert isinstance(node, dict), at
            assert set(node) <= set(schema), (at, set(node) - set(schema))
            for k, v in node.items():
                walk(v, schema[k], f"{at}.{k}")
        elif schema != OPEN:
            assert not isinstance(node, dict), at

    walk(summary, SUMMARY_SCHEMA, "")
    assert list(SUMMARY_SCHEMA["envelopes"]["people"]) == list(ENVELOPE_FATES)


@pytest.mark.parametrize("metric", ["", " ", "messages.", ".planned", "messages..planned"])
def test_a_metric_that_can_name_no_number_is_a_usage_error_naming_the_metrics(
    metric: str, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--metric ''`` (an unset shell variable) ran every run and then only warned that no run had
    a number there; a path with an empty part names no number either."""
    out = tmp_path / "sw"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tiny), "--seeds", "1", "--metric", metric, "--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"argument --metric: expected a dotted path to a number in a run's summary.json, got {metric!r}"
        in err
    )
    assert "messages.lost_by_network" in err and "disclosures.NAME.score.contacts.share" in err, err
    assert not out.exists()
    with pytest.raises(
        SweepError, match=r"^--metric: expected a dotted path"
    ):  # (and to a caller of run_sweep)
        run_sweep(str(tiny), [], 1, out, metrics=[metric])
    assert not out.exists()


def test_a_metric_given_twice_is_refused_not_counted_twice(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--metric messages.planned twice gathered each run's value twice: one seed's run read as two
    values, with a 95 % interval of ± 0 (n 2), in sweep.md and sweep.json."""
    out = tmp_path / "sw"
    argv = ["sweep", str(tiny), "--seeds", "1", "--out", str(out), "--quiet"]
    assert main([*argv, "--metric", "messages.planned", "--metric", "messages.planned"]) == 2
    assert capsys.readouterr().err == (
        "relaysim sweep: --metric: each metric once, got messages.planned more than once\n"
    )
    assert not out.exists()


def test_dask_without_distributed_installed_is_a_clear_error(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    argv = [
        "sweep",
        str(tiny),
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "d"),
        "--dask",
        "tcp://127.0.0.1:8786",
    ]
    assert main(argv) == 2
    assert "--dask needs dask's distributed package" in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [False, True])
def test_the_sweep_bench_shows_its_progress_on_a_terminal_unless_quiet(
    quiet: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaysim.sims.bench import sweep as bench_sweep

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # stderr "is" a terminal
    argv = ["--runs", "5", "--messages", "2", "--json", "-", *(["--quiet"] if quiet else [])]
    assert bench_sweep.main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["results"]["tables_identical"] is True  # stdout: the JSON alone
    shown = "bench sweep: the machine's ceiling" in captured.err and "ETA" in captured.err
    assert shown is not quiet, captured.err
    assert ("10/10" in captured.err) is not quiet  # both sweeps' runs counted on one bar


def test_a_disclosure_whose_name_holds_dots_is_reached_by_its_metric_path() -> None:
    """A legal process's name may hold '.' (it names files: analysis/order.v2.json), but the metric
    path was split on every '.', so disclosures.order.v2.score.contacts.share (sweep's own default
    metric for it) named nothing and the sweep reported no number for that disclosure."""
    from relaysim.sims.sweep import DISCLOSURE_METRICS, default_metrics, metric_value

    def score(share: float) -> dict[str, dict[str, float]]:
        return {m.split(".")[1]: {"share": share} for m in DISCLOSURE_METRICS}

    summary = {
        "disclosures": [
            {"name": "order", "score": score(0.25)},
            {"name": "order.v2", "score": score(0.5)},
            {"name": "a.b.c", "score": score(0.75)},
        ]
    }
    assert metric_value(summary, "disclosures.order.v2.score.contacts.share") == 0.5
    assert metric_value(summary, "disclosures.order.score.contacts.share") == 0.25  # (as before)
    assert metric_value(summary, "disclosures.a.b.c.score.locations.share") == 0.75
    assert metric_value(summary, "disclosures.1.score.contacts.share") == 0.5  # (by index, as before)
    assert metric_value(summary, "disclosures.order.v3.score.contacts.share") is None
    metrics = [m for m in default_metrics([summary]) if m.startswith("disclosures.")]
    assert len(metrics) == 3 * len(DISCLOSURE_METRICS)
    assert [metric_value(summary, m) for m in metrics] == [0.25] * 3 + [0.5] * 3 + [0.75] * 3


def test_the_summary_schema_names_each_fate_of_an_envelope_the_simulation_counts() -> None:
    """sims.sweep keeps its own list of summary.json's envelope fates (it does not import the simulation
    at start-up): the same names as ``ENVELOPE_FATES``, none missing, none extra."""
    from relaysim.sims import sweep
    from relaysim.sims.world.simulation import ENVELOPE_FATES

    for party in ("people", "agency"):
        assert list(sweep.SUMMARY_SCHEMA["envelopes"][party]) == list(ENVELOPE_FATES)
