"""The run's calendar: a dated scenario's relay clock, transcript and disclosures read its own dates.

``[scenario] start`` sets the relay clock's epoch (sims.scenario.Scenario.epoch): midnight UTC of a
date, the instant of a date-time. Without it the clock starts at SIM_EPOCH, 2026-01-01T00:00:00Z,
as before, so an undated run's files do not change.
"""

from __future__ import annotations

import calendar
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay.store import Store
from relaysim.sims.cli import main
from relaysim.sims.report import _round, calendar_time, run_calendar, run_to_dir
from relaysim.sims.scenario import SIM_EPOCH, ScenarioError, parse_scenario, resolve_scenario
from relaysim.sims.world.traffic import expand_population, plan_messages

MAY_2016 = calendar.timegm((2016, 5, 1, 0, 0, 0))

SMALL = """
[scenario]
name = "cal"
duration = "2h"
seed = 4
{start}

[[people]]
name = "ann"
devices = [{{ region = "us" }}]

[[people]]
name = "ben"
devices = [{{ region = "us" }}]

[[conversations]]
between = ["ann", "ben"]
messages = [{{ at = "10m", from = "ann", text = "hello" }}, {{ at = "20m", from = "ben", text = "hi" }}]

[[events]]
at = "1h"
kind = "legal_process"
process = "search_warrant"
target = "ann"
name = "warrant-ann"
"""


def _small(start: str = "") -> str:
    return SMALL.format(start=start)


def _run(tmp_path: Path, text: str, name: str = "run") -> Path:
    out = tmp_path / name
    run_to_dir(parse_scenario(text), out)
    return out


def _transcript(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]


def test_epoch_is_the_scenarios_start() -> None:
    assert parse_scenario(_small()).epoch == SIM_EPOCH
    assert parse_scenario(_small("start = 2016-05-01")).epoch == MAY_2016
    at = parse_scenario(_small("start = 2016-05-01T09:30:00Z"))
    assert (at.start, at.epoch) == (date(2016, 5, 1), MAY_2016 + 9.5 * 3600)
    # a date-time without an offset is UTC; one with an offset is the same instant in UTC
    assert parse_scenario(_small("start = 2016-05-01T09:30:00")).epoch == MAY_2016 + 9.5 * 3600
    late = parse_scenario(_small("start = 2016-05-01T23:00:00-05:00"))
    assert (late.start, late.epoch) == (date(2016, 5, 2), MAY_2016 + 28 * 3600)


def test_a_start_before_the_unix_epoch_is_refused_by_name() -> None:
    with pytest.raises(ScenarioError, match=r"scenario\.start: expected a date from 1970 on.*1969-12-31"):
        parse_scenario(_small("start = 1969-12-31"))


def test_a_dated_run_writes_its_own_dates_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(tmp_path, _small("start = 2016-05-01"))
    events = _transcript(out)
    assert all(str(e["at"]).startswith("2016-05-01T") for e in events)
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    assert provider["clock_epoch"] == MAY_2016
    assert provider["run_ended"] == MAY_2016 + 7200
    assert provider["profile_as_of"] == "2016-05-01"
    assert run_calendar(out) == (MAY_2016, True)
    # the relay's own records: its clock started on the scenario's date
    store = Store(out / "relay.db", durable=False)
    try:
        times = [r.time for r in store.metadata() if r.time is not None]
    finally:
        store.close()
    assert times and all(MAY_2016 <= t <= MAY_2016 + 7200 for t in times)
    # the order was served on that clock, and its disclosure says so in dates
    warrant = json.loads((out / "disclosures" / "warrant-ann.json").read_text(encoding="utf-8"))
    assert warrant["served"] == MAY_2016 + 3600
    served = next(e for e in events if e["kind"] == "legal_process_served")
    assert served["at"] == "2016-05-01T01:00:00.000000Z"
    md = (out / "disclosures" / "warrant-ann.md").read_text(encoding="utf-8")
    assert "- **Served at:** 2016-05-01 01:00:00 UTC;" in md
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["start"] == "2016-05-01T00:00:00Z"
    assert main(["show", str(out)]) == 0
    assert "starts 2016-05-01T00:00:00Z" in capsys.readouterr().out


