"""Worker artifact upload: content-addressed, hash-checked, size-capped, tenant/lease-scoped."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures", "served_api")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, MakeApi, assert_envelope, spec  # noqa: E402
from served_api import TENANT, Served, served  # noqa: E402

from stellaorch.sdk import TaskContext, Worker, task  # noqa: E402

WORKER = "orchestrator:worker"
A, B = "tenant-alpha", "tenant-bravo"
CAP = 4096
REPORT = b"%PDF-1.7 quarterly report\n" * 20


def hex_of(content: bytes) -> str:
    """The sha256 hex an upload names its content by."""
    return hashlib.sha256(content).hexdigest()


def queue_dag() -> dict[str, Any]:
    """One queue step of task `render`."""
    return spec("report", [{"id": "work", "plugin": "queue", "with": {"task": "render"}}])


@pytest.fixture
async def served_api(make_api: MakeApi) -> Api:
    """An app with an engine worker, a small artifact cap and the queue DAG in A and B."""
    api = await make_api(max_artifact_bytes=CAP)
    await api.publish(A, queue_dag())
    await api.publish(B, queue_dag())
    api.start_worker()
    return api


async def lease_of(api: Api, tenant: str) -> tuple[str, str]:
    """Start a run in `tenant` and claim its queue step: (runId, leaseId)."""
    run = await api.start(tenant, "report")
    body = {"workerId": "w1", "tasks": ["render"], "waitSeconds": 5.0}
    claimed = await api.client.post(f"{BASE}/tasks:claim", json=body, headers=worker(api, tenant))
    [lease] = claimed.json()["leases"]
    return run["runId"], lease["leaseId"]


def worker(api: Api, tenant: str, **options: Any) -> dict[str, str]:
    """Headers of a worker-scoped token."""
    return api.headers(tenant, scopes=[WORKER], reason=None, **options)


async def upload(
    api: Api, tenant: str, lease_id: str, content: Any, sha: str, **headers: str
) -> httpx.Response:
    """PUT an artifact as the tenant's worker."""
    url = f"{BASE}/tasks/{lease_id}/artifacts/{sha}"
    return await api.client.put(url, content=content, headers={**worker(api, tenant), **headers})


async def complete(api: Api, tenant: str, lease_id: str, outputs: dict[str, Any]) -> None:
    """Complete the lease with outputs."""
    url = f"{BASE}/tasks/{lease_id}:complete"
    done = await api.client.post(url, json={"outputs": outputs}, headers=worker(api, tenant))
    assert done.status_code == 200, done.text


async def download(api: Api, tenant: str, ref: str) -> httpx.Response:
    """GET /artifacts/{ref} with a read token."""
    return await api.client.get(
        f"{BASE}/artifacts/{ref}", headers=api.headers(tenant, scopes=[READ], reason=None)
    )


async def test_uploaded_artifact_is_referenced_from_outputs_and_downloads(
    served_api: Api,
) -> None:
    api = served_api
    run_id, lease_id = await lease_of(api, A)
    first = await upload(
        api, A, lease_id, REPORT, hex_of(REPORT), **{"Content-Type": "application/pdf"}
    )
    assert first.status_code == 200, first.text
    ref = f"sha256:{hex_of(REPORT)}"
    assert first.json() == {"ref": ref, "sizeBytes": len(REPORT), "mediaType": "application/pdf"}
    again = await upload(api, A, lease_id, REPORT, hex_of(REPORT))
    assert again.status_code == 200 and again.json()["ref"] == ref  # idempotent
    await complete(api, A, lease_id, {"report": ref})
    assert await api.wait(A, run_id) == "completed"
    step = await api.get_json(A, f"/runs/{run_id}/steps/work")
    fetched = await download(api, A, step["outputs"]["report"])
    assert fetched.status_code == 200 and fetched.content == REPORT
    assert fetched.headers["content-type"].startswith("application/pdf")


async def test_a_body_not_matching_the_named_hash_is_refused_and_not_stored(
    served_api: Api,
) -> None:
    api = served_api
    _, lease_id = await lease_of(api, A)
    claimed = hex_of(b"what the worker claims")
    response = await upload(api, A, lease_id, b"what it actually sends", claimed)
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "ARTIFACT_HASH_MISMATCH"
    assert (await download(api, A, f"sha256:{claimed}")).status_code == 404
    actual = hex_of(b"what it actually sends")
    assert (await download(api, A, f"sha256:{actual}")).status_code == 404
    bad = await upload(api, A, lease_id, b"x", "NOT-A-HASH")
    assert bad.status_code == 400 and assert_envelope(bad)["code"] == "VALIDATION_FAILED"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_cap_is_refused_with_413_and_not_stored(
    served_api: Api, chunked: bool
) -> None:
    api = served_api
    _, lease_id = await lease_of(api, A)
    big = b"z" * (CAP + 1)  # over the artifact cap, far under nothing else
    sent: object = big

    if chunked:  # no Content-Length: the server must stop reading once past the cap

        async def chunks() -> AsyncIterator[bytes]:
            for at in range(0, len(big), 1000):
                yield big[at : at + 1000]

        sent = chunks()
    response = await upload(api, A, lease_id, sent, hex_of(big))
    assert response.status_code == 413, response.text
    assert assert_envelope(response)["code"] == "BODY_TOO_LARGE", response.text
    assert (await download(api, A, f"sha256:{hex_of(big)}")).status_code == 404
    fits = b"z" * CAP  # exactly the cap is allowed
    assert (await upload(api, A, lease_id, fits, hex_of(fits))).status_code == 200


