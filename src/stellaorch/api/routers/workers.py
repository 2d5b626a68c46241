"""The worker registry: which worker processes are live, what they serve, how busy they are.

Workers are shared infrastructure. A token for every tenant ("*") sees every live worker
with its full tenants filter. Any other token sees only the workers that serve the tenant it
acts for, and each filter cut down to that tenant: it never learns which other tenants a
worker serves. Slots in use are a worker's total, with no tenant attached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stellaorch.api.auth import Caller, ReadCaller
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator
from stellaorch.domain.providers import format_utc
from stellaorch.engine.workers import LiveWorkers, WorkerRow

router = APIRouter(tags=["workers"])


def worker_view(row: WorkerRow, now_us: int, tenant: str | None) -> dict[str, Any]:
    """A worker as JSON; with `tenant`, its filter shows that tenant only (or none: all)."""
    tenants = list(row.tenants) if tenant is None else [t for t in row.tenants if t == tenant]
    return {
        "workerId": row.worker_id,
        "host": row.host,
        "pid": row.pid,
        "version": row.version,
        "servesAllTenants": not row.tenants,
        "tenants": tenants,
        "concurrency": row.concurrency,
        "slotsInUse": row.slots_in_use,
        "startedUtc": format_utc(row.started_us),
        "lastSeenUtc": format_utc(row.last_seen_us),
        "lastSeenAgeSeconds": round(max(0, now_us - row.last_seen_us) / 1e6, 3),
    }


def visible(live: LiveWorkers, caller: Caller) -> tuple[tuple[WorkerRow, ...], str | None]:
    """The rows the caller may see, and the tenant their filters are cut to (None: uncut)."""
    if "*" in caller.principal.tenants:
        return live.workers, None
    return live.serving(caller.tenant), caller.tenant


@router.get("/workers")
async def list_workers(
    request: Request, caller: ReadCaller, page_size: PageSize = 50, page_token: PageToken = None
) -> dict[str, Any]:
    """Live worker processes (heard from within the TTL), by `workerId`."""
    orch = orchestrator(request)
    live = await orch.workers.live()
    rows, cut_to = visible(live, caller)
    after = decode_position(page_token, (str,))
    if after is not None:
        rows = tuple(r for r in rows if r.worker_id > after[0])
    page = rows[:page_size]
    more = len(rows) > page_size
    return {
        "items": [worker_view(r, live.now_us, cut_to) for r in page],
        "nextPageToken": encode_token([page[-1].worker_id]) if more else None,
        "ttlSeconds": orch.env.settings.worker_ttl,
    }
