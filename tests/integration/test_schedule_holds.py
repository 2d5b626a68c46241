"""A due schedule whose version is disabled pauses itself once, with the reason, instead of
recording a rejected trigger every tick."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("schedule_fixtures")
pytest_plugins = ("schedule_fixtures",)

from schedule_fixtures import Clocked, dag  # noqa: E402


async def test_a_pinned_schedule_of_a_disabled_version_pauses_after_one_rejection(
    clocked: Clocked,
) -> None:
    await clocked.publish(dag(version=1))
    await clocked.publish(dag(version=2))
    sid = await clocked.schedule(version="2", cron="* * * * * *", overlap="allow")
    scheduler = clocked.scheduler()
    await clocked.set_enabled("nightly", "2", False)  # as a rollback does: no hold on the way
    await clocked.step_at(scheduler, "2026-01-01T00:00:01Z")
    await clocked.step_at(scheduler, "2026-01-01T00:00:05Z")
    await clocked.step_at(scheduler, "2026-01-01T00:00:09Z")
    assert await clocked.outcomes(sid) == ["rejected_disabled"]
    row = await clocked.get(sid)
    assert row.status == "paused"
    assert row.paused_reason == "DAG nightly version 2 is disabled"
    [audit] = await clocked.sql(
        "SELECT actor, reason FROM audit_log WHERE action = 'schedule.pause'"
    )
    assert (audit["actor"], audit["reason"]) == ("system", "DAG nightly version 2 is disabled")


async def test_a_latest_schedule_with_no_enabled_version_pauses(clocked: Clocked) -> None:
    await clocked.publish(dag(version=1))
    sid = await clocked.schedule(cron="* * * * * *", overlap="allow")
    scheduler = clocked.scheduler()
    await clocked.set_enabled("nightly", "1", False)
    await clocked.step_at(scheduler, "2026-01-01T00:00:03Z")
    await clocked.step_at(scheduler, "2026-01-01T00:00:06Z")
    assert await clocked.outcomes(sid) == ["rejected_disabled"]
    assert (await clocked.get(sid)).paused_reason == "DAG nightly has no enabled version"
