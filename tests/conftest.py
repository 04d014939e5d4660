"""Shared test set-up: hypothesis profiles and a seeded RNG factory.

Profiles: ``dev`` (the default, quick), ``ci`` (what .ci/run uses: more examples, no
deadline, sized so the whole suite stays well under 15 minutes on 2 cores), ``thorough``
(for a long run by hand). Pick one with HYPOTHESIS_PROFILE=name.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from relaysim.sims.world.util import SimulationRandom

settings.register_profile("dev", max_examples=30, deadline=None)
# CI runs the same examples every time (derandomize): a landing must not hang on the luck of the draw.
# Hunting for new failures is the dev and thorough profiles' job (random seeds, as hypothesis does by default).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    derandomize=True,
)
# The lowest-dependency job (.ci/run): fewer examples, the same fixed draw.
settings.register_profile(
    "ci-lowest",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    derandomize=True,
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic byte source, for reproducible keys in tests (never for real use): the
    simulator's own kind (sims.world.util.SimulationRandom), the only seeded one device code accepts."""
    return SimulationRandom(seed).randbytes


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    return seeded_rng(1234)


@pytest.fixture(autouse=True)
def _collector_thresholds_put_back() -> Iterator[None]:
    """The garbage collector's thresholds are process-wide: what a test sets (``relay serve``'s
    main sets SERVING_GC_THRESHOLD, say) must not reach the tests after it."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
