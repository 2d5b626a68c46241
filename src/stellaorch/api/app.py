"""The FastAPI application: routers under /api/v1/orchestrator, auth, envelope, middleware."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from stellaorch import __version__
from stellaorch.api import errors
from stellaorch.api.auth import Authenticator
from stellaorch.api.middleware import BodyLimitMiddleware, JsonDepthMiddleware, TraceMiddleware
from stellaorch.api.routers import (
    admin,
    alerts,
    audit,
    bulk,
    bundles,
    dags,
    deadletter,
    ledger,
    queues,
    rollback,
    runs,
    schedules,
    secrets,
    slos,
    stream,
    tasks,
    workers,
)
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.stream import StreamHub
from stellaorch.observability.http import HttpMetricsMiddleware
from stellaorch.observability.metrics import OrchestratorMetrics
from stellaorch.security.keys import load_verification_keys
from stellaorch.security.tokens import TokenVerifier

BASE = "/api/v1/orchestrator"
log = logging.getLogger("stellaorch.api")


def authenticator_for(orch: Orchestrator) -> Authenticator:
    """Token checks from the local key directory, or none at all in insecure dev mode."""
    settings = orch.env.settings
    if settings.insecure_dev:
        log.warning("INSECURE DEV MODE: every request is trusted as admin of every tenant")
        return Authenticator(settings, None)
    keys = load_verification_keys(settings.keys_dir)
    verifier = TokenVerifier(
        keys,
        settings.audience,
        max_lifetime_seconds=settings.token_max_lifetime_seconds,
        issuer=settings.token_issuer,
        reload=lambda: load_verification_keys(settings.keys_dir),
    )
    return Authenticator(settings, verifier)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On shutdown, end the event stream's subscribers and stop its ledger tailer."""
    yield
    await app.state.stream_hub.close()


def _no_builtin_telemetry() -> dict[str, Any]:
    """Turn off FastAPI's own per-request OpenTelemetry probing where the version has it."""
    if "telemetry" in inspect.signature(FastAPI).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def _observed_app(orch: Orchestrator, auth: Authenticator | None, **options: Any) -> FastAPI:
    """An app with the engine, token checks, the error envelope and the process's metrics."""
    app = FastAPI(
        version=__version__, docs_url=None, redoc_url=None, **options, **_no_builtin_telemetry()
    )
    app.state.orchestrator = orch
    app.state.auth = auth or authenticator_for(orch)
    errors.install(app)
    app.state.metrics = metrics = OrchestratorMetrics()
    orch.env.bus.subscribe(metrics.observe)
    return app


def create_app(orch: Orchestrator, auth: Authenticator | None = None) -> FastAPI:
    """Build the app around an open Orchestrator."""
    app = _observed_app(
        orch,
        auth,
        title="Stella Orchestrator",
        openapi_url=f"{BASE}/.well-known/openapi",
        lifespan=_lifespan,
    )
    app.state.stream_hub = StreamHub(orch.env)
    tasks.announce_progress(orch, app.state.stream_hub)
    # Routers go straight onto the app: each level of nesting costs every request a walk.
    for module in (
        dags,
        stream,
        bulk,
        runs,
        admin,
        ledger,
        schedules,
        queues,
        deadletter,
        audit,
        rollback,
        bundles,
        secrets,
        workers,
        alerts,
        tasks,
        slos,
    ):
        app.include_router(module.router, prefix=BASE)
    app.include_router(admin.root_router)
    app.include_router(admin.probes_router)
    archive_route = f"{BASE}{bundles.IMPORT_PATH}"
    artifact_route = re.compile(re.escape(BASE) + tasks.ARTIFACT_PATH)
    app.add_middleware(
        JsonDepthMiddleware,
        binary_paths=frozenset({archive_route}),
        binary_patterns=[artifact_route],
    )
    settings = orch.env.settings
    limits = {("POST", archive_route): settings.bundle_max_bytes}
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides=limits,
        patterns=[("PUT", artifact_route, settings.max_artifact_bytes)],
    )
    app.add_middleware(TraceMiddleware)
    app.add_middleware(HttpMetricsMiddleware, observer=app.state.metrics)
    return app


def create_metrics_app(orch: Orchestrator, auth: Authenticator | None = None) -> FastAPI:
    """Only `GET /metrics`, for worker and scheduler processes: their own counters, same auth.

    Each process counts what it commits, so Prometheus scrapes every process and sums.
    """
    app = _observed_app(orch, auth, title="Stella Orchestrator metrics", openapi_url=None)
    app.include_router(admin.root_router)
    app.include_router(admin.probes_router)
    app.add_middleware(TraceMiddleware)
    return app
