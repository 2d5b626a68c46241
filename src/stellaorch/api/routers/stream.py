"""WebSocket /runs/stream: the tenant's run and step events, live, resumable with after=<seq>."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnected

from stellaorch.api.auth import READ, Authenticator
from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import StellaError, ValidationError, error_envelope
from stellaorch.domain.status import RunStatus, StepStatus
from stellaorch.engine.stream import StreamEnded, StreamFilter, StreamHub, Subscription

router = APIRouter(tags=["stream"])
# RFC 6455 close codes; on a refusal the first (and only) message says why.
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A ledger seq: ASCII digits only (str.isdigit takes "²", which int() then refuses), and at
# most 18 of them, so it always fits the store's signed 64-bit column.
_SEQ = re.compile(r"[0-9]{1,18}")
_STATUSES = frozenset(s.value for s in (*RunStatus, *StepStatus))
_GONE = (WebSocketDisconnect, WebSocketDisconnected)  # the client left before we closed


@dataclass(frozen=True)
class StreamRequest:
    """An authorised subscription request: what to send and where to resume."""

    where: StreamFilter
    after: int | None


def stream_hub(conn: HTTPConnection) -> StreamHub:
    """The process's stream hub."""
    hub: StreamHub = conn.app.state.stream_hub
    return hub


@router.websocket("/runs/stream")
async def stream_runs(websocket: WebSocket) -> None:
    """One JSON event per message; query dagId, status, runId, after (resume past a seq)."""
    try:
        request = _stream_request(websocket)
    except StellaError as exc:
        await _refuse(websocket, exc, POLICY_VIOLATION)
        return
    hub = stream_hub(websocket)
    try:
        # Subscribe before accepting: every entry committed after the handshake is delivered.
        subscription = await hub.subscribe(request.where)
    except StellaError as exc:
        await _refuse(websocket, exc, TRY_AGAIN_LATER if exc.retryable else INTERNAL_ERROR)
        return
    try:
        await websocket.accept()
        end = await _serve(websocket, hub, subscription, request.after)
    finally:
        hub.unsubscribe(subscription)
    if end is not None:
        with contextlib.suppress(*_GONE):
            await websocket.close(end.code, end.reason)


# -- the request --------------------------------------------------------------------------
def _stream_request(websocket: WebSocket) -> StreamRequest:
    """Authenticate and read the filters (browsers pass token and tenant as query values)."""
    auth: Authenticator = websocket.app.state.auth
    query = websocket.query_params
    tenant = websocket.headers.get("x-stella-tenant") or query.get("tenant")
    caller = auth.check(_token(websocket), tenant, READ)
    where = StreamFilter(
        caller.tenant,
        dag_id=_identifier(query.get("dagId"), "dagId"),
        status=_status(query.get("status")),
        run_id=_identifier(query.get("runId"), "runId"),
    )
    return StreamRequest(where, _after(query.get("after")))


def _token(websocket: WebSocket) -> str | None:
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return websocket.query_params.get("access_token")


def _identifier(value: str | None, name: str) -> str | None:
    if value is not None and not _ID.match(value):
        raise ValidationError(f"{name} is not a valid id")
    return value


def _status(value: str | None) -> str | None:
    if value is not None and value not in _STATUSES:
        raise ValidationError(f"status must be one of {', '.join(sorted(_STATUSES))}")
    return value


def _after(value: str | None) -> int | None:
    if value is None:
        return None
    if not _SEQ.fullmatch(value):
        raise ValidationError("after must be a non-negative integer seq of at most 18 digits")
    return int(value)


async def _refuse(websocket: WebSocket, exc: StellaError, code: int) -> None:
    """Accept, say why in the error envelope, then close with `code`."""
    trace_id = str(getattr(websocket.state, "trace_id", ""))
    body = error_envelope(exc.code, exc.message, trace_id)
    await websocket.accept()
    with contextlib.suppress(*_GONE):
        await websocket.send_text(canonical_json(body))
        await websocket.close(code, exc.code)


# -- serving ------------------------------------------------------------------------------
async def _serve(
    websocket: WebSocket, hub: StreamHub, subscription: Subscription, after: int | None
) -> StreamEnded | None:
    """Send until the client leaves or the hub ends the subscription; returns that end."""
    pump = asyncio.create_task(_pump(websocket, hub, subscription, after))
    gone = asyncio.create_task(_until_disconnect(websocket))
    ended = asyncio.create_task(subscription.ended.wait())
    tasks = (pump, gone, ended)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _raise_failure(pump)
    return None if gone in done else subscription.end


async def _pump(
    websocket: WebSocket, hub: StreamHub, subscription: Subscription, after: int | None
) -> None:
    """Replay stored events past `after`, then the live ones not already replayed."""
    if after is not None:
        async for event in hub.replay(subscription, after):
            await websocket.send_text(canonical_json(event))
    while True:
        # The hub serialised the event once; every subscriber sends that same text.
        await websocket.send_text((await subscription.next_event()).message)


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until the client goes away."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def _raise_failure(pump: asyncio.Task[None]) -> None:
    """Re-raise what broke the pump, unless it was the client leaving or the stream ending."""
    if pump.cancelled():
        return
    exc = pump.exception()
    if exc is not None and not isinstance(exc, StreamEnded | WebSocketDisconnect):
        raise exc
