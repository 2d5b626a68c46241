"""`stella orch deadletter list|replay|ack`: dead-letter groups, scoped replay, acknowledgement."""

from __future__ import annotations

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
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.ops_commands import OpsPrinter, Reason, Ticket, run_ops, segment
from stellaorch.cli.output import warn
from stellaorch.cli.render import OutputFormat
from stellaorch.cli.run_commands import Resume

deadletter_app = group("Failed steps grouped by error code; replay a group, acknowledge it.")

DagScope = Annotated[str | None, typer.Option("--dag-id", help="Only failed runs of this DAG.")]
VersionScope = Annotated[
    str | None, typer.Option("--version", help="Only failed runs of this version (--dag-id).")
]
FromScope = Annotated[
    str | None, typer.Option("--from", help="Only steps that failed at or after (RFC 3339).")
]
ToScope = Annotated[
    str | None, typer.Option("--to", help="Only steps that failed before (RFC 3339).")
]
Code = Annotated[str, typer.Option("--code", help="The error.code of the group.")]


def scope_params(
    dag_id: str | None, version: str | None, from_utc: str | None, to_utc: str | None
) -> dict[str, Any]:
    """The scope filters that were given, by their API names."""
    given = {"dagId": dag_id, "version": version, "from": from_utc, "to": to_utc}
    return {k: v for k, v in given.items() if v is not None}


@deadletter_app.command("list")
def deadletter_list(
    ctx: typer.Context,
    dag_id: DagScope = None,
    version: VersionScope = None,
    from_utc: FromScope = None,
    to_utc: ToScope = None,
    acknowledged: Annotated[
        bool, typer.Option("--acknowledged", help="Include acknowledged failures.")
    ] = False,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Dead-lettered steps grouped by error.code: count, first/last seen, versions, plugins."""
    paging = Paging(page_size, page_token, every_page)
    params = scope_params(dag_id, version, from_utc, to_utc)
    if acknowledged:
        params["acknowledged"] = "true"

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await print_pages(client, out, "deadletter", "/deadletter", params, paging)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@deadletter_app.command("replay")
def deadletter_replay(
    ctx: typer.Context,
    code: Code,
    reason: Reason,
    dag_id: DagScope = None,
    version: VersionScope = None,
    from_utc: FromScope = None,
    to_utc: ToScope = None,
    onto: Annotated[
        str | None,
        typer.Option(
            "--onto",
            help="Replay onto this version (needs --dag-id; default: each run's version, "
            "the latest enabled when that one is disabled, e.g. after a rollback).",
        ),
    ] = None,
    resume: Resume = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be replayed; change nothing.")
    ] = False,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Replay the failed runs of a group in scope (new runs with replayOf; at most 500 per call)."""
    note = OperatorNote(reason, ticket)
    body: dict[str, Any] = {"reason": reason, "resume": resume, "dryRun": dry_run}
    body.update(scope_params(dag_id, version, from_utc, to_utc))
    if onto is not None:
        body["onto"] = onto

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        path = f"/deadletter/{segment(code)}:replay"
        result = await client.post(path, body, note.headers())
        if dry_run:
            out.result("replayplan", {"items": result.get("planned") or []})
            warn("dry run: nothing was replayed")
        else:
            out.result("run", result)
        if result.get("remaining"):
            warn(f"{result['remaining']} more runs in scope: repeat the command for the next ones")

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@deadletter_app.command("ack")
def deadletter_ack(
    ctx: typer.Context,
    code: Code,
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Acknowledge a group as handled: its failures so far leave `deadletter list` (admin)."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        out.result("ack", await client.post(f"/deadletter/{segment(code)}:ack", {}, note.headers()))

    run_ops(ctx, Remote(api_url, token, tenant, output), work)
