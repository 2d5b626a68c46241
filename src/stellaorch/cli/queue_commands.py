"""`stella orch queue …`: per-tenant queue depth and controls (pause, resume, drain)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from stellaorch.cli.client import ApiClient
from stellaorch.cli.common import ApiUrl, ClientTenant, Output, Remote, Token, group
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.ops_commands import OpsPrinter, Reason, Ticket, run_ops, segment
from stellaorch.cli.output import stderr_is_terminal, warn
from stellaorch.cli.render import OutputFormat

queue_app = group("Per-tenant queues: depth, oldest age, in flight; pause, resume, drain.")

POLL_SECONDS = 0.5


async def queue_rows(client: ApiClient) -> list[dict[str, Any]]:
    """The rows of GET /queues (an `items` list, or a bare list)."""
    document = await client.get("/queues")
    items = document.get("items") if isinstance(document, Mapping) else document
    return [row for row in items or [] if isinstance(row, dict)]


async def queue_of(client: ApiClient, tenant: str) -> dict[str, Any]:
    """The tenant's row; a tenant with nothing queued may have none (then it is empty)."""
    for row in await queue_rows(client):
        if row.get("tenant") == tenant:
            return row
    return {"tenant": tenant, "depth": 0, "inFlight": 0}


def _count(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
    return value if isinstance(value, int) else 0


def is_drained(row: Mapping[str, Any]) -> bool:
    """Nothing waiting and nothing being worked on."""
    return _count(row, "depth") == 0 and _count(row, "inFlight") == 0


@queue_app.command("list")
def queue_list(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Each visible tenant's queue: depth, oldest age, in flight, retrying, paused, workers."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        out.listing("queue", {"items": await queue_rows(client)})

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


def _control(ctx: typer.Context, remote: Remote, action: str, note: OperatorNote) -> None:
    """POST /queues/{tenant}:<action> for the tenant acted for; print its queue."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        path = f"/queues/{segment(client.target.tenant)}:{action}"
        out.one("queue", await client.post(path, None, note.headers()))

    run_ops(ctx, remote, work)


def _control_command(action: str, summary: str) -> None:
    """Register `queue ACTION --reason R`: the controls that differ only by name."""

    def command(
        ctx: typer.Context,
        reason: Reason,
        ticket: Ticket = None,
        api_url: ApiUrl = None,
        token: Token = None,
        tenant: ClientTenant = None,
        output: Output = OutputFormat.TABLE,
    ) -> None:
        remote = Remote(api_url, token, tenant, output)
        _control(ctx, remote, action, OperatorNote(reason, ticket))

    command.__doc__ = summary
    command.__name__ = f"queue_{action}"
    queue_app.command(action)(command)


_control_command("pause", "Lease nothing new from the tenant's queue; work in flight finishes.")
_control_command("resume", "Lease from the tenant's queue again (ends a pause or a drain).")


@queue_app.command("drain")
def queue_drain(
    ctx: typer.Context,
    reason: Reason,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Show the depth until the queue is empty (exit 0 then)."),
    ] = False,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Take nothing new into the queue (schedules held) while workers finish the backlog."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        path = f"/queues/{segment(client.target.tenant)}:drain"
        row: dict[str, Any] = await client.post(path, None, note.headers())
        if wait:
            row = await wait_drained(client)
        out.one("queue", row)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


async def wait_drained(client: ApiClient) -> dict[str, Any]:
    """Poll GET /queues until the tenant's depth and in-flight count are 0; a live bar on a tty."""
    tenant = client.target.tenant
    progress = _bar() if stderr_is_terminal() else None
    task = progress.add_task(f"draining {tenant}", total=None) if progress else None
    most = 1
    told = False
    if progress:
        progress.start()
    try:
        while True:
            row = await queue_of(client, tenant)
            depth, in_flight = _count(row, "depth"), _count(row, "inFlight")
            if row.get("paused") and depth and not told:
                warn(
                    f"queue of {tenant} is paused: nothing is leased, so the depth ({depth}) "
                    "cannot fall; waiting until `stella orch queue resume` (Ctrl-C to stop)"
                )
                told = True
            if progress is not None and task is not None:
                most = max(most, depth + in_flight)
                description = f"draining {tenant}: depth {depth}, in flight {in_flight}"
                progress.update(
                    task, total=most, completed=most - depth - in_flight, description=description
                )
            if is_drained(row):
                return row
            await asyncio.sleep(POLL_SECONDS)
    finally:
        if progress is not None:
            progress.stop()


def _bar() -> Progress:
    """Spinner, description, bar, and elapsed time on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
