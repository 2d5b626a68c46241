"""The worker API: external workers claim, heartbeat, report progress and logs, upload
artifacts and complete the `queue` steps of the tenant they act for (scope
`orchestrator:worker`)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import WORKER, Caller, require
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import (
    ArtifactHashMismatch,
    ArtifactTooLarge,
    NotFound,
    StellaError,
    ValidationError,
)
from stellaorch.domain.providers import format_utc
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.stream import StreamHub
from stellaorch.plugins.queue_task import task_hub_of
from stellaorch.plugins.task_hub import (
    DEFAULT_QUEUE,
    MAX_CLAIM,
    Granted,
    Job,
    TaskHub,
    TaskResult,
)

router = APIRouter(tags=["worker"])
WorkerCaller = Annotated[Caller, Depends(require(WORKER))]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
LEASE = r"^[0-9a-f]{32}$"
MAX_WAIT_SECONDS = 30.0
MAX_LINES = 1000
# The upload route below the API prefix, for the body-limit and JSON-depth middleware: any
# last segment matches, so a malformed hash still meets the artifact cap (then a 400).
ARTIFACT_PATH = r"/tasks/[^/]+/artifacts/[^/]+"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
MAX_MEDIA_TYPE = 64  # the blobs table's column
DEFAULT_MEDIA_TYPE = "application/octet-stream"
_ARTIFACT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
Name = Annotated[str, Field(pattern=NAME)]
LeaseId = Annotated[str, Field(pattern=LEASE)]


class Claim(BaseModel):
    """Body of POST /tasks:claim: what the worker serves and how many leases it can take."""

    model_config = ConfigDict(extra="forbid")
    workerId: str = Field(min_length=1, max_length=200)
    tasks: list[Name] = Field(min_length=1, max_length=100)
    queues: list[Name] = Field(default_factory=lambda: [DEFAULT_QUEUE], max_length=100)
    capacity: int = Field(default=1, ge=1, le=MAX_CLAIM)
    waitSeconds: float = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS)


class Heartbeat(BaseModel):
    """Body of POST /tasks:heartbeat: the leases to extend."""

    model_config = ConfigDict(extra="forbid")
    leaseIds: list[LeaseId] = Field(min_length=1, max_length=MAX_CLAIM)


class Progress(BaseModel):
    """Body of POST /tasks/{leaseId}:progress."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(ge=0, le=1)
    message: str = Field(default="", max_length=1000)


class LogLines(BaseModel):
    """Body of POST /tasks/{leaseId}:log: lines appended to the attempt's log."""

    model_config = ConfigDict(extra="forbid")
    lines: list[Annotated[str, Field(max_length=8192)]] = Field(min_length=1, max_length=MAX_LINES)


class TaskError(BaseModel):
    """A failed attempt: a typed error; `retryable` lets the step's retry policy try again."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    message: str = Field(default="", max_length=4000)
    retryable: bool = False


class Completion(BaseModel):
    """One attempt's outcome: `outputs` (a JSON object) or `error`, not both."""

    model_config = ConfigDict(extra="forbid")
    outputs: dict[str, Any] | None = None
    error: TaskError | None = None

    def result(self) -> TaskResult:
        """The hub's form of the outcome."""
        error = None if self.error is None else self.error.model_dump()
        return TaskResult(None if error else dict(self.outputs or {}), error)


class BatchItem(Completion):
    """One entry of POST /tasks:complete."""

    leaseId: LeaseId


class Batch(BaseModel):
    """Body of POST /tasks:complete: many outcomes in one request."""

    model_config = ConfigDict(extra="forbid")
    results: list[BatchItem] = Field(min_length=1, max_length=MAX_CLAIM)


def hub(request: Request) -> TaskHub:
    """This server's task hub (the `queue` plugin's)."""
    found = task_hub_of(orchestrator(request).plugins)
    if found is None:
        raise NotFound("this server runs no queue plugin")
    return found


def lease_view(granted: Granted) -> dict[str, Any]:
    """A lease as the worker receives it."""
    job = granted.job
    return {
        "leaseId": granted.lease_id,
        "expiresUtc": format_utc(granted.expires_us),
        "runId": job.run_id,
        "dagId": job.dag_id,
        "stepId": job.step_id,
        "attempt": job.attempt,
        "task": job.task,
        "queue": job.queue,
        "params": dict(job.params),
        "traceparent": job.traceparent,
        "deadlineUtc": format_utc(job.deadline_us),
    }


@router.post("/tasks:claim")
async def claim_tasks(body: Claim, request: Request, caller: WorkerCaller) -> dict[str, Any]:
    """Lease up to `capacity` queue steps of the named tasks; wait up to `waitSeconds`."""
    granted = await hub(request).claim(
        caller.tenant,
        body.workerId,
        body.tasks,
        body.queues,
        body.capacity,
        min(body.waitSeconds, orchestrator(request).env.settings.task_claim_max_wait_seconds),
    )
    return {"leases": [lease_view(g) for g in granted]}


@router.post("/tasks:heartbeat")
async def heartbeat_tasks(
    body: Heartbeat, request: Request, caller: WorkerCaller
) -> dict[str, Any]:
    """Extend leases; each answer says whether it is held and whether the run was cancelled."""
    answers = hub(request).heartbeat(caller.tenant, body.leaseIds)
    for answer in answers:
        expires = answer.pop("expiresUs", None)
        answer["expiresUtc"] = None if expires is None else format_utc(expires)
    return {"leases": answers}


