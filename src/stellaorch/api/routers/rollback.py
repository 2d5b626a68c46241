"""DAG rollback: make an earlier version the latest enabled one (admin, audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.routers.dags import dag_view
from stellaorch.api.state import orchestrator
from stellaorch.engine.rollback import rollback

router = APIRouter(tags=["dags"])


class Rollback(BaseModel):
    """Body of POST /dags/{dagId}:rollback."""

    model_config = ConfigDict(extra="forbid")
    to: str | int = Field(description="the version to make the latest enabled one")


@router.post("/dags/{dagId}:rollback")
async def rollback_dag(
    dagId: str, body: Rollback, request: Request, caller: AdminCaller
) -> Response:
    """Disable every enabled version newer than `to` and enable `to`."""

    async def act() -> tuple[int, Any]:
        to = str(body.to)
        env = orchestrator(request).env
        result = await rollback(env, caller.tenant, dagId, to, caller.operator)
        return 200, {
            **dag_view(result.version),
            "previous": result.previous,
            "disabled": result.disabled,
        }

    return await idempotent(request, caller, body.model_dump(), act)
