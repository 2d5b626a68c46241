"""The engine inside the CLI process: open the store, run a worker, close everything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from stellaorch.cli.errors import SettingsInvalid, WorkerCrashed
from stellaorch.domain.errors import StoreUnavailable
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.worker import Worker
from stellaorch.settings import Settings

T = TypeVar("T")


def display_url(url: str) -> str:
    """The database URL with any password hidden, for output and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def open_orchestrator(settings: Settings) -> Orchestrator:
    """Open (and migrate) the store; driver errors become product errors with the URL named."""
    where = display_url(settings.database_url)
    try:
        return Orchestrator.open(settings)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise SettingsInvalid(f"cannot use database URL {where}: {exc}") from exc
    except OperationalError as exc:
        raise StoreUnavailable(f"cannot open the store at {where}: {exc.orig}") from exc


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Orchestrator]:
    """An open orchestrator that is closed (worker stopped, store released) on exit."""
    orchestrator = open_orchestrator(settings)
    try:
        yield orchestrator
    finally:
        await orchestrator.close()


class WorkerHandle:
    """A worker running as a task the CLI can watch.

    The facade's `start_worker` keeps its task private, but `serve` and `local run` must
    notice a crash while they wait, so the CLI runs the engine's Worker itself.
    """

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.worker = Worker(orchestrator.env, orchestrator.plugins)
        self.task: asyncio.Task[None] = asyncio.create_task(self.worker.run())
        self._crash_reported = False

    async def watch(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, unless the worker stops first: then raise WorkerCrashed."""
        job = asyncio.create_task(work)
        try:
            await asyncio.wait({job, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not job.done():
                job.cancel()  # the worker is gone, or we are being cancelled ourselves
        if job.done() and not job.cancelled():
            return job.result()
        self._crash_reported = True
        raise self._crash()

    async def stop(self) -> None:
        """Stop taking work, settle in-flight attempts; raise WorkerCrashed for a new crash."""
        self.worker.stop()
        try:
            await self.task
        except Exception as exc:
            if not self._crash_reported:
                raise self._crash() from exc

    def _crash(self) -> WorkerCrashed:
        exc = None if self.task.cancelled() else self.task.exception()
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "it exited early"
        return WorkerCrashed(f"the worker stopped unexpectedly: {reason}")
