"""Operations: health (liveness, readiness, the caller's queue), probes, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from stellaorch.api.auth import ADMIN, AdminCaller, Caller, ReadCaller, Scraper
from stellaorch.api.errors import trace_id_of
from stellaorch.api.routers.slos import slo_documents
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import ScopeRequired, StellaError, error_envelope
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.health import QueueStats, StoreHealth
from stellaorch.observability.exposition import (
    CONTENT_TYPE,
    queue_age_family,
    queue_depth_family,
    render,
    store_runs_family,
    worker_families,
)
from stellaorch.observability.metrics import OrchestratorMetrics

router = APIRouter(tags=["admin"])
# `/metrics` at the app root, where Prometheus looks by default.
root_router = APIRouter(tags=["admin"])
# `/livez` and `/readyz` at the app root, for process supervisors and load balancers; left
# out of the API document, which describes the tenant-scoped API.
probes_router = APIRouter(tags=["admin"], include_in_schema=False)

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


def worker_document(orch: Orchestrator, serving: int | None) -> dict[str, Any]:
    """This process's worker, and the live workers of every process that serve the tenant."""
    return {"running": orch.worker_running, "live": serving}


def degraded_reasons(
    queues: list[dict[str, Any]], serving: int | None, bundles: dict[str, Any]
) -> list[dict[str, str]]:
    """Why a ready service is degraded: backlog over the SLO, no live worker, bad bundles."""
    reasons = []
    for q in queues:
        if q["depth"] >= BACKLOG_SLO:
            message = f"{q['depth']} queued step(s), at or above the backlog SLO of {BACKLOG_SLO}"
            reasons.append({"code": "BACKLOG_OVER_SLO", "message": message})
        if q["depth"] and serving == 0:
            message = f"{q['depth']} queued step(s) and no live worker serves tenant {q['tenant']}"
            reasons.append({"code": "NO_LIVE_WORKER", "message": message})
    if bundles.get("failures"):
        reasons.append({"code": "BUNDLE_VERIFICATION_FAILED", "message": "a bundle failed"})
    return reasons


def not_ready_error(request: Request, store: StoreHealth) -> dict[str, str]:
    """The envelope's error object for the first reason the store is not ready."""
    first = store.problems[0]
    return dict(error_envelope(first.code, first.message, trace_id_of(request))["error"])


def health_document(
    request: Request,
    orch: Orchestrator,
    store: StoreHealth,
    bundles: dict[str, Any],
    serving: int | None,
) -> dict[str, Any]:
    """The health JSON: ready only when the store answered, took a write and has room.

    `serving` counts the registry's live workers for the tenant (None: the store is down).
    """
    stats = store.queue
    queues = [queue_view(stats, orch.env.clock.now_us())] if stats is not None else []
    reasons = degraded_reasons(queues, serving, bundles)
    document: dict[str, Any] = {
        "status": "ok" if store.ready and not reasons else "degraded",
        "live": True,
        "ready": store.ready,
        "store": store.document(),
        "queues": queues,
        "worker": worker_document(orch, serving),
        "sandbox": orch.sandbox.status().document(),
        "bundles": bundles,
        "reasons": reasons,
    }
    if not store.ready:
        document["error"] = not_ready_error(request, store)
    return document


HealthCheck = Annotated[
    Literal["full"] | None,
    Query(description="`full`: also run the store's full integrity check (admin scope)."),
]


@router.get("/admin/health")
async def admin_health(
    request: Request, caller: ReadCaller, check: HealthCheck = None
) -> JSONResponse:
    """Liveness, readiness (store reads, writes, free disk), the caller's queue, worker, bundles.

    503 when not ready, with an `error` object naming the first reason.
    """
    full = check == "full"
    if full and ADMIN not in caller.principal.scopes:
        raise ScopeRequired(f"check=full needs the {ADMIN} scope")
    orch = orchestrator(request)
    store = await orch.health.check(caller.tenant, full_check=full)
    await asyncio.to_thread(orch.sandbox.status)  # probes bubblewrap once, off the loop
    bundles = await _bundle_status(orch, caller.tenant, store)
    serving = await _serving_workers(orch, caller.tenant, store)
    document = health_document(request, orch, store, bundles, serving)
    document["slos"] = await _slo_status(request, caller, store)
    critical = [s["id"] for s in document["slos"] or () if s["status"] == "critical"]
    if critical:
        message = f"error budget burning at the critical rate: {', '.join(critical)}"
        document["reasons"].append({"code": "SLO_BURN_CRITICAL", "message": message})
        document["status"] = "degraded"
    return JSONResponse(document, status_code=200 if store.ready else 503)