@router.post("/tasks/{leaseId}:progress")
async def task_progress(
    leaseId: str, body: Progress, request: Request, caller: WorkerCaller
) -> dict[str, Any]:
    """Record progress; subscribers of the run stream get a `step.progress` event."""
    job = hub(request).progress(caller.tenant, leaseId, body.fraction, body.message)
    return {"runId": job.run_id, "stepId": job.step_id, "progress": job.progress}


@router.post("/tasks/{leaseId}:log")
async def task_log(
    leaseId: str, body: LogLines, request: Request, caller: WorkerCaller
) -> dict[str, Any]:
    """Append lines to the attempt's live log (kept as the step's log)."""
    hub(request).log(caller.tenant, leaseId, body.lines)
    return {"accepted": len(body.lines)}


@router.post("/tasks/{leaseId}:complete")
async def complete_task(
    leaseId: str, body: Completion, request: Request, caller: WorkerCaller
) -> dict[str, Any]:
    """Report one attempt's outcome; a stale or repeated lease is refused (404 LEASE_LOST)."""
    job = hub(request).complete(caller.tenant, leaseId, body.result())
    return {"leaseId": leaseId, "runId": job.run_id, "stepId": job.step_id, "accepted": True}


@router.put("/tasks/{leaseId}/artifacts/{sha256}", openapi_extra=_ARTIFACT_BODY)
async def put_artifact(
    leaseId: str, sha256: str, request: Request, caller: WorkerCaller
) -> dict[str, Any]:
    """Store the body under its sha256 in the tenant's blobs, while the lease is held.

    Content-addressed, so a repeated upload is a no-op that answers the same reference.
    """
    tasks = hub(request)
    tasks.admit_artifact(caller.tenant, leaseId)  # a stale or foreign lease: before reading
    if not SHA256_HEX.match(sha256):
        raise ValidationError("the path names the artifact by 64 lowercase hex digits (sha256)")
    media_type = _media_type(request.headers.get("content-type"))
    settings = orchestrator(request).env.settings
    content = await _artifact_body(request, settings.max_artifact_bytes, sha256)
    tasks.holding(caller.tenant, leaseId)  # the lease may have lapsed while the body arrived
    ref = await orchestrator(request).runs.put_artifact(caller.tenant, content, media_type)
    return {"ref": ref, "sizeBytes": len(content), "mediaType": media_type}


def _media_type(header: str | None) -> str:
    """The artifact's media type from Content-Type (parameters dropped), checked and bounded."""
    if header is None or not header.strip():
        return DEFAULT_MEDIA_TYPE
    value = header.split(";", 1)[0].strip().lower()
    if len(value) > MAX_MEDIA_TYPE or not MEDIA_TYPE.match(value):
        raise ValidationError(
            f"Content-Type must be a type/subtype of at most {MAX_MEDIA_TYPE} chars"
        )
    return value


async def _artifact_body(request: Request, limit: int, sha256: str) -> bytes:
    """The body, hashed and counted while it arrives; reading stops once it is over `limit`."""
    digest, chunks, size = hashlib.sha256(), [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ArtifactTooLarge(f"the artifact is larger than {limit} bytes")
        digest.update(chunk)
        chunks.append(chunk)
    if digest.hexdigest() != sha256:
        raise ArtifactHashMismatch(f"the body's sha256 is {digest.hexdigest()}, not {sha256}")
    return b"".join(chunks)


@router.post("/tasks/{leaseId}:release")
async def release_task(leaseId: str, request: Request, caller: WorkerCaller) -> dict[str, Any]:
    """Give a lease back unfinished (graceful shutdown): the step is offered again at once."""
    job = hub(request).release(caller.tenant, leaseId)
    return {"leaseId": leaseId, "runId": job.run_id, "stepId": job.step_id, "released": True}


@router.post("/tasks:complete")
async def complete_tasks(body: Batch, request: Request, caller: WorkerCaller) -> dict[str, Any]:
    """Report many outcomes; each answer says whether it was accepted or why not."""
    tasks = hub(request)
    answers = []
    for item in body.results:
        try:
            tasks.complete(caller.tenant, item.leaseId, item.result())
            answers.append({"leaseId": item.leaseId, "accepted": True})
        except StellaError as exc:
            error = {"code": exc.code, "message": exc.message}
            answers.append({"leaseId": item.leaseId, "accepted": False, "error": error})
    return {"results": answers}


def with_progress(tasks: TaskHub | None, run_id: str, body: bytes) -> Response:
    """A run view, with the live progress of its queue steps when any reported some."""
    progress = {} if tasks is None else tasks.run_progress(run_id)
    if progress:
        view = json.loads(body)
        for step in view.get("steps", []):
            if step.get("stepId") in progress:
                step["progress"] = progress[step["stepId"]]
        body = json.dumps(view, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


def announce_progress(orch: Orchestrator, stream: StreamHub) -> None:
    """Send each reported progress to the run stream's subscribers as `step.progress`."""
    tasks = task_hub_of(orch.plugins)
    if tasks is None:
        return

    def push(job: Job) -> None:
        parts = job.traceparent.split("-")
        stream.push(
            {
                "seq": stream.last_seen,
                "type": "step.progress",
                "tenant": job.tenant,
                "dagId": job.dag_id,
                "runId": job.run_id,
                "status": "running",
                "timestamp": format_utc(orch.env.clock.now_us()),
                "traceId": parts[1] if len(parts) > 2 else "",
                "stepId": job.step_id,
                "attempt": job.attempt,
                "data": dict(job.progress or {}),
            }
        )

    tasks.progress_listeners.append(push)
