"""`stella orch schedule …`: cron triggers bound to a DAG version, over the API."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from stellaorch.cli.client import ApiClient
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
)
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.inputs import read_inputs
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.ops_commands import OpsPrinter, Reason, Ticket, run_ops, segment
from stellaorch.cli.output import say, warn
from stellaorch.cli.render import OutputFormat

schedule_app = group("Cron schedules of DAG versions: create, list, pause, resume, clear, delete.")

ScheduleId = Annotated[str, typer.Option("--id", help="The schedule's id (scheduleId).")]


class Overlap(StrEnum):
    """What a trigger does while the schedule's previous run is still active."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"


class Catchup(StrEnum):
    """Which missed triggers fire after downtime."""

    ALL = "all"
    LATEST = "latest"
    NONE = "none"


def schedule_path(schedule_id: str, suffix: str = "") -> str:
    """`/schedules/<id><suffix>`, the id escaped."""
    return f"/schedules/{segment(schedule_id)}{suffix}"


@schedule_app.command("list")
def schedule_list(
    ctx: typer.Context,
    dag_id: Annotated[str | None, typer.Option("--dag-id", help="Only this DAG's.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="active, paused or deleted (default: active and paused)."),
    ] = None,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's schedules in creation order."""
    paging = Paging(page_size, page_token, every_page)
    params = {"dagId": dag_id, "status": status}

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await print_pages(client, out, "schedule", "/schedules", params, paging)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@schedule_app.command("show")
def schedule_show(
    ctx: typer.Context,
    schedule_id: ScheduleId,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """One schedule and its most recent triggers (newest first) with what became of them."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        view: dict[str, Any] = await client.get(schedule_path(schedule_id))
        out.one("schedule", view)
        firings = view.get("recentFirings")
        if out.fmt is OutputFormat.TABLE and isinstance(firings, list) and firings:
            say("")
            out.listing("firing", {"items": firings})

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@schedule_app.command("create")
def schedule_create(
    ctx: typer.Context,
    dag_id: Annotated[str, typer.Option("--dag-id", help="The DAG to run.")],
    cron: Annotated[
        str,
        typer.Option(help="5 fields (min hour dom month dow), or 6 with seconds first."),
    ],
    reason: Reason,
    version: Annotated[
        str | None, typer.Option(help="DAG version (default: the latest enabled at each trigger).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone of the cron expression (default: UTC).")
    ] = None,
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="JSON file: the inputs object of every run.")
    ] = None,
    overlap: Annotated[
        Overlap | None, typer.Option(help="While the previous run is active (default: skip).")
    ] = None,
    catchup: Annotated[
        Catchup | None, typer.Option(help="Missed triggers after downtime (default: latest).")
    ] = None,
    catchup_window: Annotated[
        int | None,
        typer.Option("--catchup-window", min=0, help="Seconds back to catch up (default: 3600)."),
    ] = None,
    jitter: Annotated[
        int | None, typer.Option(min=0, help="Delay each trigger by up to S seconds (default: 0).")
    ] = None,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a schedule: each trigger starts one run (runToken from schedule id and time)."""
    body: dict[str, Any] = {"dagId": dag_id, "cron": cron}
    optional = {
        "version": version,
        "timezone": timezone,
        "overlap": overlap.value if overlap else None,
        "catchup": catchup.value if catchup else None,
        "catchupWindowSeconds": catchup_window,
        "jitterSeconds": jitter,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        if inputs is not None:
            body["inputs"] = read_inputs(inputs)
        out.one("schedule", await client.post("/schedules", body, note.headers()))

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


def _change(
    ctx: typer.Context, remote: Remote, schedule_id: str, action: str, note: OperatorNote
) -> None:
    """POST `:pause`, `:resume` or `:clear`, or DELETE; print the schedule."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        if action == "delete":
            view = await client.delete(schedule_path(schedule_id), note.headers())
        else:
            view = await client.post(schedule_path(schedule_id, f":{action}"), None, note.headers())
        out.one("schedule", view)
        if action == "clear" and out.fmt is OutputFormat.TABLE:
            warn(f"cleared {view.get('cleared', 0)} scheduled trigger(s)")

    run_ops(ctx, remote, work)


def _change_command(action: str, summary: str) -> None:
    """Register `schedule ACTION --id ID --reason R`: the changes that differ only by name."""

    def command(
        ctx: typer.Context,
        schedule_id: ScheduleId,
        reason: Reason,
        ticket: Ticket = None,
        api_url: ApiUrl = None,
        token: Token = None,
        tenant: ClientTenant = None,
        output: Output = OutputFormat.TABLE,
    ) -> None:
        remote = Remote(api_url, token, tenant, output)
        _change(ctx, remote, schedule_id, action, OperatorNote(reason, ticket))

    command.__doc__ = summary
    command.__name__ = f"schedule_{action}"
    schedule_app.command(action)(command)


for _action, _summary in (
    ("pause", "Stop firing; triggers during the pause are neither fired nor caught up."),
    ("resume", "Fire again from the next trigger after now."),
    (
        "clear",
        "Clear scheduled triggers: drop pending and catch-up ones (runs already started stay).",
    ),
    ("delete", "Delete a schedule: it never fires again; its trigger history is kept."),
):
    _change_command(_action, _summary)


@schedule_app.command("pause-all")
def schedule_pause_all(
    ctx: typer.Context,
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Pause every active schedule of the tenant at once (resume them one by one)."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        result = await client.post("/schedules:pause", None, note.headers())
        out.result("paused", {"items": [{"scheduleId": s} for s in result["paused"]]})

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@schedule_app.command("backfill")
def schedule_backfill(
    ctx: typer.Context,
    schedule_id: ScheduleId,
    from_utc: Annotated[str, typer.Option("--from", help="First fire time to cover (RFC 3339).")],
    to_utc: Annotated[str, typer.Option("--to", help="End of the window, exclusive (RFC 3339).")],
    reason: Reason,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the runs it would create; change nothing.")
    ] = False,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create the runs of the cron fire times in [--from, --to), once each (trigger backfill:ID)."""
    body = {"fromUtc": from_utc, "toUtc": to_utc, "dryRun": dry_run}
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        result = await client.post(schedule_path(schedule_id, ":backfill"), body, note.headers())
        out.result("backfill", result)
        if out.fmt is OutputFormat.TABLE:
            counts = ", ".join(
                f"{result.get(k, 0)} {label}"
                for k, label in (
                    ("created", "created"),
                    ("existing", "already backfilled"),
                    ("scheduled", "already run by the scheduler"),
                    ("wouldCreate", "would be created"),
                )
            )
            warn(f"{'dry run: ' if dry_run else ''}{counts}")

    run_ops(ctx, Remote(api_url, token, tenant, output), work)
