"""The dead letter: failed steps grouped by error.code, with replay links; bulk replay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from stellaorch.api.auth import ReadCaller, WriteCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.routers.runs import ReplayRun
from stellaorch.api.state import orchestrator
from stellaorch.domain.providers import format_utc
from stellaorch.engine.deadletter import SAMPLES, DeadLetterGroup
from stellaorch.engine.requests import ReplayOrigin
from stellaorch.engine.views import run_summary

router = APIRouter(tags=["deadletter"])
BASE = "/api/v1/orchestrator"


class ReplayGroup(ReplayRun):
    """Body of POST /deadletter/{code}:replay."""


def group_view(group: DeadLetterGroup) -> dict[str, Any]:
    """A dead-letter group as JSON."""
    samples = list(group.run_ids)[:SAMPLES]
    return {
        "code": group.code,
        "count": group.count,
        "firstSeenUtc": format_utc(group.first_seen_us),
        "lastSeenUtc": format_utc(group.last_seen_us),
        "dagVersions": [{"dagId": d, "dagVersion": v} for d, v in group.versions],
        "plugins": list(group.plugins),
        "sampleRunIds": samples,
        "replay": {r: f"{BASE}/runs/{r}:replay" for r in samples},
        "replayGroup": f"{BASE}/deadletter/{group.code}:replay",
    }


@router.get("/deadletter")
async def list_deadletter(
    request: Request, caller: ReadCaller, page_size: PageSize = 50, page_token: PageToken = None
) -> dict[str, Any]:
    """Failed steps of the tenant grouped by error.code, ordered by code."""
    groups = await orchestrator(request).dead_letter.groups(caller.tenant)
    position = decode_position(page_token, (str,))
    if position:
        groups = [g for g in groups if g.code > str(position[0])]
    page = groups[:page_size]
    token = encode_token([page[-1].code]) if len(groups) > page_size and page else None
    return {"items": [group_view(g) for g in page], "nextPageToken": token}


@router.post("/deadletter/{code}:replay", status_code=201)
async def replay_group(
    code: str, body: ReplayGroup, request: Request, caller: WriteCaller
) -> Response:
    """Replay every failed run of the group not replayed yet (new runs with replayOf)."""

    async def act() -> tuple[int, Any]:
        service = orchestrator(request).dead_letter
        who = ReplayOrigin(actor=caller.actor, ticket=caller.ticket)
        created = await service.replay(caller.tenant, code, body.reason, who, body.target())
        return 201, {"items": [run_summary(c.run) for c in created]}

    return await idempotent(request, caller, body.model_dump(), act)
