"""`stella orch local …` and `db upgrade|check`: run and inspect runs on the embedded engine."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stellaorch.cli.errors import CancelRejected, LedgerBroken
from stellaorch.cli.follow import require_completed
from stellaorch.cli.inputs import read_inputs
from stellaorch.cli.output import print_json, say, stderr_is_terminal
from stellaorch.cli.progress import RunProgress
from stellaorch.cli.render import OutputFormat, Printer
from stellaorch.domain.ledger import ChainReport
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.health import check_store, corrupt_error, display_url, usable_url
from stellaorch.engine.requests import RunRequest
from stellaorch.service.embedded import WorkerHandle, opened
from stellaorch.settings import Settings


@dataclass(frozen=True)
class LocalRun:
    """What `local run` was asked to do."""

    dag_id: str
    inputs_file: Path | None = None
    version: str | None = None
    run_token: str | None = None
    dags_dir: Path | None = None
    output: OutputFormat = OutputFormat.JSON


async def run_locally(settings: Settings, job: LocalRun) -> None:
    """Start a run, work it to the end in this process, print it; fail unless it completed."""
    inputs = read_inputs(job.inputs_file) if job.inputs_file else {}
    tenant = settings.default_tenant
    request = RunRequest(tenant, job.dag_id, inputs, run_token=job.run_token, version=job.version)
    async with opened(settings) as orchestrator:
        if job.dags_dir is not None:
            await orchestrator.load_dags(job.dags_dir)
        view = await _run_to_end(orchestrator, request)
    Printer(job.output).run_with_steps(view)
    require_completed(view)


async def _run_to_end(orchestrator: Orchestrator, request: RunRequest) -> dict[str, Any]:
    """Create the run and work it with an in-process worker until it ends."""
    progress = RunProgress(orchestrator.env.bus) if stderr_is_terminal() else None
    with progress or nullcontext():
        created = await orchestrator.runs.create(request)
        run_id = created.run.run_id
        if progress is not None:
            view = await orchestrator.runs.get(request.tenant, run_id)
            progress.track(run_id, request.dag_id, len(view["steps"]))
        worker = WorkerHandle(orchestrator)
        try:
            await worker.watch(orchestrator.runs.wait(request.tenant, run_id))
        finally:
            await worker.stop()
    return await orchestrator.runs.get(request.tenant, run_id)


async def cancel_run(settings: Settings, run_id: str, reason: str | None) -> None:
    """Cancel a run and print it with `cancelRejected`; a finished run is rejected (exit 6)."""
    tenant = settings.default_tenant
    async with opened(settings) as orchestrator:
        result = await orchestrator.runs.cancel(tenant, run_id, reason)
        view = await orchestrator.runs.get(tenant, run_id)
    view["cancelRejected"] = result.rejected
    print_json(view)
    if result.rejected:
        raise CancelRejected(f"run {run_id} had already ended ({view['status']}); not cancelled")


async def show_run(
    settings: Settings, run_id: str, output: OutputFormat = OutputFormat.JSON
) -> None:
    """Print a run with its steps and attempts (JSON), or as the run and step tables."""
    async with opened(settings) as orchestrator:
        view = await orchestrator.runs.get(settings.default_tenant, run_id)
    Printer(output).run_with_steps(view)


async def verify_run(settings: Settings, run_id: str) -> None:
    """Verify a run (chain, rows, stored content) and print the report; a problem is an error."""
    async with opened(settings) as orchestrator:
        report = await orchestrator.runs.verify(settings.default_tenant, run_id)
    print_json(chain_report_json(report))
    if report.ok:
        return
    if report.check == "chain":
        raise LedgerBroken(
            f"ledger of run {run_id} is broken at entry {report.broken_seq}: {report.reason}"
        )
    raise LedgerBroken(f"run {run_id} does not match its ledger ({report.check}): {report.reason}")


def chain_report_json(report: ChainReport) -> dict[str, Any]:
    """The report with the product's camelCase field names."""
    return {
        "runId": report.run_id,
        "ok": report.ok,
        "count": report.count,
        "head": report.head,
        "brokenSeq": report.broken_seq,
        "reason": report.reason,
        "check": report.check,
    }


async def upgrade_database(settings: Settings) -> None:
    """Create or upgrade the schema (opening the engine applies every migration)."""
    async with opened(settings):
        pass
    say(f"database ready at the latest schema: {display_url(settings.database_url)}")


async def check_database(settings: Settings, level: Literal["quick", "full"]) -> None:
    """Check the store's integrity (never creating or changing it); a damaged store is an error."""
    where = display_url(settings.database_url)
    with usable_url(where):
        report = await asyncio.to_thread(check_store, settings, level)
    print_json({"database": where, **report.document()})
    if not report.ok:
        raise corrupt_error(report, where)
