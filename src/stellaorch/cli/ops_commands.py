"""`stella orch audit|quota …` over the API, and what the operations commands share.

The schedule and queue commands print through `OpsPrinter` too: its table columns, like those
of render.py, are part of the CLI's interface (fixed order, only ever extended at the end).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from stellaorch.cli.client import ApiClient, Params
from stellaorch.cli.common import (
    AllPages,
    ApiUrl,
    ClientTenant,
    Output,
    PageSize,
    PageToken,
    Remote,
    Token,
    group,
    run_remote,
)
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.errors import UsageInvalid
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.render import COLUMNS, OutputFormat, Printer

# (header, field) per resource. Free text (cron expressions, reasons) comes last, so the
# columns before it can be cut by whitespace.
OPS_COLUMNS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "schedule": (
        ("SCHEDULE_ID", "scheduleId"),
        ("DAG_ID", "dagId"),
        ("VERSION", "version"),
        ("STATUS", "status"),
        ("NEXT_FIRE", "nextFireUtc"),
        ("LAST_FIRE", "lastFireUtc"),
        ("OVERLAP", "overlap"),
        ("CATCHUP", "catchup"),
        ("TIMEZONE", "timezone"),
        ("CRON", "cron"),
    ),
    "firing": (
        ("SCHEDULED", "scheduledUtc"),
        ("OUTCOME", "outcome"),
        ("RUN_ID", "runId"),
        ("RECORDED", "recordedUtc"),
        ("DETAIL", "detail"),
    ),
    "backfill": (
        ("SCHEDULED", "scheduledUtc"),
        ("OUTCOME", "outcome"),
        ("RUN_ID", "runId"),
        ("RUN_TOKEN", "runToken"),
    ),
    "alert": (
        ("RULE_ID", "ruleId"),
        ("KIND", "kind"),
        ("DAG_ID", "dagId"),
        ("THRESHOLD", "threshold"),
        ("WINDOW_S", "windowSeconds"),
        ("SIGNED", "signed"),
        ("LAST_STATUS", "lastDelivery.status"),
        ("LAST_ATTEMPTS", "lastDelivery.attempts"),
        ("LAST_UPDATED", "lastDelivery.updatedUtc"),
        ("URL", "url"),
    ),
    "delivery": (
        ("DELIVERY_ID", "deliveryId"),
        ("RULE_ID", "ruleId"),
        ("KIND", "kind"),
        ("STATUS", "status"),
        ("ATTEMPTS", "attempts"),
        ("HTTP", "responseStatus"),
        ("CREATED", "createdUtc"),
        ("UPDATED", "updatedUtc"),
        ("EVENT", "eventKey"),
        ("LAST_ERROR", "lastError"),
    ),
    "queue": (
        ("TENANT", "tenant"),
        ("DEPTH", "depth"),
        ("OLDEST_AGE_S", "oldestAgeSeconds"),
        ("IN_FLIGHT", "inFlight"),
        ("RETRYING", "retrying"),
        ("PAUSED", "paused"),
        ("DRAINING", "draining"),
        ("WORKERS", "workersSeen"),
        ("QUOTA_LIMITED", "quotaLimited"),
        ("NEXT_ELIGIBLE", "nextEligibleUtc"),
    ),
    "quota": (
        ("TENANT", "tenant"),
        ("DAG_ID", "dagId"),
        ("MAX_ACTIVE", "maxActive"),
        ("MAX_PER_HOUR", "maxPerHour"),
        ("BURST", "burst"),
        ("UPDATED", "updatedUtc"),
        ("NEXT_ELIGIBLE", "nextEligibleUtc"),
    ),
    "deadletter": (
        ("CODE", "code"),
        ("COUNT", "count"),
        ("FIRST_SEEN", "firstSeenUtc"),
        ("LAST_SEEN", "lastSeenUtc"),
        ("DAG_VERSIONS", "dagVersions"),
        ("PLUGINS", "plugins"),
        ("SAMPLE_RUN_IDS", "sampleRunIds"),
        ("ACKED_UNTIL", "acknowledgedUntilUtc"),
    ),
    "replayplan": (
        ("REPLAY_OF", "replayOf"),
        ("DAG_ID", "dagId"),
        ("VERSION", "dagVersion"),
        ("RESUME", "resume"),
    ),
    "audit": (
        ("TIME", "createdUtc"),
        ("TENANT", "tenant"),
        ("ACTOR", "actor"),
        ("ACTION", "action"),
        ("TARGET", "target"),
        ("TICKET", "ticket"),
        ("REASON", "reason"),
    ),
    "worker": (
        ("WORKER_ID", "workerId"),
        ("HOST", "host"),
        ("PID", "pid"),
        ("VERSION", "version"),
        ("CONCURRENCY", "concurrency"),
        ("SLOTS_IN_USE", "slotsInUse"),
        ("LAST_SEEN", "lastSeenUtc"),
        ("LAST_SEEN_AGE_S", "lastSeenAgeSeconds"),
        ("STARTED", "startedUtc"),
        ("ALL_TENANTS", "servesAllTenants"),
        ("TENANTS", "tenants"),
    ),
    "ack": (("CODE", "code"), ("ACKED_UNTIL", "acknowledgedUntilUtc")),
    "cancelled": (("RUN_ID", "runId"),),
    "paused": (("SCHEDULE_ID", "scheduleId"),),
    "auditexport": (("COUNT", "count"), ("SHA256", "sha256"), ("FILE", "file")),
}

Reason = Annotated[
    str, typer.Option("--reason", help="Why (X-Stella-Operator-Reason, audited; required).")
]
Ticket = Annotated[
    str | None, typer.Option("--ticket", help="Change ticket (X-Stella-Operator-Ticket).")
]


class OpsPrinter(Printer):
    """A Printer that also knows the operations resources' columns."""

    columns: Mapping[str, Sequence[tuple[str, str]]] = {**COLUMNS, **OPS_COLUMNS}

    def result(self, kind: str, document: Any) -> None:
        """A list response (`items`, or a bare list) as a list, anything else as one item."""
        if isinstance(document, list):
            self.listing(kind, {"items": document})
        elif isinstance(document, Mapping) and isinstance(document.get("items"), list):
            self.listing(kind, document)
        else:
            self.one(kind, document if isinstance(document, Mapping) else {"result": document})


