"""`stella orch ledger …`: export a window of the ledger over the API, verify a file offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stellaorch.cli import ledger
from stellaorch.cli.common import (
    ApiUrl,
    ClientTenant,
    Output,
    Remote,
    Token,
    group,
    is_verbose,
    run_remote,
)
from stellaorch.cli.errors import run_command
from stellaorch.cli.render import OutputFormat, Printer

ledger_app = group("Export the run ledger for audits and verify exports offline.")


@ledger_app.command("export")
def ledger_export(
    ctx: typer.Context,
    from_utc: Annotated[
        str,
        typer.Option(
            "--from", help="Runs started at or after (RFC 3339, e.g. 2025-11-01T00:00:00Z)."
        ),
    ],
    to_utc: Annotated[str, typer.Option("--to", help="Runs started before (RFC 3339).")],
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="File to write (NDJSON + manifest line).")
    ],
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Stream the tenant's runs started in [from, to) to a file; print its manifest."""
    remote = Remote(api_url, token, tenant, output)
    window = (from_utc, to_utc)
    run_remote(ctx, remote, lambda client, printer: ledger.export(client, printer, window, out))


@ledger_app.command("verify")
def ledger_verify(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="An export written by `ledger export`."),
    ],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check an export offline: manifest, order, every hash chain (exit 1 if broken)."""
    run_command(ledger.verify(Printer(output), file), verbose=is_verbose(ctx))
