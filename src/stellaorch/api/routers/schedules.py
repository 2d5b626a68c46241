"""Schedules: cron triggers bound to a DAG version; create, list, read, pause, resume, clear."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, ReadCaller
from stellaorch.api.idempotency import idempotent
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.firing import MAX_CATCHUP_WINDOW_SECONDS, MAX_JITTER_SECONDS
from stellaorch.domain.providers import format_utc, parse_utc
from stellaorch.engine.backfill import Backfilled, BackfillWindow
from stellaorch.engine.schedules import FiringRow, ScheduleRow, ScheduleSpec

router = APIRouter(tags=["schedules"])
ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RECENT_FIRINGS = 20


class CreateSchedule(BaseModel):
    """Body of POST /schedules."""

    model_config = ConfigDict(extra="forbid")
    dagId: str = Field(pattern=ID)
    version: str | int | None = Field(default=None, description="omit: latest enabled version")
    cron: str = Field(min_length=1, max_length=200, description="5 fields, or 6 with seconds first")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="IANA zone")
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "buffer_one", "allow"] = "skip"
    catchup: Literal["all", "latest", "none"] = "latest"
    catchupWindowSeconds: int = Field(default=3_600, ge=0, le=MAX_CATCHUP_WINDOW_SECONDS)
    jitterSeconds: int = Field(default=0, ge=0, le=MAX_JITTER_SECONDS)

    def spec(self, tenant: str) -> ScheduleSpec:
        """The engine's view of the request."""
        return ScheduleSpec(
            tenant=tenant,
            dag_id=self.dagId,
            cron=self.cron,
            timezone=self.timezone,
            version=None if self.version is None else str(self.version),
            inputs=self.inputs,
            overlap=self.overlap,
            catchup=self.catchup,
            catchup_window_seconds=self.catchupWindowSeconds,
            jitter_seconds=self.jitterSeconds,
        )


class Backfill(BaseModel):
    """Body of POST /schedules/{scheduleId}:backfill."""

    model_config = ConfigDict(extra="forbid")
    fromUtc: str = Field(min_length=1, max_length=40, description="RFC 3339, inclusive")
    toUtc: str = Field(min_length=1, max_length=40, description="RFC 3339, exclusive")
    dryRun: bool = False

    def window(self, tenant: str, schedule_id: str) -> BackfillWindow:
        """The engine's view of the request (bad timestamps are VALIDATION_FAILED)."""
        try:
            start, end = parse_utc(self.fromUtc), parse_utc(self.toUtc)
        except ValueError as exc:
            raise ValidationError(f"fromUtc/toUtc must be RFC 3339 timestamps: {exc}") from exc
        return BackfillWindow(tenant, schedule_id, start, end, self.dryRun)


def backfill_view(result: Backfilled) -> dict[str, Any]:
    """What a backfill did (or would do), fire time by fire time."""
    window = result.window
    return {
        "scheduleId": window.schedule_id,
        "fromUtc": format_utc(window.from_us),
        "toUtc": format_utc(window.to_us),
        "dryRun": window.dry_run,
        "created": result.count("created"),
        "existing": result.count("existing"),
        "scheduled": result.count("scheduled"),
        "wouldCreate": result.count("would_create"),
        "items": [
            {
                "scheduledUtc": format_utc(item.scheduled_us),
                "runToken": item.run_token,
                "outcome": item.outcome,
                "runId": item.run_id,
            }
            for item in result.items
        ],
    }


def schedule_view(row: ScheduleRow) -> dict[str, Any]:
    """A stored schedule as JSON."""
    return {
        "scheduleId": row.schedule_id,
        "tenant": row.tenant,
        "dagId": row.dag_id,
        "version": row.dag_version,
        "cron": row.cron,
        "timezone": row.timezone,
        "inputs": json.loads(row.inputs_json),
        "overlap": row.overlap,
        "catchup": row.catchup,
        "catchupWindowSeconds": row.catchup_window_seconds,
        "jitterSeconds": row.jitter_seconds,
        "status": row.status,
        "nextFireUtc": format_utc(row.next_fire_us) if row.status == "active" else None,
        "lastFireUtc": format_utc(row.last_fire_us),
        "createdUtc": format_utc(row.created_us),
        "updatedUtc": format_utc(row.updated_us),
        "pausedReason": row.paused_reason,
    }


