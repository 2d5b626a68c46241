"""Retries of infrastructure work, on tenacity: a transaction that lost a race, a store outage.

Two shapes, one library (docs/decisions/0003-retry-library.md):
- `retry_conflicts`: run a unit of work again at once, a bounded number of times, while it
  fails with an error that says "run me again" (PostgreSQL's deadlock, serialisation and
  unique-race failures). Anything else, or the last conflict, is raised unchanged.
- `outlast` / `outlast_sync`: keep a loop alive through an outage (the store locked or
  unreachable, a LISTEN connection dropped) with exponential backoff, until it returns or
  the given event is set; a loop that ran a healthy spell before failing starts small again.
Step retries (a plugin failed) are not infrastructure: they are the DAG's own policy, in
`domain/retry.py`, and go through the ledger.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_base

T = TypeVar("T")
OnRetry = Callable[[BaseException, float], None]  # the error, and the seconds until the next try


@dataclass(frozen=True)
class Backoff:
    """Delays between tries during an outage: `first`, doubling, never above `cap`."""

    first: float = 0.05
    cap: float = 5.0
    # A try that ran this long before it failed met a new outage: the delays start again.
    fresh_after: float = 30.0


STORE_OUTAGE = Backoff()  # the worker's loops while the store is locked or unreachable


class _OutageWait(wait_base):
    """`Backoff` as a tenacity wait: exponent counted from the try that began this outage."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float]) -> None:
        self.backoff = backoff
        self.clock = clock
        self.began = clock()  # when the current try started
        self.outage_from = 1  # the number of the first failed try of this outage

    def started(self, _state: RetryCallState) -> None:
        """Tenacity's `before` hook: a try starts now."""
        self.began = self.clock()

    def __call__(self, retry_state: RetryCallState) -> float:
        if self.clock() - self.began > self.backoff.fresh_after:
            self.outage_from = retry_state.attempt_number
        doublings = retry_state.attempt_number - self.outage_from
        return float(min(self.backoff.first * 2**doublings, self.backoff.cap))


def _report(on_retry: OnRetry | None) -> Callable[[RetryCallState], None]:
    """Tenacity's `before_sleep` hook: hand the error and the coming delay to `on_retry`."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry is not None and error is not None:
            on_retry(error, state.next_action.sleep if state.next_action else 0.0)

    return before_sleep


def retry_conflicts(
    work: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    retries: int,
    on_retry: OnRetry | None = None,
) -> T:
    """`work()`, run again at once (up to `retries` more times) while it raises `retryable`."""
    for attempt in Retrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(retries + 1),
        before_sleep=_report(on_retry),
        reraise=True,
    ):
        with attempt:
            return work()
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def outlast(
    attempt: Callable[[], Awaitable[T]],
    *,
    outage: type[BaseException] | tuple[type[BaseException], ...],
    until: asyncio.Event | None = None,
    backoff: Backoff = STORE_OUTAGE,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """`await attempt()` until it returns, retrying `outage` errors; None once `until` is set."""
    if until is not None and until.is_set():
        return None
    # The healthy path runs once per completed batch: it must not pay for tenacity's machinery.
    try:
        return await attempt()
    except outage as first_error:
        error = first_error
    wait = _OutageWait(backoff, clock)
    wait.outage_from = 0  # the try above began this outage: tenacity's tries count on from it
    delay = backoff.first
    if on_retry is not None:
        on_retry(error, delay)
    await sleep(delay)

    async def guarded() -> T | None:
        return None if until is not None and until.is_set() else await attempt()

    def stopped(_state: RetryCallState) -> bool:
        return until is not None and until.is_set()

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(outage),
        stop=stopped,
        wait=wait,
        before=wait.started,
        before_sleep=_report(on_retry),
        retry_error_callback=lambda _state: None,
        sleep=sleep,
    )
    result: T | None = await retrying(guarded)
    return result


def outlast_sync(
    attempt: Callable[[], T],
    *,
    outage: type[BaseException] | tuple[type[BaseException], ...],
    until: threading.Event,
    backoff: Backoff,
    on_retry: OnRetry | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """`attempt()` until it returns, retrying `outage` errors; None once `until` is set.

    The delays wait on `until`, so setting it ends a pause at once (a thread that must stop).
    """

    def guarded() -> T | None:
        return None if until.is_set() else attempt()

    def pause(seconds: float) -> None:
        until.wait(seconds)

    wait = _OutageWait(backoff, clock)
    retrying = Retrying(
        retry=retry_if_exception_type(outage),
        stop=lambda _state: until.is_set(),
        wait=wait,
        before=wait.started,
        before_sleep=_report(on_retry),
        retry_error_callback=lambda _state: None,
        sleep=pause,
    )
    result: T | None = retrying(guarded)
    return result
