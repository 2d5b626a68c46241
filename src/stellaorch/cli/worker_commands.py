"""`stella orch worker list`: the live worker processes of the store, over the API;
`stella orch worker run module:worker`: an SDK worker process.

`stella orch worker` itself (no subcommand) runs a worker process; see main.py.
"""

from __future__ import annotations

from typing import Annotated

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
)
from stellaorch.cli.errors import run_command
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.ops_commands import OpsPrinter, run_ops
from stellaorch.cli.pyref import load_object
from stellaorch.cli.render import OutputFormat
from stellaorch.domain.errors import UsageInvalid
from stellaorch.sdk import Worker as SdkWorker

# Without a subcommand the group's callback runs the worker process itself.
worker_app = typer.Typer(
    help="Run a worker process (no subcommand), or list the live workers.",
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
)


@worker_app.command("list")
def worker_list(
    ctx: typer.Context,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Live workers (heard from within the TTL): id, host, pid, version, slots, tenants.

    A token for every tenant ("*") sees every worker; another token sees the workers that
    serve its tenant.
    """
    paging = Paging(page_size, page_token, every_page)

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        await print_pages(client, out, "worker", "/workers", {}, paging)

    run_ops(ctx, Remote(api_url, token, tenant, output), work)


@worker_app.command("run")
def worker_run(
    target: Annotated[str, typer.Argument(help="module:attribute naming a stellaorch.sdk Worker.")],
) -> None:
    """Run an SDK worker (`module:worker`) until SIGTERM/SIGINT; it talks to the API only.

    The module is imported from the current directory or the Python path; URL, token and
    tenant come from the Worker's arguments or STELLA_API_URL, STELLA_TOKEN, STELLA_TENANT.
    """

    async def work() -> None:
        await load_sdk_worker(target).serve(handle_signals=True)

    run_command(work(), verbose=False)


def load_sdk_worker(target: str) -> SdkWorker:
    """The Worker that `module:attribute` names; UsageInvalid when it names none."""
    worker = load_object(target)
    if not isinstance(worker, SdkWorker):
        raise UsageInvalid(f"{target!r} is not a stellaorch.sdk.Worker")
    return worker
