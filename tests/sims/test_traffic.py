"""Generated traffic: messages_per_day is a rate per day, whatever the run's duration.

The expected count over a run of D seconds from midnight is people × mean rate × the days' worth
of activity in [0, D): D / 1 d for a flat rhythm, the daily rhythm's share otherwise. Both are
computed here independently of sims.world.traffic.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.sims.scenario import Scenario, parse_scenario
from relaysim.sims.world.traffic import DEFAULT_RHYTHM, activity_days, expand_population, plan_messages

FLAT = (1.0,) * 24


def _generated(people: int, mean: float, sigma: float, duration: float, rhythm: tuple[float, ...]) -> str:
    rhythm_line = f"daily_rhythm = [{', '.join(map(repr, rhythm))}]" if rhythm != DEFAULT_RHYTHM else ""
    return f"""
[scenario]
name = "traffic"
duration = {duration!r}
seed = 11

[generate]
people = {people}
graph = {{ model = "barabasi-albert", m = 2 }}
messages_per_day = {{ mean = {mean!r}, sigma = {sigma!r} }}
{rhythm_line}
"""


def _load(text: str) -> Scenario:
    return expand_population(parse_scenario(text, "traffic.toml"))


def _days_of_activity(duration: float, rhythm: tuple[float, ...]) -> float:
    """Whole days count 1 each; the last part day counts the rhythm's share of the hours it covers."""
    whole, rest = divmod(duration, 86400.0)
    share = 0.0
    for hour, weight in enumerate(rhythm):
        covered = min(max(rest - hour * 3600.0, 0.0), 3600.0)
        share += weight * covered / 3600.0
    return whole + share / sum(rhythm)


@given(
    people=st.integers(20, 100),
    mean=st.floats(1.0, 200.0),
    sigma=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    duration=st.floats(math.log(60.0), math.log(7 * 86400.0)).map(
        lambda x: round(math.exp(x))
    ),  # minutes to days
    flat=st.booleans(),
)
def test_generated_counts_match_the_daily_rate_for_any_duration(
    people: int, mean: float, sigma: float, duration: float, flat: bool
) -> None:
    rhythm = FLAT if flat else DEFAULT_RHYTHM
    scenario = _load(_generated(people, mean, sigma, duration, rhythm))
    messages = plan_messages(scenario)
    days = _days_of_activity(duration, rhythm)
    assert activity_days(duration, rhythm) == pytest.approx(days)
    expected = people * mean * days  # every Barabási–Albert node has a neighbour, so everyone sends
    # The count is a sum of per-person log-normal rates times `days`, each rounded up or down at
    # random: its variance is at most people × (mean × days)² × (e^σ² − 1) + people / 4.
    sd = math.sqrt(people * (mean * days) ** 2 * math.expm1(sigma * sigma) + people / 4)
    assert abs(len(messages) - expected) <= 6 * sd + 1, (len(messages), expected, sd)
    assert all(0 <= m.at < duration for m in messages)


@pytest.mark.parametrize(("hours", "expected"), [(2, 800 / 12), (12, 400.0), (24, 800.0), (72, 2400.0)])
def test_twenty_people_at_forty_a_day_send_in_proportion_to_the_duration(hours: int, expected: float) -> None:
    """The issue's example: 0 messages over 2 h, 111 over 12 h, 824 over a day, before the fix."""
    scenario = _load(_generated(20, 40.0, 0.0, hours * 3600.0, FLAT))
    # sigma 0: each person's expected count is exact and only rounded, so the total is within 20 of it
    assert abs(len(plan_messages(scenario)) - expected) <= 20


def test_the_daily_rhythm_shapes_when_messages_are_sent() -> None:
    scenario = _load(_generated(200, 50.0, 0.0, 4 * 86400.0, DEFAULT_RHYTHM))
    by_hour = [0] * 24
    messages = plan_messages(scenario)
    for m in messages:
        by_hour[int(m.at // 3600) % 24] += 1
    total = len(messages)
    for hour, weight in enumerate(DEFAULT_RHYTHM):
        share = weight / sum(DEFAULT_RHYTHM)
        assert abs(by_hour[hour] - total * share) <= 6 * math.sqrt(total * share) + 1, (hour, by_hour)


def test_generated_traffic_is_deterministic() -> None:
    text = _generated(50, 30.0, 1.0, 5 * 3600.0, DEFAULT_RHYTHM)
    first = plan_messages(_load(text))
    assert first == plan_messages(_load(text)) and first


def test_a_persons_rate_is_theirs_whatever_the_mean_or_the_duration() -> None:
    """Doubling the mean doubles each person's messages (to within rounding); a longer run keeps the
    same heavy writers (the rates come from a stream of their own, not the one that times messages)."""

    def per_person(mean: float, hours: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in plan_messages(_load(_generated(40, mean, 1.0, hours * 3600.0, FLAT))):
            counts[m.sender] = counts.get(m.sender, 0) + 1
        return counts

    one, two = per_person(20.0, 24), per_person(40.0, 24)
    assert set(one) <= set(two)
    # each count is the expectation rounded up or down: 2 × (x ± 1) against 2x ± 1
    assert all(abs(two[p] - 2 * one.get(p, 0)) <= 2 for p in two), (one, two)
    week = per_person(20.0, 7 * 24)
    assert all(abs(week[p] - 7 * one.get(p, 0)) <= 7 for p in week), (one, week)
