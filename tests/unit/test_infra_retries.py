"""Infrastructure retries: lost races run again at once, outages are outlasted with backoff."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from stellaorch.domain.errors import StoreUnavailable
from stellaorch.store.retries import Backoff, outlast, outlast_sync, retry_conflicts


class Conflict(Exception):
    """Stands in for a driver error that says "run the unit of work again"."""


def failing(
    times: int, error: Exception, result: str = "done"
) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def work() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise error
        return result

    return calls, work


def test_a_conflict_that_goes_away_is_retried_until_the_work_succeeds() -> None:
    calls, work = failing(3, Conflict())
    seen: list[BaseException] = []

    result = retry_conflicts(
        work,
        retryable=lambda e: isinstance(e, Conflict),
        retries=3,
        on_retry=lambda e, _d: seen.append(e),
    )

    assert result == "done"
    assert calls == [1, 2, 3, 4]
    assert len(seen) == 3


def test_a_conflict_that_stays_is_raised_after_the_last_retry() -> None:
    error = Conflict()
    calls, work = failing(100, error)

    with pytest.raises(Conflict) as raised:
        retry_conflicts(work, retryable=lambda e: isinstance(e, Conflict), retries=3)

    assert raised.value is error
    assert calls == [1, 2, 3, 4]


def test_an_error_that_is_not_a_conflict_is_raised_at_once() -> None:
    calls, work = failing(100, ValueError("a bug"))

    with pytest.raises(ValueError, match="a bug"):
        retry_conflicts(work, retryable=lambda e: isinstance(e, Conflict), retries=3)

    assert calls == [1]


async def test_backoff_doubles_within_an_outage_and_restarts_after_a_healthy_spell() -> None:
    clock = [0.0]
    slept: list[float] = []
    runs = [0.0, 0.0, 0.0, 60.0, 0.0]  # how long each pass runs before the store fails

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def loop() -> str:
        if not runs:
            return "recovered"
        clock[0] += runs.pop(0)
        raise StoreUnavailable("store unavailable: connection refused")

    result = await outlast(loop, outage=StoreUnavailable, sleep=fake_sleep, clock=lambda: clock[0])

    assert result == "recovered"
    assert slept == [0.05, 0.1, 0.2, 0.05, 0.1]


async def test_backoff_never_exceeds_its_cap() -> None:
    slept: list[float] = []
    failures = iter(range(12))

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def loop() -> None:
        if next(failures, None) is not None:
            raise StoreUnavailable("store unavailable: locked")

    await outlast(loop, outage=StoreUnavailable, sleep=fake_sleep, clock=lambda: 0.0)

    assert slept[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(slept) == 5.0
    assert slept[-1] == 5.0


async def test_an_outage_ends_quietly_once_the_loop_is_asked_to_stop() -> None:
    stopping = asyncio.Event()
    tries: list[int] = []

    async def fake_sleep(_seconds: float) -> None:
        stopping.set()

    async def loop() -> None:
        tries.append(1)
        raise StoreUnavailable("store unavailable: connection refused")

    result = await outlast(loop, outage=StoreUnavailable, until=stopping, sleep=fake_sleep)

    assert result is None
    assert tries == [1]  # no try after the stop was asked for


async def test_an_error_other_than_an_outage_ends_the_loop() -> None:
    async def loop() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await outlast(loop, outage=StoreUnavailable, until=asyncio.Event())


def test_setting_the_stop_event_ends_a_threads_pause_at_once() -> None:
    stop = threading.Event()
    delays: list[float] = []

    def listen() -> None:
        raise OSError("connection dropped")

    def on_retry(_exc: BaseException, delay: float) -> None:
        delays.append(delay)
        stop.set()  # close() while the thread is about to pause for a whole minute

    result = outlast_sync(
        listen, outage=OSError, until=stop, backoff=Backoff(first=60.0, cap=60.0), on_retry=on_retry
    )

    assert result is None
    assert delays == [60.0]