OpsCommand = Callable[[ApiClient, OpsPrinter], Awaitable[None]]


def run_ops(ctx: typer.Context, remote: Remote, command: OpsCommand) -> NoReturn:
    """`run_remote` with an OpsPrinter."""

    async def work(client: ApiClient, out: Printer) -> None:
        await command(client, OpsPrinter(out.fmt))

    run_remote(ctx, remote, work)


def segment(value: str) -> str:
    """A path segment, escaped."""
    return quote(value, safe="")


# --- audit log -----------------------------------------------------------------------------------
audit_app = group("The audit log of admin actions: list, export as NDJSON.")


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (e.g. schedule.pause).")
    ] = None,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's admin actions in the order they were recorded."""
    paging = Paging(page_size, page_token, every_page)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await print_pages(client, out, "audit", "/audit", {"action": action}, paging)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="File to write (NDJSON).")],
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (e.g. dag.rollback).")
    ] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Stream the tenant's audit log to a file; print its line count and SHA-256."""

    async def work(client: ApiClient, printer: OpsPrinter) -> None:
        exported = await download_ndjson(client, "/audit/export", {"action": action}, out)
        printer.one("auditexport", exported)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


async def download_ndjson(
    client: ApiClient, path: str, params: Params, out: Path
) -> dict[str, Any]:
    """Stream a GET into `out` (via `out.partial`, renamed when complete); count and hash it."""
    partial = out.with_name(out.name + ".partial")
    digest = hashlib.sha256()
    count = 0
    try:
        async with client.download(path, params) as response:
            with partial.open("wb") as sink:
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
                    digest.update(chunk)
                    count += chunk.count(b"\n")
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()  # no half export may look complete
        raise
    partial.replace(out)
    return {"count": count, "sha256": f"sha256:{digest.hexdigest()}", "file": str(out)}


# --- quotas --------------------------------------------------------------------------------------
quota_app = group("Per-tenant (and per-DAG) quotas and rate limits.")


@quota_app.command("show")
def quota_show(
    ctx: typer.Context,
    dag_id: Annotated[str | None, typer.Option("--dag-id", help="Only this DAG's quota.")] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's quotas: maxActive runs, maxPerHour, burst (tenant-wide and per DAG)."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        out.result("quota", await client.get("/quotas", {"dagId": dag_id}))

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@quota_app.command("set")
def quota_set(
    ctx: typer.Context,
    reason: Reason,
    dag_id: Annotated[
        str | None, typer.Option("--dag-id", help="Set this DAG's quota (default: the tenant's).")
    ] = None,
    max_active: Annotated[
        int | None, typer.Option("--max-active", min=0, help="Runs queued or running at once.")
    ] = None,
    max_per_hour: Annotated[
        int | None, typer.Option("--max-per-hour", min=0, help="Runs started per hour.")
    ] = None,
    burst: Annotated[
        int | None, typer.Option("--burst", min=0, help="Token bucket size: runs at once.")
    ] = None,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set quota limits (only the ones given change); runs over a limit wait, never fail."""
    limits = {"maxActive": max_active, "maxPerHour": max_per_hour, "burst": burst}
    body: dict[str, Any] = {k: v for k, v in limits.items() if v is not None}
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        if not body:
            raise UsageInvalid("give at least one of --max-active, --max-per-hour, --burst")
        if dag_id is not None:
            body["dagId"] = dag_id
        out.result("quota", await client.put("/quotas", body, note.headers()))

    run_ops(ctx, Remote(api_url, token, tenant, output), work)
