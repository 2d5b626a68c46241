"""The run service: start, cancel, read and verify runs; the faces call only this."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict, defaultdict
from functools import partial
from typing import Any

from stellaorch.domain.errors import NotFound, RunNotFound, ValidationError
from stellaorch.domain.ledger import ChainReport, LedgerEntry
from stellaorch.domain.run_diff import diff_runs
from stellaorch.domain.status import TERMINAL_RUN
from stellaorch.engine import recover, resume
from stellaorch.engine.batching import CreateBatcher
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.first_signal import FirstSignal, FirstSignals
from stellaorch.engine.requests import Cancelled, Created, ReplayOrigin, ReplayTarget, RunRequest
from stellaorch.engine.run_check import check_run
from stellaorch.engine.spans import run_admitted
from stellaorch.engine.step_logs import StepLogs, StepNotFound
from stellaorch.engine.views import (
    mark_metrics,
    mark_retries,
    run_summary,
    run_view,
    step_view,
    steps_view,
)
from stellaorch.store import Connection, blobs, ledger, queue, runs
from stellaorch.store.runs import RunFilter as RunFilter
from stellaorch.store.runs import RunState
from stellaorch.store.step_metrics import metrics_refs

FINISHED_CACHE_SIZE = 2_000  # views of finished runs kept in memory (a few MB at most)


class ArtifactNotFound(NotFound):
    """No content under that hash for this tenant."""

    code = "ARTIFACT_NOT_FOUND"


class RunService:
    """Creates runs idempotently, cancels them, and reads them back for one tenant at a time."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._batcher = CreateBatcher(env)
        self._finished: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._first_signals = FirstSignals(env)
        self.logs = StepLogs(env)

    async def create(self, request: RunRequest) -> Created:
        """Create (or find, for a repeated runToken) a run; its ready steps are queued."""
        created = await self._batcher.submit(request)
        if created.created:
            run_admitted(created.run)
        return created

    async def cancel(self, tenant: str, run_id: str, reason: str | None = None) -> Cancelled:
        """Cancel a run (idempotent); a finished run comes back with `rejected` set."""
        result = await self.env.db.transact(
            lambda c: recover.cancel_run(c, self.env, tenant, run_id, reason)
        )
        self.env.bus.publish(result.entries)
        return result

    async def get(self, tenant: str, run_id: str) -> dict[str, Any]:
        """The run with its steps and attempts, as JSON."""
        return dict(json.loads(await self.get_json(tenant, run_id)))

    async def diff(self, tenant: str, run_a: str, run_b: str) -> dict[str, Any]:
        """What differs between two runs of the tenant (RunNotFound for either's absence)."""
        a, b = await self.get(tenant, run_a), await self.get(tenant, run_b)
        hashes = []
        for view in (a, b):
            run_id = str(view["runId"])
            used = await self.env.db.read(partial(_secrets_used, tenant=tenant, run_id=run_id))
            for step in view.get("steps") or []:
                step["secrets"] = used.get(step["stepId"], {})
            version = await self.env.catalog.get_version(tenant, view["dagId"], view["dagVersion"])
            hashes.append(version.spec_hash)
        return diff_runs(a, b, (hashes[0], hashes[1]))

    async def get_json(self, tenant: str, run_id: str) -> bytes:
        """The run view as JSON bytes; a finished run never changes, so it is served from memory."""
        key = (tenant, run_id)
        cached = self._finished.get(key)
        if cached is not None:
            return cached

        def work(conn: Connection) -> tuple[bool, bytes]:
            run = _require(conn, tenant, run_id)
            view = run_view(
                run, runs.list_steps(conn, tenant, run_id), runs.list_attempts(conn, tenant, run_id)
            )
            mark_retries(view["steps"], queue.waiting_retries(conn, tenant, run_id))
            mark_metrics(view["steps"], metrics_refs(conn, tenant, run_id))
            return run.status in TERMINAL_RUN, json.dumps(view, separators=(",", ":")).encode()

        finished, body = await self.env.db.read(work)
        if finished:
            self._finished[key] = body
            if len(self._finished) > FINISHED_CACHE_SIZE:
                self._finished.popitem(last=False)
        return body

    async def page(
        self, where: RunFilter, *, limit: int = 50, after: tuple[int, str] | None = None
    ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """A page of run summaries, newest first, and the cursor of the next page (or None)."""
        found = await self.env.db.read(lambda c: runs.list_runs(c, where, limit + 1, after))
        page, more = found[:limit], len(found) > limit
        cursor = (page[-1].created_us, page[-1].run_id) if more and page else None
        return [run_summary(r) for r in page], cursor

    async def first_signal(self, tenant: str, run_id: str) -> FirstSignal | None:
        """The run's first signal (a step at work, or its end); None while there is none."""
        return await self._first_signals.get(tenant, run_id)

    async def steps(
        self, tenant: str, run_id: str, *, limit: int = 50, after: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of a run's step executions in DAG order, and the next page's cursor."""

        def work(conn: Connection) -> tuple[list[dict[str, Any]], int | None]:
            _require(conn, tenant, run_id)
            rows = runs.list_steps(conn, tenant, run_id, after=after, limit=limit + 1)
            page, more = rows[:limit], len(rows) > limit
            by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in runs.list_attempts(conn, tenant, run_id, [r["step_id"] for r in page]):
                by_step[row["step_id"]].append(row)
            cursor = int(page[-1]["position"]) if more and page else None
            due = queue.waiting_retries(conn, tenant, run_id)
            refs = metrics_refs(conn, tenant, run_id, [r["step_id"] for r in page])
            return mark_metrics(mark_retries(steps_view(page, by_step), due), refs), cursor

        return await self.env.db.read(work)

    async def step(self, tenant: str, run_id: str, step_id: str) -> dict[str, Any]:
        """One step execution with its attempts."""

        def work(conn: Connection) -> dict[str, Any]:
            _require(conn, tenant, run_id)
            row = runs.get_step(conn, tenant, run_id, step_id)
            if row is None:
                raise StepNotFound(f"step {step_id} not found in run {run_id}")
            view = step_view(row, runs.step_attempts(conn, tenant, run_id, step_id))
            mark_metrics([view], metrics_refs(conn, tenant, run_id, [step_id]))
            return mark_retries([view], queue.waiting_retries(conn, tenant, run_id))[0]

        return await self.env.db.read(work)

    async def step_metrics(self, tenant: str, run_id: str, step_id: str) -> dict[str, Any]:
        """Each attempt's metrics document of one step, oldest attempt first."""

        def work(conn: Connection) -> dict[str, Any]:
            _require(conn, tenant, run_id)
            if runs.get_step(conn, tenant, run_id, step_id) is None:
                raise StepNotFound(f"step {step_id} not found in run {run_id}")
            attempts = []
            for (_step, number), ref in sorted(
                metrics_refs(conn, tenant, run_id, [step_id]).items()
            ):
                found = blobs.get_blob(conn, tenant, ref)
                document = json.loads(found[0]) if found else None
                attempts.append({"attempt": number, "metricsRef": ref, "metrics": document})
            return {"runId": run_id, "stepId": step_id, "attempts": attempts}

        return await self.env.db.read(work)

    async def step_logs(
        self, tenant: str, run_id: str, step_id: str, attempt: int | None = None
    ) -> list[dict[str, Any]]:
        """The step's log lines, attempt by attempt (or of one attempt), already bounded."""
        return await self.logs.lines(tenant, run_id, step_id, attempt)

    async def artifact(self, tenant: str, ref: str) -> tuple[bytes, str]:
        """Content stored under a hash, only for the tenant that owns it."""
        found = await self.env.db.read(lambda c: blobs.get_blob(c, tenant, ref))
        if found is None:
            raise ArtifactNotFound(f"artifact {ref} not found")
        return found

    async def put_artifact(self, tenant: str, content: bytes, media_type: str) -> str:
        """Store content once under its hash for the tenant; the `sha256:` reference."""
        now = self.env.clock.now_us()
        return await self.env.db.transact(
            partial(
                blobs.put_blob, tenant=tenant, content=content, media_type=media_type, now_us=now
            )
        )

    async def replay(
        self,
        tenant: str,
        run_id: str,
        reason: str,
        *,
        origin: ReplayOrigin | None = None,
        target: ReplayTarget | None = None,
    ) -> Created:
        """A new run with the same inputs, linked by `replayOf`, on the target's version
        (resumed: keeping the unchanged steps that succeeded); the reason and the actor go
        into its ledger entry and the audit log."""
        if not reason.strip():
            raise ValidationError("a replay needs a reason")
        origin, target = origin or ReplayOrigin(), target or ReplayTarget()
        request = await self.env.db.read(
            lambda c: resume.replay_request(c, tenant, run_id, reason, origin, target)
        )
        return await self.create(request)

    async def events(
        self, tenant: str, run_id: str, *, after: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The run's ledger entries after seq `after`, in chain order (entryHash included)."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            _require(conn, tenant, run_id)
            page = ledger.read_entries_page(conn, tenant, run_id, after, limit)
            return [{**json.loads(e.body), "entryHash": e.entry_hash} for e in page]

        return await self.env.db.read(work)

    async def status(self, tenant: str, run_id: str) -> str:
        """The run's current status."""
        return (await self.env.db.read(lambda c: _require(c, tenant, run_id))).status

    async def verify(self, tenant: str, run_id: str) -> ChainReport:
        """Re-hash the run's ledger chain, then check its rows and stored content against it."""

        def work(conn: Connection) -> ChainReport:
            return check_run(conn, _require(conn, tenant, run_id))

        return await self.env.db.read(work)

    async def wait(self, tenant: str, run_id: str, poll_seconds: float = 1.0) -> str:
        """Wait until the run ends (events in-process, polling for other processes)."""
        ended = asyncio.Event()

        def listen(entry: LedgerEntry) -> None:
            if entry.run_id == run_id and entry.status in TERMINAL_RUN and entry.step_id is None:
                ended.set()

        unsubscribe = self.env.bus.subscribe(listen)
        try:
            while (status := await self.status(tenant, run_id)) not in TERMINAL_RUN:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), poll_seconds)
            return status
        finally:
            unsubscribe()


def _require(conn: Connection, tenant: str, run_id: str) -> RunState:
    run = runs.get_run(conn, tenant, run_id)
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    return run


def _secrets_used(conn: Connection, tenant: str, run_id: str) -> dict[str, dict[str, int]]:
    """Per step, the secret versions its last attempt resolved (from `step.running` entries)."""
    used: dict[str, dict[str, int]] = {}
    for stored in ledger.read_entries(conn, tenant, run_id):
        if '"step.running"' not in stored.body:
            continue  # cheap filter before parsing: only attempt starts name secrets
        body = json.loads(stored.body)
        if body.get("type") == "step.running" and body.get("stepId"):
            used[body["stepId"]] = dict(body.get("data", {}).get("secrets") or {})
    return used
