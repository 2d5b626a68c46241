"""The error envelope and the one mapping from error classes to HTTP status codes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from stellaorch.domain import errors as e

log = logging.getLogger("stellaorch.api")

# Most specific class first: the first match wins.
_STATUS: tuple[tuple[type[e.StellaError], int], ...] = (
    (e.Unauthenticated, 401),
    (e.AccessDenied, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.PayloadTooLarge, 413),
    (e.ValidationError, 400),
    (e.StoreUnavailable, 503),
    (e.ServiceBusy, 503),
    # The service cannot serve until an operator restores the store; not the caller's fault.
    (e.StoreCorrupt, 503),
)


def status_for(exc: e.StellaError) -> int:
    """HTTP status of a product error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def trace_id_of(request: Request) -> str:
    """The request's trace id (set by the tracing middleware)."""
    return str(getattr(request.state, "trace_id", ""))


def envelope(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    """The error envelope (`domain.errors.error_envelope`) as a response with `status`.

    Each one is logged with its traceId, so the id a client shows can be found in the log.
    """
    trace_id = trace_id_of(request)
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    context = {"trace_id": trace_id, "method": request.method, "route": route[:200]}
    level = logging.ERROR if status >= 500 else logging.INFO
    log.log(level, "request.failed", extra={**context, "status": status, "code": code})
    body = e.error_envelope(code, message, trace_id, details)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _stella_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.StellaError)
    return envelope(request, status_for(exc), exc.code, exc.message, exc.details or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"path": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"path": "", "message": "invalid request"}
    message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
    return envelope(request, 400, "VALIDATION_FAILED", message, {"errors": problems})


_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return envelope(request, exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"trace_id": trace_id_of(request)})
    return envelope(request, 500, "INTERNAL", "internal error; see the server log by traceId")


def install(app: FastAPI) -> None:
    """Register the handlers on the base classes, once."""
    app.add_exception_handler(e.StellaError, _stella_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
