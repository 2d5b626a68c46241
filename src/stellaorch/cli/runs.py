"""`stella orch run …` over the HTTP API: start, list, show, cancel, replay, steps, logs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import CancelRejected
from stellaorch.cli.follow import require_completed, run_path, wait_for_run
from stellaorch.cli.inputs import read_inputs
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.output import say
from stellaorch.cli.render import OutputFormat, Printer, compact
from stellaorch.domain.errors import StellaError


@dataclass(frozen=True)
class StartRun:
    """What `run start` was asked to do."""

    dag_id: str
    inputs_file: Path | None = None
    version: str | None = None
    run_token: str | None = None
    idempotency_key: str | None = None
    wait: bool = False

    def body(self) -> dict[str, Any]:
        """The POST /runs body; optional fields only when given."""
        body: dict[str, Any] = {"dagId": self.dag_id}
        body["inputs"] = read_inputs(self.inputs_file) if self.inputs_file else {}
        if self.version is not None:
            body["version"] = self.version
        if self.run_token is not None:
            body["runToken"] = self.run_token
        return body


@dataclass(frozen=True)
class RunQuery:
    """The filters of `run list`."""

    dag_id: str | None = None
    status: str | None = None
    from_utc: str | None = None
    to_utc: str | None = None

    def params(self) -> dict[str, str | int | None]:
        """The GET /runs query."""
        return {
            "dagId": self.dag_id,
            "status": self.status,
            "from": self.from_utc,
            "to": self.to_utc,
        }


async def start(client: ApiClient, printer: Printer, job: StartRun) -> None:
    """Start a run; with `wait`, follow it to the end and fail unless it completed."""
    run = await _post_once(client, "/runs", job.body(), job.idempotency_key)
    await _finish(client, printer, run, wait=job.wait)


@dataclass(frozen=True)
class ReplayRun:
    """What `run replay` was asked to do."""

    run_id: str
    reason: str
    idempotency_key: str | None = None
    wait: bool = False
    version: str | None = None
    resume: bool = False


def replay_body(reason: str, version: str | None, resume: bool) -> dict[str, Any]:
    """The body of a replay request (run or dead-letter group)."""
    body: dict[str, Any] = {"reason": reason, "resume": resume}
    if version is not None:
        body["version"] = version
    return body


async def replay(client: ApiClient, printer: Printer, job: ReplayRun) -> None:
    """Start a new run with the same inputs (replayOf is set), resumed or from the start."""
    path = run_path(job.run_id, ":replay")
    body = replay_body(job.reason, job.version, job.resume)
    run = await _post_once(client, path, body, job.idempotency_key)
    await _finish(client, printer, run, wait=job.wait)


async def _post_once(
    client: ApiClient, path: str, body: dict[str, Any], key: str | None
) -> dict[str, Any]:
    """POST with an Idempotency-Key, so repeating the request cannot start a second run."""
    key = key or str(uuid.uuid4())
    try:
        created: dict[str, Any] = await client.post(path, body, {"Idempotency-Key": key})
    except StellaError as exc:
        if exc.retryable:
            # The request may have been applied before the answer was lost; the same key
            # makes a repeat return that first answer instead of starting another run.
            exc.message += f"; repeat with --idempotency-key {key} to avoid a second run"
        raise
    return created


async def _finish(client: ApiClient, printer: Printer, run: dict[str, Any], *, wait: bool) -> None:
    """Print the new run, or wait for it and print its final state (exit 1 unless completed)."""
    if not wait:
        printer.one("run", run)
        return
    view = await wait_for_run(client, run)
    printer.run_with_steps(view)
    require_completed(view)


async def list_runs(client: ApiClient, printer: Printer, query: RunQuery, paging: Paging) -> None:
    """The tenant's runs, newest first."""
    await print_pages(client, printer, "run", "/runs", query.params(), paging)


async def show(client: ApiClient, printer: Printer, run_id: str) -> None:
    """One run with its steps."""
    printer.run_with_steps(await client.get(run_path(run_id)))


async def diff(client: ApiClient, printer: Printer, run_a: str, run_b: str) -> None:
    """What differs between two runs; a table lists one difference per row."""
    path = run_path(run_a, f"/diff/{quote(run_b, safe='')}")
    printer.differences(await client.get(path))


async def cancel(client: ApiClient, printer: Printer, run_id: str, reason: str | None) -> None:
    """Cancel a run; one that had already ended is printed and rejected (exit 6)."""
    body = {"reason": reason} if reason else None
    run: dict[str, Any] = await client.post(run_path(run_id, ":cancel"), body)
    printer.one("run", run)
    if run.get("cancelRejected"):
        raise CancelRejected(f"run {run_id} had already ended ({run.get('status')}); not cancelled")


async def steps(client: ApiClient, printer: Printer, run_id: str) -> None:
    """The run's step executions in DAG order, with attempts (in JSON), every page."""
    paging = Paging(page_size=500, every_page=True)
    await print_pages(client, printer, "step", run_path(run_id, "/steps"), {}, paging)


def _logs_path(run_id: str, step_id: str) -> str:
    """The route of a step's log lines."""
    return run_path(run_id, f"/steps/{quote(step_id, safe='')}/logs")


async def logs(
    client: ApiClient, printer: Printer, run_id: str, step_id: str, attempt: int | None = None
) -> None:
    """A step's (redacted) log lines, attempt by attempt (or of one attempt)."""
    path = _logs_path(run_id, step_id)
    params = {"attempt": attempt} if attempt is not None else {}
    printer.listing("log", await client.get(path, params))


async def run_logs(
    client: ApiClient, printer: Printer, run_id: str, attempt: int | None = None
) -> None:
    """Every started step's (redacted) log lines in DAG order, each line naming its step."""
    items: list[Any] = []
    async for page in client.pages(run_path(run_id, "/steps"), {"page_size": 500}, every_page=True):
        for step in page.get("items") or []:
            if not step.get("attempts"):
                continue  # never started: no log to ask for
            step_id = str(step["stepId"])
            path = _logs_path(run_id, step_id)
            params = {"attempt": attempt} if attempt is not None else {}
            answer = await client.get(path, params)
            items += [{"stepId": step_id, **line} for line in answer.get("items") or []]
    printer.listing("run-log", {"items": items})


async def follow_logs(
    client: ApiClient, printer: Printer, run_id: str, step_id: str, attempt: int | None
) -> None:
    """Print an attempt's log lines as they arrive until it ends (table: the bare lines)."""
    path = _logs_path(run_id, step_id)
    params: dict[str, str | int | None] = {"follow": "true", "attempt": attempt}
    async with client.download(path, params, read_timeout=None) as response:
        async for text in response.aiter_lines():
            if not text.strip():
                continue
            line = json.loads(text)
            say(str(line.get("line", "")) if printer.fmt is OutputFormat.TABLE else compact(line))
