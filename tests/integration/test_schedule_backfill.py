"""Backfill: the runs of a schedule's past fire times in [from, to), each created once, with
`trigger: backfill:<id>`, audited, bounded, and all-or-nothing."""

from __future__ import annotations

from typing import Any

import pytest

from stellaorch.domain.errors import QueueDraining, ValidationError
from stellaorch.domain.providers import parse_utc
from stellaorch.engine.backfill import BackfillTooLarge, BackfillWindow

pytest.register_assert_rewrite("schedule_fixtures", "api_fixtures")
pytest_plugins = ("schedule_fixtures", "api_fixtures")

from api_fixtures import ADMIN, BASE, READ, Api, MakeApi, assert_envelope, spec  # noqa: E402
from schedule_fixtures import OPERATOR, TENANT, Clocked, at, dag  # noqa: E402

HOURLY = "0 * * * *"


def window(sid: str, start: str, end: str, *, dry_run: bool = False) -> BackfillWindow:
    """A backfill of `sid` over [start, end) (UTC)."""
    return BackfillWindow(TENANT, sid, parse_utc(start), parse_utc(end), dry_run)


async def backfill_runs(clocked: Clocked, sid: str) -> list[dict[str, Any]]:
    """The runs a backfill of `sid` made, by runToken."""
    return await clocked.sql(
        'SELECT run_id, run_token, dag_version FROM runs WHERE "trigger" = :t ORDER BY run_token',
        t=f"backfill:{sid}",
    )


async def hourly(clocked: Clocked) -> str:
    """A published DAG with an hourly schedule; the clock a day later."""
    await clocked.publish(dag(version=1))
    sid = await clocked.schedule(cron=HOURLY, inputs={"day": "2026-01-01"})
    clocked.clock.set(parse_utc("2026-01-02T00:00:00Z"))
    return sid


async def test_backfill_creates_one_run_per_fire_time_with_the_backfill_trigger(
    clocked: Clocked,
) -> None:
    sid = await hourly(clocked)

    result = await clocked.orchestrator.backfills.backfill(
        window(sid, "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z"), OPERATOR
    )

    assert [i.outcome for i in result.items] == ["created"] * 3
    tokens = [r["run_token"] for r in await backfill_runs(clocked, sid)]
    assert tokens == [f"backfill:{sid}:{at(f'2026-01-01T0{h}:00:00Z')}" for h in range(3)]
    [audit] = await clocked.sql(
        "SELECT actor, reason, target, details_json FROM audit_log "
        "WHERE action = 'schedule.backfill'"
    )
    assert (audit["actor"], audit["reason"], audit["target"]) == (
        "tester",
        "schedule test",
        f"schedule:{sid}",
    )
    assert '"created":3' in audit["details_json"]


async def test_repeating_a_backfill_creates_nothing_twice(clocked: Clocked) -> None:
    sid = await hourly(clocked)
    backfills = clocked.orchestrator.backfills
    first = await backfills.backfill(
        window(sid, "2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z"), OPERATOR
    )

    again = await backfills.backfill(
        window(sid, "2026-01-01T00:00:00Z", "2026-01-01T04:00:00Z"), OPERATOR
    )

    assert [i.outcome for i in again.items] == ["existing", "existing", "created", "created"]
    assert [i.run_id for i in again.items[:2]] == [i.run_id for i in first.items]
    assert len(await backfill_runs(clocked, sid)) == 4


async def test_fire_times_the_scheduler_started_are_left_alone(clocked: Clocked) -> None:
    await clocked.publish(dag(version=1))
    sid = await clocked.schedule(cron=HOURLY)
    tick = await clocked.step_at(clocked.scheduler(), "2026-01-01T01:00:00Z")
    [scheduled_run] = tick.run_ids
    clocked.clock.set(parse_utc("2026-01-01T05:00:00Z"))

    result = await clocked.orchestrator.backfills.backfill(
        window(sid, "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z"), OPERATOR
    )

    assert [(i.outcome, i.run_id == scheduled_run) for i in result.items] == [
        ("created", False),
        ("scheduled", True),
        ("created", False),
    ]
    assert len(await backfill_runs(clocked, sid)) == 2


async def test_a_dry_run_lists_the_fire_times_and_writes_nothing(clocked: Clocked) -> None:
    sid = await hourly(clocked)

    result = await clocked.orchestrator.backfills.backfill(
        window(sid, "2026-01-01T00:00:00Z", "2026-01-01T02:30:00Z", dry_run=True), OPERATOR
    )

    assert [i.outcome for i in result.items] == ["would_create"] * 3
    assert await backfill_runs(clocked, sid) == []
    assert await clocked.sql("SELECT id FROM audit_log WHERE action = 'schedule.backfill'") == []


