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
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.errors import run_command
from stellaorch.cli.ops_commands import Reason, Ticket
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


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    ctx: typer.Context,
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Have the server sign a checkpoint of the ledger heads now; print the tenant's newest."""
    remote = Remote(api_url, token, tenant, output)
    note = OperatorNote(reason, ticket)
    run_remote(ctx, remote, lambda client, printer: ledger.checkpoint(client, printer, note))


KeyFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        exists=True,
        dir_okay=False,
        help="The server's public key (PEM) checkpoints must be signed by; repeatable.",
    ),
]
TrustDir = Annotated[
    Path | None,
    typer.Option(
        "--trust-dir",
        file_okay=False,
        help="Trust store of keys checkpoints may be signed by (default: the local trust store).",
    ),
]


@ledger_app.command("verify")
def ledger_verify(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="An export written by `ledger export`."),
    ],
    key: KeyFiles = None,
    trust_dir: TrustDir = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check an export offline: manifest, order, every chain and checkpoint (exit 1 if broken)."""
    checks = ledger.verify(Printer(output), file, key or [], trust_dir)
    run_command(checks, verbose=is_verbose(ctx))
