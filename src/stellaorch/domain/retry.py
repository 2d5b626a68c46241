"""Retry decisions and backoff delays for failed attempts."""

from __future__ import annotations

import random

from stellaorch.domain.spec import RetryPolicy


def backoff_delay_ms(
    policy: RetryPolicy, failed_attempt: int, rng: random.Random | None = None
) -> int:
    """Milliseconds to wait after attempt number `failed_attempt` (1-based) failed."""
    backoff = policy.backoff
    base = _base_delay_ms(backoff.initial_ms, backoff.factor, backoff.max_ms, failed_attempt)
    low, high = base * (1 - backoff.jitter), base * (1 + backoff.jitter)
    jittered = (rng or random).uniform(low, high)
    return max(0, min(backoff.max_ms, round(jittered)))


def _base_delay_ms(initial_ms: int, factor: float, max_ms: int, failed_attempt: int) -> float:
    """initial * factor**(n-1), capped at max_ms without ever computing a huge power."""
    # Attempt numbers below 1 are caller bugs; treat them as the first so a worker never stalls.
    exponent = max(failed_attempt, 1) - 1
    try:
        return min(float(max_ms), initial_ms * factor**exponent)
    except OverflowError:
        return float(max_ms)
