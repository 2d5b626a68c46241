"""GET /ledger/export (runs as NDJSON, manifest), GET /export (offline kit), checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from stellaorch.api.auth import AdminCaller, AdminReader
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.providers import parse_utc
from stellaorch.engine.export import ExportWindow

router = APIRouter(tags=["ledger"])
NDJSON = "application/x-ndjson"
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/ledger/export", response_class=StreamingResponse)
async def export_ledger(
    request: Request,
    caller: AdminReader,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    manifest: bool = False,
) -> Response:
    """Runs started in [from, to) by startedUtc then runId, steps and events inline."""
    window = ExportWindow(caller.tenant, _time(from_, "from"), _time(to, "to"))
    exports = orchestrator(request).exports
    if manifest:
        found = await exports.manifest(window)
        return JSONResponse(found.document(), headers=_NO_STORE)
    lines = exports.lines(window)
    # Read the first chunk now, so a store failure is an error response, not a cut stream.
    first = await anext(lines)
    return StreamingResponse(_prepend(first, lines), media_type=NDJSON, headers=_NO_STORE)


@router.get("/export", response_class=Response)
async def export_kit(
    request: Request,
    caller: AdminReader,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
) -> Response:
    """The offline kit of runs started in [from, to): a signed, deterministic .tgz."""
    window = ExportWindow(caller.tenant, _time(from_, "from"), _time(to, "to"))
    archive = await orchestrator(request).kits.build(window)
    disposition = {"Content-Disposition": 'attachment; filename="stella-export.tgz"'}
    return Response(archive, media_type="application/gzip", headers={**_NO_STORE, **disposition})


@router.post("/ledger/checkpoints")
async def checkpoint_ledger(request: Request, caller: AdminCaller) -> dict[str, Any]:
    """Sign a checkpoint of the ledger heads now; the caller's tenant's newest (docs/ledger.md)."""
    return await orchestrator(request).checkpoints.on_demand(caller.tenant, caller.operator)


def _time(text: str | None, name: str) -> int:
    if not text:
        raise ValidationError(f"{name} is required: an RFC 3339 timestamp")
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise ValidationError(f"{name} must be an RFC 3339 timestamp") from exc


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for line in rest:
        yield line
