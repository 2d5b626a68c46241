"""Operations: health (liveness, readiness, the caller's queue) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from stellaorch.api.auth import AdminReader, Caller, ReadCaller
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import StoreUnavailable
from stellaorch.engine.app import Orchestrator
from stellaorch.observability.exposition import CONTENT_TYPE, queue_depth_family, render
from stellaorch.observability.metrics import OrchestratorMetrics
from stellaorch.store import health
from stellaorch.store.health import QueueStats

router = APIRouter(tags=["admin"])
# `/metrics` at the app root, where Prometheus looks by default.
root_router = APIRouter(tags=["admin"])

# SPEC §6 default SLO: a tenant backlog at or above this is reported as degraded.
BACKLOG_SLO = 1000


def queue_view(stats: QueueStats, now_us: int) -> dict[str, Any]:
    """One tenant's queue as the health document shows it."""
    oldest = stats.oldest_enqueued_us
    age = max(0, now_us - oldest) / 1e6 if oldest is not None else 0.0
    return {
        "tenant": stats.tenant,
        "depth": stats.depth,
        "oldestAgeSeconds": round(age, 3),
        "inFlight": stats.in_flight,
    }


def worker_running(orch: Orchestrator) -> bool:
    """True while this process runs a worker (workers in other processes are not seen)."""
    return orch.worker_running


def _probe(conn: Connection, tenant: str) -> QueueStats:
    health.ping(conn)
    return health.tenant_queue_stats(conn, tenant)


async def _read_queue(orch: Orchestrator, tenant: str) -> tuple[QueueStats | None, float]:
    """The tenant's queue figures (None if the store failed) and how long the store took."""
    started = time.perf_counter()
    try:
        stats: QueueStats | None = await orch.env.db.transact(lambda c: _probe(c, tenant))
    except StoreUnavailable:
        stats = None
    return stats, round((time.perf_counter() - started) * 1000, 3)


def health_document(
    orch: Orchestrator, stats: QueueStats | None, latency_ms: float
) -> dict[str, Any]:
    """The health JSON: ready only when the store answered."""
    ready = stats is not None
    queues = [queue_view(stats, orch.env.clock.now_us())] if stats is not None else []
    backlog = any(q["depth"] >= BACKLOG_SLO for q in queues)
    return {
        "status": "ok" if ready and not backlog else "degraded",
        "live": True,
        "ready": ready,
        "store": {"reachable": ready, "latencyMs": latency_ms},
        "queues": queues,
        "worker": {"running": worker_running(orch)},
        "sandbox": orch.sandbox.status().document(),
        "bundles": {"status": "none"},
    }


@router.get("/admin/health")
async def admin_health(request: Request, caller: ReadCaller) -> JSONResponse:
    """Liveness, readiness (store reachable), the caller's queue, worker and bundle status."""
    orch = orchestrator(request)
    stats, latency_ms = await _read_queue(orch, caller.tenant)
    await asyncio.to_thread(orch.sandbox.status)  # probes bubblewrap once, off the loop
    document = health_document(orch, stats, latency_ms)
    return JSONResponse(document, status_code=200 if document["ready"] else 503)


def _metrics_of(request: Request) -> OrchestratorMetrics:
    metrics: OrchestratorMetrics = request.app.state.metrics
    return metrics


async def _queue_depths(orch: Orchestrator, tenant: str | None) -> dict[str, int]:
    """Waiting items per tenant: the caller's only, or every tenant's when `tenant` is None."""
    if tenant is None:
        rows = await orch.env.db.transact(health.all_queue_stats)
        return {s.tenant: s.depth for s in rows}
    own = await orch.env.db.transact(lambda c: health.tenant_queue_stats(c, tenant))
    return {own.tenant: own.depth}


async def _exposition(request: Request, caller: Caller) -> Response:
    """The metrics the caller may see: its own tenant's, or all for a "*" token."""
    visible = None if "*" in caller.principal.tenants else caller.tenant
    depths = await _queue_depths(orchestrator(request), visible)
    body = render([_metrics_of(request).registry], [queue_depth_family(depths)], visible)
    return Response(body, media_type=CONTENT_TYPE)


_METRICS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}
}


@router.get("/admin/metrics", response_class=Response, responses=_METRICS_DOC)
async def admin_metrics(request: Request, caller: AdminReader) -> Response:
    """Prometheus exposition, restricted to the caller's tenant."""
    return await _exposition(request, caller)


@router.get("/metrics", response_class=Response, responses=_METRICS_DOC)
async def prefixed_metrics(request: Request, caller: AdminReader) -> Response:
    """The same exposition as /admin/metrics."""
    return await _exposition(request, caller)


@root_router.get("/metrics", response_class=Response, responses=_METRICS_DOC)
async def root_metrics(request: Request, caller: AdminReader) -> Response:
    """The same exposition as /admin/metrics, at the path Prometheus scrapes by default."""
    return await _exposition(request, caller)