async def _slo_status(
    request: Request, caller: Caller, store: StoreHealth
) -> list[dict[str, Any]] | None:
    """The tenant's SLOs with their burn; None while the store cannot be read."""
    if not store.ready:
        return None
    try:
        return await slo_documents(request, caller)
    except StellaError:
        return None


async def _bundle_status(orch: Orchestrator, tenant: str, store: StoreHealth) -> dict[str, Any]:
    """The tenant's bundles: count, verified, failures; `unknown` while the store is down."""
    if not store.ready:
        return {"status": "unknown"}
    try:
        bundles = await orch.bundles.status(tenant)
    except StellaError as exc:  # the store went away between the probe and this read
        return {"status": "unknown", "error": {"code": exc.code, "message": exc.message}}
    failed = bool(bundles["failures"])
    bundles["status"] = "none" if not bundles["count"] else "failed" if failed else "ok"
    return bundles


async def _serving_workers(orch: Orchestrator, tenant: str, store: StoreHealth) -> int | None:
    """Live workers of every process that serve `tenant`; None while the store is down."""
    if not store.ready:
        return None
    try:
        live = await orch.workers.live()
    except StellaError:  # the store went away between the probe and this read
        return None
    return len(live.serving(tenant))


@router.post("/admin/warm")
async def admin_warm(request: Request, caller: AdminCaller) -> dict[str, Any]:
    """Refresh worker caches (secrets; bundles once registered): what each process warmed.

    This process warms the caller's tenant and reports; on PostgreSQL every other process
    is told through NOTIFY and warms too (`notified: true`).
    """
    return await orchestrator(request).warming.warm(caller.tenant, caller.operator)


@probes_router.get("/livez")
async def livez() -> dict[str, bool]:
    """Process liveness for supervisors: answers while the event loop runs (no auth)."""
    return {"live": True}


@probes_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Process readiness (no auth, no tenant data): the store reads, writes, has room; else 503."""
    store = await orchestrator(request).health.ready()
    document: dict[str, Any] = {
        "ready": store.ready,
        "store": {"reachable": store.reachable, "writable": store.writable},
    }
    if not store.ready:
        # codes only: an unauthenticated caller learns nothing about paths or drivers
        first = store.problems[0].code
        document["error"] = {
            "code": first,
            "message": "the store is not ready; see GET /admin/health",
            "traceId": trace_id_of(request),
        }
    return JSONResponse(document, status_code=200 if store.ready else 503)


def _metrics_of(request: Request) -> OrchestratorMetrics:
    metrics: OrchestratorMetrics = request.app.state.metrics
    return metrics


async def _exposition(request: Request, caller: Caller) -> Response:
    """The metrics the caller may see: its own tenant's, or all for a "*" token."""
    visible = None if "*" in caller.principal.tenants else caller.tenant
    orch = orchestrator(request)
    queues = await orch.health.queue_depths(visible)
    store = await orch.store_figures.figures()
    extra = [
        queue_depth_family({t: q.depth for t, q in queues.items()}),
        queue_age_family(
            {t: q.oldest_enqueued_us for t, q in queues.items()}, orch.env.clock.now_us()
        ),
        store_runs_family(store.runs),
        *worker_families(store.workers_live, store.worker_slots, store.worker_slots_in_use),
    ]
    body = render([_metrics_of(request).registry], extra, visible)
    return Response(body, media_type=CONTENT_TYPE)


_METRICS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}
}


@router.get("/admin/metrics", response_class=Response, responses=_METRICS_DOC)
async def admin_metrics(request: Request, caller: Scraper) -> Response:
    """Prometheus exposition, restricted to the caller's tenant."""
    return await _exposition(request, caller)


@router.get("/metrics", response_class=Response, responses=_METRICS_DOC)
async def prefixed_metrics(request: Request, caller: Scraper) -> Response:
    """The same exposition as /admin/metrics."""
    return await _exposition(request, caller)


@root_router.get("/metrics", response_class=Response, responses=_METRICS_DOC)
async def root_metrics(request: Request, caller: Scraper) -> Response:
    """The same exposition as /admin/metrics, at the path Prometheus scrapes by default."""
    return await _exposition(request, caller)
