"""DAG rollback over HTTP: newer versions disabled, the target latest enabled, audited."""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"


def version(v: int) -> dict:
    return spec("etl", [{"id": "s", "plugin": "noop", "with": {"outputs": {"v": v}}}], version=v)


async def test_rollback_disables_newer_versions_and_is_audited(api: Api) -> None:
    for v in (1, 2, 3):
        await api.publish(A, version(v))
    response = await api.client.post(
        f"{BASE}/dags/etl:rollback", json={"to": "1"}, headers=api.headers(A, reason="INC-9")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["enabled"], body["previous"]) == ("1", True, "3")
    assert sorted(body["disabled"]) == ["2", "3"]
    items = (await api.get_json(A, "/dags?dagId=etl"))["items"]
    assert {i["version"]: i["enabled"] for i in items} == {"1": True, "2": False, "3": False}
    run = await api.start(A, "etl")
    assert run["dagVersion"] == "1"
    audit = await api.sql(
        "SELECT action, target, reason, details_json FROM audit_log WHERE action = 'dag.rollback'"
    )
    assert audit[0]["target"] == "etl@1" and audit[0]["reason"] == "INC-9"
    assert json.loads(audit[0]["details_json"])["from"] == "3"


@pytest.mark.parametrize(("dag", "to"), [("etl", "9"), ("nope", "1")])
async def test_rollback_to_an_unknown_version_changes_nothing(api: Api, dag: str, to: str) -> None:
    await api.publish(A, version(1))
    await api.publish(A, version(2))
    response = await api.client.post(
        f"{BASE}/dags/{dag}:rollback", json={"to": to}, headers=api.headers(A)
    )
    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "DAG_NOT_FOUND"
    rows = await api.sql("SELECT version FROM dag_versions WHERE enabled")
    assert len(rows) == 2
    assert await api.sql("SELECT id FROM audit_log WHERE action = 'dag.rollback'") == []


async def test_rollback_of_another_tenants_dag_is_not_found(api: Api) -> None:
    await api.publish(A, version(1))
    response = await api.client.post(
        f"{BASE}/dags/etl:rollback", json={"to": "1"}, headers=api.headers(B)
    )
    assert response.status_code == 404
