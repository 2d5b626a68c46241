"""`stella orch bundle build|sign|verify|import|list` and `keys trust add|list|remove`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stellaorch.cli import bundles
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
    run_local,
    run_remote,
)
from stellaorch.cli.config import build_settings
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.listing import Paging
from stellaorch.cli.render import OutputFormat, Printer

bundle_app = group("Build, sign and verify plugin bundles; import them over the API.")
trust_app = group("The trust store: public keys that may sign bundles and DAG versions.")

BundleFile = Annotated[Path, typer.Argument(help="A NAME-VERSION.stella.bundle.tgz file.")]
KeysDir = Annotated[
    Path | None,
    typer.Option("--dir", help="Key directory (default: STELLA_ORCH_KEYS_DIR or .stella/keys)."),
]
TrustDir = Annotated[
    Path | None,
    typer.Option(
        "--trust-dir",
        help="Trust store (default: STELLA_ORCH_TRUST_DIR or the key directory's trust/).",
    ),
]


@bundle_app.command("build")
def bundle_build(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="The bundle's files (+ stella-bundle.yaml).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Archive to write (default: NAME-VERSION…tgz).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Bundle name (overrides the file).")] = None,
    version: Annotated[str | None, typer.Option(help="Bundle version.")] = None,
    plugin_type: Annotated[str | None, typer.Option(help="script or cli.")] = None,
    entrypoint: Annotated[str | None, typer.Option(help="Relative path of what runs.")] = None,
) -> None:
    """Build a byte-for-byte reproducible, unsigned bundle archive; print its summary."""
    overrides = {"name": name, "version": version, "plugin_type": plugin_type,
                 "entrypoint": entrypoint}  # fmt: skip
    run_local(ctx, lambda s: bundles.build(s, directory, out, overrides))


@bundle_app.command("sign")
def bundle_sign(
    ctx: typer.Context,
    file: BundleFile,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key (PEM).")],
) -> None:
    """Add a DSSE (Ed25519) signature over the manifest; the file is rewritten in place."""
    run_local(ctx, lambda s: bundles.sign(s, file, key))


@bundle_app.command("verify")
def bundle_verify(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="A bundle file to check locally.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Have the server re-verify every imported bundle.")
    ] = False,
    trust_dir: TrustDir = None,
    keys_dir: KeysDir = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check entries, rootHash and signature; exit 2 tampered, 3 untrusted key, 4 missing."""
    if every == (file is not None):
        raise typer.BadParameter("give either a FILE or --all")
    if file is None:
        run_remote(ctx, Remote(api_url, token, tenant, output), bundles.verify_all)
    flags = {"trust_dir": trust_dir, "keys_dir": keys_dir}
    run_local(ctx, lambda s: bundles.verify_file(s, file), **flags)


@bundle_app.command("import")
def bundle_import(
    ctx: typer.Context,
    file: BundleFile,
    reason: Annotated[str, typer.Option("--reason", help="Why (audited; required).")],
    ticket: Annotated[str | None, typer.Option("--ticket", help="Change ticket.")] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Import a signed bundle for the tenant (the server verifies it against its trust store)."""
    note, settings = OperatorNote(reason, ticket), build_settings()

    async def work(client: ApiClient, out: Printer) -> None:
        await bundles.import_file(client, out, settings, file, note)

    run_remote(ctx, Remote(api_url, token, tenant, output), work)


@bundle_app.command("list")
def bundle_list(
    ctx: typer.Context,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's imported bundles by name, then version."""
    paging = Paging(page_size, page_token, every_page)
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: bundles.list_bundles(client, out, paging))


@trust_app.command("add")
def trust_add(
    ctx: typer.Context,
    key: Annotated[Path, typer.Argument(help="PEM file: an Ed25519 public (or private) key.")],
    trust_dir: TrustDir = None,
    keys_dir: KeysDir = None,
) -> None:
    """Trust a key (only its public half is stored); print its key id."""
    flags = {"trust_dir": trust_dir, "keys_dir": keys_dir}
    run_local(ctx, lambda s: bundles.trust_add(s, key), **flags)


@trust_app.command("list")
def trust_list(
    ctx: typer.Context,
    trust_dir: TrustDir = None,
    keys_dir: KeysDir = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The trusted keys, by key id."""
    flags = {"trust_dir": trust_dir, "keys_dir": keys_dir}
    run_local(ctx, lambda s: bundles.trust_list(s, Printer(output)), **flags)


@trust_app.command("remove")
def trust_remove(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id (16 hex digits) to revoke.")],
    trust_dir: TrustDir = None,
    keys_dir: KeysDir = None,
) -> None:
    """Revoke a key: bundles and DAG versions it signed stop verifying and loading."""
    flags = {"trust_dir": trust_dir, "keys_dir": keys_dir}
    run_local(ctx, lambda s: bundles.trust_remove(s, key_id), **flags)
