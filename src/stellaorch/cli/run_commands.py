"""`stella orch run …`: runs over the HTTP API (Typer wiring; the work is in runs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stellaorch.cli import runs
from stellaorch.cli.client import ApiClient
from stellaorch.cli.common import (
    AllPages,
    ApiUrl,
    ClientTenant,
    Output,
    PageSize,
    PageToken,
    Remote,
    RunId,
    Token,
    group,
    run_remote,
)
from stellaorch.cli.listing import Paging
from stellaorch.cli.ops_commands import OpsPrinter, run_ops
from stellaorch.cli.output import warn
from stellaorch.cli.render import OutputFormat
from stellaorch.cli.run_events import print_events
from stellaorch.cli.stream import print_stream, stream_params
from stellaorch.domain.status import RunStatus, StepStatus

run_app = group("Start, list, inspect, cancel, replay and follow runs over the API.")

DagId = Annotated[str, typer.Option("--dag-id", help="The DAG.")]
DagFilter = Annotated[str | None, typer.Option("--dag-id", help="Only runs of this DAG.")]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait", help="Follow the run to its end (exit 0 completed, 1 failed or cancelled)."
    ),
]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Idempotency-Key header (default: a fresh UUID; reuse one to repeat safely).",
    ),
]
ReplayVersion = Annotated[
    str | None,
    typer.Option(
        "--version",
        help="DAG version to replay onto (default: the original's; the latest enabled if "
        "that one is disabled, e.g. after a rollback).",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Resume from the failed step: keep the outputs of steps that succeeded and are "
        "unchanged in the target version (recorded step.reused); run the rest.",
    ),
]
_STATUSES = sorted({s.value for s in RunStatus} | {s.value for s in StepStatus})


@run_app.command("start")
def run_start(
    ctx: typer.Context,
    dag_id: DagId,
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="JSON file holding the inputs object.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="DAG version (default: latest enabled).")
    ] = None,
    run_token: Annotated[
        str | None, typer.Option(help="Run token: the same token and inputs give the same run.")
    ] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Start a run of a DAG version; print it (with --wait: its final state)."""
    job = runs.StartRun(dag_id, inputs, version, run_token, idempotency_key, wait)
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.start(client, out, job))


@run_app.command("list")
def run_list(
    ctx: typer.Context,
    dag_id: DagFilter = None,
    status: Annotated[str | None, typer.Option(help="queued, running, completed, …")] = None,
    from_utc: Annotated[
        str | None, typer.Option("--from", help="Created at or after (RFC 3339).")
    ] = None,
    to_utc: Annotated[str | None, typer.Option("--to", help="Created before (RFC 3339).")] = None,
    page_size: PageSize = None,
    page_token: PageToken = None,
    every_page: AllPages = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The tenant's runs, newest first."""
    query = runs.RunQuery(dag_id, status, from_utc, to_utc)
    paging = Paging(page_size, page_token, every_page)
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.list_runs(client, out, query, paging))


@run_app.command("show")
def run_show(
    ctx: typer.Context,
    run_id: RunId,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """One run with its steps (JSON adds inputs, outputs and attempts)."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.show(client, out, run_id))


@run_app.command("diff")
def run_diff(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The first run's id.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The run to compare it with.")],
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """What differs between two runs: DAG version, spec hash, inputs, plugins, steps."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.diff(client, out, run_a, run_b))


@run_app.command("cancel")
def run_cancel(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Cancel a run (exit 6 if it had already ended)."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.cancel(client, out, run_id, reason))


@run_app.command("replay")
def run_replay(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="Why the run is repeated (required).")],
    version: ReplayVersion = None,
    resume: Resume = False,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Start a new run with the same inputs (replayOf set), on the original's version or
    --version, from the start or --resume'd from the failed step."""
    job = runs.ReplayRun(run_id, reason, idempotency_key, wait, version, resume)
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.replay(client, out, job))


@run_app.command("steps")
def run_steps(
    ctx: typer.Context,
    run_id: RunId,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The run's step executions in DAG order (JSON adds attempts)."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: runs.steps(client, out, run_id))


@run_app.command("logs")
def run_logs(
    ctx: typer.Context,
    run_id: RunId,
    step_id: Annotated[
        str | None,
        typer.Option("--step-id", "--step", help="The step (default: every started step)."),
    ] = None,
    attempt: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="Only this attempt (default: all).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Print lines live until the attempt (default: latest) ends."
        ),
    ] = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """A step's log lines, attempt by attempt (secrets redacted); --follow streams them live."""
    remote = Remote(api_url, token, tenant, output)
    if step_id is None:
        if follow:
            raise typer.BadParameter("--follow needs --step-id: it follows one step's attempt")
        run_remote(ctx, remote, lambda client, out: runs.run_logs(client, out, run_id, attempt))
        return
    if follow:
        run_remote(
            ctx, remote, lambda client, out: runs.follow_logs(client, out, run_id, step_id, attempt)
        )
        return
    run_remote(ctx, remote, lambda client, out: runs.logs(client, out, run_id, step_id, attempt))


@run_app.command("events")
def run_events(
    ctx: typer.Context,
    run_id: RunId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries until the run ends.")
    ] = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The run's ledger entries in chain order (its history); --follow waits for new ones."""
    remote = Remote(api_url, token, tenant, output)
    run_remote(ctx, remote, lambda client, out: print_events(client, out, run_id, follow))


@run_app.command("stream")
def run_stream(
    ctx: typer.Context,
    dag_id: DagFilter = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only events with this status: {', '.join(_STATUSES)}.")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run.")] = None,
    after: Annotated[
        int | None, typer.Option(min=0, help="Resume: first replay stored events after this seq.")
    ] = None,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output",
            "-o",
            help="ndjson (default) or json: each message as received, one per line; "
            "table: one fixed-column line per event.",
        ),
    ] = OutputFormat.NDJSON,
) -> None:
    """Print the tenant's run events, one WebSocket message per line, until stopped."""
    params = stream_params(dag_id, status, run_id, after)
    remote = Remote(api_url, token, tenant)
    table = output is OutputFormat.TABLE
    run_remote(ctx, remote, lambda client, _out: print_stream(client.target, params, table=table))


@run_app.command("bulk-cancel")
def run_bulk_cancel(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Why, for each run's ledger (required).")],
    dag_id: DagFilter = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Only runs of this version (--dag-id).")
    ] = None,
    status: Annotated[str | None, typer.Option(help="queued or running (default: both).")] = None,
    from_utc: Annotated[
        str | None, typer.Option("--from", help="Created at or after (RFC 3339).")
    ] = None,
    to_utc: Annotated[str | None, typer.Option("--to", help="Created before (RFC 3339).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the runs it would cancel; change nothing.")
    ] = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: ClientTenant = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Cancel the queued/running runs matching the filter (at most 500 per call, oldest first)."""
    given = {"dagId": dag_id, "version": version, "status": status, "from": from_utc, "to": to_utc}
    body = {"reason": reason, "dryRun": dry_run, **{k: v for k, v in given.items() if v}}

    async def work(client: ApiClient, out: OpsPrinter) -> None:
        result = await client.post("/runs:cancel", body)
        out.result("cancelled", result)
        if dry_run:
            warn("dry run: nothing was cancelled")
        if result.get("remaining"):
            warn(f"{result['remaining']} more runs match: repeat the command for the next ones")

    run_ops(ctx, Remote(api_url, token, tenant, output), work)
