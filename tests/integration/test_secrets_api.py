"""Secrets over the API: write-only values, versions, tenant isolation, scopes, use in runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)
from api_fixtures import (  # noqa: E402
    ADMIN,
    BASE,
    READ,
    WRITE,
    Api,
    MakeApi,
    assert_envelope,
    open_api,
    spec,
)

from stellaorch.plugins.base import PluginResult, StepContext  # noqa: E402

A, B = "acme", "bravo"
VALUE = "first-Secret-value-0001"
NEW_VALUE = "second-Secret-value-00002"


async def put(
    api: Api, tenant: str, name: str, value: str, reason: str | None = "rotate", **kw: Any
) -> Any:
    """PUT a secret value as an admin of `tenant`."""
    body: dict[str, Any] = {"value": value}
    if reason is not None:
        body["reason"] = reason
    headers = api.headers(tenant, reason=None, **kw)
    return await api.client.put(f"{BASE}/secrets/{name}", json=body, headers=headers)


async def listing(api: Api, tenant: str) -> list[dict[str, Any]]:
    """The tenant's secrets as GET /secrets lists them."""
    items: list[dict[str, Any]] = (await api.get_json(tenant, "/secrets"))["items"]
    return items


def uses_secret(dag_id: str, name: str = "api-key", attempts: int = 1) -> dict[str, Any]:
    """A DAG whose one script step says whether it got NEW_VALUE (printing neither value)."""
    check = f'if [ "$S" = "{NEW_VALUE}" ]; then echo new; else echo old; fi'
    step = {
        "id": "use",
        "plugin": "script",
        "with": {"command": ["/bin/sh", "-c", check], "env": {"S": f"${{secrets.{name}}}"}},
        "retry": {"maxAttempts": attempts, "backoff": {"initialMs": 1}},
    }
    return spec(dag_id, [step])


async def run_to_end(api: Api, tenant: str, dag_id: str) -> dict[str, Any]:
    """Start a run, wait for it, return its step."""
    run = await api.start(tenant, dag_id)
    await api.wait(tenant, run["runId"])
    step: dict[str, Any] = await api.get_json(tenant, f"/runs/{run['runId']}/steps/use")
    step["runId"] = run["runId"]
    return step


async def test_put_creates_a_version_and_the_answer_holds_no_value(api: Api) -> None:
    response = await put(api, A, "api-key", VALUE)
    assert response.status_code == 200, response.text
    assert VALUE not in response.text
    body = response.json()
    assert (body["name"], body["currentVersion"]) == ("api-key", 1)
    assert body["versions"][0]["createdBy"] == "alice"
    assert body["versions"][0]["createdUtc"].endswith("Z")


async def test_a_second_put_adds_version_two_and_the_list_shows_both(api: Api) -> None:
    await put(api, A, "api-key", VALUE)
    await put(api, A, "api-key", NEW_VALUE)
    items = await listing(api, A)
    assert [(i["name"], i["currentVersion"]) for i in items] == [("api-key", 2)]
    assert [v["version"] for v in items[0]["versions"]] == [1, 2]
    text = str(items)
    assert VALUE not in text and NEW_VALUE not in text


async def test_values_at_rest_are_ciphertext(api: Api) -> None:
    await put(api, A, "api-key", VALUE)
    rows = await api.sql("SELECT ciphertext, kek_id FROM secret_versions")
    assert len(rows) == 1
    assert VALUE.encode() not in bytes(rows[0]["ciphertext"])
    assert len(rows[0]["kek_id"]) == 16


@pytest.mark.parametrize("name", ["bad!name", "a" * 129, "sp ace", "ünï"])
async def test_bad_names_are_refused(api: Api, name: str) -> None:
    response = await put(api, A, name, VALUE)
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "SECRET_INVALID"


async def test_an_empty_value_is_refused(api: Api) -> None:
    response = await put(api, A, "api-key", "")
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "SECRET_INVALID"


async def test_an_oversize_value_is_refused_without_echoing_it(make_api: MakeApi) -> None:
    api = await make_api(secret_max_value_bytes=16)
    response = await put(api, A, "api-key", VALUE)
    assert response.status_code == 400
    error = assert_envelope(response)
    assert error["code"] == "SECRET_INVALID" and "16 bytes" in error["message"]
    assert VALUE not in response.text
    assert await listing(api, A) == []


async def test_a_put_without_a_reason_is_refused(api: Api) -> None:
    response = await put(api, A, "api-key", VALUE, reason=None)
    assert response.status_code == 400
    assert await listing(api, A) == []


