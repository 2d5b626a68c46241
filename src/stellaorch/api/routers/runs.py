"""Runs: start, list, read, cancel, replay, steps, logs; and artifacts by hash."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import ReadCaller, WriteCaller
from stellaorch.api.errors import trace_id_of
from stellaorch.api.idempotency import (
    IdempotencyKeyReused,
    derived_run_token,
    idempotent,
    idempotent_run,
)
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.routers.tasks import with_progress
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import RunTokenConflict, ValidationError
from stellaorch.domain.providers import parse_utc
from stellaorch.domain.status import RunStatus
from stellaorch.engine.records import IdempotencyClaim
from stellaorch.engine.requests import ReplayOrigin, ReplayTarget, RunRequest
from stellaorch.engine.runs import RunFilter
from stellaorch.engine.views import run_summary
from stellaorch.plugins.queue_task import task_hub_of

router = APIRouter(tags=["runs"])
audit_log = logging.getLogger("stellaorch.audit")
MAX_SEQ = 2**62  # a ledger seq fits a signed 64-bit column; larger would only overflow
MAX_ATTEMPT = 10_000  # far above any maxAttempts a spec may set
NDJSON = "application/x-ndjson"
_NO_STORE = {"Cache-Control": "no-store"}
ID = r"^[a-z0-9][a-z0-9._-]{0,127}$"  # a dagId as SPEC §1 and the spec model define it


class StartRun(BaseModel):
    """Body of POST /runs."""

    model_config = ConfigDict(extra="forbid")
    dagId: str = Field(pattern=ID)
    version: str | int | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    runToken: str | None = Field(default=None, min_length=1, max_length=128)


class CancelRun(BaseModel):
    """Body of POST /runs/{runId}:cancel."""

    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class ReplayRun(BaseModel):
    """Body of POST /runs/{runId}:replay (and of a dead-letter group's replay)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    version: str | int | None = None  # default: the original's, or the latest enabled
    resume: bool = False  # keep the unchanged steps that succeeded in the original run

    def target(self) -> ReplayTarget:
        """Where the replay runs."""
        version = None if self.version is None else str(self.version)
        return ReplayTarget(version=version, resume=self.resume)


@router.post("/runs", status_code=201)
async def start_run(body: StartRun, request: Request, caller: WriteCaller) -> Response:
    """Start a run (201), or return the run already behind this runToken (200)."""

    async def act(claim: IdempotencyClaim | None) -> tuple[int, Any, bool]:
        token = body.runToken or (derived_run_token(claim) if claim else None)
        with _key_conflicts(derived=claim is not None and body.runToken is None):
            created = await orchestrator(request).runs.create(
                RunRequest(
                    tenant=caller.tenant,
                    dag_id=body.dagId,
                    inputs=body.inputs,
                    run_token=token,
                    version=None if body.version is None else str(body.version),
                    trace_id=trace_id_of(request),
                    idempotency=claim,
                )
            )
        view = run_summary(created.run)
        if body.runToken is None and not created.created:  # a twin with the same key made it
            return 201, view, True
        return (201 if created.created else 200), view, False

    return await idempotent_run(request, caller, body.model_dump(), act)


@contextlib.contextmanager
def _key_conflicts(derived: bool) -> Iterator[None]:
    """A key-derived runToken that clashes means the key was reused with another body."""
    try:
        yield
    except RunTokenConflict as exc:
        if not derived:
            raise
        raise IdempotencyKeyReused("Idempotency-Key was already used with another body") from exc


@router.get("/runs")
async def list_runs(
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    dagId: Annotated[str | None, Query(pattern=ID)] = None,
    status: RunStatus | None = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
) -> dict[str, Any]:
    """Runs of the tenant, newest first; filters dagId, status, from, to (createdUtc)."""
    where = RunFilter(
        caller.tenant,
        dagId,
        status.value if status else None,
        parse_time(from_, "from"),
        parse_time(to, "to"),
    )
    after = decode_position(page_token, (int, str))
    items, cursor = await orchestrator(request).runs.page(where, limit=page_size, after=after)
    return {"items": items, "nextPageToken": encode_token(list(cursor)) if cursor else None}


def parse_time(text: str | None, name: str) -> int | None:
    """An optional RFC 3339 query value as microseconds (400 if it is not one)."""
    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise ValidationError(f"{name} must be an RFC 3339 timestamp") from exc


@router.get("/runs/{runId}")
async def get_run(runId: str, request: Request, caller: ReadCaller) -> Response:
    """The run with its step states, attempts and hashes."""
    orch = orchestrator(request)
    body = await orch.runs.get_json(caller.tenant, runId)
    return with_progress(task_hub_of(orch.plugins), runId, body)


@router.get("/runs/{runId}/first-signal", response_class=Response)
async def first_signal(runId: str, request: Request, caller: ReadCaller) -> Response:
    """The run's first signal (weak ETag; 304 on If-None-Match; 204 while there is none)."""
    signal = await orchestrator(request).runs.first_signal(caller.tenant, runId)
    if signal is None:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    headers = {
        "ETag": signal.etag,
        "Cache-Control": "private, max-age=3600",
        "Vary": "Authorization",
    }
    if _matches(request.headers.get("if-none-match"), signal.etag):
        return Response(status_code=304, headers=headers)
    return Response(signal.body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our tag."""
    if if_none_match is None:
        return False
    opaque = etag.removeprefix("W/")
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == opaque for t in tags)


@router.get("/runs/{runId}/diff/{otherRunId}")
async def diff_runs(
    runId: str, otherRunId: str, request: Request, caller: ReadCaller
) -> dict[str, Any]:
    """What differs between two of the tenant's runs: DAG, spec, inputs, steps, plugins."""
    return await orchestrator(request).runs.diff(caller.tenant, runId, otherRunId)


@router.post("/runs/{runId}:cancel")
async def cancel_run(
    runId: str,
    request: Request,
    caller: WriteCaller,
    body: CancelRun | None = None,
) -> Response:
    """Cancel a run; a finished run comes back unchanged with cancelRejected true."""

    async def act() -> tuple[int, Any]:
        reason = body.reason if body else None
        result = await orchestrator(request).runs.cancel(caller.tenant, runId, reason)
        if not result.rejected:  # not an audited action, but an operator's all the same
            fields = {"tenant": caller.tenant, "action": "run.cancel", "target": f"run:{runId}"}
            who = {"actor": caller.actor, "reason": reason, "ticket": caller.ticket}
            audit_log.info("admin.action", extra={**fields, **who})
        return 200, {**run_summary(result.run), "cancelRejected": result.rejected}

    return await idempotent(request, caller, body.model_dump() if body else {}, act)


@router.post("/runs/{runId}:replay", status_code=201)
async def replay_run(
    runId: str,
    body: ReplayRun,
    request: Request,
    caller: WriteCaller,
) -> Response:
    """A new run with the same inputs and replayOf set, on the original's version or the one
    named (default when disabled: the latest enabled); `resume` keeps unchanged succeeded
    steps; reason required."""

    async def act(claim: IdempotencyClaim | None) -> tuple[int, Any, bool]:
        origin = ReplayOrigin(
            actor=caller.actor,
            ticket=caller.ticket,
            run_token=derived_run_token(claim) if claim else None,
            idempotency=claim,
        )
        with _key_conflicts(derived=claim is not None):
            created = await orchestrator(request).runs.replay(
                caller.tenant, runId, body.reason, origin=origin, target=body.target()
            )
        return 201, run_summary(created.run), not created.created

    return await idempotent_run(request, caller, body.model_dump(), act)


@router.get("/runs/{runId}/events")
async def list_events(
    runId: str,
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
) -> dict[str, Any]:
    """The run's ledger entries in chain order (after seq `after`), a page at a time."""
    position = decode_position(page_token, (int,))
    start = int(position[0]) if position else after
    items = await orchestrator(request).runs.events(
        caller.tenant, runId, after=start, limit=page_size + 1
    )
    page, more = items[:page_size], len(items) > page_size
    return {"items": page, "nextPageToken": encode_token([page[-1]["seq"]]) if more else None}


@router.get("/runs/{runId}/steps")
async def list_steps(
    runId: str,
    request: Request,
    caller: ReadCaller,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """Step executions in the DAG's deterministic order, with attempts, a page at a time."""
    after = decode_position(page_token, (int,))
    items, cursor = await orchestrator(request).runs.steps(
        caller.tenant, runId, limit=page_size, after=after[0] if after else None
    )
    return {"items": items, "nextPageToken": encode_token([cursor]) if cursor is not None else None}


@router.get("/runs/{runId}/steps/{stepId}")
async def get_step(
    runId: str,
    stepId: str,
    request: Request,
    caller: ReadCaller,
) -> dict[str, Any]:
    """One step execution with its attempts."""
    return await orchestrator(request).runs.step(caller.tenant, runId, stepId)


@router.get("/runs/{runId}/steps/{stepId}/metrics")
async def get_step_metrics(
    runId: str,
    stepId: str,
    request: Request,
    caller: ReadCaller,
) -> dict[str, Any]:
    """Each attempt's resource metrics (CPU, peak RSS, wall time, output bytes) and its ref."""
    return await orchestrator(request).runs.step_metrics(caller.tenant, runId, stepId)


@router.get("/runs/{runId}/steps/{stepId}/logs", response_model=None)
async def step_logs(
    runId: str,
    stepId: str,
    request: Request,
    caller: ReadCaller,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
    follow: bool = False,
) -> dict[str, Any] | StreamingResponse:
    """The step's log lines, attempt by attempt; `follow`: NDJSON, live, until the attempt ends."""
    service = orchestrator(request).runs
    if not follow:
        return {"items": await service.step_logs(caller.tenant, runId, stepId, attempt)}
    lines = await service.logs.follow(caller.tenant, runId, stepId, attempt)
    return StreamingResponse(_ndjson(lines), media_type=NDJSON, headers=_NO_STORE)


async def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """One compact JSON object per line; the stream ends when the follower does."""
    async for line in lines:
        yield json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@router.get("/artifacts/{hash}", response_class=Response)
async def get_artifact(hash: str, request: Request, caller: ReadCaller) -> Response:
    """Content by hash (sha256:<hex>), only to the owning tenant."""
    content, media_type = await orchestrator(request).runs.artifact(caller.tenant, hash)
    return Response(content, media_type=media_type)
