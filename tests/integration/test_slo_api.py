"""SLOs over HTTP: burn computed from a tenant's own runs, backlog windows, objectives."""

from __future__ import annotations

from typing import Any

from api_fixtures import ADMIN, BASE, READ, Api, api, assert_envelope, keys_dir, make_api, spec

from stellaorch.engine.slo import BacklogSampler

__all__ = ["api", "keys_dir", "make_api"]

A, B = "acme", "bravo"
OK = spec("ok", [{"id": "a", "plugin": "noop"}])
BAD = spec("bad", [{"id": "a", "plugin": "fail", "with": {"code": "BROKEN"}}])


async def slos(api: Api, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's SLO documents by id."""
    body = await api.get_json(tenant, "/admin/slos")
    return {item["id"]: item for item in body["items"]}


async def run_all(api: Api, tenant: str, dags: list[str]) -> list[str]:
    """Start one run per DAG id and wait for every one to end; their ids."""
    ids = [(await api.start(tenant, dag))["runId"] for dag in dags]
    for run_id in ids:
        await api.wait(tenant, run_id)
    return ids


async def test_failed_runs_burn_the_failure_budget_of_their_tenant_only(api: Api) -> None:
    for tenant in (A, B):
        await api.publish(tenant, OK)
        await api.publish(tenant, BAD)
    api.start_worker()
    await run_all(api, A, ["ok", "ok", "ok", "bad"])
    await run_all(api, B, ["ok"])

    failure = (await slos(api, A))["run-failure-rate"]
    assert failure["events"]["28d"] == {"total": 4, "bad": 1}
    assert failure["events"]["1h"] == {"total": 4, "bad": 1}
    assert failure["burn"]["1h"] == 25.0  # a quarter failed where 1 % may
    assert failure["status"] == "critical" and failure["objective"] == 0.99
    health = await api.get_json(A, "/admin/health")
    assert health["status"] == "degraded"
    assert any(r["code"] == "SLO_BURN_CRITICAL" for r in health["reasons"]), health["reasons"]
    assert {s["id"] for s in health["slos"]} >= {"run-failure-rate", "backlog"}

    other = (await slos(api, B))["run-failure-rate"]
    assert other["events"]["28d"] == {"total": 1, "bad": 0}
    assert other["status"] == "ok" and other["burn"]["28d"] == 0.0


async def test_a_run_over_the_duration_threshold_is_a_bad_event(api: Api) -> None:
    await api.publish(A, OK)
    api.start_worker()
    slow, _ = await run_all(api, A, ["ok", "ok"])
    await api.sql("UPDATE runs SET started_us = ended_us - 400000000 WHERE run_id = :r", r=slow)

    duration = (await slos(api, A))["run-duration"]
    assert duration["threshold"] == 300.0
    assert duration["events"]["6h"] == {"total": 2, "bad": 1}
    assert duration["burn"]["6h"] == 10.0  # half over 300 s where 5 % may be

    put = await api.client.put(
        f"{BASE}/admin/slos/run-duration",
        json={"objective": 0.9, "threshold": 500},
        headers=api.headers(A),
    )
    assert put.status_code == 200, put.text
    assert put.json()["events"]["6h"] == {"total": 2, "bad": 0}
    assert (await slos(api, B))["run-duration"]["threshold"] == 300.0  # A's change only


async def test_backlog_windows_are_sampled_per_tenant(api: Api) -> None:
    await api.publish(A, OK)
    await api.publish(B, OK)
    for _ in range(3):  # no worker: they stay queued
        await api.start(A, "ok")
    await api.start(B, "ok")
    put = await api.client.put(
        f"{BASE}/admin/slos/backlog",
        json={"objective": 0.95, "threshold": 2},
        headers=api.headers(A),
    )
    assert put.status_code == 200, put.text
    assert put.json()["events"]["1h"] == {"total": 0, "bad": 0}  # nothing sampled yet

    sampler = BacklogSampler(api.orchestrator.env)
    assert await sampler.sample() == 2
    assert await sampler.sample() == 2  # the same window: its peak is kept, not doubled

    backlog = (await slos(api, A))["backlog"]
    assert backlog["events"]["1h"] == {"total": 1, "bad": 1}
    assert backlog["status"] == "critical"
    other = (await slos(api, B))["backlog"]  # depth 1, under the default 1,000
    assert other["events"]["1h"] == {"total": 1, "bad": 0} and other["status"] == "ok"


async def test_requests_and_stream_events_are_counted_by_this_process(api: Api) -> None:
    await api.get_json(A, "/admin/health")
    api.app.state.metrics.observe_request("GET", "/boom", 503, 0.01)
    documents = await slos(api, A)
    availability = documents["api-availability"]
    assert availability["scope"] == "process"
    assert availability["events"]["1h"]["bad"] == 1
    assert availability["events"]["1h"]["total"] >= 2
    assert documents["stream-delivery"]["events"]["28d"] == {"total": 0, "bad": 0}


async def test_objectives_are_bounded_audited_and_admin_only(api: Api) -> None:
    async def put(slo: str, body: Any, **headers: Any) -> Any:
        return await api.client.put(
            f"{BASE}/admin/slos/{slo}", json=body, headers=api.headers(A, **headers)
        )

    for slo, body in (
        ("run-failure-rate", {"objective": 1.5}),
        ("run-failure-rate", {"objective": 0.1}),
        ("run-failure-rate", {"objective": "high"}),
        ("run-failure-rate", {"objective": 0.99, "extra": 1}),
        ("run-failure-rate", {"objective": 0.99, "threshold": 5}),  # takes none
        ("backlog", {"objective": 0.99, "threshold": -1}),
        ("backlog", {"objective": 0.99, "threshold": 1e12}),
        ("no-such-slo", {"objective": 0.99}),
        ("x" * 5000, {"objective": 0.99}),
    ):
        response = await put(slo, body)
        assert response.status_code in (400, 404, 414, 422), (slo, body, response.text)
        if response.status_code != 414:
            assert_envelope(response)
    assert (await put("backlog", {"objective": 0.99}, scopes=(READ,))).status_code == 403
    assert (await put("backlog", {"objective": 0.99}, reason=None)).status_code == 400
    foreign = await api.client.put(
        f"{BASE}/admin/slos/backlog",
        json={"objective": 0.99},
        headers=api.headers(A, token_tenants=[B], scopes=(ADMIN,)),
    )
    assert foreign.status_code == 403

    done = await put("backlog", {"objective": 0.99})
    assert done.status_code == 200, done.text
    assert (done.json()["objective"], done.json()["threshold"]) == (0.99, 1000.0)
    rows = await api.sql(
        "SELECT tenant, action, target, reason FROM audit_log WHERE action = 'slo.set'"
    )
    assert rows == [
        {"tenant": A, "action": "slo.set", "target": "backlog", "reason": "integration test"}
    ]
    assert (await slos(api, B))["backlog"]["objective"] == 0.95
