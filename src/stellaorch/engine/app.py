"""The assembled engine a face talks to: store, catalog, run service, worker, one lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.engine.alert_loop import AlertLoop
from stellaorch.engine.alerts import AlertService
from stellaorch.engine.audit import AuditService
from stellaorch.engine.backfill import BackfillService
from stellaorch.engine.catalog import DagCatalog, Published
from stellaorch.engine.checkpoints import CheckpointLoop, CheckpointWriter
from stellaorch.engine.deadletter import DeadLetterService
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.export import LedgerExport
from stellaorch.engine.health import StoreProbe, admit_store, check_opened
from stellaorch.engine.kit import OfflineKit
from stellaorch.engine.queues import QueueService
from stellaorch.engine.runs import RunService
from stellaorch.engine.scheduler import Scheduler
from stellaorch.engine.schedules import ScheduleService
from stellaorch.engine.secret_vault import SecretVault
from stellaorch.engine.secrets import SecretService
from stellaorch.engine.slo import BacklogSampler, SloService
from stellaorch.engine.store_figures import StoreFigureReader
from stellaorch.engine.warm import Warming
from stellaorch.engine.worker import Worker
from stellaorch.engine.workers import WorkerRegistry
from stellaorch.plugins.bundle_source import BundleSource
from stellaorch.settings import Settings
from stellaorch.store.database import Database, StoreOptions
from stellaorch.store.migrate import create_sqlite_file, upgrade


class Orchestrator:
    """One process's engine: open it, optionally run a worker, close it."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.runs = RunService(env)
        self.sandbox = env.sandbox
        self.plugins = env.plugins
        self.bundles = env.bundles
        self.health = StoreProbe(env)
        self.queues = QueueService(env)
        self.audit = AuditService(env)
        self.dead_letter = DeadLetterService(env)
        self.checkpoints = CheckpointWriter(env)
        self.exports = LedgerExport(env.db)
        self.kits = OfflineKit(env)
        self._checkpoint_loop: CheckpointLoop | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self.secrets = SecretService(env)
        self.warming = Warming(env)
        self.workers = WorkerRegistry(env)
        self.store_figures = StoreFigureReader(env, self.workers)
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.schedules = ScheduleService(env)
        self.backfills = BackfillService(env)
        self.alerts = AlertService(env)
        self._alert_loop: AlertLoop | None = None
        self._alert_task: asyncio.Task[None] | None = None
        self.slos = SloService(env)
        self._sampler: BacklogSampler | None = None
        self._sampler_task: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._scheduler_unsubscribe: Callable[[], None] | None = None

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        migrate: bool = True,
        bundles: BundleSource | None = None,
    ) -> Orchestrator:
        """Open the store named by the settings (creating/upgrading its schema by default).

        `bundles` serves the tenants' `name@version` plugins; without it only built-ins run.

        A damaged store, or a file that is not a Stella store, is refused before anything
        writes to it (StoreCorrupt, StoreNotStella); only a missing SQLite file is created.
        """
        settings = settings or Settings()
        SecretVault(settings).check()  # a key file others can read: refuse, say why
        missing = admit_store(settings)
        if missing is not None and migrate:
            create_sqlite_file(missing, settings.sqlite_busy_timeout_ms)
        db = Database.open(settings.database_url, store_options(settings))
        try:
            check_opened(db, settings)
            if migrate:
                upgrade(db.engine)
        except BaseException:
            db.close()
            raise
        return cls(EngineEnv.build(db, settings, bundles=bundles))

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

    async def load_dags(
        self, directory: Path, tenant: str | None = None, key: Ed25519PrivateKey | None = None
    ) -> list[Published]:
        """Publish every spec file in `directory` for `tenant` (default tenant if None).

        With `key` every version is signed with it (it must be in the trust store).
        """
        return await self.catalog.publish_directory(
            tenant or self.env.settings.default_tenant, directory, key
        )

    def start_worker(self, *, concurrency: int | None = None) -> Worker:
        """Start an in-process worker on the running event loop."""
        self._worker = Worker(
            self.env, self.plugins, concurrency=concurrency, listeners=[self.warming.listen]
        )
        self.warming.identity = self._worker.worker_id
        self._worker_task = asyncio.create_task(self._worker.run())
        return self._worker

    async def stop_worker(self) -> None:
        """Stop the worker: in-flight attempts finish or are released for another worker."""
        worker, task = self._worker, self._worker_task
        self._worker, self._worker_task = None, None
        if worker is None or task is None or task.done():
            return  # a task that already ended was reported by whoever watched it
        worker.stop()
        await task

    @property
    def scheduler_task(self) -> asyncio.Task[None] | None:
        """The in-process scheduler's task, to watch for a crash (None when not started)."""
        return self._scheduler_task

    def start_scheduler(
        self,
        *,
        holder: str | None = None,
        lease_ttl_seconds: float = 10.0,
        poll_seconds: float = 1.0,
    ) -> Scheduler:
        """Start the cron scheduler on the running loop; it fires only while it holds the lease."""
        if self._scheduler is not None and self._scheduler_task and not self._scheduler_task.done():
            return self._scheduler  # already running
        scheduler = Scheduler(
            self.env,
            self.runs,
            holder=holder,
            lease_ttl_seconds=lease_ttl_seconds,
            poll_seconds=poll_seconds,
        )
        self._scheduler_unsubscribe = self.schedules.subscribe(scheduler.wake)
        self._scheduler = scheduler
        self._scheduler_task = asyncio.create_task(scheduler.run())
        return scheduler

    async def stop_scheduler(self) -> None:
        """Stop the scheduler and give its leader lease up for a standby."""
        scheduler, task = self._scheduler, self._scheduler_task
        self._scheduler, self._scheduler_task = None, None
        if self._scheduler_unsubscribe is not None:
            self._scheduler_unsubscribe()
            self._scheduler_unsubscribe = None
        if scheduler is None or task is None or task.done():
            return  # a task that already ended was reported by whoever watched it
        scheduler.stop()
        await task

    def start_alerts(self, *, lease_ttl_seconds: float = 10.0) -> AlertLoop:
        """Start the alert delivery loop on the running loop (it delivers while it leads)."""
        if self._alert_loop is not None and self._alert_task and not self._alert_task.done():
            return self._alert_loop
        self._alert_loop = AlertLoop(self.env, lease_ttl_seconds=lease_ttl_seconds)
        self._alert_task = asyncio.create_task(self._alert_loop.run())
        return self._alert_loop

    async def stop_alerts(self) -> None:
        """Stop the alert loop after its pass in progress; it gives its lease up."""
        loop, task = self._alert_loop, self._alert_task
        self._alert_loop, self._alert_task = None, None
        if loop is None or task is None or task.done():
            return
        loop.stop()
        await task

    def start_slo_sampler(self, *, interval_seconds: float = 60.0) -> BacklogSampler:
        """Sample every tenant's backlog into its 5-minute SLO windows on the running loop."""
        if self._sampler is not None and self._sampler_task and not self._sampler_task.done():
            return self._sampler
        self._sampler = BacklogSampler(self.env, interval_seconds)
        self._sampler_task = asyncio.create_task(self._sampler.run())
        return self._sampler

    async def stop_slo_sampler(self) -> None:
        """Stop the backlog sampler after its sample in progress."""
        sampler, task = self._sampler, self._sampler_task
        self._sampler, self._sampler_task = None, None
        if sampler is None or task is None or task.done():
            return
        sampler.stop()
        await task

    def start_checkpoints(self, *, interval_seconds: float, lease_ttl_seconds: float) -> None:
        """Sign ledger checkpoints every `interval_seconds` while this process holds the lease."""
        if self._checkpoint_task is not None and not self._checkpoint_task.done():
            return
        self._checkpoint_loop = CheckpointLoop(
            self.checkpoints, interval_seconds, lease_ttl_seconds
        )
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop.run())

    async def stop_checkpoints(self) -> None:
        """Stop the checkpoint loop and give its lease up."""
        loop, task = self._checkpoint_loop, self._checkpoint_task
        self._checkpoint_loop, self._checkpoint_task = None, None
        if loop is None or task is None or task.done():
            return
        loop.stop()
        await task

    async def close(self) -> None:
        """Stop the alert and checkpoint loops, the scheduler, the worker; release the store."""
        await self.stop_alerts()
        await self.stop_slo_sampler()
        await self.stop_checkpoints()
        await self.stop_scheduler()
        await self.stop_worker()
        await asyncio.to_thread(self.env.notifier.close)
        self.env.bundles.close()
        self.env.db.close()


def store_options(settings: Settings) -> StoreOptions:
    """The store's connection tuning, from the settings."""
    return StoreOptions(
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        threads=settings.database_threads,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
    )
