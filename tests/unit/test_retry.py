"""Backoff delays and retry decisions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.retry import backoff_delay_ms
from stellaorch.domain.spec import Backoff, RetryPolicy


def _policy(
    initial_ms: int = 1000, factor: float = 2.0, max_ms: int = 60_000, jitter: float = 0.0
) -> RetryPolicy:
    backoff = Backoff(initial_ms=initial_ms, factor=factor, max_ms=max_ms, jitter=jitter)
    return RetryPolicy(max_attempts=5, backoff=backoff)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.integers(min_value=0, max_value=100_000))
    return _policy(
        initial_ms=initial,
        factor=draw(st.floats(min_value=1, max_value=10)),
        max_ms=draw(st.integers(min_value=initial, max_value=86_400_000)),
        jitter=draw(st.floats(min_value=0, max_value=1)),
    )


def test_first_retry_waits_the_initial_delay() -> None:
    assert backoff_delay_ms(_policy(), 1) == 1000


def test_delay_grows_by_the_factor() -> None:
    assert [backoff_delay_ms(_policy(), n) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]


def test_delay_is_capped_at_max_ms() -> None:
    assert backoff_delay_ms(_policy(max_ms=5000), 10) == 5000


def test_huge_attempt_number_does_not_overflow() -> None:
    assert backoff_delay_ms(_policy(max_ms=7000), 100_000) == 7000


def test_attempt_number_below_one_counts_as_the_first() -> None:
    assert backoff_delay_ms(_policy(), 0) == 1000


def test_jitter_spreads_delays_within_bounds() -> None:
    rng = random.Random(7)
    delays = {backoff_delay_ms(_policy(jitter=0.5), 1, rng) for _ in range(200)}
    assert min(delays) >= 500 and max(delays) <= 1500 and len(delays) > 50


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = _policy(jitter=0.3)
    first = [backoff_delay_ms(policy, n, random.Random(1)) for n in range(1, 5)]
    assert first == [backoff_delay_ms(policy, n, random.Random(1)) for n in range(1, 5)]


def test_jitter_never_pushes_past_max_ms() -> None:
    rng = random.Random(3)
    assert max(backoff_delay_ms(_policy(max_ms=1000, jitter=1), 5, rng) for _ in range(100)) == 1000


@given(policies(), st.integers(min_value=1, max_value=10_000), st.randoms(use_true_random=False))
def test_delay_is_always_within_zero_and_max_ms(
    policy: RetryPolicy, attempt: int, rng: random.Random
) -> None:
    delay = backoff_delay_ms(policy, attempt, rng)
    assert isinstance(delay, int) and 0 <= delay <= policy.backoff.max_ms


@given(policies(), st.integers(min_value=1, max_value=200))
def test_delay_without_jitter_never_decreases(policy: RetryPolicy, attempt: int) -> None:
    steady = policy.model_copy(update={"backoff": policy.backoff.model_copy(update={"jitter": 0})})
    assert backoff_delay_ms(steady, attempt) <= backoff_delay_ms(steady, attempt + 1)
