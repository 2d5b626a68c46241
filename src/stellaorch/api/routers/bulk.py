"""Bulk actions: cancel runs by filter (with a dry run), pause every schedule of the tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, Caller, WriteCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.routers.runs import ID, parse_time
from stellaorch.api.state import orchestrator
from stellaorch.domain.audit import Operator
from stellaorch.engine.bulk_cancel import BulkCancelled, cancel_matching
from stellaorch.engine.runs import RunFilter
from stellaorch.engine.schedule_holds import pause_all

router = APIRouter(tags=["bulk"])


class CancelRuns(BaseModel):
    """Body of POST /runs:cancel: the filter, the reason, a dry run."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    reason: str = Field(min_length=1, max_length=2000)
    dagId: Annotated[str | None, Field(pattern=ID)] = None
    version: str | int | None = None
    status: str | None = None  # queued or running (default: both)
    from_: str | None = Field(default=None, alias="from")  # created at or after
    to: str | None = None  # created before
    dryRun: bool = False

    def where(self, tenant: str) -> RunFilter:
        """The run filter of the tenant."""
        version = None if self.version is None else str(self.version)
        window = parse_time(self.from_, "from"), parse_time(self.to, "to")
        return RunFilter(tenant, self.dagId, self.status, *window, dag_version=version)


def cancelled_view(result: BulkCancelled) -> dict[str, Any]:
    """A bulk cancel's answer."""
    return {
        "items": [{"runId": r} for r in result.run_ids],
        "remaining": result.remaining,
        "dryRun": result.dry_run,
    }


async def cancel_runs(
    request: Request, caller: Caller, where: RunFilter, reason: str, dry_run: bool
) -> BulkCancelled:
    """Cancel (or list) the caller's matching live runs."""
    orch = orchestrator(request)
    operator = Operator(caller.actor, reason, caller.ticket)
    return await cancel_matching(orch.env, orch.runs, where, operator, dry_run=dry_run)


@router.post("/runs:cancel")
async def bulk_cancel(body: CancelRuns, request: Request, caller: WriteCaller) -> Response:
    """Cancel the tenant's queued/running runs matching the filter, at most 500 per call
    (`remaining`: how many more match); `dryRun` lists them and changes nothing."""
    where = body.where(caller.tenant)
    if body.dryRun:
        return JSONResponse(
            cancelled_view(await cancel_runs(request, caller, where, body.reason, True))
        )

    async def act() -> tuple[int, Any]:
        return 200, cancelled_view(await cancel_runs(request, caller, where, body.reason, False))

    return await idempotent(request, caller, body.model_dump(), act)


@router.post("/schedules:pause")
async def pause_all_schedules(request: Request, caller: AdminCaller) -> dict[str, Any]:
    """Pause every active schedule of the tenant (admin; the reason is recorded on each)."""
    paused = await pause_all(orchestrator(request).env, caller.tenant, caller.operator)
    return {"paused": paused, "count": len(paused)}
