"""The caller's tenant's SLOs: status with error-budget burn, and its own objectives."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, Caller, ReadCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.state import orchestrator
from stellaorch.domain.slo import MAX_OBJECTIVE, MAX_THRESHOLD, MIN_OBJECTIVE, parse_slo_id
from stellaorch.engine.slo import Tallies

router = APIRouter(tags=["slos"])


class SetObjective(BaseModel):
    """Body of PUT /admin/slos/{sloId}: the good fraction, and the limit where the SLO has one."""

    model_config = ConfigDict(extra="forbid")
    objective: float = Field(ge=MIN_OBJECTIVE, le=MAX_OBJECTIVE)
    threshold: float | None = Field(default=None, gt=0, le=MAX_THRESHOLD)


def tallies(request: Request) -> Tallies:
    """This process's request and stream figures."""
    state = request.app.state
    return Tallies(state.metrics.request_tally, state.stream_hub.delivery)


async def slo_documents(request: Request, caller: Caller) -> list[dict[str, Any]]:
    """Every SLO of the caller's tenant as JSON."""
    statuses = await orchestrator(request).slos.status(caller.tenant, tallies(request))
    return [s.document() for s in statuses]


@router.get("/admin/slos")
async def list_slos(request: Request, caller: ReadCaller) -> dict[str, Any]:
    """Each SLO: objective, burn over 1 h, 6 h and 28 d, budget left, ok | warn | critical."""
    return {"items": await slo_documents(request, caller)}


@router.put("/admin/slos/{sloId}")
async def put_slo(
    sloId: str, body: SetObjective, request: Request, caller: AdminCaller
) -> Response:
    """Set the tenant's own objective for one SLO (admin + reason; audited)."""
    slo = parse_slo_id(sloId)

    async def act() -> tuple[int, Any]:
        service = orchestrator(request).slos
        await service.set_objective(
            caller.tenant, slo, body.objective, body.threshold, caller.operator
        )
        items = await slo_documents(request, caller)
        return 200, next(item for item in items if item["id"] == slo.value)

    return await idempotent(request, caller, {"sloId": slo.value, **body.model_dump()}, act)
