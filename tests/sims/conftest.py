"""Runs shared by the simulator's test modules, each made once for the whole session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class BuiltInRun:
    """A run of a built-in scenario as written: the scenario (population expanded), the relay's
    database, and what :func:`sims.reproduce.simulate_variant` gives of it (truth, mailboxes opened)."""

    scenario: Any
    db: Path
    truth: Any
    opened: dict[tuple[str, str], str]


@pytest.fixture(scope="session")
def sda_martiny_2021(tmp_path_factory: pytest.TempPathFactory) -> BuiltInRun:
    """The built-in ``sda-martiny-2021`` as written (``relaysim reproduce``'s "as written" variant), run
    once for the session (some 20 s of CPU): test_reproduce scores its reproduction of it, and
    test_analysis counts its attack's rankings on it. Read its database; never write to it."""
    from relaysim.sims.reproduce import simulate_variant
    from relaysim.sims.scenario import resolve_scenario
    from relaysim.sims.world.traffic import expand_population

    scenario = expand_population(resolve_scenario("sda-martiny-2021"))
    db = tmp_path_factory.mktemp("sda-martiny-2021") / "relay.db"
    truth, opened = simulate_variant(scenario, db)
    return BuiltInRun(scenario, db, truth, opened)
