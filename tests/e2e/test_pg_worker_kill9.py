"""Two `stella orch worker` processes on one PostgreSQL store; one is SIGKILLed mid-way.

The runs are created from the test process; the workers meet only in the database (SKIP
LOCKED claims, NOTIFY wake-ups). The killed worker's leases expire after 1 s and its attempts
are retried by the survivor: every run completes, each step has exactly one succeeded
attempt and every run's ledger chain verifies.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.execution import RunRequest
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "fan"
RUNS = 200
STARTUP_SECONDS = 30
ENDED = "SELECT COUNT(*) FROM runs WHERE status IN ('completed', 'failed', 'cancelled')"
ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "dagId": DAG_ID,
    "version": 1,
    "steps": [{"id": s, "plugin": "sleep", "with": {"seconds": 0.05}} for s in "abcd"],
    "edges": [{"from": a, "to": b} for a, b in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
}


@asynccontextmanager
async def worker_process(url: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`stella orch worker` in a subprocess, ready for work; always killed and reaped after."""
    env = {
        **os.environ,
        "STELLA_ORCH_DATABASE_URL": url,
        "STELLA_ORCH_LEASE_TTL_SECONDS": "1",
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.2",
        "STELLA_ORCH_DEFAULT_TENANT": TENANT,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("STELLA_ORCH_CONFIG", None)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stellaorch.cli.main", "orch", "worker",
            stdout=out, stderr=out, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        await until_true(lambda: _ready(proc, log), STARTUP_SECONDS, f"worker ready ({log})")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def text_of(log: Path) -> str:
    return log.read_text(errors="replace")


async def _ready(proc: asyncio.subprocess.Process, log: Path) -> bool:
    content = text_of(log)
    assert proc.returncode is None, f"worker exited early:\n{content}"
    return "ready: worker" in content


async def until_true(probe: Callable[[], Any], within: float, what: str) -> None:
    """Poll the async `probe` until it returns true."""
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def count(orch: Orchestrator, statement: str) -> int:
    """One integer from a SQL query, in its own read transaction."""
    return await orch.env.db.read(lambda c: int(c.execute(text(statement)).scalar() or 0))


async def test_two_worker_processes_survive_kill_9_of_one(
    store_kind: str, new_store_url: Callable[[], str], tmp_path: Path
) -> None:
    if store_kind != "postgresql":
        pytest.skip("multi-process workers need a shared PostgreSQL store (SQLite: one process)")
    url = new_store_url()
    orch = Orchestrator.open(Settings(database_url=url, lease_ttl_seconds=1.0))
    try:
        await orch.catalog.publish(TENANT, parse_spec(SPEC))
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(worker_process(url, tmp_path / "w1.log"))
            await stack.enter_async_context(worker_process(url, tmp_path / "w2.log"))
            started = time.monotonic()
            run_ids = [
                (await orch.runs.create(RunRequest(TENANT, DAG_ID, {"i": i}))).run.run_id
                for i in range(RUNS)
            ]

            async def mid_way() -> bool:
                done = await count(orch, "SELECT COUNT(*) FROM runs WHERE status = 'completed'")
                return done >= RUNS // 4

            await until_true(mid_way, 20, "a quarter of the runs completed")
            victim.kill()
            await victim.wait()
            killed_at = await count(orch, "SELECT COUNT(*) FROM runs WHERE status = 'completed'")

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
