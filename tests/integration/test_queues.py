"""Queue operations over HTTP: figures, pause, resume, drain; another tenant's queue; audit."""

from __future__ import annotations

import asyncio

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
NOOP = spec("job", [{"id": "s", "plugin": "noop"}])


async def queue(api: Api, tenant: str = A) -> dict:
    """The tenant's one queue row of GET /queues."""
    body = await api.get_json(tenant, "/queues")
    assert len(body["items"]) == 1
    return dict(body["items"][0])


async def steer(api: Api, action: str, tenant: str = A, as_tenant: str = A) -> object:
    return await api.client.post(f"{BASE}/queues/{tenant}:{action}", headers=api.headers(as_tenant))


async def test_get_queues_shows_depth_and_oldest_age(api: Api) -> None:
    await api.publish(A, NOOP)
    for _ in range(3):
        await api.start(A, "job")
    q = await queue(api)
    assert (q["tenant"], q["depth"], q["inFlight"], q["retrying"]) == (A, 3, 0, 0)
    assert q["oldestAgeSeconds"] >= 0
    assert (q["paused"], q["draining"], q["workersSeen"]) == (False, False, 0)


async def test_get_queues_needs_only_the_read_scope(api: Api) -> None:
    response = await api.client.get(f"{BASE}/queues", headers=api.headers(A, scopes=(READ,)))
    assert response.status_code == 200


async def test_pause_leases_nothing_and_resume_lets_work_finish(api: Api) -> None:
    await api.publish(A, NOOP)
    assert (await steer(api, "pause")).status_code == 200
    run = await api.start(A, "job")
    api.start_worker()
    await asyncio.sleep(0.3)
    assert (await queue(api))["depth"] == 1
    assert (await api.get_json(A, f"/runs/{run['runId']}"))["status"] == "queued"
    resumed = await steer(api, "resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert await api.wait(A, run["runId"]) == "completed"


async def test_drain_rejects_new_runs_with_queue_draining(api: Api) -> None:
    await api.publish(A, NOOP)
    drained = await steer(api, "drain")
    assert drained.status_code == 200 and drained.json()["draining"] is True
    refused = await api.client.post(f"{BASE}/runs", json={"dagId": "job"}, headers=api.headers(A))
    assert refused.status_code == 409
    assert assert_envelope(refused)["code"] == "QUEUE_DRAINING"
    assert await api.sql("SELECT run_id FROM runs") == []
    await steer(api, "resume")
    await api.start(A, "job")


async def test_a_queue_op_for_another_tenant_is_forbidden_and_changes_nothing(api: Api) -> None:
    response = await steer(api, "pause", tenant=A, as_tenant=B)
    assert response.status_code == 403
    assert_envelope(response)
    assert await api.sql("SELECT tenant FROM tenant_queues WHERE paused") == []
    assert await api.sql("SELECT id FROM audit_log") == []


async def test_queue_ops_need_a_reason_and_are_audited(api: Api) -> None:
    no_reason = await api.client.post(
        f"{BASE}/queues/{A}:pause", headers=api.headers(A, reason=None)
    )
    assert no_reason.status_code == 400
    for action in ("pause", "drain", "resume"):
        await steer(api, action)
    rows = await api.sql("SELECT action, target, reason FROM audit_log ORDER BY id")
    assert [r["action"] for r in rows] == ["queue.pause", "queue.drain", "queue.resume"]
    assert {r["target"] for r in rows} == {f"queue:{A}"}
