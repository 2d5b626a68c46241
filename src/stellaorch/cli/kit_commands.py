"""`stella orch export …`: the signed offline kit of a window, and its offline verification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stellaorch.cli import kit
from stellaorch.cli.common import (
    ApiUrl,
    ClientTenant,
    Output,
    Remote,
    Token,
    is_verbose,
    run_remote,
)
from stellaorch.cli.errors import UsageInvalid, run_command
from stellaorch.cli.ledger_commands import KeyFiles, TrustDir
from stellaorch.cli.render import OutputFormat, Printer

export_app = typer.Typer(
    help="Export a window as a signed offline kit (ledger, audit, logs, metrics, spans).",
    invoke_without_command=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@export_app.callback()
def export_kit(
    ctx: typer.Context,
    from_utc: Annotated[
        str | None,
        typer.Option(
            "--from", help="Runs started at or after (RFC 3339, e.g. 2025-11-01T00:00:00Z)."
        ),
    ] = None,
    to_utc: Annotated[
        str | None, typer.Option("--to", help="Runs started before (RFC 3339).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="FILE.tgz to write, or a new (or empty) directory for its files."
        ),
    ] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """`stella orch export --from T --to T --out DIR|FILE.tgz`: download the window's kit."""
    if ctx.invoked_subcommand is not None:
        return
    if from_utc is None or to_utc is None or out is None:
        run_command(_missing(), verbose=is_verbose(ctx))
    assert from_utc is not None and to_utc is not None and out is not None
    remote = Remote(api_url, token, tenant, output)
    window = (from_utc, to_utc)
    run_remote(ctx, remote, lambda client, printer: kit.export(client, printer, window, out))


async def _missing() -> None:
    raise UsageInvalid("export needs --from, --to and --out (or: export verify PATH)")


@export_app.command("verify")
def export_verify(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, help="A kit written by `export`: a .tgz or a directory.")
    ],
    key: KeyFiles = None,
    trust_dir: TrustDir = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check a kit offline: signature, manifest, every file, chains, checkpoints (exit 1 if not)."""
    checks = kit.verify(Printer(output), path, key or [], trust_dir)
    run_command(checks, verbose=is_verbose(ctx))
