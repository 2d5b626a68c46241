"""ASGI middleware: server spans and access lines (traceparent honoured and echoed), the
request body size and depth."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence

import structlog
from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellaorch.domain.errors import error_envelope
from stellaorch.domain.limits import MAX_JSON_DEPTH, NestingTooDeep, text_depth_exceeds
from stellaorch.observability import tracing
from stellaorch.observability.http import method_label, route_label


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


# Trace ids when no tracer provider is installed (the no-op API makes none): unique, not
# unguessable (they are echoed to every caller), so a seeded PRNG per process will do.
_ids = random.Random()
access_log = logging.getLogger("stellaorch.access")


class TraceMiddleware:
    """A server span parented on the caller's `traceparent` (echoed back), and one access line.

    The W3C header is read by OpenTelemetry's propagator; the request's trace id is bound to
    the log context, so every line logged while it is served carries `traceId`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"traceparent")
        parent = tracing.extract({"traceparent": incoming} if incoming else {})
        method = method_label(scope)
        started = time.perf_counter()
        span = tracing.project_tracer().start_span(
            f"{method} {scope.get('path', '')[:200]}", context=parent, kind=tracing.SpanKind.SERVER
        )
        context = span.get_span_context()
        if context.is_valid and span.is_recording():
            trace_id, echo = f"{context.trace_id:032x}", tracing.traceparent_of(span)
        else:
            caller = trace.get_current_span(parent).get_span_context()
            drawn = caller.trace_id if caller.is_valid else _ids.getrandbits(128) or 1
            trace_id = f"{drawn:032x}"
            echo = f"00-{trace_id}-{_ids.getrandbits(64) or 1:016x}-01"
        scope.setdefault("state", {})["trace_id"] = trace_id
        status = 500  # what the server answers when the app raises before responding

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"traceparent", echo.encode())]
            await send(message)

        try:
            with (
                trace.use_span(span, end_on_exit=False),
                structlog.contextvars.bound_contextvars(trace_id=trace_id),
            ):
                if scope["type"] == "websocket":
                    # Only an HTTP response carries the echo: a stream's messages go unwrapped.
                    await self.app(scope, receive, send)
                else:
                    await self.app(scope, receive, send_with_trace)
        finally:
            route = route_label(scope)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route)
            if scope["type"] == "http":
                span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            span.end()
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status if scope["type"] == "http" else None,
                    "duration_ms": duration_ms,
                    "trace_id": trace_id,
                },
            )


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413 before they are read into memory.

    `overrides` gives routes of their own a different limit, by (method, path): the bundle
    import takes archives far larger than any JSON body. `patterns` does the same for routes
    with path parameters, by (method, full-match regex): a worker's artifact upload.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: Mapping[tuple[str, str], int] | None = None,
        patterns: Sequence[tuple[str, re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = dict(overrides or {})
        self.patterns = tuple(patterns)

    def limit_for(self, method: str, path: str) -> int:
        """The body limit of one request: its route's own, else the default."""
        found = self.overrides.get((method, path))
        if found is not None:
            return found
        for wanted, pattern, limit in self.patterns:
            if wanted == method and pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("method", ""), scope.get("path", ""))
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(scope, send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _too_large(scope, send, limit)


class BodyTooLarge(HTTPException):
    """A chunked body grew past the limit (an HTTPException, so FastAPI's body reader re-raises
    it instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    await _refuse(scope, send, 413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")


class JsonDepthMiddleware:
    """Refuse a JSON body nesting deeper than MAX_JSON_DEPTH with 400, before it is parsed.

    Runs inside the body limit, so the buffered body is bounded; recursive code further in
    (validation, canonical JSON, hashing) then never meets a document deep enough to fail.
    """

    def __init__(
        self,
        app: ASGIApp,
        binary_paths: frozenset[str] = frozenset(),
        binary_patterns: Sequence[re.Pattern[str]] = (),
    ) -> None:
        self.app = app
        self.binary_paths = binary_paths  # routes whose body is not JSON (bundle archives)
        self.binary_patterns = tuple(binary_patterns)  # the same, with path parameters

    def is_binary(self, path: str) -> bool:
        """True for a route whose body is not JSON: it is streamed, never buffered here."""
        return path in self.binary_paths or any(p.fullmatch(path) for p in self.binary_patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        skip = scope.get("method") in ("GET", "HEAD", "OPTIONS")
        if scope["type"] != "http" or skip or self.is_binary(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        more = True
        while more:
            message = await receive()
            messages.append(message)
            more = message["type"] == "http.request" and bool(message.get("more_body"))
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if text_depth_exceeds(body):
            message_text = f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            await _refuse(scope, send, 400, NestingTooDeep.code, message_text)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Answer with the JSON error envelope from the middleware layer."""
    trace_id = scope.get("state", {}).get("trace_id", "")
    raw = json.dumps(error_envelope(code, message, trace_id)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
