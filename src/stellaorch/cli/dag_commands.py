"""`stella orch dag …`: validate a file or render a Python DAG locally; list, show, publish,
disable, enable via API."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from stellaorch.cli import dags
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
    is_verbose,
    run_remote,
)
from stellaorch.cli.config import build_settings
from stellaorch.cli.errors import run_command
from stellaorch.cli.listing import Paging
from stellaorch.cli.render import OutputFormat, Printer

dag_app = group("Check DAG spec files; publish and manage DAG versions over the API.")

DagId = Annotated[str, typer.Option("--dag-id", help="The DAG.")]
Version = Annotated[str, typer.Option("--version", help="The DAG version.")]
Reason = Annotated[
    str, typer.Option("--reason", help="Why (X-Stella-Operator-Reason, audited; required).")
]
Ticket = Annotated[
    str | None, typer.Option("--ticket", help="Change ticket (X-Stella-Operator-Ticket).")
]


class TextOrJson(StrEnum):
    """How `dag validate` prints its result."""

    TEXT = "text"
    JSON = "json"


@dag_app.command("validate")
def dag_validate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A DAG spec file (.yaml, .yml or .json).")],
    output: Annotated[TextOrJson, typer.Option(help="Output format.")] = TextOrJson.TEXT,
) -> None:
    """Check a spec file; print dagId, version, specHash and order (exit 2 if invalid)."""
    work = dags.validate(file, as_json=output is TextOrJson.JSON)
    run_command(work, verbose=is_verbose(ctx))


@dag_app.command("render")
def dag_render(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="module:attribute naming a stellaorch.sdk Dag.", metavar="REF")
    ],
) -> None:
    """Print the YAML spec of a Python DAG, checked as `dag validate` checks a file (exit 2
    if invalid or REF names no Dag). The module is imported from the current directory or
    the Python path."""
    run_command(dags.render(target), verbose=is_verbose(ctx))


@dag_app.command("list")
def dag_list(
    ctx: typer.Context,
    dag_id: Annotated[str | None, typer.Option("--dag-id", help="Only this DAG.")] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--disabled", help="Only enabled, or only disabled, versions."),
    ] = None,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """DAG versions by dagId, newest version first."""
    paging = Paging(page_size, page_token, every_page)
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: dags.list_dags(client, out, dag_id, active, paging))


@dag_app.command("show")
def dag_show(
    ctx: typer.Context,
    dag_id: DagId,
    version: Version,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """One DAG version (JSON adds its spec)."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: dags.show_dag(client, out, dag_id, version))


@dag_app.command("sign")
def dag_sign(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", help="The DAG spec (.yaml, .yml or .json).")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key (PEM).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Envelope file (default: stdout).")
    ] = None,
) -> None:
    """Write the DSSE envelope that signs a spec (for `dag publish --signature`)."""
    run_command(dags.sign_file(file, key, out), verbose=is_verbose(ctx))


@dag_app.command("publish")
def dag_publish(
    ctx: typer.Context,
    reason: Reason,
    file: Annotated[
        Path | None, typer.Option("--file", help="The DAG spec (.yaml, .yml or .json).")
    ] = None,
    from_python: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="REF",
            help="A Python DAG instead of --file: module:attribute naming a stellaorch.sdk Dag.",
        ),
    ] = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="DSSE envelope signing the spec.")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Sign with this Ed25519 private key (default without --signature: the newest "
            "one in STELLA_ORCH_KEYS_DIR, if any).",
        ),
    ] = None,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Publish a DAG version from --file or --from (checked locally first; the same content
    again is a no-op)."""
    note = dags.OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: Printer) -> None:
        spec = dags.publish_spec(file, from_python)
        signer = None if signature else dags.local_signing_key(key, build_settings().keys_dir)
        await dags.publish(client, out, dags.publish_body(spec, signature, signer), note)

    run_remote(ctx, Remote(api_url, token, tenant, output), work)


def _toggle(
    ctx: typer.Context,
    remote: Remote,
    target: tuple[str, str],
    note: dags.OperatorNote,
    *,
    enabled: bool,
    cancel_queued: bool = False,
) -> None:
    """Enable or disable one version."""
    dag_id, version = target

    async def work(client: ApiClient, out: Printer) -> None:
        await dags.set_enabled(
            client, out, dag_id, version, enabled=enabled, note=note, cancel_queued=cancel_queued
        )

    run_remote(ctx, remote, work)


def _toggle_command(action: str, enabled: bool, summary: str) -> None:
    """Register `dag disable|enable --dag-id D --version V --reason R`."""

    def command(
        ctx: typer.Context,
        dag_id: DagId,
        version: Version,
        reason: Reason,
        ticket: Ticket = None,
        api_url: ApiUrl = None,
        token: Token = None,
        tenant: ClientTenant = None,
        output: Output = OutputFormat.TABLE,
    ) -> None:
        remote = Remote(api_url, token, tenant, output)
        note = dags.OperatorNote(reason, ticket)
        _toggle(ctx, remote, (dag_id, version), note, enabled=enabled)

    command.__doc__ = summary
    command.__name__ = f"dag_{action}"
    dag_app.command(action)(command)


_toggle_command("enable", True, "Enable a disabled version again.")


@dag_app.command("disable")
def dag_disable(
    ctx: typer.Context,
    dag_id: DagId,
    version: Version,
    reason: Reason,
    cancel_queued: Annotated[
        bool,
        typer.Option("--cancel-queued", help="Also cancel the version's queued runs (max 500)."),
    ] = False,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Disable a version: no new runs (running ones finish); its schedules pause, with why."""
    remote = Remote(api_url, token, tenant, output)
    note = dags.OperatorNote(reason, ticket)
    _toggle(ctx, remote, (dag_id, version), note, enabled=False, cancel_queued=cancel_queued)


@dag_app.command("rollback")
def dag_rollback(
    ctx: typer.Context,
    dag_id: DagId,
    to: Annotated[str, typer.Option("--to", help="The version to make the latest enabled one.")],
    reason: Reason,
    ticket: Ticket = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Disable the versions above --to and make it the latest enabled one (audited)."""
    note = dags.OperatorNote(reason, ticket)

    async def work(client: ApiClient, out: Printer) -> None:
        path = f"/dags/{quote(dag_id, safe='')}:rollback"
        out.one("dag", await client.post(path, {"to": to}, note.headers()))

    run_remote(ctx, Remote(api_url, token, tenant, output), work)
