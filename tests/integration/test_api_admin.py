"""GET /admin/health and the Prometheus metrics (/admin/metrics, /metrics), per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, spec  # noqa: E402

from stellaorch.domain.ledger import EntryDraft, seal  # noqa: E402

if TYPE_CHECKING:
    from conftest import Stores

A, B = "acme", "globex"
TWO_ROOTS = spec("fan", [{"id": "x", "plugin": "noop"}, {"id": "y", "plugin": "noop"}])
FLAKY = spec(
    "flaky",
    [
        {
            "id": "f",
            "plugin": "fail",
            "with": {"untilAttempt": 2, "retryable": True, "code": "FLAKY"},
            "retry": {"maxAttempts": 3, "backoff": {"initialMs": 10, "factor": 2, "jitter": 0}},
        }
    ],
)
SPEC_METRICS = {
    "orchestrator_runs_total": {"tenant", "status"},
    "orchestrator_queue_depth": {"tenant"},
    "orchestrator_queue_oldest_age_seconds": {"tenant"},
    "orchestrator_step_retries_total": {"tenant"},
    "orchestrator_run_duration_seconds_count": {"tenant"},
    "orchestrator_run_duration_seconds_bucket": {"tenant", "le"},
}
Sample = tuple[str, dict[str, str], float]


def samples(text: str) -> Iterator[Sample]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, dict(s.labels), float(s.value)


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample with that name and exactly those labels."""
    found = [v for n, got, v in samples(text) if n == name and got == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


async def scrape(api: Api, tenant: str, path: str = "/metrics", **headers: Any) -> str:
    """The metrics text as an admin of `tenant`."""
    response = await api.client.get(path, headers=api.headers(tenant, **headers))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def health(api: Api, tenant: str, **headers: Any) -> tuple[int, dict[str, Any]]:
    """Status and document of GET /admin/health as a reader of `tenant`."""
    response = await api.client.get(
        f"{BASE}/admin/health", headers=api.headers(tenant, scopes=["orchestrator:read"], **headers)
    )
    return response.status_code, response.json()


# -- health -------------------------------------------------------------------------------
async def test_health_reports_only_the_callers_queue(api: Api) -> None:
    for tenant, runs in ((A, 3), (B, 1)):
        await api.publish(tenant, TWO_ROOTS)
        for i in range(runs):
            await api.start(tenant, "fan", {"i": i})
    await asyncio.sleep(0.01)  # a measurable age for the oldest item
    status, document = await health(api, A)
    assert status == 200
    # queued work and no live worker anywhere: ready, but degraded, saying why
    assert document["status"] == "degraded" and document["live"] is True
    assert document["ready"] is True
    assert [r["code"] for r in document["reasons"]] == ["NO_LIVE_WORKER"]
    assert document["store"]["reachable"] is True and document["store"]["latencyMs"] >= 0
    [queue] = document["queues"]
    assert queue["tenant"] == A and queue["depth"] == 6 and queue["inFlight"] == 0
    assert 0 < queue["oldestAgeSeconds"] < 60
    assert document["worker"] == {"running": False, "live": 0}
    assert document["bundles"] == {"status": "none", "count": 0, "verified": 0, "failures": []}
    assert (await health(api, B))[1]["queues"][0]["depth"] == 2


async def test_health_of_an_idle_tenant_has_an_empty_queue(api: Api) -> None:
    status, document = await health(api, "idle")
    assert status == 200
    assert document["queues"] == [
        {"tenant": "idle", "depth": 0, "oldestAgeSeconds": 0.0, "inFlight": 0}
    ]


async def test_health_shows_a_running_worker_and_drains(api: Api) -> None:
    await api.publish(A, TWO_ROOTS)
    run = await api.start(A, "fan")
    api.start_worker()
    assert (await health(api, A))[1]["worker"]["running"] is True
    assert await api.wait(A, run["runId"]) == "completed"
    assert (await health(api, A))[1]["queues"][0]["depth"] == 0
    await api.stop_worker()
    assert (await health(api, A))[1]["worker"] == {"running": False, "live": 0}


async def test_health_is_503_not_ready_when_the_store_fails(
    make_api: MakeApi, stores: Stores
) -> None:
    api = await make_api(sqlite_busy_timeout_ms=100)
    # SQLite: another connection holds the write lock; PostgreSQL: connections are refused.
    async with stores.outage(api.settings.database_url):
        status, document = await health(api, A)
    assert status == 503
    assert document["ready"] is False and document["live"] is True
    assert document["status"] == "degraded"
    assert document["store"]["reachable"] is False
    assert (await health(api, A))[0] == 200  # recovers once the store answers again


async def test_a_backlog_at_the_slo_is_degraded_but_still_ready(api: Api) -> None:
    await api.publish(A, TWO_ROOTS)
    await asyncio.gather(*(api.start(A, "fan", {"i": i}) for i in range(500)))
    status, document = await health(api, A)
    assert document["queues"][0]["depth"] == 1000
    assert status == 200 and document["ready"] is True
    assert document["status"] == "degraded"
    assert (await health(api, B))[1]["status"] == "ok"


async def test_health_needs_a_token(api: Api) -> None:
    response = await api.client.get(f"{BASE}/admin/health", headers={"X-Stella-Tenant": A})
    assert response.status_code == 401
    assert_envelope(response)


# -- metrics ------------------------------------------------------------------------------
async def run_flaky(api: Api, tenant: str) -> str:
    """Publish and run the flaky DAG to completion (one retry); returns the run id."""
    await api.publish(tenant, FLAKY)
    run = await api.start(tenant, "flaky")
    api.start_worker()
    assert await api.wait(tenant, run["runId"]) == "completed"
    await api.stop_worker()
    return str(run["runId"])


async def test_metrics_cover_runs_retries_durations_and_queue_depth(api: Api) -> None:
    await run_flaky(api, A)
    await api.publish(A, TWO_ROOTS)
    await api.start(A, "fan")  # stays queued: no worker
    text = await scrape(api, A)
    assert value(text, "orchestrator_runs_total", tenant=A, status="queued") == 2
    assert value(text, "orchestrator_runs_total", tenant=A, status="completed") == 1
    assert value(text, "orchestrator_step_retries_total", tenant=A) == 1
    assert value(text, "orchestrator_run_duration_seconds_count", tenant=A) == 1
    assert value(text, "orchestrator_queue_depth", tenant=A) == 2
    assert 0 <= value(text, "orchestrator_queue_oldest_age_seconds", tenant=A) < 60
    assert value(text, "orchestrator_leases_granted_total", tenant=A) == 2
    for name, labels in SPEC_METRICS.items():
        found = [set(got) for n, got, _ in samples(text) if n == name]
        assert found and all(got == labels for got in found), (name, found)


async def test_metrics_are_the_same_at_every_metrics_path(api: Api) -> None:
    await run_flaky(api, A)
    for path in ("/metrics", f"{BASE}/metrics", f"{BASE}/admin/metrics"):
        text = await scrape(api, A, path)
        assert value(text, "orchestrator_runs_total", tenant=A, status="completed") == 1


async def test_a_tenants_scrape_has_no_other_tenants_samples(api: Api) -> None:
    await run_flaky(api, A)
    await api.publish(B, TWO_ROOTS)
    await api.start(B, "fan")
    text_b = await scrape(api, B)
    tenants_b = {labels["tenant"] for _, labels, _ in samples(text_b) if "tenant" in labels}
    assert tenants_b == {B}
    assert A not in text_b
    assert value(text_b, "orchestrator_queue_depth", tenant=B) == 2
    text_a = await scrape(api, A)
    assert {labels["tenant"] for _, labels, _ in samples(text_a) if "tenant" in labels} == {A}


async def test_a_wildcard_token_sees_every_tenant(api: Api) -> None:
    await run_flaky(api, A)
    await api.publish(B, TWO_ROOTS)
    await api.start(B, "fan")
    text = await scrape(api, A, token_tenants=["*"])
    assert value(text, "orchestrator_runs_total", tenant=A, status="completed") == 1
    assert value(text, "orchestrator_queue_depth", tenant=B) == 2


async def test_http_metrics_use_route_templates_never_raw_paths(api: Api) -> None:
    run_id = await run_flaky(api, A)
    headers = api.headers(A)
    await api.client.get(f"{BASE}/runs/{run_id}", headers=headers)
    await api.client.get(f"{BASE}/runs/no-such-run", headers=headers)
    await api.client.get(f"{BASE}/no/such/route/{run_id}", headers=headers)
    await api.client.request("BREW", f"{BASE}/runs", headers=headers)
    text = await scrape(api, A)
    assert run_id not in text and "no-such-run" not in text
    route = f"{BASE}/runs/{{runId}}"
    assert value(text, "orchestrator_http_requests_total", method="GET", route=route, status="200")
    assert value(text, "orchestrator_http_requests_total", method="GET", route=route, status="404")
    assert value(
        text, "orchestrator_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert value(
        text, "orchestrator_http_requests_total", method="other", route=f"{BASE}/runs", status="405"
    )
    assert value(
        text, "orchestrator_http_request_duration_seconds_count", method="GET", route=route
    )


async def test_lost_leases_are_counted(api: Api) -> None:
    # A lease expiring needs a worker to die mid-attempt; the metric only reads the ledger
    # entry that recovery commits, so announce such an entry as recovery would.
    draft = EntryDraft(
        run_id="r-1",
        tenant=A,
        dag_id="d",
        trace_id="0" * 31 + "1",
        entry_type="step.retrying",
        status="queued",
        ts_us=1,
        step_id="s",
        attempt=2,
        data={"attemptStatus": "lost"},
    )
    api.orchestrator.env.bus.publish([seal(draft, 1, "sha256:" + "0" * 64)])
    text = await scrape(api, A)
    assert value(text, "orchestrator_leases_lost_total", tenant=A) == 1
    assert value(text, "orchestrator_step_retries_total", tenant=A) == 1


async def test_metrics_need_a_token_and_a_tenant_when_the_token_names_several(api: Api) -> None:
    for path in ("/metrics", f"{BASE}/admin/metrics"):
        assert (await api.client.get(path)).status_code == 401
        response = await api.client.get(path, headers=api.headers(None, token_tenants=[A, B]))
        assert response.status_code == 403
        assert assert_envelope(response)["code"] == "TENANT_REQUIRED"
