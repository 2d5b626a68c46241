"""Schedules over HTTP: create, list, read, pause, resume, clear, delete; bad input; tenants;
and the runbook's "Scheduler runaway" incident played end to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stellaorch.settings import Settings

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import ADMIN, BASE, READ, Api, MakeApi, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
NOOP = spec("nightly", [{"id": "s", "plugin": "noop"}])


async def create(api: Api, tenant: str = A, **body: Any) -> Any:
    """POST /schedules with defaults for the required fields."""
    document = {"dagId": "nightly", "cron": "0 3 * * *", **body}
    return await api.client.post(f"{BASE}/schedules", json=document, headers=api.headers(tenant))


async def schedule_rows(api: Api) -> list[dict[str, Any]]:
    return await api.sql("SELECT schedule_id, status FROM schedules ORDER BY schedule_id")


async def audit_actions(api: Api) -> list[str]:
    rows = await api.sql("SELECT action FROM audit_log WHERE action LIKE 'schedule.%' ORDER BY id")
    return [r["action"] for r in rows]


# -- the happy path -----------------------------------------------------------------------
async def test_create_returns_the_schedule_with_its_next_fire_time(api: Api) -> None:
    await api.publish(A, NOOP)

    response = await create(
        api, timezone="Europe/Berlin", inputs={"x": 1}, overlap="buffer_one", jitterSeconds=5
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["dagId"] == "nightly" and body["version"] is None
    assert (body["timezone"], body["overlap"], body["catchup"]) == (
        "Europe/Berlin",
        "buffer_one",
        "latest",
    )
    assert body["inputs"] == {"x": 1} and body["status"] == "active"
    assert body["nextFireUtc"].endswith(("T01:00:00.000Z", "T02:00:00.000Z"))
    assert await audit_actions(api) == ["schedule.create"]


async def test_get_list_pause_resume_clear_and_delete(api: Api) -> None:
    await api.publish(A, NOOP)
    ids = [(await create(api, cron=f"{m} 3 * * *")).json()["scheduleId"] for m in range(3)]
    headers = api.headers(A)

    first = await api.client.get(f"{BASE}/schedules", params={"page_size": 2}, headers=headers)
    token = first.json()["nextPageToken"]
    rest = await api.client.get(f"{BASE}/schedules", params={"page_token": token}, headers=headers)
    listed = [s["scheduleId"] for s in first.json()["items"] + rest.json()["items"]]
    assert listed == ids and rest.json()["nextPageToken"] is None

    sid = ids[0]
    paused = await api.client.post(f"{BASE}/schedules/{sid}:pause", headers=headers)
    resumed = await api.client.post(f"{BASE}/schedules/{sid}:resume", headers=headers)
    cleared = await api.client.post(f"{BASE}/schedules/{sid}:clear", headers=headers)
    deleted = await api.client.delete(f"{BASE}/schedules/{sid}", headers=headers)
    gone = await api.client.get(f"{BASE}/schedules/{sid}", headers=headers)

    assert (paused.json()["status"], paused.json()["nextFireUtc"]) == ("paused", None)
    assert resumed.json()["status"] == "active"
    assert cleared.status_code == 200 and cleared.json()["cleared"] == 0
    assert deleted.json()["status"] == "deleted"
    assert gone.status_code == 404 and assert_envelope(gone)["code"] == "SCHEDULE_NOT_FOUND"
    assert await audit_actions(api) == ["schedule.create"] * 3 + [
        "schedule.pause",
        "schedule.resume",
        "schedule.clear",
        "schedule.delete",
    ]
    listing = await api.get_json(A, "/schedules")
    assert [s["scheduleId"] for s in listing["items"]] == ids[1:]
    deleted_only = await api.get_json(A, "/schedules?status=deleted")
    assert [s["scheduleId"] for s in deleted_only["items"]] == [sid]


async def test_get_shows_recent_firings(api: Api) -> None:
    await api.publish(A, NOOP)
    sid = (await create(api, cron="* * * * * *", overlap="allow")).json()["scheduleId"]
    api.orchestrator.start_scheduler(poll_seconds=0.2)
    await asyncio.sleep(1.3)
    await api.orchestrator.stop_scheduler()

    body = await api.get_json(A, f"/schedules/{sid}")

    assert body["recentFirings"], body
    newest = body["recentFirings"][0]
    assert newest["outcome"] == "started" and newest["runId"]
    run = await api.get_json(A, f"/runs/{newest['runId']}")
    assert run["trigger"] == f"schedule:{sid}"
    assert run["runToken"] == f"schedule:{sid}:{newest['scheduledUtc']}"


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"cron": "61 * * * *"}, 400, "CRON_INVALID"),
        ({"cron": "* * *"}, 400, "CRON_INVALID"),
        ({"timezone": "Mars/Olympus"}, 400, "TIMEZONE_INVALID"),
        ({"version": 1}, 409, "DAG_VERSION_DISABLED"),
        ({"version": "7"}, 404, "DAG_NOT_FOUND"),
        ({"dagId": "unknown"}, 404, "DAG_NOT_FOUND"),
        ({"jitterSeconds": -1}, 400, "VALIDATION_FAILED"),
        ({"jitterSeconds": 10**9}, 400, "VALIDATION_FAILED"),
        ({"catchupWindowSeconds": -5}, 400, "VALIDATION_FAILED"),
        ({"catchupWindowSeconds": 10**9}, 400, "VALIDATION_FAILED"),
        ({"overlap": "queue"}, 400, "VALIDATION_FAILED"),
        ({"catchup": "some"}, 400, "VALIDATION_FAILED"),
        ({"inputs": [1]}, 400, "VALIDATION_FAILED"),
        ({"cron": ""}, 400, "VALIDATION_FAILED"),
    ],
)
async def test_bad_schedules_are_clear_errors_and_nothing_is_created(
    api: Api, body: dict[str, Any], status: int, code: str
) -> None:
    await api.publish(A, NOOP)
    await api.publish(A, spec("nightly", [{"id": "s", "plugin": "noop"}], version=2))
    disabled = await api.client.post(f"{BASE}/dags/nightly/1:disable", headers=api.headers(A))
    assert disabled.status_code == 200

    response = await create(api, **body)

    assert response.status_code == status, response.text
    assert assert_envelope(response)["code"] == code
    assert await schedule_rows(api) == []
    assert await audit_actions(api) == []


async def test_admin_changes_need_the_admin_scope_and_a_reason(api: Api) -> None:
    await api.publish(A, NOOP)
    body = {"dagId": "nightly", "cron": "0 3 * * *"}

    no_reason = await api.client.post(
        f"{BASE}/schedules", json=body, headers=api.headers(A, reason=None)
    )
    reader = await api.client.post(
        f"{BASE}/schedules", json=body, headers=api.headers(A, scopes=(READ,))
    )
    listing = await api.client.get(f"{BASE}/schedules", headers=api.headers(A, scopes=(READ,)))

    assert (
        no_reason.status_code == 400 and assert_envelope(no_reason)["code"] == "VALIDATION_FAILED"
    )
    assert reader.status_code == 403 and assert_envelope(reader)["code"] == "SCOPE_REQUIRED"
    assert listing.status_code == 200
    assert await schedule_rows(api) == []


# -- tenants ------------------------------------------------------------------------------
async def test_another_tenants_schedule_is_not_found_on_every_route(api: Api) -> None:
    await api.publish(A, NOOP)
    await api.publish(B, NOOP)
    sid = (await create(api, A)).json()["scheduleId"]
    before = await api.get_json(A, f"/schedules/{sid}")
    as_b = api.headers(B, scopes=(ADMIN,))

    responses = [
        await api.client.get(f"{BASE}/schedules/{sid}", headers=as_b),
        await api.client.post(f"{BASE}/schedules/{sid}:pause", headers=as_b),
        await api.client.post(f"{BASE}/schedules/{sid}:resume", headers=as_b),
        await api.client.post(f"{BASE}/schedules/{sid}:clear", headers=as_b),
        await api.client.delete(f"{BASE}/schedules/{sid}", headers=as_b),
    ]
    b_list = await api.get_json(B, "/schedules")

    for response in responses:
        assert response.status_code == 404, response.text
        assert assert_envelope(response)["code"] == "SCHEDULE_NOT_FOUND"
    assert b_list["items"] == []
    assert await api.get_json(A, f"/schedules/{sid}") == before


# -- runbook: Scheduler runaway -----------------------------------------------------------
async def queue_depth(api: Api, tenant: str = A) -> int:
    health = await api.get_json(tenant, "/admin/health")
    return int(sum(q["depth"] for q in health["queues"]))


async def test_runbook_scheduler_runaway_disable_clear_and_the_queue_drains(
    make_api: Any,
) -> None:
    api: Api = await make_api(worker_concurrency=1)
    slow = [{"id": f"s{i}", "plugin": "sleep", "with": {"seconds": 0.3}} for i in range(4)]
    await api.publish(A, spec("runaway", slow))
    body = {"dagId": "runaway", "version": 1, "cron": "* * * * * *", "overlap": "allow"}
    sid = (await create(api, **body)).json()["scheduleId"]
    api.start_worker()
    api.orchestrator.start_scheduler(poll_seconds=0.2)
    await asyncio.sleep(2.2)  # one run a second, each needing 1.2 s of the only worker slot
    assert await queue_depth(api) > 0

    # The runbook: disable the offending DAG version; clear scheduled triggers.
    headers = api.headers(A, reason="INC-42 scheduler runaway")
    disabled = await api.client.post(f"{BASE}/dags/runaway/1:disable", headers=headers)
    cleared = await api.client.post(f"{BASE}/schedules/{sid}:clear", headers=headers)
    assert (disabled.status_code, cleared.status_code) == (200, 200)
    runs_after_disable = len(await api.sql("SELECT run_id FROM runs"))

    # Confirm the queue drains: no new runs, depth reaches 0, running runs finish.
    for _ in range(200):
        if await queue_depth(api) == 0:
            break
        await asyncio.sleep(0.05)
    assert await queue_depth(api) == 0
    await asyncio.sleep(1.1)  # a trigger later: still no new run, still nothing queued
    assert await queue_depth(api) == 0
    statuses = await api.sql("SELECT status FROM runs")
    assert len(statuses) == runs_after_disable
    assert {r["status"] for r in statuses} <= {"completed", "running"}
    # The schedule paused itself when its version was disabled: no rejected trigger per tick.
    rejected = await api.sql(
        "SELECT COUNT(*) AS n FROM schedule_firings WHERE outcome = 'rejected_disabled'"
    )
    assert rejected[0]["n"] == 0
    assert disabled.json()["pausedSchedules"] == [sid]
    view = await api.get_json(A, f"/schedules/{sid}")
    assert view["status"] == "paused" and "version 1 was disabled" in view["pausedReason"]
    new_run = await api.client.post(
        f"{BASE}/runs", json={"dagId": "runaway", "version": 1}, headers=headers
    )
    assert new_run.status_code == 409
    assert assert_envelope(new_run)["code"] == "DAG_VERSION_DISABLED"
    await api.orchestrator.stop_scheduler()


# -- operator bounds ----------------------------------------------------------------------
@pytest.mark.parametrize("cron", ["* * * * * *", "*/30 * * * * *", "0,1 3 * * *", "*/2 * * * *"])
async def test_a_cron_firing_more_often_than_the_minimum_is_refused(
    make_api: MakeApi, cron: str
) -> None:
    api = await make_api(schedule_min_interval_seconds=300)
    await api.publish(A, NOOP)
    response = await create(api, cron=cron)
    assert response.status_code == 400, response.text
    assert assert_envelope(response)["code"] == "SCHEDULE_TOO_FREQUENT"
    assert await schedule_rows(api) == []
    assert (await create(api, cron="*/5 * * * *")).status_code == 201


async def test_the_default_minimum_interval_is_one_minute(make_api: MakeApi) -> None:
    default = Settings.model_fields["schedule_min_interval_seconds"].default
    assert default == 60
    api = await make_api(schedule_min_interval_seconds=default)
    await api.publish(A, NOOP)
    assert assert_envelope(await create(api, cron="*/10 * * * * *"))["code"] == (
        "SCHEDULE_TOO_FREQUENT"
    )
    assert (await create(api, cron="* * * * *")).status_code == 201


async def test_a_tenant_has_at_most_the_configured_number_of_schedules(make_api: MakeApi) -> None:
    api = await make_api(max_schedules_per_tenant=2)
    for tenant in (A, B):
        await api.publish(tenant, NOOP)
    first = (await create(api)).json()["scheduleId"]
    assert (await create(api)).status_code == 201
    refused = await create(api)
    assert refused.status_code == 409
    assert assert_envelope(refused)["code"] == "SCHEDULE_LIMIT_REACHED"
    assert (await create(api, tenant=B)).status_code == 201  # another tenant's cap is its own
    deleted = await api.client.delete(f"{BASE}/schedules/{first}", headers=api.headers(A))
    assert deleted.status_code == 200
    assert (await create(api)).status_code == 201
