"""Schedules on the engine with a manual clock: firing, one run per trigger, overlap, catch-up,
jitter, pause/resume/delete/clear, disabled versions and the audit trail.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.register_assert_rewrite("schedule_fixtures")
pytest_plugins = ("schedule_fixtures",)

from schedule_fixtures import OPERATOR, TENANT, Clocked, dag  # noqa: E402

from stellaorch.domain.cron import CronInvalid, TimezoneInvalid  # noqa: E402
from stellaorch.domain.errors import (  # noqa: E402
    DagDisabled,
    DagNotFound,
    InputsInvalid,
    ValidationError,
)
from stellaorch.domain.firing import jitter_us, run_token  # noqa: E402
from stellaorch.domain.providers import format_utc, parse_utc  # noqa: E402
from stellaorch.engine.requests import RunRequest  # noqa: E402
from stellaorch.engine.scheduler import Scheduler  # noqa: E402
from stellaorch.engine.schedules import ScheduleNotFound, ScheduleSpec  # noqa: E402


# -- firing -------------------------------------------------------------------------------
async def test_a_due_trigger_starts_a_run_with_a_deterministic_token(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(inputs={"day": "monday"})
    scheduler = clocked.scheduler()

    early = await clocked.step_at(scheduler, "2026-01-01T00:00:59Z")
    tick = await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")

    assert early.run_ids == [] and len(tick.run_ids) == 1
    [run] = await clocked.runs_of(sid)
    assert run["run_token"] == run_token(sid, parse_utc("2026-01-01T00:01:00Z"))
    assert json.loads(run["inputs_json"]) == {"day": "monday"}
    assert await clocked.firings(sid) == [("2026-01-01T00:01:00.000Z", "started", run["run_id"])]
    assert (await clocked.get(sid)).next_fire_us == parse_utc("2026-01-01T00:02:00Z")


async def test_a_trigger_fired_by_two_schedulers_creates_one_run(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule()
    first, second = clocked.scheduler(), clocked.scheduler()
    await clocked.step_at(first, "2026-01-01T00:01:00Z")
    # The second scheduler saw the schedule before the first one's commit moved it on.
    due = parse_utc("2026-01-01T00:01:00Z")
    await clocked.sql(
        "UPDATE schedules SET next_fire_us = :d, next_due_us = :d WHERE schedule_id = :s",
        d=due,
        s=sid,
    )
    await clocked.expire_lease()

    tick = await clocked.step_at(second, "2026-01-01T00:01:00.500Z")

    assert second.leader and tick.run_ids == []
    assert len(await clocked.runs_of(sid)) == 1
    assert await clocked.outcomes(sid) == ["started"]


async def test_a_crash_before_the_run_was_recorded_is_repaired_with_the_same_run(
    clocked: Clocked,
) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule()
    await clocked.step_at(clocked.scheduler(), "2026-01-01T00:01:00Z")
    [run] = await clocked.runs_of(sid)
    await clocked.sql("UPDATE schedule_firings SET run_id = NULL WHERE schedule_id = :s", s=sid)
    await clocked.expire_lease()

    tick = await clocked.step_at(clocked.scheduler(), "2026-01-01T00:01:01Z")

    assert tick.run_ids == [run["run_id"]]
    assert await clocked.runs_of(sid) == [run]
    assert await clocked.firings(sid) == [("2026-01-01T00:01:00.000Z", "started", run["run_id"])]


async def test_a_crash_before_the_run_was_created_creates_it_once(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule()
    scheduled = parse_utc("2026-01-01T00:01:00Z")
    # What a scheduler that died right after recording the trigger leaves behind.
    await clocked.sql(
        "INSERT INTO schedule_firings (schedule_id, scheduled_us, tenant, outcome, created_us) "
        "VALUES (:s, :t, :tenant, 'started', :t)",
        s=sid,
        t=scheduled,
        tenant=TENANT,
    )
    await clocked.sql(
        "UPDATE schedules SET next_fire_us = :n, next_due_us = :n WHERE schedule_id = :s",
        n=scheduled + 60_000_000,
        s=sid,
    )
    scheduler = clocked.scheduler()

    await clocked.step_at(scheduler, "2026-01-01T00:01:05Z")
    await clocked.step_at(scheduler, "2026-01-01T00:01:06Z")

    [run] = await clocked.runs_of(sid)
    assert run["run_token"] == run_token(sid, scheduled)
    assert await clocked.firings(sid) == [("2026-01-01T00:01:00.000Z", "started", run["run_id"])]


# -- overlap ------------------------------------------------------------------------------
async def test_overlap_skip_records_triggers_while_a_run_is_in_flight(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(overlap="skip")
    scheduler = clocked.scheduler()
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")
    await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")
    first = (await clocked.runs_of(sid))[0]["run_id"]
    await clocked.orchestrator.runs.cancel(TENANT, first)

    await clocked.step_at(scheduler, "2026-01-01T00:03:00Z")

    assert await clocked.outcomes(sid) == ["started", "skipped_overlap", "started"]
    assert len(await clocked.runs_of(sid)) == 2


async def three_triggers_buffer_one(clocked: Clocked) -> tuple[str, Scheduler]:
    """A buffer_one schedule after its first three minutely triggers (the first run queued)."""
    await clocked.publish(dag())
    sid = await clocked.schedule(overlap="buffer_one")
    scheduler = clocked.scheduler()
    for minute in (1, 2, 3):
        await clocked.step_at(scheduler, f"2026-01-01T00:0{minute}:00Z")
    return sid, scheduler


async def test_overlap_buffer_one_keeps_one_trigger_and_starts_it_when_the_run_ends(
    clocked: Clocked,
) -> None:
    sid, scheduler = await three_triggers_buffer_one(clocked)
    assert await clocked.outcomes(sid) == ["started", "buffered", "skipped_overlap"]
    first = (await clocked.runs_of(sid))[0]["run_id"]
    await clocked.orchestrator.runs.cancel(TENANT, first)

    tick = await clocked.step_at(scheduler, "2026-01-01T00:03:10Z")

    assert len(tick.run_ids) == 1
    assert await clocked.outcomes(sid) == ["started", "started", "skipped_overlap"]
    second = (await clocked.runs_of(sid))[1]
    assert second["run_token"] == run_token(sid, parse_utc("2026-01-01T00:02:00Z"))
    await clocked.step_at(scheduler, "2026-01-01T00:04:00Z")
    assert (await clocked.outcomes(sid))[-1] == "buffered"


async def test_overlap_allow_always_starts_a_run(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(overlap="allow")
    scheduler = clocked.scheduler()
    for minute in (1, 2, 3):
        await clocked.step_at(scheduler, f"2026-01-01T00:0{minute}:00Z")

    assert [r["status"] for r in await clocked.runs_of(sid)] == ["queued"] * 3


# -- catch-up -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("catchup", "fired"),
    [
        (
            "all",
            [*(f"2026-01-01T00:{m}:00.000Z" for m in range(51, 60)), "2026-01-01T01:00:00.000Z"],
        ),
        ("latest", ["2026-01-01T01:00:00.000Z"]),
        ("none", []),
    ],
)
async def test_catchup_after_downtime(clocked: Clocked, catchup: str, fired: list[str]) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(overlap="allow", catchup=catchup, catchup_window_seconds=600)
    scheduler = clocked.scheduler()

    await clocked.step_at(scheduler, "2026-01-01T01:00:30Z")  # down since 00:00
    await clocked.step_at(scheduler, "2026-01-01T01:00:40Z")

    started = [when for when, outcome, _ in await clocked.firings(sid) if outcome == "started"]
    assert started == fired
    tokens = [r["run_token"] for r in await clocked.runs_of(sid)]
    assert tokens == [run_token(sid, parse_utc(t)) for t in fired]
    assert (await clocked.get(sid)).next_fire_us == parse_utc("2026-01-01T01:01:00Z")


# -- jitter -------------------------------------------------------------------------------
async def test_jitter_delays_each_trigger_by_a_fixed_amount(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(cron="0 * * * *", jitter_seconds=600)
    scheduled = parse_utc("2026-01-01T01:00:00Z")
    delay = jitter_us(sid, scheduled, 600)
    assert 0 < delay <= 600_000_000
    assert await clocked.due_at(sid) == format_utc(scheduled + delay)

    clocked.clock.set(scheduled + delay - 1)
    before = await clocked.scheduler().step()
    await clocked.expire_lease()
    clocked.clock.set(scheduled + delay)
    after = await clocked.scheduler().step()  # a restarted scheduler: same jitter

    assert before.run_ids == [] and len(after.run_ids) == 1
    [run] = await clocked.runs_of(sid)
    assert run["run_token"] == run_token(sid, scheduled)


# -- pause, resume, delete, clear ---------------------------------------------------------
async def test_a_paused_schedule_does_not_fire_and_resumes_from_now(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(catchup="all")
    scheduler = clocked.scheduler()
    paused = await clocked.orchestrator.schedules.pause(TENANT, sid, OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:05:00Z")

    clocked.clock.set(parse_utc("2026-01-01T00:05:30Z"))
    resumed = await clocked.orchestrator.schedules.resume(TENANT, sid, OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:06:00Z")

    assert (paused.status, resumed.status) == ("paused", "active")
    assert resumed.next_fire_us == parse_utc("2026-01-01T00:06:00Z")
    assert await clocked.firings(sid) == [
        ("2026-01-01T00:06:00.000Z", "started", (await clocked.runs_of(sid))[0]["run_id"])
    ]


async def test_a_deleted_schedule_is_gone_but_its_history_stays(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule()
    scheduler = clocked.scheduler()
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")

    deleted = await clocked.orchestrator.schedules.delete(TENANT, sid, OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")

    assert deleted.status == "deleted"
    with pytest.raises(ScheduleNotFound):
        await clocked.get(sid)
    assert (await clocked.orchestrator.schedules.page(TENANT))[0] == []
    assert await clocked.outcomes(sid) == ["started"]
    with pytest.raises(ScheduleNotFound):
        await clocked.orchestrator.schedules.resume(TENANT, sid, OPERATOR)


async def test_clear_drops_pending_triggers_and_fires_from_now_on(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(catchup="all", overlap="allow")
    scheduler = clocked.scheduler()
    clocked.clock.set(parse_utc("2026-01-01T00:05:30Z"))  # five triggers are pending

    result = await clocked.orchestrator.schedules.clear(TENANT, sid, OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:05:40Z")

    assert result.cleared == 5
    assert await clocked.outcomes(sid) == ["cleared"] * 5
    assert await clocked.runs_of(sid) == []
    assert result.schedule.next_fire_us == parse_utc("2026-01-01T00:06:00Z")
    await clocked.step_at(scheduler, "2026-01-01T00:06:00Z")
    assert len(await clocked.runs_of(sid)) == 1


async def test_clear_also_drops_a_buffered_trigger(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule(overlap="buffer_one")
    scheduler = clocked.scheduler()
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")
    await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")

    result = await clocked.orchestrator.schedules.clear(TENANT, sid, OPERATOR)

    assert result.cleared == 1
    assert await clocked.outcomes(sid) == ["started", "cleared"]


async def test_admin_actions_are_audited_with_reason_and_ticket(clocked: Clocked) -> None:
    await clocked.publish(dag())
    sid = await clocked.schedule()
    service = clocked.orchestrator.schedules
    await service.pause(TENANT, sid, OPERATOR)
    await service.resume(TENANT, sid, OPERATOR)
    await service.clear(TENANT, sid, OPERATOR)
    await service.delete(TENANT, sid, OPERATOR)

    rows = await clocked.sql("SELECT * FROM audit_log WHERE tenant = :t ORDER BY id", t=TENANT)

    assert [r["action"] for r in rows] == [
        "schedule.create",
        "schedule.pause",
        "schedule.resume",
        "schedule.clear",
        "schedule.delete",
    ]
    assert {(r["target"], r["actor"], r["reason"], r["ticket"]) for r in rows} == {
        (f"schedule:{sid}", "tester", "schedule test", "TICKET-1")
    }


# -- disabled versions --------------------------------------------------------------------
async def test_disabling_a_version_stops_its_schedules_while_running_runs_finish(
    clocked: Clocked,
) -> None:
    await clocked.publish(dag(plugin="sleep", **{"with": {"seconds": 0.3}}))
    sid = await clocked.schedule(version="1", overlap="allow")
    scheduler = clocked.scheduler()
    orch = clocked.orchestrator
    orch.start_worker()
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")
    [run] = await clocked.runs_of(sid)

    await clocked.set_enabled("nightly", "1", False)
    tick = await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")

    assert tick.run_ids == [] and tick.outcomes["rejected_disabled"] == 1
    assert await asyncio.wait_for(orch.runs.wait(TENANT, run["run_id"], 0.05), 5) == "completed"
    assert await clocked.outcomes(sid) == ["started", "rejected_disabled"]
    with pytest.raises(DagDisabled):
        await orch.runs.create(RunRequest(TENANT, "nightly", {}, version="1"))


async def test_a_schedule_on_the_latest_version_follows_the_latest_enabled_one(
    clocked: Clocked,
) -> None:
    await clocked.publish(dag(version=1))
    await clocked.publish(dag(version=2))
    sid = await clocked.schedule(overlap="allow")
    scheduler = clocked.scheduler()
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")

    await clocked.set_enabled("nightly", "2", False)
    await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")

    assert [r["dag_version"] for r in await clocked.runs_of(sid)] == ["2", "1"]


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"cron": "61 * * * *"}, CronInvalid),
        ({"timezone": "Mars/Olympus"}, TimezoneInvalid),
        ({"version": "1"}, DagDisabled),
        ({"version": "9"}, DagNotFound),
        ({"dag_id": "nope"}, DagNotFound),
        ({"jitter_seconds": -1}, ValidationError),
        ({"catchup_window_seconds": 10**9}, ValidationError),
        ({"overlap": "queue"}, ValidationError),
        ({"catchup": "some"}, ValidationError),
        ({"inputs": [1, 2]}, InputsInvalid),
    ],
)
async def test_bad_schedules_are_refused_and_nothing_is_written(
    clocked: Clocked, changes: dict[str, object], error: type[Exception]
) -> None:
    await clocked.publish(dag(version=1))
    await clocked.publish(dag(version=2))
    await clocked.set_enabled("nightly", "1", False)
    fields: dict[str, object] = {"tenant": TENANT, "dag_id": "nightly", "cron": "* * * * *"}

    with pytest.raises(error):
        await clocked.orchestrator.schedules.create(ScheduleSpec(**{**fields, **changes}), OPERATOR)  # type: ignore[arg-type]

    assert await clocked.sql("SELECT * FROM schedules") == []
    assert await clocked.sql("SELECT * FROM audit_log") == []


async def test_a_dag_with_every_version_disabled_takes_no_schedule(clocked: Clocked) -> None:
    await clocked.publish(dag())
    await clocked.set_enabled("nightly", "1", False)

    with pytest.raises(DagDisabled):
        await clocked.schedule()


# -- retention ----------------------------------------------------------------------------
async def test_old_settled_triggers_are_pruned_but_open_and_newest_started_ones_stay(
    clocked: Clocked,
) -> None:
    sid, scheduler = await three_triggers_buffer_one(clocked)
    week_later = parse_utc("2026-01-09T00:00:00Z")  # the default retention is 7 days

    assert await scheduler.prune(parse_utc("2026-01-02T00:00:00Z")) == 0  # too young
    assert await scheduler.prune(week_later) == 1
    assert await clocked.outcomes(sid) == ["started", "buffered"]

    first = (await clocked.runs_of(sid))[0]["run_id"]
    await clocked.orchestrator.runs.cancel(TENANT, first)
    await clocked.step_at(scheduler, "2026-01-01T00:03:10Z")  # the buffered trigger starts
    assert await scheduler.prune(week_later) == 1  # the older start goes, the newest stays

    [(when, outcome, run_id)] = await clocked.firings(sid)
    assert (when, outcome) == ("2026-01-01T00:02:00.000Z", "started")
    assert [r["run_id"] for r in await clocked.runs_of(sid)][1] == run_id
    assert len(await clocked.runs_of(sid)) == 2  # runs and their ledgers are never pruned
