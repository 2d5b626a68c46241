"""`stella orch slo status|set`: the tenant's SLOs, their error-budget burn, its objectives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from stellaorch.cli.client import ApiClient
from stellaorch.cli.common import ApiUrl, ClientTenant, Output, Remote, Token, group
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.ops_commands import OpsPrinter, Reason, Ticket, run_ops, segment
from stellaorch.cli.render import OutputFormat

slo_app = group("Service level objectives: error-budget burn and the tenant's objectives.")

# Fixed column order (append only); burn figures are multiples of the allowed bad rate.
SLO_COLUMNS = (
    ("SLO", "id"),
    ("STATUS", "status"),
    ("OBJECTIVE", "objective"),
    ("THRESHOLD", "threshold"),
    ("BURN_1H", "burn.1h"),
    ("BURN_6H", "burn.6h"),
    ("BURN_28D", "burn.28d"),
    ("BUDGET_LEFT", "budgetRemaining"),
    ("SCOPE", "scope"),
)


class SloPrinter(OpsPrinter):
    """An OpsPrinter that knows the SLO columns."""

    columns: Mapping[str, Sequence[tuple[str, str]]] = {**OpsPrinter.columns, "slo": SLO_COLUMNS}


def run_slo(ctx: typer.Context, remote: Remote, command: Any) -> None:
    """`run_ops` printing SLO tables."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await command(client, SloPrinter(out.fmt))

    run_ops(ctx, remote, work)


@slo_app.command("status")
def slo_status(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Each SLO: objective, burn over 1 h, 6 h and 28 d, budget left; exit 1 if one is critical."""
    critical: list[str] = []

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        document = await client.get("/admin/slos")
        out.result("slo", document)
        critical.extend(s["id"] for s in document["items"] if s.get("status") == "critical")

    try:
        run_slo(ctx, Remote(api_url, token, tenant, output), work)
    except typer.Exit as done:
        if done.exit_code == 0 and critical:
            raise typer.Exit(1) from None
        raise


@slo_app.command("set")
def slo_set(
    ctx: typer.Context,
    slo_id: Annotated[str, typer.Argument(help="api-availability, run-duration, ...")],
    reason: Reason,
    objective: Annotated[
        float, typer.Option("--objective", help="The good fraction, 0.5 to 0.99999 (0.999).")
    ],
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="run-duration: seconds; backlog: queued steps."),
    ] = None,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set the tenant's own objective for one SLO (admin scope; audited)."""
    body: dict[str, Any] = {"objective": objective}
    if threshold is not None:
        body["threshold"] = threshold
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        path = f"/admin/slos/{segment(slo_id)}"
        out.result("slo", await client.put(path, body, note.headers()))

    run_slo(ctx, Remote(api_url, token, tenant, output), work)
