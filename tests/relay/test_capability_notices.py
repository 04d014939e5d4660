"""Australia's TOLA instruments and the UK's technical capability notice (relay.legal, relay.compliance).

Telecommunications Act 1997 Part 15 (inserted by the Telecommunications and Other Legislation
Amendment (Assistance and Access) Act 2018): a technical assistance request (s.317G, voluntary), a
technical assistance notice (s.317L, help the provider can already give), a technical capability
notice (s.317T, build a capability); none may require a systemic weakness or a new decryption
capability (s.317ZG). Investigatory Powers Act 2016 s.253: the UK's technical capability notice.
A capability notice hands nothing over itself; what the relay lacks it compels; what no key the
provider holds opens stays cryptographically impossible.
"""

from __future__ import annotations

import pytest

from relaysim.relay.compliance import Disclosure
from relaysim.relay.legal import INSTRUMENTS, JURISDICTIONS, resolve_instrument
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation

_RUN = """
[scenario]
name = "notice"
duration = "1h"

[relay]
profile = "{profile}"

[[people]]
name = "a"

[[people]]
name = "b"

[[conversations]]
between = ["a", "b"]
messages = [{{ at = "10m", from = "a", text = "hello" }}, {{ at = "20m", from = "b", text = "hi" }}]

[[events]]
at = "1m"
kind = "legal_process"
process = "{process}"
name = "notice"
{target}
"""


def _serve(process: str, profile: str) -> tuple[Disclosure, Simulation]:
    target = 'target = "a"' if INSTRUMENTS[process].needs_target else ""
    sc = parse_scenario(_RUN.format(profile=profile, process=process, target=target), "notice.toml")
    sim = Simulation(sc, db_path=":memory:")
    (d,) = sim.run().disclosures
    return d, sim


def test_the_instruments_are_rows_in_their_own_law() -> None:
    expect = {
        "tola_tar": ("au", "s.317G", "technical assistance request"),
        "tola_tan": ("au", "s.317L", "technical assistance notice"),
        "tola_tcn": ("au", "s.317T", "technical capability notice"),
        "ipa_tcn": ("uk", "Investigatory Powers Act 2016 s.253", "technical capability notice"),
    }
    for key, (jurisdiction, statute, name) in expect.items():
        i = INSTRUMENTS[key]
        assert (i.jurisdiction, i.name) == (jurisdiction, name) and statute in i.statute, key
        assert i.builds == key.endswith("tcn"), key
    assert "Telecommunications Act 1997" in INSTRUMENTS["tola_tcn"].statute
    assert "s.317ZG" in JURISDICTIONS["au"].protection_limit
    # a capability notice is not a demand on everyone's traffic
    with pytest.raises(ValueError, match="a blanket demand is made under some country's law"):
        resolve_instrument("blanket_demand", "au")


def test_a_tcn_on_an_end_to_end_relay_hands_nothing_over_and_stays_honest() -> None:
    """Signal cannot collect in real time: the notice compels building that (no capability); the words
    no key Signal holds opens stay cryptographically impossible, and s.317ZG bars a notice that would
    make Signal build a way in."""
    d, sim = _serve("tola_tcn", "signal")
    assert d.process.target is None and d.response == "complied" and not d.provided
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible"
    assert "keys exist only on the devices" in why and "s.317ZG" in why and "s.317B" in why
    for category in ("realtime_routing", "ip_addresses", "ciphertext"):
        reason, why = d.reasons[category]
        assert reason == "no_capability", category
        assert "this notice compels building one" in why and "s.317T" in why, category
    assert sim.desk.begin(d.process) is None  # no tap: nothing is collected under it
    md = d.to_markdown()
    assert "Telecommunications Act 1997 s.317T" in md and "(Australia)" in md
    assert any("hands nothing over by itself" in n for n in d.notes)


def test_a_tcn_on_a_relay_that_can_collect_has_nothing_to_build() -> None:
    d, sim = _serve("tola_tcn", "keep-everything")
    assert not d.provided and sim.desk.begin(d.process) is None
    for category in ("realtime_routing", "ip_addresses", "ciphertext"):
        reason, why = d.reasons[category]
        assert reason == "withheld_by_policy" and "nothing to build" in why, category
    assert d.reasons["content"][0] == "cryptographically_impossible"


def test_a_tan_asks_only_for_help_the_provider_can_already_give() -> None:
    """On a relay that can tap, a notice with an interception warrant collects the routing and the
    ciphertext; the words stay sealed, and s.317ZG says no notice can change that."""
    d, _sim = _serve("tola_tan", "keep-everything")
    assert {"realtime_routing", "ciphertext"} <= set(d.provided)
    assert d.provided["ciphertext"]
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible" and "s.317ZG" in why
    assert any("already capable of giving" in n for n in d.notes)
    # on Signal, which cannot tap, the capability it lacks is a TCN's to compel
    d, _sim = _serve("tola_tan", "signal")
    reason, why = d.reasons["realtime_routing"]
    assert reason == "no_capability" and "to compel one: a technical capability notice" in why
    assert "s.317T" in why


def test_a_tar_may_be_declined() -> None:
    d, _sim = _serve("tola_tar", "signal")
    assert any("may decline" in n and "s.317G" in n for n in d.notes)


def test_the_uk_notice_names_what_it_can_oblige_and_what_is_contested() -> None:
    d, _sim = _serve("ipa_tcn", "whatsapp")
    assert not d.provided and d.to_json()["jurisdiction"] == "uk"
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible"
    assert "s.253(5)(c)" in why and "contested" in why and "Advanced Data Protection" in why
    # BES: the enterprise holds the keys, under any notice
    d, _sim = _serve("tola_tcn", "bes")
    reason, why = d.reasons["content"]
    assert reason == "cryptographically_impossible" and "enterprise" in why and "s.317ZG" in why
