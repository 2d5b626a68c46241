"""What every command module shares: groups, -v, common options and how a command is run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stellaorch.cli.client import ApiClient, ApiTarget
from stellaorch.cli.config import build_settings
from stellaorch.cli.errors import run_command
from stellaorch.cli.render import OutputFormat, Printer
from stellaorch.settings import Settings


def group(help_text: str) -> typer.Typer:
    """A command group; errors are reported by `run_command`, never as Rich tracebacks."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)


@dataclass
class CliState:
    """Options of the command groups that every command below them honours."""

    verbose: bool = False


def remember_verbose(ctx: typer.Context, verbose: bool) -> None:
    """Keep -v from any group level; child contexts share the parent's object."""
    if ctx.obj is None:
        ctx.obj = CliState()
    ctx.obj.verbose = ctx.obj.verbose or verbose


def is_verbose(ctx: typer.Context) -> bool:
    """Whether -v was given at any level above the command."""
    return isinstance(ctx.obj, CliState) and ctx.obj.verbose


# --- options of the local and service commands ------------------------------------------------
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")]
Tenant = Annotated[
    str | None,
    typer.Option(help="Tenant to act for (default: STELLA_ORCH_DEFAULT_TENANT or 'default')."),
]
Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: STELLA_ORCH_DATABASE_URL or sqlite:///.stella/orchestrator.db).",
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option(min=1, help="Worker concurrency (default: STELLA_ORCH_WORKER_CONCURRENCY or 64)."),
]
WorkerTenants = Annotated[
    str | None,
    typer.Option(
        "--tenants",
        help="Serve only these tenants, comma-separated (default: STELLA_ORCH_WORKER_TENANTS, "
        "empty: every tenant).",
    ),
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve this process's Prometheus /metrics on this port (admin token; "
        "default: STELLA_ORCH_METRICS_PORT, unset: none).",
    ),
]
DagsDir = Annotated[
    Path | None,
    typer.Option(
        "--dags",
        exists=True,
        file_okay=False,
        help="Publish every spec file directly inside this directory first.",
    ),
]
RunId = Annotated[str, typer.Option("--run-id", help="The run's id.")]

# --- options of the client commands (over HTTP) -------------------------------------------------
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="STELLA_API_URL",
        help="API base URL (default: http://127.0.0.1:<STELLA_ORCH_API_PORT or 8440>).",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="STELLA_TOKEN",
        help="Bearer token (prefer STELLA_TOKEN: flags are visible to other local users).",
    ),
]
ClientTenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="STELLA_TENANT",
        help="Tenant to act for (default: STELLA_ORCH_DEFAULT_TENANT or 'default').",
    ),
]
Output = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="json, ndjson or table (fixed columns).")
]

PageSize = Annotated[
    int | None, typer.Option("--page-size", min=1, max=500, help="Items per page (server: 50).")
]
PageToken = Annotated[
    str | None, typer.Option("--page-token", help="Continue from a previous nextPageToken.")
]
AllPages = Annotated[bool, typer.Option("--all", help="Follow nextPageToken to the last page.")]


def run_local(
    ctx: typer.Context,
    command: Callable[[Settings], Awaitable[None]],
    **flags: Any,
) -> NoReturn:
    """Build the settings from the flags and run the command; errors leave via run_command."""

    async def work() -> None:
        await command(build_settings(**flags))

    run_command(work(), verbose=is_verbose(ctx))


@dataclass(frozen=True)
class Remote:
    """The connection flags of a client command."""

    api_url: str | None
    token: str | None
    tenant: str | None
    output: OutputFormat = OutputFormat.TABLE

    def target(self) -> ApiTarget:
        """The API target; settings fill in what the flags and STELLA_* variables left out."""
        url, tenant = self.api_url, self.tenant
        if url is None or tenant is None:
            settings = build_settings()
            url = url or f"http://127.0.0.1:{settings.api_port}"
            tenant = tenant or settings.default_tenant
        return ApiTarget(url, self.token or None, tenant)


RemoteCommand = Callable[[ApiClient, Printer], Awaitable[None]]


def run_remote(ctx: typer.Context, remote: Remote, command: RemoteCommand) -> NoReturn:
    """Run a client command against the API; errors leave via run_command."""

    async def work() -> None:
        async with ApiClient(remote.target()) as client:
            await command(client, Printer(remote.output))

    run_command(work(), verbose=is_verbose(ctx))
