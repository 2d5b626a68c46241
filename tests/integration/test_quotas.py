"""Quotas and fairness: limits over HTTP, runs over a limit wait queued, tenants share workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

from stellaorch.engine import claim, create  # noqa: E402
from stellaorch.engine.requests import RunRequest  # noqa: E402
from stellaorch.store import controls  # noqa: E402
from stellaorch.store.controls import ALL_DAGS, QuotaRow  # noqa: E402

A, B = "acme", "globex"
NOOP = spec("job", [{"id": "s", "plugin": "noop"}])
SLEEPY = spec("slow", [{"id": "s", "plugin": "sleep", "with": {"seconds": 0.3}}])


async def put_quota(api: Api, tenant: str = A, **body: Any) -> Any:
    return await api.client.put(f"{BASE}/quotas", json=body, headers=api.headers(tenant))


async def test_put_and_get_quotas_merge_limits(api: Api) -> None:
    assert (await put_quota(api, maxActive=2)).status_code == 200
    updated = await put_quota(api, maxPerHour=100, burst=10)
    assert updated.json()["maxActive"] == 2 and updated.json()["burst"] == 10
    await put_quota(api, dagId="job", maxActive=1)
    items = (await api.get_json(A, "/quotas"))["items"]
    assert [(q["dagId"], q["maxActive"], q["maxPerHour"]) for q in items] == [
        (None, 2, 100),
        ("job", 1, None),
    ]
    assert (await api.get_json(B, "/quotas"))["items"] == []


@pytest.mark.parametrize("field", ["maxActive", "maxPerHour", "burst"])
@pytest.mark.parametrize("value", [-1, 1_000_001])
async def test_negative_or_absurd_quotas_are_refused(api: Api, field: str, value: int) -> None:
    response = await put_quota(api, **{field: value})
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "VALIDATION_FAILED"
    assert await api.sql("SELECT tenant FROM quotas") == []
    assert await api.sql("SELECT id FROM audit_log") == []


async def test_runs_over_max_active_stay_queued_and_start_later(make_api: Any) -> None:
    api: Api = await make_api(worker_concurrency=8)
    await api.publish(A, SLEEPY)
    await put_quota(api, maxActive=1)
    runs = [await api.start(A, "slow") for _ in range(3)]
    api.start_worker()
    peak = 0
    for _ in range(60):
        rows = await api.sql("SELECT status FROM runs WHERE status = 'running'")
        peak = max(peak, len(rows))
        await _pause()
    assert peak == 1
    for run in runs:
        assert await api.wait(A, run["runId"]) == "completed"


async def test_a_rate_limited_run_waits_with_a_visible_next_eligible_time(api: Api) -> None:
    await api.publish(A, NOOP)
    await put_quota(api, maxPerHour=1)
    first, second = await api.start(A, "job"), await api.start(A, "job")
    api.start_worker()
    assert await api.wait(A, first["runId"]) == "completed"
    await _pause()
    assert (await api.get_json(A, f"/runs/{second['runId']}"))["status"] == "queued"
    queue = (await api.get_json(A, "/queues"))["items"][0]
    assert queue["quotaLimited"] is True and queue["depth"] == 1
    assert queue["nextEligibleUtc"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    quota = (await api.get_json(A, "/quotas"))["items"][0]
    assert quota["nextEligibleUtc"] == queue["nextEligibleUtc"]


async def test_a_per_dag_quota_leaves_other_dags_alone(make_api: Any) -> None:
    api: Api = await make_api()
    await api.publish(A, NOOP)
    await api.publish(A, SLEEPY)
    await put_quota(api, dagId="slow", maxActive=0)
    held, free = await api.start(A, "slow"), await api.start(A, "job")
    api.start_worker()
    assert await api.wait(A, free["runId"]) == "completed"
    assert (await api.get_json(A, f"/runs/{held['runId']}"))["status"] == "queued"


async def test_fairness_b_starts_before_a_has_started_a_thousand(api: Api) -> None:
    """A holds 10,000 queued steps, B submits 10: B's all start within the first claims."""
    wide = spec("wide", [{"id": f"s{i:03d}", "plugin": "noop"} for i in range(100)])
    await api.publish(A, wide)
    await api.publish(B, NOOP)
    env = api.orchestrator.env
    requests = [RunRequest(A, "wide", {}) for _ in range(100)]
    await env.db.transact(lambda c: create.create_runs(c, env, requests))
    for _ in range(10):
        await api.start(B, "job")
    started = {A: 0, B: 0}
    while started[B] < 10:
        claimed = await env.db.transact(lambda c: claim.claim(c, env, "w1", 50))
        assert claimed.leases, "work is queued, a claim must lease some"
        for lease in claimed.leases:
            started[lease.tenant] += 1
    assert started[A] < 1_000, started
    assert (await api.get_json(A, "/queues"))["items"][0]["depth"] == 10_000 - started[A]


async def _pause() -> None:
    await asyncio.sleep(0.05)


async def test_max_active_holds_with_two_engines_claiming_at_once(make_harness: Any) -> None:
    """Two processes' claims must not both count the last free slot (PostgreSQL: concurrent)."""
    first = await make_harness(worker_concurrency=16, poll_interval_seconds=0.01)
    url = first.orchestrator.env.settings.database_url
    second = await make_harness(url, worker_concurrency=16, poll_interval_seconds=0.01)
    fast = spec("quick", [{"id": "s", "plugin": "sleep", "with": {"seconds": 0.02}}])
    await first.publish(fast, tenant=A)

    def limit(conn: Any) -> None:
        row = QuotaRow(A, ALL_DAGS, max_active=2, max_per_hour=None, burst=None, updated_us=0)
        controls.put_quota(conn, row)

    await first.orchestrator.env.db.transact(limit)
    runs = [(await first.create("quick", {"i": i}, tenant=A)).run.run_id for i in range(40)]
    first.start_worker()
    second.start_worker()
    peak = 0
    while True:
        rows = await first.sql("SELECT status FROM runs WHERE status IN ('running', 'queued')")
        peak = max(peak, sum(1 for r in rows if r["status"] == "running"))
        if not rows:
            break
        await asyncio.sleep(0.002)
    assert 1 <= peak <= 2
    for run_id in runs:
        assert (await first.view(run_id, tenant=A))["status"] == "completed"


async def test_a_run_ending_frees_its_slot_for_the_next_in_the_same_transaction(
    make_harness: Any,
) -> None:
    """The completing worker starts the waiting run at once, without another claim."""
    # One store thread: on PostgreSQL a claim-loop transaction running beside the completion
    # may hold the waiting run's row, and the completion then rightly leaves it to that claim.
    harness = await make_harness(worker_concurrency=4, database_threads=1)
    await harness.publish(NOOP, tenant=A)

    def limit(conn: Any) -> None:
        row = QuotaRow(A, ALL_DAGS, max_active=1, max_per_hour=None, burst=None, updated_us=0)
        controls.put_quota(conn, row)

    await harness.orchestrator.env.db.transact(limit)
    first = (await harness.create("job", {"i": 1}, tenant=A)).run.run_id
    second = (await harness.create("job", {"i": 2}, tenant=A)).run.run_id
    harness.start_worker()
    await harness.wait_done(second, tenant=A)
    [ended] = await harness.sql("SELECT ended_us FROM runs WHERE run_id = :r", r=first)
    [started] = await harness.sql("SELECT started_us FROM runs WHERE run_id = :r", r=second)
    assert started["started_us"] == ended["ended_us"]
