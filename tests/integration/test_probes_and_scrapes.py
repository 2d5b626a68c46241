"""Process probes without a token, the metrics scope for scrapers, store-wide figures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, open_api, spec  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from stellaorch.engine.workers import presence  # noqa: E402

A, B = "acme-secretive", "globex-hidden"
DAG = "payroll-confidential"
METRICS = "orchestrator:metrics"
ONE_STEP = spec(DAG, [{"id": "x", "plugin": "noop"}])
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parsed(text: str) -> Samples:
    """Every sample by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample with that name and exactly those labels, if any."""
    return parsed(text).get((name, frozenset(labels.items())))


async def scrape_as(api: Api, tenants: list[str], scopes: list[str], tenant: str | None) -> str:
    """GET /metrics with a token for `tenants`; `tenant` None sends no tenant header."""
    headers = api.headers(tenant, scopes=scopes, token_tenants=tenants, reason=None)
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


async def seeded(api: Api) -> Api:
    """Both tenants have a queued run of a DAG whose name must never show in a probe."""
    for tenant in (A, B):
        await api.publish(tenant, ONE_STEP)
        await api.start(tenant, DAG)
    return api


# -- probes -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/livez", "/readyz"])
async def test_probes_answer_anyone_and_name_no_tenant(api: Api, path: str) -> None:
    await seeded(api)
    callers = [{}, {"Authorization": "Bearer not-a-token", "X-Stella-Tenant": A}]
    for headers in callers:
        response = await api.client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        for secret in (A, B, DAG, "sqlite", api.settings.database_url):
            assert secret not in response.text
    assert set(response.json()) <= {"live", "ready", "store"}


async def test_probes_are_not_part_of_the_api_document(api: Api) -> None:
    document = (await api.client.get(f"{BASE}/.well-known/openapi")).json()
    assert not {"/livez", "/readyz"} & set(document["paths"])


# -- the metrics scope --------------------------------------------------------------------
async def test_a_metrics_token_scrapes_every_tenant_without_a_tenant_header(api: Api) -> None:
    await seeded(api)
    text = await scrape_as(api, ["*"], [METRICS], None)
    assert sample(text, "orchestrator_queue_depth", tenant=A) == 1
    assert sample(text, "orchestrator_queue_depth", tenant=B) == 1


async def test_a_metrics_token_reads_nothing_but_metrics(api: Api) -> None:
    await seeded(api)
    headers = api.headers(A, scopes=[METRICS], reason=None)
    for path in ("/runs", "/dags", "/admin/health", "/workers", "/queues"):
        response = await api.client.get(f"{BASE}{path}", headers=headers)
        assert response.status_code == 403, (path, response.text)
        assert assert_envelope(response)["code"] == "SCOPE_REQUIRED"


async def test_a_read_token_cannot_scrape(api: Api) -> None:
    headers = api.headers(A, scopes=["orchestrator:read"], reason=None)
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 403
    assert assert_envelope(response)["code"] == "SCOPE_REQUIRED"


async def test_a_one_tenant_metrics_token_sees_only_its_tenant(api: Api) -> None:
    await seeded(api)
    text = await scrape_as(api, [A], [METRICS], None)
    tenants = {dict(labels).get("tenant") for _, labels in parsed(text)} - {None}
    assert tenants == {A}
    assert B not in text


async def test_a_metrics_token_for_one_tenant_cannot_name_another(api: Api) -> None:
    headers = api.headers(B, scopes=[METRICS], token_tenants=[A], reason=None)
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 403
    assert assert_envelope(response)["code"] == "TENANT_FORBIDDEN"


# -- store-wide figures -------------------------------------------------------------------
async def test_run_figures_from_the_store_agree_whichever_process_finished_the_runs(
    make_api: MakeApi, keys_dir: Path
) -> None:
    front = await make_api(metrics_store_cache_seconds=0)
    await front.publish(A, ONE_STEP)
    runs = [await front.start(A, DAG, {"i": i}) for i in range(3)]
    # Another process on the same store works the runs: `front` never sees them complete.
    async with open_api(front.settings.database_url, keys_dir) as back:
        back.start_worker()
        for run in runs:
            assert await back.wait(A, run["runId"]) == "completed"
    text = await scrape_as(front, ["*"], [METRICS], None)
    assert sample(text, "orchestrator_store_runs", tenant=A, status="completed") == 3
    assert sample(text, "orchestrator_runs_total", tenant=A, status="queued") == 3
    # the per-process counter of `front` saw no completion: why the store figures exist
    assert sample(text, "orchestrator_runs_total", tenant=A, status="completed") is None


async def test_store_figures_are_read_once_per_cache_period(make_api: MakeApi) -> None:
    api = await make_api(metrics_store_cache_seconds=3600)
    await api.publish(A, ONE_STEP)
    await api.start(A, DAG)
    first = await scrape_as(api, ["*"], [METRICS], None)
    await api.start(A, DAG, {"again": True})
    second = await scrape_as(api, ["*"], [METRICS], None)
    assert sample(first, "orchestrator_store_runs", tenant=A, status="queued") == 1
    assert sample(second, "orchestrator_store_runs", tenant=A, status="queued") == 1


async def test_live_workers_and_slots_are_store_wide_gauges(make_api: MakeApi) -> None:
    api = await make_api(metrics_store_cache_seconds=0)
    await api.orchestrator.workers.beat(presence("w1:1:aa", (A,), 4, 1))
    await api.orchestrator.workers.beat(presence("w2:2:bb", (), 6, 2))
    text = await scrape_as(api, [B], [METRICS], None)
    assert sample(text, "orchestrator_workers_live") == 2
    assert sample(text, "orchestrator_worker_slots") == 10
    assert sample(text, "orchestrator_worker_slots_in_use") == 3
    assert A not in text
