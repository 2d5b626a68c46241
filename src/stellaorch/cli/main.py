"""The `stella` command line: `stella orch …` service and local commands (Typer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from stellaorch.cli import dags, local
from stellaorch.cli.config import build_settings
from stellaorch.cli.errors import run_command
from stellaorch.cli.jsonlog import configure_logging
from stellaorch.cli.serve import ServeOptions, serve
from stellaorch.settings import Settings


def _group(help_text: str) -> typer.Typer:
    """A command group; errors are reported by `run_command`, never as Rich tracebacks."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)


app = _group("Stella command line.")
orch = _group("Stella Orchestrator: DAG runs with a hash-chained ledger.")
local_app = _group("Run and inspect runs in this process (embedded engine).")
dag_app = _group("Work with DAG spec files.")
db_app = _group("Manage the store's schema.")
app.add_typer(orch, name="orch")
orch.add_typer(local_app, name="local")
orch.add_typer(dag_app, name="dag")
orch.add_typer(db_app, name="db")


@dataclass
class CliState:
    """Options of the command groups that every command below them honours."""

    verbose: bool = False


class LogLevel(StrEnum):
    """Lowest level of log records `serve` writes."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class OutputFormat(StrEnum):
    """How `dag validate` prints its result."""

    TEXT = "text"
    JSON = "json"


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


def _remember_verbose(ctx: typer.Context, verbose: bool) -> None:
    """Keep -v from any group level; child contexts share the parent's object."""
    if ctx.obj is None:
        ctx.obj = CliState()
    ctx.obj.verbose = ctx.obj.verbose or verbose


def _verbose(ctx: typer.Context) -> bool:
    return isinstance(ctx.obj, CliState) and ctx.obj.verbose


def _run(
    ctx: typer.Context,
    command: Callable[[Settings], Awaitable[None]],
    db: str | None = None,
    tenant: str | None = None,
    concurrency: int | None = None,
) -> NoReturn:
    """Build the settings and run the command; every error leaves through `run_command`."""

    async def work() -> None:
        await command(build_settings(db=db, tenant=tenant, concurrency=concurrency))

    run_command(work(), verbose=_verbose(ctx))


@app.callback()
def stella(ctx: typer.Context, verbose: Verbose = False) -> None:
    """Stella command line."""
    _remember_verbose(ctx, verbose)


@orch.callback()
def orch_group(ctx: typer.Context, verbose: Verbose = False) -> None:
    """Stella Orchestrator: DAG runs with a hash-chained ledger."""
    _remember_verbose(ctx, verbose)


@orch.command("serve")
def serve_command(
    ctx: typer.Context,
    dags_dir: DagsDir = None,
    tenant: Tenant = None,
    db: Db = None,
    concurrency: Concurrency = None,
    run_samples: Annotated[
        bool,
        typer.Option(
            "--run-samples",
            help="Start one run of each loaded DAG, inputs from DAGS/inputs/<dagId>.json.",
        ),
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option(help="Lowest log level written to stderr.")
    ] = LogLevel.INFO,
) -> None:
    """Run the orchestrator (worker; scheduler later) on the store until SIGINT/SIGTERM."""
    configure_logging(log_level.value)
    options = ServeOptions(dags_dir, run_samples)
    _run(ctx, lambda settings: serve(settings, options), db, tenant, concurrency)


@local_app.command("run")
def local_run(
    ctx: typer.Context,
    dag_id: Annotated[str, typer.Option("--dag-id", help="The DAG to run.")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="JSON file holding the run's inputs object.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="DAG version (default: the latest enabled one).")
    ] = None,
    run_token: Annotated[
        str | None, typer.Option(help="Idempotency token: the same token returns the same run.")
    ] = None,
    tenant: Tenant = None,
    dags_dir: DagsDir = None,
    db: Db = None,
    concurrency: Concurrency = None,
) -> None:
    """Start a run, work it here until it ends, print it as JSON (exit 1 unless completed)."""
    job = local.LocalRun(dag_id, inputs, version, run_token, dags_dir)
    _run(ctx, lambda settings: local.run_locally(settings, job), db, tenant, concurrency)


@local_app.command("cancel")
def local_cancel(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
    tenant: Tenant = None,
    db: Db = None,
) -> None:
    """Cancel a run (exit 6 if it had already ended)."""
    _run(ctx, lambda settings: local.cancel_run(settings, run_id, reason), db, tenant)


@local_app.command("show")
def local_show(ctx: typer.Context, run_id: RunId, tenant: Tenant = None, db: Db = None) -> None:
    """Print a run with its steps and attempts as JSON."""
    _run(ctx, lambda settings: local.show_run(settings, run_id), db, tenant)


@local_app.command("verify")
def local_verify(ctx: typer.Context, run_id: RunId, tenant: Tenant = None, db: Db = None) -> None:
    """Verify a run's ledger hash chain and print the report (exit 1 if broken)."""
    _run(ctx, lambda settings: local.verify_run(settings, run_id), db, tenant)


@dag_app.command("validate")
def dag_validate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A DAG spec file (.yaml, .yml or .json).")],
    output: Annotated[OutputFormat, typer.Option(help="Output format.")] = OutputFormat.TEXT,
) -> None:
    """Check a spec file; print dagId, version, specHash and order (exit 2 if invalid)."""
    work = dags.validate(file, as_json=output is OutputFormat.JSON)
    run_command(work, verbose=_verbose(ctx))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, db: Db = None) -> None:
    """Create the store's schema or upgrade it to the latest migration."""
    _run(ctx, local.upgrade_database, db)


if __name__ == "__main__":
    app(prog_name="stella")
