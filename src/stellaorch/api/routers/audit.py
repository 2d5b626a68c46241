"""The audit log of admin actions: pages by id, and an NDJSON export (admin readers only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from stellaorch.api.auth import AdminReader
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator

router = APIRouter(tags=["audit"])
Action = Annotated[str | None, Query(max_length=64, description="only this action")]


@router.get("/audit")
async def list_audit(
    request: Request,
    caller: AdminReader,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    action: Action = None,
) -> dict[str, Any]:
    """The tenant's audit entries in the order they were recorded."""
    position = decode_position(page_token, (int,))
    after = int(position[0]) if position else 0
    service = orchestrator(request).audit
    found = await service.page(caller.tenant, after, page_size + 1, action)
    page = found[:page_size]
    token = encode_token([page[-1]["id"]]) if len(found) > page_size else None
    return {"items": page, "nextPageToken": token}


@router.get("/audit/export", response_class=StreamingResponse)
async def export_audit(request: Request, caller: AdminReader, action: Action = None) -> Any:
    """Every audit entry of the tenant as NDJSON, in id order, streamed."""
    service = orchestrator(request).audit
    return StreamingResponse(
        service.export(caller.tenant, action), media_type="application/x-ndjson"
    )
