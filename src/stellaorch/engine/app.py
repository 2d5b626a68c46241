"""The assembled engine a face talks to: store, catalog, run service, worker, one lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stellaorch.engine.catalog import DagCatalog, Published
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.runs import RunService
from stellaorch.engine.worker import Worker
from stellaorch.plugins.builtin import builtin_registry
from stellaorch.settings import Settings
from stellaorch.store.database import Database
from stellaorch.store.migrate import upgrade


class Orchestrator:
    """One process's engine: open it, optionally run a worker, close it."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.runs = RunService(env)
        self.plugins = builtin_registry(max_log_bytes=env.settings.max_log_bytes)
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, settings: Settings | None = None, *, migrate: bool = True) -> Orchestrator:
        """Open the store named by the settings (creating/upgrading its schema by default)."""
        settings = settings or Settings()
        db = Database.open(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        if migrate:
            upgrade(db.engine)
        return cls(EngineEnv.build(db, settings))

    @property
    def worker_task(self) -> asyncio.Task[None] | None:
        """The in-process worker's task, to watch for a crash (None when not started)."""
        return self._worker_task

    @property
    def worker_running(self) -> bool:
        """True while the in-process worker runs."""
        return self._worker_task is not None and not self._worker_task.done()

    @property
    def catalog(self) -> DagCatalog:
        """The DAG catalog."""
        return self.env.catalog

    async def load_dags(self, directory: Path, tenant: str | None = None) -> list[Published]:
        """Publish every spec file in `directory` for `tenant` (default tenant if None)."""
        return await self.catalog.publish_directory(
            tenant or self.env.settings.default_tenant, directory
        )

    def start_worker(self, *, concurrency: int | None = None) -> Worker:
        """Start an in-process worker on the running event loop."""
        self._worker = Worker(self.env, self.plugins, concurrency=concurrency)
        self._worker_task = asyncio.create_task(self._worker.run())
        return self._worker

    async def stop_worker(self) -> None:
        """Stop the worker: in-flight attempts finish or are released for another worker."""
        if self._worker is not None and self._worker_task is not None:
            self._worker.stop()
            await self._worker_task
            self._worker, self._worker_task = None, None

    async def close(self) -> None:
        """Stop the worker and release the store."""
        await self.stop_worker()
        self.env.db.close()
