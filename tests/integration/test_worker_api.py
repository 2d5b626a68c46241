"""The worker API over HTTP: queue steps claimed, heartbeaten, reported and completed once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, MakeApi, assert_envelope, spec  # noqa: E402

WORKER = "orchestrator:worker"
A, B = "tenant-alpha", "tenant-bravo"


def queue_dag(dag_id: str = "resize", task: str = "resize-image", **extra: Any) -> dict[str, Any]:
    """One queue step, then a noop."""
    step = {"id": "work", "plugin": "queue", "with": {"task": task, "width": 64, **extra}}
    return spec(dag_id, [step, {"id": "after", "plugin": "noop"}], [("work", "after")])


def as_worker(api: Api, tenant: str) -> dict[str, str]:
    """Headers of a token that holds only the worker scope."""
    return api.headers(tenant, scopes=[WORKER], reason=None)


async def claim(api: Api, tenant: str, wait: float = 5.0, **body: Any) -> list[dict[str, Any]]:
    """POST /tasks:claim for resize-image; returns the leases."""
    payload = {"workerId": "w1", "tasks": ["resize-image"], "waitSeconds": wait, **body}
    response = await api.client.post(
        f"{BASE}/tasks:claim", json=payload, headers=as_worker(api, tenant)
    )
    assert response.status_code == 200, response.text
    leases: list[dict[str, Any]] = response.json()["leases"]
    return leases


async def post(api: Api, tenant: str, path: str, body: Any) -> Any:
    """POST a worker route as the tenant's worker."""
    return await api.client.post(f"{BASE}{path}", json=body, headers=as_worker(api, tenant))


@pytest.fixture
async def served(make_api: MakeApi) -> Api:
    """An app with an engine worker, short external leases and the queue DAG in A and B."""
    api = await make_api(task_lease_ttl_seconds=0.6)
    await api.publish(A, queue_dag())
    await api.publish(B, queue_dag())
    api.start_worker()
    return api


