"""relay.limits.RateLimiter.take_all: one token from each bucket or none, each bucket computed once —
the same answers and the same buckets as asking ``wait`` of each and then ``take`` of each."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay.limits import Rate, RateLimiter

RATES = (Rate(1.0, 3), Rate(0.5, 1), None)  # (per second, burst)
NAMES = ("send_per_account", "send_per_address")

steps = st.lists(
    st.tuples(
        st.floats(0.0, 3.0),  # time since the previous request
        st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 2), st.sampled_from(RATES)), max_size=2),
    ),
    max_size=40,
)


def _wait_then_take(
    limiter: RateLimiter, buckets: list[tuple[str, object, Rate | None]], now: float
) -> object:
    """What relay.core asked before take_all: every bucket's wait, then every bucket's take."""
    for name, key, rate in buckets:
        wait = limiter.wait(name, key, rate, now)
        if wait > 0:
            assert rate is not None
            return name, rate, wait
    for name, key, rate in buckets:
        limiter.take(name, key, rate, now)
    return None


@given(steps)
def test_take_all_answers_and_takes_as_wait_then_take(
    requests: list[tuple[float, list[tuple[str, int, Rate | None]]]],
) -> None:
    one, other = RateLimiter(), RateLimiter()
    now = 0.0
    for gap, asked in requests:
        now += gap
        # (one bucket per limit name in a request, as relay.core names them)
        buckets: list[tuple[str, object, Rate | None]] = list({n: (n, k, r) for n, k, r in asked}.values())
        assert one.take_all(buckets, now) == _wait_then_take(other, buckets, now)
        assert one._buckets == other._buckets


def test_a_refusal_takes_nothing_from_any_bucket() -> None:
    limiter = RateLimiter()
    rate = Rate(1.0, 1)
    assert limiter.take_all([("a", 1, rate)], 0.0) is None
    before = dict(limiter._buckets)
    refused = limiter.take_all([("b", 1, rate), ("a", 1, rate)], 0.5)
    assert refused == ("a", rate, 0.5)
    assert limiter._buckets == before  # "b" untouched although it had room


def test_a_limit_refused_shows_its_value_by_the_one_quoting_rule() -> None:
    """relay/limits.py showed a value it refused whole (its repr: a word of 5,000 characters was the message)."""
    import pytest

    from relaysim.relay.limits import Limits
    from relaysim.relay.wire import quoted

    for bad in ("z" * 5000, b"\x00" * 500, list(range(2000))):
        with pytest.raises(ValueError) as refused:
            Limits(prekeys_low=bad)  # type: ignore[arg-type]
        assert str(refused.value).endswith(f"got {quoted(bad)}") and len(str(refused.value)) < 200
        with pytest.raises(ValueError) as refused:
            Limits(send_per_account=bad)  # type: ignore[arg-type]
        assert str(refused.value).endswith(f"got {quoted(bad)}") and len(str(refused.value)) < 200
        with pytest.raises(ValueError) as refused:
            Rate(bad, 1)  # type: ignore[arg-type]
        assert str(refused.value).endswith(f"got {quoted(bad)}") and len(str(refused.value)) < 200