def test_an_undated_run_keeps_the_fixed_epoch(tmp_path: Path) -> None:
    """What main wrote before runs had their own epoch: SIM_EPOCH, the relative clock in the
    disclosures, and no profile_as_of in provider.json."""
    out = _run(tmp_path, _small())
    assert all(str(e["at"]).startswith("2026-01-01T") for e in _transcript(out))
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    assert (provider["clock_epoch"], provider["run_ended"]) == (SIM_EPOCH, SIM_EPOCH + 7200)
    assert "profile_as_of" not in provider
    assert run_calendar(out) == (SIM_EPOCH, False)
    md = (out / "disclosures" / "warrant-ann.md").read_text(encoding="utf-8")
    assert "- **Served at:** 01:00:00;" in md
    assert "start" not in json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_the_same_people_on_another_date_differ_only_in_the_calendar(tmp_path: Path) -> None:
    """Only the dates move: the same events at the same simulated times, the same texts."""
    undated = _transcript(_run(tmp_path, _small(), "undated"))
    dated = _transcript(_run(tmp_path, _small("start = 2016-05-01"), "dated"))
    assert [(e["t"], e["kind"]) for e in undated] == [(e["t"], e["kind"]) for e in dated]


def test_a_replay_discloses_in_its_year(tmp_path: Path) -> None:
    out = tmp_path / "signal-2016"
    run_to_dir(resolve_scenario("signal-subpoena-2016"), out)
    md = (out / "disclosures" / "grand-jury-subpoena-dana.md").read_text(encoding="utf-8")
    assert "- **Served at:** 2016-05-03 20:00:00 UTC;" in md
    assert "created 2016-05-01 00:00:06 UTC" in md
    assert "2026" not in md