@pytest.mark.parametrize("scopes", [[READ], [WRITE]])
async def test_non_admin_tokens_get_scope_required(api: Api, scopes: list[str]) -> None:
    await put(api, A, "api-key", VALUE)
    headers = api.headers(A, scopes=scopes)
    body = {"value": "v", "reason": "r"}
    attempts = [
        await api.client.put(f"{BASE}/secrets/x", json=body, headers=headers),
        await api.client.get(f"{BASE}/secrets", headers=headers),
        await api.client.delete(f"{BASE}/secrets/api-key", headers=headers),
        await api.client.post(f"{BASE}/admin/warm", headers=headers),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert assert_envelope(response)["code"] == "SCOPE_REQUIRED"
    assert [i["currentVersion"] for i in await listing(api, A)] == [1]


async def test_delete_removes_every_version_and_is_audited_with_the_reason(api: Api) -> None:
    await put(api, A, "api-key", VALUE, reason="first")
    response = await api.client.delete(
        f"{BASE}/secrets/api-key", headers=api.headers(A, reason="leaked")
    )
    assert response.status_code == 204
    assert await listing(api, A) == []
    again = await api.client.delete(f"{BASE}/secrets/api-key", headers=api.headers(A))
    assert again.status_code == 404 and assert_envelope(again)["code"] == "SECRET_NOT_FOUND"
    audit = await api.sql("SELECT action, target, reason FROM audit_log ORDER BY id")
    assert [(r["action"], r["target"], r["reason"]) for r in audit] == [
        ("secret.put", "secret:api-key", "first"),
        ("secret.delete", "secret:api-key", "leaked"),
    ]


async def test_tenant_b_can_never_list_delete_or_use_tenant_a_secrets(api: Api) -> None:
    await put(api, A, "api-key", VALUE)
    assert await listing(api, B) == []
    deleted = await api.client.delete(f"{BASE}/secrets/api-key", headers=api.headers(B))
    assert deleted.status_code == 404
    foreign = api.headers(A, token_tenants=[B])
    for response in (
        await api.client.get(f"{BASE}/secrets", headers=foreign),
        await api.client.delete(f"{BASE}/secrets/api-key", headers=foreign),
    ):
        assert response.status_code == 403
        assert assert_envelope(response)["code"] == "TENANT_FORBIDDEN"
    api.start_worker()
    await api.publish(B, uses_secret("d"))
    step = await run_to_end(api, B, "d")
    assert step["error"]["code"] == "SECRET_NOT_FOUND"
    assert [i["currentVersion"] for i in await listing(api, A)] == [1]


async def test_a_run_records_name_and_version_and_the_next_attempt_uses_the_new_one(
    make_api: MakeApi,
) -> None:
    api = await make_api(sandbox="off")
    await put(api, A, "api-key", VALUE)
    await api.publish(A, uses_secret("d"))
    api.start_worker()
    first = await run_to_end(api, A, "d")
    await put(api, A, "api-key", NEW_VALUE)
    second = await run_to_end(api, A, "d")
    assert first["status"] == second["status"] == "succeeded"
    logs = [await api.get_json(A, f"/runs/{s['runId']}/steps/use/logs") for s in (first, second)]
    assert "old" in str(logs[0]) and "new" in str(logs[1])
    rows = await api.sql("SELECT run_id, body FROM ledger_entries WHERE body LIKE '%\"secrets\"%'")
    by_run = {r["run_id"]: r["body"] for r in rows}
    assert '"secrets":{"api-key":1}' in by_run[first["runId"]]
    assert '"secrets":{"api-key":2}' in by_run[second["runId"]]
    assert first["inputsHash"] != second["inputsHash"]


async def test_a_missing_secret_fails_the_attempt_once_naming_the_reference(
    make_api: MakeApi,
) -> None:
    api = await make_api(sandbox="off")
    await api.publish(A, uses_secret("d", name="nope", attempts=3))
    api.start_worker()
    step = await run_to_end(api, A, "d")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "SECRET_NOT_FOUND"
    assert step["error"]["retryable"] is False
    assert "${secrets.nope}" in step["error"]["message"]
    assert len(step["attempts"]) == 1


async def test_warm_reports_what_this_process_warmed_and_is_audited(api: Api) -> None:
    await put(api, A, "api-key", VALUE)
    await put(api, A, "api-key", NEW_VALUE)
    await put(api, B, "other", VALUE)
    response = await api.client.post(f"{BASE}/admin/warm", headers=api.headers(A))
    assert response.status_code == 200, response.text
    body = response.json()
    # PostgreSQL: every other process is told; SQLite: one process, nobody else to tell
    assert body["notified"] is api.settings.database_url.startswith("postgresql")
    [worker] = body["workers"]
    assert worker["warmed"]["secrets"] == {"secrets": 1, "values": 2}
    audit = await api.sql("SELECT action FROM audit_log WHERE action = 'admin.warm'")
    assert len(audit) == 1


async def test_warm_needs_a_reason(api: Api) -> None:
    response = await api.client.post(f"{BASE}/admin/warm", headers=api.headers(A, reason=None))
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "VALIDATION_FAILED"


async def test_only_admins_list_secrets(api: Api) -> None:
    response = await api.client.get(f"{BASE}/secrets", headers=api.headers(A, scopes=[ADMIN]))
    assert response.status_code == 200


class SeesSecrets:
    """A plugin that reports which secret names its context carried (never the values)."""

    name, version = "sees", "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Outputs: the sorted names in ctx.secrets."""
        return PluginResult(outputs={"names": sorted(ctx.secrets)})


async def test_secrets_reach_only_the_step_that_declares_them(api: Api) -> None:
    api.orchestrator.plugins.register(SeesSecrets())
    await put(api, A, "api-key", VALUE)
    steps = [
        {"id": "use", "plugin": "sees", "with": {"k": "${secrets.api-key}"}},
        {"id": "next", "plugin": "sees"},
    ]
    await api.publish(A, spec("two", steps, [("use", "next")]))
    api.start_worker()
    run = await api.start(A, "two")
    assert await api.wait(A, run["runId"]) == "completed"
    rows = await api.sql(
        "SELECT step_id, outputs_json FROM step_executions WHERE run_id = :r ORDER BY step_id",
        r=run["runId"],
    )
    assert [(r["step_id"], r["outputs_json"]) for r in rows] == [
        ("next", '{"names":[]}'),
        ("use", '{"names":["api-key"]}'),
    ]


async def test_a_running_attempt_keeps_its_value_when_the_secret_is_deleted(
    make_api: MakeApi,
) -> None:
    api = await make_api(sandbox="off")
    await put(api, A, "api-key", NEW_VALUE)
    check = f'sleep 1; if [ "$S" = "{NEW_VALUE}" ]; then echo kept; else exit 3; fi'
    step = {
        "id": "use",
        "plugin": "script",
        "with": {"command": ["/bin/sh", "-c", check], "env": {"S": "${secrets.api-key}"}},
    }
    await api.publish(A, spec("slow", [step]))
    api.start_worker()
    run = await api.start(A, "slow")
    for _ in range(500):  # until the attempt runs (it holds the value by then)
        if (await api.get_json(A, f"/runs/{run['runId']}/steps/use"))["status"] == "running":
            break
        await asyncio.sleep(0.02)
    deleted = await api.client.delete(f"{BASE}/secrets/api-key", headers=api.headers(A))
    assert deleted.status_code == 204
    assert await api.wait(A, run["runId"]) == "completed"


async def test_a_corrupt_ciphertext_fails_the_attempt_with_a_clear_error(api: Api) -> None:
    api.orchestrator.plugins.register(SeesSecrets())
    await put(api, A, "api-key", VALUE)
    await api.sql("UPDATE secret_versions SET ciphertext = :c", c=b"\x00" * 40)
    await api.publish(
        A, spec("d", [{"id": "use", "plugin": "sees", "with": {"k": "${secrets.api-key}"}}])
    )
    api.start_worker()
    step = await run_to_end(api, A, "d")
    assert step["error"]["code"] == "SECRET_CORRUPT"
    assert "'api-key' version 1" in step["error"]["message"]
    assert VALUE not in str(step) and step["error"]["retryable"] is False


async def test_warm_reports_every_process_on_postgresql(pg_store_url: Any, keys_dir: Path) -> None:
    url = pg_store_url()
    async with open_api(url, keys_dir) as api, open_api(url, keys_dir) as other:
        await put(api, A, "api-key", VALUE)
        await put(api, A, "api-key", NEW_VALUE)
        other.start_worker()  # a worker in another engine: it listens for the warm NOTIFY
        await asyncio.sleep(0.3)
        response = await api.client.post(f"{BASE}/admin/warm", headers=api.headers(A))
        assert response.status_code == 200, response.text
        workers = response.json()["workers"]
        assert len(workers) == 2, workers
        here, there = workers
        assert here["warmed"]["secrets"] == {"secrets": 1, "values": 2}
        # the other process warmed every tenant it knew: the same secret, both versions live
        assert there["warmed"]["secrets"]["values"] == 2
        assert set(there["warmed"]) == {"secrets", "bundles"}
