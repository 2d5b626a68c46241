"""The `stella` command line: `stella orch …` service, client and local commands (Typer).

Service, key and local commands import the engine, uvicorn and the crypto stack inside their
functions: client commands never need them and start in a third of the time without them.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stellaorch.cli.alert_commands import alert_app
from stellaorch.cli.bundle_commands import bundle_app, trust_app
from stellaorch.cli.common import (
    Concurrency,
    DagsDir,
    Db,
    MetricsPort,
    RunId,
    Tenant,
    Verbose,
    WorkerTenants,
    group,
    remember_verbose,
    run_local,
)
from stellaorch.cli.console_commands import console_app
from stellaorch.cli.dag_commands import dag_app
from stellaorch.cli.deadletter_commands import deadletter_app
from stellaorch.cli.kit_commands import export_app
from stellaorch.cli.ledger_commands import ledger_app
from stellaorch.cli.ops_commands import audit_app, quota_app
from stellaorch.cli.queue_commands import queue_app
from stellaorch.cli.render import OutputFormat
from stellaorch.cli.run_commands import run_app
from stellaorch.cli.schedule_commands import schedule_app
from stellaorch.cli.secret_commands import admin_app, secret_app
from stellaorch.cli.slo_commands import slo_app
from stellaorch.cli.worker_commands import worker_app
from stellaorch.observability.logs import LogLevel, configure_logging

app = group("Stella command line.")
orch = group("Stella Orchestrator: DAG runs with a hash-chained ledger.")
local_app = group("Run and inspect runs in this process (embedded engine).")
db_app = group("Manage the store's schema and check its integrity.")
keys_app = group("Local signing keys for development and air-gapped tokens.")
token_app = group("Bearer tokens signed with a local key.")
app.add_typer(orch, name="orch")
keys_app.add_typer(trust_app, name="trust")
for name, sub in (
    ("run", run_app),
    ("dag", dag_app),
    ("bundle", bundle_app),
    ("ledger", ledger_app),
    ("export", export_app),
    ("schedule", schedule_app),
    ("queue", queue_app),
    ("quota", quota_app),
    ("deadletter", deadletter_app),
    ("audit", audit_app),
    ("secret", secret_app),
    ("alert", alert_app),
    ("admin", admin_app),
    ("local", local_app),
    ("db", db_app),
    ("keys", keys_app),
    ("token", token_app),
    ("worker", worker_app),
    ("console", console_app),
    ("slo", slo_app),
):
    orch.add_typer(sub, name=name)

Host = Annotated[
    str | None,
    typer.Option(help="API listen address (default: STELLA_ORCH_API_HOST or 127.0.0.1)."),
]
Port = Annotated[int | None, typer.Option(help="API port (default: STELLA_ORCH_API_PORT or 8440).")]
InsecureDev = Annotated[
    bool,
    typer.Option("--insecure-dev", help="Check no tokens (development only; warns loudly)."),
]
LogLevelOption = Annotated[LogLevel, typer.Option(help="Lowest log level written to stderr.")]
KeysDir = Annotated[
    Path | None,
    typer.Option("--dir", help="Key directory (default: STELLA_ORCH_KEYS_DIR or .stella/keys)."),
]


@app.callback()
def stella(ctx: typer.Context, verbose: Verbose = False) -> None:
    """Stella command line."""
    remember_verbose(ctx, verbose)


@orch.callback()
def orch_group(ctx: typer.Context, verbose: Verbose = False) -> None:
    """Stella Orchestrator: DAG runs with a hash-chained ledger."""
    remember_verbose(ctx, verbose)


# --- service commands ------------------------------------------------------------------------
def tune_gc_for_service() -> None:
    """Collect garbage less often in long-running services.

    Startup objects (modules, the app) are frozen out of collection, and the young generation
    is allowed to grow: per-request garbage is short-lived, and frequent full collections
    showed up as latency spikes under load.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _service(
    ctx: typer.Context,
    role: str,
    log_level: LogLevel,
    flags: dict[str, Any],
    dags_dir: Path | None = None,
    run_samples: bool = False,
) -> NoReturn:
    """Run one of the service roles with JSON logs on stderr."""
    from stellaorch.cli.serve import Role, ServeOptions, serve

    configure_logging(log_level.value)
    tune_gc_for_service()
    options = ServeOptions(dags_dir, run_samples, Role(role))
    run_local(ctx, lambda settings: serve(settings, options), **flags)


@orch.command("serve")
def serve_command(
    ctx: typer.Context,
    dags_dir: DagsDir = None,
    tenant: Tenant = None,
    db: Db = None,
    concurrency: Concurrency = None,
    host: Host = None,
    port: Port = None,
    insecure_dev: InsecureDev = False,
    run_samples: Annotated[
        bool,
        typer.Option(
            "--run-samples",
            help="Start one run of each loaded DAG, inputs from DAGS/inputs/<dagId>.json.",
        ),
    ] = False,
    log_level: LogLevelOption = LogLevel.INFO,
) -> None:
    """Run the API, a worker and the scheduler in one process until SIGINT/SIGTERM."""
    flags = {"db": db, "tenant": tenant, "concurrency": concurrency, "host": host, "port": port}
    flags["insecure_dev"] = insecure_dev or None  # absent flag: keep STELLA_ORCH_INSECURE_DEV
    _service(ctx, "serve", log_level, flags, dags_dir, run_samples)