async def test_the_artifact_cap_replaces_the_default_body_limit(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048, max_artifact_bytes=64 * 1024)
    await api.publish(A, queue_dag())
    api.start_worker()
    _, lease_id = await lease_of(api, A)
    content = b"q" * (32 * 1024)  # over the 2 KiB JSON limit, within the artifact cap
    response = await upload(api, A, lease_id, content, hex_of(content))
    assert response.status_code == 200, response.text
    claim = {"workerId": "w" * 3000, "tasks": ["render"]}
    limited = await api.client.post(f"{BASE}/tasks:claim", json=claim, headers=worker(api, A))
    assert limited.status_code == 413  # the other routes keep the default limit


async def test_a_worker_of_tenant_b_cannot_upload_under_a_lease_of_tenant_a(
    served_api: Api,
) -> None:
    api = served_api
    _, lease_id = await lease_of(api, A)
    response = await upload(api, B, lease_id, REPORT, hex_of(REPORT))
    assert response.status_code == 404 and assert_envelope(response)["code"] == "LEASE_LOST"
    crossed = await api.client.put(
        f"{BASE}/tasks/{lease_id}/artifacts/{hex_of(REPORT)}",
        content=REPORT,
        headers=worker(api, A, token_tenants=[B]),
    )
    assert crossed.status_code == 403
    assert (await download(api, B, f"sha256:{hex_of(REPORT)}")).status_code == 404
    assert (await download(api, A, f"sha256:{hex_of(REPORT)}")).status_code == 404


async def test_after_completion_the_lease_is_gone_and_uploads_are_refused(
    served_api: Api,
) -> None:
    api = served_api
    run_id, lease_id = await lease_of(api, A)
    await complete(api, A, lease_id, {})
    assert await api.wait(A, run_id) == "completed"
    late = await upload(api, A, lease_id, REPORT, hex_of(REPORT))
    assert late.status_code == 404 and assert_envelope(late)["code"] == "LEASE_LOST"
    assert (await download(api, A, f"sha256:{hex_of(REPORT)}")).status_code == 404


async def test_a_read_token_cannot_upload(served_api: Api) -> None:
    api = served_api
    _, lease_id = await lease_of(api, A)
    response = await api.client.put(
        f"{BASE}/tasks/{lease_id}/artifacts/{hex_of(REPORT)}",
        content=REPORT,
        headers=api.headers(A, scopes=[READ], reason=None),
    )
    assert response.status_code == 403 and assert_envelope(response)["code"] == "SCOPE_REQUIRED"


# -- the SDK ------------------------------------------------------------------------------
@task("render")
async def render(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Async: upload a report and return its reference."""
    return {"report": await ctx.put_artifact(REPORT, content_type="application/pdf")}


@task("render-plain")
def render_plain(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Plain function: the sync upload helper."""
    return {"report": ctx.put_artifact_sync(b"plain " + REPORT)}


async def sdk_run(s: Served, client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """Publish a one-step DAG of task `name`, run it under an SDK worker; the step view."""
    dag = {"dagId": name, "version": 1, "edges": []}
    dag["steps"] = [{"id": "x", "plugin": "queue", "with": {"task": name}}]
    assert (await client.post("/dags", json=dag)).status_code in (200, 201)
    started = await client.post("/runs", json={"dagId": name, "inputs": {}})
    run_id = started.json()["runId"]
    token = s.token(("orchestrator:worker",))
    sdk = Worker([render, render_plain], url=s.url, token=token, tenant=TENANT, wait_seconds=1.0)
    job = asyncio.create_task(sdk.serve())
    try:
        for _ in range(500):
            view = (await client.get(f"/runs/{run_id}")).json()
            if view["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.02)
    finally:
        sdk.stop()
        await asyncio.wait_for(job, 15)
    assert view["status"] == "completed", view
    step: dict[str, Any] = (await client.get(f"/runs/{run_id}/steps/x")).json()
    return step


@pytest.mark.parametrize(
    ("name", "content"), [("render", REPORT), ("render-plain", b"plain " + REPORT)]
)
async def test_sdk_put_artifact_returns_a_ref_that_outputs_carry(
    tmp_path: Path, name: str, content: bytes
) -> None:
    async with served(tmp_path, task_lease_ttl_seconds=2.0, poll_interval_seconds=0.05) as s:
        s.orchestrator.start_worker()
        headers = {
            "Authorization": f"Bearer {s.token()}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": "artifact test",
        }
        async with httpx.AsyncClient(base_url=s.url + BASE, headers=headers) as client:
            step = await sdk_run(s, client, name)
            ref = step["outputs"]["report"]
            assert ref == f"sha256:{hex_of(content)}"
            fetched = await client.get(f"/artifacts/{ref}")
            assert fetched.status_code == 200 and fetched.content == content
        await s.orchestrator.stop_worker()


async def test_binary_that_looks_like_deep_json_is_stored_not_refused(served_api: Api) -> None:
    api = served_api
    _, lease_id = await lease_of(api, A)
    content = b"[" * 3000  # would be refused as JSON nesting on any JSON route
    response = await upload(api, A, lease_id, content, hex_of(content))
    assert response.status_code == 200, response.text
    assert (await download(api, A, response.json()["ref"])).content == content
