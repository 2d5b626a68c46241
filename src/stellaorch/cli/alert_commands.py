"""`stella orch alert …`: webhook notification rules of the tenant and their delivery log."""

from __future__ import annotations

from enum import StrEnum
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
from stellaorch.cli.output import say, warn
from stellaorch.cli.render import OutputFormat

alert_app = group("Alert rules (webhooks on failed runs, dead-letter growth, backlog).")

RuleId = Annotated[str, typer.Option("--id", help="The rule's id (a-z 0-9 . _ -).")]


class Kind(StrEnum):
    """What a rule watches."""

    RUN_FAILED = "run.failed"
    DEADLETTER_GROWTH = "deadletter.growth"
    BACKLOG = "backlog"


def default_rule_id(kind: Kind, dag_id: str | None) -> str:
    """A rule id from its kind (and DAG): `run-failed-etl`, `backlog`."""
    name = kind.value.replace(".", "-") + (f"-{dag_id}" if dag_id else "")
    return name.lower()[:64]


@alert_app.command("list")
def alert_list(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's rules by id with their newest delivery (admin)."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        out.result("alert", await client.get("/alerts"))

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@alert_app.command("deliveries")
def alert_deliveries(
    ctx: typer.Context,
    rule_id: Annotated[str | None, typer.Option("--id", help="Only this rule's.")] = None,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The alert delivery log, newest first: status, attempts, HTTP status, last error."""
    paging = Paging(page_size, page_token, every_page)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        params = {"ruleId": rule_id}
        await print_pages(client, out, "delivery", "/alert-deliveries", params, paging)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@alert_app.command("set")
def alert_set(
    ctx: typer.Context,
    kind: Annotated[Kind, typer.Option("--kind", help="What to watch.")],
    url: Annotated[str, typer.Option("--url", help="Webhook to POST to (http or https).")],
    reason: Reason,
    rule_id: Annotated[
        str | None, typer.Option("--id", help="Rule id (default: from kind and DAG).")
    ] = None,
    dag_id: Annotated[
        str | None, typer.Option("--dag-id", help="run.failed: only this DAG's runs.")
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option(min=0, help="deadletter.growth, backlog: alert when the count exceeds it."),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window", min=60, help="Seconds counted (deadletter.growth); one alert per window."
        ),
    ] = None,
    secret: Annotated[
        str | None, typer.Option("--secret", help="Secret NAME whose value signs each payload.")
    ] = None,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create or replace a rule; it watches what happens from now on."""
    body: dict[str, Any] = {"kind": kind.value, "url": url}
    optional = {"dagId": dag_id, "threshold": threshold, "windowSeconds": window}
    optional["secretRef"] = secret
    body.update({k: v for k, v in optional.items() if v is not None})
    path = f"/alerts/{segment(rule_id or default_rule_id(kind, dag_id))}"
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        view = await client.put(path, body, note.headers())
        out.one("alert", view)
        if secret is None and out.fmt is OutputFormat.TABLE:
            warn("no --secret: payloads are sent unsigned")

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@alert_app.command("delete")
def alert_delete(
    ctx: typer.Context,
    rule_id: RuleId,
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Delete a rule: it never fires again; its delivery log stays."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await client.delete(f"/alerts/{segment(rule_id)}", note.headers())
        if out.fmt is OutputFormat.TABLE:
            say(f"deleted alert rule {rule_id}")
        else:
            out.one("alert", {"ruleId": rule_id, "deleted": True})

    run_ops(ctx, Remote(api_url, token, tenant, output), work)
