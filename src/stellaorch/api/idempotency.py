"""`Idempotency-Key` for mutating POSTs: same key and body → the stored response, once per 24 h."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from stellaorch.api.auth import Caller
from stellaorch.api.state import orchestrator
from stellaorch.domain.canonical import hash_json
from stellaorch.domain.errors import Conflict, ValidationError
from stellaorch.engine.records import StoredResponse, find_response, save_response

Action = Callable[[], Awaitable[tuple[int, Any]]]


class IdempotencyKeyReused(Conflict):
    """The key was used before with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"


async def idempotent(request: Request, caller: Caller, body: Any, act: Action) -> JSONResponse:
    """Run `act` once per (tenant, method+path, key); replay its response afterwards."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, payload = await act()
        return JSONResponse(payload, status_code=status)
    if not key or len(key) > 200 or not key.isprintable():
        raise ValidationError("Idempotency-Key must be 1-200 printable characters")
    env = orchestrator(request).env
    scope_key = f"{request.method} {request.url.path}"
    digest = hash_json(body)
    now = env.clock.now_us()
    oldest = now - env.settings.idempotency_ttl_seconds * 1_000_000
    stored = await env.db.transact(
        lambda c: find_response(c, caller.tenant, scope_key, key, oldest)
    )
    if stored is not None:
        if stored.request_hash != digest:
            raise IdempotencyKeyReused("Idempotency-Key was already used with another body")
        return JSONResponse(
            stored.body, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"}
        )
    status, payload = await act()
    if status < 300:
        response = StoredResponse(digest, status, payload)
        await env.db.transact(
            lambda c: save_response(c, caller.tenant, scope_key, key, response, now, oldest)
        )
    return JSONResponse(payload, status_code=status)