async def test_the_window_is_half_open_and_in_the_past(clocked: Clocked) -> None:
    sid = await hourly(clocked)
    backfills = clocked.orchestrator.backfills
    with pytest.raises(ValidationError, match="from < to"):
        await backfills.backfill(
            window(sid, "2026-01-01T02:00:00Z", "2026-01-01T02:00:00Z"), OPERATOR
        )
    with pytest.raises(ValidationError, match="the past"):
        await backfills.backfill(
            window(sid, "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"), OPERATOR
        )
    result = await backfills.backfill(
        window(sid, "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"), OPERATOR
    )
    assert [at("2026-01-01T01:00:00Z")] == [i.run_token.split(":", 2)[2] for i in result.items]


async def test_a_draining_queue_refuses_the_whole_backfill(clocked: Clocked) -> None:
    sid = await hourly(clocked)
    await clocked.orchestrator.queues.act(TENANT, TENANT, "drain", OPERATOR)

    with pytest.raises(QueueDraining):
        await clocked.orchestrator.backfills.backfill(
            window(sid, "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z"), OPERATOR
        )

    assert await backfill_runs(clocked, sid) == []
    assert await clocked.sql("SELECT id FROM audit_log WHERE action = 'schedule.backfill'") == []


# -- over HTTP ----------------------------------------------------------------------------
NOOP = spec("nightly", [{"id": "s", "plugin": "noop"}])


async def http_schedule(api: Api, tenant: str = "acme") -> str:
    """Publish the DAG and create an hourly schedule for `tenant` over the API."""
    await api.publish(tenant, NOOP)
    response = await api.client.post(
        f"{BASE}/schedules",
        json={"dagId": "nightly", "cron": HOURLY},
        headers=api.headers(tenant),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["scheduleId"])


async def post_backfill(
    api: Api, sid: str, headers: dict[str, str] | None = None, **kw: Any
) -> Any:
    """POST /schedules/{sid}:backfill over 2026-01-01 00:00-04:00 (as acme's admin by default)."""
    body = {"fromUtc": "2026-01-01T00:00:00Z", "toUtc": "2026-01-01T04:00:00Z", **kw}
    headers = headers or api.headers("acme")
    return await api.client.post(f"{BASE}/schedules/{sid}:backfill", json=body, headers=headers)


async def test_the_backfill_route_creates_the_runs_and_counts_them(api: Api) -> None:
    sid = await http_schedule(api)

    response = await post_backfill(api, sid)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["existing"], body["dryRun"]) == (4, 0, False)
    runs = await api.sql('SELECT "trigger" FROM runs ORDER BY run_token')
    assert [r["trigger"] for r in runs] == [f"backfill:{sid}"] * 4
    again = (await post_backfill(api, sid)).json()
    assert (again["created"], again["existing"]) == (0, 4)


async def test_a_window_beyond_the_bound_is_refused_with_400(make_api: MakeApi) -> None:
    api = await make_api(max_backfill_runs=3)
    sid = await http_schedule(api)

    response = await post_backfill(api, sid)

    assert response.status_code == 400
    assert assert_envelope(response)["code"] == BackfillTooLarge.code
    assert await api.sql("SELECT run_id FROM runs") == []


async def test_backfill_needs_admin_and_a_reason(api: Api) -> None:
    sid = await http_schedule(api)

    reader = await post_backfill(api, sid, headers=api.headers("acme", scopes=(READ,)))
    no_reason = await post_backfill(api, sid, headers=api.headers("acme", reason=None))

    assert assert_envelope(reader)["code"] == "SCOPE_REQUIRED"
    assert no_reason.status_code in (400, 403)
    assert await api.sql("SELECT run_id FROM runs") == []


async def test_another_tenants_schedule_cannot_be_backfilled(api: Api) -> None:
    sid = await http_schedule(api, "acme")
    await api.publish("globex", NOOP)

    response = await post_backfill(
        api, sid, headers=api.headers("globex", scopes=(ADMIN,)), dryRun=True
    )

    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "SCHEDULE_NOT_FOUND"


async def test_triggers_held_by_a_drain_are_not_caught_up_but_can_be_backfilled(
    clocked: Clocked,
) -> None:
    await clocked.publish(dag(version=1))
    sid = await clocked.schedule(cron="* * * * *", overlap="allow", catchup="all")
    scheduler = clocked.scheduler()
    queues = clocked.orchestrator.queues
    await clocked.step_at(scheduler, "2026-01-01T00:01:00Z")
    await queues.act(TENANT, TENANT, "drain", OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:02:00Z")
    await clocked.step_at(scheduler, "2026-01-01T00:03:00Z")
    await queues.act(TENANT, TENANT, "resume", OPERATOR)
    await clocked.step_at(scheduler, "2026-01-01T00:04:00Z")
    assert await clocked.outcomes(sid) == [
        "started",
        "skipped_draining",
        "skipped_draining",
        "started",
    ]
    clocked.clock.set(parse_utc("2026-01-01T00:05:00Z"))  # the scheduler stays idle
    backfills = clocked.orchestrator.backfills

    made = await backfills.backfill(
        window(sid, "2026-01-01T00:01:00Z", "2026-01-01T00:05:00Z"), OPERATOR
    )

    assert [i.outcome for i in made.items] == ["scheduled", "created", "created", "scheduled"]
    assert len(await clocked.runs_of(sid)) == 2 and len(await backfill_runs(clocked, sid)) == 2
