"""The engine inside a service process: open the store, run a worker, close everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from stellaorch.domain.errors import StellaError, WorkerCrashed, WorkerStopTimeout
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.health import display_url, opening_store
from stellaorch.settings import Settings

T = TypeVar("T")
# Stopping cancels in-flight attempts at once; script steps get 2 s to exit before SIGKILL.
STOP_GRACE_SECONDS = 15.0


def open_orchestrator(settings: Settings) -> Orchestrator:
    """Open (and migrate) the store; driver errors become product errors with the URL named."""
    with opening_store(display_url(settings.database_url)):
        return Orchestrator.open(settings)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Orchestrator]:
    """An open orchestrator that is closed (worker stopped, store released) on exit."""
    orchestrator = open_orchestrator(settings)
    try:
        yield orchestrator
    finally:
        await orchestrator.close()


async def watch_task(
    task: asyncio.Task[None], work: Coroutine[Any, Any, T], crash: Callable[[], StellaError]
) -> T:
    """Await `work`, unless `task` (which should run forever) ends first: then raise `crash()`."""
    job = asyncio.create_task(work)
    try:
        await asyncio.wait({job, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not job.done():
            job.cancel()  # the task is gone, or we are being cancelled ourselves
    if job.done() and not job.cancelled():
        return job.result()
    raise crash()


def ended_because(task: asyncio.Task[None]) -> str:
    """Why a background task ended, for an error message."""
    exc = None if task.cancelled() else task.exception()
    return f"{type(exc).__name__}: {exc}" if exc is not None else "it exited early"


class WorkerHandle:
    """The orchestrator's in-process worker, watched so `serve` and `local run` see a crash."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.worker = orchestrator.start_worker()
        task = orchestrator.worker_task
        assert task is not None
        self.task: asyncio.Task[None] = task
        self._crash_reported = False

    async def watch(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, unless the worker stops first: then raise WorkerCrashed."""
        return await watch_task(self.task, work, self._reported_crash)

    async def stop(self) -> None:
        """Stop taking work, settle in-flight attempts; raise WorkerCrashed for a new crash."""
        self.worker.stop()
        try:
            # Bounded: a stop that never finishes would turn SIGTERM into SIGKILL later on.
            await asyncio.wait_for(asyncio.shield(self.task), STOP_GRACE_SECONDS)
        except TimeoutError:
            await self._abandon()
        except Exception as exc:
            if not self._crash_reported:
                raise self._crash() from exc

    async def _abandon(self) -> None:
        """Cancel a worker that did not stop in time; its leases expire and are retried."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        raise WorkerStopTimeout(
            f"the worker did not stop within {STOP_GRACE_SECONDS:g}s; the attempts it held "
            "are retried once their leases expire"
        )

    def _reported_crash(self) -> WorkerCrashed:
        self._crash_reported = True
        return self._crash()

    def _crash(self) -> WorkerCrashed:
        return WorkerCrashed(f"the worker stopped unexpectedly: {ended_because(self.task)}")
