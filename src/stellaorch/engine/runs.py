"""The run service: start, cancel, read and verify runs; the faces call only this."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import Connection

from stellaorch.domain.errors import RunNotFound
from stellaorch.domain.ledger import ChainReport, LedgerEntry, verify_chain
from stellaorch.domain.status import TERMINAL_RUN
from stellaorch.engine import execution
from stellaorch.engine.batching import CreateBatcher
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.execution import Cancelled, Created, RunRequest
from stellaorch.engine.views import run_summary, run_view
from stellaorch.store import ledger, runs
from stellaorch.store.runs import RunState

_TERMINAL = frozenset(s.value for s in TERMINAL_RUN)


class RunService:
    """Creates runs idempotently, cancels them, and reads them back for one tenant at a time."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._batcher = CreateBatcher(env)

    async def create(self, request: RunRequest) -> Created:
        """Create (or find, for a repeated runToken) a run; its ready steps are queued."""
        return await self._batcher.submit(request)

    async def cancel(self, tenant: str, run_id: str, reason: str | None = None) -> Cancelled:
        """Cancel a run (idempotent); a finished run comes back with `rejected` set."""
        result = await self.env.db.transact(
            lambda c: execution.cancel_run(c, self.env, tenant, run_id, reason)
        )
        self.env.bus.publish(result.entries)
        return result

    async def get(self, tenant: str, run_id: str) -> dict[str, Any]:
        """The run with its steps and attempts, as JSON."""

        def work(conn: Connection) -> dict[str, Any]:
            run = _require(conn, tenant, run_id)
            return run_view(
                run, runs.list_steps(conn, tenant, run_id), runs.list_attempts(conn, tenant, run_id)
            )

        return await self.env.db.transact(work)

    async def list(
        self,
        tenant: str,
        *,
        dag_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Summaries of the tenant's runs, newest first."""
        found = await self.env.db.transact(
            lambda c: runs.list_runs(c, tenant, dag_id=dag_id, status=status, limit=limit)
        )
        return [run_summary(r) for r in found]

    async def status(self, tenant: str, run_id: str) -> str:
        """The run's current status."""
        return (await self.env.db.transact(lambda c: _require(c, tenant, run_id))).status

    async def verify(self, tenant: str, run_id: str) -> ChainReport:
        """Re-hash the run's ledger chain and report the first broken entry, if any."""

        def work(conn: Connection) -> ChainReport:
            run = _require(conn, tenant, run_id)
            return verify_chain(run_id, ledger.read_entries(conn, tenant, run_id), run.ledger_head)

        return await self.env.db.transact(work)

    async def wait(self, tenant: str, run_id: str, poll_seconds: float = 1.0) -> str:
        """Wait until the run ends (events in-process, polling for other processes)."""
        ended = asyncio.Event()

        def listen(entry: LedgerEntry) -> None:
            if entry.run_id == run_id and entry.status in _TERMINAL and entry.step_id is None:
                ended.set()

        unsubscribe = self.env.bus.subscribe(listen)
        try:
            while (status := await self.status(tenant, run_id)) not in _TERMINAL:
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
