"""GET /runs/{a}/diff/{b}: what differs between two runs, only within the caller's tenant."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, WRITE, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"


def feed_dag(version: int, fail: bool = False) -> dict[str, Any]:
    """fetch -> publish; version 2 makes fetch fail when asked."""
    fetch: dict[str, Any] = {"id": "fetch", "plugin": "noop", "with": {"outputs": {"n": 1}}}
    if fail:
        fetch = {"id": "fetch", "plugin": "fail", "with": {"code": "FEED_DOWN"}}
    publish = {"id": "publish", "plugin": "noop", "with": {"outputs": {"d": "${inputs.date}"}}}
    return spec("feed", [fetch, publish], [("fetch", "publish")], version=version)


async def finished(api: Api, tenant: str, inputs: dict[str, Any], **extra: Any) -> str:
    """Start a run of `feed` and wait for its end; its id."""
    run = await api.start(tenant, "feed", inputs, **extra)
    await api.wait(tenant, run["runId"])
    return str(run["runId"])


async def diff(api: Api, tenant: str, a: str, b: str, **headers: Any) -> Any:
    """The diff response for a reader of `tenant`."""
    return await api.client.get(
        f"{BASE}/runs/{a}/diff/{b}", headers=headers or api.headers(tenant, scopes=[READ])
    )


async def test_two_runs_of_one_version_with_other_inputs_differ_in_inputs_only(api: Api) -> None:
    await api.publish(A, feed_dag(1))
    api.start_worker()
    first = await finished(api, A, {"date": "2026-12-06", "region": "eu"})
    second = await finished(api, A, {"date": "2026-12-07", "full": True})

    response = await diff(api, A, first, second)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["runA"] == first and body["runB"] == second and body["identical"] is False
    assert body["inputs"] == {"added": ["full"], "removed": ["region"], "changed": ["date"]}
    fields = [d["field"] for d in body["differences"]]
    assert fields == [
        "inputsHash", "outputsHash", "inputs.date", "inputs.full", "inputs.region",
        "steps.publish.outputsHash",
    ]  # fmt: skip
    plugin = body["steps"][0]["a"]["plugin"]
    assert plugin == {"kind": "builtin", "name": "noop", "version": "1", "digest": None}


async def test_a_run_compared_with_itself_is_identical(api: Api) -> None:
    await api.publish(A, feed_dag(1))
    api.start_worker()
    run_id = await finished(api, A, {"date": "d"})
    body = (await diff(api, A, run_id, run_id)).json()
    assert body["identical"] is True and body["differences"] == []


async def test_versions_plugins_attempts_and_error_codes_are_compared(api: Api) -> None:
    await api.publish(A, feed_dag(1))
    await api.publish(A, feed_dag(2, fail=True))
    api.start_worker()
    good = await finished(api, A, {"date": "d"}, version=1)
    bad = await finished(api, A, {"date": "d"}, version=2)

    body = (await diff(api, A, good, bad)).json()

    by_field = {d["field"]: d for d in body["differences"]}
    assert by_field["dagVersion"]["a"] == "1" and by_field["dagVersion"]["b"] == "2"
    assert by_field["specHash"]["a"] != by_field["specHash"]["b"]
    assert by_field["status"] == {"field": "status", "a": "completed", "b": "failed"}
    assert by_field["errorCode"]["b"] == "FEED_DOWN"
    assert by_field["steps.fetch.plugin"]["b"]["name"] == "fail"
    assert by_field["steps.fetch.errorCodes"] == {
        "field": "steps.fetch.errorCodes", "a": [], "b": ["FEED_DOWN"],
    }  # fmt: skip
    assert by_field["steps.publish.status"]["b"] == "cancelled"


async def test_a_run_of_another_tenant_is_not_found(api: Api) -> None:
    await api.publish(A, feed_dag(1))
    await api.publish(B, feed_dag(1))
    api.start_worker()
    ours = await finished(api, A, {"date": "d"})
    theirs = await finished(api, B, {"date": "d"})
    for a, b in ((ours, theirs), (theirs, ours)):
        response = await diff(api, A, a, b)
        assert response.status_code == 404
        assert assert_envelope(response)["code"] == "RUN_NOT_FOUND"


async def test_diff_needs_the_read_scope_and_a_tenant(api: Api) -> None:
    await api.publish(A, feed_dag(1))
    api.start_worker()
    run_id = await finished(api, A, {"date": "d"})
    no_scope = await diff(api, A, run_id, run_id, **api.headers(A, scopes=[]))
    assert no_scope.status_code == 403
    assert assert_envelope(no_scope)["code"] == "SCOPE_REQUIRED"
    writer = await diff(api, A, run_id, run_id, **api.headers(A, scopes=[WRITE]))
    assert writer.status_code == 200  # write implies read
    other_tenant = await diff(api, A, run_id, run_id, **api.headers(A, token_tenants=[B]))
    assert other_tenant.status_code == 403
    assert assert_envelope(other_tenant)["code"] == "TENANT_FORBIDDEN"
    anonymous = await api.client.get(f"{BASE}/runs/{run_id}/diff/{run_id}")
    assert anonymous.status_code in (401, 403)


async def test_a_rotated_secret_shows_as_a_version_change_never_a_value(api: Api) -> None:
    step = {"id": "use", "plugin": "noop", "with": {"outputs": {"k": "${secrets.token}"}}}
    await api.publish(A, spec("uses", [step]))
    api.start_worker()

    async def put_then_run(value: str) -> str:
        body = {"value": value, "reason": "rotate"}
        put = await api.client.put(f"{BASE}/secrets/token", json=body, headers=api.headers(A))
        assert put.status_code in (200, 201), put.text
        run = await api.start(A, "uses")
        assert await api.wait(A, run["runId"]) == "completed"
        return str(run["runId"])

    first = await put_then_run("first-value-1234")
    second = await put_then_run("second-value-5678")

    response = await diff(api, A, first, second)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [d for d in body["differences"] if d["field"].startswith("steps.")] == [
        {"field": "steps.use.secrets", "a": {"token": 1}, "b": {"token": 2}}
    ]
    assert "value-" not in response.text
