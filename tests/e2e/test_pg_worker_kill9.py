"""Two `stella orch worker` processes on one PostgreSQL store; one is SIGKILLed mid-way.

The runs are created from the test process; the workers meet only in the database (SKIP
LOCKED claims, NOTIFY wake-ups). The killed worker's leases expire after 1 s and its attempts
are retried by the survivor: every run completes, each step has exactly one succeeded
attempt and every run's ledger chain verifies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from services import count, service, until_true

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "fan"
RUNS = 200
ENDED = "SELECT COUNT(*) FROM runs WHERE status IN ('completed', 'failed', 'cancelled')"
COMPLETED = "SELECT COUNT(*) FROM runs WHERE status = 'completed'"
SPEC = {
    "dagId": DAG_ID,
    "version": 1,
    "steps": [{"id": s, "plugin": "sleep", "with": {"seconds": 0.05}} for s in "abcd"],
    "edges": [{"from": a, "to": b} for a, b in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
}
WORKER_ENV = {
    "STELLA_ORCH_LEASE_TTL_SECONDS": "1",
    "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.2",
    "STELLA_ORCH_DEFAULT_TENANT": TENANT,
}


async def test_two_worker_processes_survive_kill_9_of_one(
    pg_store_url: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_store_url()
    orch = Orchestrator.open(Settings(database_url=url, lease_ttl_seconds=1.0))
    try:
        await orch.catalog.publish(TENANT, parse_spec(SPEC))
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(
                service("worker", url, tmp_path / "w1.log", WORKER_ENV)
            )
            await stack.enter_async_context(service("worker", url, tmp_path / "w2.log", WORKER_ENV))
            started = time.monotonic()
            run_ids = [
                (await orch.runs.create(RunRequest(TENANT, DAG_ID, {"i": i}))).run.run_id
                for i in range(RUNS)
            ]

            async def mid_way() -> bool:
                return await count(orch, COMPLETED) >= RUNS // 4

            await until_true(mid_way, 20, "a quarter of the runs completed")
            await victim.kill()
            killed_at = await count(orch, COMPLETED)

            async def all_done() -> bool:
                return await count(orch, ENDED) == RUNS

            await until_true(all_done, 25, "every run ended after the kill")
            elapsed = time.monotonic() - started
        await check_outcome(orch, run_ids)
        lost = await count(orch, "SELECT COUNT(*) FROM attempts WHERE status = 'lost'")
        print(f"kill -9 of 1 of 2 workers: {killed_at}/{RUNS} done at the kill, "
              f"{lost} attempts lost and retried, all done in {elapsed:.1f}s")  # fmt: skip
    finally:
        await orch.close()


async def check_outcome(orch: Orchestrator, run_ids: list[str]) -> None:
    """Every run completed, each step succeeded exactly once, every chain verifies."""
    for run_id in run_ids:
        view = await orch.runs.get(TENANT, run_id)
        assert view["status"] == "completed", view
        for step in view["steps"]:
            statuses = [a["status"] for a in step["attempts"]]
            assert statuses.count("succeeded") == 1, (run_id, step["stepId"], statuses)
        assert (await orch.runs.verify(TENANT, run_id)).ok, run_id
