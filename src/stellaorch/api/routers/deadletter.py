"""The dead letter: failed steps grouped by error.code, with replay links; scoped bulk replay
(with a dry run) and acknowledgement of handled groups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, ReadCaller, WriteCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.routers.runs import ID, parse_time
from stellaorch.api.state import orchestrator
from stellaorch.domain.providers import format_utc
from stellaorch.engine.deadletter import (
    SAMPLES,
    DeadLetterGroup,
    DeadLetterScope,
    FailedScope,
    GroupReplay,
)
from stellaorch.engine.requests import ReplayOrigin, ReplayTarget
from stellaorch.engine.views import run_summary

router = APIRouter(tags=["deadletter"])
BASE = "/api/v1/orchestrator"


class ReplayGroup(BaseModel):
    """Body of POST /deadletter/{code}:replay: reason, target, scope, dry run."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    reason: str = Field(min_length=1, max_length=2000)
    onto: str | int | None = None  # default: each run's version, latest enabled if disabled
    resume: bool = False
    dagId: str | None = Field(default=None, pattern=ID)
    version: str | int | None = None  # only failed runs of this version (needs dagId)
    from_: str | None = Field(default=None, alias="from")  # failed at or after
    to: str | None = None  # failed before
    dryRun: bool = False

    def scope(self) -> DeadLetterScope:
        """Which failed runs the replay covers."""
        version = None if self.version is None else str(self.version)
        window = parse_time(self.from_, "from"), parse_time(self.to, "to")
        return DeadLetterScope(FailedScope(self.dagId, version, *window))


def group_view(group: DeadLetterGroup) -> dict[str, Any]:
    """A dead-letter group as JSON."""
    samples = list(group.run_ids)[:SAMPLES]
    acked = group.acked_until_us
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
        "acknowledgedUntilUtc": format_utc(acked) if acked is not None else None,
    }


def replay_view(result: GroupReplay) -> dict[str, Any]:
    """A group replay's answer: the new runs, or (dry run) what would be replayed."""
    planned = [
        {"replayOf": r.replay_of, "dagId": r.dag_id, "dagVersion": r.version, "resume": r.resume}
        for r in result.planned
    ]
    return {
        "items": [run_summary(c.run) for c in result.created],
        "planned": planned,
        "remaining": result.remaining,
        "dryRun": result.dry_run,
    }


@router.get("/deadletter")
async def list_deadletter(
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    dagId: Annotated[str | None, Query(pattern=ID)] = None,
    version: str | None = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    acknowledged: bool = False,
) -> dict[str, Any]:
    """Failed steps of the tenant grouped by error.code, ordered by code; acknowledged
    failures only with `acknowledged=true`."""
    failed = FailedScope(dagId, version, parse_time(from_, "from"), parse_time(to, "to"))
    scope = DeadLetterScope(failed, include_acked=acknowledged)
    groups = await orchestrator(request).dead_letter.groups(caller.tenant, scope)
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
    """Replay the group's failed runs in scope not replayed yet (new runs with replayOf), at
    most 500 per call (`remaining` tells how many are left); `dryRun` only lists them."""
    if body.dryRun:
        result = await _replay(code, body, request, caller)
        return JSONResponse(replay_view(result))

    async def act() -> tuple[int, Any]:
        return 201, replay_view(await _replay(code, body, request, caller))

    return await idempotent(request, caller, body.model_dump(), act)


async def _replay(code: str, body: ReplayGroup, request: Request, caller: Any) -> GroupReplay:
    service = orchestrator(request).dead_letter
    who = ReplayOrigin(actor=caller.actor, ticket=caller.ticket)
    onto = None if body.onto is None else str(body.onto)
    target = ReplayTarget(version=onto, resume=body.resume)
    return await service.replay(
        caller.tenant, code, body.reason, who, target, scope=body.scope(), dry_run=body.dryRun
    )


@router.post("/deadletter/{code}:ack")
async def ack_group(code: str, request: Request, caller: AdminCaller) -> dict[str, Any]:
    """Acknowledge a group as handled: its failures so far leave the default list (admin)."""
    until = await orchestrator(request).dead_letter.ack(caller.tenant, code, caller.operator)
    return {"code": code, "acknowledgedUntilUtc": format_utc(until)}