def test_disclose_on_a_dated_run_answers_as_the_provider_was_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``relaysim disclose`` serves on the run's own clock and the provider of the run's date: Signal
    in 2016 (before sealed sender) kept no message log, and says so as the run's disclosure did."""
    out = tmp_path / "signal-2016"
    run_to_dir(resolve_scenario("signal-subpoena-2016"), out)
    run = json.loads((out / "disclosures" / "grand-jury-subpoena-dana.json").read_text(encoding="utf-8"))
    argv = ["disclose", "--db", str(out / "relay.db"), "--process", "subpoena", "--target", "dana"]
    assert main([*argv, "--at", "2d20h", "--json", "-"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["served"] == run["served"] == MAY_2016 + 2 * 86400 + 20 * 3600
    assert again["not_provided"] == run["not_provided"]
    assert again["provided"] == run["provided"]
    assert main([*argv, "--at", "2d20h"]) == 0
    assert "- **Served at:** 2016-05-03 20:00:00 UTC;" in capsys.readouterr().out


def test_the_daily_rhythm_follows_the_clock_of_a_date_time_start() -> None:
    """People write only at noon (UTC); a run that starts at 10:00 sees their messages from t = 2 h."""
    noon = ", ".join("1" if h == 12 else "0" for h in range(24))
    text = f"""
[scenario]
name = "noon"
duration = "4h"
seed = 1
start = 2016-05-01T10:00:00Z

[generate]
people = 30
messages_per_day = {{ mean = 40, sigma = 0.5 }}
daily_rhythm = [{noon}]
"""
    scenario = expand_population(parse_scenario(text))
    times = [m.at for m in plan_messages(scenario)]
    assert times and all(2 * 3600 <= t < 3 * 3600 for t in times)
    assert datetime.fromtimestamp(scenario.epoch + times[0], UTC).hour == 12


def test_pakistan_2015_is_served_in_july_and_withdrawn_on_31_december() -> None:
    """The replay's dates are the record's: the PTA's demand served on 1 July 2015, a court order
    that afternoon, BlackBerry's refusal on 30 November 2015 (when it said it would leave rather than
    comply), the demand withdrawn on 31 December 2015 (PTA statement)."""
    from dataclasses import replace

    from relaysim.sims.world.simulation import Simulation

    scenario = resolve_scenario("pakistan-2015")
    result = Simulation(replace(scenario, relay=replace(scenario.relay, profile="bes"))).run()
    day = {d.process.name: d for d in result.disclosures}

    def on(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")

    demand = day["pta-blanket-demand"]
    assert on(demand.process.served) == "2015-07-01 07:30"
    assert [(r, on(t)) for r, t in demand.history] == [
        ("refused", "2015-11-30 07:00"),  # BlackBerry, 2015-11-30 (noon in Karachi, as the withdrawal)
        ("withdrawn", "2015-12-31 07:00"),  # noon in Karachi
    ]
    assert "refused at 2015-11-30 07:00:00 UTC" in demand.to_markdown(
        lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    assert on(day["court-order-saima"].process.served) == "2015-07-01 10:00"  # 3 pm in Karachi


@pytest.mark.parametrize(
    ("name", "years"),
    [
        ("pakistan-2015", {2015}),
        ("signal-subpoena-2016", {2016}),
        ("india-2010", {2012, 2013}),  # the Mumbai facility, from 2012
        ("rcmp-clemenza", {2010, 2011, 2012}),  # Project Clemenza's interception
    ],
)
def test_every_replay_is_set_in_its_years(name: str, years: set[int]) -> None:
    """A replay of the record runs on its own calendar (and its provider as it was then)."""
    scenario = resolve_scenario(name)
    assert scenario.start is not None and scenario.start.year in years
    assert datetime.fromtimestamp(scenario.epoch + scenario.duration, UTC).year in years


def test_retry_receipts_wake_on_the_runs_own_clock(tmp_path: Path) -> None:
    """A phone's retry receipts are due on the relay's clock; a dated run wakes it from its own
    epoch: the same lost handout, asked for again after the same grace, in 2016 as in 2026."""
    from dataclasses import replace

    from relaysim.sims.scenario import GroupChange
    from tests.sims.test_simulation import _DropHandouts, _online_group

    changes = (
        GroupChange(60.0, "message", "ana", "BEFORE DAN HAS HER KEY"),
        GroupChange(700.0, "message", "ana", "AFTER THE RETRY"),
    )
    delivered = []
    for start in (None, date(2016, 5, 1)):
        sc = replace(_online_group("lost-handout", changes), start=start)
        sim = _DropHandouts(sc, tmp_path / f"{start}.db", "dan", 1)
        result = sim.run()
        assert sim.left == 0  # the handout was lost
        delivered.append([sorted(m.delivered.items()) for m in result.messages])
        first = result.messages[-2]
        assert 10.0 <= first.delivered["dan/1"] - first.planned.at < 20.0  # after the grace, not at once
    assert delivered[0] == delivered[1]


def test_an_exceptional_report_of_a_dated_run_names_its_calendar() -> None:
    """The report's own times count from the start; under its title it says which start that is."""
    from dataclasses import replace

    from relaysim.sims.world.simulation import Simulation

    scenario = resolve_scenario("rcmp-clemenza")
    (report,) = Simulation(scenario).run().exceptional
    lines = report.markdown.splitlines()
    assert lines[2] == "_Times in this report count from the start of the run, 2011-06-01 16:00:00 UTC._"
    # an undated run's report is as it was
    (undated,) = Simulation(replace(scenario, start=None, start_at=None)).run().exceptional
    assert undated.markdown == report.markdown.replace(lines[2] + "\n\n", "")


@given(
    t=st.one_of(
        st.floats(0, 10 * 86_400, allow_nan=False).map(lambda x: round(x, 6)),
        st.integers(0, 10 * 86_400).map(lambda n: n + 0.5e-6),  # exactly halfway, as near as a float gets
        st.integers(0, 86_400 * 10**6).map(lambda n: n / 10**6),
        st.just(59.9999996),  # rounds up into the next second
    ),
    epoch=st.sampled_from([SIM_EPOCH, MAY_2016, 0.0, 1_000_000_000.25]),
)
def test_the_transcripts_calendar_time_is_timedeltas_to_the_character(t: float, epoch: float) -> None:
    # calendar_time keeps the whole seconds' text from call to call: the same text as formatting
    # start + timedelta(seconds=t) each time, rounding to the microsecond included.
    at = calendar_time(epoch)
    start = datetime.fromtimestamp(epoch, UTC)
    for u in (t, t + 1.0, t, float(int(t))):
        assert at(u) == (start + timedelta(seconds=u)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_transcripts_rounding_keeps_every_float_and_leaves_the_rest() -> None:
    event = {"t": 1.23456789, "a": [1, True, None, "x", 2.0000004, {"b": [0.1234567]}], "c": b"z"}
    assert _round(event) == {"t": 1.234568, "a": [1, True, None, "x", 2.0, {"b": [0.123457]}], "c": b"z"}


def test_analyze_and_report_read_a_live_runs_relay_clock_on_the_runs_clock(tmp_path: Path) -> None:
    """A live run's relay kept the wall clock, the scenario's time scaled (sims.live): its provider.json
    says so (clock_epoch, time_scale, scenario_epoch). analyze and report read relay times against
    clock_epoch alone, as a simulated run's: the real seconds since the start ("Served at 00:00:01"),
    the time scale left out. They read them on the run's clock. Here a relay whose clock ran at half
    the scenario's speed (time_scale 0.5)."""
    shared = '{ region = "us", address = "203.0.113.5" }'
    text = _small().replace('{ region = "us" }', shared)
    text = text.replace(shared, shared.replace(" }", ', offline = [["0s", "40m"]] }'), 1)  # ann from 40m on
    out = _run(tmp_path, text)
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    live = {"clock_epoch": SIM_EPOCH, "time_scale": 0.5, "scenario_epoch": SIM_EPOCH}
    (out / "provider.json").write_text(json.dumps(provider | live), encoding="utf-8")
    assert main(["analyze", str(out)]) == 0
    relay = (out / "analysis" / "relay.md").read_text(encoding="utf-8")
    # ann and ben first seen at one address at 40m on the relay's clock: 80 minutes into the run
    assert "- `ann` and `ben` at 203.0.113.5, first 01:20:00" in relay, relay
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Served at 02:00:00 on the" in page  # served at 1h on the relay's clock


RHYTHM = """
[scenario]
name = "rhythm"
duration = "2d"
seed = 3

[relay]
profile = "keep-everything"
sealed_sender = true

[generate]
people = 6
devices_per_person = { one = 1.0 }
messages_per_day = { mean = 30, sigma = 0.3 }
daily_rhythm = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 0, 0]
"""


def _on_a_wall_clock(run: Path, out: Path, relay_epoch: float, scale: float) -> None:
    """``run`` (simulated) copied to ``out`` as a live run writes it: every relay time (relay.db's records,
    the transcript's relay records) on a wall clock reading ``relay_epoch`` at the run's start and
    running ``scale`` real seconds per simulated second, and a provider.json saying so (sims.live)."""
    import shutil
    import sqlite3

    shutil.copytree(run, out)
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    start = provider["clock_epoch"]

    def wall(t: float) -> float:
        return relay_epoch + (t - start) * scale

    with sqlite3.connect(out / "relay.db") as db:
        db.create_function("wall", 1, wall)
        for table in ("metadata", "intercepts"):
            db.execute(f"UPDATE {table} SET time = wall(time) WHERE time IS NOT NULL")
    db.close()
    events = _transcript(out)
    for e in events:
        for r in e.get("relay") or [] if isinstance(e.get("relay"), list) else []:
            if r.get("time") is not None:
                r["time"] = wall(r["time"])
    (out / "transcript.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    live = {"clock_epoch": relay_epoch, "time_scale": scale, "scenario_epoch": start}
    (out / "provider.json").write_text(json.dumps(provider | live), encoding="utf-8")


def test_analyze_reads_a_live_runs_times_of_day_on_the_runs_clock(tmp_path: Path) -> None:
    """analyze on a live run computed its time-of-day results (each account's hours, sleep window,
    inferred UTC offset; the seconds the attribution, the disclosure attack and co-location count in)
    from the relay's wall clock: a live run of two simulated days at time scale 0.5 is one real day,
    begun at whatever hour the machine's clock read. It reads them on the run's clock, as it reads a
    simulated run's: the same run with its relay times on a wall clock (and a provider.json saying so)
    gives the simulated run's figures and scores."""
    run = _run(tmp_path, RHYTHM)
    live = tmp_path / "live"
    _on_a_wall_clock(run, live, relay_epoch=SIM_EPOCH + 300 * 86400 + 5 * 3600 + 1234.5, scale=0.5)
    for out in (run, live):
        assert main(["analyze", str(out)]) == 0
    simulated, on_wall = (json.loads((o / "analysis" / "relay.json").read_text()) for o in (run, live))
    rhythms = simulated["analysis"]["pattern_of_life"]["daily_rhythm"]
    assert sum(r["sleep_window_utc"] is not None for r in rhythms) >= 3  # (enough actions for a rhythm)
    assert on_wall["analysis"]["pattern_of_life"]["daily_rhythm"] == rhythms
    assert on_wall["score"] == simulated["score"]
    # each attribution as the simulated run's, at its time (to the microsecond the wall clock reads)
    seen, made = (a["analysis"]["sealed_sender_attribution"]["attributions"] for a in (on_wall, simulated))
    assert [a | {"time": pytest.approx(a["time"], abs=1e-5)} for a in made] == seen
    # the Markdown's times, read on the run's clock once (not twice)
    assert (live / "analysis" / "relay.md").read_text() == (run / "analysis" / "relay.md").read_text()


def test_disclose_says_a_live_runs_set_up_came_before_the_runs_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live run's phones register and log in before its clock starts, in real time the time scale
    stretches: disclose showed the account created and last seen "day 0 23:59:20" (20 ms at 0.0005),
    a time of a day before the run that never was. It says they came before the run's start; a record
    of the run itself is shown at its time. Here a relay whose clock read a minute at the run's start
    (the simulated phones set up in its first seconds)."""
    out = _run(tmp_path, _small())
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    live = {"clock_epoch": SIM_EPOCH + 60, "time_scale": 1.0, "scenario_epoch": SIM_EPOCH}
    (out / "provider.json").write_text(json.dumps(provider | live), encoding="utf-8")
    capsys.readouterr()
    argv = ["disclose", "--db", str(out / "relay.db"), "--process", "search_warrant", "--target", "ann"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "account ann, created before the run's start" in shown, shown
    assert "day 0" not in shown
    assert "  - 00:09:00 ann → ben" in shown, shown  # sent at 10m of the relay's clock: 9m into the run
