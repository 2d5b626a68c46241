"""API-wide conventions: error envelope, traceparent, Idempotency-Key, paging, input limits."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, spec  # noqa: E402

TENANT = "acme"
NOOP_DAG = spec("d", [{"id": "a", "plugin": "noop"}])
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def trace_of(response: httpx.Response) -> str:
    """The trace id of the echoed traceparent header."""
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", response.headers["traceparent"])
    assert match, response.headers["traceparent"]
    return match.group(1)


async def run_count(api: Api) -> int:
    """Runs in the store, of every tenant."""
    return int((await api.sql("SELECT count(*) AS n FROM runs"))[0]["n"])


# -- error envelope -----------------------------------------------------------------------
async def error_responses(api: Api) -> AsyncIterator[httpx.Response]:
    """One response of each error family the API produces."""
    await api.publish(TENANT, NOOP_DAG)
    own = api.headers(TENANT)
    c = api.client
    yield await c.get(f"{BASE}/runs")  # 401
    yield await c.get(f"{BASE}/runs", headers=api.headers(None))  # 403 tenant
    yield await c.post(
        f"{BASE}/runs",
        json={"dagId": "d"},
        headers=api.headers(TENANT, scopes=["orchestrator:read"]),
    )
    yield await c.get(f"{BASE}/runs/nope", headers=own)  # 404 domain
    yield await c.get(f"{BASE}/no/such/route", headers=own)  # 404 routing
    yield await c.delete(f"{BASE}/runs", headers=own)  # 405
    yield await c.get(f"{BASE}/runs", params={"page_size": 0}, headers=own)  # 400 query
    yield await c.post(f"{BASE}/runs", json={"dagId": 5}, headers=own)  # 400 body
    yield await c.post(f"{BASE}/dags", json={"dagId": "x"}, headers=own)  # 400 spec
    yield await c.post(f"{BASE}/dags/d/1:disable", headers=api.headers(TENANT, reason=None))
    other = {"dagId": "d", "version": 1, "steps": [{"id": "b", "plugin": "noop"}]}
    yield await c.post(f"{BASE}/dags", json=other, headers=own)  # 409
    yield await c.post(f"{BASE}/runs", content=b"x" * 2_000_000, headers=own)  # 413


async def test_every_error_is_the_envelope_with_the_request_trace_id(api: Api) -> None:
    statuses = set()
    async for response in error_responses(api):
        statuses.add(response.status_code)
        error = assert_envelope(response)
        assert error["traceId"] == trace_of(response), response.text
    assert statuses == {400, 401, 403, 404, 405, 409, 413}


# -- traceparent --------------------------------------------------------------------------
async def test_traceparent_is_echoed_and_adopted_by_the_run(api: Api) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "traceparent": TRACEPARENT}
    response = await api.client.post(f"{BASE}/runs", json={"dagId": "d"}, headers=headers)
    assert response.status_code == 201
    assert trace_of(response) == TRACE_ID
    assert response.headers["traceparent"] != TRACEPARENT  # our own span id, same trace
    assert response.json()["traceId"] == TRACE_ID
    run = await api.get_json(TENANT, f"/runs/{response.json()['runId']}")
    assert run["traceId"] == TRACE_ID


@pytest.mark.parametrize(
    "incoming", [None, "garbage", f"00-{'0' * 32}-b7ad6b7169203331-01", f"01-{TRACE_ID}-x-01"]
)
async def test_missing_or_invalid_traceparent_starts_a_new_trace(
    api: Api, incoming: str | None
) -> None:
    headers = api.headers(TENANT)
    if incoming is not None:
        headers["traceparent"] = incoming
    response = await api.client.get(f"{BASE}/runs", headers=headers)
    trace = trace_of(response)
    assert trace not in (TRACE_ID, "0" * 32)


# -- Idempotency-Key ----------------------------------------------------------------------
async def test_idempotency_key_replays_the_first_response(api: Api) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "Idempotency-Key": "start-1"}
    body = {"dagId": "d", "inputs": {"n": 1}}
    first = await api.client.post(f"{BASE}/runs", json=body, headers=headers)
    again = await api.client.post(f"{BASE}/runs", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await run_count(api) == 1


async def test_idempotency_key_with_another_body_is_409(api: Api) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "Idempotency-Key": "start-1"}
    await api.client.post(f"{BASE}/runs", json={"dagId": "d", "inputs": {"n": 1}}, headers=headers)
    response = await api.client.post(
        f"{BASE}/runs", json={"dagId": "d", "inputs": {"n": 2}}, headers=headers
    )
    assert response.status_code == 409
    assert assert_envelope(response)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await run_count(api) == 1


async def test_idempotency_keys_are_per_tenant(api: Api) -> None:
    for tenant in (TENANT, "globex"):
        await api.publish(tenant, NOOP_DAG)
    body = {"dagId": "d"}
    runs = []
    for tenant in (TENANT, "globex"):
        headers = {**api.headers(tenant), "Idempotency-Key": "same-key"}
        response = await api.client.post(f"{BASE}/runs", json=body, headers=headers)
        assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
        runs.append(response.json())
    assert [r["tenant"] for r in runs] == [TENANT, "globex"]


# -- paging -------------------------------------------------------------------------------
async def start_many(api: Api, count: int) -> set[str]:
    """Start `count` runs concurrently (they batch); returns their ids."""
    await api.publish(TENANT, NOOP_DAG)

    async def one(i: int) -> str:
        return str((await api.start(TENANT, "d", {"i": i}))["runId"])

    return set(await asyncio.gather(*(one(i) for i in range(count))))


async def read_pages(api: Api, page_size: int, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of GET /runs, following nextPageToken."""
    pages: list[list[dict[str, Any]]] = []
    token = None
    while True:
        query = {"page_size": page_size, **params, **({"page_token": token} if token else {})}
        body = await api.get_json(TENANT, f"/runs?{httpx.QueryParams(query)}")
        pages.append(body["items"])
        token = body["nextPageToken"]
        if token is None:
            return pages
        assert len(pages) < 100, "paging does not end"


