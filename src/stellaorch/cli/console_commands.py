"""`stella orch console url`: a one-time sign-in link to the web console."""

from __future__ import annotations

import typer

from stellaorch.cli.client import BASE_PATH, ApiClient
from stellaorch.cli.common import ApiUrl, ClientTenant, Remote, Token, group, run_remote
from stellaorch.cli.output import say, warn
from stellaorch.cli.render import OutputFormat, Printer

console_app = group("The web console served by the API at /console/.")


def console_root(api_url: str) -> str:
    """The server's origin from an --api-url given with or without the API's base path."""
    return api_url.rstrip("/").removesuffix(BASE_PATH)


@console_app.command("url")
def console_url(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
) -> None:
    """Print a one-time console sign-in link for this token and tenant (valid 5 minutes)."""

    async def work(client: ApiClient, _: Printer) -> None:
        minted = await client.post("/console/links", None)
        say(console_root(client.target.url) + str(minted["path"]))
        warn(f"single use; expires {minted['expiresUtc']}")

    run_remote(ctx, Remote(api_url, token, tenant, OutputFormat.TABLE), work)
