"""`stella orch secret put|list|delete`, `admin warm` over the API; `keys rotate-secrets-key`.

A value is read from a file or stdin, never from the command line (where `ps` and the shell
history would keep it); one trailing newline (`echo` adds it) is dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from stellaorch.cli.client import ApiClient
from stellaorch.cli.common import ApiUrl, ClientTenant, Output, Remote, Token, group
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.errors import UsageInvalid
from stellaorch.cli.ops_commands import OpsPrinter, Reason, Ticket, run_ops, segment
from stellaorch.cli.render import OutputFormat
from stellaorch.settings import Settings

secret_app = group("Secrets of the tenant: write-only values, versioned, audited.")
admin_app = group("Process-wide operations: warm the workers' caches.")

SECRET_COLUMNS = (
    ("NAME", "name"),
    ("VERSION", "currentVersion"),
    ("UPDATED", "updatedUtc"),
    ("UPDATED_BY", "updatedBy"),
)
WARM_COLUMNS = (("WORKER", "worker"), ("WARMED", "warmed"))
DELETED_COLUMNS = (("NAME", "name"), ("DELETED", "deleted"))


class SecretPrinter(OpsPrinter):
    """An OpsPrinter that also knows the secret and warm columns."""

    columns: Mapping[str, Sequence[tuple[str, str]]] = {
        **OpsPrinter.columns,
        "secret": SECRET_COLUMNS,
        "warm": WARM_COLUMNS,
        "deleted": DELETED_COLUMNS,
    }


FromFile = Annotated[
    Path | None, typer.Option("--from-file", help="Read the value from this file.")
]
FromStdin = Annotated[bool, typer.Option("--from-stdin", help="Read the value from stdin.")]


def read_value(from_file: Path | None, from_stdin: bool) -> str:
    """The value from exactly one source, without one trailing newline; UTF-8 text."""
    if (from_file is None) == (not from_stdin):
        raise UsageInvalid("give exactly one of --from-file FILE or --from-stdin")
    data = from_file.read_bytes() if from_file is not None else sys.stdin.buffer.read()
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageInvalid("the secret value must be UTF-8 text") from None


def _remote(
    api_url: str | None, token: str | None, tenant: str | None, output: OutputFormat
) -> Remote:
    return Remote(api_url, token, tenant, output)


@secret_app.command("put")
def secret_put(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The secret's name: [A-Za-z0-9_.-]{1,128}.")],
    reason: Reason,
    from_file: FromFile = None,
    from_stdin: FromStdin = False,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Store a new version of a secret; the next attempt that references it uses it."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        body = {"value": read_value(from_file, from_stdin), "reason": reason}
        answer = await client.put(f"/secrets/{segment(name)}", body, note.headers())
        SecretPrinter(out.fmt).one("secret", answer)

    run_ops(ctx, _remote(api_url, token, tenant, output), work)


@secret_app.command("list")
def secret_list(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's secrets: name, current version, when and by whom it was set (no values)."""

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        SecretPrinter(out.fmt).listing("secret", await client.get("/secrets"))

    run_ops(ctx, _remote(api_url, token, tenant, output), work)


@secret_app.command("delete")
def secret_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The secret to delete (every version).")],
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Delete every version of a secret; attempts already running keep their value."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await client.delete(f"/secrets/{segment(name)}", note.headers())
        SecretPrinter(out.fmt).one("deleted", {"name": name, "deleted": True})

    run_ops(ctx, _remote(api_url, token, tenant, output), work)


@admin_app.command("warm")
def admin_warm(
    ctx: typer.Context,
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Make every worker refresh its caches (secrets, bundles); prints what each warmed."""
    note = OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        answer: dict[str, Any] = await client.post("/admin/warm", {}, note.headers())
        SecretPrinter(out.fmt).listing("warm", {**answer, "items": answer.get("workers", [])})

    run_ops(ctx, _remote(api_url, token, tenant, output), work)


async def rotate_key(settings: Settings) -> None:
    """Re-seal every stored secret under a new key-encryption key; print the report."""
    from stellaorch.cli.output import print_json
    from stellaorch.engine.app import Orchestrator
    from stellaorch.engine.secret_rotation import rotate_secrets_key

    orch = Orchestrator.open(settings)
    try:
        print_json((await rotate_secrets_key(orch.env)).document())
    finally:
        await orch.close()