async def test_120_runs_come_in_three_stable_pages(api: Api) -> None:
    created = await start_many(api, 120)
    pages = await read_pages(api, 50)
    assert [len(p) for p in pages] == [50, 50, 20]
    listed = [r["runId"] for p in pages for r in p]
    assert len(listed) == len(set(listed)) == 120 and set(listed) == created
    keys = [(r["createdUtc"], r["runId"]) for p in pages for r in p]
    assert keys == sorted(keys, reverse=True)


async def test_runs_created_while_paging_do_not_shift_later_pages(api: Api) -> None:
    created = await start_many(api, 60)
    first = await api.get_json(TENANT, "/runs?page_size=25")
    await api.start(TENANT, "d", {"late": True})
    rest, token = [], first["nextPageToken"]
    while token:
        page = await api.get_json(TENANT, f"/runs?page_size=25&page_token={token}")
        rest += page["items"]
        token = page["nextPageToken"]
    listed = [r["runId"] for r in first["items"] + rest]
    assert len(listed) == len(set(listed)) and set(listed) == created


def token_of(position: Any) -> str:
    """An opaque page token made by hand (what a client could tamper with)."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/runs", "/dags"])
@pytest.mark.parametrize(
    "page_token",
    [
        pytest.param("!!!", id="not-base64"),
        pytest.param("e30", id="object"),
        pytest.param("not-base64-json", id="not-json"),
        pytest.param(token_of("s"), id="string"),
        pytest.param(token_of(["x"]), id="wrong-type"),
        pytest.param(token_of([1]), id="too-short"),
        pytest.param(token_of([None, None]), id="nulls"),
    ],
)
async def test_invalid_page_token_is_400(api: Api, path: str, page_token: str) -> None:
    response = await api.client.get(
        f"{BASE}{path}", params={"page_token": page_token}, headers=api.headers(TENANT)
    )
    assert response.status_code == 400, response.text
    assert_envelope(response)


@pytest.mark.parametrize("page_size", [0, -1, 501, "x"])
async def test_page_size_out_of_range_is_400(api: Api, page_size: Any) -> None:
    response = await api.client.get(
        f"{BASE}/runs", params={"page_size": page_size}, headers=api.headers(TENANT)
    )
    assert response.status_code == 400
    assert_envelope(response)


# -- request bodies -----------------------------------------------------------------------
async def test_body_over_the_limit_is_413_and_creates_nothing(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    await api.publish(TENANT, NOOP_DAG)
    body = {"dagId": "d", "inputs": {"blob": "x" * 4096}}
    response = await api.client.post(f"{BASE}/runs", json=body, headers=api.headers(TENANT))
    assert response.status_code == 413
    assert assert_envelope(response)["code"] == "BODY_TOO_LARGE"
    assert await run_count(api) == 0


async def test_chunked_body_over_the_limit_is_413_and_creates_nothing(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    await api.publish(TENANT, NOOP_DAG)
    payload = json.dumps({"dagId": "d", "inputs": {"blob": "x" * 4096}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 512):
            yield payload[start : start + 512]

    headers = {**api.headers(TENANT), "content-type": "application/json"}
    response = await api.client.post(f"{BASE}/runs", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert await run_count(api) == 0


@pytest.mark.parametrize(
    "raw", [b"{bad", b"", b"[1, 2]", b'"text"', b"null", b'{"dagId": "d",}', b"\xff\xfe"]
)
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "content-type": "application/json"}
    response = await api.client.post(f"{BASE}/runs", content=raw, headers=headers)
    assert response.status_code == 400, response.text
    assert_envelope(response)
    assert await run_count(api) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"dagId": 123},
        {"dagId": "d", "inputs": "not-an-object"},
        {"dagId": "d", "inputs": []},
        {"dagId": "d", "runToken": 7},
        {"dagId": "d", "version": [1]},
        {"dagId": "d", "unexpected": True},
        {},
    ],
)
async def test_wrong_types_are_400(api: Api, body: dict[str, Any]) -> None:
    await api.publish(TENANT, NOOP_DAG)
    response = await api.client.post(f"{BASE}/runs", json=body, headers=api.headers(TENANT))
    assert response.status_code == 400, response.text
    assert_envelope(response)
    assert await run_count(api) == 0


@pytest.mark.parametrize(
    "document",
    [
        {**NOOP_DAG, "surprise": 1},
        {**NOOP_DAG, "steps": [{"id": "a", "plugin": "noop", "surprise": 1}]},
        {**NOOP_DAG, "steps": [{"id": "a", "plugin": "noop", "retry": {"maxAttempts": 2, "x": 1}}]},
    ],
    ids=["top-level", "step", "retry"],
)
async def test_unknown_fields_in_a_dag_spec_are_rejected(
    api: Api, document: dict[str, Any]
) -> None:
    response = await api.client.post(f"{BASE}/dags", json=document, headers=api.headers(TENANT))
    assert response.status_code == 400, response.text
    assert assert_envelope(response)["code"] == "DAG_SPEC_INVALID"
    assert (await api.get_json(TENANT, "/dags"))["items"] == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_non_json_content_type_is_4xx(api: Api, content_type: str) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "content-type": content_type}
    for path in ("/runs", "/dags"):
        response = await api.client.post(
            f"{BASE}{path}", content=b'{"dagId": "d"}', headers=headers
        )
        assert 400 <= response.status_code < 500, response.text
        assert_envelope(response)
    assert await run_count(api) == 0


# -- hostile ids --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/%2e%2e",
        "/runs/%2e%2e%2f%2e%2e",
        "/runs/../../etc/passwd",
        "/dags/%2e%2e/1",
        "/dags/..%2Fd/..%2F1",
        "/runs/x/steps/..%2F..",
        "/runs/x/steps/%2e%2e/logs",
        "/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/artifacts/sha256:..",
        "/runs/%00",
        "/runs/" + "a" * 5000,
    ],
)
async def test_path_traversal_in_ids_is_4xx_never_5xx(api: Api, path: str) -> None:
    for method in ("GET", "POST"):
        response = await api.client.request(method, f"{BASE}{path}", headers=api.headers(TENANT))
        assert 400 <= response.status_code < 500, f"{method} {path}: {response.text}"
        assert_envelope(response)


async def test_concurrent_posts_with_one_key_create_one_run(api: Api) -> None:
    await api.publish(TENANT, NOOP_DAG)
    headers = {**api.headers(TENANT), "Idempotency-Key": "burst-1"}
    body = {"dagId": "d", "inputs": {"n": 1}}
    responses = await asyncio.gather(
        *(api.client.post(f"{BASE}/runs", json=body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["runId"] for r in responses}) == 1
    assert await run_count(api) == 1


async def test_concurrent_replays_with_one_key_create_one_run(api: Api) -> None:
    await api.publish(TENANT, NOOP_DAG)
    original = await api.start(TENANT, "d", {"n": 1})
    headers = {**api.headers(TENANT), "Idempotency-Key": "replay-1"}
    url = f"{BASE}/runs/{original['runId']}:replay"
    responses = await asyncio.gather(
        *(api.client.post(url, json={"reason": "flaky"}, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["runId"] for r in responses}) == 1
    assert await run_count(api) == 2


async def test_concurrent_cancels_with_one_key_run_once(api: Api) -> None:
    slow = [{"id": "a", "plugin": "sleep", "with": {"seconds": 30}}]
    await api.publish(TENANT, spec("slow", slow))
    run = await api.start(TENANT, "slow", {})
    headers = {**api.headers(TENANT), "Idempotency-Key": "cancel-1"}
    url = f"{BASE}/runs/{run['runId']}:cancel"
    responses = await asyncio.gather(
        *(api.client.post(url, json={"reason": "stop"}, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}, [r.json() for r in responses]
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    rows = await api.sql("SELECT count(*) AS n FROM idempotency_keys")
    assert rows[0]["n"] == 1


async def test_every_error_response_is_logged_with_its_trace_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stellaorch.api")
    response = await api.client.get(
        f"{BASE}/runs/00000000-0000-7000-8000-000000000000", headers=api.headers("acme")
    )
    assert response.status_code == 404
    trace_id = response.json()["error"]["traceId"]
    [record] = [r for r in caplog.records if getattr(r, "trace_id", None) == trace_id]
    assert record.getMessage() == "request.failed"
    assert vars(record)["status"] == 404 and vars(record)["code"] == "RUN_NOT_FOUND"
    assert vars(record)["route"].endswith("/runs/{runId}") and vars(record)["method"] == "GET"
