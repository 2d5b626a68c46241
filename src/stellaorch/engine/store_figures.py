"""Store-wide figures for the metrics scrape: runs by status, queue depths, live workers.

A process's own counters only see what that process committed (the API counts runs it
created, a worker the runs it finished), so with several processes they disagree. These
figures are read from the store itself and are the same in every process; one read serves
every scrape for `metrics_store_cache_seconds`, so a scraper flood costs the store little.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from stellaorch.engine.env import EngineEnv
from stellaorch.engine.workers import WorkerRegistry
from stellaorch.store import Connection, health


@dataclass(frozen=True)
class StoreFigures:
    """What the store holds at one moment, across every tenant."""

    runs: tuple[tuple[str, str, int], ...]  # (tenant, status, runs)
    depths: dict[str, int]  # waiting queue items per tenant
    workers_live: int
    worker_slots: int
    worker_slots_in_use: int


def _read(conn: Connection) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    runs = health.all_runs_by_status(conn)
    return runs, {s.tenant: s.depth for s in health.all_queue_stats(conn)}


class StoreFigureReader:
    """Reads the figures at most once per cache period, one read at a time."""

    def __init__(self, env: EngineEnv, workers: WorkerRegistry) -> None:
        self.env = env
        self.workers = workers
        self._lock = asyncio.Lock()
        self._last: tuple[float, StoreFigures] | None = None

    async def figures(self) -> StoreFigures:
        """Fresh enough figures: a cached read while it is younger than the cache period."""
        async with self._lock:
            now = time.monotonic()
            period = self.env.settings.metrics_store_cache_seconds
            if self._last is None or now - self._last[0] >= period:
                self._last = (now, await self._read())
            return self._last[1]

    async def _read(self) -> StoreFigures:
        runs, depths = await self.env.db.read(_read)
        live = (await self.workers.live()).workers
        slots = sum(w.concurrency for w in live)
        busy = sum(w.slots_in_use for w in live)
        return StoreFigures(tuple(runs), depths, len(live), slots, busy)
