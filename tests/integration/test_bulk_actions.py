"""Bulk actions over HTTP: cancel by filter with a dry run, disable with --cancel-queued,
schedules that pause when their version is disabled, and pause-all of a tenant."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

from stellaorch.engine import bulk_cancel  # noqa: E402

A, B = "acme", "globex"


def noop(dag_id: str, version: int = 1) -> dict[str, Any]:
    return spec(dag_id, [{"id": "s", "plugin": "noop"}], version=version)


async def queued_runs(api: Api, dag_id: str, n: int, tenant: str = A, **extra: Any) -> list[str]:
    """Runs that stay queued: no worker runs in these tests."""
    return [(await api.start(tenant, dag_id, {"n": i}, **extra))["runId"] for i in range(n)]


async def statuses(api: Api, run_ids: list[str]) -> set[str]:
    rows = await api.sql("SELECT run_id, status FROM runs")
    return {r["status"] for r in rows if r["run_id"] in run_ids}


async def bulk(api: Api, tenant: str = A, **body: Any) -> Any:
    document = {"reason": "runaway", **body}
    return await api.client.post(f"{BASE}/runs:cancel", json=document, headers=api.headers(tenant))


async def test_bulk_cancel_dry_run_lists_and_the_real_one_cancels_only_the_filter(
    api: Api,
) -> None:
    await api.publish(A, noop("etl"))
    await api.publish(A, noop("billing"))
    etl, billing = await queued_runs(api, "etl", 3), await queued_runs(api, "billing", 2)
    dry = await bulk(api, dagId="etl", status="queued", dryRun=True)
    assert dry.status_code == 200, dry.text
    assert [i["runId"] for i in dry.json()["items"]] == etl and dry.json()["dryRun"] is True
    assert await statuses(api, etl) == {"queued"}
    done = await bulk(api, dagId="etl")
    assert done.status_code == 200, done.text
    assert [i["runId"] for i in done.json()["items"]] == etl and done.json()["remaining"] == 0
    assert await statuses(api, etl) == {"cancelled"}
    assert await statuses(api, billing) == {"queued"}
    [audit] = (await api.get_json(A, "/audit?action=run.bulk_cancel"))["items"]
    assert audit["reason"] == "runaway" and audit["details"]["cancelled"] == etl


async def test_bulk_cancel_filters_by_version_and_time_window(api: Api) -> None:
    await api.publish(A, noop("etl", 1))
    await api.publish(A, noop("etl", 2))
    v1 = await queued_runs(api, "etl", 2, version=1)
    v2 = await queued_runs(api, "etl", 1, version=2)
    dry = (await bulk(api, dagId="etl", version="1", dryRun=True)).json()
    assert [i["runId"] for i in dry["items"]] == v1
    future = (await bulk(api, **{"from": "2100-01-01T00:00:00Z"}, dryRun=True)).json()
    assert future["items"] == []
    past = (await bulk(api, to="2000-01-01T00:00:00Z", dryRun=True)).json()
    assert past["items"] == []
    assert await statuses(api, v1 + v2) == {"queued"}


async def test_bulk_cancel_is_bounded_and_says_what_remains(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.publish(A, noop("etl"))
    ids = await queued_runs(api, "etl", 3)
    monkeypatch.setattr(bulk_cancel, "MAX_BULK_RUNS", 2)
    first = (await bulk(api)).json()
    assert [i["runId"] for i in first["items"]] == ids[:2] and first["remaining"] == 1
    second = (await bulk(api)).json()
    assert [i["runId"] for i in second["items"]] == ids[2:] and second["remaining"] == 0


@pytest.mark.parametrize(
    "body", [{"status": "completed"}, {"version": "1"}, {"reason": ""}, {"from": "yesterday"}]
)
async def test_bad_bulk_cancels_are_refused(api: Api, body: dict[str, Any]) -> None:
    await api.publish(A, noop("etl"))
    ids = await queued_runs(api, "etl", 1)
    response = await bulk(api, **body)
    assert response.status_code == 400, response.text
    assert_envelope(response)
    assert await statuses(api, ids) == {"queued"}


async def test_another_tenant_cannot_bulk_cancel_the_runs(api: Api) -> None:
    await api.publish(A, noop("etl"))
    ids = await queued_runs(api, "etl", 2)
    response = await bulk(api, B, dagId="etl")
    assert response.status_code == 200 and response.json()["items"] == []
    assert await statuses(api, ids) == {"queued"}
    headers = api.headers(A, scopes=["orchestrator:read"])
    response = await api.client.post(f"{BASE}/runs:cancel", json={"reason": "x"}, headers=headers)
    assert response.status_code == 403


async def test_disable_with_cancel_queued_cancels_that_versions_queued_runs(api: Api) -> None:
    await api.publish(A, noop("etl", 1))
    await api.publish(A, noop("etl", 2))
    v1, v2 = await queued_runs(api, "etl", 2, version=1), await queued_runs(api, "etl", 1)
    url = f"{BASE}/dags/etl/1:disable"
    response = await api.client.post(url, json={"cancelQueued": True}, headers=api.headers(A))
    assert response.status_code == 200, response.text
    assert sorted(response.json()["cancelledRuns"]) == sorted(v1)
    assert await statuses(api, v1) == {"cancelled"} and await statuses(api, v2) == {"queued"}


async def create_schedule(api: Api, tenant: str = A, **body: Any) -> str:
    document = {"dagId": "etl", "cron": "0 3 * * *", **body}
    response = await api.client.post(
        f"{BASE}/schedules", json=document, headers=api.headers(tenant)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["scheduleId"])


async def test_disabling_a_version_pauses_its_schedules_with_the_reason(api: Api) -> None:
    await api.publish(A, noop("etl", 1))
    await api.publish(A, noop("etl", 2))
    pinned, latest = await create_schedule(api, version="2"), await create_schedule(api)
    other = await create_schedule(api, version="1")
    response = await api.client.post(f"{BASE}/dags/etl/2:disable", headers=api.headers(A))
    assert sorted(response.json()["pausedSchedules"]) == sorted([pinned, latest])
    views = {s: await api.get_json(A, f"/schedules/{s}") for s in (pinned, latest, other)}
    assert [views[s]["status"] for s in (pinned, latest, other)] == ["paused", "paused", "active"]
    assert "version 2 was disabled" in views[pinned]["pausedReason"]
    assert "not falling back" in views[latest]["pausedReason"]
    resumed = await api.client.post(f"{BASE}/schedules/{pinned}:resume", headers=api.headers(A))
    assert resumed.json()["pausedReason"] is None


async def test_a_rollback_moves_latest_schedules_without_pausing_them(api: Api) -> None:
    await api.publish(A, noop("etl", 1))
    await api.publish(A, noop("etl", 2))
    latest = await create_schedule(api)
    url = f"{BASE}/dags/etl:rollback"
    response = await api.client.post(url, json={"to": "1"}, headers=api.headers(A))
    assert response.status_code == 200, response.text
    assert (await api.get_json(A, f"/schedules/{latest}"))["status"] == "active"


async def test_pause_all_pauses_every_schedule_of_the_tenant_only(api: Api) -> None:
    await api.publish(A, noop("etl"))
    await api.publish(B, noop("etl"))
    mine = [await create_schedule(api), await create_schedule(api)]
    theirs = await create_schedule(api, B)
    response = await api.client.post(
        f"{BASE}/schedules:pause", headers=api.headers(A, reason="freeze")
    )
    assert response.status_code == 200, response.text
    assert sorted(response.json()["paused"]) == sorted(mine)
    for sid in mine:
        view = await api.get_json(A, f"/schedules/{sid}")
        assert (view["status"], view["pausedReason"]) == ("paused", "freeze")
    assert (await api.get_json(B, f"/schedules/{theirs}"))["status"] == "active"
    no_reason = await api.client.post(
        f"{BASE}/schedules:pause", headers=api.headers(A, reason=None)
    )
    assert no_reason.status_code == 400
