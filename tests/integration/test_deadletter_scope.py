"""Dead-letter replay scoped by DAG, version and time, with a dry run; acks; audit; bounds."""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

from stellaorch.domain.providers import format_utc  # noqa: E402
from stellaorch.engine import deadletter  # noqa: E402

A, B = "acme", "globex"
CODE = "DB_DOWN"


def failing(dag_id: str, version: int = 1) -> dict:
    return spec(
        dag_id, [{"id": "load", "plugin": "fail@1", "with": {"code": CODE}}], version=version
    )


async def fail_runs(api: Api, dag_id: str, n: int, first: int = 0) -> list[str]:
    api.start_worker()
    ids = [(await api.start(A, dag_id, {"n": i}))["runId"] for i in range(first, first + n)]
    for run_id in ids:
        assert await api.wait(A, run_id) == "failed"
    return ids


async def two_dags(api: Api) -> tuple[list[str], list[str]]:
    await api.publish(A, failing("etl"))
    await api.publish(A, failing("billing"))
    return await fail_runs(api, "etl", 2), await fail_runs(api, "billing", 2)


async def replay(api: Api, tenant: str = A, **body: object) -> dict:
    url = f"{BASE}/deadletter/{CODE}:replay"
    response = await api.client.post(
        url, json={"reason": "INC-1", **body}, headers=api.headers(tenant)
    )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


async def test_replay_scoped_to_one_dag_leaves_the_others(api: Api) -> None:
    etl, _billing = await two_dags(api)
    result = await replay(api, dagId="etl")
    assert sorted(r["replayOf"] for r in result["items"]) == sorted(etl)
    assert result["remaining"] == 0 and result["dryRun"] is False
    assert len(await api.sql("SELECT run_id FROM runs WHERE dag_id = 'billing'")) == 2


async def test_dry_run_lists_the_replays_and_creates_nothing(api: Api) -> None:
    etl, billing = await two_dags(api)
    result = await replay(api, dryRun=True)
    assert result["items"] == [] and result["dryRun"] is True
    assert sorted(p["replayOf"] for p in result["planned"]) == sorted(etl + billing)
    assert {p["dagVersion"] for p in result["planned"]} == {"1"}
    assert len(await api.sql("SELECT run_id FROM runs")) == 4
    assert await api.sql("SELECT id FROM audit_log WHERE action = 'deadletter.replay'") == []


async def test_version_and_time_window_scope_the_replay(api: Api) -> None:
    await api.publish(A, failing("etl", 1))
    v1 = await fail_runs(api, "etl", 1)
    await api.publish(A, failing("etl", 2))
    v2 = await fail_runs(api, "etl", 1, first=5)
    result = await replay(api, dagId="etl", version="2", dryRun=True)
    assert [p["replayOf"] for p in result["planned"]] == v2
    response = await api.client.post(
        f"{BASE}/deadletter/{CODE}:replay",
        json={"reason": "x", "version": "2"},
        headers=api.headers(A),
    )
    assert response.status_code == 400
    assert_envelope(response)
    ended = await api.sql("SELECT ended_us FROM step_executions WHERE run_id = :r", r=v1[0])
    cut = ended[0]["ended_us"] + 1000  # format_utc keeps milliseconds
    result = await replay(api, to=format_utc(cut), dryRun=True)
    assert [p["replayOf"] for p in result["planned"]] == v1
    result = await replay(api, **{"from": format_utc(cut)}, dryRun=True)
    assert [p["replayOf"] for p in result["planned"]] == v2


async def test_group_replay_is_audited_with_its_scope(api: Api) -> None:
    await two_dags(api)
    result = await replay(api, dagId="etl", resume=True)
    [entry] = (await api.get_json(A, "/audit?action=deadletter.replay"))["items"]
    assert (entry["target"], entry["reason"], entry["actor"]) == (CODE, "INC-1", "alice")
    assert entry["details"]["scope"]["dagId"] == "etl" and entry["details"]["resume"] is True
    assert entry["details"]["replayed"] == {r["replayOf"]: r["runId"] for r in result["items"]}


async def test_a_bulk_replay_takes_at_most_the_bound_and_says_what_remains(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.publish(A, failing("etl"))
    ids = await fail_runs(api, "etl", 3)
    monkeypatch.setattr(deadletter, "MAX_BULK_RUNS", 2)
    first = await replay(api)
    assert [r["replayOf"] for r in first["items"]] == ids[:2] and first["remaining"] == 1
    second = await replay(api)
    assert [r["replayOf"] for r in second["items"]] == ids[2:] and second["remaining"] == 0


async def test_ack_hides_the_group_until_it_fails_again(api: Api) -> None:
    await api.publish(A, failing("etl"))
    await fail_runs(api, "etl", 2)
    url = f"{BASE}/deadletter/{CODE}:ack"
    response = await api.client.post(url, headers=api.headers(A, reason="handled"))
    assert response.status_code == 200, response.text
    assert (await api.get_json(A, "/deadletter"))["items"] == []
    [acked] = (await api.get_json(A, "/deadletter?acknowledged=true"))["items"]
    assert acked["count"] == 2 and acked["acknowledgedUntilUtc"] is not None
    [audit] = await api.sql(
        "SELECT reason, details_json FROM audit_log WHERE action = 'deadletter.ack'"
    )
    assert audit["reason"] == "handled" and json.loads(audit["details_json"])["count"] == 2
    await fail_runs(api, "etl", 1, first=9)
    [again] = (await api.get_json(A, "/deadletter"))["items"]
    assert again["count"] == 1


async def test_another_tenant_can_neither_ack_nor_replay_the_group(api: Api) -> None:
    await api.publish(A, failing("etl"))
    await fail_runs(api, "etl", 1)
    for action, body in ((":ack", None), (":replay", {"reason": "x", "dryRun": True})):
        url = f"{BASE}/deadletter/{CODE}{action}"
        response = await api.client.post(url, json=body, headers=api.headers(B))
        assert response.status_code == 404, response.text
        assert assert_envelope(response)["code"] == "DEADLETTER_GROUP_NOT_FOUND"
    assert len((await api.get_json(A, "/deadletter"))["items"]) == 1


async def test_ack_needs_the_admin_scope(api: Api) -> None:
    await api.publish(A, failing("etl"))
    await fail_runs(api, "etl", 1)
    headers = api.headers(A, scopes=["orchestrator:write"])
    response = await api.client.post(f"{BASE}/deadletter/{CODE}:ack", headers=headers)
    assert response.status_code == 403
    assert assert_envelope(response)["code"] == "SCOPE_REQUIRED"