def firing_view(row: FiringRow) -> dict[str, Any]:
    """What became of one trigger."""
    return {
        "scheduledUtc": format_utc(row.scheduled_us),
        "outcome": row.outcome,
        "runId": row.run_id,
        "detail": row.detail,
        "recordedUtc": format_utc(row.created_us),
    }


@router.post("/schedules", status_code=201)
async def create_schedule(body: CreateSchedule, request: Request, caller: AdminCaller) -> Response:
    """Create a schedule (admin; X-Stella-Operator-Reason required)."""

    async def act() -> tuple[int, Any]:
        schedules = orchestrator(request).schedules
        row = await schedules.create(body.spec(caller.tenant), caller.operator)
        return 201, schedule_view(row)

    return await idempotent(request, caller, body.model_dump(), act)


@router.get("/schedules")
async def list_schedules(
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    dagId: Annotated[str | None, Query(pattern=ID)] = None,
    status: Literal["active", "paused", "deleted"] | None = None,
) -> dict[str, Any]:
    """Schedules in creation (scheduleId) order; deleted ones only when asked by status."""
    position = decode_position(page_token, (str,))
    rows, cursor = await orchestrator(request).schedules.page(
        caller.tenant,
        dag_id=dagId,
        status=status,
        after=str(position[0]) if position else None,
        limit=page_size,
    )
    token = encode_token([cursor]) if cursor else None
    return {"items": [schedule_view(r) for r in rows], "nextPageToken": token}


@router.get("/schedules/{scheduleId}")
async def get_schedule(scheduleId: str, request: Request, caller: ReadCaller) -> dict[str, Any]:
    """One schedule with its most recent triggers, newest first."""
    schedules = orchestrator(request).schedules
    row = await schedules.get(caller.tenant, scheduleId)
    firings = await schedules.firings(caller.tenant, scheduleId, RECENT_FIRINGS)
    return {**schedule_view(row), "recentFirings": [firing_view(f) for f in firings]}


@router.post("/schedules/{scheduleId}:pause")
async def pause_schedule(scheduleId: str, request: Request, caller: AdminCaller) -> Response:
    """Stop firing until resumed; triggers while paused are not caught up."""

    async def act() -> tuple[int, Any]:
        schedules = orchestrator(request).schedules
        row = await schedules.pause(caller.tenant, scheduleId, caller.operator)
        return 200, schedule_view(row)

    return await idempotent(request, caller, {}, act)


@router.post("/schedules/{scheduleId}:resume")
async def resume_schedule(scheduleId: str, request: Request, caller: AdminCaller) -> Response:
    """Fire again from the next trigger after now."""

    async def act() -> tuple[int, Any]:
        schedules = orchestrator(request).schedules
        row = await schedules.resume(caller.tenant, scheduleId, caller.operator)
        return 200, schedule_view(row)

    return await idempotent(request, caller, {}, act)


@router.post("/schedules/{scheduleId}:clear")
async def clear_schedule(scheduleId: str, request: Request, caller: AdminCaller) -> Response:
    """Clear scheduled triggers: drop pending and catch-up ones; fire from now on."""

    async def act() -> tuple[int, Any]:
        schedules = orchestrator(request).schedules
        result = await schedules.clear(caller.tenant, scheduleId, caller.operator)
        return 200, {**schedule_view(result.schedule), "cleared": result.cleared}

    return await idempotent(request, caller, {}, act)


@router.post("/schedules/{scheduleId}:backfill")
async def backfill_schedule(
    scheduleId: str, body: Backfill, request: Request, caller: AdminCaller
) -> Response:
    """Create the runs of the cron fire times in [fromUtc, toUtc), once each (dryRun: list)."""

    async def act() -> tuple[int, Any]:
        backfills = orchestrator(request).backfills
        result = await backfills.backfill(body.window(caller.tenant, scheduleId), caller.operator)
        return 200, backfill_view(result)

    return await idempotent(request, caller, body.model_dump(), act)


@router.delete("/schedules/{scheduleId}")
async def delete_schedule(scheduleId: str, request: Request, caller: AdminCaller) -> dict[str, Any]:
    """Delete a schedule: it never fires again; its trigger history is kept."""
    row = await orchestrator(request).schedules.delete(caller.tenant, scheduleId, caller.operator)
    return schedule_view(row)
