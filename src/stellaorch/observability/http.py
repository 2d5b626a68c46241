"""Pure-ASGI middleware that counts and times HTTP requests by method and route template."""

from __future__ import annotations

import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
# Anything else a client sends is folded into one label value: labels must stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestObserver(Protocol):
    """Whatever records a finished request (the app's metrics)."""

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request."""


def route_label(scope: Scope) -> str:
    """The matched route's full template (never the raw path, whose ids are unbounded)."""
    # FastAPI keeps included routes unprefixed and records the prefixed template in its
    # effective route context; Starlette routes carry the full template themselves.
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    for holder in (context, scope.get("route")):
        template = getattr(holder, "path_format", None)
        if isinstance(template, str) and template:
            return template
    return UNMATCHED


def method_label(scope: Scope) -> str:
    """The request method, or "other" for methods outside the HTTP standard set."""
    method = str(scope.get("method", "")).upper()
    return method if method in KNOWN_METHODS else "other"


class HttpMetricsMiddleware:
    """Records every HTTP request once its response has started (or the app failed)."""

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - started
            self.observer.observe_request(method_label(scope), route_label(scope), status, elapsed)
