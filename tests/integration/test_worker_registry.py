"""The worker registry: live workers listed by GET /workers, counted by health and queues."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, spec  # noqa: E402

from stellaorch import __version__  # noqa: E402
from stellaorch.engine.workers import presence  # noqa: E402

A, B = "acme", "globex"
READ = "orchestrator:read"
ONE_STEP = spec("one", [{"id": "x", "plugin": "noop"}])


async def workers(api: Api, tenant: str, token_tenants: list[str] | None = None) -> Any:
    """GET /workers as a reader of `tenant` (a token for `token_tenants`, default the tenant)."""
    headers = api.headers(tenant, scopes=[READ], token_tenants=token_tenants)
    response = await api.client.get(f"{BASE}/workers", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def ids(api: Api, tenant: str = A, token_tenants: list[str] | None = None) -> list[str]:
    """The ids GET /workers lists."""
    return [w["workerId"] for w in (await workers(api, tenant, token_tenants))["items"]]


async def beat(api: Api, worker_id: str, tenants: tuple[str, ...] = ()) -> None:
    """A heartbeat as a worker process with that id and tenants filter would send it."""
    await api.orchestrator.workers.beat(presence(worker_id, tenants, 4, 1))


async def health(api: Api, tenant: str) -> dict[str, Any]:
    """GET /admin/health as a reader of `tenant`."""
    headers = api.headers(tenant, scopes=[READ])
    response = await api.client.get(f"{BASE}/admin/health", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def until(check: Any, within: float = 10.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_an_idle_worker_is_listed_with_who_it_is(make_api: MakeApi) -> None:
    api = await make_api(worker_concurrency=7)
    api.start_worker()
    await until(lambda: _has_items(api))
    document = await workers(api, A, token_tenants=["*"])
    [row] = document["items"]
    assert row["workerId"].startswith(f"{os.uname().nodename}:{os.getpid()}:")
    expected = (os.uname().nodename, os.getpid(), __version__)
    assert (row["host"], row["pid"], row["version"]) == expected
    assert (row["concurrency"], row["slotsInUse"]) == (7, 0)
    assert row["servesAllTenants"] is True and row["tenants"] == []
    assert row["startedUtc"] and row["lastSeenUtc"] and row["lastSeenAgeSeconds"] >= 0
    assert document["ttlSeconds"] == api.settings.worker_ttl
    assert document["nextPageToken"] is None


async def _has_items(api: Api) -> bool:
    return bool(await ids(api, A, ["*"]))


async def test_a_worker_that_stops_cleanly_leaves_the_registry(api: Api) -> None:
    api.start_worker()
    await until(lambda: _has_items(api))
    await api.stop_worker()
    assert await ids(api, A, ["*"]) == []


async def test_a_worker_not_heard_from_within_the_ttl_is_gone_and_pruned(make_api: MakeApi) -> None:
    api = await make_api(worker_ttl_seconds=2.0)
    await beat(api, "ghost:1:aa")
    assert await ids(api, A, ["*"]) == ["ghost:1:aa"]
    await asyncio.sleep(2.2)
    assert await ids(api, A, ["*"]) == []
    await beat(api, "alive:2:bb")  # every heartbeat prunes the stale rows
    rows = await api.sql("SELECT worker_id FROM workers")
    assert [r["worker_id"] for r in rows] == ["alive:2:bb"]


async def test_a_tenant_token_sees_only_workers_serving_it_and_no_other_tenant(api: Api) -> None:
    await beat(api, "w1:1:aa", (A, B))
    await beat(api, "w2:2:bb", (B,))
    await beat(api, "w3:3:cc")
    document = await workers(api, A)
    by_id = {w["workerId"]: w for w in document["items"]}
    assert sorted(by_id) == ["w1:1:aa", "w3:3:cc"]
    assert by_id["w1:1:aa"]["tenants"] == [A] and by_id["w1:1:aa"]["servesAllTenants"] is False
    assert by_id["w3:3:cc"]["tenants"] == [] and by_id["w3:3:cc"]["servesAllTenants"] is True
    assert B not in str(document)
    everyone = {w["workerId"]: w for w in (await workers(api, A, ["*"]))["items"]}
    assert sorted(everyone) == ["w1:1:aa", "w2:2:bb", "w3:3:cc"]
    assert everyone["w1:1:aa"]["tenants"] == [A, B]


async def test_workers_page_by_id(api: Api) -> None:
    for n in range(3):
        await beat(api, f"w{n}:1:aa")
    headers = api.headers(A, scopes=[READ], token_tenants=["*"])
    first = (await api.client.get(f"{BASE}/workers?page_size=2", headers=headers)).json()
    assert [w["workerId"] for w in first["items"]] == ["w0:1:aa", "w1:1:aa"]
    token = first["nextPageToken"]
    second = await api.client.get(f"{BASE}/workers", params={"page_token": token}, headers=headers)
    assert [w["workerId"] for w in second.json()["items"]] == ["w2:1:aa"]
    assert second.json()["nextPageToken"] is None


async def test_workers_need_a_token(api: Api) -> None:
    response = await api.client.get(f"{BASE}/workers", headers={"X-Stella-Tenant": A})
    assert response.status_code == 401
    assert_envelope(response)


async def test_health_is_degraded_when_queued_work_has_no_live_worker(api: Api) -> None:
    await api.publish(A, ONE_STEP)
    await api.start(A, "one")
    document = await health(api, A)
    assert document["status"] == "degraded" and document["ready"] is True
    assert [r["code"] for r in document["reasons"]] == ["NO_LIVE_WORKER"]
    assert document["worker"] == {"running": False, "live": 0}
    await beat(api, "other:1:aa", (B,))  # a worker of another tenant does not help
    assert (await health(api, A))["status"] == "degraded"
    await beat(api, "mine:2:bb", (A,))  # one in another process that serves A does
    document = await health(api, A)
    assert document["status"] == "ok" and document["reasons"] == []
    assert document["worker"] == {"running": False, "live": 1}


async def test_health_of_an_empty_queue_needs_no_worker(api: Api) -> None:
    document = await health(api, A)
    assert document["status"] == "ok" and document["worker"]["live"] == 0


async def test_the_queue_view_counts_live_workers_serving_the_tenant(api: Api) -> None:
    await beat(api, "w1:1:aa", (A,))
    await beat(api, "w2:2:bb", (B,))
    await beat(api, "w3:3:cc")
    [queue] = (await api.get_json(A, "/queues"))["items"]
    assert queue["workersSeen"] == 2
