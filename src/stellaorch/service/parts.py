"""A service process's parts for its role: worker, scheduler, API server (or metrics only).

They start worker first and API last, and stop in the reverse order: API first (no new
requests), then the scheduler (no new triggers), the worker last (in-flight work settles).
"""

from __future__ import annotations

from collections.abc import Coroutine
from enum import StrEnum
from typing import Any, TypeVar

from stellaorch.domain.errors import SchedulerCrashed
from stellaorch.engine.app import Orchestrator
from stellaorch.service.apiserver import ApiServer
from stellaorch.service.embedded import WorkerHandle, ended_because, watch_task
from stellaorch.settings import Settings

T = TypeVar("T")


class Role(StrEnum):
    """Which service a process runs: everything (`serve`) or one part of it."""

    SERVE = "serve"
    API = "api"
    WORKER = "worker"
    SCHEDULER = "scheduler"

    @property
    def serves_api(self) -> bool:
        """True when this process answers HTTP."""
        return self in (Role.SERVE, Role.API)

    @property
    def works(self) -> bool:
        """True when this process executes steps."""
        return self in (Role.SERVE, Role.WORKER)

    @property
    def schedules(self) -> bool:
        """True when this process runs the scheduler."""
        return self in (Role.SERVE, Role.SCHEDULER)


def with_role_defaults(settings: Settings, role: Role) -> Settings:
    """The settings a role runs with: DAG signatures are required unless set otherwise.

    Unset, `require_dag_signatures` is on for every service process that publishes or runs
    DAGs (`serve`, `api`, `worker`); the library and the `local` commands leave it off.
    """
    if settings.require_dag_signatures is not None or role is Role.SCHEDULER:
        return settings
    return settings.model_copy(update={"require_dag_signatures": True})


class ServiceParts:
    """The running parts of one role on one orchestrator, watched for a crash."""

    def __init__(self, orchestrator: Orchestrator, role: Role) -> None:
        """Start the worker and the scheduler the role runs (the API starts in `start_api`)."""
        self.orchestrator = orchestrator
        self.role = role
        settings = orchestrator.env.settings
        self.worker = WorkerHandle(orchestrator) if role.works else None
        self.api: ApiServer | None = None
        if role.schedules:
            orchestrator.start_scheduler(
                lease_ttl_seconds=settings.scheduler_lease_ttl_seconds,
                poll_seconds=settings.scheduler_poll_seconds,
            )
            # Alerts ride with the scheduler: a loop that logs its own failures, never fatal.
            orchestrator.start_alerts(lease_ttl_seconds=settings.scheduler_lease_ttl_seconds)
            # So does the backlog sampler of the SLOs: standbys sample too (a window keeps
            # the highest depth any of them saw).
            orchestrator.start_slo_sampler()
            if settings.checkpoint_interval_seconds > 0:
                # The leader of the checkpoint lease signs; standbys only try to take it.
                orchestrator.start_checkpoints(
                    interval_seconds=settings.checkpoint_interval_seconds,
                    lease_ttl_seconds=settings.scheduler_lease_ttl_seconds,
                )

    async def start_api(self) -> str | None:
        """Serve the API (or only `/metrics` when a metrics port is set); its URL, if any."""
        settings = self.orchestrator.env.settings
        if self.role.serves_api:
            self.api = await ApiServer.start(self.orchestrator, settings)
        elif settings.metrics_port is not None:
            self.api = await ApiServer.start(self.orchestrator, settings, metrics_only=True)
        return self.api.url if self.api else None

    async def watch(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, unless a part stops first: then raise that part's crash error."""
        if self.api is not None:
            work = self.api.watch(work)
        if self.role.schedules:
            work = self._watch_scheduler(work)
        return await (self.worker.watch(work) if self.worker else work)

    async def stop(self) -> None:
        """Stop the parts: API first, the scheduler and alerts, the worker last."""
        if self.api is not None:
            await self.api.stop()
        await self.orchestrator.stop_alerts()
        await self.orchestrator.stop_slo_sampler()
        await self.orchestrator.stop_checkpoints()
        await self.orchestrator.stop_scheduler()
        if self.worker is not None:
            await self.worker.stop()

    async def _watch_scheduler(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, unless the scheduler task ends first: then raise SchedulerCrashed."""
        task = self.orchestrator.scheduler_task
        assert task is not None
        return await watch_task(
            task, work, lambda: SchedulerCrashed(f"the scheduler stopped: {ended_because(task)}")
        )