@orch.command("api")
def api_command(
    ctx: typer.Context,
    db: Db = None,
    host: Host = None,
    port: Port = None,
    insecure_dev: InsecureDev = False,
    log_level: LogLevelOption = LogLevel.INFO,
) -> None:
    """Serve the HTTP API only (runs are executed by `stella orch worker` on the same store)."""
    flags = {"db": db, "host": host, "port": port, "insecure_dev": insecure_dev or None}
    _service(ctx, "api", log_level, flags)


@worker_app.callback()
def worker_command(
    ctx: typer.Context,
    db: Db = None,
    concurrency: Concurrency = None,
    tenants: WorkerTenants = None,
    metrics_port: MetricsPort = None,
    log_level: LogLevelOption = LogLevel.INFO,
) -> None:
    """Execute queued steps from the store until SIGINT/SIGTERM (no API); `list`: live workers."""
    if ctx.invoked_subcommand is not None:
        return  # `worker list`: a client command, this process runs no worker
    flags = {"db": db, "concurrency": concurrency, "tenants": tenants, "metrics_port": metrics_port}
    _service(ctx, "worker", log_level, flags)


@orch.command("scheduler")
def scheduler_command(
    ctx: typer.Context,
    db: Db = None,
    metrics_port: MetricsPort = None,
    log_level: LogLevelOption = LogLevel.INFO,
) -> None:
    """Fire cron triggers while holding the leader lease; other schedulers stand by."""
    _service(ctx, "scheduler", log_level, {"db": db, "metrics_port": metrics_port})


# --- keys and tokens -----------------------------------------------------------------------------
@keys_app.command("generate")
def keys_generate(ctx: typer.Context, keys_dir: KeysDir = None) -> None:
    """Create an Ed25519 signing key, add it to the directory's JWKS, print its kid."""
    from stellaorch.cli import credentials

    run_local(ctx, credentials.generate, keys_dir=keys_dir)


@keys_app.command("rotate-secrets-key")
def keys_rotate_secrets_key(ctx: typer.Context, keys_dir: KeysDir = None, db: Db = None) -> None:
    """Re-seal every stored secret under a new key-encryption key (the old one is retired).

    Uses STELLA_ORCH_SECRETS_KEY_FILE (default: secrets.kek in the keys directory).
    """
    from stellaorch.cli import secret_commands

    run_local(ctx, secret_commands.rotate_key, keys_dir=keys_dir, db=db)


@token_app.command("issue")
def token_issue(
    ctx: typer.Context,
    tenant: Annotated[
        list[str],
        typer.Option("--tenant", help="Tenant the token may act for (repeatable; * = all)."),
    ],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="orchestrator:read, :write, :admin or :metrics (repeatable; admin implies "
            "write, read and metrics; metrics only reads /metrics, for Prometheus).",
        ),
    ],
    subject: Annotated[
        str | None, typer.Option(help="The token's subject (default: the local user name).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 90s, 30m, 12h, 7d.")] = "1h",
    keys_dir: KeysDir = None,
) -> None:
    """Sign a token with the newest local key; prints only the token."""
    from stellaorch.cli import credentials

    grant = credentials.TokenGrant(tenant, scope, subject, ttl)
    run_local(ctx, lambda s: credentials.issue(s, grant), keys_dir=keys_dir)


# --- local (embedded) commands -------------------------------------------------------------------
# JSON by default here (scripts read these); table prints the run and its steps as `run show`.
LocalOutput = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="json (default), ndjson or table.")
]


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
    output: LocalOutput = OutputFormat.JSON,
) -> None:
    """Start a run, work it here until it ends, print it (exit 1 unless completed)."""
    from stellaorch.cli import local

    job = local.LocalRun(dag_id, inputs, version, run_token, dags_dir, output)
    flags = {"db": db, "tenant": tenant, "concurrency": concurrency}
    run_local(ctx, lambda s: local.run_locally(s, job), **flags)


@local_app.command("cancel")
def local_cancel(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
    tenant: Tenant = None,
    db: Db = None,
) -> None:
    """Cancel a run (exit 6 if it had already ended)."""
    from stellaorch.cli import local

    run_local(ctx, lambda s: local.cancel_run(s, run_id, reason), db=db, tenant=tenant)


@local_app.command("show")
def local_show(
    ctx: typer.Context,
    run_id: RunId,
    tenant: Tenant = None,
    db: Db = None,
    output: LocalOutput = OutputFormat.JSON,
) -> None:
    """Print a run with its steps and attempts (JSON by default)."""
    from stellaorch.cli import local

    run_local(ctx, lambda s: local.show_run(s, run_id, output), db=db, tenant=tenant)


@local_app.command("verify")
def local_verify(ctx: typer.Context, run_id: RunId, tenant: Tenant = None, db: Db = None) -> None:
    """Verify a run's ledger hash chain and print the report (exit 1 if broken)."""
    from stellaorch.cli import local

    run_local(ctx, lambda s: local.verify_run(s, run_id), db=db, tenant=tenant)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, db: Db = None) -> None:
    """Create the store's schema or upgrade it to the latest migration."""
    from stellaorch.cli import local

    run_local(ctx, local.upgrade_database, db=db)


@db_app.command("check")
def db_check(
    ctx: typer.Context,
    db: Db = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="SQLite's quick_check instead of the full integrity_check."),
    ] = False,
) -> None:
    """Check the store's integrity without changing it; print the report.

    Exit 0: sound; 1: damaged, or not a Stella store; 4: no store file; 10: cannot be read now.
    """
    from stellaorch.cli import local

    run_local(ctx, lambda s: local.check_database(s, "quick" if quick else "full"), db=db)


if __name__ == "__main__":
    app(prog_name="stella")