async def test_claim_progress_log_complete_and_a_repeat_is_refused(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    [lease] = await claim(api, A)
    assert lease["runId"] == run["runId"] and lease["stepId"] == "work"
    assert lease["attempt"] == 1 and lease["params"] == {"width": 64}
    assert lease["traceparent"].startswith("00-") and lease["deadlineUtc"]
    beat = await post(api, A, "/tasks:heartbeat", {"leaseIds": [lease["leaseId"]]})
    assert beat.json()["leases"][0] | {"expiresUtc": None} == {
        "leaseId": lease["leaseId"],
        "held": True,
        "cancelled": False,
        "expiresUtc": None,
    }
    lid = lease["leaseId"]
    done = await post(api, A, f"/tasks/{lid}:progress", {"fraction": 0.5, "message": "half"})
    assert done.status_code == 200, done.text
    view = await api.get_json(A, f"/runs/{run['runId']}")
    work = next(s for s in view["steps"] if s["stepId"] == "work")
    assert work["progress"] == {"fraction": 0.5, "message": "half"}
    logged = await post(api, A, f"/tasks/{lid}:log", {"lines": ["resizing pixels"]})
    assert logged.status_code == 200, logged.text
    completed = await post(api, A, f"/tasks/{lid}:complete", {"outputs": {"bytes": 12}})
    assert completed.status_code == 200, completed.text
    assert await api.wait(A, run["runId"]) == "completed"
    again = await post(api, A, f"/tasks/{lid}:complete", {"outputs": {"bytes": 99}})
    assert again.status_code == 404 and assert_envelope(again)["code"] == "LEASE_LOST"
    step = await api.get_json(A, f"/runs/{run['runId']}/steps/work")
    assert step["outputs"] == {"bytes": 12}, step
    logs = await api.get_json(A, f"/runs/{run['runId']}/steps/work/logs")
    assert "resizing pixels" in str(logs)


async def test_long_poll_wakes_at_once_and_batches_claim_and_complete(served: Api) -> None:
    api = served
    waiting = asyncio.create_task(claim(api, A, wait=10.0, capacity=5))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    runs = [await api.start(A, "resize") for _ in range(3)]
    leases = await waiting
    assert time.monotonic() - started < 2.0  # woken by the offer, not by the 10 s timeout
    while len(leases) < 3:  # a claim returns with what is there; the rest comes next
        more = await claim(api, A, wait=2.0, capacity=5)
        assert more, leases
        leases += more
    assert sorted(x["runId"] for x in leases) == sorted(r["runId"] for r in runs)
    results = [{"leaseId": x["leaseId"], "outputs": {"ok": True}} for x in leases]
    answer = await post(api, A, "/tasks:complete", {"results": results + results[:1]})
    accepted = [r["accepted"] for r in answer.json()["results"]]
    assert accepted == [True, True, True, False]  # the repeat within the batch is refused
    assert [await api.wait(A, r["runId"]) for r in runs] == ["completed"] * 3


async def test_error_completion_fails_the_step_with_its_code(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    [lease] = await claim(api, A)
    error = {"code": "IMAGE_BROKEN", "message": "cannot decode", "retryable": False}
    response = await post(api, A, f"/tasks/{lease['leaseId']}:complete", {"error": error})
    assert response.status_code == 200, response.text
    assert await api.wait(A, run["runId"]) == "failed"
    step = await api.get_json(A, f"/runs/{run['runId']}/steps/work")
    assert step["attempts"][-1]["error"]["code"] == "IMAGE_BROKEN", step


async def test_a_lease_without_heartbeats_lapses_and_is_claimed_again(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    [first] = await claim(api, A)
    [second] = await claim(api, A, wait=5.0)  # offered again once the 0.6 s TTL lapsed
    assert second["runId"] == run["runId"] and second["leaseId"] != first["leaseId"]
    stale = await post(api, A, f"/tasks/{first['leaseId']}:complete", {"outputs": {}})
    assert stale.status_code == 404
    ok = await post(api, A, f"/tasks/{second['leaseId']}:complete", {"outputs": {"n": 2}})
    assert ok.status_code == 200, ok.text
    assert await api.wait(A, run["runId"]) == "completed"


async def test_a_released_lease_is_offered_again_at_once(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    [first] = await claim(api, A)
    released = await post(api, A, f"/tasks/{first['leaseId']}:release", None)
    assert released.status_code == 200, released.text
    [second] = await claim(api, A, wait=0.2)  # well before the 0.6 s TTL
    assert second["runId"] == run["runId"] and second["attempt"] == first["attempt"]
    ok = await post(api, A, f"/tasks/{second['leaseId']}:complete", {"outputs": {}})
    assert ok.status_code == 200
    assert await api.wait(A, run["runId"]) == "completed"


async def test_heartbeat_says_when_the_run_was_cancelled(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    [lease] = await claim(api, A)
    cancel = await api.client.post(
        f"{BASE}/runs/{run['runId']}:cancel", json={"reason": "t"}, headers=api.headers(A)
    )
    assert cancel.status_code in (200, 202), cancel.text
    assert await api.wait(A, run["runId"]) == "cancelled"
    beat = await post(api, A, "/tasks:heartbeat", {"leaseIds": [lease["leaseId"]]})
    assert beat.json()["leases"][0]["cancelled"] is True
    late = await post(api, A, f"/tasks/{lease['leaseId']}:complete", {"outputs": {}})
    assert late.status_code == 404


async def test_a_worker_of_tenant_b_never_receives_or_touches_tenant_a_work(served: Api) -> None:
    api = served
    run = await api.start(A, "resize")
    assert await claim(api, B, wait=0.3) == []
    [lease] = await claim(api, A)
    lid = lease["leaseId"]
    beat = await post(api, B, "/tasks:heartbeat", {"leaseIds": [lid]})
    unheld = {"leaseId": lid, "held": False, "cancelled": False, "expiresUtc": None}
    assert beat.json()["leases"] == [unheld]
    for path, body in (
        (f"/tasks/{lid}:progress", {"fraction": 0.1}),
        (f"/tasks/{lid}:log", {"lines": ["x"]}),
        (f"/tasks/{lid}:complete", {"outputs": {}}),
        (f"/tasks/{lid}:release", None),
    ):
        response = await post(api, B, path, body)
        assert response.status_code == 404, (path, response.text)
    batch = await post(api, B, "/tasks:complete", {"results": [{"leaseId": lid, "outputs": {}}]})
    assert batch.json()["results"][0]["accepted"] is False
    ok = await post(api, A, f"/tasks/{lid}:complete", {"outputs": {}})
    assert ok.status_code == 200
    assert await api.wait(A, run["runId"]) == "completed"


async def test_the_worker_scope_reaches_only_worker_routes(served: Api) -> None:
    api = served
    runs = await api.client.get(f"{BASE}/runs", headers=as_worker(api, A))
    assert runs.status_code == 403 and assert_envelope(runs)["code"] == "SCOPE_REQUIRED"
    reader = api.headers(A, scopes=[READ])
    body = {"workerId": "w", "tasks": ["resize-image"]}
    refused = await api.client.post(f"{BASE}/tasks:claim", json=body, headers=reader)
    assert refused.status_code == 403
    foreign = api.headers(B, scopes=[WORKER], token_tenants=[A])
    crossed = await api.client.post(f"{BASE}/tasks:claim", json=body, headers=foreign)
    assert crossed.status_code == 403 and assert_envelope(crossed)["code"] == "TENANT_FORBIDDEN"


async def test_publish_refuses_a_queue_step_without_a_task(api: Api) -> None:
    bad = spec("nope", [{"id": "a", "plugin": "queue", "with": {"queue": "gpu"}}])
    response = await api.client.post(f"{BASE}/dags", json=bad, headers=api.headers(A))
    assert response.status_code == 400, response.text
    assert "task" in response.text
