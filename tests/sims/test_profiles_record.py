"""Profiles held to the public record they cite: LINE's with Letter Sealing off.

LINE. The FBI chart (2021-01-07): "account data; up to 7 days of chats only if E2EE is off".
"""

from __future__ import annotations

from typing import Any

from relaysim.relay.compliance import Disclosure
from relaysim.relay.profiles import get_profile
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation

# --- LINE with Letter Sealing off: up to 7 days of chats ----------------------------------------------

_LINE = """
[scenario]
name = "line"
duration = "9d"
seed = 3

[relay]
profile = "{profile}"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [
  {{ at = "1h", from = "a", text = "eight days before the warrant" }},
  {{ at = "8d", from = "b", text = "an hour before the warrant" }},
]

[[events]]
at = "8d1h"
kind = "legal_process"
process = "search_warrant"
target = "a"
name = "warrant"
"""


def _warrant(profile: str) -> tuple[Disclosure, Any]:
    result = Simulation(parse_scenario(_LINE.format(profile=profile), "line.toml")).run()
    (d,) = result.disclosures
    return d, result


def test_line_without_letter_sealing_hands_over_only_seven_days_of_chats() -> None:
    d, result = _warrant("line-letter-sealing-off")
    words = [r["text"] for r in d.provided["content"] if r["kind"] == "message"]
    assert words == ["an hour before the warrant"]
    assert all(r["time"] >= d.process.served - 7 * 86400 for r in d.provided["content"])
    # the older chat is held (LINE's key would open it), but out of the chart's seven days
    (note,) = [n for n in d.notes if "days before service" in n]
    assert "only what was sent in the 7 days before service" in note
    assert any(m.text == "eight days before the warrant" for m in result.truth.messages)


def test_line_with_letter_sealing_hands_over_no_chats() -> None:
    d, _result = _warrant("line")
    assert "content" not in d.provided
    assert d.reasons["content"][0] == "cryptographically_impossible"
    assert "Letter Sealing" in d.reasons["content"][1]


def test_the_two_line_profiles_differ_only_in_letter_sealing() -> None:
    on, off = get_profile("line"), get_profile("line-letter-sealing-off")
    assert (on.custody, off.custody) == ("devices", "provider")
    assert not on.keep_delivered and off.keep_delivered
    assert off.policy.rules == on.policy.rules and not off.pen_register and not off.wiretap
    assert off.lookback == {"content": 7 * 86400}
    assert {k: v - {"content"} for k, v in off.discloses.items()} == on.discloses
