"""Store health: the check before a process uses its store, and the probes behind readiness.

Readiness is only true when the store answers a read, takes a write, and (for the embedded
SQLite store) has free space left beside its file: a store that answers `SELECT 1` while
every write fails is not ready, whatever the read says.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stellaorch.domain.errors import StellaError, StoreCorrupt, StoreNotWritable
from stellaorch.engine.env import EngineEnv
from stellaorch.settings import Settings
from stellaorch.store import Connection, health, integrity
from stellaorch.store.database import Database
from stellaorch.store.health import QueueStats as QueueStats
from stellaorch.store.integrity import CheckLevel, IntegrityReport
from stellaorch.store.urls import display_url as display_url
from stellaorch.store.urls import hidden_password_url
from stellaorch.store.urls import opening_store as opening_store
from stellaorch.store.urls import usable_url as usable_url

# Unauthenticated readiness probes share one result for this long: a flood of them costs
# the store at most one probe write per second and process.
READY_REUSE_SECONDS = 1.0


@dataclass(frozen=True)
class StoreProblem:
    """Why the store is not ready: a stable code and a message for operators."""

    code: str
    message: str

    def document(self) -> dict[str, str]:
        """The problem as JSON."""
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class StoreHealth:
    """What the probes found; ready only when nothing is in `problems`."""

    reachable: bool
    writable: bool
    latency_ms: float
    free_disk_mb: int | None
    min_free_mb: int
    problems: tuple[StoreProblem, ...] = ()
    integrity: IntegrityReport | None = None
    queue: QueueStats | None = None

    @property
    def ready(self) -> bool:
        """True when the store answered, took a write, and has room left."""
        return not self.problems

    def document(self) -> dict[str, Any]:
        """The `store` part of the health document."""
        doc: dict[str, Any] = {
            "reachable": self.reachable,
            "writable": self.writable,
            "latencyMs": self.latency_ms,
            "freeDiskMb": self.free_disk_mb,
            "minFreeDiskMb": self.min_free_mb,
            "problems": [p.document() for p in self.problems],
        }
        if self.integrity is not None:
            doc["integrity"] = self.integrity.document()
        return doc


def where(settings: Settings) -> str:
    """The store's URL with any password hidden, for messages."""
    return hidden_password_url(settings.database_url)


def corrupt_error(report: IntegrityReport, place: str) -> StoreCorrupt:
    """The one-line error for a store that failed its integrity check."""
    first = report.problems[0] if report.problems else "no detail given"
    return StoreCorrupt(
        f"the store at {place} failed its {report.level} integrity check "
        f"({len(report.problems)} problem(s); first: {first}); restore it from a backup "
        "(`stella orch db check` lists the problems)",
        details={"problems": list(report.problems)},
    )


def admit_store(settings: Settings) -> Path | None:
    """Refuse a damaged or foreign SQLite store before anything opens it (raises StellaError).

    Answers the path when no SQLite file exists there yet (the caller creates the store).
    PostgreSQL is checked once opened.
    """
    path = integrity.sqlite_file(settings.database_url)
    if path is None:
        return None
    if integrity.admit_file(path):
        return path
    level = settings.store_start_check
    if level != "off":
        report = integrity.check_file(path, level)
        if not report.ok:
            raise corrupt_error(report, where(settings))
    return None


def check_opened(db: Database, settings: Settings) -> None:
    """The start check of an opened PostgreSQL store (SQLite was checked before opening)."""
    level = settings.store_start_check
    if db.dialect == "sqlite" or level == "off":
        return
    report = db.read_sync(lambda c: integrity.check_connection(c, level))
    if not report.ok:
        raise corrupt_error(report, where(settings))


def check_store(settings: Settings, level: CheckLevel) -> IntegrityReport:
    """Check an existing store without creating, migrating or writing anything."""
    path = integrity.sqlite_file(settings.database_url)
    if path is not None:
        integrity.require_file(path)
        return integrity.check_file(path, level)
    db = Database.open(settings.database_url)
    try:
        return db.read_sync(lambda c: integrity.check_connection(c, level))
    finally:
        db.close()


def _read(conn: Connection, tenant: str | None) -> QueueStats | None:
    health.ping(conn)
    return None if tenant is None else health.tenant_queue_stats(conn, tenant)


class StoreProbe:
    """Probes the store the way work uses it: a read, a write, the room left on disk."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._path: Path | None = integrity.sqlite_file(env.settings.database_url)
        self._lock = asyncio.Lock()
        self._last: tuple[float, StoreHealth] | None = None

    async def check(self, tenant: str | None = None, full_check: bool = False) -> StoreHealth:
        """Probe now; with `tenant`, also read its queue; with `full_check`, check integrity."""
        started = time.perf_counter()
        problems: list[StoreProblem] = []
        queue, reachable = None, True
        try:
            queue = await self.env.db.read(lambda c: _read(c, tenant))
        except StellaError as exc:
            reachable = False
            problems.append(StoreProblem(exc.code, exc.message))
        report = await self._integrity(problems) if reachable and full_check else None
        failure = await self._write() if reachable else None
        if failure is not None:
            problems.append(StoreProblem(failure.code, failure.message))
            # Only a refused write leaves the store reachable; a write that cannot even
            # start (the lock held beyond the busy timeout, the server gone) does not.
            reachable = isinstance(failure, StoreNotWritable)
        writable = reachable and failure is None
        latency = round((time.perf_counter() - started) * 1000, 3)
        free = integrity.free_disk_mb(self._path) if self._path is not None else None
        problems += self._disk(free)
        minimum = self.env.settings.store_min_free_mb
        return StoreHealth(
            reachable, writable, latency, free, minimum, tuple(problems), report, queue
        )

    async def ready(self) -> StoreHealth:
        """A recent probe result (at most READY_REUSE_SECONDS old), one probe at a time."""
        async with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last[0] >= READY_REUSE_SECONDS:
                self._last = (now, await self.check())
            return self._last[1]

    async def queue_depths(self, tenant: str | None) -> dict[str, QueueStats]:
        """Queue figures per tenant: `tenant`'s only, or every tenant's with items when None."""
        if tenant is None:
            rows = await self.env.db.transact(health.all_queue_stats)
            return {s.tenant: s for s in rows}
        own = await self.env.db.transact(lambda c: health.tenant_queue_stats(c, tenant))
        return {own.tenant: own}

    async def _write(self) -> StellaError | None:
        """Rewrite the probe row; the error that stopped it, or None."""
        now_us = self.env.clock.now_us()
        try:
            await self.env.db.transact(lambda c: health.write_probe(c, now_us))
        except StellaError as exc:
            return exc
        return None

    async def _integrity(self, problems: list[StoreProblem]) -> IntegrityReport:
        if self._path is not None:
            path = self._path
            report = await asyncio.to_thread(integrity.check_file, path, "full")
        else:
            report = await self.env.db.read(lambda c: integrity.check_connection(c, "full"))
        if not report.ok:
            error = corrupt_error(report, where(self.env.settings))
            problems.append(StoreProblem(error.code, error.message))
        return report

    def _disk(self, free_mb: int | None) -> list[StoreProblem]:
        minimum = self.env.settings.store_min_free_mb
        if free_mb is None or minimum == 0 or free_mb >= minimum:
            return []
        message = f"{free_mb} MiB free beside the store's file, below the minimum of {minimum} MiB"
        return [StoreProblem("STORE_DISK_LOW", message)]
