"""The worker's loops ride out store outages with a backoff that starts small each outage."""

from __future__ import annotations

import asyncio

import pytest

from stellaorch.domain.errors import StoreUnavailable
from stellaorch.engine import worker


async def test_backoff_doubles_within_an_outage_and_restarts_after_a_healthy_spell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    slept: list[float] = []
    runs = [0.0, 0.0, 0.0, 60.0, 0.0]  # how long each pass runs before the store fails

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def loop() -> None:
        if not runs:
            return
        clock[0] += runs.pop(0)
        raise StoreUnavailable("store unavailable: connection refused")

    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(worker.asyncio, "sleep", fake_sleep)
    await worker._resilient(loop, asyncio.Event())

    assert slept == [0.05, 0.1, 0.2, 0.05, 0.1]
