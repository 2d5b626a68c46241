"""Queue operations and quotas of the caller's tenant: read, pause, resume, drain, limit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, Caller, ReadCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.state import orchestrator
from stellaorch.domain.providers import format_utc
from stellaorch.engine.queues import ALL_DAGS, QueueService, QueueView, QuotaLimits, QuotaRow
from stellaorch.engine.quotas import QuotaGate

router = APIRouter(tags=["queues"])
ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SetQuota(BaseModel):
    """Body of PUT /quotas: limits to change (others keep their value); range 0 to 1e6."""

    model_config = ConfigDict(extra="forbid")
    dagId: str | None = Field(default=None, pattern=ID, description="omit: the whole tenant")
    maxActive: int | None = None
    maxPerHour: int | None = None
    burst: int | None = None


def queue_view(view: QueueView, now_us: int) -> dict[str, Any]:
    """A tenant's queue as JSON."""
    f = view.figures
    oldest = None if f.oldest_enqueued_us is None else max(0, now_us - f.oldest_enqueued_us)
    return {
        "tenant": f.tenant,
        "depth": f.depth,
        "oldestAgeSeconds": None if oldest is None else round(oldest / 1e6, 3),
        "inFlight": f.in_flight,
        "retrying": f.retrying,
        "paused": f.paused,
        "draining": f.draining,
        "workersSeen": f.workers_seen,
        "quotaLimited": view.quota_limited,
        "nextEligibleUtc": format_utc(view.next_eligible_us),
    }


def quota_view(row: QuotaRow, gate: QuotaGate) -> dict[str, Any]:
    """A quota as JSON, with when a new run under it may start."""
    dag = None if row.dag_id == ALL_DAGS else row.dag_id
    return {
        "tenant": row.tenant,
        "dagId": dag,
        "maxActive": row.max_active,
        "maxPerHour": row.max_per_hour,
        "burst": row.burst,
        "updatedUtc": format_utc(row.updated_us),
        "nextEligibleUtc": format_utc(gate.next_eligible_us(row.tenant, row.dag_id)),
    }


def _service(request: Request) -> QueueService:
    return orchestrator(request).queues


@router.get("/queues")
async def list_queues(request: Request, caller: ReadCaller) -> dict[str, Any]:
    """The caller's tenant queue: depth, oldest age, leases, retries, flags, workers."""
    view = await _service(request).view(caller.tenant)
    now = orchestrator(request).env.clock.now_us()
    return {"items": [queue_view(view, now)], "nextPageToken": None}


async def _steer(request: Request, caller: Caller, tenant: str, action: str) -> Response:
    async def act() -> tuple[int, Any]:
        view = await _service(request).act(caller.tenant, tenant, action, caller.operator)
        return 200, queue_view(view, orchestrator(request).env.clock.now_us())

    return await idempotent(request, caller, {}, act)


@router.post("/queues/{tenant}:pause")
async def pause_queue(tenant: str, request: Request, caller: AdminCaller) -> Response:
    """Lease nothing new for the tenant; in-flight work finishes."""
    return await _steer(request, caller, tenant, "pause")


@router.post("/queues/{tenant}:resume")
async def resume_queue(tenant: str, request: Request, caller: AdminCaller) -> Response:
    """End a pause and a drain."""
    return await _steer(request, caller, tenant, "resume")


@router.post("/queues/{tenant}:drain")
async def drain_queue(tenant: str, request: Request, caller: AdminCaller) -> Response:
    """Take no new runs (409 QUEUE_DRAINING; schedules held); workers finish the backlog."""
    return await _steer(request, caller, tenant, "drain")


@router.get("/quotas")
async def list_quotas(
    request: Request,
    caller: ReadCaller,
    dagId: Annotated[str | None, Query(pattern=ID)] = None,
) -> dict[str, Any]:
    """The tenant's quotas (tenant-wide has dagId null), with nextEligibleUtc."""
    service = _service(request)
    rows = await service.quotas(caller.tenant, dagId)
    gate = await service.usage(caller.tenant)
    return {"items": [quota_view(r, gate) for r in rows], "nextPageToken": None}


@router.put("/quotas")
async def put_quota(body: SetQuota, request: Request, caller: AdminCaller) -> Response:
    """Set quota limits (admin + reason); values outside 0..1e6 are a 400."""

    async def act() -> tuple[int, Any]:
        limits = QuotaLimits(body.dagId, body.maxActive, body.maxPerHour, body.burst)
        service = _service(request)
        row = await service.set_quota(caller.tenant, limits, caller.operator)
        return 200, quota_view(row, await service.usage(caller.tenant))

    return await idempotent(request, caller, body.model_dump(), act)
