"""The FastAPI application: routers under /api/v1/orchestrator, auth, envelope, middleware."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI

from stellaorch import __version__
from stellaorch.api import errors
from stellaorch.api.auth import Authenticator
from stellaorch.api.middleware import BodyLimitMiddleware, TraceMiddleware
from stellaorch.api.routers import dags, runs
from stellaorch.engine.app import Orchestrator
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
    return Authenticator(settings, TokenVerifier(keys, settings.audience))


def create_app(orch: Orchestrator, auth: Authenticator | None = None) -> FastAPI:
    """Build the app around an open Orchestrator."""
    app = FastAPI(
        title="Stella Orchestrator",
        version=__version__,
        openapi_url=f"{BASE}/.well-known/openapi",
        docs_url=None,
        redoc_url=None,
    )
    app.state.orchestrator = orch
    app.state.auth = auth or authenticator_for(orch)
    errors.install(app)
    api = APIRouter(prefix=BASE)
    for module in (dags, runs):
        api.include_router(module.router)
    app.include_router(api)
    app.add_middleware(BodyLimitMiddleware, max_bytes=orch.env.settings.max_body_bytes)
    app.add_middleware(TraceMiddleware)
    return app
