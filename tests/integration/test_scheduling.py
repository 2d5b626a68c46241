"""Who runs next: per-step concurrency, FIFO within a tenant, fairness across tenants (item 4)."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from stellaorch.domain.providers import parse_utc
from stellaorch.plugins import PluginResult, StepContext

if TYPE_CHECKING:
    from conftest import Harness


def fan(harness: Harness, dag_id: str, count: int) -> dict[str, Any]:
    """`count` independent noop steps."""
    return harness.spec(dag_id, [{"id": f"s{i:05d}", "plugin": "noop"} for i in range(count)])


def limited(harness: Harness, seconds: float) -> dict[str, Any]:
    step = {"id": "gate", "plugin": "sleep", "with": {"seconds": seconds}, "concurrency": 1}
    return harness.spec("limited", [step])


async def start_times(harness: Harness, run_id: str, tenant: str) -> list[int]:
    """When each attempt of the run started (µs, the attempts' own precision), in order."""
    rows = await harness.sql(
        "SELECT started_us FROM attempts WHERE tenant = :t AND run_id = :r ORDER BY started_us",
        t=tenant,
        r=run_id,
    )
    return [int(r["started_us"]) for r in rows]


# -- per-step concurrency -----------------------------------------------------------------
async def test_step_concurrency_is_never_exceeded_across_runs(harness: Harness) -> None:
    await harness.publish(limited(harness, 0.15))
    run_ids = [(await harness.create("limited")).run.run_id for _ in range(4)]

    async with harness.worker(concurrency=8):
        views = [await harness.wait_done(r, within=10) for r in run_ids]

    attempts = sorted(
        (a for v in views for a in harness.step(v, "gate")["attempts"]),
        key=lambda a: a["startedUtc"],
    )
    assert [v["status"] for v in views] == ["completed"] * 4
    assert len(attempts) == 4
    for earlier, later in pairwise(attempts):
        assert parse_utc(later["startedUtc"]) >= parse_utc(earlier["endedUtc"]), (earlier, later)


async def test_step_concurrency_limit_does_not_hold_up_other_steps(harness: Harness) -> None:
    # Eight runs wait for the one-at-a-time gate (~1.6 s in all); an unrelated step queued
    # behind them must not wait for that backlog to drain.
    await harness.publish(limited(harness, 0.2))
    await harness.publish(harness.spec("quick", [{"id": "go", "plugin": "noop"}]))
    gated = [(await harness.create("limited")).run.run_id for _ in range(8)]
    quick = (await harness.create("quick")).run.run_id

    async with harness.worker(concurrency=4):
        quick_view = await harness.wait_done(quick, within=10)
        gates = [await harness.view(r) for r in gated]
        for run_id in gated:
            await harness.wait_done(run_id, within=10)

    first_gate = harness.step(gates[0], "gate")["attempts"][0]
    waited_ms = (parse_utc(quick_view["endedUtc"]) - parse_utc(first_gate["startedUtc"])) / 1000
    assert waited_ms < 200, f"the quick run waited {waited_ms:.0f} ms behind the gated backlog"


async def test_worker_idles_while_queued_steps_wait_for_a_concurrency_slot(
    harness: Harness,
) -> None:
    await harness.publish(limited(harness, 1.0))
    run_ids = [(await harness.create("limited")).run.run_id for _ in range(3)]
    transactions = 0

    def count(_conn: object) -> None:
        nonlocal transactions
        transactions += 1

    async with harness.worker():
        await harness.wait_for_step(run_ids[0], "gate", "running")
        event.listen(harness.orchestrator.env.db.engine, "begin", count)
        await asyncio.sleep(0.5)
        event.remove(harness.orchestrator.env.db.engine, "begin", count)
        await harness.runs.cancel(harness.tenant, run_ids[0])
        for run_id in run_ids[1:]:
            await harness.runs.cancel(harness.tenant, run_id)

    # Polling every 0.05 s plus heartbeats is ~20 transactions; a spinning claim loop is 1000s.
    assert transactions < 60


class GaugePlugin:
    """Sleeps briefly and remembers how many of its attempts ever ran at once."""

    name = "gauge"
    version = "1"

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def run(self, ctx: StepContext) -> PluginResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.03)
        finally:
            self.running -= 1
        return PluginResult()


async def test_worker_never_runs_more_attempts_than_its_concurrency(harness: Harness) -> None:
    gauge = GaugePlugin()
    harness.orchestrator.plugins.register(gauge)
    steps = [{"id": f"s{i:02d}", "plugin": "gauge"} for i in range(20)]

    view = await harness.run_to_end(harness.spec("wide", steps), concurrency=3)

    assert view["status"] == "completed"
    assert gauge.peak == 3


# -- FIFO and fairness --------------------------------------------------------------------
async def test_runs_of_one_tenant_start_in_creation_order(harness: Harness) -> None:
    await harness.publish(harness.spec("one", [{"id": "only", "plugin": "noop"}]))
    run_ids = [(await harness.create("one")).run.run_id for _ in range(6)]

    async with harness.worker(concurrency=1):
        for run_id in run_ids:
            await harness.wait_done(run_id)

    first_starts = [(await start_times(harness, r, harness.tenant))[0] for r in run_ids]
    assert first_starts == sorted(first_starts)
    assert len(set(first_starts)) == len(first_starts)


async def test_small_tenant_is_not_starved_by_a_large_backlog(harness: Harness) -> None:
    await harness.publish(fan(harness, "big", 2000), tenant="tenant-a")
    await harness.publish(fan(harness, "small", 10), tenant="tenant-b")
    big = (await harness.create("big", tenant="tenant-a")).run.run_id
    small = (await harness.create("small", tenant="tenant-b")).run.run_id

    async with harness.worker():
        await harness.wait_done(big, tenant="tenant-a", within=30)
        await harness.wait_done(small, tenant="tenant-b", within=30)

    a_starts = sorted(await start_times(harness, big, "tenant-a"))
    b_starts = await start_times(harness, small, "tenant-b")
    assert len(a_starts) == 2000
    assert len(b_starts) == 10
    halfway = a_starts[len(a_starts) // 2]
    assert max(b_starts) < halfway


async def test_tenant_arriving_late_is_served_before_the_backlog_drains(harness: Harness) -> None:
    await harness.publish(fan(harness, "big", 2000), tenant="tenant-a")
    await harness.publish(fan(harness, "small", 10), tenant="tenant-b")
    big = (await harness.create("big", tenant="tenant-a")).run.run_id

    async with harness.worker():

        async def a_started() -> bool:
            return len(await start_times(harness, big, "tenant-a")) > 0

        await harness.wait_until(a_started, 10, "tenant-a's backlog is being worked")
        small = (await harness.create("small", tenant="tenant-b")).run.run_id
        await harness.wait_done(big, tenant="tenant-a", within=30)
        await harness.wait_done(small, tenant="tenant-b", within=30)

    a_starts = sorted(await start_times(harness, big, "tenant-a"))
    b_starts = await start_times(harness, small, "tenant-b")
    assert max(b_starts) < a_starts[-1]
    assert max(b_starts) < a_starts[len(a_starts) * 3 // 4]
