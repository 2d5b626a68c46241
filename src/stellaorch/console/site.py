"""The console mounted on an API app: its route modules in matching order, static files."""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from stellaorch.console import downloads, live, web
from stellaorch.console.render import PREFIX
from stellaorch.console.sessions import SessionStore


def mount(app: FastAPI) -> FastAPI:
    """Add the console (pages, fragments, downloads, static files, the link route) to an app."""
    app.state.console_sessions = SessionStore(time.time)
    transport = httpx.ASGITransport(app=app)
    app.state.console_client = httpx.AsyncClient(transport=transport, base_url="http://console")
    app.include_router(web.links_router, prefix=web.BASE)
    app.include_router(live.router)  # before `/runs/{run_id}`, which would take `/runs/rows`
    app.include_router(downloads.router)
    app.include_router(web.router)
    static = StaticFiles(packages=[("stellaorch.console", "static")])
    app.mount(f"{PREFIX}/static", static, name="console-static")
    return app
