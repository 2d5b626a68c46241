"""`Idempotency-Key` for mutating POSTs: one execution per (tenant, method+path, key), 24 h.

However many requests carry the same key at once, one of them acts; the others answer with
its stored response. Creating a run keeps the key row in the run's own transaction (the key
becomes the run's token, so the store's uniqueness on tokens decides); other actions first
claim the key with a pending row, act, then store the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from stellaorch.api.auth import Caller
from stellaorch.api.state import orchestrator
from stellaorch.domain.canonical import hash_json
from stellaorch.domain.errors import Conflict, ValidationError
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import (
    IdempotencyClaim,
    StoredResponse,
    claim_key,
    find_response,
    finish_key,
)

Action = Callable[[], Awaitable[tuple[int, Any]]]
# A run-creating action: given the claim (or None without a key), returns status, payload
# and whether the run already existed under the key-derived token (a concurrent twin made it).
RunAction = Callable[[IdempotencyClaim | None], Awaitable[tuple[int, Any, bool]]]

WAIT_POLL_SECONDS = 0.02
WAIT_LIMIT_SECONDS = 30.0
STALE_CLAIM_SECONDS = 300


class IdempotencyKeyReused(Conflict):
    """The key was used before with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInFlight(Conflict):
    """Another request with this key is still running; retry later for its answer."""

    code = "IDEMPOTENCY_KEY_IN_FLIGHT"


def derived_run_token(claim: IdempotencyClaim) -> str:
    """The runToken a keyed request without one gets: same key, same token, one run."""
    digest = hashlib.sha256(f"{claim.scope_key}\n{claim.key}".encode()).hexdigest()
    return f"idem-{digest[:40]}"


def _claim_of(request: Request, caller: Caller, body: Any) -> IdempotencyClaim | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > 200 or not key.isprintable():
        raise ValidationError("Idempotency-Key must be 1-200 printable characters")
    env = orchestrator(request).env
    now = env.clock.now_us()
    return IdempotencyClaim(
        tenant=caller.tenant,
        scope_key=f"{request.method} {request.url.path}",
        key=key,
        request_hash=hash_json(body),
        now_us=now,
        oldest_us=now - env.settings.idempotency_ttl_seconds * 1_000_000,
    )


async def _stored(env: EngineEnv, claim: IdempotencyClaim) -> StoredResponse | None:
    return await env.db.read(
        lambda c: find_response(c, claim.tenant, claim.scope_key, claim.key, claim.oldest_us)
    )


def _replayed(stored: StoredResponse, claim: IdempotencyClaim) -> JSONResponse:
    if stored.request_hash != claim.request_hash:
        raise IdempotencyKeyReused("Idempotency-Key was already used with another body")
    return JSONResponse(
        stored.body, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"}
    )


async def idempotent(request: Request, caller: Caller, body: Any, act: Action) -> JSONResponse:
    """Run `act` once per (tenant, method+path, key); replay its response afterwards."""
    claim = _claim_of(request, caller, body)
    if claim is None:
        status, payload = await act()
        return JSONResponse(payload, status_code=status)
    env = orchestrator(request).env
    stored = await _stored(env, claim)
    if stored is not None and not stored.pending:
        return _replayed(stored, claim)
    stale = claim.now_us - STALE_CLAIM_SECONDS * 1_000_000
    if not await env.db.transact(lambda c: claim_key(c, claim, stale)):
        return await _await_answer(env, claim)
    try:
        status, payload = await act()
    except BaseException:
        await asyncio.shield(env.db.transact(lambda c: finish_key(c, claim, 500, None)))
        raise
    await env.db.transact(lambda c: finish_key(c, claim, status, payload))
    return JSONResponse(payload, status_code=status)


async def _await_answer(env: EngineEnv, claim: IdempotencyClaim) -> JSONResponse:
    """The answer of the request holding the key, once it has one (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT_SECONDS
    while loop.time() < deadline:
        stored = await _stored(env, claim)
        if stored is None:  # the holder failed and freed the key: its error was its answer
            raise IdempotencyKeyInFlight("the request holding this Idempotency-Key failed; retry")
        if not stored.pending:
            return _replayed(stored, claim)
        await asyncio.sleep(WAIT_POLL_SECONDS)
    raise IdempotencyKeyInFlight("another request with this Idempotency-Key is still running")


async def idempotent_run(
    request: Request, caller: Caller, body: Any, act: RunAction
) -> JSONResponse:
    """Like `idempotent` for actions that create a run, with the key kept in its transaction."""
    claim = _claim_of(request, caller, body)
    if claim is None:
        status, payload, _ = await act(None)
        return JSONResponse(payload, status_code=status)
    env = orchestrator(request).env
    stored = await _stored(env, claim)
    if stored is not None and not stored.pending:
        return _replayed(stored, claim)
    status, payload, twin = await act(claim)
    if twin:
        stored = await _stored(env, claim)
        if stored is not None and not stored.pending:
            return _replayed(stored, claim)
        return JSONResponse(payload, status_code=status, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(payload, status_code=status)
