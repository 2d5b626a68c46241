"""Schedulers in real time: one leader fires, a standby takes over, triggers fire on time."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

pytest.register_assert_rewrite("schedule_fixtures")
pytest_plugins = ("schedule_fixtures",)

from schedule_fixtures import OPERATOR, TENANT, dag, settings_for  # noqa: E402
from sqlalchemy import text  # noqa: E402

from stellaorch.domain.spec import parse_spec  # noqa: E402
from stellaorch.engine.app import Orchestrator  # noqa: E402
from stellaorch.engine.scheduler import Scheduler  # noqa: E402
from stellaorch.engine.schedules import ScheduleSpec  # noqa: E402

EVERY_SECOND = "* * * * * *"
TTL, POLL = 0.6, 0.1


@contextlib.asynccontextmanager
async def engines(url: str, count: int) -> AsyncIterator[list[Orchestrator]]:
    """`count` engines on one store, as separate processes would be."""
    opened = [Orchestrator.open(settings_for(url)) for _ in range(count)]
    try:
        yield opened
    finally:
        for orch in opened:
            await orch.close()


async def every_second_schedule(orch: Orchestrator) -> str:
    await orch.catalog.publish(TENANT, parse_spec(dag()))
    spec = ScheduleSpec(TENANT, "nightly", EVERY_SECOND, overlap="allow", catchup="all")
    return (await orch.schedules.create(spec, OPERATOR)).schedule_id


async def until(probe: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> float:
    """Wait until `probe` holds; returns how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = probe()
        if result if isinstance(result, bool) else await result:
            return loop.time() - start
        if loop.time() - start > within:
            raise AssertionError(f"timed out after {within}s waiting until {what}")
        await asyncio.sleep(0.02)


async def started_firings(orch: Orchestrator, schedule_id: str) -> list[tuple[int, str | None]]:
    """(scheduled_us, run_id) of the schedule's started triggers, in order."""

    def work(conn: object) -> list[tuple[int, str | None]]:
        rows = conn.execute(  # type: ignore[attr-defined]
            text(
                "SELECT scheduled_us, run_id FROM schedule_firings "
                "WHERE schedule_id = :s AND outcome = 'started' ORDER BY scheduled_us"
            ),
            {"s": schedule_id},
        )
        return [(int(r[0]), r[1]) for r in rows]

    return await orch.env.db.transact(work)


def scheduler(orch: Orchestrator, holder: str) -> Scheduler:
    return Scheduler(orch.env, orch.runs, holder=holder, lease_ttl_seconds=TTL, poll_seconds=POLL)


async def test_only_the_leader_fires_and_a_standby_takes_over_without_doubles(
    store_url: str,
) -> None:
    async with engines(store_url, 2) as (a, b):
        sid = await every_second_schedule(a)
        leader, standby = scheduler(a, "leader"), scheduler(b, "standby")
        leader_task = asyncio.create_task(leader.run())
        await until(lambda: leader.leader, 2, "the first scheduler leads")
        standby_task = asyncio.create_task(standby.run())
        await asyncio.sleep(1.6)
        assert leader.leader and not standby.leader
        by_leader = len(await started_firings(a, sid))

        leader_task.cancel()  # dies without giving the lease up
        with contextlib.suppress(asyncio.CancelledError):
            await leader_task
        takeover = await until(lambda: standby.leader, TTL + 2, "the standby leads")
        await asyncio.sleep(1.3)
        standby.stop()
        await standby_task

        fired = await started_firings(a, sid)
    assert takeover <= TTL + POLL + 0.5
    seconds = [s for s, _ in fired]
    assert seconds == list(range(seconds[0], seconds[-1] + 1, 1_000_000)), "a trigger was lost"
    run_ids = [r for _, r in fired]
    assert None not in run_ids and len(set(run_ids)) == len(run_ids)
    assert 1 <= by_leader < len(fired), "both schedulers fired in turn"


async def test_an_orderly_stop_hands_the_lease_over_at_once(store_url: str) -> None:
    async with engines(store_url, 2) as (a, b):
        first, second = scheduler(a, "first"), scheduler(b, "second")
        first_task = asyncio.create_task(first.run())
        await until(lambda: first.leader, 2, "the first scheduler leads")
        second_task = asyncio.create_task(second.run())
        await asyncio.sleep(0.2)

        first.stop()
        await first_task
        handover = await until(lambda: second.leader, TTL, "the second scheduler leads")
        second.stop()
        await second_task
    assert handover <= POLL + 0.3


async def test_triggers_start_their_runs_on_time(store_url: str) -> None:
    async with engines(store_url, 1) as (orch,):
        sid = await every_second_schedule(orch)
        orch.start_worker()
        orch.start_scheduler(lease_ttl_seconds=2.0, poll_seconds=0.5)
        await asyncio.sleep(3.2)
        task = orch.scheduler_task
        assert task is not None and not task.done()
        await orch.stop_scheduler()

        def work(conn: object) -> list[int]:
            rows = conn.execute(  # type: ignore[attr-defined]
                text(
                    "SELECT r.created_us - f.scheduled_us FROM schedule_firings f "
                    "JOIN runs r ON r.run_id = f.run_id WHERE f.schedule_id = :s"
                ),
                {"s": sid},
            )
            return [int(r[0]) for r in rows]

        late_us = await orch.env.db.transact(work)
    assert len(late_us) >= 2
    assert min(late_us) >= 0
    assert statistics.median(late_us) <= 250_000, late_us
    assert max(late_us) <= 1_000_000, late_us


async def test_a_new_schedule_wakes_a_sleeping_scheduler(store_url: str) -> None:
    async with engines(store_url, 1) as (orch,):
        orch.start_scheduler(poll_seconds=30)
        await asyncio.sleep(0.2)  # the scheduler has nothing due and sleeps for the poll

        sid = await every_second_schedule(orch)

        async def fired() -> bool:
            return bool(await started_firings(orch, sid))

        assert await until(fired, 2.5, "the new schedule fired") <= 2.2
        await orch.stop_scheduler()
