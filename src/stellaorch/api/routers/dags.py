"""DAG versions: publish, list, read, disable and enable (admin changes are audited)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from stellaorch.api.auth import AdminCaller, Caller, ReadCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator
from stellaorch.domain.providers import format_utc
from stellaorch.domain.spec import parse_spec
from stellaorch.engine import schedule_holds
from stellaorch.engine.bulk_cancel import cancel_matching
from stellaorch.engine.catalog import DagVersionRow
from stellaorch.engine.runs import RunFilter

router = APIRouter(tags=["dags"])
ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def dag_view(row: DagVersionRow, *, with_spec: bool = False) -> dict[str, Any]:
    """A stored version as JSON."""
    view: dict[str, Any] = {
        "dagId": row.dag_id,
        "version": row.version,
        "enabled": row.enabled,
        "specHash": row.spec_hash,
        "createdUtc": format_utc(row.created_us),
        "signedBy": row.signed_by,
    }
    if with_spec:
        view["spec"] = json.loads(row.spec_json)
    return view


@router.post("/dags", status_code=201)
async def publish_dag(
    request: Request,
    caller: AdminCaller,
    document: Annotated[dict[str, Any], Body(description="the DAG spec (+ signature)")],
) -> Response:
    """Publish a version (201); the same content again returns it unchanged (200)."""

    async def act() -> tuple[int, Any]:
        spec_doc = {k: v for k, v in document.items() if k != "signature"}
        spec = parse_spec(spec_doc)
        catalog = orchestrator(request).catalog
        signature = document.get("signature")
        published = await catalog.publish(caller.tenant, spec, caller.operator, signature)
        return (201 if published.created else 200), dag_view(published.version)

    return await idempotent(request, caller, document, act)


@router.get("/dags")
async def list_dags(
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    dagId: Annotated[str | None, Query(pattern=ID)] = None,
    active: bool | None = None,
) -> dict[str, Any]:
    """Versions by dagId, then newest version first; filters dagId and active."""
    rows = await orchestrator(request).catalog.list_versions(caller.tenant, dagId)
    if active is not None:
        rows = [r for r in rows if r.enabled == active]
    position = decode_position(page_token, (str, int))
    if position:
        after = (str(position[0]), -int(position[1]))
        rows = [r for r in rows if (r.dag_id, -r.seq) > after]
    page = rows[:page_size]
    more = len(rows) > page_size
    token = encode_token([page[-1].dag_id, page[-1].seq]) if more and page else None
    return {"items": [dag_view(r) for r in page], "nextPageToken": token}


@router.get("/dags/{dagId}/{version}")
async def get_dag(
    dagId: str,
    version: str,
    request: Request,
    caller: ReadCaller,
) -> dict[str, Any]:
    """One version, with its spec."""
    row = await orchestrator(request).catalog.get_version(caller.tenant, dagId, version)
    return dag_view(row, with_spec=True)


async def _set_enabled(
    request: Request, caller: Caller, dag_id: str, version: str, enabled: bool
) -> dict[str, Any]:
    row = await orchestrator(request).catalog.set_enabled(
        caller.tenant, dag_id, version, enabled, caller.operator
    )
    return dag_view(row)


class DisableVersion(BaseModel):
    """Optional body of POST /dags/{dagId}/{version}:disable."""

    model_config = ConfigDict(extra="forbid")
    cancelQueued: bool = False  # also cancel the version's queued runs (at most 500)


@router.post("/dags/{dagId}/{version}:disable")
async def disable_dag(
    dagId: str,
    version: str,
    request: Request,
    caller: AdminCaller,
    body: DisableVersion | None = None,
) -> dict[str, Any]:
    """Disable a version: no new runs; running runs finish; schedules that would run it (or
    fall back from it) pause with the reason; `cancelQueued` cancels its queued runs."""
    orch = orchestrator(request)
    row, paused = await schedule_holds.disable(
        orch.env, caller.tenant, dagId, version, caller.operator
    )
    view = {**dag_view(row), "pausedSchedules": paused}
    if body is not None and body.cancelQueued:
        where = RunFilter(caller.tenant, dagId, "queued", dag_version=version)
        operator = caller.operator
        done = await cancel_matching(orch.env, orch.runs, where, operator)
        view |= {"cancelledRuns": done.run_ids, "remaining": done.remaining}
    return view


@router.post("/dags/{dagId}/{version}:enable")
async def enable_dag(
    dagId: str,
    version: str,
    request: Request,
    caller: AdminCaller,
) -> dict[str, Any]:
    """Enable a version again."""
    return await _set_enabled(request, caller, dagId, version, True)
