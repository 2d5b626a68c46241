"""The worker registry: each worker process heartbeats who it is; health and `worker list` read it.

Lease holders only show workers that happen to be busy; the registry shows every live
worker process, idle or not, across all processes sharing the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stellaorch import __version__
from stellaorch.engine.env import EngineEnv
from stellaorch.store import Connection
from stellaorch.store import workers as registry
from stellaorch.store.workers import MAX_LIVE_WORKERS
from stellaorch.store.workers import WorkerRow as WorkerRow


@dataclass(frozen=True)
class LiveWorkers:
    """The live workers at the store's time `now_us`."""

    now_us: int
    workers: tuple[WorkerRow, ...]

    def serving(self, tenant: str) -> tuple[WorkerRow, ...]:
        """The workers that lease `tenant`'s steps."""
        return tuple(w for w in self.workers if w.serves(tenant))


def presence(worker_id: str, tenants: tuple[str, ...], concurrency: int, slots: int) -> WorkerRow:
    """This process's row as a worker reports it (the times are the store's)."""
    host = os.uname().nodename
    return WorkerRow(worker_id, host, os.getpid(), __version__, tenants, concurrency, slots, 0, 0)


class WorkerRegistry:
    """Heartbeats, departures and the live view of the registry."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    @property
    def ttl_us(self) -> int:
        """How long a row stays live after its last heartbeat, in microseconds."""
        return int(self.env.settings.worker_ttl * 1_000_000)

    async def beat(self, row: WorkerRow) -> None:
        """Record a heartbeat and prune rows of workers that died without leaving."""
        now = self.env.clock.now_us()

        def write(conn: Connection) -> None:
            registry.beat_worker(conn, row, now)
            registry.prune_workers(conn, self.ttl_us, now)

        await self.env.db.transact(write)

    async def leave(self, worker_id: str) -> None:
        """Remove a cleanly stopping worker's row."""
        await self.env.db.transact(lambda c: registry.remove_worker(c, worker_id))

    async def live(self) -> LiveWorkers:
        """Every worker seen within the TTL (up to MAX_LIVE_WORKERS), by id."""
        now = self.env.clock.now_us()
        store_now, rows = await self.env.db.read(
            lambda c: registry.live_workers(c, self.ttl_us, now, MAX_LIVE_WORKERS)
        )
        return LiveWorkers(store_now, tuple(rows))
