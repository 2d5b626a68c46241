"""Two engines on one PostgreSQL database, as two processes would share it in production.

Each engine has its own store threads, connection pool, event bus and worker; they meet only
in the database, so these tests exercise the row locks, SKIP LOCKED claims, conflict retries
and the ledger-order guarantee that scale-out relies on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.engine.stream import StreamFilter, StreamHub
from stellaorch.engine.worker import Worker

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

RUNS = 200
DIAMOND = {
    "dagId": "diamond",
    "version": 1,
    "steps": [{"id": s, "plugin": "noop"} for s in ("a", "b", "c", "d")],
    "edges": [{"from": a, "to": b} for a, b in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
}
# small claims and slots so both workers keep coming back for work
ENGINE = {"claim_batch": 8, "worker_concurrency": 8}


@pytest.fixture
def store_kind() -> str:
    """Every test here runs on PostgreSQL only."""
    return "postgresql"


async def two_engines(make_harness: MakeHarness, **overrides: Any) -> tuple[Harness, Harness]:
    first = await make_harness(**{**ENGINE, **overrides})
    url = first.orchestrator.env.settings.database_url
    return first, await make_harness(url=url, **{**ENGINE, **overrides})


def start_named_worker(harness: Harness, name: str) -> None:
    """A worker with its own id (both engines live in this one process)."""
    orch = harness.orchestrator
    worker = Worker(orch.env, orch.plugins, worker_id=name)
    harness.workers.append((worker, asyncio.create_task(worker.run())))


async def wait_all_ended(harness: Harness, count: int, within: float) -> None:
    async def ended() -> bool:
        rows = await harness.sql(
            "SELECT COUNT(*) AS n FROM runs WHERE status IN ('completed', 'failed', 'cancelled')"
        )
        return int(rows[0]["n"]) == count

    await harness.wait_until(ended, within, f"all {count} runs ended")


async def create_from_both(a: Harness, b: Harness, dag_id: str, count: int) -> None:
    await asyncio.gather(
        *((a if i % 2 else b).create(dag_id, {"i": i}, run_token=f"run-{i}") for i in range(count))
    )


async def test_two_engines_with_a_worker_each_run_every_step_exactly_once(
    make_harness: MakeHarness,
) -> None:
    a, b = await two_engines(make_harness)
    await a.publish(DIAMOND)
    start_named_worker(a, "worker-a")
    start_named_worker(b, "worker-b")

    await create_from_both(a, b, "diamond", RUNS)
    await wait_all_ended(a, RUNS, within=60)
    await a.stop_workers()
    await b.stop_workers()

    statuses = await a.sql("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
    per_step = await a.sql(
        "SELECT run_id, step_id, COUNT(*) AS n, "
        "SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS ok "
        "FROM attempts GROUP BY run_id, step_id"
    )
    workers = await a.sql("SELECT worker_id, COUNT(*) AS n FROM attempts GROUP BY worker_id")
    reports = await a.verify_every_run()
    assert statuses == [{"status": "completed", "n": RUNS}]
    assert len(per_step) == RUNS * 4
    assert all(r["n"] == 1 and r["ok"] == 1 for r in per_step), "a step ran twice or failed"
    assert {w["worker_id"] for w in workers} == {"worker-a", "worker-b"}
    assert len(reports) == RUNS and all(r.ok for r in reports)


FLAKY_AND_DOOMED = {
    "dagId": "mixed",
    "version": 1,
    "steps": [
        {"id": "a", "plugin": "noop"},
        {
            "id": "flaky",
            "plugin": "fail",
            "with": {"untilAttempt": 2, "retryable": True},
            "retry": {"maxAttempts": 3, "backoff": {"initialMs": 5, "factor": 1, "jitter": 0}},
        },
        {"id": "slow", "plugin": "sleep", "with": {"seconds": 0.05}},
        {"id": "doomed", "plugin": "fail", "with": {"code": "NOPE"}},
        {"id": "never", "plugin": "noop"},
    ],
    "edges": [
        {"from": "a", "to": "flaky"},
        {"from": "a", "to": "slow"},
        {"from": "a", "to": "doomed"},
        {"from": "flaky", "to": "never"},
        {"from": "slow", "to": "never"},
        {"from": "doomed", "to": "never"},
    ],
}


async def test_retries_and_failures_across_two_engines_leave_consistent_runs(
    make_harness: MakeHarness,
) -> None:
    a, b = await two_engines(make_harness)
    await a.publish(FLAKY_AND_DOOMED)
    start_named_worker(a, "worker-a")
    start_named_worker(b, "worker-b")

    await create_from_both(a, b, "mixed", 60)
    await wait_all_ended(a, 60, within=60)
    await a.stop_workers()
    await b.stop_workers()

    statuses = await a.sql("SELECT DISTINCT status FROM runs")
    succeeded_twice = await a.sql(
        "SELECT run_id, step_id FROM attempts WHERE status = 'succeeded' "
        "GROUP BY run_id, step_id HAVING COUNT(*) > 1"
    )
    still_running = await a.sql("SELECT COUNT(*) AS n FROM attempts WHERE status = 'running'")
    queued = await a.sql("SELECT COUNT(*) AS n FROM queue_items")
    assert statuses == [{"status": "failed"}]
    assert succeeded_twice == []
    assert still_running[0]["n"] == 0 and queued[0]["n"] == 0
    assert all(r.ok for r in await a.verify_every_run())


async def test_one_run_token_sent_to_two_engines_at_once_makes_one_run(
    make_harness: MakeHarness,
) -> None:
    a, b = await two_engines(make_harness)
    await a.publish(DIAMOND)

    tokens = [f"same-{i}" for i in range(40)]
    results = await asyncio.gather(
        *(h.create("diamond", {"n": 1}, run_token=t) for t in tokens for h in (a, b))
    )

    by_token: dict[str, set[str]] = {}
    for result in results:
        by_token.setdefault(result.run.run_token, set()).add(result.run.run_id)
    assert all(len(ids) == 1 for ids in by_token.values())
    assert sum(r.created for r in results) == len(tokens)
    assert len(await a.run_ids()) == len(tokens)


async def test_the_stream_delivers_every_entry_once_in_order_while_two_engines_write(
    make_harness: MakeHarness,
) -> None:
    a, b = await two_engines(make_harness)
    await a.publish(DIAMOND)
    hub = StreamHub(a.orchestrator.env, poll_seconds=0.02)
    subscription = await hub.subscribe(StreamFilter(a.tenant))
    start_named_worker(a, "worker-a")
    start_named_worker(b, "worker-b")
    try:
        await create_from_both(a, b, "diamond", 60)
        await wait_all_ended(a, 60, within=60)
        await a.stop_workers()
        await b.stop_workers()
        stored = [r["id"] for r in await a.sql("SELECT id FROM ledger_entries ORDER BY id")]
        seen: list[int] = []
        while len(seen) < len(stored):
            seen.append((await asyncio.wait_for(subscription.next(), 5))["seq"])
    finally:
        await hub.close()

    assert seen == stored
