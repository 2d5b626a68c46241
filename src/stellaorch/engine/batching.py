"""Group commit for run creation: requests that arrive while a commit is in flight share the next.

One transaction per request caps creation at the store's commit rate; batching keeps each
request's own semantics (its own result or error) while paying for one commit per batch.
"""

from __future__ import annotations

import asyncio
from functools import partial

from stellaorch.domain.errors import StellaError
from stellaorch.engine import create
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Created, RunRequest

MAX_BATCH = 500

_Pending = tuple[RunRequest, "asyncio.Future[Created]"]


class CreateBatcher:
    """Collects create requests and commits them in batches, in arrival order."""

    def __init__(self, env: EngineEnv) -> None:
        self._env = env
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, request: RunRequest) -> Created:
        """Create a run as part of the next batch; raises the request's own error."""
        future: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        requests = [r for r, _ in batch]
        try:
            results = await self._env.db.transact(
                partial(create.create_runs, env=self._env, requests=requests)
            )
        except Exception as exc:  # the whole transaction failed: every request learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        # Callers first, listeners after: announcing must never hold up a committed answer.
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller was cancelled; the batch must still finish for the rest
            if isinstance(result, StellaError):
                future.set_exception(result)
            else:
                future.set_result(result)
        for result in results:
            if not isinstance(result, StellaError):
                self._env.bus.publish(result.entries)  # committed, even if nobody waits now
