"""Secrets of the caller's tenant: put a new version, list names and versions, delete.

Values are write-only: no route returns one. Put and delete are admin changes, audited with
the operator's reason (the body's `reason` or the X-Stella-Operator-Reason header).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, AdminReader
from stellaorch.api.state import orchestrator
from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.limits import MAX_OPERATOR_REASON_CHARS

router = APIRouter(tags=["secrets"])


class PutSecret(BaseModel):
    """Body of PUT /secrets/{name}: the value (UTF-8 text, kept encrypted) and why."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    value: str = Field(repr=False)
    reason: str | None = Field(default=None, max_length=MAX_OPERATOR_REASON_CHARS)


@router.put("/secrets/{name}")
async def put_secret(
    name: str, body: PutSecret, request: Request, caller: AdminReader
) -> dict[str, Any]:
    """Store a new version of a secret (admin + reason); the answer never holds the value."""
    reason = (body.reason or "").strip() or caller.reason
    if not reason:
        raise ValidationError("a secret change needs a reason: body `reason` or the header")
    operator = Operator(caller.actor, reason, caller.ticket)
    value = body.value.encode()
    listing = await orchestrator(request).secrets.put(caller.tenant, name, value, operator)
    return listing.document()


@router.get("/secrets")
async def list_secrets(request: Request, caller: AdminReader) -> dict[str, Any]:
    """The tenant's secrets by name: current version and each version's origin, no values."""
    listings = await orchestrator(request).secrets.list(caller.tenant)
    return {"items": [s.document() for s in listings], "nextPageToken": None}


@router.delete("/secrets/{name}", status_code=204)
async def delete_secret(name: str, request: Request, caller: AdminCaller) -> Response:
    """Delete every version (admin + reason); attempts already running keep their value."""
    await orchestrator(request).secrets.delete(caller.tenant, name, caller.operator)
    return Response(status_code=204)
